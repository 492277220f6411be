//! The host watcher process: one Live Tail session per log group and one reader of the queue,
//! shared by every waiting job of the host that subscribes over the socket.
//!
//! A log subscriber gets `Started` at once (nothing before it was seen), then every update of
//! its group's session with only its own streams' events, and every gap. An update without any
//! of its events says only that the session is alive and unsampled: it goes out once after each
//! start, gap or sampled update, not every second, so a quiet job is not woken. A subscriber
//! that reads too slowly has updates dropped and is told so with a gap before the next one, as
//! a job's own session does.
//! An event subscriber gets `Relax` once the queue delivers, `Changed` for each event about its
//! resource, and `Lost` if the queue fails. A job's own subscription ends with its connection.
//!
//! The queue reader deletes what it hands a subscriber, leaves what a job of this host that
//! reads the queue itself waits for (the [`Registry`], as [`super::super::events`] does), and
//! deletes the rest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::wire::{self, Subscribe, ToJob, WireEvent};
use crate::logs::live::{LiveItem, Session, Streams};
use crate::watch::events::{Queue, Registry, ResourceKey, parse_event, receive_within};

/// Lines waiting for one subscriber; beyond this its log updates are dropped (a gap for it).
const CHANNEL: usize = 256;
/// How long a new connection may take to say what it wants.
const SUBSCRIBE_WITHIN: Duration = Duration::from_secs(5);
/// How long a group whose session could not start answers new subscribers with that failure
/// before it tries again.
const FAILED_FOR: Duration = Duration::from_secs(60);

/// Where the watcher's sessions and events come from: AWS, or a test's script.
pub trait Sources: Send + Sync + 'static {
    /// The queue, when the host has one.
    type Queue: Queue;

    /// Starts Live Tail sessions on every stream of `group`, one after the other until dropped.
    fn session(&self, group: &str) -> Session;

    /// The queue of state-change events; `None` without one.
    fn queue(&self) -> Option<Self::Queue>;
}

/// One subscriber of a group's session.
struct LogSub {
    streams: Streams,
    tx: mpsc::Sender<ToJob>,
    /// Updates were dropped since the last line it got: it must hear of the gap first.
    dropped: bool,
    /// It was told that the session is alive and unsampled since its last start or gap.
    told_alive: bool,
}

/// A group with subscribers and its session task.
struct Group {
    subs: HashMap<u64, LogSub>,
    task: JoinHandle<()>,
}

