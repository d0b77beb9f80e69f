//! Service auto scaling against real containers: a controller and one
//! agent sampling every second, a service tracking 50% CPU between 1 and 3
//! tasks. Load (switched by a file in a bind-mounted directory) scales it
//! out; a commit that changes only an environment value rolls the new
//! revision at the scaled count; a controller restart keeps that count;
//! without load it scales in after the scale-in cooldown. Every decision
//! is an event with the metric that drove it, and in the service's
//! history. Needs Docker and `busybox:stable` (`scripts/docker-setup.sh`):
//! without them the test fails under CI and is skipped, saying so,
//! elsewhere.

#[path = "common/controller.rs"]
mod controller;
#[path = "common/prereq.rs"]
mod prereq;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use controller::{bin, ControllerArgs, Harness};
use serde_json::Value;

/// A task reserving 64 CPU units that, while `/ctl/burn` exists, spins in
/// short bursts (a fraction of a core, several times what it reserves) and
/// otherwise sleeps.
fn manifests(cluster: &str, ctl: &Path, mode: &str) -> String {
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
  memory: 32
  networkMode: none
  volumes:
    - {{name: ctl, host: {{sourcePath: {ctl}}}}}
  containerDefinitions:
    - name: app
      image: busybox:stable
      cpu: 64
      command: [sh, -c, "while true; do if [ -f /ctl/burn ]; then i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 0.3; else sleep 1; fi; done"]
      stopTimeout: 1
      mountPoints: [{{sourceVolume: ctl, containerPath: /ctl, readOnly: true}}]
      environment:
        - {{name: MODE, value: "{mode}"}}
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {{name: app}}
spec:
  cluster: {cluster}
  taskDefinition: app
  desiredCount: 1
  deploymentConfiguration: {{minimumHealthyPercent: 100, maximumPercent: 200}}
  autoScaling:
    minCapacity: 1
    maxCapacity: 3
    targetTracking:
      - {{predefinedMetric: CPUUtilization, targetValue: 50, scaleOutCooldown: 3, scaleInCooldown: 8}}
"#,
        ctl = ctl.display()
    )
}

