//! An in-process simulated runtime for property tests and scale
//! benchmarks: tasks start instantly and are healthy unless a failure is
//! injected, at once or, with [`Sim::set_healthy_after`], once they have
//! run for a while on a simulated [`Clock`] that the caller advances (a
//! test's apply `Sink` sleeps by advancing it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Launch, Observation, Runtime, RuntimeError};
use crate::model::{Health, NodeInfo, Task, TaskStatus};

/// How a simulated task of a given configuration behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Starts and becomes healthy.
    Healthy,
    /// Stops before reaching RUNNING.
    FailsToStart,
    /// Runs, then fails its health checks.
    Unhealthy,
    /// Every `n`-th start of the configuration fails to start; the others
    /// become healthy.
    Flaky(u32),
    /// Runs without a health check, then its essential container exits
    /// this many observations after the start.
    CrashesAfter(i64),
}

/// Live and healthy task counts of one service, at their extremes since
/// [`Sim::watch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extremes {
    /// Most tasks running or pending at once.
    pub max_live: usize,
    /// Fewest tasks running and healthy at once.
    pub min_healthy: usize,
}

/// Simulated time: it only moves when advanced. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Clock(Arc<Mutex<Duration>>);

impl Clock {
    pub fn now(&self) -> Duration {
        *self.0.lock().unwrap()
    }

    pub fn advance(&self, d: Duration) {
        *self.0.lock().unwrap() += d;
    }
}

/// The simulation.
#[derive(Debug, Default)]
pub struct Sim {
    state: Mutex<SimState>,
    clock: Clock,
}

#[derive(Debug, Default)]
struct SimState {
    tasks: Vec<Task>,
    nodes: Vec<NodeInfo>,
    clock: i64,
    behaviour: BTreeMap<String, Behaviour>,
    started: u64,
    stopped: u64,
    /// Observations a started task stays PENDING for.
    pending_for: i64,
    /// Starts per configuration, for [`Behaviour::Flaky`].
    starts: BTreeMap<String, u32>,
    /// When tasks that crash do, by task id.
    crash_at: BTreeMap<String, i64>,
    /// How long a started task runs before its health shows.
    healthy_after: Duration,
    /// Tasks whose health does not show yet, by id: from when (on the
    /// clock) it shows, and what it is then.
    settling: BTreeMap<String, (Duration, Health)>,
    /// Service watched for extremes, and the extremes so far.
    watched: Option<(String, Extremes)>,
}

impl SimState {
    /// Record the watched service's counts after every change.
    fn sample(&mut self) {
        let Some((svc, ex)) = &mut self.watched else {
            return;
        };
        let mine = self
            .tasks
            .iter()
            .filter(|t| t.identity.service.as_deref() == Some(svc.as_str()));
        let (mut live, mut healthy) = (0, 0);
        for t in mine {
            if t.last_status != TaskStatus::Stopped {
                live += 1;
            }
            if t.last_status == TaskStatus::Running && t.health == Health::Healthy {
                healthy += 1;
            }
        }
        ex.max_live = ex.max_live.max(live);
        ex.min_healthy = ex.min_healthy.min(healthy);
    }
}

impl Sim {
    pub fn new(nodes: Vec<NodeInfo>) -> Sim {
        let s = Sim::default();
        s.state.lock().unwrap().nodes = nodes;
        s
    }

    /// Tasks with configuration `config_hash` behave as `b` from now on.
    pub fn set_behaviour(&self, config_hash: &str, b: Behaviour) {
        self.state
            .lock()
            .unwrap()
            .behaviour
            .insert(config_hash.to_string(), b);
    }

    /// Replace the observed tasks wholesale (to model drift).
    pub fn set_tasks(&self, tasks: Vec<Task>) {
        self.state.lock().unwrap().tasks = tasks;
    }

    /// Started tasks stay PENDING for this many observations.
    pub fn set_pending_for(&self, observations: i64) {
        self.state.lock().unwrap().pending_for = observations;
    }

    /// Tasks started from now on report their health (healthy, or
    /// unhealthy if their behaviour says so) only once they are RUNNING
    /// and `d` has passed on the clock since their start; until then it
    /// is UNKNOWN.
    pub fn set_healthy_after(&self, d: Duration) {
        self.state.lock().unwrap().healthy_after = d;
    }

    /// The simulation's clock, for whoever drives its time.
    pub fn clock(&self) -> Clock {
        self.clock.clone()
    }

    /// Track the extremes of service `name`'s task counts from now on.
    pub fn watch(&self, name: &str) {
        let mut s = self.state.lock().unwrap();
        s.watched = Some((
            name.to_string(),
            Extremes {
                max_live: 0,
                min_healthy: usize::MAX,
            },
        ));
        s.sample();
    }

    pub fn extremes(&self) -> Option<Extremes> {
        self.state.lock().unwrap().watched.as_ref().map(|w| w.1)
    }

    pub fn tasks(&self) -> Vec<Task> {
        self.state.lock().unwrap().tasks.clone()
    }

