//! A gitlab-runner 19.x emulator that drives a custom executor exactly as the runner does
//! (see `custom-executor-protocol.md`): per-job temp dir and `response.json`, the exec
//! environment, bash stage scripts in the runner's layout, stage order and skip rules,
//! exit-code mapping, retries, SIGTERM/SIGKILL to process groups, cleanup always.
//!
//! ```no_run
//! use std::time::Duration;
//! use e2e::runner::{JobFixture, Runner, RunnerConfig, JobOutcome};
//! # fn main() -> e2e::Result<()> {
//! let config = RunnerConfig::for_driver("/path/to/driver".as_ref(), &[]);
//! let runner = Runner::new(config)?;
//! let job = JobFixture::from_yaml("name: hello\nscript: [echo READY]\n", ".".as_ref())?;
//! let running = runner.start(&job)?;
//! running.wait_for_line("^READY$", Duration::from_secs(30))?;
//! let result = running.finish()?;
//! assert_eq!(result.outcome, JobOutcome::Success);
//! # Ok(()) }
//! ```

mod config;
mod exec;
mod fixture;
mod job;
mod log;
mod payload;
pub(crate) mod repo;
mod result;
mod script;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use config::{ExecCommand, RunnerConfig};
pub use exec::{StopAction, Trigger};
pub use fixture::{
    Artifacts, Cache, CachePolicy, Dependency, Expectation, Hooks, Image, JobFixture, Project,
    Reports, Source, Step, Variable, When,
};
pub use log::{JobLog, LogLine, Stream, strip_ansi};
pub use result::{ExecKind, ExitInfo, Failure, JobOutcome, JobResult, SentSignal, StageRecord};

use crate::error::{Error, Result};
use exec::{Control, Event, Shared};
use job::{JobParts, JobRun};
use log::RunnerLog;
pub(crate) use payload::slug as ref_slug;
use payload::{DependencyArchive, JobSpec};

/// Per-job options beyond the fixture.
#[derive(Debug, Default)]
pub struct JobOptions {
    /// Line triggers that stop the job.
    pub triggers: Vec<Trigger>,
}

impl JobOptions {
    /// Adds a trigger: when `pattern` matches a line printed by `stage`, do `action`.
    pub fn on_line(mut self, stage: &str, pattern: &str, action: StopAction) -> Result<Self> {
        self.triggers
            .push(Trigger::on_line(Some(stage), pattern, action)?);
        Ok(self)
    }
}

/// The emulated runner. Cheap to share; each started job runs on its own thread.
pub struct Runner {
    config: Arc<RunnerConfig>,
    work_dir: PathBuf,
    // Shared with every JobResult: the dir is removed when the runner and all results that
    // point into it are gone.
    work_tmp: Option<Arc<tempfile::TempDir>>,
    running: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("work_dir", &self.work_dir)
            .finish()
    }
}

fn next_job_id() -> u64 {
    // Ids unique across test processes that run at the same time, so that builds dirs
    // derived from the job id never collide.
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    let counter = NEXT.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let seed = (nanos as u64 ^ u64::from(std::process::id()).rotate_left(20)) % 1_000_000;
        AtomicU64::new(1_000_000 + seed * 1000)
    });
    counter.fetch_add(1, Ordering::SeqCst)
}

fn runner_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

