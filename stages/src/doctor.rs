//! `doctor`: checks an executor config against the AWS account it points at, read-only.
//!
//! `validate` checks what needs no AWS; `doctor` asks AWS whether what the config names exists
//! and is usable: the credentials, the region, the staging bucket (encryption, public access,
//! expiry), the roles, the Fargate network, cluster, log group and helper image. Every check
//! is one [`Check`] line saying what is wrong and what to fix.
//!
//! # Guarantees
//! - Read-only: only Get, Describe, List and Head calls (and STS's own calls for an
//!   `[aws] assume_role_arn`); doctor never creates or changes anything.
//! - Every client comes from the executor's one SDK config ([`aws::sdk_config`]) and every error
//!   goes through its one classifier ([`AwsCallError`]).
//! - A check doctor cannot make (access denied to a read the executor itself never needs, a
//!   resource in another account) is a `warn` line, never a silent `ok`.

use std::fmt;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::aws::{self, errors::AwsCallError};
use crate::config::{CredentialsMode, ExecutorConfig};
use crate::names::{is_ecr_image, partition};

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// What the config names exists and is usable.
    Ok,
    /// Not broken, or not checkable from here, but worth fixing or checking by hand.
    Warn,
    /// Jobs will fail until this is fixed.
    Fail,
    /// Not configured, or not checkable because an earlier check failed.
    Skip,
}

/// One check's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked, e.g. `staging bucket` or `fargate.subnets`.
    pub name: String,
    /// What it found.
    pub status: Status,
    /// What was found (or why it was skipped).
    pub detail: String,
    /// What to do about it (empty for `ok` and `skip`).
    pub fix: String,
}

impl Check {
    fn ok(name: &str, detail: impl Into<String>) -> Check {
        Check::new(name, Status::Ok, detail.into(), String::new())
    }

    fn warn(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(name, Status::Warn, detail.into(), fix.into())
    }

    fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(name, Status::Fail, detail.into(), fix.into())
    }

    fn skip(name: &str, why: impl Into<String>) -> Check {
        Check::new(name, Status::Skip, why.into(), String::new())
    }

    fn new(name: &str, status: Status, detail: String, fix: String) -> Check {
        Check {
            name: name.to_owned(),
            status,
            detail,
            fix,
        }
    }
}

impl fmt::Display for Check {
    /// `ok   <check>[: <detail>]`, `FAIL <check>: <what is wrong> — <what to fix>`,
    /// `warn <check>: <what> — <what to do>`, `skip <check>: <why>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        write!(f, "{tag} {}", self.name)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        if !self.fix.is_empty() {
            write!(f, " — {}", self.fix)?;
        }
        Ok(())
    }
}

/// Whether every check passed (warnings and skips do not fail a run).
pub fn passed(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

/// Error codes that mean "these credentials may not read this": doctor then cannot tell.
const DENIED: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "Forbidden",
];

fn denied(e: &AwsCallError) -> bool {
    e.code().is_some_and(|c| DENIED.contains(&c))
}

/// The warning for a read the credentials may not make; the executor's own policy
/// (the `<NamePrefix>-executor` managed policy of runner-setup/cloudformation) grants none of
/// doctor's configuration reads.
fn cannot_read(name: &str, e: &AwsCallError, action: &str) -> Check {
    Check::warn(
        name,
        format!("could not check ({e})"),
        format!(
            "run doctor with credentials that may {action} (e.g. an admin's or ReadOnlyAccess)"
        ),
    )
}

fn call<T, E>(
    operation: &'static str,
    r: Result<T, SdkError<E, Response>>,
) -> Result<T, AwsCallError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    r.map_err(|e| AwsCallError::new(operation, e))
}

/// The checks after the credentials one, named for `skip` lines when the credentials fail.
const LATER: &[&str] = &[
    "staging bucket",
    "staging bucket encryption",
    "staging bucket public access",
    "staging bucket lifecycle",
    "role train.role_arn",
    "role aws.assume_role_arn",
    "fargate.subnets",
    "fargate.security_groups",
    "fargate.cluster",
    "fargate.log_group",
    "fargate.helper_image",
    "role fargate.execution_role_arn",
    "role fargate.task_role_arn",
];