    /// Tasks started and stopped so far.
    pub fn counters(&self) -> (u64, u64) {
        let s = self.state.lock().unwrap();
        (s.started, s.stopped)
    }
}

impl Runtime for Sim {
    async fn observe(&self) -> Result<Observation, RuntimeError> {
        let mut s = self.state.lock().unwrap();
        s.clock += 1;
        // Pending tasks whose time has come run, as their behaviour says.
        let clock = s.clock;
        let pending_for = s.pending_for;
        let crash_at = std::mem::take(&mut s.crash_at);
        for t in &mut s.tasks {
            if t.is_live() && crash_at.get(&t.identity.id).is_some_and(|at| *at <= clock) {
                t.last_status = TaskStatus::Stopped;
                t.stop_code = Some("EssentialContainerExited".into());
                t.stopped_reason = Some("Essential container in task exited".into());
            }
            if t.last_status == TaskStatus::Pending
                && t.started_at.is_some_and(|at| at + pending_for <= clock)
            {
                t.last_status = TaskStatus::Running;
            }
        }
        s.crash_at = crash_at;
        // Health shows once its time has come, on tasks that run.
        let now = self.clock.now();
        let mut settling = std::mem::take(&mut s.settling);
        for t in &mut s.tasks {
            if t.last_status != TaskStatus::Running {
                continue;
            }
            if let Some((at, health)) = settling.get(&t.identity.id) {
                if *at <= now {
                    t.health = *health;
                    settling.remove(&t.identity.id);
                }
            }
        }
        let live: std::collections::BTreeSet<&str> = s
            .tasks
            .iter()
            .filter(|t| t.is_live())
            .map(|t| t.identity.id.as_str())
            .collect();
        settling.retain(|id, _| live.contains(id.as_str()));
        s.settling = settling;
        s.sample();
        Ok(Observation {
            tasks: s.tasks.clone(),
            nodes: s.nodes.clone(),
            draining: Default::default(),
        })
    }

    async fn start(&self, l: Launch) -> Result<(), RuntimeError> {
        let mut s = self.state.lock().unwrap();
        let b = s
            .behaviour
            .get(&l.identity.config_hash)
            .copied()
            .unwrap_or(Behaviour::Healthy);
        s.started += 1;
        let n = {
            let n = s.starts.entry(l.identity.config_hash.clone()).or_default();
            *n += 1;
            *n
        };
        let now = s.clock;
        let up = if s.pending_for > 0 {
            TaskStatus::Pending
        } else {
            TaskStatus::Running
        };
        let (status, health, code) = match b {
            Behaviour::Healthy => (up, Health::Healthy, None),
            Behaviour::Flaky(every) if every > 0 && n % every != 0 => (up, Health::Healthy, None),
            Behaviour::Flaky(_) => (
                TaskStatus::Stopped,
                Health::Unknown,
                Some("TaskFailedToStart".to_string()),
            ),
            Behaviour::FailsToStart => (
                TaskStatus::Stopped,
                Health::Unknown,
                Some("TaskFailedToStart".to_string()),
            ),
            Behaviour::Unhealthy => (up, Health::Unhealthy, None),
            Behaviour::CrashesAfter(after) => {
                let at = now + s.pending_for + after;
                s.crash_at.insert(l.identity.id.clone(), at);
                // No health check: only the settle period tells.
                (up, Health::Unknown, None)
            }
        };
        let health = if health != Health::Unknown && !s.healthy_after.is_zero() {
            let at = self.clock.now() + s.healthy_after;
            s.settling.insert(l.identity.id.clone(), (at, health));
            Health::Unknown
        } else {
            health
        };
        s.tasks.push(Task {
            identity: l.identity,
            node: l.node,
            last_status: status,
            health,
            started_at: Some(now),
            stopped_reason: code.as_ref().map(|_| "simulated start failure".into()),
            stop_code: code,
            bindings: Vec::new(),
            target_health: None,
            exits: Vec::new(),
            stopped_at: None,
        });
        s.sample();
        Ok(())
    }

    async fn stop(&self, task_id: &str, _reason: &str) -> Result<(), RuntimeError> {
        let mut s = self.state.lock().unwrap();
        let before = s.tasks.len();
        s.tasks.retain(|t| t.identity.id != task_id);
        if s.tasks.len() == before {
            return Err(RuntimeError::new(format!("no task {task_id}")));
        }
        s.stopped += 1;
        s.sample();
        Ok(())
    }

    async fn remove(&self, task_id: &str) -> Result<(), RuntimeError> {
        self.state
            .lock()
            .unwrap()
            .tasks
            .retain(|t| t.identity.id != task_id);
        Ok(())
    }

    async fn halt(&self, task_id: &str) -> Result<(), RuntimeError> {
        let mut s = self.state.lock().unwrap();
        if let Some(t) = s.tasks.iter_mut().find(|t| t.identity.id == task_id) {
            if t.last_status != TaskStatus::Stopped {
                t.last_status = TaskStatus::Stopped;
                t.stop_code = Some("TaskFailedHealthChecks".into());
                t.stopped_reason = Some("Task failed container health checks".into());
            }
        }
        s.sample();
        Ok(())
    }
}
