//! The controller's HTTP API (JSON over HTTP/1.1, axum).
//!
//! | method and path | who | what |
//! |---|---|---|
//! | `POST /v1/join` | join token | a node's credential, bound to its name and cluster |
//! | `POST /v1/nodes/{name}/heartbeat` | node `name` (its credential) | register or refresh the node; returns its assignments |
//! | `GET /v1/nodes/{name}/changes?after=G&timeoutMillis=T` | node `name` | long poll: returns once the assignment generation differs from `G`, with the node's assignments (at most `T` ms, capped at 30 s) |
//! | `POST /v1/nodes/{name}/logs/{session}` | node `name` | upload of a log session the node was told of: a streaming body of JSON lines |
//! | `GET /v1/logs?service=S\|task=T&follow&since&tail&timestamps&container` | reader | task logs as a stream of JSON lines, relayed from the nodes with secrets masked |
//! | `GET /v1/nodes` | reader | nodes, status, load |
//! | `POST /v1/nodes/{name}/drain` | operator | stop placing on a node and move its tasks |
//! | `POST /v1/nodes/{name}/activate` | operator | undo a drain |
//! | `DELETE /v1/nodes/{name}` | operator | revoke a node's credential, forget it, move its tasks |
//! | `GET /v1/status` | reader | nodes, services, tasks, events |
//! | `GET /v1/plan` | reader | the plan the next reconcile would apply (JSON plan document) |
//! | `GET /v1/services/{cluster}/{name}/history` | reader | a service's deployments and events |
//! | `POST /v1/services/{cluster}/{name}/abort` | operator | roll back the service's rollout now |
//! | `POST /v1/services/{cluster}/{name}/rollback` | operator | deploy an earlier revision (body: `{"to": N}`, optional) |
//! | `POST /v1/sync[?allowMassDelete=true]` | operator | reconcile now (fetching a git source first); with the flag, approve once a plan deleting most services |
//! | `POST /v1/webhook` | git host (`X-Hub-Signature-256` with the webhook secret) or operator | same as sync; rate-limited per address (429), a delivery repeated within 10 min refused (409) |
//! | `POST /v1/suspend`, `POST /v1/resume` | operator | stop and restart applying (resume also ends a teardown) |
//! | `POST /v1/destroy` | operator | tear down everything the source applied and apply nothing of it until resume |
//! | `GET /v1/tokens`, `POST /v1/tokens`, `DELETE /v1/tokens/{name}` | operator | named API tokens |
//! | `GET /v1/secrets`, `PUT /v1/secrets/{name}`, `DELETE /v1/secrets/{name}` | operator | the controller's secrets: names and times out, values in only |
//! | `POST /v1/tasks` | operator | run-task: start a task definition's tasks outside any service (body: a run request); returns the tasks started and the placement failures |
//! | `GET /v1/tasks?cluster&family&startedBy&status`, `GET /v1/tasks/{id}` | reader | tasks started outside services, running and stopped in the last hour, with exit codes |
//! | `POST /v1/tasks/{id}/stop` | operator | stop such a task (body: `{"reason": TEXT}`, optional) |
//! | `GET /v1/scheduled-tasks/{name}` | reader | a scheduled task: its next run and its runs with their tasks' exit codes |
//! | `GET /v1/openapi.json` | anyone | this API, described |
//! | `GET /healthz` | anyone | liveness |
//!
//! Who may call what is decided before any handler runs, in
//! [`super::auth`]: a missing or wrong token is refused with 401, a token
//! of a role that may not make the request with 403, both logged (without
//! the token), and every change is written to the audit log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Extension;
use axum::{Json, Router};

use super::auth::{gate, Access, Caller};
use super::limits::{Limiter, LogGate, Rate, Replays};
use super::Controller;
use crate::wire::{
    token_matches, Accepted, ApiError, Heartbeat, JoinRequest, NodeStatus, RollbackRequest,
    SyncReply, TokenRequest,
};

#[path = "http_runs.rs"]
mod http_runs;
#[path = "http_secrets.rs"]
mod http_secrets;

pub(super) type Shared = State<Arc<Controller>>;

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            error: message.into(),
        }),
    )
        .into_response()
}