/// The clients doctor reads with, all from the executor's one SDK config.
struct Clients {
    sdk: SdkConfig,
    sts: aws_sdk_sts::Client,
    s3: aws_sdk_s3::Client,
    iam: aws_sdk_iam::Client,
    ec2: aws_sdk_ec2::Client,
    ecs: aws_sdk_ecs::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
}

/// Runs every check of `cfg`, in order; `each` sees every line as soon as it is known (a slow
/// endpoint shows where it is slow).
pub async fn run(cfg: &ExecutorConfig, each: &mut dyn FnMut(&Check)) -> Vec<Check> {
    let mut out = Vec::new();
    let mut push = |c: Check| {
        each(&c);
        out.push(c);
    };
    // An interactive check: an endpoint that does not answer should fail in seconds, not after
    // `aws.max_attempts` backed-off tries.
    let sdk = aws::sdk_config(cfg)
        .await
        .to_builder()
        .retry_config(RetryConfig::standard().with_max_attempts(2))
        .build();
    let c = Clients {
        sts: aws_sdk_sts::Client::new(&sdk),
        s3: aws::s3_client(&sdk, cfg.aws.s3_force_path_style),
        iam: aws_sdk_iam::Client::new(&sdk),
        ec2: aws_sdk_ec2::Client::new(&sdk),
        ecs: aws_sdk_ecs::Client::new(&sdk),
        logs: aws_sdk_cloudwatchlogs::Client::new(&sdk),
        sdk,
    };

    let Some(account) = identity(&c, cfg, &mut push).await else {
        for name in LATER {
            push(Check::skip(name, "needs working credentials"));
        }
        push(Check::skip("OIDC provider", "needs working credentials"));
        return out;
    };
    staging(&c, cfg, &mut push).await;
    push(
        role(
            &c,
            &account,
            "train.role_arn",
            cfg.train.role_arn.as_deref(),
        )
        .await,
    );
    push(
        role(
            &c,
            &account,
            "aws.assume_role_arn",
            cfg.aws.assume_role_arn.as_deref(),
        )
        .await,
    );
    match &cfg.fargate {
        Some(f) => {
            for check in network(&c, &f.subnets, &f.security_groups).await {
                push(check);
            }
            push(cluster(&c, &f.cluster, cfg.policy.fargate.allow_spot).await);
            push(log_group(&c, &f.log_group).await);
            push(helper_image(&c, &f.helper_image).await);
            push(
                role(
                    &c,
                    &account,
                    "fargate.execution_role_arn",
                    Some(&f.execution_role_arn),
                )
                .await,
            );
            push(
                role(
                    &c,
                    &account,
                    "fargate.task_role_arn",
                    f.task_role_arn.as_deref(),
                )
                .await,
            );
        }
        None => {
            for name in LATER.iter().filter(|n| n.contains("fargate.")) {
                push(Check::skip(name, "no [fargate] section"));
            }
        }
    }
    push(oidc(&c, &account, cfg).await);
    out
}

/// `region` and `credentials` (STS GetCallerIdentity); the account when both answer.
async fn identity(
    c: &Clients,
    cfg: &ExecutorConfig,
    push: &mut impl FnMut(Check),
) -> Option<String> {
    let region = &cfg.region;
    match call(
        "GetCallerIdentity",
        c.sts.get_caller_identity().send().await,
    ) {
        Ok(id) => {
            push(Check::ok(
                "region",
                format!("{region} answers (partition {})", partition(region)),
            ));
            let account = id.account().unwrap_or_default().to_owned();
            push(Check::ok(
                "credentials",
                format!("account {account} as {}", id.arn().unwrap_or("(no ARN)")),
            ));
            Some(account)
        }
        // A service error is an answer: the region is there, the credentials are not good.
        Err(e) if e.code().is_some() => {
            push(Check::ok(
                "region",
                format!("{region} answers (partition {})", partition(region)),
            ));
            push(Check::fail(
                "credentials",
                e.to_string(),
                credentials_fix(cfg),
            ));
            None
        }
        // No answer at all: an unreachable endpoint, or no credentials to sign the request
        // with (the SDK reports both before anything reaches AWS).
        Err(e) => {
            push(Check::fail(
                "region",
                format!("no answer from AWS in {region}, or nothing to sign with ({e})"),
                format!(
                    "check `region`, the host's network (proxy, firewall, VPC endpoint for STS), and {}",
                    credentials_fix(cfg)
                ),
            ));
            push(Check::skip("credentials", "see the region line"));
            None
        }
    }
}

