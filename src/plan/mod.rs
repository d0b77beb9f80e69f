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

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::manifest::service::SchedulingStrategy;
use crate::manifest::{Kind, TaskDefinitionSpec};
use crate::model::{
    self, DesiredService, DesiredState, Health, ObservedService, ObservedState, Revision,
    ServiceKey, Task,
};
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
                    serde_json::json!({"id": t.id, "status": t.last_status, "health": t.health,
                        "revision": t.revision, "config": t.config_hash, "node": t.node})
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

/// The tasks of the service with key `cluster/name`.
fn tasks_of<'a>(by_service: &'a TasksByService<'a>, key: &'a str) -> &'a [&'a Task] {
    let (cluster, name) = key.split_once('/').unwrap_or(("", key));
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

    // Task definitions: immutable revisions.
    // Hash maps keyed by borrowed names: the planner runs over every
    // resource on every pass, and these lookups are most of its own work.
    let mut desired_revisions: HashMap<&str, u32> = HashMap::new();
    // Each spec is digested once; revisions and task configurations are
    // identified by these digests.
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

    // Services: spec changes, deployments and tasks.
    let mut nodes = scheduler_nodes(desired, observed, &desired_revisions);
    let services = join(&desired.services, &observed.services);
    // Tasks by service, indexed once: planning is linear in the number of
    // services and tasks.
    let mut by_service: TasksByService = HashMap::new();
    for t in &observed.tasks {
        if let Some(s) = &t.service {
            by_service.entry((&t.cluster, s)).or_default().push(t);
        }
    }
    // Orphans: live service tasks whose service is neither desired nor
    // recorded (e.g. the record was lost): they are stopped too.
    let known: std::collections::HashSet<(&str, &str)> = services
        .iter()
        .map(|(k, _, _)| k.split_once('/').unwrap_or(("", k)))
        .collect();
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
        let tasks = tasks_of(&by_service, key);
        let c = plan_service(
            key,
            desired_svc,
            observed_svc,
            tasks,
            desired,
            observed,
            &desired_revisions,
            &spec_digests,
            &mut nodes,
            opts,
            &mut errors,
        );
        changes.push(c);
    }

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
    }
}

