//! The optional YAML spec file in the repository (`SAGEMAKER_SPEC`): the same settings as the job
//! variables, structured. Its JSON Schema is published as `runner-setup/spec.schema.json`.
//!
//! The file is read only at the script stage, after `get_sources` has checked the repository
//! out; `prepare` validates the variables alone.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// A duration: seconds, or text such as `90m`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum DurationSpec {
    /// Whole seconds.
    Seconds(u64),
    /// Text such as `2h 30m`.
    Text(String),
}

impl DurationSpec {
    fn text(&self) -> String {
        match self {
            DurationSpec::Seconds(s) => s.to_string(),
            DurationSpec::Text(t) => t.clone(),
        }
    }
}

/// The whole spec file.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// `train`, `fargate`, `register`, `deploy`, `undeploy` or `ecs-deploy`.
    pub action: Option<String>,
    /// Training job settings.
    pub train: Option<TrainSpec>,
    /// Fargate task settings.
    pub fargate: Option<FargateSpec>,
    /// ECS service deployment settings.
    pub ecs_deploy: Option<EcsDeploySpec>,
    /// Model registration settings.
    pub register: Option<super::RegisterSpec>,
    /// Endpoint deployment settings.
    pub deploy: Option<super::DeploySpec>,
}

/// `train:`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// e.g. `ml.g5.xlarge`.
    pub instance_type: Option<String>,
    /// Number of instances.
    pub instance_count: Option<u32>,
    /// EBS volume per instance, GiB.
    pub volume_size_gb: Option<u32>,
    /// Runtime limit.
    pub max_runtime: Option<DurationSpec>,
    /// Managed spot training.
    pub spot: Option<SpotSpec>,
    /// Input channels: name to `s3://` URI.
    pub inputs: Option<BTreeMap<String, String>>,
    /// Metric definitions: name to a regex with one capture group.
    pub metrics: Option<BTreeMap<String, String>>,
    /// Execution role ARN.
    pub role_arn: Option<String>,
    /// Model output `s3://` location.
    pub output_path: Option<String>,
    /// Warm pool keep-alive.
    pub keep_alive: Option<DurationSpec>,
    /// Extra tags.
    pub tags: Option<BTreeMap<String, String>>,
}

/// `train.spot:`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpotSpec {
    /// Use managed spot.
    pub enabled: Option<bool>,
    /// Longest total wait including spot interruptions.
    pub max_wait: Option<DurationSpec>,
    /// Where checkpoints are kept (`s3://`), synced with `/opt/ml/checkpoints`.
    pub checkpoint_s3_uri: Option<String>,
}

/// `fargate:`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FargateSpec {
    /// CPU units (256 … 16384).
    pub cpu: Option<u32>,
    /// Memory in MiB.
    pub memory: Option<u32>,
    /// Ephemeral storage in GiB (21 … 200).
    pub ephemeral_storage_gb: Option<u32>,
    /// Run on Fargate Spot.
    pub spot: Option<bool>,
    /// `X86_64` or `ARM64`.
    pub architecture: Option<String>,
    /// Task role ARN.
    pub task_role_arn: Option<String>,
}

/// `ecs_deploy:`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EcsDeploySpec {
    /// Cluster name or ARN.
    pub cluster: Option<String>,
    /// Service name.
    pub service: Option<String>,
    /// Container whose image changes.
    pub container: Option<String>,
    /// The new image.
    pub image: Option<String>,
    /// How long to wait for the rollout.
    pub timeout: Option<DurationSpec>,
}

/// Largest spec file the executor reads: a real one is a few hundred bytes, and the cap bounds
/// the parser's time and memory whatever the repository holds.
pub const MAX_SPEC_BYTES: u64 = 64 * 1024;

