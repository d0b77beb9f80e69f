//! CapacityProvider: a pool of nodes, selected by attributes, that can grow
//! and shrink with the tasks it has to hold.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Toggle;

/// Spec of a CapacityProvider.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CapacityProviderSpec {
    /// Nodes of a cluster whose attributes match all of these belong to the
    /// provider. Empty selects every node of the cluster.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Target tracking of the CapacityProviderReservation (ECS names and
    /// defaults).
    #[serde(default)]
    pub managed_scaling: ManagedScaling,
    /// With ENABLED (needs managed scaling), a node that runs tasks is never
    /// removed on scale-in.
    #[serde(default)]
    pub managed_termination_protection: Toggle,
    /// How managed scaling launches nodes. Nodes are launched as agent
    /// containers on the controller's Docker host, carrying `attributes`
    /// (which should match nodeSelector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_template: Option<NodeTemplate>,
}

/// Managed scaling settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ManagedScaling {
    /// ENABLED lets the controller add and remove nodes.
    #[serde(default)]
    pub status: Toggle,
    /// CapacityProviderReservation percentage to hold (needed nodes / nodes
    /// x 100). 100 packs nodes fully; 90 keeps about 10% spare.
    #[serde(default = "default_target_capacity")]
    #[schemars(range(min = 1, max = 100))]
    pub target_capacity: u32,
    /// Fewest nodes added or removed in one step.
    #[serde(default = "default_min_step")]
    #[schemars(range(min = 1, max = 10000))]
    pub minimum_scaling_step_size: u32,
    /// Most nodes added or removed in one step.
    #[serde(default = "default_max_step")]
    #[schemars(range(min = 1, max = 10000))]
    pub maximum_scaling_step_size: u32,
    /// Seconds a new node is given before its metrics count.
    #[serde(default = "default_warmup")]
    #[schemars(range(min = 0, max = 10000))]
    pub instance_warmup_period: u32,
}

impl Default for ManagedScaling {
    fn default() -> Self {
        ManagedScaling {
            status: Toggle::Disabled,
            target_capacity: default_target_capacity(),
            minimum_scaling_step_size: default_min_step(),
            maximum_scaling_step_size: default_max_step(),
            instance_warmup_period: default_warmup(),
        }
    }
}

fn default_target_capacity() -> u32 {
    100
}
fn default_min_step() -> u32 {
    1
}
fn default_max_step() -> u32 {
    10000
}
fn default_warmup() -> u32 {
    300
}

/// What a node launched by managed scaling looks like.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeTemplate {
    /// Attributes of launched nodes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// Fewest nodes managed scaling keeps.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10000))]
    pub minimum_size: u32,
    /// Most nodes managed scaling launches.
    #[serde(default = "default_max_size")]
    #[schemars(range(min = 1, max = 10000))]
    pub maximum_size: u32,
}

fn default_max_size() -> u32 {
    10
}
