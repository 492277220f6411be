//! What the helper containers of a Fargate task do, run as `sagemaker-executor workspace
//! fetch|push` inside the helper image: download the staged objects into the task volume before
//! the job, and upload the returned workspace after it.
//!
//! These run without the executor config: everything they need is on their command line (RunTask
//! container overrides) and their credentials are the task role's, through the SDK's default
//! chain. Both stream between S3 and disk, so memory stays small whatever the workspace size.
//!
//! `fetch` downloads exactly the objects it is named, and never lists: the task role (which the
//! job container shares) gets `s3:GetObject` and `s3:PutObject` under the staging prefix but no
//! `s3:ListBucket`, so a job cannot discover another job's unguessable prefix (see
//! [`crate::workspace::StagingLocation`] for why that, and not presigned URLs).
//!
//! The job container runs as its image's USER, which the executor does not know and which need
//! not be root, while Fargate creates the task volume owned by root (mode 0755). So `fetch`,
//! root in the helper image, opens the volume: the directories from its mount point down to
//! the channel dir get mode 1777 (any user may create entries, only an entry's owner may remove
//! or rename it, as in /tmp) and the fetched files mode 0644. That is safe because the volume is
//! private to the task: only its three containers see it, and the job container is the only one
//! that is not ours. The job restores the workspace below the mount point as its own user and
//! packs it into `<channel>/out`; `push`, root again, can read whatever it wrote.

use std::os::unix::fs::PermissionsExt;

use std::path::{Path, PathBuf};

use aws_sdk_s3::Client;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::get_object::GetObjectError;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::aws::errors;
use crate::failure::{Classify, FailureKind};
use crate::workspace::UploadOptions;

/// Files up to this size go up in one PutObject; larger ones in parts of at least this size.
const PART_SIZE: u64 = 64 * 1024 * 1024;
/// Directories `fetch` opens to the job's user: writable by all, sticky.
const SHARED_DIR_MODE: u32 = 0o1777;
/// Fetched files: readable by every user, writable by their owner (root) only, so the job can
/// read its script and workspace but not replace them.
const FETCHED_FILE_MODE: u32 = 0o644;

