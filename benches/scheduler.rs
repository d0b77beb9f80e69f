//! Scheduler at the C1M shape, in-process: 1,000 services x 1,000 tasks onto
//! 10,000 simulated nodes, for binpack and for spread, against a round-robin
//! placer that only looks at capacity, and against Nomad's C1M rate.
//!
//! Run: `cargo bench --bench scheduler`. Each scenario runs in a child
//! process of this binary so its peak RSS (VmHWM) is its own. Smaller runs:
//! `SCHED_NODES`, `SCHED_SERVICES`, `SCHED_TASKS` environment variables;
//! `SCHED_VERBOSE=1 cargo bench --bench scheduler -- --scenario binpack`
//! runs one scenario and prints every placement failure.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use reconcile::manifest::service::{PlacementStrategy, PlacementStrategyType};
use reconcile::manifest::task_definition::Protocol;
use reconcile::scheduler::{place_with, Constraint, Node, PlaceOptions, TaskRequest};

/// Nomad C1M: 1,000,000 containers in under 5 minutes, 3,750/s on average.
const C1M_RATE: f64 = 3_750.0;

const SCENARIOS: [(&str, &str); 6] = [
    (
        "binpack",
        "binpack(memory) for even services, binpack(cpu) for odd ones",
    ),
    ("spread", "spread(attribute:zone), spread(instanceId)"),
    ("binpack-2t", "binpack, node scan on 2 threads"),
    ("spread-2t", "spread, node scan on 2 threads"),
    ("random", "random"),
    (
        "round-robin",
        "next node with room, ignoring everything but CPU and memory",
    ),
];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Shape {
    nodes: usize,
    services: usize,
    tasks: u32,
}

impl Shape {
    /// The C1M shape, or a small one for a smoke run (`cargo test
    /// --all-targets` runs benchmarks without `--bench`).
    fn from_env(smoke: bool) -> Shape {
        let (n, s, t) = if smoke {
            (300, 20, 50)
        } else {
            (10_000, 1_000, 1_000)
        };
        Shape {
            nodes: env("SCHED_NODES", n),
            services: env("SCHED_SERVICES", s),
            tasks: env("SCHED_TASKS", t) as u32,
        }
    }
}

/// 16 vCPU / 64 GiB nodes over three zones, a quarter of them spot, three
/// instance types.
fn cluster(n: usize) -> Vec<Node> {
    (0..n)
        .map(|i| {
            let mut node = Node::new(format!("node-{i:05}"), 16 * 1024, 64 * 1024)
                .with_attribute("zone", ["a", "b", "c"][i % 3])
                .with_attribute("pool", if i % 4 == 0 { "spot" } else { "on-demand" })
                .with_attribute(
                    "ecs.instance-type",
                    ["m5.4xlarge", "c5.4xlarge", "r5.4xlarge"][(i / 3) % 3],
                );
            node.agent_version = "1.0.0".into();
            node.registered_at = "2026-01-01T00:00:00Z".into();
            node
        })
        .collect()
}

/// One service of the workload.
struct Service {
    group: String,
    cpu: u32,
    memory: u32,
    ports: Vec<(u16, Protocol)>,
    constraints: Vec<Constraint>,
}

const MEMBER_OF: [&str; 4] = [
    "attribute:zone in [a, b]",
    "attribute:pool == on-demand",
    "attribute:zone != c and attribute:pool != spot",
    "attribute:ecs.instance-type in [m5.4xlarge, r5.4xlarge]",
];

/// Half the services have a memberOf constraint (four kinds, 1/2 to 3/4 of
/// the nodes), a fifth have distinctInstance, one in fifty binds a static
/// host port. Reservations: 64-160 CPU units, 128-512 MiB (about 68% of the
/// cluster's CPU and 49% of its memory in all).
fn services(n: usize) -> Vec<Service> {
    (0..n)
        .map(|i| {
            let mut constraints = Vec::new();
            if i % 2 == 0 {
                constraints.push(Constraint::member_of(MEMBER_OF[(i / 2) % 4]).expect("parses"));
            }
            if i % 10 == 1 || i % 10 == 2 {
                constraints.push(Constraint::DistinctInstance);
            }
            Service {
                group: format!("service:svc-{i:04}"),
                cpu: [64, 96, 128, 160][i % 4],
                memory: [128, 256, 384, 512][(i / 4) % 4],
                ports: if i % 50 == 3 {
                    vec![(8000 + i as u16, Protocol::Tcp)]
                } else {
                    Vec::new()
                },
                constraints,
            }
        })
        .collect()
}

