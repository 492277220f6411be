//! Settings of a model registration: group, model data and inference image (defaulting to the
//! upstream training job's outputs), content types, approval, metric gates and what a failed gate
//! does, the release bundle, all within `[policy.register]`.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Origin, Reader};
use crate::config::ExecutorConfig;
use crate::job::Job;
use crate::names::{is_ecr_image, s3_bucket};
use crate::policy::gates::{self, Gate};
use crate::policy::register::Approval;
use crate::policy::{check_allowed, check_image};

/// Variables a register job reads.
pub(super) const KNOWN: &[&str] = &[
    "SAGEMAKER_MODEL_PACKAGE_GROUP",
    "SAGEMAKER_MODEL_DATA",
    "SAGEMAKER_INFERENCE_IMAGE",
    "SAGEMAKER_CONTENT_TYPES",
    "SAGEMAKER_MODEL_DESCRIPTION",
    "SAGEMAKER_APPROVAL",
    "SAGEMAKER_APPROVAL_GATES",
    "SAGEMAKER_APPROVAL_METRICS_FILE",
    "SAGEMAKER_GATE_FAILURE",
    "SAGEMAKER_BUNDLE_MODEL",
];

/// What a failed gate does to the package and the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateFailure {
    /// The package stays `PendingManualApproval`; the job succeeds.
    Pending,
    /// The package is `Rejected`; the job succeeds.
    Reject,
    /// The package stays pending and the job fails.
    Fail,
}

impl GateFailure {
    /// The spelling in `SAGEMAKER_GATE_FAILURE`.
    pub fn as_str(self) -> &'static str {
        match self {
            GateFailure::Pending => "pending",
            GateFailure::Reject => "reject",
            GateFailure::Fail => "fail",
        }
    }
}

/// One gate and who asked for it.
#[derive(Debug, Clone, PartialEq)]
pub struct GateSetting {
    /// The rule.
    pub gate: Gate,
    /// Required by `[policy.register.required_gates]` (else the job's own).
    pub required: bool,
}

/// Everything a registration needs.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterSettings {
    /// The model package group (created if missing).
    pub group: String,
    /// `s3://` URI of `model.tar.gz`.
    pub model_data: String,
    /// Inference image (ECR).
    pub image: String,
    /// Content types the model accepts and answers with.
    pub content_types: Vec<String>,
    /// Package description.
    pub description: Option<String>,
    /// What approval the job asks for.
    pub approval: Approval,
    /// Gates, the job's and the admin's.
    pub gates: Vec<GateSetting>,
    /// A metrics JSON file in the workspace (else the upstream final metrics).
    pub metrics_file: Option<String>,
    /// What a failed gate does.
    pub on_gate_failure: GateFailure,
    /// Copy the model archive into the release bundle.
    pub bundle_model: bool,
    /// The policy's cap for that copy.
    pub max_bundle_bytes: u64,
}

/// `register:` in the spec file.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterSpec {
    /// Model package group (created if missing).
    pub model_package_group: Option<String>,
    /// `s3://` URI of the model archive (default: the upstream training job's).
    pub model_data: Option<String>,
    /// Inference image (default: the upstream training image).
    pub inference_image: Option<String>,
    /// Content types, e.g. `[application/json]`.
    pub content_types: Option<Vec<String>>,
    /// Package description.
    pub description: Option<String>,
    /// `pending`, `approved` or `auto`.
    pub approval: Option<String>,
    /// Gates, e.g. `accuracy>=0.8,f1>=0.7`.
    pub gates: Option<String>,
    /// Metrics JSON file in the repository or workspace.
    pub metrics_file: Option<String>,
    /// `pending`, `reject` or `fail`.
    pub gate_failure: Option<String>,
    /// Copy the model archive into the release bundle.
    pub bundle_model: Option<bool>,
}

/// The spec's register settings under their variable names.
pub(super) fn flatten(spec: &RegisterSpec, put: &mut dyn FnMut(&str, &str, Option<String>)) {
    put(
        "SAGEMAKER_MODEL_PACKAGE_GROUP",
        "register.model_package_group",
        spec.model_package_group.clone(),
    );
    put(
        "SAGEMAKER_MODEL_DATA",
        "register.model_data",
        spec.model_data.clone(),
    );
    put(
        "SAGEMAKER_INFERENCE_IMAGE",
        "register.inference_image",
        spec.inference_image.clone(),
    );
    put(
        "SAGEMAKER_CONTENT_TYPES",
        "register.content_types",
        spec.content_types.as_ref().map(|v| v.join(",")),
    );
    put(
        "SAGEMAKER_MODEL_DESCRIPTION",
        "register.description",
        spec.description.clone(),
    );
    put(
        "SAGEMAKER_APPROVAL",
        "register.approval",
        spec.approval.clone(),
    );
    put(
        "SAGEMAKER_APPROVAL_GATES",
        "register.gates",
        spec.gates.clone(),
    );
    put(
        "SAGEMAKER_APPROVAL_METRICS_FILE",
        "register.metrics_file",
        spec.metrics_file.clone(),
    );
    put(
        "SAGEMAKER_GATE_FAILURE",
        "register.gate_failure",
        spec.gate_failure.clone(),
    );
    put(
        "SAGEMAKER_BUNDLE_MODEL",
        "register.bundle_model",
        spec.bundle_model.map(|b| b.to_string()),
    );
}

