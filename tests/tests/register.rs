//! End-to-end tests of the `register` action: a train job runs on the simulator, its dotenv
//! outputs are handed to a register job as GitLab hands them to a job that `needs:` it, and the
//! register job puts the model into the Model Registry with gates, approval and a release bundle.

#![allow(
    clippy::unwrap_used,
    reason = "an integration test reports failure by panicking"
)]

mod support;

use e2e::runner::{JobOutcome, JobResult};
use support::{ECR_IMAGE, POLICY, World};

const GROUP: &str = "ml-churn";

/// The test policy: groups `ml-*`, and `auto` allowed on unprotected refs (so a branch job can
/// show that it still stays pending there).
fn world() -> World {
    World::new(POLICY)
}

/// Runs a train job whose script writes a model and prints metrics; returns its dotenv.
fn train(w: &World, accuracy: &str, f1: &str) -> Vec<(String, String)> {
    let fixture = w.fixture(&format!(
        "name: train\nimage: {ECR_IMAGE}\nvariables:\n  SAGEMAKER_METRIC_accuracy: \"accuracy=([0-9.]+)\"\n  SAGEMAKER_METRIC_f1: \"f1=([0-9.]+)\"\nscript:\n  - mkdir -p \"$SM_MODEL_DIR\" && echo weights > \"$SM_MODEL_DIR/model.bin\"\n  - echo \"accuracy={accuracy} f1={f1}\"\nsource:\n  README.md: \"model repo\\n\"\nartifacts:\n  reports: {{dotenv: sagemaker.env}}\n"
    ));
    let result = w.runner.run(&fixture).expect("train runs");
    assert_eq!(
        result.outcome,
        JobOutcome::Success,
        "{}",
        result.plain_log()
    );
    result.dotenv().expect("train dotenv")
}

/// A register job receiving `upstream` as variables, with `vars` (YAML lines) and `extra`.
fn register_job(upstream: &[(String, String)], vars: &str, extra: &str) -> String {
    let mut yaml = "name: register\nvariables:\n  SAGEMAKER_ACTION: register\n".to_owned();
    for (k, v) in upstream {
        yaml.push_str(&format!("  {k}: {v:?}\n"));
    }
    yaml.push_str(vars);
    yaml.push_str(
        "script: [echo SHOULD-NOT-RUN]\nsource:\n  README.md: \"model repo\\n\"\nartifacts:\n  when: always\n  paths: [release/]\n  reports: {dotenv: sagemaker.env}\n",
    );
    yaml.push_str(extra);
    yaml
}

/// The content of an uploaded `archive` artifact file.
fn artifact(result: &JobResult, path: &str) -> Option<String> {
    std::fs::read_to_string(result.uploaded_artifacts_dir.join("archive").join(path)).ok()
}

fn get<'a>(dotenv: &'a [(String, String)], key: &str) -> Option<&'a str> {
    dotenv
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn describe(
    w: &World,
    arn: &str,
) -> aws_sdk_sagemaker::operation::describe_model_package::DescribeModelPackageOutput {
    w.rt.block_on(
        w.sagemaker
            .describe_model_package()
            .model_package_name(arn)
            .send(),
    )
    .unwrap()
}

fn versions(w: &World) -> usize {
    w.rt.block_on(
        w.sagemaker
            .list_model_packages()
            .model_package_group_name(GROUP)
            .send(),
    )
    .map(|o| o.model_package_summary_list().len())
    .unwrap_or(0)
}

fn run(w: &World, yaml: &str) -> JobResult {
    w.runner.run(&w.fixture(yaml)).expect("register runs")
}

