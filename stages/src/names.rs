//! Shapes of AWS names and values that jobs and admins write: instance types, role ARNs, ECR
//! image references, S3 URIs, and the deterministic resource names this executor creates. A
//! leaf: config, settings and the actions all read it, and it reads none of them.

use std::sync::LazyLock;

use regex::Regex;

/// SageMaker training instance families and the sizes each offers.
const TRAINING_INSTANCES: &[(&str, &[&str])] = &[
    (
        "m4",
        &["xlarge", "2xlarge", "4xlarge", "10xlarge", "16xlarge"],
    ),
    (
        "m5",
        &[
            "large", "xlarge", "2xlarge", "4xlarge", "12xlarge", "24xlarge",
        ],
    ),
    (
        "m6i",
        &[
            "large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge",
            "32xlarge",
        ],
    ),
    (
        "m7i",
        &[
            "large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge",
            "48xlarge",
        ],
    ),
    ("c4", &["xlarge", "2xlarge", "4xlarge", "8xlarge"]),
    (
        "c5",
        &["xlarge", "2xlarge", "4xlarge", "9xlarge", "18xlarge"],
    ),
    (
        "c5n",
        &["xlarge", "2xlarge", "4xlarge", "9xlarge", "18xlarge"],
    ),
    (
        "c6i",
        &[
            "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge",
            "32xlarge",
        ],
    ),
    (
        "c7i",
        &[
            "large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge",
            "48xlarge",
        ],
    ),
    (
        "r5",
        &[
            "large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge",
        ],
    ),
    (
        "r5d",
        &[
            "large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge",
        ],
    ),
    (
        "g4dn",
        &[
            "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge",
        ],
    ),
    (
        "g5",
        &[
            "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge",
            "48xlarge",
        ],
    ),
    (
        "g6",
        &[
            "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge",
            "48xlarge",
        ],
    ),
    (
        "g6e",
        &[
            "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge",
            "48xlarge",
        ],
    ),
    ("p3", &["2xlarge", "8xlarge", "16xlarge"]),
    ("p3dn", &["24xlarge"]),
    ("p4d", &["24xlarge"]),
    ("p4de", &["24xlarge"]),
    ("p5", &["48xlarge"]),
    ("p5e", &["48xlarge"]),
    ("p5en", &["48xlarge"]),
    ("trn1", &["2xlarge", "32xlarge"]),
    ("trn1n", &["32xlarge"]),
    ("trn2", &["48xlarge"]),
];

/// Whether `t` is a SageMaker training instance type such as `ml.m5.large`.
pub fn is_known_instance_type(t: &str) -> bool {
    let mut parts = t.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("ml"), Some(family), Some(size), None) => TRAINING_INSTANCES
            .iter()
            .any(|(f, sizes)| *f == family && sizes.contains(&size)),
        _ => false,
    }
}

// ASCII-only classes and unbounded repeats, with the length limits checked in code: Unicode
// `\w` under a bounded repeat such as `{0,127}` compiles to an NFA of several MB whose search
// state then stays resident for the whole wait (measured with massif: 13 MB of a 15 MB heap).
static ROLE_ARN: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"^(?-u)arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]+$").ok()
});
static ECR_IMAGE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"^(?-u)[0-9]{12}\.dkr\.ecr(-fips)?\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[a-z0-9]+(?:[._/-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?(@sha256:[0-9a-f]+)?$",
    )
    .ok()
});

/// Whether `s` is an IAM role ARN.
pub fn is_role_arn(s: &str) -> bool {
    let name_len = s.split_once(":role/").map_or(0, |(_, n)| n.len());
    (1..=512).contains(&name_len) && ROLE_ARN.as_ref().is_some_and(|r| r.is_match(s))
}

/// Whether `s` is an image in an ECR registry (SageMaker training only pulls from ECR).
pub fn is_ecr_image(s: &str) -> bool {
    let (name, digest) = s.split_once('@').map_or((s, None), |(n, d)| (n, Some(d)));
    let tag_len = name
        .rsplit_once('/')
        .and_then(|(_, last)| last.split_once(':'))
        .map_or(0, |(_, t)| t.len());
    let digest_ok = digest.is_none_or(|d| d.strip_prefix("sha256:").is_some_and(|h| h.len() == 64));
    tag_len <= 128 && digest_ok && ECR_IMAGE.as_ref().is_some_and(|r| r.is_match(s))
}

