//! Streaming the packed workspace to S3.
//!
//! A blocking thread packs into a [`PartWriter`] (compressing on `compression_threads` more
//! threads, see [`pack_tree_with`]), which cuts the compressed stream into parts and hands them
//! over a bounded channel; the async side uploads up to `max_concurrent_parts` of them at once.
//! Nothing is ever written to a temporary file.
//!
//! # Memory bound
//! At most `max_concurrent_parts + 2` parts are held (in flight, one in the channel, one being
//! filled; before the multipart upload starts, the first part waits in place of one in flight),
//! plus the compression pipeline's `(2 * compression_threads + 2)` members of 1 MiB and their
//! compressed copies. With the defaults on 2 cores: 6 parts of 8 MiB and 12 MiB, about 60 MiB,
//! whatever the workspace size. Parts double every 1000 (see [`PARTS_PER_SIZE_STEP`]), so only
//! an archive past about 8 GB raises this, to at most 6 parts of 64 MiB past about 56 GB.
//!
//! The upload mode is decided by the data: if the pack finishes within the first part, one
//! PutObject; otherwise a multipart upload, started when the second part appears. A multipart
//! upload is aborted on every error and on cancellation; if even that is cut short (SIGKILL),
//! [`delete_staged`](super::delete_staged) aborts what is left under the job's prefix.

use std::io::{self, Write};
use std::path::PathBuf;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption,
};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::pack::{PackOptions, PackSummary, pack_tree_with};
use super::{StagingLocation, WorkspaceError};

/// S3's smallest allowed part (all parts but the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// S3's largest number of parts in one upload.
const MAX_PARTS: u32 = 10_000;
/// Parts grow (doubling) every this many parts, so a long stream of unknown length fits in
/// [`MAX_PARTS`]: with 8 MiB parts, about 500 GB.
const PARTS_PER_SIZE_STEP: u32 = 1_000;
/// How many times parts may double (8 MiB grows to at most 64 MiB), which caps memory.
const MAX_SIZE_STEPS: u32 = 3;
const ARCHIVE_CONTENT_TYPE: &str = "application/gzip";

/// How [`upload_tree`] packs and uploads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadOptions {
    /// Size of each upload part (and of the single PutObject threshold). Values below
    /// [`MIN_PART_SIZE`] are raised to it. Default 8 MiB.
    pub part_size: usize,
    /// Parts uploaded at the same time. Default 4; 0 is taken as 1.
    pub max_concurrent_parts: usize,
    /// gzip level, 0-9, of the data that compresses (the rest is stored, see
    /// [`pack_tree_with`]). Default 2: level 1 is a different, greedy mode that gives nearly
    /// twice the bytes on sources, and level 6 compresses sources by a further ~20% at less
    /// than half the speed.
    pub compression_level: u32,
    /// Compression threads; 0 (the default): one per available core, at most
    /// [`MAX_AUTO_THREADS`](super::MAX_AUTO_THREADS).
    pub compression_threads: usize,
    /// A KMS key (ARN or alias) to encrypt the objects with (SSE-KMS); `None`: the bucket's
    /// default encryption.
    pub kms_key_id: Option<String>,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            part_size: 8 * 1024 * 1024,
            max_concurrent_parts: 4,
            compression_level: 2,
            compression_threads: 0,
            kms_key_id: None,
        }
    }
}

