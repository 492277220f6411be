//! The `undeploy` action (for `environment: action: stop` jobs): an endpoint and the endpoint
//! configs and models this executor created for it, deleted. The job's `script:` is not
//! executed.
//!
//! The endpoint is deleted only when it carries this executor's `managed-by` tag (an endpoint
//! made by hand or by another tool is refused, not destroyed); the wait for it to disappear is
//! [`crate::watch::follow`]; then every config and model tagged with the endpoint's name
//! ([`crate::deploy::endpoint::ENDPOINT_TAG`]) is deleted. Idempotent: a second run finds
//! nothing and says so, successfully.

use std::future::Future;

use aws_sdk_sagemaker::types::EndpointStatus;
use tokio::time::Instant;

use crate::aws::errors::{AwsCallError, code};
use crate::ctx::StageCtx;
use crate::deploy::endpoint::{self, Owned};
use crate::failure::{Classify, FailureKind};
use crate::joblog::JobLog;
use crate::outputs::Outputs;
use crate::settings::UndeploySettings;
use crate::watch::{self, Describe, Followed, WatchError, Watched};

/// Why an undeploy stage failed.
#[derive(Debug, thiserror::Error)]
pub enum UndeployError {
    /// A call failed.
    #[error("{0}")]
    Call(#[source] AwsCallError),
    /// The endpoint was not created by this executor.
    #[error(
        "endpoint {0} was not created by sagemaker-executor (no managed-by={managed} tag): refusing to delete it", managed = crate::MANAGED_BY
    )]
    NotOurs(String),
    /// Following the deletion failed.
    #[error("cannot follow the deletion of endpoint {endpoint}: {source}")]
    Follow {
        /// The endpoint.
        endpoint: String,
        /// Why.
        #[source]
        source: WatchError<AwsCallError>,
    },
    /// The endpoint did not disappear in time.
    #[error("endpoint {0} was still being deleted after 30 minutes")]
    TimedOut(String),
    /// The CI job was cancelled while waiting.
    #[error(
        "cancelled while endpoint {0} was being deleted (SageMaker finishes the deletion; its configs and models are left: run the job again)"
    )]
    Cancelled(String),
}

impl Classify for UndeployError {
    fn failure_kind(&self) -> FailureKind {
        match self {
            UndeployError::Call(e) if e.code() == Some("ValidationException") => FailureKind::Build,
            UndeployError::Call(_) | UndeployError::Follow { .. } | UndeployError::TimedOut(_) => {
                FailureKind::System
            }
            UndeployError::NotOurs(_) | UndeployError::Cancelled(_) => FailureKind::Build,
        }
    }

    fn script_exit_code(&self) -> Option<i32> {
        match self {
            UndeployError::Call(_)
            | UndeployError::NotOurs(_)
            | UndeployError::Follow { .. }
            | UndeployError::TimedOut(_)
            | UndeployError::Cancelled(_) => None,
        }
    }
}

/// Longest wait for an endpoint to disappear.
const DELETE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Runs the stage as a teardown.
///
/// # Errors
/// See [`UndeployError`].
pub async fn run(ctx: &StageCtx<'_>, u: &UndeploySettings) -> Result<Outputs, UndeployError> {
    let log = &ctx.log;
    let name = &u.endpoint;
    log.notice(&format!(
        "undeploy: the job's script is not executed; deleting endpoint {name} and the configs and models sagemaker-executor created for it"
    ));
    let mut deleted = 0usize;
    if let Some(ep) = endpoint::describe(ctx, name)
        .await
        .map_err(UndeployError::Call)?
    {
        let arn = ep.endpoint_arn().unwrap_or_default().to_owned();
        if !managed(ctx, &arn).await? {
            return Err(UndeployError::NotOurs(name.clone()));
        }
        log.line(&format!(
            "Endpoint {name} is {} on config {}",
            ep.endpoint_status().map(|s| s.as_str()).unwrap_or("?"),
            ep.endpoint_config_name().unwrap_or("?")
        ));
        if ep.endpoint_status() != Some(&EndpointStatus::Deleting) {
            match ctx
                .aws
                .sagemaker
                .delete_endpoint()
                .endpoint_name(name)
                .send()
                .await
            {
                Ok(_) => {}
                // Gone meanwhile.
                Err(e) if code(&e) == Some("ValidationException") => {}
                Err(e) => return Err(UndeployError::Call(AwsCallError::new("DeleteEndpoint", e))),
            }
        }
        wait_gone(ctx, name).await?;
        log.notice(&format!("Deleted endpoint {name}"));
        deleted += 1;
    }
    let configs = endpoint::owned_configs(ctx, name)
        .await
        .map_err(UndeployError::Call)?;
    deleted += delete_all(ctx, "endpoint config", &configs, |n| {
        ctx.aws
            .sagemaker
            .delete_endpoint_config()
            .endpoint_config_name(n)
            .send()
    })
    .await?;
    let models = endpoint::owned_models(ctx, name)
        .await
        .map_err(UndeployError::Call)?;
    deleted += delete_all(ctx, "model", &models, |n| {
        ctx.aws.sagemaker.delete_model().model_name(n).send()
    })
    .await?;
    if deleted == 0 {
        log.notice(&format!(
            "Nothing to delete: endpoint {name} does not exist and no endpoint config or model of it is left"
        ));
    } else {
        log.notice(&format!(
            "Endpoint {name} is torn down ({deleted} resources deleted)"
        ));
    }
    Ok(Outputs::default())
}

