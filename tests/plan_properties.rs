//! Properties of the planner, checked on random states in the simulated
//! runtime:
//! - planning is deterministic: equal inputs, built independently (the
//!   source's documents in another order, the observed state's maps filled
//!   in another order), give the same plan;
//! - plans never lie: applying a plan yields a state whose plan is empty;
//! - apply does what the plan said: the tasks started, as (service, node,
//!   revision), and the tasks stopped, by id, are exactly the plan's.

mod common;

use std::collections::BTreeMap;

use common::{desired, nodes, World};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use reconcile::apply::Event;
use reconcile::model::{DesiredState, ObservedState, TaskStatus};
use reconcile::plan::{self, Plan};

#[derive(Debug, Clone)]
struct Svc {
    count: u32,
    env: u8,
    min: u32,
    max: u32,
    cpu: u32,
    /// A ScheduledTask `jI` of the family: (hours between runs, enabled).
    sched: Option<(u8, bool)>,
}

fn svc() -> impl Strategy<Value = Svc> {
    (
        0u32..6,
        0u8..3,
        prop::sample::select(vec![0u32, 50, 100]),
        prop::sample::select(vec![100u32, 150, 200]),
        prop::sample::select(vec![128u32, 256]),
        prop::option::of((2u8..5, any::<bool>())),
    )
        .prop_filter("progress possible", |(c, _, min, max, _, _)| {
            let floor = (c * min).div_ceil(100);
            let cap = c * max / 100;
            *c == 0 || cap > *c || floor < *c
        })
        .prop_map(|(count, env, min, max, cpu, sched)| Svc {
            count,
            env,
            min,
            max,
            cpu,
            sched,
        })
}

/// The source of `services`: a Cluster, then a TaskDefinition `fI` and a
/// Service `sI` for each, and a ScheduledTask `jI` for those with one.
fn yaml(services: &[Option<Svc>]) -> String {
    documents(services).join("---\n")
}

fn documents(services: &[Option<Svc>]) -> Vec<String> {
    let mut docs = vec![
        "apiVersion: reconcile/v1alpha1\nkind: Cluster\nmetadata: {name: c}\nspec: {}\n"
            .to_string(),
    ];
    for (i, s) in services.iter().enumerate() {
        let Some(s) = s else { continue };
        docs.push(format!(
            "apiVersion: reconcile/v1alpha1\nkind: TaskDefinition\nmetadata: {{name: f{i}}}\nspec:\n  cpu: {}\n  memory: 128\n  containerDefinitions:\n    - {{name: app, image: busybox:stable, environment: [{{name: V, value: \"{}\"}}]}}\n",
            s.cpu, s.env
        ));
        docs.push(format!(
            "apiVersion: reconcile/v1alpha1\nkind: Service\nmetadata: {{name: s{i}}}\nspec:\n  cluster: c\n  taskDefinition: f{i}\n  desiredCount: {}\n  deploymentConfiguration: {{minimumHealthyPercent: {}, maximumPercent: {}}}\n",
            s.count, s.min, s.max
        ));
        if let Some((hours, enabled)) = s.sched {
            docs.push(format!(
                "apiVersion: reconcile/v1alpha1\nkind: ScheduledTask\nmetadata: {{name: j{i}}}\nspec:\n  cluster: c\n  taskDefinition: f{i}\n  schedule: rate({hours} hours)\n  enabled: {enabled}\n"
            ));
        }
    }
    docs
}

/// [`desired`] of `services` built again from scratch: the documents in
/// reverse order, and every map of the result filled in reverse order.
fn desired_again(services: &[Option<Svc>]) -> DesiredState {
    let mut docs = documents(services);
    docs.reverse();
    let d = desired(&docs.join("---\n"));
    DesiredState {
        clusters: refill(&d.clusters),
        capacity_providers: refill(&d.capacity_providers),
        task_definitions: refill(&d.task_definitions),
        services: refill(&d.services),
        scheduled_tasks: refill(&d.scheduled_tasks),
        secret_fingerprints: refill(&d.secret_fingerprints),
    }
}

/// An observed state equal to `o`, built again: through its JSON form,
/// then with every map filled in reverse order.
fn observed_again(o: &ObservedState) -> ObservedState {
    let o: ObservedState = serde_json::from_value(serde_json::to_value(o).unwrap()).unwrap();
    ObservedState {
        clusters: refill(&o.clusters),
        capacity_providers: refill(&o.capacity_providers),
        revisions: refill(&o.revisions),
        task_definitions: refill(&o.task_definitions),
        services: refill(&o.services),
        scheduled_tasks: refill(&o.scheduled_tasks),
        deployments: refill(&o.deployments),
        draining: o.draining.iter().rev().cloned().collect(),
        ..o
    }
}

