//! Judging one service deployment: whether it succeeded or clearly did not, and what the
//! service's events and counts say meanwhile. The waiting itself is [`crate::watch::follow`].
//!
//! Success is the *new* deployment (identified by its id, not by "the PRIMARY one") reaching
//! rolloutState COMPLETED. It fails when its rolloutState becomes FAILED (the circuit breaker;
//! ECS then rolls back), when another deployment becomes PRIMARY while it is still in progress,
//! or when it disappears from the service. Comparing deployment ids is the lesson of
//! aws-actions/amazon-ecs-deploy-task-definition #191: "the service is stable" was reported for
//! years while the circuit breaker had rolled the new image back.
//!
//! Polling starts at 2 s and backs off (x1.5) to 15 s while nothing changes; new service events
//! are printed as they appear.

use std::collections::HashSet;

use aws_sdk_ecs::types::{Deployment, DeploymentRolloutState, Service};

use crate::aws::errors::{AwsCallError, Retry};
use crate::joblog::JobLog;
use crate::watch::{Describe, Watched};

/// Where one deployment stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Still rolling out; the text summarises its counts.
    Waiting(String),
    /// rolloutState COMPLETED.
    Completed,
    /// rolloutState FAILED, with ECS's reason; `rollback_to` is the task definition of the
    /// deployment now PRIMARY, when ECS is rolling back.
    Failed {
        /// rolloutStateReason.
        reason: String,
        /// The task definition ECS rolls back to.
        rollback_to: Option<String>,
    },
    /// Another deployment became PRIMARY while this one was in progress.
    Replaced {
        /// The deployment now PRIMARY, and its task definition.
        by: Option<(String, String)>,
    },
    /// The deployment is no longer in the service and nothing is PRIMARY.
    Vanished,
}

fn primary(deployments: &[Deployment]) -> Option<&Deployment> {
    deployments.iter().find(|d| d.status() == Some("PRIMARY"))
}

fn id_and_td(d: &Deployment) -> (String, String) {
    (
        d.id().unwrap_or_default().to_owned(),
        d.task_definition().unwrap_or_default().to_owned(),
    )
}

/// One line per deployment: status, id, task definition, rollout state and counts.
pub fn summarize(d: &Deployment) -> String {
    format!(
        "{} {} {}: {} (running {}/{}, pending {}, failed {})",
        d.status().unwrap_or("?"),
        d.id().unwrap_or("?"),
        short_td(d.task_definition().unwrap_or("?")),
        d.rollout_state()
            .map(|s| s.as_str())
            .unwrap_or("no rollout state"),
        d.running_count(),
        d.desired_count(),
        d.pending_count(),
        d.failed_tasks()
    )
}

