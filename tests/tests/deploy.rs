//! End-to-end tests of the `deploy` and `undeploy` actions: jobs run through the runner
//! emulator and the real executor against the AWS simulator, whose endpoints really serve the
//! model: the "image" is a small Python stdlib HTTP server (from the harness) that answers from a
//! file in the model archive, so a smoke test passes only when the deployed model answers.

#![allow(
    clippy::unwrap_used,
    reason = "an integration test reports failure by panicking"
)]

use std::time::Duration;

use aws_sdk_sagemaker::types::ModelApprovalStatus;
use e2e::harness::{REGION, World, assert_outcome};
use e2e::runner::{JobOutcome, JobResult, StopAction};
use serde_json::json;

const GROUP: &str = "churn";

/// Deploy and undeploy allowed everywhere, `churn-*` endpoints, `*-stable` ones stable.
fn policy() -> String {
    r#"[policy]
allowed_actions = ["deploy", "undeploy"]
protected_ref_actions = []

[policy.deploy]
endpoints = ["churn-*"]
stable_endpoints = ["*-stable"]
instance_types = ["ml.m5.*"]
max_instance_count = 2
"#
    .to_owned()
}

/// A world whose simulator knows the serving image, with the model package group created.
fn deploy_world() -> World {
    let w = World::new(&policy());
    w.serve_image(GROUP);
    w
}

/// Uploads a model archive whose `answer.txt` says `answer` and registers it as a new
/// version of the group with `status`; returns its ARN.
fn register(w: &World, answer: &str, status: ModelApprovalStatus) -> String {
    let model = w.upload_model(answer);
    w.register_serving(GROUP, &model, status)
}

/// A deploy (or undeploy) job on `git_ref` with `vars`, a smoke request file in the repository.
fn job(name: &str, git_ref: &str, protected: bool, vars: &[(&str, &str)]) -> String {
    let mut y = format!(
        "name: {name}\nref: {git_ref}\nprotected: {protected}\nproject: {{path: ml/churn}}\nvariables:\n"
    );
    for (k, v) in vars {
        y.push_str(&format!("  {k}: {}\n", serde_json::to_string(v).unwrap()));
    }
    y.push_str(
        "script:\n  - echo SHOULD-NOT-RUN\nsource:\n  smoke.json: \"{\\\"rows\\\": [[1, 2, 3]]}\\n\"\nartifacts:\n  reports: {dotenv: sagemaker.env}\n",
    );
    y
}

fn run(w: &World, yaml: &str) -> JobResult {
    w.runner.run(&w.fixture(yaml)).unwrap()
}

/// The config the endpoint serves, and its status.
fn endpoint_state(w: &World, name: &str) -> (String, String) {
    let d =
        w.rt.block_on(w.sagemaker.describe_endpoint().endpoint_name(name).send())
            .unwrap();
    (
        d.endpoint_config_name().unwrap_or_default().to_owned(),
        d.endpoint_status()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
    )
}

/// Sends a CloudWatch Query API request to the simulator (the harness has no CloudWatch
/// client; moto routes on the signing scope's service).
fn cloudwatch(w: &World, params: &[(&str, &str)]) {
    let body: String = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let (host, port) = w.sim.address();
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential=testing/20250101/{REGION}/monitoring/aws4_request, SignedHeaders=host, Signature=0"
    );
    let (status, answer) = e2e::sim::http_request_with_headers(
        host,
        port,
        "POST",
        "/",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", &auth),
            ("X-Amz-Date", "20250101T000000Z"),
        ],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
}

/// The names of the endpoint configs and models whose name contains `prefix`.
fn configs_and_models(w: &World, prefix: &str) -> (Vec<String>, Vec<String>) {
    let configs =
        w.rt.block_on(
            w.sagemaker
                .list_endpoint_configs()
                .name_contains(prefix)
                .send(),
        )
        .unwrap();
    let models =
        w.rt.block_on(w.sagemaker.list_models().name_contains(prefix).send())
            .unwrap();
    (
        configs
            .endpoint_configs()
            .iter()
            .filter_map(|c| c.endpoint_config_name().map(str::to_owned))
            .filter(|n| n.contains(prefix))
            .collect(),
        models
            .models()
            .iter()
            .filter_map(|m| m.model_name().map(str::to_owned))
            .filter(|n| n.contains(prefix))
            .collect(),
    )
}

