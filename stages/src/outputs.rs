//! Outputs for downstream jobs: `sagemaker.env` (a GitLab dotenv report: `KEY=value` lines only,
//! keys `[A-Za-z0-9_]`, under 5 KiB) and an OpenMetrics file for `artifacts:reports:metrics`.

use crate::joblog::JobLog;
use crate::project_files::{ProjectDir, ProjectFileError};

/// What an action hands downstream jobs: `sagemaker.env` pairs and metrics. Every action returns
/// one; the stage writes them once, after a failed run too (a failed training job still has a
/// name, a console link and maybe final metrics).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outputs {
    /// `KEY=value` pairs for `sagemaker.env`, in order.
    pub dotenv: Vec<(String, String)>,
    /// Metrics for the OpenMetrics file (not written when empty).
    pub metrics: Vec<(String, f64)>,
}

impl Outputs {
    /// Adds a dotenv pair.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.dotenv.push((key.to_owned(), value.into()));
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.dotenv.is_empty() && self.metrics.is_empty()
    }

    /// Writes `sagemaker.env` (and the metrics file when there are metrics) into the project
    /// dir, warning in the job log about pairs GitLab's dotenv rules would refuse.
    pub fn write(&self, project: &ProjectDir, log: &JobLog) -> Result<(), ProjectFileError> {
        if self.is_empty() {
            return Ok(());
        }
        let dropped = write_dotenv(project, &self.dotenv)?;
        if !dropped.is_empty() {
            log.warn(&format!(
                "left out of {DOTENV_FILE} (GitLab's size and format limits): {}",
                dropped.join(", ")
            ));
        }
        if !self.metrics.is_empty() {
            write_metrics(project, &self.metrics)?;
        }
        Ok(())
    }
}

/// Prefixes of the keys this executor writes into `sagemaker.env`. A downstream job on this
/// runner receives them as variables, so settings must not mistake them for typos.
pub const OUTPUT_KEY_PREFIXES: &[&str] = &[
    "SAGEMAKER_TRAINING_",
    "SAGEMAKER_FINAL_METRIC_",
    "SAGEMAKER_ECS_",
    "SAGEMAKER_GATE_",
];
/// Whole output keys outside those prefixes.
pub const OUTPUT_KEYS: &[&str] = &[
    "SAGEMAKER_CONSOLE_URL",
    "SAGEMAKER_MODEL_DATA",
    "SAGEMAKER_MODEL_PACKAGE_ARN",
    "SAGEMAKER_MODEL_PACKAGE_VERSION",
    "SAGEMAKER_MODEL_APPROVAL",
    "SAGEMAKER_GATES",
    "SAGEMAKER_RELEASE_BUNDLE",
    // deploy's: whole keys rather than a prefix, so a misspelt SAGEMAKER_ENDPOINT_* setting is
    // still refused (SAGEMAKER_ENDPOINT_NAME is also a setting: undeploy reads it).
    "SAGEMAKER_ENDPOINT_NAME",
    "SAGEMAKER_ENDPOINT_ARN",
    "SAGEMAKER_ENDPOINT_CONFIG_NAME",
    "SAGEMAKER_ENDPOINT_PREVIOUS_CONFIG_NAME",
    "SAGEMAKER_ENDPOINT_URL",
];

/// Whether `key` is one of this executor's own outputs.
pub fn is_output_key(key: &str) -> bool {
    OUTPUT_KEYS.contains(&key) || OUTPUT_KEY_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// The dotenv file's name in the project dir.
pub const DOTENV_FILE: &str = "sagemaker.env";
/// The metrics file's name in the project dir.
pub const METRICS_FILE: &str = "sagemaker-metrics.txt";
/// GitLab's default dotenv size limit is 5120 bytes; stay under it.
const DOTENV_LIMIT: usize = 5000;

/// A key made valid for GitLab dotenv (`[A-Za-z0-9_]`, at most 255).
pub fn dotenv_key(k: &str) -> String {
    k.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(255)
        .collect()
}

/// Renders dotenv lines, dropping empty keys, values with line breaks and lines past the size
/// limit. Returns the text and the keys left out.
pub fn render_dotenv(pairs: &[(String, String)]) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut dropped = Vec::new();
    for (k, v) in pairs {
        let key = dotenv_key(k);
        let line = format!("{key}={}\n", v.trim());
        if key.is_empty() || v.contains(['\n', '\r']) || out.len() + line.len() > DOTENV_LIMIT {
            dropped.push(k.clone());
            continue;
        }
        out.push_str(&line);
    }
    (out, dropped)
}

/// Writes `sagemaker.env` into the project dir (replacing, never following, a planted link).
pub fn write_dotenv(
    project: &ProjectDir,
    pairs: &[(String, String)],
) -> Result<Vec<String>, ProjectFileError> {
    let (text, dropped) = render_dotenv(pairs);
    project.write(DOTENV_FILE, text.as_bytes())?;
    Ok(dropped)
}

/// Renders metrics in the OpenMetrics text format GitLab's metrics report reads.
pub fn render_metrics(metrics: &[(String, f64)]) -> String {
    let mut out = String::new();
    for (name, value) in metrics {
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if value.is_finite() {
            out.push_str(&format!("{name} {value}\n"));
        }
    }
    out
}

/// Writes the metrics file into the project dir (replacing, never following, a planted link).
pub fn write_metrics(
    project: &ProjectDir,
    metrics: &[(String, f64)],
) -> Result<(), ProjectFileError> {
    project.write(METRICS_FILE, render_metrics(metrics).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_stays_within_gitlab_rules() {
        let (text, dropped) = render_dotenv(&[
            ("SAGEMAKER_TRAINING_JOB_NAME".into(), "gl-1-2".into()),
            ("bad-key".into(), "x".into()),
            ("MULTI".into(), "a\nb".into()),
            // A line without a key (`=x`) would make GitLab refuse the whole report.
            (String::new(), "x".into()),
        ]);
        assert_eq!(text, "SAGEMAKER_TRAINING_JOB_NAME=gl-1-2\nbad_key=x\n");
        assert_eq!(dropped, vec!["MULTI".to_owned(), String::new()]);
        let many: Vec<_> = (0..500)
            .map(|i| (format!("K{i}"), "v".repeat(20)))
            .collect();
        let (text, dropped) = render_dotenv(&many);
        assert!(text.len() <= DOTENV_LIMIT && !dropped.is_empty());
        assert!(text.lines().all(|l| l.split_once('=').is_some()));
    }

    #[test]
    fn metrics_are_openmetrics_lines() {
        assert_eq!(
            render_metrics(&[
                ("train:loss".into(), 0.25),
                ("acc-top1".into(), 0.9),
                ("nan".into(), f64::NAN)
            ]),
            "train:loss 0.25\nacc_top1 0.9\n"
        );
    }
}
