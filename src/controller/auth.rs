//! Who may call the API, and as what.
//!
//! Every route but `/healthz` and `/v1/openapi.json` needs a bearer token.
//! [`gate`] checks it after routing and before the handler runs, so no
//! body is read for a caller who may not make the request. What each route
//! needs is one table, [`need`]:
//! - *reader*: reads (status, plan, history, nodes);
//! - *operator*: every change, and listing tokens and secrets;
//! - *join*: `POST /v1/join` only, where a node gets its own credential;
//! - *node*: a node's own heartbeat and long poll, with that credential:
//!   a node can neither read nor report for another.
//!
//! `--api-token` is an operator token named `api-token`, `--join-token` a
//! join token named `join-token`; named tokens (`reconcile token create`)
//! are kept as SHA-256 hashes, so the store never holds a usable token.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};

use super::store::TokenRecord;
use super::Controller;
use crate::wire::{token_matches, ApiError, CreatedToken, TokenRequest, TokenRole, TokenView};

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    Open,
    Read,
    Operate,
    Join,
    /// The credential of the node the path names.
    Node,
    /// A webhook signature (checked by the handler), else an operator token.
    Webhook,
}

/// What a route needs, by method and route pattern. Anything that is not
/// a read needs an operator: a route added without a line here is never
/// open by mistake.
pub(super) fn need(method: &Method, route: &str) -> Need {
    match (method.as_str(), route) {
        (_, "/healthz" | "/v1/openapi.json") => Need::Open,
        (_, "/v1/join") => Need::Join,
        (
            _,
            "/v1/nodes/{name}/heartbeat"
            | "/v1/nodes/{name}/changes"
            | "/v1/nodes/{name}/logs/{session}",
        ) => Need::Node,
        (_, "/v1/webhook") => Need::Webhook,
        // Names of credentials are for operators only.
        ("GET", "/v1/tokens" | "/v1/secrets") => Need::Operate,
        // Prometheus scrapes with a reader token.
        ("GET", "/metrics") => Need::Read,
        ("GET" | "HEAD", _) => Need::Read,
        _ => Need::Operate,
    }
}

/// Who made a request, as handlers see it (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name, or the node's.
    pub name: String,
    pub access: Access,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Token(TokenRole),
    Node,
    /// A request signed with the webhook secret.
    Webhook,
}

impl Caller {
    fn role(&self) -> String {
        match self.access {
            Access::Token(r) => r.to_string(),
            Access::Node => "node".into(),
            Access::Webhook => "webhook".into(),
        }
    }
}

/// Refusals are logged at most once a second per route: anyone can cause
/// them, and a flood on one route hides none on another. Routes are a
/// fixed set, so the map is bounded.
#[derive(Default)]
pub(super) struct Refusals(
    std::sync::Mutex<std::collections::HashMap<String, super::limits::LogGate>>,
);

impl Refusals {
    fn hit(&self, action: &str, now: std::time::Instant) -> Option<u64> {
        let mut m = super::guard(&self.0);
        if !m.contains_key(action) {
            m.insert(action.to_string(), super::limits::LogGate::default());
        }
        m[action].hit(now)
    }
}

/// A refused request: its status and a message that names no secret.
pub(super) struct Denied {
    status: StatusCode,
    message: String,
    /// The token's name, when the token was known.
    who: Option<String>,
}

impl Denied {
    fn unauthorized(message: impl Into<String>) -> Denied {
        Denied {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
            who: None,
        }
    }
}

/// The token of an `Authorization` header; the scheme is matched without
/// regard to case (RFC 9110 section 11.1).
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// SHA-256 of a token, hex: how tokens and credentials are stored.
pub(super) fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new random token: `prefix` and 256 bits, hex.
pub(super) fn new_token(prefix: &str) -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a token: {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{prefix}{hex}"))
}

/// Token names: what `reconcile token create` accepts.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Names of the tokens given on the command line.
const API_TOKEN: &str = "api-token";
const JOIN_TOKEN: &str = "join-token";

impl Controller {
    /// The caller a token stands for, for a route that needs `need`.
    pub(super) fn authenticate(
        &self,
        headers: &HeaderMap,
        need: Need,
        path: &str,
    ) -> Result<Caller, Denied> {
        let token = bearer(headers)
            .ok_or_else(|| Denied::unauthorized("missing `Authorization: Bearer TOKEN`"))?;
        if need == Need::Node {
            // `/v1/nodes/{name}/...`: the name is the fourth segment.
            let node = path.split('/').nth(3).unwrap_or_default();
            return self.node_caller(node, token);
        }
        let caller = self.token_caller(token)?;
        let allowed = match (need, caller.access) {
            (Need::Join, Access::Token(r)) => r == TokenRole::Join,
            (Need::Read, Access::Token(r)) => r != TokenRole::Join,
            (Need::Operate | Need::Webhook, Access::Token(r)) => r == TokenRole::Operator,
            _ => false,
        };
        if allowed {
            return Ok(caller);
        }
        let wanted = match need {
            Need::Join => "a join token",
            Need::Read => "a reader or operator token",
            _ => "an operator token",
        };
        Err(Denied {
            status: StatusCode::FORBIDDEN,
            message: format!(
                "token `{}` ({}) may not do this: it needs {wanted}",
                caller.name,
                caller.role()
            ),
            who: Some(caller.name),
        })
    }

