//! The release bundle a registration leaves in the project dir for `artifacts: paths:
//! [release/]`: `release/<name>/manifest.json` (package, version, model data, image, metrics,
//! gates, commit, pipeline, job), `deploy.json` (the settings a deploy job would use), and
//! optionally `model.tar.gz`, streamed from S3 under the policy's size cap. Everything is written
//! confined to the project dir.
//!
//! Names: `candidate-<MR iid or branch slug>-<short sha>-<time>` for merge requests and
//! non-default branches, `stable-<time>` on the default branch, where the time is the package's
//! creation time (so a re-run of the stage writes the same bundle).

use std::io::Write;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::job::Job;
use crate::names::slug;
use crate::project_files::{ProjectDir, ProjectFileError};

/// Where bundles go in the project dir.
pub const RELEASE_DIR: &str = "release";

/// Why the bundle could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Writing into the project dir failed.
    #[error("release bundle: {0}")]
    Write(#[source] ProjectFileError),
    /// The model archive is larger than the policy allows.
    #[error(
        "release bundle: the model archive is {size} bytes, over policy.register.max_bundle_bytes = {limit}"
    )]
    TooLarge {
        /// Its size.
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// Reading the model archive from S3 failed.
    #[error("release bundle: reading the model archive: {0}")]
    Read(String),
    /// The model archive to copy does not exist (checked before anything is created).
    #[error("release bundle: the model archive {0} does not exist")]
    Missing(String),
    /// The job was cancelled while copying.
    #[error("release bundle: cancelled while copying the model archive")]
    Cancelled,
}

/// The longest name part taken from a ref, merge request id or commit.
const SLUG_MAX: usize = 40;

/// `YYYYMMDDTHHMMSSZ` of a Unix time.
pub fn stamp(unix_seconds: i64) -> String {
    let t = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(u64::try_from(unix_seconds).unwrap_or(0));
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

/// The bundle's name for `job` at `created` (Unix seconds).
pub fn name(job: &Job, created: i64) -> String {
    let time = stamp(created);
    let mr = job
        .variables
        .get("CI_MERGE_REQUEST_IID")
        .filter(|v| !v.trim().is_empty());
    let on_default = mr.is_none() && job.default_branch.as_deref() == Some(job.git_ref.as_str());
    if on_default {
        return format!("stable-{time}");
    }
    let which = match mr {
        Some(iid) => format!("mr{}", slug(iid, SLUG_MAX)),
        None => slug(&job.git_ref, SLUG_MAX),
    };
    let sha: String = job.sha.chars().take(8).collect();
    format!("candidate-{which}-{}-{time}", slug(&sha, SLUG_MAX))
}

/// Writes `manifest.json` and `deploy.json` under `release/<name>/`; returns the dir.
pub fn write(
    project: &ProjectDir,
    bundle: &str,
    manifest: &serde_json::Value,
    deploy: &serde_json::Value,
) -> Result<String, BundleError> {
    let dir = format!("{RELEASE_DIR}/{bundle}");
    for (file, value) in [("manifest.json", manifest), ("deploy.json", deploy)] {
        let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
        text.push('\n');
        project
            .write(&format!("{dir}/{file}"), text.as_bytes())
            .map_err(BundleError::Write)?;
    }
    Ok(dir)
}

/// The settings a deploy job would use for this package.
pub fn deploy_config(package_arn: &str, group: &str) -> serde_json::Value {
    json!({
        "variables": {
            "SAGEMAKER_ACTION": "deploy",
            "SAGEMAKER_MODEL_PACKAGE": package_arn,
            "SAGEMAKER_MODEL_PACKAGE_GROUP": group,
        }
    })
}

/// Checks, before anything is created, that the model archive to copy exists and is within
/// `limit`: a wrong `SAGEMAKER_MODEL_DATA` or an oversized model fails the job without leaving a
/// registered version behind.
pub async fn check_model(
    s3: &aws_sdk_s3::Client,
    (bucket, key): (&str, &str),
    limit: u64,
) -> Result<(), BundleError> {
    let head = match s3.head_object().bucket(bucket).key(key).send().await {
        Ok(head) => head,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {
            return Err(BundleError::Missing(crate::excerpt::quoted(&format!(
                "s3://{bucket}/{key}"
            ))));
        }
        Err(e) => return Err(BundleError::Read(crate::aws::errors::describe(&e))),
    };
    let size = u64::try_from(head.content_length().unwrap_or(0)).unwrap_or(0);
    if size > limit {
        return Err(BundleError::TooLarge { size, limit });
    }
    Ok(())
}

/// Streams `s3://bucket/key` into `<dir>/model.tar.gz`, refusing more than `limit` bytes.
pub async fn copy_model(
    s3: &aws_sdk_s3::Client,
    project: &ProjectDir,
    dir: &str,
    (bucket, key): (&str, &str),
    limit: u64,
    cancel: &CancellationToken,
) -> Result<u64, BundleError> {
    let out = tokio::select! {
        () = cancel.cancelled() => return Err(BundleError::Cancelled),
        r = s3.get_object().bucket(bucket).key(key).send() => {
            r.map_err(|e| BundleError::Read(crate::aws::errors::describe(&e)))?
        }
    };
    let size = u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0);
    if size > limit {
        return Err(BundleError::TooLarge { size, limit });
    }
    let mut file = project
        .create(&format!("{dir}/model.tar.gz"))
        .map_err(BundleError::Write)?;
    let mut body = out.body;
    let mut written = 0u64;
    loop {
        let chunk = tokio::select! {
            () = cancel.cancelled() => return Err(BundleError::Cancelled),
            c = body.try_next() => c.map_err(|e| BundleError::Read(e.to_string()))?,
        };
        let Some(chunk) = chunk else { break };
        written = written.saturating_add(chunk.len() as u64);
        // The advertised length is the object's; a body longer than it is not trusted either.
        if written > limit {
            return Err(BundleError::TooLarge {
                size: written,
                limit,
            });
        }
        file.write_all(&chunk).map_err(|e| {
            BundleError::Write(ProjectFileError::Io {
                path: format!("{dir}/model.tar.gz"),
                source: e,
            })
        })?;
    }
    file.commit().map_err(BundleError::Write)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::job::{Variable, Variables};

    fn job(git_ref: &str, mr: Option<&str>) -> Job {
        let mut vars = BTreeMap::new();
        if let Some(iid) = mr {
            vars.insert(
                "CI_MERGE_REQUEST_IID".to_owned(),
                Variable {
                    value: iid.to_owned(),
                    masked: false,
                    file: false,
                },
            );
        }
        Job {
            id: 42,
            name: "register".into(),
            project_id: 7,
            project_path: "ml/churn".into(),
            pipeline_id: 3,
            url: "https://g/j/42".into(),
            git_ref: git_ref.into(),
            sha: "0123456789abcdef".into(),
            ref_protected: false,
            default_branch: Some("main".into()),
            image: None,
            timeout: Duration::from_secs(60),
            variables: Variables::new(vars),
        }
    }

    #[test]
    fn names_follow_the_candidate_and_stable_rule() {
        let t = 1_764_601_462; // 2025-12-01T15:04:22Z
        assert_eq!(stamp(t), "20251201T150422Z");
        assert_eq!(name(&job("main", None), t), "stable-20251201T150422Z");
        assert_eq!(
            name(&job("feature/Fast_Path", None), t),
            "candidate-feature-fast-path-01234567-20251201T150422Z"
        );
        assert_eq!(
            name(&job("main", Some("17")), t),
            "candidate-mr17-01234567-20251201T150422Z"
        );
    }
}
