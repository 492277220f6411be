//! The tailer: stream discovery, one forward cursor per stream, page following, the timestamp
//! merge, and the final drain.
//!
//! # State machine
//!
//! Each stream is an explicit [`TailState`]:
//!
//! ```text
//!   AwaitStream --GetLogEvents ok (startFromHead)--> Tailing{token}
//!   AwaitStream --ResourceNotFound-------------------> AwaitStream      (not there yet)
//!   Tailing{t}  --ok, token t' != t------------------> Tailing{t'}      (follow the next page)
//!   Tailing{t}  --ok, token t------------------------> Tailing{t}       (caught up: stop)
//!   any         --error------------------------------> unchanged        (retried next pass)
//! ```
//!
//! The state only moves after a call succeeded, and the lines that call returned are queued on
//! the stream in the same synchronous step, so an error, or a pass dropped at an `.await` (the
//! drain races passes against cancellation), can neither skip nor repeat a line. Queued lines
//! leave the tailer only through the timestamp merge in [`LogTailer::poll`] and friends.
//!
//! The drain is a second, small machine over whole passes ([`DrainState`]): read until a pass
//! moves no token, then one extra pass because CloudWatch makes events readable a little after
//! they were written; any activity in that extra pass starts settling again.
//!
//! The tailer is a step function rather than a `Stream`: the wait loop already owns the
//! cadence (it interleaves status polls), so the step function is exposed as `poll` instead.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet, VecDeque};
use std::time::Duration;

use aws_sdk_cloudwatchlogs::Client;
use tokio_util::sync::CancellationToken;

use super::error::LogError;
use super::line::LogLine;
use super::naming::StreamNaming;

/// Streams asked for per `DescribeLogStreams` page (the API maximum).
const DESCRIBE_PAGE_SIZE: i32 = 50;
/// Discovery pages per pass: 2,000 streams is far beyond any training cluster; the cap only
/// guards against a service that keeps handing out new tokens.
const MAX_DESCRIBE_PAGES_PER_PASS: u32 = 40;
/// `GetLogEvents` pages per stream per pass. CloudWatch may return empty pages with a new token
/// in the middle of a stream, so a chain of them must not hold a pass forever; the rest is read
/// on the next pass.
const MAX_PAGES_PER_STREAM_PER_PASS: u32 = 10;
/// Queued log text above which a pass stops reading and hands what it has to the caller. One
/// `GetLogEvents` page is at most 1 MB, so the peak is about this plus one page.
const BUFFER_BUDGET_BYTES: usize = 2 * 1024 * 1024;
/// Bookkeeping per queued line (the `LogLine` and its strings' headers), for the budget.
const LINE_OVERHEAD_BYTES: usize = 64;
/// A page this large may have been cut by the 1 MB / 10,000-event response limit, so under
/// [`PageFollow::WhileBacklogged`] it is worth following at once.
const FULL_PAGE_EVENTS: usize = 10_000;
/// Byte size from which a page counts as possibly cut short (under the 1 MB response cap, which
/// also counts JSON framing).
const FULL_PAGE_BYTES: usize = 768 * 1024;
/// When the number of streams is unknown, rediscover on one live poll in this many once at least
/// one stream is known (every poll before that), to bound `DescribeLogStreams` calls.
const REDISCOVER_EVERY_POLLS: u64 = 6;
/// Default wait between drain passes: long enough for CloudWatch to make late events readable.
const DEFAULT_DRAIN_INTERVAL: Duration = Duration::from_secs(2);

/// Where one stream's read position stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TailState {
    /// Never read successfully (just discovered, or a named stream that does not exist yet): the
    /// next read starts at the head of the stream.
    AwaitStream,
    /// Read at least once: the next read resumes from this `nextForwardToken`.
    Tailing { token: String },
}

