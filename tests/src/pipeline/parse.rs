//! `.gitlab-ci.yml` into a [`Pipeline`]: global keywords, `.hidden` templates, `extends`
//! (GitLab's deep merge: maps merge, everything else is replaced, the job's own keys win),
//! `default:` (a job keyword the job lacks), YAML anchors and `<<` merge keys, then every job
//! converted keyword by keyword.
//!
//! Like the product's config, parsing collects *every* problem instead of stopping at the
//! first: a keyword GitLab has but the emulator does not run is one line naming the keyword
//! and the job ("not supported by the runner emulator"), never silently ignored; a key GitLab
//! does not know is an "unknown keyword".

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use super::expand::Var;
use super::rules::Expr;
use crate::runner::{Artifacts, Cache, Image};

/// A parsed pipeline file.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// `stages:` with `.pre` first and `.post` last.
    pub stages: Vec<String>,
    /// Global `variables:`.
    pub variables: Vec<Var>,
    /// `workflow:rules`, if any.
    pub workflow_rules: Option<Vec<Rule>>,
    /// The jobs (not the `.hidden` ones), in file order.
    pub jobs: Vec<Job>,
}

impl Pipeline {
    /// The job named `name`.
    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// The position of `stage` in `stages`.
    pub fn stage_index(&self, stage: &str) -> usize {
        self.stages
            .iter()
            .position(|s| s == stage)
            .unwrap_or(usize::MAX)
    }
}

/// `when:` of a job or a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Runs when every earlier job (or every need) succeeded.
    OnSuccess,
    /// Runs when an earlier job (or a need) failed.
    OnFailure,
    /// Runs whatever happened before.
    Always,
    /// Waits for someone to start it (or, for an `on_stop` job, for the environment to stop).
    Manual,
    /// Not added to the pipeline (rules only).
    Never,
}

/// `allow_failure:`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowFailure {
    /// `allow_failure: true`.
    pub any: bool,
    /// `allow_failure: {exit_codes: [...]}`.
    pub exit_codes: Vec<i32>,
}

/// One entry of `rules:`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `if:` as written and parsed; `None` matches always.
    pub condition: Option<(String, Expr)>,
    /// `when:` (default on_success).
    pub when: Option<When>,
    /// `allow_failure:`.
    pub allow_failure: Option<bool>,
    /// `variables:` applied when this rule matches.
    pub variables: Vec<Var>,
}

/// One entry of `needs:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// The job.
    pub job: String,
    /// Download its artifacts and dotenv variables (default true).
    pub artifacts: bool,
    /// The need is dropped when the job is not in the pipeline.
    pub optional: bool,
}

/// `environment:action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvironmentAction {
    /// Deploys to the environment (default).
    Start,
    /// Prepares it without a deployment.
    Prepare,
    /// Stops it.
    Stop,
    /// Verifies it without a deployment.
    Verify,
    /// Accesses it without a deployment.
    Access,
}

impl EnvironmentAction {
    /// GitLab's spelling (`CI_ENVIRONMENT_ACTION`).
    pub fn as_str(self) -> &'static str {
        match self {
            EnvironmentAction::Start => "start",
            EnvironmentAction::Prepare => "prepare",
            EnvironmentAction::Stop => "stop",
            EnvironmentAction::Verify => "verify",
            EnvironmentAction::Access => "access",
        }
    }
}

/// `environment:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    /// `name` (variables expanded when the job runs).
    pub name: String,
    /// `url` (may use the job's own dotenv variables).
    pub url: Option<String>,
    /// The job that stops this environment.
    pub on_stop: Option<String>,
    /// `action`.
    pub action: EnvironmentAction,
}

/// One job after `extends` and `default:`.
#[derive(Debug, Clone)]
pub struct Job {
    /// The job name.
    pub name: String,
    /// `stage:` (default `test`).
    pub stage: String,
    /// `image:`.
    pub image: Option<Image>,
    /// Job `variables:`.
    pub variables: Vec<Var>,
    /// `before_script:` (sent in front of `script:`, as GitLab does).
    pub before_script: Vec<String>,
    /// `script:`.
    pub script: Vec<String>,
    /// `after_script:`.
    pub after_script: Vec<String>,
    /// `rules:`.
    pub rules: Option<Vec<Rule>>,
    /// Job-level `when:` (without rules).
    pub when: When,
    /// `allow_failure:` as written.
    pub allow_failure: Option<AllowFailure>,
    /// `needs:` (`Some(vec![])` is `needs: []`).
    pub needs: Option<Vec<Need>>,
    /// `dependencies:`.
    pub dependencies: Option<Vec<String>>,
    /// `artifacts:`.
    pub artifacts: Option<Artifacts>,
    /// `cache:`.
    pub cache: Option<Cache>,
    /// `environment:`.
    pub environment: Option<Environment>,
    /// `tags:`.
    pub tags: Vec<String>,
    /// `timeout:`.
    pub timeout: Option<Duration>,
}

