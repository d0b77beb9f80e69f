//! What the controller and its agents (and the CLI) say to each other over
//! HTTP: plain JSON documents, versioned by the path prefix `/v1`.
//!
//! Secret values travel only in [`Assignment::secrets`], from the controller
//! to the agent that starts the task (their Debug output is redacted), and
//! in the body of `PUT /v1/secrets/{name}`, from the operator to the
//! controller.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::manifest::TaskDefinitionSpec;
use crate::model::{NodeInfo, Task, TaskIdentity};

/// Path prefix of every endpoint.
pub const PREFIX: &str = "/v1";

/// An agent's periodic report; the first one registers the node.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub cluster: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// CPU units (cores x 1024) and MiB the node offers.
    pub cpu: u32,
    pub memory: u32,
    /// Host ports the node keeps for itself (tasks never get them): the
    /// agent's standard ones and any added with `--reserved-port`.
    #[serde(default)]
    pub reserved_ports: Vec<u16>,
    pub agent_version: String,
    /// Every task the agent's runtime owns, live or stopped.
    #[schemars(with = "Vec<serde_json::Value>")]
    pub tasks: Vec<Task>,
    /// The agent reads `kept` in the reply: assignments it has reported
    /// may come as ids only. A node of a thousand tasks then receives the
    /// specifications of the tasks it must start, not of all it runs.
    #[serde(default)]
    pub compact: bool,
    /// Where other nodes reach the host ports of this node's tasks: the
    /// address of its targets and DNS records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::IpAddr>,
    /// The traffic generation the node serves (listeners, checks, DNS).
    #[serde(default)]
    pub traffic_generation: u64,
    /// Requests (or connections) this node's listeners have in flight per
    /// target task; a task being drained stops once every node says 0.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inflight: BTreeMap<String, u64>,
    /// What its running tasks used when last sampled, by task id (absent
    /// from agents that do not sample).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub usage: BTreeMap<String, crate::utilization::TaskUsage>,
    /// Requests (or connections) this node's listeners have sent each
    /// target task since it appeared: the controller turns two reports into
    /// a rate (RequestCountPerTarget).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub served: BTreeMap<String, u64>,
}

/// A node's lifecycle, with ECS container-instance meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeStatus {
    /// Takes new tasks.
    Active,
    /// Takes no new tasks; its service tasks are replaced elsewhere.
    Draining,
    /// Missed its heartbeats; its tasks were rescheduled elsewhere.
    Lost,
}

/// The controller's answer to a heartbeat: the tasks the node must run.
/// Anything else the agent owns it stops.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatReply {
    pub status: NodeStatus,
    /// Assignments in full: all of them, or with `compact` those the node
    /// has not reported yet (the ones it may have to start).
    pub assignments: Vec<Assignment>,
    /// With `compact`: the ids of the other assignments, tasks the node
    /// has reported. It keeps them and never starts them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<String>,
    /// How long the agent should wait before its next heartbeat.
    pub heartbeat_millis: u64,
    /// The controller's assignment generation: it changes whenever any
    /// node's assignments change. The agent waits on
    /// `GET /v1/nodes/{name}/changes?after=GENERATION` to heartbeat as soon
    /// as it does, instead of at the next interval.
    #[serde(default)]
    pub generation: u64,
    /// The cluster's listeners, DNS records and this node's target checks,
    /// when they changed since the generation the node reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Traffic>,
    /// Log sessions the node is asked to open
    /// (`POST /v1/nodes/{name}/logs/{session}`). Agents that predate logs
    /// ignore it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogAsk>,
}

/// A log session a node is asked to upload: the lines of some of its
/// tasks' containers, as JSON lines ([`LogRecord`]) in the streaming body
/// of `POST /v1/nodes/{name}/logs/{session}`.
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogAsk {
    pub session: String,
    /// Task ids, all on this node.
    pub tasks: Vec<String>,
    /// Only this container of each task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default)]
    pub follow: bool,
    /// Unix seconds: only lines written since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Only the last N lines of each container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<usize>,
    #[serde(default)]
    pub timestamps: bool,
    /// Values replaced by `***` in every line before it leaves the node:
    /// the tasks' secrets. Never logged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mask: Vec<String>,
    /// `node:NAME` references of the tasks, whose values the agent reads
    /// itself and masks too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_secrets: Vec<String>,
}

impl fmt::Debug for LogAsk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogAsk")
            .field("session", &self.session)
            .field("tasks", &self.tasks)
            .field("container", &self.container)
            .field("follow", &self.follow)
            .field("mask", &format_args!("<{} redacted>", self.mask.len()))
            .finish_non_exhaustive()
    }
}

