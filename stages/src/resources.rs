//! Releasing one recorded resource, per kind: the one place that knows how to stop a training
//! job or a task, used by cancellation, `cleanup` and `gc`.
//!
//! A resource recorded as `Intended` may or may not exist (the executor may have been killed
//! while its create call was in flight), so release finds it by its deterministic name: the
//! training job's name, or the tasks whose `startedBy` is that name. A deployment's model and
//! endpoint config are deleted by name unless their endpoint uses them; a first deployment's
//! endpoint (it never served anything the job did not judge) is deleted.

use aws_sdk_ecs::types::DesiredStatus;
use aws_sdk_sagemaker::types::EndpointStatus;

use crate::aws::Aws;
use crate::aws::errors::{AwsCallError, code};
use crate::state::{Resource, ResourceKind};

/// What releasing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// A stop was requested (the ids stopped).
    Stopping(Vec<String>),
    /// Nothing was running under that name (finished, or never created).
    NothingRunning,
    /// AWS finishes it on its own; the text says how.
    LeftToAws(&'static str),
}

/// Asks AWS to stop `r`, saying `reason` where the API takes one.
///
/// # Errors
/// The failed call, when AWS could not be asked.
pub async fn release(aws: &Aws, r: &Resource, reason: &str) -> Result<Released, AwsCallError> {
    match r.kind {
        ResourceKind::TrainingJob => {
            match aws
                .sagemaker
                .stop_training_job()
                .training_job_name(&r.name)
                .send()
                .await
            {
                Ok(_) => Ok(Released::Stopping(vec![r.name.clone()])),
                // Finished already, or never created: nothing to stop.
                Err(e) if code(&e) == Some("ValidationException") => Ok(Released::NothingRunning),
                Err(e) => Err(AwsCallError::new("StopTrainingJob", e)),
            }
        }
        ResourceKind::EcsTask => {
            let Some(cluster) = r.scope.as_deref() else {
                return Ok(Released::NothingRunning);
            };
            let tasks = match &r.id {
                Some(arn) => vec![arn.clone()],
                None => aws
                    .ecs
                    .list_tasks()
                    .cluster(cluster)
                    .started_by(&r.name)
                    .desired_status(DesiredStatus::Running)
                    .send()
                    .await
                    .map_err(|e| AwsCallError::new("ListTasks", e))?
                    .task_arns()
                    .to_vec(),
            };
            let mut stopped = Vec::new();
            for task in tasks {
                match aws
                    .ecs
                    .stop_task()
                    .cluster(cluster)
                    .task(&task)
                    .reason(reason)
                    .send()
                    .await
                {
                    Ok(_) => stopped.push(task),
                    // Unknown to ECS (stopped long ago and forgotten): nothing to stop.
                    Err(e) if code(&e) == Some("InvalidParameterException") => {}
                    Err(e) => return Err(AwsCallError::new("StopTask", e)),
                }
            }
            Ok(if stopped.is_empty() {
                Released::NothingRunning
            } else {
                Released::Stopping(stopped)
            })
        }
        // A registered version is the job's product, not a leftover.
        ResourceKind::ModelPackage => Ok(Released::NothingRunning),
        // A deployment cannot be halted without deploying something else; ECS completes it or
        // rolls it back on its own.
        ResourceKind::EcsDeployment => Ok(Released::LeftToAws(
            "ECS completes the deployment or rolls it back",
        )),
        ResourceKind::Endpoint => match &r.scope {
            // An update cannot be halted: SageMaker completes it or rolls it back, and the
            // endpoint keeps serving meanwhile.
            Some(_) => Ok(Released::LeftToAws(
                "SageMaker completes the endpoint update or rolls it back (an update cannot be halted)",
            )),
            None => delete_endpoint(aws, &r.name).await,
        },
        ResourceKind::Model | ResourceKind::EndpointConfig => {
            if let Some(endpoint) = r.scope.as_deref()
                && in_use(aws, endpoint, &r.name).await?
            {
                return Ok(Released::LeftToAws(
                    "its endpoint serves it, or is being updated to it",
                ));
            }
            let deleted = match r.kind {
                ResourceKind::Model => aws
                    .sagemaker
                    .delete_model()
                    .model_name(&r.name)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| AwsCallError::new("DeleteModel", e)),
                _ => aws
                    .sagemaker
                    .delete_endpoint_config()
                    .endpoint_config_name(&r.name)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| AwsCallError::new("DeleteEndpointConfig", e)),
            };
            match deleted {
                Ok(()) => Ok(Released::Stopping(vec![r.name.clone()])),
                // Never created, or deleted already.
                Err(e) if e.code() == Some("ValidationException") => Ok(Released::NothingRunning),
                Err(e) => Err(e),
            }
        }
    }
}

/// Deletes endpoint `name`; absent is nothing to do.
///
/// # Errors
/// The failed call.
pub async fn delete_endpoint(aws: &Aws, name: &str) -> Result<Released, AwsCallError> {
    match aws
        .sagemaker
        .delete_endpoint()
        .endpoint_name(name)
        .send()
        .await
    {
        Ok(_) => Ok(Released::Stopping(vec![name.to_owned()])),
        Err(e) if code(&e) == Some("ValidationException") => Ok(Released::NothingRunning),
        Err(e) => Err(AwsCallError::new("DeleteEndpoint", e)),
    }
}

/// Whether `endpoint` serves config `name` (or a model of that name: a deployment names its
/// model and its config alike) or is being updated to it. An endpoint being deleted, a failed
/// one and an absent one use nothing.
pub(crate) async fn in_use(aws: &Aws, endpoint: &str, name: &str) -> Result<bool, AwsCallError> {
    match aws
        .sagemaker
        .describe_endpoint()
        .endpoint_name(endpoint)
        .send()
        .await
    {
        Ok(ep) => {
            let gone = matches!(
                ep.endpoint_status(),
                Some(EndpointStatus::Deleting | EndpointStatus::Failed)
            );
            // After a failed rollback the endpoint serves a mix of old and new fleets, and
            // which config is which is not reliable: keep everything.
            if ep.endpoint_status() == Some(&EndpointStatus::UpdateRollbackFailed) {
                return Ok(true);
            }
            let serves = ep.endpoint_config_name() == Some(name);
            let pending = ep
                .pending_deployment_summary()
                .and_then(|p| p.endpoint_config_name())
                == Some(name);
            Ok(!gone && (serves || pending))
        }
        Err(e) if code(&e) == Some("ValidationException") => Ok(false),
        Err(e) => Err(AwsCallError::new("DescribeEndpoint", e)),
    }
}

/// How a kind is named in log lines.
pub fn kind_name(k: ResourceKind) -> &'static str {
    match k {
        ResourceKind::TrainingJob => "training job",
        ResourceKind::EcsTask => "ECS task",
        ResourceKind::EcsDeployment => "ECS deployment",
        ResourceKind::ModelPackage => "model package",
        ResourceKind::Model => "model",
        ResourceKind::EndpointConfig => "endpoint config",
        ResourceKind::Endpoint => "endpoint",
    }
}
