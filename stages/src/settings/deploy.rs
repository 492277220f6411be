//! Settings of an endpoint deployment and of a teardown, within `[policy.deploy]`: the endpoint
//! (named by the job, or derived from the project and the ref: a candidate per merge request or
//! branch, the stable one for the default branch), the model package, capacity, the rollout
//! strategy and its alarms, the smoke test and data capture. Parsing is pure; nothing here calls
//! AWS (whether the package is approved is checked when the deployment runs).

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::spec::DurationSpec;
use super::{Origin, Reader};
use crate::config::ExecutorConfig;
use crate::duration::parse_duration;
use crate::excerpt::quoted;
use crate::job::Job;
use crate::names::{is_role_arn, s3_bucket};
use crate::policy::{check_allowed, check_max};

/// Variables a deploy or undeploy job reads.
pub(super) const KNOWN: &[&str] = &[
    "SAGEMAKER_ENDPOINT_NAME",
    "SAGEMAKER_MODEL_PACKAGE",
    // The upstream register job's output: the default model of a deploy job after it.
    "SAGEMAKER_MODEL_PACKAGE_ARN",
    "SAGEMAKER_ENDPOINT_INSTANCE_TYPE",
    "SAGEMAKER_ENDPOINT_INSTANCE_COUNT",
    "SAGEMAKER_SERVERLESS",
    "SAGEMAKER_SERVERLESS_MEMORY_MB",
    "SAGEMAKER_SERVERLESS_MAX_CONCURRENCY",
    "SAGEMAKER_STRATEGY",
    "SAGEMAKER_TERMINATION_WAIT",
    "SAGEMAKER_ALARMS",
    "SAGEMAKER_DEPLOY_TIMEOUT",
    "SAGEMAKER_SMOKE_REQUEST",
    "SAGEMAKER_SMOKE_CONTENT_TYPE",
    "SAGEMAKER_SMOKE_EXPECT_STATUS",
    "SAGEMAKER_SMOKE_EXPECT",
    "SAGEMAKER_DATA_CAPTURE",
    "SAGEMAKER_DATA_CAPTURE_S3_URI",
    "SAGEMAKER_KEEP_FAILED_ENDPOINT",
];

/// Longest bake, termination wait and canary/linear interval SageMaker accepts (1 h).
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// Most alarms one `AutoRollbackConfiguration` takes.
const MAX_ALARMS: usize = 10;

/// How traffic moves to the new fleet of an update (blue/green).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// All traffic at once, then a bake of `wait` watching the alarms.
    AllAtOnce {
        /// The bake.
        wait: Duration,
    },
    /// `percent` of the capacity first, bake `wait`, then the rest.
    Canary {
        /// The canary's share of capacity.
        percent: u8,
        /// The bake after the canary.
        wait: Duration,
    },
    /// `percent` more of the capacity every step, baking `wait` after each.
    Linear {
        /// The step size.
        percent: u8,
        /// The bake after each step.
        wait: Duration,
    },
}

impl Strategy {
    /// Parses `all-at-once[:<wait>]`, `canary:<pct>:<wait>` or `linear:<pct>:<wait>`.
    ///
    /// SageMaker's limits: a canary is at most 50% of the new fleet, a linear step 10-50%, and
    /// every bake at most an hour.
    pub fn parse(text: &str) -> Result<Strategy, String> {
        let text = text.trim();
        let parts: Vec<&str> = text.split(':').map(str::trim).collect();
        let wait = |w: &str| -> Result<Duration, String> {
            let d = parse_duration(w).map_err(|e| format!("bake time {}: {e}", quoted(w)))?;
            if d > MAX_WAIT {
                return Err(format!(
                    "bake time {} is over SageMaker's limit of 1h",
                    quoted(w)
                ));
            }
            Ok(d)
        };
        let percent = |p: &str, min: u8| -> Result<u8, String> {
            let p = p.strip_suffix('%').unwrap_or(p);
            match p.parse::<u8>() {
                Ok(n) if (min..=50).contains(&n) => Ok(n),
                _ => Err(format!(
                    "traffic share {} must be a whole percentage from {min} to 50",
                    quoted(p)
                )),
            }
        };
        let usage = "use all-at-once[:<bake>], canary:<percent>:<bake> or linear:<percent>:<bake> (e.g. canary:10:5m)";
        match parts.as_slice() {
            [kind] if kind.eq_ignore_ascii_case("all-at-once") => Ok(Strategy::AllAtOnce {
                wait: Duration::ZERO,
            }),
            [kind, w] if kind.eq_ignore_ascii_case("all-at-once") => {
                Ok(Strategy::AllAtOnce { wait: wait(w)? })
            }
            [kind, p, w] if kind.eq_ignore_ascii_case("canary") => Ok(Strategy::Canary {
                percent: percent(p, 1)?,
                wait: wait(w)?,
            }),
            [kind, p, w] if kind.eq_ignore_ascii_case("linear") => Ok(Strategy::Linear {
                percent: percent(p, 10)?,
                wait: wait(w)?,
            }),
            _ => Err(format!("{} is not a strategy: {usage}", quoted(text))),
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let w = |d: &Duration| humantime::format_duration(*d).to_string();
        match self {
            Strategy::AllAtOnce { wait } if wait.is_zero() => f.write_str("all-at-once"),
            Strategy::AllAtOnce { wait } => write!(f, "all-at-once, bake {}", w(wait)),
            Strategy::Canary { percent, wait } => {
                write!(f, "canary {percent}%, bake {}, then the rest", w(wait))
            }
            Strategy::Linear { percent, wait } => {
                write!(f, "linear {percent}% steps, bake {} each", w(wait))
            }
        }
    }
}

/// Where the model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// One model package version, by ARN.
    Package(String),
    /// The newest `Approved` version of a model package group.
    LatestApproved(String),
}

