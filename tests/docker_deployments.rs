//! Rolling deployments on a real Docker engine, as a user runs them:
//! the ECS bounds sampled from `docker ps` throughout a rollout, the
//! circuit breaker catching a crashing revision and one failing its health
//! checks, the rollback it makes, and `reconcile deployment abort` in the
//! middle of a rollout. Needs what scripts/docker-setup.sh provides.

#[path = "common/docker.rs"]
mod docker;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use docker::{Source, SERIAL};
use serde_json::Value;

const CLUSTER: &str =
    "apiVersion: reconcile/v1alpha1\nkind: Cluster\nmetadata: {name: d}\nspec: {}\n";

/// Service `web` with `count` tasks of one busybox container. `main` is the
/// container's command; `check` an optional health check command.
fn web(count: u32, min: u32, max: u32, version: &str, main: &str, check: Option<&str>) -> String {
    let health = check
        .map(|c| {
            format!("\n      healthCheck: {{command: [CMD-SHELL, '{c}'], interval: 5, timeout: 2, retries: 1}}")
        })
        .unwrap_or_default();
    format!(
        "apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {{name: web}}
spec:
  memory: 32
  containerDefinitions:
    - name: main
      image: busybox:stable
      command: [sh, -c, '{main}']
      environment: [{{name: VERSION, value: '{version}'}}]
      stopTimeout: 1{health}
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {{name: web}}
spec:
  cluster: d
  taskDefinition: web
  desiredCount: {count}
  deploymentConfiguration:
    minimumHealthyPercent: {min}
    maximumPercent: {max}
    deploymentCircuitBreaker: {{enable: true, rollback: true}}
"
    )
}

const SLEEP: &str = "exec sleep 3600";

/// Samples of the service's containers from `docker ps`, taken every
/// 100 ms until dropped: (running, healthy) per sample.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<Vec<(usize, usize)>>>,
}

impl Sampler {
    fn start(source_id: &str) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let filter = format!("label=reconcile.io/source={source_id}");
        let handle = thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let out = Command::new("docker")
                    .args([
                        "ps",
                        "--filter",
                        &filter,
                        "--format",
                        "{{.Names}}\t{{.Status}}",
                    ])
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let web: Vec<&str> = text.lines().filter(|l| l.contains("-web-")).collect();
                let healthy = web.iter().filter(|l| l.contains("(healthy)")).count();
                samples.push((web.len(), healthy));
                thread::sleep(Duration::from_millis(100));
            }
            samples
        });
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Vec<(usize, usize)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

fn apply_out(s: &Source, timeout: &str) -> (i32, String) {
    let src = s.path().display().to_string();
    let out = s.run(&[
        "apply",
        &src,
        "--auto-approve",
        "--settle",
        "2",
        "--timeout",
        timeout,
    ]);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The revisions of the service's running tasks, from `status`.
fn running_revisions(s: &Source) -> Vec<u64> {
    let st = s.status();
    let mut revs: Vec<u64> = st["services"][0]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["lastStatus"] == "RUNNING")
        .map(|t| t["revision"].as_u64().unwrap())
        .collect();
    revs.sort();
    revs
}

