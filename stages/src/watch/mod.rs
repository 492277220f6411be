//! The one wait loop for long operations: [`follow`] describes a remote resource at a
//! [`Cadence`] until a pure judge says it is done, the deadline passes or the job is cancelled.
//!
//! One `select!` over cancellation, the deadline, the in-flight Describe (raced against
//! cancellation, so a SIGTERM during a stalled call ends the wait at once), the next tick, push
//! hints (which only mean "describe now") and the log feed. Log lines arrive from their own task
//! ([`crate::logs::feed`]) at their own cadence, so a throttled or slow status call never holds
//! them back; lines that arrive before the remote script's phase is shown are held until the
//! status has been read, so they land in the right section.
//!
//! A failed Describe that another try can fix (throttling, 5xx, timeouts) is tried again after a
//! jittered exponential delay ([`RetryDelays`]) and counts against one budget of consecutive
//! failures; anything else, or an exhausted budget, ends the wait with the error. Failures leave
//! the status cadence where it was, so the end of a job is noticed as soon after a throttling
//! burst as before it.
//!
//! With a push source ([`events`]) the loop gets [`Hint`]s: `Changed` describes now (or right
//! after the call in flight, which may predate the change), `Relax` lets status calls slow to a
//! safety interval while the source is proven to deliver, and `Lost` puts the normal cadence
//! back at once, with one warning in the job log.

pub mod cadence;
pub mod events;
pub mod host;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

pub use cadence::{Cadence, RetryDelays};

use crate::aws::errors::{AwsCallError, Retry};
use crate::logs::feed::{FeedItem, LogFeed};

/// Consecutive failed describes (after which the wait gives up) by default.
pub const DEFAULT_FAILURE_BUDGET: u32 = 20;

/// An error a Describe call can end with, sorted by what another try achieves.
pub trait Retryable: std::error::Error {
    /// What another try can achieve.
    fn retry(&self) -> Retry;
}

impl Retryable for AwsCallError {
    fn retry(&self) -> Retry {
        AwsCallError::retry(self)
    }
}

/// A Describe call in flight; owns what it needs, so it can run while the loop does other work.
pub type Describe<S, E> = Pin<Box<dyn Future<Output = Result<S, E>> + Send + 'static>>;

/// What [`follow`] watches: one remote resource of one action.
pub trait Watched {
    /// What a Describe returns.
    type Status: Send + 'static;
    /// What the judge returns once the wait is over.
    type Done;
    /// The Describe error.
    type Error: Retryable + Send + 'static;

    /// Starts one Describe call.
    fn describe(&self) -> Describe<Self::Status, Self::Error>;

    /// Shows what changed in the job log (sections, transitions); true when anything did, which
    /// resets the cadence. Called for every successful Describe, before [`Watched::judge`].
    fn observe(&mut self, status: &Self::Status) -> bool;

    /// Pure: `Some` when the wait is over.
    fn judge(&self, status: &Self::Status) -> Option<Self::Done>;

    /// Prints a warning (a push source that stopped working, the log feed's troubles).
    fn warn(&mut self, text: &str);
}

/// A wait that also shows a remote run's log lines ([`follow_lines`]).
pub trait ShowsLines: Watched {
    /// Whether log lines may be printed now (false while an earlier phase's section is open, so
    /// the first lines of the script wait for the status that opens its section).
    fn lines_ready(&self) -> bool;

    /// Prints lines from the log feed.
    fn print_lines(&mut self, lines: &[String]);
}

/// A wait without log lines, for [`follow`]: lines never come, so there is nothing to hold.
struct Silent<'w, W>(&'w mut W);

impl<W: Watched> Watched for Silent<'_, W> {
    type Status = W::Status;
    type Done = W::Done;
    type Error = W::Error;

    fn describe(&self) -> Describe<W::Status, W::Error> {
        self.0.describe()
    }

    fn observe(&mut self, status: &W::Status) -> bool {
        self.0.observe(status)
    }

    fn judge(&self, status: &W::Status) -> Option<W::Done> {
        self.0.judge(status)
    }

    fn warn(&mut self, text: &str) {
        self.0.warn(text);
    }
}

