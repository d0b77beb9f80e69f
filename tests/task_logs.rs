//! `reconcile logs` against a real Docker engine: a service's tasks and a
//! task by prefix with --tail, --since and --timestamps, following across a
//! task replacement until SIGINT, and the sentence for a container whose
//! log driver cannot be read; then the same through a controller and two
//! agents, with a secret masked on the nodes. Needs a running daemon and
//! the local `busybox:stable` image (scripts/docker-setup.sh provides
//! both).

#[path = "common/controller.rs"]
mod controller;
#[path = "common/docker.rs"]
mod docker;
#[path = "common/prereq.rs"]
mod prereq;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use docker::{Source, SERIAL};

const CLUSTER: &str =
    "apiVersion: reconcile/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec: {}\n";

/// A service whose tasks each print `start` on stderr, then (a second
/// later, as the engine reads the two pipes apart) `line-1`..`line-20` and
/// `done` on stdout, then keep running; `log` is extra task definition
/// YAML for the container (a log configuration).
fn talker(name: &str, count: u32, log: &str) -> String {
    format!(
        "apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {{name: {name}}}
spec:
  memory: 32
  containerDefinitions:
    - name: main
      image: busybox:stable
      command: [sh, -c, 'echo start >&2; sleep 1; for i in $(seq 1 20); do echo line-$i; done; echo done; exec sleep 3600']
      stopTimeout: 1
{log}---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {{name: {name}}}
spec:
  cluster: t
  taskDefinition: {name}
  desiredCount: {count}
  deploymentConfiguration: {{minimumHealthyPercent: 0, maximumPercent: 200}}
"
    )
}

