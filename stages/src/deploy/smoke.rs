//! The smoke test after a rollout: the request file from the repository sent with
//! InvokeEndpoint, and the answer checked against the expected status and body pattern.
//!
//! The request is read before anything is created (a missing or oversized file fails the job
//! with nothing to undo). A model's non-2xx answer arrives as a `ModelError` carrying the
//! model's status and message, so a test may also expect a refusal (e.g. 400 for a bad input).
//! Only short excerpts of the answer are printed: it is the model's output, possibly large.

use aws_sdk_sagemakerruntime::operation::invoke_endpoint::InvokeEndpointError;
use aws_smithy_types::Blob;

use crate::aws::errors::AwsCallError;
use crate::ctx::StageCtx;
use crate::excerpt;
use crate::project_files::{ProjectDir, ProjectFileError};
use crate::settings::SmokeTest;

/// Largest request file sent: InvokeEndpoint takes at most 6 MB (4 MB serverless).
pub const MAX_REQUEST_BYTES: u64 = 4 * 1024 * 1024;

/// Reads the request file from the checkout, confined to the project dir and capped.
pub fn read_request(ctx: &StageCtx<'_>, t: &SmokeTest) -> Result<Vec<u8>, ProjectFileError> {
    ProjectDir::open(ctx.project_dir)?.read(&t.request_file, MAX_REQUEST_BYTES)
}

/// How a smoke test went.
#[derive(Debug)]
pub enum Smoke {
    /// The answer was as expected; the text says what was checked.
    Passed(String),
    /// The answer was not as expected; the text says how.
    Failed(String),
    /// The endpoint could not be asked (AWS, not the model).
    Error(AwsCallError),
}

/// Checks an answer with `status` and `body` against `t`: the pass summary or the failure.
pub fn check(t: &SmokeTest, status: u16, body: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(body);
    let shown = excerpt::quoted(text.trim());
    if status != t.expect_status {
        return Err(format!(
            "the model answered {status}, expected {} (body {shown})",
            t.expect_status
        ));
    }
    match &t.expect_body {
        None => Ok(format!("answered {status} ({} bytes)", body.len())),
        Some(pattern) => {
            let re = regex::RegexBuilder::new(pattern)
                .size_limit(1 << 20)
                .build()
                .map_err(|_| format!("{} is not a valid regex", excerpt::quoted(pattern)))?;
            if re.is_match(&text) {
                Ok(format!(
                    "answered {status}, body matches /{}/",
                    excerpt::plain(pattern, 60)
                ))
            } else {
                Err(format!(
                    "the body {shown} does not match /{}/ (SAGEMAKER_SMOKE_EXPECT)",
                    excerpt::plain(pattern, 60)
                ))
            }
        }
    }
}

/// Sends the request to `endpoint` and checks the answer.
pub async fn run(
    ctx: &StageCtx<'_>,
    runtime: &aws_sdk_sagemakerruntime::Client,
    endpoint: &str,
    t: &SmokeTest,
    body: Vec<u8>,
) -> Smoke {
    let len = body.len();
    ctx.log.line(&format!(
        "Smoke test: InvokeEndpoint {endpoint} with {} ({len} bytes, {})",
        excerpt::plain(&t.request_file, 96),
        excerpt::plain(&t.content_type, 60)
    ));
    let sent = runtime
        .invoke_endpoint()
        .endpoint_name(endpoint)
        .content_type(&t.content_type)
        .body(Blob::new(body))
        .send()
        .await;
    let (status, answer) = match sent {
        Ok(out) => (
            200u16,
            out.body().map(|b| b.as_ref().to_vec()).unwrap_or_default(),
        ),
        Err(e) => match e.as_service_error() {
            Some(InvokeEndpointError::ModelError(m)) => (
                m.original_status_code()
                    .and_then(|c| u16::try_from(c).ok())
                    .unwrap_or(0),
                m.original_message().unwrap_or_default().as_bytes().to_vec(),
            ),
            _ => {
                let err = AwsCallError::new("InvokeEndpoint", e);
                return if err.retry().is_retryable() {
                    Smoke::Error(err)
                } else {
                    // The endpoint refused the request itself (e.g. a content type or size it
                    // does not take): the deployment does not serve it.
                    Smoke::Failed(err.to_string())
                };
            }
        },
    };
    match check(t, status, &answer) {
        Ok(summary) => Smoke::Passed(summary),
        Err(reason) => Smoke::Failed(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test(status: u16, pattern: Option<&str>) -> SmokeTest {
        SmokeTest {
            request_file: "smoke.json".into(),
            content_type: "application/json".into(),
            expect_status: status,
            expect_body: pattern.map(str::to_owned),
        }
    }

    #[test]
    fn status_and_body_are_checked() {
        assert!(check(&test(200, None), 200, b"{}").is_ok());
        let e = check(&test(200, None), 500, b"boom").expect_err("status");
        assert_eq!(e, "the model answered 500, expected 200 (body \"boom\")");
        assert!(
            check(
                &test(200, Some("\"label\":\\s*\"cat\"")),
                200,
                b"{\"label\": \"cat\"}"
            )
            .is_ok()
        );
        let e = check(&test(200, Some("cat")), 200, b"dog").expect_err("body");
        assert!(e.contains("does not match /cat/"), "{e}");
        assert!(check(&test(400, None), 400, b"bad input").is_ok());
        let long = "x".repeat(10_000);
        let e = check(&test(200, Some("cat")), 200, long.as_bytes()).expect_err("body");
        assert!(e.len() < 200, "only an excerpt: {e}");
    }
}
