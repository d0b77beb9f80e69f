//! The planner: `plan(desired, observed, options) -> Plan`, a pure function.
//!
//! No I/O, no clock, no global randomness: `now` and the placement seed are
//! inputs, so the same inputs always give the same plan. The plan is plain
//! data: per resource an action with its reasons and field changes, and for
//! services the task-level consequences (tasks started and stopped, the
//! deployment started and its steps, where new tasks go or why they cannot
//! be placed). What apply does is exactly what the plan says.

pub mod diff;
pub mod normalize;
pub mod render;
pub mod rollout;
mod service;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::manifest::{Kind, TaskDefinitionSpec};
use crate::model::{self, DesiredState, ObservedState, Revision, ServiceKey, Task};
use crate::scheduler;
pub use diff::FieldChange;

/// Version of the JSON plan document. Readers should refuse a major version
/// they do not know.
pub const FORMAT_VERSION: &str = "1.0";

/// What happens to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Update,
    Replace,
    Delete,
    NoOp,
}

/// A new revision registered for a task definition family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionChange {
    pub from: Option<u32>,
    pub to: u32,
    /// Whether `to` is registered by this apply (false: an existing revision
    /// with the same spec is reused).
    pub registers: bool,
}

/// New tasks of one revision on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStart {
    pub revision: u32,
    pub node: String,
    pub count: u32,
}

/// A running task that will be stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStop {
    pub task: String,
    pub revision: u32,
    pub node: String,
    pub reason: String,
}

/// The deployment a service change starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentChange {
    pub from_revision: Option<u32>,
    pub to_revision: u32,
    pub minimum_healthy_percent: u32,
    pub maximum_percent: u32,
    pub bounds: rollout::Bounds,
    pub steps: Vec<rollout::Step>,
}

/// Tasks the plan cannot place, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementProblem {
    pub unplaced: u32,
    pub reason: String,
}

/// Task-level consequences of a service change.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskChanges {
    pub start: Vec<TaskStart>,
    pub stop: Vec<TaskStop>,
    pub deployment: Option<DeploymentChange>,
    pub placement_failure: Option<PlacementProblem>,
    /// Stopped tasks whose remains (containers, networks, task volumes) are
    /// removed, by id: they are removed even if they change meanwhile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cleanup: Vec<String>,
    /// Tasks running once the change is done.
    pub running_after: u32,
}

/// The plan for one resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceChange {
    /// `Kind/name`, or `Service/cluster/name`.
    pub address: String,
    pub kind: Kind,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub action: Action,
    pub reasons: Vec<String>,
    pub fields: Vec<FieldChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<RevisionChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<TaskChanges>,
}

/// Counts for the closing line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
}

/// A complete plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: String,
    /// Every resource of the source or of the observed state, in apply
    /// order, no-ops included.
    pub resource_changes: Vec<ResourceChange>,
    pub summary: Summary,
    /// What each resource looked like when planned, for refusing a stale
    /// saved plan: address -> summary of its observed state. Recorded only
    /// with [`Options::record_observed`].
    pub observed: BTreeMap<String, Value>,
    /// Conditions that forbid applying the plan.
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// Facts that change nothing but explain a value, such as a count that
    /// auto scaling manages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.resource_changes
            .iter()
            .any(|c| c.action != Action::NoOp)
    }

    pub fn changes(&self) -> impl Iterator<Item = &ResourceChange> {
        self.resource_changes
            .iter()
            .filter(|c| c.action != Action::NoOp)
    }
}

/// Inputs of the planner besides the two states.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Unix seconds, for health grace periods.
    pub now: i64,
    /// Seed of randomised placement strategies.
    pub seed: u64,
    /// Allow a plan that deletes more than half of the existing services.
    pub allow_mass_delete: bool,
    /// Record each resource's observed state in the plan, so that a saved
    /// plan can later be refused as stale (`plan --out`, `apply FILE`).
    pub record_observed: bool,
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("specs serialise")
}

