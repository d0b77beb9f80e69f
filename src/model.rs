//! Plain data shared by the planner, the runtimes and the state store:
//! what the source asks for ([`DesiredState`]) and what exists
//! ([`ObservedState`]). No I/O here.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::task_definition::Protocol;
use crate::manifest::{
    CapacityProviderSpec, ClusterSpec, Manifest, ScheduledTaskSpec, ServiceSpec, TaskDefinitionSpec,
};

/// A service is identified by its cluster and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceKey {
    pub cluster: String,
    pub name: String,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.cluster, self.name)
    }
}

/// A service's `taskDefinition` reference: `family` (the revision the
/// source defines) or `family:revision` (a revision registered earlier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskDefRef<'a> {
    pub family: &'a str,
    /// The pinned revision; None without one (or when it is not a number,
    /// which validation refuses).
    pub revision: Option<u32>,
}

impl<'a> TaskDefRef<'a> {
    pub fn parse(s: &'a str) -> Self {
        match s.split_once(':') {
            Some((family, r)) => TaskDefRef {
                family,
                revision: r.parse().ok(),
            },
            None => TaskDefRef {
                family: s,
                revision: None,
            },
        }
    }

    /// The same family at `revision`.
    pub fn at(self, revision: u32) -> Self {
        TaskDefRef {
            revision: Some(revision),
            ..self
        }
    }
}

impl fmt::Display for TaskDefRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.revision {
            Some(r) => write!(f, "{}:{r}", self.family),
            None => f.write_str(self.family),
        }
    }
}

/// The state a source asks for, normalised (see [`crate::plan::normalize`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredState {
    pub clusters: BTreeMap<String, ClusterSpec>,
    pub capacity_providers: BTreeMap<String, CapacityProviderSpec>,
    pub task_definitions: BTreeMap<String, TaskDefinitionSpec>,
    pub services: BTreeMap<String, DesiredService>,
    /// Scheduled tasks by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scheduled_tasks: BTreeMap<String, ScheduledTaskSpec>,
    /// Fingerprint of each secret reference's current value (`valueFrom` ->
    /// `sha256:...`, or `unresolved`). Values themselves never enter the
    /// model.
    #[serde(default)]
    pub secret_fingerprints: BTreeMap<String, String>,
}

/// A service as the source defines it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredService {
    pub key: ServiceKey,
    pub spec: ServiceSpec,
    /// Repair drift (tasks stopped or removed by hand); off with the
    /// annotation `reconcile.io/self-heal: "false"`, then drift is only
    /// reported.
    #[serde(default = "yes", skip_serializing_if = "Clone::clone")]
    pub self_heal: bool,
}

fn yes() -> bool {
    true
}

impl DesiredState {
    /// Resolve every secret reference the task definitions make and keep
    /// its fingerprint (never the value); returns the references that
    /// cannot be resolved.
    pub fn fingerprint_secrets(
        &mut self,
        resolver: &crate::secrets::Resolver,
    ) -> Vec<crate::secrets::SecretError> {
        let refs: Vec<&str> = self
            .task_definitions
            .values()
            .flat_map(|t| t.container_definitions.iter())
            .flat_map(|c| c.secrets.iter())
            .map(|s| s.value_from.as_str())
            .collect();
        let (fps, errors) = resolver.fingerprints(refs);
        self.secret_fingerprints = fps;
        errors
    }

