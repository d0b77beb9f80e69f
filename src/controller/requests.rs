//! What users ask of a running controller through the API: sync (with a
//! one-time mass-deletion approval), suspend and resume, abort and
//! rollback (queued while an apply runs), history and status.

use super::{guard, Applied, Controller, ABORTED, ROLLED_BACK};
use crate::apply;
use crate::model::{DesiredState, ObservedState};
use crate::report::{self, ControllerStatus, StatusReport};

impl Controller {
    /// Approve once a plan deleting most services: the one of the commit
    /// fetched now (a newer commit needs its own approval), or of the next
    /// pass for a directory source. Then reconcile now.
    pub fn approve_mass_delete(&self) -> u64 {
        {
            let commit = self.following().fetched.as_ref().map(|c| c.id.clone());
            match &commit {
                Some(c) => tracing::info!(
                    commit = &c[..12.min(c.len())],
                    "mass deletion approved for commit {}",
                    &c[..12.min(c.len())]
                ),
                None => tracing::info!("mass deletion approved for the next pass"),
            }
            self.requests().mass_delete_approved = Some(commit);
        }
        self.sync()
    }

    /// Ask for a reconcile now; returns the number of passes after which
    /// it has happened (a pass under way may have read the source before
    /// the request, so then it is the one after).
    pub fn sync(&self) -> u64 {
        let until = {
            let p = self.passes();
            p.passes + if p.in_pass { 2 } else { 1 }
        };
        self.following().fetch_now = true;
        self.wake.notify_one();
        until
    }

    /// Suspend or resume applying. While suspended the source is still read,
    /// validated and planned, and the plan is reported; nothing is applied.
    pub fn set_suspended(&self, suspended: bool) -> Result<(), String> {
        {
            let mut r = self.requests();
            self.db
                .save_suspended(suspended)
                .map_err(|e| e.to_string())?;
            r.suspended = suspended;
            // Resuming also ends a teardown: the source applies again.
            if !suspended && r.torn_down {
                self.db.save_torn_down(false).map_err(|e| e.to_string())?;
                r.torn_down = false;
            }
        }
        self.event(if suspended {
            "suspended: changes are planned and reported, not applied".into()
        } else {
            "resumed".into()
        });
        self.sync();
        Ok(())
    }

    /// Tear down everything the source applied (`destroy --controller`):
    /// from the next pass on, the desired state is empty, so every service
    /// stops and every resource goes; the source is not applied again
    /// until `resume`. A suspension ends, as the teardown is the one thing
    /// asked for. Returns the pass after which it has happened.
    pub fn tear_down(&self) -> Result<u64, String> {
        {
            let mut r = self.requests();
            self.db.save_torn_down(true).map_err(|e| e.to_string())?;
            self.db.save_suspended(false).map_err(|e| e.to_string())?;
            r.torn_down = true;
            r.suspended = false;
        }
        self.event(
            "torn down: everything the source applied is removed; nothing of it is applied \
             until `reconcile resume`"
                .into(),
        );
        Ok(self.sync())
    }

    /// Carry out the rollbacks asked for while an apply ran.
    pub(super) fn take_pending(&self, desired: &DesiredState) {
        let pending = std::mem::take(&mut self.requests().pending);
        if pending.is_empty() {
            return;
        }
        let mut s = self.applied();
        for (key, to, reason) in pending {
            // Events take their own lock, after this one.
            match apply::request_rollback(&mut s.stored, desired, &key, to, &reason) {
                Ok(to) => self.service_event(
                    &key,
                    format!("{key}: {reason}: rolling back to revision {to}"),
                ),
                Err(e) => self.service_event(&key, format!("{key}: {reason}, but: {e}")),
            }
        }
        if let Err(e) = self.db.save_stored(&s.stored) {
            tracing::error!("saving the controller state: {e}");
        }
    }

    /// A service's deployments and events.
    pub fn history(&self, key: &str) -> Result<crate::wire::HistoryReply, String> {
        let s = self.applied();
        if !s.stored.services.contains_key(key) {
            return Err(format!("no service `{key}` has been applied"));
        }
        let mut h = report::history(key, s.stored.deployments.get(key));
        if let Some(k) = guard(&self.scaling).get(key) {
            h.scaling = k.activities.clone();
        }
        Ok(h)
    }

