//! Exit codes as the runner defines them, and `BUILD_EXIT_CODE_FILE`.
//!
//! The runner reads the first line of `BUILD_EXIT_CODE_FILE` with strict integer parsing whenever
//! we exit with the build-failure code, and the file is one path for the whole job, so it is
//! overwritten on every `run` exit and never left stale.

use std::path::PathBuf;

use stages::failure::FailureKind;

/// The codes the runner passed in the environment.
#[derive(Debug, Clone, Copy)]
pub struct ExitCodes {
    /// `BUILD_FAILURE_EXIT_CODE` (default 1).
    pub build: u8,
    /// `SYSTEM_FAILURE_EXIT_CODE` (default 2).
    pub system: u8,
}

impl ExitCodes {
    /// Reads the codes once; a missing or odd value falls back to the runner's defaults.
    pub fn from_env() -> Self {
        let read = |k: &str, d: u8| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(d)
        };
        ExitCodes {
            build: read("BUILD_FAILURE_EXIT_CODE", 1),
            system: read("SYSTEM_FAILURE_EXIT_CODE", 2),
        }
    }

    /// The code for a failure of `kind`.
    pub fn for_kind(self, kind: FailureKind) -> u8 {
        match kind {
            FailureKind::Build => self.build,
            FailureKind::System => self.system,
        }
    }
}

/// `BUILD_EXIT_CODE_FILE`, when the runner set it.
#[derive(Debug, Clone)]
pub struct BuildExitCodeFile(Option<PathBuf>);

impl BuildExitCodeFile {
    /// From the environment.
    pub fn from_env() -> Self {
        BuildExitCodeFile(
            std::env::var_os("BUILD_EXIT_CODE_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        )
    }

    /// Overwrites the file with `code`.
    pub fn write(&self, code: i32) {
        if let Some(p) = &self.0
            && let Err(e) = std::fs::write(p, format!("{code}\n"))
        {
            eprintln!(
                "WARNING: cannot write BUILD_EXIT_CODE_FILE {}: {e}",
                p.display()
            );
        }
    }

    /// Removes the file, so a system failure never carries an older stage's code.
    pub fn clear(&self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}
