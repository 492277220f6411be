//! Self-tests of the runner emulator against a fake bash driver: stage order and skip rules,
//! the exit-code mapping, preparation retries, signals, cleanup always. If these pass, a
//! protocol test that fails against the real executor points at the executor.

#![allow(
    clippy::unwrap_used,
    reason = "an integration test reports failure by panicking"
)]

use std::path::Path;
use std::time::Duration;

use e2e::fake_driver::FakeDriver;
use e2e::runner::{
    ExecKind, ExitInfo, JobFixture, JobOutcome, JobResult, Runner, RunnerConfig, RunningJob,
    StopAction,
};

const WAIT: Duration = Duration::from_secs(60);

fn fixture(yaml: &str) -> JobFixture {
    JobFixture::from_yaml(yaml, Path::new(".")).expect("fixture parses")
}

fn run(driver: &FakeDriver, yaml: &str) -> JobResult {
    run_with(driver.runner_config(), yaml)
}

fn run_with(config: RunnerConfig, yaml: &str) -> JobResult {
    let runner = Runner::new(config).expect("runner");
    runner
        .start(&fixture(yaml))
        .expect("job starts")
        .finish_within(WAIT * 2)
        .expect("job finishes")
}

const FULL_JOB: &str = r#"
name: full
variables:
  GREETING: hello
  SECRET: {value: "s3cr3t-value-xyz", masked: true}
  CONF: {value: "key=value\nline2\n", file: true}
  FAKE_KEEP_BUILDS: "1"
source:
  README.md: "fixture readme\n"
  src/app.sh: "echo app\n"
dependencies:
  - name: prepare-data
    files: {"data/input.csv": "a,b\n1,2\n"}
cache: {key: deps, paths: [".cache/"]}
script:
  - echo "greeting=$GREETING"
  - echo "secret=$SECRET"
  - echo "head=$(git rev-parse HEAD) sha=$CI_COMMIT_SHA"
  - cat README.md
  - cat data/input.csv
  - echo "conf-path=$CONF"
  - cat "$CONF"
  - mkdir -p out .cache && echo model > out/model.txt && echo log > out/train.log && echo c > .cache/c.txt
  - echo "FROM_ENV=yes" >> "$GITLAB_ENV"
after_script:
  - echo "after status=$CI_JOB_STATUS from_env=$FROM_ENV"
artifacts:
  paths: ["out/*.txt"]
  reports: {dotenv: build.env}
steps:
  - name: release
    script: ["echo OUTPUT=released > build.env", "echo released"]
"#;

#[test]
fn successful_job_sends_every_stage_in_the_runner_order() {
    let driver = FakeDriver::new().unwrap();
    let result = run(&driver, FULL_JOB);
    assert_eq!(result.outcome, JobOutcome::Success, "{}", result.summary());
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
            "step_release",
            "after_script",
            "archive_cache",
            "upload_artifacts_on_success",
            "cleanup_file_variables",
            "cleanup",
        ],
        "{}",
        result.summary()
    );
    // The driver saw the same calls, in the same order.
    let calls = driver.calls();
    assert_eq!(calls.first().map(String::as_str), Some("config"));
    assert_eq!(calls.get(6).map(String::as_str), Some("run build_script"));
    assert_eq!(calls.last().map(String::as_str), Some("cleanup"));
    assert_eq!(calls.len(), result.stages.len());

    let log = result.plain_log();
    assert!(log.contains("greeting=hello"), "{log}");
    let config_output = result
        .config_output
        .as_ref()
        .expect("config output recorded");
    assert_eq!(config_output["hostname"], "fake-host");
    let head_line = log
        .lines()
        .find(|l| l.starts_with("head="))
        .expect("head line");
    let (head, want) = head_line
        .trim_start_matches("head=")
        .split_once(" sha=")
        .expect("head and sha");
    assert_eq!(head, want, "checked out the fixture commit");
    assert_eq!(head.len(), 40);
    assert!(log.contains("fixture readme"), "{log}");
    assert!(log.contains("1,2"), "dependency artifact extracted: {log}");
    assert!(
        log.contains("key=value\nline2"),
        "file variable content: {log}"
    );
    let project_dir = result.project_dir.clone().expect("project dir");
    assert!(
        log.contains(&format!("conf-path={}.tmp/CONF", project_dir.display())),
        "{log}"
    );
    assert!(log.contains("after status=success from_env=yes"), "{log}");

    // Masking: the job log shows [MASKED], the unmasked copy proves the value was printed.
    assert!(log.contains("secret=[MASKED]"), "{log}");
    assert!(!result.log.contains("s3cr3t-value-xyz"));
    assert!(result.unmasked_log.contains("secret=s3cr3t-value-xyz"));

    // Artifacts: only the files matching the glob (not out/train.log), relative to the
    // project dir; the dotenv report parsed.
    assert_eq!(result.uploaded_files(), ["out/model.txt"]);
    assert_eq!(
        result.dotenv(),
        Some(vec![("OUTPUT".to_owned(), "released".to_owned())])
    );

    // Cache: a real archive under cache_dir/<project path>/<key>/.
    let cache = driver.cache_dir.join("group/project/deps/cache.tar");
    assert!(cache.is_file(), "{}", cache.display());

    // cleanup_file_variables removed the file variable and the GITLAB_ENV file.
    let tmp_dir = project_dir.with_extension("tmp");
    assert!(tmp_dir.is_dir(), "{}", tmp_dir.display());
    assert!(!tmp_dir.join("CONF").exists());
    assert!(!tmp_dir.join("gitlab_runner_env").exists());
    // The runner deletes its temp dir after cleanup.
    assert!(!result.tmp_dir.exists());
}

