//! Undoing a deployment that failed: an updated endpoint returns to the config it served
//! before (recorded in the state file before the update), a first deployment's endpoint is
//! deleted (it never served; unless the job keeps it for inspection), and the model and config
//! the failed deployment created are deleted once nothing uses them. Each step returns a
//! sentence for the job log and the error, so the job says what was rolled back.

use tokio::time::Instant;

use super::rollout::{EndpointWatch, Verdict, summarize};
use crate::ctx::StageCtx;
use crate::resources::{self, Released};
use crate::state::{Resource, ResourceKind};
use crate::watch::events::ResourceKey;
use crate::watch::{self, Followed};

/// Longest wait for an endpoint to return to its previous config.
const RESTORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Returns `endpoint` to config `previous` with an all-at-once update and waits for it.
/// `Ok` and `Err` both carry the sentence saying where the endpoint ended.
pub async fn restore(ctx: &StageCtx<'_>, endpoint: &str, previous: &str) -> Result<String, String> {
    let log = &ctx.log;
    log.section_start(
        "rollback",
        &format!("Returning {endpoint} to its previous config {previous}"),
        false,
    );
    let result = restore_inner(ctx, endpoint, previous).await;
    match &result {
        Ok(s) => log.notice(s),
        Err(s) => log.error(s),
    }
    log.section_end("rollback");
    result
}

async fn restore_inner(
    ctx: &StageCtx<'_>,
    endpoint: &str,
    previous: &str,
) -> Result<String, String> {
    // No DeploymentConfig: the old fleet comes back all at once, with no alarms that could
    // stop the way back.
    ctx.aws
        .sagemaker
        .update_endpoint()
        .endpoint_name(endpoint)
        .endpoint_config_name(previous)
        .send()
        .await
        .map_err(|e| {
            format!(
                "returning endpoint {endpoint} to its previous config {previous} failed: {}",
                crate::aws::errors::describe(&e)
            )
        })?;
    let mut w = EndpointWatch::new(
        ctx.aws.polling.sagemaker.clone(),
        endpoint,
        previous,
        ctx.log.clone(),
    );
    let mut events = ctx.state_events(ResourceKey::Endpoint(endpoint.to_owned()));
    let followed = watch::follow(
        &mut w,
        watch::Options::new(super::cadence(), ctx.cancel)
            .with_deadline(Instant::now() + RESTORE_TIMEOUT),
        events.as_mut().map(|(hints, _)| hints),
    )
    .await;
    drop(events);
    match followed {
        Ok(Followed::Done(Verdict::Serving, _)) => Ok(format!(
            "endpoint {endpoint} serves its previous config {previous} again"
        )),
        Ok(Followed::Done(v, ep)) => Err(format!(
            "returning endpoint {endpoint} to {previous} did not succeed ({v:?}): {}",
            summarize(&ep)
        )),
        Ok(Followed::Cancelled(last) | Followed::TimedOut(last)) => Err(format!(
            "stopped waiting for endpoint {endpoint} to return to {previous}: {}",
            last.as_ref()
                .map(summarize)
                .unwrap_or_else(|| "its state is unknown".to_owned())
        )),
        Err(e) => Err(format!(
            "cannot follow endpoint {endpoint} returning to {previous}: {e}"
        )),
    }
}

/// Deletes a first deployment's endpoint (it never served) unless the job keeps failed ones.
pub async fn remove_first(ctx: &StageCtx<'_>, endpoint: &str, keep: bool) -> String {
    if keep {
        return format!(
            "endpoint {endpoint} is kept for inspection (SAGEMAKER_KEEP_FAILED_ENDPOINT); delete it with an undeploy job"
        );
    }
    match resources::delete_endpoint(&ctx.aws, endpoint).await {
        Ok(_) => {
            if let Err(e) = ctx.state.finished(ResourceKind::Endpoint, endpoint) {
                ctx.log.warn(&e.to_string());
            }
            format!(
                "endpoint {endpoint} was deleted (a first deployment that failed leaves nothing serving)"
            )
        }
        Err(e) => format!("deleting endpoint {endpoint} failed ({e}); cleanup tries again"),
    }
}

/// Deletes the model and the config (both named `name`) a failed deployment created for
/// `endpoint`, once the endpoint no longer uses them; says what happened.
pub async fn discard(ctx: &StageCtx<'_>, endpoint: &str, name: &str) -> String {
    let mut done = Vec::new();
    // The config first: it names the model.
    for kind in [ResourceKind::EndpointConfig, ResourceKind::Model] {
        let r = Resource {
            phase: crate::state::Phase::Created,
            ..Resource::intended(kind, name, Some(endpoint), ctx.stage)
        };
        let what = resources::kind_name(kind);
        match resources::release(&ctx.aws, &r, "deployment failed").await {
            Ok(Released::Stopping(_)) => {
                done.push(format!("deleted {what} {name}"));
                if let Err(e) = ctx.state.finished(kind, name) {
                    ctx.log.warn(&e.to_string());
                }
            }
            Ok(Released::NothingRunning) => {
                if let Err(e) = ctx.state.finished(kind, name) {
                    ctx.log.warn(&e.to_string());
                }
            }
            Ok(Released::LeftToAws(why)) => done.push(format!("kept {what} {name}: {why}")),
            Err(e) => done.push(format!(
                "cannot delete {what} {name} ({e}); cleanup tries again"
            )),
        }
    }
    done.join("; ")
}
