//! What a finished job looks like to a test: the outcome GitLab would record, the job log,
//! the runner log, and one record per exec call so that the exact stage sequence, exit
//! statuses and signals can be asserted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::log::{LogLine, strip_ansi};

/// The final status of a job, as gitlab-runner would report it to GitLab (protocol §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// `Job succeeded`.
    Success,
    /// A build failure (`script_failure`) with the exit code GitLab records.
    Failed {
        /// From BUILD_EXIT_CODE_FILE, else 1.
        exit_code: i32,
    },
    /// A configuration error found by the runner itself (e.g. no builds_dir); a build
    /// failure without an exit code, never retried.
    ConfigurationError {
        /// The runner's message.
        message: String,
    },
    /// `runner_system_failure`: exit 2, an unknown exit code, a signal, an unparsable
    /// BUILD_EXIT_CODE_FILE, a bad config JSON, ...
    SystemFailure {
        /// The runner's message.
        message: String,
    },
    /// `job_canceled` (graceful cancel or abort).
    Canceled,
    /// The job timeout expired.
    TimedOut,
}

impl std::fmt::Display for JobOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobOutcome::Success => f.write_str("success"),
            JobOutcome::Failed { exit_code } => write!(f, "failed with exit code {exit_code}"),
            JobOutcome::ConfigurationError { message } => {
                write!(f, "configuration error: {message}")
            }
            JobOutcome::SystemFailure { message } => write!(f, "system failure: {message}"),
            JobOutcome::Canceled => f.write_str("canceled"),
            JobOutcome::TimedOut => f.write_str("timed out"),
        }
    }
}

/// Which of the four executables a call used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecKind {
    /// config_exec.
    Config,
    /// prepare_exec.
    Prepare,
    /// run_exec (the stage is in [`StageRecord::name`]).
    Run,
    /// cleanup_exec.
    Cleanup,
}

/// How an exec call ended, as the OS reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitInfo {
    /// Exited with this status.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
    /// Could not be started.
    SpawnFailed(String),
    /// Still alive after SIGKILL and `force_kill_timeout`: the runner gave up on it.
    Abandoned,
}

/// How the runner classified an exec's exit (protocol §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Exit `BUILD_FAILURE_EXIT_CODE`: a BuildError with this exit code.
    Build {
        /// From BUILD_EXIT_CODE_FILE, else 1.
        exit_code: i32,
    },
    /// Anything that is not a BuildError.
    System {
        /// The runner's message.
        message: String,
    },
}

/// A signal the emulator sent to an exec's process group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentSignal {
    /// `SIGTERM` or `SIGKILL`.
    pub signal: &'static str,
    /// Time since the call started.
    pub after: Duration,
}

/// One exec call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageRecord {
    /// Which executable.
    pub kind: ExecKind,
    /// `config`, `prepare`, `cleanup`, or the stage name passed to run_exec (the main script
    /// is `build_script`, like the runner sends it).
    pub name: String,
    /// 1-based attempt (preparation attempts, stage retries).
    pub attempt: u32,
    /// How the process ended.
    pub exit: ExitInfo,
    /// `None` on success, else the runner's classification.
    pub failure: Option<Failure>,
    /// The first line of BUILD_EXIT_CODE_FILE when the call ended, if the file existed.
    pub exit_code_file: Option<String>,
    /// Wall time of the call.
    pub duration: Duration,
    /// Signals sent to the group, in order.
    pub signals: Vec<SentSignal>,
    /// The stdout/stderr pipes were still open `output_drain_timeout` after the exit: some
    /// process of the call outlived it.
    pub output_left_open: bool,
    /// The command line: the executable, its `*_args`, then what the runner added.
    pub command: Vec<String>,
    /// The environment the runner set on top of its own (protocol §4 steps 2-4 plus
    /// `RunnerConfig::env`), in order; enough to replay the call by hand.
    pub env: Vec<(String, String)>,
    /// The working directory (the job's temp dir).
    pub cwd: PathBuf,
}

impl StageRecord {
    /// Whether the call succeeded.
    pub fn succeeded(&self) -> bool {
        self.failure.is_none()
    }

    /// Whether the runner sent `signal` (`"SIGTERM"`, `"SIGKILL"`) to the call's group.
    pub fn was_sent(&self, signal: &str) -> bool {
        self.signals.iter().any(|s| s.signal == signal)
    }

    /// A command that repeats this call (same arguments and protocol environment, stdin from
    /// /dev/null); the caller picks the working directory, since the job's temp dir is gone
    /// once the job ended.
    pub fn replay(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(self.command.first().map_or("", String::as_str));
        cmd.args(self.command.iter().skip(1))
            .stdin(std::process::Stdio::null());
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd
    }
}