/// One tailed log stream.
#[derive(Debug)]
struct StreamCursor {
    name: String,
    source: String,
    state: TailState,
    /// Whether the stream is known to exist (discovered, or answered a read).
    exists: bool,
    /// Lines read but not yet handed out, in the order CloudWatch returned them.
    queue: VecDeque<LogLine>,
    /// Timestamp of the last event read, for an event that arrives without one.
    last_timestamp_ms: i64,
}

impl StreamCursor {
    fn new(name: String, naming: StreamNaming, exists: bool) -> Self {
        let source = naming.source_of(&name);
        StreamCursor {
            name,
            source,
            state: TailState::AwaitStream,
            exists,
            queue: VecDeque::new(),
            last_timestamp_ms: 0,
        }
    }
}

/// How streams are found.
#[derive(Debug)]
enum Discovery {
    /// Named up front (ECS awslogs); `DescribeLogStreams` is never called.
    Fixed,
    /// Found with `DescribeLogStreams` by name prefix.
    ByPrefix {
        prefix: String,
        /// Once this many streams are known, discovery stops (minimal calls).
        expected: Option<usize>,
        /// Set when `expected` streams are known; cleared by [`LogTailer::rediscover`].
        complete: bool,
    },
}

/// How far [`LogTailer::poll`] follows a stream's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PageFollow {
    /// Follow pages until the forward token repeats: the stream is read to its end on every poll.
    /// An active stream costs two calls per poll (the page, then the call that confirms the end).
    #[default]
    UntilCaughtUp,
    /// Follow only pages that may have been cut by the response size limit (or empty pages with a
    /// new token); otherwise stop after one page. An active stream then costs one call per poll,
    /// and any remainder is read on the next poll: later, never lost. The drain always reads to
    /// the end regardless.
    WhileBacklogged,
}

/// What one pass over the streams achieved; a quiet pass is what the drain waits for.
#[derive(Debug, Default, Clone, Copy)]
struct PassReport {
    /// Some stream's token moved, or a new stream was found.
    advanced: bool,
    /// The pass stopped early (buffer budget, page cap) with data possibly left unread.
    cut_short: bool,
}

impl PassReport {
    fn quiet(self) -> bool {
        !self.advanced && !self.cut_short
    }
}

/// The drain's state over whole passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DrainState {
    /// Reading until a pass moves no token.
    Settling,
    /// One pass moved nothing; one more after a pause, because CloudWatch lags.
    ExtraPass,
    /// The extra pass was quiet too: everything written has been read.
    Done,
}

impl DrainState {
    fn after(self, pass: PassReport) -> DrainState {
        match (self, pass.quiet()) {
            (DrainState::Settling, true) => DrainState::ExtraPass,
            (DrainState::ExtraPass, true) | (DrainState::Done, _) => DrainState::Done,
            (DrainState::Settling | DrainState::ExtraPass, false) => DrainState::Settling,
        }
    }
}

/// Tails the CloudWatch log streams of one remote job. See the module docs for the guarantees.
#[derive(Debug)]
pub struct LogTailer {
    group: String,
    naming: StreamNaming,
    discovery: Discovery,
    streams: Vec<StreamCursor>,
    names: HashSet<String>,
    /// Lines already merged by an interrupted drain, handed out before anything newer.
    carry: Vec<LogLine>,
    /// Approximate size of `carry` plus every stream queue, for [`BUFFER_BUDGET_BYTES`].
    buffered_bytes: usize,
    /// Where the next pass starts: just after the stream that failed last, so one failing stream
    /// is retried last instead of starving the others.
    next_start: usize,
    polls: u64,
    calls: u64,
    follow: PageFollow,
    drain_interval: Duration,
}

impl LogTailer {
    fn new(group: String, naming: StreamNaming, discovery: Discovery) -> Self {
        LogTailer {
            group,
            naming,
            discovery,
            streams: Vec::new(),
            names: HashSet::new(),
            carry: Vec::new(),
            buffered_bytes: 0,
            next_start: 0,
            polls: 0,
            calls: 0,
            follow: PageFollow::default(),
            drain_interval: DEFAULT_DRAIN_INTERVAL,
        }
    }

