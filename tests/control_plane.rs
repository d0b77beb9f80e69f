//! A control plane that survives losing a machine: a real 3-member etcd
//! (Debian's etcd-server), three controllers sharing it and three agents
//! given all three controllers' URLs, on this host.
//!
//! One scenario, in order: the leader is killed (-9) during a rollout and
//! another takes over within the lease TTL plus 2 s, resuming the same
//! deployment without a duplicate or a restarted healthy task, while the
//! agents keep heartbeating; a leader paused (SIGSTOP) past its lease is
//! replaced and, resumed, steps down having written nothing (etcd's
//! revision history says who wrote); an etcd member lost changes nothing;
//! all of etcd lost leaves the tasks running and the controllers saying
//! so, and they recover when etcd returns.

#[path = "common/controller.rs"]
mod controller;
#[path = "common/etcd.rs"]
mod etcd;
#[path = "common/prereq.rs"]
mod prereq;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use controller::{bin, docker, free_port, outcome, wait_until, API, JOIN};
use serde_json::Value;

/// The leader's lease in seconds.
const TTL: u64 = 4;
/// Service tasks.
const TASKS: usize = 6;

struct Plane {
    dir: tempfile::TempDir,
    etcd: etcd::Etcd,
    cluster: String,
    ca: PathBuf,
    ports: Vec<u16>,
    controllers: Vec<Option<Child>>,
    agents: Vec<Child>,
}

impl Drop for Plane {
    fn drop(&mut self) {
        // Every log, kept for a look after a failure when asked.
        if let Some(keep) = std::env::var_os("RECONCILE_TEST_KEEP_LOGS") {
            let _ = std::fs::create_dir_all(&keep);
            for e in std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if e.path().extension().is_some_and(|x| x == "log") {
                    let _ =
                        std::fs::copy(e.path(), std::path::Path::new(&keep).join(e.file_name()));
                }
            }
        }
        for c in self
            .controllers
            .iter_mut()
            .flatten()
            .chain(&mut self.agents)
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        let filter = format!("label=reconcile.io/cluster={}", self.cluster);
        let ids = docker(&["ps", "-aq", "--filter", &filter]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids);
            docker(&args);
        }
    }
}

/// A Cluster, a TaskDefinition with a health check and a Service of `count`
/// tasks rolled two at a time, in version `version`.
fn manifests(cluster: &str, count: usize, version: &str) -> String {
    let check =
        "      healthCheck: {command: [CMD-SHELL, \"true\"], interval: 5, timeout: 2, retries: 1}\n";
    controller::app_manifests(cluster, count as u32, version).replace(
        "      environment:\n",
        &format!("{check}      environment:\n"),
    ) + "  deploymentConfiguration:
    minimumHealthyPercent: 66
    maximumPercent: 100
    deploymentCircuitBreaker: {enable: true, rollback: true}
"
}

impl Plane {
    fn url(&self, i: usize) -> String {
        format!("https://127.0.0.1:{}", self.ports[i])
    }

