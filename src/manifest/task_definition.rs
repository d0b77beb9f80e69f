//! TaskDefinition: an immutable, versioned description of the containers of a
//! task (the body of ECS RegisterTaskDefinition, restricted to what runs on a
//! Docker host). `metadata.name` is the ECS family.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{default_true, PlacementConstraint};

/// Spec of a TaskDefinition. Any change to it makes a new revision
/// (`web:1`, `web:2`, ...); the same spec never makes a new one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskDefinitionSpec {
    /// Task-level CPU units reserved for the task (1024 units = 1 vCPU). When
    /// unset, the task reserves the sum of its containers' `cpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 128, max = 196608), example = 256)]
    pub cpu: Option<u32>,
    /// Task-level memory in MiB reserved for the task. When unset, every
    /// container needs `memory` or `memoryReservation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 6, max = 4194304), example = 512)]
    pub memory: Option<u32>,
    /// Docker networking mode of the task's containers. `bridge` gives each
    /// task its own network on which its containers reach each other by name.
    #[serde(default)]
    pub network_mode: NetworkMode,
    /// The containers of the task, 1 to 10.
    #[schemars(length(min = 1, max = 10))]
    pub container_definitions: Vec<ContainerDefinition>,
    /// Data volumes the containers may mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub volumes: Vec<Volume>,
    /// Hard placement rules for every task of this definition (`memberOf`
    /// only; ECS allows at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub placement_constraints: Vec<PlacementConstraint>,
}

/// Docker networking mode of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Containers on a per-task bridge network; host ports mapped (static or
    /// dynamic).
    #[default]
    Bridge,
    /// Containers share the node's network stack; hostPort equals
    /// containerPort.
    Host,
    /// No external networking; port mappings are not allowed.
    None,
}

/// One container of a task (ECS `ContainerDefinition`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerDefinition {
    /// Name of the container, unique in the task; other containers reach it
    /// by this name on bridge networking.
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,255}$"), example = &"web")]
    pub name: String,
    /// Image reference: `repository[:tag]` or `repository@sha256:digest`.
    /// Used when present on the node, pulled otherwise.
    #[schemars(length(min = 1, max = 1024), example = &"busybox:stable")]
    pub image: String,
    /// When an essential container stops, the whole task stops. Every task
    /// needs at least one essential container.
    #[serde(default = "default_true")]
    pub essential: bool,
    /// CPU units reserved for the container (1024 = 1 vCPU), passed to Docker
    /// as CPU shares. 0 reserves nothing.
    #[serde(default)]
    #[schemars(range(min = 0, max = 196608))]
    pub cpu: u32,
    /// Hard memory limit in MiB: the container is killed when it exceeds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 6, max = 4194304), example = 256)]
    pub memory: Option<u32>,
    /// Soft memory limit in MiB, reserved for scheduling. Must be below
    /// `memory` when both are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 6, max = 4194304), example = 128)]
    pub memory_reservation: Option<u32>,
    /// Overrides the image's CMD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Overrides the image's ENTRYPOINT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_point: Option<Vec<String>>,
    /// Working directory of the container's process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub working_directory: Option<String>,
    /// User (name, uid, `uid:gid` or `user:group`) the process runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"1000")]
    pub user: Option<String>,
    /// Plain environment variables. Their order carries no meaning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<KeyValuePair>,
    /// Environment variables whose values come from a secret store. Values
    /// are injected when the container starts and never printed in plans,
    /// logs or errors; plans show a fingerprint instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Secret>,
    /// Ports the container listens on and how they are published.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub port_mappings: Vec<PortMapping>,
    /// Container health check, run by Docker. The image's own HEALTHCHECK is
    /// ignored, as in ECS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Containers that must reach a condition before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<ContainerDependency>,
    /// Seconds between SIGTERM and SIGKILL when the container is stopped.
    #[serde(default = "default_stop_timeout")]
    #[schemars(range(min = 0, max = 120))]
    pub stop_timeout: u32,
    /// Seconds to wait for `dependsOn` conditions before giving up; the task
    /// is then stopped. Unset waits without limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 600), example = 60)]
    pub start_timeout: Option<u32>,
    /// Volumes mounted into the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_points: Vec<MountPoint>,
    /// Mount every volume of another container of the task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes_from: Vec<VolumeFrom>,
    /// Docker labels added to the container. Keys under `reconcile.io/` are
    /// reserved for the program's own labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub docker_labels: BTreeMap<String, String>,
    /// Resource limits (`ulimit`) of the container's processes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// Mount the root filesystem read-only.
    #[serde(default)]
    pub readonly_root_filesystem: bool,
    /// Docker log driver and its options. Unset uses the daemon's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_configuration: Option<LogConfiguration>,
    /// Hostname of the container (not allowed with networkMode host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub hostname: Option<String>,
    /// Extra `/etc/hosts` entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<HostEntry>,
    /// DNS servers of the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_servers: Vec<String>,
    /// DNS search domains of the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search_domains: Vec<String>,
    /// Give the container extended privileges on the node.
    #[serde(default)]
    pub privileged: bool,
    /// Keep stdin open (`docker run -i`).
    #[serde(default)]
    pub interactive: bool,
    /// Allocate a TTY (`docker run -t`).
    #[serde(default)]
    pub pseudo_terminal: bool,
    /// Namespaced kernel parameters (`docker run --sysctl`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub system_controls: Vec<SystemControl>,
    /// Linux-specific settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_parameters: Option<LinuxParameters>,
}

