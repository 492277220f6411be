//! Log lines by CloudWatch Live Tail ([`LiveLines`]): one `StartLiveTail` session pushes new
//! events about every second, so lines arrive within a second or two at no per-read cost;
//! GetLogEvents (one [`LogTailer`] per stream) reads what Live Tail cannot be trusted with. The
//! source is pushed: the feed reads it when an update with something in it arrives or one of its
//! own deadlines comes, so a quiet job does not wake up.
//!
//! # What Live Tail does not promise, and what covers it
//! - **No history**: a session shows only events ingested after it started. A stream starts in
//!   *reconcile* mode: its tailer reads it from the head.
//! - **Sampling** above 500 events/s (`sessionMetadata.sampled`), **a session that ends**
//!   (3 hours, `SessionStreamingException`, a dropped connection) and **a reader that fell
//!   behind** (our own channel full): each is a *gap* for every stream. Every stream goes back to
//!   reconcile, and the session is trusted again only from its next unsampled update on.
//! - **Duplicated or reordered updates**: the events of one update (and of every update that
//!   arrived before the source was read) are released in timestamp order per stream. An event
//!   that is already printed (same stream, timestamp and message) or older than one already
//!   released is a *discontinuity*: it is not printed, and its stream goes back to reconcile.
//!   Updates of one session come over one connection, in order, so an event comes later than a
//!   newer one of its stream only when it was ingested later; the first time that happens the
//!   reader widens its reorder window to [`HOLDBACK`] for the rest of the job (as TCP's RACK
//!   widens its window after a reordering): from then on live events are held that long, which
//!   absorbs an update that comes one late.
//!
//! A stream in reconcile is read with GetLogEvents (to its end, every [`RECONCILE_EVERY`]).
//! Events that Live Tail already printed are skipped (a multiset of keys printed since the
//! tailer's cursor, consumed as the tailer passes them), the rest are printed in the stream's
//! order. The stream goes back to live once a pass that started after the session was trusted
//! again read to the end: everything ingested before that pass is the tailer's, everything
//! after it comes from the trusted session, and a live event the tailer already printed is
//! recognised and dropped. At the end, [`LineSource::drain`] closes the session and drains
//! every stream through its tailer the same way, so the last lines come from GetLogEvents as
//! before.
//!
//! # Guarantees and caveats
//! - Every line is printed once, in its stream's order, when an out-of-order or missing event
//!   is caught by a gap or a discontinuity before later lines of its stream were released; one
//!   caught only afterwards (the first late update of a job, before the window widened) is
//!   printed once, late.
//! - Lines are matched by (stream, timestamp, message): two identical messages of one stream in
//!   the same millisecond are told apart by their count, except at the edge of a gap, where one
//!   may be taken for the other.
//! - If the first session cannot start (no `logs:StartLiveTail`, an endpoint that does not
//!   serve it), the job's logs are read by polling as without Live Tail, with one warning.
//!   After lines were printed, a session that cannot start again leaves every stream in
//!   reconcile: polling through the same tailers, so nothing is printed twice.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::time::Duration;

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::types::StartLiveTailResponseStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::feed::LineSource;
use super::{LogError, LogLine, LogTailer, StreamNaming, format_line};

/// How long live events are held once the job saw one come late: one update late (updates
/// come every second) is then still in order.
pub const HOLDBACK: Duration = Duration::from_millis(1500);
/// How often a stream in reconcile is read with GetLogEvents while it has lines.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(2);
/// ... and at most this seldom while quiet (a stream left without a session is polled).
const RECONCILE_IDLE: Duration = Duration::from_secs(10);
/// How long after the session is trusted again a GetLogEvents pass must start to close a gap:
/// GetLogEvents shows an event a little later than Live Tail delivers it.
const TRUST_MARGIN: Duration = Duration::from_secs(2);
/// Live-printed lines of one stream that the tailer has not passed yet, above which the stream
/// is reconciled on purpose: the tailer's pass consumes them, which bounds memory.
const MAX_UNCONFIRMED: usize = 20_000;
/// How far back (in event time) lines printed by the tailer are remembered, to recognise the
/// same event delivered by Live Tail after a reconcile.
const CONFIRMED_WINDOW_MS: i64 = 300_000;
/// Updates waiting for the reader; beyond this the session task drops them and says so (a gap).
const CHANNEL_UPDATES: usize = 256;
/// Pause before a new session after one ended.
const RESTART_AFTER: Duration = Duration::from_secs(1);
/// Longest pause between session starts while the log group does not exist yet.
const ABSENT_GROUP_MAX_WAIT: Duration = Duration::from_secs(8);
/// Drain passes per stream after the job ended.
const DRAIN_PASSES: u32 = 6;

