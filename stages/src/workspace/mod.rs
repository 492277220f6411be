//! Workspace staging through S3, and the in-container bootstrap.
//!
//! The round trip of a remote user-script stage:
//!
//! ```text
//! runner host                     S3 <prefix>/<project>/<job>/<random>/          container
//! -----------                     -------------------------------------          ---------
//! upload_tree(project, project.tmp) -> workspace.tar.gz  ------------------> bootstrap.sh:
//! put_bytes(script, bootstrap, job.env) -> script, bootstrap.sh, job.env ->    tar -xzf -C /
//!                                                                              run script
//! restore_from_training_output  <--- <output path>/output.tar.gz <--------   pack workspace.tar
//!   (or restore_archive for ECS <--- workspace.tar.gz)                         exit status
//! delete_staged (cleanup)
//! ```
//!
//! Archives use absolute paths without the leading '/' as member names, so the container restores
//! the workspace at the same absolute path. The gzip stream is a series of members compressed on
//! every core, stored where the data would not compress (`parallel_gzip`, `compressibility`);
//! any gzip reader, busybox's included, reads it as one stream. Packing and extraction are synchronous (`pack`,
//! `extract`) and run on blocking threads, connected to S3 by bounded channels (`upload`,
//! `download`), so memory stays bounded whatever the workspace size. The returned archive is
//! untrusted; `extract` documents the rules that keep it inside the project dir.
//!
//! Errors: one [`WorkspaceError`], classified by [`WorkspaceError::kind`].

mod cleanup;
mod compressibility;
mod download;
mod error;
mod extract;
mod location;
mod pack;
mod parallel_gzip;
mod upload;

pub use cleanup::delete_staged;
pub use download::{restore_archive, restore_from_training_output};
pub use error::{WorkspaceError, WorkspaceErrorKind};
pub use extract::{
    ExtractLimits, ExtractSummary, extract_tar, extract_tar_gz, extract_training_output,
};
pub use location::{
    BOOTSTRAP, BOOTSTRAP_SH, CHANNEL_MANIFEST, JobManifest, MANIFEST, RETURNED_WORKSPACE_MEMBER,
    RemoteMode, SCRIPT, STAGED_OBJECTS, StagingLocation, WORKSPACE_ARCHIVE, redact,
};
pub(crate) use location::{is_id_segment, is_random_segment};
pub use pack::{MAX_AUTO_THREADS, PackOptions, PackSummary, pack_tree_to, pack_tree_with};
pub use upload::{MIN_PART_SIZE, UploadOptions, put_bytes, upload_file, upload_tree};
