//! Properties of rolling deployments, checked in the simulated runtime for
//! random counts, percentages, circuit breakers and failure patterns:
//! - the ECS bounds hold after every task change: never more than
//!   floor(desired x maximumPercent / 100) tasks running or pending, never
//!   fewer than ceil(desired x minimumHealthyPercent / 100) HEALTHY, with
//!   tasks that take a while (on apply's clock) to report their health, so
//!   an old task stopped before the new ones are healthy breaks the floor;
//! - every rollout ends: its deployment is COMPLETED or FAILED, never left
//!   IN_PROGRESS, and a failure has an event saying why;
//! - a rolled-back service runs the previous revision at its desired count
//!   and its next plan starts and stops nothing (the failed revision is
//!   held, with a warning; only the failed tasks' remains are left to clean
//!   up), and a successful rollout's next plan is empty.

mod common;

use std::time::Duration;

use common::{desired, nodes, World};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use reconcile::deployment::{EventKind, Rollout};
use reconcile::plan::rollout::Bounds;
use reconcile::runtime::sim::Behaviour;

#[derive(Debug, Clone)]
struct Case {
    count: u32,
    min: u32,
    max: u32,
    breaker: Option<(bool, Option<u32>)>,
    grace: u32,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1u32..9,
        prop::sample::select(vec![0u32, 25, 50, 75, 100]),
        prop::sample::select(vec![100u32, 125, 150, 200]),
        prop::option::of((any::<bool>(), prop::option::of(1u32..6))),
        prop::sample::select(vec![0u32, 5]),
    )
        .prop_filter("progress possible", |(c, min, max, _, _)| {
            (c * min).div_ceil(100) < *c || c * max / 100 > *c
        })
        .prop_map(|(count, min, max, breaker, grace)| Case {
            count,
            min,
            max,
            breaker,
            grace,
        })
}

fn behaviour() -> impl Strategy<Value = Behaviour> {
    prop_oneof![
        Just(Behaviour::Healthy),
        Just(Behaviour::FailsToStart),
        Just(Behaviour::Unhealthy),
        (2u32..4).prop_map(Behaviour::Flaky),
        (1i64..4).prop_map(Behaviour::CrashesAfter),
    ]
}

fn yaml(c: &Case, version: u32) -> String {
    let breaker = match c.breaker {
        None => String::new(),
        Some((rollback, threshold)) => format!(
            ", deploymentCircuitBreaker: {{enable: true, rollback: {rollback}{}}}",
            threshold
                .map(|t| format!(", thresholdConfiguration: {{type: COUNT, value: {t}}}"))
                .unwrap_or_default()
        ),
    };
    format!(
        "apiVersion: reconcile/v1alpha1\nkind: Cluster\nmetadata: {{name: c}}\nspec: {{}}\n---\napiVersion: reconcile/v1alpha1\nkind: TaskDefinition\nmetadata: {{name: f}}\nspec:\n  memory: 64\n  containerDefinitions:\n    - {{name: app, image: busybox:stable, environment: [{{name: V, value: \"{version}\"}}], healthCheck: {{command: [CMD, \"true\"]}}}}\n---\napiVersion: reconcile/v1alpha1\nkind: Service\nmetadata: {{name: s}}\nspec:\n  cluster: c\n  taskDefinition: f\n  desiredCount: {}\n  healthCheckGracePeriodSeconds: {}\n  deploymentConfiguration: {{minimumHealthyPercent: {}, maximumPercent: {}{breaker}}}\n",
        c.count, c.grace, c.min, c.max
    )
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/proptest-regressions/deployment_properties.txt"
        )))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn rollouts_keep_their_bounds_and_always_end(
        c in case(),
        b in behaviour(),
        pending in 0i64..3,
        // Seconds of apply's clock from a task's start to its health
        // showing (apply polls every 250 ms).
        healthy_after in prop::sample::select(vec![0u64, 1, 4, 15]),
    ) {
        let mut w = World::new(nodes(3, 64 * 1024, 64 * 1024));
        w.sim.set_healthy_after(Duration::from_secs(healthy_after));
        let d1 = desired(&yaml(&c, 1));
        w.apply(&d1).unwrap();
        let old_hash = w.stored.services["c/s"].config_hash.clone();

        let d2 = desired(&yaml(&c, 2));
        let new_hash = reconcile::model::task_config_hash("f", &d2.task_definitions["f"], &d2.secret_fingerprints);
        w.sim.set_behaviour(&new_hash, b);
        w.sim.set_pending_for(pending);
        w.sim.watch("s");
        let p = w.plan(&d2);
        let resolver = reconcile::secrets::Resolver::in_dir(std::env::temp_dir());
        let opts = reconcile::apply::Options {
            // Tasks without health checks count as healthy after this.
            settle: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
            ..Default::default()
        };
        let result = common::block(reconcile::apply::apply(&p, &d2, &mut w.stored, &w.sim, &resolver, &opts, &w.sink));

        let bounds = Bounds::new(c.count, c.min, c.max);
        let ex = w.sim.extremes().unwrap();
        prop_assert!(ex.max_live <= bounds.max_running as usize, "{} live, cap {}", ex.max_live, bounds.max_running);
        prop_assert!(ex.min_healthy >= bounds.min_healthy as usize, "{} healthy, floor {}", ex.min_healthy, bounds.min_healthy);

        let h = &w.stored.deployments["c/s"];
        prop_assert!(h.deployments.iter().all(|d| d.rollout != Rollout::InProgress), "{h:#?}");
        let dep = h.deployments.iter().rev().find(|d| d.config_hash == new_hash && d.rollback_of.is_none()).unwrap();
        let live: Vec<_> = w.sim.tasks().into_iter().filter(|t| t.is_live()).collect();
        match &result {
            Ok(()) => {
                prop_assert_eq!(dep.rollout, Rollout::Completed);
                prop_assert!(live.iter().all(|t| t.identity.config_hash == new_hash));
                prop_assert_eq!(live.len(), c.count as usize);
                let after = w.plan(&d2);
                prop_assert!(!after.has_changes(), "{}", reconcile::plan::render::text(&after, Default::default()));
            }
            Err(e) => {
                prop_assert!(!matches!(b, Behaviour::Healthy), "healthy rollout failed: {e}");
                prop_assert_eq!(dep.rollout, Rollout::Failed);
                prop_assert!(h.events.iter().any(|ev| ev.kind == EventKind::ServiceDeploymentFailed && ev.message.contains(&dep.reason)), "{h:#?}");
                if c.breaker.is_some_and(|(rollback, _)| rollback) {
                    prop_assert!(e.to_string().contains("rolled back to revision 1"), "{e}");
                    prop_assert!(live.iter().all(|t| t.identity.config_hash == old_hash), "{live:#?}");
                    prop_assert_eq!(live.len(), c.count as usize);
                    // The failed tasks' remains are kept for their logs;
                    // nothing else changes.
                    let after = w.plan(&d2);
                    for ch in after.changes() {
                        let t = ch.tasks.as_ref().unwrap();
                        prop_assert!(t.start.is_empty() && t.stop.is_empty() && t.deployment.is_none(), "{}", reconcile::plan::render::text(&after, Default::default()));
                    }
                    let said = after.warnings.iter().chain(after.resource_changes.iter().flat_map(|c| c.reasons.iter()));
                    prop_assert!(said.clone().any(|x| x.contains("not deployed again")), "{:?}", said.collect::<Vec<_>>());
                }
            }
        }
        prop_assert!(!matches!(b, Behaviour::FailsToStart | Behaviour::Unhealthy | Behaviour::CrashesAfter(_)) || result.is_err());
    }
}

