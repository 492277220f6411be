//! The job as GitLab sends it and as the runner extends it: the `response.json` payload
//! (protocol §10), GitLab's predefined variables, and the variables the runner adds itself
//! (protocol §4), with the runner's `$VAR` expansion.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::fixture::JobFixture;
use super::repo::FixtureRepo;

/// One variable as the runner holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobVariable {
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) public: bool,
    pub(crate) file: bool,
    pub(crate) masked: bool,
    pub(crate) raw: bool,
}

impl JobVariable {
    fn public(key: &str, value: impl Into<String>) -> Self {
        JobVariable {
            key: key.to_owned(),
            value: value.into(),
            public: true,
            file: false,
            masked: false,
            raw: false,
        }
    }
}

/// A dependency's artifact archive on the emulated GitLab.
#[derive(Debug, Clone)]
pub(crate) struct DependencyArchive {
    pub(crate) name: String,
    pub(crate) id: u64,
    pub(crate) archive: PathBuf,
    pub(crate) size: u64,
}

/// The directories StartBuild settles on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dirs {
    pub(crate) builds_dir: PathBuf,
    pub(crate) cache_dir: PathBuf,
    pub(crate) project_dir: PathBuf,
}

/// A job ready to run: the fixture plus everything GitLab would have assigned.
#[derive(Debug, Clone)]
pub(crate) struct JobSpec {
    pub(crate) id: u64,
    pub(crate) token: String,
    pub(crate) pipeline_id: u64,
    pub(crate) fixture: JobFixture,
    pub(crate) repo: FixtureRepo,
    pub(crate) dependencies: Vec<DependencyArchive>,
    pub(crate) server_url: String,
    pub(crate) short_token: String,
    pub(crate) concurrent_id: usize,
}

const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

impl JobSpec {
    pub(crate) fn project_name(&self) -> &str {
        self.fixture
            .project
            .path
            .rsplit('/')
            .next()
            .unwrap_or(&self.fixture.project.path)
    }

    pub(crate) fn namespace(&self) -> &str {
        self.fixture
            .project
            .path
            .rsplit_once('/')
            .map(|(ns, _)| ns)
            .unwrap_or("")
    }

    pub(crate) fn image_name(&self) -> &str {
        self.fixture
            .image
            .as_ref()
            .map(|i| i.name.as_str())
            .unwrap_or("")
    }

    /// `<builds_dir>/<namespace>/<project>`, or the shared-dir layout (protocol §3).
    pub(crate) fn project_dir(&self, builds_dir: &Path, shared: bool) -> PathBuf {
        let mut dir = builds_dir.to_path_buf();
        if shared {
            dir.push(&self.short_token);
            dir.push(self.concurrent_id.to_string());
        }
        dir.join(&self.fixture.project.path)
    }

    /// The variables GitLab sends in the payload: predefined ones, then the user's.
    pub(crate) fn gitlab_variables(&self) -> Vec<JobVariable> {
        let f = &self.fixture;
        let project_url = format!("{}/{}", self.server_url, f.project.path);
        let mut vars = vec![
            JobVariable::public("CI_JOB_ID", self.id.to_string()),
            JobVariable::public("CI_JOB_URL", format!("{project_url}/-/jobs/{}", self.id)),
            JobVariable {
                key: "CI_JOB_TOKEN".to_owned(),
                value: self.token.clone(),
                public: false,
                file: false,
                masked: true,
                raw: false,
            },
            JobVariable::public("CI_JOB_NAME", f.name.clone()),
            JobVariable::public("CI_JOB_STAGE", f.stage.clone()),
            JobVariable::public("CI_PIPELINE_ID", self.pipeline_id.to_string()),
            JobVariable::public("CI_PIPELINE_SOURCE", f.pipeline_source.clone()),
            JobVariable::public("CI_PROJECT_ID", f.project.id.to_string()),
            JobVariable::public("CI_PROJECT_PATH", f.project.path.clone()),
            JobVariable::public("CI_PROJECT_NAME", self.project_name()),
            JobVariable::public("CI_PROJECT_NAMESPACE", self.namespace()),
            JobVariable::public("CI_PROJECT_URL", project_url.clone()),
            JobVariable::public("CI_COMMIT_SHA", self.repo.sha.clone()),
            JobVariable::public(
                "CI_COMMIT_SHORT_SHA",
                self.repo.sha.chars().take(8).collect::<String>(),
            ),
            JobVariable::public("CI_COMMIT_BEFORE_SHA", ZERO_SHA),
            JobVariable::public("CI_COMMIT_REF_NAME", f.git_ref.clone()),
            JobVariable::public("CI_COMMIT_REF_SLUG", slug(&f.git_ref)),
            JobVariable::public("CI_COMMIT_REF_PROTECTED", f.protected.to_string()),
            JobVariable::public("CI_DEFAULT_BRANCH", f.default_branch.clone()),
            JobVariable::public("CI_SERVER_URL", self.server_url.clone()),
            JobVariable::public(
                "CI_REPOSITORY_URL",
                self.repo.url.to_string_lossy().into_owned(),
            ),
            JobVariable::public("GITLAB_CI", "true"),
            JobVariable::public("CI", "true"),
        ];
        if f.pipeline_source != "merge_request_event" {
            vars.push(JobVariable::public("CI_COMMIT_BRANCH", f.git_ref.clone()));
        }
        for (key, value) in &f.predefined {
            vars.push(JobVariable::public(key, value.clone()));
        }
        for v in &f.variables {
            vars.push(JobVariable {
                key: v.key.clone(),
                value: v.value.clone(),
                public: !v.masked,
                file: v.file,
                masked: v.masked,
                raw: v.raw,
            });
        }
        vars
    }

