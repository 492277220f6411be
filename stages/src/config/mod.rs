//! The executor's own config file (TOML), loaded in two phases.
//!
//! Phase one reads the file's shape ([`raw`]) and collects every unknown key; phase two
//! ([`validate`]) checks values and fills defaults, collecting every problem. A file with any
//! problem is refused as a whole: the policy fails closed, so a typo can never loosen it.
//! `sagemaker-executor validate` and every protocol stage share [`load_file`].

mod deploy;
mod raw;
mod register;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::action::Action;
use crate::policy::Policy;

/// The validated config.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// AWS region for every call.
    pub region: String,
    /// Action for jobs that do not set `SAGEMAKER_ACTION`.
    pub default_action: Action,
    /// Directories on the runner host.
    pub paths: Paths,
    /// Where workspaces are staged.
    pub staging: Staging,
    /// AWS client settings.
    pub aws: AwsSettings,
    /// Defaults for training jobs.
    pub train: TrainDefaults,
    /// The ECS environment for Fargate jobs, when configured.
    pub fargate: Option<FargateEnv>,
    /// What jobs may ask for.
    pub policy: Policy,
    /// The unprivileged user local stages run as (`[local] user`); `None`: the executor's own.
    pub local_user: Option<LocalUser>,
    /// How waits learn about status changes and log lines (`[watch]`).
    pub watch: WatchSettings,
}

/// `[watch]`: push sources for waits. Both are off by default; polling is always the fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSettings {
    /// An SQS queue that receives EventBridge state-change events for this runner host
    /// (SageMaker training jobs and endpoints, ECS tasks and deployments); `None`: poll only.
    pub queue_url: Option<String>,
    /// While the queue is delivering, the longest pause between status calls: a safety net for
    /// an event that never arrives.
    pub safety_interval: Duration,
    /// Whether remote runs' logs are followed with CloudWatch Live Tail (GetLogEvents still
    /// reads the head of each stream, every gap and the final drain).
    pub live_tail: bool,
    /// Whether the waiting jobs of this host share one Live Tail session per log group and one
    /// reader of the queue, through a watcher process the first of them starts.
    pub host_watcher: bool,
    /// How long the host watcher stays up without a waiting job.
    pub host_watcher_idle: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            queue_url: None,
            safety_interval: DEFAULT_SAFETY_INTERVAL,
            live_tail: false,
            host_watcher: true,
            host_watcher_idle: DEFAULT_HOST_WATCHER_IDLE,
        }
    }
}

/// `[watch] safety_interval` by default.
pub const DEFAULT_SAFETY_INTERVAL: Duration = Duration::from_secs(300);

/// `[watch] host_watcher_idle` by default: a job that starts within it finds the watcher's
/// sessions already running.
pub const DEFAULT_HOST_WATCHER_IDLE: Duration = Duration::from_secs(60);

/// An unprivileged host user, resolved when the config is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalUser {
    /// The name as configured.
    pub name: String,
    /// Its uid (never 0).
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

/// `[paths]`.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Parent of the per-job builds dirs.
    pub builds_root: PathBuf,
    /// The runner's cache dir (shared by jobs, keyed by project inside).
    pub cache_root: PathBuf,
    /// Per-job state files.
    pub state_root: PathBuf,
}

/// `[staging]`.
#[derive(Debug, Clone)]
pub struct Staging {
    /// Bucket for staged workspaces.
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing `/`).
    pub prefix: String,
    /// Largest returned workspace the executor extracts.
    pub max_return_bytes: u64,
    /// KMS key (ARN, key id or `alias/...`) that staged objects, training outputs and returned
    /// workspaces are encrypted with; `None`: the bucket's default encryption.
    pub kms_key_id: Option<String>,
}

/// Whose credentials a job's AWS calls use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsMode {
    /// The runner host's default chain (and `assume_role_arn` when set).
    Runner,
    /// A role per job, from the job's GitLab OIDC token.
    Job(JobCredentialsSettings),
}

/// `[aws.job_credentials]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCredentialsSettings {
    /// The GitLab instance that signs the tokens (their `iss` claim), e.g.
    /// `https://gitlab.example.com`; also the IAM OIDC provider `doctor` looks for.
    pub issuer: String,
    /// The job variable that holds the token (the job's `id_tokens` entry).
    pub token_variable: String,
    /// The audience the token must be issued for (its `aud` claim).
    pub audience: String,
    /// The role for jobs that name none, with `{project_path}` placeholders.
    pub role_arn: Option<String>,
    /// How long one session lasts before it is refreshed.
    pub session_duration: Duration,
    /// Whether a second hop (AssumeRole on the same role) adds session tags for project and job.
    pub session_tags: bool,
}

/// `[aws]`.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    /// Whose credentials jobs use.
    pub credentials: CredentialsMode,
    /// A role the executor assumes for all its AWS work.
    pub assume_role_arn: Option<String>,
    /// Attempts per call under the SDK's adaptive retry (throttling never fails a job quickly).
    pub max_attempts: u32,
    /// Path-style S3 addressing, for S3-compatible endpoints reached by host name.
    pub s3_force_path_style: bool,
}

/// `[train]`.
#[derive(Debug, Clone)]
pub struct TrainDefaults {
    /// Image for jobs without `image:`.
    pub image: Option<String>,
    /// Execution role for jobs that do not name one.
    pub role_arn: Option<String>,
    /// Instance type default.
    pub instance_type: String,
    /// Instance count default.
    pub instance_count: u32,
    /// Volume size default.
    pub volume_size_gb: u32,
    /// Runtime limit default.
    pub max_runtime: Duration,
    /// Model output location default (`s3://bucket/prefix`).
    pub output_path: String,
    /// How long a cancelled job may take to reach Stopped before the executor gives up waiting.
    pub stop_grace: Duration,
    /// Longest pause between DescribeTrainingJob calls while nothing changes.
    pub describe_interval: Duration,
    /// Pause between log reads while lines are flowing (doubles while idle, up to 3x).
    pub log_interval: Duration,
}

