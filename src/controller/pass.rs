//! A controller pass: the reconcile core ([`Reconciler::pass`]) over the
//! fleet and the controller's store, with the plan logged before it is
//! applied and apply events recorded as controller events; a newer valid
//! commit supersedes a rollout under way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Commit, Controller, Fleet, ABORTED};
use crate::apply;
use crate::model;
use crate::plan::{self, render};
use crate::reconcile::{self, Desired, Reconciler};
use crate::store::Stored;

/// The controller's [`reconcile::Store`]: the applied state in memory,
/// every save written through to the database.
pub(super) struct ControllerStore {
    controller: Arc<Controller>,
}

impl reconcile::Store for ControllerStore {
    fn load(&self) -> Result<Stored, String> {
        Ok(self.controller.applied().stored.clone())
    }

    fn save(&self, stored: &Stored) -> Result<(), String> {
        self.controller.applied().stored = stored.clone();
        // A service is saved before its tasks start: their target checks
        // must be known to their nodes by then.
        self.controller.traffic_services(stored);
        self.controller
            .db
            .save_stored(stored)
            .map_err(|e| e.to_string())
    }
}

/// The controller's [`reconcile::Driver`]: every plan it applies is
/// logged first, its apply events become controller events (logged in a
/// span of their service), and its saves go to the controller's store.
pub(super) struct ControllerDriver {
    controller: Arc<Controller>,
    /// When the apply started, and the ids of the tasks it starts.
    start: Instant,
    counter: std::sync::atomic::AtomicU64,
    /// The commit (or directory) being applied, for the log.
    what: String,
    /// The commit being applied, if the source is git.
    commit: Option<Commit>,
    loaded: Duration,
    began: Instant,
    /// The plan was allowed to delete most services: an approval given
    /// once is used up by this apply.
    approval_used: bool,
}

impl reconcile::Driver for ControllerDriver {
    fn approve(&self, p: &plan::Plan) -> bool {
        let planned = self.began.elapsed().saturating_sub(self.loaded);
        let text = render::text(
            p,
            render::Style {
                colour: false,
                detail: false,
            },
        );
        // Nothing is applied that was not logged first.
        tracing::info!(
            load_ms = self.loaded.as_millis() as u64,
            plan_ms = planned.as_millis() as u64,
            add = p.summary.add,
            change = p.summary.change,
            destroy = p.summary.destroy,
            "applying {} (read and validated in {} ms, planned in {} ms):\n{text}",
            self.what,
            self.loaded.as_millis(),
            planned.as_millis()
        );
        for c in p.changes() {
            tracing::info!(
                address = %c.address,
                action = ?c.action,
                reasons = %c.reasons.join("; "),
                "change {} {:?}",
                c.address,
                c.action
            );
        }
        // Each resource the plan changes is recorded as changed from this
        // commit before the apply starts: what changes, even in an apply
        // that fails or is superseded, came from it.
        if let Some(c) = &self.commit {
            self.controller.record_commit(p, c);
        }
        let mut s = self.controller.requests();
        if self.approval_used {
            s.mass_delete_approved = None;
        }
        // The apply owns the stored state until it ends: requests that
        // arrive meanwhile are queued.
        s.applying = true;
        true
    }
}

impl apply::Sink for ControllerDriver {
    fn event(&self, e: apply::Event) {
        use apply::Event::*;
        let (service, message) = match e {
            // Progress for a terminal; the log has the pass's span.
            Resource { .. } | Step { .. } | Waiting { .. } => return,
            BreakerTripped { service } => {
                self.controller.metrics.breaker_tripped(&service);
                return;
            }
            RollbackStarted { service } => {
                self.controller.metrics.rollback(&service);
                return;
            }
            Registered { family, revision } => (None, format!("registered {family}:{revision}")),
            Started {
                service,
                task,
                node,
                revision,
            } => {
                let m = format!(
                    "{service}: started task {} (revision {revision}) on {node}",
                    plan::short(&task)
                );
                (Some(service), m)
            }
            Stopped {
                service,
                task,
                reason,
            } => {
                let m = format!("{service}: stopped task {}: {reason}", plan::short(&task));
                (Some(service), m)
            }
            Healthy { service, running } => {
                let m = format!("{service} has reached a steady state: {running} task(s) running");
                (Some(service), m)
            }
            TaskFailed {
                service, reason, ..
            } => (Some(service.to_string()), format!("{service}: {reason}")),
            Deployment { service, message } => {
                (Some(service.to_string()), format!("{service}: {message}"))
            }
        };
        match service {
            Some(key) => self.controller.service_event(&key, message),
            None => self.controller.event(message),
        }
    }

