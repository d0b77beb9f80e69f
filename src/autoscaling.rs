//! Service auto scaling, target tracking as Application Auto Scaling does
//! it, in one pure function: from a service's policies, bounds, current
//! count, metric samples and the times of its last scaling activities, the
//! new count and why.
//!
//! Each policy wants ceil(count x metric / targetValue) tasks. The count
//! goes out to the largest want of any policy whose scale-out cooldown has
//! passed since the last scale-out; it goes in only when every policy has a
//! sample, wants fewer tasks, allows scale-in and has seen its scale-in
//! cooldown pass since the last activity of either kind; then to the
//! largest of their wants (the smallest step in). A policy without a
//! sample wants nothing and blocks scale-in. The result is never outside
//! [minCapacity, maxCapacity]; a count outside them (the bounds changed) is
//! brought inside first.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::manifest::auto_scaling::{AutoScaling, PredefinedMetric, TargetTracking};

/// The service's metrics now: each unknown without a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Metrics {
    /// Average CPU utilization of the running tasks, percent.
    pub cpu: Option<f64>,
    /// Average memory utilization of the running tasks, percent.
    pub memory: Option<f64>,
    /// Requests per task per minute through the service's listeners.
    pub requests_per_target: Option<f64>,
}

impl Metrics {
    pub fn get(&self, m: PredefinedMetric) -> Option<f64> {
        match m {
            PredefinedMetric::CpuUtilization => self.cpu,
            PredefinedMetric::MemoryUtilization => self.memory,
            PredefinedMetric::RequestCountPerTarget => self.requests_per_target,
        }
    }
}

/// When the service last scaled, unix seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastScaled {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_out: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_in: Option<i64>,
}

/// Which way a decision moves the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    Out,
    In,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
        }
    }
}

/// A change of the count.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub count: u32,
    pub direction: Direction,
    /// The metric values (and targets) that drove it, for people.
    pub cause: String,
}

/// Decisions kept per service (status and history show them).
pub const ACTIVITIES_KEPT: usize = 20;

/// What the controller keeps of an auto scaled service: the count it
/// scaled to, when, and its latest decisions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scaled {
    pub desired_count: u32,
    #[serde(default)]
    pub last: LastScaled,
    /// Newest last, at most [`ACTIVITIES_KEPT`].
    #[serde(default)]
    pub activities: Vec<Activity>,
}

/// One scaling decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    /// Unix seconds.
    pub at: i64,
    pub from: u32,
    pub to: u32,
    pub direction: Direction,
    /// The metric values and targets that drove it.
    pub cause: String,
}

impl Scaled {
    /// Record a decision taken at `now` from `from` tasks.
    pub fn record(&mut self, from: u32, d: &Decision, now: i64) {
        self.desired_count = d.count;
        match d.direction {
            Direction::Out => self.last.scale_out = Some(now),
            Direction::In => self.last.scale_in = Some(now),
        }
        self.activities.push(Activity {
            at: now,
            from,
            to: d.count,
            direction: d.direction,
            cause: d.cause.clone(),
        });
        let excess = self.activities.len().saturating_sub(ACTIVITIES_KEPT);
        self.activities.drain(..excess);
    }
}

/// The count auto scaling holds for a service now: the scaled count where
/// one is kept, else the source's desiredCount, inside the bounds.
pub fn current(cfg: &AutoScaling, source: u32, scaled: Option<u32>) -> u32 {
    clamp(cfg, scaled.unwrap_or(source))
}

/// Auto scaling takes over the count of every REPLICA service that has it:
/// the scaled count (by service key) where one is kept, else the source's
/// inside the bounds. A commit that leaves auto scaling alone therefore
/// never resets a scaled count. Returns a note per such service for the
/// plan.
pub fn take_over(
    desired: &mut crate::model::DesiredState,
    scaled: &std::collections::BTreeMap<String, u32>,
) -> Vec<String> {
    let mut notes = Vec::new();
    for (key, s) in desired.services.iter_mut() {
        let Some(cfg) = &s.spec.auto_scaling else {
            continue;
        };
        if s.spec.scheduling_strategy != crate::manifest::service::SchedulingStrategy::Replica {
            continue;
        }
        let source = s.spec.desired_count.unwrap_or(0);
        let count = current(cfg, source, scaled.get(key).copied());
        s.spec.desired_count = Some(count);
        notes.push(format!(
            "Service/{key}: desired {count}, managed by auto scaling (source says {source})"
        ));
    }
    notes
}

