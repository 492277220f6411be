//! Resolution tests: defaults, precedence, and one clear rejection per bad setting.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::job::{Variable, Variables};

const ECR: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/train:1";
const ROLE: &str = "arn:aws:iam::123456789012:role/SageMakerCI";

fn config(extra: &str) -> ExecutorConfig {
    let text = format!(
        r#"
region = "us-east-1"
[paths]
builds_root = "/b"
cache_root = "/c"
[staging]
bucket = "ci-staging"
[train]
role_arn = "{ROLE}"
[policy]
allowed_actions = ["train", "fargate", "register", "deploy"]
[policy.train]
instance_types = ["ml.m5.*", "ml.g5.*"]
max_instance_count = 4
max_runtime = "6h"
buckets = ["ci-staging", "ml-data-*"]
roles = ["arn:aws:iam::123456789012:role/SageMaker*"]
{extra}
"#
    );
    crate::config::load_str(&text, Path::new("t.toml")).expect("test config loads")
}

fn job(vars: &[(&str, &str)], image: Option<&str>) -> Job {
    Job {
        id: 42,
        name: "train".into(),
        project_id: 7,
        project_path: "ml/seeds".into(),
        pipeline_id: 3,
        url: "https://gitlab.example.com/ml/seeds/-/jobs/42".into(),
        git_ref: "main".into(),
        sha: "abc".into(),
        ref_protected: false,
        default_branch: Some("main".into()),
        image: image.map(str::to_owned),
        timeout: Duration::from_secs(3600),
        variables: Variables::new(vars.iter().map(|(k, v)| {
            (
                (*k).to_owned(),
                Variable {
                    value: (*v).to_owned(),
                    masked: false,
                    file: false,
                },
            )
        })),
    }
}

fn plan(vars: &[(&str, &str)], image: Option<&str>) -> Result<Plan, Vec<String>> {
    let j = job(vars, image);
    let s = Settings::collect(&j, None);
    resolve(&j, JobShape::default(), &config(""), &s)
        .map_err(|v| v.iter().map(|r| r.to_string()).collect())
}

fn rejected(vars: &[(&str, &str)], image: Option<&str>) -> Vec<String> {
    match plan(vars, image) {
        Err(e) => e,
        Ok(p) => panic!("expected a rejection, got {p:?}"),
    }
}

#[test]
fn train_defaults_from_config() {
    let Ok(Plan::Train(t)) = plan(&[], Some(ECR)) else {
        panic!("train plan expected")
    };
    assert_eq!(t.instance_type, "ml.m5.large");
    assert_eq!(t.instance_count, 1);
    assert_eq!(t.role_arn, ROLE);
    assert_eq!(t.max_runtime, Duration::from_secs(3600));
    assert_eq!(t.output_path, "s3://ci-staging/sagemaker-executor/output");
    assert!(t.spot.is_none());
}

#[test]
fn train_variables_are_applied() {
    let Ok(Plan::Train(t)) = plan(
        &[
            ("SAGEMAKER_INSTANCE_TYPE", "ml.g5.xlarge"),
            ("SAGEMAKER_INSTANCE_COUNT", "2"),
            ("SAGEMAKER_MAX_RUNTIME", "2h"),
            ("SAGEMAKER_SPOT", "true"),
            ("SAGEMAKER_INPUT_TRAIN", "s3://ml-data-x/train/"),
            ("SAGEMAKER_METRIC_loss", "loss=([0-9.]+)"),
            ("SAGEMAKER_TAG_team", "vision"),
        ],
        Some(ECR),
    ) else {
        panic!("train plan expected")
    };
    assert_eq!(t.instance_type, "ml.g5.xlarge");
    assert_eq!(t.instance_count, 2);
    let spot = t.spot.expect("spot");
    assert_eq!(spot.max_wait, Duration::from_secs(4 * 3600));
    assert_eq!(
        spot.checkpoint_s3_uri,
        "s3://ci-staging/sagemaker-executor/checkpoints/7/main"
    );
    assert_eq!(
        t.inputs.get("train").map(String::as_str),
        Some("s3://ml-data-x/train/")
    );
    assert_eq!(
        t.metrics.get("loss").map(String::as_str),
        Some("loss=([0-9.]+)")
    );
    assert_eq!(t.tags.get("team").map(String::as_str), Some("vision"));
}

