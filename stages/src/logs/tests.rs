//! Unit tests of the tailer against mocked CloudWatch Logs responses (aws-smithy-mocks).
//!
//! Two styles: strict sequences (`RuleMode::Sequential`, each rule matching one exact request)
//! where the exact calls are the point, and a small in-memory CloudWatch model ([`FakeLogs`])
//! answering every call where the point is what comes out over several polls (throttling, late
//! events). Both panic on any request nobody expected, so a stray call fails the test.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::error::ErrorMetadata;
use aws_sdk_cloudwatchlogs::operation::describe_log_streams::{
    DescribeLogStreamsError, DescribeLogStreamsInput, DescribeLogStreamsOutput,
};
use aws_sdk_cloudwatchlogs::operation::get_log_events::{
    GetLogEventsError, GetLogEventsInput, GetLogEventsOutput,
};
use aws_sdk_cloudwatchlogs::types::error::ResourceNotFoundException;
use aws_sdk_cloudwatchlogs::types::{LogStream, OutputLogEvent};
use aws_smithy_mocks::{MockResponse, Rule, RuleMode, mock};
use tokio_util::sync::CancellationToken;

use super::{LogErrorKind, LogLine, LogTailer, PageFollow, StreamNaming, format_line};

const GROUP: &str = "/aws/sagemaker/TrainingJobs";

// ---------------------------------------------------------------------------------------------
// Client and response helpers
// ---------------------------------------------------------------------------------------------

/// A client whose every call is answered by `rules`. SDK retries are off so that one tailer call
/// is one mocked response, and a throttling error reaches the tailer instead of being retried.
fn client(mode: RuleMode, rules: &[&Rule]) -> Client {
    crate::aws::mock::logs(mode, rules)
}

fn event(timestamp: i64, message: &str) -> OutputLogEvent {
    OutputLogEvent::builder()
        .timestamp(timestamp)
        .message(message)
        .ingestion_time(timestamp + 100)
        .build()
}

fn page(events: Vec<OutputLogEvent>, forward: &str) -> GetLogEventsOutput {
    GetLogEventsOutput::builder()
        .set_events(Some(events))
        .next_forward_token(forward)
        .next_backward_token("b/0")
        .build()
}

fn streams_page(names: &[String], next: Option<&str>) -> DescribeLogStreamsOutput {
    DescribeLogStreamsOutput::builder()
        .set_log_streams(Some(
            names
                .iter()
                .map(|n| LogStream::builder().log_stream_name(n).build())
                .collect(),
        ))
        .set_next_token(next.map(str::to_owned))
        .build()
}

fn throttled() -> GetLogEventsError {
    GetLogEventsError::generic(
        ErrorMetadata::builder()
            .code("ThrottlingException")
            .message("Rate exceeded")
            .build(),
    )
}

fn stream_not_found() -> GetLogEventsError {
    GetLogEventsError::ResourceNotFoundException(
        ResourceNotFoundException::builder()
            .message("The specified log stream does not exist.")
            .build(),
    )
}

/// A rule for exactly one `GetLogEvents` request: this stream, this token, `startFromHead`.
fn get_rule(
    stream: &'static str,
    token: Option<&'static str>,
    respond: impl Fn() -> GetLogEventsOutput + Send + Sync + 'static,
) -> Rule {
    mock!(Client::get_log_events)
        .match_requests(move |req| get_matches(req, stream, token))
        .then_output(respond)
}

fn get_error_rule(
    stream: &'static str,
    token: Option<&'static str>,
    respond: impl Fn() -> GetLogEventsError + Send + Sync + 'static,
) -> Rule {
    mock!(Client::get_log_events)
        .match_requests(move |req| get_matches(req, stream, token))
        .then_error(respond)
}

fn get_matches(req: &GetLogEventsInput, stream: &str, token: Option<&str>) -> bool {
    req.log_group_name() == Some(GROUP)
        && req.log_stream_name() == Some(stream)
        && req.next_token() == token
        // Required on every call: without it the first read returns the newest events.
        && req.start_from_head() == Some(true)
}

fn describe_rule(
    token: Option<&'static str>,
    respond: impl Fn() -> DescribeLogStreamsOutput + Send + Sync + 'static,
) -> Rule {
    mock!(Client::describe_log_streams)
        .match_requests(move |req| describe_matches(req, token))
        .then_output(respond)
}

