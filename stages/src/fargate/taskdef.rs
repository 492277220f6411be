//! The task definition a Fargate job runs, and its reuse by content hash.
//!
//! Three containers share one task volume, `workspace`, mounted at the runner's builds root in
//! every container, so the job sees its project at the same absolute path as on the runner host:
//!
//! ```text
//! fetch (helper image, essential=false)   downloads the staged prefix into <builds_root>/.sme/<job>/
//!   └─SUCCESS─> job (job image, essential=false)   /bin/sh bootstrap.sh <channel dir>
//!                 └─COMPLETE─> push (helper image, essential=true)   uploads out/workspace.tar.gz
//! ```
//!
//! `push` is the essential one because ECS never starts a container that waits on COMPLETE once
//! an essential container has exited; the job's own exit code is read from its container.
//!
//! The job container runs as its image's USER, whatever that is: `fetch` (root in the helper
//! image) opens the root-owned volume to every user first (see `helper`), so nothing here needs
//! to know the user.
//!
//! Nothing per job is in here: bucket, prefix and paths arrive in RunTask's container overrides
//! (see `submit`), and no job variable or secret is ever part of a task definition. So one task
//! definition serves every job with the same image and size: its family is `sme-` plus a hash of
//! everything that varies ([`TaskDefSpec`]), the latest ACTIVE revision is reused, and
//! RegisterTaskDefinition (about one call per second per account) is called only for a new shape.

use std::collections::HashMap;
use std::path::Path;

use aws_sdk_ecs::types::{
    Compatibility, ContainerCondition, ContainerDefinition, ContainerDependency, CpuArchitecture,
    EphemeralStorage, LogConfiguration, LogDriver, MountPoint, NetworkMode, OsFamily,
    RuntimePlatform, Tag, TaskDefinition, TaskDefinitionStatus, Volume,
};
use aws_smithy_types::error::operation::BuildError;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::FargateError;
use crate::aws::errors;
use crate::config::FargateEnv;
use crate::joblog::JobLog;
use crate::settings::FargateSettings;

/// Every family this executor registers starts with this (`gc` lists them by it).
pub const FAMILY_PREFIX: &str = "sme-";
/// The helper container that downloads the staged workspace.
pub const FETCH: &str = "fetch";
/// The container running the job's image and script.
pub const JOB: &str = "job";
/// The helper container that uploads the returned workspace.
pub const PUSH: &str = "push";
/// The task volume shared by the three containers.
pub const VOLUME: &str = "workspace";
/// awslogs stream prefix: streams are `sme/<container>/<task-id>`.
pub const STREAM_PREFIX: &str = "sme";
/// Bumped whenever [`TaskDefSpec::containers`] renders differently for the same inputs, so a
/// changed layout gets a new family instead of reusing an old revision.
const RENDER_VERSION: u32 = 1;

/// Everything that varies between the task definitions this executor registers. Its hash names
/// the family, so two jobs with equal specs share one task definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskDefSpec {
    /// [`RENDER_VERSION`].
    pub render_version: u32,
    /// The job container's image.
    pub image: String,
    /// Task CPU units.
    pub cpu: u32,
    /// Task memory in MiB.
    pub memory: u32,
    /// Ephemeral storage in GiB.
    pub ephemeral_storage_gb: u32,
    /// `X86_64` or `ARM64`.
    pub architecture: &'static str,
    /// The task role, if any.
    pub task_role_arn: Option<String>,
    /// The execution role (image pulls, awslogs).
    pub execution_role_arn: String,
    /// awslogs group.
    pub log_group: String,
    /// awslogs region.
    pub region: String,
    /// Image of the fetch and push containers.
    pub helper_image: String,
    /// Entry point of the helper containers (the executor binary in the helper image).
    pub helper_command: Vec<String>,
    /// Where the task volume is mounted: the runner's builds root.
    pub builds_root: String,
}

