//! One service's change: recorded (with the deployment it starts) before
//! its tasks change, then its rollout, then what is left to stop and clean
//! up, and the deployment completed once the service is steady.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use super::rollback::deployment_failed;
use super::rollout::{stop_all, Ctx, Rollout, Watched};
use super::settle::has_checks;
use super::{update, ApplyError, Options, Sink};
use crate::deployment::EventKind;
use crate::model::{self, DesiredState, Health, ObservedService, TaskIdentity};
use crate::plan::rollout::Step;
use crate::plan::{Action, ResourceChange, TaskChanges, TaskStop};
use crate::runtime::{Launch, Runtime};
use crate::secrets::Resolver;
use crate::store::Stored;

/// What a service's tasks are launched as.
pub(super) struct Target {
    pub(super) cluster: String,
    pub(super) service: String,
    pub(super) family: String,
    pub(super) revision: u32,
    pub(super) config_hash: String,
    pub(super) td: crate::manifest::TaskDefinitionSpec,
    pub(super) secrets: BTreeMap<String, crate::secrets::SecretValue>,
    /// The service has load balancers: its tasks count as healthy only
    /// once their targets are.
    pub(super) load_balanced: bool,
}

impl Target {
    pub(super) fn launch(&self, id: String, node: String) -> Launch {
        Launch {
            identity: TaskIdentity {
                id,
                cluster: self.cluster.clone(),
                service: Some(self.service.clone()),
                family: self.family.clone(),
                revision: self.revision,
                config_hash: self.config_hash.clone(),
                started_by: None,
            },
            node,
            spec: self.td.clone(),
            secrets: self.secrets.clone(),
        }
    }

    pub(super) fn has_checks(&self) -> bool {
        has_checks(&self.td) || self.load_balanced
    }
}

pub(super) async fn service<R: Runtime + Sync, S: Sink>(
    shared: &Mutex<Stored>,
    desired: &DesiredState,
    c: &ResourceChange,
    runtime: &R,
    resolver: &Resolver,
    opts: &Options,
    sink: &S,
) -> Result<(), ApplyError> {
    let cluster = c.cluster.clone().unwrap_or_default();
    let key = format!("{cluster}/{}", c.name);
    let empty = TaskChanges::default();
    let tc = c.tasks.as_ref().unwrap_or(&empty);
    let fail = |message: String| ApplyError::Failed {
        address: c.address.clone(),
        message,
        task: None,
    };

    if c.action == Action::Delete {
        stop_all(runtime, &key, &tc.stop, sink).await?;
        for id in &tc.cleanup {
            runtime.remove(id).await?;
        }
        return update(shared, sink, |st| {
            st.services.remove(&key);
            st.deployments.remove(&key);
        });
    }
    let ds = desired
        .services
        .get(&key)
        .ok_or_else(|| fail("not in the desired state".into()))?;
    let spec = &ds.spec;
    let family = model::TaskDefRef::parse(&spec.task_definition)
        .family
        .to_string();
    let revision = {
        let st = shared.lock().unwrap_or_else(|e| e.into_inner());
        tc.deployment
            .as_ref()
            .map(|d| d.to_revision)
            .or_else(|| tc.start.first().map(|s| s.revision))
            .or_else(|| st.services.get(&key).map(|s| s.revision))
            .ok_or_else(|| fail("no revision to run".into()))?
    };
    let target = target(
        shared, desired, resolver, &cluster, &c.name, &family, revision,
    )
    .map_err(fail)?;
    // The service (and the deployment it starts) is recorded before its
    // tasks start: a failed or interrupted rollout is then continued, not
    // forgotten, and status shows the service's tasks.
    let now = sink.now();
    let dep = update(shared, sink, |st| {
        // A rollout already kept by a hold (the planner kept what runs)
        // keeps its recorded spec's revision.
        st.services.insert(
            key.clone(),
            ObservedService {
                key: ds.key.clone(),
                spec: spec.clone(),
                revision,
                config_hash: target.config_hash.clone(),
                secret_fingerprints: model::secret_fingerprints_of(
                    &target.td,
                    &desired.secret_fingerprints,
                ),
            },
        );
        let h = st.deployments.entry(key.clone()).or_default();
        match &tc.deployment {
            Some(_) => Some(h.begin(
                revision,
                &target.config_hash,
                tc.running_after,
                &spec.deployment_configuration.deployment_circuit_breaker,
                None,
                now,
            )),
            None => h.primary().map(|d| d.id),
        }
    })?;
    // Restart throttling outlives one apply: replacing the tasks of a
    // service whose launches keep failing waits the current delay first.
    // A new deployment starts over.
    let throttle = match (&tc.deployment, dep) {
        (None, Some(d)) => crate::deployment::backoff(
            shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .deployments
                .get(&key)
                .and_then(|h| h.get(d))
                .map_or(0, |d| d.start_failures),
        ),
        _ => Duration::ZERO,
    }
    // Never so long that the apply ends before trying.
    .min(opts.timeout / 2);
    let ctx = Ctx {
        shared,
        key: key.clone(),
        address: c.address.clone(),
        runtime,
        opts,
        sink,
        grace: Duration::from_secs(u64::from(spec.health_check_grace_period_seconds)),
        failed: Mutex::new(Vec::new()),
        throttle,
    };
    if let (Some(d), Some(_)) = (dep, &tc.deployment) {
        ctx.say(format!("deployment {d} (revision {revision}) in progress"));
    }

    // Node slots in plan order.
    let mut slots: Vec<String> = Vec::new();
    for s in &tc.start {
        for _ in 0..s.count {
            slots.push(s.node.clone());
        }
    }
    let steps = match &tc.deployment {
        Some(d) if !d.steps.is_empty() && d.from_revision.is_some() => d.steps.clone(),
        _ => vec![Step {
            stop_old: tc.stop.len() as u32,
            start_new: slots.len() as u32,
        }],
    };
    let mut watched: Vec<Watched> = Vec::new();
    if tc.deployment.is_some() {
        // Tasks of this configuration already running (a rollout resumed
        // after an interruption or a controller restart) count towards the
        // floor only once healthy, so they are watched like new ones.
        let obs = runtime.observe().await?;
        let since = sink.elapsed();
        watched.extend(
            obs.tasks
                .iter()
                .filter(|t| {
                    t.is_live()
                        && t.health != Health::Unhealthy
                        && t.identity.config_hash == target.config_hash
                        && t.identity.cluster == cluster
                        && t.identity.service.as_deref() == Some(c.name.as_str())
                })
                .map(|t| Watched {
                    id: t.identity.id.clone(),
                    node: t.node.clone(),
                    since,
                    healthy: false,
                }),
        );
    }
    let mut rollout = Rollout {
        target: &target,
        dep,
        steps,
        stops: tc.stop.iter().cloned().collect(),
        slots: slots.into(),
        abortable: true,
        watched,
        vacated: Vec::new(),
    };
    if let Err(h) = ctx.drive(&mut rollout).await {
        let vacated = rollout.vacated;
        return deployment_failed(&ctx, desired, resolver, &target, dep, h, vacated).await;
    }
    // Stops the steps did not cover (e.g. unhealthy tasks replaced).
    let rest: Vec<TaskStop> = rollout.stops.into();
    stop_all(runtime, &key, &rest, sink).await?;
    // What is left of tasks that had stopped when the plan was made, and of
    // the ones that failed and were replaced.
    let failed = std::mem::take(&mut *ctx.failed.lock().unwrap_or_else(|e| e.into_inner()));
    for id in tc.cleanup.iter().chain(&failed) {
        runtime.remove(id).await?;
    }
    if let Some(p) = &tc.placement_failure {
        let msg = format!("{} task(s) could not be placed: {}", p.unplaced, p.reason);
        let now = sink.now();
        ctx.history(|h| h.event(now, EventKind::ServiceTaskPlacementFailure, msg.clone()))?;
        return Err(fail(msg));
    }
    // Steady: the deployment is COMPLETED, also one an earlier apply left
    // IN_PROGRESS (stopped by a placement failure or a lost node) and this
    // one finished.
    if let Some(d) = dep {
        let now = sink.now();
        let done = ctx.history(|h| {
            let open = h
                .get(d)
                .is_some_and(|x| x.rollout == crate::deployment::Rollout::InProgress);
            h.complete(d, tc.running_after, now);
            open
        })?;
        if done {
            ctx.say(format!("deployment {d} (revision {revision}) completed"));
        }
    }
    Ok(())
}

