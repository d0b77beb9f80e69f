//! Listener vs HAProxy vs direct, measured with wrk in one run on the same
//! four busybox httpd containers. See BENCHMARKS.md.
//!
//! `cargo bench --bench lb` (release). Env: LB_BENCH_SECONDS (default 10),
//! LB_BENCH_CONNECTIONS (32), LB_BENCH_ROUNDS (1).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reconcile::lb::{Algorithm, ListenerSpec, Listeners, Protocol, Target};

const LABEL: &str = "reconcile-bench=lb";
const IMAGE: &str = "busybox:stable";
const BACKENDS: usize = 4;
/// Threads given to each proxy: one HAProxy thread, one tokio worker.
const PROXY_THREADS: usize = 1;

type Result<T> = std::result::Result<T, String>;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Removes the benchmark's containers and stops HAProxy on every exit path,
/// panics included.
struct Cleanup {
    haproxy: Option<Child>,
}

impl Cleanup {
    fn remove_containers() {
        if let Ok(ids) =
            run(Command::new("docker").args(["ps", "-aq", "--filter", &format!("label={LABEL}")]))
        {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .stdout(Stdio::null())
                    .status();
            }
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut h) = self.haproxy.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
        Self::remove_containers();
    }
}

fn wait_port(addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{addr} did not come up"))
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Starts the backends; returns the addresses every contender uses. The
/// containers' bridge addresses are used when reachable, so docker-proxy
/// (the userland port forwarder) is not part of any path.
fn start_backends() -> Result<(Vec<SocketAddr>, &'static str)> {
    let mut bridge = Vec::new();
    let mut published = Vec::new();
    for i in 0..BACKENDS {
        let id = run(Command::new("docker").args([
            "run",
            "-d",
            "--label",
            LABEL,
            "-p",
            "127.0.0.1::8080",
            IMAGE,
            "sh",
            "-c",
            &format!(
                "mkdir -p /www && printf 'hello from backend {i}\\n' > /www/index.html && exec httpd -f -p 8080 -h /www"
            ),
        ]))?;
        let port = run(Command::new("docker").args(["port", &id, "8080"]))?;
        let port: SocketAddr = port
            .lines()
            .next()
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| format!("cannot parse docker port output {port:?}"))?;
        published.push(port);
        let ip = run(Command::new("docker").args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &id,
        ]))?;
        if let Ok(ip) = ip.parse::<IpAddr>() {
            bridge.push(SocketAddr::new(ip, 8080));
        }
    }
    for a in &published {
        wait_port(*a)?;
    }
    let bridge_ok = bridge.len() == BACKENDS
        && bridge
            .iter()
            .all(|a| TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok());
    Ok(if bridge_ok {
        (bridge, "container bridge addresses")
    } else {
        (published, "published ports (docker-proxy)")
    })
}

#[derive(Debug, Default, Clone)]
struct Sample {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: String,
}

fn ms(v: &str) -> Option<f64> {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

fn wrk(url: &str, seconds: u64, connections: u64) -> Result<Sample> {
    let out = run(Command::new("wrk").args([
        "-t2",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
        url,
    ]))?;
    let mut s = Sample::default();
    let mut errors = Vec::new();
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => s.rps = v.parse().unwrap_or(0.0),
            ["50%", v] => s.p50_ms = ms(v).unwrap_or(f64::NAN),
            ["99%", v] => s.p99_ms = ms(v).unwrap_or(f64::NAN),
            ["Non-2xx", ..] | ["Socket", "errors:", ..] => errors.push(line.trim().to_string()),
            _ => {}
        }
    }
    if s.rps == 0.0 {
        return Err(format!("cannot parse wrk output:\n{out}"));
    }
    s.errors = errors.join("; ");
    Ok(s)
}

