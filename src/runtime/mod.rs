//! Where tasks run. A [`Runtime`] observes the tasks it owns (rebuilt from
//! the runtime alone, e.g. Docker labels) and starts and stops them.
//!
//! `docker` is what users run; `sim` is an in-process simulation used only
//! by property tests and scale benchmarks, never instead of a Docker test.

pub mod docker;
pub mod ports;
pub mod sim;
pub mod start_failure;

use std::collections::BTreeMap;

use crate::manifest::TaskDefinitionSpec;
use crate::model::{NodeInfo, Task, TaskIdentity};
use crate::secrets::SecretValue;

/// Everything needed to start one task.
#[derive(Debug, Clone)]
pub struct Launch {
    pub identity: TaskIdentity,
    pub node: String,
    pub spec: TaskDefinitionSpec,
    /// Secret values by reference (`valueFrom`). Debug prints placeholders.
    pub secrets: BTreeMap<String, SecretValue>,
}

/// What a runtime sees.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub tasks: Vec<Task>,
    /// Nodes that take new tasks.
    pub nodes: Vec<NodeInfo>,
    /// Nodes being drained: they take no new tasks, and the service tasks
    /// they run are replaced elsewhere.
    pub draining: std::collections::BTreeSet<String>,
}

/// A failure of the runtime, with enough context to act on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RuntimeError {
    pub message: String,
    /// The task concerned, when there is one.
    pub task: Option<String>,
}

impl RuntimeError {
    pub fn new(message: impl Into<String>) -> Self {
        RuntimeError {
            message: message.into(),
            task: None,
        }
    }
}

/// A place tasks run.
/// Futures are Send so that apply can run service changes concurrently on
/// a multi-threaded executor.
pub trait Runtime {
    /// Every task this runtime owns (live and stopped) and its nodes.
    fn observe(
        &self,
    ) -> impl std::future::Future<Output = Result<Observation, RuntimeError>> + Send;
    /// Start a task; returns once its containers are started (or it failed
    /// to start, which `observe` then shows as a stopped task).
    fn start(
        &self,
        launch: Launch,
    ) -> impl std::future::Future<Output = Result<(), RuntimeError>> + Send;
    /// Stop a task (SIGTERM, then SIGKILL after each container's
    /// stopTimeout) and remove it.
    fn stop(
        &self,
        task_id: &str,
        reason: &str,
    ) -> impl std::future::Future<Output = Result<(), RuntimeError>> + Send;
    /// Remove what is left of a task that stopped by itself.
    fn remove(
        &self,
        task_id: &str,
    ) -> impl std::future::Future<Output = Result<(), RuntimeError>> + Send;
    /// Stop every container of a task that failed, keeping them for their
    /// logs and status until the task is removed.
    fn halt(
        &self,
        task_id: &str,
    ) -> impl std::future::Future<Output = Result<(), RuntimeError>> + Send;
    /// Take tasks out of traffic before they stop: their load balancer
    /// targets get no new requests and their DNS records go; returns once
    /// the requests they had in flight finished or their service's
    /// deregistration delay passed. A runtime that routes no traffic has
    /// nothing to do.
    fn deregister(
        &self,
        task_ids: &[String],
    ) -> impl std::future::Future<Output = Result<(), RuntimeError>> + Send {
        let _ = task_ids;
        async { Ok(()) }
    }
    /// What the plan can warn of before tasks start here: an image the
    /// node lacks and cannot pull, a static host port something else
    /// holds. A runtime that cannot look says nothing.
    fn preflight(
        &self,
        starts: &[Preflight],
    ) -> impl std::future::Future<Output = Vec<String>> + Send {
        let _ = starts;
        async { Vec::new() }
    }
}

/// What a plan starts for one resource, as [`Runtime::preflight`] checks
/// it.
#[derive(Debug, Clone, PartialEq)]
pub struct Preflight {
    /// The plan's address of the resource (`Service/cluster/name`).
    pub address: String,
    pub images: Vec<String>,
    /// Static host ports with their protocols.
    pub host_ports: Vec<(u16, crate::manifest::task_definition::Protocol)>,
}

impl Preflight {
    /// What `plan` starts: per service change that starts tasks, the
    /// images and static host ports of the task definition it runs.
    pub fn of(plan: &crate::plan::Plan, desired: &crate::model::DesiredState) -> Vec<Preflight> {
        plan.changes()
            .filter(|c| c.tasks.as_ref().is_some_and(|t| !t.start.is_empty()))
            .filter_map(|c| {
                let svc = desired
                    .services
                    .values()
                    .find(|s| s.key.name == c.name && Some(&s.key.cluster) == c.cluster.as_ref())?;
                // A pinned earlier revision is not the source's spec:
                // nothing here says what it runs.
                let td = desired.task_definitions.get(&svc.spec.task_definition)?;
                let mut images: Vec<String> = td
                    .container_definitions
                    .iter()
                    .map(|c| c.image.clone())
                    .collect();
                images.sort();
                images.dedup();
                Some(Preflight {
                    address: c.address.clone(),
                    images,
                    host_ports: crate::model::reservation(td).2,
                })
            })
            .collect()
    }
}
