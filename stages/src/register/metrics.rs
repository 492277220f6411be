//! Where a registration's metrics come from: a metrics JSON file in the workspace (read confined
//! to the project dir, size-capped), or the upstream training job's final metrics
//! (`SAGEMAKER_FINAL_METRIC_<name>` variables from its `sagemaker.env`).
//!
//! A metrics file is a JSON object whose values are numbers or `{"value": number}`, optionally
//! one level down under group keys, as SageMaker's model quality reports write them
//! (`{"binary_classification_metrics": {"accuracy": {"value": 0.9}}}`).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::job::Job;
use crate::project_files::{ProjectDir, ProjectFileError};

/// Largest metrics file read.
pub const MAX_METRICS_BYTES: u64 = 1024 * 1024;

/// Why the metrics file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The file could not be read from the checkout.
    #[error("SAGEMAKER_APPROVAL_METRICS_FILE: {0}")]
    Read(#[source] ProjectFileError),
    /// The file is not the JSON shape described in the module docs.
    #[error("SAGEMAKER_APPROVAL_METRICS_FILE: {file}: {why}")]
    Shape {
        /// The file.
        file: String,
        /// What is wrong.
        why: String,
    },
}

/// A number, or `{"value": number}`.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Object(o) => o.get("value").and_then(Value::as_f64),
        _ => None,
    }
    .filter(|f| f.is_finite())
}

/// Reads the metrics of `text` (see the module docs).
pub fn parse(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let root: Value = serde_json::from_str(text)
        .map_err(|e| format!("not JSON: {}", crate::excerpt::plain(&e.to_string(), 120)))?;
    let Value::Object(top) = root else {
        return Err("must be a JSON object of metric names to numbers".to_owned());
    };
    let mut out = BTreeMap::new();
    for (k, v) in &top {
        if let Some(n) = number(v) {
            out.insert(k.clone(), n);
        } else if let Value::Object(group) = v {
            for (inner, v) in group {
                if let Some(n) = number(v) {
                    out.entry(inner.clone()).or_insert(n);
                }
            }
        }
    }
    if out.is_empty() {
        return Err("has no metric (a name with a number, or {\"value\": number})".to_owned());
    }
    Ok(out)
}

/// The metrics of the file `rel` in the project dir.
pub fn from_file(project: &ProjectDir, rel: &str) -> Result<BTreeMap<String, f64>, MetricsError> {
    let text = project
        .read_text(rel, MAX_METRICS_BYTES)
        .map_err(MetricsError::Read)?;
    parse(&text).map_err(|why| MetricsError::Shape {
        file: crate::excerpt::plain(rel, 96),
        why,
    })
}

/// The upstream training job's final metrics.
pub fn from_upstream(job: &Job) -> BTreeMap<String, f64> {
    job.variables
        .with_prefix("SAGEMAKER_FINAL_METRIC_")
        .filter_map(|(name, v)| Some((name.to_owned(), v.trim().parse::<f64>().ok()?)))
        .filter(|(_, v)| v.is_finite())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_and_grouped_shapes() {
        let m = parse(r#"{"accuracy": 0.9, "f1": {"value": 0.8}, "name": "x"}"#).expect("flat");
        assert_eq!(m.get("accuracy"), Some(&0.9));
        assert_eq!(m.get("f1"), Some(&0.8));
        assert!(!m.contains_key("name"));
        let m = parse(r#"{"binary_classification_metrics": {"auc": {"value": 0.7}}}"#)
            .expect("grouped");
        assert_eq!(m.get("auc"), Some(&0.7));
        assert!(parse("[1, 2]").is_err());
        assert!(parse("{}").is_err());
        let e = parse("{not json").expect_err("syntax");
        assert!(e.starts_with("not JSON"), "{e}");
        let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
        assert!(
            parse(&deep).is_err(),
            "serde_json refuses deep nesting fast"
        );
    }
}