#[test]
fn each_bad_train_setting_gets_one_line_naming_it() {
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, &'a str);
    let cases: &[Case<'_>] = &[
        (
            &[],
            Some("python:3.12"),
            "image: \"python:3.12\" is not an ECR image",
        ),
        (&[], None, "image: a training job needs an image"),
        (
            &[("SAGEMAKER_INSTANCE_TYPE", "ml.m5.giant")],
            Some(ECR),
            "SAGEMAKER_INSTANCE_TYPE: \"ml.m5.giant\" is not a SageMaker training instance type",
        ),
        (
            &[("SAGEMAKER_INSTANCE_TYPE", "ml.p5.48xlarge")],
            Some(ECR),
            "SAGEMAKER_INSTANCE_TYPE: \"ml.p5.48xlarge\" is not allowed by policy.train.instance_types [ml.m5.*, ml.g5.*]",
        ),
        (
            &[("SAGEMAKER_INSTANCE_COUNT", "8")],
            Some(ECR),
            "SAGEMAKER_INSTANCE_COUNT: 8 is over policy.train.max_instance_count = 4",
        ),
        (
            &[("SAGEMAKER_INSTANCE_COUNT", "two")],
            Some(ECR),
            "SAGEMAKER_INSTANCE_COUNT: \"two\" is not a whole number",
        ),
        (
            &[("SAGEMAKER_MAX_RUNTIME", "12h")],
            Some(ECR),
            "SAGEMAKER_MAX_RUNTIME: 12h is over policy.train.max_runtime = 6h",
        ),
        (
            &[("SAGEMAKER_ROLE_ARN", "arn:aws:iam::123456789012:role/Admin")],
            Some(ECR),
            "SAGEMAKER_ROLE_ARN: \"arn:aws:iam::123456789012:role/Admin\" is not allowed by policy.train.roles",
        ),
        (
            &[("SAGEMAKER_INPUT_TRAIN", "s3://someone-elses/x")],
            Some(ECR),
            "SAGEMAKER_INPUT_TRAIN: bucket \"someone-elses\" is not allowed by policy.train.buckets",
        ),
        (
            &[("SAGEMAKER_OUTPUT_PATH", "s3://someone-elses/x")],
            Some(ECR),
            "SAGEMAKER_OUTPUT_PATH: bucket \"someone-elses\" is not allowed",
        ),
        (
            &[("SAGEMAKER_METRIC_acc", "acc=[0-9.]+")],
            Some(ECR),
            "SAGEMAKER_METRIC_acc: the regex needs one capture group",
        ),
        (
            &[("SAGEMAKER_INSTANCE_TYPO", "ml.m5.large")],
            Some(ECR),
            "SAGEMAKER_INSTANCE_TYPO: unknown setting",
        ),
        (
            &[("ECS_CLUSTR", "prod")],
            Some(ECR),
            "ECS_CLUSTR: unknown setting",
        ),
        (
            &[("SAGEMAKER_MAX_WAIT", "2h")],
            Some(ECR),
            "SAGEMAKER_MAX_WAIT: only applies to managed spot training",
        ),
        (
            &[("SAGEMAKER_ACTION", "ecs-deploy")],
            Some(ECR),
            "SAGEMAKER_ACTION: action \"ecs-deploy\" is not allowed by policy.allowed_actions [train, fargate, register, deploy]",
        ),
        (
            &[("SAGEMAKER_ACTION", "deploy")],
            Some(ECR),
            "SAGEMAKER_ACTION: action \"deploy\" runs only on protected refs",
        ),
        (
            &[("SAGEMAKER_ACTION", "fargate")],
            Some("python:3"),
            "this runner has no [fargate] section",
        ),
    ];
    for (vars, image, want) in cases {
        let got = rejected(vars, *image);
        assert_eq!(got.len(), 1, "{vars:?}: expected one line, got {got:#?}");
        assert!(
            got[0].contains(want),
            "{vars:?}: {:?} does not contain {want:?}",
            got[0]
        );
    }
}

