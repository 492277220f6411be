//! The hostile-input corpus: every job-controlled input (spec file, variables, names, tags,
//! images, buckets, roles, channels, actions, register and ECS settings, policy escapes per
//! allow-list, repository symlinks aimed at every file the executor reads or writes, and
//! returned workspace archives built by the "container") run as real jobs through the runner
//! emulator and the executor against one simulator.
//!
//! Each case is a row of [`corpus`]: a repository layout, variables, image, ref protection and
//! optionally a policy of its own, with the expected outcome and error-line excerpt. For every
//! case the runner of [`run_case`] checks:
//! - the outcome (a refusal is a build failure with exit code 1),
//! - the one `ERROR:` line naming the setting and the rule, bounded in length, with no long
//!   value echoed whole and no control characters,
//! - nothing created in AWS for a refusal (the simulator's call log before and after),
//! - nothing written outside the job's dirs (a sentinel dir of host files stays byte for byte
//!   the same, with nothing new next to them, and the temp dir gains no new top-level entry),
//! - no panic and no host secret anywhere in the job log.
//!
//! Everything runs in one [`World`] (one simulator), case after case, so the file takes well
//! under two minutes. The cases that return archives run real training jobs in the simulator;
//! a million-entry archive is tested against the extractor directly
//! (`stages/tests/workspace_extract.rs`), since the config has no entry cap to lower.

#![allow(
    clippy::unwrap_used,
    reason = "an integration test reports failure by panicking"
)]

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use e2e::runner::{Hooks, Image, JobFixture, JobOutcome, JobResult, Source, Variable};
use support::{ECR_IMAGE, POLICY, World};

/// What a runner-host file holds; it must never show up in a job log.
const HOST_SECRET: &str = "runner-host-secret-7f3a9c";

/// The world's policy: [`POLICY`] (which ends in `[policy.train]`) with allow-lists to escape
/// from, a Fargate environment (refused jobs never reach it), and ECS deployment limits.
const WORLD_POLICY: &str = r#"buckets = ["ci-staging", "ml-data-*"]
roles = ["arn:aws:iam::123456789012:role/SageMaker*"]
max_runtime = "6h"
max_keep_alive = "30m"

[policy.fargate]
images = ["docker.io/library/python:*", "*.dkr.ecr.*.amazonaws.com/**"]
task_roles = ["arn:aws:iam::123456789012:role/task-*"]
max_cpu = 2048
allow_spot = false

[policy.ecs_deploy]
clusters = ["ci"]
services = ["web-*"]
images = ["*.dkr.ecr.*.amazonaws.com/**"]

[fargate]
cluster = "ci"
subnets = ["subnet-0123456789abcdef0"]
security_groups = ["sg-0123456789abcdef0"]
execution_role_arn = "arn:aws:iam::123456789012:role/exec"
helper_image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/helper:1"
"#;

/// A longest error line: setting (120) + reason (600) + separators and the `ERROR: ` prefix.
const MAX_ERROR_LINE: usize = 760;
/// A value this long must never appear whole in a log; its first [`ECHO_PROBE`] characters
/// must not appear at all.
const LONG: usize = 200;
const ECHO_PROBE: usize = 150;

