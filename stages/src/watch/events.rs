//! State-change events as hints for a wait: EventBridge delivers "SageMaker Training Job State
//! Change", "ECS Task State Change", "SageMaker Endpoint State Change" and "ECS Deployment State
//! Change" events to an SQS queue of the runner host (`[watch] queue_url`); [`EventWatch`]
//! long-polls it and sends the wait of the matching resource a [`Hint::Changed`].
//!
//! # Who consumes the queue
//! One queue per runner host, several waiting jobs, each its own process. Without the host
//! watcher, every waiting job long-polls the queue and, for each message:
//! - its own resource: hint, then delete;
//! - a resource another live job of this host waits for (a file under
//!   `<state_root>/waiting/`, see [`Registry`]): leave it; it becomes visible again after
//!   [`BOUNCE_VISIBILITY`] seconds and its owner receives it on one of its own long polls;
//! - anything else (a job of another host, a job that finished, a foreign or unreadable
//!   message): delete, so the queue does not fill with events nobody will consume.
//!
//! A visibility timeout of 0 without deletes was rejected: a long poll returns at once while
//! any message is visible, so every job would spin on every message until it expired. With the
//! host watcher ([`super::host`]) one process reads the queue for every job of the host and
//! nothing bounces; this per-job reading is what a job does without it (switched off, or
//! gone), where a bounce costs the owner a few seconds at most per event.
//!
//! # Falling back
//! The wait keeps its normal cadence until the first receive succeeds (the queue exists and may
//! be read), then relaxes to `[watch] safety_interval` ([`Hint::Relax`]). A failed receive or a
//! refused delete ends the watch with one [`Hint::Lost`]: the wait warns once and polls as it
//! would without a queue. A queue that stays silent is not a failure (nothing may change for
//! hours), so an event that never comes (a disabled rule) costs at most the safety interval.

use std::future::Future;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Hint, Hints};
use crate::aws::errors::AwsCallError;

/// Seconds a long poll waits for a message (the SQS maximum).
const LONG_POLL_SECONDS: i32 = 20;
/// Messages per receive (the SQS maximum).
const MAX_MESSAGES: i32 = 10;
/// Seconds a message left for another job of this host stays hidden: short, so its owner gets it
/// soon, and not 0, so the job that left it does not receive it again at once.
pub const BOUNCE_VISIBILITY: i32 = 2;

/// The resource a state-change event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ResourceKey {
    /// A SageMaker training job, by name.
    TrainingJob(String),
    /// An ECS task, by ARN.
    EcsTask(String),
    /// A SageMaker endpoint, by name.
    Endpoint(String),
    /// An ECS service (a deployment event names its service in `resources`), by ARN.
    EcsService(String),
}

impl ResourceKey {
    /// A stable text for the registry; kinds are kept apart.
    fn text(&self) -> String {
        match self {
            ResourceKey::TrainingJob(n) => format!("training-job {n}"),
            ResourceKey::EcsTask(a) => format!("ecs-task {a}"),
            ResourceKey::Endpoint(n) => format!("endpoint {n}"),
            ResourceKey::EcsService(a) => format!("ecs-service {a}"),
        }
    }
}

