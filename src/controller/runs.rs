//! Tasks started outside any service, through the controller: `run-task`
//! places them on the fleet's nodes as the planner places a service's and
//! assigns them; their records follow them to their end and are kept an
//! hour after it ([`crate::runs`]); `stop-task` asks their node to stop
//! them and keep their containers for the exit codes and logs.
//!
//! A run's tasks stay assigned until their records expire: the agent
//! keeps a stopped task's containers while it is assigned, and never
//! starts a task it has reported (so an exited task is never restarted).

use std::sync::Arc;

use super::fleet::{node_secrets, resolve_secrets};
use super::store::AssignmentRecord;
use super::{guard, Controller};
use crate::manifest::scheduled_task::WhilePreviousRuns;
use crate::model::{DesiredState, ObservedState};
use crate::runs::scheduled::{
    due, RunOutcome, RunTask, ScheduleState, ScheduledRun, ScheduledView,
};
use crate::runs::{self, Filter, RunRecord, RunReply, RunRequest};
use crate::wire::Assignment;

/// Ids of the tasks this controller starts; a counter per process.
static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Controller {
    /// Start the tasks of `req` where the scheduler places them. A request
    /// that cannot run at all is an error; tasks that fit nowhere are the
    /// reply's failures.
    pub fn run_task(self: &Arc<Self>, req: &RunRequest) -> Result<RunReply, String> {
        let (desired, mut observed) = {
            let a = self.applied();
            let desired = DesiredState {
                clusters: a.stored.clusters.clone(),
                capacity_providers: a.stored.capacity_providers.clone(),
                ..DesiredState::default()
            };
            let mut observed = ObservedState::default();
            a.stored.clone().into_observed(&mut observed);
            (desired, observed)
        };
        let obs = self.observation();
        observed.tasks = obs.tasks;
        observed.nodes = obs.nodes;
        observed.draining = obs.draining;
        let seed = crate::reconcile::seed(&format!("{}/{}", req.cluster, req.task_definition))
            ^ IDS.load(std::sync::atomic::Ordering::Relaxed);
        let placed = runs::place(req, &desired, &observed, seed, || {
            crate::model::new_task_id(&IDS)
        })?;
        let now = crate::clock::unix_now();
        let mut reply = RunReply {
            tasks: Vec::new(),
            failures: placed.failures,
        };
        for s in placed.starts {
            let record = runs::record_of(&s, now);
            let assignment = AssignmentRecord {
                node: s.node.clone(),
                task: Assignment {
                    identity: s.identity,
                    secrets: resolve_secrets(&self.resolver, &s.spec),
                    node_secrets: node_secrets(&s.spec),
                    spec: s.spec,
                    reported: false,
                    stop: false,
                },
            };
            // The record first: a task is never assigned without one.
            self.db
                .put_runs(&[&record], &[])
                .map_err(|e| e.to_string())?;
            guard(&self.runs).insert(record.id.clone(), record.clone());
            let fleet = super::Fleet {
                controller: self.clone(),
            };
            if let Err(e) = fleet.assign(assignment) {
                self.forget_runs(std::slice::from_ref(&record.id));
                reply.failures.push(e.message);
                continue;
            }
            tracing::info!(task = %record.id, "run-task: task {} ({}:{}) assigned to node `{}`",
                record.id, record.family, record.revision, record.node);
            reply.tasks.push(record);
        }
        if !reply.tasks.is_empty() {
            self.event(format!(
                "run-task: started {} task(s) of {} in cluster `{}`{}",
                reply.tasks.len(),
                req.task_definition,
                req.cluster,
                req.started_by
                    .as_ref()
                    .map(|b| format!(" (started by {b})"))
                    .unwrap_or_default()
            ));
        }
        Ok(reply)
    }

    /// Ask for a task to stop, with a reason: its record says so at once,
    /// and its node stops it and keeps its containers.
    pub fn stop_task(&self, id: &str, reason: &str) -> Result<RunRecord, (bool, String)> {
        let record = {
            let mut runs = guard(&self.runs);
            let found = runs::find(&runs, id).map_err(|e| (true, e))?.id.clone();
            let r = runs.get_mut(&found).expect("found above");
            if r.is_stopped() {
                return Ok(r.clone());
            }
            runs::stop_requested(r, reason, crate::clock::unix_now());
            r.clone()
        };
        self.db
            .put_runs(&[&record], &[])
            .map_err(|e| (false, e.to_string()))?;
        {
            let mut s = self.members();
            if let Some(a) = s.assignments.get_mut(&record.id) {
                a.task.stop = true;
                let a = a.clone();
                self.db
                    .assign(&[&a], &[])
                    .map_err(|e| (false, e.to_string()))?;
            }
        }
        self.assignments_changed();
        self.event(format!(
            "stop-task: task {} stopping: {}",
            crate::plan::short(&record.id),
            record.stopped_reason.as_deref().unwrap_or_default()
        ));
        Ok(record)
    }

    /// Run records `filter` keeps, newest first.
    pub fn tasks(&self, filter: &Filter) -> Vec<RunRecord> {
        let mut out: Vec<RunRecord> = guard(&self.runs)
            .values()
            .filter(|r| filter.keeps(r))
            .cloned()
            .collect();
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        out
    }

    /// One run record, by id or unique prefix.
    pub fn task(&self, id: &str) -> Result<RunRecord, String> {
        runs::find(&guard(&self.runs), id).cloned()
    }

    /// Bring the records up to date with what the nodes report; forget
    /// those past their retention and unassign their tasks (their nodes
    /// remove the containers).
    pub(super) fn refresh_runs(self: &Arc<Self>) {
        // Every second: the fleet is observed only when there is a record
        // to bring up to date.
        if guard(&self.runs).is_empty() {
            return;
        }
        let tasks = self.observation().tasks;
        let (changed, expired, stopped_now) = {
            let mut runs = guard(&self.runs);
            if runs.is_empty() {
                return;
            }
            let running: Vec<String> = runs
                .values()
                .filter(|r| !r.is_stopped())
                .map(|r| r.id.clone())
                .collect();
            let seen = runs::refresh(&mut runs, &tasks, crate::clock::unix_now());
            let stopped_now: Vec<RunRecord> = running
                .iter()
                .filter_map(|id| runs.get(id))
                .filter(|r| r.is_stopped())
                .cloned()
                .collect();
            let changed: Vec<RunRecord> = seen
                .changed
                .iter()
                .filter(|id| !seen.expired.contains(id))
                .filter_map(|id| runs.get(id).cloned())
                .collect();
            (changed, seen.expired, stopped_now)
        };
        if !changed.is_empty() {
            let refs: Vec<&RunRecord> = changed.iter().collect();
            if let Err(e) = self.db.put_runs(&refs, &[]) {
                tracing::warn!("cannot save run records: {e}");
            }
        }
        for r in stopped_now {
            self.event(format!(
                "task {} ({}:{}) stopped{}: {}",
                crate::plan::short(&r.id),
                r.family,
                r.revision,
                r.exit_code()
                    .map(|c| format!(" with exit code {c}"))
                    .unwrap_or_default(),
                r.stopped_reason.as_deref().unwrap_or_default()
            ));
        }
        if !expired.is_empty() {
            self.forget_runs(&expired);
        }
    }

    /// Forget run records and unassign their tasks.
    fn forget_runs(self: &Arc<Self>, ids: &[String]) {
        let removed: Vec<&str> = ids.iter().map(String::as_str).collect();
        if let Err(e) = self.db.put_runs(&[], &removed) {
            tracing::warn!("cannot forget run records: {e}");
            return;
        }
        {
            let mut runs = guard(&self.runs);
            for id in ids {
                runs.remove(id);
            }
        }
        let fleet = super::Fleet {
            controller: self.clone(),
        };
        for id in ids {
            if let Err(e) = fleet.unassign(id) {
                tracing::warn!(task = %id, "cannot unassign task {id}: {}", e.message);
            }
        }
    }
}

