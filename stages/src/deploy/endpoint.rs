//! The SageMaker side of a deployment, one call each: which model package to deploy (and
//! whether it may go to this endpoint), the endpoint as it stands, the names and tags of what a
//! deployment creates, the Model, EndpointConfig and Endpoint requests, and finding what this
//! executor created for an endpoint (for undeploy and for discarding a failed deployment).

use aws_sdk_sagemaker::operation::describe_endpoint::DescribeEndpointOutput;
use aws_sdk_sagemaker::types::{
    Alarm, AutoRollbackConfig, BlueGreenUpdatePolicy, CapacitySize, CapacitySizeType, CaptureMode,
    CaptureOption, ContainerDefinition, DataCaptureConfig, DeploymentConfig, ModelApprovalStatus,
    ModelPackageSortBy, ProductionVariant, ProductionVariantInstanceType,
    ProductionVariantServerlessConfig, SortOrder, Tag, TrafficRoutingConfig,
    TrafficRoutingConfigType,
};

use crate::aws::errors::{AwsCallError, code};
use crate::ctx::StageCtx;
use crate::names::resource_name;
use crate::settings::{Capacity, DeploySettings, ModelSource, Strategy};

/// The tag naming the endpoint a model or endpoint config was created for: undeploy finds what
/// to delete by it (names are cut to 63 characters, tags are exact).
pub const ENDPOINT_TAG: &str = "sagemaker-executor:endpoint";

/// Tag saying whether a deployment's resources are a merge request's `candidate` or the
/// `stable` endpoint's: `gc` sweeps old candidates, never a stable endpoint.
pub const DEPLOYMENT_TAG: &str = "sagemaker-executor:deployment";

/// The one production variant a deployment creates.
pub const VARIANT: &str = "AllTraffic";

/// The name of the model and of the endpoint config a deployment creates: the endpoint's name
/// (lowercased: SageMaker lowercases them in ARNs) and the job (and step) that deployed, so every
/// deployment's are new and a re-run of the stage finds its own.
pub fn deploy_name(endpoint: &str, job_id: u64, stage: &str) -> String {
    let job = resource_name(0, job_id, stage);
    let suffix = job.strip_prefix("gl-0-").unwrap_or(&job);
    let suffix = format!("-{suffix}");
    let head: String = endpoint
        .to_ascii_lowercase()
        .chars()
        .take(63usize.saturating_sub(suffix.len()))
        .collect();
    format!("{}{suffix}", head.trim_end_matches('-'))
}

/// What names of an endpoint's models and configs contain (for `NameContains`; the tag decides).
pub fn name_prefix(endpoint: &str) -> String {
    endpoint.to_ascii_lowercase().chars().take(40).collect()
}

/// The job's tags plus [`ENDPOINT_TAG`] and [`DEPLOYMENT_TAG`].
pub fn tags(ctx: &StageCtx<'_>, endpoint: &str, stable: bool) -> Vec<Tag> {
    let mut tags: Vec<Tag> = ctx
        .resource_tags()
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    tags.push(Tag::builder().key(ENDPOINT_TAG).value(endpoint).build());
    tags.push(
        Tag::builder()
            .key(DEPLOYMENT_TAG)
            .value(if stable { "stable" } else { "candidate" })
            .build(),
    );
    tags
}

/// The SageMaker console page of an endpoint.
pub fn console_url(region: &str, endpoint: &str) -> String {
    format!(
        "{}/sagemaker/home?region={region}#/endpoints/{endpoint}",
        crate::names::console_origin(region)
    )
}

/// The package a deployment serves, with its approval status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Its ARN.
    pub arn: String,
    /// `Approved`, `PendingManualApproval` or `Rejected`.
    pub status: String,
}

/// Why the package cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// A call failed.
    #[error(transparent)]
    Call(#[from] AwsCallError),
    /// The group has no Approved version.
    #[error(
        "model package group {0} has no Approved version (SAGEMAKER_MODEL_PACKAGE_GROUP): approve one, or name a version with SAGEMAKER_MODEL_PACKAGE"
    )]
    NoneApproved(String),
    /// The package's approval status does not allow this endpoint.
    #[error("model package {arn} is {status}: {why}")]
    NotAllowed {
        /// The package.
        arn: String,
        /// Its status.
        status: String,
        /// The rule.
        why: String,
    },
}

