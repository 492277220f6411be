//! Per-job credentials: which tokens, roles, refs and environments the executor refuses before
//! STS sees them, and what a session it opens looks like.

use std::path::Path;

use base64::Engine;
use serde_json::json;

use super::*;
use crate::job::{Variable, Variables};

const ROLE: &str = "arn:aws:iam::123456789012:role/ci-ml-churn";

fn config(job_credentials: &str, projects: &str) -> ExecutorConfig {
    let text = format!(
        r#"
region = "us-east-1"
[paths]
builds_root = "/b"
cache_root = "/c"
[staging]
bucket = "ci-staging"
[aws]
credentials = "job"
[aws.job_credentials]
issuer = "https://gitlab.example.com"
audience = "https://gitlab.example.com"
{job_credentials}
{projects}
"#
    );
    crate::config::load_str(&text, Path::new("t.toml")).expect("test config loads")
}

const ML: &str = r#"
[policy.projects."ml/*"]
roles = ["arn:aws:iam::123456789012:role/ci-{project_path}"]
"#;

fn token(claims: serde_json::Value) -> String {
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64(&json!({"alg": "RS256", "kid": "k"})),
        b64(&claims)
    )
}

fn claims() -> serde_json::Value {
    json!({
        "iss": "https://gitlab.example.com",
        "aud": "https://gitlab.example.com",
        "sub": "project_path:ml/churn:ref_type:branch:ref:main",
        "project_path": "ml/churn",
        "project_id": "7",
        "job_id": "42",
        "ref": "main",
        "ref_protected": "true",
        "exp": 4_000_000_000u64,
    })
}

fn job(vars: &[(&str, &str)]) -> Job {
    Job {
        id: 42,
        name: "train".into(),
        project_id: 7,
        project_path: "ml/churn".into(),
        pipeline_id: 3,
        url: "https://gitlab.example.com/ml/churn/-/jobs/42".into(),
        git_ref: "main".into(),
        sha: "abc".into(),
        ref_protected: true,
        default_branch: Some("main".into()),
        image: None,
        timeout: Duration::from_secs(3600),
        variables: Variables::new(vars.iter().map(|(k, v)| {
            (
                (*k).to_owned(),
                Variable {
                    value: (*v).to_owned(),
                    masked: true,
                    file: false,
                },
            )
        })),
    }
}

