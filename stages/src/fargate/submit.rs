//! Starting the task (RunTask), or finding the one a previous attempt of this stage started.
//!
//! Per-job values travel in `overrides.containerOverrides`: the helper commands name the staging
//! bucket, the run's prefix, the objects to fetch and the paths, the job container's command
//! names its channel dir. They are no credentials (the prefix is unguessable, not secret: see
//! [`crate::workspace::StagingLocation`]), and nothing else per job is sent: the job's variables
//! reach the container only inside the staged stage script. ECS caps the overrides at 8 KiB;
//! these stay well under it (a test checks the longest names the config allows).

use std::path::{Path, PathBuf};

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, ContainerOverride,
    DesiredStatus, LaunchType, NetworkConfiguration, PropagateTags, Tag, TaskOverride,
};

use super::FargateError;
use super::taskdef::{FETCH, JOB, PUSH};
use crate::config::FargateEnv;
use crate::settings::FargateSettings;
use crate::workspace::{BOOTSTRAP, STAGED_OBJECTS, StagingLocation, WORKSPACE_ARCHIVE};

/// Where the returned workspace is uploaded, relative to the staging prefix. A subdirectory, so
/// `fetch` (which takes only the objects directly under the prefix) never downloads it, and so a
/// failed `push` can never make the staged *input* archive look like the returned one.
pub const RETURNED: &str = "returned/workspace.tar.gz";

/// Where things are inside the task's shared volume for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPaths {
    /// `<builds_root>`: where the task volume is mounted in every container.
    pub volume: PathBuf,
    /// `<builds_root>/.sme/<job-id>`: the staged objects (the bootstrap's channel dir).
    pub channel: PathBuf,
    /// `<channel>/out`: where the bootstrap writes `workspace.tar.gz`.
    pub output_dir: PathBuf,
}

impl TaskPaths {
    /// The paths of job `job_id` under `builds_root`. The channel dir is a hidden sibling of the
    /// per-job builds dirs, so it can never collide with a project dir.
    pub fn new(builds_root: &Path, job_id: u64) -> TaskPaths {
        let channel = builds_root.join(".sme").join(job_id.to_string());
        TaskPaths {
            volume: builds_root.to_owned(),
            output_dir: channel.join("out"),
            channel,
        }
    }

    /// The archive `push` uploads.
    pub fn returned_archive(&self) -> PathBuf {
        self.output_dir.join(WORKSPACE_ARCHIVE)
    }
}

/// The container commands of one job's task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commands {
    /// `workspace fetch ...` (after the helper entry point).
    pub fetch: Vec<String>,
    /// `<channel>/bootstrap.sh <channel>` (after `/bin/sh`).
    pub job: Vec<String>,
    /// `workspace push ...` (after the helper entry point).
    pub push: Vec<String>,
}

impl Commands {
    /// The commands for a job staged at `loc` with `paths`, talking to S3 in `region`.
    pub fn new(
        loc: &StagingLocation,
        paths: &TaskPaths,
        region: &str,
        path_style: bool,
        kms_key_id: Option<&str>,
    ) -> Commands {
        let text = |p: &Path| p.to_string_lossy().into_owned();
        let mut fetch = vec![
            "workspace".to_owned(),
            "fetch".to_owned(),
            "--bucket".to_owned(),
            loc.bucket.clone(),
            "--prefix".to_owned(),
            loc.prefix.clone(),
        ];
        // Named, not listed: the task role may not list the staging bucket.
        for name in STAGED_OBJECTS {
            fetch.push("--object".to_owned());
            fetch.push(name.to_owned());
        }
        fetch.extend([
            "--dest".to_owned(),
            text(&paths.channel),
            // The job image's USER is unknown (and may not be root): fetch, root in the helper
            // image, opens the volume down to the channel dir to every user.
            "--volume-root".to_owned(),
            text(&paths.volume),
            "--region".to_owned(),
            region.to_owned(),
        ]);
        let mut push = vec![
            "workspace".to_owned(),
            "push".to_owned(),
            "--bucket".to_owned(),
            loc.bucket.clone(),
            "--key".to_owned(),
            loc.key(RETURNED),
            "--source".to_owned(),
            text(&paths.returned_archive()),
            "--region".to_owned(),
            region.to_owned(),
        ];
        if path_style {
            fetch.push("--path-style".to_owned());
            push.push("--path-style".to_owned());
        }
        if let Some(key) = kms_key_id {
            push.push("--kms-key-id".to_owned());
            push.push(key.to_owned());
        }
        Commands {
            fetch,
            job: vec![text(&paths.channel.join(BOOTSTRAP)), text(&paths.channel)],
            push,
        }
    }