/// What the endpoint runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capacity {
    /// Real-time instances.
    Instances {
        /// e.g. `ml.m5.large`.
        instance_type: String,
        /// How many.
        count: u32,
    },
    /// Serverless inference.
    Serverless {
        /// Memory in MB (1024 … 6144, steps of 1024).
        memory_mb: u32,
        /// Concurrent invocations (1 … 200).
        max_concurrency: u32,
    },
}

/// The request a deployment sends after the rollout, and what it must get back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmokeTest {
    /// The request body: a file in the repository.
    pub request_file: String,
    /// Its content type.
    pub content_type: String,
    /// The status the model must answer with.
    pub expect_status: u16,
    /// A regex the answer's body must match, if any.
    pub expect_body: Option<String>,
}

/// Everything a deployment needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploySettings {
    /// The endpoint.
    pub endpoint: String,
    /// It counts as stable (`policy.deploy.stable_endpoints`).
    pub stable: bool,
    /// The model package.
    pub model: ModelSource,
    /// A package that is not `Approved` may be deployed (a candidate, and the policy allows it).
    pub allow_unapproved: bool,
    /// Instances or serverless.
    pub capacity: Capacity,
    /// How traffic shifts on an update.
    pub strategy: Strategy,
    /// How long the old fleet stays after all traffic moved.
    pub termination_wait: Duration,
    /// CloudWatch alarms that roll the update back.
    pub alarms: Vec<String>,
    /// How long the job waits for the rollout.
    pub timeout: Duration,
    /// The smoke test, if any.
    pub smoke: Option<SmokeTest>,
    /// Data capture destination (`s3://`), when capture is on.
    pub data_capture: Option<String>,
    /// Keep a first deployment's endpoint that failed (for debugging) instead of deleting it.
    pub keep_failed_endpoint: bool,
    /// The model's execution role.
    pub role_arn: String,
}

/// Everything a teardown needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UndeploySettings {
    /// The endpoint.
    pub endpoint: String,
}

/// `deploy.serverless:` in the spec file.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerlessSpec {
    /// Serve serverless (default true when this section is present).
    pub enabled: Option<bool>,
    /// Memory in MB: 1024, 2048, … 6144.
    pub memory_mb: Option<u32>,
    /// Concurrent invocations, 1 … 200.
    pub max_concurrency: Option<u32>,
}

/// `deploy.smoke_test:` in the spec file.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmokeSpec {
    /// The request body: a file in the repository.
    pub request: Option<String>,
    /// Its content type (default `application/json`).
    pub content_type: Option<String>,
    /// The status the model must answer with (default 200).
    pub expect_status: Option<u16>,
    /// A regex the answer's body must match.
    pub expect: Option<String>,
}

/// `deploy.data_capture:` in the spec file.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataCaptureSpec {
    /// Capture requests and answers.
    pub enabled: Option<bool>,
    /// Where (`s3://`; default under the staging bucket).
    pub s3_uri: Option<String>,
}

/// `deploy:` in the spec file (also read by undeploy for the endpoint name).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploySpec {
    /// Endpoint name (default: `<project>-stable` on the default branch, else
    /// `<project>-candidate-<mr iid or branch>`).
    pub endpoint_name: Option<String>,
    /// Model package version ARN (default: the upstream register job's
    /// `SAGEMAKER_MODEL_PACKAGE_ARN`).
    pub model_package: Option<String>,
    /// Model package group whose newest Approved version is deployed when no package is named.
    pub model_package_group: Option<String>,
    /// e.g. `ml.m5.large`.
    pub instance_type: Option<String>,
    /// Number of instances.
    pub instance_count: Option<u32>,
    /// Serverless inference instead of instances.
    pub serverless: Option<ServerlessSpec>,
    /// `all-at-once[:<bake>]`, `canary:<pct>:<bake>` or `linear:<pct>:<bake>`.
    pub strategy: Option<String>,
    /// How long the old fleet stays after the traffic moved.
    pub termination_wait: Option<DurationSpec>,
    /// CloudWatch alarms that roll an update back.
    pub alarms: Option<Vec<String>>,
    /// How long the job waits for the rollout.
    pub timeout: Option<DurationSpec>,
    /// The request sent after the rollout.
    pub smoke_test: Option<SmokeSpec>,
    /// Data capture.
    pub data_capture: Option<DataCaptureSpec>,
    /// Keep a failed first deployment's endpoint instead of deleting it.
    pub keep_failed_endpoint: Option<bool>,
    /// The model's execution role ARN.
    pub role_arn: Option<String>,
}

fn duration_text(d: &DurationSpec) -> String {
    match d {
        DurationSpec::Seconds(s) => s.to_string(),
        DurationSpec::Text(t) => t.clone(),
    }
}

