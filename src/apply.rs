//! Carrying out a plan, exactly: the revisions it registers, the tasks it
//! stops and starts (on the nodes it names), in the rollout steps it shows.
//! Nothing is done that the plan does not say.
//!
//! Services are independent of each other, so their changes run
//! concurrently (bounded), and the tasks of one rollout step start together;
//! steps of one service follow each other, waiting for health.
//!
//! The store is saved after every resource, and tasks carry their
//! ownership in the runtime, so an apply killed at any moment is continued
//! by the next plan without duplicates.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};

use crate::manifest::Kind;
use crate::model::{self, DesiredState, Health, ObservedService, Revision, Task, TaskStatus};
use crate::plan::{Action, Plan, ResourceChange, TaskChanges, TaskStop};
use crate::runtime::{Launch, Runtime, RuntimeError};
use crate::secrets::Resolver;
use crate::store::Stored;

/// How apply waits.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Give up waiting for a step's tasks after this long.
    pub timeout: Duration,
    /// Tasks without a health check count as healthy after running this
    /// long.
    pub settle: Duration,
    /// How often to look at the runtime while waiting.
    pub poll: Duration,
    /// Services changed at the same time.
    pub concurrency: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(300),
            settle: Duration::from_secs(3),
            poll: Duration::from_millis(250),
            concurrency: 16,
        }
    }
}

/// Something apply did, for progress output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Resource {
        address: String,
        action: Action,
    },
    Registered {
        family: String,
        revision: u32,
    },
    Started {
        service: String,
        task: String,
        node: String,
        revision: u32,
    },
    Stopped {
        service: String,
        task: String,
        reason: String,
    },
    Step {
        service: String,
        step: usize,
        steps: usize,
    },
    Healthy {
        service: String,
        running: usize,
    },
}

/// Why apply stopped before the end.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApplyError {
    #[error("the plan cannot be applied: {0}")]
    Refused(String),
    #[error("{address}: {message}")]
    Failed {
        address: String,
        message: String,
        /// The task whose failure stopped the apply, for its logs.
        task: Option<String>,
    },
    #[error("{0}")]
    Runtime(#[from] RuntimeError),
    #[error("saving state: {0}")]
    Store(String),
    #[error("{} services failed", .0.len())]
    Several(Vec<ApplyError>),
}

impl ApplyError {
    /// The individual failures.
    pub fn each(&self) -> Vec<&ApplyError> {
        match self {
            ApplyError::Several(v) => v.iter().collect(),
            other => vec![other],
        }
    }
}

/// The side effects apply needs besides the runtime. Shared by the
/// concurrent service changes, hence `&self`.
pub trait Sink: Sync {
    fn event(&self, e: Event);
    fn save(&self, state: &Stored) -> Result<(), String>;
    /// Sleep between polls (tests and the simulation use no real time).
    fn sleep(&self, d: Duration) -> impl std::future::Future<Output = ()> + Send;
    /// Time since apply started, for timeouts and settle periods.
    fn elapsed(&self) -> Duration;
    fn new_task_id(&self) -> String;
}

