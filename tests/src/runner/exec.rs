//! One exec call the way gitlab-runner makes it (protocol §4, §6): its own process group,
//! stdin from /dev/null, stdout/stderr streamed line by line, and on cancel or timeout SIGTERM
//! to the whole group, SIGKILL after `graceful_kill_timeout`, giving up after
//! `force_kill_timeout`.
//!
//! All waiting happens on one channel per job: the child's exit, reader EOFs and stop requests
//! (from the test, from line triggers, from timers) are events, so the job thread reacts to
//! whichever comes first without polling or sleeping.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use regex::Regex;

use super::config::ExecCommand;
use super::log::{JobLog, RunnerLog, Stream, strip_ansi};
use super::result::{ExecKind, ExitInfo, Failure, SentSignal, StageRecord};
use crate::error::{Error, Result};

/// What a test (or a trigger) asks the runner to do to a running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAction {
    /// GitLab's "canceling": during a user step only that step gets SIGTERM, then
    /// after_script, the on-failure stages and cleanup_file_variables still run. Before the
    /// user steps it behaves like [`StopAction::Abort`]. Status: canceled.
    Cancel,
    /// The job context is cancelled: SIGTERM to the current call, every later run stage
    /// skipped, cleanup_exec still runs. Status: canceled.
    Abort,
    /// SIGKILL to the current call's process group at once, as if the runner process died
    /// and took its children with it; later run stages are skipped, cleanup_exec still runs
    /// (as a restarted runner would). Status: system failure.
    KillExecutor,
}

/// "When a line matching `pattern` appears in the output of `stage`, do `action`" (once).
#[derive(Debug)]
pub struct Trigger {
    stage: Option<String>,
    pattern: Regex,
    action: StopAction,
    fired: AtomicBool,
}

impl Trigger {
    /// A trigger on the output of `stage` (`config`, `prepare`, a run stage name as sent,
    /// e.g. `build_script`; `step_script` is accepted for `build_script`), or of any call when
    /// `stage` is `None`. `pattern` is matched against the colour-stripped line.
    pub fn on_line(stage: Option<&str>, pattern: &str, action: StopAction) -> Result<Trigger> {
        let pattern = Regex::new(pattern).map_err(|e| Error::Pattern {
            pattern: pattern.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Trigger {
            stage: stage.map(|s| {
                if s == "step_script" {
                    "build_script".to_owned()
                } else {
                    s.to_owned()
                }
            }),
            pattern,
            action,
            fired: AtomicBool::new(false),
        })
    }

    fn check(&self, stage: &str, line: &str) -> Option<StopAction> {
        if self.stage.as_deref().is_some_and(|s| s != stage) || !self.pattern.is_match(line) {
            return None;
        }
        // Fire once: a trigger models a single cancel click, not one per matching line.
        (!self.fired.swap(true, Ordering::SeqCst)).then_some(self.action)
    }
}

/// Everything that wakes the job thread.
#[derive(Debug)]
pub(crate) enum Event {
    Stop(StopAction),
    Exited {
        seq: u64,
        status: std::io::Result<ExitStatus>,
    },
    ReaderDone {
        seq: u64,
    },
}

/// Where a stream of an exec call goes (protocol §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    /// The job log.
    JobLog,
    /// The runner log, with a `cleanup_std=out|err` prefix.
    RunnerLog,
    /// Captured, never shown (config_exec stdout).
    Capture,
}

/// State shared with reader threads.
pub(crate) struct Shared {
    pub(crate) log: Arc<JobLog>,
    pub(crate) runner_log: Arc<RunnerLog>,
    pub(crate) triggers: Vec<Trigger>,
}

/// Why the job context ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AbortReason {
    Canceled,
    TimedOut,
    RunnerDied,
}

/// Which context a call runs in; decides what a stop request does to it (protocol §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// config_exec, prepare_exec, and the run stages before the user steps.
    BeforeScript,
    /// A user step.
    UserStep,
    /// after_script and the stages after it.
    AfterScript,
    /// cleanup_exec: runs on a background context, job stops do not reach it.
    Cleanup,
}