fn describe_matches(req: &DescribeLogStreamsInput, token: Option<&str>) -> bool {
    req.log_group_name() == Some(GROUP)
        && req.log_stream_name_prefix() == Some("job/")
        && req.limit() == Some(50)
        && req.next_token() == token
}

fn messages(lines: &[LogLine]) -> Vec<&str> {
    lines.iter().map(|l| l.message.as_str()).collect()
}

fn host(n: usize) -> String {
    format!("job/algo-{n}-1700000000")
}

// ---------------------------------------------------------------------------------------------
// An in-memory CloudWatch Logs for multi-poll scenarios
// ---------------------------------------------------------------------------------------------

/// One log group's streams with CloudWatch's token semantics: `f/<index>` forward tokens, the
/// same token back at the end, `ResourceNotFound` for a stream that does not exist.
#[derive(Default)]
struct FakeLogs {
    streams: BTreeMap<String, Vec<(i64, String)>>,
    page_size: usize,
    /// Per stream, the 1-based numbers of its `GetLogEvents` calls that are throttled.
    throttle: HashMap<String, Vec<usize>>,
    calls_per_stream: HashMap<String, usize>,
    /// Every `GetLogEvents` request: stream, token.
    requests: Vec<(String, Option<String>)>,
    /// Events that become readable just before the n-th `GetLogEvents` call (CloudWatch lag).
    late: Vec<(usize, String, i64, String)>,
}

impl FakeLogs {
    fn new(page_size: usize) -> Arc<Mutex<FakeLogs>> {
        Arc::new(Mutex::new(FakeLogs {
            page_size,
            ..FakeLogs::default()
        }))
    }

    fn write(&mut self, stream: &str, events: &[(i64, &str)]) {
        let entry = self.streams.entry(stream.to_owned()).or_default();
        entry.extend(events.iter().map(|(t, m)| (*t, (*m).to_owned())));
    }

    fn get(
        &mut self,
        req: &GetLogEventsInput,
    ) -> MockResponse<GetLogEventsOutput, GetLogEventsError> {
        let stream = req.log_stream_name().unwrap_or_default().to_owned();
        self.requests
            .push((stream.clone(), req.next_token().map(str::to_owned)));
        let call_number = self.requests.len();
        let late: Vec<_> = self
            .late
            .iter()
            .filter(|(n, ..)| *n == call_number)
            .cloned()
            .collect();
        for (_, name, t, m) in late {
            self.write(&name, &[(t, &m)]);
        }
        assert_eq!(
            req.start_from_head(),
            Some(true),
            "startFromHead on every read"
        );
        let per_stream = self.calls_per_stream.entry(stream.clone()).or_default();
        *per_stream += 1;
        if self
            .throttle
            .get(&stream)
            .is_some_and(|calls| calls.contains(per_stream))
        {
            return MockResponse::Error(throttled());
        }
        let Some(events) = self.streams.get(&stream) else {
            return MockResponse::Error(stream_not_found());
        };
        let start = match req.next_token() {
            None => 0,
            Some(token) => token
                .strip_prefix("f/")
                .and_then(|n| n.parse::<usize>().ok())
                .expect("the tailer only sends tokens it was given"),
        };
        let end = (start + self.page_size).min(events.len());
        let out = events
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .map(|(t, m)| event(*t, m))
            .collect();
        MockResponse::Output(page(out, &format!("f/{end}")))
    }
}

fn fake_rule(fake: &Arc<Mutex<FakeLogs>>) -> Rule {
    let fake = Arc::clone(fake);
    mock!(Client::get_log_events)
        .match_requests(|req| req.log_group_name() == Some(GROUP))
        .then_compute_response(move |req| fake.lock().expect("fake lock").get(req))
}

fn fixed_tailer(names: &[&str]) -> LogTailer {
    LogTailer::fixed(
        GROUP,
        names.iter().map(|n| (*n).to_owned()).collect(),
        StreamNaming::Ecs,
    )
}

