//! `portMappings` and `extraHosts`: how a container is reached and what
//! names it resolves. Separate because port mappings carry the most rules
//! (numbers, protocols, names, ranges, the per-container limit).

use serde_json::{json, Value};

use crate::import::fields::{count, each_object, show, string};
use crate::import::render::Defaults;
use crate::import::report::{key, Ctx};
use crate::import::task_definition::MAX_PORT_MAPPINGS;
use crate::manifest::task_definition::{HostEntry, PortMapping, Protocol};

fn protocol(ctx: &mut Ctx, path: &str, v: Value) -> Option<Protocol> {
    let s = string(ctx, path, v)?;
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        _ => {
            ctx.error(
                path,
                format!("unknown protocol `{s}`; expected tcp or udp"),
                None,
            );
            None
        }
    }
}

fn port_number(ctx: &mut Ctx, path: &str, v: Value, min: u64) -> Option<u16> {
    let n = count(ctx, path, v)?;
    if n < min || n > 65535 {
        ctx.error(path, format!("port {n} is outside {min} to 65535"), None);
        return None;
    }
    Some(n as u16)
}

pub(super) fn ports(
    ctx: &mut Ctx,
    path: &str,
    v: Value,
    base: &str,
    d: &mut Defaults,
    origin: &mut Vec<usize>,
) -> Vec<PortMapping> {
    let mut out = Vec::new();
    let port_name =
        regex::Regex::new(r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$").expect("valid regex");
    each_object(ctx, path, v, |ctx, k, ip, mut pm| {
        let container_port = pm.read(ctx, "containerPort", |ctx, p, v| port_number(ctx, p, v, 1));
        let host_port = pm.read(ctx, "hostPort", |ctx, p, v| port_number(ctx, p, v, 0));
        let protocol_given = pm.take("protocol");
        let protocol = protocol_given
            .clone()
            .and_then(|v| protocol(ctx, &key(ip, "protocol"), v))
            .unwrap_or_default();
        let mut name = pm.read(ctx, "name", string);
        if let Some(n) = &name {
            if !port_name.is_match(n) {
                ctx.warn(
                    &key(ip, "name"),
                    format!("dropped port mapping name `{n}`: names are lowercase letters, digits and inner `-`, at most 64"),
                    "rename it if something refers to it",
                );
                name = None;
            }
        }
        if let Some(v) = pm.take("appProtocol") {
            ctx.note(
                &key(ip, "appProtocol"),
                format!("dropped appProtocol {}: it configures ECS Service Connect, which reconcile does not have", show(&v)),
            );
        }
        let ranges = pm.take_all(&["containerPortRange", "hostPortRange"]);
        pm.finish(ctx, "a port mapping");
        let Some(container_port) = container_port else {
            if ranges.is_empty() {
                ctx.warn(
                    ip,
                    "dropped a port mapping without containerPort",
                    "add containerPort in the input if the port matters",
                );
            } else {
                let what: Vec<String> = ranges.iter().map(|(_, v)| show(v)).collect();
                ctx.warn_many(
                    ranges.into_iter().map(|(p, _)| p).collect(),
                    format!(
                        "dropped a port range mapping ({}): port ranges are not supported",
                        what.join(", ")
                    ),
                    "list the ports one by one as containerPort mappings",
                );
            }
            return;
        };
        if !ranges.is_empty() {
            ctx.warn_many(
                ranges.into_iter().map(|(p, _)| p).collect(),
                "dropped the port range of a mapping that also has containerPort",
                "list further ports one by one",
            );
        }
        if out.len() >= MAX_PORT_MAPPINGS {
            ctx.warn(
                ip,
                format!("dropped: a container has at most {MAX_PORT_MAPPINGS} port mappings"),
                "publish fewer ports",
            );
            return;
        }
        if protocol_given.is_none() {
            d.add(
                format!("{base}/portMappings/{}/protocol", out.len()),
                json!("tcp"),
            );
        }
        origin.push(k);
        out.push(PortMapping {
            container_port,
            host_port,
            protocol,
            name,
        });
    });
    out
}

pub(super) fn extra_hosts(ctx: &mut Ctx, path: &str, v: Value) -> Vec<HostEntry> {
    let mut out = Vec::new();
    each_object(ctx, path, v, |ctx, _, ip, mut e| {
        let hostname = e.read(ctx, "hostname", string);
        let ip_address = e.read(ctx, "ipAddress", string);
        e.finish(ctx, "an extra host");
        match (hostname, ip_address) {
            (Some(hostname), Some(ip_address)) => out.push(HostEntry {
                hostname,
                ip_address,
            }),
            _ => ctx.warn(
                ip,
                "dropped an extraHosts entry without hostname or ipAddress",
                "complete it if it matters",
            ),
        }
    });
    out
}