/// Packs `roots` (absolute dirs; missing ones are skipped) into a tar.gz and streams it to the
/// object `name` of `loc`. See the module docs for the upload strategy.
///
/// # Guarantees
/// On error or cancellation no multipart upload is left behind (best effort: the abort call
/// itself may fail; [`delete_staged`](super::delete_staged) cleans up the rest). Memory stays
/// within the bound in the module docs whatever the size of the tree.
///
/// # Errors
/// Packing errors ([`WorkspaceError::PackRead`], ...), S3 errors per step, and
/// [`WorkspaceError::Cancelled`].
pub async fn upload_tree(
    s3: &Client,
    loc: &StagingLocation,
    name: &str,
    roots: &[PathBuf],
    opts: &UploadOptions,
    cancel: &CancellationToken,
) -> Result<PackSummary, WorkspaceError> {
    loc.check()?;
    let roots = roots.to_vec();
    let pack = PackOptions {
        level: opts.compression_level,
        threads: opts.compression_threads,
    };
    let target = Target {
        s3,
        bucket: &loc.bucket,
        key: loc.key(name),
        kms_key_id: opts.kms_key_id.as_deref(),
    };
    run_upload(&target, opts, cancel, move |writer| {
        pack_tree_with(&roots, writer, &pack)
    })
    .await
}

/// Streams an existing file (e.g. a returned `workspace.tar.gz`) to `s3://bucket/key` with the
/// same part strategy as [`upload_tree`]: one PutObject when it fits in a part, else multipart,
/// aborted on any error or cancellation.
///
/// # Errors
/// [`WorkspaceError::PackRead`] when the file cannot be read, S3 errors per step, and
/// [`WorkspaceError::Cancelled`].
pub async fn upload_file(
    s3: &Client,
    bucket: &str,
    key: &str,
    source: &std::path::Path,
    opts: &UploadOptions,
    cancel: &CancellationToken,
) -> Result<PackSummary, WorkspaceError> {
    let target = Target {
        s3,
        bucket,
        key: key.to_owned(),
        kms_key_id: opts.kms_key_id.as_deref(),
    };
    let path = source.to_owned();
    run_upload(&target, opts, cancel, move |writer| {
        let read_err = |source| WorkspaceError::PackRead {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::File::open(&path).map_err(read_err)?;
        let bytes = io::copy(&mut file, writer).map_err(|source| match source.kind() {
            io::ErrorKind::BrokenPipe => WorkspaceError::PackWrite { source },
            _ => read_err(source),
        })?;
        Ok(PackSummary {
            bytes_in: bytes,
            bytes_out: bytes,
            bytes_stored: bytes,
            files: 1,
            parts: 0,
            skipped: Vec::new(),
        })
    })
    .await
}

/// Runs `produce` on a blocking thread writing into the part channel, and uploads what it
/// writes; the one upload engine behind [`upload_tree`] and [`upload_file`].
async fn run_upload<F>(
    target: &Target<'_>,
    opts: &UploadOptions,
    cancel: &CancellationToken,
    produce: F,
) -> Result<PackSummary, WorkspaceError>
where
    F: FnOnce(&mut PartWriter) -> Result<PackSummary, WorkspaceError> + Send + 'static,
{
    let part_size = opts.part_size.max(MIN_PART_SIZE);
    let (tx, mut rx) = mpsc::channel::<Bytes>(1);
    // The producer stops at its next write once this is cancelled or the receiver is gone.
    let stop_packing = cancel.child_token();
    let packer_stop = stop_packing.clone();
    let packer = tokio::task::spawn_blocking(move || {
        let mut writer = PartWriter::new(tx, part_size, packer_stop);
        let summary = produce(&mut writer)?;
        let parts = writer
            .finish()
            .map_err(|source| WorkspaceError::PackWrite { source })?;
        Ok::<_, WorkspaceError>((summary, parts))
    });
    // Dropping the guard on any early return stops the producer.
    let _stop_guard = stop_packing.drop_guard();

    let mut multipart = Multipart::default();
    let result = drive(
        target,
        &mut rx,
        packer,
        &mut multipart,
        opts.max_concurrent_parts.max(1),
        cancel,
    )
    .await;
    if result.is_err()
        && let Some(upload_id) = multipart.upload_id.take()
    {
        target.abort(&upload_id).await;
    }
    result
}

/// Uploads one in-memory object with a single PutObject.
///
/// # Errors
/// [`WorkspaceError::PutObject`] and [`WorkspaceError::Cancelled`].
pub async fn put_bytes(
    s3: &Client,
    loc: &StagingLocation,
    name: &str,
    bytes: Vec<u8>,
    opts: &UploadOptions,
    cancel: &CancellationToken,
) -> Result<(), WorkspaceError> {
    loc.check()?;
    let target = Target {
        s3,
        bucket: &loc.bucket,
        key: loc.key(name),
        kms_key_id: opts.kms_key_id.as_deref(),
    };
    target
        .put(Bytes::from(bytes), None, cancel, "uploading a staged file")
        .await
}

/// The object being written.
struct Target<'a> {
    s3: &'a Client,
    bucket: &'a str,
    key: String,
    kms_key_id: Option<&'a str>,
}

