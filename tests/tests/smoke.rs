//! `runner-setup/smoke.sh` against the AWS simulator, so the admin's smoke test cannot rot: the
//! script drives the real executor through the custom-executor protocol with its own job
//! runner, and these tests check what it leaves in "AWS" afterwards with SDK clients, not only
//! what it prints.
//!
//! The world is what an admin has after installing: the staging bucket, the Fargate cluster and
//! log group, a config whose policy allows the smoke jobs, and (here) a serving image the
//! simulator knows. The script's AWS CLI is the simulator venv's (`tests/sim/requirements.txt`).

#![allow(
    clippy::unwrap_used,
    reason = "an integration test reports failure by panicking"
)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::DesiredStatus;
use aws_sdk_sagemaker::types::TrainingJobStatus;
use e2e::harness::world::{CLUSTER, TASK_ROLE};
use e2e::harness::{BUCKET, ECR_IMAGE, SERVE_IMAGE, World};
use e2e::paths::workspace_root;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The group the script registers into (allowed by the harness's `policy.register.groups`).
const GROUP: &str = "ml-smoke";

/// The policy the README tells an admin to add for the smoke test, on top of the harness's.
const SMOKE_POLICY: &str = r#"
[policy.fargate]
images = ["public.ecr.aws/docker/library/**"]

[policy.deploy]
endpoints = ["smoke-*"]
allow_serverless = true
"#;

/// How long one run of the script may take here before the test gives up on it (the simulator
/// runs every step in seconds; the script's own bound is passed as `--timeout`).
const SCRIPT_WAIT: Duration = Duration::from_secs(600);

/// An admin's world: simulator, bucket, cluster, log group, the config with the smoke policy,
/// and the serving image known to the simulator.
fn admin_world() -> World {
    let w = World::fargate(TASK_ROLE);
    let mut config = std::fs::read_to_string(&w.config_path).unwrap();
    config.push_str(SMOKE_POLICY);
    w.write_config(&config).unwrap();
    w.learn_serve_image();
    w
}

/// `bash runner-setup/smoke.sh <args>` against the simulator, with the training and serving
/// images of the harness and a training script that leaves the model the serving image reads.
fn smoke_command(w: &World, train_script: &str, args: &[&str]) -> Command {
    let script_file = w.root().join("train-script.sh");
    std::fs::write(&script_file, train_script).unwrap();
    let root = workspace_root();
    let venv_bin = root.join(".venv/bin");
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("runner-setup/smoke.sh"))
        .arg("--config")
        .arg(&w.config_path)
        .arg("--executor")
        .arg(&w.binary)
        .args(["--train-image", ECR_IMAGE, "--serve-image", SERVE_IMAGE])
        .arg("--train-script")
        .arg(&script_file)
        .args([
            "--smoke-body",
            "{\"rows\": [[1, 2]]}",
            "--smoke-content-type",
            "application/json",
            "--group",
            GROUP,
            "--endpoint-prefix",
            "smoke",
            "--timeout",
            "300",
            "--teardown-timeout",
            "240",
        ])
        .arg("--work-dir")
        .arg(w.root().join("smoke-work"))
        .args(args)
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in w.sim.aws_env() {
        cmd.env(k, v);
    }
    cmd
}

/// Waits for `child` with a deadline; kills it (and fails) when it does not end in time.
fn finish(mut child: Child) -> Output {
    let deadline = Instant::now() + SCRIPT_WAIT;
    // The script writes a lot; drain its pipes on threads so it never blocks on a full pipe
    // while this thread waits for it.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut s).unwrap();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut s).unwrap();
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("smoke.sh did not end within {SCRIPT_WAIT:?}");
        }
        // Nothing signals a child's exit to a std::process::Child but a poll (a blocking wait
        // would have no deadline).
        std::thread::sleep(Duration::from_millis(200));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The training jobs the simulator knows, with their status.
