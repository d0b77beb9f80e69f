//! Listener and health-check behaviour over real sockets, against small
//! in-process backends that say who they are.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

use super::health::{parse_matcher, CheckSpec, Checker, TargetState};
use super::{Algorithm, ListenerSpec, Listeners, Protocol, Target};

/// Upper bound on any wait: tests fail instead of hanging.
const WAIT: Duration = Duration::from_secs(10);
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}

struct Backend {
    name: &'static str,
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    release: Arc<Notify>,
}

/// An HTTP backend: `/hold` reports itself on `held` and answers once
/// released, `/echo` returns the request headers, anything else its name.
async fn backend(name: &'static str, held: mpsc::UnboundedSender<&'static str>) -> Backend {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let (a, r) = (accepts.clone(), release.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            a.fetch_add(1, Ordering::SeqCst);
            let (held, release) = (held.clone(), r.clone());
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (held, release) = (held.clone(), release.clone());
                async move {
                    let body = match req.uri().path() {
                        "/hold" => {
                            let _ = held.send(name);
                            release.notified().await;
                            name.to_string()
                        }
                        "/echo" => {
                            let mut out = format!("{name}\n");
                            for (k, v) in req.headers() {
                                out.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
                            }
                            out
                        }
                        _ => name.to_string(),
                    };
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(body))))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    Backend {
        name,
        addr,
        accepts,
        release,
    }
}

fn target(b: &Backend) -> Target {
    Target {
        id: b.name.to_string(),
        addr: b.addr,
    }
}

/// A port nobody listens on (bound, then released).
async fn free_port() -> u16 {
    TcpListener::bind((LOCALHOST, 0))
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spec(port: u16, protocol: Protocol, algorithm: Algorithm, targets: Vec<Target>) -> ListenerSpec {
    ListenerSpec {
        port,
        protocol,
        algorithm,
        targets,
        name: "test/svc".to_string(),
    }
}

async fn listen(algorithm: Algorithm, targets: Vec<Target>) -> (Listeners, u16) {
    let lb = Listeners::new(LOCALHOST);
    let port = free_port().await;
    let errors = lb
        .set(vec![spec(port, Protocol::Http, algorithm, targets)])
        .await;
    assert!(errors.is_empty(), "{errors:?}");
    (lb, port)
}

/// One request on a fresh client connection: (status, body).
async fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    within(async {
        let stream = TcpStream::connect((LOCALHOST, port)).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = Request::get(path).header("host", "svc.test");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = sender
            .send_request(req.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    })
    .await
}

fn count(bodies: &[String]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for b in bodies {
        *m.entry(b.as_str()).or_default() += 1;
    }
    m
}

#[tokio::test]
async fn round_robin_spreads_evenly() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let bs = [
        backend("a", tx.clone()).await,
        backend("b", tx.clone()).await,
        backend("c", tx).await,
    ];
    let (lb, port) = listen(Algorithm::RoundRobin, bs.iter().map(target).collect()).await;
    let mut bodies = Vec::new();
    for _ in 0..30 {
        let (status, body) = get(port, "/", &[]).await;
        assert_eq!(status, 200);
        bodies.push(body);
    }
    assert_eq!(
        count(&bodies),
        BTreeMap::from([("a", 10), ("b", 10), ("c", 10)])
    );
    let served = lb.served();
    assert_eq!((served["a"], served["b"], served["c"]), (10, 10, 10));
}

#[tokio::test]
async fn least_outstanding_prefers_idle_target() {
    let (tx, mut held) = mpsc::unbounded_channel();
    let bs = [backend("a", tx.clone()).await, backend("b", tx).await];
    let (_lb, port) = listen(Algorithm::LeastOutstanding, bs.iter().map(target).collect()).await;
    let slow = tokio::spawn(get(port, "/hold", &[]));
    let busy = within(held.recv()).await.unwrap();
    for _ in 0..6 {
        let (status, body) = get(port, "/", &[]).await;
        assert_eq!(status, 200);
        assert_ne!(body, busy, "request went to the busy target");
    }
    bs.iter()
        .find(|b| b.name == busy)
        .unwrap()
        .release
        .notify_one();
    assert_eq!(within(slow).await.unwrap(), (200, busy.to_string()));
}

