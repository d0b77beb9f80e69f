//! The controller's API against clients that do not play fair: too many
//! connections, request heads and bodies sent a byte at a time, idle
//! keep-alive connections, replayed and forged webhooks, floods; and the
//! modes of what the controller and standalone mode write.
//!
//! A real controller process over real TCP, following a directory that
//! holds only a cluster, so no agent or container is needed (standalone
//! `apply` talks to the local Docker engine). Short timeouts are passed
//! through the controller's hidden flags.

#[path = "common/controller.rs"]
mod controller;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use controller::{bin, wait_until, ControllerArgs, Harness, API, JOIN};

const HOOK: &str = "webhook-secret-for-server-limits";

/// A controller on 127.0.0.1 following a directory with one cluster, with
/// `flags` added to its command line (`--tls`: serving HTTPS with a test
/// CA's certificate).
fn start(name: &str, flags: &[&str], before: impl FnOnce(&Path)) -> Harness<()> {
    let mut h = Harness::create(name.into(), IpAddr::V4(Ipv4Addr::LOCALHOST), |_| ());
    let src = h.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("cluster.yaml"),
        format!("apiVersion: reconcile/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}}}\nspec: {{}}\n"),
    )
    .unwrap();
    before(h.dir.path());
    if flags.contains(&"--tls") {
        h.use_tls();
    }
    let mut source = vec![src.into_os_string()];
    source.extend(flags.iter().filter(|f| **f != "--tls").map(Into::into));
    h.start_controller(ControllerArgs {
        source,
        interval: 300,
        node_timeout: 10,
        env: vec![("RECONCILE_WEBHOOK_SECRET".into(), HOOK.into())],
    });
    h
}

/// Whether the server has closed `s`: EOF or a reset within `wait`; a
/// reply counts as not closed.
fn closed(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 512];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
        ),
    }
}

/// Read a reply until EOF (or a reset); status code (0 without one) and
/// the text.
fn reply(s: &mut TcpStream) -> (u16, String) {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

/// `GET path` with the API token on a fresh connection.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {API}\r\nConnection: close\r\n\r\n"
    );
    reply(&mut s)
}

