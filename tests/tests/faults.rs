//! End-to-end runs through the simulator's fault injection, and a randomized sweep of cancel
//! points.
//!
//! * **Faults**: `train`, `register` and `fargate` jobs run with fault rules on every operation
//!   the executor calls for that action (throttling, 5xx, latency, connections dropped before the
//!   request is served, and `drop_response`: served, then the answer lost, on the create calls
//!   themselves). Each job must succeed with the right outputs, exactly one training job / task /
//!   model package version, every numbered script line exactly once and in order, and every rule
//!   must have fired in full. A create call served with its answer lost whose later tries all
//!   fail leaves a failed job whose run cleanup still finds by name and stops.
//! * **Sweep**: at least 50 cases, drawn from a seeded xorshift RNG (seed printed; override with
//!   `FAULTS_SEED`), each an action (`train`, `fargate`, `register`, `deploy`), a signal (SIGTERM
//!   = GitLab's cancel, or SIGKILL of the executor followed by the runner's cleanup) and a point:
//!   a job-log line, or a create call held in flight by a latency fault. After each case nothing
//!   may run or stay billable: no simulator process, no training job InProgress, no ECS task
//!   RUNNING/PENDING, no endpoint of a first deployment, no staged object under the job's prefix.
//!   One world per action runs its cases in sequence; the four worlds run in parallel.
//!   `FAULTS_CASES=3,17` replays only those cases of the seed, `FAULTS_VERBOSE=1` prints each
//!   case's runner log.

#![allow(
    clippy::unwrap_used,
    reason = "an integration test reports failure by panicking"
)]

use std::time::{Duration, Instant};

use aws_sdk_ecs::types::DesiredStatus;
use aws_sdk_sagemaker::types::ModelApprovalStatus;
use e2e::harness::world::{CLUSTER, TASK_ROLE};
use e2e::harness::{BUCKET, ECR_IMAGE, POLICY, World, assert_outcome, training_job_name};
use e2e::runner::{JobOptions, JobOutcome, JobResult, StopAction};
use serde_json::{Value, json};

/// How many numbered lines a fault run's script prints.
const LINES: usize = 200;
/// The Fargate job image.
const FARGATE_IMAGE: &str = "public.ecr.aws/docker/library/alpine:3.20";
/// The model package group of the register runs.
const GROUP: &str = "ml-faults";

// ------------------------------------------------------------------------------------------
// shared helpers
// ------------------------------------------------------------------------------------------

/// The script steps printing `line-0001` .. `line-<LINES>`, then staying a few seconds (so the
/// wait loop polls often enough to meet its faults).
fn numbered_step() -> String {
    format!("  - for i in $(seq 1 {LINES}); do printf 'line-%04d\\n' \"$i\"; done\n  - sleep 6")
}

/// Fails unless the job log has every numbered line exactly once, in order.
#[track_caller]
fn assert_numbered_lines(result: &JobResult) {
    let log = result.plain_log();
    let seen: Vec<&str> = log.lines().filter(|l| l.starts_with("line-")).collect();
    let want: Vec<String> = (1..=LINES).map(|i| format!("line-{i:04}")).collect();
    assert_eq!(seen, want, "every line once and in order:\n{log}");
}

/// Replaces the simulator's fault rules with `rules`.
fn set_faults(w: &World, rules: &Value) {
    clear_faults(w);
    w.sim.post_faults(rules).expect("faults posted");
}

