//! Standalone mode on a real Docker engine: `reconcile plan|apply|status|
//! destroy` as a user runs them. Needs a running daemon and the local
//! `busybox:stable` image (scripts/docker-setup.sh provides both); a test
//! fails, rather than skips, without them.
//!
//! Every test works on a source of its own in a temp dir, so its
//! containers carry their own `reconcile.io/source` label; a guard destroys
//! them (and force-removes anything left) even when the test fails.

#[path = "common/docker.rs"]
mod docker;
#[path = "common/load.rs"]
mod load;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use docker::{Source, SERIAL};
use serde_json::Value;

fn cluster() -> &'static str {
    "apiVersion: reconcile/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec: {}\n"
}

fn sleeper(name: &str, count: u32, env: &str) -> String {
    format!(
        "apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {{name: {name}}}
spec:
  memory: 32
  containerDefinitions:
    - name: main
      image: busybox:stable
      command: [sleep, \"3600\"]
      environment: [{{name: V, value: \"{env}\"}}]
      stopTimeout: 1
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {{name: {name}}}
spec:
  cluster: t
  taskDefinition: {name}
  desiredCount: {count}
  deploymentConfiguration: {{minimumHealthyPercent: 50, maximumPercent: 200}}
"
    )
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/manifests")
}

#[test]
fn examples_apply_then_plan_is_empty_and_ports_are_reported() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let files: Vec<(String, String)> = std::fs::read_dir(examples())
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let s = Source::new(&refs);
    let out = s.apply();
    assert!(out.contains("Apply complete"), "{out}");
    let (code, text) = s.plan();
    assert_eq!(code, 0, "a second plan shows no changes:\n{text}");
    assert!(text.contains("No changes"), "{text}");

    // Dynamic host ports are reported, one per mapping as ECS does, and
    // serve on that port in every address family the host has: Docker
    // left to pick would give IPv4 and IPv6 different ports.
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let st = s.status();
    let web = st["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "web")
        .unwrap();
    let tasks = web["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    for t in tasks {
        assert_eq!(t["lastStatus"], "RUNNING");
        assert_eq!(t["health"], "HEALTHY");
        let ports = t["ports"].as_array().unwrap();
        assert_eq!(ports.len(), 1, "one binding for one mapping: {ports:?}");
        let port = ports[0]["hostPort"].as_u64().unwrap();
        assert!(port > 1024, "dynamic port {port}");
        let body = http_get("127.0.0.1", port as u16);
        assert!(body.contains("hello from"), "IPv4 127.0.0.1:{port}: {body}");
        if ipv6 {
            let body = http_get("::1", port as u16);
            assert!(body.contains("hello from"), "IPv6 [::1]:{port}: {body}");
        } else {
            eprintln!("this host has no IPv6 loopback: only IPv4 was checked");
        }
    }
    // The worker reached its sidecar by container name.
    let worker = s.running("worker");
    assert_eq!(worker.len(), 2, "{worker:?}");
}

fn http_get(host: &str, port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect((host, port))
        .unwrap_or_else(|e| panic!("connecting to {host} port {port}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body
}

/// The example worker (examples/manifests/worker.yaml) prints the status
/// page its sidecar serves, fetched by the sidecar's container name: its
/// log holds that page only if a request to `queue` succeeded.
#[test]
fn the_example_worker_reaches_its_sidecar_by_name() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let files = ["cluster.yaml", "worker.yaml"]
        .map(|n| (n, std::fs::read_to_string(examples().join(n)).unwrap()));
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let s = Source::new(&refs);
    s.apply();
    let names = s.running("worker");
    assert_eq!(names.len(), 2, "{names:?}");
    let worker = names.iter().find(|n| n.ends_with("-worker")).unwrap();
    let log = || {
        let out = Command::new("docker")
            .args(["logs", worker])
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // The worker polls every 5 s, from the moment the sidecar is healthy.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log().lines().any(|l| l.trim() == "ready") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    let text = log();
    assert!(
        text.lines().any(|l| l.trim() == "ready"),
        "the worker never got the sidecar's status page from http://queue:9000:\n{text}"
    );
}

#[test]
fn drift_is_repaired_exactly() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Source::new(&[
        ("c.yaml", cluster()),
        ("a.yaml", &sleeper("a", 3, "1")),
        ("b.yaml", &sleeper("b", 1, "1")),
    ]);
    s.apply();
    let before = s.running("a");
    assert_eq!(before.len(), 3);
    // One removed by hand, one stopped by hand.
    Command::new("docker")
        .args(["rm", "-f", &before[0]])
        .output()
        .unwrap();
    Command::new("docker")
        .args(["stop", "-t", "1", &before[1]])
        .output()
        .unwrap();
    let (code, text) = s.plan();
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("1 of 3 tasks running; replacing 2"), "{text}");
    // The removed one is named for what can be known about it.
    assert!(
        text.contains("1 task not in the runtime: removed, or never started"),
        "{text}"
    );
    assert!(
        !text.contains("Service t/b"),
        "the other service is untouched:\n{text}"
    );
    let b_before = s.running("b");
    s.apply();
    let after = s.running("a");
    assert_eq!(after.len(), 3);
    assert!(
        after.contains(&before[2]),
        "the healthy task was not touched"
    );
    assert_eq!(s.running("b"), b_before);
    assert_eq!(
        s.containers().len(),
        4,
        "the stopped container was cleaned up: {:?}",
        s.containers()
    );
    assert_eq!(s.plan().0, 0);
}

#[test]
fn env_change_replaces_exactly_that_service_and_scaling_works() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Source::new(&[
        ("c.yaml", cluster()),
        ("a.yaml", &sleeper("a", 3, "1")),
        ("b.yaml", &sleeper("b", 2, "1")),
    ]);
    s.apply();
    let b_before = s.running("b");
    s.write("a.yaml", &sleeper("a", 3, "2"));
    let (_, text) = s.plan();
    assert!(
        text.contains("new deployment: task definition a:1 -> a:2"),
        "{text}"
    );
    s.apply();
    let st = s.status();
    let a = st["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "a")
        .unwrap();
    assert_eq!(a["taskDefinition"], "a:2");
    assert!(a["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["revision"] == 2));
    assert_eq!(s.running("b"), b_before, "service b untouched");

    // Scale 3 -> 5 -> 1.
    for n in [5u32, 1] {
        s.write("a.yaml", &sleeper("a", n, "2"));
        s.apply();
        assert_eq!(s.running("a").len(), n as usize);
        assert_eq!(s.plan().0, 0);
    }
    // Reverting the spec reuses revision 1 rather than registering a third.
    s.write("a.yaml", &sleeper("a", 1, "1"));
    let (_, text) = s.plan();
    assert!(text.contains("a:2 -> a:1"), "{text}");
}

#[test]
fn essential_exit_stops_the_task_and_is_reported() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let td = "apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {name: crash}
spec:
  memory: 64
  containerDefinitions:
    - {name: main, image: busybox:stable, command: [sh, -c, 'sleep 3; echo going down; exit 3'], stopTimeout: 1}
    - {name: side, image: busybox:stable, essential: false, command: [sleep, '3600'], stopTimeout: 1}
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {name: crash}
spec: {cluster: t, taskDefinition: crash, desiredCount: 1, deploymentConfiguration: {minimumHealthyPercent: 0, maximumPercent: 100}}
";
    let s = Source::new(&[("c.yaml", cluster()), ("crash.yaml", td)]);
    let src = s.path().display().to_string();
    // The task starts; apply waits for it and sees the essential exit. A
    // failed task is relaunched (throttled) until the timeout, and the
    // last failure is what apply reports.
    let out = s.run(&[
        "apply",
        &src,
        "--auto-approve",
        "--settle",
        "5",
        "--timeout",
        "20",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("EssentialContainerExited") && err.contains("exit code 3"),
        "{err}"
    );
    assert!(
        err.contains("going down"),
        "last log lines are shown:\n{err}"
    );
    let st = s.status();
    let t = &st["services"][0]["tasks"][0];
    assert_eq!(t["lastStatus"], "STOPPED");
    assert_eq!(t["stopCode"], "EssentialContainerExited");
}

#[test]
fn depends_on_healthy_orders_the_start() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let td = "apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {name: dep}
spec:
  memory: 64
  containerDefinitions:
    - name: db
      image: busybox:stable
      command: [sh, -c, 'sleep 2; touch /tmp/ready; exec sleep 3600']
      healthCheck: {command: [CMD, test, -f, /tmp/ready], interval: 5, timeout: 2, retries: 3}
      stopTimeout: 1
    - name: app
      image: busybox:stable
      command: [sleep, '3600']
      dependsOn: [{containerName: db, condition: HEALTHY}]
      stopTimeout: 1
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {name: dep}
spec: {cluster: t, taskDefinition: dep, desiredCount: 1}
";
    let s = Source::new(&[("c.yaml", cluster()), ("dep.yaml", td)]);
    s.apply();
    let names = s.running("dep");
    assert_eq!(names.len(), 2);
    let started = |suffix: &str| -> String {
        let n = names.iter().find(|n| n.ends_with(suffix)).unwrap();
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{.State.StartedAt}}", n])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let db = names.iter().find(|n| n.ends_with("-db")).unwrap();
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{range .State.Health.Log}}{{.End}} {{.ExitCode}}\n{{end}}",
            db,
        ])
        .output()
        .unwrap();
    let first_healthy = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.ends_with(" 0"))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .expect("db became healthy");
    let app_started = started("-app");
    // RFC 3339 timestamps of one daemon compare as text.
    assert!(
        app_started > first_healthy,
        "app started {app_started}, db healthy {first_healthy}"
    );
    assert!(app_started > started("-db"));
}

#[test]
fn killed_apply_continues_without_duplicates() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Source::new(&[("c.yaml", cluster()), ("a.yaml", &sleeper("a", 6, "1"))]);
    let src = s.path().display().to_string();
    // Progress lines go to stderr. A long settle period keeps the rollout
    // open after its starts, so the kill cannot come after its end.
    let progress = s.state.path().join("progress.log");
    let mut child = s
        .cmd(&["apply", &src, "--auto-approve", "--settle", "60"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&progress).unwrap())
        .spawn()
        .unwrap();
    // Kill it as soon as the first containers exist.
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.containers().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let said = || std::fs::read_to_string(&progress).unwrap();
    assert!(
        child.try_wait().unwrap().is_none(),
        "the apply ended before it was killed:\n{}",
        said()
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // Killed mid-rollout: the deployment had begun, and neither its tasks'
    // health nor its end was reported.
    let said = said();
    assert!(
        said.contains("deployment 1 (revision 1) in progress"),
        "{said}"
    );
    for end in ["healthy", "completed", "Apply complete"] {
        assert!(!said.contains(end), "killed after `{end}`:\n{said}");
    }
    let out = s.apply();
    eprintln!(
        "{out}\n{:?}",
        s.containers()
            .iter()
            .map(|c| (&c.0, &c.1))
            .collect::<Vec<_>>()
    );
    assert_eq!(s.running("a").len(), 6);
    assert_eq!(
        s.containers().len(),
        6,
        "no duplicates, nothing left over: {:?}",
        s.containers()
    );
    assert_eq!(s.plan().0, 0);
}

#[test]
fn an_apply_killed_after_its_last_start_leaves_no_open_deployment() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Source::new(&[("c.yaml", cluster()), ("a.yaml", &sleeper("a", 2, "1"))]);
    let src = s.path().display().to_string();
    let rollout = |s: &Source| {
        let out = s.run(&["history", "a", &src, "--format", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        h["deployments"][0]["rolloutState"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    // A long settle period holds the apply after both tasks started: it
    // is killed there, before it can call the deployment completed.
    let mut child = s
        .cmd(&["apply", &src, "--auto-approve", "--settle", "120"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.running("a").len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(s.running("a").len(), 2);
    assert_eq!(rollout(&s), "IN_PROGRESS");
    // Nothing is left to change; the next apply (settle 1 s) records the
    // settled rollout as completed.
    std::thread::sleep(Duration::from_secs(1));
    let out = s.apply();
    assert!(out.contains("deployment 1 (revision 1) completed"), "{out}");
    assert_eq!(rollout(&s), "COMPLETED");
    assert_eq!(s.plan().0, 0);
}

#[test]
fn saved_plans_apply_exactly_and_stale_ones_are_refused() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Source::new(&[("c.yaml", cluster()), ("a.yaml", &sleeper("a", 2, "1"))]);
    let src = s.path().display().to_string();
    let plan_file = s.state.path().join("plan.json");
    let pf = plan_file.display().to_string();
    assert_eq!(s.run(&["plan", &src, "--out", &pf]).status.code(), Some(0));
    assert!(s.run(&["apply", &pf]).status.success());
    assert_eq!(s.running("a").len(), 2);

    // The source changes after the plan was saved: the saved plan is what
    // is applied, not the source as it is now.
    s.write("a.yaml", &sleeper("a", 3, "1"));
    assert!(s.run(&["plan", &src, "--out", &pf]).status.success());
    s.write("a.yaml", &sleeper("a", 5, "1"));
    let out = s.run(&["apply", &pf]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(s.running("a").len(), 3, "exactly the saved plan");
    // The source's own change is still to come.
    let (code, text) = s.plan();
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("desiredCount: 3 -> 5"), "{text}");

    // A plan made, then the world moves: refused, naming the service.
    s.write("a.yaml", &sleeper("a", 4, "1"));
    assert!(s.run(&["plan", &src, "--out", &pf]).status.success());
    let before = s.running("a").len();
    let victim = s.running("a")[0].clone();
    Command::new("docker")
        .args(["rm", "-f", &victim])
        .output()
        .unwrap();
    let out = s.run(&["apply", &pf]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("stale") && err.contains("Service/t/a"),
        "{err}"
    );
    assert_eq!(s.running("a").len(), before - 1, "nothing applied");
}

#[test]
fn secrets_reach_the_container_but_never_the_output() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let td = "apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {name: sec}
spec:
  memory: 32
  containerDefinitions:
    - name: main
      image: busybox:stable
      command: [sh, -c, 'test -n \"$DB_PASSWORD\" && exec sleep 3600; exit 9']
      secrets: [{name: DB_PASSWORD, valueFrom: db}]
      stopTimeout: 1
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {name: sec}
spec: {cluster: t, taskDefinition: sec, desiredCount: 1}
";
    let s = Source::new(&[("c.yaml", cluster()), ("sec.yaml", td)]);
    std::fs::create_dir_all(s.path().join(".reconcile/secrets")).unwrap();
    std::fs::write(s.path().join(".reconcile/secrets/db"), "s3cr3t-value\n").unwrap();
    let src = s.path().display().to_string();
    let pf = s.state.path().join("p.json").display().to_string();
    let mut all = String::new();
    for args in [
        vec!["plan", &src, "--out", &pf],
        vec!["plan", &src, "--format", "json"],
    ] {
        let o = s.run(&args);
        all.push_str(&String::from_utf8_lossy(&o.stdout));
        all.push_str(&String::from_utf8_lossy(&o.stderr));
    }
    all.push_str(&s.apply());
    all.push_str(&std::fs::read_to_string(&pf).unwrap());
    all.push_str(&serde_json::to_string(&s.status()).unwrap());
    for f in std::fs::read_dir(s.state.path()).unwrap() {
        all.push_str(&std::fs::read_to_string(f.unwrap().path()).unwrap_or_default());
    }
    let running = s.running("sec");
    assert_eq!(running.len(), 1);
    let env = Command::new("docker")
        .args(["exec", &running[0], "sh", "-c", "echo \"$DB_PASSWORD\""])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&env.stdout).trim(),
        "s3cr3t-value",
        "the container got the value"
    );
    assert!(
        !all.contains("s3cr3t-value"),
        "a secret value leaked:\n{all}"
    );
    // Changing the value rolls the service, shown as a fingerprint change.
    std::fs::write(s.path().join(".reconcile/secrets/db"), "other\n").unwrap();
    let (code, text) = s.plan();
    assert_eq!(code, 2);
    assert!(
        text.contains("secret value changed (db)") && text.contains("hmac:"),
        "{text}"
    );
    assert!(!text.contains("other"));
}

#[test]
fn failed_pull_is_reported_per_task_with_the_daemons_reason() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let td = "apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {name: nope}
spec:
  memory: 32
  containerDefinitions:
    - {name: main, image: 'registry.invalid/nothing/here:1'}
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {name: nope}
spec: {cluster: t, taskDefinition: nope, desiredCount: 1}
";
    let s = Source::new(&[
        ("c.yaml", cluster()),
        ("nope.yaml", td),
        ("a.yaml", &sleeper("a", 1, "1")),
    ]);
    let src = s.path().display().to_string();
    let out = s.run(&[
        "apply",
        &src,
        "--auto-approve",
        "--settle",
        "1",
        "--timeout",
        "20",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Service/t/nope")
            && err.contains("CannotPullContainerError")
            && err.contains("registry.invalid"),
        "{err}"
    );
    // The other service is applied regardless.
    assert_eq!(s.running("a").len(), 1, "{err}");
}

#[test]
fn container_settings_reach_docker() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let td = "apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {name: full}
spec:
  memory: 256
  volumes:
    - {name: scratch}
    - {name: shared, dockerVolumeConfiguration: {scope: shared, autoprovision: true, driver: local, labels: {owner: test}}}
    - {name: hostdir, host: {sourcePath: /tmp}}
  containerDefinitions:
    - name: main
      image: busybox:stable
      cpu: 256
      memory: 128
      memoryReservation: 64
      entryPoint: [/bin/sh, -c]
      command: ['echo started > /data/out; exec sleep 3600']
      workingDirectory: /data
      user: '0'
      environment: [{name: A, value: '1'}]
      portMappings: [{containerPort: 8080, hostPort: 0}, {containerPort: 9090, hostPort: 0, protocol: udp}]
      mountPoints:
        - {sourceVolume: scratch, containerPath: /data}
        - {sourceVolume: shared, containerPath: /shared}
        - {sourceVolume: hostdir, containerPath: /host, readOnly: true}
      ulimits: [{name: nofile, softLimit: 1024, hardLimit: 2048}]
      readonlyRootFilesystem: true
      dockerLabels: {team: web}
      logConfiguration: {logDriver: json-file, options: {max-size: 1m}}
      healthCheck: {command: [CMD, 'true'], interval: 5, timeout: 2, retries: 2}
      stopTimeout: 7
      hostname: fullhost
      extraHosts: [{hostname: db.local, ipAddress: 10.1.2.3}]
      linuxParameters: {initProcessEnabled: true, sharedMemorySize: 32, capabilities: {drop: [NET_RAW]}}
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {name: full}
spec: {cluster: t, taskDefinition: full, desiredCount: 1}
";
    let s = Source::new(&[("c.yaml", cluster()), ("full.yaml", td)]);
    s.apply();
    let name = s.running("full").pop().expect("running");
    let out = Command::new("docker")
        .args(["inspect", &name])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &v[0];
    let hc = &c["HostConfig"];
    assert_eq!(hc["CpuShares"], 256);
    assert_eq!(hc["Memory"], 128 * 1024 * 1024);
    assert_eq!(hc["MemoryReservation"], 64 * 1024 * 1024);
    assert_eq!(hc["ReadonlyRootfs"], true);
    assert_eq!(hc["Ulimits"][0]["Name"], "nofile");
    assert_eq!(hc["Ulimits"][0]["Hard"], 2048);
    assert_eq!(hc["LogConfig"]["Type"], "json-file");
    assert_eq!(hc["LogConfig"]["Config"]["max-size"], "1m");
    assert_eq!(hc["Init"], true);
    assert_eq!(hc["ShmSize"], 32 * 1024 * 1024);
    assert_eq!(hc["CapDrop"][0], "NET_RAW");
    assert_eq!(hc["ExtraHosts"][0], "db.local:10.1.2.3");
    let cfg = &c["Config"];
    assert_eq!(cfg["Entrypoint"][0], "/bin/sh");
    assert_eq!(cfg["WorkingDir"], "/data");
    assert_eq!(cfg["User"], "0");
    assert_eq!(cfg["Hostname"], "fullhost");
    assert_eq!(cfg["StopTimeout"], 7);
    assert_eq!(cfg["Labels"]["team"], "web");
    assert!(cfg["Env"].as_array().unwrap().iter().any(|e| e == "A=1"));
    assert_eq!(cfg["Healthcheck"]["Test"][0], "CMD");
    let mounts = c["Mounts"].as_array().unwrap();
    let by_dest = |d: &str| {
        mounts
            .iter()
            .find(|m| m["Destination"] == d)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_dest("/host")["RW"], false);
    assert_eq!(by_dest("/shared")["Name"], "shared");
    assert_eq!(by_dest("/data")["Type"], "volume");
    let ports = &c["NetworkSettings"]["Ports"];
    assert!(
        ports["8080/tcp"][0]["HostPort"]
            .as_str()
            .unwrap()
            .parse::<u16>()
            .unwrap()
            > 0
    );
    assert!(
        ports["9090/udp"][0]["HostPort"]
            .as_str()
            .unwrap()
            .parse::<u16>()
            .unwrap()
            > 0
    );
    // Task-scoped volume goes with the task; the shared one stays.
    let src = s.path().display().to_string();
    assert!(s.run(&["destroy", &src, "--auto-approve"]).status.success());
    let vols = Command::new("docker")
        .args([
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=reconcile.io/source={}", s.id),
        ])
        .output()
        .unwrap();
    let vols = String::from_utf8_lossy(&vols.stdout);
    assert_eq!(vols.trim(), "shared", "{vols}");
    Command::new("docker")
        .args(["volume", "rm", "shared"])
        .output()
        .unwrap();
}

#[test]
fn plan_json_exit_codes_confirmation_and_mass_delete_guard() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Source::new(&[
        ("c.yaml", cluster()),
        ("a.yaml", &sleeper("a", 1, "1")),
        ("b.yaml", &sleeper("b", 1, "1")),
    ]);
    let src = s.path().display().to_string();

    // JSON plan: versioned, one object, actions per resource.
    let out = s.run(&["plan", &src, "--format", "json"]);
    assert!(out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["format_version"], "1.0");
    let actions: Vec<(String, String)> = doc["resource_changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["address"].as_str().unwrap().to_string(),
                c["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("Service/t/a".into(), "create".into())),
        "{actions:?}"
    );
    assert_eq!(doc["summary"]["add"], 5);
    assert_eq!(s.plan().0, 2, "--detailed-exitcode: changes");

    // No terminal and no --auto-approve: refused, nothing applied.
    let out = s.run(&["apply", &src]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--auto-approve"));
    assert!(s.containers().is_empty());

    let text = s.apply();
    assert!(!text.contains('\x1b'), "no colour when not on a terminal");
    assert_eq!(s.plan().0, 0, "--detailed-exitcode: no changes");

    // Removing both services is more than half of them: needs the flag.
    std::fs::remove_file(s.path().join("a.yaml")).unwrap();
    std::fs::remove_file(s.path().join("b.yaml")).unwrap();
    let (code, text) = s.plan();
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("--allow-mass-delete"), "{text}");
    let out = s.run(&["apply", &src, "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(s.running("a").len(), 1, "nothing was deleted");
    let out = s.run(&["apply", &src, "--auto-approve", "--allow-mass-delete"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.containers().is_empty());
}

#[test]
fn start_timeout_gives_up_and_stops_the_task() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let td = "apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {name: slow}
spec:
  memory: 64
  containerDefinitions:
    - name: db
      image: busybox:stable
      command: [sleep, '3600']
      healthCheck: {command: [CMD, 'false'], interval: 5, timeout: 2, retries: 1}
      stopTimeout: 1
    - name: app
      image: busybox:stable
      command: [sleep, '3600']
      dependsOn: [{containerName: db, condition: HEALTHY}]
      startTimeout: 3
      stopTimeout: 1
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {name: slow}
spec: {cluster: t, taskDefinition: slow, desiredCount: 1}
";
    let s = Source::new(&[("c.yaml", cluster()), ("slow.yaml", td)]);
    let src = s.path().display().to_string();
    let out = s.run(&["apply", &src, "--auto-approve", "--timeout", "20"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("TaskFailedToStart")
            && err.contains("startTimeout 3s")
            && err.contains("`db`"),
        "{err}"
    );
    assert!(
        s.running("slow").is_empty(),
        "nothing of the task keeps running: {:?}",
        s.containers()
    );
}

/// A busybox httpd service of 2 tasks answering `version`, behind a
/// listener on `port`.
fn listened(version: &str, port: u16) -> String {
    format!(
        r#"{cluster}---
apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {{name: web}}
spec:
  containerDefinitions:
    - name: web
      image: busybox:stable
      memory: 32
      stopTimeout: 2
      command:
        - sh
        - -c
        - |
          mkdir -p /www
          echo "$VERSION" > /www/index.html
          exec httpd -f -p 8080 -h /www
      portMappings: [{{containerPort: 8080}}]
      environment: [{{name: VERSION, value: "{version}"}}]
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {{name: web}}
spec:
  cluster: t
  taskDefinition: web
  desiredCount: 2
  deploymentConfiguration: {{minimumHealthyPercent: 100, maximumPercent: 200}}
  loadBalancers:
    - containerName: web
      containerPort: 8080
      listenerPort: {port}
      healthCheck: {{interval: 2, timeout: 1, healthyThresholdCount: 2}}
"#,
        cluster = cluster()
    )
}

/// Standalone listeners are served by the source's traffic container
/// after `apply` exits, and a rolling deployment under load drops no
/// request: new targets are checked healthy before they get traffic, old
/// ones drain before they stop.
#[test]
fn a_listener_is_served_after_apply_and_a_rollout_under_load_drops_no_request() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = Source::new(&[("web.yaml", &listened("v1", port))]);
    s.apply();
    let answers = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let body = std::net::TcpStream::connect(("127.0.0.1", port))
                .map(|_| http_get("127.0.0.1", port))
                .unwrap_or_default();
            if body.contains(want) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    };
    // Apply waited for the new service's targets: it answers at once.
    let body = http_get("127.0.0.1", port);
    assert!(body.contains("v1"), "right after apply: {body}");
    let traffic = format!("reconcile-traffic-{}", s.id);
    let running: Vec<String> = s
        .containers()
        .into_iter()
        .filter(|(n, state, _)| *n == traffic && state == "running")
        .map(|(n, _, _)| n)
        .collect();
    assert_eq!(running, [traffic], "the traffic container runs");
    // Status shows the listener's targets as the traffic container sees them.
    let st = s.status();
    let targets = st["services"][0]["listeners"][0]["targets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(targets.len(), 2, "{st}");
    assert!(targets.iter().all(|t| t["state"] == "HEALTHY"), "{st}");

    let load = load::Load::start(
        s.state.path(),
        "rollout",
        &format!("http://127.0.0.1:{port}/"),
    );
    s.write("web.yaml", &listened("v2", port));
    let out = s.apply();
    let counted = load.stop();
    eprintln!("{}", counted.summary);
    assert!(out.contains("rolling deployment"), "{out}");
    assert!(counted.requests > 0, "{}", counted.summary);
    assert_eq!(counted.failed, 0, "requests failed:\n{}", counted.summary);
    assert!(answers("v2"), "the listener serves the new revision");

    let src = s.path().display().to_string();
    let out = s.run(&["destroy", &src, "--auto-approve"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<String> = s.containers().into_iter().map(|(n, _, _)| n).collect();
    assert!(
        left.is_empty(),
        "destroy leaves nothing, traffic container included: {left:?}"
    );
}

/// A service of one task of busybox running `script` with the given
/// task-level reservations (YAML flow fields).
fn shell_service(name: &str, reserve: &str, script: &str) -> String {
    format!(
        "apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {{name: {name}}}
spec:
  {reserve}
  containerDefinitions:
    - name: main
      image: busybox:stable
      command: [sh, -c, \"{script}\"]
      stopTimeout: 1
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {{name: {name}}}
spec:
  cluster: t
  taskDefinition: {name}
  desiredCount: 1
"
    )
}

/// The usage fields of service `name`'s only task and of the service.
fn usage_of(status: &Value, name: &str) -> (Value, Value) {
    let s = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no service {name} in {status}"))
        .clone();
    (s["tasks"][0].clone(), s)
}

#[test]
fn status_shows_cpu_and_memory_used_over_reserved() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let burn = shell_service("burn", "cpu: 512\n  memory: 64", "while :; do :; done");
    // 40 MiB written to the container's shared-memory tmpfs stay in
    // memory (never reclaimable file cache) and count to the container.
    let hold = shell_service(
        "hold",
        "memory: 100",
        "dd if=/dev/zero of=/dev/shm/f bs=1M count=40 && touch /tmp/held && sleep 3600",
    );
    let idle = sleeper("idle", 1, "x");
    let s = Source::new(&[
        ("cluster.yaml", cluster()),
        ("burn.yaml", &burn),
        ("hold.yaml", &hold),
        ("idle.yaml", &idle),
    ]);
    let out = s.apply();
    assert!(out.contains("Apply complete"), "{out}");
    // Until the memory is held (the write takes a moment).
    let held = s.running("hold");
    assert_eq!(held.len(), 1, "{:?}", s.containers());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !Command::new("docker")
        .args(["exec", &held[0], "test", "-e", "/tmp/held"])
        .status()
        .unwrap()
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the hold task never wrote its memory"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let status = s.status();
    let (task, service) = usage_of(&status, "burn");
    let cpu = task["cpuUtilization"]
        .as_f64()
        .unwrap_or_else(|| panic!("{task}"));
    // A busy loop uses a whole core, 1024 units, of the 512 reserved:
    // about 200% on an idle machine, far over 40% on a busy one.
    assert!(cpu > 40.0, "{task}");
    let units = task["cpuUnits"].as_f64().unwrap();
    assert!((cpu - units / 512.0 * 100.0).abs() < 0.2, "{task}");
    assert!(task["sampledAt"].as_i64().unwrap() > 0, "{task}");
    // The service is its one task.
    assert_eq!(service["cpuUnits"], task["cpuUnits"], "{service}");
    assert_eq!(
        service["cpuUtilization"], task["cpuUtilization"],
        "{service}"
    );

    let (task, _) = usage_of(&status, "hold");
    let mib = task["memoryMiB"]
        .as_f64()
        .unwrap_or_else(|| panic!("{task}"));
    assert!((40.0..60.0).contains(&mib), "{task}");
    let mem = task["memoryUtilization"].as_f64().unwrap();
    assert!((mem - mib).abs() < 0.2, "100 MiB reserved: {task}");

    let (task, _) = usage_of(&status, "idle");
    let cpu = task["cpuUtilization"]
        .as_f64()
        .unwrap_or_else(|| panic!("{task}"));
    // Nothing reserved: measured against the node's whole CPU.
    assert!(cpu < 5.0, "{task}");
    let mem = task["memoryUtilization"].as_f64().unwrap();
    assert!(mem < 10.0, "32 MiB reserved: {task}");

    // Text: a line per service and the utilization on each task.
    let src = s.path().display().to_string();
    let text = String::from_utf8_lossy(&s.run(&["status", &src]).stdout).into_owned();
    let line = text
        .lines()
        .skip_while(|l| !l.starts_with("Service t/burn"))
        .find(|l| l.contains("(of reserved)"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("cpu ") && line.contains("% "), "{text}");
    // It starts with a line over all three services.
    assert!(
        text.starts_with("3 services, 3 tasks running, 0 pending"),
        "{text}"
    );

    // Filters: one service, or a cluster's; one that matches nothing
    // fails naming the flag and what there is.
    let text =
        String::from_utf8_lossy(&s.run(&["status", &src, "--service", "hold"]).stdout).into_owned();
    let shown: Vec<&str> = text.lines().filter(|l| l.starts_with("Service ")).collect();
    assert_eq!(shown.len(), 1, "{text}");
    assert!(shown[0].starts_with("Service t/hold "), "{text}");
    let text =
        String::from_utf8_lossy(&s.run(&["status", &src, "--cluster", "t"]).stdout).into_owned();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("Service ")).count(),
        3,
        "{text}"
    );
    let out = s.run(&["status", &src, "--cluster", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "--cluster nope: no service in this cluster; services: t/burn, t/hold, t/idle"
        ),
        "{err}"
    );
}
