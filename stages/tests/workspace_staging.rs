//! Staging at disk speed: the multi-member, partly stored archive is still what every reader
//! expects (this crate's extractor, GNU tar, busybox tar, each as the bootstrap runs it), data
//! that does not compress is stored, and the upload keeps its bound on parts in flight and
//! leaves no object behind when cancelled mid-upload.
//!
//! Parts are held "in flight" by an HTTP client that parks UploadPart requests until released,
//! while aws-smithy-mocks rules supply the responses; so concurrency is observed where the
//! requests leave the SDK, without timing. (That no more than the bound is ever admitted is
//! checked deterministically by `upload`'s unit test, with every part queued up front.)

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::operation::abort_multipart_upload::AbortMultipartUploadOutput;
use aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput;
use aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadOutput;
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_sdk_s3::operation::upload_part::UploadPartOutput;
use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, mock};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use stages::workspace::{
    ExtractLimits, MIN_PART_SIZE, PackOptions, PackSummary, StagingLocation, UploadOptions,
    WORKSPACE_ARCHIVE, WorkspaceErrorKind, extract_tar_gz, pack_tree_with, upload_tree,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Deterministic incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Source-like text that deflates well.
fn text(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!(
                "let value_{} = compute({}, \"step {}\");\n",
                i % 97,
                i,
                i % 13
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

struct Tree {
    _dir: tempfile::TempDir,
    base: PathBuf,
    project: PathBuf,
    tmp: PathBuf,
}

impl Tree {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = fs::canonicalize(dir.path()).expect("canonical");
        let project = base.join("builds/3/g/p");
        let tmp = base.join("builds/3/g/p.tmp");
        fs::create_dir_all(&project).expect("mkdir");
        fs::create_dir_all(&tmp).expect("mkdir tmp");
        Self {
            _dir: dir,
            base,
            project,
            tmp,
        }
    }

    fn roots(&self) -> Vec<PathBuf> {
        vec![self.project.clone(), self.tmp.clone()]
    }

    fn write(&self, rel: &str, data: &[u8]) {
        let path = self.project.join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, data).expect("write");
    }

    /// A workspace of every kind the archive must carry, several MiB so that it spans many
    /// members, deflated and stored ones interleaved.
    fn mixed() -> Self {
        let tree = Self::new();
        tree.write("src/main.rs", &text(1_500_000));
        tree.write("data/weights.bin", &noise(3_000_000, 1));
        tree.write("data/images.zip", &noise(700_000, 2));
        tree.write("logs/train.log", &text(2_200_000));
        for i in 0..300 {
            tree.write(&format!("pkg/m{i:03}.py"), &text(100 + i * 37));
        }
        tree.write("empty", b"");
        fs::create_dir_all(tree.project.join("empty-dir")).expect("mkdir");
        tree.write("run.sh", b"#!/bin/sh\necho hi\n");
        fs::set_permissions(
            tree.project.join("run.sh"),
            fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        symlink("src/main.rs", tree.project.join("link")).expect("symlink");
        fs::write(tree.tmp.join("FILE_VAR"), b"secret\n").expect("write tmp");
        tree
    }
}

/// Every path under `root` with its kind, mode and content (or link target), sorted.
fn snapshot(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            let meta = fs::symlink_metadata(&path).expect("meta");
            let what = if meta.file_type().is_symlink() {
                format!("link {}", fs::read_link(&path).expect("readlink").display())
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_owned()
            } else {
                let data = fs::read(&path).expect("read");
                let digest = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
                });
                format!(
                    "file {:o} {} {digest:x}",
                    meta.permissions().mode() & 0o777,
                    data.len()
                )
            };
            out.push((rel, what));
        }
    }
    out.sort();
    out
}

/// The number of gzip members in `data`: each decoded alone, up to its trailer.
fn gzip_members(mut data: &[u8]) -> usize {
    let mut members = 0;
    while !data.is_empty() {
        let mut member = flate2::bufread::GzDecoder::new(data);
        io::copy(&mut member, &mut io::sink()).expect("a complete member");
        data = member.into_inner();
        members += 1;
    }
    members
}

