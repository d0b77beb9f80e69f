//! CPU and memory utilization as ECS defines them: what a task uses over
//! what it reserves, in percent. Per task: used / reserved x 100; per
//! service: the sum used over the sum reserved of its tasks with a
//! sample. Pure: the samples come from the engine (standalone) or from
//! the agents' heartbeats (fleet).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::manifest::task_definition::TaskDefinitionSpec;

/// What a task used when its node last sampled it: the sum over its
/// containers. A value the engine did not give is absent (unknown), never 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskUsage {
    /// CPU units (1024 per core) used between the last two samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_units: Option<f64>,
    /// Memory in use without the inactive file cache, in MiB.
    #[serde(default, rename = "memoryMiB", skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<f64>,
    /// Unix seconds.
    pub sampled_at: i64,
}

/// One container's part of a task's usage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContainerUsage {
    pub cpu_units: Option<f64>,
    pub memory_bytes: Option<u64>,
}

/// A task's usage from its containers': a sum known only when every
/// container's part is known.
pub fn task_usage(containers: &[ContainerUsage], sampled_at: i64) -> TaskUsage {
    let all = !containers.is_empty();
    let cpu: Option<f64> = all
        .then(|| containers.iter().map(|c| c.cpu_units).sum())
        .flatten();
    let memory: Option<u64> = all
        .then(|| containers.iter().map(|c| c.memory_bytes).sum())
        .flatten();
    TaskUsage {
        cpu_units: cpu.map(|c| round(c, 1)),
        memory_mib: memory.map(|m| round(m as f64 / (1024.0 * 1024.0), 1)),
        sampled_at,
    }
}

/// What a task of `spec` reserves: CPU units and MiB, as the scheduler
/// reads them ([`crate::model::reservation`]). What nothing reserves is
/// measured against the node's whole share, `node` (its registered CPU
/// units and MiB).
pub fn reserved(spec: &TaskDefinitionSpec, node: (u32, u32)) -> (u32, u32) {
    let (cpu, memory, _) = crate::model::reservation(spec);
    (
        if cpu == 0 { node.0 } else { cpu },
        if memory == 0 { node.1 } else { memory },
    )
}

/// `used` over `reserved` in percent, one decimal; unknown without a
/// sample or without anything to measure against.
pub fn percent(used: Option<f64>, reserved: f64) -> Option<f64> {
    let used = used?;
    (reserved > 0.0).then(|| round(used / reserved * 100.0, 1))
}

/// Sums over the tasks with a sample: (used, reserved) pairs. Unknown
/// when no task has one.
pub fn aggregate(parts: &[(Option<f64>, f64)]) -> (Option<f64>, f64) {
    let known: Vec<(f64, f64)> = parts
        .iter()
        .filter_map(|(u, r)| u.map(|u| (u, *r)))
        .collect();
    if known.is_empty() {
        return (None, 0.0);
    }
    (
        Some(round(known.iter().map(|(u, _)| u).sum(), 1)),
        known.iter().map(|(_, r)| r).sum(),
    )
}