fn history(s: &Source) -> Value {
    let src = s.path().display().to_string();
    let out = s.run(&["history", "web", &src, "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn rollout_100_200_never_drops_below_the_desired_healthy_count() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let check = Some("true");
    let s = Source::new(&[
        ("c.yaml", CLUSTER),
        ("web.yaml", &web(4, 100, 200, "1", SLEEP, check)),
    ]);
    s.apply();
    s.write("web.yaml", &web(4, 100, 200, "2", SLEEP, check));
    let sampler = Sampler::start(&s.id);
    let (code, out) = apply_out(&s, "120");
    let samples = sampler.finish();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("deployment 2 (revision 2) completed"), "{out}");
    assert!(samples.len() >= 20, "sampled throughout: {}", samples.len());
    let min_healthy = samples.iter().map(|s| s.1).min().unwrap();
    let max_running = samples.iter().map(|s| s.0).max().unwrap();
    assert!(
        min_healthy >= 4,
        "healthy dropped to {min_healthy}: {samples:?}"
    );
    assert!(
        max_running <= 8,
        "running reached {max_running}: {samples:?}"
    );
    assert!(
        max_running > 4,
        "new tasks started before old ones stopped: {samples:?}"
    );
    assert_eq!(running_revisions(&s), vec![2, 2, 2, 2]);
    assert_eq!(s.plan().0, 0, "nothing left to do: {}", s.plan().1);
}

#[test]
fn rollout_50_100_never_exceeds_the_desired_running_count() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Source::new(&[
        ("c.yaml", CLUSTER),
        ("web.yaml", &web(4, 50, 100, "1", SLEEP, None)),
    ]);
    s.apply();
    s.write("web.yaml", &web(4, 50, 100, "2", SLEEP, None));
    let sampler = Sampler::start(&s.id);
    let (code, out) = apply_out(&s, "120");
    let samples = sampler.finish();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("rollout step 2/2"), "two steps of 2: {out}");
    let max_running = samples.iter().map(|s| s.0).max().unwrap();
    let min_running = samples.iter().map(|s| s.0).min().unwrap();
    assert!(
        max_running <= 4,
        "running reached {max_running}: {samples:?}"
    );
    assert!(
        min_running >= 2,
        "running dropped to {min_running}: {samples:?}"
    );
    assert_eq!(running_revisions(&s), vec![2, 2, 2, 2]);
    assert_eq!(s.plan().0, 0, "nothing left to do: {}", s.plan().1);
}

#[test]
fn a_crashing_revision_trips_the_breaker_and_is_rolled_back() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Source::new(&[
        ("c.yaml", CLUSTER),
        ("web.yaml", &web(4, 100, 200, "1", SLEEP, None)),
    ]);
    s.apply();
    s.write(
        "web.yaml",
        &web(4, 100, 200, "2", "echo cannot start; exit 3", None),
    );
    let started = Instant::now();
    let (code, out) = apply_out(&s, "120");
    assert_eq!(code, 1, "a rolled-back apply fails: {out}");
    assert!(
        out.contains("circuit breaker: 3 task(s) failed (threshold 3)")
            && out.contains("exit code 3")
            && out.contains("rolled back to revision 1"),
        "{out}"
    );
    assert!(
        out.contains("cannot start"),
        "the failed task's logs: {out}"
    );
    assert!(!out.contains("Apply complete"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "tripped in seconds"
    );
    assert_eq!(running_revisions(&s), vec![1, 1, 1, 1]);

    let h = history(&s);
    let deps = h["deployments"].as_array().unwrap();
    assert_eq!(deps[0]["rollbackOf"], 2, "{h:#}");
    assert_eq!(deps[0]["rolloutState"], "COMPLETED");
    assert_eq!(deps[1]["revision"], 2);
    assert_eq!(deps[1]["rolloutState"], "FAILED");
    assert_eq!(deps[1]["circuitBreaker"], "TRIGGERED");
    assert_eq!(deps[1]["failedTasks"], 3);
    assert!(h["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "SERVICE_DEPLOYMENT_FAILED"));

    // The source still says revision 2: it is held, not retried.
    let (code, plan) = s.plan();
    assert!(plan.contains("revision 2 is not deployed again"), "{plan}");
    assert!(!plan.contains("start"), "{plan}");
    assert!(code == 0 || code == 2, "{plan}");
    let st = s.status();
    assert_eq!(st["services"][0]["held"]["revision"], 2, "{st:#}");
    // A fixed revision is deployed again.
    s.write("web.yaml", &web(4, 100, 200, "3", SLEEP, None));
    let (code, out) = apply_out(&s, "120");
    assert_eq!(code, 0, "{out}");
    assert_eq!(running_revisions(&s), vec![3, 3, 3, 3]);
}

#[test]
fn a_revision_failing_its_health_checks_trips_the_breaker() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Source::new(&[
        ("c.yaml", CLUSTER),
        ("web.yaml", &web(4, 100, 200, "1", SLEEP, Some("true"))),
    ]);
    s.apply();
    s.write("web.yaml", &web(4, 100, 200, "2", SLEEP, Some("false")));
    let (code, out) = apply_out(&s, "120");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("failed container health checks")
            && out.contains("circuit breaker")
            && out.contains("rolled back to revision 1"),
        "{out}"
    );
    assert_eq!(running_revisions(&s), vec![1, 1, 1, 1]);
    let h = history(&s);
    assert_eq!(h["deployments"][1]["circuitBreaker"], "TRIGGERED", "{h:#}");
}