/// The revision a family's spec of `digest` ([`model::digest`]) maps to
/// among its `registered` ones: the one with the same digest, else the next
/// number; and whether it must be registered.
pub fn resolve_revision(registered: &[Revision], digest: &str) -> (u32, bool) {
    match registered.iter().find(|r| r.digest == digest) {
        Some(r) => (r.number, false),
        None => (
            registered.iter().map(|r| r.number).max().unwrap_or(0) + 1,
            true,
        ),
    }
}

fn revision_spec<'a>(
    desired: &'a DesiredState,
    observed: &'a ObservedState,
    family: &str,
    number: u32,
    desired_number: Option<u32>,
) -> Option<&'a TaskDefinitionSpec> {
    if desired_number == Some(number) {
        if let Some(s) = desired.task_definitions.get(family) {
            return Some(s);
        }
    }
    observed
        .revisions
        .get(family)?
        .iter()
        .find(|r| r.number == number)
        .map(|r| &r.spec)
}

/// What planning each service reads besides the service itself: both
/// states, the options, and what [`plan`] derived from them once.
struct Inputs<'a> {
    desired: &'a DesiredState,
    observed: &'a ObservedState,
    opts: &'a Options,
    /// The revision each desired family maps to.
    // Hash maps keyed by borrowed names: the planner runs over every
    // resource on every pass, and these lookups are most of its own work.
    desired_revisions: HashMap<&'a str, u32>,
    /// Digest of each revision's spec: each spec is digested once;
    /// revisions and task configurations are identified by these digests.
    spec_digests: HashMap<(&'a str, u32), String>,
}

impl<'a> Inputs<'a> {
    /// The spec of revision `number` of `family`: the desired one when the
    /// desired spec maps to it, else the registered one.
    fn revision_spec(&self, family: &str, number: u32) -> Option<&'a TaskDefinitionSpec> {
        revision_spec(
            self.desired,
            self.observed,
            family,
            number,
            self.desired_revisions.get(family).copied(),
        )
    }
}

/// Summary of a resource's observed state, compared when a saved plan is
/// applied.
fn observed_summary(
    observed: &ObservedState,
    by_service: &TasksByService,
    kind: Kind,
    key: &str,
) -> Value {
    match kind {
        Kind::Cluster => to_value(&observed.clusters.get(key)),
        Kind::CapacityProvider => to_value(&observed.capacity_providers.get(key)),
        Kind::ScheduledTask => to_value(&observed.scheduled_tasks.get(key)),
        Kind::TaskDefinition => serde_json::json!({
            "revision": observed.task_definitions.get(key),
            "registered": observed.revisions.get(key).map(|r| r.iter().map(|x| x.number).collect::<Vec<_>>()),
        }),
        Kind::Service => {
            let s = observed.services.get(key);
            let mut tasks: Vec<Value> = tasks_of(by_service, key)
                .iter()
                .filter(|t| t.is_live())
                .map(|t| {
                    serde_json::json!({"id": t.identity.id, "status": t.last_status, "health": t.health,
                        "revision": t.identity.revision, "config": t.identity.config_hash, "node": t.node})
                })
                .collect();
            tasks.sort_by_key(|t| t["id"].as_str().unwrap_or_default().to_string());
            serde_json::json!({
                "service": s.map(|s| serde_json::json!({
                    "spec": model::digest(&s.spec),
                    "revision": s.revision,
                    "config": s.config_hash,
                })),
                "tasks": tasks,
            })
        }
    }
}