    fn urls(&self) -> String {
        (0..self.ports.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    fn tail(&self) -> String {
        let mut out = String::new();
        for name in ["c0", "c1", "c2", "agent-node0"] {
            let log = self.log(name);
            let lines: Vec<&str> = log.lines().collect();
            out.push_str(&format!(
                "--- {name}:\n{}\n",
                lines[lines.len().saturating_sub(15)..].join("\n")
            ));
        }
        out
    }

    fn log_file(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .unwrap()
    }

    fn data(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("data{i}"))
    }

    fn start_controller(&mut self, i: usize) {
        let d = self.dir.path();
        let child = Command::new(bin())
            .args(["controller", "--source"])
            .arg(d.join("src"))
            .arg("--data-dir")
            .arg(self.data(i))
            .args(["--store", &self.etcd.url()])
            .args(["--store-prefix", &format!("/reconcile/{}", self.cluster)])
            .args(["--lease-ttl", &TTL.to_string()])
            .args(["--listen", &format!("127.0.0.1:{}", self.ports[i])])
            .args(["--advertise-url", &self.url(i)])
            .arg("--tls-cert")
            .arg(d.join("pki/server.pem"))
            .arg("--tls-key")
            .arg(d.join("pki/server.key"))
            // How a follower reaches the leader to forward agents' routes.
            .arg("--ca-cert")
            .arg(&self.ca)
            .args([
                "--interval",
                "2",
                "--heartbeat-ms",
                "500",
                "--node-timeout",
                "10",
            ])
            .args(["--settle", "1", "--step-timeout", "60"])
            .env("RECONCILE_JOIN_TOKEN", JOIN)
            .env("RECONCILE_API_TOKEN", API)
            .stdin(Stdio::null())
            .stdout(self.log_file(&format!("c{i}")))
            .stderr(self.log_file(&format!("c{i}")))
            .spawn()
            .unwrap();
        self.controllers[i] = Some(child);
    }

    fn signal(&self, i: usize, signal: &str) {
        let pid = self.controllers[i].as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {signal} {pid}");
    }

    fn kill_controller(&mut self, i: usize) {
        let mut c = self.controllers[i].take().expect("running");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    fn start_agent(&mut self, name: &str) {
        let urls = self.urls();
        self.start_agent_at(name, &urls);
    }

    fn start_agent_at(&mut self, name: &str, urls: &str) {
        let d = self.dir.path();
        let child = Command::new(bin())
            .args(["agent", "--controller", urls])
            .args(["--cluster", &self.cluster, "--name", name])
            .args(["--cpu", "4096", "--memory", "4096", "--allow-overcommit"])
            .arg("--credential-file")
            .arg(d.join(format!("credentials/{name}.json")))
            .arg("--ca-cert")
            .arg(&self.ca)
            .arg("--no-dns")
            .env("RECONCILE_JOIN_TOKEN", JOIN)
            .stdin(Stdio::null())
            .stdout(self.log_file(&format!("agent-{name}")))
            .stderr(self.log_file(&format!("agent-{name}")))
            .spawn()
            .unwrap();
        self.agents.push(child);
    }

    /// `reconcile ARGS` against all three controllers.
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        outcome(
            Command::new(bin())
                .args(args)
                .args(["--controller", &self.urls()])
                .arg("--ca-cert")
                .arg(&self.ca)
                .env("RECONCILE_API_TOKEN", API)
                .stdin(Stdio::null())
                .output()
                .unwrap(),
        )
    }

    fn json(&self, args: &[&str]) -> Option<Value> {
        let mut args = args.to_vec();
        args.extend(["--format", "json"]);
        let (code, out, _) = self.cli(&args);
        (code == 0)
            .then(|| serde_json::from_str(&out).ok())
            .flatten()
    }

    /// The leader's index, if one leads, as etcd's election says: the
    /// candidate key created first (a paused controller cannot answer).
    fn leader(&self) -> Option<usize> {
        let election = format!("/reconcile/{}/election/", self.cluster);
        let out = self.etcd.ctl_maybe(&[
            "get",
            &election,
            "--prefix",
            "--sort-by=CREATE",
            "--order=ASCEND",
            "--print-value-only",
        ])?;
        let url = out.lines().next()?.trim().to_string();
        (0..self.ports.len()).find(|i| self.url(*i) == url)
    }

    fn wait_for(&self, what: &str, limit: Duration, ok: impl Fn(&Self) -> bool) -> Duration {
        wait_until(what, limit, || ok(self), || self.tail())
    }

    /// Running task containers: (task id, MODE, started at), sorted.
    fn running(&self) -> Vec<(String, String, String)> {
        let filter = format!("label=reconcile.io/cluster={}", self.cluster);
        let ids = docker(&["ps", "-q", "--filter", &filter]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Vec::new();
        }
        let mut args = vec![
            "inspect",
            "--format",
            "{{index .Config.Labels \"reconcile.io/task\"}} {{range .Config.Env}}{{.}} {{end}}|{{.State.StartedAt}}",
        ];
        args.extend(ids);
        let mut v: Vec<(String, String, String)> = docker(&args)
            .lines()
            .filter_map(|l| {
                let (left, started) = l.split_once('|')?;
                let task = left.split_whitespace().next()?.to_string();
                let mode = left
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("MODE="))
                    .unwrap_or_default()
                    .to_string();
                Some((task, mode, started.trim().to_string()))
            })
            .collect();
        v.sort();
        v
    }