pub(crate) fn default_stop_timeout() -> u32 {
    30
}

/// A name/value pair (environment variable).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeyValuePair {
    /// Variable name.
    #[schemars(length(min = 1), example = &"MODE")]
    pub name: String,
    /// Variable value.
    #[serde(default)]
    pub value: String,
}

/// An environment variable filled from a secret.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Secret {
    /// Environment variable name the secret is exposed as.
    #[schemars(length(min = 1), example = &"DB_PASSWORD")]
    pub name: String,
    /// Where the value comes from. Standalone: `env:NAME` (the environment
    /// of the program applying), `file:PATH`, or a bare name, the file of
    /// that name in the secrets directory (`RECONCILE_SECRETS_DIR`, default
    /// `.reconcile/secrets` under the source). Fleet: a bare name is a
    /// secret set on the controller (`reconcile secret set NAME`), and
    /// `node:NAME` is read by the agent from its `--secrets-dir`; `env:`
    /// and `file:` are refused.
    #[schemars(length(min = 1), example = &"db-password")]
    pub value_from: String,
}

/// Protocol of a port mapping.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// A published port (ECS `PortMapping`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortMapping {
    /// Port the container listens on.
    #[schemars(range(min = 1, max = 65535), example = 8080)]
    pub container_port: u16,
    /// Port on the node. With bridge networking, 0 or unset picks a free
    /// dynamic port (reported back as the actual binding); with host
    /// networking it must be unset or equal to containerPort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65535))]
    pub host_port: Option<u16>,
    /// Transport protocol.
    #[serde(default)]
    pub protocol: Protocol,
    /// Optional name of the mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$"))]
    pub name: Option<String>,
}

/// A container health check (ECS `HealthCheck`), run by Docker.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthCheck {
    /// `["CMD", "exe", "arg", ...]` runs a program directly;
    /// `["CMD-SHELL", "command line"]` runs it with the container's shell.
    /// Exit 0 means healthy.
    #[schemars(length(min = 2), example = health_check_example())]
    pub command: Vec<String>,
    /// Seconds between checks.
    #[serde(default = "default_hc_interval")]
    #[schemars(range(min = 5, max = 300))]
    pub interval: u32,
    /// Seconds a check may take before it counts as failed.
    #[serde(default = "default_hc_timeout")]
    #[schemars(range(min = 2, max = 60))]
    pub timeout: u32,
    /// Consecutive failures before the container is UNHEALTHY.
    #[serde(default = "default_hc_retries")]
    #[schemars(range(min = 1, max = 10))]
    pub retries: u32,
    /// Seconds after start during which failures do not count.
    #[serde(default)]
    #[schemars(range(min = 0, max = 300))]
    pub start_period: u32,
}

fn health_check_example() -> Vec<&'static str> {
    vec![
        "CMD-SHELL",
        "wget -q -O /dev/null http://localhost:8080/ || exit 1",
    ]
}
pub(crate) fn default_hc_interval() -> u32 {
    30
}
pub(crate) fn default_hc_timeout() -> u32 {
    5
}
pub(crate) fn default_hc_retries() -> u32 {
    3
}

/// A startup dependency on another container of the task.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerDependency {
    /// Name of a container of the same task.
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,255}$"), example = &"db")]
    pub container_name: String,
    /// What the dependency must reach before this container starts.
    pub condition: DependencyCondition,
}

/// Condition of a container dependency.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DependencyCondition {
    /// The dependency has started.
    Start,
    /// The dependency has exited, whatever its exit code (non-essential
    /// targets only).
    Complete,
    /// The dependency has exited with code 0 (non-essential targets only).
    Success,
    /// The dependency's health check passes (it must have a healthCheck).
    Healthy,
}

