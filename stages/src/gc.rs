//! `gc`: sweeps what this executor left running or stored after its jobs, for admins and cron.
//!
//! It lists resources tagged `managed-by=sagemaker-executor` (training jobs still in progress,
//! Fargate tasks still running, merge requests' candidate endpoints, endpoint configs and models
//! of deployments, superseded revisions of the task definitions it registered) and the staged
//! workspaces under the staging prefix, keeps what a live job on this host owns (a job's state
//! file exists from its first stage to its cleanup) and what is younger than the retention, and
//! stops or deletes the rest through [`crate::resources`] and the workspace cleanup.
//!
//! A stable endpoint is never swept, nor a config or model an endpoint serves or is being
//! updated to, nor the newest revision of a task definition family (later jobs reuse it).
//!
//! # Guarantees
//! - Safe to run on several runner hosts at once: every stop and delete is idempotent, and a
//!   resource that ended or vanished meanwhile counts as done.
//! - Read-only with `dry_run`.
//! - Touches nothing without the `managed-by` tag, and no S3 key outside
//!   `<prefix>/<project id>/<job id>/` but a training job's returned workspace
//!   (`…/<project id>/<job id>/<random>/<training job>/output/output.tar.gz`, which holds the
//!   job's file variables): never a model.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_ecs::types::{DesiredStatus, TaskField};
use aws_sdk_sagemaker::types::TrainingJobStatus;
use tokio_util::sync::CancellationToken;

use crate::aws::Aws;
use crate::aws::errors::AwsCallError;
use crate::config::ExecutorConfig;
use crate::resources::{self, Released};
use crate::state::{Phase, Resource, ResourceKind};
use crate::workspace::{self, StagingLocation};

mod deployments;
mod sessions;

/// How a sweep runs.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// Only list what would be released.
    pub dry_run: bool,
    /// Keep what is younger than this.
    pub older_than: Duration,
}

impl GcOptions {
    /// Whether a sweep leaves a resource of `job` that is `age` old alone: the job is live on
    /// this host (its state file exists), or the resource is younger than the retention.
    pub(crate) fn keeps(&self, live: &HashSet<String>, job: &str, age: Duration) -> bool {
        live.contains(job) || age < self.older_than
    }
}

/// One orphan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// What it is.
    pub kind: &'static str,
    /// Its name or ARN.
    pub id: String,
    /// The GitLab job it belongs to, from its tags or key.
    pub job: String,
    /// How old it is.
    pub age: Duration,
    /// What gc does (or did) with it, and how that went.
    pub outcome: String,
}

/// Why a sweep could not list what it sweeps.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// A listing call failed.
    #[error("{0}")]
    List(#[source] AwsCallError),
}

pub(crate) const MANAGED_BY: (&str, &str) = ("managed-by", crate::MANAGED_BY);

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn age_of(created: i64) -> Duration {
    Duration::from_secs(u64::try_from(now_secs().saturating_sub(created)).unwrap_or(0))
}