    fn overrides(&self) -> TaskOverride {
        let one = |name: &str, command: &[String]| {
            ContainerOverride::builder()
                .name(name)
                .set_command(Some(command.to_vec()))
                .build()
        };
        TaskOverride::builder()
            .container_overrides(one(FETCH, &self.fetch))
            .container_overrides(one(JOB, &self.job))
            .container_overrides(one(PUSH, &self.push))
            .build()
    }
}

/// Starts the task. `name` is the stage's deterministic resource name: it becomes `startedBy`
/// (so a re-run finds the task) and the idempotency token (so a retried call cannot start two).
pub async fn run_task(
    ecs: &aws_sdk_ecs::Client,
    env: &FargateEnv,
    settings: &FargateSettings,
    resource_tags: &[(String, String)],
    task_definition: &str,
    name: &str,
    commands: &Commands,
) -> Result<String, FargateError> {
    let request = |what| move |source| FargateError::Request { what, source };
    let vpc = AwsVpcConfiguration::builder()
        .set_subnets(Some(env.subnets.clone()))
        .set_security_groups(Some(env.security_groups.clone()))
        .assign_public_ip(if env.assign_public_ip {
            AssignPublicIp::Enabled
        } else {
            AssignPublicIp::Disabled
        })
        .build()
        .map_err(request("RunTask networkConfiguration"))?;
    let tags: Vec<Tag> = resource_tags
        .iter()
        .cloned()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    let mut req = ecs
        .run_task()
        .cluster(&env.cluster)
        .task_definition(task_definition)
        .count(1)
        .started_by(name)
        .client_token(name)
        .network_configuration(
            NetworkConfiguration::builder()
                .awsvpc_configuration(vpc)
                .build(),
        )
        .overrides(commands.overrides())
        .set_tags(Some(tags))
        .enable_ecs_managed_tags(true)
        .propagate_tags(PropagateTags::TaskDefinition);
    // A capacity provider strategy and a launch type exclude each other.
    req = if settings.spot {
        req.capacity_provider_strategy(
            CapacityProviderStrategyItem::builder()
                .capacity_provider("FARGATE_SPOT")
                .weight(1)
                .build()
                .map_err(request("RunTask capacityProviderStrategy"))?,
        )
    } else {
        req.launch_type(LaunchType::Fargate)
    };
    let out = req.send().await.map_err(FargateError::RunTask)?;
    if let Some(arn) = out.tasks().first().and_then(|t| t.task_arn()) {
        return Ok(arn.to_owned());
    }
    // RunTask reports capacity and placement problems as failures of an otherwise successful
    // call: no task exists, so nothing needs stopping.
    let reasons: Vec<String> = out
        .failures()
        .iter()
        .map(|f| {
            let reason = f.reason().unwrap_or("unknown reason");
            match f.detail() {
                Some(d) => format!("{reason} ({d})"),
                None => reason.to_owned(),
            }
        })
        .collect();
    if reasons.is_empty() {
        Err(FargateError::Malformed(
            "RunTask returned neither a task nor a failure",
        ))
    } else {
        Err(FargateError::NotStarted(reasons.join("; ")))
    }
}

