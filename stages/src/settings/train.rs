//! Settings of a training job: resolved from variables and spec, defaulted from `[train]`, and
//! checked against `[policy.train]`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Origin, Reader};
use crate::config::ExecutorConfig;
use crate::job::Job;
use crate::names::{is_ecr_image, is_known_instance_type, s3_bucket, split_s3_uri};
use crate::policy::{check_allowed, check_image, check_max};

/// The input channel that carries the workspace; users cannot name a channel this.
pub const WORKSPACE_CHANNEL: &str = "sm-workspace";

/// SageMaker's limits on a metric definition's name and regex.
const MAX_METRIC_NAME: usize = 255;
const MAX_METRIC_REGEX: usize = 500;
/// AWS's limits on a tag key and value.
const MAX_TAG_KEY: usize = 128;
const MAX_TAG_VALUE: usize = 256;

/// Managed spot settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpotSettings {
    /// Longest total time including waiting for spot capacity.
    pub max_wait: Duration,
    /// Checkpoint location synced with `/opt/ml/checkpoints`.
    pub checkpoint_s3_uri: String,
}

/// Everything CreateTrainingJob needs from the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainSettings {
    /// Training image (ECR).
    pub image: String,
    /// Execution role.
    pub role_arn: String,
    /// Instance type.
    pub instance_type: String,
    /// Instance count.
    pub instance_count: u32,
    /// EBS volume per instance, GiB.
    pub volume_size_gb: u32,
    /// Runtime limit.
    pub max_runtime: Duration,
    /// Managed spot, when enabled.
    pub spot: Option<SpotSettings>,
    /// User input channels: channel name to `s3://` URI.
    pub inputs: BTreeMap<String, String>,
    /// Metric definitions: name to regex.
    pub metrics: BTreeMap<String, String>,
    /// Model output location.
    pub output_path: String,
    /// Warm pool keep-alive.
    pub keep_alive: Option<Duration>,
    /// Extra tags from the job.
    pub tags: BTreeMap<String, String>,
}

