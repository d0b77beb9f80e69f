//! `reconcile events`: a controller's event log streamed as a rollout
//! happens (`--follow`), and a standalone source's events read from its
//! store. Needs Docker and `busybox:stable` (`scripts/docker-setup.sh`):
//! without them the tests fail under CI and are skipped, saying so,
//! elsewhere.

#[path = "common/controller.rs"]
mod controller;
#[path = "common/prereq.rs"]
mod prereq;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use controller::{bin, docker, outcome, ControllerArgs, Harness, API};
use serde_json::Value;

/// A service `app` whose container turns healthy about five seconds after
/// it starts (the first health check), so a rollout's start of a task and
/// its steady state are seconds apart.
fn manifests(cluster: &str, mode: &str) -> String {
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
      command: [sh, -c, "touch /tmp/ok; exec sleep 3600"]
      memory: 32
      stopTimeout: 1
      healthCheck: {{command: [CMD-SHELL, "test -f /tmp/ok"], interval: 5, timeout: 2, retries: 1}}
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
"#
    )
}

/// Sends SIGINT to a child, as Ctrl-C in its terminal would.
fn interrupt(child: &std::process::Child) {
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(rc, 0, "SIGINT to the follower");
}

#[test]
fn events_follow_shows_a_rollout_as_it_happens() {
    if !prereq::satisfied(prereq::docker()) {
        return;
    }
    let mut h: Harness<()> = Harness::create(
        format!("ev{}", std::process::id()),
        [127, 0, 0, 1].into(),
        |_| (),
    );
    let src = h.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("app.yaml"), manifests(&h.cluster, "one")).unwrap();
    // A long interval: the watcher reconciles each change of the source.
    h.start_controller(ControllerArgs {
        source: vec![src.clone().into()],
        interval: 300,
        node_timeout: 10,
        env: Vec::new(),
    });
    let agent = h.spawn_agent(Command::new(bin()), "node0", &[]);
    h.agents.push(Some(agent));
    let key = format!("{}/app", h.cluster);
    h.wait_for(
        "the first deployment's steady state",
        Duration::from_secs(90),
        |h| {
            let (_, out, _) = h.cli(&["events", "--service", "app"]);
            out.contains("has reached a steady state")
        },
    );

    // Without --follow: the backlog, as text, then the command ends.
    let (code, out, err) = h.cli(&["events", "--since", "1h"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("{key}: started task")), "{out}");
    assert!(
        out.contains("node node0"),
        "node events are in the whole log: {out}"
    );
    let (code, _, err) = h.cli(&["events", "--since", "yesterday"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--since") && err.contains("neither a duration"),
        "{err}"
    );
    // A time to come leaves nothing.
    let (code, out, _) = h.cli(&["events", "--since", "4102444800"]);
    assert_eq!((code, out.as_str()), (0, ""));

    // Follow the service, as JSON lines, and roll it out.
    let mut follower = Command::new(bin())
        .args(["events", "--follow", "--service", "app", "--format", "json"])
        .args(["--controller", &h.url(), "--plain-http"])
        .env("RECONCILE_API_TOKEN", API)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<(Instant, Value)>();
    let stdout = follower.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON line: {line}: {e}"));
            if tx.send((Instant::now(), v)).is_err() {
                break;
            }
        }
    });
    let mut seen: Vec<(Instant, Value)> = Vec::new();
    let next = |what: &str, ok: &dyn Fn(&str) -> bool, seen: &mut Vec<(Instant, Value)>| {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (at, v) = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no event {what}; seen: {:#?}\ncontroller log:\n{}",
                    seen.iter()
                        .map(|(_, v)| v["message"].clone())
                        .collect::<Vec<_>>(),
                    h.tail("controller")
                )
            });
            seen.push((at, v.clone()));
            let m = v["message"].as_str().unwrap_or_default().to_string();
            if ok(&m) {
                return at;
            }
        }
    };
    // The backlog comes first: the first deployment's steady state.
    next("of the backlog", &|m| m.contains("steady state"), &mut seen);
    std::fs::write(src.join("app.yaml"), manifests(&h.cluster, "two")).unwrap();
    let started = next(
        "starting a task of revision 2",
        &|m| m.contains("started task") && m.contains("revision 2"),
        &mut seen,
    );
    let steady = next(
        "of the rollout's steady state",
        &|m| m.contains("steady state"),
        &mut seen,
    );
    // Streamed as they happened: the new task's start arrived while it was
    // still waiting for its first health check (5 s), not with the end.
    assert!(
        steady.duration_since(started) >= Duration::from_secs(2),
        "the start and the steady state arrived {:?} apart",
        steady.duration_since(started)
    );
    next(
        "stopping the old task",
        &|m| m.contains("stopped task"),
        &mut seen,
    );
    let mut last = None;
    for (_, v) in &seen {
        assert_eq!(v["service"], key.as_str(), "only the service's events: {v}");
        let seq = v["seq"].as_u64().expect("a seq");
        assert!(
            last.is_none_or(|l| seq > l),
            "in order, each once: {seen:?}"
        );
        last = Some(seq);
        assert!(v["at"].as_i64().is_some());
    }

    // Ctrl-C ends the follow cleanly.
    interrupt(&follower);
    let out = follower.wait_with_output().unwrap();
    reader.join().unwrap();
    assert!(out.status.success(), "exit status {:?}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn standalone_events_come_from_the_store() {
    if !prereq::satisfied(prereq::docker()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = format!("evs{}", std::process::id());
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("app.yaml"), manifests(&cluster, "one")).unwrap();
    let state = dir.path().join("state");
    let run_in = |tz: &str, args: &[&str]| {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .arg("--state-dir")
            .arg(&state)
            .env_remove("RECONCILE_CONTROLLER")
            .env("TZ", tz)
            .stdin(Stdio::null());
        outcome(cmd.output().unwrap())
    };
    let run = |args: &[&str]| run_in("UTC", args);
    let s = src.to_str().unwrap();
    let cleanup = || {
        let filter = format!("label=reconcile.io/cluster={cluster}");
        let ids = docker(&["ps", "-aq", "--filter", &filter]);
        if !ids.trim().is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.split_whitespace());
            docker(&args);
        }
    };
    let (code, out, err) = run(&["apply", s, "--auto-approve", "--settle", "60"]);
    if code != 0 {
        cleanup();
        panic!("apply: {out}{err}");
    }
    let (code, out, err) = run(&["events", s, "--service", "app"]);
    let (bad, _, bad_err) = run(&["events", s, "--service", "ap"]);
    let (json_code, json, _) = run(&["events", s, "--format", "json"]);
    // TZ is honoured, as a POSIX rule or a zone name, with the offset said.
    let (_, posix, _) = run_in("IST-5:30", &["events", s]);
    let (_, named, _) = run_in("Asia/Kolkata", &["events", s]);
    let (_, history, _) = run_in("IST-5:30", &["history", "app", s]);
    run(&["destroy", s, "--auto-approve"]);
    cleanup();
    assert_eq!(code, 0, "{out}{err}");
    let key = format!("{cluster}/app");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("{key}: deployment 1 (revision 1) started"))),
        "{out}"
    );
    let steady = lines.iter().position(|l| l.contains("steady state"));
    let started = lines.iter().position(|l| l.contains("started"));
    assert!(started < steady && steady.is_some(), "oldest first: {out}");
    assert_ne!(bad, 0);
    assert!(
        bad_err.contains("app"),
        "an unknown service names what there is: {bad_err}"
    );
    assert_eq!(json_code, 0);
    for l in json.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["service"], key.as_str());
        // JSON stays UTC whatever the zone.
        assert!(v["at"].is_i64(), "{v}");
    }
    // Each line: the local time with its offset and its age.
    let stamped = |text: &str, end: &str| {
        text.lines().filter(|l| !l.trim().is_empty()).all(|l| {
            l.split_once(" (")
                .is_some_and(|(t, rest)| t.ends_with(end) && rest.contains(" ago)"))
        })
    };
    assert!(stamped(&out, "Z"), "{out}");
    assert!(stamped(&posix, "+05:30"), "{posix}");
    assert!(stamped(&named, "+05:30"), "{named}");
    assert!(history.contains("+05:30 ("), "{history}");
}