fn order(c: &ResourceChange) -> (u8, u8, &str) {
    let k = Kind::ALL.iter().position(|k| *k == c.kind).unwrap_or(0) as u8;
    match c.action {
        Action::Delete => (1, 4 - k, &c.address),
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

/// Scheduler view of the nodes, with the reservations of every live task.
fn scheduler_nodes(
    desired: &DesiredState,
    observed: &ObservedState,
    desired_revisions: &HashMap<&str, u32>,
) -> Vec<scheduler::Node> {
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
            .entry((&t.family, t.revision))
            .or_insert_with(|| {
                revision_spec(
                    desired,
                    observed,
                    &t.family,
                    t.revision,
                    desired_revisions.get(t.family.as_str()).copied(),
                )
                .map(model::reservation)
            });
        if let Some((cpu, mem, ports)) = reservation {
            node.used_cpu += *cpu;
            node.used_memory += *mem;
            node.used_ports.extend(ports.iter().copied());
        }
        node.running_tasks += 1;
        if let Some(s) = &t.service {
            group.clear();
            group.push_str("service:");
            group.push_str(s);
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

/// Nodes of a cluster (a node whose cluster is `*` serves every cluster:
/// the local Docker host in standalone mode).
fn cluster_node_indices(observed: &ObservedState, cluster: &str) -> Vec<usize> {
    observed
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.cluster == cluster || n.cluster == "*")
        .map(|(i, _)| i)
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn plan_service(
    key: &str,
    desired_svc: Option<&DesiredService>,
    observed_svc: Option<&ObservedService>,
    tasks: &[&Task],
    desired: &DesiredState,
    observed: &ObservedState,
    desired_revisions: &HashMap<&str, u32>,
    spec_digests: &HashMap<(&str, u32), String>,
    nodes: &mut [scheduler::Node],
    opts: &Options,
    errors: &mut Vec<String>,
) -> ResourceChange {
    let (cluster, name) = key.split_once('/').unwrap_or(("", key));
    let mut c = change(Kind::Service, name, Some(cluster));
    let live: Vec<&Task> = tasks.iter().copied().filter(|t| t.is_live()).collect();
    let stopped: Vec<&Task> = tasks.iter().copied().filter(|t| !t.is_live()).collect();

    let Some(ds) = desired_svc else {
        // Deleted: stop everything.
        c.action = Action::Delete;
        c.reasons.push(if observed_svc.is_some() {
            "no longer in the source".into()
        } else {
            "tasks of a service that is not in the source".into()
        });
        c.tasks = Some(TaskChanges {
            stop: live.iter().map(|t| stop(t, "service deleted")).collect(),
            cleanup: stopped.iter().map(|t| t.id.clone()).collect(),
            running_after: 0,
            ..TaskChanges::default()
        });
        return c;
    };
    let spec = &ds.spec;

    // Which revision and configuration the service's tasks should run.
    let model::TaskDefRef {
        family,
        revision: pinned,
    } = model::TaskDefRef::parse(&spec.task_definition);
    let mut revision = match pinned.or_else(|| desired_revisions.get(family).copied()) {
        Some(r) => r,
        None => {
            errors.push(format!(
                "{}: task definition family `{family}` is not defined",
                c.address
            ));
            return c;
        }
    };
    let Some(mut td) = revision_spec(
        desired,
        observed,
        family,
        revision,
        desired_revisions.get(family).copied(),
    ) else {
        errors.push(format!(
            "{}: revision {family}:{revision} is not registered",
            c.address
        ));
        return c;
    };
    let mut fingerprints = model::secret_fingerprints_of(td, &desired.secret_fingerprints);
    let mut target_hash = match spec_digests.get(&(family, revision)) {
        Some(d) => model::config_hash_of(family, d, &fingerprints),
        None => model::task_config_hash(family, td, &desired.secret_fingerprints),
    };
    // A configuration that was rolled back is not deployed again until the
    // desired state changes: what runs is kept, and the plan says why.
    // A rollback (`reconcile rollback`) holds the desired configuration the
    // same way and names the revision to run instead: that is deployed.
    let mut held_note = None;
    if let (Some(h), Some(o)) = (
        observed.deployments.get(key).and_then(|h| h.held.as_ref()),
        observed_svc,
    ) {
        let to = if h.to > 0 { h.to } else { o.revision };
        let kept = revision_spec(
            desired,
            observed,
            family,
            to,
            desired_revisions.get(family).copied(),
        );
        if let (true, Some(kept)) = (h.config_hash == target_hash, kept) {
            held_note = Some(if o.revision == to {
                format!(
                    "revision {} is not deployed again ({}); revision {to} keeps running. Change the service or its task definition to deploy again",
                    h.revision, h.reason
                )
            } else {
                format!("rollback to revision {to} ({})", h.reason)
            });
            revision = to;
            td = kept;
            fingerprints = model::secret_fingerprints_of(td, &desired.secret_fingerprints);
            target_hash = if o.revision == to {
                o.config_hash.clone()
            } else {
                model::task_config_hash(family, td, &desired.secret_fingerprints)
            };
        }
    }

    // Field changes of the service spec itself.
    // Specs are normalised, so equal specs need no field-level diff.
    let mut fields = match observed_svc {
        Some(o) if o.spec == *spec => Vec::new(),
        Some(o) => diff::diff(&to_value(&o.spec), &to_value(spec)),
        None => diff::diff(&serde_json::json!({}), &to_value(spec)),
    };
    let prev_revision = observed_svc.map(|o| o.revision);
    if let Some(o) = observed_svc {
        if o.revision != revision {
            fields.retain(|f| f.path != "taskDefinition");
            fields.insert(
                0,
                FieldChange {
                    path: "taskDefinition".into(),
                    before: Some(Value::String(format!("{family}:{}", o.revision))),
                    after: Some(Value::String(format!("{family}:{revision}"))),
                },
            );
        } else if o.spec.task_definition != spec.task_definition {
            // `web` -> `web:3` naming the same revision changes nothing.
            fields.retain(|f| f.path != "taskDefinition");
        }
        for (secret, fp) in &fingerprints {
            let old = o.secret_fingerprints.get(secret);
            if old != Some(fp) && old.is_some() {
                fields.push(FieldChange {
                    path: format!("secrets[{secret}]"),
                    before: old.map(|v| Value::String(v.clone())),
                    after: Some(Value::String(fp.clone())),
                });
            }
        }
    }
    c.fields = fields;

    let replace =
        observed_svc.is_some_and(|o| o.spec.scheduling_strategy != spec.scheduling_strategy);
    let new_deployment = observed_svc.is_none_or(|o| o.config_hash != target_hash) || replace;

    // Task-level consequences. What placement needs is built only when
    // something is placed: a converged service skips it.
    let placement = || PlacementInputs::new(desired, observed, cluster, name, td, spec);
    let mut inputs: Option<PlacementInputs> = None;
    let desired_count = match spec.scheduling_strategy {
        SchedulingStrategy::Replica => spec.desired_count.unwrap_or(0),
        SchedulingStrategy::Daemon => {
            let p = inputs.insert(placement());
            let req = p.request(spec);
            with_cluster_view(nodes, &p.indices, |view| {
                // Nodes that keep their task plus nodes that get one.
                let t = scheduler::daemon_targets(view, &req);
                let keeping = (0..view.len())
                    .filter(|i| view[*i].group_count(&p.group) > 0 && !t.stop.contains(i))
                    .count();
                (keeping + t.place.len()) as u32
            })
        }
    };

    // Tasks on a draining node are replaced like tasks of an old
    // configuration: new ones start elsewhere before they stop.
    let on_draining = |t: &Task| observed.draining.contains(&t.node);
    let (current, old): (Vec<&Task>, Vec<&Task>) = live
        .iter()
        .copied()
        .partition(|t| t.config_hash == target_hash && !replace && !on_draining(t));
    let draining = old.iter().filter(|t| on_draining(t)).count();
    let grace = i64::from(spec.health_check_grace_period_seconds);
    let unhealthy: Vec<&Task> = current
        .iter()
        .copied()
        .filter(|t| {
            t.health == Health::Unhealthy && t.started_at.is_none_or(|s| s + grace <= opts.now)
        })
        .collect();

    let mut tc = TaskChanges::default();
    let mut reasons: Vec<String> = held_note.into_iter().collect();
    if observed_svc.is_none() {
        reasons.push("new in the source".to_string());
    } else if replace {
        reasons.push("schedulingStrategy changed: the service is recreated".to_string());
    } else if prev_revision != Some(revision) {
        reasons.push(format!(
            "new deployment: task definition {family}:{} -> {family}:{revision}",
            prev_revision.unwrap_or(0)
        ));
    } else if !new_deployment && draining > 0 {
        reasons.push(format!(
            "{draining} task(s) on draining node(s) are replaced on other nodes"
        ));
    } else if new_deployment {
        let changed: Vec<&String> = fingerprints
            .iter()
            .filter(|(k, v)| observed_svc.and_then(|o| o.secret_fingerprints.get(*k)) != Some(v))
            .map(|(k, _)| k)
            .collect();
        if changed.is_empty() {
            reasons.push("new deployment: the tasks' configuration changed".to_string());
        } else {
            reasons.push(format!(
                "new deployment: secret value changed ({})",
                changed
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }

    // Tasks of an old configuration are replaced by a rolling deployment
    // (or all at once when recreating); current ones are scaled.
    let keep: Vec<&Task> = current
        .iter()
        .copied()
        .filter(|t| !unhealthy.iter().any(|u| u.id == t.id))
        .collect();
    let mut to_stop: Vec<(&Task, String)> = Vec::new();
    let mut start = 0u32;
    let mut drift_only = false;
    for t in &old {
        to_stop.push((
            t,
            if replace {
                "service recreated".into()
            } else if on_draining(t) && t.config_hash == target_hash {
                format!("node {} is draining", t.node)
            } else if t.revision != revision {
                format!("replaced by revision {revision} (rolling deployment)")
            } else {
                "configuration changed (rolling deployment)".into()
            },
        ));
    }
    let have = keep.len() as u32;
    if have < desired_count {
        start = desired_count - have;
    } else if have > desired_count {
        let excess = have - desired_count;
        let candidates: Vec<usize> = keep
            .iter()
            .filter_map(|t| nodes.iter().position(|n| n.name == t.node))
            .collect();
        let chosen =
            scheduler::choose_to_stop(nodes, &candidates, &spec.placement_strategy, excess);
        for i in chosen {
            to_stop.push((keep[i], format!("scale in to desiredCount {desired_count}")));
        }
        reasons.push(format!("scale in: {have} -> {desired_count} tasks"));
    }
    for t in &unhealthy {
        to_stop.push((t, "task failed container health checks".into()));
        reasons.push(format!(
            "task {} is unhealthy and is replaced",
            short(&t.id)
        ));
    }
    if observed_svc.is_some() && start > 0 && !new_deployment {
        let same_count = observed_svc.and_then(|o| o.spec.desired_count) == spec.desired_count;
        if same_count || spec.scheduling_strategy == SchedulingStrategy::Daemon {
            let replacing = start.saturating_sub(unhealthy.len() as u32);
            if replacing > 0 {
                let why: BTreeSet<String> = stopped
                    .iter()
                    .map(|t| {
                        let code = t.stop_code.clone().unwrap_or_else(|| "stopped".into());
                        match &t.stopped_reason {
                            Some(r) => format!("{code}: {r}"),
                            None => code,
                        }
                    })
                    .collect();
                let missing = (replacing as usize).saturating_sub(stopped.len());
                let mut causes: Vec<String> = why.into_iter().collect();
                if missing > 0 {
                    causes.push(format!("{missing} task(s) gone from the runtime"));
                }
                if ds.self_heal {
                    reasons.push(format!(
                        "{have} of {desired_count} tasks running; replacing {replacing} ({})",
                        causes.join("; ")
                    ));
                } else {
                    // Reported, not repaired: nothing is started or cleaned up.
                    start -= replacing;
                    drift_only = true;
                    reasons.push(format!(
                        "drift: {have} of {desired_count} tasks running ({}); not repaired: self-heal is off (reconcile.io/self-heal: \"false\")",
                        causes.join("; ")
                    ));
                }
            }
        } else {
            reasons.push(format!("scale out: {have} -> {desired_count} tasks"));
        }
    }

    // Placement of the new tasks. Placements are recorded on the nodes, so
    // later services see them. When tasks stop before new ones start (0%
    // minimum, or a recreate), their resources are released first;
    // otherwise they are kept: the conservative choice.
    if start > 0 {
        let p = inputs.get_or_insert_with(placement);
        let req = p.request(spec);
        let group = &p.group;
        let release_first =
            spec.deployment_configuration.minimum_healthy_percent == Some(0) || replace;
        if release_first {
            for (t, _) in &to_stop {
                if let Some(n) = nodes.iter_mut().find(|n| n.name == t.node) {
                    release(n, t, desired, observed, desired_revisions, group);
                }
            }
        }
        let daemon = spec.scheduling_strategy == SchedulingStrategy::Daemon;
        // The strategy's bases count the service's tasks already running on
        // each provider.
        let mut already: BTreeMap<String, u32> = BTreeMap::new();
        if !p.providers.is_empty() {
            for t in &keep {
                if let Some(pr) = nodes
                    .iter()
                    .find(|n| n.name == t.node)
                    .and_then(|n| n.capacity_provider.clone())
                {
                    *already.entry(pr).or_default() += 1;
                }
            }
        }
        let (names, failure) = with_cluster_view(nodes, &p.indices, |view| {
            if daemon {
                let t = scheduler::daemon_targets(view, &req);
                let names: Vec<String> = t.place.iter().map(|&i| view[i].name.clone()).collect();
                for &i in &t.place {
                    view[i].add_task(&req);
                }
                (names, t.failures.into_iter().next().map(|(_, f)| f))
            } else {
                let p = scheduler::place(view, &req, start, &already, opts.seed);
                let names = p
                    .assignments
                    .iter()
                    .map(|&i| view[i].name.clone())
                    .collect();
                (names, p.failure)
            }
        });
        let mut by_node: BTreeMap<String, u32> = BTreeMap::new();
        for n in names {
            *by_node.entry(n).or_default() += 1;
        }
        tc.start = by_node
            .into_iter()
            .map(|(node, count)| TaskStart {
                revision,
                node,
                count,
            })
            .collect();
        if let Some(f) = failure {
            tc.placement_failure = Some(PlacementProblem {
                unplaced: f.unplaced,
                reason: f.reason,
            });
        }
    }
    if !drift_only {
        tc.cleanup = stopped.iter().map(|t| t.id.clone()).collect();
    }
    let started: u32 = tc.start.iter().map(|s| s.count).sum();
    tc.stop = to_stop.iter().map(|(t, why)| stop(t, why)).collect();
    tc.running_after = have + started
        - tc.stop
            .iter()
            .filter(|s| keep.iter().any(|k| k.id == s.task))
            .count() as u32;

    if new_deployment || !old.is_empty() {
        let min = spec
            .deployment_configuration
            .min_healthy(spec.scheduling_strategy);
        let max = spec
            .deployment_configuration
            .max_percent(spec.scheduling_strategy);
        let bounds = rollout::Bounds::new(desired_count, min, max);
        let steps = if replace {
            vec![rollout::Step {
                stop_old: old.len() as u32,
                start_new: desired_count,
            }]
        } else if spec.scheduling_strategy == SchedulingStrategy::Daemon {
            // A DAEMON service rolls node by node: on each node its old
            // task stops and the new one starts, and the next node waits
            // for it to be healthy. Stops and starts are in node order, so
            // each step takes its node's.
            tc.stop.sort_by(|a, b| a.node.cmp(&b.node));
            let mut per_node: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
            for s in &tc.stop {
                per_node.entry(s.node.as_str()).or_default().0 += 1;
            }
            for s in &tc.start {
                per_node.entry(s.node.as_str()).or_default().1 += s.count;
            }
            per_node
                .into_values()
                .map(|(stop_old, start_new)| rollout::Step {
                    stop_old,
                    start_new,
                })
                .collect()
        } else {
            // Tasks of the new configuration already running (an
            // interrupted rollout) count: the steps continue from them.
            match rollout::plan(
                desired_count,
                have.min(desired_count),
                old.len() as u32,
                bounds,
            ) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(format!("{}: {e}", c.address));
                    Vec::new()
                }
            }
        };
        tc.deployment = Some(DeploymentChange {
            from_revision: prev_revision,
            to_revision: revision,
            minimum_healthy_percent: min,
            maximum_percent: max,
            bounds,
            steps,
        });
    }

    let spec_changed = !c.fields.is_empty();
    let tasks_change = !tc.start.is_empty()
        || !tc.stop.is_empty()
        || !tc.cleanup.is_empty()
        || tc.placement_failure.is_some()
        || tc.deployment.is_some();
    c.action = match (observed_svc, replace) {
        (None, _) => Action::Create,
        (Some(_), true) => Action::Replace,
        (Some(_), false) if spec_changed || tasks_change => Action::Update,
        _ => Action::NoOp,
    };
    if c.action == Action::Update && reasons.is_empty() {
        reasons.push(if spec_changed {
            "spec changed; updated in place (affects future placements only)".into()
        } else {
            "tasks differ from the desired state".into()
        });
    }
    c.reasons = reasons;
    if c.action != Action::NoOp {
        c.tasks = Some(tc);
    }
    c
}

/// What placing a service's tasks needs: its cluster's nodes, its task
/// group, constraints and reservation.
struct PlacementInputs {
    indices: Vec<usize>,
    /// The service's capacity provider strategy, else its cluster's default;
    /// empty on a standalone host (one node serving every cluster).
    providers: Vec<crate::manifest::CapacityProviderStrategyItem>,
    group: String,
    constraints: Vec<scheduler::Constraint>,
    cpu: u32,
    memory: u32,
    ports: Vec<(u16, crate::manifest::task_definition::Protocol)>,
}

impl PlacementInputs {
    fn new(
        desired: &DesiredState,
        observed: &ObservedState,
        cluster: &str,
        name: &str,
        td: &TaskDefinitionSpec,
        spec: &crate::manifest::service::ServiceSpec,
    ) -> Self {
        let (cpu, memory, ports) = model::reservation(td);
        let constraints = td
            .placement_constraints
            .iter()
            .chain(spec.placement_constraints.iter())
            // Validation refuses a constraint that does not parse.
            .filter_map(|pc| scheduler::Constraint::from_manifest(pc).ok())
            .collect();
        PlacementInputs {
            providers: if observed.nodes.iter().any(|n| n.cluster == "*") {
                Vec::new()
            } else {
                strategy_of(desired, cluster, spec).to_vec()
            },
            indices: cluster_node_indices(observed, cluster),
            group: format!("service:{name}"),
            constraints,
            cpu,
            memory,
            ports,
        }
    }

    fn request<'a>(
        &'a self,
        spec: &'a crate::manifest::service::ServiceSpec,
    ) -> scheduler::TaskRequest<'a> {
        scheduler::TaskRequest {
            group: self.group.clone(),
            cpu: self.cpu,
            memory: self.memory,
            host_ports: self.ports.clone(),
            constraints: &self.constraints,
            strategy: &spec.placement_strategy,
            capacity_provider_strategy: &self.providers,
        }
    }
}

/// Run `f` on the nodes of a cluster: on the node list itself when the
/// cluster spans every node (standalone mode, and most fleets), else on a
/// copy of its nodes, written back afterwards.
fn with_cluster_view<T>(
    nodes: &mut [scheduler::Node],
    indices: &[usize],
    f: impl FnOnce(&mut [scheduler::Node]) -> T,
) -> T {
    if indices.len() == nodes.len() {
        return f(nodes);
    }
    let mut view: Vec<scheduler::Node> = indices.iter().map(|&i| nodes[i].clone()).collect();
    let out = f(&mut view);
    for (node, &i) in view.into_iter().zip(indices) {
        nodes[i] = node;
    }
    out
}

fn release(
    n: &mut scheduler::Node,
    t: &Task,
    desired: &DesiredState,
    observed: &ObservedState,
    desired_revisions: &HashMap<&str, u32>,
    group: &str,
) {
    if let Some(spec) = revision_spec(
        desired,
        observed,
        &t.family,
        t.revision,
        desired_revisions.get(t.family.as_str()).copied(),
    ) {
        let (cpu, mem, ports) = model::reservation(spec);
        n.used_cpu = n.used_cpu.saturating_sub(cpu);
        n.used_memory = n.used_memory.saturating_sub(mem);
        for p in ports {
            n.used_ports.remove(&p);
        }
    }
    if let Some(g) = n.task_groups.get_mut(group) {
        *g = g.saturating_sub(1);
    }
    n.running_tasks = n.running_tasks.saturating_sub(1);
}

fn stop(t: &Task, reason: &str) -> TaskStop {
    TaskStop {
        task: t.id.clone(),
        revision: t.revision,
        node: t.node.clone(),
        reason: reason.to_string(),
    }
}

/// First 8 characters of a task id, as shown to people.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}
