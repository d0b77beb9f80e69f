//! One sample of a container's resource usage, read from the engine's
//! stats. A single one-shot read: the engine does not wait a second to
//! compute a CPU delta itself; CPU is computed here from two samples.
//! The arithmetic is pure and separate from the call.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bollard::models::{ContainerMemoryStats, ContainerStatsResponse};
use bollard::query_parameters::StatsOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;

use crate::utilization::{task_usage, ContainerUsage, TaskUsage};

/// CPU units per core, as ECS counts them.
pub const UNITS_PER_CORE: f64 = 1024.0;

/// What one read of a container's stats says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// CPU time the container used since it started, in nanoseconds.
    pub cpu_total_ns: u64,
    /// Memory in use, without the inactive file cache.
    pub memory_bytes: Option<u64>,
    /// When the sample was received.
    pub at: Instant,
}

/// Memory in use as `docker stats` shows it: usage minus the inactive
/// file cache, which the kernel reclaims first. cgroup v1 names it
/// `total_inactive_file`, cgroup v2 `inactive_file`.
pub fn memory_used(m: &ContainerMemoryStats) -> Option<u64> {
    let usage = m.usage?;
    let stats = m.stats.as_ref();
    let inactive = stats
        .and_then(|s| s.get("total_inactive_file"))
        .or_else(|| stats.and_then(|s| s.get("inactive_file")))
        .copied()
        .unwrap_or(0);
    Some(if inactive < usage {
        usage - inactive
    } else {
        usage
    })
}

/// CPU units used between two samples: CPU time over wall-clock time,
/// 1024 per core. None when the counter went back (the container
/// restarted) or no time passed.
pub fn cpu_units(before: &Sample, after: &Sample) -> Option<f64> {
    let wall = after.at.checked_duration_since(before.at)?.as_nanos() as f64;
    if wall <= 0.0 || after.cpu_total_ns < before.cpu_total_ns {
        return None;
    }
    let used = (after.cpu_total_ns - before.cpu_total_ns) as f64;
    Some(used / wall * UNITS_PER_CORE)
}

/// A sample from a stats response; None without a CPU counter (a
/// container that is not running).
pub fn sample_of(r: &ContainerStatsResponse, at: Instant) -> Option<Sample> {
    let cpu_total_ns = r.cpu_stats.as_ref()?.cpu_usage.as_ref()?.total_usage?;
    Some(Sample {
        cpu_total_ns,
        memory_bytes: r.memory_stats.as_ref().and_then(memory_used),
        at,
    })
}

/// Read one sample of container `id`.
pub async fn sample(docker: &Docker, id: &str) -> Result<Option<Sample>, bollard::errors::Error> {
    let options = StatsOptionsBuilder::default()
        .stream(false)
        .one_shot(true)
        .build();
    let mut stream = docker.stats(id, Some(options));
    match stream.next().await {
        Some(Ok(r)) => Ok(sample_of(&r, Instant::now())),
        Some(Err(e)) => Err(e),
        None => Ok(None),
    }
}

