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
//! The staging prefix is the run's unguessable one, and the helpers are told every key they
//! touch, so the task role needs no right to list the bucket (see
//! [`crate::workspace::StagingLocation`]).

pub mod helper;
pub mod lines;
pub mod outcome;
pub mod submit;
pub mod taskdef;
pub mod watch;

use std::fmt;
use std::time::Duration;

use aws_sdk_ecs::error::SdkError;
use aws_sdk_ecs::operation::describe_task_definition::DescribeTaskDefinitionError;
use aws_sdk_ecs::operation::list_tasks::ListTasksError;
use aws_sdk_ecs::operation::register_task_definition::RegisterTaskDefinitionError;
use aws_sdk_ecs::operation::run_task::RunTaskError;
use aws_sdk_ecs::types::Task;
use aws_smithy_types::error::operation::BuildError;

use crate::aws::errors;
use crate::config::FargateEnv;
use crate::ctx::StageCtx;
use crate::failure::{Classify, FailureKind};
use crate::logs::StreamNaming;
use crate::logs::feed::FeedCadence;
use crate::logs::live::{LiveLines, Streams};
use crate::outputs::Outputs;
use crate::remote::{self, Attached, Backend, RemoteError};
use crate::settings::FargateSettings;
use crate::state::{Resource, ResourceKind};
use crate::watch::Cadence;
use crate::watch::events::ResourceKey;
use crate::workspace::{self, ExtractLimits, JobManifest, RemoteMode};
use lines::{TaskLogs, task_id};
use outcome::{Ending, TaskEnd};
use submit::{Commands, RETURNED, TaskPaths};
use taskdef::{FETCH, JOB, PUSH, STREAM_PREFIX, TaskDefSpec};
use watch::TaskWatch;

const FIRST_DESCRIBE: Duration = Duration::from_secs(2);
const MAX_DESCRIBE: Duration = Duration::from_secs(20);
const LOGS_ACTIVE: Duration = Duration::from_secs(2);
const LOGS_IDLE_MAX: Duration = Duration::from_secs(10);

/// What a Fargate stage can fail with.
pub type Error = RemoteError<FargateError, TaskEnded>;

/// The Fargate action's own failures (configuration and its calls); endings are [`TaskEnded`].
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
    /// The push helper failed after the script succeeded.
    #[error("the push helper container could not upload the workspace: {0}")]
    PushFailed(String),
}

impl Classify for FargateError {
    fn failure_kind(&self) -> FailureKind {
        match self {
            FargateError::NotConfigured
            | FargateError::NoTaskRole { .. }
            | FargateError::Request { .. }
            | FargateError::Malformed(_)
            | FargateError::DescribeTaskDefinition { .. }
            | FargateError::RegisterTaskDefinition { .. }
            | FargateError::ListTasks(_)
            | FargateError::RunTask(_)
            | FargateError::NotStarted(_)
            | FargateError::PushFailed(_) => FailureKind::System,
        }
    }

    fn script_exit_code(&self) -> Option<i32> {
        match self {
            FargateError::NotConfigured
            | FargateError::NoTaskRole { .. }
            | FargateError::Request { .. }
            | FargateError::Malformed(_)
            | FargateError::DescribeTaskDefinition { .. }
            | FargateError::RegisterTaskDefinition { .. }
            | FargateError::ListTasks(_)
            | FargateError::RunTask(_)
            | FargateError::NotStarted(_)
            | FargateError::PushFailed(_) => None,
        }
    }
}

/// How a task that did not complete ended, with what its message names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEnded {
    /// The ending.
    pub ending: Ending,
    /// The task's memory in MiB (named when it ran out).
    pub memory: u32,
    /// The job's image (named when it could not be pulled).
    pub image: String,
}

