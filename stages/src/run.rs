//! Running a job's user-script stage through its action: the core's entry point for `run`.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use crate::action::Action;
use crate::config::ExecutorConfig;
use crate::failure::{Classify, FailureKind};
use crate::job::Job;
use crate::settings::Plan;
use crate::state::StateFile;

/// Everything a user-script stage needs from the front end.
#[derive(Debug, Clone, Copy)]
pub struct StageRun<'a> {
    /// The executor config.
    pub cfg: &'a ExecutorConfig,
    /// The job.
    pub job: &'a Job,
    /// The stage name (`build_script`, `step_*`).
    pub stage: &'a str,
    /// The stage script the runner wrote on this host.
    pub script: &'a Path,
    /// The local project dir (`CI_PROJECT_DIR`).
    pub project_dir: &'a Path,
    /// The job's state file.
    pub state: &'a StateFile,
    /// Cancelled on SIGTERM.
    pub cancel: &'a CancellationToken,
}

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
    Train(#[from] crate::train::TrainError),
    /// The Fargate task failed, or could not run.
    #[error(transparent)]
    Fargate(#[from] crate::fargate::FargateError),
    /// The ECS deployment failed, or could not be started or followed.
    #[error(transparent)]
    EcsDeploy(#[from] crate::ecs_deploy::EcsDeployError),
}

impl Classify for RunError {
    fn failure_kind(&self) -> FailureKind {
        match self {
            RunError::NotServed(_) => FailureKind::Build,
            RunError::Train(e) => e.failure_kind(),
            RunError::Fargate(e) => e.failure_kind(),
            RunError::EcsDeploy(e) => e.failure_kind(),
        }
    }

    fn script_exit_code(&self) -> Option<i32> {
        match self {
            RunError::NotServed(_) => None,
            RunError::Train(e) => e.script_exit_code(),
            RunError::Fargate(e) => e.script_exit_code(),
            RunError::EcsDeploy(e) => e.script_exit_code(),
        }
    }
}

/// Runs the stage as the plan says.
pub async fn run_user_stage(plan: &Plan, run: StageRun<'_>) -> Result<(), RunError> {
    match plan {
        Plan::Train(settings) => {
            let aws = crate::aws::Aws::connect(run.cfg).await;
            crate::train::run(&aws, settings, run).await?;
            Ok(())
        }
        Plan::Fargate(settings) => {
            let aws = crate::aws::Aws::connect(run.cfg).await;
            crate::fargate::run(&aws, settings, run).await?;
            Ok(())
        }
        Plan::EcsDeploy(settings) => {
            let aws = crate::aws::Aws::connect(run.cfg).await;
            crate::ecs_deploy::run(&aws, settings, run).await?;
            Ok(())
        }
        Plan::NotServed(_) => Err(RunError::NotServed(plan.action())),
    }
}
