//! The controller's HTTP API (JSON over HTTP/1.1, axum).
//!
//! | method and path | who | what |
//! |---|---|---|
//! | `POST /v1/nodes/{name}/heartbeat` | agent (join token) | register or refresh a node; returns its assignments |
//! | `GET /v1/nodes/{name}/changes?after=G&timeoutMillis=T` | agent | long poll: returns once the assignment generation differs from `G`, with the node's assignments (at most `T` ms, capped at 30 s) |
//! | `GET /v1/nodes` | CLI (API token) | nodes, status, load |
//! | `POST /v1/nodes/{name}/drain` | CLI | stop placing on a node and move its tasks |
//! | `POST /v1/nodes/{name}/activate` | CLI | undo a drain |
//! | `GET /v1/status` | CLI | nodes, services, tasks, events |
//! | `GET /v1/plan` | CLI | the plan the next reconcile would apply (JSON plan document) |
//! | `GET /v1/services/{cluster}/{name}/history` | CLI | a service's deployments and events |
//! | `POST /v1/services/{cluster}/{name}/abort` | CLI | roll back the service's rollout now |
//! | `POST /v1/services/{cluster}/{name}/rollback` | CLI | deploy an earlier revision (body: `{"to": N}`, optional) |
//! | `POST /v1/sync[?allowMassDelete=true]` | CLI | reconcile now (fetching a git source first); with the flag, approve once a plan deleting most services |
//! | `POST /v1/webhook` | git host (`X-Hub-Signature-256` with the webhook secret) or CLI | same as sync |
//! | `POST /v1/suspend`, `POST /v1/resume` | CLI | stop and restart applying |
//! | `GET /v1/openapi.json` | anyone | this API, described |
//! | `GET /healthz` | anyone | liveness |
//!
//! Every other request needs `Authorization: Bearer TOKEN`; a missing or
//! wrong token is refused with 401 and logged (without the token).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::Controller;
use crate::wire::{
    token_matches, Accepted, ApiError, Heartbeat, NodeStatus, RollbackRequest, SyncReply,
};

#[path = "http_secrets.rs"]
mod http_secrets;

type Shared = State<Arc<Controller>>;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            error: message.into(),
        }),
    )
        .into_response()
}

#[derive(Clone, Copy)]
enum Role {
    Agent,
    Cli,
}

/// Check the bearer token of a request for `role`.
fn authorize(
    c: &Controller,
    headers: &HeaderMap,
    role: Role,
    peer: SocketAddr,
    what: &str,
) -> Result<(), Box<Response>> {
    let expected = match role {
        Role::Agent => &c.config().join_token,
        Role::Cli => &c.config().api_token,
    };
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if token_matches(t, expected) => Ok(()),
        Some(_) => {
            tracing::warn!(%peer, "refused {what} from {peer}: wrong token");
            Err(Box::new(error(StatusCode::UNAUTHORIZED, "wrong token")))
        }
        None => {
            tracing::warn!(%peer, "refused {what} from {peer}: no token");
            Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "missing `Authorization: Bearer TOKEN`",
            )))
        }
    }
}

async fn heartbeat(
    State(c): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(hb): Json<Heartbeat>,
) -> Response {
    if let Err(r) = authorize(&c, &headers, Role::Agent, peer, "heartbeat") {
        return *r;
    }
    if name.is_empty()
        || name.len() > 255
        || !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("node name `{name}`: use letters, digits, `-`, `_` and `.`"),
        );
    }
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

async fn nodes(
    State(c): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&c, &headers, Role::Cli, peer, "GET /v1/nodes") {
        return *r;
    }
    Json(c.nodes()).into_response()
}

async fn set_status(
    c: Arc<Controller>,
    peer: SocketAddr,
    headers: HeaderMap,
    name: String,
    status: NodeStatus,
) -> Response {
    if let Err(r) = authorize(&c, &headers, Role::Cli, peer, "node status change") {
        return *r;
    }
    match c.set_node_status(&name, status) {
        Ok(()) => Json(serde_json::json!({"node": name, "status": status})).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e),
    }
}

async fn drain(
    State(c): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    set_status(c, peer, headers, name, NodeStatus::Draining).await
}

async fn activate(
    State(c): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    set_status(c, peer, headers, name, NodeStatus::Active).await
}

async fn status(
    State(c): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&c, &headers, Role::Cli, peer, "GET /v1/status") {
        return *r;
    }
    Json(c.status()).into_response()
}

