//! End-to-end tests of the `fargate` action: jobs run through the runner emulator and the real
//! executor against the AWS simulator, whose ECS tasks really run the three containers (the
//! executor binary as the fetch/push helper, `/bin/sh` + the bootstrap as the job) with the
//! runner's builds dir hidden, so the workspace can only travel through S3.

#![allow(
    clippy::unwrap_used,
    reason = "an integration test reports failure by panicking"
)]

use std::time::Duration;

use aws_sdk_ecs::types::DesiredStatus;
use e2e::harness::{BUCKET, World, assert_outcome, assert_system_failure, line_index};
use e2e::runner::{JobOutcome, StopAction};

const IMAGE: &str = "public.ecr.aws/docker/library/alpine:3.20";
use e2e::harness::world::CLUSTER;
/// A masked variable's value: it must reach the script and nothing ECS shows.
const SECRET: &str = "s3cr3t-t0ken-value-4711";
use e2e::harness::world::TASK_ROLE;

fn fargate_world() -> World {
    World::fargate(TASK_ROLE)
}

fn fargate_world_with(task_role: &str) -> World {
    World::fargate(task_role)
}

fn job(script: &str, extra: &str) -> String {
    job_with_vars("", script, extra)
}

/// [`job`] with `vars` (indented `KEY: value` lines, each after a newline) added to its
/// variables.
fn job_with_vars(vars: &str, script: &str, extra: &str) -> String {
    format!(
        "name: fargate-job\nimage: {IMAGE}\nvariables:\n  SAGEMAKER_ACTION: fargate{vars}\nscript:\n{script}\nsource:\n  README.md: \"app repo\\n\"\n{extra}"
    )
}

/// The ECS task the job with id `job_id` started (main script stage).
fn task_of(w: &World, job_id: u64) -> Option<aws_sdk_ecs::types::Task> {
    let started_by = format!("gl-1-{job_id}");
    for status in [DesiredStatus::Running, DesiredStatus::Stopped] {
        let listed =
            w.rt.block_on(
                w.ecs
                    .list_tasks()
                    .cluster(CLUSTER)
                    .started_by(&started_by)
                    .desired_status(status)
                    .send(),
            )
            .expect("list tasks");
        if let Some(arn) = listed.task_arns().first() {
            let described =
                w.rt.block_on(w.ecs.describe_tasks().cluster(CLUSTER).tasks(arn).send())
                    .expect("describe");
            return described.tasks().first().cloned();
        }
    }
    None
}

