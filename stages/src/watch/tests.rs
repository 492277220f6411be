//! The wait loop under a paused clock: scripted Describe results with latencies, a scripted log
//! source, and what was printed when.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::logs::LogError;
use crate::logs::feed::{FeedCadence, LineSource, LogFeed};

#[derive(Debug, thiserror::Error)]
#[error("scripted {0:?}")]
pub(crate) struct Scripted(Retry);

impl Retryable for Scripted {
    fn retry(&self) -> Retry {
        self.0
    }
}

/// One scripted Describe: after `latency`, this result (a phase number, or an error).
#[derive(Clone)]
pub(crate) struct Step {
    pub(crate) latency: Duration,
    pub(crate) result: Result<u32, Retry>,
}

pub(crate) fn ok(phase: u32) -> Step {
    Step {
        latency: Duration::from_millis(100),
        result: Ok(phase),
    }
}

fn err(retry: Retry) -> Step {
    Step {
        latency: Duration::from_millis(100),
        result: Err(retry),
    }
}

/// Phases: 0 starting, 1 running the script, 2 done. Records what it printed and when.
pub(crate) struct Job {
    script: Arc<Mutex<VecDeque<Step>>>,
    pub(crate) describes: Arc<Mutex<Vec<Instant>>>,
    phase: u32,
    printed: Vec<(Instant, String)>,
    started: Instant,
}

impl Job {
    pub(crate) fn new(steps: Vec<Step>) -> Job {
        Job {
            script: Arc::new(Mutex::new(steps.into())),
            describes: Arc::new(Mutex::new(Vec::new())),
            phase: 0,
            printed: Vec::new(),
            started: Instant::now(),
        }
    }

    fn at(&self, text: &str) -> Duration {
        self.printed
            .iter()
            .find(|(_, t)| t == text)
            .map(|(at, _)| *at - self.started)
            .unwrap_or_else(|| panic!("{text:?} not printed: {:?}", self.texts()))
    }

    pub(crate) fn texts(&self) -> Vec<String> {
        self.printed.iter().map(|(_, t)| t.clone()).collect()
    }
}

impl Watched for Job {
    type Status = u32;
    type Done = &'static str;
    type Error = Scripted;

    fn describe(&self) -> Describe<u32, Scripted> {
        let script = self.script.clone();
        let describes = self.describes.clone();
        Box::pin(async move {
            describes.lock().expect("lock").push(Instant::now());
            let step = script.lock().expect("lock").pop_front();
            match step {
                Some(step) => {
                    tokio::time::sleep(step.latency).await;
                    step.result.map_err(Scripted)
                }
                // Out of script: a call that never returns.
                None => std::future::pending().await,
            }
        })
    }

    fn observe(&mut self, status: &u32) -> bool {
        let changed = *status != self.phase;
        if changed && *status < 2 {
            self.printed
                .push((Instant::now(), format!("phase {status}")));
        }
        self.phase = *status;
        changed
    }

    fn judge(&self, status: &u32) -> Option<&'static str> {
        (*status == 2).then_some("done")
    }

    fn warn(&mut self, text: &str) {
        self.printed.push((Instant::now(), format!("WARN {text}")));
    }
}

impl ShowsLines for Job {
    fn lines_ready(&self) -> bool {
        self.phase >= 1
    }
    fn print_lines(&mut self, lines: &[String]) {
        let now = Instant::now();
        self.printed.extend(lines.iter().map(|l| (now, l.clone())));
    }
}

/// Emits `line-N` at the given offsets from the start.
struct Lines {
    at: VecDeque<(Duration, String)>,
    started: Instant,
    drained: Vec<String>,
}

impl Lines {
    fn every_second(n: u32) -> Lines {
        Lines {
            at: (1..=n)
                .map(|i| (Duration::from_secs(u64::from(i)), format!("line-{i}")))
                .collect(),
            started: Instant::now(),
            drained: vec!["last-line".to_owned()],
        }
    }
}

impl LineSource for Lines {
    type Status = u32;

    fn observe(&mut self, _status: &u32) {}

