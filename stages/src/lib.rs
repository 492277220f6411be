//! The core of sagemaker-executor: the job model, the admin config and policy, and each action's
//! AWS work. Nothing here knows about the GitLab custom-executor protocol; the `executor` crate
//! adapts that protocol onto this library, so another front end could drive it later.

pub mod action;
pub mod aws;
pub mod cleanup;
pub mod config;
pub mod ctx;
pub mod deploy;
pub mod doctor;
pub mod duration;
pub mod ecs_deploy;
pub mod excerpt;
pub mod failure;
pub mod fargate;
pub mod gc;
pub mod job;
pub mod joblog;
pub mod logs;
pub mod names;
pub mod outputs;
pub mod policy;
pub mod project_files;
pub mod register;
pub mod remote;
pub mod resources;
pub mod run;
pub mod settings;
pub mod state;
pub mod train;
pub mod undeploy;
pub mod watch;
pub mod workspace;

/// Value of the `managed-by` tag on everything this executor creates.
pub const MANAGED_BY: &str = "sagemaker-executor";
