//! The host watcher over a real socket in a temp state root, fed by scripted sessions and a
//! scripted queue: what each job gets, sharing, slow readers, failures, idle exit, and a job's
//! fallback when the watcher goes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::wire::ToJob;
use super::*;
use crate::aws::errors::AwsCallError;
use crate::logs::live::LiveEvent;
use crate::watch::events::Message;

/// Long enough for anything that should happen; a test that waits this long has failed.
const PATIENCE: Duration = Duration::from_secs(10);

/// The sender of each session started, by group.
type Started = Arc<Mutex<Vec<(String, mpsc::Sender<LiveItem>)>>>;
/// Batches of messages (or a failure) for the queue's receives, in order.
type Batches = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Result<Vec<Message>, String>>>>;

/// Sessions the tests feed by hand, one sender per started session.
#[derive(Clone, Default)]
struct Script {
    sessions: Started,
    started: Arc<tokio::sync::Notify>,
    queue: Option<ScriptQueue>,
}

#[derive(Clone)]
struct ScriptQueue {
    batches: Batches,
    deleted: Arc<Mutex<Vec<String>>>,
}

impl Queue for ScriptQueue {
    async fn receive(&self) -> Result<Vec<Message>, AwsCallError> {
        match self.batches.lock().await.recv().await {
            Some(Ok(m)) => Ok(m),
            Some(Err(e)) => Err(AwsCallError::other(
                "ReceiveMessage",
                e,
                crate::aws::errors::Retry::Permanent,
            )),
            None => std::future::pending().await,
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), AwsCallError> {
        self.deleted.lock().expect("lock").push(receipt.to_owned());
        Ok(())
    }
}

impl Sources for Script {
    type Queue = ScriptQueue;

    fn session(&self, group: &str) -> Session {
        let (tx, rx) = mpsc::channel(16);
        self.sessions
            .lock()
            .expect("lock")
            .push((group.to_owned(), tx));
        self.started.notify_one();
        Session::from_items(rx)
    }

    fn queue(&self) -> Option<ScriptQueue> {
        self.queue.clone()
    }
}

impl Script {
    async fn session_of(&self, group: &str) -> mpsc::Sender<LiveItem> {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let started = self.started.notified();
                if let Some((_, tx)) = self
                    .sessions
                    .lock()
                    .expect("lock")
                    .iter()
                    .rev()
                    .find(|(g, _)| g == group)
                {
                    return tx.clone();
                }
                started.await;
            }
        })
        .await
        .expect("a session starts")
    }

    fn count(&self, group: &str) -> usize {
        let sessions = self.sessions.lock().expect("lock");
        sessions.iter().filter(|(g, _)| g == group).count()
    }
}

struct Running {
    dir: tempfile::TempDir,
    stop: CancellationToken,
    served: JoinHandle<()>,
}

impl Running {
    fn host(&self) -> HostWatcher {
        // Never started by a job here: a launcher that cannot start anything.
        HostWatcher::new(
            self.dir.path(),
            Launcher {
                program: "/nonexistent/sagemaker-executor".into(),
                args: Vec::new(),
            },
        )
    }

    async fn subscribe(&self, s: wire::Subscribe) -> client::Relay {
        self.host().subscribe(&s).await.expect("subscribed")
    }
}

fn serve_with(script: &Script, idle: Duration) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let bound = bind(dir.path()).expect("bound");
    let stop = CancellationToken::new();
    let stopping = stop.clone();
    let sources = script.clone();
    let root = dir.path().to_owned();
    let served = tokio::spawn(async move {
        serve(
            bound,
            sources,
            &root,
            Duration::from_secs(120),
            idle,
            &stopping,
        )
        .await;
    });
    Running { dir, stop, served }
}

fn logs(group: &str, prefix: &str) -> wire::Subscribe {
    wire::Subscribe::Logs {
        group: group.into(),
        streams: wire::WireStreams::Prefix(prefix.into()),
    }
}