/// One event delivered by Live Tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveEvent {
    /// The log stream.
    pub stream: String,
    /// The event's timestamp (ms since the epoch).
    pub timestamp_ms: i64,
    /// The text.
    pub message: String,
}

/// What the session task hands the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveItem {
    /// A session started: nothing before it was seen (a gap until its first unsampled update).
    Started,
    /// One `sessionUpdate`, when it arrived.
    Update {
        /// When the session task received it.
        at: Instant,
        /// Whether Live Tail sampled it (its events are a subset).
        sampled: bool,
        /// Its events, in the order delivered.
        events: Vec<LiveEvent>,
    },
    /// The session ended or updates were dropped: a gap.
    Gap(String),
    /// A session could not start; the task has stopped.
    Failed(String),
}

/// Which streams a session and the tailers follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Streams {
    /// Every stream whose name starts with this (SageMaker: `<job>/`).
    Prefix(String),
    /// These streams (ECS awslogs).
    Names(Vec<String>),
    /// Every stream of the group: the host watcher's one session per group, whose events it
    /// hands each job filtered by that job's own `Prefix` or `Names`.
    All,
}

impl Streams {
    /// Whether events of `stream` belong to this selection.
    pub fn accepts(&self, stream: &str) -> bool {
        match self {
            Streams::Prefix(p) => stream.starts_with(p.as_str()),
            Streams::Names(n) => n.iter().any(|x| x == stream),
            Streams::All => true,
        }
    }
}

/// A running session task; stops when dropped.
#[derive(Debug)]
pub struct Session {
    items: mpsc::Receiver<LiveItem>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Session {
    /// A session fed by `items` (what [`Session::start`] runs, or a test's script).
    pub fn from_items(items: mpsc::Receiver<LiveItem>) -> Session {
        Session {
            items,
            stop: CancellationToken::new(),
            task: None,
        }
    }

    /// A session fed by the task `feed` makes of the sender, until the session is dropped.
    pub(crate) fn spawn<F>(feed: impl FnOnce(mpsc::Sender<LiveItem>) -> F) -> Session
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (tx, items) = mpsc::channel(CHANNEL_UPDATES);
        let stop = CancellationToken::new();
        let stopping = stop.clone();
        let fed = feed(tx);
        let task = tokio::spawn(async move {
            tokio::select! {
                biased;
                () = stopping.cancelled() => {}
                () = fed => {}
            }
        });
        Session {
            items,
            stop,
            task: Some(task),
        }
    }

    /// The next item; `None` once the task has stopped and everything it sent was taken.
    pub async fn recv(&mut self) -> Option<LiveItem> {
        self.items.recv().await
    }

    /// Starts Live Tail sessions on `group` for `streams` with `client`, one after the other
    /// until stopped; the first that cannot start ends the task with [`LiveItem::Failed`].
    pub fn start(client: Client, group: String, streams: Streams) -> Session {
        Session::spawn(|tx| async move { run_sessions(&client, &group, &streams, &tx).await })
    }
}