/// What must be undone if the upload fails.
#[derive(Default)]
struct Multipart {
    upload_id: Option<String>,
}

type PackerHandle = tokio::task::JoinHandle<Result<(PackSummary, u32), WorkspaceError>>;

async fn drive(
    target: &Target<'_>,
    rx: &mut mpsc::Receiver<Bytes>,
    packer: PackerHandle,
    multipart: &mut Multipart,
    concurrency: usize,
    cancel: &CancellationToken,
) -> Result<PackSummary, WorkspaceError> {
    const STEP: &str = "uploading the workspace";
    let mut first: Option<Bytes> = None;
    let mut next_part: i32 = 1;
    let mut in_flight = FuturesUnordered::new();
    let mut completed: Vec<CompletedPart> = Vec::new();
    let mut receiving = true;

    loop {
        // Backpressure: take another part only when an upload slot is free.
        let want_part = receiving && in_flight.len() < concurrency;
        if !want_part && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(WorkspaceError::Cancelled { step: STEP }),
            Some(done) = in_flight.next(), if !in_flight.is_empty() => completed.push(done?),
            part = rx.recv(), if want_part => match part {
                None => receiving = false,
                Some(bytes) => {
                    let upload_id = match &multipart.upload_id {
                        Some(id) => id.clone(),
                        None if first.is_none() => {
                            // Maybe the whole archive fits in one part: wait and see.
                            first = Some(bytes);
                            continue;
                        }
                        None => {
                            let id = target.create(cancel).await?;
                            multipart.upload_id = Some(id.clone());
                            if let Some(first) = first.take() {
                                in_flight.push(target.upload_part(id.clone(), next_part, first));
                                next_part += 1;
                            }
                            id
                        }
                    };
                    if u32::try_from(next_part).map_or(true, |n| n > MAX_PARTS) {
                        return Err(WorkspaceError::TooManyParts {
                            bucket: target.bucket.to_owned(),
                            key: target.key.clone(),
                            max_parts: MAX_PARTS,
                        });
                    }
                    in_flight.push(target.upload_part(upload_id, next_part, bytes));
                    next_part += 1;
                }
            },
        }
    }

    // The channel closed, so the packer has returned; its verdict decides whether to commit.
    let (mut summary, _) = cancel
        .run_until_cancelled(packer)
        .await
        .ok_or(WorkspaceError::Cancelled { step: STEP })?
        .map_err(|source| WorkspaceError::Worker {
            step: "packing",
            source,
        })??;

    match multipart.upload_id.take() {
        None => {
            let body = first.unwrap_or_default();
            target
                .put(body, Some(ARCHIVE_CONTENT_TYPE), cancel, STEP)
                .await?;
            summary.parts = 1;
        }
        Some(upload_id) => {
            // Put the id back so a failed completion is aborted by the caller.
            multipart.upload_id = Some(upload_id.clone());
            completed.sort_by_key(|p| p.part_number());
            summary.parts = u32::try_from(completed.len()).unwrap_or(u32::MAX);
            target.complete(&upload_id, completed, cancel).await?;
            multipart.upload_id = None;
        }
    }
    Ok(summary)
}

