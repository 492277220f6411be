//! The job lifecycle (protocol §2, §5, §8): preparation with retries, the run stages in the
//! runner's order with its skip rules, cleanup_exec always, and the final status line.
//!
//! Runs on its own thread per job so the test can watch the log and send stop requests while
//! the job is in progress.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::config::RunnerConfig;
use super::exec::AbortReason;
use super::exec::{Call, CallResult, Control, KillTimeouts, Output, Phase, Shared, run_call};
use super::log::{GREEN, RED, RESET, RunnerLog, YELLOW, section_end, section_start};
use super::payload::{Dirs, JobSpec};
use super::result::{ExecKind, Failure, JobOutcome, JobResult, StageRecord};
use super::script::{ScriptContext, Stage, needed, render};

/// The subset of config_exec's JSON the runner reads (protocol §3); unknown keys ignored.
#[derive(Debug, Default, Deserialize)]
struct ConfigOutput {
    builds_dir: Option<String>,
    cache_dir: Option<String>,
    builds_dir_is_shared: Option<bool>,
    hostname: Option<String>,
    driver: Option<DriverInfo>,
    job_env: Option<BTreeMap<String, String>>,
    shell: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct DriverInfo {
    name: Option<String>,
    version: Option<String>,
}

/// Why preparation failed, and whether the runner would try again.
struct PrepError {
    outcome: JobOutcome,
    message: String,
    retryable: bool,
}

/// What a job starts with.
pub(crate) struct JobParts {
    pub(crate) config: Arc<RunnerConfig>,
    pub(crate) spec: JobSpec,
    pub(crate) shared: Arc<Shared>,
    pub(crate) runner_log: Arc<RunnerLog>,
    pub(crate) ctl: Control,
    pub(crate) uploaded_dir: PathBuf,
    pub(crate) runner_hostname: String,
    pub(crate) work_tmp: Option<Arc<tempfile::TempDir>>,
}

/// One job in progress.
pub(crate) struct JobRun {
    pub(crate) config: Arc<RunnerConfig>,
    pub(crate) spec: JobSpec,
    pub(crate) shared: Arc<Shared>,
    pub(crate) runner_log: Arc<RunnerLog>,
    pub(crate) ctl: Control,
    pub(crate) uploaded_dir: PathBuf,
    pub(crate) runner_hostname: String,
    pub(crate) work_tmp: Option<Arc<tempfile::TempDir>>,
    records: Vec<StageRecord>,
    tmp: Option<PathBuf>,
    last_tmp: PathBuf,
    job_env: Vec<(String, String)>,
    dirs: Option<Dirs>,
    hostname: String,
    config_output: Option<serde_json::Value>,
    config_stdout: Option<String>,
    script_counter: u32,
    job_status: &'static str,
}

impl JobRun {
    pub(crate) fn new(parts: JobParts) -> Self {
        JobRun {
            config: parts.config,
            spec: parts.spec,
            shared: parts.shared,
            runner_log: parts.runner_log,
            ctl: parts.ctl,
            uploaded_dir: parts.uploaded_dir,
            hostname: parts.runner_hostname.clone(),
            runner_hostname: parts.runner_hostname,
            work_tmp: parts.work_tmp,
            records: Vec::new(),
            tmp: None,
            last_tmp: PathBuf::new(),
            job_env: Vec::new(),
            dirs: None,
            config_output: None,
            config_stdout: None,
            script_counter: 0,
            job_status: "running",
        }
    }

    fn timeouts(&self) -> KillTimeouts {
        KillTimeouts {
            graceful: self.config.graceful_kill_timeout,
            force: self.config.force_kill_timeout,
            drain: self.config.output_drain_timeout,
        }
    }

    fn log(&self, line: &str) {
        self.shared.log.runner(line);
    }