/// Whether `op` creates something of a deployment (the test itself creates packages).
fn created_for_endpoints(op: &str) -> bool {
    [
        "SageMaker.CreateModel",
        "SageMaker.CreateEndpointConfig",
        "SageMaker.CreateEndpoint",
    ]
    .contains(&op)
}

#[test]
fn stable_endpoint_deploys_updates_with_a_canary_and_rolls_back_failures() {
    let w = deploy_world();
    let v1 = register(&w, "v1", ModelApprovalStatus::Approved);
    let endpoint = "churn-stable";

    // First deployment: the newest Approved version of the group, answering the smoke test.
    let first = run(
        &w,
        &job(
            "deploy-stable",
            "main",
            true,
            &[
                ("SAGEMAKER_ACTION", "deploy"),
                ("SAGEMAKER_MODEL_PACKAGE_GROUP", GROUP),
                ("SAGEMAKER_SMOKE_REQUEST", "smoke.json"),
                ("SAGEMAKER_SMOKE_EXPECT", "\"answer\": \"v1\""),
            ],
        ),
    );
    assert_outcome(&first, JobOutcome::Success);
    let log = first.plain_log();
    assert!(!log.contains("SHOULD-NOT-RUN"), "{log}");
    assert!(
        log.contains(&format!("Model package: {v1} (Approved")),
        "{log}"
    );
    assert!(log.contains("First deployment of churn-stable"), "{log}");
    assert!(log.contains("Smoke test passed: answered 200"), "{log}");
    assert_eq!(
        first.dotenv_value("SAGEMAKER_ENDPOINT_NAME").as_deref(),
        Some(endpoint)
    );
    let first_config = first
        .dotenv_value("SAGEMAKER_ENDPOINT_CONFIG_NAME")
        .unwrap();
    assert!(
        first
            .dotenv_value("SAGEMAKER_ENDPOINT_URL")
            .unwrap()
            .contains("#/endpoints/churn-stable"),
        "{log}"
    );
    assert_eq!(
        endpoint_state(&w, endpoint),
        (first_config.clone(), "InService".to_owned())
    );

    // An update with a canary: the log shows the traffic shift, v2 answers.
    let v2 = register(&w, "v2", ModelApprovalStatus::Approved);
    let second = run(
        &w,
        &job(
            "deploy-stable",
            "main",
            true,
            &[
                ("SAGEMAKER_ACTION", "deploy"),
                ("SAGEMAKER_MODEL_PACKAGE", &v2),
                ("SAGEMAKER_STRATEGY", "canary:50:4s"),
                ("SAGEMAKER_SMOKE_REQUEST", "smoke.json"),
                ("SAGEMAKER_SMOKE_EXPECT", "\"answer\": \"v2\""),
            ],
        ),
    );
    assert_outcome(&second, JobOutcome::Success);
    let log = second.plain_log();
    assert!(
        log.contains(&format!(
            "Update of churn-stable from config {first_config}"
        )),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("Baking") && l.contains("50% of traffic on the new fleet")),
        "the traffic shift is shown:\n{log}"
    );
    assert!(log.contains("Smoke test passed"), "{log}");
    let second_config = second
        .dotenv_value("SAGEMAKER_ENDPOINT_CONFIG_NAME")
        .unwrap();
    assert_eq!(
        second
            .dotenv_value("SAGEMAKER_ENDPOINT_PREVIOUS_CONFIG_NAME")
            .as_deref(),
        Some(first_config.as_str())
    );
    assert_eq!(endpoint_state(&w, endpoint).0, second_config);

    // An alarm in ALARM during the bake: SageMaker rolls back, the job fails and says why.
    cloudwatch(
        &w,
        &[
            ("Action", "PutMetricAlarm"),
            ("Version", "2010-08-01"),
            ("AlarmName", "churn-errors"),
            ("MetricName", "Invocation5XXErrors"),
            ("Namespace", "AWS/SageMaker"),
            ("Statistic", "Sum"),
            ("Period", "60"),
            ("EvaluationPeriods", "1"),
            ("Threshold", "1"),
            ("ComparisonOperator", "GreaterThanOrEqualToThreshold"),
        ],
    );
    cloudwatch(
        &w,
        &[
            ("Action", "SetAlarmState"),
            ("Version", "2010-08-01"),
            ("AlarmName", "churn-errors"),
            ("StateValue", "ALARM"),
            ("StateReason", "test"),
        ],
    );
    let v3 = register(&w, "v3", ModelApprovalStatus::Approved);
    let alarmed = run(
        &w,
        &job(
            "deploy-stable",
            "main",
            true,
            &[
                ("SAGEMAKER_ACTION", "deploy"),
                ("SAGEMAKER_MODEL_PACKAGE", &v3),
                ("SAGEMAKER_STRATEGY", "canary:50:3s"),
                ("SAGEMAKER_ALARMS", "churn-errors"),
            ],
        ),
    );
    assert!(
        matches!(alarmed.outcome, JobOutcome::Failed { .. }),
        "{:?}\n{}",
        alarmed.outcome,
        alarmed.plain_log()
    );
    let log = alarmed.plain_log();
    assert!(
        log.contains("CloudWatch alarms that roll the update back: churn-errors"),
        "{log}"
    );
    assert!(
        log.contains("SageMaker rolled the update of endpoint churn-stable back")
            && log.contains("churn-errors")
            && log.contains(&format!("it serves {second_config} again")),
        "{log}"
    );
    assert_eq!(
        endpoint_state(&w, endpoint),
        (second_config.clone(), "InService".to_owned())
    );
    cloudwatch(
        &w,
        &[
            ("Action", "SetAlarmState"),
            ("Version", "2010-08-01"),
            ("AlarmName", "churn-errors"),
            ("StateValue", "OK"),
            ("StateReason", "test"),
        ],
    );

    // The rollout succeeds but the smoke test fails: the executor returns the endpoint to the
    // config it served before.
    let smoky = run(
        &w,
        &job(
            "deploy-stable",
            "main",
            true,
            &[
                ("SAGEMAKER_ACTION", "deploy"),
                ("SAGEMAKER_MODEL_PACKAGE", &v3),
                ("SAGEMAKER_SMOKE_REQUEST", "smoke.json"),
                ("SAGEMAKER_SMOKE_EXPECT", "\"answer\": \"v2\""),
            ],
        ),
    );
    assert!(
        matches!(smoky.outcome, JobOutcome::Failed { .. }),
        "{:?}\n{}",
        smoky.outcome,
        smoky.plain_log()
    );
    let log = smoky.plain_log();
    assert!(
        log.contains("smoke test of endpoint churn-stable failed")
            && log.contains("does not match"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "endpoint churn-stable serves its previous config {second_config} again"
        )),
        "{log}"
    );
    assert!(log.contains("deleted endpoint config"), "{log}");
    assert_eq!(
        endpoint_state(&w, endpoint),
        (second_config.clone(), "InService".to_owned())
    );
    // What the two failed deployments created is gone; the two that served remain.
    let (configs, models) = configs_and_models(&w, endpoint);
    assert_eq!(configs.len(), 2, "{configs:?}");
    assert_eq!(models.len(), 2, "{models:?}");

    // The update and SageMaker's rollback both fail: the job tries to return the endpoint to
    // its previous config, says what happened, and a later deployment is refused until the
    // endpoint is fixed or torn down.
    w.sim
        .post_outcomes(
            &json!({"endpoint": [{"name_contains": endpoint, "rollback_failed": "Both fleets failed."}]}),
        )
        .unwrap();
    let broken = run(
        &w,
        &job(
            "deploy-stable",
            "main",
            true,
            &[
                ("SAGEMAKER_ACTION", "deploy"),
                ("SAGEMAKER_MODEL_PACKAGE", &v3),
            ],
        ),
    );
    assert!(
        matches!(broken.outcome, JobOutcome::Failed { .. }),
        "{:?}",
        broken.outcome
    );
    let log = broken.plain_log();
    assert!(
        log.contains(
            "SageMaker could not roll it back (UpdateRollbackFailed): Both fleets failed;"
        ) && log.contains(&format!(
            "returning endpoint churn-stable to its previous config {second_config} failed"
        )) && log.contains("are kept (the endpoint may serve them in part)"),
        "{log}"
    );
    assert_eq!(endpoint_state(&w, endpoint).1, "UpdateRollbackFailed");
    let refused = run(
        &w,
        &job(
            "deploy-stable",
            "main",
            true,
            &[
                ("SAGEMAKER_ACTION", "deploy"),
                ("SAGEMAKER_MODEL_PACKAGE", &v3),
            ],
        ),
    );
    assert!(
        refused.plain_log().contains(
            "endpoint churn-stable is UpdateRollbackFailed (Both fleets failed.): it cannot be updated"
        ),
        "{}",
        refused.plain_log()
    );
    let (configs, _) = configs_and_models(&w, endpoint);
    assert_eq!(
        configs.len(),
        3,
        "the half-served config is kept: {configs:?}"
    );
}

