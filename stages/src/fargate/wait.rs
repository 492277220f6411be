//! Following a Fargate task to STOPPED: one loop that polls DescribeTasks with an adaptive
//! interval and tails the awslogs stream of each container while it runs, opening a GitLab
//! section per phase (provisioning, fetch, the job's script, push). Every sleep is raced against
//! cancellation.
//!
//! Cadence: DescribeTasks starts at 2 s and backs off (x1.5) to 20 s while nothing changes; a
//! change resets it. Logs are read every 2 s while lines flow, doubling to 10 s while a stream is
//! idle, and only for containers that have started and not yet been caught up after stopping,
//! so a long quiet job costs about 3 describe and 6 log calls a minute.

use std::time::Duration;

use aws_sdk_ecs::types::Task;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::FargateError;
use super::taskdef::{FETCH, JOB, PUSH, STREAM_PREFIX};
use crate::aws::{Aws, errors};
use crate::joblog::JobLog;
use crate::logs::{LogTailer, PageFollow, StreamNaming, format_line};

/// Consecutive failed describes (after SDK retries) before the wait gives up.
const MAX_DESCRIBE_FAILURES: u32 = 20;
const FIRST_DESCRIBE: Duration = Duration::from_secs(2);
const MAX_DESCRIBE: Duration = Duration::from_secs(20);
const LOGS_ACTIVE: Duration = Duration::from_secs(2);
const LOGS_IDLE_MAX: Duration = Duration::from_secs(10);
/// Log polls a container still gets after it stopped: CloudWatch lags the exit by a moment.
const POLLS_AFTER_STOP: u8 = 2;

/// How the wait ended.
#[derive(Debug)]
pub enum Waited {
    /// The task reached STOPPED.
    Stopped(Box<Task>),
    /// Cancellation arrived first.
    Cancelled,
}

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
}

/// Tails the task's three awslogs streams (`sme/<container>/<task-id>`). The job's lines are
/// printed as they are; the helpers' get their container name as a prefix.
#[derive(Debug)]
pub struct TaskLogs {
    containers: Vec<ContainerLog>,
}

impl TaskLogs {
    /// The streams of task `task_arn` in `group`.
    pub fn new(group: &str, task_arn: &str) -> TaskLogs {
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
        TaskLogs { containers }
    }

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

    fn print(name: &str, lines: &[crate::logs::LogLine], log: &JobLog) {
        for l in lines {
            log.line(&format_line(l, name != JOB));
        }
    }

    /// Reads the active streams once; returns how many lines were printed.
    async fn poll(
        &mut self,
        client: &aws_sdk_cloudwatchlogs::Client,
        log: &JobLog,
    ) -> Result<usize, crate::logs::LogError> {
        let mut printed = 0;
        for c in self.containers.iter_mut().filter(|c| c.active()) {
            let lines = c.tailer.poll(client).await?;
            if c.stopped {
                c.polls_left_after_stop = c.polls_left_after_stop.saturating_sub(1);
            }
            Self::print(c.name, &lines, log);
            printed += lines.len();
        }
        Ok(printed)
    }

    /// After the task stopped: reads every container that ran to the end of its stream, all at
    /// once (each drain ends with a pause for CloudWatch's lag), printing in container order.
    async fn drain(
        &mut self,
        client: &aws_sdk_cloudwatchlogs::Client,
        log: &JobLog,
        cancel: &CancellationToken,
    ) {
        let drains = self
            .containers
            .iter_mut()
            // A container already read after it stopped is caught up.
            .filter(|c| c.started && !(c.stopped && c.polls_left_after_stop == 0))
            .map(|c| async move {
                let result = c.tailer.drain(client, 4, cancel).await;
                (c, result)
            });
        for (c, result) in futures_util::future::join_all(drains).await {
            match result {
                Ok(lines) => Self::print(c.name, &lines, log),
                Err(e) => {
                    Self::print(c.name, &c.tailer.take_pending(), log);
                    log.warn(&format!("some {} log lines may be missing: {e}", c.name));
                }
            }
        }
    }
}

/// The task id: the last segment of the ARN.
pub fn task_id(task_arn: &str) -> &str {
    task_arn.rsplit('/').next().unwrap_or(task_arn)
}

/// Tracks what has been announced: the task's status and the open section.
struct Progress<'a> {
    log: &'a JobLog,
    last_status: Option<String>,
    phase: usize,
    open: Option<&'static str>,
}