#[test]
fn exec_calls_get_the_protocol_environment_and_files() {
    let driver = FakeDriver::new().unwrap();
    let result = run(&driver, FULL_JOB);
    assert_eq!(result.outcome, JobOutcome::Success, "{}", result.summary());
    let tmp = result.tmp_dir.to_string_lossy().into_owned();
    let env = driver.env_of("build_script").expect("env of build_script");
    let get = |key: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("TMPDIR").as_deref(), Some(tmp.as_str()));
    assert_eq!(get("BUILD_FAILURE_EXIT_CODE").as_deref(), Some("1"));
    assert_eq!(get("SYSTEM_FAILURE_EXIT_CODE").as_deref(), Some("2"));
    assert_eq!(
        get("BUILD_EXIT_CODE_FILE"),
        Some(format!("{tmp}/build_exit_code"))
    );
    assert_eq!(
        get("JOB_RESPONSE_FILE"),
        Some(format!("{tmp}/response.json"))
    );
    assert_eq!(
        get("FAKE_JOB_ENV").as_deref(),
        Some("from-config"),
        "job_env"
    );
    assert_eq!(get("CUSTOM_ENV_CI_JOB_ID"), Some(result.id.to_string()));
    assert_eq!(get("CUSTOM_ENV_GREETING").as_deref(), Some("hello"));
    // Masked values are passed in plaintext, file variables carry their content.
    assert_eq!(
        get("CUSTOM_ENV_SECRET").as_deref(),
        Some("s3cr3t-value-xyz")
    );
    assert_eq!(
        get("CUSTOM_ENV_CONF").as_deref(),
        Some("key=value\nline2\n")
    );
    assert_eq!(get("CUSTOM_ENV_CI_JOB_SERVICES").as_deref(), Some(""));
    assert_eq!(get("CUSTOM_ENV_CI_JOB_STATUS").as_deref(), Some("running"));
    assert_eq!(get("CUSTOM_ENV_GITLAB_CI").as_deref(), Some("true"));
    let builds = driver.builds_root.join(result.id.to_string());
    assert_eq!(
        get("CUSTOM_ENV_CI_BUILDS_DIR"),
        Some(builds.to_string_lossy().into_owned())
    );
    assert_eq!(
        get("CUSTOM_ENV_CI_PROJECT_DIR"),
        Some(builds.join("group/project").to_string_lossy().into_owned())
    );

    // During config the dirs are not computed yet.
    let config_env = driver.env_of("config").expect("env of config");
    let config_project = config_env
        .iter()
        .find(|(k, _)| k == "CUSTOM_ENV_CI_PROJECT_DIR")
        .map(|(_, v)| v.as_str());
    assert_eq!(config_project, Some(""));
    // after_script sees the job status.
    let after = driver.env_of("after_script").expect("env of after_script");
    assert!(after.contains(&("CUSTOM_ENV_CI_JOB_STATUS".into(), "success".into())));

    // cwd of every call is the temp dir.
    assert_eq!(driver.cwd_of("prepare"), Some(result.tmp_dir.clone()));
    assert_eq!(driver.cwd_of("build_script"), Some(result.tmp_dir.clone()));

    // response.json: mode 0600, the payload shape of protocol §10.
    let mode = std::fs::read_to_string(driver.state_dir.join("response-mode")).unwrap();
    assert_eq!(mode.trim(), "600");
    let response: serde_json::Value =
        serde_json::from_slice(&std::fs::read(driver.state_dir.join("response.json")).unwrap())
            .unwrap();
    assert_eq!(response["id"], result.id);
    assert_eq!(response["job_info"]["project_full_path"], "group/project");
    assert_eq!(response["git_info"]["ref"], "main");
    assert_eq!(response["git_info"]["sha"].as_str().map(str::len), Some(40));
    assert_eq!(response["features"]["trace_sections"], true);
    assert_eq!(response["steps"][0]["name"], "script");
    assert_eq!(response["artifacts"][1]["artifact_type"], "dotenv");
    let keys: Vec<&str> = response["variables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["key"].as_str())
        .collect();
    assert!(keys.contains(&"CI_JOB_TOKEN") && keys.contains(&"SECRET"));
    assert!(
        !keys.contains(&"CI_PROJECT_DIR"),
        "runner variables are not in the payload"
    );

    // The script: runner layout, mode 0700.
    let script = std::fs::read_to_string(driver.state_dir.join("script-build_script")).unwrap();
    let mode = std::fs::read_to_string(driver.state_dir.join("script-mode-build_script")).unwrap();
    assert_eq!(mode.trim(), "700");
    assert!(script.starts_with("#!/usr/bin/env bash\n\ntrap 'exit 1' TERM\n"));
    assert!(script.contains("set -o pipefail\nset -o errexit\nset +o noclobber\n"));
    assert!(script.contains("( trap 'exit 1' TERM; eval '"));
    assert!(script.ends_with(") < /dev/null\nexit 0\n"));
    assert!(result.stages.iter().all(|s| s.attempt >= 1));
}

