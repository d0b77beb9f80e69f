//! Tasks that run to completion: started by `reconcile run-task` or by a
//! scheduled task, placed by the scheduler like a service's tasks, and
//! never restarted when they exit (ECS `RunTask`).
//!
//! Pure: what a run asks for ([`RunRequest`]), where its tasks go
//! ([`place`]), and the record each task leaves ([`RunRecord`]), kept
//! current from what the runtime observes ([`refresh`]) and forgotten a
//! while after the task stopped ([`RETENTION`]). The modes keep the
//! records where they keep state: a file beside the standalone state, the
//! controller's database.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::manifest::scheduled_task::{TaskOverride, STARTED_BY_MAX};
use crate::manifest::service::PlacementStrategy;
use crate::manifest::{CapacityProviderStrategyItem, PlacementConstraint, TaskDefinitionSpec};
use crate::model::{
    ContainerExit, DesiredState, NetworkBinding, ObservedState, TaskDefRef, TaskIdentity,
    TaskStatus,
};
use crate::scheduler;

/// Stopped tasks are kept this long (seconds), then forgotten and their
/// containers removed: ECS shows a stopped task for about an hour.
pub const RETENTION: i64 = 3600;

/// A task not shown by the runtime this long after it was started is
/// gone (seconds).
pub const GONE_AFTER: i64 = 10;

/// Tasks one run starts at most (ECS `RunTask` count: 1-10).
pub const MAX_COUNT: u32 = 10;

/// What a run asks for: `reconcile run-task`, or one fire of a schedule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunRequest {
    pub cluster: String,
    /// `family` (the revision the source last applied, else the latest
    /// registered) or `family:revision`.
    pub task_definition: String,
    /// Tasks to start, 1-10.
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_constraints: Vec<PlacementConstraint>,
    /// Empty: the service default (spread by zone, then by node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_strategy: Vec<PlacementStrategy>,
    /// Empty: the cluster's default strategy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capacity_provider_strategy: Vec<CapacityProviderStrategyItem>,
    /// Container overrides: commands and environment (ECS `overrides`).
    #[serde(default, skip_serializing_if = "TaskOverride::is_empty")]
    pub overrides: TaskOverride,
    /// ECS `startedBy`: up to 36 letters, digits, `-`, `_` and `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
}

fn one() -> u32 {
    1
}

/// A task started outside any service, as it was asked for and as it
/// ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub id: String,
    pub cluster: String,
    pub family: String,
    pub revision: u32,
    /// ECS task group: `family:NAME`.
    pub group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    pub node: String,
    /// Unix seconds.
    pub created_at: i64,
    /// RUNNING until it stops by itself or is stopped.
    pub desired_status: TaskStatus,
    pub last_status: TaskStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<i64>,
    /// ECS stop codes: `EssentialContainerExited`, `UserInitiated`,
    /// `TaskFailedToStart`, or `TaskGone` (its node lost it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exits: Vec<ContainerExit>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<NetworkBinding>,
}

impl RunRecord {
    /// The exit code a run reports: the essential container that stopped
    /// the task, else the first essential one that exited (ECS: the task's
    /// outcome is its essential containers').
    pub fn exit_code(&self) -> Option<i64> {
        let stopper = self.stopped_reason.as_deref().and_then(|r| {
            self.exits
                .iter()
                .find(|e| e.essential && r.contains(&format!("`{}`", e.name)))
        });
        stopper
            .or_else(|| self.exits.iter().find(|e| e.essential))
            .and_then(|e| e.exit_code)
    }

    pub fn is_stopped(&self) -> bool {
        self.last_status == TaskStatus::Stopped
    }
}

/// A task a run starts: where, as what.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    pub identity: TaskIdentity,
    pub node: String,
    pub spec: TaskDefinitionSpec,
}

/// Where a run's tasks go, and why the rest could not be placed (ECS
/// `RunTask` returns both: the tasks it started and its `failures`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Placed {
    pub starts: Vec<Start>,
    pub failures: Vec<String>,
}

