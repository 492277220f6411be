//! The live job log and the runner log.
//!
//! Exec output is appended line by line from reader threads while the job runs, so tests can
//! block on a line (with a deadline) instead of sleeping. Like gitlab-runner, the job log masks
//! masked variable values and the job token; the runner log (cleanup output) is not masked.

use std::io::Write;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use regex::Regex;

use crate::error::{Error, Result};

/// Where a job-log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The exec's stdout.
    Stdout,
    /// The exec's stderr.
    Stderr,
    /// The runner itself (headers, section markers, status lines).
    Runner,
}

/// One job-log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The exec call that printed it (`config`, `prepare`, a run stage), `None` for runner
    /// lines outside a call.
    pub stage: Option<String>,
    /// Which stream.
    pub stream: Stream,
    /// The text as GitLab shows it (masked).
    pub text: String,
    /// The text before masking.
    pub unmasked: String,
}

#[derive(Default)]
struct LogState {
    lines: Vec<LogLine>,
    finished: bool,
}

/// The job log of one job, shared between the job thread, reader threads and the test.
pub struct JobLog {
    state: Mutex<LogState>,
    changed: Condvar,
    masks: Vec<String>,
    echo: bool,
}

impl std::fmt::Debug for JobLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobLog")
            .field("lines", &self.lock().lines.len())
            .finish()
    }
}