    /// Runs the whole job and returns its result.
    pub(crate) fn run(mut self) -> JobResult {
        self.log(&format!(
            "Running with gitlab-runner 19.4.0 (emulator)\n  on emulator {}, system ID: s_emulator",
            self.config.short_token()
        ));
        self.log(&section_start(
            "prepare_executor",
            "Preparing the \"custom\" executor",
        ));
        let prepared = self.prepare_with_retries();
        self.log(&section_end("prepare_executor"));
        let outcome = match prepared {
            Ok(()) => {
                let failure = self.run_stages();
                let outcome = self.outcome(failure);
                self.job_status = status_word(&outcome);
                self.cleanup_attempt();
                outcome
            }
            Err(e) => match self.ctl.aborted {
                Some(_) => self.outcome(None),
                None => e.outcome,
            },
        };
        match &outcome {
            JobOutcome::Success => self.log(&format!("{GREEN}Job succeeded{RESET}")),
            JobOutcome::Failed { exit_code } => self.log(&format!(
                "{RED}ERROR: Job failed: exit code {exit_code}{RESET}"
            )),
            JobOutcome::ConfigurationError { message } => {
                self.log(&format!("{RED}ERROR: Job failed: {message}{RESET}"))
            }
            JobOutcome::SystemFailure { message } => self.log(&format!(
                "{RED}ERROR: Job failed (system failure): {message}{RESET}"
            )),
            JobOutcome::Canceled => self.log(&format!("{RED}ERROR: Job failed: canceled{RESET}")),
            JobOutcome::TimedOut => self.log(&format!(
                "{RED}ERROR: Job failed: execution took longer than {}s seconds{RESET}",
                self.spec.fixture.timeout.as_secs()
            )),
        }
        self.shared.log.finish();
        JobResult {
            id: self.spec.id,
            name: self.spec.fixture.name.clone(),
            outcome,
            log: self.shared.log.text(),
            unmasked_log: self.shared.log.unmasked_text(),
            lines: self.shared.log.lines(),
            runner_log: self.runner_log.text(),
            stages: self.records,
            uploaded_artifacts_dir: self.uploaded_dir,
            tmp_dir: self.last_tmp,
            builds_dir: self.dirs.as_ref().map(|d| d.builds_dir.clone()),
            project_dir: self.dirs.as_ref().map(|d| d.project_dir.clone()),
            cache_dir: self.dirs.as_ref().map(|d| d.cache_dir.clone()),
            config_output: self.config_output,
            config_stdout: self.config_stdout,
            response: self.spec.response_json(),
            _work_dir: self.work_tmp,
        }
    }

    fn outcome(&self, failure: Option<Failure>) -> JobOutcome {
        match self.ctl.aborted {
            Some(AbortReason::Canceled) => return JobOutcome::Canceled,
            Some(AbortReason::TimedOut) => return JobOutcome::TimedOut,
            Some(AbortReason::RunnerDied) => {
                return JobOutcome::SystemFailure {
                    message: "the runner died (emulated): the executor's process group was \
                              killed with SIGKILL"
                        .to_owned(),
                };
            }
            None => {}
        }
        if self.ctl.canceled {
            return JobOutcome::Canceled;
        }
        match failure {
            None => JobOutcome::Success,
            Some(Failure::Build { exit_code }) => JobOutcome::Failed { exit_code },
            Some(Failure::System { message }) => JobOutcome::SystemFailure { message },
        }
    }

    // ---- preparation -------------------------------------------------------------------

    fn prepare_with_retries(&mut self) -> Result<(), PrepError> {
        const ATTEMPTS: u32 = 3;
        let mut attempt = 1;
        loop {
            let result = self.prepare_attempt(attempt);
            let Err(err) = result else {
                return Ok(());
            };
            if err.retryable && self.ctl.aborted.is_none() {
                self.log(&format!(
                    "{RED}ERROR: Preparation failed: {}{RESET}",
                    err.message
                ));
            }
            // Config validation is done before the job starts, so every failed attempt got
            // past it: cleanup_exec runs after each one.
            self.cleanup_attempt();
            if self.ctl.aborted.is_some() || !err.retryable || attempt == ATTEMPTS {
                return Err(err);
            }
            self.log(&format!(
                "Will be retried in {} ...",
                go_duration(self.config.preparation_retry_interval)
            ));
            self.ctl
                .pause(self.config.preparation_retry_interval, Phase::BeforeScript);
            if self.ctl.aborted.is_some() {
                return Err(err);
            }
            attempt += 1;
        }
    }

    fn system(message: String) -> PrepError {
        PrepError {
            outcome: JobOutcome::SystemFailure {
                message: message.clone(),
            },
            message,
            retryable: true,
        }
    }