/// What to do to the current process after a stop request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Termination {
    None,
    Term,
    Kill,
}

/// The job thread's view of stop requests and deadlines.
pub(crate) struct Control {
    pub(crate) rx: Receiver<Event>,
    pub(crate) tx: Sender<Event>,
    pub(crate) aborted: Option<AbortReason>,
    pub(crate) canceled: bool,
    pub(crate) job_deadline: Instant,
    seq: u64,
}

impl Control {
    pub(crate) fn new(rx: Receiver<Event>, tx: Sender<Event>, job_deadline: Instant) -> Self {
        Control {
            rx,
            tx,
            aborted: None,
            canceled: false,
            job_deadline,
            seq: 0,
        }
    }

    fn abort(&mut self, reason: AbortReason) {
        // The first reason wins: a kill after a timeout does not turn it into a cancel.
        self.aborted.get_or_insert(reason);
    }

    /// Records a stop request and says what it means for a call in `phase`.
    pub(crate) fn apply_stop(&mut self, action: StopAction, phase: Phase) -> Termination {
        match (action, phase) {
            (_, Phase::Cleanup) => Termination::None,
            (StopAction::Cancel, Phase::UserStep) => {
                self.canceled = true;
                Termination::Term
            }
            (StopAction::Cancel, Phase::AfterScript) => {
                self.canceled = true;
                Termination::None
            }
            (StopAction::Cancel | StopAction::Abort, _) => {
                self.abort(AbortReason::Canceled);
                Termination::Term
            }
            (StopAction::KillExecutor, _) => {
                self.abort(AbortReason::RunnerDied);
                Termination::Kill
            }
        }
    }

    /// Applies stop requests that arrived while no call was running, and the job deadline.
    pub(crate) fn drain(&mut self, phase: Phase) {
        while let Ok(event) = self.rx.try_recv() {
            if let Event::Stop(action) = event {
                self.apply_stop(action, phase);
            }
        }
        if phase != Phase::Cleanup && Instant::now() >= self.job_deadline {
            self.abort(AbortReason::TimedOut);
        }
    }