/// Drops every fault rule.
fn clear_faults(w: &World) {
    let (host, port) = w.sim.address();
    let (status, body) =
        e2e::sim::http_request(host, port, "DELETE", "/_sim/faults", b"").expect("DELETE faults");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

/// Fails unless every rule of `rules` fired in full (no rule is left, each (match, kind) shows
/// in the call log), then drops the rules so the test's own calls go through.
#[track_caller]
fn assert_all_fired(w: &World, rules: &Value, result: &JobResult) {
    let left = w.sim.get_json("/_sim/faults").expect("faults");
    let left = left["rules"].as_array().cloned().unwrap_or_default();
    clear_faults(w);
    let calls = w.sim.calls_json().expect("calls");
    let shown: Vec<String> = calls
        .iter()
        .map(|c| format!("{} {}", c["op"], c["fault"]))
        .collect();
    assert!(
        left.is_empty(),
        "rules not used up: {left:#?}\ncalls: {shown:#?}\n{}",
        result.plain_log()
    );
    for rule in rules["rules"].as_array().expect("rules") {
        let (m, kind) = (
            rule["match"].as_str().unwrap(),
            rule["kind"].as_str().unwrap(),
        );
        assert!(
            calls.iter().any(|c| {
                c["op"].as_str().is_some_and(|op| op.contains(m))
                    && c["fault"].as_str() == Some(kind)
            }),
            "no {kind} served for {m:?}"
        );
    }
}

/// A rule list: for each `(match, kinds)`, one single-use rule per kind, spaced so that a
/// faulted call and a clean one alternate (rule `i` of a match skips `i` calls).
fn rules(spec: &[(&str, &[Value])]) -> Value {
    let mut out = Vec::new();
    for (m, kinds) in spec {
        for (i, kind) in kinds.iter().enumerate() {
            let mut rule = kind.clone();
            rule["match"] = json!(m);
            rule["skip"] = json!(i);
            out.push(rule);
        }
    }
    json!({ "rules": out })
}

/// Single-use rules for `m`, one per kind, applying to consecutive calls (for operations
/// called too rarely to alternate).
fn back_to_back(m: &str, kinds: &[Value]) -> Value {
    let out: Vec<Value> = kinds
        .iter()
        .map(|kind| {
            let mut rule = kind.clone();
            rule["match"] = json!(m);
            rule
        })
        .collect();
    json!({ "rules": out })
}

fn throttle() -> Value {
    json!({"kind": "throttle"})
}
fn error(status: u16, code: &str) -> Value {
    json!({"kind": "error", "status": status, "code": code})
}
fn drop_conn() -> Value {
    json!({"kind": "drop"})
}
fn drop_response() -> Value {
    json!({"kind": "drop_response"})
}
fn latency(ms: u64) -> Value {
    json!({"kind": "latency", "latency_ms": ms})
}

/// Rules on a create call: its connection dropped before it is served, then served with the
/// answer lost, then slow: three tries of one SDK call, one resource.
fn create_rules(op: &str) -> Value {
    back_to_back(op, &[drop_conn(), drop_response(), latency(800)])
}

/// Concatenates rule lists.
fn all(parts: &[Value]) -> Value {
    let mut out = Vec::new();
    for p in parts {
        let list = p.get("rules").unwrap_or(p);
        out.extend(list.as_array().expect("rule list").iter().cloned());
    }
    json!({ "rules": out })
}

/// The staging-bucket faults every remote run meets: uploads (staging; the Fargate push
/// helper), downloads and listings (restore; the Fargate fetch helper; cleanup), and cleanup's
/// DeleteObjects.
fn s3_rules() -> Value {
    rules(&[
        (
            "S3.PUT /ci-staging/sagemaker-executor/1/",
            &[
                error(503, "SlowDown"),
                error(500, "InternalError"),
                drop_conn(),
                latency(500),
            ],
        ),
        (
            "S3.GET /ci-staging/",
            &[error(503, "SlowDown"), drop_conn()],
        ),
        ("S3.POST /ci-staging/", &[error(500, "InternalError")]),
    ])
}

/// The CloudWatch Logs faults of the log feed.
fn log_rules(describe_streams: bool) -> Value {
    let events = rules(&[(
        "Logs.GetLogEvents",
        &[
            throttle(),
            error(503, "ServiceUnavailableException"),
            drop_conn(),
            latency(1500),
        ],
    )]);
    if describe_streams {
        all(&[
            events,
            back_to_back("Logs.DescribeLogStreams", &[throttle(), drop_conn()]),
        ])
    } else {
        events
    }
}

// ------------------------------------------------------------------------------------------
// fault runs
// ------------------------------------------------------------------------------------------

#[test]
fn train_then_register_under_faults_on_every_call_succeed_with_one_resource_each() {
    let w = World::new(POLICY);
    let train_rules = all(&[
        create_rules("SageMaker.CreateTrainingJob"),
        rules(&[(
            "SageMaker.DescribeTrainingJob",
            &[throttle(), error(500, "InternalFailure"), drop_conn()],
        )]),
        log_rules(true),
        s3_rules(),
    ]);
    set_faults(&w, &train_rules);
    let fixture = w.fixture(&format!(
        "name: train-faults\nimage: {ECR_IMAGE}\nvariables:\n  SAGEMAKER_METRIC_accuracy: \"accuracy=([0-9.]+)\"\nscript:\n{}\n  - mkdir -p \"$SM_MODEL_DIR\" && echo weights > \"$SM_MODEL_DIR/model.bin\"\n  - echo accuracy=0.93\n  - echo trained > result.txt\nsource:\n  README.md: \"model repo\\n\"\nartifacts:\n  paths: [result.txt]\n  reports: {{dotenv: sagemaker.env}}\n",
        numbered_step()
    ));
    let train = w.runner.run(&fixture).expect("job runs");
    assert_all_fired(&w, &train_rules, &train);
    assert_outcome(&train, JobOutcome::Success);
    assert_numbered_lines(&train);
    let name = training_job_name(1, train.id);
    let listed =
        w.rt.block_on(w.sagemaker.list_training_jobs().name_contains(&name).send())
            .unwrap();
    assert_eq!(
        listed.training_job_summaries().len(),
        1,
        "one training job: {listed:?}"
    );
    assert_eq!(w.training_status(&name), "Completed");
    assert_eq!(
        train.dotenv_value("SAGEMAKER_TRAINING_JOB_NAME").as_deref(),
        Some(name.as_str())
    );
    // <output path>/<project>/<job>/<the run's random part>/<training job>/output/model.tar.gz
    let model = train
        .dotenv_value("SAGEMAKER_MODEL_DATA")
        .unwrap_or_default();
    let run_part = model
        .strip_prefix(&format!(
            "s3://{BUCKET}/sagemaker-executor/output/1/{}/",
            train.id
        ))
        .and_then(|rest| rest.strip_suffix(&format!("/{name}/output/model.tar.gz")));
    assert!(
        run_part.is_some_and(|r| r.len() == 32 && r.bytes().all(|b| b.is_ascii_hexdigit())),
        "{model}"
    );
    assert_eq!(
        train
            .dotenv_value("SAGEMAKER_FINAL_METRIC_accuracy")
            .as_deref(),
        Some("0.93")
    );
    assert!(
        train
            .uploaded_files()
            .iter()
            .any(|f| f.ends_with("result.txt")),
        "the artifact came back: {:?}",
        train.uploaded_files()
    );
    assert!(
        w.keys(&format!("sagemaker-executor/1/{}/", train.id))
            .is_empty(),
        "cleanup deleted the staged objects through its faults"
    );

    // Register the model under faults on every registry call, the group's creation and the
    // version's creation answered after being served.
    let upstream = train.dotenv().expect("dotenv");
    let register_rules = all(&[json!([
        // "DescribeModelPackage" is a prefix of "DescribeModelPackageGroup", and
        // "CreateModelPackage" of "CreateModelPackageGroup": the group's calls come first
        // (one each, plus the retry), so the version's rules skip them.
        {"match": "SageMaker.DescribeModelPackageGroup", "kind": "throttle"},
        {"match": "SageMaker.DescribeModelPackage", "kind": "throttle", "skip": 1},
        {"match": "SageMaker.CreateModelPackageGroup", "kind": "drop_response"},
        {"match": "SageMaker.CreateModelPackage", "kind": "drop", "skip": 1},
        {"match": "SageMaker.CreateModelPackage", "kind": "drop_response", "skip": 1},
        {"match": "SageMaker.ListModelPackages", "kind": "error", "status": 500, "code": "InternalFailure"},
        {"match": "S3.PUT /ci-staging/sagemaker-executor/output/", "kind": "drop"},
    ])]);
    set_faults(&w, &register_rules);
    let mut yaml = format!(
        "name: register-faults\nprotected: true\nvariables:\n  SAGEMAKER_ACTION: register\n  SAGEMAKER_MODEL_PACKAGE_GROUP: {GROUP}\n  SAGEMAKER_APPROVAL_GATES: \"accuracy>=0.9\"\n"
    );
    for (k, v) in &upstream {
        yaml.push_str(&format!("  {k}: {v:?}\n"));
    }
    yaml.push_str("script: [echo SHOULD-NOT-RUN]\nsource:\n  README.md: \"model repo\\n\"\nartifacts:\n  when: always\n  paths: [release/]\n  reports: {dotenv: sagemaker.env}\n");
    let register = w.runner.run(&w.fixture(&yaml)).expect("job runs");
    assert_all_fired(&w, &register_rules, &register);
    assert_outcome(&register, JobOutcome::Success);
    let versions =
        w.rt.block_on(
            w.sagemaker
                .list_model_packages()
                .model_package_group_name(GROUP)
                .send(),
        )
        .unwrap();
    assert_eq!(
        versions.model_package_summary_list().len(),
        1,
        "one version: {versions:?}"
    );
    let arn = register
        .dotenv_value("SAGEMAKER_MODEL_PACKAGE_ARN")
        .expect("arn");
    assert!(arn.ends_with(&format!("model-package/{GROUP}/1")), "{arn}");
    assert_eq!(
        register
            .dotenv_value("SAGEMAKER_MODEL_PACKAGE_VERSION")
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        register.dotenv_value("SAGEMAKER_GATE_accuracy").as_deref(),
        Some("pass")
    );
    let d =
        w.rt.block_on(
            w.sagemaker
                .describe_model_package()
                .model_package_name(&arn)
                .send(),
        )
        .unwrap();
    assert_eq!(
        d.inference_specification().unwrap().containers()[0].model_data_url(),
        Some(model.as_str())
    );
}

#[test]
fn a_fargate_job_under_faults_on_every_call_succeeds_with_one_task() {
    let w = World::fargate(TASK_ROLE);
    let fault_rules = all(&[
        rules(&[
            ("ECS.ListTasks", &[throttle(), drop_conn()]),
            (
                "ECS.DescribeTaskDefinition",
                &[error(500, "ServerException")],
            ),
            // No idempotency token exists for a task definition: its create call is only
            // dropped before it is served (a lost answer would register a spare revision).
            ("ECS.RegisterTaskDefinition", &[drop_conn()]),
        ]),
        back_to_back(
            "ECS.DescribeTasks",
            &[latency(700), throttle(), drop_conn()],
        ),
        create_rules("ECS.RunTask"),
        log_rules(false),
        s3_rules(),
    ]);
    set_faults(&w, &fault_rules);
    let fixture = w.fixture(&format!(
        "name: fargate-faults\nimage: {FARGATE_IMAGE}\nvariables:\n  SAGEMAKER_ACTION: fargate\nscript:\n{}\n  - echo built > result.txt\nsource:\n  README.md: \"app repo\\n\"\nartifacts:\n  paths: [result.txt]\n  reports: {{dotenv: sagemaker.env}}\n",
        numbered_step()
    ));
    let result = w.runner.run(&fixture).expect("job runs");
    assert_all_fired(&w, &fault_rules, &result);
    assert_outcome(&result, JobOutcome::Success);
    assert_numbered_lines(&result);
    let started_by = training_job_name(1, result.id);
    let mut tasks = Vec::new();
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
            .unwrap();
        tasks.extend(listed.task_arns().iter().cloned());
    }
    assert_eq!(tasks.len(), 1, "one task: {tasks:?}");
    assert_eq!(
        result.dotenv_value("SAGEMAKER_ECS_TASK_ARN").as_deref(),
        Some(tasks[0].as_str())
    );
    assert!(
        result
            .uploaded_files()
            .iter()
            .any(|f| f.ends_with("result.txt")),
        "the artifact came back: {:?}",
        result.uploaded_files()
    );
    assert!(
        w.keys(&format!("sagemaker-executor/1/{}/", result.id))
            .is_empty(),
        "cleanup deleted the staged objects through its faults"
    );
}

