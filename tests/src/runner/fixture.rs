//! Job fixtures: small YAML files describing one CI job (the part of `.gitlab-ci.yml` plus the
//! GitLab-side facts a runner receives), parsed in two phases like the product's own config:
//! a raw serde shape that rejects unknown keys, then a validated [`JobFixture`].
//!
//! Fields that accept two shapes (`image`, `source`, `expect`, a variable's value) are read as
//! YAML values and converted by hand rather than with `serde(untagged)`, so that an unknown key
//! inside the long form is still reported by name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;

use super::result::JobOutcome;
use crate::error::{Error, Result};

/// One job, as the emulated GitLab would hand it to the runner.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFixture {
    /// `CI_JOB_NAME`.
    pub name: String,
    /// `CI_JOB_STAGE` (default `test`).
    pub stage: String,
    /// The job id; `None` lets the runner pick a fresh one.
    pub id: Option<u64>,
    /// `CI_PIPELINE_ID`; `None` derives one from the job id.
    pub pipeline_id: Option<u64>,
    /// `image:`.
    pub image: Option<Image>,
    /// User variables in definition order.
    pub variables: Vec<Variable>,
    /// `script:`, sent as the `build_script` stage.
    pub script: Vec<String>,
    /// `after_script:`.
    pub after_script: Vec<String>,
    /// Extra steps after `script:`; a step named `release` is sent as `step_release`.
    pub steps: Vec<Step>,
    /// `hooks:`.
    pub hooks: Hooks,
    /// `artifacts:`.
    pub artifacts: Option<Artifacts>,
    /// `cache:` (one entry).
    pub cache: Option<Cache>,
    /// Artifacts of earlier jobs that this job downloads.
    pub dependencies: Vec<Dependency>,
    /// `needs:`: earlier jobs (by name) whose `artifacts:reports:dotenv` variables this job
    /// receives, as GitLab passes them. Applied by whoever runs a sequence of jobs (the
    /// `runner-emulator` binary).
    pub needs: Vec<String>,
    /// The job timeout (`runner_info.timeout`), default one hour.
    pub timeout: Duration,
    /// `CI_COMMIT_REF_NAME`; also the branch of the fixture repository (default `main`).
    pub git_ref: String,
    /// `CI_COMMIT_REF_PROTECTED`.
    pub protected: bool,
    /// `CI_DEFAULT_BRANCH` (default `main`).
    pub default_branch: String,
    /// `CI_PIPELINE_SOURCE` (default `push`); with `merge_request_event` GitLab sends no
    /// `CI_COMMIT_BRANCH`.
    pub pipeline_source: String,
    /// Further predefined variables GitLab sets for this job (merge request and environment
    /// variables), sent with the other predefined ones, before the user's.
    pub predefined: Vec<(String, String)>,
    /// The GitLab project.
    pub project: Project,
    /// Where the repository content comes from.
    pub source: Source,
    /// The outcome the demo binary expects; `None` means success.
    pub expect: Option<Expectation>,
}

/// `image:` with its optional entrypoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// The image reference.
    pub name: String,
    /// `image:entrypoint`.
    #[serde(default)]
    pub entrypoint: Vec<String>,
}

/// One CI/CD variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The name (a shell identifier).
    pub key: String,
    /// The value; for a file variable, the file content.
    pub value: String,
    /// A file-type variable: scripts see a path to a file holding `value`.
    pub file: bool,
    /// Masked in the job log.
    pub masked: bool,
    /// Not expanded.
    pub raw: bool,
}

/// A step after `script:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The step name; the stage sent is `step_<name>`.
    pub name: String,
    /// Its commands.
    pub script: Vec<String>,
}

/// `hooks:`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Run in get_sources before the clone/fetch.
    #[serde(default)]
    pub pre_get_sources_script: Vec<String>,
    /// Run in get_sources after the checkout, in the project dir.
    #[serde(default)]
    pub post_get_sources_script: Vec<String>,
}

/// `when:` of artifacts and caches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Only when the job succeeded so far.
    #[default]
    OnSuccess,
    /// Only when the job failed or was canceled.
    OnFailure,
    /// Always.
    Always,
}

impl When {
    /// Whether an entry with this `when` is processed for a job that `failed` (or not).
    pub fn applies(self, failed: bool) -> bool {
        match self {
            When::OnSuccess => !failed,
            When::OnFailure => failed,
            When::Always => true,
        }
    }

    /// The payload spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            When::OnSuccess => "on_success",
            When::OnFailure => "on_failure",
            When::Always => "always",
        }
    }
}

