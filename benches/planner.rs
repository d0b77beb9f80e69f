//! The planner alone, in-process, no I/O: `plan::plan(desired, observed,
//! options)` over a source of 10,000 services (each with its own task
//! definition, spread over 3 clusters, 1-3 tasks each: 20,000 tasks).
//!
//! Scenarios, each timed over several iterations (median and p95):
//!
//! - `noop`: the observed state is already converged, the plan must be empty
//!   (checked before timing). Target: under 100 ms for 10,000 services.
//! - `changed`: the environment of 1,000 of the task definitions changed, so
//!   the plan registers 1,000 revisions and starts 1,000 rolling deployments
//!   (checked before timing).
//!
//! The peer, measured in the same run on the same states, is the floor of a
//! no-op decision: digest every task definition, compute every service's
//! configuration digest (`model::task_config_hash`, the same function the
//! planner uses), group the tasks by service in a hash map and compare.
//! Anything the planner spends beyond that is overhead.
//!
//! The observed state is built directly, the way apply would leave it:
//! revision 1 registered for every family with the digest of its spec,
//! every service recorded with its configuration digest, and its tasks
//! running with that digest on nodes of cluster `*` (the standalone node
//! shape: one node serves every cluster).
//!
//! Run: `cargo bench --bench planner`. Knobs (environment):
//! `PLAN_SERVICES` (10000), `PLAN_CHANGED` (1000), `PLAN_NODES` (node
//! shapes, comma-separated, default `1,100`: the standalone single Docker
//! host, and a 100-node cluster with the same resources in total),
//! `PLAN_ITERS` (20 timed iterations after one warm-up; 3 when the warm-up
//! takes over 2 s, and the table says how many). Every timed plan is checked
//! after its timing: empty, or exactly the expected revisions and
//! deployments with every task placed.
//!
//! `cargo bench --bench planner -- --profile noop|changed NODES LOOPS` only
//! plans, LOOPS times, for a profiler (`perf record --call-graph dwarf`,
//! `valgrind --tool=callgrind`).

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::time::{Duration, Instant};

use reconcile::manifest::Kind;
use reconcile::model::{
    self, DesiredState, Health, NodeInfo, ObservedService, ObservedState, Revision, Task,
    TaskIdentity, TaskStatus,
};
use reconcile::plan::{self, Action, Plan};
use reconcile::source::{Content, RawFile};
use reconcile::validate;

const CLUSTERS: usize = 3;
/// Resources of the whole pool, split over the nodes of a shape: 100 nodes
/// of 48 vCPU / 64 GiB (the 20,000 tasks reserve 52% of the CPU and 39% of
/// the memory).
const POOL_CPU: u64 = 100 * 48 * 1024;
const POOL_MEMORY: u64 = 100 * 64 * 1024;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn desired_count(i: usize) -> u32 {
    1 + (i % 3) as u32
}

/// The source as YAML files (100 task definition + service pairs a file),
/// validated like `reconcile plan` does, then normalised.
fn desired(services: usize) -> DesiredState {
    let mut files = Vec::new();
    let mut text = String::new();
    for c in 0..CLUSTERS {
        text.push_str(&format!(
            "apiVersion: reconcile/v1alpha1\nkind: Cluster\nmetadata: {{name: c{c}}}\nspec: {{}}\n---\n"
        ));
    }
    for i in 0..services {
        // Half with a health check, a fifth with a second container.
        let check = if i % 2 == 0 {
            "      healthCheck:\n        command: [\"CMD-SHELL\", \"wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1\"]\n        interval: 10\n"
        } else {
            ""
        };
        let sidecar = if i % 5 == 0 {
            "    - name: sidecar\n      image: busybox:stable\n      essential: false\n      memory: 32\n      command: [\"sleep\", \"3600\"]\n"
        } else {
            ""
        };
        text.push_str(&format!(
            r#"apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {{name: app-{i:05}}}
spec:
  cpu: 128
  memory: 128
  containerDefinitions:
    - name: app
      image: busybox:stable
      memory: 96
      command: ["httpd", "-f", "-p", "8080"]
      environment: [{{name: MODE, value: prod}}, {{name: INDEX, value: "{i}"}}]
      portMappings: [{{containerPort: 8080, hostPort: 0}}]
{check}{sidecar}---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {{name: app-{i:05}}}
spec:
  cluster: c{cluster}
  taskDefinition: app-{i:05}
  desiredCount: {count}
---
"#,
            cluster = i % CLUSTERS,
            count = desired_count(i),
        ));
        if (i + 1) % 100 == 0 || i + 1 == services {
            files.push(RawFile {
                name: format!("apps-{:03}.yaml", files.len()),
                content: Content::Bytes(std::mem::take(&mut text).into_bytes()),
            });
        }
    }
    let v = validate::validate(files);
    assert!(
        v.is_valid(),
        "generated source is invalid: {:#?}",
        &v.diagnostics[..v.diagnostics.len().min(5)]
    );
    DesiredState::from_manifests(v.entries.iter().map(|e| &e.manifest))
}

