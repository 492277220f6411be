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
    let network = "[fargate]\ncluster = \"ci\"\nsubnets = [\"subnet-0123456789abcdef0\"]\nsecurity_groups = [\"sg-0123abcd\"]\nexecution_role_arn = \"arn:aws:iam::123456789012:role/Exec\"\nhelper_image = \"helper:1\"\n";
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

/// A `[fargate]` table that passes every rule; tests replace one line of it.
const FARGATE: &str = r#"
[fargate]
cluster = "ci"
subnets = ["subnet-0123456789abcdef0", "subnet-0123abcd"]
security_groups = ["sg-0123456789abcdef0"]
execution_role_arn = "arn:aws:iam::123456789012:role/Exec"
task_role_arn = "arn:aws:iam::123456789012:role/Task"
helper_image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/helper:1"
cpu = 1024
memory = 2048
"#;

/// The problems of [`MINIMAL`] plus [`FARGATE`] with `from` replaced by `to`, joined.
fn fargate_problems(from: &str, to: &str) -> String {
    assert!(FARGATE.contains(from), "{from}");
    problems(&format!("{MINIMAL}{}", FARGATE.replace(from, to))).join("\n")
}

#[test]
fn a_complete_fargate_table_loads() {
    let cfg = load(&format!("{MINIMAL}{FARGATE}")).expect("valid");
    let f = cfg.fargate.expect("fargate");
    assert_eq!(f.subnets.len(), 2);
    assert_eq!(f.stop_grace, Duration::from_secs(45));
}

#[test]
fn region_names_are_checked() {
    for bad in ["us-east-9x", "useast1", "US-EAST-1", "eu-middle-1"] {
        let joined = problems(&MINIMAL.replace("us-east-1", bad)).join("\n");
        assert!(
            joined.contains(&format!("region: {bad:?} is not an AWS region name")),
            "{joined}"
        );
    }
    for ok in ["eu-west-1", "us-gov-west-1", "cn-north-1", "ap-southeast-4"] {
        load(&MINIMAL.replace("us-east-1", ok)).expect(ok);
    }
}

