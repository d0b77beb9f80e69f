//! The OpenAPI 3.1 document of the controller's API, built from the same
//! Rust types the handlers use (schemas by schemars), so it cannot drift
//! from them. Published as `schemas/openapi.json` (a test checks it is
//! current) and served at `GET /v1/openapi.json`.

use serde_json::{json, Map, Value};

use crate::report::StatusReport;
use crate::wire::{
    Accepted, ApiError, Changes, CreatedToken, Heartbeat, HeartbeatReply, HistoryReply, JoinReply,
    JoinRequest, NodeView, RollbackRequest, SecretInfo, SyncReply, TokenRequest, TokenView,
};

fn schema<T: schemars::JsonSchema>() -> Value {
    let generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let mut v = serde_json::to_value(generator.into_root_schema_for::<T>()).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("$schema");
    }
    v
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn ok(description: &str, body: Value) -> Value {
    json!({
        "200": {"description": description, "content": {"application/json": {"schema": body}}},
        "401": {"description": "missing, unknown, revoked or expired token", "content": {"application/json": {"schema": reference("ApiError")}}},
        "403": {"description": "the token's role may not make this request", "content": {"application/json": {"schema": reference("ApiError")}}}
    })
}

/// `ok` plus a 4xx the operation answers with `ApiError`.
fn or(mut r: Value, code: &str, description: &str) -> Value {
    r[code] = json!({"description": description, "content": {"application/json": {"schema": reference("ApiError")}}});
    r
}

