//! Cross-field fixes of an imported task definition.
//!
//! Some combinations pass ECS registration (or fail only at run time) but
//! not `reconcile validate`: a HEALTHY dependency on a container without a
//! health check, a reservation equal to the hard limit, two containers
//! publishing one port in host mode, a mount of an undeclared volume, ...
//! Each is fixed here, once all containers are read, with a warning that
//! names the input field and says what to check.

use std::collections::HashMap;

use super::container::Origins;
use super::render::Defaults;
use super::report::{index, key, Ctx};
use super::task_definition::{DEFAULT_MEMORY_RESERVATION, TASK_CPU};
use crate::manifest::task_definition::{
    ContainerDefinition, DependencyCondition, NetworkMode, Protocol, Volume,
};

/// Cross-field fixes: combinations that ECS rejects at registration or
/// tolerates at run time, and that the validator rejects up front. Each
/// fix warns; the point is that the output always validates and that the
/// user learns what to look at.
pub(super) struct Fixer<'a, 'r> {
    pub(super) ctx: &'a mut Ctx<'r>,
    pub(super) defaults: &'a mut Defaults,
    pub(super) task_path: &'a str,
    /// Input path of each container.
    pub(super) paths: &'a [String],
    pub(super) origins: &'a mut [Origins],
}

impl Fixer<'_, '_> {
    fn at(&self, j: usize, field: &str) -> String {
        key(&self.paths[j], field)
    }

    /// Input path of item `k` (output position) of a container's list.
    fn item(&self, j: usize, field: &str, origin: &[usize], k: usize) -> String {
        index(&self.at(j, field), origin[k])
    }

    /// ECS refuses to register a task definition without an essential
    /// container.
    pub(super) fn essential(&mut self, cs: &mut [ContainerDefinition]) {
        if !cs.iter().any(|c| c.essential) {
            cs[0].essential = true;
            let p = self.at(0, "essential");
            self.ctx.warn(
                &p,
                format!(
                    "no container is essential; `{}` was made essential",
                    cs[0].name
                ),
                "mark the container whose exit should stop the task as essential",
            );
        }
    }

    pub(super) fn dependencies(&mut self, cs: &mut [ContainerDefinition]) {
        let names: Vec<String> = cs.iter().map(|c| c.name.clone()).collect();
        let has_check: Vec<bool> = cs.iter().map(|c| c.health_check.is_some()).collect();
        for j in 0..cs.len() {
            let mut k = 0;
            while k < cs[j].depends_on.len() {
                let dp = self.item(j, "dependsOn", &self.origins[j].depends_on, k);
                let dep = cs[j].depends_on[k].clone();
                let target = names.iter().position(|n| *n == dep.container_name);
                let problem = match target {
                    None => Some(format!(
                        "dropped the dependency on `{}`: no container of the task has that name",
                        dep.container_name
                    )),
                    Some(t) if t == j => {
                        Some("dropped a dependency of the container on itself".to_string())
                    }
                    Some(_) => None,
                };
                if let Some(message) = problem {
                    self.ctx
                        .warn(&dp, message, "fix the container name in the manifest");
                    cs[j].depends_on.remove(k);
                    self.origins[j].depends_on.remove(k);
                    continue;
                }
                let t = target.unwrap_or_default();
                let cp = key(&dp, "condition");
                if dep.condition == DependencyCondition::Healthy && !has_check[t] {
                    cs[j].depends_on[k].condition = DependencyCondition::Start;
                    self.ctx.warn(
                        &cp,
                        format!(
                            "HEALTHY needs a health check on `{}`, which has none; the condition is now START",
                            dep.container_name
                        ),
                        format!(
                            "add a healthCheck to `{}` and set the condition back to HEALTHY",
                            dep.container_name
                        ),
                    );
                }
                let waits_for_exit = matches!(
                    dep.condition,
                    DependencyCondition::Complete | DependencyCondition::Success
                );
                if waits_for_exit && cs[t].essential {
                    let others = cs.iter().enumerate().any(|(i, c)| i != t && c.essential);
                    if others {
                        cs[t].essential = false;
                        self.ctx.warn(
                            &cp,
                            format!(
                                "`{}` waits for `{}` to exit, so `{}` is now non-essential (its exit would otherwise stop the task)",
                                cs[j].name, dep.container_name, dep.container_name
                            ),
                            "check that the container is meant to run to completion",
                        );
                    } else {
                        cs[j].depends_on[k].condition = DependencyCondition::Start;
                        self.ctx.warn(
                            &cp,
                            format!(
                                "`{}` is the only essential container, so nothing can wait for it to exit; the condition is now START",
                                dep.container_name
                            ),
                            "make another container essential and restore the condition",
                        );
                    }
                }
                k += 1;
            }
        }
    }