    /// The variables the runner adds (`Build.GetAllVariables`), not part of the payload.
    /// Before StartBuild the directories are empty strings, as on the first config call.
    pub(crate) fn runner_variables(&self, dirs: Option<&Dirs>, status: &str) -> Vec<JobVariable> {
        let path = |p: Option<&Path>| p.map(|p| p.to_string_lossy().into_owned());
        let builds = path(dirs.map(|d| d.builds_dir.as_path())).unwrap_or_default();
        let project = path(dirs.map(|d| d.project_dir.as_path())).unwrap_or_default();
        let temp_project = if project.is_empty() {
            String::new()
        } else {
            format!("{project}.tmp")
        };
        vec![
            JobVariable::public("CI_RUNNER_SHORT_TOKEN", self.short_token.clone()),
            JobVariable::public("CI_RUNNER_VERSION", "19.4.0"),
            JobVariable::public("CI_RUNNER_REVISION", "emulator"),
            JobVariable::public("CI_RUNNER_EXECUTABLE_ARCH", "linux/amd64"),
            JobVariable::public("CI_BUILDS_DIR", builds),
            JobVariable::public("CI_PROJECT_DIR", project),
            JobVariable::public("CI_CONCURRENT_ID", self.concurrent_id.to_string()),
            JobVariable::public("CI_CONCURRENT_PROJECT_ID", self.concurrent_id.to_string()),
            JobVariable::public("CI_SERVER", "yes"),
            JobVariable::public("CI_SHARED_ENVIRONMENT", "true"),
            JobVariable::public("CI_JOB_STATUS", status),
            JobVariable::public("CI_JOB_TIMEOUT", self.fixture.timeout.as_secs().to_string()),
            JobVariable::public("CI_JOB_IMAGE", self.image_name()),
            JobVariable::public("RUNNER_TEMP_PROJECT_DIR", temp_project),
        ]
    }

    /// Runner variables then GitLab's, values expanded (except raw ones). This is what both
    /// `CUSTOM_ENV_*` and the script exports are built from.
    pub(crate) fn all_variables(&self, dirs: Option<&Dirs>, status: &str) -> Vec<JobVariable> {
        let mut vars = self.runner_variables(dirs, status);
        vars.extend(self.gitlab_variables());
        expand_all(&vars)
    }

    /// Strings the job log must mask: masked variables and the job token.
    pub(crate) fn masks(&self) -> Vec<String> {
        let mut masks: Vec<String> = self
            .fixture
            .variables
            .iter()
            .filter(|v| v.masked)
            .map(|v| v.value.clone())
            .collect();
        masks.push(self.token.clone());
        masks
    }

