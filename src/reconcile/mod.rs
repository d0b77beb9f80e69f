//! One reconcile pass, the same for `reconcile apply` and for every pass
//! of the controller: observe -> plan -> guards -> apply -> record.
//!
//! A pass returns an [`Outcome`] and never loops, retries or sleeps between
//! passes: its driver (a CLI command, the controller loop) decides when the
//! next one runs. The modes differ only by what they hand in: the
//! [`Runtime`] (the local Docker engine as the one node, or the fleet of
//! agents), the [`Store`] (a JSON file, the controller's database) and the
//! [`Driver`] (a terminal prompt and progress lines, or the controller's
//! log and events).

pub mod claims;
pub mod local;
pub mod saved;
pub mod traffic;

use crate::apply::{self, ApplyError};
use crate::model::{DesiredState, ObservedState};
use crate::plan::{self, Plan};
use crate::runtime::Runtime;
use crate::secrets::Resolver;
use crate::store::Stored;

/// Where the state that outlives a pass is kept: registered revisions, the
/// resources as last applied, deployments. Tasks are never stored: they are
/// observed.
pub trait Store: Sync {
    fn load(&self) -> Result<Stored, String>;
    fn save(&self, stored: &Stored) -> Result<(), String>;
}

/// What a pass needs from the mode that runs it, besides the apply's side
/// effects ([`apply::Sink`]: events, saves, time, task ids, aborts).
pub trait Driver: apply::Sink {
    /// The plan is about to be applied: show it, log it or ask. `false`
    /// ends the pass with nothing changed.
    fn approve(&self, plan: &Plan) -> bool;
}

/// A source read and validated: its desired state, and the secrets it
/// references that could not be read (they refuse the plan).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    pub state: DesiredState,
    pub secret_errors: Vec<String>,
    /// Notes for the plan (counts auto scaling manages).
    pub notes: Vec<String>,
}

impl Desired {
    /// The desired state of a valid source, its secrets fingerprinted
    /// (values are read here and never kept).
    pub fn from_valid(v: &crate::validate::Validation, resolver: &Resolver) -> Desired {
        let mut state = DesiredState::from_manifests(v.entries.iter().map(|e| &e.manifest));
        let errors = state.fingerprint_secrets(resolver);
        Desired {
            state,
            secret_errors: errors.into_iter().map(|e| e.to_string()).collect(),
            notes: Vec::new(),
        }
    }
}

/// How a pass plans and applies.
#[derive(Debug, Clone)]
pub struct Options {
    pub plan: plan::Options,
    pub apply: apply::Options,
    /// Plan, but apply nothing (`reconcile suspend`).
    pub suspended: bool,
}

/// A change made to the stored state before planning (a requested
/// rollback); it is kept only if the pass goes on to save.
pub type Prepare = Box<dyn FnOnce(&mut Stored, &DesiredState) -> Result<(), String> + Send>;

/// How a pass ended. Every outcome but `Applied` and `Failed` changed
/// nothing that runs.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing to change. Deployments an interrupted apply left open whose
    /// tasks have settled were completed: (service, message).
    Unchanged {
        plan: Plan,
        settled: Vec<(String, String)>,
    },
    /// The plan has errors: a task that cannot be placed, an unreadable
    /// secret, a mass deletion nobody approved.
    Refused { plan: Plan },
    /// A saved plan whose view of what runs is out of date.
    Stale { moved: Vec<String> },
    /// Suspended: the plan's changes wait for a resume.
    Suspended { plan: Plan },
    /// The driver did not approve the plan.
    Declined { plan: Plan },
    /// Applied in full.
    Applied { plan: Plan },
    /// Applied in part; what was done is recorded.
    Failed { plan: Plan, error: ApplyError },
}

impl Outcome {
    /// The plan the pass made (a stale saved plan has none).
    pub fn plan(&self) -> Option<&Plan> {
        match self {
            Outcome::Unchanged { plan, .. }
            | Outcome::Refused { plan }
            | Outcome::Suspended { plan }
            | Outcome::Declined { plan }
            | Outcome::Applied { plan }
            | Outcome::Failed { plan, .. } => Some(plan),
            Outcome::Stale { .. } => None,
        }
    }
}

