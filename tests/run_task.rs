//! Tasks that run to completion on the local engine: `run-task`, `tasks`
//! and `stop-task` against real Docker, through the binary. The fleet
//! side, and scheduled runs, are in `fleet.rs`.

#[path = "common/docker.rs"]
mod docker;

use std::process::Command;
use std::time::{Duration, Instant};

use docker::{Source, SERIAL};
use serde_json::Value;

const MANIFESTS: &str = r#"apiVersion: reconcile/v1alpha1
kind: Cluster
metadata: {name: batch}
spec: {}
---
apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {name: job}
spec:
  containerDefinitions:
    - name: job
      image: busybox:stable
      memory: 16
      command: ["sh", "-c", "echo first; echo second; echo last words; exit 3"]
---
apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {name: server}
spec:
  networkMode: bridge
  containerDefinitions:
    - name: server
      image: busybox:stable
      memory: 16
      stopTimeout: 2
      command: ["sh", "-c", "trap 'exit 143' TERM; while true; do sleep 1; done"]
      portMappings:
        - {containerPort: 80, hostPort: 0}
---
apiVersion: reconcile/v1alpha1
kind: ScheduledTask
metadata: {name: nightly}
spec:
  cluster: batch
  taskDefinition: job
  schedule: cron(0 3 * * ? *)
"#;

fn records(src: &Source, args: &[&str]) -> Vec<Value> {
    let path = src.path().display().to_string();
    let mut a = vec!["tasks", path.as_str(), "--format", "json"];
    a.extend_from_slice(args);
    let (code, text) = src.run_text(&a);
    assert_eq!(code, 0, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn statuses(task: &str) -> String {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=reconcile.io/task={task}"),
            "--format",
            "{{.Status}}",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn run_task_runs_once_reports_its_exit_code_and_stops_on_request() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let src = Source::new(&[("batch.yaml", MANIFESTS)]);
    let path = src.path().display().to_string();
    let s = path.as_str();

    // Nothing registered yet: the error says so.
    let (code, text) = src.run_text(&["run-task", "job", "--cluster", "batch", "--source", s]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("not registered"), "{text}");

    let applied = src.apply();
    assert!(applied.contains("ScheduledTask/nightly"), "{applied}");
    let (code, plan) = src.plan();
    assert_eq!(code, 0, "{plan}");

    // Exit 3: --wait exits 3 with the log tail.
    let (code, text) = src.run_text(&[
        "run-task",
        "job",
        "--cluster",
        "batch",
        "--source",
        s,
        "--wait",
        "--tail",
        "2",
    ]);
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("exit code 3") && text.contains("last words") && !text.contains("    first"),
        "{text}"
    );
    let job = records(&src, &["--family", "job"]);
    assert_eq!(job.len(), 1, "{job:?}");
    let id = job[0]["id"].as_str().unwrap().to_string();
    assert_eq!(job[0]["exits"][0]["exitCode"], 3);
    assert!(job[0]["stoppedAt"].as_i64().is_some(), "{job:?}");

    // Never restarted: an apply and a while later, its one container is
    // still the one that exited.
    src.apply();
    std::thread::sleep(Duration::from_secs(2));
    let st = statuses(&id);
    assert_eq!(st.lines().count(), 1, "{st}");
    assert!(st.starts_with("Exited (3)"), "{st}");

    // Five at once, binpacked on the one node, with an override.
    let (code, text) = src.run_text(&[
        "run-task",
        "server",
        "--cluster",
        "batch",
        "--source",
        s,
        "--count",
        "5",
        "--placement-strategy",
        "binpack:memory",
        "--started-by",
        "load-test",
        "--override",
        "server.env.MODE=fast",
    ]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(text.matches("started task").count(), 5, "{text}");
    let running = records(&src, &["--status", "RUNNING", "--started-by", "load-test"]);
    assert_eq!(running.len(), 5, "{running:?}");
    let env = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!(
                "label=reconcile.io/task={}",
                running[0]["id"].as_str().unwrap()
            ),
        ])
        .output()
        .unwrap();
    let container = String::from_utf8_lossy(&env.stdout).trim().to_string();
    let inspect = Command::new("docker")
        .args(["inspect", "--format", "{{json .Config.Env}}", &container])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&inspect.stdout).contains("MODE=fast"));

    // Unplaceable: no node matches the constraint; nothing starts.
    let (code, text) = src.run_text(&[
        "run-task",
        "server",
        "--cluster",
        "batch",
        "--source",
        s,
        "--placement-constraint",
        "memberOf:attribute:ecs.os-type == windows",
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("1 task(s) not placed") && text.contains("memberOf"),
        "{text}"
    );
    assert_eq!(records(&src, &["--status", "RUNNING"]).len(), 5);

    // stop-task: stopped with the reason given; the container is kept.
    let victim = running[0]["id"].as_str().unwrap().to_string();
    let (code, text) = src.run_text(&[
        "stop-task",
        &victim[..10],
        "--source",
        s,
        "--reason",
        "load test over",
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("STOPPED: load test over"), "{text}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !statuses(&victim).starts_with("Exited (143)") {
        assert!(Instant::now() < deadline, "{}", statuses(&victim));
        std::thread::sleep(Duration::from_millis(200));
    }
    let stopped = records(&src, &["--status", "STOPPED", "--family", "server"]);
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert_eq!(
        (
            &stopped[0]["stopCode"],
            &stopped[0]["stoppedReason"],
            &stopped[0]["exits"][0]["exitCode"]
        ),
        (
            &Value::from("UserInitiated"),
            &Value::from("load test over"),
            &Value::from(143)
        )
    );

    // status shows them apart from services; the plan leaves them alone.
    let (_, status) = src.run_text(&["status", s]);
    assert!(
        status.contains("Scheduled tasks:")
            && status.contains("runs start under a controller")
            && status.contains("Tasks outside services")
            && status.contains("load-test"),
        "{status}"
    );
    let (code, plan) = src.plan();
    assert_eq!(code, 0, "{plan}");
    assert!(plan.contains("outside services"), "{plan}");
}
