//! One end-to-end test's world against the AWS simulator: an [`ExecutorSetup`] whose builds
//! root the simulator hides from its containers (so a workspace can only travel through S3),
//! a runner emulator calling the binary with the simulator's AWS settings, the staging bucket,
//! and SDK clients pointed at the simulator for assertions.

use std::ops::Deref;
use std::time::Duration;

use aws_config::BehaviorVersion;

use super::setup::{BUCKET, ExecutorSetup, POLICY, REGION};
use crate::runner::{JobFixture, JobResult, Runner, StopAction};
use crate::sim::{SimOptions, Simulator, http_request_with_headers};

/// How long a job stopped by a trigger may take to end.
const STOPPED_JOB_WAIT: Duration = Duration::from_secs(120);

/// One test's world. It dereferences to its [`ExecutorSetup`] (`w.dir`, `w.config_path`,
/// `w.builds_root`, `w.config_text(..)`, `w.write_config(..)`, ...).
///
/// Fields drop in order: the runner and the simulator (which stops its containers) go before
/// the temp dir they use.
pub struct World {
    /// The runner emulator calling the binary with [`Simulator::aws_env`].
    pub runner: Runner,
    /// The simulator; its containers do not see the builds root.
    pub sim: Simulator,
    /// The runtime the SDK clients run on.
    pub rt: tokio::runtime::Runtime,
    /// S3 (path-style), for the staging bucket.
    pub s3: aws_sdk_s3::Client,
    /// SageMaker.
    pub sagemaker: aws_sdk_sagemaker::Client,
    /// ECS.
    pub ecs: aws_sdk_ecs::Client,
    /// CloudWatch Logs.
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// IAM (roles, OIDC providers an admin would create).
    pub iam: aws_sdk_iam::Client,
    /// The executor installation: temp dir, roots, config file.
    pub setup: ExecutorSetup,
}

impl Deref for World {
    type Target = ExecutorSetup;

    fn deref(&self) -> &ExecutorSetup {
        &self.setup
    }
}

impl World {
    /// Starts a simulator, writes the executor config (the template of
    /// [`ExecutorSetup::config_text`] with `extra` as its tail: tests pass [`POLICY`],
    /// possibly extended) and creates the staging bucket.
    ///
    /// [`POLICY`]: super::POLICY
    pub fn new(extra: &str) -> World {
        let setup = ExecutorSetup::unconfigured()
            .expect("executor setup (run `cargo build --workspace --bins` first)");
        setup
            .write_config(&setup.config_text(extra))
            .expect("config written");
        let sim = Simulator::start_with(SimOptions {
            hide: vec![setup.builds_root.clone()],
            stop_grace: Duration::from_secs(3),
            ..SimOptions::default()
        })
        .expect("simulator starts (run tests/sim/setup.sh first)");
        let runner = Runner::new(setup.aws_runner_config(sim.aws_env())).expect("runner");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let sdk = rt.block_on(
            aws_config::defaults(BehaviorVersion::latest())
                .endpoint_url(sim.endpoint())
                .region(aws_config::Region::new(REGION))
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
            iam: aws_sdk_iam::Client::new(&sdk),
            s3,
            runner,
            sim,
            rt,
            setup,
        };
        world
            .rt
            .block_on(world.s3.create_bucket().bucket(BUCKET).send())
            .expect("staging bucket");
        world
    }

    /// Parses a fixture written inline, with paths relative to the temp dir.
    pub fn fixture(&self, yaml: &str) -> JobFixture {
        JobFixture::from_yaml(yaml, self.root()).expect("fixture parses")
    }

