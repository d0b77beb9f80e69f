//! The API of a controller sharing an etcd store. While it stands by, it
//! answers the reads of what the store holds (nodes, events, history, tasks
//! outside services, scheduled runs, the control plane) from a read-only
//! view of the store that follows it through an etcd watch, marked
//! `Reconcile-Served-By: follower`; everything else (status and plans,
//! which need what agents report, every change, agents' routes, followed
//! event streams) is answered `503` naming the leader (`Reconcile-Leader`
//! header and the error message), so the CLI moves to it. Agents' routes
//! (join, heartbeat, long poll, log upload) are forwarded to the leader as
//! they come, streamed both ways, so an agent's heartbeat to any
//! controller counts. Once elected, the same listener serves the full API.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceExt;

use super::leader::Election;

/// The header naming the leader's URL in a follower's replies.
pub const LEADER_HEADER: &str = "reconcile-leader";
/// Marks a reply a follower made from its view of the store.
pub const SERVED_BY: &str = "reconcile-served-by";

/// Keep `reads` a view of the store as etcd has it: opened at once, and
/// again at most once a second after a change under the prefix (a watch,
/// not a poll). Runs until aborted (when this controller is elected).
pub async fn follow(
    backend: Arc<super::store::etcd::EtcdBackend>,
    config: super::Config,
    election: Arc<Election>,
    reads: Reads,
) {
    let mut client = backend.waiting_client();
    let prefix = backend.config().prefix.clone();
    loop {
        let watch = client
            .watch(
                prefix.clone(),
                Some(etcd_client::WatchOptions::new().with_prefix()),
            )
            .await;
        let mut stream = match watch {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("following the store: {e}; trying again");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        loop {
            let db = super::store::Db::over(Box::new(backend.clone()));
            match super::Controller::open_on(config.clone(), db) {
                Ok(c) => {
                    c.set_election(election.clone());
                    *reads.write().unwrap_or_else(|p| p.into_inner()) =
                        Some(super::http::router(c));
                }
                Err(e) => tracing::warn!("reading the store to answer reads: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            // The next change, and whatever else came meanwhile.
            match stream.message().await {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }
}

/// A follower's read-only view of the store, when it has one.
pub type Reads = Arc<RwLock<Option<Router>>>;

/// Whether a follower answers this request from its view of the store:
/// reads of what the store holds, never a followed stream.
fn stored_read(req: &Request) -> bool {
    if req.method() != axum::http::Method::GET {
        return false;
    }
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or_default();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["v1", "nodes"] | ["v1", "controllers"] | ["v1", "tasks"] => true,
        ["v1", "tasks", _] | ["v1", "scheduled-tasks", _] => true,
        ["v1", "services", _, _, "history"] => true,
        ["v1", "events"] => !query.split('&').any(|p| p == "follow=true"),
        _ => false,
    }
}

/// An agent's route, which a follower forwards to the leader.
fn agent_route(req: &Request) -> bool {
    let segments: Vec<&str> = req
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .collect();
    matches!(
        segments.as_slice(),
        ["v1", "join"]
            | ["v1", "nodes", _, "heartbeat"]
            | ["v1", "nodes", _, "changes"]
            | ["v1", "nodes", _, "logs", _]
    )
}

/// Headers passed on to the leader and back: what the routes read and
/// answer with, nothing about this hop.
const PASSED: [axum::http::HeaderName; 3] = [
    axum::http::header::AUTHORIZATION,
    axum::http::header::CONTENT_TYPE,
    axum::http::header::RETRY_AFTER,
];

/// Send `req` to the leader at `leader` and hand its answer back, both
/// bodies streamed (a log upload lasts as long as its reader).
async fn forward(client: &reqwest::Client, leader: &str, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let url = format!("{}{path}", leader.trim_end_matches('/'));
    let mut out = client
        .request(parts.method.clone(), &url)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()));
    for h in &PASSED {
        if let Some(v) = parts.headers.get(h) {
            out = out.header(h, v);
        }
    }
    match out.send().await {
        Ok(r) => {
            let mut resp = Response::builder().status(r.status().as_u16());
            for h in &PASSED {
                if let Some(v) = r.headers().get(h) {
                    resp = resp.header(h, v);
                }
            }
            resp.header(SERVED_BY, "follower, forwarded to the leader")
                .body(axum::body::Body::from_stream(r.bytes_stream()))
                .unwrap_or_else(|_| standing_by(Some(leader.to_string())))
        }
        Err(e) => {
            tracing::warn!(
                "forwarding {} to the leader {leader}: {e}",
                parts.uri.path()
            );
            standing_by(Some(leader.to_string()))
        }
    }
}

/// A router that stands by until `api` is set, then serves it. Until
/// etcd answers there is no `election` to ask who leads. `leader_client`
/// reaches the other controllers of the store (as nodes trust them).
pub fn router(
    api: Arc<OnceLock<Router>>,
    election: Arc<OnceLock<Arc<Election>>>,
    reads: Reads,
    leader_client: reqwest::Client,
    own_url: String,
) -> Router {
    Router::new().fallback(move |req: Request| {
        let api = api.clone();
        let election = election.clone();
        let reads = reads.clone();
        let leader_client = leader_client.clone();
        let own_url = own_url.clone();
        async move {
            let holds = election.get().is_none_or(|e| e.holds());
            if let (Some(r), true) = (api.get(), holds) {
                return match r.clone().oneshot(req).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                };
            }
            let view = reads.read().unwrap_or_else(|p| p.into_inner()).clone();
            if let (Some(view), true, None) = (view, stored_read(&req), api.get()) {
                let mut resp = match view.oneshot(req).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                };
                resp.headers_mut()
                    .insert(SERVED_BY, HeaderValue::from_static("follower"));
                return resp;
            }
            let leader = match election.get() {
                Some(e) => e.leader().await,
                None => None,
            };
            match leader {
                // Never to itself: a leader still opening its state.
                Some(l) if agent_route(&req) && l != own_url => {
                    forward(&leader_client, &l, req).await
                }
                other => standing_by(other),
            }
        }
    })
}

fn standing_by(leader: Option<String>) -> Response {
    let message = match &leader {
        Some(url) => format!("this controller stands by; the leader is {url}"),
        None => "this controller stands by; no controller leads right now (is etcd reachable?)"
            .to_string(),
    };
    let mut resp = super::http::error(StatusCode::SERVICE_UNAVAILABLE, message);
    if let Some(v) = leader.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(LEADER_HEADER, v);
    }
    resp.headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    resp.into_response()
}
