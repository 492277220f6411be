//! Following one service deployment until it succeeds or clearly does not.
//!
//! Success is the *new* deployment (identified by its id, not by "the PRIMARY one") reaching
//! rolloutState COMPLETED. It fails when its rolloutState becomes FAILED (the circuit breaker;
//! ECS then rolls back), when another deployment becomes PRIMARY while it is still in progress,
//! or when it disappears from the service. Comparing deployment ids is the lesson of
//! aws-actions/amazon-ecs-deploy-task-definition #191: "the service is stable" was reported for
//! years while the circuit breaker had rolled the new image back.
//!
//! Polling starts at 2 s and backs off (x1.5) to 15 s while nothing changes; new service events
//! are printed as they appear. Every sleep is raced against cancellation and the deadline.

use std::collections::HashSet;
use std::time::Duration;

use aws_sdk_ecs::types::{Deployment, DeploymentRolloutState, Service};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::aws::errors;
use crate::joblog::JobLog;

const FIRST_POLL: Duration = Duration::from_secs(2);
const MAX_POLL: Duration = Duration::from_secs(15);
/// Consecutive failed describes (after SDK retries) before the wait gives up.
const MAX_DESCRIBE_FAILURES: u32 = 20;

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

/// How following ended.
#[derive(Debug)]
pub enum Followed {
    /// A terminal verdict, with the service as last described.
    Ended(Verdict, Box<Service>),
    /// The deadline passed; the last description, if any.
    TimedOut(Option<Box<Service>>),
    /// Cancellation arrived; the last description, if any.
    Cancelled(Option<Box<Service>>),
}

/// DescribeServices kept failing, or the service is gone.
#[derive(Debug)]
pub struct DescribeFailed(pub String);

/// Describes the service; `Ok(None)` when ECS does not know it.
pub async fn describe(
    ecs: &aws_sdk_ecs::Client,
    cluster: &str,
    service: &str,
) -> Result<
    Option<Service>,
    aws_sdk_ecs::error::SdkError<aws_sdk_ecs::operation::describe_services::DescribeServicesError>,
> {
    let out = ecs
        .describe_services()
        .cluster(cluster)
        .services(service)
        .send()
        .await?;
    Ok(out.services().first().cloned())
}

/// Follows deployment `ours` of `service` until a terminal verdict, `deadline` or cancellation,
/// printing service events whose ids are not in `seen`.
#[expect(
    clippy::too_many_arguments,
    reason = "one deployment's coordinates and the job's log, used once"
)]
pub async fn follow(
    ecs: &aws_sdk_ecs::Client,
    cluster: &str,
    service: &str,
    ours: &str,
    seen: &mut HashSet<String>,
    deadline: Instant,
    log: &JobLog,
    cancel: &CancellationToken,
) -> Result<Followed, DescribeFailed> {
    let mut every = FIRST_POLL;
    let mut next = Instant::now();
    let mut last: Option<Box<Service>> = None;
    let mut last_summary = String::new();
    let mut failures = 0u32;
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Ok(Followed::Cancelled(last)),
            () = sleep_until(deadline) => return Ok(Followed::TimedOut(last)),
            () = sleep_until(next) => {}
        }
        let svc = match describe(ecs, cluster, service).await {
            Ok(Some(svc)) => svc,
            Ok(None) => {
                return Err(DescribeFailed(format!(
                    "service {service} is no longer in cluster {cluster}"
                )));
            }
            Err(e) if errors::is_transient(&e) && failures < MAX_DESCRIBE_FAILURES => {
                failures += 1;
                next = Instant::now() + MAX_POLL;
                continue;
            }
            Err(e) => return Err(DescribeFailed(errors::describe(&e))),
        };
        failures = 0;
        let mut changed = print_events(&svc, seen, log);
        let verdict = judge(ours, svc.deployments());
        if let Verdict::Waiting(summary) = &verdict {
            if *summary != last_summary {
                log.line(&format!("Deployment {summary}"));
                last_summary.clone_from(summary);
                changed = true;
            }
        } else {
            return Ok(Followed::Ended(verdict, Box::new(svc)));
        }
        last = Some(Box::new(svc));
        every = if changed {
            FIRST_POLL
        } else {
            (every * 3 / 2).min(MAX_POLL)
        };
        next = Instant::now() + every;
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