/// Job ids with a state file on this host: live jobs (cleanup removes the file).
fn live_jobs(cfg: &ExecutorConfig) -> HashSet<String> {
    std::fs::read_dir(&cfg.paths.state_root)
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_prefix("job-")?
                        .strip_suffix(".json")
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Sweeps orphans; returns every one found, with what became of it.
///
/// # Errors
/// [`GcError`] when a listing fails (a failed stop or delete is reported in its row instead).
pub async fn sweep(
    cfg: &ExecutorConfig,
    opts: GcOptions,
    cancel: &CancellationToken,
) -> Result<Vec<Orphan>, GcError> {
    let mut sessions = sessions::Sessions::new(cfg).await;
    let live = live_jobs(cfg);
    let mut found = Vec::new();
    training_jobs(&mut sessions, &live, opts, &mut found).await?;
    if let Some(fargate) = &cfg.fargate {
        tasks(&mut sessions, &fargate.cluster, &live, opts, &mut found).await?;
        task_definitions(sessions.runner(), opts, &mut found).await?;
    }
    // Endpoints first: their configs and models are free once they are gone (a config of an
    // endpoint still being deleted is left for the next run).
    deployments::sweep(&mut sessions, &live, opts, &mut found).await?;
    staged(sessions.runner(), cfg, &live, opts, cancel, &mut found).await?;
    Ok(found)
}

/// Superseded revisions of this executor's task definitions (family `sme-<hash>`): every
/// ACTIVE revision but the newest of its family, once older than the retention. Running tasks
/// keep running on a deregistered revision.
async fn task_definitions(
    aws: &Aws,
    opts: GcOptions,
    found: &mut Vec<Orphan>,
) -> Result<(), GcError> {
    // ListTaskDefinitions' familyPrefix is a whole family name; families by prefix come from
    // ListTaskDefinitionFamilies.
    let mut families = Vec::new();
    let mut pages = aws
        .ecs
        .list_task_definition_families()
        .family_prefix(crate::fargate::taskdef::FAMILY_PREFIX)
        .status(aws_sdk_ecs::types::TaskDefinitionFamilyStatus::Active)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| GcError::List(AwsCallError::new("ListTaskDefinitionFamilies", e)))?;
        families.extend(page.families().iter().cloned());
    }
    let mut arns: Vec<(String, String, i32)> = Vec::new();
    for family in families {
        let mut revisions = Vec::new();
        let mut pages = aws
            .ecs
            .list_task_definitions()
            .family_prefix(&family)
            .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| GcError::List(AwsCallError::new("ListTaskDefinitions", e)))?;
            for arn in page.task_definition_arns() {
                // arn:...:task-definition/<family>:<revision>
                if let Some(revision) = arn
                    .rsplit_once(':')
                    .and_then(|(_, r)| r.parse::<i32>().ok())
                {
                    revisions.push((arn.clone(), revision));
                }
            }
        }
        // The newest revision is what the next job of this shape reuses: never swept.
        let Some(newest) = revisions.iter().map(|(_, r)| *r).max() else {
            continue;
        };
        arns.extend(
            revisions
                .into_iter()
                .filter(|(_, r)| *r != newest)
                .map(|(arn, r)| (arn, family.clone(), r)),
        );
    }
    for (arn, family, revision) in arns {
        let described = aws
            .ecs
            .describe_task_definition()
            .task_definition(&arn)
            .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
            .send()
            .await
            .map_err(|e| GcError::List(AwsCallError::new("DescribeTaskDefinition", e)))?;
        let ours = described
            .tags()
            .iter()
            .any(|t| t.key() == Some(MANAGED_BY.0) && t.value() == Some(MANAGED_BY.1));
        let age = age_of(
            described
                .task_definition()
                .and_then(|t| t.registered_at())
                .map(|t| t.secs())
                .unwrap_or(0),
        );
        if !ours || age < opts.older_than {
            continue;
        }
        let outcome = if opts.dry_run {
            "would deregister".to_owned()
        } else {
            match aws
                .ecs
                .deregister_task_definition()
                .task_definition(&arn)
                .send()
                .await
            {
                Ok(_) => "deregistered".to_owned(),
                Err(e) => format!(
                    "failed: {}",
                    AwsCallError::new("DeregisterTaskDefinition", e)
                ),
            }
        };
        found.push(Orphan {
            kind: "task definition",
            id: format!("{family}:{revision}"),
            job: String::new(),
            age,
            outcome,
        });
    }
    Ok(())
}

/// The tags of a SageMaker resource, by key.
pub(crate) async fn tags_of(aws: &Aws, arn: &str) -> Result<BTreeMap<String, String>, GcError> {
    let out = aws
        .sagemaker
        .list_tags()
        .resource_arn(arn)
        .send()
        .await
        .map_err(|e| GcError::List(AwsCallError::new("ListTags", e)))?;
    Ok(out
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
        .collect())
}

