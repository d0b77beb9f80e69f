//! Planning one service, in phases over a [`ServiceCtx`] (the service's
//! inputs): the revision and configuration its tasks should run (holds
//! included), how its spec changed, its existing tasks counted and
//! classified, which of them stop and how many start, where the new ones
//! go, the rollout that gets there, and the change that says all of it.

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{
    change, diff, rollout, split_key, to_value, Action, DeploymentChange, FieldChange, Inputs,
    PlacementProblem, ResourceChange, TaskChanges, TaskStart, TaskStop,
};
use crate::manifest::service::{SchedulingStrategy, ServiceSpec};
use crate::manifest::{Kind, TaskDefinitionSpec};
use crate::model::{self, DesiredService, Health, ObservedService, Task, TaskDefRef};
use crate::scheduler;

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

    /// Phase 1: the revision and configuration the tasks should run: the
    /// one the source names, unless a hold keeps or restores another.
    fn target(&self) -> Result<Target<'a>, String> {
        let TaskDefRef {
            family,
            revision: pinned,
        } = TaskDefRef::parse(&self.spec.task_definition);
        let revision = pinned
            .or_else(|| self.inputs.desired_revisions.get(family).copied())
            .ok_or_else(|| format!("task definition family `{family}` is not defined"))?;
        let td = self
            .revision_spec(family, revision)
            .ok_or_else(|| format!("revision {family}:{revision} is not registered"))?;
        let secrets = &self.inputs.desired.secret_fingerprints;
        let fingerprints = model::secret_fingerprints_of(td, secrets);
        let config_hash = match self.inputs.spec_digests.get(&(family, revision)) {
            Some(d) => model::config_hash_of(family, d, &fingerprints),
            None => model::task_config_hash(family, td, secrets),
        };
        let mut target = Target {
            family,
            revision,
            td,
            fingerprints,
            config_hash,
            held: None,
            placement: OnceCell::new(),
        };
        self.hold(&mut target);
        Ok(target)
    }

    /// A configuration that was rolled back is not deployed again until the
    /// desired state changes: what runs is kept, and the plan says why.
    /// A rollback (`reconcile rollback`) holds the desired configuration the
    /// same way and names the revision to run instead: that is deployed.
    fn hold(&self, t: &mut Target<'a>) {
        let held = self
            .inputs
            .observed
            .deployments
            .get(self.key)
            .and_then(|h| h.held.as_ref());
        let (Some(h), Some(o)) = (held, self.observed) else {
            return;
        };
        let to = if h.to > 0 { h.to } else { o.revision };
        let kept = self.revision_spec(t.family, to);
        let (true, Some(kept)) = (h.config_hash == t.config_hash, kept) else {
            return;
        };
        t.held = Some(if o.revision == to {
            format!(
                "revision {} is not deployed again ({}); revision {to} keeps running. Change the service or its task definition to deploy again",
                h.revision, h.reason
            )
        } else {
            format!("rollback to revision {to} ({})", h.reason)
        });
        let secrets = &self.inputs.desired.secret_fingerprints;
        t.revision = to;
        t.td = kept;
        t.fingerprints = model::secret_fingerprints_of(kept, secrets);
        t.config_hash = if o.revision == to {
            o.config_hash.clone()
        } else {
            model::task_config_hash(t.family, kept, secrets)
        };
    }

    /// Phase 2: field changes of the service spec itself, with the revision
    /// its tasks run and the secrets they read.
    fn field_changes(&self, t: &Target) -> Vec<FieldChange> {
        let spec = self.spec;
        // Specs are normalised, so equal specs need no field-level diff.
        let mut fields = match self.observed {
            Some(o) if o.spec == *spec => Vec::new(),
            Some(o) => diff::diff(&to_value(&o.spec), &to_value(spec)),
            None => diff::diff(&serde_json::json!({}), &to_value(spec)),
        };
        let Some(o) = self.observed else {
            return fields;
        };
        let family = t.family;
        if o.revision != t.revision {
            fields.retain(|f| f.path != "taskDefinition");
            fields.insert(
                0,
                FieldChange {
                    path: "taskDefinition".into(),
                    before: Some(Value::String(format!("{family}:{}", o.revision))),
                    after: Some(Value::String(format!("{family}:{}", t.revision))),
                },
            );
        } else if o.spec.task_definition != spec.task_definition {
            // `web` -> `web:3` naming the same revision changes nothing.
            fields.retain(|f| f.path != "taskDefinition");
        }
        for (secret, fp) in &t.fingerprints {
            let old = o.secret_fingerprints.get(secret);
            if old != Some(fp) && old.is_some() {
                fields.push(FieldChange {
                    path: format!("secrets[{secret}]"),
                    before: old.map(|v| Value::String(v.clone())),
                    after: Some(Value::String(fp.clone())),
                });
            }
        }
        fields
    }

    /// What placing the target's tasks needs, built on first use.
    fn placement<'t>(&self, t: &'t Target) -> &'t PlacementInputs {
        t.placement.get_or_init(|| PlacementInputs::new(self, t.td))
    }

    /// Phase 3: how many tasks should run, and the existing ones classified:
    /// kept, replaced (old configuration, draining node) or unhealthy.
    fn classify(&self, t: &Target, nodes: &mut [scheduler::Node]) -> Classified<'a> {
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

    fn on_draining(&self, t: &Task) -> bool {
        self.inputs.observed.draining.contains(&t.node)
    }

    /// Phase 4: why the service changes as a whole: new, recreated, a new
    /// deployment (revision, secrets or configuration) or a drain.
    fn deployment_reasons(&self, t: &Target, k: &Classified) -> Vec<String> {
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
            if changed.is_empty() {
                reasons.push("new deployment: the tasks' configuration changed".to_string());
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
    fn scale(
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
                super::short(&x.identity.id)
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
    fn missing(&self, k: &Classified, start: u32, reasons: &mut Vec<String>) -> u32 {
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
            causes.push(format!("{gone} task(s) gone from the runtime"));
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

    /// Phase 6: the task changes: new tasks placed on nodes, tasks stopped,
    /// remains cleaned up, and the count running afterwards.
    fn task_changes(
        &self,
        t: &Target,
        k: &Classified,
        s: &Scaling,
        nodes: &mut [scheduler::Node],
    ) -> TaskChanges {
        let mut tc = TaskChanges::default();
        if s.start > 0 {
            (tc.start, tc.placement_failure) = self.place(t, k, s, nodes);
        }
        if !s.drift_only {
            tc.cleanup = self.stopped.iter().map(|x| x.identity.id.clone()).collect();
        }
        let started: u32 = tc.start.iter().map(|x| x.count).sum();
        tc.stop = s.stop.iter().map(|(x, why)| stop(x, why)).collect();
        tc.running_after = k.keep.len() as u32 + started
            - tc.stop
                .iter()
                .filter(|x| k.keep.iter().any(|y| y.identity.id == x.task))
                .count() as u32;
        tc
    }

    /// Placement of the new tasks. Placements are recorded on the nodes, so
    /// later services see them. When tasks stop before new ones start (0%
    /// minimum, or a recreate), their resources are released first;
    /// otherwise they are kept: the conservative choice.
    fn place(
        &self,
        t: &Target,
        k: &Classified,
        s: &Scaling,
        nodes: &mut [scheduler::Node],
    ) -> (Vec<TaskStart>, Option<PlacementProblem>) {
        let spec = self.spec;
        let p = self.placement(t);
        let req = p.request(spec);
        let release_first =
            spec.deployment_configuration.minimum_healthy_percent == Some(0) || k.replace;
        if release_first {
            for (x, _) in &s.stop {
                if let Some(n) = nodes.iter_mut().find(|n| n.name == x.node) {
                    release(n, x, self.inputs, &p.group);
                }
            }
        }
        let daemon = spec.scheduling_strategy == SchedulingStrategy::Daemon;
        // The strategy's bases count the service's tasks already running on
        // each provider.
        let mut already: BTreeMap<String, u32> = BTreeMap::new();
        if !p.providers.is_empty() {
            for x in &k.keep {
                if let Some(pr) = nodes
                    .iter()
                    .find(|n| n.name == x.node)
                    .and_then(|n| n.capacity_provider.clone())
                {
                    *already.entry(pr).or_default() += 1;
                }
            }
        }
        let seed = self.inputs.opts.seed;
        let (names, failure) = with_cluster_view(nodes, &p.indices, |view| {
            if daemon {
                let d = scheduler::daemon_targets(view, &req);
                let names: Vec<String> = d.place.iter().map(|&i| view[i].name.clone()).collect();
                for &i in &d.place {
                    view[i].add_task(&req);
                }
                (names, d.failures.into_iter().next().map(|(_, f)| f))
            } else {
                let placed = scheduler::place(view, &req, s.start, &already, seed);
                let names = placed
                    .assignments
                    .iter()
                    .map(|&i| view[i].name.clone())
                    .collect();
                (names, placed.failure)
            }
        });
        let mut by_node: BTreeMap<String, u32> = BTreeMap::new();
        for n in names {
            *by_node.entry(n).or_default() += 1;
        }
        let start = by_node
            .into_iter()
            .map(|(node, count)| TaskStart {
                revision: t.revision,
                node,
                count,
            })
            .collect();
        let failure = failure.map(|f| PlacementProblem {
            unplaced: f.unplaced,
            reason: f.reason,
        });
        (start, failure)
    }

    /// Phase 7: the deployment and its rollout steps, with why the bounds
    /// forbid progress if they do (then it has no steps). A DAEMON
    /// service's stops are put in node order, the order of its steps.
    fn rollout(
        &self,
        t: &Target,
        k: &Classified,
        tc: &mut TaskChanges,
    ) -> (DeploymentChange, Option<String>) {
        let spec = self.spec;
        let strategy = spec.scheduling_strategy;
        let min = spec.deployment_configuration.min_healthy(strategy);
        let max = spec.deployment_configuration.max_percent(strategy);
        let desired_count = k.desired_count;
        let bounds = rollout::Bounds::new(desired_count, min, max);
        let mut problem = None;
        let steps = if k.replace {
            vec![rollout::Step {
                stop_old: k.old.len() as u32,
                start_new: desired_count,
            }]
        } else if strategy == SchedulingStrategy::Daemon {
            // A DAEMON service rolls node by node: on each node its old
            // task stops and the new one starts, and the next node waits
            // for it to be healthy. Stops and starts are in node order, so
            // each step takes its node's.
            tc.stop.sort_by(|a, b| a.node.cmp(&b.node));
            let mut per_node: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
            for s in &tc.stop {
                per_node.entry(s.node.as_str()).or_default().0 += 1;
            }
            for s in &tc.start {
                per_node.entry(s.node.as_str()).or_default().1 += s.count;
            }
            per_node
                .into_values()
                .map(|(stop_old, start_new)| rollout::Step {
                    stop_old,
                    start_new,
                })
                .collect()
        } else {
            // Tasks of the new configuration already running (an
            // interrupted rollout) count: the steps continue from them.
            let have = k.keep.len() as u32;
            rollout::plan(
                desired_count,
                have.min(desired_count),
                k.old.len() as u32,
                bounds,
            )
            .unwrap_or_else(|e| {
                problem = Some(e);
                Vec::new()
            })
        };
        let deployment = DeploymentChange {
            from_revision: self.observed.map(|o| o.revision),
            to_revision: t.revision,
            minimum_healthy_percent: min,
            maximum_percent: max,
            bounds,
            steps,
        };
        (deployment, problem)
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
            reasons.push(if spec_changed {
                "spec changed; updated in place (affects future placements only)".into()
            } else {
                "tasks differ from the desired state".into()
            });
        }
        c.reasons = reasons;
        if c.action != Action::NoOp {
            c.tasks = Some(tc);
        }
        c
    }
}

/// What placing a service's tasks needs: its cluster's nodes, its task
/// group, constraints and reservation.
struct PlacementInputs {
    indices: Vec<usize>,
    /// The service's capacity provider strategy, else its cluster's default;
    /// empty on a standalone host (one node serving every cluster).
    providers: Vec<crate::manifest::CapacityProviderStrategyItem>,
    group: String,
    constraints: Vec<scheduler::Constraint>,
    cpu: u32,
    memory: u32,
    ports: Vec<(u16, crate::manifest::task_definition::Protocol)>,
}

impl PlacementInputs {
    fn new(s: &ServiceCtx, td: &TaskDefinitionSpec) -> Self {
        let (desired, observed) = (s.inputs.desired, s.inputs.observed);
        let (cpu, memory, ports) = model::reservation(td);
        let constraints = td
            .placement_constraints
            .iter()
            .chain(s.spec.placement_constraints.iter())
            // Validation refuses a constraint that does not parse.
            .filter_map(|pc| scheduler::Constraint::from_manifest(pc).ok())
            .collect();
        PlacementInputs {
            providers: if observed.nodes.iter().any(|n| n.cluster == "*") {
                Vec::new()
            } else {
                super::strategy_of(desired, s.cluster, s.spec).to_vec()
            },
            indices: cluster_node_indices(observed, s.cluster),
            group: format!("service:{}", s.name),
            constraints,
            cpu,
            memory,
            ports,
        }
    }

    fn request<'a>(&'a self, spec: &'a ServiceSpec) -> scheduler::TaskRequest<'a> {
        scheduler::TaskRequest {
            group: self.group.clone(),
            cpu: self.cpu,
            memory: self.memory,
            host_ports: self.ports.clone(),
            constraints: &self.constraints,
            strategy: &spec.placement_strategy,
            capacity_provider_strategy: &self.providers,
        }
    }
}

/// Nodes of a cluster (a node whose cluster is `*` serves every cluster:
/// the local Docker host in standalone mode).
fn cluster_node_indices(observed: &model::ObservedState, cluster: &str) -> Vec<usize> {
    observed
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.cluster == cluster || n.cluster == "*")
        .map(|(i, _)| i)
        .collect()
}

/// Run `f` on the nodes of a cluster: on the node list itself when the
/// cluster spans every node (standalone mode, and most fleets), else on a
/// copy of its nodes, written back afterwards.
fn with_cluster_view<T>(
    nodes: &mut [scheduler::Node],
    indices: &[usize],
    f: impl FnOnce(&mut [scheduler::Node]) -> T,
) -> T {
    if indices.len() == nodes.len() {
        return f(nodes);
    }
    let mut view: Vec<scheduler::Node> = indices.iter().map(|&i| nodes[i].clone()).collect();
    let out = f(&mut view);
    for (node, &i) in view.into_iter().zip(indices) {
        nodes[i] = node;
    }
    out
}

/// Give back what task `t` reserves on node `n`.
fn release(n: &mut scheduler::Node, t: &Task, inputs: &Inputs, group: &str) {
    if let Some(spec) = inputs.revision_spec(&t.identity.family, t.identity.revision) {
        let (cpu, mem, ports) = model::reservation(spec);
        n.used_cpu = n.used_cpu.saturating_sub(cpu);
        n.used_memory = n.used_memory.saturating_sub(mem);
        for p in ports {
            n.used_ports.remove(&p);
        }
    }
    if let Some(g) = n.task_groups.get_mut(group) {
        *g = g.saturating_sub(1);
    }
    n.running_tasks = n.running_tasks.saturating_sub(1);
}

fn stop(t: &Task, reason: &str) -> TaskStop {
    TaskStop {
        task: t.identity.id.clone(),
        revision: t.identity.revision,
        node: t.node.clone(),
        reason: reason.to_string(),
    }
}