/// An image reference as a registry reads it: Docker Hub short names get their implicit
/// registry and namespace (`python:3.12` -> `docker.io/library/python:3.12`,
/// `bitnami/redis` -> `docker.io/bitnami/redis`), so a policy written with full names matches
/// what the job wrote. Other references are returned as they are.
pub fn normalize_image(image: &str) -> String {
    let image = image.trim();
    match image.split_once('/') {
        None => format!("docker.io/library/{image}"),
        Some((first, _))
            if !first.contains('.') && !first.contains(':') && first != "localhost" =>
        {
            format!("docker.io/{image}")
        }
        Some(_) => image.to_owned(),
    }
}

/// Why an image reference is unusable, if it is: empty, too long, whitespace or control
/// characters, `..` or empty path segments.
pub fn image_problem(image: &str) -> Option<&'static str> {
    if image.is_empty() {
        return Some("is empty");
    }
    if image.len() > 512 {
        return Some("is longer than 512 characters");
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("contains whitespace or control characters");
    }
    let name = image.split(['@']).next().unwrap_or(image);
    if name
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Some("has an empty, `.` or `..` path segment");
    }
    None
}

/// The AWS partition of `region`: `aws-us-gov` for GovCloud, `aws-cn` for China, else `aws`.
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("cn-") {
        "aws-cn"
    } else {
        "aws"
    }
}

/// The AWS console's origin for `region` (GovCloud and China have consoles of their own).
pub fn console_origin(region: &str) -> String {
    match partition(region) {
        "aws-us-gov" => "https://console.amazonaws-us-gov.com".to_owned(),
        "aws-cn" => "https://console.amazonaws.cn".to_owned(),
        _ => format!("https://{region}.console.aws.amazon.com"),
    }
}

/// Geographic areas of region names in the partitions [`partition`] knows (`us-gov` before
/// `us`, so GovCloud is matched whole).
const REGION_AREAS: &[&str] = &[
    "us-gov", "us", "eu", "ap", "sa", "ca", "me", "af", "il", "mx", "cn",
];
/// The directions region names use.
const REGION_DIRECTIONS: &[&str] = &[
    "north",
    "south",
    "east",
    "west",
    "central",
    "northeast",
    "northwest",
    "southeast",
    "southwest",
];

/// Why `region` is not an AWS region name, if it is not: `<area>-<direction>-<digit>` with a
/// known area and direction (`us-east-1`, `us-gov-west-1`, `cn-north-1`, `ap-southeast-4`).
/// The shape, not a list of today's regions, so a region opened after this release still loads;
/// `doctor` then checks that the region answers.
pub fn region_problem(region: &str) -> Option<&'static str> {
    let rest = REGION_AREAS
        .iter()
        .find_map(|area| region.strip_prefix(area).and_then(|r| r.strip_prefix('-')));
    let shaped = rest
        .and_then(|r| r.rsplit_once('-'))
        .is_some_and(|(direction, number)| {
            REGION_DIRECTIONS.contains(&direction)
                && number.len() == 1
                && number.bytes().all(|b| (b'1'..=b'9').contains(&b))
        });
    (!shaped).then_some(
        "is not an AWS region name (like us-east-1, eu-west-1, us-gov-west-1, cn-north-1)",
    )
}

/// The partition an ARN names (`arn:<partition>:...`).
pub fn arn_partition(arn: &str) -> Option<&str> {
    arn.strip_prefix("arn:")?.split(':').next()
}

/// The kinds of EC2 ids the `[fargate]` network names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ec2IdKind {
    /// `subnet-...`.
    Subnet,
    /// `sg-...`.
    SecurityGroup,
}

impl Ec2IdKind {
    fn prefix(self) -> &'static str {
        match self {
            Ec2IdKind::Subnet => "subnet",
            Ec2IdKind::SecurityGroup => "sg",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Ec2IdKind::Subnet => "subnet id",
            Ec2IdKind::SecurityGroup => "security group id",
        }
    }
}

