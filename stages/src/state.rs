//! The per-job state file: every AWS resource a job creates, recorded as intended *before* the
//! create call (under its deterministic name, which is also the call's idempotency token) and as
//! created after it, so a later stage (re-run, cleanup after SIGKILL, gc) can attach to it or
//! release it whatever moment the executor was killed at.
//!
//! # Guarantees
//! - Writes are atomic (temp file, fsync, rename): a SIGKILL leaves the old or the new state.
//! - A resource is in the file before AWS can have created it; between the create call and the
//!   `Created` record it is `Intended`, and `resources::release` finds it by name.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Bumped when the format changes incompatibly.
pub const STATE_VERSION: u32 = 2;

/// What kind of thing a record points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceKind {
    /// A SageMaker training job (id = name).
    TrainingJob,
    /// An ECS task (id = ARN; `scope` = cluster).
    EcsTask,
    /// An ECS service deployment in progress (id = deployment id; `scope` = cluster).
    EcsDeployment,
    /// A model package version (id = its ARN; `scope` = its group). A release artifact: never
    /// deleted by cleanup.
    ModelPackage,
    /// A SageMaker model created for a deployment (id = ARN; `scope` = the endpoint). Deleted by
    /// release unless its endpoint uses it (it shares its name with the endpoint config).
    Model,
    /// An endpoint config created for a deployment (id = ARN; `scope` = the endpoint). Deleted
    /// by release unless its endpoint serves it or is being updated to it.
    EndpointConfig,
    /// An endpoint a deployment creates or updates (id = ARN; `scope` = the config it served
    /// before an update, none for a first deployment). Release deletes a first deployment's
    /// endpoint (it never served); an update is left to SageMaker, which cannot halt it.
    Endpoint,
}

/// Where a resource stands, as far as this executor knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// About to be created under its name: the create call may or may not have reached AWS.
    Intended,
    /// The create call returned.
    Created,
    /// Reached a terminal state (or was released): nothing left to stop.
    Finished,
}

/// One resource of the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// Its kind.
    pub kind: ResourceKind,
    /// Its deterministic name (training job name; ECS `startedBy`; the deployment's service).
    pub name: String,
    /// The id AWS gave it (task ARN, deployment id), once known; the name where they coincide.
    #[serde(default)]
    pub id: Option<String>,
    /// Container of the resource (ECS cluster), if any.
    #[serde(default)]
    pub scope: Option<String>,
    /// The run stage that created it.
    pub stage: String,
    /// Where it stands.
    pub phase: Phase,
    /// When it was recorded as intended (Unix seconds): a create call in flight then is decided
    /// within the SDK's call timeouts after it.
    #[serde(default)]
    pub intended_at: u64,
}

impl Resource {
    /// A resource about to be created under `name` by `stage`.
    pub fn intended(kind: ResourceKind, name: &str, scope: Option<&str>, stage: &str) -> Self {
        Resource {
            kind,
            name: name.to_owned(),
            id: None,
            scope: scope.map(str::to_owned),
            stage: stage.to_owned(),
            phase: Phase::Intended,
            intended_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }

    /// The id to address it by: AWS's id when known, else its name.
    pub fn handle(&self) -> &str {
        self.id.as_deref().unwrap_or(&self.name)
    }
}

/// S3 objects staged for the job: one run's unguessable prefix (see
/// [`crate::workspace::StagingLocation`]), recorded before anything is uploaded under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    /// Bucket.
    pub bucket: String,
    /// Key prefix (ends with `/`).
    pub prefix: String,
    /// The run stage that staged there: a re-run of that stage finds its prefix again (its
    /// random part cannot be derived), e.g. to restore what the task it attaches to returned.
    /// Absent in files of executors that derived the prefix from the job id.
    #[serde(default)]
    pub stage: Option<String>,
}

/// One object the job produced outside its staging prefix that must not outlive it (SageMaker's
/// `output.tar.gz`: the returned workspace, file variables included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobObject {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobState {
    /// Format version.
    pub version: u32,
    /// GitLab job id.
    pub job_id: u64,
    /// Staged S3 prefixes.
    #[serde(default)]
    pub staged: Vec<Staged>,
    /// Created resources.
    #[serde(default)]
    pub resources: Vec<Resource>,
    /// Objects deleted at cleanup.
    #[serde(default)]
    pub objects: Vec<JobObject>,
}

impl JobState {
    /// The record of `kind` named `name`, if any.
    pub fn find(&self, kind: ResourceKind, name: &str) -> Option<&Resource> {
        self.resources
            .iter()
            .find(|r| r.kind == kind && r.name == name)
    }

    /// The prefix `stage` staged under, if it did.
    pub fn staged_by(&self, stage: &str) -> Option<&Staged> {
        self.staged
            .iter()
            .find(|s| s.stage.as_deref() == Some(stage))
    }

    /// The record of `kind` created by `stage`, if any.
    pub fn of_stage(&self, kind: ResourceKind, stage: &str) -> Option<&Resource> {
        self.resources
            .iter()
            .find(|r| r.kind == kind && r.stage == stage)
    }
}

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("job state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a state file this version understands.
    #[error("job state file {path} is unreadable: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// The state file of one job.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    job_id: u64,
}

