//! Tasks outside any service over the API: `POST /v1/tasks` (run-task,
//! operator), `GET /v1/tasks` and `GET /v1/tasks/{id}` (reader),
//! `POST /v1/tasks/{id}/stop` (operator), and `GET /v1/scheduled-tasks/{name}`
//! (reader: a scheduled task's next run and its runs). Records hold no
//! secret values:
//! a task's secrets travel only in its assignment.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{error, Shared};
use crate::controller::Controller;
use crate::model::TaskStatus;
use crate::runs::{Filter, RunRequest};

pub(super) fn routes() -> Router<Arc<Controller>> {
    Router::new()
        .route("/v1/tasks", get(list).post(run))
        .route("/v1/tasks/{id}", get(one))
        .route("/v1/tasks/{id}/stop", post(stop))
        .route("/v1/scheduled-tasks/{name}", get(scheduled))
}

async fn run(State(c): Shared, Json(req): Json<RunRequest>) -> Response {
    match c.run_task(&req) {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListQuery {
    cluster: Option<String>,
    family: Option<String>,
    started_by: Option<String>,
    status: Option<String>,
}

async fn list(State(c): Shared, Query(q): Query<ListQuery>) -> Response {
    let status = match q.status.as_deref() {
        None => None,
        Some("RUNNING") => Some(TaskStatus::Running),
        Some("STOPPED") => Some(TaskStatus::Stopped),
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("status `{other}`: RUNNING or STOPPED"),
            )
        }
    };
    let filter = Filter {
        cluster: q.cluster,
        family: q.family,
        started_by: q.started_by,
        status,
    };
    Json(c.tasks(&filter)).into_response()
}

async fn one(State(c): Shared, Path(id): Path<String>) -> Response {
    match c.task(&id) {
        Ok(r) => Json(r).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e),
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StopRequest {
    #[serde(default)]
    reason: String,
}

async fn stop(State(c): Shared, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    // No body: no reason.
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        String::new()
    } else {
        match serde_json::from_slice::<StopRequest>(&body) {
            Ok(b) => b.reason,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("the body: {e}")),
        }
    };
    if reason.len() > 1024 {
        return error(
            StatusCode::BAD_REQUEST,
            "the reason is longer than 1024 bytes",
        );
    }
    match c.stop_task(&id, &reason) {
        Ok(r) => Json(r).into_response(),
        Err((true, e)) => error(StatusCode::NOT_FOUND, e),
        Err((false, e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn scheduled(State(c): Shared, Path(name): Path<String>) -> Response {
    match c.scheduled_task(&name) {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e),
    }
}