/// The spec's deploy settings under their variable names.
pub(super) fn flatten(spec: &DeploySpec, put: &mut dyn FnMut(&str, &str, Option<String>)) {
    let s = spec;
    put(
        "SAGEMAKER_ENDPOINT_NAME",
        "deploy.endpoint_name",
        s.endpoint_name.clone(),
    );
    put(
        "SAGEMAKER_MODEL_PACKAGE",
        "deploy.model_package",
        s.model_package.clone(),
    );
    put(
        "SAGEMAKER_MODEL_PACKAGE_GROUP",
        "deploy.model_package_group",
        s.model_package_group.clone(),
    );
    put(
        "SAGEMAKER_ENDPOINT_INSTANCE_TYPE",
        "deploy.instance_type",
        s.instance_type.clone(),
    );
    put(
        "SAGEMAKER_ENDPOINT_INSTANCE_COUNT",
        "deploy.instance_count",
        s.instance_count.map(|n| n.to_string()),
    );
    if let Some(sl) = &s.serverless {
        put(
            "SAGEMAKER_SERVERLESS",
            "deploy.serverless.enabled",
            Some(sl.enabled.unwrap_or(true).to_string()),
        );
        put(
            "SAGEMAKER_SERVERLESS_MEMORY_MB",
            "deploy.serverless.memory_mb",
            sl.memory_mb.map(|n| n.to_string()),
        );
        put(
            "SAGEMAKER_SERVERLESS_MAX_CONCURRENCY",
            "deploy.serverless.max_concurrency",
            sl.max_concurrency.map(|n| n.to_string()),
        );
    }
    put("SAGEMAKER_STRATEGY", "deploy.strategy", s.strategy.clone());
    put(
        "SAGEMAKER_TERMINATION_WAIT",
        "deploy.termination_wait",
        s.termination_wait.as_ref().map(duration_text),
    );
    put(
        "SAGEMAKER_ALARMS",
        "deploy.alarms",
        s.alarms.as_ref().map(|a| a.join(",")),
    );
    put(
        "SAGEMAKER_DEPLOY_TIMEOUT",
        "deploy.timeout",
        s.timeout.as_ref().map(duration_text),
    );
    if let Some(t) = &s.smoke_test {
        put(
            "SAGEMAKER_SMOKE_REQUEST",
            "deploy.smoke_test.request",
            t.request.clone(),
        );
        put(
            "SAGEMAKER_SMOKE_CONTENT_TYPE",
            "deploy.smoke_test.content_type",
            t.content_type.clone(),
        );
        put(
            "SAGEMAKER_SMOKE_EXPECT_STATUS",
            "deploy.smoke_test.expect_status",
            t.expect_status.map(|n| n.to_string()),
        );
        put(
            "SAGEMAKER_SMOKE_EXPECT",
            "deploy.smoke_test.expect",
            t.expect.clone(),
        );
    }
    if let Some(d) = &s.data_capture {
        put(
            "SAGEMAKER_DATA_CAPTURE",
            "deploy.data_capture.enabled",
            d.enabled.map(|b| b.to_string()),
        );
        put(
            "SAGEMAKER_DATA_CAPTURE_S3_URI",
            "deploy.data_capture.s3_uri",
            d.s3_uri.clone(),
        );
    }
    put(
        "SAGEMAKER_KEEP_FAILED_ENDPOINT",
        "deploy.keep_failed_endpoint",
        s.keep_failed_endpoint.map(|b| b.to_string()),
    );
    put("SAGEMAKER_ROLE_ARN", "deploy.role_arn", s.role_arn.clone());
}

/// Whether `name` is a SageMaker endpoint (or endpoint config, or model) name: 1-63 of
/// `[A-Za-z0-9-]`, starting and ending with a letter or digit.
pub fn is_endpoint_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// `s` lowercased with every run of other characters as one `-`, trimmed of `-`.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

/// `name` within 63 characters: unchanged when it fits, else cut and given 8 hex digits of its
/// SHA-256, so two long names that share a beginning stay apart and a name is the same in
/// every job that derives it.
pub fn fit_name(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_owned();
    }
    let hash = Sha256::digest(name.as_bytes());
    let hex: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let head: String = name.chars().take(54).collect();
    format!("{}-{hex}", head.trim_end_matches('-'))
}

/// The endpoint a job deploys to when it names none: `<project>-candidate-mr<iid>` in a merge
/// request pipeline, `<project>-stable` on the default branch, `<project>-candidate-<branch>`
/// elsewhere; within SageMaker's name rules.
pub fn default_endpoint_name(job: &Job) -> String {
    let project = job
        .variables
        .get("CI_PROJECT_NAME")
        .map(str::to_owned)
        .unwrap_or_else(|| {
            job.project_path
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned()
        });
    let mut project = slug(&project);
    if project.is_empty() {
        project = format!("project-{}", job.project_id);
    }
    let default_branch = job
        .default_branch
        .as_deref()
        .or_else(|| job.variables.get("CI_DEFAULT_BRANCH"));
    let mr = job
        .variables
        .get("CI_MERGE_REQUEST_IID")
        .map(str::trim)
        .filter(|iid| !iid.is_empty());
    let name = match mr {
        Some(iid) => format!("{project}-candidate-mr{}", slug(iid)),
        None if default_branch == Some(job.git_ref.as_str()) => format!("{project}-stable"),
        None => {
            let branch = slug(&job.git_ref);
            let branch = if branch.is_empty() {
                "ref".to_owned()
            } else {
                branch
            };
            format!("{project}-candidate-{branch}")
        }
    };
    fit_name(&name)
}

