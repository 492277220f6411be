//! The `ecs-deploy` action: an ECS service moves one container to a new image, and the job
//! succeeds only when that deployment completes. The job's `script:` is not executed.
//!
//! Flow: DescribeServices, then DescribeTaskDefinition of its current task definition (with
//! tags); register a new revision with the named container's image replaced ([`revision`]);
//! UpdateService to it; identify the new deployment (the PRIMARY one running the new revision)
//! and record it in the state file before waiting; follow it ([`follow`]) within `ECS_TIMEOUT`,
//! printing new service events; write `sagemaker.env`. A re-run of the stage follows the
//! deployment it recorded instead of deploying again. Cancellation stops the waiting (a
//! deployment cannot be halted without deploying something else) and prints where it stands.

pub mod follow;
pub mod revision;

use std::collections::HashSet;

use aws_sdk_ecs::error::SdkError;
use aws_sdk_ecs::operation::describe_services::DescribeServicesError;
use aws_sdk_ecs::operation::describe_task_definition::DescribeTaskDefinitionError;
use aws_sdk_ecs::operation::register_task_definition::RegisterTaskDefinitionError;
use aws_sdk_ecs::operation::update_service::UpdateServiceError;
use aws_sdk_ecs::types::{Service, TaskDefinitionField};
use tokio::time::Instant;

use crate::aws::{Aws, errors};
use crate::failure::{Classify, FailureKind};
use crate::joblog::JobLog;
use crate::remote;
use crate::run::StageRun;
use crate::settings::EcsDeploySettings;
use crate::state::{Resource, ResourceKind, StateError};
use follow::{Followed, Verdict, short_td, summarize};

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
    /// A request could not be built (a bug, or a value the SDK refuses).
    #[error("cannot build the {what} request: {source}")]
    Request {
        /// Which request.
        what: &'static str,
        /// The SDK's builder error.
        #[source]
        source: aws_smithy_types::error::operation::BuildError,
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
    #[error("cannot follow service {service}: {message}")]
    Follow {
        /// The service.
        service: String,
        /// Why.
        message: String,
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
    /// Writing the outputs into the project dir failed.
    #[error("cannot write the job's outputs: {0}")]
    Outputs(#[source] crate::project_files::ProjectFileError),
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
            | EcsDeployError::Request { .. }
            | EcsDeployError::DeploymentNotFound(_)
            | EcsDeployError::Follow { .. }
            | EcsDeployError::State(_) => FailureKind::System,
            EcsDeployError::Outputs(e) if e.is_jobs_fault() => FailureKind::Build,
            EcsDeployError::Outputs(_) => FailureKind::System,
        }
    }
}