    /// Runs `fixture` with a trigger that applies `action` when a line of `stage` matches
    /// `pattern`, and waits for the job to end (see [`Runner::run_stopped_at`]).
    pub fn run_stopped_at(
        &self,
        fixture: &JobFixture,
        stage: &str,
        pattern: &str,
        action: StopAction,
    ) -> JobResult {
        self.runner
            .run_stopped_at(fixture, stage, pattern, action, STOPPED_JOB_WAIT)
            .expect("job runs and ends")
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

    /// The local processes the simulator still runs for containers.
    pub fn container_processes(&self) -> Vec<serde_json::Value> {
        let procs = self.sim.processes().expect("processes");
        procs["processes"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("/_sim/processes: no \"processes\" array in {procs}"))
    }

    /// Waits until `check` holds, or fails after `timeout` with `what`.
    #[track_caller]
    pub fn eventually(&self, what: &str, timeout: Duration, check: impl FnMut() -> bool) {
        super::eventually(what, timeout, check);
    }
}

/// The Fargate cluster of [`World::fargate`].
pub const CLUSTER: &str = "ci";
/// The awslogs group of [`World::fargate`].
pub const LOG_GROUP: &str = "/sagemaker-executor/fargate";
/// The `[fargate]` line that gives tasks the default task role.
pub const TASK_ROLE: &str = "task_role_arn = \"arn:aws:iam::123456789012:role/ci-task-default\"";

impl World {
    /// A world with a `[fargate]` section wired to the simulator's default network, the helper
    /// command pointing at the binary under test, `task_role` as an extra `[fargate]` line, and
    /// the cluster and log group created.
    pub fn fargate(task_role: &str) -> World {
        let w = World::new(POLICY);
        let net = w.sim.default_network().expect("default network");
        let helper = crate::paths::executor_binary().expect("executor binary built");
        let list = |v: &[String]| {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let fargate = format!(
            r#"{POLICY}
[fargate]
cluster = "{CLUSTER}"
subnets = [{subnets}]
security_groups = [{groups}]
execution_role_arn = "arn:aws:iam::123456789012:role/EcsExecution"
{task_role}
log_group = "{LOG_GROUP}"
helper_image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/sagemaker-executor:test"
helper_command = [{helper:?}]
stop_grace = "20s"
cpu = 256
memory = 512
"#,
            subnets = list(&net.subnets),
            groups = list(&net.security_groups),
            helper = helper.display().to_string(),
        );
        w.write_config(&w.config_text(&fargate))
            .expect("config rewritten");
        w.rt.block_on(w.ecs.create_cluster().cluster_name(CLUSTER).send())
            .expect("cluster");
        w.rt.block_on(w.logs.create_log_group().log_group_name(LOG_GROUP).send())
            .expect("log group");
        w
    }
}

/// The push paths' AWS set-up, as a runner admin does it with the AWS CLI.
impl World {
    /// One AWS JSON-protocol call to the simulator (`target` e.g. `AmazonSQS.CreateQueue`), as the
    /// AWS CLI would send it; the simulator routes by the signing scope and does not check the
    /// signature.
    pub fn aws_json(
        &self,
        service: &str,
        target: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let (host, port) = self.sim.address();
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=00"
        );
        let version = if service == "sqs" { "1.0" } else { "1.1" };
        let content_type = format!("application/x-amz-json-{version}");
        let (status, out) = http_request_with_headers(
            host,
            port,
            "POST",
            "/",
            &[
                ("Content-Type", content_type.as_str()),
                ("X-Amz-Target", target),
                ("Authorization", auth.as_str()),
            ],
            body.to_string().as_bytes(),
        )
        .expect("the simulator answers");
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(
            (200..300).contains(&status),
            "{target}: HTTP {status}: {text}"
        );
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    /// What a runner admin sets up for a host: a queue, and a rule delivering training job, endpoint,
    /// ECS task and ECS deployment state changes to it (with the queue policy that lets EventBridge send). Returns the queue URL.
    pub fn event_queue(&self) -> String {
        let url = self.aws_json(
            "sqs",
            "AmazonSQS.CreateQueue",
            serde_json::json!({"QueueName": "runner-1-events"}),
        )["QueueUrl"]
            .as_str()
            .expect("the simulator answers with it")
            .to_owned();
        let arn = self.aws_json(
            "sqs",
            "AmazonSQS.GetQueueAttributes",
            serde_json::json!({"QueueUrl": url, "AttributeNames": ["QueueArn"]}),
        )["Attributes"]["QueueArn"]
            .as_str()
            .expect("the simulator answers with it")
            .to_owned();
        let pattern = serde_json::json!({
            "source": ["aws.sagemaker", "aws.ecs"],
            "detail-type": [
                "SageMaker Training Job State Change",
                "ECS Task State Change",
                "SageMaker Endpoint State Change",
                "ECS Deployment State Change"
            ]
        });
        let rule = self.aws_json(
            "events",
            "AWSEvents.PutRule",
            serde_json::json!({"Name": "runner-1", "EventPattern": pattern.to_string()}),
        )["RuleArn"]
            .as_str()
            .expect("the simulator answers with it")
            .to_owned();
        self.aws_json(
            "events",
            "AWSEvents.PutTargets",
            serde_json::json!({"Rule": "runner-1", "Targets": [{"Id": "q", "Arn": arn}]}),
        );
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
                           "Action": "sqs:SendMessage", "Resource": arn,
                           "Condition": {"ArnEquals": {"aws:SourceArn": rule}}}]
        });
        self.aws_json(
            "sqs",
            "AmazonSQS.SetQueueAttributes",
            serde_json::json!({"QueueUrl": url, "Attributes": {"Policy": policy.to_string()}}),
        );
        url
    }
}
