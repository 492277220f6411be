//! End-to-end tests of the `ecs-deploy` action: jobs run through the runner emulator and the
//! real executor against the AWS simulator, whose ECS services really move deployments from
//! IN_PROGRESS to COMPLETED, or roll them back through the circuit breaker.

#![allow(
    clippy::unwrap_used,
    reason = "an integration test reports failure by panicking"
)]

use std::time::Duration;

use aws_sdk_ecs::types::{
    AwsVpcConfiguration, Compatibility, ContainerDefinition, DeploymentCircuitBreaker,
    DeploymentConfiguration, LaunchType, NetworkConfiguration, NetworkMode, Tag,
};
use e2e::harness::{POLICY, World, assert_outcome};
use e2e::runner::{JobOutcome, StopAction};

const CLUSTER: &str = "prod";
const SERVICE: &str = "api";
const OLD_IMAGE: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/web:1";
const NEW_IMAGE: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/web:2";

/// A world whose policy allows deploying `web:*` to service `api` of cluster `prod`, with that
/// service running task definition `api:1` (containers `envoy` and `web`) behind a circuit
/// breaker with rollback.
fn deploy_world() -> World {
    let policy = format!(
        "{POLICY}[policy.ecs_deploy]\nclusters = [\"{CLUSTER}\"]\nservices = [\"{SERVICE}\"]\nimages = [\"123456789012.dkr.ecr.us-east-1.amazonaws.com/web:*\"]\n"
    );
    let w = World::new(&policy);
    let net = w.sim.default_network().unwrap();
    w.rt.block_on(async {
        w.ecs
            .create_cluster()
            .cluster_name(CLUSTER)
            .send()
            .await
            .unwrap();
        w.ecs
            .register_task_definition()
            .family(SERVICE)
            .network_mode(NetworkMode::Awsvpc)
            .requires_compatibilities(Compatibility::Fargate)
            .cpu("256")
            .memory("512")
            .container_definitions(
                ContainerDefinition::builder()
                    .name("envoy")
                    .image("envoyproxy/envoy:v1.31")
                    .build(),
            )
            .container_definitions(
                ContainerDefinition::builder()
                    .name("web")
                    .image(OLD_IMAGE)
                    .build(),
            )
            .tags(Tag::builder().key("team").value("payments").build())
            .send()
            .await
            .unwrap();
        w.ecs
            .create_service()
            .cluster(CLUSTER)
            .service_name(SERVICE)
            .task_definition(SERVICE)
            .desired_count(2)
            .launch_type(LaunchType::Fargate)
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(
                        AwsVpcConfiguration::builder()
                            .set_subnets(Some(net.subnets.clone()))
                            // moto needs them (AWS would default to the VPC's group).
                            .set_security_groups(Some(net.security_groups.clone()))
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .deployment_configuration(
                DeploymentConfiguration::builder()
                    .deployment_circuit_breaker(
                        DeploymentCircuitBreaker::builder()
                            .enable(true)
                            .rollback(true)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
    });
    w
}

fn job(container: &str) -> String {
    format!(
        "name: deploy-api\nprotected: true\nvariables:\n  SAGEMAKER_ACTION: ecs-deploy\n  ECS_CLUSTER: {CLUSTER}\n  ECS_SERVICE: {SERVICE}\n  ECS_CONTAINER: {container}\n  ECS_IMAGE: {NEW_IMAGE}\nscript:\n  - echo SHOULD-NOT-RUN\nsource:\n  README.md: \"service repo\\n\"\nartifacts:\n  reports: {{dotenv: sagemaker.env}}\n"
    )
}

/// The service's current task definition, as `family:revision`.
fn service_td(w: &World) -> String {
    let out =
        w.rt.block_on(
            w.ecs
                .describe_services()
                .cluster(CLUSTER)
                .services(SERVICE)
                .send(),
        )
        .unwrap();
    let arn = out.services()[0].task_definition().unwrap_or_default();
    arn.rsplit('/').next().unwrap_or(arn).to_owned()
}

#[test]
fn a_completed_rollout_succeeds_and_only_the_image_changed() {
    let w = deploy_world();
    let result = w.runner.run(&w.fixture(&job("web"))).unwrap();
    assert_outcome(&result, JobOutcome::Success);
    let log = result.plain_log();
    assert!(
        log.contains("ecs-deploy: the job's script is not executed"),
        "{log}"
    );
    assert!(!log.contains("SHOULD-NOT-RUN"), "{log}");
    assert!(
        log.contains(&format!(
            "Registered api:2 from api:1: container web {OLD_IMAGE} -> {NEW_IMAGE}"
        )),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("event: ") && l.contains("deployment completed")),
        "service events are printed:\n{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("Deployment ecs-svc/")
            && l.contains("completed: service api runs api:2")),
        "{log}"
    );
    assert_eq!(service_td(&w), "api:2");

    let td =
        w.rt.block_on(
            w.ecs
                .describe_task_definition()
                .task_definition("api:2")
                .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
                .send(),
        )
        .unwrap();
    let images: Vec<_> = td
        .task_definition()
        .unwrap()
        .container_definitions()
        .iter()
        .map(|c| (c.name().unwrap(), c.image().unwrap()))
        .collect();
    assert_eq!(
        images,
        [("envoy", "envoyproxy/envoy:v1.31"), ("web", NEW_IMAGE)]
    );
    let tag = |k: &str| {
        td.tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
            .map(str::to_owned)
    };
    assert_eq!(
        tag("team").as_deref(),
        Some("payments"),
        "existing tags are kept"
    );
    assert_eq!(tag("gitlab:job-id"), Some(result.id.to_string()));

    let dotenv = result.dotenv().expect("dotenv report uploaded");
    let get = |k: &str| result.dotenv_value(k).unwrap_or_default();
    assert!(
        get("SAGEMAKER_ECS_TASK_DEFINITION_ARN").ends_with(":task-definition/api:2"),
        "{dotenv:?}"
    );
    assert!(get("SAGEMAKER_ECS_PREVIOUS_TASK_DEFINITION_ARN").ends_with(":task-definition/api:1"));
    assert!(get("SAGEMAKER_ECS_DEPLOYMENT_ID").starts_with("ecs-svc/"));
}

#[test]
fn a_circuit_breaker_rollback_fails_the_job_with_a_clear_line() {
    let w = deploy_world();
    w.sim
        .post_outcomes(&serde_json::json!({"ecs_service": [{"name_contains": SERVICE, "rollback": true, "rollout_seconds": 2}]}))
        .unwrap();
    let result = w.runner.run(&w.fixture(&job("web"))).unwrap();
    assert_outcome(&result, JobOutcome::Failed { exit_code: 1 });
    let log = result.plain_log();
    let error = log
        .lines()
        .find(|l| l.starts_with("ERROR: deployment ecs-svc/"))
        .unwrap_or_else(|| panic!("no error line in:\n{log}"));
    assert!(
        error.ends_with(
            "of service api failed: ECS deployment circuit breaker: tasks failed to start.; ECS is rolling back to api:1"
        ),
        "{error}"
    );
    // The deployments and their rollout states are shown.
    assert!(log.contains("Service api deployments:"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.trim_start().starts_with("ACTIVE ecs-svc/") && l.contains("api:2: FAILED")),
        "{log}"
    );
    w.eventually("the rollback to finish", Duration::from_secs(30), || {
        service_td(&w) == "api:1"
    });
}

#[test]
fn a_replaced_deployment_fails_the_job_saying_so() {
    let w = deploy_world();
    w.sim
        .post_outcomes(&serde_json::json!({"ecs_service": [{"name_contains": SERVICE, "vanish": true, "rollout_seconds": 2}]}))
        .unwrap();
    let result = w.runner.run(&w.fixture(&job("web"))).unwrap();
    assert_outcome(&result, JobOutcome::Failed { exit_code: 1 });
    let log = result.plain_log();
    assert!(
        log.lines()
            .any(|l| l.starts_with("ERROR: deployment ecs-svc/")
                && l.contains("of service api was replaced by deployment ecs-svc/")
                && l.ends_with("(api:2) before it completed")),
        "{log}"
    );
}

#[test]
fn an_unknown_container_is_refused_naming_ecs_container_and_nothing_is_deployed() {
    let w = deploy_world();
    let result = w.runner.run(&w.fixture(&job("wbe"))).unwrap();
    assert_outcome(&result, JobOutcome::Failed { exit_code: 1 });
    assert!(
        result.plain_log().contains(
            "ERROR: ECS_CONTAINER: the task definition api:1 of service api has no container \"wbe\" (it has: envoy, web)"
        ),
        "{}",
        result.plain_log()
    );
    assert_eq!(
        w.count("ECS.RegisterTaskDefinition"),
        1,
        "only the test's own"
    );
    assert_eq!(w.count("ECS.UpdateService"), 0);
}

#[test]
fn cancel_stops_waiting_and_shows_where_the_deployment_stands() {
    let w = deploy_world();
    w.sim
        .post_outcomes(&serde_json::json!({"ecs_service": [{"name_contains": SERVICE, "rollout_seconds": 120}]}))
        .unwrap();
    let result = w.run_stopped_at(
        &w.fixture(&job("web")),
        "build_script",
        "UpdateService started deployment",
        StopAction::Cancel,
    );
    assert_outcome(&result, JobOutcome::Canceled);
    let log = result.plain_log();
    assert!(
        log.contains("Job cancelled: stopped waiting for deployment ecs-svc/"),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.trim_start().starts_with("PRIMARY ecs-svc/")
                && l.contains("api:2: IN_PROGRESS")),
        "{log}"
    );
    let build = result.stage("build_script").unwrap();
    assert!(!build.was_sent("SIGKILL"), "{:?}", build.signals);
}