    /// Streams discovered by name prefix (SageMaker: prefix `"<job-name>/"`).
    ///
    /// With `expected_streams` (SageMaker: the instance count), `DescribeLogStreams` stops being
    /// called once that many streams are known; without it, it is called on every poll until a
    /// stream appears, then on one poll in six.
    pub fn discover(
        group: impl Into<String>,
        stream_prefix: impl Into<String>,
        naming: StreamNaming,
        expected_streams: Option<usize>,
    ) -> Self {
        LogTailer::new(
            group.into(),
            naming,
            Discovery::ByPrefix {
                prefix: stream_prefix.into(),
                expected: expected_streams,
                complete: expected_streams == Some(0),
            },
        )
    }

    /// Streams known by name (ECS awslogs: `"<prefix>/<container>/<task-id>"`). A stream that
    /// does not exist yet is simply not there yet; duplicate names are tailed once.
    pub fn fixed(
        group: impl Into<String>,
        stream_names: Vec<String>,
        naming: StreamNaming,
    ) -> Self {
        let mut tailer = LogTailer::new(group.into(), naming, Discovery::Fixed);
        for name in stream_names {
            tailer.add_stream(name, false);
        }
        tailer
    }

    /// Chooses how far live polls follow pages (see [`PageFollow`]); the default reads every
    /// stream to its end on each poll.
    pub fn with_page_follow(mut self, follow: PageFollow) -> Self {
        self.follow = follow;
        self
    }

    /// Sets the pause between drain passes (default 2 s).
    pub fn with_drain_interval(mut self, interval: Duration) -> Self {
        self.drain_interval = interval;
        self
    }

    /// Resumes discovery after it completed: a SageMaker host that restarts (spot interruption,
    /// warm-pool reuse) writes to a new stream with a new epoch suffix, which the expected count
    /// would otherwise hide. Call it on a secondary-status transition back to a running state.
    pub fn rediscover(&mut self) {
        if let Discovery::ByPrefix { complete, .. } = &mut self.discovery {
            *complete = false;
        }
    }

