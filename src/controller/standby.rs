//! The API of a controller sharing an etcd store: while it stands by, every
//! request is answered `503` naming the leader (`Reconcile-Leader` header
//! and the error message), so agents and the CLI move to it; once elected,
//! the same listener serves the full API.

use std::sync::{Arc, OnceLock};

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceExt;

use super::leader::Election;

/// The header naming the leader's URL in a follower's replies.
pub const LEADER_HEADER: &str = "reconcile-leader";

/// A router that stands by until `api` is set, then serves it. Until
/// etcd answers there is no `election` to ask who leads.
pub fn router(api: Arc<OnceLock<Router>>, election: Arc<OnceLock<Arc<Election>>>) -> Router {
    Router::new().fallback(move |req: Request| {
        let api = api.clone();
        let election = election.clone();
        async move {
            let holds = election.get().is_none_or(|e| e.holds());
            if let (Some(r), true) = (api.get(), holds) {
                return match r.clone().oneshot(req).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                };
            }
            let leader = match election.get() {
                Some(e) => e.leader().await,
                None => None,
            };
            standing_by(leader)
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