fn credentials_fix(cfg: &ExecutorConfig) -> String {
    let base = "give the runner host credentials (instance profile, environment or profile)";
    match &cfg.aws.assume_role_arn {
        Some(role) => format!("{base} that may sts:AssumeRole {role} (aws.assume_role_arn)"),
        None => base.to_owned(),
    }
}

/// The staging bucket: exists, encrypted, public access blocked, expiry on the prefix.
async fn staging(c: &Clients, cfg: &ExecutorConfig, push: &mut impl FnMut(Check)) {
    let bucket = &cfg.staging.bucket;
    let head = call("HeadBucket", c.s3.head_bucket().bucket(bucket).send().await);
    let reachable = match head {
        Ok(_) => {
            push(Check::ok("staging bucket", format!("s3://{bucket} exists")));
            true
        }
        Err(e) if matches!(e.code(), Some("NotFound" | "NoSuchBucket")) => {
            push(Check::fail(
                "staging bucket",
                format!("s3://{bucket} does not exist"),
                "create it (runner-setup/cloudformation creates one with encryption and expiry) or fix staging.bucket",
            ));
            false
        }
        Err(e) if denied(&e) => {
            push(Check::fail(
                "staging bucket",
                format!("s3://{bucket} is not reachable with these credentials ({e})"),
                format!(
                    "allow s3:ListBucket on arn:{}:s3:::{bucket} (the executor policy of runner-setup/cloudformation), or fix staging.bucket if it is another account's",
                    partition(&cfg.region)
                ),
            ));
            false
        }
        Err(e) => {
            push(Check::fail(
                "staging bucket",
                format!("s3://{bucket}: {e}"),
                format!(
                    "check staging.bucket and that the bucket is in {}",
                    cfg.region
                ),
            ));
            false
        }
    };
    if !reachable {
        for name in [
            "staging bucket encryption",
            "staging bucket public access",
            "staging bucket lifecycle",
        ] {
            push(Check::skip(name, "the bucket is not reachable"));
        }
        return;
    }
    push(encryption(c, cfg).await);
    push(public_access(c, bucket).await);
    push(lifecycle(c, bucket, &cfg.staging.prefix).await);
}

/// Whether two ways of naming a KMS key (ARN, key id, alias) name the same key, as far as the
/// text shows.
fn same_key(a: &str, b: &str) -> bool {
    let tail = |k: &str| {
        k.rsplit_once(":key/")
            .map(|(_, id)| id.to_owned())
            .or_else(|| k.rsplit_once(':').map(|(_, alias)| alias.to_owned()))
            .unwrap_or_else(|| k.to_owned())
    };
    a == b || tail(a) == tail(b)
}

async fn encryption(c: &Clients, cfg: &ExecutorConfig) -> Check {
    const NAME: &str = "staging bucket encryption";
    let bucket = &cfg.staging.bucket;
    let got = call(
        "GetBucketEncryption",
        c.s3.get_bucket_encryption().bucket(bucket).send().await,
    );
    let out = match got {
        Ok(out) => out,
        Err(e) if e.code() == Some("ServerSideEncryptionConfigurationNotFoundError") => {
            return Check::fail(
                NAME,
                format!("s3://{bucket} has no default encryption"),
                "set default encryption (SSE-S3, or SSE-KMS with staging.kms_key_id's key) on the bucket",
            );
        }
        Err(e) if denied(&e) => return cannot_read(NAME, &e, "s3:GetEncryptionConfiguration"),
        Err(e) => {
            return Check::fail(
                NAME,
                e.to_string(),
                "check the bucket's encryption settings",
            );
        }
    };
    let default = out
        .server_side_encryption_configuration()
        .and_then(|conf| conf.rules().first())
        .and_then(|rule| rule.apply_server_side_encryption_by_default());
    let Some(default) = default else {
        return Check::fail(
            NAME,
            format!("s3://{bucket} has no default encryption rule"),
            "set default encryption (SSE-S3 or SSE-KMS) on the bucket",
        );
    };
    let bucket_key = default.kms_master_key_id();
    let what = match default.sse_algorithm().as_str() {
        "AES256" => "SSE-S3".to_owned(),
        "aws:kms" | "aws:kms:dsse" => format!(
            "SSE-KMS with {}",
            bucket_key.unwrap_or("the AWS managed key aws/s3")
        ),
        // An algorithm newer than this release: reported as S3 names it.
        other => other.to_owned(),
    };
    match (&cfg.staging.kms_key_id, bucket_key) {
        (None, _) => Check::ok(NAME, what),
        (Some(want), Some(have)) if same_key(want, have) => {
            Check::ok(NAME, format!("{what}, the key of staging.kms_key_id"))
        }
        (Some(want), _) => Check::warn(
            NAME,
            format!("{what}; staging.kms_key_id is {want}"),
            "objects the executor writes use staging.kms_key_id; make it the bucket's default key too, so what others write under the prefix is encrypted alike",
        ),
    }
}