impl Target<'_> {
    async fn put(
        &self,
        body: Bytes,
        content_type: Option<&str>,
        cancel: &CancellationToken,
        step: &'static str,
    ) -> Result<(), WorkspaceError> {
        let request = self
            .s3
            .put_object()
            .bucket(self.bucket)
            .key(&self.key)
            .set_content_type(content_type.map(str::to_owned))
            .content_length(i64::try_from(body.len()).unwrap_or(i64::MAX))
            .set_server_side_encryption(self.kms_key_id.map(|_| ServerSideEncryption::AwsKms))
            .set_ssekms_key_id(self.kms_key_id.map(str::to_owned))
            .body(ByteStream::from(body))
            .send();
        cancel
            .run_until_cancelled(request)
            .await
            .ok_or(WorkspaceError::Cancelled { step })?
            .map_err(|e| WorkspaceError::PutObject {
                bucket: self.bucket.to_owned(),
                key: self.key.clone(),
                source: Box::new(e),
            })?;
        Ok(())
    }

    async fn create(&self, cancel: &CancellationToken) -> Result<String, WorkspaceError> {
        let request = self
            .s3
            .create_multipart_upload()
            .bucket(self.bucket)
            .key(&self.key)
            .content_type(ARCHIVE_CONTENT_TYPE)
            .set_server_side_encryption(self.kms_key_id.map(|_| ServerSideEncryption::AwsKms))
            .set_ssekms_key_id(self.kms_key_id.map(str::to_owned))
            // Explicit, so every part carries a CRC32 that CompleteMultipartUpload can check.
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send();
        let output = cancel
            .run_until_cancelled(request)
            .await
            .ok_or(WorkspaceError::Cancelled {
                step: "starting the multipart upload",
            })?
            .map_err(|e| WorkspaceError::CreateMultipartUpload {
                bucket: self.bucket.to_owned(),
                key: self.key.clone(),
                source: Box::new(e),
            })?;
        output
            .upload_id
            .ok_or_else(|| WorkspaceError::MalformedResponse {
                operation: "CreateMultipartUpload",
                missing: "UploadId",
            })
    }

    /// Uploads one part. Not raced against cancellation itself: the caller drops the future.
    fn upload_part(
        &self,
        upload_id: String,
        part_number: i32,
        body: Bytes,
    ) -> impl Future<Output = Result<CompletedPart, WorkspaceError>> + use<> {
        let s3 = self.s3.clone();
        let bucket = self.bucket.to_owned();
        let key = self.key.clone();
        async move {
            let output = s3
                .upload_part()
                .bucket(&bucket)
                .key(&key)
                .upload_id(upload_id)
                .part_number(part_number)
                .content_length(i64::try_from(body.len()).unwrap_or(i64::MAX))
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| WorkspaceError::UploadPart {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    part_number,
                    source: Box::new(e),
                })?;
            Ok(CompletedPart::builder()
                .part_number(part_number)
                .set_e_tag(output.e_tag)
                .set_checksum_crc32(output.checksum_crc32)
                .build())
        }
    }

    async fn complete(
        &self,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        cancel: &CancellationToken,
    ) -> Result<(), WorkspaceError> {
        let request = self
            .s3
            .complete_multipart_upload()
            .bucket(self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send();
        cancel
            .run_until_cancelled(request)
            .await
            .ok_or(WorkspaceError::Cancelled {
                step: "completing the multipart upload",
            })?
            .map_err(|e| WorkspaceError::CompleteMultipartUpload {
                bucket: self.bucket.to_owned(),
                key: self.key.clone(),
                source: Box::new(e),
            })?;
        Ok(())
    }

    /// Best effort: this runs on the error path, whose own error is the one worth reporting;
    /// a failed abort is retried by `delete_staged` at cleanup. Not cancellable, because it is
    /// what cancellation needs done.
    async fn abort(&self, upload_id: &str) {
        let _ = self
            .s3
            .abort_multipart_upload()
            .bucket(self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .send()
            .await;
    }
}

/// The blocking side: collects the compressed stream into parts and sends each full part.
struct PartWriter {
    tx: mpsc::Sender<Bytes>,
    buf: BytesMut,
    base: usize,
    sent: u32,
    stop: CancellationToken,
}

impl PartWriter {
    fn new(tx: mpsc::Sender<Bytes>, base: usize, stop: CancellationToken) -> Self {
        Self {
            tx,
            // Grows with the data: a small workspace must not cost a full part of memory, and the
            // allocator tends to keep a freed multi-MiB buffer for the rest of a long wait.
            buf: BytesMut::new(),
            base,
            sent: 0,
            stop,
        }
    }

    /// The size of the part being filled; doubles every [`PARTS_PER_SIZE_STEP`] parts.
    fn part_size(&self) -> usize {
        let steps = (self.sent / PARTS_PER_SIZE_STEP).min(MAX_SIZE_STEPS);
        self.base << steps
    }

    fn send(&mut self) -> io::Result<()> {
        let part = std::mem::take(&mut self.buf).freeze();
        self.tx
            .blocking_send(part)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))?;
        self.sent += 1;
        Ok(())
    }

    /// Sends the last, possibly short, part; returns how many parts were sent.
    fn finish(mut self) -> io::Result<u32> {
        if !self.buf.is_empty() || self.sent == 0 {
            self.send()?;
        }
        Ok(self.sent)
    }
}

