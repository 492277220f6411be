//! Deleting a job's staged objects, and any multipart upload a killed run left unfinished.
//!
//! # Guarantees
//! Idempotent: a prefix with nothing under it is `Ok` with zero counts, so `cleanup` can call
//! it whether or not `prepare`/`run` ever staged anything. It never touches a key outside the
//! job's prefix (the prefix is checked, and every listed key is checked against it).
//!
//! # Caveats
//! Needs `s3:ListBucket`, `s3:DeleteObject`, `s3:ListBucketMultipartUploads` and
//! `s3:AbortMultipartUpload` on the staging bucket.

use aws_sdk_s3::Client;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use tokio_util::sync::CancellationToken;

use super::{StagingLocation, WorkspaceError};

/// DeleteObjects takes at most this many keys.
const DELETE_BATCH: usize = 1000;

/// Deletes every object under `loc`'s prefix (ListObjectsV2 pages, DeleteObjects in batches of
/// 1000), then aborts unfinished multipart uploads under it. Returns the number of objects
/// deleted (aborted uploads are not objects and are not counted).
///
/// # Errors
/// [`WorkspaceError::InvalidLocation`] for a prefix that could address other jobs' objects,
/// S3 errors per step, [`WorkspaceError::DeleteObjectsPartial`] when S3 refused some keys, and
/// [`WorkspaceError::Cancelled`].
pub async fn delete_staged(
    s3: &Client,
    loc: &StagingLocation,
    cancel: &CancellationToken,
) -> Result<usize, WorkspaceError> {
    loc.check()?;
    let objects = delete_objects(s3, loc, cancel).await?;
    abort_uploads(s3, loc, cancel).await?;
    Ok(objects)
}

async fn delete_objects(
    s3: &Client,
    loc: &StagingLocation,
    cancel: &CancellationToken,
) -> Result<usize, WorkspaceError> {
    const STEP: &str = "deleting staged objects";
    let mut pages = s3
        .list_objects_v2()
        .bucket(&loc.bucket)
        .prefix(&loc.prefix)
        .into_paginator()
        .send();
    let mut deleted = 0;
    while let Some(page) = cancel
        .run_until_cancelled(pages.next())
        .await
        .ok_or(WorkspaceError::Cancelled { step: STEP })?
    {
        let page = page.map_err(|e| WorkspaceError::ListObjects {
            bucket: loc.bucket.clone(),
            prefix: loc.prefix.clone(),
            source: Box::new(e),
        })?;
        let keys: Vec<ObjectIdentifier> = page
            .contents()
            .iter()
            .filter_map(|object| object.key())
            // S3 already filters by prefix; this keeps a misbehaving endpoint from widening it.
            .filter(|key| key.starts_with(&loc.prefix))
            .map(|key| {
                ObjectIdentifier::builder()
                    .key(key)
                    .build()
                    .map_err(|source| WorkspaceError::BuildRequest {
                        operation: "DeleteObjects",
                        source,
                    })
            })
            .collect::<Result<_, _>>()?;
        for batch in keys.chunks(DELETE_BATCH) {
            let delete = Delete::builder()
                .set_objects(Some(batch.to_vec()))
                .quiet(true)
                .build()
                .map_err(|source| WorkspaceError::BuildRequest {
                    operation: "DeleteObjects",
                    source,
                })?;
            let request = s3
                .delete_objects()
                .bucket(&loc.bucket)
                .delete(delete)
                .send();
            let output = cancel
                .run_until_cancelled(request)
                .await
                .ok_or(WorkspaceError::Cancelled { step: STEP })?
                .map_err(|e| WorkspaceError::DeleteObjects {
                    bucket: loc.bucket.clone(),
                    prefix: loc.prefix.clone(),
                    source: Box::new(e),
                })?;
            if let Some(first) = output.errors().first() {
                return Err(WorkspaceError::DeleteObjectsPartial {
                    bucket: loc.bucket.clone(),
                    prefix: loc.prefix.clone(),
                    failed: output.errors().len(),
                    first_key: first.key().unwrap_or_default().to_owned(),
                    first_code: first.code().unwrap_or("unknown").to_owned(),
                });
            }
            deleted += batch.len();
        }
    }
    Ok(deleted)
}

async fn abort_uploads(
    s3: &Client,
    loc: &StagingLocation,
    cancel: &CancellationToken,
) -> Result<usize, WorkspaceError> {
    const STEP: &str = "aborting unfinished uploads";
    let mut aborted = 0;
    let mut key_marker: Option<String> = None;
    let mut upload_id_marker: Option<String> = None;
    loop {
        let request = s3
            .list_multipart_uploads()
            .bucket(&loc.bucket)
            .prefix(&loc.prefix)
            .set_key_marker(key_marker.take())
            .set_upload_id_marker(upload_id_marker.take())
            .send();
        let page = cancel
            .run_until_cancelled(request)
            .await
            .ok_or(WorkspaceError::Cancelled { step: STEP })?
            .map_err(|e| WorkspaceError::ListMultipartUploads {
                bucket: loc.bucket.clone(),
                prefix: loc.prefix.clone(),
                source: Box::new(e),
            })?;
        for upload in page.uploads() {
            let (Some(key), Some(upload_id)) = (upload.key(), upload.upload_id()) else {
                continue;
            };
            if !key.starts_with(&loc.prefix) {
                continue;
            }
            let request = s3
                .abort_multipart_upload()
                .bucket(&loc.bucket)
                .key(key)
                .upload_id(upload_id)
                .send();
            let result = cancel
                .run_until_cancelled(request)
                .await
                .ok_or(WorkspaceError::Cancelled { step: STEP })?;
            match result {
                Ok(_) => aborted += 1,
                // Finished or aborted meanwhile: the goal is reached.
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_upload()) => {}
                Err(e) => {
                    return Err(WorkspaceError::AbortMultipartUpload {
                        bucket: loc.bucket.clone(),
                        key: key.to_owned(),
                        source: Box::new(e),
                    });
                }
            }
        }
        let truncated = page.is_truncated().unwrap_or(false);
        key_marker = page.next_key_marker().map(str::to_owned);
        upload_id_marker = page.next_upload_id_marker().map(str::to_owned);
        // A truncated page without markers would loop forever on the same page.
        if !truncated || (key_marker.is_none() && upload_id_marker.is_none()) {
            break;
        }
    }
    Ok(aborted)
}
