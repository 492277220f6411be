//! The event consumer under a paused clock: a scripted queue (long polls with latencies, failures),
//! the registry on a temp dir, and the wait loop woken by what it sends.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use aws_sdk_sqs::operation::receive_message::{ReceiveMessageError, ReceiveMessageOutput};
use aws_smithy_mocks::{RuleMode, mock};
use tokio::time::Instant;

use super::*;
use crate::aws::errors::Retry;

fn training_event(name: &str) -> String {
    serde_json::json!({
        "version": "0",
        "source": "aws.sagemaker",
        "detail-type": "SageMaker Training Job State Change",
        "detail": {"TrainingJobName": name, "TrainingJobStatus": "InProgress"}
    })
    .to_string()
}

#[test]
fn events_name_their_resource() {
    assert_eq!(
        parse_event(&training_event("gl-1-2")),
        Some(ResourceKey::TrainingJob("gl-1-2".into()))
    );
    let task = r#"{"detail-type":"ECS Task State Change","detail":{"taskArn":"arn:aws:ecs:r:1:task/c/t1","lastStatus":"RUNNING"}}"#;
    assert_eq!(
        parse_event(task),
        Some(ResourceKey::EcsTask("arn:aws:ecs:r:1:task/c/t1".into()))
    );
    let endpoint =
        r#"{"detail-type":"SageMaker Endpoint State Change","detail":{"EndpointName":"ep"}}"#;
    assert_eq!(
        parse_event(endpoint),
        Some(ResourceKey::Endpoint("ep".into()))
    );
    let deployment = r#"{"detail-type":"ECS Deployment State Change","resources":["arn:aws:ecs:r:1:service/c/s"],"detail":{"eventName":"SERVICE_DEPLOYMENT_COMPLETED","deploymentId":"ecs-svc/1"}}"#;
    assert_eq!(
        parse_event(deployment),
        Some(ResourceKey::EcsService(
            "arn:aws:ecs:r:1:service/c/s".into()
        ))
    );
    for other in [
        "not json",
        "{}",
        r#"{"detail-type":"EC2 Instance State-change Notification","detail":{}}"#,
        r#"{"detail-type":"SageMaker Training Job State Change","detail":{"TrainingJobName":""}}"#,
        r#"{"detail-type":"ECS Task State Change","detail":{}}"#,
    ] {
        assert_eq!(parse_event(other), None, "{other}");
    }
}

#[test]
fn the_registry_knows_live_waiters_and_forgets_dead_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Registry::new(dir.path());
    let key = ResourceKey::TrainingJob("a".into());
    let other = ResourceKey::EcsTask("a".into());
    assert!(!registry.is_awaited(&key));
    let registration = registry.register(&key).expect("register");
    assert!(registry.is_awaited(&key));
    assert!(!registry.is_awaited(&other), "kinds are kept apart");
    drop(registration);
    assert!(!registry.is_awaited(&key));
    // A waiter that died without its drop (SIGKILL): no process has a pid this high.
    let gone = registry.register(&key).expect("register");
    std::fs::write(registry.path(&key), "999999999").expect("write");
    assert!(!registry.is_awaited(&key));
    assert!(!registry.path(&key).exists(), "the dead entry is removed");
    drop(gone);
}

/// One scripted long poll: after `latency`, these messages or an error.
struct Poll {
    latency: Duration,
    result: Result<Vec<Message>, Retry>,
}

#[derive(Clone, Default)]
struct FakeQueue {
    polls: Arc<Mutex<VecDeque<Poll>>>,
    deleted: Arc<Mutex<Vec<String>>>,
    receives: Arc<Mutex<Vec<Instant>>>,
}

impl FakeQueue {
    fn new(polls: Vec<Poll>) -> FakeQueue {
        FakeQueue {
            polls: Arc::new(Mutex::new(polls.into())),
            ..FakeQueue::default()
        }
    }
}