/// Why a helper step failed.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// The command line named no object to fetch.
    #[error("no staged object to fetch was named")]
    NothingNamed,
    /// A name would land outside the destination directory.
    #[error("refusing the staged object name {name:?}: it is not a plain file name")]
    UnsafeName {
        /// The name.
        name: String,
    },
    /// Downloading an object failed.
    #[error("downloading s3://{bucket}/{key}: {}", errors::describe(source))]
    Get {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The SDK error.
        #[source]
        source: Box<SdkError<GetObjectError>>,
    },
    /// The download broke off.
    #[error("downloading s3://{bucket}/{key}: {source}")]
    Body {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The stream error.
        #[source]
        source: aws_sdk_s3::primitives::ByteStreamError,
    },
    /// A local file could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Local {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The download directory is not below the task volume's mount point, or a directory on
    /// the way is not a plain directory.
    #[error("cannot open {} to the job's user below the task volume {}: {why}", dest.display(), volume_root.display())]
    Volume {
        /// The download directory.
        dest: PathBuf,
        /// The volume's mount point.
        volume_root: PathBuf,
        /// What is wrong.
        why: &'static str,
    },
    /// The file to upload does not exist (the job container never packed the workspace).
    #[error("nothing to upload: {} does not exist (the job container did not pack the workspace)", path.display())]
    SourceMissing {
        /// The file.
        path: PathBuf,
    },
    /// Uploading the returned archive failed.
    #[error("uploading the returned workspace: {0}")]
    Upload(#[source] crate::workspace::WorkspaceError),
    /// SIGTERM (StopTask) arrived first.
    #[error("stopped while {0}")]
    Cancelled(&'static str),
}

impl Classify for HelperError {
    fn failure_kind(&self) -> FailureKind {
        match self {
            // The job container decides what comes back; a missing or oversized archive is its
            // doing, as is a stop.
            HelperError::SourceMissing { .. } | HelperError::Cancelled(_) => FailureKind::Build,
            HelperError::NothingNamed
            | HelperError::UnsafeName { .. }
            | HelperError::Get { .. }
            | HelperError::Body { .. }
            | HelperError::Local { .. }
            | HelperError::Volume { .. }
            | HelperError::Upload(_) => FailureKind::System,
        }
    }

    fn script_exit_code(&self) -> Option<i32> {
        match self {
            HelperError::SourceMissing { .. }
            | HelperError::Cancelled(_)
            | HelperError::NothingNamed
            | HelperError::UnsafeName { .. }
            | HelperError::Get { .. }
            | HelperError::Body { .. }
            | HelperError::Local { .. }
            | HelperError::Volume { .. }
            | HelperError::Upload(_) => None,
        }
    }
}

/// An S3 client from the container's environment (task role credentials, `AWS_ENDPOINT_URL`),
/// in `region` when given.
pub async fn s3_client(region: Option<String>, path_style: bool) -> Client {
    // The executor's own client builder; only the attempts differ (a helper has nobody to hand
    // a retry to).
    let sdk = crate::aws::loader(region.as_deref(), 8).load().await;
    crate::aws::s3_client(&sdk, path_style)
}

/// The error of a local file operation on `path`.
fn local(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> HelperError + use<> {
    let path = path.to_owned();
    move |source| HelperError::Local { what, path, source }
}

/// What a helper step moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Objects or files.
    pub objects: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Whether `name` is one plain file name, so `dest/name` stays in `dest` and `prefix + name` is
/// directly under the prefix.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// Gives `volume_root` and every directory below it down to `dest` (all existing) mode
/// [`SHARED_DIR_MODE`]. Refuses a `dest` outside the volume and a symlink on the way, so it never
/// opens a directory it was not meant to.
async fn open_to_any_user(volume_root: &Path, dest: &Path) -> Result<(), HelperError> {
    let refuse = |why| HelperError::Volume {
        dest: dest.to_owned(),
        volume_root: volume_root.to_owned(),
        why,
    };
    let below = dest
        .strip_prefix(volume_root)
        .map_err(|_| refuse("it is not below the volume"))?;
    let mut dir = volume_root.to_path_buf();
    let mut steps = vec![dir.clone()];
    for part in below.components() {
        match part {
            std::path::Component::Normal(name) => dir.push(name),
            _ => return Err(refuse("the path has . or .. components")),
        }
        steps.push(dir.clone());
    }
    for dir in steps {
        let meta = tokio::fs::symlink_metadata(&dir)
            .await
            .map_err(local("inspecting", &dir))?;
        if !meta.is_dir() {
            return Err(refuse(
                "a directory on the way is a symlink or not a directory",
            ));
        }
        tokio::fs::set_permissions(&dir, std::fs::Permissions::from_mode(SHARED_DIR_MODE))
            .await
            .map_err(local("opening to every user", &dir))?;
    }
    Ok(())
}

/// Downloads the objects `names` (plain names directly under `prefix`) into `dest`, each file
/// readable by every user; it never lists the prefix (see the module doc). With `volume_root`
/// (the task volume's mount point), the directories from it down to `dest` become writable by
/// every user first (see the module doc).
pub async fn fetch(
    s3: &Client,
    bucket: &str,
    prefix: &str,
    names: &[String],
    dest: &Path,
    volume_root: Option<&Path>,
    cancel: &CancellationToken,
) -> Result<Moved, HelperError> {
    if names.is_empty() {
        return Err(HelperError::NothingNamed);
    }
    // Every name is checked before anything is written.
    if let Some(bad) = names.iter().find(|n| !is_plain_name(n)) {
        return Err(HelperError::UnsafeName { name: bad.clone() });
    }
    tokio::fs::create_dir_all(dest)
        .await
        .map_err(local("creating", dest))?;
    if let Some(root) = volume_root {
        open_to_any_user(root, dest).await?;
    }
    let mut moved = Moved::default();
    for name in names {
        let key = format!("{prefix}{name}");
        moved.bytes += download(s3, bucket, &key, &dest.join(name), cancel).await?;
        moved.objects += 1;
    }
    Ok(moved)
}

/// Streams one object into `path` through a temporary file, so a broken download never leaves
/// a truncated file under the real name.
async fn download(
    s3: &Client,
    bucket: &str,
    key: &str,
    path: &Path,
    cancel: &CancellationToken,
) -> Result<u64, HelperError> {
    let out = cancel
        .run_until_cancelled(s3.get_object().bucket(bucket).key(key).send())
        .await
        .ok_or(HelperError::Cancelled("downloading the workspace"))?
        .map_err(|e| HelperError::Get {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            source: Box::new(e),
        })?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".part");
    let tmp = PathBuf::from(tmp_name);
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(local("creating", &tmp))?;
    let mut body = out.body;
    let mut bytes = 0u64;
    loop {
        let chunk = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(HelperError::Cancelled("downloading the workspace")),
            chunk = body.try_next() => chunk,
        };
        match chunk.map_err(|source| HelperError::Body {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            source,
        })? {
            Some(data) => {
                file.write_all(&data)
                    .await
                    .map_err(local("writing", &tmp))?;
                bytes += data.len() as u64;
            }
            None => break,
        }
    }
    // Explicit, not left to the helper image's umask: the job container may run as any user.
    file.set_permissions(std::fs::Permissions::from_mode(FETCHED_FILE_MODE))
        .await
        .map_err(local("setting the mode of", &tmp))?;
    file.sync_all().await.map_err(local("writing", &tmp))?;
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(local("renaming into", path))?;
    Ok(bytes)
}