fn update(events: &[(&str, &str)]) -> LiveItem {
    LiveItem::Update {
        at: tokio::time::Instant::now(),
        sampled: false,
        events: events
            .iter()
            .enumerate()
            .map(|(i, (stream, message))| LiveEvent {
                stream: (*stream).into(),
                timestamp_ms: i64::try_from(i).unwrap_or(0),
                message: (*message).into(),
            })
            .collect(),
    }
}

async fn next(relay: &mut client::Relay) -> Option<ToJob> {
    tokio::time::timeout(PATIENCE, relay.next())
        .await
        .expect("a line in time")
}

fn messages(line: Option<ToJob>) -> Vec<String> {
    match line {
        Some(ToJob::Update { events, .. }) => events.into_iter().map(|e| e.message).collect(),
        other => panic!("not an update: {other:?}"),
    }
}

#[tokio::test]
async fn jobs_of_one_group_share_one_session_and_each_gets_only_its_streams() {
    let script = Script::default();
    let w = serve_with(&script, PATIENCE);
    let mut a = w.subscribe(logs("/g", "job-a/")).await;
    let mut b = w.subscribe(logs("/g", "job-b/")).await;
    assert_eq!(next(&mut a).await, Some(ToJob::Started));
    assert_eq!(next(&mut b).await, Some(ToJob::Started));
    let session = script.session_of("/g").await;
    // An update without a job's events reaches it once: the session is alive and unsampled.
    let others = || update(&[("job-c/x", "c0")]);
    session.send(others()).await.expect("sent");
    assert_eq!(messages(next(&mut a).await), Vec::<String>::new());
    session
        .send(update(&[
            ("job-a/algo-1", "a1"),
            ("job-b/algo-1", "b1"),
            ("job-a/algo-2", "a2"),
            ("job-c/algo-1", "c1"),
        ]))
        .await
        .expect("sent");
    assert_eq!(messages(next(&mut a).await), ["a1", "a2"]);
    assert_eq!(messages(next(&mut b).await), Vec::<String>::new());
    assert_eq!(messages(next(&mut b).await), ["b1"]);
    // ... and not again until a gap: a quiet job is not woken every second.
    session.send(others()).await.expect("sent");
    session
        .send(LiveItem::Gap("session ended".into()))
        .await
        .expect("sent");
    assert_eq!(next(&mut a).await, Some(ToJob::Gap("session ended".into())));
    session.send(others()).await.expect("sent");
    assert_eq!(messages(next(&mut a).await), Vec::<String>::new());
    assert_eq!(script.count("/g"), 1, "one session for both jobs");

    // Another group gets its own session; the last job of a group leaving ends it.
    let mut c = w.subscribe(logs("/other", "x/")).await;
    assert_eq!(next(&mut c).await, Some(ToJob::Started));
    let other = script.session_of("/other").await;
    drop(c);
    tokio::time::timeout(PATIENCE, other.closed())
        .await
        .expect("the session of a group without jobs ends");
    drop((a, b));
    tokio::time::timeout(PATIENCE, session.closed())
        .await
        .expect("the shared session ends with its last job");
    w.stop.cancel();
    w.served.await.expect("served");
}

#[tokio::test]
async fn a_job_that_reads_too_slowly_is_told_of_the_gap_before_later_updates() {
    let script = Script::default();
    let w = serve_with(&script, PATIENCE);
    let mut slow = w.subscribe(logs("/g", "s/")).await;
    let session = script.session_of("/g").await;
    // Far more than the socket and the job's channel hold, without reading.
    let big = "x".repeat(64 * 1024);
    for _ in 0..400 {
        session
            .send(update(&[("s/1", big.as_str())]))
            .await
            .expect("sent");
    }
    // Live Tail sends an update about every second; here each line read is followed by one.
    let mut saw_gap = false;
    loop {
        let line = next(&mut slow).await;
        match line {
            Some(ToJob::Gap(reason)) => {
                assert_eq!(reason, "the log reader fell behind");
                saw_gap = true;
            }
            Some(ToJob::Update { events, .. }) if events[0].message == "tick" => {
                assert!(saw_gap, "the gap comes before the first update after it");
                break;
            }
            Some(ToJob::Update { .. } | ToJob::Started) => {}
            other => panic!("{other:?}"),
        }
        session
            .send(update(&[("s/1", "tick")]))
            .await
            .expect("sent");
    }
    assert!(saw_gap, "dropped updates are announced");
    w.stop.cancel();
    w.served.await.expect("served");
}