/// The keys of two maps in order, each with its value in either map: a
/// merge of the two sorted maps, cheaper than a lookup per key.
fn join<'a, V, W>(
    a: &'a BTreeMap<String, V>,
    b: &'a BTreeMap<String, W>,
) -> Vec<(&'a str, Option<&'a V>, Option<&'a W>)> {
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    let mut out = Vec::new();
    loop {
        let order = match (a.peek(), b.peek()) {
            (Some((x, _)), Some((y, _))) => x.cmp(y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => break,
        };
        out.push(
            match order {
                std::cmp::Ordering::Less => a.next().map(|(k, v)| (k.as_str(), Some(v), None)),
                std::cmp::Ordering::Greater => b.next().map(|(k, w)| (k.as_str(), None, Some(w))),
                std::cmp::Ordering::Equal => {
                    let w = b.next().map(|(_, w)| w);
                    a.next().map(|(k, v)| (k.as_str(), Some(v), w))
                }
            }
            .expect("peeked"),
        );
    }
    out
}

/// Observed tasks by (cluster, service name).
type TasksByService<'a> = HashMap<(&'a str, &'a str), Vec<&'a Task>>;

/// `cluster/name` -> (cluster, name).
fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// The tasks of the service with key `cluster/name`.
fn tasks_of<'a>(by_service: &'a TasksByService<'a>, key: &'a str) -> &'a [&'a Task] {
    let (cluster, name) = split_key(key);
    by_service
        .get(&(cluster, name))
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Plan the changes that take `observed` to `desired`.
pub fn plan(desired: &DesiredState, observed: &ObservedState, opts: &Options) -> Plan {
    let mut changes = Vec::new();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut observed_summaries = BTreeMap::new();

    // Capacity providers and clusters: plain specs, updated in place.
    simple(
        Kind::CapacityProvider,
        &desired.capacity_providers,
        &observed.capacity_providers,
        &mut changes,
    );
    simple(
        Kind::Cluster,
        &desired.clusters,
        &observed.clusters,
        &mut changes,
    );

    let inputs = task_definitions(desired, observed, opts, &mut changes);
    // Services: spec changes, deployments and tasks.
    // Tasks by service, indexed once: planning is linear in the number of
    // services and tasks.
    let mut by_service: TasksByService = HashMap::new();
    for t in &observed.tasks {
        if let Some(s) = &t.identity.service {
            by_service
                .entry((&t.identity.cluster, s))
                .or_default()
                .push(t);
        }
    }
    services(&inputs, &by_service, &mut changes, &mut errors);
    scheduled_tasks(desired, observed, &mut changes);

    // Apply order: creates and updates by kind, then deletes in reverse.
    changes.sort_by(|a, b| order(a).cmp(&order(b)));
    for c in changes.iter().filter(|_| opts.record_observed) {
        observed_summaries.insert(
            c.address.clone(),
            observed_summary(
                observed,
                &by_service,
                c.kind,
                &match &c.cluster {
                    Some(cl) => format!("{cl}/{}", c.name),
                    None => c.name.clone(),
                },
            ),
        );
    }

    let existing = observed.services.len();
    let deleting = changes
        .iter()
        .filter(|c| c.kind == Kind::Service && c.action == Action::Delete)
        .count();
    if existing > 0 && deleting * 2 > existing {
        let msg = format!(
            "the plan deletes {deleting} of the {existing} existing services; pass --allow-mass-delete if that is intended"
        );
        if opts.allow_mass_delete {
            warnings.push(msg);
        } else {
            errors.push(msg);
        }
    }
    for c in &changes {
        // Something noticed and deliberately left alone (drift without
        // self-heal) is a warning, so it is never silent.
        if c.action == Action::NoOp {
            for r in &c.reasons {
                warnings.push(format!("{}: {r}", c.address));
            }
        }
        if let Some(p) = c.tasks.as_ref().and_then(|t| t.placement_failure.as_ref()) {
            warnings.push(format!(
                "{}: {} task(s) cannot be placed: {}",
                c.address, p.unplaced, p.reason
            ));
        }
    }
    let mut summary = Summary::default();
    for c in &changes {
        match c.action {
            Action::Create => summary.add += 1,
            Action::Update => summary.change += 1,
            Action::Replace => {
                summary.add += 1;
                summary.destroy += 1;
            }
            Action::Delete => summary.destroy += 1,
            Action::NoOp => {}
        }
    }
    Plan {
        format_version: FORMAT_VERSION.to_string(),
        resource_changes: changes,
        summary,
        observed: observed_summaries,
        errors,
        warnings,
        notes: notes(desired, observed),
    }
}

/// What the plan says of what it leaves alone: tasks outside services,
/// and schedules no controller runs.
fn notes(desired: &DesiredState, observed: &ObservedState) -> Vec<String> {
    let mut notes = Vec::new();
    let outside = observed
        .tasks
        .iter()
        .filter(|t| t.identity.service.is_none() && t.is_live())
        .count();
    if outside > 0 {
        notes.push(format!(
            "{outside} task(s) started outside services (run-task, schedules) run: plans leave them alone (`reconcile tasks`)"
        ));
    }
    let standalone = observed.nodes.iter().any(|n| n.cluster == "*");
    if standalone && desired.scheduled_tasks.values().any(|s| s.enabled) {
        notes.push(
            "scheduled tasks are recorded here, but only a controller starts their runs (`reconcile controller`)"
                .to_string(),
        );
    }
    notes
}

/// Task definitions: immutable revisions. Each desired spec maps to a
/// revision, registered or new; the planner's inputs record which.
fn task_definitions<'a>(
    desired: &'a DesiredState,
    observed: &'a ObservedState,
    opts: &'a Options,
    changes: &mut Vec<ResourceChange>,
) -> Inputs<'a> {
    let mut desired_revisions: HashMap<&str, u32> = HashMap::new();
    let mut spec_digests: HashMap<(&str, u32), String> = HashMap::new();
    for (family, revs) in &observed.revisions {
        for r in revs {
            spec_digests.insert((family, r.number), r.digest.clone());
        }
    }
    for (family, spec, current) in join(&desired.task_definitions, &observed.task_definitions) {
        let current = current.copied();
        let Some(spec) = spec else {
            let mut c = change(Kind::TaskDefinition, family, None);
            c.action = Action::Delete;
            c.reasons.push(
                "no longer in the source; its revisions stay registered for history and rollback"
                    .into(),
            );
            changes.push(c);
            continue;
        };
        let digest = model::digest(spec);
        let registered = observed.revisions.get(family).map(Vec::as_slice);
        let (number, registers) = resolve_revision(registered.unwrap_or_default(), &digest);
        spec_digests.insert((family, number), digest);
        desired_revisions.insert(family, number);
        let mut c = change(Kind::TaskDefinition, family, None);
        c.revision = Some(RevisionChange {
            from: current,
            to: number,
            registers,
        });
        match current {
            None => {
                c.action = Action::Create;
                c.reasons.push(if registers {
                    format!("new family: registers revision {family}:{number}")
                } else {
                    format!("uses the registered revision {family}:{number}, which has this spec")
                });
                c.fields = diff::diff(&Value::Null, &to_value(spec))
                    .into_iter()
                    .chain(std::iter::once(FieldChange {
                        path: String::new(),
                        before: None,
                        after: Some(to_value(spec)),
                    }))
                    .filter(|f| !f.path.is_empty())
                    .collect();
            }
            Some(cur) if cur == number => c.action = Action::NoOp,
            Some(cur) => {
                c.action = Action::Update;
                let before = revision_spec(desired, observed, family, cur, None)
                    .map(to_value)
                    .unwrap_or(Value::Null);
                c.fields = diff::diff(&before, &to_value(spec));
                c.reasons.push(if registers {
                    format!("spec changed: new revision {family}:{cur} -> {family}:{number}")
                } else {
                    format!("spec matches registered revision {family}:{number}: {family}:{cur} -> {family}:{number}")
                });
            }
        }
        changes.push(c);
    }
    Inputs {
        desired,
        observed,
        opts,
        desired_revisions,
        spec_digests,
    }
}