// ------------------------------------------------------------------------------------------
// the cancel sweep
// ------------------------------------------------------------------------------------------

/// The seed when `FAULTS_SEED` is not set.
const DEFAULT_SEED: u64 = 0x5EED_0007_2026_1201;
/// Random cases on top of the fixed ones.
const RANDOM_CASES: usize = 48;
/// How long a stopped job may take to end, cleanup included.
const CASE_END: Duration = Duration::from_secs(150);
/// How long what a case left may take to settle (stops take the simulator's stop grace).
const SETTLE: Duration = Duration::from_secs(60);
/// The deploy world's model package group.
const SERVE_GROUP: &str = "churn";

/// A small xorshift64* generator: reproducible from its seed, std only.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Train,
    Fargate,
    Register,
    Deploy,
}

const ACTIONS: [Action; 4] = [
    Action::Train,
    Action::Fargate,
    Action::Register,
    Action::Deploy,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// GitLab's cancel: SIGTERM to the script stage.
    Term,
    /// The runner dies: SIGKILL to the executor, then the (restarted) runner's cleanup.
    Kill,
}

impl Signal {
    fn stop(self) -> StopAction {
        match self {
            Signal::Term => StopAction::Cancel,
            Signal::Kill => StopAction::KillExecutor,
        }
    }
}

