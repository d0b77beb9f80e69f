//! The fleet as a [`Runtime`]: a start assigns the task to the node the
//! plan chose (the agent runs it), a stop unassigns it and waits until the
//! node no longer reports it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::store::AssignmentRecord;
use super::Controller;
use crate::plan;
use crate::runtime::{Launch, Observation, Runtime, RuntimeError};
use crate::secrets::{Reference, Resolver, SecretValue};
use crate::wire::{Assignment, NodeStatus};

/// Values of the references of `spec` the controller resolves (bare names,
/// from its store); `node:` references are left to the agent. A reference
/// that fails is left out: the agent cannot start the task without it, and
/// the next plan reports why.
pub(super) fn resolve_secrets(
    resolver: &Resolver,
    spec: &crate::manifest::TaskDefinitionSpec,
) -> BTreeMap<String, String> {
    spec.container_definitions
        .iter()
        .flat_map(|c| c.secrets.iter())
        .filter_map(|s| match resolver.resolve_for_launch(&s.value_from) {
            Ok(Some(v)) => Some((s.value_from.clone(), v.expose().to_string())),
            _ => None,
        })
        .collect()
}

/// The `node:` references of `spec`, for the agent to read on its node.
pub(super) fn node_secrets(spec: &crate::manifest::TaskDefinitionSpec) -> Vec<String> {
    let mut refs: Vec<String> = spec
        .container_definitions
        .iter()
        .flat_map(|c| c.secrets.iter())
        .filter(|s| matches!(Reference::parse(&s.value_from), Reference::Node(_)))
        .map(|s| s.value_from.clone())
        .collect();
    refs.sort();
    refs.dedup();
    refs
}

/// The fleet as a [`Runtime`]: starting a task assigns it to a node.
pub(super) struct Fleet {
    pub(super) controller: Arc<Controller>,
}

impl Fleet {
    /// Assign a task to its node, which must be active: stored first, then
    /// served.
    pub(super) fn assign(&self, record: AssignmentRecord) -> Result<(), RuntimeError> {
        let c = &self.controller;
        let mut s = c.members();
        match s.nodes.get(&record.node) {
            Some(n) if n.record.status == NodeStatus::Active => {}
            _ => {
                return Err(RuntimeError {
                    message: format!("node `{}` is not active", record.node),
                    task: Some(record.task.identity.id),
                })
            }
        }
        c.db.assign(&[&record], &[])
            .map_err(|e| RuntimeError::new(e.to_string()))?;
        s.assignments
            .insert(record.task.identity.id.clone(), record);
        drop(s);
        c.assignments_changed();
        Ok(())
    }

    pub(super) fn unassign(&self, task_id: &str) -> Result<(), RuntimeError> {
        let c = &self.controller;
        let mut s = c.members();
        if s.assignments.contains_key(task_id) {
            c.db.assign(&[], &[task_id])
                .map_err(|e| RuntimeError::new(e.to_string()))?;
            s.assignments.remove(task_id);
            drop(s);
            c.drained(task_id);
            c.assignments_changed();
        }
        Ok(())
    }
}

impl Runtime for Fleet {
    async fn observe(&self) -> Result<Observation, RuntimeError> {
        Ok(self.controller.observation())
    }

    async fn start(&self, launch: Launch) -> Result<(), RuntimeError> {
        let record = AssignmentRecord {
            node: launch.node.clone(),
            task: Assignment {
                identity: launch.identity,
                node_secrets: node_secrets(&launch.spec),
                spec: launch.spec,
                reported: false,
                stop: false,
                secrets: launch
                    .secrets
                    .iter()
                    .map(|(k, v): (&String, &SecretValue)| (k.clone(), v.expose().to_string()))
                    .collect(),
            },
        };
        self.assign(record)
    }

    async fn stop(&self, task_id: &str, _reason: &str) -> Result<(), RuntimeError> {
        self.unassign_and_wait(task_id).await
    }

    async fn remove(&self, task_id: &str) -> Result<(), RuntimeError> {
        self.unassign(task_id)
    }

    async fn halt(&self, task_id: &str) -> Result<(), RuntimeError> {
        self.unassign_and_wait(task_id).await
    }

    async fn deregister(&self, task_ids: &[String]) -> Result<(), RuntimeError> {
        self.controller.drain(task_ids).await;
        Ok(())
    }
}

/// How long a stop may take on an agent: the longest stopTimeout ECS
/// allows, plus heartbeats to learn of it and report it.
pub(super) const STOP_WAIT: Duration = Duration::from_secs(150);

impl Fleet {
    /// Unassign a task and return once its node no longer reports it
    /// running (or the node is lost or gone): a rollout step's stops must
    /// be done before its starts, or old and new tasks overlap beyond
    /// maximumPercent.
    async fn unassign_and_wait(&self, task_id: &str) -> Result<(), RuntimeError> {
        let node = self
            .controller
            .members()
            .assignments
            .get(task_id)
            .map(|a| a.node.clone());
        self.unassign(task_id)?;
        let Some(node) = node else {
            return Ok(());
        };
        let deadline = Instant::now() + STOP_WAIT;
        let mut reports = self.controller.reported.subscribe();
        loop {
            reports.borrow_and_update();
            {
                let s = self.controller.members();
                match s.nodes.get(&node) {
                    Some(n) if n.record.status != NodeStatus::Lost => {
                        if !n
                            .reported
                            .iter()
                            .any(|t| t.identity.id == task_id && t.is_live())
                        {
                            return Ok(());
                        }
                    }
                    _ => return Ok(()),
                }
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError {
                    message: format!(
                        "node `{node}` still runs task {} {}s after it was told to stop it",
                        plan::short(task_id),
                        STOP_WAIT.as_secs()
                    ),
                    task: Some(task_id.to_string()),
                });
            }
            // The next heartbeat of any node, or a second: a node that
            // stopped heartbeating is found LOST by the deadline checks.
            let _ = tokio::time::timeout(Duration::from_secs(1), reports.changed()).await;
        }
    }
}
