//! The S3 side of staging against `aws-smithy-mocks`: which calls are made for small and large
//! archives, that failures and cancellation abort the multipart upload, that cleanup pages, and
//! that restores stream a mocked GetObject body through the safe extractor.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::ErrorMetadata;
use aws_sdk_s3::operation::abort_multipart_upload::AbortMultipartUploadOutput;
use aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput;
use aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadOutput;
use aws_sdk_s3::operation::delete_objects::DeleteObjectsOutput;
use aws_sdk_s3::operation::get_object::{GetObjectError, GetObjectOutput};
use aws_sdk_s3::operation::list_multipart_uploads::ListMultipartUploadsOutput;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_sdk_s3::operation::upload_part::{UploadPartError, UploadPartOutput};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::error::NoSuchKey;
use aws_sdk_s3::types::{Error as S3ErrorEntry, MultipartUpload, Object};
use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock};
use stages::workspace::{
    ExtractLimits, MIN_PART_SIZE, StagingLocation, UploadOptions, WORKSPACE_ARCHIVE,
    WorkspaceError, WorkspaceErrorKind, delete_staged, pack_tree_to, put_bytes, restore_archive,
    restore_from_training_output, upload_tree,
};
use tokio_util::sync::CancellationToken;

fn client(rules: &[&Rule]) -> Client {
    let mut interceptor = MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
    for rule in rules {
        interceptor = interceptor.with_rule(rule);
    }
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .http_client(create_mock_http_client())
        .interceptor(interceptor)
        // One attempt per call, so rule call counts are exact.
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}

fn location() -> StagingLocation {
    StagingLocation::new("staging", "ci", 7, 42)
}

struct Project {
    _dir: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
}

impl Project {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = fs::canonicalize(dir.path()).expect("canonical");
        let root = base.join("builds/7/g/p");
        fs::create_dir_all(&root).expect("mkdir");
        Self {
            _dir: dir,
            base,
            root,
        }
    }

    fn roots(&self) -> Vec<PathBuf> {
        vec![self.root.clone()]
    }
}

/// Deterministic incompressible bytes.
fn noise(len: usize) -> Vec<u8> {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn listed_members(archive_gz: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(archive_gz));
    archive
        .entries()
        .expect("entries")
        .map(|e| {
            let e = e.expect("entry");
            e.path().expect("path").to_string_lossy().into_owned()
        })
        .collect()
}

fn member(path: &Path) -> String {
    path.to_string_lossy().trim_start_matches('/').to_owned()
}

type Captured = Arc<Mutex<Vec<(i32, Vec<u8>)>>>;

struct MultipartRules {
    create: Rule,
    upload: Rule,
    complete: Rule,
    abort: Rule,
    put: Rule,
    parts: Captured,
    completed_numbers: Arc<Mutex<Vec<i32>>>,
}

fn multipart_rules(on_part: impl Fn(i32) + Send + Sync + 'static) -> MultipartRules {
    let parts: Captured = Arc::default();
    let completed_numbers: Arc<Mutex<Vec<i32>>> = Arc::default();
    let create = mock!(Client::create_multipart_upload)
        .match_requests(|r| {
            r.bucket() == Some("staging") && r.key() == Some("ci/7/42/workspace.tar.gz")
        })
        .then_output(|| {
            CreateMultipartUploadOutput::builder()
                .upload_id("upload-1")
                .build()
        });
    let captured = parts.clone();
    let upload = mock!(Client::upload_part)
        .match_requests(|r| r.upload_id() == Some("upload-1"))
        .then_compute_output(move |r| {
            let number = r.part_number().expect("part number");
            let body = r.body().bytes().expect("in-memory part body").to_vec();
            captured.lock().expect("lock").push((number, body));
            on_part(number);
            UploadPartOutput::builder()
                .e_tag(format!("etag-{number}"))
                .build()
        });
    let numbers = completed_numbers.clone();
    let complete = mock!(Client::complete_multipart_upload)
        .match_requests(move |r| {
            let got: Vec<i32> = r
                .multipart_upload()
                .map(|m| m.parts().iter().filter_map(|p| p.part_number()).collect())
                .unwrap_or_default();
            *numbers.lock().expect("lock") = got;
            r.upload_id() == Some("upload-1")
        })
        .then_output(|| CompleteMultipartUploadOutput::builder().build());
    let abort = mock!(Client::abort_multipart_upload)
        .match_requests(|r| r.upload_id() == Some("upload-1"))
        .then_output(|| AbortMultipartUploadOutput::builder().build());
    let put = mock!(Client::put_object).then_output(|| PutObjectOutput::builder().build());
    MultipartRules {
        create,
        upload,
        complete,
        abort,
        put,
        parts,
        completed_numbers,
    }
}