#[test]
fn a_fargate_job_streams_its_lines_live_and_returns_its_artifacts_and_outputs() {
    let w = fargate_world();
    let gate = w.dir.path().join("release-the-job");
    let script = format!(
        "  - echo tick-1\n  - while [ ! -e {gate} ]; do sleep 0.1; done\n  - echo tick-2\n  - echo built > result.txt\n  - test \"${{#DEPLOY_TOKEN}}\" -eq {len} && echo token-reached-the-script",
        gate = gate.display(),
        len = SECRET.len(),
    );
    let yaml = job_with_vars(
        &format!("\n  DEPLOY_TOKEN: {{value: {SECRET}, masked: true}}"),
        &script,
        "artifacts:\n  paths: [result.txt]\n  reports: {dotenv: sagemaker.env}\n",
    );
    let fixture = w.fixture(&yaml);
    let running = w.runner.start(&fixture).expect("job starts");
    // The first line reaches the job log while the script is still blocked on the gate file:
    // lines stream live, not at the end.
    running
        .wait_for_line("^tick-1$", Duration::from_secs(90))
        .expect("tick-1 streamed while the task runs");
    assert!(
        !running.log().text().contains("tick-2"),
        "the script is still waiting"
    );
    std::fs::write(&gate, b"go").expect("gate opened");
    let result = running
        .finish_within(Duration::from_secs(120))
        .expect("job ends");
    assert_outcome(&result, JobOutcome::Success);

    let log = result.plain_log();
    let lines: Vec<&str> = log.lines().collect();
    let pos = |needle: &str| line_index(&log, needle);
    assert!(pos("tick-1") < pos("tick-2"));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[fetch] downloaded 4 objects")),
        "fetch lines carry their container name:\n{log}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("[push] uploaded ")),
        "push lines carry their container name:\n{log}"
    );
    for needle in [
        "Provisioning the Fargate task",
        "Running the job's script (job)",
        "Registered task definition sme-",
    ] {
        assert!(log.contains(needle), "{needle:?} missing in:\n{log}");
    }

    let uploaded = result.uploaded_files();
    assert!(
        uploaded.iter().any(|f| f.ends_with("result.txt")),
        "the artifact came back through S3: {uploaded:?}"
    );
    let dotenv = result.dotenv().expect("dotenv report uploaded");
    let get = |k: &str| result.dotenv_value(k).unwrap_or_default();
    let task = task_of(&w, result.id).expect("the task exists");
    assert_eq!(
        get("SAGEMAKER_ECS_TASK_ARN"),
        task.task_arn().unwrap_or_default()
    );
    assert!(
        get("SAGEMAKER_ECS_TASK_DEFINITION_ARN").contains(":task-definition/sme-"),
        "{dotenv:?}"
    );
    assert_eq!(get("SAGEMAKER_ECS_CLUSTER"), CLUSTER);
    assert!(
        get("SAGEMAKER_CONSOLE_URL")
            .starts_with("https://us-east-1.console.aws.amazon.com/ecs/v2/clusters/ci/tasks/")
    );

    // The task is tagged for the job, and no job value is in what ECS shows.
    let tags =
        w.rt.block_on(
            w.ecs
                .list_tags_for_resource()
                .resource_arn(task.task_arn().unwrap_or_default())
                .send(),
        )
        .expect("tags");
    let tag = |k: &str| {
        tags.tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
            .map(str::to_owned)
    };
    assert_eq!(tag("gitlab:job-id"), Some(result.id.to_string()));
    assert_eq!(tag("managed-by").as_deref(), Some("sagemaker-executor"));
    assert_eq!(
        task.started_by(),
        Some(format!("gl-1-{}", result.id).as_str())
    );
    // The masked variable reached the script, and neither the task (with its overrides) nor
    // its task definition shows it.
    assert!(
        log.lines().any(|l| l == "token-reached-the-script"),
        "{log}"
    );
    assert!(!result.unmasked_log.contains(SECRET), "never printed");
    let td =
        w.rt.block_on(
            w.ecs
                .describe_task_definition()
                .task_definition(task.task_definition_arn().unwrap())
                .send(),
        )
        .unwrap();
    assert_eq!(
        td.task_definition().and_then(|t| t.task_role_arn()),
        Some("arn:aws:iam::123456789012:role/ci-task-default"),
        "the helpers get their S3 access from the task role"
    );
    for shown in [format!("{task:?}"), format!("{td:?}")] {
        assert!(
            !shown.contains(SECRET) && !shown.contains("DEPLOY_TOKEN"),
            "{shown}"
        );
    }
    assert!(
        format!("{:?}", task.overrides()).contains("workspace"),
        "the overrides were read"
    );
    // Cleanup deleted the staged objects, the returned workspace included.
    assert!(
        w.keys(&format!("sagemaker-executor/1/{}/", result.id))
            .is_empty()
    );
}

/// The random component of the prefix job `job_id` staged under, from the simulator's call log
/// (the PutObject of its stage script), checked to be 32 lowercase hex digits.
fn staged_random(calls: &[String], job_id: u64) -> String {
    let put = format!("S3.PUT /{BUCKET}/sagemaker-executor/1/{job_id}/");
    let random = calls
        .iter()
        .find_map(|c| c.strip_prefix(&put)?.strip_suffix("/script"))
        .unwrap_or_else(|| panic!("no {put}<random>/script in {calls:#?}"))
        .to_owned();
    assert!(
        random.len() == 32
            && random
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{random:?} is not 128 bits in hex"
    );
    random
}