/// Where the signal lands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Point {
    /// When a job-log line matches.
    Line(String),
    /// While a call of this operation is in flight: a latency fault of `ms` holds it (after
    /// `skip` earlier calls whose names contain the operation's).
    InFlight {
        op: &'static str,
        ms: u64,
        skip: u32,
    },
}

#[derive(Debug, Clone)]
struct Case {
    n: usize,
    action: Action,
    signal: Signal,
    point: Point,
}

/// The points of `action`, `k` choosing among script lines.
fn points(action: Action, k: usize) -> Vec<Point> {
    let line = |s: &str| Point::Line(s.to_owned());
    let in_script = line(&format!("^tick-{:03}$", k % 5 + 1));
    match action {
        Action::Train => vec![
            line(r"^\[\d\d:\d\d\] Staged \d+ files"),
            line(r"Creating training job gl-"),
            in_script,
            Point::InFlight {
                op: "SageMaker.CreateTrainingJob",
                ms: 2500,
                skip: 0,
            },
            Point::InFlight {
                op: "SageMaker.DescribeTrainingJob",
                ms: 1500,
                skip: 1,
            },
        ],
        Action::Fargate => vec![
            line(r"^\[\d\d:\d\d\] Staged \d+ files"),
            line(r"Starting an ECS Fargate task"),
            in_script,
            Point::InFlight {
                op: "ECS.RunTask",
                ms: 2500,
                skip: 0,
            },
            Point::InFlight {
                op: "ECS.DescribeTasks",
                ms: 1500,
                skip: 0,
            },
        ],
        Action::Register => vec![
            line(r"register: the job's script is not executed"),
            Point::InFlight {
                op: "SageMaker.ListModelPackages",
                ms: 2000,
                skip: 0,
            },
            Point::InFlight {
                op: "SageMaker.CreateModelPackage",
                ms: 2500,
                skip: 0,
            },
        ],
        Action::Deploy => vec![
            line(r"Endpoint churn-fx-\d+: Creating"),
            Point::InFlight {
                op: "SageMaker.CreateModel",
                ms: 2000,
                skip: 0,
            },
            // "CreateEndpoint" is a prefix of "CreateEndpointConfig", called first.
            Point::InFlight {
                op: "SageMaker.CreateEndpoint",
                ms: 2500,
                skip: 1,
            },
        ],
    }
}

