//! Rules on a TaskDefinition: container names, essential containers,
//! resources, ports per network mode, health checks, `dependsOn` targets,
//! conditions and cycles, volumes, environment and labels. Separate
//! because they concern one task definition and are the longest set.

use std::collections::{HashMap, HashSet};

use super::placement::constraints;
use super::Finding;
use crate::manifest::task_definition::{DependencyCondition, NetworkMode};
use crate::suggest;

pub(super) fn task_definition(
    i: usize,
    spec: &crate::manifest::TaskDefinitionSpec,
    out: &mut Vec<Finding>,
) {
    let cds = &spec.container_definitions;
    let names: HashMap<&str, usize> = cds
        .iter()
        .enumerate()
        .rev()
        .map(|(j, c)| (c.name.as_str(), j))
        .collect();
    // Duplicate container names.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (j, c) in cds.iter().enumerate() {
        if let Some(&first) = seen.get(c.name.as_str()) {
            let mut f = Finding::error(
                "container",
                i,
                format!("/spec/containerDefinitions/{j}/name"),
                format!("container name `{}` is used twice in the task", c.name),
            );
            f.related.push((
                i,
                format!("/spec/containerDefinitions/{first}/name"),
                "first used here".into(),
            ));
            out.push(f);
        } else {
            seen.insert(&c.name, j);
        }
    }
    if !cds.iter().any(|c| c.essential) {
        out.push(
            Finding::error(
                "container",
                i,
                "/spec/containerDefinitions",
                "no container is essential; a task needs at least one".into(),
            )
            .at_key()
            .help("set `essential: true` on the main container"),
        );
    }
    // Resources.
    let cpu_sum: u64 = cds.iter().map(|c| u64::from(c.cpu)).sum();
    if let Some(task_cpu) = spec.cpu {
        if cpu_sum > u64::from(task_cpu) {
            out.push(Finding::error(
                "resources",
                i,
                "/spec/cpu",
                format!(
                    "the containers reserve {cpu_sum} CPU units, more than the task's {task_cpu}"
                ),
            ));
        }
    }
    let mut hosts: HashMap<(u16, crate::manifest::task_definition::Protocol), (usize, usize)> =
        HashMap::new();
    for (j, c) in cds.iter().enumerate() {
        let base = format!("/spec/containerDefinitions/{j}");
        if let (Some(m), Some(r)) = (c.memory, c.memory_reservation) {
            if r >= m {
                out.push(
                    Finding::error(
                        "resources",
                        i,
                        format!("{base}/memoryReservation"),
                        format!("memoryReservation ({r} MiB) must be less than memory ({m} MiB)"),
                    )
                    .help("memory is the hard limit; the reservation is the soft share below it"),
                );
            }
        }
        if spec.memory.is_none() && c.memory.is_none() && c.memory_reservation.is_none() {
            out.push(
                Finding::error(
                    "resources",
                    i,
                    base.clone(),
                    format!(
                        "container `{}` sets neither memory nor memoryReservation, and the task sets no memory",
                        c.name
                    ),
                )
                .help("set task-level `memory`, or `memory`/`memoryReservation` on the container"),
            );
        }
        if let (Some(tm), Some(m)) = (spec.memory, c.memory.or(c.memory_reservation)) {
            if m > tm {
                out.push(Finding::error(
                    "resources",
                    i,
                    format!(
                        "{base}/{}",
                        if c.memory.is_some() {
                            "memory"
                        } else {
                            "memoryReservation"
                        }
                    ),
                    format!(
                        "container `{}` asks for {m} MiB, more than the task's {tm} MiB",
                        c.name
                    ),
                ));
            }
        }
        // Ports.
        for (k, pm) in c.port_mappings.iter().enumerate() {
            let p = format!("{base}/portMappings/{k}");
            match spec.network_mode {
                NetworkMode::None => out.push(
                    Finding::error(
                        "network-mode",
                        i,
                        p.clone(),
                        "networkMode `none` allows no port mappings".into(),
                    )
                    .help("remove the port mappings or use networkMode bridge"),
                ),
                NetworkMode::Host => {
                    if let Some(hp) = pm.host_port {
                        if hp != pm.container_port {
                            out.push(
                                Finding::error(
                                    "network-mode",
                                    i,
                                    format!("{p}/hostPort"),
                                    format!(
                                        "with networkMode `host`, hostPort ({hp}) must equal containerPort ({})",
                                        pm.container_port
                                    ),
                                )
                                .help("leave hostPort out, or set it to the containerPort"),
                            );
                        }
                    }
                }
                NetworkMode::Bridge => {}
            }
            let host_port = match spec.network_mode {
                NetworkMode::Host => Some(pm.container_port),
                _ => pm.host_port.filter(|p| *p != 0),
            };
            if let Some(hp) = host_port {
                if let Some(&(fj, fk)) = hosts.get(&(hp, pm.protocol)) {
                    let mut f = Finding::error(
                        "ports",
                        i,
                        p.clone(),
                        format!("host port {hp} is used twice in the task"),
                    )
                    .help("each host port can be bound once per node; use another port or hostPort 0 for a dynamic one");
                    f.related.push((
                        i,
                        format!("/spec/containerDefinitions/{fj}/portMappings/{fk}"),
                        "first used here".into(),
                    ));
                    out.push(f);
                } else {
                    hosts.insert((hp, pm.protocol), (j, k));
                }
            }
        }
        if spec.network_mode == NetworkMode::Host && c.hostname.is_some() {
            out.push(Finding::error(
                "network-mode",
                i,
                format!("{base}/hostname"),
                "hostname cannot be set with networkMode `host`".into(),
            ));
        }
        // Health check command.
        if let Some(hc) = &c.health_check {
            let p = format!("{base}/healthCheck/command/0");
            match hc.command.first().map(String::as_str) {
                Some("CMD") => {}
                Some("CMD-SHELL") if hc.command.len() == 2 => {}
                Some("CMD-SHELL") => out.push(
                    Finding::error(
                        "health-check",
                        i,
                        format!("{base}/healthCheck/command"),
                        "CMD-SHELL takes exactly one command line".into(),
                    )
                    .help("write it as [\"CMD-SHELL\", \"curl -f http://localhost/ || exit 1\"]"),
                ),
                _ => out.push(
                    Finding::error(
                        "health-check",
                        i,
                        p,
                        "a health check command starts with `CMD` or `CMD-SHELL`".into(),
                    )
                    .help("e.g. [\"CMD-SHELL\", \"wget -q -O /dev/null http://localhost:8080/ || exit 1\"]"),
                ),
            }
        }
        // dependsOn targets and conditions.
        for (k, d) in c.depends_on.iter().enumerate() {
            let p = format!("{base}/dependsOn/{k}");
            match names.get(d.container_name.as_str()) {
                None => out.push(missing_dep(i, &p, &d.container_name, &names)),
                Some(&t) if t == j => out.push(Finding::error(
                    "depends-on",
                    i,
                    format!("{p}/containerName"),
                    format!("container `{}` depends on itself", c.name),
                )),
                Some(&t) => {
                    let target = &cds[t];
                    match d.condition {
                        DependencyCondition::Healthy if target.health_check.is_none() => out.push(
                            Finding::error(
                                "depends-on",
                                i,
                                format!("{p}/condition"),
                                format!(
                                    "condition HEALTHY needs a healthCheck on `{}`, which has none",
                                    target.name
                                ),
                            )
                            .help(format!("add a healthCheck to `{}` or use condition START", target.name)),
                        ),
                        DependencyCondition::Complete | DependencyCondition::Success
                            if target.essential =>
                        {
                            out.push(
                                Finding::error(
                                    "depends-on",
                                    i,
                                    format!("{p}/condition"),
                                    format!(
                                        "condition {} waits for `{}` to exit, but it is essential: its exit stops the task",
                                        if d.condition == DependencyCondition::Complete { "COMPLETE" } else { "SUCCESS" },
                                        target.name
                                    ),
                                )
                                .help(format!("set `essential: false` on `{}`", target.name)),
                            )
                        }
                        _ => {}
                    }
                }
            }
        }
        // Volumes.
        for (k, m) in c.mount_points.iter().enumerate() {
            if !spec.volumes.iter().any(|v| v.name == m.source_volume) {
                let known: Vec<&str> = spec.volumes.iter().map(|v| v.name.as_str()).collect();
                let mut f = Finding::error(
                    "volumes",
                    i,
                    format!("{base}/mountPoints/{k}/sourceVolume"),
                    format!(
                        "no volume named `{}` in the task definition",
                        m.source_volume
                    ),
                );
                f.help = Some(
                    match suggest::closest(&m.source_volume, known.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => "declare it under spec.volumes".into(),
                    },
                );
                out.push(f);
            }
        }
        for (k, vf) in c.volumes_from.iter().enumerate() {
            let p = format!("{base}/volumesFrom/{k}/sourceContainer");
            if vf.source_container == c.name {
                out.push(Finding::error(
                    "volumes",
                    i,
                    p,
                    "a container cannot mount its own volumes".into(),
                ));
            } else if !names.contains_key(vf.source_container.as_str()) {
                out.push(Finding::error(
                    "volumes",
                    i,
                    p,
                    format!("no container named `{}` in the task", vf.source_container),
                ));
            }
        }
        for (k, u) in c.ulimits.iter().enumerate() {
            if u.soft_limit > u.hard_limit {
                out.push(Finding::error(
                    "container",
                    i,
                    format!("{base}/ulimits/{k}/softLimit"),
                    format!(
                        "softLimit ({}) is above hardLimit ({})",
                        u.soft_limit, u.hard_limit
                    ),
                ));
            }
        }
        // Environment: one name, one value.
        let mut env: HashMap<&str, String> = HashMap::new();
        for (k, kv) in c.environment.iter().enumerate() {
            let p = format!("{base}/environment/{k}/name");
            if let Some(first) = env.insert(&kv.name, p.clone()) {
                let mut f = Finding::error(
                    "environment",
                    i,
                    p,
                    format!("environment variable `{}` is set twice", kv.name),
                );
                f.related.push((i, first, "first set here".into()));
                out.push(f);
            }
        }
        for (k, s) in c.secrets.iter().enumerate() {
            let p = format!("{base}/secrets/{k}/name");
            if let Some(first) = env.insert(&s.name, p.clone()) {
                let mut f = Finding::error(
                    "environment",
                    i,
                    p,
                    format!("environment variable `{}` is set twice", s.name),
                );
                f.related.push((i, first, "first set here".into()));
                out.push(f);
            }
        }
        for key in c.docker_labels.keys() {
            if key.starts_with("reconcile.io/") {
                out.push(
                    Finding::error(
                        "container",
                        i,
                        crate::pointer::push(&format!("{base}/dockerLabels"), key),
                        format!("label `{key}` uses the reserved prefix `reconcile.io/`"),
                    )
                    .at_key(),
                );
            }
        }
    }
    dependency_cycles(i, cds, &names, out);
    // Volume declarations.
    let mut vnames = HashSet::new();
    for (k, v) in spec.volumes.iter().enumerate() {
        if !vnames.insert(v.name.as_str()) {
            out.push(Finding::error(
                "volumes",
                i,
                format!("/spec/volumes/{k}/name"),
                format!("volume name `{}` is used twice", v.name),
            ));
        }
        if v.host.is_some() && v.docker_volume_configuration.is_some() {
            out.push(Finding::error(
                "volumes",
                i,
                format!("/spec/volumes/{k}"),
                "a volume is either `host` or `dockerVolumeConfiguration`, not both".into(),
            ));
        }
    }
    constraints(
        i,
        "/spec/placementConstraints",
        &spec.placement_constraints,
        true,
        out,
    );
}