/// The launch target of `family:revision` for a service: its registered
/// spec, configuration digest and resolved secrets.
pub(super) fn target(
    shared: &Mutex<Stored>,
    desired: &DesiredState,
    resolver: &Resolver,
    cluster: &str,
    service: &str,
    family: &str,
    revision: u32,
) -> Result<Target, String> {
    let (td, load_balanced) = {
        let st = shared.lock().unwrap_or_else(|e| e.into_inner());
        let td = st
            .revisions
            .get(family)
            .and_then(|r| r.iter().find(|r| r.number == revision))
            .map(|r| r.spec.clone())
            .ok_or_else(|| format!("revision {family}:{revision} is not registered"))?;
        // The spec being applied: a created service is recorded only after
        // its target is made, and its first tasks must wait for their
        // targets too.
        let key = format!("{cluster}/{service}");
        let load_balanced = desired
            .services
            .get(&key)
            .is_some_and(|s| !s.spec.load_balancers.is_empty())
            || st
                .services
                .get(&key)
                .is_some_and(|s| !s.spec.load_balancers.is_empty());
        (td, load_balanced)
    };
    let config_hash = model::task_config_hash(family, &td, &desired.secret_fingerprints);
    // Secrets are resolved now, for the launch only; a fleet's `node:`
    // references are read by the agent.
    let mut secrets = BTreeMap::new();
    for r in model::secret_fingerprints_of(&td, &desired.secret_fingerprints).keys() {
        if let Some(v) = resolver.resolve_for_launch(r).map_err(|e| e.to_string())? {
            secrets.insert(r.clone(), v);
        }
    }
    Ok(Target {
        cluster: cluster.to_string(),
        service: service.to_string(),
        family: family.to_string(),
        revision,
        config_hash,
        td,
        secrets,
        load_balanced,
    })
}
