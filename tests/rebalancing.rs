//! Rebalancing of a spread service on a real fleet: a controller and three
//! agents (zones a, b and c) on this machine's Docker engine, the second
//! and third joining after the service's six tasks all went to the first.
//!
//! Needs Docker and `busybox:stable` (`scripts/docker-setup.sh`): without
//! them the test fails under CI and is skipped, saying so, elsewhere.

#[path = "common/controller.rs"]
mod controller;
#[path = "common/prereq.rs"]
mod prereq;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use controller::{bin, ControllerArgs, Harness};
use serde_json::Value;

/// `app`: six tasks spread by zone, rebalanced by default, with room for
/// three extra tasks (150 %) and none fewer than six healthy (100 %).
/// `pinned`: three tasks spread by zone that opted out.
fn manifests(cluster: &str) -> String {
    let service = |name: &str, count: u32, extra: &str| {
        format!(
            r#"---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {{name: {name}}}
spec:
  cluster: {cluster}
  taskDefinition: app
  desiredCount: {count}
  deploymentConfiguration: {{minimumHealthyPercent: 100, maximumPercent: 150}}
  placementStrategy:
    - {{type: spread, field: "attribute:zone"}}
{extra}"#
        )
    };
    format!(
        r#"apiVersion: reconcile/v1alpha1
kind: Cluster
metadata: {{name: {cluster}}}
spec: {{}}
---
apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {{name: app}}
spec:
  networkMode: none
  containerDefinitions:
    - name: app
      image: busybox:stable
      command: [sleep, "3600"]
      memory: 32
      stopTimeout: 1
{}{}"#,
        service("app", 6, ""),
        service("pinned", 3, "  availabilityZoneRebalancing: DISABLED\n"),
    )
}