impl<W: Watched> ShowsLines for Silent<'_, W> {
    fn lines_ready(&self) -> bool {
        true
    }

    fn print_lines(&mut self, _lines: &[String]) {}
}

/// How a wait ended.
#[derive(Debug)]
pub enum Followed<T, S> {
    /// The judge said done; the last status.
    Done(T, S),
    /// Cancellation arrived; the last status, if any.
    Cancelled(Option<S>),
    /// The deadline passed; the last status, if any.
    TimedOut(Option<S>),
}

/// Why a wait gave up.
#[derive(Debug, thiserror::Error)]
pub enum WatchError<E: std::error::Error + 'static> {
    /// Describe failed in a way another try cannot fix.
    #[error(transparent)]
    Describe(E),
    /// Describe kept failing with retryable errors past the budget.
    #[error("{failures} Describe calls in a row failed; the last: {last}")]
    Exhausted {
        /// How many.
        failures: u32,
        /// The last error.
        #[source]
        last: E,
    },
}

/// What a wait needs besides the watched resource.
#[derive(Debug)]
pub struct Options<'a> {
    /// The status cadence.
    pub cadence: Cadence,
    /// When to give up (`None`: never).
    pub deadline: Option<Instant>,
    /// Cancelled on SIGTERM.
    pub cancel: &'a CancellationToken,
    /// Consecutive retryable failures tolerated.
    pub failure_budget: u32,
}

impl<'a> Options<'a> {
    /// Defaults: no deadline, [`DEFAULT_FAILURE_BUDGET`].
    pub fn new(cadence: Cadence, cancel: &'a CancellationToken) -> Options<'a> {
        Options {
            cadence,
            deadline: None,
            cancel,
            failure_budget: DEFAULT_FAILURE_BUDGET,
        }
    }

    /// Gives up at `deadline`.
    pub fn with_deadline(mut self, deadline: Instant) -> Options<'a> {
        self.deadline = Some(deadline);
        self
    }
}

/// What a push source tells the wait loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// A state-change event for the watched resource: describe now.
    Changed,
    /// The source is delivering: status calls may slow down to this interval (a safety net for
    /// an event that never comes).
    Relax(Duration),
    /// The source failed: back to the normal cadence, describing at once (events may have been
    /// missed); the text is shown as a warning.
    Lost(String),
}

/// Sources of hints: state-change events. A closed or absent source changes nothing (polling
/// is the fallback).
pub type Hints = mpsc::Receiver<Hint>;

