//! End-to-end tests of `sagemaker-executor doctor` against the simulator: a prepared account
//! passes every check, a missing bucket and a subnet that does not exist fail with a line naming
//! them and the fix, a missing expiry rule only warns, an invalid config or an unreachable
//! endpoint stops before any AWS check, and doctor only ever reads.

#![allow(
    clippy::unwrap_used,
    reason = "an integration test reports failure by panicking"
)]

use std::process::Command;

use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
    LifecycleRuleFilter, PublicAccessBlockConfiguration, ServerSideEncryption,
    ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
};
use e2e::harness::world::{CLUSTER, TASK_ROLE};
use e2e::harness::{BUCKET, World};

/// Runs `doctor`; (success, stdout and stderr).
fn doctor(w: &World) -> (bool, String) {
    let mut cmd = Command::new(&w.binary);
    cmd.arg("--config").arg(&w.config_path).arg("doctor");
    for (k, v) in w.sim.aws_env() {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The line of check `name`.
fn line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| {
            l.get(5..)
                .is_some_and(|rest| rest.starts_with(&format!("{name}:")))
        })
        .unwrap_or_else(|| panic!("no {name:?} line in:\n{out}"))
}

/// Percent-encodes a form value.
fn form(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One call to a service the harness has no SDK client for (IAM, ECR), signed only far enough
/// for the simulator to route it (it checks no signatures).
fn raw_call(w: &World, service: &str, target: Option<&str>, body: &str) {
    let (host, port) = w.sim.address();
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
    );
    let mut headers = vec![("Authorization", auth.as_str())];
    match target {
        Some(t) => {
            headers.push(("X-Amz-Target", t));
            headers.push(("Content-Type", "application/x-amz-json-1.1"));
        }
        None => headers.push((
            "Content-Type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )),
    }
    let (status, response) =
        e2e::sim::http_request_with_headers(host, port, "POST", "/", &headers, body.as_bytes())
            .unwrap();
    assert!(
        status < 300,
        "{service} {body}: {status} {}",
        String::from_utf8_lossy(&response)
    );
}

fn create_role(w: &World, name: &str) {
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    raw_call(
        w,
        "iam",
        None,
        &format!(
            "Action=CreateRole&Version=2010-05-08&RoleName={name}&AssumeRolePolicyDocument={}",
            form(trust)
        ),
    );
}

/// What doctor needs beyond [`World::fargate`]: the roles, the bucket's encryption, public
/// access block and expiry, the cluster's capacity providers and the helper image.
fn prepare(w: &World) {
    for role in ["SageMakerCI", "EcsExecution", "ci-task-default"] {
        create_role(w, role);
    }
    w.rt.block_on(
        w.s3.put_bucket_encryption()
            .bucket(BUCKET)
            .server_side_encryption_configuration(
                ServerSideEncryptionConfiguration::builder()
                    .rules(
                        ServerSideEncryptionRule::builder()
                            .apply_server_side_encryption_by_default(
                                ServerSideEncryptionByDefault::builder()
                                    .sse_algorithm(ServerSideEncryption::Aes256)
                                    .build()
                                    .unwrap(),
                            )
                            .build(),
                    )
                    .build()
                    .unwrap(),
            )
            .send(),
    )
    .unwrap();
    w.rt.block_on(
        w.s3.put_public_access_block()
            .bucket(BUCKET)
            .public_access_block_configuration(
                PublicAccessBlockConfiguration::builder()
                    .block_public_acls(true)
                    .ignore_public_acls(true)
                    .block_public_policy(true)
                    .restrict_public_buckets(true)
                    .build(),
            )
            .send(),
    )
    .unwrap();
    w.rt.block_on(
        w.s3.put_bucket_lifecycle_configuration()
            .bucket(BUCKET)
            .lifecycle_configuration(
                BucketLifecycleConfiguration::builder()
                    .rules(
                        LifecycleRule::builder()
                            .id("expire-staged")
                            .status(ExpirationStatus::Enabled)
                            .filter(
                                LifecycleRuleFilter::builder()
                                    .prefix("sagemaker-executor/")
                                    .build(),
                            )
                            .expiration(LifecycleExpiration::builder().days(7).build())
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .send(),
    )
    .unwrap();
    w.rt.block_on(
        w.ecs
            .put_cluster_capacity_providers()
            .cluster(CLUSTER)
            .capacity_providers("FARGATE")
            .capacity_providers("FARGATE_SPOT")
            .set_default_capacity_provider_strategy(Some(Vec::new()))
            .send(),
    )
    .unwrap();
    let ecr = "AmazonEC2ContainerRegistry_V20150921";
    raw_call(
        w,
        "ecr",
        Some(&format!("{ecr}.CreateRepository")),
        r#"{"repositoryName":"sagemaker-executor"}"#,
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 1,
            "digest": format!("sha256:{}", "1".repeat(64)),
        },
        "layers": [],
    });
    raw_call(
        w,
        "ecr",
        Some(&format!("{ecr}.PutImage")),
        &serde_json::json!({
            "repositoryName": "sagemaker-executor",
            "imageTag": "test",
            "imageManifest": manifest.to_string(),
        })
        .to_string(),
    );
}

/// Fails the test unless every AWS call since the last reset only read.
fn assert_only_reads(w: &World) {
    let calls = w.calls();
    assert!(!calls.is_empty(), "doctor made no AWS call");
    let writes: Vec<&String> = calls
        .iter()
        .filter(|op| {
            let action = op.split_once('.').map_or(op.as_str(), |(_, a)| a);
            !["Get", "Describe", "List", "GET ", "HEAD "]
                .iter()
                .any(|p| action.starts_with(p))
        })
        .collect();
    assert!(
        writes.is_empty(),
        "doctor wrote: {writes:?} (all: {calls:?})"
    );
}

#[test]
fn a_prepared_account_passes_every_check_and_doctor_only_reads() {
    let w = World::fargate(TASK_ROLE);
    prepare(&w);
    w.sim.reset().unwrap();
    let (ok, out) = doctor(&w);
    assert!(ok, "{out}");
    for name in [
        "config",
        "region",
        "credentials",
        "staging bucket",
        "staging bucket encryption",
        "staging bucket public access",
        "staging bucket lifecycle",
        "role train.role_arn",
        "fargate.subnets",
        "fargate.security_groups",
        "fargate.cluster",
        "fargate.log_group",
        "fargate.helper_image",
        "role fargate.execution_role_arn",
        "role fargate.task_role_arn",
    ] {
        assert!(line(&out, name).starts_with("ok   "), "{name}:\n{out}");
    }
    assert!(
        line(&out, "credentials").contains("account 123456789012"),
        "{out}"
    );
    assert!(
        line(&out, "staging bucket encryption").ends_with("SSE-S3"),
        "{out}"
    );
    assert!(
        line(&out, "staging bucket lifecycle").contains("after 7 days (rule expire-staged)"),
        "{out}"
    );
    assert!(
        line(&out, "role aws.assume_role_arn").starts_with("skip "),
        "{out}"
    );
    assert!(line(&out, "OIDC provider").starts_with("skip "), "{out}");
    assert_only_reads(&w);
}

#[test]
fn a_missing_expiry_rule_is_a_warning_not_a_failure() {
    let w = World::fargate(TASK_ROLE);
    prepare(&w);
    w.rt.block_on(w.s3.delete_bucket_lifecycle().bucket(BUCKET).send())
        .unwrap();
    w.sim.reset().unwrap();
    let (ok, out) = doctor(&w);
    assert!(ok, "{out}");
    assert!(
        line(&out, "staging bucket lifecycle").starts_with(
            "warn staging bucket lifecycle: s3://ci-staging has no lifecycle rules — add a lifecycle rule expiring objects under sagemaker-executor/"
        ),
        "{out}"
    );
    assert_only_reads(&w);
}

#[test]
fn a_missing_bucket_and_a_wrong_subnet_fail_naming_them_and_the_fix() {
    let w = World::fargate(TASK_ROLE);
    let config = std::fs::read_to_string(&w.config_path).unwrap();
    let net = w.sim.default_network().unwrap();
    let config = config
        .replace(
            &format!("bucket = \"{BUCKET}\""),
            "bucket = \"no-such-staging-bucket\"",
        )
        .replace(&net.subnets[0], "subnet-0123456789abcdef0");
    w.write_config(&config).unwrap();
    w.sim.reset().unwrap();
    let (ok, out) = doctor(&w);
    assert!(!ok, "{out}");
    assert_eq!(
        line(&out, "staging bucket"),
        "FAIL staging bucket: s3://no-such-staging-bucket does not exist — create it (runner-setup/cloudformation creates one with encryption and expiry) or fix staging.bucket",
        "{out}"
    );
    for later in ["staging bucket encryption", "staging bucket lifecycle"] {
        assert!(line(&out, later).starts_with("skip "), "{out}");
    }
    let subnets = line(&out, "fargate.subnets");
    assert!(
        subnets.starts_with("FAIL fargate.subnets: subnet-0123456789abcdef0 not found")
            && subnets.contains("fix fargate.subnets"),
        "{out}"
    );
    // Nothing was prepared, so the roles are missing too, each named with its key.
    assert!(
        line(&out, "role train.role_arn").starts_with(
            "FAIL role train.role_arn: arn:aws:iam::123456789012:role/SageMakerCI does not exist"
        ),
        "{out}"
    );
    assert!(out.contains("check(s) failed"), "{out}");
    assert_only_reads(&w);
}

#[test]
fn an_invalid_config_fails_before_any_aws_call() {
    let w = World::new(e2e::harness::POLICY);
    let config = std::fs::read_to_string(&w.config_path)
        .unwrap()
        .replace("region = \"us-east-1\"", "region = \"us-east-9x\"");
    w.write_config(&config).unwrap();
    w.sim.reset().unwrap();
    let (ok, out) = doctor(&w);
    assert!(!ok, "{out}");
    assert!(
        out.starts_with("FAIL config: ")
            && out.contains("region: \"us-east-9x\" is not an AWS region name"),
        "{out}"
    );
    assert!(w.calls().is_empty(), "{:?}", w.calls());
}

#[test]
fn an_unreachable_endpoint_fails_the_region_check_and_skips_the_rest() {
    let setup = e2e::harness::ExecutorSetup::new().unwrap();
    let started = std::time::Instant::now();
    let out = setup
        .command(&["doctor"])
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let out_text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{out_text}");
    assert!(
        line(&out_text, "region").starts_with("FAIL region: no answer from AWS in us-east-1"),
        "{out_text}"
    );
    assert!(
        line(&out_text, "staging bucket").starts_with("skip "),
        "{out_text}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "doctor took {:?} to give up",
        started.elapsed()
    );
}

#[test]
fn per_job_credentials_need_the_gitlab_oidc_provider_with_the_audience() {
    let w = World::fargate(TASK_ROLE);
    prepare(&w);
    let config = std::fs::read_to_string(&w.config_path).unwrap();
    w.write_config(&format!(
        "{config}\n[aws]\ncredentials = \"job\"\n[aws.job_credentials]\nissuer = \"https://gitlab.example.com\"\naudience = \"sts.amazonaws.com\"\n\n[policy.projects.\"ml/*\"]\nroles = [\"arn:aws:iam::123456789012:role/ci-{{project_path}}\"]\n"
    ))
    .unwrap();
    let (ok, out) = doctor(&w);
    assert!(!ok, "{out}");
    assert_eq!(
        line(&out, "OIDC provider"),
        "FAIL OIDC provider: no IAM OIDC provider for https://gitlab.example.com in account 123456789012 — create it: aws iam create-open-id-connect-provider --url https://gitlab.example.com --client-id-list sts.amazonaws.com",
        "{out}"
    );
    // With the provider, but for another audience.
    raw_call(
        &w,
        "iam",
        None,
        "Action=CreateOpenIDConnectProvider&Version=2010-05-08&Url=https%3A%2F%2Fgitlab.example.com&ClientIDList.member.1=gitlab&ThumbprintList.member.1=0000000000000000000000000000000000000000",
    );
    let (_, out) = doctor(&w);
    assert!(
        line(&out, "OIDC provider").contains("does not list the audience sts.amazonaws.com"),
        "{out}"
    );
    raw_call(
        &w,
        "iam",
        None,
        "Action=DeleteOpenIDConnectProvider&Version=2010-05-08&OpenIDConnectProviderArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Aoidc-provider%2Fgitlab.example.com",
    );
    raw_call(
        &w,
        "iam",
        None,
        "Action=CreateOpenIDConnectProvider&Version=2010-05-08&Url=https%3A%2F%2Fgitlab.example.com&ClientIDList.member.1=sts.amazonaws.com&ThumbprintList.member.1=0000000000000000000000000000000000000000",
    );
    w.sim.reset().unwrap();
    let (_, out) = doctor(&w);
    assert!(
        line(&out, "OIDC provider").starts_with(
            "ok   OIDC provider: arn:aws:iam::123456789012:oidc-provider/gitlab.example.com, audience sts.amazonaws.com"
        ),
        "{out}"
    );
    assert_only_reads(&w);
}