#[test]
fn train_then_register_auto_on_a_protected_ref_approves_version_1_with_a_bundle() {
    let w = world();
    let upstream = train(&w, "0.91", "0.8");
    let result = run(
        &w,
        &register_job(
            &upstream,
            &format!(
                "  SAGEMAKER_MODEL_PACKAGE_GROUP: {GROUP}\n  SAGEMAKER_APPROVAL: auto\n  SAGEMAKER_APPROVAL_GATES: \"accuracy>=0.8,f1>=0.7\"\n"
            ),
            "protected: true\n",
        ),
    );
    let log = result.plain_log();
    assert_eq!(result.outcome, JobOutcome::Success, "{log}");
    assert!(!log.contains("SHOULD-NOT-RUN\n"), "{log}");
    for needle in [
        "metric    rule    value  result",
        "accuracy  >= 0.8  0.91   pass",
        "f1        >= 0.7  0.8    pass",
        "Approved (all 2 gates passed on a protected ref; approved (SAGEMAKER_APPROVAL=auto))",
        "#/model-registry/model-package-groups/ml-churn/versions/1",
    ] {
        assert!(log.contains(needle), "{needle:?} missing in:\n{log}");
    }
    let dotenv = result.dotenv().expect("dotenv");
    let arn = get(&dotenv, "SAGEMAKER_MODEL_PACKAGE_ARN")
        .expect("arn")
        .to_owned();
    assert!(arn.ends_with("model-package/ml-churn/1"), "{arn}");
    assert_eq!(get(&dotenv, "SAGEMAKER_MODEL_PACKAGE_VERSION"), Some("1"));
    assert_eq!(get(&dotenv, "SAGEMAKER_MODEL_APPROVAL"), Some("Approved"));
    assert_eq!(get(&dotenv, "SAGEMAKER_GATE_accuracy"), Some("pass"));

    let d = describe(&w, &arn);
    assert_eq!(
        d.model_approval_status().map(|s| s.as_str()),
        Some("Approved")
    );
    let container = &d.inference_specification().unwrap().containers()[0];
    assert_eq!(container.image(), Some(ECR_IMAGE));
    assert_eq!(
        container.model_data_url(),
        get(&upstream, "SAGEMAKER_MODEL_DATA")
    );
    let customer = d.customer_metadata_properties().expect("customer metadata");
    assert_eq!(
        customer.get("gitlab:job-id").map(String::as_str),
        Some(result.id.to_string().as_str())
    );
    let meta = d.metadata_properties().expect("metadata");
    assert!(
        meta.generated_by()
            .is_some_and(|u| u.ends_with(&format!("/-/jobs/{}", result.id))),
        "{meta:?}"
    );
    let metrics_uri = d
        .model_metrics()
        .and_then(|m| m.model_quality())
        .and_then(|q| q.statistics())
        .and_then(|s| s.s3_uri())
        .expect("model metrics");
    assert!(
        metrics_uri.ends_with(&format!("metrics-{}.json", result.id)),
        "{metrics_uri}"
    );

    // The bundle came back as an artifact with the registry's facts.
    let bundle = get(&dotenv, "SAGEMAKER_RELEASE_BUNDLE")
        .expect("bundle")
        .to_owned();
    assert!(bundle.starts_with("release/stable-"), "{bundle}");
    let manifest =
        artifact(&result, &format!("{bundle}/manifest.json")).expect("manifest uploaded");
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(manifest["model_package_arn"], arn);
    assert_eq!(manifest["version"], 1);
    assert_eq!(manifest["approval"], "Approved");
    assert_eq!(manifest["metrics"]["accuracy"], 0.91);
    assert_eq!(manifest["gates"][1]["metric"], "f1");
    assert!(artifact(&result, &format!("{bundle}/deploy.json")).is_some_and(|d| d.contains(&arn)));
}

#[test]
fn auto_on_a_feature_branch_stays_pending_and_says_why() {
    let w = world();
    let upstream = train(&w, "0.91", "0.8");
    let result = run(
        &w,
        &register_job(
            &upstream,
            &format!(
                "  SAGEMAKER_MODEL_PACKAGE_GROUP: {GROUP}\n  SAGEMAKER_APPROVAL: auto\n  SAGEMAKER_APPROVAL_GATES: \"accuracy>=0.8\"\n"
            ),
            "ref: feature/fast\nprotected: false\n",
        ),
    );
    let log = result.plain_log();
    assert_eq!(result.outcome, JobOutcome::Success, "{log}");
    assert!(
        log.contains("but the ref is not protected; left pending"),
        "{log}"
    );
    let dotenv = result.dotenv().expect("dotenv");
    assert_eq!(
        get(&dotenv, "SAGEMAKER_MODEL_APPROVAL"),
        Some("PendingManualApproval")
    );
    assert!(
        get(&dotenv, "SAGEMAKER_RELEASE_BUNDLE")
            .is_some_and(|b| b.starts_with("release/candidate-feature-fast-")),
        "{dotenv:?}"
    );
}