/// Apply `plan` (made from `desired`) through `runtime`, recording what was
/// applied in `state`.
pub async fn apply<R: Runtime + Sync, S: Sink>(
    plan: &Plan,
    desired: &DesiredState,
    state: &mut Stored,
    runtime: &R,
    resolver: &Resolver,
    opts: &Options,
    sink: &S,
) -> Result<(), ApplyError> {
    if !plan.errors.is_empty() {
        return Err(ApplyError::Refused(plan.errors.join("; ")));
    }
    let changes: Vec<&ResourceChange> = plan.changes().collect();
    // Phase 1: providers, clusters and revisions the services need.
    for c in changes
        .iter()
        .filter(|c| c.kind != Kind::Service && c.action != Action::Delete)
    {
        resource(c, desired, state, sink)?;
    }
    // Phase 2: services, concurrently.
    let shared = Mutex::new(std::mem::take(state));
    let results: Vec<Result<(), ApplyError>> =
        stream::iter(changes.iter().filter(|c| c.kind == Kind::Service))
            .map(|c| {
                sink.event(Event::Resource {
                    address: c.address.clone(),
                    action: c.action,
                });
                service(&shared, desired, c, runtime, resolver, opts, sink)
            })
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
    *state = shared.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut errors: Vec<ApplyError> = results.into_iter().filter_map(Result::err).collect();
    // Phase 3: what the deleted services used.
    if errors.is_empty() {
        for c in changes
            .iter()
            .filter(|c| c.kind != Kind::Service && c.action == Action::Delete)
        {
            resource(c, desired, state, sink)?;
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(ApplyError::Several(errors)),
    }
}

fn resource<S: Sink>(
    c: &ResourceChange,
    desired: &DesiredState,
    state: &mut Stored,
    sink: &S,
) -> Result<(), ApplyError> {
    sink.event(Event::Resource {
        address: c.address.clone(),
        action: c.action,
    });
    match c.kind {
        Kind::CapacityProvider => record(
            &mut state.capacity_providers,
            &desired.capacity_providers,
            c,
        ),
        Kind::Cluster => record(&mut state.clusters, &desired.clusters, c),
        Kind::TaskDefinition => task_definition(state, desired, c, sink),
        Kind::Service => {}
    }
    sink.save(state).map_err(ApplyError::Store)
}

fn record<T: Clone>(
    stored: &mut BTreeMap<String, T>,
    desired: &BTreeMap<String, T>,
    c: &ResourceChange,
) {
    match c.action {
        Action::Delete => {
            stored.remove(&c.name);
        }
        _ => {
            if let Some(s) = desired.get(&c.name) {
                stored.insert(c.name.clone(), s.clone());
            }
        }
    }
}

fn task_definition<S: Sink>(
    state: &mut Stored,
    desired: &DesiredState,
    c: &ResourceChange,
    sink: &S,
) {
    if c.action == Action::Delete {
        state.task_definitions.remove(&c.name);
        return;
    }
    let (Some(r), Some(spec)) = (&c.revision, desired.task_definitions.get(&c.name)) else {
        return;
    };
    let revs = state.revisions.entry(c.name.clone()).or_default();
    if r.registers && !revs.iter().any(|x| x.number == r.to) {
        revs.push(Revision {
            number: r.to,
            digest: model::digest(spec),
            spec: spec.clone(),
        });
        sink.event(Event::Registered {
            family: c.name.clone(),
            revision: r.to,
        });
    }
    state.task_definitions.insert(c.name.clone(), r.to);
}

/// Update the shared state and save it, holding the lock only for that.
fn update<S: Sink>(
    shared: &Mutex<Stored>,
    sink: &S,
    f: impl FnOnce(&mut Stored),
) -> Result<(), ApplyError> {
    let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut st);
    sink.save(&st).map_err(ApplyError::Store)
}

