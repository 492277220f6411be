//! What the executor prints into the GitLab job log: collapsible sections, coloured status lines
//! with elapsed time, and plain lines, flushed as they are written so the log is live.
//!
//! Everything goes through one writer as [`Event`]s rendered in order, to a [`Sink`]: stdout in
//! production, a shared buffer in tests (so a test can see, or snapshot, what a wait printed).
//! Section and colour syntax follows GitLab's job-log parser: `section_start:<unix ts>:<name>`
//! with names in `[a-zA-Z0-9_.-]`, and the runner's ANSI colours.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const GREEN: &str = "\x1b[32;1m";
const YELLOW: &str = "\x1b[0;33m";
const RED: &str = "\x1b[31;1m";
const CYAN: &str = "\x1b[36;1m";
const RESET: &str = "\x1b[0;m";

/// One thing the job log shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A collapsible section opens.
    SectionStart {
        /// Its name (sanitised to GitLab's alphabet when rendered).
        name: &'a str,
        /// The header line.
        header: &'a str,
        /// Collapsed by default.
        collapsed: bool,
    },
    /// The section `name` closes.
    SectionEnd(&'a str),
    /// A plain line (remote output).
    Line(&'a str),
    /// A green status line with the elapsed time.
    Notice(&'a str),
    /// A yellow warning line.
    Warn(&'a str),
    /// A red error line.
    Error(&'a str),
}

/// Where rendered events go.
#[derive(Debug, Clone, Default)]
pub enum Sink {
    /// The process's stdout: the job log in production.
    #[default]
    Stdout,
    /// A buffer tests read back.
    Capture(Arc<Mutex<String>>),
}

/// The job log, with the clock used for elapsed times.
#[derive(Debug, Clone)]
pub struct JobLog {
    started: Instant,
    sink: Sink,
}

impl Default for JobLog {
    fn default() -> Self {
        JobLog {
            started: Instant::now(),
            sink: Sink::Stdout,
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
    /// A log on stdout whose elapsed times count from now.
    pub fn new() -> Self {
        Self::default()
    }

    /// A log that renders into a buffer, and the buffer.
    pub fn capture() -> (Self, Arc<Mutex<String>>) {
        let buffer = Arc::new(Mutex::new(String::new()));
        (
            JobLog {
                started: Instant::now(),
                sink: Sink::Capture(buffer.clone()),
            },
            buffer,
        )
    }

    /// Renders one event to the sink.
    pub fn emit(&self, event: Event<'_>) {
        let text = self.render(event);
        match &self.sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                // A closed stdout means the runner is gone; there is nobody left to tell.
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
            Sink::Capture(buffer) => {
                if let Ok(mut b) = buffer.lock() {
                    b.push_str(&text);
                }
            }
        }
    }

    fn elapsed(&self) -> String {
        let s = self.started.elapsed().as_secs();
        format!("{:02}:{:02}", s / 60, s % 60)
    }

    fn render(&self, event: Event<'_>) -> String {
        match event {
            Event::SectionStart {
                name,
                header,
                collapsed,
            } => {
                let opts = if collapsed { "[collapsed=true]" } else { "" };
                format!(
                    "\x1b[0Ksection_start:{}:{}{opts}\r\x1b[0K{CYAN}{header}{RESET}\n",
                    unix_now(),
                    section_name(name)
                )
            }
            Event::SectionEnd(name) => format!(
                "\x1b[0Ksection_end:{}:{}\r\x1b[0K",
                unix_now(),
                section_name(name)
            ),
            Event::Line(text) => format!("{text}\n"),
            Event::Notice(text) => format!("{GREEN}[{}] {text}{RESET}\n", self.elapsed()),
            Event::Warn(text) => format!("{YELLOW}WARNING: {text}{RESET}\n"),
            Event::Error(text) => format!("{RED}ERROR: {text}{RESET}\n"),
        }
    }

    /// Opens a collapsible section.
    pub fn section_start(&self, name: &str, header: &str, collapsed: bool) {
        self.emit(Event::SectionStart {
            name,
            header,
            collapsed,
        });
    }

    /// Closes a section.
    pub fn section_end(&self, name: &str) {
        self.emit(Event::SectionEnd(name));
    }

    /// A plain line (remote output).
    pub fn line(&self, text: &str) {
        self.emit(Event::Line(text));
    }

    /// Plain lines, in order.
    pub fn lines(&self, lines: &[String]) {
        for l in lines {
            self.line(l);
        }
    }

    /// A green status line with the elapsed time.
    pub fn notice(&self, text: &str) {
        self.emit(Event::Notice(text));
    }

    /// A yellow warning line.
    pub fn warn(&self, text: &str) {
        self.emit(Event::Warn(text));
    }

    /// A red error line.
    pub fn error(&self, text: &str) {
        self.emit(Event::Error(text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_names_are_sanitised() {
        assert_eq!(section_name("train:algo 1"), "train_algo_1");
        assert_eq!(section_name("a.b-c_d"), "a.b-c_d");
    }

    #[test]
    fn a_captured_log_renders_events_in_order() {
        let (log, buffer) = JobLog::capture();
        log.section_start("training", "Training", false);
        log.line("epoch=1");
        log.notice("Completed");
        log.section_end("training");
        log.warn("w");
        let text = buffer.lock().expect("buffer").clone();
        let plain: Vec<&str> = text.lines().collect();
        assert!(plain[0].contains("section_start:") && plain[0].ends_with("Training\x1b[0;m"));
        assert_eq!(plain[1], "epoch=1");
        assert!(plain[2].contains("[00:00] Completed"));
        assert!(plain[3].contains("section_end:") && plain[3].contains("WARNING: w"));
    }
}