#[test]
fn job_log_has_sections_headers_and_status_lines() {
    let driver = FakeDriver::new().unwrap();
    let result = run(&driver, "name: small\nscript: [echo hi]\n");
    assert_eq!(result.outcome, JobOutcome::Success, "{}", result.summary());
    for stage in [
        "prepare_executor",
        "prepare_script",
        "get_sources",
        "step_script",
    ] {
        assert!(
            result.log.contains(&format!(":{stage}\r\x1b[0K")),
            "section for {stage}: {:?}",
            result.log
        );
        assert!(
            result.log.contains("\x1b[0Ksection_end:"),
            "section end: {:?}",
            result.log
        );
    }
    assert!(
        result
            .log
            .contains("\x1b[36;1mExecuting \"step_script\" stage of the job script")
    );
    let log = result.plain_log();
    assert!(log.contains("Using Custom executor with driver fake-driver 1.0.0..."));
    assert!(log.contains(" via fake-host..."), "{log}");
    assert!(log.contains("$ echo hi\nhi"), "{log}");
    assert!(log.ends_with("Job succeeded"), "{log}");
    // No cache, no dependencies, no after_script, no artifacts: those stages are never sent.
    assert_eq!(
        result.run_stages(),
        [
            "prepare_script",
            "get_sources",
            "build_script",
            "cleanup_file_variables"
        ]
    );
    // config stdout is never shown; cleanup output goes to the runner log only.
    assert!(!log.contains("builds_dir"), "{log}");
    assert!(!log.contains("fake-driver: cleanup"), "{log}");
    assert!(
        result
            .runner_log
            .contains("cleanup_std=out fake-driver: cleanup job"),
        "{}",
        result.runner_log
    );
    // config stderr does go to the job log.
    assert!(log.contains("fake-driver: config for job"), "{log}");
}

