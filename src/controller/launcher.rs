//! Nodes for managed scaling: each launched node is a `reconcile agent`
//! container on the controller's Docker engine, as the CapacityProvider's
//! nodeTemplate documents. There is no registry to pull an agent image
//! from, so the controller builds one from itself ([`crate::self_image`]).
//!
//! Launched containers carry `reconcile.io/launched-by` (the controller's
//! data directory, digested) and `reconcile.io/provider`, so the controller
//! finds them again after a restart, and `reconcile.io/cluster`, like every
//! container it owns.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;

use crate::runtime::docker::labelled;

pub const LAUNCHED_BY: &str = "reconcile.io/launched-by";
pub const PROVIDER: &str = "reconcile.io/provider";
const NODE: &str = "reconcile.io/node";
const CLUSTER: &str = "reconcile.io/cluster";
const IMAGE: &str = "reconcile-agent";

/// A node launched earlier, found by its labels.
#[derive(Debug, Clone)]
pub struct Launched {
    pub name: String,
    pub provider: String,
    /// Unix seconds.
    pub created: i64,
}

pub struct Launcher {
    docker: Docker,
    owner: String,
    controller_url: String,
    /// The join token, written for the agents (owner-only) and mounted
    /// read-only: `docker inspect` of a node shows the path, not the token.
    token_file: PathBuf,
    /// Whom the launched agents trust (`--ca-hash`, `--ca-cert` or
    /// `--plain-http`).
    trust: crate::tls::Trust,
    image: tokio::sync::Mutex<Option<String>>,
    /// CPU units and MiB of the engine: what a launched node offers.
    pub engine: (u32, u32),
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Where a launched agent finds the join token.
const TOKEN_PATH: &str = "/run/reconcile/join-token";

/// Write `text` to a file only its owner can read (replacing it).
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        crate::fsutil::private_dir(dir)?;
    }
    crate::fsutil::write_private(path, text.as_bytes())
}

impl Launcher {
    pub async fn connect(
        owner: String,
        controller_url: String,
        join_token: &str,
        token_file: PathBuf,
        trust: crate::tls::Trust,
    ) -> Result<Launcher, String> {
        let (docker, info) = crate::runtime::docker::engine()
            .await
            .map_err(|e| err("launching nodes", e.message))?;
        let engine = crate::runtime::docker::resources(&info);
        write_private(&token_file, join_token)
            .map_err(|e| err(&format!("writing `{}`", token_file.display()), e))?;
        Ok(Launcher {
            docker,
            owner,
            controller_url,
            token_file,
            trust,
            image: tokio::sync::Mutex::new(None),
            engine,
        })
    }

    /// The agent image, built once per controller process.
    async fn image(&self) -> Result<String, String> {
        let mut cached = self.image.lock().await;
        if let Some(i) = cached.as_ref() {
            return Ok(i.clone());
        }
        let reference = crate::self_image::build(&self.docker, IMAGE).await?;
        *cached = Some(reference.clone());
        Ok(reference)
    }

    /// Start an agent container for a new node of `provider`.
    pub async fn launch(
        &self,
        cluster: &str,
        provider: &str,
        name: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        let image = self.image().await?;
        let mut cmd = vec![
            "/reconcile".to_string(),
            "agent".into(),
            "--controller".into(),
            self.controller_url.clone(),
            "--cluster".into(),
            cluster.into(),
            "--name".into(),
            name.into(),
        ];
        for (k, v) in attributes {
            cmd.push("--attribute".into());
            cmd.push(format!("{k}={v}"));
        }
        let mut binds = vec![
            "/var/run/docker.sock:/var/run/docker.sock".to_string(),
            format!("{}:{TOKEN_PATH}:ro", self.token_file.display()),
        ];
        cmd.push("--token-file".into());
        cmd.push(TOKEN_PATH.into());
        // In the container's own layer: kept across its restarts, gone
        // with it.
        cmd.push("--credential-file".into());
        cmd.push("/var/lib/reconcile/credential.json".into());
        if let Some(hash) = &self.trust.ca_hash {
            cmd.push("--ca-hash".into());
            cmd.push(hash.clone());
        } else if let Some(ca) = &self.trust.ca_cert {
            binds.push(format!("{}:/ca.pem:ro", ca.display()));
            cmd.push("--ca-cert".into());
            cmd.push("/ca.pem".into());
        }
        if self.trust.plain_http {
            cmd.push("--plain-http".into());
        }
        let labels = HashMap::from([
            (LAUNCHED_BY.to_string(), self.owner.clone()),
            (PROVIDER.to_string(), provider.to_string()),
            (NODE.to_string(), name.to_string()),
            (CLUSTER.to_string(), cluster.to_string()),
        ]);
        let body = ContainerCreateBody {
            image: Some(image),
            cmd: Some(cmd),
            // The token reaches the agent in a mounted file: neither the
            // command line nor the environment (both in `docker inspect`).
            env: Some(vec![format!(
                "LD_LIBRARY_PATH={}",
                crate::self_image::LIBRARY_PATH
            )]),
            labels: Some(labels),
            host_config: Some(HostConfig {
                binds: Some(binds),
                network_mode: Some("host".into()),
                restart_policy: Some(bollard::models::RestartPolicy {
                    name: Some(bollard::models::RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let container = format!("reconcile-node-{name}");
        self.docker
            .create_container(
                Some(
                    CreateContainerOptionsBuilder::default()
                        .name(&container)
                        .build(),
                ),
                body,
            )
            .await
            .map_err(|e| err(&format!("creating node {name}"), e))?;
        self.docker
            .start_container(
                &container,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(|e| err(&format!("starting node {name}"), e))
    }

    /// Remove a launched node's agent container.
    pub async fn retire(&self, name: &str) -> Result<(), String> {
        self.docker
            .remove_container(
                &format!("reconcile-node-{name}"),
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await
            .map_err(|e| err(&format!("removing node {name}"), e))
    }

    /// Nodes this controller launched that still exist.
    pub async fn launched(&self) -> Result<Vec<Launched>, String> {
        let list = labelled(&self.docker, vec![format!("{LAUNCHED_BY}={}", self.owner)])
            .await
            .map_err(|e| err("listing launched nodes", e))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                Some(Launched {
                    name: labels.get(NODE)?.clone(),
                    provider: labels.get(PROVIDER)?.clone(),
                    created: c.created.unwrap_or(0),
                })
            })
            .collect())
    }
}