const GLOBAL_KEYWORDS: &[&str] = &[
    "stages",
    "variables",
    "default",
    "workflow",
    "include",
    "image",
    "services",
    "cache",
    "before_script",
    "after_script",
];

/// Job keywords the emulator runs.
const JOB_KEYWORDS: &[&str] = &[
    "stage",
    "image",
    "variables",
    "before_script",
    "script",
    "after_script",
    "rules",
    "when",
    "allow_failure",
    "needs",
    "dependencies",
    "artifacts",
    "cache",
    "environment",
    "tags",
    "timeout",
    "extends",
];

/// GitLab job keywords the emulator does not run: reported, never ignored.
const UNSUPPORTED_JOB_KEYWORDS: &[&str] = &[
    "only",
    "except",
    "services",
    "retry",
    "parallel",
    "trigger",
    "coverage",
    "interruptible",
    "resource_group",
    "release",
    "pages",
    "secrets",
    "id_tokens",
    "inherit",
    "hooks",
    "start_in",
    "manual_confirmation",
    "identity",
    "dast_configuration",
    "run",
];

/// `default:` keywords the emulator applies.
const DEFAULT_KEYWORDS: &[&str] = &[
    "image",
    "before_script",
    "after_script",
    "tags",
    "artifacts",
    "cache",
    "timeout",
];

/// GitLab's `extends` nesting limit.
const MAX_EXTENDS_DEPTH: usize = 11;

struct Problems(Vec<String>);

impl Problems {
    fn unsupported(&mut self, job: &str, keyword: &str) {
        self.0.push(format!(
            "job `{job}`: keyword `{keyword}` is not supported by the runner emulator"
        ));
    }

    fn job(&mut self, job: &str, message: impl std::fmt::Display) {
        self.0.push(format!("job `{job}`: {message}"));
    }

    fn global(&mut self, message: impl std::fmt::Display) {
        self.0.push(message.to_string());
    }
}