/// The count a service starts at when auto scaling takes it over: the
/// source's desiredCount inside the bounds.
pub fn starting_count(cfg: &AutoScaling, source: u32) -> u32 {
    clamp(cfg, source)
}

fn clamp(cfg: &AutoScaling, n: u32) -> u32 {
    n.clamp(cfg.min_capacity, cfg.max_capacity.max(cfg.min_capacity))
}

/// Tasks a policy wants at `count` tasks with the metric at `value`.
fn wants(p: &TargetTracking, count: u32, value: f64) -> u32 {
    if p.target_value <= 0.0 || !value.is_finite() || value < 0.0 {
        return count;
    }
    let w = (f64::from(count) * value / p.target_value).ceil();
    // Bounded far above any maxCapacity, so the cast cannot wrap.
    w.min(1.0e6) as u32
}

fn elapsed(since: Option<i64>, now: i64, cooldown: u32) -> bool {
    since.is_none_or(|t| now.saturating_sub(t) >= i64::from(cooldown))
}

/// What one decision reads, named in its cause: each policy's metric,
/// value and target.
fn describe(policies: &[TargetTracking], m: &Metrics) -> String {
    policies
        .iter()
        .map(|p| match m.get(p.predefined_metric) {
            Some(v) => format!(
                "{} {v:.1} (target {})",
                p.predefined_metric.as_str(),
                p.target_value
            ),
            None => format!("{} no sample", p.predefined_metric.as_str()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The new count, or None to hold.
pub fn decide(
    cfg: &AutoScaling,
    count: u32,
    metrics: &Metrics,
    last: LastScaled,
    now: i64,
) -> Option<Decision> {
    let (min, max) = (cfg.min_capacity, cfg.max_capacity.max(cfg.min_capacity));
    let inside = clamp(cfg, count);
    if inside != count {
        return Some(Decision {
            count: inside,
            direction: if inside > count {
                Direction::Out
            } else {
                Direction::In
            },
            cause: format!("the count {count} is outside minCapacity {min} and maxCapacity {max}"),
        });
    }
    let policies = &cfg.target_tracking;
    let votes: Vec<(&TargetTracking, Option<u32>)> = policies
        .iter()
        .map(|p| {
            (
                p,
                metrics.get(p.predefined_metric).map(|v| wants(p, count, v)),
            )
        })
        .collect();
    // Out on the largest demand of the policies out of their cooldown.
    let out = votes
        .iter()
        .filter_map(|(p, w)| w.filter(|w| *w > count).map(|w| (p, w)))
        .filter(|(p, _)| elapsed(last.scale_out, now, p.scale_out_cooldown))
        .map(|(_, w)| w)
        .max();
    if let Some(w) = out {
        let to = w.min(max);
        if to > count {
            return Some(Decision {
                count: to,
                direction: Direction::Out,
                cause: describe(policies, metrics),
            });
        }
    }
    // Any policy wanting more (even in its cooldown) keeps the count.
    if votes.iter().any(|(_, w)| w.is_some_and(|w| w > count)) {
        return None;
    }
    // In only when every policy agrees.
    let last_activity = last.scale_out.max(last.scale_in);
    let agreed: Option<Vec<u32>> = votes
        .iter()
        .map(|(p, w)| {
            w.filter(|w| *w < count)
                .filter(|_| !p.disable_scale_in)
                .filter(|_| elapsed(last_activity, now, p.scale_in_cooldown))
        })
        .collect();
    let to = agreed?.into_iter().max()?.max(min);
    (to < count).then(|| Decision {
        count: to,
        direction: Direction::In,
        cause: describe(policies, metrics),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(metric: PredefinedMetric, target: f64) -> TargetTracking {
        TargetTracking {
            predefined_metric: metric,
            target_value: target,
            scale_out_cooldown: 60,
            scale_in_cooldown: 300,
            disable_scale_in: false,
        }
    }

    fn cfg(min: u32, max: u32, policies: Vec<TargetTracking>) -> AutoScaling {
        AutoScaling {
            min_capacity: min,
            max_capacity: max,
            target_tracking: policies,
        }
    }

    fn cpu(v: f64) -> Metrics {
        Metrics {
            cpu: Some(v),
            ..Metrics::default()
        }
    }

    const CPU: PredefinedMetric = PredefinedMetric::CpuUtilization;
    const MEM: PredefinedMetric = PredefinedMetric::MemoryUtilization;

    #[test]
    fn scales_out_in_proportion_to_the_metric() {
        let c = cfg(1, 10, vec![policy(CPU, 50.0)]);
        let d = decide(&c, 1, &cpu(100.0), LastScaled::default(), 1000).unwrap();
        assert_eq!((d.count, d.direction), (2, Direction::Out));
        assert_eq!(d.cause, "CPUUtilization 100.0 (target 50)");
        // 3 tasks at 90% of a 50% target want 6; the bound stops at 5.
        let c = cfg(1, 5, vec![policy(CPU, 50.0)]);
        let d = decide(&c, 3, &cpu(90.0), LastScaled::default(), 1000).unwrap();
        assert_eq!(d.count, 5);
    }

    #[test]
    fn holds_near_the_target_and_without_samples() {
        let c = cfg(1, 10, vec![policy(CPU, 50.0)]);
        assert_eq!(decide(&c, 4, &cpu(45.0), LastScaled::default(), 0), None);
        assert_eq!(decide(&c, 4, &cpu(50.0), LastScaled::default(), 0), None);
        assert_eq!(
            decide(&c, 4, &Metrics::default(), LastScaled::default(), 0),
            None
        );
    }

    #[test]
    fn cooldowns_hold_each_direction() {
        let c = cfg(1, 10, vec![policy(CPU, 50.0)]);
        let out = LastScaled {
            scale_out: Some(1000),
            scale_in: None,
        };
        assert_eq!(decide(&c, 2, &cpu(100.0), out, 1030), None);
        assert_eq!(decide(&c, 2, &cpu(100.0), out, 1060).unwrap().count, 4);
        // Scale-in waits for its cooldown after the scale-out too.
        assert_eq!(decide(&c, 4, &cpu(0.0), out, 1299), None);
        let d = decide(&c, 4, &cpu(0.0), out, 1300).unwrap();
        assert_eq!((d.count, d.direction), (1, Direction::In));
    }

    #[test]
    fn in_only_when_every_policy_agrees_out_on_the_largest() {
        let c = cfg(1, 10, vec![policy(CPU, 50.0), policy(MEM, 50.0)]);
        let m = |c, mem| Metrics {
            cpu: Some(c),
            memory: mem,
            requests_per_target: None,
        };
        assert_eq!(
            decide(&c, 4, &m(10.0, Some(60.0)), LastScaled::default(), 0)
                .unwrap()
                .count,
            5
        );
        assert_eq!(
            decide(&c, 4, &m(10.0, Some(100.0)), LastScaled::default(), 0)
                .unwrap()
                .count,
            8
        );
        // Memory unknown: no scale-in.
        assert_eq!(
            decide(&c, 4, &m(10.0, None), LastScaled::default(), 0),
            None
        );
        // Both low: the larger want (memory's 2) wins.
        let d = decide(&c, 4, &m(10.0, Some(25.0)), LastScaled::default(), 0).unwrap();
        assert_eq!((d.count, d.direction), (2, Direction::In));
        assert_eq!(
            d.cause,
            "CPUUtilization 10.0 (target 50), MemoryUtilization 25.0 (target 50)"
        );
    }

    #[test]
    fn disable_scale_in_only_goes_out() {
        let mut p = policy(CPU, 50.0);
        p.disable_scale_in = true;
        let c = cfg(1, 10, vec![p]);
        assert_eq!(decide(&c, 4, &cpu(0.0), LastScaled::default(), 0), None);
        assert_eq!(
            decide(&c, 4, &cpu(80.0), LastScaled::default(), 0)
                .unwrap()
                .count,
            7
        );
    }

    #[test]
    fn a_count_outside_the_bounds_is_brought_inside() {
        let c = cfg(2, 5, vec![]);
        assert_eq!(starting_count(&c, 0), 2);
        assert_eq!(starting_count(&c, 9), 5);
        let d = decide(&c, 9, &Metrics::default(), LastScaled::default(), 0).unwrap();
        assert_eq!((d.count, d.direction), (5, Direction::In));
        assert_eq!(decide(&c, 3, &cpu(100.0), LastScaled::default(), 0), None);
    }
}
