//! Load-balancer data plane: one listener port per service on every node,
//! balancing HTTP requests or TCP connections over the service's routable
//! targets. The agent/controller decide which targets are routable (health,
//! draining) and call [`Listeners::set`]; this module only forwards and
//! counts, so that draining can wait on [`Listeners::inflight`].

pub mod health;
mod http;
mod tcp;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Tcp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Algorithm {
    #[default]
    RoundRobin,
    LeastOutstanding,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Task id: the key of `inflight()` and `served()`.
    pub id: String,
    pub addr: SocketAddr,
}

#[derive(Clone, Debug)]
pub struct ListenerSpec {
    pub port: u16,
    pub protocol: Protocol,
    pub algorithm: Algorithm,
    /// The routable targets only: healthy and not draining.
    pub targets: Vec<Target>,
    /// For logs, e.g. "cluster/service".
    pub name: String,
}

/// Per-listener cap on client connections, so a flood cannot exhaust fds.
const MAX_CONNECTIONS: usize = 10_000;
/// A target that does not accept within this is treated as down. Longer
/// than the kernel's first SYN retransmission (1 s): a busy target whose
/// accept queue overflowed drops the first SYN and accepts the second.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a target whose connect failed is skipped (passive ejection).
const EJECT_FOR: Duration = Duration::from_secs(5);
/// At most this many targets are tried for one request/connection.
const MAX_TRIES: usize = 3;

/// Milliseconds since a process-wide origin, so ejection deadlines fit in an
/// atomic.
fn now_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Counters per task id, shared by every listener routing to that task: the
/// controller drains by task, not by listener.
#[derive(Default)]
struct Counters {
    inflight: AtomicU64,
    served: AtomicU64,
}

/// A target as one listener sees it. Kept across `set` calls while id and
/// address stay the same, so its outstanding count, ejection and idle
/// connections survive a target-set swap.
struct Backend {
    id: String,
    addr: SocketAddr,
    counters: Arc<Counters>,
    /// Requests/connections in flight from this listener (least-outstanding).
    outstanding: AtomicU64,
    ejected_until: AtomicU64,
    /// Set once the target left the listener's set: its connections must not
    /// go back to the idle pool, so nothing new is sent to it.
    removed: AtomicBool,
    idle: Mutex<Vec<http::Idle>>,
}

impl Backend {
    fn ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    fn eject(&self) {
        self.ejected_until
            .store(now_ms() + EJECT_FOR.as_millis() as u64, Ordering::Relaxed);
    }

    fn retire(&self) {
        self.removed.store(true, Ordering::Release);
        // Dropping idle senders closes their connections.
        lock(&self.idle).clear();
    }
}

/// Counts one request/connection against a target from its selection until
/// dropped (for HTTP: when the response body has been handed to the client).
struct Lease {
    backend: Arc<Backend>,
}

impl Lease {
    fn new(backend: Arc<Backend>) -> Lease {
        backend.outstanding.fetch_add(1, Ordering::Relaxed);
        backend.counters.inflight.fetch_add(1, Ordering::AcqRel);
        Lease { backend }
    }

    fn sent(&self) {
        self.backend.counters.served.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.backend.outstanding.fetch_sub(1, Ordering::Relaxed);
        self.backend
            .counters
            .inflight
            .fetch_sub(1, Ordering::AcqRel);
    }
}

struct Routing {
    algorithm: Algorithm,
    backends: Vec<Arc<Backend>>,
}

/// State of one running listener, shared by its accept loop and connections.
struct Shared {
    name: String,
    port: u16,
    routing: RwLock<Arc<Routing>>,
    next: AtomicUsize,
    shutdown: watch::Sender<bool>,
    conns: Arc<Semaphore>,
}

