//! The `ecs-deploy` action: an ECS service moves one container to a new image, and the job
//! succeeds only when that deployment completes. The job's `script:` is not executed.
//!
//! Flow: DescribeServices, then DescribeTaskDefinition of its current task definition (with
//! tags); register a new revision with the named container's image replaced ([`revision`]);
//! UpdateService to it; identify the new deployment (the PRIMARY one running the new revision)
//! and record it in the state file (intended before UpdateService, created after); follow it
//! (judged by [`verdict`]) within `ECS_TIMEOUT`, printing new service events; hand on the new
//! task definition. A re-run of the stage follows the
//! deployment it recorded instead of deploying again. Cancellation stops the waiting (a
//! deployment cannot be halted without deploying something else) and prints where it stands.

pub mod revision;
pub mod verdict;

use std::collections::HashSet;

use aws_sdk_ecs::error::SdkError;
use aws_sdk_ecs::operation::describe_services::DescribeServicesError;
use aws_sdk_ecs::operation::describe_task_definition::DescribeTaskDefinitionError;
use aws_sdk_ecs::operation::register_task_definition::RegisterTaskDefinitionError;
use aws_sdk_ecs::operation::update_service::UpdateServiceError;
use aws_sdk_ecs::types::{Service, TaskDefinitionField};
use tokio::time::Instant;

use crate::aws::errors::{self, AwsCallError};
use crate::ctx::StageCtx;
use crate::failure::{Classify, FailureKind};
use crate::joblog::JobLog;
use crate::outputs::Outputs;
use crate::settings::EcsDeploySettings;
use crate::state::{Phase, Resource, ResourceKind, StateError};
use crate::watch::events::ResourceKey;
use crate::watch::{self, Cadence, Followed, WatchError};
use verdict::{ServiceWatch, Verdict, short_td, summarize};

/// Why an ecs-deploy stage failed.
#[derive(Debug, thiserror::Error)]
pub enum EcsDeployError {
    /// DescribeServices failed.
    #[error(
        "DescribeServices {service} in cluster {cluster}: {}",
        errors::describe(source)
    )]
    DescribeServices {
        /// The cluster.
        cluster: String,
        /// The service.
        service: String,
        /// The SDK error.
        #[source]
        source: SdkError<DescribeServicesError>,
    },
    /// The service does not exist or is not active.
    #[error(
        "service {service} is not an active service of cluster {cluster} (ECS_SERVICE, ECS_CLUSTER): {detail}"
    )]
    ServiceNotFound {
        /// The cluster.
        cluster: String,
        /// The service.
        service: String,
        /// What ECS said.
        detail: String,
    },
    /// DescribeTaskDefinition of the current revision failed.
    #[error(
        "DescribeTaskDefinition {task_definition}: {}",
        errors::describe(source)
    )]
    DescribeTaskDefinition {
        /// The task definition.
        task_definition: String,
        /// The SDK error.
        #[source]
        source: SdkError<DescribeTaskDefinitionError>,
    },
    /// The container to update is not in the service's task definition.
    #[error("ECS_CONTAINER: the task definition {task_definition} of service {service} has no container {container:?} (it has: {})", available.join(", "))]
    ContainerNotFound {
        /// The service.
        service: String,
        /// The current task definition.
        task_definition: String,
        /// The requested container.
        container: String,
        /// The containers there are.
        available: Vec<String>,
    },
    /// RegisterTaskDefinition failed.
    #[error(
        "RegisterTaskDefinition (new revision of {family}): {}",
        errors::describe(source)
    )]
    RegisterTaskDefinition {
        /// The family.
        family: String,
        /// The SDK error.
        #[source]
        source: SdkError<RegisterTaskDefinitionError>,
    },
    /// UpdateService failed.
    #[error("UpdateService {service}: {}", errors::describe(source))]
    UpdateService {
        /// The service.
        service: String,
        /// The SDK error.
        #[source]
        source: SdkError<UpdateServiceError>,
    },
    /// The deployment UpdateService started could not be identified.
    #[error("UpdateService started no deployment of {0} that ECS reports")]
    DeploymentNotFound(String),
    /// Following the service failed.
    #[error("cannot follow service {service}: {source}")]
    Follow {
        /// The service.
        service: String,
        /// Why.
        #[source]
        source: WatchError<AwsCallError>,
    },
    /// The deployment failed (circuit breaker).
    #[error("deployment {deployment} of service {service} failed: {reason}{}", rollback_to.as_ref().map(|td| format!("; ECS is rolling back to {}", short_td(td))).unwrap_or_default())]
    RolloutFailed {
        /// The service.
        service: String,
        /// The deployment.
        deployment: String,
        /// rolloutStateReason.
        reason: String,
        /// The task definition ECS rolls back to.
        rollback_to: Option<String>,
    },
    /// Another deployment replaced ours before it completed.
    #[error("deployment {deployment} of service {service} was replaced by {} before it completed", by.as_ref().map(|(id, td)| format!("deployment {id} ({})", short_td(td))).unwrap_or_else(|| "another deployment".to_owned()))]
    Replaced {
        /// The service.
        service: String,
        /// Ours.
        deployment: String,
        /// The one now PRIMARY.
        by: Option<(String, String)>,
    },
    /// The deployment disappeared without completing.
    #[error("deployment {deployment} of service {service} disappeared before it completed")]
    Vanished {
        /// The service.
        service: String,
        /// Ours.
        deployment: String,
    },
    /// ECS_TIMEOUT passed.
    #[error("deployment {deployment} of service {service} did not complete within {} (ECS_TIMEOUT)", humantime::format_duration(*timeout))]
    TimedOut {
        /// The service.
        service: String,
        /// Ours.
        deployment: String,
        /// The limit.
        timeout: std::time::Duration,
    },
    /// The CI job was cancelled while waiting.
    #[error(
        "cancelled while deployment {deployment} of service {service} was in progress (ECS continues it)"
    )]
    Cancelled {
        /// The service.
        service: String,
        /// Ours.
        deployment: String,
    },
    /// The state file could not be written.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Error codes by which ECS refuses what the job asked for (a wrong cluster, service or image).
