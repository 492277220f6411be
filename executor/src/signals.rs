//! SIGTERM and SIGINT, mapped once into a cancellation every wait observes.
//!
//! The first signal cancels the root token: remote work is stopped and the stage exits within a
//! bounded time. A second signal exits at once; `cleanup` finishes whatever is left.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

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
                std::process::exit(i32::from(system_failure_code));
            }
        }
    });
    token
}