    /// Collect the manifests of a valid source, normalised.
    pub fn from_manifests<'a>(manifests: impl IntoIterator<Item = &'a Manifest>) -> Self {
        let mut d = DesiredState::default();
        for m in manifests {
            match m {
                Manifest::Cluster(c) => {
                    d.clusters.insert(
                        c.metadata.name.clone(),
                        crate::plan::normalize::cluster(&c.spec),
                    );
                }
                Manifest::CapacityProvider(c) => {
                    d.capacity_providers
                        .insert(c.metadata.name.clone(), c.spec.clone());
                }
                Manifest::TaskDefinition(t) => {
                    d.task_definitions.insert(
                        t.metadata.name.clone(),
                        crate::plan::normalize::task_definition(&t.spec),
                    );
                }
                Manifest::Service(s) => {
                    let key = ServiceKey {
                        cluster: s.spec.cluster.clone(),
                        name: s.metadata.name.clone(),
                    };
                    d.services.insert(
                        key.to_string(),
                        DesiredService {
                            key,
                            spec: crate::plan::normalize::service(&s.metadata.name, &s.spec),
                            self_heal: s
                                .metadata
                                .annotations
                                .get(crate::validate::semantic::SELF_HEAL)
                                .is_none_or(|v| v != "false"),
                        },
                    );
                }
                Manifest::ScheduledTask(s) => {
                    d.scheduled_tasks.insert(
                        s.metadata.name.clone(),
                        crate::plan::normalize::scheduled_task(&s.metadata.name, &s.spec),
                    );
                }
            }
        }
        d
    }
}

/// One registered, immutable revision of a task definition family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    pub number: u32,
    /// Digest of the normalised spec: the same spec is the same revision.
    pub digest: String,
    pub spec: TaskDefinitionSpec,
}

/// Lifecycle of a task (ECS lastStatus, collapsed to what a Docker host
/// shows).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    Pending,
    Running,
    Stopped,
}

/// Health of a task: UNHEALTHY if any essential container is, HEALTHY if all
/// essential containers with checks are, else UNKNOWN.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Health {
    Healthy,
    Unhealthy,
    Unknown,
}

/// A task's standing with its service's load balancers (the target
/// group's health check, run by the task's node): INITIAL until it passed
/// the healthy threshold, then HEALTHY or UNHEALTHY. A task with several
/// listeners is as healthy as the worst of them.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TargetHealth {
    Initial,
    Healthy,
    Unhealthy,
}

impl TargetHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetHealth::Initial => "INITIAL",
            TargetHealth::Healthy => "HEALTHY",
            TargetHealth::Unhealthy => "UNHEALTHY",
        }
    }

    /// A task's health once its target health is known: a task counts as
    /// healthy only when its target is, and is unhealthy when either is.
    /// `checks`: its task definition has container health checks (else
    /// the container's UNKNOWN says nothing).
    pub fn fold(self, container: Health, checks: bool) -> Health {
        match (container, self) {
            (Health::Unhealthy, _) | (_, TargetHealth::Unhealthy) => Health::Unhealthy,
            (Health::Healthy, TargetHealth::Healthy) => Health::Healthy,
            (Health::Unknown, TargetHealth::Healthy) if !checks => Health::Healthy,
            _ => Health::Unknown,
        }
    }
}

/// A published port as actually bound.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct NetworkBinding {
    pub container_name: String,
    pub container_port: u16,
    pub host_port: u16,
    pub protocol: Protocol,
}

/// What identifies a task and what it runs, the same wherever the task
/// appears: observed ([`Task`]), launched ([`crate::runtime::Launch`]) or
/// assigned to a node ([`crate::wire::Assignment`]). `service` is the
/// owning service (None for a standalone task); `config_hash` the digest of
/// the effective configuration the task is started with
/// ([`task_config_hash`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskIdentity {
    pub id: String,
    pub cluster: String,
    pub service: Option<String>,
    pub family: String,
    pub revision: u32,
    pub config_hash: String,
    /// Who started a task outside any service (`run-task --started-by`, a
    /// scheduled task's `schedule/NAME`): ECS `startedBy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
}

/// A container of a task that exited, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerExit {
    pub name: String,
    /// None when the engine did not say (a container that never ran).
    pub exit_code: Option<i64>,
    pub essential: bool,
}

