//! When a service's tasks count as healthy, and completing deployments
//! whose services settled after an interrupted apply.

use std::time::Duration;

use crate::manifest::Kind;
use crate::model::{Health, Task, TaskStatus};
use crate::plan::{Action, Plan};
use crate::store::Stored;

/// Whether a task of `td` reports health: an essential container has a
/// health check.
pub(crate) fn has_checks(td: &crate::manifest::TaskDefinitionSpec) -> bool {
    td.container_definitions
        .iter()
        .any(|c| c.essential && c.health_check.is_some())
}

/// Deployments an interrupted apply left IN_PROGRESS although their
/// service has since settled: the plan keeps the service as it is, and
/// exactly the deployment's desired count of the service's live tasks run
/// its configuration, all healthy (or, without health checks, running for
/// `settle`). Completing them is bookkeeping, not a change to anything
/// that runs, so a pass whose plan changes nothing does it. Returns
/// `(service, message)` for each one completed.
pub fn complete_settled(
    plan: &Plan,
    tasks: &[Task],
    state: &mut Stored,
    settle: Duration,
    now: i64,
) -> Vec<(String, String)> {
    let mut done = Vec::new();
    let services = plan
        .resource_changes
        .iter()
        .filter(|c| c.kind == Kind::Service && c.action == Action::NoOp);
    for c in services {
        let cluster = c.cluster.as_deref().unwrap_or_default();
        let key = format!("{cluster}/{}", c.name);
        let Some(d) = state
            .deployments
            .get(&key)
            .and_then(|h| h.primary())
            .filter(|d| d.rollout == crate::deployment::Rollout::InProgress)
        else {
            continue;
        };
        let (id, revision, desired) = (d.id, d.revision, d.desired);
        let has_checks = state
            .services
            .get(&key)
            .and_then(|s| {
                let family = crate::model::TaskDefRef::parse(&s.spec.task_definition).family;
                state
                    .revisions
                    .get(family)?
                    .iter()
                    .find(|r| r.number == revision)
            })
            .is_some_and(|r| has_checks(&r.spec))
            || state
                .services
                .get(&key)
                .is_some_and(|s| !s.spec.load_balancers.is_empty());
        let live: Vec<&Task> = tasks
            .iter()
            .filter(|t| {
                t.identity.cluster == cluster
                    && t.identity.service.as_deref() == Some(c.name.as_str())
            })
            .filter(|t| t.is_live())
            .collect();
        let ran = |t: &Task| {
            Duration::from_secs(
                t.started_at
                    .map_or(0, |s| now.saturating_sub(s).max(0) as u64),
            )
        };
        let settled = live.len() == desired as usize
            && live.iter().all(|t| {
                t.identity.config_hash == d.config_hash && healthy(t, has_checks, ran(t), settle)
            });
        if settled {
            if let Some(h) = state.deployments.get_mut(&key) {
                h.complete(id, desired, now);
            }
            done.push((
                key,
                format!("deployment {id} (revision {revision}) completed"),
            ));
        }
    }
    done
}

/// Whether a running task counts as healthy: its health checks pass, or it
/// has none and has run for the settle period.
pub(crate) fn healthy(t: &Task, has_checks: bool, ran: Duration, settle: Duration) -> bool {
    t.last_status == TaskStatus::Running
        && match t.health {
            Health::Healthy => true,
            Health::Unknown => !has_checks && ran >= settle,
            Health::Unhealthy => false,
        }
}
