//! The adapter's error type and its exhaustive build/system classifier.

use stages::failure::{Classify, FailureKind};
use stages::policy::Rejection;

use crate::context::ContextError;

/// Everything that can end a protocol stage early.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The executor config is missing or invalid: the admin's to fix.
    #[error(transparent)]
    Config(#[from] stages::config::ConfigError),
    /// The runner's job context is missing or unreadable.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// The job asked for something the policy or the settings rules refuse.
    #[error("the job was refused")]
    Rejected(Vec<Rejection>),
    /// The spec file named by `SAGEMAKER_SPEC` is unusable.
    #[error("SAGEMAKER_SPEC: {0}")]
    Spec(String),
    /// A local stage script exited non-zero.
    #[error("the stage script exited with status {0}")]
    Script(i32),
    /// A local stage script could not be started or waited for.
    #[error("cannot run the stage script with bash: {0}")]
    Spawn(#[source] std::io::Error),
    /// A host file operation failed.
    #[error("{what}: {source}")]
    Host {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The user-script stage failed in the core.
    #[error(transparent)]
    Remote(Box<stages::run::RunError>),
    /// The job state file is unusable.
    #[error(transparent)]
    State(#[from] stages::state::StateError),
    /// STS refused or failed to open the job's role session.
    #[error(transparent)]
    Session(#[from] stages::aws::credentials::SessionError),
}

impl From<stages::run::RunError> for ExecutorError {
    fn from(e: stages::run::RunError) -> Self {
        // Boxed: the remote errors carry SDK errors and would make every Result large.
        ExecutorError::Remote(Box::new(e))
    }
}

impl Classify for ExecutorError {
    fn failure_kind(&self) -> FailureKind {
        match self {
            ExecutorError::Config(_)
            | ExecutorError::Context(_)
            | ExecutorError::Spawn(_)
            | ExecutorError::Host { .. }
            | ExecutorError::State(_) => FailureKind::System,
            ExecutorError::Rejected(_) | ExecutorError::Spec(_) | ExecutorError::Script(_) => {
                FailureKind::Build
            }
            ExecutorError::Remote(e) => e.failure_kind(),
            // A refused token or trust policy is the job's to fix (its ref, its id_tokens); an
            // STS outage is not.
            ExecutorError::Session(e) => match e.retry {
                stages::aws::errors::Retry::Permanent => FailureKind::Build,
                stages::aws::errors::Retry::Throttling | stages::aws::errors::Retry::Transient => {
                    FailureKind::System
                }
            },
        }
    }

    fn script_exit_code(&self) -> Option<i32> {
        match self {
            ExecutorError::Script(code) => Some(*code),
            ExecutorError::Remote(e) => e.script_exit_code(),
            ExecutorError::Config(_)
            | ExecutorError::Context(_)
            | ExecutorError::Rejected(_)
            | ExecutorError::Spec(_)
            | ExecutorError::Spawn(_)
            | ExecutorError::Host { .. }
            | ExecutorError::State(_)
            | ExecutorError::Session(_) => None,
        }
    }
}