/// `artifacts:`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifacts {
    /// `artifacts:name` (default `artifacts`).
    #[serde(default)]
    pub name: Option<String>,
    /// Globs relative to the project dir (`**` allowed).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Globs excluded from the archive.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Also upload files git does not track.
    #[serde(default)]
    pub untracked: bool,
    /// `artifacts:when`.
    #[serde(default)]
    pub when: When,
    /// `artifacts:reports`.
    #[serde(default)]
    pub reports: Reports,
}

/// `artifacts:reports`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reports {
    /// `artifacts:reports:dotenv`, a path relative to the project dir.
    #[serde(default)]
    pub dotenv: Option<String>,
    /// `artifacts:reports:metrics` (OpenMetrics text), a path relative to the project dir.
    #[serde(default)]
    pub metrics: Option<String>,
}

/// `cache:policy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum CachePolicy {
    /// Restore and save.
    #[default]
    #[serde(rename = "pull-push")]
    PullPush,
    /// Restore only.
    #[serde(rename = "pull")]
    Pull,
    /// Save only.
    #[serde(rename = "push")]
    Push,
}

impl CachePolicy {
    /// The payload spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CachePolicy::PullPush => "pull-push",
            CachePolicy::Pull => "pull",
            CachePolicy::Push => "push",
        }
    }

    /// Whether restore_cache extracts this cache.
    pub fn pulls(self) -> bool {
        matches!(self, CachePolicy::PullPush | CachePolicy::Pull)
    }

    /// Whether archive_cache saves this cache.
    pub fn pushes(self) -> bool {
        matches!(self, CachePolicy::PullPush | CachePolicy::Push)
    }
}

/// `cache:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    /// `cache:key` (default `default`); one archive per key.
    #[serde(default = "default_cache_key")]
    pub key: String,
    /// Globs relative to the project dir.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Also cache untracked files.
    #[serde(default)]
    pub untracked: bool,
    /// `cache:policy`.
    #[serde(default)]
    pub policy: CachePolicy,
    /// `cache:when`.
    #[serde(default)]
    pub when: When,
}

fn default_cache_key() -> String {
    "default".to_owned()
}

/// An artifact of an earlier job that download_artifacts extracts into the project dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The earlier job's name.
    pub name: String,
    /// The earlier job's id (default derived from the name's position).
    pub id: Option<u64>,
    /// Files of its artifact archive: relative path → content.
    pub files: Vec<(String, String)>,
}

/// The GitLab project.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    /// `CI_PROJECT_PATH`, e.g. `ml/churn-model`.
    #[serde(default = "default_project_path")]
    pub path: String,
    /// `CI_PROJECT_ID`.
    #[serde(default = "default_project_id")]
    pub id: u64,
}

impl Default for Project {
    fn default() -> Self {
        Project {
            path: default_project_path(),
            id: default_project_id(),
        }
    }
}

fn default_project_path() -> String {
    "group/project".to_owned()
}

fn default_project_id() -> u64 {
    1
}

/// Where the fixture repository comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Files (path → content) committed into a fresh repository with one commit.
    Files(Vec<(String, String)>),
    /// An existing directory: used as is if it is a git repository, else its files are
    /// committed into a fresh one.
    Dir(PathBuf),
}

/// The outcome a fixture expects (used by `runner-emulator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    /// `success`.
    Success,
    /// `failed` (any exit code) or `{failed: N}`.
    Failed(Option<i32>),
    /// `system_failure`.
    SystemFailure,
    /// `configuration_error`.
    ConfigurationError,
    /// `canceled`.
    Canceled,
    /// `timed_out`.
    TimedOut,
}

impl Expectation {
    /// Whether `outcome` satisfies this expectation.
    pub fn matches(&self, outcome: &JobOutcome) -> bool {
        match (self, outcome) {
            (Expectation::Success, JobOutcome::Success) => true,
            (Expectation::Failed(None), JobOutcome::Failed { .. }) => true,
            (Expectation::Failed(Some(want)), JobOutcome::Failed { exit_code }) => {
                want == exit_code
            }
            (Expectation::SystemFailure, JobOutcome::SystemFailure { .. }) => true,
            (Expectation::ConfigurationError, JobOutcome::ConfigurationError { .. }) => true,
            (Expectation::Canceled, JobOutcome::Canceled) => true,
            (Expectation::TimedOut, JobOutcome::TimedOut) => true,
            _ => false,
        }
    }
}