#[test]
fn with_a_state_change_queue_the_rollout_is_followed_by_its_deployment_events() {
    let w = deploy_world();
    let url = w.event_queue();
    let config = std::fs::read_to_string(&w.config_path).unwrap();
    // A safety interval far above the rollout: only an event can end the wait soon.
    w.write_config(&format!(
        "{config}\n[watch]\nqueue_url = \"{url}\"\nsafety_interval = \"5m\"\n"
    ))
    .unwrap();
    let result = w.runner.run(&w.fixture(&job("web"))).unwrap();
    assert_outcome(&result, JobOutcome::Success);
    let log = result.plain_log();
    assert!(!log.contains("polling instead"), "{log}");
    assert!(
        log.lines().any(|l| l.contains("Deployment ecs-svc/")
            && l.contains("completed: service api runs api:2")),
        "{log}"
    );
    assert_eq!(service_td(&w), "api:2");
    // The completion event woke the wait: its last DescribeServices came right after the event
    // reached the queue, not a safety interval later.
    let calls = w.sim.calls_json().unwrap();
    let completed = calls
        .iter()
        .filter(|c| c["op"] == "SQS.DeleteMessage")
        .filter_map(|c| c["t"].as_f64())
        .fold(f64::MIN, f64::max);
    let last_describe = calls
        .iter()
        .filter(|c| c["op"] == "ECS.DescribeServices")
        .filter_map(|c| c["t"].as_f64())
        .fold(f64::MIN, f64::max);
    assert!(completed > 0.0, "no event was consumed: {calls:?}");
    assert!(
        last_describe - completed < 10.0,
        "the last describe came {:.0} s after the last event",
        last_describe - completed
    );
}