/// A task as observed on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    #[serde(flatten)]
    pub identity: TaskIdentity,
    pub node: String,
    pub last_status: TaskStatus,
    pub health: Health,
    /// Unix seconds.
    pub started_at: Option<i64>,
    pub stop_code: Option<String>,
    pub stopped_reason: Option<String>,
    #[serde(default)]
    pub bindings: Vec<NetworkBinding>,
    /// With load balancers: the target health its node measured (already
    /// folded into `health`). None without load balancers, or before the
    /// node checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_health: Option<TargetHealth>,
    /// Its containers that exited, with their exit codes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exits: Vec<ContainerExit>,
    /// When it stopped (unix seconds), where the runtime knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<i64>,
}

impl Task {
    pub fn is_live(&self) -> bool {
        self.last_status != TaskStatus::Stopped
    }
}

/// A node (container instance) able to run tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub name: String,
    pub cluster: String,
    pub attributes: BTreeMap<String, String>,
    /// CPU units (cores x 1024) and MiB.
    pub cpu: u32,
    pub memory: u32,
    /// Host ports the node keeps for itself besides the agent's standard
    /// ones ([`crate::scheduler::RESERVED_PORTS`]); never given to tasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reserved_ports: Vec<u16>,
}

/// A service as last applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedService {
    pub key: ServiceKey,
    pub spec: ServiceSpec,
    /// Revision of the PRIMARY deployment.
    pub revision: u32,
    /// Configuration digest the PRIMARY deployment's tasks run with.
    pub config_hash: String,
    /// Fingerprints of the secrets the PRIMARY deployment's tasks got.
    #[serde(default)]
    pub secret_fingerprints: BTreeMap<String, String>,
}

/// What exists: applied resources from the state store, tasks and nodes
/// from the runtime.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedState {
    pub clusters: BTreeMap<String, ClusterSpec>,
    pub capacity_providers: BTreeMap<String, CapacityProviderSpec>,
    /// Registered revisions per family, oldest first.
    pub revisions: BTreeMap<String, Vec<Revision>>,
    /// Revision of each family the source last applied.
    pub task_definitions: BTreeMap<String, u32>,
    pub services: BTreeMap<String, ObservedService>,
    /// Scheduled tasks as last applied, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scheduled_tasks: BTreeMap<String, ScheduledTaskSpec>,
    /// Deployments and events by service key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deployments: BTreeMap<String, crate::deployment::History>,
    pub tasks: Vec<Task>,
    /// Nodes that take new tasks.
    pub nodes: Vec<NodeInfo>,
    /// Nodes being drained (ECS DRAINING): they take no new tasks, and the
    /// service tasks they run are replaced on other nodes.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub draining: std::collections::BTreeSet<String>,
}

