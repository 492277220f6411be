//! The `deploy` action: a model package served by a SageMaker endpoint through a guarded
//! rollout, a smoke test and rollback. The job's `script:` is not executed.
//!
//! Flow: read the smoke request (a bad file fails before anything exists); find the package
//! and check its approval ([`endpoint::package`]); describe the endpoint (absent: a first
//! deployment; `InService`: an update from the config it serves, recorded in the state file;
//! anything else: refused); create a Model and an EndpointConfig named per job
//! ([`endpoint::deploy_name`]), tagged and recorded `Intended` before each call; CreateEndpoint,
//! or UpdateEndpoint with the blue/green DeploymentConfig of the strategy and alarms; follow it
//! ([`rollout`]) with progress in the log; then the smoke test ([`smoke`]).
//!
//! When the rollout fails (SageMaker rolled it back, the rollback failed, or a first endpoint
//! Failed) or the smoke test fails, [`rollback`] returns the endpoint to the config it served
//! before or deletes a first deployment's endpoint, deletes what the failed deployment created,
//! and the job fails saying what was rolled back and why. Cancellation stops waiting and says
//! where the endpoint stands: an update cannot be halted (SageMaker completes it or rolls it
//! back); a first deployment's endpoint is deleted by cleanup, which also handles a SIGKILL.

pub mod endpoint;
pub mod rollback;
pub mod rollout;
pub mod smoke;

use aws_sdk_sagemaker::operation::describe_endpoint::DescribeEndpointOutput;
use aws_sdk_sagemaker::types::EndpointStatus;
use tokio::time::Instant;

use crate::aws::errors::AwsCallError;
use crate::ctx::StageCtx;
use crate::failure::{Classify, FailureKind};
use crate::outputs::Outputs;
use crate::project_files::ProjectFileError;
use crate::settings::{Capacity, DeploySettings, ModelSource};
use crate::state::{Phase, Resource, ResourceKind, StateError};
use crate::watch::events::ResourceKey;
use crate::watch::{self, Cadence, Followed, WatchError};
use endpoint::PackageError;
use rollout::{EndpointWatch, Verdict, summarize};
use smoke::Smoke;