    /// Waits for `duration` unless the job is stopped first (retry pauses).
    pub(crate) fn pause(&mut self, duration: Duration, phase: Phase) {
        let until = Instant::now() + duration;
        loop {
            self.drain(phase);
            if self.aborted.is_some() {
                return;
            }
            let now = Instant::now();
            if now >= until {
                return;
            }
            let wake = until.min(self.job_deadline);
            match self.rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(Event::Stop(action)) => {
                    self.apply_stop(action, phase);
                }
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// One call to make.
pub(crate) struct Call<'a> {
    pub(crate) kind: ExecKind,
    pub(crate) name: String,
    pub(crate) attempt: u32,
    pub(crate) command: &'a ExecCommand,
    pub(crate) extra_args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: &'a Path,
    pub(crate) stdout: Output,
    pub(crate) stderr: Output,
    pub(crate) phase: Phase,
    /// The call's own timeout (exec timeouts, after_script); the job deadline applies on
    /// top of it except in after_script and cleanup.
    pub(crate) own_timeout: Duration,
    pub(crate) job_deadline_applies: bool,
    pub(crate) exit_code_file: PathBuf,
}

/// Kill timeouts from the runner config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KillTimeouts {
    pub(crate) graceful: Duration,
    pub(crate) force: Duration,
    pub(crate) drain: Duration,
}

/// The record of a call and its captured stdout (config_exec only).
pub(crate) struct CallResult {
    pub(crate) record: StageRecord,
    pub(crate) captured: Vec<u8>,
}

enum KillState {
    Running,
    TermSent(Instant),
    KillSent(Instant),
}

/// Makes one call and waits for it, honouring stops, deadlines and the kill escalation.
pub(crate) fn run_call(
    call: Call<'_>,
    ctl: &mut Control,
    shared: &Arc<Shared>,
    timeouts: KillTimeouts,
) -> CallResult {
    ctl.seq += 1;
    let seq = ctl.seq;
    let started = Instant::now();
    let command_line: Vec<String> =
        std::iter::once(call.command.exec.to_string_lossy().into_owned())
            .chain(call.command.args.iter().cloned())
            .chain(call.extra_args.iter().cloned())
            .collect();
    let mut cmd = Command::new(&call.command.exec);
    cmd.args(&call.command.args)
        .args(&call.extra_args)
        .current_dir(call.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Later entries override earlier ones, the same "last value wins" rule as Go's os/exec.
    for (key, value) in &call.env {
        cmd.env(key, value);
    }
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let message = format!("starting {}: {e}", call.command.exec.display());
            return CallResult {
                record: StageRecord {
                    kind: call.kind,
                    name: call.name,
                    attempt: call.attempt,
                    exit: ExitInfo::SpawnFailed(message.clone()),
                    failure: Some(Failure::System { message }),
                    exit_code_file: read_exit_code_file(&call.exit_code_file),
                    duration: started.elapsed(),
                    signals: Vec::new(),
                    output_left_open: false,
                    command: command_line,
                    env: call.env,
                    cwd: call.cwd.to_path_buf(),
                },
                captured: Vec::new(),
            };
        }
    };
    let pid = child.id();
    let pgid = i32::try_from(pid).map(Pid::from_raw).ok();
    let captured = Arc::new(Mutex::new(Vec::new()));
    let mut readers = 0;
    if let Some(out) = child.stdout.take() {
        readers += 1;
        spawn_reader(
            out,
            seq,
            &call,
            Stream::Stdout,
            call.stdout,
            shared,
            ctl,
            &captured,
        );
    }
    if let Some(err) = child.stderr.take() {
        readers += 1;
        spawn_reader(
            err,
            seq,
            &call,
            Stream::Stderr,
            call.stderr,
            shared,
            ctl,
            &captured,
        );
    }
    let waiter_tx = ctl.tx.clone();
    std::thread::spawn(move || {
        let status = child.wait();
        // The job thread may have given up on this call and moved on; nobody to tell then.
        let _ = waiter_tx.send(Event::Exited { seq, status });
    });

    let own_deadline = started + call.own_timeout;
    let context_deadline = if call.job_deadline_applies {
        own_deadline.min(ctl.job_deadline)
    } else {
        own_deadline
    };
    let mut kill = KillState::Running;
    let mut signals = Vec::new();
    let mut readers_done = 0;
    let mut own_timeout_hit = false;
    let send = |sig: Signal, signals: &mut Vec<SentSignal>| {
        if let Some(pgid) = pgid {
            // ESRCH (group already gone) is fine: the exit event is on its way.
            let _ = killpg(pgid, sig);
        }
        signals.push(SentSignal {
            signal: if sig == Signal::SIGKILL {
                "SIGKILL"
            } else {
                "SIGTERM"
            },
            after: started.elapsed(),
        });
    };
    let exit = loop {
        let wake = match kill {
            KillState::Running => context_deadline,
            KillState::TermSent(at) => at + timeouts.graceful,
            KillState::KillSent(at) => at + timeouts.force,
        };
        let event = ctl
            .rx
            .recv_timeout(wake.saturating_duration_since(Instant::now()));
        let terminate = match event {
            Ok(Event::Exited { seq: s, status }) if s == seq => {
                break match status {
                    Ok(status) => exit_info(status),
                    Err(e) => ExitInfo::SpawnFailed(format!("waiting for the process: {e}")),
                };
            }
            Ok(Event::ReaderDone { seq: s }) if s == seq => {
                readers_done += 1;
                Termination::None
            }
            Ok(Event::Exited { .. } | Event::ReaderDone { .. }) => Termination::None,
            Ok(Event::Stop(action)) => ctl.apply_stop(action, call.phase),
            Err(RecvTimeoutError::Timeout) => match kill {
                KillState::Running => {
                    if call.job_deadline_applies && Instant::now() >= ctl.job_deadline {
                        ctl.abort(AbortReason::TimedOut);
                    } else {
                        own_timeout_hit = true;
                    }
                    Termination::Term
                }
                KillState::TermSent(_) => Termination::Kill,
                KillState::KillSent(_) => {
                    let line = format!(
                        "WARNING: failed to kill process PID={pid}, likely process is dormant"
                    );
                    shared.log.push(Some(&call.name), Stream::Runner, &line);
                    shared.runner_log.push(line);
                    break ExitInfo::Abandoned;
                }
            },
            Err(RecvTimeoutError::Disconnected) => break ExitInfo::Abandoned,
        };
        match (terminate, &kill) {
            (Termination::Term, KillState::Running) => {
                send(Signal::SIGTERM, &mut signals);
                kill = KillState::TermSent(Instant::now());
            }
            (Termination::Kill, KillState::Running | KillState::TermSent(_)) => {
                send(Signal::SIGKILL, &mut signals);
                kill = KillState::KillSent(Instant::now());
            }
            _ => {}
        }
    };