// ---------------------------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn discovery_follows_next_token_past_50_streams_then_stops_describing() {
    let page1: Vec<String> = (1..=50).map(host).collect();
    let page2: Vec<String> = (51..=100).map(host).collect();
    let page3: Vec<String> = (101..=120).map(host).collect();
    let first = describe_rule(None, move || streams_page(&page1, Some("p2")));
    let second = describe_rule(Some("p2"), move || streams_page(&page2, Some("p3")));
    let third = describe_rule(Some("p3"), move || streams_page(&page3, None));
    // Every stream is empty: the head read gives a token, the next call returns it unchanged.
    let reads = mock!(Client::get_log_events)
        .match_requests(|req| req.log_group_name() == Some(GROUP))
        .then_compute_output(|req| {
            let token = req
                .next_token()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("f/{}", req.log_stream_name().unwrap_or_default()));
            page(Vec::new(), &token)
        });
    let client = client(RuleMode::MatchAny, &[&first, &second, &third, &reads]);
    let mut tailer = LogTailer::discover(GROUP, "job/", StreamNaming::SageMakerTraining, Some(120));

    let lines = tailer.poll(&client).await.expect("first poll");
    assert!(lines.is_empty());
    assert_eq!(tailer.streams(), 120, "all three pages were read");
    assert_eq!(tailer.sources(), 120);
    assert_eq!(
        (first.num_calls(), second.num_calls(), third.num_calls()),
        (1, 1, 1),
        "each page once, reached through nextToken"
    );
    assert_eq!(tailer.calls_made(), 3 + 120 * 2);

    let lines = tailer.poll(&client).await.expect("second poll");
    assert!(lines.is_empty());
    assert_eq!(
        first.num_calls() + second.num_calls() + third.num_calls(),
        3,
        "no DescribeLogStreams once the expected streams are known"
    );
    assert_eq!(
        tailer.calls_made(),
        3 + 120 * 2 + 120,
        "one call per caught-up stream"
    );
    assert_eq!(reads.num_calls(), 120 * 3);
}

#[tokio::test]
async fn discovery_stops_paging_once_the_expected_count_is_reached() {
    let page1: Vec<String> = (1..=50).map(host).collect();
    let page2: Vec<String> = (51..=100).map(host).collect();
    let first = describe_rule(None, move || streams_page(&page1, Some("p2")));
    let second = describe_rule(Some("p2"), move || streams_page(&page2, Some("p3")));
    let third = describe_rule(Some("p3"), || streams_page(&[], None));
    let reads = mock!(Client::get_log_events)
        .match_requests(|req| req.log_group_name() == Some(GROUP))
        .then_compute_output(|_| page(Vec::new(), "f/0"));
    let client = client(RuleMode::MatchAny, &[&first, &second, &third, &reads]);
    let mut tailer = LogTailer::discover(GROUP, "job/", StreamNaming::SageMakerTraining, Some(60));

    tailer.poll(&client).await.expect("poll");
    assert_eq!(tailer.streams(), 100);
    assert_eq!(third.num_calls(), 0, "page three was not needed");
}

#[tokio::test]
async fn a_stream_appearing_on_the_second_poll_is_read_from_its_head() {
    let rules = [
        // Poll 1: only algo-1 exists so far.
        describe_rule(None, || streams_page(&[host(1)], None)),
        get_rule("job/algo-1-1700000000", None, || {
            page(vec![event(1_000, "a1")], "a/1")
        }),
        get_rule("job/algo-1-1700000000", Some("a/1"), || page(vec![], "a/1")),
        // Poll 2: algo-2 shows up; its first read must start at the head, without a token.
        describe_rule(None, || streams_page(&[host(1), host(2)], None)),
        get_rule("job/algo-1-1700000000", Some("a/1"), || page(vec![], "a/1")),
        get_rule("job/algo-2-1700000000", None, || {
            page(vec![event(500, "b1"), event(1_500, "b2")], "b/2")
        }),
        get_rule("job/algo-2-1700000000", Some("b/2"), || page(vec![], "b/2")),
        // Poll 3: both known, no more discovery.
        get_rule("job/algo-1-1700000000", Some("a/1"), || page(vec![], "a/1")),
        get_rule("job/algo-2-1700000000", Some("b/2"), || page(vec![], "b/2")),
    ];
    let client = client(RuleMode::Sequential, &rules.iter().collect::<Vec<_>>());
    let mut tailer = LogTailer::discover(GROUP, "job/", StreamNaming::SageMakerTraining, Some(2));

    let first = tailer.poll(&client).await.expect("poll 1");
    assert_eq!(messages(&first), ["a1"]);
    assert_eq!(tailer.sources(), 1);

    let second = tailer.poll(&client).await.expect("poll 2");
    assert_eq!(
        messages(&second),
        ["b1", "b2"],
        "from the head of the new stream"
    );
    assert!(second.iter().all(|l| l.source == "algo-2"));
    assert_eq!(tailer.sources(), 2);

    let third = tailer.poll(&client).await.expect("poll 3");
    assert!(third.is_empty());
    assert_eq!(tailer.calls_made(), 9);
    assert!(
        rules.iter().all(|r| r.num_calls() == 1),
        "every expected call was made"
    );
}

