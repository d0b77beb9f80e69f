//! The OpenAPI 3.1 document of the controller's API, built from the same
//! Rust types the handlers use (schemas by schemars), so it cannot drift
//! from them. Published as `schemas/openapi.json` (a test checks it is
//! current) and served at `GET /v1/openapi.json`.

use serde_json::{json, Map, Value};

use crate::report::StatusReport;
use crate::wire::{
    Accepted, ApiError, Changes, CreatedToken, EventLine, Heartbeat, HeartbeatReply, HistoryReply,
    JoinReply, JoinRequest, LogRecord, NodeView, RollbackRequest, SecretInfo, SyncReply,
    TokenRequest, TokenView,
};

/// Add `T`'s schema to `schemas` under `name`. schemars puts the types it
/// refers to in the root schema's own `components/schemas`, while its
/// references point at the document's: they are moved there, else no
/// client can resolve them.
fn add<T: schemars::JsonSchema>(schemas: &mut Map<String, Value>, name: &str) {
    let generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let mut v = serde_json::to_value(generator.into_root_schema_for::<T>()).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("$schema");
        if let Some(Value::Object(mut c)) = m.remove("components") {
            if let Some(Value::Object(defs)) = c.remove("schemas") {
                schemas.extend(defs);
            }
        }
    }
    schemas.insert(name.into(), v);
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// `code` with `body` as JSON, added to the responses `r`.
fn answer(mut r: Value, code: &str, description: &str, body: Value) -> Value {
    r[code] =
        json!({"description": description, "content": {"application/json": {"schema": body}}});
    r
}

/// `code` with `body` of `media_type`, added to the responses `r`.
fn answer_as(mut r: Value, code: &str, description: &str, media_type: &str, body: Value) -> Value {
    r[code] = json!({"description": description, "content": {media_type: {"schema": body}}});
    r
}

/// The refusals of the gate in front of every authenticated route.
fn denied() -> Value {
    let r = or(
        json!({}),
        "401",
        "missing, unknown, revoked or expired token",
    );
    or(r, "403", "the token's role may not make this request")
}

/// `code` with no body, added to the responses `r`.
fn answer_empty(mut r: Value, code: &str, description: &str) -> Value {
    r[code] = json!({ "description": description });
    r
}

fn ok(description: &str, body: Value) -> Value {
    answer(denied(), "200", description, body)
}

/// `r` plus a 4xx the operation answers with `ApiError`.
fn or(r: Value, code: &str, description: &str) -> Value {
    answer(r, code, description, reference("ApiError"))
}

/// `r` plus what the API answers to a body it cannot take (the reply is
/// an `ApiError` like any other). Applied before an operation's own 400,
/// which then describes it.
fn body(r: Value) -> Value {
    let r = or(r, "400", "the body is not JSON");
    let r = or(r, "413", "the body is over 16 MiB");
    let r = or(
        r,
        "415",
        "the body is not sent as `Content-Type: application/json`",
    );
    or(
        r,
        "422",
        "the body is JSON but not of the operation's schema",
    )
}

