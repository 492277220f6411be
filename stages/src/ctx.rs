//! The context of one user-script stage, built once by [`crate::run`] and handed to the action:
//! the executor config, the job, the stage, where its files are, its state file, cancellation,
//! the AWS clients and the job log. A leaf: it knows no action.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use crate::aws::Aws;
use crate::config::ExecutorConfig;
use crate::job::Job;
use crate::joblog::JobLog;
use crate::names::resource_name;
use crate::state::StateFile;
use crate::watch::events::{Registry, ResourceKey, SqsQueue};
use crate::watch::host::{HostWatcher, Launcher};
use crate::workspace::StagingLocation;

/// What a front end hands the core for one user-script stage.
#[derive(Debug, Clone, Copy)]
pub struct StageInput<'a> {
    /// The executor config.
    pub cfg: &'a ExecutorConfig,
    /// The job.
    pub job: &'a Job,
    /// The stage name (`build_script`, `step_*`).
    pub stage: &'a str,
    /// The stage script the runner wrote on this host.
    pub script: &'a Path,
    /// The local project dir (`CI_PROJECT_DIR`).
    pub project_dir: &'a Path,
    /// The job's state file.
    pub state: &'a StateFile,
    /// Cancelled on SIGTERM.
    pub cancel: &'a CancellationToken,
    /// Whose credentials the job's AWS calls use.
    pub credentials: &'a crate::aws::credentials::JobCredentials,
    /// How to start this host's watcher (`[watch] host_watcher`); `None`: every wait reads
    /// its own sessions and queue.
    pub launcher: Option<&'a Launcher>,
}

/// Everything an action needs, built once per stage.
#[derive(Debug)]
pub struct StageCtx<'a> {
    /// The executor config.
    pub cfg: &'a ExecutorConfig,
    /// The job.
    pub job: &'a Job,
    /// The stage name.
    pub stage: &'a str,
    /// The stage script on this host.
    pub script: &'a Path,
    /// The local project dir.
    pub project_dir: &'a Path,
    /// The job's state file.
    pub state: &'a StateFile,
    /// Cancelled on SIGTERM.
    pub cancel: &'a CancellationToken,
    /// Every AWS client, from one SDK config.
    pub aws: Aws,
    /// Whose credentials `aws` carries.
    pub credentials: &'a crate::aws::credentials::JobCredentials,
    /// The job log.
    pub log: JobLog,
    /// The host watcher that waits share, when it is on and something would use it.
    pub host_watcher: Option<HostWatcher>,
}

impl<'a> StageCtx<'a> {
    /// A context over `input` with `aws` and `log`.
    pub fn new(input: StageInput<'a>, aws: Aws, log: JobLog) -> StageCtx<'a> {
        StageCtx {
            cfg: input.cfg,
            job: input.job,
            stage: input.stage,
            script: input.script,
            project_dir: input.project_dir,
            state: input.state,
            cancel: input.cancel,
            aws,
            credentials: input.credentials,
            log,
            host_watcher: input
                .launcher
                .filter(|_| {
                    let w = &input.cfg.watch;
                    w.host_watcher && (w.live_tail || w.queue_url.is_some())
                })
                .map(|l| HostWatcher::new(&input.cfg.paths.state_root, l.clone())),
        }
    }

    /// The tags of everything this stage creates: the job's ([`Job::resource_tags`]), and the
    /// role the job's credentials are a session of, so `gc` can act as that role later.
    pub fn resource_tags(&self) -> Vec<(String, String)> {
        let mut tags = self.job.resource_tags();
        if let crate::aws::credentials::JobCredentials::Role(session) = self.credentials {
            tags.push((
                crate::aws::credentials::ROLE_TAG.to_owned(),
                crate::job::tag_value(&session.role_arn),
            ));
        }
        tags
    }

    /// State-change hints for a wait on `key`, when the runner host has a queue (`[watch]
    /// queue_url`): through the host watcher when it is on, else read by this job. Keep the
    /// second half alive for as long as the wait; `None`: the wait polls.
    pub fn state_events(
        &self,
        key: ResourceKey,
    ) -> Option<(crate::watch::Hints, crate::watch::events::EventWatch)> {
        let url = self.cfg.watch.queue_url.as_ref()?;
        Some(crate::watch::host::events(
            self.host_watcher.clone(),
            SqsQueue::new(self.aws.sqs.clone(), url.clone()),
            key,
            Registry::new(&self.cfg.paths.state_root),
            self.cfg.watch.safety_interval,
        ))
    }

    /// The deterministic name of what this stage creates (`gl-<project>-<job>[-<step>]`).
    pub fn resource_name(&self) -> String {
        resource_name(self.job.project_id, self.job.id, self.stage)
    }

    /// The job's staging prefix, under which each run stages at its own unguessable prefix
    /// ([`crate::remote::staging::location`]); for messages and sweeps, never for uploads.
    pub fn job_staging(&self) -> StagingLocation {
        StagingLocation::new(
            &self.cfg.staging.bucket,
            &self.cfg.staging.prefix,
            self.job.project_id,
            self.job.id,
        )
    }
}
