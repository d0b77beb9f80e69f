//! Rendering the controller's `/metrics` for 1,000 services against
//! HAProxy's built-in Prometheus exporter with 1,000 backends, measured in
//! one run. See BENCHMARKS.md.
//!
//! `cargo bench --bench metrics` (release). Env: METRICS_BENCH_SERVICES
//! (default 1000), METRICS_BENCH_ROUNDS (200).
//!
//! Ours is timed in-process: setting the gauges from a `View` of the
//! controller's state and encoding every metric. HAProxy's is timed as a
//! whole HTTP GET over loopback (its exporter has no other entry point).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reconcile::metrics::controller::{ControllerMetrics, NodeView, ServiceView, View};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn view(services: usize) -> View {
    View {
        services: (0..services)
            .map(|i| ServiceView {
                cluster: format!("cluster-{}", i % 4),
                name: format!("service-{i}"),
                desired: Some(3),
                running: 3,
                pending: (i % 7 == 0) as u32,
                deployments: vec![("PRIMARY", "IN_PROGRESS"), ("ACTIVE", "COMPLETED")],
            })
            .collect(),
        nodes: (0..100)
            .map(|i| NodeView {
                name: format!("node-{i}"),
                cluster: format!("cluster-{}", i % 4),
                status: "ACTIVE",
                heartbeat_age: Some(0.4),
            })
            .collect(),
        unplaced: vec![("cluster-0".into(), "service-0".into(), "memory", 2)],
        commit_age: Some(42.0),
        reservations: vec![("spot".into(), 80)],
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(what: &str, mut times: Vec<Duration>, bytes: usize) -> (Duration, Duration) {
    times.sort();
    let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
    println!(
        "{what:<40} p50 {:>8.3} ms  p99 {:>8.3} ms  ({bytes} bytes)",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    (p50, p99)
}

/// Stops HAProxy on every exit path.
struct HaProxy(Child);

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(port: u16) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn haproxy(backends: usize, rounds: usize) -> Result<(Duration, Duration), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let mut cfg = format!(
        "global\n  nbthread 1\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 10s\n  \
         timeout server 10s\nfrontend metrics\n  bind 127.0.0.1:{port}\n  \
         http-request use-service prometheus-exporter if {{ path /metrics }}\n"
    );
    for i in 0..backends {
        cfg.push_str(&format!(
            "backend service-{i}\n  server s1 127.0.0.1:9 disabled\n"
        ));
    }
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, cfg).map_err(|e| e.to_string())?;
    let child = Command::new("haproxy")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("haproxy: {e} (scripts/docker-setup.sh installs it)"))?;
    let _h = HaProxy(child);
    let began = Instant::now();
    while get(port).is_err() {
        if began.elapsed() > Duration::from_secs(10) {
            return Err("haproxy did not listen within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let first = get(port)?;
    if !first.contains("haproxy_backend_status") {
        return Err(format!(
            "haproxy's exporter answered no backend metrics: {}",
            &first[..first.len().min(300)]
        ));
    }
    let mut times = Vec::with_capacity(rounds);
    let mut bytes = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        bytes = get(port)?.len();
        times.push(t.elapsed());
    }
    Ok(report(
        &format!("HAProxy exporter, {backends} backends"),
        times,
        bytes,
    ))
}

fn main() {
    let services = env("METRICS_BENCH_SERVICES", 1000);
    let rounds = env("METRICS_BENCH_ROUNDS", 200).max(1);
    let m = ControllerMetrics::new();
    let v = view(services);
    for i in 0..services {
        m.pass("applied", 0.1 * i as f64);
    }
    // Warm-up: the families' series are created once.
    let text = m.render(&v);
    assert!(
        text.contains(
            "reconcile_service_running_tasks{cluster=\"cluster-1\",service=\"service-1\"} 3"
        ),
        "the render holds the services"
    );
    let mut times = Vec::with_capacity(rounds);
    let mut bytes = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        bytes = m.render(&v).len();
        times.push(t.elapsed());
    }
    let (ours, ours99) = report(
        &format!("reconcile controller, {services} services"),
        times,
        bytes,
    );
    match haproxy(services, rounds) {
        Ok((theirs, theirs99)) => println!(
            "ratio reconcile/HAProxy: p50 {:.2}, p99 {:.2}",
            ours.as_secs_f64() / theirs.as_secs_f64(),
            ours99.as_secs_f64() / theirs99.as_secs_f64()
        ),
        Err(e) => println!("HAProxy not measured: {e}"),
    }
}