impl std::fmt::Display for Expectation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expectation::Success => f.write_str("success"),
            Expectation::Failed(None) => f.write_str("failed"),
            Expectation::Failed(Some(code)) => write!(f, "failed with exit code {code}"),
            Expectation::SystemFailure => f.write_str("system failure"),
            Expectation::ConfigurationError => f.write_str("configuration error"),
            Expectation::Canceled => f.write_str("canceled"),
            Expectation::TimedOut => f.write_str("timed out"),
        }
    }
}

/// The raw YAML shape: every key the format knows, nothing else.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFixture {
    name: String,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    pipeline_id: Option<u64>,
    #[serde(default)]
    image: Option<Value>,
    #[serde(default)]
    variables: Option<serde_yaml::Mapping>,
    #[serde(default)]
    script: Vec<String>,
    #[serde(default)]
    after_script: Vec<String>,
    #[serde(default)]
    steps: Vec<Step>,
    #[serde(default)]
    hooks: Hooks,
    #[serde(default)]
    artifacts: Option<Artifacts>,
    #[serde(default)]
    cache: Option<Cache>,
    #[serde(default)]
    dependencies: Vec<RawDependency>,
    #[serde(default)]
    needs: Vec<String>,
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default, rename = "ref")]
    git_ref: Option<String>,
    #[serde(default)]
    protected: bool,
    #[serde(default)]
    default_branch: Option<String>,
    #[serde(default)]
    project: Project,
    #[serde(default)]
    source: Option<Value>,
    #[serde(default)]
    expect: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDependency {
    name: String,
    #[serde(default)]
    id: Option<u64>,
    files: serde_yaml::Mapping,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariable {
    value: Value,
    #[serde(default)]
    file: bool,
    #[serde(default)]
    masked: bool,
    #[serde(default)]
    raw: bool,
}

impl JobFixture {
    /// Reads a fixture file; a relative `source:` directory is resolved against the file's
    /// directory.
    pub fn load(path: &Path) -> Result<JobFixture> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading fixture {}", path.display()), e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, &path.display().to_string())
    }

    /// Parses a fixture from YAML text; relative `source:` directories are resolved against
    /// `base_dir`.
    pub fn from_yaml(text: &str, base_dir: &Path) -> Result<JobFixture> {
        Self::parse(text, base_dir, "<inline>")
    }

    fn parse(text: &str, base_dir: &Path, origin: &str) -> Result<JobFixture> {
        let fail = |message: String| Error::Fixture {
            path: origin.to_owned(),
            message,
        };
        let raw: RawFixture = serde_yaml::from_str(text).map_err(|e| fail(e.to_string()))?;
        let variables = match &raw.variables {
            Some(map) => parse_variables(map).map_err(&fail)?,
            None => Vec::new(),
        };
        let image = match raw.image {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(Image {
                name,
                entrypoint: Vec::new(),
            }),
            Some(value @ Value::Mapping(_)) => Some(
                serde_yaml::from_value::<Image>(value).map_err(|e| fail(format!("image: {e}")))?,
            ),
            Some(_) => return Err(fail("image: expected a string or a map".to_owned())),
        };
        let source = match raw.source {
            None | Some(Value::Null) => Source::Files(vec![(
                "README.md".to_owned(),
                format!("# {}\n", raw.project.path),
            )]),
            Some(Value::String(dir)) => {
                let dir = PathBuf::from(dir);
                Source::Dir(if dir.is_absolute() {
                    dir
                } else {
                    base_dir.join(dir)
                })
            }
            Some(Value::Mapping(map)) => Source::Files(parse_files(&map, "source").map_err(&fail)?),
            Some(_) => {
                return Err(fail(
                    "source: expected a map of path to content, or a directory".to_owned(),
                ));
            }
        };
        let expect = match raw.expect {
            None | Some(Value::Null) => None,
            Some(value) => Some(parse_expectation(&value).map_err(&fail)?),
        };
        let mut dependencies = Vec::new();
        for (index, dep) in raw.dependencies.into_iter().enumerate() {
            let files =
                parse_files(&dep.files, &format!("dependencies[{index}].files")).map_err(&fail)?;
            dependencies.push(Dependency {
                name: dep.name,
                id: dep.id,
                files,
            });
        }
        let fixture = JobFixture {
            name: raw.name,
            stage: raw.stage.unwrap_or_else(|| "test".to_owned()),
            id: raw.id,
            pipeline_id: raw.pipeline_id,
            image,
            variables,
            script: raw.script,
            after_script: raw.after_script,
            steps: raw.steps,
            hooks: raw.hooks,
            artifacts: raw.artifacts,
            cache: raw.cache,
            dependencies,
            needs: raw.needs,
            timeout: Duration::from_secs(raw.timeout.unwrap_or(3600)),
            git_ref: raw.git_ref.unwrap_or_else(|| "main".to_owned()),
            protected: raw.protected,
            default_branch: raw.default_branch.unwrap_or_else(|| "main".to_owned()),
            pipeline_source: "push".to_owned(),
            predefined: Vec::new(),
            project: raw.project,
            source,
            expect,
        };
        fixture.validate().map_err(fail)?;
        Ok(fixture)
    }

    /// Checks what serde cannot: names, paths and values the emulator must be able to put
    /// into a bash script and a git repository.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.script.is_empty() && self.steps.is_empty() {
            return Err("script: a job needs at least one command".to_owned());
        }
        for var in &self.variables {
            if !is_identifier(&var.key) {
                return Err(format!(
                    "variables.{}: not a valid variable name (letters, digits, _)",
                    var.key
                ));
            }
            if var.value.contains('\0') {
                return Err(format!("variables.{}: value contains a NUL byte", var.key));
            }
        }
        for step in &self.steps {
            if step.name.is_empty()
                || !step
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                || step.name == "script"
                || step.name == "after_script"
            {
                return Err(format!(
                    "steps: invalid step name {:?} (letters, digits, _; not script/after_script)",
                    step.name
                ));
            }
        }
        let path = &self.project.path;
        if !path.contains('/')
            || path.starts_with('/')
            || path.ends_with('/')
            || path.split('/').any(|part| part.is_empty() || part == "..")
        {
            return Err(format!(
                "project.path: {path:?} must look like namespace/project"
            ));
        }
        if self.git_ref.is_empty() || self.git_ref.contains("..") || self.git_ref.contains(' ') {
            return Err(format!(
                "ref: {:?} is not a valid branch name",
                self.git_ref
            ));
        }
        if let Some(cache) = &self.cache
            && (cache.key.contains('/') || cache.key.contains("..") || cache.key.is_empty())
        {
            return Err(format!(
                "cache.key: {:?} must be a non-empty name without '/'",
                cache.key
            ));
        }
        let mut all_commands = self
            .script
            .iter()
            .chain(&self.after_script)
            .chain(&self.hooks.pre_get_sources_script)
            .chain(&self.hooks.post_get_sources_script)
            .chain(self.steps.iter().flat_map(|s| &s.script));
        if all_commands.any(|line| line.contains('\0')) {
            return Err("script: a command contains a NUL byte".to_owned());
        }
        Ok(())
    }

    /// The value of a user variable, if defined (last definition wins, like GitLab).
    pub fn variable(&self, key: &str) -> Option<&str> {
        self.variables
            .iter()
            .rev()
            .find(|v| v.key == key)
            .map(|v| v.value.as_str())
    }

    /// Adds or replaces a plain variable (handy to tweak a loaded fixture in a test).
    pub fn set_variable(&mut self, key: &str, value: &str) {
        self.variables.retain(|v| v.key != key);
        self.variables.push(Variable {
            key: key.to_owned(),
            value: value.to_owned(),
            file: false,
            masked: false,
            raw: false,
        });
    }
}

