//! Standalone mode's listeners. `apply` exits, so something else must
//! keep serving them: a container per source, `reconcile-traffic-<id>`,
//! running this program (`reconcile serve-traffic`) on the host network
//! with the Docker socket and the state directory mounted. It serves what
//! an agent serves ([`crate::serving::Serving`], without DNS) for the one
//! node `local`, computed from the source's store and its containers.
//!
//! The apply and the container talk through two files in the state
//! directory: the container writes its status (target health per task,
//! requests in flight, the drain generation it applied, a heartbeat), and
//! the apply writes which tasks to drain before it stops them
//! ([`StandaloneRuntime`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use serde::{Deserialize, Serialize};

use super::local::StateDir;
use crate::model::{TargetHealth, Task, TaskStatus};
use crate::runtime::docker::{label, DockerRuntime, Endpoint};
use crate::runtime::{Launch, Observation, Runtime, RuntimeError};
use crate::serving::Serving;
use crate::store::{FileStore, Stored};
use crate::traffic;

/// The label that tells the traffic container from task containers.
pub const ROLE: &str = "reconcile.io/role";
const ROLE_TRAFFIC: &str = "traffic";
const IMAGE: &str = "reconcile-traffic";
/// A status older than this is from a container that no longer runs.
const STALE: Duration = Duration::from_secs(3);
/// How often the container looks at the store and the containers.
const TICK: Duration = Duration::from_millis(300);

/// The traffic container of source `id`.
pub fn container_name(id: &str) -> String {
    format!("reconcile-traffic-{id}")
}

/// The file the traffic container writes.
pub fn status_path(state: &StateDir, id: &str) -> PathBuf {
    state.path().join(format!("traffic-{id}.status.json"))
}

/// The file the apply writes the tasks to drain to.
pub fn drain_path(state: &StateDir, id: &str) -> PathBuf {
    state.path().join(format!("traffic-{id}.drain.json"))
}

/// Tasks to take out of traffic; a new generation for every request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Drain {
    pub generation: u64,
    pub tasks: BTreeSet<String>,
}

/// What the traffic container serves, as it last wrote it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Unix milliseconds of the write.
    pub heartbeat: u64,
    /// The generation of the drain request it serves.
    pub drain_generation: u64,
    /// Target health by task (the worst of its listeners').
    pub target_health: BTreeMap<String, TargetHealth>,
    /// Requests in flight by target task.
    pub inflight: BTreeMap<String, u64>,
    /// The listener ports served.
    pub listeners: Vec<u16>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    crate::fsutil::write_private(path, &bytes).map_err(|e| format!("`{}`: {e}", path.display()))
}

/// The drain request after `old` that adds `ids`: tasks that no longer
/// exist (`live` is every task that does) are forgotten, so the set
/// stays small.
pub fn next_drain(old: &Drain, ids: &[String], live: &BTreeSet<String>) -> Drain {
    let mut tasks: BTreeSet<String> = old.tasks.intersection(live).cloned().collect();
    tasks.extend(ids.iter().cloned());
    Drain {
        generation: old.generation + 1,
        tasks,
    }
}

/// The tasks the traffic container of source `id` is asked to drain.
pub fn draining(state: &StateDir, id: &str) -> BTreeSet<String> {
    read::<Drain>(&drain_path(state, id))
        .map(|d| d.tasks)
        .unwrap_or_default()
}

/// Whether `status` comes from a container serving now.
pub fn fresh(status: &Status, now_ms: u64) -> bool {
    now_ms.saturating_sub(status.heartbeat) < STALE.as_millis() as u64
}

/// Whether the container serves drain `generation` and has no request
/// in flight to any of `ids`.
pub fn drained(status: &Status, generation: u64, ids: &[String]) -> bool {
    status.drain_generation >= generation
        && ids
            .iter()
            .all(|id| status.inflight.get(id).copied().unwrap_or(0) == 0)
}

