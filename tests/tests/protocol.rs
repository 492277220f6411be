//! End-to-end protocol tests: the real `sagemaker-executor` driven by the runner emulator
//! exactly as gitlab-runner would drive it. Nothing here needs AWS: the jobs use the local
//! stages, the `register` action (not served yet: its build_script fails cleanly) and policy
//! rejections, which must happen before any AWS call.
//!
//! Needs the binary: `cargo build --workspace --bins` first.

#![allow(
    clippy::unwrap_used,
    reason = "an integration test reports failure by panicking"
)]

use std::path::Path;
use std::time::Duration;

use e2e::harness::ExecutorSetup;
use e2e::runner::{
    ExecKind, ExitInfo, JobFixture, JobOutcome, JobResult, Runner, RunnerConfig, StopAction, Stream,
};

const WAIT: Duration = Duration::from_secs(120);

fn setup() -> ExecutorSetup {
    ExecutorSetup::new().expect("executor setup (run `cargo build --workspace --bins` first)")
}

/// A scratch dir the job's local stages (which run as the unprivileged `[local] user`) can
/// write to, as /tmp is.
fn scratch_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

fn fixture(yaml: &str) -> JobFixture {
    JobFixture::from_yaml(yaml, Path::new(".")).expect("fixture parses")
}

fn run_job(config: RunnerConfig, job: &JobFixture) -> JobResult {
    Runner::new(config)
        .unwrap()
        .start(job)
        .unwrap()
        .finish_within(WAIT)
        .expect("job finishes")
}

/// Job-log lines printed by one call (as sent: `prepare`, `build_script`, ...) on `stream`.
fn lines_of(result: &JobResult, stage: &str, stream: Stream) -> Vec<String> {
    result
        .lines
        .iter()
        .filter(|l| l.stage.as_deref() == Some(stage) && l.stream == stream)
        .map(|l| e2e::runner::strip_ansi(&l.text))
        .collect()
}

fn fixture_file(name: &str) -> JobFixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    JobFixture::load(&path).expect("fixture file parses")
}

const SECRET: &str = "reg-t0ken-abcdef123";

#[test]
fn register_job_runs_every_local_stage_and_fails_only_at_build_script() {
    let exec = setup();
    let job = fixture_file("register-local-stages.yaml");
    let result = run_job(exec.runner_config(), &job);

    assert_eq!(
        result.outcome,
        JobOutcome::Failed { exit_code: 1 },
        "{}",
        result.summary()
    );
    assert_eq!(
        result.stage_names(),
        [
            "config",
            "prepare",
            "prepare_script",
            "get_sources",
            "restore_cache",
            "download_artifacts",
            "build_script",
            "after_script",
            "archive_cache_on_failure",
            "upload_artifacts_on_failure",
            "cleanup_file_variables",
            "cleanup",
        ],
        "{}",
        result.summary()
    );
    for record in &result.stages {
        if record.name != "build_script" {
            assert!(record.succeeded(), "{record:?}\n{}", result.summary());
        }
    }
    // build_script: a build failure (exit 1) with BUILD_EXIT_CODE_FILE = 1 and a clear ERROR
    // line that names the action the way the user wrote it.
    let build = result.stage("build_script").unwrap();
    assert_eq!(build.exit, ExitInfo::Code(1));
    assert_eq!(build.exit_code_file.as_deref(), Some("1"));
    let build_lines: Vec<String> = result
        .lines
        .iter()
        .filter(|l| l.stage.as_deref() == Some("build_script"))
        .map(|l| e2e::runner::strip_ansi(&l.text))
        .collect();
    let errors: Vec<&String> = build_lines
        .iter()
        .filter(|l| l.starts_with("ERROR:"))
        .collect();
    assert_eq!(errors.len(), 1, "{build_lines:?}");
    assert!(
        errors[0].contains("SAGEMAKER_APPROVAL_METRICS_FILE: reports/eval.json: no such file"),
        "the error should name the setting and the file: {}",
        errors[0]
    );

    // config output: the contract's shape, per-job builds dir.
    let config = result.config_output.as_ref().expect("config output");
    let builds_dir = exec.builds_root.join(result.id.to_string());
    assert_eq!(config["builds_dir"], builds_dir.to_string_lossy().as_ref());
    assert_eq!(
        config["cache_dir"],
        exec.cache_root.to_string_lossy().as_ref()
    );
    assert_eq!(config["builds_dir_is_shared"], false);
    assert_eq!(config["driver"]["name"], "sagemaker-executor");
    assert!(config["driver"]["version"].is_string());
    assert_eq!(config["shell"], "bash");
    assert!(config["hostname"].is_string());

    // The local stages really ran: checkout, dependency, file variable, cache, artifacts.
    let log = result.plain_log();
    assert!(log.contains("after_script status=failed"), "{log}");
    assert!(log.contains("# churn model"), "{log}");
    assert!(
        log.contains("s3://ci-staging/jobs/1/output/model.tar.gz"),
        "{log}"
    );
    assert!(log.contains("owner: ml-team"), "{log}");
    assert_eq!(result.uploaded_files(), ["reports/register.json"]);
    assert!(
        exec.cache_root
            .join("ml/churn-model/pip/cache.tar")
            .is_file()
    );

    // cleanup removed the per-job builds dir.
    assert!(
        !builds_dir.exists(),
        "{} still exists",
        builds_dir.display()
    );
    // Secrets: masked in the job log, never in the runner (cleanup) log.
    assert!(!result.log.contains(SECRET));
    assert!(!result.runner_log.contains(SECRET), "{}", result.runner_log);
}