/// Runs sessions into `tx` until it closes (see [`Session::start`]); also the host watcher's
/// fallback feed once the watcher is gone.
pub(crate) async fn run_sessions(
    client: &Client,
    group: &str,
    streams: &Streams,
    tx: &mpsc::Sender<LiveItem>,
) {
    let mut absent_wait = RESTART_AFTER;
    loop {
        let mut request = client.start_live_tail().log_group_identifiers(group);
        request = match streams {
            Streams::Prefix(p) => request.log_stream_name_prefixes(p),
            Streams::Names(names) => request.set_log_stream_names(Some(names.clone())),
            Streams::All => request,
        };
        let mut output = match request.send().await {
            Ok(o) => o,
            // The group is created with its first stream (SageMaker's on an account's first
            // training job): nothing to tail yet, and nothing missed; ask again.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                tokio::time::sleep(absent_wait).await;
                absent_wait = (absent_wait * 2).min(ABSENT_GROUP_MAX_WAIT);
                continue;
            }
            Err(e) => {
                let _ = tx
                    .send(LiveItem::Failed(crate::aws::errors::describe(&e)))
                    .await;
                return;
            }
        };
        let mut dropped = false;
        let reason = loop {
            match output.response_stream.recv().await {
                Ok(Some(StartLiveTailResponseStream::SessionStart(_))) => {
                    if tx.send(LiveItem::Started).await.is_err() {
                        return;
                    }
                }
                Ok(Some(StartLiveTailResponseStream::SessionUpdate(u))) => {
                    let item = LiveItem::Update {
                        at: Instant::now(),
                        sampled: u.session_metadata().is_some_and(|m| m.sampled()),
                        events: u
                            .session_results()
                            .iter()
                            .map(|e| LiveEvent {
                                stream: e.log_stream_name().unwrap_or_default().to_owned(),
                                timestamp_ms: e.timestamp().or(e.ingestion_time()).unwrap_or(0),
                                message: e.message().unwrap_or_default().to_owned(),
                            })
                            .collect(),
                    };
                    if dropped {
                        // Blocking on purpose: the gap must reach the reader before later updates.
                        if tx
                            .send(LiveItem::Gap("the log reader fell behind".into()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        dropped = false;
                    }
                    match tx.try_send(item) {
                        Ok(()) => {}
                        // Reading the session on keeps the connection alive; the reader learns
                        // of the loss before the next update.
                        Err(mpsc::error::TrySendError::Full(_)) => dropped = true,
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break "the Live Tail session closed".to_owned(),
                Err(e) => break format!("the Live Tail session ended: {e}"),
            }
        };
        if tx.send(LiveItem::Gap(reason)).await.is_err() {
            return;
        }
        tokio::time::sleep(RESTART_AFTER).await;
    }
}

/// Identifies an event within its stream: timestamp and a hash of the message.
type Key = (i64, u64);

fn key(timestamp_ms: i64, message: &str) -> Key {
    let mut h = DefaultHasher::new();
    message.hash(&mut h);
    (timestamp_ms, h.finish())
}

/// Adds one to a multiset.
fn add(set: &mut HashMap<Key, u32>, k: Key) {
    *set.entry(k).or_default() += 1;
}

/// Takes one from a multiset; false when it had none.
fn take(set: &mut HashMap<Key, u32>, k: &Key) -> bool {
    match set.get_mut(k) {
        Some(n) if *n > 1 => {
            *n -= 1;
            true
        }
        Some(_) => {
            set.remove(k);
            true
        }
        None => false,
    }
}

/// Where a stream's lines come from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Live Tail, held back and checked.
    Live,
    /// GetLogEvents, until a pass after the session was trusted reads to the end.
    Reconcile,
}

/// One stream's state.
#[derive(Debug)]
struct StreamState {
    name: String,
    source: String,
    tailer: LogTailer,
    mode: Mode,
    /// Live events not printed yet: (arrival, sequence, key, event).
    held: Vec<(Instant, u64, Key, LiveEvent)>,
    /// Keys printed from Live Tail that the tailer has not passed yet.
    unconfirmed: HashMap<Key, u32>,
    unconfirmed_len: usize,
    /// Keys printed by the tailer (or passed by it), for Live Tail's copies of them: the count
    /// left to expect, 0 once every copy is accounted for (a further one is suspect).
    confirmed: HashMap<Key, u32>,
    /// The newest timestamp released from Live Tail.
    released_ts: i64,
    next_reconcile: Instant,
    reconcile_every: Duration,
}

/// The log source of one run with Live Tail, or the polling source `P` when Live Tail is off
/// or the first session could not start. See the module docs.
pub struct LiveLines<P: LineSource> {
    inner: Option<Live>,
    polling: Option<P>,
    /// Kept until the first session is known to fail: the fallback.
    spare: Option<P>,
    warning: Option<String>,
}

impl<P: LineSource> std::fmt::Debug for LiveLines<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveLines")
            .field("live", &self.inner.is_some())
            .field("polling", &self.polling.is_some())
            .finish()
    }
}

/// Whether a line of this source label gets its label as a prefix.
pub type PrefixRule = Box<dyn Fn(&str) -> bool + Send>;

