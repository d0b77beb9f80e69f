//! A `reconcile controller` and its agents run as processes, for the fleet
//! and GitOps tests: `#[path = "common/controller.rs"] mod controller;`.
//! Logs go to files in the harness's temp dir; the CLI talks to the
//! controller with the API token; dropping the harness kills what it
//! started and removes every container of its cluster, even when a test
//! fails.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const JOIN: &str = "join-token-for-tests-0123";
pub const API: &str = "api-token-for-tests-45678";

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_reconcile"))
}

/// `docker ARGS`' standard output.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A port nobody listens on at `ip` right now.
pub fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Exit code (-1 when killed), standard output and standard error.
pub fn outcome(out: Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One HTTP/1.1 POST over a fresh connection, exactly as written:
/// `headers` are whole lines (`Name: value\r\n`). Returns the status code
/// (0 when the reply has none) and the whole reply.
pub fn post(addr: SocketAddr, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
    request(addr, "POST", path, headers, body)
}

/// One HTTP/1.1 request of any method, as [`post`] makes them.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let code = reply
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, reply)
}

/// Poll `ok` until it holds; returns how long that took. Panics after
/// `limit`, with `diagnosis` of the state then.
pub fn wait_until(
    what: &str,
    limit: Duration,
    mut ok: impl FnMut() -> bool,
    diagnosis: impl FnOnce() -> String,
) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "timed out after {limit:?} waiting for {what}; {}",
        diagnosis()
    );
}

/// A test CA (`ca.pem`) in `dir` and, with `server`, a certificate it
/// issued for that name or address (`server.pem`, key in `server.key`).
/// Returns the CA's path.
pub fn test_ca(dir: &Path, server: Option<&str>) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "reconcile test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    if let Some(name) = server {
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    }
    dir.join("ca.pem")
}

/// A Cluster, a TaskDefinition `app` (one container sleeping, its
/// environment `MODE=mode`) and a Service `app` of `count` tasks.
pub fn app_manifests(cluster: &str, count: u32, mode: &str) -> String {
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
      command: [sleep, "3600"]
      memory: 32
      stopTimeout: 1
      environment:
        - {{name: MODE, value: "{mode}"}}
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {{name: app}}
spec:
  cluster: {cluster}
  taskDefinition: app
  desiredCount: {count}
"#
    )
}

/// How the controller is started (and started again after a kill).
#[derive(Clone)]
pub struct ControllerArgs {
    /// What follows `--source`: the source and its options.
    pub source: Vec<OsString>,
    /// Seconds between reconcile passes.
    pub interval: u32,
    /// Seconds without a heartbeat before a node is LOST.
    pub node_timeout: u32,
    /// Environment besides the join and API tokens.
    pub env: Vec<(String, String)>,
}

/// A controller on `ip`, the agents of its cluster and their logs, and
/// whatever else a test file needs beside them (`ext`: a network lab, a git
/// remote), dropped after the processes have been killed.
pub struct Harness<X> {
    pub dir: tempfile::TempDir,
    pub cluster: String,
    pub ip: IpAddr,
    pub port: u16,
    /// With TLS: the CA that signed the controller's certificate.
    pub ca: Option<PathBuf>,
    /// With the controller's own TLS (no TLS flags): the CA hash it
    /// logged, which agents and the CLI pin.
    pub ca_hash: Option<String>,
    default_tls: bool,
    pub controller: Option<Child>,
    pub agents: Vec<Option<Child>>,
    args: Option<ControllerArgs>,
    pub ext: X,
}

impl<X> Drop for Harness<X> {
    fn drop(&mut self) {
        for c in self
            .agents
            .iter_mut()
            .flatten()
            .chain(self.controller.as_mut())
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        let ids = self.container_ids(true);
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.iter().map(String::as_str));
            docker(&args);
        }
    }
}

impl<X> Harness<X> {
    /// Nothing started yet: a temp dir, a free port on `ip`, and `ext`
    /// made in that temp dir.
    pub fn create(cluster: String, ip: IpAddr, ext: impl FnOnce(&Path) -> X) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Harness {
            ext: ext(dir.path()),
            dir,
            cluster,
            ip,
            port: free_port(ip),
            ca: None,
            ca_hash: None,
            default_tls: false,
            controller: None,
            agents: Vec::new(),
            args: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() || self.default_tls {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr())
    }