fn refused_request(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ClusterNotFoundException"
                | "ServiceNotFoundException"
                | "ServiceNotActiveException"
                | "InvalidParameterException"
                | "ClientException"
                | "PlatformTaskDefinitionIncompatibilityException"
                | "PlatformUnknownException"
        )
    )
}

impl Classify for EcsDeployError {
    fn failure_kind(&self) -> FailureKind {
        let by_code = |refused| {
            if refused {
                FailureKind::Build
            } else {
                FailureKind::System
            }
        };
        match self {
            EcsDeployError::DescribeServices { source, .. } => {
                by_code(refused_request(errors::code(source)))
            }
            EcsDeployError::RegisterTaskDefinition { source, .. } => {
                by_code(refused_request(errors::code(source)))
            }
            EcsDeployError::UpdateService { source, .. } => {
                by_code(refused_request(errors::code(source)))
            }
            EcsDeployError::ServiceNotFound { .. }
            | EcsDeployError::ContainerNotFound { .. }
            | EcsDeployError::RolloutFailed { .. }
            | EcsDeployError::Replaced { .. }
            | EcsDeployError::Vanished { .. }
            | EcsDeployError::TimedOut { .. }
            | EcsDeployError::Cancelled { .. } => FailureKind::Build,
            EcsDeployError::DescribeTaskDefinition { .. }
            | EcsDeployError::DeploymentNotFound(_)
            | EcsDeployError::Follow { .. }
            | EcsDeployError::State(_) => FailureKind::System,
        }
    }

    fn script_exit_code(&self) -> Option<i32> {
        // The job's script is not executed: no failure carries its status.
        match self {
            EcsDeployError::DescribeServices { .. }
            | EcsDeployError::ServiceNotFound { .. }
            | EcsDeployError::DescribeTaskDefinition { .. }
            | EcsDeployError::ContainerNotFound { .. }
            | EcsDeployError::RegisterTaskDefinition { .. }
            | EcsDeployError::UpdateService { .. }
            | EcsDeployError::DeploymentNotFound(_)
            | EcsDeployError::Follow { .. }
            | EcsDeployError::RolloutFailed { .. }
            | EcsDeployError::Replaced { .. }
            | EcsDeployError::Vanished { .. }
            | EcsDeployError::TimedOut { .. }
            | EcsDeployError::Cancelled { .. }
            | EcsDeployError::State(_) => None,
        }
    }
}

/// First and longest interval between DescribeServices calls.
const FIRST_POLL: std::time::Duration = std::time::Duration::from_secs(2);
const MAX_POLL: std::time::Duration = std::time::Duration::from_secs(15);

