//! The controller's event log: every event is logged, kept in the store
//! (the newest [`store::EVENTS_KEPT`]), shown by `status`, and streamed to
//! `GET /v1/events` readers as JSON lines, as it happens with `follow`.
//!
//! A reader resumes with `after` (the last `seq` it saw). One that falls
//! more than the kept events behind misses the oldest: memory stays
//! bounded whatever the readers do.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::watch;

use super::http::{error, Shared};
use super::{guard, store, Controller};
use crate::report::EventFilter as Filter;
use crate::wire::{EventLine, EventRecord};

/// Lines sent per chunk at most, so a long backlog is sent in parts.
const CHUNK: usize = 256;
/// An empty line this often while following, so a reader (and any proxy
/// between) sees the stream alive and a gone reader is noticed.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The events kept in memory, newest last, and the sequence number the
/// next one gets (published, so followers wake when it moves).
pub(super) struct Events {
    events: VecDeque<(u64, EventRecord)>,
    next: watch::Sender<u64>,
}

impl Events {
    pub(super) fn new(loaded: Vec<(u64, EventRecord)>) -> Events {
        let next = loaded.last().map(|(k, _)| k + 1).unwrap_or(0);
        Events {
            events: loaded.into(),
            next: watch::Sender::new(next),
        }
    }

    /// The newest `n` events, newest first (for `status`).
    pub(super) fn newest(&self, n: usize) -> Vec<EventRecord> {
        self.events
            .iter()
            .rev()
            .take(n)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Events from sequence number `from` on that pass `filter`, at most
    /// `limit`; and the sequence number to continue from.
    fn from(&self, from: u64, filter: &Filter, limit: usize) -> (Vec<EventLine>, u64) {
        let mut out = Vec::new();
        let start = from.max(self.events.front().map_or(from, |(k, _)| *k));
        let mut next = start;
        for (seq, e) in self.events.iter().filter(|(k, _)| *k >= start) {
            next = seq + 1;
            if filter.matches(e) {
                out.push(EventLine {
                    seq: *seq,
                    event: e.clone(),
                });
                if out.len() == limit {
                    break;
                }
            }
        }
        (out, next)
    }
}

impl Controller {
    /// Record an event about the controller or a node, and log it.
    pub fn event(&self, message: String) {
        self.record(None, message)
    }

    /// Record an event about service `key` (`cluster/name`), and log it.
    pub fn service_event(&self, key: &str, message: String) {
        tracing::info_span!("service", name = %key)
            .in_scope(|| self.record(Some(key.to_string()), message))
    }

    fn record(&self, service: Option<String>, message: String) {
        // Messages never hold secret values or tokens: they are built from
        // names, ids and the plan, which holds fingerprints only.
        tracing::info!(target: "reconcile::event", "{message}");
        let mut s = guard(&self.events);
        let seq = *s.next.borrow();
        let e = EventRecord {
            at: crate::clock::unix_now(),
            message,
            service,
        };
        if let Err(err) = self.db.push_event(seq, &e) {
            tracing::error!("saving an event: {err}");
        }
        s.events.push_back((seq, e));
        while s.events.len() as u64 > store::EVENTS_KEPT {
            s.events.pop_front();
        }
        s.next.send_replace(seq + 1);
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct EventsQuery {
    /// Only events after this sequence number (the last one seen).
    after: Option<u64>,
    /// Only events at or after this time (Unix seconds).
    since: Option<i64>,
    /// Only events about this service (`cluster/name`, or a name).
    service: Option<String>,
    /// Keep the stream open and send events as they happen.
    #[serde(default)]
    follow: bool,
}

/// `GET /v1/events`: the kept events that match, as JSON lines, then (with
/// `follow`) each new one as it is recorded.
pub(super) async fn stream(State(c): Shared, Query(q): Query<EventsQuery>) -> Response {
    if let Some(s) = &q.service {
        if s.is_empty() || s.len() > 512 {
            return error(StatusCode::BAD_REQUEST, "`service` is 1 to 512 characters");
        }
    }
    let filter = Filter {
        service: q.service,
        since: q.since,
    };
    let (from, rx) = {
        let s = guard(&c.events);
        (q.after.map_or(0, |a| a + 1), s.next.subscribe())
    };
    let state = Reader {
        c,
        filter,
        from,
        rx,
        follow: q.follow,
    };
    let body = futures_util::stream::unfold(Some(state), |state| async move {
        let mut r = state?;
        let chunk = r.next_chunk().await?;
        Some((Ok::<_, Infallible>(chunk), Some(r)))
    });
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// One reader's place in the log.
struct Reader {
    c: Arc<Controller>,
    filter: Filter,
    from: u64,
    rx: watch::Receiver<u64>,
    follow: bool,
}

impl Reader {
    /// The next bytes to send: matching events, a keep-alive line, or None
    /// at the end (the backlog sent without `follow`, or the controller
    /// gone).
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            self.rx.mark_unchanged();
            let (lines, next) = guard(&self.c.events).from(self.from, &self.filter, CHUNK);
            self.from = next;
            if !lines.is_empty() {
                let mut out = Vec::new();
                for l in &lines {
                    // An EventLine always serialises.
                    serde_json::to_writer(&mut out, l).ok()?;
                    out.push(b'\n');
                }
                return Some(out.into());
            }
            if !self.follow {
                return None;
            }
            match tokio::time::timeout(KEEPALIVE, self.rx.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return None,
                Err(_) => return Some(Bytes::from_static(b"\n")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(at: i64, service: Option<&str>) -> EventRecord {
        EventRecord {
            at,
            message: format!("m{at}"),
            service: service.map(str::to_string),
        }
    }

    #[test]
    fn a_filter_names_a_service_by_key_or_by_name() {
        let f = |s: &str| Filter {
            service: Some(s.into()),
            since: None,
        };
        assert!(f("prod/web").matches(&ev(1, Some("prod/web"))));
        assert!(f("web").matches(&ev(1, Some("prod/web"))));
        assert!(!f("dev/web").matches(&ev(1, Some("prod/web"))));
        assert!(!f("we").matches(&ev(1, Some("prod/web"))));
        assert!(!f("web").matches(&ev(1, None)));
        assert!(Filter::default().matches(&ev(1, None)));
        let since = Filter {
            service: None,
            since: Some(5),
        };
        assert!(!since.matches(&ev(4, None)));
        assert!(since.matches(&ev(5, None)));
    }

    #[test]
    fn a_reader_gets_each_event_once_in_order_and_resumes_after_a_gap() {
        let mut e = Events::new(vec![]);
        for i in 0..10u64 {
            let svc = if i % 2 == 0 { Some("c/a") } else { None };
            e.events.push_back((i, ev(i as i64, svc)));
        }
        let f = Filter {
            service: Some("a".into()),
            since: None,
        };
        let (lines, next) = e.from(0, &f, 2);
        assert_eq!(lines.iter().map(|l| l.seq).collect::<Vec<_>>(), vec![0, 2]);
        let (lines, next) = e.from(next, &f, 100);
        assert_eq!(
            lines.iter().map(|l| l.seq).collect::<Vec<_>>(),
            vec![4, 6, 8]
        );
        assert_eq!(next, 10);
        assert!(e.from(next, &f, 100).0.is_empty());
        // Events dropped from memory: the reader continues at the oldest kept.
        e.events.drain(..5);
        let (lines, _) = e.from(1, &Filter::default(), 100);
        assert_eq!(lines.first().map(|l| l.seq), Some(5));
    }
}
