//! Nodes and their assignments: heartbeats register nodes and report their
//! tasks, replies and long polls carry assignments, silent nodes are LOST
//! and their tasks placed elsewhere. The observed state the planner sees is
//! built here.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::store::{AssignmentRecord, NodeRecord};
use super::{Controller, Members, Node};
use crate::model::{self, Health, NodeInfo, Task, TaskStatus};
use crate::runtime::Observation;
use crate::utilization::TaskUsage;
use crate::wire::{Changes, Heartbeat, HeartbeatReply, NodeStatus, NodeView};

/// An assigned task its node does not report, as the planner sees it.
pub(super) fn unreported(a: &AssignmentRecord, status: TaskStatus) -> Task {
    Task {
        identity: a.task.identity.clone(),
        node: a.node.clone(),
        last_status: status,
        health: Health::Unknown,
        started_at: None,
        stop_code: None,
        stopped_reason: None,
        bindings: Vec::new(),
        target_health: None,
        exits: Vec::new(),
        stopped_at: None,
    }
}

/// The usage a node reported of the tasks it reports: nothing is kept of
/// a task once its node no longer reports it.
fn usage_of_reported(
    mut usage: BTreeMap<String, TaskUsage>,
    tasks: &[Task],
) -> BTreeMap<String, TaskUsage> {
    let ids: std::collections::HashSet<&str> =
        tasks.iter().map(|t| t.identity.id.as_str()).collect();
    usage.retain(|id, _| ids.contains(id.as_str()));
    usage
}

impl Controller {
    /// The usage of every task its node reports, by task id.
    pub fn usage(&self) -> BTreeMap<String, TaskUsage> {
        let s = self.members();
        s.nodes
            .values()
            .flat_map(|n| n.usage.iter().map(|(id, u)| (id.clone(), *u)))
            .collect()
    }

    /// Requests per minute each target task gets from the listeners of
    /// every node, by task id.
    pub fn requests_per_minute(&self) -> BTreeMap<String, f64> {
        let s = self.members();
        let mut out = BTreeMap::new();
        for n in s.nodes.values() {
            for (id, r) in &n.served.per_minute {
                *out.entry(id.clone()).or_insert(0.0) += r;
            }
        }
        out
    }

