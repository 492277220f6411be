//! The `config` stage: exactly one JSON object on stdout telling the runner where this job's
//! builds dir is. Everything else goes to stderr. Re-running it is harmless (the runner retries
//! preparation up to three times).

use std::path::Path;

use serde::Serialize;

use crate::context;
use crate::error::ExecutorError;

#[derive(Serialize)]
struct Driver {
    name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct ConfigOutput {
    builds_dir: String,
    cache_dir: String,
    builds_dir_is_shared: bool,
    hostname: String,
    driver: Driver,
    shell: &'static str,
}

pub fn run(config: &Path) -> Result<(), ExecutorError> {
    let cfg = stages::config::load_file(config)?;
    let ctx = context::load()?;
    // One builds dir per job, so concurrent jobs on this host never share a checkout.
    let out = ConfigOutput {
        builds_dir: cfg
            .paths
            .builds_root
            .join(ctx.job.id.to_string())
            .display()
            .to_string(),
        cache_dir: cfg.paths.cache_root.display().to_string(),
        builds_dir_is_shared: false,
        hostname: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "localhost".into()),
        driver: Driver {
            name: "sagemaker-executor",
            version: env!("CARGO_PKG_VERSION"),
        },
        shell: "bash",
    };
    let json = serde_json::to_string(&out).map_err(|e| ExecutorError::Host {
        what: "encoding the config output".into(),
        source: e.into(),
    })?;
    println!("{json}");
    Ok(())
}