/// A service's tasks in a status document: (id, node, lastStatus).
fn tasks(status: &Value, service: &str) -> Vec<(String, String, String)> {
    let Some(s) = status["services"]
        .as_array()
        .and_then(|v| v.iter().find(|s| s["name"] == service))
    else {
        return Vec::new();
    };
    let mut v: Vec<(String, String, String)> = s["tasks"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    let s = |k: &str| t[k].as_str().unwrap_or_default().to_string();
                    (s("id"), s("node"), s("lastStatus"))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Running tasks per node (node0, node1, node2).
fn per_node(tasks: &[(String, String, String)]) -> [usize; 3] {
    let mut n = [0; 3];
    for (_, node, st) in tasks {
        if let Some(i) = node
            .strip_prefix("node")
            .and_then(|d| d.parse::<usize>().ok())
        {
            if st == "RUNNING" && i < 3 {
                n[i] += 1;
            }
        }
    }
    n
}

fn running(tasks: &[(String, String, String)]) -> usize {
    tasks.iter().filter(|t| t.2 == "RUNNING").count()
}

#[test]
fn six_tasks_on_one_zone_move_to_two_per_zone_when_two_zones_join() {
    if !prereq::satisfied(prereq::docker()) {
        return;
    }
    let mut h: Harness<()> = Harness::create(
        format!("rb{}", std::process::id()),
        [127, 0, 0, 1].into(),
        |_| (),
    );
    let src = h.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("app.yaml"), manifests(&h.cluster)).unwrap();
    h.start_controller(ControllerArgs {
        source: vec![src.into()],
        interval: 1,
        node_timeout: 10,
        env: Vec::new(),
    });
    let agent = |h: &Harness<()>, i: usize, zone: &str| {
        h.spawn_agent(
            Command::new(bin()),
            &format!("node{i}"),
            &["--attribute".into(), format!("zone={zone}")],
        )
    };
    let first = agent(&h, 0, "a");
    h.agents.push(Some(first));
    // One node: everything lands on it, and both deployments complete.
    h.wait_for(
        "6 + 3 tasks running on node0, deployments completed",
        Duration::from_secs(90),
        |h| {
            let s = h.status();
            let done = s["services"].as_array().is_some_and(|v| {
                v.len() == 2
                    && v.iter().all(|svc| {
                        svc["deployments"]
                            .as_array()
                            .and_then(|d| d.iter().find(|d| d["status"] == "PRIMARY"))
                            .is_some_and(|d| d["rolloutState"] == "COMPLETED")
                    })
            });
            done && per_node(&tasks(&s, "app")) == [6, 0, 0]
                && per_node(&tasks(&s, "pinned")) == [3, 0, 0]
        },
    );
    let pinned_before = tasks(&h.status(), "pinned");

    // Zones b and c join. The controller lets a joining node settle
    // before it moves anything, so sampling from now on sees every move.
    let joined = Instant::now();
    for (i, zone) in [(1, "b"), (2, "c")] {
        let a = agent(&h, i, zone);
        h.agents.push(Some(a));
    }
    // The healthy count, sampled from status while the tasks move.
    let stop = AtomicBool::new(false);
    /// Ends the sampling however the scope ends, a failed wait included
    /// (the scope joins the sampler).
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let (samples, moved_in) = std::thread::scope(|scope| {
        let _stop = Stop(&stop);
        let sampler = scope.spawn(|| {
            let mut samples: Vec<(usize, usize)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (code, out, _) = h.cli(&["status", "--format", "json"]);
                if code == 0 {
                    if let Ok(s) = serde_json::from_str::<Value>(&out) {
                        let t = tasks(&s, "app");
                        samples.push((running(&t), t.len()));
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            samples
        });
        h.wait_for("2/2/2 of app", Duration::from_secs(60), |h| {
            per_node(&tasks(&h.status(), "app")) == [2, 2, 2]
        });
        let took = joined.elapsed();
        drop(_stop);
        (sampler.join().unwrap(), took)
    });
    eprintln!(
        "rebalanced in {moved_in:?}; {} status samples",
        samples.len()
    );
    assert!(
        samples.len() >= 20,
        "too few samples to say anything: {samples:?}"
    );
    // minimumHealthyPercent 100 of 6: never fewer than 6 running;
    // maximumPercent 150: never more than 9 tasks at once.
    for (run, all) in &samples {
        assert!(*run >= 6, "below the minimum: {samples:?}");
        assert!(*all <= 9, "above the maximum: {samples:?}");
    }
    assert!(
        samples.iter().any(|(_, all)| *all > 6),
        "moves start the new task first, so some sample holds 7: {samples:?}"
    );

    // The opted-out service kept its very tasks where they were.
    assert_eq!(tasks(&h.status(), "pinned"), pinned_before);

    // The moves are events of the service, started and completed.
    h.wait_for(
        "SERVICE_REBALANCING_COMPLETED",
        Duration::from_secs(30),
        |h| {
            let (_, out, _) = h.cli(&["events", "--service", "app"]);
            out.contains("SERVICE_REBALANCING_COMPLETED")
        },
    );
    let (code, out, err) = h.cli(&["events", "--service", "app"]);
    assert_eq!(code, 0, "{out}{err}");
    let started = out
        .find("SERVICE_REBALANCING_STARTED")
        .unwrap_or_else(|| panic!("no start event:\n{out}"));
    assert!(
        out[started..].contains("SERVICE_REBALANCING_COMPLETED"),
        "{out}"
    );
    assert!(out.contains("a=6 b=0 c=0"), "{out}");
    assert!(out.contains("a=2 b=2 c=2"), "{out}");
    let (_, pinned_events, _) = h.cli(&["events", "--service", "pinned"]);
    assert!(!pinned_events.contains("REBALANCING"), "{pinned_events}");
    let s = h.status();
    let app = s["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "app")
        .unwrap();
    let kinds: Vec<&str> = app["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"SERVICE_REBALANCING_STARTED")
            && kinds.contains(&"SERVICE_REBALANCING_COMPLETED"),
        "{kinds:?}"
    );

    // A move is the controller's doing, not the source's: the plan is
    // empty, and a whole pass later nothing else moved.
    let (code, out, err) = h.cli(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 0, "plan not empty:\n{out}\n{err}");
    let settled = tasks(&h.status(), "app");
    h.sync_and_wait();
    assert_eq!(tasks(&h.status(), "app"), settled);
    assert_eq!(h.running().len(), 9, "{:?}", h.running());
}
