//! The `register` action: the trained model goes into the SageMaker Model Registry as a new
//! version, approved only when its metrics clear the gates; a release bundle is left in the
//! project dir. The job's `script:` is not executed.
//!
//! Flow: read the metrics (a workspace file, else the upstream final metrics) and evaluate the
//! gates before anything is created (a gate naming a metric no source has fails the job there);
//! decide the approval ([`gates::decide`]); create the group if missing; find this job's version
//! (state file, else its job id in the customer metadata) or upload the metrics next to the
//! model and create it (recorded Intended before, with the stage's name as ClientToken, so a
//! re-run never makes a second version); wait until SageMaker finished it; set the approval with
//! the reason; write the bundle; hand on the package's ARN, version, approval and gate results.

mod bundle;
mod gates;
mod metrics;
mod package;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_s3::types::ServerSideEncryption;
use serde_json::json;

use crate::aws::errors::AwsCallError;
use crate::ctx::StageCtx;
use crate::failure::{Classify, FailureKind};
use crate::names::split_s3_uri;
use crate::outputs::Outputs;
use crate::project_files::ProjectDir;
use crate::settings::RegisterSettings;
use crate::state::{Resource, ResourceKind, StateError};
use crate::watch::{self, Cadence, Followed, WatchError};
pub use bundle::BundleError;
pub use gates::{Decision, GateResult, Status};
pub use metrics::MetricsError;

/// How long SageMaker may take to finish creating a version.
const CREATE_DEADLINE: Duration = Duration::from_secs(600);