/// A copy of `m` made by inserting its entries last to first.
fn refill<V: Clone>(m: &BTreeMap<String, V>) -> BTreeMap<String, V> {
    let mut out = BTreeMap::new();
    for (k, v) in m.iter().rev() {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// The plan made twice: from the inputs given and from equal inputs built
/// again from `services`; they must agree.
fn plan_twice(
    services: &[Option<Svc>],
    d: &DesiredState,
    o: &ObservedState,
    opts: &plan::Options,
) -> Result<Plan, TestCaseError> {
    let again = desired_again(services);
    prop_assert_eq!(&again, d, "the desired state built again differs");
    let p = plan::plan(d, o, opts);
    let q = plan::plan(&again, &observed_again(o), opts);
    prop_assert_eq!(&p, &q, "equal inputs, different plans");
    Ok(p)
}

/// What `p` says services start, as sorted (service, node, revision), one
/// entry per task, and stop, as sorted task ids.
fn planned_tasks(p: &Plan) -> (Vec<(String, String, u32)>, Vec<String>) {
    let mut starts = Vec::new();
    let mut stops = Vec::new();
    for c in p.changes() {
        let Some(t) = &c.tasks else { continue };
        let key = format!("{}/{}", c.cluster.as_deref().unwrap_or_default(), c.name);
        for s in &t.start {
            for _ in 0..s.count {
                starts.push((key.clone(), s.node.clone(), s.revision));
            }
        }
        stops.extend(t.stop.iter().map(|s| s.task.clone()));
    }
    starts.sort();
    stops.sort();
    (starts, stops)
}

/// What apply reported it started and stopped, in the same form.
fn applied_tasks(events: &[Event]) -> (Vec<(String, String, u32)>, Vec<String>) {
    let mut starts = Vec::new();
    let mut stops = Vec::new();
    for e in events {
        match e {
            Event::Started {
                service,
                node,
                revision,
                ..
            } => starts.push((service.clone(), node.clone(), *revision)),
            Event::Stopped { task, .. } => stops.push(task.clone()),
            _ => {}
        }
    }
    starts.sort();
    stops.sort();
    (starts, stops)
}

/// Drift applied to the simulated tasks between two applies.
#[derive(Debug, Clone)]
enum Drift {
    Remove(prop::sample::Index),
    Stop(prop::sample::Index),
}

fn drift() -> impl Strategy<Value = Drift> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Drift::Remove),
        any::<prop::sample::Index>().prop_map(Drift::Stop)
    ]
}

/// A plan never says "changed" without saying what: every change has a
/// reason, and an update or replace has field, revision or task changes
/// (creating or deleting a resource is a change by itself).
fn no_empty_changes(p: &reconcile::plan::Plan) -> Result<(), TestCaseError> {
    use reconcile::plan::Action;
    for c in p.changes() {
        prop_assert!(!c.reasons.is_empty(), "{} has no reason", c.address);
        let tasks = c.tasks.as_ref().is_some_and(|t| {
            !t.start.is_empty()
                || !t.stop.is_empty()
                || !t.cleanup.is_empty()
                || t.placement_failure.is_some()
        });
        prop_assert!(
            matches!(c.action, Action::Create | Action::Delete)
                || !c.fields.is_empty()
                || tasks
                || c.revision.as_ref().is_some_and(|r| r.from != Some(r.to)),
            "{} is {:?} with an empty diff",
            c.address,
            c.action
        );
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/proptest-regressions/plan_properties.txt"
        )))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn apply_then_plan_is_empty_and_planning_is_deterministic(
        first in prop::collection::vec(prop::option::of(svc()), 0..5),
        second in prop::collection::vec(prop::option::of(svc()), 0..5),
        drifts in prop::collection::vec(drift(), 0..4),
    ) {
        let mut w = World::new(nodes(4, 64 * 1024, 64 * 1024));
        let d1 = desired(&yaml(&first));
        let p = plan_twice(&first, &d1, &w.observed(), &plan::Options::default())?;
        prop_assert_eq!(&p, &w.plan(&d1));
        no_empty_changes(&p)?;
        w.apply(&d1).unwrap();
        let after = w.plan(&d1);
        prop_assert!(!after.has_changes(), "after apply:\n{}", plan::render::text(&after, Default::default()));

        // Drift, then a new source: the plan repairs and converges.
        let mut tasks = w.sim.tasks();
        for d in &drifts {
            if tasks.is_empty() { break; }
            match d {
                Drift::Remove(i) => { let k = i.index(tasks.len()); tasks.remove(k); }
                Drift::Stop(i) => { let k = i.index(tasks.len()); tasks[k].last_status = TaskStatus::Stopped; tasks[k].stop_code = Some("EssentialContainerExited".into()); }
            }
        }
        w.sim.set_tasks(tasks);
        let d2 = desired(&yaml(&second));
        // Deleting most services needs the flag; the property is about
        // convergence, so allow it here.
        let opts = plan::Options { allow_mass_delete: true, ..Default::default() };
        let p2 = plan_twice(&second, &d2, &w.observed(), &opts)?;
        no_empty_changes(&p2)?;
        w.sink.events.lock().unwrap().clear();
        let (started_before, stopped_before) = w.sim.counters();
        let resolver = reconcile::secrets::Resolver::in_dir(std::env::temp_dir());
        common::block(reconcile::apply::apply(&p2, &d2, &mut w.stored, &w.sim, &resolver,
            &reconcile::apply::Options { settle: std::time::Duration::ZERO, ..Default::default() }, &w.sink)).unwrap();

        // Exactly the plan's tasks: the same starts, service by service and
        // node by node, and the very tasks it named stopped, each once.
        let (planned_starts, planned_stops) = planned_tasks(&p2);
        let (starts, stops) = applied_tasks(&w.sink.events.lock().unwrap());
        prop_assert_eq!(&starts, &planned_starts, "apply started what the plan said");
        prop_assert_eq!(&stops, &planned_stops, "apply stopped the tasks the plan named");
        let (started, stopped) = w.sim.counters();
        prop_assert_eq!((started - started_before) as usize, planned_starts.len(), "no start unreported");
        prop_assert_eq!((stopped - stopped_before) as usize, planned_stops.len(), "no stop unreported");
        let live: Vec<String> = w.sim.tasks().into_iter().map(|t| t.identity.id).collect();
        prop_assert!(planned_stops.iter().all(|id| !live.contains(id)), "a stopped task still runs");

        let after = w.plan(&d2);
        prop_assert!(!after.has_changes(), "after second apply:\n{}", plan::render::text(&after, Default::default()));
    }
}
