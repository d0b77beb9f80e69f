//! Tasks as Docker containers, through bollard.
//!
//! Ownership is kept in labels only, so the observed state is rebuilt from
//! Docker with one list call and the program can be killed at any moment:
//! every container carries its source, cluster, service, task id, task
//! definition revision and configuration digest. A task is the set of
//! containers with the same `reconcile.io/task` label.
//!
//! The API version is negotiated with the daemon (Debian's docker.io speaks
//! an older API than bollard's default).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, EndpointSettings,
    HealthConfig, HostConfig, HostConfigLogConfig, Mount, MountType, NetworkCreateRequest,
    NetworkingConfig, PortBinding, ResourcesUlimits, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, InspectContainerOptions,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::{ports, Launch, Observation, Runtime, RuntimeError};
use crate::manifest::task_definition::{
    ContainerDefinition, DependencyCondition, NetworkMode, Protocol, VolumeScope,
};
use crate::model::{Health, NetworkBinding, NodeInfo, Task, TaskIdentity, TaskStatus};

/// Label keys. Everything the program owns carries `MANAGED`.
pub mod label {
    pub const MANAGED: &str = "reconcile.io/managed";
    pub const SOURCE: &str = "reconcile.io/source";
    pub const CLUSTER: &str = "reconcile.io/cluster";
    pub const SERVICE: &str = "reconcile.io/service";
    pub const TASK: &str = "reconcile.io/task";
    pub const FAMILY: &str = "reconcile.io/family";
    pub const REVISION: &str = "reconcile.io/revision";
    pub const CONFIG: &str = "reconcile.io/config-hash";
    pub const CONTAINER: &str = "reconcile.io/container";
    pub const ESSENTIAL: &str = "reconcile.io/essential";
    pub const HEALTH_CHECK: &str = "reconcile.io/health-check";
    pub const NODE: &str = "reconcile.io/node";
}

/// Connect to the engine (honouring DOCKER_HOST), negotiate the API
/// version, and read its info.
pub async fn engine() -> Result<(Docker, bollard::models::SystemInfo), RuntimeError> {
    let docker = Docker::connect_with_defaults()
        .map_err(|e| err("cannot connect to Docker (is DOCKER_HOST right?)", e))?
        .negotiate_version()
        .await
        .map_err(|e| err("cannot reach the Docker daemon", e))?;
    let info = docker
        .info()
        .await
        .map_err(|e| err("cannot read the Docker daemon's info", e))?;
    Ok((docker, info))
}

/// What an engine offers: CPU units (cores x 1024) and MiB.
pub fn resources(info: &bollard::models::SystemInfo) -> (u32, u32) {
    (
        info.ncpu.unwrap_or(1).max(1) as u32 * 1024,
        (info.mem_total.unwrap_or(0) / (1024 * 1024)) as u32,
    )
}

/// The local Docker engine as one node.
pub struct DockerRuntime {
    docker: Docker,
    /// Identity of the source whose tasks this runtime sees.
    source: String,
    node: NodeInfo,
}

fn err(context: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::new(format!("{context}: {e}"))
}