fn round(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

/// A node's listeners' requests per target task, as a rate: the
/// difference between the counts of two heartbeats over the time between
/// them, per minute (RequestCountPerTarget's unit).
#[derive(Debug, Clone, Default)]
pub struct ServedRate {
    counts: BTreeMap<String, u64>,
    at: Option<std::time::Instant>,
    /// Requests per minute per target over the last two reports.
    pub per_minute: BTreeMap<String, f64>,
}

impl ServedRate {
    /// Take a report of `counts` made at `at`. A target counted for the
    /// first time is counted from 0 (it appeared since the last report);
    /// a count that went down (a listener restarted) counts from 0 too.
    pub fn report(&mut self, counts: BTreeMap<String, u64>, at: std::time::Instant) {
        if let Some(before) = self.at {
            let secs = at.saturating_duration_since(before).as_secs_f64();
            if secs > 0.0 {
                self.per_minute = counts
                    .iter()
                    .map(|(id, &n)| {
                        let was = self
                            .counts
                            .get(id)
                            .copied()
                            .filter(|&w| w <= n)
                            .unwrap_or(0);
                        (id.clone(), (n - was) as f64 * 60.0 / secs)
                    })
                    .collect();
            }
        }
        self.counts = counts;
        self.at = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_counts_become_requests_per_minute_between_reports() {
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + std::time::Duration::from_secs(s);
        let counts = |v: &[(&str, u64)]| v.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        let mut r = ServedRate::default();
        r.report(counts(&[("a", 100)]), at(0));
        assert!(r.per_minute.is_empty(), "one report is no rate");
        r.report(counts(&[("a", 130), ("b", 5)]), at(10));
        assert_eq!(r.per_minute["a"], 180.0);
        assert_eq!(r.per_minute["b"], 30.0, "a new target counts from 0");
        r.report(counts(&[("a", 2)]), at(20));
        assert_eq!(
            r.per_minute["a"], 12.0,
            "a count that went down restarts from 0"
        );
        assert!(
            !r.per_minute.contains_key("b"),
            "a target no longer routed is gone"
        );
        r.report(counts(&[("a", 2)]), at(20));
        assert_eq!(
            r.per_minute["a"], 12.0,
            "no time passed: the last rate stands"
        );
    }

    fn spec(v: serde_json::Value) -> TaskDefinitionSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_task_reserves_its_task_level_values_else_its_containers() {
        let node = (2048, 4000);
        let task_level = spec(
            serde_json::json!({"cpu": 512, "memory": 256, "containerDefinitions": [
            {"name": "a", "image": "i", "cpu": 100, "memory": 64}]}),
        );
        assert_eq!(reserved(&task_level, node), (512, 256));
        let containers = spec(serde_json::json!({"containerDefinitions": [
            {"name": "a", "image": "i", "cpu": 100, "memory": 64},
            {"name": "b", "image": "i", "cpu": 28, "memoryReservation": 32, "memory": 128}]}));
        // Hard memory of one, soft reservation of the other.
        assert_eq!(reserved(&containers, node), (128, 96));
    }

    #[test]
    fn what_nothing_reserves_is_measured_against_the_node() {
        let none = spec(serde_json::json!({"containerDefinitions": [{"name": "a", "image": "i"}]}));
        assert_eq!(reserved(&none, (2048, 4000)), (2048, 4000));
        assert_eq!(percent(Some(1024.0), 2048.0), Some(50.0));
    }

    #[test]
    fn utilization_is_used_over_reserved_and_unknown_without_a_sample() {
        assert_eq!(percent(Some(256.0), 512.0), Some(50.0));
        assert_eq!(percent(Some(0.0), 512.0), Some(0.0));
        assert_eq!(percent(Some(1.0), 3.0), Some(33.3));
        // More than reserved (CPU is a soft share): over 100.
        assert_eq!(percent(Some(1024.0), 512.0), Some(200.0));
        assert_eq!(percent(None, 512.0), None);
        assert_eq!(percent(Some(5.0), 0.0), None);
    }

    #[test]
    fn a_service_sums_used_and_reserved_over_its_tasks_with_a_sample() {
        let (used, reserved) =
            aggregate(&[(Some(400.0), 512.0), (Some(0.0), 512.0), (None, 512.0)]);
        assert_eq!((used, reserved), (Some(400.0), 1024.0));
        assert_eq!(percent(used, reserved), Some(39.1));
        assert_eq!(aggregate(&[(None, 512.0)]), (None, 0.0));
        assert_eq!(aggregate(&[]), (None, 0.0));
    }

    #[test]
    fn a_task_is_known_only_when_every_container_is() {
        let c = |cpu: Option<f64>, mem: Option<u64>| ContainerUsage {
            cpu_units: cpu,
            memory_bytes: mem,
        };
        let u = task_usage(
            &[c(Some(100.0), Some(1 << 20)), c(Some(0.25), Some(3 << 20))],
            7,
        );
        assert_eq!(u.cpu_units, Some(100.3));
        assert_eq!(u.memory_mib, Some(4.0));
        assert_eq!(u.sampled_at, 7);
        let u = task_usage(&[c(Some(100.0), Some(1 << 20)), c(None, Some(1 << 20))], 7);
        assert_eq!((u.cpu_units, u.memory_mib), (None, Some(2.0)));
        let u = task_usage(&[], 7);
        assert_eq!((u.cpu_units, u.memory_mib), (None, None));
    }
}
