//! A controller and three agents, each agent in a network namespace of its
//! own with its own address, talking real HTTP over a Linux bridge. The
//! agents share the machine's Docker engine; each owns its containers by
//! label, as it would on a host of its own.
//!
//! Needs root, `ip` and a running Docker engine with `busybox:stable`
//! (`scripts/docker-setup.sh`): without them a test fails under CI and is
//! skipped, saying so, elsewhere. Tests run one at a time: they share the
//! engine and measure container counts.

#[path = "common/controller.rs"]
mod controller;
#[path = "common/load.rs"]
mod load;
#[path = "common/netns.rs"]
mod netns;
#[path = "common/prereq.rs"]
mod prereq;

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use controller::{bin, docker, ControllerArgs, Harness, API, JOIN};
use load::{Counted, Load};
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

/// The controller harness on a lab of three hosts.
type Fleet = Harness<Hosts>;

struct Hosts {
    lab: netns::Lab,
    _images: AgentImages,
}

/// Removes the agent images managed scaling built, once the fleet's
/// containers are gone (an image still used by another run's container is
/// kept).
struct AgentImages;

impl Drop for AgentImages {
    fn drop(&mut self) {
        let images = docker(&["images", "-q", "reconcile-agent"]);
        for image in images.split_whitespace() {
            let _ = Command::new("docker")
                .args(["rmi", image])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

const ZONES: [&str; 3] = ["a", "b", "c"];

impl Fleet {
    /// A fleet whose source is `manifests` (with CLUSTER replaced by a
    /// unique cluster name), with a running controller and three agents;
    /// None when the machine cannot run one (see `prereq.rs`).
    fn start(test: &str, manifests: &str) -> Option<Fleet> {
        Fleet::start_with(test, manifests, |_, _| Vec::new())
    }

    /// Like [`Fleet::start`] with the controller serving HTTPS.
    fn start_tls(test: &str, manifests: &str) -> Option<Fleet> {
        Fleet::start_full(test, manifests, |_, _| Vec::new(), true)
    }

    /// Like [`Fleet::start`], with extra arguments for agent i.
    fn start_with(
        test: &str,
        manifests: &str,
        extra: impl Fn(&netns::Lab, usize) -> Vec<String>,
    ) -> Option<Fleet> {
        Fleet::start_full(test, manifests, extra, false)
    }

    fn start_full(
        test: &str,
        manifests: &str,
        extra: impl Fn(&netns::Lab, usize) -> Vec<String>,
        tls: bool,
    ) -> Option<Fleet> {
        if !prereq::satisfied(
            [netns::unavailable(), prereq::docker()]
                .into_iter()
                .flatten(),
        ) {
            return None;
        }
        let lab = netns::Lab::new(test, 3).expect("network lab");
        let cluster = format!("t{}{}", std::process::id(), test);
        let mut f = Fleet::create(cluster, lab.bridge_ip().into(), |_| Hosts {
            lab,
            _images: AgentImages,
        });
        // First the cluster alone: the service is committed once every node
        // has joined, so that its placement sees all three.
        let src = f.dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        f.write_source(
            "apiVersion: reconcile/v1alpha1\nkind: Cluster\nmetadata: {name: CLUSTER}\nspec: {}\n",
        );
        if tls {
            f.use_tls();
        }
        f.start_controller(ControllerArgs {
            source: vec![src.into()],
            interval: 2,
            node_timeout: 3,
            env: Vec::new(),
        });
        for i in 0..3 {
            let agent = f.spawn_node(i, &extra(&f.ext.lab, i));
            f.agents.push(Some(agent));
        }
        f.wait_for("three active nodes", Duration::from_secs(30), |f| {
            let (_, out, _) = f.cli(&["nodes", "--format", "json"]);
            serde_json::from_str::<Vec<Value>>(&out)
                .is_ok_and(|n| n.iter().filter(|n| n["status"] == "ACTIVE").count() == 3)
        });
        f.write_source(manifests);
        let (code, out, err) = f.cli(&["apply", "--no-wait"]);
        assert_eq!(code, 0, "apply --controller: {out}{err}");
        Some(f)
    }

    /// Replace the controller's source with `manifests`, CLUSTER replaced
    /// by the fleet's cluster.
    fn write_source(&self, manifests: &str) {
        std::fs::write(
            self.dir.path().join("src/fleet.yaml"),
            manifests.replace("CLUSTER", &self.cluster),
        )
        .unwrap();
    }

    /// Agent `i` (`node{i}`, in zone ZONES[i]) in host i's namespace.
    fn spawn_node(&self, i: usize, extra: &[String]) -> std::process::Child {
        let mut args = vec!["--attribute".to_string(), format!("zone={}", ZONES[i])];
        args.extend_from_slice(extra);
        let cmd = self.ext.lab.command(i, bin().to_str().unwrap());
        self.spawn_agent(cmd, &format!("node{i}"), &args)
    }

    fn per_node(&self) -> [usize; 3] {
        let mut n = [0; 3];
        for (_, node) in self.running() {
            if let Some(i) = node
                .strip_prefix("node")
                .and_then(|d| d.parse::<usize>().ok())
            {
                n[i] += 1;
            }
        }
        n
    }

    /// Lines of every agent's log that start or stop a task, from the
    /// `skip`-th line of each on.
    fn agent_actions(&self, skip: &[usize; 3]) -> Vec<String> {
        (0..3)
            .flat_map(|i| {
                self.log(&format!("agent-node{i}"))
                    .lines()
                    .skip(skip[i])
                    .filter(|l| l.contains("starting task") || l.contains("stopping task"))
                    .map(|l| format!("node{i}: {l}"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Lines in each agent's log so far.
    fn agent_log_lines(&self) -> [usize; 3] {
        [0, 1, 2].map(|i| self.log(&format!("agent-node{i}")).lines().count())
    }
}

fn manifests(count: u32, extra_service: &str) -> String {
    controller::app_manifests("CLUSTER", count, "one") + extra_service
}

/// [`manifests`] whose cluster uses the capacity providers `providers`
/// (a YAML list), defined by `documents` (CapacityProvider documents,
/// put after the cluster's).
fn with_providers(count: u32, extra_service: &str, providers: &str, documents: &str) -> String {
    let text = manifests(count, extra_service).replacen(
        "spec: {}\n",
        &format!("spec:\n  capacityProviders: {providers}\n---\n{documents}"),
        1,
    );
    assert!(text.contains("capacityProviders"), "{text}");
    text
}

fn spread_by_zone() -> String {
    manifests(
        6,
        "  placementStrategy:\n    - {type: spread, field: \"attribute:zone\"}\n",
    )
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn six_tasks_spread_over_three_nodes_by_attribute() {
    let _g = lock();
    // Agents sampling usage every second: their heartbeats carry it.
    let Some(f) = Fleet::start_with("spread", &spread_by_zone(), |_, _| {
        vec!["--stats-interval".to_string(), "1".to_string()]
    }) else {
        return;
    };
    f.wait_for("6 running tasks", Duration::from_secs(60), |f| {
        f.running().len() == 6
    });
    assert_eq!(f.per_node(), [2, 2, 2], "running: {:?}", f.running());
    // CPU is known from a node's second sample of a task on.
    f.wait_for("the usage of 6 tasks", Duration::from_secs(30), |f| {
        let s = f.status();
        s["services"][0]["tasks"].as_array().is_some_and(|ts| {
            ts.iter()
                .filter(|t| t["cpuUtilization"].is_number() && t["memoryUtilization"].is_number())
                .count()
                == 6
        })
    });
    let s = f.status();
    let service = &s["services"][0];
    for t in service["tasks"].as_array().unwrap() {
        // Sleeping: next to no CPU of the node's share (nothing reserved),
        // and some memory, well under the 32 MiB reserved.
        assert!(t["cpuUtilization"].as_f64().unwrap() < 5.0, "{t}");
        let mib = t["memoryMiB"].as_f64().unwrap();
        assert!(mib > 0.0 && mib < 16.0, "{t}");
        let pct = t["memoryUtilization"].as_f64().unwrap();
        assert!((pct - mib / 32.0 * 100.0).abs() < 0.5, "{t}");
    }
    let total: f64 = service["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["memoryMiB"].as_f64().unwrap())
        .sum();
    let shown = service["memoryMiB"].as_f64().unwrap();
    assert!((shown - total).abs() < 0.5, "{service}");
    let (code, out, _) = f.cli(&["nodes", "--format", "json"]);
    assert_eq!(code, 0);
    let nodes: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(nodes.len(), 3);
    for n in &nodes {
        assert_eq!(n["status"], "ACTIVE");
        assert_eq!(n["tasks"], 2, "{}", f.tail("controller"));
    }
    // Converged: the controller's plan is empty.
    let (code, out, err) = f.cli(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 0, "plan not empty:\n{out}\n{err}");
}

#[test]
fn distinct_instance_refuses_a_fourth_task_on_three_nodes_and_says_why() {
    let _g = lock();
    let extra = "  placementConstraints:\n    - {type: distinctInstance}\n";
    let Some(f) = Fleet::start("distinct", &manifests(4, extra)) else {
        return;
    };
    f.wait_for("3 running tasks", Duration::from_secs(60), |f| {
        f.running().len() == 3
    });
    // A whole reconcile pass after the third task ran: still no fourth.
    f.sync_and_wait();
    assert_eq!(f.per_node(), [1, 1, 1]);
    let (code, out, err) = f.cli(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        out.contains("cannot be placed") && out.contains("distinctInstance"),
        "the plan must say why the 4th task has no place:\n{out}"
    );
}

#[test]
fn tasks_of_a_stopped_node_come_back_on_the_others() {
    let _g = lock();
    let Some(mut f) = Fleet::start("stopnode", &spread_by_zone()) else {
        return;
    };
    f.wait_for("6 running tasks", Duration::from_secs(60), |f| {
        f.running().len() == 6
    });
    // The node goes away with its agent and its containers.
    let mut agent = f.agents[2].take().unwrap();
    agent.kill().unwrap();
    agent.wait().unwrap();
    let on_node2: Vec<String> = f
        .running()
        .into_iter()
        .filter(|(_, n)| n == "node2")
        .map(|(t, _)| t)
        .collect();
    for t in &on_node2 {
        let ids = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=reconcile.io/task={t}"),
        ]);
        for id in ids.split_whitespace() {
            docker(&["rm", "-f", id]);
        }
    }
    let took = f.wait_for(
        "6 tasks running on the two remaining nodes",
        Duration::from_secs(30),
        |f| {
            let n = f.per_node();
            n[0] + n[1] == 6 && n[2] == 0
        },
    );
    eprintln!("rescheduled in {took:?}");
    let s = f.status();
    let node2 = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "node2")
        .unwrap();
    assert_eq!(node2["status"], "LOST");
}

#[test]
fn a_node_cut_off_and_reconnected_leaves_no_duplicates() {
    let _g = lock();
    let Some(f) = Fleet::start("partition", &spread_by_zone()) else {
        return;
    };
    f.wait_for("6 running tasks", Duration::from_secs(60), |f| {
        f.running().len() == 6
    });
    f.ext.lab.disconnect(1);
    // Lost, its tasks placed on the others; its own keep running meanwhile.
    f.wait_for(
        "replacements for node1's tasks",
        Duration::from_secs(30),
        |f| {
            let n = f.per_node();
            n[0] + n[2] == 6
        },
    );
    assert_eq!(f.per_node()[1], 2, "a cut-off node keeps running its tasks");
    f.ext.lab.reconnect(1);
    f.wait_for(
        "node1's stale tasks to be stopped",
        Duration::from_secs(30),
        |f| f.per_node()[1] == 0,
    );
    // A whole reconcile pass later, still exactly the six.
    f.sync_and_wait();
    let running = f.running();
    assert_eq!(running.len(), 6, "no duplicates: {running:?}");
    let (code, out, err) = f.cli(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 0, "plan not empty:\n{out}\n{err}");
}

#[test]
fn a_controller_restart_restarts_nothing() {
    let _g = lock();
    let Some(mut f) = Fleet::start("restart", &spread_by_zone()) else {
        return;
    };
    f.wait_for("6 running tasks", Duration::from_secs(60), |f| {
        f.running().len() == 6
    });
    // Settled: a whole pass after the rollout.
    f.sync_and_wait();
    let before = f.started_at();
    let lines = f.agent_log_lines();
    let count = |f: &Fleet, what: &str| -> [usize; 3] {
        [0, 1, 2].map(|i| f.log(&format!("agent-node{i}")).matches(what).count())
    };
    let connected = count(&f, "connected;");
    let unreachable = count(&f, "cannot reach the controller");
    f.kill_controller();
    // Every agent has noticed that the controller is gone.
    f.wait_for(
        "the agents to lose the controller",
        Duration::from_secs(30),
        |f| {
            let now = count(f, "cannot reach the controller");
            (0..3).all(|i| now[i] > unreachable[i])
        },
    );
    f.restart_controller();
    // Every agent is back, and a whole reconcile pass has planned from
    // what they report: the same tasks run, and no agent started or
    // stopped one.
    f.wait_for("the agents to reconnect", Duration::from_secs(30), |f| {
        let now = count(f, "connected;");
        (0..3).all(|i| now[i] > connected[i])
    });
    f.sync_and_wait();
    assert_eq!(
        f.started_at(),
        before,
        "controller log:\n{}",
        f.tail("controller")
    );
    let actions = f.agent_actions(&lines);
    assert!(actions.is_empty(), "{actions:#?}");
    let (code, out, err) = f.cli(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 0, "plan not empty:\n{out}\n{err}");

    // `destroy --controller` tears the fleet down without touching the
    // source, and it stays down across a restart until `resume`.
    let (code, out, err) = f.cli(&["destroy"]);
    assert_eq!(
        code, 1,
        "nothing is asked without a terminal:\n{out}\n{err}"
    );
    assert!(err.contains("--auto-approve"), "{err}");
    assert_eq!(f.running().len(), 6);
    let (code, out, err) = f.cli(&["destroy", "--auto-approve", "--timeout", "120"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("removes everything its source applied"),
        "{out}"
    );
    assert!(out.contains("Destroy complete"), "{out}");
    assert_eq!(f.running(), Vec::new());
    f.kill_controller();
    f.restart_controller();
    f.sync_and_wait();
    assert_eq!(f.running(), Vec::new(), "the teardown outlives a restart");
    let (code, out, err) = f.cli(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("TORN DOWN"), "{out}");
    let (code, out, err) = f.cli(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 0, "a torn-down fleet plans nothing:\n{out}\n{err}");
    let (code, _, err) = f.cli(&["resume"]);
    assert_eq!(code, 0, "{err}");
    f.wait_for("6 tasks back after resume", Duration::from_secs(90), |f| {
        f.running().len() == 6
    });
}

#[test]
fn requests_without_the_right_token_are_refused() {
    let _g = lock();
    let Some(f) = Fleet::start("auth", &manifests(1, "")) else {
        return;
    };
    let out = Command::new(bin())
        .args([
            "nodes",
            "--controller",
            &f.url(),
            "--token",
            "not-the-api-token-at-all",
            "--plain-http",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    // A heartbeat without the node's own credential is refused and
    // logged.
    // Raw HTTP, so the exact request is what the test says.
    let post = |auth: Option<&str>, cluster: &str| -> u16 {
        let body = format!(
            r#"{{"cluster":"{cluster}","cpu":1024,"memory":512,"agentVersion":"0","tasks":[]}}"#
        );
        let auth = auth
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let headers = format!("Content-Type: application/json\r\n{auth}");
        controller::post(
            f.addr(),
            "/v1/nodes/intruder/heartbeat",
            &headers,
            body.as_bytes(),
        )
        .0
    };
    assert_eq!(post(None, &f.cluster), 401);
    assert_eq!(
        post(Some(API), &f.cluster),
        401,
        "the API token is not a join token"
    );
    f.wait_for("the source to be loaded", Duration::from_secs(20), |f| {
        f.running().len() == 1
    });
    assert_eq!(
        post(Some(JOIN), &f.cluster),
        401,
        "the join token only joins (tests/security.rs has the rest)"
    );
    let log = f.log("controller");
    assert!(
        log.contains("refused POST /v1/nodes/{name}/heartbeat"),
        "{log}"
    );
    // The whole of every log: the controller's and each agent's.
    let logs = f.logs();
    assert_eq!(
        logs.len(),
        4,
        "{:?}",
        logs.iter().map(|l| &l.0).collect::<Vec<_>>()
    );
    for (name, text) in &logs {
        assert!(!text.is_empty(), "{name} logged nothing");
        assert!(
            !text.contains(JOIN) && !text.contains(API),
            "tokens must never be logged, and {name}'s log has one"
        );
    }
}

#[test]
fn a_drained_node_hands_its_tasks_to_the_others() {
    let _g = lock();
    let Some(f) = Fleet::start("drain", &spread_by_zone()) else {
        return;
    };
    f.wait_for("6 running tasks", Duration::from_secs(60), |f| {
        f.running().len() == 6
    });
    let (code, out, err) = f.cli(&["node", "drain", "node2"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("DRAINING"), "{out}");
    // Replacements start before the drained tasks stop: never fewer than 6.
    let start = Instant::now();
    loop {
        let n = f.per_node();
        assert!(n.iter().sum::<usize>() >= 6, "dropped below 6 tasks: {n:?}");
        if n == [3, 3, 0] {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "drain did not finish: {n:?}\n{}",
            f.tail("controller")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, out, err) = f.cli(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 0, "plan not empty:\n{out}\n{err}");
}

#[test]
fn capacity_provider_strategy_splits_tasks_by_base_and_weight() {
    let _g = lock();
    // node0 (zone a) is on-demand, node1 and node2 are spot. Base 1 on
    // on-demand, then 1:2 by weight: 3 tasks on each provider.
    let source = with_providers(
        6,
        "  capacityProviderStrategy:
    - {capacityProvider: on-demand, base: 1, weight: 1}
    - {capacityProvider: spot, weight: 2}
",
        "[on-demand, spot]",
        "apiVersion: reconcile/v1alpha1
kind: CapacityProvider
metadata: {name: on-demand}
spec:
  nodeSelector: {zone: a}
---
apiVersion: reconcile/v1alpha1
kind: CapacityProvider
metadata: {name: spot}
spec:
  nodeSelector: {lifecycle: spot}
",
    );
    let Some(f) = Fleet::start_with("cpstrat", &source, |_, i| {
        if i == 0 {
            vec![]
        } else {
            vec!["--attribute".to_string(), "lifecycle=spot".to_string()]
        }
    }) else {
        return;
    };
    f.wait_for("6 running tasks", Duration::from_secs(60), |f| {
        f.running().len() == 6
    });
    let n = f.per_node();
    assert_eq!(
        n[0], 3,
        "on-demand: base 1 plus a third of the other 5: {n:?}"
    );
    assert_eq!(n[1] + n[2], 3, "spot: {n:?}");
    let (code, out, err) = f.cli(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 0, "plan not empty:\n{out}\n{err}");
}

#[test]
fn agents_and_cli_talk_to_the_controller_over_tls() {
    let _g = lock();
    let Some(f) = Fleet::start_tls("tls", &manifests(3, "")) else {
        return;
    };
    f.wait_for("3 running tasks", Duration::from_secs(60), |f| {
        f.running().len() == 3
    });
    let (code, out, err) = f.cli(&["nodes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches("ACTIVE").count(), 3, "{out}");
    // Without the CA the controller's certificate is not trusted.
    let out = Command::new(bin())
        .args(["nodes", "--controller", &f.url()])
        .env("RECONCILE_API_TOKEN", API)
        .env_remove("RECONCILE_CA_CERT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the controller"), "{err}");
    // Plain HTTP to another host is refused (the token would be in
    // clear); when allowed, the TLS port gets no API answer.
    let plain = f.url().replace("https://", "http://");
    let out = Command::new(bin())
        .args(["nodes", "--controller", &plain])
        .env("RECONCILE_API_TOKEN", API)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--plain-http"));
    let out = Command::new(bin())
        .args(["nodes", "--plain-http", "--controller", &plain])
        .env("RECONCILE_API_TOKEN", API)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("speaks TLS"), "{err}");
}

/// Nodes launched by managed scaling, as `docker ps` shows them.
fn launched_nodes(cluster: &str) -> Vec<String> {
    let out = docker(&[
        "ps",
        "--filter",
        &format!("label=reconcile.io/cluster={cluster}"),
        "--filter",
        "label=reconcile.io/launched-by",
        "--format",
        "{{.Label \"reconcile.io/node\"}}",
    ]);
    let mut v: Vec<String> = out.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn managed_scaling_launches_nodes_for_unplaced_tasks_and_retires_idle_ones() {
    let _g = lock();
    // The three static nodes are not in provider `auto`: its tasks need
    // nodes the controller launches (agent containers on this engine).
    let source = |count: u32| {
        with_providers(
            count,
            "  placementConstraints:
    - {type: distinctInstance}
  capacityProviderStrategy:
    - {capacityProvider: auto, weight: 1}
",
            "[auto]",
            "apiVersion: reconcile/v1alpha1
kind: CapacityProvider
metadata: {name: auto}
spec:
  nodeSelector: {pool: auto}
  managedScaling:
    status: ENABLED
    targetCapacity: 100
    instanceWarmupPeriod: 0
  managedTerminationProtection: ENABLED
  nodeTemplate:
    attributes: {pool: auto}
    minimumSize: 0
    maximumSize: 3
",
        )
    };
    let Some(f) = Fleet::start("scale", &source(2)) else {
        return;
    };
    f.wait_for(
        "2 tasks on 2 launched nodes",
        Duration::from_secs(120),
        |f| {
            let r = f.running();
            let tasks: Vec<_> = r.iter().filter(|(t, _)| !t.is_empty()).collect();
            tasks.len() == 2 && tasks.iter().all(|(_, n)| n.starts_with("auto-"))
        },
    );
    let nodes = launched_nodes(&f.cluster);
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    // A launched agent reads the join token from a mounted file: it is
    // in neither its command line nor its environment.
    for node in &nodes {
        let inspect = docker(&["inspect", &format!("reconcile-node-{node}")]);
        assert!(inspect.contains("--token-file"), "{inspect}");
        assert!(
            !inspect.contains(JOIN),
            "the join token shows in `docker inspect` of {node}"
        );
    }
    let busy_before: Vec<String> = f.running().into_iter().map(|(_, n)| n).collect();
    // Scale in: one node goes idle and is removed; the busy one stays
    // (termination protection).
    f.write_source(&source(1));
    let (code, out, err) = f.cli(&["apply"]);
    assert_eq!(code, 0, "{out}{err}");
    f.wait_for("one launched node left", Duration::from_secs(60), |f| {
        launched_nodes(&f.cluster).len() == 1
    });
    let left = launched_nodes(&f.cluster);
    let running: Vec<(String, String)> = f
        .running()
        .into_iter()
        .filter(|(t, _)| !t.is_empty())
        .collect();
    assert_eq!(running.len(), 1, "{running:?}");
    assert_eq!(running[0].1, left[0], "the node that runs the task is kept");
    assert!(busy_before.contains(&left[0]));
    let s = f.status();
    let events = s["events"].to_string();
    assert!(events.contains("launching 2 node(s)"), "{events}");
    assert!(events.contains("removing idle node"), "{events}");
}

#[test]
fn an_agent_restart_readopts_its_containers_without_restarting_them() {
    let _g = lock();
    let Some(mut f) = Fleet::start("agentrestart", &spread_by_zone()) else {
        return;
    };
    f.wait_for("6 running tasks", Duration::from_secs(60), |f| {
        f.running().len() == 6
    });
    // Settled: a whole pass after the rollout.
    f.sync_and_wait();
    let before = f.started_at();
    let lines = f.agent_log_lines();
    let mut agent = f.agents[1].take().unwrap();
    agent.kill().unwrap();
    agent.wait().unwrap();
    // Back at once, well within the node timeout (3 s): the node is never
    // lost.
    f.agents[1] = Some(f.spawn_node(1, &[]));
    f.wait_for("the new agent to connect", Duration::from_secs(30), |f| {
        f.log("agent-node1")
            .lines()
            .skip(lines[1])
            .any(|l| l.contains("connected;"))
    });
    // A whole reconcile pass after the new agent reported its tasks: the
    // same containers run, and no agent started or stopped one.
    f.sync_and_wait();
    assert_eq!(
        f.started_at(),
        before,
        "agent log:\n{}",
        f.tail("agent-node1")
    );
    let actions = f.agent_actions(&lines);
    assert!(actions.is_empty(), "{actions:#?}");
    let s = f.status();
    let statuses: Vec<&Value> = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["status"])
        .collect();
    assert!(statuses.iter().all(|st| *st == "ACTIVE"), "{statuses:?}");
    let (code, out, err) = f.cli(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 0, "plan not empty:\n{out}\n{err}");
}

#[test]
fn a_reserved_port_is_never_given_to_a_task() {
    let _g = lock();
    // Every node keeps port 18080 for itself; a task asking for it as its
    // host port has nowhere to go, and the plan says so.
    let source = r#"apiVersion: reconcile/v1alpha1
kind: Cluster
metadata: {name: CLUSTER}
spec: {}
---
apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {name: app}
spec:
  networkMode: bridge
  containerDefinitions:
    - name: app
      image: busybox:stable
      command: [sleep, "3600"]
      memory: 32
      portMappings:
        - {containerPort: 80, hostPort: 18080}
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {name: app}
spec:
  cluster: CLUSTER
  taskDefinition: app
  desiredCount: 1
"#;
    let Some(f) = Fleet::start_with("resport", source, |_, _| {
        vec!["--reserved-port".to_string(), "18080".to_string()]
    }) else {
        return;
    };
    f.wait_for("the refusal", Duration::from_secs(30), |f| {
        let (code, out, _) = f.cli(&["plan", "--detailed-exitcode"]);
        code == 2 && out.contains("cannot be placed") && out.contains("18080")
    });
    let (_, out, _) = f.cli(&["nodes", "--format", "json"]);
    let nodes: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert!(nodes[0]["reservedPorts"]
        .as_array()
        .unwrap()
        .contains(&Value::from(18080)));
    assert!(f.running().is_empty());
}

/// A service of 4 tasks rolling 50/100, whose containers report healthy
/// after their first health check (5 s), so each rollout step takes a
/// few seconds.
fn rolling(version: &str) -> String {
    let check = "      healthCheck: {command: [CMD-SHELL, \"true\"], interval: 5, timeout: 2, retries: 1}\n";
    let text = manifests(4, "")
        .replace(
            "      environment:\n",
            &format!("{check}      environment:\n"),
        )
        .replace("value: \"one\"", &format!("value: \"{version}\""));
    assert!(text.contains("healthCheck") && text.contains(&format!("\"{version}\"")));
    text + "  deploymentConfiguration:
    minimumHealthyPercent: 50
    maximumPercent: 100
    deploymentCircuitBreaker: {enable: true, rollback: true}
"
}

/// The newest deployment of the only service in a status reply.
fn newest(status: &Value) -> Value {
    status["services"][0]["deployments"][0].clone()
}

#[test]
fn a_controller_restart_mid_rollout_resumes_the_same_deployment() {
    let _g = lock();
    let Some(mut f) = Fleet::start("midroll", &rolling("1")) else {
        return;
    };
    let revisions = |f: &Fleet| -> Vec<(String, u64)> {
        let s = f.status();
        let mut v: Vec<(String, u64)> = s["services"][0]["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["lastStatus"] == "RUNNING")
            .map(|t| {
                (
                    t["id"].as_str().unwrap().to_string(),
                    t["revision"].as_u64().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    f.wait_for(
        "4 running tasks of revision 1",
        Duration::from_secs(60),
        |f| {
            let r = revisions(f);
            r.len() == 4 && r.iter().all(|(_, rev)| *rev == 1)
        },
    );
    f.wait_for("deployment 1 completed", Duration::from_secs(30), |f| {
        newest(&f.status())["rolloutState"] == "COMPLETED"
    });
    f.write_source(&rolling("2"));
    let (code, out, err) = f.cli(&["sync"]);
    assert_eq!(code, 0, "{out}{err}");
    // The first step is under way: 2 old tasks stopped, 2 new started.
    f.wait_for("the first rollout step", Duration::from_secs(30), |f| {
        revisions(f).iter().filter(|(_, rev)| *rev == 2).count() == 2
    });
    let s = f.status();
    let dep = newest(&s);
    assert_eq!(dep["rolloutState"], "IN_PROGRESS", "{s:#}");
    assert_eq!(dep["id"], 2);
    let first: Vec<String> = revisions(&f)
        .into_iter()
        .filter(|(_, rev)| *rev == 2)
        .map(|(id, _)| id)
        .collect();

    f.kill_controller();
    f.restart_controller();

    f.wait_for(
        "4 running tasks of revision 2",
        Duration::from_secs(90),
        |f| {
            let r = revisions(f);
            r.len() == 4 && r.iter().all(|(_, rev)| *rev == 2)
        },
    );
    f.wait_for("deployment 2 completed", Duration::from_secs(30), |f| {
        newest(&f.status())["rolloutState"] == "COMPLETED"
    });
    let s = f.status();
    let dep = newest(&s);
    assert_eq!(dep["id"], 2, "the same deployment, not a new one: {s:#}");
    assert_eq!(dep["revision"], 2);
    let now: Vec<String> = revisions(&f).into_iter().map(|(id, _)| id).collect();
    for t in &first {
        assert!(
            now.contains(t),
            "task {t} started before the restart was kept: {now:?}"
        );
    }
    let (code, out, err) = f.cli(&["history", "app", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let h: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(h["deployments"].as_array().unwrap().len(), 2, "{h:#}");
    let (code, out, err) = f.cli(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 0, "plan not empty:\n{out}\n{err}");

    // Nothing to abort now; a rollback through the controller goes back to
    // revision 1 and holds revision 2.
    let (code, _, err) = f.cli(&["deployment", "abort", "app"]);
    assert_eq!(code, 1);
    assert!(err.contains("is in progress"), "{err}");
    let (code, out, err) = f.cli(&["rollback", "app"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("revision 1"), "{out}");
    f.wait_for(
        "4 running tasks of revision 1",
        Duration::from_secs(90),
        |f| {
            let r = revisions(f);
            r.len() == 4 && r.iter().all(|(_, rev)| *rev == 1)
        },
    );
    f.wait_for("the rollback completed", Duration::from_secs(30), |f| {
        let d = newest(&f.status());
        d["rolloutState"] == "COMPLETED" && d["revision"] == 1
    });
    let s = f.status();
    let svc = &s["services"][0];
    assert_eq!(svc["held"]["revision"], 2, "{s:#}");
    let (code, out, err) = f.cli(&["plan", "--detailed-exitcode"]);
    assert_eq!(
        code, 0,
        "the held revision is not deployed again:\n{out}\n{err}"
    );
    assert!(
        err.contains("not deployed again") || out.contains("not deployed again"),
        "{out}{err}"
    );

    // `apply --controller` waits for the rollout and fails, naming the
    // cause, when the breaker trips and rolls back.
    f.write_source(&rolling("3").replace(
        "command: [sleep, \"3600\"]",
        "command: [sh, -c, \"exit 3\"]",
    ));
    let (code, out, err) = f.cli(&["apply"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("(revision 3) failed: circuit breaker")
            && err.contains("rolled back to revision 1"),
        "{out}{err}"
    );
    assert_eq!(revisions(&f).iter().filter(|(_, r)| *r == 1).count(), 4);
}

#[test]
fn an_abort_through_the_controller_rolls_the_running_rollout_back() {
    let _g = lock();
    let Some(f) = Fleet::start("abort", &rolling("1")) else {
        return;
    };
    let revisions = |f: &Fleet| -> Vec<u64> {
        let mut v: Vec<u64> = f.status()["services"][0]["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["lastStatus"] == "RUNNING")
            .map(|t| t["revision"].as_u64().unwrap())
            .collect();
        v.sort();
        v
    };
    f.wait_for(
        "4 running tasks of revision 1",
        Duration::from_secs(60),
        |f| revisions(f) == [1, 1, 1, 1],
    );
    f.wait_for("deployment 1 completed", Duration::from_secs(30), |f| {
        newest(&f.status())["rolloutState"] == "COMPLETED"
    });
    // Revision 2 never becomes healthy: its checks fail inside a long start
    // period, which does not count, so the rollout waits.
    let stuck = rolling("2").replace("retries: 1}", "retries: 1, startPeriod: 300}");
    assert!(stuck.contains("startPeriod"));
    f.write_source(&stuck.replace("\"true\"", "\"false\""));
    // maximumPercent 100: never more than 4 containers run, sampled from
    // Docker (the controller's own view drops a task when it unassigns it).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        let filter = format!("label=reconcile.io/cluster={}", f.cluster);
        std::thread::spawn(move || {
            let mut most = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n = docker(&["ps", "-q", "--filter", &filter]).lines().count();
                most = most.max(n);
                std::thread::sleep(Duration::from_millis(100));
            }
            most
        })
    };
    f.cli(&["sync"]);
    f.wait_for("the first rollout step", Duration::from_secs(30), |f| {
        revisions(f).iter().filter(|r| **r == 2).count() == 2
    });
    let (code, out, err) = f.cli(&["deployment", "abort", "app"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("abort requested"), "{out}");
    f.wait_for("revision 1 restored", Duration::from_secs(60), |f| {
        revisions(f) == [1, 1, 1, 1]
    });
    f.wait_for("the rollback completed", Duration::from_secs(30), |f| {
        let d = newest(&f.status());
        d["rolloutState"] == "COMPLETED" && d["rollbackOf"] == 2
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let most = sampler.join().unwrap();
    assert!(most <= 4, "{most} containers ran at once");
    let (code, out, err) = f.cli(&["history", "app", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let h: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(h["deployments"][1]["rolloutState"], "FAILED", "{h:#}");
    assert_eq!(h["deployments"][1]["reason"], "aborted by the user");
    assert!(
        f.tail("controller").contains("aborted by the user"),
        "the controller log says why"
    );
}

#[test]
fn an_agent_reads_its_join_token_from_a_file_and_names_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let agent = |extra: &[&str]| {
        let out = Command::new(bin())
            .args([
                "agent",
                "--controller",
                "http://127.0.0.1:9",
                "--cluster",
                "c",
            ])
            .args(["--name", "n"])
            .args(extra)
            .env_remove("RECONCILE_JOIN_TOKEN")
            .env_remove("RECONCILE_JOIN_TOKEN_FILE")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let missing = dir.path().join("missing");
    let (code, err) = agent(&["--token-file", missing.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("--token-file `{}`", missing.display())),
        "{err}"
    );
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let (code, err) = agent(&["--token-file", empty.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("the file is empty"), "{err}");
    let (code, err) = agent(&["--token", "t", "--token-file", empty.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--token-file") && err.contains("cannot be used with"),
        "{err}"
    );
    let (code, err) = agent(&[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--token"), "{err}");
}

/// A web service of `count` busybox httpd tasks answering `version` on
/// `/` and, after 4 s, on `/cgi-bin/slow`; behind listener `port` on every
/// node and named `web.CLUSTER.reconcile.internal`.
fn web(version: &str, count: u32, port: u16) -> String {
    format!(
        r#"apiVersion: reconcile/v1alpha1
kind: Cluster
metadata: {{name: CLUSTER}}
spec: {{}}
---
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
          mkdir -p /www/cgi-bin
          echo "$VERSION" > /www/index.html
          printf '#!/bin/sh\necho Content-Type: text/plain\necho\nsleep 4\necho slow\n' > /www/cgi-bin/slow
          chmod +x /www/cgi-bin/slow
          exec httpd -f -p 8080 -h /www
      portMappings: [{{containerPort: 8080}}]
      environment: [{{name: VERSION, value: "{version}"}}]
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {{name: web}}
spec:
  cluster: CLUSTER
  taskDefinition: web
  desiredCount: {count}
  deploymentConfiguration: {{minimumHealthyPercent: 100, maximumPercent: 200}}
  placementStrategy: [{{type: spread, field: instanceId}}]
  loadBalancers:
    - containerName: web
      containerPort: 8080
      listenerPort: {port}
      healthCheck: {{interval: 2, timeout: 1, healthyThresholdCount: 2}}
  serviceRegistries:
    - {{containerName: web, containerPort: 8080}}
"#
    )
}

impl Fleet {
    /// The web service has `count` running tasks of `revision`, all of them
    /// HEALTHY targets of its listener, and nothing else.
    fn serving(&self, revision: u64, count: usize) -> bool {
        let s = self.status();
        let Some(web) = s["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "web")
        else {
            return false;
        };
        let tasks = web["tasks"].as_array().unwrap();
        let live: Vec<&Value> = tasks
            .iter()
            .filter(|t| t["lastStatus"] != "STOPPED")
            .collect();
        let targets = web["listeners"][0]["targets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        web["revision"] == revision
            && live.len() == count
            && live
                .iter()
                .all(|t| t["revision"] == revision && t["lastStatus"] == "RUNNING")
            && targets.len() == count
            && targets.iter().all(|t| t["state"] == "HEALTHY")
            && self.running().len() == count
    }

    /// SRV ports `web` resolves to, asked of node `i`'s DNS server.
    fn srv_ports(&self, i: usize) -> Vec<u16> {
        let name = format!(
            "web.{}.reconcile.internal",
            self.cluster.to_ascii_lowercase()
        );
        let out = Command::new("busybox")
            .args([
                "nslookup",
                "-type=srv",
                &name,
                &self.ext.lab.host_ip(i).to_string(),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        // "web.c.reconcile.internal  service = 1 1 32768 web.c...."
        let mut ports: Vec<u16> = text
            .lines()
            .filter(|l| l.contains("service ="))
            .filter_map(|l| l.split("service =").nth(1))
            .filter_map(|r| r.split_whitespace().nth(2).and_then(|p| p.parse().ok()))
            .collect();
        ports.sort();
        ports
    }
}

/// The issue's scenario end to end: a 4-task HTTP service behind a
/// listener, under continuous load from wrk, goes through a rolling
/// deployment, a scale-in to 2, a node drain and a rollback without one
/// failed request; a node killed with -9 costs at most the requests in
/// flight to it. On the way, its DNS name follows its healthy tasks, and
/// tasks being stopped leave DNS and finish their requests in flight
/// before their containers stop.
#[test]
fn a_service_behind_a_listener_drops_no_request_while_it_changes() {
    let _g = lock();
    const PORT: u16 = 8000;
    let agents = |lab: &netns::Lab, i: usize| {
        vec![
            // The engine is shared: every node's tasks are published on
            // the root namespace, which the lab reaches at the bridge.
            "--address".to_string(),
            lab.bridge_ip().to_string(),
            "--dns-address".to_string(),
            lab.host_ip(i).to_string(),
        ]
    };
    let Some(mut f) = Fleet::start_with("lb", &web("v1", 4, PORT), agents) else {
        return;
    };
    let within = Duration::from_secs(120);
    f.wait_for("4 healthy targets of revision 1", within, |f| {
        f.serving(1, 4)
    });
    let url = format!("http://{}:{PORT}/", f.ext.lab.host_ip(0));
    let dir = f.dir.path().to_path_buf();
    let check = |what: &str, c: Counted| {
        eprintln!("{what}: {} requests, {} failed", c.requests, c.failed);
        assert!(
            c.requests > 50,
            "{what}: too little load to mean anything:\n{}",
            c.summary
        );
        assert_eq!(
            c.failed,
            0,
            "{what}: failed requests\n{}\nthe listener's warnings:\n{}\n{}",
            c.summary,
            f.log("agent-node0")
                .lines()
                .filter(|l| l.contains("WARN"))
                .collect::<Vec<_>>()
                .join("\n"),
            f.tail("controller")
        );
    };

    // Every node answers the service's name with its 4 tasks, and a task's
    // container resolves it without configuration.
    for i in 0..3 {
        f.wait_for(
            &format!("node{i} to name 4 tasks"),
            Duration::from_secs(10),
            |f| f.srv_ports(i).len() == 4,
        );
    }
    let name = format!("web.{}.reconcile.internal", f.cluster.to_ascii_lowercase());
    let (task, _) = f.running().into_iter().next().unwrap();
    let filter = format!("label=reconcile.io/task={task}");
    let container = docker(&["ps", "-q", "--filter", &filter]);
    let answer = docker(&["exec", container.trim(), "nslookup", &name]);
    assert!(
        answer.contains(&f.ext.lab.bridge_ip().to_string()),
        "a container resolves {name} to its tasks' address:\n{answer}"
    );

    // A rolling deployment.
    let load = Load::start(&dir, "rollout", &url);
    f.write_source(&web("v2", 4, PORT));
    f.wait_for("4 healthy targets of revision 2", within, |f| {
        f.serving(2, 4)
    });
    check("rolling deployment", load.stop());

    // A scale-in 4 -> 2, while slow requests are in flight to every task:
    // those finish, and the two stopped tasks leave DNS before their
    // containers stop.
    let slow: Vec<_> = (0..8)
        .map(|_| {
            let url = format!("{url}cgi-bin/slow");
            std::thread::spawn(move || {
                let out = Command::new("busybox")
                    .args(["wget", "-q", "-O", "-", &url])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let load = Load::start(&dir, "scale-in", &url);
    f.write_source(&web("v2", 2, PORT));
    f.wait_for(
        "2 tasks out of DNS while 4 still run",
        Duration::from_secs(30),
        |f| f.srv_ports(0).len() == 2 && f.running().len() == 4,
    );
    f.wait_for("2 healthy targets", within, |f| f.serving(2, 2));
    check("scale-in", load.stop());
    for s in slow {
        assert_eq!(
            s.join().unwrap(),
            "slow",
            "a request in flight to a stopped task was cut"
        );
    }

    // A node drain.
    let busy = f
        .running()
        .into_iter()
        .map(|(_, n)| n)
        .find(|n| n != "node0")
        .unwrap_or_else(|| "node0".into());
    let load = Load::start(&dir, "drain", &url);
    let (code, out, err) = f.cli(&["node", "drain", &busy]);
    assert_eq!(code, 0, "{out}{err}");
    f.wait_for("the drained node's tasks elsewhere", within, |f| {
        f.serving(2, 2) && f.running().iter().all(|(_, n)| *n != busy)
    });
    check("node drain", load.stop());
    let (code, out, err) = f.cli(&["node", "activate", &busy]);
    assert_eq!(code, 0, "{out}{err}");

    // A rollback to revision 1.
    let load = Load::start(&dir, "rollback", &url);
    let (code, out, err) = f.cli(&["rollback", "web", "--auto-approve"]);
    assert_eq!(code, 0, "{out}{err}");
    f.wait_for("2 healthy targets of revision 1", within, |f| {
        f.serving(1, 2)
    });
    check("rollback", load.stop());

    // A node killed with -9, with its containers: only the requests in
    // flight to it may fail (wrk keeps 16 connections, so at most 16).
    // Its task is spread away from the others, so the service lives on.
    let victim = f
        .running()
        .into_iter()
        .map(|(_, n)| n)
        .find(|n| n != "node0")
        .expect("a task on another node than the one under load");
    let i: usize = victim.trim_start_matches("node").parse().unwrap();
    eprintln!("killing {victim}; running: {:?}", f.running());
    let load = Load::start(&dir, "kill", &url);
    let mut agent = f.agents[i].take().unwrap();
    agent.kill().unwrap();
    agent.wait().unwrap();
    for (t, n) in f.running() {
        if n == victim {
            let filter = format!("label=reconcile.io/task={t}");
            for id in docker(&["ps", "-q", "--filter", &filter]).split_whitespace() {
                docker(&["rm", "-f", id]);
            }
        }
    }
    f.ext.lab.disconnect(i);
    f.wait_for("2 healthy targets on the remaining nodes", within, |f| {
        f.serving(1, 2)
    });
    let c = load.stop();
    eprintln!(
        "node killed: {} requests, {} failed (those in flight to it)",
        c.requests, c.failed
    );
    assert!(
        c.failed <= 16,
        "more than the requests in flight failed:\n{}\nagent node0:\n{}\ncontroller:\n{}",
        c.summary,
        f.tail("agent-node0"),
        f.tail("controller")
    );
    let (code, out, err) = f.cli(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 0, "plan not empty after it all:\n{out}\n{err}");
}

/// Task definitions of tasks that run to completion: `job` logs three
/// lines and exits 3; `sleeper` runs until stopped.
fn batch() -> String {
    r#"apiVersion: reconcile/v1alpha1
kind: Cluster
metadata: {name: CLUSTER}
spec: {}
---
apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {name: job}
spec:
  containerDefinitions:
    - name: job
      image: busybox:stable
      memory: 32
      command: ["sh", "-c", "echo start; echo middle; echo the end; exit 3"]
---
apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {name: sleeper}
spec:
  containerDefinitions:
    - name: sleeper
      image: busybox:stable
      memory: 32
      stopTimeout: 2
      command: ["sh", "-c", "trap 'exit 143' TERM; while true; do sleep 1; done"]
---
apiVersion: reconcile/v1alpha1
kind: ScheduledTask
metadata: {name: tick}
spec:
  cluster: CLUSTER
  taskDefinition: job
  schedule: rate(1 minute)
  overrides:
    containerOverrides:
      - name: job
        command: ["sh", "-c", "echo tick $MODE; exit 0"]
        environment: [{name: MODE, value: scheduled}]
"#
    .to_string()
}

/// The records of `reconcile tasks` with `args`.
fn run_records(f: &Fleet, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["tasks", "--format", "json"];
    a.extend_from_slice(args);
    let (code, out, err) = f.cli(&a);
    assert_eq!(code, 0, "tasks: {out}{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn run_task_and_a_schedule_run_to_completion_and_are_never_restarted_through_the_controller() {
    let _serial = lock();
    let Some(f) = Fleet::start("runtask", &batch()) else {
        return;
    };
    f.wait_for(
        "the task definitions registered",
        Duration::from_secs(30),
        |f| {
            f.cli(&["run-task", "nothing", "--cluster", &f.cluster])
                .2
                .contains("registered: job, sleeper")
        },
    );

    // Exit 3: run-task --wait exits 3 and shows the end of the log.
    let (code, out, err) = f.cli(&[
        "run-task",
        "job",
        "--cluster",
        &f.cluster,
        "--wait",
        "--tail",
        "2",
    ]);
    assert_eq!(code, 3, "run-task --wait: {out}{err}");
    assert!(
        out.contains("exit code 3") && out.contains("the end") && !out.contains("job | start"),
        "{out}{err}"
    );
    let job = &run_records(&f, &["--family", "job"])[0];
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(job["stopCode"], "EssentialContainerExited", "{job}");
    assert_eq!(job["exits"][0]["exitCode"], 3, "{job}");

    // Never restarted: several heartbeats and a pass later, its one
    // container is still the exited one.
    f.sync_and_wait();
    std::thread::sleep(Duration::from_secs(2));
    let containers = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=reconcile.io/task={id}"),
        "--format",
        "{{.Status}}",
    ]);
    assert_eq!(containers.lines().count(), 1, "{containers}");
    assert!(containers.starts_with("Exited (3)"), "{containers}");
    assert_eq!(run_records(&f, &["--family", "job"]).len(), 1);

    // Five tasks spread over the zones as asked: 2, 2 and 1.
    let (code, out, err) = f.cli(&[
        "run-task",
        "sleeper",
        "--cluster",
        &f.cluster,
        "--count",
        "5",
        "--placement-strategy",
        "spread:attribute:zone",
        "--started-by",
        "batch-test",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches("started task").count(), 5, "{out}");
    f.wait_for("five sleepers running", Duration::from_secs(30), |f| {
        run_records(f, &["--status", "RUNNING", "--started-by", "batch-test"])
            .iter()
            .filter(|r| r["lastStatus"] == "RUNNING")
            .count()
            == 5
    });
    let mut spread = f.per_node();
    spread.sort();
    assert_eq!(spread, [1, 2, 2], "{:?}", f.running());

    // Unplaceable: the scheduler's reason, and nothing started.
    let (code, out, err) = f.cli(&[
        "run-task",
        "sleeper",
        "--cluster",
        &f.cluster,
        "--placement-constraint",
        "memberOf:attribute:zone == z9",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("failure: 1 task(s) not placed") && out.contains("memberOf"),
        "{out}{err}"
    );
    assert_eq!(run_records(&f, &["--status", "RUNNING"]).len(), 5);

    // stop-task: stopped with its reason, its container kept (exited).
    let victim = run_records(&f, &["--status", "RUNNING"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, out, err) = f.cli(&["stop-task", &victim[..12], "--reason", "no longer needed"]);
    assert_eq!(code, 0, "{out}{err}");
    f.wait_for("the stopped task's record", Duration::from_secs(30), |f| {
        run_records(f, &["--status", "STOPPED", "--family", "sleeper"]).len() == 1
    });
    let stopped = &run_records(&f, &["--status", "STOPPED", "--family", "sleeper"])[0];
    assert_eq!(
        (
            stopped["id"].as_str(),
            &stopped["stopCode"],
            &stopped["stoppedReason"]
        ),
        (
            Some(victim.as_str()),
            &Value::from("UserInitiated"),
            &Value::from("no longer needed")
        ),
        "{stopped}"
    );
    f.wait_for(
        "the stopped task's container to exit",
        Duration::from_secs(30),
        |_| {
            docker(&[
                "ps",
                "-a",
                "--filter",
                &format!("label=reconcile.io/task={victim}"),
                "--format",
                "{{.Status}}",
            ])
            .starts_with("Exited (143)")
        },
    );
    assert_eq!(f.running().len(), 4, "{:?}", f.running());
    let (_, text, _) = f.cli(&["tasks"]);
    assert!(
        text.contains("exit 143")
            && text.contains("no longer needed")
            && text.contains("batch-test"),
        "{text}"
    );

    // rate(1 minute): a run a minute after it was applied, with its
    // overrides; a controller restart in between starts no extra run.
    let runs = |f: &Fleet| -> Vec<Value> {
        let (code, out, err) = f.cli(&["history", "tick", "--format", "json"]);
        assert_eq!(code, 0, "history tick: {out}{err}");
        serde_json::from_str::<Value>(&out).unwrap()["runs"]
            .as_array()
            .unwrap()
            .clone()
    };
    f.wait_for("the first scheduled run", Duration::from_secs(90), |f| {
        runs(f).len() == 1
    });
    let first = runs(&f)[0].clone();
    assert_eq!(first["outcome"], "STARTED", "{first}");
    let mut f = f;
    f.kill_controller();
    std::thread::sleep(Duration::from_secs(2));
    f.restart_controller();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(runs(&f).len(), 1, "a restart started a run: {:?}", runs(&f));
    f.wait_for("the second scheduled run", Duration::from_secs(90), |f| {
        runs(f).len() == 2
    });
    std::thread::sleep(Duration::from_secs(5));
    let all = runs(&f);
    assert_eq!(all.len(), 2, "{all:?}");
    let second = &all[0];
    assert_eq!(
        second["scheduledAt"].as_i64().unwrap() - first["scheduledAt"].as_i64().unwrap(),
        60,
        "{all:?}"
    );
    assert!(second.get("missed").is_none(), "{second}");
    f.wait_for(
        "the scheduled runs' tasks to exit 0",
        Duration::from_secs(30),
        |f| runs(f).iter().all(|r| r["tasks"][0]["exitCode"] == 0),
    );
    let tick = run_records(&f, &["--started-by", "schedule/tick"]);
    assert_eq!(tick.len(), 2, "{tick:?}");
    let (_, text, _) = f.cli(&["history", "tick"]);
    assert!(
        text.contains("every minute")
            && text.matches("STARTED").count() == 2
            && text.contains("exit 0"),
        "{text}"
    );
    let id = tick[0]["id"].as_str().unwrap();
    let (_, logs, _) = f.cli(&["logs", id]);
    assert!(logs.contains("tick scheduled"), "{logs}");
}
