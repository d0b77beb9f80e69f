//! The controller's store on etcd against redb, measured in one run at
//! 1,000 services (2,000 tasks on 20 simulated nodes):
//!
//! - `cold pass`: the first reconcile pass of the core (`Reconciler::pass`,
//!   the simulated runtime, the store written after every step as the
//!   controller writes it): 1,000 task definitions registered and 1,000
//!   services created;
//! - `no-op pass`: a pass that finds nothing to do (median of 10). The
//!   controller keeps the applied state in memory and writes through on
//!   every save, as here, so a pass that changes nothing writes nothing;
//! - `load`: reading the whole state, as a newly elected leader does;
//! - `assignment write`: one task assigned (`Db::assign`, what the
//!   controller does before any agent sees a task), p50 and p99 of 500.
//!
//! The peer is redb, the embedded default, on this machine's disk. etcd is
//! a real 3-member cluster (Debian's etcd-server) on loopback, each
//! member with its own data directory, every write fenced on a leader key
//! as an elected controller's are.
//!
//! Run: `cargo bench --bench store`. Knobs: `STORE_SERVICES` (1000),
//! `STORE_WRITES` (500). Without `--bench` (`cargo test --all-targets`)
//! it runs at 50 services and 20 writes, as a check that it still works.

#[path = "../tests/common/etcd.rs"]
mod etcd;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reconcile::apply::{self, Event, Sink};
use reconcile::controller::store::etcd::{EtcdBackend, EtcdConfig, Fence};
use reconcile::controller::store::{AssignmentRecord, Db};
use reconcile::model::NodeInfo;
use reconcile::plan::{self, Plan};
use reconcile::reconcile::{Desired, Driver, Options, Outcome, Reconciler};
use reconcile::runtime::sim::{Clock, Sim};
use reconcile::secrets::Resolver;
use reconcile::source::{Content, RawFile};
use reconcile::store::Stored;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The store as the controller uses it: the applied state in memory,
/// every save written through to the database (only the rows that
/// changed).
struct Through<'a> {
    db: &'a Db,
    state: Mutex<Stored>,
}

impl reconcile::reconcile::Store for Through<'_> {
    fn load(&self) -> Result<Stored, String> {
        Ok(self.state.lock().unwrap().clone())
    }
    fn save(&self, stored: &Stored) -> Result<(), String> {
        *self.state.lock().unwrap() = stored.clone();
        self.db.save_stored(stored).map_err(|e| e.to_string())
    }
}

/// A pass's side effects: saves go through to the store under test;
/// sleeps advance the simulation's clock.
struct Bench<'a> {
    store: &'a Through<'a>,
    clock: Clock,
    ids: AtomicU64,
}

