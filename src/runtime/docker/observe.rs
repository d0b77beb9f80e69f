//! Observation: tasks rebuilt from the containers one list call returns,
//! by their labels, with status, health and exit codes read from Docker's
//! status text. Separate because it is pure: it reads container summaries
//! and never calls Docker.

use std::collections::BTreeMap;

use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};

use super::label;
use crate::manifest::task_definition::Protocol;
use crate::model::{ContainerExit, Health, NetworkBinding, Task, TaskIdentity, TaskStatus};

/// Health from the status text of `docker ps` ("Up 3 seconds (healthy)"),
/// which the list call returns on every API version.
pub(super) fn health_of(status: &str) -> Option<Health> {
    if status.contains("(healthy)") {
        Some(Health::Healthy)
    } else if status.contains("(unhealthy)") {
        Some(Health::Unhealthy)
    } else if status.contains("(health: starting)") {
        Some(Health::Unknown)
    } else {
        None
    }
}

/// Exit code from "Exited (137) 2 seconds ago".
pub(super) fn exit_code_of(status: &str) -> Option<i64> {
    let rest = status.strip_prefix("Exited (")?;
    rest.split(')').next()?.parse().ok()
}

/// Rebuild tasks from their containers.
pub fn tasks_from_containers(containers: &[ContainerSummary]) -> Vec<Task> {
    let mut by_task: BTreeMap<String, Vec<&ContainerSummary>> = BTreeMap::new();
    for c in containers {
        if let Some(t) = c.labels.as_ref().and_then(|l| l.get(label::TASK)) {
            by_task.entry(t.clone()).or_default().push(c);
        }
    }
    let mut tasks = Vec::new();
    for (id, cs) in by_task {
        let l = cs[0].labels.clone().unwrap_or_default();
        let get = |k: &str| l.get(k).cloned().unwrap_or_default();
        let mut status = TaskStatus::Running;
        let mut stop_code = None;
        let mut reason = None;
        let mut any_unhealthy = false;
        let mut all_healthy = true;
        let mut any_check = false;
        let mut created_only = false;
        let mut bindings = Vec::new();
        let mut exits = Vec::new();
        for c in &cs {
            let cl = c.labels.clone().unwrap_or_default();
            let name = cl.get(label::CONTAINER).cloned().unwrap_or_default();
            let essential = cl.get(label::ESSENTIAL).is_none_or(|v| v == "true");
            let has_check = cl.get(label::HEALTH_CHECK).is_some_and(|v| v == "true");
            let text = c.status.clone().unwrap_or_default();
            match c.state {
                Some(ContainerSummaryStateEnum::RUNNING)
                | Some(ContainerSummaryStateEnum::RESTARTING) => {
                    if essential && has_check {
                        any_check = true;
                        match health_of(&text) {
                            Some(Health::Healthy) => {}
                            Some(Health::Unhealthy) => {
                                any_unhealthy = true;
                                all_healthy = false;
                            }
                            _ => all_healthy = false,
                        }
                    }
                }
                Some(ContainerSummaryStateEnum::CREATED) => {
                    created_only = true;
                    if status == TaskStatus::Running {
                        status = TaskStatus::Pending;
                    }
                }
                _ => {
                    // exited, dead, removing
                    let code = exit_code_of(&text);
                    exits.push(ContainerExit {
                        name: name.clone(),
                        exit_code: code,
                        essential,
                    });
                    if essential && status != TaskStatus::Stopped {
                        status = TaskStatus::Stopped;
                        stop_code = Some("EssentialContainerExited".to_string());
                        reason = Some(format!(
                            "Essential container in task exited: `{name}` {}",
                            code.map(|c| format!("exit code {c}"))
                                .unwrap_or_else(|| text.clone())
                        ));
                    }
                }
            }
            for p in c.ports.iter().flatten() {
                if let Some(public) = p.public_port {
                    let protocol = match p.typ.map(|t| t.to_string()).as_deref() {
                        Some("udp") => Protocol::Udp,
                        _ => Protocol::Tcp,
                    };
                    let b = NetworkBinding {
                        container_name: name.clone(),
                        container_port: p.private_port,
                        host_port: public,
                        protocol,
                    };
                    if !bindings.contains(&b) {
                        bindings.push(b);
                    }
                }
            }
        }
        let _ = created_only;
        bindings.sort();
        exits.sort_by(|a, b| a.name.cmp(&b.name));
        let health = if any_unhealthy {
            Health::Unhealthy
        } else if any_check && all_healthy {
            Health::Healthy
        } else {
            Health::Unknown
        };
        tasks.push(Task {
            identity: TaskIdentity {
                id,
                cluster: get(label::CLUSTER),
                service: l.get(label::SERVICE).cloned(),
                family: get(label::FAMILY),
                revision: get(label::REVISION).parse().unwrap_or(0),
                config_hash: get(label::CONFIG),
                started_by: l.get(label::STARTED_BY).cloned(),
            },
            node: get(label::NODE),
            last_status: status,
            health,
            started_at: cs.iter().filter_map(|c| c.created).min(),
            stop_code,
            stopped_reason: reason,
            bindings,
            target_health: None,
            exits,
            stopped_at: None,
        });
    }
    tasks
}
