//! Tasks as Docker containers, through bollard.
//!
//! Ownership is kept in labels only, so the observed state is rebuilt from
//! Docker with one list call and the program can be killed at any moment:
//! every container carries its source, cluster, service, task id, task
//! definition revision and configuration digest. A task is the set of
//! containers with the same `reconcile.io/task` label.
//!
//! The API version is negotiated with the daemon (Debian's docker.io speaks
//! an older API than bollard's default).
//!
//! The parts: `create` (image, volumes, labels and the create body of each
//! container), `start` (start order and `dependsOn` waits), `observe`
//! (tasks rebuilt from containers) and `cleanup` (stopping and removing).
//! This file holds the connection, the labels and the `Runtime` methods
//! that put the parts together.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{ContainerSummary, ContainerSummaryStateEnum, NetworkCreateRequest};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, LogsOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::{ports, start_failure, Launch, Observation, Runtime, RuntimeError};
use crate::manifest::task_definition::NetworkMode;
use crate::model::{NodeInfo, TaskStatus};

mod cleanup;
mod connect;
mod create;
pub mod logs;
mod observe;
mod preflight;
mod start;
pub mod stats;

pub use connect::Endpoint;
use create::dynamic_ports;
pub use observe::tasks_from_containers;

/// Label keys. Everything the program owns carries `MANAGED`.
pub mod label {
    pub const MANAGED: &str = "reconcile.io/managed";
    pub const SOURCE: &str = "reconcile.io/source";
    pub const CLUSTER: &str = "reconcile.io/cluster";
    pub const SERVICE: &str = "reconcile.io/service";
    pub const TASK: &str = "reconcile.io/task";
    pub const FAMILY: &str = "reconcile.io/family";
    pub const REVISION: &str = "reconcile.io/revision";
    pub const CONFIG: &str = "reconcile.io/config-hash";
    pub const CONTAINER: &str = "reconcile.io/container";
    pub const ESSENTIAL: &str = "reconcile.io/essential";
    pub const HEALTH_CHECK: &str = "reconcile.io/health-check";
    pub const NODE: &str = "reconcile.io/node";
    pub const STARTED_BY: &str = "reconcile.io/started-by";
}

/// Every container, running or stopped, that carries all of `labels`
/// (each `KEY=VALUE`).
pub async fn labelled(
    docker: &Docker,
    labels: Vec<String>,
) -> Result<Vec<ContainerSummary>, bollard::errors::Error> {
    let filters = HashMap::from([("label", labels)]);
    docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
}

/// Connect to the engine the environment names (DOCKER_HOST,
/// DOCKER_TLS_VERIFY, DOCKER_CERT_PATH), negotiate the API version, and
/// read its info.
pub async fn engine() -> Result<(Docker, bollard::models::SystemInfo), RuntimeError> {
    let endpoint = Endpoint::from_process_env().map_err(RuntimeError::new)?;
    let docker = endpoint
        .connect()
        .map_err(RuntimeError::new)?
        .negotiate_version()
        .await
        .map_err(|e| {
            err(
                &format!("cannot reach the Docker daemon at {}", endpoint.describe()),
                e,
            )
        })?;
    let info = docker
        .info()
        .await
        .map_err(|e| err("cannot read the Docker daemon's info", e))?;
    Ok((docker, info))
}

/// What an engine offers: CPU units (cores x 1024) and MiB.
pub fn resources(info: &bollard::models::SystemInfo) -> (u32, u32) {
    (
        info.ncpu.unwrap_or(1).max(1) as u32 * 1024,
        (info.mem_total.unwrap_or(0) / (1024 * 1024)) as u32,
    )
}

/// Stats read at once: the engine computes each on its own.
pub const STATS_CONCURRENCY: usize = 8;

/// The local Docker engine as one node.
pub struct DockerRuntime {
    docker: Docker,
    /// Told the operation and duration of each engine call (the agent's
    /// metrics); None elsewhere.
    observer: Option<std::sync::Arc<dyn Observer>>,
    /// Identity of the source whose tasks this runtime sees.
    source: String,
    node: NodeInfo,
    /// Tasks whose start failed, as reported until they are removed: the
    /// engine shows a task whose containers were created but never ran
    /// without why, and one that never got a container not at all.
    failed_starts: std::sync::Mutex<BTreeMap<String, crate::model::Task>>,
    /// The engine shares this host (its unix socket), so probing a port
    /// here says whether the engine can bind it.
    local: bool,
    /// When each exited container of a task outside any service finished
    /// (unix seconds), by container id: the list call does not say, and a
    /// finished container never changes, so each is inspected once.
    finished: std::sync::Mutex<HashMap<String, i64>>,
}

/// At most this many failed starts are remembered (the oldest ids go).
const FAILED_STARTS: usize = 1024;