    fn make_tmp(&mut self) -> Result<PathBuf, PrepError> {
        let root = self
            .config
            .tmp_root
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("custom-executor")
            .tempdir_in(&root)
            .map_err(|e| Self::system(format!("creating the temp dir in {}: {e}", root.display())))?
            .keep();
        self.tmp = Some(dir.clone());
        self.last_tmp = dir.clone();
        let response = dir.join("response.json");
        let mut body = serde_json::to_vec(&self.spec.response_json())
            .map_err(|e| Self::system(format!("encoding response.json: {e}")))?;
        body.push(b'\n');
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&response)
            .and_then(|mut f| f.write_all(&body))
            .map_err(|e| Self::system(format!("writing {}: {e}", response.display())))?;
        Ok(dir)
    }

    fn prepare_attempt(&mut self, attempt: u32) -> Result<(), PrepError> {
        self.ctl.drain(Phase::BeforeScript);
        if self.ctl.aborted.is_some() {
            return Err(Self::system("the job was stopped".to_owned()));
        }
        let tmp = self.make_tmp()?;
        self.job_env.clear();
        self.dirs = None;
        self.hostname = self.runner_hostname.clone();

        let mut output = ConfigOutput::default();
        if let Some(config_exec) = self.config.config_exec.clone() {
            let result = self.call(
                ExecKind::Config,
                "config",
                attempt,
                &config_exec,
                Vec::new(),
                Output::Capture,
                self.config.config_exec_timeout,
                &tmp,
            );
            self.config_stdout = Some(String::from_utf8_lossy(&result.captured).into_owned());
            if let Some(failure) = result.record.failure.clone() {
                return Err(prep_failure(failure));
            }
            if !result.captured.is_empty() {
                let value: serde_json::Value = serde_json::from_slice(&result.captured)
                    .map_err(|e| Self::system(format!("error while parsing JSON output: {e}")))?;
                output = serde_json::from_value(value.clone())
                    .map_err(|e| Self::system(format!("error while parsing JSON output: {e}")))?;
                self.config_output = Some(value);
            }
        }
        match output.driver.as_ref().and_then(|d| d.name.as_deref()) {
            Some(name) if !name.is_empty() => {
                let version = output
                    .driver
                    .as_ref()
                    .and_then(|d| d.version.as_deref())
                    .filter(|v| !v.is_empty())
                    .map(|v| format!(" {v}"))
                    .unwrap_or_default();
                self.log(&format!(
                    "Using Custom executor with driver {name}{version}..."
                ));
            }
            _ => self.log("Using Custom executor..."),
        }

        // StartBuild.
        let configured = |from_config: Option<String>, fallback: &Option<PathBuf>, what: &str| {
            let dir = match from_config {
                Some(dir) => dir,
                None => fallback
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            if dir.is_empty() {
                let message = format!("the {what} is not configured");
                Err(PrepError {
                    outcome: JobOutcome::ConfigurationError {
                        message: message.clone(),
                    },
                    message,
                    retryable: false,
                })
            } else {
                Ok(PathBuf::from(dir))
            }
        };
        let builds_dir = configured(
            output.builds_dir.clone(),
            &self.config.builds_dir,
            "builds_dir",
        )?;
        let cache_dir = configured(
            output.cache_dir.clone(),
            &self.config.cache_dir,
            "cache_dir",
        )?;
        match output.shell.as_deref() {
            None | Some("") | Some("bash") => {}
            Some(shell @ ("sh" | "pwsh" | "powershell")) => {
                let message = format!("the emulator only runs bash scripts, not {shell}");
                return Err(PrepError {
                    outcome: JobOutcome::ConfigurationError {
                        message: message.clone(),
                    },
                    message,
                    retryable: false,
                });
            }
            Some(shell) => return Err(Self::system(format!("shell {shell} not found"))),
        }
        let shared_dir = output.builds_dir_is_shared.unwrap_or(false);
        let project_dir = self.spec.project_dir(&builds_dir, shared_dir);
        self.dirs = Some(Dirs {
            builds_dir,
            cache_dir,
            project_dir,
        });
        if let Some(hostname) = output.hostname.filter(|h| !h.is_empty()) {
            self.hostname = hostname;
        }
        self.job_env = output.job_env.unwrap_or_default().into_iter().collect();

        if let Some(prepare_exec) = self.config.prepare_exec.clone() {
            let result = self.call(
                ExecKind::Prepare,
                "prepare",
                attempt,
                &prepare_exec,
                Vec::new(),
                Output::JobLog,
                self.config.prepare_exec_timeout,
                &tmp,
            );
            if let Some(failure) = result.record.failure {
                return Err(prep_failure(failure));
            }
        }
        Ok(())
    }

    /// Runs cleanup_exec for the current attempt (if any) and removes its temp dir.
    fn cleanup_attempt(&mut self) {
        let Some(tmp) = self.tmp.take() else {
            return;
        };
        if let Some(cleanup_exec) = self.config.cleanup_exec.clone() {
            let attempt = (self
                .records
                .iter()
                .filter(|r| r.kind == ExecKind::Cleanup)
                .count()
                + 1) as u32;
            let env = self.exec_env(&tmp);
            let call = Call {
                kind: ExecKind::Cleanup,
                name: "cleanup".to_owned(),
                attempt,
                command: &cleanup_exec,
                extra_args: Vec::new(),
                env,
                cwd: &tmp,
                stdout: Output::RunnerLog,
                stderr: Output::RunnerLog,
                phase: Phase::Cleanup,
                own_timeout: self.config.cleanup_exec_timeout,
                job_deadline_applies: false,
                exit_code_file: tmp.join("build_exit_code"),
            };
            let timeouts = self.timeouts();
            let result = run_call(call, &mut self.ctl, &self.shared, timeouts);
            if let Some(failure) = &result.record.failure {
                let message = match failure {
                    Failure::Build { exit_code } => format!("exit code {exit_code}"),
                    Failure::System { message } => message.clone(),
                };
                let line = format!("WARNING: Cleanup script failed: {message}");
                self.log(&format!("{YELLOW}{line}{RESET}"));
                self.runner_log.push(line);
            }
            self.records.push(result.record);
        }
        if let Err(e) = std::fs::remove_dir_all(&tmp) {
            self.runner_log
                .push(format!("WARNING: removing {}: {e}", tmp.display()));
        }
    }

    // ---- exec plumbing -----------------------------------------------------------------

    /// The environment of an exec call, in the order of protocol §4.
    fn exec_env(&self, tmp: &Path) -> Vec<(String, String)> {
        let mut env = self.config.env.clone();
        let s = |p: PathBuf| p.to_string_lossy().into_owned();
        env.push(("TMPDIR".to_owned(), s(tmp.to_path_buf())));
        env.push(("BUILD_FAILURE_EXIT_CODE".to_owned(), "1".to_owned()));
        env.push(("SYSTEM_FAILURE_EXIT_CODE".to_owned(), "2".to_owned()));
        env.push((
            "BUILD_EXIT_CODE_FILE".to_owned(),
            s(tmp.join("build_exit_code")),
        ));
        env.push(("JOB_RESPONSE_FILE".to_owned(), s(tmp.join("response.json"))));
        env.extend(self.job_env.iter().cloned());
        for v in self.spec.all_variables(self.dirs.as_ref(), self.job_status) {
            env.push((format!("CUSTOM_ENV_{}", v.key), v.value));
        }
        env.push(("CUSTOM_ENV_CI_JOB_SERVICES".to_owned(), String::new()));
        env
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; a struct would only rename the arguments"
    )]
    fn call(
        &mut self,
        kind: ExecKind,
        name: &str,
        attempt: u32,
        command: &super::config::ExecCommand,
        extra_args: Vec<String>,
        stdout: Output,
        own_timeout: Duration,
        tmp: &Path,
    ) -> CallResult {
        let call = Call {
            kind,
            name: name.to_owned(),
            attempt,
            command,
            extra_args,
            env: self.exec_env(tmp),
            cwd: tmp,
            stdout,
            stderr: Output::JobLog,
            phase: Phase::BeforeScript,
            own_timeout,
            job_deadline_applies: true,
            exit_code_file: tmp.join("build_exit_code"),
        };
        let timeouts = self.timeouts();
        let result = run_call(call, &mut self.ctl, &self.shared, timeouts);
        self.records.push(result.record.clone());
        result
    }