    /// Number of streams being tailed (discovered, or named for a fixed tailer).
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Every CloudWatch Logs API call made so far, failed ones included (SDK-internal retries of
    /// one call count once).
    pub fn calls_made(&self) -> u64 {
        self.calls
    }

    /// Distinct sources (hosts or containers) among the streams known to exist, so the caller
    /// can decide whether lines need a host prefix.
    pub fn sources(&self) -> usize {
        self.streams
            .iter()
            .filter(|s| s.exists)
            .map(|s| s.source.as_str())
            .collect::<HashSet<_>>()
            .len()
    }

    /// One pass: discover new streams if needed, read each stream forward from its cursor, and
    /// return the new lines merged by timestamp (the order within a stream is CloudWatch's).
    ///
    /// # Errors
    ///
    /// On a failed call the error is returned and nothing advanced for the failing stream; lines
    /// already read in this pass stay queued and come first from the next successful `poll`
    /// (or from [`take_pending`](Self::take_pending) when the caller gives up). A missing group
    /// or stream is not an error: it means no logs yet.
    pub async fn poll(&mut self, client: &Client) -> Result<Vec<LogLine>, LogError> {
        self.poll_to_end(client).await.map(|(lines, _)| lines)
    }

    /// Like [`poll`](Self::poll), and whether the pass read every stream to its end as far as
    /// CloudWatch showed it (only with [`PageFollow::UntilCaughtUp`]; false when it stopped
    /// early with data possibly left): what Live Tail's gap reconciliation waits for.
    ///
    /// # Errors
    /// As for `poll`.
    pub async fn poll_to_end(&mut self, client: &Client) -> Result<(Vec<LogLine>, bool), LogError> {
        self.polls = self.polls.saturating_add(1);
        // After repeated failures of one stream the others' lines pile up; once the budget is
        // reached, hand them out instead of reading more, which keeps memory bounded.
        let mut caught_up = false;
        if self.buffered_bytes < BUFFER_BUDGET_BYTES {
            let follow = self.follow;
            let report = self.pass(client, follow, false).await?;
            caught_up = follow == PageFollow::UntilCaughtUp && !report.cut_short;
        }
        Ok((self.take_pending(), caught_up))
    }

    /// After the job ended: read until no stream's token moves, then one extra pass after
    /// [`with_drain_interval`](Self::with_drain_interval), bounded by `max_passes` and stopped by
    /// `cancel`. Returns every line read, merged pass by pass.
    ///
    /// Transient errors inside the drain are retried on the next pass (a failed pass counts
    /// towards `max_passes`).
    ///
    /// # Errors
    ///
    /// A permanent error, or a transient one on the last allowed pass. The lines read before it
    /// are not lost: they come first from the next `poll`, `drain` or `take_pending`.
    pub async fn drain(
        &mut self,
        client: &Client,
        max_passes: u32,
        cancel: &CancellationToken,
    ) -> Result<Vec<LogLine>, LogError> {
        let mut out = Vec::new();
        match self
            .drain_with(client, max_passes, cancel, |lines| out.extend(lines))
            .await
        {
            Ok(()) => Ok(out),
            Err(err) => {
                // Put back what was read so an error cannot lose it; it is older than anything
                // still queued, so it goes first.
                self.buffered_bytes = self.buffered_bytes.saturating_add(bytes_of(&out));
                out.append(&mut self.carry);
                self.carry = out;
                Err(err)
            }
        }
    }

    /// Like [`drain`](Self::drain), but hands each pass's lines to `sink` as soon as they are
    /// merged, so memory stays bounded however much the job wrote at the end.
    ///
    /// # Errors
    ///
    /// As for `drain`; every line read before the error has been given to `sink`.
    pub async fn drain_with(
        &mut self,
        client: &Client,
        max_passes: u32,
        cancel: &CancellationToken,
        mut sink: impl FnMut(Vec<LogLine>),
    ) -> Result<(), LogError> {
        let mut state = DrainState::Settling;
        let mut passes = 0u32;
        let mut last_error = None;
        while state != DrainState::Done && passes < max_passes && !cancel.is_cancelled() {
            if passes > 0 {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(self.drain_interval) => {}
                }
            }
            passes += 1;
            // Dropping the pass at an `.await` is safe: see the module docs.
            let result = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                result = self.pass(client, PageFollow::UntilCaughtUp, true) => result,
            };
            match result {
                Ok(report) => {
                    last_error = None;
                    state = state.after(report);
                }
                Err(err) if err.is_transient() => {
                    last_error = Some(err);
                    state = DrainState::Settling;
                }
                Err(err) => {
                    deliver(&mut sink, self.take_pending());
                    return Err(err);
                }
            }
            deliver(&mut sink, self.take_pending());
        }
        deliver(&mut sink, self.take_pending());
        match last_error {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Hands out every line read but not yet returned, merged by timestamp: what a caller that
    /// stops tailing after an error should still print.
    pub fn take_pending(&mut self) -> Vec<LogLine> {
        let mut out = std::mem::take(&mut self.carry);
        out.reserve(self.streams.iter().map(|s| s.queue.len()).sum());
        // k-way merge on the queue heads: equal timestamps go to the earlier-discovered stream,
        // and a stream's own order is never changed, even if its timestamps are not monotonic.
        let mut heads: BinaryHeap<Reverse<(i64, usize)>> = self
            .streams
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.queue.front().map(|l| Reverse((l.timestamp_ms, i))))
            .collect();
        while let Some(Reverse((_, i))) = heads.pop() {
            let Some(stream) = self.streams.get_mut(i) else {
                continue;
            };
            if let Some(line) = stream.queue.pop_front() {
                out.push(line);
            }
            if let Some(next) = stream.queue.front() {
                heads.push(Reverse((next.timestamp_ms, i)));
            }
        }
        for stream in &mut self.streams {
            // A burst must not pin its peak memory for the rest of the job.
            if stream.queue.capacity() > 1024 {
                stream.queue.shrink_to_fit();
            }
        }
        self.buffered_bytes = 0;
        out
    }