/// The fixed cases (each action's create call in flight under both signals), then
/// [`RANDOM_CASES`] drawn from `rng`.
fn cases(rng: &mut Rng) -> Vec<Case> {
    let mut out = Vec::new();
    for action in ACTIONS {
        for signal in [Signal::Term, Signal::Kill] {
            let create = points(action, 0)
                .into_iter()
                .find(|p| {
                    matches!(p, Point::InFlight { op, .. } if op.contains(".Create") || op.contains(".RunTask"))
                })
                .unwrap();
            out.push(Case {
                n: out.len(),
                action,
                signal,
                point: create,
            });
        }
    }
    for _ in 0..RANDOM_CASES {
        let action = ACTIONS[rng.below(ACTIONS.len())];
        let signal = if rng.below(2) == 0 {
            Signal::Term
        } else {
            Signal::Kill
        };
        let k = rng.below(5);
        let all = points(action, k);
        let point = all[rng.below(all.len())].clone();
        out.push(Case {
            n: out.len(),
            action,
            signal,
            point,
        });
    }
    out
}

/// A world for `action`'s cases: short stop graces, and what the action needs (a Fargate
/// network, an uploaded model, a serving image and a registered version).
struct SweepWorld {
    w: World,
    action: Action,
    /// The model package a deploy case deploys.
    package: String,
    /// An uploaded model archive (register's upstream).
    model: String,
}

impl SweepWorld {
    fn new(action: Action) -> SweepWorld {
        let w = match action {
            Action::Train | Action::Register => World::new(POLICY),
            Action::Fargate => World::fargate(TASK_ROLE),
            Action::Deploy => World::new(DEPLOY_POLICY),
        };
        // Short stop graces: a stopped run must end quickly or the case fails.
        let text = std::fs::read_to_string(&w.config_path).unwrap();
        let text = text.replace("stop_grace = \"30s\"", "stop_grace = \"10s\"");
        let text = text.replace("stop_grace = \"20s\"", "stop_grace = \"10s\"");
        w.write_config(&text).unwrap();
        let model = w.upload_model("fx");
        let mut package = String::new();
        match action {
            Action::Train | Action::Fargate => {}
            Action::Register => create_group(&w, GROUP),
            Action::Deploy => {
                w.serve_image(SERVE_GROUP);
                package = w.register_serving(SERVE_GROUP, &model, ModelApprovalStatus::Approved);
            }
        }
        SweepWorld {
            w,
            action,
            package,
            model,
        }
    }

    /// The fixture of case `c`.
    fn fixture(&self, c: &Case) -> String {
        let ticks = "  - for i in 1 2 3 4 5; do printf 'tick-%03d\\n' \"$i\"; done\n  - sleep 60";
        match self.action {
            Action::Train => format!(
                "name: sweep-{n}\nimage: {ECR_IMAGE}\nscript:\n{ticks}\nsource:\n  README.md: x\n",
                n = c.n
            ),
            Action::Fargate => format!(
                "name: sweep-{n}\nimage: {FARGATE_IMAGE}\nvariables:\n  SAGEMAKER_ACTION: fargate\nscript:\n{ticks}\nsource:\n  README.md: x\n",
                n = c.n
            ),
            Action::Register => format!(
                "name: sweep-{n}\nvariables:\n  SAGEMAKER_ACTION: register\n  SAGEMAKER_MODEL_PACKAGE_GROUP: {GROUP}\n  SAGEMAKER_MODEL_DATA: {model}\n  SAGEMAKER_TRAINING_IMAGE: {ECR_IMAGE}\nscript: [echo SHOULD-NOT-RUN]\nsource:\n  README.md: x\n",
                n = c.n,
                model = self.model
            ),
            Action::Deploy => format!(
                "name: sweep-{n}\nref: feature/fx\nprotected: false\nproject: {{path: ml/churn}}\nvariables:\n  SAGEMAKER_ACTION: deploy\n  SAGEMAKER_ENDPOINT_NAME: churn-fx-{n}\n  SAGEMAKER_MODEL_PACKAGE: {package}\n  SAGEMAKER_STRATEGY: all-at-once\nscript: [echo SHOULD-NOT-RUN]\nsource:\n  README.md: x\n",
                n = c.n,
                package = self.package
            ),
        }
    }