/// Runs the stage: deploys and follows the deployment.
pub async fn run(
    aws: &Aws,
    d: &EcsDeploySettings,
    run: StageRun<'_>,
) -> Result<(), EcsDeployError> {
    let log = JobLog::new();
    log.notice(&format!(
        "ecs-deploy: the job's script is not executed; deploying image {} to container {} of service {} in cluster {}",
        d.image, d.container, d.service, d.cluster
    ));
    log.line(&format!(
        "Console: {}",
        console_url(&aws.region, &d.cluster, &d.service)
    ));
    let svc = active_service(aws, d).await?;
    let mut seen: HashSet<String> = svc
        .events()
        .iter()
        .filter_map(|e| e.id().map(str::to_owned))
        .collect();

    let recorded = run.state.load()?.resources.into_iter().find(|r| {
        r.kind == ResourceKind::EcsDeployment
            && r.stage == run.stage
            && r.scope.as_deref() == Some(d.cluster.as_str())
    });
    let (deployment, previous_td) = match recorded {
        Some(r) => {
            log.notice(&format!(
                "Following deployment {} started earlier by this stage",
                r.id
            ));
            // Its events were printed by the earlier attempt, or are history by now.
            (r.id, None)
        }
        None => {
            let (deployment, previous) = deploy(aws, d, &svc, &run, &log).await?;
            (deployment, Some(previous))
        }
    };

    log.section_start(
        "deploying",
        &format!("Deploying {} (deployment {deployment})", d.service),
        false,
    );
    let deadline = Instant::now() + d.timeout;
    let followed = follow::follow(
        &aws.ecs,
        &d.cluster,
        &d.service,
        &deployment,
        &mut seen,
        deadline,
        &log,
        run.cancel,
    )
    .await;
    log.section_end("deploying");
    let followed = followed.map_err(|e| EcsDeployError::Follow {
        service: d.service.clone(),
        message: e.0,
    })?;
    let service = d.service.clone();
    let (verdict, svc) = match followed {
        Followed::Ended(verdict, svc) => (verdict, svc),
        Followed::TimedOut(last) => {
            print_current_state(aws, d, last, &log).await;
            return Err(EcsDeployError::TimedOut {
                service,
                deployment,
                timeout: d.timeout,
            });
        }
        Followed::Cancelled(last) => {
            log.warn(&format!(
                "Job cancelled: stopped waiting for deployment {deployment}; ECS carries on with it"
            ));
            print_current_state(aws, d, last, &log).await;
            return Err(EcsDeployError::Cancelled {
                service,
                deployment,
            });
        }
    };
    // A verdict is final: nothing is left for cleanup to look at.
    run.state
        .mark_finished(ResourceKind::EcsDeployment, &deployment)?;
    match verdict {
        Verdict::Completed => {
            let td = svc
                .deployments()
                .iter()
                .find(|x| x.id() == Some(deployment.as_str()))
                .and_then(|x| x.task_definition())
                .unwrap_or_default()
                .to_owned();
            let mut pairs = vec![
                ("SAGEMAKER_ECS_TASK_DEFINITION_ARN".to_owned(), td.clone()),
                ("SAGEMAKER_ECS_CLUSTER".to_owned(), d.cluster.clone()),
                ("SAGEMAKER_ECS_SERVICE".to_owned(), d.service.clone()),
                ("SAGEMAKER_ECS_DEPLOYMENT_ID".to_owned(), deployment.clone()),
                ("SAGEMAKER_ECS_IMAGE".to_owned(), d.image.clone()),
                (
                    "SAGEMAKER_CONSOLE_URL".to_owned(),
                    console_url(&aws.region, &d.cluster, &d.service),
                ),
            ];
            if let Some(prev) = previous_td {
                pairs.push((
                    "SAGEMAKER_ECS_PREVIOUS_TASK_DEFINITION_ARN".to_owned(),
                    prev,
                ));
            }
            remote::write_dotenv(run.project_dir, &pairs, &log).map_err(EcsDeployError::Outputs)?;
            log.notice(&format!(
                "Deployment {deployment} completed: service {} runs {}",
                d.service,
                short_td(&td)
            ));
            Ok(())
        }
        Verdict::Failed {
            reason,
            rollback_to,
        } => {
            print_state(Some(&svc), &log);
            Err(EcsDeployError::RolloutFailed {
                service,
                deployment,
                reason,
                rollback_to,
            })
        }
        Verdict::Replaced { by } => {
            print_state(Some(&svc), &log);
            Err(EcsDeployError::Replaced {
                service,
                deployment,
                by,
            })
        }
        Verdict::Vanished => {
            print_state(Some(&svc), &log);
            Err(EcsDeployError::Vanished {
                service,
                deployment,
            })
        }
        // `follow` only returns terminal verdicts.
        Verdict::Waiting(summary) => Err(EcsDeployError::Follow {
            service,
            message: format!("stopped following while {summary}"),
        }),
    }
}

/// The service, if it exists and is ACTIVE.
async fn active_service(aws: &Aws, d: &EcsDeploySettings) -> Result<Service, EcsDeployError> {
    let out = aws
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
    aws: &Aws,
    d: &EcsDeploySettings,
    svc: &Service,
    run: &StageRun<'_>,
    log: &JobLog,
) -> Result<(String, String), EcsDeployError> {
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
        &run.job.resource_tags(),
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
        None => follow::describe(&aws.ecs, &d.cluster, &d.service)
            .await
            .ok()
            .flatten()
            .as_ref()
            .and_then(started)
            .ok_or_else(|| EcsDeployError::DeploymentNotFound(d.service.clone()))?,
    };
    // Recorded before any wait, so a re-run follows this deployment instead of deploying again.
    run.state.record(Resource {
        kind: ResourceKind::EcsDeployment,
        id: deployment.clone(),
        scope: Some(d.cluster.clone()),
        stage: run.stage.to_owned(),
        finished: false,
    })?;
    log.notice(&format!(
        "UpdateService started deployment {deployment} of {}",
        d.service
    ));
    Ok((deployment, current))
}

/// After the wait was cut short: describes the service once more (briefly: the job is ending)
/// and prints its deployments, or the last description when that fails.
async fn print_current_state(
    aws: &Aws,
    d: &EcsDeploySettings,
    last: Option<Box<Service>>,
    log: &JobLog,
) {
    // The cancellation token has fired already, so this one call is bounded by a timeout
    // instead; a second signal still exits at once.
    let fresh = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        follow::describe(&aws.ecs, &d.cluster, &d.service),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .flatten()
    .map(Box::new);
    print_state(fresh.or(last).as_deref(), log);
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
        "https://{region}.console.aws.amazon.com/ecs/v2/clusters/{cluster}/services/{service}/deployments?region={region}"
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
