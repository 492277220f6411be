//! Per-job AWS credentials end to end: a job's GitLab ID token (minted by the simulator's
//! GitLab-like issuer and verified by its STS as AWS does) is exchanged for its project's role,
//! and the AWS work of the job is done as that role's session; tokens the executor or IAM
//! refuse fail the job before anything is created.

#![allow(
    clippy::unwrap_used,
    reason = "an integration test reports failure by panicking"
)]

mod support;

use e2e::runner::JobOutcome;
use serde_json::{Value, json};
use support::{ECR_IMAGE, POLICY, World};

const AUDIENCE: &str = "sts.amazonaws.com";
const ROLE: &str = "arn:aws:iam::123456789012:role/ci-ml-churn";

/// A world whose executor gives each job its project's role, with an OIDC provider for the
/// simulator's issuer and a role `ci-ml-churn` whose trust policy admits `ml/churn`'s `main`.
fn world() -> (World, String) {
    let w = World::new(POLICY);
    // The simulator is GitLab here: its issuer URL is known once it runs.
    let issuer = format!("{}/_sim/oidc", w.sim.endpoint());
    w.write_config(&w.config_text(&format!(
        r#"{POLICY}
[aws]
credentials = "job"
[aws.job_credentials]
issuer = "{issuer}"
audience = "{AUDIENCE}"
role_arn = "arn:aws:iam::123456789012:role/ci-{{project_path}}"

[policy.projects."ml/*"]
roles = ["arn:aws:iam::123456789012:role/ci-{{project_path}}"]
"#
    )))
    .unwrap();
    let provider_host = issuer.trim_start_matches("http://").to_owned();
    let iam = &w.iam;
    let provider =
        w.rt.block_on(
            iam.create_open_id_connect_provider()
                .url(&issuer)
                .client_id_list(AUDIENCE)
                .thumbprint_list("0".repeat(40))
                .send(),
        )
        .unwrap();
    let trust = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": provider.open_id_connect_provider_arn().unwrap()},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {
                "StringEquals": {format!("{provider_host}:aud"): AUDIENCE},
                "StringLike": {format!("{provider_host}:sub"): "project_path:ml/churn:ref_type:branch:ref:main"}
            }
        }]
    });
    w.rt.block_on(
        iam.create_role()
            .role_name("ci-ml-churn")
            .assume_role_policy_document(trust.to_string())
            .send(),
    )
    .unwrap();
    (w, provider_host)
}

/// A token for `claims` (project, job, ref, audience) from the simulator's issuer.
fn token(w: &World, claims: Value) -> String {
    let out = w.sim.post_json("/_sim/oidc/token", &claims).unwrap();
    out["token"].as_str().unwrap().to_owned()
}

/// A train job of project `ml/churn` with id `id` on `git_ref`, carrying `token`.
fn train_job(w: &World, id: u64, git_ref: &str, token: &str) -> e2e::runner::JobFixture {
    w.fixture(&format!(
        "name: train\nid: {id}\nref: {git_ref}\nproject: {{path: ml/churn, id: 7}}\nimage: {ECR_IMAGE}\nvariables:\n  SAGEMAKER_ID_TOKEN: {{value: {token:?}, masked: true}}\nscript: [echo trained-as-the-project]\nsource:\n  README.md: \"x\\n\"\n"
    ))
}

/// The principal that signed the first call of `op`.
fn principal_of(w: &World, op: &str) -> Option<String> {
    w.sim
        .calls_json()
        .unwrap()
        .iter()
        .find(|c| c["op"] == op)
        .and_then(|c| c["principal"].as_str().map(str::to_owned))
}

#[test]
fn a_job_works_as_its_projects_role_through_its_id_token() {
    let (w, _) = world();
    let t = token(
        &w,
        json!({"project_path": "ml/churn", "project_id": "7", "job_id": "4201", "ref": "main", "aud": AUDIENCE}),
    );
    let result = w.runner.run(&train_job(&w, 4201, "main", &t)).unwrap();
    let log = result.plain_log();
    assert_eq!(result.outcome, JobOutcome::Success, "{log}");
    assert!(
        log.contains(&format!(
            "AWS credentials: role {ROLE} (session gitlab-7-4201"
        )),
        "{log}"
    );
    assert!(log.contains("trained-as-the-project"), "{log}");
    // The training job, its staged workspace and its status calls are the role session's.
    let session = "arn:aws:sts::123456789012:assumed-role/ci-ml-churn/gitlab-7-4201";
    assert_eq!(
        principal_of(&w, "SageMaker.CreateTrainingJob").as_deref(),
        Some(session)
    );
    assert_eq!(
        principal_of(&w, "SageMaker.DescribeTrainingJob").as_deref(),
        Some(session)
    );
    // The token is a secret: masked in the job log.
    assert!(!log.contains(&t));
    // What the session created says which role it was, for gc.
    let arn =
        w.rt.block_on(
            w.sagemaker
                .describe_training_job()
                .training_job_name(e2e::harness::training_job_name(7, 4201))
                .send(),
        )
        .unwrap()
        .training_job_arn()
        .unwrap()
        .to_owned();
    let tags =
        w.rt.block_on(w.sagemaker.list_tags().resource_arn(&arn).send())
            .unwrap();
    assert!(
        tags.tags()
            .iter()
            .any(|t| t.key() == Some("sagemaker-executor:role") && t.value() == Some(ROLE)),
        "{tags:?}"
    );
}

