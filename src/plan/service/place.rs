//! Phase 6: the task changes, and where new tasks go: the inputs of
//! placement (built once per service), the cluster's view of the node
//! list, and the resources a stopping task gives back.

use std::collections::BTreeMap;

use super::{stop, Classified, Scaling, ServiceCtx, Target};
use crate::manifest::service::{SchedulingStrategy, ServiceSpec};
use crate::manifest::TaskDefinitionSpec;
use crate::model::{self, Task};
use crate::plan::{Inputs, PlacementProblem, TaskChanges, TaskStart};
use crate::scheduler;

impl<'a> ServiceCtx<'a> {
    /// What placing the target's tasks needs, built on first use.
    pub(super) fn placement<'t>(&self, t: &'t Target) -> &'t PlacementInputs {
        t.placement.get_or_init(|| PlacementInputs::new(self, t.td))
    }
    /// Phase 6: the task changes: new tasks placed on nodes, tasks stopped,
    /// remains cleaned up, and the count running afterwards.
    pub(super) fn task_changes(
        &self,
        t: &Target,
        k: &Classified,
        s: &Scaling,
        nodes: &mut [scheduler::Node],
    ) -> TaskChanges {
        let mut tc = TaskChanges::default();
        if s.start > 0 {
            (tc.start, tc.placement_failure) = self.place(t, k, s, nodes);
        }
        if !s.drift_only {
            tc.cleanup = self.stopped.iter().map(|x| x.identity.id.clone()).collect();
        }
        let started: u32 = tc.start.iter().map(|x| x.count).sum();
        tc.stop = s.stop.iter().map(|(x, why)| stop(x, why)).collect();
        tc.running_after = k.keep.len() as u32 + started
            - tc.stop
                .iter()
                .filter(|x| k.keep.iter().any(|y| y.identity.id == x.task))
                .count() as u32;
        tc
    }

    /// Placement of the new tasks. Placements are recorded on the nodes, so
    /// later services see them. When tasks stop before new ones start (0%
    /// minimum, or a recreate), their resources are released first;
    /// otherwise they are kept: the conservative choice.
    pub(super) fn place(
        &self,
        t: &Target,
        k: &Classified,
        s: &Scaling,
        nodes: &mut [scheduler::Node],
    ) -> (Vec<TaskStart>, Option<PlacementProblem>) {
        let spec = self.spec;
        let p = self.placement(t);
        let req = p.request(spec);
        let release_first =
            spec.deployment_configuration.minimum_healthy_percent == Some(0) || k.replace;
        if release_first {
            for (x, _) in &s.stop {
                if let Some(n) = nodes.iter_mut().find(|n| n.name == x.node) {
                    release(n, x, self.inputs, &p.group);
                }
            }
        }
        let daemon = spec.scheduling_strategy == SchedulingStrategy::Daemon;
        // The strategy's bases count the service's tasks already running on
        // each provider.
        let mut already: BTreeMap<String, u32> = BTreeMap::new();
        if !p.providers.is_empty() {
            for x in &k.keep {
                if let Some(pr) = nodes
                    .iter()
                    .find(|n| n.name == x.node)
                    .and_then(|n| n.capacity_provider.clone())
                {
                    *already.entry(pr).or_default() += 1;
                }
            }
        }
        let seed = self.inputs.opts.seed;
        let (names, failure) = with_cluster_view(nodes, &p.indices, |view| {
            if daemon {
                let d = scheduler::daemon_targets(view, &req);
                let names: Vec<String> = d.place.iter().map(|&i| view[i].name.clone()).collect();
                for &i in &d.place {
                    view[i].add_task(&req);
                }
                (names, d.failures.into_iter().next().map(|(_, f)| f))
            } else {
                let placed = scheduler::place(view, &req, s.start, &already, seed);
                let names = placed
                    .assignments
                    .iter()
                    .map(|&i| view[i].name.clone())
                    .collect();
                (names, placed.failure)
            }
        });
        let mut by_node: BTreeMap<String, u32> = BTreeMap::new();
        for n in names {
            *by_node.entry(n).or_default() += 1;
        }
        let start = by_node
            .into_iter()
            .map(|(node, count)| TaskStart {
                revision: t.revision,
                node,
                count,
            })
            .collect();
        let failure = failure.map(|f| PlacementProblem {
            unplaced: f.unplaced,
            reason: f.reason,
        });
        (start, failure)
    }
}

