//! Releasing what a job left behind: unfinished resources are stopped (through
//! [`crate::resources`]) and staged objects deleted. Used by the front end's cleanup stage;
//! idempotent, and silent about secrets (its output goes unmasked to the runner's log).

use tokio_util::sync::CancellationToken;

use crate::aws::Aws;
use crate::config::ExecutorConfig;
use crate::job::Job;
use crate::resources::{self, Released, kind_name};
use crate::state::{Phase, StateError, StateFile};
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
    if unfinished.is_empty() && s.staged.is_empty() {
        return Ok(());
    }
    let aws = Aws::connect(cfg).await;
    let reason = format!("GitLab job {} ended; cleanup stopped its task", job.url);
    for r in &unfinished {
        match resources::release(&aws, r, &reason).await {
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
