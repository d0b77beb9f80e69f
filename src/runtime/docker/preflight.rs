//! What `plan` warns of before a task starts on this engine: an image the
//! engine lacks and whose registry does not answer, and a static host
//! port that something other than this source's tasks holds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{start_failure, tasks_from_containers, DockerRuntime};
use crate::manifest::task_definition::Protocol;
use crate::runtime::{ports, Preflight};

/// How long a registry has to answer whether it has an image.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(5);

impl DockerRuntime {
    pub(super) async fn warnings(&self, starts: &[Preflight]) -> Vec<String> {
        let mut out = Vec::new();
        let mut by_image: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for s in starts {
            for i in &s.images {
                by_image.entry(i).or_default().push(&s.address);
            }
        }
        // Registries are asked together, so many absent images cost one
        // timeout, not one each.
        let asked = by_image.iter().map(|(image, addresses)| async move {
            if self.docker.inspect_image(image).await.is_ok() {
                return None;
            }
            let asked = self.docker.inspect_registry_image(image, None);
            let why = match tokio::time::timeout(REGISTRY_TIMEOUT, asked).await {
                Ok(Ok(_)) => return None,
                Ok(Err(e)) => start_failure::engine_detail(&e.to_string()),
                Err(_) => format!("no answer within {}s", REGISTRY_TIMEOUT.as_secs()),
            };
            Some(format!(
                "{}: image `{image}` is not on this node and its registry cannot provide it \
                 ({why}): its tasks cannot start until it is built or pulled here",
                addresses.join(", ")
            ))
        });
        out.extend(
            futures_util::future::join_all(asked)
                .await
                .into_iter()
                .flatten(),
        );
        // A probe of this host says nothing of a remote engine's.
        if !self.local {
            return out;
        }
        let ours: BTreeSet<(u16, Protocol)> = match self.list(None).await {
            Ok(cs) => tasks_from_containers(&cs)
                .iter()
                .filter(|t| t.is_live())
                .flat_map(|t| t.bindings.iter().map(|b| (b.host_port, b.protocol)))
                .collect(),
            Err(_) => return out,
        };
        for s in starts {
            for (port, protocol) in &s.host_ports {
                if ours.contains(&(*port, *protocol)) || !ports::in_use(*protocol, *port) {
                    continue;
                }
                let p = match protocol {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                };
                out.push(format!(
                    "{}: host port {port}/{p} is already in use on this host, not by a task of \
                     this source: its tasks cannot start here until it is freed",
                    s.address
                ));
            }
        }
        out
    }
}
