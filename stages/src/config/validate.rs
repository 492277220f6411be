//! Phase two of loading the executor config: values checked, defaults filled, every problem kept.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::*;
use super::{
    AwsSettings, ConfigProblem, ExecutorConfig, FargateEnv, Paths, Staging, TrainDefaults,
};
use crate::action::Action;
use crate::duration::parse_duration;
use crate::names::{
    Ec2IdKind, FARGATE_CPUS, arn_partition, ec2_id_problem, fargate_memory_fits, image_problem,
    is_ecr_image, is_known_instance_type, is_role_arn, is_s3_uri, partition, region_problem,
};
use crate::policy::{EcsDeployPolicy, FargatePolicy, Patterns, Policy, TrainPolicy};

/// Collects problems while building the validated config.
pub(super) struct Checker<'a> {
    pub(super) problems: &'a mut Vec<ConfigProblem>,
}

impl Checker<'_> {
    pub(super) fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            key: key.to_owned(),
            message: message.into(),
        });
    }

    /// A configured default must be within the policy's cap `cap_key`.
    fn default_within<T: PartialOrd + std::fmt::Display>(
        &mut self,
        key: &str,
        value: T,
        cap_key: &str,
        cap: T,
    ) {
        if value > cap {
            self.problem(key, format!("default {value} is over {cap_key} {cap}"));
        }
    }

    pub(super) fn required<T>(&mut self, key: &str, v: Option<T>) -> Option<T> {
        if v.is_none() {
            self.problem(key, "is required");
        }
        v
    }

    pub(super) fn abs_path(&mut self, key: &str, v: Option<String>) -> Option<PathBuf> {
        let v = self.required(key, v)?;
        let p = PathBuf::from(&v);
        if !p.is_absolute() {
            self.problem(key, format!("{v:?} must be an absolute path"));
            return None;
        }
        Some(p)
    }

    pub(super) fn duration(&mut self, key: &str, v: Option<String>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => parse_duration(&s).unwrap_or_else(|e| {
                self.problem(key, e);
                default
            }),
        }
    }

    pub(super) fn patterns(
        &mut self,
        key: &str,
        v: Option<Vec<String>>,
        default: Patterns,
    ) -> Patterns {
        match v {
            None => default,
            Some(list) => Patterns::compile(&list).unwrap_or_else(|errs| {
                for e in errs {
                    self.problem(key, e);
                }
                Patterns::default()
            }),
        }
    }

    pub(super) fn actions(
        &mut self,
        key: &str,
        v: Option<Vec<String>>,
        default: &[Action],
    ) -> BTreeSet<Action> {
        match v {
            None => default.iter().copied().collect(),
            Some(list) => list
                .iter()
                .filter_map(|s| match s.parse::<Action>() {
                    Ok(a) => Some(a),
                    Err(e) => {
                        self.problem(key, e.to_string());
                        None
                    }
                })
                .collect(),
        }
    }

    /// An IAM role ARN in the partition of `region` (when the region itself is valid).
    pub(super) fn role_arn(&mut self, key: &str, arn: &str, region: Option<&str>) {
        if !is_role_arn(arn) {
            self.problem(key, format!("{arn:?} is not an IAM role ARN"));
            return;
        }
        let Some(region) = region.filter(|r| region_problem(r).is_none()) else {
            return;
        };
        let want = partition(region);
        let got = arn_partition(arn).unwrap_or_default();
        if got != want {
            self.problem(
                key,
                format!(
                    "{arn:?} is in partition {got}, but region {region} is in {want}: roles must be arn:{want}:iam::..."
                ),
            );
        }
    }

    /// A usable image reference.
    pub(super) fn image(&mut self, key: &str, image: &str) {
        if let Some(why) = image_problem(image.trim()) {
            self.problem(key, format!("{image:?} {why}"));
        }
    }

    /// A cancel wait of at least a second (zero gives up at once, leaving the stop unseen) and
    /// at most 30 minutes (a cancelled job holds its runner slot that long, and the runner's
    /// `graceful_kill_timeout` must be longer still).
    pub(super) fn stop_grace(&mut self, key: &str, grace: Duration) {
        if grace < Duration::from_secs(1) || grace > Duration::from_secs(30 * 60) {
            self.problem(
                key,
                format!(
                    "{} must be between 1s and 30m (and below gitlab-runner's graceful_kill_timeout)",
                    humantime::format_duration(grace)
                ),
            );
        }
    }

    pub(super) fn positive(&mut self, key: &str, v: Option<u32>, default: u32) -> u32 {
        match v {
            Some(0) => {
                self.problem(key, "must be at least 1");
                default
            }
            Some(n) => n,
            None => default,
        }
    }
}

