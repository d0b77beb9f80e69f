//! Cluster: a named group of nodes that services run on.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::CapacityProviderStrategyItem;

/// Spec of a Cluster. Nodes join a cluster by name; with no capacity
/// providers, the cluster's tasks may be placed on any of its nodes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Names of the CapacityProviders attached to the cluster. Replaced as a
    /// whole: a provider left out is detached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(example = capacity_providers_example())]
    pub capacity_providers: Vec<String>,
    /// Strategy of services that set no capacityProviderStrategy of their
    /// own. Every provider named must be attached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub default_capacity_provider_strategy: Vec<CapacityProviderStrategyItem>,
}

fn capacity_providers_example() -> Vec<&'static str> {
    vec!["on-demand", "spot"]
}