async fn history(
    State(c): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((cluster, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&c, &headers, Role::Cli, peer, "GET /v1/services/history") {
        return *r;
    }
    match c.history(&format!("{cluster}/{name}")) {
        Ok(h) => Json(h).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e),
    }
}

async fn abort(
    State(c): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((cluster, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&c, &headers, Role::Cli, peer, "POST /v1/services/abort") {
        return *r;
    }
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
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((cluster, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Option<Json<RollbackRequest>>,
) -> Response {
    if let Err(r) = authorize(&c, &headers, Role::Cli, peer, "POST /v1/services/rollback") {
        return *r;
    }
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

async fn plan(
    State(c): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&c, &headers, Role::Cli, peer, "GET /v1/plan") {
        return *r;
    }
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

async fn sync(
    State(c): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<SyncQuery>,
) -> Response {
    if let Err(r) = authorize(&c, &headers, Role::Cli, peer, "POST /v1/sync") {
        return *r;
    }
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

async fn suspend(
    State(c): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    set_suspended(c, peer, headers, true)
}

async fn resume(
    State(c): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    set_suspended(c, peer, headers, false)
}

fn set_suspended(c: Arc<Controller>, peer: SocketAddr, headers: HeaderMap, on: bool) -> Response {
    if let Err(r) = authorize(&c, &headers, Role::Cli, peer, "suspend/resume") {
        return *r;
    }
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

/// A push notification from a git host: signed with the webhook secret
/// (`X-Hub-Signature-256: sha256=HEX`, as GitHub and Gitea send it) or
/// carrying the API token. The body is not trusted for anything else: the
/// controller fetches the branch itself.
async fn webhook(
    State(c): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="));
    let signed = match (signature, &c.config().webhook_secret) {
        (Some(sig), Some(secret)) => {
            let mac = hmac_sha256(secret.as_bytes(), &body);
            let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
            token_matches(&sig.to_ascii_lowercase(), &hex)
        }
        _ => false,
    };
    if !signed {
        if let Err(r) = authorize(&c, &headers, Role::Cli, peer, "POST /v1/webhook") {
            return *r;
        }
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
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(q): Query<ChangesQuery>,
) -> Response {
    if let Err(r) = authorize(&c, &headers, Role::Agent, peer, "changes") {
        return *r;
    }
    let timeout = std::time::Duration::from_millis(q.timeout_millis.unwrap_or(u64::MAX))
        .min(CHANGES_WAIT_MAX);
    Json(c.assignment_changes(&name, q.after, timeout).await).into_response()
}

pub fn router(c: Arc<Controller>) -> Router {
    Router::new()
        .route("/v1/nodes/{name}/heartbeat", post(heartbeat))
        .route("/v1/nodes/{name}/changes", get(changes))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/{name}/drain", post(drain))
        .route("/v1/nodes/{name}/activate", post(activate))
        .route("/v1/status", get(status))
        .route("/v1/plan", get(plan))
        .route("/v1/services/{cluster}/{name}/history", get(history))
        .route("/v1/services/{cluster}/{name}/abort", post(abort))
        .route("/v1/services/{cluster}/{name}/rollback", post(rollback))
        .route("/v1/sync", post(sync))
        .route("/v1/webhook", post(webhook))
        .route("/v1/suspend", post(suspend))
        .route("/v1/resume", post(resume))
        .route("/v1/openapi.json", get(openapi))
        .route("/healthz", get(|| async { "ok" }))
        .merge(http_secrets::routes())
        // Heartbeats carry every task of a node; 16 MiB bounds a request.
        .layer(axum::extract::DefaultBodyLimit::max(16 << 20))
        .with_state(c)
}

/// Serve the API on `listener` until the process ends.
pub async fn serve(c: Arc<Controller>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(c).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

/// Serve the API over TLS on `listener` until the process ends. Each
/// connection is handshaken on its own task, with a time limit, so a slow
/// or broken client holds up nobody else.
pub async fn serve_tls(
    c: Arc<Controller>,
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> std::io::Result<()> {
    use tower::ServiceExt;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let app = router(c);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, "TLS handshake with {peer} failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, "TLS handshake with {peer} timed out");
                    return;
                }
            };
            let svc = app.map_request(
                move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req
                },
            );
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(tls),
                        hyper_util::service::TowerToHyperService::new(svc),
                    )
                    .await;
        });
    }
}

#[cfg(test)]
mod tests {
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
