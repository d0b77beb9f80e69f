//! Rebalancing of spread services, the I/O side: after a pass that changed
//! nothing, one task of one service is moved to even out its spread
//! ([`crate::scheduler::rebalance`] decides which).
//!
//! A move is the controller's own action, like replacing a task that
//! died: the source did not change, so the plan shows none; the service's
//! events (SERVICE_REBALANCING_STARTED, the tasks started and stopped,
//! SERVICE_REBALANCING_COMPLETED) say what happened. Moves never overlap a
//! pass, so no plan sees a move half done.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::fleet::Fleet;
use super::store::AssignmentRecord;
use super::{guard, Controller};
use crate::deployment::{EventKind, Rollout, Status};
use crate::model::{self, DesiredService, Task, TaskStatus};
use crate::plan;
use crate::runtime::Runtime;
use crate::scheduler::{self, rebalance as decide};

/// A cluster's nodes must have been the same, with no task left to stop
/// on any of them, this long before its services are rebalanced: a node
/// that just joined or came back settles first, as ECS waits for a
/// steady state.
pub(super) const QUIET: Duration = Duration::from_secs(10);
/// After a move fails, its service is left alone this long.
const RETRY_AFTER: Duration = Duration::from_secs(300);

/// What rebalancing remembers between passes.
#[derive(Default)]
pub(super) struct Rebalancing {
    /// Per cluster: its nodes that take tasks, and since when they have
    /// been these with nothing left to stop.
    settled: BTreeMap<String, (BTreeSet<String>, Instant)>,
    /// Services that moved a task since their last
    /// SERVICE_REBALANCING_STARTED, which end with
    /// SERVICE_REBALANCING_COMPLETED.
    moving: BTreeSet<String>,
    /// Services whose last move failed, until when they are left alone.
    failed: BTreeMap<String, Instant>,
    /// Ids of the tasks moves start.
    ids: Arc<AtomicU64>,
}

/// What one service needs now.
enum Next {
    /// Not steady, not quiet, or rebalancing does not apply.
    Nothing,
    /// As even as its nodes allow: tasks per value of the spread.
    Even(String),
    Move(Box<Step>),
}

/// A move decided, with what carrying it out needs.
struct Step {
    m: decide::Move,
    /// The task stopped on `m.from`; the new one on `m.to` is a copy of
    /// its assignment.
    victim: AssignmentRecord,
    has_checks: bool,
    /// Tasks per value of the spread before the move.
    before: String,
}

impl Controller {
    /// One rebalancing step, after a pass that changed nothing: the first
    /// service (by name) that is uneven moves one task. Returns whether a
    /// task moved (the loop then passes again at once).
    pub(super) async fn rebalance(self: &Arc<Self>) -> bool {
        if self.requests().suspended {
            return false;
        }
        let Some(desired) = self.applied().desired.clone() else {
            return false;
        };
        let quiet = self.quiet_clusters();
        let now = Instant::now();
        guard(&self.rebalancing)
            .failed
            .retain(|_, until| *until > now);
        for (key, svc) in &desired.services {
            if !quiet.contains(&svc.key.cluster)
                || guard(&self.rebalancing).failed.contains_key(key)
            {
                continue;
            }
            match self.next(key, svc, &desired) {
                Next::Nothing => {}
                Next::Even(per) => {
                    if guard(&self.rebalancing).moving.remove(key) {
                        self.rebalancing_event(
                            key,
                            EventKind::ServiceRebalancingCompleted,
                            format!("rebalancing completed: tasks per value {per}"),
                        );
                    }
                }
                Next::Move(step) => {
                    if guard(&self.rebalancing).moving.insert(key.clone()) {
                        self.rebalancing_event(
                            key,
                            EventKind::ServiceRebalancingStarted,
                            format!(
                                "rebalancing started: tasks per value {}; moving tasks to even them out",
                                step.before
                            ),
                        );
                    }
                    // Requests that change the stored state wait, as they
                    // do for an apply.
                    self.requests().applying = true;
                    let r = self.carry_out(key, &step).await;
                    self.after_apply();
                    if let Err(e) = r {
                        self.service_event(
                            key,
                            format!(
                                "{key}: rebalancing paused for {} min: {e}",
                                RETRY_AFTER.as_secs() / 60
                            ),
                        );
                        guard(&self.rebalancing)
                            .failed
                            .insert(key.clone(), Instant::now() + RETRY_AFTER);
                    }
                    return true;
                }
            }
        }
        false
    }

    /// Clusters whose nodes have been the same, with nothing left to stop,
    /// for [`QUIET`].
    fn quiet_clusters(&self) -> BTreeSet<String> {
        let mut now: BTreeMap<String, (BTreeSet<String>, bool)> = BTreeMap::new();
        {
            let m = self.members();
            for (name, n) in &m.nodes {
                let e = now.entry(n.record.info.cluster.clone()).or_default();
                if n.record.status == crate::wire::NodeStatus::Active {
                    e.0.insert(name.clone());
                }
                // A task the node still runs but was told to stop.
                e.1 |= n
                    .reported
                    .iter()
                    .any(|t| t.is_live() && !m.assignments.contains_key(&t.identity.id));
            }
        }
        let at = Instant::now();
        let mut r = guard(&self.rebalancing);
        r.settled.retain(|c, _| now.contains_key(c));
        let mut quiet = BTreeSet::new();
        for (cluster, (nodes, stopping)) in now {
            let e = r
                .settled
                .entry(cluster.clone())
                .or_insert_with(|| (nodes.clone(), at));
            if e.0 != nodes || stopping {
                *e = (nodes, at);
            } else if at.duration_since(e.1) >= QUIET {
                quiet.insert(cluster);
            }
        }
        quiet
    }