#[test]
fn local_stages_run_as_the_configured_unprivileged_user() {
    let exec = setup();
    // As an admin keeps it: the executor config readable by the executor's user only.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&exec.config_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let job = fixture(&format!(
        r#"
name: who
variables: {{SAGEMAKER_ACTION: register, SAGEMAKER_MODEL_PACKAGE_GROUP: ml-churn, SAGEMAKER_MODEL_DATA: s3://ci-staging/model.tar.gz, SAGEMAKER_INFERENCE_IMAGE: 123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/serve:1, EXECUTOR_CONFIG: "{}"}}
script: [echo x]
after_script:
  - 'echo "uid=$(id -u) gid=$(id -g) groups=$(id -G) home=$HOME"'
  - 'if cat "$EXECUTOR_CONFIG" >/dev/null 2>&1; then echo config-readable; else echo config-unreadable; fi'
  - 'touch "$CI_PROJECT_DIR/written-by-after-script" && echo project-writable'
"#,
        exec.config_path.display()
    ));
    let result = run_job(exec.runner_config(), &job);
    let log = result.plain_log();
    let user = nix::unistd::User::from_name(&e2e::harness::setup::local_user())
        .unwrap()
        .unwrap();
    let uid = user.uid.as_raw();
    let gid = user.gid.as_raw();
    assert!(
        log.contains(&format!(
            "Local stages run as user {} (uid {uid})",
            user.name
        )),
        "{}",
        result.summary()
    );
    // Only the user's own group: the executor's supplementary groups are dropped.
    assert!(
        log.contains(&format!("uid={uid} gid={gid} groups={gid} home=")),
        "{}",
        result.summary()
    );
    assert!(log.contains("project-writable"), "{}", result.summary());
    if nix::unistd::Uid::effective().is_root() {
        assert!(log.contains("config-unreadable"), "{}", result.summary());
    }
}