    /// An agent's heartbeat: register or refresh the node, keep its report,
    /// and answer with its assignments.
    pub fn heartbeat(&self, name: &str, hb: Heartbeat) -> Result<HeartbeatReply, (u16, String)> {
        let mut changed = None;
        let mut traffic_events = None;
        let compact = hb.compact;
        let reply = {
            if hb.cpu > super::identity::MAX_CPU || hb.memory > super::identity::MAX_MEMORY {
                return Err((
                    400,
                    format!(
                        "node `{name}` declares {} CPU units and {} MiB; at most {} and {} are believed",
                        hb.cpu,
                        hb.memory,
                        super::identity::MAX_CPU,
                        super::identity::MAX_MEMORY
                    ),
                ));
            }
            let mut s = self.members();
            // The credential is bound to a cluster: a node reports for the
            // cluster it joined, nothing else.
            match s.credentials.get(name) {
                Some(c) if c.cluster == hb.cluster => {}
                Some(c) => {
                    return Err((
                        403,
                        format!(
                            "node `{name}` joined cluster `{}`, not `{}`",
                            c.cluster, hb.cluster
                        ),
                    ))
                }
                None => return Err((401, format!("node `{name}` has not joined"))),
            }
            if !s.clusters.is_empty() && !s.clusters.contains(&hb.cluster) {
                return Err((
                    403,
                    format!(
                        "node `{name}` asks to join cluster `{}`, which the source does not define",
                        hb.cluster
                    ),
                ));
            }
            let info = NodeInfo {
                name: name.to_string(),
                cluster: hb.cluster.clone(),
                attributes: hb.attributes.clone(),
                cpu: hb.cpu,
                memory: hb.memory,
                reserved_ports: hb.reserved_ports.clone(),
            };
            match s.nodes.get_mut(name) {
                Some(n) if n.record.info.cluster != hb.cluster => {
                    return Err((
                        409,
                        format!(
                            "node `{name}` is registered in cluster `{}`, not `{}`",
                            n.record.info.cluster, hb.cluster
                        ),
                    ));
                }
                Some(n) => {
                    let status = match n.record.status {
                        NodeStatus::Lost => NodeStatus::Active,
                        s => s,
                    };
                    if n.record.info != info
                        || n.record.status != status
                        || n.record.agent_version != hb.agent_version
                    {
                        if n.record.status == NodeStatus::Lost {
                            changed =
                                Some(format!("node {name} is back; its stale tasks are stopped"));
                        } else {
                            changed =
                                Some(format!("node {name} updated its resources or attributes"));
                        }
                        n.record.info = info;
                        n.record.status = status;
                        n.record.lost_at = None;
                        n.record.agent_version = hb.agent_version.clone();
                    }
                    n.last_seen = Some(Instant::now());
                    n.address = hb.address;
                    n.traffic_ack = hb.traffic_generation;
                    n.inflight = hb.inflight;
                    n.served.report(hb.served, Instant::now());
                    n.usage = usage_of_reported(hb.usage, &hb.tasks);
                    let old = std::mem::replace(&mut n.reported, hb.tasks);
                    traffic_events = self.traffic_report(name, &hb.cluster, &old, &n.reported);
                }
                None => {
                    s.joining.remove(name);
                    changed = Some(format!(
                        "node {name} joined cluster {} ({} CPU units, {} MiB)",
                        hb.cluster, hb.cpu, hb.memory
                    ));
                    s.nodes.insert(
                        name.to_string(),
                        Node {
                            record: NodeRecord {
                                info,
                                status: NodeStatus::Active,
                                agent_version: hb.agent_version.clone(),
                                lost_at: None,
                            },
                            last_seen: Some(Instant::now()),
                            usage: usage_of_reported(hb.usage, &hb.tasks),
                            reported: hb.tasks,
                            address: hb.address,
                            traffic_ack: hb.traffic_generation,
                            inflight: hb.inflight,
                            served: {
                                let mut r = crate::utilization::ServedRate::default();
                                r.report(hb.served, Instant::now());
                                r
                            },
                        },
                    );
                }
            }
            // Assignments reported for the first time: from now on their
            // disappearance is drift, not a start still to come.
            let ids: std::collections::HashSet<String> = s.nodes[name]
                .reported
                .iter()
                .map(|t| t.identity.id.clone())
                .collect();
            let newly: Vec<String> = s
                .assignments
                .values()
                .filter(|a| a.node == name && !a.task.reported && ids.contains(&a.task.identity.id))
                .map(|a| a.task.identity.id.clone())
                .collect();
            if !newly.is_empty() {
                for id in &newly {
                    if let Some(a) = s.assignments.get_mut(id) {
                        a.task.reported = true;
                    }
                }
                let recs: Vec<&AssignmentRecord> = newly
                    .iter()
                    .filter_map(|id| s.assignments.get(id))
                    .collect();
                if let Err(e) = self.db.assign(&recs, &[]) {
                    return Err((500, e.to_string()));
                }
            }
            if changed.is_some() {
                if let Err(e) = self.db.put_node(&s.nodes[name].record) {
                    return Err((500, e.to_string()));
                }
            }
            self.reply(&s, name, compact)
        };
        if let Some(events) = traffic_events {
            for (service, e) in events {
                self.service_event(&service, e);
            }
            self.traffic_changed();
        }
        self.reported.send_modify(|g| *g += 1);
        if let Some(m) = changed {
            self.event(m);
            self.sync();
        }
        Ok(reply)
    }