// ---------------------------------------------------------------------------------------------
// Reading and merging
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn two_hosts_are_merged_by_timestamp_with_source_labels() {
    let rules = [
        describe_rule(None, || streams_page(&[host(1), host(2)], None)),
        get_rule("job/algo-1-1700000000", None, || {
            page(
                vec![
                    event(1_000, "a-first"),
                    event(3_000, "a-third"),
                    event(3_000, "a-tie"),
                    // Out of order within its stream: must stay where CloudWatch put it.
                    event(2_500, "a-late"),
                ],
                "a/4",
            )
        }),
        get_rule("job/algo-1-1700000000", Some("a/4"), || page(vec![], "a/4")),
        get_rule("job/algo-2-1700000000", None, || {
            page(
                vec![
                    event(2_000, "b-second"),
                    event(3_000, "b-tie"),
                    event(4_000, "b-last"),
                ],
                "b/3",
            )
        }),
        get_rule("job/algo-2-1700000000", Some("b/3"), || page(vec![], "b/3")),
    ];
    let client = client(RuleMode::Sequential, &rules.iter().collect::<Vec<_>>());
    let mut tailer = LogTailer::discover(GROUP, "job/", StreamNaming::SageMakerTraining, Some(2));

    let lines = tailer.poll(&client).await.expect("poll");
    assert_eq!(
        messages(&lines),
        [
            "a-first", "b-second", "a-third", "a-tie", "a-late", "b-tie", "b-last"
        ]
    );
    assert_eq!(tailer.sources(), 2);
    let shown: Vec<String> = lines.iter().map(|l| format_line(l, true)).collect();
    assert_eq!(shown[0], "[algo-1] a-first");
    assert_eq!(shown[1], "[algo-2] b-second");
    assert_eq!(format_line(&lines[1], false), "b-second");
}

#[tokio::test]
async fn a_page_chain_stops_on_the_repeated_token_and_the_next_poll_resumes() {
    let s = "app/job/task1";
    let rules = [
        get_rule(s, None, || {
            page(vec![event(1, "e1"), event(2, "e2")], "f/2")
        }),
        get_rule(s, Some("f/2"), || page(vec![event(3, "e3")], "f/3")),
        get_rule(s, Some("f/3"), || page(vec![], "f/3")),
        // Poll 2 resumes from the last token, not from the head.
        get_rule(s, Some("f/3"), || page(vec![event(4, "e4")], "f/4")),
        get_rule(s, Some("f/4"), || page(vec![], "f/4")),
    ];
    let client = client(RuleMode::Sequential, &rules.iter().collect::<Vec<_>>());
    let mut tailer = fixed_tailer(&[s]);

    let first = tailer.poll(&client).await.expect("poll 1");
    assert_eq!(messages(&first), ["e1", "e2", "e3"]);
    assert_eq!(tailer.calls_made(), 3, "stopped at the repeated token");
    let second = tailer.poll(&client).await.expect("poll 2");
    assert_eq!(messages(&second), ["e4"]);
    assert_eq!(tailer.calls_made(), 5);
    assert_eq!(second[0].source, "job");
}

