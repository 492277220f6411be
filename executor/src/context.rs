//! The job context the runner hands every stage: the trusted `JOB_RESPONSE_FILE` (GitLab's job
//! payload as the runner parsed it) and the `CUSTOM_ENV_*` variables it computed.
//!
//! Identity (job, project, ref, protection) is read from the response file only: a job variable
//! can shadow a `CUSTOM_ENV_CI_*` value, but not the payload.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use stages::job::{Job, Variable, Variables};
use stages::settings::JobShape;

/// Why the job context could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The runner did not set an expected variable.
    #[error(
        "{0} is not set; is this running under gitlab-runner's custom executor (14.1 or later)?"
    )]
    Missing(&'static str),
    /// The response file could not be read.
    #[error("cannot read JOB_RESPONSE_FILE {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The response file is not the payload we expect.
    #[error("JOB_RESPONSE_FILE {path} is not a job payload: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
struct Response {
    id: u64,
    #[serde(default)]
    job_info: JobInfo,
    #[serde(default)]
    git_info: GitInfo,
    #[serde(default)]
    runner_info: RunnerInfo,
    #[serde(default)]
    variables: Vec<RespVariable>,
    #[serde(default)]
    steps: Vec<Step>,
    #[serde(default)]
    image: Option<Image>,
    #[serde(default)]
    hooks: Vec<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct JobInfo {
    #[serde(default)]
    name: String,
    #[serde(default)]
    project_id: u64,
    #[serde(default)]
    project_full_path: String,
    #[serde(default)]
    pipeline_id: u64,
}

#[derive(Debug, Default, Deserialize)]
struct GitInfo {
    #[serde(default, rename = "ref")]
    git_ref: String,
    #[serde(default)]
    sha: String,
    #[serde(default)]
    protected: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct RunnerInfo {
    #[serde(default)]
    timeout: u64,
}

#[derive(Debug, Deserialize)]
struct RespVariable {
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    masked: bool,
    #[serde(default)]
    file: bool,
}

#[derive(Debug, Deserialize)]
struct Step {
    #[serde(default)]
    name: String,
    #[serde(default)]
    script: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Image {
    #[serde(default)]
    name: String,
}

/// The job, and facts about its shape the policy checks.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job model.
    pub job: Job,
    /// after_script / hooks presence.
    pub shape: JobShape,
}

/// Reads the job from `JOB_RESPONSE_FILE`.
pub fn load() -> Result<JobContext, ContextError> {
    let path = std::env::var_os("JOB_RESPONSE_FILE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .ok_or(ContextError::Missing("JOB_RESPONSE_FILE"))?;
    let bytes = std::fs::read(&path).map_err(|source| ContextError::Read {
        path: path.clone(),
        source,
    })?;
    let r: Response = serde_json::from_slice(&bytes).map_err(|e| ContextError::Parse {
        path,
        message: e.to_string(),
    })?;
    Ok(from_response(r))
}

fn from_response(r: Response) -> JobContext {
    let vars: BTreeMap<String, Variable> = r
        .variables
        .into_iter()
        .map(|v| {
            (
                v.key,
                Variable {
                    value: v.value,
                    masked: v.masked,
                    file: v.file,
                },
            )
        })
        .collect();
    let var = |k: &str| {
        vars.get(k)
            .map(|v| v.value.clone())
            .filter(|v| !v.is_empty())
    };
    let url = var("CI_JOB_URL").unwrap_or_default();
    let default_branch = var("CI_DEFAULT_BRANCH");
    let shape = JobShape {
        has_after_script: r
            .steps
            .iter()
            .any(|s| s.name == "after_script" && s.script.iter().any(|l| !l.trim().is_empty())),
        has_hooks: !r.hooks.is_empty(),
    };
    let job = Job {
        id: r.id,
        name: r.job_info.name,
        project_id: r.job_info.project_id,
        project_path: r.job_info.project_full_path,
        pipeline_id: r.job_info.pipeline_id,
        url,
        git_ref: r.git_info.git_ref,
        sha: r.git_info.sha,
        ref_protected: r.git_info.protected.unwrap_or(false),
        default_branch,
        image: r.image.map(|i| i.name).filter(|n| !n.trim().is_empty()),
        timeout: Duration::from_secs(if r.runner_info.timeout == 0 {
            3600
        } else {
            r.runner_info.timeout
        }),
        variables: Variables::new(vars),
    };
    JobContext { job, shape }
}

/// The project dir the runner computed (`CUSTOM_ENV_CI_PROJECT_DIR`), set for run stages.
pub fn project_dir() -> Result<PathBuf, ContextError> {
    std::env::var_os("CUSTOM_ENV_CI_PROJECT_DIR")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .ok_or(ContextError::Missing("CUSTOM_ENV_CI_PROJECT_DIR"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_fields_map_onto_the_job() {
        let r: Response = serde_json::from_str(
            r#"{"id":42,"token":"secret","job_info":{"name":"train","project_id":7,"project_full_path":"ml/seeds","pipeline_id":3},
            "git_info":{"ref":"main","sha":"abc","protected":true},"runner_info":{"timeout":600},
            "variables":[{"key":"CI_JOB_URL","value":"https://g/j/42","public":true},{"key":"TOKEN","value":"s3cr3t-value","masked":true}],
            "steps":[{"name":"script","script":["make"]},{"name":"after_script","script":["echo done"]}],
            "image":{"name":"123456789012.dkr.ecr.us-east-1.amazonaws.com/x:1"},"unknown_future_field":1}"#,
        )
        .unwrap();
        let c = from_response(r);
        assert_eq!(c.job.id, 42);
        assert_eq!(c.job.project_path, "ml/seeds");
        assert!(c.job.ref_protected);
        assert_eq!(c.job.timeout, Duration::from_secs(600));
        assert_eq!(c.job.url, "https://g/j/42");
        assert!(c.shape.has_after_script);
        assert!(!c.shape.has_hooks);
        assert_eq!(
            c.job.variables.secrets().collect::<Vec<_>>(),
            vec!["s3cr3t-value"]
        );
    }
}
