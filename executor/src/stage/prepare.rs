//! The `prepare` stage: resolve the job's action and settings from its variables and check them
//! against the policy before anything exists. The spec file is read later, at the script stage,
//! because the repository is not checked out yet.

use std::path::Path;

use stages::settings::{self, Plan, Settings};

use crate::context;
use crate::error::ExecutorError;

pub async fn run(config: &Path) -> Result<(), ExecutorError> {
    let cfg = stages::config::load_file(config)?;
    let ctx = context::load()?;
    let plan = settings::resolve(
        &ctx.job,
        ctx.shape,
        &cfg,
        &Settings::collect(&ctx.job, None),
    )
    .map_err(ExecutorError::Rejected)?;
    let creds = stages::aws::credentials::for_job(&cfg, &ctx.job, std::time::SystemTime::now())
        .map_err(ExecutorError::Rejected)?;
    println!(
        "sagemaker-executor {}: {}",
        env!("CARGO_PKG_VERSION"),
        describe(&plan)
    );
    if let stages::aws::credentials::JobCredentials::Role(session) = &creds {
        // Opened once here, so a token or trust policy STS refuses fails the job before its
        // sources are fetched; the run stage opens its own session.
        let sdk = stages::aws::sdk_config(&cfg).await;
        stages::aws::credentials::WebIdentityProvider::new(&sdk, session.clone())
            .open()
            .await?;
    }
    println!("AWS credentials: {}", creds.describe());
    if ctx.job.variables.get("SAGEMAKER_SPEC").is_some() {
        println!(
            "Settings from the spec file are read and checked after the sources are checked out."
        );
    }
    let dir = cfg.paths.builds_root.join(ctx.job.id.to_string());
    crate::local::prepare_builds_dir(&dir, cfg.local_user.as_ref())?;
    if let Some(user) = &cfg.local_user {
        println!("Local stages run as user {} (uid {}).", user.name, user.uid);
    }
    Ok(())
}

/// One line saying what the job will become.
pub fn describe(plan: &Plan) -> String {
    match plan {
        Plan::Train(t) => format!(
            "SageMaker training job on {} x {}{} with image {}",
            t.instance_count,
            t.instance_type,
            if t.spot.is_some() {
                " (managed spot)"
            } else {
                ""
            },
            t.image
        ),
        Plan::Fargate(f) => format!(
            "ECS Fargate task ({} CPU units, {} MiB{}) with image {}",
            f.cpu,
            f.memory,
            if f.spot { ", Fargate Spot" } else { "" },
            f.image
        ),
        Plan::EcsDeploy(d) => format!(
            "ECS deployment of {} to service {} in {}",
            d.image, d.service, d.cluster
        ),
        Plan::Register(r) => format!(
            "SageMaker Model Registry: a new version of {} (approval {})",
            r.group, r.approval
        ),
        Plan::Deploy(d) => format!(
            "SageMaker endpoint deployment to {} endpoint {} of {} on {} ({}{})",
            if d.stable { "stable" } else { "candidate" },
            d.endpoint,
            match &d.model {
                stages::settings::ModelSource::Package(arn) => arn.clone(),
                stages::settings::ModelSource::LatestApproved(g) =>
                    format!("the newest Approved version of {g}"),
            },
            match &d.capacity {
                stages::settings::Capacity::Instances {
                    instance_type,
                    count,
                } => format!("{count} x {instance_type}"),
                stages::settings::Capacity::Serverless { memory_mb, .. } =>
                    format!("serverless {memory_mb} MB"),
            },
            d.strategy,
            if d.smoke.is_some() {
                ", smoke test"
            } else {
                ""
            }
        ),
        Plan::Undeploy(u) => format!(
            "SageMaker endpoint teardown of {} (with the configs and models this executor created for it)",
            u.endpoint
        ),
        Plan::NotServed(a) => format!("action {a}"),
    }
}
