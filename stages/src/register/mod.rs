//! The `register` action: the trained model goes into the SageMaker Model Registry.

use crate::ctx::StageCtx;
use crate::failure::{Classify, FailureKind};
use crate::outputs::Outputs;
use crate::settings::RegisterSettings;

/// Why a register stage failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Placeholder while the action is built.
    #[error("action \"register\" is not available in this version of sagemaker-executor")]
    NotAvailable,
}

impl Classify for RegisterError {
    fn failure_kind(&self) -> FailureKind {
        match self {
            RegisterError::NotAvailable => FailureKind::Build,
        }
    }

    fn script_exit_code(&self) -> Option<i32> {
        match self {
            RegisterError::NotAvailable => None,
        }
    }
}

/// Runs the stage as a registration.
///
/// # Errors
/// See [`RegisterError`].
pub async fn run(_ctx: &StageCtx<'_>, _s: &RegisterSettings) -> Result<Outputs, RegisterError> {
    Err(RegisterError::NotAvailable)
}
