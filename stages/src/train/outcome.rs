//! How a finished training job ended, read from DescribeTrainingJob: the script's own status
//! (from the bootstrap's failure file), the job's fault, or AWS's.

use std::sync::LazyLock;

use aws_sdk_sagemaker::operation::describe_training_job::DescribeTrainingJobOutput;
use aws_sdk_sagemaker::types::{SecondaryStatus, TrainingJobStatus};
use regex::Regex;

/// The end of a training job, as far as the CI job is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Completed.
    Completed,
    /// The stage script exited non-zero (reported by the bootstrap).
    Script(i32),
    /// The container failed for another reason of its own (AlgorithmError).
    Algorithm(String),
    /// SageMaker refused the job's input (ClientError: a missing channel, a bad image).
    Client(String),
    /// No capacity for the instance type.
    Capacity(String),
    /// SageMaker's own fault.
    Internal(String),
    /// `MaxRuntimeInSeconds` was reached.
    MaxRuntime,
    /// `MaxWaitTimeInSeconds` was reached waiting for spot capacity.
    MaxWait,
    /// Stopped, but not by this executor and not by a limit.
    Stopped,
    /// A failure reason we do not recognise.
    Unknown(String),
}

static SCRIPT_STATUS: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"sagemaker-executor: script exited with status (\d+)").ok());

/// Reads the ending from a terminal description.
pub fn ending(d: &DescribeTrainingJobOutput) -> Ending {
    let reason = d.failure_reason().unwrap_or_default().trim().to_owned();
    match d.training_job_status() {
        Some(TrainingJobStatus::Completed) => Ending::Completed,
        Some(TrainingJobStatus::Stopped) => match d.secondary_status() {
            Some(SecondaryStatus::MaxRuntimeExceeded) => Ending::MaxRuntime,
            Some(SecondaryStatus::MaxWaitTimeExceeded) => Ending::MaxWait,
            _ => Ending::Stopped,
        },
        _ => failure(&reason),
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
}
