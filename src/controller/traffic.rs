//! The controller's side of traffic: which applied services have listeners
//! or DNS names, which tasks are draining, and the generation agents
//! acknowledge. What each node serves is computed by [`crate::traffic`]
//! from these and the tasks nodes report; a change of any input bumps the
//! generation, which wakes the agents' long polls.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::{Controller, Members};
use crate::model::{TargetHealth, Task};
use crate::plan;
use crate::store::Stored;
use crate::traffic::{self, Service};
use crate::wire::{NodeStatus, Traffic};

/// Traffic state the controller keeps (in memory: after a restart the
/// agents report what runs and draining starts afresh).
#[derive(Default)]
pub(super) struct TrafficState {
    /// Cluster -> its services with traffic settings.
    services: BTreeMap<String, Vec<Service>>,
    /// Service key -> its longest deregistration delay.
    delays: BTreeMap<String, Duration>,
    /// Tasks being taken out of traffic before they stop.
    pub(super) draining: BTreeSet<String>,
    /// Bumped on every change of what nodes serve.
    pub(super) generation: u64,
}

/// Whether a node's new report changes what traffic sees of it.
fn changed(old: &[Task], new: &[Task]) -> bool {
    let key = |t: &Task| {
        (
            t.identity.id.clone(),
            t.last_status,
            t.health,
            t.target_health,
            t.bindings.clone(),
        )
    };
    old.len() != new.len() || old.iter().zip(new).any(|(a, b)| key(a) != key(b))
}

