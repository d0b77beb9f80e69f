//! Rules on a Service's traffic fields (`loadBalancers`,
//! `serviceRegistries`): their targets exist in the task definition, and
//! listener ports and DNS names are unique in the cluster. Separate because
//! uniqueness is per cluster, so these rules read every service at once.

use std::collections::BTreeMap;

use super::references::source_task_definition;
use super::{Finding, Index};
use crate::manifest::task_definition::{NetworkMode, Protocol};
use crate::manifest::traffic::ListenerProtocol;
use crate::manifest::{Manifest, TaskDefinitionSpec};
use crate::model::TaskDefRef;
use crate::scheduler::RESERVED_PORTS;
use crate::suggest;
use crate::validate::Entry;

/// Where a fixed host port of a task definition is declared.
struct HostPort {
    entry: usize,
    pointer: String,
    container: String,
    family: String,
}

/// TCP host ports a task of `td` always binds: a fixed bridge `hostPort`,
/// or any port with host networking (where hostPort equals containerPort).
fn fixed_host_ports(e: usize, family: &str, td: &TaskDefinitionSpec) -> Vec<(u16, HostPort)> {
    let mut out = Vec::new();
    for (k, c) in td.container_definitions.iter().enumerate() {
        for (m, p) in c.port_mappings.iter().enumerate() {
            let port = match td.network_mode {
                NetworkMode::Host => p.container_port,
                NetworkMode::Bridge => match p.host_port {
                    Some(h) if h > 0 => h,
                    _ => continue,
                },
                NetworkMode::None => continue,
            };
            if p.protocol == Protocol::Tcp {
                out.push((
                    port,
                    HostPort {
                        entry: e,
                        pointer: format!("/spec/containerDefinitions/{k}/portMappings/{m}"),
                        container: c.name.clone(),
                        family: family.to_string(),
                    },
                ));
            }
        }
    }
    out
}

/// The target of a listener or registry names a container of the task
/// definition and one of its TCP container ports.
fn target(
    i: usize,
    base: &str,
    container: &str,
    port: u16,
    family: &str,
    td: &TaskDefinitionSpec,
    out: &mut Vec<Finding>,
) {
    let Some(c) = td
        .container_definitions
        .iter()
        .find(|c| c.name == container)
    else {
        let names = td.container_definitions.iter().map(|c| c.name.as_str());
        let f = Finding::error(
            "traffic-target",
            i,
            format!("{base}/containerName"),
            format!("task definition `{family}` has no container named `{container}`"),
        );
        out.push(match suggest::closest(container, names.clone()) {
            Some(s) => f.help(format!("did you mean `{s}`?")),
            None => f.help(format!(
                "its containers: {}",
                names.collect::<Vec<_>>().join(", ")
            )),
        });
        return;
    };
    let tcp: Vec<u16> = c
        .port_mappings
        .iter()
        .filter(|p| p.protocol == Protocol::Tcp)
        .map(|p| p.container_port)
        .collect();
    if tcp.contains(&port) {
        return;
    }
    let udp = c.port_mappings.iter().any(|p| p.container_port == port);
    let message = if udp {
        format!("port {port} of container `{container}` is UDP; traffic is balanced over TCP")
    } else {
        format!("container `{container}` has no portMapping with containerPort {port}")
    };
    let help = if tcp.is_empty() {
        format!("add `portMappings: [{{containerPort: {port}}}]` to container `{container}` of task definition `{family}`")
    } else {
        let ports: Vec<String> = tcp.iter().map(u16::to_string).collect();
        format!("its TCP container ports: {}", ports.join(", "))
    };
    out.push(
        Finding::error(
            "traffic-target",
            i,
            format!("{base}/containerPort"),
            message,
        )
        .help(help),
    );
}

/// `200`, `200,204`, `200-399`: a range whose low end is above its high
/// end matches nothing.
fn inverted_range(matcher: &str) -> Option<&str> {
    matcher.split(',').find(|part| {
        part.split_once('-')
            .is_some_and(|(lo, hi)| lo.parse::<u16>().ok() > hi.parse::<u16>().ok())
    })
}

