//! The `cleanup` stage: stop what the job left running, delete its staged objects, remove its
//! builds dir and state file.
//!
//! # Guarantees
//! - Idempotent, and safe when `prepare` never ran or `run` was SIGKILLed.
//! - Makes no AWS call unless the state file records something to stop or delete.
//! - Prints resource names only: its output goes unmasked to the runner's log.

use std::path::Path;

use stages::state::StateFile;
use tokio_util::sync::CancellationToken;

use crate::context;
use crate::error::ExecutorError;

pub async fn run(config: &Path, cancel: &CancellationToken) -> Result<(), ExecutorError> {
    let cfg = stages::config::load_file(config)?;
    let ctx = match context::load() {
        Ok(c) => c,
        // Without a job there is nothing this job could have left behind.
        Err(context::ContextError::Missing(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let state = StateFile::new(&cfg.paths.state_root, ctx.job.id);
    stages::cleanup::release(&cfg, &ctx.job, &state, cancel).await?;
    let dir = cfg.paths.builds_root.join(ctx.job.id.to_string());
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(ExecutorError::Host {
                what: format!("removing {}", dir.display()),
                source: e,
            });
        }
        _ => {}
    }
    state.remove()?;
    Ok(())
}