#[test]
fn failed_script_runs_after_script_and_on_failure_stages_only() {
    let driver = FakeDriver::new().unwrap();
    let result = run(
        &driver,
        r#"
name: fails
cache: {key: k, paths: [out/], when: always}
script: ["mkdir -p out && echo partial > out/p.txt", "exit 3", "echo unreachable"]
steps: [{name: release, script: ["echo release"]}]
after_script: ['echo "after status=$CI_JOB_STATUS"']
artifacts: {paths: [out/], when: on_failure}
"#,
    );
    assert_eq!(
        result.outcome,
        JobOutcome::Failed { exit_code: 3 },
        "{}",
        result.summary()
    );
    assert_eq!(
        result.run_stages(),
        [
            "prepare_script",
            "get_sources",
            "restore_cache",
            "build_script",
            "after_script",
            "archive_cache_on_failure",
            "upload_artifacts_on_failure",
            "cleanup_file_variables",
        ],
        "{}",
        result.summary()
    );
    let build = result.stage("build_script").unwrap();
    assert_eq!(build.exit, ExitInfo::Code(1));
    assert_eq!(build.exit_code_file.as_deref(), Some("3"));
    let log = result.plain_log();
    assert!(log.contains("after status=failed"), "{log}");
    assert!(!log.contains("unreachable"), "{log}");
    assert!(log.ends_with("ERROR: Job failed: exit code 3"), "{log}");
    assert_eq!(
        result.uploaded_files(),
        ["out/p.txt"],
        "{}",
        result.summary()
    );
}

#[test]
fn failed_get_sources_skips_user_steps_and_after_script() {
    let driver = FakeDriver::new().unwrap();
    let result = run(
        &driver,
        r#"
name: hook-fails
hooks: {pre_get_sources_script: ["echo in-hook", "exit 4"]}
script: ["echo never"]
after_script: ["echo never-after"]
artifacts: {paths: [x], when: always}
"#,
    );
    assert_eq!(
        result.outcome,
        JobOutcome::Failed { exit_code: 4 },
        "{}",
        result.summary()
    );
    assert_eq!(
        result.run_stages(),
        [
            "prepare_script",
            "get_sources",
            "upload_artifacts_on_failure",
            "cleanup_file_variables"
        ],
        "{}",
        result.summary()
    );
    assert!(result.plain_log().contains("in-hook"));
    assert_eq!(result.stage_names().last(), Some(&"cleanup"));
}

#[test]
fn get_sources_is_retried_after_clear_worktree() {
    let driver = FakeDriver::new().unwrap();
    let result = run(
        &driver,
        r#"
name: flaky-clone
variables: {GET_SOURCES_ATTEMPTS: "2"}
hooks:
  pre_get_sources_script:
    - mkdir -p "$CI_BUILDS_DIR"
    - if [ ! -e "$CI_BUILDS_DIR/.tried" ]; then touch "$CI_BUILDS_DIR/.tried"; exit 5; fi
script: ["echo ok"]
"#,
    );
    assert_eq!(result.outcome, JobOutcome::Success, "{}", result.summary());
    assert_eq!(
        result.run_stages(),
        [
            "prepare_script",
            "get_sources",
            "clear_worktree",
            "get_sources",
            "build_script",
            "cleanup_file_variables"
        ]
    );
    let attempts: Vec<u32> = result
        .stages
        .iter()
        .filter(|s| s.name == "get_sources")
        .map(|s| s.attempt)
        .collect();
    assert_eq!(attempts, [1, 2]);
}

#[test]
fn failed_prepare_script_ends_the_job_without_cleanup_file_variables() {
    let driver = FakeDriver::new().unwrap();
    let result = run(
        &driver,
        r#"
name: prep-script
variables: {IS_BUILD_ERROR: "1", FAKE_ERROR_STAGE: prepare_script}
script: ["echo never"]
after_script: ["echo never"]
"#,
    );
    assert_eq!(
        result.outcome,
        JobOutcome::Failed { exit_code: 1 },
        "{}",
        result.summary()
    );
    assert_eq!(
        result.stage_names(),
        ["config", "prepare", "prepare_script", "cleanup"]
    );
}

fn build_error(driver: &FakeDriver, extra_vars: &str) -> JobResult {
    run(
        driver,
        &format!(
            "name: exit-codes\nvariables: {{{extra_vars}}}\nscript: [\"echo never\"]\nafter_script: [\"echo after-ran\"]\n"
        ),
    )
}

