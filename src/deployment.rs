//! A service's deployments and events, as ECS keeps them: the PRIMARY
//! deployment and the ones it replaces, each with its rollout state and the
//! circuit breaker's failure count, plus the service's recent events.
//!
//! Pure data and rules; apply updates it while it watches tasks, the store
//! persists it (so a restarted controller resumes the same deployment),
//! and `status` and `history` print it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use schemars::JsonSchema;

use crate::manifest::service::DeploymentCircuitBreaker;
use crate::model::{serde_name, Task, TaskStatus};

/// Deployments kept per service (the oldest go first).
pub const KEEP_DEPLOYMENTS: usize = 25;
/// Events kept per service.
pub const KEEP_EVENTS: usize = 100;
/// Restart throttling: the first relaunch waits this long, each further
/// failure doubles it, up to [`BACKOFF_CAP`].
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// ECS deployment status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// The deployment the service converges to.
    Primary,
    /// A previous deployment whose tasks are being replaced.
    Active,
    /// Done with: its tasks are gone.
    Inactive,
}

/// ECS rollout state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Rollout {
    InProgress,
    Completed,
    Failed,
}

impl std::fmt::Display for Rollout {
    /// As ECS names it (`IN_PROGRESS`), padded as asked.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&serde_name(self))
    }
}

/// ECS circuit breaker status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Breaker {
    Disabled,
    Monitoring,
    Triggered,
    MonitoringComplete,
}

/// One deployment of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// Sequence number within the service, from 1.
    pub id: u32,
    pub revision: u32,
    /// Effective task configuration the deployment's tasks run with.
    pub config_hash: String,
    pub status: Status,
    pub rollout: Rollout,
    /// Why the rollout state is what it is.
    pub reason: String,
    pub desired: u32,
    /// Tasks that failed: stopped before becoming healthy, or failed health
    /// checks after the grace period (ECS's two stages together).
    pub failed_tasks: u32,
    /// Failed tasks at which the breaker trips; None when it is disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    pub breaker: Breaker,
    /// Whether a tripped breaker restores the last COMPLETED deployment.
    pub rollback: bool,
    /// This deployment restores the one with this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u32>,
    /// Consecutive failed launches, for restart throttling.
    #[serde(default)]
    pub start_failures: u32,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
}

/// Kinds of service events (ECS event names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    ServiceDeploymentInProgress,
    ServiceDeploymentCompleted,
    ServiceDeploymentFailed,
    ServiceSteadyState,
    ServiceTaskFailed,
    ServiceTaskStartImpaired,
    ServiceTaskPlacementFailure,
    /// Tasks are being moved to even out a spread service.
    ServiceRebalancingStarted,
    /// The spread service is even again (or can be made no more even).
    ServiceRebalancingCompleted,
}

/// Something that happened to a service, with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEvent {
    /// Unix seconds.
    pub at: i64,
    pub kind: EventKind,
    pub message: String,
}

/// A desired configuration that is not deployed again: it was rolled back
/// (by the circuit breaker, an abort or `reconcile rollback`). Changing the
/// service or its task definition releases it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Held {
    pub config_hash: String,
    pub revision: u32,
    pub reason: String,
    /// The revision the service runs instead.
    #[serde(default)]
    pub to: u32,
}

/// A service's deployments (oldest first) and events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct History {
    #[serde(default)]
    pub deployments: Vec<Deployment>,
    #[serde(default)]
    pub events: Vec<ServiceEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Held>,
    #[serde(default)]
    pub next_id: u32,
}

/// What a task failure did to its deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Below the threshold (or no breaker): relaunch after this delay.
    Relaunch(Duration),
    /// The breaker tripped: the deployment is FAILED.
    Tripped,
}

/// Restart throttling: the delay before relaunching after `failures`
/// consecutive failed launches.
pub fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let shift = (failures - 1).min(16);
    BACKOFF_BASE.saturating_mul(1 << shift).min(BACKOFF_CAP)
}

impl History {
    pub fn primary(&self) -> Option<&Deployment> {
        self.deployments
            .iter()
            .rev()
            .find(|d| d.status == Status::Primary)
    }

