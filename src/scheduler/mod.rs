//! Task placement with Amazon ECS semantics: which node each new task of a
//! service runs on, which nodes a DAEMON service belongs on, and which tasks
//! go first when a service scales in.
//!
//! Pure and deterministic: functions over plain data, no I/O, no clock, and
//! randomness only from the caller's seed. The same input and seed always
//! give the same answer.
//!
//! # Placement, per task
//!
//! 1. **Feasibility.** A node takes the task when it is `ACTIVE`, its agent
//!    is connected, it belongs to the capacity provider chosen for the task
//!    (any node when the strategy is empty), it has the free CPU and memory
//!    the task reserves, none of the task's static host ports is in use,
//!    every `memberOf` expression matches it, and, with `distinctInstance`,
//!    it runs no task of the same group.
//! 2. **Ranking**, by the placement strategies in order; a later strategy
//!    only breaks ties of the earlier ones:
//!    - `binpack(cpu|memory)`: least of that resource remaining after
//!      placement (among nodes where the task fits);
//!    - `spread(instanceId|host)`: fewest tasks of the group on the node;
//!    - `spread(attribute:NAME)`: the value of `NAME` whose nodes hold the
//!      fewest tasks of the group. Tasks on every `ACTIVE` node of the
//!      cluster count, whether or not that node could take this task. Nodes
//!      **without** the attribute form one more bucket of their own that
//!      competes like any value (they are neither excluded nor starved);
//!    - `random`: a uniform choice among the nodes still tied, drawn from the
//!      seed. Strategies after `random` can no longer matter and are ignored.
//!
//!    Remaining ties go to the node whose name sorts first, so results never
//!    depend on hash order. With no strategy the service default applies:
//!    [`default_strategy`], spread by `attribute:zone` and then by instance
//!    (on a cluster whose nodes carry no `zone` attribute, that is plain
//!    spread by instance).
//! 3. **Capacity providers.** The first `base` tasks (counting those already
//!    running) go to the provider with a base; the rest follow the weights
//!    (`A:1, B:4` puts one of every five on `A`), each task going to the
//!    provider furthest below its weighted share. A task is assigned its
//!    provider before any node is looked at, and fails when that provider has
//!    no feasible node: it is never moved to another provider.
//!
//! # Cost
//!
//! One call for `count` tasks costs one pass over the nodes (constraints,
//! which cannot change during the call except for expressions on
//! `task:group` and `runningTasksCount`, are evaluated once per node) plus
//! `O(count · (C + log N))`, where `C` is the number of distinct combinations
//! of spread-attribute values (three for three zones) and `N` the feasible
//! nodes. Each combination keeps its feasible nodes in a binary heap ordered
//! by the node-level keys (remaining CPU or memory, tasks of the group on the
//! node, name). This is exact: every feasible node is ranked, none is sampled.
//! The one slower case is `random` after a node-level strategy (for example
//! `spread(instanceId), random`), which gathers the whole tied set per task.
//!
//! The pass over the nodes dominates on large clusters, above all with
//! `spread(attribute:…)`, which reads the group's count on every `ACTIVE`
//! node (one `task_groups` lookup each). [`place_with`] can run that pass on
//! several threads; the result is the same.

mod diagnose;
mod engine;
mod provider;
pub mod rebalance;
mod render;
mod rng;
mod scale;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::expression::{self, Expr, NodeFacts};
use crate::manifest::service::{PlacementStrategy, PlacementStrategyType};
use crate::manifest::task_definition::Protocol;
use crate::manifest::{CapacityProviderStrategyItem, PlacementConstraint, PlacementConstraintType};

pub use scale::{choose_to_stop, daemon_targets, DaemonTargets};

/// Host ports the container agent reserves on every node (TCP): SSH, the
/// Docker daemon and the agent's own ports.
pub const RESERVED_PORTS: [u16; 5] = [22, 2375, 2376, 51678, 51679];

/// Attribute the default placement strategy spreads over.
pub const DEFAULT_SPREAD_ATTRIBUTE: &str = "zone";

/// The strategy used when a service names none: spread over
/// `attribute:zone`, then over instances.
pub fn default_strategy() -> Vec<PlacementStrategy> {
    vec![
        PlacementStrategy {
            kind: PlacementStrategyType::Spread,
            field: Some(format!("attribute:{DEFAULT_SPREAD_ATTRIBUTE}")),
        },
        PlacementStrategy {
            kind: PlacementStrategyType::Spread,
            field: Some("instanceId".to_string()),
        },
    ]
}