#[test]
fn all_problems_are_returned_together() {
    let got = rejected(
        &[
            ("SAGEMAKER_INSTANCE_COUNT", "9"),
            ("SAGEMAKER_MAX_RUNTIME", "99h"),
        ],
        Some("python:3"),
    );
    assert_eq!(got.len(), 3, "{got:#?}");
}

#[test]
fn spec_file_settings_apply_and_variables_win() {
    let spec = spec::parse("train:\n  instance_type: ml.g5.2xlarge\n  instance_count: 3\n  inputs:\n    train: s3://ml-data-a/t\n").expect("spec parses");
    let j = job(&[("SAGEMAKER_INSTANCE_COUNT", "2")], Some(ECR));
    let s = Settings::collect(&j, Some(("ml/spec.yml", &spec)));
    let Ok(Plan::Train(t)) = resolve(&j, JobShape::default(), &config(""), &s) else {
        panic!("train plan expected")
    };
    assert_eq!(t.instance_type, "ml.g5.2xlarge");
    assert_eq!(t.instance_count, 2);
    assert_eq!(
        t.inputs.get("train").map(String::as_str),
        Some("s3://ml-data-a/t")
    );

    let spec = spec::parse("train:\n  instance_count: 30\n").expect("spec parses");
    let s = Settings::collect(&job(&[], Some(ECR)), Some(("ml/spec.yml", &spec)));
    let err = resolve(&job(&[], Some(ECR)), JobShape::default(), &config(""), &s)
        .expect_err("over the cap");
    assert_eq!(
        err[0].to_string(),
        "ml/spec.yml: train.instance_count: 30 is over policy.train.max_instance_count = 4"
    );
}

#[test]
fn spec_file_errors_name_the_key() {
    let e = spec::parse("train:\n  instance_cout: 3\n").expect_err("unknown key");
    assert!(e.contains("instance_cout"), "{e}");
    let e = spec::parse("train:\n  instance_count: many\n").expect_err("wrong type");
    assert!(e.starts_with("train.instance_count:"), "{e}");
}

#[test]
fn after_script_and_hooks_follow_the_policy() {
    let j = job(&[], Some(ECR));
    let s = Settings::collect(&j, None);
    // Closed by default: the config says nothing about after_script or hooks.
    let text_cfg = config("");
    assert!(!text_cfg.policy.allow_after_script && !text_cfg.policy.allow_hooks);
    let hooks = resolve(
        &j,
        JobShape {
            has_after_script: false,
            has_hooks: true,
        },
        &text_cfg,
        &s,
    )
    .expect_err("hooks refused");
    assert!(hooks[0].to_string().starts_with("hooks: "), "{hooks:?}");
    let mut open = config("");
    open.policy.allow_after_script = true;
    open.policy.allow_hooks = true;
    assert!(
        resolve(
            &j,
            JobShape {
                has_after_script: true,
                has_hooks: true
            },
            &open,
            &s
        )
        .is_ok()
    );
    let err = resolve(
        &j,
        JobShape {
            has_after_script: true,
            has_hooks: false,
        },
        &text_cfg,
        &s,
    )
    .expect_err("refused");
    assert!(
        err[0]
            .to_string()
            .starts_with("after_script: after_script is not allowed"),
        "{err:?}"
    );
}