pub fn document() -> Value {
    let mut schemas = Map::new();
    add::<Heartbeat>(&mut schemas, "Heartbeat");
    add::<HeartbeatReply>(&mut schemas, "HeartbeatReply");
    add::<Changes>(&mut schemas, "Changes");
    add::<LogRecord>(&mut schemas, "LogRecord");
    add::<NodeView>(&mut schemas, "NodeView");
    add::<StatusReport>(&mut schemas, "StatusReport");
    add::<ApiError>(&mut schemas, "ApiError");
    add::<HistoryReply>(&mut schemas, "HistoryReply");
    add::<RollbackRequest>(&mut schemas, "RollbackRequest");
    add::<Accepted>(&mut schemas, "Accepted");
    add::<SyncReply>(&mut schemas, "SyncReply");
    add::<JoinRequest>(&mut schemas, "JoinRequest");
    add::<JoinReply>(&mut schemas, "JoinReply");
    add::<TokenRequest>(&mut schemas, "TokenRequest");
    add::<TokenView>(&mut schemas, "TokenView");
    add::<CreatedToken>(&mut schemas, "CreatedToken");
    add::<SecretInfo>(&mut schemas, "SecretInfo");
    add::<EventLine>(&mut schemas, "EventLine");
    add::<crate::runs::RunRequest>(&mut schemas, "RunRequest");
    add::<crate::runs::RunReply>(&mut schemas, "RunReply");
    add::<crate::runs::RunRecord>(&mut schemas, "RunRecord");
    add::<crate::runs::scheduled::ScheduledView>(&mut schemas, "ScheduledView");
    add::<crate::wire::ControlPlane>(&mut schemas, "ControlPlane");
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
    let mut doc = json!({
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
                "responses": or(or(or(or(body(ok("the credential, shown once", reference("JoinReply"))), "400", "a bad node name, or a body that is not JSON"), "403", "the join token may not join, or the source defines no such cluster"), "409", "the name belongs to a live node or another cluster"), "429", "too many joins")
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
                    "responses": or(or(body(answer(denied(), "201", "created", reference("CreatedToken"))), "400", "a bad name or time to live, or a body that is not JSON"), "409", "a token of that name exists")
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
                "responses": or(or(body(ok("the tasks the node must run; it stops anything else it owns", reference("HeartbeatReply"))), "400", "more CPU or memory than is believed, or a body that is not JSON"), "403", "a cluster other than the one the node joined, or one the source does not define")
            }},
            "/v1/nodes/{name}/changes": {"get": {
                "summary": "Wait until the assignments change (the node's own credential): returns once the generation differs from `after`, or after `timeoutMillis` (at most 30 s)",
                "parameters": changes_parameters,
                "responses": or(ok("the current assignment generation and, when it changed, the node's assignments (compact)", reference("Changes")), "400", "`after` missing or not a number")
            }},
            "/v1/nodes": {"get": {
                "summary": "Nodes with status and assigned load",
                "responses": ok("nodes", json!({"type": "array", "items": reference("NodeView")}))
            }},
            "/v1/nodes/{name}/drain": {"post": {
                "summary": "Stop placing tasks on a node (DRAINING)",
                "parameters": name,
                "responses": or(ok("new status", json!({"type": "object"})), "404", "no such node")
            }},
            "/v1/nodes/{name}/activate": {"post": {
                "summary": "Make a node ACTIVE again",
                "parameters": name,
                "responses": or(ok("new status", json!({"type": "object"})), "404", "no such node")
            }},
            "/v1/nodes/{name}/logs/{session}": {"post": {
                "summary": "Upload a log session the node was told of in its long poll or heartbeat reply (the node's own credential): a streaming body of JSON lines, secrets already masked; the answer comes when the reader goes away or the body ends",
                "parameters": [
                    {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "session", "in": "path", "required": true, "schema": {"type": "string"}}
                ],
                "requestBody": {"required": true, "description": "JSON lines, each a `LogRecord`", "content": {"application/x-ndjson": {"schema": reference("LogRecord")}}},
                "responses": or(answer_empty(denied(), "204", "the session ended"), "404", "no such session waits for this node")
            }},
            "/v1/logs": {"get": {
                "summary": "Task logs (reader): the lines of a service's tasks or of one task, relayed from their nodes with the tasks' secrets masked, as a stream of JSON lines (one `LogRecord` each)",
                "parameters": [
                    {"name": "service", "in": "query", "required": false, "schema": {"type": "string"}, "description": "`NAME` or `CLUSTER/NAME`; give this or `task`"},
                    {"name": "task", "in": "query", "required": false, "schema": {"type": "string"}, "description": "a task id or a unique prefix of at least 8 characters"},
                    {"name": "container", "in": "query", "required": false, "schema": {"type": "string"}},
                    {"name": "follow", "in": "query", "required": false, "schema": {"type": "boolean"}, "description": "keep streaming, with the tasks that replace stopped ones"},
                    {"name": "since", "in": "query", "required": false, "schema": {"type": "integer"}, "description": "Unix seconds"},
                    {"name": "tail", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0}, "description": "the last N lines of each container"},
                    {"name": "timestamps", "in": "query", "required": false, "schema": {"type": "boolean"}}
                ],
                "responses": or(or(answer_as(denied(), "200", "JSON lines until every stream ended (or, following, until the client goes away)", "application/x-ndjson", json!({"type": "string", "description": "JSON lines, each a `LogRecord` (#/components/schemas/LogRecord)"})), "400", "neither or both of `service` and `task`, an ambiguous name or prefix, or an unknown container"), "404", "no assigned task of that service, or no such task")
            }},
            "/v1/status": {"get": {
                "summary": "Nodes, services, tasks and recent events",
                "responses": ok("status", reference("StatusReport"))
            }},
            "/v1/events": {"get": {
                "summary": "The controller's events, oldest first, as JSON lines (one `EventLine` per line); with `follow`, the reply stays open and each new event is sent as it is recorded, with an empty line every 15 s while there is none",
                "parameters": [
                    {"name": "after", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0}, "description": "only events after this `seq` (the last one seen)"},
                    {"name": "since", "in": "query", "required": false, "schema": {"type": "integer"}, "description": "only events at or after this time (unix seconds)"},
                    {"name": "service", "in": "query", "required": false, "schema": {"type": "string", "minLength": 1, "maxLength": 512}, "description": "only events about this service: `cluster/name`, or a name in any cluster"},
                    {"name": "follow", "in": "query", "required": false, "schema": {"type": "boolean"}, "description": "keep the reply open and send new events as they happen"}
                ],
                "responses": or(answer_as(denied(), "200", "events", "application/x-ndjson", json!({"type": "string", "description": "JSON lines, each an `EventLine` (#/components/schemas/EventLine)"})), "400", "a parameter that is not of its type")
            }},
            "/metrics": {"get": {
                "summary": "Prometheus metrics (text exposition format), reader role; see METRICS.md",
                "responses": answer_as(denied(), "200", "metrics", "text/plain", json!({"type": "string"}))
            }},
            "/v1/plan": {"get": {
                "summary": "The plan the next reconcile would apply (the JSON plan document of `reconcile plan --format json`)",
                "responses": or(ok("plan", json!({"type": "object"})), "422", "the source does not load or validate")
            }},
            "/v1/services/{cluster}/{name}/history": {"get": {
                "summary": "A service's deployments and events, newest first",
                "parameters": service,
                "responses": or(ok("history", reference("HistoryReply")), "404", "no such service has been applied")
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
                "responses": conflict(body(ok("accepted", reference("Accepted"))))
            }},
            "/v1/sync": {"post": {
                "summary": "Reconcile now (a git source is fetched first); done once the status's `passes` reaches `untilPass`",
                "parameters": [{"name": "allowMassDelete", "in": "query", "required": false, "schema": {"type": "boolean"},
                                "description": "approve once the plan of the commit fetched now (or of the next pass, for a directory source) even if it deletes more than half of the services"}],
                "responses": or(answer(denied(), "202", "requested", reference("SyncReply")), "400", "`allowMassDelete` is not `true` or `false`")
            }},
            "/v1/webhook": {"post": {
                "summary": "Push notification from a git host: signed with the webhook secret (X-Hub-Signature-256: sha256=HEX of HMAC-SHA256 over the body) or carrying an operator token; same as /v1/sync. A delivery (its X-GitHub-Delivery, X-Gitea-Delivery or X-Gogs-Delivery id, or its signed body) is accepted once within 10 minutes",
                "security": [{"bearer": []}, {}],
                "responses": or(or(or(or(answer(denied(), "202", "requested", json!({"type": "object"})), "401", "a signature that does not verify (`bad webhook signature`), or neither a signature nor a token"), "403", "a token that is not an operator's"), "409", "replayed webhook delivery: seen within the last 10 minutes; nothing is synced"), "429", "over the rate limit (per address and overall); `Retry-After` gives the seconds to wait")
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
                    "responses": or(or(ok("set", json!({"type": "object"})), "400", "a bad name, or a value that is empty or not UTF-8"), "413", "a value over 64 KiB")
                },
                "delete": {
                    "summary": "Remove a secret; services that read it can no longer be planned until it is set again or no longer read",
                    "parameters": name,
                    "responses": or(or(ok("removed", json!({"type": "object"})), "400", "a bad name"), "404", "no such secret")
                }
            },
            "/v1/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI document"}}}},
            "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok"}}}}
        }
    });
    // Apart: one more entry above passes the json! macro's recursion limit.
    doc["paths"]["/v1/destroy"] = json!({"post": {
        "summary": "Tear down: from the next pass on, apply an empty source, so every service stops and every resource the source applied goes; nothing of the source is applied again until /v1/resume. Done once the status's `passes` reaches `untilPass`",
        "responses": answer(denied(), "202", "requested", reference("SyncReply"))
    }});
    tasks_paths(&mut doc);
    doc["paths"]["/v1/controllers"] = json!({"get": {
        "summary": "The control plane (reader): the store, and every controller sharing it, the leader first. A controller standing by answers the reads of what the store holds (nodes, events, history, tasks, controllers) from its view of the store, with the Reconcile-Served-By: follower header, forwards every other request to the leader, and answers 503 while no leader serves, naming an elected one in the Reconcile-Leader header",
        "responses": or(ok("the controllers", reference("ControlPlane")), "503", "etcd cannot be reached")
    }});
    doc
}