fn missing_dep(i: usize, p: &str, name: &str, names: &HashMap<&str, usize>) -> Finding {
    let f = Finding::error(
        "depends-on",
        i,
        format!("{p}/containerName"),
        format!("no container named `{name}` in the task"),
    );
    match suggest::closest(name, names.keys().copied()) {
        Some(s) => f.help(format!("did you mean `{s}`?")),
        None => f,
    }
}

fn dependency_cycles(
    i: usize,
    cds: &[crate::manifest::task_definition::ContainerDefinition],
    names: &HashMap<&str, usize>,
    out: &mut Vec<Finding>,
) {
    // Colour-marking DFS, iterative; reports each cycle once, at the edge
    // that closes it.
    let n = cds.len();
    let mut state = vec![0u8; n]; // 0 new, 1 on stack, 2 done
    for start in 0..n {
        if state[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut edge)) = stack.last_mut() {
            let deps = &cds[node].depends_on;
            if *edge < deps.len() {
                let k = *edge;
                *edge += 1;
                let Some(&t) = names.get(deps[k].container_name.as_str()) else {
                    continue;
                };
                if t == node {
                    continue; // reported as self-dependency
                }
                match state[t] {
                    0 => {
                        state[t] = 1;
                        stack.push((t, 0));
                    }
                    1 => {
                        let from = stack.iter().position(|(x, _)| *x == t).unwrap_or(0);
                        let mut path: Vec<&str> = stack[from..]
                            .iter()
                            .map(|(x, _)| cds[*x].name.as_str())
                            .collect();
                        path.push(&cds[t].name);
                        out.push(
                            Finding::error(
                                "depends-on",
                                i,
                                format!("/spec/containerDefinitions/{node}/dependsOn/{k}"),
                                format!("dependsOn forms a cycle: {}", path.join(" -> ")),
                            )
                            .help("containers start in dependency order; remove one of these dependencies"),
                        );
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                stack.pop();
            }
        }
    }
}
