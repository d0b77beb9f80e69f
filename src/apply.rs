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

use crate::deployment::{EventKind, History, Verdict};
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
    /// A task failed: stopped before it was healthy, or failed its health
    /// checks.
    TaskFailed {
        service: String,
        task: String,
        reason: String,
    },
    /// A deployment started, resumed, completed, failed or rolled back.
    Deployment {
        service: String,
        message: String,
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
    /// Unix seconds, for deployment records and events.
    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
    /// Whether the user asked to abort the rollout of service `key`
    /// (`reconcile deployment abort`). Asking consumes the request.
    fn aborted(&self, _key: &str) -> bool {
        false
    }
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
fn update<S: Sink, T>(
    shared: &Mutex<Stored>,
    sink: &S,
    f: impl FnOnce(&mut Stored) -> T,
) -> Result<T, ApplyError> {
    let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
    let out = f(&mut st);
    sink.save(&st).map_err(ApplyError::Store)?;
    Ok(out)
}

/// What a service's tasks are launched as.
struct Target {
    cluster: String,
    service: String,
    family: String,
    revision: u32,
    config_hash: String,
    td: crate::manifest::TaskDefinitionSpec,
    secrets: BTreeMap<String, crate::secrets::SecretValue>,
}

impl Target {
    fn launch(&self, id: String, node: String) -> Launch {
        Launch {
            id,
            cluster: self.cluster.clone(),
            service: Some(self.service.clone()),
            family: self.family.clone(),
            revision: self.revision,
            config_hash: self.config_hash.clone(),
            node,
            spec: self.td.clone(),
            secrets: self.secrets.clone(),
        }
    }

    fn has_checks(&self) -> bool {
        has_checks(&self.td)
    }
}

/// Whether a task of `td` reports health: an essential container has a
/// health check.
fn has_checks(td: &crate::manifest::TaskDefinitionSpec) -> bool {
    td.container_definitions
        .iter()
        .any(|c| c.essential && c.health_check.is_some())
}

/// What one service's change works with.
struct Ctx<'a, R, S> {
    shared: &'a Mutex<Stored>,
    key: String,
    address: String,
    runtime: &'a R,
    opts: &'a Options,
    sink: &'a S,
    /// healthCheckGracePeriodSeconds.
    grace: Duration,
    /// Tasks that failed and were halted: their remains are removed once
    /// the service is steady, kept (for their logs) when apply fails.
    failed: Mutex<Vec<String>>,
    /// Delay before the first launches (restart throttling).
    throttle: Duration,
}

/// A task a rollout started and watches.
struct Watched {
    id: String,
    node: String,
    /// When it was launched (apply's clock).
    since: Duration,
    healthy: bool,
}

fn n_unhealthy(watched: &[Watched]) -> usize {
    watched.iter().filter(|w| !w.healthy).count()
}

/// Why watching a step's tasks ended early.
enum Halt {
    /// The circuit breaker tripped (the deployment is already FAILED).
    Tripped {
        reason: String,
        task: Option<String>,
    },
    /// `reconcile deployment abort`.
    Aborted,
    /// Steady state not reached in time.
    TimedOut {
        reason: String,
        task: Option<String>,
    },
    Error(ApplyError),
}