impl MultipartRules {
    fn client(&self) -> Client {
        client(&[
            &self.create,
            &self.upload,
            &self.complete,
            &self.abort,
            &self.put,
        ])
    }
}

#[tokio::test]
async fn small_archive_is_one_put_object() {
    let project = Project::new();
    fs::write(project.root.join("a.txt"), b"hello").expect("write");
    let body: Arc<Mutex<Vec<u8>>> = Arc::default();
    let captured = body.clone();
    let put = mock!(Client::put_object)
        .match_requests(|r| {
            r.bucket() == Some("staging") && r.key() == Some("ci/7/42/workspace.tar.gz")
        })
        .then_compute_output(move |r| {
            *captured.lock().expect("lock") = r.body().bytes().expect("in-memory body").to_vec();
            PutObjectOutput::builder().build()
        });
    let rules = multipart_rules(|_| {});
    let s3 = client(&[
        &put,
        &rules.create,
        &rules.upload,
        &rules.complete,
        &rules.abort,
    ]);

    let summary = upload_tree(
        &s3,
        &location(),
        WORKSPACE_ARCHIVE,
        &project.roots(),
        &UploadOptions::default(),
        &CancellationToken::new(),
    )
    .await
    .expect("upload");

    assert_eq!(put.num_calls(), 1);
    assert_eq!(rules.create.num_calls(), 0);
    assert_eq!(rules.upload.num_calls(), 0);
    assert_eq!(summary.parts, 1);
    assert_eq!(summary.files, 2);
    let body = body.lock().expect("lock").clone();
    assert_eq!(summary.bytes_out, body.len() as u64);
    assert_eq!(
        listed_members(&body),
        [member(&project.root), member(&project.root.join("a.txt"))]
    );
}

#[tokio::test]
async fn large_archive_is_multipart_in_order_and_round_trips() {
    let project = Project::new();
    let content = noise(12 * 1024 * 1024 + 123);
    fs::write(project.root.join("big.bin"), &content).expect("write");
    let rules = multipart_rules(|_| {});
    let s3 = rules.client();
    let opts = UploadOptions {
        part_size: MIN_PART_SIZE,
        max_concurrent_parts: 2,
        compression_level: 1,
        compression_threads: 2,
        kms_key_id: None,
    };

    let summary = upload_tree(
        &s3,
        &location(),
        WORKSPACE_ARCHIVE,
        &project.roots(),
        &opts,
        &CancellationToken::new(),
    )
    .await
    .expect("upload");

    assert_eq!(rules.create.num_calls(), 1);
    assert_eq!(rules.upload.num_calls(), 3);
    assert_eq!(rules.complete.num_calls(), 1);
    assert_eq!(rules.abort.num_calls(), 0);
    assert_eq!(rules.put.num_calls(), 0);
    assert_eq!(summary.parts, 3);
    assert_eq!(*rules.completed_numbers.lock().expect("lock"), [1, 2, 3]);

    let mut parts = rules.parts.lock().expect("lock").clone();
    parts.sort_by_key(|(n, _)| *n);
    assert!(
        parts[..2]
            .iter()
            .all(|(_, body)| body.len() == MIN_PART_SIZE)
    );
    let archive: Vec<u8> = parts.into_iter().flat_map(|(_, body)| body).collect();
    assert_eq!(summary.bytes_out, archive.len() as u64);

    // The reassembled parts are the archive: restore it where the tree was.
    fs::remove_dir_all(project.base.join("builds")).expect("remove");
    let restored = stages::workspace::extract_tar_gz(
        &archive[..],
        &project.roots(),
        &ExtractLimits::default(),
    )
    .expect("extract");
    assert_eq!(restored.bytes, content.len() as u64);
    assert!(fs::read(project.root.join("big.bin")).expect("read") == content);
}

