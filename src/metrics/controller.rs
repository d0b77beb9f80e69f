//! The controller's metrics. Counters and histograms are fed as things
//! happen (passes, applied changes, fetches, breaker trips); gauges are
//! set at scrape time from a [`View`] of the state the controller holds,
//! so they never drift and series of services, nodes and providers that
//! are gone disappear. Rendering is linear in the size of the view.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::lock;
use crate::manifest::Kind;
use crate::plan::{Action, Plan};
use crate::reconcile::Outcome;

/// How a pass ended, as a label value.
pub const OUTCOMES: [&str; 9] = [
    "applied",
    "unchanged",
    "invalid_source",
    "refused",
    "suspended",
    "declined",
    "stale",
    "failed",
    "superseded",
];

/// The outcome label of a pass the core ran to its end.
pub fn outcome_code(o: &Outcome) -> &'static str {
    match o {
        Outcome::Unchanged { .. } => "unchanged",
        Outcome::Refused { .. } => "refused",
        Outcome::Stale { .. } => "stale",
        Outcome::Suspended { .. } => "suspended",
        Outcome::Declined { .. } => "declined",
        Outcome::Applied { .. } => "applied",
        Outcome::Failed { .. } => "failed",
    }
}

pub fn kind_code(k: Kind) -> &'static str {
    match k {
        Kind::Cluster => "Cluster",
        Kind::CapacityProvider => "CapacityProvider",
        Kind::TaskDefinition => "TaskDefinition",
        Kind::Service => "Service",
        Kind::ScheduledTask => "ScheduledTask",
    }
}