impl Drop for Group {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the queue reader has learnt.
#[derive(Default)]
struct QueueStatus {
    started: bool,
    proven: bool,
    lost: Option<String>,
}

/// Every subscription of the watcher.
#[derive(Default)]
struct State {
    next_id: u64,
    connections: usize,
    groups: HashMap<String, Group>,
    failed: HashMap<String, (String, Instant)>,
    events: HashMap<u64, (ResourceKey, mpsc::Sender<ToJob>)>,
    queue: QueueStatus,
}

/// The shared state and what the accept loop waits on.
struct Hub<S: Sources> {
    state: Mutex<State>,
    changed: Notify,
    sources: S,
    registry: Registry,
    safety: Duration,
    stop: CancellationToken,
}

impl<S: Sources> Hub<S> {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A bound watcher: it holds the socket and the host's single-watcher lock.
pub struct Bound {
    pub(super) listener: UnixListener,
    pub(super) socket: std::path::PathBuf,
    pub(super) _lock: nix::fcntl::Flock<std::fs::File>,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl Bound {
    /// Serves subscribers until `stop`, or until no job has been connected for `idle`. The socket
    /// is removed before the connections close, so a job that comes later starts a new watcher
    /// instead of reaching one that is going away.
    pub async fn serve<S: Sources>(
        self,
        sources: S,
        registry: Registry,
        safety: Duration,
        idle: Duration,
        stop: &CancellationToken,
    ) {
        let hub = Arc::new(Hub {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            sources,
            registry,
            safety,
            stop: stop.child_token(),
        });
        let mut idle_since = Some(Instant::now());
        loop {
            let deadline = idle_since.map(|t| t + idle);
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                () = sleep_until(deadline) => break,
                () = hub.changed.notified() => {}
                accepted = self.listener.accept() => {
                    if let Ok((stream, _)) = accepted
                        && same_user(&stream)
                    {
                        hub.lock().connections += 1;
                        let hub = hub.clone();
                        tokio::spawn(async move {
                            connection(&hub, stream).await;
                            hub.lock().connections -= 1;
                            hub.changed.notify_one();
                        });
                    }
                }
            }
            let connections = hub.lock().connections;
            idle_since = match (connections, idle_since) {
                (0, None) => Some(Instant::now()),
                (0, since) => since,
                _ => None,
            };
        }
        let _ = std::fs::remove_file(&self.socket);
        hub.stop.cancel();
        let mut state = hub.lock();
        state.groups.clear();
        state.events.clear();
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Only processes of the watcher's own user may subscribe: the socket's directory is private
/// too, this is the second lock.
fn same_user(stream: &UnixStream) -> bool {
    stream
        .peer_cred()
        .is_ok_and(|c| c.uid() == nix::unistd::geteuid().as_raw())
}

/// One job's connection: its subscription, then lines until either side goes.
async fn connection<S: Sources>(hub: &Arc<Hub<S>>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut first = Vec::new();
    let mut limited = (&mut reader).take(wire::MAX_LINE as u64);
    let read_first = limited.read_until(b'\n', &mut first);
    let Ok(Ok(_)) = tokio::time::timeout(SUBSCRIBE_WITHIN, read_first).await else {
        return;
    };
    let Ok(subscription) = serde_json::from_slice::<Subscribe>(&first) else {
        return;
    };
    let (tx, mut rx) = mpsc::channel(CHANNEL);
    // A refused subscription has its one line queued and its sender dropped: the loop below
    // writes the line and ends.
    let id = subscribe(hub, subscription, tx);
    let mut sink = [0u8; 64];
    loop {
        tokio::select! {
            line = rx.recv() => match line {
                Some(line) => {
                    if write.write_all(&wire::line(&line)).await.is_err() {
                        break;
                    }
                }
                // The watcher dropped the subscription (its group failed, or it stops).
                None => break,
            },
            // A job sends nothing after its subscription: end of file is its leaving.
            read = reader.read(&mut sink) => if !matches!(read, Ok(n) if n > 0) { break },
        }
    }
    if let Some(id) = id {
        unsubscribe(hub, id);
    }
}

/// Adds a subscription; `None` when it is refused (the line was already sent).
fn subscribe<S: Sources>(
    hub: &Arc<Hub<S>>,
    subscription: Subscribe,
    tx: mpsc::Sender<ToJob>,
) -> Option<u64> {
    let mut state = hub.lock();
    state.next_id += 1;
    let id = state.next_id;
    match subscription {
        Subscribe::Logs { group, streams } => {
            if let Some((reason, at)) = state.failed.get(&group)
                && at.elapsed() < FAILED_FOR
            {
                let _ = tx.try_send(ToJob::Failed(reason.clone()));
                return None;
            }
            let _ = tx.try_send(ToJob::Started);
            let sub = LogSub {
                streams: streams.streams(),
                tx,
                dropped: false,
                told_alive: false,
            };
            if let Some(g) = state.groups.get_mut(&group) {
                g.subs.insert(id, sub);
            } else {
                let session = hub.sources.session(&group);
                let task = tokio::spawn(group_task(hub.clone(), group.clone(), session));
                state.groups.insert(
                    group,
                    Group {
                        subs: HashMap::from([(id, sub)]),
                        task,
                    },
                );
            }
        }
        Subscribe::Events { key } => {
            if let Some(reason) = &state.queue.lost {
                let _ = tx.try_send(ToJob::Lost(reason.clone()));
                return None;
            }
            if state.queue.proven {
                let _ = tx.try_send(ToJob::Relax(hub.safety.as_secs().max(1)));
            }
            state.events.insert(id, (key.into(), tx));
            if !state.queue.started {
                state.queue.started = true;
                match hub.sources.queue() {
                    Some(queue) => {
                        tokio::spawn(read_queue(hub.clone(), queue));
                    }
                    None => {
                        let reason = "this host has no queue of state-change events".to_owned();
                        lose_queue(&mut state, &reason);
                        return None;
                    }
                }
            }
        }
    }
    Some(id)
}

fn unsubscribe<S: Sources>(hub: &Hub<S>, id: u64) {
    let mut state = hub.lock();
    state.events.remove(&id);
    // A group without subscribers ends its session.
    state.groups.retain(|_, g| {
        g.subs.remove(&id);
        !g.subs.is_empty()
    });
}

/// Hands each item of a group's session to the group's subscribers.
async fn group_task<S: Sources>(hub: Arc<Hub<S>>, group: String, mut session: Session) {
    while let Some(item) = session.recv().await {
        let mut state = hub.lock();
        if let LiveItem::Failed(reason) = &item {
            if let Some(g) = state.groups.remove(&group) {
                for sub in g.subs.values() {
                    let _ = sub.tx.try_send(ToJob::Failed(reason.clone()));
                }
            }
            state
                .failed
                .insert(group.clone(), (reason.clone(), Instant::now()));
            return;
        }
        let Some(g) = state.groups.get_mut(&group) else {
            return;
        };
        for sub in g.subs.values_mut() {
            deliver(sub, &item);
        }
    }
}

/// One item for one subscriber, filtered to its streams; a full channel drops it and owes a gap.
fn deliver(sub: &mut LogSub, item: &LiveItem) {
    if sub.dropped {
        match sub
            .tx
            .try_send(ToJob::Gap("the log reader fell behind".into()))
        {
            Ok(()) => {
                sub.dropped = false;
                sub.told_alive = false;
            }
            Err(_) => return,
        }
    }
    let (line, alive) = match item {
        LiveItem::Started => (ToJob::Started, false),
        LiveItem::Update {
            sampled, events, ..
        } => {
            let events: Vec<WireEvent> = events
                .iter()
                .filter(|e| sub.streams.accepts(&e.stream))
                .map(WireEvent::from)
                .collect();
            if events.is_empty() && !*sampled && sub.told_alive {
                return;
            }
            let update = ToJob::Update {
                sampled: *sampled,
                events,
            };
            (update, !*sampled)
        }
        LiveItem::Gap(reason) => (ToJob::Gap(reason.clone()), false),
        LiveItem::Failed(reason) => (ToJob::Failed(reason.clone()), false),
    };
    if sub.tx.try_send(line).is_err() {
        sub.dropped = true;
    } else {
        sub.told_alive = alive;
    }
}

/// Tells every event subscriber that the queue is not used, and drops them (each then polls).
fn lose_queue(state: &mut State, reason: &str) {
    state.queue.lost = Some(reason.to_owned());
    for (_, (_, tx)) in state.events.drain() {
        let _ = tx.try_send(ToJob::Lost(reason.to_owned()));
    }
}

/// The one reader of the queue (see the module doc).
async fn read_queue<S: Sources>(hub: Arc<Hub<S>>, queue: S::Queue) {
    loop {
        let received = tokio::select! {
            biased;
            () = hub.stop.cancelled() => return,
            r = receive_within(&queue) => r,
        };
        let messages = match received {
            Ok(m) => m,
            Err(e) => {
                let reason =
                    format!("state-change events are not used from now on ({e}); polling instead");
                lose_queue(&mut hub.lock(), &reason);
                return;
            }
        };
        {
            let mut state = hub.lock();
            if !state.queue.proven {
                state.queue.proven = true;
                let relax = hub.safety.as_secs().max(1);
                for (_, tx) in state.events.values() {
                    let _ = tx.try_send(ToJob::Relax(relax));
                }
            }
        }
        for m in messages {
            let delete = match parse_event(&m.body) {
                Some(key) => {
                    let mut told = false;
                    for (k, tx) in hub.lock().events.values() {
                        if *k == key {
                            // A full channel holds a hint already: hints are idempotent.
                            let _ = tx.try_send(ToJob::Changed);
                            told = true;
                        }
                    }
                    told || !hub.registry.is_awaited(&key)
                }
                None => true,
            };
            if !delete {
                continue;
            }
            let deleted = tokio::select! {
                biased;
                () = hub.stop.cancelled() => return,
                r = queue.delete(&m.receipt) => r,
            };
            // A refused delete would fill the queue with events delivered again and again.
            if let Err(e) = deleted
                && !e.retry().is_retryable()
            {
                let reason =
                    format!("state-change events are not used from now on ({e}); polling instead");
                lose_queue(&mut hub.lock(), &reason);
                return;
            }
        }
    }
}