#[test]
fn a_failing_gate_shows_in_the_table_and_rejects_or_fails_as_configured() {
    let w = world();
    let upstream = train(&w, "0.91", "0.5");
    let gates = "  SAGEMAKER_APPROVAL_GATES: \"accuracy>=0.8,f1>=0.7\"\n";
    let rejected = run(
        &w,
        &register_job(
            &upstream,
            &format!(
                "  SAGEMAKER_MODEL_PACKAGE_GROUP: {GROUP}\n  SAGEMAKER_APPROVAL: auto\n  SAGEMAKER_GATE_FAILURE: reject\n{gates}"
            ),
            "protected: true\n",
        ),
    );
    let log = rejected.plain_log();
    assert_eq!(rejected.outcome, JobOutcome::Success, "{log}");
    assert!(log.contains("f1        >= 0.7  0.5    FAIL"), "{log}");
    assert!(
        log.contains("gate failed: f1>=0.7 (value 0.5); rejected"),
        "{log}"
    );
    let arn = get(&rejected.dotenv().unwrap(), "SAGEMAKER_MODEL_PACKAGE_ARN")
        .unwrap()
        .to_owned();
    assert_eq!(
        describe(&w, &arn)
            .model_approval_status()
            .map(|s| s.as_str()),
        Some("Rejected")
    );

    let failed = run(
        &w,
        &register_job(
            &upstream,
            &format!(
                "  SAGEMAKER_MODEL_PACKAGE_GROUP: {GROUP}\n  SAGEMAKER_GATE_FAILURE: fail\n{gates}"
            ),
            "",
        ),
    );
    let log = failed.plain_log();
    assert_eq!(failed.outcome, JobOutcome::Failed { exit_code: 1 }, "{log}");
    assert!(
        log.lines()
            .any(|l| l.starts_with("ERROR: gate failed: f1>=0.7 (value 0.5)")),
        "{log}"
    );
    // The version exists, pending, and the job still handed it on.
    let dotenv = failed.dotenv().expect("dotenv even on failure");
    assert_eq!(
        get(&dotenv, "SAGEMAKER_MODEL_APPROVAL"),
        Some("PendingManualApproval")
    );
    assert_eq!(versions(&w), 2);
}

#[test]
fn re_running_the_stage_creates_no_second_version() {
    let w = world();
    let upstream = train(&w, "0.91", "0.8");
    let yaml = register_job(
        &upstream,
        &format!("  SAGEMAKER_MODEL_PACKAGE_GROUP: {GROUP}\n"),
        "id: 777000\n",
    );
    let first = run(&w, &yaml);
    assert_eq!(first.outcome, JobOutcome::Success, "{}", first.plain_log());
    // The same job again (a retried stage): its state file is gone after cleanup, so the
    // version is found by the job id in its customer metadata.
    let again = run(&w, &yaml);
    let log = again.plain_log();
    assert_eq!(again.outcome, JobOutcome::Success, "{log}");
    assert!(log.contains("registered earlier by this job"), "{log}");
    assert_eq!(versions(&w), 1);
    assert_eq!(w.count("SageMaker.CreateModelPackage"), 1);
}

#[test]
fn bad_register_settings_are_refused_and_create_nothing() {
    let w = world();
    let upstream = train(&w, "0.91", "0.8");
    let creates = |w: &World| {
        w.calls()
            .iter()
            .filter(|c| {
                c.contains("ModelPackage") && !c.contains("Describe") && !c.contains("List")
            })
            .count()
    };
    let before = creates(&w);
    for (upstream, vars, extra, expected) in [
        (
            Vec::new(),
            format!(
                "  SAGEMAKER_MODEL_PACKAGE_GROUP: {GROUP}\n  SAGEMAKER_INFERENCE_IMAGE: {ECR_IMAGE}\n"
            ),
            "",
            "SAGEMAKER_MODEL_DATA: no model to register",
        ),
        (
            upstream.clone(),
            "  SAGEMAKER_MODEL_PACKAGE_GROUP: other-group\n".to_owned(),
            "",
            "SAGEMAKER_MODEL_PACKAGE_GROUP: \"other-group\" is not allowed by policy.register.groups",
        ),
        (
            upstream.clone(),
            format!(
                "  SAGEMAKER_MODEL_PACKAGE_GROUP: {GROUP}\n  SAGEMAKER_INFERENCE_IMAGE: python:3.12\n"
            ),
            "",
            "SAGEMAKER_INFERENCE_IMAGE: \"python:3.12\" is not an ECR image",
        ),
        (
            upstream.clone(),
            format!(
                "  SAGEMAKER_MODEL_PACKAGE_GROUP: {GROUP}\n  SAGEMAKER_APPROVAL_GATES: \"accuracy=>0.8\"\n"
            ),
            "",
            "SAGEMAKER_APPROVAL_GATES: \"accuracy=>0.8\": the metric name must be",
        ),
        (
            upstream.clone(),
            format!(
                "  SAGEMAKER_MODEL_PACKAGE_GROUP: {GROUP}\n  SAGEMAKER_APPROVAL_GATES: \"auc>=0.9\"\n"
            ),
            "",
            "gate auc>=0.9 names metric \"auc\" but no source has it",
        ),
        (
            upstream.clone(),
            format!("  SAGEMAKER_MODEL_PACKAGE_GROUP: {GROUP}\n  SAGEMAKER_APPROVAL: approved\n"),
            "ref: feature/x\n",
            "SAGEMAKER_APPROVAL: approved on the unprotected ref \"feature/x\": only [pending, auto] is allowed there",
        ),
    ] {
        let result = run(&w, &register_job(&upstream, &vars, extra));
        let log = result.plain_log();
        assert_eq!(result.outcome, JobOutcome::Failed { exit_code: 1 }, "{log}");
        assert!(
            log.lines()
                .any(|l| l.starts_with("ERROR: ") && l.contains(expected)),
            "{expected:?} missing in:\n{log}"
        );
        assert!(
            !result.run_stages().contains(&"build_script"),
            "refused at prepare"
        );
    }
    assert_eq!(creates(&w), before, "nothing created");
}

