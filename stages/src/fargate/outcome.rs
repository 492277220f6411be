//! How a stopped Fargate task ended, as far as the CI job is concerned: the job container's exit
//! status, the job's fault (bad image, out of memory), or AWS's (spot interruption, failure to
//! provision, scheduler stops).
//!
//! The input is a plain [`TaskEnd`] read from DescribeTasks, so every rule is unit-tested without
//! AWS. Reasons are matched on the error names ECS documents (`CannotPullContainerError`,
//! `ResourceInitializationError`, `OutOfMemoryError`, ...), which prefix its messages.

use aws_sdk_ecs::types::Task;

use super::taskdef::{FETCH, JOB};
use crate::failure::{Classify, FailureKind};

/// One container of a stopped task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerEnd {
    /// Container name.
    pub name: String,
    /// Its exit code, when its process ran and exited.
    pub exit_code: Option<i32>,
    /// ECS's reason (why it stopped or never started).
    pub reason: Option<String>,
}

/// What DescribeTasks says about a stopped task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskEnd {
    /// `stopCode` (`EssentialContainerExited`, `TaskFailedToStart`, `UserInitiated`, ...).
    pub stop_code: Option<String>,
    /// `stoppedReason`.
    pub stopped_reason: String,
    /// Every container.
    pub containers: Vec<ContainerEnd>,
}

impl TaskEnd {
    /// Reads the relevant fields of a described task.
    pub fn from_task(t: &Task) -> TaskEnd {
        TaskEnd {
            stop_code: t.stop_code().map(|c| c.as_str().to_owned()),
            stopped_reason: t.stopped_reason().unwrap_or_default().to_owned(),
            containers: t
                .containers()
                .iter()
                .map(|c| ContainerEnd {
                    name: c.name().unwrap_or_default().to_owned(),
                    exit_code: c.exit_code(),
                    reason: c.reason().map(str::to_owned),
                })
                .collect(),
        }
    }

    /// The container named `name`.
    pub fn container(&self, name: &str) -> Option<&ContainerEnd> {
        self.containers.iter().find(|c| c.name == name)
    }
}

/// The end of a Fargate task, as far as the CI job is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The job container exited 0.
    Completed,
    /// The job container exited with this status (the script's, through the bootstrap).
    Script(i32),
    /// The job container was killed for running out of memory.
    OutOfMemory(String),
    /// The job's image could not be pulled.
    BadImage(String),
    /// The job container could not be started (the image lacks `/bin/sh`, ...).
    JobCannotStart(String),
    /// The fetch helper failed, so the job never ran.
    FetchFailed(String),
    /// Fargate Spot reclaimed the capacity.
    Interrupted(String),
    /// AWS could not provision or run the task, or stopped it for its own reasons.
    Platform(String),
    /// Someone stopped the task (StopTask) outside this executor.
    StoppedOutside(String),
    /// Nothing this executor recognises.
    Unknown(String),
}

impl Classify for Ending {
    fn failure_kind(&self) -> FailureKind {
        match self {
            Ending::Completed
            | Ending::Script(_)
            | Ending::OutOfMemory(_)
            | Ending::BadImage(_)
            | Ending::JobCannotStart(_)
            | Ending::StoppedOutside(_) => FailureKind::Build,
            Ending::FetchFailed(_)
            | Ending::Interrupted(_)
            | Ending::Platform(_)
            | Ending::Unknown(_) => FailureKind::System,
        }
    }

    fn script_exit_code(&self) -> Option<i32> {
        match self {
            Ending::Script(code) => Some(*code),
            // The container's real status, so `allow_failure: exit_codes: [137]` can match it.
            Ending::OutOfMemory(_) => Some(SIGKILL_STATUS),
            Ending::Completed
            | Ending::BadImage(_)
            | Ending::JobCannotStart(_)
            | Ending::FetchFailed(_)
            | Ending::Interrupted(_)
            | Ending::Platform(_)
            | Ending::StoppedOutside(_)
            | Ending::Unknown(_) => None,
        }
    }
}

