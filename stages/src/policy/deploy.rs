//! `[policy.deploy]`, validated: the endpoints a job may create, update or delete, which of them
//! count as stable (protected refs only), the capacity a deployment may ask for, and whether an
//! unapproved model package may reach a candidate endpoint.

use super::Patterns;

/// `[policy.deploy]`.
#[derive(Debug, Clone, Default)]
pub struct DeployPolicy {
    /// Endpoint names a job may deploy to or tear down (none by default).
    pub endpoints: Patterns,
    /// Endpoint names that count as stable: deploying to or tearing them down needs a protected
    /// ref even when `policy.protected_ref_actions` lets candidates run anywhere (every endpoint
    /// by default).
    pub stable_endpoints: Patterns,
    /// Instance types an endpoint may run on (none by default).
    pub instance_types: Patterns,
    /// Most instances of one endpoint variant (1 by default).
    pub max_instance_count: u32,
    /// Whether serverless endpoints are allowed (no by default).
    pub allow_serverless: bool,
    /// Whether a package that is not `Approved` may be deployed to a candidate endpoint (no by
    /// default; stable endpoints never get one).
    pub unapproved_to_candidates: bool,
}
