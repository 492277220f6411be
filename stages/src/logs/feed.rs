//! The log feed: a task that reads a job's log source and hands rendered lines to the wait loop
//! over a channel, so log reads never wait for status calls (or the reverse). A polled source is
//! read at the feed's cadence; a pushed one (Live Tail) is read when it says it is ready, so a
//! quiet job costs no wake-up at all. The wait loop tells the source what the status says
//! (which streams are live); at the end, [`LogFeed::finish`] stops the task, takes the source
//! back, and drains it.
//!
//! # Guarantees
//! - Stopping the task mid-read is safe: the tailer moves no cursor for a call that did not
//!   complete (see `tailer.rs`), so the drain re-reads nothing and skips nothing.
//! - Lines leave in the order the source produced them; one batch per successful poll.

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::LogError;
use crate::watch::{Cadence, RetryDelays};

/// What the feed hands the wait loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedItem {
    /// Rendered lines, in order.
    Lines(Vec<String>),
    /// A log read failed in a way that will not fix itself (said once).
    Warn(String),
}

/// Where a job's log lines come from (CloudWatch streams of hosts or containers).
pub trait LineSource: Send + 'static {
    /// The status the wait loop describes; tells the source which streams are live.
    type Status: Clone + Send + Sync + 'static;

    /// Learns from a status which streams are worth reading.
    fn observe(&mut self, status: &Self::Status);

    /// Reads what is new, rendered for the job log.
    fn poll(&mut self) -> impl Future<Output = Result<Vec<String>, LogError>> + Send;

    /// Whether lines are pushed to the source: then it is read when [`LineSource::ready`]
    /// resolves, and the feed's cadence only paces retries after a failed read. Sources that
    /// read by polling keep these two as they are.
    fn pushed(&self) -> bool {
        false
    }

    /// Resolves when a pushed source has something to do: input arrived, or a deadline of its
    /// own came. Must be cancel-safe (the feed drops it when the status changes).
    fn ready(&mut self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }

    /// A warning the source wants shown once (it gave up a faster way of reading and reads the
    /// way it always could); asked after every poll.
    fn take_warning(&mut self) -> Option<String> {
        None
    }

    /// After the remote work ended: reads every stream to its end. Lines first, then a warning
    /// if some may be missing.
    fn drain(
        &mut self,
        cancel: &CancellationToken,
    ) -> impl Future<Output = (Vec<String>, Option<String>)> + Send;
}

/// A source with no lines, for waits that follow no logs.
#[derive(Debug)]
pub struct NoLines<S>(PhantomData<fn() -> S>);

impl<S> Default for NoLines<S> {
    fn default() -> Self {
        NoLines(PhantomData)
    }
}

impl<S: Clone + Send + Sync + 'static> LineSource for NoLines<S> {
    type Status = S;

    fn observe(&mut self, _status: &S) {}

    async fn poll(&mut self) -> Result<Vec<String>, LogError> {
        Ok(Vec::new())
    }

    async fn drain(&mut self, _cancel: &CancellationToken) -> (Vec<String>, Option<String>) {
        (Vec::new(), None)
    }
}

/// A running feed.
#[derive(Debug)]
pub struct LogFeed<L: LineSource> {
    items: mpsc::Receiver<FeedItem>,
    status: watch::Sender<Option<L::Status>>,
    stop: CancellationToken,
    task: JoinHandle<L>,
}

/// How often the feed reads a polled source: `active` while lines flow, growing (x2) to `idle`
/// while quiet. It also paces the retries of a pushed source whose read failed.
#[derive(Debug, Clone, Copy)]
pub struct FeedCadence {
    /// Interval while lines flow.
    pub active: Duration,
    /// Longest interval while quiet (and after failures).
    pub idle: Duration,
}