    /// Registers a stream once; returns whether it was new.
    fn add_stream(&mut self, name: String, exists: bool) -> bool {
        if self.names.contains(&name) {
            return false;
        }
        self.names.insert(name.clone());
        self.streams
            .push(StreamCursor::new(name, self.naming, exists));
        true
    }

    /// Whether this pass should call `DescribeLogStreams`.
    fn wants_discovery(&self, draining: bool) -> bool {
        match &self.discovery {
            Discovery::Fixed => false,
            Discovery::ByPrefix { complete: true, .. } => false,
            Discovery::ByPrefix {
                expected: Some(_), ..
            } => true,
            Discovery::ByPrefix { expected: None, .. } => {
                draining || self.streams.is_empty() || self.polls % REDISCOVER_EVERY_POLLS == 1
            }
        }
    }

    /// One pass over discovery and every stream. Stops at the first failed call.
    async fn pass(
        &mut self,
        client: &Client,
        follow: PageFollow,
        draining: bool,
    ) -> Result<PassReport, LogError> {
        let mut report = PassReport::default();
        if self.wants_discovery(draining) && self.discover_streams(client).await? {
            report.advanced = true;
        }
        let count = self.streams.len();
        let start = if self.next_start < count {
            self.next_start
        } else {
            0
        };
        for k in 0..count {
            let index = (start + k) % count;
            if self.buffered_bytes >= BUFFER_BUDGET_BYTES {
                report.cut_short = true;
                break;
            }
            if let Err(err) = self.read_stream(client, index, follow, &mut report).await {
                self.next_start = index + 1;
                return Err(err);
            }
        }
        self.next_start = 0;
        Ok(report)
    }

    /// Pages through `DescribeLogStreams` (following `nextToken`, which the SageMaker SDK's loop
    /// forgets above 50 streams) and registers new streams. Returns whether any was new.
    async fn discover_streams(&mut self, client: &Client) -> Result<bool, LogError> {
        let (prefix, expected) = match &self.discovery {
            Discovery::ByPrefix {
                prefix, expected, ..
            } => (prefix.clone(), *expected),
            Discovery::Fixed => return Ok(false),
        };
        let mut found = false;
        let mut token: Option<String> = None;
        for _ in 0..MAX_DESCRIBE_PAGES_PER_PASS {
            self.calls = self.calls.saturating_add(1);
            let page = client
                .describe_log_streams()
                .log_group_name(&self.group)
                .log_stream_name_prefix(&prefix)
                .limit(DESCRIBE_PAGE_SIZE)
                .set_next_token(token.clone())
                .send()
                .await;
            let page = match page {
                Ok(page) => page,
                // The group is created on the first write: no group, no logs yet.
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(|e| e.is_resource_not_found_exception()) =>
                {
                    return Ok(found);
                }
                Err(err) => {
                    return Err(LogError::DescribeLogStreams {
                        group: self.group.clone(),
                        prefix,
                        source: Box::new(err),
                    });
                }
            };
            for stream in page.log_streams.unwrap_or_default() {
                if let Some(name) = stream.log_stream_name {
                    // The prefix filter is the service's; checking it again costs nothing and
                    // keeps a misbehaving endpoint from feeding us foreign streams.
                    if name.starts_with(&prefix) && self.add_stream(name, true) {
                        found = true;
                    }
                }
            }
            if expected.is_some_and(|n| self.streams.len() >= n) {
                if let Discovery::ByPrefix { complete, .. } = &mut self.discovery {
                    *complete = true;
                }
                break;
            }
            match page.next_token {
                Some(next) if !next.is_empty() && token.as_deref() != Some(next.as_str()) => {
                    token = Some(next);
                }
                _ => break,
            }
        }
        Ok(found)
    }