    /// Every container needs memory when the task sets none; a container
    /// cannot ask for more than the task; a reservation stays below the
    /// hard limit.
    pub(super) fn memory(&mut self, cs: &mut [ContainerDefinition], task: Option<u32>) {
        for (j, c) in cs.iter_mut().enumerate() {
            if let Some(tm) = task {
                if let Some(m) = c.memory.filter(|m| *m > tm) {
                    c.memory = Some(tm);
                    self.ctx.warn(
                        &key(&self.paths[j], "memory"),
                        format!("container `{}` limit {m} MiB is above the task's {tm} MiB; lowered to {tm}", c.name),
                        "raise the task's memory if the container needs more",
                    );
                }
                if let Some(r) = c.memory_reservation.filter(|r| *r > tm) {
                    c.memory_reservation = Some(tm);
                    self.ctx.warn(
                        &key(&self.paths[j], "memoryReservation"),
                        format!(
                            "container `{}` reservation {r} MiB is above the task's {tm} MiB; lowered to {tm}",
                            c.name
                        ),
                        "raise the task's memory if the container needs more",
                    );
                }
            }
            if let (Some(m), Some(r)) = (c.memory, c.memory_reservation) {
                if r >= m {
                    c.memory_reservation = None;
                    let why = if r == m {
                        format!("it equals memory ({m} MiB), which is reserved anyway")
                    } else {
                        format!("it is above memory ({m} MiB), which ECS rejects")
                    };
                    self.ctx.warn(
                        &key(&self.paths[j], "memoryReservation"),
                        format!("dropped memoryReservation {r} MiB of `{}`: {why}", c.name),
                        "set a reservation below the memory limit if you want a soft limit",
                    );
                }
            }
            if task.is_none() && c.memory.is_none() && c.memory_reservation.is_none() {
                c.memory_reservation = Some(DEFAULT_MEMORY_RESERVATION);
                self.ctx.warn(
                    &self.paths[j],
                    format!(
                        "container `{}` sets no memory and neither does the task; it now reserves {DEFAULT_MEMORY_RESERVATION} MiB (memoryReservation: a soft reservation used for placement, not a limit)",
                        c.name
                    ),
                    "set memory or memoryReservation to what the container really uses",
                );
            }
        }
    }

    /// The containers cannot reserve more CPU than the task.
    pub(super) fn cpu(&mut self, cs: &[ContainerDefinition], task: &mut Option<u32>) {
        let sum: u64 = cs.iter().map(|c| u64::from(c.cpu)).sum();
        if let Some(tc) = *task {
            if sum > u64::from(tc) {
                let raised = sum.min(TASK_CPU.1) as u32;
                *task = Some(raised);
                self.ctx.warn(
                    &key(self.task_path, "cpu"),
                    format!("the containers reserve {sum} CPU units, more than the task's {tc}; the task's cpu is now {raised}"),
                    "lower the containers' cpu if the task should stay smaller",
                );
            }
        }
    }

