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
    let mut tags = vec![
        Tag::builder()
            .key("gitlab:job-id")
            .value(job.to_string())
            .build(),
    ];
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
    put(&w, "sagemaker-executor/output/gl-9-901/output/model.tar.gz");
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
        row("output/gl-9-901").is_none(),
        "model output is not a staged workspace: {out}"
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
    assert!(w.keys("sagemaker-executor/9/901/").is_empty());
    assert_eq!(w.keys("sagemaker-executor/output/").len(), 1);
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
