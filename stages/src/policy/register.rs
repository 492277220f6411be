//! `[policy.register]`, validated: which model package groups and inference images a job may
//! use, which approvals an unprotected ref may set, the gates an admin requires per group, and
//! how large a model archive a release bundle may copy.

use std::collections::BTreeSet;
use std::fmt;

use super::Patterns;
use super::gates::Gate;

/// What a register job asks for the new model package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Approval {
    /// Always `PendingManualApproval`.
    Pending,
    /// Always `Approved` (gates still checked).
    Approved,
    /// `Approved` when every gate passes and the ref is protected, else pending.
    Auto,
}

impl Approval {
    /// The spelling in `SAGEMAKER_APPROVAL` and the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Approval::Pending => "pending",
            Approval::Approved => "approved",
            Approval::Auto => "auto",
        }
    }

    /// Parses `pending`, `approved` or `auto`.
    pub fn parse(s: &str) -> Option<Approval> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pending" => Some(Approval::Pending),
            "approved" => Some(Approval::Approved),
            "auto" => Some(Approval::Auto),
            _ => None,
        }
    }
}

impl fmt::Display for Approval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[policy.register]`.
#[derive(Debug, Clone, Default)]
pub struct RegisterPolicy {
    /// Model package groups a job may register into (none by default).
    pub groups: Patterns,
    /// Inference images a package may name (ECR by default).
    pub images: Patterns,
    /// Approvals a job on an unprotected ref may ask for (`pending` by default).
    pub unprotected_approvals: BTreeSet<Approval>,
    /// Gates every package of a matching group must pass, on top of the job's own.
    pub required_gates: Vec<(Patterns, Vec<Gate>)>,
    /// Largest model archive a release bundle may copy (0: bundling the model is refused).
    pub max_bundle_bytes: u64,
}

impl RegisterPolicy {
    /// The gates the admin requires for `group`.
    pub fn required_for(&self, group: &str) -> Vec<Gate> {
        self.required_gates
            .iter()
            .filter(|(groups, _)| groups.allows(group))
            .flat_map(|(_, gates)| gates.iter().cloned())
            .collect()
    }
}