/// The Live Tail side of [`LiveLines`].
struct Live {
    client: Client,
    group: String,
    streams_filter: Streams,
    naming: StreamNaming,
    prefix: PrefixRule,
    session: Session,
    streams: Vec<StreamState>,
    /// Since when the session is trusted (its first unsampled update after the last gap).
    trusted_since: Option<Instant>,
    printed_any: bool,
    seq: u64,
    /// How long live events are held: nothing until an update came late (see the module doc).
    window: Duration,
    /// Items [`Live::ready`] received, handled before anything else the session sent.
    pending: VecDeque<LiveItem>,
    /// The session task stopped and everything it sent was received.
    session_done: bool,
    /// Lines of a turn that ended in an error, handed out first by the next one.
    out: Vec<String>,
    /// Said once: no more sessions after lines were printed.
    warning: Option<String>,
}

impl<P: LineSource> LiveLines<P> {
    /// Reads by polling through `polling` only (Live Tail off).
    pub fn polling(polling: P) -> LiveLines<P> {
        LiveLines {
            inner: None,
            polling: Some(polling),
            spare: None,
            warning: None,
        }
    }

    /// Reads through `session` on `group`, with `fallback` if the first session cannot start.
    pub fn live(
        fallback: P,
        client: Client,
        group: impl Into<String>,
        streams: Streams,
        naming: StreamNaming,
        prefix: PrefixRule,
        session: Session,
    ) -> LiveLines<P> {
        let mut live = Live {
            client,
            group: group.into(),
            streams_filter: streams.clone(),
            naming,
            prefix,
            session,
            streams: Vec::new(),
            trusted_since: None,
            printed_any: false,
            seq: 0,
            window: Duration::ZERO,
            pending: VecDeque::new(),
            session_done: false,
            out: Vec::new(),
            warning: None,
        };
        if let Streams::Names(names) = &streams {
            for n in names {
                live.stream(n);
            }
        }
        LiveLines {
            inner: Some(live),
            polling: None,
            spare: Some(fallback),
            warning: None,
        }
    }

    /// Reads through Live Tail sessions started now on `group` for `streams` (see
    /// [`LiveLines::live`]).
    pub fn start(
        fallback: P,
        client: Client,
        group: &str,
        streams: Streams,
        naming: StreamNaming,
        prefix: PrefixRule,
    ) -> LiveLines<P> {
        let session = Session::start(client.clone(), group.to_owned(), streams.clone());
        LiveLines::live(fallback, client, group, streams, naming, prefix, session)
    }

    /// Whether lines come from Live Tail (false: polling, from the start or after a failure).
    pub fn is_live(&self) -> bool {
        self.inner.is_some()
    }
}

impl Live {
    /// The state of stream `name`, created in reconcile mode (its head is the tailer's).
    fn stream(&mut self, name: &str) -> usize {
        if let Some(i) = self.streams.iter().position(|s| s.name == name) {
            return i;
        }
        self.streams.push(StreamState {
            name: name.to_owned(),
            source: self.naming.source_of(name),
            tailer: LogTailer::fixed(self.group.clone(), vec![name.to_owned()], self.naming),
            mode: Mode::Reconcile,
            held: Vec::new(),
            unconfirmed: HashMap::new(),
            unconfirmed_len: 0,
            confirmed: HashMap::new(),
            released_ts: i64::MIN,
            next_reconcile: Instant::now(),
            reconcile_every: RECONCILE_EVERY,
        });
        self.streams.len() - 1
    }

    fn gap(&mut self) {
        self.trusted_since = None;
        for s in &mut self.streams {
            s.mode = Mode::Reconcile;
        }
    }