/// Finds the package to deploy and checks that its approval allows this endpoint: `Approved`
/// always, `PendingManualApproval` only on a candidate whose policy allows it, `Rejected` never.
pub async fn package(ctx: &StageCtx<'_>, d: &DeploySettings) -> Result<Package, PackageError> {
    let sm = &ctx.aws.sagemaker;
    let pkg = match &d.model {
        ModelSource::Package(arn) => {
            let out = sm
                .describe_model_package()
                .model_package_name(arn)
                .send()
                .await
                .map_err(|e| AwsCallError::new("DescribeModelPackage", e))?;
            Package {
                arn: out.model_package_arn().unwrap_or(arn).to_owned(),
                status: out
                    .model_approval_status()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_else(|| "unknown".to_owned()),
            }
        }
        ModelSource::LatestApproved(group) => {
            let mut best: Option<(i32, String)> = None;
            let mut pages = sm
                .list_model_packages()
                .model_package_group_name(group)
                .model_approval_status(ModelApprovalStatus::Approved)
                .sort_by(ModelPackageSortBy::CreationTime)
                .sort_order(SortOrder::Descending)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| AwsCallError::new("ListModelPackages", e))?;
                for p in page.model_package_summary_list() {
                    let version = p.model_package_version().unwrap_or(0);
                    if let Some(arn) = p.model_package_arn()
                        && best.as_ref().is_none_or(|(v, _)| version > *v)
                    {
                        best = Some((version, arn.to_owned()));
                    }
                }
            }
            let Some((_, arn)) = best else {
                return Err(PackageError::NoneApproved(group.clone()));
            };
            Package {
                arn,
                status: "Approved".to_owned(),
            }
        }
    };
    let why = match pkg.status.as_str() {
        "Approved" => None,
        "PendingManualApproval" if d.allow_unapproved => None,
        "PendingManualApproval" if d.stable => Some(format!(
            "endpoint {} is stable and serves Approved packages only",
            d.endpoint
        )),
        "PendingManualApproval" => Some(
            "only Approved packages are deployed (policy.deploy.unapproved_to_candidates = false)"
                .to_owned(),
        ),
        _ => Some("only Approved packages are deployed".to_owned()),
    };
    match why {
        None => Ok(pkg),
        Some(why) => Err(PackageError::NotAllowed {
            arn: pkg.arn,
            status: pkg.status,
            why,
        }),
    }
}

/// The endpoint as SageMaker describes it, `None` when it does not exist.
pub async fn describe(
    ctx: &StageCtx<'_>,
    endpoint: &str,
) -> Result<Option<DescribeEndpointOutput>, AwsCallError> {
    match ctx
        .aws
        .sagemaker
        .describe_endpoint()
        .endpoint_name(endpoint)
        .send()
        .await
    {
        Ok(out) => Ok(Some(out)),
        // SageMaker answers "Could not find endpoint" with a ValidationException.
        Err(e) if code(&e) == Some("ValidationException") => Ok(None),
        Err(e) => Err(AwsCallError::new("DescribeEndpoint", e)),
    }
}

/// Whether a create call failed because its name exists already (a re-run of the stage).
pub fn already_exists(e: &AwsCallError) -> bool {
    e.code() == Some("ValidationException") && e.to_string().contains("already exist")
}

/// CreateModel: the package's inference containers under `name`; returns its ARN.
pub async fn create_model(
    ctx: &StageCtx<'_>,
    d: &DeploySettings,
    name: &str,
    package_arn: &str,
) -> Result<String, AwsCallError> {
    let out = ctx
        .aws
        .sagemaker
        .create_model()
        .model_name(name)
        .execution_role_arn(&d.role_arn)
        .containers(
            ContainerDefinition::builder()
                .model_package_name(package_arn)
                .build(),
        )
        .set_tags(Some(tags(ctx, &d.endpoint, d.stable)))
        .send()
        .await
        .map_err(|e| AwsCallError::new("CreateModel", e))?;
    Ok(out.model_arn().unwrap_or(name).to_owned())
}

