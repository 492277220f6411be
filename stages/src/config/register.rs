//! `[policy.register]`: model registration limits, read in two phases like the rest of the
//! config. Everything left out defaults closed: no group, ECR images only, `pending` only on
//! unprotected refs, no model archive in bundles.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::validate::Checker;
use crate::policy::register::Approval;
use crate::policy::{Patterns, RegisterPolicy, gates};

/// `[policy.register]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawRegisterPolicy {
    pub groups: Option<Vec<String>>,
    pub images: Option<Vec<String>>,
    pub unprotected_approvals: Option<Vec<String>>,
    pub required_gates: Option<BTreeMap<String, String>>,
    pub max_bundle_bytes: Option<u64>,
}

/// Checks `[policy.register]`.
pub(super) fn validate(c: &mut Checker<'_>, raw: RawRegisterPolicy) -> RegisterPolicy {
    let mut unprotected_approvals = BTreeSet::new();
    for a in raw
        .unprotected_approvals
        .unwrap_or_else(|| vec!["pending".to_owned()])
    {
        match Approval::parse(&a) {
            Some(approval) => {
                unprotected_approvals.insert(approval);
            }
            None => c.problem(
                "policy.register.unprotected_approvals",
                format!("{a:?} is not pending, approved or auto"),
            ),
        }
    }
    let mut required_gates = Vec::new();
    for (group, text) in raw.required_gates.unwrap_or_default() {
        let key = format!("policy.register.required_gates.{group:?}");
        let groups = c.patterns(&key, Some(vec![group.clone()]), Patterns::default());
        match gates::parse(&text) {
            Ok(g) => required_gates.push((groups, g)),
            Err(e) => c.problem(&key, e),
        }
    }
    RegisterPolicy {
        groups: c.patterns("policy.register.groups", raw.groups, Patterns::default()),
        images: c.patterns(
            "policy.register.images",
            raw.images,
            Patterns::compile(&["*.dkr.ecr.*.amazonaws.com/**"]).unwrap_or_default(),
        ),
        unprotected_approvals,
        required_gates,
        max_bundle_bytes: raw.max_bundle_bytes.unwrap_or(0),
    }
}
