//! `reconcile logs` against a real Docker engine: a service's tasks and a
//! task by prefix with --tail, --since and --timestamps, following across a
//! task replacement until SIGINT, and the sentence for a container whose
//! log driver cannot be read. Needs a running daemon and the local
//! `busybox:stable` image (scripts/docker-setup.sh provides both).

#[path = "common/docker.rs"]
mod docker;

use std::io::{BufRead, BufReader};
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