/// Sections in the order the task goes through them; `observe` only moves forward.
const PHASES: &[(&str, &str, &str)] = &[
    ("", "provisioning", "Provisioning the Fargate task"),
    (
        FETCH,
        "downloading",
        "Downloading the workspace into the task (fetch)",
    ),
    (JOB, "job", "Running the job's script (job)"),
    (PUSH, "uploading", "Uploading the workspace (push)"),
];

impl Progress<'_> {
    fn open(&mut self, phase: usize) {
        if let Some(name) = self.open.take() {
            self.log.section_end(name);
        }
        if let Some((_, name, header)) = PHASES.get(phase) {
            // The job's own phase stays expanded: it is what the user came for.
            self.log.section_start(name, header, *name != "job");
            self.open = Some(name);
        }
        self.phase = phase;
    }

    fn close(&mut self) {
        if let Some(name) = self.open.take() {
            self.log.section_end(name);
        }
    }

    /// Opens the section of the furthest container that started, then announces a status
    /// change (STOPPED is announced by the caller, after the last lines); returns whether
    /// anything changed.
    fn update(&mut self, task: &Task) -> bool {
        let mut changed = false;
        let furthest = PHASES
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, (container, _, _))| {
                task.containers().iter().any(|c| {
                    c.name() == Some(*container)
                        && (c.last_status() == Some("RUNNING") || c.exit_code().is_some())
                })
            })
            .map(|(i, _)| i)
            .max();
        if let Some(phase) = furthest.filter(|p| *p > self.phase) {
            self.open(phase);
            changed = true;
        }
        let status = task.last_status().map(str::to_owned);
        if status != self.last_status {
            changed = true;
            if let Some(s) = status.as_deref().filter(|s| *s != "STOPPED") {
                self.log.notice(&format!("Task {s}"));
            }
            self.last_status = status;
        }
        changed
    }
}

/// Describes one task; `Ok(None)` when ECS reports it MISSING.
pub async fn describe(
    aws: &Aws,
    cluster: &str,
    task_arn: &str,
) -> Result<
    Option<Task>,
    aws_sdk_ecs::error::SdkError<aws_sdk_ecs::operation::describe_tasks::DescribeTasksError>,
> {
    let out = aws
        .ecs
        .describe_tasks()
        .cluster(cluster)
        .tasks(task_arn)
        .send()
        .await?;
    Ok(out.tasks().first().cloned())
}

/// Waits for the task to stop, streaming its logs into the job log.
pub async fn wait(
    aws: &Aws,
    cluster: &str,
    task_arn: &str,
    logs: &mut TaskLogs,
    log: &JobLog,
    cancel: &CancellationToken,
) -> Result<Waited, FargateError> {
    let mut progress = Progress {
        log,
        last_status: None,
        phase: 0,
        open: None,
    };
    progress.open(0);
    let mut describe_every = FIRST_DESCRIBE;
    let mut next_describe = Instant::now();
    let mut logs_every = LOGS_ACTIVE;
    let mut next_logs = Instant::now() + LOGS_ACTIVE;
    let mut failures = 0u32;

    let stopped = loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => {
                progress.close();
                return Ok(Waited::Cancelled);
            }
            () = sleep_until(next_describe.min(next_logs)) => {}
        }
        let now = Instant::now();
        if now >= next_logs {
            match logs.poll(&aws.logs, log).await {
                Ok(0) => logs_every = (logs_every * 2).min(LOGS_IDLE_MAX),
                Ok(_) => logs_every = LOGS_ACTIVE,
                // Nothing advanced; the next poll reads the same events again.
                Err(e) if e.is_transient() => logs_every = LOGS_IDLE_MAX,
                Err(e) => {
                    log.warn(&format!("cannot read the task's logs: {e}"));
                    logs_every = LOGS_IDLE_MAX * 3;
                }
            }
            next_logs = Instant::now() + logs_every;
        }
        if now >= next_describe {
            match describe(aws, cluster, task_arn).await {
                Ok(Some(task)) => {
                    failures = 0;
                    logs.observe(&task);
                    let changed = progress.update(&task);
                    describe_every = if changed {
                        FIRST_DESCRIBE
                    } else {
                        (describe_every * 3 / 2).min(MAX_DESCRIBE)
                    };
                    if changed {
                        // A container may just have started: read its stream soon.
                        next_logs = next_logs.min(Instant::now() + LOGS_ACTIVE);
                        logs_every = LOGS_ACTIVE;
                    }
                    if task.last_status() == Some("STOPPED") {
                        break task;
                    }
                }
                Ok(None) => return Err(FargateError::Missing(task_arn.to_owned())),
                Err(e) if errors::is_transient(&e) && failures < MAX_DESCRIBE_FAILURES => {
                    failures += 1;
                    describe_every = MAX_DESCRIBE;
                }
                Err(e) => {
                    return Err(FargateError::Describe {
                        task: task_arn.to_owned(),
                        message: errors::describe(&e),
                    });
                }
            }
            next_describe = Instant::now() + describe_every;
        }
    };
    // CloudWatch lags the task: read every stream that ran to its end.
    logs.drain(&aws.logs, log, cancel).await;
    progress.close();
    let code = stopped
        .stop_code()
        .map(|c| c.as_str())
        .unwrap_or("no stop code");
    let reason = stopped.stopped_reason().unwrap_or("no reason given");
    log.notice(&format!("Task STOPPED: {code} ({reason})"));
    Ok(Waited::Stopped(Box::new(stopped)))
}

