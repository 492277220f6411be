//! `sagemaker-executor workspace fetch|push`: what the helper containers of a Fargate task run
//! (see `stages::fargate::helper`). Output goes to the container's log, which the executor on
//! the runner host streams into the job log with a `[fetch]`/`[push]` prefix.
//!
//! Exit status: 0 on success, 1 on any failure (the executor reads the job container's status,
//! not these, except to tell whether the workspace came back).
//!
//! What they print reaches the job log, so the run's staging prefix is shown without its random
//! part ([`stages::workspace::redact`]).

use std::process::ExitCode;

use stages::fargate::helper;
use stages::workspace::redact;
use tokio_util::sync::CancellationToken;

use crate::cli::WorkspaceCommand;

pub async fn run(op: WorkspaceCommand, cancel: &CancellationToken) -> ExitCode {
    let result = match &op {
        WorkspaceCommand::Fetch {
            bucket,
            prefix,
            objects,
            dest,
            volume_root,
            region,
            path_style,
        } => {
            let s3 = helper::s3_client(region.clone(), *path_style).await;
            helper::fetch(
                &s3,
                bucket,
                prefix,
                objects,
                dest,
                volume_root.as_deref(),
                cancel,
            )
            .await
            .map(|m| {
                format!(
                    "downloaded {} objects ({} bytes) from s3://{bucket}/{prefix} into {}",
                    m.objects,
                    m.bytes,
                    dest.display()
                )
            })
        }
        WorkspaceCommand::Push {
            bucket,
            key,
            source,
            region,
            path_style,
            kms_key_id,
        } => {
            let s3 = helper::s3_client(region.clone(), *path_style).await;
            helper::push(&s3, bucket, key, source, kms_key_id.as_deref(), cancel)
                .await
                .map(|m| {
                    format!(
                        "uploaded {} ({} bytes) to s3://{bucket}/{key}",
                        source.display(),
                        m.bytes
                    )
                })
        }
    };
    match result {
        Ok(done) => {
            println!("{}", redact(&done));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", redact(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}
