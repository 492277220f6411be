//! The `undeploy` action: an endpoint and what this executor created for it, deleted.

use crate::ctx::StageCtx;
use crate::failure::{Classify, FailureKind};
use crate::outputs::Outputs;
use crate::settings::UndeploySettings;

/// Why an undeploy stage failed.
#[derive(Debug, thiserror::Error)]
pub enum UndeployError {
    /// This build does not undeploy yet (settings resolution refuses the action first).
    #[error("action \"undeploy\" is not available in this version of sagemaker-executor")]
    NotAvailable,
}

impl Classify for UndeployError {
    fn failure_kind(&self) -> FailureKind {
        match self {
            UndeployError::NotAvailable => FailureKind::Build,
        }
    }

    fn script_exit_code(&self) -> Option<i32> {
        match self {
            UndeployError::NotAvailable => None,
        }
    }
}

/// Runs the stage as a teardown.
///
/// # Errors
/// See [`UndeployError`].
pub async fn run(_ctx: &StageCtx<'_>, _u: &UndeploySettings) -> Result<Outputs, UndeployError> {
    Err(UndeployError::NotAvailable)
}
