//! Staging and CreateTrainingJob: the workspace channel, the bootstrap entrypoint, resources,
//! stopping condition, managed spot with checkpoints, metric definitions, warm pool and tags.

use aws_sdk_sagemaker::types::{
    AlgorithmSpecification, Channel, CheckpointConfig, DataSource, MetricDefinition,
    OutputDataConfig, ResourceConfig, S3DataDistribution, S3DataSource, S3DataType,
    StoppingCondition, Tag, TrainingInputMode,
};

use super::TrainError;
use crate::aws::errors::AwsCallError;
use crate::ctx::StageCtx;
use crate::settings::{TrainSettings, WORKSPACE_CHANNEL};
use crate::workspace::StagingLocation;

/// Where the channel appears inside the container.
fn channel_dir() -> String {
    format!("/opt/ml/input/data/{WORKSPACE_CHANNEL}")
}

/// An input channel in File mode: an S3 prefix, or a manifest of objects.
fn channel(channel: &str, uri: &str, kind: S3DataType) -> Channel {
    let source = S3DataSource::builder()
        .s3_data_type(kind)
        .s3_uri(uri)
        .s3_data_distribution_type(S3DataDistribution::FullyReplicated)
        .build();
    Channel::builder()
        .channel_name(channel)
        .input_mode(TrainingInputMode::File)
        .data_source(DataSource::builder().s3_data_source(source).build())
        .build()
}

/// Whether CreateTrainingJob's error `code` says a job of that name exists already.
fn name_taken(code: Option<&str>) -> bool {
    code == Some("ResourceInUse")
}

/// Builds and sends CreateTrainingJob for `name`, with its output under `output_path`.
pub async fn create(
    run: &StageCtx<'_>,
    name: &str,
    t: &TrainSettings,
    loc: &StagingLocation,
    output_path: &str,
) -> Result<String, TrainError> {
    let sm = &run.aws.sagemaker;
    // Every host gets the whole workspace and every input. The workspace comes through the
    // staged manifest, read without listing the staging prefix.
    let workspace = format!(
        "s3://{}/{}",
        loc.bucket,
        loc.key(crate::workspace::CHANNEL_MANIFEST)
    );
    let mut channels = vec![channel(
        WORKSPACE_CHANNEL,
        &workspace,
        S3DataType::ManifestFile,
    )];
    for (channel, uri) in &t.inputs {
        channels.push(self::channel(channel, uri, S3DataType::S3Prefix));
    }

    let metric_definitions = t
        .metrics
        .iter()
        .map(|(n, re)| MetricDefinition::builder().name(n).regex(re).build())
        .collect::<Vec<_>>();
    let algorithm = AlgorithmSpecification::builder()
        .training_image(&t.image)
        .training_input_mode(TrainingInputMode::File)
        .container_entrypoint("/bin/sh")
        .container_arguments(format!("{}/{}", channel_dir(), crate::workspace::BOOTSTRAP))
        .container_arguments(channel_dir())
        .set_metric_definitions(Some(metric_definitions).filter(|m| !m.is_empty()))
        .build();

    let mut resources = ResourceConfig::builder()
        .instance_type(t.instance_type.as_str().into())
        .instance_count(i32::try_from(t.instance_count).unwrap_or(i32::MAX))
        .volume_size_in_gb(i32::try_from(t.volume_size_gb).unwrap_or(i32::MAX));
    if let Some(k) = t.keep_alive {
        resources =
            resources.keep_alive_period_in_seconds(i32::try_from(k.as_secs()).unwrap_or(3600));
    }
    let secs = |d: std::time::Duration| i32::try_from(d.as_secs()).unwrap_or(i32::MAX);
    let mut stopping = StoppingCondition::builder().max_runtime_in_seconds(secs(t.max_runtime));
    if let Some(spot) = &t.spot {
        stopping = stopping.max_wait_time_in_seconds(secs(spot.max_wait));
    }

    let mut tags: Vec<Tag> = run
        .resource_tags()
        .into_iter()
        .chain(t.tags.iter().map(|(k, v)| (k.clone(), v.clone())))
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    tags.truncate(50);

    let mut req = sm
        .create_training_job()
        .training_job_name(name)
        .algorithm_specification(algorithm)
        .role_arn(&t.role_arn)
        .set_input_data_config(Some(channels))
        .output_data_config(
            OutputDataConfig::builder()
                .s3_output_path(output_path)
                .set_kms_key_id(run.cfg.staging.kms_key_id.clone())
                .build(),
        )
        .resource_config(resources.build())
        .stopping_condition(stopping.build())
        .set_tags(Some(tags));
    if let Some(spot) = &t.spot {
        req = req.enable_managed_spot_training(true).checkpoint_config(
            CheckpointConfig::builder()
                .s3_uri(&spot.checkpoint_s3_uri)
                .local_path("/opt/ml/checkpoints")
                .build(),
        );
    }
    match req.send().await {
        Ok(out) => Ok(out.training_job_arn().unwrap_or_default().to_owned()),
        // A retried call whose first attempt reached SageMaker (its answer was lost): the job is
        // ours (the name is this stage's), so attach to it instead of failing. SageMaker answers
        // a duplicate training job name with `ResourceInUse`.
        Err(e) if name_taken(crate::aws::errors::code(&e)) => {
            let d = sm
                .describe_training_job()
                .training_job_name(name)
                .send()
                .await
                .map_err(|e| TrainError::Describe(AwsCallError::new("DescribeTrainingJob", e)))?;
            Ok(d.training_job_arn().unwrap_or_default().to_owned())
        }
        Err(e) => Err(TrainError::Create(AwsCallError::new(
            "CreateTrainingJob",
            e,
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::name_taken;

    #[test]
    fn only_resource_in_use_means_the_name_is_taken() {
        // What SageMaker answers a duplicate name with (a retried create whose answer was lost).
        assert!(name_taken(Some("ResourceInUse")));
        // A malformed request is not an existing job.
        assert!(!name_taken(Some("ValidationException")));
        assert!(!name_taken(Some("ResourceLimitExceeded")));
        assert!(!name_taken(None));
    }
}