impl<R: Runtime + Sync, S: Sink> Ctx<'_, R, S> {
    /// Update the service's deployment history and save.
    fn history<T>(&self, f: impl FnOnce(&mut History) -> T) -> Result<T, ApplyError> {
        let mut st = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let out = f(st.deployments.entry(self.key.clone()).or_default());
        self.sink.save(&st).map_err(ApplyError::Store)?;
        Ok(out)
    }

    fn say(&self, message: String) {
        self.sink.event(Event::Deployment {
            service: self.key.clone(),
            message,
        });
    }

    /// Launch a task on each of `nodes` and watch them until all are
    /// healthy. A task that stops, or fails its health checks after the
    /// grace period, counts against deployment `dep` and is halted (its
    /// containers kept for their logs) and relaunched on its node after the
    /// throttling delay; the breaker or the timeout ends it.
    ///
    /// `watched` holds the tasks this rollout started in earlier steps:
    /// they are watched too, so a task that crashes or turns unhealthy
    /// after it was healthy still counts, and is replaced before the
    /// rollout goes on.
    async fn run_tasks(
        &self,
        target: &Target,
        nodes: Vec<String>,
        dep: Option<u32>,
        abortable: bool,
        watched: &mut Vec<Watched>,
    ) -> Result<(), Halt> {
        if nodes.is_empty() && watched.is_empty() {
            return Ok(());
        }
        let begun = self.sink.elapsed();
        let has_checks = target.has_checks();
        let launched = !nodes.is_empty();
        let first = begun + self.throttle;
        if !nodes.is_empty() && !self.throttle.is_zero() {
            self.say(format!(
                "launching in {}s (restart throttling)",
                self.throttle.as_secs()
            ));
        }
        let mut relaunch: Vec<(String, Duration)> = nodes.into_iter().map(|n| (n, first)).collect();
        let mut last: Option<(String, String)> = None;
        loop {
            if abortable && self.sink.aborted(&self.key) {
                return Err(Halt::Aborted);
            }
            // Launch what is due, together.
            let now = self.sink.elapsed();
            let (due, later): (Vec<_>, Vec<_>) =
                relaunch.into_iter().partition(|(_, at)| *at <= now);
            relaunch = later;
            let launches: Vec<Launch> = due
                .into_iter()
                .map(|(node, _)| target.launch(self.sink.new_task_id(), node))
                .collect();
            let meta: Vec<(String, String)> = launches
                .iter()
                .map(|l| (l.id.clone(), l.node.clone()))
                .collect();
            let started =
                futures_util::future::join_all(launches.into_iter().map(|l| self.runtime.start(l)))
                    .await;
            let mut failures: Vec<(String, String, String)> = Vec::new();
            for ((id, node), r) in meta.into_iter().zip(started) {
                match r {
                    Ok(()) => {
                        self.sink.event(Event::Started {
                            service: self.key.clone(),
                            task: id.clone(),
                            node: node.clone(),
                            revision: target.revision,
                        });
                        watched.push(Watched {
                            id,
                            node,
                            since: now,
                            healthy: false,
                        });
                    }
                    Err(e) => {
                        let why = format!(
                            "task {} failed to start: {}",
                            crate::plan::short(&id),
                            e.message
                        );
                        failures.push((id, node, why));
                    }
                }
            }

            let obs = self
                .runtime
                .observe()
                .await
                .map_err(|e| Halt::Error(e.into()))?;
            let ran_at = self.sink.elapsed();
            let by_id: std::collections::HashMap<&str, &Task> =
                obs.tasks.iter().map(|t| (t.id.as_str(), t)).collect();
            watched.retain_mut(|w| {
                let short = crate::plan::short(&w.id);
                let why = match by_id.get(w.id.as_str()) {
                    None => Some(format!("task {short} disappeared")),
                    Some(t) if t.last_status == TaskStatus::Stopped => Some(format!(
                        "task {short} stopped: {}{}",
                        t.stop_code.clone().unwrap_or_else(|| "stopped".into()),
                        t.stopped_reason
                            .as_ref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    )),
                    Some(t)
                        if t.health == Health::Unhealthy
                            && ran_at.saturating_sub(w.since) >= self.grace =>
                    {
                        Some(format!(
                            "task {short} failed container health checks (after RUNNING)"
                        ))
                    }
                    Some(t) => {
                        // Once healthy, a task stays counted as healthy
                        // until it stops or fails its checks.
                        w.healthy = w.healthy
                            || healthy(
                                t,
                                has_checks,
                                ran_at.saturating_sub(w.since),
                                self.opts.settle,
                            );
                        None
                    }
                };
                match why {
                    Some(why) => {
                        failures.push((w.id.clone(), w.node.clone(), why));
                        false
                    }
                    None => true,
                }
            });
            for (id, node, why) in failures {
                // A node that no longer takes tasks (lost, draining, gone)
                // is not the revision's fault and is no place to relaunch:
                // the rollout stops here, IN_PROGRESS, and the next plan
                // places the task elsewhere and resumes it.
                if !obs.nodes.iter().any(|n| n.name == node) {
                    return Err(Halt::Error(ApplyError::Failed {
                        address: self.address.clone(),
                        message: format!(
                            "node `{node}` no longer takes tasks ({why}); the next reconcile places them again"
                        ),
                        task: None,
                    }));
                }
                // The failed task's containers stay for its logs and status;
                // none of them runs on.
                let _ = self.runtime.halt(&id).await;
                self.failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(id.clone());
                self.sink.event(Event::TaskFailed {
                    service: self.key.clone(),
                    task: id.clone(),
                    reason: why.clone(),
                });
                let now_s = self.sink.now();
                let verdict = match dep {
                    Some(d) => self
                        .history(|h| h.task_failed(d, &why, now_s))
                        .map_err(Halt::Error)?,
                    None => Verdict::Relaunch(crate::deployment::backoff(1)),
                };
                last = Some((id.clone(), why.clone()));
                match verdict {
                    Verdict::Tripped => {
                        let reason = self
                            .shared
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .deployments
                            .get(&self.key)
                            .and_then(|h| h.get(dep.unwrap_or_default()))
                            .map(|d| d.reason.clone())
                            .unwrap_or_else(|| "circuit breaker tripped".into());
                        return Err(Halt::Tripped {
                            reason: format!("{reason}; last: {why}"),
                            task: Some(id),
                        });
                    }
                    Verdict::Relaunch(delay) => {
                        if !delay.is_zero() {
                            self.say(format!(
                                "relaunching on {node} in {}s (restart throttling)",
                                delay.as_secs()
                            ));
                        }
                        relaunch.push((node, self.sink.elapsed() + delay));
                    }
                }
            }
            if relaunch.is_empty() && watched.iter().all(|w| w.healthy) {
                if let Some(d) = dep {
                    self.history(|h| h.launched_healthy(d))
                        .map_err(Halt::Error)?;
                }
                if launched {
                    self.sink.event(Event::Healthy {
                        service: self.key.clone(),
                        running: watched.len(),
                    });
                }
                return Ok(());
            }
            if ran_at.saturating_sub(begun) >= self.opts.timeout {
                // The logs worth showing are the last failed task's: it
                // failed for the reason reported; a pending one may not
                // have said anything yet.
                let task = last
                    .as_ref()
                    .map(|l| l.0.clone())
                    .or_else(|| watched.iter().find(|w| !w.healthy).map(|w| w.id.clone()));
                let mut reason = format!(
                    "tasks did not become healthy within {}s (steady state not reached)",
                    self.opts.timeout.as_secs()
                );
                if let Some((_, why)) = &last {
                    reason.push_str(&format!("; last failure: {why}"));
                    if dep.is_some_and(|d| {
                        self.shared
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .deployments
                            .get(&self.key)
                            .and_then(|h| h.get(d))
                            .is_some_and(|d| d.threshold.is_none())
                    }) {
                        reason.push_str(
                            " (enable deploymentCircuitBreaker to stop such a rollout after a few failed tasks, and roll it back)",
                        );
                    }
                }
                // What did not become healthy in time does not run on; its
                // containers stay for their logs.
                for w in watched.iter().filter(|w| !w.healthy) {
                    let _ = self.runtime.halt(&w.id).await;
                }
                return Err(Halt::TimedOut { reason, task });
            }
            self.sink.sleep(self.opts.poll).await;
        }
    }
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
            st.deployments.remove(&key);
        });
    }
    let ds = desired
        .services
        .get(&key)
        .ok_or_else(|| fail("not in the desired state".into()))?;
    let spec = &ds.spec;
    let family = model::TaskDefRef::parse(&spec.task_definition)
        .family
        .to_string();
    let revision = {
        let st = shared.lock().unwrap_or_else(|e| e.into_inner());
        tc.deployment
            .as_ref()
            .map(|d| d.to_revision)
            .or_else(|| tc.start.first().map(|s| s.revision))
            .or_else(|| st.services.get(&key).map(|s| s.revision))
            .ok_or_else(|| fail("no revision to run".into()))?
    };
    let target = target(
        shared, desired, resolver, &cluster, &c.name, &family, revision,
    )
    .map_err(fail)?;
    // The service (and the deployment it starts) is recorded before its
    // tasks start: a failed or interrupted rollout is then continued, not
    // forgotten, and status shows the service's tasks.
    let now = sink.now();
    let dep = update(shared, sink, |st| {
        // A rollout already kept by a hold (the planner kept what runs)
        // keeps its recorded spec's revision.
        st.services.insert(
            key.clone(),
            ObservedService {
                key: ds.key.clone(),
                spec: spec.clone(),
                revision,
                config_hash: target.config_hash.clone(),
                secret_fingerprints: model::secret_fingerprints_of(
                    &target.td,
                    &desired.secret_fingerprints,
                ),
            },
        );
        let h = st.deployments.entry(key.clone()).or_default();
        match &tc.deployment {
            Some(_) => Some(h.begin(
                revision,
                &target.config_hash,
                tc.running_after,
                &spec.deployment_configuration.deployment_circuit_breaker,
                None,
                now,
            )),
            None => h.primary().map(|d| d.id),
        }
    })?;
    // Restart throttling outlives one apply: replacing the tasks of a
    // service whose launches keep failing waits the current delay first.
    // A new deployment starts over.
    let throttle = match (&tc.deployment, dep) {
        (None, Some(d)) => crate::deployment::backoff(
            shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .deployments
                .get(&key)
                .and_then(|h| h.get(d))
                .map_or(0, |d| d.start_failures),
        ),
        _ => Duration::ZERO,
    }
    // Never so long that the apply ends before trying.
    .min(opts.timeout / 2);
    let ctx = Ctx {
        shared,
        key: key.clone(),
        address: c.address.clone(),
        runtime,
        opts,
        sink,
        grace: Duration::from_secs(u64::from(spec.health_check_grace_period_seconds)),
        failed: Mutex::new(Vec::new()),
        throttle,
    };
    if let (Some(d), Some(_)) = (dep, &tc.deployment) {
        ctx.say(format!("deployment {d} (revision {revision}) in progress"));
    }

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
    // Where tasks of this service ran, for a rollback.
    let mut vacated: Vec<String> = Vec::new();
    let mut watched: Vec<Watched> = Vec::new();
    if tc.deployment.is_some() {
        // Tasks of this configuration already running (a rollout resumed
        // after an interruption or a controller restart) count towards the
        // floor only once healthy, so they are watched like new ones.
        let obs = runtime.observe().await?;
        let since = sink.elapsed();
        watched.extend(
            obs.tasks
                .iter()
                .filter(|t| {
                    t.is_live()
                        && t.health != Health::Unhealthy
                        && t.config_hash == target.config_hash
                        && t.cluster == cluster
                        && t.service.as_deref() == Some(c.name.as_str())
                })
                .map(|t| Watched {
                    id: t.id.clone(),
                    node: t.node.clone(),
                    since,
                    healthy: false,
                }),
        );
    }
    let total = steps.len();
    for (i, (stop_n, start_n)) in steps.into_iter().enumerate() {
        if total > 1 {
            sink.event(Event::Step {
                service: key.clone(),
                step: i + 1,
                steps: total,
            });
        }
        if sink.aborted(&key) {
            return deployment_failed(
                &ctx,
                desired,
                resolver,
                &target,
                dep,
                Halt::Aborted,
                vacated,
            )
            .await;
        }
        // Old tasks go only while the new ones so far are healthy.
        if n_unhealthy(&watched) > 0 {
            if let Err(h) = ctx
                .run_tasks(&target, Vec::new(), dep, true, &mut watched)
                .await
            {
                return deployment_failed(&ctx, desired, resolver, &target, dep, h, vacated).await;
            }
        }
        let n = (stop_n as usize).min(stops.len());
        let batch: Vec<TaskStop> = stops.drain(..n).collect();
        stop_all(runtime, &key, &batch, sink).await?;
        vacated.extend(batch.iter().map(|s| s.node.clone()));
        let nodes: Vec<String> = (0..start_n).map_while(|_| slots.pop_front()).collect();
        vacated.extend(nodes.iter().cloned());
        if let Err(h) = ctx.run_tasks(&target, nodes, dep, true, &mut watched).await {
            return deployment_failed(&ctx, desired, resolver, &target, dep, h, vacated).await;
        }
    }
    // Stops the steps did not cover (e.g. unhealthy tasks replaced).
    let rest: Vec<TaskStop> = stops.into_iter().collect();
    stop_all(runtime, &key, &rest, sink).await?;
    // What is left of tasks that had stopped when the plan was made, and of
    // the ones that failed and were replaced.
    let failed = std::mem::take(&mut *ctx.failed.lock().unwrap_or_else(|e| e.into_inner()));
    for id in tc.cleanup.iter().chain(&failed) {
        runtime.remove(id).await?;
    }
    if let Some(p) = &tc.placement_failure {
        let msg = format!("{} task(s) could not be placed: {}", p.unplaced, p.reason);
        let now = sink.now();
        ctx.history(|h| h.event(now, EventKind::ServiceTaskPlacementFailure, msg.clone()))?;
        return Err(fail(msg));
    }
    // Steady: the deployment is COMPLETED, also one an earlier apply left
    // IN_PROGRESS (stopped by a placement failure or a lost node) and this
    // one finished.
    if let Some(d) = dep {
        let now = sink.now();
        let done = ctx.history(|h| {
            let open = h
                .get(d)
                .is_some_and(|x| x.rollout == crate::deployment::Rollout::InProgress);
            h.complete(d, tc.running_after, now);
            open
        })?;
        if done {
            ctx.say(format!("deployment {d} (revision {revision}) completed"));
        }
    }
    Ok(())
}

