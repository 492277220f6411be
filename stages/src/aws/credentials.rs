//! Whose credentials a job's AWS calls use (`[aws] credentials`):
//!
//! - `runner`: the runner host's default chain, or `[aws] assume_role_arn` on top of it.
//! - `job`: the job's GitLab ID token (its `id_tokens` entry, a JWT GitLab signs for this one
//!   job) exchanged with STS AssumeRoleWithWebIdentity for a role the job's project may use.
//!
//! Before STS sees a token, the executor reads its claims and refuses what the policy refuses and
//! what IAM's trust policies cannot express: a token issued for another project or job (a token
//! copied into a variable), another audience, an expired one, an unprotected ref where the
//! project entry requires a protected one, an environment outside the entry's list. IAM then
//! verifies the signature and the role's trust policy. The executor never verifies signatures
//! itself, so these checks only ever narrow what IAM allows.
//!
//! Sessions carry the project and job in their name (`gitlab-<project id>-<job id>`, in
//! CloudTrail) and, with `session_tags`, as session tags through a second hop (AssumeRole on the
//! same role; AssumeRoleWithWebIdentity takes tags only from the token, which GitLab does not
//! put there). The provider is refreshed by the SDK's identity cache before a session ends, with
//! the same token, so waits longer than a session keep working for as long as the token is
//! valid. The cleanup stage resolves the same credentials from the same job.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, future};
use aws_sdk_sts::types::Tag;
use base64::Engine;
use serde::Deserialize;

use crate::config::{CredentialsMode, ExecutorConfig, JobCredentialsSettings};
use crate::job::Job;
use crate::policy::Rejection;
use crate::policy::projects::{self, ProjectPolicy};

/// Tag on every resource created with a job's role session: the role, so `gc` can act as it.
pub const ROLE_TAG: &str = "sagemaker-executor:role";

/// The job variable a job names its role with (else `aws.job_credentials.role_arn`).
pub const ROLE_VARIABLE: &str = "SAGEMAKER_AWS_ROLE_ARN";

/// Longest token read: GitLab's ID tokens are about 1 KiB; this bounds a hostile variable.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What one job's AWS calls run as.
#[derive(Clone, PartialEq, Eq)]
pub enum JobCredentials {
    /// The runner host's credentials.
    Runner,
    /// A role session for this job.
    Role(RoleSession),
}

/// A role session to open with the job's token.
#[derive(Clone, PartialEq, Eq)]
pub struct RoleSession {
    /// The role.
    pub role_arn: String,
    /// `gitlab-<project id>-<job id>`.
    pub session_name: String,
    /// The ID token (a secret: never printed, see the `Debug` impl).
    token: String,
    /// Requested session length.
    pub duration: Duration,
    /// Session tags added through a second hop; empty: one hop.
    pub tags: Vec<(String, String)>,
}

impl fmt::Debug for RoleSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleSession")
            .field("role_arn", &self.role_arn)
            .field("session_name", &self.session_name)
            .field("token", &"<redacted>")
            .field("duration", &self.duration)
            .field("tags", &self.tags)
            .finish()
    }
}

impl fmt::Debug for JobCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobCredentials::Runner => f.write_str("Runner"),
            JobCredentials::Role(s) => f.debug_tuple("Role").field(s).finish(),
        }
    }
}

impl JobCredentials {
    /// One line for the job log: whose credentials the job runs with.
    pub fn describe(&self) -> String {
        match self {
            JobCredentials::Runner => "the runner's".to_owned(),
            JobCredentials::Role(s) => format!(
                "role {} (session {}, from the job's GitLab ID token)",
                s.role_arn, s.session_name
            ),
        }
    }
}

/// The claims of a GitLab ID token the executor checks. GitLab sends booleans as strings.
#[derive(Debug, Deserialize)]
struct Claims {
    iss: Option<String>,
    #[serde(default)]
    aud: Audience,
    exp: Option<u64>,
    project_path: Option<String>,
    job_id: Option<String>,
    ref_protected: Option<String>,
    environment: Option<String>,
}

/// `aud` is a string or a list of strings.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum Audience {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, want: &str) -> bool {
        match self {
            Audience::None => false,
            Audience::One(a) => a == want,
            Audience::Many(list) => list.iter().any(|a| a == want),
        }
    }
}

/// Reads a JWT's payload without verifying it (IAM verifies); the reason when it is not one.
fn read_claims(token: &str) -> Result<Claims, &'static str> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err("is longer than an ID token can be");
    }
    let mut parts = token.trim().split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("is not a GitLab ID token (a JWT of three dot-separated parts)");
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| "is not a GitLab ID token (its payload is not base64url)")?;
    serde_json::from_slice(&bytes)
        .map_err(|_| "is not a GitLab ID token (its payload is not a JSON claims object)")
}

