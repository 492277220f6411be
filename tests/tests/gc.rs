//! End-to-end tests of `sagemaker-executor gc` against the simulator: orphans of this executor
//! are listed, stopped and deleted; what is not tagged as ours, and what a live job on this host
//! owns, is left alone.

#![allow(
    clippy::unwrap_used,
    reason = "an integration test reports failure by panicking"
)]

mod support;

use std::process::Command;
use std::time::Duration;

use aws_sdk_sagemaker::types::{
    AlgorithmSpecification, OutputDataConfig, ResourceConfig, StoppingCondition, Tag,
    TrainingInputMode,
};
use support::{BUCKET, ECR_IMAGE, POLICY, World};

/// Starts a training job that sleeps, tagged as this executor's for `job` when `ours`.
fn sleeping_job(w: &World, name: &str, job: u64, ours: bool) {
    sleeping_job_tagged(w, name, job, ours, &[]);
}

/// [`sleeping_job`] with `extra` tags.
fn sleeping_job_tagged(w: &World, name: &str, job: u64, ours: bool, extra: &[(&str, &str)]) {
    let mut tags: Vec<Tag> = extra
        .iter()
        .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
        .collect();
    tags.extend([Tag::builder()
        .key("gitlab:job-id")
        .value(job.to_string())
        .build()]);
    if ours {
        tags.push(
            Tag::builder()
                .key("managed-by")
                .value("sagemaker-executor")
                .build(),
        );
    }
    w.rt.block_on(
        w.sagemaker
            .create_training_job()
            .training_job_name(name)
            .algorithm_specification(
                AlgorithmSpecification::builder()
                    .training_image(ECR_IMAGE)
                    .training_input_mode(TrainingInputMode::File)
                    .container_entrypoint("/bin/sh")
                    .container_arguments("-c")
                    .container_arguments("sleep 300")
                    .build(),
            )
            .role_arn("arn:aws:iam::123456789012:role/SageMakerCI")
            .output_data_config(
                OutputDataConfig::builder()
                    .s3_output_path(format!("s3://{BUCKET}/out"))
                    .build(),
            )
            .resource_config(
                ResourceConfig::builder()
                    .instance_type("ml.m5.large".into())
                    .instance_count(1)
                    .volume_size_in_gb(1)
                    .build(),
            )
            .stopping_condition(
                StoppingCondition::builder()
                    .max_runtime_in_seconds(600)
                    .build(),
            )
            .set_tags(Some(tags))
            .send(),
    )
    .unwrap();
}

fn put(w: &World, key: &str) {
    w.rt.block_on(
        w.s3.put_object()
            .bucket(BUCKET)
            .key(key)
            .body(b"x".to_vec().into())
            .send(),
    )
    .unwrap();
}