/// The endpoint, from `SAGEMAKER_ENDPOINT_NAME` (a setting, or an upstream deploy job's
/// output) or derived; checked against the policy, stable ones on protected refs only.
/// Returns the name and whether it is stable.
fn endpoint(r: &mut Reader<'_>, job: &Job, cfg: &ExecutorConfig) -> Option<(String, bool)> {
    let pol = &cfg.policy.deploy;
    let (name, origin) = match r.text("SAGEMAKER_ENDPOINT_NAME") {
        Some(s) => (s.value.trim().to_owned(), s.origin.clone()),
        None => (
            default_endpoint_name(job),
            Origin::Variable("SAGEMAKER_ENDPOINT_NAME".into()),
        ),
    };
    if !is_endpoint_name(&name) {
        r.reject(
            &origin,
            format!(
                "{} is not an endpoint name (1-63 of [A-Za-z0-9-], no leading or trailing -)",
                quoted(&name)
            ),
        );
        return None;
    }
    if !pol.endpoints.allows(&name) {
        r.reject(
            &origin,
            format!(
                "endpoint {} is not allowed by policy.deploy.endpoints {}",
                quoted(&name),
                pol.endpoints
            ),
        );
        return None;
    }
    let stable = pol.stable_endpoints.allows(&name);
    if stable && !job.ref_protected {
        r.reject(
            &origin,
            format!(
                "endpoint {} counts as stable (policy.deploy.stable_endpoints {}) and changes only from protected refs; {} is not protected",
                quoted(&name),
                pol.stable_endpoints,
                quoted(&job.git_ref)
            ),
        );
        return None;
    }
    Some((name, stable))
}

/// Whether `arn` is a model package version ARN.
fn is_package_arn(arn: &str) -> bool {
    arn.starts_with("arn:aws")
        && arn.len() <= 2048
        && arn
            .split_once(":model-package/")
            .is_some_and(|(_, rest)| !rest.is_empty())
}

fn model_source(r: &mut Reader<'_>) -> Option<ModelSource> {
    let package = r
        .text("SAGEMAKER_MODEL_PACKAGE")
        .or_else(|| r.text("SAGEMAKER_MODEL_PACKAGE_ARN"));
    if let Some(s) = package {
        let arn = s.value.trim().to_owned();
        if !is_package_arn(&arn) {
            let origin = s.origin.clone();
            r.reject(
                &origin,
                format!(
                    "{} is not a model package version ARN (arn:aws:sagemaker:<region>:<account>:model-package/<group>/<version>)",
                    quoted(&arn)
                ),
            );
            return None;
        }
        return Some(ModelSource::Package(arn));
    }
    match r.text("SAGEMAKER_MODEL_PACKAGE_GROUP") {
        Some(s) => {
            let group = s.value.trim().to_owned();
            if !super::is_group_name(&group) {
                let origin = s.origin.clone();
                r.reject(
                    &origin,
                    format!("{} is not a model package group name", quoted(&group)),
                );
                return None;
            }
            Some(ModelSource::LatestApproved(group))
        }
        None => {
            r.reject(
                &Origin::Variable("SAGEMAKER_MODEL_PACKAGE".into()),
                "no model to deploy: run this job after a register job whose sagemaker.env it receives (SAGEMAKER_MODEL_PACKAGE_ARN), or set SAGEMAKER_MODEL_PACKAGE to a package version ARN or SAGEMAKER_MODEL_PACKAGE_GROUP to deploy its newest Approved version",
            );
            None
        }
    }
}