#[tokio::test]
async fn failed_part_aborts_the_upload() {
    let project = Project::new();
    fs::write(project.root.join("big.bin"), noise(11 * 1024 * 1024)).expect("write");
    let rules = multipart_rules(|_| {});
    let failing = mock!(Client::upload_part).then_error(|| {
        UploadPartError::generic(
            ErrorMetadata::builder()
                .code("AccessDenied")
                .message("denied")
                .build(),
        )
    });
    let s3 = client(&[
        &rules.create,
        &failing,
        &rules.complete,
        &rules.abort,
        &rules.put,
    ]);
    let opts = UploadOptions {
        part_size: MIN_PART_SIZE,
        ..UploadOptions::default()
    };

    let err = upload_tree(
        &s3,
        &location(),
        WORKSPACE_ARCHIVE,
        &project.roots(),
        &opts,
        &CancellationToken::new(),
    )
    .await
    .expect_err("upload must fail");

    assert!(matches!(err, WorkspaceError::UploadPart { .. }), "{err}");
    assert_eq!(err.kind(), WorkspaceErrorKind::Storage);
    assert!(!err.is_job_caused());
    assert_eq!(rules.abort.num_calls(), 1);
    assert_eq!(rules.complete.num_calls(), 0);
}

#[tokio::test]
async fn cancellation_during_multipart_aborts_the_upload() {
    let project = Project::new();
    fs::write(project.root.join("big.bin"), noise(16 * 1024 * 1024)).expect("write");
    let cancel = CancellationToken::new();
    let on_part = cancel.clone();
    // Cancel as soon as the first part reaches S3: deterministic, no timing involved.
    let rules = multipart_rules(move |_| on_part.cancel());
    let s3 = rules.client();
    let opts = UploadOptions {
        part_size: MIN_PART_SIZE,
        ..UploadOptions::default()
    };

    let err = upload_tree(
        &s3,
        &location(),
        WORKSPACE_ARCHIVE,
        &project.roots(),
        &opts,
        &cancel,
    )
    .await
    .expect_err("cancelled");

    assert_eq!(err.kind(), WorkspaceErrorKind::Cancelled, "{err}");
    assert_eq!(rules.abort.num_calls(), 1);
    assert_eq!(rules.complete.num_calls(), 0);
}

#[tokio::test]
async fn cancelled_before_start_makes_no_call() {
    let project = Project::new();
    fs::write(project.root.join("a"), b"a").expect("write");
    let rules = multipart_rules(|_| {});
    let s3 = rules.client();
    let cancel = CancellationToken::new();
    cancel.cancel();

    let err = upload_tree(
        &s3,
        &location(),
        WORKSPACE_ARCHIVE,
        &project.roots(),
        &UploadOptions::default(),
        &cancel,
    )
    .await
    .expect_err("cancelled");
    assert_eq!(err.kind(), WorkspaceErrorKind::Cancelled);
    for rule in [&rules.put, &rules.create, &rules.upload, &rules.abort] {
        assert_eq!(rule.num_calls(), 0);
    }

    let err = put_bytes(
        &s3,
        &location(),
        "script",
        b"echo".to_vec(),
        &UploadOptions::default(),
        &cancel,
    )
    .await
    .expect_err("cancelled");
    assert_eq!(err.kind(), WorkspaceErrorKind::Cancelled);
}

#[tokio::test]
async fn put_bytes_writes_the_named_key() {
    let put = mock!(Client::put_object)
        .match_requests(|r| {
            r.key() == Some("ci/7/42/script")
                && r.body().bytes() == Some(&b"echo hi"[..])
                && r.server_side_encryption()
                    == Some(&aws_sdk_s3::types::ServerSideEncryption::AwsKms)
                && r.ssekms_key_id() == Some("alias/ci-staging")
        })
        .then_output(|| PutObjectOutput::builder().build());
    let s3 = client(&[&put]);
    put_bytes(
        &s3,
        &location(),
        "script",
        b"echo hi".to_vec(),
        &UploadOptions {
            kms_key_id: Some("alias/ci-staging".into()),
            ..UploadOptions::default()
        },
        &CancellationToken::new(),
    )
    .await
    .expect("put");
    assert_eq!(put.num_calls(), 1);
}

fn keys(prefix: &str, range: std::ops::Range<usize>) -> Vec<Object> {
    range
        .map(|i| Object::builder().key(format!("{prefix}obj-{i:05}")).build())
        .collect()
}