impl Runner {
    /// A runner with `config`. Fails if `run_exec` is empty (the runner's
    /// `custom executor is missing RunExec`).
    pub fn new(config: RunnerConfig) -> Result<Runner> {
        if config.run_exec.exec.as_os_str().is_empty() {
            return Err(Error::Config(
                "custom executor is missing RunExec".to_owned(),
            ));
        }
        let (work_dir, work_tmp) = match &config.work_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
                (dir.clone(), None)
            }
            None => {
                let tmp = tempfile::Builder::new()
                    .prefix("e2e-runner")
                    .tempdir()
                    .map_err(|e| Error::io("creating the runner work dir", e))?;
                (tmp.path().to_path_buf(), Some(Arc::new(tmp)))
            }
        };
        Ok(Runner {
            config: Arc::new(config),
            work_dir,
            work_tmp,
            running: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RunnerConfig {
        &self.config
    }

    /// Starts a job; see [`Runner::start_with`].
    pub fn start(&self, fixture: &JobFixture) -> Result<RunningJob> {
        self.start_with(fixture, JobOptions::default())
    }

    /// Runs a job to the end.
    pub fn run(&self, fixture: &JobFixture) -> Result<JobResult> {
        self.start(fixture)?.finish()
    }

    /// Runs a job with one trigger: `action` as soon as a job-log line of `stage` matches
    /// `pattern`; waits at most `timeout` for the end (see [`RunningJob::finish_within`]).
    pub fn run_stopped_at(
        &self,
        fixture: &JobFixture,
        stage: &str,
        pattern: &str,
        action: StopAction,
        timeout: Duration,
    ) -> Result<JobResult> {
        let options = JobOptions::default().on_line(stage, pattern, action)?;
        self.start_with(fixture, options)?.finish_within(timeout)
    }

    /// Starts a job: builds its repository and dependency archives, then runs the lifecycle
    /// on a new thread.
    pub fn start_with(&self, fixture: &JobFixture, options: JobOptions) -> Result<RunningJob> {
        fixture.validate().map_err(|message| Error::Fixture {
            path: fixture.name.clone(),
            message,
        })?;
        let id = fixture.id.unwrap_or_else(next_job_id);
        let job_dir = self.work_dir.join(format!("job-{id}"));
        if job_dir.exists() {
            std::fs::remove_dir_all(&job_dir)
                .map_err(|e| Error::io(format!("clearing {}", job_dir.display()), e))?;
        }
        let repo = repo::prepare(&fixture.source, &fixture.git_ref, &job_dir.join("repo"))?;
        let dependencies = build_dependencies(fixture, &job_dir.join("dependencies"), id)?;
        let uploaded_dir = job_dir.join("uploaded");
        std::fs::create_dir_all(&uploaded_dir)
            .map_err(|e| Error::io(format!("creating {}", uploaded_dir.display()), e))?;
        // The local stages that "upload" here run as the executor's unprivileged local user: the
        // path to this stand-in for GitLab's artifact store is open to it, as an HTTPS URL is.
        {
            use std::os::unix::fs::PermissionsExt;
            for (d, mode) in [
                (&self.work_dir, 0o755),
                (&job_dir, 0o755),
                (&uploaded_dir, 0o1777),
            ] {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| Error::io(format!("opening {}", d.display()), e))?;
            }
        }
        let concurrent_id = self.running.fetch_add(1, Ordering::SeqCst);
        let spec = JobSpec {
            id,
            token: format!(
                "glcbt-64_emu{:016x}",
                id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ),
            pipeline_id: fixture.pipeline_id.unwrap_or(id / 10),
            fixture: fixture.clone(),
            repo,
            dependencies,
            server_url: self.config.server_url.clone(),
            short_token: self.config.short_token(),
            concurrent_id,
        };
        let job_log = Arc::new(JobLog::new(spec.masks(), self.config.echo_log));
        let runner_log = Arc::new(RunnerLog::default());
        let shared = Arc::new(Shared {
            log: Arc::clone(&job_log),
            runner_log: Arc::clone(&runner_log),
            triggers: options.triggers,
        });
        let (tx, rx) = mpsc::channel();
        let control = tx.clone();
        let ctl = Control::new(rx, tx, Instant::now() + fixture.timeout);
        let run = JobRun::new(JobParts {
            config: Arc::clone(&self.config),
            spec,
            shared,
            runner_log,
            ctl,
            uploaded_dir,
            runner_hostname: runner_hostname(),
            work_tmp: self.work_tmp.clone(),
        });
        let (done_tx, done_rx) = mpsc::channel();
        let running = Arc::clone(&self.running);
        let thread = std::thread::Builder::new()
            .name(format!("job-{id}"))
            .spawn(move || {
                let result = run.run();
                running.fetch_sub(1, Ordering::SeqCst);
                let _ = done_tx.send(result);
            })
            .map_err(|e| Error::io("starting the job thread", e))?;
        Ok(RunningJob {
            id,
            log: job_log,
            control,
            done: done_rx,
            thread: Some(thread),
            finished: false,
        })
    }
}