/// An outcome, with why it was reached with the runner's credentials when that matters.
pub(crate) fn with_note(outcome: String, note: Option<String>) -> String {
    match note {
        Some(n) => format!("{outcome} ({n})"),
        None => outcome,
    }
}

/// What releasing said, as a table cell.
pub(crate) fn outcome(result: Result<Released, AwsCallError>, done: &str) -> String {
    match result {
        Ok(Released::Stopping(_)) => done.to_owned(),
        Ok(Released::NothingRunning) => "already ended".to_owned(),
        Ok(Released::LeftToAws(how)) => how.to_owned(),
        Err(e) => format!("failed: {e}"),
    }
}

async fn training_jobs(
    sessions: &mut sessions::Sessions,
    live: &HashSet<String>,
    opts: GcOptions,
    found: &mut Vec<Orphan>,
) -> Result<(), GcError> {
    let aws = sessions.runner().clone();
    let mut pages = aws
        .sagemaker
        .list_training_jobs()
        .status_equals(TrainingJobStatus::InProgress)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| GcError::List(AwsCallError::new("ListTrainingJobs", e)))?;
        for summary in page.training_job_summaries() {
            let (Some(name), Some(arn)) = (summary.training_job_name(), summary.training_job_arn())
            else {
                continue;
            };
            let tags = tags_of(&aws, arn).await?;
            if tags.get(MANAGED_BY.0).map(String::as_str) != Some(MANAGED_BY.1) {
                continue;
            }
            let job = tags.get("gitlab:job-id").cloned().unwrap_or_default();
            let age = age_of(summary.creation_time().map(|t| t.secs()).unwrap_or(0));
            if opts.keeps(live, &job, age) {
                continue;
            }
            let resource = Resource {
                phase: Phase::Created,
                ..Resource::intended(ResourceKind::TrainingJob, name, None, "gc")
            };
            let outcome = if opts.dry_run {
                "would stop".to_owned()
            } else {
                let (aws, note) = sessions.for_tags(&tags).await;
                with_note(
                    outcome(resources::release(aws, &resource, "gc").await, "stopped"),
                    note,
                )
            };
            found.push(Orphan {
                kind: "training job",
                id: name.to_owned(),
                job,
                age,
                outcome,
            });
        }
    }
    Ok(())
}

async fn tasks(
    sessions: &mut sessions::Sessions,
    cluster: &str,
    live: &HashSet<String>,
    opts: GcOptions,
    found: &mut Vec<Orphan>,
) -> Result<(), GcError> {
    let aws = sessions.runner().clone();
    let mut pages = aws
        .ecs
        .list_tasks()
        .cluster(cluster)
        .desired_status(DesiredStatus::Running)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| GcError::List(AwsCallError::new("ListTasks", e)))?;
        // DescribeTasks takes at most 100 tasks; ListTasks pages are at most 100.
        if !page.task_arns().is_empty() {
            let described = aws
                .ecs
                .describe_tasks()
                .cluster(cluster)
                .set_tasks(Some(page.task_arns().to_vec()))
                .include(TaskField::Tags)
                .send()
                .await
                .map_err(|e| GcError::List(AwsCallError::new("DescribeTasks", e)))?;
            for task in described.tasks() {
                let tags: BTreeMap<String, String> = task
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
                    .collect();
                if tags.get(MANAGED_BY.0).map(String::as_str) != Some(MANAGED_BY.1) {
                    continue;
                }
                let job = tags.get("gitlab:job-id").cloned().unwrap_or_default();
                let age = age_of(
                    task.created_at()
                        .or(task.started_at())
                        .map(|t| t.secs())
                        .unwrap_or(0),
                );
                if opts.keeps(live, &job, age) {
                    continue;
                }
                let Some(arn) = task.task_arn() else { continue };
                let resource = Resource {
                    id: Some(arn.to_owned()),
                    phase: Phase::Created,
                    ..Resource::intended(
                        ResourceKind::EcsTask,
                        task.started_by().unwrap_or(arn),
                        Some(cluster),
                        "gc",
                    )
                };
                let outcome = if opts.dry_run {
                    "would stop".to_owned()
                } else {
                    let reason = format!("sagemaker-executor gc: orphan of GitLab job {job}");
                    let (aws, note) = sessions.for_tags(&tags).await;
                    with_note(
                        outcome(resources::release(aws, &resource, &reason).await, "stopped"),
                        note,
                    )
                };
                found.push(Orphan {
                    kind: "ECS task",
                    id: arn.to_owned(),
                    job,
                    age,
                    outcome,
                });
            }
        }
    }
    Ok(())
}

