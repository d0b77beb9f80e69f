//! What `status` shows, one document in both modes: `reconcile status
//! --format json` has one schema whether it reads the local engine or a
//! controller (`GET /v1/status`), published in the API document.
//!
//! Built from the observed state alone (pure): the services as last
//! applied, their tasks, deployments and events, and the nodes. A
//! controller adds its own view (commits, passes, its events).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::deployment::{DeploymentView, Held, History, ServiceEvent};
use crate::model::{Health, NetworkBinding, ObservedState, Task, TaskDefRef, TaskStatus};
use crate::utilization::TaskUsage;
use crate::wire::{EventRecord, HistoryReply, NodeView};

/// Events per service that `status` shows, newest first.
pub const SERVICE_EVENTS: usize = 5;

/// `reconcile status`: the source's services and the nodes they run on.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// The source, as it was named (a directory, or `git+URL`).
    pub source: String,
    /// Services as last applied, by key (`cluster/name`).
    pub services: Vec<ServiceStatus>,
    pub nodes: Vec<NodeView>,
    /// Scheduled tasks as applied, with their next run and latest run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scheduled_tasks: Vec<crate::runs::scheduled::ScheduledView>,
    /// Tasks started outside any service (run-task, schedules): running,
    /// and stopped within the last hour.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub standalone_tasks: Vec<crate::runs::RunRecord>,
    /// What only a controller knows; absent in standalone mode.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<ControllerStatus>,
}

/// A service as last applied, with what runs of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// `cluster/name`.
    pub service: String,
    pub cluster: String,
    pub name: String,
    /// `family:revision` of the PRIMARY deployment.
    pub task_definition: String,
    pub revision: u32,
    /// None for DAEMON services.
    pub desired_count: Option<u32>,
    pub running: usize,
    pub pending: usize,
    /// The commit the service was last changed from (git sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// PRIMARY and ACTIVE deployments and the newest one, newest first.
    pub deployments: Vec<DeploymentView>,
    /// Recent events, newest first.
    pub events: Vec<ServiceEvent>,
    /// A configuration rolled back and not deployed again.
    pub held: Option<Held>,
    pub tasks: Vec<TaskView>,
    /// Its listeners and their targets (load balancers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerStatus>,
    /// Its DNS names (service registries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
    /// Over its running tasks with a sample.
    /// Auto scaling's bounds and latest decisions, when the service has
    /// it (desiredCount is then the count auto scaling holds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_scaling: Option<AutoScalingStatus>,
    #[serde(flatten)]
    pub usage: Usage,
}

/// A listener of a service and where it sends requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    pub port: u16,
    pub protocol: crate::manifest::traffic::ListenerProtocol,
    pub targets: Vec<TargetStatus>,
}

/// A task as a target of a listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    pub task: String,
    pub node: String,
    /// `ip:port`, once its node said where it is reached.
    pub address: Option<String>,
    /// INITIAL, HEALTHY, UNHEALTHY (the target health check), or DRAINING
    /// (no new requests; stopped once its requests in flight finished).
    pub state: String,
}

/// What a task or service uses of what it reserves (ECS CPUUtilization
/// and MemoryUtilization). Each value is absent when unknown: no sample
/// yet, or an agent that does not report usage.
/// A service's auto scaling in the status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoScalingStatus {
    pub min_capacity: u32,
    pub max_capacity: u32,
    /// Its latest scaling decisions, newest last, with the metric values
    /// that drove them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activities: Vec<crate::autoscaling::Activity>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// CPU units used over CPU units reserved, in percent (one decimal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_utilization: Option<f64>,
    /// Memory used over memory reserved, in percent (one decimal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_utilization: Option<f64>,
    /// CPU units (1024 per core) used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_units: Option<f64>,
    /// MiB of memory used.
    #[serde(default, rename = "memoryMiB", skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<f64>,
    /// When it was sampled (Unix seconds); for a service, its oldest
    /// task sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_at: Option<i64>,
}

impl Usage {
    pub fn is_unknown(&self) -> bool {
        self.sampled_at.is_none()
    }
}

/// A task of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    pub id: String,
    pub node: String,
    pub revision: u32,
    pub last_status: TaskStatus,
    pub health: Health,
    /// Unix seconds.
    pub started_at: Option<i64>,
    /// Host ports as bound: one per port mapping.
    pub ports: Vec<NetworkBinding>,
    pub stop_code: Option<String>,
    pub stopped_reason: Option<String>,
    /// With load balancers: the target health its node measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_health: Option<crate::model::TargetHealth>,
    #[serde(flatten)]
    pub usage: Usage,
}

