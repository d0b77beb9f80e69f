//! Task logs through the controller. Agents only ever dial the
//! controller, so the relay runs node -> controller -> client:
//!
//! 1. `GET /v1/logs?service=…|task=…` (reader) resolves the tasks from the
//!    assignments and opens a session per node, each with a bounded queue
//!    into the client's response (JSON lines, [`LogRecord`]).
//! 2. The node hears of its sessions in its long poll or heartbeat reply
//!    (`logs`) and opens `POST /v1/nodes/{name}/logs/{session}` (that
//!    node's credential) with a streaming body of JSON lines, masked on the
//!    node.
//! 3. The controller forwards the lines. When the client goes away the
//!    sessions are dropped and the uploads' responses end them; when an
//!    upload ends, its tasks' streams end. A session never opened times out
//!    with an error line. With `follow`, new tasks of the service get
//!    sessions of their own.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::Controller;
use crate::wire::{ApiError, LogAsk, LogRecord};

/// Sessions a node may have at once: a reader cannot make one node stream
/// without end.
pub const SESSIONS_PER_NODE: usize = 16;
/// Records queued per client response; a slow reader slows the uploads.
pub const QUEUE: usize = 256;
/// How long a node has to open a session it was told of.
pub const OPEN_WITHIN: Duration = Duration::from_secs(15);
/// Longest JSON line accepted from a node: a capped log line, escaped.
pub const MAX_RECORD: usize = 8 * crate::logs::MAX_LINE;

struct Session {
    node: String,
    ask: LogAsk,
    tx: mpsc::Sender<LogRecord>,
    /// Sent in a long poll (a heartbeat reply repeats it until opened).
    told: bool,
    opened: bool,
}

/// The log sessions in progress, by id.
#[derive(Default)]
pub struct LogSessions {
    sessions: Mutex<HashMap<String, Session>>,
    /// Bumped when a session is created: wakes the nodes' long polls.
    wake: tokio::sync::Notify,
}

impl LogSessions {
    fn create(&self, node: &str, ask: LogAsk, tx: mpsc::Sender<LogRecord>) -> Result<(), String> {
        let mut s = super::guard(&self.sessions);
        if s.values().filter(|x| x.node == node).count() >= SESSIONS_PER_NODE {
            return Err(format!(
                "node {node} already streams {SESSIONS_PER_NODE} log sessions; try again later"
            ));
        }
        s.insert(
            ask.session.clone(),
            Session {
                node: node.to_string(),
                ask,
                tx,
                told: false,
                opened: false,
            },
        );
        drop(s);
        self.wake.notify_waiters();
        Ok(())
    }

    /// Sessions `node` has been told of and not opened.
    pub fn pending(&self, node: &str) -> Vec<LogAsk> {
        super::guard(&self.sessions)
            .values()
            .filter(|s| s.node == node && !s.opened)
            .map(|s| s.ask.clone())
            .collect()
    }

    /// Sessions of `node` not yet sent in a long poll, now marked sent.
    pub fn untold(&self, node: &str) -> Vec<LogAsk> {
        super::guard(&self.sessions)
            .values_mut()
            .filter(|s| s.node == node && !s.told && !s.opened)
            .map(|s| {
                s.told = true;
                s.ask.clone()
            })
            .collect()
    }

    /// Wait until `node` has a session not yet sent in a long poll.
    pub async fn wait_untold(&self, node: &str) {
        loop {
            let notified = self.wake.notified();
            let any = super::guard(&self.sessions)
                .values()
                .any(|s| s.node == node && !s.told && !s.opened);
            if any {
                return;
            }
            notified.await;
        }
    }

    fn open(&self, node: &str, session: &str) -> Option<(mpsc::Sender<LogRecord>, Vec<String>)> {
        let mut s = super::guard(&self.sessions);
        let x = s.get_mut(session).filter(|x| x.node == node && !x.opened)?;
        x.opened = true;
        Some((x.tx.clone(), x.ask.tasks.clone()))
    }

    fn opened(&self, session: &str) -> Option<bool> {
        super::guard(&self.sessions).get(session).map(|s| s.opened)
    }

    fn close(&self, session: &str) {
        super::guard(&self.sessions).remove(session);
    }

    fn exists(&self, session: &str) -> bool {
        super::guard(&self.sessions).contains_key(session)
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsQuery {
    service: Option<String>,
    task: Option<String>,
    container: Option<String>,
    #[serde(default)]
    follow: bool,
    since: Option<i64>,
    tail: Option<usize>,
    #[serde(default)]
    timestamps: bool,
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, axum::Json(ApiError { error: message })).into_response()
}

/// What the query names: a service (cluster, name) or one task.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Service(String, String),
    Task(String),
}

/// A live assignment: task id, node, cluster, service, container names,
/// secret values and `node:` references.
struct Placed {
    id: String,
    node: String,
    cluster: String,
    service: Option<String>,
    containers: Vec<String>,
    secrets: Vec<String>,
    node_secrets: Vec<String>,
}