/// Exit status of a container killed with SIGKILL (128 + 9), which ECS reports for an OOM kill.
const SIGKILL_STATUS: i32 = 137;
/// Exit status after SIGTERM (128 + 15): what StopTask gives a process that obeys it.
const SIGTERM_STATUS: i32 = 143;

/// Error names that mean AWS could not provision or run the task.
const PLATFORM_REASONS: &[&str] = &[
    "ResourceInitializationError",
    "InternalError",
    "ServiceSchedulerInitiated",
    "Capacity is unavailable",
    "TaskFailedToStart",
    "Timeout waiting for network interface",
];

/// Classifies a stopped task.
pub fn ending(t: &TaskEnd) -> Ending {
    let code = t.stop_code.as_deref().unwrap_or_default();
    let reason = t.stopped_reason.clone();
    // AWS took the task away: whatever the containers did after that is a consequence.
    match code {
        "SpotInterruption" | "TerminationNotice" => return Ending::Interrupted(reason),
        "ServiceSchedulerInitiated" | "InfrastructureHealth" => return Ending::Platform(reason),
        _ => {}
    }
    let job = t.container(JOB);
    let job_reason = job.and_then(|c| c.reason.clone()).unwrap_or_default();
    if let Some(status) = job.and_then(|c| c.exit_code) {
        return match status {
            0 => Ending::Completed,
            SIGKILL_STATUS if job_reason.contains("OutOfMemoryError") => {
                Ending::OutOfMemory(job_reason)
            }
            SIGKILL_STATUS | SIGTERM_STATUS if code == "UserInitiated" => {
                Ending::StoppedOutside(reason)
            }
            status => Ending::Script(status),
        };
    }
    // The job container has no exit status: it never ran. Find out why.
    if job_reason.contains("CannotPullContainerError") {
        return Ending::BadImage(job_reason);
    }
    if code == "UserInitiated" {
        return Ending::StoppedOutside(reason);
    }
    if let Some(fetch) = t.container(FETCH)
        && let Some(status) = fetch.exit_code
        && status != 0
    {
        let why = fetch
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        return Ending::FetchFailed(format!("it exited with status {status}{why}"));
    }
    let texts = [job_reason.as_str(), reason.as_str(), code];
    if texts
        .iter()
        .any(|text| PLATFORM_REASONS.iter().any(|p| text.contains(p)))
    {
        let detail = if reason.is_empty() {
            job_reason
        } else {
            reason
        };
        return Ending::Platform(detail);
    }
    if job_reason.contains("CannotStartContainerError") {
        return Ending::JobCannotStart(job_reason);
    }
    let detail = [reason.as_str(), job_reason.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Ending::Unknown(if detail.is_empty() {
        format!("stop code {code:?} without a reason")
    } else {
        detail
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, exit_code: Option<i32>, reason: Option<&str>) -> ContainerEnd {
        ContainerEnd {
            name: name.into(),
            exit_code,
            reason: reason.map(str::to_owned),
        }
    }

    fn task(code: &str, reason: &str, containers: Vec<ContainerEnd>) -> TaskEnd {
        TaskEnd {
            stop_code: Some(code.into()),
            stopped_reason: reason.into(),
            containers,
        }
    }

    const ESSENTIAL: &str = "Essential container in task exited";

    #[test]
    fn the_job_containers_exit_status_decides_a_normal_end() {
        let ran = |status| {
            task(
                "EssentialContainerExited",
                ESSENTIAL,
                vec![
                    c("fetch", Some(0), None),
                    c("job", Some(status), None),
                    c("push", Some(0), None),
                ],
            )
        };
        assert_eq!(ending(&ran(0)), Ending::Completed);
        assert_eq!(ending(&ran(3)), Ending::Script(3));
        // A plain 137 (the script killed itself, or `kill -9`) is the script's status.
        assert_eq!(ending(&ran(137)), Ending::Script(137));
    }

    #[test]
    fn oom_is_told_apart_from_other_kills() {
        let t = task(
            "EssentialContainerExited",
            ESSENTIAL,
            vec![
                c("fetch", Some(0), None),
                c(
                    "job",
                    Some(137),
                    Some("OutOfMemoryError: Container killed due to memory usage"),
                ),
                c("push", Some(0), None),
            ],
        );
        assert!(matches!(ending(&t), Ending::OutOfMemory(r) if r.contains("OutOfMemoryError")));
    }

    #[test]
    fn aws_faults_are_platform_failures_whatever_the_containers_did() {
        let spot = task(
            "SpotInterruption",
            "Your Spot Task was interrupted.",
            vec![c("job", Some(143), None)],
        );
        assert_eq!(
            ending(&spot),
            Ending::Interrupted("Your Spot Task was interrupted.".into())
        );
        let sched = task(
            "ServiceSchedulerInitiated",
            "Scaling activity initiated by deployment",
            vec![c("job", Some(143), None)],
        );
        assert!(matches!(ending(&sched), Ending::Platform(_)));
        let init = task(
            "TaskFailedToStart",
            "ResourceInitializationError: unable to pull secrets or registry auth",
            vec![c("fetch", None, None), c("job", None, None)],
        );
        assert!(
            matches!(ending(&init), Ending::Platform(r) if r.starts_with("ResourceInitializationError"))
        );
        let capacity = task(
            "TaskFailedToStart",
            "Capacity is unavailable at this time.",
            vec![c("job", None, None)],
        );
        assert!(matches!(ending(&capacity), Ending::Platform(_)));
    }

    #[test]
    fn a_bad_image_is_the_jobs_fault_but_a_bad_helper_is_not() {
        let pull =
            "CannotPullContainerError: pull image manifest has been retried 5 time(s): not found";
        let bad_job = task(
            "TaskFailedToStart",
            pull,
            vec![c("fetch", None, Some(pull)), c("job", None, Some(pull))],
        );
        assert!(matches!(ending(&bad_job), Ending::BadImage(_)));
        let bad_helper = task(
            "TaskFailedToStart",
            pull,
            vec![c("fetch", None, Some(pull)), c("job", None, None)],
        );
        assert!(
            matches!(ending(&bad_helper), Ending::Platform(_)),
            "{:?}",
            ending(&bad_helper)
        );
        let no_sh = task(
            "EssentialContainerExited",
            ESSENTIAL,
            vec![
                c("fetch", Some(0), None),
                c(
                    "job",
                    None,
                    Some("CannotStartContainerError: exec: \"/bin/sh\": no such file"),
                ),
            ],
        );
        assert!(matches!(ending(&no_sh), Ending::JobCannotStart(_)));
    }

    #[test]
    fn a_failed_fetch_explains_a_job_that_never_ran() {
        let t = task(
            "EssentialContainerExited",
            ESSENTIAL,
            vec![
                c("fetch", Some(1), None),
                c(
                    "job",
                    None,
                    Some(
                        "CannotStartContainerError: dependency graph: dependency [fetch] did not exit successfully",
                    ),
                ),
                c("push", None, None),
            ],
        );
        assert_eq!(
            ending(&t),
            Ending::FetchFailed("it exited with status 1".into())
        );
    }

    #[test]
    fn stop_task_from_elsewhere_is_stopped_outside() {
        let t = task(
            "UserInitiated",
            "stopped by an admin",
            vec![c("fetch", Some(0), None), c("job", Some(143), None)],
        );
        assert_eq!(
            ending(&t),
            Ending::StoppedOutside("stopped by an admin".into())
        );
        let early = task(
            "UserInitiated",
            "stopped by an admin",
            vec![c("fetch", None, None), c("job", None, None)],
        );
        assert_eq!(
            ending(&early),
            Ending::StoppedOutside("stopped by an admin".into())
        );
        // The script's own failure is still the script's, even if someone stopped the task later.
        let own = task("UserInitiated", "stopped", vec![c("job", Some(2), None)]);
        assert_eq!(ending(&own), Ending::Script(2));
    }

    #[test]
    fn unknown_endings_keep_every_reason() {
        let t = task(
            "EssentialContainerExited",
            "something new",
            vec![c("job", None, Some("odd"))],
        );
        assert_eq!(ending(&t), Ending::Unknown("something new; odd".into()));
        let bare = TaskEnd::default();
        assert!(matches!(ending(&bare), Ending::Unknown(r) if r.contains("without a reason")));
    }
}
