//! Following a training job to its end: one loop that polls DescribeTrainingJob with an adaptive
//! interval and tails every instance's CloudWatch stream, printing GitLab sections per secondary
//! status, with every sleep raced against cancellation.
//!
//! Cadence: describe calls start at 2 s and back off to `train.describe_interval` while nothing
//! changes; log reads run every `train.log_interval` while lines flow and up to three times that
//! while idle. BENCHMARKS.md records the resulting calls per minute and log latency.

use std::time::Duration;

use aws_sdk_sagemaker::operation::describe_training_job::DescribeTrainingJobOutput;
use aws_sdk_sagemaker::types::TrainingJobStatus;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::TrainError;
use crate::aws::{Aws, errors};
use crate::joblog::JobLog;
use crate::logs::{LogTailer, PageFollow, StreamNaming, format_line};

/// CloudWatch group SageMaker writes training logs to.
pub const LOG_GROUP: &str = "/aws/sagemaker/TrainingJobs";
/// Consecutive failed describes (after SDK retries) before the wait gives up.
const MAX_DESCRIBE_FAILURES: u32 = 20;
const FIRST_DESCRIBE: Duration = Duration::from_secs(2);

/// Poll cadence.
#[derive(Debug, Clone, Copy)]
pub struct Cadence {
    /// Longest describe interval.
    pub describe_max: Duration,
    /// Log interval while lines flow.
    pub logs: Duration,
}

/// How the wait ended.
#[derive(Debug)]
pub enum Waited {
    /// The job reached a terminal status.
    Finished(Box<DescribeTrainingJobOutput>),
    /// Cancellation arrived first.
    Cancelled,
}

/// Tracks what has been printed: secondary transitions and the open section.
struct Progress<'a> {
    log: &'a JobLog,
    printed: usize,
    open: Option<&'static str>,
}

impl Progress<'_> {
    fn section_for(status: &str) -> Option<(&'static str, &'static str)> {
        match status {
            "Starting" => Some(("provisioning", "Provisioning training instances")),
            "Downloading" => Some(("downloading", "Downloading input data and the workspace")),
            "Training" => Some(("training", "Training (the job's script)")),
            "Uploading" => Some(("uploading", "Uploading the model and the workspace")),
            _ => None,
        }
    }

    /// Whether the training (or a later) section is open.
    fn in_training(&self) -> bool {
        matches!(self.open, Some("training" | "uploading"))
    }

    fn close(&mut self) {
        if let Some(name) = self.open.take() {
            self.log.section_end(name);
        }
    }

    /// Prints transitions not seen yet; returns whether anything changed.
    fn update(&mut self, d: &DescribeTrainingJobOutput) -> bool {
        let transitions = d.secondary_status_transitions();
        let fresh = transitions.len() > self.printed;
        for t in transitions.iter().skip(self.printed) {
            let status = t.status().map(|s| s.as_str()).unwrap_or("Unknown");
            self.close();
            let msg = t.status_message().unwrap_or_default();
            if let Some((name, header)) = Self::section_for(status) {
                self.log.section_start(name, header, false);
                self.open = Some(name);
            }
            self.log.notice(&format!("{status}: {msg}"));
        }
        self.printed = transitions.len();
        fresh
    }
}

fn print_lines(log: &JobLog, lines: &[crate::logs::LogLine], prefix: bool) {
    for l in lines {
        log.line(&format_line(l, prefix));
    }
}