/// The resource an EventBridge event (the SQS message body, raw delivery) is about; `None` for
/// anything else.
pub fn parse_event(body: &str) -> Option<ResourceKey> {
    let event: serde_json::Value = serde_json::from_str(body).ok()?;
    let detail = event.get("detail")?;
    let text = |v: Option<&serde_json::Value>| {
        v.and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    match event.get("detail-type")?.as_str()? {
        "SageMaker Training Job State Change" => {
            text(detail.get("TrainingJobName")).map(ResourceKey::TrainingJob)
        }
        "ECS Task State Change" => text(detail.get("taskArn")).map(ResourceKey::EcsTask),
        "SageMaker Endpoint State Change" => {
            text(detail.get("EndpointName")).map(ResourceKey::Endpoint)
        }
        "ECS Deployment State Change" => {
            text(event.get("resources").and_then(|r| r.get(0))).map(ResourceKey::EcsService)
        }
        _ => None,
    }
}

/// Which resources the live jobs of this host wait for: one file per waited-for resource under
/// `<state_root>/waiting/`, named by a hash of its key, holding the waiting process's id.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

/// A job's entry in the [`Registry`]; removed when dropped.
#[derive(Debug)]
pub struct Registration {
    path: PathBuf,
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Already gone is fine: another job removes entries of processes that died.
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Registry {
    /// The registry under `state_root`.
    pub fn new(state_root: &Path) -> Registry {
        Registry {
            dir: state_root.join("waiting"),
        }
    }

    fn path(&self, key: &ResourceKey) -> PathBuf {
        let digest = Sha256::digest(key.text().as_bytes());
        let name: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        self.dir.join(name)
    }

    /// Records that this process waits for `key`.
    ///
    /// # Errors
    /// When the entry cannot be written (the wait then consumes nothing it does not own).
    pub fn register(&self, key: &ResourceKey) -> std::io::Result<Registration> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let path = self.path(key);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(std::process::id().to_string().as_bytes())?;
        Ok(Registration { path })
    }

    /// Whether a live process of this host waits for `key`. The entry of a process that died
    /// (SIGKILL skips the drop) is removed here.
    pub fn is_awaited(&self, key: &ResourceKey) -> bool {
        let path = self.path(key);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return false;
        };
        let alive = text
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|pid| *pid > 0)
            .is_some_and(|pid| {
                // Signal 0 checks existence; EPERM means it exists under another user.
                !matches!(
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
                    Err(nix::errno::Errno::ESRCH)
                )
            });
        if !alive {
            let _ = std::fs::remove_file(&path);
        }
        alive
    }
}

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The body (an EventBridge event).
    pub body: String,
    /// What deletes it.
    pub receipt: String,
}

/// How long a long poll may take before the queue counts as stalled: the long poll's own wait
/// and a margin for the answer.
pub const RECEIVE_WITHIN: Duration = Duration::from_secs(LONG_POLL_SECONDS as u64 + 15);

/// One receive from `queue`, bounded by [`RECEIVE_WITHIN`]: a long poll that never answers (a
/// stalled connection, a hung endpoint) is a failure like any other, so the wait falls back to
/// polling with its one warning instead of staying relaxed on a queue that says nothing.
///
/// # Errors
/// The receive failed or did not answer in time.
pub async fn receive_within<Q: Queue>(queue: &Q) -> Result<Vec<Message>, AwsCallError> {
    match tokio::time::timeout(RECEIVE_WITHIN, queue.receive()).await {
        Ok(received) => received,
        Err(_) => Err(AwsCallError::other(
            "ReceiveMessage",
            format!(
                "no answer within {} s: the queue is stalled",
                RECEIVE_WITHIN.as_secs()
            ),
            crate::aws::errors::Retry::Transient,
        )),
    }
}

/// The queue the events arrive on.
pub trait Queue: Send + Sync + 'static {
    /// One long poll: messages, or none after the wait.
    fn receive(&self) -> impl Future<Output = Result<Vec<Message>, AwsCallError>> + Send;

    /// Deletes one message.
    fn delete(&self, receipt: &str) -> impl Future<Output = Result<(), AwsCallError>> + Send;
}

/// The SQS queue at `[watch] queue_url`.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsQueue {
    /// The queue at `url`, read with `client`.
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> SqsQueue {
        SqsQueue {
            client,
            url: url.into(),
        }
    }
}

impl Queue for SqsQueue {
    async fn receive(&self) -> Result<Vec<Message>, AwsCallError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .wait_time_seconds(LONG_POLL_SECONDS)
            .max_number_of_messages(MAX_MESSAGES)
            .visibility_timeout(BOUNCE_VISIBILITY)
            .send()
            .await
            .map_err(|e| AwsCallError::new("ReceiveMessage", e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                Some(Message {
                    body: m.body.unwrap_or_default(),
                    receipt: m.receipt_handle?,
                })
            })
            .collect())
    }

    async fn delete(&self, receipt: &str) -> Result<(), AwsCallError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsCallError::new("DeleteMessage", e))
    }
}