#[tokio::test]
async fn refused_target_is_retried_on_another() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let live = [backend("a", tx.clone()).await, backend("b", tx).await];
    let dead = Target {
        id: "dead".into(),
        addr: SocketAddr::new(LOCALHOST, free_port().await),
    };
    let (lb, port) = listen(
        Algorithm::RoundRobin,
        vec![dead, target(&live[0]), target(&live[1])],
    )
    .await;
    for _ in 0..12 {
        let (status, body) = get(port, "/", &[]).await;
        assert_eq!(status, 200);
        assert!(body == "a" || body == "b", "{body}");
    }
    assert_eq!(lb.served().get("dead").copied().unwrap_or(0), 0);
    assert!(lb.inflight().is_empty());
}

#[tokio::test]
async fn all_targets_refused_is_502() {
    let dead = Target {
        id: "dead".into(),
        addr: SocketAddr::new(LOCALHOST, free_port().await),
    };
    let (_lb, port) = listen(Algorithm::RoundRobin, vec![dead]).await;
    assert_eq!(get(port, "/", &[]).await.0, 502);
}

#[tokio::test]
async fn forwarded_headers_and_hop_by_hop() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let b = backend("a", tx).await;
    let (_lb, port) = listen(Algorithm::RoundRobin, vec![target(&b)]).await;

    let (_, body) = get(
        port,
        "/echo",
        &[
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
        ],
    )
    .await;
    assert!(body.contains("x-forwarded-for: 127.0.0.1\n"), "{body}");
    assert!(body.contains("x-forwarded-proto: http\n"), "{body}");
    assert!(
        body.contains(&format!("x-forwarded-port: {port}\n")),
        "{body}"
    );
    assert!(!body.contains("x-secret"), "{body}");
    assert!(!body.contains("keep-alive"), "{body}");

    let (_, body) = get(port, "/echo", &[("x-forwarded-for", "1.2.3.4")]).await;
    assert!(
        body.contains("x-forwarded-for: 1.2.3.4, 127.0.0.1\n"),
        "{body}"
    );
}