#[tokio::test]
async fn delete_staged_pages_and_batches() {
    let loc = location();
    let prefix = loc.prefix.clone();
    let list = mock!(Client::list_objects_v2)
        .match_requests(|r| r.bucket() == Some("staging") && r.prefix() == Some("ci/7/42/"))
        .then_compute_output(move |r| match r.continuation_token() {
            None => ListObjectsV2Output::builder()
                .set_contents(Some(keys(&prefix, 0..1000)))
                .is_truncated(true)
                .next_continuation_token("page-2")
                .build(),
            Some(_) => ListObjectsV2Output::builder()
                .set_contents(Some(keys(&prefix, 1000..1500)))
                .is_truncated(false)
                .build(),
        });
    let batches: Arc<Mutex<Vec<usize>>> = Arc::default();
    let seen = batches.clone();
    let delete = mock!(Client::delete_objects)
        .match_requests(|r| r.bucket() == Some("staging"))
        .then_compute_output(move |r| {
            let objects = r.delete().map(|d| d.objects().to_vec()).unwrap_or_default();
            assert!(objects.iter().all(|o| o.key().starts_with("ci/7/42/")));
            seen.lock().expect("lock").push(objects.len());
            DeleteObjectsOutput::builder().build()
        });
    let uploads = mock!(Client::list_multipart_uploads)
        .match_requests(|r| r.prefix() == Some("ci/7/42/"))
        .then_output(|| {
            ListMultipartUploadsOutput::builder()
                .uploads(
                    MultipartUpload::builder()
                        .key("ci/7/42/workspace.tar.gz")
                        .upload_id("left-behind")
                        .build(),
                )
                .build()
        });
    let abort = mock!(Client::abort_multipart_upload)
        .match_requests(|r| r.upload_id() == Some("left-behind"))
        .then_output(|| AbortMultipartUploadOutput::builder().build());
    let s3 = client(&[&list, &delete, &uploads, &abort]);

    let deleted = delete_staged(&s3, &loc, &CancellationToken::new())
        .await
        .expect("delete");
    assert_eq!(deleted, 1500);
    assert_eq!(list.num_calls(), 2);
    assert_eq!(*batches.lock().expect("lock"), [1000, 500]);
    assert_eq!(abort.num_calls(), 1);
}

#[tokio::test]
async fn delete_staged_is_idempotent_and_refuses_wide_prefixes() {
    let list =
        mock!(Client::list_objects_v2).then_output(|| ListObjectsV2Output::builder().build());
    let delete =
        mock!(Client::delete_objects).then_output(|| DeleteObjectsOutput::builder().build());
    let uploads = mock!(Client::list_multipart_uploads)
        .then_output(|| ListMultipartUploadsOutput::builder().build());
    let s3 = client(&[&list, &delete, &uploads]);
    let deleted = delete_staged(&s3, &location(), &CancellationToken::new())
        .await
        .expect("nothing staged");
    assert_eq!(deleted, 0);
    assert_eq!(delete.num_calls(), 0);

    let wide = StagingLocation {
        bucket: "staging".into(),
        prefix: String::new(),
    };
    let before = list.num_calls();
    let err = delete_staged(&s3, &wide, &CancellationToken::new())
        .await
        .expect_err("refused");
    assert!(
        matches!(err, WorkspaceError::InvalidLocation { .. }),
        "{err}"
    );
    assert_eq!(list.num_calls(), before);
}

#[tokio::test]
async fn delete_staged_reports_refused_keys() {
    let loc = location();
    let prefix = loc.prefix.clone();
    let list = mock!(Client::list_objects_v2).then_compute_output(move |_| {
        ListObjectsV2Output::builder()
            .set_contents(Some(keys(&prefix, 0..3)))
            .build()
    });
    let delete = mock!(Client::delete_objects).then_output(|| {
        DeleteObjectsOutput::builder()
            .errors(
                S3ErrorEntry::builder()
                    .key("ci/7/42/obj-00001")
                    .code("AccessDenied")
                    .build(),
            )
            .build()
    });
    let s3 = client(&[&list, &delete]);
    let err = delete_staged(&s3, &loc, &CancellationToken::new())
        .await
        .expect_err("partial");
    assert!(
        matches!(&err, WorkspaceError::DeleteObjectsPartial { failed: 1, first_code, .. } if first_code == "AccessDenied"),
        "{err}"
    );
    assert_eq!(err.kind(), WorkspaceErrorKind::Storage);
}

fn get_object_returning(body: Vec<u8>) -> Rule {
    mock!(Client::get_object)
        .match_requests(|r| {
            r.bucket() == Some("out") && r.key() == Some("job/output/output.tar.gz")
        })
        .then_output(move || {
            GetObjectOutput::builder()
                .body(ByteStream::from(body.clone()))
                .build()
        })
}