/// Everything a test may want to assert about a finished job.
#[derive(Debug, Clone)]
pub struct JobResult {
    /// The job id (`CI_JOB_ID`).
    pub id: u64,
    /// The job name.
    pub name: String,
    /// The final status.
    pub outcome: JobOutcome,
    /// The job log as GitLab would show it: masked, with section markers and colours.
    pub log: String,
    /// The same log without masking (to prove a secret never reached it at all).
    pub unmasked_log: String,
    /// The job log lines with their stage and stream.
    pub lines: Vec<LogLine>,
    /// The runner's own log: cleanup_exec output (unmasked, as the runner logs it) and
    /// harness warnings.
    pub runner_log: String,
    /// Every exec call in order.
    pub stages: Vec<StageRecord>,
    /// Where upload_artifacts_* put the uploaded files: `archive/<path>` for `artifacts:paths`,
    /// `dotenv/<path>` for the dotenv report.
    pub uploaded_artifacts_dir: PathBuf,
    /// The TMPDIR of the last attempt (deleted after cleanup, like the runner does).
    pub tmp_dir: PathBuf,
    /// builds_dir after StartBuild, if preparation got that far.
    pub builds_dir: Option<PathBuf>,
    /// CI_PROJECT_DIR, if preparation got that far.
    pub project_dir: Option<PathBuf>,
    /// cache_dir, if preparation got that far.
    pub cache_dir: Option<PathBuf>,
    /// The last parsed config_exec output.
    pub config_output: Option<serde_json::Value>,
    /// The raw stdout of the last config_exec call.
    pub config_stdout: Option<String>,
    /// The job payload written to `response.json`.
    pub response: serde_json::Value,
    /// Keeps the runner's temporary work dir (uploaded artifacts, fixture repo) alive as
    /// long as the result, even after the `Runner` is dropped.
    pub(crate) _work_dir: Option<std::sync::Arc<tempfile::TempDir>>,
}

impl JobResult {
    /// The names of all exec calls in order (`config`, `prepare`, run stages, `cleanup`).
    pub fn stage_names(&self) -> Vec<&str> {
        self.stages.iter().map(|s| s.name.as_str()).collect()
    }

    /// The names of the run_exec calls only.
    pub fn run_stages(&self) -> Vec<&str> {
        self.stages
            .iter()
            .filter(|s| s.kind == ExecKind::Run)
            .map(|s| s.name.as_str())
            .collect()
    }

    /// How many calls used `kind`.
    pub fn count(&self, kind: ExecKind) -> usize {
        self.stages.iter().filter(|s| s.kind == kind).count()
    }

    /// The first call named `name`.
    pub fn stage(&self, name: &str) -> Option<&StageRecord> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// The outcome, the exec calls, the job log and the runner log: what an assertion
    /// message about the whole job shows.
    pub fn summary(&self) -> String {
        format!(
            "outcome: {:?}\nstages: {:?}\n--- job log ---\n{}\n--- runner log ---\n{}",
            self.outcome,
            self.stage_names(),
            self.plain_log(),
            self.runner_log
        )
    }

    /// The job log without colours and section markers, one line per line.
    pub fn plain_log(&self) -> String {
        self.lines
            .iter()
            .filter_map(|l| {
                let plain = strip_ansi(&l.text);
                (!plain.is_empty()).then_some(plain)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A command that repeats exec call `record` by hand in `dir`, which is set up like the
    /// runner's temp dir: `response.json` holding `response` (the job's payload, or a
    /// modified copy), TMPDIR, JOB_RESPONSE_FILE and BUILD_EXIT_CODE_FILE pointing into it,
    /// and `dir` as the working directory.
    pub fn replay_in(
        &self,
        record: &StageRecord,
        dir: &Path,
        response: &serde_json::Value,
    ) -> std::io::Result<std::process::Command> {
        let file = dir.join("response.json");
        let mut body = serde_json::to_vec(response).map_err(std::io::Error::other)?;
        body.push(b'\n');
        std::fs::write(&file, body)?;
        let mut cmd = record.replay();
        cmd.current_dir(dir)
            .env("TMPDIR", dir)
            .env("JOB_RESPONSE_FILE", &file)
            .env("BUILD_EXIT_CODE_FILE", dir.join("build_exit_code"));
        Ok(cmd)
    }

    /// Files uploaded as the `archive` artifact, relative and sorted.
    pub fn uploaded_files(&self) -> Vec<String> {
        let root = self.uploaded_artifacts_dir.join("archive");
        let mut files = Vec::new();
        collect_files(&root, &root, &mut files);
        files.sort();
        files
    }

    /// The uploaded dotenv report parsed the way GitLab does (`KEY=value`, both trimmed),
    /// or `None` if none was uploaded.
    pub fn dotenv(&self) -> Option<Vec<(String, String)>> {
        let root = self.uploaded_artifacts_dir.join("dotenv");
        let mut files = Vec::new();
        collect_files(&root, &root, &mut files);
        let first = files.first()?;
        let text = std::fs::read_to_string(root.join(first)).ok()?;
        Some(
            text.lines()
                .filter_map(|line| {
                    let (key, value) = line.split_once('=')?;
                    Some((key.trim().to_owned(), value.trim().to_owned()))
                })
                .collect(),
        )
    }

    /// The value of `key` in the uploaded dotenv report (see [`JobResult::dotenv`]), or
    /// `None` if there is no such key or no report.
    pub fn dotenv_value(&self, key: &str) -> Option<String> {
        self.dotenv()?
            .into_iter()
            .find_map(|(k, v)| (k == key).then_some(v))
    }
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(root, &path, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
}
