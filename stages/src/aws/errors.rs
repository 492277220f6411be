//! The one classifier of AWS SDK errors: what another try can achieve. Every call site (status
//! waits, the log tailer, cleanup, staging) sorts errors through [`classify`], so a code list
//! exists once.
//!
//! Status calls in wait loops are sent with the SDK's own retries off (see
//! [`super::Aws::polling`]): their loop backs off per operation instead. Every other call keeps the SDK's standard retry,
//! so what reaches [`classify`] there has already outlasted `aws.max_attempts` tries.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Error codes that mean "slow down". `LimitExceededException` is a rate limit for the read
/// calls of CloudWatch Logs and SageMaker's Describe/List calls; create calls that hit a resource
/// quota report it as `ResourceLimitExceeded`, which is permanent.
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "SlowDown",
    "RequestThrottled",
];

/// Error codes that say the service, not the request, is at fault, whatever the HTTP status.
const TRANSIENT: &[&str] = &[
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "InternalServerError",
    "InternalError",
    "InternalServerException",
    "ServerException",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// What another try of a failed call can achieve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The account's request rate was exceeded: try again later, more slowly.
    Throttling,
    /// A service fault, a timeout or a network failure: try again.
    Transient,
    /// The same request will fail the same way (access denied, bad parameter, not found).
    Permanent,
}

impl Retry {
    /// Whether trying again can help.
    pub fn is_retryable(self) -> bool {
        match self {
            Retry::Throttling | Retry::Transient => true,
            Retry::Permanent => false,
        }
    }
}

/// Sorts an SDK error by what retrying it would achieve.
pub fn classify<E: ProvideErrorMetadata>(e: &SdkError<E, Response>) -> Retry {
    match e {
        // The request could not even be built: our bug or bad config, the same next time.
        SdkError::ConstructionFailure(_) => Retry::Permanent,
        SdkError::TimeoutError(_) => Retry::Transient,
        // A "user" dispatch failure is an unusable request (e.g. a bad endpoint URL); the others
        // are I/O and connection faults.
        SdkError::DispatchFailure(failure) if failure.is_user() => Retry::Permanent,
        SdkError::DispatchFailure(_) => Retry::Transient,
        // An unparseable response is nearly always a truncated body or a proxy's page.
        SdkError::ResponseError(_) => Retry::Transient,
        SdkError::ServiceError(ctx) => by_code(ctx.err().code(), ctx.raw().status().as_u16()),
        // `SdkError` is non-exhaustive: an unknown failure mode costs one more try at most.
        _ => Retry::Transient,
    }
}

/// Classifies a service error by its code, then by its HTTP status.
pub fn by_code(code: Option<&str>, status: u16) -> Retry {
    let code = code.unwrap_or_default();
    if THROTTLING.contains(&code) || status == 429 {
        Retry::Throttling
    } else if TRANSIENT.contains(&code) || (500..600).contains(&status) {
        Retry::Transient
    } else {
        Retry::Permanent
    }
}

/// Whether another try can help (throttling, service faults, timeouts, dropped connections).
pub fn is_transient<E: ProvideErrorMetadata>(e: &SdkError<E, Response>) -> bool {
    classify(e).is_retryable()
}

/// The error code and message of a service error, or the error chain, for one log line.
pub fn describe<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    e: &SdkError<E, R>,
) -> String {
    match e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            format!(
                "{}: {}",
                err.code().unwrap_or("error"),
                err.message().unwrap_or("(no message)")
            )
        }
        other => {
            let mut s = other.to_string();
            let mut cur = std::error::Error::source(other);
            while let Some(c) = cur {
                s.push_str(": ");
                s.push_str(&c.to_string());
                cur = c.source();
            }
            s
        }
    }
}

/// The service error code, if the error is a service error.
pub fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    match e {
        SdkError::ServiceError(se) => se.err().code(),
        _ => None,
    }
}

/// An SDK error of any operation, kept as a typed source with its classification and one-line
/// description computed once (wait paths hold errors of several operations in one variant).
#[derive(Debug, thiserror::Error)]
#[error("{summary}")]
pub struct AwsCallError {
    /// The operation, e.g. `DescribeTrainingJob`.
    pub operation: &'static str,
    summary: String,
    retry: Retry,
    code: Option<String>,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl AwsCallError {
    /// Wraps the error `e` of `operation`.
    pub fn new<E>(operation: &'static str, e: SdkError<E, Response>) -> AwsCallError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        AwsCallError {
            operation,
            summary: format!("{operation}: {}", describe(&e)),
            retry: classify(&e),
            code: code(&e).map(str::to_owned),
            source: Box::new(e),
        }
    }

    /// A failure of `operation` that is not an SDK error (an answer that lacks what was asked).
    pub fn other(operation: &'static str, message: String, retry: Retry) -> AwsCallError {
        AwsCallError {
            operation,
            summary: format!("{operation}: {message}"),
            retry,
            code: None,
            source: Box::new(Plain(message)),
        }
    }

    /// What another try can achieve.
    pub fn retry(&self) -> Retry {
        self.retry
    }

    /// The service error code, if any.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

/// A plain message as an error source.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Plain(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_codes_are_sorted_by_what_a_retry_achieves() {
        assert_eq!(by_code(Some("ThrottlingException"), 400), Retry::Throttling);
        assert_eq!(by_code(Some("SlowDown"), 503), Retry::Throttling);
        assert_eq!(by_code(None, 429), Retry::Throttling);
        assert_eq!(
            by_code(Some("ServiceUnavailableException"), 400),
            Retry::Transient
        );
        assert_eq!(by_code(Some("ServerException"), 400), Retry::Transient);
        assert_eq!(by_code(None, 503), Retry::Transient);
        assert_eq!(
            by_code(Some("AccessDeniedException"), 400),
            Retry::Permanent
        );
        assert_eq!(by_code(Some("ValidationException"), 400), Retry::Permanent);
        assert_eq!(
            by_code(Some("ResourceLimitExceeded"), 400),
            Retry::Permanent
        );
        assert_eq!(by_code(None, 403), Retry::Permanent);
    }
}
