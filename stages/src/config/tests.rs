//! Loader tests: every problem is listed, typos never loosen the policy, defaults fail closed.

use std::path::Path;

use super::*;

const MINIMAL: &str = r#"
region = "us-east-1"
[paths]
builds_root = "/srv/sme/builds"
cache_root = "/srv/sme/cache"
[staging]
bucket = "ci-staging"
"#;

fn load(text: &str) -> Result<ExecutorConfig, ConfigError> {
    load_str(text, Path::new("executor.toml"))
}

fn problems(text: &str) -> Vec<String> {
    match load(text) {
        Err(ConfigError::Invalid { problems, .. }) => {
            problems.iter().map(|p| p.to_string()).collect()
        }
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn minimal_config_gets_closed_defaults() {
    let cfg = load(MINIMAL).expect("minimal config loads");
    assert_eq!(cfg.region, "us-east-1");
    assert_eq!(cfg.default_action, Action::Train);
    assert_eq!(cfg.paths.state_root, Path::new("/srv/sme/builds/.state"));
    assert_eq!(cfg.staging.prefix, "sagemaker-executor");
    assert_eq!(
        cfg.train.output_path,
        "s3://ci-staging/sagemaker-executor/output"
    );
    // Fail closed: only train, only the default instance type, one instance, only ECR.
    assert_eq!(
        cfg.policy
            .allowed_actions
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![Action::Train]
    );
    assert!(cfg.policy.train.instance_types.allows("ml.m5.large"));
    assert!(!cfg.policy.train.instance_types.allows("ml.p5.48xlarge"));
    assert_eq!(cfg.policy.train.max_instance_count, 1);
    assert!(
        cfg.policy
            .train
            .images
            .allows("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/x:1")
    );
    assert!(!cfg.policy.train.images.allows("docker.io/python:3"));
    assert!(cfg.policy.train.buckets.allows("ci-staging"));
    assert!(!cfg.policy.train.buckets.allows("other"));
    assert!(cfg.fargate.is_none());
}

#[test]
fn every_unknown_key_and_error_is_listed() {
    let text = format!(
        "{MINIMAL}\nregoin = \"x\"\n[policy]\nallowed_action = [\"train\"]\n[policy.train]\ninstanse_types = [\"ml.*\"]\nmax_instance_count = \"four\"\n[aws]\nmax_attempts = 0\n"
    );
    let p = problems(&text);
    let joined = p.join("\n");
    assert!(joined.contains("regoin: unknown key"), "{joined}");
    assert!(
        joined.contains("policy.allowed_action: unknown key"),
        "{joined}"
    );
    assert!(
        joined.contains("policy.train.instanse_types: unknown key"),
        "{joined}"
    );
    assert!(
        joined.contains("policy.train.max_instance_count"),
        "{joined}"
    );
    assert!(
        joined.contains("aws.max_attempts: must be at least 1"),
        "{joined}"
    );
    assert_eq!(p.len(), 5, "{joined}");
}

#[test]
fn a_policy_typo_is_an_error_never_a_looser_policy() {
    let text = format!("{MINIMAL}\n[policy.train]\nmax_instanc_count = 64\n");
    let p = problems(&text);
    assert_eq!(
        p,
        vec![
            "policy.train.max_instanc_count: unknown key (check the spelling; unknown keys are never ignored)"
        ]
    );
}

#[test]
fn missing_required_values_and_bad_values_are_all_reported() {
    let text = r#"
default_action = "training"
[paths]
builds_root = "relative/builds"
[staging]
bucket = "Bad_Bucket"
[train]
instance_type = "ml.m5.huge"
role_arn = "not-an-arn"
output_path = "/local/dir"
[policy]
allowed_actions = ["train", "fly"]
[policy.train]
instance_types = ["ml.[m5"]
"#;
    let joined = problems(text).join("\n");
    for needle in [
        "region: is required",
        "default_action: unknown action \"training\"",
        "paths.builds_root: \"relative/builds\" must be an absolute path",
        "paths.cache_root: is required",
        "staging.bucket: \"Bad_Bucket\" is not a valid S3 bucket name",
        "train.instance_type: \"ml.m5.huge\" is not a SageMaker training instance type",
        "train.role_arn: \"not-an-arn\" is not an IAM role ARN",
        "train.output_path: \"/local/dir\" must be an s3:// URI",
        "policy.allowed_actions: unknown action \"fly\"",
        "policy.train.instance_types: \"ml.[m5\" is not a valid pattern",
    ] {
        assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
    }
}

#[test]
fn syntax_errors_name_the_position() {
    match load("region = \n") {
        Err(ConfigError::Syntax { message, .. }) => {
            assert!(message.contains("line 1"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn fargate_section_requires_its_network() {
    let text = format!("{MINIMAL}\n[fargate]\ncluster = \"ci\"\n");
    let joined = problems(&text).join("\n");
    for key in [
        "fargate.subnets",
        "fargate.security_groups",
        "fargate.execution_role_arn",
        "fargate.helper_image",
    ] {
        assert!(joined.contains(&format!("{key}: is required")), "{joined}");
    }
}

#[test]
fn default_runtime_over_the_policy_cap_is_refused() {
    let text = format!("{MINIMAL}\n[train]\nmax_runtime = \"48h\"\n");
    let joined = problems(&text).join("\n");
    assert!(
        joined.contains("train.max_runtime: default 2days is over policy.train.max_runtime 1day"),
        "{joined}"
    );
}

#[test]
fn fargate_helper_command_defaults_to_the_binary_name_and_refuses_empty_lists() {
    let network = "[fargate]\ncluster = \"ci\"\nsubnets = [\"subnet-1\"]\nsecurity_groups = [\"sg-1\"]\nexecution_role_arn = \"arn:aws:iam::123456789012:role/Exec\"\nhelper_image = \"helper:1\"\n";
    let cfg = load_str(&format!("{MINIMAL}\n{network}"), Path::new("t.toml")).expect("valid");
    let fargate = cfg.fargate.expect("fargate section");
    assert_eq!(
        fargate.helper_command,
        vec!["sagemaker-executor".to_owned()]
    );
    let cfg = load_str(
        &format!("{MINIMAL}\n{network}helper_command = [\"/opt/sme/bin/sagemaker-executor\"]\n"),
        Path::new("t.toml"),
    )
    .expect("valid");
    assert_eq!(
        cfg.fargate.expect("fargate").helper_command,
        vec!["/opt/sme/bin/sagemaker-executor".to_owned()]
    );
    for bad in ["[]", "[\"\"]"] {
        let joined = problems(&format!("{MINIMAL}\n{network}helper_command = {bad}\n")).join("\n");
        assert!(
            joined.contains("fargate.helper_command: must be a non-empty list"),
            "{bad}: {joined}"
        );
    }
}
