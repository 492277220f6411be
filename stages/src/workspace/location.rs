//! Where a job's workspace is staged in S3, the names of the staged objects, and the `job.env`
//! manifest the in-container bootstrap reads.
//!
//! Each run of a remote stage stages under its own unguessable prefix,
//! `[<admin prefix>/]<project id>/<job id>/<32 hex>/`: the last component is 128 bits from the
//! OS's random number generator. That, not a listing right, is what keeps jobs from reading each
//! other's staged workspace (file variables included): the roles jobs run with (the Fargate task
//! role, which the job container shares with the fetch/push helpers) may get and put objects
//! under the staging prefix but not list it, so a key they were not told is out of reach.
//! Presigned URLs were the alternative for the Fargate helpers; they were not chosen because the
//! URLs would sit in the task's RunTask overrides, readable by anyone with `ecs:DescribeTasks`
//! for as long as ECS shows the task (a credential there, where the prefix is only a name), and
//! a URL for `push` signed at submit cannot outlive the signing session, shorter than a long job
//! when credentials are assumed or per-job. The `<project>/<job>/` part stays, so `gc` still
//! groups a job's runs and cleanup's prefix check still holds.
//!
//! The random component is kept out of the job log ([`redact`], [`StagingLocation::shown`]):
//! logs are readable by more people than the job's role (everyone, for a public project with
//! public pipelines), while the prefix appears only where AWS shows it to the account's
//! operators (RunTask overrides, `DescribeTrainingJob`, CloudTrail) and in the job's state file.

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use super::WorkspaceError;

/// The packed project dir and its `.tmp` sibling (gzip-compressed tar).
pub const WORKSPACE_ARCHIVE: &str = "workspace.tar.gz";
/// The POSIX-sh bootstrap that runs in the container.
pub const BOOTSTRAP: &str = "bootstrap.sh";
/// The runner's stage script.
pub const SCRIPT: &str = "script";
/// The non-secret `KEY=value` manifest the bootstrap reads (see [`JobManifest`]).
pub const MANIFEST: &str = "job.env";
/// The list of the staged objects in SageMaker's ManifestFile format, written last: a training
/// job's workspace channel reads it, so the execution role needs no `s3:ListBucket` on the
/// staging prefix (with which a training script could list every other run's prefix).
pub const CHANNEL_MANIFEST: &str = "channel.manifest";
/// The uncompressed tar the bootstrap writes into SageMaker's output dir; SageMaker then returns it
/// inside `output.tar.gz`.
pub const RETURNED_WORKSPACE_MEMBER: &str = "workspace.tar";
/// The bootstrap script itself, staged as [`BOOTSTRAP`].
pub const BOOTSTRAP_SH: &str = include_str!("bootstrap.sh");
/// Every object staging writes directly under a run's prefix, and so everything the Fargate fetch
/// helper downloads: it is told these names, because it may not list the prefix.
pub const STAGED_OBJECTS: [&str; 4] = [WORKSPACE_ARCHIVE, SCRIPT, BOOTSTRAP, MANIFEST];
/// Hex digits in a run's random component (128 bits).
const RANDOM_HEX_DIGITS: usize = 32;

/// An S3 prefix that holds staged objects: a job's `s3://<bucket>/<admin prefix>/<project>/<job>/`
/// ([`StagingLocation::new`]), or one run's unguessable prefix below it
/// ([`StagingLocation::unguessable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagingLocation {
    /// The staging bucket.
    pub bucket: String,
    /// `"<admin prefix>/<project-id>/<job-id>/[<random>/]"`; never empty and always ends with '/'.
    pub prefix: String,
}

impl StagingLocation {
    /// Builds the location of one job. Slashes around `admin_prefix` are trimmed and an empty
    /// admin prefix is allowed, so the result is always `[<admin>/]<project>/<job>/`.
    pub fn new(
        bucket: impl Into<String>,
        admin_prefix: &str,
        project_id: u64,
        job_id: u64,
    ) -> Self {
        let admin = admin_prefix.trim_matches('/');
        let prefix = if admin.is_empty() {
            format!("{project_id}/{job_id}/")
        } else {
            format!("{admin}/{project_id}/{job_id}/")
        };
        Self {
            bucket: bucket.into(),
            prefix,
        }
    }