    /// What service `key` needs now. Only a service whose deployment is
    /// complete and whose tasks all run its configuration, healthy, moves.
    fn next(&self, key: &str, svc: &DesiredService, desired: &model::DesiredState) -> Next {
        let spec = &svc.spec;
        let cluster = svc.key.cluster.as_str();
        let providers = !plan::strategy_of(desired, cluster, spec).is_empty();
        let Some(spread) = decide::spread_of(spec, providers) else {
            return Next::Nothing;
        };
        if !svc.self_heal {
            return Next::Nothing;
        }
        let config_hash = {
            let a = self.applied();
            let Some(applied) = a.stored.services.get(key) else {
                return Next::Nothing;
            };
            let Some(h) = a.stored.deployments.get(key) else {
                return Next::Nothing;
            };
            let rolling = h.deployments.iter().any(|d| d.status == Status::Active)
                || h.primary().is_none_or(|d| d.rollout != Rollout::Completed);
            if rolling {
                return Next::Nothing;
            }
            applied.config_hash.clone()
        };
        let observation = self.observation();
        let tasks: Vec<&Task> = observation
            .tasks
            .iter()
            .filter(|t| {
                t.is_live()
                    && t.identity.cluster == cluster
                    && t.identity.service.as_deref() == Some(svc.key.name.as_str())
            })
            .collect();
        if tasks.iter().any(|t| t.identity.config_hash != config_hash) {
            return Next::Nothing;
        }
        let m = self.members();
        // The template of a moved task: the assignment of one that runs.
        let Some(template) = tasks.iter().find_map(|t| m.assignments.get(&t.identity.id)) else {
            return Next::Nothing;
        };
        let td = &template.task.spec;
        let has_checks = crate::apply::has_checks(td) || !spec.load_balancers.is_empty();
        let unix = crate::clock::unix_now();
        let healthy = tasks
            .iter()
            .filter(|t| {
                let ran = t.started_at.map_or(0, |s| unix.saturating_sub(s).max(0)) as u64;
                crate::apply::healthy(t, has_checks, Duration::from_secs(ran), self.config.settle)
            })
            .count() as u32;
        let (cpu, memory, host_ports) = model::reservation(td);
        let constraints: Vec<scheduler::Constraint> = td
            .placement_constraints
            .iter()
            .chain(&spec.placement_constraints)
            .filter_map(|c| scheduler::Constraint::from_manifest(c).ok())
            .collect();
        let req = scheduler::TaskRequest {
            group: format!("service:{}", svc.key.name),
            cpu,
            memory,
            host_ports,
            constraints: &constraints,
            strategy: &spec.placement_strategy,
            capacity_provider_strategy: &[],
        };
        let slots: Vec<decide::Slot> = observation
            .nodes
            .iter()
            .filter(|n| n.cluster == cluster)
            .map(|n| {
                let node = scheduler_node(n, &m.assignments);
                decide::Slot {
                    node: n.name.clone(),
                    bucket: spread.bucket(&n.name, &n.attributes),
                    tasks: tasks.iter().filter(|t| t.node == n.name).count() as u32,
                    accepts: decide::accepts(&node, &req),
                }
            })
            .collect();
        let d = &spec.deployment_configuration;
        let input = decide::Input {
            slots: &slots,
            running: tasks.len() as u32,
            healthy,
            bounds: decide::Bounds {
                desired: spec.desired_count.unwrap_or(0),
                min_healthy_percent: d.min_healthy(spec.scheduling_strategy),
                max_percent: d.max_percent(spec.scheduling_strategy),
            },
        };
        let steady = input.running == input.bounds.desired && healthy == input.running;
        let Some(mv) = decide::next_move(&input) else {
            return if steady && decide::imbalance(&slots).is_none() {
                Next::Even(decide::describe(&slots))
            } else {
                Next::Nothing
            };
        };
        // The task that goes: the one that started last on the node, so
        // the longest-running ones stay.
        let victim = tasks
            .iter()
            .filter(|t| t.node == mv.from)
            .max_by(|a, b| (a.started_at, &a.identity.id).cmp(&(b.started_at, &b.identity.id)))
            .and_then(|t| m.assignments.get(&t.identity.id));
        let Some(victim) = victim else {
            return Next::Nothing;
        };
        Next::Move(Box::new(Step {
            m: mv,
            victim: victim.clone(),
            has_checks,
            before: decide::describe(&slots),
        }))
    }