#[tokio::test]
async fn while_backlogged_reads_one_page_per_poll_for_an_active_stream() {
    let s = "app/job/task1";
    let rules = [
        get_rule(s, None, || page(vec![event(1, "e1")], "f/1")),
        get_rule(s, Some("f/1"), || page(vec![event(2, "e2")], "f/2")),
        get_rule(s, Some("f/2"), || page(vec![], "f/2")),
    ];
    let client = client(RuleMode::Sequential, &rules.iter().collect::<Vec<_>>());
    let mut tailer = fixed_tailer(&[s]).with_page_follow(PageFollow::WhileBacklogged);

    assert_eq!(
        messages(&tailer.poll(&client).await.expect("poll 1")),
        ["e1"]
    );
    assert_eq!(tailer.calls_made(), 1);
    assert_eq!(
        messages(&tailer.poll(&client).await.expect("poll 2")),
        ["e2"]
    );
    assert_eq!(tailer.calls_made(), 2);
    assert!(tailer.poll(&client).await.expect("poll 3").is_empty());
    assert_eq!(tailer.calls_made(), 3);
}

// ---------------------------------------------------------------------------------------------
// Errors: nothing lost, nothing repeated
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_throttled_stream_loses_and_repeats_nothing() {
    let fake = FakeLogs::new(2);
    {
        let mut f = fake.lock().expect("fake lock");
        f.write(
            "app/job/t1",
            &[
                (1_000, "j1"),
                (2_000, "j2"),
                (3_000, "j3"),
                (4_000, "j4"),
                (5_000, "j5"),
            ],
        );
        f.write(
            "app/sidecar/t1",
            &[(1_500, "s1"), (2_500, "s2"), (3_500, "s3")],
        );
        // The sidecar's first read is throttled, after the job stream was read in full.
        f.throttle.insert("app/sidecar/t1".to_owned(), vec![1]);
    }
    let rule = fake_rule(&fake);
    let client = client(RuleMode::MatchAny, &[&rule]);
    let mut tailer = fixed_tailer(&["app/job/t1", "app/sidecar/t1"]);
    let mut shown = Vec::new();

    let err = tailer.poll(&client).await.expect_err("throttled");
    assert!(err.is_throttling() && err.is_transient());
    assert_eq!(err.kind(), LogErrorKind::Throttling);
    assert!(err.to_string().contains("app/sidecar/t1"), "{err}");

    fake.lock()
        .expect("fake lock")
        .write("app/job/t1", &[(6_000, "j6")]);
    shown.extend(tailer.poll(&client).await.expect("poll 2"));
    shown.extend(tailer.poll(&client).await.expect("poll 3"));

    assert_eq!(
        messages(&shown),
        ["j1", "s1", "j2", "s2", "j3", "s3", "j4", "j5", "j6"],
        "every line exactly once, merged by time"
    );
    let requests = fake.lock().expect("fake lock").requests.clone();
    let sidecar: Vec<_> = requests
        .iter()
        .filter(|(s, _)| s == "app/sidecar/t1")
        .map(|(_, t)| t.as_deref())
        .collect();
    assert_eq!(
        sidecar,
        [None, None, Some("f/2"), Some("f/3"), Some("f/3")],
        "the failed head read was retried from the head"
    );
    assert_eq!(tailer.calls_made(), requests.len() as u64);
}

#[tokio::test]
async fn throttling_in_the_middle_of_a_page_chain_keeps_the_pages_already_read() {
    let fake = FakeLogs::new(2);
    {
        let mut f = fake.lock().expect("fake lock");
        f.write(
            "app/job/t1",
            &[
                (1_000, "j1"),
                (2_000, "j2"),
                (3_000, "j3"),
                (4_000, "j4"),
                (5_000, "j5"),
            ],
        );
        f.write(
            "app/sidecar/t1",
            &[(1_500, "s1"), (2_500, "s2"), (3_500, "s3")],
        );
        f.throttle.insert("app/job/t1".to_owned(), vec![2]);
    }
    let rule = fake_rule(&fake);
    let client = client(RuleMode::MatchAny, &[&rule]);
    let mut tailer = fixed_tailer(&["app/job/t1", "app/sidecar/t1"]);
    let mut shown = Vec::new();

    assert!(tailer.poll(&client).await.is_err());
    for _ in 0..3 {
        shown.extend(tailer.poll(&client).await.expect("later polls"));
    }
    assert_eq!(
        messages(&shown),
        ["j1", "s1", "j2", "s2", "j3", "s3", "j4", "j5"]
    );
    let requests = fake.lock().expect("fake lock").requests.clone();
    let job: Vec<_> = requests
        .iter()
        .filter(|(s, _)| s == "app/job/t1")
        .map(|(_, t)| t.as_deref())
        .take(3)
        .collect();
    assert_eq!(
        job,
        [None, Some("f/2"), Some("f/2")],
        "the throttled call did not move the cursor, the page before it did"
    );
}