    /// The node's assignments as a heartbeat reply carries them. The
    /// generation is read under the members lock and bumped only after the
    /// lock is released, so the assignments are never older than it.
    pub(super) fn reply(&self, s: &Members, name: &str, compact: bool) -> HeartbeatReply {
        let (mut assignments, mut kept) = (Vec::new(), Vec::new());
        for a in s.assignments.values().filter(|a| a.node == name) {
            // A stop request goes in full: the node must learn of it.
            if compact && a.task.reported && !a.task.stop {
                kept.push(a.task.identity.id.clone());
            } else {
                assignments.push(a.task.clone());
            }
        }
        HeartbeatReply {
            status: s
                .nodes
                .get(name)
                .map_or(NodeStatus::Active, |n| n.record.status),
            assignments,
            kept,
            heartbeat_millis: self.config.heartbeat.as_millis() as u64,
            generation: *self.assigned.borrow(),
            traffic: self.traffic_for(s, name),
            logs: self.logs.pending(name),
        }
    }

    /// An agent's long poll: once the assignment generation differs from
    /// `after`, the new one with the node's assignments (compact); the
    /// current generation alone when `timeout` passes first, or when the
    /// node is unknown or LOST (its next heartbeat settles that).
    pub async fn assignment_changes(&self, name: &str, after: u64, timeout: Duration) -> Changes {
        let mut rx = self.assigned.subscribe();
        // A log session for the node ends the wait too, the generation
        // unchanged.
        let changed = tokio::time::timeout(timeout, async {
            tokio::select! {
                _ = rx.wait_for(|g| *g != after) => true,
                _ = self.logs.wait_untold(name) => false,
            }
        })
        .await
        .unwrap_or(false);
        let s = self.members();
        let generation = *self.assigned.borrow();
        let known = s
            .nodes
            .get(name)
            .is_some_and(|n| n.record.status != NodeStatus::Lost);
        Changes {
            generation,
            assignments: (changed && known).then(|| self.reply(&s, name, true)),
            logs: if known {
                self.logs.untold(name)
            } else {
                Vec::new()
            },
        }
    }

    pub(super) fn assignments_changed(&self) {
        self.assigned.send_modify(|g| *g += 1);
    }