/// One JSON line of a log stream, from a node to the controller and from
/// the controller to `GET /v1/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum LogRecord {
    /// A line a container wrote (secrets masked, at most 16 KiB).
    Line {
        task: String,
        /// The task's service (none for a task run without one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<String>,
        container: String,
        /// `stdout` or `stderr`.
        stream: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp: Option<String>,
        line: String,
    },
    /// A task's stream ended (its container stopped, or the node's upload
    /// ended).
    End { task: String },
    /// A stream could not be read, or a node did not answer.
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<String>,
        message: String,
    },
}

/// What a node serves for its cluster's traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    pub generation: u64,
    /// DNS names end in `CLUSTER.<domain>`.
    pub domain: String,
    pub listeners: Vec<ListenerView>,
    /// Health checks of this node's own targets.
    pub checks: Vec<TargetCheck>,
    /// DNS name -> endpoints of its in-service tasks.
    pub dns: BTreeMap<String, Vec<DnsEndpoint>>,
}

/// A listener and the targets it may route new requests to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenerView {
    /// `cluster/service`.
    pub service: String,
    pub port: u16,
    pub protocol: crate::manifest::traffic::ListenerProtocol,
    pub algorithm: crate::manifest::traffic::BalancingAlgorithm,
    pub targets: Vec<TargetAddr>,
}

/// A task's endpoint behind a listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetAddr {
    pub task: String,
    pub addr: std::net::SocketAddr,
}

/// A target health check a node runs on one of its own tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetCheck {
    /// `task/listenerPort` (see `traffic::check_id`).
    pub id: String,
    pub addr: std::net::SocketAddr,
    pub protocol: crate::manifest::traffic::ListenerProtocol,
    pub health_check: crate::manifest::traffic::TargetHealthCheck,
}

/// One task in a DNS answer: A record `ip`, SRV port `port`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsEndpoint {
    pub ip: std::net::IpAddr,
    pub port: u16,
}

/// Answer to `GET /v1/nodes/{name}/changes`: the assignment generation,
/// returned once it differs from `after` or when the wait times out.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Changes {
    pub generation: u64,
    /// When the generation changed and the node is registered: its
    /// assignments, compact, as a heartbeat reply carries them. The agent
    /// acts on them at once instead of heartbeating first, which would
    /// cost a full observation of its engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignments: Option<HeartbeatReply>,
    /// Log sessions the node is asked to open now (the poll returns at
    /// once for them, the generation unchanged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogAsk>,
}

/// One task a node must run.
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    #[serde(flatten)]
    pub identity: TaskIdentity,
    #[schemars(with = "serde_json::Value")]
    pub spec: TaskDefinitionSpec,
    /// The node has reported the task: if its containers disappear the
    /// agent does not start it again; the controller decides (replace it,
    /// or with self-heal off only report it).
    #[serde(default)]
    pub reported: bool,
    /// Stopped by request (`stop-task`): the agent stops its containers
    /// and keeps them, for their exit codes and logs, until the task is
    /// unassigned; it never starts it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop: bool,
    /// Secret values by reference (`valueFrom`). Never stored by the
    /// controller, never logged.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// `node:NAME` references, which the agent reads from its own
    /// `--secrets-dir` before it starts the task: their values never
    /// reach the controller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_secrets: Vec<String>,
}

impl fmt::Debug for Assignment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Assignment")
            .field("id", &self.identity.id)
            .field("cluster", &self.identity.cluster)
            .field("service", &self.identity.service)
            .field("family", &self.identity.family)
            .field("revision", &self.identity.revision)
            .field("config_hash", &self.identity.config_hash)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("node_secrets", &self.node_secrets)
            .finish_non_exhaustive()
    }
}

/// A node as the controller sees it (`GET /v1/nodes`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    #[serde(flatten)]
    #[schemars(with = "serde_json::Value")]
    pub info: NodeInfo,
    pub status: NodeStatus,
    pub agent_version: String,
    /// Seconds since the last heartbeat (None: none since the controller
    /// started).
    pub last_heartbeat_secs: Option<u64>,
    /// Tasks assigned to the node.
    pub tasks: usize,
    /// CPU units and MiB reserved by those tasks.
    pub reserved_cpu: u32,
    pub reserved_memory: u32,
}

/// Something that happened, for `status` (ECS service events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    /// Unix seconds.
    pub at: i64,
    pub message: String,
    /// The service (`cluster/name`) the event is about, if it is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// One line of `GET /v1/events` (JSON lines): an event with its sequence
/// number, which a client passes back as `after` to resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventLine {
    pub seq: u64,
    #[serde(flatten)]
    pub event: EventRecord,
}

