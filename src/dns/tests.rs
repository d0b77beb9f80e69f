//! Real sockets on 127.0.0.1, queried with raw hickory-proto messages.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::*;

const WAIT: Duration = Duration::from_secs(10);
const LOCAL: &str = "127.0.0.1:0";

fn ep(ip: &str, port: u16) -> Endpoint {
    Endpoint {
        ip: ip.parse().unwrap(),
        port,
    }
}

fn records(entries: &[(&str, Vec<Endpoint>)]) -> Records {
    entries
        .iter()
        .map(|(name, eps)| (name.to_string(), eps.clone()))
        .collect()
}

fn query(name: &str, rtype: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    message
}

async fn udp_raw(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind(LOCAL).await.unwrap();
    socket.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    match tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

async fn udp(server: SocketAddr, message: &Message) -> Message {
    let socket = UdpSocket::bind(LOCAL).await.unwrap();
    socket
        .send_to(&message.to_vec().unwrap(), server)
        .await
        .unwrap();
    let mut buf = vec![0u8; 65_535];
    let n = tokio::time::timeout(WAIT, socket.recv(&mut buf))
        .await
        .expect("no UDP answer in time")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

async fn tcp(server: SocketAddr, message: &Message) -> Message {
    tokio::time::timeout(WAIT, async {
        let mut stream = TcpStream::connect(server).await.unwrap();
        let bytes = message.to_vec().unwrap();
        stream
            .write_all(&(bytes.len() as u16).to_be_bytes())
            .await
            .unwrap();
        stream.write_all(&bytes).await.unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.unwrap();
        Message::from_vec(&buf).unwrap()
    })
    .await
    .expect("no TCP answer in time")
}

async fn ask(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let q = query(name, rtype);
    let answer = udp(server, &q).await;
    assert_eq!(answer.metadata.id, q.metadata.id);
    assert_eq!(answer.metadata.message_type, MessageType::Response);
    answer
}

fn ips(message: &Message) -> BTreeSet<IpAddr> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// (port, target) of each SRV answer.
fn srvs(message: &Message) -> BTreeSet<(u16, String)> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => {
                assert_eq!((srv.priority, srv.weight), (1, 1));
                Some((srv.port, srv.target.to_ascii()))
            }
            _ => None,
        })
        .collect()
}

fn ip_set(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

async fn server_with(entries: &[(&str, Vec<Endpoint>)]) -> DnsServer {
    let server = DnsServer::bind(LOCAL.parse().unwrap(), DEFAULT_DOMAIN, Vec::new())
        .await
        .unwrap();
    server.set(records(entries));
    server
}

fn web() -> (&'static str, Vec<Endpoint>) {
    (
        "web.prod.reconcile.internal",
        vec![
            ep("10.0.0.5", 8080),
            ep("10.0.0.5", 8081),
            ep("10.0.0.6", 8080),
        ],
    )
}

#[tokio::test]
async fn a_answers_the_distinct_endpoint_ips() {
    let server = server_with(&[web()]).await;
    let answer = ask(
        server.local_addr(),
        "web.prod.reconcile.internal.",
        RecordType::A,
    )
    .await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative);
    assert_eq!(
        answer.answers.len(),
        2,
        "deduplicated: {:?}",
        answer.answers
    );
    assert_eq!(ips(&answer), ip_set(&["10.0.0.5", "10.0.0.6"]));
    assert!(answer.answers.iter().all(|r| r.ttl == 5));
    server.shutdown().await;
}

