//! The Model Registry calls of a registration: the group (created if missing, tagged), the
//! package version (created once per job: found again through the state file or its job id in
//! the customer metadata, and created with the stage's name as ClientToken), its approval, and a
//! wait until SageMaker has finished creating it.

use std::collections::HashMap;

use aws_sdk_sagemaker::operation::describe_model_package::DescribeModelPackageOutput;
use aws_sdk_sagemaker::types::{
    InferenceSpecification, MetadataProperties, MetricsSource, ModelApprovalStatus, ModelMetrics,
    ModelPackageContainerDefinition, ModelPackageStatus, ModelQuality, SortBy, SortOrder, Tag,
};

use super::RegisterError;
use super::gates::Status;
use crate::aws::errors::{AwsCallError, Retry, code};
use crate::ctx::StageCtx;
use crate::settings::RegisterSettings;
use crate::watch::{Describe, Watched};

/// The customer metadata key that ties a version to the job that created it.
pub const JOB_KEY: &str = "gitlab:job-id";
/// How many recent versions are looked through for one created by this job.
const LOOKBACK: i32 = 20;

/// The job's tags for every resource.
fn tags(ctx: &StageCtx<'_>) -> Vec<Tag> {
    ctx.resource_tags()
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// Creates the group when it does not exist.
pub async fn ensure_group(ctx: &StageCtx<'_>, group: &str) -> Result<bool, RegisterError> {
    match ctx
        .aws
        .sagemaker
        .describe_model_package_group()
        .model_package_group_name(group)
        .send()
        .await
    {
        Ok(_) => return Ok(false),
        Err(e) if code(&e) == Some("ValidationException") => {}
        Err(e) => {
            return Err(RegisterError::Aws(AwsCallError::new(
                "DescribeModelPackageGroup",
                e,
            )));
        }
    }
    match ctx
        .aws
        .sagemaker
        .create_model_package_group()
        .model_package_group_name(group)
        .model_package_group_description(format!(
            "Models of {} registered by sagemaker-executor",
            ctx.job.project_path
        ))
        .set_tags(Some(tags(ctx)))
        .send()
        .await
    {
        Ok(_) => Ok(true),
        // Created by a concurrent job meanwhile: it exists, which is all we need.
        Err(e) if code(&e) == Some("ValidationException") => Ok(false),
        Err(e) => Err(RegisterError::Aws(AwsCallError::new(
            "CreateModelPackageGroup",
            e,
        ))),
    }
}

/// Describes a version.
pub async fn describe(
    ctx: &StageCtx<'_>,
    arn: &str,
) -> Result<DescribeModelPackageOutput, RegisterError> {
    ctx.aws
        .sagemaker
        .describe_model_package()
        .model_package_name(arn)
        .send()
        .await
        .map_err(|e| RegisterError::Aws(AwsCallError::new("DescribeModelPackage", e)))
}

/// The version this job created earlier, if any: among the group's most recent versions, the one
/// whose customer metadata names this job.
pub async fn find_own(ctx: &StageCtx<'_>, group: &str) -> Result<Option<String>, RegisterError> {
    let listed = ctx
        .aws
        .sagemaker
        .list_model_packages()
        .model_package_group_name(group)
        .sort_by(SortBy::CreationTime.as_str().into())
        .sort_order(SortOrder::Descending)
        .max_results(LOOKBACK)
        .send()
        .await
        .map_err(|e| RegisterError::Aws(AwsCallError::new("ListModelPackages", e)))?;
    let job_id = ctx.job.id.to_string();
    for summary in listed.model_package_summary_list() {
        let Some(arn) = summary.model_package_arn() else {
            continue;
        };
        let d = describe(ctx, arn).await?;
        if d.customer_metadata_properties()
            .and_then(|m| m.get(JOB_KEY))
            .is_some_and(|v| *v == job_id)
        {
            return Ok(Some(arn.to_owned()));
        }
    }
    Ok(None)
}

/// What the new version carries besides the settings.
pub struct NewVersion<'a> {
    /// The stage's deterministic name: the ClientToken.
    pub token: &'a str,
    /// Where the metrics JSON was uploaded.
    pub metrics_uri: Option<&'a str>,
    /// Gate summary for the customer metadata.
    pub gates: &'a str,
}