/// The parts a pass runs over.
pub struct Reconciler<'a, R, S> {
    pub runtime: &'a R,
    pub store: &'a S,
    pub resolver: &'a Resolver,
}

impl<R: Runtime + Sync, S: Store> Reconciler<'_, R, S> {
    /// What runs (the runtime's tasks and nodes) with what was applied (the
    /// store's resources and deployments).
    pub async fn observed(&self) -> Result<ObservedState, String> {
        self.observe(self.store.load()?).await
    }

    async fn observe(&self, stored: Stored) -> Result<ObservedState, String> {
        let obs = self.runtime.observe().await.map_err(|e| e.message)?;
        let mut o = ObservedState {
            tasks: obs.tasks,
            nodes: obs.nodes,
            draining: obs.draining,
            ..ObservedState::default()
        };
        stored.into_observed(&mut o);
        Ok(o)
    }

    /// The plan a pass would apply now; changes nothing.
    pub async fn plan(&self, desired: &Desired, opts: &plan::Options) -> Result<Plan, String> {
        let observed = self.observed().await?;
        let mut p = plan::plan(&desired.state, &observed, opts);
        p.errors.extend(desired.secret_errors.iter().cloned());
        p.notes.extend(desired.notes.iter().cloned());
        self.preflight(&mut p, desired).await;
        Ok(p)
    }

    /// Add what the runtime can tell before the plan's tasks start.
    async fn preflight(&self, p: &mut Plan, desired: &Desired) {
        let starts = crate::runtime::Preflight::of(p, &desired.state);
        if !starts.is_empty() {
            p.warnings.extend(self.runtime.preflight(&starts).await);
        }
    }

    /// One pass. With `saved`, exactly that plan (made earlier from
    /// `desired` with `record_observed`) is applied, and only if what it
    /// saw is still what runs.
    pub async fn pass<D: Driver>(
        &self,
        desired: &Desired,
        opts: &Options,
        saved: Option<&Plan>,
        prepare: Option<Prepare>,
        driver: &D,
    ) -> Result<Outcome, String> {
        let mut stored = self.store.load()?;
        if let Some(f) = prepare {
            f(&mut stored, &desired.state)?;
        }
        let observed = self.observe(stored.clone()).await?;
        let mut fresh = plan::plan(&desired.state, &observed, &opts.plan);
        let plan = match saved {
            Some(s) => {
                let moved = saved::moved(s, &fresh);
                if !moved.is_empty() {
                    return Ok(Outcome::Stale { moved });
                }
                s.clone()
            }
            None => {
                fresh.errors.extend(desired.secret_errors.iter().cloned());
                fresh.notes.extend(desired.notes.iter().cloned());
                self.preflight(&mut fresh, desired).await;
                fresh
            }
        };
        if !plan.errors.is_empty() {
            return Ok(Outcome::Refused { plan });
        }
        if !plan.has_changes() {
            let settled = apply::complete_settled(
                &plan,
                &observed.tasks,
                &mut stored,
                opts.apply.settle,
                driver.now(),
            );
            if !settled.is_empty() {
                self.store.save(&stored)?;
            }
            return Ok(Outcome::Unchanged { plan, settled });
        }
        if opts.suspended {
            return Ok(Outcome::Suspended { plan });
        }
        if !driver.approve(&plan) {
            return Ok(Outcome::Declined { plan });
        }
        let result = apply::apply(
            &plan,
            &desired.state,
            &mut stored,
            self.runtime,
            self.resolver,
            &opts.apply,
            driver,
        )
        .await;
        // What the apply did is recorded whether or not it all succeeded.
        self.store.save(&stored)?;
        Ok(match result {
            Ok(()) => Outcome::Applied { plan },
            Err(error) => Outcome::Failed { plan, error },
        })
    }
}

/// The placement seed of a source: the same source places the same way
/// on every run (`identity` is what names the source, e.g. its path).
pub fn seed(identity: &str) -> u64 {
    let id = crate::model::digest(&identity);
    u64::from_str_radix(&id[..id.len().min(16)], 16).unwrap_or(0)
}