pub(super) fn resolve(
    r: &mut Reader<'_>,
    job: &Job,
    cfg: &ExecutorConfig,
) -> Option<TrainSettings> {
    let pol = &cfg.policy.train;
    let d = &cfg.train;

    let image = match job.image.clone().or_else(|| d.image.clone()) {
        None => {
            r.reject(
                &Origin::Variable("image".into()),
                "a training job needs an image: set `image:` to an ECR image",
            );
            None
        }
        Some(img) if !is_ecr_image(&img) => {
            r.reject(
                &Origin::Variable("image".into()),
                format!(
                    "{} is not an ECR image (<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>); SageMaker training pulls only from ECR",
                    crate::excerpt::quoted(&img)
                ),
            );
            None
        }
        Some(img) => {
            check_image(
                &mut r.problems,
                "image",
                &img,
                &pol.images,
                "policy.train.images",
            );
            Some(img)
        }
    };

    let role_arn = match r.text("SAGEMAKER_ROLE_ARN") {
        Some(s) => r.role(s, &pol.roles, "policy.train.roles", job, &cfg.policy),
        None => match &d.role_arn {
            Some(role) => Some(role.clone()),
            None => {
                r.reject(&Origin::Variable("SAGEMAKER_ROLE_ARN".into()), "no execution role: set SAGEMAKER_ROLE_ARN or train.role_arn in the executor config");
                None
            }
        },
    };

    let instance_type = match r.text("SAGEMAKER_INSTANCE_TYPE") {
        Some(s) if !is_known_instance_type(s.value.trim()) => {
            r.reject(
                &s.origin,
                format!(
                    "{} is not a SageMaker training instance type (e.g. ml.m5.xlarge)",
                    crate::excerpt::quoted(&s.value)
                ),
            );
            None
        }
        Some(s) => {
            check_allowed(
                &mut r.problems,
                &s.origin.to_string(),
                s.value.trim(),
                &pol.instance_types,
                "policy.train.instance_types",
            );
            Some(s.value.trim().to_owned())
        }
        None => Some(d.instance_type.clone()),
    };

    let instance_count = match r.number("SAGEMAKER_INSTANCE_COUNT", 1) {
        Some((n, o)) => {
            check_max(
                &mut r.problems,
                &o.to_string(),
                n,
                pol.max_instance_count,
                "policy.train.max_instance_count",
            );
            n
        }
        None => d.instance_count,
    };
    let volume_size_gb = match r.number("SAGEMAKER_VOLUME_SIZE_GB", 1) {
        Some((n, o)) => {
            check_max(
                &mut r.problems,
                &o.to_string(),
                n,
                pol.max_volume_size_gb,
                "policy.train.max_volume_size_gb",
            );
            n
        }
        None => d.volume_size_gb,
    };
    let max_runtime = match r.duration("SAGEMAKER_MAX_RUNTIME") {
        Some((t, o)) => {
            if t > pol.max_runtime {
                r.reject(
                    &o,
                    format!(
                        "{} is over policy.train.max_runtime = {}",
                        fmt(t),
                        fmt(pol.max_runtime)
                    ),
                );
            }
            if t.is_zero() {
                r.reject(&o, "must be at least 1s");
            }
            t
        }
        None => d.max_runtime,
    };

    let spot_enabled = r.flag("SAGEMAKER_SPOT").unwrap_or(false);
    if pol.require_spot && !spot_enabled {
        let origin = r
            .text("SAGEMAKER_SPOT")
            .map(|s| s.origin.clone())
            .unwrap_or(Origin::Variable("SAGEMAKER_SPOT".into()));
        r.reject(&origin, "this runner requires managed spot training (policy.train.require_spot = true): set SAGEMAKER_SPOT=true");
    }
    let spot = if spot_enabled {
        let max_wait = match r.duration("SAGEMAKER_MAX_WAIT") {
            Some((w, o)) => {
                if w < max_runtime {
                    r.reject(
                        &o,
                        format!(
                            "{} must be at least the max runtime {}",
                            fmt(w),
                            fmt(max_runtime)
                        ),
                    );
                }
                w
            }
            // Saturating: a huge max runtime is refused above, but must not overflow here.
            None => max_runtime.saturating_mul(2),
        };
        let checkpoint_s3_uri = match r.text("SAGEMAKER_CHECKPOINT_S3_URI") {
            Some(s) => bucket_checked(r, &s.origin, &s.value, cfg)
                .filter(|uri| !reads_staging(r, &s.origin, uri, cfg, Some(job.project_id)))
                .unwrap_or_default(),
            // Checkpoints survive the job by design (a retried job resumes), so the default is
            // per project and ref, not per job.
            None => format!(
                "s3://{}/{}/checkpoints/{}/{}",
                cfg.staging.bucket,
                cfg.staging.prefix,
                job.project_id,
                crate::job::tag_value(&job.git_ref).replace([' ', ':', '='], "_")
            ),
        };
        Some(SpotSettings {
            max_wait,
            checkpoint_s3_uri,
        })
    } else {
        if let Some(s) = r.text("SAGEMAKER_MAX_WAIT") {
            let o = s.origin.clone();
            r.reject(
                &o,
                "only applies to managed spot training: set SAGEMAKER_SPOT=true",
            );
        }
        None
    };

    let mut inputs = BTreeMap::new();
    let settings = r.settings;
    for (name, s) in settings.with_prefix("SAGEMAKER_INPUT_") {
        let channel = name.to_ascii_lowercase();
        if !is_channel_name(&channel) {
            r.reject(
                &s.origin,
                format!(
                    "{} is not a usable channel name (1-64 of [A-Za-z0-9._-], not `.`, `..` or {WORKSPACE_CHANNEL:?})",
                    crate::excerpt::quoted(&channel)
                ),
            );
            continue;
        }
        if let Some(uri) = bucket_checked(r, &s.origin, &s.value, cfg)
            && !reads_staging(r, &s.origin, &uri, cfg, None)
        {
            inputs.insert(channel, uri);
        }
    }

    let mut metrics = BTreeMap::new();
    for (name, s) in settings.with_prefix("SAGEMAKER_METRIC_") {
        if name.is_empty()
            || name.chars().count() > MAX_METRIC_NAME
            || name.chars().any(char::is_control)
        {
            r.reject(
                &s.origin,
                format!("a metric name must be 1-{MAX_METRIC_NAME} printable characters"),
            );
            continue;
        }
        if s.value.chars().count() > MAX_METRIC_REGEX {
            r.reject(
                &s.origin,
                format!("the regex is longer than SageMaker's {MAX_METRIC_REGEX} characters"),
            );
            continue;
        }
        match regex::Regex::new(&s.value) {
            Ok(re) if re.captures_len() >= 2 => {
                metrics.insert(name.to_owned(), s.value.clone());
            }
            Ok(_) => r.reject(
                &s.origin,
                "the regex needs one capture group for the value, e.g. loss=([0-9.]+)",
            ),
            Err(e) => r.reject(
                &s.origin,
                format!(
                    "not a valid regex: {}",
                    e.to_string().lines().last().unwrap_or_default()
                ),
            ),
        }
    }
    if metrics.len() > 40 {
        r.reject(
            &Origin::Variable("SAGEMAKER_METRIC_*".into()),
            "SageMaker accepts at most 40 metric definitions",
        );
    }

    let output_path = match r.text("SAGEMAKER_OUTPUT_PATH") {
        Some(s) => {
            bucket_checked(r, &s.origin, &s.value, cfg).map(|u| u.trim_end_matches('/').to_owned())
        }
        None => Some(d.output_path.clone()),
    };

    let keep_alive = match r.duration("SAGEMAKER_KEEP_ALIVE") {
        Some((k, o)) => {
            if k > pol.max_keep_alive {
                r.reject(
                    &o,
                    format!(
                        "{} is over policy.train.max_keep_alive = {}",
                        fmt(k),
                        fmt(pol.max_keep_alive)
                    ),
                );
            }
            Some(k).filter(|k| !k.is_zero())
        }
        None => None,
    };

    let mut tags = BTreeMap::new();
    for (k, s) in settings.with_prefix("SAGEMAKER_TAG_") {
        let lower = k.to_ascii_lowercase();
        // Compared without case: AWS keeps `Managed-By` apart from `managed-by`, but a person
        // reading the tags (and a case-insensitive cost report) does not.
        if lower.starts_with("aws:") || lower.starts_with("gitlab:") || lower == "managed-by" {
            r.reject(
                &s.origin,
                "tag keys aws:*, gitlab:* and managed-by are reserved (compared without case)",
            );
            continue;
        }
        if !is_tag_key(k) {
            r.reject(
                &s.origin,
                format!("a tag key must be 1-{MAX_TAG_KEY} letters, digits, spaces or _.:/=+-@"),
            );
            continue;
        }
        if s.value.chars().count() > MAX_TAG_VALUE {
            r.reject(
                &s.origin,
                format!("a tag value is at most {MAX_TAG_VALUE} characters"),
            );
            continue;
        }
        tags.insert(k.to_owned(), crate::job::tag_value(&s.value));
    }
    if tags.len() > 20 {
        r.reject(
            &Origin::Variable("SAGEMAKER_TAG_*".into()),
            "at most 20 extra tags",
        );
    }

    Some(TrainSettings {
        image: image?,
        role_arn: role_arn?,
        instance_type: instance_type?,
        instance_count,
        volume_size_gb,
        max_runtime,
        spot,
        inputs,
        metrics,
        output_path: output_path?,
        keep_alive,
        tags,
    })
}

