//! Releasing one recorded resource, per kind: the one place that knows how to stop a training
//! job or a task, used by cancellation, `cleanup` and `gc`.
//!
//! A resource recorded as `Intended` may or may not exist (the executor may have been killed
//! while its create call was in flight), so release finds it by its deterministic name: the
//! training job's name, or the tasks whose `startedBy` is that name.

use aws_sdk_ecs::types::DesiredStatus;

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
    }
}

/// How a kind is named in log lines.
pub fn kind_name(k: ResourceKind) -> &'static str {
    match k {
        ResourceKind::TrainingJob => "training job",
        ResourceKind::EcsTask => "ECS task",
        ResourceKind::EcsDeployment => "ECS deployment",
        ResourceKind::ModelPackage => "model package",
    }
}
