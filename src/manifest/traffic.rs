//! How clients reach a service: listeners balancing over its healthy tasks
//! (ECS `loadBalancers` with an ELB target group's health check and
//! attributes) and DNS names of its tasks (ECS `serviceRegistries`, Cloud
//! Map). Each task is a target: registered once it passes the health check,
//! drained before it stops.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A listener served on every node of the cluster (and on the host in
/// standalone mode), balancing over the service's healthy targets on all
/// nodes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancer {
    /// The container of the task definition that receives the traffic.
    #[schemars(length(min = 1, max = 255), example = &"web")]
    pub container_name: String,
    /// The port of that container that receives the traffic: the
    /// containerPort of one of its TCP portMappings.
    #[schemars(range(min = 1, max = 65535), example = 8080)]
    pub container_port: u16,
    /// The port clients use on any node of the cluster. Unique in the
    /// cluster; tasks never get it as a host port.
    #[schemars(range(min = 1, max = 65535), example = 80)]
    pub listener_port: u16,
    /// HTTP balances requests (keep-alive to targets, a retry on another
    /// target when a connection fails before any byte was sent,
    /// X-Forwarded-For); TCP balances connections.
    #[serde(default)]
    pub protocol: ListenerProtocol,
    /// ROUND_ROBIN takes targets in turn; LEAST_OUTSTANDING_REQUESTS the
    /// one with the fewest requests in flight (ELB's
    /// `load_balancing.algorithm.type`).
    #[serde(default)]
    pub algorithm: BalancingAlgorithm,
    /// The target group's health check: a target gets traffic, and its task
    /// counts as healthy for a deployment, only once it passes.
    #[serde(default)]
    pub health_check: TargetHealthCheck,
    /// Seconds a draining target keeps serving the requests it has in
    /// flight before its task is stopped. Default 30 (ELB's is 300, made
    /// for long-lived connections; most HTTP requests finish in far less).
    #[serde(default = "default_deregistration_delay")]
    #[schemars(range(min = 0, max = 3600), example = 30)]
    pub deregistration_delay: u32,
}

/// ELB's is 300 s, made for long-lived connections; most HTTP requests
/// finish in far less, and a rollout waits this long per stopped task.
pub const DEFAULT_DEREGISTRATION_DELAY: u32 = 30;

fn default_deregistration_delay() -> u32 {
    DEFAULT_DEREGISTRATION_DELAY
}

/// Protocol of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ListenerProtocol {
    /// HTTP/1.1 requests, balanced one by one.
    #[default]
    Http,
    /// TCP connections, balanced one by one.
    Tcp,
}

/// How a listener picks a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BalancingAlgorithm {
    /// Targets in turn.
    #[default]
    RoundRobin,
    /// The target with the fewest requests (or connections) in flight from
    /// this node.
    LeastOutstandingRequests,
}

/// A target group's health check (ELB names). For TCP listeners a check is
/// a connection; `path` and `matcher` are HTTP only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetHealthCheck {
    /// Path requested with GET (HTTP listeners only).
    #[serde(default = "default_path")]
    #[schemars(pattern(r"^/[\x21-\x7e]{0,1023}$"), example = &"/health")]
    pub path: String,
    /// Seconds between checks of a target.
    #[serde(default = "default_interval")]
    #[schemars(range(min = 1, max = 300))]
    pub interval: u32,
    /// Seconds without an answer after which a check fails. Less than
    /// `interval`.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 120))]
    pub timeout: u32,
    /// Consecutive passes that make a target healthy.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 2, max = 10))]
    pub healthy_threshold_count: u32,
    /// Consecutive failures that make a target unhealthy.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 2, max = 10))]
    pub unhealthy_threshold_count: u32,
    /// HTTP status codes that pass: `200`, `200,204`, `200-399` (HTTP
    /// listeners only).
    #[serde(default = "default_matcher")]
    #[schemars(
        pattern(r"^[1-5][0-9]{2}(-[1-5][0-9]{2})?(,[1-5][0-9]{2}(-[1-5][0-9]{2})?)*$"),
        example = &"200-399"
    )]
    pub matcher: String,
}

fn default_path() -> String {
    "/".to_string()
}
fn default_interval() -> u32 {
    5
}
fn default_timeout() -> u32 {
    2
}
fn default_threshold() -> u32 {
    2
}
fn default_matcher() -> String {
    "200-399".to_string()
}

impl Default for TargetHealthCheck {
    fn default() -> Self {
        TargetHealthCheck {
            path: default_path(),
            interval: default_interval(),
            timeout: default_timeout(),
            healthy_threshold_count: default_threshold(),
            unhealthy_threshold_count: default_threshold(),
            matcher: default_matcher(),
        }
    }
}

/// A DNS name for the service's tasks: `NAME.CLUSTER.<domain>` answered by
/// every node of the cluster, A records of the healthy tasks' node
/// addresses and SRV records with their ports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceRegistry {
    /// The first label of the DNS name, unique in the cluster. Default: the
    /// service's name lowercased (which must then be a DNS label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"), example = &"web")]
    pub name: Option<String>,
    /// The container whose port the SRV records give.
    #[schemars(length(min = 1, max = 255), example = &"web")]
    pub container_name: String,
    /// That container's port: the containerPort of one of its TCP
    /// portMappings.
    #[schemars(range(min = 1, max = 65535), example = 8080)]
    pub container_port: u16,
}

impl ServiceRegistry {
    /// The first label of the DNS name: `name`, or the service's name
    /// lowercased. One place for the default, so validation, planning and
    /// the DNS server agree on it.
    pub fn effective_name(&self, service: &str) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| service.to_ascii_lowercase())
    }
}