impl Controller {
    fn placed(&self) -> Vec<Placed> {
        self.members()
            .assignments
            .values()
            .map(|a| Placed {
                id: a.task.identity.id.clone(),
                node: a.node.clone(),
                cluster: a.task.identity.cluster.clone(),
                service: a.task.identity.service.clone(),
                containers: a
                    .task
                    .spec
                    .container_definitions
                    .iter()
                    .map(|c| c.name.clone())
                    .collect(),
                secrets: a.task.secrets.values().cloned().collect(),
                node_secrets: a.task.node_secrets.clone(),
            })
            .collect()
    }
}

fn resolve(q: &LogsQuery, placed: &[Placed]) -> Result<Target, (StatusCode, String)> {
    let not_found = |m: String| (StatusCode::NOT_FOUND, m);
    match (&q.service, &q.task) {
        (Some(service), None) => {
            let (cluster, name) = match service.split_once('/') {
                Some((c, n)) => (Some(c), n),
                None => (None, service.as_str()),
            };
            let clusters: BTreeSet<&str> = placed
                .iter()
                .filter(|p| p.service.as_deref() == Some(name))
                .filter(|p| cluster.is_none_or(|c| p.cluster == c))
                .map(|p| p.cluster.as_str())
                .collect();
            match clusters.len() {
                1 => Ok(Target::Service(
                    clusters.into_iter().next().unwrap_or_default().to_string(),
                    name.to_string(),
                )),
                0 => {
                    let names: BTreeSet<&str> =
                        placed.iter().filter_map(|p| p.service.as_deref()).collect();
                    let hint = crate::suggest::closest(name, names)
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    Err(not_found(format!(
                        "no task of service `{service}` is assigned{hint}"
                    )))
                }
                _ => Err((
                    StatusCode::BAD_REQUEST,
                    format!(
                        "service `{name}` is in several clusters: name one of {}",
                        clusters
                            .iter()
                            .map(|c| format!("`{c}/{name}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            }
        }
        (None, Some(task)) => {
            let matches: Vec<&str> = placed
                .iter()
                .map(|p| p.id.as_str())
                .filter(|id| id.starts_with(task.as_str()))
                .collect();
            match matches.as_slice() {
                [one] if task.len() >= 8 || one == task => Ok(Target::Task(one.to_string())),
                [] => Err(not_found(format!("no assigned task `{task}`"))),
                _ if task.len() < 8 => Err((
                    StatusCode::BAD_REQUEST,
                    format!("task prefix `{task}` is too short: give at least 8 characters"),
                )),
                many => Err((
                    StatusCode::BAD_REQUEST,
                    format!(
                        "task prefix `{task}` matches {} tasks: give more of the id",
                        many.len()
                    ),
                )),
            }
        }
        _ => Err((
            StatusCode::BAD_REQUEST,
            "give one of `service` and `task`".into(),
        )),
    }
}

fn wanted(target: &Target, p: &Placed) -> bool {
    match target {
        Target::Service(c, n) => &p.cluster == c && p.service.as_deref() == Some(n),
        Target::Task(t) => &p.id == t,
    }
}

/// `GET /v1/logs`: the answer is a stream of JSON lines.
pub async fn client(State(c): State<Arc<Controller>>, Query(q): Query<LogsQuery>) -> Response {
    let placed = c.placed();
    let target = match resolve(&q, &placed) {
        Ok(t) => t,
        Err((code, m)) => return refuse(code, m),
    };
    if let Some(name) = &q.container {
        let names: BTreeSet<&str> = placed
            .iter()
            .filter(|p| wanted(&target, p))
            .flat_map(|p| p.containers.iter().map(String::as_str))
            .collect();
        if !names.contains(name.as_str()) {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "container `{name}`: the task definition's containers are {}",
                    names.into_iter().collect::<Vec<_>>().join(", ")
                ),
            );
        }
    }
    let (tx, rx) = mpsc::channel::<LogRecord>(QUEUE);
    tokio::spawn(drive(c, q, target, tx));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        let record = rx.recv().await?;
        let mut line = serde_json::to_vec(&record).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<Bytes, std::convert::Infallible>(Bytes::from(line)), rx))
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response()
}

/// Open sessions for the target's tasks (and, following, for the tasks
/// that appear later) until the client goes away or, not following, every
/// session ended.
async fn drive(c: Arc<Controller>, q: LogsQuery, target: Target, tx: mpsc::Sender<LogRecord>) {
    let mut covered: HashSet<String> = HashSet::new();
    let mut ours: Vec<(String, String, Instant)> = Vec::new();
    let mut first = true;
    loop {
        let mut by_node: BTreeMap<String, Vec<Placed>> = BTreeMap::new();
        for p in c.placed() {
            if wanted(&target, &p) && !covered.contains(&p.id) {
                by_node.entry(p.node.clone()).or_default().push(p);
            }
        }
        for (node, tasks) in by_node {
            let session = match super::auth::new_token("log") {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx
                        .send(LogRecord::Error {
                            task: None,
                            message: e,
                        })
                        .await;
                    return;
                }
            };
            let ask = LogAsk {
                session: session.clone(),
                tasks: tasks.iter().map(|p| p.id.clone()).collect(),
                container: q.container.clone(),
                follow: q.follow,
                since: q.since,
                // Tasks that appear while following are shown from their start.
                tail: if first { q.tail } else { None },
                timestamps: q.timestamps,
                mask: tasks.iter().flat_map(|p| p.secrets.clone()).collect(),
                node_secrets: tasks.iter().flat_map(|p| p.node_secrets.clone()).collect(),
            };
            match c.logs.create(&node, ask, tx.clone()) {
                Ok(()) => {
                    covered.extend(tasks.iter().map(|p| p.id.clone()));
                    ours.push((session, node, Instant::now()));
                }
                Err(message) => {
                    let _ = tx
                        .send(LogRecord::Error {
                            task: None,
                            message,
                        })
                        .await;
                }
            }
        }
        first = false;
        // Sessions a node never opened.
        for (session, node, at) in &ours {
            if c.logs.opened(session) == Some(false) && at.elapsed() > OPEN_WITHIN {
                c.logs.close(session);
                let message = format!(
                    "node {node} did not open its log session within {} s (agent down, or older than logs)",
                    OPEN_WITHIN.as_secs()
                );
                let _ = tx
                    .send(LogRecord::Error {
                        task: None,
                        message,
                    })
                    .await;
            }
        }
        ours.retain(|(s, _, _)| c.logs.exists(s));
        if !q.follow && ours.is_empty() {
            return;
        }
        tokio::select! {
            _ = tx.closed() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    for (session, _, _) in ours {
        c.logs.close(&session);
    }
}

/// `POST /v1/nodes/{name}/logs/{session}`: a node's upload, forwarded
/// line by line until it ends or the client goes away.
pub async fn upload(
    State(c): State<Arc<Controller>>,
    Path((name, session)): Path<(String, String)>,
    body: Body,
) -> Response {
    let Some((tx, tasks)) = c.logs.open(&name, &session) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("no log session `{session}` waits for node {name}"),
        );
    };
    let mut stream = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut too_long = false;
    let ended = loop {
        let chunk = tokio::select! {
            _ = tx.closed() => break false,
            chunk = stream.next() => chunk,
        };
        let Some(Ok(chunk)) = chunk else { break true };
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            if buf.len() + piece.len() > MAX_RECORD {
                too_long = true;
                buf.clear();
            } else if !too_long {
                buf.extend_from_slice(piece);
            }
            if piece.ends_with(b"\n") {
                if !too_long {
                    if let Ok(record) = serde_json::from_slice::<LogRecord>(&buf) {
                        if tx.send(record).await.is_err() {
                            c.logs.close(&session);
                            return StatusCode::NO_CONTENT.into_response();
                        }
                    }
                }
                too_long = false;
                buf.clear();
            }
        }
    };
    c.logs.close(&session);
    if ended {
        for task in tasks {
            let _ = tx.send(LogRecord::End { task }).await;
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, cluster: &str, service: &str) -> Placed {
        Placed {
            id: id.into(),
            node: "n1".into(),
            cluster: cluster.into(),
            service: Some(service.into()),
            containers: vec!["app".into()],
            secrets: vec![],
            node_secrets: vec![],
        }
    }

    #[test]
    fn queries_resolve_to_a_service_or_a_task() {
        let placed = [p("aaaaaaaa1111", "a", "web"), p("aaaaaaaa2222", "b", "web")];
        let q = |service: Option<&str>, task: Option<&str>| LogsQuery {
            service: service.map(Into::into),
            task: task.map(Into::into),
            ..LogsQuery::default()
        };
        assert!(resolve(&q(Some("web"), None), &placed)
            .unwrap_err()
            .1
            .contains("`a/web`, `b/web`"));
        assert_eq!(
            resolve(&q(Some("b/web"), None), &placed),
            Ok(Target::Service("b".into(), "web".into()))
        );
        assert!(resolve(&q(Some("webb"), None), &placed)
            .unwrap_err()
            .1
            .contains("did you mean `web`"));
        assert_eq!(
            resolve(&q(None, Some("aaaaaaaa1")), &placed),
            Ok(Target::Task("aaaaaaaa1111".into()))
        );
        assert!(resolve(&q(None, Some("aaaaaaaa")), &placed)
            .unwrap_err()
            .1
            .contains("matches 2"));
        assert!(resolve(&q(None, None), &placed).is_err());
    }
}