    /// Reads one stream forward from its cursor, following pages as `follow` says.
    async fn read_stream(
        &mut self,
        client: &Client,
        index: usize,
        follow: PageFollow,
        report: &mut PassReport,
    ) -> Result<(), LogError> {
        for page_number in 0..MAX_PAGES_PER_STREAM_PER_PASS {
            if page_number > 0 && self.buffered_bytes >= BUFFER_BUDGET_BYTES {
                report.cut_short = true;
                return Ok(());
            }
            let Some(stream) = self.streams.get(index) else {
                return Ok(());
            };
            let old_token = match &stream.state {
                TailState::AwaitStream => None,
                TailState::Tailing { token } => Some(token.clone()),
            };
            let name = stream.name.clone();
            self.calls = self.calls.saturating_add(1);
            // `startFromHead` on every call: the default returns the newest events first, and
            // the API requires it alongside a previous `nextForwardToken`.
            let response = client
                .get_log_events()
                .log_group_name(&self.group)
                .log_stream_name(&name)
                .start_from_head(true)
                .set_next_token(old_token.clone())
                .send()
                .await;
            let page = match response {
                Ok(page) => page,
                // Not created yet (ECS: the container has not started): nothing to read.
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(|e| e.is_resource_not_found_exception()) =>
                {
                    return Ok(());
                }
                Err(err) => {
                    return Err(LogError::GetLogEvents {
                        group: self.group.clone(),
                        stream: name,
                        source: Box::new(err),
                    });
                }
            };
            let Some(new_token) = page.next_forward_token else {
                return Err(LogError::MissingForwardToken {
                    group: self.group.clone(),
                    stream: name,
                });
            };
            let events = page.events.unwrap_or_default();
            let event_count = events.len();

            // Commit: queue the lines and move the cursor in one synchronous step.
            let Some(stream) = self.streams.get_mut(index) else {
                return Ok(());
            };
            stream.exists = true;
            let mut page_bytes = 0usize;
            for event in events {
                let timestamp_ms = event
                    .timestamp
                    .or(event.ingestion_time)
                    .unwrap_or(stream.last_timestamp_ms);
                stream.last_timestamp_ms = timestamp_ms;
                let message = event.message.unwrap_or_default();
                page_bytes = page_bytes
                    .saturating_add(message.len() + stream.source.len() + LINE_OVERHEAD_BYTES);
                stream.queue.push_back(LogLine {
                    timestamp_ms,
                    source: stream.source.clone(),
                    message,
                });
            }
            self.buffered_bytes = self.buffered_bytes.saturating_add(page_bytes);
            let moved = old_token.as_deref() != Some(new_token.as_str());
            stream.state = TailState::Tailing { token: new_token };

            if !moved {
                // Same token back: the stream is caught up. Asking again would return the same.
                return Ok(());
            }
            report.advanced = true;
            let follow_on = match follow {
                PageFollow::UntilCaughtUp => true,
                // An empty page with a new token can sit before more events; a full page may
                // have been cut by the response limit. Anything else is most likely the end,
                // and if not, the next poll reads the rest.
                PageFollow::WhileBacklogged => {
                    event_count == 0
                        || event_count >= FULL_PAGE_EVENTS
                        || page_bytes >= FULL_PAGE_BYTES
                }
            };
            if !follow_on {
                return Ok(());
            }
        }
        // Page cap reached with the token still moving: there may be more to read.
        report.cut_short = true;
        Ok(())
    }
}

/// Approximate queued size of lines, for the buffer budget.
fn bytes_of(lines: &[LogLine]) -> usize {
    lines.iter().fold(0usize, |acc, l| {
        acc.saturating_add(l.message.len() + l.source.len() + LINE_OVERHEAD_BYTES)
    })
}

/// Calls `sink` only with something to say.
fn deliver(sink: &mut impl FnMut(Vec<LogLine>), lines: Vec<LogLine>) {
    if !lines.is_empty() {
        sink(lines);
    }
}
