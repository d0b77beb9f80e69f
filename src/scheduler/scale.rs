//! DAEMON targets and scale-in choice.

use std::collections::BTreeMap;

use super::diagnose;
use super::engine::MAX_ATTRS;
use super::{
    Constraint, Node, NodeStatus, PlacementFailure, PlacementStrategy, TaskRequest,
    DEFAULT_SPREAD_ATTRIBUTE,
};
use crate::expression::{Expr, NodeFacts};
use crate::manifest::service::PlacementStrategyType;

/// What a DAEMON service should do on each node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DaemonTargets {
    /// Nodes (indices) that should run one task of the service, don't yet,
    /// and have room for it.
    pub place: Vec<usize>,
    /// Nodes whose task of the service should be stopped because the node no
    /// longer meets the service's `memberOf` constraints.
    pub stop: Vec<usize>,
    /// Nodes that meet the constraints and lack the task, but cannot take it
    /// (CPU, memory or host ports), with the reason.
    pub failures: Vec<(usize, PlacementFailure)>,
}

/// A node seen without the tasks of one group, to ask whether it would still
/// accept that group (so `task:group != service:x` does not count the task
/// being judged against itself).
struct WithoutGroup<'a> {
    node: &'a Node,
    group: &'a str,
    count: u32,
}

impl NodeFacts for WithoutGroup<'_> {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.node.attribute(name)
    }
    fn instance_id(&self) -> &str {
        &self.node.name
    }
    fn agent_connected(&self) -> bool {
        self.node.agent_connected
    }
    fn agent_version(&self) -> &str {
        &self.node.agent_version
    }
    fn registered_at(&self) -> &str {
        &self.node.registered_at
    }
    fn running_tasks(&self) -> usize {
        self.node.running_tasks.saturating_sub(self.count) as usize
    }
    fn has_task_group(&self, group: &str) -> bool {
        group != self.group && self.node.has_task_group(group)
    }
}

/// DAEMON services: one task on every `ACTIVE` node that meets the
/// `memberOf` constraints.
///
/// - `place`: nodes that are `ACTIVE`, agent connected, match the
///   constraints, lack the task (no count for `req.group`) and have room.
/// - `failures`: such nodes without room, with what they lack.
/// - `stop`: `ACTIVE` nodes running the task that no longer match the
///   constraints (judged as if the task were not there).
///
/// `distinctInstance`, strategies and capacity provider strategies do not
/// apply to DAEMON services and are ignored. Nodes that are not `ACTIVE` are
/// left to the draining logic; disconnected nodes get their task when the
/// agent is back.
pub fn daemon_targets(nodes: &[Node], req: &TaskRequest) -> DaemonTargets {
    let exprs: Vec<&Expr> = req
        .constraints
        .iter()
        .filter_map(|c| match c {
            Constraint::MemberOf(e) => Some(e),
            Constraint::DistinctInstance => None,
        })
        .collect();
    let mut out = DaemonTargets::default();
    for (i, n) in nodes.iter().enumerate() {
        if n.status != NodeStatus::Active {
            continue;
        }
        let count = n.group_count(&req.group);
        if count > 0 {
            let view = WithoutGroup {
                node: n,
                group: &req.group,
                count,
            };
            if !exprs.iter().all(|e| e.matches(&view)) {
                out.stop.push(i);
            }
            continue;
        }
        if !n.agent_connected || !exprs.iter().all(|e| e.matches(n)) {
            continue;
        }
        let missing = diagnose::missing(n, req, &[], false);
        if missing.is_empty() {
            out.place.push(i);
        } else {
            let phrases: Vec<String> = missing.iter().map(ToString::to_string).collect();
            out.failures.push((
                i,
                PlacementFailure {
                    unplaced: 1,
                    reason: format!(
                        "node `{}` meets the service's constraints but {}.",
                        n.name,
                        diagnose::join(&phrases)
                    ),
                    closest_node: Some(n.name.clone()),
                    missing,
                },
            ));
        }
    }
    out
}

/// Which tasks to stop when a service scales in, keeping it balanced.
///
/// `candidates` holds the node index of each of the service's tasks that may
/// be stopped (a node appears once per task). Returns `count` (at most all)
/// indices into `candidates`, in the order they were chosen.
///
/// Each pick follows ECS's scale-in rule: first tasks on nodes that are not
/// `ACTIVE`; then, for each `spread(attribute:NAME)` of `strategy` in order
/// (or `attribute:zone` when it has none), the value holding the most of the
/// remaining candidates; inside it, the node holding the most; ties go to
/// the value, then the node, whose name sorts first (nodes without the
/// attribute last). On the node, the candidate listed last goes first (list
/// tasks oldest first to stop the newest). Binpack and random strategies do
/// not change the choice.
///
/// # Panics
/// When a candidate is not an index into `nodes`.
pub fn choose_to_stop(
    nodes: &[Node],
    candidates: &[usize],
    strategy: &[PlacementStrategy],
    count: u32,
) -> Vec<usize> {
    let mut attrs: Vec<&str> = strategy
        .iter()
        .filter(|s| s.kind == PlacementStrategyType::Spread)
        .filter_map(|s| s.field.as_deref()?.strip_prefix("attribute:"))
        .filter(|a| !a.is_empty())
        .collect();
    attrs.dedup();
    attrs.truncate(MAX_ATTRS);
    if attrs.is_empty() {
        attrs.push(DEFAULT_SPREAD_ATTRIBUTE);
    }
    // Candidates per node, in the order given.
    let mut by_node: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (ci, &n) in candidates.iter().enumerate() {
        assert!(
            n < nodes.len(),
            "candidate {ci} names node {n} of {}",
            nodes.len()
        );
        by_node.entry(n).or_default().push(ci);
    }
    let mut out = Vec::new();
    let want = (count as usize).min(candidates.len());
    let value = |n: usize, a: &str| nodes[n].attributes.get(a).map(String::as_str);
    // Orders values with missing ones last.
    let value_key = |v: Option<&str>| (v.is_none(), v.map(str::to_string));
    while out.len() < want {
        let mut pool: Vec<usize> = by_node
            .iter()
            .filter(|(&n, c)| !c.is_empty() && nodes[n].status != NodeStatus::Active)
            .map(|(&n, _)| n)
            .collect();
        if pool.is_empty() {
            pool = by_node
                .iter()
                .filter(|(_, c)| !c.is_empty())
                .map(|(&n, _)| n)
                .collect();
        }
        for a in &attrs {
            let mut per_value: Vec<(Option<&str>, usize)> = Vec::new();
            for &n in &pool {
                let v = value(n, a);
                let k = by_node[&n].len();
                match per_value.iter_mut().find(|(x, _)| *x == v) {
                    Some((_, c)) => *c += k,
                    None => per_value.push((v, k)),
                }
            }
            let chosen = per_value
                .iter()
                .min_by(|x, y| {
                    y.1.cmp(&x.1)
                        .then_with(|| value_key(x.0).cmp(&value_key(y.0)))
                })
                .map(|(v, _)| *v)
                .expect("pool is not empty");
            pool.retain(|&n| value(n, a) == chosen);
        }
        let node = *pool
            .iter()
            .min_by(|&&x, &&y| {
                by_node[&y]
                    .len()
                    .cmp(&by_node[&x].len())
                    .then_with(|| nodes[x].name.cmp(&nodes[y].name))
            })
            .expect("pool is not empty");
        let task = by_node
            .get_mut(&node)
            .and_then(Vec::pop)
            .expect("node has candidates");
        out.push(task);
    }
    out
}