    fn save(&self, state: &Stored) -> Result<(), String> {
        reconcile::Store::save(
            &ControllerStore {
                controller: self.controller.clone(),
            },
            state,
        )
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await
    }

    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn new_task_id(&self) -> String {
        model::new_task_id(&self.counter)
    }

    fn aborted(&self, key: &str) -> bool {
        self.controller.requests().aborts.remove(key)
    }
}

/// How a pass that could not run anything for want of nodes begins: the
/// loop logs it as information, not as a failure.
pub(super) const WAITING_FOR_NODES: &str = "waiting for nodes: ";

/// The tasks `plan` could not place, over all services.
fn unplaced(plan: &plan::Plan) -> u32 {
    plan.resource_changes
        .iter()
        .filter_map(|c| c.tasks.as_ref()?.placement_failure.as_ref())
        .map(|f| f.unplaced)
        .sum()
}

/// When every failure of an apply is tasks that could not be placed, in
/// services whose capacity providers all have managed scaling: those
/// providers, by name. Such tasks wait for nodes rather than fail.
fn waits_for_capacity(
    desired: &crate::model::DesiredState,
    error: &apply::ApplyError,
) -> Option<Vec<String>> {
    let mut providers = std::collections::BTreeSet::new();
    for f in error.each() {
        let apply::ApplyError::Failed {
            address, message, ..
        } = f
        else {
            return None;
        };
        if !message.contains("could not be placed") {
            return None;
        }
        let key = address.strip_prefix("Service/")?;
        let svc = desired.services.get(key)?;
        let strategy = plan::strategy_of(desired, &svc.key.cluster, &svc.spec);
        if strategy.is_empty() {
            return None;
        }
        for item in strategy {
            let p = desired.capacity_providers.get(&item.capacity_provider)?;
            if p.managed_scaling.status != crate::manifest::Toggle::Enabled {
                return None;
            }
            providers.insert(item.capacity_provider.clone());
        }
    }
    (!providers.is_empty()).then(|| providers.into_iter().collect())
}