/// Parses a pipeline file's text; `Err` lists every problem, one per line.
pub fn parse(text: &str) -> Result<Pipeline, Vec<String>> {
    let mut root: Value = serde_yaml::from_str(text).map_err(|e| vec![format!("yaml: {e}")])?;
    root.apply_merge()
        .map_err(|e| vec![format!("yaml merge keys: {e}")])?;
    let Value::Mapping(root) = root else {
        return Err(vec![
            "the file must be a map of keywords and jobs".to_owned(),
        ]);
    };
    let mut p = Problems(Vec::new());
    let mut templates: HashMap<String, Mapping> = HashMap::new();
    let mut job_names = Vec::new();
    let mut globals = Mapping::new();
    for (key, value) in &root {
        let Some(key) = key.as_str() else {
            p.global("top-level keys must be strings");
            continue;
        };
        if GLOBAL_KEYWORDS.contains(&key) {
            globals.insert(key.into(), value.clone());
            continue;
        }
        match value {
            Value::Mapping(map) => {
                templates.insert(key.to_owned(), map.clone());
                if !key.starts_with('.') {
                    job_names.push(key.to_owned());
                }
            }
            // Hidden keys often hold anchors of any shape.
            _ if key.starts_with('.') => {}
            _ => p.job(key, "a job must be a map of keywords"),
        }
    }
    if let Some(tagged) = find_tag(&Value::Mapping(root.clone())) {
        p.global(format!(
            "YAML tag `{tagged}` (e.g. `!reference`) is not supported by the runner emulator"
        ));
    }

    for keyword in ["include", "services"] {
        if globals.contains_key(keyword) {
            p.global(format!(
                "global keyword `{keyword}` is not supported by the runner emulator"
            ));
        }
    }
    let stages = match globals.get("stages") {
        None => vec!["build".to_owned(), "test".to_owned(), "deploy".to_owned()],
        Some(v) => string_list(v).unwrap_or_else(|e| {
            p.global(format!("stages: {e}"));
            Vec::new()
        }),
    };
    let mut all_stages = vec![".pre".to_owned()];
    all_stages.extend(stages.into_iter().filter(|s| s != ".pre" && s != ".post"));
    all_stages.push(".post".to_owned());
    let variables = match globals.get("variables") {
        None => Vec::new(),
        Some(v) => variables(v).unwrap_or_else(|e| {
            p.global(format!("variables: {e}"));
            Vec::new()
        }),
    };
    let workflow_rules = match globals.get("workflow") {
        None => None,
        Some(Value::Mapping(w)) => {
            for key in w.keys() {
                if key.as_str() != Some("rules") {
                    p.global(format!(
                        "workflow: keyword `{}` is not supported by the runner emulator",
                        key.as_str().unwrap_or("?")
                    ));
                }
            }
            w.get("rules").and_then(|r| {
                rules(r, "workflow", &mut p)
                    .map_err(|e| p.global(format!("workflow:rules: {e}")))
                    .ok()
            })
        }
        Some(_) => {
            p.global("workflow: expected a map");
            None
        }
    };
    // `default:`, plus the deprecated global image/before_script/after_script/cache.
    let mut defaults = Mapping::new();
    for key in ["image", "before_script", "after_script", "cache"] {
        if let Some(v) = globals.get(key) {
            defaults.insert(key.into(), v.clone());
        }
    }
    match globals.get("default") {
        None => {}
        Some(Value::Mapping(d)) => {
            for (key, value) in d {
                let name = key.as_str().unwrap_or("?");
                if DEFAULT_KEYWORDS.contains(&name) {
                    defaults.insert(key.clone(), value.clone());
                } else {
                    p.global(format!(
                        "default: keyword `{name}` is not supported by the runner emulator"
                    ));
                }
            }
        }
        Some(_) => p.global("default: expected a map"),
    }

    let known: BTreeSet<&str> = job_names.iter().map(String::as_str).collect();
    let mut jobs = Vec::new();
    for name in &job_names {
        let mut stack = Vec::new();
        let Some(mut map) = resolve_extends(name, &templates, &mut stack, &mut p) else {
            continue;
        };
        for (key, value) in &defaults {
            if !map.contains_key(key) {
                map.insert(key.clone(), value.clone());
            }
        }
        if let Some(job) = job(name, &map, &all_stages, &known, &mut p) {
            jobs.push(job);
        }
    }
    if p.0.is_empty() {
        Ok(Pipeline {
            stages: all_stages,
            variables,
            workflow_rules,
            jobs,
        })
    } else {
        Err(p.0)
    }
}

fn find_tag(value: &Value) -> Option<String> {
    match value {
        Value::Tagged(t) => Some(t.tag.to_string()),
        Value::Mapping(m) => m.values().find_map(find_tag),
        Value::Sequence(s) => s.iter().find_map(find_tag),
        _ => None,
    }
}

/// The job's map with its `extends` chain merged in (GitLab's deep merge).
fn resolve_extends(
    name: &str,
    templates: &HashMap<String, Mapping>,
    stack: &mut Vec<String>,
    p: &mut Problems,
) -> Option<Mapping> {
    let own = templates.get(name)?;
    if stack.iter().any(|s| s == name) {
        p.job(
            stack.first().map_or(name, String::as_str),
            format!("extends: circular dependency through `{name}`"),
        );
        return None;
    }
    if stack.len() > MAX_EXTENDS_DEPTH {
        p.job(
            stack.first().map_or(name, String::as_str),
            format!("extends: nested more than {MAX_EXTENDS_DEPTH} levels"),
        );
        return None;
    }
    let parents = match own.get("extends") {
        None => Vec::new(),
        Some(v) => match string_list(v) {
            Ok(list) => list,
            Err(e) => {
                p.job(name, format!("extends: {e}"));
                return None;
            }
        },
    };
    stack.push(name.to_owned());
    let mut merged = Mapping::new();
    for parent in &parents {
        if !templates.contains_key(parent) {
            p.job(name, format!("extends: unknown job `{parent}`"));
            stack.pop();
            return None;
        }
        let resolved = resolve_extends(parent, templates, stack, p)?;
        deep_merge(&mut merged, &resolved);
    }
    stack.pop();
    let mut own = own.clone();
    own.remove("extends");
    deep_merge(&mut merged, &own);
    Some(merged)
}

