//! End-to-end tests of the `train` action: jobs run through the runner emulator and the real
//! executor against the AWS simulator, whose training containers really run the bootstrap and
//! the job's script with the runner's builds dir hidden.

#![allow(
    clippy::unwrap_used,
    reason = "an integration test reports failure by panicking"
)]

use std::time::Duration;

use e2e::harness::{
    BUCKET, ECR_IMAGE, POLICY, World, assert_outcome, assert_system_failure, line_index,
    training_job_name,
};
use e2e::runner::{JobOutcome, StopAction};

fn job(script: &str, extra: &str) -> String {
    format!(
        "name: train-model\nimage: {ECR_IMAGE}\nscript:\n{script}\nsource:\n  README.md: \"model repo\\n\"\n{extra}"
    )
}

#[test]
fn a_training_job_streams_its_lines_and_returns_model_artifacts_and_outputs() {
    let w = World::new(POLICY);
    let fixture = w.fixture(&job(
        "  - for i in 1 2 3; do echo \"epoch=$i loss=0.$((9-i))\"; done\n  - mkdir -p \"$SM_MODEL_DIR\" && echo weights > \"$SM_MODEL_DIR/model.bin\"\n  - echo trained > result.txt",
        "variables: {SAGEMAKER_METRIC_loss: \"loss=([0-9.]+)\"}\nartifacts:\n  paths: [result.txt]\n  reports: {dotenv: sagemaker.env}\n",
    ));
    let result = w.runner.run(&fixture).expect("job runs");
    assert_outcome(&result, JobOutcome::Success);
    let log = result.plain_log();
    let lines: Vec<&str> = log.lines().collect();
    let pos = |needle: &str| line_index(&log, needle);
    assert!(
        pos("epoch=1 loss=0.8") < pos("epoch=2 loss=0.7")
            && pos("epoch=2 loss=0.7") < pos("epoch=3 loss=0.6")
    );
    let training_started = lines
        .iter()
        .position(|l| l.contains("Training: Training image download completed"))
        .expect("training transition shown");
    assert!(
        training_started < pos("epoch=1 loss=0.8"),
        "the script's lines come inside the training section:\n{log}"
    );
    for needle in [
        "Provisioning training instances",
        "Training (the job's script)",
        "Completed: Training job completed",
    ] {
        assert!(log.contains(needle), "{needle:?} missing in:\n{log}");
    }

    let name = training_job_name(1, result.id);
    let outputs = w.keys(&format!("sagemaker-executor/output/1/{}/", result.id));
    let [model_key] = outputs.as_slice() else {
        panic!(
            "model.tar.gz stays in S3; output.tar.gz (the workspace, file variables included) is deleted at cleanup: {outputs:?}"
        )
    };
    assert!(
        model_key.ends_with(&format!("/{name}/output/model.tar.gz")),
        "{model_key}"
    );

    let uploaded = result.uploaded_files();
    assert!(
        uploaded.iter().any(|f| f.ends_with("result.txt")),
        "artifact came back: {uploaded:?}"
    );
    let dotenv = result.dotenv().expect("dotenv report uploaded");
    let get = |k: &str| result.dotenv_value(k);
    assert_eq!(
        get("SAGEMAKER_TRAINING_JOB_NAME").as_deref(),
        Some(name.as_str()),
        "{dotenv:?}"
    );
    assert_eq!(
        get("SAGEMAKER_MODEL_DATA"),
        Some(format!("s3://ci-staging/{model_key}"))
    );
    assert_eq!(get("SAGEMAKER_FINAL_METRIC_loss").as_deref(), Some("0.6"));
    // Cleanup deleted the staged workspace.
    assert!(
        w.keys(&format!("sagemaker-executor/1/{}/", result.id))
            .is_empty()
    );
}