/// `family:revision` of a task definition ARN.
pub fn short_td(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// Judges deployment `ours` among the service's `deployments`.
pub fn judge(ours: &str, deployments: &[Deployment]) -> Verdict {
    let Some(d) = deployments.iter().find(|d| d.id() == Some(ours)) else {
        return match primary(deployments) {
            Some(p) => Verdict::Replaced {
                by: Some(id_and_td(p)),
            },
            None => Verdict::Vanished,
        };
    };
    match d.rollout_state() {
        Some(DeploymentRolloutState::Completed) => Verdict::Completed,
        Some(DeploymentRolloutState::Failed) => Verdict::Failed {
            reason: d
                .rollout_state_reason()
                .unwrap_or("no reason given")
                .to_owned(),
            rollback_to: primary(deployments)
                .filter(|p| p.id() != Some(ours))
                .and_then(|p| p.task_definition())
                .map(str::to_owned),
        },
        _ if d.status() != Some("PRIMARY") => Verdict::Replaced {
            by: primary(deployments).map(id_and_td),
        },
        // Without a rollout state (an old API shape), steady means: alone and at full count.
        None if deployments.len() == 1
            && d.running_count() == d.desired_count()
            && d.pending_count() == 0 =>
        {
            Verdict::Completed
        }
        _ => Verdict::Waiting(summarize(d)),
    }
}

/// Follows deployment `ours` of a service: prints new events and changed counts, judged by
/// [`judge`].
#[derive(Debug)]
pub struct ServiceWatch {
    client: aws_sdk_ecs::Client,
    cluster: String,
    service: String,
    ours: String,
    seen: HashSet<String>,
    last_summary: String,
    log: JobLog,
}

impl ServiceWatch {
    /// Follows `ours` in `service` of `cluster`; events whose ids are in `seen` are not printed.
    pub fn new(
        client: aws_sdk_ecs::Client,
        cluster: &str,
        service: &str,
        ours: &str,
        seen: HashSet<String>,
        log: JobLog,
    ) -> ServiceWatch {
        ServiceWatch {
            client,
            cluster: cluster.to_owned(),
            service: service.to_owned(),
            ours: ours.to_owned(),
            seen,
            last_summary: String::new(),
            log,
        }
    }
}

impl Watched for ServiceWatch {
    type Status = Service;
    type Done = Verdict;
    type Error = AwsCallError;

    fn describe(&self) -> Describe<Service, AwsCallError> {
        let request = self
            .client
            .describe_services()
            .cluster(&self.cluster)
            .services(&self.service);
        let (cluster, service) = (self.cluster.clone(), self.service.clone());
        Box::pin(async move {
            let out = request
                .send()
                .await
                .map_err(|e| AwsCallError::new("DescribeServices", e))?;
            out.services().first().cloned().ok_or_else(|| {
                AwsCallError::other(
                    "DescribeServices",
                    format!("service {service} is no longer in cluster {cluster}"),
                    Retry::Permanent,
                )
            })
        })
    }

    fn observe(&mut self, svc: &Service) -> bool {
        let mut changed = print_events(svc, &mut self.seen, &self.log);
        if let Verdict::Waiting(summary) = judge(&self.ours, svc.deployments())
            && summary != self.last_summary
        {
            self.log.line(&format!("Deployment {summary}"));
            self.last_summary = summary;
            changed = true;
        }
        changed
    }

    fn judge(&self, svc: &Service) -> Option<Verdict> {
        match judge(&self.ours, svc.deployments()) {
            Verdict::Waiting(_) => None,
            verdict => Some(verdict),
        }
    }

    fn warn(&mut self, text: &str) {
        self.log.warn(text);
    }
}

/// The messages of the service's events not in `seen`, oldest first, now marked seen.
pub fn fresh_events(svc: &Service, seen: &mut HashSet<String>) -> Vec<String> {
    // ECS lists events newest first.
    let mut fresh: Vec<String> = Vec::new();
    for e in svc.events().iter().rev() {
        if let Some(id) = e.id()
            && seen.insert(id.to_owned())
        {
            fresh.push(e.message().unwrap_or_default().to_owned());
        }
    }
    fresh
}

/// Prints the service's events not seen yet, oldest first; returns whether there were any.
pub fn print_events(svc: &Service, seen: &mut HashSet<String>, log: &JobLog) -> bool {
    let fresh = fresh_events(svc, seen);
    for message in &fresh {
        log.line(&format!("event: {message}"));
    }
    !fresh.is_empty()
}

#[cfg(test)]
mod tests {
    use aws_sdk_ecs::types::ServiceEvent;

    use super::*;

    fn dep(id: &str, status: &str, td: &str, state: Option<DeploymentRolloutState>) -> Deployment {
        Deployment::builder()
            .id(id)
            .status(status)
            .task_definition(td)
            .set_rollout_state(state)
            .rollout_state_reason(format!("reason of {id}"))
            .desired_count(2)
            .running_count(1)
            .pending_count(1)
            .build()
    }

    #[test]
    fn only_our_deployment_reaching_completed_is_success() {
        let ours = dep(
            "ecs-svc/2",
            "PRIMARY",
            "td:2",
            Some(DeploymentRolloutState::Completed),
        );
        assert_eq!(judge("ecs-svc/2", &[ours]), Verdict::Completed);
        let waiting = [
            dep(
                "ecs-svc/2",
                "PRIMARY",
                "td:2",
                Some(DeploymentRolloutState::InProgress),
            ),
            dep(
                "ecs-svc/1",
                "ACTIVE",
                "td:1",
                Some(DeploymentRolloutState::Completed),
            ),
        ];
        assert!(
            matches!(judge("ecs-svc/2", &waiting), Verdict::Waiting(s) if s.contains("IN_PROGRESS") && s.contains("running 1/2"))
        );
    }

    #[test]
    fn a_circuit_breaker_rollback_is_a_failure_even_though_the_service_is_stable() {
        // What aws-actions reported as success for years: PRIMARY is COMPLETED, but it is the
        // rollback, not ours.
        let deps = [
            dep(
                "ecs-svc/3",
                "PRIMARY",
                "arn:aws:ecs:r:1:task-definition/api:1",
                Some(DeploymentRolloutState::Completed),
            ),
            dep(
                "ecs-svc/2",
                "ACTIVE",
                "arn:aws:ecs:r:1:task-definition/api:2",
                Some(DeploymentRolloutState::Failed),
            ),
        ];
        assert_eq!(
            judge("ecs-svc/2", &deps),
            Verdict::Failed {
                reason: "reason of ecs-svc/2".into(),
                rollback_to: Some("arn:aws:ecs:r:1:task-definition/api:1".into())
            }
        );
    }

    #[test]
    fn replaced_and_vanished_deployments_are_failures() {
        let replaced = [
            dep(
                "ecs-svc/3",
                "PRIMARY",
                "td:2",
                Some(DeploymentRolloutState::InProgress),
            ),
            dep(
                "ecs-svc/2",
                "ACTIVE",
                "td:2",
                Some(DeploymentRolloutState::InProgress),
            ),
        ];
        assert_eq!(
            judge("ecs-svc/2", &replaced),
            Verdict::Replaced {
                by: Some(("ecs-svc/3".into(), "td:2".into()))
            }
        );
        let gone = [dep(
            "ecs-svc/3",
            "PRIMARY",
            "td:2",
            Some(DeploymentRolloutState::Completed),
        )];
        assert_eq!(
            judge("ecs-svc/2", &gone),
            Verdict::Replaced {
                by: Some(("ecs-svc/3".into(), "td:2".into()))
            }
        );
        assert_eq!(judge("ecs-svc/2", &[]), Verdict::Vanished);
    }

    #[test]
    fn without_a_rollout_state_steady_means_alone_at_full_count() {
        let mut d = dep("ecs-svc/2", "PRIMARY", "td:2", None);
        assert!(matches!(
            judge("ecs-svc/2", std::slice::from_ref(&d)),
            Verdict::Waiting(_)
        ));
        d.running_count = 2;
        d.pending_count = 0;
        assert_eq!(judge("ecs-svc/2", &[d]), Verdict::Completed);
    }

    #[test]
    fn events_are_reported_once_oldest_first() {
        let svc = Service::builder()
            .events(ServiceEvent::builder().id("c").message("third").build())
            .events(ServiceEvent::builder().id("b").message("second").build())
            .events(
                ServiceEvent::builder()
                    .id("old")
                    .message("before the deploy")
                    .build(),
            )
            .build();
        let mut seen = HashSet::from(["old".to_owned()]);
        assert_eq!(fresh_events(&svc, &mut seen), ["second", "third"]);
        assert!(
            fresh_events(&svc, &mut seen).is_empty(),
            "nothing new the second time"
        );
    }
}
