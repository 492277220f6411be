//! A `.gitlab-ci.yml` reader and pipeline runner on top of the runner emulator: what GitLab
//! does before and between the jobs a runner sees.
//!
//! - [`parse`]: the file into jobs (`extends`, `default:`, `.hidden` templates, anchors), with
//!   every keyword the emulator does not run reported by name and job.
//! - [`rules`]: `rules:if` expressions.
//! - [`expand`]: `$VAR`/`${VAR}` expansion, as the GitLab server and the runner do it.
//! - [`plan`]: the pipeline GitLab creates for a source (push, merge request) and a branch.
//! - [`run`]: the jobs run in order through [`crate::runner`], with dotenv variables,
//!   artifacts and environments passed on as GitLab does.

pub mod expand;
pub mod parse;
pub mod plan;
pub mod rules;
pub mod run;

pub use parse::{Job, Pipeline, When};
pub use plan::{Context, MergeRequest, PipelineSource, Plan, PlannedJob, plan};
pub use run::{
    EnvironmentRecord, JobRecord, JobStatus, PipelineRun, PipelineSpec, RunOptions, Trigger, load,
    run,
};
