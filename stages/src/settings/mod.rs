//! A job's settings: the action and what it needs, from job variables (`SAGEMAKER_*`,
//! `FARGATE_*`, `ECS_*`) and the optional spec file, with variables winning. Resolution also
//! applies the executor's defaults and the admin policy, so a resolved plan is one the job may run.

mod deploy;
mod ecs_deploy;
mod fargate;
mod register;
pub mod spec;
mod train;

use std::collections::BTreeMap;
use std::fmt;

pub use deploy::{
    Capacity, DeploySettings, DeploySpec, ModelSource, SmokeTest, Strategy, UndeploySettings,
    default_endpoint_name, is_endpoint_name,
};
pub use ecs_deploy::EcsDeploySettings;
pub use fargate::{Architecture, FargateSettings};
pub use register::{GateFailure, GateSetting, RegisterSettings, RegisterSpec, is_group_name};
pub use spec::Spec;
pub use train::{SpotSettings, TrainSettings, WORKSPACE_CHANNEL};

use crate::action::Action;
use crate::config::ExecutorConfig;
use crate::duration::parse_duration;
use crate::job::Job;
use crate::policy::Rejection;

/// Variable names this executor reads. `SAGEMAKER_` is the executor's own namespace: any other
/// variable there is a typo and refused, so a misspelt limit never silently falls back to a
/// default. `FARGATE_` and `ECS_` are shared with other tools: there only a near miss of one of
/// these names (see [`likely_typo`]) is refused, and anything else passes untouched.
const KNOWN: &[&str] = &[
    "SAGEMAKER_ACTION",
    "SAGEMAKER_SPEC",
    "SAGEMAKER_INSTANCE_TYPE",
    "SAGEMAKER_INSTANCE_COUNT",
    "SAGEMAKER_VOLUME_SIZE_GB",
    "SAGEMAKER_MAX_RUNTIME",
    "SAGEMAKER_SPOT",
    "SAGEMAKER_MAX_WAIT",
    "SAGEMAKER_CHECKPOINT_S3_URI",
    "SAGEMAKER_ROLE_ARN",
    "SAGEMAKER_OUTPUT_PATH",
    "SAGEMAKER_KEEP_ALIVE",
    // Per-job credentials: read from the job's variables by `aws::credentials`, never from a
    // spec file.
    "SAGEMAKER_ID_TOKEN",
    "SAGEMAKER_AWS_ROLE_ARN",
    "FARGATE_CPU",
    "FARGATE_MEMORY",
    "FARGATE_EPHEMERAL_STORAGE_GB",
    "FARGATE_SPOT",
    "FARGATE_ARCHITECTURE",
    "FARGATE_TASK_ROLE_ARN",
    "ECS_CLUSTER",
    "ECS_SERVICE",
    "ECS_CONTAINER",
    "ECS_IMAGE",
    "ECS_TIMEOUT",
];
const KNOWN_PREFIXES: &[&str] = &["SAGEMAKER_INPUT_", "SAGEMAKER_METRIC_", "SAGEMAKER_TAG_"];
const OWNED_PREFIXES: &[&str] = &["SAGEMAKER_", "FARGATE_", "ECS_"];

/// Whether `var`, unknown, is within two edits of a known name: `ECS_CLUSTR`, not
/// `ECS_ENABLE_CONTAINER_METADATA`.
fn likely_typo(var: &str) -> bool {
    KNOWN
        .iter()
        .chain(register::KNOWN)
        .chain(deploy::KNOWN)
        .any(|k| strsim::levenshtein(k, var) <= 2)
}

/// Every setting name some action reads, then the prefixes of the per-key ones
/// (`SAGEMAKER_TAG_`, ...): what a fuzzer or a generator of job variables names.
pub fn known_names() -> impl Iterator<Item = &'static str> {
    KNOWN
        .iter()
        .chain(register::KNOWN)
        .chain(deploy::KNOWN)
        .chain(KNOWN_PREFIXES)
        .copied()
}

/// Whether `var` is one of the settings some action reads.
fn is_known(var: &str) -> bool {
    KNOWN.contains(&var) || register::KNOWN.contains(&var) || deploy::KNOWN.contains(&var)
}

/// Where a setting's value came from, named the way the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A job variable.
    Variable(String),
    /// A key of the spec file.
    Spec {
        /// The file's path in the repository.
        file: String,
        /// The dotted key.
        key: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Variable(v) => f.write_str(v),
            Origin::Spec { file, key } => write!(f, "{file}: {key}"),
        }
    }
}

