//! A repository is hostile: its files and symlinks must not let a job read or write runner-host
//! files through the executor. Each case runs a real job through the runner emulator and the
//! executor against the simulator, and checks the outcome, the one error line, that no secret
//! reached the log, that nothing was created in AWS, and that the host file is untouched.

#![allow(
    clippy::unwrap_used,
    reason = "an integration test reports failure by panicking"
)]

mod support;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use e2e::runner::JobOutcome;
use support::{ECR_IMAGE, POLICY, World, training_job_name};

/// What a runner-host file holds; it must never show up in a job log.
const HOST_SECRET: &str = "runner-host-secret-7f3a9c";

/// A file outside every job dir, standing for `/etc/shadow`, `~/.aws/credentials`, ...
fn host_file(w: &World, name: &str) -> PathBuf {
    let path = w.dir.path().join(name);
    std::fs::write(&path, format!("{HOST_SECRET}\n")).unwrap();
    path
}

/// A repository directory under the world's dir with `README.md` and the given symlinks.
fn repo_with_links(w: &World, links: &[(&str, &Path)]) -> &'static str {
    let repo = w.dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("README.md"), "hostile repo\n").unwrap();
    for (at, target) in links {
        let at = repo.join(at);
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        symlink(target, at).unwrap();
    }
    "repo"
}

/// AWS calls that create or upload something.
fn creating_calls(w: &World) -> Vec<String> {
    w.calls()
        .into_iter()
        .filter(|c| {
            c.contains(".Create")
                || c.contains(".RunTask")
                || c.contains(".Register")
                || c.strip_prefix("S3.PUT /")
                    .or_else(|| c.strip_prefix("S3.POST /"))
                    // An object key after the bucket (the test's own CreateBucket has none).
                    .is_some_and(|path| {
                        path.split_once('/').is_some_and(|(_, key)| !key.is_empty())
                    })
        })
        .collect()
}

fn spec_job(spec: &str, source: &str) -> String {
    format!(
        "name: hostile\nimage: {ECR_IMAGE}\nvariables:\n  SAGEMAKER_SPEC: {spec:?}\nscript: [echo SHOULD-NOT-RUN]\nsource: {source}\n"
    )
}

/// Runs `fixture` expecting a build failure whose log has `expected` on an error line and no
/// secret, with nothing created in AWS.
fn assert_refused(w: &World, yaml: &str, expected: &str) {
    let result = w.runner.run(&w.fixture(yaml)).expect("job runs");
    let log = result.plain_log();
    assert_eq!(result.outcome, JobOutcome::Failed { exit_code: 1 }, "{log}");
    assert!(
        log.lines()
            .any(|l| l.starts_with("ERROR: ") && l.contains(expected)),
        "{expected:?} missing in:\n{log}"
    );
    assert!(!log.contains(HOST_SECRET), "a host file leaked:\n{log}");
    assert!(!log.contains("SHOULD-NOT-RUN\n"), "{log}");
    assert_eq!(creating_calls(w), Vec::<String>::new());
}

#[test]
fn a_spec_file_symlinked_to_a_host_file_is_refused_unread() {
    let w = World::new(POLICY);
    let secret = host_file(&w, "shadow");
    let source = repo_with_links(&w, &[("ci/spec.yaml", &secret)]);
    assert_refused(
        &w,
        &spec_job("ci/spec.yaml", source),
        "SAGEMAKER_SPEC: ci/spec.yaml: refused: it leads outside the project directory",
    );
}

#[test]
fn a_spec_file_reached_through_a_relative_link_out_of_the_checkout_is_refused() {
    let w = World::new(POLICY);
    host_file(&w, "credentials");
    // From <builds>/<job>/<group>/<project>/ci up to the world's dir.
    let up = Path::new("../../../../../../credentials");
    let source = repo_with_links(&w, &[("ci/spec.yaml", up), ("ci/dir", Path::new("/etc"))]);
    assert_refused(
        &w,
        &spec_job("ci/spec.yaml", source),
        "refused: it leads outside the project directory",
    );
    let w = World::new(POLICY);
    let source = repo_with_links(&w, &[("ci/dir", Path::new("/etc"))]);
    assert_refused(
        &w,
        &spec_job("ci/dir/passwd", source),
        "SAGEMAKER_SPEC: ci/dir/passwd: refused",
    );
}

#[test]
fn a_spec_path_with_dot_dot_or_absolute_is_refused() {
    for spec in ["../../../../etc/passwd", "/etc/passwd"] {
        let w = World::new(POLICY);
        let source = repo_with_links(&w, &[]);
        assert_refused(
            &w,
            &spec_job(spec, source),
            "must be a relative path inside the project directory",
        );
    }
}

#[test]
fn a_deeply_nested_or_huge_spec_is_refused_fast_with_one_line() {
    let w = World::new(POLICY);
    let repo = w.dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let depth = 5_000;
    std::fs::write(
        repo.join("deep.yaml"),
        format!(
            "train:\n  tags: {}1{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        ),
    )
    .unwrap();
    std::fs::write(
        repo.join("huge.yaml"),
        format!("train:\n  tags:\n    a: \"{}\"\n", "x".repeat(200_000)),
    )
    .unwrap();
    assert_refused(
        &w,
        &spec_job("deep.yaml", "repo"),
        "SAGEMAKER_SPEC: deep.yaml: nested deeper than 32 levels",
    );
    assert_refused(
        &w,
        &spec_job("huge.yaml", "repo"),
        "SAGEMAKER_SPEC: huge.yaml: larger than the limit of 65536 bytes",
    );
}

#[test]
fn planted_output_links_are_replaced_and_host_files_stay_untouched() {
    let w = World::new(POLICY);
    let env_target = host_file(&w, "bashrc");
    let metrics_target = host_file(&w, "authorized_keys");
    let source = repo_with_links(
        &w,
        &[
            ("sagemaker.env", &env_target),
            ("sagemaker-metrics.txt", &metrics_target),
        ],
    );
    let yaml = format!(
        "name: train\nimage: {ECR_IMAGE}\nvariables: {{SAGEMAKER_METRIC_loss: \"loss=([0-9.]+)\"}}\nscript:\n  - echo loss=0.25\nsource: {source}\nartifacts:\n  reports: {{dotenv: sagemaker.env}}\n"
    );
    let result = w.runner.run(&w.fixture(&yaml)).expect("job runs");
    let log = result.plain_log();
    assert_eq!(result.outcome, JobOutcome::Success, "{log}");
    for target in [&env_target, &metrics_target] {
        assert_eq!(
            std::fs::read_to_string(target).unwrap(),
            format!("{HOST_SECRET}\n"),
            "{} was written through a planted link",
            target.display()
        );
    }
    let dotenv = result.dotenv().expect("dotenv uploaded");
    assert!(
        dotenv
            .iter()
            .any(|(k, v)| k == "SAGEMAKER_TRAINING_JOB_NAME"
                && *v == training_job_name(1, result.id)),
        "{dotenv:?}"
    );
    assert!(!log.contains(HOST_SECRET), "{log}");
}