fn refused(cfg: &ExecutorConfig, job: &Job) -> String {
    let r = for_job(cfg, job, SystemTime::now()).expect_err("refused");
    r.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_valid_token_opens_the_projects_own_role() {
    let cfg = config(
        r#"role_arn = "arn:aws:iam::123456789012:role/ci-{project_path}"
session_tags = true"#,
        ML,
    );
    let t = token(claims());
    let creds =
        for_job(&cfg, &job(&[("SAGEMAKER_ID_TOKEN", &t)]), SystemTime::now()).expect("allowed");
    let JobCredentials::Role(s) = &creds else {
        panic!("not a role: {creds:?}");
    };
    assert_eq!(s.role_arn, ROLE);
    assert_eq!(s.session_name, "gitlab-7-42");
    assert_eq!(s.duration, Duration::from_secs(3600));
    assert!(s.tags.contains(&("gitlab:job-id".into(), "42".into())));
    assert!(
        s.tags
            .contains(&("gitlab:project-path".into(), "ml/churn".into()))
    );
    // The token never shows in what the executor prints.
    assert!(!format!("{creds:?}").contains(&t));
    assert!(!creds.describe().contains(&t));
}

#[test]
fn the_runner_mode_needs_no_token() {
    let text = r#"
region = "us-east-1"
[paths]
builds_root = "/b"
cache_root = "/c"
[staging]
bucket = "ci-staging"
"#;
    let cfg = crate::config::load_str(text, Path::new("t.toml")).expect("loads");
    assert_eq!(
        for_job(&cfg, &job(&[]), SystemTime::now()).expect("runner"),
        JobCredentials::Runner
    );
}

#[test]
fn tokens_that_are_not_this_jobs_are_refused_by_claim() {
    let cfg = config(
        r#"role_arn = "arn:aws:iam::123456789012:role/ci-{project_path}""#,
        ML,
    );
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            json!({"project_path": "ml/fraud"}),
            "was issued for project \"ml/fraud\"",
        ),
        (json!({"job_id": "41"}), "was issued for job \"41\""),
        (
            json!({"aud": "sts.amazonaws.com"}),
            "was not issued for audience",
        ),
        (json!({"aud": ["a", "b"]}), "was not issued for audience"),
        (json!({"exp": 1_000u64}), "has expired"),
        (
            json!({"iss": "https://evil.example.com"}),
            "was issued by \"https://evil.example.com\"",
        ),
    ];
    for (over, want) in cases {
        let mut c = claims();
        for (k, v) in over.as_object().expect("object") {
            c[k] = v.clone();
        }
        let msg = refused(&cfg, &job(&[("SAGEMAKER_ID_TOKEN", &token(c))]));
        assert!(msg.starts_with("SAGEMAKER_ID_TOKEN: "), "{msg}");
        assert!(msg.contains(want), "{want:?} not in {msg}");
    }
    let mut list_aud = claims();
    list_aud["aud"] = json!(["x", "https://gitlab.example.com"]);
    assert!(
        for_job(
            &cfg,
            &job(&[("SAGEMAKER_ID_TOKEN", &token(list_aud))]),
            SystemTime::now()
        )
        .is_ok()
    );
}

#[test]
fn what_is_not_a_token_gets_one_line_without_its_content() {
    let cfg = config("", ML);
    for bad in [
        "",
        "not-a-jwt",
        "a.b",
        "a.!!!.c",
        "a.e30.c.d",
        &format!("x.{}.y", "A".repeat(20_000)),
        &format!(
            "x.{}.y",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("[1,2]")
        ),
    ] {
        let msg = refused(&cfg, &job(&[("SAGEMAKER_ID_TOKEN", bad)]));
        assert!(msg.starts_with("SAGEMAKER_ID_TOKEN: "), "{msg}");
        assert_eq!(msg.lines().count(), 1, "{msg}");
        assert!(msg.len() < 400, "{msg}");
    }
}

#[test]
fn roles_outside_the_projects_entry_are_refused() {
    let cfg = config("", ML);
    let t = token(claims());
    let msg = refused(
        &cfg,
        &job(&[
            ("SAGEMAKER_ID_TOKEN", &t),
            (ROLE_VARIABLE, "arn:aws:iam::123456789012:role/ci-ml-fraud"),
        ]),
    );
    assert!(
        msg.starts_with("SAGEMAKER_AWS_ROLE_ARN: \"arn:aws:iam::123456789012:role/ci-ml-fra…\" is not allowed for project \"ml/churn\" by policy.projects.\"ml/*\".roles [arn:aws:iam::123456789012:role/ci-ml-churn]"),
        "{msg}"
    );
    let msg = refused(&cfg, &job(&[("SAGEMAKER_ID_TOKEN", &t)]));
    assert!(msg.contains("no aws.job_credentials.role_arn"), "{msg}");
    let msg = refused(
        &cfg,
        &job(&[("SAGEMAKER_ID_TOKEN", &t), (ROLE_VARIABLE, "Admin")]),
    );
    assert!(msg.contains("is not an IAM role ARN"), "{msg}");
    let mut other = job(&[("SAGEMAKER_ID_TOKEN", &t), (ROLE_VARIABLE, ROLE)]);
    other.project_path = "web/site".into();
    let mut c = claims();
    c["project_path"] = json!("web/site");
    other.variables = Variables::new([
        (
            "SAGEMAKER_ID_TOKEN".to_owned(),
            Variable {
                value: token(c),
                masked: true,
                file: false,
            },
        ),
        (
            ROLE_VARIABLE.to_owned(),
            Variable {
                value: ROLE.to_owned(),
                masked: false,
                file: false,
            },
        ),
    ]);
    let msg = refused(&cfg, &other);
    assert!(msg.contains("matches no policy.projects entry"), "{msg}");
}