    /// Takes what the session task sent. `Err` with the reason when the first session failed.
    fn take_items(&mut self) -> Result<(), String> {
        loop {
            let next = match self.pending.pop_front() {
                Some(item) => Ok(item),
                None => self.session.items.try_recv(),
            };
            let item = match next {
                Ok(item) => item,
                Err(mpsc::error::TryRecvError::Empty) => return Ok(()),
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    // No more sessions: poll through the tailers from here on.
                    self.gap();
                    return Ok(());
                }
            };
            match item {
                // Nothing before it was seen; trusted only from its first unsampled update.
                LiveItem::Started => {}
                LiveItem::Update {
                    at,
                    sampled,
                    events,
                } => {
                    if sampled {
                        self.gap();
                    } else if self.trusted_since.is_none() {
                        self.trusted_since = Some(at);
                    }
                    for e in events {
                        if !self.accepts(&e.stream) {
                            continue;
                        }
                        let i = self.stream(&e.stream);
                        self.seq += 1;
                        if let Some(s) = self.streams.get_mut(i) {
                            s.held
                                .push((at, self.seq, key(e.timestamp_ms, &e.message), e));
                        }
                    }
                }
                LiveItem::Gap(_) => self.gap(),
                LiveItem::Failed(reason) => {
                    if !self.printed_any && self.streams.iter().all(|s| s.held.is_empty()) {
                        return Err(reason);
                    }
                    // Lines are out already: the tailers carry on alone, so none is repeated.
                    self.warning = Some(format!(
                        "CloudWatch Live Tail stopped ({reason}); reading the logs by polling"
                    ));
                    self.gap();
                }
            }
        }
    }

    fn accepts(&self, stream: &str) -> bool {
        self.streams_filter.accepts(stream)
    }

    /// Waits until there is something to do: an item of the session that changes anything (an
    /// empty update of a trusted session does not), or the next deadline of a stream.
    async fn ready(&mut self) {
        loop {
            let due = self.next_due();
            let item = tokio::select! {
                item = self.session.items.recv(), if !self.session_done => item,
                () = sleep_until(due) => return,
            };
            match item {
                // The next turn sees the closed channel and hands every stream to its tailer.
                None => {
                    self.session_done = true;
                    return;
                }
                Some(LiveItem::Update {
                    sampled: false,
                    events,
                    ..
                }) if events.is_empty() && self.trusted_since.is_some() => {}
                Some(item) => {
                    self.pending.push_back(item);
                    return;
                }
            }
        }
    }

    /// The earliest time a turn has work: a stream in reconcile due for a pass, or held live
    /// events whose window ends.
    fn next_due(&self) -> Option<Instant> {
        self.streams
            .iter()
            .filter_map(|s| match s.mode {
                Mode::Reconcile => Some(s.next_reconcile),
                Mode::Live => s.held.iter().map(|h| h.0 + self.window).min(),
            })
            .min()
    }

    fn render(&self, source: &str, timestamp_ms: i64, message: String) -> String {
        let line = LogLine {
            timestamp_ms,
            source: source.to_owned(),
            message,
        };
        format_line(&line, (self.prefix)(source))
    }

    /// One turn: reconcile what needs it, release held live events of live streams. Lines go
    /// to `self.out`, where a failed turn leaves them for the next.
    async fn turn(&mut self) -> Result<Vec<String>, LogError> {
        let now = Instant::now();
        for i in 0..self.streams.len() {
            let due = self
                .streams
                .get(i)
                .is_some_and(|s| s.mode == Mode::Reconcile && s.next_reconcile <= now);
            if due {
                self.reconcile(i).await?;
            }
            self.release(i, now);
        }
        Ok(std::mem::take(&mut self.out))
    }

    /// One GetLogEvents pass over stream `i`, printing what Live Tail did not.
    async fn reconcile(&mut self, i: usize) -> Result<(), LogError> {
        let started = Instant::now();
        let client = self.client.clone();
        let Some(s) = self.streams.get_mut(i) else {
            return Ok(());
        };
        // A failed pass is tried again on the feed's own retry schedule.
        s.next_reconcile = started;
        let (lines, caught_up) = s.tailer.poll_to_end(&client).await?;
        // Quiet streams in reconcile (no session) are read less and less often, as polled ones.
        s.reconcile_every = if lines.is_empty() {
            (s.reconcile_every * 2).min(RECONCILE_IDLE)
        } else {
            RECONCILE_EVERY
        };
        s.next_reconcile = started + s.reconcile_every;
        let mut printed = Vec::new();
        for line in lines {
            let k = key(line.timestamp_ms, &line.message);
            if take(&mut s.unconfirmed, &k) {
                s.unconfirmed_len = s.unconfirmed_len.saturating_sub(1);
                // Accounted for: a late copy from Live Tail is recognised, not printed.
                s.confirmed.entry(k).or_insert(0);
                continue;
            }
            // Held by Live Tail and not printed yet: the tailer prints it, in order.
            if let Some(pos) = s.held.iter().position(|(_, _, hk, _)| *hk == k) {
                // Printed by the tailer, in order; a copy delivered again is recognised.
                s.held.remove(pos);
                s.confirmed.entry(k).or_insert(0);
            } else {
                add(&mut s.confirmed, k);
            }
            s.released_ts = s.released_ts.max(line.timestamp_ms);
            printed.push((line.timestamp_ms, line.message));
        }
        // Held events the tailer printed are gone from `held`; remember the rest of what it
        // printed for Live Tail's copies, within a window.
        let horizon = s.released_ts.saturating_sub(CONFIRMED_WINDOW_MS);
        s.confirmed.retain(|(ts, _), _| *ts >= horizon);
        // GetLogEvents shows an event a little after Live Tail does: the pass must start a
        // margin after the session was trusted, or an event in between could be in neither.
        let trusted = self
            .trusted_since
            .is_some_and(|since| since + TRUST_MARGIN <= started);
        if caught_up && trusted {
            s.mode = Mode::Live;
            s.reconcile_every = RECONCILE_EVERY;
        }
        let source = s.source.clone();
        for (ts, message) in printed {
            let line = self.render(&source, ts, message);
            self.out.push(line);
            self.printed_any = true;
        }
        Ok(())
    }

    /// Prints held live events of stream `i` that are old enough, if it is live.
    fn release(&mut self, i: usize, now: Instant) {
        let Some(s) = self.streams.get_mut(i) else {
            return;
        };
        if s.mode != Mode::Live || s.held.is_empty() {
            return;
        }
        s.held.sort_by_key(|(_, seq, _, e)| (e.timestamp_ms, *seq));
        // An event whose window ended goes out with every older one: an older event that came
        // later is in order before it now, and would only be late after it.
        let Some(cut) = s
            .held
            .iter()
            .filter(|h| h.0 + self.window <= now)
            .map(|h| h.3.timestamp_ms)
            .max()
        else {
            return;
        };
        let split = s.held.partition_point(|h| h.3.timestamp_ms <= cut);
        let rest = s.held.split_off(split);
        let ready = std::mem::replace(&mut s.held, rest);
        let mut printed = Vec::new();
        let mut came_late = false;
        let mut seen_here: HashSet<Key> = HashSet::new();
        for (at, seq, k, e) in ready {
            if s.mode == Mode::Reconcile {
                // A discontinuity earlier in this batch: the tailer decides for the rest.
                s.held.push((at, seq, k, e));
                continue;
            }
            match s.confirmed.get_mut(&k) {
                // The tailer printed it: this is Live Tail's copy.
                Some(n) if *n > 0 => {
                    *n -= 1;
                    continue;
                }
                // Every copy the tailer showed is accounted for: another one is a duplicated
                // delivery or a real repeat, which only GetLogEvents can tell apart.
                Some(_) => {
                    s.mode = Mode::Reconcile;
                    s.next_reconcile = now;
                    continue;
                }
                None => {}
            }
            let duplicate = s.unconfirmed.contains_key(&k) || !seen_here.insert(k);
            if duplicate || e.timestamp_ms < s.released_ts {
                // Delivered twice, or late past a newer line: GetLogEvents decides what the
                // stream holds. (A real second copy is printed by the reconcile.)
                s.mode = Mode::Reconcile;
                s.next_reconcile = now;
                if !duplicate {
                    came_late = true;
                    s.held.push((at, seq, k, e));
                }
                continue;
            }
            add(&mut s.unconfirmed, k);
            s.unconfirmed_len += 1;
            s.released_ts = e.timestamp_ms;
            printed.push((e.timestamp_ms, e.message));
        }
        if s.unconfirmed_len > MAX_UNCONFIRMED {
            s.mode = Mode::Reconcile;
            s.next_reconcile = now;
        }
        if came_late {
            self.window = HOLDBACK;
        }
        let source = s.source.clone();
        for (ts, message) in printed {
            let line = self.render(&source, ts, message);
            self.out.push(line);
            self.printed_any = true;
        }
    }

    /// After the run: no more live events; every stream is drained through its tailer.
    async fn drain(&mut self, cancel: &CancellationToken) -> (Vec<String>, Option<String>) {
        let _ = self.take_items();
        self.session.stop.cancel();
        if let Some(task) = &self.session.task {
            task.abort();
        }
        // Streams Live Tail never showed (every line in a gap, or before the first session).
        if let Streams::Prefix(prefix) = self.streams_filter.clone()
            && let Some(Ok(names)) = tokio::select! {
                biased;
                () = cancel.cancelled() => None,
                r = list_streams(&self.client, &self.group, &prefix) => Some(r),
            }
        {
            for n in names {
                self.stream(&n);
            }
        }
        let mut out = std::mem::take(&mut self.out);
        let mut warning = None;
        let client = self.client.clone();
        for i in 0..self.streams.len() {
            let Some(s) = self.streams.get_mut(i) else {
                continue;
            };
            let (lines, failed) = match s.tailer.drain(&client, DRAIN_PASSES, cancel).await {
                Ok(lines) => (lines, None),
                Err(e) => (s.tailer.take_pending(), Some(e)),
            };
            let mut printed = Vec::new();
            for line in lines {
                let k = key(line.timestamp_ms, &line.message);
                if take(&mut s.unconfirmed, &k) {
                    continue;
                }
                if let Some(pos) = s.held.iter().position(|(_, _, hk, _)| *hk == k) {
                    s.held.remove(pos);
                }
                printed.push((line.timestamp_ms, line.message));
            }
            // After a complete drain GetLogEvents has shown every line: what Live Tail still
            // holds is a copy. After a failed one, it is printed rather than lost, unless
            // already printed.
            s.held.sort_by_key(|(_, seq, _, e)| (e.timestamp_ms, *seq));
            for (_, _, k, e) in std::mem::take(&mut s.held) {
                if failed.is_some()
                    && !s.confirmed.contains_key(&k)
                    && !s.unconfirmed.contains_key(&k)
                {
                    add(&mut s.unconfirmed, k);
                    printed.push((e.timestamp_ms, e.message));
                }
            }
            if let Some(e) = failed {
                warning = Some(format!("some log lines of {} may be missing: {e}", s.name));
            }
            let source = s.source.clone();
            for (ts, message) in printed {
                out.push(self.render(&source, ts, message));
            }
        }
        (out, warning)
    }
}