fn pack(tree: &Tree, level: u32, threads: usize) -> (Vec<u8>, PackSummary) {
    let mut archive = Vec::new();
    let summary =
        pack_tree_with(&tree.roots(), &mut archive, &PackOptions { level, threads }).expect("pack");
    assert_eq!(summary.bytes_out, archive.len() as u64);
    (archive, summary)
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(tool))
            .find(|candidate| candidate.is_file())
    })
}

/// Restores `archive` under `dest` the way the bootstrap does (`tar -xzof ARCHIVE -C DIR`),
/// with `shell -c` and the tools on `path`.
fn bootstrap_style_untar(shell: &Path, path: Option<&Path>, archive: &Path, dest: &Path) {
    fs::create_dir_all(dest).expect("mkdir dest");
    let mut command = Command::new(shell);
    command
        .arg("-c")
        .arg("tar -xzof \"$1\" -C \"$2\"")
        .arg("sh")
        .arg(archive)
        .arg(dest);
    if let Some(path) = path {
        command.env("PATH", path);
    }
    let out = command.output().expect("run tar");
    assert!(
        out.status.success(),
        "{} tar failed: {}",
        shell.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn multi_member_archive_extracts_with_every_reader() {
    let tree = Tree::mixed();
    let project_before = snapshot(&tree.project);
    let tmp_before = snapshot(&tree.tmp);
    let (archive, summary) = pack(&tree, 6, 3);
    assert!(summary.bytes_stored > 0, "{summary:?}");
    let members = gzip_members(&archive);
    assert!(members >= 5, "{members} members");
    let archive_path = tree.base.join("workspace.tar.gz");
    fs::write(&archive_path, &archive).expect("write archive");

    // GNU tar (through gzip), as `sh` and as `dash` run the bootstrap.
    let mut readers: Vec<(String, PathBuf, Option<PathBuf>)> =
        vec![("sh".into(), which("sh").expect("sh"), None)];
    match which("dash") {
        Some(dash) => readers.push(("dash".into(), dash, None)),
        None => eprintln!("note: dash is not installed; skipping the dash variant"),
    }
    // busybox tar with busybox's own gunzip and nothing else on PATH.
    match which("busybox") {
        Some(busybox) => {
            let bin = tree.base.join("busybox-bin");
            fs::create_dir_all(&bin).expect("mkdir");
            for tool in ["sh", "tar", "gzip"] {
                symlink(&busybox, bin.join(tool)).expect("symlink busybox");
            }
            readers.push(("busybox".into(), bin.join("sh"), Some(bin)));
        }
        None => eprintln!("note: busybox is not installed; skipping the busybox variant"),
    }
    for (name, shell, path) in &readers {
        let dest = tree.base.join(format!("restored-{name}"));
        bootstrap_style_untar(shell, path.as_deref(), &archive_path, &dest);
        let restored = |root: &Path| dest.join(root.strip_prefix("/").expect("absolute"));
        assert_eq!(
            snapshot(&restored(&tree.project)),
            project_before,
            "{name} tar restored a different project dir"
        );
        assert_eq!(snapshot(&restored(&tree.tmp)), tmp_before, "{name}");
    }

    // The product's extractor, in place (the original tree removed first).
    fs::remove_dir_all(tree.base.join("builds")).expect("remove tree");
    let restored =
        extract_tar_gz(&archive[..], &tree.roots(), &ExtractLimits::default()).expect("extract");
    assert_eq!(restored.bytes, summary.bytes_in);
    assert_eq!(snapshot(&tree.project), project_before);
    assert_eq!(snapshot(&tree.tmp), tmp_before);
}

#[test]
fn incompressible_files_are_stored_and_text_is_deflated() {
    // Random data, with and without a telling extension, at the slowest level: stored, so the
    // archive is the input plus tar and member framing, not a deflate attempt.
    let random = Tree::new();
    random.write("model.bin", &noise(6_000_000, 7));
    random.write("frames.mp4", &noise(2_500_000, 8));
    let input = 8_500_000u64;
    let (archive, summary) = pack(&random, 9, 2);
    assert_eq!(summary.bytes_in, input);
    // Every member was stored: tar blocks included, all of the archive's input.
    assert!(summary.bytes_stored >= input, "{summary:?}");
    assert!(archive.len() as u64 >= input);
    assert!(
        (archive.len() as u64) < input + input / 100,
        "{} bytes for {input}",
        archive.len()
    );

    // Text is deflated, not stored.
    let plain = Tree::new();
    plain.write("a.txt", &text(4_000_000));
    let (archive, summary) = pack(&plain, 2, 2);
    assert_eq!(summary.bytes_stored, 0, "{summary:?}");
    assert!(archive.len() < 4_000_000 / 5, "{} bytes", archive.len());

    // Both in one tree: each file goes its own way.
    let both = Tree::new();
    both.write("a.txt", &text(3_000_000));
    both.write("b.bin", &noise(3_000_000, 9));
    both.write("c.txt", &text(3_000_000));
    let (archive, summary) = pack(&both, 2, 2);
    assert!(summary.bytes_stored >= 3_000_000, "{summary:?}");
    // Only the random file and what shares its members is stored, not the text.
    assert!(
        summary.bytes_stored < 3_000_000 + 2 * 1024 * 1024,
        "{summary:?}"
    );
    assert!(
        archive.len() < 3_000_000 + 1_500_000,
        "{} bytes",
        archive.len()
    );
}

#[test]
fn output_is_the_same_whatever_the_thread_count() {
    let tree = Tree::mixed();
    let (one, _) = pack(&tree, 2, 1);
    let (four, _) = pack(&tree, 2, 4);
    // Members are cut by the data alone, so the archive is reproducible across machines.
    assert!(one == four, "archives differ between 1 and 4 threads");
}

/// Parks UploadPart requests until `target` of them are in flight at once, then lets all
/// through (an upload that never reaches `target` at once hangs, and the test's limit fails
/// it); records the most seen in flight. Every response is an empty 418 that the mock
/// interceptor replaces with its rule's output.
#[derive(Debug)]
struct PartGate {
    in_flight: AtomicUsize,
    max: AtomicUsize,
    target: usize,
    open: watch::Sender<bool>,
    on_first: Mutex<Option<CancellationToken>>,
}

#[derive(Debug, Clone)]
struct GatedHttp(Arc<PartGate>);

impl PartGate {
    fn new(target: usize) -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            max: AtomicUsize::new(0),
            target,
            open: watch::Sender::new(false),
            on_first: Mutex::new(None),
        })
    }
}

