//! The `deploy` action: a model served by a SageMaker endpoint through a guarded rollout, a
//! smoke test and rollback.

use crate::ctx::StageCtx;
use crate::failure::{Classify, FailureKind};
use crate::outputs::Outputs;
use crate::settings::DeploySettings;

/// Why a deploy stage failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// This build does not deploy yet (settings resolution refuses the action first).
    #[error("action \"deploy\" is not available in this version of sagemaker-executor")]
    NotAvailable,
}

impl Classify for DeployError {
    fn failure_kind(&self) -> FailureKind {
        match self {
            DeployError::NotAvailable => FailureKind::Build,
        }
    }

    fn script_exit_code(&self) -> Option<i32> {
        match self {
            DeployError::NotAvailable => None,
        }
    }
}

/// Runs the stage as a deployment.
///
/// # Errors
/// See [`DeployError`].
pub async fn run(_ctx: &StageCtx<'_>, _d: &DeploySettings) -> Result<Outputs, DeployError> {
    Err(DeployError::NotAvailable)
}