#[test]
fn merge_request_candidate_is_deployed_and_undeployed_and_bad_settings_create_nothing() {
    let w = deploy_world();
    let pending = register(&w, "candidate", ModelApprovalStatus::PendingManualApproval);
    let mr = [
        ("CI_MERGE_REQUEST_IID", "5"),
        ("CI_PIPELINE_SOURCE", "merge_request_event"),
    ];

    // Refused at prepare, one line naming the setting, nothing created.
    let bad = run(
        &w,
        &job(
            "deploy-review",
            "feature/x",
            false,
            &[
                mr[0],
                mr[1],
                ("SAGEMAKER_ACTION", "deploy"),
                ("SAGEMAKER_MODEL_PACKAGE", &pending),
                ("SAGEMAKER_STRATEGY", "canary:90:1m"),
            ],
        ),
    );
    assert!(
        matches!(bad.outcome, JobOutcome::Failed { .. }),
        "{:?}",
        bad.outcome
    );
    let log = bad.plain_log();
    assert!(
        log.lines()
            .any(|l| l.contains("SAGEMAKER_STRATEGY: traffic share \"90\"")),
        "{log}"
    );
    let stable_from_branch = run(
        &w,
        &job(
            "deploy-review",
            "feature/x",
            false,
            &[
                ("SAGEMAKER_ACTION", "deploy"),
                ("SAGEMAKER_ENDPOINT_NAME", "churn-stable"),
                ("SAGEMAKER_MODEL_PACKAGE", &pending),
            ],
        ),
    );
    let log = stable_from_branch.plain_log();
    assert!(
        log.lines().any(|l| l.contains("SAGEMAKER_ENDPOINT_NAME")
            && l.contains("counts as stable")
            && l.contains("protected")),
        "{log}"
    );
    assert!(
        !w.calls()
            .iter()
            .any(|c| created_for_endpoints(c) || c.contains("DescribeModelPackage")),
        "{:?}",
        w.calls()
    );

    // A pending package may not reach a candidate unless the policy says so.
    let unapproved = run(
        &w,
        &job(
            "deploy-review",
            "feature/x",
            false,
            &[
                mr[0],
                mr[1],
                ("SAGEMAKER_ACTION", "deploy"),
                ("SAGEMAKER_MODEL_PACKAGE", &pending),
            ],
        ),
    );
    assert!(
        matches!(unapproved.outcome, JobOutcome::Failed { .. }),
        "{:?}",
        unapproved.outcome
    );
    assert!(
        unapproved
            .plain_log()
            .contains("is PendingManualApproval: only Approved packages are deployed"),
        "{}",
        unapproved.plain_log()
    );
    assert!(
        !w.calls().iter().any(|c| created_for_endpoints(c)),
        "{:?}",
        w.calls()
    );

    // With an approved one, the MR gets its own candidate endpoint.
    let approved = register(&w, "approved", ModelApprovalStatus::Approved);

    // A first deployment whose smoke test fails leaves nothing serving.
    let failed_first = run(
        &w,
        &job(
            "deploy-review",
            "feature/s",
            false,
            &[
                ("SAGEMAKER_ACTION", "deploy"),
                ("SAGEMAKER_MODEL_PACKAGE", &approved),
                ("SAGEMAKER_SMOKE_REQUEST", "smoke.json"),
                ("SAGEMAKER_SMOKE_EXPECT_STATUS", "204"),
            ],
        ),
    );
    assert!(
        matches!(failed_first.outcome, JobOutcome::Failed { .. }),
        "{:?}",
        failed_first.outcome
    );
    let log = failed_first.plain_log();
    assert!(
        log.contains("smoke test of endpoint churn-candidate-feature-s failed: the model answered 200, expected 204")
            && log.contains("endpoint churn-candidate-feature-s was deleted (a first deployment that failed leaves nothing serving)"),
        "{log}"
    );
    w.eventually("the failed endpoint to go", Duration::from_secs(30), || {
        w.rt.block_on(
            w.sagemaker
                .describe_endpoint()
                .endpoint_name("churn-candidate-feature-s")
                .send(),
        )
        .is_err()
    });
    assert_eq!(
        configs_and_models(&w, "churn-candidate-feature-s"),
        (Vec::new(), Vec::new())
    );
    let deployed = run(
        &w,
        &job(
            "deploy-review",
            "feature/x",
            false,
            &[
                mr[0],
                mr[1],
                ("SAGEMAKER_ACTION", "deploy"),
                ("SAGEMAKER_MODEL_PACKAGE_ARN", &approved),
                ("SAGEMAKER_SMOKE_REQUEST", "smoke.json"),
                ("SAGEMAKER_SMOKE_EXPECT", "approved"),
            ],
        ),
    );
    assert_outcome(&deployed, JobOutcome::Success);
    assert!(
        deployed
            .plain_log()
            .contains("deploying to candidate endpoint churn-candidate-mr5"),
        "{}",
        deployed.plain_log()
    );
    assert_eq!(endpoint_state(&w, "churn-candidate-mr5").1, "InService");
    let first_config = deployed
        .dotenv_value("SAGEMAKER_ENDPOINT_CONFIG_NAME")
        .unwrap();

    // Two more pushes to the MR: the third deployment deletes the first one's config and
    // model, keeping the previous one for a rollback.
    let push = job(
        "deploy-review",
        "feature/x",
        false,
        &[
            mr[0],
            mr[1],
            ("SAGEMAKER_ACTION", "deploy"),
            ("SAGEMAKER_MODEL_PACKAGE_ARN", &approved),
        ],
    );
    assert_outcome(&run(&w, &push), JobOutcome::Success);
    let third = run(&w, &push);
    assert_outcome(&third, JobOutcome::Success);
    assert!(
        third.plain_log().contains(&format!(
            "Deleted the configs and models of earlier deployments (the previous one is kept for a rollback): {first_config}"
        )),
        "{}",
        third.plain_log()
    );
    let (configs, models) = configs_and_models(&w, "churn-candidate-mr5");
    assert_eq!(
        (configs.len(), models.len()),
        (2, 2),
        "{configs:?} {models:?}"
    );

    // The stop job tears down everything the deployment created; a second run has nothing to do.
    let stop = job(
        "stop-review",
        "feature/x",
        false,
        &[mr[0], mr[1], ("SAGEMAKER_ACTION", "undeploy")],
    );
    let undeployed = run(&w, &stop);
    assert_outcome(&undeployed, JobOutcome::Success);
    let log = undeployed.plain_log();
    assert!(
        log.contains("Deleted endpoint churn-candidate-mr5"),
        "{log}"
    );
    assert!(
        log.contains("Deleted endpoint config churn-candidate-mr5-"),
        "{log}"
    );
    assert!(log.contains("Deleted model churn-candidate-mr5-"), "{log}");
    assert_eq!(
        configs_and_models(&w, "churn-candidate-mr5"),
        (Vec::new(), Vec::new())
    );
    let none = w.rt.block_on(
        w.sagemaker
            .describe_endpoint()
            .endpoint_name("churn-candidate-mr5")
            .send(),
    );
    assert!(none.is_err(), "the endpoint is gone");
    let again = run(&w, &stop);
    assert_outcome(&again, JobOutcome::Success);
    assert!(
        again.plain_log().contains("Nothing to delete"),
        "{}",
        again.plain_log()
    );
}

