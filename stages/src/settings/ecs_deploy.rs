//! Settings of an ECS service deployment: which container of which service moves to which image,
//! within `[policy.ecs_deploy]`.

use std::time::Duration;

use super::{Origin, Reader};
use crate::config::ExecutorConfig;
use crate::policy::{check_allowed, check_image};

/// What ecs-deploy changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsDeploySettings {
    /// Cluster name or ARN.
    pub cluster: String,
    /// Service name.
    pub service: String,
    /// Container whose image is replaced.
    pub container: String,
    /// The new image.
    pub image: String,
    /// How long to wait for the new deployment to complete.
    pub timeout: Duration,
}

pub(super) fn resolve(r: &mut Reader<'_>, cfg: &ExecutorConfig) -> Option<EcsDeploySettings> {
    let pol = &cfg.policy.ecs_deploy;
    let need = |r: &mut Reader<'_>, var: &str| -> Option<(String, Origin)> {
        match r.text(var) {
            Some(s) => Some((s.value.trim().to_owned(), s.origin.clone())),
            None => {
                r.reject(&Origin::Variable(var.into()), "is required for ecs-deploy");
                None
            }
        }
    };
    let cluster = need(r, "ECS_CLUSTER");
    let service = need(r, "ECS_SERVICE");
    let container = need(r, "ECS_CONTAINER");
    let image = need(r, "ECS_IMAGE");
    if let Some((v, o)) = &cluster {
        check_allowed(
            &mut r.problems,
            &o.to_string(),
            v,
            &pol.clusters,
            "policy.ecs_deploy.clusters",
        );
    }
    if let Some((v, o)) = &service {
        check_allowed(
            &mut r.problems,
            &o.to_string(),
            v,
            &pol.services,
            "policy.ecs_deploy.services",
        );
    }
    if let Some((v, o)) = &image {
        check_image(
            &mut r.problems,
            &o.to_string(),
            v,
            &pol.images,
            "policy.ecs_deploy.images",
        );
    }
    let timeout = r
        .duration("ECS_TIMEOUT")
        .map(|(d, _)| d)
        .unwrap_or(Duration::from_secs(30 * 60));
    Some(EcsDeploySettings {
        cluster: cluster?.0,
        service: service?.0,
        container: container?.0,
        image: image?.0,
        timeout,
    })
}
