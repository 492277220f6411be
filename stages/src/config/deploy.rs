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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{ConfigError, load_str};

    const BASE: &str = "region = \"us-east-1\"\n[paths]\nbuilds_root = \"/b\"\ncache_root = \"/c\"\n[staging]\nbucket = \"ci-staging\"\n";

    #[test]
    fn left_out_limits_are_closed_and_typos_are_refused() {
        let cfg = load_str(BASE, Path::new("t.toml")).expect("loads");
        let d = &cfg.policy.deploy;
        assert!(d.endpoints.is_empty() && d.instance_types.is_empty());
        assert!(
            d.stable_endpoints.allows("anything"),
            "every endpoint is stable"
        );
        assert_eq!(d.max_instance_count, 1);
        assert!(!d.allow_serverless && !d.unapproved_to_candidates);

        let text = format!(
            "{BASE}[policy.deploy]\nendpoints = [\"churn-*\"]\nstable_endpoint = [\"*-stable\"]\nmax_instance_count = 0\ninstance_types = [\"ml.[\"]\n"
        );
        let Err(ConfigError::Invalid { problems, .. }) = load_str(&text, Path::new("t.toml"))
        else {
            panic!("refused");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"policy.deploy.stable_endpoint"), "{keys:?}");
        assert!(
            keys.contains(&"policy.deploy.max_instance_count"),
            "{keys:?}"
        );
        assert!(keys.contains(&"policy.deploy.instance_types"), "{keys:?}");
    }
}
