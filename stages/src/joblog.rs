//! What the executor prints into the GitLab job log: collapsible sections, coloured status lines
//! with elapsed time, and plain lines, flushed as they are written so the log is live.
//!
//! Section and colour syntax follows GitLab's job-log parser (protocol reference §13).

use std::io::Write;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const GREEN: &str = "\x1b[32;1m";
const YELLOW: &str = "\x1b[0;33m";
const RED: &str = "\x1b[31;1m";
const CYAN: &str = "\x1b[36;1m";
const RESET: &str = "\x1b[0;m";

/// The job log (stdout of `run`), with the clock used for elapsed times.
#[derive(Debug)]
pub struct JobLog {
    started: Instant,
}

impl Default for JobLog {
    fn default() -> Self {
        JobLog {
            started: Instant::now(),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Section names may only use `[a-zA-Z0-9_.-]`.
fn section_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl JobLog {
    /// A log whose elapsed times count from now.
    pub fn new() -> Self {
        Self::default()
    }

    fn emit(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        // A closed stdout means the runner is gone; there is nobody left to tell.
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    fn elapsed(&self) -> String {
        let s = self.started.elapsed().as_secs();
        format!("{:02}:{:02}", s / 60, s % 60)
    }

    /// Opens a collapsible section.
    pub fn section_start(&self, name: &str, header: &str, collapsed: bool) {
        let opts = if collapsed { "[collapsed=true]" } else { "" };
        self.emit(&format!(
            "\x1b[0Ksection_start:{}:{}{opts}\r\x1b[0K{CYAN}{header}{RESET}\n",
            unix_now(),
            section_name(name)
        ));
    }

    /// Closes a section.
    pub fn section_end(&self, name: &str) {
        self.emit(&format!(
            "\x1b[0Ksection_end:{}:{}\r\x1b[0K",
            unix_now(),
            section_name(name)
        ));
    }

    /// A plain line (remote output).
    pub fn line(&self, text: &str) {
        self.emit(&format!("{text}\n"));
    }

    /// A green status line with the elapsed time.
    pub fn notice(&self, text: &str) {
        self.emit(&format!("{GREEN}[{}] {text}{RESET}\n", self.elapsed()));
    }

    /// A yellow warning line.
    pub fn warn(&self, text: &str) {
        self.emit(&format!("{YELLOW}WARNING: {text}{RESET}\n"));
    }

    /// A red error line.
    pub fn error(&self, text: &str) {
        self.emit(&format!("{RED}ERROR: {text}{RESET}\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::section_name;

    #[test]
    fn section_names_are_sanitised() {
        assert_eq!(section_name("train:algo 1"), "train_algo_1");
        assert_eq!(section_name("a.b-c_d"), "a.b-c_d");
    }
}