fn training_jobs(w: &World) -> Vec<(String, TrainingJobStatus)> {
    let out =
        w.rt.block_on(w.sagemaker.list_training_jobs().send())
            .unwrap();
    out.training_job_summaries()
        .iter()
        .map(|j| {
            (
                j.training_job_name().unwrap_or_default().to_owned(),
                j.training_job_status().cloned().unwrap(),
            )
        })
        .collect()
}

/// How many tasks of the cluster have `status` as their desired status.
fn tasks(w: &World, status: DesiredStatus) -> usize {
    w.rt.block_on(
        w.ecs
            .list_tasks()
            .cluster(CLUSTER)
            .desired_status(status)
            .send(),
    )
    .unwrap()
    .task_arns()
    .len()
}

/// Fails the test unless the simulator holds nothing the run left: no training job or task
/// still running, no endpoint, endpoint config or model, no registry group (the run created
/// it) and no object in the staging bucket (staged workspaces, model archive).
#[track_caller]
fn assert_nothing_left(w: &World, log: &str) {
    for (name, status) in training_jobs(w) {
        assert!(
            !matches!(
                status,
                TrainingJobStatus::InProgress | TrainingJobStatus::Stopping
            ),
            "training job {name} is {status:?}\n{log}"
        );
    }
    assert_eq!(tasks(w, DesiredStatus::Running), 0, "a task runs\n{log}");
    let endpoints = w.rt.block_on(w.sagemaker.list_endpoints().send()).unwrap();
    assert!(
        endpoints.endpoints().is_empty(),
        "{:?}\n{log}",
        endpoints.endpoints()
    );
    let configs =
        w.rt.block_on(w.sagemaker.list_endpoint_configs().send())
            .unwrap();
    assert!(
        configs.endpoint_configs().is_empty(),
        "{:?}\n{log}",
        configs.endpoint_configs()
    );
    let models = w.rt.block_on(w.sagemaker.list_models().send()).unwrap();
    assert!(models.models().is_empty(), "{:?}\n{log}", models.models());
    let groups =
        w.rt.block_on(w.sagemaker.list_model_package_groups().send())
            .unwrap();
    assert!(
        groups.model_package_group_summary_list().is_empty(),
        "{:?}\n{log}",
        groups.model_package_group_summary_list()
    );
    let keys = w.keys("");
    assert!(keys.is_empty(), "objects left in {BUCKET}: {keys:?}\n{log}");
}