fn deep_merge(base: &mut Mapping, over: &Mapping) {
    for (key, value) in over {
        match (base.get_mut(key), value) {
            (Some(Value::Mapping(b)), Value::Mapping(o)) => deep_merge(b, o),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

fn job(
    name: &str,
    map: &Mapping,
    stages: &[String],
    known: &BTreeSet<&str>,
    p: &mut Problems,
) -> Option<Job> {
    let before = p.0.len();
    for key in map.keys() {
        let key = key.as_str().unwrap_or("?");
        if JOB_KEYWORDS.contains(&key) {
            continue;
        }
        if UNSUPPORTED_JOB_KEYWORDS.contains(&key) {
            p.unsupported(name, key);
        } else {
            p.job(name, format!("unknown keyword `{key}`"));
        }
    }
    let field = |key: &str| map.get(key).cloned().filter(|v| !v.is_null());
    let list = |key: &str, p: &mut Problems| -> Vec<String> {
        map.get(key)
            .filter(|v| !v.is_null())
            .map_or_else(Vec::new, |v| {
                script_lines(v).unwrap_or_else(|e| {
                    p.job(name, format!("{key}: {e}"));
                    Vec::new()
                })
            })
    };
    let script = list("script", p);
    if script.is_empty() && map.get("script").is_none() {
        p.job(name, "config should implement a script: keyword");
    }
    let before_script = list("before_script", p);
    let after_script = list("after_script", p);
    let stage = match field("stage") {
        None => "test".to_owned(),
        Some(Value::String(s)) => s,
        Some(_) => {
            p.job(name, "stage: expected a string");
            "test".to_owned()
        }
    };
    if !stages.contains(&stage) {
        p.job(
            name,
            format!(
                "chosen stage `{stage}` does not exist; available stages are {}",
                stages.join(", ")
            ),
        );
    }
    let image = field("image").and_then(|v| image(&v).map_err(|e| p.job(name, e)).ok());
    let variables = field("variables")
        .map(|v| variables(&v).map_err(|e| p.job(name, format!("variables: {e}"))))
        .transpose()
        .ok()
        .flatten()
        .unwrap_or_default();
    let rules = field("rules").and_then(|v| {
        rules(&v, name, p)
            .map_err(|e| p.job(name, format!("rules: {e}")))
            .ok()
    });
    let when = match field("when") {
        None => When::OnSuccess,
        Some(v) => match when(&v, name, p) {
            Some(When::Never) => {
                p.job(name, "when: never is only allowed in rules");
                When::OnSuccess
            }
            Some(w) => w,
            None => When::OnSuccess,
        },
    };
    if rules.is_some() && map.contains_key("when") {
        p.job(
            name,
            "when: cannot be used together with rules (use rules:when)",
        );
    }
    let allow_failure =
        field("allow_failure").and_then(|v| allow_failure(&v).map_err(|e| p.job(name, e)).ok());
    let needs = field("needs").and_then(|v| needs(&v, name, p).map_err(|e| p.job(name, e)).ok());
    let dependencies = field("dependencies").and_then(|v| {
        string_list(&v)
            .map_err(|e| p.job(name, format!("dependencies: {e}")))
            .ok()
    });
    let artifacts =
        field("artifacts").and_then(|v| artifacts(&v, name, p).map_err(|e| p.job(name, e)).ok());
    let cache = field("cache").and_then(|v| cache(&v, name, p).map_err(|e| p.job(name, e)).ok());
    let environment = field("environment")
        .and_then(|v| environment(&v, name, p).map_err(|e| p.job(name, e)).ok());
    let tags = field("tags")
        .map(|v| string_list(&v).map_err(|e| p.job(name, format!("tags: {e}"))))
        .transpose()
        .ok()
        .flatten()
        .unwrap_or_default();
    let timeout = field("timeout").and_then(|v| timeout(&v).map_err(|e| p.job(name, e)).ok());
    for need in needs.iter().flatten() {
        if !known.contains(need.job.as_str()) {
            p.job(name, format!("needs: undefined job `{}`", need.job));
        }
    }
    for dep in dependencies.iter().flatten() {
        if !known.contains(dep.as_str()) {
            p.job(name, format!("dependencies: undefined job `{dep}`"));
        }
    }
    if let Some(stop) = environment.as_ref().and_then(|e| e.on_stop.as_ref())
        && !known.contains(stop.as_str())
    {
        p.job(name, format!("environment:on_stop: undefined job `{stop}`"));
    }
    if p.0.len() > before {
        return None;
    }
    Some(Job {
        name: name.to_owned(),
        stage,
        image,
        variables,
        before_script,
        script,
        after_script,
        rules,
        when,
        allow_failure,
        needs,
        dependencies,
        artifacts,
        cache,
        environment,
        tags,
        timeout,
    })
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn string_list(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Sequence(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| "expected a list of strings".to_owned())
            })
            .collect(),
        _ => Err("expected a string or a list of strings".to_owned()),
    }
}

/// `script:`-like values: a string, or a list of strings and nested lists (flattened, as
/// GitLab does for lists pulled in through anchors).
fn script_lines(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Sequence(items) => {
            let mut out = Vec::new();
            for item in items {
                match item {
                    Value::String(s) => out.push(s.clone()),
                    Value::Sequence(_) => out.extend(script_lines(item)?),
                    _ => {
                        return Err(
                            "expected strings (quote a line that YAML reads as a map)".to_owned()
                        );
                    }
                }
            }
            Ok(out)
        }
        _ => Err("expected a string or a list of strings".to_owned()),
    }
}

