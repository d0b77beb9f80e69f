//! An agent's metrics, served on `--metrics-listen` to the bearer of the
//! token in `--metrics-token-file`: its tasks by state, its container
//! starts, stops and failures and the latency of each kind of engine call
//! (through the Docker runtime's [`Observer`]), and its heartbeats.
//!
//! Per-task CPU and memory come from the agent's stats collector, read at
//! scrape time ([`AgentMetrics::usage_from`]): only tasks that run now have
//! a series, so the label set stays as large as the node's tasks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::model::{Task, TaskStatus};
use crate::runtime::docker::{Call, Observer};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    task: String,
    service: String,
}

/// The latest usage of each running task, by task id.
pub type UsageSnapshot =
    Box<dyn Fn() -> BTreeMap<String, crate::utilization::TaskUsage> + Send + Sync>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    operation: &'static str,
}

type Buckets = fn() -> Histogram;

fn histogram() -> Histogram {
    Histogram::new(super::duration_buckets())
}

/// Task states, each always shown.
const STATES: [(TaskStatus, &str); 3] = [
    (TaskStatus::Pending, "PENDING"),
    (TaskStatus::Running, "RUNNING"),
    (TaskStatus::Stopped, "STOPPED"),
];

/// Where an agent serves its metrics, and the token it asks for.
#[derive(Clone)]
pub struct Endpoint {
    pub listen: SocketAddr,
    pub token: String,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("listen", &self.listen)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// The agent's registry.
#[derive(Debug)]
pub struct AgentMetrics {
    registry: Registry,
    tasks: Family<StateLabels, Gauge>,
    starts: Counter,
    stops: Counter,
    failures: Counter,
    calls: Family<CallLabels, Histogram, Buckets>,
    call_failures: Family<CallLabels, Counter>,
    heartbeat: Histogram,
    heartbeat_failures: Counter,
    task_cpu: Family<TaskLabels, Gauge<f64, AtomicU64>>,
    task_memory: Family<TaskLabels, Gauge<f64, AtomicU64>>,
    usage: Option<Usage>,
}

/// Where per-task usage is read, and which service each task serves (from
/// the latest observation).
struct Usage {
    snapshot: UsageSnapshot,
    services: Mutex<BTreeMap<String, String>>,
    /// One scrape at a time rebuilds the per-task series.
    scrape: Mutex<()>,
}

impl std::fmt::Debug for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Usage")
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("reconcile_agent");
        let m = AgentMetrics {
            registry: Registry::default(),
            tasks: Family::default(),
            starts: Counter::default(),
            stops: Counter::default(),
            failures: Counter::default(),
            calls: Family::new_with_constructor(histogram as Buckets),
            call_failures: Family::default(),
            heartbeat: histogram(),
            heartbeat_failures: Counter::default(),
            task_cpu: Family::default(),
            task_memory: Family::default(),
            usage: None,
        };
        r.register("tasks", "Tasks this node runs, by state", m.tasks.clone());
        r.register(
            "container_starts",
            "Containers the engine started",
            m.starts.clone(),
        );
        r.register(
            "container_stops",
            "Containers the engine stopped",
            m.stops.clone(),
        );
        r.register(
            "container_failures",
            "Containers that failed to be created or started",
            m.failures.clone(),
        );
        r.register(
            "docker_request_duration_seconds",
            "Latency of Docker engine calls by operation",
            m.calls.clone(),
        );
        r.register(
            "docker_request_failures",
            "Docker engine calls that failed, by operation",
            m.call_failures.clone(),
        );
        r.register(
            "heartbeat_duration_seconds",
            "Round trip of a heartbeat to the controller",
            m.heartbeat.clone(),
        );
        r.register(
            "heartbeat_failures",
            "Heartbeats that got no reply or were refused",
            m.heartbeat_failures.clone(),
        );
        r.register(
            "task_cpu_units",
            "CPU a running task used between its last two samples, in CPU units (1024 per core)",
            m.task_cpu.clone(),
        );
        r.register(
            "task_memory_bytes",
            "Memory a running task uses, without the inactive file cache",
            m.task_memory.clone(),
        );
        for (_, state) in STATES {
            let _ = m.tasks.get_or_create(&StateLabels { state });
        }
        for c in Call::ALL {
            let l = CallLabels {
                operation: c.as_str(),
            };
            let _ = m.calls.get_or_create(&l);
            let _ = m.call_failures.get_or_create(&l);
        }
        AgentMetrics { registry: r, ..m }
    }

    /// Read per-task CPU and memory from `snapshot` at each scrape.
    pub fn usage_from(&mut self, snapshot: UsageSnapshot) {
        self.usage = Some(Usage {
            snapshot,
            services: Mutex::default(),
            scrape: Mutex::new(()),
        });
    }

    /// The tasks of the latest observation.
    pub fn observed(&self, tasks: &[Task]) {
        if let Some(u) = &self.usage {
            let services = tasks
                .iter()
                .map(|t| {
                    let i = &t.identity;
                    let s = match &i.service {
                        Some(s) => format!("{}/{s}", i.cluster),
                        None => String::new(),
                    };
                    (i.id.clone(), s)
                })
                .collect();
            *u.services.lock().unwrap_or_else(|p| p.into_inner()) = services;
        }
        for (status, state) in STATES {
            let n = tasks.iter().filter(|t| t.last_status == status).count();
            self.tasks
                .get_or_create(&StateLabels { state })
                .set(n as i64);
        }
    }

    /// A heartbeat's round trip; `ok` when the controller answered it.
    pub fn heartbeat(&self, took: Duration, ok: bool) {
        if ok {
            self.heartbeat.observe(took.as_secs_f64());
        } else {
            self.heartbeat_failures.inc();
        }
    }

    pub fn render(&self) -> String {
        let Some(u) = &self.usage else {
            return super::render(&self.registry);
        };
        let _one = u.scrape.lock().unwrap_or_else(|p| p.into_inner());
        let usage = (u.snapshot)();
        let services = u.services.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // Tasks that stopped since the last scrape lose their series.
        self.task_cpu.clear();
        self.task_memory.clear();
        for (task, use_) in usage {
            let labels = TaskLabels {
                service: services.get(&task).cloned().unwrap_or_default(),
                task,
            };
            if let Some(cpu) = use_.cpu_units {
                self.task_cpu.get_or_create(&labels).set(cpu);
            }
            if let Some(mib) = use_.memory_mib {
                self.task_memory
                    .get_or_create(&labels)
                    .set(mib * 1024.0 * 1024.0);
            }
        }
        super::render(&self.registry)
    }
}