/// Builds the validated config; `None` only when a required value is missing or broken.
pub(super) fn validate(
    raw: RawConfig,
    problems: &mut Vec<ConfigProblem>,
) -> Option<ExecutorConfig> {
    let mut c = Checker { problems };

    let region = c.required("region", raw.region.filter(|r| !r.trim().is_empty()));
    if let Some(r) = &region
        && let Some(why) = region_problem(r)
    {
        c.problem("region", format!("{r:?} {why}"));
    }
    let default_action = match raw.default_action {
        None => Action::Train,
        Some(s) => s.parse().unwrap_or_else(|e: crate::action::UnknownAction| {
            c.problem("default_action", e.to_string());
            Action::Train
        }),
    };

    let rp = raw.paths.unwrap_or_default();
    let builds_root = c.abs_path("paths.builds_root", rp.builds_root);
    let cache_root = c.abs_path("paths.cache_root", rp.cache_root);
    let state_root = match rp.state_root {
        Some(s) => c.abs_path("paths.state_root", Some(s)),
        None => builds_root.as_ref().map(|b| b.join(".state")),
    };

    let rs = raw.staging.unwrap_or_default();
    let bucket = c.required("staging.bucket", rs.bucket);
    if let Some(b) = &bucket
        && !is_bucket_name(b)
    {
        c.problem(
            "staging.bucket",
            format!("{b:?} is not a valid S3 bucket name"),
        );
    }
    let kms_key_id = rs.kms_key_id.filter(|k| {
        let ok = k.starts_with("alias/")
            || (k.starts_with("arn:aws") && k.contains(":kms:"))
            || (k.len() == 36 && k.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
        if !ok {
            c.problem(
                "staging.kms_key_id",
                format!("{k:?} is not a KMS key ARN, key id or alias/..."),
            );
        }
        ok
    });
    let prefix = rs.prefix.unwrap_or_else(|| "sagemaker-executor".to_owned());
    let prefix = prefix.trim_matches('/').to_owned();

    let ra = raw.aws.unwrap_or_default();
    if let Some(arn) = &ra.assume_role_arn {
        c.role_arn("aws.assume_role_arn", arn, region.as_deref());
    }
    let max_attempts = c.positive("aws.max_attempts", ra.max_attempts, 10);

    let rt = raw.train.unwrap_or_default();
    if let Some(arn) = &rt.role_arn {
        c.role_arn("train.role_arn", arn, region.as_deref());
    }
    if let Some(image) = &rt.image {
        c.image("train.image", image);
        // Jobs without `image:` get this one, and SageMaker training pulls only from ECR.
        if image_problem(image.trim()).is_none() && !is_ecr_image(image) {
            c.problem(
                "train.image",
                format!(
                    "{image:?} is not an ECR image (<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>); SageMaker training pulls only from ECR"
                ),
            );
        }
    }
    let instance_type = rt.instance_type.unwrap_or_else(|| "ml.m5.large".to_owned());
    if !is_known_instance_type(&instance_type) {
        c.problem(
            "train.instance_type",
            format!("{instance_type:?} is not a SageMaker training instance type"),
        );
    }
    let output_path = match rt.output_path {
        Some(p) if is_s3_uri(&p) => p.trim_end_matches('/').to_owned(),
        Some(p) => {
            c.problem("train.output_path", format!("{p:?} must be an s3:// URI"));
            String::new()
        }
        None => bucket
            .as_ref()
            .map(|b| format!("s3://{b}/{prefix}/output"))
            .unwrap_or_default(),
    };
    let train = TrainDefaults {
        image: rt.image,
        role_arn: rt.role_arn,
        instance_type,
        instance_count: c.positive("train.instance_count", rt.instance_count, 1),
        volume_size_gb: c.positive("train.volume_size_gb", rt.volume_size_gb, 30),
        max_runtime: c.duration(
            "train.max_runtime",
            rt.max_runtime,
            Duration::from_secs(3600),
        ),
        output_path,
        stop_grace: c.duration("train.stop_grace", rt.stop_grace, Duration::from_secs(120)),
        describe_interval: c.duration(
            "train.describe_interval",
            rt.describe_interval,
            Duration::from_secs(30),
        ),
        log_interval: c.duration(
            "train.log_interval",
            rt.log_interval,
            Duration::from_secs(5),
        ),
    };
    for (key, interval) in [
        ("train.describe_interval", train.describe_interval),
        ("train.log_interval", train.log_interval),
    ] {
        if interval < Duration::from_secs(1) {
            c.problem(key, "intervals must be at least 1s");
        }
    }
    c.stop_grace("train.stop_grace", train.stop_grace);
    if train.max_runtime < Duration::from_secs(1) {
        c.problem("train.max_runtime", "must be at least 1s");
    }

    let fargate = raw
        .fargate
        .and_then(|f| fargate_env(&mut c, f, region.as_deref()));

    let policy = policy(
        &mut c,
        raw.policy.unwrap_or_default(),
        bucket.as_deref(),
        &train,
        fargate.as_ref(),
    );

    let credentials = credentials_mode(
        &mut c,
        ra.credentials.as_deref(),
        ra.job_credentials,
        region.as_deref(),
        !policy.projects.is_empty(),
    );

    if policy.train.max_runtime > SAGEMAKER_MAX_RUNTIME {
        c.problem(
            "policy.train.max_runtime",
            format!(
                "{} is over SageMaker's limit of 28 days (MaxRuntimeInSeconds)",
                humantime::format_duration(policy.train.max_runtime)
            ),
        );
    }
    // Defaults over the policy's caps would refuse every job that leaves them out.
    let (tp, fp) = (&policy.train, &policy.fargate);
    c.default_within(
        "train.instance_count",
        train.instance_count,
        "policy.train.max_instance_count",
        tp.max_instance_count,
    );
    c.default_within(
        "train.volume_size_gb",
        train.volume_size_gb,
        "policy.train.max_volume_size_gb",
        tp.max_volume_size_gb,
    );
    if let Some(f) = &fargate {
        c.default_within("fargate.cpu", f.cpu, "policy.fargate.max_cpu", fp.max_cpu);
        c.default_within(
            "fargate.memory",
            f.memory,
            "policy.fargate.max_memory",
            fp.max_memory,
        );
    }
    if train.max_runtime > policy.train.max_runtime {
        c.problem(
            "train.max_runtime",
            format!(
                "default {} is over policy.train.max_runtime {}",
                humantime::format_duration(train.max_runtime),
                humantime::format_duration(policy.train.max_runtime)
            ),
        );
    }

    let local_user = local_user(
        &mut c,
        raw.local.unwrap_or_default().user,
        policy.allow_after_script || policy.allow_hooks,
    );

    let watch = watch_settings(&mut c, raw.watch.unwrap_or_default());

    Some(ExecutorConfig {
        watch,
        local_user,
        region: region?,
        default_action,
        paths: Paths {
            builds_root: builds_root?,
            cache_root: cache_root?,
            state_root: state_root?,
        },
        staging: Staging {
            bucket: bucket?,
            prefix,
            max_return_bytes: rs.max_return_bytes.unwrap_or(20 << 30),
            kms_key_id,
        },
        aws: AwsSettings {
            credentials,
            assume_role_arn: ra.assume_role_arn,
            max_attempts,
            s3_force_path_style: ra.s3_force_path_style.unwrap_or(false),
        },
        train,
        fargate,
        policy,
    })
}

/// `[watch]`: a queue URL must look like one (an https URL with the account and queue name in
/// its path, or any http(s) URL for a local endpoint); the safety interval is at least the
/// describe cadence it relaxes, and at most an hour, so a lost event costs bounded latency.
fn watch_settings(c: &mut Checker<'_>, rw: super::raw::RawWatch) -> super::WatchSettings {
    let queue_url = rw.queue_url.filter(|u| {
        let ok = (u.starts_with("https://") || u.starts_with("http://"))
            && u.split('/').filter(|p| !p.is_empty()).count() >= 4;
        if !ok {
            c.problem(
                "watch.queue_url",
                format!("{u:?} is not an SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<queue>)"),
            );
        }
        ok
    });
    let safety_interval = c.duration(
        "watch.safety_interval",
        rw.safety_interval,
        super::DEFAULT_SAFETY_INTERVAL,
    );
    if !(Duration::from_secs(30)..=Duration::from_secs(3600)).contains(&safety_interval) {
        c.problem("watch.safety_interval", "must be between 30s and 1h");
    }
    let host_watcher_idle = c.duration(
        "watch.host_watcher_idle",
        rw.host_watcher_idle,
        super::DEFAULT_HOST_WATCHER_IDLE,
    );
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&host_watcher_idle) {
        c.problem("watch.host_watcher_idle", "must be between 1s and 1h");
    }
    super::WatchSettings {
        queue_url,
        safety_interval,
        live_tail: rw.live_tail.unwrap_or(false),
        host_watcher: rw.host_watcher.unwrap_or(true),
        host_watcher_idle,
    }
}