#[test]
fn each_run_stages_under_an_unguessable_prefix_that_the_fetch_helper_never_lists() {
    let w = fargate_world();
    let mut randoms = Vec::new();
    for n in 0..2 {
        let result = w
            .runner
            .run(&w.fixture(&job(
                &format!("  - echo run-{n} > out.txt"),
                "artifacts:\n  paths: [out.txt]\n",
            )))
            .expect("job runs");
        assert_outcome(&result, JobOutcome::Success);
        let calls = w.calls();
        let random = staged_random(&calls, result.id);
        let prefix = format!("/{BUCKET}/sagemaker-executor/1/{}/{random}/", result.id);
        // From RunTask to the executor's download of the returned workspace, the only S3 calls
        // are the task's: the fetch helper GETs exactly the staged objects by key, never a
        // listing of the bucket (`S3.GET /<bucket>`, which the task role may not do), and the
        // push helper PUTs the returned workspace.
        let run_task = calls
            .iter()
            .rposition(|c| c == "ECS.RunTask")
            .expect("RunTask");
        let restore = format!("S3.GET {prefix}returned/workspace.tar.gz");
        let restored = calls
            .iter()
            .rposition(|c| *c == restore)
            .unwrap_or_else(|| panic!("no {restore:?} in {calls:#?}"));
        let in_task: Vec<&String> = calls[run_task..restored]
            .iter()
            .filter(|c| c.starts_with("S3."))
            .collect();
        let mut fetched: Vec<&str> = in_task
            .iter()
            .filter_map(|c| c.strip_prefix(&format!("S3.GET {prefix}")))
            .collect();
        fetched.sort_unstable();
        assert_eq!(
            fetched,
            ["bootstrap.sh", "job.env", "script", "workspace.tar.gz"],
            "{in_task:#?}"
        );
        assert!(
            in_task
                .iter()
                .all(|c| c.starts_with(&format!("S3.GET {prefix}"))
                    || c.starts_with(&format!("S3.PUT {prefix}returned/"))),
            "the task touched nothing but its own run's keys: {in_task:#?}"
        );
        // The random part is not in the job log, where more people than the job's role read it.
        assert!(
            !result.unmasked_log.contains(&random),
            "{}",
            result.unmasked_log
        );
        let log = result.plain_log();
        assert!(
            log.contains(&format!(
                "to s3://{BUCKET}/sagemaker-executor/1/{}/…/",
                result.id
            )),
            "{log}"
        );
        assert!(
            result
                .uploaded_files()
                .iter()
                .any(|f| f.ends_with("out.txt")),
            "the workspace came back"
        );
        randoms.push((result.id, random));
    }
    assert_ne!(randoms[0].1, randoms[1].1, "{randoms:?}");
    // Cleanup left nothing of either job: staged objects, returned workspaces.
    let left = w.keys("");
    for (id, random) in &randoms {
        assert!(
            !left.iter().any(
                |k| k.contains(random) || k.starts_with(&format!("sagemaker-executor/1/{id}/"))
            ),
            "{left:?}"
        );
    }
}

#[test]
fn a_failing_script_is_a_build_failure_with_its_exit_code() {
    let w = fargate_world();
    let fixture = w.fixture(&job(
        "  - echo partial > partial.txt\n  - echo about to fail\n  - exit 3",
        "artifacts:\n  paths: [partial.txt]\n  when: on_failure\n",
    ));
    let result = w.runner.run(&fixture).expect("job runs");
    assert_outcome(&result, JobOutcome::Failed { exit_code: 3 });
    let log = result.plain_log();
    assert!(
        log.contains("the job's script exited with status 3 in the job container"),
        "{log}"
    );
    assert!(log.lines().any(|l| l == "about to fail"), "{log}");
    assert!(
        result
            .uploaded_files()
            .iter()
            .any(|f| f.ends_with("partial.txt")),
        "the returned workspace reached on-failure artifacts"
    );
}

#[test]
fn an_oom_killed_job_container_is_a_build_failure_that_says_oom() {
    let w = fargate_world();
    w.sim
        .post_outcomes(&serde_json::json!({"ecs_task": [{"name_contains": "sme-", "oom": "job", "after_seconds": 0.5}]}))
        .expect("outcome");
    let result = w
        .runner
        .run(&w.fixture(&job("  - echo allocating\n  - sleep 60", "")))
        .expect("job runs");
    assert_outcome(&result, JobOutcome::Failed { exit_code: 137 });
    let log = result.plain_log();
    assert!(
        log.contains("the job container ran out of memory (OOM) with 512 MiB (FARGATE_MEMORY"),
        "{log}"
    );
}

#[test]
fn a_second_job_of_the_same_shape_reuses_the_task_definition() {
    let w = fargate_world();
    for _ in 0..2 {
        let result = w
            .runner
            .run(&w.fixture(&job("  - echo hello", "")))
            .expect("job runs");
        assert_outcome(&result, JobOutcome::Success);
    }
    assert_eq!(w.count("ECS.RegisterTaskDefinition"), 1, "{:?}", w.calls());
    assert_eq!(w.count("ECS.RunTask"), 2, "{:?}", w.calls());
    // A different size is a different task definition.
    let bigger = w.fixture(&job_with_vars(
        "\n  FARGATE_MEMORY: \"1024\"",
        "  - echo hello",
        "",
    ));
    let result = w.runner.run(&bigger).expect("job runs");
    assert_outcome(&result, JobOutcome::Success);
    assert_eq!(w.count("ECS.RegisterTaskDefinition"), 2, "{:?}", w.calls());
}

