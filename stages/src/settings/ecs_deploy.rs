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
    // Names are checked for ECS's shapes before the allow-lists: a glob such as `web-*` would
    // otherwise pass a name of any length or content on to AWS and into the job log.
    let named = |r: &mut Reader<'_>, var: &str, kind: &str| -> Option<(String, Origin)> {
        let (value, origin) = need(r, var)?;
        if is_ecs_name(&value, kind) {
            Some((value, origin))
        } else {
            r.reject(
                &origin,
                format!(
                    "{} is not an ECS {kind} name (1-255 of [A-Za-z0-9_-]{})",
                    crate::excerpt::quoted(&value),
                    if kind == "container" {
                        ""
                    } else {
                        ", or its ARN"
                    }
                ),
            );
            None
        }
    };
    let cluster = named(r, "ECS_CLUSTER", "cluster");
    let service = named(r, "ECS_SERVICE", "service");
    let container = named(r, "ECS_CONTAINER", "container");
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

/// Whether `value` is an ECS `kind` name (`cluster`, `service`, `container`): 1-255 letters,
/// digits, `_` and `-`; a cluster or service may also be given as its ARN
/// (`arn:<partition>:ecs:<region>:<account>:<kind>/[<cluster>/]<name>`).
fn is_ecs_name(value: &str, kind: &str) -> bool {
    let plain = |n: &str| {
        (1..=255).contains(&n.len())
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if plain(value) {
        return true;
    }
    if kind == "container" {
        return false;
    }
    let parts: Vec<&str> = value.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "ecs", region, account, resource] => {
            partition.starts_with("aws")
                && !region.is_empty()
                && region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource
                    .strip_prefix(kind)
                    .and_then(|r| r.strip_prefix('/'))
                    .is_some_and(|names| {
                        let names: Vec<&str> = names.split('/').collect();
                        (1..=2).contains(&names.len()) && names.iter().all(|n| plain(n))
                    })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::is_ecs_name;

    #[test]
    fn ecs_names_and_arns() {
        assert!(is_ecs_name("web-a_1", "service"));
        assert!(is_ecs_name(
            "arn:aws:ecs:us-east-1:123456789012:service/ci/web-a",
            "service"
        ));
        assert!(is_ecs_name(
            "arn:aws:ecs:us-east-1:123456789012:cluster/ci",
            "cluster"
        ));
        for bad in [
            "",
            "web a",
            "web-a/../admin",
            "web\nERROR",
            &"s".repeat(256),
            "arn:aws:ecs:us-east-1:123456789012:cluster/ci",
        ] {
            assert!(!is_ecs_name(bad, "service"), "{bad:?}");
        }
        assert!(!is_ecs_name(
            "arn:aws:ecs:us-east-1:123456789012:container/x",
            "container"
        ));
    }
}