    /// Mark nodes LOST that have been silent longer than the timeout (since
    /// the controller started, for nodes it has not heard from yet), and
    /// drop their assignments so their tasks are placed elsewhere.
    pub fn check_nodes(&self) {
        let timeout = self.config.node_timeout;
        let mut lost = Vec::new();
        {
            let mut s = self.members();
            let since_start = self.started.elapsed();
            let names: Vec<String> = s
                .nodes
                .iter()
                .filter(|(_, n)| n.record.status != NodeStatus::Lost)
                .filter(|(_, n)| match n.last_seen {
                    Some(t) => t.elapsed() > timeout,
                    None => since_start > timeout,
                })
                .map(|(k, _)| k.clone())
                .collect();
            for name in names {
                let tasks = match self.unassign_node(&mut s, &name) {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!("saving the controller state: {e}");
                        continue;
                    }
                };
                let n = s.nodes.get_mut(&name).expect("listed above");
                n.record.status = NodeStatus::Lost;
                n.record.lost_at = Some(crate::clock::unix_now());
                n.reported.clear();
                n.usage.clear();
                if let Err(e) = self.db.put_node(&n.record) {
                    tracing::error!("saving the controller state: {e}");
                }
                lost.push((name, tasks));
            }
        }
        self.forget_lost(crate::clock::unix_now());
        if !lost.is_empty() {
            // Their targets and DNS records go with them.
            self.traffic_changed();
        }
        for (name, tasks) in &lost {
            self.event(format!(
                "node {name} is LOST (no heartbeat for {} s); its {tasks} task(s) are rescheduled",
                timeout.as_secs()
            ));
        }
        if !lost.is_empty() {
            self.sync();
        }
    }

    /// Drop the assignments of node `name` (stored first); returns how
    /// many there were.
    pub(super) fn unassign_node(&self, s: &mut Members, name: &str) -> Result<usize, String> {
        let ids: Vec<String> = s
            .assignments
            .values()
            .filter(|a| a.node == name)
            .map(|a| a.task.identity.id.clone())
            .collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.db.assign(&[], &refs).map_err(|e| e.to_string())?;
        for id in &ids {
            s.assignments.remove(id);
        }
        Ok(ids.len())
    }

    /// Set a node's status by hand (drain, activate).
    pub fn set_node_status(&self, name: &str, status: NodeStatus) -> Result<(), String> {
        {
            let mut s = self.members();
            let n = s
                .nodes
                .get_mut(name)
                .ok_or_else(|| format!("no node named `{name}`"))?;
            n.record.status = status;
            self.db.put_node(&n.record).map_err(|e| e.to_string())?;
        }
        self.event(format!("node {name} set to {status:?}"));
        self.sync();
        Ok(())
    }

    /// The observed state the planner sees: assigned tasks as their nodes
    /// report them (PENDING until reported), and the nodes that take tasks.
    pub(super) fn observation(&self) -> Observation {
        let s = self.members();
        // Indexed once: apply polls this several times a second, and a
        // lookup per assignment in its node's list was quadratic.
        let by_id: std::collections::HashMap<(&str, &str), &Task> = s
            .nodes
            .iter()
            .flat_map(|(name, n)| {
                n.reported
                    .iter()
                    .map(move |t| ((name.as_str(), t.identity.id.as_str()), t))
            })
            .collect();
        let mut tasks = Vec::with_capacity(s.assignments.len());
        for a in s.assignments.values() {
            let node = s.nodes.get(&a.node);
            let reported = by_id
                .get(&(a.node.as_str(), a.task.identity.id.as_str()))
                .copied();
            // Only a node that has reported since this controller started can
            // say a task is gone; before that it is PENDING, never replaced.
            let heard = node.is_some_and(|n| n.last_seen.is_some());
            tasks.push(match reported {
                Some(t) => t.clone(),
                // Reported before and gone now: its containers were removed
                // from the node. The planner replaces it (or, with self-heal
                // off, reports it).
                None if a.task.reported && heard => {
                    let mut t = unreported(a, TaskStatus::Stopped);
                    t.stop_code = Some("TaskGone".into());
                    t.stopped_reason = Some("its containers were removed from the node".into());
                    t
                }
                None => unreported(a, TaskStatus::Pending),
            });
        }
        let nodes = s
            .nodes
            .values()
            .filter(|n| n.record.status == NodeStatus::Active)
            .map(|n| n.record.info.clone())
            .collect();
        let draining = s
            .nodes
            .values()
            .filter(|n| n.record.status == NodeStatus::Draining)
            .map(|n| n.record.info.name.clone())
            .collect();
        Observation {
            tasks,
            nodes,
            draining,
        }
    }

    /// Nodes with their assigned load.
    pub fn nodes(&self) -> Vec<NodeView> {
        let s = self.members();
        let mut by_node: BTreeMap<&str, Vec<&AssignmentRecord>> = BTreeMap::new();
        for a in s.assignments.values() {
            by_node.entry(a.node.as_str()).or_default().push(a);
        }
        s.nodes
            .values()
            .map(|n| {
                let mine = by_node
                    .get(n.record.info.name.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let (mut cpu, mut mem) = (0, 0);
                for a in mine {
                    let (c, m, _) = model::reservation(&a.task.spec);
                    cpu += c;
                    mem += m;
                }
                NodeView {
                    info: n.record.info.clone(),
                    status: n.record.status,
                    agent_version: n.record.agent_version.clone(),
                    last_heartbeat_secs: n.last_seen.map(|t| t.elapsed().as_secs()),
                    tasks: mine.len(),
                    reserved_cpu: cpu,
                    reserved_memory: mem,
                }
            })
            .collect()
    }

    /// Remove a retired node from the registry.
    pub(super) fn forget_node(&self, name: &str) {
        let removed = {
            let mut s = self.members();
            let had = s.nodes.remove(name).is_some();
            if had {
                if let Err(e) = self.db.delete_node(name) {
                    tracing::error!("saving the controller state: {e}");
                }
            }
            had
        };
        if removed {
            self.sync();
        }
    }
}