    // Collect the rest of the output. A process left in the group can hold the pipes open;
    // the runner would hang on it, the emulator notes it and moves on.
    let mut output_left_open = false;
    if exit != ExitInfo::Abandoned {
        let drain_deadline = Instant::now() + timeouts.drain;
        while readers_done < readers {
            match ctl
                .rx
                .recv_timeout(drain_deadline.saturating_duration_since(Instant::now()))
            {
                Ok(Event::ReaderDone { seq: s }) if s == seq => readers_done += 1,
                Ok(Event::Stop(action)) => {
                    ctl.apply_stop(action, call.phase);
                }
                Ok(_) => {}
                Err(_) => {
                    output_left_open = true;
                    shared.runner_log.push(format!(
                        "WARNING: {}: output still open {:?} after the process exited \
                         (a child process outlived it)",
                        call.name, timeouts.drain
                    ));
                    break;
                }
            }
        }
    }

    let exit_code_file = read_exit_code_file(&call.exit_code_file);
    let mut failure = classify(&exit, exit_code_file.as_deref(), &call.name, pid);
    if own_timeout_hit && failure.is_some() {
        failure = Some(Failure::System {
            message: format!("{}: timed out after {:?}", call.name, call.own_timeout),
        });
    }
    let captured = std::mem::take(&mut *captured.lock().unwrap_or_else(|p| p.into_inner()));
    CallResult {
        record: StageRecord {
            kind: call.kind,
            name: call.name,
            attempt: call.attempt,
            exit,
            failure,
            exit_code_file,
            duration: started.elapsed(),
            signals,
            output_left_open,
            command: command_line,
            env: call.env,
            cwd: call.cwd.to_path_buf(),
        },
        captured,
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "a private helper with one caller"
)]
fn spawn_reader(
    pipe: impl Read + Send + 'static,
    seq: u64,
    call: &Call<'_>,
    stream: Stream,
    output: Output,
    shared: &Arc<Shared>,
    ctl: &Control,
    captured: &Arc<Mutex<Vec<u8>>>,
) {
    let shared = Arc::clone(shared);
    let tx = ctl.tx.clone();
    let stage = call.name.clone();
    let captured = Arc::clone(captured);
    let prefix = match stream {
        Stream::Stderr => "cleanup_std=err",
        Stream::Stdout | Stream::Runner => "cleanup_std=out",
    };
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        if output == Output::Capture {
            // Appended chunk by chunk, so that what was printed is kept even if a leftover
            // process holds the pipe open past the drain timeout.
            let mut chunk = [0u8; 8192];
            loop {
                match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => captured
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend_from_slice(&chunk[..n]),
                }
            }
        } else {
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                let line = String::from_utf8_lossy(&buf);
                match output {
                    Output::JobLog => shared.log.push(Some(&stage), stream, &line),
                    Output::RunnerLog => shared.runner_log.push(format!("{prefix} {line}")),
                    Output::Capture => {}
                }
                let plain = strip_ansi(&line);
                for trigger in &shared.triggers {
                    if let Some(action) = trigger.check(&stage, &plain) {
                        let _ = tx.send(Event::Stop(action));
                    }
                }
            }
        }
        let _ = tx.send(Event::ReaderDone { seq });
    });
}