/// Where a repository symlink points.
#[derive(Clone)]
enum Target {
    /// A path inside the sentinel dir of host files (absolute).
    Host(&'static str),
    /// The text as given.
    Literal(String),
}

/// What the case expects.
#[derive(Clone)]
enum Expect {
    /// Build failure with exit code 1, exactly one `ERROR:` line containing the text, and no
    /// AWS call that creates or uploads anything.
    Refused(String),
    /// Build failure with exit code 1 and an `ERROR:` line containing the text; the job ran
    /// remotely first.
    FailsAfterRun(String),
    /// Success, with a line containing each text (a `WARNING: not restored: ...` line for a
    /// neutralised archive member, say).
    Succeeds(Vec<String>),
}

/// One row of the corpus.
#[derive(Clone)]
struct Case {
    category: &'static str,
    name: String,
    vars: Vec<(String, String)>,
    image: Option<String>,
    protected: bool,
    files: Vec<(String, Vec<u8>)>,
    links: Vec<(String, Target)>,
    script: Vec<String>,
    after_script: bool,
    hooks: bool,
    /// The config's tail for this case instead of [`POLICY`] and [`WORLD_POLICY`].
    policy: Option<String>,
    /// `[staging] max_return_bytes` for this case.
    max_return_bytes: Option<u64>,
    expect: Expect,
}

fn case(category: &'static str, name: &str) -> Case {
    Case {
        category,
        name: name.to_owned(),
        vars: Vec::new(),
        image: Some(ECR_IMAGE.to_owned()),
        protected: false,
        files: Vec::new(),
        links: Vec::new(),
        script: vec!["echo SHOULD-NOT-RUN".to_owned()],
        after_script: false,
        hooks: false,
        policy: None,
        max_return_bytes: None,
        expect: Expect::Succeeds(Vec::new()),
    }
}

impl Case {
    fn var(mut self, key: &str, value: impl Into<String>) -> Self {
        self.vars.push((key.to_owned(), value.into()));
        self
    }
    fn image(mut self, image: Option<&str>) -> Self {
        self.image = image.map(str::to_owned);
        self
    }
    fn protected(mut self) -> Self {
        self.protected = true;
        self
    }
    fn file(mut self, path: &str, content: impl Into<Vec<u8>>) -> Self {
        self.files.push((path.to_owned(), content.into()));
        self
    }
    fn link(mut self, path: &str, target: Target) -> Self {
        self.links.push((path.to_owned(), target));
        self
    }
    /// `spec.yaml` with `text`, named by `SAGEMAKER_SPEC`.
    fn spec(self, text: impl Into<Vec<u8>>) -> Self {
        self.file("spec.yaml", text)
            .var("SAGEMAKER_SPEC", "spec.yaml")
    }
    fn script(mut self, lines: &[&str]) -> Self {
        self.script = lines.iter().map(|l| (*l).to_owned()).collect();
        self
    }
    /// The config's tail: [`POLICY`] with `from` replaced by `to`, then `train_keys` (which
    /// land in `[policy.train]`) and [`WORLD_POLICY`].
    fn policy(mut self, from: &str, to: &str, train_keys: &str) -> Self {
        assert!(from.is_empty() || POLICY.contains(from), "{from}");
        let policy = if from.is_empty() {
            POLICY.to_owned()
        } else {
            POLICY.replace(from, to)
        };
        self.policy = Some(format!("{policy}{train_keys}{WORLD_POLICY}"));
        self
    }
    fn refused(mut self, needle: &str) -> Self {
        self.expect = Expect::Refused(needle.to_owned());
        self
    }
    fn fails_after_run(mut self, needle: &str) -> Self {
        self.expect = Expect::FailsAfterRun(needle.to_owned());
        self
    }
    fn succeeds(mut self, needles: &[&str]) -> Self {
        self.expect = Expect::Succeeds(needles.iter().map(|n| (*n).to_owned()).collect());
        self
    }
}

fn long(c: char) -> String {
    std::iter::repeat_n(c, 10_000).collect()
}

/// Spec files: paths, links, size, depth, aliases, schema, excerpts, encodings.
fn spec_cases() -> Vec<Case> {
    let c = |name| case("spec file", name);
    let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\ntrain: [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n";
    vec![
        c("symlinked to a host file (absolute)")
            .link("ci/spec.yaml", Target::Host("secret"))
            .var("SAGEMAKER_SPEC", "ci/spec.yaml")
            .refused("SAGEMAKER_SPEC: ci/spec.yaml: refused: it leads outside the project directory"),
        c("relative link out of the checkout")
            .link(
                "ci/spec.yaml",
                Target::Literal("../../../../../../host/secret".into()),
            )
            .var("SAGEMAKER_SPEC", "ci/spec.yaml")
            .refused("refused: it leads outside the project directory"),
        c("through a symlinked directory")
            .link("ci/dir", Target::Literal("/etc".into()))
            .var("SAGEMAKER_SPEC", "ci/dir/passwd")
            .refused("SAGEMAKER_SPEC: ci/dir/passwd: refused"),
        c("through a directory symlinked to the host dir")
            .link("conf", Target::Host(""))
            .var("SAGEMAKER_SPEC", "conf/secret")
            .refused("SAGEMAKER_SPEC: conf/secret: refused"),
        c("a link loop")
            .link("a.yaml", Target::Literal("b.yaml".into()))
            .link("b.yaml", Target::Literal("a.yaml".into()))
            .var("SAGEMAKER_SPEC", "a.yaml")
            .refused("SAGEMAKER_SPEC: a.yaml: refused"),
        c("dot-dot path")
            .var("SAGEMAKER_SPEC", "../../../../etc/passwd")
            .refused("must be a relative path inside the project directory"),
        c("absolute path")
            .var("SAGEMAKER_SPEC", "/etc/passwd")
            .refused("must be a relative path inside the project directory"),
        c("a long path is quoted as an excerpt")
            .var("SAGEMAKER_SPEC", format!("{}/spec.yaml", long('p')))
            .refused("SAGEMAKER_SPEC: ppp"),
        c("missing file")
            .var("SAGEMAKER_SPEC", "nope.yaml")
            .refused("SAGEMAKER_SPEC: nope.yaml: no such file in the project directory"),
        c("a directory")
            .file("ci/keep", "x")
            .var("SAGEMAKER_SPEC", "ci")
            .refused("SAGEMAKER_SPEC: ci: not a regular file"),
        c("too big")
            .spec(format!("train:\n  tags:\n    a: \"{}\"\n", "x".repeat(200_000)))
            .refused("SAGEMAKER_SPEC: spec.yaml: larger than the limit of 65536 bytes"),
        c("too deep")
            .spec(format!(
                "train:\n  tags: {}1{}\n",
                "[".repeat(5_000),
                "]".repeat(5_000)
            ))
            .refused("SAGEMAKER_SPEC: spec.yaml: nested deeper than 32 levels"),
        c("alias bomb").spec(bomb).refused("SAGEMAKER_SPEC: spec.yaml:"),
        c("unknown key")
            .spec("train:\n  instance_typ: ml.m5.large\n")
            .refused("unknown field `instance_typ`"),
        c("wrong type")
            .spec("train:\n  instance_count: [1, 2]\n")
            .refused("train.instance_count"),
        c("long wrong-typed value is quoted as an excerpt")
            .spec(format!("train:\n  instance_count: \"{}\"\n", long('s')))
            .refused("train.instance_count"),
        c("long bad value is quoted as an excerpt")
            .spec(format!("train:\n  instance_type: \"{}\"\n", long('m')))
            .refused("spec.yaml: train.instance_type: \"mmm"),
        c("NUL byte")
            .spec(b"train:\n  instance_type: ml.m5\0.large\n".to_vec())
            .refused("SAGEMAKER_SPEC: spec.yaml:"),
        c("terminal escapes in a value")
            .spec("train:\n  instance_type: \"ml.m5\\e[2J.large\"\n")
            .refused("spec.yaml: train.instance_type: \"ml.m5?[2J.large\""),
        c("a key that forges a second error line")
            .spec("train:\n  tags:\n    \"a\\nERROR: all good\": x\n")
            .refused("train.tags.a?ERROR: all good: a tag key must be"),
        c("not UTF-8")
            .spec(b"train:\n  instance_type: ml.m5.\xff\xfe\n".to_vec())
            .refused("SAGEMAKER_SPEC: spec.yaml: not UTF-8 text"),
        c("channel named dot-dot")
            .spec("train:\n  inputs:\n    \"..\": s3://ci-staging/data/\n")
            .refused("spec.yaml: train.inputs...: \"..\" is not a usable channel name"),
        c("channel named dot")
            .spec("train:\n  inputs:\n    \".\": s3://ci-staging/data/\n")
            .refused("\".\" is not a usable channel name"),
        c("empty channel name")
            .spec("train:\n  inputs:\n    \"\": s3://ci-staging/data/\n")
            .refused("\"\" is not a usable channel name"),
        c("metric name too long")
            .spec(format!(
                "train:\n  metrics:\n    {}: \"loss=([0-9.]+)\"\n",
                "n".repeat(300)
            ))
            .refused("a metric name must be 1-255 printable characters"),
        c("tag key with the reserved prefix in another case")
            .spec("train:\n  tags:\n    Managed-By: me\n")
            .refused("spec.yaml: train.tags.Managed-By: tag keys aws:*, gitlab:* and managed-by are reserved"),
    ]
}

/// Training variables: every kind, over the policy, malformed, huge.
fn train_variable_cases() -> Vec<Case> {
    let c = |name| case("train variables", name);
    let mut cases = vec![
        c("unknown instance type")
            .var("SAGEMAKER_INSTANCE_TYPE", "ml.z9.huge")
            .refused("SAGEMAKER_INSTANCE_TYPE: \"ml.z9.huge\" is not a SageMaker training instance type"),
        c("instance type outside the allow-list")
            .var("SAGEMAKER_INSTANCE_TYPE", "ml.p5.48xlarge")
            .refused("SAGEMAKER_INSTANCE_TYPE: \"ml.p5.48xlarge\" is not allowed by policy.train.instance_types [ml.m5.*]"),
        c("instance type with a glob-escaping suffix")
            .var("SAGEMAKER_INSTANCE_TYPE", "ml.m5.large.x")
            .refused("is not a SageMaker training instance type"),
        c("instance type with terminal escapes")
            .var("SAGEMAKER_INSTANCE_TYPE", "ml.m5.large\x1b[2J")
            .refused("\"ml.m5.large?[2J\" is not a SageMaker training instance type"),
        c("instance count over the maximum")
            .var("SAGEMAKER_INSTANCE_COUNT", "3")
            .refused("SAGEMAKER_INSTANCE_COUNT: 3 is over policy.train.max_instance_count = 2"),
        c("instance count zero")
            .var("SAGEMAKER_INSTANCE_COUNT", "0")
            .refused("SAGEMAKER_INSTANCE_COUNT: 0 is below the minimum 1"),
        c("instance count not a number")
            .var("SAGEMAKER_INSTANCE_COUNT", "two")
            .refused("SAGEMAKER_INSTANCE_COUNT: \"two\" is not a whole number"),
        c("instance count negative")
            .var("SAGEMAKER_INSTANCE_COUNT", "-1")
            .refused("\"-1\" is not a whole number"),
        c("instance count huge")
            .var("SAGEMAKER_INSTANCE_COUNT", "99999999999999999999999999")
            .refused("is not a whole number from 1 to 4294967295"),
        c("instance count long")
            .var("SAGEMAKER_INSTANCE_COUNT", long('9'))
            .refused("SAGEMAKER_INSTANCE_COUNT: \"999"),
        c("volume size over the maximum")
            .var("SAGEMAKER_VOLUME_SIZE_GB", "101")
            .refused("SAGEMAKER_VOLUME_SIZE_GB: 101 is over policy.train.max_volume_size_gb = 100"),
        c("max runtime over the policy")
            .var("SAGEMAKER_MAX_RUNTIME", "7h")
            .refused("SAGEMAKER_MAX_RUNTIME: 7h is over policy.train.max_runtime = 6h"),
        c("max runtime malformed")
            .var("SAGEMAKER_MAX_RUNTIME", "soon")
            .refused("SAGEMAKER_MAX_RUNTIME: \"soon\" is not a duration"),
        c("max runtime zero")
            .var("SAGEMAKER_MAX_RUNTIME", "0")
            .refused("SAGEMAKER_MAX_RUNTIME: must be at least 1s"),
        c("max runtime at u64::MAX seconds with spot")
            .var("SAGEMAKER_SPOT", "true")
            .var("SAGEMAKER_MAX_RUNTIME", "18446744073709551615")
            .refused("is over policy.train.max_runtime = 6h"),
        c("spot flag garbage")
            .var("SAGEMAKER_SPOT", "maybe")
            .refused("SAGEMAKER_SPOT: \"maybe\" is not true or false"),
        c("max wait without spot")
            .var("SAGEMAKER_MAX_WAIT", "2h")
            .refused("SAGEMAKER_MAX_WAIT: only applies to managed spot training"),
        c("max wait below the runtime")
            .var("SAGEMAKER_SPOT", "true")
            .var("SAGEMAKER_MAX_RUNTIME", "2h")
            .var("SAGEMAKER_MAX_WAIT", "1h")
            .refused("SAGEMAKER_MAX_WAIT: 1h must be at least the max runtime 2h"),
        c("checkpoint in another project's staging area")
            .var("SAGEMAKER_SPOT", "true")
            .var(
                "SAGEMAKER_CHECKPOINT_S3_URI",
                "s3://ci-staging/sagemaker-executor/checkpoints/2/main",
            )
            .refused("SAGEMAKER_CHECKPOINT_S3_URI: \"s3://ci-staging/sagemaker-executor/check…\" overlaps the staging area"),
        c("keep-alive over the policy")
            .var("SAGEMAKER_KEEP_ALIVE", "2h")
            .refused("SAGEMAKER_KEEP_ALIVE: 2h is over policy.train.max_keep_alive = 30m"),
        c("channel name too long")
            .var(&format!("SAGEMAKER_INPUT_{}", "C".repeat(65)), "s3://ci-staging/d/")
            .refused("is not a usable channel name"),
        c("channel named like the workspace channel")
            .spec("train:\n  inputs:\n    sm-workspace: s3://ci-staging/d/\n")
            .refused("spec.yaml: train.inputs.sm-workspace: \"sm-workspace\" is not a usable channel name"),
        c("channel in a bucket outside the allow-list")
            .var("SAGEMAKER_INPUT_TRAIN", "s3://other-bucket/data/")
            .refused("SAGEMAKER_INPUT_TRAIN: bucket \"other-bucket\" is not allowed by policy.train.buckets [ci-staging, ml-data-*]"),
        c("channel bucket that only starts like an allowed one")
            .var("SAGEMAKER_INPUT_TRAIN", "s3://ci-staging.evil.io/data/")
            .refused("bucket \"ci-staging.evil.io\" is not allowed by policy.train.buckets"),
        c("channel URI not s3")
            .var("SAGEMAKER_INPUT_TRAIN", "https://ci-staging.s3.amazonaws.com/x")
            .refused("SAGEMAKER_INPUT_TRAIN: \"https://ci-staging.s3.amazonaws.com/x\" is not an s3:// URI"),
        c("channel URI with an empty bucket")
            .var("SAGEMAKER_INPUT_TRAIN", "s3:///sagemaker-executor/")
            .refused("is not an s3:// URI"),
        c("channel URI under the staging prefix")
            .var("SAGEMAKER_INPUT_TRAIN", "s3://ci-staging/sagemaker-executor/1/")
            .refused("SAGEMAKER_INPUT_TRAIN: \"s3://ci-staging/sagemaker-executor/1/\" overlaps the staging area s3://ci-staging/sagemaker-executor/"),
        c("channel URI at the staging bucket's root")
            .var("SAGEMAKER_INPUT_TRAIN", "s3://ci-staging/")
            .refused("overlaps the staging area"),
        c("channel URI a key prefix of the staging prefix")
            .var("SAGEMAKER_INPUT_TRAIN", "s3://ci-staging/sage")
            .refused("overlaps the staging area"),
        c("output path in another bucket")
            .var("SAGEMAKER_OUTPUT_PATH", "s3://evil/out")
            .refused("SAGEMAKER_OUTPUT_PATH: bucket \"evil\" is not allowed by policy.train.buckets"),
        c("output path uppercase scheme")
            .var("SAGEMAKER_OUTPUT_PATH", "S3://ci-staging/out")
            .refused("is not an s3:// URI"),
        c("metric regex without a capture group")
            .var("SAGEMAKER_METRIC_loss", "loss=[0-9.]+")
            .refused("SAGEMAKER_METRIC_loss: the regex needs one capture group"),
        c("metric regex invalid")
            .var("SAGEMAKER_METRIC_loss", "loss=([")
            .refused("SAGEMAKER_METRIC_loss: not a valid regex"),
        c("metric regex too long")
            .var("SAGEMAKER_METRIC_loss", format!("({})", "a".repeat(600)))
            .refused("the regex is longer than SageMaker's 500 characters"),
        c("metric regex too big to compile")
            .var("SAGEMAKER_METRIC_loss", "((a{1000}){1000}){1000}")
            .refused("SAGEMAKER_METRIC_loss: not a valid regex"),
        c("catastrophic-looking metric regex is accepted (linear engine), only the count is refused")
            .var("SAGEMAKER_METRIC_loss", "^(a+)+$")
            .var("SAGEMAKER_INSTANCE_COUNT", "9")
            .refused("SAGEMAKER_INSTANCE_COUNT: 9 is over"),
        c("tag with the aws: prefix")
            .spec("train:\n  tags:\n    aws:cloudformation: x\n")
            .refused("train.tags.aws:cloudformation: tag keys aws:*, gitlab:* and managed-by are reserved"),
        c("tag with the gitlab: prefix in capitals")
            .spec("train:\n  tags:\n    GITLAB:job-id: \"1\"\n")
            .refused("train.tags.GITLAB:job-id: tag keys aws:*, gitlab:* and managed-by are reserved"),
        c("tag colliding with managed-by without case")
            .spec("train:\n  tags:\n    MANAGED-BY: me\n")
            .refused("train.tags.MANAGED-BY: tag keys aws:*, gitlab:* and managed-by are reserved"),
        c("tag key too long")
            .var(&format!("SAGEMAKER_TAG_{}", "k".repeat(129)), "x")
            .refused("a tag key must be 1-128"),
        c("tag key with a character AWS refuses")
            .spec("train:\n  tags:\n    \"a#b\": x\n")
            .refused("train.tags.a#b: a tag key must be"),
        c("tag value too long")
            .var("SAGEMAKER_TAG_team", long('v'))
            .refused("SAGEMAKER_TAG_team: a tag value is at most 256 characters"),
        c("unknown SAGEMAKER_ variable")
            .var("SAGEMAKER_INSTANCE_CONT", "1")
            .refused("SAGEMAKER_INSTANCE_CONT: unknown setting"),
        c("near miss of a FARGATE_ setting")
            .var("FARGATE_CPUS", "1024")
            .refused("FARGATE_CPUS: unknown setting"),
        c("unknown variable with a huge name")
            .var(&format!("SAGEMAKER_{}", "Z".repeat(10_000)), "1")
            .refused("SAGEMAKER_ZZZ"),
    ];
    let mut many_tags = c("too many tags").refused("SAGEMAKER_TAG_*: at most 20 extra tags");
    for i in 0..21 {
        many_tags = many_tags.var(&format!("SAGEMAKER_TAG_t{i:02}"), "x");
    }
    let mut many_metrics =
        c("too many metrics").refused("SAGEMAKER_METRIC_*: SageMaker accepts at most 40");
    for i in 0..41 {
        many_metrics = many_metrics.var(&format!("SAGEMAKER_METRIC_m{i:02}"), "m=([0-9]+)");
    }
    cases.extend([many_tags, many_metrics]);
    cases
}

/// Images of every action: registries, path tricks, Docker Hub short names against policies.
fn image_cases() -> Vec<Case> {
    let c = |name| case("images", name);
    let fargate = |name| c(name).var("SAGEMAKER_ACTION", "fargate");
    vec![
        c("training image not in ECR")
            .image(Some("python:3.12"))
            .refused("image: \"python:3.12\" is not an ECR image"),
        c("training image with a dot-dot segment")
            .image(Some("123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/../evil:1"))
            .refused("is not an ECR image"),
        c("training image with whitespace")
            .image(Some("123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/train :1"))
            .refused("is not an ECR image"),
        c("training image on a registry host that only starts like ECR")
            .image(Some("123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.io/x:1"))
            .refused("is not an ECR image"),
        c("training image long")
            .image(Some(&format!("{ECR_IMAGE}{}", "1".repeat(10_000))))
            .refused("image: \"123456789012.dkr.ecr.us-east-1.amazonaws…\" is not an ECR image"),
        c("training image outside policy.train.images")
            .policy("", "", "images = [\"111111111111.dkr.ecr.*.amazonaws.com/**\"]\n")
            .refused("is not allowed by policy.train.images [111111111111.dkr.ecr.*.amazonaws.com/**]"),
        c("no image at all")
            .image(None)
            .refused("image: a training job needs an image"),
        fargate("Docker Hub short name outside the policy")
            .image(Some("ubuntu:22.04"))
            .refused("image: \"ubuntu:22.04\" (that is \"docker.io/library/ubuntu:22.04\") is not allowed by policy.fargate.images"),
        fargate("Docker Hub user image named like an allowed one")
            .image(Some("python/evil:1"))
            .refused("(that is \"docker.io/python/evil:1\") is not allowed by policy.fargate.images"),
        fargate("registry host that only starts like Docker Hub")
            .image(Some("docker.io.evil.io/library/python:3.12"))
            .refused("is not allowed by policy.fargate.images"),
        fargate("image path with dot-dot")
            .image(Some("docker.io/library/python/../../evil/x:1"))
            .refused("has an empty, `.` or `..` path segment"),
        fargate("image with a control character")
            .image(Some("python:3.12\x07"))
            .refused("contains whitespace or control characters"),
        fargate("image too long")
            .image(Some(&format!("python:{}", "3".repeat(600))))
            .refused("is longer than 512 characters"),
        fargate("no image")
            .image(None)
            .refused("image: a fargate job needs an `image:`"),
    ]
}

/// Roles and buckets, including escapes from their allow-lists.
fn role_and_bucket_cases() -> Vec<Case> {
    let c = |name| case("roles and buckets", name);
    vec![
        c("role not an ARN")
            .var("SAGEMAKER_ROLE_ARN", "admin")
            .refused("SAGEMAKER_ROLE_ARN: \"admin\" is not an IAM role ARN"),
        c("role of a user")
            .var("SAGEMAKER_ROLE_ARN", "arn:aws:iam::123456789012:user/bob")
            .refused("is not an IAM role ARN"),
        c("role in another account")
            .var("SAGEMAKER_ROLE_ARN", "arn:aws:iam::999999999999:role/SageMakerCI")
            .refused("SAGEMAKER_ROLE_ARN: \"arn:aws:iam::999999999999:role/SageMaker…\" is not allowed by policy.train.roles"),
        c("role path escaping the allowed name")
            .var("SAGEMAKER_ROLE_ARN", "arn:aws:iam::123456789012:role/SageMakerCI/../Admin")
            .refused("is not allowed by policy.train.roles [arn:aws:iam::123456789012:role/SageMaker*]"),
        c("role long")
            .var("SAGEMAKER_ROLE_ARN", format!("arn:aws:iam::123456789012:role/{}", long('r')))
            .refused("is not an IAM role ARN"),
        c("fargate task role outside the allow-list")
            .var("SAGEMAKER_ACTION", "fargate")
            .image(Some("python:3.12"))
            .var("FARGATE_TASK_ROLE_ARN", "arn:aws:iam::123456789012:role/admin")
            .refused("FARGATE_TASK_ROLE_ARN: \"arn:aws:iam::123456789012:role/admin\" is not allowed by policy.fargate.task_roles"),
        c("model data in a bucket outside the allow-list")
            .var("SAGEMAKER_ACTION", "register")
            .var("SAGEMAKER_MODEL_PACKAGE_GROUP", "ml-churn")
            .var("SAGEMAKER_MODEL_DATA", "s3://evil/model.tar.gz")
            .var("SAGEMAKER_INFERENCE_IMAGE", ECR_IMAGE)
            .refused("SAGEMAKER_MODEL_DATA: bucket \"evil\" is not allowed by policy.train.buckets"),
    ]
}

/// Actions and job shape: unknown, not allowed, protected-only, host code.
fn action_cases() -> Vec<Case> {
    let c = |name| case("actions", name);
    vec![
        c("unknown action")
            .var("SAGEMAKER_ACTION", "destroy")
            .refused("SAGEMAKER_ACTION: unknown action \"destroy\""),
        c("action with terminal escapes")
            .var("SAGEMAKER_ACTION", "train\x1b]0;pwned\x07")
            .refused("unknown action \"train?]0;pwned?\""),
        c("action not in the allow-list")
            .var("SAGEMAKER_ACTION", "fargate")
            .policy(
                "allowed_actions = [\"train\", \"fargate\", \"register\", \"deploy\", \"undeploy\", \"ecs-deploy\"]",
                "allowed_actions = [\"train\"]",
                "",
            )
            .refused("SAGEMAKER_ACTION: action \"fargate\" is not allowed by policy.allowed_actions [train]"),
        c("protected-ref action on an unprotected ref")
            .var("SAGEMAKER_ACTION", "ecs-deploy")
            .var("ECS_CLUSTER", "ci")
            .var("ECS_SERVICE", "web-a")
            .var("ECS_CONTAINER", "app")
            .var("ECS_IMAGE", ECR_IMAGE)
            .refused("SAGEMAKER_ACTION: action \"ecs-deploy\" runs only on protected refs"),
        {
            let mut c = c("after_script where the policy forbids it")
                .policy("allow_after_script = true\n", "", "")
                .refused("after_script: after_script is not allowed on this runner");
            c.after_script = true;
            c
        },
        {
            let mut c = c("hooks where the policy forbids them")
                .policy("allow_hooks = true\n", "", "")
                .refused("hooks: job hooks are not allowed on this runner");
            c.hooks = true;
            c
        },
    ]
}

/// Register: groups, approvals, gates, metrics files, content.
fn register_cases() -> Vec<Case> {
    let c = |name| {
        case("register", name)
            .var("SAGEMAKER_ACTION", "register")
            .var(
                "SAGEMAKER_MODEL_DATA",
                "s3://ci-staging/models/model.tar.gz",
            )
            .var("SAGEMAKER_INFERENCE_IMAGE", ECR_IMAGE)
    };
    vec![
        c("group name with bad characters")
            .var("SAGEMAKER_MODEL_PACKAGE_GROUP", "ml_bad!")
            .refused("SAGEMAKER_MODEL_PACKAGE_GROUP: \"ml_bad!\" is not a model package group name"),
        c("group outside the allow-list")
            .var("SAGEMAKER_MODEL_PACKAGE_GROUP", "prod-models")
            .refused("\"prod-models\" is not allowed by policy.register.groups [ml-*]"),
        c("group name too long")
            .var("SAGEMAKER_MODEL_PACKAGE_GROUP", format!("ml-{}", "g".repeat(100)))
            .refused("is not a model package group name (1-63"),
        c("approved on an unprotected ref")
            .var("SAGEMAKER_MODEL_PACKAGE_GROUP", "ml-churn")
            .var("SAGEMAKER_APPROVAL", "approved")
            .refused("SAGEMAKER_APPROVAL: approved on the unprotected ref \"main\": only [pending, auto] is allowed there"),
        c("approval garbage")
            .var("SAGEMAKER_MODEL_PACKAGE_GROUP", "ml-churn")
            .var("SAGEMAKER_APPROVAL", "yes please")
            .refused("SAGEMAKER_APPROVAL: \"yes please\" is not pending, approved or auto"),
        c("gate with a doubled operator")
            .var("SAGEMAKER_MODEL_PACKAGE_GROUP", "ml-churn")
            .var("SAGEMAKER_APPROVAL_GATES", "accuracy>>0.8")
            .refused("SAGEMAKER_APPROVAL_GATES: \"accuracy>>0.8\": \">0.8\" is not a number"),
        c("gate metric name with a space")
            .var("SAGEMAKER_MODEL_PACKAGE_GROUP", "ml-churn")
            .var("SAGEMAKER_APPROVAL_GATES", "acc uracy>=0.8")
            .refused("the metric name must be 1-255 of [A-Za-z0-9_.:-]"),
        c("gate threshold not finite")
            .var("SAGEMAKER_MODEL_PACKAGE_GROUP", "ml-churn")
            .var("SAGEMAKER_APPROVAL_GATES", "accuracy>=inf")
            .refused("\"inf\" is not a number"),
        c("too many gates")
            .var("SAGEMAKER_MODEL_PACKAGE_GROUP", "ml-churn")
            .var(
                "SAGEMAKER_APPROVAL_GATES",
                (0..40).map(|i| format!("m{i}>=0.1")).collect::<Vec<_>>().join(","),
            )
            .refused("more than 32 gates"),
        c("metrics file absolute")
            .var("SAGEMAKER_MODEL_PACKAGE_GROUP", "ml-churn")
            .var("SAGEMAKER_APPROVAL_METRICS_FILE", "/etc/passwd")
            .refused("SAGEMAKER_APPROVAL_METRICS_FILE: must be a relative path inside the project directory"),
        c("metrics file with dot-dot")
            .var("SAGEMAKER_MODEL_PACKAGE_GROUP", "ml-churn")
            .var("SAGEMAKER_APPROVAL_METRICS_FILE", "reports/../../../../host/secret")
            .refused("must be a relative path inside the project directory"),
        c("gate failure garbage")
            .var("SAGEMAKER_MODEL_PACKAGE_GROUP", "ml-churn")
            .var("SAGEMAKER_GATE_FAILURE", "explode")
            .refused("SAGEMAKER_GATE_FAILURE: \"explode\" is not pending, reject or fail"),
        c("content types malformed")
            .var("SAGEMAKER_MODEL_PACKAGE_GROUP", "ml-churn")
            .var("SAGEMAKER_CONTENT_TYPES", "application/json/x,<script>")
            .refused("SAGEMAKER_CONTENT_TYPES: must be 1-10 comma-separated MIME types"),
        c("description too long")
            .var("SAGEMAKER_MODEL_PACKAGE_GROUP", "ml-churn")
            .var("SAGEMAKER_MODEL_DESCRIPTION", long('d'))
            .refused("SAGEMAKER_MODEL_DESCRIPTION: at most 1024 characters"),
        c("model data not s3")
            .var("SAGEMAKER_MODEL_PACKAGE_GROUP", "ml-churn")
            .var("SAGEMAKER_MODEL_DATA", "file:///etc/passwd")
            .refused("SAGEMAKER_MODEL_DATA: \"file:///etc/passwd\" is not an s3:// URI"),
        c("inference image not in ECR")
            .var("SAGEMAKER_MODEL_PACKAGE_GROUP", "ml-churn")
            .var("SAGEMAKER_INFERENCE_IMAGE", "docker.io/library/python:3.12")
            .refused("SAGEMAKER_INFERENCE_IMAGE: \"docker.io/library/python:3.12\" is not an ECR image"),
        c("bundling the model where the policy has no cap")
            .var("SAGEMAKER_MODEL_PACKAGE_GROUP", "ml-churn")
            .var("SAGEMAKER_BUNDLE_MODEL", "true")
            .policy("max_bundle_bytes = 1048576\n", "", "")
            .refused("SAGEMAKER_BUNDLE_MODEL: copying the model into the release bundle is not allowed"),
        c("bundling a model archive that does not exist")
            .var("SAGEMAKER_MODEL_PACKAGE_GROUP", "ml-churn")
            .var("SAGEMAKER_MODEL_DATA", "s3://ci-staging/models/missing.tar.gz")
            .var("SAGEMAKER_BUNDLE_MODEL", "true")
            .refused("release bundle: the model archive \"s3://ci-staging/models/missing.tar.gz\" does not exist"),
        c("metrics file symlinked to a host file")
            .var("SAGEMAKER_MODEL_PACKAGE_GROUP", "ml-churn")
            .var("SAGEMAKER_APPROVAL_GATES", "accuracy>=0.8")
            .var("SAGEMAKER_APPROVAL_METRICS_FILE", "metrics.json")
            .link("metrics.json", Target::Host("secret"))
            .refused("metrics.json: refused: it leads outside the project directory"),
        c("metrics file reached through a directory symlinked out")
            .var("SAGEMAKER_MODEL_PACKAGE_GROUP", "ml-churn")
            .var("SAGEMAKER_APPROVAL_GATES", "accuracy>=0.8")
            .var("SAGEMAKER_APPROVAL_METRICS_FILE", "reports/secret")
            .link("reports", Target::Host(""))
            .refused("reports/secret: refused: it leads outside the project directory"),
    ]
}

/// ECS deployments and Fargate sizes (protected ref, so the action itself is allowed).
fn ecs_and_fargate_cases() -> Vec<Case> {
    let ecs = |name| {
        case("ecs-deploy", name)
            .protected()
            .var("SAGEMAKER_ACTION", "ecs-deploy")
            .var("ECS_CONTAINER", "app")
            .var("ECS_IMAGE", ECR_IMAGE)
    };
    let fargate = |name| {
        case("fargate", name)
            .var("SAGEMAKER_ACTION", "fargate")
            .image(Some("python:3.12"))
    };
    vec![
        ecs("cluster outside the allow-list")
            .var("ECS_CLUSTER", "prod")
            .var("ECS_SERVICE", "web-a")
            .refused("ECS_CLUSTER: \"prod\" is not allowed by policy.ecs_deploy.clusters [ci]"),
        ecs("cluster ARN of an allowed name")
            .var("ECS_CLUSTER", "arn:aws:ecs:us-east-1:999999999999:cluster/ci")
            .var("ECS_SERVICE", "web-a")
            .refused("is not allowed by policy.ecs_deploy.clusters [ci]"),
        ecs("service escaping the glob with a slash")
            .var("ECS_CLUSTER", "ci")
            .var("ECS_SERVICE", "web-a/../admin")
            .refused("ECS_SERVICE: \"web-a/../admin\" is not an ECS service name"),
        ecs("service name long")
            .var("ECS_CLUSTER", "ci")
            .var("ECS_SERVICE", format!("web-{}", long('s')))
            .refused("ECS_SERVICE: \"web-sss"),
        ecs("service name with a newline")
            .var("ECS_CLUSTER", "ci")
            .var("ECS_SERVICE", "web-a\nERROR: forged")
            .refused("ECS_SERVICE: \"web-a?ERROR: forged\" is not an ECS service name"),
        ecs("container name with a slash")
            .var("ECS_CLUSTER", "ci")
            .var("ECS_SERVICE", "web-a")
            .var("ECS_CONTAINER", "app/../sidecar")
            .refused("ECS_CONTAINER: \"app/../sidecar\" is not an ECS container name"),
        ecs("image from Docker Hub")
            .var("ECS_CLUSTER", "ci")
            .var("ECS_SERVICE", "web-a")
            .var("ECS_IMAGE", "nginx:latest")
            .refused("ECS_IMAGE: \"nginx:latest\" (that is \"docker.io/library/nginx:latest\") is not allowed by policy.ecs_deploy.images"),
        ecs("no service")
            .var("ECS_CLUSTER", "ci")
            .refused("ECS_SERVICE: is required for ecs-deploy"),
        ecs("timeout malformed")
            .var("ECS_CLUSTER", "ci")
            .var("ECS_SERVICE", "web-a")
            .var("ECS_TIMEOUT", "forever")
            .refused("ECS_TIMEOUT: \"forever\" is not a duration"),
        fargate("cpu over the maximum")
            .var("FARGATE_CPU", "4096")
            .var("FARGATE_MEMORY", "8192")
            .refused("FARGATE_CPU: 4096 is over policy.fargate.max_cpu = 2048"),
        fargate("memory that does not fit the cpu")
            .var("FARGATE_CPU", "1024")
            .var("FARGATE_MEMORY", "3000")
            .refused("FARGATE_MEMORY: 3000 MiB is not a valid Fargate memory size for 1024 CPU units"),
        fargate("spot where the policy forbids it")
            .var("FARGATE_SPOT", "true")
            .refused("FARGATE_SPOT: Fargate Spot is not allowed on this runner"),
        fargate("architecture garbage")
            .var("FARGATE_ARCHITECTURE", "riscv64")
            .refused("FARGATE_ARCHITECTURE: \"riscv64\" is not X86_64 or ARM64"),
        fargate("ephemeral storage over the maximum")
            .var("FARGATE_EPHEMERAL_STORAGE_GB", "500")
            .refused("FARGATE_EPHEMERAL_STORAGE_GB: 500 is over policy.fargate.max_ephemeral_storage_gb = 50"),
    ]
}

/// The Python that writes a hostile `workspace.tar` of the job's own project dir into
/// SageMaker's output dir: `python3 hostile_tar.py <kind> <host dir>`.
const HOSTILE_TAR_PY: &str = r#"import io, os, sys, tarfile
kind, host = sys.argv[1], sys.argv[2].lstrip("/")
proj = os.getcwd().lstrip("/")
out = tarfile.open(os.environ["SM_OUTPUT_DATA_DIR"] + "/workspace.tar", "w", format=tarfile.GNU_FORMAT)
def add(name, type=tarfile.REGTYPE, data=b"owned\n", link="", size=None):
    info = tarfile.TarInfo(name)
    info.type = type
    info.linkname = link
    info.mode = 0o4755
    if type == tarfile.REGTYPE:
        info.size = len(data) if size is None else size
        out.addfile(info, io.BytesIO(data) if size is None else Zeros(size))
    else:
        if type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            info.devmajor, info.devminor = 1, 3
        out.addfile(info)
class Zeros:
    def __init__(self, n): self.n = n
    def read(self, k=-1):
        k = self.n if k < 0 else min(k, self.n)
        self.n -= k
        return bytes(k)
add(proj + "/restored.txt")
if kind == "absolute":
    add("/" + host + "/evil-absolute")
elif kind == "dotdot":
    add(proj + "/" + "../" * 30 + host + "/evil-dotdot")
elif kind == "symlink":
    add(proj + "/out", tarfile.SYMTYPE, link="/" + host)
    add(proj + "/out/evil-through-link")
    add(proj + "/rel", tarfile.SYMTYPE, link="../" * 30 + host + "/secret")
elif kind == "planted":
    add(proj + "/planted/evil-through-planted")
elif kind == "hardlink":
    add(proj + "/hl", tarfile.LNKTYPE, link=host + "/secret")
elif kind == "devices":
    add(proj + "/null", tarfile.CHRTYPE)
    add(proj + "/disk", tarfile.BLKTYPE)
    add(proj + "/fifo", tarfile.FIFOTYPE)
elif kind == "bomb":
    add(proj + "/zeros", size=64 << 20)
out.close()
"#;

/// Returned archives the "container" builds from its own workspace: the script writes the tar
/// into SageMaker's output dir and removes the project dir, so the bootstrap has nothing of its
/// own to pack and SageMaker returns the script's archive.
fn returned_archive_cases() -> Vec<Case> {
    let c = |name: &str, kind: &str| {
        case("returned archives", name)
            .file("hostile_tar.py", HOSTILE_TAR_PY)
            .script(&[
                &format!("python3 hostile_tar.py {kind} \"$HOST_DIR\""),
                "P=$(pwd); cd / && rm -rf \"$P\" \"$P.tmp\"",
            ])
    };
    vec![
        c("absolute member names", "absolute")
            .succeeds(&["not restored: ", "evil-absolute: absolute member name"]),
        c("dot-dot member names", "dotdot").succeeds(&["evil-dotdot: `..` in member name"]),
        c("symlink out, then a write through it", "symlink").succeeds(&[
            "/out: symlink target",
            "is outside the workspace",
            "/rel: symlink target",
        ]),
        c(
            "a write through a symlink planted in the repository",
            "planted",
        )
        .link("planted", Target::Host(""))
        .succeeds(&["is a symlink; not writing through it"]),
        c("hard link out", "hardlink").succeeds(&["/hl: hard link to", "outside the workspace"]),
        c("device and FIFO entries", "devices").succeeds(&[
            "/null: device or FIFO entries are not restored",
            "/disk: device or FIFO entries are not restored",
            "/fifo: device or FIFO entries are not restored",
        ]),
        {
            let mut bomb = c("gzip bomb over staging.max_return_bytes", "bomb").fails_after_run(
                "the returned workspace is larger than the limit of 1048576 bytes",
            );
            bomb.max_return_bytes = Some(1 << 20);
            bomb
        },
    ]
}

/// Repository symlinks aimed at the files the executor writes, and at returned files.
fn output_link_cases() -> Vec<Case> {
    let c = |name| case("repository links", name);
    vec![
        c("sagemaker.env and the metrics file planted as links to host files")
            .link("sagemaker.env", Target::Host("secret"))
            .link("sagemaker-metrics.txt", Target::Host("dir/inner"))
            .var("SAGEMAKER_METRIC_loss", "loss=([0-9.]+)")
            .script(&["echo loss=0.25"])
            .succeeds(&["Training job gl-"]),
        case(
            "repository links",
            "release/ planted as a link to a host dir",
        )
        .var("SAGEMAKER_ACTION", "register")
        .var("SAGEMAKER_MODEL_PACKAGE_GROUP", "ml-churn")
        .var(
            "SAGEMAKER_MODEL_DATA",
            "s3://ci-staging/models/model.tar.gz",
        )
        .var("SAGEMAKER_INFERENCE_IMAGE", ECR_IMAGE)
        .link("release", Target::Host("dir"))
        .refused("release: refused: it leads outside the project directory"),
        c("returned files replacing links planted in the repository")
            .link("result.txt", Target::Host("secret"))
            .link("outdir", Target::Host("dir"))
            .script(&[
                "rm result.txt outdir",
                "echo new > result.txt",
                "mkdir outdir && echo new > outdir/inner",
            ])
            .succeeds(&["Restored the workspace"]),
    ]
}

fn corpus() -> Vec<Case> {
    let mut all = Vec::new();
    all.extend(spec_cases());
    all.extend(train_variable_cases());
    all.extend(image_cases());
    all.extend(role_and_bucket_cases());
    all.extend(action_cases());
    all.extend(register_cases());
    all.extend(ecs_and_fargate_cases());
    all.extend(output_link_cases());
    all.extend(returned_archive_cases());
    all
}

/// AWS calls that create or upload something.
fn creating(calls: &[String]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| {
            c.contains(".Create")
                || c.contains(".RunTask")
                || c.contains(".Register")
                || c.contains(".UpdateService")
                || c.strip_prefix("S3.PUT /")
                    .or_else(|| c.strip_prefix("S3.POST /"))
                    // An object key after the bucket (the test's own CreateBucket has none).
                    .is_some_and(|path| {
                        path.split_once('/').is_some_and(|(_, key)| !key.is_empty())
                    })
        })
        .cloned()
        .collect()
}

/// Every file, dir and link under `dir` with its content or target.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                todo.push(path.clone());
                "dir".to_owned()
            } else {
                format!(
                    "file {}",
                    String::from_utf8_lossy(&std::fs::read(&path).unwrap())
                )
            };
            out.insert(path.strip_prefix(dir).unwrap().to_path_buf(), what);
        }
    }
    out
}

