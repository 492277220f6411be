//! The per-job state file: every AWS resource a job created, recorded the moment it exists, so a
//! later stage (re-run, cleanup after SIGKILL) can attach to it or tear it down.
//!
//! # Guarantees
//! - Writes are atomic (temp file, fsync, rename): a SIGKILL leaves the old or the new state.
//! - A record is written *before* the executor waits on the resource.
//!
//! # Caveats
//! - Between the AWS create call returning and the write, a SIGKILL can lose the record; the
//!   deterministic resource names let cleanup find such a resource by name anyway.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Bumped when the format changes incompatibly.
pub const STATE_VERSION: u32 = 1;

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
}

/// One created resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// Its kind.
    pub kind: ResourceKind,
    /// Name or ARN.
    pub id: String,
    /// Container of the resource (ECS cluster), if any.
    #[serde(default)]
    pub scope: Option<String>,
    /// The run stage that created it.
    pub stage: String,
    /// Set once the resource reached a terminal state, so cleanup need not stop it.
    #[serde(default)]
    pub finished: bool,
}

/// S3 objects staged for the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    /// Bucket.
    pub bucket: String,
    /// Key prefix (ends with `/`).
    pub prefix: String,
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
}

impl JobState {
    /// The record of `kind`/`id`, if any.
    pub fn find(&self, kind: ResourceKind, id: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.kind == kind && r.id == id)
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

    /// Records a resource (once) and persists it.
    pub fn record(&self, resource: Resource) -> Result<(), StateError> {
        self.update(|s| {
            if s.find(resource.kind, &resource.id).is_none() {
                s.resources.push(resource);
            }
        })
        .map(|_| ())
    }

    /// Marks a resource finished.
    pub fn mark_finished(&self, kind: ResourceKind, id: &str) -> Result<(), StateError> {
        self.update(|s| {
            for r in s
                .resources
                .iter_mut()
                .filter(|r| r.kind == kind && r.id == id)
            {
                r.finished = true;
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
        let r = Resource {
            kind: ResourceKind::TrainingJob,
            id: "gl-1-9".into(),
            scope: None,
            stage: "build_script".into(),
            finished: false,
        };
        f.record(r.clone()).unwrap();
        f.record(r.clone()).unwrap();
        f.mark_finished(ResourceKind::TrainingJob, "gl-1-9")
            .unwrap();
        let s = StateFile::new(dir.path(), 9).load().unwrap();
        assert_eq!(s.resources.len(), 1);
        assert!(s.resources[0].finished);
        f.remove().unwrap();
        f.remove().unwrap();
        assert!(!f.path().exists());
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path(), 1);
        std::fs::write(f.path(), b"{not json").unwrap();
        assert!(matches!(f.load(), Err(StateError::Corrupt { .. })));
    }
}