/// Whether `t` has the shape of a SageMaker hosting instance type (`ml.<family>.<size>`).
fn is_instance_type(t: &str) -> bool {
    let parts: Vec<&str> = t.split('.').collect();
    parts.len() == 3
        && parts[0] == "ml"
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

fn capacity(r: &mut Reader<'_>, cfg: &ExecutorConfig) -> Option<Capacity> {
    let pol = &cfg.policy.deploy;
    let serverless = r.flag("SAGEMAKER_SERVERLESS").unwrap_or(false);
    // A setting of the other kind of capacity would be silently ignored: refuse it instead.
    let (unused, needs): (&[&str], &str) = if serverless {
        (
            &[
                "SAGEMAKER_ENDPOINT_INSTANCE_TYPE",
                "SAGEMAKER_ENDPOINT_INSTANCE_COUNT",
            ],
            "has no effect on a serverless endpoint (SAGEMAKER_SERVERLESS = true)",
        )
    } else {
        (
            &[
                "SAGEMAKER_SERVERLESS_MEMORY_MB",
                "SAGEMAKER_SERVERLESS_MAX_CONCURRENCY",
            ],
            "has no effect unless SAGEMAKER_SERVERLESS is true",
        )
    };
    for var in unused {
        if let Some(s) = r.text(var) {
            let origin = s.origin.clone();
            r.reject(&origin, needs);
        }
    }
    if serverless {
        if !pol.allow_serverless {
            let origin = r
                .text("SAGEMAKER_SERVERLESS")
                .map(|s| s.origin.clone())
                .unwrap_or_else(|| Origin::Variable("SAGEMAKER_SERVERLESS".into()));
            r.reject(
                &origin,
                "serverless endpoints are not allowed on this runner (policy.deploy.allow_serverless = false)",
            );
            return None;
        }
        let memory_mb = match r.number("SAGEMAKER_SERVERLESS_MEMORY_MB", 1024) {
            None => 2048,
            Some((m, origin)) if m > 6144 || m % 1024 != 0 => {
                r.reject(&origin, format!("{m} is not one of 1024, 2048, … 6144"));
                2048
            }
            Some((m, _)) => m,
        };
        let max_concurrency = match r.number("SAGEMAKER_SERVERLESS_MAX_CONCURRENCY", 1) {
            None => 5,
            Some((n, origin)) if n > 200 => {
                r.reject(&origin, format!("{n} is over SageMaker's limit of 200"));
                5
            }
            Some((n, _)) => n,
        };
        return Some(Capacity::Serverless {
            memory_mb,
            max_concurrency,
        });
    }
    let (instance_type, origin) = match r.text("SAGEMAKER_ENDPOINT_INSTANCE_TYPE") {
        Some(s) => (s.value.trim().to_owned(), s.origin.clone()),
        None => (
            "ml.m5.large".to_owned(),
            Origin::Variable("SAGEMAKER_ENDPOINT_INSTANCE_TYPE".into()),
        ),
    };
    if !is_instance_type(&instance_type) {
        r.reject(
            &origin,
            format!(
                "{} is not a SageMaker instance type such as ml.m5.large",
                quoted(&instance_type)
            ),
        );
        return None;
    }
    check_allowed(
        &mut r.problems,
        &origin.to_string(),
        &instance_type,
        &pol.instance_types,
        "policy.deploy.instance_types",
    );
    let count = match r.number("SAGEMAKER_ENDPOINT_INSTANCE_COUNT", 1) {
        None => 1,
        Some((n, origin)) => {
            check_max(
                &mut r.problems,
                &origin.to_string(),
                n,
                pol.max_instance_count,
                "policy.deploy.max_instance_count",
            );
            n
        }
    };
    Some(Capacity::Instances {
        instance_type,
        count,
    })
}

fn smoke(r: &mut Reader<'_>) -> Option<SmokeTest> {
    let file = r.text("SAGEMAKER_SMOKE_REQUEST");
    let Some(file) = file else {
        for var in [
            "SAGEMAKER_SMOKE_CONTENT_TYPE",
            "SAGEMAKER_SMOKE_EXPECT_STATUS",
            "SAGEMAKER_SMOKE_EXPECT",
        ] {
            if let Some(s) = r.text(var) {
                let origin = s.origin.clone();
                r.reject(
                    &origin,
                    "has no effect without a smoke request (SAGEMAKER_SMOKE_REQUEST)",
                );
            }
        }
        return None;
    };
    let path = std::path::Path::new(file.value.trim());
    if path.is_absolute()
        || path.components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
    {
        let origin = file.origin.clone();
        r.reject(
            &origin,
            "must be a relative path inside the project directory, without `..`",
        );
        return None;
    }
    let request_file = file.value.trim().to_owned();
    let content_type = r
        .text("SAGEMAKER_SMOKE_CONTENT_TYPE")
        .map(|s| s.value.trim().to_owned())
        .unwrap_or_else(|| "application/json".to_owned());
    if content_type.len() > 1024 || content_type.chars().any(char::is_control) {
        r.reject(
            &Origin::Variable("SAGEMAKER_SMOKE_CONTENT_TYPE".into()),
            "must be a MIME type of at most 1024 printable characters",
        );
    }
    let expect_status = match r.number("SAGEMAKER_SMOKE_EXPECT_STATUS", 100) {
        None => 200,
        Some((n, origin)) => match u16::try_from(n) {
            Ok(n) if n <= 599 => n,
            _ => {
                r.reject(&origin, format!("{n} is not an HTTP status"));
                200
            }
        },
    };
    let expect_body = match r.text("SAGEMAKER_SMOKE_EXPECT") {
        None => None,
        Some(s) => {
            let origin = s.origin.clone();
            let pattern = s.value.clone();
            match regex::RegexBuilder::new(&pattern)
                .size_limit(1 << 20)
                .build()
            {
                Ok(_) => Some(pattern),
                Err(_) => {
                    r.reject(
                        &origin,
                        format!("{} is not a valid regular expression", quoted(&pattern)),
                    );
                    None
                }
            }
        }
    };
    Some(SmokeTest {
        request_file,
        content_type,
        expect_status,
        expect_body,
    })
}

fn alarms(r: &mut Reader<'_>) -> Vec<String> {
    let Some(s) = r.text("SAGEMAKER_ALARMS") else {
        return Vec::new();
    };
    let origin = s.origin.clone();
    let names: Vec<String> = s
        .value
        .split(',')
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty())
        .collect();
    if names.len() > MAX_ALARMS {
        r.reject(
            &origin,
            format!("at most {MAX_ALARMS} alarms (SageMaker's limit)"),
        );
    }
    for a in &names {
        if a.len() > 255 || a.chars().any(char::is_control) {
            r.reject(
                &origin,
                format!("{} is not a CloudWatch alarm name", quoted(a)),
            );
        }
    }
    names
}

