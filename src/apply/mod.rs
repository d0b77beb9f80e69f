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

mod rollback;
mod rollout;
mod service;
mod settle;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};

use crate::manifest::Kind;
use crate::model::{self, DesiredState, Revision};
use crate::plan::{Action, Plan, ResourceChange};
use crate::runtime::{Runtime, RuntimeError};
use crate::secrets::Resolver;
use crate::store::Stored;
use service::service;

pub use rollback::request_rollback;
pub use settle::complete_settled;
pub(crate) use settle::{has_checks, healthy};

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
    /// A deployment's circuit breaker tripped (its rollout failed).
    BreakerTripped {
        service: String,
    },
    /// A failed or aborted deployment is being rolled back.
    RollbackStarted {
        service: String,
    },
    /// A deployment started, resumed, completed, failed or rolled back.
    Deployment {
        service: String,
        message: String,
    },
    /// A rollout step still waits for its tasks, said every
    /// [`WAITING_EVERY`] so a long wait shows it is alive and for how long.
    Waiting {
        service: String,
        /// Tasks not yet healthy, and relaunches not yet due.
        waiting: usize,
        elapsed: std::time::Duration,
    },
}

/// How often a waiting rollout step says so.
pub const WAITING_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

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
        crate::clock::unix_now()
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
    for c in changes.iter().filter(|c| {
        !matches!(c.kind, Kind::Service | Kind::ScheduledTask) && c.action != Action::Delete
    }) {
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
    // Scheduled tasks: records only, which no service depends on, so they
    // are kept whatever the services' outcome.
    for c in changes.iter().filter(|c| c.kind == Kind::ScheduledTask) {
        resource(c, desired, state, sink)?;
    }
    // Phase 3: what the deleted services used.
    if errors.is_empty() {
        for c in changes.iter().filter(|c| {
            !matches!(c.kind, Kind::Service | Kind::ScheduledTask) && c.action == Action::Delete
        }) {
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
        Kind::ScheduledTask => record(&mut state.scheduled_tasks, &desired.scheduled_tasks, c),
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