fn top_level(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The world's config with `tail` and an optional return cap; training jobs are described
/// every second (the template's 2 s would make the remote cases the bulk of the file's time).
fn config_for(w: &World, tail: &str, max_return_bytes: Option<u64>) -> String {
    let text = w.config_text(tail).replacen(
        "describe_interval = \"2s\"",
        "describe_interval = \"1s\"",
        1,
    );
    match max_return_bytes {
        Some(n) => text.replacen(
            "bucket = \"ci-staging\"\n",
            &format!("bucket = \"ci-staging\"\nmax_return_bytes = {n}\n"),
            1,
        ),
        None => text,
    }
}

/// Writes the case's repository under `<temp>/repos/<index>` and builds its fixture.
fn fixture(w: &World, index: usize, c: &Case, host: &Path) -> JobFixture {
    let repo = w.dir.path().join("repos").join(index.to_string());
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("README.md"), "hostile repo\n").unwrap();
    for (path, content) in &c.files {
        let at = repo.join(path);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(at, content).unwrap();
    }
    for (path, target) in &c.links {
        let at = repo.join(path);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        let target = match target {
            Target::Host(rel) => host.join(rel),
            Target::Literal(t) => PathBuf::from(t),
        };
        symlink(target, at).unwrap();
    }
    let mut f = w.fixture("name: hostile\nscript: [\"true\"]\nsource: repos\n");
    f.source = Source::Dir(repo);
    f.script = c.script.clone();
    f.image = c.image.as_ref().map(|name| Image {
        name: name.clone(),
        entrypoint: Vec::new(),
    });
    f.protected = c.protected;
    let var = |key: &str, value: &str| Variable {
        key: key.to_owned(),
        value: value.to_owned(),
        file: false,
        masked: false,
        raw: true,
    };
    f.variables = c.vars.iter().map(|(k, v)| var(k, v)).collect();
    f.variables
        .push(var("HOST_DIR", &host.display().to_string()));
    if c.after_script {
        f.after_script = vec!["echo after".to_owned()];
    }
    if c.hooks {
        f.hooks = Hooks {
            pre_get_sources_script: vec!["echo hook".to_owned()],
            ..Hooks::default()
        };
    }
    f
}