    /// Runs case `c` and checks what it left; `Err` says what is wrong.
    fn run(&self, c: &Case) -> Result<String, String> {
        let w = &self.w;
        clear_faults(w);
        let seen = w.sim.calls_json().map_err(|e| e.to_string())?.len();
        if let Point::InFlight { op, ms, skip } = &c.point {
            w.sim
                .post_faults(&json!({"rules": [{"match": op, "kind": "latency", "latency_ms": ms, "skip": skip}]}))
                .map_err(|e| e.to_string())?;
        }
        if self.action == Action::Deploy {
            // Long enough Creating for the line trigger to land while it waits.
            w.sim
                .post_outcomes(&json!({"endpoint": [{"name_contains": format!("churn-fx-{}", c.n), "create_seconds": 4}]}))
                .map_err(|e| e.to_string())?;
        }
        let fixture = w.fixture(&self.fixture(c));
        let started = Instant::now();
        let result = match &c.point {
            Point::Line(pattern) => {
                let options = JobOptions::default()
                    .on_line("build_script", pattern, c.signal.stop())
                    .map_err(|e| e.to_string())?;
                let running = w
                    .runner
                    .start_with(&fixture, options)
                    .map_err(|e| e.to_string())?;
                running.finish_within(CASE_END)
            }
            Point::InFlight { op, .. } => {
                let running = w.runner.start(&fixture).map_err(|e| e.to_string())?;
                wait_for_faulted_call(w, seen, op)?;
                match c.signal {
                    Signal::Term => running.cancel(),
                    Signal::Kill => running.kill_executor(),
                }
                running.finish_within(CASE_END)
            }
        }
        .map_err(|e| format!("the job did not end: {e}"))?;
        let took = started.elapsed();
        clear_faults(w);
        self.check(c, &result)?;
        if std::env::var_os("FAULTS_VERBOSE").is_some() {
            println!("case {} runner log:\n{}", c.n, result.runner_log);
        }
        Ok(format!(
            "case {:>2} {:<8} {:<4} {:<60} {:>5.1}s  {}",
            c.n,
            format!("{:?}", c.action),
            format!("{:?}", c.signal),
            format!("{:?}", c.point),
            took.as_secs_f64(),
            result.id
        ))
    }

    /// What a case must leave: the outcome the runner reports, cleanup run, and nothing
    /// running or staged.
    fn check(&self, c: &Case, result: &JobResult) -> Result<(), String> {
        let w = &self.w;
        let log = || {
            format!(
                "{}\n--- runner log ---\n{}",
                result.plain_log(),
                result.runner_log
            )
        };
        let expected = match c.signal {
            Signal::Term => matches!(result.outcome, JobOutcome::Canceled),
            Signal::Kill => matches!(result.outcome, JobOutcome::SystemFailure { .. }),
        };
        if !expected {
            return Err(format!("outcome {:?}\n{}", result.outcome, log()));
        }
        if !result.stage_names().contains(&"cleanup") {
            return Err(format!("cleanup did not run: {:?}", result.stage_names()));
        }
        if c.signal == Signal::Term
            && let Some(build) = result.stage("build_script")
            && build.was_sent("SIGKILL")
        {
            return Err(format!(
                "the executor outlived the runner's grace after SIGTERM\n{}",
                log()
            ));
        }
        let id = result.id;
        let name = training_job_name(1, id);
        settle(&format!("nothing left by case {}", c.n), || {
            let procs = w.container_processes();
            if !procs.is_empty() {
                return Some(format!("container processes left: {procs:?}"));
            }
            match self.action {
                Action::Train => training_left(w, &name),
                Action::Fargate => tasks_left(w, &name),
                Action::Register => None,
                Action::Deploy => endpoint_left(w, &format!("churn-fx-{}", c.n)),
            }
        })
        .map_err(|e| format!("{e}\n{}", log()))?;
        let staged = w.keys(&format!("sagemaker-executor/1/{id}/"));
        if !staged.is_empty() {
            return Err(format!("staged objects left: {staged:?}\n{}", log()));
        }
        if self.action == Action::Register {
            let own = versions_of_job(w, id);
            if own > 1 {
                return Err(format!("{own} versions registered by job {id}"));
            }
        }
        match &c.point {
            Point::InFlight { op, .. } if is_create(op) => self
                .check_landed(c, result, &name)
                .map_err(|e| format!("{e}\n{}", log())),
            Point::InFlight { .. } | Point::Line(_) => Ok(()),
        }
    }

    /// A create call the signal caught in flight still landed: exactly one resource exists,
    /// and what runs was stopped (by the executor after SIGTERM, by cleanup, which found it
    /// by name, after SIGKILL).
    fn check_landed(&self, c: &Case, result: &JobResult, name: &str) -> Result<(), String> {
        let w = &self.w;
        let said = |needle: &str| {
            if c.signal == Signal::Kill && !result.runner_log.contains(needle) {
                Err(format!("cleanup did not say {needle:?}"))
            } else {
                Ok(())
            }
        };
        match self.action {
            Action::Train => {
                let status = w.training_status(name);
                if status != "Stopped" {
                    return Err(format!("training job {name} is {status}, not Stopped"));
                }
                said(&format!("cleanup: stopped training job {name}"))
            }
            Action::Fargate => {
                let mut arns = Vec::new();
                for status in [DesiredStatus::Running, DesiredStatus::Stopped] {
                    let listed =
                        w.rt.block_on(
                            w.ecs
                                .list_tasks()
                                .cluster(CLUSTER)
                                .started_by(name)
                                .desired_status(status)
                                .send(),
                        )
                        .unwrap();
                    arns.extend(listed.task_arns().iter().cloned());
                }
                if arns.len() != 1 {
                    return Err(format!("{} tasks started as {name}: {arns:?}", arns.len()));
                }
                said("cleanup: stopped ECS task arn:aws:ecs:")
            }
            Action::Register => settle("the version to land", || {
                let own = versions_of_job(w, result.id);
                (own != 1).then(|| format!("{own} versions of job {}", result.id))
            }),
            Action::Deploy => said(&format!("cleanup: stopped model churn-fx-{}", c.n)),
        }
    }
}