#[test]
fn subnets_and_security_groups_need_their_id_shapes() {
    let joined = fargate_problems("\"subnet-0123abcd\"", "\"vpc-0123456789abcdef0\"");
    assert!(
        joined.contains(
            "fargate.subnets: \"vpc-0123456789abcdef0\" is a VPC id, not a subnet id: list the subnet ids (subnet-...)"
        ),
        "{joined}"
    );
    let joined = fargate_problems("\"subnet-0123abcd\"", "\"subnet-1\"");
    assert!(
        joined.contains("fargate.subnets: \"subnet-1\" is not a subnet id (subnet- and 8 or 17 lowercase hex digits)"),
        "{joined}"
    );
    let joined = fargate_problems("\"subnet-0123abcd\"", "\"subnet-0123456789abcdef0\"");
    assert!(
        joined.contains("fargate.subnets: \"subnet-0123456789abcdef0\" is listed twice"),
        "{joined}"
    );
    let joined = fargate_problems(
        "[\"sg-0123456789abcdef0\"]",
        "[\"default\", \"subnet-0123abcd\"]",
    );
    assert!(
        joined.contains("fargate.security_groups: \"default\" is not a security group id"),
        "{joined}"
    );
    assert!(
        joined.contains(
            "fargate.security_groups: \"subnet-0123abcd\" is a subnet id, not a security group id"
        ),
        "{joined}"
    );
    let six = (0..6)
        .map(|i| format!("\"sg-0000000{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let joined = fargate_problems("[\"sg-0123456789abcdef0\"]", &format!("[{six}]"));
    assert!(
        joined.contains("fargate.security_groups: 6 ids listed; a Fargate task takes at most 5"),
        "{joined}"
    );
}

#[test]
fn fargate_cpu_and_memory_must_be_a_fargate_size_within_the_policy() {
    let joined = fargate_problems("memory = 2048", "memory = 1000");
    assert!(
        joined.contains(
            "fargate.memory: 1000 MiB is not a valid Fargate memory size for 1024 CPU units"
        ),
        "{joined}"
    );
    let joined = fargate_problems("cpu = 1024", "cpu = 1000");
    assert!(
        joined.contains("fargate.cpu: 1000 is not a Fargate CPU size"),
        "{joined}"
    );
    let joined = problems(&format!(
        "{MINIMAL}{FARGATE}[policy.fargate]\nmax_cpu = 512\nmax_memory = 1024\n"
    ))
    .join("\n");
    assert!(
        joined.contains("fargate.cpu: default 1024 is over policy.fargate.max_cpu 512"),
        "{joined}"
    );
    assert!(
        joined.contains("fargate.memory: default 2048 is over policy.fargate.max_memory 1024"),
        "{joined}"
    );
}

#[test]
fn helper_image_must_be_a_usable_reference() {
    for (bad, why) in [
        ("\"\"", "fargate.helper_image: is required"),
        ("\"  \"", "fargate.helper_image: is required"),
        ("\"a//b:1\"", "has an empty, `.` or `..` path segment"),
        ("\"helper 1\"", "contains whitespace or control characters"),
    ] {
        let joined = fargate_problems(
            "\"123456789012.dkr.ecr.us-east-1.amazonaws.com/helper:1\"",
            bad,
        );
        assert!(joined.contains(why), "{bad}: {joined}");
    }
}

#[test]
fn role_arns_must_be_roles_in_the_regions_partition() {
    let joined = fargate_problems("role/Task\"", "user/Task\"");
    assert!(
        joined.contains(
            "fargate.task_role_arn: \"arn:aws:iam::123456789012:user/Task\" is not an IAM role ARN"
        ),
        "{joined}"
    );
    let text = format!("{MINIMAL}{FARGATE}[aws]\nassume_role_arn = \"arn:aws:iam::123456789012:role/Exec\"\n[train]\nrole_arn = \"arn:aws:iam::123456789012:role/T\"\n")
        .replace("us-east-1\"\n[paths]", "cn-north-1\"\n[paths]");
    let joined = problems(&text).join("\n");
    for key in [
        "train.role_arn",
        "fargate.execution_role_arn",
        "fargate.task_role_arn",
        "aws.assume_role_arn",
    ] {
        assert!(
            joined.contains(&format!("{key}: \"arn:aws:iam::")),
            "{key}: {joined}"
        );
    }
    assert!(
        joined.contains("is in partition aws, but region cn-north-1 is in aws-cn: roles must be arn:aws-cn:iam::..."),
        "{joined}"
    );
    // The same ARNs in the China partition load.
    load(&text.replace("arn:aws:iam::", "arn:aws-cn:iam::")).expect("aws-cn roles");
}

#[test]
fn train_defaults_are_checked_against_sagemaker_and_the_policy() {
    let text = format!(
        "{MINIMAL}[train]\nimage = \"python:3.12\"\ninstance_count = 3\nvolume_size_gb = 500\nstop_grace = \"0s\"\nlog_interval = \"0s\"\n[policy.train]\nmax_runtime = \"30days\"\n"
    );
    let joined = problems(&text).join("\n");
    for needle in [
        "train.image: \"python:3.12\" is not an ECR image",
        "train.instance_count: default 3 is over policy.train.max_instance_count 1",
        "train.volume_size_gb: default 500 is over policy.train.max_volume_size_gb 100",
        "train.stop_grace: 0s must be between 1s and 30m",
        "train.log_interval: intervals must be at least 1s",
        "policy.train.max_runtime: 30days is over SageMaker's limit of 28 days",
    ] {
        assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
    }
    let joined = problems(&format!("{MINIMAL}[train]\nstop_grace = \"2h\"\n")).join("\n");
    assert!(
        joined.contains("train.stop_grace: 2h must be between 1s and 30m"),
        "{joined}"
    );
    let joined = fargate_problems("memory = 2048", "memory = 2048\nstop_grace = \"0s\"");
    assert!(
        joined.contains("fargate.stop_grace: 0s must be between 1s and 30m"),
        "{joined}"
    );
}

#[test]
fn cluster_and_log_group_names_are_checked() {
    let joined = fargate_problems(
        "cluster = \"ci\"",
        "cluster = \"ci cluster\"\nlog_group = \"/a b\"",
    );
    assert!(
        joined.contains("fargate.cluster: \"ci cluster\" is not an ECS cluster name"),
        "{joined}"
    );
    assert!(
        joined.contains("fargate.log_group: \"/a b\" is not a CloudWatch Logs group name"),
        "{joined}"
    );
}

#[test]
fn the_shipped_example_configs_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    load_file(&root.join("runner-setup/sagemaker-executor.toml")).expect("runner-setup example");
    // The demo's placeholders are what tests/demo.sh fills in; the simulator's default VPC has
    // real-shaped ids like these.
    let demo = std::fs::read_to_string(root.join("tests/demo/executor.toml"))
        .expect("demo config")
        .replace("@ROOT@", "/srv/demo")
        .replace("@SUBNETS@", "[\"subnet-0123abcd\"]")
        .replace("@GROUPS@", "[\"sg-0123abcd\"]")
        .replace("@HELPER@", "/usr/local/bin/sagemaker-executor");
    load(&demo).expect("demo config");
}

#[test]
fn host_code_needs_an_unprivileged_local_user() {
    let base = "region = \"us-east-1\"\n[paths]\nbuilds_root = \"/b\"\ncache_root = \"/c\"\n[staging]\nbucket = \"ci-staging\"\n";
    for open in ["allow_after_script = true", "allow_hooks = true"] {
        let joined = problems(&format!("{base}[policy]\n{open}\n")).join("\n");
        assert!(
            joined.contains("local.user: is required when policy.allow_after_script or policy.allow_hooks is true"),
            "{joined}"
        );
    }
    let joined = problems(&format!("{base}[local]\nuser = \"root\"\n")).join("\n");
    assert!(joined.contains("local.user: \"root\" is root"), "{joined}");
    let joined = problems(&format!("{base}[local]\nuser = \"no-such-user-here\"\n")).join("\n");
    assert!(joined.contains("is not a user on this host"), "{joined}");
    let cfg = load(&format!(
        "{base}[local]\nuser = \"nobody\"\n[policy]\nallow_after_script = true\n"
    ))
    .expect("loads");
    let user = cfg.local_user.expect("a local user");
    assert_eq!((user.name.as_str(), user.uid != 0), ("nobody", true));
}

#[test]
fn watch_is_off_by_default_and_its_values_are_checked() {
    let cfg = load(MINIMAL).expect("minimal config loads");
    assert_eq!(cfg.watch, WatchSettings::default());
    assert_eq!(cfg.watch.safety_interval, Duration::from_secs(300));
    let cfg = load(&format!(
        "{MINIMAL}[watch]\nqueue_url = \"https://sqs.us-east-1.amazonaws.com/123456789012/runner-1\"\nsafety_interval = \"2m\"\nlive_tail = true\n"
    ))
    .expect("watch config loads");
    assert_eq!(
        cfg.watch.queue_url.as_deref(),
        Some("https://sqs.us-east-1.amazonaws.com/123456789012/runner-1")
    );
    assert_eq!(cfg.watch.safety_interval, Duration::from_secs(120));
    assert!(cfg.watch.live_tail);
    let found = problems(&format!(
        "{MINIMAL}[watch]\nqueue_url = \"runner-1\"\nsafety_interval = \"5s\"\nlive_tails = true\n"
    ));
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(
        found.iter().any(|p| p.starts_with("watch.queue_url:")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("watch.safety_interval:")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|p| p.starts_with("watch.live_tails:")),
        "{found:?}"
    );
}

#[test]
fn a_host_stage_reads_only_its_paths_and_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("executor.toml");
    let host_problems = |text: &str| -> Vec<String> {
        std::fs::write(&path, text).expect("write");
        match load_host_stage(&path) {
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            other => panic!("expected problems, got {other:?}"),
        }
    };
    // The policy is not read (prepare validated it): a broken one does not matter here.
    let broken_policy = format!("{MINIMAL}[policy]\nallowed_actions = 7\n");
    std::fs::write(&path, &broken_policy).expect("write");
    let host = load_host_stage(&path).expect("loads");
    assert_eq!(host.builds_root, Path::new("/srv/sme/builds"));
    assert_eq!(host.local_user, None);
    assert!(
        load_str(&broken_policy, &path).is_err(),
        "the whole file is invalid"
    );

    assert_eq!(
        host_problems(&format!("{broken_policy}[local]\nuser = \"root\"\n")),
        ["local.user: \"root\" is root; name an unprivileged user"]
    );
    let missing = host_problems(&format!("{MINIMAL}[local]\nuser = \"no-such-user-here\"\n"));
    assert!(
        missing.len() == 1 && missing[0].contains("is not a user on this host"),
        "{missing:?}"
    );
    assert_eq!(
        host_problems("[paths]\nbuilds_root = \"relative\"\n"),
        ["paths.builds_root: \"relative\" must be an absolute path"]
    );
    std::fs::write(&path, "[paths\n").expect("write");
    assert!(matches!(
        load_host_stage(&path),
        Err(ConfigError::Syntax { .. })
    ));
}
