//! Service auto scaling, the I/O side: every evaluation reads each auto
//! scaled service's utilization as `status` shows it, lets
//! [`crate::autoscaling::decide`] move its count, keeps the count in the
//! database and wakes the reconcile loop, which plans and applies it.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{guard, Controller};
use crate::autoscaling::{self, Metrics};

/// How often auto scaled services are evaluated.
pub(super) const EVALUATION: Duration = Duration::from_secs(1);

impl Controller {
    /// The counts auto scaling holds, by service key.
    pub(super) fn scaled_counts(&self) -> BTreeMap<String, u32> {
        guard(&self.scaling)
            .iter()
            .map(|(k, s)| (k.clone(), s.desired_count))
            .collect()
    }

    /// One evaluation of every auto scaled service the source defines;
    /// wakes the loop when a count changed.
    pub(super) fn scale_services(&self) {
        let Some(desired) = self.applied().desired.clone() else {
            return;
        };
        // Services that no longer have auto scaling start again from the
        // source's count if it comes back.
        let gone: Vec<String> = guard(&self.scaling)
            .keys()
            .filter(|k| {
                desired
                    .services
                    .get(*k)
                    .is_none_or(|s| s.spec.auto_scaling.is_none())
            })
            .cloned()
            .collect();
        for k in &gone {
            guard(&self.scaling).remove(k);
            if let Err(e) = self.db.delete_scaled(k) {
                tracing::error!("forgetting the scaled count of {k}: {e}");
            }
        }
        let scaled: Vec<_> = desired
            .services
            .iter()
            .filter_map(|(k, s)| s.spec.auto_scaling.as_ref().map(|a| (k, s, a)))
            .collect();
        // Suspended, nothing changes; nothing to scale, nothing to read.
        if scaled.is_empty() || self.requests().suspended {
            return;
        }
        let status = self.status();
        let served = self.requests_per_minute();
        let now = crate::clock::unix_now();
        let mut changed = false;
        for (key, s, cfg) in scaled {
            // Only what was applied has tasks to measure.
            let Some(st) = status.services.iter().find(|x| &x.service == key) else {
                continue;
            };
            let metrics = Metrics {
                cpu: st.usage.cpu_utilization,
                memory: st.usage.memory_utilization,
                requests_per_target: requests_per_target(&st.tasks, &served),
            };
            let kept = guard(&self.scaling).get(key).cloned();
            let source = s.spec.desired_count.unwrap_or(0);
            let count = autoscaling::current(cfg, source, kept.as_ref().map(|k| k.desired_count));
            let last = kept.as_ref().map(|k| k.last).unwrap_or_default();
            let Some(d) = autoscaling::decide(cfg, count, &metrics, last, now) else {
                continue;
            };
            let mut next = kept.unwrap_or_default();
            next.record(count, &d, now);
            if let Err(e) = self.db.put_scaled(key, &next) {
                // Not kept, not applied: a restart must not forget a count
                // that runs.
                tracing::error!("saving the scaled count of {key}: {e}");
                continue;
            }
            guard(&self.scaling).insert(key.clone(), next);
            self.metrics.scaled(key, d.direction.as_str());
            self.service_event(
                key,
                format!(
                    "{key}: auto scaling {} from {count} to {} task(s): {}",
                    match d.direction {
                        autoscaling::Direction::Out => "out",
                        autoscaling::Direction::In => "in",
                    },
                    d.count,
                    d.cause
                ),
            );
            changed = true;
        }
        if changed {
            self.wake.notify_one();
        }
    }
}

/// ALBRequestCountPerTarget: the requests per minute the listeners sent
/// the service's running tasks, over those tasks. None when no listener
/// counts any of them (nothing measured is not zero).
fn requests_per_target(
    tasks: &[crate::report::TaskView],
    served: &std::collections::BTreeMap<String, f64>,
) -> Option<f64> {
    let running: Vec<_> = tasks
        .iter()
        .filter(|t| t.last_status == crate::model::TaskStatus::Running)
        .collect();
    let counted: Vec<f64> = running
        .iter()
        .filter_map(|t| served.get(&t.id).copied())
        .collect();
    if counted.is_empty() {
        return None;
    }
    Some(counted.iter().sum::<f64>() / running.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::requests_per_target;
    use crate::model::{Health, TaskStatus};
    use crate::report::TaskView;

    fn task(id: &str, status: TaskStatus) -> TaskView {
        TaskView {
            id: id.into(),
            node: "n".into(),
            revision: 1,
            last_status: status,
            health: Health::Unknown,
            started_at: None,
            ports: Vec::new(),
            stop_code: None,
            stopped_reason: None,
            target_health: None,
            usage: Default::default(),
        }
    }

    #[test]
    fn requests_per_target_averages_over_running_tasks_and_is_none_unmeasured() {
        let served = [("a".to_string(), 90.0), ("c".to_string(), 500.0)]
            .into_iter()
            .collect();
        let tasks = [
            task("a", TaskStatus::Running),
            task("b", TaskStatus::Running),
            task("c", TaskStatus::Stopped),
        ];
        // 90 requests a minute over two running tasks; the stopped one's
        // are not the service's load now.
        assert_eq!(requests_per_target(&tasks, &served), Some(45.0));
        assert_eq!(requests_per_target(&tasks[1..2], &served), None);
    }
}