impl Shared {
    fn routing(&self) -> Arc<Routing> {
        self.routing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Picks a target not yet tried; ejected targets only when nothing else
    /// is left, so a single (or all-failing) target is still attempted.
    fn pick(&self, routing: &Routing, tried: &[usize]) -> Option<usize> {
        let n = routing.backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = now_ms();
        let order = (0..n)
            .map(|i| (start + i) % n)
            .filter(|i| !tried.contains(i));
        let choose = |skip_ejected: bool| -> Option<usize> {
            let mut eligible = order
                .clone()
                .filter(|&i| !(skip_ejected && routing.backends[i].ejected(now)));
            match routing.algorithm {
                Algorithm::RoundRobin => eligible.next(),
                // Ties go to the rotation order so idle targets share load.
                Algorithm::LeastOutstanding => eligible
                    .min_by_key(|&i| routing.backends[i].outstanding.load(Ordering::Relaxed)),
            }
        };
        choose(true).or_else(|| choose(false))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Running {
    protocol: Protocol,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Inner {
    bind: IpAddr,
    counters: Mutex<HashMap<String, Arc<Counters>>>,
    running: tokio::sync::Mutex<HashMap<u16, Running>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for r in self.running.get_mut().values() {
            r.shared.shutdown.send_replace(true);
        }
    }
}

/// Handle on this node's listeners. Cheap to clone; dropping the last handle
/// closes every listener (in-flight requests still finish).
#[derive(Clone)]
pub struct Listeners {
    inner: Arc<Inner>,
}

impl Listeners {
    pub fn new(bind: IpAddr) -> Listeners {
        Listeners {
            inner: Arc::new(Inner {
                bind,
                counters: Mutex::new(HashMap::new()),
                running: tokio::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Reconcile to exactly these listeners: bind new ports, close removed
    /// ones (their in-flight requests finish), swap target sets atomically.
    /// A target missing from the new set gets no new requests/connections;
    /// its in-flight ones run to completion. Returns per-listener bind errors
    /// (port in use etc.) without failing the others. Must be called within
    /// a tokio runtime: listeners run on it.
    pub async fn set(&self, specs: Vec<ListenerSpec>) -> Vec<(u16, std::io::Error)> {
        let mut errors = Vec::new();
        let mut wanted: BTreeMap<u16, ListenerSpec> = BTreeMap::new();
        for spec in specs {
            let port = spec.port;
            if wanted.insert(port, spec).is_some() {
                errors.push((
                    port,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "port given to more than one listener; the last one is used",
                    ),
                ));
            }
        }
        let mut running = self.inner.running.lock().await;

        // Close first, so a port whose protocol changed can be bound again.
        let closing: Vec<u16> = running
            .iter()
            .filter(|(port, r)| wanted.get(port).is_none_or(|s| s.protocol != r.protocol))
            .map(|(port, _)| *port)
            .collect();
        for port in closing {
            if let Some(r) = running.remove(&port) {
                tracing::info!(listener = %r.shared.name, port, "closing listener");
                r.shared.shutdown.send_replace(true);
                for b in &r.shared.routing().backends {
                    b.retire();
                }
                // The accept loop drops the socket when it returns.
                let _ = r.task.await;
            }
        }

        for (port, spec) in wanted {
            if let Some(r) = running.get(&port) {
                self.update(&r.shared, spec);
                continue;
            }
            let listener = match bind(SocketAddr::new(self.inner.bind, port)) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(listener = %spec.name, port, error = %e, "cannot bind listener");
                    errors.push((port, e));
                    continue;
                }
            };
            let (shutdown, _) = watch::channel(false);
            let shared = Arc::new(Shared {
                name: spec.name.clone(),
                port,
                routing: RwLock::new(Arc::new(Routing {
                    algorithm: spec.algorithm,
                    backends: Vec::new(),
                })),
                next: AtomicUsize::new(0),
                shutdown,
                conns: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            });
            let protocol = spec.protocol;
            self.update(&shared, spec);
            tracing::info!(listener = %shared.name, port, ?protocol, "listening");
            let task = tokio::spawn(accept_loop(listener, shared.clone(), protocol));
            running.insert(
                port,
                Running {
                    protocol,
                    shared,
                    task,
                },
            );
        }
        // A target no listener routes to and no request holds is forgotten:
        // counters stay bounded by what runs, not by every task ever seen.
        lock(&self.inner.counters).retain(|_, c| Arc::strong_count(c) > 1);
        errors
    }

    /// Swaps a listener's target set, reusing backends whose id and address
    /// are unchanged and retiring the rest.
    fn update(&self, shared: &Shared, spec: ListenerSpec) {
        let old = shared.routing();
        let mut backends = Vec::with_capacity(spec.targets.len());
        for t in spec.targets {
            if backends
                .iter()
                .any(|b: &Arc<Backend>| b.id == t.id && b.addr == t.addr)
            {
                continue;
            }
            let backend = match old
                .backends
                .iter()
                .find(|b| b.id == t.id && b.addr == t.addr)
            {
                Some(b) => b.clone(),
                None => {
                    let counters = lock(&self.inner.counters)
                        .entry(t.id.clone())
                        .or_default()
                        .clone();
                    Arc::new(Backend {
                        id: t.id,
                        addr: t.addr,
                        counters,
                        outstanding: AtomicU64::new(0),
                        ejected_until: AtomicU64::new(0),
                        removed: AtomicBool::new(false),
                        idle: Mutex::new(Vec::new()),
                    })
                }
            };
            backends.push(backend);
        }
        for b in &old.backends {
            if !backends.iter().any(|n| Arc::ptr_eq(n, b)) {
                tracing::info!(listener = %shared.name, target = %b.id, addr = %b.addr, "target removed");
                b.retire();
            }
        }
        *shared.routing.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Routing {
            algorithm: spec.algorithm,
            backends,
        });
    }

    /// Requests (HTTP) or connections (TCP) in flight per target id,
    /// including targets no longer in any set (draining). Targets with 0 are
    /// omitted.
    pub fn inflight(&self) -> BTreeMap<String, u64> {
        lock(&self.inner.counters)
            .iter()
            .map(|(id, c)| (id.clone(), c.inflight.load(Ordering::Acquire)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Total requests/connections sent to each target since it appeared
    /// (monotonic while it is routed to or has requests in flight).
    pub fn served(&self) -> BTreeMap<String, u64> {
        lock(&self.inner.counters)
            .iter()
            .map(|(id, c)| (id.clone(), c.served.load(Ordering::Relaxed)))
            .collect()
    }
}

/// Resolves once the listener is closed (or its owner is gone).
async fn closed(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|v| *v).await;
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Lets a listener come back on its port while old connections are in
    // TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, protocol: Protocol) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let permit = tokio::select! {
            p = shared.conns.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = closed(&mut shutdown) => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    // Usually fd exhaustion: back off instead of spinning.
                    tracing::warn!(listener = %shared.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = closed(&mut shutdown) => return,
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        match protocol {
            Protocol::Http => tokio::spawn(http::serve(stream, peer, shared, permit)),
            Protocol::Tcp => tokio::spawn(tcp::serve(stream, peer, shared, permit)),
        };
    }
}