impl HttpConnector for GatedHttp {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let gate = Arc::clone(&self.0);
        let is_part = request.uri().contains("partNumber=");
        HttpConnectorFuture::new(async move {
            if is_part {
                let now = gate.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                gate.max.fetch_max(now, Ordering::SeqCst);
                if let Some(cancel) = gate.on_first.lock().expect("lock").take() {
                    cancel.cancel();
                }
                if now >= gate.target {
                    gate.open.send_replace(true);
                }
                let mut open = gate.open.subscribe();
                let _ = open.wait_for(|open| *open).await;
                gate.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            Ok(HttpResponse::new(
                418.try_into().expect("status"),
                SdkBody::empty(),
            ))
        })
    }
}

impl HttpClient for GatedHttp {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

type Parts = Arc<Mutex<Vec<(i32, Vec<u8>)>>>;

struct Rules {
    create: Rule,
    upload: Rule,
    complete: Rule,
    abort: Rule,
    put: Rule,
    parts: Parts,
}

fn rules() -> Rules {
    let parts: Parts = Arc::default();
    let captured = Arc::clone(&parts);
    Rules {
        create: mock!(Client::create_multipart_upload).then_output(|| {
            CreateMultipartUploadOutput::builder()
                .upload_id("u-1")
                .build()
        }),
        upload: mock!(Client::upload_part).then_compute_output(move |r| {
            let number = r.part_number().expect("part number");
            let body = r.body().bytes().expect("in-memory body").to_vec();
            captured.lock().expect("lock").push((number, body));
            UploadPartOutput::builder()
                .e_tag(format!("e-{number}"))
                .build()
        }),
        complete: mock!(Client::complete_multipart_upload)
            .then_output(|| CompleteMultipartUploadOutput::builder().build()),
        abort: mock!(Client::abort_multipart_upload)
            .then_output(|| AbortMultipartUploadOutput::builder().build()),
        put: mock!(Client::put_object).then_output(|| PutObjectOutput::builder().build()),
        parts,
    }
}

fn gated_client(rules: &Rules, gate: &Arc<PartGate>) -> Client {
    let mut interceptor = MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
    for rule in [
        &rules.create,
        &rules.upload,
        &rules.complete,
        &rules.abort,
        &rules.put,
    ] {
        interceptor = interceptor.with_rule(rule);
    }
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .http_client(GatedHttp(Arc::clone(gate)))
        .interceptor(interceptor)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}

/// Fails the test instead of hanging when the awaited condition never comes (a broken bound).
const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "current_thread")]
async fn part_uploads_run_concurrently_up_to_the_bound() {
    let tree = Tree::new();
    let content = noise(9 * MIN_PART_SIZE + 4321, 11);
    tree.write("big.bin", &content);
    let rules = rules();
    let concurrency = 3;
    let gate = PartGate::new(concurrency);
    let s3 = gated_client(&rules, &gate);
    let opts = UploadOptions {
        part_size: MIN_PART_SIZE,
        max_concurrent_parts: concurrency,
        ..UploadOptions::default()
    };

    let summary = tokio::time::timeout(
        LIMIT,
        upload_tree(
            &s3,
            &StagingLocation::new("staging", "ci", 3, 9),
            WORKSPACE_ARCHIVE,
            &tree.roots(),
            &opts,
            &CancellationToken::new(),
        ),
    )
    .await
    .expect("the gate opens only once the bound is reached: uploads were not concurrent")
    .expect("upload");

    // The gate held the first parts until `concurrency` were in flight, and never saw more.
    assert_eq!(gate.max.load(Ordering::SeqCst), concurrency);
    assert_eq!(rules.complete.num_calls(), 1);
    assert_eq!(rules.abort.num_calls(), 0);
    assert!(summary.parts >= 10, "{summary:?}");
    let mut parts = rules.parts.lock().expect("lock").clone();
    assert_eq!(parts.len() as u32, summary.parts);
    parts.sort_by_key(|(n, _)| *n);
    let archive: Vec<u8> = parts.into_iter().flat_map(|(_, body)| body).collect();
    fs::remove_dir_all(tree.base.join("builds")).expect("remove tree");
    extract_tar_gz(&archive[..], &tree.roots(), &ExtractLimits::default()).expect("extract");
    assert!(fs::read(tree.project.join("big.bin")).expect("read") == content);
}