/// `<prefix>/<project id>/<job id>/` of a key, when the key has that shape.
fn job_prefix<'k>(prefix: &str, key: &'k str) -> Option<(&'k str, &'k str)> {
    let rest = if prefix.is_empty() {
        key
    } else {
        key.strip_prefix(prefix)?.strip_prefix('/')?
    };
    let mut parts = rest.splitn(3, '/');
    let project = parts.next()?;
    let job = parts.next()?;
    parts.next()?;
    (workspace::is_id_segment(project) && workspace::is_id_segment(job)).then(|| {
        let end = key.len() - rest.len() + project.len() + 1 + job.len() + 1;
        (&key[..end], job)
    })
}

async fn staged(
    aws: &Aws,
    cfg: &ExecutorConfig,
    live: &HashSet<String>,
    opts: GcOptions,
    cancel: &CancellationToken,
    found: &mut Vec<Orphan>,
) -> Result<(), GcError> {
    let bucket = &cfg.staging.bucket;
    let prefix = cfg.staging.prefix.trim_matches('/');
    // Newest object per job prefix: a staged workspace is an orphan once all of it is old.
    let mut newest: BTreeMap<String, (String, i64)> = BTreeMap::new();
    // SageMaker's returned workspaces (under the default output path, inside the prefix).
    let mut returned: Vec<(String, String, i64)> = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = aws
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            })
            .set_continuation_token(token.clone())
            .send()
            .await
            .map_err(|e| GcError::List(AwsCallError::new("ListObjectsV2", e)))?;
        for object in page.contents() {
            let (Some(key), Some(modified)) = (object.key(), object.last_modified()) else {
                continue;
            };
            if let Some(job) = returned_workspace_job(key) {
                returned.push((key.to_owned(), job.to_owned(), modified.secs()));
            } else if let Some((job_prefix, job)) = job_prefix(prefix, key) {
                let entry = newest
                    .entry(job_prefix.to_owned())
                    .or_insert_with(|| (job.to_owned(), i64::MIN));
                entry.1 = entry.1.max(modified.secs());
            }
        }
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
            _ => break,
        }
    }
    for (job_prefix, (job, modified)) in newest {
        let age = age_of(modified);
        if opts.keeps(live, &job, age) {
            continue;
        }
        let outcome = if opts.dry_run {
            "would delete".to_owned()
        } else {
            let loc = StagingLocation {
                bucket: bucket.clone(),
                prefix: job_prefix.clone(),
            };
            match workspace::delete_staged(&aws.s3, &loc, cancel).await {
                Ok(n) => format!("deleted {n} objects"),
                Err(e) => format!("failed: {e}"),
            }
        };
        found.push(Orphan {
            kind: "staged workspace",
            id: format!("s3://{bucket}/{job_prefix}"),
            job,
            age,
            outcome,
        });
    }
    for (key, job, modified) in returned {
        let age = age_of(modified);
        if opts.keeps(live, &job, age) {
            continue;
        }
        let outcome = if opts.dry_run {
            "would delete".to_owned()
        } else {
            match aws.s3.delete_object().bucket(bucket).key(&key).send().await {
                Ok(_) => "deleted".to_owned(),
                Err(e) => format!("failed: {}", AwsCallError::new("DeleteObject", e)),
            }
        };
        found.push(Orphan {
            kind: "returned workspace",
            id: format!("s3://{bucket}/{key}"),
            job,
            age,
            outcome,
        });
    }
    Ok(())
}

