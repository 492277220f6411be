//! Evaluating a registration's gates against its metrics, deciding the approval the package gets,
//! and the gate table the job log shows.

use std::collections::BTreeMap;

use crate::policy::register::Approval;
use crate::settings::{GateFailure, GateSetting};

/// One gate's result.
#[derive(Debug, Clone, PartialEq)]
pub struct GateResult {
    /// The gate and who required it.
    pub gate: GateSetting,
    /// The metric's value.
    pub value: f64,
    /// Whether it passed.
    pub passed: bool,
}

/// Evaluates every gate; `Err` names the gates whose metric no source has.
pub fn evaluate(
    gates: &[GateSetting],
    metrics: &BTreeMap<String, f64>,
) -> Result<Vec<GateResult>, Vec<String>> {
    let missing: Vec<String> = gates
        .iter()
        .filter(|g| !metrics.contains_key(&g.gate.metric))
        .map(|g| g.gate.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(missing);
    }
    Ok(gates
        .iter()
        .filter_map(|g| {
            let value = *metrics.get(&g.gate.metric)?;
            Some(GateResult {
                gate: g.clone(),
                value,
                passed: g.gate.passes(value),
            })
        })
        .collect())
}

/// The approval status a package gets in SageMaker's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `PendingManualApproval`.
    Pending,
    /// `Approved`.
    Approved,
    /// `Rejected`.
    Rejected,
}

impl Status {
    /// SageMaker's spelling.
    pub fn as_sagemaker(self) -> &'static str {
        match self {
            Status::Pending => "PendingManualApproval",
            Status::Approved => "Approved",
            Status::Rejected => "Rejected",
        }
    }
}

/// What the registration decided, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The package's status.
    pub status: Status,
    /// One line: why (also the package's approval description).
    pub reason: String,
    /// Whether the job fails (a failed gate with `SAGEMAKER_GATE_FAILURE=fail`).
    pub fail_job: bool,
}

/// Decides the approval: `auto` approves only when every gate passed and the ref is protected;
/// a failed gate follows `on_failure` whatever was asked.
pub fn decide(
    asked: Approval,
    results: &[GateResult],
    ref_protected: bool,
    on_failure: GateFailure,
) -> Decision {
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| format!("{} (value {})", r.gate.gate, r.value))
        .collect();
    if !failed.is_empty() {
        let why = format!("gate failed: {}", failed.join(", "));
        return match on_failure {
            GateFailure::Pending => Decision {
                status: Status::Pending,
                reason: format!("{why}; left pending (SAGEMAKER_GATE_FAILURE=pending)"),
                fail_job: false,
            },
            GateFailure::Reject => Decision {
                status: Status::Rejected,
                reason: format!("{why}; rejected (SAGEMAKER_GATE_FAILURE=reject)"),
                fail_job: false,
            },
            GateFailure::Fail => Decision {
                status: Status::Pending,
                reason: format!(
                    "{why}; left pending and the job fails (SAGEMAKER_GATE_FAILURE=fail)"
                ),
                fail_job: true,
            },
        };
    }
    let passed = if results.is_empty() {
        "no gates".to_owned()
    } else {
        format!("all {} gates passed", results.len())
    };
    match asked {
        Approval::Pending => Decision {
            status: Status::Pending,
            reason: format!("{passed}; approval pending as asked (SAGEMAKER_APPROVAL=pending)"),
            fail_job: false,
        },
        Approval::Approved => Decision {
            status: Status::Approved,
            reason: format!("{passed}; approved as asked (SAGEMAKER_APPROVAL=approved)"),
            fail_job: false,
        },
        Approval::Auto if ref_protected => Decision {
            status: Status::Approved,
            reason: format!("{passed} on a protected ref; approved (SAGEMAKER_APPROVAL=auto)"),
            fail_job: false,
        },
        Approval::Auto => Decision {
            status: Status::Pending,
            reason: format!(
                "{passed}, but the ref is not protected; left pending (SAGEMAKER_APPROVAL=auto approves only on protected refs)"
            ),
            fail_job: false,
        },
    }
}