/// CreateEndpointConfig: one variant of model `name` on the settings' capacity, with data
/// capture when asked; returns its ARN.
pub async fn create_config(
    ctx: &StageCtx<'_>,
    d: &DeploySettings,
    name: &str,
) -> Result<String, AwsCallError> {
    let variant = ProductionVariant::builder()
        .variant_name(VARIANT)
        .model_name(name)
        .initial_variant_weight(1.0);
    let variant = match &d.capacity {
        Capacity::Instances {
            instance_type,
            count,
        } => variant
            .instance_type(ProductionVariantInstanceType::from(instance_type.as_str()))
            .initial_instance_count(i32::try_from(*count).unwrap_or(i32::MAX)),
        Capacity::Serverless {
            memory_mb,
            max_concurrency,
        } => variant.serverless_config(
            ProductionVariantServerlessConfig::builder()
                .memory_size_in_mb(i32::try_from(*memory_mb).unwrap_or(i32::MAX))
                .max_concurrency(i32::try_from(*max_concurrency).unwrap_or(i32::MAX))
                .build(),
        ),
    };
    let capture = d.data_capture.as_ref().map(|uri| {
        DataCaptureConfig::builder()
            .enable_capture(true)
            .initial_sampling_percentage(100)
            .destination_s3_uri(format!("{uri}/{}", d.endpoint))
            .capture_options(
                CaptureOption::builder()
                    .capture_mode(CaptureMode::Input)
                    .build(),
            )
            .capture_options(
                CaptureOption::builder()
                    .capture_mode(CaptureMode::Output)
                    .build(),
            )
            .build()
    });
    let out = ctx
        .aws
        .sagemaker
        .create_endpoint_config()
        .endpoint_config_name(name)
        .production_variants(variant.build())
        .set_data_capture_config(capture)
        .set_tags(Some(tags(ctx, &d.endpoint, d.stable)))
        .send()
        .await
        .map_err(|e| AwsCallError::new("CreateEndpointConfig", e))?;
    Ok(out.endpoint_config_arn().unwrap_or(name).to_owned())
}

/// The blue/green DeploymentConfig of an update: the strategy's traffic routing, the
/// termination wait and the alarms that roll it back.
pub fn deployment_config(d: &DeploySettings) -> DeploymentConfig {
    let secs = |w: &std::time::Duration| i32::try_from(w.as_secs()).unwrap_or(3600);
    let percent = |p: u8| {
        CapacitySize::builder()
            .r#type(CapacitySizeType::CapacityPercent)
            .value(i32::from(p))
            .build()
    };
    let routing = match &d.strategy {
        Strategy::AllAtOnce { wait } => TrafficRoutingConfig::builder()
            .r#type(TrafficRoutingConfigType::AllAtOnce)
            .wait_interval_in_seconds(secs(wait)),
        Strategy::Canary { percent: p, wait } => TrafficRoutingConfig::builder()
            .r#type(TrafficRoutingConfigType::Canary)
            .wait_interval_in_seconds(secs(wait))
            .canary_size(percent(*p)),
        Strategy::Linear { percent: p, wait } => TrafficRoutingConfig::builder()
            .r#type(TrafficRoutingConfigType::Linear)
            .wait_interval_in_seconds(secs(wait))
            .linear_step_size(percent(*p)),
    };
    let mut config = DeploymentConfig::builder().blue_green_update_policy(
        BlueGreenUpdatePolicy::builder()
            .traffic_routing_configuration(routing.build())
            .termination_wait_in_seconds(secs(&d.termination_wait))
            .build(),
    );
    if !d.alarms.is_empty() {
        let mut rollback = AutoRollbackConfig::builder();
        for a in &d.alarms {
            rollback = rollback.alarms(Alarm::builder().alarm_name(a).build());
        }
        config = config.auto_rollback_configuration(rollback.build());
    }
    config.build()
}

/// One model or endpoint config this executor created for an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Owned {
    /// Its name.
    pub name: String,
    /// Its ARN.
    pub arn: String,
    /// When it was created.
    pub created: Option<aws_smithy_types::DateTime>,
}