/// What a run started and what it could not place: the reply of
/// `POST /v1/tasks`, and `run-task --format json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunReply {
    pub tasks: Vec<RunRecord>,
    pub failures: Vec<String>,
}

/// A request that cannot run at all: unknown cluster or task definition,
/// a count out of range, a bad override or constraint.
pub type Refusal = String;

/// Check what a request asks before anything is placed.
pub fn check(req: &RunRequest) -> Result<(), Refusal> {
    if !(1..=MAX_COUNT).contains(&req.count) {
        return Err(format!(
            "count {} is out of range: a run starts 1 to {MAX_COUNT} tasks",
            req.count
        ));
    }
    if let Some(by) = &req.started_by {
        let ok = !by.is_empty()
            && by.len() <= STARTED_BY_MAX
            && by
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/'));
        if !ok {
            return Err(format!(
                "started-by `{by}`: up to {STARTED_BY_MAX} letters, digits, `-`, `_` and `/` (ECS startedBy)"
            ));
        }
    }
    Ok(())
}

/// The revision `reference` runs: the one it names, else the one the
/// source last applied, else the latest registered.
pub fn revision_of<'a>(
    observed: &'a ObservedState,
    reference: &str,
) -> Result<&'a crate::model::Revision, Refusal> {
    let r = TaskDefRef::parse(reference);
    if r.family.is_empty() || (reference.contains(':') && r.revision.is_none()) {
        return Err(format!(
            "task definition `{reference}`: expected FAMILY or FAMILY:REVISION"
        ));
    }
    let Some(revisions) = observed.revisions.get(r.family).filter(|v| !v.is_empty()) else {
        let mut known: Vec<&str> = observed.revisions.keys().map(String::as_str).collect();
        known.sort();
        return Err(format!(
            "task definition family `{}` is not registered{}",
            r.family,
            if known.is_empty() {
                " (nothing is: apply a source that defines it first)".to_string()
            } else {
                format!(" (registered: {})", known.join(", "))
            }
        ));
    };
    let number = r
        .revision
        .or_else(|| observed.task_definitions.get(r.family).copied())
        .unwrap_or_else(|| revisions.iter().map(|x| x.number).max().unwrap_or(0));
    revisions
        .iter()
        .find(|x| x.number == number)
        .ok_or_else(|| {
            let numbers: Vec<String> = revisions.iter().map(|x| x.number.to_string()).collect();
            format!(
                "task definition `{}:{number}` is not registered (revisions: {})",
                r.family,
                numbers.join(", ")
            )
        })
}

