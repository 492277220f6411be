//! Local stages: the runner's own scripts (sources, caches, artifacts, after_script) run with
//! bash on the runner host, streaming straight into the job log, with AWS credentials and the
//! runner's job payload kept out of their environment.
//!
//! With `[local] user`, they run as that unprivileged user (std's `uid`/`gid`, which also drop
//! the supplementary groups, applied in the child before exec). That user cannot open the
//! runner's temp dir, so the script reaches bash as an in-memory file (`/dev/fd/N`), and the
//! script runs in the job's builds dir with its own `HOME` and `TMPDIR` there.

use std::io::Read as _;
use std::os::fd::{AsFd as _, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use signal_hook::SigId;
use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};

use crate::error::ExecutorError;

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

/// The first executable `bash` on `path` (`PATH`), as `execvp` would pick it, found with `stat`
/// rather than an `execve` that fails in every directory before it; plain `bash` when none is
/// found (the spawn then says so).
fn bash(path: Option<std::ffi::OsString>) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    path.and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("bash"))
            .find(|p| {
                std::fs::metadata(p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    })
    .unwrap_or_else(|| PathBuf::from("bash"))
}

/// Runs `script` with bash as `run_as` and returns its exit status (128 + signal when killed).
///
/// Synchronous on purpose: a local stage is a short script, and not starting an async runtime
/// is most of what keeps its overhead over plain bash small. Signals are handled as [`wait`]
/// says; a second one exits with `system_failure_code`.
pub fn run_script(
    script: &Path,
    run_as: &RunAs,
    system_failure_code: u8,
) -> Result<i32, ExecutorError> {
    let mut cmd = Command::new(bash(std::env::var_os("PATH")));
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
        .process_group(0);
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(scrubbed) {
            cmd.env_remove(k);
        }
    }
    // Registered before the child exists, so no signal is missed.
    let signals = Signals::register()?;
    let mut child = cmd.spawn().map_err(ExecutorError::Spawn)?;
    // The child has its copy of the script's descriptor.
    drop(held);
    let group = i32::try_from(child.id()).ok().map(Pid::from_raw);
    let kill = |signal| {
        if let Some(g) = group {
            let _ = killpg(g, signal);
        }
    };
    let waited = wait(&mut child, &signals, &kill, system_failure_code);
    // Whatever the script left running in its group goes with it (its output pipe is the job
    // log), and so does the script itself if the wait failed.
    kill(Signal::SIGKILL);
    if waited.is_err() {
        let _ = child.wait();
    }
    drop(signals);
    let status = waited?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// Waits for `child`. The first SIGTERM or SIGINT sends SIGTERM to its group (through `kill`) and
/// SIGKILL after [`LOCAL_GRACE`]; a second one kills the group and exits the process.
fn wait(
    child: &mut std::process::Child,
    signals: &Signals,
    kill: &dyn Fn(Signal),
    system_failure_code: u8,
) -> Result<std::process::ExitStatus, ExecutorError> {
    let mut stopping = false;
    let mut kill_at: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_wait().map_err(ExecutorError::Spawn)? {
            return Ok(status);
        }
        if kill_at.is_some_and(|at| at <= Instant::now()) {
            kill(Signal::SIGKILL);
            kill_at = None;
        }
        match signals.next(kill_at)? {
            None => {}
            Some(signal) if !stopping => {
                eprintln!("sagemaker-executor: received {signal}; stopping the stage's script");
                stopping = true;
                kill(Signal::SIGTERM);
                kill_at = Some(Instant::now() + LOCAL_GRACE);
            }
            Some(signal) => {
                eprintln!("sagemaker-executor: received {signal} again; exiting now");
                kill(Signal::SIGKILL);
                std::process::exit(i32::from(system_failure_code));
            }
        }
    }
}

/// SIGTERM, SIGINT and SIGCHLD while a local script runs: each sets its flag and wakes a
/// self-pipe (signal-hook), so the wait needs no async runtime and the child inherits no
/// signal mask or handler. Unregistered when dropped.
struct Signals {
    ids: Vec<SigId>,
    term: Arc<AtomicBool>,
    int: Arc<AtomicBool>,
    wake: UnixStream,
}

impl Signals {
    fn register() -> Result<Signals, ExecutorError> {
        let host = |source| ExecutorError::Host {
            what: "handling signals".into(),
            source,
        };
        let (wake, waker) = UnixStream::pair().map_err(host)?;
        wake.set_nonblocking(true).map_err(host)?;
        let term = Arc::new(AtomicBool::new(false));
        let int = Arc::new(AtomicBool::new(false));
        let mut signals = Signals {
            ids: Vec::new(),
            term: Arc::clone(&term),
            int: Arc::clone(&int),
            wake,
        };
        // The flag first: the wake-up must find it set.
        for (signal, flag) in [(SIGTERM, Some(term)), (SIGINT, Some(int)), (SIGCHLD, None)] {
            if let Some(flag) = flag {
                signals
                    .ids
                    .push(signal_hook::flag::register(signal, flag).map_err(host)?);
            }
            let waker = waker.try_clone().map_err(host)?;
            signals
                .ids
                .push(signal_hook::low_level::pipe::register(signal, waker).map_err(host)?);
        }
        Ok(signals)
    }

    /// Waits for a signal, at most until `until`; returns the name of a stop signal that came.
    fn next(&self, until: Option<Instant>) -> Result<Option<&'static str>, ExecutorError> {
        let timeout = match until {
            None => PollTimeout::NONE,
            Some(at) => PollTimeout::try_from(at.saturating_duration_since(Instant::now()))
                .unwrap_or(PollTimeout::MAX),
        };
        let mut fds = [PollFd::new(self.wake.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => {
                return Err(ExecutorError::Host {
                    what: "waiting for the stage's script".into(),
                    source: e.into(),
                });
            }
        }
        let mut drained = [0u8; 64];
        while matches!((&self.wake).read(&mut drained), Ok(n) if n > 0) {}
        if self.term.swap(false, Ordering::SeqCst) {
            return Ok(Some("SIGTERM"));
        }
        if self.int.swap(false, Ordering::SeqCst) {
            return Ok(Some("SIGINT"));
        }
        Ok(None)
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{bash, scrubbed};

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

    #[test]
    fn bash_is_the_first_executable_one_on_path() {
        let dir = tempfile::tempdir().unwrap();
        let (plain, runnable) = (dir.path().join("a"), dir.path().join("b"));
        for d in [&plain, &runnable] {
            std::fs::create_dir(d).unwrap();
        }
        // Not executable: execvp would pass over it too.
        std::fs::write(plain.join("bash"), "").unwrap();
        std::fs::write(runnable.join("bash"), "").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            runnable.join("bash"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let path = std::env::join_paths([&plain, &runnable]).unwrap();
        assert_eq!(bash(Some(path)), runnable.join("bash"));
        assert_eq!(bash(None), std::path::PathBuf::from("bash"));
    }
}