#[test]
fn abort_mid_rollout_restores_the_old_revision() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Source::new(&[
        ("c.yaml", CLUSTER),
        ("web.yaml", &web(4, 50, 100, "1", SLEEP, Some("true"))),
    ]);
    s.apply();
    // Revision 2 never becomes healthy (its checks fail inside a long
    // start period, which does not count), so the rollout waits.
    s.write(
        "web.yaml",
        &web(4, 50, 100, "2", SLEEP, Some("false"))
            .replace("retries: 1}", "retries: 1, startPeriod: 300}"),
    );
    let src = s.path().display().to_string();
    let child = s
        .cmd(&["apply", &src, "--auto-approve", "--timeout", "300"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the first step has stopped 2 old tasks and started 2 new.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let revs = running_revisions(&s);
        if revs.iter().filter(|r| **r == 2).count() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout did not start: {revs:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    let st = s.status();
    assert_eq!(
        st["services"][0]["deployments"][0]["rolloutState"], "IN_PROGRESS",
        "{st:#}"
    );

    let out = s.run(&["deployment", "abort", "web", &src]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("Aborted"), "{said}");

    let done = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&done.stderr).into_owned();
    assert_eq!(done.status.code(), Some(1), "{text}");
    assert!(
        text.contains("aborted by the user") && text.contains("rolled back to revision 1"),
        "{text}"
    );
    assert_eq!(running_revisions(&s), vec![1, 1, 1, 1]);
    let h = history(&s);
    assert_eq!(h["deployments"][1]["rolloutState"], "FAILED", "{h:#}");
    assert_eq!(h["deployments"][1]["reason"], "aborted by the user");

    // Nothing in progress any more: abort says so.
    let out = s.run(&["deployment", "abort", "web", &src]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no deployment of `d/web` is in progress")
    );
}

#[test]
fn rollback_command_returns_to_the_previous_revision_and_holds_the_source() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Source::new(&[
        ("c.yaml", CLUSTER),
        ("web.yaml", &web(2, 100, 200, "1", SLEEP, None)),
    ]);
    s.apply();
    s.write("web.yaml", &web(2, 100, 200, "2", SLEEP, None));
    s.apply();
    let src = s.path().display().to_string();
    // Misuse is refused with the reason.
    let out = s.run(&["rollback", "nope", &src, "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no service `nope` has been applied"));
    let out = s.run(&["rollback", "web", &src, "--to", "9", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("revision web:9 is not registered"));

    let out = s.run(&["rollback", "web", &src, "--auto-approve", "--settle", "1"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("rollback to revision 1"),
        "the plan shows it: {text}"
    );
    assert_eq!(running_revisions(&s), vec![1, 1]);
    let (code, plan) = s.plan();
    assert_eq!(code, 0, "{plan}");
    let out = s.run(&["history", "web", &src]);
    let h = String::from_utf8_lossy(&out.stdout);
    assert!(h.contains("held: revision 2 is not deployed"), "{h}");
}
