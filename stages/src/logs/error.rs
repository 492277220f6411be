//! The log tailer's error type and its classification into throttling, transient and permanent.
//!
//! The classification is what the lead's wait loop acts on: throttling and transient failures
//! are retried on the next tick (no tailer state moved, see `tailer.rs`), permanent ones mean
//! logs cannot be read for this job. "Group or stream does not exist yet" never reaches this
//! type: the tailer treats it as "no logs yet", because SageMaker and the awslogs driver create
//! both lazily on the first write.

use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatchlogs::operation::describe_log_streams::DescribeLogStreamsError;
use aws_sdk_cloudwatchlogs::operation::get_log_events::GetLogEventsError;

/// Error codes that mean "slow down". The SDK's own retry classifier uses a similar list; for the
/// two read-only calls made here, `LimitExceededException` can only be a rate limit.
const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "SlowDown",
];

/// Error codes that say the service, not the request, is at fault, whatever the HTTP status.
const TRANSIENT_CODES: &[&str] = &[
    "ServiceUnavailableException",
    "ServiceUnavailable",
    "InternalFailure",
    "InternalServerError",
    "InternalError",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// How the caller should react to a [`LogError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogErrorKind {
    /// The account's request rate was exceeded: retry on the next tick, ideally a slower one.
    Throttling,
    /// A service fault, timeout or network failure: retry on the next tick.
    Transient,
    /// Retrying will not help (access denied, bad parameter, expired token).
    Permanent,
}

/// A failed CloudWatch Logs call made by the [`LogTailer`](super::LogTailer).
///
/// Whatever the variant, the tailer's state for the failing stream did not move, and the lines it
/// had already read from other streams stay queued for the next successful call.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// `DescribeLogStreams` failed while discovering streams by prefix.
    #[error("list log streams of group {group} with prefix {prefix:?}")]
    DescribeLogStreams {
        /// The log group.
        group: String,
        /// The stream-name prefix searched.
        prefix: String,
        /// The SDK error.
        #[source]
        source: Box<SdkError<DescribeLogStreamsError>>,
    },
    /// `GetLogEvents` failed for one stream.
    #[error("read log stream {stream} of group {group}")]
    GetLogEvents {
        /// The log group.
        group: String,
        /// The stream whose read failed.
        stream: String,
        /// The SDK error.
        #[source]
        source: Box<SdkError<GetLogEventsError>>,
    },
    /// `GetLogEvents` answered without a forward token, so there is no position to resume from
    /// without re-reading or skipping; the page was discarded rather than risk either.
    #[error("read log stream {stream} of group {group}: the response had no forward token")]
    MissingForwardToken {
        /// The log group.
        group: String,
        /// The stream whose response was malformed.
        stream: String,
    },
}

impl LogError {
    /// The classification the caller acts on.
    pub fn kind(&self) -> LogErrorKind {
        // Exhaustive on purpose: a new variant must decide how it is retried.
        match self {
            LogError::DescribeLogStreams { source, .. } => classify_sdk(source),
            LogError::GetLogEvents { source, .. } => classify_sdk(source),
            // Seen only from a misbehaving endpoint; asking again is the only sensible reaction.
            LogError::MissingForwardToken { .. } => LogErrorKind::Transient,
        }
    }

    /// True when the account's CloudWatch Logs request rate was exceeded.
    pub fn is_throttling(&self) -> bool {
        self.kind() == LogErrorKind::Throttling
    }

    /// True when the caller should simply try again on its next tick (throttling included).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind(),
            LogErrorKind::Throttling | LogErrorKind::Transient
        )
    }
}

/// Sorts an SDK error the way the wait loop needs: by what retrying would achieve.
fn classify_sdk<E: ProvideErrorMetadata>(err: &SdkError<E>) -> LogErrorKind {
    match err {
        // The request could not even be built: our bug or bad config, the same next time.
        SdkError::ConstructionFailure(_) => LogErrorKind::Permanent,
        SdkError::TimeoutError(_) => LogErrorKind::Transient,
        // A "user" dispatch failure is an unusable request (e.g. a bad endpoint URL); the others
        // are I/O and connection faults.
        SdkError::DispatchFailure(failure) if failure.is_user() => LogErrorKind::Permanent,
        SdkError::DispatchFailure(_) => LogErrorKind::Transient,
        // An unparseable response is nearly always a truncated body or a proxy page.
        SdkError::ResponseError(_) => LogErrorKind::Transient,
        SdkError::ServiceError(ctx) => {
            classify_service(ctx.err().code(), ctx.raw().status().as_u16())
        }
        // `SdkError` is non-exhaustive; an unknown failure mode costs one retry per tick at most.
        _ => LogErrorKind::Transient,
    }
}

/// Classifies a modeled or unmodeled service error by its code, then by its HTTP status.
fn classify_service(code: Option<&str>, status: u16) -> LogErrorKind {
    let code = code.unwrap_or_default();
    if THROTTLING_CODES.contains(&code) || status == 429 {
        LogErrorKind::Throttling
    } else if TRANSIENT_CODES.contains(&code) || (500..600).contains(&status) {
        LogErrorKind::Transient
    } else {
        LogErrorKind::Permanent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_codes_are_sorted_by_what_a_retry_achieves() {
        assert_eq!(
            classify_service(Some("ThrottlingException"), 400),
            LogErrorKind::Throttling
        );
        assert_eq!(classify_service(None, 429), LogErrorKind::Throttling);
        assert_eq!(
            classify_service(Some("ServiceUnavailableException"), 400),
            LogErrorKind::Transient
        );
        assert_eq!(classify_service(None, 503), LogErrorKind::Transient);
        assert_eq!(
            classify_service(Some("AccessDeniedException"), 400),
            LogErrorKind::Permanent
        );
        assert_eq!(
            classify_service(Some("InvalidParameterException"), 400),
            LogErrorKind::Permanent
        );
        assert_eq!(classify_service(None, 403), LogErrorKind::Permanent);
    }
}
