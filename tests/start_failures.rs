//! Tasks that cannot start on their node until someone acts: a static
//! host port another process holds, an image the engine lacks and cannot
//! pull. `plan` warns of both; `apply` without a breaker fails at once,
//! the cause first, rather than retrying until its step timeout; with
//! `--format json` as JSON lines. Real Docker, through the binary.

#[path = "common/docker.rs"]
mod docker;

use docker::{Source, SERIAL};

fn manifests(image: &str, port: u16) -> String {
    format!(
        "apiVersion: reconcile/v1alpha1
kind: Cluster
metadata: {{name: startfail}}
spec: {{}}
---
apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {{name: web}}
spec:
  networkMode: bridge
  containerDefinitions:
    - name: web
      image: {image}
      command: [sleep, \"3600\"]
      memory: 32
      stopTimeout: 1
      portMappings:
        - {{containerPort: 80, hostPort: {port}}}
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {{name: web}}
spec: {{cluster: startfail, taskDefinition: web, desiredCount: 1}}
"
    )
}

#[test]
fn a_held_host_port_and_an_absent_image_are_warned_of_and_fail_at_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Another process holds the port, on the wildcard address as a server
    // would.
    let holder = std::net::TcpListener::bind(("0.0.0.0", 0)).unwrap();
    let port = holder.local_addr().unwrap().port();
    let s = Source::new(&[("app.yaml", &manifests("busybox:stable", port))]);
    let src = s.path().display().to_string();
    let run = |args: &[&str]| s.run_text(args);

    let held = format!("host port {port}/tcp is already in use");
    let (code, text) = run(&["plan", &src]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!(
            "warning: Service/startfail/web: {held} on this host"
        )),
        "{text}"
    );

    // The step timeout is far away: the failure comes from the start.
    let apply = ["apply", &src, "--auto-approve", "--timeout", "600"];
    let (code, text) = run(&apply);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!("failed to start: {held} on node `local`")),
        "the cause comes first: {text}"
    );
    assert!(!text.contains("did not become healthy within"), "{text}");
    assert!(!text.contains("relaunching"), "no retries: {text}");
    assert!(!text.contains("last log lines"), "nothing ran: {text}");
    // Its containers never ran, so none is kept.
    assert_eq!(s.containers(), Vec::new());
    let st = s.status();
    let reason = st["services"][0]["deployments"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains(&held), "{st}");

    // An image that is nowhere: no registry has it (or none answers).
    let absent = format!("reconcile-test-absent/none:{}", std::process::id());
    s.write("app.yaml", &manifests(&absent, port));
    drop(holder);
    let (code, text) = run(&["plan", &src]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!(
            "warning: Service/startfail/web: image `{absent}` is not on this node and its registry cannot provide it"
        )),
        "{text}"
    );
    assert!(!text.contains(&held), "the port is free now: {text}");
    // As JSON lines, for a pipeline: the plan, progress, then the result.
    let out = s.run(&[
        "apply",
        &src,
        "--auto-approve",
        "--timeout",
        "600",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines[0]["type"], "plan", "{lines:?}");
    assert!(lines[0]["plan"]["resource_changes"].is_array());
    assert!(lines[1..lines.len() - 1]
        .iter()
        .all(|l| l["type"] == "progress" && l["at"].is_i64() && l["message"].is_string()));
    let result = lines.last().unwrap();
    assert_eq!(result["type"], "result");
    assert_eq!(result["outcome"], "failed", "{result}");
    let message = result["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "failed to start: CannotPullContainerError: image `{absent}` is not on this node and could not be pulled"
        )),
        "{result}"
    );
    assert!(
        !message.contains("did not become healthy within"),
        "{result}"
    );

    // Both mended, the same source applies and plans nothing more.
    s.write("app.yaml", &manifests("busybox:stable", port));
    let (code, text) = run(&["plan", &src]);
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("warning:"), "{text}");
    // A task counts as healthy after 11 s running (it has no health
    // check), so the step waits long enough to say it is still waiting,
    // with the time it has waited, as terraform does.
    let (code, text) = run(&[
        "apply",
        &src,
        "--auto-approve",
        "--settle",
        "11",
        "--timeout",
        "90",
    ]);
    assert_eq!(code, 0, "{text}");
    let waiting = text
        .lines()
        .find(|l| l.contains("startfail/web: still waiting for 1 task(s) to become healthy ["))
        .unwrap_or_else(|| panic!("no waiting line: {text}"));
    let secs: u64 = waiting
        .split('[')
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{waiting}"));
    assert!((10..=30).contains(&secs), "{waiting}");
    assert_eq!(s.running("web").len(), 1);
    let (code, text) = s.plan();
    assert_eq!(code, 0, "{text}");

    let out = s.run(&["destroy", &src, "--auto-approve", "--format", "json"]);
    assert!(out.status.success(), "{out:?}");
    let last: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    assert_eq!(last["outcome"], "destroyed", "{out:?}");
    assert_eq!(last["services"], serde_json::json!([]), "{out:?}");
    assert_eq!(s.containers(), Vec::new());
}
