//! The `train` action: the job's image and script run as a SageMaker training job, through the
//! remote engine ([`crate::remote`]): stage the workspace, CreateTrainingJob under the stage's
//! deterministic name (recorded before the call), follow status and logs, then restore the
//! returned workspace and hand on the job's name, model data and final metrics. A re-run of the
//! stage attaches to the existing job; cancellation stops it.

mod lines;
mod outcome;
mod submit;
mod watch;

use std::time::Duration;

use aws_sdk_sagemaker::operation::describe_training_job::DescribeTrainingJobOutput;
use aws_sdk_sagemaker::types::TrainingJobStatus;

pub use lines::LOG_GROUP;
pub use outcome::{Ending, Limits, failure as classify_failure_reason};

use crate::aws::errors::{AwsCallError, code};
use crate::ctx::StageCtx;
use crate::failure::{Classify, FailureKind};
use crate::joblog::JobLog;
use crate::logs::StreamNaming;
use crate::logs::feed::FeedCadence;
use crate::logs::live::{LiveLines, Streams};
use crate::names::split_s3_uri;
use crate::outputs::Outputs;
use crate::remote::{self, Attached, Backend, RemoteError};
use crate::settings::TrainSettings;
use crate::state::{Resource, ResourceKind};
use crate::watch::Cadence;
use crate::watch::events::ResourceKey;
use crate::workspace::{self, ExtractLimits, JobManifest, RemoteMode};
use lines::TrainLines;
use watch::TrainWatch;

/// First interval between DescribeTrainingJob calls; they slow down to `train.describe_interval`.
const FIRST_DESCRIBE: Duration = Duration::from_secs(2);

/// What a training stage can fail with.
pub type Error = RemoteError<TrainError, Ending>;

/// The training action's own failures (its calls); endings are [`Ending`]s.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// SageMaker refused CreateTrainingJob.
    #[error("{0}")]
    Create(#[source] AwsCallError),
    /// Looking for the job of an earlier attempt failed.
    #[error("{0}")]
    Describe(#[source] AwsCallError),
    /// The state file could not be written.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

impl Classify for TrainError {
    fn failure_kind(&self) -> FailureKind {
        match self {
            // SageMaker validates the job's own settings (image, role, channels) here.
            TrainError::Create(e) if e.code() == Some("ValidationException") => FailureKind::Build,
            TrainError::Create(_) | TrainError::Describe(_) | TrainError::State(_) => {
                FailureKind::System
            }
        }
    }

    fn script_exit_code(&self) -> Option<i32> {
        match self {
            TrainError::Create(_) | TrainError::Describe(_) | TrainError::State(_) => None,
        }
    }
}

/// A training job for one stage.
struct Training<'s> {
    settings: &'s TrainSettings,
    name: String,
    /// Whether this attempt attached to a job an earlier attempt started: its returned
    /// workspace may already be gone (cleanup deletes it), which is then no error.
    attached: std::cell::Cell<bool>,
}

/// Runs the stage as a training job.
///
/// # Errors
/// See [`Error`].
pub async fn run(ctx: &StageCtx<'_>, t: &TrainSettings) -> Result<Outputs, Error> {
    let backend = Training {
        settings: t,
        name: ctx.resource_name(),
        attached: std::cell::Cell::new(false),
    };
    remote::run(ctx, &backend, "training job").await
}

impl Training<'_> {
    /// The job's S3OutputPath: the configured output path followed by the run's
    /// `<project>/<job>/<random>` (the staging location's), so the model and the returned
    /// workspace are as hard to find as the staged objects: a job task role that may read the
    /// staging prefix cannot guess another job's output. A location without a random component
    /// (recorded by an older executor) keeps the configured path.
    fn output_path(&self, loc: &workspace::StagingLocation) -> String {
        let base = self.settings.output_path.trim_end_matches('/');
        match loc.run_path() {
            Some(run) => format!("{base}/{run}"),
            None => base.to_owned(),
        }
    }

    /// Where SageMaker puts the returned workspace of a job whose S3OutputPath is `output_path`.
    fn output_archive(&self, output_path: &str) -> String {
        format!(
            "{}/{}/output/output.tar.gz",
            output_path.trim_end_matches('/'),
            self.name
        )
    }

    fn limits(&self) -> Limits {
        Limits {
            max_runtime: self.settings.max_runtime,
            max_wait: self
                .settings
                .spot
                .as_ref()
                .map(|s| s.max_wait)
                .unwrap_or_default(),
        }
    }
}