fn nodes(n: usize) -> Vec<NodeInfo> {
    (0..n)
        .map(|i| NodeInfo {
            name: format!("node-{i:03}"),
            cluster: "*".into(),
            attributes: BTreeMap::from([("zone".to_string(), format!("z{}", i % 3))]),
            cpu: (POOL_CPU / n as u64) as u32,
            memory: (POOL_MEMORY / n as u64) as u32,
            reserved_ports: Vec::new(),
        })
        .collect()
}

/// The state a completed apply of `d` leaves: revision 1 of every family,
/// every service recorded, desiredCount tasks running per service.
fn converged(d: &DesiredState, nodes: Vec<NodeInfo>) -> ObservedState {
    let mut o = ObservedState {
        clusters: d.clusters.clone(),
        capacity_providers: d.capacity_providers.clone(),
        nodes,
        ..ObservedState::default()
    };
    for (family, spec) in &d.task_definitions {
        o.revisions.insert(
            family.clone(),
            vec![Revision {
                number: 1,
                digest: model::digest(spec),
                spec: spec.clone(),
            }],
        );
        o.task_definitions.insert(family.clone(), 1);
    }
    let mut n = 0usize;
    for (key, s) in &d.services {
        let family = s.spec.task_definition.clone();
        let td = &d.task_definitions[&family];
        let hash = model::task_config_hash(&family, td, &d.secret_fingerprints);
        o.services.insert(
            key.clone(),
            ObservedService {
                key: s.key.clone(),
                spec: s.spec.clone(),
                revision: 1,
                config_hash: hash.clone(),
                secret_fingerprints: model::secret_fingerprints_of(td, &d.secret_fingerprints),
            },
        );
        let checked = td
            .container_definitions
            .iter()
            .any(|c| c.health_check.is_some());
        for _ in 0..s.spec.desired_count.unwrap_or(0) {
            o.tasks.push(Task {
                identity: TaskIdentity {
                    id: format!("{n:032x}"),
                    cluster: s.key.cluster.clone(),
                    service: Some(s.key.name.clone()),
                    family: family.clone(),
                    revision: 1,
                    config_hash: hash.clone(),
                    started_by: None,
                },
                node: o.nodes[n % o.nodes.len()].name.clone(),
                last_status: TaskStatus::Running,
                health: if checked {
                    Health::Healthy
                } else {
                    Health::Unknown
                },
                started_at: Some(1_000),
                stop_code: None,
                stopped_reason: None,
                bindings: Vec::new(),
                target_health: None,
                exits: Vec::new(),
                stopped_at: None,
            });
            n += 1;
        }
    }
    o
}

/// `d` with the MODE variable of every `services / changed`-th task
/// definition changed.
fn with_changes(d: &DesiredState, changed: usize) -> DesiredState {
    let mut d = d.clone();
    let every = (d.task_definitions.len() / changed.max(1)).max(1);
    for (i, td) in d.task_definitions.values_mut().enumerate() {
        if i % every == 0 && i / every < changed {
            for e in &mut td.container_definitions[..1] {
                for kv in &mut e.environment {
                    if kv.name == "MODE" {
                        kv.value = "canary".into();
                    }
                }
            }
        }
    }
    d
}

fn opts() -> plan::Options {
    plan::Options {
        now: 1_000_000,
        seed: 7,
        allow_mass_delete: false,
        record_observed: false,
    }
}

/// The peer: the least work that decides "no changes" for every service.
/// Returns the number of services that need a change.
fn floor(d: &DesiredState, o: &ObservedState) -> usize {
    let mut revision: HashMap<&str, u32> = HashMap::with_capacity(d.task_definitions.len());
    for (family, spec) in &d.task_definitions {
        let digest = model::digest(spec);
        let r = o
            .revisions
            .get(family)
            .and_then(|rs| rs.iter().find(|r| r.digest == digest))
            .map_or(0, |r| r.number);
        revision.insert(family, r);
    }
    let mut by_service: HashMap<(&str, &str), Vec<&Task>> =
        HashMap::with_capacity(o.services.len());
    for t in &o.tasks {
        if let Some(s) = &t.identity.service {
            by_service
                .entry((&t.identity.cluster, s))
                .or_default()
                .push(t);
        }
    }
    let mut changed = 0;
    for (key, s) in &d.services {
        let family = s.spec.task_definition.as_str();
        let td = &d.task_definitions[family];
        let hash = model::task_config_hash(family, td, &d.secret_fingerprints);
        let ok = o.services.get(key).is_some_and(|os| {
            os.spec == s.spec && os.revision == revision[family] && os.config_hash == hash
        }) && by_service
            .get(&(s.key.cluster.as_str(), s.key.name.as_str()))
            .is_some_and(|ts| {
                ts.len() as u32 == s.spec.desired_count.unwrap_or(0)
                    && ts.iter().all(|t| {
                        t.is_live()
                            && t.identity.config_hash == hash
                            && t.health != Health::Unhealthy
                    })
            });
        if !ok {
            changed += 1;
        }
    }
    changed
}