/// Services, desired or recorded, and orphans: live service tasks whose
/// service is neither (e.g. the record was lost), which are stopped too.
fn services(
    inputs: &Inputs,
    by_service: &TasksByService,
    changes: &mut Vec<ResourceChange>,
    errors: &mut Vec<String>,
) {
    let (desired, observed) = (inputs.desired, inputs.observed);
    let mut nodes = scheduler_nodes(inputs);
    let services = join(&desired.services, &observed.services);
    let known: std::collections::HashSet<(&str, &str)> =
        services.iter().map(|(k, _, _)| split_key(k)).collect();
    let mut orphan_keys: Vec<String> = by_service
        .iter()
        .filter(|(k, ts)| !known.contains(*k) && ts.iter().any(|t| t.is_live()))
        .map(|((cluster, name), _)| {
            ServiceKey {
                cluster: cluster.to_string(),
                name: name.to_string(),
            }
            .to_string()
        })
        .collect();
    orphan_keys.sort();
    let orphans = orphan_keys.iter().map(|k| (k.as_str(), None, None));
    for (key, desired_svc, observed_svc) in services.into_iter().chain(orphans) {
        let tasks = tasks_of(by_service, key);
        changes.push(match desired_svc {
            Some(ds) => service::ServiceCtx::new(inputs, key, ds, observed_svc, tasks)
                .plan(&mut nodes, errors),
            None => service::deleted(key, observed_svc, tasks),
        });
    }
}