/// Whether a node takes part in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NodeStatus {
    /// Registered and accepting tasks.
    #[default]
    Active,
    /// Being emptied: takes no new tasks; its service tasks are replaced.
    Draining,
    /// Gone (stopped or unreachable for good): takes no new tasks.
    Lost,
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeStatus::Active => "ACTIVE",
            NodeStatus::Draining => "DRAINING",
            NodeStatus::Lost => "LOST",
        })
    }
}

/// A container instance as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node's id (ECS `containerInstanceId` / `ec2InstanceId`); unique in
    /// the cluster. Final ties of the strategies go to the name sorting first.
    pub name: String,
    /// Attributes the agent registered (`zone`, `ecs.instance-type`, custom
    /// ones), read by `attribute:NAME` in expressions and spread strategies.
    pub attributes: BTreeMap<String, String>,
    /// The capacity provider the node belongs to, if any.
    pub capacity_provider: Option<String>,
    /// CPU units the node offers (cores × 1024).
    pub total_cpu: u32,
    /// Memory the node offers, MiB.
    pub total_memory: u32,
    /// CPU units reserved by the node's tasks that are not STOPPED.
    pub used_cpu: u32,
    /// Memory (MiB) reserved by the node's tasks that are not STOPPED.
    pub used_memory: u32,
    /// Static host ports in use, including the agent's reserved ones
    /// ([`RESERVED_PORTS`]). Dynamic ports are not tracked.
    pub used_ports: BTreeSet<(u16, Protocol)>,
    /// Only `ACTIVE` nodes take new tasks.
    pub status: NodeStatus,
    /// Whether the agent is connected; disconnected nodes take no new tasks.
    pub agent_connected: bool,
    /// Version of the agent (`agentVersion` in expressions).
    pub agent_version: String,
    /// RFC 3339 registration time (`registeredAt` in expressions).
    pub registered_at: String,
    /// Tasks on the node per group (`"service:web"` → 3). Read by
    /// `distinctInstance`, `task:group` and spread; [`place`] adds to it.
    pub task_groups: BTreeMap<String, u32>,
    /// Tasks on the node that are not STOPPED, of any group
    /// (`runningTasksCount` in expressions); [`place`] adds to it.
    pub running_tasks: u32,
}

impl Node {
    /// An empty, `ACTIVE`, connected node with the reserved ports in use and
    /// no attributes.
    pub fn new(name: impl Into<String>, total_cpu: u32, total_memory: u32) -> Node {
        Node {
            name: name.into(),
            attributes: BTreeMap::new(),
            capacity_provider: None,
            total_cpu,
            total_memory,
            used_cpu: 0,
            used_memory: 0,
            used_ports: RESERVED_PORTS.iter().map(|&p| (p, Protocol::Tcp)).collect(),
            status: NodeStatus::Active,
            agent_connected: true,
            agent_version: String::new(),
            registered_at: String::new(),
            task_groups: BTreeMap::new(),
            running_tasks: 0,
        }
    }

    /// The node with one more attribute.
    pub fn with_attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Node {
        self.attributes.insert(name.into(), value.into());
        self
    }

    /// The node, in capacity provider `provider`.
    pub fn with_provider(mut self, provider: impl Into<String>) -> Node {
        self.capacity_provider = Some(provider.into());
        self
    }

    /// CPU units not reserved by any task.
    pub fn free_cpu(&self) -> u32 {
        self.total_cpu.saturating_sub(self.used_cpu)
    }

    /// Memory (MiB) not reserved by any task.
    pub fn free_memory(&self) -> u32 {
        self.total_memory.saturating_sub(self.used_memory)
    }

    /// Tasks of `group` on the node.
    pub fn group_count(&self, group: &str) -> u32 {
        self.task_groups.get(group).copied().unwrap_or(0)
    }

    /// Whether new tasks may land here at all (`ACTIVE`, agent connected).
    pub fn accepts_tasks(&self) -> bool {
        self.status == NodeStatus::Active && self.agent_connected
    }

    /// Record one task of `req` on the node: reserve its resources and ports,
    /// count it in its group.
    pub fn add_task(&mut self, req: &TaskRequest) {
        self.used_cpu = self.used_cpu.saturating_add(req.cpu);
        self.used_memory = self.used_memory.saturating_add(req.memory);
        self.used_ports.extend(req.host_ports.iter().copied());
        // One search (a hit costs a short-lived copy of the name; a miss
        // through `get_mut` then `insert` would cost two searches).
        *self.task_groups.entry(req.group.clone()).or_insert(0) += 1;
        self.running_tasks += 1;
    }
}

impl NodeFacts for Node {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }
    fn instance_id(&self) -> &str {
        &self.name
    }
    fn agent_connected(&self) -> bool {
        self.agent_connected
    }
    fn agent_version(&self) -> &str {
        &self.agent_version
    }
    fn registered_at(&self) -> &str {
        &self.registered_at
    }
    fn running_tasks(&self) -> usize {
        self.running_tasks as usize
    }
    fn has_task_group(&self, group: &str) -> bool {
        self.group_count(group) > 0
    }
}

