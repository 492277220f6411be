//! Live Tail lines under a paused clock: a scripted session (updates, sampling, a dropped
//! session, duplicated and late updates) over an in-memory CloudWatch that answers GetLogEvents
//! (aws-smithy-mocks), polled every second (as often as updates come) or read by the feed as it
//! reads a pushed source, then the final drain. Every test checks the whole output: each line
//! once, in its stream's order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_cloudwatchlogs::operation::describe_log_streams::DescribeLogStreamsOutput;
use aws_sdk_cloudwatchlogs::operation::get_log_events::{GetLogEventsError, GetLogEventsOutput};
use aws_sdk_cloudwatchlogs::types::error::ResourceNotFoundException;
use aws_sdk_cloudwatchlogs::types::{LogStream, OutputLogEvent};
use aws_smithy_mocks::{MockResponse, RuleMode, mock};

use super::*;
use crate::logs::feed::{FeedCadence, FeedItem, LogFeed, NoLines};

const GROUP: &str = "/aws/sagemaker/TrainingJobs";
const A: &str = "job/algo-1-1700000000";
const B: &str = "job/algo-2-1700000000";

/// CloudWatch's side: what each stream holds, and the GetLogEvents calls made.
#[derive(Default)]
struct Store {
    streams: BTreeMap<String, Vec<(i64, String)>>,
    reads: usize,
}

struct Sim {
    store: Arc<Mutex<Store>>,
    tx: mpsc::Sender<LiveItem>,
    /// Event time of the next line.
    clock_ms: i64,
}

impl Sim {
    /// Writes lines to CloudWatch; returns them as Live Tail would deliver them.
    fn write(&mut self, stream: &str, messages: &[&str]) -> Vec<LiveEvent> {
        let mut store = self.store.lock().expect("lock");
        let entry = store.streams.entry(stream.to_owned()).or_default();
        messages
            .iter()
            .map(|m| {
                self.clock_ms += 1;
                entry.push((self.clock_ms, (*m).to_owned()));
                LiveEvent {
                    stream: stream.to_owned(),
                    timestamp_ms: self.clock_ms,
                    message: (*m).to_owned(),
                }
            })
            .collect()
    }

    async fn send(&self, item: LiveItem) {
        self.tx.send(item).await.expect("source alive");
    }

    async fn update(&self, sampled: bool, events: Vec<LiveEvent>) {
        self.send(LiveItem::Update {
            at: Instant::now(),
            sampled,
            events,
        })
        .await;
    }

    fn reads(&self) -> usize {
        self.store.lock().expect("lock").reads
    }
}

fn get(
    store: &Arc<Mutex<Store>>,
    stream: &str,
    token: Option<&str>,
) -> MockResponse<GetLogEventsOutput, GetLogEventsError> {
    let mut store = store.lock().expect("lock");
    store.reads += 1;
    let Some(events) = store.streams.get(stream) else {
        return MockResponse::Error(GetLogEventsError::ResourceNotFoundException(
            ResourceNotFoundException::builder()
                .message("no stream")
                .build(),
        ));
    };
    let start = token
        .and_then(|t| t.strip_prefix("f/"))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    let end = (start + 100).min(events.len());
    let page = events
        .get(start..end)
        .unwrap_or_default()
        .iter()
        .map(|(t, m)| {
            OutputLogEvent::builder()
                .timestamp(*t)
                .ingestion_time(*t + 50)
                .message(m)
                .build()
        })
        .collect();
    MockResponse::Output(
        GetLogEventsOutput::builder()
            .set_events(Some(page))
            .next_forward_token(format!("f/{end}"))
            .next_backward_token("b/0")
            .build(),
    )
}