#[tokio::test]
async fn srv_on_the_name_and_on_the_underscore_form_with_resolvable_targets() {
    let server = server_with(&[web()]).await;
    let addr = server.local_addr();
    let expected: BTreeSet<(u16, String)> = [
        (8080, "10-0-0-5.prod.reconcile.internal."),
        (8081, "10-0-0-5.prod.reconcile.internal."),
        (8080, "10-0-0-6.prod.reconcile.internal."),
    ]
    .into_iter()
    .map(|(p, t)| (p, t.to_string()))
    .collect();
    for name in [
        "web.prod.reconcile.internal.",
        "_web._tcp.prod.reconcile.internal.",
    ] {
        let answer = ask(addr, name, RecordType::SRV).await;
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::NoError,
            "{name}"
        );
        assert_eq!(srvs(&answer), expected, "{name}");
        assert!(answer.answers.iter().all(|r| r.ttl == 5));
        // The targets' addresses ride along in the additional section.
        let glue: BTreeSet<String> = answer
            .additionals
            .iter()
            .map(|r| r.name.to_ascii())
            .collect();
        assert_eq!(glue.len(), 2, "{:?}", answer.additionals);
    }
    let target = ask(addr, "10-0-0-6.prod.reconcile.internal.", RecordType::A).await;
    assert_eq!(ips(&target), ip_set(&["10.0.0.6"]));
    // The empty non-terminal between them exists: NODATA, not NXDOMAIN.
    let ent = ask(addr, "_tcp.prod.reconcile.internal.", RecordType::A).await;
    assert_eq!(ent.metadata.response_code, ResponseCode::NoError);
    assert!(ent.answers.is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn set_replaces_the_records_for_the_next_query() {
    let server = server_with(&[web()]).await;
    let addr = server.local_addr();
    server.set(records(&[(
        "web.prod.reconcile.internal",
        vec![ep("10.0.0.6", 8080)],
    )]));
    let answer = ask(addr, "web.prod.reconcile.internal.", RecordType::A).await;
    assert_eq!(ips(&answer), ip_set(&["10.0.0.6"]));
    let answer = ask(addr, "_web._tcp.prod.reconcile.internal.", RecordType::SRV).await;
    assert_eq!(srvs(&answer).len(), 1);
    let gone = ask(addr, "10-0-0-5.prod.reconcile.internal.", RecordType::A).await;
    assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);

    // No endpoints now: the name is gone.
    server.set(records(&[("web.prod.reconcile.internal", Vec::new())]));
    let answer = ask(addr, "web.prod.reconcile.internal.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_names_in_the_domain_are_nxdomain_with_an_soa() {
    let server = server_with(&[web()]).await;
    let answer = ask(
        server.local_addr(),
        "nope.prod.reconcile.internal.",
        RecordType::A,
    )
    .await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    assert!(answer.metadata.authoritative);
    assert!(answer.answers.is_empty());
    let soa = answer
        .authorities
        .iter()
        .find_map(|r| match &r.data {
            RData::SOA(soa) => Some((r.name.to_ascii(), r.ttl, soa.minimum)),
            _ => None,
        })
        .expect("an SOA in authority");
    assert_eq!(soa, ("reconcile.internal.".to_string(), 5, 5));
    server.shutdown().await;
}

#[tokio::test]
async fn a_type_the_name_lacks_is_nodata() {
    let server = server_with(&[web()]).await;
    let answer = ask(
        server.local_addr(),
        "web.prod.reconcile.internal.",
        RecordType::AAAA,
    )
    .await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative);
    assert!(answer.answers.is_empty());
    assert!(answer
        .authorities
        .iter()
        .any(|r| r.record_type() == RecordType::SOA));
    server.shutdown().await;
}

#[tokio::test]
async fn v6_endpoints_answer_aaaa_and_get_dash_only_target_names() {
    let server = server_with(&[(
        "api.prod.reconcile.internal",
        vec![ep("fd00::1", 443), ep("10.0.0.7", 443)],
    )])
    .await;
    let addr = server.local_addr();
    let answer = ask(addr, "api.prod.reconcile.internal.", RecordType::AAAA).await;
    assert_eq!(ips(&answer), ip_set(&["fd00::1"]));
    let answer = ask(addr, "api.prod.reconcile.internal.", RecordType::A).await;
    assert_eq!(ips(&answer), ip_set(&["10.0.0.7"]));
    let target = ask(
        addr,
        "fd00-0-0-0-0-0-0-1.prod.reconcile.internal.",
        RecordType::AAAA,
    )
    .await;
    assert_eq!(ips(&target), ip_set(&["fd00::1"]));
    server.shutdown().await;
}