pub(super) fn traffic(entries: &[Entry], index: &Index, out: &mut Vec<Finding>) {
    // Per cluster: listener ports and DNS names taken, by (entry, pointer)
    // of the first; and fixed host ports of the task definitions its
    // services run.
    let mut listeners: BTreeMap<(&str, u16), (usize, String)> = BTreeMap::new();
    let mut names: BTreeMap<(&str, String), (usize, String)> = BTreeMap::new();
    let mut host_ports: BTreeMap<(&str, u16), HostPort> = BTreeMap::new();
    for e in entries {
        let Manifest::Service(s) = &e.manifest else {
            continue;
        };
        if let Some((te, td)) = source_task_definition(&s.spec.task_definition, index, entries) {
            let family = TaskDefRef::parse(&s.spec.task_definition).family;
            for (port, at) in fixed_host_ports(te, family, td) {
                host_ports
                    .entry((s.spec.cluster.as_str(), port))
                    .or_insert(at);
            }
        }
    }
    for (i, e) in entries.iter().enumerate() {
        let Manifest::Service(s) = &e.manifest else {
            continue;
        };
        let spec = &s.spec;
        let service = s.metadata.name.as_str();
        let cluster = spec.cluster.as_str();
        let td = source_task_definition(&spec.task_definition, index, entries);
        let family = TaskDefRef::parse(&spec.task_definition).family;
        for (j, lb) in spec.load_balancers.iter().enumerate() {
            let base = format!("/spec/loadBalancers/{j}");
            if let Some((_, td)) = td {
                target(
                    i,
                    &base,
                    &lb.container_name,
                    lb.container_port,
                    family,
                    td,
                    out,
                );
            }
            let lp = format!("{base}/listenerPort");
            let port = lb.listener_port;
            if RESERVED_PORTS.contains(&port) {
                out.push(
                    Finding::error(
                        "listener-port",
                        i,
                        &lp,
                        format!(
                            "listener port {port} is reserved by the container agent on every node"
                        ),
                    )
                    .help(format!(
                        "reserved ports: {}",
                        RESERVED_PORTS.map(|p| p.to_string()).join(", ")
                    )),
                );
            } else if let Some((first, at)) = listeners.get(&(cluster, port)) {
                let owner = entries[*first].manifest.name();
                let whose = if *first == i {
                    "an earlier load balancer of this service".to_string()
                } else {
                    format!("service `{owner}`")
                };
                let mut f = Finding::error(
                    "listener-port",
                    i,
                    &lp,
                    format!("listener port {port} is already used in cluster `{cluster}` by {whose}"),
                )
                .help("a listener port is served on every node of the cluster, so it is unique in the cluster; the same container port may have several listeners on different ports");
                f.related
                    .push((*first, at.clone(), "first used here".into()));
                out.push(f);
            } else {
                listeners.insert((cluster, port), (i, lp.clone()));
                if let Some(h) = host_ports.get(&(cluster, port)) {
                    let mut f = Finding::error(
                        "listener-port",
                        i,
                        &lp,
                        format!(
                            "listener port {port} is also a fixed host port of container `{}` of task definition `{}`, run in cluster `{cluster}`",
                            h.container, h.family
                        ),
                    )
                    .help("the listener takes this port on every node; choose another listener port, or let the task use a dynamic host port (hostPort 0)");
                    f.related
                        .push((h.entry, h.pointer.clone(), "host port declared here".into()));
                    out.push(f);
                }
            }
            let hc = &lb.health_check;
            let hp = format!("{base}/healthCheck");
            if hc.timeout >= hc.interval {
                // Point at whichever of the two is written (both may be).
                let at = ["timeout", "interval"]
                    .map(|k| format!("{hp}/{k}"))
                    .into_iter()
                    .find(|p| e.document.spans.contains_key(p))
                    .unwrap_or_else(|| hp.clone());
                out.push(
                    Finding::error(
                        "health-check",
                        i,
                        at,
                        format!(
                            "healthCheck timeout ({} s) must be less than its interval ({} s)",
                            hc.timeout, hc.interval
                        ),
                    )
                    .help("a check must end before the next one starts"),
                );
            }
            if let Some(part) = inverted_range(&hc.matcher) {
                out.push(Finding::error(
                    "health-check",
                    i,
                    format!("{hp}/matcher"),
                    format!("matcher range `{part}` has its low end above its high end and matches no status"),
                ));
            }
            if lb.protocol == ListenerProtocol::Tcp {
                for k in ["path", "matcher"] {
                    let p = format!("{hp}/{k}");
                    if e.document.spans.contains_key(&p) {
                        out.push(
                            Finding::warning(
                                "health-check",
                                i,
                                p,
                                format!("healthCheck `{k}` has no effect on a TCP listener: its check is a connection"),
                            )
                            .at_key()
                            .help(format!("remove `{k}`, or use protocol HTTP")),
                        );
                    }
                }
            }
        }
        for (j, r) in spec.service_registries.iter().enumerate() {
            let base = format!("/spec/serviceRegistries/{j}");
            if let Some((_, td)) = td {
                target(
                    i,
                    &base,
                    &r.container_name,
                    r.container_port,
                    family,
                    td,
                    out,
                );
            }
            let name = r.effective_name(service);
            // An explicit name is checked by the schema's pattern; the
            // default comes from a service name, which allows `_` and 255
            // characters.
            let np = if r.name.is_some() {
                format!("{base}/name")
            } else {
                base.clone()
            };
            if r.name.is_none() && !dns_label(&name) {
                out.push(
                    Finding::error(
                        "service-registry",
                        i,
                        &np,
                        format!("the registry's name defaults to the service name lowercased, `{name}`, which is not a DNS label"),
                    )
                    .at_key()
                    .help("set `name`: 1 to 63 lowercase letters, digits or `-`, not starting or ending with `-`"),
                );
            } else if let Some((first, at)) = names.get(&(cluster, name.clone())) {
                let mut f = Finding::error(
                    "service-registry",
                    i,
                    &np,
                    format!(
                        "DNS name `{name}` is already registered in cluster `{cluster}` by service `{}`",
                        entries[*first].manifest.name()
                    ),
                )
                .help("registry names are unique in a cluster; set another `name`");
                if r.name.is_none() {
                    f = f.at_key();
                }
                f.related
                    .push((*first, at.clone(), "first registered here".into()));
                out.push(f);
            } else {
                names.insert((cluster, name), (i, np));
            }
        }
    }
}

/// An RFC 1123 label, lowercase.
fn dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matcher_ranges() {
        assert_eq!(inverted_range("200-399"), None);
        assert_eq!(inverted_range("200,204"), None);
        assert_eq!(inverted_range("200,399-200"), Some("399-200"));
    }

    #[test]
    fn labels() {
        assert!(dns_label("web-1"));
        assert!(!dns_label("my_web"));
        assert!(!dns_label("-web"));
        assert!(!dns_label(&"a".repeat(64)));
    }
}
