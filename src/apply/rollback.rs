//! Rollbacks: a failed or aborted rollout restores the last COMPLETED
//! deployment (a rolling deployment of its own), and `reconcile rollback`
//! asks the next plan to.

use std::time::Duration;

use super::rollout::{stop_all, Ctx, Halt, Rollout};
use super::service::{target, Target};
use super::settle::healthy;
use super::{update, ApplyError, Sink};
use crate::model::{self, DesiredState, ObservedService, Task};
use crate::plan::{rollout, TaskStop};
use crate::runtime::Runtime;
use crate::secrets::Resolver;
use crate::store::Stored;

/// A rollout stopped: mark its deployment FAILED and, when its breaker
/// says so or the user aborted, restore the last COMPLETED deployment. The
/// result is always an error: a rolled-back apply never reports success.
pub(super) async fn deployment_failed<R: Runtime + Sync, S: Sink>(
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
        Halt::Tripped { reason, task } => {
            ctx.sink.event(super::Event::BreakerTripped {
                service: ctx.key.clone(),
            });
            (reason, task, false)
        }
        Halt::TimedOut { reason, task } | Halt::CannotStart { reason, task } => {
            (reason, task, false)
        }
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
    ctx.sink.event(super::Event::RollbackStarted {
        service: ctx.key.clone(),
    });
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
    // once (they hold up nothing), healthy ones in the steps the planner's
    // rollout arithmetic gives, driven as a deployment's are.
    let bounds = rollout::Bounds::new(
        count,
        spec.deployment_configuration
            .min_healthy(spec.scheduling_strategy),
        spec.deployment_configuration
            .max_percent(spec.scheduling_strategy),
    );
    let obs = ctx.runtime.observe().await.map_err(|e| e.message)?;
    let now = ctx.sink.now();
    let mine: Vec<&Task> = obs
        .tasks
        .iter()
        .filter(|t| {
            t.is_live()
                && t.identity.cluster == failed.cluster
                && t.identity.service.as_deref() == Some(&failed.service)
        })
        .collect();
    let (restored, leaving): (Vec<&Task>, Vec<&Task>) = mine
        .into_iter()
        .partition(|t| t.identity.config_hash == old.config_hash);
    let has_checks = failed.has_checks();
    let ran = |t: &Task| {
        Duration::from_secs(now.saturating_sub(t.started_at.unwrap_or(now)).max(0) as u64)
    };
    let (steady, unsteady): (Vec<&Task>, Vec<&Task>) = leaving
        .into_iter()
        .partition(|t| healthy(t, has_checks, ran(t), ctx.opts.settle));
    let stop = |t: &&Task| TaskStop {
        task: t.identity.id.clone(),
        revision: t.identity.revision,
        node: t.node.clone(),
        reason: format!("rolled back to revision {to}"),
    };
    // Restored tasks go where the service's tasks ran, else anywhere.
    let mut pool: Vec<String> = vacated;
    pool.extend(steady.iter().chain(&unsteady).map(|t| t.node.clone()));
    if pool.is_empty() {
        pool = obs.nodes.iter().map(|n| n.name.clone()).collect();
    }
    let unsteady: Vec<TaskStop> = unsteady.iter().map(stop).collect();
    stop_all(ctx.runtime, &ctx.key, &unsteady, ctx.sink)
        .await
        .map_err(|e| e.to_string())?;
    let have = restored.len() as u32;
    let result = match rollout::plan(count, have.min(count), steady.len() as u32, bounds) {
        Err(_) => Err(Halt::TimedOut {
            reason: format!(
                "the rollback cannot progress: minimumHealthyPercent keeps {} healthy and maximumPercent allows {} running",
                bounds.min_healthy, bounds.max_running
            ),
            task: None,
        }),
        Ok(steps) => {
            if steps.iter().any(|s| s.start_new > 0) && pool.is_empty() {
                return Err("no node to run the restored tasks on".into());
            }
            // Each step starts its tasks round the pool from its front.
            let slots = steps
                .iter()
                .flat_map(|s| (0..s.start_new as usize).map(|i| pool[i % pool.len()].clone()))
                .collect();
            let mut rollback = Rollout {
                target: &old,
                dep: Some(rb),
                steps,
                stops: steady.iter().map(stop).collect(),
                slots,
                abortable: false,
                watched: Vec::new(),
                vacated: Vec::new(),
            };
            ctx.drive(&mut rollback).await
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
                Halt::Tripped { reason, .. }
                | Halt::TimedOut { reason, .. }
                | Halt::CannotStart { reason, .. } => reason,
                Halt::Aborted => "aborted".into(),
                Halt::Error(e) => e.to_string(),
            };
            let _ = ctx.history(|h| h.fail(rb, &why, now));
            Err(why)
        }
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