impl Controller {
    /// Start the runs of the applied scheduled tasks that are due, and
    /// keep their runs' task outcomes current. A suspended or torn-down
    /// controller starts none (their fire times pass).
    pub(super) fn fire_schedules(self: &Arc<Self>) {
        let specs = self.applied().stored.scheduled_tasks.clone();
        let quiet = {
            let r = self.requests();
            r.suspended || r.torn_down
        };
        let now = crate::clock::unix_now();
        let gone: Vec<String> = guard(&self.schedules)
            .keys()
            .filter(|k| !specs.contains_key(*k))
            .cloned()
            .collect();
        for name in gone {
            guard(&self.schedules).remove(&name);
            if let Err(e) = self.db.delete_schedule(&name) {
                tracing::warn!("cannot forget the schedule of `{name}`: {e}");
            }
        }
        for (name, spec) in &specs {
            let before = guard(&self.schedules).get(name).cloned();
            let mut state = before.clone();
            let fire = due(spec, &mut state, now);
            let Some(mut st) = state else { continue };
            {
                let runs = guard(&self.runs);
                st.update_tasks(|id| runs.get(id).map(RunTask::of));
            }
            let Some(fire) = fire.filter(|_| !quiet) else {
                if Some(&st) != before.as_ref() {
                    self.save_schedule(name, st);
                }
                continue;
            };
            let running = {
                let runs = guard(&self.runs);
                st.still_running(|id| runs.get(id).is_none_or(RunRecord::is_stopped))
            };
            let mut run = ScheduledRun {
                scheduled_at: fire.scheduled_at,
                fired_at: now,
                outcome: RunOutcome::Started,
                message: String::new(),
                missed: fire.missed,
                tasks: Vec::new(),
            };
            if !running.is_empty() && spec.while_previous_runs == WhilePreviousRuns::Skip {
                run.outcome = RunOutcome::Skipped;
                run.message = format!(
                    "the previous run's {} task(s) still run (whilePreviousRuns: SKIP)",
                    running.len()
                );
            } else {
                // Saved before the tasks start: a controller that dies in
                // between never starts this run again.
                self.save_schedule(name, st.clone());
                let req = RunRequest {
                    cluster: spec.cluster.clone(),
                    task_definition: spec.task_definition.clone(),
                    count: spec.count,
                    placement_constraints: spec.placement_constraints.clone(),
                    placement_strategy: spec.placement_strategy.clone(),
                    capacity_provider_strategy: spec.capacity_provider_strategy.clone(),
                    overrides: spec.overrides.clone().unwrap_or_default(),
                    started_by: Some(spec.effective_started_by(name)),
                };
                match self.run_task(&req) {
                    Ok(reply) => {
                        run.tasks = reply.tasks.iter().map(RunTask::of).collect();
                        run.message = reply.failures.join("; ");
                        if run.tasks.is_empty() {
                            run.outcome = RunOutcome::Failed;
                        }
                    }
                    Err(e) => {
                        run.outcome = RunOutcome::Failed;
                        run.message = e;
                    }
                }
            }
            let missed = if run.missed > 0 {
                format!(
                    " ({} earlier fire time(s) missed while the controller was down)",
                    run.missed
                )
            } else {
                String::new()
            };
            self.event(format!(
                "scheduled task `{name}`: run of {} {}{missed}{}",
                crate::clock::rfc3339(run.scheduled_at),
                match run.outcome {
                    RunOutcome::Started => format!("started {} task(s)", run.tasks.len()),
                    RunOutcome::Skipped => "skipped".to_string(),
                    RunOutcome::Failed => "failed".to_string(),
                },
                if run.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", run.message)
                }
            ));
            st.push(run);
            self.save_schedule(name, st);
        }
    }

    fn save_schedule(&self, name: &str, st: ScheduleState) {
        if let Err(e) = self.db.put_schedule(name, &st) {
            tracing::warn!("cannot save the schedule of `{name}`: {e}");
        }
        guard(&self.schedules).insert(name.to_string(), st);
    }

    /// A scheduled task as applied, its next fire time and its runs,
    /// newest first.
    pub fn scheduled_task(&self, name: &str) -> Result<ScheduledView, String> {
        let spec = self
            .applied()
            .stored
            .scheduled_tasks
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no scheduled task `{name}` is applied"))?;
        let state = guard(&self.schedules).get(name).cloned();
        Ok(ScheduledView::of(
            name,
            &spec,
            state.as_ref(),
            crate::clock::unix_now(),
        ))
    }

    /// Every applied scheduled task, for status.
    pub fn scheduled_tasks(&self) -> Vec<ScheduledView> {
        let specs = self.applied().stored.scheduled_tasks.clone();
        let states = guard(&self.schedules).clone();
        let now = crate::clock::unix_now();
        specs
            .iter()
            .map(|(name, spec)| {
                let mut v = ScheduledView::of(name, spec, states.get(name), now);
                v.runs.truncate(1);
                v
            })
            .collect()
    }
}