#[test]
fn sigterm_stops_the_task_and_the_executor_exits_promptly() {
    let w = fargate_world();
    let fixture = w.fixture(&job("  - echo READY-TO-CANCEL\n  - sleep 300", ""));
    let result = w.run_stopped_at(
        &fixture,
        "build_script",
        "^READY-TO-CANCEL$",
        StopAction::Cancel,
    );
    assert_outcome(&result, JobOutcome::Canceled);
    assert_eq!(w.count("ECS.StopTask"), 1, "{:?}", w.calls());
    let build = result.stage("build_script").expect("build_script ran");
    assert!(
        !build.was_sent("SIGKILL"),
        "no SIGKILL needed: {:?}",
        build.signals
    );
    let sigterm_at = build
        .signals
        .first()
        .map(|s| s.after)
        .expect("SIGTERM sent");
    assert!(
        build.duration.saturating_sub(sigterm_at) < Duration::from_secs(20),
        "the executor exited within the stop grace after SIGTERM: {:?} after {:?}",
        build.duration,
        sigterm_at
    );
    let task = task_of(&w, result.id).expect("the task exists");
    assert_eq!(task.last_status(), Some("STOPPED"));
    assert!(
        task.stopped_reason()
            .unwrap_or_default()
            .contains("was cancelled"),
        "{:?}",
        task.stopped_reason()
    );
    let log = result.plain_log();
    assert!(
        log.contains("Job cancelled: ECS task") && log.contains("was stopped"),
        "{log}"
    );
    assert!(
        log.contains("[sagemaker-executor] SIGTERM received: stopping the script"),
        "the job's last lines after StopTask are shown:\n{log}"
    );
    let procs = w.container_processes();
    assert!(procs.is_empty(), "no container process left: {procs:?}");
}

#[test]
fn sigkill_then_cleanup_stops_the_task_recorded_in_the_state_file() {
    let w = fargate_world();
    let fixture = w.fixture(&job("  - echo READY-TO-KILL\n  - sleep 300", ""));
    let result = w.run_stopped_at(
        &fixture,
        "build_script",
        "^READY-TO-KILL$",
        StopAction::KillExecutor,
    );
    assert!(
        result
            .runner_log
            .contains("cleanup: stopped ECS task arn:aws:ecs:"),
        "{}",
        result.runner_log
    );
    w.eventually("the task to stop", Duration::from_secs(30), || {
        task_of(&w, result.id)
            .and_then(|t| t.last_status().map(str::to_owned))
            .as_deref()
            == Some("STOPPED")
    });
    assert!(
        w.keys(&format!("sagemaker-executor/1/{}/", result.id))
            .is_empty(),
        "staged objects are gone"
    );
}

#[test]
fn no_capacity_is_a_system_failure_that_says_why() {
    let w = fargate_world();
    w.sim
        .post_outcomes(
            &serde_json::json!({"ecs_task": [{"name_contains": "sme-", "capacity": true}]}),
        )
        .expect("outcome");
    let result = w
        .runner
        .run(&w.fixture(&job("  - echo never", "")))
        .expect("job runs");
    assert_system_failure(
        &result,
        "ECS could not start the Fargate task: Capacity is unavailable",
    );
}

#[test]
fn without_a_task_role_the_job_is_refused_before_anything_is_created() {
    let w = fargate_world_with("");
    let result = w
        .runner
        .run(&w.fixture(&job("  - echo never", "")))
        .unwrap();
    assert_system_failure(&result, "a fargate job needs a task role");
    let calls = w.calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("ECS.") && c != "ECS.CreateCluster"),
        "{calls:?}"
    );
}