/// The name a value of a unit enum has in the documents (`RUNNING`,
/// `IN_PROGRESS`, `nofile`): its serialised string; empty for other
/// values.
pub fn serde_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Hex SHA-256 of a value's canonical JSON (object keys sorted by the
/// model's BTreeMaps and struct order), shortened to 16 hex digits.
pub fn digest<T: Serialize>(value: &T) -> String {
    // One reused buffer per thread: the planner digests every spec on every
    // run, and growing a fresh buffer each time was a fifth of its work.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let hash = BUF.with_borrow_mut(|buf| {
        buf.clear();
        serde_json::to_writer(&mut *buf, value).expect("model values serialise");
        let hash = Sha256::digest(&buf[..]);
        if buf.capacity() > 1 << 20 {
            *buf = Vec::new();
        }
        hash
    });
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(16);
    for b in &hash[..8] {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

/// A new task id: 32 hex digits from the clock, the process and a counter
/// the caller keeps, so ids never repeat across runs or processes.
pub fn new_task_id(counter: &std::sync::atomic::AtomicU64) -> String {
    let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seed = format!(
        "{:?}-{}-{n}",
        std::time::SystemTime::now(),
        std::process::id()
    );
    let mut id = digest(&seed);
    id.push_str(&digest(&(seed, 1)));
    id
}

/// Resources a task of `spec` reserves on a node: CPU units and MiB (ECS:
/// the task-level value when set, else the sum over containers of cpu and
/// of memoryReservation-or-memory), and its static host ports.
pub fn reservation(spec: &TaskDefinitionSpec) -> (u32, u32, Vec<(u16, Protocol)>) {
    use crate::manifest::task_definition::NetworkMode;
    let cpu = spec
        .cpu
        .unwrap_or_else(|| spec.container_definitions.iter().map(|c| c.cpu).sum());
    let memory = spec.memory.unwrap_or_else(|| {
        spec.container_definitions
            .iter()
            .map(|c| c.memory_reservation.or(c.memory).unwrap_or(0))
            .sum()
    });
    let mut ports = Vec::new();
    for c in &spec.container_definitions {
        for p in &c.port_mappings {
            let host = match spec.network_mode {
                NetworkMode::Host => Some(p.container_port),
                NetworkMode::Bridge => p.host_port.filter(|h| *h != 0),
                NetworkMode::None => None,
            };
            if let Some(h) = host {
                ports.push((h, p.protocol));
            }
        }
    }
    (cpu, memory, ports)
}

/// Digest of everything a task's containers are started from: the
/// revision's spec and the fingerprints of the secrets it reads. Two tasks
/// with the same digest are interchangeable; a task whose digest differs
/// from the desired one is replaced.
pub fn task_config_hash(
    family: &str,
    spec: &TaskDefinitionSpec,
    fingerprints: &BTreeMap<String, String>,
) -> String {
    let secrets = secret_fingerprints_of(spec, fingerprints);
    config_hash_of(family, &digest(spec), &secrets)
}

/// [`task_config_hash`] from the spec's digest, for callers that already
/// have it (the planner digests each spec once).
pub fn config_hash_of(
    family: &str,
    spec_digest: &str,
    secrets: &BTreeMap<String, String>,
) -> String {
    digest(&(family, spec_digest, secrets))
}

/// The fingerprints of the secrets `spec` reads.
pub fn secret_fingerprints_of(
    spec: &TaskDefinitionSpec,
    fingerprints: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    spec.container_definitions
        .iter()
        .flat_map(|c| c.secrets.iter())
        .map(|s| {
            let fp = fingerprints
                .get(&s.value_from)
                .cloned()
                .unwrap_or_else(|| "unresolved".to_string());
            (s.value_from.clone(), fp)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_serialises_with_its_identity_inline() {
        let text = r#"{"id":"t1","cluster":"c","service":null,"family":"f","revision":2,"configHash":"h","node":"n","lastStatus":"RUNNING","health":"UNKNOWN","startedAt":null,"stopCode":null,"stoppedReason":null,"bindings":[]}"#;
        let t: Task = serde_json::from_str(text).unwrap();
        assert_eq!(
            (
                t.identity.id.as_str(),
                t.identity.revision,
                t.identity.service.as_deref()
            ),
            ("t1", 2, None)
        );
        assert_eq!(serde_json::to_string(&t).unwrap(), text);
        let t: Task =
            serde_json::from_str(&text.replace(r#""service":null"#, r#""service":"s""#)).unwrap();
        assert_eq!(t.identity.service.as_deref(), Some("s"));
    }

    #[test]
    fn task_definition_references() {
        let r = TaskDefRef::parse("web");
        assert_eq!((r.family, r.revision), ("web", None));
        assert_eq!(r.to_string(), "web");
        let r = TaskDefRef::parse("web:12");
        assert_eq!((r.family, r.revision), ("web", Some(12)));
        assert_eq!(r.to_string(), "web:12");
        assert_eq!(TaskDefRef::parse("web:3").at(4).to_string(), "web:4");
        assert_eq!(TaskDefRef::parse("web").at(4).to_string(), "web:4");
    }
}