    async fn poll(&mut self) -> Result<Vec<String>, LogError> {
        let now = Instant::now() - self.started;
        let mut out = Vec::new();
        while self.at.front().is_some_and(|(t, _)| *t <= now) {
            if let Some((_, l)) = self.at.pop_front() {
                out.push(l);
            }
        }
        Ok(out)
    }

    async fn drain(&mut self, _cancel: &CancellationToken) -> (Vec<String>, Option<String>) {
        let mut out: Vec<String> = self.at.drain(..).map(|(_, l)| l).collect();
        out.append(&mut self.drained);
        (out, None)
    }
}

fn cadence() -> Cadence {
    Cadence::new(Duration::from_secs(2), Duration::from_secs(30))
}

#[tokio::test(start_paused = true)]
async fn describes_slow_down_while_nothing_changes_and_end_on_the_judges_word() {
    let cancel = CancellationToken::new();
    let mut steps = vec![ok(1); 6];
    steps.push(ok(2));
    let mut job = Job::new(steps);
    let followed = follow(&mut job, Options::new(cadence(), &cancel), None)
        .await
        .expect("followed");
    assert!(matches!(followed, Followed::Done("done", 2)));
    let times = job.describes.lock().expect("lock").clone();
    let gaps: Vec<u64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis() as u64)
        .collect();
    // Each gap is the call's 100 ms plus the cadence: reset after the change, then x1.5.
    assert_eq!(gaps, [2100, 3100, 4600, 6850, 10225, 15288]);
}

