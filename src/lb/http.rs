//! HTTP/1.1 listener: hyper server to clients, pooled keep-alive hyper
//! client connections to targets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::{Either, Empty};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use super::{lock, Backend, Lease, Shared, CONNECT_TIMEOUT, MAX_TRIES};

/// What goes to a target: the client's body as it streams in, or nothing
/// for a request without one, which can then be sent again.
type ReqBody = Either<Incoming, Empty<Bytes>>;

/// A client that sends no complete header block within this is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle target connections older than this are not reused (targets commonly
/// close idle keep-alive connections after 60 s or less).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_IDLE_PER_TARGET: usize = 512;

/// An idle keep-alive connection to a target.
pub(super) struct Idle {
    sender: SendRequest<ReqBody>,
    since: Instant,
}

impl Backend {
    /// Most recently used idle connection that is still usable.
    async fn checkout(&self) -> Option<SendRequest<ReqBody>> {
        loop {
            let idle = lock(&self.idle).pop()?;
            if idle.since.elapsed() > IDLE_TIMEOUT || idle.sender.is_closed() {
                continue;
            }
            let mut sender = idle.sender;
            if sender.is_ready() {
                return Some(sender);
            }
            // Checked in as its response ended; its connection task may not
            // have seen the end yet.
            if let Ok(Ok(())) = tokio::time::timeout(CONNECT_TIMEOUT, sender.ready()).await {
                return Some(sender);
            }
        }
    }

    fn checkin(&self, sender: SendRequest<ReqBody>) {
        if self.removed.load(Ordering::Acquire) || sender.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE_PER_TARGET {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> std::io::Result<SendRequest<ReqBody>> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "target connection ended");
            }
        });
        Ok(sender)
    }
}

pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let svc_shared = shared.clone();
    let svc = hyper::service::service_fn(move |req| {
        let shared = svc_shared.clone();
        async move { Ok::<_, Infallible>(proxy(req, peer, &shared).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = super::closed(&mut shutdown) => {
            // Listener closed: finish the request in flight, then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(listener = %shared.name, %peer, error = %e, "client connection ended");
    }
}

enum SendError {
    /// Nothing of the request reached the target: safe to try another.
    NotSent(Box<Request<ReqBody>>, std::io::Error),
    /// The target may have seen (part of) the request: retried only when
    /// it can be sent again (idempotent, no body).
    Sent(hyper::Error),
}

async fn proxy(req: Request<Incoming>, peer: SocketAddr, shared: &Shared) -> Response<ProxyBody> {
    let routing = shared.routing();
    if routing.backends.is_empty() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "no healthy targets\n");
    }
    let (parts, body) = prepare(req, peer, shared.port).into_parts();
    // An idempotent request without a body can be sent again when its
    // target fails before answering (a node that died, a keep-alive
    // connection it reset): the client never sees that failure. Others
    // are retried only when none of them was sent.
    let again = (idempotent(&parts.method) && body.is_end_stream()).then(|| parts.clone());
    let mut req = match &again {
        Some(_) => Request::from_parts(parts, Either::Right(Empty::new())),
        None => Request::from_parts(parts, Either::Left(body)),
    };
    let mut tried = [usize::MAX; MAX_TRIES];
    let tries = routing.backends.len().min(MAX_TRIES);
    for attempt in 0..tries {
        let Some(i) = shared.pick(&routing, &tried[..attempt]) else {
            break;
        };
        tried[attempt] = i;
        let backend = &routing.backends[i];
        let lease = Lease::new(backend.clone());
        match send(backend, req, &lease).await {
            Ok((resp, sender)) => return respond(resp, sender, lease),
            Err(SendError::NotSent(r, e)) => {
                tracing::warn!(listener = %shared.name, target = %backend.id, addr = %backend.addr, error = %e, "target unreachable, trying another");
                backend.eject();
                req = *r;
            }
            Err(SendError::Sent(e)) => match &again {
                Some(parts) if attempt + 1 < tries => {
                    tracing::warn!(listener = %shared.name, target = %backend.id, addr = %backend.addr, error = %e, "target failed before answering, sending the request to another");
                    backend.eject();
                    req = Request::from_parts(parts.clone(), Either::Right(Empty::new()));
                }
                _ => {
                    tracing::warn!(listener = %shared.name, target = %backend.id, addr = %backend.addr, error = %e, "target failed");
                    return text(StatusCode::BAD_GATEWAY, "target failed\n");
                }
            },
        }
    }
    text(StatusCode::BAD_GATEWAY, "no target reachable\n")
}

/// RFC 9110 9.2.2: methods whose repetition has the effect of one.
fn idempotent(m: &hyper::Method) -> bool {
    use hyper::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(m)
}

async fn send(
    backend: &Backend,
    mut req: Request<ReqBody>,
    lease: &Lease,
) -> Result<(Response<Incoming>, Option<SendRequest<ReqBody>>), SendError> {
    loop {
        let (mut sender, pooled) = match backend.checkout().await {
            Some(s) => (s, true),
            None => match backend.connect().await {
                Ok(s) => (s, false),
                Err(e) => return Err(SendError::NotSent(Box::new(req), e)),
            },
        };
        match sender.try_send_request(req).await {
            Ok(resp) => {
                lease.sent();
                return Ok((resp, Some(sender)));
            }
            Err(mut e) => match e.take_message() {
                // A pooled connection closed under us before the request
                // went out: take another one (the pool only shrinks).
                Some(r) if pooled => req = r,
                Some(r) => {
                    return Err(SendError::NotSent(
                        Box::new(r),
                        std::io::Error::other(e.into_error()),
                    ));
                }
                None => {
                    lease.sent();
                    return Err(SendError::Sent(e.into_error()));
                }
            },
        }
    }
}

/// Rewrites a client request for the target: origin-form URI, HTTP/1.1 so
/// the target connection stays keep-alive, hop-by-hop headers removed,
/// X-Forwarded-* set.
fn prepare(req: Request<Incoming>, peer: SocketAddr, port: u16) -> Request<Incoming> {
    let (mut parts, body) = req.into_parts();
    if parts.uri.authority().is_some() {
        // Absolute-form request: targets expect origin-form and a Host.
        if !parts.headers.contains_key(header::HOST) {
            if let Some(a) = parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                parts.headers.insert(header::HOST, a);
            }
        }
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        parts.uri = Uri::try_from(pq).unwrap_or_else(|_| Uri::from_static("/"));
    }
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);

    let ip = peer.ip().to_string();
    let xff = match join_values(&parts.headers, &X_FORWARDED_FOR) {
        Some(prior) => format!("{prior}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        parts.headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    parts
        .headers
        .insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    parts
        .headers
        .insert(X_FORWARDED_PORT.clone(), HeaderValue::from(port));
    Request::from_parts(parts, body)
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// All values of a (list-valued) header as one comma-separated string.
fn join_values(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out: Option<String> = None;
    for v in headers.get_all(name) {
        let Ok(v) = v.to_str() else { continue };
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        match &mut out {
            Some(o) => {
                o.push_str(", ");
                o.push_str(v);
            }
            None => out = Some(v.to_string()),
        }
    }
    out
}

/// RFC 9110 7.6.1: the standard hop-by-hop headers plus any header the
/// Connection header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(listed) = join_values(headers, &header::CONNECTION) {
        for name in listed.split(',') {
            if let Ok(name) = HeaderName::from_bytes(name.trim().as_bytes()) {
                headers.remove(name);
            }
        }
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

fn respond(
    resp: Response<Incoming>,
    sender: Option<SendRequest<ReqBody>>,
    lease: Lease,
) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    // A target that says it will close must not be pooled.
    let reusable = parts.version == Version::HTTP_11
        && !parts.headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.to_ascii_lowercase().contains("close"))
        });
    strip_hop_by_hop(&mut parts.headers);
    let upstream = Upstream {
        body,
        release: Some(Release {
            lease,
            sender: if reusable { sender } else { None },
        }),
    };
    let mut body = ProxyBody::Upstream(upstream);
    body.release_if_done();
    Response::from_parts(parts, body)
}

fn text(status: StatusCode, msg: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::Full(Some(Bytes::from_static(msg.as_bytes()))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// What a response holds on to until its body has been handed to the client.
struct Release {
    lease: Lease,
    sender: Option<SendRequest<ReqBody>>,
}

impl Release {
    /// Body complete: the target connection is idle again.
    fn done(self) {
        if let Some(sender) = self.sender {
            self.lease.backend.checkin(sender);
        }
    }
}

pub(super) struct Upstream {
    body: Incoming,
    release: Option<Release>,
}

/// Response body to clients: a target's body, counted in flight until it
/// ends, or a short local message.
pub(super) enum ProxyBody {
    Full(Option<Bytes>),
    Upstream(Upstream),
}

impl ProxyBody {
    fn release_if_done(&mut self) {
        if let ProxyBody::Upstream(u) = self {
            if u.body.is_end_stream() {
                if let Some(r) = u.release.take() {
                    r.done();
                }
            }
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut *self {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(u) => {
                let r = Pin::new(&mut u.body).poll_frame(cx);
                match &r {
                    Poll::Ready(None) => {
                        if let Some(rel) = u.release.take() {
                            rel.done();
                        }
                    }
                    // Dropping the release without checkin closes the
                    // target connection: its state is unknown.
                    Poll::Ready(Some(Err(_))) => u.release = None,
                    Poll::Ready(Some(Ok(_))) => {
                        if u.body.is_end_stream() {
                            if let Some(rel) = u.release.take() {
                                rel.done();
                            }
                        }
                    }
                    Poll::Pending => {}
                }
                r
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Upstream(u) => u.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream(u) => u.body.size_hint(),
        }
    }
}