/// Why `id` is not an EC2 id of `kind` (`subnet-`/`sg-` and 8 or 17 lowercase hex digits), if
/// it is not; names the kind of id it is instead when it has another kind's prefix (a VPC id
/// given as a subnet is the usual mistake).
pub fn ec2_id_problem(id: &str, kind: Ec2IdKind) -> Option<String> {
    let hex = |s: &str| {
        (s.len() == 8 || s.len() == 17)
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let suffix = |prefix: &str| id.strip_prefix(prefix).and_then(|r| r.strip_prefix('-'));
    if suffix(kind.prefix()).is_some_and(hex) {
        return None;
    }
    let other = [
        ("vpc", "a VPC id"),
        ("subnet", "a subnet id"),
        ("sg", "a security group id"),
    ]
    .into_iter()
    .find(|(prefix, _)| *prefix != kind.prefix() && suffix(prefix).is_some());
    Some(match other {
        Some((_, what)) => format!(
            "{id:?} is {what}, not a {}: list the {} ids ({}-...)",
            kind.noun(),
            kind.noun().trim_end_matches(" id"),
            kind.prefix()
        ),
        None => format!(
            "{id:?} is not a {} ({}- and 8 or 17 lowercase hex digits)",
            kind.noun(),
            kind.prefix()
        ),
    })
}

/// Fargate's CPU sizes (units), for messages.
pub const FARGATE_CPUS: &[u32] = &[256, 512, 1024, 2048, 4096, 8192, 16384];

/// Whether `memory` MiB is one of Fargate's memory sizes for `cpu` units (an unknown CPU size
/// fits nothing).
pub fn fargate_memory_fits(cpu: u32, memory: u32) -> bool {
    let (lo, hi, step) = match cpu {
        256 => return [512, 1024, 2048].contains(&memory),
        512 => (1024, 4096, 1024),
        1024 => (2048, 8192, 1024),
        2048 => (4096, 16384, 1024),
        4096 => (8192, 30720, 1024),
        8192 => (16384, 61440, 4096),
        16384 => (32768, 122880, 8192),
        _ => return false,
    };
    (lo..=hi).contains(&memory) && (memory - lo).is_multiple_of(step)
}

/// Whether `s` looks like `s3://bucket[/key]`.
pub fn is_s3_uri(s: &str) -> bool {
    s3_bucket(s).is_some()
}

/// The bucket of an `s3://bucket/key` URI.
pub fn s3_bucket(s: &str) -> Option<&str> {
    let rest = s.strip_prefix("s3://")?;
    let bucket = rest.split('/').next()?;
    (!bucket.is_empty()).then_some(bucket)
}

/// Splits `s3://bucket/key` into bucket and key (key may be empty).
pub fn split_s3_uri(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then_some((bucket, key))
}

/// A name part from free text: ASCII letters and digits lowercased, anything else `-`, at most
/// `max` characters, no `-` at either end.
pub fn slug(s: &str, max: usize) -> String {
    let mapped: String = s
        .chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    mapped.trim_matches('-').to_owned()
}

/// The name of a resource this executor creates for a job's stage: deterministic, so a re-run of
/// the stage finds it, and within SageMaker's and ECS's 63-character `[A-Za-z0-9-]` rules.
pub fn resource_name(project_id: u64, job_id: u64, stage: &str) -> String {
    let mut name = format!("gl-{project_id}-{job_id}");
    let stage = stage.strip_prefix("step_").unwrap_or(stage);
    if stage != "build_script" && stage != "script" {
        let cleaned = slug(stage, 63);
        if !cleaned.is_empty() {
            name.push('-');
            name.push_str(&cleaned);
        }
    }
    name.truncate(63);
    name.trim_end_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_types() {
        assert!(is_known_instance_type("ml.m5.large"));
        assert!(is_known_instance_type("ml.p5.48xlarge"));
        assert!(!is_known_instance_type("ml.p5.large"));
        assert!(!is_known_instance_type("m5.large"));
        assert!(!is_known_instance_type("ml.m5.large.x"));
        assert!(!is_known_instance_type("ml.z9.large"));
    }

    #[test]
    fn ecr_images() {
        assert!(is_ecr_image(
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/train:1.2"
        ));
        assert!(is_ecr_image(&format!(
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/x@sha256:{}",
            "a".repeat(64)
        )));
        assert!(!is_ecr_image("python:3.12"));
        assert!(!is_ecr_image("docker.io/library/python:3.12"));
        assert!(!is_ecr_image(
            "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.io/x"
        ));
    }

    #[test]
    fn every_partition_has_its_console() {
        assert_eq!(partition("eu-west-1"), "aws");
        assert_eq!(partition("us-gov-west-1"), "aws-us-gov");
        assert_eq!(partition("cn-north-1"), "aws-cn");
        assert_eq!(
            console_origin("eu-west-1"),
            "https://eu-west-1.console.aws.amazon.com"
        );
        assert_eq!(
            console_origin("us-gov-east-1"),
            "https://console.amazonaws-us-gov.com"
        );
        assert_eq!(
            console_origin("cn-northwest-1"),
            "https://console.amazonaws.cn"
        );
        assert!(is_role_arn("arn:aws-us-gov:iam::123456789012:role/x"));
        assert!(is_role_arn("arn:aws-cn:iam::123456789012:role/x"));
        assert!(is_ecr_image(
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/ml/x:1"
        ));
        assert!(is_ecr_image(
            "123456789012.dkr.ecr.us-gov-west-1.amazonaws.com/ml/x:1"
        ));
    }

    #[test]
    fn docker_hub_short_names_are_normalized() {
        assert_eq!(
            normalize_image("python:3.12-slim"),
            "docker.io/library/python:3.12-slim"
        );
        assert_eq!(
            normalize_image("bitnami/redis:7"),
            "docker.io/bitnami/redis:7"
        );
        assert_eq!(
            normalize_image("public.ecr.aws/docker/library/alpine:3"),
            "public.ecr.aws/docker/library/alpine:3"
        );
        assert_eq!(normalize_image("localhost/x:1"), "localhost/x:1");
        assert_eq!(normalize_image("host:5000/x"), "host:5000/x");
        assert_eq!(
            image_problem("a/../b:1"),
            Some("has an empty, `.` or `..` path segment")
        );
        assert_eq!(
            image_problem("a//b"),
            Some("has an empty, `.` or `..` path segment")
        );
        assert_eq!(
            image_problem("a b"),
            Some("contains whitespace or control characters")
        );
        assert_eq!(image_problem(""), Some("is empty"));
        assert_eq!(image_problem("docker.io/library/python:3"), None);
    }

    #[test]
    fn arns_and_uris() {
        assert!(is_role_arn("arn:aws:iam::123456789012:role/SageMaker-Exec"));
        assert!(!is_role_arn("arn:aws:iam::123456789012:user/bob"));
        assert!(!is_role_arn(&format!(
            "arn:aws:iam::123456789012:role/{}",
            "r".repeat(513)
        )));
        assert_eq!(split_s3_uri("s3://b/k/x"), Some(("b", "k/x")));
        assert_eq!(split_s3_uri("s3://b"), Some(("b", "")));
        assert_eq!(split_s3_uri("s3:///k"), None);
        assert_eq!(split_s3_uri("https://b/k"), None);
    }

    #[test]
    fn resource_names_are_deterministic_and_valid() {
        assert_eq!(resource_name(7, 42, "build_script"), "gl-7-42");
        assert_eq!(resource_name(7, 42, "step_script"), "gl-7-42");
        assert_eq!(resource_name(7, 42, "step_release"), "gl-7-42-release");
        let long = resource_name(u64::MAX, u64::MAX, &format!("step_{}", "x".repeat(80)));
        assert!(long.len() <= 63 && !long.ends_with('-'));
    }

    #[test]
    fn region_names() {
        for ok in [
            "us-east-1",
            "eu-west-1",
            "us-gov-west-1",
            "cn-north-1",
            "cn-northwest-1",
            "ap-southeast-4",
            "il-central-1",
            "mx-central-1",
        ] {
            assert_eq!(region_problem(ok), None, "{ok}");
        }
        for bad in [
            "us-east-9x",
            "useast1",
            "us-east-0",
            "US-EAST-1",
            "us-east-1 ",
            "eu-middle-1",
            "xx-east-1",
            "us-gov-1",
            "",
        ] {
            assert!(region_problem(bad).is_some(), "{bad:?}");
        }
        assert_eq!(
            arn_partition("arn:aws-cn:iam::123456789012:role/x"),
            Some("aws-cn")
        );
        assert_eq!(arn_partition("role/x"), None);
    }

    #[test]
    fn ec2_ids() {
        assert_eq!(ec2_id_problem("subnet-0123abcd", Ec2IdKind::Subnet), None);
        assert_eq!(
            ec2_id_problem("subnet-0123456789abcdef0", Ec2IdKind::Subnet),
            None
        );
        assert_eq!(
            ec2_id_problem("sg-0123456789abcdef0", Ec2IdKind::SecurityGroup),
            None
        );
        let vpc = ec2_id_problem("vpc-0123456789abcdef0", Ec2IdKind::Subnet).unwrap_or_default();
        assert!(vpc.contains("is a VPC id, not a subnet id"), "{vpc}");
        let sub = ec2_id_problem("subnet-0123abcd", Ec2IdKind::SecurityGroup).unwrap_or_default();
        assert!(
            sub.contains("is a subnet id, not a security group id"),
            "{sub}"
        );
        for bad in [
            "subnet-1",
            "subnet-0123ABCD",
            "subnet-0123abcdx",
            "default",
            "sg-",
        ] {
            assert!(
                ec2_id_problem(bad, Ec2IdKind::Subnet).is_some()
                    && ec2_id_problem(bad, Ec2IdKind::SecurityGroup).is_some(),
                "{bad}"
            );
        }
    }

    #[test]
    fn fargate_sizes() {
        assert!(fargate_memory_fits(256, 512));
        assert!(!fargate_memory_fits(256, 4096));
        assert!(fargate_memory_fits(1024, 3072));
        assert!(!fargate_memory_fits(1024, 3000));
        assert!(fargate_memory_fits(16384, 122880));
        assert!(!fargate_memory_fits(300, 1024));
        assert!(
            FARGATE_CPUS
                .iter()
                .all(|&cpu| (512..=122880).any(|m| fargate_memory_fits(cpu, m)))
        );
    }
}
