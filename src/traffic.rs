//! Who gets traffic: from the applied services and the tasks their nodes
//! report, each cluster's listeners with their routable targets, its DNS
//! records, and the target health checks each node runs. Pure: the
//! controller feeds it and ships the result to its agents.
//!
//! A task is a target of each of its service's load balancers once its
//! node reports the container port bound; it is routable while it runs,
//! its target health is HEALTHY and it is not draining. A draining task
//! gets no new requests and leaves DNS; the node that runs it keeps
//! checking it until it stops.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use crate::manifest::traffic::{LoadBalancer, ServiceRegistry};
use crate::manifest::ServiceSpec;
use crate::model::{Health, TargetHealth, Task, TaskStatus};
use crate::store::Stored;
use crate::wire::{DnsEndpoint, ListenerView, TargetAddr, TargetCheck, Traffic};

/// The DNS domain service names live under unless the controller is told
/// otherwise: `.internal` is reserved for private use.
pub const DEFAULT_DOMAIN: &str = "reconcile.internal";

/// An applied service with traffic settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub cluster: String,
    pub name: String,
    pub load_balancers: Vec<LoadBalancer>,
    pub registries: Vec<ServiceRegistry>,
    /// Its task definition has container health checks.
    pub checks: bool,
}

impl Service {
    /// The service's traffic settings, None when it has none.
    pub fn of(cluster: &str, name: &str, spec: &ServiceSpec, checks: bool) -> Option<Service> {
        (!spec.load_balancers.is_empty() || !spec.service_registries.is_empty()).then(|| Service {
            cluster: cluster.to_string(),
            name: name.to_string(),
            load_balancers: spec.load_balancers.clone(),
            registries: spec.service_registries.clone(),
            checks,
        })
    }

    fn owns(&self, t: &Task) -> bool {
        t.identity.cluster == self.cluster && t.identity.service.as_deref() == Some(&self.name)
    }

    /// Whether a running task may take traffic and appear in DNS (before
    /// draining is considered).
    pub fn in_service(&self, t: &Task) -> bool {
        if t.last_status != TaskStatus::Running {
            return false;
        }
        if self.load_balancers.is_empty() {
            match t.health {
                Health::Healthy => true,
                Health::Unknown => !self.checks,
                Health::Unhealthy => false,
            }
        } else {
            t.target_health == Some(TargetHealth::Healthy) && t.health != Health::Unhealthy
        }
    }
}

/// The services of `stored` with traffic settings, by cluster.
pub fn services_of(stored: &Stored) -> BTreeMap<String, Vec<Service>> {
    let mut by_cluster: BTreeMap<String, Vec<Service>> = BTreeMap::new();
    for s in stored.services.values() {
        let family = crate::model::TaskDefRef::parse(&s.spec.task_definition).family;
        let checks = stored
            .revisions
            .get(family)
            .and_then(|r| r.iter().find(|r| r.number == s.revision))
            .is_some_and(|r| {
                r.spec
                    .container_definitions
                    .iter()
                    .any(|c| c.essential && c.health_check.is_some())
            });
        if let Some(t) = Service::of(&s.key.cluster, &s.key.name, &s.spec, checks) {
            by_cluster.entry(s.key.cluster.clone()).or_default().push(t);
        }
    }
    by_cluster
}

/// Whether the revision `task` runs has essential container health
/// checks (else its target health alone decides its health).
pub fn container_checks(stored: &Stored, task: &Task) -> bool {
    stored
        .revisions
        .get(&task.identity.family)
        .and_then(|r| r.iter().find(|r| r.number == task.identity.revision))
        .is_some_and(|r| {
            r.spec
                .container_definitions
                .iter()
                .any(|c| c.essential && c.health_check.is_some())
        })
}

/// A registry's full DNS name, without the trailing dot.
pub fn dns_name(r: &ServiceRegistry, service: &str, cluster: &str, domain: &str) -> String {
    format!(
        "{}.{}.{domain}",
        r.effective_name(service),
        cluster.to_ascii_lowercase()
    )
}

/// A node as traffic sees it.
pub struct Node<'a> {
    pub name: &'a str,
    /// Where other nodes reach the host ports of its tasks; None until its
    /// agent said.
    pub address: Option<IpAddr>,
    /// Its tasks (assigned and reported): nodes that are LOST have none.
    pub tasks: &'a [Task],
}

/// The id a target check of `task` on `listener_port` goes by.
pub fn check_id(task: &str, listener_port: u16) -> String {
    format!("{task}/{listener_port}")
}

/// The task a check id belongs to.
pub fn check_task(id: &str) -> &str {
    id.rsplit_once('/').map_or(id, |(t, _)| t)
}