fn service(status: &Value) -> Value {
    status["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "app"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Running containers of the service with their MODE value.
fn modes<X>(h: &Harness<X>) -> Vec<String> {
    h.running()
        .iter()
        .map(|(task, _)| {
            let out = controller::docker(&[
                "ps",
                "--filter",
                &format!("label=reconcile.io/task={task}"),
                "--format",
                "{{.ID}}",
            ]);
            let id = out
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            let env = controller::docker(&["inspect", "--format", "{{json .Config.Env}}", &id]);
            env.split('"')
                .find_map(|e| e.strip_prefix("MODE="))
                .unwrap_or("?")
                .to_string()
        })
        .collect()
}

#[test]
fn a_service_scales_out_under_load_keeps_its_count_across_commits_and_restarts_and_scales_in() {
    if !prereq::satisfied(prereq::docker()) {
        return;
    }
    let mut h: Harness<()> = Harness::create(
        format!("as{}", std::process::id()),
        [127, 0, 0, 1].into(),
        |_| (),
    );
    let src = h.dir.path().join("src");
    let ctl = h.dir.path().join("ctl");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&ctl).unwrap();
    std::fs::write(src.join("app.yaml"), manifests(&h.cluster, &ctl, "one")).unwrap();
    let args = ControllerArgs {
        source: vec![src.clone().into()],
        interval: 2,
        node_timeout: 30,
        env: Vec::new(),
    };
    h.start_controller(args);
    let agent = h.spawn_agent(
        Command::new(bin()),
        "node0",
        &["--stats-interval".into(), "1".into()],
    );
    h.agents.push(Some(agent));
    let long = Duration::from_secs(120);
    h.wait_for("one task with a CPU sample", long, |h| {
        let s = service(&h.status());
        h.running().len() == 1 && s["cpuUtilization"].is_number()
    });
    // Idle at the minimum: nothing to scale.
    let s = service(&h.status());
    assert_eq!(s["desiredCount"], 1, "{s:#}");
    assert_eq!(s["autoScaling"]["minCapacity"], 1, "{s:#}");
    assert!(s["cpuUtilization"].as_f64().unwrap() < 50.0, "{s:#}");

    // Load: out to the maximum (one metric period, the cooldown, task
    // starts), never beyond it.
    std::fs::write(ctl.join("burn"), "").unwrap();
    h.wait_for("scale-out to 3 running tasks", long, |h| {
        h.running().len() == 3 && service(&h.status())["desiredCount"] == 3
    });
    let (code, events, err) = h.cli(&["events", "--service", "app"]);
    assert_eq!(code, 0, "{err}");
    let out_line = events
        .lines()
        .find(|l| l.contains("auto scaling out from 1 to"))
        .unwrap_or_else(|| panic!("no scale-out event: {events}"));
    assert!(
        out_line.contains("CPUUtilization") && out_line.contains("(target 50)"),
        "the event names the metric that drove it: {out_line}"
    );
    // The plan shows no change for the scaled count, and says why it
    // differs from the source.
    let (code, plan, err) = h.cli(&["plan"]);
    assert_eq!(code, 0, "{plan}{err}");
    assert!(plan.contains("No changes"), "{plan}");
    assert!(
        plan.contains(&format!(
            "Service/{}/app: desired 3, managed by auto scaling (source says 1)",
            h.cluster
        )),
        "{plan}"
    );

    // A commit changing only an environment value: the new revision rolls
    // at the scaled count.
    std::fs::write(src.join("app.yaml"), manifests(&h.cluster, &ctl, "two")).unwrap();
    h.wait_for("revision 2 at 3 tasks", long, |h| {
        let s = service(&h.status());
        s["revision"] == 2 && s["desiredCount"] == 3 && modes(h) == ["two", "two", "two"]
    });

    // A restart keeps the count: the same three containers run on.
    let before = h.started_at();
    h.kill_controller();
    h.restart_controller();
    h.sync_and_wait();
    h.sync_and_wait();
    assert_eq!(service(&h.status())["desiredCount"], 3);
    assert_eq!(h.started_at(), before, "a restart changed what runs");

    // Load removed: in to the minimum after the scale-in cooldown.
    std::fs::remove_file(ctl.join("burn")).unwrap();
    h.wait_for("scale-in to 1 running task", long, |h| {
        h.running().len() == 1 && service(&h.status())["desiredCount"] == 1
    });
    let (_, events, _) = h.cli(&["events", "--service", "app"]);
    assert!(
        events
            .lines()
            .any(|l| l.contains("auto scaling in from 3 to 1") && l.contains("CPUUtilization")),
        "{events}"
    );
    // Never outside [1, 3]: every decision recorded stays inside.
    let (code, history, err) = h.cli(&["history", "app", "--format", "json"]);
    assert_eq!(code, 0, "{history}{err}");
    let history: Value = serde_json::from_str(&history).unwrap();
    let scaling = history["scaling"].as_array().cloned().unwrap_or_default();
    assert!(scaling.len() >= 2, "{history:#}");
    for a in &scaling {
        let to = a["to"].as_u64().unwrap();
        assert!((1..=3).contains(&to), "{a}");
        assert!(a["cause"].as_str().unwrap().contains("CPUUtilization"));
    }
    assert_eq!(scaling.last().unwrap()["direction"], "in");
    let (_, text, _) = h.cli(&["status"]);
    assert!(
        text.contains("auto scaling 1-3 tasks; last: ")
            && text.contains(" in 3 -> 1: CPUUtilization"),
        "{text}"
    );
    // The source still says 1 and nothing is left to do.
    let (_, plan, _) = h.cli(&["plan"]);
    assert!(plan.contains("No changes"), "{plan}");
    assert!(plan.contains("desired 1, managed by auto scaling (source says 1)"));
}
