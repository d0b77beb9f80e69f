//! Service auto scaling, with Application Auto Scaling's names: bounds on
//! a service's task count and the target tracking policies that move it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Service auto scaling (the scalable target and its policies).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AutoScaling {
    /// Fewest tasks auto scaling keeps. A desiredCount below it starts at
    /// minCapacity.
    #[schemars(range(min = 0, max = 5000), example = 1)]
    pub min_capacity: u32,
    /// Most tasks auto scaling runs. A desiredCount above it starts at
    /// maxCapacity.
    #[schemars(range(min = 0, max = 5000), example = 10)]
    pub max_capacity: u32,
    /// Target tracking policies. The count goes out on the largest demand
    /// of any policy and in only when every policy agrees. At most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub target_tracking: Vec<TargetTracking>,
}

/// A target tracking policy: keep a service metric near `targetValue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetTracking {
    /// The metric tracked.
    pub predefined_metric: PredefinedMetric,
    /// The value to hold the metric at: a percentage for the utilizations,
    /// requests per task per minute for RequestCountPerTarget. Above 0.
    #[schemars(range(min = 0, max = 1000000000), example = 50.0)]
    pub target_value: f64,
    /// Seconds after a scale-out before another scale-out may happen.
    #[serde(default = "default_cooldown")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_out_cooldown: u32,
    /// Seconds after any scaling activity before a scale-in may happen.
    #[serde(default = "default_cooldown")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_in_cooldown: u32,
    /// With true, this policy only scales out; it never agrees to a
    /// scale-in.
    #[serde(default)]
    pub disable_scale_in: bool,
}

// JSON numbers are never NaN, so equality is total.
impl Eq for TargetTracking {}

impl std::hash::Hash for TargetTracking {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.predefined_metric.hash(h);
        self.target_value.to_bits().hash(h);
        self.scale_out_cooldown.hash(h);
        self.scale_in_cooldown.hash(h);
        self.disable_scale_in.hash(h);
    }
}

fn default_cooldown() -> u32 {
    300
}

/// A metric a target tracking policy can track.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum PredefinedMetric {
    /// Average CPU utilization of the service's tasks, in percent of what
    /// they reserve (as `status` shows it).
    #[serde(rename = "CPUUtilization")]
    CpuUtilization,
    /// Average memory utilization of the service's tasks, in percent of
    /// what they reserve.
    #[serde(rename = "MemoryUtilization")]
    MemoryUtilization,
    /// Requests per minute per running task through the service's
    /// listeners, summed over every node's listeners (ECS's
    /// ALBRequestCountPerTarget). Fleet mode; measured from the counts
    /// agents report with each heartbeat.
    #[serde(rename = "RequestCountPerTarget")]
    RequestCountPerTarget,
}

impl PredefinedMetric {
    pub fn as_str(self) -> &'static str {
        match self {
            PredefinedMetric::CpuUtilization => "CPUUtilization",
            PredefinedMetric::MemoryUtilization => "MemoryUtilization",
            PredefinedMetric::RequestCountPerTarget => "RequestCountPerTarget",
        }
    }
}