    pub fn get(&self, id: u32) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.id == id)
    }

    fn get_mut(&mut self, id: u32) -> Option<&mut Deployment> {
        self.deployments.iter_mut().find(|d| d.id == id)
    }

    pub fn event(&mut self, at: i64, kind: EventKind, message: String) {
        self.events.push(ServiceEvent { at, kind, message });
        if self.events.len() > KEEP_EVENTS {
            let excess = self.events.len() - KEEP_EVENTS;
            self.events.drain(..excess);
        }
    }

    /// Start the deployment of `config_hash`, or resume it when it is the
    /// PRIMARY one and still in progress (an interrupted apply or a
    /// restarted controller continues it, failure count included). Returns
    /// its id.
    pub fn begin(
        &mut self,
        revision: u32,
        config_hash: &str,
        desired: u32,
        breaker: &DeploymentCircuitBreaker,
        rollback_of: Option<u32>,
        now: i64,
    ) -> u32 {
        if let Some(p) = self.primary() {
            if p.config_hash == config_hash && p.rollout == Rollout::InProgress {
                let id = p.id;
                let d = self.get_mut(id).expect("primary exists");
                d.desired = desired;
                d.updated_at = now;
                return id;
            }
        }
        for d in &mut self.deployments {
            if d.status == Status::Primary {
                d.status = Status::Active;
                d.updated_at = now;
                if d.rollout == Rollout::InProgress {
                    d.rollout = Rollout::Failed;
                    d.reason = "replaced by a newer deployment before it completed".into();
                    if d.breaker == Breaker::Monitoring {
                        d.breaker = Breaker::MonitoringComplete;
                    }
                }
            }
        }
        self.next_id = self
            .next_id
            .max(self.deployments.iter().map(|d| d.id).max().unwrap_or(0))
            + 1;
        let id = self.next_id;
        let threshold = breaker.enable.then(|| breaker.threshold(desired).max(1));
        self.deployments.push(Deployment {
            id,
            revision,
            config_hash: config_hash.to_string(),
            status: Status::Primary,
            rollout: Rollout::InProgress,
            reason: match rollback_of {
                Some(from) => format!("rolling back deployment {from}"),
                None => "deployment started".into(),
            },
            desired,
            failed_tasks: 0,
            threshold,
            breaker: if threshold.is_some() {
                Breaker::Monitoring
            } else {
                Breaker::Disabled
            },
            rollback: breaker.rollback,
            rollback_of,
            start_failures: 0,
            created_at: now,
            updated_at: now,
        });
        if self.deployments.len() > KEEP_DEPLOYMENTS {
            let excess = self.deployments.len() - KEEP_DEPLOYMENTS;
            self.deployments.drain(..excess);
        }
        // Deploying something other than the held configuration or the
        // revision that replaces it means the desired state moved on: the
        // hold is released.
        if self
            .held
            .as_ref()
            .is_some_and(|h| h.config_hash != config_hash && h.to != revision)
        {
            self.held = None;
        }
        self.event(
            now,
            EventKind::ServiceDeploymentInProgress,
            match rollback_of {
                Some(from) => {
                    format!("deployment {id} (revision {revision}) started: rolling back deployment {from}")
                }
                None => format!("deployment {id} (revision {revision}) started"),
            },
        );
        id
    }

    /// A task of deployment `id` failed. Counts it and trips the breaker at
    /// the threshold; otherwise says how long to wait before relaunching.
    pub fn task_failed(&mut self, id: u32, message: &str, now: i64) -> Verdict {
        let Some(d) = self.get_mut(id) else {
            return Verdict::Relaunch(backoff(1));
        };
        d.failed_tasks += 1;
        d.start_failures += 1;
        d.updated_at = now;
        let (failed, threshold, breaker) = (d.failed_tasks, d.threshold, d.breaker);
        let delay = backoff(d.start_failures);
        let of = threshold
            .map(|t| format!(" ({failed} of {t})"))
            .unwrap_or_default();
        self.event(
            now,
            EventKind::ServiceTaskFailed,
            format!("deployment {id}: {message}{of}"),
        );
        if breaker == Breaker::Monitoring && threshold.is_some_and(|t| failed >= t) {
            let reason = format!(
                "circuit breaker: {failed} task(s) failed (threshold {})",
                threshold.unwrap_or(0)
            );
            self.fail(id, &reason, now);
            if let Some(d) = self.get_mut(id) {
                d.breaker = Breaker::Triggered;
            }
            return Verdict::Tripped;
        }
        if failed >= 3 && self.get(id).is_some_and(|d| d.start_failures >= 3) {
            self.event(
                now,
                EventKind::ServiceTaskStartImpaired,
                format!(
                    "unable to consistently start tasks successfully: next launch in {}s",
                    delay.as_secs()
                ),
            );
        }
        Verdict::Relaunch(delay)
    }

    /// The deployment's tasks became healthy: throttling starts over.
    pub fn launched_healthy(&mut self, id: u32) {
        if let Some(d) = self.get_mut(id) {
            d.start_failures = 0;
        }
    }

    /// The deployment reached its desired count, all healthy, and the
    /// deployments before it are drained.
    pub fn complete(&mut self, id: u32, running: u32, now: i64) {
        let Some(d) = self.get_mut(id) else { return };
        if d.rollout != Rollout::InProgress {
            return;
        }
        d.rollout = Rollout::Completed;
        d.reason = "deployment completed".into();
        d.updated_at = now;
        if d.breaker == Breaker::Monitoring {
            d.breaker = Breaker::MonitoringComplete;
        }
        let revision = d.revision;
        for o in &mut self.deployments {
            if o.id != id && o.status == Status::Active {
                o.status = Status::Inactive;
                o.updated_at = now;
            }
        }
        self.event(
            now,
            EventKind::ServiceDeploymentCompleted,
            format!("deployment {id} (revision {revision}) completed"),
        );
        self.event(
            now,
            EventKind::ServiceSteadyState,
            format!("has reached a steady state: {running} task(s) running"),
        );
    }

    /// The deployment is FAILED: no more launches for it.
    pub fn fail(&mut self, id: u32, reason: &str, now: i64) {
        let Some(d) = self.get_mut(id) else { return };
        if d.rollout != Rollout::InProgress {
            return;
        }
        d.rollout = Rollout::Failed;
        d.reason = reason.to_string();
        d.updated_at = now;
        if d.breaker == Breaker::Monitoring {
            d.breaker = Breaker::MonitoringComplete;
        }
        let revision = d.revision;
        self.event(
            now,
            EventKind::ServiceDeploymentFailed,
            format!("deployment {id} (revision {revision}) failed: {reason}"),
        );
    }

    /// The newest COMPLETED deployment of another configuration: what a
    /// rollback restores.
    pub fn last_completed(&self, except_config: &str) -> Option<&Deployment> {
        self.deployments
            .iter()
            .rev()
            .find(|d| d.rollout == Rollout::Completed && d.config_hash != except_config)
    }

    /// Record that `config_hash` was rolled back and is not deployed again
    /// until the desired state changes.
    pub fn hold(&mut self, config_hash: &str, revision: u32, to: u32, reason: String) {
        self.held = Some(Held {
            config_hash: config_hash.to_string(),
            revision,
            reason,
            to,
        });
    }

    /// What `status` shows, newest first, with their tasks counted by
    /// configuration: the deployments back to the newest COMPLETED one that
    /// is not a rollback, so a failed deployment stays in view after its
    /// rollback, and a rollout in progress is shown with what it replaces.
    pub fn views(&self, tasks: &[&Task]) -> Vec<DeploymentView> {
        let mut out = Vec::new();
        for d in self.deployments.iter().rev() {
            out.push(DeploymentView::of(d, tasks));
            if d.rollout == Rollout::Completed && d.rollback_of.is_none() {
                break;
            }
        }
        out
    }
}