async fn recv_hint(hints: &mut Option<&mut Hints>) -> Option<Hint> {
    match hints {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_feed<L: crate::logs::feed::LineSource>(
    feed: &mut Option<&mut LogFeed<L>>,
) -> Option<FeedItem> {
    match feed {
        Some(f) => f.recv().await,
        None => std::future::pending().await,
    }
}

/// Follows `w` until its judge says done, the deadline passes or `opts.cancel` fires, describing
/// on each of `hints`; see the module docs.
///
/// # Errors
/// [`WatchError`] when Describe fails permanently or past the failure budget.
pub async fn follow<W>(
    w: &mut W,
    opts: Options<'_>,
    hints: Option<&mut Hints>,
) -> Result<Followed<W::Done, W::Status>, WatchError<W::Error>>
where
    W: Watched,
    W::Status: Clone + Send + Sync,
{
    let none: Option<&mut LogFeed<crate::logs::feed::NoLines<W::Status>>> = None;
    follow_lines(&mut Silent(w), opts, none, hints).await
}

/// As [`follow`], printing the lines of `feed` as they come; lines held for
/// [`ShowsLines::lines_ready`] are printed before it returns.
///
/// # Errors
/// [`WatchError`] when Describe fails permanently or past the failure budget.
pub async fn follow_lines<W, L>(
    w: &mut W,
    mut opts: Options<'_>,
    mut feed: Option<&mut LogFeed<L>>,
    mut hints: Option<&mut Hints>,
) -> Result<Followed<W::Done, W::Status>, WatchError<W::Error>>
where
    W: ShowsLines,
    W::Status: Clone,
    L: crate::logs::feed::LineSource<Status = W::Status>,
{
    let mut next = Instant::now();
    let mut in_flight: Option<Describe<W::Status, W::Error>> = None;
    let mut failures = 0u32;
    let mut retries = RetryDelays::new();
    let mut last: Option<W::Status> = None;
    let mut held: Vec<String> = Vec::new();
    // While a push source delivers: the interval that replaces the cadence after a success.
    let mut relaxed: Option<Duration> = None;
    // A hint arrived while a call was in flight: that call may predate the change.
    let mut again = false;
    let far = Instant::now() + std::time::Duration::from_secs(100 * 365 * 24 * 3600);
    let deadline = opts.deadline.unwrap_or(far);
    loop {
        if in_flight.is_none() && Instant::now() >= next {
            in_flight = Some(w.describe());
        }
        tokio::select! {
            biased;
            () = opts.cancel.cancelled() => {
                flush(w, &mut held);
                return Ok(Followed::Cancelled(last));
            }
            () = sleep_until(deadline) => {
                flush(w, &mut held);
                return Ok(Followed::TimedOut(last));
            }
            result = async { match in_flight.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                in_flight = None;
                match result {
                    Ok(status) => {
                        failures = 0;
                        retries.reset();
                        let changed = w.observe(&status);
                        if let Some(f) = feed.as_deref_mut() {
                            f.observe(&status);
                        }
                        if let Some(done) = w.judge(&status) {
                            flush(w, &mut held);
                            return Ok(Followed::Done(done, status));
                        }
                        if w.lines_ready() {
                            flush(w, &mut held);
                        }
                        let normal = opts.cadence.next(changed);
                        let wait = if std::mem::take(&mut again) {
                            Duration::ZERO
                        } else {
                            relaxed.unwrap_or(normal)
                        };
                        next = Instant::now() + wait;
                        last = Some(status);
                    }
                    Err(e) if e.retry().is_retryable() => {
                        failures += 1;
                        if failures > opts.failure_budget {
                            flush(w, &mut held);
                            return Err(WatchError::Exhausted { failures, last: e });
                        }
                        next = Instant::now() + retries.after_failure();
                    }
                    Err(e) => {
                        flush(w, &mut held);
                        return Err(WatchError::Describe(e));
                    }
                }
            }
            () = sleep_until(next), if in_flight.is_none() => {}
            Some(hint) = recv_hint(&mut hints) => match hint {
                Hint::Changed => {
                    if in_flight.is_none() {
                        next = Instant::now();
                    } else {
                        again = true;
                    }
                }
                Hint::Relax(every) => relaxed = Some(every),
                Hint::Lost(text) => {
                    relaxed = None;
                    opts.cadence.reset();
                    w.warn(&text);
                    if in_flight.is_none() {
                        next = Instant::now();
                    }
                }
            },
            Some(item) = recv_feed(&mut feed) => match item {
                FeedItem::Lines(lines) => {
                    if w.lines_ready() && held.is_empty() {
                        w.print_lines(&lines);
                    } else {
                        held.extend(lines);
                        if w.lines_ready() {
                            flush(w, &mut held);
                        } else if in_flight.is_none() {
                            // Learn the status first, so the lines land in the script's section.
                            next = Instant::now();
                        }
                    }
                }
                FeedItem::Warn(text) => w.warn(&text),
            }
        }
    }
}

fn flush<W: ShowsLines>(w: &mut W, held: &mut Vec<String>) {
    if !held.is_empty() {
        w.print_lines(held);
        held.clear();
    }
}

#[cfg(test)]
mod tests;