#[test]
fn exit_code_one_reads_build_exit_code_file() {
    let driver = FakeDriver::new().unwrap();
    let result = build_error(&driver, "IS_BUILD_ERROR: '1', FAKE_EXIT_FILE: '42'");
    assert_eq!(
        result.outcome,
        JobOutcome::Failed { exit_code: 42 },
        "{}",
        result.summary()
    );
    assert!(result.plain_log().contains("after-ran"));
}

#[test]
fn exit_code_one_without_exit_code_file_is_exit_code_one() {
    let driver = FakeDriver::new().unwrap();
    let result = build_error(&driver, "IS_BUILD_ERROR: '1'");
    assert_eq!(
        result.outcome,
        JobOutcome::Failed { exit_code: 1 },
        "{}",
        result.summary()
    );
    assert_eq!(result.stage("build_script").unwrap().exit_code_file, None);
}

#[test]
fn unparsable_build_exit_code_file_is_a_system_failure() {
    for content in ["4x", " 4", ""] {
        let driver = FakeDriver::new().unwrap();
        let result = build_error(
            &driver,
            &format!("IS_BUILD_ERROR: '1', FAKE_EXIT_FILE: '{content}'"),
        );
        match &result.outcome {
            JobOutcome::SystemFailure { message } => {
                assert!(message.contains("not an integer"), "{message}")
            }
            other => panic!("{content:?}: expected a system failure, got {other:?}"),
        }
        assert!(
            result
                .plain_log()
                .contains("ERROR: Job failed (system failure):")
        );
    }
}

#[test]
fn exit_code_two_and_unknown_codes_are_system_failures() {
    let driver = FakeDriver::new().unwrap();
    let result = build_error(&driver, "IS_SYSTEM_ERROR: '1'");
    assert!(
        matches!(&result.outcome, JobOutcome::SystemFailure { message } if message.contains("exit status 2")),
        "{}",
        result.summary()
    );
    // A failed step of any kind still gets its after_script.
    assert!(result.plain_log().contains("after-ran"));

    let driver = FakeDriver::new().unwrap();
    let result = build_error(&driver, "IS_UNKNOWN_ERROR: '1'");
    assert!(
        matches!(&result.outcome, JobOutcome::SystemFailure { message }
            if message.contains("unknown Custom executor executable exit code 255")),
        "{}",
        result.summary()
    );
}

#[test]
fn config_output_that_is_not_one_json_object_is_retried_three_times() {
    for mode in ["garbage", "two_objects", "whitespace"] {
        let driver = FakeDriver::new().unwrap();
        let result = run(
            &driver,
            &format!(
                "name: bad-config\nvariables: {{FAKE_CONFIG_OUTPUT: {mode}}}\nscript: [\"echo never\"]\n"
            ),
        );
        assert!(
            matches!(&result.outcome, JobOutcome::SystemFailure { message }
                if message.contains("error while parsing JSON output")),
            "{mode}: {}",
            result.summary()
        );
        assert_eq!(
            result.stage_names(),
            [
                "config", "cleanup", "config", "cleanup", "config", "cleanup"
            ],
            "{mode}"
        );
        let log = result.plain_log();
        assert_eq!(
            log.matches("ERROR: Preparation failed: error while parsing JSON output")
                .count(),
            3,
            "{log}"
        );
        assert_eq!(
            log.matches("Will be retried in 200ms ...").count(),
            2,
            "{log}"
        );
    }
}

#[test]
fn empty_config_output_falls_back_to_the_runner_dirs() {
    let driver = FakeDriver::new().unwrap();
    let yaml = "name: no-config\nvariables: {FAKE_CONFIG_OUTPUT: empty}\nscript: [\"echo ok\"]\n";
    // Without builds_dir in config.toml: a configuration error, not retried.
    let result = run(&driver, yaml);
    assert_eq!(
        result.outcome,
        JobOutcome::ConfigurationError {
            message: "the builds_dir is not configured".to_owned()
        },
        "{}",
        result.summary()
    );
    assert_eq!(result.stage_names(), ["config", "cleanup"]);
    assert!(result.plain_log().contains("Using Custom executor..."));

    let mut config = driver.runner_config();
    config.builds_dir = Some(driver.root().join("fallback-builds"));
    config.cache_dir = Some(driver.root().join("fallback-cache"));
    let result = run_with(config, yaml);
    assert_eq!(result.outcome, JobOutcome::Success, "{}", result.summary());
    assert_eq!(
        result.project_dir,
        Some(driver.root().join("fallback-builds/group/project"))
    );
}

