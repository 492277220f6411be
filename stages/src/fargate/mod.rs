//! The `fargate` action: the job's `image:` runs the runner's stage script as an ECS Fargate
//! task, through the same bootstrap as `train` (in `SME_MODE=ecs`).
//!
//! Flow (mirrors `train`): stage the workspace in S3, find or register the task definition
//! ([`taskdef`]), RunTask (recorded in the state file before any wait), follow the task and its
//! logs ([`wait`]), then classify the ending ([`outcome`]), restore the returned workspace, write
//! `sagemaker.env`, and map the ending onto build or system failure. A re-run of the stage
//! attaches to the task it started earlier; cancellation stops the task.
//!
//! Inside the task (see [`taskdef`] for the containers): `fetch` downloads the staged objects
//! into `<builds_root>/.sme/<job-id>/` on the shared volume, `job` runs
//! `/bin/sh bootstrap.sh <that dir>`, which restores the project at its runner-host path, runs
//! the script and packs the workspace into `<that dir>/out/workspace.tar.gz`, and `push` uploads
//! that archive to `<staging prefix>/returned/workspace.tar.gz`. [`helper`] is the helpers' side.

pub mod helper;
pub mod outcome;
pub mod submit;
pub mod taskdef;
pub mod wait;

#[cfg(test)]
mod mock;

use aws_sdk_ecs::error::SdkError;
use aws_sdk_ecs::operation::describe_task_definition::DescribeTaskDefinitionError;
use aws_sdk_ecs::operation::list_tasks::ListTasksError;
use aws_sdk_ecs::operation::register_task_definition::RegisterTaskDefinitionError;
use aws_sdk_ecs::operation::run_task::RunTaskError;
use aws_sdk_ecs::types::Task;
use aws_smithy_types::error::operation::BuildError;

use crate::aws::{Aws, errors};
use crate::config::FargateEnv;
use crate::failure::{Classify, FailureKind};
use crate::joblog::JobLog;
use crate::remote::{self, StagingError};
use crate::run::StageRun;
use crate::settings::FargateSettings;
use crate::settings::names::resource_name;
use crate::state::{Resource, ResourceKind, StateError};
use crate::workspace::{
    self, ExtractLimits, JobManifest, RemoteMode, StagingLocation, WorkspaceError,
};
use outcome::{Ending, TaskEnd};
use submit::{Commands, RETURNED, TaskPaths};
use taskdef::{JOB, PUSH, TaskDefSpec};
use wait::{TaskLogs, Waited, task_id};

