//! SIGTERM and SIGINT, mapped once into a cancellation every wait observes.
//!
//! The first signal cancels the root token: remote work is stopped and the stage exits within a
//! bounded time. A second signal exits at once; `cleanup` finishes whatever is left.

use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Process group of a running local stage script (0 = none), killed before a forced exit so
/// nothing it started outlives the executor.
static CHILD_GROUP: AtomicI32 = AtomicI32::new(0);

/// Records (or, with `None`, forgets) the process group of the running local script.
pub fn set_child_group(pgid: Option<i32>) {
    CHILD_GROUP.store(pgid.unwrap_or(0), Ordering::SeqCst);
}

fn kill_child_group() {
    let pgid = CHILD_GROUP.load(Ordering::SeqCst);
    if pgid > 0 {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// Installs the handlers and returns the root token.
pub fn install(system_failure_code: u8) -> CancellationToken {
    let token = CancellationToken::new();
    let root = token.clone();
    let streams = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    let (Ok(mut term), Ok(mut int)) = streams else {
        eprintln!(
            "WARNING: cannot install signal handlers; cancellation will not stop remote work"
        );
        return token;
    };
    tokio::spawn(async move {
        let mut seen = 0u32;
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            seen += 1;
            if seen == 1 {
                eprintln!("sagemaker-executor: received {name}; stopping the job's work");
                root.cancel();
            } else {
                eprintln!(
                    "sagemaker-executor: received {name} again; exiting now (cleanup stops what is left)"
                );
                kill_child_group();
                std::process::exit(i32::from(system_failure_code));
            }
        }
    });
    token
}
