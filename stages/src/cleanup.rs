//! Releasing what a job left behind: unfinished resources are stopped and staged objects deleted.
//! Used by the front end's cleanup stage; idempotent, and silent about secrets (its output goes
//! unmasked to the runner's log).

use tokio_util::sync::CancellationToken;

use crate::aws::{Aws, errors};
use crate::config::ExecutorConfig;
use crate::job::Job;
use crate::state::{ResourceKind, StateError, StateFile};
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
        .filter(|r| !r.finished)
        .cloned()
        .collect();
    if unfinished.is_empty() && s.staged.is_empty() {
        return Ok(());
    }
    let aws = Aws::connect(cfg).await;
    for r in &unfinished {
        match r.kind {
            ResourceKind::TrainingJob => {
                match aws
                    .sagemaker
                    .stop_training_job()
                    .training_job_name(&r.id)
                    .send()
                    .await
                {
                    Ok(_) => eprintln!("cleanup: stopped training job {}", r.id),
                    // Finished already: nothing to stop.
                    Err(e) if errors::code(&e) == Some("ValidationException") => {}
                    Err(e) => {
                        eprintln!(
                            "cleanup: cannot stop training job {}: {}",
                            r.id,
                            errors::describe(&e)
                        );
                        continue;
                    }
                }
                state.mark_finished(r.kind, &r.id)?;
            }
            ResourceKind::EcsTask => {
                let Some(cluster) = r.scope.as_deref() else {
                    eprintln!(
                        "cleanup: {} {} has no cluster recorded; left as it is",
                        kind_name(r.kind),
                        r.id
                    );
                    continue;
                };
                let reason = format!("GitLab job {} ended; cleanup stopped its task", job.url);
                match aws
                    .ecs
                    .stop_task()
                    .cluster(cluster)
                    .task(&r.id)
                    .reason(reason)
                    .send()
                    .await
                {
                    Ok(_) => eprintln!("cleanup: stopped ECS task {}", r.id),
                    // Unknown to ECS (stopped long ago and forgotten): nothing to stop.
                    Err(e) if errors::code(&e) == Some("InvalidParameterException") => {}
                    Err(e) => {
                        eprintln!(
                            "cleanup: cannot stop ECS task {}: {}",
                            r.id,
                            errors::describe(&e)
                        );
                        continue;
                    }
                }
                state.mark_finished(r.kind, &r.id)?;
            }
            ResourceKind::EcsDeployment => {
                // A deployment cannot be halted without deploying something else; ECS completes
                // it or rolls it back on its own.
                eprintln!(
                    "cleanup: ECS deployment {} is left to ECS to complete or roll back",
                    r.id
                );
                state.mark_finished(r.kind, &r.id)?;
            }
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

fn kind_name(k: ResourceKind) -> &'static str {
    match k {
        ResourceKind::TrainingJob => "training job",
        ResourceKind::EcsTask => "ECS task",
        ResourceKind::EcsDeployment => "ECS deployment",
    }
}