#[test]
fn local_stages_do_not_see_aws_credentials() {
    let exec = setup();
    let job = fixture(
        r#"
name: creds
variables: {SAGEMAKER_ACTION: register, SAGEMAKER_MODEL_PACKAGE_GROUP: ml-churn, SAGEMAKER_MODEL_DATA: s3://ci-staging/model.tar.gz, SAGEMAKER_INFERENCE_IMAGE: 123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/serve:1, SAGEMAKER_APPROVAL_GATES: accuracy>=0.8, SAGEMAKER_APPROVAL_METRICS_FILE: reports/eval.json}
script: [echo x]
after_script:
  - 'echo "key=${AWS_ACCESS_KEY_ID:-unset} secret=${AWS_SECRET_ACCESS_KEY:-unset}"'
"#,
    );
    let result = run_job(exec.runner_config(), &job);
    let log = result.plain_log();
    assert!(
        log.contains("key=unset secret=unset"),
        "AWS credentials leaked into a local stage:\n{}",
        result.summary()
    );
    assert!(
        !result
            .unmasked_log
            .contains("emulator-secret-access-key-value")
    );
}

#[test]
fn a_local_stage_exit_code_reaches_the_job_through_build_exit_code_file() {
    let exec = setup();
    let job = fixture(
        r#"
name: hook-exit
variables: {SAGEMAKER_ACTION: register, SAGEMAKER_MODEL_PACKAGE_GROUP: ml-churn, SAGEMAKER_MODEL_DATA: s3://ci-staging/model.tar.gz, SAGEMAKER_INFERENCE_IMAGE: 123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/serve:1, SAGEMAKER_APPROVAL_GATES: accuracy>=0.8, SAGEMAKER_APPROVAL_METRICS_FILE: reports/eval.json}
hooks: {pre_get_sources_script: ["echo before-exit", "exit 3"]}
script: [echo never]
after_script: [echo never-after]
"#,
    );
    let result = run_job(exec.runner_config(), &job);
    assert_eq!(
        result.outcome,
        JobOutcome::Failed { exit_code: 3 },
        "{}",
        result.summary()
    );
    let get_sources = result.stage("get_sources").unwrap();
    assert_eq!(
        get_sources.exit,
        ExitInfo::Code(1),
        "BUILD_FAILURE_EXIT_CODE"
    );
    assert_eq!(get_sources.exit_code_file.as_deref(), Some("3"));
    assert_eq!(
        result.stage_names(),
        [
            "config",
            "prepare",
            "prepare_script",
            "get_sources",
            "cleanup_file_variables",
            "cleanup"
        ],
        "{}",
        result.summary()
    );
    assert!(result.plain_log().contains("before-exit"));
    assert!(!exec.builds_root.join(result.id.to_string()).exists());
}

#[test]
fn config_prints_exactly_one_json_object_and_is_repeatable() {
    let exec = setup();
    let mut job = fixture(
        "name: cfg\nvariables: {SAGEMAKER_ACTION: register, SAGEMAKER_MODEL_PACKAGE_GROUP: ml-churn, SAGEMAKER_MODEL_DATA: s3://ci-staging/model.tar.gz, SAGEMAKER_INFERENCE_IMAGE: 123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/serve:1, SAGEMAKER_APPROVAL_GATES: accuracy>=0.8, SAGEMAKER_APPROVAL_METRICS_FILE: reports/eval.json}\nscript: [echo x]\n",
    );
    // The same job id twice: config must give the same answer (retries re-run it).
    job.id = Some(7_000_001);
    let first = run_job(exec.runner_config(), &job);
    let second = run_job(exec.runner_config(), &job);
    for result in [&first, &second] {
        let stdout = result.config_stdout.as_deref().expect("config stdout");
        let value: serde_json::Value = serde_json::from_str(stdout)
            .unwrap_or_else(|e| panic!("config stdout is not one JSON value ({e}): {stdout:?}"));
        assert!(value.is_object(), "{stdout:?}");
        let trimmed = stdout.trim();
        assert!(
            trimmed.starts_with('{') && trimmed.ends_with('}'),
            "{stdout:?}"
        );
        assert_eq!(result.count(ExecKind::Config), 1, "{}", result.summary());
    }
    assert_eq!(first.config_stdout, second.config_stdout);
    assert_eq!(
        first.config_output.as_ref().unwrap()["builds_dir"],
        exec.builds_root.join("7000001").to_string_lossy().as_ref()
    );
}

#[test]
fn policy_rejection_at_prepare_is_one_line_and_a_build_failure() {
    // Roles allowed, so that the instance type is the job's only violation.
    let exec = ExecutorSetup::with_extra_config("roles = [\"arn:aws:iam::123456789012:role/*\"]\n")
        .unwrap();
    let job = fixture(
        r#"
name: too-big
image: 123456789012.dkr.ecr.us-east-1.amazonaws.com/train:1
variables:
  SAGEMAKER_ACTION: train
  SAGEMAKER_INSTANCE_TYPE: ml.p5.48xlarge
  SAGEMAKER_ROLE_ARN: arn:aws:iam::123456789012:role/sagemaker-training
script: [python train.py]
"#,
    );
    let result = run_job(exec.runner_config(), &job);
    assert!(
        matches!(result.outcome, JobOutcome::Failed { .. }),
        "{}",
        result.summary()
    );
    // A build failure is not retried; cleanup still runs.
    assert_eq!(
        result.stage_names(),
        ["config", "prepare", "cleanup"],
        "{}",
        result.summary()
    );
    let prepare = result.stage("prepare").unwrap();
    assert_eq!(prepare.exit, ExitInfo::Code(1), "{}", result.summary());
    let stderr = lines_of(&result, "prepare", Stream::Stderr);
    let errors: Vec<&String> = stderr.iter().filter(|l| l.starts_with("ERROR:")).collect();
    assert_eq!(errors.len(), 1, "exactly one ERROR line: {stderr:#?}");
    assert!(
        errors[0].contains("SAGEMAKER_INSTANCE_TYPE")
            && errors[0].contains("policy.train.instance_types"),
        "{}",
        errors[0]
    );
    assert!(!result.plain_log().contains("Preparation failed"));
    assert!(!exec.builds_root.join(result.id.to_string()).exists());
}

#[test]
fn a_disallowed_action_is_rejected_naming_sagemaker_action() {
    let exec = setup();
    let every_action = exec.minimal_config("");
    let only_train = every_action.replace(
        r#"allowed_actions = ["train", "fargate", "register", "deploy", "undeploy", "ecs-deploy"]"#,
        r#"allowed_actions = ["train"]"#,
    );
    assert_ne!(
        only_train, every_action,
        "the template's allowed_actions line moved"
    );
    exec.write_config(&only_train).unwrap();
    let job = fixture("name: no-deploy\nvariables: {SAGEMAKER_ACTION: deploy}\nscript: [x]\n");
    let result = run_job(exec.runner_config(), &job);
    assert!(
        matches!(result.outcome, JobOutcome::Failed { .. }),
        "{}",
        result.summary()
    );
    assert_eq!(result.stage_names(), ["config", "prepare", "cleanup"]);
    let stderr = lines_of(&result, "prepare", Stream::Stderr);
    let errors: Vec<&String> = stderr.iter().filter(|l| l.starts_with("ERROR:")).collect();
    assert_eq!(errors.len(), 1, "{stderr:#?}");
    assert!(
        errors[0].contains("SAGEMAKER_ACTION") && errors[0].contains("policy.allowed_actions"),
        "{}",
        errors[0]
    );
}

fn assert_prep_retried_as_system_failure(result: &JobResult) {
    assert!(
        matches!(result.outcome, JobOutcome::SystemFailure { .. }),
        "{}",
        result.summary()
    );
    assert_eq!(result.count(ExecKind::Config), 3, "{}", result.summary());
    assert_eq!(result.count(ExecKind::Cleanup), 3, "{}", result.summary());
    assert_eq!(result.count(ExecKind::Prepare), 0, "{}", result.summary());
    assert_eq!(result.count(ExecKind::Run), 0, "{}", result.summary());
    // Cleanup after each failed attempt, not only at the end.
    let kinds: Vec<ExecKind> = result.stages.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            ExecKind::Config,
            ExecKind::Cleanup,
            ExecKind::Config,
            ExecKind::Cleanup,
            ExecKind::Config,
            ExecKind::Cleanup
        ]
    );
    assert_eq!(
        result
            .plain_log()
            .matches("ERROR: Preparation failed:")
            .count(),
        3
    );
    for record in result.stages.iter().filter(|s| s.kind == ExecKind::Config) {
        assert_eq!(
            record.exit,
            ExitInfo::Code(2),
            "an unusable executor config is a system failure (exit 2): {}",
            result.summary()
        );
    }
}