    // ---- run stages --------------------------------------------------------------------

    /// Runs one stage; `None` means success (or skipped because the job was stopped: the
    /// caller checks `ctl.aborted`).
    fn run_stage(
        &mut self,
        stage: &Stage,
        phase: Phase,
        attempt: u32,
        failed: bool,
    ) -> Option<Failure> {
        self.ctl.drain(phase);
        if self.ctl.aborted.is_some() || (stage.is_user_step() && self.ctl.canceled) {
            return None;
        }
        let (Some(tmp), Some(dirs)) = (self.tmp.clone(), self.dirs.clone()) else {
            return Some(Failure::System {
                message: "internal: run stage without a prepared executor".to_owned(),
            });
        };
        let section = stage.section_name();
        self.log(&section_start(
            &section,
            &format!("Executing \"{section}\" stage of the job script"),
        ));
        self.script_counter += 1;
        let script_dir = tmp.join(format!("script{:03}", self.script_counter));
        let script_path = script_dir.join("script");
        let vars = self.spec.all_variables(Some(&dirs), self.job_status);
        let text = render(
            stage,
            &ScriptContext {
                spec: &self.spec,
                vars: &vars,
                dirs: &dirs,
                hostname: &self.hostname,
                uploaded_dir: &self.uploaded_dir,
                failed,
            },
        );
        let written = std::fs::create_dir_all(&script_dir)
            .and_then(|()| std::fs::write(&script_path, text))
            .and_then(|()| {
                std::fs::set_permissions(&script_path, std::fs::Permissions::from_mode(0o700))
            });
        if let Err(e) = written {
            self.log(&section_end(&section));
            return Some(Failure::System {
                message: format!("writing {}: {e}", script_path.display()),
            });
        }
        let is_after = *stage == Stage::AfterScript;
        let call = Call {
            kind: ExecKind::Run,
            name: stage.sent_name(),
            attempt,
            command: &self.config.run_exec,
            extra_args: vec![
                script_path.to_string_lossy().into_owned(),
                stage.sent_name(),
            ],
            env: self.exec_env(&tmp),
            cwd: &tmp,
            stdout: Output::JobLog,
            stderr: Output::JobLog,
            phase,
            own_timeout: if is_after {
                self.config.after_script_timeout
            } else {
                // Run stages have no timeout of their own; the job deadline bounds them.
                Duration::from_secs(365 * 24 * 3600)
            },
            job_deadline_applies: !is_after,
            exit_code_file: tmp.join("build_exit_code"),
        };
        let timeouts = self.timeouts();
        let result = run_call(call, &mut self.ctl, &self.shared, timeouts);
        self.log(&section_end(&section));
        let failure = result.record.failure.clone();
        self.records.push(result.record);
        failure
    }