impl TaskDefSpec {
    /// The spec of a job with settings `f` on a runner with `env`.
    pub fn new(f: &FargateSettings, env: &FargateEnv, region: &str, builds_root: &Path) -> Self {
        TaskDefSpec {
            render_version: RENDER_VERSION,
            image: f.image.clone(),
            cpu: f.cpu,
            memory: f.memory,
            ephemeral_storage_gb: f.ephemeral_storage_gb,
            architecture: f.architecture.as_ecs(),
            task_role_arn: f.task_role_arn.clone(),
            execution_role_arn: env.execution_role_arn.clone(),
            log_group: env.log_group.clone(),
            region: region.to_owned(),
            helper_image: env.helper_image.clone(),
            helper_command: env.helper_command.clone(),
            // The config loader only accepts absolute paths read from TOML text, so this is
            // already UTF-8; lossy conversion cannot change it.
            builds_root: builds_root.to_string_lossy().into_owned(),
        }
    }

    /// `sme-` plus the first 12 hex digits of the SHA-256 of the spec's JSON (fields in
    /// declaration order, so the text is stable).
    pub fn family(&self) -> String {
        // Serializing plain strings and numbers cannot fail; an empty input would only make every
        // spec share one family, which `matches` then catches.
        let json = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(&json);
        let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        format!("{FAMILY_PREFIX}{hex}")
    }

    fn log_configuration(&self) -> Result<LogConfiguration, BuildError> {
        let options = HashMap::from([
            ("awslogs-group".to_owned(), self.log_group.clone()),
            ("awslogs-region".to_owned(), self.region.clone()),
            ("awslogs-stream-prefix".to_owned(), STREAM_PREFIX.to_owned()),
        ]);
        LogConfiguration::builder()
            .log_driver(LogDriver::Awslogs)
            .set_options(Some(options))
            .build()
    }

    fn mount(&self) -> MountPoint {
        MountPoint::builder()
            .source_volume(VOLUME)
            .container_path(&self.builds_root)
            .read_only(false)
            .build()
    }

    /// The three container definitions. Their commands are left empty: RunTask supplies them.
    pub fn containers(&self) -> Result<Vec<ContainerDefinition>, BuildError> {
        let logs = self.log_configuration()?;
        let fetch = ContainerDefinition::builder()
            .name(FETCH)
            .image(&self.helper_image)
            .essential(false)
            .set_entry_point(Some(self.helper_command.clone()))
            .mount_points(self.mount())
            .log_configuration(logs.clone())
            .build();
        let job = ContainerDefinition::builder()
            .name(JOB)
            .image(&self.image)
            .essential(false)
            // The bootstrap needs only sh, tar and gzip; the image's own entry point would get in
            // the way of running the runner's script.
            .entry_point("/bin/sh")
            .depends_on(
                ContainerDependency::builder()
                    .container_name(FETCH)
                    .condition(ContainerCondition::Success)
                    .build()?,
            )
            .mount_points(self.mount())
            .log_configuration(logs.clone())
            .build();
        let push = ContainerDefinition::builder()
            .name(PUSH)
            .image(&self.helper_image)
            .essential(true)
            .set_entry_point(Some(self.helper_command.clone()))
            .depends_on(
                ContainerDependency::builder()
                    .container_name(JOB)
                    .condition(ContainerCondition::Complete)
                    .build()?,
            )
            .mount_points(self.mount())
            .log_configuration(logs)
            .build();
        Ok(vec![fetch, job, push])
    }

    /// Whether an existing revision of this spec's family has the shape this spec renders, as a
    /// guard against a hand-registered revision in our namespace.
    pub fn matches(&self, td: &TaskDefinition) -> bool {
        let image_of = |name: &str| {
            td.container_definitions()
                .iter()
                .find(|c| c.name() == Some(name))
                .and_then(|c| c.image())
        };
        td.status() == Some(&TaskDefinitionStatus::Active)
            && image_of(JOB) == Some(self.image.as_str())
            && image_of(FETCH) == Some(self.helper_image.as_str())
            && image_of(PUSH) == Some(self.helper_image.as_str())
            && td.cpu() == Some(self.cpu.to_string().as_str())
            && td.memory() == Some(self.memory.to_string().as_str())
    }
}