/// After cancellation: StopTask with `reason`, then up to `grace` for STOPPED, still printing
/// the job's last lines (the bootstrap says when it forwards SIGTERM). Returns the last
/// description seen.
///
/// The token is already cancelled here, so this wait is bounded by `grace` instead; a second
/// signal exits the process at once and `cleanup` stops what is left.
pub async fn stop(
    aws: &Aws,
    cluster: &str,
    task_arn: &str,
    reason: &str,
    grace: Duration,
    logs: &mut TaskLogs,
    log: &JobLog,
) -> Option<Task> {
    match aws
        .ecs
        .stop_task()
        .cluster(cluster)
        .task(task_arn)
        .reason(reason)
        .send()
        .await
    {
        Ok(_) => log.notice(&format!(
            "Stopping ECS task {}: {reason}",
            task_id(task_arn)
        )),
        Err(e) => log.warn(&format!(
            "StopTask {}: {}",
            task_id(task_arn),
            errors::describe(&e)
        )),
    }
    let deadline = Instant::now() + grace;
    let mut last = None;
    loop {
        let mut stopped = false;
        if let Ok(Some(task)) = describe(aws, cluster, task_arn).await {
            logs.observe(&task);
            stopped = task.last_status() == Some("STOPPED");
            last = Some(task);
        }
        // Best effort, and once more after STOPPED for the job's last words (the bootstrap
        // says when it passes SIGTERM on): the stop is what matters, the lines are a courtesy.
        let _ = tokio::time::timeout(Duration::from_secs(5), logs.poll(&aws.logs, log)).await;
        if stopped {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1).min(deadline - now)).await;
    }
    last
}

#[cfg(test)]
mod tests {
    use aws_sdk_ecs::types::Container;

    use super::*;

    fn task(status: &str, containers: &[(&str, &str, Option<i32>)]) -> Task {
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
        let mut logs = TaskLogs::new("/g", "arn:aws:ecs:r:1:task/ci/t1");
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
        let mut logs = TaskLogs::new("/g", "arn:aws:ecs:r:1:task/ci/t1");
        logs.observe(&task(
            "STOPPED",
            &[("fetch", "STOPPED", Some(1)), ("job", "STOPPED", None)],
        ));
        assert!(logs.containers[0].active() && !logs.containers[1].active());
    }

    #[test]
    fn sections_follow_the_furthest_started_container_and_never_go_back() {
        let log = JobLog::new();
        let mut p = Progress {
            log: &log,
            last_status: None,
            phase: 0,
            open: None,
        };
        assert!(p.update(&task("PENDING", &[("fetch", "PENDING", None)])));
        assert_eq!(p.phase, 0);
        assert!(p.update(&task(
            "RUNNING",
            &[("fetch", "STOPPED", Some(0)), ("job", "RUNNING", None)]
        )));
        assert_eq!(
            p.open,
            Some("job"),
            "fetch was skipped over between two describes"
        );
        assert!(
            !p.update(&task(
                "RUNNING",
                &[("fetch", "STOPPED", Some(0)), ("job", "RUNNING", None)]
            )),
            "no change"
        );
        assert!(p.update(&task(
            "RUNNING",
            &[("job", "STOPPED", Some(0)), ("push", "RUNNING", None)]
        )));
        assert_eq!(p.open, Some("uploading"));
        p.close();
        assert_eq!(p.open, None);
    }
}
