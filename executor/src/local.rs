//! Local stages: the runner's own scripts (sources, caches, artifacts, after_script) run with
//! bash on the runner host, streaming straight into the job log, with AWS credentials and the
//! runner's job payload kept out of their environment.
//!
//! With `[local] user`, they run as that unprivileged user (std's `uid`/`gid`, which also drop
//! the supplementary groups, applied in the child before exec). That user cannot open the
//! runner's temp dir, so the script reaches bash as an in-memory file (`/dev/fd/N`), and the
//! script runs in the job's builds dir with its own `HOME` and `TMPDIR` there.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
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

/// Who a local stage runs as.
#[derive(Debug, Clone)]
pub enum RunAs {
    /// The executor's own user.
    Executor,
    /// An unprivileged user, in the job's builds dir.
    User {
        /// The user.
        user: stages::config::LocalUser,
        /// The job's builds dir (owned by `user`; see [`prepare_builds_dir`]).
        builds_dir: PathBuf,
    },
}

/// Where a local user's `HOME` and `TMPDIR` are, inside the job's builds dir (GitLab namespaces
/// never start with a dot, so no checkout lands there).
pub fn local_tmp(builds_dir: &Path) -> PathBuf {
    builds_dir.join(".local-tmp")
}

/// Creates the job's builds dir, and when local stages run as `user`, hands it (and its
/// `.local-tmp`) to that user, mode 0700. Never follows a link: the dir is created here, in the
/// admin's builds root, and an existing entry that is not a plain directory is refused.
pub fn prepare_builds_dir(
    dir: &Path,
    user: Option<&stages::config::LocalUser>,
) -> Result<(), ExecutorError> {
    use std::os::unix::fs::PermissionsExt;
    let host = |what: String| move |source| ExecutorError::Host { what, source };
    let make = |d: &Path| -> Result<(), ExecutorError> {
        match std::fs::create_dir(d) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let meta = std::fs::symlink_metadata(d)
                    .map_err(host(format!("inspecting {}", d.display())))?;
                if meta.file_type().is_dir() {
                    Ok(())
                } else {
                    Err(ExecutorError::Host {
                        what: format!("{} exists and is not a directory", d.display()),
                        source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
                    })
                }
            }
            Err(e) => Err(host(format!("creating {}", d.display()))(e)),
        }
    };
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(host(format!("creating {}", parent.display())))?;
    }
    make(dir)?;
    let Some(user) = user else {
        return Ok(());
    };
    let tmp = local_tmp(dir);
    make(&tmp)?;
    for d in [dir, tmp.as_path()] {
        std::os::unix::fs::lchown(d, Some(user.uid), Some(user.gid)).map_err(host(format!(
            "handing {} to user {}",
            d.display(),
            user.name
        )))?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
            .map_err(host(format!("setting the mode of {}", d.display())))?;
    }
    Ok(())
}

/// The script's content in an in-memory file another user's bash can open as `/dev/fd/N`.
fn script_in_memory(script: &Path) -> Result<OwnedFd, ExecutorError> {
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let host = |what: &str| {
        let what = format!("{what} {}", script.display());
        move |source| ExecutorError::Host { what, source }
    };
    let content = std::fs::read(script).map_err(host("reading the stage script"))?;
    // Without CLOEXEC: the one child inherits it, and the parent drops it once the child runs.
    let fd = memfd_create("sagemaker-executor-stage", MFdFlags::empty())
        .map_err(|e| host("holding the stage script")(e.into()))?;
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, &content).map_err(host("holding the stage script"))?;
    Ok(OwnedFd::from(file))
}

/// Runs `script` with bash as `run_as` and returns its exit status (128 + signal when killed).
pub async fn run_script(
    script: &Path,
    run_as: &RunAs,
    cancel: &CancellationToken,
) -> Result<i32, ExecutorError> {
    let mut cmd = Command::new("bash");
    let mut held: Option<OwnedFd> = None;
    match run_as {
        RunAs::Executor => {
            cmd.arg(script);
        }
        RunAs::User { user, builds_dir } => {
            let fd = script_in_memory(script)?;
            cmd.arg(format!("/dev/fd/{}", fd.as_raw_fd()));
            held = Some(fd);
            let home = local_tmp(builds_dir);
            cmd.uid(user.uid)
                .gid(user.gid)
                .current_dir(builds_dir)
                .env("HOME", &home)
                .env("TMPDIR", &home)
                .env("USER", &user.name)
                .env("LOGNAME", &user.name);
        }
    }
    // Its own process group, so a cancel reaches everything the script started and the grace
    // period can end with SIGKILL to all of it; the runner's group signal reaches only us.
    cmd.stdin(Stdio::null())
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
    // The child has its copy of the script's descriptor.
    drop(held);
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