fn unix_now(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Resolves whose credentials `job` runs with, refusing what the policy refuses. Pure: no AWS
/// call (see [`verify`] for the first STS exchange).
///
/// # Errors
/// One [`Rejection`] per problem, naming the variable and the rule.
pub fn for_job(
    cfg: &ExecutorConfig,
    job: &Job,
    now: SystemTime,
) -> Result<JobCredentials, Vec<Rejection>> {
    match &cfg.aws.credentials {
        CredentialsMode::Runner => Ok(JobCredentials::Runner),
        CredentialsMode::Job(settings) => {
            role_session(settings, &cfg.policy.projects, job, now).map(JobCredentials::Role)
        }
    }
}

fn role_session(
    settings: &JobCredentialsSettings,
    policy: &[ProjectPolicy],
    job: &Job,
    now: SystemTime,
) -> Result<RoleSession, Vec<Rejection>> {
    let var = settings.token_variable.as_str();
    let reject = |reason: String| vec![Rejection::new(var, reason)];
    let Some(token) = job
        .variables
        .get(var)
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        return Err(reject(format!(
            "is not set; this runner gives jobs AWS credentials only through a GitLab ID token: add `id_tokens: {{{var}: {{aud: {}}}}}` to the job",
            settings.audience
        )));
    };
    let claims = read_claims(token).map_err(|r| reject(r.to_owned()))?;
    let iss = claims.iss.as_deref().unwrap_or_default();
    if iss.trim_end_matches('/') != settings.issuer {
        return Err(reject(format!(
            "was issued by {}, not by aws.job_credentials.issuer {}",
            crate::excerpt::quoted(iss),
            crate::excerpt::quoted(&settings.issuer)
        )));
    }
    if !claims.aud.contains(&settings.audience) {
        return Err(reject(format!(
            "was not issued for audience {} (aws.job_credentials.audience): set `aud: {}` in the job's id_tokens",
            crate::excerpt::quoted(&settings.audience),
            settings.audience
        )));
    }
    match claims.exp {
        Some(exp) if exp > unix_now(now) => {}
        _ => return Err(reject("has expired".to_owned())),
    }
    let project = claims.project_path.as_deref().unwrap_or_default();
    if project != job.project_path {
        return Err(reject(format!(
            "was issued for project {}, not this job's project {}",
            crate::excerpt::quoted(project),
            crate::excerpt::quoted(&job.project_path)
        )));
    }
    let job_id = claims.job_id.as_deref().unwrap_or_default();
    if job_id != job.id.to_string() {
        return Err(reject(format!(
            "was issued for job {}, not this job ({})",
            crate::excerpt::quoted(job_id),
            job.id
        )));
    }

    let (role, setting) = match job
        .variables
        .get(ROLE_VARIABLE)
        .map(str::trim)
        .filter(|r| !r.is_empty())
    {
        Some(r) => (r.to_owned(), ROLE_VARIABLE),
        None => match &settings.role_arn {
            Some(template) => (
                projects::expand_role(template, &job.project_path),
                "aws.job_credentials.role_arn",
            ),
            None => {
                return Err(vec![Rejection::new(
                    ROLE_VARIABLE,
                    "is not set and the runner has no aws.job_credentials.role_arn: name the role to assume",
                )]);
            }
        },
    };
    if !crate::names::is_role_arn(&role) {
        return Err(vec![Rejection::new(
            setting,
            format!("{} is not an IAM role ARN", crate::excerpt::quoted(&role)),
        )]);
    }
    let entries = projects::entries_allowing(policy, &job.project_path, &role, setting)
        .map_err(|r| vec![r])?;
    let protected = job.ref_protected && claims.ref_protected.as_deref() == Some("true");
    let environment = claims.environment.as_deref();
    let mut refusals = Vec::new();
    for entry in entries {
        if entry.require_protected_ref && !protected {
            refusals.push(format!(
                "{} may be used only from a protected ref ({}.require_protected_ref)",
                crate::excerpt::quoted(&role),
                entry.rule()
            ));
            continue;
        }
        if let Some(allowed) = &entry.environments {
            let ok = environment.is_some_and(|e| allowed.allows(e));
            if !ok {
                refusals.push(format!(
                    "{} may be used only by jobs deploying to {} ({}.environments); this job's environment is {}",
                    crate::excerpt::quoted(&role),
                    allowed,
                    entry.rule(),
                    environment.map_or("none".to_owned(), crate::excerpt::quoted)
                ));
                continue;
            }
        }
        return Ok(RoleSession {
            role_arn: role,
            session_name: format!("gitlab-{}-{}", job.project_id, job.id),
            token: token.to_owned(),
            duration: settings.session_duration,
            tags: if settings.session_tags {
                session_tags(job)
            } else {
                Vec::new()
            },
        });
    }
    Err(refusals
        .into_iter()
        .map(|r| Rejection::new(setting, r))
        .collect())
}

