//! Judging an endpoint rollout (a CreateEndpoint, an UpdateEndpoint, or the update that returns
//! an endpoint to its previous config) and showing its progress. The waiting itself is
//! [`crate::watch::follow`].
//!
//! Success is the endpoint `InService` *on the config this job asked for*. An update that
//! SageMaker rolled back also ends `InService`, but on the old config with a `FailureReason`:
//! comparing config names, not statuses, is what tells the two apart (the ECS lesson of
//! `ecs_deploy::verdict`). While an update runs, `PendingDeploymentSummary` says where the
//! traffic shift stands (creating the new fleet, shifting N%, baking); each change is printed.

use aws_sdk_sagemaker::operation::describe_endpoint::DescribeEndpointOutput;
use aws_sdk_sagemaker::types::EndpointStatus;

use crate::aws::errors::AwsCallError;
use crate::joblog::JobLog;
use crate::watch::{Describe, Watched};

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `InService` on our config.
    Serving,
    /// SageMaker rolled the update back: `InService` on another config.
    RolledBack {
        /// `FailureReason`.
        reason: String,
        /// The config it serves.
        serving: String,
    },
    /// `UpdateRollbackFailed`: the update and its rollback failed; the endpoint serves a mix.
    RollbackFailed {
        /// `FailureReason`.
        reason: String,
    },
    /// `Failed` (a first deployment that never served).
    Failed {
        /// `FailureReason`.
        reason: String,
    },
    /// The endpoint is being deleted or out of service: someone else acted on it.
    Unexpected {
        /// Its status.
        status: String,
    },
}

/// Judges endpoint `ep` for a rollout to config `ours`; `left_in_service` says whether it has
/// been seen in another status since the rollout call (an update that SageMaker has not shown
/// yet looks like the old config in service).
pub fn judge(ours: &str, left_in_service: bool, ep: &DescribeEndpointOutput) -> Option<Verdict> {
    // Without its final period: the reason goes mid-sentence into the job's error line.
    let reason = || {
        ep.failure_reason()
            .unwrap_or("SageMaker gave no reason")
            .trim_end_matches('.')
            .to_owned()
    };
    match ep.endpoint_status() {
        Some(
            EndpointStatus::Creating
            | EndpointStatus::Updating
            | EndpointStatus::SystemUpdating
            | EndpointStatus::RollingBack,
        ) => None,
        Some(EndpointStatus::InService) if ep.endpoint_config_name() == Some(ours) => {
            Some(Verdict::Serving)
        }
        Some(EndpointStatus::InService) if left_in_service || ep.failure_reason().is_some() => {
            Some(Verdict::RolledBack {
                reason: reason(),
                serving: ep.endpoint_config_name().unwrap_or("?").to_owned(),
            })
        }
        Some(EndpointStatus::InService) => None,
        Some(EndpointStatus::UpdateRollbackFailed) => {
            Some(Verdict::RollbackFailed { reason: reason() })
        }
        Some(EndpointStatus::Failed) => Some(Verdict::Failed { reason: reason() }),
        Some(other) => Some(Verdict::Unexpected {
            status: other.as_str().to_owned(),
        }),
        None => Some(Verdict::Unexpected {
            status: "unknown".to_owned(),
        }),
    }
}

/// One line per pending variant: what the traffic shift is doing now.
pub fn progress(ep: &DescribeEndpointOutput) -> Vec<String> {
    let Some(pending) = ep.pending_deployment_summary() else {
        return Vec::new();
    };
    pending
        .production_variants()
        .iter()
        .map(|v| {
            let (status, message) = v
                .variant_status()
                .last()
                .map(|s| {
                    (
                        s.status().map(|s| s.as_str()).unwrap_or("?").to_owned(),
                        s.status_message().unwrap_or_default().to_owned(),
                    )
                })
                .unwrap_or_else(|| ("pending".to_owned(), String::new()));
            let mut line = format!(
                "variant {} -> {}: {status}",
                v.variant_name().unwrap_or("?"),
                pending.endpoint_config_name().unwrap_or("?")
            );
            if !message.is_empty() {
                line.push_str(&format!(" - {message}"));
            }
            let mut facts = Vec::new();
            if let (Some(c), Some(d)) = (v.current_instance_count(), v.desired_instance_count()) {
                facts.push(format!("new fleet {c}/{d} instances"));
            }
            if let Some(w) = v.current_weight() {
                facts.push(format!("new fleet weight {w}"));
            }
            if !facts.is_empty() {
                line.push_str(&format!(" ({})", facts.join(", ")));
            }
            line
        })
        .collect()
}

/// Where an endpoint stands, in one line.
pub fn summarize(ep: &DescribeEndpointOutput) -> String {
    let mut s = format!(
        "endpoint {} is {} on config {}",
        ep.endpoint_name().unwrap_or("?"),
        ep.endpoint_status().map(|s| s.as_str()).unwrap_or("?"),
        ep.endpoint_config_name().unwrap_or("?")
    );
    if let Some(p) = ep.pending_deployment_summary() {
        s.push_str(&format!(
            ", updating to {}",
            p.endpoint_config_name().unwrap_or("?")
        ));
    }
    if let Some(r) = ep.failure_reason() {
        s.push_str(&format!(" ({r})"));
    }
    s
}

/// Follows an endpoint rollout to config `ours`, printing status changes and traffic-shift
/// progress, judged by [`judge`].
#[derive(Debug)]
pub struct EndpointWatch {
    client: aws_sdk_sagemaker::Client,
    endpoint: String,
    ours: String,
    left_in_service: bool,
    last_status: String,
    last_progress: Vec<String>,
    log: JobLog,
}

