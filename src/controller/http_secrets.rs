//! The operator's secrets over the API: `PUT /v1/secrets/{name}` (the body
//! is the raw value, at most 64 KiB), `GET /v1/secrets` (names and times),
//! `DELETE /v1/secrets/{name}`, all for operators only (see `auth.rs`). Values come in and never go out: no reply,
//! log line or error holds one. A change reconciles at once, so services
//! that read the secret roll to the new value (their fingerprint changed).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Extension, Json, Router};

use super::{error, Shared};
use crate::controller::auth::Caller;
use crate::controller::Controller;
use crate::secrets::{check_name, SecretValue, MAX_VALUE};

pub(super) fn routes() -> Router<Arc<Controller>> {
    Router::new()
        .route("/v1/secrets", get(list))
        .route("/v1/secrets/{name}", put(set).delete(remove))
        .layer(DefaultBodyLimit::max(MAX_VALUE))
}

async fn set(
    State(c): Shared,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(e) = check_name(&name) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    if body.len() > MAX_VALUE {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a secret value is at most {} KiB", MAX_VALUE >> 10),
        );
    }
    let Ok(value) = String::from_utf8(body.to_vec()) else {
        return error(StatusCode::BAD_REQUEST, "a secret value must be UTF-8 text");
    };
    if value.is_empty() {
        return error(StatusCode::BAD_REQUEST, "a secret value may not be empty");
    }
    match c.secrets.set(&name, &SecretValue::new(value)) {
        Ok(created) => {
            let what = if created { "created" } else { "updated" };
            c.event(format!("secret `{name}` {what} by `{}`", caller.name));
            c.sync();
            Json(serde_json::json!({"secret": name, "created": created})).into_response()
        }
        Err(e) => {
            tracing::warn!("secret `{name}`: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, e)
        }
    }
}

async fn list(State(c): Shared) -> Response {
    match c.secrets.list() {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn remove(
    State(c): Shared,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Response {
    if let Err(e) = check_name(&name) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    match c.secrets.remove(&name) {
        Ok(true) => {
            c.event(format!("secret `{name}` removed by `{}`", caller.name));
            c.sync();
            Json(serde_json::json!({"secret": name, "removed": true})).into_response()
        }
        Ok(false) => error(StatusCode::NOT_FOUND, format!("no secret `{name}`")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
