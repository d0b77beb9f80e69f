//! Cleanup: stopping and removing a task's containers, its network and its
//! task-scoped volumes. Separate because every path that ends a task, or
//! undoes a failed start, goes through it.

use std::collections::HashMap;

use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};
use bollard::query_parameters::{RemoveContainerOptionsBuilder, StopContainerOptionsBuilder};

use super::{err, label, Call, DockerRuntime};
use crate::runtime::RuntimeError;

impl DockerRuntime {
    /// Remove containers (forcibly: running ones too), keeping volumes.
    pub(super) async fn remove_containers(
        &self,
        containers: &[ContainerSummary],
    ) -> Result<(), RuntimeError> {
        for c in containers {
            if let Some(id) = &c.id {
                let removed = self.docker.remove_container(
                    id,
                    Some(
                        RemoveContainerOptionsBuilder::default()
                            .force(true)
                            .v(false)
                            .build(),
                    ),
                );
                if let Err(e) = self.timed(Call::Remove, removed).await {
                    if !is_not_found(&e) {
                        return Err(err("removing a container", e));
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) async fn cleanup(
        &self,
        task_id: &str,
        containers: &[ContainerSummary],
        stop_first: bool,
    ) -> Result<(), RuntimeError> {
        if stop_first {
            // Reverse dependency order is approximated by stopping
            // non-essential containers last: Docker stops in parallel and
            // each container gets its own stopTimeout.
            let mut stops = Vec::new();
            for c in containers {
                let running = matches!(
                    c.state,
                    Some(ContainerSummaryStateEnum::RUNNING)
                        | Some(ContainerSummaryStateEnum::RESTARTING)
                );
                if running {
                    if let Some(id) = &c.id {
                        stops.push(self.timed(
                            Call::Stop,
                            self.docker.stop_container(
                                id,
                                Some(StopContainerOptionsBuilder::default().build()),
                            ),
                        ));
                    }
                }
            }
            for r in futures_util::future::join_all(stops).await {
                if let Err(e) = r {
                    if !is_not_found(&e) {
                        return Err(err("stopping a container", e));
                    }
                }
            }
        }
        self.remove_containers(containers).await?;
        let _ = self
            .docker
            .remove_network(&Self::network_name(task_id))
            .await;
        // Task-scoped volumes go with the task.
        let filters: HashMap<&str, Vec<String>> =
            HashMap::from([("label", vec![format!("{}={task_id}", label::TASK)])]);
        if let Ok(v) = self
            .docker
            .list_volumes(Some(
                bollard::query_parameters::ListVolumesOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
        {
            for vol in v.volumes.unwrap_or_default() {
                let _ = self
                    .docker
                    .remove_volume(
                        &vol.name,
                        None::<bollard::query_parameters::RemoveVolumeOptions>,
                    )
                    .await;
            }
        }
        Ok(())
    }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 304,
            ..
        }
    )
}