/// Why a deploy stage failed. Rollout failures carry `aftermath`: what was done about it.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The smoke request file cannot be read.
    #[error("SAGEMAKER_SMOKE_REQUEST: {0}")]
    SmokeRequest(#[source] ProjectFileError),
    /// The model package cannot be found or may not go to this endpoint.
    #[error("model package: {0}")]
    Package(#[source] PackageError),
    /// DescribeEndpoint failed.
    #[error("{0}")]
    Describe(#[source] AwsCallError),
    /// The endpoint is busy with another operation.
    #[error(
        "endpoint {endpoint} is {status}: another deployment or change is in progress; run the job again when it is InService"
    )]
    Busy {
        /// The endpoint.
        endpoint: String,
        /// Its status.
        status: String,
    },
    /// The endpoint is in a state an update cannot start from.
    #[error(
        "endpoint {endpoint} is {status}{}: it cannot be updated; tear it down (an undeploy job) and deploy again",
        reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
    )]
    Unusable {
        /// The endpoint.
        endpoint: String,
        /// Its status.
        status: String,
        /// FailureReason.
        reason: Option<String>,
    },
    /// A create or update call failed.
    #[error("{source}{}", aftermath.as_ref().map(|a| format!("; {a}")).unwrap_or_default())]
    Call {
        /// The failed call.
        #[source]
        source: AwsCallError,
        /// What was done about what existed by then.
        aftermath: Option<String>,
    },
    /// Following the rollout failed.
    #[error("cannot follow endpoint {endpoint}: {source}")]
    Follow {
        /// The endpoint.
        endpoint: String,
        /// Why.
        #[source]
        source: WatchError<AwsCallError>,
    },
    /// A first deployment's endpoint Failed.
    #[error("endpoint {endpoint} failed to start: {reason}; {aftermath}")]
    CreateFailed {
        /// The endpoint.
        endpoint: String,
        /// FailureReason.
        reason: String,
        /// What was done about it.
        aftermath: String,
    },
    /// SageMaker rolled the update back.
    #[error(
        "SageMaker rolled the update of endpoint {endpoint} back: {reason}; it serves {serving} again; {aftermath}"
    )]
    RolledBack {
        /// The endpoint.
        endpoint: String,
        /// FailureReason.
        reason: String,
        /// The config it serves.
        serving: String,
        /// What was done about it.
        aftermath: String,
    },
    /// The update and SageMaker's own rollback failed.
    #[error(
        "the update of endpoint {endpoint} failed and SageMaker could not roll it back (UpdateRollbackFailed): {reason}; {aftermath}"
    )]
    RollbackFailed {
        /// The endpoint.
        endpoint: String,
        /// FailureReason.
        reason: String,
        /// What was done about it.
        aftermath: String,
    },
    /// The smoke test failed after the rollout.
    #[error("smoke test of endpoint {endpoint} failed: {reason}; {aftermath}")]
    SmokeFailed {
        /// The endpoint.
        endpoint: String,
        /// How.
        reason: String,
        /// What was done about it.
        aftermath: String,
    },
    /// The smoke test could not reach the endpoint (AWS failed, not the model).
    #[error("smoke test of endpoint {endpoint} could not run: {source}; {aftermath}")]
    SmokeError {
        /// The endpoint.
        endpoint: String,
        /// The failed call.
        #[source]
        source: AwsCallError,
        /// What was done about it.
        aftermath: String,
    },
    /// Someone else acted on the endpoint during the rollout.
    #[error("endpoint {endpoint} became {status} during the rollout")]
    Unexpected {
        /// The endpoint.
        endpoint: String,
        /// Its status.
        status: String,
    },
    /// SAGEMAKER_DEPLOY_TIMEOUT passed.
    #[error("endpoint {endpoint} did not finish its rollout within {} (SAGEMAKER_DEPLOY_TIMEOUT): {state}", humantime::format_duration(*timeout))]
    TimedOut {
        /// The endpoint.
        endpoint: String,
        /// The limit.
        timeout: std::time::Duration,
        /// Where it stands.
        state: String,
    },
    /// The CI job was cancelled during the rollout.
    #[error("cancelled during the rollout of endpoint {endpoint}: {state}")]
    Cancelled {
        /// The endpoint.
        endpoint: String,
        /// Where it stands and what SageMaker does next.
        state: String,
    },
    /// The state file could not be written.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Error codes by which SageMaker refuses what the job asked for.
fn refused_request(code: Option<&str>) -> bool {
    matches!(code, Some("ValidationException" | "ResourceNotFound"))
}

impl Classify for DeployError {
    fn failure_kind(&self) -> FailureKind {
        match self {
            DeployError::SmokeRequest(e) if e.is_jobs_fault() => FailureKind::Build,
            DeployError::SmokeRequest(_) => FailureKind::System,
            DeployError::Package(PackageError::Call(e)) | DeployError::Call { source: e, .. } => {
                if refused_request(e.code()) {
                    FailureKind::Build
                } else {
                    FailureKind::System
                }
            }
            DeployError::Package(
                PackageError::NoneApproved(_) | PackageError::NotAllowed { .. },
            )
            | DeployError::Busy { .. }
            | DeployError::Unusable { .. }
            | DeployError::RolledBack { .. }
            | DeployError::RollbackFailed { .. }
            | DeployError::SmokeFailed { .. }
            | DeployError::TimedOut { .. }
            | DeployError::Cancelled { .. } => FailureKind::Build,
            // Capacity is AWS's to give; anything else that stops a model from starting (its
            // health check, its image, its archive) is the model's.
            DeployError::CreateFailed { reason, .. } => {
                if reason.to_ascii_lowercase().contains("capacity") {
                    FailureKind::System
                } else {
                    FailureKind::Build
                }
            }
            DeployError::Describe(_)
            | DeployError::Follow { .. }
            | DeployError::SmokeError { .. }
            | DeployError::Unexpected { .. }
            | DeployError::State(_) => FailureKind::System,
        }
    }