impl Queue for FakeQueue {
    async fn receive(&self) -> Result<Vec<Message>, AwsCallError> {
        self.receives.lock().expect("lock").push(Instant::now());
        let poll = self.polls.lock().expect("lock").pop_front();
        match poll {
            Some(p) => {
                tokio::time::sleep(p.latency).await;
                p.result.map_err(|r| {
                    AwsCallError::other("ReceiveMessage", format!("scripted {r:?}"), r)
                })
            }
            // Out of script: an empty queue, long poll after long poll.
            None => {
                tokio::time::sleep(Duration::from_secs(20)).await;
                Ok(Vec::new())
            }
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), AwsCallError> {
        self.deleted.lock().expect("lock").push(receipt.to_owned());
        Ok(())
    }
}

fn msg(body: String, receipt: &str) -> Message {
    Message {
        body,
        receipt: receipt.to_owned(),
    }
}

fn after(secs: u64, messages: Vec<Message>) -> Poll {
    Poll {
        latency: Duration::from_secs(secs),
        result: Ok(messages),
    }
}

#[tokio::test(start_paused = true)]
async fn own_events_wake_the_wait_and_only_other_waiters_events_stay_in_the_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Registry::new(dir.path());
    // Another job of this host waits for "theirs".
    let _theirs = registry
        .register(&ResourceKey::TrainingJob("theirs".into()))
        .expect("register");
    let queue = FakeQueue::new(vec![
        after(20, vec![]),
        after(
            5,
            vec![
                msg(training_event("theirs"), "r-theirs"),
                msg(training_event("mine"), "r-mine-1"),
                msg(training_event("mine"), "r-mine-2"),
                msg(training_event("nobody"), "r-nobody"),
                msg("garbage".into(), "r-garbage"),
            ],
        ),
    ]);
    let safety = Duration::from_secs(300);
    let key = ResourceKey::TrainingJob("mine".into());
    let (mut hints, watch) =
        EventWatch::start(queue.clone(), key.clone(), registry.clone(), safety);
    assert!(
        registry.is_awaited(&key),
        "registered before the first Describe"
    );
    let started = Instant::now();
    assert_eq!(hints.recv().await, Some(Hint::Relax(safety)));
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(20),
        "after the first receive"
    );
    assert!(registry.is_awaited(&key), "registered while it waits");
    assert_eq!(hints.recv().await, Some(Hint::Changed));
    assert_eq!(started.elapsed(), Duration::from_secs(25));
    // Two events of one burst are one hint.
    assert!(hints.try_recv().is_err());
    assert_eq!(
        *queue.deleted.lock().expect("lock"),
        ["r-mine-1", "r-mine-2", "r-nobody", "r-garbage"]
    );
    drop(watch);
    tokio::task::yield_now().await;
    assert!(
        !registry.is_awaited(&key),
        "unregistered when the wait ends"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_receive_is_said_once_and_ends_the_watch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = FakeQueue::new(vec![
        after(20, vec![]),
        Poll {
            latency: Duration::from_millis(50),
            result: Err(Retry::Permanent),
        },
    ]);
    let (mut hints, _watch) = EventWatch::start(
        queue.clone(),
        ResourceKey::TrainingJob("mine".into()),
        Registry::new(dir.path()),
        Duration::from_secs(300),
    );
    assert!(matches!(hints.recv().await, Some(Hint::Relax(_))));
    match hints.recv().await {
        Some(Hint::Lost(text)) => assert!(text.contains("polling instead"), "{text}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(hints.recv().await, None, "nothing after the one warning");
    assert_eq!(queue.receives.lock().expect("lock").len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_long_poll_is_a_failure_said_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The second long poll never answers.
    let queue = FakeQueue::new(vec![after(20, vec![]), after(24 * 3600, vec![])]);
    let (mut hints, _watch) = EventWatch::start(
        queue.clone(),
        ResourceKey::TrainingJob("mine".into()),
        Registry::new(dir.path()),
        Duration::from_secs(300),
    );
    assert!(matches!(hints.recv().await, Some(Hint::Relax(_))));
    let started = Instant::now();
    match hints.recv().await {
        Some(Hint::Lost(text)) => assert!(text.contains("the queue is stalled"), "{text}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(started.elapsed(), RECEIVE_WITHIN);
    assert_eq!(hints.recv().await, None, "nothing after the one warning");
}

#[tokio::test(start_paused = true)]
async fn a_wait_that_cannot_register_polls_with_one_warning_and_reads_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_a_dir = dir.path().join("state");
    std::fs::write(&not_a_dir, "").expect("write");
    let queue = FakeQueue::new(vec![]);
    let (mut hints, _watch) = EventWatch::start(
        queue.clone(),
        ResourceKey::TrainingJob("mine".into()),
        Registry::new(&not_a_dir),
        Duration::from_secs(300),
    );
    match hints.recv().await {
        Some(Hint::Lost(text)) => assert!(text.contains("cannot register"), "{text}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(hints.recv().await, None);
    assert!(queue.receives.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn access_denied_from_sqs_is_a_permanent_failure() {
    let denied = mock!(aws_sdk_sqs::Client::receive_message)
        .match_requests(|r| {
            r.wait_time_seconds() == Some(20) && r.visibility_timeout() == Some(BOUNCE_VISIBILITY)
        })
        .then_error(|| {
            ReceiveMessageError::generic(
                aws_sdk_sqs::error::ErrorMetadata::builder()
                    .code("AccessDenied")
                    .message("not authorized to perform sqs:ReceiveMessage")
                    .build(),
            )
        });
    let queue = SqsQueue::new(
        crate::aws::mock::sqs(RuleMode::Sequential, &[&denied]),
        "https://sqs.us-east-1.amazonaws.com/123456789012/q",
    );
    let e = queue.receive().await.expect_err("denied");
    assert_eq!(e.retry(), Retry::Permanent);
    assert!(e.to_string().contains("AccessDenied"), "{e}");

    let empty = mock!(aws_sdk_sqs::Client::receive_message)
        .then_output(|| ReceiveMessageOutput::builder().build());
    let queue = SqsQueue::new(
        crate::aws::mock::sqs(RuleMode::Sequential, &[&empty]),
        "https://sqs.us-east-1.amazonaws.com/123456789012/q",
    );
    assert_eq!(queue.receive().await.expect("empty"), []);
}

/// The wait loop with a push source: fast cadence until the queue is proven, the safety interval
/// after it, an event wakes it, a lost queue brings the cadence back with one warning.
mod with_the_wait {
    use super::*;
    use crate::watch::tests::{Job, ok};
    use crate::watch::{Cadence, Options, follow};

    #[tokio::test(start_paused = true)]
    async fn hints_relax_wake_and_fall_back() {
        let cancel = CancellationToken::new();
        let mut steps = vec![ok(1); 40];
        steps.push(ok(2));
        let mut job = Job::new(steps);
        let (tx, mut hints) = mpsc::channel(4);
        let safety = Duration::from_secs(300);
        tokio::spawn(async move {
            // The first receive answers after 20 s; an event at 100 s; the queue fails at 700 s.
            tokio::time::sleep(Duration::from_secs(20)).await;
            tx.send(Hint::Relax(safety)).await.expect("send");
            tokio::time::sleep(Duration::from_secs(80)).await;
            tx.send(Hint::Changed).await.expect("send");
            tokio::time::sleep(Duration::from_secs(600)).await;
            tx.send(Hint::Lost("queue gone; polling instead".into()))
                .await
                .expect("send");
        });
        let started = Instant::now();
        let cadence = Cadence::new(Duration::from_secs(2), Duration::from_secs(30));
        let _ = tokio::time::timeout(
            Duration::from_secs(760),
            follow(&mut job, Options::new(cadence, &cancel), Some(&mut hints)),
        )
        .await;
        let at: Vec<u64> = job
            .describes
            .lock()
            .expect("lock")
            .iter()
            .map(|t| (*t - started).as_secs())
            .collect();
        // Polling until the queue is proven (0, 2, 5, 9, 16, and 26 planned before it), then
        // one describe at once for the event and one per safety interval.
        let relaxed: Vec<u64> = at.iter().copied().filter(|t| *t > 20 && *t < 700).collect();
        assert_eq!(relaxed, [26, 100, 400], "{at:?}");
        assert!(at.iter().filter(|t| **t <= 20).count() >= 4, "{at:?}");
        // After the loss: a describe at once, then the normal cadence again.
        let after_loss: Vec<u64> = at.iter().copied().filter(|t| *t >= 700).collect();
        assert!(after_loss.first() == Some(&700), "{at:?}");
        assert!(after_loss.len() >= 4, "{at:?}");
        let warnings: Vec<String> = job
            .texts()
            .into_iter()
            .filter(|t| t.starts_with("WARN"))
            .collect();
        assert_eq!(warnings, ["WARN queue gone; polling instead"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hint_during_a_describe_asks_again_right_after_it() {
        let cancel = CancellationToken::new();
        let slow = crate::watch::tests::Step {
            latency: Duration::from_secs(3),
            result: Ok(1),
        };
        let mut job = Job::new(vec![ok(1), slow, ok(2)]);
        let (tx, mut hints) = mpsc::channel(4);
        tokio::spawn(async move {
            tx.send(Hint::Relax(Duration::from_secs(300)))
                .await
                .expect("send");
            tokio::time::sleep(Duration::from_secs(1)).await;
            tx.send(Hint::Changed).await.expect("send");
            // During the slow describe (started at 1 s): it may have read the old state.
            tokio::time::sleep(Duration::from_secs(1)).await;
            tx.send(Hint::Changed).await.expect("send");
            std::future::pending::<()>().await;
        });
        let started = Instant::now();
        follow(
            &mut job,
            Options::new(Cadence::fixed(Duration::from_secs(2)), &cancel),
            Some(&mut hints),
        )
        .await
        .expect("followed");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