/// Runs one case and returns what was wrong with it (empty when it passed).
fn run_case(w: &World, index: usize, c: &Case, host: &Path) -> Vec<String> {
    let mut wrong = Vec::new();
    let tail = c
        .policy
        .clone()
        .unwrap_or_else(|| format!("{POLICY}{WORLD_POLICY}"));
    w.write_config(&config_for(w, &tail, c.max_return_bytes))
        .unwrap();
    let host_before = snapshot(host);
    let top_before = top_level(w.dir.path());
    let calls_before = w.calls().len();
    let fixture = fixture(w, index, c, host);
    let top_with_repo = top_level(w.dir.path());
    let result: JobResult = match w.runner.run(&fixture) {
        Ok(r) => r,
        Err(e) => return vec![format!("the job did not run: {e}")],
    };
    let log = result.plain_log();
    let calls = w.calls();
    let new_calls = &calls[calls_before.min(calls.len())..];
    // The executor's error lines; the runner's own closing `ERROR: Job failed: ...` is not one.
    let error_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("ERROR: ") && !l.starts_with("ERROR: Job failed"))
        .collect();
    let mut check = |ok: bool, what: String| {
        if !ok {
            wrong.push(what);
        }
    };
    match &c.expect {
        Expect::Refused(needle) | Expect::FailsAfterRun(needle) => {
            check(
                result.outcome == JobOutcome::Failed { exit_code: 1 },
                format!("outcome {:?}, expected a build failure", result.outcome),
            );
            check(
                error_lines.iter().any(|l| l.contains(needle.as_str())),
                format!("no ERROR line with {needle:?}: {error_lines:?}"),
            );
        }
        Expect::Succeeds(needles) => {
            check(
                result.outcome == JobOutcome::Success,
                format!("outcome {:?}, expected success", result.outcome),
            );
            for n in needles {
                check(log.contains(n.as_str()), format!("no line with {n:?}"));
            }
        }
    }
    if let Expect::Refused(_) = &c.expect {
        check(
            error_lines.len() == 1,
            format!("{} ERROR lines, expected one", error_lines.len()),
        );
        check(
            creating(new_calls).is_empty(),
            format!("created in AWS: {:?}", creating(new_calls)),
        );
        check(
            !log.contains("SHOULD-NOT-RUN\n"),
            "the script ran".to_owned(),
        );
    }
    for l in &error_lines {
        check(
            l.chars().count() <= MAX_ERROR_LINE && !l.chars().any(char::is_control),
            format!("error line too long or not printable: {} chars", l.len()),
        );
    }
    for (key, value) in &c.vars {
        for text in [key, value] {
            if text.chars().count() >= LONG {
                let probe: String = text.chars().take(ECHO_PROBE).collect();
                check(!log.contains(&probe), "a long value was echoed".to_owned());
            }
        }
    }
    for (_, content) in &c.files {
        if content.len() >= LONG * 10 {
            let probe = String::from_utf8_lossy(&content[content.len() - ECHO_PROBE..]);
            check(
                !log.contains(probe.as_ref()),
                "file content was echoed".to_owned(),
            );
        }
    }
    check(!result.log.contains("panicked"), "a panic".to_owned());
    check(
        !log.contains(HOST_SECRET),
        "a host file leaked into the log".to_owned(),
    );
    check(
        snapshot(host) == host_before,
        format!("the host dir changed: {:?}", snapshot(host)),
    );
    check(
        top_level(w.dir.path()) == top_with_repo
            && top_with_repo
                .iter()
                .all(|n| top_before.contains(n) || n == "repos"),
        format!(
            "new files next to the job dirs: {:?}",
            top_level(w.dir.path())
        ),
    );
    if !wrong.is_empty() {
        wrong.push(format!("log:\n{log}"));
    }
    wrong
}