impl Backend for Training<'_> {
    type Status = DescribeTrainingJobOutput;
    type Ending = Ending;
    type Error = TrainError;
    type Watch = TrainWatch;
    type Lines = LiveLines<TrainLines>;

    fn short_id<'i>(&self, id: &'i str) -> &'i str {
        id
    }

    fn may_have_started(&self, e: &TrainError) -> bool {
        match e {
            TrainError::Create(call) => call.retry().is_retryable(),
            // In submit, the look-up after `ResourceInUse`: the job exists.
            TrainError::Describe(_) => true,
            TrainError::State(_) => false,
        }
    }

    fn resource(&self, ctx: &StageCtx<'_>) -> Resource {
        Resource::intended(ResourceKind::TrainingJob, &self.name, None, ctx.stage)
    }

    async fn existing(&self, ctx: &StageCtx<'_>) -> Result<Option<Attached>, TrainError> {
        match ctx
            .aws
            .sagemaker
            .describe_training_job()
            .training_job_name(&self.name)
            .send()
            .await
        {
            Ok(d) => Ok(Some({
                self.attached.set(true);
                Attached {
                    id: self.name.clone(),
                    message: format!(
                        "Attaching to existing training job {} ({})",
                        self.name,
                        d.training_job_status().map(|s| s.as_str()).unwrap_or("?")
                    ),
                }
            })),
            Err(e) if matches!(code(&e), Some("ValidationException" | "ResourceNotFound")) => {
                Ok(None)
            }
            Err(e) => Err(TrainError::Describe(AwsCallError::new(
                "DescribeTrainingJob",
                e,
            ))),
        }
    }

    fn manifest(&self, ctx: &StageCtx<'_>) -> JobManifest {
        JobManifest {
            project_dir: ctx.project_dir.to_owned(),
            mode: RemoteMode::SageMaker,
            output_dir: None,
            failure_file: None,
        }
    }

    async fn submit(
        &self,
        ctx: &StageCtx<'_>,
        loc: &workspace::StagingLocation,
    ) -> Result<String, TrainError> {
        let t = self.settings;
        // SageMaker returns the workspace (file variables included) in output.tar.gz next to
        // the model; it must not outlive the job, whatever becomes of the executor.
        let output_path = self.output_path(loc);
        if let Some((bucket, key)) = split_s3_uri(&self.output_archive(&output_path)) {
            ctx.state
                .record_object(crate::state::JobObject {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                })
                .map_err(TrainError::State)?;
        }
        ctx.log.notice(&format!(
            "Creating training job {} on {} x {}",
            self.name, t.instance_count, t.instance_type
        ));
        let arn = submit::create(ctx, &self.name, t, loc, &output_path).await?;
        ctx.log.line(&format!("Training job ARN: {arn}"));
        ctx.log.line(&format!(
            "Console: {}",
            console_url(&ctx.aws.region, &self.name)
        ));
        Ok(self.name.clone())
    }

    fn watch(&self, ctx: &StageCtx<'_>, id: &str) -> (TrainWatch, Cadence) {
        (
            TrainWatch::new(ctx.aws.polling.sagemaker.clone(), id, ctx.log.clone()),
            Cadence::new(FIRST_DESCRIBE, ctx.cfg.train.describe_interval),
        )
    }

    fn lines(&self, ctx: &StageCtx<'_>, id: &str) -> (LiveLines<TrainLines>, FeedCadence) {
        let every = ctx.cfg.train.log_interval;
        let hosts = self.settings.instance_count;
        let polled = TrainLines::new(ctx.aws.logs.clone(), id, hosts);
        // Polling's pace, also Live Tail's after it falls back to polling.
        let cadence = FeedCadence {
            active: every,
            idle: every * 3,
        };
        if !ctx.cfg.watch.live_tail {
            return (LiveLines::polling(polled), cadence);
        }
        let streams = Streams::Prefix(format!("{id}/"));
        let session = crate::watch::host::session(
            ctx.host_watcher.clone(),
            ctx.aws.logs.clone(),
            LOG_GROUP.to_owned(),
            streams.clone(),
        );
        let live = LiveLines::live(
            polled,
            ctx.aws.logs.clone(),
            LOG_GROUP,
            streams,
            StreamNaming::SageMakerTraining,
            Box::new(move |_| hosts > 1),
            session,
        );
        (live, cadence)
    }

    fn event_key(&self, id: &str) -> ResourceKey {
        ResourceKey::TrainingJob(id.to_owned())
    }

    fn close(&self, watch: &mut TrainWatch, last: Option<&DescribeTrainingJobOutput>) {
        watch.close(last);
    }

    fn is_terminal(&self, status: &DescribeTrainingJobOutput) -> bool {
        watch::is_terminal(status)
    }

    fn state_after_stop(
        &self,
        status: Option<&DescribeTrainingJobOutput>,
        _grace: Duration,
    ) -> String {
        match status.and_then(|d| d.training_job_status()) {
            Some(TrainingJobStatus::Stopped) => "was stopped".to_owned(),
            Some(s) => format!("is {} (stop requested)", s.as_str()),
            None => "stop was requested; its status is unknown".to_owned(),
        }
    }

    fn stop_grace(&self, ctx: &StageCtx<'_>) -> Duration {
        ctx.cfg.train.stop_grace
    }

    fn stop_reason(&self, ctx: &StageCtx<'_>) -> String {
        format!("GitLab job {} was cancelled", ctx.job.url)
    }

    fn ending(&self, status: &DescribeTrainingJobOutput) -> Result<(), Ending> {
        outcome::ending(status, self.limits())
    }

    async fn collect(
        &self,
        ctx: &StageCtx<'_>,
        d: &DescribeTrainingJobOutput,
        completed: bool,
    ) -> Result<Outputs, Error> {
        // The job's own record of its output path: an attached job may predate this run.
        let output_path = d
            .output_data_config()
            .and_then(|o| o.s3_output_path())
            .filter(|p| !p.is_empty())
            .unwrap_or(&self.settings.output_path);
        let output = self.output_archive(output_path);
        if let Some((bucket, key)) = split_s3_uri(&output) {
            let limits = ExtractLimits {
                max_bytes: ctx.cfg.staging.max_return_bytes,
                ..ExtractLimits::default()
            };
            let restored = workspace::restore_from_training_output(
                &ctx.aws.s3,
                bucket,
                key,
                &remote::workspace_roots(ctx.project_dir),
                &limits,
                ctx.cancel,
            )
            .await;
            let missing = if self.attached.get() {
                "the returned workspace is gone: this job's cleanup deletes it (it holds the file variables); nothing new to restore"
            } else {
                "the training job returned no workspace (SageMaker uploads it only when the container got that far); on-failure artifacts have nothing new"
            };
            remote::report_restore(
                restored,
                completed && !self.attached.get(),
                missing,
                &ctx.log,
            )
            .map_err(RemoteError::Restore)?;
        }
        let outputs = outputs(&self.name, self.settings, d, &ctx.aws.region);
        for (k, v) in &outputs.metrics {
            ctx.log.line(&format!("  {k} = {v}"));
        }
        report_times(d, &ctx.log);
        if completed {
            ctx.log
                .notice(&format!("Training job {} completed", self.name));
        }
        Ok(outputs)
    }
}