fn haproxy_config(port: u16, backends: &[SocketAddr]) -> String {
    let mut cfg = format!(
        "global\n  nbthread {PROXY_THREADS}\n  maxconn 9000\n\
         defaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n  option forwardfor\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n\
         backend be\n  balance roundrobin\n  http-reuse always\n"
    );
    for (i, b) in backends.iter().enumerate() {
        cfg.push_str(&format!("  server s{i} {b}\n"));
    }
    cfg
}

fn main() {
    if let Err(e) = bench() {
        eprintln!("lb bench: {e}");
        std::process::exit(1);
    }
}

fn bench() -> Result<()> {
    let seconds = env("LB_BENCH_SECONDS", 10);
    let connections = env("LB_BENCH_CONNECTIONS", 32);
    let rounds = env("LB_BENCH_ROUNDS", 1);
    Cleanup::remove_containers();
    let mut cleanup = Cleanup { haproxy: None };
    let (backends, via) = start_backends()?;
    eprintln!("backends via {via}: {backends:?}");

    // HAProxy.
    let hport = free_port()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, haproxy_config(hport, &backends)).map_err(|e| e.to_string())?;
    let version = run(Command::new("haproxy").arg("-v"))?;
    cleanup.haproxy = Some(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("haproxy: {e}"))?,
    );
    wait_port(SocketAddr::from(([127, 0, 0, 1], hport)))?;

    // Our listener, on its own runtime.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(PROXY_THREADS)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let lport = free_port()?;
    let lb = Listeners::new(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let errors = rt.block_on(lb.set(vec![ListenerSpec {
            port: lport,
            protocol: Protocol::Http,
            algorithm: Algorithm::RoundRobin,
            targets: backends
                .iter()
                .enumerate()
                .map(|(i, a)| Target {
                    id: format!("b{i}"),
                    addr: *a,
                })
                .collect(),
            name: "bench/lb".into(),
        }]));
    if let Some((port, e)) = errors.into_iter().next() {
        return Err(format!("listener on {port}: {e}"));
    }

    let contenders = [
        (
            "direct (one backend)",
            format!("http://{}/index.html", backends[0]),
        ),
        ("HAProxy", format!("http://127.0.0.1:{hport}/index.html")),
        ("listener", format!("http://127.0.0.1:{lport}/index.html")),
    ];
    // Warm-up: connections, caches, CPU frequency.
    for (_, url) in &contenders {
        wrk(url, 2, connections)?;
    }
    println!(
        "\nwrk -t2 -c{connections} -d{seconds}s --latency; {BACKENDS} x {IMAGE} httpd via {via}; \
         proxies: {PROXY_THREADS} thread each; {}",
        version.lines().next().unwrap_or("")
    );
    println!("\n| round | target | requests/s | p50 | p99 | errors |\n|---|---|---|---|---|---|");
    let mut results: Vec<[Sample; 3]> = Vec::new();
    for round in 1..=rounds {
        let mut r: [Sample; 3] = Default::default();
        for (i, (name, url)) in contenders.iter().enumerate() {
            let s = wrk(url, seconds, connections)?;
            println!(
                "| {round} | {name} | {:.0} | {:.3} ms | {:.3} ms | {} |",
                s.rps,
                s.p50_ms,
                s.p99_ms,
                if s.errors.is_empty() { "0" } else { &s.errors }
            );
            r[i] = s;
        }
        results.push(r);
    }
    println!();
    for (round, [direct, haproxy, listener]) in results.iter().enumerate() {
        println!(
            "round {}: listener/HAProxy rps {:.2} (target >= 0.80), p99 {:.2}x (target <= 1.30); \
             listener p50 over direct +{:.3} ms (target < 0.5), HAProxy p50 over direct +{:.3} ms",
            round + 1,
            listener.rps / haproxy.rps,
            listener.p99_ms / haproxy.p99_ms,
            listener.p50_ms - direct.p50_ms,
            haproxy.p50_ms - direct.p50_ms,
        );
    }
    let served = lb.served();
    println!("listener requests per target (whole run, warm-up included): {served:?}");
    drop(rt);
    drop(cleanup);
    Ok(())
}
