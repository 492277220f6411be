//! The one error type of the workspace module, and its classifier.
//!
//! Every variant names the step that failed. SDK errors stay attached as `#[source]` (boxed,
//! because `SdkError` is large and would bloat every `Result` on the happy path), so the caller
//! can print the whole cause chain.

use std::io;
use std::path::PathBuf;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::BuildError;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::abort_multipart_upload::AbortMultipartUploadError;
use aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadError;
use aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadError;
use aws_sdk_s3::operation::delete_objects::DeleteObjectsError;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::operation::list_multipart_uploads::ListMultipartUploadsError;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error;
use aws_sdk_s3::operation::put_object::PutObjectError;
use aws_sdk_s3::operation::upload_part::UploadPartError;
use aws_smithy_types::byte_stream::error::Error as ByteStreamError;

/// Shorthand for the boxed SDK error of one S3 operation.
type S3Error<E> = Box<SdkError<E, HttpResponse>>;

/// Who is to blame for a [`WorkspaceError`], so the executor can pick build vs. system failure.
///
/// Deliberately without a catch-all: a new variant of [`WorkspaceError`] must be classified in
/// [`WorkspaceError::kind`], and a new kind here must be mapped by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkspaceErrorKind {
    /// S3 or the network failed: a system failure (retryable by `retry: runner_system_failure`).
    Storage,
    /// Reading or writing the runner host's own filesystem failed: a system failure.
    LocalIo,
    /// The job's own content is at fault (an archive over a limit, or one that is not a valid
    /// tar/gzip stream): a build failure.
    JobContent,
    /// The archive to restore does not exist. Normal for a remote job that failed before it packed
    /// its workspace; the caller decides (the design asks to say so plainly in the job log).
    Missing,
    /// The operation was cancelled through its `CancellationToken`.
    Cancelled,
    /// A bug or a misuse of this API (e.g. a relative root, an empty staging prefix).
    Internal,
}