fn exit_info(status: ExitStatus) -> ExitInfo {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitInfo::Code(code),
        (None, Some(signal)) => ExitInfo::Signal(signal),
        (None, None) => ExitInfo::Code(-1),
    }
}

/// The first line of BUILD_EXIT_CODE_FILE, newline stripped, if the file exists.
fn read_exit_code_file(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    Some(text.split('\n').next().unwrap_or("").to_owned())
}

/// The runner's exit-code mapping (protocol §5).
pub(crate) fn classify(
    exit: &ExitInfo,
    exit_code_file: Option<&str>,
    name: &str,
    pid: u32,
) -> Option<Failure> {
    match exit {
        ExitInfo::Code(0) => None,
        ExitInfo::Code(1) => Some(match exit_code_file {
            None => Failure::Build { exit_code: 1 },
            // strconv.Atoi: optional sign, digits, no whitespace; i32::from_str agrees.
            Some(line) => match line.parse::<i32>() {
                Ok(exit_code) => Failure::Build { exit_code },
                Err(_) => Failure::System {
                    message: format!(
                        "unknown Custom executor executable exit code 2; \
                         {name}: BUILD_EXIT_CODE_FILE first line {line:?} is not an integer"
                    ),
                },
            },
        }),
        ExitInfo::Code(2) => Some(Failure::System {
            message: format!("{name}: exit status 2"),
        }),
        ExitInfo::Code(code) => Some(Failure::System {
            message: format!(
                "unknown Custom executor executable exit code {code}; \
                 {name}: executable execution terminated with: exit status {code}"
            ),
        }),
        ExitInfo::Signal(signal) => Some(Failure::System {
            message: format!(
                "unknown Custom executor executable exit code -1; \
                 {name}: executable execution terminated with: signal {signal}"
            ),
        }),
        ExitInfo::SpawnFailed(message) => Some(Failure::System {
            message: message.clone(),
        }),
        ExitInfo::Abandoned => Some(Failure::System {
            message: format!("{name}: failed to kill process PID={pid}, likely process is dormant"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_mapping() {
        let c = |exit, file| classify(&exit, file, "build_script", 1);
        assert_eq!(c(ExitInfo::Code(0), Some("7")), None);
        assert_eq!(
            c(ExitInfo::Code(1), None),
            Some(Failure::Build { exit_code: 1 })
        );
        assert_eq!(
            c(ExitInfo::Code(1), Some("42")),
            Some(Failure::Build { exit_code: 42 })
        );
        for bad in [" 3", "3 ", "x", "", "3.0"] {
            assert!(
                matches!(
                    c(ExitInfo::Code(1), Some(bad)),
                    Some(Failure::System { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            c(ExitInfo::Code(2), None),
            Some(Failure::System { .. })
        ));
        assert!(matches!(
            c(ExitInfo::Code(255), None),
            Some(Failure::System { .. })
        ));
        assert!(matches!(
            c(ExitInfo::Signal(9), None),
            Some(Failure::System { .. })
        ));
    }

    #[test]
    fn trigger_fires_once_and_only_for_its_stage() {
        let t = Trigger::on_line(Some("step_script"), "^READY$", StopAction::Cancel).unwrap();
        assert_eq!(t.check("get_sources", "READY"), None);
        assert_eq!(t.check("build_script", "READY"), Some(StopAction::Cancel));
        assert_eq!(t.check("build_script", "READY"), None);
    }
}