#[tokio::test]
async fn a_group_whose_session_cannot_start_fails_its_jobs_and_the_next_at_once() {
    let script = Script::default();
    let w = serve_with(&script, PATIENCE);
    let mut a = w.subscribe(logs("/g", "a/")).await;
    assert_eq!(next(&mut a).await, Some(ToJob::Started));
    let session = script.session_of("/g").await;
    session
        .send(LiveItem::Failed("AccessDenied".into()))
        .await
        .expect("sent");
    assert_eq!(
        next(&mut a).await,
        Some(ToJob::Failed("AccessDenied".into()))
    );
    assert_eq!(next(&mut a).await, None, "the watcher lets go of the job");
    let mut b = w.subscribe(logs("/g", "b/")).await;
    assert_eq!(
        next(&mut b).await,
        Some(ToJob::Failed("AccessDenied".into()))
    );
    assert_eq!(next(&mut b).await, None);
    assert_eq!(
        script.count("/g"),
        1,
        "no new session while the failure is fresh"
    );
    w.stop.cancel();
    w.served.await.expect("served");
}

fn training_event(name: &str) -> String {
    serde_json::json!({
        "detail-type": "SageMaker Training Job State Change",
        "detail": {"TrainingJobName": name}
    })
    .to_string()
}

fn events_of(name: &str) -> wire::Subscribe {
    wire::Subscribe::Events {
        key: wire::WireKey::TrainingJob(name.into()),
    }
}

#[tokio::test]
async fn one_reader_of_the_queue_hints_each_job_and_leaves_what_a_job_reading_itself_awaits() {
    let (batches, rx) = mpsc::unbounded_channel();
    let queue = ScriptQueue {
        batches: Arc::new(tokio::sync::Mutex::new(rx)),
        deleted: Arc::default(),
    };
    let script = Script {
        queue: Some(queue.clone()),
        ..Script::default()
    };
    let w = serve_with(&script, PATIENCE);
    // A job of this host that reads the queue itself (no watcher) waits for "theirs".
    let registry = Registry::new(w.dir.path());
    let _theirs = registry
        .register(&ResourceKey::TrainingJob("theirs".into()))
        .expect("register");
    let mut a = w.subscribe(events_of("a")).await;
    let mut b = w.subscribe(events_of("b")).await;
    batches.send(Ok(Vec::new())).expect("queued");
    assert_eq!(next(&mut a).await, Some(ToJob::Relax(120)));
    assert_eq!(next(&mut b).await, Some(ToJob::Relax(120)));
    let m = |body: String, receipt: &str| Message {
        body,
        receipt: receipt.into(),
    };
    batches
        .send(Ok(vec![
            m(training_event("a"), "r-a"),
            m(training_event("theirs"), "r-theirs"),
            m(training_event("nobody"), "r-nobody"),
            m("garbage".into(), "r-garbage"),
            m(training_event("b"), "r-b"),
        ]))
        .expect("queued");
    assert_eq!(next(&mut a).await, Some(ToJob::Changed));
    assert_eq!(next(&mut b).await, Some(ToJob::Changed));
    // A job that comes once the queue is known to deliver hears so at once.
    let mut c = w.subscribe(events_of("c")).await;
    assert_eq!(next(&mut c).await, Some(ToJob::Relax(120)));
    let deleted = queue.deleted.lock().expect("lock").clone();
    assert_eq!(deleted, ["r-a", "r-nobody", "r-garbage", "r-b"]);

    // A queue that fails: every job, and every later one, polls instead.
    batches.send(Err("AccessDenied".into())).expect("queued");
    assert!(matches!(next(&mut a).await, Some(ToJob::Lost(r)) if r.contains("AccessDenied")));
    assert_eq!(next(&mut a).await, None);
    let mut d = w.subscribe(events_of("d")).await;
    assert!(matches!(next(&mut d).await, Some(ToJob::Lost(_))));
    w.stop.cancel();
    w.served.await.expect("served");
}