    fn script_exit_code(&self) -> Option<i32> {
        // The job's script is not executed: no failure carries its status.
        match self {
            DeployError::SmokeRequest(_)
            | DeployError::Package(_)
            | DeployError::Describe(_)
            | DeployError::Busy { .. }
            | DeployError::Unusable { .. }
            | DeployError::Call { .. }
            | DeployError::Follow { .. }
            | DeployError::CreateFailed { .. }
            | DeployError::RolledBack { .. }
            | DeployError::RollbackFailed { .. }
            | DeployError::SmokeFailed { .. }
            | DeployError::SmokeError { .. }
            | DeployError::Unexpected { .. }
            | DeployError::TimedOut { .. }
            | DeployError::Cancelled { .. }
            | DeployError::State(_) => None,
        }
    }
}

/// The DescribeEndpoint cadence of a rollout: 2 s at first, backing off to 15 s while nothing
/// changes (a bake of minutes costs a few calls a minute).
pub(crate) fn cadence() -> Cadence {
    Cadence::new(
        std::time::Duration::from_secs(2),
        std::time::Duration::from_secs(15),
    )
}

/// Creates `kind` named `name` with `create`, recorded `Intended` before and `Created` after;
/// a name that exists already (a re-run of the stage) is attached to.
async fn create_recorded<F>(
    ctx: &StageCtx<'_>,
    kind: ResourceKind,
    name: &str,
    endpoint: &str,
    create: F,
) -> Result<(), DeployError>
where
    F: std::future::Future<Output = Result<String, AwsCallError>>,
{
    let r = Resource::intended(kind, name, Some(endpoint), ctx.stage);
    ctx.state.intend(r.clone())?;
    let arn = match create.await {
        Ok(arn) => arn,
        Err(e) if endpoint::already_exists(&e) => name.to_owned(),
        Err(source) => {
            return Err(DeployError::Call {
                source,
                aftermath: None,
            });
        }
    };
    ctx.state.created(&r, &arn)?;
    Ok(())
}

