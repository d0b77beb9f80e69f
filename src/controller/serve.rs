//! Serving the API: one accept loop for plain HTTP and TLS, bounded so that
//! clients that connect and then say nothing, or say it slowly, cannot hold
//! the controller's connections or memory.
//!
//! - At most `max_connections` connections are open; one above that is
//!   closed as soon as it is accepted (never queued), and logged at most
//!   once a second with a count.
//! - A TLS handshake must end within `handshake`.
//! - A request head must arrive whole within `header` of its first byte
//!   (of the connection's opening, for its first request).
//! - Between requests a keep-alive connection may stay idle for `idle`.
//!   A request being served is never cut for idleness: the agents' long
//!   poll holds a request for up to 30 s without a byte moving.
//! - A request body must be read whole within `body` of its head.
//!
//! Connections speak HTTP/1.1 (what the router's ALPN offers).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tower::ServiceExt;

use super::limits::LogGate;
use super::Controller;

/// The bounds of the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub handshake: Duration,
    pub header: Duration,
    pub idle: Duration,
    pub body: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            handshake: Duration::from_secs(10),
            header: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            body: Duration::from_secs(30),
        }
    }
}

/// How long a connection told to close may finish the response it is
/// writing (to a client that reads slowly) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Serve the API on `listener` until the process ends.
pub async fn serve(
    c: Arc<Controller>,
    listener: tokio::net::TcpListener,
    limits: Limits,
) -> std::io::Result<()> {
    accept_loop(super::http::router(c), listener, None, limits).await
}

/// Serve the API over TLS on `listener` until the process ends.
pub async fn serve_tls(
    c: Arc<Controller>,
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    limits: Limits,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    accept_loop(super::http::router(c), listener, Some(acceptor), limits).await
}

/// Log lines clients can cause, each at most once a second.
#[derive(Default)]
struct Gates {
    accept: LogGate,
    over_cap: LogGate,
    slow_head: LogGate,
    slow_body: LogGate,
    handshake: LogGate,
}

/// Accept connections for `app` and serve each on its own task, so a slow
/// or broken client holds up nobody else.
pub async fn accept_loop(
    app: Router,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
) -> std::io::Result<()> {
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let gates = Arc::new(Gates::default());
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors, typically: let some close.
                if let Some(n) = gates.accept.hit(Instant::now()) {
                    tracing::warn!("accept failed: {e} ({n} since the last report)");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            drop(tcp);
            if let Some(n) = gates.over_cap.hit(Instant::now()) {
                tracing::warn!(
                    %peer,
                    "closed {n} connection(s) at once (the last from {peer}): {} are open, the most --max-connections allows",
                    limits.max_connections
                );
            }
            continue;
        };
        let (app, tls, gates) = (app.clone(), tls.clone(), gates.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => connection(tcp, peer, app, limits, &gates).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => connection(s, peer, app, limits, &gates).await,
                        Ok(Err(e)) => {
                            if let Some(n) = gates.handshake.hit(Instant::now()) {
                                tracing::warn!(%peer, "TLS handshake with {peer} failed: {e} ({n} failed or timed out since the last report)");
                            }
                        }
                        Err(_) => {
                            if let Some(n) = gates.handshake.hit(Instant::now()) {
                                tracing::warn!(%peer, "TLS handshake with {peer} timed out after {:?} ({n} failed or timed out since the last report)", limits.handshake);
                            }
                        }
                    }
                }
            }
        });
    }
}

/// What a connection is doing, for its watchdog.
struct Activity {
    /// Requests being served.
    in_flight: u32,
    /// When the connection last became idle (opened, or a response ready).
    idle_since: Instant,
    /// When the first byte of the next request head came, while idle.
    head_since: Option<Instant>,
    /// No request served yet: the first head is due within `header`.
    fresh: bool,
}