impl DockerRuntime {
    /// Connect (honouring DOCKER_HOST), negotiate the API version and read
    /// the engine's resources. The node serves every cluster.
    pub async fn connect(source: &str, node_name: &str) -> Result<DockerRuntime, RuntimeError> {
        let (docker, info) = engine().await?;
        let (cpu, memory) = resources(&info);
        let mut attributes = BTreeMap::new();
        attributes.insert(
            "ecs.os-type".to_string(),
            info.os_type.unwrap_or_else(|| "linux".into()),
        );
        attributes.insert(
            "ecs.cpu-architecture".to_string(),
            info.architecture.unwrap_or_default(),
        );
        Ok(DockerRuntime {
            docker,
            source: source.to_string(),
            node: NodeInfo {
                name: node_name.to_string(),
                cluster: "*".to_string(),
                attributes,
                cpu,
                memory,
                reserved_ports: Vec::new(),
            },
        })
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    async fn list(&self, task: Option<&str>) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let mut labels = vec![format!("{}={}", label::SOURCE, self.source)];
        if let Some(t) = task {
            labels.push(format!("{}={t}", label::TASK));
        }
        let filters: HashMap<&str, Vec<String>> = HashMap::from([("label", labels)]);
        self.docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| err("listing containers", e))
    }

    /// The last `lines` lines a container wrote.
    pub async fn logs(&self, container: &str, lines: usize) -> String {
        let mut stream = self.docker.logs(
            container,
            Some(
                LogsOptionsBuilder::default()
                    .stdout(true)
                    .stderr(true)
                    .tail(&lines.to_string())
                    .build(),
            ),
        );
        let mut out = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            out.push_str(&chunk.to_string());
            if out.len() > 64 * 1024 {
                break;
            }
        }
        out
    }

    /// Last log lines of a task's containers, for failure reports.
    pub async fn task_logs(&self, task_id: &str, lines: usize) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Ok(cs) = self.list(Some(task_id)).await {
            for c in cs {
                let name = c
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(label::CONTAINER))
                    .cloned()
                    .unwrap_or_default();
                if let Some(id) = &c.id {
                    out.push((name, self.logs(id, lines).await));
                }
            }
        }
        out
    }

    async fn ensure_image(&self, image: &str) -> Result<(), String> {
        if self.docker.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        let (repo, tag) = split_image(image);
        let mut opts = CreateImageOptionsBuilder::default().from_image(repo);
        if let Some(t) = tag {
            opts = opts.tag(t);
        }
        let mut stream = self.docker.create_image(Some(opts.build()), None, None);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                return Err(format!("CannotPullContainerError: {image}: {e}"));
            }
        }
        self.docker
            .inspect_image(image)
            .await
            .map(|_| ())
            .map_err(|e| format!("CannotPullContainerError: {image}: {e}"))
    }

    fn container_name(l: &Launch, c: &ContainerDefinition) -> String {
        let owner = l.service.as_deref().unwrap_or("task");
        format!(
            "reconcile-{}-{}-{}-{}",
            l.cluster,
            owner,
            short(&l.id),
            c.name
        )
    }

    fn network_name(task_id: &str) -> String {
        format!("reconcile-task-{}", short(task_id))
    }

    fn labels(&self, l: &Launch, c: &ContainerDefinition) -> HashMap<String, String> {
        let mut m: HashMap<String, String> = c
            .docker_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut put = |k: &str, v: String| {
            m.insert(k.to_string(), v);
        };
        put(label::MANAGED, "true".into());
        put(label::SOURCE, self.source.clone());
        put(label::CLUSTER, l.cluster.clone());
        if let Some(s) = &l.service {
            put(label::SERVICE, s.clone());
        }
        put(label::TASK, l.id.clone());
        put(label::FAMILY, l.family.clone());
        put(label::REVISION, l.revision.to_string());
        put(label::CONFIG, l.config_hash.clone());
        put(label::CONTAINER, c.name.clone());
        put(label::ESSENTIAL, c.essential.to_string());
        put(label::HEALTH_CHECK, c.health_check.is_some().to_string());
        put(label::NODE, l.node.clone());
        m
    }

    fn volume_name(l: &Launch, name: &str, scope: VolumeScope) -> String {
        match scope {
            VolumeScope::Shared => name.to_string(),
            VolumeScope::Task => format!("reconcile-{}-{name}", short(&l.id)),
        }
    }

    /// Create the task's volumes; returns the mounts per volume name.
    async fn volumes(&self, l: &Launch) -> Result<HashMap<String, (MountType, String)>, String> {
        let mut out = HashMap::new();
        for v in &l.spec.volumes {
            if let Some(h) = &v.host {
                out.insert(v.name.clone(), (MountType::BIND, h.source_path.clone()));
                continue;
            }
            let cfg = v.docker_volume_configuration.clone().unwrap_or_default();
            let name = Self::volume_name(l, &v.name, cfg.scope);
            let exists = self.docker.inspect_volume(&name).await.is_ok();
            if !exists {
                if cfg.scope == VolumeScope::Shared
                    && !cfg.autoprovision
                    && v.docker_volume_configuration.is_some()
                {
                    return Err(format!(
                        "shared volume `{name}` does not exist and autoprovision is off"
                    ));
                }
                let mut labels: HashMap<String, String> = cfg.labels.clone().into_iter().collect();
                labels.insert(label::MANAGED.into(), "true".into());
                labels.insert(label::SOURCE.into(), self.source.clone());
                if cfg.scope == VolumeScope::Task {
                    labels.insert(label::TASK.into(), l.id.clone());
                }
                self.docker
                    .create_volume(VolumeCreateRequest {
                        name: Some(name.clone()),
                        driver: Some(cfg.driver.clone()),
                        driver_opts: Some(cfg.driver_opts.clone().into_iter().collect()),
                        labels: Some(labels),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| format!("creating volume `{name}`: {e}"))?;
            }
            out.insert(v.name.clone(), (MountType::VOLUME, name));
        }
        Ok(out)
    }

    fn create_body(
        &self,
        l: &Launch,
        c: &ContainerDefinition,
        network: Option<&str>,
        volumes: &HashMap<String, (MountType, String)>,
        dynamic: &DynamicPorts,
    ) -> ContainerCreateBody {
        let mut env: Vec<String> = c
            .environment
            .iter()
            .map(|kv| format!("{}={}", kv.name, kv.value))
            .collect();
        for s in &c.secrets {
            if let Some(v) = l.secrets.get(&s.value_from) {
                env.push(format!("{}={}", s.name, v.expose()));
            }
        }
        let mut exposed = Vec::new();
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for p in &c.port_mappings {
            let proto = match p.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            };
            let key = format!("{}/{proto}", p.container_port);
            exposed.push(key.clone());
            if l.spec.network_mode == NetworkMode::Bridge {
                // A dynamic port is chosen before the create, so that both
                // address families bind the same one (ports.rs).
                let host = p
                    .host_port
                    .filter(|h| *h != 0)
                    .or_else(|| {
                        dynamic
                            .get(&(c.name.clone(), p.container_port, p.protocol))
                            .copied()
                    })
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                bindings.insert(
                    key,
                    Some(vec![PortBinding {
                        host_ip: None,
                        host_port: Some(host),
                    }]),
                );
            }
        }
        let network_mode = match l.spec.network_mode {
            NetworkMode::Host => "host".to_string(),
            NetworkMode::None => "none".to_string(),
            NetworkMode::Bridge => network.unwrap_or("bridge").to_string(),
        };
        let mounts: Vec<Mount> = c
            .mount_points
            .iter()
            .filter_map(|m| {
                let (typ, source) = volumes.get(&m.source_volume)?;
                Some(Mount {
                    target: Some(m.container_path.clone()),
                    source: Some(source.clone()),
                    typ: Some(*typ),
                    read_only: Some(m.read_only),
                    ..Default::default()
                })
            })
            .collect();
        let volumes_from: Vec<String> = c
            .volumes_from
            .iter()
            .filter_map(|v| {
                let other = l
                    .spec
                    .container_definitions
                    .iter()
                    .find(|o| o.name == v.source_container)?;
                let name = Self::container_name(l, other);
                Some(if v.read_only {
                    format!("{name}:ro")
                } else {
                    name
                })
            })
            .collect();
        let secs = |s: u32| i64::from(s) * 1_000_000_000;
        let healthcheck = c.health_check.as_ref().map(|h| HealthConfig {
            test: Some(h.command.clone()),
            interval: Some(secs(h.interval)),
            timeout: Some(secs(h.timeout)),
            retries: Some(i64::from(h.retries)),
            start_period: Some(secs(h.start_period)),
            start_interval: None,
        });
        let mib = |m: u32| i64::from(m) * 1024 * 1024;
        let lp = c.linux_parameters.clone().unwrap_or_default();
        let host_config = HostConfig {
            cpu_shares: (c.cpu >= 2).then(|| i64::from(c.cpu)),
            memory: c.memory.map(mib),
            memory_reservation: c.memory_reservation.map(mib),
            ulimits: Some(
                c.ulimits
                    .iter()
                    .map(|u| ResourcesUlimits {
                        name: Some(
                            serde_json::to_value(u.name)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default(),
                        ),
                        soft: Some(u.soft_limit),
                        hard: Some(u.hard_limit),
                    })
                    .collect(),
            ),
            readonly_rootfs: Some(c.readonly_root_filesystem),
            log_config: c.log_configuration.as_ref().map(|lc| HostConfigLogConfig {
                typ: Some(lc.log_driver.as_str().to_string()),
                config: Some(lc.options.clone().into_iter().collect()),
            }),
            network_mode: Some(network_mode),
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            mounts: (!mounts.is_empty()).then_some(mounts),
            volumes_from: (!volumes_from.is_empty()).then_some(volumes_from),
            dns: (!c.dns_servers.is_empty()).then(|| c.dns_servers.clone()),
            dns_search: (!c.dns_search_domains.is_empty()).then(|| c.dns_search_domains.clone()),
            extra_hosts: (!c.extra_hosts.is_empty()).then(|| {
                c.extra_hosts
                    .iter()
                    .map(|h| format!("{}:{}", h.hostname, h.ip_address))
                    .collect()
            }),
            privileged: Some(c.privileged),
            sysctls: (!c.system_controls.is_empty()).then(|| {
                c.system_controls
                    .iter()
                    .map(|s| (s.namespace.clone(), s.value.clone()))
                    .collect()
            }),
            init: lp.init_process_enabled.then_some(true),
            shm_size: lp.shared_memory_size.map(mib),
            cap_add: lp
                .capabilities
                .as_ref()
                .map(|k| k.add.clone())
                .filter(|v| !v.is_empty()),
            cap_drop: lp
                .capabilities
                .as_ref()
                .map(|k| k.drop.clone())
                .filter(|v| !v.is_empty()),
            ..Default::default()
        };
        let networking_config = match (l.spec.network_mode, network) {
            (NetworkMode::Bridge, Some(net)) => Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    net.to_string(),
                    EndpointSettings {
                        aliases: Some(vec![c.name.clone()]),
                        ..Default::default()
                    },
                )])),
            }),
            _ => None,
        };
        ContainerCreateBody {
            hostname: c.hostname.clone(),
            user: c.user.clone(),
            env: Some(env),
            cmd: c.command.clone(),
            entrypoint: c.entry_point.clone(),
            image: Some(c.image.clone()),
            working_dir: c.working_directory.clone(),
            labels: Some(self.labels(l, c)),
            stop_timeout: Some(i64::from(c.stop_timeout)),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            // ECS ignores the image's HEALTHCHECK; so does the task.
            healthcheck: healthcheck.or_else(|| {
                Some(HealthConfig {
                    test: Some(vec!["NONE".into()]),
                    ..Default::default()
                })
            }),
            tty: Some(c.pseudo_terminal),
            open_stdin: Some(c.interactive),
            host_config: Some(host_config),
            networking_config,
            ..Default::default()
        }
    }

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
                    let state = self
                        .docker
                        .inspect_container(dep_id, None::<InspectContainerOptions>)
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
            self.docker
                .start_container(
                    &ids[&c.name],
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
                .map_err(|e| format!("starting container `{}`: {e}", c.name))?;
        }
        Ok(())
    }

    /// Create the task's containers and start them in dependency order.
    /// A container that fails to create removes the task; one that fails
    /// to start stops what did start and keeps the containers for their
    /// logs until the next apply removes them.
    async fn create_and_start(
        &self,
        l: &Launch,
        network: Option<&str>,
        volumes: &HashMap<String, (MountType, String)>,
        dynamic: &DynamicPorts,
    ) -> Result<(), String> {
        let mut ids = HashMap::new();
        for c in start_order(&l.spec.container_definitions) {
            let body = self.create_body(l, c, network, volumes, dynamic);
            let created = self
                .docker
                .create_container(
                    Some(
                        CreateContainerOptionsBuilder::default()
                            .name(&Self::container_name(l, c))
                            .build(),
                    ),
                    body,
                )
                .await;
            match created {
                Ok(r) => {
                    ids.insert(c.name.clone(), r.id);
                }
                Err(e) => {
                    let existing = self.list(Some(&l.id)).await.unwrap_or_default();
                    let _ = self.cleanup(&l.id, &existing, false).await;
                    return Err(format!("creating container `{}`: {e}", c.name));
                }
            }
        }
        if let Err(e) = self.start_in_order(l, &ids).await {
            let existing = self.list(Some(&l.id)).await.unwrap_or_default();
            for c in &existing {
                if let Some(id) = &c.id {
                    let _ = self
                        .docker
                        .stop_container(
                            id,
                            Some(StopContainerOptionsBuilder::default().t(2).build()),
                        )
                        .await;
                }
            }
            return Err(format!("TaskFailedToStart: {e}"));
        }
        Ok(())
    }

    /// Remove containers (forcibly: running ones too), keeping volumes.
    async fn remove_containers(&self, containers: &[ContainerSummary]) -> Result<(), RuntimeError> {
        for c in containers {
            if let Some(id) = &c.id {
                if let Err(e) = self
                    .docker
                    .remove_container(
                        id,
                        Some(
                            RemoveContainerOptionsBuilder::default()
                                .force(true)
                                .v(false)
                                .build(),
                        ),
                    )
                    .await
                {
                    if !is_not_found(&e) {
                        return Err(err("removing a container", e));
                    }
                }
            }
        }
        Ok(())
    }

    async fn cleanup(
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
                        stops.push(self.docker.stop_container(
                            id,
                            Some(StopContainerOptionsBuilder::default().build()),
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

/// The host port chosen for each dynamic mapping of a bridge task, by
/// (container, container port, protocol).
type DynamicPorts = HashMap<(String, u16, Protocol), u16>;

fn dynamic_ports(l: &Launch) -> Result<DynamicPorts, String> {
    let mut out = DynamicPorts::new();
    if l.spec.network_mode != NetworkMode::Bridge {
        return Ok(out);
    }
    for c in &l.spec.container_definitions {
        for p in &c.port_mappings {
            if p.host_port.is_none_or(|h| h == 0) {
                let port = ports::pick(p.protocol)?;
                out.insert((c.name.clone(), p.container_port, p.protocol), port);
            }
        }
    }
    Ok(out)
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

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn split_image(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => (&image[..i], Some(&image[i + 1..])),
        _ => (image, Some("latest")),
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

/// Health from the status text of `docker ps` ("Up 3 seconds (healthy)"),
/// which the list call returns on every API version.
fn health_of(status: &str) -> Option<Health> {
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
fn exit_code_of(status: &str) -> Option<i64> {
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
                    if essential && status != TaskStatus::Stopped {
                        status = TaskStatus::Stopped;
                        stop_code = Some("EssentialContainerExited".to_string());
                        let code = exit_code_of(&text);
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
            },
            node: get(label::NODE),
            last_status: status,
            health,
            started_at: cs.iter().filter_map(|c| c.created).min(),
            stop_code,
            stopped_reason: reason,
            bindings,
        });
    }
    tasks
}

impl Runtime for DockerRuntime {
    async fn observe(&self) -> Result<Observation, RuntimeError> {
        let containers = self.list(None).await?;
        let mut tasks = tasks_from_containers(&containers);
        // A task whose containers were created but not all started was
        // interrupted (starting is done by the one process holding the
        // state lock): it will never start by itself.
        for t in &mut tasks {
            if t.last_status == TaskStatus::Pending {
                t.last_status = TaskStatus::Stopped;
                t.stop_code = Some("TaskFailedToStart".into());
                t.stopped_reason = Some("the start of the task was interrupted".into());
            }
        }
        Ok(Observation {
            tasks,
            nodes: vec![self.node.clone()],
            draining: Default::default(),
        })
    }

    async fn start(&self, l: Launch) -> Result<(), RuntimeError> {
        let fail = |message: String| RuntimeError {
            message,
            task: Some(l.id.clone()),
        };
        for c in &l.spec.container_definitions {
            self.ensure_image(&c.image).await.map_err(fail)?;
        }
        let volumes = match self.volumes(&l).await {
            Ok(v) => v,
            Err(e) => {
                let _ = self.cleanup(&l.id, &[], false).await;
                return Err(fail(e));
            }
        };
        // Containers of a bridge task reach each other by name on a
        // network of their own; a one-container task needs none.
        let network = if l.spec.network_mode == NetworkMode::Bridge
            && l.spec.container_definitions.len() > 1
        {
            let name = Self::network_name(&l.id);
            let labels = HashMap::from([
                (label::MANAGED.to_string(), "true".to_string()),
                (label::SOURCE.to_string(), self.source.clone()),
                (label::TASK.to_string(), l.id.clone()),
            ]);
            self.docker
                .create_network(NetworkCreateRequest {
                    name: name.clone(),
                    driver: Some("bridge".into()),
                    labels: Some(labels),
                    ..Default::default()
                })
                .await
                .map_err(|e| fail(format!("creating the task network: {e}")))?;
            Some(name)
        } else {
            None
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dynamic = dynamic_ports(&l).map_err(fail)?;
            match self
                .create_and_start(&l, network.as_deref(), &volumes, &dynamic)
                .await
            {
                // A host port chosen for the task was taken before Docker
                // bound it: the same task again, on fresh ports.
                Err(e) if attempt < ports::ATTEMPTS && ports::is_port_conflict(&e) => {
                    let existing = self.list(Some(&l.id)).await.unwrap_or_default();
                    self.remove_containers(&existing)
                        .await
                        .map_err(|e| fail(e.message))?;
                }
                Err(e) => return Err(fail(e)),
                Ok(()) => return Ok(()),
            }
        }
    }

    async fn stop(&self, task_id: &str, _reason: &str) -> Result<(), RuntimeError> {
        let containers = self.list(Some(task_id)).await?;
        self.cleanup(task_id, &containers, true).await
    }

    async fn remove(&self, task_id: &str) -> Result<(), RuntimeError> {
        let containers = self.list(Some(task_id)).await?;
        self.cleanup(task_id, &containers, true).await
    }

    async fn halt(&self, task_id: &str) -> Result<(), RuntimeError> {
        for c in self.list(Some(task_id)).await? {
            if let (Some(id), Some(ContainerSummaryStateEnum::RUNNING)) = (&c.id, c.state) {
                self.docker
                    .stop_container(id, Some(StopContainerOptionsBuilder::default().build()))
                    .await
                    .map_err(|e| err("stopping a container", e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_status_text() {
        assert_eq!(health_of("Up 3 seconds (healthy)"), Some(Health::Healthy));
        assert_eq!(
            health_of("Up 1 second (health: starting)"),
            Some(Health::Unknown)
        );
        assert_eq!(
            health_of("Up 9 minutes (unhealthy)"),
            Some(Health::Unhealthy)
        );
        assert_eq!(health_of("Up 2 hours"), None);
        assert_eq!(exit_code_of("Exited (137) 2 seconds ago"), Some(137));
        assert_eq!(split_image("busybox:stable"), ("busybox", Some("stable")));
        assert_eq!(
            split_image("localhost:5000/app"),
            ("localhost:5000/app", Some("latest"))
        );
    }
}