#[tokio::test]
async fn keep_alive_reuses_target_connections() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let bs = [backend("a", tx.clone()).await, backend("b", tx).await];
    let (_lb, port) = listen(Algorithm::RoundRobin, bs.iter().map(target).collect()).await;
    for _ in 0..20 {
        assert_eq!(get(port, "/", &[]).await.0, 200);
    }
    // Sequential requests: one connection per target serves them all.
    assert_eq!(bs[0].accepts.load(Ordering::SeqCst), 1);
    assert_eq!(bs[1].accepts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn removed_target_drains_its_inflight_request() {
    let (tx, mut held) = mpsc::unbounded_channel();
    let bs = [backend("a", tx.clone()).await, backend("b", tx).await];
    let (lb, port) = listen(Algorithm::RoundRobin, bs.iter().map(target).collect()).await;
    // Warm both targets so each has an idle pooled connection.
    for _ in 0..2 {
        assert_eq!(get(port, "/", &[]).await.0, 200);
    }
    let slow = tokio::spawn(get(port, "/hold", &[]));
    let busy = within(held.recv()).await.unwrap();
    let (gone, stays) = if busy == "a" {
        (&bs[0], &bs[1])
    } else {
        (&bs[1], &bs[0])
    };
    assert_eq!(lb.inflight().get(gone.name), Some(&1));

    let errors = lb
        .set(vec![spec(
            port,
            Protocol::Http,
            Algorithm::RoundRobin,
            vec![target(stays)],
        )])
        .await;
    assert!(errors.is_empty());
    let before = lb.served()[gone.name];
    for _ in 0..6 {
        assert_eq!(get(port, "/", &[]).await, (200, stays.name.to_string()));
    }
    assert_eq!(
        lb.served()[gone.name],
        before,
        "removed target got new requests"
    );
    assert_eq!(
        lb.inflight().get(gone.name),
        Some(&1),
        "drain lost the request"
    );

    gone.release.notify_one();
    assert_eq!(within(slow).await.unwrap(), (200, gone.name.to_string()));
    within(async {
        while lb.inflight().contains_key(gone.name) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn no_targets_is_503() {
    let (_lb, port) = listen(Algorithm::RoundRobin, vec![]).await;
    let (status, body) = get(port, "/", &[]).await;
    assert_eq!(status, 503);
    assert!(!body.is_empty());
}

#[tokio::test]
async fn bind_error_spares_other_listeners_and_closed_listener_refuses() {
    let taken = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let lb = Listeners::new(LOCALHOST);
    let port = free_port().await;
    let errors = lb
        .set(vec![
            spec(taken_port, Protocol::Http, Algorithm::RoundRobin, vec![]),
            spec(port, Protocol::Http, Algorithm::RoundRobin, vec![]),
        ])
        .await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, taken_port);
    assert_eq!(get(port, "/", &[]).await.0, 503);

    assert!(lb.set(vec![]).await.is_empty());
    assert!(TcpStream::connect((LOCALHOST, port)).await.is_err());
}

#[tokio::test]
async fn tcp_listener_echoes_through_targets() {
    let mut targets = Vec::new();
    for id in ["e1", "e2"] {
        let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        targets.push(Target {
            id: id.into(),
            addr: listener.local_addr().unwrap(),
        });
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
    }
    let dead = Target {
        id: "dead".into(),
        addr: SocketAddr::new(LOCALHOST, free_port().await),
    };
    targets.insert(0, dead);
    let lb = Listeners::new(LOCALHOST);
    let port = free_port().await;
    assert!(lb
        .set(vec![spec(
            port,
            Protocol::Tcp,
            Algorithm::RoundRobin,
            targets
        )])
        .await
        .is_empty());
    for i in 0..4 {
        within(async {
            let mut s = TcpStream::connect((LOCALHOST, port)).await.unwrap();
            let msg = format!("hello {i}");
            s.write_all(msg.as_bytes()).await.unwrap();
            s.shutdown().await.unwrap();
            let mut back = String::new();
            s.read_to_string(&mut back).await.unwrap();
            assert_eq!(back, msg);
        })
        .await;
    }
    let served = lb.served();
    assert_eq!(served["e1"] + served["e2"], 4);
    assert_eq!(served.get("dead").copied().unwrap_or(0), 0);
}

// ---- health checks ----

/// A health endpoint answering with `status`, or never answering when
/// `status` is 0.
async fn health_backend(status: u16) -> (SocketAddr, Arc<AtomicU16>) {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let status = Arc::new(AtomicU16::new(status));
    let s = status.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let s = s.clone();
            let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                let s = s.clone();
                async move {
                    let code = s.load(Ordering::SeqCst);
                    if code == 0 {
                        std::future::pending::<()>().await;
                    }
                    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                    *resp.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
                    Ok::<_, hyper::Error>(resp)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    (addr, status)
}

fn check(id: &str, addr: SocketAddr, protocol: Protocol, matcher: &str) -> CheckSpec {
    CheckSpec {
        id: id.into(),
        addr,
        protocol,
        path: "/health".into(),
        interval: Duration::from_millis(10),
        timeout: Duration::from_millis(500),
        healthy_threshold: 2,
        unhealthy_threshold: 3,
        matcher: matcher.into(),
    }
}

async fn wait_state(checker: &Checker, id: &str, want: TargetState) {
    let mut rx = checker.subscribe();
    within(async {
        loop {
            if checker.states().get(id) == Some(&want) {
                return;
            }
            rx.changed().await.unwrap();
        }
    })
    .await;
}

#[test]
fn matcher_forms() {
    let m = parse_matcher("200").unwrap();
    assert!(m.matches(200) && !m.matches(204));
    let m = parse_matcher("200,204").unwrap();
    assert!(m.matches(200) && m.matches(204) && !m.matches(201));
    let m = parse_matcher("200-399").unwrap();
    assert!(m.matches(200) && m.matches(302) && m.matches(399) && !m.matches(400));
    let m = parse_matcher(" 200 , 300-302 ").unwrap();
    assert!(m.matches(301) && !m.matches(303));
    for bad in ["", "2x0", "399-200", "200,", "99", "600", "-", "200-"] {
        assert!(parse_matcher(bad).is_err(), "{bad:?} parsed");
    }
}

#[tokio::test]
async fn health_thresholds_move_between_states() {
    let (addr, status) = health_backend(200).await;
    let (bad_addr, _) = health_backend(500).await;
    let checker = Checker::new();
    checker.set(vec![
        check("t", addr, Protocol::Http, "200"),
        check("bad", bad_addr, Protocol::Http, "200"),
    ]);
    wait_state(&checker, "t", TargetState::Healthy).await;
    // Initial -> Unhealthy directly after unhealthy_threshold failures.
    wait_state(&checker, "bad", TargetState::Unhealthy).await;

    status.store(500, Ordering::SeqCst);
    wait_state(&checker, "t", TargetState::Unhealthy).await;
    status.store(200, Ordering::SeqCst);
    wait_state(&checker, "t", TargetState::Healthy).await;
}

#[tokio::test]
async fn health_matcher_ranges() {
    let (redirect, _) = health_backend(302).await;
    let (not_found, _) = health_backend(404).await;
    let (no_content, _) = health_backend(204).await;
    let checker = Checker::new();
    checker.set(vec![
        check("302", redirect, Protocol::Http, "200-399"),
        check("404", not_found, Protocol::Http, "200-399"),
        check("204", no_content, Protocol::Http, "200,204"),
    ]);
    wait_state(&checker, "302", TargetState::Healthy).await;
    wait_state(&checker, "404", TargetState::Unhealthy).await;
    wait_state(&checker, "204", TargetState::Healthy).await;
}

#[tokio::test]
async fn health_check_times_out() {
    let (hangs, _) = health_backend(0).await;
    let checker = Checker::new();
    let mut spec = check("hang", hangs, Protocol::Http, "200");
    spec.timeout = Duration::from_millis(50);
    checker.set(vec![spec]);
    wait_state(&checker, "hang", TargetState::Unhealthy).await;
}

#[tokio::test]
async fn health_first_check_is_immediate() {
    let (addr, _) = health_backend(200).await;
    let checker = Checker::new();
    let mut spec = check("t", addr, Protocol::Http, "200");
    spec.interval = Duration::from_secs(3600);
    spec.healthy_threshold = 1;
    checker.set(vec![spec]);
    wait_state(&checker, "t", TargetState::Healthy).await;
}

#[tokio::test]
async fn health_tcp_and_unchanged_specs_keep_state() {
    let (up, _) = health_backend(200).await;
    let down = SocketAddr::new(LOCALHOST, free_port().await);
    let checker = Checker::new();
    let specs = vec![
        check("up", up, Protocol::Tcp, ""),
        check("down", down, Protocol::Tcp, ""),
    ];
    checker.set(specs.clone());
    wait_state(&checker, "up", TargetState::Healthy).await;
    wait_state(&checker, "down", TargetState::Unhealthy).await;

    checker.set(specs.clone());
    assert_eq!(checker.states()["up"], TargetState::Healthy);

    let mut changed = specs[0].clone();
    changed.healthy_threshold = 5;
    checker.set(vec![changed]);
    let states = checker.states();
    assert_eq!(states.get("up"), Some(&TargetState::Initial));
    assert!(!states.contains_key("down"));
}

/// A target that reads a request and closes the connection unanswered,
/// as one whose node died mid-request does.
async fn hang_up() -> Target {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            drop(stream);
        }
    });
    Target {
        id: "hangs-up".into(),
        addr,
    }
}

#[tokio::test]
async fn a_get_its_target_dropped_unanswered_goes_to_another_a_post_does_not() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let live = backend("a", tx).await;
    let (_lb, port) = listen(Algorithm::RoundRobin, vec![hang_up().await, target(&live)]).await;
    // A request with a body may have had its effect: never sent twice.
    // (First: a failed GET takes the target out of turn for a while.)
    let mut failed = 0;
    for _ in 0..4 {
        let status = within(async {
            let stream = TcpStream::connect((LOCALHOST, port)).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = Request::post("/")
                .header("host", "svc.test")
                .body(Full::new(Bytes::from_static(b"pay once")))
                .unwrap();
            sender.send_request(req).await.unwrap().status().as_u16()
        })
        .await;
        failed += usize::from(status == 502);
    }
    assert_eq!(failed, 2, "the POSTs sent to the target that hangs up fail");
    for _ in 0..4 {
        let (status, body) = get(port, "/", &[]).await;
        assert_eq!((status, body.as_str()), (200, "a"));
    }
}

#[tokio::test]
async fn a_target_gone_and_idle_is_forgotten() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let (a, b) = (backend("a", tx.clone()).await, backend("b", tx).await);
    let (lb, port) = listen(Algorithm::RoundRobin, vec![target(&a), target(&b)]).await;
    for _ in 0..4 {
        assert_eq!(get(port, "/", &[]).await.0, 200);
    }
    assert_eq!(lb.served().len(), 2);
    let only_b = vec![spec(
        port,
        Protocol::Http,
        Algorithm::RoundRobin,
        vec![target(&b)],
    )];
    assert!(lb.set(only_b.clone()).await.is_empty());
    // Nothing holds `a` any more: the next reconcile forgets it.
    assert!(lb.set(only_b).await.is_empty());
    let served = lb.served();
    assert_eq!(served.keys().collect::<Vec<_>>(), ["b"], "{served:?}");
}