#[test]
fn the_workspace_channel_is_an_unguessable_prefix_gone_after_cleanup_with_the_returned_workspace() {
    let w = World::new(POLICY);
    let fixture = w.fixture(&job(
        "  - mkdir -p \"$SM_MODEL_DIR\" && echo weights > \"$SM_MODEL_DIR/model.bin\"\n  - echo trained > result.txt",
        "artifacts:\n  paths: [result.txt]\n",
    ));
    let result = w.runner.run(&fixture).expect("job runs");
    assert_outcome(&result, JobOutcome::Success);
    let name = training_job_name(1, result.id);
    let described =
        w.rt.block_on(
            w.sagemaker
                .describe_training_job()
                .training_job_name(&name)
                .send(),
        )
        .expect("described");
    let job_prefix = format!("s3://{BUCKET}/sagemaker-executor/1/{}/", result.id);
    let source = described
        .input_data_config()
        .iter()
        .filter_map(|c| c.data_source()?.s3_data_source())
        .find(|s| s.s3_uri().is_some_and(|u| u.starts_with(&job_prefix)))
        .unwrap_or_else(|| panic!("no channel under {job_prefix}: {described:?}"));
    // A manifest of the staged objects: the execution role reads it without listing the prefix.
    assert_eq!(
        source.s3_data_type(),
        Some(&aws_sdk_sagemaker::types::S3DataType::ManifestFile)
    );
    let channel = source.s3_uri().unwrap_or_default().to_owned();
    // <prefix>/<project>/<job>/<128 random bits in hex>/channel.manifest
    let random = channel
        .strip_prefix(&job_prefix)
        .and_then(|r| r.strip_suffix("/channel.manifest"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        random.len() == 32
            && random
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{channel}"
    );
    assert!(
        !result.unmasked_log.contains(&random),
        "the random part is not in the job log:\n{}",
        result.unmasked_log
    );
    assert!(
        result.plain_log().contains(&format!("to {job_prefix}…/")),
        "{}",
        result.plain_log()
    );
    // Cleanup left nothing of the job but its model: not the staged workspace, not SageMaker's
    // output.tar.gz (the returned workspace, file variables included). The model is below the
    // same random part, so another job's role that may read the staging prefix cannot guess it.
    let model = format!(
        "sagemaker-executor/output/1/{}/{random}/{name}/output/model.tar.gz",
        result.id
    );
    let left = w.keys("");
    assert!(
        !left.iter().any(|k| k != &model
            && (k.contains(&random)
                || k.starts_with(&format!("sagemaker-executor/1/{}/", result.id)))),
        "{left:?}"
    );
    assert!(left.contains(&model), "{model} not in {left:?}");
    assert_eq!(
        described
            .output_data_config()
            .and_then(|o| o.s3_output_path()),
        Some(
            format!(
                "s3://{BUCKET}/sagemaker-executor/output/1/{}/{random}",
                result.id
            )
            .as_str()
        )
    );
}

#[test]
fn a_failing_script_is_a_build_failure_with_its_exit_code_and_on_failure_stages_run() {
    let w = World::new(POLICY);
    let fixture = w.fixture(&job(
        "  - echo partial > partial.txt\n  - echo about to fail\n  - exit 3",
        "after_script:\n  - echo after-script-ran\nartifacts:\n  paths: [partial.txt]\n  when: on_failure\n",
    ));
    let result = w.runner.run(&fixture).expect("job runs");
    assert_outcome(&result, JobOutcome::Failed { exit_code: 3 });
    let stages = result.run_stages();
    assert!(
        stages.contains(&"after_script") && stages.contains(&"upload_artifacts_on_failure"),
        "{stages:?}"
    );
    assert!(result.plain_log().contains("after-script-ran"));
    assert!(
        result
            .uploaded_files()
            .iter()
            .any(|f| f.ends_with("partial.txt")),
        "the returned workspace reached on-failure artifacts"
    );
    let name = training_job_name(1, result.id);
    assert_eq!(w.training_status(&name), "Failed");
}

#[test]
fn a_capacity_error_is_a_system_failure() {
    let w = World::new(POLICY);
    w.sim
        .post_outcomes(
            &serde_json::json!({"training": [{"name_contains": "gl-", "fail": "capacity"}]}),
        )
        .expect("outcome");
    let result = w
        .runner
        .run(&w.fixture(&job("  - echo never", "")))
        .expect("job runs");
    assert_system_failure(&result, "no capacity for the training job: CapacityError");
}

#[test]
fn throttling_on_describe_and_logs_is_absorbed_and_every_line_appears_once() {
    let w = World::new(POLICY);
    w.sim
        .post_faults(&serde_json::json!({"rules": [
            {"match": "SageMaker.DescribeTrainingJob", "kind": "throttle", "count": 4, "skip": 1},
            {"match": "Logs.GetLogEvents", "kind": "throttle", "count": 6},
            {"match": "Logs.DescribeLogStreams", "kind": "throttle", "count": 2}
        ]}))
        .expect("faults");
    let result = w
        .runner
        .run(&w.fixture(&job(
            "  - for i in $(seq 1 40); do echo \"line-$i\"; sleep 0.05; done",
            "",
        )))
        .expect("job runs");
    assert_outcome(&result, JobOutcome::Success);
    let log = result.plain_log();
    for i in 1..=40 {
        let needle = format!("line-{i}");
        let n = log.lines().filter(|l| *l == needle).count();
        assert_eq!(n, 1, "{needle} appeared {n} times in:\n{log}");
    }
    // Exhausted rules are removed, so count the throttled calls in the call log instead.
    let faulted = w
        .sim
        .calls_json()
        .expect("calls")
        .into_iter()
        .filter(|c| c.get("fault").is_some_and(|f| !f.is_null()))
        .count();
    assert_eq!(faulted, 12, "every injected throttle was really served");
}

#[test]
fn sigterm_mid_training_stops_the_training_job() {
    let w = World::new(POLICY);
    let fixture = w.fixture(&job("  - echo READY-TO-CANCEL\n  - sleep 300", ""));
    let result = w.run_stopped_at(
        &fixture,
        "build_script",
        "READY-TO-CANCEL",
        StopAction::Cancel,
    );
    assert_outcome(&result, JobOutcome::Canceled);
    assert_eq!(w.count("SageMaker.StopTrainingJob"), 1, "{:?}", w.calls());
    let name = training_job_name(1, result.id);
    assert_eq!(w.training_status(&name), "Stopped");
    let build = result.stage("build_script").expect("build_script ran");
    assert!(
        !build.was_sent("SIGKILL"),
        "the executor exited within the grace period, without SIGKILL: {:?}",
        build.signals
    );
    assert!(
        result
            .plain_log()
            .contains(&format!("training job {name} was stopped")),
        "{}",
        result.plain_log()
    );
    let procs = w.container_processes();
    assert!(procs.is_empty(), "no container process left: {procs:?}");
}

#[test]
fn sigkill_then_cleanup_stops_the_training_job_and_deletes_staged_objects() {
    let w = World::new(POLICY);
    let fixture = w.fixture(&job("  - echo READY-TO-KILL\n  - sleep 300", ""));
    let result = w.run_stopped_at(
        &fixture,
        "build_script",
        "READY-TO-KILL",
        StopAction::KillExecutor,
    );
    assert!(
        result.stage_names().contains(&"cleanup"),
        "{:?}",
        result.stage_names()
    );
    assert!(
        result.runner_log.contains("cleanup: stopped training job"),
        "{}",
        result.runner_log
    );
    let name = training_job_name(1, result.id);
    w.eventually("the training job to stop", Duration::from_secs(30), || {
        w.training_status(&name) == "Stopped"
    });
    assert!(
        w.keys(&format!("sagemaker-executor/1/{}/", result.id))
            .is_empty(),
        "staged objects are gone"
    );
}

#[test]
fn two_instances_prefix_each_hosts_lines() {
    let w = World::new(POLICY);
    let fixture = w.fixture(&job(
        "  - echo \"hello from $SM_CURRENT_HOST\"",
        "variables: {SAGEMAKER_INSTANCE_COUNT: \"2\"}\n",
    ));
    let result = w.runner.run(&fixture).expect("job runs");
    assert_outcome(&result, JobOutcome::Success);
    let log = result.plain_log();
    for host in ["algo-1", "algo-2"] {
        assert!(
            log.lines()
                .any(|l| l == format!("[{host}] hello from {host}")),
            "{host} missing in:\n{log}"
        );
    }
}

#[test]
fn refused_settings_fail_at_prepare_and_create_nothing() {
    let w = World::new(POLICY);
    for (vars, image, needle) in [
        (
            "{}",
            "python:3.12",
            "image: \"python:3.12\" is not an ECR image",
        ),
        (
            "{SAGEMAKER_INSTANCE_TYPE: ml.p5.48xlarge}",
            ECR_IMAGE,
            "SAGEMAKER_INSTANCE_TYPE: \"ml.p5.48xlarge\" is not allowed by policy.train.instance_types",
        ),
        (
            "{SAGEMAKER_INSTANCE_COUNT: \"3\"}",
            ECR_IMAGE,
            "SAGEMAKER_INSTANCE_COUNT: 3 is over policy.train.max_instance_count = 2",
        ),
        (
            "{SAGEMAKER_ROLE_ARN: \"arn:aws:iam::123456789012:role/Admin\"}",
            ECR_IMAGE,
            "SAGEMAKER_ROLE_ARN: \"arn:aws:iam::123456789012:role/Admin\" is not allowed by policy.train.roles",
        ),
        (
            "{SAGEMAKER_INPUT_DATA: \"s3://not-ours/x\"}",
            ECR_IMAGE,
            "SAGEMAKER_INPUT_DATA: bucket \"not-ours\" is not allowed by policy.train.buckets",
        ),
    ] {
        let fixture = w.fixture(&format!("name: bad\nimage: {image}\nvariables: {vars}\nscript: [echo never]\nsource: {{README.md: x}}\n"));
        let result = w.runner.run(&fixture).expect("job runs");
        assert_eq!(
            result.outcome,
            JobOutcome::Failed { exit_code: 1 },
            "{vars}: {}",
            result.plain_log()
        );
        let error_lines: Vec<_> = result
            .plain_log()
            .lines()
            .filter(|l| l.starts_with("ERROR: ") && !l.starts_with("ERROR: Job failed"))
            .map(str::to_owned)
            .collect();
        assert_eq!(error_lines.len(), 1, "{vars}: one line: {error_lines:?}");
        assert!(
            error_lines[0].contains(needle),
            "{vars}: {:?} lacks {needle:?}",
            error_lines[0]
        );
        assert!(
            !result.run_stages().contains(&"build_script"),
            "no stage ran after the refusal"
        );
    }
    let calls = w.calls();
    // The test's own bucket creation is `S3.PUT /ci-staging/`; any object under it would be ours.
    let created = |c: &String| {
        c.starts_with("SageMaker.")
            || (c.starts_with("S3.PUT /ci-staging/") && c.len() > "S3.PUT /ci-staging/".len())
    };
    assert!(!calls.iter().any(created), "nothing created: {calls:?}");
}

#[test]
fn re_running_the_script_stage_attaches_to_the_existing_training_job() {
    let w = World::new(POLICY);
    let fixture = w.fixture(&job("  - echo first-run > out.txt", ""));
    let result = w.runner.run(&fixture).expect("job runs");
    assert_outcome(&result, JobOutcome::Success);
    assert_eq!(w.count("SageMaker.CreateTrainingJob"), 1);

    // The runner runs a stage again in the same job (e.g. after a lost connection): same job
    // id, same project dir, same deterministic training job name.
    let record = result
        .stage("build_script")
        .expect("build_script ran")
        .clone();
    let project = result.project_dir.clone().expect("project dir");
    std::fs::create_dir_all(&project).expect("project dir");
    let dir = tempfile::tempdir().expect("tmp");
    let out = result
        .replay_in(&record, dir.path(), &result.response)
        .expect("replay")
        .output()
        .expect("executor runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = training_job_name(1, result.id);
    assert!(
        stdout.contains(&format!(
            "Attaching to existing training job {name} (Completed)"
        )),
        "{stdout}"
    );
    assert_eq!(
        w.count("SageMaker.CreateTrainingJob"),
        1,
        "no second training job"
    );
    // This replay comes after the job's cleanup, which deleted the returned workspace (it holds
    // the file variables): the attach says so instead of failing.
    assert!(
        stdout.contains("the returned workspace is gone: this job's cleanup deletes it"),
        "{stdout}"
    );
}

#[test]
fn a_spec_file_in_the_repository_is_applied_and_a_typo_in_it_names_the_key() {
    let w = World::new(POLICY);
    let good = w.fixture(&format!(
        "name: spec\nimage: {ECR_IMAGE}\nvariables: {{SAGEMAKER_SPEC: ml/train.yml}}\nscript: [\"echo \\\"on $SM_CURRENT_HOST\\\"\"]\nsource:\n  ml/train.yml: \"train:\\n  instance_count: 2\\n\"\n"
    ));
    let result = w.runner.run(&good).expect("job runs");
    assert_outcome(&result, JobOutcome::Success);
    assert!(
        result.plain_log().contains("[algo-2] on algo-2"),
        "{}",
        result.plain_log()
    );

    let typo = w.fixture(&format!(
        "name: spec-typo\nimage: {ECR_IMAGE}\nvariables: {{SAGEMAKER_SPEC: ml/train.yml}}\nscript: [echo never]\nsource:\n  ml/train.yml: \"train:\\n  instance_cont: 2\\n\"\n"
    ));
    let creates_before = w.count("SageMaker.CreateTrainingJob");
    let result = w.runner.run(&typo).expect("job runs");
    assert_outcome(&result, JobOutcome::Failed { exit_code: 1 });
    assert!(
        result.plain_log().contains(
            "SAGEMAKER_SPEC: ml/train.yml: train: unknown field `instance_cont`, expected one of"
        ),
        "{}",
        result.plain_log()
    );
    assert_eq!(
        w.count("SageMaker.CreateTrainingJob"),
        creates_before,
        "nothing created"
    );
}

#[test]
fn reaching_the_max_runtime_is_a_build_failure_naming_the_limit() {
    let w = World::new(POLICY);
    let fixture = w.fixture(&job(
        "  - echo started\n  - sleep 120",
        "variables: {SAGEMAKER_MAX_RUNTIME: \"3s\"}\n",
    ));
    let result = w.runner.run(&fixture).expect("job runs");
    assert_outcome(&result, JobOutcome::Failed { exit_code: 1 });
    assert!(
        result
            .plain_log()
            .contains("the training job reached its max runtime of 3s (SAGEMAKER_MAX_RUNTIME)"),
        "{}",
        result.plain_log()
    );
    assert_eq!(
        w.training_status(&training_job_name(1, result.id)),
        "Stopped"
    );
}
