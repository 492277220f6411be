//! The `train` action: the job's image and script run as a SageMaker training job.
//!
//! Flow: stage the workspace in S3, CreateTrainingJob (recorded in the state file before any
//! wait), follow status and logs, then restore the returned workspace, write `sagemaker.env` and
//! the metrics file, and map the ending onto build or system failure. A re-run of the stage
//! attaches to the existing job; cancellation stops it.

mod outcome;
mod submit;
mod wait;

use std::time::Duration;

use aws_sdk_sagemaker::error::SdkError;
use aws_sdk_sagemaker::operation::create_training_job::CreateTrainingJobError;
use aws_sdk_sagemaker::operation::describe_training_job::DescribeTrainingJobOutput;

pub use outcome::{Ending, failure as classify_failure_reason};
pub use wait::LOG_GROUP;

use crate::aws::{Aws, errors};
use crate::failure::{Classify, FailureKind};
use crate::joblog::JobLog;
use crate::outputs;
use crate::remote::{self, StagingError};
use crate::run::StageRun;
use crate::settings::TrainSettings;
use crate::settings::names::{resource_name, split_s3_uri};
use crate::state::{Resource, ResourceKind, StateError};
use crate::workspace::{
    self, ExtractLimits, JobManifest, RemoteMode, StagingLocation, WorkspaceError,
};

