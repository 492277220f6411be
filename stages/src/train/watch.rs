//! What following a training job shows: one GitLab section per secondary status (provisioning,
//! downloading, the script, uploading) and a line per transition, judged done at a terminal
//! status. Transitions after the script's phase are shown only once the remote logs are drained
//! (see [`TrainWatch::close`]), so every line the script printed lands inside its section and
//! before the final status.

use aws_sdk_sagemaker::operation::describe_training_job::DescribeTrainingJobOutput;
use aws_sdk_sagemaker::types::TrainingJobStatus;

use crate::aws::errors::AwsCallError;
use crate::joblog::JobLog;
use crate::watch::{Describe, ShowsLines, Watched};

/// Whether a status is final.
pub fn is_terminal(d: &DescribeTrainingJobOutput) -> bool {
    matches!(
        d.training_job_status(),
        Some(TrainingJobStatus::Completed | TrainingJobStatus::Failed | TrainingJobStatus::Stopped)
    )
}

/// The section a secondary status opens.
fn section_for(status: &str) -> Option<(&'static str, &'static str)> {
    match status {
        "Starting" => Some(("provisioning", "Provisioning training instances")),
        "Downloading" => Some(("downloading", "Downloading input data and the workspace")),
        "Training" => Some(("training", "Training (the job's script)")),
        "Uploading" => Some(("uploading", "Uploading the model and the workspace")),
        _ => None,
    }
}

/// Secondary statuses that come after the script ran.
fn after_script(status: &str) -> bool {
    !matches!(
        status,
        "Starting" | "Downloading" | "Training" | "Pending" | "Restarting"
    )
}

/// The status side of following one training job.
#[derive(Debug)]
pub struct TrainWatch {
    client: aws_sdk_sagemaker::Client,
    name: String,
    log: JobLog,
    printed: usize,
    open: Option<&'static str>,
    last_status: Option<TrainingJobStatus>,
}

impl TrainWatch {
    /// Follows the job `name` with `client` (a polling client: no SDK retries).
    pub fn new(client: aws_sdk_sagemaker::Client, name: &str, log: JobLog) -> TrainWatch {
        TrainWatch {
            client,
            name: name.to_owned(),
            log,
            printed: 0,
            open: None,
            last_status: None,
        }
    }

    /// Prints transitions not printed yet, stopping before the first one after the script's
    /// phase unless `all`; returns whether any was printed.
    fn print_transitions(&mut self, d: &DescribeTrainingJobOutput, all: bool) -> bool {
        let transitions = d.secondary_status_transitions();
        let before = self.printed;
        for t in transitions.iter().skip(self.printed) {
            let status = t.status().map(|s| s.as_str()).unwrap_or("Unknown");
            if !all && after_script(status) {
                break;
            }
            self.close_section();
            if let Some((name, header)) = section_for(status) {
                self.log.section_start(name, header, false);
                self.open = Some(name);
            }
            self.log.notice(&format!(
                "{status}: {}",
                t.status_message().unwrap_or_default()
            ));
            self.printed += 1;
        }
        self.printed > before
    }

    fn close_section(&mut self) {
        if let Some(name) = self.open.take() {
            self.log.section_end(name);
        }
    }

    /// After the logs are drained: the remaining transitions, then the open section closes.
    pub fn close(&mut self, last: Option<&DescribeTrainingJobOutput>) {
        if let Some(d) = last {
            self.print_transitions(d, true);
        }
        self.close_section();
    }
}

impl Watched for TrainWatch {
    type Status = DescribeTrainingJobOutput;
    type Done = ();
    type Error = AwsCallError;

    fn describe(&self) -> Describe<DescribeTrainingJobOutput, AwsCallError> {
        let request = self
            .client
            .describe_training_job()
            .training_job_name(&self.name);
        Box::pin(async move {
            request
                .send()
                .await
                .map_err(|e| AwsCallError::new("DescribeTrainingJob", e))
        })
    }

    fn observe(&mut self, d: &DescribeTrainingJobOutput) -> bool {
        let printed = self.print_transitions(d, false);
        let status_changed = d.training_job_status() != self.last_status.as_ref();
        self.last_status = d.training_job_status().cloned();
        printed || status_changed
    }

    fn judge(&self, d: &DescribeTrainingJobOutput) -> Option<()> {
        is_terminal(d).then_some(())
    }

    fn warn(&mut self, text: &str) {
        self.log.warn(text);
    }
}

impl ShowsLines for TrainWatch {
    fn lines_ready(&self) -> bool {
        matches!(self.open, Some("training" | "uploading"))
    }
    fn print_lines(&mut self, lines: &[String]) {
        self.log.lines(lines);
    }
}
