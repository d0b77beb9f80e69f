//! Managed scaling, the I/O side: launch agent nodes for the tasks that
//! cannot be placed, retire idle ones ([`super::scaling`] decides).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{launcher, scaling, Controller};
use crate::model::{self, DesiredState};
use crate::plan;
use crate::wire::NodeStatus;

/// How long a launched node may take to join before it is given up.
pub(super) const JOIN_DEADLINE: Duration = Duration::from_secs(120);

impl Controller {
    pub(super) async fn launcher(&self) -> Result<&launcher::Launcher, String> {
        let owner = model::digest(&self.config.data_dir.display().to_string());
        let r = self
            .launcher
            .get_or_init(|| {
                launcher::Launcher::connect(
                    owner,
                    self.config.advertise_url.clone(),
                    &self.config.join_token,
                    self.config.data_dir.join("join-token"),
                    self.config.node_trust.clone(),
                )
            })
            .await;
        r.as_ref().map_err(Clone::clone)
    }

    /// One pass of managed scaling over every provider that has it.
    pub(super) async fn autoscale(&self) {
        let Some(desired) = self.applied().desired.clone() else {
            return;
        };
        let managed: Vec<(&String, &crate::manifest::CapacityProviderSpec)> = desired
            .capacity_providers
            .iter()
            .filter(|(_, p)| p.managed_scaling.status == crate::manifest::Toggle::Enabled)
            .collect();
        super::guard(&self.reservations).retain(|p, _| managed.iter().any(|(n, _)| *n == p));
        if managed.is_empty() {
            return;
        }
        // Only providers with a node template launch: the others publish
        // their reservation for an outside autoscaler.
        let launching = managed.iter().any(|(_, p)| p.node_template.is_some());
        let l = if launching {
            match self.launcher().await {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!("managed scaling: {e}");
                    None
                }
            }
        } else {
            None
        };
        let launched = match l {
            Some(l) => match l.launched().await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!("managed scaling: {e}");
                    return;
                }
            },
            None => Vec::new(),
        };
        let now = crate::clock::unix_now();
        for (name, spec) in managed {
            let Some(cluster) = desired
                .clusters
                .iter()
                .find(|(_, c)| c.capacity_providers.contains(name))
                .map(|(k, _)| k.clone())
            else {
                continue;
            };
            let l = match (&spec.node_template, l) {
                (None, _) => None,
                (Some(_), Some(l)) => Some(l),
                // Cannot launch now (logged above): nothing to decide.
                (Some(_), None) => continue,
            };
            let template = spec.node_template.clone().unwrap_or(
                crate::manifest::capacity_provider::NodeTemplate {
                    attributes: Default::default(),
                    minimum_size: 0,
                    maximum_size: u32::MAX / 200,
                },
            );
            let view = {
                // Launched nodes that never joined are given up.
                let stale: Vec<String> = {
                    let mut s = self.members();
                    let stale: Vec<String> = s
                        .joining
                        .iter()
                        .filter(|(_, (p, t))| p == name && t.elapsed() > JOIN_DEADLINE)
                        .map(|(n, _)| n.clone())
                        .collect();
                    for n in &stale {
                        s.joining.remove(n);
                    }
                    stale
                };
                for n in &stale {
                    self.event(format!(
                        "capacity provider {name}: node {n} did not join within {} s; removing it",
                        JOIN_DEADLINE.as_secs()
                    ));
                    if let Some(l) = l {
                        let _ = l.retire(n).await;
                    }
                }
                let unplaced = self.applied().unplaced.clone();
                let s = self.members();
                let mine: Vec<&super::Node> = s
                    .nodes
                    .values()
                    .filter(|n| n.record.status != NodeStatus::Lost)
                    .filter(|n| {
                        plan::provider_of(&desired, &n.record.info).as_deref() == Some(name)
                    })
                    .collect();
                let nodes: Vec<scaling::ScalingNode> = mine
                    .iter()
                    .map(|n| {
                        let me = launched.iter().find(|x| x.name == n.record.info.name);
                        scaling::ScalingNode {
                            name: n.record.info.name.clone(),
                            busy: s.assignments.values().any(|a| a.node == n.record.info.name)
                                || n.reported.iter().any(|t| t.is_live()),
                            launched: me.is_some(),
                            age: Duration::from_secs(
                                me.map_or(u64::MAX, |x| (now - x.created).max(0) as u64),
                            ),
                        }
                    })
                    .collect();
                let joining = s.joining.values().filter(|(p, _)| p == name).count() as u32;
                // What a new node offers: a launched agent's engine, else
                // the largest node the provider has (with none, any one
                // node is assumed to hold the tasks).
                let engine = match l {
                    Some(l) => l.engine,
                    None => mine
                        .iter()
                        .map(|n| (n.record.info.cpu, n.record.info.memory))
                        .max()
                        .unwrap_or((u32::MAX, u32::MAX)),
                };
                drop(s);
                let needed_extra = self.needed_nodes(&desired, &cluster, name, &unplaced, engine);
                scaling::ProviderView {
                    target_capacity: spec.managed_scaling.target_capacity,
                    min_step: spec.managed_scaling.minimum_scaling_step_size,
                    max_step: spec.managed_scaling.maximum_scaling_step_size,
                    min_size: template.minimum_size,
                    max_size: template.maximum_size,
                    warmup: Duration::from_secs(u64::from(
                        spec.managed_scaling.instance_warmup_period,
                    )),
                    protection: spec.managed_termination_protection
                        == crate::manifest::Toggle::Enabled,
                    nodes,
                    joining,
                    needed_extra,
                }
            };
            let (reservation, decision) = scaling::decide(&view);
            let (needed, nodes) = scaling::needed_and_nodes(&view);
            let published = crate::report::ProviderReservation {
                provider: name.clone(),
                reservation,
                target_capacity: spec.managed_scaling.target_capacity,
                needed_nodes: needed,
                nodes,
                desired_nodes: scaling::wanted(&view),
                launches: l.is_some(),
            };
            let before = super::guard(&self.reservations).insert(name.clone(), published.clone());
            let Some(l) = l else {
                // The hook of an outside autoscaler: the reservation and
                // wanted size in status and metrics, and an event when they
                // change.
                if before.as_ref() != Some(&published) {
                    self.event(format!(
                        "capacity provider {name}: reservation {reservation}% (target {}%), {needed} node(s) needed of {nodes}, {} wanted; no nodeTemplate, so nothing is launched",
                        spec.managed_scaling.target_capacity, published.desired_nodes
                    ));
                }
                continue;
            };
            match decision {
                scaling::Decision::Hold => {}
                scaling::Decision::Launch(k) => {
                    self.event(format!(
                        "capacity provider {name}: reservation {reservation}% (target {}%), launching {k} node(s)",
                        spec.managed_scaling.target_capacity
                    ));
                    for _ in 0..k {
                        let node = format!(
                            "{name}-{}",
                            &model::digest(&(now, name, std::time::SystemTime::now()))[..8]
                        );
                        match l.launch(&cluster, name, &node, &template.attributes).await {
                            Ok(()) => {
                                self.members()
                                    .joining
                                    .insert(node.clone(), (name.clone(), Instant::now()));
                            }
                            Err(e) => {
                                self.event(format!("capacity provider {name}: {e}"));
                                break;
                            }
                        }
                    }
                }
                scaling::Decision::Retire(names) => {
                    for node in names {
                        let busy = view.nodes.iter().any(|n| n.name == node && n.busy);
                        if busy {
                            // Without termination protection a busy node is
                            // drained first; it is removed once empty.
                            let draining = self
                                .members()
                                .nodes
                                .get(&node)
                                .is_some_and(|n| n.record.status == NodeStatus::Draining);
                            if !draining {
                                let _ = self.set_node_status(&node, NodeStatus::Draining);
                            }
                            continue;
                        }
                        self.event(format!(
                            "capacity provider {name}: reservation {reservation}% (target {}%), removing idle node {node}",
                            spec.managed_scaling.target_capacity
                        ));
                        if let Err(e) = l.retire(&node).await {
                            self.event(format!("capacity provider {name}: {e}"));
                            continue;
                        }
                        self.forget_node(&node);
                    }
                }
            }
        }
    }

    /// Nodes the unplaced tasks of services that use `provider` need: one
    /// per task under distinctInstance, else their reservations over what a
    /// launched node offers.
    pub(super) fn needed_nodes(
        &self,
        desired: &DesiredState,
        cluster: &str,
        provider: &str,
        unplaced: &BTreeMap<String, u32>,
        engine: (u32, u32),
    ) -> u32 {
        let mut total = 0;
        for (key, k) in unplaced {
            let Some(svc) = desired.services.get(key) else {
                continue;
            };
            if key.split_once('/').map(|(c, _)| c) != Some(cluster) {
                continue;
            }
            let strategy = plan::strategy_of(desired, cluster, &svc.spec);
            // The provider that gets these tasks: the first of the strategy
            // with a base or weight, or with no strategy any of the cluster.
            let first = strategy
                .iter()
                .find(|i| i.base > 0 || i.weight > 0)
                .map(|i| i.capacity_provider.as_str());
            if strategy.is_empty() || first == Some(provider) {
                let family = model::TaskDefRef::parse(&svc.spec.task_definition).family;
                let Some(td) = desired.task_definitions.get(family) else {
                    continue;
                };
                let distinct = td
                    .placement_constraints
                    .iter()
                    .chain(svc.spec.placement_constraints.iter())
                    .any(|c| c.kind == crate::manifest::PlacementConstraintType::DistinctInstance);
                let (cpu, mem, _) = model::reservation(td);
                total += if distinct {
                    *k
                } else {
                    let by_cpu = (k * cpu).div_ceil(engine.0.max(1));
                    let by_mem = (k * mem).div_ceil(engine.1.max(1));
                    by_cpu.max(by_mem).max(1)
                };
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::controller;

    /// A provider with managed scaling and no nodeTemplate: tasks that
    /// find no node raise its reservation (M > 0, N = 0: 200%), which
    /// status and the metric publish, and nothing is launched; they wait
    /// for nodes rather than fail the reconcile.
    #[tokio::test]
    async fn a_provider_without_template_publishes_its_reservation() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(
            dir.path().join("src/all.yaml"),
            "apiVersion: reconcile/v1alpha1
kind: Cluster
metadata: {name: c}
spec: {capacityProviders: [p]}
---
apiVersion: reconcile/v1alpha1
kind: CapacityProvider
metadata: {name: p}
spec:
  managedScaling: {status: ENABLED, targetCapacity: 50}
---
apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {name: web}
spec:
  memory: 64
  containerDefinitions: [{name: web, image: busybox:stable}]
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {name: web}
spec:
  cluster: c
  taskDefinition: web
  desiredCount: 3
  capacityProviderStrategy: [{capacityProvider: p, weight: 1}]
  placementConstraints: [{type: distinctInstance}]
",
        )
        .unwrap();
        let c = controller(dir.path());
        let e = c.reconcile_once().await.unwrap_err();
        // No node at all: the pass waits for one, and the tasks count as
        // unplaced for the reservation.
        assert!(
            e.starts_with(super::super::pass::WAITING_FOR_NODES) && e.contains("3 task(s)"),
            "{e}"
        );
        assert_eq!(c.applied().unplaced.get("c/web"), Some(&3));
        c.autoscale().await;
        let status = c.status();
        let published = &status.controller.unwrap().capacity_providers;
        assert_eq!(
            published,
            &[crate::report::ProviderReservation {
                provider: "p".into(),
                reservation: 200,
                target_capacity: 50,
                needed_nodes: 3,
                nodes: 0,
                desired_nodes: 6,
                launches: false,
            }]
        );
        assert!(c.launcher.get().is_none(), "nothing launched");
        let events = super::super::guard(&c.events).newest(10);
        assert!(
            events.iter().any(|e| e.message
                == "capacity provider p: reservation 200% (target 50%), 3 node(s) needed of 0, 6 wanted; no nodeTemplate, so nothing is launched"),
            "{events:?}"
        );
        let text = c.metrics_text();
        assert!(
            text.contains("reconcile_capacity_provider_reservation_percent{provider=\"p\"} 200"),
            "{text}"
        );
        // Unchanged, it is not announced again.
        c.autoscale().await;
        let again = super::super::guard(&c.events).newest(10);
        assert_eq!(again.len(), events.len());

        // A node too small for any of them: the tasks wait for the
        // provider's managed scaling to add nodes, which is a wait (as a
        // PROVISIONING task in ECS), not a failed reconcile.
        c.join("n1", "c").unwrap();
        let mut hb = super::super::tests::heartbeat(Vec::new(), true);
        hb.memory = 32;
        c.heartbeat("n1", hb).unwrap();
        let e = c.reconcile_once().await.unwrap_err();
        assert!(
            e.starts_with(super::super::pass::WAITING_FOR_NODES)
                && e.contains("3 task(s) wait for capacity: managed scaling of p adds nodes"),
            "{e}"
        );
    }
}