/// A live source over `streams`, its simulator, and the mocked CloudWatch behind both.
fn setup(streams: Streams) -> (LiveLines<NoLines<u32>>, Sim) {
    let store = Arc::new(Mutex::new(Store::default()));
    let reads = {
        let store = Arc::clone(&store);
        mock!(Client::get_log_events)
            .match_requests(|r| r.log_group_name() == Some(GROUP))
            .then_compute_response(move |r| {
                get(
                    &store,
                    r.log_stream_name().unwrap_or_default(),
                    r.next_token(),
                )
            })
    };
    let list = {
        let store = Arc::clone(&store);
        mock!(Client::describe_log_streams).then_compute_output(move |r| {
            let prefix = r.log_stream_name_prefix().unwrap_or_default().to_owned();
            DescribeLogStreamsOutput::builder()
                .set_log_streams(Some(
                    store
                        .lock()
                        .expect("lock")
                        .streams
                        .keys()
                        .filter(|n| n.starts_with(&prefix))
                        .map(|n| LogStream::builder().log_stream_name(n).build())
                        .collect(),
                ))
                .build()
        })
    };
    let client = crate::aws::mock::logs(RuleMode::MatchAny, &[&reads, &list]);
    let (tx, rx) = mpsc::channel(64);
    let lines = LiveLines::live(
        NoLines::default(),
        client,
        GROUP,
        streams,
        StreamNaming::SageMakerTraining,
        Box::new(|_| true),
        Session::from_items(rx),
    );
    (
        lines,
        Sim {
            store,
            tx,
            clock_ms: 1_700_000_000_000,
        },
    )
}

/// Polls once a second, as often as Live Tail's updates come, for `secs` seconds.
async fn run(lines: &mut LiveLines<NoLines<u32>>, secs: u64, out: &mut Vec<String>) {
    for _ in 0..secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
        out.extend(lines.poll().await.expect("poll"));
    }
}

async fn finish(lines: &mut LiveLines<NoLines<u32>>, out: &mut Vec<String>) {
    let (drained, warning) = lines.drain(&CancellationToken::new()).await;
    assert_eq!(warning, None);
    out.extend(drained);
}

fn expect(host: &str, range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| format!("[{host}] line {i}")).collect()
}

fn of(out: &[String], host: &str) -> Vec<String> {
    out.iter()
        .filter(|l| l.starts_with(&format!("[{host}]")))
        .cloned()
        .collect()
}

