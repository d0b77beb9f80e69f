//! What users ask of a running controller through the API: sync (with a
//! one-time mass-deletion approval), suspend and resume, abort and
//! rollback (queued while an apply runs), history and status.

use super::{Controller, ABORTED, ROLLED_BACK};
use crate::apply;
use crate::model::{DesiredState, ObservedState};
use crate::report::{self, ControllerStatus, StatusReport};

impl Controller {
    /// Approve once a plan deleting most services: the one of the commit
    /// fetched now (a newer commit needs its own approval), or of the next
    /// pass for a directory source. Then reconcile now.
    pub fn approve_mass_delete(&self) -> u64 {
        {
            let mut s = self.lock();
            let commit = s.fetched.as_ref().map(|c| c.id.clone());
            match &commit {
                Some(c) => tracing::info!(
                    commit = &c[..12.min(c.len())],
                    "mass deletion approved for commit {}",
                    &c[..12.min(c.len())]
                ),
                None => tracing::info!("mass deletion approved for the next pass"),
            }
            s.mass_delete_approved = Some(commit);
        }
        self.sync()
    }

    /// Ask for a reconcile now; returns the number of passes after which
    /// it has happened (a pass under way may have read the source before
    /// the request, so then it is the one after).
    pub fn sync(&self) -> u64 {
        let mut s = self.lock();
        let until = s.passes + if s.in_pass { 2 } else { 1 };
        s.fetch_now = true;
        drop(s);
        self.wake.notify_one();
        until
    }

    /// Suspend or resume applying. While suspended the source is still read,
    /// validated and planned, and the plan is reported; nothing is applied.
    pub fn set_suspended(&self, suspended: bool) -> Result<(), String> {
        {
            let mut s = self.lock();
            self.db
                .save_suspended(suspended)
                .map_err(|e| e.to_string())?;
            s.suspended = suspended;
        }
        self.event(if suspended {
            "suspended: changes are planned and reported, not applied".into()
        } else {
            "resumed".into()
        });
        self.sync();
        Ok(())
    }

    /// Carry out the rollbacks asked for while an apply ran.
    pub(super) fn take_pending(&self, desired: &DesiredState) {
        let mut s = self.lock();
        let pending = std::mem::take(&mut s.pending);
        if pending.is_empty() {
            return;
        }
        for (key, to, reason) in pending {
            match apply::request_rollback(&mut s.stored, desired, &key, to, &reason) {
                Ok(to) => {
                    drop(s);
                    self.event(format!("{key}: {reason}: rolling back to revision {to}"));
                    s = self.lock();
                }
                Err(e) => {
                    drop(s);
                    self.event(format!("{key}: {reason}, but: {e}"));
                    s = self.lock();
                }
            }
        }
        if let Err(e) = self.db.save_stored(&s.stored) {
            tracing::error!("saving the controller state: {e}");
        }
    }

    /// A service's deployments and events.
    pub fn history(&self, key: &str) -> Result<crate::wire::HistoryReply, String> {
        let s = self.lock();
        if !s.stored.services.contains_key(key) {
            return Err(format!("no service `{key}` has been applied"));
        }
        Ok(report::history(key, s.stored.deployments.get(key)))
    }

    /// `reconcile deployment abort`: the running rollout of `key` rolls
    /// back at once; a rollout left FAILED or interrupted is rolled back by
    /// the next pass.
    pub fn abort(&self, key: &str) -> Result<String, String> {
        let mut s = self.lock();
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
        if s.applying {
            // A rollout in progress is rolled back by the apply running it;
            // a FAILED one after that apply, as a request for the next pass.
            if primary.rollout == crate::deployment::Rollout::InProgress {
                s.aborts.insert(key.to_string());
            } else {
                s.pending.push((key.to_string(), None, ABORTED.to_string()));
            }
            drop(s);
            self.wake.notify_one();
            return Ok(format!(
                "abort requested: {key} rolls back to its last COMPLETED deployment"
            ));
        }
        let desired = s
            .desired
            .clone()
            .ok_or_else(|| "the source has not been read yet".to_string())?;
        let to = apply::request_rollback(&mut s.stored, &desired, key, None, ABORTED)?;
        self.db.save_stored(&s.stored).map_err(|e| e.to_string())?;
        drop(s);
        self.wake.notify_one();
        Ok(format!("aborted: {key} rolls back to revision {to}"))
    }

    /// `reconcile rollback`: hold the source's configuration of `key` and
    /// deploy revision `to` (default: the last COMPLETED one before).
    pub fn rollback(&self, key: &str, to: Option<u32>) -> Result<String, String> {
        let mut s = self.lock();
        if s.applying {
            // The running apply owns the stored state: the request waits
            // for the next pass.
            s.pending
                .push((key.to_string(), to, ROLLED_BACK.to_string()));
            drop(s);
            self.wake.notify_one();
            return Ok(format!(
                "rollback queued: {key} rolls back when the running reconcile ends"
            ));
        }
        let desired = s
            .desired
            .clone()
            .ok_or_else(|| "the source has not been read yet".to_string())?;
        let to = apply::request_rollback(&mut s.stored, &desired, key, to, ROLLED_BACK)?;
        self.db.save_stored(&s.stored).map_err(|e| e.to_string())?;
        drop(s);
        self.wake.notify_one();
        Ok(format!(
            "rollback requested: {key} rolls back to revision {to} on the next pass"
        ))
    }

    /// The status document, as `reconcile status` shows it in both modes.
    pub fn status(&self) -> StatusReport {
        let nodes = self.nodes();
        let tasks = self.observation().tasks;
        let s = self.lock();
        let mut observed = ObservedState {
            tasks,
            ..ObservedState::default()
        };
        s.stored.clone().into_observed(&mut observed);
        StatusReport {
            source: self.config.source.display(),
            services: report::services(&observed, &s.commits),
            nodes,
            controller: Some(ControllerStatus {
                fetched_commit: s.fetched.as_ref().map(|c| c.id.clone()),
                applied_commit: s.applied.as_ref().map(|c| c.id.clone()),
                suspended: s.suspended,
                commits: s.commits.clone(),
                last_error: s.last_error.clone(),
                passes: s.passes,
                events: s
                    .events
                    .iter()
                    .rev()
                    .take(50)
                    .map(|(_, e)| e.clone())
                    .collect(),
            }),
        }
    }
}