/// A volume mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MountPoint {
    /// Name of a volume of the task definition.
    #[schemars(length(min = 1), example = &"data")]
    pub source_volume: String,
    /// Absolute path inside the container.
    #[schemars(pattern(r"^/"), example = &"/data")]
    pub container_path: String,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// Mount the volumes of another container of the task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeFrom {
    /// Name of the container whose volumes are mounted.
    #[schemars(length(min = 1))]
    pub source_container: String,
    /// Mount them read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// Name of a ulimit.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum UlimitName {
    Core,
    Cpu,
    Data,
    Fsize,
    Locks,
    Memlock,
    Msgqueue,
    Nice,
    Nofile,
    Nproc,
    Rss,
    Rtprio,
    Rttime,
    Sigpending,
    Stack,
}

/// A resource limit of the container's processes.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Ulimit {
    /// Which limit.
    pub name: UlimitName,
    /// Soft limit.
    #[schemars(range(min = 0))]
    pub soft_limit: i64,
    /// Hard limit, at least the soft limit.
    #[schemars(range(min = 0))]
    pub hard_limit: i64,
}

/// Docker log driver of a container.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LogConfiguration {
    /// Log driver known to the Docker daemon.
    pub log_driver: LogDriver,
    /// Driver options, e.g. `max-size` for json-file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// Docker log drivers available on a Docker host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LogDriver {
    JsonFile,
    Local,
    Syslog,
    Journald,
    Gelf,
    Fluentd,
    Splunk,
    None,
}

impl LogDriver {
    pub fn as_str(self) -> &'static str {
        match self {
            LogDriver::JsonFile => "json-file",
            LogDriver::Local => "local",
            LogDriver::Syslog => "syslog",
            LogDriver::Journald => "journald",
            LogDriver::Gelf => "gelf",
            LogDriver::Fluentd => "fluentd",
            LogDriver::Splunk => "splunk",
            LogDriver::None => "none",
        }
    }
}

/// An extra `/etc/hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostEntry {
    /// Hostname.
    #[schemars(length(min = 1))]
    pub hostname: String,
    /// IP address.
    #[schemars(length(min = 1))]
    pub ip_address: String,
}

/// A namespaced kernel parameter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SystemControl {
    /// Parameter, e.g. `net.core.somaxconn`.
    #[schemars(length(min = 1))]
    pub namespace: String,
    /// Value.
    pub value: String,
}

/// Linux-specific container settings (subset of ECS `LinuxParameters` that a
/// Docker host honours).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LinuxParameters {
    /// Run an init process (tini) as PID 1 that forwards signals and reaps
    /// zombies.
    #[serde(default)]
    pub init_process_enabled: bool,
    /// Size of `/dev/shm` in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub shared_memory_size: Option<u32>,
    /// Linux capabilities added to or dropped from Docker's default set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<KernelCapabilities>,
}

/// Linux capabilities to add and drop (e.g. `NET_ADMIN`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KernelCapabilities {
    /// Capabilities added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    /// Capabilities dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

/// A data volume of the task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Volume {
    /// Name referenced by `mountPoints[].sourceVolume`.
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,255}$"), example = &"data")]
    pub name: String,
    /// Bind mount of a path on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostVolume>,
    /// A Docker named volume. With neither `host` nor this, the volume is
    /// scratch space that lives as long as the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_volume_configuration: Option<DockerVolumeConfiguration>,
}

/// A path on the node, bind-mounted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostVolume {
    /// Absolute path on the node.
    #[schemars(pattern(r"^/"), example = &"/etc/myapp")]
    pub source_path: String,
}

/// Lifetime of a Docker volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VolumeScope {
    /// Created with the task and removed when it stops.
    #[default]
    Task,
    /// Outlives the task; shared by every task on the node using the name.
    Shared,
}

/// A Docker named volume (ECS `DockerVolumeConfiguration`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DockerVolumeConfiguration {
    /// `task` volumes live and die with the task; `shared` ones persist.
    #[serde(default)]
    pub scope: VolumeScope,
    /// Create a missing `shared` volume (otherwise it must exist).
    #[serde(default)]
    pub autoprovision: bool,
    /// Volume driver.
    #[serde(default = "default_volume_driver")]
    pub driver: String,
    /// Driver options.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    /// Labels set on the volume.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn default_volume_driver() -> String {
    "local".to_string()
}