/// A name a shell can export (GitLab refuses others in `variables:`).
fn is_variable_name(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn keys_of(map: &Mapping) -> impl Iterator<Item = &str> {
    map.keys().map(|k| k.as_str().unwrap_or("?"))
}

fn variables(value: &Value) -> Result<Vec<Var>, String> {
    let Value::Mapping(map) = value else {
        return Err("expected a map".to_owned());
    };
    let mut out = Vec::new();
    for (key, value) in map {
        let key = key.as_str().ok_or("keys must be strings")?.to_owned();
        if !is_variable_name(&key) {
            return Err(format!("{key}: not a valid variable name"));
        }
        match value {
            Value::Mapping(long) => {
                if let Some(bad) = keys_of(long)
                    .find(|k| !["value", "description", "expand", "options"].contains(k))
                {
                    return Err(format!("{key}: unknown key `{bad}`"));
                }
                let text = long
                    .get("value")
                    .map_or(Some(String::new()), scalar)
                    .ok_or_else(|| format!("{key}.value: expected a string"))?;
                let expand = match long.get("expand") {
                    None => true,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => return Err(format!("{key}.expand: expected true or false")),
                };
                out.push(Var {
                    key,
                    value: text,
                    raw: !expand,
                });
            }
            other => {
                let text = scalar(other)
                    .ok_or_else(|| format!("{key}: expected a string, number or boolean"))?;
                out.push(Var::new(key, text));
            }
        }
    }
    Ok(out)
}

fn image(value: &Value) -> Result<Image, String> {
    match value {
        Value::String(name) => Ok(Image {
            name: name.clone(),
            entrypoint: Vec::new(),
        }),
        Value::Mapping(map) => {
            for key in keys_of(map) {
                if !["name", "entrypoint"].contains(&key) {
                    return Err(format!(
                        "image: keyword `{key}` is not supported by the runner emulator"
                    ));
                }
            }
            let name = map
                .get("name")
                .and_then(Value::as_str)
                .ok_or("image:name: expected a string")?
                .to_owned();
            let entrypoint = map
                .get("entrypoint")
                .map(string_list)
                .transpose()
                .map_err(|e| format!("image:entrypoint: {e}"))?
                .unwrap_or_default();
            Ok(Image { name, entrypoint })
        }
        _ => Err("image: expected a string or a map".to_owned()),
    }
}

fn when(value: &Value, job: &str, p: &mut Problems) -> Option<When> {
    match value.as_str() {
        Some("on_success") => Some(When::OnSuccess),
        Some("on_failure") => Some(When::OnFailure),
        Some("always") => Some(When::Always),
        Some("manual") => Some(When::Manual),
        Some("never") => Some(When::Never),
        Some("delayed") => {
            p.unsupported(job, "when: delayed");
            None
        }
        _ => {
            p.job(
                job,
                "when: expected on_success, on_failure, always, manual or never",
            );
            None
        }
    }
}

fn rules(value: &Value, job: &str, p: &mut Problems) -> Result<Vec<Rule>, String> {
    let Value::Sequence(items) = value else {
        return Err("expected a list of rules".to_owned());
    };
    let mut out = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let Value::Mapping(map) = item else {
            return Err(format!("[{index}]: expected a map"));
        };
        for key in keys_of(map) {
            match key {
                "if" | "when" | "allow_failure" | "variables" => {}
                "changes" | "exists" | "needs" | "interruptible" | "start_in" => {
                    p.unsupported(job, &format!("rules:{key}"));
                }
                other => return Err(format!("[{index}]: unknown key `{other}`")),
            }
        }
        let condition = match map.get("if") {
            None => None,
            Some(Value::String(text)) => Some((
                text.clone(),
                Expr::parse(text).map_err(|e| format!("[{index}].if `{text}`: {e}"))?,
            )),
            Some(_) => return Err(format!("[{index}].if: expected a string")),
        };
        let when = match map.get("when") {
            None => None,
            Some(v) => when(v, job, p),
        };
        let allow_failure = match map.get("allow_failure") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => return Err(format!("[{index}].allow_failure: expected true or false")),
        };
        let variables = map
            .get("variables")
            .map(variables)
            .transpose()
            .map_err(|e| format!("[{index}].variables: {e}"))?
            .unwrap_or_default();
        out.push(Rule {
            condition,
            when,
            allow_failure,
            variables,
        });
    }
    Ok(out)
}