impl Observer for AgentMetrics {
    fn call(&self, call: Call, took: Duration, ok: bool) {
        let l = CallLabels {
            operation: call.as_str(),
        };
        self.calls.get_or_create(&l).observe(took.as_secs_f64());
        if !ok {
            self.call_failures.get_or_create(&l).inc();
        }
        match (call, ok) {
            (Call::Start, true) => self.starts.inc(),
            (Call::Stop, true) => self.stops.inc(),
            (Call::Create | Call::Start, false) => self.failures.inc(),
            _ => 0,
        };
    }
}

/// Whether `headers` carry `Bearer TOKEN` (the scheme in any case), the
/// token compared in constant time.
pub fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    match value.split_once(' ') {
        Some((scheme, presented)) if scheme.eq_ignore_ascii_case("bearer") => {
            crate::wire::token_matches(presented.trim(), token)
        }
        _ => false,
    }
}

struct Served {
    metrics: Arc<AgentMetrics>,
    token: String,
}

async fn scrape(State(s): State<Arc<Served>>, headers: HeaderMap) -> Response {
    if !authorized(&headers, &s.token) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token (the agent's --metrics-token-file) is required\n",
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, super::CONTENT_TYPE)],
        s.metrics.render(),
    )
        .into_response()
}

/// Bind `endpoint` (an error names the flag) and serve `/metrics` until
/// the process ends.
pub async fn serve(endpoint: Endpoint, metrics: Arc<AgentMetrics>) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(endpoint.listen)
        .await
        .map_err(|e| format!("--metrics-listen {}: {e}", endpoint.listen))?;
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(Arc::new(Served {
            metrics,
            token: endpoint.token,
        }));
    tracing::info!("agent: metrics on http://{}/metrics", endpoint.listen);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("agent: metrics server: {e}");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bearer_of_the_token_is_authorized() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorized(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, "bearer s3cret".parse().unwrap());
        assert!(authorized(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, "Bearer s3cre".parse().unwrap());
        assert!(!authorized(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, "Basic s3cret".parse().unwrap());
        assert!(!authorized(&h, "s3cret"));
    }

    #[test]
    fn engine_calls_count_starts_stops_and_failures() {
        let m = AgentMetrics::new();
        m.call(Call::Start, Duration::from_millis(3), true);
        m.call(Call::Create, Duration::from_millis(3), false);
        m.call(Call::Stop, Duration::from_millis(3), true);
        m.call(Call::List, Duration::from_millis(3), true);
        let text = m.render();
        for line in [
            "reconcile_agent_container_starts_total 1",
            "reconcile_agent_container_stops_total 1",
            "reconcile_agent_container_failures_total 1",
            "reconcile_agent_docker_request_failures_total{operation=\"create\"} 1",
            "reconcile_agent_docker_request_duration_seconds_count{operation=\"list\"} 1",
            "reconcile_agent_tasks{state=\"RUNNING\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
