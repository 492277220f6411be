//! Local stages: the runner's own scripts (sources, caches, artifacts, after_script) run with
//! bash on the runner host, streaming straight into the job log, with AWS credentials and the
//! runner's job payload kept out of their environment.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::error::ExecutorError;

/// How long a cancelled local script gets to finish after SIGTERM before SIGKILL.
const LOCAL_GRACE: Duration = Duration::from_secs(10);

/// Whether an environment variable must not reach a local stage script: AWS credentials and
/// settings (the executor's own, never the job's), and the runner's plaintext job payload.
pub fn scrubbed(key: &str) -> bool {
    key.starts_with("AWS_")
        || key.starts_with("CUSTOM_ENV_")
        || key.starts_with("ECS_CONTAINER_METADATA")
        || matches!(key, "JOB_RESPONSE_FILE" | "BUILD_EXIT_CODE_FILE" | "SAGEMAKER_EXECUTOR_CONFIG")
}

/// Runs `script` with bash and returns its exit status (128 + signal when killed).
pub async fn run_script(script: &Path, cancel: &CancellationToken) -> Result<i32, ExecutorError> {
    let mut cmd = Command::new("bash");
    cmd.arg(script).stdin(Stdio::null()).stdout(Stdio::inherit()).stderr(Stdio::inherit()).kill_on_drop(true);
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(scrubbed) {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().map_err(ExecutorError::Spawn)?;
    let status = tokio::select! {
        s = child.wait() => s,
        _ = cancel.cancelled() => {
            // The runner signals our whole process group, so bash usually has SIGTERM already;
            // forward it anyway for a signal sent to this process alone.
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            match tokio::time::timeout(LOCAL_GRACE, child.wait()).await {
                Ok(s) => s,
                Err(_) => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            }
        }
    }
    .map_err(ExecutorError::Spawn)?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::scrubbed;

    #[test]
    fn credentials_and_payload_are_scrubbed() {
        for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "CUSTOM_ENV_CI_JOB_TOKEN", "JOB_RESPONSE_FILE"] {
            assert!(scrubbed(k), "{k}");
        }
        for k in ["PATH", "HOME", "TMPDIR", "CI_PROJECT_DIR"] {
            assert!(!scrubbed(k), "{k}");
        }
    }
}
