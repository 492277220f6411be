//! The new task definition revision: the service's current one with one container's image
//! replaced and everything else copied, so the deploy changes the image and nothing more.
//!
//! DescribeTaskDefinition returns read-only fields too (ARN, revision, status, compatibilities,
//! requiresAttributes, registration times); only the fields RegisterTaskDefinition accepts are
//! copied, all of them, and the unit test fails if one is left out. Elastic Inference
//! accelerators are the exception: AWS retired them and no longer accepts them.

use aws_sdk_ecs::operation::register_task_definition::builders::RegisterTaskDefinitionInputBuilder;
use aws_sdk_ecs::types::{Tag, TaskDefinition};

/// At most this many tags per ECS resource.
const MAX_TAGS: usize = 50;

/// The container to change is not in the task definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerMissing {
    /// The containers the task definition has.
    pub available: Vec<String>,
}

/// What the new revision changes, for the job log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The container's image before.
    pub old_image: String,
    /// Tags left out because ECS allows only 50.
    pub dropped_tags: Vec<String>,
}

/// The RegisterTaskDefinition input for `td` with `container`'s image set to `image`, tagged
/// with `existing` tags (from DescribeTaskDefinition) and `job_tags` (which win on equal keys).
pub fn register_input(
    td: &TaskDefinition,
    existing: &[Tag],
    job_tags: &[(String, String)],
    container: &str,
    image: &str,
) -> Result<(RegisterTaskDefinitionInputBuilder, Change), ContainerMissing> {
    let mut containers = td.container_definitions().to_vec();
    let Some(target) = containers.iter_mut().find(|c| c.name() == Some(container)) else {
        return Err(ContainerMissing {
            available: td
                .container_definitions()
                .iter()
                .filter_map(|c| c.name().map(str::to_owned))
                .collect(),
        });
    };
    let old_image = target.image.replace(image.to_owned()).unwrap_or_default();

    // `aws:` tags are AWS's own and cannot be set by a caller.
    let mut tags: Vec<Tag> = job_tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    for t in existing {
        let key = t.key().unwrap_or_default();
        if !key.starts_with("aws:") && !job_tags.iter().any(|(k, _)| k == key) {
            tags.push(t.clone());
        }
    }
    let dropped_tags = tags
        .iter()
        .skip(MAX_TAGS)
        .filter_map(|t| t.key().map(str::to_owned))
        .collect();
    tags.truncate(MAX_TAGS);

    let input =
        aws_sdk_ecs::operation::register_task_definition::RegisterTaskDefinitionInput::builder()
            .set_family(td.family().map(str::to_owned))
            .set_task_role_arn(td.task_role_arn().map(str::to_owned))
            .set_execution_role_arn(td.execution_role_arn().map(str::to_owned))
            .set_network_mode(td.network_mode().cloned())
            .set_container_definitions(Some(containers))
            .set_volumes(td.volumes.clone())
            .set_placement_constraints(td.placement_constraints.clone())
            .set_requires_compatibilities(td.requires_compatibilities.clone())
            .set_cpu(td.cpu().map(str::to_owned))
            .set_memory(td.memory().map(str::to_owned))
            .set_tags(Some(tags).filter(|t| !t.is_empty()))
            .set_pid_mode(td.pid_mode().cloned())
            .set_ipc_mode(td.ipc_mode().cloned())
            .set_proxy_configuration(td.proxy_configuration().cloned())
            .set_ephemeral_storage(td.ephemeral_storage().cloned())
            .set_runtime_platform(td.runtime_platform().cloned())
            .set_enable_fault_injection(td.enable_fault_injection());
    Ok((
        input,
        Change {
            old_image,
            dropped_tags,
        },
    ))
}

#[cfg(test)]
mod tests {
    use aws_sdk_ecs::types::{
        Compatibility, ContainerDefinition, CpuArchitecture, EphemeralStorage, IpcMode,
        NetworkMode, PidMode, ProxyConfiguration, RuntimePlatform,
        TaskDefinitionPlacementConstraint, TaskDefinitionStatus, Volume,
    };

    use super::*;

