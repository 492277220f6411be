//! What following a Fargate task shows: a GitLab section per phase (provisioning, the fetch
//! helper, the job's script, the push helper), status changes, and a verdict at STOPPED. A
//! phase's section opens with its container's first line (`[fetch] ...`, the script's own, then
//! `[push] ...`), not with a status sample: the log reads the same however often DescribeTasks
//! happened to look, and the script's lines stay inside the section named for running it.

use aws_sdk_ecs::types::Task;

use super::lines::task_id;
use super::taskdef::{FETCH, JOB, PUSH};
use crate::aws::errors::{AwsCallError, Retry};
use crate::joblog::JobLog;
use crate::watch::{Describe, ShowsLines, Watched};

/// Sections in the order the task goes through them; they only move forward.
const PHASES: &[(&str, &str, &str)] = &[
    ("", "provisioning", "Provisioning the Fargate task"),
    (
        FETCH,
        "downloading",
        "Downloading the workspace into the task (fetch)",
    ),
    (JOB, "script", "Running the job's script (job)"),
    (PUSH, "uploading", "Uploading the workspace (push)"),
];
const FETCH_PHASE: usize = 1;
const SCRIPT_PHASE: usize = 2;
const PUSH_PHASE: usize = 3;

/// Whether the task has stopped.
pub fn is_terminal(task: &Task) -> bool {
    task.last_status() == Some("STOPPED")
}

/// The status side of following one task.
#[derive(Debug)]
pub struct TaskWatch {
    client: aws_sdk_ecs::Client,
    cluster: String,
    task_arn: String,
    log: JobLog,
    last_status: Option<String>,
    phase: usize,
    open: Option<&'static str>,
}

impl TaskWatch {
    /// Follows `task_arn` in `cluster` with `client` (a polling client: no SDK retries).
    pub fn new(client: aws_sdk_ecs::Client, cluster: &str, task_arn: &str, log: JobLog) -> Self {
        let mut w = TaskWatch {
            client,
            cluster: cluster.to_owned(),
            task_arn: task_arn.to_owned(),
            log,
            last_status: None,
            phase: 0,
            open: None,
        };
        w.open(0);
        w
    }

    fn open(&mut self, phase: usize) {
        if let Some(name) = self.open.take() {
            self.log.section_end(name);
        }
        if let Some((_, name, header)) = PHASES.get(phase) {
            // The script's phase stays expanded: it is what the user came for.
            self.log.section_start(name, header, *name != "script");
            self.open = Some(name);
        }
        self.phase = phase;
    }

    /// After the last lines: closes the open section and says how the task stopped.
    pub fn close(&mut self, last: Option<&Task>) {
        if let Some(name) = self.open.take() {
            self.log.section_end(name);
        }
        if let Some(task) = last.filter(|t| is_terminal(t)) {
            let code = task
                .stop_code()
                .map(|c| c.as_str())
                .unwrap_or("no stop code");
            let reason = task.stopped_reason().unwrap_or("no reason given");
            self.log.notice(&format!("Task STOPPED: {code} ({reason})"));
        }
    }
}

impl Watched for TaskWatch {
    type Status = Task;
    type Done = ();
    type Error = AwsCallError;

    fn describe(&self) -> Describe<Task, AwsCallError> {
        let request = self
            .client
            .describe_tasks()
            .cluster(&self.cluster)
            .tasks(&self.task_arn);
        let arn = self.task_arn.clone();
        Box::pin(async move {
            let out = request
                .send()
                .await
                .map_err(|e| AwsCallError::new("DescribeTasks", e))?;
            out.tasks().first().cloned().ok_or_else(|| {
                AwsCallError::other(
                    "DescribeTasks",
                    format!(
                        "ECS task {} is gone (DescribeTasks reports it MISSING)",
                        task_id(&arn)
                    ),
                    Retry::Permanent,
                )
            })
        })
    }

    /// Announces a status change (STOPPED is announced by [`TaskWatch::close`], after the last
    /// lines); sections follow the lines, see the module docs.
    fn observe(&mut self, task: &Task) -> bool {
        let status = task.last_status().map(str::to_owned);
        if status == self.last_status {
            return false;
        }
        if let Some(s) = status.as_deref().filter(|s| *s != "STOPPED") {
            self.log.notice(&format!("Task {s}"));
        }
        self.last_status = status;
        true
    }

    fn judge(&self, task: &Task) -> Option<()> {
        is_terminal(task).then_some(())
    }

    fn warn(&mut self, text: &str) {
        self.log.warn(text);
    }
}

impl ShowsLines for TaskWatch {
    fn lines_ready(&self) -> bool {
        true
    }
    fn print_lines(&mut self, lines: &[String]) {
        for l in lines {
            let phase = if l.starts_with("[fetch] ") {
                FETCH_PHASE
            } else if l.starts_with("[push] ") {
                PUSH_PHASE
            } else {
                SCRIPT_PHASE
            };
            // Only forward: a late helper line stays in the section that is open.
            if phase > self.phase {
                self.open(phase);
            }
            self.log.line(l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::lines::tests::task;

    fn watch() -> (TaskWatch, std::sync::Arc<std::sync::Mutex<String>>) {
        let conf = aws_sdk_ecs::Config::builder()
            .behavior_version(aws_sdk_ecs::config::BehaviorVersion::latest())
            .region(aws_sdk_ecs::config::Region::new("us-east-1"))
            .build();
        let (log, buffer) = JobLog::capture();
        (
            TaskWatch::new(aws_sdk_ecs::Client::from_conf(conf), "ci", "arn:t/1", log),
            buffer,
        )
    }

    #[test]
    fn sections_follow_the_lines_and_never_go_back() {
        let (mut p, _) = watch();
        assert!(p.observe(&task("PENDING", &[("fetch", "PENDING", None)])));
        assert!(
            !p.observe(&task("PENDING", &[("fetch", "RUNNING", None)])),
            "no change"
        );
        assert_eq!(p.open, Some("provisioning"));
        p.print_lines(&["[fetch] downloading".into()]);
        assert_eq!(p.open, Some("downloading"));
        p.print_lines(&["epoch=1".into(), "[fetch] a late helper line".into()]);
        assert_eq!(p.open, Some("script"), "a late fetch line does not go back");
        p.print_lines(&["last script line".into(), "[push] uploading".into()]);
        assert_eq!(p.open, Some("uploading"));
        p.close(None);
        assert_eq!(p.open, None);
    }

    #[test]
    fn the_scripts_lines_land_in_its_section() {
        let (mut p, buffer) = watch();
        p.observe(&task("RUNNING", &[("fetch", "RUNNING", None)]));
        p.print_lines(&["[fetch] downloaded".into(), "epoch=1".into()]);
        p.print_lines(&["[push] uploaded".into()]);
        p.close(Some(&task("STOPPED", &[])));
        let text = buffer.lock().expect("buffer").clone();
        let pos = |needle: &str| {
            text.find(needle)
                .unwrap_or_else(|| panic!("{needle}: {text}"))
        };
        assert!(pos("Running the job's script") < pos("epoch=1"));
        assert!(pos("epoch=1") < pos("Uploading the workspace (push)"));
        assert!(pos("[push] uploaded") < pos("Task STOPPED"));
    }
}