/// Sleeps until `due`; never without one.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// The streams of `group` whose names start with `prefix` (every page).
async fn list_streams(client: &Client, group: &str, prefix: &str) -> Result<Vec<String>, LogError> {
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..40 {
        let page = client
            .describe_log_streams()
            .log_group_name(group)
            .log_stream_name_prefix(prefix)
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(|e| LogError::DescribeLogStreams {
                group: group.to_owned(),
                prefix: prefix.to_owned(),
                source: Box::new(e),
            })?;
        names.extend(
            page.log_streams()
                .iter()
                .filter_map(|s| s.log_stream_name().map(str::to_owned))
                .filter(|n| n.starts_with(prefix)),
        );
        match page.next_token {
            Some(next) if token.as_deref() != Some(next.as_str()) => token = Some(next),
            _ => break,
        }
    }
    Ok(names)
}

impl<P: LineSource> LineSource for LiveLines<P> {
    type Status = P::Status;

    fn observe(&mut self, status: &P::Status) {
        for p in [&mut self.polling, &mut self.spare].into_iter().flatten() {
            p.observe(status);
        }
    }

    async fn poll(&mut self) -> Result<Vec<String>, LogError> {
        if let Some(live) = &mut self.inner {
            match live.take_items() {
                Ok(()) => return live.turn().await,
                Err(reason) => {
                    self.warning = Some(format!(
                        "CloudWatch Live Tail is not available ({reason}); reading the logs by polling"
                    ));
                    self.inner = None;
                    self.polling = self.spare.take();
                }
            }
        }
        match &mut self.polling {
            Some(p) => p.poll().await,
            None => Ok(Vec::new()),
        }
    }

    fn pushed(&self) -> bool {
        self.inner.is_some()
    }

    async fn ready(&mut self) {
        match &mut self.inner {
            Some(live) => live.ready().await,
            None => std::future::pending().await,
        }
    }

    fn take_warning(&mut self) -> Option<String> {
        self.warning
            .take()
            .or_else(|| self.inner.as_mut().and_then(|l| l.warning.take()))
    }

    async fn drain(&mut self, cancel: &CancellationToken) -> (Vec<String>, Option<String>) {
        if let Some(live) = &mut self.inner {
            return live.drain(cancel).await;
        }
        match &mut self.polling {
            Some(p) => p.drain(cancel).await,
            None => (Vec::new(), None),
        }
    }
}

#[cfg(test)]
mod tests;