/// `[fargate]`.
#[derive(Debug, Clone)]
pub struct FargateEnv {
    /// Cluster name or ARN.
    pub cluster: String,
    /// Subnets for the task ENI.
    pub subnets: Vec<String>,
    /// Security groups for the task ENI.
    pub security_groups: Vec<String>,
    /// Whether the task gets a public IP.
    pub assign_public_ip: bool,
    /// Role ECS uses to pull images and write logs.
    pub execution_role_arn: String,
    /// Default task role.
    pub task_role_arn: Option<String>,
    /// awslogs group for task containers.
    pub log_group: String,
    /// Image of the workspace helper containers.
    pub helper_image: String,
    /// The executor binary inside the helper image, as an entry point (`["sagemaker-executor"]`
    /// by default); the helper containers run `<helper_command> workspace fetch|push ...`.
    pub helper_command: Vec<String>,
    /// Default CPU units.
    pub cpu: u32,
    /// Default memory in MiB.
    pub memory: u32,
    /// How long a cancelled task may take to stop.
    pub stop_grace: Duration,
}

/// One thing wrong with the file: the key path and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path, e.g. `policy.train.max_instance_count`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read executor config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("executor config {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The file is TOML but breaks rules; every problem is listed.
    #[error("executor config {path} has {} problem(s):\n{}", problems.len(), render(problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<ConfigProblem>,
    },
}

fn render(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads and validates the config at `path`.
pub fn load_file(path: &Path) -> Result<ExecutorConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    load_str(&text, path)
}

/// What a stage that runs on the runner host (`get_sources`, `after_script`, ...) needs: where
/// the job's dir is and which user runs the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStageConfig {
    /// `[paths] builds_root`.
    pub builds_root: PathBuf,
    /// `[local] user`, resolved.
    pub local_user: Option<LocalUser>,
}

/// Reads only `[paths] builds_root` and `[local] user` from the config at `path`. A local stage
/// runs after the same job's `prepare` loaded and validated the whole file, so it skips the
/// policy (its patterns are compiled globs) and everything else it does not use: every local
/// stage pays for what it reads, and most stages of a job are local.
///
/// # Errors
/// The file cannot be read, is not TOML, or these two keys are wrong.
pub fn load_host_stage(path: &Path) -> Result<HostStageConfig, ConfigError> {
    #[derive(serde::Deserialize)]
    struct Parts {
        paths: Option<raw::RawPaths>,
        local: Option<raw::RawLocal>,
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let parts: Parts = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        message: e.to_string().trim().replace('\n', " "),
    })?;
    let mut problems = Vec::new();
    let mut c = validate::Checker {
        problems: &mut problems,
    };
    let builds_root = c.abs_path("paths.builds_root", parts.paths.and_then(|p| p.builds_root));
    // Whether the policy requires a user was checked at prepare.
    let local_user = validate::local_user(&mut c, parts.local.and_then(|l| l.user), false);
    match builds_root {
        Some(builds_root) if problems.is_empty() => Ok(HostStageConfig {
            builds_root,
            local_user,
        }),
        _ => Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        }),
    }
}

/// Validates config text; `path` is only used in messages.
pub fn load_str(text: &str, path: &Path) -> Result<ExecutorConfig, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        message: e.to_string().trim().replace('\n', " "),
    })?;
    let mut problems = Vec::new();
    let raw = raw_from_table(table, &mut problems);
    match validate::validate(raw, &mut problems) {
        Some(cfg) if problems.is_empty() => Ok(cfg),
        _ => Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        }),
    }
}

/// Deserializes the shape, recording unknown keys and type errors instead of stopping at one.
fn raw_from_table(table: toml::Table, problems: &mut Vec<ConfigProblem>) -> raw::RawConfig {
    let mut raw = raw::RawConfig::default();
    // Each top-level key is deserialized on its own so a type error in one section does not hide
    // the problems of the others.
    for (key, value) in table {
        let mut one = toml::Table::new();
        one.insert(key.clone(), value);
        let mut unknown = Vec::new();
        let value = toml::Value::Table(one);
        // serde_ignored writes `?` for each Option it passes through; users never see those.
        let mut record = |p: serde_ignored::Path<'_>| unknown.push(p.to_string().replace("?.", ""));
        let ignoring = serde_ignored::Deserializer::new(value, &mut record);
        let parsed: Result<raw::RawConfig, _> = serde_path_to_error::deserialize(ignoring);
        for u in unknown {
            problems.push(ConfigProblem {
                key: u,
                message: "unknown key (check the spelling; unknown keys are never ignored)".into(),
            });
        }
        match parsed {
            Ok(part) => merge(&mut raw, part),
            Err(e) => problems.push(ConfigProblem {
                key: e.path().to_string(),
                message: e.into_inner().to_string(),
            }),
        }
    }
    raw
}

fn merge(into: &mut raw::RawConfig, part: raw::RawConfig) {
    // Destructured, so a section added to `RawConfig` cannot be forgotten here.
    let raw::RawConfig {
        region,
        default_action,
        paths,
        staging,
        aws,
        train,
        fargate,
        policy,
        local,
        watch,
    } = part;
    macro_rules! take {
        ($($f:ident),*) => { $( if $f.is_some() { into.$f = $f; } )* };
    }
    take!(
        region,
        default_action,
        paths,
        staging,
        aws,
        train,
        fargate,
        policy,
        local,
        watch
    );
}

#[cfg(test)]
mod tests;