/// Restart throttling outlives one apply: replacing the tasks of a service
/// whose launches keep failing waits longer each time, and a new revision
/// starts over.
#[test]
fn restart_throttling_grows_across_applies_and_a_new_revision_resets_it() {
    let c = Case {
        count: 2,
        min: 100,
        max: 200,
        breaker: None,
        grace: 0,
    };
    let mut w = World::new(nodes(2, 64 * 1024, 64 * 1024));
    let d1 = desired(&yaml(&c, 1));
    w.apply(&d1).unwrap();
    let hash = w.stored.services["c/s"].config_hash.clone();
    // The configuration stops starting; one task is lost.
    w.sim.set_behaviour(&hash, Behaviour::FailsToStart);
    let mut tasks = w.sim.tasks();
    tasks.pop();
    w.sim.set_tasks(tasks);
    let resolver = reconcile::secrets::Resolver::in_dir(std::env::temp_dir());
    let opts = reconcile::apply::Options {
        settle: Duration::ZERO,
        timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let throttled = |w: &World| -> Vec<String> {
        w.sink
            .events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                reconcile::apply::Event::Deployment { message, .. }
                    if message.starts_with("launching in") =>
                {
                    Some(message.clone())
                }
                _ => None,
            })
            .collect()
    };
    for _ in 0..2 {
        let p = w.plan(&d1);
        let r = common::block(reconcile::apply::apply(
            &p,
            &d1,
            &mut w.stored,
            &w.sim,
            &resolver,
            &opts,
            &w.sink,
        ));
        let e = r.unwrap_err().to_string();
        assert!(e.contains("TaskFailedToStart"), "{e}");
    }
    let waits = throttled(&w);
    assert_eq!(waits.len(), 1, "the second apply waited first: {waits:?}");
    let h = &w.stored.deployments["c/s"];
    assert!(h.deployments[0].start_failures >= 4, "{h:#?}");
    assert!(h
        .events
        .iter()
        .any(|e| e.kind == EventKind::ServiceTaskStartImpaired));
    // A new revision starts over, and succeeds.
    let d2 = desired(&yaml(&c, 2));
    let p = w.plan(&d2);
    common::block(reconcile::apply::apply(
        &p,
        &d2,
        &mut w.stored,
        &w.sim,
        &resolver,
        &opts,
        &w.sink,
    ))
    .unwrap();
    assert_eq!(throttled(&w).len(), 1, "no wait for a new revision");
}