pub(super) fn resolve(
    r: &mut Reader<'_>,
    job: &Job,
    cfg: &ExecutorConfig,
) -> Option<DeploySettings> {
    let endpoint = endpoint(r, job, cfg);
    let model = model_source(r);
    let capacity = capacity(r, cfg);

    let strategy = match r.text("SAGEMAKER_STRATEGY") {
        None => Strategy::AllAtOnce {
            wait: Duration::ZERO,
        },
        Some(s) => {
            let origin = s.origin.clone();
            match Strategy::parse(&s.value) {
                Ok(st) => {
                    let shifts = !matches!(st, Strategy::AllAtOnce { .. });
                    if shifts && matches!(capacity, Some(Capacity::Serverless { .. })) {
                        r.reject(
                            &origin,
                            "serverless endpoints shift traffic all at once; use all-at-once",
                        );
                    }
                    st
                }
                Err(e) => {
                    r.reject(&origin, e);
                    Strategy::AllAtOnce {
                        wait: Duration::ZERO,
                    }
                }
            }
        }
    };
    let termination_wait = match r.duration("SAGEMAKER_TERMINATION_WAIT") {
        None => Duration::ZERO,
        Some((d, origin)) if d > MAX_WAIT => {
            r.reject(&origin, "is over SageMaker's limit of 1h");
            d
        }
        Some((d, _)) => d,
    };
    let alarms = alarms(r);
    let timeout = match r.duration("SAGEMAKER_DEPLOY_TIMEOUT") {
        None => Duration::from_secs(3600),
        Some((d, origin)) if d.is_zero() => {
            r.reject(&origin, "must be longer than 0s");
            d
        }
        Some((d, _)) => d,
    };
    let smoke = smoke(r);

    let data_capture = if r.flag("SAGEMAKER_DATA_CAPTURE").unwrap_or(false) {
        if matches!(capacity, Some(Capacity::Serverless { .. })) {
            r.reject(
                &Origin::Variable("SAGEMAKER_DATA_CAPTURE".into()),
                "serverless endpoints do not support data capture",
            );
        }
        let uri = match r.text("SAGEMAKER_DATA_CAPTURE_S3_URI") {
            Some(s) => {
                let origin = s.origin.clone();
                let uri = s.value.trim().trim_end_matches('/').to_owned();
                match s3_bucket(&uri) {
                    None => r.reject(&origin, format!("{} is not an s3:// URI", quoted(&uri))),
                    Some(b) => check_allowed(
                        &mut r.problems,
                        &origin.to_string(),
                        b,
                        &cfg.policy.train.buckets,
                        "policy.train.buckets",
                    ),
                }
                uri
            }
            None => format!(
                "s3://{}/{}/data-capture",
                cfg.staging.bucket, cfg.staging.prefix
            ),
        };
        Some(uri)
    } else {
        if let Some(s) = r.text("SAGEMAKER_DATA_CAPTURE_S3_URI") {
            let origin = s.origin.clone();
            r.reject(
                &origin,
                "has no effect unless SAGEMAKER_DATA_CAPTURE is true",
            );
        }
        None
    };
    let keep_failed_endpoint = r.flag("SAGEMAKER_KEEP_FAILED_ENDPOINT").unwrap_or(false);

    let role_arn = match r.text("SAGEMAKER_ROLE_ARN") {
        Some(s) => r.role(
            s,
            &cfg.policy.train.roles,
            "policy.train.roles",
            job,
            &cfg.policy,
        ),
        None => match &cfg.train.role_arn {
            Some(role) if is_role_arn(role) => Some(role.clone()),
            _ => {
                r.reject(
                    &Origin::Variable("SAGEMAKER_ROLE_ARN".into()),
                    "no execution role for the model: set SAGEMAKER_ROLE_ARN, or [train] role_arn in the executor config",
                );
                None
            }
        },
    };

    let (endpoint, stable) = endpoint?;
    Some(DeploySettings {
        allow_unapproved: !stable && cfg.policy.deploy.unapproved_to_candidates,
        endpoint,
        stable,
        model: model?,
        capacity: capacity?,
        strategy,
        termination_wait,
        alarms,
        timeout,
        smoke,
        data_capture,
        keep_failed_endpoint,
        role_arn: role_arn?,
    })
}