/// Scheduled tasks: plain specs, updated in place. The rule is all there
/// is to them: tasks of runs already started are never stopped by a change
/// (ECS: a deleted or changed rule leaves running tasks alone).
fn scheduled_tasks(
    desired: &DesiredState,
    observed: &ObservedState,
    changes: &mut Vec<ResourceChange>,
) {
    let first = changes.len();
    simple(
        Kind::ScheduledTask,
        &desired.scheduled_tasks,
        &observed.scheduled_tasks,
        changes,
    );
    for c in &mut changes[first..] {
        match c.action {
            Action::Delete => {
                c.reasons = vec![
                    "no longer in the source: no more runs start; tasks already started keep running"
                        .into(),
                ];
            }
            Action::Create | Action::Update => {
                if desired
                    .scheduled_tasks
                    .get(&c.name)
                    .is_some_and(|s| !s.enabled)
                {
                    c.reasons.push("disabled: no runs start".into());
                }
            }
            Action::Replace | Action::NoOp => {}
        }
    }
}

fn order(c: &ResourceChange) -> (u8, u8, &str) {
    let k = Kind::ALL.iter().position(|k| *k == c.kind).unwrap_or(0) as u8;
    match c.action {
        Action::Delete => (1, (Kind::ALL.len() as u8) - k, &c.address),
        _ => (0, k, &c.address),
    }
}

fn change(kind: Kind, name: &str, cluster: Option<&str>) -> ResourceChange {
    let address = match cluster {
        Some(c) => format!("{kind}/{c}/{name}"),
        None => format!("{kind}/{name}"),
    };
    ResourceChange {
        address,
        kind,
        name: name.to_string(),
        cluster: cluster.map(str::to_string),
        action: Action::NoOp,
        reasons: Vec::new(),
        fields: Vec::new(),
        revision: None,
        tasks: None,
    }
}

fn simple<T: Serialize + PartialEq>(
    kind: Kind,
    desired: &BTreeMap<String, T>,
    observed: &BTreeMap<String, T>,
    out: &mut Vec<ResourceChange>,
) {
    for (name, spec) in desired {
        let mut c = change(kind, name, None);
        match observed.get(name) {
            None => {
                c.action = Action::Create;
                c.reasons.push("new in the source".into());
                c.fields = diff::diff(&serde_json::json!({}), &to_value(spec));
            }
            Some(o) if o == spec => {}
            Some(o) => {
                c.action = Action::Update;
                c.fields = diff::diff(&to_value(o), &to_value(spec));
                c.reasons.push("spec changed; updated in place".into());
            }
        }
        out.push(c);
    }
    for name in observed.keys() {
        if !desired.contains_key(name) {
            let mut c = change(kind, name, None);
            c.action = Action::Delete;
            c.reasons.push("no longer in the source".into());
            out.push(c);
        }
    }
}