/// Tasks outside services and scheduled tasks.
fn tasks_paths(doc: &mut Value) {
    let id = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "a task id, or at least 8 of its first characters"}]);
    doc["paths"]["/v1/tasks"] = json!({
        "get": {
            "summary": "Tasks started outside services (run-task, schedules), running and stopped within the last hour, newest first (reader)",
            "parameters": [
                {"name": "cluster", "in": "query", "required": false, "schema": {"type": "string"}},
                {"name": "family", "in": "query", "required": false, "schema": {"type": "string"}},
                {"name": "startedBy", "in": "query", "required": false, "schema": {"type": "string"}},
                {"name": "status", "in": "query", "required": false, "schema": {"type": "string", "enum": ["RUNNING", "STOPPED"]}}
            ],
            "responses": or(ok("tasks", json!({"type": "array", "items": reference("RunRecord")})), "400", "a status other than RUNNING or STOPPED, or an unknown parameter")
        },
        "post": {
            "summary": "run-task (operator): start a task definition's tasks outside any service, placed by the scheduler and never restarted; tasks that fit nowhere are the reply's failures",
            "requestBody": {"required": true, "content": {"application/json": {"schema": reference("RunRequest")}}},
            "responses": or(body(ok("the tasks started and the placement failures", reference("RunReply"))), "400", "an unknown cluster or task definition, a count out of range, a bad override, constraint or startedBy, or a body that is not JSON")
        }
    });
    doc["paths"]["/v1/tasks/{id}"] = json!({"get": {
        "summary": "One task started outside services (reader)",
        "parameters": id.clone(),
        "responses": or(ok("the task", reference("RunRecord")), "404", "no such task, or a prefix that names none or several")
    }});
    doc["paths"]["/v1/tasks/{id}/stop"] = json!({"post": {
        "summary": "Stop a task started outside services, with a reason (operator): its node stops it and keeps its containers for the exit codes and logs",
        "parameters": id,
        "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "properties": {"reason": {"type": "string", "maxLength": 1024}}, "additionalProperties": false}}}},
        "responses": or(or(body(ok("the task, stopping", reference("RunRecord"))), "400", "a reason over 1024 bytes, or a body that is not JSON"), "404", "no such task")
    }});
    doc["paths"]["/v1/scheduled-tasks/{name}"] = json!({"get": {
        "summary": "A scheduled task as applied: its next run and its runs, newest first, with their tasks' exit codes (reader)",
        "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
        "responses": or(ok("the scheduled task", reference("ScheduledView")), "404", "no such scheduled task is applied")
    }});
}
