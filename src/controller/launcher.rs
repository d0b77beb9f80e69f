//! Nodes for managed scaling: each launched node is a `reconcile agent`
//! container on the controller's Docker engine, as the CapacityProvider's
//! nodeTemplate documents. There is no registry to pull an agent image
//! from, so the controller builds one from itself: its own executable and
//! the shared libraries it has loaded, imported as a root filesystem.
//!
//! Launched containers carry `reconcile.io/launched-by` (the controller's
//! data directory, digested) and `reconcile.io/provider`, so the controller
//! finds them again after a restart, and `reconcile.io/cluster`, like every
//! container it owns.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

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
        let exe = std::fs::read("/proc/self/exe").map_err(|e| err("reading the executable", e))?;
        let tag = &crate::model::digest(&sha_hex(&exe))[..12];
        let reference = format!("{IMAGE}:{tag}");
        if self.docker.inspect_image(&reference).await.is_err() {
            let tar = agent_rootfs(exe)?;
            let mut stream = self.docker.create_image(
                Some(
                    CreateImageOptionsBuilder::default()
                        .from_src("-")
                        .repo(IMAGE)
                        .tag(tag)
                        .build(),
                ),
                Some(bollard::body_full(tar.into())),
                None,
            );
            while let Some(r) = stream.next().await {
                r.map_err(|e| err("importing the agent image", e))?;
            }
        }
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
            env: Some(vec![
                "LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:/lib64:/usr/lib64"
                    .into(),
            ]),
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

fn sha_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A root filesystem (tar) holding the executable at `/reconcile` and the
/// shared libraries it needs at the paths the dynamic loader looks for
/// them, as `ldd` resolves them on this host (the loader included).
fn agent_rootfs(exe: Vec<u8>) -> Result<Vec<u8>, String> {
    // The executable's own path: `/proc/self/exe` would name ldd's.
    let me = std::env::current_exe().map_err(|e| err("finding the executable", e))?;
    let out = std::process::Command::new("ldd")
        .arg(&me)
        .output()
        .map_err(|e| err("running ldd to find the agent's libraries", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            match l.split_once("=>") {
                // `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)`
                Some((_, rest)) => rest.split_whitespace().next().map(str::to_string),
                // `/lib64/ld-linux-x86-64.so.2 (0x...)`
                None => l.split_whitespace().next().map(str::to_string),
            }
        })
        .filter(|p| p.starts_with('/'))
        .collect();
    libs.sort();
    libs.dedup();
    if libs.is_empty() {
        return Err(format!("ldd found no libraries for the agent: {text}"));
    }
    let mut tar = Tar::default();
    tar.file("reconcile", &exe, 0o755);
    tar.dir("tmp", 0o1777);
    for lib in &libs {
        // Read through symlinks: the file lands under the name looked up.
        let data = std::fs::read(lib).map_err(|e| err(&format!("reading `{lib}`"), e))?;
        tar.file(lib.trim_start_matches('/'), &data, 0o755);
    }
    Ok(tar.finish())
}

/// Just enough of a ustar writer for a flat set of files.
#[derive(Default)]
struct Tar {
    out: Vec<u8>,
    dirs: std::collections::BTreeSet<String>,
}

impl Tar {
    fn header(&mut self, path: &str, size: usize, mode: u32, kind: u8) {
        let mut h = [0u8; 512];
        let (prefix, name) = if path.len() > 100 {
            let cut = path[..path.len() - 100]
                .rfind('/')
                .or_else(|| path.find('/'))
                .unwrap_or(0);
            (&path[..cut], &path[cut + 1..])
        } else {
            ("", path)
        };
        h[..name.len().min(100)].copy_from_slice(&name.as_bytes()[..name.len().min(100)]);
        let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
            let s = format!("{v:0width$o}", width = len - 1);
            h[at..at + len - 1].copy_from_slice(s.as_bytes());
        };
        octal(&mut h, 100, 8, u64::from(mode));
        octal(&mut h, 108, 8, 0);
        octal(&mut h, 116, 8, 0);
        octal(&mut h, 124, 12, size as u64);
        octal(&mut h, 136, 12, 0);
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let p = prefix.as_bytes();
        h[345..345 + p.len().min(155)].copy_from_slice(&p[..p.len().min(155)]);
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.out.extend_from_slice(&h);
    }

    fn parents(&mut self, path: &str) {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let dir = &path[..at + i];
            if self.dirs.insert(dir.to_string()) {
                self.header(&format!("{dir}/"), 0, 0o755, b'5');
            }
            at += i + 1;
        }
    }

    fn dir(&mut self, path: &str, mode: u32) {
        self.parents(path);
        if self.dirs.insert(path.to_string()) {
            self.header(&format!("{path}/"), 0, mode, b'5');
        }
    }

    fn file(&mut self, path: &str, data: &[u8], mode: u32) {
        self.parents(path);
        self.header(path, data.len(), mode, b'0');
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.extend(std::iter::repeat_n(0u8, 1024));
        self.out
    }
}
