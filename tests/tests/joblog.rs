//! Snapshot tests of what the job log shows for the executor's own stage: a training job that
//! succeeds, one whose script fails, a two-instance job, and a Fargate task, run for real on the
//! simulator. The rendered log is normalised (times, ids, sizes, temp paths), so a snapshot pins
//! the structure users read: the sections, the order of status lines and script lines, and the
//! final lines.
//!
//! Two normalisations are about timing, not content: lines of different training hosts run
//! concurrently, so a run of consecutive `[algo-N]` lines is grouped by host; and the Fargate task's
//! intermediate `Task <STATUS>` samples depend on when DescribeTasks happened to look, so they
//! are left out (the final `Task STOPPED` line stays).

#![allow(
    clippy::unwrap_used,
    reason = "an integration test reports failure by panicking"
)]

use e2e::harness::{ECR_IMAGE, POLICY, World};
use e2e::runner::JobResult;
use regex::Regex;

/// The executor's own output for the user-script stage, readable and normalised.
fn rendered(result: &JobResult) -> String {
    let marker =
        Regex::new(r"\x1b\[0Ksection_(start|end):[0-9]+:([A-Za-z0-9_.-]+)(\[[^\]]*\])?\r\x1b\[0K")
            .unwrap();
    let ansi = Regex::new(r"\x1b\[[0-9;]*[A-Za-z]").unwrap();
    let mut out: Vec<String> = Vec::new();
    for line in result
        .lines
        .iter()
        .filter(|l| l.stage.as_deref() == Some("build_script"))
    {
        let text = marker.replace_all(&line.text, |c: &regex::Captures<'_>| {
            let kind = if &c[1] == "start" { ">>" } else { "<<" };
            let opts = c.get(3).map(|m| m.as_str()).unwrap_or_default();
            format!("{kind} {}{opts} ", &c[2])
        });
        let text = ansi.replace_all(&text, "");
        for part in text.split('\n') {
            let part = part.trim_end();
            if !part.is_empty() {
                out.push(normalise(part));
            }
        }
    }
    sort_host_runs(&mut out);
    out.retain(|l| !l.starts_with("[mm:ss] Task ") || l.starts_with("[mm:ss] Task STOPPED"));
    out.join("\n")
}

fn normalise(line: &str) -> String {
    let rules: &[(&str, &str)] = &[
        (r"\[[0-9]{2}:[0-9]{2}\]", "[mm:ss]"),
        (r"/tmp/[A-Za-z0-9_.-]+", "/tmp/<dir>"),
        (r"gl-1-[0-9]+", "gl-1-<job>"),
        (r"/-/jobs/[0-9]+", "/-/jobs/<job>"),
        (
            r"sagemaker-executor/1/[0-9]+/",
            "sagemaker-executor/1/<job>/",
        ),
        (r"builds/[0-9]+/", "builds/<job>/"),
        (r"\.sme/[0-9]+", ".sme/<job>"),
        (
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "<uuid>",
        ),
        (r"sme-[0-9a-f]{12}:[0-9]+", "sme-<hash>:<rev>"),
        (r"[0-9]+ bytes", "<n> bytes"),
        (r"[0-9]+ compressed", "<n> compressed"),
        (r"Staged [0-9]+ files", "Staged <n> files"),
        (r"workspace: [0-9]+ files", "workspace: <n> files"),
        (r"[0-9]+ objects", "<n> objects"),
        (r"seconds: [0-9]+", "seconds: <n>"),
        (r"[0-9]+ CPUs", "<n> CPUs"),
        (r"-[0-9]{10}\b", "-<epoch>"),
    ];
    let mut text = line.to_owned();
    for (pattern, replacement) in rules {
        text = Regex::new(pattern)
            .unwrap()
            .replace_all(&text, *replacement)
            .into_owned();
    }
    text
}

/// Groups each run of consecutive `[algo-N] ...` lines by host, keeping each host's own order
/// (hosts run concurrently; their interleaving is not part of the contract).
fn sort_host_runs(lines: &mut [String]) {
    let mut i = 0;
    while i < lines.len() {
        if !lines[i].starts_with("[algo-") {
            i += 1;
            continue;
        }
        let start = i;
        while i < lines.len() && lines[i].starts_with("[algo-") {
            i += 1;
        }
        lines[start..i].sort_by_key(|l| l.split(']').next().unwrap_or_default().to_owned());
    }
}

fn train_job(script: &str, extra: &str) -> String {
    format!(
        "name: train\nimage: {ECR_IMAGE}\nscript:\n{script}\nsource:\n  README.md: \"model repo\\n\"\n{extra}"
    )
}

#[test]
fn a_successful_training_job() {
    let w = World::new(POLICY);
    let fixture = w.fixture(&train_job(
        "  - for i in 1 2 3; do echo \"epoch=$i loss=0.$((9-i))\"; done\n  - mkdir -p \"$SM_MODEL_DIR\" && echo weights > \"$SM_MODEL_DIR/model.bin\"",
        "variables: {SAGEMAKER_METRIC_loss: \"loss=([0-9.]+)\"}\n",
    ));
    let result = w.runner.run(&fixture).unwrap();
    insta::assert_snapshot!(rendered(&result));
}

#[test]
fn a_training_job_whose_script_fails() {
    let w = World::new(POLICY);
    let fixture = w.fixture(&train_job("  - echo about to fail\n  - exit 3", ""));
    let result = w.runner.run(&fixture).unwrap();
    insta::assert_snapshot!(rendered(&result));
}

#[test]
fn a_two_instance_training_job() {
    let w = World::new(POLICY);
    let fixture = w.fixture(&train_job(
        "  - echo \"hello from $SM_CURRENT_HOST of $SM_NUM_HOSTS\"",
        "variables: {SAGEMAKER_INSTANCE_COUNT: \"2\"}\n",
    ));
    let result = w.runner.run(&fixture).unwrap();
    insta::assert_snapshot!(rendered(&result));
}

#[test]
fn a_fargate_task() {
    let w = World::fargate(e2e::harness::world::TASK_ROLE);
    let fixture = w.fixture(
        "name: evaluate\nimage: public.ecr.aws/docker/library/alpine:3.20\nvariables:\n  SAGEMAKER_ACTION: fargate\nscript:\n  - echo evaluating\n  - echo done > result.txt\nsource:\n  README.md: \"app repo\\n\"\n",
    );
    let result = w.runner.run(&fixture).unwrap();
    insta::assert_snapshot!(rendered(&result));
}
