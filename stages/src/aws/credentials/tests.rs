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
