//! The one engine for remote user-script runs (`train`, `fargate`): attach or submit, record,
//! follow, stop on cancel within a grace period, then restore and collect outputs. Each action
//! implements [`Backend`]; the flow exists once.
//!
//! ```text
//!  existing run of this stage? ──yes──► attach ─────────────────────────────┐
//!        │ no                                                               │
//!        ▼                                                                  ▼
//!  stage workspace ─► record Intended ─► submit ─► record Created ─► follow (status + log feed)
//!                                                                     │           │
//!                                                  SIGTERM ◄──────────┘           ▼ terminal
//!                                                     │                   drain logs, close
//!                                      release, follow ≤ grace            sections, classify
//!                                                     │                   ending, restore,
//!                                                     ▼                   outputs
//!                                         Cancelled (state printed)
//! ```

pub mod staging;

use std::fmt;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use staging::{
    StagingError, report_restore, stage_workspace, workspace_failure_kind, workspace_roots,
};

use crate::aws::errors::AwsCallError;
use crate::ctx::StageCtx;
use crate::failure::{Classify, FailureKind};
use crate::logs::feed::{FeedCadence, FeedItem, LineSource, LogFeed};
use crate::outputs::Outputs;
use crate::project_files::ProjectFileError;
use crate::resources::{self, Released};
use crate::state::{Resource, StateError};
use crate::watch::events::ResourceKey;
use crate::watch::{self, Cadence, Followed, ShowsLines, WatchError, Watched};
use crate::workspace::{JobManifest, StagingLocation, WorkspaceError};

/// How long a cancelled run's last log lines are read for.
const LAST_WORDS: Duration = Duration::from_secs(10);

/// A run of this stage that already exists (a re-run of the stage attaches to it).
#[derive(Debug, Clone)]
pub struct Attached {
    /// Its id (training job name, task ARN).
    pub id: String,
    /// The line announcing the attach.
    pub message: String,
}

/// One kind of remote run.
#[allow(
    async_fn_in_trait,
    reason = "used through generics on one thread, never as dyn"
)]
pub trait Backend {
    /// What Describe returns.
    type Status: Clone + Send + Sync + 'static;
    /// How a finished run ended, with its own classification.
    type Ending: Classify + fmt::Display + fmt::Debug;
    /// The action's own failures (building and sending its requests).
    type Error: Classify + std::error::Error + 'static;
    /// What the wait loop watches.
    type Watch: ShowsLines + Watched<Status = Self::Status, Done = (), Error = AwsCallError>;
    /// Where the run's log lines come from.
    type Lines: LineSource<Status = Self::Status>;