/// What a controller adds to the status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControllerStatus {
    /// The commit last fetched and the one last applied in full (git
    /// sources).
    pub fetched_commit: Option<String>,
    pub applied_commit: Option<String>,
    /// Suspended: nothing is applied until resumed.
    pub suspended: bool,
    /// Torn down (`destroy --controller`): everything the source applied
    /// is removed, and nothing of it applied until resumed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub torn_down: bool,
    /// The commit each resource (by plan address, e.g.
    /// `TaskDefinition/web`) was last changed from.
    pub commits: BTreeMap<String, String>,
    /// Why the last reconcile did not apply, if it did not.
    pub last_error: Option<String>,
    /// Reconcile passes completed since the controller started.
    pub passes: u64,
    /// The controller's events, newest first.
    pub events: Vec<EventRecord>,
    /// CapacityProviderReservation of each provider with managed scaling:
    /// what an outside autoscaler reads for a provider without a
    /// nodeTemplate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capacity_providers: Vec<ProviderReservation>,
}

/// A capacity provider's reservation as managed scaling computed it
/// (ECS: CapacityProviderReservation = M / N x 100).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderReservation {
    pub provider: String,
    /// M / N x 100 (100 with M = N = 0; 200 with nodes needed and none).
    pub reservation: u32,
    /// The reservation managed scaling holds.
    pub target_capacity: u32,
    /// M: nodes running tasks plus those the unplaced tasks need.
    pub needed_nodes: u32,
    /// N: the provider's nodes (launched ones still joining included).
    pub nodes: u32,
    /// ceil(M x 100 / targetCapacity), within the node template's sizes:
    /// the size that holds the target.
    pub desired_nodes: u32,
    /// The controller launches and removes nodes (it has a nodeTemplate);
    /// otherwise resizing is left to an outside autoscaler.
    pub launches: bool,
}

/// Which events `reconcile events` asked for, in both modes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EventFilter {
    /// `cluster/name`, or a name that matches it in any cluster.
    pub service: Option<String>,
    /// Unix seconds: events at or after.
    pub since: Option<i64>,
}

impl EventFilter {
    pub fn matches(&self, e: &EventRecord) -> bool {
        if self.since.is_some_and(|s| e.at < s) {
            return false;
        }
        match (&self.service, &e.service) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(want), Some(key)) => service_matches(want, key),
        }
    }
}

/// Does `want` (`cluster/name`, or a bare name) name the service `key`?
pub fn service_matches(want: &str, key: &str) -> bool {
    if want.contains('/') {
        want == key
    } else {
        key.rsplit_once('/').map_or(key, |(_, n)| n) == want
    }
}

/// A standalone source's events: its services' events from the store,
/// oldest first, as `reconcile events` shows them.
pub fn stored_events(stored: &crate::store::Stored, filter: &EventFilter) -> Vec<EventRecord> {
    let mut out: Vec<EventRecord> = stored
        .deployments
        .iter()
        .flat_map(|(key, h)| {
            h.events.iter().map(move |e| EventRecord {
                at: e.at,
                message: format!("{key}: {}", e.message),
                service: Some(key.clone()),
            })
        })
        .filter(|e| filter.matches(e))
        .collect();
    // Stable: a service's events keep their order within a second.
    out.sort_by_key(|e| e.at);
    out
}

impl From<&Task> for TaskView {
    fn from(t: &Task) -> TaskView {
        TaskView {
            id: t.identity.id.clone(),
            node: t.node.clone(),
            revision: t.identity.revision,
            last_status: t.last_status,
            health: t.health,
            started_at: t.started_at,
            ports: t.bindings.clone(),
            stop_code: t.stop_code.clone(),
            stopped_reason: t.stopped_reason.clone(),
            target_health: t.target_health,
            usage: Usage::default(),
        }
    }
}