#[test]
fn the_model_archive_can_travel_in_the_bundle_under_the_runners_cap() {
    let w = world();
    let upstream = train(&w, "0.91", "0.8");
    let result = run(
        &w,
        &register_job(
            &upstream,
            &format!(
                "  SAGEMAKER_MODEL_PACKAGE_GROUP: {GROUP}\n  SAGEMAKER_BUNDLE_MODEL: \"true\"\n"
            ),
            "",
        ),
    );
    let log = result.plain_log();
    assert_eq!(result.outcome, JobOutcome::Success, "{log}");
    let bundle = get(&result.dotenv().unwrap(), "SAGEMAKER_RELEASE_BUNDLE")
        .unwrap()
        .to_owned();
    let copied = std::fs::read(
        result
            .uploaded_artifacts_dir
            .join("archive")
            .join(format!("{bundle}/model.tar.gz")),
    )
    .expect("model archive in the bundle");
    let model = get(&upstream, "SAGEMAKER_MODEL_DATA").unwrap();
    let (bucket, key) = model
        .strip_prefix("s3://")
        .unwrap()
        .split_once('/')
        .unwrap();
    let original =
        w.rt.block_on(w.s3.get_object().bucket(bucket).key(key).send())
            .unwrap();
    let original = w.rt.block_on(original.body.collect()).unwrap().into_bytes();
    assert_eq!(
        copied,
        original.to_vec(),
        "the same bytes as the registered model"
    );
    assert!(
        log.contains(&format!(
            "Copied the model archive ({} bytes)",
            original.len()
        )),
        "{log}"
    );
}

#[test]
fn with_a_staging_kms_key_the_metrics_file_and_the_model_are_encrypted_with_it() {
    let w = world();
    let key = "arn:aws:kms:us-east-1:123456789012:key/0b6d1f0e-5e43-4b8e-9a8e-9d3c0c5f1a21";
    w.write_config(&w.config_text(POLICY).replace(
        "[staging]\n",
        &format!("[staging]\nkms_key_id = \"{key}\"\n"),
    ))
    .unwrap();
    let upstream = train(&w, "0.91", "0.8");
    let result = run(
        &w,
        &register_job(
            &upstream,
            &format!("  SAGEMAKER_MODEL_PACKAGE_GROUP: {GROUP}\n"),
            "",
        ),
    );
    assert_eq!(
        result.outcome,
        JobOutcome::Success,
        "{}",
        result.plain_log()
    );
    let model = get(&upstream, "SAGEMAKER_MODEL_DATA").expect("model data");
    let metrics = model.replace("model.tar.gz", &format!("metrics-{}.json", result.id));
    for uri in [model, metrics.as_str()] {
        let (bucket, object) = uri
            .strip_prefix("s3://")
            .and_then(|r| r.split_once('/'))
            .expect("an s3 uri");
        let head =
            w.rt.block_on(w.s3.head_object().bucket(bucket).key(object).send())
                .unwrap_or_else(|e| panic!("{uri}: {e:?}"));
        assert_eq!(
            head.server_side_encryption().map(|s| s.as_str()),
            Some("aws:kms"),
            "{uri}"
        );
        assert_eq!(head.ssekms_key_id(), Some(key), "{uri}");
    }
}