#[test]
fn connections_above_the_cap_are_closed_at_once() {
    let h = start(
        "caps",
        &["--max-connections", "20", "--header-timeout", "60"],
        |_| {},
    );
    // Let the harness's own probe connections be closed.
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let mut conns: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(h.addr()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut open = Vec::new();
    let mut shut = 0;
    for mut c in conns.drain(..) {
        if closed(&mut c, Duration::from_millis(100)) {
            shut += 1;
        } else {
            open.push(c);
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not promptly: {:?}",
        started.elapsed()
    );
    assert_eq!(
        (open.len(), shut),
        (20, 30),
        "controller log:\n{}",
        h.tail("controller")
    );
    // While twenty idle connections are held, even the owner is refused.
    let (code, text) = get(h.addr(), "/v1/status");
    assert_eq!(code, 0, "{text}");
    // Once some close, the API answers again.
    open.truncate(15);
    let freed = Instant::now();
    let last = loop {
        let (code, text) = get(h.addr(), "/v1/status");
        if code == 200 {
            break text;
        }
        assert!(
            freed.elapsed() < Duration::from_secs(10),
            "still refused with five connections closed: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(last.contains("\"passes\""), "{last}");
    let log = h.log("controller");
    assert!(
        log.contains("the most --max-connections allows"),
        "the refusals are logged:\n{log}"
    );
    // At most once a second: 31 refusals in about a second, few lines.
    let lines = log.matches("the most --max-connections allows").count();
    assert!(lines <= 3, "{lines} lines:\n{log}");
    drop(open);
}

#[test]
fn slow_heads_idle_connections_and_slow_bodies_are_cut_but_not_long_polls() {
    let h = start(
        "slow",
        &[
            "--header-timeout",
            "2",
            "--idle-timeout",
            "4",
            "--body-timeout",
            "3",
        ],
        |_| {},
    );
    let addr = h.addr();
    // After the first pass, nothing changes the assignments (no nodes, a
    // long interval): the long poll below is held to its end.
    wait_until(
        "the first pass",
        Duration::from_secs(30),
        || h.passes() >= 1,
        || h.tail("controller"),
    );

    // A request head a byte a second: cut off after the header timeout.
    let trickle = std::thread::spawn(move || {
        let head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Padding: aaaaaaaaaaaaaaaa\r\n\r\n";
        let mut s = TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        for (i, b) in head.iter().enumerate() {
            if s.write_all(&[*b]).is_err() || closed(&mut s, Duration::from_secs(1)) {
                return Some((i, started.elapsed()));
            }
        }
        None
    });

    // An idle keep-alive connection: closed after the idle timeout, which
    // is longer than the header timeout.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        first.starts_with("HTTP/1.1 200") && first.ends_with("ok"),
        "{first}"
    );
    let answered = Instant::now();
    assert!(
        closed(&mut s, Duration::from_secs(15)),
        "the idle connection stays open"
    );
    let idle = answered.elapsed();
    assert!(
        idle >= Duration::from_millis(3500) && idle < Duration::from_secs(8),
        "closed after {idle:?}, the idle timeout is 4 s"
    );

    // A long poll held longer than the idle timeout is answered (with the
    // credential of a node that joined).
    let (code, text) = controller::post(
        addr,
        "/v1/join",
        &format!("Authorization: Bearer {JOIN}\r\nContent-Type: application/json\r\n"),
        br#"{"name":"n1","cluster":"slow"}"#,
    );
    assert_eq!(code, 200, "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let credential = serde_json::from_str::<serde_json::Value>(body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let poll = |after: &str, millis: u64| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            s,
            "GET /v1/nodes/n1/changes?after={after}&timeoutMillis={millis} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {credential}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        reply(&mut s)
    };
    let (code, text) = poll("999999999", 0);
    assert_eq!(code, 200, "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let generation = serde_json::from_str::<serde_json::Value>(body).unwrap()["generation"]
        .as_u64()
        .unwrap_or_else(|| panic!("no generation in {text}"));
    let held = Instant::now();
    let (code, text) = poll(&generation.to_string(), 6000);
    assert_eq!(code, 200, "the long poll was cut: {text}");
    assert!(held.elapsed() >= Duration::from_millis(5500), "{text}");

    // A body that never arrives whole: refused after the body timeout.
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v1/nodes/n1/heartbeat HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {credential}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"cluster\""
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let sent = Instant::now();
    let (code, text) = reply(&mut s);
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(10),
        "answered after {took:?}: {text}"
    );
    assert!(code == 0 || code == 400, "{text}");

    let (at, after) = trickle
        .join()
        .unwrap()
        .expect("a head sent a byte a second was never cut off");
    assert!(
        after >= Duration::from_millis(1500) && after < Duration::from_secs(6),
        "cut off after {after:?} ({at} bytes), the header timeout is 2 s"
    );
    let log = h.log("controller");
    assert!(
        log.contains("no whole request head within 2s"),
        "controller log:\n{log}"
    );
    assert!(
        log.contains("cut off a request body"),
        "controller log:\n{log}"
    );
}

#[test]
fn https_is_served_with_the_same_bounds() {
    let h = start("tls", &["--tls", "--max-connections", "3"], |_| {});
    // The CLI over HTTPS, trusting the test CA.
    wait_until(
        "a pass, seen over HTTPS",
        Duration::from_secs(30),
        || h.passes() >= 1,
        || h.tail("controller"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut conns: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(h.addr()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let shut = conns
        .iter_mut()
        .map(|c| closed(c, Duration::from_millis(100)))
        .filter(|c| *c)
        .count();
    assert_eq!(shut, 2, "controller log:\n{}", h.tail("controller"));
    drop(conns);
    wait_until(
        "HTTPS once the connections are closed",
        Duration::from_secs(10),
        || h.cli(&["status", "--format", "json"]).0 == 0,
        || h.tail("controller"),
    );
}

/// HMAC-SHA256 (RFC 2104) as a git host signs a webhook body.
fn sign(body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut key = [0u8; 64];
    key[..HOOK.len()].copy_from_slice(HOOK.as_bytes());
    let inner: Vec<u8> = key.iter().map(|k| k ^ 0x36).collect();
    let outer: Vec<u8> = key.iter().map(|k| k ^ 0x5c).collect();
    let h = Sha256::new()
        .chain_update(&inner)
        .chain_update(body)
        .finalize();
    let mac = Sha256::new()
        .chain_update(&outer)
        .chain_update(h)
        .finalize();
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// `POST /v1/webhook` from the loopback address `from` (any 127.0.0.0/8
/// address reaches the controller): status code and reply.
fn hook(addr: SocketAddr, from: Ipv4Addr, headers: &str, body: &[u8]) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let std = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(from.into(), 0)).unwrap();
        sock.connect(addr).await.unwrap().into_std().unwrap()
    });
    let mut s = std;
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /v1/webhook HTTP/1.1\r\nHost: t\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    reply(&mut s)
}

#[test]
fn webhooks_are_accepted_once_signed_and_rate_limited() {
    let h = start("hooks", &[], |_| {});
    let addr = h.addr();
    wait_until(
        "the first pass",
        Duration::from_secs(30),
        || h.passes() >= 1,
        || h.tail("controller"),
    );
    let before = h.passes();

    // A forged signature: 401, named as such.
    let body = br#"{"ref":"refs/heads/main","after":"1111"}"#;
    let (code, text) = hook(
        addr,
        Ipv4Addr::new(127, 0, 0, 50),
        "X-Hub-Signature-256: sha256=00ff\r\nX-GitHub-Delivery: forged-1\r\n",
        body,
    );
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("bad webhook signature"), "{text}");

    // The genuine delivery: accepted, one pass. The forged request with
    // the same delivery id did not use it up.
    let signed = format!("X-Hub-Signature-256: {}\r\n", sign(body));
    let (code, text) = hook(
        addr,
        Ipv4Addr::new(127, 0, 0, 2),
        &format!("{signed}X-GitHub-Delivery: forged-1\r\n"),
        body,
    );
    assert_eq!(code, 202, "{text}");
    wait_until(
        "the webhook's pass",
        Duration::from_secs(30),
        || h.passes() > before,
        || h.tail("controller"),
    );

    // 300 replays from twenty addresses (under each one's rate), half with
    // the delivery id, half with new ids: all refused, none syncs.
    let mut codes = std::collections::BTreeMap::new();
    for round in 0..15 {
        for peer in 0..20u8 {
            let id = if peer % 2 == 0 {
                "forged-1".to_string()
            } else {
                format!("new-{round}-{peer}")
            };
            let (code, text) = hook(
                addr,
                Ipv4Addr::new(127, 0, 1, 10 + peer),
                &format!("{signed}X-GitHub-Delivery: {id}\r\n"),
                body,
            );
            if code == 409 {
                assert!(text.contains("replayed webhook delivery"), "{text}");
            }
            *codes.entry(code).or_insert(0) += 1;
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    assert_eq!(codes, [(409, 300)].into(), "replies to the replays");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(h.passes(), before + 1, "the replays made passes");

    // A new push is still accepted.
    let body2 = br#"{"ref":"refs/heads/main","after":"2222"}"#;
    let (code, text) = hook(
        addr,
        Ipv4Addr::new(127, 0, 0, 3),
        &format!(
            "X-Hub-Signature-256: {}\r\nX-Gitea-Delivery: second\r\n",
            sign(body2)
        ),
        body2,
    );
    assert_eq!(code, 202, "{text}");
    wait_until(
        "the second webhook's pass",
        Duration::from_secs(30),
        || h.passes() > before + 1,
        || h.tail("controller"),
    );

    // A flood of signed requests from one address (what gets past the
    // gate without a token, and costs an HMAC over the body): refused
    // with 429 and Retry-After past its burst.
    let flood: Vec<(u16, String)> = (0..40)
        .map(|_| {
            hook(
                addr,
                Ipv4Addr::new(127, 0, 0, 99),
                "X-Hub-Signature-256: sha256=00\r\n",
                b"{}",
            )
        })
        .collect();
    let limited: Vec<&String> = flood
        .iter()
        .filter(|(c, _)| *c == 429)
        .map(|(_, t)| t)
        .collect();
    assert!(limited.len() >= 10, "{flood:?}");
    assert!(
        limited
            .iter()
            .all(|t| t.to_ascii_lowercase().contains("retry-after: 1")),
        "{limited:?}"
    );
    assert!(flood[..20].iter().all(|(c, _)| *c == 401), "{flood:?}");

    let log = h.log("controller");
    for line in [
        "refused POST /v1/webhook from 127.0.0.50",
        "bad webhook signature",
        "replayed webhook delivery",
        "over the rate limit",
    ] {
        assert!(log.contains(line), "`{line}` not in the log:\n{log}");
    }
    assert!(
        !log.contains("from 127.0.0.50: no token"),
        "a bad signature is not a missing token:\n{log}"
    );
    // Logged at most once a second per reason, not once per request.
    let lines = log.matches("replayed webhook delivery").count();
    assert!(lines <= 5, "{lines} lines about replays:\n{log}");
}

/// Every directory under `dir` (itself included) is 0700 and every file
/// 0600; returns how many files there are.
fn all_private(dir: &Path) -> usize {
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir), 0o700, "`{}`", dir.display());
    let mut files = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files += all_private(&p);
        } else {
            assert_eq!(mode(&p), 0o600, "`{}`", p.display());
            files += 1;
        }
    }
    files
}

#[test]
fn what_is_written_is_private_and_looser_modes_are_tightened() {
    // A data directory and an empty store left readable by an older
    // version.
    let h = start("modes", &[], |d| {
        let data = d.join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(data.join("controller.redb"), b"").unwrap();
        std::fs::set_permissions(
            data.join("controller.redb"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    });
    wait_until(
        "the first pass",
        Duration::from_secs(30),
        || h.passes() >= 1,
        || h.tail("controller"),
    );
    assert!(all_private(&h.dir.path().join("data")) >= 1);
    let log = h.log("controller");
    assert!(
        log.contains("(mode 755); made it 700") && log.contains("(mode 644); made it 600"),
        "{log}"
    );

    // Standalone: a fresh state directory, under the usual umask.
    let state = h.dir.path().join("state");
    let out = Command::new(bin())
        .args(["apply"])
        .arg(h.dir.path().join("src"))
        .arg("--auto-approve")
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all_private(&state) >= 2, "the store and its lock");
}