/// The whole smoke run passes against the simulator: every job really ran (a completed
/// training job, a stopped task, a registered version, a served endpoint that answered), a
/// cost line computed from what "AWS" reported is printed, and nothing is left behind.
#[test]
fn smoke_script_runs_every_job_prints_its_cost_and_leaves_nothing() {
    let w = admin_world();
    let started = Instant::now();
    let child = smoke_command(
        &w,
        "echo \"training on $SM_CURRENT_HOST\"\necho \"smoke model\" > \"$SM_MODEL_DIR/answer.txt\"\n",
        &["--yes"],
    )
    .spawn()
    .unwrap();
    let out = finish(child);
    let took = started.elapsed();
    let log = text(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(stdout.contains("smoke: PASSED"), "{log}");
    assert!(stdout.contains("smoke: nothing left behind"), "{log}");

    // Each job ran for real, as the simulator saw it.
    let jobs = training_jobs(&w);
    assert_eq!(jobs.len(), 1, "{jobs:?}\n{log}");
    assert_eq!(jobs[0].1, TrainingJobStatus::Completed, "{log}");
    assert_eq!(tasks(&w, DesiredStatus::Stopped), 1, "{log}");
    let calls = w.calls();
    for op in [
        "SageMaker.CreateTrainingJob",
        "ECS.RunTask",
        "SageMaker.CreateModelPackage",
        "SageMaker.CreateEndpoint",
        "SageMakerRuntime.InvokeEndpoint",
        "SageMaker.DeleteEndpoint",
        "SageMaker.DeleteModelPackage",
        "SageMaker.DeleteModelPackageGroup",
    ] {
        assert!(
            calls.iter().any(|c| c == op),
            "no {op} call: {calls:?}\n{log}"
        );
    }
    assert!(
        stdout.contains("Smoke test passed"),
        "the endpoint never answered\n{log}"
    );

    // The cost: per item from what AWS reported, then the total.
    let billable = regex::Regex::new(
        r"smoke: cost: training job gl-1-\d+: \d+ billable s x \$0\.115/h \(ml\.m5\.large\) = \$\d+\.\d+",
    )
    .unwrap();
    assert!(billable.is_match(&stdout), "{log}");
    let fargate = regex::Regex::new(r"smoke: cost: Fargate task: (\d+) billed s").unwrap();
    let billed: u64 = fargate
        .captures(&stdout)
        .unwrap_or_else(|| panic!("no Fargate cost line\n{log}"))[1]
        .parse()
        .unwrap();
    assert!(
        billed >= 60,
        "Fargate bills at least a minute: {billed}\n{log}"
    );
    let total = regex::Regex::new(r"(?m)^smoke: total cost: \$(\d+\.\d{4}) ").unwrap();
    let total: f64 = total
        .captures(&stdout)
        .unwrap_or_else(|| panic!("no total cost line\n{log}"))[1]
        .parse()
        .unwrap();
    assert!(total > 0.0 && total < 0.05, "{total}\n{log}");

    assert_nothing_left(&w, &log);
    eprintln!("smoke.sh against the simulator took {took:?}");
}

/// Without `--yes` the script prints what it would create and creates nothing.
#[test]
fn smoke_script_without_yes_only_prints_the_plan() {
    let w = admin_world();
    let before = w.calls().len();
    let out = finish(smoke_command(&w, "true\n", &[]).spawn().unwrap());
    let log = text(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(stdout.contains("will create"), "{log}");
    assert!(stdout.contains("serverless endpoint smoke-"), "{log}");
    assert!(stdout.contains("re-run with --yes"), "{log}");
    // The only AWS call is the one that names the account in the plan.
    let calls = w.calls().split_off(before);
    assert_eq!(calls, ["STS.GetCallerIdentity"], "{log}");
    assert!(!w.root().join("smoke-work").exists(), "{log}");
}

/// Ctrl-C while the training job runs: the script stops it through the executor (SIGTERM to
/// the run call, then `cleanup`), runs none of the later jobs, fails, and leaves nothing.
#[test]
fn smoke_script_interrupted_during_training_stops_it_and_cleans_up() {
    let w = admin_world();
    // A training script that runs until it is stopped: the interrupt must be what ends it.
    let child = smoke_command(&w, "echo training-started\nsleep 300\n", &["--yes"])
        .spawn()
        .unwrap();
    w.eventually("the training job to run", Duration::from_secs(120), || {
        training_jobs(&w)
            .iter()
            .any(|(_, s)| *s == TrainingJobStatus::InProgress)
            && std::fs::read_to_string(w.root().join("smoke-work/job-1.log"))
                .is_ok_and(|l| l.contains("training-started"))
    });
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    kill(pid, Signal::SIGINT).unwrap();
    let out = finish(child);
    let log = text(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        stdout.contains("smoke: stopped: interrupted by SIGINT"),
        "{log}"
    );
    assert!(stdout.contains("FAILED: a job did not succeed"), "{log}");
    let jobs = training_jobs(&w);
    assert_eq!(jobs.len(), 1, "{jobs:?}\n{log}");
    assert_eq!(jobs[0].1, TrainingJobStatus::Stopped, "{log}");
    let calls = w.calls();
    assert!(
        !calls.iter().any(|c| c == "ECS.RunTask"),
        "a later job ran: {calls:?}\n{log}"
    );
    assert_nothing_left(&w, &log);
    let work: PathBuf = w.root().join("smoke-work");
    assert!(work.join("job-1.log").is_file(), "{log}");
}