/// Whether `op` creates what a case must find landed.
fn is_create(op: &str) -> bool {
    [
        "SageMaker.CreateTrainingJob",
        "ECS.RunTask",
        "SageMaker.CreateModelPackage",
        "SageMaker.CreateModel",
    ]
    .contains(&op)
}

/// Waits until the call log (after its first `seen` entries) shows `op`, bounded.
fn wait_for_faulted_call(w: &World, seen: usize, op: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let calls = w.sim.calls_json().map_err(|e| e.to_string())?;
        if calls
            .iter()
            .skip(seen)
            .any(|c| c["op"].as_str() == Some(op) && c["fault"].as_str() == Some("latency"))
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("no {op} call within 90s"));
        }
        // The simulator pushes nothing; a short poll against a deadline is the wait.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `left` (what is still there, or `None`) until it is `None`, at most [`SETTLE`].
fn settle(what: &str, mut left: impl FnMut() -> Option<String>) -> Result<(), String> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let Some(why) = left() else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}: {why}"));
        }
        // Stops take the simulator's stop grace; nothing pushes their end to a test.
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A training job named `name` that is still InProgress.
fn training_left(w: &World, name: &str) -> Option<String> {
    let d = w.rt.block_on(
        w.sagemaker
            .describe_training_job()
            .training_job_name(name)
            .send(),
    );
    match d {
        // Never created.
        Err(_) => None,
        Ok(d) => {
            let status = d.training_job_status().map(|s| s.as_str().to_owned());
            (status.as_deref() == Some("InProgress"))
                .then(|| format!("training job {name} is {status:?}"))
        }
    }
}

/// Tasks started as `name` that are not STOPPED, or still meant to run.
fn tasks_left(w: &World, name: &str) -> Option<String> {
    let mut left = Vec::new();
    for status in [DesiredStatus::Running, DesiredStatus::Stopped] {
        let listed =
            w.rt.block_on(
                w.ecs
                    .list_tasks()
                    .cluster(CLUSTER)
                    .started_by(name)
                    .desired_status(status.clone())
                    .send(),
            )
            .unwrap();
        for arn in listed.task_arns() {
            let d =
                w.rt.block_on(w.ecs.describe_tasks().cluster(CLUSTER).tasks(arn).send())
                    .unwrap();
            for t in d.tasks() {
                if t.last_status() != Some("STOPPED") || status == DesiredStatus::Running {
                    left.push(format!("{arn}: {:?} (desired {status:?})", t.last_status()));
                }
            }
        }
    }
    (!left.is_empty()).then(|| format!("tasks left: {left:?}"))
}

/// A first deployment's endpoint, config or model that is still there.
fn endpoint_left(w: &World, endpoint: &str) -> Option<String> {
    if let Ok(d) = w.rt.block_on(
        w.sagemaker
            .describe_endpoint()
            .endpoint_name(endpoint)
            .send(),
    ) {
        return Some(format!("endpoint {endpoint} is {:?}", d.endpoint_status()));
    }
    let configs =
        w.rt.block_on(
            w.sagemaker
                .list_endpoint_configs()
                .name_contains(endpoint)
                .send(),
        )
        .unwrap();
    let models =
        w.rt.block_on(w.sagemaker.list_models().name_contains(endpoint).send())
            .unwrap();
    // `churn-fx-1` is a prefix of `churn-fx-12-...`: only this case's names count.
    let own = |n: &str| n == endpoint || n.starts_with(&format!("{endpoint}-"));
    let configs: Vec<_> = configs
        .endpoint_configs()
        .iter()
        .filter_map(|c| c.endpoint_config_name())
        .filter(|n| own(n))
        .collect();
    let models: Vec<_> = models
        .models()
        .iter()
        .filter_map(|m| m.model_name())
        .filter(|n| own(n))
        .collect();
    (!configs.is_empty() || !models.is_empty())
        .then(|| format!("configs {configs:?}, models {models:?} left"))
}

/// How many versions of [`GROUP`] job `id` registered.
fn versions_of_job(w: &World, id: u64) -> usize {
    let listed =
        w.rt.block_on(
            w.sagemaker
                .list_model_packages()
                .model_package_group_name(GROUP)
                .send(),
        )
        .unwrap();
    listed
        .model_package_summary_list()
        .iter()
        .filter_map(|s| s.model_package_arn())
        .filter(|arn| {
            let d =
                w.rt.block_on(
                    w.sagemaker
                        .describe_model_package()
                        .model_package_name(*arn)
                        .send(),
                )
                .unwrap();
            d.customer_metadata_properties()
                .and_then(|m| m.get("gitlab:job-id"))
                .is_some_and(|v| v == &id.to_string())
        })
        .count()
}