/// A secret of the controller's store as `GET /v1/secrets` lists it: its
/// name and times, never its value or a fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretInfo {
    pub name: String,
    /// Unix seconds.
    pub created: i64,
    pub updated: i64,
}

/// `POST /v1/sync`: the reconcile is done once `passes` (in the status)
/// reaches `until_pass`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncReply {
    pub sync: String,
    pub until_pass: u64,
}

/// `GET /v1/services/{cluster}/{name}/history`: the service's deployments,
/// newest first, and its events, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryReply {
    pub service: String,
    pub deployments: Vec<crate::deployment::DeploymentView>,
    pub events: Vec<crate::deployment::ServiceEvent>,
    /// A configuration rolled back and not deployed again.
    pub held: Option<crate::deployment::Held>,
    /// Auto scaling decisions, oldest first, with the metric values that
    /// drove them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scaling: Vec<crate::autoscaling::Activity>,
}

/// `POST /v1/services/{cluster}/{name}/rollback`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackRequest {
    /// Revision to return to; default: the newest COMPLETED deployment's
    /// before the running one.
    #[serde(default)]
    pub to: Option<u32>,
}

/// Reply of the abort and rollback requests.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Accepted {
    pub message: String,
}

/// `POST /v1/join`, with a join token: a node asks for its own
/// credential. The join token only bootstraps; every later request of the
/// node carries the credential, which is good for this name and cluster
/// alone.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    pub name: String,
    pub cluster: String,
}

/// The credential of a node that joined. Shown once: the controller keeps
/// only its hash.
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinReply {
    pub name: String,
    pub cluster: String,
    pub token: String,
}

impl fmt::Debug for JoinReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinReply")
            .field("name", &self.name)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// What an API token may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    /// Read: status, plan, history, nodes.
    Reader,
    /// Read and act: sync, suspend, resume, abort, rollback, drain,
    /// activate, remove nodes, manage tokens and secrets.
    Operator,
    /// Only join nodes (`POST /v1/join`).
    Join,
}

impl fmt::Display for TokenRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenRole::Reader => "reader",
            TokenRole::Operator => "operator",
            TokenRole::Join => "join",
        })
    }
}

/// `POST /v1/tokens`: make a named token.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    pub name: String,
    pub role: TokenRole,
    /// Seconds until it expires; none: it does not.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// The control plane as a controller sees it (`GET /v1/controllers`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlane {
    /// Where the state is kept: a redb file, or `etcd://...` and prefix.
    pub store: String,
    /// Every controller of the store: the leader first, then the others
    /// in the order they would take over.
    pub controllers: Vec<ControllerView>,
}

/// One controller of a control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControllerView {
    /// The URL it announced.
    pub url: String,
    pub leader: bool,
    /// The etcd revision its candidacy began at (0 with redb).
    pub since_revision: i64,
}

/// A named token as listed (`GET /v1/tokens`): never the token itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    pub name: String,
    pub role: TokenRole,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

/// The reply of `POST /v1/tokens`: the token, shown this once.
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedToken {
    #[serde(flatten)]
    pub view: TokenView,
    pub token: String,
}

impl fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedToken")
            .field("view", &self.view)
            .finish_non_exhaustive()
    }
}

/// Body of every error reply.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ApiError {
    pub error: String,
}

/// Compare a presented token with the expected one in time that does not
/// depend on where they differ: both are hashed first, so even their
/// lengths are not compared directly.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cret", "s3cre"));
        assert!(!token_matches("", "s3cret"));
        assert!(!token_matches("S3cret", "s3cret"));
    }

    #[test]
    fn assignment_debug_hides_secret_values() {
        let a = Assignment {
            identity: TaskIdentity {
                id: "t1".into(),
                cluster: "c".into(),
                service: None,
                family: "f".into(),
                revision: 1,
                config_hash: "h".into(),
                started_by: None,
            },
            spec: serde_json::from_value(serde_json::json!({
                "containerDefinitions": [{"name": "a", "image": "busybox:stable"}]
            }))
            .unwrap(),
            reported: false,
            stop: false,
            secrets: BTreeMap::from([("DB".to_string(), "hunter2".to_string())]),
            node_secrets: Vec::new(),
        };
        let shown = format!("{a:?}");
        assert!(shown.contains("DB"));
        assert!(!shown.contains("hunter2"));
        // The identity is inline in the JSON, as the API schema says.
        let json = serde_json::to_string(&a).unwrap();
        assert!(
            json.starts_with(
                r#"{"id":"t1","cluster":"c","service":null,"family":"f","revision":1,"configHash":"h","spec":"#
            ),
            "{json}"
        );
        let back: Assignment = serde_json::from_str(&json).unwrap();
        assert!(back == a);
    }
}
