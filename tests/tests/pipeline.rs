//! End-to-end: the example project's `.gitlab-ci.yml` (`examples/ml-pipeline/`), run as GitLab
//! would run it for a merge request (then closed) and for the default branch, through the
//! runner emulator and the real executor against the AWS simulator, set up exactly as the demo
//! sets it up (`tests/demo/setup_aws.py`, `tests/demo/executor.toml`).

#![allow(
    clippy::unwrap_used,
    reason = "an integration test reports failure by panicking"
)]

use std::process::Command;

use aws_config::BehaviorVersion;
use e2e::harness::{REGION, World};
use e2e::paths::workspace_root;
use e2e::pipeline::{JobStatus, PipelineRun, PipelineSource, PipelineSpec, RunOptions};
use e2e::runner::Project;

/// A world whose executor config is the demo's, with the demo's AWS resources.
fn demo_world() -> World {
    let w = World::new("");
    let root = workspace_root();
    let setup = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/demo/setup_aws.py"))
        .envs(w.sim.aws_env())
        .output()
        .unwrap();
    assert!(
        setup.status.success(),
        "setup_aws.py: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let out = String::from_utf8(setup.stdout).unwrap();
    let (subnets, groups) = out.trim().split_once(' ').unwrap();
    let template = std::fs::read_to_string(root.join("tests/demo/executor.toml")).unwrap();
    let helper = e2e::paths::executor_binary().unwrap();
    let config = template
        .replace("@ROOT@", &w.root().display().to_string())
        .replace("@SUBNETS@", subnets)
        .replace("@GROUPS@", groups)
        .replace("@HELPER@", &helper.display().to_string());
    w.write_config(&config).unwrap();
    w
}

fn run(w: &World, source: PipelineSource, branch: &str, stop: bool) -> PipelineRun {
    let spec = PipelineSpec {
        file: workspace_root().join("examples/ml-pipeline/.gitlab-ci.yml"),
        source,
        branch: branch.to_owned(),
        default_branch: "main".to_owned(),
        merge_request_iid: 17,
        project: Project {
            path: "ml/churn-model".to_owned(),
            id: 42,
        },
        pipeline_id: None,
    };
    let options = RunOptions {
        stop_environments: stop,
        ..RunOptions::default()
    };
    e2e::pipeline::run(&w.runner, &spec, &options).unwrap()
}

/// A job's own dotenv value.
fn dotenv(run: &PipelineRun, job: &str, key: &str) -> String {
    let record = run.job(job).unwrap();
    record
        .result
        .as_ref()
        .and_then(|r| r.dotenv_value(key))
        .unwrap_or_else(|| panic!("{job} has no {key} in its dotenv report"))
}

/// The value a job was sent for `key`.
fn sent(run: &PipelineRun, job: &str, key: &str) -> String {
    run.job(job)
        .unwrap()
        .variable(key)
        .unwrap_or_else(|| panic!("{job} was not sent {key}"))
        .to_owned()
}

fn endpoint_status(w: &World, name: &str) -> Option<String> {
    w.rt.block_on(w.sagemaker.describe_endpoint().endpoint_name(name).send())
        .ok()
        .map(|d| {
            d.endpoint_status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default()
        })
}

fn assert_passed(run: &PipelineRun) {
    let summary = run.summary().join("\n");
    let logs: String = run
        .jobs
        .iter()
        .filter(|j| !matches!(j.status, JobStatus::Success | JobStatus::Manual))
        .filter_map(|j| j.result.as_ref().map(|r| r.summary()))
        .collect();
    assert!(run.passed(), "{summary}\n{logs}");
}

#[test]
fn merge_request_then_default_branch_pipelines_of_the_example() {
    let w = demo_world();

    // A merge request: a candidate endpoint, torn down by the on_stop job when it closes.
    let mr = run(
        &w,
        PipelineSource::MergeRequestEvent,
        "feature/better-features",
        true,
    );
    assert_passed(&mr);
    assert_eq!(
        mr.ran(),
        [
            "unit-tests",
            "build-api-image",
            "train",
            "register",
            "deploy-candidate",
            "stop-candidate"
        ]
    );
    let excluded: Vec<&str> = mr.plan.excluded.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(excluded, ["deploy-stable", "deploy-api"]);
    // The manual stop job did not run with the pipeline; closing the merge request ran it.
    assert_eq!(
        mr.jobs
            .iter()
            .filter(|j| j.name == "stop-candidate")
            .count(),
        2
    );
    assert_eq!(
        mr.jobs
            .iter()
            .find(|j| j.name == "stop-candidate")
            .unwrap()
            .status,
        JobStatus::Manual
    );
    // Dotenv reports reach the jobs that need them.
    assert_eq!(
        sent(&mr, "register", "SAGEMAKER_MODEL_DATA"),
        dotenv(&mr, "train", "SAGEMAKER_MODEL_DATA")
    );
    let package = dotenv(&mr, "register", "SAGEMAKER_MODEL_PACKAGE_ARN");
    assert_eq!(
        sent(&mr, "deploy-candidate", "SAGEMAKER_MODEL_PACKAGE_ARN"),
        package
    );
    assert_eq!(
        dotenv(&mr, "register", "SAGEMAKER_MODEL_APPROVAL"),
        "PendingManualApproval"
    );
    assert_eq!(
        sent(&mr, "stop-candidate", "SAGEMAKER_ENDPOINT_NAME"),
        "churn-model-candidate-mr17"
    );
    // The train job's metrics report was uploaded.
    let train = mr.job("train").unwrap().result.as_ref().unwrap();
    assert!(
        train
            .uploaded_artifacts_dir
            .join("metrics/sagemaker-metrics.txt")
            .is_file(),
        "{}",
        train.summary()
    );
    let env = &mr.environments[0];
    assert_eq!(env.name, "review/17");
    assert_eq!(env.deployed_by, "deploy-candidate");
    assert_eq!(env.stopped_by.as_deref(), Some("stop-candidate"));
    assert_eq!(
        env.url.as_deref(),
        Some(dotenv(&mr, "deploy-candidate", "SAGEMAKER_ENDPOINT_URL").as_str())
    );
    assert_eq!(endpoint_status(&w, "churn-model-candidate-mr17"), None);

    // The default branch: the stable endpoint, and the API moved to the image kaniko built.
    let main = run(&w, PipelineSource::Push, "main", false);
    assert_passed(&main);
    assert_eq!(
        main.ran(),
        [
            "unit-tests",
            "build-api-image",
            "train",
            "register",
            "deploy-stable",
            "deploy-api"
        ]
    );
    assert_eq!(
        dotenv(&main, "register", "SAGEMAKER_MODEL_APPROVAL"),
        "Approved"
    );
    assert_eq!(
        endpoint_status(&w, "churn-model-stable").as_deref(),
        Some("InService")
    );
    let short_sha: String = main.context.sha.chars().take(8).collect();
    let image = format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/api/churn:{short_sha}");
    assert_eq!(dotenv(&main, "build-api-image", "API_IMAGE"), image);
    assert_eq!(sent(&main, "deploy-api", "ECS_IMAGE"), image);

    // ECR holds what the kaniko job pushed, under the digest its log printed.
    let build_log = main
        .job("build-api-image")
        .unwrap()
        .result
        .as_ref()
        .unwrap()
        .plain_log();
    let pushed = build_log
        .lines()
        .find_map(|l| {
            l.strip_prefix("INFO Pushed 123456789012.dkr.ecr.us-east-1.amazonaws.com/api/churn@")
        })
        .unwrap_or_else(|| panic!("no push line in:\n{build_log}"))
        .to_owned();
    let sdk = w.rt.block_on(
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(w.sim.endpoint())
            .region(aws_config::Region::new(REGION))
            .credentials_provider(aws_sdk_ecr::config::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .load(),
    );
    let ecr = aws_sdk_ecr::Client::new(&sdk);
    let images =
        w.rt.block_on(
            ecr.describe_images()
                .repository_name("api/churn")
                .image_ids(
                    aws_sdk_ecr::types::ImageIdentifier::builder()
                        .image_tag(&short_sha)
                        .build(),
                )
                .send(),
        )
        .unwrap();
    assert_eq!(
        images.image_details()[0].image_digest(),
        Some(pushed.as_str())
    );

    // The ECS service runs that image now.
    let services =
        w.rt.block_on(
            w.ecs
                .describe_services()
                .cluster("ml-ci")
                .services("churn-api")
                .send(),
        )
        .unwrap();
    let td = services.services()[0].task_definition().unwrap().to_owned();
    let described =
        w.rt.block_on(w.ecs.describe_task_definition().task_definition(td).send())
            .unwrap();
    let web = described.task_definition().unwrap().container_definitions()[0].clone();
    assert_eq!(web.image(), Some(image.as_str()));
}