#[tokio::test]
async fn the_watcher_leaves_once_idle_and_a_second_one_steps_aside_while_it_runs() {
    let script = Script::default();
    let w = serve_with(&script, Duration::from_millis(300));
    assert!(
        matches!(bind(w.dir.path()), Err(HostError::AlreadyRunning)),
        "one watcher per host"
    );
    let relay = w.subscribe(logs("/g", "a/")).await;
    drop(relay);
    tokio::time::timeout(PATIENCE, w.served)
        .await
        .expect("the idle watcher leaves")
        .expect("served");
    assert!(!socket_path(w.dir.path()).exists(), "its socket is gone");
    // The lock went with it: the next one binds, over a stale socket file too.
    std::fs::write(socket_path(w.dir.path()), "stale").expect("write");
    let again = bind(w.dir.path()).expect("a new watcher binds");
    drop(again);
}

#[tokio::test]
async fn a_jobs_feed_goes_on_alone_with_a_gap_when_the_watcher_stops() {
    let script = Script::default();
    let w = serve_with(&script, PATIENCE);
    // Its own sessions go to an address where nothing listens, so they fail: what matters is
    // that the feed turns to them after the gap.
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url("http://127.0.0.1:9")
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new("AKIDTEST", "secret", None, None, "tests"),
            ),
        )
        .build();
    let client = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    let mut feed = session(
        Some(w.host()),
        client,
        "/g".into(),
        Streams::Prefix("a/".into()),
    );
    let mut recv = async || {
        tokio::time::timeout(PATIENCE, feed.recv())
            .await
            .expect("an item in time")
    };
    assert_eq!(recv().await, Some(LiveItem::Started));
    let upstream = script.session_of("/g").await;
    upstream
        .send(update(&[("a/1", "one")]))
        .await
        .expect("sent");
    assert!(
        matches!(recv().await, Some(LiveItem::Update { events, .. }) if events[0].message == "one")
    );
    w.stop.cancel();
    w.served.await.expect("served");
    assert!(matches!(recv().await, Some(LiveItem::Gap(r)) if r.contains("host watcher stopped")));
    assert!(
        matches!(recv().await, Some(LiveItem::Failed(_))),
        "its own session was tried"
    );
}

#[tokio::test]
async fn without_a_watcher_and_a_launcher_that_cannot_start_one_a_job_is_told_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = HostWatcher::new(
        dir.path(),
        Launcher {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "echo no".into()],
        },
    );
    let e = host
        .subscribe(&logs("/g", "a/"))
        .await
        .expect_err("nothing listens");
    assert!(e.to_string().contains("did not start"), "{e}");
}

#[test]
fn lines_round_trip_and_unknown_fields_are_refused() {
    let sub = logs("/aws/sagemaker/TrainingJobs", "gl-1-2/");
    let text = wire::line(&sub);
    assert_eq!(text.last(), Some(&b'\n'));
    assert_eq!(
        serde_json::from_slice::<wire::Subscribe>(&text).expect("parses"),
        sub
    );
    assert!(
        serde_json::from_str::<wire::Subscribe>(
            r#"{"logs":{"group":"g","streams":{"prefix":"p"},"x":1}}"#
        )
        .is_err()
    );
    let hint = ToJob::from_hint(&Hint::Relax(Duration::from_millis(10)));
    assert_eq!(hint, ToJob::Relax(1), "never 0 s");
    let hinted: HashMap<String, bool> = [ToJob::Changed, ToJob::Lost("x".into()), ToJob::Started]
        .into_iter()
        .map(|line| (format!("{line:?}"), line.hint().is_some()))
        .collect();
    assert!(hinted["Changed"] && !hinted["Started"], "{hinted:?}");
}
