//! Planning one service, in phases over a [`ServiceCtx`] (the service's
//! inputs): the revision and configuration its tasks should run (holds
//! included), how its spec changed, its existing tasks counted and
//! classified, which of them stop and how many start, where the new ones
//! go, the rollout that gets there, and the change that says all of it.
//!
//! The phases live by concern: `target` (phases 1-2: target revision,
//! holds, field changes), `count` (phases 3-5: tasks classified, reasons,
//! scaling), `place` (phase 6: task changes and placement) and
//! `deployment` (phase 7: rollout steps). This file holds the inputs, the
//! values passed between phases, the order of the phases and the
//! assembled change (phase 8).

use std::cell::OnceCell;
use std::collections::BTreeMap;

use super::{change, split_key, Action, Inputs, ResourceChange, TaskChanges, TaskStop};
use crate::manifest::service::ServiceSpec;
use crate::manifest::{Kind, TaskDefinitionSpec};
use crate::model::{DesiredService, ObservedService, Task};
use crate::scheduler;

mod count;
mod deployment;
mod place;
mod target;

use place::PlacementInputs;

/// A service that is no longer in the source, or tasks of a service that
/// never was (orphans): every task stops.
pub(super) fn deleted(
    key: &str,
    observed_svc: Option<&ObservedService>,
    tasks: &[&Task],
) -> ResourceChange {
    let (cluster, name) = split_key(key);
    let mut c = change(Kind::Service, name, Some(cluster));
    c.action = Action::Delete;
    c.reasons.push(if observed_svc.is_some() {
        "no longer in the source".into()
    } else {
        "tasks of a service that is not in the source".into()
    });
    let (live, stopped): (Vec<&Task>, Vec<&Task>) = tasks.iter().partition(|t| t.is_live());
    c.tasks = Some(TaskChanges {
        stop: live.iter().map(|t| stop(t, "service deleted")).collect(),
        cleanup: stopped.iter().map(|t| t.identity.id.clone()).collect(),
        running_after: 0,
        ..TaskChanges::default()
    });
    c
}

/// A service of the source being planned: what every phase reads.
pub(super) struct ServiceCtx<'a> {
    inputs: &'a Inputs<'a>,
    /// `cluster/name`.
    key: &'a str,
    cluster: &'a str,
    name: &'a str,
    desired: &'a DesiredService,
    spec: &'a ServiceSpec,
    /// The service as last applied, if it was.
    observed: Option<&'a ObservedService>,
    live: Vec<&'a Task>,
    /// Tasks that stopped; their remains are cleaned up.
    stopped: Vec<&'a Task>,
}

/// The revision and configuration the service's tasks should run.
struct Target<'a> {
    family: &'a str,
    revision: u32,
    td: &'a TaskDefinitionSpec,
    fingerprints: BTreeMap<String, String>,
    config_hash: String,
    /// Why a hold put another revision in place of the desired one.
    held: Option<String>,
    /// What placing the tasks needs, built only when something is placed
    /// (a converged service skips it).
    placement: OnceCell<PlacementInputs>,
}

/// The service's tasks counted and classified against its target.
struct Classified<'a> {
    /// Tasks the service should run.
    desired_count: u32,
    /// The scheduling strategy changed: the service is recreated.
    replace: bool,
    /// The tasks' configuration changes (or the service is new or
    /// recreated).
    new_deployment: bool,
    /// Tasks of an old configuration, or on a draining node: replaced.
    old: Vec<&'a Task>,
    /// How many of `old` are on draining nodes.
    draining: usize,
    /// Tasks of the target configuration that fail their health checks
    /// after the grace period: replaced.
    unhealthy: Vec<&'a Task>,
    /// The other tasks of the target configuration.
    keep: Vec<&'a Task>,
}

/// Which tasks stop and how many start.
struct Scaling<'a> {
    stop: Vec<(&'a Task, String)>,
    start: u32,
    /// Missing tasks were only reported (self-heal is off): nothing is
    /// started or cleaned up for them.
    drift_only: bool,
}

