//! Settings of a Fargate task: size, spot, architecture and task role within `[policy.fargate]`;
//! the network, cluster and log group are fixed by the admin's `[fargate]` table.

use super::{Origin, Reader};
use crate::config::ExecutorConfig;
use crate::job::Job;
use crate::policy::{check_image, check_max};

/// CPU architecture of the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// x86-64.
    X86_64,
    /// 64-bit Arm (Graviton).
    Arm64,
}

impl Architecture {
    /// ECS's spelling.
    pub fn as_ecs(self) -> &'static str {
        match self {
            Architecture::X86_64 => "X86_64",
            Architecture::Arm64 => "ARM64",
        }
    }
}

/// Everything RunTask needs from the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FargateSettings {
    /// The job container's image.
    pub image: String,
    /// CPU units.
    pub cpu: u32,
    /// Memory in MiB.
    pub memory: u32,
    /// Ephemeral storage in GiB (21 is Fargate's default).
    pub ephemeral_storage_gb: u32,
    /// Fargate Spot capacity.
    pub spot: bool,
    /// CPU architecture.
    pub architecture: Architecture,
    /// Task role.
    pub task_role_arn: Option<String>,
}

// Fargate's valid memory values (MiB) for each CPU value: one table, shared with the config's
// check of the `[fargate]` defaults.
use crate::names::fargate_memory_fits as memory_fits;

pub(super) fn resolve(
    r: &mut Reader<'_>,
    job: &Job,
    cfg: &ExecutorConfig,
) -> Option<FargateSettings> {
    let pol = &cfg.policy.fargate;
    let Some(env) = &cfg.fargate else {
        r.reject(
            &Origin::Variable("SAGEMAKER_ACTION".into()),
            "this runner has no [fargate] section in its executor config",
        );
        return None;
    };
    let image = match &job.image {
        Some(img) => {
            check_image(
                &mut r.problems,
                "image",
                img,
                &pol.images,
                "policy.fargate.images",
            );
            Some(img.clone())
        }
        None => {
            r.reject(
                &Origin::Variable("image".into()),
                "a fargate job needs an `image:`",
            );
            None
        }
    };
    let (cpu, cpu_origin) = r
        .number("FARGATE_CPU", 256)
        .unwrap_or((env.cpu, Origin::Variable("FARGATE_CPU".into())));
    let (memory, mem_origin) = r
        .number("FARGATE_MEMORY", 512)
        .unwrap_or((env.memory, Origin::Variable("FARGATE_MEMORY".into())));
    check_max(
        &mut r.problems,
        &cpu_origin.to_string(),
        cpu,
        pol.max_cpu,
        "policy.fargate.max_cpu",
    );
    check_max(
        &mut r.problems,
        &mem_origin.to_string(),
        memory,
        pol.max_memory,
        "policy.fargate.max_memory",
    );
    if !memory_fits(cpu, memory) {
        r.reject(
            &mem_origin,
            format!("{memory} MiB is not a valid Fargate memory size for {cpu} CPU units"),
        );
    }
    let ephemeral_storage_gb = match r.number("FARGATE_EPHEMERAL_STORAGE_GB", 21) {
        Some((g, o)) => {
            check_max(
                &mut r.problems,
                &o.to_string(),
                g,
                pol.max_ephemeral_storage_gb.min(200),
                "policy.fargate.max_ephemeral_storage_gb",
            );
            g
        }
        None => 21,
    };
    let spot = r.flag("FARGATE_SPOT").unwrap_or(false);
    if spot && !pol.allow_spot {
        r.reject(
            &Origin::Variable("FARGATE_SPOT".into()),
            "Fargate Spot is not allowed on this runner (policy.fargate.allow_spot = false)",
        );
    }
    let architecture = match r.text("FARGATE_ARCHITECTURE") {
        None => Architecture::X86_64,
        Some(s) => match s.value.trim().to_ascii_uppercase().as_str() {
            "X86_64" | "AMD64" => Architecture::X86_64,
            "ARM64" | "AARCH64" => Architecture::Arm64,
            _ => {
                r.reject(
                    &s.origin,
                    format!(
                        "{} is not X86_64 or ARM64",
                        crate::excerpt::quoted(&s.value)
                    ),
                );
                Architecture::X86_64
            }
        },
    };
    if spot && architecture == Architecture::Arm64 {
        r.reject(
            &Origin::Variable("FARGATE_SPOT".into()),
            "Fargate Spot does not run ARM64 tasks",
        );
    }
    let task_role_arn = match r.text("FARGATE_TASK_ROLE_ARN") {
        Some(s) => r.role(
            s,
            &pol.task_roles,
            "policy.fargate.task_roles",
            job,
            &cfg.policy,
        ),
        None => env.task_role_arn.clone(),
    };
    Some(FargateSettings {
        image: image?,
        cpu,
        memory,
        ephemeral_storage_gb,
        spot,
        architecture,
        task_role_arn,
    })
}

#[cfg(test)]
mod tests {
    use super::memory_fits;

    #[test]
    fn fargate_sizes() {
        assert!(memory_fits(256, 512));
        assert!(!memory_fits(256, 4096));
        assert!(memory_fits(1024, 3072));
        assert!(!memory_fits(1024, 3000));
        assert!(memory_fits(16384, 122880));
        assert!(!memory_fits(300, 1024));
    }
}