    /// The token given on the command line or a named one.
    fn token_caller(&self, token: &str) -> Result<Caller, Denied> {
        let caller = |name: &str, role| Caller {
            name: name.to_string(),
            access: Access::Token(role),
        };
        if token_matches(token, &self.config.api_token) {
            return Ok(caller(API_TOKEN, TokenRole::Operator));
        }
        if token_matches(token, &self.config.join_token) {
            return Ok(caller(JOIN_TOKEN, TokenRole::Join));
        }
        let h = hash(token);
        let tokens = super::guard(&self.tokens);
        // Hashes of 256-bit random tokens: comparing them leaks nothing
        // useful, but the comparison is constant-time anyway.
        let found = tokens.values().find(|t| token_matches(&h, &t.hash));
        match found {
            Some(t) => match t.view.expires_at {
                Some(at) if at <= crate::clock::unix_now() => Err(Denied {
                    status: StatusCode::UNAUTHORIZED,
                    message: format!(
                        "token `{}` expired at {}",
                        t.view.name,
                        crate::clock::rfc3339(at)
                    ),
                    who: Some(t.view.name.clone()),
                }),
                _ => Ok(caller(&t.view.name, t.view.role)),
            },
            None => Err(Denied::unauthorized("unknown or revoked token")),
        }
    }

    /// Node `name`, if `token` is its credential.
    fn node_caller(&self, name: &str, token: &str) -> Result<Caller, Denied> {
        let s = self.members();
        match s.credentials.get(name) {
            Some(c) if token_matches(&hash(token), &c.hash) => Ok(Caller {
                name: name.to_string(),
                access: Access::Node,
            }),
            _ => {
                let joining = token_matches(token, &self.config.join_token)
                    || matches!(
                        self.token_caller(token),
                        Ok(Caller {
                            access: Access::Token(TokenRole::Join),
                            ..
                        })
                    );
                Err(Denied::unauthorized(if joining {
                    format!(
                        "node `{name}`: a join token only joins; the node's requests need \
                         the credential `POST /v1/join` gave it"
                    )
                } else {
                    format!("not the credential of node `{name}` (removed, or never joined)")
                }))
            }
        }
    }

    /// Make a named token; the reply holds it, shown this once.
    pub fn create_token(&self, req: &TokenRequest) -> Result<CreatedToken, (StatusCode, String)> {
        let bad = |m: String| (StatusCode::BAD_REQUEST, m);
        if !valid_name(&req.name) {
            return Err(bad(format!(
                "token name {:?}: use 1 to 64 letters, digits, `-`, `_` and `.`",
                req.name
            )));
        }
        if [API_TOKEN, JOIN_TOKEN].contains(&req.name.as_str()) {
            return Err(bad(format!(
                "`{}` names the token given on the controller's command line",
                req.name
            )));
        }
        if req.ttl_secs == Some(0) {
            return Err(bad("a token's time to live must be positive".into()));
        }
        let mut tokens = super::guard(&self.tokens);
        if tokens.contains_key(&req.name) {
            return Err((
                StatusCode::CONFLICT,
                format!(
                    "a token named `{}` exists; remove it first (`reconcile token rm {}`)",
                    req.name, req.name
                ),
            ));
        }
        let token = new_token("rct_").map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e))?;
        let now = crate::clock::unix_now();
        let view = TokenView {
            name: req.name.clone(),
            role: req.role,
            created_at: now,
            expires_at: req
                .ttl_secs
                .map(|t| now.saturating_add(i64::try_from(t).unwrap_or(i64::MAX))),
        };
        let record = TokenRecord {
            view: view.clone(),
            hash: hash(&token),
        };
        self.db
            .put_token(&record)
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        tokens.insert(req.name.clone(), record);
        Ok(CreatedToken { view, token })
    }

    pub fn tokens(&self) -> Vec<TokenView> {
        super::guard(&self.tokens)
            .values()
            .map(|t| t.view.clone())
            .collect()
    }

    /// Revoke a named token: its next request is refused.
    pub fn remove_token(&self, name: &str) -> Result<(), (StatusCode, String)> {
        let mut tokens = super::guard(&self.tokens);
        if !tokens.contains_key(name) {
            return Err((StatusCode::NOT_FOUND, format!("no token named `{name}`")));
        }
        self.db
            .delete_token(name)
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        tokens.remove(name);
        Ok(())
    }
}