#[tokio::test(start_paused = true)]
async fn a_cancel_ends_the_wait_during_a_stalled_describe() {
    let cancel = CancellationToken::new();
    // One answer, then a call that never returns.
    let mut job = Job::new(vec![ok(1)]);
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let followed = follow(&mut job, Options::new(cadence(), &cancel), None)
        .await
        .expect("followed");
    assert!(matches!(followed, Followed::Cancelled(Some(1))));
    assert_eq!(started.elapsed(), Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn throttled_status_calls_never_hold_back_log_lines() {
    let cancel = CancellationToken::new();
    // Running, then twelve throttled describes that each take 5 s (a slow, throttled service),
    // then done.
    let mut steps = vec![ok(1)];
    steps.extend((0..12).map(|_| Step {
        latency: Duration::from_secs(5),
        result: Err(Retry::Throttling),
    }));
    steps.push(ok(2));
    let mut job = Job::new(steps);
    let mut feed = LogFeed::start(
        Lines::every_second(40),
        FeedCadence {
            active: Duration::from_secs(1),
            idle: Duration::from_secs(4),
        },
    );
    let followed = follow_lines(
        &mut job,
        Options::new(cadence(), &cancel),
        Some(&mut feed),
        None,
    )
    .await
    .expect("followed");
    assert!(matches!(followed, Followed::Done(..)));
    // Every line reached the log within two seconds of being written, throttling or not.
    for i in 1..=40u64 {
        let line = format!("line-{i}");
        if job.texts().contains(&line) {
            let late = job.at(&line).saturating_sub(Duration::from_secs(i));
            assert!(late <= Duration::from_secs(2), "{line} came {late:?} late");
        }
    }
    let printed = job
        .texts()
        .iter()
        .filter(|t| t.starts_with("line-"))
        .count();
    assert!(printed >= 30, "{:?}", job.texts());
    let (rest, _) = feed.finish(&cancel).await;
    let mut all = job.texts();
    for item in rest {
        if let FeedItem::Lines(l) = item {
            all.extend(l);
        }
    }
    // Every line exactly once, in order, the drained one last.
    let lines: Vec<&String> = all.iter().filter(|t| t.contains("line")).collect();
    let expected: Vec<String> = (1..=40)
        .map(|i| format!("line-{i}"))
        .chain(["last-line".to_owned()])
        .collect();
    assert_eq!(lines, expected.iter().collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_throttling_burst_is_retried_soon_and_leaves_the_cadence_where_it_was() {
    let cancel = CancellationToken::new();
    // Running for three describes (intervals 2 s, 3 s, 4.5 s), nine throttled ones, two more
    // running, then done.
    let mut steps = vec![ok(1), ok(1), ok(1)];
    steps.extend((0..9).map(|_| err(Retry::Throttling)));
    steps.extend([ok(1), ok(1), ok(2)]);
    let mut job = Job::new(steps);
    let followed = follow(&mut job, Options::new(cadence(), &cancel), None)
        .await
        .expect("followed");
    assert!(matches!(followed, Followed::Done("done", 2)));
    let times = job.describes.lock().expect("lock").clone();
    assert_eq!(times.len(), 15);
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // Each retry waits its jittered exponential delay (plus the call's 100 ms), never the
    // status cadence's 30 s cap.
    let mut base = RetryDelays::FIRST;
    for (i, gap) in gaps[3..12].iter().enumerate() {
        let call = Duration::from_millis(100);
        assert!(
            *gap >= base + call && *gap < base * 2 + call,
            "retry {i} after {gap:?}"
        );
        base = (base * 2).min(RetryDelays::CAP);
    }
    // Once through, the cadence goes on from where it was (4.5 s, then 6.75 s, 10.125 s).
    assert_eq!(gaps[12], Duration::from_millis(6750 + 100));
    assert_eq!(gaps[13], Duration::from_millis(10125 + 100));
}

#[tokio::test(start_paused = true)]
async fn early_lines_wait_for_the_status_that_opens_their_section() {
    let cancel = CancellationToken::new();
    // Still starting at the first two describes (0 s, ~2 s); running from the third.
    let mut job = Job::new(vec![ok(0), ok(0), ok(1), ok(1), ok(1), ok(2)]);
    let mut feed = LogFeed::start(
        Lines::every_second(3),
        FeedCadence {
            active: Duration::from_millis(500),
            idle: Duration::from_secs(1),
        },
    );
    follow_lines(
        &mut job,
        Options::new(cadence(), &cancel),
        Some(&mut feed),
        None,
    )
    .await
    .expect("followed");
    let texts = job.texts();
    let phase1 = texts.iter().position(|t| t == "phase 1").expect("phase 1");
    let first = texts.iter().position(|t| t == "line-1").expect("line-1");
    assert!(phase1 < first, "{texts:?}");
    // The early line triggered a describe instead of waiting out the cadence.
    assert!(job.at("phase 1") < Duration::from_secs(3), "{texts:?}");
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_within_the_budget_and_permanent_ones_end_the_wait() {
    let cancel = CancellationToken::new();
    let mut job = Job::new(vec![err(Retry::Transient), err(Retry::Transient), ok(2)]);
    let mut opts = Options::new(cadence(), &cancel);
    opts.failure_budget = 2;
    assert!(matches!(
        follow(&mut job, opts, None).await,
        Ok(Followed::Done(..))
    ));
    let mut job = Job::new(vec![err(Retry::Transient); 3]);
    let mut opts = Options::new(cadence(), &cancel);
    opts.failure_budget = 2;
    assert!(matches!(
        follow(&mut job, opts, None).await,
        Err(WatchError::Exhausted { failures: 3, .. })
    ));
    let mut job = Job::new(vec![ok(1), err(Retry::Permanent)]);
    assert!(matches!(
        follow(&mut job, Options::new(cadence(), &cancel), None).await,
        Err(WatchError::Describe(Scripted(Retry::Permanent)))
    ));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_and_push_hints() {
    let cancel = CancellationToken::new();
    let mut job = Job::new(vec![ok(1); 100]);
    let opts =
        Options::new(cadence(), &cancel).with_deadline(Instant::now() + Duration::from_secs(50));
    let followed = follow(&mut job, opts, None).await.expect("followed");
    assert!(matches!(followed, Followed::TimedOut(Some(1))));

    // A hint makes the loop describe at once instead of waiting out a 30 s interval.
    let mut job = Job::new(vec![ok(1), ok(1), ok(2)]);
    let slow = Cadence::fixed(Duration::from_secs(30));
    let (tx, mut hints) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let _ = tx.send(Hint::Changed).await;
    });
    let started = Instant::now();
    follow(&mut job, Options::new(slow, &cancel), Some(&mut hints))
        .await
        .expect("followed");
    // 0 s, the hint at 5 s, then 30 s later: done at about 35 s rather than 60 s.
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
}