fn texts(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| format!("line {i}")).collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test(start_paused = true)]
async fn lines_arrive_once_and_in_order_across_the_head_a_sampled_update_and_the_drain() {
    let (mut lines, mut sim) = setup(Streams::Prefix("job/".into()));
    let mut out = Vec::new();
    // Before the session: the head of the stream, which Live Tail never shows.
    sim.write(A, &refs(&texts(1..=3)));
    sim.send(LiveItem::Started).await;
    let e = sim.write(A, &refs(&texts(4..=5)));
    sim.update(false, e).await;
    run(&mut lines, 5, &mut out).await;
    assert_eq!(
        out,
        expect("algo-1", 1..=5),
        "head by GetLogEvents, then live"
    );

    // Quiet and live: no reads at all.
    let reads = sim.reads();
    for i in 6..=9 {
        let e = sim.write(A, &[&format!("line {i}")]);
        sim.update(false, e).await;
        run(&mut lines, 1, &mut out).await;
    }
    run(&mut lines, 2, &mut out).await;
    assert_eq!(out, expect("algo-1", 1..=9));
    assert_eq!(sim.reads(), reads, "nothing read while live");

    // A sampled update: 10..=14 written, Live Tail shows 11 and 13 only; then live again.
    let e = sim.write(A, &refs(&texts(10..=14)));
    let sample = vec![e[1].clone(), e[3].clone()];
    sim.update(true, sample).await;
    run(&mut lines, 1, &mut out).await;
    for i in 15..=20 {
        let e = sim.write(A, &[&format!("line {i}")]);
        sim.update(false, e).await;
        run(&mut lines, 1, &mut out).await;
    }
    run(&mut lines, 4, &mut out).await;
    assert_eq!(out, expect("algo-1", 1..=20), "the gap filled in order");
    let after_gap = sim.reads();
    for i in 21..=25 {
        let e = sim.write(A, &[&format!("line {i}")]);
        sim.update(false, e).await;
        run(&mut lines, 1, &mut out).await;
    }
    assert_eq!(sim.reads(), after_gap, "live again after the gap");

    // The end: lines Live Tail never delivered, and a second host it never showed.
    sim.write(A, &refs(&texts(26..=27)));
    sim.write(B, &refs(&texts(1..=2)));
    finish(&mut lines, &mut out).await;
    assert_eq!(of(&out, "algo-1"), expect("algo-1", 1..=27));
    assert_eq!(of(&out, "algo-2"), expect("algo-2", 1..=2));
    assert_eq!(out.len(), 29);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_session_duplicates_and_a_late_update_neither_lose_nor_repeat_a_line() {
    let (mut lines, mut sim) = setup(Streams::Names(vec![A.to_owned(), B.to_owned()]));
    let mut out = Vec::new();
    sim.send(LiveItem::Started).await;
    let mut e = sim.write(A, &["line 1"]);
    e.extend(sim.write(B, &["line 1"]));
    sim.update(false, e).await;
    run(&mut lines, 6, &mut out).await;
    for i in 2..=4 {
        let mut e = sim.write(A, &[&format!("line {i}")]);
        e.extend(sim.write(B, &[&format!("line {i}")]));
        sim.update(false, e).await;
        run(&mut lines, 1, &mut out).await;
    }
    run(&mut lines, 2, &mut out).await;
    assert_eq!(of(&out, "algo-1"), expect("algo-1", 1..=4));

    // The session drops while 5..=7 are written; a new one starts.
    let during_gap = sim.write(A, &refs(&texts(5..=7)));
    sim.send(LiveItem::Gap("the Live Tail session closed".into()))
        .await;
    run(&mut lines, 1, &mut out).await;
    sim.send(LiveItem::Started).await;
    let e8 = sim.write(A, &["line 8"]);
    sim.update(false, e8.clone()).await;
    run(&mut lines, 5, &mut out).await;
    // A line the tailer printed while reconciling comes from Live Tail after all, twice.
    let late = vec![during_gap[2].clone(), e8[0].clone()];
    sim.update(false, late.clone()).await;
    run(&mut lines, 1, &mut out).await;
    sim.update(false, late).await;
    run(&mut lines, 3, &mut out).await;
    assert_eq!(of(&out, "algo-1"), expect("algo-1", 1..=8));

    // An update delivered twice, and one that comes a second late (after the next one).
    let e9 = sim.write(A, &["line 9"]);
    sim.update(false, e9.clone()).await;
    sim.update(false, e9).await;
    let e10 = sim.write(A, &["line 10"]);
    let e11 = sim.write(A, &["line 11"]);
    sim.update(false, e11).await;
    sim.update(false, e10).await;
    run(&mut lines, 6, &mut out).await;
    // Two identical lines in one millisecond are two lines.
    sim.clock_ms -= 1;
    let mut twins = sim.write(A, &["line 12"]);
    sim.clock_ms -= 1;
    twins.extend(sim.write(A, &["line 12"]));
    sim.update(false, twins).await;
    run(&mut lines, 6, &mut out).await;
    finish(&mut lines, &mut out).await;
    let mut want = expect("algo-1", 1..=12);
    want.push("[algo-1] line 12".into());
    assert_eq!(of(&out, "algo-1"), want);
    assert_eq!(of(&out, "algo-2"), expect("algo-2", 1..=4));
}

/// A polling source with one line, for the fallback.
struct Polled(Vec<String>);

impl LineSource for Polled {
    type Status = u32;

    fn observe(&mut self, _status: &u32) {}

    async fn poll(&mut self) -> Result<Vec<String>, LogError> {
        Ok(std::mem::take(&mut self.0))
    }

    async fn drain(&mut self, _cancel: &CancellationToken) -> (Vec<String>, Option<String>) {
        (vec!["drained".into()], None)
    }
}

#[tokio::test(start_paused = true)]
async fn a_session_that_cannot_start_falls_back_to_polling_with_one_warning() {
    let (tx, rx) = mpsc::channel(4);
    let client = crate::aws::mock::logs(RuleMode::MatchAny, &[]);
    let mut lines = LiveLines::live(
        Polled(vec!["polled".into()]),
        client,
        GROUP,
        Streams::Prefix("job/".into()),
        StreamNaming::SageMakerTraining,
        Box::new(|_| false),
        Session::from_items(rx),
    );
    tx.send(LiveItem::Failed(
        "AccessDeniedException: not authorized".into(),
    ))
    .await
    .expect("send");
    assert_eq!(lines.poll().await.expect("poll"), ["polled"]);
    assert!(!lines.is_live());
    let warning = lines.take_warning().expect("one warning");
    assert!(warning.contains("AccessDeniedException"), "{warning}");
    assert_eq!(lines.take_warning(), None, "said once");
    let (drained, _) = lines.drain(&CancellationToken::new()).await;
    assert_eq!(drained, ["drained"]);
}

/// The lines of the feed's next item (a warning fails the test).
async fn next_lines(feed: &mut LogFeed<LiveLines<NoLines<u32>>>) -> Vec<String> {
    match feed.recv().await {
        Some(FeedItem::Lines(lines)) => lines,
        other => panic!("expected lines, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_pushed_source_prints_an_update_on_arrival_and_holds_lines_once_one_came_late() {
    let (lines, mut sim) = setup(Streams::Names(vec![A.to_owned()]));
    // A cadence that would read once an hour: every read below is one the session caused.
    let hour = Duration::from_secs(3600);
    let mut feed = LogFeed::start(
        lines,
        FeedCadence {
            active: hour,
            idle: hour,
        },
    );
    let mut out = Vec::new();
    sim.send(LiveItem::Started).await;
    let e = sim.write(A, &["line 1"]);
    sim.update(false, e).await;
    out.extend(next_lines(&mut feed).await);
    // The stream goes live after a GetLogEvents pass that started once the session was trusted.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let reads = sim.reads();

    for i in 2..=4 {
        let sent = Instant::now();
        let e = sim.write(A, &[&format!("line {i}")]);
        sim.update(false, e).await;
        let got = next_lines(&mut feed).await;
        assert_eq!(got, expect("algo-1", i..=i));
        assert_eq!(Instant::now() - sent, Duration::ZERO, "printed on arrival");
        out.extend(got);
        // Quiet seconds of a trusted session.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            sim.update(false, Vec::new()).await;
        }
    }
    assert_eq!(sim.reads(), reads, "nothing read while live");

    // Line 5 comes an update after line 6, which is out already: it is printed once, late,
    // and from now on live lines are held long enough to put such an update back in order.
    let e5 = sim.write(A, &["line 5"]);
    let e6 = sim.write(A, &["line 6"]);
    sim.update(false, e6).await;
    out.extend(next_lines(&mut feed).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    sim.update(false, e5).await;
    out.extend(next_lines(&mut feed).await);
    tokio::time::sleep(Duration::from_secs(30)).await;

    let e7 = sim.write(A, &["line 7"]);
    let e8 = sim.write(A, &["line 8"]);
    let sent = Instant::now();
    sim.update(false, e8).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    sim.update(false, e7).await;
    let got = next_lines(&mut feed).await;
    assert_eq!(
        got,
        expect("algo-1", 7..=8),
        "the late update put back in order"
    );
    assert_eq!(
        Instant::now() - sent,
        HOLDBACK,
        "held for the widened window"
    );
    out.extend(got);

    let (items, _) = feed.finish(&CancellationToken::new()).await;
    assert!(items.is_empty(), "nothing left for the drain: {items:?}");
    let mut want = expect("algo-1", 1..=4);
    want.extend(expect("algo-1", 6..=6));
    want.extend(expect("algo-1", 5..=5));
    want.extend(expect("algo-1", 7..=8));
    assert_eq!(out, want);
}