/// The middleware in front of every route: authenticate, authorise, and
/// record every change in the audit log.
pub(super) async fn gate(
    State(c): State<Arc<Controller>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    route: MatchedPath,
    mut req: Request,
    next: Next,
) -> Response {
    let need = need(req.method(), route.as_str());
    if need == Need::Open {
        return next.run(req).await;
    }
    let action = format!("{} {}", req.method(), route.as_str());
    let target = req.uri().path().to_string();
    // Heartbeats and long polls are not changes an operator made.
    let audited = need != Need::Node && !matches!(*req.method(), Method::GET | Method::HEAD);
    let signed = need == Need::Webhook && req.headers().contains_key("x-hub-signature-256");
    let caller = if signed {
        Ok(Caller {
            name: "webhook".into(),
            access: Access::Webhook,
        })
    } else {
        c.authenticate(req.headers(), need, &target)
    };
    match caller {
        Ok(caller) => {
            req.extensions_mut().insert(caller.clone());
            let reply = next.run(req).await;
            if audited {
                c.audit.record(&super::audit::Entry {
                    caller: &caller.name,
                    role: &caller.role(),
                    peer,
                    action: &action,
                    target: &target,
                    status: reply.status().as_u16(),
                });
            }
            reply
        }
        Err(d) => {
            // Anyone can cause these: one line a second, with a count.
            if let Some(n) = c.refused.hit(&action, std::time::Instant::now()) {
                let more = if n > 1 {
                    format!(" ({} more since the last report)", n - 1)
                } else {
                    String::new()
                };
                tracing::warn!(%peer, "refused {action} from {peer}: {}{more}", d.message);
            }
            if audited {
                c.audit.record(&super::audit::Entry {
                    caller: d.who.as_deref().unwrap_or("-"),
                    role: "-",
                    peer,
                    action: &action,
                    target: &target,
                    status: d.status.as_u16(),
                });
            }
            (d.status, Json(ApiError { error: d.message })).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_matched_without_case() {
        let mut h = HeaderMap::new();
        for (value, want) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer ", None),
            ("Bearerabc", None),
        ] {
            h.insert(axum::http::header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(bearer(&h), want, "{value:?}");
        }
    }

    #[test]
    fn every_route_that_is_not_a_read_needs_an_operator() {
        let post = Method::POST;
        assert_eq!(need(&Method::GET, "/v1/status"), Need::Read);
        assert_eq!(need(&post, "/v1/sync"), Need::Operate);
        assert_eq!(need(&post, "/v1/destroy"), Need::Operate);
        assert_eq!(need(&post, "/v1/some/new/route"), Need::Operate);
        assert_eq!(need(&Method::DELETE, "/v1/nodes/{name}"), Need::Operate);
        assert_eq!(need(&Method::GET, "/v1/tokens"), Need::Operate);
        assert_eq!(need(&Method::GET, "/v1/secrets"), Need::Operate);
        assert_eq!(need(&post, "/v1/nodes/{name}/heartbeat"), Need::Node);
        assert_eq!(need(&Method::GET, "/v1/nodes/{name}/changes"), Need::Node);
        assert_eq!(need(&post, "/v1/nodes/{name}/logs/{session}"), Need::Node);
        assert_eq!(need(&Method::GET, "/v1/logs"), Need::Read);
        assert_eq!(need(&post, "/v1/tasks"), Need::Operate);
        assert_eq!(need(&post, "/v1/tasks/{id}/stop"), Need::Operate);
        assert_eq!(need(&Method::GET, "/v1/tasks"), Need::Read);
        assert_eq!(need(&Method::GET, "/v1/tasks/{id}"), Need::Read);
        assert_eq!(need(&Method::GET, "/v1/controllers"), Need::Read);
        assert_eq!(need(&Method::GET, "/v1/scheduled-tasks/{name}"), Need::Read);
        assert_eq!(need(&post, "/v1/join"), Need::Join);
        assert_eq!(need(&Method::GET, "/healthz"), Need::Open);
    }

    #[test]
    fn tokens_are_random_and_stored_as_hashes() {
        let a = new_token("rct_").unwrap();
        let b = new_token("rct_").unwrap();
        assert!(a.starts_with("rct_") && a.len() == 68 && a != b);
        assert_eq!(hash(&a).len(), 64);
        assert!(!hash(&a).contains(&a[4..]));
    }
}