/// The ARN of a task definition for `spec`: the family's latest ACTIVE revision when it matches,
/// else a newly registered one.
pub async fn ensure(
    ecs: &aws_sdk_ecs::Client,
    spec: &TaskDefSpec,
    log: &JobLog,
) -> Result<String, FargateError> {
    let family = spec.family();
    match ecs
        .describe_task_definition()
        .task_definition(&family)
        .send()
        .await
    {
        Ok(out) => {
            if let Some(td) = out.task_definition().filter(|td| spec.matches(td))
                && let Some(arn) = td.task_definition_arn()
            {
                log.line(&format!(
                    "Reusing task definition {family}:{}",
                    td.revision()
                ));
                return Ok(arn.to_owned());
            }
        }
        // ECS answers ClientException "Unable to describe task definition" for an unknown family.
        Err(e) if errors::code(&e) == Some("ClientException") => {}
        Err(source) => return Err(FargateError::DescribeTaskDefinition { family, source }),
    }
    let containers = spec.containers().map_err(|source| FargateError::Request {
        what: "RegisterTaskDefinition",
        source,
    })?;
    let mut req = ecs
        .register_task_definition()
        .family(&family)
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu(spec.cpu.to_string())
        .memory(spec.memory.to_string())
        .execution_role_arn(&spec.execution_role_arn)
        .set_task_role_arn(spec.task_role_arn.clone())
        .runtime_platform(
            RuntimePlatform::builder()
                .cpu_architecture(CpuArchitecture::from(spec.architecture))
                .operating_system_family(OsFamily::Linux)
                .build(),
        )
        .set_container_definitions(Some(containers))
        .volumes(Volume::builder().name(VOLUME).build())
        // Shared by every job of this shape, so only the managed-by tag: job tags go on tasks.
        .tags(
            Tag::builder()
                .key("managed-by")
                .value(crate::MANAGED_BY)
                .build(),
        );
    // Fargate's default is 20 GiB and it accepts 21-200 explicitly.
    if spec.ephemeral_storage_gb > 20 {
        req = req.ephemeral_storage(
            EphemeralStorage::builder()
                .size_in_gib(i32::try_from(spec.ephemeral_storage_gb).unwrap_or(200))
                .build(),
        );
    }
    let out = req
        .send()
        .await
        .map_err(|source| FargateError::RegisterTaskDefinition {
            family: family.clone(),
            source,
        })?;
    let td = out.task_definition();
    let arn = td.and_then(|td| td.task_definition_arn()).ok_or_else(|| {
        FargateError::Malformed("RegisterTaskDefinition returned no taskDefinitionArn")
    })?;
    log.line(&format!(
        "Registered task definition {family}:{}",
        td.map(|td| td.revision()).unwrap_or_default()
    ));
    Ok(arn.to_owned())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::settings::Architecture;

    fn env() -> FargateEnv {
        FargateEnv {
            cluster: "ci".into(),
            subnets: vec!["subnet-1".into()],
            security_groups: vec!["sg-1".into()],
            assign_public_ip: false,
            execution_role_arn: "arn:aws:iam::123456789012:role/Exec".into(),
            task_role_arn: None,
            log_group: "/sme/fargate".into(),
            helper_image: "helper:1".into(),
            helper_command: vec!["sagemaker-executor".into()],
            cpu: 1024,
            memory: 2048,
            stop_grace: Duration::from_secs(30),
        }
    }

    fn settings(image: &str) -> FargateSettings {
        FargateSettings {
            image: image.into(),
            cpu: 512,
            memory: 1024,
            ephemeral_storage_gb: 21,
            spot: false,
            architecture: Architecture::X86_64,
            task_role_arn: None,
        }
    }

    fn spec(image: &str) -> TaskDefSpec {
        TaskDefSpec::new(
            &settings(image),
            &env(),
            "us-east-1",
            Path::new("/srv/builds"),
        )
    }

    #[test]
    fn the_family_is_a_stable_hash_of_what_varies() {
        let a = spec("python:3.12");
        assert_eq!(
            a.family(),
            spec("python:3.12").family(),
            "same inputs, same family"
        );
        assert!(
            a.family().starts_with("sme-") && a.family().len() == 16,
            "{}",
            a.family()
        );
        assert!(a.family()[4..].bytes().all(|b| b.is_ascii_hexdigit()));
        // Pinned: a change here means every runner registers new task definitions, so it must
        // come with a RENDER_VERSION bump or a deliberate field change.
        assert_eq!(a.family(), "sme-2dc014cafa47");

        let mut others = vec![spec("python:3.13")];
        let mut s = spec("python:3.12");
        s.memory = 2048;
        others.push(s);
        let mut s = spec("python:3.12");
        s.architecture = Architecture::Arm64.as_ecs();
        others.push(s);
        let mut s = spec("python:3.12");
        s.task_role_arn = Some("arn:aws:iam::123456789012:role/Task".into());
        others.push(s);
        let mut s = spec("python:3.12");
        s.builds_root = "/other".into();
        others.push(s);
        let mut s = spec("python:3.12");
        s.helper_command = vec!["/opt/sme".into()];
        others.push(s);
        for o in &others {
            assert_ne!(o.family(), a.family(), "{o:?} must not share a family");
        }
        // Spot is a RunTask choice, not part of the task definition.
        let mut spot = settings("python:3.12");
        spot.spot = true;
        assert_eq!(
            TaskDefSpec::new(&spot, &env(), "us-east-1", Path::new("/srv/builds")).family(),
            a.family()
        );
    }

    #[test]
    fn containers_share_the_volume_and_order_fetch_job_push() {
        let s = spec("python:3.12");
        let c = s.containers().expect("renders");
        let names: Vec<_> = c.iter().filter_map(|c| c.name()).collect();
        assert_eq!(names, [FETCH, JOB, PUSH]);
        for def in &c {
            let m = def.mount_points();
            assert_eq!(m.len(), 1);
            assert_eq!(m[0].source_volume(), Some(VOLUME));
            assert_eq!(m[0].container_path(), Some("/srv/builds"));
            let logs = def.log_configuration().expect("awslogs");
            assert_eq!(logs.log_driver(), &LogDriver::Awslogs);
            assert_eq!(
                logs.options()
                    .and_then(|o| o.get("awslogs-stream-prefix"))
                    .map(String::as_str),
                Some(STREAM_PREFIX)
            );
            // Per-job values come from RunTask overrides only.
            assert!(
                def.command().is_empty()
                    && def.environment().is_empty()
                    && def.secrets().is_empty()
            );
        }
        assert_eq!(c[0].image(), Some("helper:1"));
        assert_eq!(c[0].entry_point(), ["sagemaker-executor"]);
        assert_eq!(c[0].essential(), Some(false));
        assert_eq!(c[1].image(), Some("python:3.12"));
        assert_eq!(c[1].entry_point(), ["/bin/sh"]);
        assert_eq!(c[1].essential(), Some(false));
        assert_eq!(c[1].depends_on()[0].container_name(), FETCH);
        assert_eq!(
            c[1].depends_on()[0].condition(),
            &ContainerCondition::Success
        );
        assert_eq!(
            c[2].essential(),
            Some(true),
            "push must be essential, see the module docs"
        );
        assert_eq!(c[2].depends_on()[0].container_name(), JOB);
        assert_eq!(
            c[2].depends_on()[0].condition(),
            &ContainerCondition::Complete
        );
    }

    #[test]
    fn an_existing_revision_is_reused_only_when_it_has_our_shape() {
        let s = spec("python:3.12");
        let td = |image: &str, status: TaskDefinitionStatus| {
            let mut containers = s.containers().expect("renders");
            containers[1].image = Some(image.to_owned());
            TaskDefinition::builder()
                .set_container_definitions(Some(containers))
                .cpu("512")
                .memory("1024")
                .status(status)
                .build()
        };
        assert!(s.matches(&td("python:3.12", TaskDefinitionStatus::Active)));
        assert!(!s.matches(&td("python:3.13", TaskDefinitionStatus::Active)));
        assert!(!s.matches(&td("python:3.12", TaskDefinitionStatus::Inactive)));
    }

    fn joblog() -> JobLog {
        JobLog::new()
    }

    #[tokio::test]
    async fn the_latest_active_revision_is_reused_without_registering() {
        use aws_sdk_ecs::operation::describe_task_definition::DescribeTaskDefinitionOutput;
        use aws_smithy_mocks::mock;

        let s = spec("python:3.12");
        let family = s.family();
        let existing = TaskDefinition::builder()
            .task_definition_arn(format!(
                "arn:aws:ecs:us-east-1:1:task-definition/{family}:3"
            ))
            .revision(3)
            .set_container_definitions(Some(s.containers().expect("renders")))
            .cpu("512")
            .memory("1024")
            .status(TaskDefinitionStatus::Active)
            .build();
        let wanted = family.clone();
        let describe = mock!(aws_sdk_ecs::Client::describe_task_definition)
            .match_requests(move |r| r.task_definition() == Some(wanted.as_str()))
            .then_output(move || {
                DescribeTaskDefinitionOutput::builder()
                    .task_definition(existing.clone())
                    .build()
            });
        // No RegisterTaskDefinition rule: registering would fail the test.
        let ecs = crate::aws::mock::ecs(aws_smithy_mocks::RuleMode::Sequential, &[&describe]);
        let arn = ensure(&ecs, &s, &joblog()).await.expect("reused");
        assert!(arn.ends_with(&format!("{family}:3")), "{arn}");
        assert_eq!(describe.num_calls(), 1);
    }

    #[tokio::test]
    async fn an_unknown_family_is_registered_with_the_rendered_containers() {
        use aws_sdk_ecs::error::ErrorMetadata;
        use aws_sdk_ecs::operation::describe_task_definition::DescribeTaskDefinitionError;
        use aws_sdk_ecs::operation::register_task_definition::RegisterTaskDefinitionOutput;
        use aws_smithy_mocks::mock;

        let s = spec("python:3.12");
        let family = s.family();
        let describe = mock!(aws_sdk_ecs::Client::describe_task_definition).then_error(|| {
            DescribeTaskDefinitionError::generic(
                ErrorMetadata::builder()
                    .code("ClientException")
                    .message("Unable to describe task definition.")
                    .build(),
            )
        });
        let f = family.clone();
        let register = mock!(aws_sdk_ecs::Client::register_task_definition)
            .match_requests(move |r| {
                r.family() == Some(f.as_str())
                    && r.cpu() == Some("512")
                    && r.memory() == Some("1024")
                    && r.network_mode() == Some(&NetworkMode::Awsvpc)
                    && r.requires_compatibilities() == [Compatibility::Fargate]
                    && r.volumes().len() == 1
                    && r.container_definitions().len() == 3
                    && r.tags().iter().any(|t| t.key() == Some("managed-by"))
                    // 21 GiB is asked for explicitly (Fargate's default is 20).
                    && r.ephemeral_storage().map(|e| e.size_in_gib()) == Some(21)
            })
            .then_output(move || {
                RegisterTaskDefinitionOutput::builder()
                    .task_definition(
                        TaskDefinition::builder()
                            .task_definition_arn("arn:aws:ecs:us-east-1:1:task-definition/x:1")
                            .revision(1)
                            .build(),
                    )
                    .build()
            });
        let ecs = crate::aws::mock::ecs(
            aws_smithy_mocks::RuleMode::Sequential,
            &[&describe, &register],
        );
        let arn = ensure(&ecs, &s, &joblog()).await.expect("registered");
        assert!(arn.ends_with("x:1"));
        assert_eq!(register.num_calls(), 1);
    }
}