/// The launch target of `family:revision` for a service: its registered
/// spec, configuration digest and resolved secrets.
fn target(
    shared: &Mutex<Stored>,
    desired: &DesiredState,
    resolver: &Resolver,
    cluster: &str,
    service: &str,
    family: &str,
    revision: u32,
) -> Result<Target, String> {
    let td = shared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .revisions
        .get(family)
        .and_then(|r| r.iter().find(|r| r.number == revision))
        .map(|r| r.spec.clone())
        .ok_or_else(|| format!("revision {family}:{revision} is not registered"))?;
    let config_hash = model::task_config_hash(family, &td, &desired.secret_fingerprints);
    // Secrets are resolved now, for the launch only.
    let mut secrets = BTreeMap::new();
    for r in model::secret_fingerprints_of(&td, &desired.secret_fingerprints).keys() {
        let v = resolver.resolve(r).map_err(|e| e.to_string())?;
        secrets.insert(r.clone(), v);
    }
    Ok(Target {
        cluster: cluster.to_string(),
        service: service.to_string(),
        family: family.to_string(),
        revision,
        config_hash,
        td,
        secrets,
    })
}

/// A rollout stopped: mark its deployment FAILED and, when its breaker
/// says so or the user aborted, restore the last COMPLETED deployment. The
/// result is always an error: a rolled-back apply never reports success.
async fn deployment_failed<R: Runtime + Sync, S: Sink>(
    ctx: &Ctx<'_, R, S>,
    desired: &DesiredState,
    resolver: &Resolver,
    failed: &Target,
    dep: Option<u32>,
    halt: Halt,
    vacated: Vec<String>,
) -> Result<(), ApplyError> {
    let (reason, task, aborted) = match halt {
        Halt::Error(e) => return Err(e),
        Halt::Aborted => ("aborted by the user".to_string(), None, true),
        Halt::Tripped { reason, task } | Halt::TimedOut { reason, task } => (reason, task, false),
    };
    let failed_err = |message: String| ApplyError::Failed {
        address: ctx.address.clone(),
        message,
        task: task.clone(),
    };
    let Some(id) = dep else {
        return Err(failed_err(reason));
    };
    let now = ctx.sink.now();
    let (rollback, restore) = ctx.history(|h| {
        h.fail(id, &reason, now);
        let d = h.get(id);
        // An abort always rolls back; a failure does when the breaker is
        // enabled with rollback.
        let rollback = aborted || d.is_some_and(|d| d.rollback && d.threshold.is_some());
        let restore = h
            .last_completed(&failed.config_hash)
            .map(|d| (d.id, d.revision));
        (rollback, restore)
    })?;
    let head = format!(
        "deployment {id} (revision {}) failed: {reason}",
        failed.revision
    );
    ctx.say(head.clone());
    if !rollback {
        return Err(failed_err(head));
    }
    let Some((restore_id, to)) = restore else {
        return Err(failed_err(format!(
            "{head}; no COMPLETED deployment to roll back to"
        )));
    };
    match roll_back(ctx, desired, resolver, failed, id, to, vacated).await {
        Ok(()) => Err(failed_err(format!(
            "{head}; rolled back to revision {to} (deployment {restore_id})"
        ))),
        Err(e) => Err(failed_err(format!(
            "{head}; rollback to revision {to} failed: {e}"
        ))),
    }
}