    /// How the run's id is shown in the log (a task ARN's last segment).
    fn short_id<'i>(&self, id: &'i str) -> &'i str;

    /// The resource a new run creates, as recorded before the create call.
    fn resource(&self, ctx: &StageCtx<'_>) -> Resource;

    /// A run an earlier attempt of this stage started, if any.
    async fn existing(&self, ctx: &StageCtx<'_>) -> Result<Option<Attached>, Self::Error>;

    /// The manifest the bootstrap reads.
    fn manifest(&self, ctx: &StageCtx<'_>) -> JobManifest;

    /// Starts the run (the workspace is staged at `loc` and the resource recorded); returns its
    /// id.
    async fn submit(
        &self,
        ctx: &StageCtx<'_>,
        loc: &StagingLocation,
    ) -> Result<String, Self::Error>;

    /// Whether a failed [`Backend::submit`] may still have started the run: the create call
    /// failed only transiently, so one of its tries may have reached AWS with its answer lost.
    /// Its record then stays `Intended`, and cleanup finds the run by name.
    fn may_have_started(&self, e: &Self::Error) -> bool;

    /// The run's status watch and its cadence.
    fn watch(&self, ctx: &StageCtx<'_>, id: &str) -> (Self::Watch, Cadence);

    /// The run's log lines and how often to read them.
    fn lines(&self, ctx: &StageCtx<'_>, id: &str) -> (Self::Lines, FeedCadence);

    /// What the run's state-change events name it by (`[watch] queue_url`).
    fn event_key(&self, id: &str) -> ResourceKey;

    /// After the last log lines: closes what the watch left open (the final transitions).
    fn close(&self, watch: &mut Self::Watch, last: Option<&Self::Status>);

    /// Whether `status` is terminal.
    fn is_terminal(&self, status: &Self::Status) -> bool;

    /// A short state text for a run seen in `status` after a stop request.
    fn state_after_stop(&self, status: Option<&Self::Status>, grace: Duration) -> String;

    /// How long a stopped run may take to end.
    fn stop_grace(&self, ctx: &StageCtx<'_>) -> Duration;

    /// The reason given to AWS for a cancel.
    fn stop_reason(&self, ctx: &StageCtx<'_>) -> String;

    /// How the run ended; `Ok` when it completed.
    fn ending(&self, status: &Self::Status) -> Result<(), Self::Ending>;

    /// Restores the returned workspace and gathers outputs (reporting totals in the log).
    async fn collect(
        &self,
        ctx: &StageCtx<'_>,
        status: &Self::Status,
        completed: bool,
    ) -> Result<Outputs, RemoteError<Self::Error, Self::Ending>>;
}

/// Why a remote run failed, for any backend.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError<E: std::error::Error + 'static, X: fmt::Display + fmt::Debug> {
    /// Staging the workspace failed.
    #[error(transparent)]
    Staging(#[from] StagingError),
    /// The state file could not be written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The action's own call failed.
    #[error(transparent)]
    Backend(E),
    /// The run could not be followed.
    #[error("cannot follow the {what} {id}: {source}")]
    Watch {
        /// The kind of run.
        what: &'static str,
        /// Its id.
        id: String,
        /// Why.
        #[source]
        source: WatchError<AwsCallError>,
    },
    /// Restoring the returned workspace failed after a successful run.
    #[error("restoring the returned workspace: {0}")]
    Restore(#[source] WorkspaceError),
    /// The run ended without completing; its outputs are still written.
    #[error("{0}")]
    Ended(X, Box<Outputs>),
    /// The CI job was cancelled; the run was stopped.
    #[error("cancelled: {what} {id} {state}")]
    Cancelled {
        /// The kind of run.
        what: &'static str,
        /// Its id.
        id: String,
        /// What became of it.
        state: String,
    },
    /// Writing the outputs into the project dir failed.
    #[error("cannot write the job's outputs: {0}")]
    Outputs(#[source] ProjectFileError),
}

impl<E: Classify + std::error::Error + 'static, X: Classify + fmt::Display + fmt::Debug>
    RemoteError<E, X>
{
    /// Outputs a failed run still hands downstream.
    pub fn outputs(&self) -> Option<&Outputs> {
        match self {
            RemoteError::Ended(_, outputs) => Some(outputs),
            RemoteError::Staging(_)
            | RemoteError::State(_)
            | RemoteError::Backend(_)
            | RemoteError::Watch { .. }
            | RemoteError::Restore(_)
            | RemoteError::Cancelled { .. }
            | RemoteError::Outputs(_) => None,
        }
    }
}

impl<E: Classify + std::error::Error + 'static, X: Classify + fmt::Display + fmt::Debug> Classify
    for RemoteError<E, X>
{
    fn failure_kind(&self) -> FailureKind {
        match self {
            RemoteError::Staging(e) => e.failure_kind(),
            RemoteError::Backend(e) => e.failure_kind(),
            RemoteError::Restore(e) => workspace_failure_kind(e),
            RemoteError::Ended(x, _) => x.failure_kind(),
            RemoteError::Outputs(e) if e.is_jobs_fault() => FailureKind::Build,
            RemoteError::Cancelled { .. } => FailureKind::Build,
            RemoteError::State(_) | RemoteError::Watch { .. } | RemoteError::Outputs(_) => {
                FailureKind::System
            }
        }
    }

    fn script_exit_code(&self) -> Option<i32> {
        match self {
            RemoteError::Backend(e) => e.script_exit_code(),
            RemoteError::Ended(x, _) => x.script_exit_code(),
            RemoteError::Staging(_)
            | RemoteError::State(_)
            | RemoteError::Watch { .. }
            | RemoteError::Restore(_)
            | RemoteError::Cancelled { .. }
            | RemoteError::Outputs(_) => None,
        }
    }
}

/// Prints what the feed handed over after the wait ended.
fn print_items<W: ShowsLines>(w: &mut W, items: Vec<FeedItem>) {
    for item in items {
        match item {
            FeedItem::Lines(lines) => w.print_lines(&lines),
            FeedItem::Warn(text) => w.warn(&text),
        }
    }
}

/// Runs the stage remotely through `b`.
///
/// # Errors
/// See [`RemoteError`].
pub async fn run<B: Backend>(
    ctx: &StageCtx<'_>,
    b: &B,
    what: &'static str,
) -> Result<Outputs, RemoteError<B::Error, B::Ending>> {
    let mut resource = b.resource(ctx);
    let id = match b.existing(ctx).await.map_err(RemoteError::Backend)? {
        Some(attached) => {
            ctx.log.notice(&attached.message);
            ctx.state.created(&resource, &attached.id)?;
            attached.id
        }
        None => {
            let loc = staging::location(ctx)?;
            stage_workspace(ctx, &loc, &b.manifest(ctx)).await?;
            // Recorded before the create call: a SIGKILL while it is in flight leaves a record
            // that cleanup resolves by name.
            ctx.state.intend(resource.clone())?;
            let id = match b.submit(ctx, &loc).await {
                Ok(id) => id,
                Err(e) => {
                    // Refused: nothing to release. A create whose every try failed transiently
                    // may have landed with its answer lost: its record stays Intended, and
                    // cleanup releases it by name.
                    if !b.may_have_started(&e) {
                        ctx.state.finished(resource.kind, &resource.name)?;
                    }
                    return Err(RemoteError::Backend(e));
                }
            };
            ctx.state.created(&resource, &id)?;
            id
        }
    };
    resource.id = Some(id.clone());

    let (mut watch, cadence) = b.watch(ctx, &id);
    let (source, feed_cadence) = b.lines(ctx, &id);
    let mut feed = LogFeed::start(source, feed_cadence);
    // State-change events, when the runner has a queue: status calls slow to the safety
    // interval while it delivers; the wait polls as usual without it.
    let mut events = ctx.state_events(b.event_key(&id));
    let followed = watch::follow_lines(
        &mut watch,
        watch::Options::new(cadence, ctx.cancel),
        Some(&mut feed),
        events.as_mut().map(|(hints, _)| hints),
    )
    .await;
    // The stop path polls the run every second, and the drain needs no hints.
    drop(events);
    let status = match followed {
        Ok(Followed::Done((), status)) => status,
        Ok(Followed::Cancelled(_) | Followed::TimedOut(_)) => {
            return Err(stop(ctx, b, &resource, &id, watch, feed, what).await);
        }
        Err(source) => {
            let (items, _) = feed.stop().await;
            print_items(&mut watch, items);
            b.close(&mut watch, None);
            return Err(RemoteError::Watch { what, id, source });
        }
    };
    // The remote logs lag the status: drain them before the final status lines.
    let (items, _) = feed.finish(ctx.cancel).await;
    print_items(&mut watch, items);
    b.close(&mut watch, Some(&status));
    ctx.state.finished(resource.kind, &resource.name)?;

    let ending = b.ending(&status);
    let outputs = b.collect(ctx, &status, ending.is_ok()).await?;
    match ending {
        Ok(()) => Ok(outputs),
        Err(x) => Err(RemoteError::Ended(x, Box::new(outputs))),
    }
}

/// After cancellation: asks AWS to stop the run, then follows it (still printing its last lines)
/// until it ends or the grace period passes. The token is already cancelled, so this wait is
/// bounded by the grace period instead; a second signal exits the process at once and `cleanup`
/// stops what is left.
async fn stop<B: Backend>(
    ctx: &StageCtx<'_>,
    b: &B,
    resource: &Resource,
    id: &str,
    mut watch: B::Watch,
    mut feed: LogFeed<B::Lines>,
    what: &'static str,
) -> RemoteError<B::Error, B::Ending> {
    let grace = b.stop_grace(ctx);
    let reason = b.stop_reason(ctx);
    let shown = b.short_id(id).to_owned();
    match resources::release(&ctx.aws, resource, &reason).await {
        Ok(Released::Stopping(_)) => ctx
            .log
            .notice(&format!("Stopping {what} {shown}: {reason}")),
        Ok(Released::NothingRunning | Released::LeftToAws(_)) => {}
        Err(e) => ctx.log.warn(&format!("{e}")),
    }
    let unbounded = CancellationToken::new();
    let mut terminal = TerminalWatch {
        b,
        inner: &mut watch,
    };
    let followed = watch::follow_lines(
        &mut terminal,
        watch::Options::new(Cadence::fixed(Duration::from_secs(1)), &unbounded)
            .with_deadline(tokio::time::Instant::now() + grace),
        Some(&mut feed),
        None,
    )
    .await;
    let last = match followed {
        Ok(Followed::Done((), s)) => Some(s),
        Ok(Followed::Cancelled(s) | Followed::TimedOut(s)) => s,
        Err(_) => None,
    };
    // The job's last words (the bootstrap says when it passes SIGTERM on): a courtesy, so the
    // drain is bounded; a second signal exits at once anyway.
    let bounded = CancellationToken::new();
    let timer = {
        let bounded = bounded.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LAST_WORDS).await;
            bounded.cancel();
        })
    };
    let (items, _) = feed.finish(&bounded).await;
    timer.abort();
    print_items(&mut watch, items);
    b.close(&mut watch, None);
    let ended = last.as_ref().is_some_and(|s| b.is_terminal(s));
    let state = b.state_after_stop(last.as_ref(), grace);
    ctx.log
        .warn(&format!("Job cancelled: {what} {shown} {state}"));
    if ended && let Err(e) = ctx.state.finished(resource.kind, &resource.name) {
        return RemoteError::State(e);
    }
    RemoteError::Cancelled {
        what,
        id: shown,
        state,
    }
}

/// The backend's watch, judged only by "has it ended" (after a stop request).
struct TerminalWatch<'a, B: Backend> {
    b: &'a B,
    inner: &'a mut B::Watch,
}

impl<B: Backend> Watched for TerminalWatch<'_, B> {
    type Status = B::Status;
    type Done = ();
    type Error = AwsCallError;

    fn describe(&self) -> watch::Describe<B::Status, AwsCallError> {
        self.inner.describe()
    }

    fn observe(&mut self, status: &B::Status) -> bool {
        self.inner.observe(status)
    }

    fn judge(&self, status: &B::Status) -> Option<()> {
        self.b.is_terminal(status).then_some(())
    }

    fn warn(&mut self, text: &str) {
        self.inner.warn(text);
    }
}

impl<B: Backend> ShowsLines for TerminalWatch<'_, B> {
    fn lines_ready(&self) -> bool {
        true
    }

    fn print_lines(&mut self, lines: &[String]) {
        self.inner.print_lines(lines);
    }
}
