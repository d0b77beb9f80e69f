//! What Docker is asked to create for a task: its image (pulled when
//! missing), its volumes, the names and labels of its containers, the host
//! ports of dynamic mappings and each container's create body, which maps a
//! container definition onto Docker's options. Separate because it is the
//! one place where ECS container fields meet Docker's, and it is long.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, HostConfigLogConfig, Mount,
    MountType, NetworkingConfig, PortBinding, ResourcesUlimits, VolumeCreateRequest,
};
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;

use super::{label, short, DockerRuntime};
use crate::manifest::task_definition::{ContainerDefinition, NetworkMode, Protocol, VolumeScope};
use crate::runtime::{ports, start_failure, Launch};

impl DockerRuntime {
    pub(super) async fn ensure_image(&self, image: &str) -> Result<(), String> {
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
                return Err(start_failure::image_unavailable(image, &e.to_string()));
            }
        }
        self.docker
            .inspect_image(image)
            .await
            .map(|_| ())
            .map_err(|e| start_failure::image_unavailable(image, &e.to_string()))
    }

    pub(super) fn container_name(l: &Launch, c: &ContainerDefinition) -> String {
        let owner = l.identity.service.as_deref().unwrap_or("task");
        format!(
            "reconcile-{}-{}-{}-{}",
            l.identity.cluster,
            owner,
            short(&l.identity.id),
            c.name
        )
    }

    pub(super) fn network_name(task_id: &str) -> String {
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
        put(label::CLUSTER, l.identity.cluster.clone());
        if let Some(s) = &l.identity.service {
            put(label::SERVICE, s.clone());
        }
        put(label::TASK, l.identity.id.clone());
        put(label::FAMILY, l.identity.family.clone());
        put(label::REVISION, l.identity.revision.to_string());
        put(label::CONFIG, l.identity.config_hash.clone());
        put(label::CONTAINER, c.name.clone());
        put(label::ESSENTIAL, c.essential.to_string());
        put(label::HEALTH_CHECK, c.health_check.is_some().to_string());
        put(label::NODE, l.node.clone());
        if let Some(by) = &l.identity.started_by {
            put(label::STARTED_BY, by.clone());
        }
        m
    }

    fn volume_name(l: &Launch, name: &str, scope: VolumeScope) -> String {
        match scope {
            VolumeScope::Shared => name.to_string(),
            VolumeScope::Task => format!("reconcile-{}-{name}", short(&l.identity.id)),
        }
    }

    /// Create the task's volumes; returns the mounts per volume name.
    pub(super) async fn volumes(
        &self,
        l: &Launch,
    ) -> Result<HashMap<String, (MountType, String)>, String> {
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
                    labels.insert(label::TASK.into(), l.identity.id.clone());
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

    pub(super) fn create_body(
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
                        name: Some(crate::model::serde_name(&u.name)),
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
}

/// The host port chosen for each dynamic mapping of a bridge task, by
/// (container, container port, protocol).
pub(super) type DynamicPorts = HashMap<(String, u16, Protocol), u16>;

pub(super) fn dynamic_ports(l: &Launch) -> Result<DynamicPorts, String> {
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

pub(super) fn split_image(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => (&image[..i], Some(&image[i + 1..])),
        _ => (image, Some("latest")),
    }
}