/// One setting's value.
#[derive(Debug, Clone)]
pub struct Setting {
    /// The raw text.
    pub value: String,
    /// Where it came from.
    pub origin: Origin,
}

/// Every setting of a job under its variable name.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    map: BTreeMap<String, Setting>,
    unknown: Vec<String>,
}

impl Settings {
    /// Collects settings from the spec (if any) and then the variables, which win.
    pub fn collect(job: &Job, spec: Option<(&str, &Spec)>) -> Settings {
        let mut s = Settings::default();
        if let Some((file, spec)) = spec {
            for (var, key, value) in spec.flatten() {
                s.map.insert(
                    var,
                    Setting {
                        value,
                        origin: Origin::Spec {
                            file: file.to_owned(),
                            key,
                        },
                    },
                );
            }
        }
        for prefix in OWNED_PREFIXES {
            for (rest, value) in job.variables.with_prefix(prefix) {
                let var = format!("{prefix}{rest}");
                let known = is_known(&var)
                    || KNOWN_PREFIXES
                        .iter()
                        .any(|p| var.starts_with(p) && var.len() > p.len());
                if crate::outputs::is_output_key(&var) && !is_known(&var) {
                    // An upstream job's output (dotenv), not a setting of this job.
                    continue;
                }
                if known {
                    s.map.insert(
                        var.clone(),
                        Setting {
                            value: value.to_owned(),
                            origin: Origin::Variable(var),
                        },
                    );
                } else {
                    if *prefix == "SAGEMAKER_" || likely_typo(&var) {
                        s.unknown.push(var);
                    }
                }
            }
        }
        s
    }

    /// The setting stored under variable name `var`.
    pub fn get(&self, var: &str) -> Option<&Setting> {
        self.map.get(var)
    }

    /// The settings whose variable names start with `prefix`, with the rest of the name.
    pub fn with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Setting)> {
        self.map
            .range(prefix.to_owned()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(move |(k, v)| (&k[prefix.len()..], v))
    }
}

/// Parses settings into typed values, collecting a [`Rejection`] for each bad one.
pub(crate) struct Reader<'a> {
    pub settings: &'a Settings,
    pub problems: Vec<Rejection>,
}

impl<'a> Reader<'a> {
    pub fn new(settings: &'a Settings) -> Self {
        Reader {
            settings,
            problems: Vec::new(),
        }
    }

    pub fn reject(&mut self, origin: &Origin, reason: impl Into<String>) {
        self.problems
            .push(Rejection::new(origin.to_string(), reason));
    }

    pub fn text(&self, var: &str) -> Option<&'a Setting> {
        self.settings
            .get(var)
            .filter(|s| !s.value.trim().is_empty())
    }

    pub fn number(&mut self, var: &str, min: u32) -> Option<(u32, Origin)> {
        let s = self.text(var)?;
        match s.value.trim().parse::<u32>() {
            Ok(n) if n >= min => Some((n, s.origin.clone())),
            Ok(n) => {
                self.reject(&s.origin, format!("{n} is below the minimum {min}"));
                None
            }
            Err(_) => {
                self.reject(
                    &s.origin,
                    format!(
                        "{} is not a whole number from {min} to {}",
                        crate::excerpt::quoted(&s.value),
                        u32::MAX
                    ),
                );
                None
            }
        }
    }

    pub fn flag(&mut self, var: &str) -> Option<bool> {
        let s = self.text(var)?;
        match s.value.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => {
                self.reject(
                    &s.origin,
                    format!("{} is not true or false", crate::excerpt::quoted(&s.value)),
                );
                None
            }
        }
    }

    /// A role ARN setting, refused when it is not an IAM role ARN, not allowed by `allowed`
    /// (named `rule` in the message), or not allowed for the job's project by
    /// `[policy.projects]`; every role a job names is read through this.
    pub fn role(
        &mut self,
        s: &Setting,
        allowed: &crate::policy::Patterns,
        rule: &str,
        job: &Job,
        policy: &crate::policy::Policy,
    ) -> Option<String> {
        if !crate::names::is_role_arn(&s.value) {
            self.reject(
                &s.origin,
                format!(
                    "{} is not an IAM role ARN",
                    crate::excerpt::quoted(&s.value)
                ),
            );
            return None;
        }
        crate::policy::check_allowed(
            &mut self.problems,
            &s.origin.to_string(),
            &s.value,
            allowed,
            rule,
        );
        crate::policy::projects::check_named_role(
            &mut self.problems,
            &policy.projects,
            &job.project_path,
            &s.value,
            &s.origin.to_string(),
        );
        Some(s.value.clone())
    }

    pub fn duration(&mut self, var: &str) -> Option<(std::time::Duration, Origin)> {
        let s = self.text(var)?;
        match parse_duration(&s.value) {
            Ok(d) => Some((d, s.origin.clone())),
            Err(e) => {
                self.reject(&s.origin, e);
                None
            }
        }
    }
}

