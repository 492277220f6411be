//! `runner-setup/install.sh` on this machine, into temp dirs: it checks every prerequisite
//! before touching anything, never hides a config that does not validate, and prints the
//! `gitlab-runner register` commands that `config.toml.example` wires up.

#![allow(
    clippy::unwrap_used,
    reason = "an integration test reports failure by panicking"
)]

use std::path::Path;
use std::process::{Command, Output};

fn install(root: &Path, args: &[&str]) -> Output {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Command::new("bash")
        .arg(repo.join("runner-setup/install.sh"))
        .args(args)
        .env("SME_PREFIX", root.join("prefix"))
        .env("SME_ETC", root.join("etc"))
        .env("SME_VAR", root.join("var"))
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

#[test]
fn a_missing_runner_user_stops_the_install_before_anything_is_touched() {
    if !is_root() {
        eprintln!("install.sh needs root; this test runs where the tests run as root (CI)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = e2e::paths::executor_binary().unwrap();
    let out = install(dir.path(), &[bin.to_str().unwrap(), "no-such-runner-user"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("the runner user 'no-such-runner-user' does not exist"),
        "{}",
        text(&out)
    );
    for sub in ["prefix", "etc", "var"] {
        assert!(!dir.path().join(sub).exists(), "{sub} was created");
    }
    let out = install(dir.path(), &["/nonexistent/sagemaker-executor", "root"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no executable at"), "{}", text(&out));
}

#[test]
fn an_install_validates_the_config_and_prints_the_register_commands() {
    if !is_root() {
        eprintln!("install.sh needs root; this test runs where the tests run as root (CI)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = e2e::paths::executor_binary().unwrap();
    let out = install(dir.path(), &[bin.to_str().unwrap(), "root"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(dir.path().join("prefix/bin/sagemaker-executor").is_file());
    assert!(
        dir.path()
            .join("prefix/bin/sagemaker-executor-run")
            .is_file()
    );
    assert!(dir.path().join("etc/config.toml").is_file());
    assert!(dir.path().join("var/builds").is_dir() && dir.path().join("var/cache").is_dir());
    let config = dir.path().join("etc/config.toml");
    let installed = dir.path().join("prefix/bin/sagemaker-executor");
    for needle in [
        "gitlab-runner register --non-interactive --url ${GITLAB_URL} --token ${SAGEMAKER_RUNNER_TOKEN} --executor custom --description sagemaker".to_owned(),
        format!(
            "--custom-config-exec {}-run --custom-config-args --config --custom-config-args {} --custom-config-args config",
            installed.display(),
            config.display()
        ),
        format!(
            "--custom-run-exec {}-run --custom-run-args --config",
            installed.display()
        ),
        "--custom-cleanup-args cleanup".to_owned(),
        "--description fargate".to_owned(),
    ] {
        assert!(shown.contains(&needle), "{needle:?} missing in:\n{shown}");
    }

    // A broken config is never hidden: the install stops and shows the problems.
    std::fs::write(&config, "region = \"us-east-1\"\n[polcy]\n").unwrap();
    let out = install(dir.path(), &[bin.to_str().unwrap(), "root"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("polcy: unknown key"), "{shown}");
    assert!(shown.contains("does not validate"), "{shown}");
}
