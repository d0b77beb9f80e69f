//! The API of a controller sharing an etcd store. While it stands by, it
//! answers the reads of what the store holds (nodes, events, history, tasks
//! outside services, scheduled runs, the control plane) from a read-only
//! view of the store that follows it through an etcd watch, marked
//! `Reconcile-Served-By: follower`. Everything else (status and plans,
//! which need what agents report, every change, agents' routes, followed
//! streams) is forwarded to the leader as it came, both bodies streamed,
//! so an agent's heartbeat to any controller counts and a client needs
//! only one controller's URL. With no leader (or only itself, still
//! opening its state) it answers `503` naming the leader if one is known
//! (`Reconcile-Leader` header and the error message). Once elected, the
//! same listener serves the full API.

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

/// Headers of this hop, never passed on: the rest (the token, a
/// webhook's signature and delivery id, content types) go to the leader
/// and back as they came.
fn hop_by_hop(name: &axum::http::HeaderName) -> bool {
    use axum::http::header;
    [
        header::HOST,
        header::CONNECTION,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
}

/// Send `req` to the leader at `leader` and hand its answer back, both
/// bodies streamed (a log upload or a followed event stream lasts as long
/// as its reader). What the leader cannot be reached for is answered 503
/// naming it, so a client that has other URLs moves on.
async fn forward(
    client: &reqwest::Client,
    election: &Election,
    leader: &str,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let url = format!("{}{path}", leader.trim_end_matches('/'));
    let mut out = client
        .request(parts.method.clone(), &url)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()));
    for (name, value) in parts.headers.iter().filter(|(n, _)| !hop_by_hop(n)) {
        out = out.header(name, value);
    }
    // A log upload is answered when it ends; anything else answers (or
    // starts streaming) within a long poll's hold. A leader that does not
    // is paused or cut off: the client hears who leads now instead, in
    // time for its own deadline (an agent's is 10 s).
    let upload = parts.uri.path().contains("/logs/");
    let sent = if upload {
        Ok(out.send().await)
    } else {
        tokio::time::timeout(FORWARD_WAIT, out.send()).await
    };
    match sent {
        Ok(Ok(r)) => {
            let mut resp = Response::builder().status(r.status().as_u16());
            for (name, value) in r.headers().iter().filter(|(n, _)| !hop_by_hop(n)) {
                resp = resp.header(name, value);
            }
            resp.header(SERVED_BY, "follower, forwarded to the leader")
                .body(axum::body::Body::from_stream(r.bytes_stream()))
                .unwrap_or_else(|_| standing_by(Some(leader.to_string())))
        }
        failed => {
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {} s", FORWARD_WAIT.as_secs()),
            };
            tracing::warn!(
                "forwarding {} to the leader {leader}: {why}",
                parts.uri.path()
            );
            // Whoever leads now (another, once the lease has passed).
            standing_by(election.leader().await.or_else(|| Some(leader.to_string())))
        }
    }
}

/// How long a forwarded request may wait for the leader's answer to
/// begin: past an agent's long poll hold (5 s), within its deadline.
const FORWARD_WAIT: Duration = Duration::from_secs(7);

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
                Some(l) if l != own_url => match election.get() {
                    Some(e) => forward(&leader_client, e, &l, req).await,
                    None => standing_by(Some(l)),
                },
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