/// `[local] user`: required once the policy lets job code run on the host.
pub(super) fn local_user(
    c: &mut Checker<'_>,
    name: Option<String>,
    host_code_allowed: bool,
) -> Option<super::LocalUser> {
    let Some(name) = name else {
        if host_code_allowed {
            c.problem(
                "local.user",
                "is required when policy.allow_after_script or policy.allow_hooks is true: job code on the runner host runs as this unprivileged user",
            );
        }
        return None;
    };
    match nix::unistd::User::from_name(&name) {
        Ok(Some(u)) if u.uid.is_root() => {
            c.problem(
                "local.user",
                format!("{name:?} is root; name an unprivileged user"),
            );
            None
        }
        Ok(Some(u)) => Some(super::LocalUser {
            name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        }),
        Ok(None) => {
            c.problem("local.user", format!("{name:?} is not a user on this host"));
            None
        }
        Err(e) => {
            c.problem("local.user", format!("cannot look up {name:?}: {e}"));
            None
        }
    }
}

/// STS's bounds on a role session (a chained session, as with `session_tags`, ends after 1 h).
const MIN_SESSION: Duration = Duration::from_secs(900);
const MAX_SESSION: Duration = Duration::from_secs(12 * 3600);
const MAX_CHAINED_SESSION: Duration = Duration::from_secs(3600);

