//! Prometheus metrics as an operator uses them: a controller over its own
//! TLS and an agent serving `--metrics-listen`, a service of two tasks in
//! Docker. Both `/metrics` refuse a scrape without the token, pass
//! `promtool check metrics`, and a real Prometheus scraping both with
//! bearer credential files sees the service's two running tasks and the
//! agent up. Needs Docker with `busybox:stable`, curl and Debian's
//! `prometheus` (`scripts/docker-setup.sh`): without them the test fails
//! under CI and is skipped, saying so, elsewhere.

#[path = "common/controller.rs"]
mod controller;
#[path = "common/prereq.rs"]
mod prereq;

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use controller::{app_manifests, bin, free_port, wait_until, ControllerArgs, Harness};
use serde_json::Value;

const AGENT_METRICS_TOKEN: &str = "agent-metrics-token-0123456789";

/// `curl` GET of `url`: status code and body. `ca`: the CA to trust;
/// `token`: a bearer token.
fn get(url: &str, ca: Option<&Path>, token: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"]);
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.arg(url).output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// `promtool check metrics` on `text`: its verdict and what it said.
fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Prometheus, killed when dropped.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An instant query's result vector.
fn query(port: u16, q: &str) -> Vec<Value> {
    let url = format!(
        "http://127.0.0.1:{port}/api/v1/query?query={}",
        q.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    );
    let (_, body) = get(&url, None, None);
    serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["data"]["result"].as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn controller_and_agent_metrics_pass_promtool_and_a_real_prometheus_scrapes_them() {
    let missing =
        prereq::docker()
            .into_iter()
            .chain(prereq::tools(&["curl", "promtool", "prometheus"]));
    if !prereq::satisfied(missing) {
        return;
    }
    let cluster = format!("t{}metrics", std::process::id());
    let ip: IpAddr = [127, 0, 0, 1].into();
    let mut h = Harness::create(cluster.clone(), ip, |_| ());
    let src = h.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("app.yaml"), app_manifests(&cluster, 2, "m")).unwrap();
    h.use_default_tls();
    h.start_controller(ControllerArgs {
        source: vec![src.into()],
        interval: 2,
        node_timeout: 5,
        env: Vec::new(),
    });
    let ca = h.dir.path().join("data/tls/ca.pem");

    // The agent refuses to serve metrics without a token.
    let metrics_port = free_port(ip);
    let listen = format!("127.0.0.1:{metrics_port}");
    let out = Command::new(bin())
        .args(["agent", "--controller", &h.url(), "--cluster", &cluster])
        .args(["--metrics-listen", &listen])
        .env("RECONCILE_JOIN_TOKEN", controller::JOIN)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("--metrics-token-file"), "{err}");

    let token_file = h.dir.path().join("agent-metrics-token");
    std::fs::write(&token_file, format!("{AGENT_METRICS_TOKEN}\n")).unwrap();
    let extra = [
        "--no-dns".to_string(),
        "--stats-interval".into(),
        "1".into(),
        "--metrics-listen".into(),
        listen.clone(),
        "--metrics-token-file".into(),
        token_file.display().to_string(),
    ];
    let agent = h.spawn_agent(Command::new(bin()), "node0", &extra);
    h.agents.push(Some(agent));
    h.wait_for("both tasks to run", Duration::from_secs(120), |h| {
        h.running().len() == 2
    });

    // A reader token scrapes the controller; nothing else does.
    let (code, out, err) = h.cli(&[
        "token",
        "create",
        "prometheus",
        "--role",
        "reader",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let reader = created["token"].as_str().expect("a token").to_string();
    let controller_url = format!("{}/metrics", h.url());
    assert_eq!(get(&controller_url, Some(&ca), None).0, 401);
    assert_eq!(
        get(&controller_url, Some(&ca), Some("wrong-token-0123456789")).0,
        401
    );
    let agent_url = format!("http://{listen}/metrics");
    assert_eq!(get(&agent_url, None, None).0, 401);
    assert_eq!(get(&agent_url, None, Some("wrong")).0, 401);

    let service_line =
        format!("reconcile_service_running_tasks{{cluster=\"{cluster}\",service=\"app\"}} 2");
    wait_until(
        "the controller's metrics to show 2 running tasks",
        Duration::from_secs(30),
        || {
            get(&controller_url, Some(&ca), Some(&reader))
                .1
                .lines()
                .any(|l| l == service_line)
        },
        || get(&controller_url, Some(&ca), Some(&reader)).1,
    );
    let (code, controller_text) = get(&controller_url, Some(&ca), Some(&reader));
    assert_eq!(code, 200, "{controller_text}");
    // Per-task usage: a memory series for each of the two tasks, named by
    // task and service, once the collector has taken two samples.
    let series = |text: &str, name: &str| {
        text.lines()
            .filter(|l| {
                l.starts_with(&format!("{name}{{"))
                    && l.contains(&format!("service=\"{cluster}/app\""))
            })
            .count()
    };
    // CPU needs two samples, memory one.
    wait_until(
        "the agent's metrics to show both tasks' CPU and memory",
        Duration::from_secs(30),
        || {
            let text = get(&agent_url, None, Some(AGENT_METRICS_TOKEN)).1;
            series(&text, "reconcile_agent_task_memory_bytes") == 2
                && series(&text, "reconcile_agent_task_cpu_units") == 2
        },
        || get(&agent_url, None, Some(AGENT_METRICS_TOKEN)).1,
    );
    let (code, agent_text) = get(&agent_url, None, Some(AGENT_METRICS_TOKEN));
    assert_eq!(code, 200, "{agent_text}");

    assert!(
        agent_text
            .lines()
            .any(|l| l == "reconcile_agent_tasks{state=\"RUNNING\"} 2"),
        "{agent_text}"
    );
    assert!(
        agent_text
            .lines()
            .any(|l| l.starts_with("reconcile_agent_container_starts_total ")
                && l != "reconcile_agent_container_starts_total 0"),
        "{agent_text}"
    );
    for (what, text) in [("controller", &controller_text), ("agent", &agent_text)] {
        let (ok, said) = promtool(text);
        assert!(ok, "promtool on the {what}'s metrics: {said}\n{text}");
    }

    // A real Prometheus, with the tokens in credential files.
    let reader_file = h.dir.path().join("reader-token");
    std::fs::write(&reader_file, &reader).unwrap();
    let prom_port = free_port(ip);
    let config = h.dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            r#"global: {{scrape_interval: 1s, scrape_timeout: 1s}}
scrape_configs:
  - job_name: controller
    scheme: https
    authorization: {{type: Bearer, credentials_file: {reader}}}
    tls_config: {{ca_file: {ca}}}
    static_configs: [{{targets: ["{controller}"]}}]
  - job_name: agents
    authorization: {{type: Bearer, credentials_file: {agent_token}}}
    static_configs: [{{targets: ["{listen}"]}}]
"#,
            reader = reader_file.display(),
            ca = ca.display(),
            controller = h.addr(),
            agent_token = token_file.display(),
        ),
    )
    .unwrap();
    let _prometheus = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                h.dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdin(Stdio::null())
            .stdout(h.log_file("prometheus"))
            .stderr(h.log_file("prometheus"))
            .spawn()
            .expect("prometheus starts"),
    );
    let running =
        format!("reconcile_service_running_tasks{{service=\"app\",cluster=\"{cluster}\"}}");
    wait_until(
        "Prometheus to have the service's 2 running tasks",
        Duration::from_secs(60),
        || {
            query(prom_port, &running)
                .first()
                .is_some_and(|r| r["value"][1] == "2")
        },
        || {
            format!(
                "query: {:?}\ntargets: {}\nprometheus log:\n{}",
                query(prom_port, &running),
                get(
                    &format!("http://127.0.0.1:{prom_port}/api/v1/targets"),
                    None,
                    None
                )
                .1,
                h.tail("prometheus")
            )
        },
    );
    wait_until(
        "Prometheus to see the agent up",
        Duration::from_secs(30),
        || {
            query(prom_port, "up{job=\"agents\"}")
                .first()
                .is_some_and(|r| r["value"][1] == "1")
        },
        || {
            get(
                &format!("http://127.0.0.1:{prom_port}/api/v1/targets"),
                None,
                None,
            )
            .1
        },
    );
}