/// The GitLab job of a training job's returned workspace, `output.tar.gz` below a run's output
/// path (`…/<project id>/<job id>/<random>/<training job>/output/output.tar.gz`). Only that
/// exact shape counts, so a model (`model.tar.gz`) or anything a user stored is never matched.
fn returned_workspace_job(key: &str) -> Option<&str> {
    let mut rev = key.rsplit('/');
    let ends = rev.next()? == "output.tar.gz" && rev.next()? == "output";
    let _training_job = rev.next().filter(|n| !n.is_empty())?;
    let random = rev.next()?;
    let job = rev.next()?;
    let project = rev.next()?;
    (ends
        && workspace::is_random_segment(random)
        && workspace::is_id_segment(job)
        && workspace::is_id_segment(project))
    .then_some(job)
}

/// The sweep as a table, one row per orphan.
pub fn table(found: &[Orphan]) -> Vec<String> {
    let mut rows = vec![[
        "KIND".to_owned(),
        "ID".to_owned(),
        "JOB".to_owned(),
        "AGE".to_owned(),
        "ACTION".to_owned(),
    ]];
    for o in found {
        rows.push([
            o.kind.to_owned(),
            o.id.clone(),
            o.job.clone(),
            humantime::format_duration(Duration::from_secs(o.age.as_secs() / 60 * 60)).to_string(),
            o.outcome.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_job_shaped_keys_are_staged_workspaces() {
        assert_eq!(
            job_prefix("ci", "ci/7/42/workspace.tar.gz"),
            Some(("ci/7/42/", "42"))
        );
        assert_eq!(
            job_prefix("ci", "ci/7/42/returned/workspace.tar.gz"),
            Some(("ci/7/42/", "42"))
        );
        assert_eq!(
            job_prefix(
                "ci",
                "ci/output/1/2/0123456789abcdef0123456789abcdef/gl-1-2/output/model.tar.gz"
            ),
            None
        );
        assert_eq!(job_prefix("ci", "ci/checkpoints/7/main/x"), None);
        assert_eq!(job_prefix("ci", "other/7/42/x"), None);
        assert_eq!(job_prefix("", "7/42/x"), Some(("7/42/", "42")));
    }

    #[test]
    fn only_a_runs_output_tar_gz_is_a_returned_workspace() {
        let random = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            returned_workspace_job(&format!(
                "ci/output/7/42/{random}/gl-7-42/output/output.tar.gz"
            )),
            Some("42")
        );
        for key in [
            format!("ci/output/7/42/{random}/gl-7-42/output/model.tar.gz"),
            format!("ci/output/7/42/{random}/output/output.tar.gz"),
            "ci/output/gl-7-42/output/output.tar.gz".to_owned(),
            format!("ci/output/7/x/{random}/gl-7-42/output/output.tar.gz"),
            format!(
                "ci/output/7/42/{}/gl-7-42/output/output.tar.gz",
                &random[1..]
            ),
            "output.tar.gz".to_owned(),
        ] {
            assert_eq!(returned_workspace_job(&key), None, "{key}");
        }
    }

    #[test]
    fn the_table_lines_up() {
        let rows = table(&[Orphan {
            kind: "training job",
            id: "gl-1-2".into(),
            job: "2".into(),
            age: Duration::from_secs(7260),
            outcome: "would stop".into(),
        }]);
        assert_eq!(rows[0], "KIND          ID      JOB  AGE    ACTION");
        assert_eq!(rows[1], "training job  gl-1-2  2    2h 1m  would stop");
    }
}
