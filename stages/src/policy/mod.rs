//! The admin policy: what a job may ask for. It fails closed: the loader rejects a
//! typo instead of ignoring it, and every limit has a conservative default.
//!
//! Checks return [`Rejection`]s that name the job setting and the rule, so the job log can say in
//! one line what was refused and why.

mod deploy;
pub mod gates;
mod patterns;
pub mod projects;
pub mod register;

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

pub use deploy::DeployPolicy;
pub use patterns::Patterns;
pub use projects::ProjectPolicy;
pub use register::RegisterPolicy;

use crate::action::Action;

/// The validated `[policy]` table.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Actions a job may use at all.
    pub allowed_actions: BTreeSet<Action>,
    /// Actions that only run on protected refs.
    pub protected_ref_actions: BTreeSet<Action>,
    /// Whether jobs may have an `after_script` (it runs on the runner host).
    pub allow_after_script: bool,
    /// Whether jobs may use runner hooks such as `hooks:pre_get_sources_script`.
    pub allow_hooks: bool,
    /// Limits for training jobs.
    pub train: TrainPolicy,
    /// Limits for Fargate tasks.
    pub fargate: FargatePolicy,
    /// Limits for ECS service deployments.
    pub ecs_deploy: EcsDeployPolicy,
    /// Limits for model registration.
    pub register: RegisterPolicy,
    /// Limits for endpoint deployments and teardowns.
    pub deploy: DeployPolicy,
    /// Role allow-lists per project path pattern: the per-job credentials role and every role
    /// a job names.
    pub projects: Vec<ProjectPolicy>,
}

/// `[policy.train]`.
#[derive(Debug, Clone)]
pub struct TrainPolicy {
    /// Training images a job may use.
    pub images: Patterns,
    /// Instance types a job may use.
    pub instance_types: Patterns,
    /// Most instances one job may use.
    pub max_instance_count: u32,
    /// Longest runtime a job may ask for.
    pub max_runtime: Duration,
    /// Largest EBS volume per instance.
    pub max_volume_size_gb: u32,
    /// Whether every job must use managed spot.
    pub require_spot: bool,
    /// Execution roles a job may name.
    pub roles: Patterns,
    /// Buckets a job may read inputs from or write outputs to.
    pub buckets: Patterns,
    /// Longest warm-pool keep-alive.
    pub max_keep_alive: Duration,
}

/// `[policy.fargate]`.
#[derive(Debug, Clone)]
pub struct FargatePolicy {
    /// Images a Fargate job may use.
    pub images: Patterns,
    /// Most CPU units.
    pub max_cpu: u32,
    /// Most memory in MiB.
    pub max_memory: u32,
    /// Most ephemeral storage in GiB.
    pub max_ephemeral_storage_gb: u32,
    /// Task roles a job may name.
    pub task_roles: Patterns,
    /// Whether jobs may ask for Fargate Spot.
    pub allow_spot: bool,
}

/// `[policy.ecs_deploy]`.
#[derive(Debug, Clone)]
pub struct EcsDeployPolicy {
    /// Clusters a deployment may touch.
    pub clusters: Patterns,
    /// Services a deployment may touch.
    pub services: Patterns,
    /// Images a deployment may roll out.
    pub images: Patterns,
}

/// One refused setting: the job-side name, what was asked, and the rule that refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The job setting as the user wrote it, e.g. `SAGEMAKER_INSTANCE_TYPE`.
    pub setting: String,
    /// Why, naming the rule, e.g. `"ml.p5.48xlarge" is not allowed by policy.train.instance_types [ml.m5.*]`.
    pub reason: String,
}

/// Longest setting name shown: a spec file's key (a tag key, a channel name) is the job's text.
const SHOWN_SETTING_CHARS: usize = 120;
/// Longest reason shown: reasons quote job values as short excerpts, and an admin's allow-list
/// is the rest; this is the last bound on one error line.
const SHOWN_REASON_CHARS: usize = 600;

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line whatever the job wrote: control characters (a newline in a spec key, terminal
        // escapes) are replaced, and both parts are bounded.
        write!(
            f,
            "{}: {}",
            crate::excerpt::plain(&self.setting, SHOWN_SETTING_CHARS),
            crate::excerpt::plain(&self.reason, SHOWN_REASON_CHARS)
        )
    }
}

impl Rejection {
    /// A rejection of `setting` for `reason`.
    pub fn new(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        Rejection {
            setting: setting.into(),
            reason: reason.into(),
        }
    }
}

/// Refuses `value` for `setting` unless `patterns` allow it.
pub(crate) fn check_allowed(
    out: &mut Vec<Rejection>,
    setting: &str,
    value: &str,
    patterns: &Patterns,
    rule: &str,
) {
    if !patterns.allows(value) {
        out.push(Rejection::new(
            setting,
            format!(
                "{} is not allowed by {rule} {patterns}",
                crate::excerpt::quoted(value)
            ),
        ));
    }
}

/// Refuses `image` for `setting` unless it is a usable reference whose normalized form
/// `patterns` allow (image patterns match the registry host label by label).
pub(crate) fn check_image(
    out: &mut Vec<Rejection>,
    setting: &str,
    image: &str,
    patterns: &Patterns,
    rule: &str,
) {
    if let Some(problem) = crate::names::image_problem(image) {
        out.push(Rejection::new(
            setting,
            format!("{} {problem}", crate::excerpt::quoted(image)),
        ));
        return;
    }
    let normalized = crate::names::normalize_image(image);
    if !patterns.allows_image(&normalized) {
        let shown = if normalized == image {
            crate::excerpt::quoted(image)
        } else {
            format!(
                "{} (that is {})",
                crate::excerpt::quoted(image),
                crate::excerpt::quoted(&normalized)
            )
        };
        out.push(Rejection::new(
            setting,
            format!("{shown} is not allowed by {rule} {patterns}"),
        ));
    }
}

/// Refuses `value` for `setting` when it is above `max`.
pub(crate) fn check_max<T: PartialOrd + fmt::Display>(
    out: &mut Vec<Rejection>,
    setting: &str,
    value: T,
    max: T,
    rule: &str,
) {
    if value > max {
        out.push(Rejection::new(
            setting,
            format!("{value} is over {rule} = {max}"),
        ));
    }
}

impl Policy {
    /// Checks the action itself: allowed at all, and on a protected ref where required.
    pub fn check_action(
        &self,
        action: Action,
        ref_protected: bool,
        setting: &str,
    ) -> Vec<Rejection> {
        let mut out = Vec::new();
        if !self.allowed_actions.contains(&action) {
            let allowed: Vec<&str> = self.allowed_actions.iter().map(|a| a.as_str()).collect();
            out.push(Rejection::new(
                setting,
                format!(
                    "action {:?} is not allowed by policy.allowed_actions [{}]",
                    action.as_str(),
                    allowed.join(", ")
                ),
            ));
        } else if self.protected_ref_actions.contains(&action) && !ref_protected {
            out.push(Rejection::new(
                setting,
                format!(
                    "action {:?} runs only on protected refs (policy.protected_ref_actions)",
                    action.as_str()
                ),
            ));
        }
        out
    }
}