/// Fold the target health of `status` into `tasks`, as an agent does
/// before it reports them. `checks`: whether a task has container checks.
pub fn fold(tasks: &mut [Task], status: &Status, checks: impl Fn(&Task) -> bool) {
    for t in tasks {
        if let Some(h) = status.target_health.get(&t.identity.id) {
            t.health = h.fold(t.health, checks(t));
            t.target_health = Some(*h);
        }
    }
}

/// Whether any service of `stored` has listeners.
pub fn has_listeners(stored: &Stored) -> bool {
    stored
        .services
        .values()
        .any(|s| !s.spec.load_balancers.is_empty())
}

/// Serve the listeners of source `id` until killed: the body of the
/// traffic container.
pub async fn serve(state: StateDir, id: String) -> Result<(), String> {
    let rt = DockerRuntime::connect(&id, "local")
        .await
        .map_err(|e| e.message)?;
    let store = state.store(&id);
    let (status_file, drain_file) = (status_path(&state, &id), drain_path(&state, &id));
    // Task host ports are published on every host address; listeners too.
    let mut serving = Serving::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), None);
    let mut checks_changed = serving.checks_changed();
    let mut served: Option<crate::wire::Traffic> = None;
    let mut generation = 0;
    tracing::info!("traffic: serving the listeners of source {id}");
    loop {
        let stored = FileStore::peek(&store).unwrap_or_else(|e| {
            tracing::warn!("traffic: reading `{}`: {e}", store.display());
            Stored::default()
        });
        let drain: Drain = read(&drain_file).unwrap_or_default();
        let mut tasks = match rt.observe().await {
            Ok(o) => o.tasks,
            Err(e) => {
                tracing::warn!("traffic: {}", e.message);
                tokio::time::sleep(TICK).await;
                continue;
            }
        };
        serving.fold(&mut tasks, |t| traffic::container_checks(&stored, t));
        let services: Vec<traffic::Service> = traffic::services_of(&stored)
            .into_values()
            .flatten()
            .collect();
        let node = traffic::Node {
            name: "local",
            address: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            tasks: &tasks,
        };
        let view = traffic::view(
            &services,
            &[node],
            "local",
            &|id| drain.tasks.contains(id),
            traffic::DEFAULT_DOMAIN,
            0,
        );
        // Serving applies each generation once: a new one per change.
        if served.as_ref() != Some(&view) {
            served = Some(view.clone());
            generation += 1;
            serving
                .apply(crate::wire::Traffic {
                    generation,
                    ..view.clone()
                })
                .await;
        }
        let status = Status {
            heartbeat: now_ms(),
            drain_generation: drain.generation,
            target_health: tasks
                .iter()
                .filter_map(|t| Some((t.identity.id.clone(), t.target_health?)))
                .collect(),
            inflight: serving.inflight(),
            listeners: view.listeners.iter().map(|l| l.port).collect(),
        };
        if let Err(e) = write(&status_file, &status) {
            tracing::warn!("traffic: writing the status: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = checks_changed.changed() => {}
        }
    }
}

/// How the traffic container reaches the engine this process uses.
#[derive(Debug, Default, PartialEq)]
struct EngineAccess {
    /// The engine's unix socket, mounted at the same path.
    socket: Option<String>,
    /// Other mounts (the TLS client certificates, read-only).
    binds: Vec<String>,
    env: Vec<String>,
}

