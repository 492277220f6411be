//! The real `sagemaker-executor` installed for one test: a temp dir with the builds and cache
//! roots, the executor config written from the one template every end-to-end test uses
//! ([`ExecutorSetup::config_text`] plus [`POLICY`]), and a [`RunnerConfig`] that calls the
//! binary as `sagemaker-executor --config <file> config|prepare|run|cleanup`, like the
//! documented `[runners.custom]` setup.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::error::{Error, Result};
use crate::paths::executor_binary;
use crate::runner::RunnerConfig;

/// The region of the config and of every AWS client.
pub const REGION: &str = "us-east-1";

/// The runner's `config_exec` and `run_exec`, installed beside the full binary.
pub const RUN_BINARY: &str = "sagemaker-executor-run";

/// `[staging] bucket`.
pub const BUCKET: &str = "ci-staging";

/// `[train] role_arn`: the role a training job gets when it names none.
pub const TRAIN_ROLE: &str = "arn:aws:iam::123456789012:role/SageMakerCI";

/// The template's `[policy]`: every action, `after_script` and hooks allowed, training on
/// `ml.m5.*` with at most two instances.
///
/// It ends inside `[policy.train]`, so keys appended after it land there, and further tables
/// (`[policy.ecs_deploy]`, `[fargate]`, ...) can follow it.
pub const POLICY: &str = r#"[policy]
allowed_actions = ["train", "fargate", "register", "deploy", "undeploy", "ecs-deploy"]
allow_after_script = true
allow_hooks = true

[policy.register]
groups = ["ml-*"]
unprotected_approvals = ["pending", "auto"]
max_bundle_bytes = 1048576

[policy.train]
instance_types = ["ml.m5.*"]
max_instance_count = 2
"#;

/// `[local] user`: who local stages (sources, caches, artifacts, after_script) run as. `nobody`
/// when the tests run as root, as an admin's runner does; otherwise the tests' own user, since
/// only root may switch users.
pub fn local_user() -> String {
    if nix::unistd::Uid::effective().is_root() {
        return "nobody".to_owned();
    }
    nix::unistd::User::from_uid(nix::unistd::Uid::effective())
        .ok()
        .flatten()
        .map_or_else(|| "nobody".to_owned(), |u| u.name)
}

/// How long the runner waits between SIGTERM and SIGKILL in the tests that reach AWS: the
/// executor's own stop of a training job or task must fit in it.
const AWS_GRACEFUL_KILL: Duration = Duration::from_secs(60);

/// A per-test executor installation.
#[derive(Debug)]
pub struct ExecutorSetup {
    /// The temp dir holding everything; gone with the setup.
    pub dir: TempDir,
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
        Self::with_extra_config("")
    }

    /// A setup whose config is the minimal one plus `extra` TOML appended at the end (keys
    /// there land in `[policy.train]`; see [`POLICY`]).
    pub fn with_extra_config(extra: &str) -> Result<ExecutorSetup> {
        let setup = Self::unconfigured()?;
        setup.write_config(&setup.minimal_config(extra))?;
        Ok(setup)
    }

    /// The temp dir, the roots and the binary, but no config file yet.
    pub fn unconfigured() -> Result<ExecutorSetup> {
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
        // As an admin sets a host up: the local user reaches the builds root (the executor hands
        // it each job's dir) and owns the cache.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("opening the executor setup dir", e))?;
        std::fs::write(dir.path().join("gitconfig"), "[safe]\n\tdirectory = *\n")
            .map_err(|e| Error::io("writing the local user's git config", e))?;
        if let Ok(Some(user)) = nix::unistd::User::from_name(&local_user()) {
            std::os::unix::fs::lchown(
                &cache_root,
                Some(user.uid.as_raw()),
                Some(user.gid.as_raw()),
            )
            .map_err(|e| Error::io("handing the cache to the local user", e))?;
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

    /// The one executor-config template: region, this setup's roots, the staging bucket and
    /// the `[train]` defaults (a default role, and describe and log intervals and a stop
    /// grace short enough for tests), then `tail` (normally [`POLICY`] and what a test
    /// adds to it).
    pub fn config_text(&self, tail: &str) -> String {
        format!(
            r#"region = "{REGION}"

[paths]
builds_root = "{builds}"
cache_root = "{cache}"

[staging]
bucket = "{BUCKET}"

[train]
role_arn = "{TRAIN_ROLE}"
describe_interval = "2s"
log_interval = "1s"
stop_grace = "30s"

[local]
user = "{user}"

{tail}"#,
            builds = self.builds_root.display(),
            cache = self.cache_root.display(),
            user = local_user(),
        )
    }

    /// The template with [`POLICY`], plus `extra`.
    pub fn minimal_config(&self, extra: &str) -> String {
        self.config_text(&format!("{POLICY}{extra}"))
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
        let mut config = self.bare_runner_config();
        for (key, value) in [
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("AWS_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", "AKIAEMULATORTEST0000"),
            ("AWS_SECRET_ACCESS_KEY", "emulator-secret-access-key-value"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ] {
            config = config.with_env(key, value);
        }
        config
    }

    /// The runner config calling the binary, with test timeouts but a graceful stop long
    /// enough for the executor to stop what it started in AWS, and `aws_env` (the settings
    /// that point the executor at an AWS simulator) in every stage's environment.
    pub fn aws_runner_config(&self, aws_env: Vec<(String, String)>) -> RunnerConfig {
        let mut config = self.bare_runner_config();
        config.graceful_kill_timeout = AWS_GRACEFUL_KILL;
        for (key, value) in aws_env {
            config = config.with_env(key, value);
        }
        config
    }

    fn bare_runner_config(&self) -> RunnerConfig {
        let config = self.config_path.to_string_lossy().into_owned();
        // The emulator's git remote is a local repository the tests' user owns; the local user
        // fetching from it is what git calls dubious ownership. (A runner fetches over HTTPS.)
        let gitconfig = self.root().join("gitconfig");
        let mut runner = RunnerConfig::for_driver(&self.binary, &["--config", &config])
            .with_test_timeouts()
            .with_env("GIT_CONFIG_GLOBAL", gitconfig.to_string_lossy());
        // As installed: config_exec and run_exec are the small binary, which hands AWS stages
        // to the full one.
        let small = self.binary.with_file_name(RUN_BINARY);
        if let Some(config_exec) = runner.config_exec.as_mut() {
            config_exec.exec.clone_from(&small);
        }
        runner.run_exec.exec = small;
        runner
    }

    /// `sagemaker-executor --config <file> <args...>` for direct calls (`validate`, ...).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--config").arg(&self.config_path).args(args);
        cmd
    }
}