#[tokio::test]
async fn lines_read_before_a_permanent_error_can_still_be_taken() {
    let s1 = "app/job/t1";
    let s2 = "app/sidecar/t1";
    let rules = [
        get_rule(s1, None, || page(vec![event(1, "kept")], "f/1")),
        get_rule(s1, Some("f/1"), || page(vec![], "f/1")),
        get_error_rule(s2, None, || {
            GetLogEventsError::generic(
                ErrorMetadata::builder()
                    .code("AccessDeniedException")
                    .message("not authorized to perform logs:GetLogEvents")
                    .build(),
            )
        }),
    ];
    let client = client(RuleMode::Sequential, &rules.iter().collect::<Vec<_>>());
    let mut tailer = fixed_tailer(&[s1, s2]);

    let err = tailer.poll(&client).await.expect_err("access denied");
    assert_eq!(err.kind(), LogErrorKind::Permanent);
    assert!(!err.is_transient());
    assert_eq!(messages(&tailer.take_pending()), ["kept"]);
    assert!(tailer.take_pending().is_empty(), "handed out once");
}

#[tokio::test]
async fn a_server_error_is_transient() {
    let rule = mock!(Client::get_log_events)
        .sequence()
        .http_status(503, None)
        .build();
    let client = client(RuleMode::Sequential, &[&rule]);
    let mut tailer = fixed_tailer(&["app/job/t1"]);

    let err = tailer.poll(&client).await.expect_err("503");
    assert_eq!(err.kind(), LogErrorKind::Transient);
    assert!(!err.is_throttling());
}

#[tokio::test]
async fn a_missing_group_or_stream_means_no_logs_yet() {
    let rules = [
        mock!(Client::describe_log_streams).then_error(|| {
            DescribeLogStreamsError::ResourceNotFoundException(
                ResourceNotFoundException::builder()
                    .message("The specified log group does not exist.")
                    .build(),
            )
        }),
        describe_rule(None, || streams_page(&[host(1)], None)),
        get_rule("job/algo-1-1700000000", None, || {
            page(vec![event(1, "hello")], "f/1")
        }),
        get_rule("job/algo-1-1700000000", Some("f/1"), || page(vec![], "f/1")),
    ];
    let client = client(RuleMode::Sequential, &rules.iter().collect::<Vec<_>>());
    let mut discovered =
        LogTailer::discover(GROUP, "job/", StreamNaming::SageMakerTraining, Some(1));
    assert!(
        discovered
            .poll(&client)
            .await
            .expect("no group yet")
            .is_empty()
    );
    assert_eq!((discovered.streams(), discovered.sources()), (0, 0));
    assert_eq!(
        messages(&discovered.poll(&client).await.expect("group now")),
        ["hello"]
    );

    let s = "app/job/t1";
    let rules = [
        get_error_rule(s, None, stream_not_found),
        get_rule(s, None, || page(vec![event(1, "first")], "f/1")),
        get_rule(s, Some("f/1"), || page(vec![], "f/1")),
    ];
    let client = self::client(RuleMode::Sequential, &rules.iter().collect::<Vec<_>>());
    let mut fixed = fixed_tailer(&[s]);
    assert!(fixed.poll(&client).await.expect("no stream yet").is_empty());
    assert_eq!(
        fixed.sources(),
        0,
        "a stream that is not there is no host yet"
    );
    assert_eq!(
        messages(&fixed.poll(&client).await.expect("stream now")),
        ["first"]
    );
    assert_eq!(fixed.sources(), 1);
}