impl JobLog {
    /// A log that masks every string in `masks` (empty strings are ignored).
    pub(crate) fn new(masks: Vec<String>, echo: bool) -> Self {
        let mut masks: Vec<String> = masks.into_iter().filter(|m| !m.is_empty()).collect();
        // Longest first, so a secret that contains another one is masked as a whole.
        masks.sort_by_key(|m| std::cmp::Reverse(m.len()));
        JobLog {
            state: Mutex::new(LogState::default()),
            changed: Condvar::new(),
            masks,
            echo,
        }
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        // A reader thread that panicked while holding the lock leaves consistent data (lines
        // are pushed whole), so poisoning is not a reason to lose the log.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one line.
    pub(crate) fn push(&self, stage: Option<&str>, stream: Stream, text: &str) {
        let mut masked = text.to_owned();
        for secret in &self.masks {
            if masked.contains(secret.as_str()) {
                masked = masked.replace(secret.as_str(), "[MASKED]");
            }
        }
        if self.echo {
            let mut out = std::io::stdout().lock();
            // The demo's stdout going away must not kill the job; the log is still recorded.
            let _ = writeln!(out, "{masked}");
            let _ = out.flush();
        }
        let mut state = self.lock();
        state.lines.push(LogLine {
            stage: stage.map(str::to_owned),
            stream,
            text: masked,
            unmasked: text.to_owned(),
        });
        drop(state);
        self.changed.notify_all();
    }

    /// A runner line (header, status).
    pub(crate) fn runner(&self, text: &str) {
        self.push(None, Stream::Runner, text);
    }

    /// Marks the log complete: waiters stop waiting for more lines.
    pub(crate) fn finish(&self) {
        self.lock().finished = true;
        self.changed.notify_all();
    }

    /// A copy of all lines so far.
    pub fn lines(&self) -> Vec<LogLine> {
        self.lock().lines.clone()
    }

    /// The masked text so far.
    pub fn text(&self) -> String {
        join(self.lock().lines.iter().map(|l| l.text.as_str()))
    }

    /// The unmasked text so far.
    pub fn unmasked_text(&self) -> String {
        join(self.lock().lines.iter().map(|l| l.unmasked.as_str()))
    }

    /// Blocks until a line whose colour-stripped text matches `pattern` is in the log
    /// (already or later), and returns that plain text. Fails when `timeout` passes or the
    /// job finishes without such a line; the error shows the end of the log.
    pub fn wait_for_line(&self, pattern: &str, timeout: Duration) -> Result<String> {
        let re = Regex::new(pattern).map_err(|e| Error::Pattern {
            pattern: pattern.to_owned(),
            message: e.to_string(),
        })?;
        let deadline = Instant::now() + timeout;
        let mut checked = 0;
        let mut state = self.lock();
        loop {
            for line in &state.lines[checked..] {
                let plain = strip_ansi(&line.text);
                if re.is_match(&plain) {
                    return Ok(plain);
                }
            }
            checked = state.lines.len();
            let what = format!("a job-log line matching {pattern:?}");
            if state.finished {
                return Err(Error::JobFinished(format!(
                    "{what}; log tail:\n{}",
                    tail(&state.lines)
                )));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(format!(
                    "{what} after {timeout:?}; log tail:\n{}",
                    tail(&state.lines)
                )));
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

fn join<'a>(lines: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn tail(lines: &[LogLine]) -> String {
    let start = lines.len().saturating_sub(20);
    join(lines[start..].iter().map(|l| l.text.as_str()))
}

/// The runner's own log (cleanup output and harness warnings), unmasked.
#[derive(Debug, Default)]
pub(crate) struct RunnerLog {
    lines: Mutex<Vec<String>>,
}

impl RunnerLog {
    pub(crate) fn push(&self, line: String) {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line);
    }

    pub(crate) fn text(&self) -> String {
        join(
            self.lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(String::as_str),
        )
    }
}

/// Bold cyan, the runner's stage-header colour.
pub(crate) const CYAN: &str = "\x1b[36;1m";
/// Bold red, for `ERROR:` lines.
pub(crate) const RED: &str = "\x1b[31;1m";
/// Bold green, for `Job succeeded`.
pub(crate) const GREEN: &str = "\x1b[32;1m";
/// Yellow, for `WARNING:` lines.
pub(crate) const YELLOW: &str = "\x1b[0;33m";
/// Colour reset.
pub(crate) const RESET: &str = "\x1b[0;m";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `\e[0Ksection_start:<ts>:<name>\r\e[0K<header>` (protocol §13).
pub(crate) fn section_start(name: &str, header: &str) -> String {
    format!(
        "\x1b[0Ksection_start:{}:{name}\r\x1b[0K{CYAN}{header}{RESET}",
        unix_now()
    )
}

/// `\e[0Ksection_end:<ts>:<name>\r\e[0K`.
pub(crate) fn section_end(name: &str) -> String {
    format!("\x1b[0Ksection_end:{}:{name}\r\x1b[0K", unix_now())
}

/// Removes ANSI escapes and section markers, leaving what a reader sees.
pub fn strip_ansi(text: &str) -> String {
    static MARKER: std::sync::OnceLock<Option<Regex>> = std::sync::OnceLock::new();
    // The marker is `section_(start|end):<ts>:<name>[opts]\r`; it must go before the escapes
    // are stripped, because the `\r` is what separates the name from the header.
    let marker = MARKER.get_or_init(|| {
        Regex::new(r"section_(?:start|end):[0-9]+:[A-Za-z0-9_.-]+(?:\[[^\]]*\])?\r").ok()
    });
    let text = match marker {
        Some(re) => re.replace_all(text, ""),
        None => std::borrow::Cow::Borrowed(text),
    };
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // CSI: parameters and intermediates up to a final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        if c == '\r' {
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_markers_and_colours_are_stripped() {
        let start = section_start("get_sources", "Executing \"get_sources\" stage");
        assert_eq!(strip_ansi(&start), "Executing \"get_sources\" stage");
        assert_eq!(strip_ansi(&section_end("get_sources")), "");
        assert_eq!(strip_ansi("\x1b[32;1m$ echo hi\x1b[0;m"), "$ echo hi");
    }

    #[test]
    fn masks_longest_secret_first() {
        let log = JobLog::new(vec!["abc".into(), "abcdef".into()], false);
        log.runner("x abcdef y abc");
        assert_eq!(log.text(), "x [MASKED] y [MASKED]\n");
        assert_eq!(log.unmasked_text(), "x abcdef y abc\n");
    }

    #[test]
    fn wait_for_line_sees_lines_pushed_later_and_stops_at_finish() {
        let log = std::sync::Arc::new(JobLog::new(Vec::new(), false));
        let writer = std::sync::Arc::clone(&log);
        let t = std::thread::spawn(move || {
            writer.runner("first");
            writer.runner("READY now");
            writer.finish();
        });
        let line = log
            .wait_for_line("^READY", Duration::from_secs(10))
            .unwrap();
        assert_eq!(line, "READY now");
        t.join().unwrap();
        let err = log
            .wait_for_line("never", Duration::from_secs(10))
            .unwrap_err();
        assert!(matches!(err, Error::JobFinished(_)), "{err}");
    }

    #[test]
    fn wait_for_line_times_out() {
        let log = JobLog::new(Vec::new(), false);
        let err = log
            .wait_for_line("x", Duration::from_millis(50))
            .unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err}");
    }
}