/// Longest plain-text error body kept when it is made JSON.
const REJECTION_MAX: usize = 64 << 10;

/// Every error the API answers is an `ApiError`, as the OpenAPI document
/// says. axum answers a request its extractors refuse (a body that is not
/// JSON or not of the schema, a bad query, no such route or method) in
/// plain text before any handler runs; that answer is rewritten here,
/// keeping its status and message.
async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let reply = next.run(req).await;
    let status = reply.status();
    let json = reply
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return reply;
    }
    let (mut parts, body) = reply.into_parts();
    let text = axum::body::to_bytes(body, REJECTION_MAX)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    // Headers such as `Allow` stay; the body's own do not.
    parts.headers.remove(axum::http::header::CONTENT_TYPE);
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let mut reply = error(status, message);
    for (k, v) in parts.headers.iter() {
        reply.headers_mut().insert(k.clone(), v.clone());
    }
    reply
}

async fn heartbeat(
    State(c): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    Json(hb): Json<Heartbeat>,
) -> Response {
    match c.heartbeat(&name, hb) {
        Ok(reply) => Json(reply).into_response(),
        Err((code, message)) => {
            tracing::warn!(node = %name, %peer, "refused heartbeat of node {name} from {peer}: {message}");
            error(
                StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
                message,
            )
        }
    }
}

/// Joins allowed per peer address (a host of many agents, or a NAT), and
/// from all peers together: a fleet started at once joins within seconds,
/// and a holder of a join token cannot flood the registry.
pub const JOIN_RATE: Rate = Rate::new(10.0, 50.0);
pub const JOIN_GLOBAL_RATE: Rate = Rate::new(50.0, 500.0);

/// The bound on `POST /v1/join`.
pub struct Joins {
    limiter: Limiter,
    limited: LogGate,
}

impl Joins {
    pub fn new(now: Instant) -> Joins {
        Joins {
            limiter: Limiter::new(JOIN_RATE, JOIN_GLOBAL_RATE, 4096, now),
            limited: LogGate::default(),
        }
    }
}

/// A node asks for its credential, with a join token.
async fn join(
    State(c): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(joins): Extension<Arc<Joins>>,
    Json(req): Json<JoinRequest>,
) -> Response {
    let now = Instant::now();
    if let Err(wait) = joins.limiter.check(peer.ip(), now) {
        if let Some(n) = joins.limited.hit(now) {
            tracing::warn!(%peer, "refused {n} join(s) over the rate limit (the last from {peer})");
        }
        return too_many_requests(wait);
    }
    match c.join(&req.name, &req.cluster) {
        Ok(reply) => Json(reply).into_response(),
        Err((code, message)) => {
            // The name is the caller's: quoted and escaped, so it cannot
            // forge a log line.
            tracing::warn!(node = ?req.name, %peer, "refused the join of node {:?} from {peer}: {message}", req.name);
            error(
                StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
                message,
            )
        }
    }
}

async fn remove_node(State(c): Shared, Path(name): Path<String>) -> Response {
    match c.remove_node(&name) {
        Ok(message) => Json(Accepted { message }).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e),
    }
}

async fn tokens(State(c): Shared) -> Response {
    Json(c.tokens()).into_response()
}

async fn create_token(
    State(c): Shared,
    Extension(caller): Extension<Caller>,
    Json(req): Json<TokenRequest>,
) -> Response {
    match c.create_token(&req) {
        Ok(t) => {
            tracing::info!(
                "token `{}` ({}) created by `{}`",
                t.view.name,
                t.view.role,
                caller.name
            );
            (StatusCode::CREATED, Json(t)).into_response()
        }
        Err((code, e)) => error(code, e),
    }
}