/// An engine call, as an [`Observer`] is told of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    List,
    Create,
    Start,
    Stop,
    Remove,
    Inspect,
    Logs,
}

impl Call {
    pub const ALL: [Call; 7] = [
        Call::List,
        Call::Create,
        Call::Start,
        Call::Stop,
        Call::Remove,
        Call::Inspect,
        Call::Logs,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Call::List => "list",
            Call::Create => "create",
            Call::Start => "start",
            Call::Stop => "stop",
            Call::Remove => "remove",
            Call::Inspect => "inspect",
            Call::Logs => "logs",
        }
    }
}

/// Watches the runtime's engine calls: each one's kind, how long it took
/// and whether it succeeded.
pub trait Observer: Send + Sync {
    fn call(&self, call: Call, took: std::time::Duration, ok: bool);
}

/// `context: e`, with the causes under `e`: bollard's own message for a
/// failed connection is only "client error (Connect)", the transport's
/// words (refused, TLS, ssh) are in its sources.
fn err(context: &str, e: impl std::error::Error) -> RuntimeError {
    let mut text = format!("{context}: {e}");
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        // Some errors repeat their cause in their own message.
        if !text.contains(&c_text) {
            text = format!("{text}: {c_text}");
        }
        cause = c.source();
    }
    RuntimeError::new(text)
}

impl DockerRuntime {
    /// Connect (honouring DOCKER_HOST), negotiate the API version and read
    /// the engine's resources. The node serves every cluster.
    pub async fn connect(source: &str, node_name: &str) -> Result<DockerRuntime, RuntimeError> {
        let (docker, info) = engine().await?;
        let (cpu, memory) = resources(&info);
        let mut attributes = BTreeMap::new();
        attributes.insert(
            "ecs.os-type".to_string(),
            info.os_type.unwrap_or_else(|| "linux".into()),
        );
        attributes.insert(
            "ecs.cpu-architecture".to_string(),
            info.architecture.unwrap_or_default(),
        );
        Ok(DockerRuntime {
            docker,
            observer: None,
            source: source.to_string(),
            node: NodeInfo {
                name: node_name.to_string(),
                cluster: "*".to_string(),
                attributes,
                cpu,
                memory,
                reserved_ports: Vec::new(),
            },
            failed_starts: Default::default(),
            finished: Default::default(),
            local: matches!(Endpoint::from_process_env(), Ok(Endpoint::Unix(_))),
        })
    }

    /// Tell `observer` of every engine call from now on.
    pub fn observed_by(mut self, observer: std::sync::Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Run one engine call, timed for the observer.
    async fn timed<T, E>(
        &self,
        call: Call,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let Some(o) = &self.observer else {
            return f.await;
        };
        let began = std::time::Instant::now();
        let r = f.await;
        o.call(call, began.elapsed(), r.is_ok());
        r
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    async fn list(&self, task: Option<&str>) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let mut labels = vec![format!("{}={}", label::SOURCE, self.source)];
        if let Some(t) = task {
            labels.push(format!("{}={t}", label::TASK));
        }
        self.timed(Call::List, labelled(&self.docker, labels))
            .await
            .map_err(|e| err("listing containers", e))
    }

    /// The running containers of this runtime's tasks: (task id,
    /// container id).
    pub async fn running_containers(&self) -> Result<Vec<(String, String)>, RuntimeError> {
        let containers = self.list(None).await?;
        Ok(containers
            .into_iter()
            .filter(|c| c.state == Some(ContainerSummaryStateEnum::RUNNING))
            .filter_map(|c| {
                let task = c.labels.as_ref()?.get(label::TASK)?.clone();
                Some((task, c.id?))
            })
            .collect())
    }

    /// What each running task uses now (by task id): two samples of its
    /// containers `gap` apart, a few containers at a time.
    pub async fn usage_now(
        &self,
        gap: std::time::Duration,
    ) -> Result<BTreeMap<String, crate::utilization::TaskUsage>, RuntimeError> {
        let containers = self.running_containers().await?;
        Ok(stats::usage_now(&self.docker, &containers, gap, STATS_CONCURRENCY).await)
    }

    /// The last `lines` lines a container wrote.
    pub async fn logs(&self, container: &str, lines: usize) -> String {
        let mut stream = self.docker.logs(
            container,
            Some(
                LogsOptionsBuilder::default()
                    .stdout(true)
                    .stderr(true)
                    .tail(&lines.to_string())
                    .build(),
            ),
        );
        let read = async {
            let mut out = String::new();
            while let Some(chunk) = stream.next().await {
                // What was read before a failure is still shown.
                let Ok(chunk) = chunk else { return Err(out) };
                out.push_str(&chunk.to_string());
                if out.len() > 64 * 1024 {
                    break;
                }
            }
            Ok(out)
        };
        self.timed(Call::Logs, read).await.unwrap_or_else(|out| out)
    }

    /// Last log lines of a task's containers, for failure reports.
    pub async fn task_logs(&self, task_id: &str, lines: usize) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Ok(cs) = self.list(Some(task_id)).await {
            for c in cs {
                let name = c
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(label::CONTAINER))
                    .cloned()
                    .unwrap_or_default();
                if let Some(id) = &c.id {
                    out.push((name, self.logs(id, lines).await));
                }
            }
        }
        out
    }
}