fn logs(s: &Source, args: &[&str]) -> (i32, String, String) {
    let src = s.path().display().to_string();
    let mut all = vec!["logs"];
    all.extend_from_slice(args);
    all.push(&src);
    let out = s.run(&all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The ids of a service's running tasks.
fn task_ids(s: &Source, service: &str) -> Vec<String> {
    let st = s.status();
    st["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["name"] == service)
        .flat_map(|x| x["tasks"].as_array().unwrap().clone())
        .filter(|t| t["lastStatus"] == "RUNNING")
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

/// Wait until every task has written its last line.
fn wait_for_done(s: &Source, service: &str, tasks: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, out, _) = logs(s, &[service]);
        if out.lines().filter(|l| l.ends_with("| done")).count() == tasks {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "tasks never wrote `done`:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn service_and_task_logs_with_tail_since_and_timestamps() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Source::new(&[("c.yaml", CLUSTER), ("talk.yaml", &talker("talk", 2, ""))]);
    s.apply();
    let ids = task_ids(&s, "talk");
    assert_eq!(ids.len(), 2);
    wait_for_done(&s, "talk", 2);

    // Every task's lines, each under its own aligned prefix.
    let (code, out, err) = logs(&s, &["talk"]);
    assert_eq!(code, 0, "{err}");
    for id in &ids {
        let head = format!("talk.{}/main | ", &id[..8]);
        let mine: Vec<&str> = out.lines().filter(|l| l.starts_with(&head)).collect();
        assert_eq!(mine.len(), 22, "{out}");
        assert!(mine.contains(&format!("{head}start").as_str()), "{out}");
        assert!(mine.contains(&format!("{head}line-1").as_str()), "{out}");
    }

    // --tail N: exactly the last N lines of each task.
    let (code, out, _) = logs(&s, &["talk", "--tail", "2"]);
    assert_eq!(code, 0);
    for id in &ids {
        let head = format!("talk.{}/main | ", &id[..8]);
        let mine: Vec<&str> = out.lines().filter(|l| l.starts_with(&head)).collect();
        assert_eq!(
            mine,
            [format!("{head}line-20"), format!("{head}done")],
            "{out}"
        );
    }

    // A task by its 8-character prefix, with the engine's timestamps.
    let (code, out, err) = logs(&s, &[&ids[0][..8], "--tail", "1", "--timestamps"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let rest = lines[0]
        .strip_prefix(&format!("talk.{}/main | ", &ids[0][..8]))
        .unwrap();
    let (stamp, text) = rest.split_once(' ').unwrap();
    assert_eq!(text, "done");
    assert!(
        stamp.len() > 20 && stamp.starts_with("20") && stamp.ends_with('Z'),
        "{stamp}"
    );

    // --since: an hour back includes everything; a time after the last
    // line excludes every earlier line.
    let (_, out, _) = logs(&s, &["talk", "--since", "1h"]);
    assert_eq!(out.lines().count(), 44, "{out}");
    let later = reconcile::clock::rfc3339(reconcile::clock::unix_now() + 2);
    let (code, out, err) = logs(&s, &["talk", "--since", &later]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");

    // Wrong names are said clearly.
    let (code, _, err) = logs(&s, &["tlak"]);
    assert_eq!(code, 2);
    assert!(err.contains("did you mean `talk`"), "{err}");
    let (code, _, err) = logs(&s, &["talk", "--container", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("containers are main"), "{err}");
    let (code, _, err) = logs(&s, &[&ids[0][..4]]);
    assert_eq!(code, 2);
    assert!(err.contains("at least 8 characters"), "{err}");
    let (code, _, err) = logs(&s, &["talk", "--since", "yesterday"]);
    assert_eq!(code, 2);
    assert!(err.contains("--since `yesterday`"), "{err}");
}

#[test]
fn a_log_driver_without_reading_is_named() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let log = "      logConfiguration: {logDriver: none}\n";
    let s = Source::new(&[
        ("c.yaml", CLUSTER),
        ("quiet.yaml", &talker("quiet", 1, log)),
    ]);
    s.apply();
    let id = &task_ids(&s, "quiet")[0];
    let (code, out, err) = logs(&s, &["quiet"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains(&format!(
            "task {id} container main: its log driver `none` does not support reading logs"
        )),
        "{err}"
    );
}

#[test]
fn follow_picks_up_a_replacement_task_and_ends_on_sigint() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Source::new(&[("c.yaml", CLUSTER), ("talk.yaml", &talker("talk", 1, ""))]);
    s.apply();
    let first = task_ids(&s, "talk");
    let src = s.path().display().to_string();
    let mut child = s
        .cmd(&["logs", "talk", &src, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if line == what {
                return;
            }
        }
        panic!("`{what}` never came");
    };
    wait_for(&format!("talk.{}/main | done", &first[0][..8]));

    // The task's container is killed; the next apply replaces the task.
    let killed = Command::new("docker")
        .args(["kill", &s.running("talk")[0]])
        .output()
        .unwrap();
    assert!(killed.status.success());
    s.apply();
    let second = task_ids(&s, "talk");
    assert_eq!(second.len(), 1);
    assert_ne!(second, first);
    wait_for(&format!("talk.{}/main | line-1", &second[0][..8]));
    wait_for(&format!("talk.{}/main | done", &second[0][..8]));

    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// A secret the fleet's tasks print: no output of `logs` may hold it.
const SECRET: &str = "logged-secret-never-shown-7c2e";

/// Lines of a running `logs --follow`, read on a thread of their own.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The ids of the service's tasks the controller reports RUNNING.
fn fleet_tasks(h: &controller::Harness<()>) -> Vec<String> {
    h.status()["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["tasks"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["lastStatus"] == "RUNNING")
        .map(|t| t["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn fleet_logs_follow_every_task_across_a_replacement_with_secrets_masked() {
    if !prereq::satisfied(prereq::docker()) {
        return;
    }
    let mut h: controller::Harness<()> = controller::Harness::create(
        format!("lg{}", std::process::id()),
        [127, 0, 0, 1].into(),
        |_| (),
    );
    let src = h.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let cluster = h.cluster.clone();
    std::fs::write(
        src.join("app.yaml"),
        format!(
            "apiVersion: reconcile/v1alpha1
kind: Cluster
metadata: {{name: {cluster}}}
spec: {{}}
---
apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {{name: talk}}
spec:
  networkMode: none
  containerDefinitions:
    - name: app
      image: busybox:stable
      command: [sh, -c, 'i=0; while true; do i=$((i+1)); echo \"$HOSTNAME line-$i secret=$S\"; sleep 0.2; done']
      memory: 32
      stopTimeout: 1
      secrets:
        - {{name: S, valueFrom: db}}
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {{name: talk}}
spec:
  cluster: {cluster}
  taskDefinition: talk
  desiredCount: 2
  placementConstraints:
    - {{type: distinctInstance}}
"
        ),
    )
    .unwrap();
    h.start_controller(controller::ControllerArgs {
        source: vec![src.into()],
        interval: 2,
        node_timeout: 10,
        env: Vec::new(),
    });
    let mut set = Command::new(controller::bin())
        .args(["secret", "set", "db", "--controller", &h.url()])
        .env("RECONCILE_API_TOKEN", controller::API)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    set.stdin
        .take()
        .unwrap()
        .write_all(format!("{SECRET}\n").as_bytes())
        .unwrap();
    assert!(set.wait_with_output().unwrap().status.success());
    for name in ["n1", "n2"] {
        let agent = h.spawn_agent(Command::new(controller::bin()), name, &[]);
        h.agents.push(Some(agent));
    }
    h.wait_for("two running tasks", Duration::from_secs(90), |h| {
        fleet_tasks(h).len() == 2
    });
    let first = fleet_tasks(&h);

    let mut follow = Command::new(controller::bin())
        .args(["logs", "talk", "--follow", "--controller", &h.url()])
        .env("RECONCILE_API_TOKEN", controller::API)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut follow);
    let mut seen: Vec<String> = Vec::new();
    // Waits for a line of task `id` numbered `min` or later.
    let mut wait_for_task = |id: &str, min: u64| {
        let head = format!("talk.{}/app | ", &id[..8]);
        let numbered = |l: &str| -> u64 {
            l.split_once(" line-")
                .and_then(|(_, r)| r.split(' ').next()?.parse().ok())
                .unwrap_or(0)
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if seen
                .iter()
                .any(|l| l.starts_with(&head) && numbered(l) >= min)
            {
                return;
            }
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => seen.push(line),
                Err(_) => panic!("no line of task {id}; seen:\n{}", seen.join("\n")),
            }
        }
    };
    for id in &first {
        wait_for_task(id, 1);
    }

    // One task's container is killed; its replacement's lines appear.
    let victim = controller::docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=reconcile.io/task={}", first[0]),
    ]);
    controller::docker(&["kill", victim.trim()]);
    h.wait_for("a replacement task", Duration::from_secs(90), |h| {
        let now = fleet_tasks(h);
        now.len() == 2 && now.iter().any(|t| !first.contains(t))
    });
    let replacement = fleet_tasks(&h)
        .into_iter()
        .find(|t| !first.contains(t))
        .unwrap();
    // Three lines at least, so `--tail 3` below has three to give.
    wait_for_task(&replacement, 3);

    let sent = Command::new("kill")
        .args(["-INT", &follow.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = follow.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let masked = seen.iter().filter(|l| l.ends_with("secret=***")).count();
    assert!(masked > 0, "{}", seen.join("\n"));
    assert!(!seen.iter().any(|l| l.contains(SECRET)));

    // --tail N: exactly the last N lines of each task.
    let tasks = fleet_tasks(&h);
    let (code, out, err) = h.cli(&["logs", "talk", "--tail", "3"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(SECRET));
    for id in &tasks {
        let head = format!("talk.{}/app | ", &id[..8]);
        assert_eq!(
            out.lines().filter(|l| l.starts_with(&head)).count(),
            3,
            "{out}"
        );
    }

    // --since: no line written before the time given.
    let since = reconcile::clock::unix_now();
    let stamp = reconcile::clock::rfc3339(since);
    let (code, out, err) = h.cli(&["logs", "talk", "--since", &stamp, "--timestamps"]);
    assert_eq!(code, 0, "{err}");
    for l in out.lines() {
        let (_, rest) = l.split_once(" | ").unwrap();
        let t = &rest[..19];
        assert!(t >= &stamp[..19], "{l} is before {stamp}");
        assert!(!rest.contains(" line-1 "), "{l}");
    }
    // A task by its prefix, through the controller too.
    let (code, out, err) = h.cli(&["logs", &tasks[0][..8], "--tail", "1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    let (code, _, err) = h.cli(&["logs", "tlak"]);
    assert_eq!(code, 2);
    assert!(err.contains("did you mean `talk`"), "{err}");
}