/// `[aws] credentials` and `[aws.job_credentials]`.
fn credentials_mode(
    c: &mut Checker<'_>,
    mode: Option<&str>,
    raw: Option<RawJobCredentials>,
    region: Option<&str>,
    has_projects: bool,
) -> super::CredentialsMode {
    match mode.unwrap_or("runner") {
        "runner" => {
            if raw.is_some() {
                c.problem(
                    "aws.job_credentials",
                    "is set, but aws.credentials is \"runner\"; set aws.credentials = \"job\" to use it",
                );
            }
            super::CredentialsMode::Runner
        }
        "job" => {
            let raw = raw.unwrap_or_default();
            if !has_projects {
                c.problem(
                    "aws.credentials",
                    "\"job\" needs [policy.projects] entries: without one, no project may assume a role",
                );
            }
            let token_variable = raw
                .token_variable
                .unwrap_or_else(|| DEFAULT_TOKEN_VARIABLE.to_owned());
            let owned = ["SAGEMAKER_", "FARGATE_", "ECS_"];
            if token_variable != DEFAULT_TOKEN_VARIABLE
                && owned.iter().any(|p| token_variable.starts_with(p))
            {
                c.problem(
                    "aws.job_credentials.token_variable",
                    format!("{token_variable:?} is in the executor's own settings namespace; use {DEFAULT_TOKEN_VARIABLE:?} or a name outside SAGEMAKER_/FARGATE_/ECS_"),
                );
            }
            if token_variable.is_empty()
                || !token_variable
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                c.problem(
                    "aws.job_credentials.token_variable",
                    format!("{token_variable:?} is not a CI variable name"),
                );
            }
            let audience = c
                .required("aws.job_credentials.audience", raw.audience)
                .unwrap_or_default();
            let issuer = c
                .required("aws.job_credentials.issuer", raw.issuer)
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_owned();
            if !issuer.is_empty()
                && !issuer.starts_with("https://")
                && !issuer.starts_with("http://")
            {
                c.problem(
                    "aws.job_credentials.issuer",
                    format!(
                        "{issuer:?} is not a URL (GitLab's, e.g. \"https://gitlab.example.com\")"
                    ),
                );
            }
            if let Some(template) = &raw.role_arn {
                let sample = crate::policy::projects::expand_role(template, "group/project");
                c.role_arn("aws.job_credentials.role_arn", &sample, region);
            }
            let session_tags = raw.session_tags.unwrap_or(false);
            let cap = if session_tags {
                MAX_CHAINED_SESSION
            } else {
                MAX_SESSION
            };
            let session_duration = c.duration(
                "aws.job_credentials.session_duration",
                raw.session_duration,
                MAX_CHAINED_SESSION,
            );
            if session_duration < MIN_SESSION || session_duration > cap {
                c.problem(
                    "aws.job_credentials.session_duration",
                    format!(
                        "{} is outside STS's {} to {}{}",
                        humantime::format_duration(session_duration),
                        humantime::format_duration(MIN_SESSION),
                        humantime::format_duration(cap),
                        if session_tags {
                            " for a chained (tagged) session"
                        } else {
                            ""
                        }
                    ),
                );
            }
            super::CredentialsMode::Job(super::JobCredentialsSettings {
                issuer,
                token_variable,
                audience,
                role_arn: raw.role_arn,
                session_duration,
                session_tags,
            })
        }
        other => {
            c.problem(
                "aws.credentials",
                format!("{other:?} is not \"runner\" or \"job\""),
            );
            super::CredentialsMode::Runner
        }
    }
}