impl Sink for Bench<'_> {
    fn event(&self, _: Event) {}
    fn save(&self, state: &Stored) -> Result<(), String> {
        use reconcile::reconcile::Store;
        self.store.save(state)
    }
    fn sleep(&self, d: Duration) -> impl std::future::Future<Output = ()> + Send {
        self.clock.advance(d);
        std::future::ready(())
    }
    fn elapsed(&self) -> Duration {
        self.clock.advance(Duration::from_millis(1));
        self.clock.now()
    }
    fn new_task_id(&self) -> String {
        format!("{:032x}", self.ids.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

impl Driver for Bench<'_> {
    fn approve(&self, _: &Plan) -> bool {
        true
    }
}

fn desired(services: usize, resolver: &Resolver) -> Desired {
    let mut yaml = String::from(
        "apiVersion: reconcile/v1alpha1\nkind: Cluster\nmetadata: {name: bench}\nspec: {}\n",
    );
    for i in 0..services {
        yaml.push_str(&format!(
            "---
apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {{name: svc{i}}}
spec:
  containerDefinitions:
    - {{name: app, image: busybox:stable, cpu: 16, memory: 32, command: [sleep, '3600']}}
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {{name: svc{i}}}
spec: {{cluster: bench, taskDefinition: svc{i}, desiredCount: 2}}
"
        ));
    }
    let v = reconcile::validate::validate(vec![RawFile {
        name: "bench.yaml".into(),
        content: Content::Bytes(yaml.into_bytes()),
    }]);
    assert!(v.is_valid(), "{:#?}", v.diagnostics);
    Desired::from_valid(&v, resolver)
}

fn nodes() -> Vec<NodeInfo> {
    (0..20)
        .map(|i| NodeInfo {
            name: format!("node-{i}"),
            cluster: "*".into(),
            attributes: Default::default(),
            cpu: 64 * 1024,
            memory: 256 * 1024,
            reserved_ports: Vec::new(),
        })
        .collect()
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

struct Result_ {
    cold: Duration,
    noop: Duration,
    load: Duration,
    assign_p50: Duration,
    assign_p99: Duration,
}

fn assignment(i: usize) -> AssignmentRecord {
    serde_json::from_value(serde_json::json!({
        "node": "node-1",
        "task": {
            "id": format!("{i:032x}"), "cluster": "bench", "service": "svc1", "family": "svc1",
            "revision": 1, "configHash": "h",
            "spec": {"containerDefinitions": [{"name": "app", "image": "busybox:stable"}]}
        }
    }))
    .unwrap()
}

fn measure(db: &Db, services: usize, writes: usize) -> Result_ {
    let resolver = Resolver::in_dir(std::env::temp_dir());
    let d = desired(services, &resolver);
    let sim = Sim::new(nodes());
    let through = Through {
        db,
        state: Mutex::new(db.load().unwrap().stored),
    };
    let bench = Bench {
        store: &through,
        clock: sim.clock(),
        ids: AtomicU64::new(0),
    };
    let r = Reconciler {
        runtime: &sim,
        store: &through,
        resolver: &resolver,
    };
    let opts = Options {
        plan: plan::Options::default(),
        apply: apply::Options {
            settle: Duration::ZERO,
            ..apply::Options::default()
        },
        suspended: false,
    };
    let t = Instant::now();
    let out = block(r.pass(&d, &opts, None, None, &bench)).unwrap();
    let cold = t.elapsed();
    assert!(matches!(out, Outcome::Applied { .. }), "{out:?}");
    let mut noops = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let out = block(r.pass(&d, &opts, None, None, &bench)).unwrap();
        noops.push(t.elapsed());
        assert!(matches!(out, Outcome::Unchanged { .. }), "{out:?}");
    }
    noops.sort();
    let t = Instant::now();
    let loaded = db.load().unwrap();
    let load = t.elapsed();
    assert_eq!(loaded.stored.services.len(), services);
    let mut lat = Vec::new();
    for i in 0..writes {
        let a = assignment(i);
        let t = Instant::now();
        db.assign(&[&a], &[]).unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    Result_ {
        cold,
        noop: noops[noops.len() / 2],
        load,
        assign_p50: lat[lat.len() / 2],
        assign_p99: lat[(lat.len() * 99 / 100).min(lat.len() - 1)],
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // binary without it, as a quick check that the benchmark still works.
    let smoke = !args.iter().any(|a| a == "--bench");
    if let Some(why) = etcd::unavailable() {
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
        if smoke && !ci {
            println!("SKIPPED: store bench: {why}; install with scripts/docker-setup.sh --tests");
            return;
        }
        eprintln!("store bench: {why}; install with scripts/docker-setup.sh --tests");
        std::process::exit(2);
    }
    let services = env("STORE_SERVICES", if smoke { 50 } else { 1000 });
    let writes = env("STORE_WRITES", if smoke { 20 } else { 500 });

    let dir = tempfile::tempdir().unwrap();
    let redb = Db::open(dir.path()).unwrap();
    let on_redb = measure(&redb, services, writes);
    drop(redb);

    let cluster = etcd::Etcd::start(3);
    let config = EtcdConfig::parse(&cluster.url(), "/bench").unwrap();
    let backend = EtcdBackend::connect(config).unwrap();
    // Fenced like an elected controller: a leader key on a lease.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut client = backend.client();
    let revision = rt.block_on(async {
        let lease = client.lease_grant(600, None).await.unwrap().id();
        let put = etcd_client::PutOptions::new().with_lease(lease);
        let r = client
            .put("/bench/election/leader", "bench", Some(put))
            .await
            .unwrap();
        r.header().unwrap().revision()
    });
    backend.set_fence(Fence::Leader {
        key: b"/bench/election/leader".to_vec(),
        revision,
    });
    let etcd_db = Db::over(Box::new(backend));
    let on_etcd = measure(&etcd_db, services, writes);

    println!(
        "\n{services} services ({} tasks, 20 nodes); etcd: 3 members on loopback\n",
        services * 2
    );
    println!("| measure | redb | etcd | etcd / redb |");
    println!("|---|---:|---:|---:|");
    let rows = [
        (
            "cold pass (every service created)",
            on_redb.cold,
            on_etcd.cold,
        ),
        ("no-op pass (median of 10)", on_redb.noop, on_etcd.noop),
        ("load the whole state", on_redb.load, on_etcd.load),
        (
            "assignment write p50",
            on_redb.assign_p50,
            on_etcd.assign_p50,
        ),
        (
            "assignment write p99",
            on_redb.assign_p99,
            on_etcd.assign_p99,
        ),
    ];
    for (what, r, e) in rows {
        println!(
            "| {what} | {} | {} | {:.1}x |",
            ms(r),
            ms(e),
            e.as_secs_f64() / r.as_secs_f64().max(1e-9)
        );
    }
}
