//! The emulated `[[runners]]` / `[runners.custom]` configuration: which executables to call
//! with which arguments, the directory fallbacks, and the timeouts that gitlab-runner applies
//! around every call (protocol §1, §6).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// One `*_exec` entry with its `*_args`, as in `[runners.custom]`.
///
/// The runner puts `args` before the arguments it adds itself (for `run`: the script path and
/// the stage name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommand {
    /// The executable (`config_exec`, `prepare_exec`, ...).
    pub exec: PathBuf,
    /// The fixed arguments (`config_args`, ...).
    pub args: Vec<String>,
}

impl ExecCommand {
    /// An executable with its fixed arguments.
    pub fn new(
        exec: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        ExecCommand {
            exec: exec.into(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }
}

/// How the emulated runner is set up. Defaults follow gitlab-runner 19.x; tests shorten the
/// timeouts and intervals so that failure paths run in seconds.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// `config_exec` + `config_args`; `None` skips the config stage.
    pub config_exec: Option<ExecCommand>,
    /// `prepare_exec` + `prepare_args`; optional like in the runner.
    pub prepare_exec: Option<ExecCommand>,
    /// `run_exec` + `run_args`; the only required call.
    pub run_exec: ExecCommand,
    /// `cleanup_exec` + `cleanup_args`; optional.
    pub cleanup_exec: Option<ExecCommand>,
    /// `[[runners]] builds_dir`, used when config_exec does not return one.
    pub builds_dir: Option<PathBuf>,
    /// `[[runners]] cache_dir`, used when config_exec does not return one.
    pub cache_dir: Option<PathBuf>,
    /// Gap between SIGTERM and SIGKILL to an exec's process group (runner default 600 s).
    pub graceful_kill_timeout: Duration,
    /// Wait after SIGKILL before giving up on the process (runner default 10 s).
    pub force_kill_timeout: Duration,
    /// `config_exec_timeout` (default 3600 s).
    pub config_exec_timeout: Duration,
    /// `prepare_exec_timeout` (default 3600 s).
    pub prepare_exec_timeout: Duration,
    /// `cleanup_exec_timeout` (default 3600 s).
    pub cleanup_exec_timeout: Duration,
    /// Pause between preparation attempts (runner: 3 s, not configurable there).
    pub preparation_retry_interval: Duration,
    /// Pause before retrying get_sources / restore_cache / download_artifacts. The runner
    /// backs off from 5 s upwards; this is the first pause and it doubles, capped at 5 min.
    pub stage_retry_interval: Duration,
    /// The after_script context (`RUNNER_AFTER_SCRIPT_TIMEOUT`, default 5 min).
    pub after_script_timeout: Duration,
    /// How long to wait, after an exec exited, for its stdout/stderr to reach EOF. A process
    /// left behind in the group can hold the pipes open; gitlab-runner would wait for it
    /// forever, the emulator records the fact and moves on.
    pub output_drain_timeout: Duration,
    /// Extra environment for every exec call, placed with the runner's own environment
    /// (protocol §4 step 1), so `job_env` and the protocol variables override it.
    pub env: Vec<(String, String)>,
    /// `CI_SERVER_URL` and the base of `CI_JOB_URL`.
    pub server_url: String,
    /// The runner authentication token; `CI_RUNNER_SHORT_TOKEN` is derived from it.
    pub runner_token: String,
    /// Where per-job harness state (fixture repositories, uploaded artifacts) lives. `None`
    /// means a temporary directory removed when the [`Runner`](super::Runner) is dropped.
    pub work_dir: Option<PathBuf>,
    /// Where the per-job `custom-executor*` temp dirs (TMPDIR of the execs) are created;
    /// `None` means the system temp dir, like the runner's `os.MkdirTemp("", ...)`.
    pub tmp_root: Option<PathBuf>,
    /// Print every job-log line to stdout as it arrives (the demo binary sets this).
    pub echo_log: bool,
}

impl RunnerConfig {
    /// A configuration with only `run_exec` set and gitlab-runner's default timeouts.
    pub fn new(run_exec: ExecCommand) -> Self {
        RunnerConfig {
            config_exec: None,
            prepare_exec: None,
            run_exec,
            cleanup_exec: None,
            builds_dir: None,
            cache_dir: None,
            graceful_kill_timeout: Duration::from_secs(600),
            force_kill_timeout: Duration::from_secs(10),
            config_exec_timeout: Duration::from_secs(3600),
            prepare_exec_timeout: Duration::from_secs(3600),
            cleanup_exec_timeout: Duration::from_secs(3600),
            preparation_retry_interval: Duration::from_secs(3),
            stage_retry_interval: Duration::from_secs(5),
            after_script_timeout: Duration::from_secs(300),
            output_drain_timeout: Duration::from_secs(10),
            env: Vec::new(),
            server_url: "https://gitlab.example.com".to_owned(),
            runner_token: "glrt-emu1ator0token".to_owned(),
            work_dir: None,
            tmp_root: None,
            echo_log: false,
        }
    }

    /// The usual wiring of a driver that takes the stage as its first argument after some
    /// fixed `prefix` arguments: `<driver> <prefix...> config|prepare|run|cleanup`, exactly
    /// like the registration example in protocol §11.
    pub fn for_driver(driver: &Path, prefix: &[&str]) -> Self {
        let with = |stage: &str| {
            let mut args: Vec<String> = prefix.iter().map(|s| (*s).to_owned()).collect();
            args.push(stage.to_owned());
            ExecCommand {
                exec: driver.to_path_buf(),
                args,
            }
        };
        let mut config = RunnerConfig::new(with("run"));
        config.config_exec = Some(with("config"));
        config.prepare_exec = Some(with("prepare"));
        config.cleanup_exec = Some(with("cleanup"));
        config
    }

    /// Short timeouts suited to tests: 5 s graceful kill, 5 s force kill, 200 ms between
    /// preparation attempts and 100 ms before a stage retry.
    #[must_use]
    pub fn with_test_timeouts(mut self) -> Self {
        self.graceful_kill_timeout = Duration::from_secs(5);
        self.force_kill_timeout = Duration::from_secs(5);
        self.preparation_retry_interval = Duration::from_millis(200);
        self.stage_retry_interval = Duration::from_millis(100);
        self.output_drain_timeout = Duration::from_secs(5);
        self
    }

    /// Adds one variable to the environment of every exec call.
    #[must_use]
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// `CI_RUNNER_SHORT_TOKEN`: like the runner, the first 8 characters after a `glrt-`
    /// prefix (or of the whole token without one).
    pub fn short_token(&self) -> String {
        let token = self
            .runner_token
            .strip_prefix("glrt-")
            .unwrap_or(&self.runner_token);
        token.chars().take(8).collect()
    }
}