/// Why a Fargate stage failed.
#[derive(Debug, thiserror::Error)]
pub enum FargateError {
    /// The runner has no `[fargate]` section (settings resolution normally refuses this first).
    #[error("this runner has no [fargate] section in its executor config")]
    NotConfigured,
    /// No task role: the fetch and push helpers would have no credentials for S3.
    #[error(
        "a fargate job needs a task role: its fetch and push helper containers use it to read and write s3://{bucket}/{prefix} (set fargate.task_role_arn, or FARGATE_TASK_ROLE_ARN within policy.fargate.task_roles)"
    )]
    NoTaskRole {
        /// The staging bucket.
        bucket: String,
        /// The job's staging prefix.
        prefix: String,
    },
    /// A request could not be built (a bug, or a value the SDK refuses).
    #[error("cannot build the {what} request: {source}")]
    Request {
        /// Which request.
        what: &'static str,
        /// The SDK's builder error.
        #[source]
        source: BuildError,
    },
    /// AWS answered without a field it always sends.
    #[error("unexpected answer from ECS: {0}")]
    Malformed(&'static str),
    /// Staging the workspace failed.
    #[error(transparent)]
    Staging(#[from] StagingError),
    /// The state file could not be written.
    #[error(transparent)]
    State(#[from] StateError),
    /// Looking up the task definition failed.
    #[error("DescribeTaskDefinition {family}: {}", errors::describe(source))]
    DescribeTaskDefinition {
        /// The family.
        family: String,
        /// The SDK error.
        #[source]
        source: SdkError<DescribeTaskDefinitionError>,
    },
    /// Registering the task definition failed.
    #[error("RegisterTaskDefinition {family}: {}", errors::describe(source))]
    RegisterTaskDefinition {
        /// The family.
        family: String,
        /// The SDK error.
        #[source]
        source: SdkError<RegisterTaskDefinitionError>,
    },
    /// Looking for the task of an earlier attempt failed.
    #[error("ListTasks (looking for this stage's task): {}", errors::describe(.0))]
    ListTasks(#[source] SdkError<ListTasksError>),
    /// ECS refused RunTask.
    #[error("RunTask: {}", errors::describe(.0))]
    RunTask(#[source] SdkError<RunTaskError>),
    /// RunTask started nothing (capacity, placement).
    #[error("ECS could not start the Fargate task: {0}")]
    NotStarted(String),
    /// DescribeTasks kept failing.
    #[error("cannot follow ECS task {task}: {message}")]
    Describe {
        /// The task ARN.
        task: String,
        /// The last error.
        message: String,
    },
    /// ECS no longer knows the task.
    #[error("ECS task {0} is gone (DescribeTasks reports it MISSING)")]
    Missing(String),
    /// The stage script exited non-zero in the job container.
    #[error("the job's script exited with status {0} in the job container")]
    Script(i32),
    /// The job container was OOM-killed.
    #[error(
        "the job container ran out of memory (OOM) with {memory} MiB (FARGATE_MEMORY; raise it or use less): {reason}"
    )]
    OutOfMemory {
        /// The task's memory in MiB.
        memory: u32,
        /// ECS's reason.
        reason: String,
    },
    /// The job's image could not be pulled.
    #[error("the job's image {image} could not be pulled: {reason}")]
    BadImage {
        /// The image.
        image: String,
        /// ECS's reason.
        reason: String,
    },
    /// The job container could not start.
    #[error("the job container could not start (its image needs /bin/sh, tar and gzip): {0}")]
    JobCannotStart(String),
    /// The fetch helper failed.
    #[error("the fetch helper container could not download the workspace: {0}")]
    FetchFailed(String),
    /// The push helper failed after the script succeeded.
    #[error("the push helper container could not upload the workspace: {0}")]
    PushFailed(String),
    /// Fargate Spot reclaimed the task.
    #[error("the Fargate task was interrupted by AWS: {0}")]
    Interrupted(String),
    /// AWS could not run the task, or stopped it.
    #[error("AWS stopped the Fargate task: {0}")]
    Platform(String),
    /// Someone stopped the task outside this CI job.
    #[error("the ECS task was stopped outside this CI job: {0}")]
    StoppedOutside(String),
    /// An ending this executor does not recognise.
    #[error("the ECS task ended unexpectedly: {0}")]
    Unknown(String),
    /// The CI job was cancelled; the task was stopped.
    #[error("cancelled: ECS task {task} {state}")]
    Cancelled {
        /// The task id.
        task: String,
        /// What became of it.
        state: String,
    },
    /// Restoring the returned workspace failed after a successful run.
    #[error("restoring the returned workspace: {0}")]
    Restore(#[source] WorkspaceError),
    /// Writing the outputs into the project dir failed.
    #[error("cannot write the job's outputs: {0}")]
    Outputs(#[source] crate::project_files::ProjectFileError),
}

impl Classify for FargateError {
    fn failure_kind(&self) -> FailureKind {
        match self {
            FargateError::Staging(e) => e.failure_kind(),
            FargateError::Restore(e) => remote::workspace_failure_kind(e),
            FargateError::Script(_)
            | FargateError::OutOfMemory { .. }
            | FargateError::BadImage { .. }
            | FargateError::JobCannotStart(_)
            | FargateError::StoppedOutside(_)
            | FargateError::Cancelled { .. } => FailureKind::Build,
            FargateError::NotConfigured
            | FargateError::NoTaskRole { .. }
            | FargateError::Request { .. }
            | FargateError::Malformed(_)
            | FargateError::State(_)
            | FargateError::DescribeTaskDefinition { .. }
            | FargateError::RegisterTaskDefinition { .. }
            | FargateError::ListTasks(_)
            | FargateError::RunTask(_)
            | FargateError::NotStarted(_)
            | FargateError::Describe { .. }
            | FargateError::Missing(_)
            | FargateError::FetchFailed(_)
            | FargateError::PushFailed(_)
            | FargateError::Interrupted(_)
            | FargateError::Platform(_)
            | FargateError::Unknown(_) => FailureKind::System,
            FargateError::Outputs(e) if e.is_jobs_fault() => FailureKind::Build,
            FargateError::Outputs(_) => FailureKind::System,
        }
    }

    fn script_exit_code(&self) -> Option<i32> {
        match self {
            FargateError::Script(code) => Some(*code),
            // The container's real status, so `allow_failure: exit_codes: [137]` can match it.
            FargateError::OutOfMemory { .. } => Some(137),
            FargateError::NotConfigured
            | FargateError::NoTaskRole { .. }
            | FargateError::Request { .. }
            | FargateError::Malformed(_)
            | FargateError::Staging(_)
            | FargateError::State(_)
            | FargateError::DescribeTaskDefinition { .. }
            | FargateError::RegisterTaskDefinition { .. }
            | FargateError::ListTasks(_)
            | FargateError::RunTask(_)
            | FargateError::NotStarted(_)
            | FargateError::Describe { .. }
            | FargateError::Missing(_)
            | FargateError::BadImage { .. }
            | FargateError::JobCannotStart(_)
            | FargateError::FetchFailed(_)
            | FargateError::PushFailed(_)
            | FargateError::Interrupted(_)
            | FargateError::Platform(_)
            | FargateError::StoppedOutside(_)
            | FargateError::Unknown(_)
            | FargateError::Cancelled { .. }
            | FargateError::Restore(_)
            | FargateError::Outputs(_) => None,
        }
    }
}

/// Runs the stage as a Fargate task.
pub async fn run(aws: &Aws, f: &FargateSettings, run: StageRun<'_>) -> Result<(), FargateError> {
    let env = run
        .cfg
        .fargate
        .as_ref()
        .ok_or(FargateError::NotConfigured)?;
    let log = JobLog::new();
    let name = resource_name(run.job.project_id, run.job.id, run.stage);
    let loc = StagingLocation::new(
        &run.cfg.staging.bucket,
        &run.cfg.staging.prefix,
        run.job.project_id,
        run.job.id,
    );
    // Checked before anything exists: without a role the helpers fail inside the task, later
    // and less clearly.
    if f.task_role_arn.is_none() {
        return Err(FargateError::NoTaskRole {
            bucket: loc.bucket,
            prefix: loc.prefix,
        });
    }
    let paths = TaskPaths::new(&run.cfg.paths.builds_root, run.job.id);
    let spec = TaskDefSpec::new(f, env, &run.cfg.region, &run.cfg.paths.builds_root);

    let task_arn = match existing_task(aws, env, &name, &run).await? {
        Some(arn) => {
            log.notice(&format!(
                "Attaching to ECS task {} started earlier by this stage",
                task_id(&arn)
            ));
            record(&run, env, &arn)?;
            arn
        }
        None => {
            let manifest = JobManifest {
                project_dir: run.project_dir.to_owned(),
                mode: RemoteMode::Ecs,
                output_dir: Some(paths.output_dir.clone()),
                failure_file: None,
            };
            remote::stage_workspace(aws, &loc, &run, &manifest, &log).await?;
            let td = taskdef::ensure(&aws.ecs, &spec, &log).await?;
            log.notice(&format!(
                "Starting an ECS Fargate task in cluster {} ({} CPU units, {} MiB{}, {}) with image {}",
                env.cluster,
                f.cpu,
                f.memory,
                if f.spot { ", Fargate Spot" } else { "" },
                f.architecture.as_ecs(),
                f.image
            ));
            let commands = Commands::new(
                &loc,
                &paths,
                &run.cfg.region,
                run.cfg.aws.s3_force_path_style,
            );
            let arn = submit::run_task(&aws.ecs, env, f, run.job, &td, &name, &commands).await?;
            // Recorded before any wait, so cleanup finds it even after SIGKILL.
            record(&run, env, &arn)?;
            log.line(&format!("ECS task ARN: {arn}"));
            arn
        }
    };
    log.line(&format!(
        "Console: {}",
        console_url(&aws.region, &env.cluster, &task_arn)
    ));

    let mut logs = TaskLogs::new(&env.log_group, &task_arn);
    let task = match wait::wait(aws, &env.cluster, &task_arn, &mut logs, &log, run.cancel).await? {
        Waited::Stopped(task) => task,
        Waited::Cancelled => {
            let reason = format!("GitLab job {} was cancelled", run.job.url);
            let last = wait::stop(
                aws,
                &env.cluster,
                &task_arn,
                &reason,
                env.stop_grace,
                &mut logs,
                &log,
            )
            .await;
            let status = last
                .as_ref()
                .and_then(|t| t.last_status())
                .map(str::to_owned);
            let state = match status.as_deref() {
                Some("STOPPED") => "was stopped".to_owned(),
                Some(s) => format!(
                    "is {s} after {} (stop requested; cleanup stops it if needed)",
                    humantime::format_duration(env.stop_grace)
                ),
                None => "stop was requested; its status is unknown".to_owned(),
            };
            let task = task_id(&task_arn).to_owned();
            log.warn(&format!("Job cancelled: ECS task {task} {state}"));
            if status.as_deref() == Some("STOPPED") {
                run.state.mark_finished(ResourceKind::EcsTask, &task_arn)?;
            }
            return Err(FargateError::Cancelled { task, state });
        }
    };
    run.state.mark_finished(ResourceKind::EcsTask, &task_arn)?;
    finish(aws, f, env, &run, &loc, &task, &log).await
}

/// The task of an earlier attempt of this stage: from the state file, else by `startedBy`.
async fn existing_task(
    aws: &Aws,
    env: &FargateEnv,
    name: &str,
    run: &StageRun<'_>,
) -> Result<Option<String>, FargateError> {
    let recorded = run
        .state
        .load()?
        .resources
        .into_iter()
        .find(|r| r.kind == ResourceKind::EcsTask && r.stage == run.stage)
        .map(|r| r.id);
    if recorded.is_some() {
        return Ok(recorded);
    }
    submit::find_existing(&aws.ecs, &env.cluster, name).await
}

fn record(run: &StageRun<'_>, env: &FargateEnv, arn: &str) -> Result<(), StateError> {
    run.state.record(Resource {
        kind: ResourceKind::EcsTask,
        id: arn.to_owned(),
        scope: Some(env.cluster.clone()),
        stage: run.stage.to_owned(),
        finished: false,
    })
}

/// Restores the workspace, writes outputs and maps the ending.
async fn finish(
    aws: &Aws,
    f: &FargateSettings,
    env: &FargateEnv,
    run: &StageRun<'_>,
    loc: &StagingLocation,
    task: &Task,
    log: &JobLog,
) -> Result<(), FargateError> {
    let end = TaskEnd::from_task(task);
    let ending = outcome::ending(&end);
    let push = end.container(PUSH);
    let pushed = push.and_then(|c| c.exit_code) == Some(0);
    let job_ran = end.container(JOB).and_then(|c| c.exit_code).is_some();

    if pushed {
        let limits = ExtractLimits {
            max_bytes: run.cfg.staging.max_return_bytes,
            ..ExtractLimits::default()
        };
        let restored = workspace::restore_archive(
            &aws.s3,
            &loc.bucket,
            &loc.key(RETURNED),
            &remote::workspace_roots(run.project_dir),
            &limits,
            run.cancel,
        )
        .await;
        remote::report_restore(
            restored,
            ending == Ending::Completed,
            "the task returned no workspace; on-failure artifacts have nothing new",
            log,
        )
        .map_err(FargateError::Restore)?;
    } else if ending == Ending::Completed {
        let detail = match push {
            Some(c) => match (c.exit_code, &c.reason) {
                (Some(code), _) => {
                    format!("it exited with status {code} (its lines above say why)")
                }
                (None, Some(r)) => r.clone(),
                (None, None) => "it never ran".to_owned(),
            },
            None => "the task has no push container".to_owned(),
        };
        return Err(FargateError::PushFailed(detail));
    } else if job_ran {
        log.warn("the task returned no workspace (the push helper did not upload it); on-failure artifacts have nothing new");
    }

    let task_arn = task.task_arn().unwrap_or_default();
    let env_pairs = vec![
        ("SAGEMAKER_ECS_TASK_ARN".to_owned(), task_arn.to_owned()),
        (
            "SAGEMAKER_ECS_TASK_DEFINITION_ARN".to_owned(),
            task.task_definition_arn().unwrap_or_default().to_owned(),
        ),
        ("SAGEMAKER_ECS_CLUSTER".to_owned(), env.cluster.clone()),
        ("SAGEMAKER_ECS_IMAGE".to_owned(), f.image.clone()),
        (
            "SAGEMAKER_CONSOLE_URL".to_owned(),
            console_url(&aws.region, &env.cluster, task_arn),
        ),
    ];
    remote::write_dotenv(run.project_dir, &env_pairs, log).map_err(FargateError::Outputs)?;

    match ending {
        Ending::Completed => {
            log.notice(&format!("ECS task {} completed", task_id(task_arn)));
            Ok(())
        }
        Ending::Script(code) => Err(FargateError::Script(code)),
        Ending::OutOfMemory(reason) => Err(FargateError::OutOfMemory {
            memory: f.memory,
            reason,
        }),
        Ending::BadImage(reason) => Err(FargateError::BadImage {
            image: f.image.clone(),
            reason,
        }),
        Ending::JobCannotStart(r) => Err(FargateError::JobCannotStart(r)),
        Ending::FetchFailed(r) => Err(FargateError::FetchFailed(r)),
        Ending::Interrupted(r) => Err(FargateError::Interrupted(r)),
        Ending::Platform(r) => Err(FargateError::Platform(r)),
        Ending::StoppedOutside(r) => Err(FargateError::StoppedOutside(r)),
        Ending::Unknown(r) => Err(FargateError::Unknown(r)),
    }
}

/// The ECS console page of a task.
pub fn console_url(region: &str, cluster: &str, task_arn: &str) -> String {
    // The console wants the cluster's name, which is the last segment of an ARN too.
    let cluster = cluster.rsplit('/').next().unwrap_or(cluster);
    format!(
        "https://{region}.console.aws.amazon.com/ecs/v2/clusters/{cluster}/tasks/{}/configuration?region={region}",
        task_id(task_arn)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_puts_the_jobs_own_failures_on_the_build_side() {
        let build = [
            FargateError::Script(3),
            FargateError::OutOfMemory {
                memory: 512,
                reason: "OutOfMemoryError".into(),
            },
            FargateError::BadImage {
                image: "x".into(),
                reason: "CannotPullContainerError".into(),
            },
            FargateError::StoppedOutside("x".into()),
        ];
        for e in &build {
            assert_eq!(e.failure_kind(), FailureKind::Build, "{e}");
        }
        let system = [
            FargateError::NotStarted("Capacity is unavailable".into()),
            FargateError::Interrupted("spot".into()),
            FargateError::Platform("ResourceInitializationError".into()),
            FargateError::FetchFailed("x".into()),
            FargateError::PushFailed("x".into()),
        ];
        for e in &system {
            assert_eq!(e.failure_kind(), FailureKind::System, "{e}");
        }
        assert_eq!(FargateError::Script(3).script_exit_code(), Some(3));
        let oom = FargateError::OutOfMemory {
            memory: 512,
            reason: "OutOfMemoryError: killed".into(),
        };
        assert_eq!(oom.script_exit_code(), Some(137));
        let text = oom.to_string();
        assert!(text.contains("OOM") && text.contains("512 MiB"), "{text}");
    }

    #[test]
    fn console_url_names_cluster_and_task() {
        assert_eq!(
            console_url(
                "eu-west-1",
                "arn:aws:ecs:eu-west-1:1:cluster/ci",
                "arn:aws:ecs:eu-west-1:1:task/ci/abc"
            ),
            "https://eu-west-1.console.aws.amazon.com/ecs/v2/clusters/ci/tasks/abc/configuration?region=eu-west-1"
        );
    }
}