#[test]
fn an_invalid_executor_config_is_a_retried_system_failure() {
    let exec = setup();
    exec.write_config(&exec.minimal_config("\n[policy.unknown_section]\nx = 1\n"))
        .unwrap();
    let job = fixture(
        "name: bad-config\nvariables: {SAGEMAKER_ACTION: register, SAGEMAKER_MODEL_PACKAGE_GROUP: ml-churn, SAGEMAKER_MODEL_DATA: s3://ci-staging/model.tar.gz, SAGEMAKER_INFERENCE_IMAGE: 123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/serve:1, SAGEMAKER_APPROVAL_GATES: accuracy>=0.8, SAGEMAKER_APPROVAL_METRICS_FILE: reports/eval.json}\nscript: [x]\n",
    );
    let result = run_job(exec.runner_config(), &job);
    assert_prep_retried_as_system_failure(&result);
}

#[test]
fn an_unreadable_executor_config_is_a_retried_system_failure() {
    let exec = setup();
    std::fs::remove_file(&exec.config_path).unwrap();
    let job = fixture(
        "name: no-config\nvariables: {SAGEMAKER_ACTION: register, SAGEMAKER_MODEL_PACKAGE_GROUP: ml-churn, SAGEMAKER_MODEL_DATA: s3://ci-staging/model.tar.gz, SAGEMAKER_INFERENCE_IMAGE: 123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/serve:1, SAGEMAKER_APPROVAL_GATES: accuracy>=0.8, SAGEMAKER_APPROVAL_METRICS_FILE: reports/eval.json}\nscript: [x]\n",
    );
    let result = run_job(exec.runner_config(), &job);
    assert_prep_retried_as_system_failure(&result);
}

