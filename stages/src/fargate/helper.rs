//! What the helper containers of a Fargate task do, run as `sagemaker-executor workspace
//! fetch|push` inside the helper image: download the staged objects into the task volume before
//! the job, and upload the returned workspace after it.
//!
//! These run without the executor config: everything they need is on their command line (RunTask
//! container overrides) and their credentials are the task role's, through the SDK's default
//! chain. Both stream between S3 and disk, so memory stays small whatever the workspace size.
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
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error;
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
    /// Listing the staged prefix failed.
    #[error("listing s3://{bucket}/{prefix}: {}", errors::describe(source))]
    List {
        /// Bucket.
        bucket: String,
        /// Prefix.
        prefix: String,
        /// The SDK error.
        #[source]
        source: Box<SdkError<ListObjectsV2Error>>,
    },
    /// Nothing is staged under the prefix.
    #[error("nothing is staged under s3://{bucket}/{prefix}")]
    NothingStaged {
        /// Bucket.
        bucket: String,
        /// Prefix.
        prefix: String,
    },
    /// A key would land outside the destination directory.
    #[error("refusing the staged key {key:?}: it is not a plain file name under the prefix")]
    UnsafeKey {
        /// The key.
        key: String,
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
            HelperError::List { .. }
            | HelperError::NothingStaged { .. }
            | HelperError::UnsafeKey { .. }
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
            | HelperError::List { .. }
            | HelperError::NothingStaged { .. }
            | HelperError::UnsafeKey { .. }
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

/// The file name a staged key maps to: the part after `prefix`, which must be one plain name.
fn file_name<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    let name = key.strip_prefix(prefix)?;
    let plain =
        !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']);
    plain.then_some(name)
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

/// Downloads every object directly under `prefix` (not those in "subdirectories") into `dest`,
/// each file readable by every user. With `volume_root` (the task volume's mount point), the
/// directories from it down to `dest` become writable by every user first (see the module doc).
pub async fn fetch(
    s3: &Client,
    bucket: &str,
    prefix: &str,
    dest: &Path,
    volume_root: Option<&Path>,
    cancel: &CancellationToken,
) -> Result<Moved, HelperError> {
    tokio::fs::create_dir_all(dest)
        .await
        .map_err(local("creating", dest))?;
    if let Some(root) = volume_root {
        open_to_any_user(root, dest).await?;
    }
    let mut moved = Moved::default();
    let mut token: Option<String> = None;
    loop {
        let request = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .delimiter("/")
            .set_continuation_token(token.take())
            .send();
        let page = cancel
            .run_until_cancelled(request)
            .await
            .ok_or(HelperError::Cancelled("listing the staged objects"))?
            .map_err(|e| HelperError::List {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
                source: Box::new(e),
            })?;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            let name = file_name(key, prefix).ok_or_else(|| HelperError::UnsafeKey {
                key: key.to_owned(),
            })?;
            moved.bytes += download(s3, bucket, key, &dest.join(name), cancel).await?;
            moved.objects += 1;
        }
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
            _ => break,
        }
    }
    if moved.objects == 0 {
        return Err(HelperError::NothingStaged {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        });
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
        assert_eq!(file_name("p/1/2/job.env", "p/1/2/"), Some("job.env"));
        assert_eq!(file_name("p/1/2/returned/workspace.tar.gz", "p/1/2/"), None);
        assert_eq!(file_name("p/1/2/..", "p/1/2/"), None);
        assert_eq!(file_name("p/1/2/", "p/1/2/"), None);
        assert_eq!(file_name("other/x", "p/1/2/"), None);
    }

    use std::sync::{Arc, Mutex};

    use aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput;
    use aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadOutput;
    use aws_sdk_s3::operation::get_object::GetObjectOutput;
    use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
    use aws_sdk_s3::operation::upload_part::UploadPartOutput;
    use aws_sdk_s3::types::Object;
    use aws_smithy_mocks::{Rule, RuleMode, mock};

    fn s3(rules: &[&Rule]) -> Client {
        crate::aws::mock::s3(RuleMode::MatchAny, rules)
    }

    #[tokio::test]
    async fn fetch_downloads_the_direct_children_and_refuses_nothing_staged() {
        let list = mock!(Client::list_objects_v2)
            .match_requests(|r| r.prefix() == Some("p/1/2/") && r.delimiter() == Some("/"))
            .then_output(|| {
                ListObjectsV2Output::builder()
                    .contents(Object::builder().key("p/1/2/job.env").build())
                    .contents(Object::builder().key("p/1/2/script").build())
                    .build()
            });
        let get = mock!(Client::get_object).then_compute_output(|r| {
            GetObjectOutput::builder()
                .body(ByteStream::from(
                    format!("content of {}", r.key().unwrap_or_default()).into_bytes(),
                ))
                .build()
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("channel");
        let moved = fetch(
            &s3(&[&list, &get]),
            "b",
            "p/1/2/",
            &dest,
            None,
            &CancellationToken::new(),
        )
        .await
        .expect("fetched");
        assert_eq!(moved.objects, 2);
        assert_eq!(
            std::fs::read_to_string(dest.join("job.env")).expect("file"),
            "content of p/1/2/job.env"
        );
        assert!(
            !dest.join("job.env.part").exists(),
            "no temporary file left"
        );

        let empty =
            mock!(Client::list_objects_v2).then_output(|| ListObjectsV2Output::builder().build());
        let err = fetch(
            &s3(&[&empty]),
            "b",
            "p/1/2/",
            &dest,
            None,
            &CancellationToken::new(),
        )
        .await
        .expect_err("nothing staged");
        assert!(matches!(err, HelperError::NothingStaged { .. }), "{err}");
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
        let list = mock!(Client::list_objects_v2).then_output(|| {
            ListObjectsV2Output::builder()
                .contents(Object::builder().key("p/script").build())
                .build()
        });
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
            &s3(&[&list, &get]),
            "b",
            "p/",
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