/// Whether the endpoint `arn` carries this executor's managed-by tag.
async fn managed(ctx: &StageCtx<'_>, arn: &str) -> Result<bool, UndeployError> {
    let out = ctx
        .aws
        .sagemaker
        .list_tags()
        .resource_arn(arn)
        .max_results(100)
        .send()
        .await
        .map_err(|e| UndeployError::Call(AwsCallError::new("ListTags", e)))?;
    Ok(out
        .tags()
        .iter()
        .any(|t| t.key() == Some("managed-by") && t.value() == Some(crate::MANAGED_BY)))
}

/// Deletes every one of `items` with `delete`; absent ones count as done. Returns how many
/// were deleted.
async fn delete_all<F, Fut, O, E>(
    ctx: &StageCtx<'_>,
    what: &str,
    items: &[Owned],
    delete: F,
) -> Result<usize, UndeployError>
where
    F: Fn(&str) -> Fut,
    Fut: Future<
        Output = Result<
            O,
            aws_sdk_sagemaker::error::SdkError<E, aws_smithy_runtime_api::http::Response>,
        >,
    >,
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
{
    let mut n = 0;
    for item in items {
        match delete(&item.name).await {
            Ok(_) => {
                ctx.log.line(&format!("Deleted {what} {}", item.name));
                n += 1;
            }
            Err(e) if code(&e) == Some("ValidationException") => {}
            Err(e) => {
                let op = if what == "model" {
                    "DeleteModel"
                } else {
                    "DeleteEndpointConfig"
                };
                return Err(UndeployError::Call(AwsCallError::new(op, e)));
            }
        }
    }
    Ok(n)
}

/// Waits until DescribeEndpoint no longer finds `name`.
async fn wait_gone(ctx: &StageCtx<'_>, name: &str) -> Result<(), UndeployError> {
    let mut w = GoneWatch {
        client: ctx.aws.polling.sagemaker.clone(),
        endpoint: name.to_owned(),
        last: None,
        log: ctx.log.clone(),
    };
    let followed = watch::follow(
        &mut w,
        watch::Options::new(crate::deploy::cadence(), ctx.cancel)
            .with_deadline(Instant::now() + DELETE_TIMEOUT),
        None,
    )
    .await;
    match followed {
        Ok(Followed::Done((), _)) => Ok(()),
        Ok(Followed::Cancelled(_)) => Err(UndeployError::Cancelled(name.to_owned())),
        Ok(Followed::TimedOut(_)) => Err(UndeployError::TimedOut(name.to_owned())),
        Err(source) => Err(UndeployError::Follow {
            endpoint: name.to_owned(),
            source,
        }),
    }
}

/// Follows an endpoint until it is gone: the status is its status, `None` once it is gone.
#[derive(Debug)]
struct GoneWatch {
    client: aws_sdk_sagemaker::Client,
    endpoint: String,
    last: Option<String>,
    log: JobLog,
}

impl Watched for GoneWatch {
    type Status = Option<String>;
    type Done = ();
    type Error = AwsCallError;

    fn describe(&self) -> Describe<Option<String>, AwsCallError> {
        let request = self
            .client
            .describe_endpoint()
            .endpoint_name(&self.endpoint);
        Box::pin(async move {
            match request.send().await {
                Ok(out) => Ok(Some(
                    out.endpoint_status()
                        .map(|s| s.as_str())
                        .unwrap_or("?")
                        .to_owned(),
                )),
                Err(e) if code(&e) == Some("ValidationException") => Ok(None),
                Err(e) => Err(AwsCallError::new("DescribeEndpoint", e)),
            }
        })
    }

    fn observe(&mut self, status: &Option<String>) -> bool {
        if *status != self.last {
            if let Some(s) = status {
                self.log.line(&format!("Endpoint {}: {s}", self.endpoint));
            }
            self.last = status.clone();
            return true;
        }
        false
    }

    fn judge(&self, status: &Option<String>) -> Option<()> {
        status.is_none().then_some(())
    }

    fn warn(&mut self, text: &str) {
        self.log.warn(text);
    }
}
