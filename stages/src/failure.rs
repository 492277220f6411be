//! The two ways a job can fail, as GitLab distinguishes them.
//!
//! Every error enum in this crate maps each of its variants to one of these with an exhaustive
//! `match` (no catch-all arm), so adding a variant forces a decision about who is at fault.

/// Who is at fault for a failure, which decides the exit code the runner sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The job's own doing: its script failed, the remote job failed because of the job, a policy
    /// rejected it, or its input was bad. GitLab shows `script_failure`.
    Build,
    /// AWS, credentials, the runner host or the executor itself failed. GitLab shows
    /// `runner_system_failure`, which `retry: when: runner_system_failure` can retry.
    System,
}

/// Implemented by every layer's error so the executor can classify without knowing the variants.
pub trait Classify {
    /// Who is at fault.
    fn failure_kind(&self) -> FailureKind;

    /// The exit status the job's script really had, when the failure is a script's non-zero exit.
    /// No default: every error decides, variant by variant.
    fn script_exit_code(&self) -> Option<i32>;
}
