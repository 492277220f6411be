//! Staging for the remote user-script actions (`train`, `fargate`): the workspace roots, packing
//! and uploading the workspace with the stage script, bootstrap and manifest, and reporting the
//! returned workspace. Staging fails with [`StagingError`], classified once.

use std::path::{Path, PathBuf};

use crate::ctx::StageCtx;
use crate::failure::{Classify, FailureKind};
use crate::joblog::JobLog;
use crate::state::{Staged, StateError};
use crate::workspace::{
    self, ExtractSummary, JobManifest, StagingLocation, UploadOptions, WorkspaceError,
    WorkspaceErrorKind,
};

/// Why staging the workspace failed.
#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    /// Packing or uploading failed.
    #[error("staging the workspace: {0}")]
    Workspace(#[from] WorkspaceError),
    /// The staged prefix could not be recorded in the state file.
    #[error(transparent)]
    State(#[from] StateError),
    /// The OS random number generator failed (the staging prefix's random component).
    #[error("cannot draw the staging prefix's random component: {0}")]
    Random(#[source] getrandom::Error),
    /// The runner's stage script could not be read.
    #[error("cannot read the stage script {}: {source}", path.display())]
    ReadScript {
        /// The script.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl Classify for StagingError {
    fn failure_kind(&self) -> FailureKind {
        match self {
            StagingError::Workspace(e) => workspace_failure_kind(e),
            StagingError::State(_) | StagingError::Random(_) | StagingError::ReadScript { .. } => {
                FailureKind::System
            }
        }
    }

    fn script_exit_code(&self) -> Option<i32> {
        match self {
            StagingError::Workspace(_)
            | StagingError::State(_)
            | StagingError::Random(_)
            | StagingError::ReadScript { .. } => None,
        }
    }
}

/// Who is at fault for a workspace error: the job for what its content or a cancel caused, the
/// platform or host for the rest.
pub fn workspace_failure_kind(e: &WorkspaceError) -> FailureKind {
    match e.kind() {
        WorkspaceErrorKind::JobContent | WorkspaceErrorKind::Cancelled => FailureKind::Build,
        WorkspaceErrorKind::Storage
        | WorkspaceErrorKind::LocalIo
        | WorkspaceErrorKind::Missing
        | WorkspaceErrorKind::Internal => FailureKind::System,
    }
}

/// The directories that travel: the project dir and its `.tmp` sibling (where the runner keeps
/// file variables), both restored at the same absolute paths remotely.
pub fn workspace_roots(project_dir: &Path) -> Vec<PathBuf> {
    let mut tmp = project_dir.as_os_str().to_owned();
    tmp.push(".tmp");
    vec![project_dir.to_owned(), PathBuf::from(tmp)]
}

/// Where this stage stages: the prefix recorded for it in the state file (an earlier attempt of
/// the stage staged there, and a task it started returns the workspace there), else a new
/// unguessable one ([`StagingLocation::unguessable`]), recorded before it is returned, so
/// cleanup finds it whatever happens next (a half-finished upload, a SIGKILL).
///
/// # Errors
/// The state file cannot be read or written, or the OS random number generator failed.
pub fn location(ctx: &StageCtx<'_>) -> Result<StagingLocation, StagingError> {
    let state = ctx.state.load()?;
    // A record without a stage was written by an executor that staged every run at the job's
    // own prefix: a job it started and this one attaches to returns its workspace there.
    let legacy = ctx.job_staging();
    let recorded = state.staged_by(ctx.stage).or_else(|| {
        state
            .staged
            .iter()
            .find(|s| s.stage.is_none() && s.prefix == legacy.prefix)
    });
    if let Some(staged) = recorded {
        return Ok(StagingLocation {
            bucket: staged.bucket.clone(),
            prefix: staged.prefix.clone(),
        });
    }
    let loc = StagingLocation::unguessable(
        &ctx.cfg.staging.bucket,
        &ctx.cfg.staging.prefix,
        ctx.job.project_id,
        ctx.job.id,
    )
    .map_err(StagingError::Random)?;
    record(ctx, &loc)?;
    Ok(loc)
}

/// Records `loc` as staged by this stage (once).
fn record(ctx: &StageCtx<'_>, loc: &StagingLocation) -> Result<(), StateError> {
    ctx.state.record_staged(Staged {
        bucket: loc.bucket.clone(),
        prefix: loc.prefix.clone(),
        stage: Some(ctx.stage.to_owned()),
    })
}

/// Packs and uploads the workspace, then the stage script, the bootstrap and `manifest`
/// ([`workspace::STAGED_OBJECTS`], all of them), in a collapsed "staging" section. The prefix is
/// recorded in the state file first (already by [`location`]), so cleanup deletes a
/// half-finished upload too. The log shows the prefix without its random part.
pub async fn stage_workspace(
    run: &StageCtx<'_>,
    loc: &StagingLocation,
    manifest: &JobManifest,
) -> Result<(), StagingError> {
    let aws = &run.aws;
    let log = &run.log;
    log.section_start("staging", "Staging the workspace in S3", true);
    record(run, loc)?;
    let roots = workspace_roots(run.project_dir);
    let opts = UploadOptions {
        kms_key_id: run.cfg.staging.kms_key_id.clone(),
        ..UploadOptions::default()
    };
    let summary = workspace::upload_tree(
        &aws.s3,
        loc,
        workspace::WORKSPACE_ARCHIVE,
        &roots,
        &opts,
        run.cancel,
    )
    .await?;
    let script = std::fs::read(run.script).map_err(|source| StagingError::ReadScript {
        path: run.script.to_owned(),
        source,
    })?;
    workspace::put_bytes(&aws.s3, loc, workspace::SCRIPT, script, &opts, run.cancel).await?;
    workspace::put_bytes(
        &aws.s3,
        loc,
        workspace::BOOTSTRAP,
        workspace::BOOTSTRAP_SH.as_bytes().to_vec(),
        &opts,
        run.cancel,
    )
    .await?;
    workspace::put_bytes(
        &aws.s3,
        loc,
        workspace::MANIFEST,
        manifest.render()?.into_bytes(),
        &opts,
        run.cancel,
    )
    .await?;
    workspace::put_bytes(
        &aws.s3,
        loc,
        workspace::CHANNEL_MANIFEST,
        loc.channel_manifest(),
        &opts,
        run.cancel,
    )
    .await?;
    log.notice(&format!(
        "Staged {} files ({} bytes, {} compressed) to {}",
        summary.files,
        summary.bytes_in,
        summary.bytes_out,
        loc.shown()
    ));
    log.section_end("staging");
    Ok(())
}

/// Reports a restore of the returned workspace. After a successful run a failed restore is an
/// error (the job's artifacts would silently be missing); after a failed run the workspace is
/// best effort, so a missing one gets `missing_note` and any other failure a warning.
///
/// # Errors
/// The restore's error, when `completed`.
pub fn report_restore(
    result: Result<ExtractSummary, WorkspaceError>,
    completed: bool,
    missing_note: &str,
    log: &JobLog,
) -> Result<(), WorkspaceError> {
    match result {
        Ok(s) => {
            log.notice(&format!(
                "Restored the workspace: {} files, {} bytes",
                s.files, s.bytes
            ));
            for skipped in &s.skipped {
                log.warn(&format!("not restored: {skipped}"));
            }
            Ok(())
        }
        Err(e) if completed => Err(e),
        Err(e) if e.kind() == WorkspaceErrorKind::Missing => {
            log.warn(missing_note);
            Ok(())
        }
        Err(e) => {
            log.warn(&format!("could not restore the workspace: {e}"));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_the_project_dir_and_its_tmp_sibling() {
        assert_eq!(
            workspace_roots(Path::new("/builds/7/g/p")),
            vec![
                PathBuf::from("/builds/7/g/p"),
                PathBuf::from("/builds/7/g/p.tmp")
            ]
        );
    }
}