#[tokio::test]
async fn names_are_case_insensitive() {
    let server = server_with(&[web()]).await;
    let addr = server.local_addr();
    let answer = ask(addr, "WeB.PROD.Reconcile.INTERNAL.", RecordType::A).await;
    assert_eq!(ips(&answer), ip_set(&["10.0.0.5", "10.0.0.6"]));
    // The question comes back as asked (0x20-randomizing resolvers check it).
    assert_eq!(
        answer.queries[0].name().to_ascii(),
        "WeB.PROD.Reconcile.INTERNAL."
    );
    // Mixed-case keys given to set() work too.
    server.set(records(&[(
        "Mixed.Prod.reconcile.internal",
        vec![ep("10.0.0.9", 80)],
    )]));
    let answer = ask(addr, "mixed.prod.reconcile.internal.", RecordType::A).await;
    assert_eq!(ips(&answer), ip_set(&["10.0.0.9"]));
    server.shutdown().await;
}

#[tokio::test]
async fn other_names_are_forwarded_to_the_upstream_keeping_the_id() {
    let upstream = DnsServer::bind(LOCAL.parse().unwrap(), "upstream.test", Vec::new())
        .await
        .unwrap();
    upstream.set(records(&[("svc.upstream.test", vec![ep("192.0.2.1", 80)])]));
    let server = DnsServer::bind(
        LOCAL.parse().unwrap(),
        DEFAULT_DOMAIN,
        vec![upstream.local_addr()],
    )
    .await
    .unwrap();
    let addr = server.local_addr();

    let mut q = query("svc.upstream.test.", RecordType::A);
    q.metadata.id = 0x1234;
    let answer = udp(addr, &q).await;
    assert_eq!(answer.metadata.id, 0x1234);
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(ips(&answer), ip_set(&["192.0.2.1"]));
    // The upstream's authority, not ours.
    assert!(answer.metadata.authoritative);

    // A negative answer is relayed as is.
    let missing = ask(addr, "missing.upstream.test.", RecordType::A).await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);

    // Over TCP the forward goes over TCP too.
    let mut q = query("SVC.upstream.test.", RecordType::A);
    q.metadata.id = 0x4321;
    let answer = tcp(addr, &q).await;
    assert_eq!(answer.metadata.id, 0x4321);
    assert_eq!(ips(&answer), ip_set(&["192.0.2.1"]));
    server.shutdown().await;
    upstream.shutdown().await;
}

#[tokio::test]
async fn a_silent_upstream_is_skipped_for_the_next() {
    // Bound but never read: queries to it time out.
    let silent = UdpSocket::bind(LOCAL).await.unwrap();
    let upstream = DnsServer::bind(LOCAL.parse().unwrap(), "upstream.test", Vec::new())
        .await
        .unwrap();
    upstream.set(records(&[("svc.upstream.test", vec![ep("192.0.2.1", 80)])]));
    let server = DnsServer::bind(
        LOCAL.parse().unwrap(),
        DEFAULT_DOMAIN,
        vec![silent.local_addr().unwrap(), upstream.local_addr()],
    )
    .await
    .unwrap();
    let answer = ask(server.local_addr(), "svc.upstream.test.", RecordType::A).await;
    assert_eq!(ips(&answer), ip_set(&["192.0.2.1"]));
    drop(server);
    upstream.shutdown().await;
}

