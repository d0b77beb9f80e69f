//! Starting a task: its containers are created, then started in dependency
//! order, each after its `dependsOn` conditions are met (or its
//! startTimeout runs out). Separate from the create body because it is
//! about order and waiting, not about what a container is.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::MountType;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, StopContainerOptionsBuilder,
};

use super::create::DynamicPorts;
use super::{Call, DockerRuntime};
use crate::manifest::task_definition::{ContainerDefinition, DependencyCondition};
use crate::runtime::Launch;

impl DockerRuntime {
    /// Start the task's containers in dependency order, waiting for each
    /// dependency's condition.
    async fn start_in_order(
        &self,
        l: &Launch,
        ids: &HashMap<String, String>,
    ) -> Result<(), String> {
        let order = start_order(&l.spec.container_definitions);
        for c in order {
            let deadline = c
                .start_timeout
                .map(|s| Instant::now() + Duration::from_secs(u64::from(s)));
            for d in &c.depends_on {
                let dep_id = &ids[&d.container_name];
                loop {
                    let inspected = self
                        .docker
                        .inspect_container(dep_id, None::<InspectContainerOptions>);
                    let state = self
                        .timed(Call::Inspect, inspected)
                        .await
                        .map_err(|e| format!("inspecting `{}`: {e}", d.container_name))?
                        .state
                        .unwrap_or_default();
                    let running = state.running.unwrap_or(false);
                    let exited = !running
                        && state
                            .finished_at
                            .as_deref()
                            .is_some_and(|f| !f.starts_with("0001"));
                    let code = state.exit_code.unwrap_or(0);
                    let healthy = state
                        .health
                        .and_then(|h| h.status)
                        .is_some_and(|s| s.to_string() == "healthy");
                    let met = match d.condition {
                        DependencyCondition::Start => running || exited,
                        DependencyCondition::Complete => exited,
                        DependencyCondition::Success => {
                            if exited && code != 0 {
                                return Err(format!(
                                    "dependency `{}` of `{}` exited with {code}, not 0 (condition SUCCESS)",
                                    d.container_name, c.name
                                ));
                            }
                            exited
                        }
                        DependencyCondition::Healthy => healthy,
                    };
                    if met {
                        break;
                    }
                    if deadline.is_some_and(|t| Instant::now() >= t) {
                        return Err(format!(
                            "container `{}` gave up after startTimeout {}s waiting for `{}` to be {:?}",
                            c.name,
                            c.start_timeout.unwrap_or(0),
                            d.container_name,
                            d.condition
                        ));
                    }
                    if exited
                        && matches!(
                            d.condition,
                            DependencyCondition::Start | DependencyCondition::Healthy
                        )
                    {
                        return Err(format!(
                            "dependency `{}` of `{}` exited before reaching {:?}",
                            d.container_name, c.name, d.condition
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            let started = self.docker.start_container(
                &ids[&c.name],
                None::<bollard::query_parameters::StartContainerOptions>,
            );
            self.timed(Call::Start, started)
                .await
                .map_err(|e| format!("starting container `{}`: {e}", c.name))?;
        }
        Ok(())
    }

    /// Create the task's containers and start them in dependency order.
    /// A container that fails to create removes the task; one that fails
    /// to start stops what did start and keeps the containers for their
    /// logs until the next apply removes them.
    pub(super) async fn create_and_start(
        &self,
        l: &Launch,
        network: Option<&str>,
        volumes: &HashMap<String, (MountType, String)>,
        dynamic: &DynamicPorts,
    ) -> Result<(), String> {
        let mut ids = HashMap::new();
        for c in start_order(&l.spec.container_definitions) {
            let body = self.create_body(l, c, network, volumes, dynamic);
            let created = self.docker.create_container(
                Some(
                    CreateContainerOptionsBuilder::default()
                        .name(&Self::container_name(l, c))
                        .build(),
                ),
                body,
            );
            let created = self.timed(Call::Create, created).await;
            match created {
                Ok(r) => {
                    ids.insert(c.name.clone(), r.id);
                }
                Err(e) => {
                    let existing = self.list(Some(&l.identity.id)).await.unwrap_or_default();
                    let _ = self.cleanup(&l.identity.id, &existing, false).await;
                    return Err(format!("creating container `{}`: {e}", c.name));
                }
            }
        }
        if let Err(e) = self.start_in_order(l, &ids).await {
            let existing = self.list(Some(&l.identity.id)).await.unwrap_or_default();
            for c in &existing {
                if let Some(id) = &c.id {
                    let stopped = self.docker.stop_container(
                        id,
                        Some(StopContainerOptionsBuilder::default().t(2).build()),
                    );
                    let _ = self.timed(Call::Stop, stopped).await;
                }
            }
            return Err(format!("TaskFailedToStart: {e}"));
        }
        Ok(())
    }
}

/// Containers in an order that starts every dependency first (validation
/// rejects cycles; any left over start last).
fn start_order(cds: &[ContainerDefinition]) -> Vec<&ContainerDefinition> {
    let mut done: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    while out.len() < cds.len() {
        let before = out.len();
        for c in cds {
            if done.contains(&c.name.as_str()) {
                continue;
            }
            if c.depends_on.iter().all(|d| {
                done.contains(&d.container_name.as_str())
                    || !cds.iter().any(|x| x.name == d.container_name)
            }) {
                done.push(&c.name);
                out.push(c);
            }
        }
        if out.len() == before {
            for c in cds {
                if !done.contains(&c.name.as_str()) {
                    done.push(&c.name);
                    out.push(c);
                }
            }
        }
    }
    out
}
