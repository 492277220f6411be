//! How a finished training job ended, read from DescribeTrainingJob: the script's own status
//! (from the bootstrap's failure file), the job's fault, or AWS's. An [`Ending`] carries its own
//! build/system classification and message.

use std::sync::LazyLock;
use std::time::Duration;

use aws_sdk_sagemaker::operation::describe_training_job::DescribeTrainingJobOutput;
use aws_sdk_sagemaker::types::{SecondaryStatus, TrainingJobStatus};
use regex::Regex;

use crate::failure::{Classify, FailureKind};

/// How a training job that did not complete ended, as far as the CI job is concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ending {
    /// The stage script exited non-zero (reported by the bootstrap).
    #[error("the job's script exited with status {0} in the training container")]
    Script(i32),
    /// The container failed for another reason of its own (AlgorithmError).
    #[error("the training container failed: {0}")]
    Algorithm(String),
    /// SageMaker refused the job's input (ClientError: a missing channel, a bad image).
    #[error("SageMaker refused the job's input: {0}")]
    Client(String),
    /// No capacity for the instance type.
    #[error("no capacity for the training job: {0}")]
    Capacity(String),
    /// SageMaker's own fault.
    #[error("SageMaker failed the training job: {0}")]
    Internal(String),
    /// `MaxRuntimeInSeconds` was reached.
    #[error("the training job reached its max runtime of {} (SAGEMAKER_MAX_RUNTIME)", humantime::format_duration(*.0))]
    MaxRuntime(Duration),
    /// `MaxWaitTimeInSeconds` was reached waiting for spot capacity.
    #[error("the training job reached its max wait of {} for spot capacity (SAGEMAKER_MAX_WAIT)", humantime::format_duration(*.0))]
    MaxWait(Duration),
    /// Stopped, but not by this executor and not by a limit.
    #[error("the training job {0} was stopped outside this CI job")]
    StoppedOutside(String),
    /// A failure reason we do not recognise.
    #[error("the training job failed: {0}")]
    Unknown(String),
}

impl Classify for Ending {
    fn failure_kind(&self) -> FailureKind {
        match self {
            Ending::Script(_)
            | Ending::Algorithm(_)
            | Ending::Client(_)
            | Ending::MaxRuntime(_)
            | Ending::StoppedOutside(_) => FailureKind::Build,
            Ending::Capacity(_) | Ending::Internal(_) | Ending::MaxWait(_) | Ending::Unknown(_) => {
                FailureKind::System
            }
        }
    }

    fn script_exit_code(&self) -> Option<i32> {
        match self {
            Ending::Script(code) => Some(*code),
            Ending::Algorithm(_)
            | Ending::Client(_)
            | Ending::Capacity(_)
            | Ending::Internal(_)
            | Ending::MaxRuntime(_)
            | Ending::MaxWait(_)
            | Ending::StoppedOutside(_)
            | Ending::Unknown(_) => None,
        }
    }
}

/// The limits a job ran under, to name them when it hit one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `SAGEMAKER_MAX_RUNTIME`.
    pub max_runtime: Duration,
    /// `SAGEMAKER_MAX_WAIT`, for spot jobs.
    pub max_wait: Duration,
}

static SCRIPT_STATUS: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"sagemaker-executor: script exited with status (\d+)").ok());

/// Reads the ending from a terminal description: `Ok` when the job completed.
pub fn ending(d: &DescribeTrainingJobOutput, limits: Limits) -> Result<(), Ending> {
    let reason = d.failure_reason().unwrap_or_default().trim().to_owned();
    match d.training_job_status() {
        Some(TrainingJobStatus::Completed) => Ok(()),
        Some(TrainingJobStatus::Stopped) => Err(match d.secondary_status() {
            Some(SecondaryStatus::MaxRuntimeExceeded) => Ending::MaxRuntime(limits.max_runtime),
            Some(SecondaryStatus::MaxWaitTimeExceeded) => Ending::MaxWait(limits.max_wait),
            _ => Ending::StoppedOutside(d.training_job_name().unwrap_or_default().to_owned()),
        }),
        _ => Err(failure(&reason)),
    }
}

/// Classifies a FailureReason. SageMaker documents the prefixes; only ours carries a status.
pub fn failure(reason: &str) -> Ending {
    if let Some(code) = SCRIPT_STATUS
        .as_ref()
        .and_then(|re| re.captures(reason))
        .and_then(|c| c.get(1))
        .and_then(|m| m.as_str().parse::<i32>().ok())
    {
        return Ending::Script(code);
    }
    let r = reason.to_owned();
    if reason.starts_with("CapacityError") || reason.contains("InsufficientCapacity") {
        Ending::Capacity(r)
    } else if reason.starts_with("InternalServerError") || reason.starts_with("InternalFailure") {
        Ending::Internal(r)
    } else if reason.starts_with("AlgorithmError") {
        Ending::Algorithm(r)
    } else if reason.starts_with("ClientError") {
        Ending::Client(r)
    } else {
        Ending::Unknown(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_reasons_are_classified() {
        assert_eq!(
            failure("AlgorithmError: sagemaker-executor: script exited with status 3"),
            Ending::Script(3)
        );
        assert!(matches!(
            failure("CapacityError: Unable to provision requested ML compute capacity."),
            Ending::Capacity(_)
        ));
        assert!(matches!(
            failure("InternalServerError: We encountered an internal error."),
            Ending::Internal(_)
        ));
        assert!(matches!(
            failure("AlgorithmError: process exited with code 137"),
            Ending::Algorithm(_)
        ));
        assert!(matches!(
            failure("ClientError: Data download failed"),
            Ending::Client(_)
        ));
        assert!(matches!(failure("something new"), Ending::Unknown(_)));
    }

    #[test]
    fn endings_carry_their_classification() {
        assert_eq!(Ending::Script(3).failure_kind(), FailureKind::Build);
        assert_eq!(Ending::Script(3).script_exit_code(), Some(3));
        assert_eq!(
            Ending::Capacity("x".into()).failure_kind(),
            FailureKind::System
        );
        assert_eq!(
            Ending::MaxRuntime(Duration::from_secs(3)).to_string(),
            "the training job reached its max runtime of 3s (SAGEMAKER_MAX_RUNTIME)"
        );
    }
}
