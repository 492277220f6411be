//! One watcher per runner host: the waiting jobs of a host share one CloudWatch Live Tail
//! session per log group and one reader of the state-change queue, instead of one of each per
//! job.
//!
//! The watcher is this executor's own binary in a hidden mode, started on demand by the first
//! job that waits and gone once no job has been connected for `[watch] host_watcher_idle`: no
//! daemon to install, and no coordination between hosts (each host has its own; the state
//! stays in AWS). It listens on `<state_root>/watcher.sock` (only its own user may connect) and
//! holds `<state_root>/watcher.lock` while it runs, so a second one started at the same moment
//! steps aside. Its own messages go to `<state_root>/watcher.log`.
//!
//! A job subscribes once per wait (its log streams, its resource's events) and keeps the
//! connection open; closing it unsubscribes. Everything a job gets is what its own session and
//! queue reader would give it (see [`crate::logs::live`] and [`super::events`]), so when the
//! watcher is missing, cannot start, or dies, the job carries on alone from the same point: its
//! log reader sees a gap and reconciles from GetLogEvents (no line lost or repeated), and its
//! wait describes at once and reads the queue itself.

mod client;
mod server;
pub mod wire;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use client::Ended;
pub use client::{HostWatcher, Launcher};
pub use server::{Bound, Sources};

use crate::logs::live::{self, LiveItem, Session, Streams};
use crate::watch::Hint;
use crate::watch::events::{Queue, Registry, ResourceKey, SqsQueue};

/// What a starting watcher prints on stdout once it listens, or once it finds another one
/// running: either way a job may connect now.
pub const READY: &str = "ready";

/// The watcher's socket under `state_root`.
pub fn socket_path(state_root: &Path) -> PathBuf {
    state_root.join("watcher.sock")
}

/// The watcher's log under `state_root`.
pub fn log_path(state_root: &Path) -> PathBuf {
    state_root.join("watcher.log")
}

fn lock_path(state_root: &Path) -> PathBuf {
    state_root.join("watcher.lock")
}

/// Why a watcher does not serve.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Another watcher holds the lock: it serves this host.
    #[error("another host watcher is running")]
    AlreadyRunning,
    /// The state root, the lock or the socket could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HostError {
    let what = what.into();
    move |source| HostError::Io { what, source }
}

/// Takes the host's watcher lock and listens on its socket (a socket left by a watcher that was
/// killed is replaced: the lock proves nobody serves it).
///
/// # Errors
/// [`HostError::AlreadyRunning`] when another watcher holds the lock; [`HostError::Io`] when the
/// state root, the lock or the socket cannot be set up.
pub fn bind(state_root: &Path) -> Result<Bound, HostError> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_root)
        .map_err(io(format!("creating {}", state_root.display())))?;
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(lock_path(state_root))
        .map_err(io("opening the watcher lock"))?;
    let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, errno)| match errno {
            nix::errno::Errno::EWOULDBLOCK => HostError::AlreadyRunning,
            e => HostError::Io {
                what: "locking the watcher lock".into(),
                source: e.into(),
            },
        })?;
    let socket = socket_path(state_root);
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("removing a stale watcher socket")(e)),
    }
    let listener = tokio::net::UnixListener::bind(&socket)
        .map_err(io(format!("listening on {}", socket.display())))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(io("restricting the watcher socket"))?;
    Ok(Bound {
        listener,
        socket,
        _lock: lock,
    })
}

/// The watcher's sources in AWS: Live Tail sessions with `logs`, the queue at `queue_url`.
#[derive(Debug, Clone)]
pub struct AwsSources {
    /// The CloudWatch Logs client sessions start with.
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// The SQS client and queue URL, when the host has a queue.
    pub queue: Option<SqsQueue>,
}

impl Sources for AwsSources {
    type Queue = SqsQueue;

    fn session(&self, group: &str) -> Session {
        Session::start(self.logs.clone(), group.to_owned(), Streams::All)
    }

    fn queue(&self) -> Option<SqsQueue> {
        self.queue.clone()
    }
}

/// Serves the host from `bound` until idle or `stop` (see [`Bound::serve`]).
pub async fn serve<S: Sources>(
    bound: Bound,
    sources: S,
    state_root: &Path,
    safety: Duration,
    idle: Duration,
    stop: &CancellationToken,
) {
    bound
        .serve(sources, Registry::new(state_root), safety, idle, stop)
        .await;
}

/// A job's Live Tail feed for `streams` of `group`: through the host watcher when there is one
/// (started if need be), else, or once it goes, the job's own sessions with `client`.
pub fn session(
    host: Option<HostWatcher>,
    client: aws_sdk_cloudwatchlogs::Client,
    group: String,
    streams: Streams,
) -> Session {
    let Some(host) = host else {
        return Session::start(client, group, streams);
    };
    Session::spawn(|tx| feed_logs(host, client, group, streams, tx))
}

async fn feed_logs(
    host: HostWatcher,
    client: aws_sdk_cloudwatchlogs::Client,
    group: String,
    streams: Streams,
    tx: mpsc::Sender<LiveItem>,
) {
    if let Some(wanted) = wire::WireStreams::from_streams(&streams) {
        let subscription = wire::Subscribe::Logs {
            group: group.clone(),
            streams: wanted,
        };
        if let Ok(mut relay) = host.subscribe(&subscription).await {
            match relay.forward(&tx, |line, at| line.live_item(at)).await {
                Ended::Unread | Ended::Refused => return,
                Ended::Gone => {}
            }
            // Whatever the watcher had not passed on yet is a gap the reader reconciles.
            let gap = LiveItem::Gap("the host watcher stopped; following the logs directly".into());
            if tx.send(gap).await.is_err() {
                return;
            }
        }
    }
    live::run_sessions(&client, &group, &streams, &tx).await;
}

/// A wait's state-change hints for `key`: through the host watcher when there is one, else, or
/// once it goes, by reading `queue` itself. Registered in `registry` before this returns, so
/// no job of this host deletes the resource's events meanwhile.
pub fn events<Q: Queue>(
    host: Option<HostWatcher>,
    queue: Q,
    key: ResourceKey,
    registry: Registry,
    safety: Duration,
) -> (super::Hints, super::events::EventWatch) {
    let Some(host) = host else {
        return super::events::EventWatch::start(queue, key, registry, safety);
    };
    let subscription = wire::Subscribe::Events {
        key: wire::WireKey::from(&key),
    };
    super::events::EventWatch::start_after(queue, key, registry, safety, move |tx| async move {
        let Ok(mut relay) = host.subscribe(&subscription).await else {
            return Some(tx);
        };
        match relay.forward(&tx, |line, _| line.hint()).await {
            Ended::Unread | Ended::Refused => return None,
            Ended::Gone => {}
        }
        // What the watcher saw last may not have reached this wait: describe now.
        let _ = tx.try_send(Hint::Changed);
        Some(tx)
    })
}

#[cfg(test)]
mod tests;