#[tokio::test]
async fn calls_made_counts_every_call_including_failed_ones() {
    let rules = [
        mock!(Client::describe_log_streams).then_error(|| {
            DescribeLogStreamsError::generic(
                ErrorMetadata::builder().code("ThrottlingException").build(),
            )
        }),
        describe_rule(None, || streams_page(&[host(1)], None)),
        get_error_rule("job/algo-1-1700000000", None, throttled),
        get_rule("job/algo-1-1700000000", None, || {
            page(vec![event(1, "x")], "f/1")
        }),
        get_rule("job/algo-1-1700000000", Some("f/1"), || page(vec![], "f/1")),
    ];
    let client = client(RuleMode::Sequential, &rules.iter().collect::<Vec<_>>());
    let mut tailer = LogTailer::discover(GROUP, "job/", StreamNaming::SageMakerTraining, Some(1));

    let err = tailer.poll(&client).await.expect_err("describe throttled");
    assert!(err.is_throttling());
    assert_eq!(tailer.calls_made(), 1);
    assert!(tailer.poll(&client).await.is_err(), "read throttled");
    assert_eq!(tailer.calls_made(), 3);
    assert_eq!(messages(&tailer.poll(&client).await.expect("ok")), ["x"]);
    assert_eq!(tailer.calls_made(), 5);
    let mocked: usize = rules.iter().map(Rule::num_calls).sum();
    assert_eq!(tailer.calls_made(), mocked as u64);
}

// ---------------------------------------------------------------------------------------------
// Drain
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn drain_reads_late_events_and_stops_once_tokens_are_stable() {
    let fake = FakeLogs::new(10);
    fake.lock()
        .expect("fake lock")
        .write("app/job/t1", &[(1, "before-end")]);
    let rule = fake_rule(&fake);
    let client = client(RuleMode::MatchAny, &[&rule]);
    let interval = Duration::from_secs(2);
    let mut tailer = fixed_tailer(&["app/job/t1"]).with_drain_interval(interval);

    assert_eq!(
        messages(&tailer.poll(&client).await.expect("poll")),
        ["before-end"]
    );
    let calls_before = tailer.calls_made();
    // Written before the job ended but readable only when the drain's second pass runs.
    fake.lock().expect("fake lock").late.push((
        usize::try_from(calls_before).expect("small") + 2,
        "app/job/t1".to_owned(),
        2,
        "late".to_owned(),
    ));

    let started = tokio::time::Instant::now();
    let lines = tailer
        .drain(&client, 10, &CancellationToken::new())
        .await
        .expect("drain");
    assert_eq!(messages(&lines), ["late"]);
    // Pass 1 quiet (1 call), pass 2 finds the late event (2 calls), passes 3 and 4 quiet.
    assert_eq!(tailer.calls_made() - calls_before, 5);
    assert_eq!(
        started.elapsed(),
        interval * 3,
        "three pauses between four passes"
    );
}

#[tokio::test(start_paused = true)]
async fn drain_of_a_caught_up_tailer_is_two_quiet_passes() {
    let fake = FakeLogs::new(10);
    fake.lock()
        .expect("fake lock")
        .write("app/job/t1", &[(1, "x")]);
    let rule = fake_rule(&fake);
    let client = client(RuleMode::MatchAny, &[&rule]);
    let mut tailer = fixed_tailer(&["app/job/t1"]);
    tailer.poll(&client).await.expect("poll");
    let before = tailer.calls_made();

    let lines = tailer
        .drain(&client, 10, &CancellationToken::new())
        .await
        .expect("drain");
    assert!(lines.is_empty());
    assert_eq!(
        tailer.calls_made() - before,
        2,
        "the quiet pass and the extra pass"
    );
}

#[tokio::test(start_paused = true)]
async fn drain_honours_max_passes_and_cancellation() {
    let fake = FakeLogs::new(1);
    fake.lock()
        .expect("fake lock")
        .write("app/job/t1", &[(1, "a"), (2, "b"), (3, "c")]);
    let rule = fake_rule(&fake);
    let client = client(RuleMode::MatchAny, &[&rule]);
    let mut tailer = fixed_tailer(&["app/job/t1"]);

    let cancelled = CancellationToken::new();
    cancelled.cancel();
    assert!(
        tailer
            .drain(&client, 10, &cancelled)
            .await
            .expect("drain")
            .is_empty()
    );
    assert_eq!(tailer.calls_made(), 0, "no call once cancelled");

    // Page size one: a single pass reads all three (and confirms the end).
    let lines = tailer
        .drain(&client, 1, &CancellationToken::new())
        .await
        .expect("one pass");
    assert_eq!(messages(&lines), ["a", "b", "c"]);
    assert_eq!(tailer.calls_made(), 4);
}