/// What placing a service's tasks needs: its cluster's nodes, its task
/// group, constraints and reservation.
pub(super) struct PlacementInputs {
    pub(super) indices: Vec<usize>,
    /// The service's capacity provider strategy, else its cluster's default;
    /// empty on a standalone host (one node serving every cluster).
    providers: Vec<crate::manifest::CapacityProviderStrategyItem>,
    pub(super) group: String,
    constraints: Vec<scheduler::Constraint>,
    cpu: u32,
    memory: u32,
    ports: Vec<(u16, crate::manifest::task_definition::Protocol)>,
}

impl PlacementInputs {
    fn new(s: &ServiceCtx, td: &TaskDefinitionSpec) -> Self {
        let (desired, observed) = (s.inputs.desired, s.inputs.observed);
        let (cpu, memory, ports) = model::reservation(td);
        let constraints = td
            .placement_constraints
            .iter()
            .chain(s.spec.placement_constraints.iter())
            // Validation refuses a constraint that does not parse.
            .filter_map(|pc| scheduler::Constraint::from_manifest(pc).ok())
            .collect();
        PlacementInputs {
            providers: if observed.nodes.iter().any(|n| n.cluster == "*") {
                Vec::new()
            } else {
                crate::plan::strategy_of(desired, s.cluster, s.spec).to_vec()
            },
            indices: cluster_node_indices(observed, s.cluster),
            group: format!("service:{}", s.name),
            constraints,
            cpu,
            memory,
            ports,
        }
    }

    pub(super) fn request<'a>(&'a self, spec: &'a ServiceSpec) -> scheduler::TaskRequest<'a> {
        scheduler::TaskRequest {
            group: self.group.clone(),
            cpu: self.cpu,
            memory: self.memory,
            host_ports: self.ports.clone(),
            constraints: &self.constraints,
            strategy: &spec.placement_strategy,
            capacity_provider_strategy: &self.providers,
        }
    }
}

/// Nodes of a cluster (a node whose cluster is `*` serves every cluster:
/// the local Docker host in standalone mode).
fn cluster_node_indices(observed: &model::ObservedState, cluster: &str) -> Vec<usize> {
    observed
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.cluster == cluster || n.cluster == "*")
        .map(|(i, _)| i)
        .collect()
}

/// Run `f` on the nodes of a cluster: on the node list itself when the
/// cluster spans every node (standalone mode, and most fleets), else on a
/// copy of its nodes, written back afterwards.
pub(super) fn with_cluster_view<T>(
    nodes: &mut [scheduler::Node],
    indices: &[usize],
    f: impl FnOnce(&mut [scheduler::Node]) -> T,
) -> T {
    if indices.len() == nodes.len() {
        return f(nodes);
    }
    let mut view: Vec<scheduler::Node> = indices.iter().map(|&i| nodes[i].clone()).collect();
    let out = f(&mut view);
    for (node, &i) in view.into_iter().zip(indices) {
        nodes[i] = node;
    }
    out
}

/// Give back what task `t` reserves on node `n`.
fn release(n: &mut scheduler::Node, t: &Task, inputs: &Inputs, group: &str) {
    if let Some(spec) = inputs.revision_spec(&t.identity.family, t.identity.revision) {
        let (cpu, mem, ports) = model::reservation(spec);
        n.used_cpu = n.used_cpu.saturating_sub(cpu);
        n.used_memory = n.used_memory.saturating_sub(mem);
        for p in ports {
            n.used_ports.remove(&p);
        }
    }
    if let Some(g) = n.task_groups.get_mut(group) {
        *g = g.saturating_sub(1);
    }
    n.running_tasks = n.running_tasks.saturating_sub(1);
}