async fn service<R: Runtime + Sync, S: Sink>(
    shared: &Mutex<Stored>,
    desired: &DesiredState,
    c: &ResourceChange,
    runtime: &R,
    resolver: &Resolver,
    opts: &Options,
    sink: &S,
) -> Result<(), ApplyError> {
    let cluster = c.cluster.clone().unwrap_or_default();
    let key = format!("{cluster}/{}", c.name);
    let empty = TaskChanges::default();
    let tc = c.tasks.as_ref().unwrap_or(&empty);
    let fail = |message: String| ApplyError::Failed {
        address: c.address.clone(),
        message,
        task: None,
    };

    if c.action == Action::Delete {
        stop_all(runtime, &key, &tc.stop, sink).await?;
        for id in &tc.cleanup {
            runtime.remove(id).await?;
        }
        return update(shared, sink, |st| {
            st.services.remove(&key);
        });
    }
    let ds = desired
        .services
        .get(&key)
        .ok_or_else(|| fail("not in the desired state".into()))?;
    let spec = &ds.spec;
    let family = spec
        .task_definition
        .split(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let (revision, td) = {
        let st = shared.lock().unwrap_or_else(|e| e.into_inner());
        let revision = tc
            .deployment
            .as_ref()
            .map(|d| d.to_revision)
            .or_else(|| tc.start.first().map(|s| s.revision))
            .or_else(|| st.services.get(&key).map(|s| s.revision))
            .ok_or_else(|| fail("no revision to run".into()))?;
        let td = st
            .revisions
            .get(&family)
            .and_then(|r| r.iter().find(|r| r.number == revision))
            .map(|r| r.spec.clone())
            .ok_or_else(|| fail(format!("revision {family}:{revision} is not registered")))?;
        (revision, td)
    };
    let config_hash = model::task_config_hash(&family, &td, &desired.secret_fingerprints);
    let fingerprints = model::secret_fingerprints_of(&td, &desired.secret_fingerprints);

    // Secrets are resolved now, for the launch only.
    let mut secrets = BTreeMap::new();
    for r in fingerprints.keys() {
        let v = resolver.resolve(r).map_err(|e| fail(e.to_string()))?;
        secrets.insert(r.clone(), v);
    }

    // The service (and the deployment it starts) is recorded before its
    // tasks start: a failed or interrupted rollout is then continued, not
    // forgotten, and status shows the service's tasks.
    update(shared, sink, |st| {
        st.services.insert(
            key.clone(),
            ObservedService {
                key: ds.key.clone(),
                spec: spec.clone(),
                revision,
                config_hash: config_hash.clone(),
                secret_fingerprints: fingerprints.clone(),
            },
        );
    })?;

    // Node slots in plan order.
    let mut slots: Vec<String> = Vec::new();
    for s in &tc.start {
        for _ in 0..s.count {
            slots.push(s.node.clone());
        }
    }
    let steps: Vec<(u32, u32)> = match &tc.deployment {
        Some(d) if !d.steps.is_empty() && d.from_revision.is_some() => {
            d.steps.iter().map(|s| (s.stop_old, s.start_new)).collect()
        }
        _ => vec![(tc.stop.len() as u32, slots.len() as u32)],
    };
    let mut stops: std::collections::VecDeque<TaskStop> = tc.stop.iter().cloned().collect();
    let mut slots: std::collections::VecDeque<String> = slots.into();
    let total = steps.len();
    for (i, (stop_n, start_n)) in steps.into_iter().enumerate() {
        if total > 1 {
            sink.event(Event::Step {
                service: key.clone(),
                step: i + 1,
                steps: total,
            });
        }
        let n = (stop_n as usize).min(stops.len());
        let batch: Vec<TaskStop> = stops.drain(..n).collect();
        stop_all(runtime, &key, &batch, sink).await?;
        let launches: Vec<Launch> = (0..start_n)
            .map_while(|_| slots.pop_front())
            .map(|node| Launch {
                id: sink.new_task_id(),
                cluster: cluster.clone(),
                service: Some(c.name.clone()),
                family: family.clone(),
                revision,
                config_hash: config_hash.clone(),
                node,
                spec: td.clone(),
                secrets: secrets.clone(),
            })
            .collect();
        let ids: Vec<String> = launches.iter().map(|l| l.id.clone()).collect();
        let nodes: Vec<String> = launches.iter().map(|l| l.node.clone()).collect();
        let started =
            futures_util::future::join_all(launches.into_iter().map(|l| runtime.start(l))).await;
        for ((id, node), r) in ids.iter().zip(nodes).zip(started) {
            if let Err(e) = r {
                return Err(ApplyError::Failed {
                    address: c.address.clone(),
                    message: format!(
                        "task {} failed to start: {}",
                        crate::plan::short(id),
                        e.message
                    ),
                    task: Some(id.clone()),
                });
            }
            sink.event(Event::Started {
                service: key.clone(),
                task: id.clone(),
                node,
                revision,
            });
        }
        if let Err((task, message)) = wait_healthy(runtime, &key, &ids, &td, opts, sink).await {
            // A task that stopped keeps its containers (for logs and
            // status) but none of them runs on.
            if let Some(t) = &task {
                let _ = runtime.halt(t).await;
            }
            return Err(ApplyError::Failed {
                address: c.address.clone(),
                message,
                task,
            });
        }
    }
    // Stops the steps did not cover (e.g. unhealthy tasks replaced).
    let rest: Vec<TaskStop> = stops.into_iter().collect();
    stop_all(runtime, &key, &rest, sink).await?;
    // What is left of tasks that had stopped when the plan was made.
    for id in &tc.cleanup {
        runtime.remove(id).await?;
    }
    if let Some(p) = &tc.placement_failure {
        return Err(fail(format!(
            "{} task(s) could not be placed: {}",
            p.unplaced, p.reason
        )));
    }
    Ok(())
}

async fn stop_all<R: Runtime, S: Sink>(
    runtime: &R,
    key: &str,
    stops: &[TaskStop],
    sink: &S,
) -> Result<(), ApplyError> {
    let results =
        futures_util::future::join_all(stops.iter().map(|s| runtime.stop(&s.task, &s.reason)))
            .await;
    for (s, r) in stops.iter().zip(results) {
        r?;
        sink.event(Event::Stopped {
            service: key.to_string(),
            task: s.task.clone(),
            reason: s.reason.clone(),
        });
    }
    Ok(())
}

/// Whether a running task counts as healthy: its health checks pass, or it
/// has none and has run for the settle period.
fn healthy(t: &Task, has_checks: bool, ran: Duration, settle: Duration) -> bool {
    t.last_status == TaskStatus::Running
        && match t.health {
            Health::Healthy => true,
            Health::Unknown => !has_checks && ran >= settle,
            Health::Unhealthy => false,
        }
}

async fn wait_healthy<R: Runtime, S: Sink>(
    runtime: &R,
    key: &str,
    ids: &[String],
    td: &crate::manifest::TaskDefinitionSpec,
    opts: &Options,
    sink: &S,
) -> Result<(), (Option<String>, String)> {
    if ids.is_empty() {
        return Ok(());
    }
    let has_checks = td
        .container_definitions
        .iter()
        .any(|c| c.essential && c.health_check.is_some());
    let start = sink.elapsed();
    loop {
        let obs = runtime.observe().await.map_err(|e| (None, e.message))?;
        let ran = sink.elapsed().saturating_sub(start);
        let mut all = true;
        for id in ids {
            let Some(t) = obs.tasks.iter().find(|t| &t.id == id) else {
                return Err((None, format!("task {} disappeared", crate::plan::short(id))));
            };
            if t.last_status == TaskStatus::Stopped {
                return Err((
                    Some(id.clone()),
                    format!(
                        "task {} stopped: {}{}",
                        crate::plan::short(id),
                        t.stop_code.clone().unwrap_or_else(|| "stopped".into()),
                        t.stopped_reason
                            .as_ref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    ),
                ));
            }
            all &= healthy(t, has_checks, ran, opts.settle);
        }
        if all {
            sink.event(Event::Healthy {
                service: key.to_string(),
                running: ids.len(),
            });
            return Ok(());
        }
        if ran >= opts.timeout {
            let pending = obs
                .tasks
                .iter()
                .find(|t| ids.contains(&t.id) && !healthy(t, has_checks, ran, opts.settle))
                .map(|t| t.id.clone());
            return Err((
                pending,
                format!(
                    "tasks did not become healthy within {}s (steady state not reached)",
                    opts.timeout.as_secs()
                ),
            ));
        }
        sink.sleep(opts.poll).await;
    }
}