/// Why a training stage failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The request could not be built (a bug, or a value the SDK refuses).
    #[error("cannot build the CreateTrainingJob request: {0}")]
    Request(String),
    /// Staging the workspace failed.
    #[error(transparent)]
    Staging(#[from] StagingError),
    /// Restoring the returned workspace failed.
    #[error("workspace: {0}")]
    Workspace(#[from] WorkspaceError),
    /// The state file could not be written.
    #[error(transparent)]
    State(#[from] StateError),
    /// SageMaker refused CreateTrainingJob.
    #[error("CreateTrainingJob: {}", errors::describe(.0))]
    Create(#[source] Box<SdkError<CreateTrainingJobError>>),
    /// DescribeTrainingJob kept failing.
    #[error("cannot follow the training job: {0}")]
    Describe(String),
    /// The stage script exited non-zero inside the training container.
    #[error("the job's script exited with status {0} in the training container")]
    Script(i32),
    /// The container failed on its own.
    #[error("the training container failed: {0}")]
    Algorithm(String),
    /// SageMaker refused the job's input.
    #[error("SageMaker refused the job's input: {0}")]
    Client(String),
    /// No capacity.
    #[error("no capacity for the training job: {0}")]
    Capacity(String),
    /// SageMaker failed.
    #[error("SageMaker failed the training job: {0}")]
    Internal(String),
    /// The runtime limit was reached.
    #[error("the training job reached its max runtime of {} (SAGEMAKER_MAX_RUNTIME)", humantime::format_duration(*.0))]
    MaxRuntime(Duration),
    /// Spot capacity never came within the max wait.
    #[error("the training job reached its max wait of {} for spot capacity (SAGEMAKER_MAX_WAIT)", humantime::format_duration(*.0))]
    MaxWait(Duration),
    /// Someone else stopped the job.
    #[error("the training job {0} was stopped outside this CI job")]
    StoppedOutside(String),
    /// The CI job was cancelled; the training job was stopped.
    #[error("cancelled: training job {name} {state}")]
    Cancelled {
        /// The training job.
        name: String,
        /// What became of it.
        state: String,
    },
    /// A failure reason this executor does not recognise.
    #[error("the training job failed: {0}")]
    Unknown(String),
    /// Writing the outputs into the project dir failed.
    #[error("cannot write the job's outputs: {0}")]
    Outputs(#[source] crate::project_files::ProjectFileError),
}

impl Classify for TrainError {
    fn failure_kind(&self) -> FailureKind {
        match self {
            TrainError::Staging(e) => e.failure_kind(),
            TrainError::Workspace(e) => remote::workspace_failure_kind(e),
            // SageMaker validates the job's own settings (image, role, channels) here.
            TrainError::Create(e) => match errors::code(e) {
                Some("ValidationException") => FailureKind::Build,
                _ => FailureKind::System,
            },
            TrainError::Script(_)
            | TrainError::Algorithm(_)
            | TrainError::Client(_)
            | TrainError::MaxRuntime(_)
            | TrainError::StoppedOutside(_)
            | TrainError::Cancelled { .. } => FailureKind::Build,
            TrainError::Request(_)
            | TrainError::State(_)
            | TrainError::Describe(_)
            | TrainError::Capacity(_)
            | TrainError::Internal(_)
            | TrainError::MaxWait(_)
            | TrainError::Unknown(_) => FailureKind::System,
            TrainError::Outputs(e) if e.is_jobs_fault() => FailureKind::Build,
            TrainError::Outputs(_) => FailureKind::System,
        }
    }

    fn script_exit_code(&self) -> Option<i32> {
        match self {
            TrainError::Script(code) => Some(*code),
            TrainError::Request(_)
            | TrainError::Staging(_)
            | TrainError::Workspace(_)
            | TrainError::State(_)
            | TrainError::Create(_)
            | TrainError::Describe(_)
            | TrainError::Algorithm(_)
            | TrainError::Client(_)
            | TrainError::Capacity(_)
            | TrainError::Internal(_)
            | TrainError::MaxRuntime(_)
            | TrainError::MaxWait(_)
            | TrainError::StoppedOutside(_)
            | TrainError::Cancelled { .. }
            | TrainError::Unknown(_)
            | TrainError::Outputs(_) => None,
        }
    }
}

/// Runs the stage as a training job.
pub async fn run(aws: &Aws, t: &TrainSettings, run: StageRun<'_>) -> Result<(), TrainError> {
    let log = JobLog::new();
    let name = resource_name(run.job.project_id, run.job.id, run.stage);
    let loc = StagingLocation::new(
        &run.cfg.staging.bucket,
        &run.cfg.staging.prefix,
        run.job.project_id,
        run.job.id,
    );

    let existing = match aws
        .sagemaker
        .describe_training_job()
        .training_job_name(&name)
        .send()
        .await
    {
        Ok(d) => Some(d),
        Err(e)
            if errors::code(&e) == Some("ValidationException")
                || errors::code(&e) == Some("ResourceNotFound") =>
        {
            None
        }
        Err(e) => return Err(TrainError::Describe(errors::describe(&e))),
    };
    let resource = Resource {
        kind: ResourceKind::TrainingJob,
        id: name.clone(),
        scope: None,
        stage: run.stage.to_owned(),
        finished: false,
    };
    if let Some(d) = &existing {
        log.notice(&format!(
            "Attaching to existing training job {name} ({})",
            d.training_job_status().map(|s| s.as_str()).unwrap_or("?")
        ));
        run.state.record(resource.clone())?;
    } else {
        let manifest = JobManifest {
            project_dir: run.project_dir.to_owned(),
            mode: RemoteMode::SageMaker,
            output_dir: None,
            failure_file: None,
        };
        remote::stage_workspace(aws, &loc, &run, &manifest, &log).await?;
        log.notice(&format!(
            "Creating training job {name} on {} x {}",
            t.instance_count, t.instance_type
        ));
        let arn = submit::create(&aws.sagemaker, &name, t, &loc, &run).await?;
        // Recorded before any wait, so cleanup finds it even after SIGKILL.
        run.state.record(resource)?;
        log.line(&format!("Training job ARN: {arn}"));
    }
    log.line(&format!("Console: {}", console_url(&aws.region, &name)));

    let cadence = wait::Cadence {
        describe_max: run.cfg.train.describe_interval,
        logs: run.cfg.train.log_interval,
    };
    let finished = match wait::wait(aws, &name, t.instance_count, cadence, &log, run.cancel).await?
    {
        wait::Waited::Finished(d) => d,
        wait::Waited::Cancelled => {
            let last = wait::stop(aws, &name, run.cfg.train.stop_grace, &log).await;
            let state = match last.as_ref() {
                Some(s) if s.as_str() == "Stopped" => "was stopped".to_owned(),
                Some(s) => format!("is {} (stop requested)", s.as_str()),
                None => "stop was requested; its status is unknown".to_owned(),
            };
            log.warn(&format!("Job cancelled: training job {name} {state}"));
            if last.as_ref().is_some_and(|s| s.as_str() == "Stopped") {
                run.state.mark_finished(ResourceKind::TrainingJob, &name)?;
            }
            return Err(TrainError::Cancelled { name, state });
        }
    };
    run.state.mark_finished(ResourceKind::TrainingJob, &name)?;
    finish(aws, t, &run, &name, &finished, &log).await
}

/// Restores the workspace, writes outputs, reports the totals and maps the ending.
async fn finish(
    aws: &Aws,
    t: &TrainSettings,
    run: &StageRun<'_>,
    name: &str,
    d: &DescribeTrainingJobOutput,
    log: &JobLog,
) -> Result<(), TrainError> {
    let ending = outcome::ending(d);
    let completed = ending == Ending::Completed;
    let output = format!("{}/{name}/output/output.tar.gz", t.output_path);
    if let Some((bucket, key)) = split_s3_uri(&output) {
        let limits = ExtractLimits {
            max_bytes: run.cfg.staging.max_return_bytes,
            ..ExtractLimits::default()
        };
        let restored = workspace::restore_from_training_output(
            &aws.s3,
            bucket,
            key,
            &remote::workspace_roots(run.project_dir),
            &limits,
            run.cancel,
        )
        .await;
        remote::report_restore(
            restored,
            completed,
            "the training job returned no workspace (SageMaker uploads it only when the container got that far); on-failure artifacts have nothing new",
            log,
        )?;
    }

    let metrics: Vec<(String, f64)> = d
        .final_metric_data_list()
        .iter()
        // SageMaker reports f32; going through its shortest text keeps 0.6 from becoming 0.6000000238.
        .filter_map(|m| {
            Some((
                m.metric_name()?.to_owned(),
                m.value()?.to_string().parse::<f64>().ok()?,
            ))
        })
        .collect();
    let mut env = vec![
        ("SAGEMAKER_TRAINING_JOB_NAME".to_owned(), name.to_owned()),
        (
            "SAGEMAKER_TRAINING_JOB_ARN".to_owned(),
            d.training_job_arn().unwrap_or_default().to_owned(),
        ),
        (
            "SAGEMAKER_TRAINING_JOB_STATUS".to_owned(),
            d.training_job_status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
        ),
        ("SAGEMAKER_TRAINING_IMAGE".to_owned(), t.image.clone()),
        (
            "SAGEMAKER_CONSOLE_URL".to_owned(),
            console_url(&aws.region, name),
        ),
    ];
    if let Some(model) = d
        .model_artifacts()
        .and_then(|m| m.s3_model_artifacts())
        .filter(|m| !m.is_empty())
    {
        env.push(("SAGEMAKER_MODEL_DATA".to_owned(), model.to_owned()));
    }
    env.extend(
        metrics
            .iter()
            .map(|(k, v)| (format!("SAGEMAKER_FINAL_METRIC_{k}"), v.to_string())),
    );
    remote::write_dotenv(run.project_dir, &env, log).map_err(TrainError::Outputs)?;
    if !metrics.is_empty() {
        let project =
            crate::project_files::ProjectDir::open(run.project_dir).map_err(TrainError::Outputs)?;
        outputs::write_metrics(&project, &metrics).map_err(TrainError::Outputs)?;
        for (k, v) in &metrics {
            log.line(&format!("  {k} = {v}"));
        }
    }
    report_times(d, log);

    match ending {
        Ending::Completed => {
            log.notice(&format!("Training job {name} completed"));
            Ok(())
        }
        Ending::Script(code) => Err(TrainError::Script(code)),
        Ending::Algorithm(r) => Err(TrainError::Algorithm(r)),
        Ending::Client(r) => Err(TrainError::Client(r)),
        Ending::Capacity(r) => Err(TrainError::Capacity(r)),
        Ending::Internal(r) => Err(TrainError::Internal(r)),
        Ending::MaxRuntime => Err(TrainError::MaxRuntime(t.max_runtime)),
        Ending::MaxWait => Err(TrainError::MaxWait(
            t.spot.as_ref().map(|s| s.max_wait).unwrap_or_default(),
        )),
        Ending::Stopped => Err(TrainError::StoppedOutside(name.to_owned())),
        Ending::Unknown(r) => Err(TrainError::Unknown(r)),
    }
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
    format!("https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/jobs/{name}")
}