/// Parses spec text; the error names the key path and the problem, quoting at most short
/// excerpts. serde_yaml refuses documents nested deeper than its recursion limit (128) and alias
/// expansions beyond its repetition limit, so a hostile document is refused fast.
pub fn parse(text: &str) -> Result<Spec, String> {
    check_flow_depth(text)?;
    serde_yaml::from_str(text).map_err(|e| shorten_quotes(&e.to_string()))
}

/// Deepest `[`/`{` nesting accepted: a spec is two or three levels deep, and the YAML parser
/// spends seconds on tens of thousands of levels before serde sees the first one.
const MAX_FLOW_DEPTH: usize = 32;

/// Refuses flow collections nested deeper than [`MAX_FLOW_DEPTH`] (brackets inside quotes do not
/// count; unbalanced brackets in plain scalars, as in a metric regex, only ever over-count by a
/// little), before the parser sees the text.
fn check_flow_depth(text: &str) -> Result<(), String> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (line_no, line) in text.lines().enumerate() {
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') => break,
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Err(format!(
                            "nested deeper than {MAX_FLOW_DEPTH} levels at line {}",
                            line_no + 1
                        ));
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                (None, _) => {}
            }
        }
    }
    Ok(())
}

/// Reads and parses the spec file `rel` from the checkout, confined to the project dir and
/// capped at [`MAX_SPEC_BYTES`]. The error never contains the file's content beyond short
/// excerpts.
pub fn read(project: &crate::project_files::ProjectDir, rel: &str) -> Result<Spec, String> {
    let text = project
        .read_text(rel, MAX_SPEC_BYTES)
        .map_err(|e| e.to_string())?;
    parse(&text).map_err(|e| format!("{}: {e}", crate::excerpt::plain(rel, 96)))
}

/// A parser message with every quoted value cut to a short excerpt, on one line.
fn shorten_quotes(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(start) = rest.find(['"', '`']) {
        let quote = rest[start..].chars().next().unwrap_or('"');
        out.push_str(&rest[..=start]);
        let after = &rest[start + 1..];
        match after.find(quote) {
            Some(end) => {
                out.push_str(&crate::excerpt::plain(
                    &after[..end],
                    crate::excerpt::EXCERPT_CHARS,
                ));
                out.push(quote);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&crate::excerpt::plain(after, crate::excerpt::EXCERPT_CHARS));
                rest = "";
            }
        }
    }
    out.push_str(rest);
    crate::excerpt::plain(&out, 300)
}

/// The JSON Schema of the spec file.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Spec);
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