/// Restore revision `to`: a new deployment that stops the failed
/// configuration's tasks and brings the old one back to the desired count
/// on the nodes the service used. The failed configuration is held, so the
/// next plan keeps what runs instead of deploying it again.
async fn roll_back<R: Runtime + Sync, S: Sink>(
    ctx: &Ctx<'_, R, S>,
    desired: &DesiredState,
    resolver: &Resolver,
    failed: &Target,
    failed_id: u32,
    to: u32,
    vacated: Vec<String>,
) -> Result<(), String> {
    let old = target(
        ctx.shared,
        desired,
        resolver,
        &failed.cluster,
        &failed.service,
        &failed.family,
        to,
    )?;
    let now = ctx.sink.now();
    let (count, breaker, spec) = {
        let st = ctx.shared.lock().unwrap_or_else(|e| e.into_inner());
        let svc = st
            .services
            .get(&ctx.key)
            .ok_or_else(|| "the service is not recorded".to_string())?;
        let count = st
            .deployments
            .get(&ctx.key)
            .and_then(|h| h.get(failed_id))
            .map(|d| d.desired)
            .unwrap_or(0);
        let mut breaker = svc
            .spec
            .deployment_configuration
            .deployment_circuit_breaker
            .clone();
        // A rollback that fails is reported, not rolled back again.
        breaker.rollback = false;
        (count, breaker, svc.spec.clone())
    };
    let rb = ctx
        .history(|h| {
            h.hold(
                &failed.config_hash,
                failed.revision,
                to,
                format!("deployment {failed_id} was rolled back"),
            );
            h.begin(to, &old.config_hash, count, &breaker, Some(failed_id), now)
        })
        .map_err(|e| e.to_string())?;
    ctx.say(format!("rolling back to revision {to} (deployment {rb})"));
    update(ctx.shared, ctx.sink, |st| {
        st.services.insert(
            ctx.key.clone(),
            ObservedService {
                key: model::ServiceKey {
                    cluster: failed.cluster.clone(),
                    name: failed.service.clone(),
                },
                spec: spec.clone(),
                revision: to,
                config_hash: old.config_hash.clone(),
                secret_fingerprints: model::secret_fingerprints_of(
                    &old.td,
                    &desired.secret_fingerprints,
                ),
            },
        );
    })
    .map_err(|e| e.to_string())?;
    // The rollback is a rolling deployment of its own, within the same
    // bounds: tasks of the failed configuration that are not healthy go at
    // once (they hold up nothing), healthy ones only while the floor holds.
    let bounds = crate::plan::rollout::Bounds::new(
        count,
        spec.deployment_configuration
            .min_healthy(spec.scheduling_strategy),
        spec.deployment_configuration
            .max_percent(spec.scheduling_strategy),
    );
    let has_checks = failed.has_checks();
    let mut pool: Vec<String> = vacated;
    let mut watched: Vec<Watched> = Vec::new();
    let result = loop {
        let obs = ctx.runtime.observe().await.map_err(|e| e.message)?;
        let now = ctx.sink.now();
        let mine: Vec<&Task> = obs
            .tasks
            .iter()
            .filter(|t| {
                t.is_live()
                    && t.cluster == failed.cluster
                    && t.service.as_deref() == Some(&failed.service)
            })
            .collect();
        let (restored, leaving): (Vec<&Task>, Vec<&Task>) = mine
            .into_iter()
            .partition(|t| t.config_hash == old.config_hash);
        let ran = |t: &Task| {
            Duration::from_secs(now.saturating_sub(t.started_at.unwrap_or(now)).max(0) as u64)
        };
        let (steady, unsteady): (Vec<&Task>, Vec<&Task>) = leaving
            .into_iter()
            .partition(|t| healthy(t, has_checks, ran(t), ctx.opts.settle));
        let stop = |t: &&Task| TaskStop {
            task: t.id.clone(),
            revision: t.revision,
            node: t.node.clone(),
            reason: format!("rolled back to revision {to}"),
        };
        pool.extend(steady.iter().chain(&unsteady).map(|t| t.node.clone()));
        if pool.is_empty() {
            pool = obs.nodes.iter().map(|n| n.name.clone()).collect();
        }
        let unsteady: Vec<TaskStop> = unsteady.iter().map(stop).collect();
        stop_all(ctx.runtime, &ctx.key, &unsteady, ctx.sink)
            .await
            .map_err(|e| e.to_string())?;
        let have = restored.len() as u32;
        if steady.is_empty() && have >= count {
            break Ok(());
        }
        let Some(step) =
            crate::plan::rollout::next_step(count, have.min(count), steady.len() as u32, bounds)
        else {
            break Err(Halt::TimedOut {
                reason: format!(
                    "the rollback cannot progress: minimumHealthyPercent keeps {} healthy and maximumPercent allows {} running",
                    bounds.min_healthy, bounds.max_running
                ),
                task: None,
            });
        };
        let stops: Vec<TaskStop> = steady
            .iter()
            .take(step.stop_old as usize)
            .map(stop)
            .collect();
        stop_all(ctx.runtime, &ctx.key, &stops, ctx.sink)
            .await
            .map_err(|e| e.to_string())?;
        if step.start_new > 0 && pool.is_empty() {
            return Err("no node to run the restored tasks on".into());
        }
        let nodes: Vec<String> = (0..step.start_new as usize)
            .map(|i| pool[i % pool.len()].clone())
            .collect();
        if let Err(h) = ctx
            .run_tasks(&old, nodes, Some(rb), false, &mut watched)
            .await
        {
            break Err(h);
        }
    };
    let now = ctx.sink.now();
    match result {
        Ok(()) => {
            ctx.history(|h| h.complete(rb, count, now))
                .map_err(|e| e.to_string())?;
            ctx.say(format!("rollback to revision {to} completed"));
            Ok(())
        }
        Err(h) => {
            let why = match h {
                Halt::Tripped { reason, .. } | Halt::TimedOut { reason, .. } => reason,
                Halt::Aborted => "aborted".into(),
                Halt::Error(e) => e.to_string(),
            };
            let _ = ctx.history(|h| h.fail(rb, &why, now));
            Err(why)
        }
    }
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

/// Deployments an interrupted apply left IN_PROGRESS although their
/// service has since settled: the plan keeps the service as it is, and
/// exactly the deployment's desired count of the service's live tasks run
/// its configuration, all healthy (or, without health checks, running for
/// `settle`). Completing them is bookkeeping, not a change to anything
/// that runs, so a pass whose plan changes nothing does it. Returns
/// `(service, message)` for each one completed.
pub fn complete_settled(
    plan: &Plan,
    tasks: &[Task],
    state: &mut Stored,
    settle: Duration,
    now: i64,
) -> Vec<(String, String)> {
    let mut done = Vec::new();
    let services = plan
        .resource_changes
        .iter()
        .filter(|c| c.kind == Kind::Service && c.action == Action::NoOp);
    for c in services {
        let cluster = c.cluster.as_deref().unwrap_or_default();
        let key = format!("{cluster}/{}", c.name);
        let Some(d) = state
            .deployments
            .get(&key)
            .and_then(|h| h.primary())
            .filter(|d| d.rollout == crate::deployment::Rollout::InProgress)
        else {
            continue;
        };
        let (id, revision, desired) = (d.id, d.revision, d.desired);
        let has_checks = state
            .services
            .get(&key)
            .and_then(|s| {
                let family = model::TaskDefRef::parse(&s.spec.task_definition).family;
                state
                    .revisions
                    .get(family)?
                    .iter()
                    .find(|r| r.number == revision)
            })
            .is_some_and(|r| has_checks(&r.spec));
        let live: Vec<&Task> = tasks
            .iter()
            .filter(|t| t.cluster == cluster && t.service.as_deref() == Some(c.name.as_str()))
            .filter(|t| t.is_live())
            .collect();
        let ran = |t: &Task| {
            Duration::from_secs(
                t.started_at
                    .map_or(0, |s| now.saturating_sub(s).max(0) as u64),
            )
        };
        let settled = live.len() == desired as usize
            && live
                .iter()
                .all(|t| t.config_hash == d.config_hash && healthy(t, has_checks, ran(t), settle));
        if settled {
            if let Some(h) = state.deployments.get_mut(&key) {
                h.complete(id, desired, now);
            }
            done.push((
                key,
                format!("deployment {id} (revision {revision}) completed"),
            ));
        }
    }
    done
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

/// The stored service a user names: `cluster/name`, or `name` when only
/// one cluster has it.
pub fn find_service(stored: &Stored, name: &str) -> Result<String, String> {
    if stored.services.contains_key(name) {
        return Ok(name.to_string());
    }
    let matches: Vec<&String> = stored
        .services
        .keys()
        .filter(|k| k.rsplit_once('/').is_some_and(|(_, n)| n == name))
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            let names: Vec<&str> = stored.services.keys().map(String::as_str).collect();
            let hint = crate::suggest::closest(name, names.iter().copied())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            Err(format!(
                "no service `{name}` has been applied{hint}; applied: {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        }
        many => Err(format!(
            "`{name}` is in several clusters; name one of: {}",
            many.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Prepare a rollback of service `key` to revision `to` (default: the
/// newest COMPLETED deployment of another configuration than the one
/// running): the desired configuration is held, so the next plan deploys
/// `to` instead, as a rolling deployment, and keeps it until the desired
/// state changes. `reason` says who asked. Returns the revision rolled
/// back to.
pub fn request_rollback(
    stored: &mut Stored,
    desired: &DesiredState,
    key: &str,
    to: Option<u32>,
    reason: &str,
) -> Result<u32, String> {
    let ds = desired
        .services
        .get(key)
        .ok_or_else(|| format!("service `{key}` is not in the source"))?;
    let running = stored
        .services
        .get(key)
        .ok_or_else(|| format!("service `{key}` has not been applied"))?;
    let model::TaskDefRef {
        family,
        revision: pinned,
    } = model::TaskDefRef::parse(&ds.spec.task_definition);
    let registered = stored.revisions.get(family).cloned().unwrap_or_default();
    // The revision and configuration the source asks for.
    let (want, want_spec) = match pinned {
        Some(n) => (
            n,
            registered
                .iter()
                .find(|r| r.number == n)
                .map(|r| r.spec.clone())
                .ok_or_else(|| format!("revision {family}:{n} is not registered"))?,
        ),
        None => {
            let spec = desired
                .task_definitions
                .get(family)
                .ok_or_else(|| format!("task definition family `{family}` is not in the source"))?;
            let (n, _) = crate::plan::resolve_revision(&registered, &model::digest(spec));
            (n, spec.clone())
        }
    };
    let want_hash = model::task_config_hash(family, &want_spec, &desired.secret_fingerprints);
    let history = stored.deployments.entry(key.to_string()).or_default();
    let to = match to {
        Some(n) => n,
        None => history
            .last_completed(&running.config_hash)
            .map(|d| d.revision)
            .ok_or_else(|| {
                format!("`{key}` has no earlier COMPLETED deployment to roll back to; name a revision with --to")
            })?,
    };
    if !registered.iter().any(|r| r.number == to) {
        return Err(format!(
            "revision {family}:{to} is not registered; registered: {}",
            registered
                .iter()
                .map(|r| r.number.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if to == want {
        return Err(format!(
            "the source already asks for revision {family}:{to}; apply it instead"
        ));
    }
    history.hold(&want_hash, want, to, format!("{reason}, to revision {to}"));
    Ok(to)
}
