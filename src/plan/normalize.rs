//! Normalisation before diffing: defaults filled and lists whose order has
//! no meaning put in a canonical order, so that an unchanged manifest never
//! shows a change and an equivalent one never registers a new revision.
//!
//! Serde already fills the defaults of the types; what is left is effective
//! values that depend on other fields and canonical ordering.

use crate::manifest::{ClusterSpec, ScheduledTaskSpec, ServiceSpec, TaskDefinitionSpec};

/// Canonical form of a task definition spec.
pub fn task_definition(spec: &TaskDefinitionSpec) -> TaskDefinitionSpec {
    let mut s = spec.clone();
    // Containers start in dependsOn order, not list order.
    s.container_definitions.sort_by(|a, b| a.name.cmp(&b.name));
    for c in &mut s.container_definitions {
        c.environment.sort();
        c.environment.dedup();
        c.secrets.sort();
        c.port_mappings
            .sort_by_key(|p| (p.container_port, p.protocol, p.host_port));
        c.depends_on.sort();
        c.mount_points
            .sort_by(|a, b| a.container_path.cmp(&b.container_path));
        c.volumes_from
            .sort_by(|a, b| a.source_container.cmp(&b.source_container));
        c.ulimits.sort();
        c.extra_hosts.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        c.system_controls
            .sort_by(|a, b| a.namespace.cmp(&b.namespace));
        if let Some(lp) = &mut c.linux_parameters {
            if let Some(caps) = &mut lp.capabilities {
                caps.add.sort();
                caps.drop.sort();
            }
        }
        // Bridge mode: an unset host port and 0 both mean "dynamic".
        for p in &mut c.port_mappings {
            if p.host_port == Some(0) {
                p.host_port = None;
            }
        }
    }
    s.volumes.sort_by(|a, b| a.name.cmp(&b.name));
    s.placement_constraints
        .sort_by(|a, b| (a.kind as u8, &a.expression).cmp(&(b.kind as u8, &b.expression)));
    s
}

/// Canonical form of a service spec: effective deployment percentages and
/// registry names spelled out, set-like lists sorted.
pub fn service(name: &str, spec: &ServiceSpec) -> ServiceSpec {
    let mut s = spec.clone();
    // Listener ports are unique in a cluster, so they order the listeners
    // and key them in the plan's diff; the order written means nothing.
    s.load_balancers.sort_by_key(|lb| lb.listener_port);
    // `name: web` and no name on service `web` are the same registry.
    for r in &mut s.service_registries {
        r.name = Some(r.effective_name(name));
    }
    s.service_registries.sort_by(|a, b| a.name.cmp(&b.name));
    let d = &mut s.deployment_configuration;
    d.minimum_healthy_percent = Some(d.min_healthy(spec.scheduling_strategy));
    d.maximum_percent = Some(d.max_percent(spec.scheduling_strategy));
    s.placement_constraints
        .sort_by(|a, b| (a.kind as u8, &a.expression).cmp(&(b.kind as u8, &b.expression)));
    s.capacity_provider_strategy
        .sort_by(|a, b| a.capacity_provider.cmp(&b.capacity_provider));
    s
}

/// Canonical form of a scheduled task spec: the effective startedBy spelled
/// out, empty overrides dropped, set-like lists sorted. Placement
/// strategies keep their order: it is their precedence.
pub fn scheduled_task(name: &str, spec: &ScheduledTaskSpec) -> ScheduledTaskSpec {
    let mut s = spec.clone();
    // No startedBy and the default one written out are the same tag.
    s.started_by = Some(spec.effective_started_by(name));
    if let Some(o) = &mut s.overrides {
        // Validation keeps containers and variables unique per override,
        // so their order carries no meaning.
        o.container_overrides.sort_by(|a, b| a.name.cmp(&b.name));
        for c in &mut o.container_overrides {
            c.environment.sort();
        }
    }
    if s.overrides.as_ref().is_some_and(|o| o.is_empty()) {
        s.overrides = None;
    }
    s.placement_constraints
        .sort_by(|a, b| (a.kind as u8, &a.expression).cmp(&(b.kind as u8, &b.expression)));
    s.capacity_provider_strategy
        .sort_by(|a, b| a.capacity_provider.cmp(&b.capacity_provider));
    s
}

/// Canonical form of a cluster spec.
pub fn cluster(spec: &ClusterSpec) -> ClusterSpec {
    let mut s = spec.clone();
    s.capacity_providers.sort();
    s.default_capacity_provider_strategy
        .sort_by(|a, b| a.capacity_provider.cmp(&b.capacity_provider));
    s
}