/// Runs the stage: deploys and follows the deployment.
///
/// # Errors
/// See [`EcsDeployError`].
pub async fn run(ctx: &StageCtx<'_>, d: &EcsDeploySettings) -> Result<Outputs, EcsDeployError> {
    let log = &ctx.log;
    log.notice(&format!(
        "ecs-deploy: the job's script is not executed; deploying image {} to container {} of service {} in cluster {}",
        d.image, d.container, d.service, d.cluster
    ));
    log.line(&format!(
        "Console: {}",
        console_url(&ctx.aws.region, &d.cluster, &d.service)
    ));
    let svc = active_service(ctx, d).await?;
    let seen: HashSet<String> = svc
        .events()
        .iter()
        .filter_map(|e| e.id().map(str::to_owned))
        .collect();

    let recorded = ctx
        .state
        .load()?
        .of_stage(ResourceKind::EcsDeployment, ctx.stage)
        .filter(|r| r.scope.as_deref() == Some(d.cluster.as_str()) && r.phase >= Phase::Created)
        .and_then(|r| r.id.clone());
    let (deployment, previous_td) = match recorded {
        Some(id) => {
            log.notice(&format!(
                "Following deployment {id} started earlier by this stage"
            ));
            // Its events were printed by the earlier attempt, or are history by now.
            (id, None)
        }
        None => {
            let (deployment, previous) = deploy(ctx, d, &svc).await?;
            (deployment, Some(previous))
        }
    };

    log.section_start(
        "deploying",
        &format!("Deploying {} (deployment {deployment})", d.service),
        false,
    );
    let mut w = ServiceWatch::new(
        ctx.aws.polling.ecs.clone(),
        &d.cluster,
        &d.service,
        &deployment,
        seen,
        log.clone(),
    );
    // Deployment state-change events name the service by ARN.
    let mut events = svc
        .service_arn()
        .and_then(|arn| ctx.state_events(ResourceKey::EcsService(arn.to_owned())));
    let followed = watch::follow(
        &mut w,
        watch::Options::new(Cadence::new(FIRST_POLL, MAX_POLL), ctx.cancel)
            .with_deadline(Instant::now() + d.timeout),
        events.as_mut().map(|(hints, _)| hints),
    )
    .await;
    drop(events);
    log.section_end("deploying");
    let service = d.service.clone();
    let (verdict, svc) = match followed {
        Ok(Followed::Done(verdict, svc)) => (verdict, svc),
        Ok(Followed::TimedOut(last)) => {
            print_current_state(ctx, d, last).await;
            return Err(EcsDeployError::TimedOut {
                service,
                deployment,
                timeout: d.timeout,
            });
        }
        Ok(Followed::Cancelled(last)) => {
            log.warn(&format!(
                "Job cancelled: stopped waiting for deployment {deployment}; ECS carries on with it"
            ));
            print_current_state(ctx, d, last).await;
            return Err(EcsDeployError::Cancelled {
                service,
                deployment,
            });
        }
        Err(source) => return Err(EcsDeployError::Follow { service, source }),
    };
    // A verdict is final: nothing is left for cleanup to look at.
    ctx.state
        .finished(ResourceKind::EcsDeployment, &d.service)?;
    match verdict {
        Verdict::Completed => {
            let td = svc
                .deployments()
                .iter()
                .find(|x| x.id() == Some(deployment.as_str()))
                .and_then(|x| x.task_definition())
                .unwrap_or_default()
                .to_owned();
            let mut out = Outputs::default();
            out.set("SAGEMAKER_ECS_TASK_DEFINITION_ARN", td.clone());
            out.set("SAGEMAKER_ECS_CLUSTER", d.cluster.clone());
            out.set("SAGEMAKER_ECS_SERVICE", d.service.clone());
            out.set("SAGEMAKER_ECS_DEPLOYMENT_ID", deployment.clone());
            out.set("SAGEMAKER_ECS_IMAGE", d.image.clone());
            out.set(
                "SAGEMAKER_CONSOLE_URL",
                console_url(&ctx.aws.region, &d.cluster, &d.service),
            );
            if let Some(prev) = previous_td {
                out.set("SAGEMAKER_ECS_PREVIOUS_TASK_DEFINITION_ARN", prev);
            }
            log.notice(&format!(
                "Deployment {deployment} completed: service {} runs {}",
                d.service,
                short_td(&td)
            ));
            Ok(out)
        }
        Verdict::Failed {
            reason,
            rollback_to,
        } => {
            print_state(Some(&svc), log);
            Err(EcsDeployError::RolloutFailed {
                service,
                deployment,
                reason,
                rollback_to,
            })
        }
        Verdict::Replaced { by } => {
            print_state(Some(&svc), log);
            Err(EcsDeployError::Replaced {
                service,
                deployment,
                by,
            })
        }
        Verdict::Vanished | Verdict::Waiting(_) => {
            print_state(Some(&svc), log);
            Err(EcsDeployError::Vanished {
                service,
                deployment,
            })
        }
    }
}