impl<L: LineSource> LogFeed<L> {
    /// Starts polling `source`.
    pub fn start(mut source: L, cadence: FeedCadence) -> LogFeed<L> {
        let (tx, items) = mpsc::channel(64);
        let (status, mut status_rx) = watch::channel::<Option<L::Status>>(None);
        let stop = CancellationToken::new();
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let mut every = Cadence::new(cadence.active, cadence.idle).with_growth(2, 1);
            let mut retries = RetryDelays::new();
            let mut warned = false;
            // After a failed read the retry schedule decides when to read again, pushed or not.
            let mut failing = false;
            // A deadline, not a sleep per turn: a status change must not push the next read back.
            let mut next = Instant::now() + cadence.active;
            loop {
                let pushed = source.pushed() && !failing;
                tokio::select! {
                    biased;
                    () = stopping.cancelled() => break,
                    changed = status_rx.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let current = status_rx.borrow_and_update().clone();
                        if let Some(s) = current {
                            source.observe(&s);
                        }
                        // A stream may just have come alive: read soon, never later than planned.
                        every.reset();
                        next = next.min(Instant::now() + cadence.active);
                        continue;
                    }
                    () = source.ready(), if pushed => {}
                    () = tokio::time::sleep_until(next), if !pushed => {}
                }
                let result = tokio::select! {
                    biased;
                    () = stopping.cancelled() => break,
                    r = source.poll() => r,
                };
                failing = result.is_err();
                if !failing {
                    retries.reset();
                }
                if let Some(text) = source.take_warning()
                    && tx.send(FeedItem::Warn(text)).await.is_err()
                {
                    break;
                }
                let wait = match result {
                    Ok(lines) if lines.is_empty() => every.next(false),
                    Ok(lines) => {
                        if tx.send(FeedItem::Lines(lines)).await.is_err() {
                            break;
                        }
                        every.next(true)
                    }
                    // Nothing advanced; the next poll reads the same events again.
                    Err(e) if e.is_transient() => retries.after_failure(),
                    Err(e) => {
                        if !warned {
                            warned = true;
                            let _ = tx
                                .send(FeedItem::Warn(format!("cannot read the logs: {e}")))
                                .await;
                        }
                        // Another try will not fix it soon: slow down towards the idle interval.
                        every.next(false)
                    }
                };
                next = Instant::now() + wait;
            }
            source
        });
        LogFeed {
            items,
            status,
            stop,
            task,
        }
    }

    /// The next item, when there is one.
    pub async fn recv(&mut self) -> Option<FeedItem> {
        self.items.recv().await
    }

    /// Tells the source what the status says.
    pub fn observe(&self, status: &L::Status) {
        let _ = self.status.send(Some(status.clone()));
    }

    /// Stops the task and returns what it had sent but nobody read yet, and the source (which
    /// has seen the latest status, even one the task had no time to pass on).
    pub async fn stop(mut self) -> (Vec<FeedItem>, Option<L>) {
        self.stop.cancel();
        // Not closed: a send in progress completes, so no line already read is lost; the task
        // ends at its next turn and drops the sender.
        let mut pending = Vec::new();
        while let Some(item) = self.items.recv().await {
            pending.push(item);
        }
        // A panicked feed task loses only log lines; the job's outcome does not depend on them.
        let mut source = self.task.await.ok();
        if let (Some(source), Some(status)) = (source.as_mut(), self.status.borrow().clone()) {
            source.observe(&status);
        }
        (pending, source)
    }

    /// Stops the task, then drains the source: every item not yet printed, in order, and a
    /// warning when lines may be missing.
    pub async fn finish(self, cancel: &CancellationToken) -> (Vec<FeedItem>, Option<L>) {
        let (mut items, source) = self.stop().await;
        let Some(mut source) = source else {
            items.push(FeedItem::Warn(
                "the log reader stopped unexpectedly; some lines may be missing".to_owned(),
            ));
            return (items, None);
        };
        let (lines, warning) = source.drain(cancel).await;
        if !lines.is_empty() {
            items.push(FeedItem::Lines(lines));
        }
        if let Some(w) = warning {
            items.push(FeedItem::Warn(w));
        }
        (items, Some(source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts its polls and always has one line, so the feed keeps its active interval.
    struct Counting;

    impl LineSource for Counting {
        type Status = u32;

        fn observe(&mut self, _status: &u32) {}

        async fn poll(&mut self) -> Result<Vec<String>, LogError> {
            Ok(vec![format!("at {:?}", Instant::now())])
        }

        async fn drain(&mut self, _cancel: &CancellationToken) -> (Vec<String>, Option<String>) {
            (Vec::new(), None)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn status_changes_do_not_postpone_the_next_read() {
        let active = Duration::from_secs(5);
        let mut feed = LogFeed::start(
            Counting,
            FeedCadence {
                active,
                idle: Duration::from_secs(15),
            },
        );
        let started = Instant::now();
        // A status every 3 s: each one used to restart the 5 s sleep, so no read ever came.
        let mut reads = Vec::new();
        for status in 0..10u32 {
            tokio::select! {
                item = feed.recv() => {
                    reads.push(item.expect("feed ended"));
                }
                () = tokio::time::sleep(Duration::from_secs(3)) => feed.observe(&status),
            }
        }
        let elapsed = Instant::now() - started;
        assert!(
            reads.len() >= 3,
            "{} reads in {elapsed:?} with a status every 3 s",
            reads.len()
        );
        let _ = feed.stop().await;
    }
}