pub fn document() -> Value {
    let mut schemas = Map::new();
    schemas.insert("Heartbeat".into(), schema::<Heartbeat>());
    schemas.insert("HeartbeatReply".into(), schema::<HeartbeatReply>());
    schemas.insert("Changes".into(), schema::<Changes>());
    schemas.insert("NodeView".into(), schema::<NodeView>());
    schemas.insert("StatusReport".into(), schema::<StatusReport>());
    schemas.insert("ApiError".into(), schema::<ApiError>());
    schemas.insert("HistoryReply".into(), schema::<HistoryReply>());
    schemas.insert("RollbackRequest".into(), schema::<RollbackRequest>());
    schemas.insert("Accepted".into(), schema::<Accepted>());
    schemas.insert("SyncReply".into(), schema::<SyncReply>());
    schemas.insert("JoinRequest".into(), schema::<JoinRequest>());
    schemas.insert("JoinReply".into(), schema::<JoinReply>());
    schemas.insert("TokenRequest".into(), schema::<TokenRequest>());
    schemas.insert("TokenView".into(), schema::<TokenView>());
    schemas.insert("CreatedToken".into(), schema::<CreatedToken>());
    schemas.insert("SecretInfo".into(), schema::<SecretInfo>());
    let service = json!([
        {"name": "cluster", "in": "path", "required": true, "schema": {"type": "string"}},
        {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}
    ]);
    let conflict = |mut r: Value| {
        r["409"] = json!({"description": "nothing to abort or roll back, or a reconcile is applying", "content": {"application/json": {"schema": reference("ApiError")}}});
        r
    };
    let name =
        json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}]);
    let changes_parameters = json!([
        {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
        {"name": "after", "in": "query", "required": true, "schema": {"type": "integer", "minimum": 0}, "description": "the generation of the agent's last heartbeat reply"},
        {"name": "timeoutMillis", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0}}
    ]);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "reconcile controller API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Agents join with a join token and then report their node and tasks with the credential they received, and receive the tasks they must run; the CLI reads status and plans with a reader or operator token and acts with an operator token. Every operation except /healthz and this document needs `Authorization: Bearer TOKEN` (the scheme in any case); a wrong token is answered 401, a token whose role may not make the request 403."
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/join": {"post": {
                "summary": "A node's credential, bound to its name and cluster (join token). Refused for the name of a live node",
                "requestBody": {"required": true, "content": {"application/json": {"schema": reference("JoinRequest")}}},
                "responses": or(or(or(ok("the credential, shown once", reference("JoinReply")), "400", "a bad node name"), "409", "the name belongs to a live node or another cluster"), "429", "too many joins")
            }},
            "/v1/nodes/{name}": {"delete": {
                "summary": "Remove a node: revoke its credential, forget it, place its tasks elsewhere (operator)",
                "parameters": name,
                "responses": or(ok("removed", reference("Accepted")), "404", "no such node")
            }},
            "/v1/tokens": {
                "get": {
                    "summary": "Named API tokens, without the tokens (operator)",
                    "responses": ok("tokens", json!({"type": "array", "items": reference("TokenView")}))
                },
                "post": {
                    "summary": "Make a named token (operator); the reply holds it, shown once",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": reference("TokenRequest")}}},
                    "responses": or(or(json!({
                        "201": {"description": "created", "content": {"application/json": {"schema": reference("CreatedToken")}}},
                        "401": {"description": "missing, unknown, revoked or expired token", "content": {"application/json": {"schema": reference("ApiError")}}},
                        "403": {"description": "the token's role may not make this request", "content": {"application/json": {"schema": reference("ApiError")}}}
                    }), "400", "a bad name or time to live"), "409", "a token of that name exists")
                }
            },
            "/v1/tokens/{name}": {"delete": {
                "summary": "Revoke a named token (operator)",
                "parameters": name,
                "responses": or(ok("revoked", reference("Accepted")), "404", "no such token")
            }},
            "/v1/nodes/{name}/heartbeat": {"post": {
                "summary": "Register or refresh a node (the node's own credential)",
                "parameters": name,
                "requestBody": {"required": true, "content": {"application/json": {"schema": reference("Heartbeat")}}},
                "responses": ok("the tasks the node must run; it stops anything else it owns", reference("HeartbeatReply"))
            }},
            "/v1/nodes/{name}/changes": {"get": {
                "summary": "Wait until the assignments change (the node's own credential): returns once the generation differs from `after`, or after `timeoutMillis` (at most 30 s)",
                "parameters": changes_parameters,
                "responses": ok("the current assignment generation and, when it changed, the node's assignments (compact)", reference("Changes"))
            }},
            "/v1/nodes": {"get": {
                "summary": "Nodes with status and assigned load",
                "responses": ok("nodes", json!({"type": "array", "items": reference("NodeView")}))
            }},
            "/v1/nodes/{name}/drain": {"post": {
                "summary": "Stop placing tasks on a node (DRAINING)",
                "parameters": name,
                "responses": ok("new status", json!({"type": "object"}))
            }},
            "/v1/nodes/{name}/activate": {"post": {
                "summary": "Make a node ACTIVE again",
                "parameters": name,
                "responses": ok("new status", json!({"type": "object"}))
            }},
            "/v1/status": {"get": {
                "summary": "Nodes, services, tasks and recent events",
                "responses": ok("status", reference("StatusReport"))
            }},
            "/v1/plan": {"get": {
                "summary": "The plan the next reconcile would apply (the JSON plan document of `reconcile plan --format json`)",
                "responses": ok("plan", json!({"type": "object"}))
            }},
            "/v1/services/{cluster}/{name}/history": {"get": {
                "summary": "A service's deployments and events, newest first",
                "parameters": service,
                "responses": ok("history", reference("HistoryReply"))
            }},
            "/v1/services/{cluster}/{name}/abort": {"post": {
                "summary": "Abort the service's rollout: the running one rolls back at once; a FAILED or interrupted one on the next pass",
                "parameters": service,
                "responses": conflict(ok("accepted", reference("Accepted")))
            }},
            "/v1/services/{cluster}/{name}/rollback": {"post": {
                "summary": "Deploy an earlier revision and hold the source's one until the source changes",
                "parameters": service,
                "requestBody": {"required": false, "content": {"application/json": {"schema": reference("RollbackRequest")}}},
                "responses": conflict(ok("accepted", reference("Accepted")))
            }},
            "/v1/sync": {"post": {
                "summary": "Reconcile now (a git source is fetched first); done once the status's `passes` reaches `untilPass`",
                "parameters": [{"name": "allowMassDelete", "in": "query", "required": false, "schema": {"type": "boolean"},
                                "description": "approve once the plan of the commit fetched now (or of the next pass, for a directory source) even if it deletes more than half of the services"}],
                "responses": {"202": {"description": "requested", "content": {"application/json": {"schema": reference("SyncReply")}}}}
            }},
            "/v1/webhook": {"post": {
                "summary": "Push notification from a git host: signed with the webhook secret (X-Hub-Signature-256: sha256=HEX of HMAC-SHA256 over the body) or carrying an operator token; same as /v1/sync. A delivery (its X-GitHub-Delivery, X-Gitea-Delivery or X-Gogs-Delivery id, or its signed body) is accepted once within 10 minutes",
                "security": [{"bearer": []}, {}],
                "responses": {
                    "202": {"description": "requested"},
                    "401": {"description": "a signature that does not verify (`bad webhook signature`), or neither a signature nor the API token", "content": {"application/json": {"schema": reference("ApiError")}}},
                    "409": {"description": "replayed webhook delivery: seen within the last 10 minutes; nothing is synced", "content": {"application/json": {"schema": reference("ApiError")}}},
                    "429": {"description": "over the rate limit (per address and overall); `Retry-After` gives the seconds to wait", "content": {"application/json": {"schema": reference("ApiError")}}}
                }
            }},
            "/v1/suspend": {"post": {
                "summary": "Stop applying: the source is still read, validated and planned, and the plan reported",
                "responses": ok("suspended", json!({"type": "object"}))
            }},
            "/v1/resume": {"post": {
                "summary": "Apply again",
                "responses": ok("resumed", json!({"type": "object"}))
            }},
            "/v1/secrets": {"get": {
                "summary": "The controller's secrets: names and when they were set, never values or fingerprints",
                "responses": ok("secrets", json!({"type": "array", "items": reference("SecretInfo")}))
            }},
            "/v1/secrets/{name}": {
                "put": {
                    "summary": "Set a secret (a bare `valueFrom: NAME` in fleet mode); services that read it roll to the new value",
                    "parameters": name,
                    "requestBody": {"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "maxLength": 65536},
                        "description": "the value, UTF-8, at most 64 KiB"}}},
                    "responses": ok("set", json!({"type": "object"}))
                },
                "delete": {
                    "summary": "Remove a secret; services that read it can no longer be planned until it is set again or no longer read",
                    "parameters": name,
                    "responses": ok("removed", json!({"type": "object"}))
                }
            },
            "/v1/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI document"}}}},
            "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok"}}}}
        }
    })
}