/// The service, if it exists and is ACTIVE.
async fn active_service(
    ctx: &StageCtx<'_>,
    d: &EcsDeploySettings,
) -> Result<Service, EcsDeployError> {
    let out = ctx
        .aws
        .ecs
        .describe_services()
        .cluster(&d.cluster)
        .services(&d.service)
        .send()
        .await
        .map_err(|source| EcsDeployError::DescribeServices {
            cluster: d.cluster.clone(),
            service: d.service.clone(),
            source,
        })?;
    let not_found = |detail: String| EcsDeployError::ServiceNotFound {
        cluster: d.cluster.clone(),
        service: d.service.clone(),
        detail,
    };
    match out.services().first() {
        Some(s) if s.status() == Some("ACTIVE") => Ok(s.clone()),
        Some(s) => Err(not_found(format!(
            "its status is {}",
            s.status().unwrap_or("unknown")
        ))),
        None => Err(not_found(
            out.failures()
                .first()
                .and_then(|f| f.reason())
                .unwrap_or("ECS does not know it")
                .to_owned(),
        )),
    }
}

/// Registers the new revision and updates the service; returns the new deployment's id (already
/// recorded in the state file) and the task definition the service ran before.
async fn deploy(
    ctx: &StageCtx<'_>,
    d: &EcsDeploySettings,
    svc: &Service,
) -> Result<(String, String), EcsDeployError> {
    let (aws, log, run) = (&ctx.aws, &ctx.log, ctx);
    let current = svc.task_definition().unwrap_or_default().to_owned();
    let described = aws
        .ecs
        .describe_task_definition()
        .task_definition(&current)
        .include(TaskDefinitionField::Tags)
        .send()
        .await
        .map_err(|source| EcsDeployError::DescribeTaskDefinition {
            task_definition: current.clone(),
            source,
        })?;
    let Some(td) = described.task_definition() else {
        return Err(EcsDeployError::ServiceNotFound {
            cluster: d.cluster.clone(),
            service: d.service.clone(),
            detail: format!("its task definition {current} cannot be described"),
        });
    };
    let (input, change) = revision::register_input(
        td,
        described.tags(),
        &run.resource_tags(),
        &d.container,
        &d.image,
    )
    .map_err(|missing| EcsDeployError::ContainerNotFound {
        service: d.service.clone(),
        task_definition: short_td(&current).to_owned(),
        container: d.container.clone(),
        available: missing.available,
    })?;
    if !change.dropped_tags.is_empty() {
        log.warn(&format!(
            "ECS allows 50 tags; not copied to the new revision: {}",
            change.dropped_tags.join(", ")
        ));
    }
    let family = td.family().unwrap_or_default().to_owned();
    let registered = input.send_with(&aws.ecs).await.map_err(|source| {
        EcsDeployError::RegisterTaskDefinition {
            family: family.clone(),
            source,
        }
    })?;
    let new_td = registered
        .task_definition()
        .and_then(|t| t.task_definition_arn())
        .ok_or_else(|| {
            EcsDeployError::DeploymentNotFound(format!(
                "{} (RegisterTaskDefinition returned no ARN)",
                d.service
            ))
        })?
        .to_owned();
    log.notice(&format!(
        "Registered {} from {}: container {} {} -> {}",
        short_td(&new_td),
        short_td(&current),
        d.container,
        change.old_image,
        d.image
    ));

    // Intended before the call: a kill while it is in flight leaves a record; cleanup leaves a
    // deployment to ECS, and a re-run without the deployment's id deploys again.
    let resource = Resource::intended(
        ResourceKind::EcsDeployment,
        &d.service,
        Some(&d.cluster),
        ctx.stage,
    );
    ctx.state.intend(resource.clone())?;
    let updated = aws
        .ecs
        .update_service()
        .cluster(&d.cluster)
        .service(&d.service)
        .task_definition(&new_td)
        .send()
        .await
        .map_err(|source| EcsDeployError::UpdateService {
            service: d.service.clone(),
            source,
        })?;
    let started = |s: &Service| {
        s.deployments()
            .iter()
            .find(|x| x.status() == Some("PRIMARY") && x.task_definition() == Some(new_td.as_str()))
            .and_then(|x| x.id())
            .map(str::to_owned)
    };
    let deployment = match updated.service().and_then(started) {
        Some(id) => id,
        // Some API shapes answer before the deployment is listed: look once more.
        None => describe(aws, &d.cluster, &d.service)
            .await
            .as_ref()
            .and_then(started)
            .ok_or_else(|| EcsDeployError::DeploymentNotFound(d.service.clone()))?,
    };
    // Recorded before any wait, so a re-run follows this deployment instead of deploying again.
    run.state.created(&resource, &deployment)?;
    log.notice(&format!(
        "UpdateService started deployment {deployment} of {}",
        d.service
    ));
    Ok((deployment, current))
}

