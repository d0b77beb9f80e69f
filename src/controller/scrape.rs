//! What `/metrics` shows of the controller's state, taken at scrape time:
//! services with their tasks and deployments, nodes, the last plan's
//! placement failures, the applied commit and managed scaling's
//! reservations. One pass over each, so a scrape costs what the fleet is.

use std::collections::HashMap;

use super::{guard, Controller};
use crate::deployment::{Rollout, Status};
use crate::metrics::controller::{NodeView, ServiceView, View};
use crate::model::TaskStatus;
use crate::wire::NodeStatus;

fn node_status(s: NodeStatus) -> &'static str {
    match s {
        NodeStatus::Active => "ACTIVE",
        NodeStatus::Draining => "DRAINING",
        NodeStatus::Lost => "LOST",
    }
}

fn deployment_status(s: Status) -> Option<&'static str> {
    match s {
        Status::Primary => Some("PRIMARY"),
        Status::Active => Some("ACTIVE"),
        Status::Inactive => None,
    }
}

fn rollout_state(r: Rollout) -> &'static str {
    match r {
        Rollout::InProgress => "IN_PROGRESS",
        Rollout::Completed => "COMPLETED",
        Rollout::Failed => "FAILED",
    }
}

impl Controller {
    /// The metrics in the text exposition format.
    pub fn metrics_text(&self) -> String {
        self.metrics.render(&self.metrics_view())
    }

    fn metrics_view(&self) -> View {
        let observed = self.observation();
        let mut counts: HashMap<(&str, &str), (u32, u32)> = HashMap::new();
        for t in &observed.tasks {
            let Some(service) = &t.identity.service else {
                continue;
            };
            let c = counts
                .entry((t.identity.cluster.as_str(), service.as_str()))
                .or_default();
            match t.last_status {
                TaskStatus::Running => c.0 += 1,
                TaskStatus::Pending => c.1 += 1,
                TaskStatus::Stopped => {}
            }
        }
        let mut view = View::default();
        {
            let applied = self.applied();
            view.services = applied
                .stored
                .services
                .iter()
                .map(|(key, s)| {
                    let (running, pending) = counts
                        .get(&(s.key.cluster.as_str(), s.key.name.as_str()))
                        .copied()
                        .unwrap_or_default();
                    let deployments = applied
                        .stored
                        .deployments
                        .get(key)
                        .map(|h| {
                            h.deployments
                                .iter()
                                .filter_map(|d| {
                                    Some((deployment_status(d.status)?, rollout_state(d.rollout)))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    ServiceView {
                        cluster: s.key.cluster.clone(),
                        name: s.key.name.clone(),
                        desired: s.spec.desired_count,
                        running,
                        pending,
                        deployments,
                    }
                })
                .collect();
            view.unplaced = applied.placement.clone();
        }
        view.nodes = self
            .members()
            .nodes
            .values()
            .map(|n| NodeView {
                name: n.record.info.name.clone(),
                cluster: n.record.info.cluster.clone(),
                status: node_status(n.record.status),
                heartbeat_age: n.last_seen.map(|t| t.elapsed().as_secs_f64()),
            })
            .collect();
        view.commit_age = self.following().applied.as_ref().map(|c| {
            // A commit dated in the future (a skewed clock) is 0 s old.
            (crate::clock::unix_now() - c.time).max(0) as f64
        });
        view.reservations = guard(&self.reservations)
            .iter()
            .map(|(p, r)| (p.clone(), r.reservation))
            .collect();
        view
    }
}