fn parse_variables(map: &serde_yaml::Mapping) -> std::result::Result<Vec<Variable>, String> {
    let mut out = Vec::new();
    for (key, value) in map {
        let key = scalar_string(key).ok_or_else(|| "variables: keys must be strings".to_owned())?;
        let variable = match value {
            Value::Mapping(_) => {
                let raw: RawVariable = serde_yaml::from_value(value.clone())
                    .map_err(|e| format!("variables.{key}: {e}"))?;
                let value = scalar_string(&raw.value).ok_or_else(|| {
                    format!("variables.{key}.value: expected a string, number or boolean")
                })?;
                Variable {
                    key,
                    value,
                    file: raw.file,
                    masked: raw.masked,
                    raw: raw.raw,
                }
            }
            other => {
                let value = scalar_string(other).ok_or_else(|| {
                    format!("variables.{key}: expected a string, number, boolean or a map")
                })?;
                Variable {
                    key,
                    value,
                    file: false,
                    masked: false,
                    raw: false,
                }
            }
        };
        out.push(variable);
    }
    Ok(out)
}

fn parse_files(
    map: &serde_yaml::Mapping,
    what: &str,
) -> std::result::Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (path, content) in map {
        let path = scalar_string(path).ok_or_else(|| format!("{what}: paths must be strings"))?;
        if !is_safe_relative_path(&path) {
            return Err(format!(
                "{what}.{path}: must be a relative path without '..'"
            ));
        }
        let content =
            scalar_string(content).ok_or_else(|| format!("{what}.{path}: content must be text"))?;
        out.push((path, content));
    }
    Ok(out)
}