#[tokio::test(flavor = "current_thread")]
async fn cancel_with_parts_in_flight_completes_nothing() {
    let tree = Tree::new();
    tree.write("big.bin", &noise(6 * MIN_PART_SIZE, 12));
    let rules = rules();
    // Never opens: every part stays in flight until the upload is cancelled.
    let gate = PartGate::new(usize::MAX);
    let cancel = CancellationToken::new();
    *gate.on_first.lock().expect("lock") = Some(cancel.clone());
    let s3 = gated_client(&rules, &gate);
    let opts = UploadOptions {
        part_size: MIN_PART_SIZE,
        max_concurrent_parts: 4,
        ..UploadOptions::default()
    };

    let err = tokio::time::timeout(
        LIMIT,
        upload_tree(
            &s3,
            &StagingLocation::new("staging", "ci", 3, 9),
            WORKSPACE_ARCHIVE,
            &tree.roots(),
            &opts,
            &cancel,
        ),
    )
    .await
    .expect("cancellation must not wait for parts in flight")
    .expect_err("cancelled");

    assert_eq!(err.kind(), WorkspaceErrorKind::Cancelled, "{err}");
    assert!(gate.max.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        rules.abort.num_calls(),
        1,
        "the multipart upload is aborted"
    );
    assert_eq!(rules.complete.num_calls(), 0, "no object completed");
    assert_eq!(rules.put.num_calls(), 0, "no object put");
}

#[test]
fn archive_bytes_read_back_through_a_pipe_like_reader() {
    // The extractor reads the stream in arbitrary slices (a download arrives in network-sized
    // pieces): member boundaries must not fall on a slice boundary by luck.
    struct Dribble<'a>(&'a [u8]);
    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(4093);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let tree = Tree::mixed();
    let before = snapshot(&tree.project);
    let (archive, _) = pack(&tree, 2, 2);
    fs::remove_dir_all(tree.base.join("builds")).expect("remove tree");
    extract_tar_gz(Dribble(&archive), &tree.roots(), &ExtractLimits::default()).expect("extract");
    assert_eq!(snapshot(&tree.project), before);
}