    /// The `JOB_RESPONSE_FILE` content (protocol §10): GitLab's payload, no runner variables.
    pub(crate) fn response_json(&self) -> Value {
        let f = &self.fixture;
        let timeout = f.timeout.as_secs();
        let variables: Vec<Value> = self
            .gitlab_variables()
            .iter()
            .map(|v| {
                json!({
                    "key": v.key, "value": v.value, "public": v.public,
                    "file": v.file, "masked": v.masked, "raw": v.raw,
                })
            })
            .collect();
        let mut steps = vec![json!({
            "name": "script", "script": f.script, "timeout": timeout,
            "when": "on_success", "allow_failure": false,
        })];
        for step in &f.steps {
            steps.push(json!({
                "name": step.name, "script": step.script, "timeout": timeout,
                "when": "on_success", "allow_failure": false,
            }));
        }
        if !f.after_script.is_empty() {
            steps.push(json!({
                "name": "after_script", "script": f.after_script, "timeout": timeout,
                "when": "always", "allow_failure": true,
            }));
        }
        let mut artifacts = Vec::new();
        if let Some(a) = &f.artifacts {
            if !a.paths.is_empty() || a.untracked {
                artifacts.push(json!({
                    "name": a.name.clone().unwrap_or_else(|| "artifacts".to_owned()),
                    "untracked": a.untracked, "paths": a.paths, "exclude": a.exclude,
                    "when": a.when.as_str(), "artifact_type": "archive",
                    "artifact_format": "zip", "expire_in": "",
                }));
            }
            let reports = [
                ("dotenv", &a.reports.dotenv),
                ("metrics", &a.reports.metrics),
            ];
            for (kind, path) in reports {
                if let Some(path) = path {
                    artifacts.push(json!({
                        "name": "", "untracked": false, "paths": [path], "exclude": [],
                        "when": a.when.as_str(), "artifact_type": kind,
                        "artifact_format": "gzip", "expire_in": "",
                    }));
                }
            }
        }
        let cache: Vec<Value> = f
            .cache
            .iter()
            .map(|c| {
                json!({
                    "key": c.key, "untracked": c.untracked, "policy": c.policy.as_str(),
                    "paths": c.paths, "when": c.when.as_str(), "fallback_keys": [],
                })
            })
            .collect();
        let dependencies: Vec<Value> = self
            .dependencies
            .iter()
            .map(|d| {
                json!({
                    "id": d.id, "token": self.token, "name": d.name,
                    "artifacts_file": {"filename": "artifacts.tar", "size": d.size},
                })
            })
            .collect();
        let mut hooks = Vec::new();
        if !f.hooks.pre_get_sources_script.is_empty() {
            hooks.push(json!({"name": "pre_get_sources_script",
                              "script": f.hooks.pre_get_sources_script}));
        }
        if !f.hooks.post_get_sources_script.is_empty() {
            hooks.push(json!({"name": "post_get_sources_script",
                              "script": f.hooks.post_get_sources_script}));
        }
        let image = match &f.image {
            Some(i) => json!({"name": i.name, "entrypoint": i.entrypoint}),
            None => json!({"name": "", "entrypoint": []}),
        };
        json!({
            "id": self.id,
            "token": self.token,
            "allow_git_fetch": true,
            "job_info": {
                "id": self.id,
                "name": f.name,
                "stage": f.stage,
                "pipeline_id": self.pipeline_id,
                "project_id": f.project.id,
                "project_name": self.project_name(),
                "project_full_path": f.project.path,
            },
            "git_info": {
                "repo_url": self.repo.url.to_string_lossy(),
                "repo_object_format": "sha1",
                "ref": f.git_ref,
                "sha": self.repo.sha,
                "before_sha": ZERO_SHA,
                "ref_type": "branch",
                "refspecs": ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"],
                "depth": 20,
                "protected": f.protected,
            },
            "runner_info": {"timeout": timeout},
            "variables": variables,
            "steps": steps,
            "image": image,
            "services": [],
            "artifacts": artifacts,
            "cache": cache,
            "credentials": [],
            "dependencies": dependencies,
            "hooks": hooks,
            "features": {"trace_sections": true},
        })
    }
}

/// `CI_COMMIT_REF_SLUG`: lowercased, non-alphanumerics replaced by `-`, at most 63 bytes,
/// no leading or trailing `-`.
pub(crate) fn slug(git_ref: &str) -> String {
    let lowered: String = git_ref
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    lowered.trim_matches('-').to_owned()
}

/// Expands `$NAME` and `${NAME}` in every non-raw value against the unexpanded values of the
/// whole list (last definition wins), like the runner's `Expand`. Unknown names expand to
/// the empty string, as with Go's `os.Expand`; any other `$` is kept literally (the runner's
/// handling of Go's special `$` names is not emulated).
pub(crate) fn expand_all(vars: &[JobVariable]) -> Vec<JobVariable> {
    let lookup = |name: &str| -> String {
        vars.iter()
            .rev()
            .find(|v| v.key == name)
            .map(|v| v.value.clone())
            .unwrap_or_default()
    };
    vars.iter()
        .map(|v| {
            let mut v = v.clone();
            if !v.raw {
                v.value = expand(&v.value, &lookup);
            }
            v
        })
        .collect()
}

fn expand(value: &str, lookup: &dyn Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(braced) = after.strip_prefix('{')
            && let Some(end) = braced.find('}')
            && is_name(&braced[..end])
        {
            out.push_str(&lookup(&braced[..end]));
            rest = &braced[end + 1..];
            continue;
        }
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if name_len > 0 {
            out.push_str(&lookup(&after[..name_len]));
            rest = &after[name_len..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(key: &str, value: &str, raw: bool) -> JobVariable {
        JobVariable {
            raw,
            ..JobVariable::public(key, value)
        }
    }

    #[test]
    fn expansion_follows_the_runner() {
        let vars = vec![
            var("A", "x", false),
            var("B", "$A-${A}-$NOPE-$-${", false),
            var("C", "$A", true),
        ];
        let out = expand_all(&vars);
        assert_eq!(out[1].value, "x-x--$-${");
        assert_eq!(out[2].value, "$A");
    }

    #[test]
    fn slug_is_gitlab_like() {
        assert_eq!(slug("Feature/Add_Thing"), "feature-add-thing");
        assert_eq!(slug("-x-"), "x");
    }
}