/// Accepts an `s3://` URI whose bucket the policy allows.
fn bucket_checked(
    r: &mut Reader<'_>,
    origin: &Origin,
    uri: &str,
    cfg: &ExecutorConfig,
) -> Option<String> {
    let Some(bucket) = s3_bucket(uri.trim()) else {
        r.reject(
            origin,
            format!("{} is not an s3:// URI", crate::excerpt::quoted(uri)),
        );
        return None;
    };
    let pol = &cfg.policy.train.buckets;
    if !pol.allows(bucket) {
        r.reject(
            origin,
            format!(
                "bucket {} is not allowed by policy.train.buckets {pol}",
                crate::excerpt::quoted(bucket)
            ),
        );
        return None;
    }
    Some(uri.trim().to_owned())
}

/// Refuses (and returns true for) an `s3://` URI whose keys overlap the executor's staging
/// prefix: a channel or checkpoint there would read other jobs' staged workspaces, scripts and
/// returned outputs. SageMaker reads a URI as a key prefix, so `s3://<bucket>/` and
/// `s3://<bucket>/sage` overlap `sagemaker-executor/` too. `own_checkpoints` allows the
/// project's own checkpoint area (`<prefix>/checkpoints/<project id>/`), the spot default.
fn reads_staging(
    r: &mut Reader<'_>,
    origin: &Origin,
    uri: &str,
    cfg: &ExecutorConfig,
    own_checkpoints: Option<u64>,
) -> bool {
    let Some((bucket, key)) = split_s3_uri(uri) else {
        return false;
    };
    if bucket != cfg.staging.bucket {
        return false;
    }
    let staging = format!("{}/", cfg.staging.prefix);
    if let Some(project) = own_checkpoints {
        let own = format!("{staging}checkpoints/{project}/");
        if key.starts_with(&own) {
            return false;
        }
    }
    let overlaps =
        cfg.staging.prefix.is_empty() || key.starts_with(&staging) || staging.starts_with(key);
    if overlaps {
        r.reject(
            origin,
            format!(
                "{} overlaps the staging area s3://{bucket}/{staging} (staging.prefix), which holds other jobs' workspaces",
                crate::excerpt::quoted(uri)
            ),
        );
    }
    overlaps
}

/// SageMaker's channel names: 1-64 of `[A-Za-z0-9._-]`; `.` and `..` would name a directory
/// above `/opt/ml/input/data/<channel>`, and the workspace channel is the executor's.
fn is_channel_name(channel: &str) -> bool {
    !channel.is_empty()
        && channel.len() <= 64
        && channel != "."
        && channel != ".."
        && channel != WORKSPACE_CHANNEL
        && channel
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// AWS tag keys: 1-128 Unicode letters, digits, spaces and `_.:/=+-@`.
fn is_tag_key(key: &str) -> bool {
    let n = key.chars().count();
    (1..=MAX_TAG_KEY).contains(&n)
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || " _.:/=+-@".contains(c))
}

fn fmt(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