#[test]
fn protected_refs_and_environments_are_checked_on_the_token_and_the_job() {
    let cfg = config(
        r#"role_arn = "arn:aws:iam::123456789012:role/ci-{project_path}""#,
        r#"
[policy.projects."ml/*"]
roles = ["arn:aws:iam::123456789012:role/ci-{project_path}"]
require_protected_ref = true
environments = ["production", "review/*"]
"#,
    );
    let with = |c: serde_json::Value, protected: bool| {
        let mut j = job(&[("SAGEMAKER_ID_TOKEN", &token(c))]);
        j.ref_protected = protected;
        j
    };
    let mut prod = claims();
    prod["environment"] = json!("production");
    assert!(for_job(&cfg, &with(prod.clone(), true), SystemTime::now()).is_ok());
    // Either side saying "unprotected" is enough to refuse.
    let msg = refused(&cfg, &with(prod.clone(), false));
    assert!(msg.contains("only from a protected ref"), "{msg}");
    let mut unprotected = prod.clone();
    unprotected["ref_protected"] = json!("false");
    let msg = refused(&cfg, &with(unprotected, true));
    assert!(msg.contains("only from a protected ref"), "{msg}");
    let mut staging = claims();
    staging["environment"] = json!("staging");
    let msg = refused(&cfg, &with(staging, true));
    assert!(msg.contains("environment is \"staging\""), "{msg}");
    let msg = refused(&cfg, &with(claims(), true));
    assert!(msg.contains("environment is none"), "{msg}");
}

#[test]
fn the_config_refuses_job_credentials_without_projects_or_audience() {
    let base = r#"
region = "us-east-1"
[paths]
builds_root = "/b"
cache_root = "/c"
[staging]
bucket = "ci-staging"
[aws]
credentials = "job"
"#;
    let e = crate::config::load_str(base, Path::new("t.toml"))
        .expect_err("refused")
        .to_string();
    assert!(e.contains("aws.credentials"), "{e}");
    assert!(e.contains("aws.job_credentials.audience"), "{e}");
    assert!(e.contains("aws.job_credentials.issuer"), "{e}");
    let e = crate::config::load_str(
        &format!(
            "{base}[aws.job_credentials]\nissuer = \"https://g\"\naudience = \"a\"\nsession_tags = true\nsession_duration = \"2h\"\ntoken_variable = \"SAGEMAKER_TOKEN\"\n{ML}"
        ),
        Path::new("t.toml"),
    )
    .expect_err("refused")
    .to_string();
    assert!(e.contains("for a chained (tagged) session"), "{e}");
    assert!(e.contains("own settings namespace"), "{e}");
}

fn session(tags: bool) -> RoleSession {
    let cfg = config(
        &format!(
            "role_arn = \"arn:aws:iam::123456789012:role/ci-{{project_path}}\"\nsession_tags = {tags}"
        ),
        ML,
    );
    match for_job(
        &cfg,
        &job(&[("SAGEMAKER_ID_TOKEN", &token(claims()))]),
        SystemTime::now(),
    )
    .expect("allowed")
    {
        JobCredentials::Role(s) => s,
        JobCredentials::Runner => panic!("not a role"),
    }
}

fn sts_credentials(key: &str, expires: u64) -> aws_sdk_sts::types::Credentials {
    aws_sdk_sts::types::Credentials::builder()
        .access_key_id(key)
        .secret_access_key("secret")
        .session_token("token")
        .expiration(aws_smithy_types::DateTime::from_secs(
            i64::try_from(expires).expect("time"),
        ))
        .build()
        .expect("credentials")
}