/// Whether the resource `arn` carries [`ENDPOINT_TAG`] = `endpoint` and this executor's
/// managed-by tag.
async fn tagged_for(ctx: &StageCtx<'_>, arn: &str, endpoint: &str) -> Result<bool, AwsCallError> {
    let mut pages = ctx
        .aws
        .sagemaker
        .list_tags()
        .resource_arn(arn)
        .into_paginator()
        .send();
    let (mut ours, mut managed) = (false, false);
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(p) => p,
            // Deleted meanwhile: not ours to delete any more.
            Err(e) if code(&e) == Some("ValidationException") => return Ok(false),
            Err(e) => return Err(AwsCallError::new("ListTags", e)),
        };
        for t in page.tags() {
            ours |= t.key() == Some(ENDPOINT_TAG) && t.value() == Some(endpoint);
            managed |= t.key() == Some("managed-by") && t.value() == Some(crate::MANAGED_BY);
        }
    }
    Ok(ours && managed)
}

/// The endpoint configs this executor created for `endpoint` (found by name, proven by tag).
pub async fn owned_configs(ctx: &StageCtx<'_>, endpoint: &str) -> Result<Vec<Owned>, AwsCallError> {
    let prefix = name_prefix(endpoint);
    let mut found = Vec::new();
    let mut pages = ctx
        .aws
        .sagemaker
        .list_endpoint_configs()
        .name_contains(&prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| AwsCallError::new("ListEndpointConfigs", e))?;
        for c in page.endpoint_configs() {
            if let (Some(name), Some(arn)) = (c.endpoint_config_name(), c.endpoint_config_arn())
                && name.contains(&prefix)
            {
                found.push(Owned {
                    name: name.to_owned(),
                    arn: arn.to_owned(),
                    created: c.creation_time().copied(),
                });
            }
        }
    }
    let mut owned = Vec::new();
    for c in found {
        if tagged_for(ctx, &c.arn, endpoint).await? {
            owned.push(c);
        }
    }
    Ok(owned)
}

/// The models this executor created for `endpoint` (found by name, proven by tag).
pub async fn owned_models(ctx: &StageCtx<'_>, endpoint: &str) -> Result<Vec<Owned>, AwsCallError> {
    let prefix = name_prefix(endpoint);
    let mut found = Vec::new();
    let mut pages = ctx
        .aws
        .sagemaker
        .list_models()
        .name_contains(&prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| AwsCallError::new("ListModels", e))?;
        for m in page.models() {
            if let (Some(name), Some(arn)) = (m.model_name(), m.model_arn())
                && name.contains(&prefix)
            {
                found.push(Owned {
                    name: name.to_owned(),
                    arn: arn.to_owned(),
                    created: m.creation_time().copied(),
                });
            }
        }
    }
    let mut owned = Vec::new();
    for m in found {
        if tagged_for(ctx, &m.arn, endpoint).await? {
            owned.push(m);
        }
    }
    Ok(owned)
}

/// The configs of `owned` a successful deployment may delete: those created before the
/// previous one, except the current and the previous (kept for a rollback). Configs created
/// after ours may belong to a deployment still starting, so they stay too.
pub fn earlier<'a>(owned: &'a [Owned], current: &str, previous: Option<&str>) -> Vec<&'a Owned> {
    let created = |name: &str| {
        owned
            .iter()
            .find(|o| o.name == name)
            .and_then(|o| o.created)
    };
    let Some(cutoff) = previous.and_then(created).or_else(|| created(current)) else {
        return Vec::new();
    };
    owned
        .iter()
        .filter(|o| o.name != current && Some(o.name.as_str()) != previous)
        .filter(|o| o.created.is_some_and(|c| c.as_nanos() < cutoff.as_nanos()))
        .collect()
}

