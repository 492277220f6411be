//! What the host watcher and a waiting job say to each other over the watcher's socket: one JSON
//! object per line. The job sends one [`Subscribe`] and then only keeps the connection open (its
//! closing is the unsubscribe); the watcher sends [`ToJob`] lines for as long as it runs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::logs::live::{LiveEvent, LiveItem, Streams};
use crate::watch::Hint;
use crate::watch::events::ResourceKey;

/// The longest line either side accepts: a Live Tail update holds at most 500 events of at most
/// 256 KiB each in AWS, but the watcher splits nothing, so the cap is generous; a longer line is
/// a broken peer.
pub const MAX_LINE: usize = 64 * 1024 * 1024;

/// A job's one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Subscribe {
    /// Live Tail events of these streams of `group`.
    Logs {
        /// The log group.
        group: String,
        /// The job's streams.
        streams: WireStreams,
    },
    /// State-change hints for one resource.
    Events {
        /// The resource.
        key: WireKey,
    },
}

/// [`Streams`] on the wire; a job never asks for a whole group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WireStreams {
    /// Streams starting with this.
    Prefix(String),
    /// These streams.
    Names(Vec<String>),
}

impl WireStreams {
    /// The selection as the log reader knows it.
    pub fn streams(&self) -> Streams {
        match self {
            WireStreams::Prefix(p) => Streams::Prefix(p.clone()),
            WireStreams::Names(n) => Streams::Names(n.clone()),
        }
    }

    /// The wire form of a job's selection; `None` for [`Streams::All`], which no job asks for.
    pub fn from_streams(streams: &Streams) -> Option<WireStreams> {
        match streams {
            Streams::Prefix(p) => Some(WireStreams::Prefix(p.clone())),
            Streams::Names(n) => Some(WireStreams::Names(n.clone())),
            Streams::All => None,
        }
    }
}

/// [`ResourceKey`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WireKey {
    /// A SageMaker training job, by name.
    TrainingJob(String),
    /// An ECS task, by ARN.
    EcsTask(String),
    /// A SageMaker endpoint, by name.
    Endpoint(String),
    /// An ECS service, by ARN.
    EcsService(String),
}

impl From<&ResourceKey> for WireKey {
    fn from(k: &ResourceKey) -> WireKey {
        match k {
            ResourceKey::TrainingJob(n) => WireKey::TrainingJob(n.clone()),
            ResourceKey::EcsTask(a) => WireKey::EcsTask(a.clone()),
            ResourceKey::Endpoint(n) => WireKey::Endpoint(n.clone()),
            ResourceKey::EcsService(a) => WireKey::EcsService(a.clone()),
        }
    }
}

impl From<WireKey> for ResourceKey {
    fn from(k: WireKey) -> ResourceKey {
        match k {
            WireKey::TrainingJob(n) => ResourceKey::TrainingJob(n),
            WireKey::EcsTask(a) => ResourceKey::EcsTask(a),
            WireKey::Endpoint(n) => ResourceKey::Endpoint(n),
            WireKey::EcsService(a) => ResourceKey::EcsService(a),
        }
    }
}

/// One line from the watcher to a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ToJob {
    /// The job's view of the session starts here: nothing before it was seen.
    Started,
    /// One session update, with only the job's events (possibly none: an update still says the
    /// session is alive and whether it was sampled).
    Update {
        /// Whether Live Tail sampled it.
        sampled: bool,
        /// The job's events, in the order delivered.
        events: Vec<WireEvent>,
    },
    /// The session ended, or this job's updates were dropped: a gap.
    Gap(String),
    /// No session can be started for the group.
    Failed(String),
    /// A state-change event for the job's resource.
    Changed,
    /// The queue delivers: status calls may slow to this many seconds.
    Relax(u64),
    /// The queue failed: poll as usual.
    Lost(String),
}

/// One log event on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEvent {
    /// The log stream.
    pub stream: String,
    /// Its timestamp (ms since the epoch).
    pub timestamp_ms: i64,
    /// The text.
    pub message: String,
}

impl From<&LiveEvent> for WireEvent {
    fn from(e: &LiveEvent) -> WireEvent {
        WireEvent {
            stream: e.stream.clone(),
            timestamp_ms: e.timestamp_ms,
            message: e.message.clone(),
        }
    }
}

impl ToJob {
    /// What a job's log reader makes of a line; `None` for an event-side line.
    pub fn live_item(self, at: tokio::time::Instant) -> Option<LiveItem> {
        match self {
            ToJob::Started => Some(LiveItem::Started),
            ToJob::Update { sampled, events } => Some(LiveItem::Update {
                at,
                sampled,
                events: events
                    .into_iter()
                    .map(|e| LiveEvent {
                        stream: e.stream,
                        timestamp_ms: e.timestamp_ms,
                        message: e.message,
                    })
                    .collect(),
            }),
            ToJob::Gap(reason) => Some(LiveItem::Gap(reason)),
            ToJob::Failed(reason) => Some(LiveItem::Failed(reason)),
            ToJob::Changed | ToJob::Relax(_) | ToJob::Lost(_) => None,
        }
    }

    /// What a job's wait makes of a line; `None` for a log-side line.
    pub fn hint(self) -> Option<Hint> {
        match self {
            ToJob::Changed => Some(Hint::Changed),
            ToJob::Relax(secs) => Some(Hint::Relax(Duration::from_secs(secs))),
            ToJob::Lost(reason) => Some(Hint::Lost(reason)),
            ToJob::Started | ToJob::Update { .. } | ToJob::Gap(_) | ToJob::Failed(_) => None,
        }
    }

    /// The line for `hint`.
    pub fn from_hint(hint: &Hint) -> ToJob {
        match hint {
            Hint::Changed => ToJob::Changed,
            Hint::Relax(d) => ToJob::Relax(d.as_secs().max(1)),
            Hint::Lost(reason) => ToJob::Lost(reason.clone()),
        }
    }
}

/// `value` as one line (JSON and a newline).
pub fn line<T: Serialize>(value: &T) -> Vec<u8> {
    // These types always serialize: strings, numbers and enums only.
    let mut out = serde_json::to_vec(value).unwrap_or_default();
    out.push(b'\n');
    out
}