impl<'a> ServiceCtx<'a> {
    pub(super) fn new(
        inputs: &'a Inputs<'a>,
        key: &'a str,
        desired: &'a DesiredService,
        observed: Option<&'a ObservedService>,
        tasks: &[&'a Task],
    ) -> Self {
        let (cluster, name) = split_key(key);
        let (live, stopped) = tasks.iter().partition(|t| t.is_live());
        ServiceCtx {
            inputs,
            key,
            cluster,
            name,
            desired,
            spec: &desired.spec,
            observed,
            live,
            stopped,
        }
    }

    /// Plan the service: its phases in order. Placements are recorded on
    /// `nodes`, so later services see them; conditions that forbid
    /// applying the plan go to `errors`.
    pub(super) fn plan(
        &self,
        nodes: &mut [scheduler::Node],
        errors: &mut Vec<String>,
    ) -> ResourceChange {
        let mut c = change(Kind::Service, self.name, Some(self.cluster));
        let target = match self.target() {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("{}: {e}", c.address));
                return c;
            }
        };
        c.fields = self.field_changes(&target);
        let k = self.classify(&target, nodes);
        let mut reasons = self.deployment_reasons(&target, &k);
        let scaling = self.scale(&target, &k, nodes, &mut reasons);
        let mut tc = self.task_changes(&target, &k, &scaling, nodes);
        if k.new_deployment || !k.old.is_empty() {
            let (deployment, problem) = self.rollout(&target, &k, &mut tc);
            errors.extend(problem.map(|e| format!("{}: {e}", c.address)));
            tc.deployment = Some(deployment);
        }
        self.assemble(c, &k, reasons, tc)
    }

    fn revision_spec(&self, family: &str, number: u32) -> Option<&'a TaskDefinitionSpec> {
        self.inputs.revision_spec(family, number)
    }

    fn on_draining(&self, t: &Task) -> bool {
        self.inputs.observed.draining.contains(&t.node)
    }

    /// Phase 8: the change: its action from what changed, its reasons and,
    /// unless nothing changes, its tasks.
    fn assemble(
        &self,
        mut c: ResourceChange,
        k: &Classified,
        mut reasons: Vec<String>,
        tc: TaskChanges,
    ) -> ResourceChange {
        let spec_changed = !c.fields.is_empty();
        let tasks_change = !tc.start.is_empty()
            || !tc.stop.is_empty()
            || !tc.cleanup.is_empty()
            || tc.placement_failure.is_some()
            || tc.deployment.is_some();
        c.action = match (self.observed, k.replace) {
            (None, _) => Action::Create,
            (Some(_), true) => Action::Replace,
            (Some(_), false) if spec_changed || tasks_change => Action::Update,
            _ => Action::NoOp,
        };
        if c.action == Action::Update && reasons.is_empty() {
            // Listeners and DNS names take their targets from the running
            // tasks, so changing them never replaces a task; say so rather
            // than "future placements".
            let traffic = |path: &str| {
                ["loadBalancers", "serviceRegistries"].iter().any(|f| {
                    path.strip_prefix(f)
                        .is_some_and(|r| r.is_empty() || r.starts_with(['[', '.']))
                })
            };
            reasons.push(if !spec_changed {
                "tasks differ from the desired state".into()
            } else if c.fields.iter().all(|f| traffic(&f.path)) {
                "listeners or DNS names changed; updated in place over the running tasks".into()
            } else {
                "spec changed; updated in place (affects future placements only)".into()
            });
        }
        c.reasons = reasons;
        if c.action != Action::NoOp {
            c.tasks = Some(tc);
        }
        c
    }
}

fn stop(t: &Task, reason: &str) -> TaskStop {
    TaskStop {
        task: t.identity.id.clone(),
        revision: t.identity.revision,
        node: t.node.clone(),
        reason: reason.to_string(),
    }
}