#[test]
fn the_hostile_corpus_is_refused_or_neutralised() {
    let cases = corpus();
    assert!(cases.len() >= 80, "{} cases", cases.len());
    let w = World::new(&format!("{POLICY}{WORLD_POLICY}"));
    let host = w.dir.path().join("host");
    std::fs::create_dir_all(host.join("dir")).unwrap();
    std::fs::write(host.join("secret"), format!("{HOST_SECRET}\n")).unwrap();
    std::fs::write(host.join("dir/inner"), format!("{HOST_SECRET} inner\n")).unwrap();
    let only = std::env::var("HOSTILE_CASE").ok();
    let mut failures = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut timings = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        *counts.entry(c.category).or_default() += 1;
        if only.as_ref().is_some_and(|o| !c.name.contains(o.as_str())) {
            continue;
        }
        let started = std::time::Instant::now();
        let wrong = run_case(&w, i, c, &host);
        timings.push((started.elapsed(), c.name.as_str()));
        if !wrong.is_empty() {
            failures.push(format!(
                "[{}] {}:\n  {}",
                c.category,
                c.name,
                wrong.join("\n  ")
            ));
        }
    }
    timings.sort();
    eprintln!(
        "hostile corpus: {} cases {counts:?}; slowest: {:?}",
        cases.len(),
        timings.iter().rev().take(12).collect::<Vec<_>>()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