struct Shared {
    activity: Mutex<Activity>,
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Activity> {
        self.activity.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read_some(&self) {
        let mut a = self.lock();
        if a.in_flight == 0 && a.head_since.is_none() {
            a.head_since = Some(Instant::now());
            drop(a);
            self.changed.notify_one();
        }
    }

    fn request_started(&self) {
        let mut a = self.lock();
        a.in_flight += 1;
        a.head_since = None;
        a.fresh = false;
        drop(a);
        self.changed.notify_one();
    }

    fn request_ended(&self) {
        let mut a = self.lock();
        a.in_flight = a.in_flight.saturating_sub(1);
        if a.in_flight == 0 {
            a.idle_since = Instant::now();
            a.head_since = None;
        }
        drop(a);
        self.changed.notify_one();
    }
}

/// Marks a request ended when dropped: also when its connection is.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// Why a connection was closed.
enum Cut {
    SlowHead,
    Idle,
}

/// Returns when the connection must be closed.
/// Longest a log upload's body may last: a day of following.
const LOG_UPLOAD_BODY: Duration = Duration::from_secs(24 * 3600);

/// `/v1/nodes/{name}/logs/{session}`.
fn is_log_upload(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    matches!(parts.as_slice(), ["", "v1", "nodes", _, "logs", _])
}

async fn watchdog(shared: &Shared, limits: Limits) -> Cut {
    loop {
        let deadline = {
            let a = shared.lock();
            if a.in_flight > 0 {
                None
            } else if let Some(t) = a.head_since {
                Some((t + limits.header, Cut::SlowHead))
            } else if a.fresh {
                Some((a.idle_since + limits.header, Cut::SlowHead))
            } else {
                Some((a.idle_since + limits.idle, Cut::Idle))
            }
        };
        match deadline {
            None => shared.changed.notified().await,
            Some((at, cut)) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {
                        // Recheck: a change may have raced the timer.
                        let a = shared.lock();
                        let still = a.in_flight == 0
                            && match cut {
                                Cut::SlowHead => true,
                                Cut::Idle => a.head_since.is_none(),
                            }
                            && Instant::now() >= at;
                        if still {
                            return cut;
                        }
                    }
                    () = shared.changed.notified() => {}
                }
            }
        }
    }
}

/// A connection's stream, reporting reads to its watchdog.
struct Watched<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.shared.read_some();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request body that fails once `deadline` has passed before its end.
struct Timed {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
    peer: SocketAddr,
    gates: Arc<Gates>,
}

impl Body for Timed {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            let peer = this.peer;
            if let Some(n) = this.gates.slow_body.hit(Instant::now()) {
                tracing::warn!(%peer, "cut off a request body from {peer}: not sent whole within {:?} ({n} since the last report)", this.limit);
            }
            return Poll::Ready(Some(Err(format!(
                "request body not sent whole within {:?}",
                this.limit
            )
            .into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serve one connection until the client closes it or a bound is crossed.
async fn connection<S>(stream: S, peer: SocketAddr, app: Router, limits: Limits, gates: &Arc<Gates>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::new(Shared {
        activity: Mutex::new(Activity {
            in_flight: 0,
            idle_since: Instant::now(),
            head_since: None,
            fresh: true,
        }),
        changed: Notify::new(),
    });
    let io = hyper_util::rt::TokioIo::new(Watched {
        inner: stream,
        shared: shared.clone(),
    });
    let (svc_shared, svc_gates) = (shared.clone(), gates.clone());
    let svc = hyper::service::service_fn(move |req: axum::http::Request<Incoming>| {
        let (app, gates) = (app.clone(), svc_gates.clone());
        svc_shared.request_started();
        let in_flight = InFlight(svc_shared.clone());
        async move {
            let _in_flight = in_flight;
            let (parts, body) = req.into_parts();
            // A node's log upload is a body that lasts as long as a reader
            // follows; only the node's own credential reaches it.
            let limit = if is_log_upload(parts.uri.path()) {
                LOG_UPLOAD_BODY
            } else {
                limits.body
            };
            let body = Timed {
                inner: body,
                deadline: Box::pin(tokio::time::sleep(limit)),
                limit,
                peer,
                gates,
            };
            let mut req = axum::http::Request::from_parts(parts, axum::body::Body::new(body));
            req.extensions_mut().insert(ConnectInfo(peer));
            app.oneshot(req).await
        }
    });
    // hyper's own header timeout is off: it also runs while a keep-alive
    // connection waits for its next request, which is the idle bound here.
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .header_read_timeout(None)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    let cut = tokio::select! {
        _ = conn.as_mut() => return,
        cut = watchdog(&shared, limits) => cut,
    };
    match cut {
        Cut::Idle => {
            tracing::debug!(%peer, "closing the idle connection of {peer}");
            // Closes at once between requests; lets a response being
            // written to a slow reader finish, for a while.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
        }
        Cut::SlowHead => {
            if let Some(n) = gates.slow_head.hit(Instant::now()) {
                tracing::warn!(%peer, "closed the connection of {peer}: no whole request head within {:?} ({n} since the last report)", limits.header);
            }
        }
    }
}