/// Place the tasks of `req` on the nodes `observed` holds, as the
/// scheduler places a service's (constraints of the task definition and
/// the request, strategies, capacity providers, reserved and used ports);
/// `desired` gives the clusters and capacity providers in force. Tasks
/// that fit nowhere are `failures`, with the scheduler's reason.
pub fn place(
    req: &RunRequest,
    desired: &DesiredState,
    observed: &ObservedState,
    seed: u64,
    mut new_id: impl FnMut() -> String,
) -> Result<Placed, Refusal> {
    check(req)?;
    let standalone_host = observed.nodes.iter().any(|n| n.cluster == "*");
    if !standalone_host && !desired.clusters.contains_key(&req.cluster) {
        let known: Vec<&str> = desired.clusters.keys().map(String::as_str).collect();
        return Err(format!(
            "cluster `{}` does not exist{}",
            req.cluster,
            if known.is_empty() {
                String::new()
            } else {
                format!(" (clusters: {})", known.join(", "))
            }
        ));
    }
    let revision = revision_of(observed, &req.task_definition)?;
    let family = TaskDefRef::parse(&req.task_definition).family.to_string();
    let spec = req.overrides.apply_to(&revision.spec).map_err(|e| {
        let names: Vec<&str> = revision
            .spec
            .container_definitions
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        format!("override: {e} (containers: {})", names.join(", "))
    })?;
    let mut constraints = Vec::new();
    for pc in spec
        .placement_constraints
        .iter()
        .chain(req.placement_constraints.iter())
    {
        constraints.push(
            scheduler::Constraint::from_manifest(pc)
                .map_err(|e| format!("placement constraint: {e}"))?,
        );
    }
    let providers: Vec<CapacityProviderStrategyItem> = if standalone_host {
        Vec::new()
    } else if req.capacity_provider_strategy.is_empty() {
        desired
            .clusters
            .get(&req.cluster)
            .map(|c| c.default_capacity_provider_strategy.clone())
            .unwrap_or_default()
    } else {
        for item in &req.capacity_provider_strategy {
            let attached = desired
                .clusters
                .get(&req.cluster)
                .is_some_and(|c| c.capacity_providers.contains(&item.capacity_provider));
            if !attached {
                return Err(format!(
                    "capacity provider `{}` is not attached to cluster `{}`",
                    item.capacity_provider, req.cluster
                ));
            }
        }
        req.capacity_provider_strategy.clone()
    };
    let (cpu, memory, ports) = crate::model::reservation(&spec);
    let group = format!("family:{family}");
    let request = scheduler::TaskRequest {
        group: group.clone(),
        cpu,
        memory,
        host_ports: ports,
        constraints: &constraints,
        strategy: &req.placement_strategy,
        capacity_provider_strategy: &providers,
    };
    let mut nodes: Vec<scheduler::Node> = crate::plan::scheduler_view(desired, observed)
        .into_iter()
        .zip(&observed.nodes)
        .filter(|(_, info)| info.cluster == req.cluster || info.cluster == "*")
        .map(|(n, _)| n)
        .collect();
    let placed = scheduler::place(&mut nodes, &request, req.count, &BTreeMap::new(), seed);
    let config_hash = crate::model::digest(&(&family, crate::model::digest(&spec)));
    let starts = placed
        .assignments
        .iter()
        .map(|&i| Start {
            identity: TaskIdentity {
                id: new_id(),
                cluster: req.cluster.clone(),
                service: None,
                family: family.clone(),
                revision: revision.number,
                config_hash: config_hash.clone(),
                started_by: req.started_by.clone(),
            },
            node: nodes[i].name.clone(),
            spec: spec.clone(),
        })
        .collect();
    let failures = placed
        .failure
        .map(|f| {
            vec![format!(
                "{} task(s) not placed: unable to place a task because {}",
                f.unplaced, f.reason
            )]
        })
        .unwrap_or_default();
    Ok(Placed { starts, failures })
}

/// The record of a task just started.
pub fn record_of(start: &Start, now: i64) -> RunRecord {
    RunRecord {
        id: start.identity.id.clone(),
        cluster: start.identity.cluster.clone(),
        family: start.identity.family.clone(),
        revision: start.identity.revision,
        group: format!("family:{}", start.identity.family),
        started_by: start.identity.started_by.clone(),
        node: start.node.clone(),
        created_at: now,
        desired_status: TaskStatus::Running,
        last_status: TaskStatus::Pending,
        started_at: None,
        stopped_at: None,
        stop_code: None,
        stopped_reason: None,
        exits: Vec::new(),
        bindings: Vec::new(),
    }
}

/// Mark a record stopped by the user, before its task is stopped: the
/// reason is the user's, whatever the containers say as they go.
pub fn stop_requested(r: &mut RunRecord, reason: &str, now: i64) {
    r.desired_status = TaskStatus::Stopped;
    if r.stop_code.is_none() {
        r.stop_code = Some("UserInitiated".into());
        r.stopped_reason = Some(if reason.is_empty() {
            "Task stopped by user".to_string()
        } else {
            reason.to_string()
        });
    }
    if r.stopped_at.is_none() && !r.is_stopped() {
        r.stopped_at = Some(now);
    }
}

/// What [`refresh`] found to do.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Refreshed {
    /// Records that changed (to be saved).
    pub changed: Vec<String>,
    /// Records past their retention: forget them and remove what is left
    /// of their tasks.
    pub expired: Vec<String>,
}