    fn assert_all_nodes_active(&self) {
        let nodes = self.json(&["nodes"]).unwrap();
        let active = nodes
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["status"] == "ACTIVE");
        assert!(active, "{nodes:#}");
    }

    fn newest(&self) -> Option<Value> {
        let s = self.json(&["status"])?;
        Some(s["services"][0]["deployments"][0].clone())
    }
}

/// Every change of `key` from revision `from` on: (revision, value), the
/// value empty for a deletion.
fn history(etcd: &etcd::Etcd, key: &str, from: i64) -> Vec<(i64, String)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let endpoints: Vec<String> = etcd
        .members
        .iter()
        .map(|m| format!("http://127.0.0.1:{}", m.client_port))
        .collect();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect(endpoints, None).await.unwrap();
        let now = c.get(key, None).await.unwrap().header().unwrap().revision();
        let mut stream = c
            .watch(
                key,
                Some(etcd_client::WatchOptions::new().with_start_revision(from)),
            )
            .await
            .unwrap();
        let mut out = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(2), stream.message()).await;
            let Ok(Ok(Some(r))) = next else { break };
            for e in r.events() {
                if let Some(kv) = e.kv() {
                    let value = match e.event_type() {
                        etcd_client::EventType::Delete => String::new(),
                        etcd_client::EventType::Put => {
                            String::from_utf8_lossy(kv.value()).into_owned()
                        }
                    };
                    out.push((kv.mod_revision(), value));
                }
            }
            if out.last().is_some_and(|(rev, _)| *rev >= now) {
                break;
            }
        }
        out
    })
}

fn copy_key(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(from.join("secrets.key"), to.join("secrets.key")).unwrap();
}