#[tokio::test]
async fn restore_archive_streams_through_the_extractor() {
    let project = Project::new();
    fs::write(project.root.join("model.txt"), b"trained").expect("write");
    let mut packed = Vec::new();
    pack_tree_to(&project.roots(), &mut packed, 1).expect("pack");
    fs::remove_dir_all(project.base.join("builds")).expect("remove");

    let get = get_object_returning(packed);
    let s3 = client(&[&get]);
    let summary = restore_archive(
        &s3,
        "out",
        "job/output/output.tar.gz",
        &project.roots(),
        &ExtractLimits::default(),
        &CancellationToken::new(),
    )
    .await
    .expect("restore");
    assert_eq!(summary.files, 1);
    assert_eq!(
        fs::read(project.root.join("model.txt")).expect("read"),
        b"trained"
    );
}

#[tokio::test]
async fn restore_from_training_output_unwraps_the_nested_archive() {
    let project = Project::new();
    fs::write(project.root.join("result.csv"), b"a,b\n").expect("write");
    let mut packed = Vec::new();
    pack_tree_to(&project.roots(), &mut packed, 1).expect("pack");
    let mut inner = Vec::new();
    flate2::read::MultiGzDecoder::new(&packed[..])
        .read_to_end(&mut inner)
        .expect("gunzip");
    let mut outer = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_size(inner.len() as u64);
    header.set_mode(0o644);
    outer
        .append_data(&mut header, "workspace.tar", &inner[..])
        .expect("append");
    let output = outer.into_inner().expect("tar").finish().expect("gzip");
    fs::remove_dir_all(project.base.join("builds")).expect("remove");

    let get = get_object_returning(output);
    let s3 = client(&[&get]);
    let summary = restore_from_training_output(
        &s3,
        "out",
        "job/output/output.tar.gz",
        &project.roots(),
        &ExtractLimits::default(),
        &CancellationToken::new(),
    )
    .await
    .expect("restore");
    assert_eq!(summary.files, 1);
    assert_eq!(
        fs::read(project.root.join("result.csv")).expect("read"),
        b"a,b\n"
    );
}

#[tokio::test]
async fn missing_output_is_reported_as_missing() {
    let project = Project::new();
    let get = mock!(Client::get_object)
        .then_error(|| GetObjectError::NoSuchKey(NoSuchKey::builder().build()));
    let s3 = client(&[&get]);
    let err = restore_from_training_output(
        &s3,
        "out",
        "job/output/output.tar.gz",
        &project.roots(),
        &ExtractLimits::default(),
        &CancellationToken::new(),
    )
    .await
    .expect_err("missing");
    assert!(
        matches!(err, WorkspaceError::ArchiveMissing { .. }),
        "{err}"
    );
    assert_eq!(err.kind(), WorkspaceErrorKind::Missing);
}

#[tokio::test]
async fn oversized_returned_workspace_is_job_caused() {
    let project = Project::new();
    fs::write(project.root.join("big"), vec![0u8; 4096]).expect("write");
    let mut packed = Vec::new();
    pack_tree_to(&project.roots(), &mut packed, 1).expect("pack");
    let get = get_object_returning(packed);
    let s3 = client(&[&get]);
    let limits = ExtractLimits {
        max_bytes: 1024,
        ..ExtractLimits::default()
    };
    let err = restore_archive(
        &s3,
        "out",
        "job/output/output.tar.gz",
        &project.roots(),
        &limits,
        &CancellationToken::new(),
    )
    .await
    .expect_err("too large");
    assert!(err.is_job_caused(), "{err}");
}

#[tokio::test]
async fn cancelled_restore_writes_nothing() {
    let project = Project::new();
    fs::write(project.root.join("file"), b"data").expect("write");
    let mut packed = Vec::new();
    pack_tree_to(&project.roots(), &mut packed, 1).expect("pack");
    fs::remove_dir_all(project.base.join("builds")).expect("remove");
    let get = get_object_returning(packed);
    let s3 = client(&[&get]);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let err = restore_archive(
        &s3,
        "out",
        "job/output/output.tar.gz",
        &project.roots(),
        &ExtractLimits::default(),
        &cancel,
    )
    .await
    .expect_err("cancelled");
    assert_eq!(err.kind(), WorkspaceErrorKind::Cancelled, "{err}");
    assert!(!project.root.join("file").exists());
}