#[test]
fn cleanup_is_idempotent_and_safe_without_prepare() {
    let exec = setup();
    let job = fixture(
        "name: twice\nvariables: {SAGEMAKER_ACTION: register, SAGEMAKER_MODEL_PACKAGE_GROUP: ml-churn, SAGEMAKER_MODEL_DATA: s3://ci-staging/model.tar.gz, SAGEMAKER_INFERENCE_IMAGE: 123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/serve:1, SAGEMAKER_APPROVAL_GATES: accuracy>=0.8, SAGEMAKER_APPROVAL_METRICS_FILE: reports/eval.json}\nscript: [x]\n",
    );
    let result = run_job(exec.runner_config(), &job);
    let cleanup = result
        .stages
        .iter()
        .rfind(|s| s.kind == ExecKind::Cleanup)
        .unwrap();
    assert!(cleanup.succeeded(), "{}", result.summary());
    // Again, after the job's own cleanup already removed everything (a fresh temp dir with
    // the same response.json, as a runner retrying cleanup would provide).
    let dir = tempfile::tempdir().unwrap();
    let again = result
        .replay_in(cleanup, dir.path(), &result.response)
        .unwrap()
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "second cleanup: {:?}\n{}",
        again.status,
        String::from_utf8_lossy(&again.stderr)
    );

    // For a job that never got past config: another job id, no builds dir ever created.
    let mut response = result.response.clone();
    response["id"] = 99_999_123.into();
    response["job_info"]["id"] = 99_999_123.into();
    let dir = tempfile::tempdir().unwrap();
    let mut never_prepared = result.replay_in(cleanup, dir.path(), &response).unwrap();
    never_prepared
        .env("CUSTOM_ENV_CI_JOB_ID", "99999123")
        .env("CUSTOM_ENV_CI_BUILDS_DIR", "")
        .env("CUSTOM_ENV_CI_PROJECT_DIR", "");
    let out = never_prepared.output().unwrap();
    assert!(
        out.status.success(),
        "cleanup without prepare: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!exec.builds_root.join(result.id.to_string()).exists());
    assert!(!exec.builds_root.join("99999123").exists());
}