async fn public_access(c: &Clients, bucket: &str) -> Check {
    const NAME: &str = "staging bucket public access";
    let got = call(
        "GetPublicAccessBlock",
        c.s3.get_public_access_block().bucket(bucket).send().await,
    );
    match got {
        Ok(out) => {
            let conf = out.public_access_block_configuration();
            let open: Vec<&str> = [
                ("BlockPublicAcls", conf.and_then(|c| c.block_public_acls())),
                (
                    "IgnorePublicAcls",
                    conf.and_then(|c| c.ignore_public_acls()),
                ),
                (
                    "BlockPublicPolicy",
                    conf.and_then(|c| c.block_public_policy()),
                ),
                (
                    "RestrictPublicBuckets",
                    conf.and_then(|c| c.restrict_public_buckets()),
                ),
            ]
            .into_iter()
            .filter(|(_, on)| *on != Some(true))
            .map(|(setting, _)| setting)
            .collect();
            if open.is_empty() {
                Check::ok(NAME, "blocked (all four settings on)")
            } else {
                Check::fail(
                    NAME,
                    format!("{} off on s3://{bucket}", open.join(", ")),
                    "turn on all four Block Public Access settings of the bucket",
                )
            }
        }
        Err(e) if e.code() == Some("NoSuchPublicAccessBlockConfiguration") => Check::warn(
            NAME,
            format!("s3://{bucket} has no Block Public Access settings of its own"),
            "turn them on for the bucket (the account-wide setting may cover it; doctor does not read that)",
        ),
        Err(e) if denied(&e) => cannot_read(NAME, &e, "s3:GetBucketPublicAccessBlock"),
        Err(e) => Check::fail(
            NAME,
            e.to_string(),
            "check the bucket's Block Public Access settings",
        ),
    }
}

async fn lifecycle(c: &Clients, bucket: &str, prefix: &str) -> Check {
    const NAME: &str = "staging bucket lifecycle";
    let fix = format!(
        "add a lifecycle rule expiring objects under {prefix}/ after a few days longer than your longest job (what a killed cleanup left behind)"
    );
    let got = call(
        "GetBucketLifecycleConfiguration",
        c.s3.get_bucket_lifecycle_configuration()
            .bucket(bucket)
            .send()
            .await,
    );
    let out = match got {
        Ok(out) => out,
        Err(e) if e.code() == Some("NoSuchLifecycleConfiguration") => {
            return Check::warn(NAME, format!("s3://{bucket} has no lifecycle rules"), fix);
        }
        Err(e) if denied(&e) => return cannot_read(NAME, &e, "s3:GetLifecycleConfiguration"),
        Err(e) => return Check::warn(NAME, e.to_string(), fix),
    };
    let staged = format!("{prefix}/");
    let rule = out.rules().iter().find(|r| {
        let rule_prefix = r
            .filter()
            .and_then(|f| f.prefix())
            .or(legacy_prefix(r))
            .unwrap_or_default();
        r.status().as_str() == "Enabled"
            && staged.starts_with(rule_prefix)
            && r.filter()
                .is_none_or(|f| f.tag().is_none() && f.and().is_none())
            && r.expiration()
                .is_some_and(|x| x.days().is_some() || x.date().is_some())
    });
    match rule {
        Some(r) => Check::ok(
            NAME,
            format!(
                "objects under {staged} expire{} (rule {})",
                r.expiration()
                    .and_then(|x| x.days())
                    .map(|d| format!(" after {d} days"))
                    .unwrap_or_default(),
                r.id().unwrap_or("without id")
            ),
        ),
        None => Check::warn(
            NAME,
            format!("no enabled expiry rule covers {staged} in s3://{bucket}"),
            fix,
        ),
    }
}

