//! Settings of an endpoint deployment and of a teardown, within `[policy.deploy]`.

use schemars::JsonSchema;
use serde::Deserialize;

use super::Reader;
use crate::config::ExecutorConfig;
use crate::job::Job;

/// Variables a deploy or undeploy job reads.
pub(super) const KNOWN: &[&str] = &[
    "SAGEMAKER_ENDPOINT_NAME",
    "SAGEMAKER_MODEL_PACKAGE",
    "SAGEMAKER_ENDPOINT_INSTANCE_TYPE",
    "SAGEMAKER_ENDPOINT_INSTANCE_COUNT",
    "SAGEMAKER_SERVERLESS",
    "SAGEMAKER_STRATEGY",
    "SAGEMAKER_ALARMS",
    "SAGEMAKER_SMOKE_REQUEST",
    "SAGEMAKER_SMOKE_EXPECT",
];

/// Everything a deployment needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploySettings {}

/// Everything a teardown needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UndeploySettings {}

/// `deploy:` in the spec file.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploySpec {}

/// The spec's deploy settings under their variable names.
pub(super) fn flatten(_spec: &DeploySpec, _put: &mut dyn FnMut(&str, &str, Option<String>)) {}

pub(super) fn resolve(
    r: &mut Reader<'_>,
    _job: &Job,
    _cfg: &ExecutorConfig,
) -> Option<DeploySettings> {
    r.reject(
        &super::Origin::Variable("SAGEMAKER_ACTION".into()),
        "action \"deploy\" is not available in this version of sagemaker-executor",
    );
    None
}

pub(super) fn resolve_undeploy(
    r: &mut Reader<'_>,
    _job: &Job,
    _cfg: &ExecutorConfig,
) -> Option<UndeploySettings> {
    r.reject(
        &super::Origin::Variable("SAGEMAKER_ACTION".into()),
        "action \"undeploy\" is not available in this version of sagemaker-executor",
    );
    None
}