#[test]
fn three_controllers_on_etcd_fail_over_fence_and_outlive_etcd_losses() {
    let missing = [prereq::docker(), etcd::unavailable()];
    if !prereq::satisfied(missing.into_iter().flatten()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = controller::test_ca(&dir.path().join("pki"), Some("127.0.0.1"));
    let cluster = format!("cp{}", std::process::id());
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    let source = dir.path().join("src/app.yaml");
    let write_source = |count: usize, version: &str| {
        std::fs::write(&source, manifests(&cluster, count, version)).unwrap();
    };
    write_source(TASKS, "1");
    let mut p = Plane {
        etcd: etcd::Etcd::start(3),
        cluster: cluster.clone(),
        ca,
        ports: (0..3)
            .map(|_| free_port(Ipv4Addr::LOCALHOST.into()))
            .collect(),
        controllers: vec![None, None, None],
        agents: Vec::new(),
        dir,
    };

    // The first controller makes the installation's key; the others get
    // a copy, as an operator would give them.
    p.start_controller(0);
    p.wait_for("controller 0 elected", Duration::from_secs(30), |p| {
        p.log("c0").contains("elected leader") && p.data(0).join("secrets.key").exists()
    });
    for i in 1..3 {
        copy_key(&p.data(0), &p.data(i));
        p.start_controller(i);
    }
    p.wait_for(
        "three controllers, one leading",
        Duration::from_secs(30),
        |p| {
            p.json(&["controllers"])
                .is_some_and(|c| c["controllers"].as_array().is_some_and(|v| v.len() == 3))
        },
    );
    assert_eq!(p.leader(), Some(0));
    let (code, out, err) = p.cli(&["controllers"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("{} ", p.url(0)))
            && out.lines().filter(|l| l.contains("follower")).count() == 2,
        "{out}"
    );
    // A follower forwards what it does not hold to the leader: status,
    // which needs what agents report, through controller 1 alone.
    let (code, out, err) = outcome(
        Command::new(bin())
            .args([
                "status",
                "--format",
                "json",
                "--controller",
                &p.url(1),
                "--ca-cert",
            ])
            .arg(&p.ca)
            .env("RECONCILE_API_TOKEN", API)
            .output()
            .unwrap(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(serde_json::from_str::<Value>(&out).is_ok(), "{out}");
    let ca = p.ca.clone();
    let curl = |url: String| {
        let out = Command::new("curl")
            .args(["-s", "-i", "--cacert"])
            .arg(&ca)
            .args(["-H", &format!("Authorization: Bearer {API}")])
            .arg(url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
    };
    let reply = curl(format!("{}/v1/status", p.url(1)));
    assert!(
        reply.starts_with("http/1.1 200")
            && reply.contains("reconcile-served-by: follower, forwarded to the leader"),
        "{reply}"
    );
    for i in 0..3 {
        p.start_agent(&format!("node{i}"));
    }
    p.wait_for(
        "6 tasks of version 1, deployment completed",
        Duration::from_secs(120),
        |p| {
            let r = p.running();
            r.len() == TASKS
                && r.iter().all(|t| t.1 == "1")
                && p.newest().is_some_and(|d| d["rolloutState"] == "COMPLETED")
        },
    );

    // A follower answers reads of what the store holds, from its view of
    // etcd (following it by a watch), and says so.
    let follower_json = |i: usize, args: &[&str]| -> Option<Value> {
        let out = Command::new(bin())
            .args(args)
            .args(["--format", "json", "--controller", &p.url(i), "--ca-cert"])
            .arg(&p.ca)
            .env("RECONCILE_API_TOKEN", API)
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    };
    let follower = (0..3).find(|i| Some(*i) != p.leader()).unwrap();
    p.wait_for(
        "a follower's view of the nodes",
        Duration::from_secs(20),
        |_| {
            follower_json(follower, &["nodes"]).is_some_and(|n| {
                n.as_array()
                    .is_some_and(|v| v.len() == 3 && v.iter().all(|n| n["status"] == "ACTIVE"))
            })
        },
    );
    let service = format!("{}/app", p.cluster);
    let h = follower_json(follower, &["history", &service]).expect("history from a follower");
    assert_eq!(h["deployments"].as_array().map(Vec::len), Some(1), "{h:#}");
    let reply = curl(format!("{}/v1/nodes", p.url(follower)));
    assert!(
        reply.contains("reconcile-served-by: follower\r\n"),
        "{reply}"
    );

    // --- kill -9 the leader during a rollout.
    write_source(TASKS, "2");
    let (code, out, err) = p.cli(&["sync"]);
    assert_eq!(code, 0, "{out}{err}");
    p.wait_for("the rollout's first step", Duration::from_secs(60), |p| {
        let new = p.running().iter().filter(|t| t.1 == "2").count();
        (2..TASKS).contains(&new)
    });
    let dep = p.newest().unwrap();
    assert_eq!(dep["rolloutState"], "IN_PROGRESS", "{dep:#}");
    let before: Vec<(String, String, String)> =
        p.running().into_iter().filter(|t| t.1 == "2").collect();
    let leader = p.leader().unwrap();
    p.kill_controller(leader);
    let killed = Instant::now();
    let took = p.wait_for("a new leader", Duration::from_secs(TTL + 10), |p| {
        p.leader().is_some_and(|l| l != leader)
    });
    assert!(
        killed.elapsed() <= Duration::from_secs(TTL + 2) + Duration::from_millis(500),
        "a new leader {took:?} after the kill (lease {TTL} s)"
    );
    let second = p.leader().unwrap();
    p.wait_for(
        "the rollout resumed and completed",
        Duration::from_secs(120),
        |p| {
            let r = p.running();
            // No task runs twice, and never more new tasks than the service
            // has (old ones may still be stopping for a moment).
            let ids: std::collections::BTreeSet<&String> = r.iter().map(|t| &t.0).collect();
            let new = r.iter().filter(|t| t.1 == "2").count();
            assert!(ids.len() == r.len() && new <= TASKS, "{r:?}\n{}", p.tail());
            r.len() == TASKS
                && r.iter().all(|t| t.1 == "2")
                && p.newest().is_some_and(|d| d["rolloutState"] == "COMPLETED")
        },
    );
    let after = p.newest().unwrap();
    assert_eq!(after["id"], dep["id"], "the same deployment: {after:#}");
    assert_eq!(after["failedTasks"], dep["failedTasks"], "{after:#}");
    let now = p.running();
    for t in &before {
        assert!(
            now.contains(t),
            "task {t:?}, healthy before the kill, was restarted or replaced: {now:?}"
        );
    }
    let ids: std::collections::BTreeSet<&String> = now.iter().map(|t| &t.0).collect();
    assert_eq!(ids.len(), TASKS, "one container per task: {now:?}");
    // The agents kept heartbeating: no node was ever lost.
    for i in 0..3 {
        assert!(!p.log(&format!("c{i}")).contains("is LOST"), "{}", p.tail());
    }
    p.assert_all_nodes_active();
    p.start_controller(leader);

    // --- SIGSTOP the leader past its lease and the node timeout (so that,
    // resumed, it finds every node silent and tries to mark them lost),
    // then SIGCONT.
    let writer = format!("/reconcile/{}/writer", p.cluster);
    let paused_at = p.etcd.revision();
    let paused_key = history(&p.etcd, &writer, 1)
        .last()
        .map(|w| w.1.clone())
        .expect("the leader has written");
    p.signal(second, "-STOP");
    p.wait_for(
        "a leader while one is paused",
        Duration::from_secs(TTL + 10),
        |p| p.leader().is_some_and(|l| l != second),
    );
    let third = p.leader().unwrap();
    std::thread::sleep(Duration::from_secs(12));
    p.signal(second, "-CONT");
    p.wait_for(
        "the paused leader stepped down",
        Duration::from_secs(20),
        |p| p.log(&format!("c{second}")).contains("lost the leadership"),
    );
    std::thread::sleep(Duration::from_secs(2));
    // Its leader key went with its lease; nothing was written in its name
    // after that.
    let expired = history(&p.etcd, &paused_key, paused_at)
        .into_iter()
        .find(|(_, v)| v.is_empty())
        .expect("the paused leader's key was deleted")
        .0;
    let late: Vec<(i64, String)> = history(&p.etcd, &writer, expired)
        .into_iter()
        .filter(|w| w.1 == paused_key)
        .collect();
    assert!(
        late.is_empty(),
        "written by the paused leader after its lease: {late:?}"
    );
    assert_eq!(p.leader(), Some(third));
    // The leader never found a node lost; what the resumed one thought
    // it saw was refused by etcd.
    assert!(
        !p.log(&format!("c{third}")).contains("is LOST"),
        "{}",
        p.tail()
    );
    p.assert_all_nodes_active();

    // --- One etcd member lost: the controllers carry on.
    p.etcd.kill(0);
    write_source(TASKS - 2, "2");
    let (code, out, err) = p.cli(&["sync"]);
    assert_eq!(code, 0, "{out}{err}");
    p.wait_for(
        "scaled in to 4 with a member down",
        Duration::from_secs(60),
        |p| p.running().len() == TASKS - 2,
    );

    // --- All of etcd lost: tasks keep running, controllers say so.
    let running = p.running();
    p.etcd.kill(1);
    p.etcd.kill(2);
    p.wait_for(
        "the controllers report etcd gone",
        Duration::from_secs(60),
        |p| {
            let (code, out, err) = p.cli(&["status"]);
            code != 0 && (out + &err).contains("no controller leads")
        },
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(p.running(), running, "tasks kept running without etcd");

    // --- etcd returns: a leader again, and changes are applied.
    for i in 0..3 {
        p.etcd.restart(i);
    }
    p.wait_for(
        "a leader after etcd returned",
        Duration::from_secs(60),
        |p| p.leader().is_some(),
    );
    write_source(TASKS, "2");
    let (code, out, err) = p.cli(&["sync"]);
    assert_eq!(code, 0, "{out}{err}");
    p.wait_for("6 tasks again", Duration::from_secs(90), |p| {
        p.running().len() == TASKS
    });
    let (code, out, err) = p.cli(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 0, "nothing left to do:\n{out}\n{err}");

    // --- An agent given one follower's URL only: the follower forwards
    // its join, heartbeats and long polls to the leader, so they count.
    let leader = p.leader().unwrap();
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let url = p.url(follower);
    p.start_agent_at("node3", &url);
    p.wait_for(
        "node3 active through a follower",
        Duration::from_secs(30),
        |p| {
            p.json(&["nodes"]).is_some_and(|n| {
                n.as_array().is_some_and(|v| {
                    v.iter()
                        .any(|n| n["name"] == "node3" && n["status"] == "ACTIVE")
                })
            })
        },
    );
    assert!(
        p.log("agent-node3").contains("connected"),
        "{}",
        p.log("agent-node3")
    );
}