/// The tags a tagged session carries: who the job is (values made safe for STS).
fn session_tags(job: &Job) -> Vec<(String, String)> {
    [
        ("gitlab:project-path", job.project_path.clone()),
        ("gitlab:project-id", job.project_id.to_string()),
        ("gitlab:pipeline-id", job.pipeline_id.to_string()),
        ("gitlab:job-id", job.id.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), crate::job::tag_value(&v)))
    .collect()
}

/// Opens role sessions with the job's token; the SDK's identity cache calls it again before a
/// session ends.
#[derive(Debug, Clone)]
pub struct WebIdentityProvider {
    sts: aws_sdk_sts::Client,
    session: RoleSession,
}

/// Why a role session could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot assume {role} with the job's GitLab ID token: {message}")]
pub struct SessionError {
    /// The role.
    pub role: String,
    /// What STS said.
    pub message: String,
    /// What another try can achieve.
    pub retry: super::errors::Retry,
}

impl WebIdentityProvider {
    /// A provider for `session`, its STS calls made from `sdk` without any credentials
    /// (AssumeRoleWithWebIdentity is authenticated by the token alone).
    pub fn new(sdk: &SdkConfig, session: RoleSession) -> WebIdentityProvider {
        let mut conf = aws_sdk_sts::config::Builder::from(sdk);
        conf.set_credentials_provider(None);
        let conf = conf.build();
        WebIdentityProvider::from_client(aws_sdk_sts::Client::from_conf(conf), session)
    }

    /// A provider for `session` whose STS calls go through `sts`.
    pub fn from_client(sts: aws_sdk_sts::Client, session: RoleSession) -> WebIdentityProvider {
        WebIdentityProvider { sts, session }
    }

    /// Opens one session.
    ///
    /// # Errors
    /// [`SessionError`] with STS's reason.
    pub async fn open(&self) -> Result<Credentials, SessionError> {
        let s = &self.session;
        let failed = |message: String, retry| SessionError {
            role: s.role_arn.clone(),
            message,
            retry,
        };
        let secs = i32::try_from(s.duration.as_secs()).unwrap_or(i32::MAX);
        let out = self
            .sts
            .assume_role_with_web_identity()
            .role_arn(&s.role_arn)
            .role_session_name(&s.session_name)
            .web_identity_token(&s.token)
            .duration_seconds(secs)
            .send()
            .await
            .map_err(|e| failed(super::errors::describe(&e), super::errors::classify(&e)))?;
        let first = to_credentials(out.credentials(), "job-web-identity").ok_or_else(|| {
            failed(
                "STS returned no credentials".into(),
                super::errors::Retry::Transient,
            )
        })?;
        if s.tags.is_empty() {
            return Ok(first);
        }
        // AssumeRoleWithWebIdentity takes tags only from the token: a second hop adds them.
        let chained = aws_sdk_sts::Client::from_conf(
            self.sts
                .config()
                .to_builder()
                .credentials_provider(first)
                .build(),
        );
        let tags: Vec<Tag> = s
            .tags
            .iter()
            .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
            .collect();
        let out = chained
            .assume_role()
            .role_arn(&s.role_arn)
            .role_session_name(&s.session_name)
            .set_tags(Some(tags))
            .duration_seconds(secs.min(3600))
            .send()
            .await
            .map_err(|e| failed(super::errors::describe(&e), super::errors::classify(&e)))?;
        to_credentials(out.credentials(), "job-tagged-session").ok_or_else(|| {
            failed(
                "STS returned no credentials".into(),
                super::errors::Retry::Transient,
            )
        })
    }
}

/// STS's temporary credentials as the SDK's, expiring when STS says (`source` names them).
pub(crate) fn to_credentials(
    c: Option<&aws_sdk_sts::types::Credentials>,
    source: &'static str,
) -> Option<Credentials> {
    let c = c?;
    let expiry = SystemTime::try_from(*c.expiration()).ok();
    Some(Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        expiry,
        source,
    ))
}

impl ProvideCredentials for WebIdentityProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            self.open()
                .await
                .map_err(|e| CredentialsError::provider_error(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests;