/// Creates model package group `name`.
fn create_group(w: &World, name: &str) {
    w.rt.block_on(
        w.sagemaker
            .create_model_package_group()
            .model_package_group_name(name)
            .send(),
    )
    .unwrap();
}

/// Deploy (and the others) allowed; `churn-*` endpoints.
const DEPLOY_POLICY: &str = r#"[policy]
allowed_actions = ["deploy", "undeploy"]
protected_ref_actions = []

[policy.deploy]
endpoints = ["churn-*"]
stable_endpoints = ["*-stable"]
instance_types = ["ml.m5.*"]
max_instance_count = 2
"#;

#[test]
fn a_seeded_sweep_of_cancel_points_leaves_nothing_running_or_staged() {
    let seed = std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| {
            s.strip_prefix("0x")
                .map_or_else(|| s.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
        })
        .unwrap_or(DEFAULT_SEED);
    println!("cancel sweep seed: {seed:#x} (FAULTS_SEED={seed:#x} replays it)");
    let mut rng = Rng(seed.max(1));
    let mut all = cases(&mut rng);
    assert!(all.len() >= 50, "{} cases", all.len());
    // `FAULTS_CASES=3,17` replays only those cases of the seed's sweep.
    if let Ok(only) = std::env::var("FAULTS_CASES") {
        let only: Vec<usize> = only
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect();
        all.retain(|c| only.contains(&c.n));
    }
    let started = Instant::now();
    let outcomes: Vec<(Action, Vec<Result<String, String>>)> = std::thread::scope(|s| {
        let handles: Vec<_> = ACTIONS
            .iter()
            .map(|&action| {
                let mine: Vec<Case> = all.iter().filter(|c| c.action == action).cloned().collect();
                s.spawn(move || {
                    let world = SweepWorld::new(action);
                    let results = mine
                        .iter()
                        .map(|c| world.run(c).map_err(|e| format!("case {} {c:?}: {e}", c.n)))
                        .collect();
                    (action, results)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut failures = Vec::new();
    for (action, results) in &outcomes {
        println!("{action:?}: {} cases", results.len());
        for r in results {
            match r {
                Ok(line) => println!("  ok  {line}"),
                Err(e) => failures.push(e.clone()),
            }
        }
    }
    println!(
        "{} cases in {:.0}s (seed {seed:#x})",
        all.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed (seed {seed:#x}):\n{}",
        failures.len(),
        all.len(),
        failures.join("\n\n======\n\n")
    );
}

/// Appends `[aws] max_attempts = 3` to the world's config: three tries per SDK call.
fn three_tries(w: &World) {
    let text = std::fs::read_to_string(&w.config_path).unwrap();
    w.write_config(&format!("{text}\n[aws]\nmax_attempts = 3\n"))
        .unwrap();
}

#[test]
fn a_create_that_landed_though_every_try_failed_is_stopped_by_cleanup() {
    for fargate in [false, true] {
        let w = if fargate {
            World::fargate(TASK_ROLE)
        } else {
            World::new(POLICY)
        };
        three_tries(&w);
        let op = if fargate {
            "ECS.RunTask"
        } else {
            "SageMaker.CreateTrainingJob"
        };
        // The first try is served and its answer lost; the other two fail with a 500: the SDK
        // gives up, though the run exists.
        let rules = back_to_back(
            op,
            &[
                drop_response(),
                error(500, "InternalFailure"),
                error(500, "InternalFailure"),
            ],
        );
        set_faults(&w, &rules);
        let yaml = if fargate {
            format!(
                "name: lost\nimage: {FARGATE_IMAGE}\nvariables:\n  SAGEMAKER_ACTION: fargate\nscript: [sleep 60]\nsource:\n  README.md: x\n"
            )
        } else {
            format!("name: lost\nimage: {ECR_IMAGE}\nscript: [sleep 60]\nsource:\n  README.md: x\n")
        };
        let result = w.runner.run(&w.fixture(&yaml)).expect("job runs");
        assert_all_fired(&w, &rules, &result);
        assert!(
            matches!(result.outcome, JobOutcome::SystemFailure { .. }),
            "{:?}\n{}",
            result.outcome,
            result.plain_log()
        );
        let name = training_job_name(1, result.id);
        let stopped = if fargate {
            "cleanup: stopped ECS task arn:aws:ecs:".to_owned()
        } else {
            format!("cleanup: stopped training job {name}")
        };
        assert!(
            result.runner_log.contains(&stopped),
            "{stopped:?} missing: {}",
            result.runner_log
        );
        settle("the run to stop", || {
            let procs = w.container_processes();
            if !procs.is_empty() {
                return Some(format!("container processes left: {procs:?}"));
            }
            if fargate {
                tasks_left(&w, &name)
            } else {
                training_left(&w, &name)
            }
        })
        .unwrap();
    }
}