#[test]
fn a_token_of_another_project_fails_the_job_before_anything_is_created() {
    let (w, _) = world();
    // A token of ml/fraud's job, pasted into ml/churn's job variables.
    let stolen = token(
        &w,
        json!({"project_path": "ml/fraud", "project_id": "8", "job_id": "4202", "ref": "main", "aud": AUDIENCE}),
    );
    let result = w.runner.run(&train_job(&w, 4202, "main", &stolen)).unwrap();
    let log = result.plain_log();
    assert_eq!(result.outcome, JobOutcome::Failed { exit_code: 1 }, "{log}");
    assert!(
        log.contains(
            "SAGEMAKER_ID_TOKEN: was issued for project \"ml/fraud\", not this job's project \"ml/churn\""
        ),
        "{log}"
    );
    let calls = w.calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("STS.") || c.starts_with("SageMaker.Create")),
        "{calls:?}"
    );
}

#[test]
fn a_ref_the_roles_trust_policy_does_not_admit_is_refused_by_sts_at_prepare() {
    let (w, _) = world();
    let t = token(
        &w,
        json!({"project_path": "ml/churn", "project_id": "7", "job_id": "4203", "ref": "feature", "aud": AUDIENCE}),
    );
    let result = w.runner.run(&train_job(&w, 4203, "feature", &t)).unwrap();
    let log = result.plain_log();
    // The trust policy's to refuse, not the runner's: a build failure, with STS's reason.
    assert_eq!(result.outcome, JobOutcome::Failed { exit_code: 1 }, "{log}");
    assert!(
        log.contains(&format!(
            "cannot assume {ROLE} with the job's GitLab ID token"
        )),
        "{log}"
    );
    assert!(log.contains("AccessDenied"), "{log}");
    let calls = w.calls();
    assert!(
        calls.contains(&"STS.AssumeRoleWithWebIdentity".to_owned()),
        "{calls:?}"
    );
    // Nothing after the refused exchange: no upload, no training job.
    let sts = calls
        .iter()
        .position(|c| c == "STS.AssumeRoleWithWebIdentity")
        .unwrap();
    assert!(
        calls[sts + 1..]
            .iter()
            .all(|c| c == "STS.AssumeRoleWithWebIdentity"),
        "{calls:?}"
    );
}

#[test]
fn a_wait_longer_than_a_session_renews_the_session_with_the_same_token() {
    let (w, _) = world();
    // Sessions end after 20 s (real ones last at least 15 min): the job outlives two of them,
    // and STS refuses a session's calls once it has ended.
    w.sim
        .post_json("/_sim/oidc/session-lifetime", &json!({"seconds": 20}))
        .unwrap();
    let t = token(
        &w,
        json!({"project_path": "ml/churn", "project_id": "7", "job_id": "4204", "ref": "main", "aud": AUDIENCE}),
    );
    let fixture = w.fixture(&format!(
        "name: train\nid: 4204\nref: main\nproject: {{path: ml/churn, id: 7}}\nimage: {ECR_IMAGE}\nvariables:\n  SAGEMAKER_ID_TOKEN: {{value: {t:?}, masked: true}}\nscript:\n  - sleep 45\n  - echo outlived-the-session\nsource:\n  README.md: \"x\\n\"\n"
    ));
    let result = w.runner.run(&fixture).unwrap();
    let log = result.plain_log();
    assert_eq!(result.outcome, JobOutcome::Success, "{log}");
    assert!(log.contains("outlived-the-session"), "{log}");
    let session = "arn:aws:sts::123456789012:assumed-role/ci-ml-churn/gitlab-7-4204";
    let calls = w.sim.calls_json().unwrap();
    let expired: Vec<&Value> = calls
        .iter()
        .filter(|c| c["error"] == "ExpiredToken")
        .collect();
    assert!(
        expired.is_empty(),
        "calls with an ended session: {expired:?}"
    );
    // The one wait of the script stage outlived its first session: its status calls span more
    // than a session, all made as the role, none refused.
    let describes: Vec<f64> = calls
        .iter()
        .filter(|c| c["op"] == "SageMaker.DescribeTrainingJob" && c["principal"] == session)
        .filter_map(|c| c["t"].as_f64())
        .collect();
    let span = describes.iter().copied().fold(f64::MIN, f64::max)
        - describes.iter().copied().fold(f64::MAX, f64::min);
    assert!(span > 30.0, "describes over {span:.0} s: {describes:?}");
    assert!(
        calls
            .iter()
            .filter(|c| c["op"] == "SageMaker.DescribeTrainingJob")
            .all(|c| c["principal"] == session),
        "{calls:?}"
    );
}