#[test]
fn a_bad_image_is_the_jobs_fault_but_aws_failing_to_start_or_reclaiming_the_task_is_not() {
    let w = fargate_world();
    let cases = [
        (
            serde_json::json!({"name_contains": "sme-", "fail_to_start": "CannotPullContainerError: pull image manifest has been retried 5 time(s): not found"}),
            "",
            "the job's image public.ecr.aws/docker/library/alpine:3.20 could not be pulled: CannotPullContainerError",
            false,
        ),
        (
            serde_json::json!({"name_contains": "sme-", "fail_to_start": "ResourceInitializationError: failed to configure ENI"}),
            "",
            "AWS stopped the Fargate task: ResourceInitializationError: failed to configure ENI",
            true,
        ),
        (
            serde_json::json!({"name_contains": "sme-", "spot_interruption": true, "after_seconds": 1.0}),
            "\n  FARGATE_SPOT: \"true\"",
            "the Fargate task was interrupted by AWS: Your Spot Task was interrupted.",
            true,
        ),
    ];
    for (outcome, vars, needle, system) in cases {
        w.sim
            .post_outcomes(&serde_json::json!({ "ecs_task": [outcome] }))
            .unwrap();
        let yaml = job_with_vars(vars, "  - echo started\n  - sleep 60", "");
        let result = w.runner.run(&w.fixture(&yaml)).unwrap();
        let log = result.plain_log();
        if system {
            assert!(
                matches!(result.outcome, JobOutcome::SystemFailure { .. }),
                "{needle}: {:?}\n{log}",
                result.outcome
            );
        } else {
            assert_eq!(
                result.outcome,
                JobOutcome::Failed { exit_code: 1 },
                "{needle}\n{log}"
            );
        }
        assert!(log.contains(needle), "{needle:?} missing in:\n{log}");
    }
}

#[test]
fn re_running_the_script_stage_attaches_to_the_task_it_started() {
    let w = fargate_world();
    // Without cleanup, as while the job is still going: the state file and the staged and
    // returned objects are still there.
    let mut config = w.runner.config().clone();
    config.cleanup_exec = None;
    let runner = e2e::runner::Runner::new(config).unwrap();
    let result = runner
        .run(&w.fixture(&job("  - echo first-run > out.txt", "")))
        .unwrap();
    assert_outcome(&result, JobOutcome::Success);
    assert_eq!(w.count("ECS.RunTask"), 1);

    let record = result.stage("build_script").unwrap().clone();
    let project = result.project_dir.clone().unwrap();
    std::fs::remove_file(project.join("out.txt")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = result
        .replay_in(&record, dir.path(), &result.response)
        .unwrap()
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Attaching to ECS task ")
            && stdout.contains("started earlier by this stage"),
        "{stdout}"
    );
    assert_eq!(w.count("ECS.RunTask"), 1, "no second task");
    assert_eq!(
        std::fs::read_to_string(project.join("out.txt")).unwrap(),
        "first-run\n",
        "the returned workspace was restored again"
    );
}

/// A hardened image whose USER is not root (distroless's `nonroot`, uid 65532).
const NONROOT_IMAGE: &str = "gcr.io/distroless/base-debian12:nonroot";

#[test]
fn a_job_image_running_as_a_non_root_user_restores_writes_and_returns_its_workspace() {
    let w = fargate_world();
    // The simulator runs this image's processes as uid 65532 on a task volume owned by root
    // (mode 0755), as Fargate does: only the fetch helper, root in the helper image, can open it.
    w.sim
        .post_json(
            "/_sim/images",
            &serde_json::json!({"images": {NONROOT_IMAGE: {"entrypoint": ["/bin/sh"], "user": "65532"}}}),
        )
        .expect("the simulator learns the image");
    // The volume is mounted at the builds root, inside this test's private temp dir (0700). On
    // Fargate the mount point's parents are the image's own directories, which any user may
    // traverse; so may they here.
    std::fs::set_permissions(
        w.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("temp dir traversable");
    let yaml = format!(
        "name: nonroot-job\nimage: {NONROOT_IMAGE}\nvariables:\n  SAGEMAKER_ACTION: fargate\nscript:\n  - echo \"uid $(id -u)\"\n  - cat README.md\n  - mkdir -p build/deep && echo \"built by $(id -u)\" > build/deep/result.txt\nsource:\n  README.md: \"app repo\\n\"\nartifacts:\n  paths: [build/]\n"
    );
    let result = w.runner.run(&w.fixture(&yaml)).expect("job runs");
    assert_outcome(&result, JobOutcome::Success);
    let log = result.plain_log();
    assert!(
        log.lines().any(|l| l == "uid 65532"),
        "ran as 65532:\n{log}"
    );
    assert!(
        log.lines().any(|l| l == "app repo"),
        "read the restored workspace:\n{log}"
    );
    let returned = result
        .uploaded_artifacts_dir
        .join("archive")
        .join("build/deep/result.txt");
    assert_eq!(
        std::fs::read_to_string(&returned).ok().as_deref(),
        Some("built by 65532\n"),
        "the artifact it wrote came back through S3: {:?}",
        result.uploaded_files()
    );
}
