//! Driving a rollout, a deployment's or a rollback's, step by step: each
//! step's old tasks stopped while the new ones so far are healthy, its new
//! tasks launched together and watched until healthy, and a failed one
//! halted, counted against its deployment and relaunched after the
//! throttling delay.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use super::service::Target;
use super::settle::healthy;
use super::{ApplyError, Event, Options, Sink};
use crate::deployment::{History, Verdict};
use crate::model::{Health, Task, TaskStatus};
use crate::plan::rollout::Step;
use crate::plan::TaskStop;
use crate::runtime::{start_failure, Launch, Runtime};
use crate::store::Stored;

/// What one service's change works with.
pub(super) struct Ctx<'a, R, S> {
    pub(super) shared: &'a Mutex<Stored>,
    pub(super) key: String,
    pub(super) address: String,
    pub(super) runtime: &'a R,
    pub(super) opts: &'a Options,
    pub(super) sink: &'a S,
    /// healthCheckGracePeriodSeconds.
    pub(super) grace: Duration,
    /// Tasks that failed and were halted: their remains are removed once
    /// the service is steady, kept (for their logs) when apply fails.
    pub(super) failed: Mutex<Vec<String>>,
    /// Delay before the first launches (restart throttling).
    pub(super) throttle: Duration,
}

/// A task a rollout started and watches.
pub(super) struct Watched {
    pub(super) id: String,
    pub(super) node: String,
    /// When it was launched (apply's clock).
    pub(super) since: Duration,
    pub(super) healthy: bool,
}

pub(super) fn n_unhealthy(watched: &[Watched]) -> usize {
    watched.iter().filter(|w| !w.healthy).count()
}

/// Why watching a step's tasks ended early.
pub(super) enum Halt {
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
    /// A task cannot start on its node until someone acts (its image
    /// cannot be had, a host port is held by something else), and no
    /// breaker would stop the retries: the rollout fails at once rather
    /// than at its timeout.
    CannotStart {
        reason: String,
        task: Option<String>,
    },
    Error(ApplyError),
}

impl<R: Runtime + Sync, S: Sink> Ctx<'_, R, S> {
    /// Update the service's deployment history and save.
    pub(super) fn history<T>(&self, f: impl FnOnce(&mut History) -> T) -> Result<T, ApplyError> {
        let mut st = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let out = f(st.deployments.entry(self.key.clone()).or_default());
        self.sink.save(&st).map_err(ApplyError::Store)?;
        Ok(out)
    }

    /// Whether deployment `dep` of this service has its circuit breaker
    /// enabled; None when there is no such deployment.
    fn breaker(&self, dep: Option<u32>) -> Option<bool> {
        let d = dep?;
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .deployments
            .get(&self.key)
            .and_then(|h| h.get(d))
            .map(|d| d.threshold.is_some())
    }

    pub(super) fn say(&self, message: String) {
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
    pub(super) async fn run_tasks(
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
        let mut said = begun;
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
                .map(|l| (l.identity.id.clone(), l.node.clone()))
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
            let by_id: std::collections::HashMap<&str, &Task> = obs
                .tasks
                .iter()
                .map(|t| (t.identity.id.as_str(), t))
                .collect();
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
                let _ = self.runtime.deregister(std::slice::from_ref(&id)).await;
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
                if self.breaker(dep) != Some(true) && start_failure::lasting(&why) {
                    return Err(Halt::CannotStart {
                        reason: why,
                        task: Some(id),
                    });
                }
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
            if ran_at.saturating_sub(said) >= super::WAITING_EVERY {
                said = ran_at;
                self.sink.event(Event::Waiting {
                    service: self.key.clone(),
                    waiting: relaunch.len() + watched.iter().filter(|w| !w.healthy).count(),
                    elapsed: ran_at.saturating_sub(begun),
                });
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
                    if self.breaker(dep) == Some(false) {
                        reason.push_str(
                            " (enable deploymentCircuitBreaker to stop such a rollout after a few failed tasks, and roll it back)",
                        );
                    }
                }
                // What did not become healthy in time does not run on; its
                // containers stay for their logs.
                let stuck: Vec<String> = watched
                    .iter()
                    .filter(|w| !w.healthy)
                    .map(|w| w.id.clone())
                    .collect();
                let _ = self.runtime.deregister(&stuck).await;
                for id in &stuck {
                    let _ = self.runtime.halt(id).await;
                }
                return Err(Halt::TimedOut { reason, task });
            }
            self.sink.sleep(self.opts.poll).await;
        }
    }
}

/// A rollout to carry out, forward or back: the configuration it
/// launches, the deployment its failed tasks count against, its steps (as
/// the planner computes them), the tasks it stops and the nodes it starts
/// tasks on, both in order.
pub(super) struct Rollout<'t> {
    pub(super) target: &'t Target,
    pub(super) dep: Option<u32>,
    pub(super) steps: Vec<Step>,
    /// Stops the steps do not cover are left here.
    pub(super) stops: VecDeque<TaskStop>,
    pub(super) slots: VecDeque<String>,
    /// Whether `reconcile deployment abort` ends it (a rollback is not
    /// aborted).
    pub(super) abortable: bool,
    /// Tasks of the target configuration watched until healthy: those
    /// already running when it starts (they count towards the floor only
    /// once healthy), then those it launches.
    pub(super) watched: Vec<Watched>,
    /// The nodes of the tasks it stopped and started, for a rollback.
    pub(super) vacated: Vec<String>,
}

impl<R: Runtime + Sync, S: Sink> Ctx<'_, R, S> {
    /// Carry out `r`'s steps in order: each stops its share of the old
    /// tasks, only while the tasks started so far are healthy, then
    /// launches its new ones and watches them until they are healthy too
    /// ([`Ctx::run_tasks`]). The min/max bounds of the steps hold at every
    /// task change.
    pub(super) async fn drive(&self, r: &mut Rollout<'_>) -> Result<(), Halt> {
        let total = r.steps.len();
        for (i, step) in r.steps.iter().enumerate() {
            if total > 1 {
                self.sink.event(Event::Step {
                    service: self.key.clone(),
                    step: i + 1,
                    steps: total,
                });
            }
            if r.abortable && self.sink.aborted(&self.key) {
                return Err(Halt::Aborted);
            }
            // Old tasks go only while the new ones so far are healthy.
            if n_unhealthy(&r.watched) > 0 {
                self.run_tasks(r.target, Vec::new(), r.dep, r.abortable, &mut r.watched)
                    .await?;
            }
            let n = (step.stop_old as usize).min(r.stops.len());
            let batch: Vec<TaskStop> = r.stops.drain(..n).collect();
            stop_all(self.runtime, &self.key, &batch, self.sink)
                .await
                .map_err(Halt::Error)?;
            r.vacated.extend(batch.iter().map(|s| s.node.clone()));
            let nodes: Vec<String> = (0..step.start_new)
                .map_while(|_| r.slots.pop_front())
                .collect();
            r.vacated.extend(nodes.iter().cloned());
            self.run_tasks(r.target, nodes, r.dep, r.abortable, &mut r.watched)
                .await?;
        }
        Ok(())
    }
}

pub(super) async fn stop_all<R: Runtime, S: Sink>(
    runtime: &R,
    key: &str,
    stops: &[TaskStop],
    sink: &S,
) -> Result<(), ApplyError> {
    // Out of traffic first, together: clients never see a task stop.
    let ids: Vec<String> = stops.iter().map(|s| s.task.clone()).collect();
    runtime.deregister(&ids).await?;
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