/// Whether `name` is a SageMaker model package group name.
pub fn is_group_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The default group of a project: its path with every other character as `-`.
fn default_group(project_path: &str) -> String {
    let mut name: String = project_path
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name.truncate(63);
    name.trim_matches('-').to_owned()
}

/// Whether `s` looks like a MIME type.
fn is_content_type(s: &str) -> bool {
    let mut parts = s.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && p.len() <= 127
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "!#$&^_.+-".contains(c))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

pub(super) fn resolve(
    r: &mut Reader<'_>,
    job: &Job,
    cfg: &ExecutorConfig,
) -> Option<RegisterSettings> {
    let pol = &cfg.policy.register;
    let group = match r.text("SAGEMAKER_MODEL_PACKAGE_GROUP") {
        Some(s) => (s.value.trim().to_owned(), s.origin.clone()),
        None => (
            default_group(&job.project_path),
            Origin::Variable("SAGEMAKER_MODEL_PACKAGE_GROUP".into()),
        ),
    };
    let group = if !is_group_name(&group.0) {
        r.reject(
            &group.1,
            format!(
                "{} is not a model package group name (1-63 of [A-Za-z0-9-], no leading or trailing -)",
                crate::excerpt::quoted(&group.0)
            ),
        );
        None
    } else {
        check_allowed(
            &mut r.problems,
            &group.1.to_string(),
            &group.0,
            &pol.groups,
            "policy.register.groups",
        );
        Some(group.0)
    };

    let model_data = match r.text("SAGEMAKER_MODEL_DATA") {
        None => {
            r.reject(
                &Origin::Variable("SAGEMAKER_MODEL_DATA".into()),
                "no model to register: run this job after a train job whose sagemaker.env it receives (needs: [train] with artifacts:reports:dotenv), or set SAGEMAKER_MODEL_DATA to an s3:// model.tar.gz",
            );
            None
        }
        Some(s) => match s3_bucket(s.value.trim()) {
            None => {
                r.reject(
                    &s.origin,
                    format!("{} is not an s3:// URI", crate::excerpt::quoted(&s.value)),
                );
                None
            }
            Some(bucket) if !cfg.policy.train.buckets.allows(bucket) => {
                let origin = s.origin.clone();
                r.reject(
                    &origin,
                    format!(
                        "bucket {} is not allowed by policy.train.buckets {}",
                        crate::excerpt::quoted(bucket),
                        cfg.policy.train.buckets
                    ),
                );
                None
            }
            Some(_) => Some(s.value.trim().to_owned()),
        },
    };

    let image = match r.text("SAGEMAKER_INFERENCE_IMAGE") {
        Some(s) => Some((s.value.trim().to_owned(), s.origin.clone())),
        None => job
            .variables
            .get("SAGEMAKER_TRAINING_IMAGE")
            .filter(|v| !v.trim().is_empty())
            .map(|v| {
                (
                    v.trim().to_owned(),
                    Origin::Variable("SAGEMAKER_TRAINING_IMAGE".into()),
                )
            }),
    };
    let image = match image {
        None => {
            r.reject(
                &Origin::Variable("SAGEMAKER_INFERENCE_IMAGE".into()),
                "no inference image: set SAGEMAKER_INFERENCE_IMAGE, or run after a train job (its SAGEMAKER_TRAINING_IMAGE is the default)",
            );
            None
        }
        Some((img, origin)) if !is_ecr_image(&img) => {
            r.reject(
                &origin,
                format!(
                    "{} is not an ECR image; SageMaker serves models only from ECR",
                    crate::excerpt::quoted(&img)
                ),
            );
            None
        }
        Some((img, origin)) => {
            check_image(
                &mut r.problems,
                &origin.to_string(),
                &img,
                &pol.images,
                "policy.register.images",
            );
            Some(img)
        }
    };

    let content_types = match r.text("SAGEMAKER_CONTENT_TYPES") {
        None => vec!["application/json".to_owned()],
        Some(s) => {
            let types: Vec<String> = s
                .value
                .split(',')
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect();
            if types.is_empty() || types.len() > 10 || !types.iter().all(|t| is_content_type(t)) {
                let origin = s.origin.clone();
                r.reject(
                    &origin,
                    "must be 1-10 comma-separated MIME types such as application/json",
                );
            }
            types
        }
    };

    let description = r
        .text("SAGEMAKER_MODEL_DESCRIPTION")
        .map(|s| s.value.clone());
    if let Some(d) = &description
        && d.chars().count() > 1024
    {
        r.reject(
            &Origin::Variable("SAGEMAKER_MODEL_DESCRIPTION".into()),
            "at most 1024 characters",
        );
    }

    let approval = match r.text("SAGEMAKER_APPROVAL") {
        None => (
            Approval::Pending,
            Origin::Variable("SAGEMAKER_APPROVAL".into()),
        ),
        Some(s) => match Approval::parse(&s.value) {
            Some(a) => (a, s.origin.clone()),
            None => {
                let origin = s.origin.clone();
                r.reject(
                    &origin,
                    format!(
                        "{} is not pending, approved or auto",
                        crate::excerpt::quoted(&s.value)
                    ),
                );
                (Approval::Pending, origin)
            }
        },
    };
    if !job.ref_protected && !pol.unprotected_approvals.contains(&approval.0) {
        let allowed: Vec<&str> = pol
            .unprotected_approvals
            .iter()
            .map(|a| a.as_str())
            .collect();
        r.reject(
            &approval.1,
            format!(
                "{} on the unprotected ref {}: only [{}] is allowed there (policy.register.unprotected_approvals)",
                approval.0,
                crate::excerpt::quoted(&job.git_ref),
                allowed.join(", ")
            ),
        );
    }

    let mut gate_settings = Vec::new();
    if let Some(s) = r.text("SAGEMAKER_APPROVAL_GATES") {
        match gates::parse(&s.value) {
            Ok(g) => gate_settings.extend(g.into_iter().map(|gate| GateSetting {
                gate,
                required: false,
            })),
            Err(e) => {
                let origin = s.origin.clone();
                r.reject(&origin, e);
            }
        }
    }
    if let Some(g) = &group {
        gate_settings.extend(pol.required_for(g).into_iter().map(|gate| GateSetting {
            gate,
            required: true,
        }));
    }

    let metrics_file = match r.text("SAGEMAKER_APPROVAL_METRICS_FILE") {
        None => None,
        Some(s) => {
            let path = std::path::Path::new(s.value.trim());
            if path.is_absolute()
                || path.components().any(|c| {
                    !matches!(
                        c,
                        std::path::Component::Normal(_) | std::path::Component::CurDir
                    )
                })
            {
                let origin = s.origin.clone();
                r.reject(
                    &origin,
                    "must be a relative path inside the project directory, without `..`",
                );
                None
            } else {
                Some(s.value.trim().to_owned())
            }
        }
    };
    if metrics_file.is_none() {
        // Without a file the upstream final metrics are the only source; say now which gate
        // has nothing to read.
        for g in &gate_settings {
            let var = format!("SAGEMAKER_FINAL_METRIC_{}", g.gate.metric);
            if job.variables.get(&var).is_none() {
                r.reject(
                    &Origin::Variable("SAGEMAKER_APPROVAL_GATES".into()),
                    format!(
                        "gate {} names metric {} but no source has it: the upstream job set no {var} and SAGEMAKER_APPROVAL_METRICS_FILE is not set",
                        g.gate,
                        crate::excerpt::quoted(&g.gate.metric)
                    ),
                );
            }
        }
    }

    let on_gate_failure = match r.text("SAGEMAKER_GATE_FAILURE") {
        None => GateFailure::Pending,
        Some(s) => match s.value.trim().to_ascii_lowercase().as_str() {
            "pending" => GateFailure::Pending,
            "reject" => GateFailure::Reject,
            "fail" => GateFailure::Fail,
            _ => {
                let origin = s.origin.clone();
                r.reject(
                    &origin,
                    format!(
                        "{} is not pending, reject or fail",
                        crate::excerpt::quoted(&s.value)
                    ),
                );
                GateFailure::Pending
            }
        },
    };

    let bundle_model = r.flag("SAGEMAKER_BUNDLE_MODEL").unwrap_or(false);
    if bundle_model && pol.max_bundle_bytes == 0 {
        r.reject(
            &Origin::Variable("SAGEMAKER_BUNDLE_MODEL".into()),
            "copying the model into the release bundle is not allowed on this runner (policy.register.max_bundle_bytes is not set)",
        );
    }

    Some(RegisterSettings {
        group: group?,
        model_data: model_data?,
        image: image?,
        content_types,
        description,
        approval: approval.0,
        gates: gate_settings,
        metrics_file,
        on_gate_failure,
        bundle_model,
        max_bundle_bytes: pol.max_bundle_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_types() {
        assert!(is_group_name("churn-model"));
        assert!(!is_group_name("-x") && !is_group_name("a_b") && !is_group_name(""));
        assert!(!is_group_name(&"a".repeat(64)));
        assert_eq!(default_group("ml/churn_model"), "ml-churn-model");
        assert!(is_content_type("application/json") && is_content_type("text/csv"));
        assert!(!is_content_type("json") && !is_content_type("a/b/c") && !is_content_type("a/"));
    }
}