fn strategy(kind: PlacementStrategyType, field: Option<&str>) -> PlacementStrategy {
    PlacementStrategy {
        kind,
        field: field.map(str::to_string),
    }
}

/// Peak and current resident set of this process, KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// CPU time (user + system) of this process so far, seconds: steadier than
/// wall time when other work shares the machine. Assumes 100 clock ticks per
/// second (the Linux default).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // utime and stime are fields 14 and 15; count after the command name,
    // which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn fnv(hash: &mut u64, v: u64) {
    for b in v.to_le_bytes() {
        *hash ^= u64::from(b);
        *hash = hash.wrapping_mul(0x100_0000_01b3);
    }
}

/// The floor: a cursor over the nodes, the next one with enough CPU and
/// memory takes the task. No status, constraints, ports, groups or ranking.
fn round_robin(
    nodes: &mut [Node],
    cursor: &mut usize,
    cpu: u32,
    memory: u32,
    out: &mut Vec<usize>,
) -> bool {
    for _ in 0..nodes.len() {
        let i = *cursor;
        *cursor = (*cursor + 1) % nodes.len();
        let n = &mut nodes[i];
        if n.total_cpu - n.used_cpu >= cpu && n.total_memory - n.used_memory >= memory {
            n.used_cpu += cpu;
            n.used_memory += memory;
            out.push(i);
            return true;
        }
    }
    false
}