/// Everything that can go wrong while staging or restoring a workspace.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// The staging location cannot be used safely (e.g. an empty prefix would address the whole
    /// bucket when deleting).
    #[error("refusing to use staging location s3://{bucket}/{prefix}: {reason}")]
    InvalidLocation {
        /// The bucket.
        bucket: String,
        /// The offending prefix.
        prefix: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A root passed to pack or extract is not an absolute, normalized path.
    #[error("workspace root {} is not an absolute path without `.` or `..` components", path.display())]
    InvalidRoot {
        /// The offending root.
        path: PathBuf,
    },
    /// A job manifest value cannot be written as one `KEY=value` line.
    #[error("job manifest value for {key} is not a single-line absolute path or word")]
    InvalidManifest {
        /// The key whose value was refused.
        key: &'static str,
    },
    /// Reading a file or directory of the local workspace failed while packing it.
    #[error("failed to read {} while packing the workspace", path.display())]
    PackRead {
        /// What was being read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing the compressed archive failed (the consumer went away or compression failed).
    #[error("failed to write the workspace archive")]
    PackWrite {
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// CreateMultipartUpload failed.
    #[error("failed to start the multipart upload of s3://{bucket}/{key}")]
    CreateMultipartUpload {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The SDK error.
        #[source]
        source: S3Error<CreateMultipartUploadError>,
    },
    /// UploadPart failed.
    #[error("failed to upload part {part_number} of s3://{bucket}/{key}")]
    UploadPart {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The 1-based part number.
        part_number: i32,
        /// The SDK error.
        #[source]
        source: S3Error<UploadPartError>,
    },
    /// The archive needs more parts than S3 allows (10,000), even with growing part sizes.
    #[error(
        "the workspace archive for s3://{bucket}/{key} needs more than {max_parts} upload parts"
    )]
    TooManyParts {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The S3 limit.
        max_parts: u32,
    },
    /// CompleteMultipartUpload failed.
    #[error("failed to complete the multipart upload of s3://{bucket}/{key}")]
    CompleteMultipartUpload {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The SDK error.
        #[source]
        source: S3Error<CompleteMultipartUploadError>,
    },
    /// PutObject failed.
    #[error("failed to upload s3://{bucket}/{key}")]
    PutObject {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The SDK error.
        #[source]
        source: S3Error<PutObjectError>,
    },
    /// GetObject answered NoSuchKey: there is no archive to restore.
    #[error("there is no returned workspace at s3://{bucket}/{key}")]
    ArchiveMissing {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The SDK error.
        #[source]
        source: S3Error<GetObjectError>,
    },
    /// GetObject failed for another reason.
    #[error("failed to download s3://{bucket}/{key}")]
    GetObject {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The SDK error.
        #[source]
        source: S3Error<GetObjectError>,
    },
    /// The download broke off while streaming the object's body.
    #[error("failed while streaming s3://{bucket}/{key}")]
    DownloadBody {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The transport error.
        #[source]
        source: ByteStreamError,
    },
    /// ListObjectsV2 failed.
    #[error("failed to list staged objects under s3://{bucket}/{prefix}")]
    ListObjects {
        /// The bucket.
        bucket: String,
        /// The prefix.
        prefix: String,
        /// The SDK error.
        #[source]
        source: S3Error<ListObjectsV2Error>,
    },
    /// DeleteObjects failed as a whole.
    #[error("failed to delete staged objects under s3://{bucket}/{prefix}")]
    DeleteObjects {
        /// The bucket.
        bucket: String,
        /// The prefix.
        prefix: String,
        /// The SDK error.
        #[source]
        source: S3Error<DeleteObjectsError>,
    },
    /// DeleteObjects succeeded as a call but refused some keys.
    #[error(
        "failed to delete {failed} staged object(s) under s3://{bucket}/{prefix}, first {first_key}: {first_code}"
    )]
    DeleteObjectsPartial {
        /// The bucket.
        bucket: String,
        /// The prefix.
        prefix: String,
        /// How many keys were refused in that call.
        failed: usize,
        /// The first refused key.
        first_key: String,
        /// Its error code (e.g. AccessDenied).
        first_code: String,
    },
    /// ListMultipartUploads failed.
    #[error("failed to list unfinished uploads under s3://{bucket}/{prefix}")]
    ListMultipartUploads {
        /// The bucket.
        bucket: String,
        /// The prefix.
        prefix: String,
        /// The SDK error.
        #[source]
        source: S3Error<ListMultipartUploadsError>,
    },
    /// AbortMultipartUpload failed.
    #[error("failed to abort the unfinished upload of s3://{bucket}/{key}")]
    AbortMultipartUpload {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The SDK error.
        #[source]
        source: S3Error<AbortMultipartUploadError>,
    },
    /// S3 answered without a field the protocol requires.
    #[error("{operation} answered without {missing}")]
    MalformedResponse {
        /// The S3 operation.
        operation: &'static str,
        /// The missing field.
        missing: &'static str,
    },
    /// An S3 request could not be built (a bug: every required field is set).
    #[error("failed to build the {operation} request")]
    BuildRequest {
        /// The S3 operation.
        operation: &'static str,
        /// The builder error.
        #[source]
        source: BuildError,
    },
    /// The returned archive is not a valid gzip/tar stream.
    #[error("the returned workspace archive is invalid: {context}")]
    CorruptArchive {
        /// What was being read.
        context: String,
        /// The decoding error.
        #[source]
        source: io::Error,
    },
    /// The archive holds more bytes than [`ExtractLimits::max_bytes`](super::ExtractLimits).
    #[error("the returned workspace is larger than the limit of {limit} bytes")]
    ArchiveTooLarge {
        /// The limit that was exceeded.
        limit: u64,
    },
    /// The archive holds more entries than [`ExtractLimits::max_entries`](super::ExtractLimits).
    #[error("the returned workspace has more than the limit of {limit} entries")]
    TooManyEntries {
        /// The limit that was exceeded.
        limit: u64,
    },
    /// The training output exists but holds no workspace archive.
    #[error("the training output has no {member}: the job did not pack its workspace")]
    WorkspaceMemberMissing {
        /// The member that was looked for.
        member: &'static str,
    },
    /// Writing a restored entry into the local workspace failed.
    #[error("failed to restore {}", path.display())]
    Restore {
        /// The local path being written.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The operation was cancelled.
    #[error("cancelled while {step}")]
    Cancelled {
        /// What was in progress.
        step: &'static str,
    },
    /// A blocking worker thread died (a bug: this module does not panic on input).
    #[error("the {step} worker thread failed")]
    Worker {
        /// Which worker.
        step: &'static str,
        /// The join error.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl WorkspaceError {
    /// Classifies the error; one exhaustive match so that every new variant needs a decision.
    pub fn kind(&self) -> WorkspaceErrorKind {
        use WorkspaceErrorKind as K;
        match self {
            Self::InvalidLocation { .. }
            | Self::InvalidRoot { .. }
            | Self::InvalidManifest { .. }
            | Self::BuildRequest { .. }
            | Self::Worker { .. } => K::Internal,
            Self::PackRead { .. } | Self::PackWrite { .. } | Self::Restore { .. } => K::LocalIo,
            Self::CreateMultipartUpload { .. }
            | Self::UploadPart { .. }
            | Self::CompleteMultipartUpload { .. }
            | Self::PutObject { .. }
            | Self::GetObject { .. }
            | Self::DownloadBody { .. }
            | Self::ListObjects { .. }
            | Self::DeleteObjects { .. }
            | Self::DeleteObjectsPartial { .. }
            | Self::ListMultipartUploads { .. }
            | Self::AbortMultipartUpload { .. }
            | Self::MalformedResponse { .. } => K::Storage,
            // An archive too big to stage is the job's own doing (its checkout), like one too big
            // to restore.
            Self::TooManyParts { .. }
            | Self::CorruptArchive { .. }
            | Self::ArchiveTooLarge { .. }
            | Self::TooManyEntries { .. } => K::JobContent,
            Self::ArchiveMissing { .. } | Self::WorkspaceMemberMissing { .. } => K::Missing,
            Self::Cancelled { .. } => K::Cancelled,
        }
    }

    /// True when the job's own content caused the error (a build failure, not a system failure).
    pub fn is_job_caused(&self) -> bool {
        self.kind() == WorkspaceErrorKind::JobContent
    }
}
