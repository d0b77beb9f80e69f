//! The manifest model: the five kinds users commit, as typed Rust.
//!
//! These types are the single source of truth for the manifest contract. The
//! JSON Schemas in `schemas/` are generated from them (doc comments become
//! descriptions, `#[serde(default)]` becomes `default`, ranges become
//! `minimum`/`maximum`), and the loader deserialises validated documents into
//! them. Field names, units, defaults and ranges follow Amazon ECS.

pub mod auto_scaling;
pub mod capacity_provider;
pub mod cluster;
pub mod scheduled_task;
pub mod service;
pub mod task_definition;
pub mod traffic;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use capacity_provider::CapacityProviderSpec;
pub use cluster::ClusterSpec;
pub use scheduled_task::ScheduledTaskSpec;
pub use service::ServiceSpec;
pub use task_definition::TaskDefinitionSpec;

/// The only apiVersion this release reads.
pub const API_VERSION: &str = "reconcile/v1alpha1";

/// Pattern every resource name follows (ECS: cluster, family, service and
/// capacity provider names).
pub const NAME_PATTERN: &str = r"^[A-Za-z0-9_-]{1,255}$";

/// The kinds of manifest, in the order resources are created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    CapacityProvider,
    Cluster,
    TaskDefinition,
    Service,
    ScheduledTask,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::CapacityProvider,
        Kind::Cluster,
        Kind::TaskDefinition,
        Kind::Service,
        Kind::ScheduledTask,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::CapacityProvider => "CapacityProvider",
            Kind::Cluster => "Cluster",
            Kind::TaskDefinition => "TaskDefinition",
            Kind::Service => "Service",
            Kind::ScheduledTask => "ScheduledTask",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// File name of the kind's published schema.
    pub fn schema_file(self) -> &'static str {
        match self {
            Kind::CapacityProvider => "capacity-provider.json",
            Kind::Cluster => "cluster.json",
            Kind::TaskDefinition => "task-definition.json",
            Kind::Service => "service.json",
            Kind::ScheduledTask => "scheduled-task.json",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The apiVersion of every manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    /// The first, alpha version of the manifest format.
    #[serde(rename = "reconcile/v1alpha1")]
    V1Alpha1,
}

/// Identity and bookkeeping shared by every kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Name of the resource, unique per kind (a Service name is unique per
    /// cluster). For a TaskDefinition this is the ECS `family`.
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,255}$"), example = &"web")]
    pub name: String,
    /// Free-form labels, string to string.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations, string to string. Annotations under the
    /// `reconcile.io/` prefix change how the program treats the resource.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The envelope shared by every document: apiVersion, kind, metadata, spec.
///
/// `kind` is a plain string here; the generated schema pins it to the kind's
/// name, and documents are dispatched on it before they are deserialised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Envelope<S> {
    /// Version of the manifest format: always `reconcile/v1alpha1`.
    pub api_version: ApiVersion,
    /// Kind of the resource.
    pub kind: String,
    /// Name, labels and annotations.
    pub metadata: Metadata,
    /// The desired state of the resource.
    pub spec: S,
}

pub type ClusterManifest = Envelope<ClusterSpec>;
pub type CapacityProviderManifest = Envelope<CapacityProviderSpec>;
pub type TaskDefinitionManifest = Envelope<TaskDefinitionSpec>;
pub type ServiceManifest = Envelope<ServiceSpec>;
pub type ScheduledTaskManifest = Envelope<ScheduledTaskSpec>;

/// One validated manifest of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    CapacityProvider(CapacityProviderManifest),
    Cluster(ClusterManifest),
    TaskDefinition(TaskDefinitionManifest),
    Service(ServiceManifest),
    ScheduledTask(ScheduledTaskManifest),
}

impl Manifest {
    pub fn kind(&self) -> Kind {
        match self {
            Manifest::CapacityProvider(_) => Kind::CapacityProvider,
            Manifest::Cluster(_) => Kind::Cluster,
            Manifest::TaskDefinition(_) => Kind::TaskDefinition,
            Manifest::Service(_) => Kind::Service,
            Manifest::ScheduledTask(_) => Kind::ScheduledTask,
        }
    }

    pub fn metadata(&self) -> &Metadata {
        match self {
            Manifest::CapacityProvider(m) => &m.metadata,
            Manifest::Cluster(m) => &m.metadata,
            Manifest::TaskDefinition(m) => &m.metadata,
            Manifest::Service(m) => &m.metadata,
            Manifest::ScheduledTask(m) => &m.metadata,
        }
    }

    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    /// Deserialise a document already known to be of `kind` and to pass its
    /// schema. Errors carry the JSON pointer of the offending value.
    pub fn from_value(kind: Kind, value: &serde_json::Value) -> Result<Manifest, (String, String)> {
        fn typed<T: serde::de::DeserializeOwned>(
            v: &serde_json::Value,
        ) -> Result<T, (String, String)> {
            // The plain pass is the common, fast one; the path-tracking pass
            // only runs to locate an error.
            if let Ok(t) = T::deserialize(v) {
                return Ok(t);
            }
            serde_path_to_error::deserialize(v).map_err(|e| {
                let pointer = path_to_pointer(e.path());
                (pointer, e.into_inner().to_string())
            })
        }
        Ok(match kind {
            Kind::CapacityProvider => Manifest::CapacityProvider(typed(value)?),
            Kind::Cluster => Manifest::Cluster(typed(value)?),
            Kind::TaskDefinition => Manifest::TaskDefinition(typed(value)?),
            Kind::Service => Manifest::Service(typed(value)?),
            Kind::ScheduledTask => Manifest::ScheduledTask(typed(value)?),
        })
    }
}

fn path_to_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => {
                out.push('/');
                out.push_str(&index.to_string());
            }
            Segment::Map { key } | Segment::Enum { variant: key } => {
                out.push('/');
                out.push_str(&crate::pointer::escape(key));
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// Whether the named setting is `ENABLED` or `DISABLED` (ECS spelling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Toggle {
    Enabled,
    #[default]
    Disabled,
}

/// One item of a capacity provider strategy (ECS
/// `CapacityProviderStrategyItem`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CapacityProviderStrategyItem {
    /// Name of a CapacityProvider attached to the cluster.
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,255}$"), example = &"on-demand")]
    pub capacity_provider: String,
    /// How many tasks, at least, run on this provider before weights apply.
    /// Only one item of a strategy may have a base above 0.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100000))]
    pub base: u32,
    /// Relative share of the tasks beyond the base placed on this provider.
    /// At least one item must have a weight above 0; items with weight 0 get
    /// no tasks beyond their base.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub weight: u32,
}

/// A hard placement rule (ECS `PlacementConstraint`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlacementConstraint {
    /// `distinctInstance` places each task of the service on a different node;
    /// `memberOf` restricts placement to nodes matching `expression`.
    #[serde(rename = "type")]
    pub kind: PlacementConstraintType,
    /// Cluster query language expression, required for `memberOf`, e.g.
    /// `attribute:zone in [a, b]` or `attribute:pool != spot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2000), example = &"attribute:zone in [a, b]")]
    pub expression: Option<String>,
}

/// Type of a placement constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PlacementConstraintType {
    DistinctInstance,
    MemberOf,
}

/// `ENABLED`-style toggles serialise as strings; this helper keeps defaults
/// explicit in the schema.
pub(crate) fn default_true() -> bool {
    true
}
