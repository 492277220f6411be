//! Running a job's user-script stage through its action: the core's entry point for `run`.
//! Builds the stage context once (one set of AWS clients), dispatches on the [`Plan`], and
//! writes the action's [`Outputs`] into the project dir once, after a failed run too.

use crate::action::Action;
use crate::aws::Aws;
use crate::ctx::{StageCtx, StageInput};
use crate::failure::{Classify, FailureKind};
use crate::joblog::JobLog;
use crate::outputs::Outputs;
use crate::project_files::{ProjectDir, ProjectFileError};
use crate::settings::Plan;

/// Why a user-script stage did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The action exists but this build does not serve it yet.
    #[error(
        "action \"{0}\" is not available in this version of sagemaker-executor (it runs train, fargate and ecs-deploy)"
    )]
    NotServed(Action),
    /// The training job failed, or could not run.
    #[error(transparent)]
    Train(#[from] crate::train::Error),
    /// The Fargate task failed, or could not run.
    #[error(transparent)]
    Fargate(#[from] crate::fargate::Error),
    /// The ECS deployment failed, or could not be started or followed.
    #[error(transparent)]
    EcsDeploy(#[from] crate::ecs_deploy::EcsDeployError),
    /// The registration failed.
    #[error(transparent)]
    Register(#[from] crate::register::RegisterError),
    /// The deployment failed.
    #[error(transparent)]
    Deploy(#[from] crate::deploy::DeployError),
    /// The teardown failed.
    #[error(transparent)]
    Undeploy(#[from] crate::undeploy::UndeployError),
    /// The outputs could not be written into the project dir.
    #[error("cannot write the job's outputs: {0}")]
    Outputs(#[source] ProjectFileError),
}

impl Classify for RunError {
    fn failure_kind(&self) -> FailureKind {
        match self {
            RunError::NotServed(_) => FailureKind::Build,
            RunError::Train(e) => e.failure_kind(),
            RunError::Fargate(e) => e.failure_kind(),
            RunError::EcsDeploy(e) => e.failure_kind(),
            RunError::Register(e) => e.failure_kind(),
            RunError::Deploy(e) => e.failure_kind(),
            RunError::Undeploy(e) => e.failure_kind(),
            RunError::Outputs(e) if e.is_jobs_fault() => FailureKind::Build,
            RunError::Outputs(_) => FailureKind::System,
        }
    }

    fn script_exit_code(&self) -> Option<i32> {
        match self {
            RunError::NotServed(_) | RunError::Outputs(_) => None,
            RunError::Train(e) => e.script_exit_code(),
            RunError::Fargate(e) => e.script_exit_code(),
            RunError::EcsDeploy(e) => e.script_exit_code(),
            RunError::Register(e) => e.script_exit_code(),
            RunError::Deploy(e) => e.script_exit_code(),
            RunError::Undeploy(e) => e.script_exit_code(),
        }
    }
}

impl RunError {
    /// What a failed run still hands downstream.
    fn outputs(&self) -> Option<&Outputs> {
        match self {
            RunError::Train(e) => e.outputs(),
            RunError::Fargate(e) => e.outputs(),
            RunError::Register(e) => e.outputs(),
            RunError::NotServed(_)
            | RunError::EcsDeploy(_)
            | RunError::Deploy(_)
            | RunError::Undeploy(_)
            | RunError::Outputs(_) => None,
        }
    }
}

/// Runs the stage as the plan says, on stdout's job log.
pub async fn run_user_stage(plan: &Plan, input: StageInput<'_>) -> Result<(), RunError> {
    run_with_log(plan, input, JobLog::new()).await
}

/// Runs the stage as the plan says, rendering the job log through `log`.
pub async fn run_with_log(plan: &Plan, input: StageInput<'_>, log: JobLog) -> Result<(), RunError> {
    if let Plan::NotServed(action) = plan {
        return Err(RunError::NotServed(*action));
    }
    let ctx = StageCtx::new(input, Aws::connect(input.cfg, input.credentials).await, log);
    let result: Result<Outputs, RunError> = match plan {
        Plan::Train(settings) => crate::train::run(&ctx, settings).await.map_err(Into::into),
        Plan::Fargate(settings) => crate::fargate::run(&ctx, settings)
            .await
            .map_err(Into::into),
        Plan::EcsDeploy(settings) => crate::ecs_deploy::run(&ctx, settings)
            .await
            .map_err(Into::into),
        Plan::Register(settings) => crate::register::run(&ctx, settings)
            .await
            .map_err(Into::into),
        Plan::Deploy(settings) => crate::deploy::run(&ctx, settings).await.map_err(Into::into),
        Plan::Undeploy(settings) => crate::undeploy::run(&ctx, settings)
            .await
            .map_err(Into::into),
        Plan::NotServed(action) => Err(RunError::NotServed(*action)),
    };
    let outputs = match &result {
        Ok(outputs) => Some(outputs),
        Err(e) => e.outputs(),
    };
    if let Some(outputs) = outputs {
        let written = ProjectDir::open(ctx.project_dir).and_then(|p| outputs.write(&p, &ctx.log));
        if let Err(e) = written {
            // A failed run's own error says more than a failed write after it.
            if result.is_err() {
                ctx.log
                    .warn(&format!("cannot write the job's outputs: {e}"));
            } else {
                return Err(RunError::Outputs(e));
            }
        }
    }
    result.map(|_| ())
}
