//! The deployment side of `gc`: merge requests' candidate endpoints older than the retention
//! (their `on_stop` job never ran), then the endpoint configs and models of any deployment
//! that no endpoint serves any more. Stable endpoints are never swept.

use std::collections::{BTreeMap, HashSet};

use super::sessions::Sessions;
use super::{GcError, GcOptions, MANAGED_BY, Orphan, age_of, outcome, tags_of, with_note};
use crate::aws::errors::AwsCallError;
use crate::deploy::endpoint::{DEPLOYMENT_TAG, ENDPOINT_TAG};
use crate::resources;
use crate::state::{Phase, Resource, ResourceKind};

/// A SageMaker resource listed with its tags.
struct Listed {
    name: String,
    created: i64,
    tags: BTreeMap<String, String>,
}

impl Listed {
    fn ours(&self) -> bool {
        self.tags.get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1)
    }

    fn job(&self) -> String {
        self.tags.get("gitlab:job-id").cloned().unwrap_or_default()
    }
}

/// Sweeps candidate endpoints, then unserved configs and models.
pub(super) async fn sweep(
    sessions: &mut Sessions,
    live: &HashSet<String>,
    opts: GcOptions,
    found: &mut Vec<Orphan>,
) -> Result<(), GcError> {
    endpoints(sessions, live, opts, found).await?;
    configs_and_models(sessions, live, opts, found).await
}

async fn endpoints(
    sessions: &mut Sessions,
    live: &HashSet<String>,
    opts: GcOptions,
    found: &mut Vec<Orphan>,
) -> Result<(), GcError> {
    let aws = &sessions.runner().clone();
    let mut listed = Vec::new();
    let mut pages = aws.sagemaker.list_endpoints().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| GcError::List(AwsCallError::new("ListEndpoints", e)))?;
        for e in page.endpoints() {
            let (Some(name), Some(arn)) = (e.endpoint_name(), e.endpoint_arn()) else {
                continue;
            };
            listed.push(Listed {
                name: name.to_owned(),
                created: e.creation_time().map(|t| t.secs()).unwrap_or(0),
                tags: tags_of(aws, arn).await?,
            });
        }
    }
    for e in listed {
        let candidate = e.tags.get(DEPLOYMENT_TAG).map(String::as_str) == Some("candidate");
        let age = age_of(e.created);
        let job = e.job();
        if !e.ours() || !candidate || opts.keeps(live, &job, age) {
            continue;
        }
        // No scope: release deletes the endpoint itself.
        let resource = Resource {
            phase: Phase::Created,
            ..Resource::intended(ResourceKind::Endpoint, &e.name, None, "gc")
        };
        let outcome = if opts.dry_run {
            "would delete".to_owned()
        } else {
            let (aws, note) = sessions.for_tags(&e.tags).await;
            with_note(
                outcome(resources::release(aws, &resource, "gc").await, "deleted"),
                note,
            )
        };
        found.push(Orphan {
            kind: "candidate endpoint",
            id: e.name,
            job,
            age,
            outcome,
        });
    }
    Ok(())
}

async fn configs_and_models(
    sessions: &mut Sessions,
    live: &HashSet<String>,
    opts: GcOptions,
    found: &mut Vec<Orphan>,
) -> Result<(), GcError> {
    let aws = &sessions.runner().clone();
    let mut listed: Vec<(ResourceKind, Listed)> = Vec::new();
    let mut configs = aws
        .sagemaker
        .list_endpoint_configs()
        .into_paginator()
        .send();
    while let Some(page) = configs.next().await {
        let page = page.map_err(|e| GcError::List(AwsCallError::new("ListEndpointConfigs", e)))?;
        for c in page.endpoint_configs() {
            let (Some(name), Some(arn)) = (c.endpoint_config_name(), c.endpoint_config_arn())
            else {
                continue;
            };
            listed.push((
                ResourceKind::EndpointConfig,
                Listed {
                    name: name.to_owned(),
                    created: c.creation_time().map(|t| t.secs()).unwrap_or(0),
                    tags: tags_of(aws, arn).await?,
                },
            ));
        }
    }
    let mut models = aws.sagemaker.list_models().into_paginator().send();
    while let Some(page) = models.next().await {
        let page = page.map_err(|e| GcError::List(AwsCallError::new("ListModels", e)))?;
        for m in page.models() {
            let (Some(name), Some(arn)) = (m.model_name(), m.model_arn()) else {
                continue;
            };
            listed.push((
                ResourceKind::Model,
                Listed {
                    name: name.to_owned(),
                    created: m.creation_time().map(|t| t.secs()).unwrap_or(0),
                    tags: tags_of(aws, arn).await?,
                },
            ));
        }
    }
    for (kind, r) in listed {
        let age = age_of(r.created);
        let job = r.job();
        let Some(endpoint) = r.tags.get(ENDPOINT_TAG).cloned() else {
            continue;
        };
        if !r.ours() || opts.keeps(live, &job, age) {
            continue;
        }
        let name = match kind {
            ResourceKind::Model => "model",
            _ => "endpoint config",
        };
        // Scoped to its endpoint: release keeps what the endpoint serves or is updated to.
        let resource = Resource {
            phase: Phase::Created,
            ..Resource::intended(kind, &r.name, Some(&endpoint), "gc")
        };
        let outcome = if opts.dry_run {
            match resources::in_use(aws, &endpoint, &r.name).await {
                Ok(true) => continue,
                Ok(false) => "would delete".to_owned(),
                Err(e) => format!("cannot tell whether {endpoint} uses it: {e}"),
            }
        } else {
            let (aws, note) = sessions.for_tags(&r.tags).await;
            match resources::release(aws, &resource, "gc").await {
                // Served by its endpoint: not an orphan, not a row.
                Ok(resources::Released::LeftToAws(_)) => continue,
                other => with_note(outcome(other, "deleted"), note),
            }
        };
        found.push(Orphan {
            kind: name,
            id: r.name,
            job,
            age,
            outcome,
        });
    }
    Ok(())
}