impl EndpointWatch {
    /// Follows `endpoint` rolling out to config `ours`.
    pub fn new(
        client: aws_sdk_sagemaker::Client,
        endpoint: &str,
        ours: &str,
        log: JobLog,
    ) -> EndpointWatch {
        EndpointWatch {
            client,
            endpoint: endpoint.to_owned(),
            ours: ours.to_owned(),
            left_in_service: false,
            last_status: String::new(),
            last_progress: Vec::new(),
            log,
        }
    }
}

impl Watched for EndpointWatch {
    type Status = DescribeEndpointOutput;
    type Done = Verdict;
    type Error = AwsCallError;

    fn describe(&self) -> Describe<DescribeEndpointOutput, AwsCallError> {
        let request = self
            .client
            .describe_endpoint()
            .endpoint_name(&self.endpoint);
        Box::pin(async move {
            request
                .send()
                .await
                .map_err(|e| AwsCallError::new("DescribeEndpoint", e))
        })
    }

    fn observe(&mut self, ep: &DescribeEndpointOutput) -> bool {
        let status = ep
            .endpoint_status()
            .map(|s| s.as_str())
            .unwrap_or("?")
            .to_owned();
        if ep.endpoint_status() != Some(&EndpointStatus::InService) {
            self.left_in_service = true;
        }
        let mut changed = false;
        if status != self.last_status {
            self.log
                .line(&format!("Endpoint {}: {status}", self.endpoint));
            self.last_status = status;
            changed = true;
        }
        let progress = progress(ep);
        if progress != self.last_progress {
            for line in &progress {
                if !self.last_progress.contains(line) {
                    self.log.line(&format!("  {line}"));
                }
            }
            self.last_progress = progress;
            changed = true;
        }
        changed
    }

    fn judge(&self, ep: &DescribeEndpointOutput) -> Option<Verdict> {
        judge(&self.ours, self.left_in_service, ep)
    }

    fn warn(&mut self, text: &str) {
        self.log.warn(text);
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_sagemaker::types::{
        PendingDeploymentSummary, PendingProductionVariantSummary, ProductionVariantStatus,
        VariantStatus,
    };

    use super::*;

    fn ep(status: EndpointStatus, config: &str, reason: Option<&str>) -> DescribeEndpointOutput {
        DescribeEndpointOutput::builder()
            .endpoint_name("churn-stable")
            .endpoint_status(status)
            .endpoint_config_name(config)
            .set_failure_reason(reason.map(str::to_owned))
            .build()
    }

    #[test]
    fn only_our_config_in_service_is_success() {
        assert_eq!(
            judge("new", false, &ep(EndpointStatus::InService, "new", None)),
            Some(Verdict::Serving)
        );
        assert_eq!(
            judge("new", true, &ep(EndpointStatus::Updating, "old", None)),
            None
        );
        assert_eq!(
            judge("new", false, &ep(EndpointStatus::Creating, "new", None)),
            None
        );
    }

    #[test]
    fn a_rollback_is_in_service_on_the_old_config() {
        // The update was not visible yet: keep looking.
        assert_eq!(
            judge("new", false, &ep(EndpointStatus::InService, "old", None)),
            None
        );
        assert_eq!(
            judge(
                "new",
                false,
                &ep(EndpointStatus::InService, "old", Some("alarm x fired"))
            ),
            Some(Verdict::RolledBack {
                reason: "alarm x fired".into(),
                serving: "old".into()
            })
        );
        assert_eq!(
            judge("new", true, &ep(EndpointStatus::InService, "old", None)),
            Some(Verdict::RolledBack {
                reason: "SageMaker gave no reason".into(),
                serving: "old".into()
            })
        );
    }

    #[test]
    fn failures_and_surprises_end_the_wait() {
        assert_eq!(
            judge(
                "new",
                true,
                &ep(
                    EndpointStatus::UpdateRollbackFailed,
                    "old",
                    Some("both failed")
                )
            ),
            Some(Verdict::RollbackFailed {
                reason: "both failed".into()
            })
        );
        assert_eq!(
            judge(
                "new",
                true,
                &ep(EndpointStatus::Failed, "new", Some("ping"))
            ),
            Some(Verdict::Failed {
                reason: "ping".into()
            })
        );
        assert_eq!(
            judge("new", true, &ep(EndpointStatus::Deleting, "new", None)),
            Some(Verdict::Unexpected {
                status: "Deleting".into()
            })
        );
    }

    #[test]
    fn progress_names_the_phase_and_the_traffic_share() {
        let e = DescribeEndpointOutput::builder()
            .endpoint_name("churn-stable")
            .endpoint_status(EndpointStatus::Updating)
            .endpoint_config_name("old")
            .pending_deployment_summary(
                PendingDeploymentSummary::builder()
                    .endpoint_config_name("new")
                    .production_variants(
                        PendingProductionVariantSummary::builder()
                            .variant_name("AllTraffic")
                            .variant_status(
                                ProductionVariantStatus::builder()
                                    .status(VariantStatus::Baking)
                                    .status_message("Baking for 5 seconds with 10% of traffic")
                                    .build(),
                            )
                            .current_instance_count(1)
                            .desired_instance_count(1)
                            .current_weight(0.1)
                            .build(),
                    )
                    .build(),
            )
            .build();
        assert_eq!(
            progress(&e),
            [
                "variant AllTraffic -> new: Baking - Baking for 5 seconds with 10% of traffic (new fleet 1/1 instances, new fleet weight 0.1)"
            ]
        );
        assert_eq!(
            summarize(&e),
            "endpoint churn-stable is Updating on config old, updating to new"
        );
    }
}