/// The scheduler's view of the nodes, with the reservations of every live
/// task (services' and standalone ones): where a task started outside any
/// service is placed.
pub fn scheduler_view(desired: &DesiredState, observed: &ObservedState) -> Vec<scheduler::Node> {
    let opts = Options::default();
    let mut changes = Vec::new();
    let inputs = task_definitions(desired, observed, &opts, &mut changes);
    scheduler_nodes(&inputs)
}

/// Scheduler view of the nodes, with the reservations of every live task.
fn scheduler_nodes(inputs: &Inputs) -> Vec<scheduler::Node> {
    let (desired, observed) = (inputs.desired, inputs.observed);
    let mut nodes: Vec<scheduler::Node> = observed
        .nodes
        .iter()
        .map(|n| {
            let mut node = scheduler::Node::new(n.name.clone(), n.cpu, n.memory);
            node.capacity_provider = provider_of(desired, n);
            node.used_ports.extend(
                n.reserved_ports
                    .iter()
                    .map(|&p| (p, crate::manifest::task_definition::Protocol::Tcp)),
            );
            node.attributes = n.attributes.clone();
            node.agent_version = env!("CARGO_PKG_VERSION").to_string();
            node
        })
        .collect();
    let index: std::collections::HashMap<String, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), i))
        .collect();
    // Tasks share revisions: each revision's reservation is computed once.
    type Reservation = (
        u32,
        u32,
        Vec<(u16, crate::manifest::task_definition::Protocol)>,
    );
    let mut reservations: HashMap<(&str, u32), Option<Reservation>> = HashMap::new();
    let mut group = String::new();
    for t in observed.tasks.iter().filter(|t| t.is_live()) {
        let Some(node) = index.get(&t.node).map(|&i| &mut nodes[i]) else {
            continue;
        };
        let reservation = reservations
            .entry((&t.identity.family, t.identity.revision))
            .or_insert_with(|| {
                inputs
                    .revision_spec(&t.identity.family, t.identity.revision)
                    .map(model::reservation)
            });
        if let Some((cpu, mem, ports)) = reservation {
            node.used_cpu += *cpu;
            node.used_memory += *mem;
            node.used_ports.extend(ports.iter().copied());
        }
        node.running_tasks += 1;
        // ECS task groups: `service:NAME`, or `family:NAME` for a task
        // started outside any service.
        group.clear();
        match &t.identity.service {
            Some(s) => {
                group.push_str("service:");
                group.push_str(s);
            }
            None => {
                group.push_str("family:");
                group.push_str(&t.identity.family);
            }
        }
        {
            match node.task_groups.get_mut(&group) {
                Some(n) => *n += 1,
                None => {
                    node.task_groups.insert(group.clone(), 1);
                }
            }
        }
    }
    nodes
}

/// A service's capacity provider strategy: its own, else its cluster's
/// default.
pub fn strategy_of<'a>(
    desired: &'a DesiredState,
    cluster: &str,
    spec: &'a crate::manifest::service::ServiceSpec,
) -> &'a [crate::manifest::CapacityProviderStrategyItem] {
    if spec.capacity_provider_strategy.is_empty() {
        desired
            .clusters
            .get(cluster)
            .map(|c| c.default_capacity_provider_strategy.as_slice())
            .unwrap_or_default()
    } else {
        &spec.capacity_provider_strategy
    }
}

/// The capacity provider a node belongs to: the first provider attached to
/// its cluster whose nodeSelector its attributes match.
pub fn provider_of(desired: &DesiredState, n: &crate::model::NodeInfo) -> Option<String> {
    let cluster = desired.clusters.get(&n.cluster)?;
    cluster
        .capacity_providers
        .iter()
        .find(|p| {
            desired.capacity_providers.get(*p).is_some_and(|cp| {
                cp.node_selector
                    .iter()
                    .all(|(k, v)| n.attributes.get(k) == Some(v))
            })
        })
        .cloned()
}

/// First 8 characters of a task id, as shown to people.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}
