//! The log tailer's error type and its classification into throttling, transient and permanent.
//!
//! The classification (the crate-wide [`crate::aws::errors::Retry`]) is what the wait loop acts on: throttling and transient failures
//! are retried on the next tick (no tailer state moved, see `tailer.rs`), permanent ones mean
//! logs cannot be read for this job. "Group or stream does not exist yet" never reaches this
//! type: the tailer treats it as "no logs yet", because SageMaker and the awslogs driver create
//! both lazily on the first write.

use aws_sdk_cloudwatchlogs::error::SdkError;
use aws_sdk_cloudwatchlogs::operation::describe_log_streams::DescribeLogStreamsError;
use aws_sdk_cloudwatchlogs::operation::get_log_events::GetLogEventsError;

/// How the caller should react to a [`LogError`]: the crate's one AWS error classification.
pub use crate::aws::errors::Retry as LogErrorKind;

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
            LogError::DescribeLogStreams { source, .. } => crate::aws::errors::classify(source),
            LogError::GetLogEvents { source, .. } => crate::aws::errors::classify(source),
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
        self.kind().is_retryable()
    }
}