#[test]
fn cancel_leaves_an_update_to_sagemaker_and_cleanup_deletes_a_first_endpoint_after_sigkill() {
    let w = deploy_world();
    let v1 = register(&w, "one", ModelApprovalStatus::Approved);
    let vars = |endpoint: &'static str, strategy: &'static str| {
        vec![
            ("SAGEMAKER_ACTION", "deploy"),
            ("SAGEMAKER_ENDPOINT_NAME", endpoint),
            ("SAGEMAKER_MODEL_PACKAGE", v1.as_str()),
            ("SAGEMAKER_STRATEGY", strategy),
        ]
    };

    // SIGKILL while a first deployment's endpoint is Creating: cleanup deletes it, and then
    // its config and model.
    w.sim
        .post_outcomes(
            &json!({"endpoint": [{"name_contains": "churn-candidate-k", "create_seconds": 60}]}),
        )
        .unwrap();
    let killed = w.run_stopped_at(
        &w.fixture(&job(
            "deploy-k",
            "feature/k",
            false,
            &vars("churn-candidate-k", "all-at-once"),
        )),
        "build_script",
        "Endpoint churn-candidate-k: Creating",
        StopAction::KillExecutor,
    );
    assert!(
        killed
            .runner_log
            .contains("cleanup: stopped endpoint churn-candidate-k"),
        "{}\n{}",
        killed.runner_log,
        killed.plain_log()
    );
    w.eventually(
        "the endpoint to be deleted",
        Duration::from_secs(30),
        || {
            w.rt.block_on(
                w.sagemaker
                    .describe_endpoint()
                    .endpoint_name("churn-candidate-k")
                    .send(),
            )
            .is_err()
        },
    );
    assert_eq!(
        configs_and_models(&w, "churn-candidate-k"),
        (Vec::new(), Vec::new()),
        "{}",
        killed.runner_log
    );

    // Cancel during an update's bake: the job stops waiting and says the update goes on.
    let first = run(
        &w,
        &job(
            "deploy-c",
            "feature/c",
            false,
            &vars("churn-candidate-c", "all-at-once"),
        ),
    );
    assert_outcome(&first, JobOutcome::Success);
    let first_config = first
        .dotenv_value("SAGEMAKER_ENDPOINT_CONFIG_NAME")
        .unwrap();
    let cancelled = w.run_stopped_at(
        &w.fixture(&job(
            "deploy-c",
            "feature/c",
            false,
            &vars("churn-candidate-c", "canary:50:60s"),
        )),
        "build_script",
        "Baking for 60 seconds",
        StopAction::Cancel,
    );
    assert_outcome(&cancelled, JobOutcome::Canceled);
    let log = cancelled.plain_log();
    assert!(
        log.contains(&format!(
            "Job cancelled: stopped waiting; endpoint churn-candidate-c is Updating on config {first_config}, updating to churn-candidate-c-"
        )),
        "{log}"
    );
    assert!(
        log.contains("an update cannot be halted halfway: SageMaker completes it"),
        "{log}"
    );
    assert_eq!(endpoint_state(&w, "churn-candidate-c").1, "Updating");
    assert_eq!(
        configs_and_models(&w, "churn-candidate-c").0.len(),
        2,
        "cleanup leaves the config the update is moving to"
    );
}
