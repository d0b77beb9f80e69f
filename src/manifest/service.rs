//! Service: keeps a number of tasks of a task definition running on a
//! cluster, and rolls out new revisions with ECS deployment semantics.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::traffic::{LoadBalancer, ServiceRegistry};
use super::{CapacityProviderStrategyItem, PlacementConstraint, Toggle};

/// Spec of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Name of the Cluster the service runs in.
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,255}$"), example = &"prod")]
    pub cluster: String,
    /// `family` (the revision the source defines) or `family:revision` (a
    /// revision registered earlier).
    #[schemars(
        pattern(r"^[A-Za-z0-9_-]{1,255}(:[1-9][0-9]{0,8})?$"),
        example = &"web"
    )]
    pub task_definition: String,
    /// Number of tasks to keep running. Required for REPLICA services, not
    /// allowed for DAEMON ones. Changing it scales in place; it does not
    /// start a new deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 5000), example = 3)]
    pub desired_count: Option<u32>,
    /// REPLICA keeps desiredCount tasks; DAEMON runs one task on every node
    /// that meets the placement constraints.
    #[serde(default)]
    pub scheduling_strategy: SchedulingStrategy,
    /// How deployments replace tasks.
    #[serde(default)]
    pub deployment_configuration: DeploymentConfiguration,
    /// Seconds after a task starts during which failing health checks are
    /// ignored.
    #[serde(default)]
    #[schemars(range(min = 0, max = 2147483647))]
    pub health_check_grace_period_seconds: u32,
    /// How tasks are spread over nodes, applied in order (later strategies
    /// break ties of earlier ones). At most 5.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub placement_strategy: Vec<PlacementStrategy>,
    /// Hard placement rules, added to those of the task definition. At most
    /// 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub placement_constraints: Vec<PlacementConstraint>,
    /// Which capacity providers the tasks run on; overrides the cluster's
    /// defaultCapacityProviderStrategy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub capacity_provider_strategy: Vec<CapacityProviderStrategyItem>,
    /// Service auto scaling (Application Auto Scaling names): the
    /// controller keeps the task count between minCapacity and
    /// maxCapacity, moved by target tracking policies. desiredCount is
    /// then the starting count; later commits that leave this block alone
    /// never reset the scaled count. REPLICA services only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_scaling: Option<super::auto_scaling::AutoScaling>,
    /// Listeners on every node of the cluster that balance over the
    /// service's healthy tasks. At most 5.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub load_balancers: Vec<LoadBalancer>,
    /// DNS names of the service's healthy tasks. At most 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1))]
    pub service_registries: Vec<ServiceRegistry>,
    /// Whether the controller moves tasks to even out a service that
    /// spreads over an attribute (`spread` on `attribute:NAME`) or over
    /// nodes (`instanceId`, `host`) when a node or zone joins or comes
    /// back: it starts a task where there are fewest, waits until it is
    /// healthy, then stops one where there are most, within the
    /// deploymentConfiguration's bounds. Default ENABLED for REPLICA
    /// services whose first placement strategy is a spread and that do not
    /// binpack; never for others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone_rebalancing: Option<Toggle>,
}

/// Scheduling strategy of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SchedulingStrategy {
    /// Keep desiredCount tasks, placed by the placement strategy.
    #[default]
    Replica,
    /// One task on each node that meets the placement constraints.
    Daemon,
}

/// How a deployment replaces tasks (ECS `DeploymentConfiguration`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeploymentConfiguration {
    /// Lower bound, as a percentage of desiredCount rounded up, on the tasks
    /// that stay healthy during a deployment. Default 100 (0 for DAEMON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100), example = 100)]
    pub minimum_healthy_percent: Option<u32>,
    /// Upper bound, as a percentage of desiredCount rounded down, on running
    /// plus pending tasks during a deployment. Default 200 (100 for DAEMON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 1000), example = 200)]
    pub maximum_percent: Option<u32>,
    /// Stop a deployment that cannot reach steady state, and optionally roll
    /// back to the last completed one.
    #[serde(default)]
    pub deployment_circuit_breaker: DeploymentCircuitBreaker,
}

impl DeploymentConfiguration {
    /// Effective minimumHealthyPercent for a scheduling strategy.
    pub fn min_healthy(&self, strategy: SchedulingStrategy) -> u32 {
        self.minimum_healthy_percent.unwrap_or(match strategy {
            SchedulingStrategy::Replica => 100,
            SchedulingStrategy::Daemon => 0,
        })
    }

    /// Effective maximumPercent for a scheduling strategy.
    pub fn max_percent(&self, strategy: SchedulingStrategy) -> u32 {
        self.maximum_percent.unwrap_or(match strategy {
            SchedulingStrategy::Replica => 200,
            SchedulingStrategy::Daemon => 100,
        })
    }
}

/// Deployment circuit breaker (ECS `DeploymentCircuitBreaker`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeploymentCircuitBreaker {
    /// Count failed tasks of a deployment and mark it FAILED at the
    /// threshold.
    #[serde(default)]
    pub enable: bool,
    /// When the breaker trips, restore the last COMPLETED deployment.
    #[serde(default)]
    pub rollback: bool,
    /// When the breaker trips. Default: 50 percent of desiredCount, at least
    /// 3 and at most 200 failed tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_configuration: Option<CircuitBreakerThreshold>,
}

/// Failure threshold of the circuit breaker.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CircuitBreakerThreshold {
    /// `COUNT`: trip after `value` failed tasks. `BOUNDED_PERCENT`: `value`
    /// percent of desiredCount, clamped to [3, 200]. `UNBOUNDED_PERCENT`:
    /// `value` percent of desiredCount, at least 1.
    #[serde(rename = "type")]
    pub kind: ThresholdType,
    /// Count or percentage, depending on `type`.
    #[schemars(range(min = 1, max = 1000))]
    pub value: u32,
}

/// How a circuit breaker threshold is expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ThresholdType {
    Count,
    BoundedPercent,
    UnboundedPercent,
}

impl DeploymentCircuitBreaker {
    /// Failed tasks after which a deployment with `desired` tasks is FAILED.
    pub fn threshold(&self, desired: u32) -> u32 {
        let percent = |p: u32| (u64::from(desired) * u64::from(p)).div_ceil(100) as u32;
        match &self.threshold_configuration {
            None => percent(50).clamp(3, 200),
            Some(t) => match t.kind {
                ThresholdType::Count => t.value,
                ThresholdType::BoundedPercent => percent(t.value).clamp(3, 200),
                ThresholdType::UnboundedPercent => percent(t.value).max(1),
            },
        }
    }
}

/// How tasks are placed across nodes (ECS `PlacementStrategy`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlacementStrategy {
    /// `spread` evens tasks out over values of `field`; `binpack` fills the
    /// node with the least of `field` left; `random` picks any node.
    #[serde(rename = "type")]
    pub kind: PlacementStrategyType,
    /// For spread: `instanceId`, `host` or `attribute:NAME`. For binpack:
    /// `cpu` or `memory`. Not used by random.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        pattern(r"^(instanceId|host|cpu|memory|attribute:[A-Za-z0-9_.:/-]{1,128})$"),
        example = &"attribute:zone"
    )]
    pub field: Option<String>,
}

/// Type of a placement strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PlacementStrategyType {
    Random,
    Spread,
    Binpack,
}