/// Read one sample of each container of `ids`, `concurrency` at a time.
/// A container that gives none (gone, stopped) is left out.
pub async fn sample_all(
    docker: &Docker,
    ids: Vec<String>,
    concurrency: usize,
) -> HashMap<String, Sample> {
    let docker = docker.clone();
    let samples: Vec<(String, Option<Sample>)> = futures_util::stream::iter(ids)
        .map(move |id| {
            let docker = docker.clone();
            async move {
                let s = sample(&docker, &id).await;
                if let Err(e) = &s {
                    tracing::debug!("stats of container {id}: {e}");
                }
                (id, s.ok().flatten())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    samples
        .into_iter()
        .filter_map(|(id, s)| s.map(|s| (id, s)))
        .collect()
}

/// Each task's usage (by task id) from two samples of its containers
/// (`containers`: task id, container id). A container with a sample
/// missing makes the task's sum unknown.
pub fn usage_by_task(
    containers: &[(String, String)],
    before: &HashMap<String, Sample>,
    after: &HashMap<String, Sample>,
    sampled_at: i64,
) -> BTreeMap<String, TaskUsage> {
    let mut parts: BTreeMap<&str, Vec<ContainerUsage>> = BTreeMap::new();
    for (task, id) in containers {
        let now = after.get(id);
        parts.entry(task).or_default().push(ContainerUsage {
            cpu_units: match (before.get(id), now) {
                (Some(b), Some(a)) => cpu_units(b, a),
                _ => None,
            },
            memory_bytes: now.and_then(|a| a.memory_bytes),
        });
    }
    parts
        .into_iter()
        .map(|(task, cs)| (task.to_string(), task_usage(&cs, sampled_at)))
        .collect()
}

/// Usage now of the tasks of `containers`: two samples `gap` apart.
pub async fn usage_now(
    docker: &Docker,
    containers: &[(String, String)],
    gap: Duration,
    concurrency: usize,
) -> BTreeMap<String, TaskUsage> {
    if containers.is_empty() {
        return BTreeMap::new();
    }
    let ids = || containers.iter().map(|(_, id)| id.clone()).collect();
    let before = sample_all(docker, ids(), concurrency).await;
    tokio::time::sleep(gap).await;
    let after = sample_all(docker, ids(), concurrency).await;
    usage_by_task(containers, &before, &after, crate::clock::unix_now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    fn mem(usage: Option<u64>, stats: &[(&str, u64)]) -> ContainerMemoryStats {
        ContainerMemoryStats {
            usage,
            stats: Some(
                stats
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect::<HashMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn a_task_sums_its_containers_and_is_unknown_when_one_is_missing() {
        let t0 = Instant::now();
        let s = |ns: u64, ms: u64, mib: u64| Sample {
            cpu_total_ns: ns,
            memory_bytes: Some(mib << 20),
            at: t0 + Duration::from_millis(ms),
        };
        let containers = vec![
            ("t1".to_string(), "a".to_string()),
            ("t1".to_string(), "b".to_string()),
            ("t2".to_string(), "c".to_string()),
            ("t3".to_string(), "d".to_string()),
        ];
        let before = HashMap::from([
            ("a".to_string(), s(0, 0, 1)),
            ("b".to_string(), s(0, 0, 1)),
            ("c".to_string(), s(0, 0, 1)),
        ]);
        let after = HashMap::from([
            ("a".to_string(), s(250_000_000, 500, 10)),
            ("b".to_string(), s(0, 500, 5)),
            ("d".to_string(), s(0, 500, 5)),
        ]);
        let u = usage_by_task(&containers, &before, &after, 9);
        assert_eq!(u["t1"].cpu_units, Some(512.0));
        assert_eq!(u["t1"].memory_mib, Some(15.0));
        // Gone since the first sample: nothing known.
        assert_eq!((u["t2"].cpu_units, u["t2"].memory_mib), (None, None));
        // New since the first sample: memory known, CPU not yet.
        assert_eq!((u["t3"].cpu_units, u["t3"].memory_mib), (None, Some(5.0)));
    }

    #[test]
    fn memory_leaves_out_the_inactive_file_cache_on_both_cgroup_versions() {
        let v1 = mem(
            Some(100),
            &[("total_inactive_file", 30), ("inactive_file", 5)],
        );
        assert_eq!(memory_used(&v1), Some(70));
        let v2 = mem(Some(100), &[("inactive_file", 40)]);
        assert_eq!(memory_used(&v2), Some(60));
        // A cache larger than the usage (racy counters) leaves the usage.
        let odd = mem(Some(10), &[("inactive_file", 40)]);
        assert_eq!(memory_used(&odd), Some(10));
        assert_eq!(memory_used(&mem(Some(8), &[])), Some(8));
        assert_eq!(memory_used(&mem(None, &[("inactive_file", 1)])), None);
    }

    #[test]
    fn cpu_is_time_used_over_time_passed_in_units_of_1024_per_core() {
        let t0 = Instant::now();
        let s = |ns: u64, after: u64| Sample {
            cpu_total_ns: ns,
            memory_bytes: None,
            at: t0 + Duration::from_millis(after),
        };
        // Half a core for a second: 512 units.
        let u = cpu_units(&s(1_000_000_000, 0), &s(1_500_000_000, 1000)).unwrap();
        assert!((u - 512.0).abs() < 1e-6, "{u}");
        // Two cores: 2048.
        let u = cpu_units(&s(0, 0), &s(1_000_000_000, 500)).unwrap();
        assert!((u - 2048.0).abs() < 1e-6, "{u}");
        assert_eq!(cpu_units(&s(5, 0), &s(5, 1000)), Some(0.0));
        // Restarted (counter back), or no time passed: unknown.
        assert_eq!(cpu_units(&s(9, 0), &s(5, 1000)), None);
        assert_eq!(cpu_units(&s(1, 10), &s(5, 10)), None);
        assert_eq!(cpu_units(&s(1, 10), &s(5, 0)), None);
    }
}