impl Write for PartWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.stop.is_cancelled() {
            return Err(io::Error::other("the upload stopped"));
        }
        let room = self.part_size() - self.buf.len();
        let take = room.min(data.len());
        self.buf.extend_from_slice(&data[..take]);
        if self.buf.len() >= self.part_size() {
            self.send()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn part_writer_cuts_exact_parts_and_grows() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut writer = PartWriter::new(tx, 4, CancellationToken::new());
        writer.write_all(b"0123456789").expect("write");
        assert_eq!(writer.finish().expect("finish"), 3);
        let mut parts = Vec::new();
        while let Ok(part) = rx.try_recv() {
            parts.push(part);
        }
        assert_eq!(parts, [&b"0123"[..], b"4567", b"89"]);

        let (tx, _rx) = mpsc::channel(1);
        let mut writer = PartWriter::new(tx, 4, CancellationToken::new());
        writer.sent = PARTS_PER_SIZE_STEP;
        assert_eq!(writer.part_size(), 8);
        writer.sent = PARTS_PER_SIZE_STEP * 9;
        assert_eq!(writer.part_size(), 4 << MAX_SIZE_STEPS);
    }

    #[test]
    fn part_writer_fails_once_stopped_or_receiver_gone() {
        let stop = CancellationToken::new();
        let (tx, rx) = mpsc::channel(1);
        let mut writer = PartWriter::new(tx, 4, stop.clone());
        stop.cancel();
        assert!(writer.write(b"x").is_err());

        drop(writer);
        drop(rx);
        let (tx, rx) = mpsc::channel(1);
        let mut writer = PartWriter::new(tx, 4, CancellationToken::new());
        drop(rx);
        assert!(writer.write_all(b"0123").is_err());
    }

    mod gated {
        //! An HTTP client that parks every UploadPart request until the test opens the gate
        //! (responses come from aws-smithy-mocks rules), counting the parts parked at once.

        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        use aws_smithy_runtime_api::client::http::{
            HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings,
            SharedHttpConnector,
        };
        use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
        use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
        use aws_smithy_types::body::SdkBody;
        use tokio::sync::watch;

        #[derive(Debug)]
        pub struct Gate {
            pub in_flight: watch::Sender<usize>,
            pub max: AtomicUsize,
            open: watch::Sender<bool>,
        }

        impl Gate {
            pub fn new() -> Arc<Self> {
                Arc::new(Self {
                    in_flight: watch::Sender::new(0),
                    max: AtomicUsize::new(0),
                    open: watch::Sender::new(false),
                })
            }

            pub fn open(&self) {
                self.open.send_replace(true);
            }

            pub fn max(&self) -> usize {
                self.max.load(Ordering::SeqCst)
            }
        }

        #[derive(Debug, Clone)]
        pub struct GatedHttp(pub Arc<Gate>);

        impl HttpConnector for GatedHttp {
            fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
                let gate = Arc::clone(&self.0);
                let is_part = request.uri().contains("partNumber=");
                HttpConnectorFuture::new(async move {
                    if is_part {
                        gate.in_flight.send_modify(|n| *n += 1);
                        gate.max
                            .fetch_max(*gate.in_flight.borrow(), Ordering::SeqCst);
                        let _ = gate.open.subscribe().wait_for(|open| *open).await;
                        gate.in_flight.send_modify(|n| *n -= 1);
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
    }

    #[tokio::test(flavor = "current_thread")]
    async fn never_more_than_max_concurrent_parts_in_flight() {
        use aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput;
        use aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadOutput;
        use aws_sdk_s3::operation::upload_part::UploadPartOutput;
        use aws_smithy_mocks::{MockResponseInterceptor, RuleMode, mock};

        let create = mock!(Client::create_multipart_upload).then_output(|| {
            CreateMultipartUploadOutput::builder()
                .upload_id("u")
                .build()
        });
        let upload_part = mock!(Client::upload_part)
            .then_output(|| UploadPartOutput::builder().e_tag("e").build());
        let complete = mock!(Client::complete_multipart_upload)
            .then_output(|| CompleteMultipartUploadOutput::builder().build());
        let interceptor = MockResponseInterceptor::new()
            .rule_mode(RuleMode::MatchAny)
            .with_rule(&create)
            .with_rule(&upload_part)
            .with_rule(&complete);
        let gate = gated::Gate::new();
        let s3 = Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .region(aws_sdk_s3::config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_s3::config::Credentials::new(
                    "AKIDTEST", "test", None, None, "test",
                ))
                .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
                .http_client(gated::GatedHttp(Arc::clone(&gate)))
                .interceptor(interceptor)
                .build(),
        );
        let target = Target {
            s3: &s3,
            bucket: "b",
            key: "k".to_owned(),
            kms_key_id: None,
        };

        // Every part is queued before the upload starts, so a loop that admitted one part too
        // many would send it in the same poll that filled the last slot.
        let concurrency = 3;
        let parts = 8;
        let (tx, mut rx) = mpsc::channel(parts);
        for i in 0..parts {
            tx.try_send(Bytes::from(vec![u8::try_from(i).expect("small"); 16]))
                .expect("room");
        }
        drop(tx);
        let packer = tokio::spawn(async { Ok((PackSummary::default(), 8)) });
        let cancel = CancellationToken::new();
        let mut multipart = Multipart::default();
        let upload = drive(
            &target,
            &mut rx,
            packer,
            &mut multipart,
            concurrency,
            &cancel,
        );
        let controller = async {
            let mut in_flight = gate.in_flight.subscribe();
            let _ = in_flight.wait_for(|n| *n >= concurrency).await;
            // The upload's poll that filled the slots has returned: nothing more can start
            // until a part finishes.
            let at_the_bound = gate.max();
            gate.open();
            at_the_bound
        };
        let (summary, at_the_bound) = tokio::join!(upload, controller);

        assert_eq!(at_the_bound, concurrency);
        assert_eq!(gate.max(), concurrency);
        assert_eq!(summary.expect("upload").parts, 8);
        assert_eq!(upload_part.num_calls(), parts);
        assert_eq!(complete.num_calls(), 1);
    }

    #[test]
    fn max_parts_times_growth_covers_large_workspaces() {
        // 1000 parts of 8, 16 and 32 MiB, then 7000 of 64 MiB.
        let base: u64 = 8 << 20;
        let total: u64 = (0..MAX_PARTS)
            .map(|i| base << (i / PARTS_PER_SIZE_STEP).min(MAX_SIZE_STEPS))
            .sum();
        assert!(total > 400 * (1u64 << 30), "{total}");
    }
}