/// Creates the version (pending approval).
pub async fn create(
    ctx: &StageCtx<'_>,
    s: &RegisterSettings,
    new: &NewVersion<'_>,
) -> Result<String, RegisterError> {
    let container = ModelPackageContainerDefinition::builder()
        .image(&s.image)
        .model_data_url(&s.model_data)
        .build();
    let inference = InferenceSpecification::builder()
        .containers(container)
        .set_supported_content_types(Some(s.content_types.clone()))
        .set_supported_response_mime_types(Some(s.content_types.clone()))
        .build();
    let metadata = MetadataProperties::builder()
        .commit_id(&ctx.job.sha)
        .repository(
            ctx.job
                .variables
                .get("CI_PROJECT_URL")
                .unwrap_or(ctx.job.project_path.as_str()),
        )
        .generated_by(&ctx.job.url)
        .project_id(&ctx.job.project_path)
        .build();
    let mut customer: HashMap<String, String> = HashMap::new();
    customer.insert(JOB_KEY.to_owned(), ctx.job.id.to_string());
    customer.insert(
        "gitlab:pipeline-id".to_owned(),
        ctx.job.pipeline_id.to_string(),
    );
    customer.insert(
        "gitlab:ref".to_owned(),
        crate::job::tag_value(&ctx.job.git_ref),
    );
    customer.insert("gates".to_owned(), crate::excerpt::plain(new.gates, 250));
    let mut request = ctx
        .aws
        .sagemaker
        .create_model_package()
        .model_package_group_name(&s.group)
        .inference_specification(inference)
        .model_approval_status(ModelApprovalStatus::PendingManualApproval)
        .metadata_properties(metadata)
        .set_customer_metadata_properties(Some(customer))
        .client_token(new.token)
        .set_tags(Some(tags(ctx)));
    if let Some(d) = &s.description {
        request = request.model_package_description(d);
    }
    if let Some(uri) = new.metrics_uri {
        let source = MetricsSource::builder()
            .content_type("application/json")
            .s3_uri(uri)
            .build();
        request = request.model_metrics(
            ModelMetrics::builder()
                .model_quality(ModelQuality::builder().statistics(source).build())
                .build(),
        );
    }
    let out = request
        .send()
        .await
        .map_err(|e| RegisterError::Aws(AwsCallError::new("CreateModelPackage", e)))?;
    out.model_package_arn()
        .map(str::to_owned)
        .ok_or(RegisterError::Malformed(
            "CreateModelPackage returned no ARN",
        ))
}

/// Sets the version's approval with the reason as its approval description.
pub async fn approve(
    ctx: &StageCtx<'_>,
    arn: &str,
    status: Status,
    reason: &str,
) -> Result<(), RegisterError> {
    ctx.aws
        .sagemaker
        .update_model_package()
        .model_package_arn(arn)
        .model_approval_status(status.as_sagemaker().into())
        .approval_description(crate::excerpt::plain(reason, 1000))
        .send()
        .await
        .map_err(|e| RegisterError::Aws(AwsCallError::new("UpdateModelPackage", e)))?;
    Ok(())
}

/// Waits for SageMaker to finish creating a version (`ModelPackageStatus` Completed or Failed).
pub struct VersionWatch {
    client: aws_sdk_sagemaker::Client,
    arn: String,
}

impl VersionWatch {
    /// Watches `arn` with a polling client.
    pub fn new(client: aws_sdk_sagemaker::Client, arn: &str) -> VersionWatch {
        VersionWatch {
            client,
            arn: arn.to_owned(),
        }
    }
}

impl Watched for VersionWatch {
    type Status = DescribeModelPackageOutput;
    type Done = DescribeModelPackageOutput;
    type Error = AwsCallError;

    fn describe(&self) -> Describe<DescribeModelPackageOutput, AwsCallError> {
        let request = self
            .client
            .describe_model_package()
            .model_package_name(&self.arn);
        Box::pin(async move {
            request
                .send()
                .await
                .map_err(|e| AwsCallError::new("DescribeModelPackage", e))
        })
    }

    fn observe(&mut self, _status: &DescribeModelPackageOutput) -> bool {
        false
    }

    fn judge(&self, d: &DescribeModelPackageOutput) -> Option<DescribeModelPackageOutput> {
        match d.model_package_status() {
            Some(ModelPackageStatus::Completed | ModelPackageStatus::Failed) | None => {
                Some(d.clone())
            }
            Some(_) => None,
        }
    }

    fn warn(&mut self, _text: &str) {}
}

/// A Failed version's reason, as an error that is not retried.
pub fn failed(d: &DescribeModelPackageOutput) -> Option<AwsCallError> {
    (d.model_package_status() == Some(&ModelPackageStatus::Failed)).then(|| {
        let reason = d
            .model_package_status_details()
            .map(|s| format!("{s:?}"))
            .unwrap_or_else(|| "no details".to_owned());
        AwsCallError::other(
            "CreateModelPackage",
            format!(
                "SageMaker failed to create the version: {}",
                crate::excerpt::plain(&reason, 300)
            ),
            Retry::Permanent,
        )
    })
}