/// Whether a process that looks like `sleep <arg>` is still alive (zombies count as dead:
/// in a container nobody may reap them).
fn sleep_alive(pid: u32, arg: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    if !cmdline.contains("sleep") || !cmdline.contains(arg) {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    state != Some('Z')
}

fn sigterm_job(pid_file: &Path, hook: &str) -> JobFixture {
    fixture(&format!(
        r#"
name: term
variables: {{SAGEMAKER_ACTION: register, SAGEMAKER_MODEL_PACKAGE_GROUP: ml-churn, SAGEMAKER_MODEL_DATA: s3://ci-staging/model.tar.gz, SAGEMAKER_INFERENCE_IMAGE: 123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/serve:1, SAGEMAKER_APPROVAL_GATES: accuracy>=0.8, SAGEMAKER_APPROVAL_METRICS_FILE: reports/eval.json, PID_FILE: "{}"}}
hooks:
  pre_get_sources_script:
    - {hook}
script: [echo never]
after_script: [echo never-after]
"#,
        pid_file.display()
    ))
}

/// Runs a [`sigterm_job`] whose `hook` starts `sleep <sleep_arg>` in the background, writes
/// its pid to `$PID_FILE` and prints `READY`, and cancels the job at that line, with a long
/// graceful timeout so that only the executor's own handling can explain a prompt exit.
/// Returns the result, the sleep's pid and whether it survived; a surviving sleep is killed,
/// so as not to be left behind for the other tests.
fn cancel_at_ready(exec: &ExecutorSetup, hook: &str, sleep_arg: &str) -> (JobResult, u32, bool) {
    let mut config = exec.runner_config();
    config.graceful_kill_timeout = Duration::from_secs(60);
    let scratch = scratch_dir();
    let pid_file = scratch.path().join("sleep.pid");
    let job = sigterm_job(&pid_file, hook);
    let result = Runner::new(config)
        .unwrap()
        .run_stopped_at(&job, "get_sources", "^READY$", StopAction::Cancel, WAIT)
        .unwrap();
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("the hook wrote no pid file ({e}):\n{}", result.summary()))
        .trim()
        .parse()
        .unwrap();
    let survived = sleep_alive(pid, sleep_arg);
    if survived {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    (result, pid, survived)
}

#[test]
fn sigterm_during_a_local_stage_stops_it_promptly_and_leaves_nothing_behind() {
    let exec = setup();
    let (result, pid, survived) = cancel_at_ready(
        &exec,
        r#"'sleep 271 & echo $! > "$PID_FILE"; echo READY; wait'"#,
        "271",
    );
    assert_eq!(result.outcome, JobOutcome::Canceled, "{}", result.summary());
    let get_sources = result.stage("get_sources").unwrap();
    let signals: Vec<&str> = get_sources.signals.iter().map(|s| s.signal).collect();
    assert_eq!(
        signals,
        ["SIGTERM"],
        "the executor must exit on SIGTERM: {get_sources:?}"
    );
    let exit_after = get_sources.duration - get_sources.signals[0].after;
    assert!(
        exit_after < Duration::from_secs(10),
        "exited {exit_after:?} after SIGTERM"
    );
    assert!(!get_sources.output_left_open, "{}", result.runner_log);
    assert!(!survived, "sleep {pid} survived");
    assert_eq!(
        result.stage_names(),
        [
            "config",
            "prepare",
            "prepare_script",
            "get_sources",
            "cleanup"
        ],
        "{}",
        result.summary()
    );
    assert!(!exec.builds_root.join(result.id.to_string()).exists());
}

#[test]
fn sigterm_with_a_stage_that_ignores_it_still_ends_the_stage_without_leftovers() {
    let exec = setup();
    // `trap '' TERM` is inherited by the sleep: only SIGKILL ends either of them.
    let (result, pid, survived) = cancel_at_ready(
        &exec,
        r#"'trap "" TERM; sleep 272 & echo $! > "$PID_FILE"; echo READY; wait'"#,
        "272",
    );
    assert_eq!(result.outcome, JobOutcome::Canceled, "{}", result.summary());
    let get_sources = result.stage("get_sources").unwrap();
    assert!(
        !survived && !get_sources.output_left_open,
        "the stage's sleep {pid} outlived the executor (output left open: {}, exit {:?}, \
         signals {:?}, call took {:?})",
        get_sources.output_left_open,
        get_sources.exit,
        get_sources.signals,
        get_sources.duration
    );
    let exit_after = get_sources.duration - get_sources.signals[0].after;
    assert!(
        exit_after < Duration::from_secs(15),
        "the executor should give up on its child after a brief wait, took {exit_after:?}"
    );
    assert_eq!(result.stage_names().last(), Some(&"cleanup"));
}

#[test]
fn a_stale_build_exit_code_file_is_never_reused() {
    let exec = setup();
    // get_sources fails with 7 once, then succeeds on the retry; build_script then fails
    // (register is not served) and must report its own code, not the stale 7.
    let job = fixture(
        r#"
name: stale
variables: {SAGEMAKER_ACTION: register, SAGEMAKER_MODEL_PACKAGE_GROUP: ml-churn, SAGEMAKER_MODEL_DATA: s3://ci-staging/model.tar.gz, SAGEMAKER_INFERENCE_IMAGE: 123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/serve:1, SAGEMAKER_APPROVAL_GATES: accuracy>=0.8, SAGEMAKER_APPROVAL_METRICS_FILE: reports/eval.json, GET_SOURCES_ATTEMPTS: "2"}
hooks:
  pre_get_sources_script:
    - mkdir -p "$CI_BUILDS_DIR"
    - if [ ! -e "$CI_BUILDS_DIR/.tried" ]; then touch "$CI_BUILDS_DIR/.tried"; exit 7; fi
script: [echo x]
"#,
    );
    let result = run_job(exec.runner_config(), &job);
    let attempts: Vec<_> = result
        .stages
        .iter()
        .filter(|s| s.name == "get_sources")
        .collect();
    assert_eq!(attempts.len(), 2, "{}", result.summary());
    assert_eq!(attempts[0].exit_code_file.as_deref(), Some("7"));
    assert!(attempts[1].succeeded(), "{}", result.summary());
    assert_ne!(
        attempts[1].exit_code_file.as_deref(),
        Some("7"),
        "a successful stage left the previous failure's code in BUILD_EXIT_CODE_FILE"
    );
    assert_eq!(
        result.outcome,
        JobOutcome::Failed { exit_code: 1 },
        "{}",
        result.summary()
    );
}

#[test]
fn masked_variables_never_reach_the_runner_log() {
    let exec = setup();
    let job = fixture(&format!(
        r#"
name: masked
variables:
  SAGEMAKER_ACTION: register
  SAGEMAKER_MODEL_PACKAGE_GROUP: ml-churn
  SAGEMAKER_MODEL_DATA: s3://ci-staging/model.tar.gz
  SAGEMAKER_INFERENCE_IMAGE: 123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/serve:1
  SAGEMAKER_APPROVAL_GATES: accuracy>=0.8
  SAGEMAKER_APPROVAL_METRICS_FILE: reports/eval.json
  API_TOKEN: {{value: "{SECRET}", masked: true}}
  CREDS: {{value: "{SECRET}-file", file: true, masked: true}}
script: [echo x]
"#
    ));
    let result = run_job(exec.runner_config(), &job);
    assert_eq!(result.count(ExecKind::Cleanup), 1, "{}", result.summary());
    assert!(
        !result.runner_log.contains(SECRET),
        "cleanup output (unmasked runner log) contains a masked value:\n{}",
        result.runner_log
    );
    assert!(
        !result.unmasked_log.contains(SECRET),
        "the executor printed a masked value into the job log:\n{}",
        result.unmasked_log
    );
}

#[test]
fn validate_reports_ok_or_every_problem_by_key() {
    let exec = setup();
    let ok = exec.command(&["validate"]).output().unwrap();
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "ok");

    exec.write_config(
        &exec
            .minimal_config("")
            .replace(
                "region = \"us-east-1\"",
                "region = \"us-east-1\"\nbogus_key = 1",
            )
            .replace(
                "bucket = \"ci-staging\"",
                "bucket = \"ci-staging\"\nprefx = \"ci/\"",
            ),
    )
    .unwrap();
    let bad = exec.command(&["validate"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&bad.stdout),
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(
        text.contains("bogus_key") && text.contains("prefx"),
        "every problem, by key: {text}"
    );
}

/// Waits until process `pid` is gone (or a zombie), polling against a deadline.
fn wait_gone(pid: i32, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| {
                stat.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.chars().next())
                    != Some('Z')
            })
            .unwrap_or(false);
        if !alive {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_sigterm_makes_the_executor_exit_at_once() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let exec = setup();
    let mut config = exec.runner_config();
    config.graceful_kill_timeout = Duration::from_secs(60);
    let scratch = scratch_dir();
    let pid_file = scratch.path().join("sleep.pid");
    // The stage ignores SIGTERM, so after the first signal the executor is waiting for it;
    // $PPID in the stage script is the executor.
    let job = sigterm_job(
        &pid_file,
        r#"'trap "" TERM; sleep 274 & echo $! > "$PID_FILE"; echo "EXECUTOR_PID=$PPID"; wait'"#,
    );
    let runner = Runner::new(config).unwrap();
    let running = runner.start(&job).unwrap();
    let line = running
        .wait_for_line("^EXECUTOR_PID=[0-9]+$", WAIT)
        .unwrap();
    let pid: i32 = line.trim_start_matches("EXECUTOR_PID=").parse().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("sagemaker-executor"),
        "{pid} is not the executor"
    );
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    // The executor acknowledges the first signal on stderr; wait for that state rather than
    // for a fixed time, so the second signal is not merged with the first.
    running
        .wait_for_line("(?i)received SIGTERM", Duration::from_secs(10))
        .unwrap();
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    let gone = wait_gone(pid, Duration::from_secs(3));
    let result = running.finish_within(WAIT).unwrap();
    if let Some(sleep) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        // The stage ignores SIGTERM by design; do not leave it behind.
        let _ = kill(Pid::from_raw(sleep), Signal::SIGKILL);
    }
    assert!(
        gone,
        "executor still running 3 s after the second SIGTERM\n{}",
        result.summary()
    );
    assert!(
        !matches!(result.outcome, JobOutcome::Success),
        "{}",
        result.summary()
    );
    assert_eq!(result.stage_names().last(), Some(&"cleanup"));
}