/// The job variable of the GitLab `id_tokens` entry, unless the admin names another.
pub const DEFAULT_TOKEN_VARIABLE: &str = "SAGEMAKER_ID_TOKEN";

/// SageMaker's cap on `MaxRuntimeInSeconds`.
const SAGEMAKER_MAX_RUNTIME: Duration = Duration::from_secs(28 * 24 * 3600);

/// awsvpc's caps: RunTask takes at most 16 subnets and 5 security groups.
const MAX_SUBNETS: usize = 16;
const MAX_SECURITY_GROUPS: usize = 5;

/// Checks a list of EC2 ids of one kind: shape, duplicates and awsvpc's cap.
fn ec2_ids(c: &mut Checker<'_>, key: &str, ids: &[String], kind: Ec2IdKind, max: usize) {
    for (i, id) in ids.iter().enumerate() {
        if let Some(why) = ec2_id_problem(id, kind) {
            c.problem(key, why);
        } else if ids[..i].contains(id) {
            c.problem(key, format!("{id:?} is listed twice"));
        }
    }
    if ids.len() > max {
        c.problem(
            key,
            format!(
                "{} ids listed; a Fargate task takes at most {max}",
                ids.len()
            ),
        );
    }
}

fn fargate_env(c: &mut Checker<'_>, f: RawFargate, region: Option<&str>) -> Option<FargateEnv> {
    let cluster = c.required("fargate.cluster", f.cluster);
    if let Some(cl) = &cluster
        && !is_cluster(cl)
    {
        c.problem(
            "fargate.cluster",
            format!("{cl:?} is not an ECS cluster name (1-255 of [A-Za-z0-9_-]) or cluster ARN"),
        );
    }
    let subnets = c.required("fargate.subnets", f.subnets.filter(|s| !s.is_empty()));
    if let Some(ids) = &subnets {
        ec2_ids(c, "fargate.subnets", ids, Ec2IdKind::Subnet, MAX_SUBNETS);
    }
    let security_groups = c.required(
        "fargate.security_groups",
        f.security_groups.filter(|s| !s.is_empty()),
    );
    if let Some(ids) = &security_groups {
        ec2_ids(
            c,
            "fargate.security_groups",
            ids,
            Ec2IdKind::SecurityGroup,
            MAX_SECURITY_GROUPS,
        );
    }
    let execution_role_arn = c.required("fargate.execution_role_arn", f.execution_role_arn);
    if let Some(arn) = &execution_role_arn {
        c.role_arn("fargate.execution_role_arn", arn, region);
    }
    if let Some(arn) = &f.task_role_arn {
        c.role_arn("fargate.task_role_arn", arn, region);
    }
    let helper_image = c.required(
        "fargate.helper_image",
        f.helper_image.filter(|i| !i.trim().is_empty()),
    );
    if let Some(image) = &helper_image {
        c.image("fargate.helper_image", image);
    }
    if let Some(group) = &f.log_group
        && !is_log_group(group)
    {
        c.problem(
            "fargate.log_group",
            format!("{group:?} is not a CloudWatch Logs group name (1-512 of [A-Za-z0-9._/#-])"),
        );
    }
    let cpu = c.positive("fargate.cpu", f.cpu, 1024);
    let memory = c.positive("fargate.memory", f.memory, 2048);
    if !FARGATE_CPUS.contains(&cpu) {
        c.problem(
            "fargate.cpu",
            format!("{cpu} is not a Fargate CPU size ({FARGATE_CPUS:?})"),
        );
    } else if !fargate_memory_fits(cpu, memory) {
        c.problem(
            "fargate.memory",
            format!(
                "{memory} MiB is not a valid Fargate memory size for {cpu} CPU units (fargate.cpu)"
            ),
        );
    }
    let stop_grace = c.duration("fargate.stop_grace", f.stop_grace, Duration::from_secs(45));
    c.stop_grace("fargate.stop_grace", stop_grace);
    let helper_command = match f.helper_command {
        None => vec!["sagemaker-executor".to_owned()],
        Some(cmd) if cmd.is_empty() || cmd.iter().any(|a| a.trim().is_empty()) => {
            c.problem(
                "fargate.helper_command",
                "must be a non-empty list of non-empty strings (the executor binary in the helper image)",
            );
            Vec::new()
        }
        Some(cmd) => cmd,
    };
    Some(FargateEnv {
        cluster: cluster?,
        subnets: subnets?,
        security_groups: security_groups?,
        assign_public_ip: f.assign_public_ip.unwrap_or(false),
        execution_role_arn: execution_role_arn?,
        task_role_arn: f.task_role_arn,
        log_group: f
            .log_group
            .unwrap_or_else(|| "/sagemaker-executor/fargate".to_owned()),
        helper_image: helper_image?,
        helper_command,
        cpu,
        memory,
        // ECS itself waits 30 s before SIGKILL; the default leaves room to see the task reach
        // STOPPED.
        stop_grace,
    })
}