fn allow_failure(value: &Value) -> Result<AllowFailure, String> {
    match value {
        Value::Bool(any) => Ok(AllowFailure {
            any: *any,
            exit_codes: Vec::new(),
        }),
        Value::Mapping(map) => {
            if let Some(bad) = keys_of(map).find(|k| *k != "exit_codes") {
                return Err(format!("allow_failure: unknown key `{bad}`"));
            }
            let codes = match map.get("exit_codes") {
                Some(Value::Number(n)) => vec![n.clone()],
                Some(Value::Sequence(items)) => items
                    .iter()
                    .map(|v| match v {
                        Value::Number(n) => Ok(n.clone()),
                        _ => Err("allow_failure:exit_codes: expected integers".to_owned()),
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err("allow_failure:exit_codes: expected integers".to_owned()),
            };
            let exit_codes = codes
                .iter()
                .map(|n| {
                    n.as_i64()
                        .and_then(|n| i32::try_from(n).ok())
                        .ok_or_else(|| "allow_failure:exit_codes: expected integers".to_owned())
                })
                .collect::<Result<_, _>>()?;
            Ok(AllowFailure {
                any: false,
                exit_codes,
            })
        }
        _ => Err("allow_failure: expected true, false or {exit_codes: [...]}".to_owned()),
    }
}

fn needs(value: &Value, job: &str, p: &mut Problems) -> Result<Vec<Need>, String> {
    let Value::Sequence(items) = value else {
        return Err("needs: expected a list".to_owned());
    };
    let mut out = Vec::new();
    for item in items {
        match item {
            Value::String(name) => out.push(Need {
                job: name.clone(),
                artifacts: true,
                optional: false,
            }),
            Value::Mapping(map) => {
                for key in keys_of(map) {
                    match key {
                        "job" | "artifacts" | "optional" => {}
                        "pipeline" | "project" | "ref" | "parallel" => {
                            p.unsupported(job, &format!("needs:{key}"));
                        }
                        other => return Err(format!("needs: unknown key `{other}`")),
                    }
                }
                let flag = |key: &str, default: bool| match map.get(key) {
                    None => Ok(default),
                    Some(Value::Bool(b)) => Ok(*b),
                    Some(_) => Err(format!("needs:{key}: expected true or false")),
                };
                out.push(Need {
                    job: map
                        .get("job")
                        .and_then(Value::as_str)
                        .ok_or("needs:job: expected a job name")?
                        .to_owned(),
                    artifacts: flag("artifacts", true)?,
                    optional: flag("optional", false)?,
                });
            }
            _ => return Err("needs: expected job names or maps".to_owned()),
        }
    }
    Ok(out)
}

fn artifacts(value: &Value, job: &str, p: &mut Problems) -> Result<Artifacts, String> {
    let Value::Mapping(map) = value else {
        return Err("artifacts: expected a map".to_owned());
    };
    let mut map = map.clone();
    for key in keys_of(&map.clone()) {
        match key {
            "name" | "paths" | "exclude" | "untracked" | "when" | "reports" => {}
            "expire_in" | "expose_as" | "public" | "access" => {
                p.unsupported(job, &format!("artifacts:{key}"));
            }
            other => return Err(format!("artifacts: unknown key `{other}`")),
        }
    }
    if let Some(Value::Mapping(reports)) = map.get_mut("reports") {
        for key in keys_of(&reports.clone()) {
            if key != "dotenv" && key != "metrics" {
                p.unsupported(job, &format!("artifacts:reports:{key}"));
                reports.remove(key);
            }
        }
        // GitLab accepts a list of report files; the emulator uploads one of each kind.
        for key in ["dotenv", "metrics"] {
            if let Some(Value::Sequence(files)) = reports.get(key).cloned() {
                match files.as_slice() {
                    [one] => {
                        reports.insert(key.into(), one.clone());
                    }
                    _ => p.unsupported(job, &format!("artifacts:reports:{key} with several files")),
                }
            }
        }
    }
    serde_yaml::from_value(Value::Mapping(map)).map_err(|e| format!("artifacts: {e}"))
}

fn cache(value: &Value, job: &str, p: &mut Problems) -> Result<Cache, String> {
    let value = match value {
        Value::Sequence(items) if items.len() == 1 => &items[0],
        Value::Sequence(_) => {
            p.unsupported(job, "cache (several caches)");
            return Err("cache: only one cache is supported".to_owned());
        }
        other => other,
    };
    if let Value::Mapping(map) = value {
        for key in keys_of(map) {
            if ["unprotect", "fallback_keys"].contains(&key) {
                p.unsupported(job, &format!("cache:{key}"));
            }
        }
        if map.get("key").is_some_and(Value::is_mapping) {
            p.unsupported(job, "cache:key:files");
        }
    }
    serde_yaml::from_value(value.clone()).map_err(|e| format!("cache: {e}"))
}

fn environment(value: &Value, job: &str, p: &mut Problems) -> Result<Environment, String> {
    let map = match value {
        Value::String(name) => {
            return Ok(Environment {
                name: name.clone(),
                url: None,
                on_stop: None,
                action: EnvironmentAction::Start,
            });
        }
        Value::Mapping(map) => map,
        _ => return Err("environment: expected a name or a map".to_owned()),
    };
    for key in keys_of(map) {
        match key {
            "name" | "url" | "on_stop" | "action" => {}
            "deployment_tier" | "auto_stop_in" | "kubernetes" => {
                p.unsupported(job, &format!("environment:{key}"));
            }
            other => return Err(format!("environment: unknown key `{other}`")),
        }
    }
    let text = |key: &str| -> Result<Option<String>, String> {
        match map.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("environment:{key}: expected a string")),
        }
    };
    let action = match text("action")?.as_deref() {
        None | Some("start") => EnvironmentAction::Start,
        Some("prepare") => EnvironmentAction::Prepare,
        Some("stop") => EnvironmentAction::Stop,
        Some("verify") => EnvironmentAction::Verify,
        Some("access") => EnvironmentAction::Access,
        Some(other) => return Err(format!("environment:action: unknown action `{other}`")),
    };
    Ok(Environment {
        name: text("name")?.ok_or("environment:name: required")?,
        url: text("url")?,
        on_stop: text("on_stop")?,
        action,
    })
}

