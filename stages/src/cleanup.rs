//! Releasing what a job left behind: unfinished resources are stopped (through
//! [`crate::resources`]) and staged objects deleted. Used by the front end's cleanup stage;
//! idempotent, and silent about secrets (its output goes unmasked to the runner's log).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::aws::Aws;
use crate::aws::errors::AwsCallError;
use crate::config::ExecutorConfig;
use crate::job::Job;
use crate::resources::{self, Released, kind_name};
use crate::state::{Phase, Resource, StateError, StateFile};
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
    let aws = Aws::connect(cfg).await;
    let reason = format!("GitLab job {} ended; cleanup stopped its task", job.url);
    for r in &unfinished {
        match release_when_created(&aws, r, &reason, cancel).await {
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
/// Pause between looks for a resource whose create call may still be in flight.
const LOOK_AGAIN: Duration = Duration::from_secs(2);

/// Releases `r`; when it was only intended (the executor died with its create call in flight)
/// and nothing runs yet, looks again until the call must have been decided.
async fn release_when_created(
    aws: &Aws,
    r: &Resource,
    reason: &str,
    cancel: &CancellationToken,
) -> Result<Released, AwsCallError> {
    let mut said = false;
    loop {
        let released = resources::release(aws, r, reason).await?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let in_flight = r.phase == Phase::Intended
            && released == Released::NothingRunning
            && now < r.intended_at.saturating_add(CREATE_CALL_BOUND.as_secs());
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