fn policy(
    c: &mut Checker<'_>,
    p: RawPolicy,
    bucket: Option<&str>,
    train: &TrainDefaults,
    fargate: Option<&FargateEnv>,
) -> Policy {
    // Fail closed: without an explicit list only training is allowed, and only the configured
    // role, the staging bucket and ECR images can be used.
    let allowed_actions = c.actions(
        "policy.allowed_actions",
        p.allowed_actions,
        &[Action::Train],
    );
    let protected_ref_actions = c.actions(
        "policy.protected_ref_actions",
        p.protected_ref_actions,
        &[Action::Deploy, Action::Undeploy, Action::EcsDeploy],
    );
    let tp = p.train.unwrap_or_default();
    let default_roles = Patterns::literals(&train.role_arn.iter().collect::<Vec<_>>());
    let default_buckets = Patterns::literals(&bucket.iter().collect::<Vec<_>>());
    let train_policy = TrainPolicy {
        images: c.patterns(
            "policy.train.images",
            tp.images,
            Patterns::compile(&["*.dkr.ecr.*.amazonaws.com/**"]).unwrap_or_default(),
        ),
        instance_types: c.patterns(
            "policy.train.instance_types",
            tp.instance_types,
            Patterns::literals(&[train.instance_type.as_str()]),
        ),
        max_instance_count: c.positive("policy.train.max_instance_count", tp.max_instance_count, 1),
        max_runtime: c.duration(
            "policy.train.max_runtime",
            tp.max_runtime,
            Duration::from_secs(24 * 3600),
        ),
        max_volume_size_gb: c.positive(
            "policy.train.max_volume_size_gb",
            tp.max_volume_size_gb,
            100,
        ),
        require_spot: tp.require_spot.unwrap_or(false),
        roles: c.patterns("policy.train.roles", tp.roles, default_roles),
        buckets: c.patterns("policy.train.buckets", tp.buckets, default_buckets),
        max_keep_alive: c.duration(
            "policy.train.max_keep_alive",
            tp.max_keep_alive,
            Duration::from_secs(0),
        ),
    };
    if train_policy.max_keep_alive > Duration::from_secs(3600) {
        c.problem(
            "policy.train.max_keep_alive",
            "SageMaker warm pools keep instances at most 1h",
        );
    }
    let fp = p.fargate.unwrap_or_default();
    let default_task_roles = Patterns::literals(
        &fargate
            .and_then(|f| f.task_role_arn.as_ref())
            .iter()
            .collect::<Vec<_>>(),
    );
    let fargate_policy = FargatePolicy {
        images: c.patterns(
            "policy.fargate.images",
            fp.images,
            Patterns::compile(&["**"]).unwrap_or_default(),
        ),
        max_cpu: c.positive("policy.fargate.max_cpu", fp.max_cpu, 4096),
        max_memory: c.positive("policy.fargate.max_memory", fp.max_memory, 16384),
        max_ephemeral_storage_gb: c.positive(
            "policy.fargate.max_ephemeral_storage_gb",
            fp.max_ephemeral_storage_gb,
            50,
        ),
        task_roles: c.patterns(
            "policy.fargate.task_roles",
            fp.task_roles,
            default_task_roles,
        ),
        allow_spot: fp.allow_spot.unwrap_or(true),
    };
    let ep = p.ecs_deploy.unwrap_or_default();
    let ecs_deploy = EcsDeployPolicy {
        clusters: c.patterns(
            "policy.ecs_deploy.clusters",
            ep.clusters,
            Patterns::default(),
        ),
        services: c.patterns(
            "policy.ecs_deploy.services",
            ep.services,
            Patterns::default(),
        ),
        images: c.patterns("policy.ecs_deploy.images", ep.images, Patterns::default()),
    };
    let mut projects = Vec::new();
    for (path, rp) in p.projects.unwrap_or_default() {
        let key = format!("policy.projects.{path:?}");
        let paths = c.patterns(&key, Some(vec![path.clone()]), Patterns::default());
        let roles = rp.roles.unwrap_or_default();
        // Checked with a sample path, the way a job's path fills them in.
        let sample: Vec<String> = roles
            .iter()
            .map(|r| r.replace(crate::policy::projects::PROJECT_PATH, "group-project"))
            .collect();
        c.patterns(&format!("{key}.roles"), Some(sample), Patterns::default());
        let environments = rp
            .environments
            .map(|e| c.patterns(&format!("{key}.environments"), Some(e), Patterns::default()));
        projects.push(crate::policy::ProjectPolicy {
            key: path,
            paths,
            roles,
            require_protected_ref: rp.require_protected_ref.unwrap_or(false),
            environments,
        });
    }
    let register = super::register::validate(c, p.register.unwrap_or_default());
    let deploy = super::deploy::validate(c, p.deploy.unwrap_or_default());
    Policy {
        allowed_actions,
        protected_ref_actions,
        // Both run job-controlled code on the runner host: closed unless the admin opens them.
        allow_after_script: p.allow_after_script.unwrap_or(false),
        allow_hooks: p.allow_hooks.unwrap_or(false),
        train: train_policy,
        fargate: fargate_policy,
        ecs_deploy,
        register,
        deploy,
        projects,
    }
}

/// S3's bucket naming rules (general purpose buckets).
fn is_bucket_name(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()
            .first()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && b.as_bytes()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric())
}

/// An ECS cluster name or ARN.
fn is_cluster(c: &str) -> bool {
    if c.starts_with("arn:") {
        return c.contains(":ecs:") && c.contains(":cluster/");
    }
    (1..=255).contains(&c.len())
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// CloudWatch Logs' log group naming rules.
fn is_log_group(g: &str) -> bool {
    (1..=512).contains(&g.len())
        && g.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/#-".contains(&b))
}
