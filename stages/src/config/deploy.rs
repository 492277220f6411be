//! `[policy.deploy]`: what endpoint deployments and teardowns may do, read in two phases like
//! the rest of the config. Every limit left out defaults closed: no endpoint, every endpoint
//! stable, no instance type, one instance, no serverless, approved packages only.

use serde::Deserialize;

use super::validate::Checker;
use crate::policy::{DeployPolicy, Patterns};

/// `[policy.deploy]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawDeployPolicy {
    pub endpoints: Option<Vec<String>>,
    pub stable_endpoints: Option<Vec<String>>,
    pub instance_types: Option<Vec<String>>,
    pub max_instance_count: Option<u32>,
    pub allow_serverless: Option<bool>,
    pub unapproved_to_candidates: Option<bool>,
}

/// Checks `[policy.deploy]`; every limit left out defaults closed.
pub(super) fn validate(c: &mut Checker<'_>, raw: RawDeployPolicy) -> DeployPolicy {
    DeployPolicy {
        endpoints: c.patterns(
            "policy.deploy.endpoints",
            raw.endpoints,
            Patterns::default(),
        ),
        // Closed: until the admin says which names are candidates, every endpoint is stable.
        stable_endpoints: c.patterns(
            "policy.deploy.stable_endpoints",
            raw.stable_endpoints,
            Patterns::compile(&["*"]).unwrap_or_default(),
        ),
        instance_types: c.patterns(
            "policy.deploy.instance_types",
            raw.instance_types,
            Patterns::default(),
        ),
        max_instance_count: c.positive(
            "policy.deploy.max_instance_count",
            raw.max_instance_count,
            1,
        ),
        allow_serverless: raw.allow_serverless.unwrap_or(false),
        unapproved_to_candidates: raw.unapproved_to_candidates.unwrap_or(false),
    }
}