/// After the wait was cut short: describes the service once more (briefly: the job is ending)
/// and prints its deployments, or the last description when that fails.
async fn print_current_state(ctx: &StageCtx<'_>, d: &EcsDeploySettings, last: Option<Service>) {
    // The cancellation token has fired already, so this one call is bounded by a timeout
    // instead; a second signal still exits at once.
    let fresh = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        describe(&ctx.aws, &d.cluster, &d.service),
    )
    .await
    .ok()
    .flatten();
    print_state(fresh.or(last).as_ref(), &ctx.log);
}

/// The service as ECS describes it now, if it answers.
async fn describe(aws: &crate::aws::Aws, cluster: &str, service: &str) -> Option<Service> {
    aws.ecs
        .describe_services()
        .cluster(cluster)
        .services(service)
        .send()
        .await
        .ok()
        .and_then(|out| out.services().first().cloned())
}

/// Prints every deployment of the service and its rollout state.
fn print_state(svc: Option<&Service>, log: &JobLog) {
    let Some(svc) = svc else {
        log.line("The service's state is unknown (it could not be described).");
        return;
    };
    log.line(&format!(
        "Service {} deployments:",
        svc.service_name().unwrap_or("?")
    ));
    for dep in svc.deployments() {
        let reason = dep
            .rollout_state_reason()
            .map(|r| format!(" - {r}"))
            .unwrap_or_default();
        log.line(&format!("  {}{reason}", summarize(dep)));
    }
}

/// The ECS console page of a service's deployments.
pub fn console_url(region: &str, cluster: &str, service: &str) -> String {
    let cluster = cluster.rsplit('/').next().unwrap_or(cluster);
    let service = service.rsplit('/').next().unwrap_or(service);
    format!(
        "{}/ecs/v2/clusters/{cluster}/services/{service}/deployments?region={region}",
        crate::names::console_origin(region)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_rollouts_say_what_happened() {
        let e = EcsDeployError::RolloutFailed {
            service: "api".into(),
            deployment: "ecs-svc/2".into(),
            reason: "ECS deployment circuit breaker: tasks failed to start.".into(),
            rollback_to: Some("arn:aws:ecs:r:1:task-definition/api:4".into()),
        };
        assert_eq!(
            e.to_string(),
            "deployment ecs-svc/2 of service api failed: ECS deployment circuit breaker: tasks failed to start.; ECS is rolling back to api:4"
        );
        assert_eq!(e.failure_kind(), FailureKind::Build);
        let e = EcsDeployError::ContainerNotFound {
            service: "api".into(),
            task_definition: "api:4".into(),
            container: "wbe".into(),
            available: vec!["web".into(), "envoy".into()],
        };
        assert!(e.to_string().starts_with("ECS_CONTAINER: "), "{e}");
        assert!(e.to_string().contains("(it has: web, envoy)"), "{e}");
    }

    #[test]
    fn wrong_names_are_the_jobs_fault_and_outages_are_not() {
        assert!(refused_request(Some("ClusterNotFoundException")));
        assert!(!refused_request(Some("ThrottlingException")));
        assert!(!refused_request(Some("ServerException")));
        assert!(!refused_request(None));
        assert_eq!(
            EcsDeployError::DeploymentNotFound("api".into()).failure_kind(),
            FailureKind::System
        );
    }
}
