//! Properties of the planner, checked on random states in the simulated
//! runtime:
//! - planning is deterministic: the same inputs give the same plan;
//! - plans never lie: applying a plan yields a state whose plan is empty;
//! - apply does what the plan said: the tasks started and stopped are
//!   exactly the plan's.

mod common;

use common::{desired, nodes, World};
use proptest::prelude::*;
use reconcile::apply::Event;
use reconcile::model::TaskStatus;

#[derive(Debug, Clone)]
struct Svc {
    count: u32,
    env: u8,
    min: u32,
    max: u32,
    cpu: u32,
}

fn svc() -> impl Strategy<Value = Svc> {
    (
        0u32..6,
        0u8..3,
        prop::sample::select(vec![0u32, 50, 100]),
        prop::sample::select(vec![100u32, 150, 200]),
        prop::sample::select(vec![128u32, 256]),
    )
        .prop_filter("progress possible", |(c, _, min, max, _)| {
            let floor = (c * min).div_ceil(100);
            let cap = c * max / 100;
            *c == 0 || cap > *c || floor < *c
        })
        .prop_map(|(count, env, min, max, cpu)| Svc {
            count,
            env,
            min,
            max,
            cpu,
        })
}

fn yaml(services: &[Option<Svc>]) -> String {
    let mut y = String::from(
        "apiVersion: reconcile/v1alpha1\nkind: Cluster\nmetadata: {name: c}\nspec: {}\n",
    );
    for (i, s) in services.iter().enumerate() {
        let Some(s) = s else { continue };
        y.push_str(&format!(
            "---\napiVersion: reconcile/v1alpha1\nkind: TaskDefinition\nmetadata: {{name: f{i}}}\nspec:\n  cpu: {}\n  memory: 128\n  containerDefinitions:\n    - {{name: app, image: busybox:stable, environment: [{{name: V, value: \"{}\"}}]}}\n---\napiVersion: reconcile/v1alpha1\nkind: Service\nmetadata: {{name: s{i}}}\nspec:\n  cluster: c\n  taskDefinition: f{i}\n  desiredCount: {}\n  deploymentConfiguration: {{minimumHealthyPercent: {}, maximumPercent: {}}}\n",
            s.cpu, s.env, s.count, s.min, s.max
        ));
    }
    y
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
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn apply_then_plan_is_empty_and_planning_is_deterministic(
        first in prop::collection::vec(prop::option::of(svc()), 0..5),
        second in prop::collection::vec(prop::option::of(svc()), 0..5),
        drifts in prop::collection::vec(drift(), 0..4),
    ) {
        let mut w = World::new(nodes(4, 64 * 1024, 64 * 1024));
        let d1 = desired(&yaml(&first));
        let p = w.plan(&d1);
        prop_assert_eq!(&p, &w.plan(&d1), "same inputs, same plan");
        no_empty_changes(&p)?;
        w.apply(&d1).unwrap();
        let after = w.plan(&d1);
        prop_assert!(!after.has_changes(), "after apply:\n{}", reconcile::plan::render::text(&after, Default::default()));

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
        let p2 = w.plan(&reconcile::model::DesiredState { ..d2.clone() });
        prop_assert_eq!(&p2, &w.plan(&d2));
        // Deleting most services needs the flag; the property is about
        // convergence, so allow it here.
        let opts = reconcile::plan::Options { allow_mass_delete: true, ..Default::default() };
        let p2 = reconcile::plan::plan(&d2, &w.observed(), &opts);
        no_empty_changes(&p2)?;
        let (started_before, stopped_before) = w.sim.counters();
        let resolver = reconcile::secrets::Resolver { dir: std::env::temp_dir() };
        common::block(reconcile::apply::apply(&p2, &d2, &mut w.stored, &w.sim, &resolver,
            &reconcile::apply::Options { settle: std::time::Duration::ZERO, ..Default::default() }, &w.sink)).unwrap();
        let (started, stopped) = w.sim.counters();
        let planned_starts: u32 = p2.changes().filter_map(|c| c.tasks.as_ref()).flat_map(|t| t.start.iter()).map(|s| s.count).sum();
        let planned_stops: usize = p2.changes().filter_map(|c| c.tasks.as_ref()).map(|t| t.stop.len()).sum();
        prop_assert_eq!(started - started_before, u64::from(planned_starts), "apply started what the plan said");
        prop_assert_eq!((stopped - stopped_before) as usize, planned_stops, "apply stopped what the plan said");
        let after = w.plan(&d2);
        prop_assert!(!after.has_changes(), "after second apply:\n{}", reconcile::plan::render::text(&after, Default::default()));
        // Every stop/start event matches a planned one.
        let stop_events = w.sink.events.lock().unwrap().iter().filter(|e| matches!(e, Event::Stopped { .. })).count();
        prop_assert!(stop_events >= planned_stops);
    }
}
