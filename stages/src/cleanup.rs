//! Releasing what a job left behind: unfinished resources are stopped (through
//! [`crate::resources`]) and staged objects deleted. Used by the front end's cleanup stage;
//! idempotent, and silent about secrets (its output goes unmasked to the runner's log).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::aws::Aws;
use crate::aws::credentials;
use crate::aws::errors::AwsCallError;
use crate::config::ExecutorConfig;
use crate::job::Job;
use crate::resources::{self, Released, kind_name};
use crate::state::{Phase, Resource, ResourceKind, StateError, StateFile};
use crate::workspace::{self, StagingLocation};

/// Stops unfinished resources and deletes staged objects recorded in `state`. Failures are
/// reported and the record kept, so a later cleanup (or `gc`) can try again.
pub async fn release(
    cfg: &ExecutorConfig,
    job: &Job,
    state: &StateFile,
    cancel: &CancellationToken,
) -> Result<(), StateError> {
    let s = state.load()?;
    let unfinished: Vec<_> = s
        .resources
        .iter()
        .filter(|r| r.phase != Phase::Finished)
        .cloned()
        .collect();
    if unfinished.is_empty() && s.staged.is_empty() && s.objects.is_empty() {
        return Ok(());
    }
    let started = unix_now();
    // The job's own credentials where it had them: they created what is released here.
    let creds = credentials::for_job(cfg, job, SystemTime::now()).unwrap_or_else(|refused| {
        for r in refused {
            eprintln!("cleanup: not using the job's credentials ({r}); using the runner's");
        }
        credentials::JobCredentials::Runner
    });
    let aws = Aws::connect(cfg, &creds).await;
    let reason = format!("GitLab job {} ended; cleanup stopped its task", job.url);
    for r in &unfinished {
        match release_when_created(&aws, r, &reason, started, cancel).await {
            Ok(Released::Stopping(ids)) => {
                eprintln!("cleanup: stopped {} {}", kind_name(r.kind), ids.join(", "));
            }
            Ok(Released::NothingRunning) => {}
            Ok(Released::LeftToAws(how)) => {
                eprintln!("cleanup: {} {}: {how}", kind_name(r.kind), r.handle());
            }
            Err(e) => {
                eprintln!(
                    "cleanup: cannot stop {} {}: {e}",
                    kind_name(r.kind),
                    r.handle()
                );
                continue;
            }
        }
        state.finished(r.kind, &r.name)?;
    }
    for object in &s.objects {
        match aws
            .s3
            .delete_object()
            .bucket(&object.bucket)
            .key(&object.key)
            .send()
            .await
        {
            Ok(_) => eprintln!("cleanup: deleted s3://{}/{}", object.bucket, object.key),
            Err(e) => eprintln!(
                "cleanup: cannot delete s3://{}/{}: {}",
                object.bucket,
                object.key,
                crate::aws::errors::describe(&e)
            ),
        }
    }
    for staged in &s.staged {
        let loc = StagingLocation {
            bucket: staged.bucket.clone(),
            prefix: staged.prefix.clone(),
        };
        match workspace::delete_staged(&aws.s3, &loc, cancel).await {
            Ok(n) => eprintln!(
                "cleanup: deleted {n} staged objects under s3://{}/{}",
                loc.bucket, loc.prefix
            ),
            Err(e) => eprintln!(
                "cleanup: cannot delete staged objects under s3://{}/{}: {e}",
                loc.bucket, loc.prefix
            ),
        }
    }
    Ok(())
}

/// How long after a resource was recorded as intended its create call can still land: the SDK's
/// connect and read timeouts (10 s + 120 s) plus slack.
const CREATE_CALL_BOUND: Duration = Duration::from_secs(140);
/// How long after cleanup starts a create call of the stage can still land. The stage's process
/// is gone when cleanup runs (the runner calls cleanup after the run calls ended or were
/// killed), so no attempt can be sent any more; only a request AWS already received can still
/// take effect, and AWS acts on one within seconds. Without this bound a record intended just
/// before the executor died, whose call was never sent, held cleanup for [`CREATE_CALL_BOUND`].
const LANDING_BOUND: Duration = Duration::from_secs(20);
/// Pause between looks for a resource whose create call may still be in flight.
const LOOK_AGAIN: Duration = Duration::from_secs(2);

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether releasing `kind` can act on a resource whose create call lands late, so that cleanup
/// should wait for it.
fn waits_for_landing(kind: ResourceKind) -> bool {
    match kind {
        ResourceKind::TrainingJob
        | ResourceKind::EcsTask
        | ResourceKind::Model
        | ResourceKind::EndpointConfig
        | ResourceKind::Endpoint => true,
        // A registered version is the job's product, and a service deployment is left to ECS:
        // release never acts on either, so waiting for their create calls gains nothing.
        ResourceKind::ModelPackage | ResourceKind::EcsDeployment => false,
    }
}

/// Until when cleanup (started at `started`) looks again for `r`'s create call to land.
fn landing_deadline(r: &Resource, started: u64) -> u64 {
    r.intended_at
        .saturating_add(CREATE_CALL_BOUND.as_secs())
        .min(started.saturating_add(LANDING_BOUND.as_secs()))
}

/// Releases `r`; when it was only intended (the executor died with its create call in flight)
/// and nothing runs yet, looks again until the call must have been decided.
async fn release_when_created(
    aws: &Aws,
    r: &Resource,
    reason: &str,
    started: u64,
    cancel: &CancellationToken,
) -> Result<Released, AwsCallError> {
    let mut said = false;
    loop {
        let released = resources::release(aws, r, reason).await?;
        let in_flight = r.phase == Phase::Intended
            && waits_for_landing(r.kind)
            && released == Released::NothingRunning
            && unix_now() < landing_deadline(r, started);
        if !in_flight {
            return Ok(released);
        }
        if !said {
            eprintln!(
                "cleanup: the {} {} was being created when the executor stopped; waiting for that call to land",
                kind_name(r.kind),
                r.name
            );
            said = true;
        }
        tokio::select! {
            () = cancel.cancelled() => return Ok(released),
            () = tokio::time::sleep(LOOK_AGAIN) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_intended_create_is_waited_for_from_cleanup_start_at_most_the_landing_bound() {
        let mut r = Resource::intended(ResourceKind::TrainingJob, "gl-1-2", None, "build_script");
        r.intended_at = 1_000;
        // Killed right after recording: cleanup starts at once and waits LANDING_BOUND, not
        // the SDK's whole call bound.
        assert_eq!(landing_deadline(&r, 1_001), 1_021);
        // Recorded long before cleanup: the call bound has passed, no wait.
        assert_eq!(landing_deadline(&r, 2_000), 1_140);
    }

    #[test]
    fn only_kinds_release_acts_on_are_waited_for() {
        for kind in [
            ResourceKind::TrainingJob,
            ResourceKind::EcsTask,
            ResourceKind::Model,
            ResourceKind::EndpointConfig,
            ResourceKind::Endpoint,
        ] {
            assert!(waits_for_landing(kind), "{kind:?}");
        }
        for kind in [ResourceKind::ModelPackage, ResourceKind::EcsDeployment] {
            assert!(!waits_for_landing(kind), "{kind:?}");
        }
    }
}