/// Packs each dependency's files into a tar archive, the stand-in for GitLab's artifact
/// download.
fn build_dependencies(
    fixture: &JobFixture,
    dir: &Path,
    job_id: u64,
) -> Result<Vec<DependencyArchive>> {
    let mut out = Vec::new();
    for (index, dep) in fixture.dependencies.iter().enumerate() {
        let content = dir.join(format!("dep-{index}"));
        for (path, text) in &dep.files {
            repo::write_file(&content.join(path), text)?;
        }
        let archive = dir.join(format!("dep-{index}.tar"));
        let status = Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&content)
            .arg(".")
            .status()
            .map_err(|e| Error::io("running tar for a dependency archive", e))?;
        if !status.success() {
            return Err(Error::Config(format!(
                "tar failed to pack dependency {}",
                dep.name
            )));
        }
        let size = std::fs::metadata(&archive)
            .map(|m| m.len())
            .map_err(|e| Error::io(format!("stat {}", archive.display()), e))?;
        out.push(DependencyArchive {
            name: dep.name.clone(),
            id: dep.id.unwrap_or(job_id.saturating_sub(100 + index as u64)),
            archive,
            size,
        });
    }
    Ok(out)
}

/// A job in progress.
#[derive(Debug)]
pub struct RunningJob {
    id: u64,
    log: Arc<JobLog>,
    control: Sender<Event>,
    done: Receiver<JobResult>,
    thread: Option<std::thread::JoinHandle<()>>,
    finished: bool,
}

impl RunningJob {
    /// The job id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The live job log.
    pub fn log(&self) -> &JobLog {
        &self.log
    }

    /// Blocks until a job-log line (colours stripped) matches `pattern`, returning it; fails
    /// after `timeout`, or as soon as the job ends without such a line.
    pub fn wait_for_line(&self, pattern: &str, timeout: Duration) -> Result<String> {
        self.log.wait_for_line(pattern, timeout)
    }

    fn send(&self, action: StopAction) {
        // The job may already be over; then there is nothing to stop.
        let _ = self.control.send(Event::Stop(action));
    }

    /// GitLab's "cancel" (see [`StopAction::Cancel`]).
    pub fn cancel(&self) {
        self.send(StopAction::Cancel);
    }

    /// Cancels the job context (see [`StopAction::Abort`]).
    pub fn abort(&self) {
        self.send(StopAction::Abort);
    }

    /// SIGKILLs the current call's process group (see [`StopAction::KillExecutor`]).
    pub fn kill_executor(&self) {
        self.send(StopAction::KillExecutor);
    }

    /// Waits for the job to end. The job's own timeouts bound the wait.
    pub fn finish(mut self) -> Result<JobResult> {
        let result = self
            .done
            .recv()
            .map_err(|_| Error::Config("the job thread ended without a result".to_owned()));
        self.finished = true;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        result
    }

    /// Waits at most `timeout` for the job to end; on timeout the job is aborted (so no
    /// process is left running) and an error is returned.
    pub fn finish_within(mut self, timeout: Duration) -> Result<JobResult> {
        match self.done.recv_timeout(timeout) {
            Ok(result) => {
                self.finished = true;
                if let Some(thread) = self.thread.take() {
                    let _ = thread.join();
                }
                Ok(result)
            }
            Err(_) => Err(Error::Timeout(format!(
                "job {} still running after {timeout:?}; log so far:\n{}",
                self.id,
                self.log.text()
            ))),
        }
    }
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        // A test that bails out early must not leave the executor running.
        if !self.finished {
            self.send(StopAction::Abort);
        }
    }
}
