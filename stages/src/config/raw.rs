//! Phase one of loading the executor config: the file's shape, exactly as written.
//!
//! Everything is optional here so that phase two ([`super::validate`]) can report every missing or
//! wrong value at once instead of stopping at the first. Unknown keys are collected separately
//! (see [`super::load_str`]) rather than with `deny_unknown_fields`, for the same reason.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    pub region: Option<String>,
    pub default_action: Option<String>,
    pub paths: Option<RawPaths>,
    pub staging: Option<RawStaging>,
    pub aws: Option<RawAws>,
    pub train: Option<RawTrain>,
    pub fargate: Option<RawFargate>,
    pub policy: Option<RawPolicy>,
    pub local: Option<RawLocal>,
    pub watch: Option<RawWatch>,
}

/// `[watch]`: how waits learn about status changes and log lines.
#[derive(Debug, Default, Deserialize)]
pub struct RawWatch {
    pub queue_url: Option<String>,
    pub safety_interval: Option<String>,
    pub live_tail: Option<bool>,
    pub host_watcher: Option<bool>,
    pub host_watcher_idle: Option<String>,
}

/// `[local]`: how stages that run on the runner host run.
#[derive(Debug, Default, Deserialize)]
pub struct RawLocal {
    pub user: Option<String>,
}

/// `[paths]`: where per-job directories live on the runner host.
#[derive(Debug, Default, Deserialize)]
pub struct RawPaths {
    pub builds_root: Option<String>,
    pub cache_root: Option<String>,
    pub state_root: Option<String>,
}

/// `[staging]`: the S3 bucket and prefix for workspaces.
#[derive(Debug, Default, Deserialize)]
pub struct RawStaging {
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub max_return_bytes: Option<u64>,
    pub kms_key_id: Option<String>,
}

/// `[aws]`: how the executor talks to AWS.
#[derive(Debug, Default, Deserialize)]
pub struct RawAws {
    pub credentials: Option<String>,
    pub job_credentials: Option<RawJobCredentials>,
    pub assume_role_arn: Option<String>,
    pub max_attempts: Option<u32>,
    pub s3_force_path_style: Option<bool>,
}

/// `[aws.job_credentials]`: per-job credentials from the job's GitLab OIDC token.
#[derive(Debug, Default, Deserialize)]
pub struct RawJobCredentials {
    pub issuer: Option<String>,
    pub token_variable: Option<String>,
    pub audience: Option<String>,
    pub role_arn: Option<String>,
    pub session_duration: Option<String>,
    pub session_tags: Option<bool>,
}

/// `[train]`: defaults for training jobs.
#[derive(Debug, Default, Deserialize)]
pub struct RawTrain {
    pub image: Option<String>,
    pub role_arn: Option<String>,
    pub instance_type: Option<String>,
    pub instance_count: Option<u32>,
    pub volume_size_gb: Option<u32>,
    pub max_runtime: Option<String>,
    pub output_path: Option<String>,
    pub stop_grace: Option<String>,
    pub describe_interval: Option<String>,
    pub log_interval: Option<String>,
}

/// `[fargate]`: the fixed ECS environment for Fargate jobs.
#[derive(Debug, Default, Deserialize)]
pub struct RawFargate {
    pub cluster: Option<String>,
    pub subnets: Option<Vec<String>>,
    pub security_groups: Option<Vec<String>>,
    pub assign_public_ip: Option<bool>,
    pub execution_role_arn: Option<String>,
    pub task_role_arn: Option<String>,
    pub log_group: Option<String>,
    pub helper_image: Option<String>,
    pub helper_command: Option<Vec<String>>,
    pub cpu: Option<u32>,
    pub memory: Option<u32>,
    pub stop_grace: Option<String>,
}

/// `[policy]`: what jobs may ask for.
#[derive(Debug, Default, Deserialize)]
pub struct RawPolicy {
    pub allowed_actions: Option<Vec<String>>,
    pub protected_ref_actions: Option<Vec<String>>,
    pub allow_after_script: Option<bool>,
    pub allow_hooks: Option<bool>,
    pub train: Option<RawTrainPolicy>,
    pub fargate: Option<RawFargatePolicy>,
    pub ecs_deploy: Option<RawEcsDeployPolicy>,
    pub register: Option<super::register::RawRegisterPolicy>,
    pub deploy: Option<super::deploy::RawDeployPolicy>,
    /// Per project path pattern: extra tags are not a policy, but role allow-lists are.
    pub projects: Option<BTreeMap<String, RawProjectPolicy>>,
}

/// `[policy.train]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawTrainPolicy {
    pub images: Option<Vec<String>>,
    pub instance_types: Option<Vec<String>>,
    pub max_instance_count: Option<u32>,
    pub max_runtime: Option<String>,
    pub max_volume_size_gb: Option<u32>,
    pub require_spot: Option<bool>,
    pub roles: Option<Vec<String>>,
    pub buckets: Option<Vec<String>>,
    pub max_keep_alive: Option<String>,
}

/// `[policy.fargate]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawFargatePolicy {
    pub images: Option<Vec<String>>,
    pub max_cpu: Option<u32>,
    pub max_memory: Option<u32>,
    pub max_ephemeral_storage_gb: Option<u32>,
    pub task_roles: Option<Vec<String>>,
    pub allow_spot: Option<bool>,
}

/// `[policy.ecs_deploy]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawEcsDeployPolicy {
    pub clusters: Option<Vec<String>>,
    pub services: Option<Vec<String>>,
    pub images: Option<Vec<String>>,
}

/// `[policy.projects."group/*"]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawProjectPolicy {
    pub roles: Option<Vec<String>>,
    pub require_protected_ref: Option<bool>,
    pub environments: Option<Vec<String>>,
}