/// What the job will do, with every setting resolved and allowed.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Run the script as a SageMaker training job.
    Train(TrainSettings),
    /// Run the script as an ECS Fargate task.
    Fargate(FargateSettings),
    /// Move an ECS service to a new image.
    EcsDeploy(EcsDeploySettings),
    /// Register the trained model in the Model Registry.
    Register(Box<RegisterSettings>),
    /// Deploy a model to an endpoint.
    Deploy(Box<DeploySettings>),
    /// Tear an endpoint down.
    Undeploy(UndeploySettings),
    /// An action this build of the executor does not serve yet.
    NotServed(Action),
}

impl Plan {
    /// The plan's action.
    pub fn action(&self) -> Action {
        match self {
            Plan::Train(_) => Action::Train,
            Plan::Fargate(_) => Action::Fargate,
            Plan::EcsDeploy(_) => Action::EcsDeploy,
            Plan::Register(_) => Action::Register,
            Plan::Deploy(_) => Action::Deploy,
            Plan::Undeploy(_) => Action::Undeploy,
            Plan::NotServed(a) => *a,
        }
    }
}

/// Job shape facts the policy looks at besides settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobShape {
    /// The job has an `after_script`.
    pub has_after_script: bool,
    /// The job uses runner hooks.
    pub has_hooks: bool,
}

/// Resolves the job's plan: action, settings, defaults, policy. Every problem is returned.
pub fn resolve(
    job: &Job,
    shape: JobShape,
    cfg: &ExecutorConfig,
    settings: &Settings,
) -> Result<Plan, Vec<Rejection>> {
    let mut r = Reader::new(settings);
    for u in &settings.unknown {
        r.reject(
            &Origin::Variable(u.clone()),
            "unknown setting (check the spelling; see the README for the list)",
        );
    }
    let action = match r.text("SAGEMAKER_ACTION") {
        None => cfg.default_action,
        Some(s) => match s.value.parse::<Action>() {
            Ok(a) => a,
            Err(e) => {
                r.reject(&s.origin, e.to_string());
                return Err(r.problems);
            }
        },
    };
    let action_setting = r
        .text("SAGEMAKER_ACTION")
        .map(|s| s.origin.to_string())
        .unwrap_or_else(|| "SAGEMAKER_ACTION".into());
    let refused = cfg
        .policy
        .check_action(action, job.ref_protected, &action_setting);
    if !refused.is_empty() {
        // The action's own settings do not matter when the action itself is refused.
        r.problems.extend(refused);
        return Err(r.problems);
    }
    if shape.has_after_script && !cfg.policy.allow_after_script {
        r.problems.push(Rejection::new(
            "after_script",
            "after_script is not allowed on this runner (policy.allow_after_script = false)",
        ));
    }
    if shape.has_hooks && !cfg.policy.allow_hooks {
        r.problems.push(Rejection::new(
            "hooks",
            "job hooks are not allowed on this runner (policy.allow_hooks = false)",
        ));
    }
    let plan = match action {
        Action::Train => train::resolve(&mut r, job, cfg).map(Plan::Train),
        Action::Fargate => fargate::resolve(&mut r, job, cfg).map(Plan::Fargate),
        Action::EcsDeploy => ecs_deploy::resolve(&mut r, cfg).map(Plan::EcsDeploy),
        Action::Register => {
            register::resolve(&mut r, job, cfg).map(|s| Plan::Register(Box::new(s)))
        }
        Action::Deploy => deploy::resolve(&mut r, job, cfg).map(|s| Plan::Deploy(Box::new(s))),
        Action::Undeploy => deploy::resolve_undeploy(&mut r, job, cfg).map(Plan::Undeploy),
    };
    match plan {
        Some(p) if r.problems.is_empty() => Ok(p),
        _ => Err(r.problems),
    }
}

#[cfg(test)]
mod tests;