/// None for a no-op, which is not a change.
pub fn action_code(a: Action) -> Option<&'static str> {
    match a {
        Action::Create => Some("create"),
        Action::Update => Some("update"),
        Action::Replace => Some("replace"),
        Action::Delete => Some("delete"),
        Action::NoOp => None,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabels {
    kind: &'static str,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct ServiceLabels {
    cluster: String,
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScalingLabels {
    cluster: String,
    service: String,
    /// `out` or `in`.
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeploymentLabels {
    cluster: String,
    service: String,
    status: &'static str,
    rollout_state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlacementLabels {
    cluster: String,
    service: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeStatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

type FGauge = Gauge<f64, AtomicU64>;

/// A service as a scrape sees it.
#[derive(Debug, Clone, Default)]
pub struct ServiceView {
    pub cluster: String,
    pub name: String,
    /// None for DAEMON services (one per eligible node).
    pub desired: Option<u32>,
    pub running: u32,
    pub pending: u32,
    /// (status, rollout state) of each PRIMARY or ACTIVE deployment, as
    /// ECS names them.
    pub deployments: Vec<(&'static str, &'static str)>,
}

/// A node as a scrape sees it.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub name: String,
    pub cluster: String,
    /// ACTIVE, DRAINING or LOST.
    pub status: &'static str,
    /// Seconds since its last heartbeat; None before the first one of this
    /// controller's run.
    pub heartbeat_age: Option<f64>,
}

/// What the gauges show, taken from the controller's state at scrape time.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub services: Vec<ServiceView>,
    pub nodes: Vec<NodeView>,
    /// Tasks the last plan could not place: (cluster, service, reason
    /// code, tasks).
    pub unplaced: Vec<(String, String, &'static str, u32)>,
    /// Seconds since the applied commit's commit time (git sources).
    pub commit_age: Option<f64>,
    /// CapacityProviderReservation (percent) per managed provider.
    pub reservations: Vec<(String, u32)>,
}

/// Node statuses, each always shown (0 when none).
const NODE_STATUSES: [&str; 3] = ["ACTIVE", "DRAINING", "LOST"];

/// The controller's registry.
#[derive(Debug)]
pub struct ControllerMetrics {
    registry: Registry,
    passes: Family<OutcomeLabels, Counter>,
    pass_duration: Histogram,
    changes: Family<ChangeLabels, Counter>,
    breaker_trips: Family<ServiceLabels, Counter>,
    rollbacks: Family<ServiceLabels, Counter>,
    scalings: Family<ScalingLabels, Counter>,
    /// Services with a series in a per-service counter, so the series of a
    /// deleted service are removed at the next scrape.
    counted: Mutex<BTreeSet<ServiceLabels>>,
    fetch_duration: Histogram,
    fetch_failures: Counter,
    desired: Family<ServiceLabels, Gauge>,
    running: Family<ServiceLabels, Gauge>,
    pending: Family<ServiceLabels, Gauge>,
    deployments: Family<DeploymentLabels, Gauge>,
    unplaced: Family<PlacementLabels, Gauge>,
    nodes: Family<NodeStatusLabels, Gauge>,
    heartbeat_age: Family<NodeLabels, FGauge>,
    /// No series while no commit was applied.
    commit_age: Family<Vec<(String, String)>, FGauge>,
    reservation: Family<ProviderLabels, Gauge>,
    /// One scrape sets the gauges and encodes at a time.
    scrape: Mutex<()>,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ControllerMetrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("reconcile");
        let m = ControllerMetrics {
            passes: Family::default(),
            pass_duration: Histogram::new(super::duration_buckets()),
            changes: Family::default(),
            breaker_trips: Family::default(),
            rollbacks: Family::default(),
            scalings: Family::default(),
            counted: Mutex::default(),
            fetch_duration: Histogram::new(super::duration_buckets()),
            fetch_failures: Counter::default(),
            desired: Family::default(),
            running: Family::default(),
            pending: Family::default(),
            deployments: Family::default(),
            unplaced: Family::default(),
            nodes: Family::default(),
            heartbeat_age: Family::default(),
            commit_age: Family::default(),
            reservation: Family::default(),
            scrape: Mutex::default(),
            registry: Registry::default(),
        };
        r.register(
            "passes",
            "Reconcile passes by how they ended",
            m.passes.clone(),
        );
        r.register(
            "pass_duration_seconds",
            "Duration of a reconcile pass, from reading the source to its outcome",
            m.pass_duration.clone(),
        );
        r.register(
            "plan_changes_applied",
            "Resource changes of plans applied in full, by kind and action",
            m.changes.clone(),
        );
        r.register(
            "service_scaling_decisions",
            "Auto scaling decisions that changed a service's count, by direction",
            m.scalings.clone(),
        );
        r.register(
            "breaker_trips",
            "Deployments whose circuit breaker tripped",
            m.breaker_trips.clone(),
        );
        r.register(
            "rollbacks",
            "Rollbacks started after a failed or aborted deployment",
            m.rollbacks.clone(),
        );
        r.register(
            "git_fetch_duration_seconds",
            "Duration of a fetch of the git source",
            m.fetch_duration.clone(),
        );
        r.register(
            "git_fetch_failures",
            "Failed fetches of the git source",
            m.fetch_failures.clone(),
        );
        r.register(
            "service_desired_tasks",
            "A REPLICA service's desired count",
            m.desired.clone(),
        );
        r.register(
            "service_running_tasks",
            "A service's tasks its nodes report RUNNING",
            m.running.clone(),
        );
        r.register(
            "service_pending_tasks",
            "A service's tasks its nodes report PENDING",
            m.pending.clone(),
        );
        r.register(
            "deployments",
            "PRIMARY and ACTIVE deployments by rollout state",
            m.deployments.clone(),
        );
        r.register(
            "placement_failures",
            "Tasks the last plan could not place, by reason",
            m.unplaced.clone(),
        );
        r.register("nodes", "Nodes by status", m.nodes.clone());
        r.register(
            "node_heartbeat_age_seconds",
            "Seconds since a node's last heartbeat",
            m.heartbeat_age.clone(),
        );
        r.register(
            "applied_commit_age_seconds",
            "Seconds since the commit time of the commit last applied",
            m.commit_age.clone(),
        );
        r.register(
            "capacity_provider_reservation_percent",
            "CapacityProviderReservation of a managed capacity provider",
            m.reservation.clone(),
        );
        for o in OUTCOMES {
            // Every outcome is shown from the start, so rates work at once.
            let _ = m.passes.get_or_create(&OutcomeLabels { outcome: o });
        }
        ControllerMetrics { registry: r, ..m }
    }

    /// A pass ended with `outcome` (one of [`OUTCOMES`]) after `seconds`.
    pub fn pass(&self, outcome: &'static str, seconds: f64) {
        self.passes.get_or_create(&OutcomeLabels { outcome }).inc();
        self.pass_duration.observe(seconds);
    }

    /// A plan was applied in full: count its changes.
    pub fn applied(&self, plan: &Plan) {
        for c in &plan.resource_changes {
            if let Some(action) = action_code(c.action) {
                self.changes
                    .get_or_create(&ChangeLabels {
                        kind: kind_code(c.kind),
                        action,
                    })
                    .inc();
            }
        }
    }

    fn service_counter(&self, f: &Family<ServiceLabels, Counter>, key: &str) {
        let Some((cluster, service)) = key.split_once('/') else {
            return;
        };
        let l = ServiceLabels {
            cluster: cluster.into(),
            service: service.into(),
        };
        f.get_or_create(&l).inc();
        lock(&self.counted).insert(l);
    }

    /// A deployment of the service `cluster/name` tripped its breaker.
    pub fn breaker_tripped(&self, key: &str) {
        self.service_counter(&self.breaker_trips, key);
    }

    /// Auto scaling moved the count of the service `cluster/name`
    /// (`direction` is `out` or `in`).
    pub fn scaled(&self, key: &str, direction: &'static str) {
        let Some((cluster, service)) = key.split_once('/') else {
            return;
        };
        self.scalings
            .get_or_create(&ScalingLabels {
                cluster: cluster.into(),
                service: service.into(),
                direction,
            })
            .inc();
        lock(&self.counted).insert(ServiceLabels {
            cluster: cluster.into(),
            service: service.into(),
        });
    }

    /// A rollback of the service `cluster/name` started.
    pub fn rollback(&self, key: &str) {
        self.service_counter(&self.rollbacks, key);
    }

    /// A fetch of the git source took `seconds`.
    pub fn fetch(&self, seconds: f64, ok: bool) {
        self.fetch_duration.observe(seconds);
        if !ok {
            self.fetch_failures.inc();
        }
    }

    /// Set the gauges from `view` and encode everything.
    pub fn render(&self, view: &View) -> String {
        let _one = lock(&self.scrape);
        self.desired.clear();
        self.running.clear();
        self.pending.clear();
        self.deployments.clear();
        let mut live = BTreeSet::new();
        for s in &view.services {
            let l = ServiceLabels {
                cluster: s.cluster.clone(),
                service: s.name.clone(),
            };
            if let Some(d) = s.desired {
                self.desired.get_or_create(&l).set(i64::from(d));
            }
            self.running.get_or_create(&l).set(i64::from(s.running));
            self.pending.get_or_create(&l).set(i64::from(s.pending));
            for (status, rollout_state) in &s.deployments {
                self.deployments
                    .get_or_create(&DeploymentLabels {
                        cluster: s.cluster.clone(),
                        service: s.name.clone(),
                        status,
                        rollout_state,
                    })
                    .inc();
            }
            live.insert(l);
        }
        {
            let mut counted = lock(&self.counted);
            counted.retain(|l| {
                let keep = live.contains(l);
                if !keep {
                    self.breaker_trips.remove(l);
                    self.rollbacks.remove(l);
                    for direction in ["out", "in"] {
                        self.scalings.remove(&ScalingLabels {
                            cluster: l.cluster.clone(),
                            service: l.service.clone(),
                            direction,
                        });
                    }
                }
                keep
            });
        }
        self.unplaced.clear();
        for (cluster, service, reason, n) in &view.unplaced {
            self.unplaced
                .get_or_create(&PlacementLabels {
                    cluster: cluster.clone(),
                    service: service.clone(),
                    reason,
                })
                .inc_by(i64::from(*n));
        }
        self.nodes.clear();
        for status in NODE_STATUSES {
            let _ = self.nodes.get_or_create(&NodeStatusLabels { status });
        }
        self.heartbeat_age.clear();
        for n in &view.nodes {
            self.nodes
                .get_or_create(&NodeStatusLabels { status: n.status })
                .inc();
            if let Some(age) = n.heartbeat_age {
                self.heartbeat_age
                    .get_or_create(&NodeLabels {
                        node: n.name.clone(),
                        cluster: n.cluster.clone(),
                    })
                    .set(age);
            }
        }
        self.commit_age.clear();
        if let Some(age) = view.commit_age {
            self.commit_age.get_or_create(&Vec::new()).set(age);
        }
        self.reservation.clear();
        for (provider, percent) in &view.reservations {
            self.reservation
                .get_or_create(&ProviderLabels {
                    provider: provider.clone(),
                })
                .set(i64::from(*percent));
        }
        super::render(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, running: u32) -> ServiceView {
        ServiceView {
            cluster: "c".into(),
            name: name.into(),
            desired: Some(2),
            running,
            pending: 0,
            deployments: vec![("PRIMARY", "IN_PROGRESS"), ("ACTIVE", "COMPLETED")],
        }
    }

    #[test]
    fn gauges_follow_the_view_and_series_of_what_is_gone_disappear() {
        let m = ControllerMetrics::new();
        m.breaker_tripped("c/web");
        m.rollback("c/web");
        m.pass("applied", 0.2);
        let first = m.render(&View {
            services: vec![service("web", 2), service("api", 1)],
            nodes: vec![NodeView {
                name: "n1".into(),
                cluster: "c".into(),
                status: "ACTIVE",
                heartbeat_age: Some(0.5),
            }],
            unplaced: vec![("c".into(), "api".into(), "memory", 1)],
            commit_age: Some(3.0),
            reservations: vec![("spot".into(), 50)],
        });
        for line in [
            "reconcile_service_running_tasks{cluster=\"c\",service=\"web\"} 2",
            "reconcile_service_running_tasks{cluster=\"c\",service=\"api\"} 1",
            "reconcile_breaker_trips_total{cluster=\"c\",service=\"web\"} 1",
            "reconcile_rollbacks_total{cluster=\"c\",service=\"web\"} 1",
            "reconcile_passes_total{outcome=\"applied\"} 1",
            "reconcile_passes_total{outcome=\"superseded\"} 0",
            "reconcile_deployments{cluster=\"c\",service=\"web\",status=\"PRIMARY\",rollout_state=\"IN_PROGRESS\"} 1",
            "reconcile_placement_failures{cluster=\"c\",service=\"api\",reason=\"memory\"} 1",
            "reconcile_nodes{status=\"ACTIVE\"} 1",
            "reconcile_nodes{status=\"LOST\"} 0",
            "reconcile_node_heartbeat_age_seconds{node=\"n1\",cluster=\"c\"} 0.5",
            "reconcile_applied_commit_age_seconds 3.0",
            "reconcile_capacity_provider_reservation_percent{provider=\"spot\"} 50",
        ] {
            assert!(first.lines().any(|l| l == line), "{line} missing in\n{first}");
        }
        // web is deleted, the node and the provider are gone.
        let second = m.render(&View {
            services: vec![service("api", 2)],
            ..View::default()
        });
        assert!(!second.contains("service=\"web\""), "{second}");
        assert!(
            !second.contains("n1") && !second.contains("spot"),
            "{second}"
        );
        assert!(second.contains("reconcile_service_running_tasks{cluster=\"c\",service=\"api\"} 2"));
    }

    #[test]
    fn every_change_but_a_no_op_is_counted_by_kind_and_action() {
        assert_eq!(action_code(Action::NoOp), None);
        assert_eq!(action_code(Action::Replace), Some("replace"));
        assert_eq!(kind_code(Kind::Service), "Service");
    }
}

#[cfg(test)]
mod scaling_tests {
    use super::*;

    #[test]
    fn scaling_decisions_are_counted_by_direction_and_go_with_their_service() {
        let m = ControllerMetrics::new();
        m.scaled("c/web", "out");
        m.scaled("c/web", "out");
        m.scaled("c/web", "in");
        let live = View {
            services: vec![ServiceView {
                cluster: "c".into(),
                name: "web".into(),
                ..ServiceView::default()
            }],
            ..View::default()
        };
        let text = m.render(&live);
        for line in [
            "reconcile_service_scaling_decisions_total{cluster=\"c\",service=\"web\",direction=\"out\"} 2",
            "reconcile_service_scaling_decisions_total{cluster=\"c\",service=\"web\",direction=\"in\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        let text = m.render(&View::default());
        assert!(!text.contains("direction=\""), "{text}");
    }
}