/// A hard placement rule, parsed once.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// Each task of the group on a different node.
    DistinctInstance,
    /// Only nodes matching the expression.
    MemberOf(Expr),
}

impl Constraint {
    /// Parse a manifest constraint (`memberOf` needs its expression).
    pub fn from_manifest(c: &PlacementConstraint) -> Result<Constraint, expression::ParseError> {
        match c.kind {
            PlacementConstraintType::DistinctInstance => Ok(Constraint::DistinctInstance),
            PlacementConstraintType::MemberOf => match &c.expression {
                Some(e) => expression::parse(e).map(Constraint::MemberOf),
                None => Err(expression::ParseError {
                    at: 0,
                    message: "a memberOf constraint needs an expression".to_string(),
                }),
            },
        }
    }

    /// Parse a `memberOf` expression into a constraint.
    pub fn member_of(expression: &str) -> Result<Constraint, expression::ParseError> {
        expression::parse(expression).map(Constraint::MemberOf)
    }
}

/// What the scheduler needs to know about the tasks to place.
#[derive(Debug, Clone)]
pub struct TaskRequest<'a> {
    /// Task group, `service:NAME`: what `distinctInstance`, `task:group` and
    /// spread count.
    pub group: String,
    /// CPU units each task reserves (task-level `cpu`, else the sum of the
    /// containers'; the caller computes it).
    pub cpu: u32,
    /// Memory (MiB) each task reserves (task-level `memory`, else the sum of
    /// each container's `memoryReservation`, or `memory` when unset).
    pub memory: u32,
    /// Static host ports each task binds. Dynamic ports are not listed.
    pub host_ports: Vec<(u16, Protocol)>,
    /// Constraints of the task definition and the service together.
    pub constraints: &'a [Constraint],
    /// Placement strategies in order; empty means [`default_strategy`].
    pub strategy: &'a [PlacementStrategy],
    /// Capacity provider strategy; empty means any node of the cluster.
    pub capacity_provider_strategy: &'a [CapacityProviderStrategyItem],
}

/// What [`place`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    /// Index into the nodes of each task placed, in placement order. Shorter
    /// than the count asked for when some tasks could not be placed.
    pub assignments: Vec<usize>,
    /// Why some tasks were not placed, all of them in one record.
    pub failure: Option<PlacementFailure>,
}

/// Tasks that found no node, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementFailure {
    /// How many tasks were not placed.
    pub unplaced: u32,
    /// ECS-style sentence, to follow "unable to place a task because", e.g.
    /// "no node met all of the task's requirements. The closest matching node
    /// `node-2` has insufficient memory available (needs 512 MiB, 256 free)."
    pub reason: String,
    /// The node that came closest, when there was any node to consider:
    /// fewest unmet hard checks (status, agent, constraints), then fewest
    /// unmet checks, then the most of its scarcest resource relative to the
    /// need, then the first name.
    pub closest_node: Option<String>,
    /// What the closest node lacks, or why there was no node at all.
    pub missing: Vec<Missing>,
}

/// One requirement a node does not meet, or why no node was considered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// The cluster has no nodes.
    NoNodes,
    /// The capacity provider chosen for the task has no nodes.
    ProviderHasNoNodes {
        /// The provider's name.
        provider: String,
    },
    /// Tasks beyond the base had no provider with a weight above 0.
    NoWeightedProvider,
    /// The node is not `ACTIVE`.
    NotActive {
        /// Its status.
        status: NodeStatus,
    },
    /// The node's agent is disconnected.
    AgentDisconnected,
    /// Not enough free CPU units.
    Cpu {
        /// Units the task reserves.
        needed: u32,
        /// Units free on the node.
        free: u32,
    },
    /// Not enough free memory.
    Memory {
        /// MiB the task reserves.
        needed: u32,
        /// MiB free on the node.
        free: u32,
    },
    /// A static host port of the task is already in use on the node.
    Port {
        /// The port.
        port: u16,
        /// Its protocol.
        protocol: Protocol,
    },
    /// The node does not match a `memberOf` expression.
    Constraint {
        /// The expression, in the cluster query language.
        expression: String,
    },
    /// The node already runs a task of the group (`distinctInstance`).
    DistinctInstance,
}