impl fmt::Display for TaskEnded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ending {
            Ending::Completed => f.write_str("the job container completed"),
            Ending::Script(code) => write!(
                f,
                "the job's script exited with status {code} in the job container"
            ),
            Ending::OutOfMemory(reason) => write!(
                f,
                "the job container ran out of memory (OOM) with {} MiB (FARGATE_MEMORY; raise it or use less): {reason}",
                self.memory
            ),
            Ending::BadImage(reason) => write!(
                f,
                "the job's image {} could not be pulled: {reason}",
                self.image
            ),
            Ending::JobCannotStart(r) => write!(
                f,
                "the job container could not start (its image needs /bin/sh, tar and gzip): {r}"
            ),
            Ending::FetchFailed(r) => write!(
                f,
                "the fetch helper container could not download the workspace: {r}"
            ),
            Ending::Interrupted(r) => write!(f, "the Fargate task was interrupted by AWS: {r}"),
            Ending::Platform(r) => write!(f, "AWS stopped the Fargate task: {r}"),
            Ending::StoppedOutside(r) => {
                write!(f, "the ECS task was stopped outside this CI job: {r}")
            }
            Ending::Unknown(r) => write!(f, "the ECS task ended unexpectedly: {r}"),
        }
    }
}

impl Classify for TaskEnded {
    fn failure_kind(&self) -> FailureKind {
        self.ending.failure_kind()
    }

    fn script_exit_code(&self) -> Option<i32> {
        self.ending.script_exit_code()
    }
}

/// A Fargate task for one stage.
struct FargateTask<'s> {
    settings: &'s FargateSettings,
    env: &'s FargateEnv,
    name: String,
    paths: TaskPaths,
}

/// Runs the stage as a Fargate task.
///
/// # Errors
/// See [`Error`].
pub async fn run(ctx: &StageCtx<'_>, f: &FargateSettings) -> Result<Outputs, Error> {
    let env = ctx
        .cfg
        .fargate
        .as_ref()
        .ok_or(RemoteError::Backend(FargateError::NotConfigured))?;
    // Checked before anything exists: without a role the helpers fail inside the task, later
    // and less clearly.
    if f.task_role_arn.is_none() {
        let loc = ctx.job_staging();
        return Err(RemoteError::Backend(FargateError::NoTaskRole {
            bucket: loc.bucket,
            prefix: loc.prefix,
        }));
    }
    let task = FargateTask {
        settings: f,
        env,
        name: ctx.resource_name(),
        paths: TaskPaths::new(&ctx.cfg.paths.builds_root, ctx.job.id),
    };
    remote::run(ctx, &task, "ECS task").await
}

