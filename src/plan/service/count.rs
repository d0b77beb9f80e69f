//! Phases 3 to 5: how many tasks the service should run, its existing
//! tasks classified against the target, why it changes as a whole, and
//! which tasks stop and how many start.

use std::collections::BTreeSet;

use super::place::with_cluster_view;
use super::{Classified, Scaling, ServiceCtx, Target};
use crate::manifest::service::SchedulingStrategy;
use crate::model::{Health, Task};
use crate::scheduler;

impl<'a> ServiceCtx<'a> {
    /// Phase 3: how many tasks should run, and the existing ones classified:
    /// kept, replaced (old configuration, draining node) or unhealthy.
    pub(super) fn classify(&self, t: &Target, nodes: &mut [scheduler::Node]) -> Classified<'a> {
        let spec = self.spec;
        let replace = self
            .observed
            .is_some_and(|o| o.spec.scheduling_strategy != spec.scheduling_strategy);
        let new_deployment =
            self.observed.is_none_or(|o| o.config_hash != t.config_hash) || replace;
        let desired_count = match spec.scheduling_strategy {
            SchedulingStrategy::Replica => spec.desired_count.unwrap_or(0),
            SchedulingStrategy::Daemon => {
                let p = self.placement(t);
                let req = p.request(spec);
                with_cluster_view(nodes, &p.indices, |view| {
                    // Nodes that keep their task plus nodes that get one.
                    let d = scheduler::daemon_targets(view, &req);
                    let keeping = (0..view.len())
                        .filter(|i| view[*i].group_count(&p.group) > 0 && !d.stop.contains(i))
                        .count();
                    (keeping + d.place.len()) as u32
                })
            }
        };
        // Tasks on a draining node are replaced like tasks of an old
        // configuration: new ones start elsewhere before they stop.
        let (current, old): (Vec<&Task>, Vec<&Task>) = self.live.iter().partition(|x| {
            x.identity.config_hash == t.config_hash && !replace && !self.on_draining(x)
        });
        let draining = old.iter().filter(|x| self.on_draining(x)).count();
        let grace = i64::from(spec.health_check_grace_period_seconds);
        let now = self.inputs.opts.now;
        let (unhealthy, keep) = current.into_iter().partition(|x| {
            x.health == Health::Unhealthy && x.started_at.is_none_or(|s| s + grace <= now)
        });
        Classified {
            desired_count,
            replace,
            new_deployment,
            old,
            draining,
            unhealthy,
            keep,
        }
    }

    /// Phase 4: why the service changes as a whole: new, recreated, a new
    /// deployment (revision, secrets or configuration) or a drain.
    pub(super) fn deployment_reasons(&self, t: &Target, k: &Classified) -> Vec<String> {
        let mut reasons: Vec<String> = t.held.iter().cloned().collect();
        let family = t.family;
        let prev_revision = self.observed.map(|o| o.revision);
        if self.observed.is_none() {
            reasons.push("new in the source".to_string());
        } else if k.replace {
            reasons.push("schedulingStrategy changed: the service is recreated".to_string());
        } else if prev_revision != Some(t.revision) {
            reasons.push(format!(
                "new deployment: task definition {family}:{} -> {family}:{}",
                prev_revision.unwrap_or(0),
                t.revision
            ));
        } else if !k.new_deployment && k.old.len() > k.draining {
            // The store already holds this configuration, yet tasks of an
            // earlier one run: an apply stopped before its rollout ended.
            reasons.push(format!(
                "finish the rollout of {family}:{} an earlier apply left unfinished: {} task(s) of the earlier configuration still run",
                t.revision,
                k.old.len() - k.draining
            ));
        } else if !k.new_deployment && k.draining > 0 {
            reasons.push(format!(
                "{} task(s) on draining node(s) are replaced on other nodes",
                k.draining
            ));
        } else if k.new_deployment {
            let changed: Vec<&str> = t
                .fingerprints
                .iter()
                .filter(|(s, v)| {
                    self.observed.and_then(|o| o.secret_fingerprints.get(*s)) != Some(v)
                })
                .map(|(s, _)| s.as_str())
                .collect();
            // Unkeyed fingerprints of older versions give way to keyed
            // ones: one roll after the upgrade, named as such.
            let rekeyed = !changed.is_empty()
                && changed.iter().all(|s| {
                    self.observed
                        .and_then(|o| o.secret_fingerprints.get(*s))
                        .is_some_and(|old| old.starts_with("sha256:"))
                });
            if changed.is_empty() {
                reasons.push("new deployment: the tasks' configuration changed".to_string());
            } else if rekeyed {
                reasons.push(format!(
                    "new deployment: secret fingerprints are now keyed (once, after the upgrade) ({})",
                    changed.join(", ")
                ));
            } else {
                reasons.push(format!(
                    "new deployment: secret value changed ({})",
                    changed.join(", ")
                ));
            }
        }
        reasons
    }

    /// Phase 5: tasks of an old configuration are replaced by a rolling
    /// deployment (or all at once when recreating); current ones are
    /// scaled to the desired count, and unhealthy ones replaced.
    pub(super) fn scale(
        &self,
        t: &Target,
        k: &Classified<'a>,
        nodes: &[scheduler::Node],
        reasons: &mut Vec<String>,
    ) -> Scaling<'a> {
        let mut stop: Vec<(&Task, String)> = k
            .old
            .iter()
            .map(|x| {
                let why = if k.replace {
                    "service recreated".into()
                } else if self.on_draining(x) && x.identity.config_hash == t.config_hash {
                    format!("node {} is draining", x.node)
                } else if x.identity.revision != t.revision {
                    format!("replaced by revision {} (rolling deployment)", t.revision)
                } else {
                    "configuration changed (rolling deployment)".into()
                };
                (*x, why)
            })
            .collect();
        let desired_count = k.desired_count;
        let have = k.keep.len() as u32;
        let mut start = 0u32;
        if have < desired_count {
            start = desired_count - have;
        } else if have > desired_count {
            let excess = have - desired_count;
            let candidates: Vec<usize> = k
                .keep
                .iter()
                .filter_map(|x| nodes.iter().position(|n| n.name == x.node))
                .collect();
            let chosen = scheduler::choose_to_stop(
                nodes,
                &candidates,
                &self.spec.placement_strategy,
                excess,
            );
            for i in chosen {
                stop.push((
                    k.keep[i],
                    format!("scale in to desiredCount {desired_count}"),
                ));
            }
            reasons.push(format!("scale in: {have} -> {desired_count} tasks"));
        }
        for x in &k.unhealthy {
            stop.push((x, "task failed container health checks".into()));
            reasons.push(format!(
                "task {} is unhealthy and is replaced",
                crate::plan::short(&x.identity.id)
            ));
        }
        let mut drift_only = false;
        if self.observed.is_some() && start > 0 && !k.new_deployment {
            let unrepaired = self.missing(k, start, reasons);
            start -= unrepaired;
            drift_only = unrepaired > 0;
        }
        Scaling {
            stop,
            start,
            drift_only,
        }
    }

    /// Tasks missing from a service whose configuration stays: a scale
    /// out, or drift (tasks stopped or gone), repaired with self-heal and
    /// otherwise only reported. Returns how many of the `start` missing
    /// tasks are not started.
    pub(super) fn missing(&self, k: &Classified, start: u32, reasons: &mut Vec<String>) -> u32 {
        let spec = self.spec;
        let (have, desired_count) = (k.keep.len(), k.desired_count);
        let same_count = self.observed.and_then(|o| o.spec.desired_count) == spec.desired_count;
        if !same_count && spec.scheduling_strategy != SchedulingStrategy::Daemon {
            reasons.push(format!("scale out: {have} -> {desired_count} tasks"));
            return 0;
        }
        let replacing = start.saturating_sub(k.unhealthy.len() as u32);
        if replacing == 0 {
            return 0;
        }
        let why: BTreeSet<String> = self
            .stopped
            .iter()
            .map(|x| {
                let code = x.stop_code.clone().unwrap_or_else(|| "stopped".into());
                match &x.stopped_reason {
                    Some(r) => format!("{code}: {r}"),
                    None => code,
                }
            })
            .collect();
        let gone = (replacing as usize).saturating_sub(self.stopped.len());
        let mut causes: Vec<String> = why.into_iter().collect();
        if gone > 0 {
            // The runtime keeps no trace of a removed task, nor of one an
            // interrupted apply never started: the two cannot be told apart.
            causes.push(format!(
                "{gone} {} not in the runtime: removed, or never started",
                if gone == 1 { "task" } else { "tasks" }
            ));
        }
        if self.desired.self_heal {
            reasons.push(format!(
                "{have} of {desired_count} tasks running; replacing {replacing} ({})",
                causes.join("; ")
            ));
            0
        } else {
            // Reported, not repaired: nothing is started or cleaned up.
            reasons.push(format!(
                "drift: {have} of {desired_count} tasks running ({}); not repaired: self-heal is off (reconcile.io/self-heal: \"false\")",
                causes.join("; ")
            ));
            replacing
        }
    }
}