/// Run one scenario in this process and print one result line.
fn child(name: &str, smoke: bool) {
    let shape = Shape::from_env(smoke);
    let t = Instant::now();
    let mut nodes = cluster(shape.nodes);
    let services = services(shape.services);
    let setup = t.elapsed().as_secs_f64();
    let (_, rss_setup) = rss_kib();

    let binpack_mem = [strategy(PlacementStrategyType::Binpack, Some("memory"))];
    let binpack_cpu = [strategy(PlacementStrategyType::Binpack, Some("cpu"))];
    let spread = [
        strategy(PlacementStrategyType::Spread, Some("attribute:zone")),
        strategy(PlacementStrategyType::Spread, Some("instanceId")),
    ];
    let random = [strategy(PlacementStrategyType::Random, None)];
    let none = BTreeMap::new();
    let verbose = std::env::var_os("SCHED_VERBOSE").is_some();

    let (mut placed, mut unplaced, mut hash) = (0u64, 0u64, 0xcbf2_9ce4_8422_2325u64);
    let mut cursor = 0usize;
    let mut rr = Vec::with_capacity(shape.tasks as usize);
    let start = Instant::now();
    let cpu_start = cpu_secs();
    for (i, svc) in services.iter().enumerate() {
        if name == "round-robin" {
            rr.clear();
            for _ in 0..shape.tasks {
                if !round_robin(&mut nodes, &mut cursor, svc.cpu, svc.memory, &mut rr) {
                    unplaced += 1;
                }
            }
            placed += rr.len() as u64;
            for &a in &rr {
                fnv(&mut hash, a as u64);
            }
            continue;
        }
        let strategy: &[PlacementStrategy] = match name {
            "binpack" | "binpack-2t" if i % 2 == 0 => &binpack_mem,
            "binpack" | "binpack-2t" => &binpack_cpu,
            "spread" | "spread-2t" => &spread,
            "random" => &random,
            other => panic!("unknown scenario {other}"),
        };
        let req = TaskRequest {
            group: svc.group.clone(),
            cpu: svc.cpu,
            memory: svc.memory,
            host_ports: svc.ports.clone(),
            constraints: &svc.constraints,
            strategy,
            capacity_provider_strategy: &[],
        };
        let options = PlaceOptions {
            threads: if name.ends_with("-2t") { 2 } else { 1 },
        };
        let p = place_with(&mut nodes, &req, shape.tasks, &none, i as u64, options);
        placed += p.assignments.len() as u64;
        if let Some(f) = p.failure {
            unplaced += u64::from(f.unplaced);
            if verbose {
                eprintln!(
                    "{name} {}: {} unplaced: {}",
                    svc.group, f.unplaced, f.reason
                );
            }
        }
        for a in p.assignments {
            fnv(&mut hash, a as u64);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu_start;
    let (hwm, _) = rss_kib();
    println!(
        "RESULT {name} {placed} {unplaced} {secs:.6} {setup:.6} {rss_setup} {hwm} {hash:016x} {cpu:.2}"
    );
}

struct Row {
    name: String,
    placed: u64,
    unplaced: u64,
    secs: f64,
    setup: f64,
    rss_setup_kib: u64,
    hwm_kib: u64,
    hash: String,
    cpu: f64,
}

fn parse(line: &str) -> Option<Row> {
    let f: Vec<&str> = line.strip_prefix("RESULT ")?.split(' ').collect();
    Some(Row {
        name: f[0].to_string(),
        placed: f[1].parse().ok()?,
        unplaced: f[2].parse().ok()?,
        secs: f[3].parse().ok()?,
        setup: f[4].parse().ok()?,
        rss_setup_kib: f[5].parse().ok()?,
        hwm_kib: f[6].parse().ok()?,
        hash: f[7].to_string(),
        cpu: f[8].parse().ok()?,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--scenario") {
        child(&args[i + 1], args.iter().any(|a| a == "--smoke"));
        return;
    }
    let smoke = !args.iter().any(|a| a == "--bench");
    let shape = Shape::from_env(smoke);
    let exe = std::env::current_exe().expect("own path");
    println!(
        "scheduler bench: {} services x {} tasks onto {} nodes (16 vCPU, 64 GiB each)",
        shape.services, shape.tasks, shape.nodes
    );
    let mut rows = Vec::new();
    for (name, what) in SCENARIOS {
        let out = Command::new(&exe)
            .args(["--scenario", name])
            .args(smoke.then_some("--smoke"))
            .output()
            .expect("child runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let row = text.lines().find_map(parse).unwrap_or_else(|| {
            panic!(
                "scenario {name} failed: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        println!("  {name:<12} {what}");
        rows.push(row);
    }
    let rr = rows
        .iter()
        .find(|r| r.name == "round-robin")
        .map_or(f64::NAN, |r| r.secs);
    let binpack = rows
        .iter()
        .find(|r| r.name == "binpack")
        .map_or(f64::NAN, |r| r.secs);
    println!();
    println!(
        "| scenario | placed | unplaced | wall (s) | CPU (s) | placements/s (wall) | wall vs round-robin | vs C1M 3,750/s | peak RSS (MiB) | RSS of the cluster alone (MiB) | assignment hash |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in &rows {
        let rate = r.placed as f64 / r.secs;
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.0} | {:.1}x | {:.0}x | {:.0} | {:.0} | {} |",
            r.name,
            r.placed,
            r.unplaced,
            r.secs,
            r.cpu,
            rate,
            r.secs / rr,
            rate / C1M_RATE,
            r.hwm_kib as f64 / 1024.0,
            r.rss_setup_kib as f64 / 1024.0,
            r.hash
        );
    }
    let total: f64 = rows
        .iter()
        .filter(|r| matches!(r.name.as_str(), "binpack" | "spread" | "round-robin"))
        .map(|r| r.secs + r.setup)
        .sum();
    let spread = rows
        .iter()
        .find(|r| r.name == "spread")
        .map_or(f64::NAN, |r| r.secs);
    println!();
    println!("binpack + spread + round-robin, including building the clusters: {total:.2} s");
    println!("spread / binpack time: {:.2}", spread / binpack);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average (1 min) at the end: {} on {} cores",
        load.split(' ').next().unwrap_or("?"),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}
