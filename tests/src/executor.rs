//! The real `sagemaker-executor` wired into the runner emulator: a temp dir with the builds
//! and cache roots, an executor config file, and a [`RunnerConfig`] that calls the binary as
//! `sagemaker-executor --config <file> config|prepare|run|cleanup`, like the documented
//! `[runners.custom]` setup.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};
use crate::paths::executor_binary;
use crate::runner::RunnerConfig;

/// A per-test executor installation.
#[derive(Debug)]
pub struct ExecutorSetup {
    dir: tempfile::TempDir,
    /// The binary under test.
    pub binary: PathBuf,
    /// The executor config file.
    pub config_path: PathBuf,
    /// `[paths] builds_root`.
    pub builds_root: PathBuf,
    /// `[paths] cache_root`.
    pub cache_root: PathBuf,
}

impl ExecutorSetup {
    /// A setup with [`ExecutorSetup::minimal_config`].
    pub fn new() -> Result<ExecutorSetup> {
        let setup = Self::empty()?;
        setup.write_config(&setup.minimal_config(""))?;
        Ok(setup)
    }

    /// A setup whose config is the minimal one plus `extra` TOML appended at the end.
    pub fn with_extra_config(extra: &str) -> Result<ExecutorSetup> {
        let setup = Self::empty()?;
        setup.write_config(&setup.minimal_config(extra))?;
        Ok(setup)
    }

    fn empty() -> Result<ExecutorSetup> {
        let binary = executor_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("executor-setup")
            .tempdir()
            .map_err(|e| Error::io("creating the executor setup dir", e))?;
        let builds_root = dir.path().join("builds");
        let cache_root = dir.path().join("cache");
        for d in [&builds_root, &cache_root] {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
        }
        Ok(ExecutorSetup {
            binary,
            config_path: dir.path().join("executor.toml"),
            builds_root,
            cache_root,
            dir,
        })
    }

    /// The temp dir holding everything.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The smallest config the executor accepts, with this setup's roots, plus `extra`.
    pub fn minimal_config(&self, extra: &str) -> String {
        format!(
            r#"region = "us-east-1"

[paths]
builds_root = "{builds}"
cache_root = "{cache}"

[staging]
bucket = "ci-staging"

[policy]
allowed_actions = ["train", "fargate", "register", "deploy", "undeploy", "ecs-deploy"]
allow_after_script = true
allow_hooks = true

[policy.train]
instance_types = ["ml.m5.*"]
{extra}"#,
            builds = self.builds_root.display(),
            cache = self.cache_root.display(),
        )
    }

    /// Replaces the config file.
    pub fn write_config(&self, text: &str) -> Result<()> {
        std::fs::write(&self.config_path, text)
            .map_err(|e| Error::io(format!("writing {}", self.config_path.display()), e))
    }

    /// The runner config calling the binary with `--config <file>` before each stage, with
    /// test timeouts, and AWS pointed at an address where nothing listens (these tests never
    /// need AWS; a call that slips through fails fast instead of reaching a real account).
    pub fn runner_config(&self) -> RunnerConfig {
        let config = self.config_path.to_string_lossy().into_owned();
        RunnerConfig::for_driver(&self.binary, &["--config", &config])
            .with_test_timeouts()
            .with_env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .with_env("AWS_REGION", "us-east-1")
            .with_env("AWS_ACCESS_KEY_ID", "AKIAEMULATORTEST0000")
            .with_env("AWS_SECRET_ACCESS_KEY", "emulator-secret-access-key-value")
            .with_env("AWS_EC2_METADATA_DISABLED", "true")
    }

    /// `sagemaker-executor --config <file> <args...>` for direct calls (`validate`, ...).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--config").arg(&self.config_path).args(args);
        cmd
    }
}