fn gc(w: &World, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(e2e::paths::executor_binary().unwrap());
    cmd.arg("--config").arg(&w.config_path).arg("gc").args(args);
    for (k, v) in w.sim.aws_env() {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn orphans_are_listed_then_released_and_foreign_or_live_resources_are_kept() {
    let w = World::new(POLICY);
    sleeping_job(&w, "gl-9-901", 901, true);
    sleeping_job(&w, "someone-elses", 902, false);
    sleeping_job(&w, "gl-9-903", 903, true);
    // Job 903 is live on this host: its state file exists until its cleanup.
    let state_root = w.builds_root.join(".state");
    std::fs::create_dir_all(&state_root).unwrap();
    std::fs::write(state_root.join("job-903.json"), "{}").unwrap();
    put(&w, "sagemaker-executor/9/901/workspace.tar.gz");
    put(&w, "sagemaker-executor/9/901/script");
    let run_output =
        "sagemaker-executor/output/9/901/0123456789abcdef0123456789abcdef/gl-9-901/output";
    put(&w, &format!("{run_output}/model.tar.gz"));
    // SageMaker's returned workspace (file variables included), left by a killed executor.
    put(&w, &format!("{run_output}/output.tar.gz"));
    for name in ["gl-9-901", "someone-elses", "gl-9-903"] {
        w.eventually("the job to run", Duration::from_secs(30), || {
            w.training_status(name) == "InProgress"
        });
    }

    let (ok, out) = gc(&w, &["--dry-run", "--older-than", "0s"]);
    assert!(ok, "{out}");
    let row = |needle: &str| out.lines().find(|l| l.contains(needle)).map(str::to_owned);
    assert!(
        row("gl-9-901").is_some_and(|r| r.starts_with("training job") && r.ends_with("would stop")),
        "{out}"
    );
    assert!(
        row("s3://ci-staging/sagemaker-executor/9/901/")
            .is_some_and(|r| r.starts_with("staged workspace") && r.ends_with("would delete")),
        "{out}"
    );
    assert!(
        row("someone-elses").is_none() && row("gl-9-903").is_none(),
        "{out}"
    );
    assert!(
        row("model.tar.gz").is_none(),
        "a model is never swept: {out}"
    );
    assert!(
        row(&format!("{run_output}/output.tar.gz"))
            .is_some_and(|r| r.starts_with("returned workspace") && r.ends_with("would delete")),
        "{out}"
    );
    assert_eq!(
        w.training_status("gl-9-901"),
        "InProgress",
        "a dry run changes nothing"
    );
    assert_eq!(w.keys("sagemaker-executor/9/901/").len(), 2);

    // Younger than the retention: kept.
    let (ok, out) = gc(&w, &["--older-than", "1h"]);
    assert!(ok && out.contains("nothing to release"), "{out}");

    let (ok, out) = gc(&w, &["--older-than", "0s"]);
    assert!(ok, "{out}");
    assert!(
        row_in(&out, "gl-9-901").is_some_and(|r| r.ends_with("stopped")),
        "{out}"
    );
    assert!(
        row_in(&out, "sagemaker-executor/9/901/").is_some_and(|r| r.ends_with("deleted 2 objects")),
        "{out}"
    );
    w.eventually("the orphan to stop", Duration::from_secs(30), || {
        w.training_status("gl-9-901") == "Stopped"
    });
    assert!(
        row_in(&out, "output.tar.gz").is_some_and(|r| r.ends_with("deleted")),
        "{out}"
    );
    assert!(w.keys("sagemaker-executor/9/901/").is_empty());
    assert_eq!(
        w.keys("sagemaker-executor/output/"),
        [format!("{run_output}/model.tar.gz")]
    );
    assert_eq!(w.training_status("someone-elses"), "InProgress");
    assert_eq!(w.training_status("gl-9-903"), "InProgress");

    // A second sweep (or another host's, at the same time) finds nothing left to do.
    let (ok, out) = gc(&w, &["--older-than", "0s"]);
    assert!(ok, "{out}");
    assert!(
        row_in(&out, "gl-9-901").is_none_or(|r| r.ends_with("already ended")),
        "{out}"
    );
}

fn row_in(out: &str, needle: &str) -> Option<String> {
    out.lines().find(|l| l.contains(needle)).map(str::to_owned)
}

/// A deploy job for `endpoint` of the newest Approved version of `churn`, on `git_ref`.
fn deploy_job(w: &World, endpoint: &str, git_ref: &str, protected: bool) -> e2e::runner::JobResult {
    let yaml = format!(
        "name: deploy\nref: {git_ref}\nprotected: {protected}\nproject: {{path: ml/churn}}\nvariables:\n  SAGEMAKER_ACTION: deploy\n  SAGEMAKER_MODEL_PACKAGE_GROUP: churn\n  SAGEMAKER_ENDPOINT_NAME: {endpoint}\n  CI_MERGE_REQUEST_IID: \"5\"\nscript: [echo SHOULD-NOT-RUN]\nsource:\n  README.md: \"x\\n\"\n"
    );
    w.runner.run(&w.fixture(&yaml)).unwrap()
}

fn endpoint_exists(w: &World, name: &str) -> bool {
    w.rt.block_on(w.sagemaker.describe_endpoint().endpoint_name(name).send())
        .is_ok()
}

fn names(w: &World) -> (Vec<String>, Vec<String>) {
    let configs =
        w.rt.block_on(w.sagemaker.list_endpoint_configs().send())
            .unwrap()
            .endpoint_configs()
            .iter()
            .filter_map(|c| c.endpoint_config_name().map(str::to_owned))
            .collect();
    let models =
        w.rt.block_on(w.sagemaker.list_models().send())
            .unwrap()
            .models()
            .iter()
            .filter_map(|m| m.model_name().map(str::to_owned))
            .collect();
    (configs, models)
}

#[test]
fn old_candidate_endpoints_and_unserved_configs_and_models_are_swept_but_stable_ones_kept() {
    let w = World::new(
        r#"[policy]
allowed_actions = ["deploy"]
protected_ref_actions = []

[policy.deploy]
endpoints = ["churn-*"]
stable_endpoints = ["*-stable"]
instance_types = ["ml.m5.*"]
max_instance_count = 2
"#,
    );
    w.serve_image("churn");
    let model = w.upload_model("v1");
    w.register_serving(
        "churn",
        &model,
        aws_sdk_sagemaker::types::ModelApprovalStatus::Approved,
    );
    let stable = deploy_job(&w, "churn-stable", "main", true);
    assert_eq!(
        stable.outcome,
        e2e::runner::JobOutcome::Success,
        "{}",
        stable.plain_log()
    );
    let candidate = deploy_job(&w, "churn-candidate-mr5", "feature/x", false);
    assert_eq!(
        candidate.outcome,
        e2e::runner::JobOutcome::Success,
        "{}",
        candidate.plain_log()
    );
    let (configs_before, models_before) = names(&w);
    assert_eq!((configs_before.len(), models_before.len()), (2, 2));

    // Young: kept.
    let (ok, out) = gc(&w, &["--older-than", "1h"]);
    assert!(ok && out.contains("nothing to release"), "{out}");

    let (ok, out) = gc(&w, &["--dry-run", "--older-than", "0s"]);
    assert!(ok, "{out}");
    assert!(
        row_in(&out, "churn-candidate-mr5")
            .is_some_and(|r| r.starts_with("candidate endpoint") && r.ends_with("would delete")),
        "{out}"
    );
    // What an endpoint serves is no orphan; a stable endpoint never is.
    assert!(row_in(&out, "churn-stable").is_none(), "{out}");
    assert!(endpoint_exists(&w, "churn-candidate-mr5"));

    let (ok, out) = gc(&w, &["--older-than", "0s"]);
    assert!(ok, "{out}");
    assert!(
        row_in(&out, "churn-candidate-mr5").is_some_and(|r| r.ends_with("deleted")),
        "{out}"
    );
    w.eventually(
        "the candidate endpoint to go",
        Duration::from_secs(30),
        || !endpoint_exists(&w, "churn-candidate-mr5"),
    );
    // Its config and model are free now: the next sweep (or another host's) deletes them.
    let (ok, out) = gc(&w, &["--older-than", "0s"]);
    assert!(ok, "{out}");
    let (configs, models) = names(&w);
    assert!(
        configs.iter().all(|c| c.starts_with("churn-stable"))
            && models.iter().all(|m| m.starts_with("churn-stable"))
            && configs.len() == 1
            && models.len() == 1,
        "left: {configs:?} {models:?}\n{out}"
    );
    assert!(endpoint_exists(&w, "churn-stable"));
}

#[test]
fn superseded_task_definition_revisions_are_deregistered_and_the_newest_kept() {
    let w = World::fargate(e2e::harness::world::TASK_ROLE);
    let register = |family: &str, ours: bool| -> String {
        let mut tags = vec![];
        if ours {
            tags.push(
                aws_sdk_ecs::types::Tag::builder()
                    .key("managed-by")
                    .value("sagemaker-executor")
                    .build(),
            );
        }
        w.rt.block_on(
            w.ecs
                .register_task_definition()
                .family(family)
                .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
                .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
                .cpu("256")
                .memory("512")
                .container_definitions(
                    aws_sdk_ecs::types::ContainerDefinition::builder()
                        .name("job")
                        .image(ECR_IMAGE)
                        .build(),
                )
                .set_tags(Some(tags))
                .send(),
        )
        .unwrap()
        .task_definition()
        .unwrap()
        .task_definition_arn()
        .unwrap()
        .to_owned()
    };
    let old = register("sme-0123456789ab", true);
    let newest = register("sme-0123456789ab", true);
    let foreign = register("sme-ffffffffffff", false);
    let foreign_newer = register("sme-ffffffffffff", false);
    let (ok, out) = gc(&w, &["--older-than", "0s"]);
    assert!(ok, "{out}");
    assert!(
        row_in(&out, "sme-0123456789ab:1")
            .is_some_and(|r| r.starts_with("task definition") && r.ends_with("deregistered")),
        "{out}"
    );
    assert!(row_in(&out, "sme-0123456789ab:2").is_none(), "{out}");
    assert!(row_in(&out, "sme-ffffffffffff").is_none(), "{out}");
    let status = |arn: &str| {
        w.rt.block_on(w.ecs.describe_task_definition().task_definition(arn).send())
            .unwrap()
            .task_definition()
            .unwrap()
            .status()
            .unwrap()
            .as_str()
            .to_owned()
    };
    assert_eq!(status(&old), "INACTIVE");
    assert_eq!(status(&newest), "ACTIVE");
    assert_eq!(status(&foreign), "ACTIVE");
    assert_eq!(status(&foreign_newer), "ACTIVE");
}

#[test]
fn a_job_roles_orphan_is_stopped_as_that_role_or_by_the_runner_saying_why() {
    let w = World::new(POLICY);
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]}"#;
    w.rt.block_on(
        w.iam
            .create_role()
            .role_name("ci-ml-churn")
            .assume_role_policy_document(trust)
            .send(),
    )
    .unwrap();
    let role = "arn:aws:iam::123456789012:role/ci-ml-churn";
    let gone = "arn:aws:iam::123456789012:role/ci-gone";
    sleeping_job_tagged(
        &w,
        "gl-9-911",
        911,
        true,
        &[("sagemaker-executor:role", role)],
    );
    sleeping_job_tagged(
        &w,
        "gl-9-912",
        912,
        true,
        &[("sagemaker-executor:role", gone)],
    );
    for name in ["gl-9-911", "gl-9-912"] {
        w.eventually("the job to run", Duration::from_secs(30), || {
            w.training_status(name) == "InProgress"
        });
    }
    let (ok, out) = gc(&w, &["--older-than", "0s"]);
    assert!(ok, "{out}");
    assert!(
        row_in(&out, "gl-9-911").is_some_and(|r| r.ends_with("stopped")),
        "{out}"
    );
    assert!(
        row_in(&out, "gl-9-912").is_some_and(|r| r.contains(
            "stopped (as the runner: cannot assume arn:aws:iam::123456789012:role/ci-gone"
        )),
        "{out}"
    );
    // The job role's orphan was stopped by that role's session, as cleanup would have.
    let stops: Vec<String> = w
        .sim
        .calls_json()
        .unwrap()
        .iter()
        .filter(|c| c["op"] == "SageMaker.StopTrainingJob")
        .map(|c| c["principal"].as_str().unwrap_or("(runner)").to_owned())
        .collect();
    assert!(
        stops.contains(
            &"arn:aws:sts::123456789012:assumed-role/ci-ml-churn/sagemaker-executor-gc".to_owned()
        ),
        "{stops:?}"
    );
}