/// The host address of `task`'s binding of a container port.
fn endpoint(t: &Task, addr: IpAddr, container: &str, port: u16) -> Option<SocketAddr> {
    t.bindings
        .iter()
        .find(|b| b.container_name == container && b.container_port == port && b.host_port != 0)
        .map(|b| SocketAddr::new(addr, b.host_port))
}

/// What node `node` of a cluster is sent: the cluster's listeners and DNS
/// records, and the checks of its own tasks. `services` are the cluster's
/// services with traffic settings; `out` says which tasks are out of
/// traffic whatever their health: draining, or no longer assigned (being
/// stopped).
pub fn view(
    services: &[Service],
    nodes: &[Node<'_>],
    node: &str,
    out: &dyn Fn(&str) -> bool,
    domain: &str,
    generation: u64,
) -> Traffic {
    let mut listeners = Vec::new();
    let mut checks = Vec::new();
    let mut dns: BTreeMap<String, Vec<DnsEndpoint>> = BTreeMap::new();
    for s in services {
        let tasks = || {
            nodes.iter().flat_map(move |n| {
                n.tasks
                    .iter()
                    .filter(move |t| s.owns(t) && t.last_status != TaskStatus::Stopped)
                    .filter_map(move |t| n.address.map(|a| (n, t, a)))
            })
        };
        for lb in &s.load_balancers {
            let mut targets = Vec::new();
            for (n, t, a) in tasks() {
                let Some(addr) = endpoint(t, a, &lb.container_name, lb.container_port) else {
                    continue;
                };
                if n.name == node {
                    checks.push(TargetCheck {
                        id: check_id(&t.identity.id, lb.listener_port),
                        addr,
                        protocol: lb.protocol,
                        health_check: lb.health_check.clone(),
                    });
                }
                if s.in_service(t) && !out(&t.identity.id) {
                    targets.push(TargetAddr {
                        task: t.identity.id.clone(),
                        addr,
                    });
                }
            }
            listeners.push(ListenerView {
                service: format!("{}/{}", s.cluster, s.name),
                port: lb.listener_port,
                protocol: lb.protocol,
                algorithm: lb.algorithm,
                targets,
            });
        }
        for r in &s.registries {
            let name = dns_name(r, &s.name, &s.cluster, domain);
            let entry = dns.entry(name).or_default();
            for (_, t, a) in tasks() {
                if !s.in_service(t) || out(&t.identity.id) {
                    continue;
                }
                if let Some(e) = endpoint(t, a, &r.container_name, r.container_port) {
                    entry.push(DnsEndpoint {
                        ip: e.ip(),
                        port: e.port(),
                    });
                }
            }
        }
    }
    listeners.sort_by_key(|l| l.port);
    Traffic {
        generation,
        domain: domain.to_string(),
        listeners,
        checks,
        dns,
    }
}

/// Fill in the services' listeners with their targets (at their node's
/// address in `addresses`) and states, and with a `domain`, their DNS
/// names.
pub fn fill_status(
    observed: &crate::model::ObservedState,
    services: &mut [crate::report::ServiceStatus],
    addresses: &BTreeMap<String, IpAddr>,
    draining: &BTreeSet<String>,
    domain: Option<&str>,
) {
    for st in services {
        let Some(spec) = observed.services.get(&st.service).map(|s| &s.spec) else {
            continue;
        };
        for lb in &spec.load_balancers {
            let targets = st
                .tasks
                .iter()
                .filter(|t| t.last_status != crate::model::TaskStatus::Stopped)
                .map(|t| {
                    let port = t.ports.iter().find(|b| {
                        b.container_name == lb.container_name
                            && b.container_port == lb.container_port
                    });
                    let state = if draining.contains(&t.id) {
                        "DRAINING"
                    } else {
                        t.target_health.unwrap_or(TargetHealth::Initial).as_str()
                    };
                    crate::report::TargetStatus {
                        task: t.id.clone(),
                        node: t.node.clone(),
                        address: port
                            .zip(addresses.get(&t.node))
                            .map(|(b, a)| std::net::SocketAddr::new(*a, b.host_port).to_string()),
                        state: state.to_string(),
                    }
                })
                .collect();
            st.listeners.push(crate::report::ListenerStatus {
                port: lb.listener_port,
                protocol: lb.protocol,
                targets,
            });
        }
        if let Some(domain) = domain {
            st.dns_names = spec
                .service_registries
                .iter()
                .map(|r| dns_name(r, &st.name, &st.cluster, domain))
                .collect();
        }
    }
}

/// The target health of a task from the states of its checks (one per
/// listener): the worst of them; None when it has none.
pub fn task_health(states: impl IntoIterator<Item = TargetHealth>) -> Option<TargetHealth> {
    states.into_iter().fold(None, |worst, s| {
        Some(match (worst, s) {
            (Some(TargetHealth::Unhealthy), _) | (_, TargetHealth::Unhealthy) => {
                TargetHealth::Unhealthy
            }
            (Some(TargetHealth::Initial), _) | (_, TargetHealth::Initial) => TargetHealth::Initial,
            _ => TargetHealth::Healthy,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::traffic::TargetHealthCheck;
    use crate::model::{NetworkBinding, TaskIdentity};

    fn lb(port: u16) -> LoadBalancer {
        LoadBalancer {
            container_name: "web".into(),
            container_port: 8080,
            listener_port: port,
            protocol: Default::default(),
            algorithm: Default::default(),
            health_check: TargetHealthCheck::default(),
            deregistration_delay: 30,
        }
    }

    fn task(id: &str, host_port: u16, target: Option<TargetHealth>) -> Task {
        Task {
            identity: TaskIdentity {
                id: id.into(),
                cluster: "prod".into(),
                service: Some("web".into()),
                family: "web".into(),
                revision: 1,
                config_hash: "h".into(),
                started_by: None,
            },
            node: "n".into(),
            last_status: TaskStatus::Running,
            health: Health::Unknown,
            started_at: Some(0),
            stop_code: None,
            stopped_reason: None,
            bindings: vec![NetworkBinding {
                container_name: "web".into(),
                container_port: 8080,
                host_port,
                protocol: Default::default(),
            }],
            target_health: target,
            exits: Vec::new(),
            stopped_at: None,
        }
    }

    fn service() -> Service {
        Service {
            cluster: "prod".into(),
            name: "web".into(),
            load_balancers: vec![lb(80)],
            registries: vec![ServiceRegistry {
                name: None,
                container_name: "web".into(),
                container_port: 8080,
            }],
            checks: false,
        }
    }

    #[test]
    fn only_healthy_tasks_that_are_not_draining_are_routed_and_named() {
        let a = [
            task("t1", 32001, Some(TargetHealth::Healthy)),
            task("t2", 32002, Some(TargetHealth::Initial)),
            task("t3", 32003, Some(TargetHealth::Healthy)),
        ];
        let b = [task("t4", 32004, Some(TargetHealth::Unhealthy))];
        let nodes = [
            Node {
                name: "n1",
                address: Some("10.0.0.1".parse().unwrap()),
                tasks: &a,
            },
            Node {
                name: "n2",
                address: Some("10.0.0.2".parse().unwrap()),
                tasks: &b,
            },
        ];
        let draining = BTreeSet::from(["t3".to_string()]);
        let v = view(
            &[service()],
            &nodes,
            "n2",
            &|id| draining.contains(id),
            DEFAULT_DOMAIN,
            7,
        );
        assert_eq!(v.generation, 7);
        let routed: Vec<&str> = v.listeners[0]
            .targets
            .iter()
            .map(|t| t.task.as_str())
            .collect();
        assert_eq!(routed, ["t1"]);
        assert_eq!(v.listeners[0].port, 80);
        // Node n2 checks its own task only, draining or not.
        let checked: Vec<&str> = v.checks.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(checked, ["t4/80"]);
        assert_eq!(v.checks[0].addr, "10.0.0.2:32004".parse().unwrap());
        let names = &v.dns["web.prod.reconcile.internal"];
        assert_eq!(names.len(), 1);
        assert_eq!(names[0].port, 32001);
    }

    #[test]
    fn a_node_without_an_address_offers_no_targets() {
        let a = [task("t1", 32001, Some(TargetHealth::Healthy))];
        let nodes = [Node {
            name: "n1",
            address: None,
            tasks: &a,
        }];
        let v = view(&[service()], &nodes, "n1", &|_| false, "d", 1);
        assert!(v.listeners[0].targets.is_empty());
        assert!(v.checks.is_empty());
    }

    #[test]
    fn a_task_is_as_healthy_as_its_worst_listener() {
        use TargetHealth::*;
        assert_eq!(task_health([Healthy, Healthy]), Some(Healthy));
        assert_eq!(task_health([Healthy, Initial]), Some(Initial));
        assert_eq!(task_health([Initial, Unhealthy]), Some(Unhealthy));
        assert_eq!(task_health([]), None);
    }

    #[test]
    fn target_health_folds_into_task_health() {
        use TargetHealth::*;
        assert_eq!(Healthy.fold(Health::Unknown, false), Health::Healthy);
        assert_eq!(Healthy.fold(Health::Unknown, true), Health::Unknown);
        assert_eq!(Initial.fold(Health::Healthy, true), Health::Unknown);
        assert_eq!(Unhealthy.fold(Health::Healthy, true), Health::Unhealthy);
        assert_eq!(Healthy.fold(Health::Unhealthy, true), Health::Unhealthy);
    }
}