fn parse_expectation(value: &Value) -> std::result::Result<Expectation, String> {
    let bad = || {
        "expect: expected success, failed, {failed: N}, system_failure, configuration_error, \
         canceled or timed_out"
            .to_owned()
    };
    match value {
        Value::String(s) => match s.as_str() {
            "success" => Ok(Expectation::Success),
            "failed" => Ok(Expectation::Failed(None)),
            "system_failure" => Ok(Expectation::SystemFailure),
            "configuration_error" => Ok(Expectation::ConfigurationError),
            "canceled" => Ok(Expectation::Canceled),
            "timed_out" => Ok(Expectation::TimedOut),
            _ => Err(bad()),
        },
        Value::Mapping(map) if map.len() == 1 => {
            let code = map
                .get("failed")
                .and_then(Value::as_i64)
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(bad)?;
            Ok(Expectation::Failed(Some(code)))
        }
        _ => Err(bad()),
    }
}

fn scalar_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A shell variable name, the only keys the scripts can export.
pub(crate) fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A path that stays inside the directory it is joined to.
pub(crate) fn is_safe_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\0')
        && path.split('/').all(|part| part != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<JobFixture> {
        JobFixture::from_yaml(text, Path::new("/fixtures"))
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let err = parse("name: a\nscript: [true]\nscirpt: [x]\n").unwrap_err();
        assert!(err.to_string().contains("scirpt"), "{err}");
    }

    #[test]
    fn unknown_key_in_a_variable_is_named() {
        let err = parse("name: a\nscript: [true]\nvariables:\n  A: {value: x, maskd: true}\n")
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("variables.A") && text.contains("maskd"),
            "{text}"
        );
    }

    #[test]
    fn unknown_key_in_artifacts_is_named() {
        let err = parse("name: a\nscript: [true]\nartifacts: {pths: [x]}\n").unwrap_err();
        assert!(err.to_string().contains("pths"), "{err}");
    }

    #[test]
    fn full_fixture_parses() {
        let f = parse(
            r#"
name: train
stage: build
image: {name: "python:3.12", entrypoint: [""]}
variables:
  PLAIN: 3
  SECRET: {value: hunter22, masked: true}
  CONF: {value: "a=b\n", file: true}
script: ["echo hi"]
after_script: ["echo bye"]
steps: [{name: release, script: ["echo rel"]}]
hooks: {pre_get_sources_script: ["echo pre"]}
artifacts: {paths: ["out/**"], when: always, reports: {dotenv: build.env}}
cache: {key: pip, paths: [".cache/"], policy: pull}
dependencies: [{name: prep, files: {"data/x.csv": "1,2\n"}}]
timeout: 60
ref: feature/x
protected: true
project: {path: ml/churn, id: 7}
source: {"train.py": "print(1)\n"}
expect: {failed: 3}
"#,
        )
        .unwrap();
        assert_eq!(f.variables.len(), 3);
        assert_eq!(f.variables[0].value, "3");
        assert!(f.variables[1].masked && f.variables[2].file);
        assert_eq!(f.image.as_ref().unwrap().name, "python:3.12");
        assert_eq!(f.cache.as_ref().unwrap().policy, CachePolicy::Pull);
        assert_eq!(f.artifacts.as_ref().unwrap().when, When::Always);
        assert_eq!(f.expect, Some(Expectation::Failed(Some(3))));
        assert_eq!(f.timeout, Duration::from_secs(60));
        assert_eq!(f.git_ref, "feature/x");
        assert_eq!(f.dependencies[0].files[0].0, "data/x.csv");
    }

    #[test]
    fn relative_source_dir_is_resolved_against_the_fixture_dir() {
        let f = parse("name: a\nscript: [true]\nsource: repo\n").unwrap();
        assert_eq!(f.source, Source::Dir(PathBuf::from("/fixtures/repo")));
    }

    #[test]
    fn bad_values_are_rejected_with_the_key() {
        for (yaml, key) in [
            (
                "name: a\nscript: [true]\nvariables: {\"A-B\": x}\n",
                "variables.A-B",
            ),
            (
                "name: a\nscript: [true]\nproject: {path: flat}\n",
                "project.path",
            ),
            (
                "name: a\nscript: [true]\nsource: {\"../x\": y}\n",
                "source.../x",
            ),
            ("name: a\nscript: [true]\nexpect: maybe\n", "expect"),
            ("name: a\n", "script"),
        ] {
            let err = parse(yaml).unwrap_err().to_string();
            assert!(err.contains(key), "{yaml:?} -> {err}");
        }
    }
}
