//! `[policy.deploy]`: what endpoint deployments and teardowns may do, read in two phases like
//! the rest of the config.

use serde::Deserialize;

use super::validate::Checker;
use crate::policy::{DeployPolicy, Patterns};

/// `[policy.deploy]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawDeployPolicy {
    pub endpoints: Option<Vec<String>>,
}

/// Checks `[policy.deploy]`; every limit left out defaults closed.
pub(super) fn validate(c: &mut Checker<'_>, raw: RawDeployPolicy) -> DeployPolicy {
    DeployPolicy {
        endpoints: c.patterns(
            "policy.deploy.endpoints",
            raw.endpoints,
            Patterns::default(),
        ),
    }
}