#[test]
fn upstream_outputs_in_the_variables_are_not_mistaken_for_typos() {
    let upstream: Vec<(String, String)> = {
        let dir = tempfile::tempdir().unwrap();
        crate::outputs::write_dotenv(
            &crate::project_files::ProjectDir::open(dir.path()).unwrap(),
            &[
                ("SAGEMAKER_TRAINING_JOB_NAME".into(), "gl-1-2".into()),
                ("SAGEMAKER_TRAINING_JOB_ARN".into(), "arn:x".into()),
                ("SAGEMAKER_FINAL_METRIC_loss".into(), "0.1".into()),
                ("SAGEMAKER_ECS_TASK_ARN".into(), "arn:t".into()),
                ("SAGEMAKER_CONSOLE_URL".into(), "https://c".into()),
            ],
        )
        .unwrap();
        std::fs::read_to_string(dir.path().join(crate::outputs::DOTENV_FILE))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect()
    };
    let mut vars: Vec<(&str, &str)> = upstream
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(vars.len(), 5);
    assert!(
        plan(&vars, Some(ECR)).is_ok(),
        "{:?}",
        plan(&vars, Some(ECR))
    );
    vars.push(("SAGEMAKER_TRAINING_TYPO", "x"));
    assert!(
        plan(&vars, Some(ECR)).is_ok(),
        "output prefixes are reserved for outputs"
    );
    vars.push(("SAGEMAKER_INSTANCE_TYP", "x"));
    assert!(
        plan(&vars, Some(ECR)).is_err(),
        "a real typo is still refused"
    );
}

#[test]
fn other_tools_ecs_and_fargate_variables_pass_untouched() {
    let vars = [
        ("ECS_ENABLE_CONTAINER_METADATA", "true"),
        ("FARGATE_PLATFORM_VERSION_PIN", "1.4.0"),
    ];
    assert!(
        plan(&vars, Some(ECR)).is_ok(),
        "{:?}",
        plan(&vars, Some(ECR))
    );
}

#[test]
fn docker_hub_short_names_match_a_policy_written_with_full_names() {
    let mut cfg = config(
        "[fargate]\ncluster = \"ci\"\nsubnets = [\"subnet-0123456789abcdef0\"]\nsecurity_groups = [\"sg-0123456789abcdef0\"]\nexecution_role_arn = \"arn:aws:iam::123456789012:role/Exec\"\ntask_role_arn = \"arn:aws:iam::123456789012:role/Task\"\nhelper_image = \"h\"\n",
    );
    cfg.policy.fargate.images =
        crate::policy::Patterns::compile(&["docker.io/library/python:*"]).expect("patterns");
    cfg.policy.allowed_actions.insert(Action::Fargate);
    let settings = |image: &str| {
        let j = job(&[("SAGEMAKER_ACTION", "fargate")], Some(image));
        resolve(&j, JobShape::default(), &cfg, &Settings::collect(&j, None))
    };
    assert!(
        settings("python:3.12-slim").is_ok(),
        "{:?}",
        settings("python:3.12-slim")
    );
    let err = settings("evil/python:3.12").expect_err("another namespace");
    assert!(
        err[0]
            .to_string()
            .contains("(that is \"docker.io/evil/python:3.12\")"),
        "{err:?}"
    );
    let err = settings("docker.io/library/../evil:1").expect_err("dot dot");
    assert!(err[0].to_string().contains("`..` path segment"), "{err:?}");
}