pub(super) fn resolve_undeploy(
    r: &mut Reader<'_>,
    job: &Job,
    cfg: &ExecutorConfig,
) -> Option<UndeploySettings> {
    endpoint(r, job, cfg).map(|(endpoint, _)| UndeploySettings { endpoint })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_parse_within_sagemakers_limits() {
        assert_eq!(
            Strategy::parse("all-at-once"),
            Ok(Strategy::AllAtOnce {
                wait: Duration::ZERO
            })
        );
        assert_eq!(
            Strategy::parse("all-at-once:2m"),
            Ok(Strategy::AllAtOnce {
                wait: Duration::from_secs(120)
            })
        );
        assert_eq!(
            Strategy::parse("canary:10:5m"),
            Ok(Strategy::Canary {
                percent: 10,
                wait: Duration::from_secs(300)
            })
        );
        assert_eq!(
            Strategy::parse(" Linear:20%:30 "),
            Ok(Strategy::Linear {
                percent: 20,
                wait: Duration::from_secs(30)
            })
        );
        for bad in [
            "",
            "canary",
            "canary:10",
            "canary:0:5m",
            "canary:60:5m",
            "linear:5:1m",
            "canary:10:2h",
            "canary:ten:5m",
            "canary:10:5m:x",
            "blue-green",
            "linear:20:soon",
        ] {
            assert!(Strategy::parse(bad).is_err(), "{bad:?} parsed");
        }
        let long = format!("canary:{}", "9".repeat(500));
        let e = Strategy::parse(&long).expect_err("too long");
        assert!(e.len() < 300, "{e}");
        assert_eq!(
            Strategy::parse("canary:10:5m").map(|s| s.to_string()),
            Ok("canary 10%, bake 5m, then the rest".to_owned())
        );
    }

    fn job(git_ref: &str, vars: &[(&str, &str)]) -> Job {
        Job {
            id: 42,
            name: "deploy".into(),
            project_id: 7,
            project_path: "ml/Churn_Model".into(),
            pipeline_id: 3,
            url: "https://gitlab.example.com/ml/churn/-/jobs/42".into(),
            git_ref: git_ref.into(),
            sha: "abc".into(),
            ref_protected: false,
            default_branch: Some("main".into()),
            image: None,
            timeout: Duration::from_secs(3600),
            variables: crate::job::Variables::new(vars.iter().map(|(k, v)| {
                (
                    (*k).to_owned(),
                    crate::job::Variable {
                        value: (*v).to_owned(),
                        masked: false,
                        file: false,
                    },
                )
            })),
        }
    }

    #[test]
    fn endpoint_names_derive_from_project_and_ref() {
        assert_eq!(
            default_endpoint_name(&job("main", &[])),
            "churn-model-stable"
        );
        assert_eq!(
            default_endpoint_name(&job("feature/New_thing", &[])),
            "churn-model-candidate-feature-new-thing"
        );
        assert_eq!(
            default_endpoint_name(&job(
                "feature/x",
                &[("CI_MERGE_REQUEST_IID", "17"), ("CI_PROJECT_NAME", "churn")]
            )),
            "churn-candidate-mr17"
        );
        let long_a = default_endpoint_name(&job(&format!("feature/{}-a", "x".repeat(80)), &[]));
        let long_b = default_endpoint_name(&job(&format!("feature/{}-b", "x".repeat(80)), &[]));
        assert!(is_endpoint_name(&long_a), "{long_a}");
        assert_eq!(long_a.len(), 63);
        assert_ne!(long_a, long_b, "the hash keeps long names apart");
        assert_eq!(
            long_a,
            default_endpoint_name(&job(&format!("feature/{}-a", "x".repeat(80)), &[])),
            "deterministic"
        );
        assert!(is_endpoint_name(&default_endpoint_name(&job(
            "---",
            &[("CI_PROJECT_NAME", "__")]
        ))));
    }

    fn config(policy: &str) -> ExecutorConfig {
        let text = format!(
            r#"
region = "us-east-1"
[paths]
builds_root = "/b"
cache_root = "/c"
[staging]
bucket = "ci-staging"
[train]
role_arn = "arn:aws:iam::123456789012:role/SageMakerCI"
[policy]
allowed_actions = ["deploy", "undeploy"]
protected_ref_actions = []
{policy}
"#
        );
        crate::config::load_str(&text, std::path::Path::new("t.toml")).expect("config loads")
    }

    const OPEN: &str = "[policy.deploy]\nendpoints = [\"churn-*\"]\nstable_endpoints = [\"*-stable\"]\ninstance_types = [\"ml.m5.*\"]\nmax_instance_count = 2\n";
    const PKG: &str = "arn:aws:sagemaker:us-east-1:123456789012:model-package/churn/3";

    fn resolve_with(
        policy: &str,
        git_ref: &str,
        protected: bool,
        vars: &[(&str, &str)],
    ) -> Result<DeploySettings, Vec<String>> {
        let mut j = job(git_ref, vars);
        j.ref_protected = protected;
        let s = super::super::Settings::collect(&j, None);
        match super::super::resolve(&j, super::super::JobShape::default(), &config(policy), &s) {
            Ok(super::super::Plan::Deploy(d)) => Ok(*d),
            Ok(other) => panic!("not a deploy: {other:?}"),
            Err(e) => Err(e.iter().map(|r| r.to_string()).collect()),
        }
    }

    #[test]
    fn deploy_settings_resolve_with_defaults_and_the_upstream_package() {
        let d = resolve_with(
            OPEN,
            "feature/x",
            false,
            &[
                ("SAGEMAKER_ACTION", "deploy"),
                ("CI_MERGE_REQUEST_IID", "5"),
                ("CI_PROJECT_NAME", "churn"),
                ("SAGEMAKER_MODEL_PACKAGE_ARN", PKG),
                ("SAGEMAKER_STRATEGY", "linear:25:1m"),
                ("SAGEMAKER_ALARMS", "errors, latency"),
                ("SAGEMAKER_SMOKE_REQUEST", "tests/smoke.json"),
            ],
        )
        .expect("resolves");
        assert_eq!(d.endpoint, "churn-candidate-mr5");
        assert!(!d.stable && !d.allow_unapproved);
        assert_eq!(d.model, ModelSource::Package(PKG.into()));
        assert_eq!(
            d.capacity,
            Capacity::Instances {
                instance_type: "ml.m5.large".into(),
                count: 1
            }
        );
        assert_eq!(d.alarms, ["errors", "latency"]);
        assert_eq!(d.role_arn, "arn:aws:iam::123456789012:role/SageMakerCI");
        let smoke = d.smoke.expect("smoke");
        assert_eq!(
            (smoke.expect_status, smoke.content_type.as_str()),
            (200, "application/json")
        );
    }

    #[test]
    fn the_policy_refuses_with_one_line_per_setting() {
        let e = resolve_with(
            OPEN,
            "main",
            false,
            &[
                ("SAGEMAKER_ACTION", "deploy"),
                ("CI_PROJECT_NAME", "churn"),
                ("SAGEMAKER_MODEL_PACKAGE_GROUP", "churn"),
            ],
        )
        .expect_err("stable from an unprotected ref");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("SAGEMAKER_ENDPOINT_NAME: endpoint \"churn-stable\" counts as stable"),
            "{e:?}"
        );
        let e = resolve_with(
            OPEN,
            "feature/x",
            false,
            &[
                ("SAGEMAKER_ACTION", "deploy"),
                ("SAGEMAKER_ENDPOINT_NAME", "other-model"),
                ("SAGEMAKER_MODEL_PACKAGE", PKG),
                ("SAGEMAKER_ENDPOINT_INSTANCE_TYPE", "ml.p5.48xlarge"),
                ("SAGEMAKER_ENDPOINT_INSTANCE_COUNT", "3"),
                ("SAGEMAKER_SERVERLESS_MEMORY_MB", "2048"),
                ("SAGEMAKER_SMOKE_REQUEST", "../etc/passwd"),
                ("SAGEMAKER_STRATEGY", "canary:90:1m"),
            ],
        )
        .expect_err("refused");
        let joined = e.join("\n");
        for needle in [
            "SAGEMAKER_ENDPOINT_NAME: endpoint \"other-model\" is not allowed by policy.deploy.endpoints",
            "SAGEMAKER_ENDPOINT_INSTANCE_TYPE: \"ml.p5.48xlarge\" is not allowed by policy.deploy.instance_types",
            "SAGEMAKER_ENDPOINT_INSTANCE_COUNT: 3 is over policy.deploy.max_instance_count = 2",
            "SAGEMAKER_SMOKE_REQUEST: must be a relative path",
            "SAGEMAKER_SERVERLESS_MEMORY_MB: has no effect unless SAGEMAKER_SERVERLESS is true",
            "SAGEMAKER_STRATEGY: traffic share \"90\"",
        ] {
            assert!(joined.contains(needle), "{needle:?} missing in {joined}");
        }
        // Closed by default: no [policy.deploy] allows no endpoint, and serverless is refused.
        let e = resolve_with(
            "[policy.deploy]\nendpoints = [\"churn-*\"]\nstable_endpoints = []\n",
            "feature/x",
            false,
            &[
                ("SAGEMAKER_ACTION", "deploy"),
                ("SAGEMAKER_ENDPOINT_NAME", "churn-x"),
                ("SAGEMAKER_MODEL_PACKAGE", PKG),
                ("SAGEMAKER_SERVERLESS", "true"),
            ],
        )
        .expect_err("serverless");
        assert!(
            e[0].contains("policy.deploy.allow_serverless = false"),
            "{e:?}"
        );
        let e = resolve_with(
            "",
            "main",
            true,
            &[
                ("SAGEMAKER_ACTION", "deploy"),
                ("SAGEMAKER_MODEL_PACKAGE", PKG),
            ],
        )
        .expect_err("no endpoints allowed");
        assert!(
            e[0].contains("is not allowed by policy.deploy.endpoints []"),
            "{e:?}"
        );
    }

    #[test]
    fn the_spec_file_names_its_keys() {
        let spec = crate::settings::spec::parse(
            "deploy:\n  endpoint_name: churn-x\n  strategy: canary:10:nope\n  serverless: {memory_mb: 3000}\n  smoke_test: {request: s.json, expect_status: 204}\n",
        )
        .expect("parses");
        let mut j = job(
            "feature/x",
            &[
                ("SAGEMAKER_ACTION", "deploy"),
                ("SAGEMAKER_MODEL_PACKAGE", PKG),
            ],
        );
        j.ref_protected = false;
        let s = super::super::Settings::collect(&j, Some(("ci/spec.yml", &spec)));
        let cfg = config(
            "[policy.deploy]\nendpoints = [\"churn-*\"]\nstable_endpoints = []\nallow_serverless = true\n",
        );
        let e = super::super::resolve(&j, super::super::JobShape::default(), &cfg, &s)
            .expect_err("refused");
        let joined: Vec<String> = e.iter().map(|r| r.to_string()).collect();
        let joined = joined.join("\n");
        assert!(
            joined.contains("ci/spec.yml: deploy.strategy: bake time \"nope\""),
            "{joined}"
        );
        assert!(
            joined.contains("ci/spec.yml: deploy.serverless.memory_mb: 3000 is not one of"),
            "{joined}"
        );
    }

    #[test]
    fn undeploy_reads_the_upstream_endpoint_name() {
        let j = job(
            "feature/x",
            &[
                ("SAGEMAKER_ACTION", "undeploy"),
                ("SAGEMAKER_ENDPOINT_NAME", "churn-candidate-mr5"),
            ],
        );
        let s = super::super::Settings::collect(&j, None);
        match super::super::resolve(&j, super::super::JobShape::default(), &config(OPEN), &s) {
            Ok(super::super::Plan::Undeploy(u)) => assert_eq!(u.endpoint, "churn-candidate-mr5"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_and_package_arns() {
        assert!(is_endpoint_name("churn-stable") && is_endpoint_name("A1"));
        assert!(!is_endpoint_name("-a") && !is_endpoint_name("a-") && !is_endpoint_name("a_b"));
        assert!(!is_endpoint_name(&"a".repeat(64)) && !is_endpoint_name(""));
        assert!(is_package_arn(
            "arn:aws:sagemaker:us-east-1:123456789012:model-package/churn/3"
        ));
        assert!(!is_package_arn("churn/3") && !is_package_arn("arn:aws:sagemaker:r:1:model/x"));
        assert!(is_instance_type("ml.m5.large") && is_instance_type("ml.inf2.xlarge"));
        assert!(!is_instance_type("m5.large") && !is_instance_type("ml.m5"));
    }
}
