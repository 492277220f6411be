//! Where things are: the workspace root and the built `sagemaker-executor` binary.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The `sagemaker-executor` binary of the profile the current test executable was built
/// with (`target/<profile>/sagemaker-executor`), or `$SAGEMAKER_EXECUTOR_BIN` if set.
///
/// Cargo only builds binaries of the package under test, so the executor must have been
/// built beforehand; the error says how.
pub fn executor_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SAGEMAKER_EXECUTOR_BIN") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::Missing {
                what: "sagemaker-executor binary ($SAGEMAKER_EXECUTOR_BIN)".to_owned(),
                path,
                hint: "point SAGEMAKER_EXECUTOR_BIN at a built binary".to_owned(),
            })
        };
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("locating the test executable", e))?;
    // Test executables live in target/<profile>/deps/, binaries one level up.
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let path = dir.join("sagemaker-executor");
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Missing {
            what: "sagemaker-executor binary".to_owned(),
            path,
            hint: "run `cargo build --workspace --bins` first (with the same profile as the tests)"
                .to_owned(),
        })
    }
}