impl Controller {
    /// The runtime, store and resolver a pass runs over.
    pub(super) fn reconciler<'a>(
        &'a self,
        fleet: &'a Fleet,
        store: &'a ControllerStore,
    ) -> Reconciler<'a, Fleet, ControllerStore> {
        Reconciler {
            runtime: fleet,
            store,
            resolver: &self.resolver,
        }
    }

    /// The plan the next reconcile would apply.
    pub async fn plan(self: &Arc<Self>) -> Result<plan::Plan, String> {
        let (desired, commit) = self.load(false)?;
        let (fleet, store) = self.parts();
        self.reconciler(&fleet, &store)
            .plan(&desired, &self.plan_options(commit.as_ref()))
            .await
    }

    pub(super) fn parts(self: &Arc<Self>) -> (Fleet, ControllerStore) {
        (
            Fleet {
                controller: self.clone(),
            },
            ControllerStore {
                controller: self.clone(),
            },
        )
    }

    pub(super) fn plan_options(&self, commit: Option<&Commit>) -> plan::Options {
        let (approved, torn_down) = {
            let r = self.requests();
            (r.mass_delete_approved.clone(), r.torn_down)
        };
        plan::Options {
            now: crate::clock::unix_now(),
            seed: reconcile::seed(&self.config.source.display()),
            // A teardown deletes everything on purpose.
            allow_mass_delete: self.config.allow_mass_delete
                || torn_down
                || approved.is_some_and(|a| a.as_deref() == commit.map(|c| c.id.as_str())),
            record_observed: false,
        }
    }

    /// One pass of the reconcile core ([`Reconciler::pass`]) over the
    /// fleet: returns whether it applied changes, or why it applied none.
    pub async fn reconcile_once(self: &Arc<Self>) -> Result<bool, String> {
        let began = Instant::now();
        let (outcome, result) = self.pass_once(began).await;
        self.metrics.pass(outcome, began.elapsed().as_secs_f64());
        result
    }

    /// One pass, and how it ended as a metric's outcome label.
    async fn pass_once(self: &Arc<Self>, began: Instant) -> (&'static str, Result<bool, String>) {
        self.following().fetch_error = None;
        let loaded = self
            .load(true)
            .map_err(|e| match self.following().fetch_error.take() {
                Some(f) => format!("{f}\n{e}"),
                None => e,
            });
        let (desired, commit) = match loaded {
            Ok(l) => l,
            Err(e) => return ("invalid_source", Err(e)),
        };
        if let Some(c) = &commit {
            tracing::Span::current().record("commit", c.short());
        }
        let at = commit
            .as_ref()
            .map(|c| format!("commit {}: ", c.short()))
            .unwrap_or_default();
        self.members().clusters = desired.state.clusters.keys().cloned().collect();
        self.applied().desired = Some(desired.state.clone());
        self.take_pending(&desired.state);
        let plan_options = self.plan_options(commit.as_ref());
        let opts = reconcile::Options {
            apply: apply::Options {
                timeout: self.config.step_timeout,
                settle: self.config.settle,
                ..apply::Options::default()
            },
            suspended: self.requests().suspended,
            plan: plan_options,
        };
        let (fleet, store) = self.parts();
        let driver = ControllerDriver {
            controller: self.clone(),
            start: Instant::now(),
            counter: std::sync::atomic::AtomicU64::new(0),
            what: commit
                .as_ref()
                .map(|c| format!("commit {} ({})", c.short(), c.summary))
                .unwrap_or_else(|| self.config.source.display()),
            commit: commit.clone(),
            loaded: began.elapsed(),
            began,
            approval_used: plan_options.allow_mass_delete,
        };
        let woken = std::sync::atomic::AtomicBool::new(false);
        let reconciler = self.reconciler(&fleet, &store);
        let outcome = tokio::select! {
            r = reconciler.pass(&desired, &opts, None, None, &driver) => Ok(r),
            by = self.superseded(&desired, &woken) => Err(by),
        };
        // A wake the watch for a newer source took (a node joining, a
        // sync) still gets its pass.
        if woken.load(std::sync::atomic::Ordering::Relaxed) {
            self.wake.notify_one();
        }
        self.after_apply();
        let outcome = match outcome {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return ("failed", Err(e)),
            // Superseded: the apply stopped at an await, like a killed
            // one; what it saved after its last step is the state.
            Err(by) => {
                self.event(format!(
                    "{at}superseded by {by} before its rollout finished; applying that now"
                ));
                self.wake.notify_one();
                return ("superseded", Ok(true));
            }
        };
        use reconcile::Outcome;
        let code = crate::metrics::controller::outcome_code(&outcome);
        if let Outcome::Applied { plan } = &outcome {
            self.metrics.applied(plan);
        }
        if let Some(plan) = outcome.plan() {
            self.applied().placement = plan
                .resource_changes
                .iter()
                .filter_map(|c| {
                    let f = c.tasks.as_ref()?.placement_failure.as_ref()?;
                    Some((
                        c.cluster.clone()?,
                        c.name.clone(),
                        crate::metrics::placement_reason(&f.reason),
                        f.unplaced,
                    ))
                })
                .collect();
            self.applied().unplaced = plan
                .resource_changes
                .iter()
                .filter_map(|c| {
                    let f = c.tasks.as_ref()?.placement_failure.as_ref()?;
                    Some((format!("{}/{}", c.cluster.as_deref()?, c.name), f.unplaced))
                })
                .collect();
        }
        // Worked out once: it decides the arm below and is reported in it.
        let capacity = match &outcome {
            Outcome::Failed { error, .. } => waits_for_capacity(&desired.state, error),
            _ => None,
        };
        let result = match outcome {
            Outcome::Unchanged { settled, .. } => {
                for (service, message) in settled {
                    self.service_event(&service, format!("{service}: {message}"));
                }
                let mut s = self.following();
                s.applied = commit;
                s.fetch_error.take().map_or(Ok(false), Err)
            }
            Outcome::Refused { plan } => {
                let mass = plan
                    .errors
                    .iter()
                    .any(|e| e.contains("--allow-mass-delete"));
                Err(format!(
                    "{at}the plan cannot be applied; nothing changed:\n  {}{}",
                    plan.errors.join("\n  "),
                    if mass {
                        "\n  (controller: `reconcile sync --allow-mass-delete` approves this plan \
                         once, or start it with --allow-mass-delete)"
                    } else {
                        ""
                    }
                ))
            }
            Outcome::Suspended { plan } => Err(format!(
                "{at}suspended: {} change(s) wait for `reconcile resume`",
                plan.changes().count()
            )),
            Outcome::Stale { .. } | Outcome::Declined { .. } => {
                Err(format!("{at}the plan was not applied"))
            }
            Outcome::Applied { plan } => {
                self.event(format!(
                    "{at}applied: {} to add, {} to change, {} to destroy ({} ms)",
                    plan.summary.add,
                    plan.summary.change,
                    plan.summary.destroy,
                    began.elapsed().as_millis()
                ));
                let mut s = self.following();
                s.applied = commit;
                s.fetch_error.take().map_or(Ok(true), Err)
            }
            // Before any agent has joined nothing can run: that is a wait,
            // not a failure to report.
            Outcome::Failed { plan, .. } if self.members().nodes.is_empty() => Err(format!(
                "{WAITING_FOR_NODES}no node has joined yet; {} task(s) are placed when one does",
                unplaced(&plan)
            )),
            // Tasks that wait for a provider's managed scaling to add
            // nodes wait, as in ECS (PROVISIONING): not a failure.
            Outcome::Failed { plan, .. } if capacity.is_some() => {
                let providers = capacity.unwrap_or_default();
                Err(format!(
                    "{WAITING_FOR_NODES}{} task(s) wait for capacity: managed scaling of {} \
                     adds nodes as the reservation rises (status: capacityProviders)",
                    unplaced(&plan),
                    providers.join(", ")
                ))
            }
            Outcome::Failed { error, .. } => Err(format!("{at}apply failed: {error}")),
        };
        (code, result)
    }

    /// After a pass that may have applied: an abort no rollout picked up
    /// (the apply had not reached or had already left that service)
    /// becomes a rollback request, unless the deployment completed
    /// meanwhile; requests wake the loop.
    pub(super) fn after_apply(&self) {
        let applied = self.applied();
        let mut r = self.requests();
        r.applying = false;
        let left: Vec<String> = std::mem::take(&mut r.aborts).into_iter().collect();
        for key in left {
            let open = applied
                .stored
                .deployments
                .get(&key)
                .and_then(|h| h.primary())
                .is_some_and(|d| d.rollout != crate::deployment::Rollout::Completed);
            if open {
                r.pending.push((key, None, ABORTED.to_string()));
            }
        }
        if !r.pending.is_empty() {
            self.wake.notify_one();
        }
    }

    /// Record the commit each resource of plan `p` is changed from (by
    /// address).
    pub(super) fn record_commit(&self, p: &plan::Plan, c: &Commit) {
        let mut s = self.applied();
        for ch in p.changes() {
            if ch.action == plan::Action::Delete {
                s.commits.remove(&ch.address);
            } else {
                s.commits.insert(ch.address.clone(), c.id.clone());
            }
        }
        if let Err(e) = self.db.save_commits(&s.commits) {
            tracing::error!("saving the controller state: {e}");
        }
    }

    /// Resolves, naming it, once the source holds a valid desired state
    /// other than `applying`: the next good commit supersedes a rollout
    /// still under way (tasks failing without a circuit breaker would hold
    /// the loop until the step timeout), as a new ECS deployment
    /// supersedes an in-progress one. Looked at whenever the loop is woken
    /// (webhook, sync, a directory change; noted in `woken`) and every
    /// interval. An invalid or unchanged source, one whose plan would be
    /// refused, or a suspended controller never interrupts.
    pub(super) async fn superseded(
        self: &Arc<Self>,
        applying: &Desired,
        woken: &std::sync::atomic::AtomicBool,
    ) -> String {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.interval) => {}
                _ = self.wake.notified() => woken.store(true, std::sync::atomic::Ordering::Relaxed),
            }
            // A fetch may take up to the git timeout: off the apply's task.
            let this = self.clone();
            let Ok(Ok((desired, commit))) =
                tokio::task::spawn_blocking(move || this.load(true)).await
            else {
                continue;
            };
            if !desired.secret_errors.is_empty()
                || desired.state == applying.state
                || self.requests().suspended
            {
                continue;
            }
            // Only a source the next pass would apply: one whose plan is
            // refused (a mass deletion not approved) must not stop a
            // rollout it cannot replace.
            let (fleet, store) = self.parts();
            let opts = self.plan_options(commit.as_ref());
            if self
                .reconciler(&fleet, &store)
                .plan(&desired, &opts)
                .await
                .is_ok_and(|p| p.errors.is_empty())
            {
                return commit
                    .map(|c| format!("commit {} ({})", c.short(), c.summary))
                    .unwrap_or_else(|| "a change of the source".into());
            }
        }
    }
}
