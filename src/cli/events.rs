//! `reconcile events`: what happened, oldest first, and with `--follow`
//! what happens next. From a controller its event log (`GET /v1/events`,
//! streamed); standalone the services' events in the source's store,
//! read again every second while following.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::args::{source_id, Format, Target};
use super::remote::Client;
use super::run::{block_on, failure, usage};
use crate::report::{stored_events, EventFilter};
use crate::store::FileStore;
use crate::wire::{EventLine, EventRecord};

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// The source whose events to show (standalone).
    #[arg(default_value = ".")]
    source: PathBuf,
    /// Keep running and show events as they happen, until Ctrl-C.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Only events about this service: `name`, or `cluster/name`.
    #[arg(long, value_name = "SERVICE")]
    service: Option<String>,
    /// Only events since then: a duration before now (`90s`, `10m`, `2h`,
    /// `1d`, `1h30m`), an RFC 3339 time or unix seconds.
    #[arg(long, value_name = "DURATION|TIME")]
    since: Option<String>,
    /// Output format: text lines, or JSON lines (one event per line).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    at: Target,
}

pub fn events_cmd(a: EventsArgs) -> ExitCode {
    let since = match a.since.as_deref() {
        Some(s) => match crate::clock::parse_since(s, crate::clock::unix_now()) {
            Ok(t) => Some(t),
            Err(e) => return usage(format!("--since {e}")),
        },
        None => None,
    };
    let filter = EventFilter {
        service: a.service.clone(),
        since,
    };
    let client = match a.at.remote.controller {
        Some(_) => match Client::new(&a.at.remote) {
            Ok(c) => Some(c),
            Err(code) => return code,
        },
        None => None,
    };
    let result = block_on(async {
        let run = async {
            if let Some(client) = &client {
                remote(&a, client, &filter).await
            } else {
                local(&a, filter).await
            }
        };
        if !a.follow {
            return run.await;
        }
        tokio::select! {
            r = run => r,
            // Ctrl-C is how a follow ends: not an error.
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => usage(e),
        Err(Failure::Failed(e)) => failure(e),
    }
}

enum Failure {
    Usage(String),
    Failed(String),
}

/// Print one event; a closed stdout (`| head`) ends the command.
fn show(format: Format, e: &EventRecord, seq: Option<u64>) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    let written = match format {
        Format::Json => {
            let line = match seq {
                Some(seq) => serde_json::to_string(&EventLine {
                    seq,
                    event: e.clone(),
                }),
                None => serde_json::to_string(e),
            };
            writeln!(out, "{}", line.unwrap_or_default())
        }
        Format::Text => {
            let now = crate::clock::unix_now();
            writeln!(
                out,
                "{:<width$}  {}",
                crate::clock::readable(e.at, now),
                e.message,
                width = crate::clock::readable_width()
            )
        }
    };
    written
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Failed(format!("writing to stdout: {e}")))
}

async fn remote(a: &EventsArgs, client: &Client, filter: &EventFilter) -> Result<(), Failure> {
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(s) = &filter.service {
        query.push(("service", s.clone()));
    }
    if let Some(t) = filter.since {
        query.push(("since", t.to_string()));
    }
    if a.follow {
        query.push(("follow", "true".into()));
    }
    client
        .lines("/v1/events", &query, |l| {
            let e: EventLine = serde_json::from_slice(l)
                .map_err(|e| format!("unexpected event from the controller: {e}"))?;
            show(a.format, &e.event, Some(e.seq)).map_err(|f| match f {
                Failure::Usage(m) | Failure::Failed(m) => m,
            })
        })
        .await
        .map_err(Failure::Failed)
}

async fn local(a: &EventsArgs, mut filter: EventFilter) -> Result<(), Failure> {
    let (id, _) = source_id(&a.source, &a.at.git, &a.at.state).map_err(Failure::Usage)?;
    let path = a.at.state.dir().store(&id);
    let read = |p: &std::path::Path| FileStore::peek(p).map_err(|e| Failure::Failed(e.to_string()));
    let stored = read(&path)?;
    if let Some(s) = &filter.service {
        // A name resolves to its key, or the error says what there is.
        let key = crate::apply::find_service(&stored, s).map_err(Failure::Failed)?;
        filter.service = Some(key);
    }
    // What was shown in the newest second shown, so a re-read shows each
    // event once (events of one second keep their order).
    // Counted, since one second may hold the same event twice.
    let mut last = i64::MIN;
    let mut shown: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut stored = stored;
    loop {
        let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
        for e in stored_events(&stored, &filter) {
            if e.at < last {
                continue;
            }
            if e.at > last {
                last = e.at;
                shown.clear();
                seen.clear();
            }
            let id = (e.service.clone().unwrap_or_default(), e.message.clone());
            let n = seen.entry(id.clone()).or_default();
            *n += 1;
            let done = shown.entry(id).or_default();
            if *n <= *done {
                continue;
            }
            *done = *n;
            show(a.format, &e, None)?;
        }
        if !a.follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        stored = read(&path)?;
    }
}