/// Waits for the training job `name` to end, streaming its logs into the job log.
pub async fn wait(
    aws: &Aws,
    name: &str,
    hosts: u32,
    cadence: Cadence,
    log: &JobLog,
    cancel: &CancellationToken,
) -> Result<Waited, TrainError> {
    let mut tailer = LogTailer::discover(
        LOG_GROUP,
        format!("{name}/"),
        StreamNaming::SageMakerTraining,
        Some(hosts as usize),
    )
    // One GetLogEvents per stream and poll unless a page came back full: the catch-up
    // confirmation call would double the API budget for nothing (the next poll resumes).
    .with_page_follow(PageFollow::WhileBacklogged);
    let prefix = hosts > 1;
    let mut progress = Progress {
        log,
        printed: 0,
        open: None,
    };
    let mut describe_every = FIRST_DESCRIBE;
    let mut next_describe = Instant::now();
    let mut logs_every = cadence.logs;
    let mut next_logs = Instant::now() + cadence.logs;
    let mut failures = 0u32;
    let mut last_status: Option<TrainingJobStatus> = None;

    let finished = loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                progress.close();
                return Ok(Waited::Cancelled);
            }
            _ = sleep_until(next_describe.min(next_logs)) => {}
        }
        let now = Instant::now();
        let mut pending = Vec::new();
        if now >= next_logs {
            match tailer.poll(&aws.logs).await {
                Ok(lines) => {
                    logs_every = if lines.is_empty() {
                        (logs_every * 2).min(cadence.logs * 3)
                    } else {
                        cadence.logs
                    };
                    pending = lines;
                }
                // Nothing advanced; the next poll reads the same events again.
                Err(e) if e.is_transient() => logs_every = cadence.logs * 3,
                Err(e) => {
                    log.warn(&format!("cannot read the training logs: {e}"));
                    logs_every = cadence.logs * 6;
                }
            }
            next_logs = Instant::now() + logs_every;
        }
        // Lines from the script while an earlier phase is shown: learn the status first, so they
        // land in the training section rather than before it.
        let early = !pending.is_empty() && !progress.in_training();
        if now >= next_describe || early {
            match aws
                .sagemaker
                .describe_training_job()
                .training_job_name(name)
                .send()
                .await
            {
                Ok(d) => {
                    failures = 0;
                    let changed =
                        progress.update(&d) || d.training_job_status() != last_status.as_ref();
                    last_status = d.training_job_status().cloned();
                    describe_every = if changed {
                        FIRST_DESCRIBE
                    } else {
                        (describe_every * 3 / 2).min(cadence.describe_max)
                    };
                    if matches!(
                        d.training_job_status(),
                        Some(
                            TrainingJobStatus::Completed
                                | TrainingJobStatus::Failed
                                | TrainingJobStatus::Stopped
                        )
                    ) {
                        print_lines(log, &pending, prefix);
                        break d;
                    }
                }
                Err(e) if errors::is_transient(&e) && failures < MAX_DESCRIBE_FAILURES => {
                    failures += 1;
                    describe_every = cadence.describe_max;
                }
                Err(e) => return Err(TrainError::Describe(errors::describe(&e))),
            }
            next_describe = Instant::now() + describe_every;
        }
        print_lines(log, &pending, prefix);
    };
    // CloudWatch lags the status: read until every stream is caught up.
    match tailer.drain(&aws.logs, 6, cancel).await {
        Ok(lines) => {
            for l in &lines {
                log.line(&format_line(l, prefix));
            }
        }
        Err(e) => log.warn(&format!("some training log lines may be missing: {e}")),
    }
    progress.update(&finished);
    progress.close();
    Ok(Waited::Finished(Box::new(finished)))
}

/// After cancellation: asks SageMaker to stop, then waits up to `grace` for Stopped.
/// Returns the final status seen.
pub async fn stop(
    aws: &Aws,
    name: &str,
    grace: Duration,
    log: &JobLog,
) -> Option<TrainingJobStatus> {
    match aws
        .sagemaker
        .stop_training_job()
        .training_job_name(name)
        .send()
        .await
    {
        Ok(_) => log.notice(&format!("Stopping training job {name}")),
        // Already finished (ValidationException) or unreachable: report what Describe says.
        Err(e) => log.warn(&format!("StopTrainingJob {name}: {}", errors::describe(&e))),
    }
    let deadline = Instant::now() + grace;
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok(d) = aws
            .sagemaker
            .describe_training_job()
            .training_job_name(name)
            .send()
            .await
        {
            last = d.training_job_status().cloned();
            if matches!(
                last,
                Some(
                    TrainingJobStatus::Completed
                        | TrainingJobStatus::Failed
                        | TrainingJobStatus::Stopped
                )
            ) {
                break;
            }
        }
        tokio::time::sleep(
            Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
    }
    last
}