/// The gate table: metric, rule, value, pass/fail, one row per gate.
pub fn table(results: &[GateResult]) -> Vec<String> {
    let mut rows = vec![(
        "metric".to_owned(),
        "rule".to_owned(),
        "value".to_owned(),
        "result".to_owned(),
    )];
    for r in results {
        let result = match (r.passed, r.gate.required) {
            (true, false) => "pass",
            (true, true) => "pass (required by the runner)",
            (false, false) => "FAIL",
            (false, true) => "FAIL (required by the runner)",
        };
        rows.push((
            r.gate.gate.metric.clone(),
            r.gate.gate.rule(),
            r.value.to_string(),
            result.to_owned(),
        ));
    }
    let width = |f: fn(&(String, String, String, String)) -> &String| {
        rows.iter().map(|r| f(r).chars().count()).max().unwrap_or(0)
    };
    let (w0, w1, w2) = (width(|r| &r.0), width(|r| &r.1), width(|r| &r.2));
    rows.iter()
        .map(|(a, b, c, d)| format!("  {a:<w0$}  {b:<w1$}  {c:<w2$}  {d}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::gates;

    fn results(text: &str, values: &[(&str, f64)]) -> Vec<GateResult> {
        let gates: Vec<GateSetting> = gates::parse(text)
            .expect("gates")
            .into_iter()
            .map(|gate| GateSetting {
                gate,
                required: false,
            })
            .collect();
        let metrics = values.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        evaluate(&gates, &metrics).expect("all metrics there")
    }

    #[test]
    fn auto_approves_only_passing_gates_on_protected_refs() {
        let pass = results("accuracy>=0.8,f1>=0.7", &[("accuracy", 0.9), ("f1", 0.75)]);
        let d = decide(Approval::Auto, &pass, true, GateFailure::Pending);
        assert_eq!(d.status, Status::Approved);
        let d = decide(Approval::Auto, &pass, false, GateFailure::Pending);
        assert_eq!(d.status, Status::Pending);
        assert!(d.reason.contains("not protected"), "{}", d.reason);
        let d = decide(Approval::Pending, &pass, true, GateFailure::Pending);
        assert_eq!(d.status, Status::Pending);
    }

    #[test]
    fn a_failed_gate_follows_the_configured_behaviour() {
        let fail = results("accuracy>=0.8,f1>=0.7", &[("accuracy", 0.9), ("f1", 0.5)]);
        for (on, status, fails) in [
            (GateFailure::Pending, Status::Pending, false),
            (GateFailure::Reject, Status::Rejected, false),
            (GateFailure::Fail, Status::Pending, true),
        ] {
            let d = decide(Approval::Auto, &fail, true, on);
            assert_eq!((d.status, d.fail_job), (status, fails), "{on:?}");
            assert!(d.reason.contains("f1>=0.7 (value 0.5)"), "{}", d.reason);
        }
        let d = decide(Approval::Approved, &fail, true, GateFailure::Pending);
        assert_eq!(
            d.status,
            Status::Pending,
            "asking for approved does not skip gates"
        );
        let rows = table(&fail);
        assert!(rows[0].contains("metric") && rows[0].contains("result"));
        assert!(rows[2].contains("f1") && rows[2].contains(">= 0.7") && rows[2].contains("FAIL"));
    }

    #[test]
    fn missing_metrics_are_named() {
        let gates: Vec<GateSetting> = gates::parse("auc>=0.9")
            .expect("gate")
            .into_iter()
            .map(|gate| GateSetting {
                gate,
                required: true,
            })
            .collect();
        assert_eq!(
            evaluate(&gates, &BTreeMap::new()),
            Err(vec!["auc>=0.9".to_owned()])
        );
    }
}
