//! An in-process simulated runtime for property tests and scale
//! benchmarks: tasks start instantly and are healthy unless a failure is
//! injected.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Launch, Observation, Runtime, RuntimeError};
use crate::model::{Health, NodeInfo, Task, TaskStatus};

/// How a simulated task of a given configuration behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Starts and becomes healthy.
    Healthy,
    /// Stops before reaching RUNNING.
    FailsToStart,
    /// Runs, then fails its health checks.
    Unhealthy,
}

/// The simulation.
#[derive(Debug, Default)]
pub struct Sim {
    state: Mutex<SimState>,
}

#[derive(Debug, Default)]
struct SimState {
    tasks: Vec<Task>,
    nodes: Vec<NodeInfo>,
    clock: i64,
    behaviour: BTreeMap<String, Behaviour>,
    started: u64,
    stopped: u64,
}

impl Sim {
    pub fn new(nodes: Vec<NodeInfo>) -> Sim {
        let s = Sim::default();
        s.state.lock().unwrap().nodes = nodes;
        s
    }

    /// Tasks with configuration `config_hash` behave as `b` from now on.
    pub fn set_behaviour(&self, config_hash: &str, b: Behaviour) {
        self.state
            .lock()
            .unwrap()
            .behaviour
            .insert(config_hash.to_string(), b);
    }

    /// Replace the observed tasks wholesale (to model drift).
    pub fn set_tasks(&self, tasks: Vec<Task>) {
        self.state.lock().unwrap().tasks = tasks;
    }

    pub fn tasks(&self) -> Vec<Task> {
        self.state.lock().unwrap().tasks.clone()
    }

    /// Tasks started and stopped so far.
    pub fn counters(&self) -> (u64, u64) {
        let s = self.state.lock().unwrap();
        (s.started, s.stopped)
    }
}

impl Runtime for Sim {
    async fn observe(&self) -> Result<Observation, RuntimeError> {
        let mut s = self.state.lock().unwrap();
        s.clock += 1;
        Ok(Observation {
            tasks: s.tasks.clone(),
            nodes: s.nodes.clone(),
        })
    }

    async fn start(&self, l: Launch) -> Result<(), RuntimeError> {
        let mut s = self.state.lock().unwrap();
        let b = s
            .behaviour
            .get(&l.config_hash)
            .copied()
            .unwrap_or(Behaviour::Healthy);
        s.started += 1;
        let now = s.clock;
        let (status, health, code) = match b {
            Behaviour::Healthy => (TaskStatus::Running, Health::Healthy, None),
            Behaviour::FailsToStart => (
                TaskStatus::Stopped,
                Health::Unknown,
                Some("TaskFailedToStart".to_string()),
            ),
            Behaviour::Unhealthy => (TaskStatus::Running, Health::Unhealthy, None),
        };
        s.tasks.push(Task {
            id: l.id,
            cluster: l.cluster,
            service: l.service,
            family: l.family,
            revision: l.revision,
            config_hash: l.config_hash,
            node: l.node,
            last_status: status,
            health,
            started_at: Some(now),
            stopped_reason: code.as_ref().map(|_| "simulated start failure".into()),
            stop_code: code,
            bindings: Vec::new(),
        });
        Ok(())
    }

    async fn stop(&self, task_id: &str, _reason: &str) -> Result<(), RuntimeError> {
        let mut s = self.state.lock().unwrap();
        let before = s.tasks.len();
        s.tasks.retain(|t| t.id != task_id);
        if s.tasks.len() == before {
            return Err(RuntimeError::new(format!("no task {task_id}")));
        }
        s.stopped += 1;
        Ok(())
    }

    async fn remove(&self, task_id: &str) -> Result<(), RuntimeError> {
        self.state.lock().unwrap().tasks.retain(|t| t.id != task_id);
        Ok(())
    }

    async fn halt(&self, task_id: &str) -> Result<(), RuntimeError> {
        let mut s = self.state.lock().unwrap();
        if let Some(t) = s.tasks.iter_mut().find(|t| t.id == task_id) {
            if t.last_status != TaskStatus::Stopped {
                t.last_status = TaskStatus::Stopped;
                t.stop_code = Some("TaskFailedHealthChecks".into());
                t.stopped_reason = Some("Task failed container health checks".into());
            }
        }
        Ok(())
    }
}
