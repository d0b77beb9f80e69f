//! What a node serves for its cluster's traffic: the listeners of its
//! services (balancing over targets on every node), the target health
//! checks of its own tasks, and the DNS names its containers resolve. The
//! controller sends what to serve ([`Traffic`]); this applies it and
//! reports back the checks' results and the requests in flight. The
//! agent of each fleet node runs one, and so does a standalone source's
//! traffic container ([`crate::reconcile::traffic`]), without DNS.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::dns::{DnsServer, Endpoint};
use crate::lb::health::{CheckSpec, Checker, TargetState};
use crate::lb::{self, ListenerSpec, Listeners, Target};
use crate::manifest::traffic::{BalancingAlgorithm, ListenerProtocol};
use crate::model::{TargetHealth, Task};
use crate::traffic;
use crate::wire::Traffic;

pub struct Serving {
    listeners: Listeners,
    checker: Checker,
    dns_ip: Option<IpAddr>,
    dns: Option<DnsServer>,
    /// The generation applied, and the domain and records served.
    generation: u64,
    domain: Option<String>,
    /// Targets new requests may go to: the others with requests in flight
    /// are draining.
    routed: BTreeSet<String>,
    /// Listener ports that could not be bound, reported once each.
    failed: BTreeSet<u16>,
}

fn protocol(p: ListenerProtocol) -> lb::Protocol {
    match p {
        ListenerProtocol::Http => lb::Protocol::Http,
        ListenerProtocol::Tcp => lb::Protocol::Tcp,
    }
}

impl Serving {
    /// Listeners bind on `listen`; DNS is served on `dns` (port 53), once
    /// the controller said under which domain, if it can be bound.
    pub fn new(listen: IpAddr, dns: Option<IpAddr>) -> Serving {
        Serving {
            listeners: Listeners::new(listen),
            checker: Checker::new(),
            dns_ip: dns,
            dns: None,
            generation: 0,
            domain: None,
            routed: BTreeSet::new(),
            failed: BTreeSet::new(),
        }
    }

    /// (Re)bind the DNS server for `domain`.
    async fn serve_dns(&mut self, domain: &str) {
        let Some(ip) = self.dns_ip else { return };
        if let Some(old) = self.dns.take() {
            old.shutdown().await;
        }
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let upstream = crate::dns::upstream_from_resolv_conf(&resolv, &[ip]);
        match DnsServer::bind(SocketAddr::new(ip, 53), domain, upstream).await {
            Ok(s) => {
                tracing::info!("traffic: answering service DNS names under {domain} on {ip}:53");
                self.dns = Some(s);
            }
            Err(e) => tracing::warn!(
                "agent: cannot serve DNS on {ip}:53 ({e}); containers of this node keep the \
                 engine's resolvers and service names do not resolve here"
            ),
        }
    }

    /// The generation served.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Where containers resolve names, and the search domain for a
    /// cluster's short names; None without DNS.
    pub fn resolver(&self, cluster: &str) -> Option<(IpAddr, String)> {
        let server = self.dns.as_ref()?;
        let domain = self.domain.as_deref().unwrap_or(traffic::DEFAULT_DOMAIN);
        Some((
            server.local_addr().ip(),
            format!("{}.{domain}", cluster.to_ascii_lowercase()),
        ))
    }

    /// Serve what the controller sent.
    pub async fn apply(&mut self, t: Traffic) {
        if t.generation == self.generation {
            return;
        }
        self.routed = t
            .listeners
            .iter()
            .flat_map(|l| l.targets.iter().map(|t| t.task.clone()))
            .collect();
        let specs = t
            .listeners
            .iter()
            .map(|l| ListenerSpec {
                port: l.port,
                protocol: protocol(l.protocol),
                algorithm: match l.algorithm {
                    BalancingAlgorithm::RoundRobin => lb::Algorithm::RoundRobin,
                    BalancingAlgorithm::LeastOutstandingRequests => lb::Algorithm::LeastOutstanding,
                },
                targets: l
                    .targets
                    .iter()
                    .map(|t| Target {
                        id: t.task.clone(),
                        addr: t.addr,
                    })
                    .collect(),
                name: l.service.clone(),
            })
            .collect();
        let errors = self.listeners.set(specs).await;
        let failed: BTreeSet<u16> = errors.iter().map(|(p, _)| *p).collect();
        for (port, e) in &errors {
            if !self.failed.contains(port) {
                tracing::warn!("traffic: cannot serve listener port {port}: {e}");
            }
        }
        self.failed = failed;
        self.checker.set(
            t.checks
                .iter()
                .map(|c| CheckSpec {
                    id: c.id.clone(),
                    addr: c.addr,
                    protocol: protocol(c.protocol),
                    path: c.health_check.path.clone(),
                    interval: Duration::from_secs(c.health_check.interval.into()),
                    timeout: Duration::from_secs(c.health_check.timeout.into()),
                    healthy_threshold: c.health_check.healthy_threshold_count,
                    unhealthy_threshold: c.health_check.unhealthy_threshold_count,
                    matcher: c.health_check.matcher.clone(),
                })
                .collect(),
        );
        if self.domain.as_deref() != Some(&t.domain) {
            self.serve_dns(&t.domain).await;
        }
        if let Some(dns) = &self.dns {
            dns.set(
                t.dns
                    .iter()
                    .map(|(name, eps)| {
                        (
                            name.clone(),
                            eps.iter()
                                .map(|e| Endpoint {
                                    ip: e.ip,
                                    port: e.port,
                                })
                                .collect(),
                        )
                    })
                    .collect(),
            );
        }
        self.domain = Some(t.domain);
        self.generation = t.generation;
    }

    /// Fold the target health checks' results into the tasks reported.
    /// `checks`: whether each task's definition has container checks.
    pub fn fold(&self, tasks: &mut [Task], checks: impl Fn(&Task) -> bool) {
        let states = self.checker.states();
        let mut by_task: BTreeMap<&str, Vec<TargetHealth>> = BTreeMap::new();
        for (id, s) in &states {
            by_task
                .entry(traffic::check_task(id))
                .or_default()
                .push(match s {
                    TargetState::Initial => TargetHealth::Initial,
                    TargetState::Healthy => TargetHealth::Healthy,
                    TargetState::Unhealthy => TargetHealth::Unhealthy,
                });
        }
        for t in tasks {
            let Some(h) = by_task
                .remove(t.identity.id.as_str())
                .and_then(traffic::task_health)
            else {
                continue;
            };
            t.health = h.fold(t.health, checks(t));
            t.target_health = Some(h);
        }
    }

    /// Requests in flight per target.
    pub fn inflight(&self) -> BTreeMap<String, u64> {
        self.listeners.inflight()
    }

    /// Requests sent to each target since it appeared.
    pub fn served(&self) -> BTreeMap<String, u64> {
        self.listeners.served()
    }

    /// Whether a target being drained still has requests in flight here:
    /// the controller waits for this node to say when they are done.
    pub fn draining(&self) -> bool {
        self.listeners
            .inflight()
            .iter()
            .any(|(id, n)| *n > 0 && !self.routed.contains(id))
    }

    /// Wakes when a target health check changes state.
    pub fn checks_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.checker.subscribe()
    }
}
