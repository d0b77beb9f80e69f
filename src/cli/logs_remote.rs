//! `reconcile logs --controller URL`: `GET /v1/logs`, a stream of JSON
//! lines relayed from the nodes, printed as the local side prints them.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use super::args::RemoteArgs;
use super::diagnostics::colour;
use super::logs::render_line;
use super::run::{failure, usage, EXIT_FAILURE};
use crate::logs::{stream_name, MAX_LINE};
use crate::runtime::docker::logs::{LogLine, Output};
use crate::wire::{ApiError, LogRecord};

/// What to ask the controller for.
pub(super) struct Ask {
    pub target: String,
    pub container: Option<String>,
    pub follow: bool,
    pub since: Option<i64>,
    pub tail: Option<usize>,
    pub timestamps: bool,
}

/// Longest a followed stream is read: the controller ends it sooner.
const LONGEST: Duration = Duration::from_secs(24 * 3600);

pub(super) async fn run(remote: &RemoteArgs, ask: Ask) -> ExitCode {
    let Some(token) = remote.token.as_deref() else {
        return usage("--token (or RECONCILE_API_TOKEN) is required with --controller");
    };
    let located = match super::remote::Client::new(remote) {
        Ok(c) => c.locate().await.map(String::from),
        Err(code) => return code,
    };
    let base = match &located {
        Ok(b) => b.as_str(),
        Err(e) => return failure(e.clone()),
    };
    let http = match crate::tls::client(base, &remote.trust.trust(), LONGEST) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let base = base.trim_end_matches('/');
    // A service by name first; a task id or prefix when no service has it.
    let mut refused: Option<String> = None;
    let mut answer = None;
    for by in ["service", "task"] {
        if by == "task" && ask.target.contains('/') {
            break;
        }
        let url = match url(base, by, &ask) {
            Ok(u) => u,
            Err(e) => return usage(e),
        };
        let r = match http.get(url.clone()).bearer_auth(token).send().await {
            Ok(r) => r,
            Err(e) => return failure(crate::tls::errors::reaching(&e, base, url.as_str())),
        };
        let status = r.status();
        if status.is_success() {
            answer = Some(r);
            break;
        }
        let body = r.bytes().await.unwrap_or_default();
        let message = serde_json::from_slice::<ApiError>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        match status {
            // No such service: perhaps a task; if not, the service's
            // refusal (with its "did you mean") is the one to show.
            reqwest::StatusCode::NOT_FOUND => {
                refused.get_or_insert(message);
            }
            s if s.is_client_error() => return usage(message),
            s => return failure(format!("the controller answered {s}: {message}")),
        }
    }
    let Some(mut reply) = answer else {
        return usage(refused.unwrap_or_else(|| format!("no service or task `{}`", ask.target)));
    };
    let painted = colour(std::io::stdout().is_terminal());
    let mut names: Vec<String> = Vec::new();
    let mut failed = false;
    let mut buf: Vec<u8> = Vec::new();
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    loop {
        let chunk = tokio::select! {
            _ = &mut interrupt => return ExitCode::SUCCESS,
            c = reply.chunk() => c,
        };
        let chunk = match chunk {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                eprintln!("error: the log stream broke off: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            if buf.len() + piece.len() <= 8 * MAX_LINE {
                buf.extend_from_slice(piece);
            }
            if !piece.ends_with(b"\n") {
                continue;
            }
            let record = serde_json::from_slice::<LogRecord>(&buf);
            buf.clear();
            match record {
                Ok(LogRecord::Line {
                    task,
                    service,
                    container,
                    stream,
                    timestamp,
                    line,
                }) => {
                    let name = stream_name(service.as_deref().unwrap_or("task"), &task, &container);
                    let index = match names.iter().position(|n| n == &name) {
                        Some(i) => i,
                        None => {
                            names.push(name);
                            names.len() - 1
                        }
                    };
                    let width = names.iter().map(String::len).max().unwrap_or(0);
                    let line = LogLine {
                        output: if stream == "stderr" {
                            Output::Stderr
                        } else {
                            Output::Stdout
                        },
                        timestamp,
                        text: line,
                    };
                    let text = render_line(&names[index], width, index, &line, painted);
                    if std::io::stdout().lock().write_all(text.as_bytes()).is_err() {
                        return ExitCode::SUCCESS;
                    }
                }
                Ok(LogRecord::Error { message, .. }) => {
                    eprintln!("error: {message}");
                    failed = true;
                }
                Ok(LogRecord::End { .. }) | Err(_) => {}
            }
        }
    }
    if failed {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

/// `GET /v1/logs` asking for the target as a `service` or a `task`.
fn url(base: &str, by: &str, ask: &Ask) -> Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(&format!("{base}/v1/logs"))
        .map_err(|e| format!("--controller `{base}`: {e}"))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair(by, &ask.target);
        if let Some(c) = &ask.container {
            q.append_pair("container", c);
        }
        if ask.follow {
            q.append_pair("follow", "true");
        }
        if let Some(s) = ask.since {
            q.append_pair("since", &s.to_string());
        }
        if let Some(t) = ask.tail {
            q.append_pair("tail", &t.to_string());
        }
        if ask.timestamps {
            q.append_pair("timestamps", "true");
        }
    }
    Ok(url)
}