/// Runs the stage: deploys, follows, smoke-tests, and rolls back on failure.
///
/// # Errors
/// See [`DeployError`].
pub async fn run(ctx: &StageCtx<'_>, d: &DeploySettings) -> Result<Outputs, DeployError> {
    let log = &ctx.log;
    log.notice(&format!(
        "deploy: the job's script is not executed; deploying to {} endpoint {}",
        if d.stable { "stable" } else { "candidate" },
        d.endpoint
    ));
    log.line(&format!(
        "Console: {}",
        endpoint::console_url(&ctx.aws.region, &d.endpoint)
    ));
    let smoke_body = match &d.smoke {
        Some(t) => Some(smoke::read_request(ctx, t).map_err(DeployError::SmokeRequest)?),
        None => None,
    };
    let package = endpoint::package(ctx, d)
        .await
        .map_err(DeployError::Package)?;
    let source = match &d.model {
        ModelSource::Package(_) => "named",
        ModelSource::LatestApproved(_) => "newest Approved of its group",
    };
    log.line(&format!(
        "Model package: {} ({}, {source})",
        package.arn, package.status
    ));
    if package.status != "Approved" {
        log.warn(&format!(
            "deploying a package that is {} to candidate endpoint {} (policy.deploy.unapproved_to_candidates)",
            package.status, d.endpoint
        ));
    }

    let name = endpoint::deploy_name(&d.endpoint, ctx.job.id, ctx.stage);
    // A re-run of this stage follows the rollout it started instead of deploying again.
    let recorded = ctx
        .state
        .load()?
        .of_stage(ResourceKind::Endpoint, ctx.stage)
        .filter(|r| r.name == d.endpoint && r.phase == Phase::Created)
        .cloned();
    let (previous, arn) = match recorded {
        Some(r) => {
            log.notice(&format!(
                "Following the rollout of {} to config {name} started earlier by this stage",
                d.endpoint
            ));
            (r.scope.clone(), r.handle().to_owned())
        }
        None => start(ctx, d, &package.arn, &name).await?,
    };

    log.section_start(
        "deploying",
        &format!("Deploying {} (config {name})", d.endpoint),
        false,
    );
    let mut w = EndpointWatch::new(
        ctx.aws.polling.sagemaker.clone(),
        &d.endpoint,
        &name,
        log.clone(),
    );
    // Endpoint state-change events, when the host has a queue: the rollout is described on each.
    let mut events = ctx.state_events(ResourceKey::Endpoint(d.endpoint.clone()));
    let followed = watch::follow(
        &mut w,
        watch::Options::new(cadence(), ctx.cancel).with_deadline(Instant::now() + d.timeout),
        events.as_mut().map(|(hints, _)| hints),
    )
    .await;
    drop(events);
    log.section_end("deploying");
    let endpoint_name = d.endpoint.clone();
    let verdict = match followed {
        Ok(Followed::Done(v, _)) => v,
        Ok(Followed::Cancelled(last)) => {
            let state = where_it_stands(ctx, &d.endpoint, last, previous.is_some()).await;
            log.warn(&format!("Job cancelled: stopped waiting; {state}"));
            // Nothing the job created may be deleted while SageMaker may still use it.
            if previous.is_some() {
                ctx.state.finished(ResourceKind::Model, &name)?;
                ctx.state.finished(ResourceKind::EndpointConfig, &name)?;
            }
            return Err(DeployError::Cancelled {
                endpoint: endpoint_name,
                state,
            });
        }
        Ok(Followed::TimedOut(last)) => {
            let state = where_it_stands(ctx, &d.endpoint, last, previous.is_some()).await;
            if previous.is_some() {
                ctx.state.finished(ResourceKind::Model, &name)?;
                ctx.state.finished(ResourceKind::EndpointConfig, &name)?;
            }
            return Err(DeployError::TimedOut {
                endpoint: endpoint_name,
                timeout: d.timeout,
                state,
            });
        }
        Err(source) => {
            return Err(DeployError::Follow {
                endpoint: endpoint_name,
                source,
            });
        }
    };

    match verdict {
        Verdict::Serving => {}
        Verdict::Failed { reason } => {
            log.error(&format!("Endpoint {} Failed: {reason}", d.endpoint));
            let mut aftermath =
                rollback::remove_first(ctx, &d.endpoint, d.keep_failed_endpoint).await;
            if !d.keep_failed_endpoint {
                aftermath.push_str("; ");
                aftermath.push_str(&rollback::discard(ctx, &d.endpoint, &name).await);
            }
            return Err(DeployError::CreateFailed {
                endpoint: endpoint_name,
                reason,
                aftermath,
            });
        }
        Verdict::RolledBack { reason, serving } => {
            ctx.state.finished(ResourceKind::Endpoint, &d.endpoint)?;
            log.error(&format!("SageMaker rolled the update back: {reason}"));
            let aftermath = rollback::discard(ctx, &d.endpoint, &name).await;
            return Err(DeployError::RolledBack {
                endpoint: endpoint_name,
                reason,
                serving,
                aftermath,
            });
        }
        Verdict::RollbackFailed { reason } => {
            log.error(&format!(
                "The update failed and SageMaker could not roll it back: {reason}"
            ));
            let aftermath = match &previous {
                Some(prev) => match rollback::restore(ctx, &d.endpoint, prev).await {
                    Ok(s) => {
                        ctx.state.finished(ResourceKind::Endpoint, &d.endpoint)?;
                        format!("{s}; {}", rollback::discard(ctx, &d.endpoint, &name).await)
                    }
                    Err(s) => {
                        // The endpoint may serve the new fleet in part: nothing of it is
                        // deleted, and fixing the endpoint is left to a person.
                        ctx.state.finished(ResourceKind::Model, &name)?;
                        ctx.state.finished(ResourceKind::EndpointConfig, &name)?;
                        ctx.state.finished(ResourceKind::Endpoint, &d.endpoint)?;
                        format!(
                            "{s}; model and endpoint config {name} are kept (the endpoint may serve them in part): update it to a config by hand, or tear it down with an undeploy job"
                        )
                    }
                },
                None => "there was no previous config to return to".to_owned(),
            };
            return Err(DeployError::RollbackFailed {
                endpoint: endpoint_name,
                reason,
                aftermath,
            });
        }
        Verdict::Unexpected { status } => {
            return Err(DeployError::Unexpected {
                endpoint: endpoint_name,
                status,
            });
        }
    }
    log.notice(&format!(
        "Endpoint {} is InService on config {name}",
        d.endpoint
    ));

    if let (Some(t), Some(body)) = (&d.smoke, smoke_body) {
        log.section_start("smoke_test", "Smoke test", false);
        let outcome = smoke::run(ctx, &ctx.aws.runtime, &d.endpoint, t, body).await;
        match &outcome {
            Smoke::Passed(summary) => log.notice(&format!("Smoke test passed: {summary}")),
            Smoke::Failed(reason) => log.error(&format!("Smoke test failed: {reason}")),
            Smoke::Error(e) => log.error(&format!("Smoke test could not run: {e}")),
        }
        log.section_end("smoke_test");
        let failed = match outcome {
            Smoke::Passed(_) => None,
            Smoke::Failed(reason) => Some(Ok(reason)),
            Smoke::Error(e) => Some(Err(e)),
        };
        if let Some(failure) = failed {
            let aftermath = match &previous {
                Some(prev) => match rollback::restore(ctx, &d.endpoint, prev).await {
                    Ok(s) => {
                        ctx.state.finished(ResourceKind::Endpoint, &d.endpoint)?;
                        format!("{s}; {}", rollback::discard(ctx, &d.endpoint, &name).await)
                    }
                    Err(s) => s,
                },
                None => {
                    let mut a =
                        rollback::remove_first(ctx, &d.endpoint, d.keep_failed_endpoint).await;
                    if !d.keep_failed_endpoint {
                        a.push_str("; ");
                        a.push_str(&rollback::discard(ctx, &d.endpoint, &name).await);
                    }
                    a
                }
            };
            return Err(match failure {
                Ok(reason) => DeployError::SmokeFailed {
                    endpoint: endpoint_name,
                    reason,
                    aftermath,
                },
                Err(source) => DeployError::SmokeError {
                    endpoint: endpoint_name,
                    source,
                    aftermath,
                },
            });
        }
    }

    let pruned = endpoint::prune_earlier(ctx, &d.endpoint, &name, previous.as_deref()).await;
    if !pruned.is_empty() {
        log.line(&format!(
            "Deleted the configs and models of earlier deployments (the previous one is kept for a rollback): {}",
            pruned.join(", ")
        ));
    }
    // Serving and tested: nothing here is a leftover any more.
    for kind in [
        ResourceKind::Endpoint,
        ResourceKind::EndpointConfig,
        ResourceKind::Model,
    ] {
        let n = if kind == ResourceKind::Endpoint {
            d.endpoint.as_str()
        } else {
            name.as_str()
        };
        ctx.state.finished(kind, n)?;
    }
    let url = endpoint::console_url(&ctx.aws.region, &d.endpoint);
    let mut out = Outputs::default();
    out.set("SAGEMAKER_ENDPOINT_NAME", d.endpoint.clone());
    out.set("SAGEMAKER_ENDPOINT_ARN", arn);
    out.set("SAGEMAKER_ENDPOINT_CONFIG_NAME", name.clone());
    if let Some(prev) = &previous {
        out.set("SAGEMAKER_ENDPOINT_PREVIOUS_CONFIG_NAME", prev.clone());
    }
    out.set("SAGEMAKER_MODEL_PACKAGE_ARN", package.arn.clone());
    out.set("SAGEMAKER_ENDPOINT_URL", url.clone());
    out.set("SAGEMAKER_CONSOLE_URL", url);
    log.notice(&format!(
        "Deployed {} to endpoint {} (config {name})",
        package.arn, d.endpoint
    ));
    Ok(out)
}