impl Spec {
    /// The spec's settings under the job-variable names they stand for, with their key paths.
    pub fn flatten(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        let mut put = |var: &str, key: &str, v: Option<String>| {
            if let Some(v) = v {
                out.push((var.to_owned(), key.to_owned(), v));
            }
        };
        put("SAGEMAKER_ACTION", "action", self.action.clone());
        if let Some(t) = &self.train {
            put(
                "SAGEMAKER_INSTANCE_TYPE",
                "train.instance_type",
                t.instance_type.clone(),
            );
            put(
                "SAGEMAKER_INSTANCE_COUNT",
                "train.instance_count",
                t.instance_count.map(|n| n.to_string()),
            );
            put(
                "SAGEMAKER_VOLUME_SIZE_GB",
                "train.volume_size_gb",
                t.volume_size_gb.map(|n| n.to_string()),
            );
            put(
                "SAGEMAKER_MAX_RUNTIME",
                "train.max_runtime",
                t.max_runtime.as_ref().map(DurationSpec::text),
            );
            put("SAGEMAKER_ROLE_ARN", "train.role_arn", t.role_arn.clone());
            put(
                "SAGEMAKER_OUTPUT_PATH",
                "train.output_path",
                t.output_path.clone(),
            );
            put(
                "SAGEMAKER_KEEP_ALIVE",
                "train.keep_alive",
                t.keep_alive.as_ref().map(DurationSpec::text),
            );
            if let Some(s) = &t.spot {
                put(
                    "SAGEMAKER_SPOT",
                    "train.spot.enabled",
                    s.enabled.map(|b| b.to_string()),
                );
                put(
                    "SAGEMAKER_MAX_WAIT",
                    "train.spot.max_wait",
                    s.max_wait.as_ref().map(DurationSpec::text),
                );
                put(
                    "SAGEMAKER_CHECKPOINT_S3_URI",
                    "train.spot.checkpoint_s3_uri",
                    s.checkpoint_s3_uri.clone(),
                );
            }
            for (name, uri) in t.inputs.iter().flatten() {
                put(
                    &format!("SAGEMAKER_INPUT_{}", name.to_uppercase()),
                    &format!("train.inputs.{name}"),
                    Some(uri.clone()),
                );
            }
            for (name, re) in t.metrics.iter().flatten() {
                put(
                    &format!("SAGEMAKER_METRIC_{name}"),
                    &format!("train.metrics.{name}"),
                    Some(re.clone()),
                );
            }
            for (k, v) in t.tags.iter().flatten() {
                put(
                    &format!("SAGEMAKER_TAG_{k}"),
                    &format!("train.tags.{k}"),
                    Some(v.clone()),
                );
            }
        }
        if let Some(f) = &self.fargate {
            put("FARGATE_CPU", "fargate.cpu", f.cpu.map(|n| n.to_string()));
            put(
                "FARGATE_MEMORY",
                "fargate.memory",
                f.memory.map(|n| n.to_string()),
            );
            put(
                "FARGATE_EPHEMERAL_STORAGE_GB",
                "fargate.ephemeral_storage_gb",
                f.ephemeral_storage_gb.map(|n| n.to_string()),
            );
            put(
                "FARGATE_SPOT",
                "fargate.spot",
                f.spot.map(|b| b.to_string()),
            );
            put(
                "FARGATE_ARCHITECTURE",
                "fargate.architecture",
                f.architecture.clone(),
            );
            put(
                "FARGATE_TASK_ROLE_ARN",
                "fargate.task_role_arn",
                f.task_role_arn.clone(),
            );
        }
        if let Some(reg) = &self.register {
            super::register::flatten(reg, &mut put);
        }
        if let Some(d) = &self.deploy {
            super::deploy::flatten(d, &mut put);
        }
        if let Some(e) = &self.ecs_deploy {
            put("ECS_CLUSTER", "ecs_deploy.cluster", e.cluster.clone());
            put("ECS_SERVICE", "ecs_deploy.service", e.service.clone());
            put("ECS_CONTAINER", "ecs_deploy.container", e.container.clone());
            put("ECS_IMAGE", "ecs_deploy.image", e.image.clone());
            put(
                "ECS_TIMEOUT",
                "ecs_deploy.timeout",
                e.timeout.as_ref().map(DurationSpec::text),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_documents_are_refused_fast_and_not_echoed() {
        // As deep as the size cap allows, in a place the schema would recurse into.
        let depth = usize::try_from(MAX_SPEC_BYTES).unwrap_or(0) / 2 - 16;
        let deep = format!(
            "train:\n  tags: {}1{}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let err = parse(&deep).expect_err("too deep");
        assert!(err.starts_with("nested deeper than 32 levels"), "{err}");
        let regexes =
            "train:\n  metrics:\n    loss: \"loss=([0-9.]+) [x]\"\n    acc: acc=([0-9.]+)\n";
        assert!(parse(regexes).is_ok(), "{:?}", parse(regexes));

        let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\ntrain: [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n";
        assert!(parse(bomb).is_err());

        let secret = "s".repeat(500);
        let err = parse(&format!("train:\n  instance_count: \"{secret}\"\n")).expect_err("type");
        assert!(err.contains("train.instance_count"), "{err}");
        assert!(!err.contains(&secret[..60]), "{err}");
        assert!(err.len() < 320, "{err}");
    }
}
