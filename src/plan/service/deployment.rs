//! Phase 7: the deployment a changed service gets, with its rollout
//! steps.

use std::collections::BTreeMap;

use super::{Classified, ServiceCtx, Target};
use crate::manifest::service::SchedulingStrategy;
use crate::plan::{rollout, DeploymentChange, TaskChanges};

impl ServiceCtx<'_> {
    /// Phase 7: the deployment and its rollout steps, with why the bounds
    /// forbid progress if they do (then it has no steps). A DAEMON
    /// service's stops are put in node order, the order of its steps.
    pub(super) fn rollout(
        &self,
        t: &Target,
        k: &Classified,
        tc: &mut TaskChanges,
    ) -> (DeploymentChange, Option<String>) {
        let spec = self.spec;
        let strategy = spec.scheduling_strategy;
        let min = spec.deployment_configuration.min_healthy(strategy);
        let max = spec.deployment_configuration.max_percent(strategy);
        let desired_count = k.desired_count;
        let bounds = rollout::Bounds::new(desired_count, min, max);
        let mut problem = None;
        let steps = if k.replace {
            vec![rollout::Step {
                stop_old: k.old.len() as u32,
                start_new: desired_count,
            }]
        } else if strategy == SchedulingStrategy::Daemon {
            // A DAEMON service rolls node by node: on each node its old
            // task stops and the new one starts, and the next node waits
            // for it to be healthy. Stops and starts are in node order, so
            // each step takes its node's.
            tc.stop.sort_by(|a, b| a.node.cmp(&b.node));
            let mut per_node: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
            for s in &tc.stop {
                per_node.entry(s.node.as_str()).or_default().0 += 1;
            }
            for s in &tc.start {
                per_node.entry(s.node.as_str()).or_default().1 += s.count;
            }
            per_node
                .into_values()
                .map(|(stop_old, start_new)| rollout::Step {
                    stop_old,
                    start_new,
                })
                .collect()
        } else {
            // Tasks of the new configuration already running (an
            // interrupted rollout) count: the steps continue from them.
            let have = k.keep.len() as u32;
            rollout::plan(
                desired_count,
                have.min(desired_count),
                k.old.len() as u32,
                bounds,
            )
            .unwrap_or_else(|e| {
                problem = Some(e);
                Vec::new()
            })
        };
        let deployment = DeploymentChange {
            from_revision: self.observed.map(|o| o.revision),
            to_revision: t.revision,
            minimum_healthy_percent: min,
            maximum_percent: max,
            bounds,
            steps,
        };
        (deployment, problem)
    }
}