    /// Carry out one move: start, wait until healthy, stop (or the other
    /// way round when only the minimum leaves room).
    async fn carry_out(self: &Arc<Self>, key: &str, step: &Step) -> Result<(), String> {
        let fleet = Fleet {
            controller: self.clone(),
        };
        let ids = guard(&self.rebalancing).ids.clone();
        let mut record = step.victim.clone();
        record.node = step.m.to.clone();
        record.task.identity.id = model::new_task_id(&ids);
        record.task.reported = false;
        let new_id = record.task.identity.id.clone();
        let old_id = step.victim.task.identity.id.clone();
        let reason = format!(
            "rebalancing from {} to {}",
            value(&step.m.from_bucket),
            value(&step.m.to_bucket)
        );
        let start = || async {
            fleet.assign(record.clone()).map_err(|e| e.message)?;
            self.service_event(
                key,
                format!(
                    "{key}: started task {} (revision {}) on {}: {reason}",
                    plan::short(&new_id),
                    record.task.identity.revision,
                    step.m.to
                ),
            );
            match self.wait_healthy(&new_id, step.has_checks).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    // Its place is given back; the plan replaces nothing.
                    let _ = fleet.stop(&new_id, &e).await;
                    Err(format!(
                        "task {} on {}: {e}",
                        plan::short(&new_id),
                        step.m.to
                    ))
                }
            }
        };
        let stop = || async {
            fleet.deregister(std::slice::from_ref(&old_id)).await.ok();
            fleet.stop(&old_id, &reason).await.map_err(|e| e.message)?;
            self.service_event(
                key,
                format!(
                    "{key}: stopped task {} on {}: {reason}",
                    plan::short(&old_id),
                    step.m.from
                ),
            );
            Ok::<(), String>(())
        };
        match step.m.order {
            decide::Order::StartFirst => {
                start().await?;
                stop().await
            }
            // Should the new task fail, the next pass starts one, as for
            // any task that stopped.
            decide::Order::StopFirst => {
                stop().await?;
                start().await
            }
        }
    }

    /// Return once task `id` runs healthy; an error when it stops or the
    /// step timeout passes first.
    async fn wait_healthy(&self, id: &str, has_checks: bool) -> Result<(), String> {
        let deadline = Instant::now() + self.config.step_timeout;
        let mut reports = self.reported.subscribe();
        loop {
            reports.borrow_and_update();
            let task = self
                .observation()
                .tasks
                .into_iter()
                .find(|t| t.identity.id == id);
            match task {
                None => return Err("its assignment is gone".into()),
                Some(t) if t.last_status == TaskStatus::Stopped => {
                    return Err(format!(
                        "it stopped: {}",
                        t.stopped_reason.as_deref().unwrap_or("no reason given")
                    ))
                }
                Some(t) => {
                    let ran = t
                        .started_at
                        .map_or(0, |s| crate::clock::unix_now().saturating_sub(s).max(0))
                        as u64;
                    if crate::apply::healthy(
                        &t,
                        has_checks,
                        Duration::from_secs(ran),
                        self.config.settle,
                    ) {
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not healthy {} s after it was assigned",
                    self.config.step_timeout.as_secs()
                ));
            }
            // The next heartbeat, or a second: settling is a matter of time.
            let _ = tokio::time::timeout(Duration::from_secs(1), reports.changed()).await;
        }
    }

    /// An event of the service's history (shown by status and history)
    /// that is also a controller event (shown by `events`).
    fn rebalancing_event(&self, key: &str, kind: EventKind, message: String) {
        let stored = {
            let mut a = self.applied();
            a.stored
                .deployments
                .entry(key.to_string())
                .or_default()
                .event(crate::clock::unix_now(), kind, message.clone());
            a.stored.clone()
        };
        if let Err(e) = self.db.save_stored(&stored) {
            tracing::error!("saving the controller state: {e}");
        }
        self.service_event(
            key,
            format!("{key}: {} {message}", model::serde_name(&kind)),
        );
    }
}

/// A value of the spread, for people.
fn value(bucket: &str) -> &str {
    if bucket.is_empty() {
        "nodes without the attribute"
    } else {
        bucket
    }
}

/// The scheduler's view of a node, with the reservations of the tasks
/// assigned to it.
fn scheduler_node(
    n: &model::NodeInfo,
    assignments: &BTreeMap<String, AssignmentRecord>,
) -> scheduler::Node {
    use crate::manifest::task_definition::Protocol;
    let mut node = scheduler::Node::new(n.name.clone(), n.cpu, n.memory);
    node.attributes = n.attributes.clone();
    node.agent_version = env!("CARGO_PKG_VERSION").to_string();
    node.used_ports
        .extend(n.reserved_ports.iter().map(|&p| (p, Protocol::Tcp)));
    for a in assignments.values().filter(|a| a.node == n.name) {
        let (cpu, memory, ports) = model::reservation(&a.task.spec);
        node.used_cpu = node.used_cpu.saturating_add(cpu);
        node.used_memory = node.used_memory.saturating_add(memory);
        node.used_ports.extend(ports);
        node.running_tasks += 1;
        if let Some(s) = &a.task.identity.service {
            *node.task_groups.entry(format!("service:{s}")).or_default() += 1;
        }
    }
    node
}