impl StateFile {
    /// The state file of `job_id` under `state_root`.
    pub fn new(state_root: &Path, job_id: u64) -> Self {
        StateFile {
            path: state_root.join(format!("job-{job_id}.json")),
            job_id,
        }
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current state; an absent file is an empty state.
    pub fn load(&self) -> Result<JobState, StateError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                let s: JobState =
                    serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                        path: self.path.clone(),
                        message: e.to_string(),
                    })?;
                if s.version != STATE_VERSION {
                    return Err(StateError::Corrupt {
                        path: self.path.clone(),
                        message: format!(
                            "version {} (this executor writes {STATE_VERSION})",
                            s.version
                        ),
                    });
                }
                Ok(s)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(JobState {
                version: STATE_VERSION,
                job_id: self.job_id,
                ..JobState::default()
            }),
            Err(source) => Err(StateError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Applies `change` and writes the result atomically.
    pub fn update(&self, change: impl FnOnce(&mut JobState)) -> Result<JobState, StateError> {
        let mut s = self.load()?;
        change(&mut s);
        self.write(&s)?;
        Ok(s)
    }

    /// Records a resource as intended (once, by kind and name) and persists it: call it before
    /// the create call.
    pub fn intend(&self, resource: Resource) -> Result<(), StateError> {
        self.update(|s| {
            if s.find(resource.kind, &resource.name).is_none() {
                s.resources.push(resource);
            }
        })
        .map(|_| ())
    }

    /// Records that the resource `name` exists, with the id AWS gave it (recording it first if
    /// an earlier attempt did not).
    pub fn created(&self, resource: &Resource, id: &str) -> Result<(), StateError> {
        self.update(|s| {
            match s
                .resources
                .iter_mut()
                .find(|r| r.kind == resource.kind && r.name == resource.name)
            {
                Some(r) => {
                    r.id = Some(id.to_owned());
                    r.phase = r.phase.max(Phase::Created);
                }
                None => s.resources.push(Resource {
                    id: Some(id.to_owned()),
                    phase: Phase::Created,
                    ..resource.clone()
                }),
            }
        })
        .map(|_| ())
    }

    /// Marks the resource `name` finished.
    pub fn finished(&self, kind: ResourceKind, name: &str) -> Result<(), StateError> {
        self.update(|s| {
            for r in s
                .resources
                .iter_mut()
                .filter(|r| r.kind == kind && r.name == name)
            {
                r.phase = Phase::Finished;
            }
        })
        .map(|_| ())
    }

    /// Records an object to delete at cleanup (once).
    pub fn record_object(&self, object: JobObject) -> Result<(), StateError> {
        self.update(|s| {
            if !s.objects.contains(&object) {
                s.objects.push(object);
            }
        })
        .map(|_| ())
    }

    /// Records a staged prefix (once).
    pub fn record_staged(&self, staged: Staged) -> Result<(), StateError> {
        self.update(|s| {
            if !s.staged.contains(&staged) {
                s.staged.push(staged);
            }
        })
        .map(|_| ())
    }

    /// Removes the file; absent is fine.
    pub fn remove(&self) -> Result<(), StateError> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StateError::Io {
                path: self.path.clone(),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    fn write(&self, s: &JobState) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(s).map_err(|e| StateError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reload_and_are_not_duplicated() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path(), 9);
        assert_eq!(f.load().unwrap().resources.len(), 0);
        let r = Resource::intended(ResourceKind::EcsTask, "gl-1-9", Some("ci"), "build_script");
        f.intend(r.clone()).unwrap();
        f.intend(r.clone()).unwrap();
        let s = StateFile::new(dir.path(), 9).load().unwrap();
        assert_eq!(s.resources[0].phase, Phase::Intended);
        assert_eq!(s.resources[0].handle(), "gl-1-9");
        f.created(&r, "arn:task/1").unwrap();
        let s = StateFile::new(dir.path(), 9).load().unwrap();
        assert_eq!(s.resources[0].phase, Phase::Created);
        assert_eq!(s.resources[0].handle(), "arn:task/1");
        f.finished(ResourceKind::EcsTask, "gl-1-9").unwrap();
        // A late `created` (an attach after the end) never moves a finished resource back.
        f.created(&r, "arn:task/1").unwrap();
        let s = StateFile::new(dir.path(), 9).load().unwrap();
        assert_eq!(s.resources.len(), 1);
        assert_eq!(s.resources[0].phase, Phase::Finished);
        f.remove().unwrap();
        f.remove().unwrap();
        assert!(!f.path().exists());
    }

    #[test]
    fn each_stage_finds_the_prefix_it_staged_under() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path(), 9);
        let staged = |prefix: &str, stage: &str| Staged {
            bucket: "b".into(),
            prefix: prefix.into(),
            stage: Some(stage.into()),
        };
        f.record_staged(staged("p/1/9/aa/", "step_a")).unwrap();
        f.record_staged(staged("p/1/9/bb/", "step_b")).unwrap();
        f.record_staged(staged("p/1/9/aa/", "step_a")).unwrap();
        let s = StateFile::new(dir.path(), 9).load().unwrap();
        assert_eq!(s.staged.len(), 2);
        assert_eq!(s.staged_by("step_a").unwrap().prefix, "p/1/9/aa/");
        assert_eq!(s.staged_by("step_b").unwrap().prefix, "p/1/9/bb/");
        assert!(s.staged_by("build_script").is_none());
        // A record of an executor without per-run prefixes still loads (and is cleaned up).
        std::fs::write(
            f.path(),
            br#"{"version":2,"job_id":9,"staged":[{"bucket":"b","prefix":"p/1/9/"}]}"#,
        )
        .unwrap();
        let old = f.load().unwrap();
        assert_eq!(old.staged[0].stage, None);
        assert!(old.staged_by("build_script").is_none());
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path(), 1);
        std::fs::write(f.path(), b"{not json").unwrap();
        assert!(matches!(f.load(), Err(StateError::Corrupt { .. })));
    }
}