/// The rule-level `Prefix` of rules written before filters existed: S3 still returns them.
#[expect(
    deprecated,
    reason = "old buckets still carry rule-level prefixes; reading them is the point"
)]
fn legacy_prefix(r: &aws_sdk_s3::types::LifecycleRule) -> Option<&str> {
    r.prefix()
}

/// The role name of a role ARN (`arn:...:role/path/name` -> `name`) and its account.
fn role_parts(arn: &str) -> Option<(&str, &str)> {
    let account = arn.split(':').nth(4)?;
    let name = arn.rsplit('/').next()?;
    Some((account, name))
}

async fn role(c: &Clients, account: &str, key: &str, arn: Option<&str>) -> Check {
    let name = format!("role {key}");
    let Some(arn) = arn else {
        return Check::skip(&name, "not set");
    };
    let Some((role_account, role_name)) = role_parts(arn) else {
        return Check::fail(
            &name,
            format!("{arn} is not a role ARN"),
            format!("fix {key}"),
        );
    };
    if role_account != account {
        return Check::warn(
            &name,
            format!("{arn} is in account {role_account}; these credentials are in {account}"),
            "check it in that account (doctor reads roles of its own account only)",
        );
    }
    match call(
        "GetRole",
        c.iam.get_role().role_name(role_name).send().await,
    ) {
        Ok(out) if out.role().is_some_and(|r| r.arn() == arn) => Check::ok(&name, arn),
        Ok(out) => Check::fail(
            &name,
            format!(
                "{role_name} exists as {}, not {arn}",
                out.role().map(|r| r.arn()).unwrap_or("(no ARN)")
            ),
            format!("set {key} to the role's ARN (its path is part of it)"),
        ),
        Err(e) if e.code() == Some("NoSuchEntity") => Check::fail(
            &name,
            format!("{arn} does not exist"),
            format!("create the role (runner-setup/cloudformation) or fix {key}"),
        ),
        Err(e) if denied(&e) => cannot_read(&name, &e, "iam:GetRole"),
        Err(e) => Check::fail(&name, e.to_string(), format!("check {key}")),
    }
}

