//! A waiting job's side of the host watcher: reach it (starting it when none runs), subscribe,
//! and relay what it says into the job's log reader and wait loop; when it is missing, cannot
//! be started or goes away, carry on alone with the job's own Live Tail sessions and queue
//! reads, which the log reader and the wait already know how to take over without losing or
//! repeating a line (a gap, then reconcile from GetLogEvents; a hint to describe at once).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::wire::{self, Subscribe, ToJob};

/// How long a job waits for a watcher it started to say it listens.
const READY_WITHIN: Duration = Duration::from_secs(5);

/// How a job starts the watcher: this executor's own binary with the watcher's subcommand,
/// which only the front end knows how to spell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launcher {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
}

/// The host watcher as a job sees it: where it listens and how to start it.
#[derive(Debug, Clone)]
pub struct HostWatcher {
    socket: PathBuf,
    log: PathBuf,
    launcher: Launcher,
}

impl HostWatcher {
    /// The watcher of the host whose state root is `state_root`.
    pub fn new(state_root: &std::path::Path, launcher: Launcher) -> HostWatcher {
        HostWatcher {
            socket: super::socket_path(state_root),
            log: super::log_path(state_root),
            launcher,
        }
    }

    /// A connection with `subscription` sent, or why there is none.
    pub(crate) async fn subscribe(&self, subscription: &Subscribe) -> std::io::Result<Relay> {
        let mut stream = match UnixStream::connect(&self.socket).await {
            Ok(s) => s,
            Err(_) => {
                self.launch().await?;
                UnixStream::connect(&self.socket).await?
            }
        };
        stream.write_all(&wire::line(subscription)).await?;
        let (read, write) = stream.into_split();
        Ok(Relay {
            reader: BufReader::new(read),
            _write: write,
        })
    }

    /// Starts a watcher and waits until it says it listens (or that another one does). It runs
    /// in a process group of its own, so the runner's kill of this stage's group spares it, with
    /// no job variable in its environment and its stderr in the watcher log.
    async fn launch(&self) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = tokio::process::Command::new(&self.launcher.program);
        command
            .args(&self.launcher.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .process_group(0);
        if let Some(dir) = self.socket.parent() {
            command.current_dir(dir);
        }
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CUSTOM_ENV_") {
                command.env_remove(key);
            }
        }
        let mut child = command.spawn()?;
        let Some(stdout) = child.stdout.take() else {
            return Err(std::io::Error::other("the watcher's stdout is not a pipe"));
        };
        let mut line = String::new();
        let said = tokio::time::timeout(
            READY_WITHIN,
            BufReader::new(stdout).take(256).read_line(&mut line),
        )
        .await;
        match said {
            Ok(Ok(_)) if line.trim() == super::READY => Ok(()),
            Ok(_) => Err(std::io::Error::other(format!(
                "the host watcher did not start (see {})",
                self.log.display()
            ))),
            Err(_) => Err(std::io::Error::other(
                "the host watcher did not say it listens in time",
            )),
        }
    }
}

/// A subscription's connection: what the watcher says, line by line.
#[derive(Debug)]
pub(crate) struct Relay {
    reader: BufReader<OwnedReadHalf>,
    /// Kept open: closing it is how the watcher learns that the job left.
    _write: tokio::net::unix::OwnedWriteHalf,
}

impl Relay {
    /// The next line; `None` once the watcher is gone (or said something unreadable).
    pub(crate) async fn next(&mut self) -> Option<ToJob> {
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(wire::MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await
            .ok()?;
        if n == 0 || line.last() != Some(&b'\n') {
            return None;
        }
        serde_json::from_slice(&line).ok()
    }

    /// Relays every line `convert` accepts into `tx` until the watcher goes or `tx` closes.
    pub(crate) async fn forward<T>(
        &mut self,
        tx: &mpsc::Sender<T>,
        convert: impl Fn(ToJob, Instant) -> Option<T>,
    ) -> Ended {
        let mut last_word = false;
        loop {
            tokio::select! {
                biased;
                () = tx.closed() => return Ended::Unread,
                line = self.next() => match line {
                    Some(line) => {
                        last_word = matches!(line, ToJob::Failed(_) | ToJob::Lost(_));
                        if let Some(item) = convert(line, Instant::now())
                            && tx.send(item).await.is_err()
                        {
                            return Ended::Unread;
                        }
                    }
                    None if last_word => return Ended::Refused,
                    None => return Ended::Gone,
                },
            }
        }
    }
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Nobody reads what it relays any more.
    Unread,
    /// The watcher said the source cannot be used (`Failed`, `Lost`) and let go: the job's own
    /// attempt would fail the same way, and the job already knows.
    Refused,
    /// The watcher went away: the job carries on alone.
    Gone,
}
