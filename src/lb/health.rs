//! Active target health checks with ELB semantics: consecutive passes or
//! failures move a target between Initial, Healthy and Unhealthy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{lock, Protocol};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    /// Task id.
    pub id: String,
    pub addr: SocketAddr,
    pub protocol: Protocol,
    /// HTTP only: the path to GET.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// HTTP only: status codes that pass, e.g. "200", "200,204", "200-399".
    pub matcher: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetState {
    Initial,
    Healthy,
    Unhealthy,
}

/// Status codes a check accepts: a union of inclusive ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matcher(Vec<(u16, u16)>);

impl Matcher {
    pub fn matches(&self, status: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

/// Parses "200", "200,204" or "200-399" (and combinations such as
/// "200,300-302").
pub fn parse_matcher(s: &str) -> Result<Matcher, String> {
    let code = |c: &str| -> Result<u16, String> {
        let c = c.trim();
        match c.parse::<u16>() {
            Ok(n) if (100..=599).contains(&n) => Ok(n),
            _ => Err(format!("{c:?} is not an HTTP status code (100-599)")),
        }
    };
    let mut ranges = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(format!("empty status code in matcher {s:?}"));
        }
        let range = match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (code(lo)?, code(hi)?);
                if lo > hi {
                    return Err(format!("range {part:?} runs backwards"));
                }
                (lo, hi)
            }
            None => {
                let c = code(part)?;
                (c, c)
            }
        };
        ranges.push(range);
    }
    Ok(Matcher(ranges))
}

struct Entry {
    spec: CheckSpec,
    generation: u64,
    state: TargetState,
    passes: u32,
    failures: u32,
    task: JoinHandle<()>,
}

struct Inner {
    entries: Mutex<BTreeMap<String, Entry>>,
    generation: Mutex<u64>,
    changed: watch::Sender<u64>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for e in lock(&self.entries).values() {
            e.task.abort();
        }
    }
}

impl Inner {
    /// Applies one check result; returns nothing if the entry was replaced
    /// meanwhile (a stale loop's result must not count).
    fn record(&self, id: &str, generation: u64, passed: bool) {
        let mut entries = lock(&self.entries);
        let Some(e) = entries.get_mut(id) else { return };
        if e.generation != generation {
            return;
        }
        if passed {
            e.passes = e.passes.saturating_add(1);
            e.failures = 0;
        } else {
            e.failures = e.failures.saturating_add(1);
            e.passes = 0;
        }
        let next = match e.state {
            TargetState::Initial | TargetState::Unhealthy
                if passed && e.passes >= e.spec.healthy_threshold.max(1) =>
            {
                TargetState::Healthy
            }
            TargetState::Initial | TargetState::Healthy
                if !passed && e.failures >= e.spec.unhealthy_threshold.max(1) =>
            {
                TargetState::Unhealthy
            }
            s => s,
        };
        if next != e.state {
            tracing::info!(target_id = %id, addr = %e.spec.addr, from = ?e.state, to = ?next, "target health changed");
            e.state = next;
            drop(entries);
            self.changed.send_modify(|v| *v = v.wrapping_add(1));
        }
    }
}

/// Runs one loop per target. Cheap to clone; dropping the last handle stops
/// every loop.
#[derive(Clone)]
pub struct Checker {
    inner: Arc<Inner>,
}

impl Default for Checker {
    fn default() -> Self {
        Checker::new()
    }
}

impl Checker {
    pub fn new() -> Checker {
        Checker {
            inner: Arc::new(Inner {
                entries: Mutex::new(BTreeMap::new()),
                generation: Mutex::new(0),
                changed: watch::channel(0).0,
            }),
        }
    }

    /// Checks exactly these targets: starts loops for new ones, stops removed
    /// ones, restarts changed ones (back to Initial). Unchanged specs keep
    /// their state. Must be called within a tokio runtime.
    pub fn set(&self, specs: Vec<CheckSpec>) {
        let mut wanted: BTreeMap<String, CheckSpec> = BTreeMap::new();
        for s in specs {
            wanted.insert(s.id.clone(), s);
        }
        let mut changed = false;
        let mut entries = lock(&self.inner.entries);
        entries.retain(|id, e| {
            let keep = wanted.get(id) == Some(&e.spec);
            if !keep {
                e.task.abort();
                changed |= e.state != TargetState::Initial || !wanted.contains_key(id);
            }
            keep
        });
        for (id, spec) in wanted {
            if entries.contains_key(&id) {
                continue;
            }
            let generation = {
                let mut g = lock(&self.inner.generation);
                *g += 1;
                *g
            };
            let task = tokio::spawn(run(Arc::downgrade(&self.inner), spec.clone(), generation));
            entries.insert(
                id,
                Entry {
                    spec,
                    generation,
                    state: TargetState::Initial,
                    passes: 0,
                    failures: 0,
                    task,
                },
            );
            changed = true;
        }
        drop(entries);
        if changed {
            self.inner.changed.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    pub fn states(&self) -> BTreeMap<String, TargetState> {
        lock(&self.inner.entries)
            .iter()
            .map(|(id, e)| (id.clone(), e.state))
            .collect()
    }

    /// Bumps on any state change (and on targets added or removed).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }
}

async fn run(inner: Weak<Inner>, spec: CheckSpec, generation: u64) {
    let matcher = match parse_matcher(&spec.matcher) {
        Ok(m) => Some(m),
        Err(e) if spec.protocol == Protocol::Http => {
            tracing::warn!(target_id = %spec.id, error = %e, "invalid health check matcher; every check fails");
            None
        }
        Err(_) => None,
    };
    // First check right away: a new task should not wait an interval to
    // become routable.
    let mut tick = tokio::time::interval(spec.interval.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let passed = match spec.protocol {
            Protocol::Tcp => check_tcp(spec.addr, spec.timeout).await,
            Protocol::Http => match &matcher {
                Some(m) => check_http(&spec, m).await,
                None => false,
            },
        };
        let Some(inner) = inner.upgrade() else { return };
        inner.record(&spec.id, generation, passed);
    }
}

async fn check_tcp(addr: SocketAddr, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

async fn check_http(spec: &CheckSpec, matcher: &Matcher) -> bool {
    let status = tokio::time::timeout(spec.timeout, async {
        let stream = TcpStream::connect(spec.addr).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        let path = if spec.path.starts_with('/') {
            spec.path.clone()
        } else {
            format!("/{}", spec.path)
        };
        let req = Request::get(path)
            .header(header::HOST, spec.addr.to_string())
            .header(header::USER_AGENT, "reconcile-health-check")
            .header(header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .ok()?;
        let send = sender.send_request(req);
        tokio::pin!(send);
        // The connection may end (we asked for close) in the same poll that
        // delivers the response, so the response is still read after it.
        let resp = tokio::select! {
            r = &mut send => r,
            _ = conn => send.await,
        };
        resp.ok().map(|r| r.status().as_u16())
    })
    .await;
    matches!(status, Ok(Some(s)) if matcher.matches(s))
}