/// Why a register stage failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The metrics file is unusable.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// A gate names a metric no source has.
    #[error(
        "SAGEMAKER_APPROVAL_GATES: no value for {}: neither {} nor the upstream SAGEMAKER_FINAL_METRIC_* variables have it",
        .missing.join(", "), .source_name
    )]
    MissingMetric {
        /// The gates without a value.
        missing: Vec<String>,
        /// Where metrics were looked for.
        source_name: String,
    },
    /// A Model Registry or S3 call failed.
    #[error("{0}")]
    Aws(#[source] AwsCallError),
    /// AWS answered without a field it always sends.
    #[error("unexpected answer from SageMaker: {0}")]
    Malformed(&'static str),
    /// Waiting for the version failed.
    #[error("waiting for the model package version: {0}")]
    Wait(#[source] WatchError<AwsCallError>),
    /// The job was cancelled during the step this names.
    #[error("cancelled while {0}")]
    Cancelled(String),
    /// The state file could not be written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The release bundle could not be written.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A gate failed and `SAGEMAKER_GATE_FAILURE=fail`; the version exists, pending.
    #[error("{reason}")]
    GatesFailed {
        /// Why.
        reason: String,
        /// What the job still hands on.
        outputs: Box<Outputs>,
    },
}

impl Classify for RegisterError {
    fn failure_kind(&self) -> FailureKind {
        match self {
            RegisterError::Metrics(MetricsError::Read(e)) if !e.is_jobs_fault() => {
                FailureKind::System
            }
            RegisterError::Metrics(_)
            | RegisterError::MissingMetric { .. }
            | RegisterError::Cancelled(_)
            | RegisterError::GatesFailed { .. }
            | RegisterError::Bundle(BundleError::TooLarge { .. } | BundleError::Missing(_)) => {
                FailureKind::Build
            }
            RegisterError::Bundle(BundleError::Write(e)) if e.is_jobs_fault() => FailureKind::Build,
            // SageMaker validates the job's own values (image, model data) on create.
            RegisterError::Aws(e) if e.code() == Some("ValidationException") => FailureKind::Build,
            RegisterError::Aws(_)
            | RegisterError::Malformed(_)
            | RegisterError::Wait(_)
            | RegisterError::State(_)
            | RegisterError::Bundle(_) => FailureKind::System,
        }
    }

    fn script_exit_code(&self) -> Option<i32> {
        match self {
            RegisterError::Metrics(_)
            | RegisterError::MissingMetric { .. }
            | RegisterError::Aws(_)
            | RegisterError::Malformed(_)
            | RegisterError::Wait(_)
            | RegisterError::Cancelled(_)
            | RegisterError::State(_)
            | RegisterError::Bundle(_)
            | RegisterError::GatesFailed { .. } => None,
        }
    }
}

impl RegisterError {
    /// What a failed registration still hands on.
    pub fn outputs(&self) -> Option<&Outputs> {
        match self {
            RegisterError::GatesFailed { outputs, .. } => Some(outputs),
            RegisterError::Metrics(_)
            | RegisterError::MissingMetric { .. }
            | RegisterError::Aws(_)
            | RegisterError::Malformed(_)
            | RegisterError::Wait(_)
            | RegisterError::Cancelled(_)
            | RegisterError::State(_)
            | RegisterError::Bundle(_) => None,
        }
    }
}

/// The SageMaker console page of a version.
pub fn console_url(region: &str, group: &str, version: i32) -> String {
    format!(
        "{}/sagemaker/home?region={region}#/model-registry/model-package-groups/{group}/versions/{version}",
        crate::names::console_origin(region)
    )
}

/// Runs the stage as a registration.
///
/// # Errors
/// See [`RegisterError`].
pub async fn run(ctx: &StageCtx<'_>, s: &RegisterSettings) -> Result<Outputs, RegisterError> {
    let log = &ctx.log;
    log.notice(&format!(
        "register: the job's script is not executed; registering {} with image {} in model package group {}",
        s.model_data, s.image, s.group
    ));

    // Everything the job controls is checked before anything is created.
    let project = ProjectDir::open(ctx.project_dir)
        .map_err(|e| RegisterError::Metrics(MetricsError::Read(e)))?;
    // The bundle is written after the version exists; a `release` the repository planted as a
    // link out (or a file) must fail the job before anything is created.
    project
        .ensure_dir(bundle::RELEASE_DIR)
        .map_err(|e| RegisterError::Bundle(BundleError::Write(e)))?;
    if s.bundle_model
        && let Some(location) = split_s3_uri(&s.model_data)
    {
        bundle::check_model(&ctx.aws.s3, location, s.max_bundle_bytes).await?;
    }
    let (metrics, source_name) = match &s.metrics_file {
        Some(file) => (
            metrics::from_file(&project, file)?,
            format!("the metrics file {file}"),
        ),
        None => (
            metrics::from_upstream(ctx.job),
            "the upstream job's final metrics".to_owned(),
        ),
    };
    let results =
        gates::evaluate(&s.gates, &metrics).map_err(|missing| RegisterError::MissingMetric {
            missing,
            source_name: source_name.clone(),
        })?;
    if results.is_empty() {
        log.line(&format!("No gates (metrics from {source_name})."));
    } else {
        log.section_start(
            "gates",
            &format!("Gates (metrics from {source_name})"),
            false,
        );
        for row in gates::table(&results) {
            log.line(&row);
        }
        log.section_end("gates");
    }
    let decision = gates::decide(
        s.approval,
        &results,
        ctx.job.ref_protected,
        s.on_gate_failure,
    );

    if package::ensure_group(ctx, &s.group).await? {
        log.notice(&format!("Created model package group {}", s.group));
    }
    let token = ctx.resource_name();
    let resource = Resource::intended(
        ResourceKind::ModelPackage,
        &token,
        Some(&s.group),
        ctx.stage,
    );
    let recorded = ctx
        .state
        .load()?
        .of_stage(ResourceKind::ModelPackage, ctx.stage)
        .and_then(|r| r.id.clone());
    let existing = match recorded {
        Some(arn) => Some(arn),
        None => package::find_own(ctx, &s.group).await?,
    };
    let arn = match existing {
        Some(arn) => {
            log.notice(&format!(
                "Using version {arn}, registered earlier by this job (a stage re-run creates no second version)"
            ));
            ctx.state.created(&resource, &arn)?;
            arn
        }
        None => {
            let metrics_uri = upload_metrics(ctx, s, &metrics).await?;
            let summary = results
                .iter()
                .map(|r| format!("{}={}", r.gate.gate, if r.passed { "pass" } else { "fail" }))
                .collect::<Vec<_>>()
                .join(",");
            ctx.state.intend(resource.clone())?;
            let arn = package::create(
                ctx,
                s,
                &package::NewVersion {
                    token: &token,
                    metrics_uri: metrics_uri.as_deref(),
                    gates: &summary,
                },
            )
            .await?;
            ctx.state.created(&resource, &arn)?;
            log.notice(&format!("Registered {arn}"));
            arn
        }
    };

    let mut w = package::VersionWatch::new(ctx.aws.polling.sagemaker.clone(), &arn);
    let followed = watch::follow(
        &mut w,
        watch::Options::new(
            Cadence::new(Duration::from_secs(1), Duration::from_secs(10)),
            ctx.cancel,
        )
        .with_deadline(tokio::time::Instant::now() + CREATE_DEADLINE),
        None,
    )
    .await
    .map_err(RegisterError::Wait)?;
    let described = match followed {
        Followed::Done(d, _) => d,
        Followed::Cancelled(_) | Followed::TimedOut(_) => {
            return Err(RegisterError::Cancelled(format!(
                "SageMaker was creating model package {arn}"
            )));
        }
    };
    if let Some(e) = package::failed(&described) {
        return Err(RegisterError::Aws(e));
    }
    ctx.state.finished(ResourceKind::ModelPackage, &token)?;
    let version = described.model_package_version().unwrap_or(0);
    let current = described
        .model_approval_status()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    if current != decision.status.as_sagemaker() {
        package::approve(ctx, &arn, decision.status, &decision.reason).await?;
    }
    log.notice(&format!(
        "Version {version} of {}: {} ({})",
        s.group,
        decision.status.as_sagemaker(),
        decision.reason
    ));
    log.line(&format!(
        "Console: {}",
        console_url(&ctx.aws.region, &s.group, version)
    ));

    let created = described
        .creation_time()
        .map(|t| t.secs())
        .unwrap_or_default();
    let bundle_name = bundle::name(ctx.job, created);
    let manifest = json!({
        "name": bundle_name,
        "model_package_arn": arn,
        "model_package_group": s.group,
        "version": version,
        "approval": decision.status.as_sagemaker(),
        "approval_reason": decision.reason,
        "model_data": s.model_data,
        "image": s.image,
        "content_types": s.content_types,
        "metrics": metrics,
        "gates": results.iter().map(|r| json!({
            "metric": r.gate.gate.metric,
            "rule": r.gate.gate.rule(),
            "value": r.value,
            "passed": r.passed,
            "required_by_runner": r.gate.required,
        })).collect::<Vec<_>>(),
        "commit": ctx.job.sha,
        "ref": ctx.job.git_ref,
        "project": ctx.job.project_path,
        "pipeline_id": ctx.job.pipeline_id,
        "job_id": ctx.job.id,
        "job_url": ctx.job.url,
    });
    let dir = bundle::write(
        &project,
        &bundle_name,
        &manifest,
        &bundle::deploy_config(&arn, &s.group),
    )?;
    if s.bundle_model
        && let Some(location) = split_s3_uri(&s.model_data)
    {
        let bytes = bundle::copy_model(
            &ctx.aws.s3,
            &project,
            &dir,
            location,
            s.max_bundle_bytes,
            ctx.cancel,
        )
        .await?;
        log.line(&format!(
            "Copied the model archive ({bytes} bytes) into {dir}"
        ));
    }
    log.notice(&format!("Release bundle: {dir}/"));

    let mut out = Outputs::default();
    out.set("SAGEMAKER_MODEL_PACKAGE_ARN", arn.clone());
    out.set("SAGEMAKER_MODEL_PACKAGE_VERSION", version.to_string());
    out.set("SAGEMAKER_MODEL_PACKAGE_GROUP", s.group.clone());
    out.set("SAGEMAKER_MODEL_APPROVAL", decision.status.as_sagemaker());
    out.set(
        "SAGEMAKER_GATES",
        if results.iter().all(|r| r.passed) {
            "passed"
        } else {
            "failed"
        },
    );
    for r in &results {
        out.set(
            &format!("SAGEMAKER_GATE_{}", r.gate.gate.metric),
            if r.passed { "pass" } else { "fail" },
        );
    }
    out.set("SAGEMAKER_RELEASE_BUNDLE", dir);
    out.set(
        "SAGEMAKER_CONSOLE_URL",
        console_url(&ctx.aws.region, &s.group, version),
    );
    let gated: BTreeMap<&str, f64> = results
        .iter()
        .map(|r| (r.gate.gate.metric.as_str(), r.value))
        .collect();
    out.metrics = gated.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    if decision.fail_job {
        return Err(RegisterError::GatesFailed {
            reason: decision.reason,
            outputs: Box::new(out),
        });
    }
    Ok(out)
}

/// Uploads the metrics as JSON next to the model archive; returns its URI.
async fn upload_metrics(
    ctx: &StageCtx<'_>,
    s: &RegisterSettings,
    metrics: &BTreeMap<String, f64>,
) -> Result<Option<String>, RegisterError> {
    if metrics.is_empty() {
        return Ok(None);
    }
    let Some((bucket, key)) = split_s3_uri(&s.model_data) else {
        return Ok(None);
    };
    let dir = key.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let key = if dir.is_empty() {
        format!("metrics-{}.json", ctx.job.id)
    } else {
        format!("{dir}/metrics-{}.json", ctx.job.id)
    };
    let body = serde_json::to_vec_pretty(metrics).unwrap_or_default();
    // Encrypted like the staged objects when it lands in the staging bucket; elsewhere the
    // bucket's own default encryption applies (the staging key's policy may not cover it).
    let kms_key_id = ctx
        .cfg
        .staging
        .kms_key_id
        .clone()
        .filter(|_| bucket == ctx.cfg.staging.bucket);
    let put = ctx
        .aws
        .s3
        .put_object()
        .bucket(bucket)
        .key(&key)
        .content_type("application/json")
        .set_server_side_encryption(kms_key_id.as_ref().map(|_| ServerSideEncryption::AwsKms))
        .set_ssekms_key_id(kms_key_id)
        .body(body.into())
        .send();
    ctx.cancel
        .run_until_cancelled(put)
        .await
        .ok_or_else(|| RegisterError::Cancelled("uploading the metrics file".to_owned()))?
        .map_err(|e| RegisterError::Aws(AwsCallError::new("PutObject", e)))?;
    Ok(Some(format!("s3://{bucket}/{key}")))
}