impl Backend for FargateTask<'_> {
    type Status = Task;
    type Ending = TaskEnded;
    type Error = FargateError;
    type Watch = TaskWatch;
    type Lines = LiveLines<TaskLogs>;

    fn short_id<'i>(&self, id: &'i str) -> &'i str {
        task_id(id)
    }

    fn may_have_started(&self, e: &FargateError) -> bool {
        match e {
            FargateError::RunTask(call) => errors::is_transient(call),
            FargateError::NotConfigured
            | FargateError::NoTaskRole { .. }
            | FargateError::Request { .. }
            | FargateError::Malformed(_)
            | FargateError::DescribeTaskDefinition { .. }
            | FargateError::RegisterTaskDefinition { .. }
            | FargateError::ListTasks(_)
            | FargateError::NotStarted(_)
            | FargateError::PushFailed(_) => false,
        }
    }

    fn resource(&self, ctx: &StageCtx<'_>) -> Resource {
        Resource::intended(
            ResourceKind::EcsTask,
            &self.name,
            Some(&self.env.cluster),
            ctx.stage,
        )
    }

    /// The task of an earlier attempt of this stage: from the state file, else by `startedBy`.
    async fn existing(&self, ctx: &StageCtx<'_>) -> Result<Option<Attached>, FargateError> {
        let recorded = ctx.state.load().ok().and_then(|s| {
            s.of_stage(ResourceKind::EcsTask, ctx.stage)
                .and_then(|r| r.id.clone())
        });
        let found = match recorded {
            Some(arn) => Some(arn),
            None => submit::find_existing(&ctx.aws.ecs, &self.env.cluster, &self.name).await?,
        };
        Ok(found.map(|arn| Attached {
            message: format!(
                "Attaching to ECS task {} started earlier by this stage",
                task_id(&arn)
            ),
            id: arn,
        }))
    }

    fn manifest(&self, ctx: &StageCtx<'_>) -> JobManifest {
        JobManifest {
            project_dir: ctx.project_dir.to_owned(),
            mode: RemoteMode::Ecs,
            output_dir: Some(self.paths.output_dir.clone()),
            failure_file: None,
        }
    }

    async fn submit(
        &self,
        ctx: &StageCtx<'_>,
        loc: &workspace::StagingLocation,
    ) -> Result<String, FargateError> {
        let (f, env) = (self.settings, self.env);
        let spec = TaskDefSpec::new(f, env, &ctx.cfg.region, &ctx.cfg.paths.builds_root);
        let td = taskdef::ensure(&ctx.aws.ecs, &spec, &ctx.log).await?;
        ctx.log.notice(&format!(
            "Starting an ECS Fargate task in cluster {} ({} CPU units, {} MiB{}, {}) with image {}",
            env.cluster,
            f.cpu,
            f.memory,
            if f.spot { ", Fargate Spot" } else { "" },
            f.architecture.as_ecs(),
            f.image
        ));
        let commands = Commands::new(
            loc,
            &self.paths,
            &ctx.cfg.region,
            ctx.cfg.aws.s3_force_path_style,
            ctx.cfg.staging.kms_key_id.as_deref(),
        );
        let arn = submit::run_task(
            &ctx.aws.ecs,
            env,
            f,
            &ctx.resource_tags(),
            &td,
            &self.name,
            &commands,
        )
        .await?;
        ctx.log.line(&format!("ECS task ARN: {arn}"));
        ctx.log.line(&format!(
            "Console: {}",
            console_url(&ctx.aws.region, &env.cluster, &arn)
        ));
        Ok(arn)
    }

    fn watch(&self, ctx: &StageCtx<'_>, id: &str) -> (TaskWatch, Cadence) {
        (
            TaskWatch::new(
                ctx.aws.polling.ecs.clone(),
                &self.env.cluster,
                id,
                ctx.log.clone(),
            ),
            Cadence::new(FIRST_DESCRIBE, MAX_DESCRIBE),
        )
    }

    fn lines(&self, ctx: &StageCtx<'_>, id: &str) -> (LiveLines<TaskLogs>, FeedCadence) {
        let polled = TaskLogs::new(ctx.aws.logs.clone(), &self.env.log_group, id);
        // Polling's pace, also Live Tail's after it falls back to polling.
        let cadence = FeedCadence {
            active: LOGS_ACTIVE,
            idle: LOGS_IDLE_MAX,
        };
        if !ctx.cfg.watch.live_tail {
            return (LiveLines::polling(polled), cadence);
        }
        let streams = [FETCH, JOB, PUSH]
            .into_iter()
            .map(|c| format!("{STREAM_PREFIX}/{c}/{}", task_id(id)))
            .collect();
        let streams = Streams::Names(streams);
        let session = crate::watch::host::session(
            ctx.host_watcher.clone(),
            ctx.aws.logs.clone(),
            self.env.log_group.clone(),
            streams.clone(),
        );
        let live = LiveLines::live(
            polled,
            ctx.aws.logs.clone(),
            &self.env.log_group,
            streams,
            StreamNaming::Ecs,
            // As polled: the job's lines as they are, the helpers' with their name.
            Box::new(|source| source != JOB),
            session,
        );
        (live, cadence)
    }

    fn event_key(&self, id: &str) -> ResourceKey {
        ResourceKey::EcsTask(id.to_owned())
    }

    fn close(&self, watch: &mut TaskWatch, last: Option<&Task>) {
        watch.close(last);
    }

    fn is_terminal(&self, task: &Task) -> bool {
        watch::is_terminal(task)
    }

    fn state_after_stop(&self, task: Option<&Task>, grace: Duration) -> String {
        match task.and_then(|t| t.last_status()) {
            Some("STOPPED") => "was stopped".to_owned(),
            Some(s) => format!(
                "is {s} after {} (stop requested; cleanup stops it if needed)",
                humantime::format_duration(grace)
            ),
            None => "stop was requested; its status is unknown".to_owned(),
        }
    }

    fn stop_grace(&self, _ctx: &StageCtx<'_>) -> Duration {
        self.env.stop_grace
    }

    fn stop_reason(&self, ctx: &StageCtx<'_>) -> String {
        format!("GitLab job {} was cancelled", ctx.job.url)
    }

    fn ending(&self, task: &Task) -> Result<(), TaskEnded> {
        match outcome::ending(&TaskEnd::from_task(task)) {
            Ending::Completed => Ok(()),
            ending => Err(TaskEnded {
                ending,
                memory: self.settings.memory,
                image: self.settings.image.clone(),
            }),
        }
    }

    async fn collect(
        &self,
        ctx: &StageCtx<'_>,
        task: &Task,
        completed: bool,
    ) -> Result<Outputs, Error> {
        let end = TaskEnd::from_task(task);
        let push = end.container(PUSH);
        let pushed = push.and_then(|c| c.exit_code) == Some(0);
        let job_ran = end.container(JOB).and_then(|c| c.exit_code).is_some();
        if pushed {
            // The prefix this stage staged under, found again in the state file when this
            // attempt attached to a task an earlier one started.
            let loc = remote::staging::location(ctx)?;
            let limits = ExtractLimits {
                max_bytes: ctx.cfg.staging.max_return_bytes,
                ..ExtractLimits::default()
            };
            let restored = workspace::restore_archive(
                &ctx.aws.s3,
                &loc.bucket,
                &loc.key(RETURNED),
                &remote::workspace_roots(ctx.project_dir),
                &limits,
                ctx.cancel,
            )
            .await;
            remote::report_restore(
                restored,
                completed,
                "the task returned no workspace; on-failure artifacts have nothing new",
                &ctx.log,
            )
            .map_err(RemoteError::Restore)?;
        } else if completed {
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
            return Err(RemoteError::Backend(FargateError::PushFailed(detail)));
        } else if job_ran {
            ctx.log.warn("the task returned no workspace (the push helper did not upload it); on-failure artifacts have nothing new");
        }

        let task_arn = task.task_arn().unwrap_or_default();
        let mut out = Outputs::default();
        out.set("SAGEMAKER_ECS_TASK_ARN", task_arn);
        out.set(
            "SAGEMAKER_ECS_TASK_DEFINITION_ARN",
            task.task_definition_arn().unwrap_or_default(),
        );
        out.set("SAGEMAKER_ECS_CLUSTER", self.env.cluster.clone());
        out.set("SAGEMAKER_ECS_IMAGE", self.settings.image.clone());
        out.set(
            "SAGEMAKER_CONSOLE_URL",
            console_url(&ctx.aws.region, &self.env.cluster, task_arn),
        );
        if completed {
            ctx.log
                .notice(&format!("ECS task {} completed", task_id(task_arn)));
        }
        Ok(out)
    }
}