#[test]
fn missing_builds_dir_in_config_output_is_not_retried() {
    let driver = FakeDriver::new().unwrap();
    let result = run(
        &driver,
        "name: x\nvariables: {FAKE_CONFIG_OUTPUT: no_builds_dir}\nscript: [\"echo\"]\n",
    );
    assert!(
        matches!(result.outcome, JobOutcome::ConfigurationError { .. }),
        "{}",
        result.summary()
    );
    assert_eq!(result.count(ExecKind::Config), 1);
    assert_eq!(result.count(ExecKind::Cleanup), 1);
}

#[test]
fn config_and_prepare_system_failures_are_retried_until_they_pass() {
    let driver = FakeDriver::new().unwrap();
    let result = run(
        &driver,
        "name: flaky\nvariables: {FAKE_CONFIG_FAILS: '1', FAKE_PREPARE_FAILS: '1'}\nscript: [\"echo ok\"]\n",
    );
    assert_eq!(result.outcome, JobOutcome::Success, "{}", result.summary());
    let names = result.stage_names();
    assert_eq!(
        &names[..7],
        [
            "config", "cleanup", "config", "prepare", "cleanup", "config", "prepare"
        ],
        "{}",
        result.summary()
    );
    assert_eq!(names.last(), Some(&"cleanup"));
    // Each attempt had its own temp dir and the job was prepared once in the end.
    assert_eq!(result.count(ExecKind::Cleanup), 3);
}

#[test]
fn a_build_failure_in_prepare_is_not_retried() {
    let driver = FakeDriver::new().unwrap();
    let result = run(
        &driver,
        "name: reject\nvariables: {IS_BUILD_ERROR: '1', FAKE_ERROR_STAGE: prepare}\nscript: [\"echo never\"]\n",
    );
    assert_eq!(
        result.outcome,
        JobOutcome::Failed { exit_code: 1 },
        "{}",
        result.summary()
    );
    assert_eq!(result.stage_names(), ["config", "prepare", "cleanup"]);
    assert!(!result.plain_log().contains("Preparation failed"));
}

#[test]
fn three_failed_preparations_are_a_system_failure() {
    let driver = FakeDriver::new().unwrap();
    let result = run(
        &driver,
        "name: down\nvariables: {IS_SYSTEM_ERROR: '1', FAKE_ERROR_STAGE: prepare}\nscript: [\"echo never\"]\n",
    );
    assert!(
        matches!(result.outcome, JobOutcome::SystemFailure { .. }),
        "{}",
        result.summary()
    );
    assert_eq!(
        result.stage_names(),
        [
            "config", "prepare", "cleanup", "config", "prepare", "cleanup", "config", "prepare",
            "cleanup"
        ]
    );
}

const SLEEPER: &str = r#"
name: sleeper
script: ["echo READY", "sleep 60", "echo not-reached"]
after_script: ['echo "after status=$CI_JOB_STATUS"']
artifacts: {paths: [nothing], when: on_failure}
"#;

/// Runs [`SLEEPER`] against a fake driver, applies `stop` once its script printed `READY`,
/// and waits for the end.
fn sleeper_stopped_at_ready(stop: impl FnOnce(&RunningJob)) -> JobResult {
    let driver = FakeDriver::new().unwrap();
    let runner = Runner::new(driver.runner_config()).unwrap();
    let job = runner.start(&fixture(SLEEPER)).unwrap();
    job.wait_for_line("^READY$", WAIT).unwrap();
    stop(&job);
    job.finish_within(WAIT).unwrap()
}