    /// Serve HTTPS with a certificate of a test CA (call before starting
    /// the controller); agents and the CLI trust that CA.
    pub fn use_tls(&mut self) {
        let ip = self.ip.to_string();
        self.ca = Some(test_ca(&self.dir.path().join("pki"), Some(&ip)));
    }

    /// Run fleet mode as a user would: the controller with no TLS flags
    /// (it makes its own CA), agents and the CLI given only the CA hash
    /// it logs. Call before starting the controller.
    pub fn use_default_tls(&mut self) {
        self.default_tls = true;
    }

    /// The flags that make an agent or the CLI trust this controller.
    fn trust_args(&self) -> Vec<OsString> {
        match (&self.ca_hash, &self.ca) {
            (Some(h), _) => vec!["--ca-hash".into(), h.into()],
            (None, Some(ca)) => vec!["--ca-cert".into(), ca.into()],
            (None, None) => vec!["--plain-http".into()],
        }
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// The log file `name` (`controller`, `agent-NODE`), to append to.
    pub fn log_file(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))
            .unwrap()
    }

    /// The whole of log `name`.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    /// The last 40 lines of log `name`, for failure messages.
    pub fn tail(&self, name: &str) -> String {
        let text = self.log(name);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Every log so far, the controller's and every agent's: (name, text).
    pub fn logs(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                let name = name.strip_suffix(".log")?.to_string();
                Some((name.clone(), self.log(&name)))
            })
            .collect();
        v.sort();
        v
    }

    /// Start the controller and wait until it listens.
    pub fn start_controller(&mut self, args: ControllerArgs) {
        self.args = Some(args);
        self.restart_controller();
    }

    /// Kill the controller and wait until it has exited.
    pub fn kill_controller(&mut self) {
        let mut c = self.controller.take().expect("a controller runs");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// Start the controller again as it was started last (after
    /// [`Harness::kill_controller`]).
    pub fn restart_controller(&mut self) {
        assert!(self.controller.is_none(), "the controller still runs");
        let args = self.args.clone().expect("started before");
        let d = self.dir.path();
        let mut cmd = Command::new(bin());
        cmd.args(["controller", "--source"])
            .args(&args.source)
            .arg("--data-dir")
            .arg(d.join("data"))
            .args(["--listen", &self.addr().to_string()])
            .args(["--interval", &args.interval.to_string()])
            .args(["--heartbeat-ms", "500"])
            .args(["--node-timeout", &args.node_timeout.to_string()])
            .args(["--settle", "1", "--step-timeout", "60"]);
        if self.ca.is_some() {
            cmd.arg("--tls-cert")
                .arg(d.join("pki/server.pem"))
                .arg("--tls-key")
                .arg(d.join("pki/server.key"));
        } else if !self.default_tls {
            cmd.arg("--plain-http");
        }
        let logged_before = self.log("controller").len();
        let child = cmd
            .env("RECONCILE_JOIN_TOKEN", JOIN)
            .env("RECONCILE_API_TOKEN", API)
            .envs(args.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(self.log_file("controller"))
            .stderr(self.log_file("controller"))
            .spawn()
            .unwrap();
        self.controller = Some(child);
        let addr = self.addr();
        wait_until(
            "the controller to listen",
            Duration::from_secs(20),
            || TcpStream::connect(addr).is_ok(),
            || format!("controller log:\n{}", self.tail("controller")),
        );
        if self.default_tls {
            // The hash as this start logged it (it logs before listening).
            let log = self.log("controller");
            let hash = log[logged_before..]
                .split("CA hash: ")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .unwrap_or_else(|| panic!("no CA hash in the controller log:\n{log}"));
            self.ca_hash = Some(hash.to_string());
        }
    }

    /// Run `cmd` (the `reconcile` binary, possibly inside a namespace) as
    /// agent `name` of the cluster, logging to `agent-NAME`.
    pub fn spawn_agent(&self, mut cmd: Command, name: &str, extra: &[String]) -> Child {
        cmd.args(["agent", "--controller", &self.url()])
            .args(["--cluster", &self.cluster, "--name", name])
            .args(["--cpu", "4096", "--memory", "4096", "--allow-overcommit"])
            .arg("--credential-file")
            .arg(self.dir.path().join(format!("credentials/{name}.json")))
            .args(extra)
            .args(self.trust_args());
        let log = format!("agent-{name}");
        cmd.env("RECONCILE_JOIN_TOKEN", JOIN)
            .stdin(Stdio::null())
            .stdout(self.log_file(&log))
            .stderr(self.log_file(&log))
            .spawn()
            .unwrap()
    }

    /// `reconcile ARGS --controller URL` with the API token: exit code,
    /// standard output and standard error.
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .args(["--controller", &self.url()])
            .args(self.trust_args());
        outcome(
            cmd.env("RECONCILE_API_TOKEN", API)
                .stdin(Stdio::null())
                .output()
                .unwrap(),
        )
    }

    /// `status --format json`, which must succeed.
    pub fn status(&self) -> Value {
        let (code, out, err) = self.cli(&["status", "--format", "json"]);
        assert_eq!(code, 0, "status failed: {out}{err}");
        serde_json::from_str(&out).unwrap()
    }

    /// Reconcile passes the controller has completed.
    pub fn passes(&self) -> u64 {
        self.status()["passes"].as_u64().expect("status has passes")
    }

    /// Ask for a reconcile now (`POST /v1/sync`) and wait until the pass
    /// that serves the request has completed: everything that happened
    /// before this call has been seen by a whole pass since. Returns that
    /// pass's number.
    pub fn sync_and_wait(&self) -> u64 {
        assert!(
            self.ca.is_none() && !self.default_tls,
            "sync_and_wait speaks plain HTTP"
        );
        let (code, reply) = post(
            self.addr(),
            "/v1/sync",
            &format!("Authorization: Bearer {API}\r\n"),
            b"",
        );
        assert_eq!(code, 202, "{reply}");
        let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
        let until = serde_json::from_str::<Value>(body).unwrap()["untilPass"]
            .as_u64()
            .unwrap_or_else(|| panic!("no untilPass in {reply}"));
        wait_until(
            &format!("reconcile pass {until}"),
            Duration::from_secs(120),
            || self.passes() >= until,
            || format!("controller log:\n{}", self.tail("controller")),
        );
        until
    }

    /// IDs of the cluster's containers: running ones, or `all`.
    pub fn container_ids(&self, all: bool) -> Vec<String> {
        let filter = format!("label=reconcile.io/cluster={}", self.cluster);
        let mut args = vec!["ps", "-q", "--filter", &filter];
        if all {
            args.push("-a");
        }
        docker(&args)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// Running containers of the cluster: (task id, node), sorted.
    pub fn running(&self) -> Vec<(String, String)> {
        let out = docker(&[
            "ps",
            "--filter",
            &format!("label=reconcile.io/cluster={}", self.cluster),
            "--format",
            "{{.Label \"reconcile.io/task\"}} {{.Label \"reconcile.io/node\"}}",
        ]);
        let mut v: Vec<(String, String)> = out
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        v.sort();
        v
    }

    /// Poll `ok` until it holds; returns how long that took. Panics after
    /// `limit`, showing what runs and the controller's log.
    pub fn wait_for(&self, what: &str, limit: Duration, ok: impl Fn(&Self) -> bool) -> Duration {
        wait_until(
            what,
            limit,
            || ok(self),
            || {
                format!(
                    "running (task, node): {:?}\ncontroller log:\n{}",
                    self.running(),
                    self.tail("controller")
                )
            },
        )
    }

    /// Every container of the cluster with its state and the time it
    /// started: equal before and after means nothing was restarted or
    /// replaced.
    pub fn started_at(&self) -> Vec<String> {
        let mut args = vec![
            "inspect",
            "--format",
            "{{.Id}} {{.State.Status}} {{.State.StartedAt}}",
        ];
        let ids = self.container_ids(true);
        args.extend(ids.iter().map(String::as_str));
        let mut v: Vec<String> = docker(&args).lines().map(str::to_string).collect();
        v.sort();
        v
    }
}
