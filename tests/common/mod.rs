//! Helpers shared by the planner tests: manifests from YAML text, and
//! plan-then-apply through the simulated runtime.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use reconcile::apply::{self, Event, Sink};
use reconcile::model::{DesiredState, NodeInfo, ObservedState};
use reconcile::plan::{self, Plan};
use reconcile::runtime::sim::{Clock, Sim};
use reconcile::runtime::Runtime;
use reconcile::secrets::Resolver;
use reconcile::source::{Content, RawFile};
use reconcile::store::Stored;
use reconcile::validate;

/// A valid source's desired state from YAML text (panics on invalid input,
/// printing the diagnostics).
pub fn desired(yaml: &str) -> DesiredState {
    let v = validate::validate(vec![RawFile {
        name: "test.yaml".into(),
        content: Content::Bytes(yaml.as_bytes().to_vec()),
    }]);
    assert!(v.is_valid(), "{:#?}", v.diagnostics);
    DesiredState::from_manifests(v.entries.iter().map(|e| &e.manifest))
}

/// A sink that records events and never sleeps: its sleeps advance a
/// simulated clock (the simulation's, in a [`World`]).
#[derive(Default)]
pub struct TestSink {
    pub events: std::sync::Mutex<Vec<Event>>,
    pub saved: std::sync::Mutex<Option<Stored>>,
    clock: Clock,
    ids: std::sync::atomic::AtomicU32,
}

impl Sink for TestSink {
    fn event(&self, e: Event) {
        self.events.lock().unwrap().push(e);
    }
    fn save(&self, state: &Stored) -> Result<(), String> {
        *self.saved.lock().unwrap() = Some(state.clone());
        Ok(())
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
        let n = self.ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        format!("t{n:04}{}", "0".repeat(12))
    }
}

pub fn nodes(n: usize, cpu: u32, memory: u32) -> Vec<NodeInfo> {
    (0..n)
        .map(|i| NodeInfo {
            name: format!("node-{i}"),
            cluster: "*".into(),
            attributes: BTreeMap::from([("zone".to_string(), format!("z{}", i % 3))]),
            cpu,
            memory,
            reserved_ports: Vec::new(),
        })
        .collect()
}

/// The world the planner sees: stored resources plus the simulation.
pub struct World {
    pub sim: Sim,
    pub stored: Stored,
    pub sink: TestSink,
}

pub fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

impl World {
    pub fn new(nodes: Vec<NodeInfo>) -> World {
        let sim = Sim::new(nodes);
        let sink = TestSink {
            clock: sim.clock(),
            ..TestSink::default()
        };
        World {
            sim,
            stored: Stored::default(),
            sink,
        }
    }

    pub fn observed(&self) -> ObservedState {
        let obs = block(self.sim.observe()).unwrap();
        let mut o = ObservedState {
            tasks: obs.tasks,
            nodes: obs.nodes,
            ..ObservedState::default()
        };
        self.stored.clone().into_observed(&mut o);
        o
    }

    pub fn plan(&self, d: &DesiredState) -> Plan {
        plan::plan(d, &self.observed(), &plan::Options::default())
    }

    /// Plan and apply; returns the plan that was applied.
    pub fn apply(&mut self, d: &DesiredState) -> Result<Plan, apply::ApplyError> {
        self.apply_with(d, &Resolver::in_dir(std::env::temp_dir()))
    }

    /// [`World::apply`] resolving secrets with `resolver`.
    pub fn apply_with(
        &mut self,
        d: &DesiredState,
        resolver: &Resolver,
    ) -> Result<Plan, apply::ApplyError> {
        let p = self.plan(d);
        let opts = apply::Options {
            settle: Duration::ZERO,
            ..apply::Options::default()
        };
        block(apply::apply(
            &p,
            d,
            &mut self.stored,
            &self.sim,
            resolver,
            &opts,
            &self.sink,
        ))?;
        Ok(p)
    }
}

pub const BASE: &str = r#"
apiVersion: reconcile/v1alpha1
kind: Cluster
metadata: {name: prod}
spec: {}
---
apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {name: web}
spec:
  cpu: 256
  memory: 512
  containerDefinitions:
    - name: web
      image: busybox:stable
      command: ["httpd", "-f", "-p", "8080"]
      environment: [{name: MODE, value: prod}]
      portMappings: [{containerPort: 8080}]
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {name: web}
spec:
  cluster: prod
  taskDefinition: web
  desiredCount: 4
"#;