    fn full() -> TaskDefinition {
        TaskDefinition::builder()
            .task_definition_arn("arn:aws:ecs:us-east-1:1:task-definition/api:7")
            .family("api")
            .revision(7)
            .status(TaskDefinitionStatus::Active)
            .task_role_arn("arn:aws:iam::1:role/Task")
            .execution_role_arn("arn:aws:iam::1:role/Exec")
            .network_mode(NetworkMode::Awsvpc)
            .container_definitions(
                ContainerDefinition::builder()
                    .name("sidecar")
                    .image("envoy:1")
                    .build(),
            )
            .container_definitions(
                ContainerDefinition::builder()
                    .name("web")
                    .image("web:1")
                    .cpu(128)
                    .build(),
            )
            .volumes(Volume::builder().name("data").build())
            .placement_constraints(
                TaskDefinitionPlacementConstraint::builder()
                    .expression("x")
                    .build(),
            )
            .requires_compatibilities(Compatibility::Fargate)
            .compatibilities(Compatibility::Ec2)
            .cpu("256")
            .memory("512")
            .pid_mode(PidMode::Task)
            .ipc_mode(IpcMode::None)
            .proxy_configuration(
                ProxyConfiguration::builder()
                    .container_name("sidecar")
                    .build()
                    .expect("proxy"),
            )
            .ephemeral_storage(EphemeralStorage::builder().size_in_gib(30).build())
            .runtime_platform(
                RuntimePlatform::builder()
                    .cpu_architecture(CpuArchitecture::Arm64)
                    .build(),
            )
            .enable_fault_injection(true)
            .build()
    }

    #[test]
    fn every_registrable_field_is_copied_and_only_the_image_changes() {
        let td = full();
        let existing = [
            Tag::builder().key("team").value("ml").build(),
            Tag::builder()
                .key("aws:cloudformation:stack")
                .value("s")
                .build(),
        ];
        let job = [
            ("gitlab:job-id".to_owned(), "9".to_owned()),
            ("team".to_owned(), "ci".to_owned()),
        ];
        let (input, change) =
            register_input(&td, &existing, &job, "web", "web:2").expect("container found");
        let i = input.build().expect("input");
        assert_eq!(change.old_image, "web:1");
        assert_eq!(i.family(), Some("api"));
        assert_eq!(i.task_role_arn(), td.task_role_arn());
        assert_eq!(i.execution_role_arn(), td.execution_role_arn());
        assert_eq!(i.network_mode(), td.network_mode());
        assert_eq!(i.volumes(), td.volumes());
        assert_eq!(i.placement_constraints(), td.placement_constraints());
        assert_eq!(i.requires_compatibilities(), td.requires_compatibilities());
        assert_eq!(i.cpu(), td.cpu());
        assert_eq!(i.memory(), td.memory());
        assert_eq!(i.pid_mode(), td.pid_mode());
        assert_eq!(i.ipc_mode(), td.ipc_mode());
        assert_eq!(i.proxy_configuration(), td.proxy_configuration());
        assert_eq!(i.ephemeral_storage(), td.ephemeral_storage());
        assert_eq!(i.runtime_platform(), td.runtime_platform());
        assert_eq!(i.enable_fault_injection(), td.enable_fault_injection());
        let images: Vec<_> = i
            .container_definitions()
            .iter()
            .map(|c| (c.name(), c.image()))
            .collect();
        assert_eq!(
            images,
            [
                (Some("sidecar"), Some("envoy:1")),
                (Some("web"), Some("web:2"))
            ]
        );
        assert_eq!(
            i.container_definitions()[1].cpu(),
            128,
            "the rest of the container is kept"
        );
        let tags: Vec<_> = i
            .tags()
            .iter()
            .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default()))
            .collect();
        assert_eq!(
            tags,
            [("gitlab:job-id", "9"), ("team", "ci")],
            "job tags win, aws: tags are not settable"
        );
    }

    #[test]
    fn a_missing_container_names_the_ones_there_are() {
        let err = register_input(&full(), &[], &[], "api", "x").expect_err("no such container");
        assert_eq!(err.available, ["sidecar", "web"]);
    }

    #[test]
    fn tags_over_the_limit_are_reported() {
        let existing: Vec<_> = (0..60)
            .map(|i| Tag::builder().key(format!("k{i}")).value("v").build())
            .collect();
        let (input, change) = register_input(&full(), &existing, &[], "web", "x").expect("found");
        assert_eq!(input.build().expect("input").tags().len(), MAX_TAGS);
        assert_eq!(change.dropped_tags.len(), 10);
    }
}