    /// One run's location: the job's prefix ([`StagingLocation::new`]) followed by a fresh
    /// random component (see the module doc).
    ///
    /// # Errors
    /// The OS random number generator failed.
    pub fn unguessable(
        bucket: impl Into<String>,
        admin_prefix: &str,
        project_id: u64,
        job_id: u64,
    ) -> Result<Self, getrandom::Error> {
        let mut job = Self::new(bucket, admin_prefix, project_id, job_id);
        job.prefix.push_str(&random_component()?);
        job.prefix.push('/');
        Ok(job)
    }

    /// `s3://bucket/prefix` with the random component replaced by `…`: what the job log shows.
    pub fn shown(&self) -> String {
        redact(&self.s3_uri())
    }

    /// The key of a staged object: the prefix followed by `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The part of the prefix that names this job's run: `<project>/<job>/<random>` for an
    /// unguessable location, `None` for a job's own prefix (one without a random component).
    /// Output that must be as hard to find as the staged objects goes below it elsewhere.
    pub fn run_path(&self) -> Option<&str> {
        let trimmed = self.prefix.trim_end_matches('/');
        let mut segments = trimmed.rsplitn(4, '/');
        let random = segments.next()?;
        let job = segments.next()?;
        let project = segments.next()?;
        (is_random_segment(random) && is_id_segment(job) && is_id_segment(project))
            .then(|| &trimmed[trimmed.len() - random.len() - job.len() - project.len() - 2..])
    }

    /// The [`CHANNEL_MANIFEST`] of this location: a JSON array of `{"prefix": <s3 uri>}` and
    /// the staged objects' names.
    pub fn channel_manifest(&self) -> Vec<u8> {
        let mut doc = vec![serde_json::json!({ "prefix": self.s3_uri() })];
        doc.extend(STAGED_OBJECTS.iter().map(|name| serde_json::json!(name)));
        serde_json::Value::Array(doc).to_string().into_bytes()
    }

    /// `s3://bucket/prefix`, e.g. the S3 URI of a SageMaker input channel.
    pub fn s3_uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// Refuses a location whose prefix could address more than one job's objects. The fields are
    /// public, so this guards the destructive calls against a hand-built location.
    pub(crate) fn check(&self) -> Result<(), WorkspaceError> {
        let reason = if self.bucket.is_empty() {
            Some("empty bucket")
        } else if self.prefix.is_empty() || self.prefix == "/" {
            Some("empty prefix")
        } else if !self.prefix.ends_with('/') {
            Some("prefix does not end with '/'")
        } else {
            None
        };
        match reason {
            None => Ok(()),
            Some(reason) => Err(WorkspaceError::InvalidLocation {
                bucket: self.bucket.clone(),
                prefix: self.prefix.clone(),
                reason,
            }),
        }
    }
}

/// Whether a path segment is a project or job id as staging paths carry them (decimal digits).
pub(crate) fn is_id_segment(segment: &str) -> bool {
    !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit())
}

/// Whether a path segment has the shape of a run's random component.
pub(crate) fn is_random_segment(segment: &str) -> bool {
    segment.len() == RANDOM_HEX_DIGITS && segment.bytes().all(|b| b.is_ascii_hexdigit())
}

/// 128 bits from the OS random number generator, as 32 lowercase hex digits.
fn random_component() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; RANDOM_HEX_DIGITS / 2];
    getrandom::fill(&mut bytes)?;
    let mut hex = String::with_capacity(RANDOM_HEX_DIGITS);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{b:02x}");
    }
    Ok(hex)
}