/// A unix socket is mounted at its path; TCP (with its certificates for
/// TLS) is reached as it is from the host network; over ssh, the
/// container runs on the engine's own host and uses its default socket.
fn engine_access(endpoint: &Endpoint) -> EngineAccess {
    let socket = |path: &str| EngineAccess {
        socket: Some(path.to_string()),
        binds: Vec::new(),
        env: vec![format!("DOCKER_HOST=unix://{path}")],
    };
    match endpoint {
        Endpoint::Unix(s) => socket(s.strip_prefix("unix://").unwrap_or(s)),
        Endpoint::Ssh(_) => socket("/var/run/docker.sock"),
        Endpoint::Http(addr) => EngineAccess {
            env: vec![format!("DOCKER_HOST=tcp://{addr}")],
            ..Default::default()
        },
        Endpoint::Tls { addr, certs } => {
            let certs = certs.display();
            EngineAccess {
                socket: None,
                binds: vec![format!("{certs}:{certs}:ro")],
                env: vec![
                    format!("DOCKER_HOST=tcp://{addr}"),
                    "DOCKER_TLS_VERIFY=1".into(),
                    format!("DOCKER_CERT_PATH={certs}"),
                ],
            }
        }
    }
}

/// The uid:gid this process runs as, and the group of the Docker socket
/// `socket`: the container writes files the apply reads, and talks to the
/// engine.
fn user(socket: Option<&str>) -> (String, Option<String>) {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self").ok();
    let user = me.map_or_else(|| "0:0".into(), |m| format!("{}:{}", m.uid(), m.gid()));
    let group = socket
        .and_then(|s| std::fs::metadata(s).ok())
        .map(|m| m.gid().to_string());
    (user, group)
}

