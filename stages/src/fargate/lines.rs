//! The Fargate task's log lines: the awslogs stream of each container (`sme/<container>/<task>`)
//! while it runs, and a little after it stopped (CloudWatch lags the exit). The job's lines are
//! shown as they are; the helpers' get their container name as a prefix.

use std::time::Duration;

use aws_sdk_ecs::types::Task;
use tokio_util::sync::CancellationToken;

use super::taskdef::{FETCH, JOB, PUSH, STREAM_PREFIX};
use crate::logs::feed::LineSource;
use crate::logs::{LogError, LogLine, LogTailer, PageFollow, StreamNaming, format_line};

/// Log polls a container still gets after it stopped: CloudWatch lags the exit by a moment.
const POLLS_AFTER_STOP: u8 = 2;
/// Drain passes per container after the task stopped.
const DRAIN_PASSES: u32 = 4;

/// The log stream of one container and whether it is worth reading.
#[derive(Debug)]
struct ContainerLog {
    name: &'static str,
    tailer: LogTailer,
    started: bool,
    stopped: bool,
    polls_left_after_stop: u8,
}

impl ContainerLog {
    fn active(&self) -> bool {
        self.started && (!self.stopped || self.polls_left_after_stop > 0)
    }

    fn render(&self, lines: &[LogLine]) -> Vec<String> {
        lines
            .iter()
            .map(|l| format_line(l, self.name != JOB))
            .collect()
    }
}

/// Tails the task's three awslogs streams.
#[derive(Debug)]
pub struct TaskLogs {
    client: aws_sdk_cloudwatchlogs::Client,
    containers: Vec<ContainerLog>,
}

/// The task id: the last segment of the ARN.
pub fn task_id(task_arn: &str) -> &str {
    task_arn.rsplit('/').next().unwrap_or(task_arn)
}

impl TaskLogs {
    /// The streams of task `task_arn` in `group`, read with `client`.
    pub fn new(client: aws_sdk_cloudwatchlogs::Client, group: &str, task_arn: &str) -> TaskLogs {
        let task_id = task_id(task_arn);
        let containers = [FETCH, JOB, PUSH]
            .into_iter()
            .map(|name| ContainerLog {
                name,
                tailer: LogTailer::fixed(
                    group,
                    vec![format!("{STREAM_PREFIX}/{name}/{task_id}")],
                    StreamNaming::Ecs,
                )
                .with_page_follow(PageFollow::WhileBacklogged)
                .with_drain_interval(Duration::from_secs(1)),
                started: false,
                stopped: false,
                polls_left_after_stop: POLLS_AFTER_STOP,
            })
            .collect();
        TaskLogs { client, containers }
    }
}

impl LineSource for TaskLogs {
    type Status = Task;

    /// Notes which containers have started and stopped.
    fn observe(&mut self, task: &Task) {
        for c in task.containers() {
            let Some(log) = self
                .containers
                .iter_mut()
                .find(|l| Some(l.name) == c.name())
            else {
                continue;
            };
            match c.last_status() {
                Some("RUNNING") => log.started = true,
                // A container that stopped with an exit code ran, however briefly.
                Some("STOPPED") => {
                    log.started |= c.exit_code().is_some();
                    log.stopped = true;
                }
                _ => {}
            }
        }
    }

    async fn poll(&mut self) -> Result<Vec<String>, LogError> {
        let mut out = Vec::new();
        for c in self.containers.iter_mut().filter(|c| c.active()) {
            let lines = c.tailer.poll(&self.client).await?;
            if c.stopped {
                c.polls_left_after_stop = c.polls_left_after_stop.saturating_sub(1);
            }
            out.extend(c.render(&lines));
        }
        Ok(out)
    }

    /// Reads every container that ran to the end of its stream, all at once (each drain ends
    /// with a pause for CloudWatch's lag), in container order.
    async fn drain(&mut self, cancel: &CancellationToken) -> (Vec<String>, Option<String>) {
        let client = &self.client;
        let drains = self
            .containers
            .iter_mut()
            // A container that never ran has nothing; one read after it stopped is caught up.
            .filter(|c| c.started && !(c.stopped && c.polls_left_after_stop == 0))
            .map(|c| async move {
                let result = c.tailer.drain(client, DRAIN_PASSES, cancel).await;
                (c, result)
            });
        let mut out = Vec::new();
        let mut warning = None;
        for (c, result) in futures_util::future::join_all(drains).await {
            match result {
                Ok(lines) => out.extend(c.render(&lines)),
                Err(e) => {
                    let pending = c.tailer.take_pending();
                    out.extend(c.render(&pending));
                    warning = Some(format!("some {} log lines may be missing: {e}", c.name));
                }
            }
        }
        (out, warning)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use aws_sdk_ecs::types::Container;

    use super::*;

    pub(crate) fn task(status: &str, containers: &[(&str, &str, Option<i32>)]) -> Task {
        Task::builder()
            .last_status(status)
            .set_containers(Some(
                containers
                    .iter()
                    .map(|(n, s, code)| {
                        Container::builder()
                            .name(*n)
                            .last_status(*s)
                            .set_exit_code(*code)
                            .build()
                    })
                    .collect(),
            ))
            .build()
    }

    fn client() -> aws_sdk_cloudwatchlogs::Client {
        let conf = aws_sdk_cloudwatchlogs::Config::builder()
            .behavior_version(aws_sdk_cloudwatchlogs::config::BehaviorVersion::latest())
            .region(aws_sdk_cloudwatchlogs::config::Region::new("us-east-1"))
            .build();
        aws_sdk_cloudwatchlogs::Client::from_conf(conf)
    }

    #[test]
    fn task_ids_come_from_the_arn() {
        assert_eq!(
            task_id("arn:aws:ecs:us-east-1:123456789012:task/ci/0123abcd"),
            "0123abcd"
        );
        assert_eq!(task_id("0123abcd"), "0123abcd");
    }

    #[test]
    fn only_started_containers_are_read_and_stopped_ones_a_little_longer() {
        let mut logs = TaskLogs::new(client(), "/g", "arn:aws:ecs:r:1:task/ci/t1");
        assert!(
            logs.containers.iter().all(|c| !c.active()),
            "nothing before the task runs"
        );
        logs.observe(&task(
            "RUNNING",
            &[
                ("fetch", "STOPPED", Some(0)),
                ("job", "RUNNING", None),
                ("push", "PENDING", None),
            ],
        ));
        let active: Vec<_> = logs
            .containers
            .iter()
            .filter(|c| c.active())
            .map(|c| c.name)
            .collect();
        assert_eq!(
            active,
            [FETCH, JOB],
            "fetch gets its last lines read, push has not started"
        );
        logs.containers[0].polls_left_after_stop = 0;
        assert!(!logs.containers[0].active());
        // A container that never ran (blocked dependency) is never read.
        let mut logs = TaskLogs::new(client(), "/g", "arn:aws:ecs:r:1:task/ci/t1");
        logs.observe(&task(
            "STOPPED",
            &[("fetch", "STOPPED", Some(1)), ("job", "STOPPED", None)],
        ));
        assert!(logs.containers[0].active() && !logs.containers[1].active());
    }
}