/// After a successful deployment: deletes the configs (and their models) of deployments
/// before the previous one, so a long-lived endpoint does not collect one of each per deploy.
/// Returns the names deleted; failures only warn (undeploy deletes what is left).
pub async fn prune_earlier(
    ctx: &StageCtx<'_>,
    endpoint: &str,
    current: &str,
    previous: Option<&str>,
) -> Vec<String> {
    let owned = match owned_configs(ctx, endpoint).await {
        Ok(o) => o,
        Err(e) => {
            ctx.log.warn(&format!(
                "cannot list earlier endpoint configs to prune: {e}"
            ));
            return Vec::new();
        }
    };
    let mut pruned = Vec::new();
    for o in earlier(&owned, current, previous) {
        let mut deleted = false;
        // The config first: it names the model of the same name.
        for kind in [
            crate::state::ResourceKind::EndpointConfig,
            crate::state::ResourceKind::Model,
        ] {
            let r = crate::state::Resource::intended(kind, &o.name, Some(endpoint), ctx.stage);
            match crate::resources::release(&ctx.aws, &r, "pruned").await {
                Ok(crate::resources::Released::Stopping(_)) => deleted = true,
                Ok(_) => {}
                Err(e) => ctx.log.warn(&format!(
                    "cannot prune {} {}: {e}",
                    crate::resources::kind_name(kind),
                    o.name
                )),
            }
        }
        if deleted {
            pruned.push(o.name.clone());
        }
    }
    pruned
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_configs_before_the_previous_one_are_pruned() {
        let at = |secs, name: &str| Owned {
            name: name.into(),
            arn: format!("arn:{name}"),
            created: Some(aws_smithy_types::DateTime::from_secs(secs)),
        };
        let owned = [
            at(1, "e-1"),
            at(2, "e-2"),
            at(3, "e-3"),
            at(4, "e-4"),
            at(5, "e-5"),
        ];
        let names = |v: Vec<&Owned>| v.iter().map(|o| o.name.clone()).collect::<Vec<_>>();
        // e-4 is ours, e-3 the previous, e-5 someone else's deployment starting.
        assert_eq!(names(earlier(&owned, "e-4", Some("e-3"))), ["e-1", "e-2"]);
        assert_eq!(names(earlier(&owned, "e-1", None)), Vec::<String>::new());
        assert!(earlier(&owned, "unknown", Some("gone")).is_empty());
    }

    #[test]
    fn deploy_names_are_per_job_and_valid() {
        assert_eq!(
            deploy_name("Churn-Stable", 42, "build_script"),
            "churn-stable-42"
        );
        assert_eq!(
            deploy_name("churn-stable", 42, "step_release"),
            "churn-stable-42-release"
        );
        let long = deploy_name(&format!("{}-x", "a".repeat(61)), u64::MAX, "build_script");
        assert!(long.len() <= 63, "{long}");
        assert!(crate::settings::is_endpoint_name(&long), "{long}");
        assert!(long.ends_with(&format!("-{}", u64::MAX)));
    }

    fn settings(strategy: Strategy, alarms: &[&str]) -> DeploySettings {
        DeploySettings {
            endpoint: "churn-stable".into(),
            stable: true,
            model: ModelSource::LatestApproved("churn".into()),
            allow_unapproved: false,
            capacity: Capacity::Instances {
                instance_type: "ml.m5.large".into(),
                count: 1,
            },
            strategy,
            termination_wait: Duration::from_secs(30),
            alarms: alarms.iter().map(|a| (*a).to_owned()).collect(),
            timeout: Duration::from_secs(600),
            smoke: None,
            data_capture: None,
            keep_failed_endpoint: false,
            role_arn: "arn:aws:iam::123456789012:role/x".into(),
        }
    }

    #[test]
    fn the_strategy_becomes_a_blue_green_policy() {
        let c = deployment_config(&settings(
            Strategy::Canary {
                percent: 10,
                wait: Duration::from_secs(300),
            },
            &["p99-latency", "errors"],
        ));
        let bg = c.blue_green_update_policy().expect("blue/green");
        let routing = bg.traffic_routing_configuration().expect("routing");
        assert_eq!(routing.r#type(), Some(&TrafficRoutingConfigType::Canary));
        assert_eq!(routing.wait_interval_in_seconds(), Some(300));
        assert_eq!(routing.canary_size().and_then(|s| s.value()), Some(10));
        assert_eq!(bg.termination_wait_in_seconds(), Some(30));
        let alarms: Vec<_> = c
            .auto_rollback_configuration()
            .map(|a| a.alarms().iter().filter_map(|x| x.alarm_name()).collect())
            .unwrap_or_default();
        assert_eq!(alarms, ["p99-latency", "errors"]);
        let c = deployment_config(&settings(
            Strategy::AllAtOnce {
                wait: Duration::ZERO,
            },
            &[],
        ));
        assert!(c.auto_rollback_configuration().is_none());
    }
}