#[test]
fn channels_and_checkpoints_may_not_read_the_staging_area() {
    for uri in [
        "s3://ci-staging/sagemaker-executor/7/41/",
        "s3://ci-staging/sagemaker-executor",
        "s3://ci-staging/",
        "s3://ci-staging/sage",
    ] {
        let e = rejected(&[("SAGEMAKER_INPUT_TRAIN", uri)], Some(ECR));
        assert!(
            e.iter().any(|l| l.starts_with("SAGEMAKER_INPUT_TRAIN: ")
                && l.contains("overlaps the staging area s3://ci-staging/sagemaker-executor/")),
            "{uri}: {e:?}"
        );
    }
    // Elsewhere in the staging bucket, and in another allowed bucket, channels are fine.
    let Ok(Plan::Train(t)) = plan(
        &[
            ("SAGEMAKER_INPUT_TRAIN", "s3://ci-staging/datasets/a/"),
            ("SAGEMAKER_INPUT_TEST", "s3://ml-data-x/sagemaker-executor/"),
        ],
        Some(ECR),
    ) else {
        panic!("other prefixes are allowed");
    };
    assert_eq!(t.inputs.len(), 2);
    // Checkpoints: another project's area is refused, the job's own project's is not.
    let spot = [("SAGEMAKER_SPOT", "true")];
    let e = rejected(
        &[
            spot[0],
            (
                "SAGEMAKER_CHECKPOINT_S3_URI",
                "s3://ci-staging/sagemaker-executor/checkpoints/8/main",
            ),
        ],
        Some(ECR),
    );
    assert!(e[0].contains("overlaps the staging area"), "{e:?}");
    assert!(
        plan(
            &[
                spot[0],
                (
                    "SAGEMAKER_CHECKPOINT_S3_URI",
                    "s3://ci-staging/sagemaker-executor/checkpoints/7/other-branch",
                ),
            ],
            Some(ECR),
        )
        .is_ok()
    );
    assert!(plan(&spot, Some(ECR)).is_ok(), "the default checkpoint URI");
}

#[test]
fn hostile_names_tags_and_metrics_are_refused_with_short_lines() {
    let long = "x".repeat(10_000);
    let cases: &[(&str, &str, &str)] = &[
        ("SAGEMAKER_TAG_Managed-By", "me", "reserved"),
        ("SAGEMAKER_TAG_GITLAB:job-id", "1", "reserved"),
        ("SAGEMAKER_TAG_team", &long, "a tag value is at most 256"),
        ("SAGEMAKER_TAG_a#b", "x", "a tag key must be"),
        ("SAGEMAKER_METRIC_loss", "loss=[0-9.]+", "capture group"),
        (
            "SAGEMAKER_METRIC_loss",
            &long,
            "longer than SageMaker's 500",
        ),
        ("SAGEMAKER_INSTANCE_COUNT", &long, "is not a whole number"),
        ("SAGEMAKER_MAX_RUNTIME", &long, "is not a duration"),
        ("SAGEMAKER_ROLE_ARN", &long, "is not an IAM role ARN"),
        ("SAGEMAKER_INSTANCE_TYPE", &long, "not a SageMaker training"),
        ("SAGEMAKER_INPUT_TRAIN", &long, "is not an s3:// URI"),
        ("SAGEMAKER_ACTION", &long, "unknown action"),
    ];
    for (var, value, needle) in cases {
        let e = rejected(&[(var, value)], Some(ECR));
        assert!(e.iter().any(|l| l.contains(needle)), "{var}: {e:?}");
        assert!(
            e.iter().all(|l| l.len() < 400 && !l.contains(&long[..100])),
            "{var}: {e:?}"
        );
    }
    // A huge runtime with spot on is refused, and does not overflow the default max wait.
    let e = rejected(
        &[
            ("SAGEMAKER_SPOT", "true"),
            ("SAGEMAKER_MAX_RUNTIME", "18446744073709551615"),
        ],
        Some(ECR),
    );
    assert!(e[0].contains("is over policy.train.max_runtime"), "{e:?}");
}

#[test]
fn spec_keys_cannot_name_dot_channels_or_break_the_error_line() {
    let spec = spec::parse(
        "train:\n  inputs:\n    \"..\": s3://ci-staging/d/\n    \"\": s3://ci-staging/d/\n  tags:\n    \"a\\nERROR: forged\": x\n",
    )
    .expect("spec parses");
    let j = job(&[], Some(ECR));
    let s = Settings::collect(&j, Some(("spec.yaml", &spec)));
    let e: Vec<String> = resolve(&j, JobShape::default(), &config(""), &s)
        .expect_err("refused")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e.iter().all(|l| !l.contains('\n')), "{e:?}");
    assert!(
        e.iter()
            .filter(|l| l.contains("not a usable channel name"))
            .count()
            == 2,
        "{e:?}"
    );
}
