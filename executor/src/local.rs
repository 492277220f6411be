//! Local stages: the runner's own scripts (sources, caches, artifacts, after_script) run with
//! bash on the runner host, streaming straight into the job log, with AWS credentials and the
//! runner's job payload kept out of their environment.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::error::ExecutorError;
use crate::signals;

/// How long a cancelled local script gets to finish after SIGTERM before SIGKILL.
const LOCAL_GRACE: Duration = Duration::from_secs(10);

/// Whether an environment variable must not reach a local stage script: AWS credentials and
/// settings (the executor's own, never the job's), and the runner's plaintext job payload.
pub fn scrubbed(key: &str) -> bool {
    key.starts_with("AWS_")
        || key.starts_with("CUSTOM_ENV_")
        || key.starts_with("ECS_CONTAINER_METADATA")
        || matches!(
            key,
            "JOB_RESPONSE_FILE" | "BUILD_EXIT_CODE_FILE" | "SAGEMAKER_EXECUTOR_CONFIG"
        )
}

/// Runs `script` with bash and returns its exit status (128 + signal when killed).
pub async fn run_script(script: &Path, cancel: &CancellationToken) -> Result<i32, ExecutorError> {
    let mut cmd = Command::new("bash");
    // Its own process group, so a cancel reaches everything the script started and the grace
    // period can end with SIGKILL to all of it; the runner's group signal reaches only us.
    cmd.arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true);
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(scrubbed) {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().map_err(ExecutorError::Spawn)?;
    let group = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .map(Pid::from_raw);
    signals::set_child_group(group.map(Pid::as_raw));
    let status = tokio::select! {
        s = child.wait() => s,
        _ = cancel.cancelled() => {
            if let Some(g) = group {
                let _ = killpg(g, Signal::SIGTERM);
            }
            match tokio::time::timeout(LOCAL_GRACE, child.wait()).await {
                Ok(s) => s,
                Err(_) => {
                    if let Some(g) = group {
                        let _ = killpg(g, Signal::SIGKILL);
                    }
                    child.wait().await
                }
            }
        }
    };
    // Whatever the script left running in its group goes with it: its output pipe is the job log.
    if let Some(g) = group {
        let _ = killpg(g, Signal::SIGKILL);
    }
    signals::set_child_group(None);
    let status = status.map_err(ExecutorError::Spawn)?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::scrubbed;

    #[test]
    fn credentials_and_payload_are_scrubbed() {
        for k in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "CUSTOM_ENV_CI_JOB_TOKEN",
            "JOB_RESPONSE_FILE",
        ] {
            assert!(scrubbed(k), "{k}");
        }
        for k in ["PATH", "HOME", "TMPDIR", "CI_PROJECT_DIR"] {
            assert!(!scrubbed(k), "{k}");
        }
    }
}