/// Make sure the traffic container of source `id` runs this program's
/// image, and wait (briefly) for its first status.
pub async fn ensure(docker: &Docker, state: &StateDir, id: &str) -> Result<(), String> {
    let image = crate::self_image::build(docker, IMAGE).await?;
    let name = container_name(id);
    if let Ok(c) = docker
        .inspect_container(
            &name,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
    {
        let old = c.config.and_then(|c| c.image);
        let running = c.state.and_then(|s| s.running).unwrap_or(false);
        if old.as_deref() == Some(&image) && running {
            return Ok(());
        }
        // Another binary (or stopped): replaced.
        remove(docker, state, id).await?;
        if let Some(old) = old.filter(|o| *o != image) {
            // Hundreds of MB for a debug build; the engine keeps it while
            // another source's container still runs it.
            let _ = docker
                .remove_image(
                    &old,
                    None::<bollard::query_parameters::RemoveImageOptions>,
                    None,
                )
                .await;
        }
    }
    let dir = std::fs::canonicalize(state.path())
        .map_err(|e| format!("`{}`: {e}", state.path().display()))?;
    let dir = dir.display().to_string();
    let access = engine_access(&Endpoint::from_process_env()?);
    let (user, socket_group) = user(access.socket.as_deref());
    let mut binds = vec![format!("{dir}:{dir}")];
    binds.extend(access.socket.map(|s| format!("{s}:{s}")));
    binds.extend(access.binds);
    let mut env = vec![format!(
        "LD_LIBRARY_PATH={}",
        crate::self_image::LIBRARY_PATH
    )];
    env.extend(access.env);
    let labels = std::collections::HashMap::from([
        (label::MANAGED.to_string(), "true".to_string()),
        (label::SOURCE.to_string(), id.to_string()),
        (ROLE.to_string(), ROLE_TRAFFIC.to_string()),
    ]);
    let body = ContainerCreateBody {
        image: Some(image),
        cmd: Some(vec![
            "/reconcile".into(),
            "serve-traffic".into(),
            "--state-dir".into(),
            dir.clone(),
            "--source-id".into(),
            id.into(),
        ]),
        env: Some(env),
        user: Some(user),
        labels: Some(labels),
        host_config: Some(HostConfig {
            binds: Some(binds),
            group_add: socket_group.map(|g| vec![g]),
            network_mode: Some("host".into()),
            restart_policy: Some(bollard::models::RestartPolicy {
                name: Some(bollard::models::RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await
        .map_err(|e| format!("creating the traffic container {name}: {e}"))?;
    docker
        .start_container(
            &name,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .map_err(|e| format!("starting the traffic container {name}: {e}"))?;
    tracing::info!("started the traffic container {name}");
    let status = status_path(state, id);
    let deadline = Instant::now() + Duration::from_secs(10);
    let started = now_ms();
    while Instant::now() < deadline {
        if read::<Status>(&status).is_some_and(|s| s.heartbeat >= started) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!("the traffic container {name} has not reported yet");
    Ok(())
}

/// Remove the traffic container of source `id`, if there is one, and
/// the files it shared with applies.
pub async fn remove(docker: &Docker, state: &StateDir, id: &str) -> Result<(), String> {
    let name = container_name(id);
    let _ = std::fs::remove_file(status_path(state, id));
    let _ = std::fs::remove_file(drain_path(state, id));
    match docker
        .remove_container(
            &name,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await
    {
        Ok(()) => {
            tracing::info!("removed the traffic container {name}");
            Ok(())
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(format!("removing the traffic container {name}: {e}")),
    }
}

/// The local engine as standalone apply sees it: Docker, plus the target
/// health the traffic container reports and draining through it.
pub struct StandaloneRuntime {
    pub docker: DockerRuntime,
    state: StateDir,
    id: String,
}

impl StandaloneRuntime {
    pub fn new(docker: DockerRuntime, state: StateDir, id: &str) -> StandaloneRuntime {
        StandaloneRuntime {
            docker,
            state,
            id: id.to_string(),
        }
    }

    /// The container's status, if it serves now.
    fn status(&self) -> Option<Status> {
        read::<Status>(&status_path(&self.state, &self.id)).filter(|s| fresh(s, now_ms()))
    }

    fn stored(&self) -> Stored {
        FileStore::peek(&self.state.store(&self.id)).unwrap_or_default()
    }
}

impl Runtime for StandaloneRuntime {
    async fn observe(&self) -> Result<Observation, RuntimeError> {
        let mut o = self.docker.observe().await?;
        if let Some(status) = self.status() {
            let stored = self.stored();
            fold(&mut o.tasks, &status, |t| {
                traffic::container_checks(&stored, t)
            });
        }
        Ok(o)
    }

    async fn start(&self, launch: Launch) -> Result<(), RuntimeError> {
        self.docker.start(launch).await
    }

    async fn stop(&self, task_id: &str, reason: &str) -> Result<(), RuntimeError> {
        self.docker.stop(task_id, reason).await
    }

    async fn remove(&self, task_id: &str) -> Result<(), RuntimeError> {
        self.docker.remove(task_id).await
    }

    async fn halt(&self, task_id: &str) -> Result<(), RuntimeError> {
        self.docker.halt(task_id).await
    }

    async fn deregister(&self, ids: &[String]) -> Result<(), RuntimeError> {
        if self.status().is_none() {
            return Ok(());
        }
        let stored = self.stored();
        let tasks = self.docker.observe().await?.tasks;
        // The longest deregistration delay of the ids' services.
        let delay = tasks
            .iter()
            .filter(|t| ids.contains(&t.identity.id))
            .filter_map(|t| {
                let key = format!("{}/{}", t.identity.cluster, t.identity.service.as_ref()?);
                stored.services.get(&key)
            })
            .flat_map(|s| &s.spec.load_balancers)
            .map(|l| l.deregistration_delay)
            .max();
        let Some(delay) = delay else { return Ok(()) };
        let live: BTreeSet<String> = tasks
            .iter()
            .filter(|t| t.last_status != TaskStatus::Stopped)
            .map(|t| t.identity.id.clone())
            .collect();
        let path = drain_path(&self.state, &self.id);
        let request = next_drain(&read(&path).unwrap_or_default(), ids, &live);
        write(&path, &request).map_err(RuntimeError::new)?;
        let deadline = Instant::now() + Duration::from_secs(delay.into());
        loop {
            match self.status() {
                // Gone: nothing serves the tasks any more.
                None => return Ok(()),
                Some(s) if drained(&s, request.generation, ids) => return Ok(()),
                Some(_) if Instant::now() >= deadline => {
                    tracing::warn!(
                        "deregistration delay of {delay} s passed with requests still in flight"
                    );
                    return Ok(());
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_reaches_the_engine_apply_uses() {
        let unix = |p: &str| EngineAccess {
            socket: Some(p.into()),
            binds: vec![],
            env: vec![format!("DOCKER_HOST=unix://{p}")],
        };
        assert_eq!(
            engine_access(&Endpoint::Unix("/var/run/docker.sock".into())),
            unix("/var/run/docker.sock")
        );
        assert_eq!(
            engine_access(&Endpoint::Unix("unix:///run/user/1000/docker.sock".into())),
            unix("/run/user/1000/docker.sock")
        );
        assert_eq!(
            engine_access(&Endpoint::Ssh("ssh://me@box".into())),
            unix("/var/run/docker.sock")
        );
        assert_eq!(
            engine_access(&Endpoint::Http("127.0.0.1:2375".into())),
            EngineAccess {
                env: vec!["DOCKER_HOST=tcp://127.0.0.1:2375".into()],
                ..Default::default()
            }
        );
        let tls = engine_access(&Endpoint::Tls {
            addr: "h:2376".into(),
            certs: "/etc/docker-certs".into(),
        });
        assert_eq!(tls.binds, ["/etc/docker-certs:/etc/docker-certs:ro"]);
        assert!(tls
            .env
            .contains(&"DOCKER_CERT_PATH=/etc/docker-certs".to_string()));
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_drain_request_adds_the_ids_and_forgets_tasks_that_are_gone() {
        let old = Drain {
            generation: 4,
            tasks: BTreeSet::from(["gone".to_string(), "still".to_string()]),
        };
        let live = BTreeSet::from(["still".to_string(), "new".to_string()]);
        let next = next_drain(&old, &ids(&["new"]), &live);
        assert_eq!(next.generation, 5);
        assert_eq!(next.tasks, BTreeSet::from(["new".into(), "still".into()]));
    }

    #[test]
    fn a_drain_is_done_once_its_generation_is_served_and_nothing_is_in_flight() {
        let mut s = Status {
            drain_generation: 4,
            inflight: BTreeMap::from([("t1".to_string(), 2), ("t2".to_string(), 0)]),
            ..Status::default()
        };
        assert!(
            !drained(&s, 5, &ids(&["t2"])),
            "generation 5 not served yet"
        );
        s.drain_generation = 5;
        assert!(drained(&s, 5, &ids(&["t2", "t3"])));
        assert!(!drained(&s, 5, &ids(&["t1"])), "t1 has requests in flight");
    }

    #[test]
    fn only_a_recent_status_counts() {
        let s = Status {
            heartbeat: 10_000,
            ..Status::default()
        };
        assert!(fresh(&s, 12_000));
        assert!(!fresh(&s, 13_500));
    }

    #[test]
    fn target_health_folds_into_the_tasks_it_names() {
        use crate::model::{Health, TaskIdentity};
        let task = |id: &str| Task {
            identity: TaskIdentity {
                id: id.into(),
                cluster: "c".into(),
                service: Some("s".into()),
                family: "f".into(),
                revision: 1,
                config_hash: "h".into(),
                started_by: None,
            },
            node: "local".into(),
            last_status: TaskStatus::Running,
            health: Health::Unknown,
            started_at: Some(1),
            stop_code: None,
            stopped_reason: None,
            bindings: Vec::new(),
            target_health: None,
            exits: Vec::new(),
            stopped_at: None,
        };
        let mut tasks = [task("t1"), task("t2")];
        let s = Status {
            target_health: BTreeMap::from([("t1".to_string(), TargetHealth::Healthy)]),
            ..Status::default()
        };
        fold(&mut tasks, &s, |_| false);
        assert_eq!(tasks[0].target_health, Some(TargetHealth::Healthy));
        assert_eq!(tasks[0].health, Health::Healthy);
        assert_eq!(tasks[1].target_health, None);
        assert_eq!(tasks[1].health, Health::Unknown);
    }
}