    /// `reconcile deployment abort`: the running rollout of `key` rolls
    /// back at once; a rollout left FAILED or interrupted is rolled back by
    /// the next pass.
    pub fn abort(&self, key: &str) -> Result<String, String> {
        // Both held: whether an apply runs decides who changes the state.
        let mut s = self.applied();
        let mut r = self.requests();
        let primary = s
            .stored
            .deployments
            .get(key)
            .and_then(|h| h.primary())
            .cloned()
            .ok_or_else(|| format!("`{key}` has no deployment to abort"))?;
        if primary.rollout == crate::deployment::Rollout::Completed {
            return Err(format!(
                "no deployment of `{key}` is in progress (deployment {} completed); use `reconcile rollback` to return to an earlier revision",
                primary.id
            ));
        }
        if r.applying {
            // A rollout in progress is rolled back by the apply running it;
            // a FAILED one after that apply, as a request for the next pass.
            if primary.rollout == crate::deployment::Rollout::InProgress {
                r.aborts.insert(key.to_string());
            } else {
                r.pending.push((key.to_string(), None, ABORTED.to_string()));
            }
            drop((r, s));
            self.wake.notify_one();
            return Ok(format!(
                "abort requested: {key} rolls back to its last COMPLETED deployment"
            ));
        }
        let to = self.roll_back_now(&mut s, key, None, ABORTED)?;
        drop((r, s));
        self.wake.notify_one();
        Ok(format!("aborted: {key} rolls back to revision {to}"))
    }

    /// `reconcile rollback`: hold the source's configuration of `key` and
    /// deploy revision `to` (default: the last COMPLETED one before).
    pub fn rollback(&self, key: &str, to: Option<u32>) -> Result<String, String> {
        let mut s = self.applied();
        let mut r = self.requests();
        if r.applying {
            // The running apply owns the stored state: the request waits
            // for the next pass.
            r.pending
                .push((key.to_string(), to, ROLLED_BACK.to_string()));
            drop((r, s));
            self.wake.notify_one();
            return Ok(format!(
                "rollback queued: {key} rolls back when the running reconcile ends"
            ));
        }
        let to = self.roll_back_now(&mut s, key, to, ROLLED_BACK)?;
        drop((r, s));
        self.wake.notify_one();
        Ok(format!(
            "rollback requested: {key} rolls back to revision {to} on the next pass"
        ))
    }

    /// Record a rollback of `key` in the stored state and save it, while
    /// no apply runs (so none owns the stored state): the revision it
    /// returns to. The desired state is borrowed, not copied.
    fn roll_back_now(
        &self,
        s: &mut Applied,
        key: &str,
        to: Option<u32>,
        reason: &str,
    ) -> Result<u32, String> {
        let desired = s
            .desired
            .as_ref()
            .ok_or_else(|| "the source has not been read yet".to_string())?;
        let to = apply::request_rollback(&mut s.stored, desired, key, to, reason)?;
        self.db.save_stored(&s.stored).map_err(|e| e.to_string())?;
        Ok(to)
    }

    /// The status document, as `reconcile status` shows it in both modes.
    pub fn status(&self) -> StatusReport {
        // The pass count first: whatever is read after it is at least as
        // new as the passes it counts (`apply --controller` relies on it).
        let (passes, last_error) = {
            let p = self.passes();
            (p.passes, p.last_error.clone())
        };
        let (fetched_commit, applied_commit) = {
            let f = self.following();
            (
                f.fetched.as_ref().map(|c| c.id.clone()),
                f.applied.as_ref().map(|c| c.id.clone()),
            )
        };
        let (suspended, torn_down) = {
            let r = self.requests();
            (r.suspended, r.torn_down)
        };
        let nodes = self.nodes();
        let tasks = self.observation().tasks;
        let mut observed = ObservedState {
            tasks,
            ..ObservedState::default()
        };
        let (services, commits) = {
            let a = self.applied();
            a.stored.clone().into_observed(&mut observed);
            (report::services(&observed, &a.commits), a.commits.clone())
        };
        let mut services = services;
        let capacity = nodes
            .iter()
            .map(|n| (n.info.name.clone(), (n.info.cpu, n.info.memory)))
            .collect();
        report::fill_usage(&observed, &capacity, &mut services, &self.usage());
        {
            let scaling = guard(&self.scaling);
            for s in services.iter_mut() {
                if let (Some(a), Some(k)) = (s.auto_scaling.as_mut(), scaling.get(&s.service)) {
                    a.activities = k.activities.clone();
                }
            }
        }
        self.traffic_status(&observed, &mut services);
        let events = guard(&self.events).newest(50);
        StatusReport {
            source: self.config.source.display(),
            scheduled_tasks: self.scheduled_tasks(),
            standalone_tasks: self.tasks(&crate::runs::Filter::default()),
            services,
            nodes,
            controller: Some(ControllerStatus {
                fetched_commit,
                applied_commit,
                suspended,
                torn_down,
                commits,
                last_error,
                passes,
                events,
                capacity_providers: guard(&self.reservations).values().cloned().collect(),
            }),
        }
    }
}