/// The ECS console page of a task.
pub fn console_url(region: &str, cluster: &str, task_arn: &str) -> String {
    // The console wants the cluster's name, which is the last segment of an ARN too.
    let cluster = cluster.rsplit('/').next().unwrap_or(cluster);
    format!(
        "{}/ecs/v2/clusters/{cluster}/tasks/{}/configuration?region={region}",
        crate::names::console_origin(region),
        task_id(task_arn)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(ending: Ending) -> TaskEnded {
        TaskEnded {
            ending,
            memory: 512,
            image: "x".into(),
        }
    }

    #[test]
    fn classification_puts_the_jobs_own_failures_on_the_build_side() {
        let build = [
            ended(Ending::Script(3)),
            ended(Ending::OutOfMemory("OutOfMemoryError".into())),
            ended(Ending::BadImage("CannotPullContainerError".into())),
            ended(Ending::StoppedOutside("x".into())),
        ];
        for e in &build {
            assert_eq!(e.failure_kind(), FailureKind::Build, "{e}");
        }
        let system = [
            ended(Ending::Interrupted("spot".into())),
            ended(Ending::Platform("ResourceInitializationError".into())),
            ended(Ending::FetchFailed("x".into())),
        ];
        for e in &system {
            assert_eq!(e.failure_kind(), FailureKind::System, "{e}");
        }
        assert_eq!(
            FargateError::PushFailed("x".into()).failure_kind(),
            FailureKind::System
        );
        assert_eq!(
            FargateError::NotStarted("Capacity is unavailable".into()).failure_kind(),
            FailureKind::System
        );
        assert_eq!(ended(Ending::Script(3)).script_exit_code(), Some(3));
        let oom = ended(Ending::OutOfMemory("OutOfMemoryError: killed".into()));
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