#[test]
fn graceful_cancel_terminates_the_step_then_runs_after_script_and_on_failure_stages() {
    let result = sleeper_stopped_at_ready(RunningJob::cancel);
    assert_eq!(result.outcome, JobOutcome::Canceled, "{}", result.summary());
    assert_eq!(
        result.run_stages(),
        [
            "prepare_script",
            "get_sources",
            "build_script",
            "after_script",
            "upload_artifacts_on_failure",
            "cleanup_file_variables"
        ],
        "{}",
        result.summary()
    );
    let build = result.stage("build_script").unwrap();
    let sent: Vec<&str> = build.signals.iter().map(|s| s.signal).collect();
    assert_eq!(
        sent,
        ["SIGTERM"],
        "the well-behaved driver exits on SIGTERM"
    );
    assert!(build.duration < Duration::from_secs(30));
    let log = result.plain_log();
    assert!(log.contains("after status=canceled"), "{log}");
    assert!(!log.contains("not-reached"));
    assert!(log.ends_with("ERROR: Job failed: canceled"), "{log}");
    assert_eq!(result.stage_names().last(), Some(&"cleanup"));
}

#[test]
fn abort_skips_every_later_run_stage_but_cleanup_runs() {
    let result = sleeper_stopped_at_ready(RunningJob::abort);
    assert_eq!(result.outcome, JobOutcome::Canceled, "{}", result.summary());
    assert_eq!(
        result.stage_names(),
        [
            "config",
            "prepare",
            "prepare_script",
            "get_sources",
            "build_script",
            "cleanup"
        ]
    );
}

#[test]
fn cancel_before_the_script_behaves_like_abort() {
    let driver = FakeDriver::new().unwrap();
    let result = Runner::new(driver.runner_config())
        .unwrap()
        .run_stopped_at(
            &fixture(
                "name: c\nhooks: {pre_get_sources_script: ['echo HOOK-READY', 'sleep 60']}\nscript: [echo never]\nafter_script: [echo never-after]\n",
            ),
            "get_sources",
            "^HOOK-READY$",
            StopAction::Cancel,
            WAIT,
        )
        .unwrap();
    assert_eq!(result.outcome, JobOutcome::Canceled, "{}", result.summary());
    assert_eq!(
        result.stage_names(),
        [
            "config",
            "prepare",
            "prepare_script",
            "get_sources",
            "cleanup"
        ]
    );
}

#[test]
fn sigterm_is_escalated_to_sigkill_after_the_graceful_timeout() {
    let driver = FakeDriver::new().unwrap();
    let mut config = driver.runner_config();
    config.graceful_kill_timeout = Duration::from_secs(1);
    let result = Runner::new(config)
        .unwrap()
        .run_stopped_at(
            &fixture(
                "name: deaf\nvariables: {FAKE_IGNORE_TERM_STAGE: build_script}\nscript: ['echo READY', 'sleep 60']\nafter_script: ['echo after-ran']\n",
            ),
            "build_script",
            "^READY$",
            StopAction::Cancel,
            WAIT,
        )
        .unwrap();
    assert_eq!(result.outcome, JobOutcome::Canceled, "{}", result.summary());
    let build = result.stage("build_script").unwrap();
    let sent: Vec<&str> = build.signals.iter().map(|s| s.signal).collect();
    assert_eq!(sent, ["SIGTERM", "SIGKILL"], "{build:?}");
    let gap = build.signals[1].after - build.signals[0].after;
    assert!(
        gap >= Duration::from_millis(950) && gap < Duration::from_secs(10),
        "{gap:?}"
    );
    assert_eq!(build.exit, ExitInfo::Signal(9));
    assert!(!build.output_left_open, "SIGKILL reached the whole group");
    // Graceful cancel: after_script and cleanup still run.
    assert!(result.plain_log().contains("after-ran"));
    assert_eq!(result.stage_names().last(), Some(&"cleanup"));
}

#[test]
fn killing_the_executor_group_skips_the_rest_and_still_cleans_up() {
    let driver = FakeDriver::new().unwrap();
    let result = Runner::new(driver.runner_config())
        .unwrap()
        .run_stopped_at(
            &fixture(SLEEPER),
            "build_script",
            "^READY$",
            StopAction::KillExecutor,
            WAIT,
        )
        .unwrap();
    assert!(
        matches!(result.outcome, JobOutcome::SystemFailure { .. }),
        "{}",
        result.summary()
    );
    let build = result.stage("build_script").unwrap();
    assert_eq!(build.exit, ExitInfo::Signal(9));
    assert_eq!(build.signals.len(), 1);
    assert_eq!(build.signals[0].signal, "SIGKILL");
    assert_eq!(
        result.stage_names()[result.stages.len() - 2..],
        ["build_script", "cleanup"]
    );
}