/// Checks that the endpoint can take a deployment, creates the model and the config, and calls
/// CreateEndpoint or UpdateEndpoint, each recorded in the state file first. Returns the config
/// the endpoint served before (none for a first deployment) and the endpoint's ARN.
async fn start(
    ctx: &StageCtx<'_>,
    d: &DeploySettings,
    package_arn: &str,
    name: &str,
) -> Result<(Option<String>, String), DeployError> {
    let log = &ctx.log;
    let current = endpoint::describe(ctx, &d.endpoint)
        .await
        .map_err(DeployError::Describe)?;
    let previous = match &current {
        None => None,
        Some(ep) => match ep.endpoint_status() {
            Some(EndpointStatus::InService) => ep.endpoint_config_name().map(str::to_owned),
            Some(
                s @ (EndpointStatus::Creating
                | EndpointStatus::Updating
                | EndpointStatus::SystemUpdating
                | EndpointStatus::RollingBack
                | EndpointStatus::Deleting),
            ) => {
                return Err(DeployError::Busy {
                    endpoint: d.endpoint.clone(),
                    status: s.as_str().to_owned(),
                });
            }
            other => {
                return Err(DeployError::Unusable {
                    endpoint: d.endpoint.clone(),
                    status: other.map(|s| s.as_str()).unwrap_or("unknown").to_owned(),
                    reason: ep.failure_reason().map(str::to_owned),
                });
            }
        },
    };
    let capacity = match &d.capacity {
        Capacity::Instances {
            instance_type,
            count,
        } => format!("{count} x {instance_type}"),
        Capacity::Serverless {
            memory_mb,
            max_concurrency,
        } => format!("serverless, {memory_mb} MB, {max_concurrency} concurrent"),
    };
    match &previous {
        None => log.line(&format!(
            "First deployment of {}: CreateEndpoint with config {name} ({capacity})",
            d.endpoint
        )),
        Some(prev) => {
            log.line(&format!(
                "Update of {} from config {prev} to {name} ({capacity}): {}{}",
                d.endpoint,
                d.strategy,
                if d.termination_wait.is_zero() {
                    String::new()
                } else {
                    format!(
                        ", old fleet kept {} after the shift",
                        humantime::format_duration(d.termination_wait)
                    )
                }
            ));
            if d.alarms.is_empty() {
                log.line("No CloudWatch alarms watch the update (SAGEMAKER_ALARMS)");
            } else {
                log.line(&format!(
                    "CloudWatch alarms that roll the update back: {}",
                    d.alarms.join(", ")
                ));
            }
        }
    }

    // The endpoint is recorded first, with the config it served: cleanup then deletes a first
    // deployment's endpoint before its config and model, and leaves an update to SageMaker.
    let ep_record = Resource::intended(
        ResourceKind::Endpoint,
        &d.endpoint,
        previous.as_deref(),
        ctx.stage,
    );
    ctx.state.intend(ep_record.clone())?;
    let created = async {
        create_recorded(
            ctx,
            ResourceKind::Model,
            name,
            &d.endpoint,
            endpoint::create_model(ctx, d, name, package_arn),
        )
        .await?;
        create_recorded(
            ctx,
            ResourceKind::EndpointConfig,
            name,
            &d.endpoint,
            endpoint::create_config(ctx, d, name),
        )
        .await
    }
    .await;
    if let Err(e) = created {
        let aftermath = rollback::discard(ctx, &d.endpoint, name).await;
        let _ = ctx.state.finished(ResourceKind::Endpoint, &d.endpoint);
        return Err(match e {
            DeployError::Call { source, .. } => DeployError::Call {
                source,
                aftermath: Some(aftermath),
            },
            other => other,
        });
    }
    log.line(&format!("Created model and endpoint config {name}"));

    let called = match &previous {
        None => ctx
            .aws
            .sagemaker
            .create_endpoint()
            .endpoint_name(&d.endpoint)
            .endpoint_config_name(name)
            .set_tags(Some(endpoint::tags(ctx, &d.endpoint, d.stable)))
            .send()
            .await
            .map(|o| o.endpoint_arn().unwrap_or_default().to_owned())
            .map_err(|e| AwsCallError::new("CreateEndpoint", e)),
        Some(_) => ctx
            .aws
            .sagemaker
            .update_endpoint()
            .endpoint_name(&d.endpoint)
            .endpoint_config_name(name)
            .deployment_config(endpoint::deployment_config(d))
            .send()
            .await
            .map(|o| o.endpoint_arn().unwrap_or_default().to_owned())
            .map_err(|e| AwsCallError::new("UpdateEndpoint", e)),
    };
    let arn = match called {
        Ok(arn) => arn,
        Err(source) => {
            // Every try failing transiently may hide one that landed with its answer lost: the
            // record then stays Intended and cleanup deletes the endpoint by name.
            if !source.retry().is_retryable() {
                ctx.state.finished(ResourceKind::Endpoint, &d.endpoint)?;
            }
            let aftermath = rollback::discard(ctx, &d.endpoint, name).await;
            return Err(DeployError::Call {
                source,
                aftermath: Some(aftermath),
            });
        }
    };
    ctx.state.created(&ep_record, &arn)?;
    Ok((previous, arn))
}