/// The services of an observed state, with their tasks; `commits` names
/// the commit each was last changed from (empty without git).
pub fn services(o: &ObservedState, commits: &BTreeMap<String, String>) -> Vec<ServiceStatus> {
    let mut by_service: BTreeMap<(&str, &str), Vec<&Task>> = BTreeMap::new();
    for t in &o.tasks {
        if let Some(s) = &t.identity.service {
            by_service
                .entry((t.identity.cluster.as_str(), s.as_str()))
                .or_default()
                .push(t);
        }
    }
    o.services
        .iter()
        .map(|(key, s)| {
            let tasks = by_service
                .get(&(s.key.cluster.as_str(), s.key.name.as_str()))
                .cloned()
                .unwrap_or_default();
            let count = |st: TaskStatus| tasks.iter().filter(|t| t.last_status == st).count();
            let history = o.deployments.get(key);
            ServiceStatus {
                service: key.clone(),
                cluster: s.key.cluster.clone(),
                name: s.key.name.clone(),
                task_definition: TaskDefRef::parse(&s.spec.task_definition)
                    .at(s.revision)
                    .to_string(),
                revision: s.revision,
                desired_count: s.spec.desired_count,
                running: count(TaskStatus::Running),
                pending: count(TaskStatus::Pending),
                commit: commits.get(&format!("Service/{key}")).cloned(),
                deployments: history.map(|h| h.views(&tasks)).unwrap_or_default(),
                events: history
                    .map(|h| {
                        h.events
                            .iter()
                            .rev()
                            .take(SERVICE_EVENTS)
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default(),
                held: history.and_then(|h| h.held.clone()),
                auto_scaling: s.spec.auto_scaling.as_ref().map(|a| AutoScalingStatus {
                    min_capacity: a.min_capacity,
                    max_capacity: a.max_capacity,
                    activities: Vec::new(),
                }),
                tasks: tasks.iter().map(|t| TaskView::from(*t)).collect(),
                listeners: Vec::new(),
                dns_names: Vec::new(),
                usage: Usage::default(),
            }
        })
        .collect()
}

/// Fill in the usage of each running task from `samples` (by task id)
/// and each service's sum. Reservations are read from the task's
/// revision; a task that reserves nothing is measured against its
/// node's registered capacity (`nodes`: name -> CPU units, MiB).
pub fn fill_usage(
    o: &ObservedState,
    nodes: &BTreeMap<String, (u32, u32)>,
    services: &mut [ServiceStatus],
    samples: &BTreeMap<String, TaskUsage>,
) {
    use crate::utilization::{aggregate, percent, reserved};
    let tasks: BTreeMap<&str, &Task> = o
        .tasks
        .iter()
        .map(|t| (t.identity.id.as_str(), t))
        .collect();
    for s in services.iter_mut() {
        let (mut cpu, mut memory, mut oldest) = (Vec::new(), Vec::new(), None::<i64>);
        for v in s.tasks.iter_mut() {
            let (Some(sample), Some(t)) = (samples.get(&v.id), tasks.get(v.id.as_str())) else {
                continue;
            };
            if v.last_status != TaskStatus::Running {
                continue;
            }
            let Some(spec) = o
                .revisions
                .get(&t.identity.family)
                .and_then(|rs| rs.iter().find(|r| r.number == t.identity.revision))
            else {
                continue;
            };
            let node = nodes.get(&t.node).copied().unwrap_or((0, 0));
            let (rc, rm) = reserved(&spec.spec, node);
            let (rc, rm) = (f64::from(rc), f64::from(rm));
            v.usage = Usage {
                cpu_utilization: percent(sample.cpu_units, rc),
                memory_utilization: percent(sample.memory_mib, rm),
                cpu_units: sample.cpu_units,
                memory_mib: sample.memory_mib,
                sampled_at: Some(sample.sampled_at),
            };
            cpu.push((sample.cpu_units, rc));
            memory.push((sample.memory_mib, rm));
            oldest = Some(oldest.map_or(sample.sampled_at, |o| o.min(sample.sampled_at)));
        }
        let (cpu_used, cpu_reserved) = aggregate(&cpu);
        let (mem_used, mem_reserved) = aggregate(&memory);
        s.usage = Usage {
            cpu_utilization: percent(cpu_used, cpu_reserved),
            memory_utilization: percent(mem_used, mem_reserved),
            cpu_units: cpu_used,
            memory_mib: mem_used,
            sampled_at: oldest,
        };
    }
}

/// `reconcile history`: every deployment of service `key` and its events,
/// newest first.
pub fn history(key: &str, h: Option<&History>) -> HistoryReply {
    let h = h.cloned().unwrap_or_default();
    HistoryReply {
        service: key.to_string(),
        deployments: h
            .deployments
            .iter()
            .rev()
            .map(|d| DeploymentView::of(d, &[]))
            .collect(),
        events: h.events.iter().rev().cloned().collect(),
        held: h.held,
        scaling: Vec::new(),
    }
}