#[test]
fn job_timeout_stops_the_step_and_reports_timed_out() {
    let driver = FakeDriver::new().unwrap();
    let result = run(
        &driver,
        "name: slow\ntimeout: 3\nscript: ['echo started', 'sleep 60']\nafter_script: [echo never-after]\n",
    );
    assert_eq!(result.outcome, JobOutcome::TimedOut, "{}", result.summary());
    let build = result.stage("build_script").unwrap();
    assert_eq!(build.signals.first().map(|s| s.signal), Some("SIGTERM"));
    assert!(build.duration < Duration::from_secs(30));
    assert_eq!(result.stage_names().last(), Some(&"cleanup"));
    assert!(!result.plain_log().contains("never-after"));
}

#[test]
fn a_failing_cleanup_only_warns() {
    let driver = FakeDriver::new().unwrap();
    let result = run(
        &driver,
        "name: c\nvariables: {FAKE_CLEANUP_FAILS: '1'}\nscript: [echo ok]\n",
    );
    assert_eq!(result.outcome, JobOutcome::Success, "{}", result.summary());
    assert!(
        result
            .plain_log()
            .contains("WARNING: Cleanup script failed: cleanup: exit status 2"),
        "{}",
        result.summary()
    );
    assert!(
        result
            .runner_log
            .contains("cleanup_std=err fake-driver: cleanup failing")
    );
}

#[test]
fn the_runner_log_is_not_masked_but_the_job_log_is() {
    let driver = FakeDriver::new().unwrap();
    let result = run(
        &driver,
        "name: m\nvariables: {TOKEN: {value: tok-123456789, masked: true}, FAKE_CLEANUP_PRINTS: TOKEN}\nscript: ['echo \"t=$TOKEN\"']\n",
    );
    assert_eq!(result.outcome, JobOutcome::Success, "{}", result.summary());
    assert!(result.runner_log.contains("TOKEN=tok-123456789"));
    assert!(result.plain_log().contains("t=[MASKED]"));
    assert!(!result.log.contains("tok-123456789"));
}

#[test]
fn an_invalid_dotenv_report_fails_the_upload_like_gitlab() {
    let driver = FakeDriver::new().unwrap();
    let result = run(
        &driver,
        "name: d\nscript: ['printf \"GOOD=1\\nnot a pair\\n\" > out.env']\nartifacts: {reports: {dotenv: out.env}}\n",
    );
    assert_eq!(
        result.outcome,
        JobOutcome::Failed { exit_code: 1 },
        "{}",
        result.summary()
    );
    assert!(
        result
            .plain_log()
            .contains("400 Bad Request (Invalid Format)")
    );
    assert_eq!(result.dotenv(), None);
}

#[test]
fn wait_for_line_fails_fast_when_the_job_ends_without_the_line() {
    let driver = FakeDriver::new().unwrap();
    let runner = Runner::new(driver.runner_config()).unwrap();
    let job = runner
        .start(&fixture("name: q\nscript: [echo done]\n"))
        .unwrap();
    let err = job
        .wait_for_line("^never printed$", Duration::from_secs(120))
        .unwrap_err();
    assert!(matches!(err, e2e::Error::JobFinished(_)), "{err}");
    assert_eq!(job.finish().unwrap().outcome, JobOutcome::Success);
}

#[test]
fn protocol_variables_override_the_runner_env_and_custom_env_wins() {
    // Order of protocol §4: runner env, then TMPDIR & co., then job_env, then CUSTOM_ENV_*;
    // the last value of a key wins.
    let driver = FakeDriver::new().unwrap();
    let config = driver
        .runner_config()
        .with_env("TMPDIR", "/bogus")
        .with_env("CUSTOM_ENV_GREETING", "from-runner-env");
    let result = run_with(
        config,
        "name: env\nvariables: {GREETING: hello}\nscript: [echo ok]\n",
    );
    assert_eq!(result.outcome, JobOutcome::Success, "{}", result.summary());
    let env = driver.env_of("build_script").unwrap();
    let get = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    assert_eq!(get("TMPDIR"), Some(result.tmp_dir.to_str().unwrap()));
    assert_eq!(get("CUSTOM_ENV_GREETING"), Some("hello"));
    assert_eq!(get("FAKE_JOB_ENV"), Some("from-config"));
}