/// `text` with every run's random component replaced by `…`: a path segment of 32 hex digits
/// that follows two all-digit segments (`<project id>/<job id>/<random>`), the shape only a
/// staging prefix has, so other hex values (commit hashes, digests) are left alone.
pub fn redact(text: &str) -> String {
    let segments: Vec<&str> = text.split('/').collect();
    let mut out = String::with_capacity(text.len());
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        let hidden = i >= 2
            && is_random_segment(segment)
            && is_id_segment(segments[i - 1])
            && is_id_segment(segments[i - 2]);
        out.push_str(if hidden { "…" } else { segment });
    }
    out
}

/// How the bootstrap returns the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteMode {
    /// SageMaker training: an uncompressed `workspace.tar` in `/opt/ml/output/data` (SageMaker
    /// gzips that dir into `output.tar.gz`), failure reason in `/opt/ml/output/failure`.
    SageMaker,
    /// ECS Fargate: a `workspace.tar.gz` in the shared volume, which the helper container uploads.
    Ecs,
}

impl RemoteMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::SageMaker => "sagemaker",
            Self::Ecs => "ecs",
        }
    }
}

/// The bootstrap's `job.env`: only non-secret, single-line values. The bootstrap parses it line
/// by line (it never sources it), so it cannot run code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobManifest {
    /// The project dir, restored and run at this same absolute path.
    pub project_dir: PathBuf,
    /// How the workspace goes back.
    pub mode: RemoteMode,
    /// Where to write the returned archive; `None` = the mode's default
    /// (`/opt/ml/output/data` for SageMaker; required for ECS).
    pub output_dir: Option<PathBuf>,
    /// Where to write the failure reason; `None` = the mode's default
    /// (`/opt/ml/output/failure` for SageMaker, none for ECS).
    pub failure_file: Option<PathBuf>,
}

impl JobManifest {
    /// Renders `job.env`. Every path must be absolute, normalized and free of line breaks and NUL,
    /// because the bootstrap takes values verbatim.
    pub fn render(&self) -> Result<String, WorkspaceError> {
        let mut out = String::new();
        let mut line = |key: &'static str, path: &Path| -> Result<(), WorkspaceError> {
            let text = path
                .to_str()
                .filter(|s| !s.contains(['\n', '\r', '\0']) && is_normal_absolute(path))
                .ok_or(WorkspaceError::InvalidManifest { key })?;
            // Writing to a String cannot fail.
            let _ = writeln!(out, "{key}={text}");
            Ok(())
        };
        line("SME_PROJECT_DIR", &self.project_dir)?;
        if self.project_dir.parent().is_none() {
            return Err(WorkspaceError::InvalidManifest {
                key: "SME_PROJECT_DIR",
            });
        }
        if let Some(dir) = &self.output_dir {
            line("SME_OUTPUT_DIR", dir)?;
        }
        if let Some(file) = &self.failure_file {
            line("SME_FAILURE_FILE", file)?;
        }
        let _ = writeln!(out, "SME_MODE={}", self.mode.as_str());
        Ok(out)
    }
}