    pub(super) fn network(
        &mut self,
        cs: &mut [ContainerDefinition],
        network: NetworkMode,
        from_awsvpc: bool,
    ) {
        if from_awsvpc {
            let mut msg = "networkMode awsvpc became bridge: tasks no longer get their own network interface and IP address; container ports are published on the node's address instead".to_string();
            let help = if cs.len() > 1 {
                msg.push_str(", and the containers of a task no longer share localhost: they reach each other by container name");
                "point clients at the node's address and the published host port, replace `localhost:PORT` between containers with `CONTAINER:PORT`; the node's firewall applies instead of the task's security groups"
            } else {
                "point clients at the node's address and the published host port; the node's firewall applies instead of the task's security groups"
            };
            self.ctx
                .warn(&key(self.task_path, "networkMode"), msg, help);
        }
        let mut used: HashMap<(u16, Protocol), String> = HashMap::new();
        for (j, c) in cs.iter_mut().enumerate() {
            if c.port_mappings.is_empty() {
                continue;
            }
            let pp = self.at(j, "portMappings");
            let list = format!("/containerDefinitions/{j}/portMappings");
            match network {
                NetworkMode::None => {
                    for k in (0..c.port_mappings.len()).rev() {
                        self.defaults.remove_item(&list, k);
                    }
                    c.port_mappings.clear();
                    self.origins[j].port_mappings.clear();
                    self.ctx.warn(
                        &pp,
                        format!("dropped the port mappings of `{}`: networkMode none publishes no ports", c.name),
                        "use networkMode bridge if the ports must be reachable",
                    );
                    continue;
                }
                NetworkMode::Bridge if from_awsvpc => {
                    let fixed: Vec<String> = c
                        .port_mappings
                        .iter()
                        .filter_map(|pm| pm.host_port.filter(|h| *h != 0))
                        .map(|h| h.to_string())
                        .collect();
                    for pm in &mut c.port_mappings {
                        pm.host_port = None;
                    }
                    let instead = if fixed.is_empty() {
                        String::new()
                    } else {
                        format!(" instead of host port {}", fixed.join(", "))
                    };
                    self.ctx.warn(
                        &pp,
                        format!(
                            "the ports of `{}` are now published on dynamic host ports{instead}: each task gets free ports on its node, reported as its network bindings",
                            c.name
                        ),
                        "set hostPort equal to containerPort where clients need a fixed port (then at most one such task runs per node)",
                    );
                }
                NetworkMode::Host => {
                    for k in 0..c.port_mappings.len() {
                        let pm = &mut c.port_mappings[k];
                        if let Some(h) = pm.host_port.filter(|h| *h != pm.container_port) {
                            pm.host_port = Some(pm.container_port);
                            let port = pm.container_port;
                            let ip =
                                self.item(j, "portMappings", &self.origins[j].port_mappings, k);
                            self.ctx.warn(
                                &key(&ip, "hostPort"),
                                format!("with networkMode host the container listens on the node's port {port}; hostPort {h} was changed to it"),
                                "change the port the application listens on if it must be another one",
                            );
                        }
                    }
                }
                NetworkMode::Bridge => {}
            }
            let mut k = 0;
            while k < c.port_mappings.len() {
                let ip = self.item(j, "portMappings", &self.origins[j].port_mappings, k);
                let pm = &c.port_mappings[k];
                let fixed = match network {
                    NetworkMode::Host => Some(pm.container_port),
                    _ => pm.host_port.filter(|h| *h != 0),
                };
                let Some(h) = fixed else {
                    k += 1;
                    continue;
                };
                let Some(first) = used.get(&(h, pm.protocol)).cloned() else {
                    used.insert((h, pm.protocol), ip);
                    k += 1;
                    continue;
                };
                if network == NetworkMode::Host {
                    self.ctx.warn(
                        &ip,
                        format!("dropped: port {h} is already published by {first}, and with networkMode host two containers cannot both listen on it"),
                        "change the port of one of the containers",
                    );
                    c.port_mappings.remove(k);
                    self.origins[j].port_mappings.remove(k);
                    self.defaults.remove_item(&list, k);
                    continue;
                }
                c.port_mappings[k].host_port = None;
                self.ctx.warn(
                    &key(&ip, "hostPort"),
                    format!("host port {h} is already used by {first}; this mapping now gets a dynamic host port"),
                    "give it another fixed hostPort if clients need one",
                );
                k += 1;
            }
        }
        if network == NetworkMode::Host {
            for (j, c) in cs.iter_mut().enumerate() {
                if let Some(h) = c.hostname.take() {
                    self.ctx.warn(
                        &key(&self.paths[j], "hostname"),
                        format!("dropped hostname `{h}`: with networkMode host the container has the node's hostname"),
                        "nothing to do unless the application depends on it",
                    );
                }
            }
        }
    }

    /// Mounts need a declared volume; volumesFrom another container.
    pub(super) fn references(&mut self, cs: &mut [ContainerDefinition], volumes: &[Volume]) {
        let names: Vec<String> = cs.iter().map(|c| c.name.clone()).collect();
        for j in 0..cs.len() {
            let mut k = 0;
            while k < cs[j].mount_points.len() {
                let m = &cs[j].mount_points[k];
                if volumes.iter().any(|v| v.name == m.source_volume) {
                    k += 1;
                    continue;
                }
                let ip = self.item(j, "mountPoints", &self.origins[j].mount_points, k);
                self.ctx.warn(
                    &ip,
                    format!(
                        "dropped the mount of `{}` at {}: the task definition has no volume of that name",
                        m.source_volume, m.container_path
                    ),
                    "declare the volume under spec.volumes and restore the mount",
                );
                cs[j].mount_points.remove(k);
                self.origins[j].mount_points.remove(k);
                self.defaults
                    .remove_item(&format!("/containerDefinitions/{j}/mountPoints"), k);
            }
            let mut k = 0;
            while k < cs[j].volumes_from.len() {
                let v = &cs[j].volumes_from[k];
                if v.source_container != names[j] && names.contains(&v.source_container) {
                    k += 1;
                    continue;
                }
                let ip = self.item(j, "volumesFrom", &self.origins[j].volumes_from, k);
                self.ctx.warn(
                    &ip,
                    format!(
                        "dropped volumesFrom `{}`: not another container of the task",
                        v.source_container
                    ),
                    "fix the container name in the manifest",
                );
                cs[j].volumes_from.remove(k);
                self.origins[j].volumes_from.remove(k);
                self.defaults
                    .remove_item(&format!("/containerDefinitions/{j}/volumesFrom"), k);
            }
        }
    }
}