fn timeout(value: &Value) -> Result<Duration, String> {
    let text = scalar(value).ok_or("timeout: expected a duration")?;
    if let Ok(seconds) = text.trim().parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(&text).map_err(|e| format!("timeout: {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Pipeline {
        parse(text).unwrap_or_else(|e| panic!("{}", e.join("\n")))
    }

    #[test]
    fn extends_deep_merges_and_default_fills_gaps() {
        let p = parse_ok(
            r#"
stages: [test, deploy]
default:
  tags: [sagemaker]
  image: python:3.12-slim
variables: {GLOBAL: g}
.base:
  variables: {A: base, B: base}
  script: [echo base]
  artifacts: {paths: [out/]}
.deploy:
  extends: .base
  stage: deploy
  variables: {B: deploy}
job:
  extends: [.deploy]
  variables: {C: job}
  image: {name: "gcr.io/kaniko-project/executor:debug", entrypoint: [""]}
other:
  script: echo other
  timeout: 1h 30m
"#,
        );
        assert_eq!(p.stages, [".pre", "test", "deploy", ".post"]);
        let job = p.job("job").unwrap();
        assert_eq!(job.stage, "deploy");
        let vars: Vec<(&str, &str)> = job
            .variables
            .iter()
            .map(|v| (v.key.as_str(), v.value.as_str()))
            .collect();
        assert_eq!(vars, [("A", "base"), ("B", "deploy"), ("C", "job")]);
        assert_eq!(job.script, ["echo base"]);
        assert_eq!(job.tags, ["sagemaker"]);
        assert_eq!(job.image.as_ref().unwrap().entrypoint, [""]);
        let other = p.job("other").unwrap();
        assert_eq!(other.image.as_ref().unwrap().name, "python:3.12-slim");
        assert_eq!(other.timeout, Some(Duration::from_secs(5400)));
        assert!(p.job(".base").is_none());
    }

    #[test]
    fn every_unsupported_keyword_is_one_line_naming_keyword_and_job() {
        let errors = parse(
            r#"
include: other.yml
build:
  script: [make]
  services: [docker:dind]
  only: [main]
  retry: 2
  artifacts: {paths: [x], expire_in: 1 week, reports: {junit: report.xml}}
  rules: [{if: $X, changes: [a]}]
  environmnt: prod
"#,
        )
        .unwrap_err();
        for needle in [
            "global keyword `include` is not supported",
            "job `build`: keyword `services` is not supported by the runner emulator",
            "job `build`: keyword `only` is not supported",
            "job `build`: keyword `retry` is not supported",
            "job `build`: keyword `artifacts:expire_in` is not supported",
            "job `build`: keyword `artifacts:reports:junit` is not supported",
            "job `build`: keyword `rules:changes` is not supported",
            "job `build`: unknown keyword `environmnt`",
        ] {
            assert_eq!(
                errors.iter().filter(|e| e.contains(needle)).count(),
                1,
                "{needle:?} in {errors:#?}"
            );
        }
    }

    #[test]
    fn environment_needs_rules_and_allow_failure_parse() {
        let p = parse_ok(
            r#"
stages: [deploy]
deploy:
  stage: deploy
  script: [x]
  needs: [{job: stop, artifacts: false}, other]
  allow_failure: {exit_codes: [3, 4]}
  rules:
    - if: $CI_MERGE_REQUEST_IID
      variables: {X: "1"}
    - when: never
  environment: {name: review/$CI_MERGE_REQUEST_IID, url: $URL, on_stop: stop}
stop:
  stage: deploy
  script: [x]
  needs: []
  environment: {name: review/$CI_MERGE_REQUEST_IID, action: stop}
other:
  stage: deploy
  script: [x]
"#,
        );
        let d = p.job("deploy").unwrap();
        assert_eq!(
            d.needs.as_ref().unwrap()[0],
            Need {
                job: "stop".into(),
                artifacts: false,
                optional: false
            }
        );
        assert_eq!(d.allow_failure.as_ref().unwrap().exit_codes, [3, 4]);
        let rules = d.rules.as_ref().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[1].when, Some(When::Never));
        assert_eq!(
            d.environment.as_ref().unwrap().on_stop.as_deref(),
            Some("stop")
        );
        let s = p.job("stop").unwrap();
        assert_eq!(s.needs, Some(Vec::new()));
        assert_eq!(
            s.environment.as_ref().unwrap().action,
            EnvironmentAction::Stop
        );
    }

    #[test]
    fn structural_errors_are_all_listed() {
        let errors = parse(
            r#"
a:
  extends: .missing
  script: [x]
b:
  stage: nowhere
  script: [x]
  needs: [ghost]
c:
  image: python
d:
  extends: .loop
.loop:
  extends: d
"#,
        )
        .unwrap_err();
        let text = errors.join("\n");
        for needle in [
            "job `a`: extends: unknown job `.missing`",
            "job `b`: chosen stage `nowhere` does not exist",
            "job `b`: needs: undefined job `ghost`",
            "job `c`: config should implement a script: keyword",
            "circular dependency",
        ] {
            assert!(text.contains(needle), "{needle:?} in:\n{text}");
        }
    }
}
