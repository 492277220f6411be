//! Shared set-up for end-to-end tests against the AWS simulator: a temp dir holding the builds
//! root (hidden from simulated containers, so a workspace can only travel through S3), an
//! executor config, a runner emulator wired to the built binary, and SDK clients pointed at
//! the simulator for assertions.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use e2e::runner::{JobFixture, Runner, RunnerConfig};
use e2e::sim::{SimOptions, Simulator};
use tempfile::TempDir;

pub const ECR_IMAGE: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/train:1";
pub const BUCKET: &str = "ci-staging";

/// One test's world.
pub struct World {
    pub dir: TempDir,
    pub sim: Simulator,
    pub runner: Runner,
    pub config_path: PathBuf,
    pub builds_root: PathBuf,
    pub rt: tokio::runtime::Runtime,
    pub s3: aws_sdk_s3::Client,
    pub sagemaker: aws_sdk_sagemaker::Client,
    pub ecs: aws_sdk_ecs::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
}

/// Executor config text for a world rooted at `root`, with `extra` appended.
pub fn executor_config(root: &Path, extra: &str) -> String {
    format!(
        r#"region = "us-east-1"
[paths]
builds_root = "{root}/builds"
cache_root = "{root}/cache"
[staging]
bucket = "{BUCKET}"
[train]
role_arn = "arn:aws:iam::123456789012:role/SageMakerCI"
describe_interval = "2s"
log_interval = "1s"
stop_grace = "30s"
{extra}
"#,
        root = root.display()
    )
}

/// The default policy section tests use.
pub const POLICY: &str = r#"[policy]
allowed_actions = ["train", "fargate", "register", "ecs-deploy"]
allow_after_script = true
[policy.train]
instance_types = ["ml.m5.*"]
max_instance_count = 2
"#;

impl World {
    /// Starts a simulator and writes the executor config (`extra` is appended to it).
    pub fn new(extra: &str) -> World {
        let dir = tempfile::tempdir().expect("temp dir");
        let builds_root = dir.path().join("builds");
        std::fs::create_dir_all(&builds_root).expect("builds root");
        let sim = Simulator::start_with(SimOptions {
            hide: vec![builds_root.clone()],
            stop_grace: Duration::from_secs(3),
            ..SimOptions::default()
        })
        .expect("simulator starts (run tests/sim/setup.sh first)");
        let config_path = dir.path().join("executor.toml");
        std::fs::write(&config_path, executor_config(dir.path(), extra)).expect("config written");
        let executor = e2e::paths::executor_binary().expect("executor binary built");
        let config_arg = config_path.display().to_string();
        let mut rc =
            RunnerConfig::for_driver(&executor, &["--config", &config_arg]).with_test_timeouts();
        rc.graceful_kill_timeout = Duration::from_secs(60);
        for (k, v) in sim.aws_env() {
            rc = rc.with_env(k, v);
        }
        let runner = Runner::new(rc).expect("runner");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let sdk = rt.block_on(
            aws_config::defaults(BehaviorVersion::latest())
                .endpoint_url(sim.endpoint())
                .region(aws_config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_s3::config::Credentials::new(
                    "testing", "testing", None, None, "tests",
                ))
                .load(),
        );
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build(),
        );
        let world = World {
            sagemaker: aws_sdk_sagemaker::Client::new(&sdk),
            ecs: aws_sdk_ecs::Client::new(&sdk),
            logs: aws_sdk_cloudwatchlogs::Client::new(&sdk),
            s3,
            dir,
            sim,
            runner,
            config_path,
            builds_root,
            rt,
        };
        world
            .rt
            .block_on(world.s3.create_bucket().bucket(BUCKET).send())
            .expect("staging bucket");
        world
    }

    /// Parses a fixture written inline.
    pub fn fixture(&self, yaml: &str) -> JobFixture {
        JobFixture::from_yaml(yaml, self.dir.path()).expect("fixture parses")
    }

    /// Every AWS operation the simulator received, in order.
    pub fn calls(&self) -> Vec<String> {
        self.sim.calls().expect("calls")
    }

    /// How many calls of `op` were made.
    pub fn count(&self, op: &str) -> usize {
        self.calls().iter().filter(|c| c.as_str() == op).count()
    }

    /// Keys under `prefix` in the staging bucket.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self
            .rt
            .block_on(
                self.s3
                    .list_objects_v2()
                    .bucket(BUCKET)
                    .prefix(prefix)
                    .send(),
            )
            .expect("list");
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }

    /// The status of a training job.
    pub fn training_status(&self, name: &str) -> String {
        let d = self
            .rt
            .block_on(
                self.sagemaker
                    .describe_training_job()
                    .training_job_name(name)
                    .send(),
            )
            .expect("describe");
        d.training_job_status()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default()
    }

    /// Waits until `check` holds, or fails after `timeout` with `what`.
    pub fn eventually(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The deterministic training job name of a job's main script stage.
pub fn training_job_name(project_id: u64, job_id: u64) -> String {
    format!("gl-{project_id}-{job_id}")
}

/// The index of the line of `log` that equals `needle`; fails the test, showing the log, when
/// there is none.
pub fn line_index(log: &str, needle: &str) -> usize {
    log.lines()
        .position(|l| l == needle)
        .unwrap_or_else(|| panic!("{needle:?} missing in:\n{log}"))
}
