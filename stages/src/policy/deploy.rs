//! `[policy.deploy]`, validated: the endpoints a job may create, update or delete.

use super::Patterns;

/// `[policy.deploy]`.
#[derive(Debug, Clone, Default)]
pub struct DeployPolicy {
    /// Endpoint names a job may deploy to or tear down.
    pub endpoints: Patterns,
}