/// The task an earlier attempt of this stage started (`startedBy` = `name`), running or not.
pub async fn find_existing(
    ecs: &aws_sdk_ecs::Client,
    cluster: &str,
    name: &str,
) -> Result<Option<String>, FargateError> {
    // Running first: it is the one worth attaching to if both exist.
    for status in [DesiredStatus::Running, DesiredStatus::Stopped] {
        let out = ecs
            .list_tasks()
            .cluster(cluster)
            .started_by(name)
            .desired_status(status)
            .send()
            .await
            .map_err(FargateError::ListTasks)?;
        if let Some(arn) = out.task_arns().first() {
            return Ok(Some(arn.clone()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_carry_only_locations() {
        let loc = StagingLocation::new("bucket", "pre", 7, 42);
        let paths = TaskPaths::new(Path::new("/srv/builds"), 42);
        assert_eq!(paths.channel, Path::new("/srv/builds/.sme/42"));
        let c = Commands::new(&loc, &paths, "eu-west-1", true, None);
        let encrypted = Commands::new(&loc, &paths, "eu-west-1", false, Some("alias/ci"));
        assert!(
            encrypted
                .push
                .ends_with(&["--kms-key-id".to_owned(), "alias/ci".to_owned()]),
            "{:?}",
            encrypted.push
        );
        assert_eq!(
            c.fetch,
            [
                "workspace",
                "fetch",
                "--bucket",
                "bucket",
                "--prefix",
                "pre/7/42/",
                "--object",
                "workspace.tar.gz",
                "--object",
                "script",
                "--object",
                "bootstrap.sh",
                "--object",
                "job.env",
                "--dest",
                "/srv/builds/.sme/42",
                "--volume-root",
                "/srv/builds",
                "--region",
                "eu-west-1",
                "--path-style"
            ]
        );
        assert_eq!(
            c.job,
            ["/srv/builds/.sme/42/bootstrap.sh", "/srv/builds/.sme/42"]
        );
        assert_eq!(
            c.push,
            [
                "workspace",
                "push",
                "--bucket",
                "bucket",
                "--key",
                "pre/7/42/returned/workspace.tar.gz",
                "--source",
                "/srv/builds/.sme/42/out/workspace.tar.gz",
                "--region",
                "eu-west-1",
                "--path-style"
            ]
        );
        let o = c.overrides();
        let names: Vec<_> = o
            .container_overrides()
            .iter()
            .filter_map(|c| c.name())
            .collect();
        assert_eq!(names, [FETCH, JOB, PUSH]);
        assert!(
            o.container_overrides()
                .iter()
                .all(|c| c.environment().is_empty()),
            "no environment in overrides"
        );
        assert!(
            !Commands::new(&loc, &paths, "eu-west-1", false, None)
                .fetch
                .contains(&"--path-style".to_owned())
        );
    }

    #[test]
    fn the_overrides_stay_under_ecss_8_kib_with_the_longest_names() {
        // A 63-character bucket, a 512-character admin prefix, the largest ids, a 449-character
        // builds root and a long KMS key ARN: beyond any real config, and still under the cap
        // (each path appears in several arguments, so these are what could reach it).
        let loc = StagingLocation::unguessable(
            "b".repeat(63),
            &"staging/".repeat(64),
            u64::MAX,
            u64::MAX,
        )
        .expect("rng");
        let root = format!("/{}", "builds/".repeat(64));
        let paths = TaskPaths::new(Path::new(&root), u64::MAX);
        let kms = format!("arn:aws:kms:us-east-1:123456789012:key/{}", "k".repeat(64));
        let c = Commands::new(&loc, &paths, "ap-southeast-3", true, Some(&kms));
        // What RunTask sends: each container's name and command as JSON strings.
        let json: usize = [(FETCH, &c.fetch), (JOB, &c.job), (PUSH, &c.push)]
            .iter()
            .map(|(name, command)| {
                name.len() + 40 + command.iter().map(|a| a.len() + 3).sum::<usize>()
            })
            .sum();
        assert!(json < 8192, "{json} bytes of overrides");
    }

    #[tokio::test]
    async fn an_earlier_task_is_found_by_started_by_running_first_then_stopped() {
        use aws_sdk_ecs::operation::list_tasks::ListTasksOutput;
        use aws_smithy_mocks::mock;

        let running = mock!(aws_sdk_ecs::Client::list_tasks)
            .match_requests(|r| {
                r.started_by() == Some("gl-7-42")
                    && r.cluster() == Some("ci")
                    && r.desired_status() == Some(&DesiredStatus::Running)
            })
            .then_output(|| ListTasksOutput::builder().build());
        let stopped = mock!(aws_sdk_ecs::Client::list_tasks)
            .match_requests(|r| r.desired_status() == Some(&DesiredStatus::Stopped))
            .then_output(|| {
                ListTasksOutput::builder()
                    .task_arns("arn:aws:ecs:us-east-1:1:task/ci/t1")
                    .build()
            });
        let ecs = crate::aws::mock::ecs(
            aws_smithy_mocks::RuleMode::Sequential,
            &[&running, &stopped],
        );
        let found = find_existing(&ecs, "ci", "gl-7-42").await.expect("listed");
        assert_eq!(found.as_deref(), Some("arn:aws:ecs:us-east-1:1:task/ci/t1"));

        let none = mock!(aws_sdk_ecs::Client::list_tasks)
            .then_output(|| ListTasksOutput::builder().build());
        let none2 = mock!(aws_sdk_ecs::Client::list_tasks)
            .then_output(|| ListTasksOutput::builder().build());
        let ecs = crate::aws::mock::ecs(aws_smithy_mocks::RuleMode::Sequential, &[&none, &none2]);
        assert_eq!(
            find_existing(&ecs, "ci", "gl-7-42").await.expect("listed"),
            None
        );
    }

    #[tokio::test]
    async fn run_task_failures_are_reported_and_the_request_carries_job_identity() {
        use std::collections::BTreeMap;
        use std::time::Duration;

        use aws_sdk_ecs::operation::run_task::RunTaskOutput;
        use aws_sdk_ecs::types::Failure;
        use aws_smithy_mocks::mock;

        use crate::job::{Job, Variables};
        use crate::settings::Architecture;

        let job = Job {
            id: 42,
            name: "build".into(),
            project_id: 7,
            project_path: "g/p".into(),
            pipeline_id: 3,
            url: "https://gitlab.example.com/g/p/-/jobs/42".into(),
            git_ref: "main".into(),
            sha: "abc".into(),
            ref_protected: false,
            default_branch: None,
            image: Some("alpine:3".into()),
            timeout: Duration::from_secs(60),
            variables: Variables::new(BTreeMap::new()),
        };
        let env = crate::config::FargateEnv {
            cluster: "ci".into(),
            subnets: vec!["subnet-1".into()],
            security_groups: vec!["sg-1".into()],
            assign_public_ip: false,
            execution_role_arn: "arn:aws:iam::1:role/Exec".into(),
            task_role_arn: None,
            log_group: "/g".into(),
            helper_image: "h".into(),
            helper_command: vec!["sagemaker-executor".into()],
            cpu: 256,
            memory: 512,
            stop_grace: Duration::from_secs(30),
        };
        let mut settings = FargateSettings {
            image: "alpine:3".into(),
            cpu: 256,
            memory: 512,
            ephemeral_storage_gb: 21,
            spot: true,
            architecture: Architecture::X86_64,
            task_role_arn: None,
        };
        let loc = StagingLocation::new("b", "p", 7, 42);
        let commands = Commands::new(
            &loc,
            &TaskPaths::new(Path::new("/b"), 42),
            "us-east-1",
            false,
            None,
        );
        let rule = mock!(aws_sdk_ecs::Client::run_task)
            .match_requests(|r| {
                r.started_by() == Some("gl-7-42")
                    && r.client_token() == Some("gl-7-42")
                    && r.launch_type().is_none()
                    && r.capacity_provider_strategy()
                        .first()
                        .map(|c| c.capacity_provider())
                        == Some("FARGATE_SPOT")
                    && r.tags()
                        .iter()
                        .any(|t| t.key() == Some("gitlab:job-id") && t.value() == Some("42"))
            })
            .then_output(|| {
                RunTaskOutput::builder()
                    .failures(
                        Failure::builder()
                            .reason("Capacity is unavailable at this time.")
                            .detail("RESOURCE:FARGATE")
                            .build(),
                    )
                    .build()
            });
        let ecs = crate::aws::mock::ecs(aws_smithy_mocks::RuleMode::Sequential, &[&rule]);
        let err = run_task(
            &ecs,
            &env,
            &settings,
            &job.resource_tags(),
            "td:1",
            "gl-7-42",
            &commands,
        )
        .await
        .expect_err("no task");
        assert_eq!(
            err.to_string(),
            "ECS could not start the Fargate task: Capacity is unavailable at this time. (RESOURCE:FARGATE)"
        );
        assert_eq!(rule.num_calls(), 1);

        settings.spot = false;
        let on_demand = mock!(aws_sdk_ecs::Client::run_task)
            .match_requests(|r| {
                r.launch_type() == Some(&LaunchType::Fargate)
                    && r.capacity_provider_strategy().is_empty()
            })
            .then_output(|| {
                RunTaskOutput::builder()
                    .tasks(
                        aws_sdk_ecs::types::Task::builder()
                            .task_arn("arn:t")
                            .build(),
                    )
                    .build()
            });
        let ecs = crate::aws::mock::ecs(aws_smithy_mocks::RuleMode::Sequential, &[&on_demand]);
        let arn = run_task(
            &ecs,
            &env,
            &settings,
            &job.resource_tags(),
            "td:1",
            "gl-7-42",
            &commands,
        )
        .await
        .expect("started");
        assert_eq!(arn, "arn:t");
    }
}