/// After the wait was cut short: where the endpoint stands (described once more, briefly: the
/// job is ending) and what SageMaker does next.
async fn where_it_stands(
    ctx: &StageCtx<'_>,
    endpoint: &str,
    last: Option<DescribeEndpointOutput>,
    update: bool,
) -> String {
    // The cancellation token has fired already, so this call is bounded by a timeout instead.
    let fresh = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        endpoint::describe(ctx, endpoint),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .flatten();
    let state = fresh
        .or(last)
        .map(|ep| summarize(&ep))
        .unwrap_or_else(|| format!("endpoint {endpoint}'s state is unknown"));
    if update {
        format!(
            "{state}; an update cannot be halted halfway: SageMaker completes it, or rolls it back to the previous config if an alarm fires"
        )
    } else {
        format!("{state}; the endpoint never served and is deleted at cleanup")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_say_what_was_rolled_back_and_whose_fault() {
        let e = DeployError::RolledBack {
            endpoint: "churn-stable".into(),
            reason: "alarm errors went into ALARM".into(),
            serving: "churn-stable-41".into(),
            aftermath: "deleted endpoint config churn-stable-42".into(),
        };
        assert_eq!(
            e.to_string(),
            "SageMaker rolled the update of endpoint churn-stable back: alarm errors went into ALARM; it serves churn-stable-41 again; deleted endpoint config churn-stable-42"
        );
        assert_eq!(e.failure_kind(), FailureKind::Build);
        let capacity = DeployError::CreateFailed {
            endpoint: "e".into(),
            reason: "InsufficientInstanceCapacity".into(),
            aftermath: String::new(),
        };
        assert_eq!(capacity.failure_kind(), FailureKind::System);
        let ping = DeployError::CreateFailed {
            endpoint: "e".into(),
            reason: "did not pass the ping health check".into(),
            aftermath: String::new(),
        };
        assert_eq!(ping.failure_kind(), FailureKind::Build);
        assert!(refused_request(Some("ValidationException")));
        assert!(!refused_request(Some("ThrottlingException")));
    }
}