    /// get_sources / restore_cache / download_artifacts with their `*_ATTEMPTS` retries.
    fn run_retried(&mut self, stage: Stage, attempts_var: &str) -> Option<Failure> {
        let attempts = self
            .spec
            .fixture
            .variable(attempts_var)
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(1)
            .clamp(1, 10);
        let mut pause = self.config.stage_retry_interval;
        let mut last = None;
        for attempt in 1..=attempts {
            if attempt > 1 {
                self.log(&format!(
                    "{YELLOW}WARNING: {} failed, retrying in {}{RESET}",
                    stage.section_name(),
                    go_duration(pause)
                ));
                self.ctl.pause(pause, Phase::BeforeScript);
                pause = (pause * 2).min(Duration::from_secs(300));
                if stage == Stage::GetSources {
                    // A failed clear_worktree does not stop the retry; the fetch will tell.
                    let _ =
                        self.run_stage(&Stage::ClearWorktree, Phase::BeforeScript, attempt, false);
                }
            }
            last = self.run_stage(&stage, Phase::BeforeScript, attempt, false);
            if last.is_none() || self.ctl.aborted.is_some() {
                return last;
            }
        }
        last
    }

    /// All run stages; returns the job's failure, if any.
    fn run_stages(&mut self) -> Option<Failure> {
        let mut failure = self.run_stage(&Stage::PrepareScript, Phase::BeforeScript, 1, false);
        if failure.is_some() || self.ctl.aborted.is_some() {
            // A failed prepare_script ends the job: not even cleanup_file_variables.
            return failure;
        }
        failure = self.run_retried(Stage::GetSources, "GET_SOURCES_ATTEMPTS");
        if failure.is_none() && needed(&Stage::RestoreCache, &self.spec, false) {
            failure = self.run_retried(Stage::RestoreCache, "RESTORE_CACHE_ATTEMPTS");
        }
        if failure.is_none() && needed(&Stage::DownloadArtifacts, &self.spec, false) {
            failure = self.run_retried(Stage::DownloadArtifacts, "ARTIFACT_DOWNLOAD_ATTEMPTS");
        }
        if self.ctl.aborted.is_some() {
            return failure;
        }
        if failure.is_none() {
            let mut steps = vec!["script".to_owned()];
            steps.extend(self.spec.fixture.steps.iter().map(|s| s.name.clone()));
            for name in steps {
                let stage = Stage::Step(name);
                if !needed(&stage, &self.spec, false) {
                    continue;
                }
                failure = self.run_stage(&stage, Phase::UserStep, 1, false);
                if failure.is_some() || self.ctl.aborted.is_some() || self.ctl.canceled {
                    break;
                }
            }
            if self.ctl.aborted.is_some() {
                return failure;
            }
            if needed(&Stage::AfterScript, &self.spec, false) {
                self.job_status = if self.ctl.canceled {
                    "canceled"
                } else if failure.is_some() {
                    "failed"
                } else {
                    "success"
                };
                if let Some(after) =
                    self.run_stage(&Stage::AfterScript, Phase::AfterScript, 1, false)
                {
                    // AFTER_SCRIPT_IGNORE_ERRORS defaults to true.
                    self.log(&format!(
                        "{YELLOW}WARNING: after_script failed, but job will continue unaffected: {}{RESET}",
                        failure_text(&after)
                    ));
                }
                if self.ctl.aborted.is_some() {
                    return failure;
                }
            }
        }
        let failed = failure.is_some() || self.ctl.canceled;
        if self.job_status == "running" {
            self.job_status = if self.ctl.canceled {
                "canceled"
            } else if failed {
                "failed"
            } else {
                "success"
            };
        }
        let archive = Stage::ArchiveCache { on_failure: failed };
        if needed(&archive, &self.spec, failed) {
            if let Some(err) = self.run_stage(&archive, Phase::AfterScript, 1, failed) {
                // Cache errors only warn in the runner.
                self.log(&format!(
                    "{YELLOW}WARNING: {} failed: {}{RESET}",
                    archive.section_name(),
                    failure_text(&err)
                ));
            }
            if self.ctl.aborted.is_some() {
                return failure;
            }
        }
        let upload = Stage::UploadArtifacts { on_failure: failed };
        if needed(&upload, &self.spec, failed) {
            let err = self.run_stage(&upload, Phase::AfterScript, 1, failed);
            if failure.is_none() {
                failure = err;
            }
            if self.ctl.aborted.is_some() {
                return failure;
            }
        }
        if let Some(err) =
            self.run_stage(&Stage::CleanupFileVariables, Phase::AfterScript, 1, failed)
        {
            self.log(&format!(
                "{YELLOW}WARNING: cleanup_file_variables failed: {}{RESET}",
                failure_text(&err)
            ));
        }
        failure
    }
}

fn prep_failure(failure: Failure) -> PrepError {
    match failure {
        Failure::Build { exit_code } => PrepError {
            outcome: JobOutcome::Failed { exit_code },
            message: format!("exit code {exit_code}"),
            retryable: false,
        },
        Failure::System { message } => JobRun::system(message),
    }
}

fn failure_text(failure: &Failure) -> String {
    match failure {
        Failure::Build { exit_code } => format!("exit code {exit_code}"),
        Failure::System { message } => message.clone(),
    }
}

fn status_word(outcome: &JobOutcome) -> &'static str {
    match outcome {
        JobOutcome::Success => "success",
        JobOutcome::Canceled => "canceled",
        JobOutcome::TimedOut => "timedout",
        JobOutcome::Failed { .. }
        | JobOutcome::ConfigurationError { .. }
        | JobOutcome::SystemFailure { .. } => "failed",
    }
}

/// Go's `time.Duration` spelling for the few values the log prints (`3s`, `200ms`).
fn go_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}