#[tokio::test]
async fn without_upstream_other_names_are_refused() {
    let server = server_with(&[web()]).await;
    let answer = ask(server.local_addr(), "example.com.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
    assert!(!answer.metadata.authoritative);
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_never_stops_the_server() {
    let server = server_with(&[web()]).await;
    let addr = server.local_addr();

    // Shorter than a header: dropped.
    assert_eq!(udp_raw(addr, &[0xde, 0xad]).await, None);
    // A header announcing a question that isn't there: FORMERR, same id.
    let mut truncated = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    truncated.extend_from_slice(&[3, b'w', b'e']);
    let reply = udp_raw(addr, &truncated).await.expect("a FORMERR");
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.id, 0xabcd);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    // Pseudo-random junk of every length up to 300 bytes.
    let mut seed: u32 = 0x9e37_79b9;
    for len in 0..300usize {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        let socket = UdpSocket::bind(LOCAL).await.unwrap();
        socket.send_to(&bytes, addr).await.unwrap();
    }
    // Junk over TCP: a length prefix promising more than comes, then close.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&[0x01, 0x00, 1, 2, 3]).await.unwrap();
    drop(stream);

    let answer = ask(addr, "web.prod.reconcile.internal.", RecordType::A).await;
    assert_eq!(ips(&answer), ip_set(&["10.0.0.5", "10.0.0.6"]));
    server.shutdown().await;
}

#[tokio::test]
async fn forwards_beyond_the_limit_are_dropped_at_once() {
    // Bound but never read: every forward to it waits its full timeout.
    let silent = UdpSocket::bind(LOCAL).await.unwrap();
    let forwarder =
        std::sync::Arc::new(forward::Forwarder::new(vec![silent.local_addr().unwrap()]));
    let bytes = query("example.com.", RecordType::A).to_vec().unwrap();
    let mut waiting = Vec::new();
    for _ in 0..forward::MAX_IN_FLIGHT {
        let (forwarder, bytes) = (forwarder.clone(), bytes.clone());
        waiting.push(tokio::spawn(async move {
            forwarder.forward(1, &bytes, false).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let extra = tokio::time::timeout(
        Duration::from_millis(500),
        forwarder.forward(1, &bytes, false),
    )
    .await
    .expect("the extra forward returns at once");
    assert!(matches!(extra, forward::Forwarded::Dropped));
    for task in waiting {
        task.abort();
    }
}

#[tokio::test]
async fn other_edns_versions_and_zone_transfers_are_turned_down() {
    let server = server_with(&[web()]).await;
    let addr = server.local_addr();
    let mut q = query("web.prod.reconcile.internal.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_version(1);
    q.set_edns(edns);
    let answer = udp(addr, &q).await;
    // BADVERS shares its number, 16, with BADSIG, which decoding picks.
    assert_eq!(u16::from(answer.metadata.response_code), 16);
    assert_eq!(answer.edns.as_ref().map(|e| e.version()), Some(0));
    let answer = tcp(addr, &query("reconcile.internal.", RecordType::AXFR)).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
    server.shutdown().await;
}

#[tokio::test]
async fn tcp_queries_are_answered() {
    let server = server_with(&[web()]).await;
    let q = query("_web._tcp.prod.reconcile.internal.", RecordType::SRV);
    let answer = tcp(server.local_addr(), &q).await;
    assert_eq!(answer.metadata.id, q.metadata.id);
    assert_eq!(srvs(&answer).len(), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn edns_queries_get_edns_back_and_big_udp_answers_truncate() {
    let many: Vec<Endpoint> = (1..=100u8)
        .map(|i| ep(&format!("10.1.0.{i}"), 80))
        .collect();
    let server = server_with(&[("big.prod.reconcile.internal", many)]).await;
    let addr = server.local_addr();

    // Plain DNS over UDP caps at 512 bytes: TC set, the client retries on TCP.
    let answer = ask(addr, "big.prod.reconcile.internal.", RecordType::A).await;
    assert!(answer.metadata.truncation);
    let full = tcp(addr, &query("big.prod.reconcile.internal.", RecordType::A)).await;
    assert!(!full.metadata.truncation);
    assert_eq!(full.answers.len(), 100);

    let mut q = query("big.prod.reconcile.internal.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    q.set_edns(edns);
    let answer = udp(addr, &q).await;
    assert!(answer.edns.is_some());
    assert!(!answer.metadata.truncation);
    assert_eq!(answer.answers.len(), 100);
    server.shutdown().await;
}

#[tokio::test]
async fn the_apex_answers_soa_and_names_outside_the_domain_are_not_served() {
    let server = server_with(&[web(), ("web.elsewhere.example", vec![ep("10.9.9.9", 80)])]).await;
    let addr = server.local_addr();
    let answer = ask(addr, "Reconcile.Internal.", RecordType::SOA).await;
    assert_eq!(answer.answers.len(), 1);
    assert_eq!(answer.answers[0].record_type(), RecordType::SOA);
    let answer = ask(addr, "web.elsewhere.example.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
    server.shutdown().await;
}

#[tokio::test]
async fn dropping_the_handle_stops_serving() {
    let server = server_with(&[web()]).await;
    let addr = server.local_addr();
    drop(server);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bytes = query("web.prod.reconcile.internal.", RecordType::A)
        .to_vec()
        .unwrap();
    assert_eq!(udp_raw(addr, &bytes).await, None);
}

#[tokio::test]
async fn bind_rejects_an_empty_domain() {
    let error = DnsServer::bind(LOCAL.parse().unwrap(), " . ", Vec::new())
        .await
        .err()
        .expect("an error");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn resolv_conf_nameservers_in_order_skipping_only_excluded() {
    let text = "\
# generated
search example.com
nameserver 127.0.0.53
nameserver 10.0.0.2 # office
nameserver   fd00::53
nameserver fe80::1%2
nameserver fe80::2%eth0
nameserver not-an-ip
nameserver 10.0.0.2
;nameserver 9.9.9.9
options edns0
nameserver 172.17.0.1
";
    let exclude: Vec<IpAddr> = vec![IpAddr::V4(Ipv4Addr::new(172, 17, 0, 1))];
    let got: Vec<String> = upstream_from_resolv_conf(text, &exclude)
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(
        got,
        [
            "127.0.0.53:53",
            "10.0.0.2:53",
            "[fd00::53]:53",
            "[fe80::1%2]:53"
        ]
    );
    assert!(upstream_from_resolv_conf("", &[]).is_empty());
}

/// `dig` resolves through us the way a container's tools would; skipped
/// when dnsutils is not installed.
#[tokio::test]
async fn dig_follows_the_srv_targets() {
    let Ok(probe) = std::process::Command::new("dig").arg("-v").output() else {
        eprintln!("dig not installed: skipping");
        return;
    };
    if !probe.status.success() {
        eprintln!("dig not usable: skipping");
        return;
    }
    let server = server_with(&[web()]).await;
    let addr = server.local_addr();
    let dig = |args: Vec<String>| async move {
        let out = tokio::time::timeout(
            WAIT,
            tokio::process::Command::new("dig").args(args).output(),
        )
        .await
        .expect("dig in time")
        .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let base = |name: &str, rtype: &str| {
        vec![
            format!("@{}", addr.ip()),
            "-p".into(),
            addr.port().to_string(),
            "+short".into(),
            "+tries=1".into(),
            "+time=3".into(),
            name.into(),
            rtype.into(),
        ]
    };
    let srv = dig(base("_web._tcp.prod.reconcile.internal", "SRV")).await;
    let targets: BTreeSet<&str> = srv
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert_eq!(targets.len(), 2, "{srv}");
    for target in targets {
        let a = dig(base(target, "A")).await;
        assert!(a.trim().starts_with("10.0.0."), "{target}: {a}");
    }
    let mut tcp_args = base("web.prod.reconcile.internal", "A");
    tcp_args.push("+tcp".into());
    let a = dig(tcp_args).await;
    assert_eq!(a.lines().count(), 2, "{a}");
    server.shutdown().await;
}

/// The agent keeps the handle in shared state and calls `set()` from its
/// reconcile loop while queries are served on other tasks.
#[test]
fn the_handle_can_be_shared_across_tasks() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<DnsServer>();
    shareable::<Endpoint>();
}