fn count(p: &Plan, kind: Kind, action: Action) -> usize {
    p.resource_changes
        .iter()
        .filter(|c| c.kind == kind && c.action == action)
        .count()
}

/// Time `f` over `iters` iterations after one warm-up (3 when the warm-up
/// takes over 2 s). Each result is checked and dropped outside the timed
/// region.
fn time<T>(iters: usize, mut f: impl FnMut() -> T, check: impl Fn(&T)) -> Vec<Duration> {
    let mut out = Vec::new();
    let t = Instant::now();
    let r = f();
    let first = t.elapsed();
    check(&r);
    drop(black_box(r));
    let iters = if first > Duration::from_secs(2) {
        iters.min(3)
    } else {
        iters
    };
    for _ in 0..iters {
        let t = Instant::now();
        let r = f();
        out.push(t.elapsed());
        check(&r);
        drop(black_box(r));
    }
    out.sort();
    out
}

fn median(v: &[Duration]) -> Duration {
    v[v.len() / 2]
}

/// Nearest-rank p95.
fn p95(v: &[Duration]) -> Duration {
    let rank = ((v.len() as f64) * 0.95).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn profile(args: &[String]) {
    let scenario = args.first().map(String::as_str).unwrap_or("noop");
    let n_nodes: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(1);
    let loops: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(3);
    let services = env("PLAN_SERVICES", 10_000);
    let d = desired(services);
    let o = converged(&d, nodes(n_nodes));
    let d = match scenario {
        "noop" => d,
        "changed" => with_changes(&d, env("PLAN_CHANGED", 1_000)),
        other => panic!("unknown scenario {other}"),
    };
    eprintln!("profiling {scenario} on {n_nodes} node(s), {loops} plan(s)");
    for _ in 0..loops {
        let t = Instant::now();
        let p = plan::plan(&d, &o, &opts());
        eprintln!("plan: {:.1} ms", ms(t.elapsed()));
        black_box(p);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--profile") {
        profile(&args[i + 1..]);
        return;
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // binary without it, as a quick check that the benchmark still works.
    let smoke = !args.iter().any(|a| a == "--bench");
    let services = env("PLAN_SERVICES", if smoke { 300 } else { 10_000 });
    let changed = env("PLAN_CHANGED", if smoke { 30 } else { 1_000 });
    let iters = env("PLAN_ITERS", if smoke { 2 } else { 20 });
    let shapes: Vec<usize> = std::env::var("PLAN_NODES")
        .unwrap_or_else(|_| "1,100".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();

    let t = Instant::now();
    let base = desired(services);
    let tasks: u32 = base
        .services
        .values()
        .map(|s| s.spec.desired_count.unwrap_or(0))
        .sum();
    println!(
        "planner bench: {services} services / task definitions in {CLUSTERS} clusters, {tasks} tasks; \
         source generated and validated in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let changed_d = with_changes(&base, changed);

    println!();
    println!("| scenario | nodes | iterations | plan median (ms) | plan p95 (ms) | services/s | floor median (ms) | plan / floor |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &shapes {
        let o = converged(&base, nodes(n));
        let check_noop = |p: &Plan| {
            assert!(
                !p.has_changes(),
                "the converged state must plan no changes; first: {:?}",
                p.changes().next().map(|c| (&c.address, &c.reasons))
            );
        };
        let check_changed = |p: &Plan| {
            assert!(p.errors.is_empty(), "{:?}", p.errors);
            assert_eq!(count(p, Kind::TaskDefinition, Action::Update), changed);
            assert_eq!(count(p, Kind::Service, Action::Update), changed);
            assert_eq!(p.changes().count(), 2 * changed);
            let deployments = p
                .changes()
                .filter(|c| c.tasks.as_ref().is_some_and(|t| t.deployment.is_some()))
                .count();
            assert_eq!(deployments, changed);
            assert!(
                p.warnings.is_empty(),
                "placement must succeed: {:?}",
                &p.warnings[..p.warnings.len().min(3)]
            );
        };
        for (name, d, want) in [("noop", &base, 0), ("changed", &changed_d, changed)] {
            let planned = if name == "noop" {
                time(
                    iters,
                    || plan::plan(black_box(d), black_box(&o), &opts()),
                    check_noop,
                )
            } else {
                time(
                    iters,
                    || plan::plan(black_box(d), black_box(&o), &opts()),
                    check_changed,
                )
            };
            let floors = time(
                iters,
                || floor(black_box(d), black_box(&o)),
                |c| assert_eq!(*c, want),
            );
            let (m, fm) = (median(&planned), median(&floors));
            let label = if name == "noop" {
                format!("no-op, {services} services")
            } else {
                format!("{changed} of {services} task definitions changed")
            };
            println!(
                "| {label} | {n} | {} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1}x |",
                planned.len(),
                ms(m),
                ms(p95(&planned)),
                services as f64 / m.as_secs_f64(),
                ms(fm),
                m.as_secs_f64() / fm.as_secs_f64(),
            );
        }
    }
    println!();
    println!("target: no-op plan of 10,000 services under 100 ms");
}
