//! Streaming a returned workspace from S3 into the local project dir.
//!
//! The async side pumps the GetObject body over a bounded channel; a blocking thread reads it
//! through [`ChannelReader`] and runs the safe extractor. Nothing is buffered beyond the channel
//! (a few hundred KiB), neither in memory nor on disk. Transport failures and cancellation are
//! seen by the pump, so they are reported as such rather than as a corrupt archive.

use std::io::{self, Read};
use std::path::PathBuf;

use aws_sdk_s3::Client;
use bytes::{Buf, Bytes};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::WorkspaceError;
use super::extract::{ExtractLimits, ExtractSummary, extract_tar_gz, extract_training_output};

/// Body chunks buffered between the download and the extractor (chunks are typically 8-64 KiB).
const CHANNEL_CHUNKS: usize = 16;

/// How the downloaded object is laid out.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// A `workspace.tar.gz`.
    Plain,
    /// SageMaker's `output.tar.gz` holding the bootstrap's uncompressed `workspace.tar`.
    TrainingOutput,
}

/// Restores a workspace returned by SageMaker: `s3://bucket/key` is the training job's
/// `output.tar.gz` (gzip of a tar of /opt/ml/output/data) and its `workspace.tar` member is
/// extracted under `allowed_roots` with the safe extractor ([`extract_tar`](super::extract_tar)).
///
/// # Errors
/// [`WorkspaceError::ArchiveMissing`] / [`WorkspaceError::WorkspaceMemberMissing`] when there is
/// nothing to restore (kind `Missing`), S3 errors, job-caused archive errors, local write errors,
/// and [`WorkspaceError::Cancelled`].
pub async fn restore_from_training_output(
    s3: &Client,
    bucket: &str,
    key: &str,
    allowed_roots: &[PathBuf],
    limits: &ExtractLimits,
    cancel: &CancellationToken,
) -> Result<ExtractSummary, WorkspaceError> {
    restore(
        s3,
        bucket,
        key,
        allowed_roots,
        limits,
        cancel,
        Layout::TrainingOutput,
    )
    .await
}

/// Restores a plain `workspace.tar.gz` (the ECS helper's return trip) like
/// [`restore_from_training_output`].
///
/// # Errors
/// As [`restore_from_training_output`].
pub async fn restore_archive(
    s3: &Client,
    bucket: &str,
    key: &str,
    allowed_roots: &[PathBuf],
    limits: &ExtractLimits,
    cancel: &CancellationToken,
) -> Result<ExtractSummary, WorkspaceError> {
    restore(
        s3,
        bucket,
        key,
        allowed_roots,
        limits,
        cancel,
        Layout::Plain,
    )
    .await
}

async fn restore(
    s3: &Client,
    bucket: &str,
    key: &str,
    allowed_roots: &[PathBuf],
    limits: &ExtractLimits,
    cancel: &CancellationToken,
    layout: Layout,
) -> Result<ExtractSummary, WorkspaceError> {
    const STEP: &str = "downloading the returned workspace";
    let output = cancel
        .run_until_cancelled(s3.get_object().bucket(bucket).key(key).send())
        .await
        .ok_or(WorkspaceError::Cancelled { step: STEP })?
        .map_err(|e| {
            let missing = e
                .as_service_error()
                .is_some_and(|service| service.is_no_such_key());
            if missing {
                WorkspaceError::ArchiveMissing {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    source: Box::new(e),
                }
            } else {
                WorkspaceError::GetObject {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    source: Box::new(e),
                }
            }
        })?;
    let mut body = output.body;

    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
    let reader = ChannelReader {
        rx,
        current: Bytes::new(),
        cancel: cancel.clone(),
    };
    let roots = allowed_roots.to_vec();
    let limits = *limits;
    let worker = tokio::task::spawn_blocking(move || match layout {
        Layout::Plain => extract_tar_gz(reader, &roots, &limits),
        Layout::TrainingOutput => extract_training_output(reader, &roots, &limits),
    });

    let pumped: Result<(), WorkspaceError> = loop {
        let chunk = tokio::select! {
            biased;
            () = cancel.cancelled() => break Err(WorkspaceError::Cancelled { step: STEP }),
            chunk = body.next() => chunk,
        };
        match chunk {
            None => break Ok(()),
            Some(Ok(bytes)) => {
                let sent = tokio::select! {
                    biased;
                    () = cancel.cancelled() => break Err(WorkspaceError::Cancelled { step: STEP }),
                    sent = tx.send(Ok(bytes)) => sent,
                };
                // The extractor is done (it found its member, or failed): stop downloading.
                if sent.is_err() {
                    break Ok(());
                }
            }
            Some(Err(source)) => {
                // Tell the extractor the stream is broken rather than letting it see an end.
                let _ = tx.try_send(Err(io::Error::other("the download broke off")));
                break Err(WorkspaceError::DownloadBody {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    source,
                });
            }
        }
    };
    drop(tx);
    // Always wait for the extractor, so no file is still being written once this returns; it
    // stops promptly because its reader checks the token and sees the closed channel.
    let extracted = worker.await.map_err(|source| WorkspaceError::Worker {
        step: "extracting",
        source,
    })?;
    // A transport failure or cancellation explains whatever the extractor made of the stream.
    pumped?;
    extracted
}

/// A blocking `Read` over the chunks the pump sends.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    cancel: CancellationToken,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.current.is_empty() {
            if self.cancel.is_cancelled() {
                return Err(io::Error::other("cancelled"));
            }
            match self.rx.blocking_recv() {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_reader_concatenates_and_surfaces_errors() {
        let (tx, rx) = mpsc::channel(4);
        let mut reader = ChannelReader {
            rx,
            current: Bytes::new(),
            cancel: CancellationToken::new(),
        };
        tx.try_send(Ok(Bytes::from_static(b"ab"))).expect("send");
        tx.try_send(Ok(Bytes::from_static(b"cd"))).expect("send");
        tx.try_send(Err(io::Error::other("boom"))).expect("send");
        let mut out = [0u8; 3];
        assert_eq!(reader.read(&mut out).expect("read"), 2);
        assert_eq!(reader.read(&mut out).expect("read"), 2);
        assert!(reader.read(&mut out).is_err());
        drop(tx);
        assert_eq!(reader.read(&mut out).expect("eof"), 0);
    }

    #[test]
    fn channel_reader_stops_when_cancelled() {
        let (_tx, rx) = mpsc::channel(1);
        let cancel = CancellationToken::new();
        cancel.cancel();
        let mut reader = ChannelReader {
            rx,
            current: Bytes::new(),
            cancel,
        };
        assert!(reader.read(&mut [0u8; 8]).is_err());
    }
}