impl DockerRuntime {
    fn failed_starts(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, crate::model::Task>> {
        self.failed_starts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep why `l` failed to start, for [`Runtime::observe`].
    fn remember_failed_start(&self, l: &Launch, why: &str) {
        let mut failed = self.failed_starts();
        if failed.len() >= FAILED_STARTS {
            failed.pop_first();
        }
        failed.insert(
            l.identity.id.clone(),
            crate::model::Task {
                identity: l.identity.clone(),
                node: l.node.clone(),
                last_status: TaskStatus::Stopped,
                health: crate::model::Health::Unknown,
                started_at: None,
                stop_code: Some("TaskFailedToStart".into()),
                stopped_reason: Some(why.to_string()),
                bindings: Vec::new(),
                target_health: None,
                exits: Vec::new(),
                stopped_at: None,
            },
        );
    }
}

impl DockerRuntime {
    /// Fill `stopped_at` of the stopped tasks that belong to no service
    /// (their stop time is shown and ages them out; a service's stopped
    /// tasks are replaced and removed at once): the latest finish of
    /// their containers.
    async fn stopped_times(
        &self,
        containers: &[ContainerSummary],
        tasks: &mut [crate::model::Task],
    ) {
        let standalone: std::collections::HashSet<String> = tasks
            .iter()
            .filter(|t| t.identity.service.is_none() && !t.is_live())
            .map(|t| t.identity.id.clone())
            .collect();
        if standalone.is_empty() {
            return;
        }
        let exited: Vec<(&str, &str)> = containers
            .iter()
            .filter(|c| c.state == Some(ContainerSummaryStateEnum::EXITED))
            .filter_map(|c| {
                let task = c.labels.as_ref()?.get(label::TASK)?;
                standalone
                    .contains(task)
                    .then(|| (task.as_str(), c.id.as_deref().unwrap_or_default()))
            })
            .collect();
        let unknown: Vec<&str> = {
            let known = self.finished.lock().unwrap_or_else(|p| p.into_inner());
            exited
                .iter()
                .map(|(_, c)| *c)
                .filter(|c| !c.is_empty() && !known.contains_key(*c))
                .collect()
        };
        let mut found = Vec::new();
        for id in unknown {
            let inspected = self
                .timed(Call::Inspect, self.docker.inspect_container(id, None))
                .await;
            let at = inspected
                .ok()
                .and_then(|i| i.state?.finished_at)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_second());
            if let Some(at) = at {
                found.push((id.to_string(), at));
            }
        }
        let mut known = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        known.extend(found);
        // Only what is still listed is kept: bounded by what exists.
        let listed: std::collections::HashSet<&str> =
            containers.iter().filter_map(|c| c.id.as_deref()).collect();
        known.retain(|id, _| listed.contains(id.as_str()));
        for t in tasks.iter_mut() {
            let at = exited
                .iter()
                .filter(|(task, _)| *task == t.identity.id)
                .filter_map(|(_, c)| known.get(*c))
                .max();
            if let Some(at) = at {
                t.stopped_at = Some(*at);
            }
        }
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl Runtime for DockerRuntime {
    async fn observe(&self) -> Result<Observation, RuntimeError> {
        let containers = self.list(None).await?;
        let mut tasks = tasks_from_containers(&containers);
        {
            let failed = self.failed_starts();
            // A task whose containers were created but not all started failed
            // to start here, or was interrupted (starting is done by the one
            // process holding the state lock): it will never start by itself.
            for t in &mut tasks {
                if t.last_status == TaskStatus::Pending {
                    t.last_status = TaskStatus::Stopped;
                    t.stop_code = Some("TaskFailedToStart".into());
                    t.stopped_reason = Some(
                        failed
                            .get(&t.identity.id)
                            .and_then(|f| f.stopped_reason.clone())
                            .unwrap_or_else(|| "the start of the task was interrupted".into()),
                    );
                }
            }
            // One that never got a container is known only from here. (Most
            // observations have no failed start to add: nothing is indexed.)
            if !failed.is_empty() {
                let seen: std::collections::HashSet<&str> =
                    tasks.iter().map(|t| t.identity.id.as_str()).collect();
                let missing: Vec<crate::model::Task> = failed
                    .values()
                    .filter(|t| !seen.contains(t.identity.id.as_str()))
                    .cloned()
                    .collect();
                tasks.extend(missing);
            }
        }
        self.stopped_times(&containers, &mut tasks).await;
        Ok(Observation {
            tasks,
            nodes: vec![self.node.clone()],
            draining: Default::default(),
        })
    }

    async fn start(&self, l: Launch) -> Result<(), RuntimeError> {
        let fail = |message: String| {
            self.remember_failed_start(&l, &message);
            RuntimeError {
                message,
                task: Some(l.identity.id.clone()),
            }
        };
        for c in &l.spec.container_definitions {
            self.ensure_image(&c.image).await.map_err(fail)?;
        }
        let volumes = match self.volumes(&l).await {
            Ok(v) => v,
            Err(e) => {
                let _ = self.cleanup(&l.identity.id, &[], false).await;
                return Err(fail(e));
            }
        };
        // Containers of a bridge task reach each other by name on a
        // network of their own; a one-container task needs none.
        let network = if l.spec.network_mode == NetworkMode::Bridge
            && l.spec.container_definitions.len() > 1
        {
            let name = Self::network_name(&l.identity.id);
            let labels = HashMap::from([
                (label::MANAGED.to_string(), "true".to_string()),
                (label::SOURCE.to_string(), self.source.clone()),
                (label::TASK.to_string(), l.identity.id.clone()),
            ]);
            self.docker
                .create_network(NetworkCreateRequest {
                    name: name.clone(),
                    driver: Some("bridge".into()),
                    labels: Some(labels),
                    ..Default::default()
                })
                .await
                .map_err(|e| fail(format!("creating the task network: {e}")))?;
            Some(name)
        } else {
            None
        };
        let (_, _, static_ports) = crate::model::reservation(&l.spec);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dynamic = dynamic_ports(&l).map_err(fail)?;
            let started = self
                .create_and_start(&l, network.as_deref(), &volumes, &dynamic)
                .await;
            // A static host port of the task is held by something else:
            // no retry here mends that. Its containers never ran, so they
            // have no logs to keep: they go, and the task is reported with
            // why from memory.
            let held = started
                .as_ref()
                .err()
                .and_then(|e| start_failure::port_in_use(e, &l.node, &static_ports));
            if let Some(why) = held {
                let existing = self.list(Some(&l.identity.id)).await.unwrap_or_default();
                let _ = self.cleanup(&l.identity.id, &existing, false).await;
                return Err(fail(why));
            }
            match started {
                // A host port chosen for the task was taken before Docker
                // bound it: the same task again, on fresh ports.
                Err(e) if attempt < ports::ATTEMPTS && ports::is_port_conflict(&e) => {
                    let existing = self.list(Some(&l.identity.id)).await.unwrap_or_default();
                    self.remove_containers(&existing)
                        .await
                        .map_err(|e| fail(e.message))?;
                }
                Err(e) => return Err(fail(e)),
                Ok(()) => return Ok(()),
            }
        }
    }

    async fn stop(&self, task_id: &str, _reason: &str) -> Result<(), RuntimeError> {
        let containers = self.list(Some(task_id)).await?;
        self.cleanup(task_id, &containers, true).await?;
        self.failed_starts().remove(task_id);
        Ok(())
    }

    async fn remove(&self, task_id: &str) -> Result<(), RuntimeError> {
        let containers = self.list(Some(task_id)).await?;
        self.cleanup(task_id, &containers, true).await?;
        self.failed_starts().remove(task_id);
        Ok(())
    }

    async fn preflight(&self, starts: &[super::Preflight]) -> Vec<String> {
        self.warnings(starts).await
    }

    async fn halt(&self, task_id: &str) -> Result<(), RuntimeError> {
        for c in self.list(Some(task_id)).await? {
            if let (Some(id), Some(ContainerSummaryStateEnum::RUNNING)) = (&c.id, c.state) {
                self.timed(
                    Call::Stop,
                    self.docker
                        .stop_container(id, Some(StopContainerOptionsBuilder::default().build())),
                )
                .await
                .map_err(|e| err("stopping a container", e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::create::split_image;
    use super::observe::{exit_code_of, health_of};
    use crate::model::Health;

    #[test]
    fn parses_docker_status_text() {
        assert_eq!(health_of("Up 3 seconds (healthy)"), Some(Health::Healthy));
        assert_eq!(
            health_of("Up 1 second (health: starting)"),
            Some(Health::Unknown)
        );
        assert_eq!(
            health_of("Up 9 minutes (unhealthy)"),
            Some(Health::Unhealthy)
        );
        assert_eq!(health_of("Up 2 hours"), None);
        assert_eq!(exit_code_of("Exited (137) 2 seconds ago"), Some(137));
        assert_eq!(split_image("busybox:stable"), ("busybox", Some("stable")));
        assert_eq!(
            split_image("localhost:5000/app"),
            ("localhost:5000/app", Some("latest"))
        );
    }
}