#[tokio::test]
async fn every_resolution_opens_a_fresh_session_with_the_job_token_so_long_waits_renew() {
    use aws_smithy_mocks::{RuleMode, mock};
    let expires = unix_now(SystemTime::now()) + 900;
    let exchange = mock!(aws_sdk_sts::Client::assume_role_with_web_identity)
        .match_requests(|r| {
            r.role_arn() == Some(ROLE)
                && r.role_session_name() == Some("gitlab-7-42")
                && r.duration_seconds() == Some(3600)
                && r.web_identity_token().is_some_and(|t| t.split('.').count() == 3)
        })
        .then_output(move || {
            aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityOutput::builder()
                .credentials(sts_credentials("ASIAWEB", expires))
                .build()
        });
    let sts = crate::aws::mock::sts(RuleMode::MatchAny, &[&exchange]);
    let provider = WebIdentityProvider::from_client(sts, session(false));
    // The SDK's identity cache asks again when a session is about to end: each time the job's
    // token opens a new session (nothing here holds on to an old one).
    for _ in 0..2 {
        let c = provider.provide_credentials().await.expect("credentials");
        assert_eq!(c.access_key_id(), "ASIAWEB");
        assert_eq!(
            c.expiry()
                .and_then(|e| e.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            Some(expires)
        );
    }
    assert_eq!(exchange.num_calls(), 2);
}

#[tokio::test]
async fn session_tags_come_from_a_second_hop_on_the_same_role() {
    use aws_smithy_mocks::{RuleMode, mock};
    let expires = unix_now(SystemTime::now()) + 3600;
    let exchange = mock!(aws_sdk_sts::Client::assume_role_with_web_identity).then_output(move || {
        aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityOutput::builder()
            .credentials(sts_credentials("ASIAWEB", expires))
            .build()
    });
    let tagged = mock!(aws_sdk_sts::Client::assume_role)
        .match_requests(|r| {
            let tag = |k: &str| {
                r.tags()
                    .iter()
                    .find(|t| t.key() == k)
                    .map(|t| t.value().to_owned())
            };
            r.role_arn() == Some(ROLE)
                && r.duration_seconds() == Some(3600)
                && tag("gitlab:project-path").as_deref() == Some("ml/churn")
                && tag("gitlab:job-id").as_deref() == Some("42")
        })
        .then_output(move || {
            aws_sdk_sts::operation::assume_role::AssumeRoleOutput::builder()
                .credentials(sts_credentials("ASIATAGGED", expires))
                .build()
        });
    let sts = crate::aws::mock::sts(RuleMode::MatchAny, &[&exchange, &tagged]);
    let c = WebIdentityProvider::from_client(sts, session(true))
        .provide_credentials()
        .await
        .expect("credentials");
    assert_eq!(c.access_key_id(), "ASIATAGGED");
    assert_eq!((exchange.num_calls(), tagged.num_calls()), (1, 1));
}

#[tokio::test]
async fn a_refused_exchange_names_the_role_and_says_a_retry_will_not_help() {
    use aws_smithy_mocks::{RuleMode, mock};
    let denied = mock!(aws_sdk_sts::Client::assume_role_with_web_identity).then_error(|| {
        aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityError::generic(
            aws_smithy_types::error::ErrorMetadata::builder()
                .code("AccessDenied")
                .message("Not authorized to perform sts:AssumeRoleWithWebIdentity")
                .build(),
        )
    });
    let sts = crate::aws::mock::sts(RuleMode::MatchAny, &[&denied]);
    let e = WebIdentityProvider::from_client(sts, session(false))
        .open()
        .await
        .expect_err("refused");
    assert_eq!(e.retry, crate::aws::errors::Retry::Permanent);
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "cannot assume {ROLE} with the job's GitLab ID token"
        )),
        "{text}"
    );
    assert!(text.contains("AccessDenied"), "{text}");
}