/// Bring records up to date with what runs: status, start and stop
/// times, exit codes, bindings. A task the runtime no longer shows that
/// had not stopped is stopped (`TaskGone`): its node lost it. A stopped
/// task's record expires [`RETENTION`] seconds after it stopped.
pub fn refresh(
    records: &mut BTreeMap<String, RunRecord>,
    tasks: &[crate::model::Task],
    now: i64,
) -> Refreshed {
    let by_id: std::collections::HashMap<&str, &crate::model::Task> =
        tasks.iter().map(|t| (t.identity.id.as_str(), t)).collect();
    let mut out = Refreshed::default();
    for (id, r) in records.iter_mut() {
        let before = r.clone();
        match by_id.get(id.as_str()) {
            Some(t) => {
                if !r.is_stopped() {
                    r.last_status = t.last_status;
                }
                r.started_at = r.started_at.or(t.started_at);
                if !t.bindings.is_empty() {
                    r.bindings = t.bindings.clone();
                }
                if !t.exits.is_empty() {
                    r.exits = t.exits.clone();
                }
                if t.last_status == TaskStatus::Stopped {
                    r.last_status = TaskStatus::Stopped;
                    r.desired_status = TaskStatus::Stopped;
                    if r.stop_code.is_none() {
                        r.stop_code = t.stop_code.clone();
                        r.stopped_reason = t.stopped_reason.clone();
                    }
                    r.stopped_at = t.stopped_at.or(r.stopped_at).or(Some(now));
                }
            }
            None if !r.is_stopped() && now - r.created_at >= GONE_AFTER => {
                // A runtime shows a task as soon as it was given it (a
                // fleet's as PENDING until its node reports it), so after
                // a moment's grace for an observation made just before the
                // start, a task not shown went away.
                r.last_status = TaskStatus::Stopped;
                r.desired_status = TaskStatus::Stopped;
                if r.stop_code.is_none() {
                    r.stop_code = Some("TaskGone".into());
                    r.stopped_reason = Some(format!(
                        "the task is no longer on node `{}` (its containers were removed, or the node was lost)",
                        r.node
                    ));
                }
                r.stopped_at = r.stopped_at.or(Some(now));
            }
            None => {}
        }
        if *r != before {
            out.changed.push(id.clone());
        }
        if r.is_stopped() && r.stopped_at.is_some_and(|at| now - at >= RETENTION) {
            out.expired.push(id.clone());
        }
    }
    out
}

/// Which records `reconcile tasks` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    /// RUNNING (not yet stopped: pending or running) or STOPPED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
}

impl Filter {
    pub fn keeps(&self, r: &RunRecord) -> bool {
        self.cluster.as_ref().is_none_or(|c| &r.cluster == c)
            && self.family.as_ref().is_none_or(|f| &r.family == f)
            && self
                .started_by
                .as_ref()
                .is_none_or(|s| r.started_by.as_ref() == Some(s))
            && self.status.is_none_or(|s| match s {
                TaskStatus::Stopped => r.is_stopped(),
                _ => !r.is_stopped(),
            })
    }
}

/// The record an id or a unique prefix of at least 8 characters names.
pub fn find<'a>(
    records: &'a BTreeMap<String, RunRecord>,
    id: &str,
) -> Result<&'a RunRecord, Refusal> {
    if let Some(r) = records.get(id) {
        return Ok(r);
    }
    if id.len() < 8 {
        return Err(format!(
            "task `{id}`: no such task (give the id or at least 8 of its first characters)"
        ));
    }
    let mut found = records.values().filter(|r| r.id.starts_with(id));
    match (found.next(), found.next()) {
        (Some(r), None) => Ok(r),
        (Some(_), Some(_)) => Err(format!("task `{id}`: the prefix names several tasks")),
        (None, _) => Err(format!(
            "task `{id}`: no such task (stopped tasks are kept for {} minutes)",
            RETENTION / 60
        )),
    }
}

pub mod scheduled;

#[cfg(test)]
mod tests;