/// A running consumer for one wait; stops when dropped.
#[derive(Debug)]
pub struct EventWatch {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Drop for EventWatch {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

impl EventWatch {
    /// Starts consuming `queue` for the wait on `key` (registered in `registry` before the first
    /// receive, so no other job deletes its events); hints go to the returned receiver.
    /// `safety` is the status interval while the queue delivers.
    pub fn start<Q: Queue>(
        queue: Q,
        key: ResourceKey,
        registry: Registry,
        safety: Duration,
    ) -> (Hints, EventWatch) {
        Self::start_after(queue, key, registry, safety, |tx| async move { Some(tx) })
    }

    /// As [`EventWatch::start`], but hints come from `first` until it hands the sender back
    /// (then this job reads the queue itself) or keeps it (`None`: the wait is gone). The host
    /// watcher's relay is such a `first`.
    pub fn start_after<Q, F, Fut>(
        queue: Q,
        key: ResourceKey,
        registry: Registry,
        safety: Duration,
        first: F,
    ) -> (Hints, EventWatch)
    where
        Q: Queue,
        F: FnOnce(mpsc::Sender<Hint>) -> Fut + Send + 'static,
        Fut: Future<Output = Option<mpsc::Sender<Hint>>> + Send,
    {
        let (tx, rx) = mpsc::channel(4);
        let stop = CancellationToken::new();
        let stopping = stop.clone();
        // Registered before this returns, so before the wait's first Describe: an event that
        // another job deletes before then is one that Describe already covers.
        let registered = registry.register(&key);
        let task = tokio::spawn(async move {
            let registration = match registered {
                Ok(r) => r,
                // Without an entry other jobs may delete this job's events: say so once and
                // keep polling as usual, which is always correct.
                Err(e) => {
                    let _ = tx
                        .send(Hint::Lost(format!(
                            "state-change events are not used ({e}: cannot register this wait under the state root); polling instead"
                        )))
                        .await;
                    return;
                }
            };
            let relayed = tokio::select! {
                biased;
                () = stopping.cancelled() => None,
                tx = first(tx) => tx,
            };
            if let Some(tx) = relayed {
                consume(&queue, &key, &registry, safety, &tx, &stopping).await;
            }
            drop(registration);
        });
        (rx, EventWatch { stop, task })
    }
}

/// The consumer loop; returns when stopped, when the wait is gone, or after a failure.
async fn consume<Q: Queue>(
    queue: &Q,
    key: &ResourceKey,
    registry: &Registry,
    safety: Duration,
    tx: &mpsc::Sender<Hint>,
    stop: &CancellationToken,
) {
    let mut proven = false;
    loop {
        // Raced against the stop: a long poll may hold for 20 s.
        let received = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            r = receive_within(queue) => r,
        };
        let messages = match received {
            Ok(m) => m,
            Err(e) => {
                let _ = tx.send(Hint::Lost(lost(&e))).await;
                return;
            }
        };
        if !proven {
            proven = true;
            if tx.send(Hint::Relax(safety)).await.is_err() {
                return;
            }
        }
        let mut mine = false;
        for m in messages {
            let about = parse_event(&m.body);
            let keep = match &about {
                Some(k) if k == key => {
                    mine = true;
                    false
                }
                Some(k) => registry.is_awaited(k),
                None => false,
            };
            if keep {
                continue;
            }
            let deleted = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                r = queue.delete(&m.receipt) => r,
            };
            // A delete that failed transiently leaves a message that comes back: a hint is
            // idempotent. One that is refused would fill the queue: stop using it.
            if let Err(e) = deleted
                && !e.retry().is_retryable()
            {
                if mine {
                    let _ = tx.try_send(Hint::Changed);
                }
                let _ = tx.send(Hint::Lost(lost(&e))).await;
                return;
            }
        }
        // A burst of events is one "describe now"; a full channel already holds one.
        if mine && let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(Hint::Changed) {
            return;
        }
    }
}

fn lost(e: &AwsCallError) -> String {
    format!("state-change events are not used from now on ({e}); polling instead")
}

#[cfg(test)]
mod tests;
