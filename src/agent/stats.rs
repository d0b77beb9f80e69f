//! Usage of the node's running tasks, sampled every interval from the
//! engine's stats. CPU needs two samples, so the previous sample of each
//! container is kept; a container gone since is forgotten, so memory stays
//! bounded by what runs. The latest usage per task is reported with the
//! heartbeat and read by whatever else wants it through [`Collector::snapshot`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::runtime::docker::stats::{sample_all, usage_by_task, Sample};
use crate::runtime::docker::{DockerRuntime, STATS_CONCURRENCY};
use crate::utilization::TaskUsage;

/// How often tasks are sampled unless `--stats-interval` says otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// The last samples and what they say.
#[derive(Debug, Default)]
struct State {
    /// Container id -> its last sample.
    previous: HashMap<String, Sample>,
    /// Task id -> its usage between the last two samples.
    usage: BTreeMap<String, TaskUsage>,
}

impl State {
    /// Take in a new round of samples of `containers` (task id, container
    /// id): the usage since the previous round, which it then replaces.
    fn advance(
        &mut self,
        containers: &[(String, String)],
        samples: HashMap<String, Sample>,
        now: i64,
    ) {
        self.usage = usage_by_task(containers, &self.previous, &samples, now);
        self.previous = samples;
    }
}

/// The node's task usage, kept current by a background loop.
#[derive(Debug, Clone, Default)]
pub struct Collector {
    state: Arc<Mutex<State>>,
}

impl Collector {
    /// Start sampling every `interval`; a zero interval samples nothing.
    pub fn start(&self, rt: Arc<DockerRuntime>, interval: Duration) {
        if interval.is_zero() {
            return;
        }
        let state = self.state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let containers = match rt.running_containers().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("agent: cannot list containers to sample: {}", e.message);
                        continue;
                    }
                };
                let ids = containers.iter().map(|(_, id)| id.clone()).collect();
                let samples = sample_all(rt.docker(), ids, STATS_CONCURRENCY).await;
                state.lock().unwrap_or_else(|p| p.into_inner()).advance(
                    &containers,
                    samples,
                    crate::clock::unix_now(),
                );
            }
        });
    }

    /// The latest usage of each running task, by task id.
    pub fn snapshot(&self) -> BTreeMap<String, TaskUsage> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .usage
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn each_round_measures_since_the_last_and_forgets_what_is_gone() {
        let t0 = Instant::now();
        let s = |ns: u64, secs: u64| Sample {
            cpu_total_ns: ns,
            memory_bytes: Some(1 << 20),
            at: t0 + Duration::from_secs(secs),
        };
        let pair = |t: &str, c: &str| (t.to_string(), c.to_string());
        let mut st = State::default();
        let both = [pair("t1", "a"), pair("t2", "b")];
        st.advance(
            &both,
            HashMap::from([("a".into(), s(0, 0)), ("b".into(), s(0, 0))]),
            1,
        );
        // The first round knows memory only.
        assert_eq!(st.usage["t1"].cpu_units, None);
        assert_eq!(st.usage["t1"].memory_mib, Some(1.0));
        let one = [pair("t1", "a")];
        st.advance(
            &one,
            HashMap::from([("a".into(), s(10_000_000_000, 10))]),
            11,
        );
        assert_eq!(st.usage["t1"].cpu_units, Some(1024.0));
        assert_eq!(st.usage["t1"].sampled_at, 11);
        // t2's container stopped: neither its usage nor its sample is kept.
        assert!(!st.usage.contains_key("t2"));
        assert_eq!(st.previous.len(), 1);
    }
}