async fn remove_token(
    State(c): Shared,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Response {
    match c.remove_token(&name) {
        Ok(()) => {
            tracing::info!("token `{name}` revoked by `{}`", caller.name);
            Json(Accepted {
                message: format!("token `{name}` revoked"),
            })
            .into_response()
        }
        Err((code, e)) => error(code, e),
    }
}

async fn nodes(State(c): Shared) -> Response {
    Json(c.nodes()).into_response()
}

async fn controllers(State(c): Shared) -> Response {
    match c.control_plane().await {
        Ok(p) => Json(p).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn set_status(c: Arc<Controller>, name: String, status: NodeStatus) -> Response {
    match c.set_node_status(&name, status) {
        Ok(()) => Json(serde_json::json!({"node": name, "status": status})).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e),
    }
}

async fn drain(State(c): Shared, Path(name): Path<String>) -> Response {
    set_status(c, name, NodeStatus::Draining).await
}

async fn activate(State(c): Shared, Path(name): Path<String>) -> Response {
    set_status(c, name, NodeStatus::Active).await
}

async fn status(State(c): Shared) -> Response {
    Json(c.status()).into_response()
}

async fn metrics(State(c): Shared) -> Response {
    // Gauges are computed from the held state: cheap, but not for an async
    // worker to block on with a large fleet.
    match tokio::task::spawn_blocking(move || c.metrics_text()).await {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                crate::metrics::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn history(State(c): Shared, Path((cluster, name)): Path<(String, String)>) -> Response {
    match c.history(&format!("{cluster}/{name}")) {
        Ok(h) => Json(h).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e),
    }
}

async fn abort(State(c): Shared, Path((cluster, name)): Path<(String, String)>) -> Response {
    let key = format!("{cluster}/{name}");
    match c.abort(&key) {
        Ok(message) => {
            tracing::info!(service = %key, "{key}: {message}");
            Json(Accepted { message }).into_response()
        }
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

async fn rollback(
    State(c): Shared,
    Path((cluster, name)): Path<(String, String)>,
    body: Option<Json<RollbackRequest>>,
) -> Response {
    let key = format!("{cluster}/{name}");
    let to = body.and_then(|Json(b)| b.to);
    match c.rollback(&key, to) {
        Ok(message) => {
            tracing::info!(service = %key, "{key}: {message}");
            Json(Accepted { message }).into_response()
        }
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

async fn plan(State(c): Shared) -> Response {
    match c.plan().await {
        Ok(p) => Json(p).into_response(),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SyncQuery {
    #[serde(default)]
    allow_mass_delete: bool,
}

async fn sync(State(c): Shared, Query(q): Query<SyncQuery>) -> Response {
    let until_pass = if q.allow_mass_delete {
        c.approve_mass_delete()
    } else {
        c.sync()
    };
    (
        StatusCode::ACCEPTED,
        Json(SyncReply {
            sync: "requested".into(),
            until_pass,
        }),
    )
        .into_response()
}

async fn destroy(State(c): Shared) -> Response {
    match c.tear_down() {
        Ok(until_pass) => (
            StatusCode::ACCEPTED,
            Json(SyncReply {
                sync: "requested".into(),
                until_pass,
            }),
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn suspend(State(c): Shared) -> Response {
    set_suspended(c, true)
}

async fn resume(State(c): Shared) -> Response {
    set_suspended(c, false)
}

fn set_suspended(c: Arc<Controller>, on: bool) -> Response {
    match c.set_suspended(on) {
        Ok(()) => Json(serde_json::json!({"suspended": on})).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// HMAC-SHA256 (RFC 2104), for webhook signatures.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Bounds on `POST /v1/webhook`, which anyone can reach: a rate per peer
/// address and overall, and the deliveries already seen.
pub struct Webhooks {
    limiter: Limiter,
    replays: Replays,
    limited: LogGate,
    replayed: LogGate,
    bad_signature: LogGate,
}

/// Webhooks allowed per peer address: 10 a second, bursts of 20.
pub const WEBHOOK_RATE: Rate = Rate::new(10.0, 20.0);
/// Webhooks allowed from all peers together.
pub const WEBHOOK_GLOBAL_RATE: Rate = Rate::new(100.0, 200.0);
/// How long a delivery is remembered: a repeat within it is refused.
pub const WEBHOOK_REPLAY_WINDOW: Duration = Duration::from_secs(600);
/// Deliveries remembered at most: above what the global rate lets in
/// within the window (two keys each), so none is forgotten early.
const WEBHOOK_REPLAYS_KEPT: usize = 150_000;

/// Headers in which git hosts name a delivery (GitHub, Gitea, Gogs).
const DELIVERY_HEADERS: [&str; 3] = ["x-github-delivery", "x-gitea-delivery", "x-gogs-delivery"];

impl Webhooks {
    pub fn new(now: Instant) -> Webhooks {
        Webhooks {
            limiter: Limiter::new(WEBHOOK_RATE, WEBHOOK_GLOBAL_RATE, 4096, now),
            replays: Replays::new(WEBHOOK_REPLAY_WINDOW, WEBHOOK_REPLAYS_KEPT),
            limited: LogGate::default(),
            replayed: LogGate::default(),
            bad_signature: LogGate::default(),
        }
    }
}

/// 429 with the seconds to wait in `Retry-After`.
pub fn too_many_requests(wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().clamp(1.0, 3600.0) as u64;
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(axum::http::header::RETRY_AFTER, secs.to_string())],
        Json(ApiError {
            error: format!("too many requests; retry in {secs} s"),
        }),
    )
        .into_response()
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// A push notification from a git host: signed with the webhook secret
/// (`X-Hub-Signature-256: sha256=HEX`, as GitHub and Gitea send it) or
/// carrying an operator token (checked before this runs). The body is not
/// trusted for anything else: the controller fetches the branch itself.
///
/// A delivery is accepted once: its delivery id, and the body of a signed
/// one, are remembered for [`WEBHOOK_REPLAY_WINDOW`], so a captured request
/// sent again (even with another delivery id) is refused with 409. A
/// redelivery from the git host's page re-sends the same id and is refused
/// too within the window; that loses nothing, since a sync fetches the
/// branch as it is now (`reconcile sync` asks for one).
async fn webhook(
    State(c): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(hooks): Extension<Arc<Webhooks>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let now = Instant::now();
    if let Err(wait) = hooks.limiter.check(peer.ip(), now) {
        if let Some(n) = hooks.limited.hit(now) {
            tracing::warn!(%peer, "refused {n} webhook(s) over the rate limit (the last from {peer})");
        }
        return too_many_requests(wait);
    }
    // A request with a signature came past the gate on it alone.
    let signed = caller.access == Access::Webhook;
    if signed {
        let good = match (
            headers.get("x-hub-signature-256"),
            &c.config().webhook_secret,
        ) {
            (Some(sig), Some(secret)) => {
                let mac = hmac_sha256(secret.as_bytes(), &body);
                let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
                sig.to_str()
                    .ok()
                    .and_then(|v| v.strip_prefix("sha256="))
                    .is_some_and(|sig| token_matches(&sig.to_ascii_lowercase(), &hex))
            }
            _ => false,
        };
        if !good {
            if let Some(n) = hooks.bad_signature.hit(now) {
                tracing::warn!(%peer, "refused POST /v1/webhook from {peer}: bad webhook signature ({n} since the last report)");
            }
            return error(StatusCode::UNAUTHORIZED, "bad webhook signature");
        }
    }
    // Only an authenticated request is remembered: others must not be
    // able to spend a delivery id before the git host sends it.
    let mut keys: Vec<[u8; 32]> = DELIVERY_HEADERS
        .iter()
        .filter_map(|h| headers.get(*h))
        .filter(|v| !v.is_empty())
        .map(|v| sha256(&[b"delivery\0", v.as_bytes()]))
        .collect();
    if signed {
        keys.push(sha256(&[b"body\0", &body]));
    }
    if !keys.is_empty() && hooks.replays.check_and_record(&keys, now) {
        if let Some(n) = hooks.replayed.hit(now) {
            tracing::warn!(%peer, "refused POST /v1/webhook from {peer}: replayed webhook delivery ({n} since the last report)");
        }
        return error(StatusCode::CONFLICT, "replayed webhook delivery");
    }
    c.sync();
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"sync": "requested"})),
    )
        .into_response()
}

async fn openapi() -> Response {
    Json(super::openapi::document()).into_response()
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangesQuery {
    after: u64,
    timeout_millis: Option<u64>,
}

/// The longest an agent's long poll is held open.
const CHANGES_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(30);

async fn changes(
    State(c): Shared,
    Path(name): Path<String>,
    Query(q): Query<ChangesQuery>,
) -> Response {
    let timeout = std::time::Duration::from_millis(q.timeout_millis.unwrap_or(u64::MAX))
        .min(CHANGES_WAIT_MAX);
    Json(c.assignment_changes(&name, q.after, timeout).await).into_response()
}

pub fn router(c: Arc<Controller>) -> Router {
    Router::new()
        .route("/v1/join", post(join))
        .route("/v1/nodes/{name}/heartbeat", post(heartbeat))
        .route("/v1/nodes/{name}/changes", get(changes))
        .route("/v1/nodes/{name}/logs/{session}", post(super::logs::upload))
        .route("/v1/logs", get(super::logs::client))
        .route("/v1/nodes", get(nodes))
        .route("/v1/controllers", get(controllers))
        .route("/v1/nodes/{name}/drain", post(drain))
        .route("/v1/nodes/{name}/activate", post(activate))
        .route("/v1/nodes/{name}", delete(remove_node))
        .route("/v1/tokens", get(tokens).post(create_token))
        .route("/v1/tokens/{name}", delete(remove_token))
        .route("/v1/status", get(status))
        .route("/v1/events", get(super::events::stream))
        .route("/metrics", get(metrics))
        .route("/v1/plan", get(plan))
        .route("/v1/services/{cluster}/{name}/history", get(history))
        .route("/v1/services/{cluster}/{name}/abort", post(abort))
        .route("/v1/services/{cluster}/{name}/rollback", post(rollback))
        .route("/v1/sync", post(sync))
        .route("/v1/webhook", post(webhook))
        .route("/v1/suspend", post(suspend))
        .route("/v1/destroy", post(destroy))
        .route("/v1/resume", post(resume))
        .route("/v1/openapi.json", get(openapi))
        .route("/healthz", get(|| async { "ok" }))
        .merge(http_secrets::routes())
        .merge(http_runs::routes())
        // After routing, before any handler reads a body.
        .route_layer(axum::middleware::from_fn_with_state(c.clone(), gate))
        // Heartbeats carry every task of a node; 16 MiB bounds a request.
        .layer(axum::extract::DefaultBodyLimit::max(16 << 20))
        .layer(Extension(Arc::new(Webhooks::new(Instant::now()))))
        .layer(Extension(Arc::new(Joins::new(Instant::now()))))
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(c)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::post;
    use tower::ServiceExt;

    /// Status, `Allow` and body of `req` to a route taking a JSON body.
    async fn answer(req: Request<Body>) -> (StatusCode, Option<String>, serde_json::Value) {
        let app = axum::Router::new()
            .route(
                "/v1/thing",
                post(|axum::Json(_): axum::Json<crate::wire::JoinRequest>| async { "ok" }),
            )
            .layer(axum::middleware::from_fn(super::json_errors));
        let reply = app.oneshot(req).await.unwrap();
        let status = reply.status();
        let allow = reply
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(reply.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {bytes:?}"));
        (status, allow, body)
    }

    #[tokio::test]
    async fn rejections_are_json_api_errors() {
        let post = |ct: Option<&str>, body: &'static str| {
            let mut r = Request::post("/v1/thing");
            if let Some(ct) = ct {
                r = r.header("content-type", ct);
            }
            r.body(Body::from(body)).unwrap()
        };
        let json = Some("application/json");
        for (req, want, says) in [
            (
                post(None, "{}"),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type",
            ),
            (post(json, "{"), StatusCode::BAD_REQUEST, "JSON"),
            (
                post(json, r#"{"name": 1}"#),
                StatusCode::UNPROCESSABLE_ENTITY,
                "name",
            ),
            (
                Request::get("/v1/nothing").body(Body::empty()).unwrap(),
                StatusCode::NOT_FOUND,
                "Not Found",
            ),
        ] {
            let (status, _, body) = answer(req).await;
            assert_eq!(status, want, "{body}");
            let error = body["error"].as_str().unwrap_or_default();
            assert!(error.contains(says), "{status}: {body}");
        }
        // A refused method keeps its `Allow` header.
        let req = Request::get("/v1/thing").body(Body::empty()).unwrap();
        let (status, allow, body) = answer(req).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
        assert_eq!(allow.as_deref(), Some("POST"), "{body}");
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = super::hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