impl Controller {
    pub(super) fn traffic(&self) -> std::sync::MutexGuard<'_, TrafficState> {
        super::guard(&self.traffic)
    }

    /// Bump the traffic generation and wake the agents' long polls.
    pub(super) fn traffic_changed(&self) {
        self.traffic().generation += 1;
        self.assignments_changed();
    }

    /// The applied state was saved: refresh which services have traffic.
    pub(super) fn traffic_services(&self, stored: &Stored) {
        let services = traffic::services_of(stored);
        let changed = {
            let mut t = self.traffic();
            if t.services == services {
                false
            } else {
                t.delays = services
                    .values()
                    .flatten()
                    .map(|s| {
                        let delay = s
                            .load_balancers
                            .iter()
                            .map(|l| l.deregistration_delay)
                            .max()
                            .unwrap_or(0);
                        (
                            format!("{}/{}", s.cluster, s.name),
                            Duration::from_secs(delay.into()),
                        )
                    })
                    .collect();
                t.services = services;
                true
            }
        };
        if changed {
            self.traffic_changed();
        }
    }

    /// A heartbeat from `node` in `cluster` replaces its report `old` with
    /// `new`: when traffic sees a difference, the events to record (target
    /// health changes) and the generation is to be bumped once the caller
    /// released the members lock (Some); else None.
    pub(super) fn traffic_report(
        &self,
        node: &str,
        cluster: &str,
        old: &[Task],
        new: &[Task],
    ) -> Option<Vec<(String, String)>> {
        let relevant = self.traffic().services.contains_key(cluster);
        if !relevant || !changed(old, new) {
            return None;
        }
        let before: BTreeMap<&str, Option<TargetHealth>> = old
            .iter()
            .map(|t| (t.identity.id.as_str(), t.target_health))
            .collect();
        let mut events = Vec::new();
        for t in new {
            let Some(h) = t.target_health else { continue };
            let was = before.get(t.identity.id.as_str()).copied().flatten();
            if was == Some(h) || h == TargetHealth::Initial {
                continue;
            }
            let service = t.identity.service.as_deref().unwrap_or("-");
            let what = match h {
                TargetHealth::Healthy => "passed its target health checks: registered",
                _ => "failed its target health checks: no new requests",
            };
            events.push((
                format!("{cluster}/{service}"),
                format!(
                    "service {service}: task {} on node {node} {what}",
                    plan::short(&t.identity.id)
                ),
            ));
        }
        Some(events)
    }

    /// What node `name` serves, when it has not acknowledged the current
    /// generation yet; None when it has (or its cluster has no traffic).
    pub(super) fn traffic_for(&self, s: &Members, name: &str) -> Option<Traffic> {
        let n = s.nodes.get(name)?;
        let t = self.traffic();
        if n.traffic_ack == t.generation {
            return None;
        }
        let cluster = &n.record.info.cluster;
        let empty = Vec::new();
        let services = t.services.get(cluster).unwrap_or(&empty);
        let nodes: Vec<traffic::Node<'_>> = s
            .nodes
            .values()
            .filter(|m| &m.record.info.cluster == cluster && m.record.status != NodeStatus::Lost)
            .map(|m| traffic::Node {
                name: &m.record.info.name,
                address: m.address,
                tasks: &m.reported,
            })
            .collect();
        // A task being stopped is unassigned before its node stops it: it
        // must not come back into traffic meanwhile.
        let out = |id: &str| t.draining.contains(id) || !s.assignments.contains_key(id);
        Some(traffic::view(
            services,
            &nodes,
            name,
            &out,
            &self.config.dns_domain,
            t.generation,
        ))
    }

    /// Take tasks out of traffic and wait until every node of their
    /// clusters serves that and has no request in flight to them, or
    /// their services' deregistration delay passed.
    pub(super) async fn drain(&self, ids: &[String]) {
        let (clusters, delay, services) = {
            let s = self.members();
            let mut clusters = BTreeSet::new();
            let mut services: BTreeMap<String, Vec<&str>> = BTreeMap::new();
            let t = self.traffic();
            let mut delay = Duration::ZERO;
            for id in ids {
                let Some(a) = s.assignments.get(id) else {
                    continue;
                };
                let task = &a.task.identity;
                let Some(service) = &task.service else {
                    continue;
                };
                let key = format!("{}/{service}", task.cluster);
                let Some(d) = t.delays.get(&key) else {
                    continue;
                };
                clusters.insert(task.cluster.clone());
                services.entry(key).or_default().push(plan::short(id));
                delay = delay.max(*d);
            }
            (clusters, delay, services)
        };
        if clusters.is_empty() {
            return;
        }
        let say = |what: &str| {
            for (key, tasks) in &services {
                let service = key.rsplit_once('/').map_or(key.as_str(), |(_, n)| n);
                self.service_event(
                    key,
                    format!("service {service}: task(s) {} {what}", tasks.join(", ")),
                );
            }
        };
        let generation = {
            let mut t = self.traffic();
            t.draining.extend(ids.iter().cloned());
            t.generation += 1;
            t.generation
        };
        self.assignments_changed();
        say(&format!(
            "deregistered: no new requests, draining those in flight (at most {} s)",
            delay.as_secs()
        ));
        let deadline = Instant::now() + delay;
        let mut reports = self.reported.subscribe();
        loop {
            reports.borrow_and_update();
            let pending: Vec<String> = {
                let s = self.members();
                s.nodes
                    .values()
                    .filter(|n| clusters.contains(&n.record.info.cluster))
                    .filter(|n| n.record.status != NodeStatus::Lost && n.last_seen.is_some())
                    .filter(|n| {
                        n.traffic_ack < generation
                            || ids
                                .iter()
                                .any(|id| n.inflight.get(id).copied().unwrap_or(0) > 0)
                    })
                    .map(|n| n.record.info.name.clone())
                    .collect()
            };
            if pending.is_empty() {
                say("drained: no request in flight on any node");
                return;
            }
            if Instant::now() >= deadline {
                say(&format!(
                    "still served by node(s) {} when the deregistration delay of {} s passed",
                    pending.join(", "),
                    delay.as_secs()
                ));
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), reports.changed()).await;
        }
    }

    /// A task no longer assigned is no longer draining.
    pub(super) fn drained(&self, id: &str) {
        self.traffic().draining.remove(id);
    }

    /// Fill in the services' listeners with their targets and states, and
    /// their DNS names.
    pub(super) fn traffic_status(
        &self,
        observed: &crate::model::ObservedState,
        services: &mut [crate::report::ServiceStatus],
    ) {
        let addresses: BTreeMap<String, std::net::IpAddr> = self
            .members()
            .nodes
            .iter()
            .filter_map(|(k, n)| n.address.map(|a| (k.clone(), a)))
            .collect();
        let draining = self.traffic().draining.clone();
        traffic::fill_status(
            observed,
            services,
            &addresses,
            &draining,
            Some(&self.config.dns_domain),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(health: Option<TargetHealth>) -> Task {
        let mut t = super::super::tests::running("t1");
        t.target_health = health;
        t
    }

    /// A task the controller stopped is unassigned before its container
    /// is gone; its node still reports it running and healthy meanwhile,
    /// and it must stay out of every listener.
    #[tokio::test]
    async fn a_task_being_stopped_is_not_routed_while_its_node_still_reports_it() {
        use crate::runtime::Runtime;
        let dir = tempfile::tempdir().unwrap();
        let c = super::super::tests::controller(dir.path());
        c.join("n1", "c").unwrap();
        let spec: crate::manifest::ServiceSpec = serde_json::from_value(serde_json::json!({
            "cluster": "c", "taskDefinition": "web", "desiredCount": 1,
            "loadBalancers": [{"containerName": "a", "containerPort": 8080, "listenerPort": 80}]
        }))
        .unwrap();
        let mut stored = Stored::default();
        stored.services.insert(
            "c/web".into(),
            crate::model::ObservedService {
                key: crate::model::ServiceKey {
                    cluster: "c".into(),
                    name: "web".into(),
                },
                spec,
                revision: 1,
                config_hash: "h".into(),
                secret_fingerprints: BTreeMap::new(),
            },
        );
        c.traffic_services(&stored);
        c.heartbeat("n1", super::super::tests::heartbeat(Vec::new(), true))
            .unwrap();
        let fleet = super::super::Fleet {
            controller: c.clone(),
        };
        fleet
            .start(super::super::tests::launch("t1"))
            .await
            .unwrap();
        let mut t1 = super::super::tests::running("t1");
        t1.bindings = vec![crate::model::NetworkBinding {
            container_name: "a".into(),
            container_port: 8080,
            host_port: 32000,
            protocol: Default::default(),
        }];
        t1.target_health = Some(TargetHealth::Healthy);
        let beat = || {
            let mut hb = super::super::tests::heartbeat(vec![t1.clone()], true);
            hb.address = Some("10.0.0.1".parse().unwrap());
            c.heartbeat("n1", hb)
                .unwrap()
                .traffic
                .expect("what to serve")
        };
        let routed = |t: &Traffic| -> Vec<String> {
            t.listeners[0]
                .targets
                .iter()
                .map(|t| t.task.clone())
                .collect()
        };
        assert_eq!(routed(&beat()), ["t1"]);
        fleet.remove("t1").await.unwrap();
        assert!(
            routed(&beat()).is_empty(),
            "unassigned, still reported running"
        );
    }

    #[test]
    fn only_what_traffic_reads_counts_as_a_change() {
        let a = task(Some(TargetHealth::Initial));
        let mut b = a.clone();
        b.started_at = Some(2);
        assert!(!changed(std::slice::from_ref(&a), &[b]));
        let c = task(Some(TargetHealth::Healthy));
        assert!(changed(std::slice::from_ref(&a), &[c]));
        assert!(changed(&[a], &[]));
    }
}
