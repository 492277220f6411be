//! Metric gates: `accuracy>=0.8,f1>=0.7` parsed into rules and evaluated against metric values.
//! Jobs write them in `SAGEMAKER_APPROVAL_GATES`; admins require them per model package group.

use std::fmt;

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `>=`
    Ge,
    /// `>`
    Gt,
    /// `<=`
    Le,
    /// `<`
    Lt,
    /// `==`
    Eq,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Ge => ">=",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Lt => "<",
            Op::Eq => "==",
        }
    }

    fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Ge => value >= threshold,
            Op::Gt => value > threshold,
            Op::Le => value <= threshold,
            Op::Lt => value < threshold,
            Op::Eq => value == threshold,
        }
    }
}

/// One gate: a metric, a comparison and a threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    /// The metric's name (`[A-Za-z0-9_.:-]`, at most 255).
    pub metric: String,
    /// The comparison.
    pub op: Op,
    /// The threshold (finite).
    pub threshold: f64,
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.metric, self.op.as_str(), self.threshold)
    }
}

impl Gate {
    /// Whether `value` passes.
    pub fn passes(&self, value: f64) -> bool {
        value.is_finite() && self.op.holds(value, self.threshold)
    }

    /// The rule as the table shows it: `>= 0.8`.
    pub fn rule(&self) -> String {
        format!("{} {}", self.op.as_str(), self.threshold)
    }
}

/// Longest gate list accepted.
const MAX_GATES: usize = 32;
const MAX_METRIC_NAME: usize = 255;

/// Parses `accuracy>=0.8, f1 > 0.7`; the error names the part and the rule.
pub fn parse(text: &str) -> Result<Vec<Gate>, String> {
    let mut gates = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if gates.len() == MAX_GATES {
            return Err(format!("more than {MAX_GATES} gates"));
        }
        let shown = crate::excerpt::quoted(part);
        // Two-character operators first, so `>=` is not read as `>` then `=0.8`.
        let found = [
            (">=", Op::Ge),
            ("<=", Op::Le),
            ("==", Op::Eq),
            (">", Op::Gt),
            ("<", Op::Lt),
        ]
        .into_iter()
        .find_map(|(sym, op)| part.find(sym).map(|at| (at, sym.len(), op)));
        let Some((at, len, op)) = found else {
            return Err(format!(
                "{shown} is not a gate (write metric>=number, with >=, >, <=, < or ==)"
            ));
        };
        let metric = part[..at].trim();
        let number = part[at + len..].trim();
        if metric.is_empty()
            || metric.len() > MAX_METRIC_NAME
            || !metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
        {
            return Err(format!(
                "{shown}: the metric name must be 1-{MAX_METRIC_NAME} of [A-Za-z0-9_.:-]"
            ));
        }
        let threshold = number
            .parse::<f64>()
            .ok()
            .filter(|t| t.is_finite())
            .ok_or_else(|| {
                format!(
                    "{shown}: {} is not a number",
                    crate::excerpt::quoted(number)
                )
            })?;
        gates.push(Gate {
            metric: metric.to_owned(),
            op,
            threshold,
        });
    }
    if gates.is_empty() {
        return Err("no gate given".to_owned());
    }
    Ok(gates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_parse_and_evaluate() {
        let g = parse("accuracy>=0.8, f1 > 0.7,loss<0.5,epochs==3, val:auc<=1").expect("gates");
        assert_eq!(g.len(), 5);
        assert_eq!(g[0].to_string(), "accuracy>=0.8");
        assert!(g[0].passes(0.8) && !g[0].passes(0.79));
        assert!(!g[1].passes(0.7) && g[1].passes(0.71));
        assert!(g[2].passes(0.4) && !g[2].passes(0.5));
        assert!(g[3].passes(3.0) && !g[3].passes(3.1));
        assert!(!g[0].passes(f64::NAN));
        assert_eq!(g[4].metric, "val:auc");
    }

    #[test]
    fn malformed_gates_name_the_part() {
        for (bad, needle) in [
            ("accuracy=>0.8", "metric name"),
            ("accuracy 0.8", "is not a gate"),
            (">=0.8", "metric name"),
            ("acc uracy>=1", "metric name"),
            ("accuracy>=inf", "not a number"),
            ("accuracy>=", "not a number"),
            ("", "no gate given"),
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains(needle), "{bad}: {e}");
        }
        let many = vec!["a>=1"; 40].join(",");
        assert!(parse(&many).is_err());
    }
}