/// True for an absolute path made only of normal components (no `.`, `..`).
pub(crate) fn is_normal_absolute(path: &Path) -> bool {
    let mut components = path.components();
    components.next() == Some(Component::RootDir)
        && components.all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_layout() {
        let loc = StagingLocation::new("bucket", "/staging/", 12, 345);
        assert_eq!(loc.prefix, "staging/12/345/");
        assert_eq!(
            loc.key(WORKSPACE_ARCHIVE),
            "staging/12/345/workspace.tar.gz"
        );
        assert_eq!(loc.s3_uri(), "s3://bucket/staging/12/345/");
        assert!(loc.check().is_ok());

        let bare = StagingLocation::new("bucket", "", 1, 2);
        assert_eq!(bare.prefix, "1/2/");
    }

    #[test]
    fn the_channel_manifest_names_the_prefix_then_every_staged_object() {
        let loc = StagingLocation::new("bucket", "ci", 1, 2);
        let doc: serde_json::Value = serde_json::from_slice(&loc.channel_manifest()).expect("json");
        assert_eq!(
            doc,
            serde_json::json!([
                {"prefix": "s3://bucket/ci/1/2/"},
                "workspace.tar.gz", "script", "bootstrap.sh", "job.env"
            ])
        );
    }

    #[test]
    fn a_runs_path_is_project_job_and_random_and_a_jobs_own_prefix_has_none() {
        let run = StagingLocation::unguessable("bucket", "a/b", 12, 345).expect("rng");
        let path = run
            .run_path()
            .expect("an unguessable location has a run path");
        assert!(
            run.prefix.ends_with(&format!("{path}/")),
            "{path} in {}",
            run.prefix
        );
        assert!(path.starts_with("12/345/"), "{path}");
        assert_eq!(path.len(), "12/345/".len() + RANDOM_HEX_DIGITS);
        let bare = StagingLocation::unguessable("bucket", "", 1, 2).expect("rng");
        assert!(bare.run_path().expect("run path").starts_with("1/2/"));
        assert_eq!(
            StagingLocation::new("bucket", "a", 12, 345).run_path(),
            None
        );
        let hand_built = StagingLocation {
            bucket: "b".into(),
            prefix: format!("x/{}/", "f".repeat(RANDOM_HEX_DIGITS)),
        };
        assert_eq!(hand_built.run_path(), None);
    }

    #[test]
    fn each_run_gets_its_own_unguessable_prefix_below_the_jobs() {
        let a = StagingLocation::unguessable("bucket", "staging", 12, 345).expect("rng");
        let b = StagingLocation::unguessable("bucket", "staging", 12, 345).expect("rng");
        let random = a
            .prefix
            .strip_prefix("staging/12/345/")
            .and_then(|r| r.strip_suffix('/'))
            .expect("below the job's prefix");
        assert_eq!(random.len(), 32, "{random}");
        assert!(
            random
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{random}"
        );
        assert_ne!(a.prefix, b.prefix, "128 random bits per run");
        assert!(a.check().is_ok());
        assert_eq!(a.shown(), "s3://bucket/staging/12/345/…/");
        assert!(!a.shown().contains(random));
    }

    #[test]
    fn only_a_staging_prefixs_random_component_is_redacted() {
        let hex = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            redact(&format!("downloading s3://b/pre/7/42/{hex}/script: denied")),
            "downloading s3://b/pre/7/42/…/script: denied"
        );
        assert_eq!(redact(&format!("7/42/{hex}")), "7/42/…");
        // Not after <project>/<job>: a digest, a commit, a user's own path.
        for kept in [
            format!("s3://b/models/{hex}/model.tar.gz"),
            format!("s3://b/7/x/{hex}/"),
            format!("{hex}/a"),
            "s3://b/pre/7/42/0123456789abcdef0123456789abcdef01/".to_owned(),
        ] {
            assert_eq!(redact(&kept), kept);
        }
    }

    #[test]
    fn hand_built_location_with_empty_prefix_is_refused() {
        for prefix in ["", "/", "no-slash"] {
            let loc = StagingLocation {
                bucket: "b".into(),
                prefix: prefix.into(),
            };
            assert!(loc.check().is_err(), "{prefix:?} must be refused");
        }
    }

    #[test]
    fn manifest_renders_and_validates() {
        let manifest = JobManifest {
            project_dir: "/builds/1/g/p".into(),
            mode: RemoteMode::SageMaker,
            output_dir: None,
            failure_file: Some("/opt/ml/output/failure".into()),
        };
        let text = manifest.render().expect("valid manifest");
        assert_eq!(
            text,
            "SME_PROJECT_DIR=/builds/1/g/p\nSME_FAILURE_FILE=/opt/ml/output/failure\nSME_MODE=sagemaker\n"
        );

        for bad in ["relative/p", "/a/../b", "/a\nSME_MODE=x", "/"] {
            let manifest = JobManifest {
                project_dir: bad.into(),
                ..manifest.clone()
            };
            assert!(manifest.render().is_err(), "{bad:?} must be refused");
        }
    }
}