#[tokio::test(start_paused = true)]
async fn drain_retries_a_throttled_pass_without_losing_lines() {
    let fake = FakeLogs::new(10);
    {
        let mut f = fake.lock().expect("fake lock");
        f.write("app/job/t1", &[(1, "a")]);
        f.write("app/sidecar/t1", &[(2, "b")]);
        f.throttle.insert("app/sidecar/t1".to_owned(), vec![1]);
    }
    let rule = fake_rule(&fake);
    let client = client(RuleMode::MatchAny, &[&rule]);
    let mut tailer = fixed_tailer(&["app/job/t1", "app/sidecar/t1"]);

    let mut passes = Vec::new();
    tailer
        .drain_with(&client, 10, &CancellationToken::new(), |lines| {
            passes.push(messages(&lines).join(","));
        })
        .await
        .expect("drain");
    assert_eq!(
        passes,
        ["a", "b"],
        "the first pass's line is delivered despite the throttle"
    );
}

// ---------------------------------------------------------------------------------------------
// Bounded memory and rediscovery
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_burst_is_handed_out_in_budgeted_polls_without_loss() {
    let fake = FakeLogs::new(10);
    let big: Vec<(i64, String)> = (0..50)
        .map(|i| (i, format!("{i:03}{}", "x".repeat(100_000))))
        .collect();
    {
        let mut f = fake.lock().expect("fake lock");
        let events: Vec<(i64, &str)> = big.iter().map(|(t, m)| (*t, m.as_str())).collect();
        f.write("app/job/t1", &events);
    }
    let rule = fake_rule(&fake);
    let client = client(RuleMode::MatchAny, &[&rule]);
    let mut tailer = fixed_tailer(&["app/job/t1"]);

    // About 1 MB per page against a 2 MiB budget: the third page crosses it, so the poll stops
    // there and the next poll picks up from the saved token.
    let first = tailer.poll(&client).await.expect("poll 1");
    assert_eq!((first.len(), tailer.calls_made()), (30, 3));
    let second = tailer.poll(&client).await.expect("poll 2");
    assert_eq!(second.len(), 20);
    let all: Vec<String> = first.into_iter().chain(second).map(|l| l.message).collect();
    let expected: Vec<String> = big.into_iter().map(|(_, m)| m).collect();
    assert!(all == expected, "every event once, in order");
}

#[tokio::test]
async fn rediscover_finds_a_restarted_hosts_new_stream() {
    let restarted = "job/algo-1-1700009999".to_owned();
    let rules = [
        describe_rule(None, || streams_page(&[host(1)], None)),
        get_rule("job/algo-1-1700000000", None, || {
            page(vec![event(1, "before")], "a/1")
        }),
        get_rule("job/algo-1-1700000000", Some("a/1"), || page(vec![], "a/1")),
        // After `rediscover`, one more DescribeLogStreams finds the new epoch's stream.
        describe_rule(None, move || {
            streams_page(&[host(1), restarted.clone()], None)
        }),
        get_rule("job/algo-1-1700000000", Some("a/1"), || page(vec![], "a/1")),
        get_rule("job/algo-1-1700009999", None, || {
            page(vec![event(9, "after")], "c/1")
        }),
        get_rule("job/algo-1-1700009999", Some("c/1"), || page(vec![], "c/1")),
    ];
    let client = client(RuleMode::Sequential, &rules.iter().collect::<Vec<_>>());
    let mut tailer = LogTailer::discover(GROUP, "job/", StreamNaming::SageMakerTraining, Some(1));

    assert_eq!(
        messages(&tailer.poll(&client).await.expect("poll 1")),
        ["before"]
    );
    tailer.rediscover();
    let lines = tailer.poll(&client).await.expect("poll 2");
    assert_eq!(messages(&lines), ["after"]);
    assert_eq!(lines[0].source, "algo-1");
    assert_eq!(
        (tailer.streams(), tailer.sources()),
        (2, 1),
        "one host, two streams"
    );
}