/// A deployment as `status` and `history` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentView {
    pub id: u32,
    pub revision: u32,
    /// PRIMARY, ACTIVE or INACTIVE.
    pub status: String,
    pub rollout_state: Rollout,
    pub reason: String,
    pub desired: u32,
    pub running: u32,
    pub pending: u32,
    pub failed_tasks: u32,
    /// DISABLED, MONITORING, TRIGGERED or MONITORING_COMPLETE.
    pub circuit_breaker: String,
    pub threshold: Option<u32>,
    pub rollback_of: Option<u32>,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
}

impl DeploymentView {
    pub fn of(d: &Deployment, tasks: &[&Task]) -> DeploymentView {
        let mine = tasks
            .iter()
            .filter(|t| t.identity.config_hash == d.config_hash);
        let (mut running, mut pending) = (0, 0);
        for t in mine {
            match t.last_status {
                TaskStatus::Running => running += 1,
                TaskStatus::Pending => pending += 1,
                TaskStatus::Stopped => {}
            }
        }
        DeploymentView {
            id: d.id,
            revision: d.revision,
            status: serde_name(&d.status),
            rollout_state: d.rollout,
            reason: d.reason.clone(),
            desired: d.desired,
            running,
            pending,
            failed_tasks: d.failed_tasks,
            circuit_breaker: serde_name(&d.breaker),
            threshold: d.threshold,
            rollback_of: d.rollback_of,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }

    /// One line: `3  rev 4  PRIMARY  IN_PROGRESS  2/4 running, 1 pending  failed 1/3 (MONITORING)  reason`.
    pub fn line(&self) -> String {
        let breaker = match self.threshold {
            Some(t) => format!(
                "failed {}/{} ({})",
                self.failed_tasks, t, self.circuit_breaker
            ),
            None => format!(
                "failed {} (breaker {})",
                self.failed_tasks, self.circuit_breaker
            ),
        };
        format!(
            "{:>3}  rev {:<4} {:<8} {:<11}  {}/{} running, {} pending  {}  {}",
            self.id,
            self.revision,
            self.status,
            self.rollout_state,
            self.running,
            self.desired,
            self.pending,
            breaker,
            self.reason
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::service::{CircuitBreakerThreshold, ThresholdType};

    fn breaker(enable: bool) -> DeploymentCircuitBreaker {
        DeploymentCircuitBreaker {
            enable,
            rollback: true,
            threshold_configuration: None,
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(40), BACKOFF_CAP);
    }

    #[test]
    fn breaker_trips_at_the_default_threshold() {
        let mut h = History::default();
        let id = h.begin(2, "b", 4, &breaker(true), None, 10);
        // 0.5 x 4 = 2, clamped up to 3.
        assert_eq!(h.get(id).unwrap().threshold, Some(3));
        assert!(matches!(h.task_failed(id, "x", 11), Verdict::Relaunch(_)));
        assert!(matches!(h.task_failed(id, "x", 12), Verdict::Relaunch(_)));
        assert_eq!(h.task_failed(id, "x", 13), Verdict::Tripped);
        let d = h.get(id).unwrap();
        assert_eq!(
            (d.rollout, d.breaker),
            (Rollout::Failed, Breaker::Triggered)
        );
        assert!(h
            .events
            .iter()
            .any(|e| e.kind == EventKind::ServiceDeploymentFailed
                && e.message.contains("circuit breaker")));
    }

    #[test]
    fn count_threshold_and_disabled_breaker() {
        let mut h = History::default();
        let b = DeploymentCircuitBreaker {
            enable: true,
            rollback: false,
            threshold_configuration: Some(CircuitBreakerThreshold {
                kind: ThresholdType::Count,
                value: 1,
            }),
        };
        let id = h.begin(1, "a", 10, &b, None, 0);
        assert_eq!(h.task_failed(id, "x", 1), Verdict::Tripped);
        let id = h.begin(2, "b", 10, &breaker(false), None, 2);
        for n in 1..20 {
            assert_eq!(
                h.task_failed(id, "x", 2 + n),
                Verdict::Relaunch(backoff(n as u32))
            );
        }
        assert_eq!(h.get(id).unwrap().breaker, Breaker::Disabled);
    }

    #[test]
    fn resume_keeps_the_deployment_and_a_new_one_supersedes() {
        let mut h = History::default();
        let a = h.begin(1, "a", 2, &breaker(true), None, 0);
        h.complete(a, 2, 1);
        let b = h.begin(2, "b", 2, &breaker(true), None, 2);
        h.task_failed(b, "x", 3);
        assert_eq!(h.begin(2, "b", 2, &breaker(true), None, 4), b, "resumed");
        assert_eq!(
            h.get(b).unwrap().failed_tasks,
            1,
            "failures survive a resume"
        );
        assert_eq!(h.get(a).unwrap().status, Status::Active);
        assert_eq!(h.last_completed("b").unwrap().id, a);
        let c = h.begin(3, "c", 2, &breaker(true), None, 5);
        assert_ne!(c, b);
        assert_eq!(h.get(b).unwrap().rollout, Rollout::Failed);
        h.complete(c, 2, 6);
        assert!(h
            .deployments
            .iter()
            .filter(|d| d.id != c)
            .all(|d| d.status == Status::Inactive));
    }

    #[test]
    fn views_show_the_rollout_state_as_ecs_names_it() {
        let mut h = History::default();
        let a = h.begin(1, "a", 2, &breaker(true), None, 0);
        let v = DeploymentView::of(h.get(a).unwrap(), &[]);
        assert_eq!(v.rollout_state, Rollout::InProgress);
        assert_eq!(format!("[{:<13}]", v.rollout_state), "[IN_PROGRESS  ]");
        assert!(v.line().contains(" IN_PROGRESS "), "{}", v.line());
        assert_eq!(
            serde_json::to_value(&v).unwrap()["rolloutState"],
            "IN_PROGRESS"
        );
    }

    #[test]
    fn history_is_bounded() {
        let mut h = History::default();
        for i in 0..200u32 {
            let id = h.begin(i, &i.to_string(), 1, &breaker(false), None, i64::from(i));
            h.complete(id, 1, i64::from(i));
        }
        assert_eq!(h.deployments.len(), KEEP_DEPLOYMENTS);
        assert_eq!(h.events.len(), KEEP_EVENTS);
        assert_eq!(h.deployments.last().unwrap().id, 200);
    }
}