/// `fargate.subnets` and `fargate.security_groups`: they exist, in one VPC.
async fn network(c: &Clients, subnets: &[String], groups: &[String]) -> Vec<Check> {
    use aws_sdk_ec2::types::Filter;
    let filter = |name: &str, ids: &[String]| {
        Filter::builder()
            .name(name)
            .set_values(Some(ids.to_vec()))
            .build()
    };
    // Filters, not id lists: EC2 answers an id list with one error for the first unknown id,
    // a filter with what exists, so every missing id can be named.
    let found = call(
        "DescribeSubnets",
        c.ec2
            .describe_subnets()
            .filters(filter("subnet-id", subnets))
            .send()
            .await,
    );
    let mut vpcs: Vec<String> = Vec::new();
    let subnet_check = match found {
        Ok(out) => {
            let have: Vec<_> = out.subnets().iter().collect();
            let missing: Vec<&str> = subnets
                .iter()
                .map(String::as_str)
                .filter(|id| !have.iter().any(|s| s.subnet_id() == Some(*id)))
                .collect();
            for s in &have {
                if let Some(v) = s.vpc_id()
                    && !vpcs.iter().any(|x| x == v)
                {
                    vpcs.push(v.to_owned());
                }
            }
            if !missing.is_empty() {
                Check::fail(
                    "fargate.subnets",
                    format!(
                        "{} not found in this account and region",
                        missing.join(", ")
                    ),
                    "fix fargate.subnets: list subnets of the VPC the tasks run in (aws ec2 describe-subnets)",
                )
            } else if vpcs.len() > 1 {
                Check::fail(
                    "fargate.subnets",
                    format!("the subnets are in several VPCs ({})", vpcs.join(", ")),
                    "list subnets of one VPC: a task's subnets must share it",
                )
            } else {
                Check::ok(
                    "fargate.subnets",
                    format!(
                        "{} in {}",
                        have.iter()
                            .map(|s| format!(
                                "{} ({})",
                                s.subnet_id().unwrap_or_default(),
                                s.availability_zone().unwrap_or("?")
                            ))
                            .collect::<Vec<_>>()
                            .join(", "),
                        vpcs.first().map(String::as_str).unwrap_or("?")
                    ),
                )
            }
        }
        Err(e) if denied(&e) => cannot_read("fargate.subnets", &e, "ec2:DescribeSubnets"),
        Err(e) => Check::fail("fargate.subnets", e.to_string(), "check fargate.subnets"),
    };
    let found = call(
        "DescribeSecurityGroups",
        c.ec2
            .describe_security_groups()
            .filters(filter("group-id", groups))
            .send()
            .await,
    );
    let group_check = match found {
        Ok(out) => {
            let have = out.security_groups();
            let missing: Vec<&str> = groups
                .iter()
                .map(String::as_str)
                .filter(|id| !have.iter().any(|g| g.group_id() == Some(*id)))
                .collect();
            let elsewhere: Vec<&str> = have
                .iter()
                .filter(|g| vpcs.len() == 1 && g.vpc_id() != vpcs.first().map(String::as_str))
                .filter_map(|g| g.group_id())
                .collect();
            if !missing.is_empty() {
                Check::fail(
                    "fargate.security_groups",
                    format!(
                        "{} not found in this account and region",
                        missing.join(", ")
                    ),
                    "fix fargate.security_groups: list groups of the subnets' VPC (aws ec2 describe-security-groups)",
                )
            } else if !elsewhere.is_empty() {
                Check::fail(
                    "fargate.security_groups",
                    format!(
                        "{} not in the subnets' VPC {}",
                        elsewhere.join(", "),
                        vpcs.first().map(String::as_str).unwrap_or("?")
                    ),
                    "list security groups of the VPC the subnets are in",
                )
            } else {
                Check::ok(
                    "fargate.security_groups",
                    have.iter()
                        .map(|g| {
                            format!(
                                "{} ({})",
                                g.group_id().unwrap_or_default(),
                                g.group_name().unwrap_or("?")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            }
        }
        Err(e) if denied(&e) => {
            cannot_read("fargate.security_groups", &e, "ec2:DescribeSecurityGroups")
        }
        Err(e) => Check::fail(
            "fargate.security_groups",
            e.to_string(),
            "check fargate.security_groups",
        ),
    };
    vec![subnet_check, group_check]
}

async fn cluster(c: &Clients, cluster: &str, allow_spot: bool) -> Check {
    const NAME: &str = "fargate.cluster";
    let got = call(
        "DescribeClusters",
        c.ecs.describe_clusters().clusters(cluster).send().await,
    );
    let out = match got {
        Ok(out) => out,
        Err(e) if denied(&e) => return cannot_read(NAME, &e, "ecs:DescribeClusters"),
        Err(e) => return Check::fail(NAME, e.to_string(), "check fargate.cluster"),
    };
    let Some(found) = out.clusters().iter().find(|c| c.status() == Some("ACTIVE")) else {
        let why = out
            .failures()
            .first()
            .and_then(|f| f.reason())
            .or_else(|| out.clusters().first().and_then(|c| c.status()))
            .unwrap_or("not found");
        return Check::fail(
            NAME,
            format!("{cluster}: {why}"),
            "create the cluster (runner-setup/cloudformation) or fix fargate.cluster",
        );
    };
    let providers = found.capacity_providers();
    let has = |p: &str| providers.iter().any(|x| x == p);
    if allow_spot && !has("FARGATE_SPOT") {
        return Check::fail(
            NAME,
            format!(
                "{cluster} has no FARGATE_SPOT capacity provider, but policy.fargate.allow_spot is on"
            ),
            format!(
                "aws ecs put-cluster-capacity-providers --cluster {cluster} --capacity-providers FARGATE FARGATE_SPOT --default-capacity-provider-strategy capacityProvider=FARGATE,weight=1; or set policy.fargate.allow_spot = false"
            ),
        );
    }
    Check::ok(
        NAME,
        format!(
            "{cluster} is active, capacity providers: {}",
            if providers.is_empty() {
                "none (tasks use launch type FARGATE)".to_owned()
            } else {
                providers.join(", ")
            }
        ),
    )
}

async fn log_group(c: &Clients, group: &str) -> Check {
    const NAME: &str = "fargate.log_group";
    let got = call(
        "DescribeLogGroups",
        c.logs
            .describe_log_groups()
            .log_group_name_prefix(group)
            .send()
            .await,
    );
    match got {
        // Names are listed in order, so the exact name comes first among those it prefixes.
        Ok(out)
            if out
                .log_groups()
                .iter()
                .any(|g| g.log_group_name() == Some(group)) =>
        {
            Check::ok(NAME, format!("{group} exists"))
        }
        Ok(_) => Check::fail(
            NAME,
            format!("{group} does not exist"),
            format!(
                "create it (aws logs create-log-group --log-group-name {group}); ECS does not create it for the executor's tasks"
            ),
        ),
        Err(e) if denied(&e) => cannot_read(NAME, &e, "logs:DescribeLogGroups"),
        Err(e) => Check::fail(NAME, e.to_string(), "check fargate.log_group"),
    }
}

/// The parts of an ECR image reference: account, region, repository, and tag or digest.
#[derive(Debug, PartialEq, Eq)]
struct EcrRef<'a> {
    account: &'a str,
    region: &'a str,
    repository: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

fn ecr_ref(image: &str) -> Option<EcrRef<'_>> {
    let (host, path) = image.split_once('/')?;
    let mut labels = host.split('.');
    let account = labels.next()?;
    let region = labels.nth(2)?;
    let (path, digest) = match path.split_once('@') {
        Some((p, d)) => (p, Some(d)),
        None => (path, None),
    };
    let (repository, tag) = match path.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
        Some(_) | None => (path, None),
    };
    let tag = if digest.is_none() {
        tag.or(Some("latest"))
    } else {
        tag
    };
    Some(EcrRef {
        account,
        region,
        repository,
        tag,
        digest,
    })
}

async fn helper_image(c: &Clients, image: &str) -> Check {
    use aws_sdk_ecr::types::ImageIdentifier;
    const NAME: &str = "fargate.helper_image";
    let Some(r) = ecr_ref(image).filter(|_| is_ecr_image(image)) else {
        return Check::skip(
            NAME,
            format!("{image} is not in ECR; doctor checks ECR images only"),
        );
    };
    // The image's own region: a helper image may live in another region's registry.
    let ecr = aws_sdk_ecr::Client::from_conf(
        aws_sdk_ecr::config::Builder::from(&c.sdk)
            .region(aws_sdk_ecr::config::Region::new(r.region.to_owned()))
            .build(),
    );
    let id = ImageIdentifier::builder()
        .set_image_tag(r.tag.filter(|_| r.digest.is_none()).map(str::to_owned))
        .set_image_digest(r.digest.map(str::to_owned))
        .build();
    let got = call(
        "DescribeImages",
        ecr.describe_images()
            .registry_id(r.account)
            .repository_name(r.repository)
            .image_ids(id)
            .send()
            .await,
    );
    let push_fix =
        "build and push it (runner-setup/helper-image/Dockerfile) or fix fargate.helper_image";
    match got {
        Ok(out) if !out.image_details().is_empty() => Check::ok(NAME, format!("{image} is in ECR")),
        Ok(_) => Check::fail(NAME, format!("{image} is not in the repository"), push_fix),
        Err(e) if e.code() == Some("RepositoryNotFoundException") => Check::fail(
            NAME,
            format!(
                "repository {} does not exist in account {} ({})",
                r.repository, r.account, r.region
            ),
            push_fix,
        ),
        Err(e) if e.code() == Some("ImageNotFoundException") => {
            Check::fail(NAME, format!("{image} is not in the repository"), push_fix)
        }
        Err(e) if denied(&e) => cannot_read(NAME, &e, "ecr:DescribeImages"),
        Err(e) => Check::fail(NAME, e.to_string(), "check fargate.helper_image"),
    }
}

/// The IAM OIDC provider for `aws.job_credentials.issuer`, listing the audience jobs ask for.
async fn oidc(c: &Clients, account: &str, cfg: &ExecutorConfig) -> Check {
    const NAME: &str = "OIDC provider";
    let CredentialsMode::Job(j) = &cfg.aws.credentials else {
        return Check::skip(NAME, "aws.credentials is \"runner\": jobs use no ID token");
    };
    let host = j
        .issuer
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let arn = format!(
        "arn:{}:iam::{account}:oidc-provider/{host}",
        partition(&cfg.region)
    );
    match call(
        "GetOpenIDConnectProvider",
        c.iam
            .get_open_id_connect_provider()
            .open_id_connect_provider_arn(&arn)
            .send()
            .await,
    ) {
        Ok(out) if out.client_id_list().contains(&j.audience) => {
            Check::ok(NAME, format!("{arn}, audience {}", j.audience))
        }
        Ok(_) => Check::fail(
            NAME,
            format!("{arn} does not list the audience {}", j.audience),
            format!(
                "add {} to the provider's audiences, or set aws.job_credentials.audience to one it lists",
                j.audience
            ),
        ),
        Err(e) if e.code() == Some("NoSuchEntity") => Check::fail(
            NAME,
            format!("no IAM OIDC provider for {} in account {account}", j.issuer),
            format!(
                "create it: aws iam create-open-id-connect-provider --url {} --client-id-list {}",
                j.issuer, j.audience
            ),
        ),
        Err(e) if denied(&e) => cannot_read(NAME, &e, "iam:GetOpenIDConnectProvider"),
        Err(e) => Check::fail(NAME, e.to_string(), "check aws.job_credentials.issuer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_say_what_is_wrong_and_what_to_fix() {
        assert_eq!(
            Check::ok("staging bucket", "s3://b exists").to_string(),
            "ok   staging bucket: s3://b exists"
        );
        assert_eq!(
            Check::fail(
                "staging bucket",
                "s3://b does not exist",
                "create it or fix staging.bucket"
            )
            .to_string(),
            "FAIL staging bucket: s3://b does not exist — create it or fix staging.bucket"
        );
        assert_eq!(
            Check::warn("staging bucket lifecycle", "no rules", "add one").to_string(),
            "warn staging bucket lifecycle: no rules — add one"
        );
        assert_eq!(
            Check::skip("OIDC provider", "not configured").to_string(),
            "skip OIDC provider: not configured"
        );
        assert_eq!(Check::ok("region", "").to_string(), "ok   region");
    }

    #[test]
    fn only_failures_fail_a_run() {
        let warn = Check::warn("a", "b", "c");
        let skip = Check::skip("a", "b");
        assert!(passed(&[Check::ok("a", ""), warn.clone(), skip.clone()]));
        assert!(!passed(&[warn, skip, Check::fail("a", "b", "c")]));
    }

    #[test]
    fn ecr_references_are_split() {
        assert_eq!(
            ecr_ref("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/helper:0.1.0"),
            Some(EcrRef {
                account: "123456789012",
                region: "eu-west-1",
                repository: "team/helper",
                tag: Some("0.1.0"),
                digest: None,
            })
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        let image = format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/h@{digest}");
        let r = ecr_ref(&image);
        assert_eq!(
            r.map(|r| (r.repository, r.tag, r.digest.map(str::to_owned))),
            Some(("h", None, Some(digest)))
        );
        assert_eq!(
            ecr_ref("123456789012.dkr.ecr.us-east-1.amazonaws.com/h").and_then(|r| r.tag),
            Some("latest")
        );
    }

    #[test]
    fn kms_keys_match_across_their_spellings() {
        let arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        assert!(same_key(arn, "1234abcd-12ab-34cd-56ef-1234567890ab"));
        assert!(same_key(arn, arn));
        assert!(!same_key(arn, "alias/other"));
        assert_eq!(
            role_parts("arn:aws:iam::123456789012:role/ci/SageMakerCI"),
            Some(("123456789012", "SageMakerCI"))
        );
    }
}
