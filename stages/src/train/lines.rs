//! The training job's log lines: every instance's CloudWatch stream (`<job>/algo-N-<epoch>` in
//! `/aws/sagemaker/TrainingJobs`), merged by timestamp, prefixed `[algo-N]` when there are
//! several instances.

use aws_sdk_sagemaker::operation::describe_training_job::DescribeTrainingJobOutput;
use tokio_util::sync::CancellationToken;

use crate::logs::feed::LineSource;
use crate::logs::{LogError, LogLine, LogTailer, PageFollow, StreamNaming, format_line};

/// CloudWatch group SageMaker writes training logs to.
pub const LOG_GROUP: &str = "/aws/sagemaker/TrainingJobs";

/// Drain passes after the job ended (CloudWatch lags the status).
const DRAIN_PASSES: u32 = 6;

/// The log source of one training job.
#[derive(Debug)]
pub struct TrainLines {
    client: aws_sdk_cloudwatchlogs::Client,
    tailer: LogTailer,
    prefix: bool,
}

impl TrainLines {
    /// The streams of job `name` running on `hosts` instances, read with `client`.
    pub fn new(client: aws_sdk_cloudwatchlogs::Client, name: &str, hosts: u32) -> TrainLines {
        TrainLines {
            client,
            // One GetLogEvents per stream and poll unless a page came back full: the catch-up
            // confirmation call would double the API budget for nothing (the next poll resumes).
            tailer: LogTailer::discover(
                LOG_GROUP,
                format!("{name}/"),
                StreamNaming::SageMakerTraining,
                Some(hosts as usize),
            )
            .with_page_follow(PageFollow::WhileBacklogged),
            prefix: hosts > 1,
        }
    }

    fn render(&self, lines: &[LogLine]) -> Vec<String> {
        lines.iter().map(|l| format_line(l, self.prefix)).collect()
    }
}

impl LineSource for TrainLines {
    type Status = DescribeTrainingJobOutput;

    fn observe(&mut self, _status: &DescribeTrainingJobOutput) {}

    async fn poll(&mut self) -> Result<Vec<String>, LogError> {
        let lines = self.tailer.poll(&self.client).await?;
        Ok(self.render(&lines))
    }

    async fn drain(&mut self, cancel: &CancellationToken) -> (Vec<String>, Option<String>) {
        match self.tailer.drain(&self.client, DRAIN_PASSES, cancel).await {
            Ok(lines) => (self.render(&lines), None),
            Err(e) => {
                let pending = self.tailer.take_pending();
                (
                    self.render(&pending),
                    Some(format!("some training log lines may be missing: {e}")),
                )
            }
        }
    }
}
