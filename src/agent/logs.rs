//! Log sessions the controller asks of this node: the lines of some of its
//! tasks' containers, read from the engine, masked, and uploaded as JSON
//! lines in the streaming body of `POST /v1/nodes/{name}/logs/{session}`.
//! Every secret value of the tasks (those the controller sent, and the
//! `node:` ones read here) is replaced by `***` before a line leaves the
//! node: a reader may read logs, not secrets.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bollard::Docker;
use tokio::sync::mpsc;

use crate::logs::Masker;
use crate::runtime::docker::label;
use crate::runtime::docker::logs::{read, LogLine, LogRequest, Output};
use crate::wire::{LogAsk, LogRecord};

/// Sessions uploading at once from this node (the controller allows as
/// many per node).
const MAX_UPLOADS: usize = crate::controller::logs::SESSIONS_PER_NODE;
/// Records queued per upload.
const QUEUE: usize = 256;

/// The uploads under way, by session.
pub struct Uploads {
    client: reqwest::Client,
    base: String,
    secrets_dir: Option<std::path::PathBuf>,
    started: Arc<Mutex<HashSet<String>>>,
}

impl Uploads {
    pub fn new(
        client: reqwest::Client,
        controller: &str,
        node: &str,
        secrets_dir: Option<std::path::PathBuf>,
    ) -> Uploads {
        Uploads {
            client,
            base: format!("{}/v1/nodes/{node}/logs", controller.trim_end_matches('/')),
            secrets_dir,
            started: Arc::default(),
        }
    }

    /// Start an upload for each session not started yet.
    pub fn start(&self, docker: &Docker, token: &str, asks: Vec<LogAsk>) {
        for ask in asks {
            {
                let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
                if started.len() >= MAX_UPLOADS || !started.insert(ask.session.clone()) {
                    continue;
                }
            }
            let url = format!("{}/{}", self.base, ask.session);
            let (client, token, docker) = (self.client.clone(), token.to_string(), docker.clone());
            let masker = masker(&ask, self.secrets_dir.as_deref());
            let started = self.started.clone();
            tokio::spawn(async move {
                let session = ask.session.clone();
                upload(client, url, token, docker, ask, masker).await;
                started
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&session);
            });
        }
    }
}

/// The values to mask in the session's lines.
fn masker(ask: &LogAsk, secrets_dir: Option<&std::path::Path>) -> Masker {
    let node = ask.node_secrets.iter().filter_map(|r| {
        let name = r.strip_prefix("node:").unwrap_or(r);
        let dir = secrets_dir?;
        crate::secrets::read_named(dir, name)
            .ok()
            .map(|v| v.expose().to_string())
    });
    Masker::new(ask.mask.iter().cloned().chain(node))
}

/// A record as one JSON line.
fn encode(record: &LogRecord) -> Vec<u8> {
    let mut line = serde_json::to_vec(record).unwrap_or_default();
    line.push(b'\n');
    line
}

async fn upload(
    client: reqwest::Client,
    url: String,
    token: String,
    docker: Docker,
    ask: LogAsk,
    masker: Masker,
) {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    let request = LogRequest {
        follow: ask.follow,
        since: ask.since,
        tail: ask.tail,
        timestamps: ask.timestamps,
    };
    let masker = Arc::new(masker);
    let mut readers = Vec::new();
    for task in &ask.tasks {
        let containers =
            crate::runtime::docker::labelled(&docker, vec![format!("{}={task}", label::TASK)])
                .await
                .unwrap_or_default();
        for c in containers {
            let labels = c.labels.clone().unwrap_or_default();
            let name = labels.get(label::CONTAINER).cloned().unwrap_or_default();
            let service = labels.get(label::SERVICE).cloned();
            let (Some(id), true) = (c.id, ask.container.as_ref().is_none_or(|n| n == &name)) else {
                continue;
            };
            let (docker, request, tx, masker, task, service) = (
                docker.clone(),
                request.clone(),
                tx.clone(),
                masker.clone(),
                task.clone(),
                service.clone(),
            );
            readers.push(tokio::spawn(async move {
                let (lines, mut rx) = mpsc::channel::<LogLine>(QUEUE);
                let reading = async {
                    let r = read(&docker, &id, &task, &name, &request, &lines).await;
                    drop(lines);
                    r
                };
                let forward = async {
                    while let Some(l) = rx.recv().await {
                        let record = LogRecord::Line {
                            task: task.clone(),
                            service: service.clone(),
                            container: name.clone(),
                            stream: match l.output {
                                Output::Stdout => "stdout",
                                Output::Stderr => "stderr",
                            }
                            .into(),
                            timestamp: l.timestamp,
                            line: masker.mask(&l.text).into_owned(),
                        };
                        if tx.send(encode(&record)).await.is_err() {
                            break;
                        }
                    }
                };
                let (result, ()) = tokio::join!(reading, forward);
                if let Err(message) = result {
                    let record = LogRecord::Error {
                        task: Some(task.clone()),
                        message,
                    };
                    let _ = tx.send(encode(&record)).await;
                }
            }));
        }
    }
    drop(tx);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        let b = rx.recv().await?;
        Some((Ok::<_, std::io::Error>(b), rx))
    });
    let sent = client
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await;
    if let Err(e) = sent {
        tracing::debug!("agent: log upload {url} ended: {e}");
    }
    // The controller ended the session (its reader went away): stop
    // reading at once rather than at the next line.
    for r in readers {
        r.abort();
    }
}