/// Uploads `source` to `s3://bucket/key` with the workspace module's upload engine: one
/// PutObject up to [`PART_SIZE`], else multipart (aborted on any failure).
pub async fn push(
    s3: &Client,
    bucket: &str,
    key: &str,
    source: &Path,
    kms_key_id: Option<&str>,
    cancel: &CancellationToken,
) -> Result<Moved, HelperError> {
    let size = match tokio::fs::metadata(source).await {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(HelperError::SourceMissing {
                path: source.to_owned(),
            });
        }
        Err(e) => {
            return Err(HelperError::Local {
                what: "reading",
                path: source.to_owned(),
                source: e,
            });
        }
    };
    let opts = UploadOptions {
        part_size: PART_SIZE as usize,
        kms_key_id: kms_key_id.map(str::to_owned),
        ..UploadOptions::default()
    };
    crate::workspace::upload_file(s3, bucket, key, source, &opts, cancel)
        .await
        .map_err(HelperError::Upload)?;
    Ok(Moved {
        objects: 1,
        bytes: size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::primitives::ByteStream;

    #[test]
    fn only_plain_names_directly_under_the_prefix_are_fetched() {
        assert!(is_plain_name("job.env"));
        for bad in [
            "returned/workspace.tar.gz",
            "..",
            ".",
            "",
            "a\\b",
            "/etc/passwd",
        ] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
    }

    use std::sync::{Arc, Mutex};

    use aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput;
    use aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadOutput;
    use aws_sdk_s3::operation::get_object::GetObjectOutput;
    use aws_sdk_s3::operation::upload_part::UploadPartOutput;
    use aws_smithy_mocks::{Rule, RuleMode, mock};

    fn s3(rules: &[&Rule]) -> Client {
        crate::aws::mock::s3(RuleMode::MatchAny, rules)
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[tokio::test]
    async fn fetch_gets_exactly_the_named_objects_without_listing() {
        // Only GetObject is mocked: a listing call would find no rule and fail the fetch.
        let get = mock!(Client::get_object)
            .match_requests(|r| r.bucket() == Some("b"))
            .then_compute_output(|r| {
                GetObjectOutput::builder()
                    .body(ByteStream::from(
                        format!("content of {}", r.key().unwrap_or_default()).into_bytes(),
                    ))
                    .build()
            });
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("channel");
        let moved = fetch(
            &s3(&[&get]),
            "b",
            "p/1/2/r/",
            &names(&["job.env", "script"]),
            &dest,
            None,
            &CancellationToken::new(),
        )
        .await
        .expect("fetched");
        assert_eq!(moved.objects, 2);
        assert_eq!(get.num_calls(), 2);
        assert_eq!(
            std::fs::read_to_string(dest.join("job.env")).expect("file"),
            "content of p/1/2/r/job.env"
        );
        assert!(
            !dest.join("job.env.part").exists(),
            "no temporary file left"
        );
    }

    #[tokio::test]
    async fn fetch_refuses_no_names_and_unsafe_names_before_any_call() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("channel");
        let err = fetch(
            &s3(&[]),
            "b",
            "p/",
            &[],
            &dest,
            None,
            &CancellationToken::new(),
        )
        .await
        .expect_err("nothing named");
        assert!(matches!(err, HelperError::NothingNamed), "{err}");
        let err = fetch(
            &s3(&[]),
            "b",
            "p/",
            &names(&["script", "../../etc/cron.d/x"]),
            &dest,
            None,
            &CancellationToken::new(),
        )
        .await
        .expect_err("unsafe");
        assert!(matches!(err, HelperError::UnsafeName { .. }), "{err}");
        assert!(!dest.exists(), "nothing written");
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o7777
    }

    #[tokio::test]
    async fn fetch_opens_the_volume_down_to_the_channel_dir_to_every_user() {
        let get = mock!(Client::get_object).then_output(|| {
            GetObjectOutput::builder()
                .body(ByteStream::from_static(b"x"))
                .build()
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("builds");
        std::fs::create_dir(&root).expect("volume root");
        // As Fargate creates it: root's, not writable by others.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let dest = root.join(".sme").join("42");
        fetch(
            &s3(&[&get]),
            "b",
            "p/",
            &names(&["script"]),
            &dest,
            Some(&root),
            &CancellationToken::new(),
        )
        .await
        .expect("fetched");
        for d in [&root, &root.join(".sme"), &dest] {
            assert_eq!(mode(d), 0o1777, "{}", d.display());
        }
        assert_eq!(mode(&dest.join("script")), 0o644);
        // Above the volume nothing changes.
        assert_ne!(mode(dir.path()), 0o1777);
    }

    #[tokio::test]
    async fn fetch_opens_nothing_outside_the_volume_or_through_a_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("builds");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(&root).expect("root");
        std::fs::create_dir_all(&elsewhere).expect("elsewhere");
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let err = fetch(
            &s3(&[]),
            "b",
            "p/",
            &names(&["script"]),
            &elsewhere.join("42"),
            Some(&root),
            &CancellationToken::new(),
        )
        .await
        .expect_err("outside the volume");
        assert!(matches!(err, HelperError::Volume { .. }), "{err}");
        std::os::unix::fs::symlink(&elsewhere, root.join(".sme")).expect("symlink");
        let err = fetch(
            &s3(&[]),
            "b",
            "p/",
            &names(&["script"]),
            &root.join(".sme").join("42"),
            Some(&root),
            &CancellationToken::new(),
        )
        .await
        .expect_err("through a symlink");
        assert!(matches!(err, HelperError::Volume { .. }), "{err}");
        assert_eq!(mode(&elsewhere), 0o755, "the symlink's target is untouched");
    }

    #[tokio::test]
    async fn push_of_a_missing_archive_says_the_job_did_not_pack_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = push(
            &s3(&[]),
            "b",
            "k",
            &dir.path().join("none.tar.gz"),
            None,
            &CancellationToken::new(),
        )
        .await
        .expect_err("missing");
        assert!(err.to_string().starts_with("nothing to upload: "), "{err}");
        assert_eq!(err.failure_kind(), FailureKind::Build);
    }

    #[tokio::test]
    async fn a_large_archive_goes_up_in_parts_read_from_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("workspace.tar.gz");
        // Sparse: one byte over a part, so two parts, without writing 64 MiB.
        std::fs::File::create(&file)
            .and_then(|f| f.set_len(PART_SIZE + 1))
            .expect("sparse file");
        let create = mock!(Client::create_multipart_upload)
            .match_requests(|r| r.bucket() == Some("b") && r.key() == Some("k"))
            .then_output(|| {
                CreateMultipartUploadOutput::builder()
                    .upload_id("u1")
                    .build()
            });
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let part = mock!(Client::upload_part)
            .match_requests(move |r| {
                if let Ok(mut s) = seen.lock() {
                    s.push((r.part_number().unwrap_or_default(), r.body().size_hint().0));
                }
                r.upload_id() == Some("u1")
            })
            .then_compute_output(|r| {
                UploadPartOutput::builder()
                    .e_tag(format!("etag-{}", r.part_number().unwrap_or_default()))
                    .build()
            });
        let complete = mock!(Client::complete_multipart_upload)
            .match_requests(|r| {
                let parts: Vec<_> = r
                    .multipart_upload()
                    .map(|m| {
                        m.parts()
                            .iter()
                            .map(|p| (p.part_number(), p.e_tag().map(str::to_owned)))
                            .collect()
                    })
                    .unwrap_or_default();
                parts
                    == [
                        (Some(1), Some("etag-1".to_owned())),
                        (Some(2), Some("etag-2".to_owned())),
                    ]
            })
            .then_output(|| CompleteMultipartUploadOutput::builder().build());
        let moved = push(
            &s3(&[&create, &part, &complete]),
            "b",
            "k",
            &file,
            None,
            &CancellationToken::new(),
        )
        .await
        .expect("pushed");
        assert_eq!(moved.bytes, PART_SIZE + 1);
        assert_eq!(
            complete.num_calls(),
            1,
            "completed with both parts in order"
        );
        let mut sizes = sizes.lock().expect("sizes").clone();
        sizes.sort();
        assert_eq!(sizes, [(1, PART_SIZE), (2, 1)]);
    }
}