impl fmt::Display for Missing {
    /// The phrase that follows "The closest matching node `X`".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::NoNodes => f.write_str("the cluster has no nodes"),
            Missing::ProviderHasNoNodes { provider } => {
                write!(f, "capacity provider `{provider}` has no nodes")
            }
            Missing::NoWeightedProvider => f.write_str(
                "no capacity provider of the strategy has a weight above 0 for tasks beyond the base",
            ),
            Missing::NotActive { status } => write!(f, "is {status}, not ACTIVE"),
            Missing::AgentDisconnected => f.write_str("has its agent disconnected"),
            Missing::Cpu { needed, free } => write!(
                f,
                "has insufficient CPU units available (needs {needed}, {free} free)"
            ),
            Missing::Memory { needed, free } => write!(
                f,
                "has insufficient memory available (needs {needed} MiB, {free} free)"
            ),
            Missing::Port { port, protocol } => {
                let p = match protocol {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                };
                write!(f, "already uses host port {port}/{p}")
            }
            Missing::Constraint { expression } => {
                write!(f, "does not match the memberOf constraint `{expression}`")
            }
            Missing::DistinctInstance => {
                f.write_str("already runs a task of the group (distinctInstance)")
            }
        }
    }
}

/// Place `count` tasks of `req` on `nodes`, one at a time. Each task that
/// lands is recorded on its node ([`Node::add_task`]: resources, ports, group
/// count, running tasks), so later tasks see the earlier ones.
///
/// `already_placed` counts the group's tasks already running per capacity
/// provider, for the base/weight split. Deterministic for a given `seed`
/// (which only `random` strategies use). Tasks that fit nowhere are reported
/// together in [`Placement::failure`].
pub fn place(
    nodes: &mut [Node],
    req: &TaskRequest,
    count: u32,
    already_placed: &BTreeMap<String, u32>,
    seed: u64,
) -> Placement {
    engine::place(
        nodes,
        req,
        count,
        already_placed,
        seed,
        PlaceOptions::default(),
    )
}

/// Tuning of [`place_with`]; none of it changes the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaceOptions {
    /// Threads for the per-call pass over the nodes (constraints, resources,
    /// the group's counts), on clusters of 2,048 nodes or more. The ranking
    /// itself runs on the calling thread, and results are identical for
    /// any number of threads. Default 1.
    pub threads: usize,
}

impl Default for PlaceOptions {
    fn default() -> Self {
        PlaceOptions { threads: 1 }
    }
}

/// [`place`] with options (e.g. a parallel pass over large clusters).
pub fn place_with(
    nodes: &mut [Node],
    req: &TaskRequest,
    count: u32,
    already_placed: &BTreeMap<String, u32>,
    seed: u64,
    options: PlaceOptions,
) -> Placement {
    engine::place(nodes, req, count, already_placed, seed, options)
}

/// The parts of a request the feasibility checks use, sorted once per call:
/// `memberOf` expressions that cannot change during a call are evaluated
/// once per node; those reading `task:group` or `runningTasksCount` again
/// after each task that lands on the node.
pub(crate) struct Checks<'a> {
    pub fixed: Vec<&'a Expr>,
    pub changing: Vec<&'a Expr>,
    pub distinct: bool,
}

impl<'a> Checks<'a> {
    pub fn new(constraints: &'a [Constraint]) -> Checks<'a> {
        let mut c = Checks {
            fixed: Vec::new(),
            changing: Vec::new(),
            distinct: false,
        };
        for k in constraints {
            match k {
                Constraint::DistinctInstance => c.distinct = true,
                Constraint::MemberOf(e) if reads_task_state(e) => c.changing.push(e),
                Constraint::MemberOf(e) => c.fixed.push(e),
            }
        }
        c
    }

    /// The checks that can change as tasks land: resources, ports,
    /// distinctInstance and the changing expressions.
    /// `g` is the node's count of the group (only read with
    /// `distinctInstance`), looked up once by the caller.
    pub fn fits_with(&self, n: &Node, req: &TaskRequest, g: u32) -> bool {
        n.free_cpu() >= req.cpu
            && n.free_memory() >= req.memory
            && req.host_ports.iter().all(|p| !n.used_ports.contains(p))
            && (!self.distinct || g == 0)
            && self.changing.iter().all(|e| e.matches(n))
    }

    /// The checks that cannot change during a call.
    pub fn fixed_ok(&self, n: &Node) -> bool {
        n.accepts_tasks() && self.fixed.iter().all(|e| e.matches(n))
    }
}

/// Whether an expression reads state that placing tasks changes.
fn reads_task_state(e: &Expr) -> bool {
    use crate::expression::Subject;
    match e {
        Expr::Clause { subject, .. } => {
            matches!(subject, Subject::TaskGroup | Subject::RunningTasksCount)
        }
        Expr::And(a, b) | Expr::Or(a, b) => reads_task_state(a) || reads_task_state(b),
        Expr::Not(a) => reads_task_state(a),
    }
}