/// What a finished training job hands on: its name, ARN, status, image, console link, model
/// data and final metrics.
fn outputs(name: &str, t: &TrainSettings, d: &DescribeTrainingJobOutput, region: &str) -> Outputs {
    let mut out = Outputs::default();
    out.set("SAGEMAKER_TRAINING_JOB_NAME", name);
    out.set(
        "SAGEMAKER_TRAINING_JOB_ARN",
        d.training_job_arn().unwrap_or_default(),
    );
    out.set(
        "SAGEMAKER_TRAINING_JOB_STATUS",
        d.training_job_status()
            .map(|s| s.as_str())
            .unwrap_or_default(),
    );
    out.set("SAGEMAKER_TRAINING_IMAGE", t.image.clone());
    out.set("SAGEMAKER_CONSOLE_URL", console_url(region, name));
    if let Some(model) = d
        .model_artifacts()
        .and_then(|m| m.s3_model_artifacts())
        .filter(|m| !m.is_empty())
    {
        out.set("SAGEMAKER_MODEL_DATA", model);
    }
    // SageMaker reports f32; going through its shortest text keeps 0.6 from becoming 0.6000000238.
    out.metrics = d
        .final_metric_data_list()
        .iter()
        .filter_map(|m| {
            Some((
                m.metric_name()?.to_owned(),
                m.value()?.to_string().parse::<f64>().ok()?,
            ))
        })
        .collect();
    let metric_pairs: Vec<(String, String)> = out
        .metrics
        .iter()
        .map(|(k, v)| (format!("SAGEMAKER_FINAL_METRIC_{k}"), v.to_string()))
        .collect();
    out.dotenv.extend(metric_pairs);
    out
}

/// Training and billable seconds, and what spot saved.
fn report_times(d: &DescribeTrainingJobOutput, log: &JobLog) {
    let (Some(training), Some(billable)) =
        (d.training_time_in_seconds(), d.billable_time_in_seconds())
    else {
        return;
    };
    let mut line = format!("Training seconds: {training}, billable seconds: {billable}");
    if d.enable_managed_spot_training() == Some(true) && training > 0 {
        let saved = 100.0 * (1.0 - f64::from(billable) / f64::from(training));
        line.push_str(&format!(", managed spot savings: {saved:.0}%"));
    }
    log.notice(&line);
}

/// The SageMaker console page of a training job.
pub fn console_url(region: &str, name: &str) -> String {
    format!(
        "{}/sagemaker/home?region={region}#/jobs/{name}",
        crate::names::console_origin(region)
    )
}
