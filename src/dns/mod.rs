//! Service discovery DNS, answered by every node's agent: a service with
//! `serviceRegistries` is `NAME.CLUSTER.<domain>`, and the task containers
//! of a node use its agent's server as their resolver. Names under the domain
//! are answered from [`Records`]; everything else is relayed to the host's
//! resolvers.
//!
//! For each name with endpoints the server answers:
//! - A/AAAA: the distinct endpoint addresses;
//! - SRV on the name and on `_NAME._tcp.CLUSTER.<domain>`: priority 1,
//!   weight 1, the endpoint's port, target `<ip-with-dashes>.CLUSTER.<domain>`
//!   which itself answers A/AAAA. A per-endpoint target (not the service name)
//!   because clients resolve the target and pair every address with the SRV's
//!   port: with several ports behind one name they would mix them up.
//!
//! Everything has a TTL of 5 s, negative answers included.

mod forward;
mod zone;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, Name, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

use forward::{Forwarded, Forwarder};
use zone::{Answer, Zone};

/// Where a service's task listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
}

/// Every name this server answers, fully qualified without the trailing dot,
/// lowercase, e.g. "web.prod.reconcile.internal".
pub type Records = BTreeMap<String, Vec<Endpoint>>;

/// The domain when the cluster configures none.
pub const DEFAULT_DOMAIN: &str = "reconcile.internal";

/// An idle TCP client is cut after this, so connections can't pile up.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The largest UDP answer we send to an EDNS client. Our clients are the
/// containers of this node, so path-MTU fragmentation (the reason for the
/// usual 1232) isn't a concern: honour what they ask, up to this.
const MAX_UDP_PAYLOAD: u16 = 4096;

/// The current zone, swapped whole by `set()` so a query sees the old or the
/// new records, never a mix.
struct Shared {
    origin: Name,
    serial: AtomicU32,
    zone: RwLock<Arc<Zone>>,
}

impl Shared {
    fn current(&self) -> Arc<Zone> {
        self.zone
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A running server; dropping it or calling [`DnsServer::shutdown`] stops
/// serving.
pub struct DnsServer {
    server: Server<Handler>,
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl DnsServer {
    /// Serve UDP and TCP on `addr` (port 0: one free port for both). Names
    /// under `domain` are answered from the records; others are forwarded to
    /// `upstream` (see [`upstream_from_resolv_conf`]) or REFUSED when there is
    /// none.
    pub async fn bind(
        addr: SocketAddr,
        domain: &str,
        upstream: Vec<SocketAddr>,
    ) -> std::io::Result<DnsServer> {
        let origin = zone::parse_name(domain).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("not a DNS domain: {domain:?}"),
            )
        })?;
        let (udp, tcp) = bind_pair(addr).await?;
        let local_addr = udp.local_addr()?;

        let shared = Arc::new(Shared {
            zone: RwLock::new(Arc::new(Zone::build(&origin, 1, &Records::new()))),
            origin: origin.clone(),
            serial: AtomicU32::new(1),
        });
        let handler = Handler {
            origin: LowerName::new(&origin),
            shared: shared.clone(),
            forwarder: (!upstream.is_empty()).then(|| Forwarder::new(upstream.clone())),
        };
        let mut server = Server::new(handler);
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE, 64);
        tracing::info!(addr = %local_addr, domain = %origin, ?upstream, "DNS: serving");
        Ok(DnsServer {
            server,
            shared,
            local_addr,
        })
    }

    /// The address the server answers on (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Replace the records atomically; the next query sees them.
    pub fn set(&self, records: Records) {
        let serial = self.shared.serial.fetch_add(1, Ordering::Relaxed) + 1;
        let zone = Arc::new(Zone::build(&self.shared.origin, serial, &records));
        *self
            .shared
            .zone
            .write()
            .unwrap_or_else(PoisonError::into_inner) = zone;
    }

    /// Stop serving and wait (briefly) for the sockets to close.
    pub async fn shutdown(mut self) {
        self.server.shutdown_token().cancel();
        match tokio::time::timeout(Duration::from_secs(5), self.server.block_until_done()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "DNS: server stopped with an error"),
            Err(_) => tracing::warn!("DNS: server did not stop within 5 s"),
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        // The server's tasks are aborted with it anyway; cancelling first lets
        // them leave their loops cleanly.
        self.server.shutdown_token().cancel();
    }
}

/// UDP and TCP on the same port. With port 0 the kernel picks the UDP port,
/// which may be taken for TCP: then pick again.
async fn bind_pair(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut attempts = 0;
    loop {
        let udp = UdpSocket::bind(addr).await?;
        let bound = udp.local_addr()?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error)
                if addr.port() == 0
                    && error.kind() == std::io::ErrorKind::AddrInUse
                    && attempts < 20 =>
            {
                attempts += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

struct Handler {
    origin: LowerName,
    shared: Arc<Shared>,
    forwarder: Option<Forwarder>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        match self.respond(request, response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(%error, "DNS: could not send a response");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

type SendResult = Result<ResponseInfo, hickory_server::net::NetError>;

impl Handler {
    async fn respond<R: ResponseHandler>(&self, request: &Request, mut response: R) -> SendResult {
        // hickory sizes a UDP answer to the EDNS of the response.
        let payload = request.max_payload().min(MAX_UDP_PAYLOAD);
        let edns = request.edns.as_ref().map(|_| {
            let mut edns = Edns::new();
            edns.set_max_payload(payload);
            edns
        });
        let mut builder = MessageResponseBuilder::new(&request.queries, None);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let error = |code| {
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = code;
            metadata.recursion_available = self.forwarder.is_some();
            metadata
        };

        if request.metadata.op_code != OpCode::Query {
            return response
                .send_response(builder.build_no_records(error(ResponseCode::NotImp)))
                .await;
        }
        let query = match request.queries.queries() {
            [query] => query,
            _ => {
                return response
                    .send_response(builder.build_no_records(error(ResponseCode::FormErr)))
                    .await;
            }
        };

        // RFC 6891: only EDNS version 0 exists.
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return response
                .send_response(builder.build_no_records(error(ResponseCode::BADVERS)))
                .await;
        }

        if self.origin.zone_of(query.name()) {
            // No zone transfers: the records are the agent's, not a zone to copy.
            let transfer = matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR);
            if query.query_class() != DNSClass::IN || transfer {
                return response
                    .send_response(builder.build_no_records(error(ResponseCode::Refused)))
                    .await;
            }
            let zone = self.shared.current();
            let mut metadata = error(ResponseCode::NoError);
            metadata.authoritative = true;
            return match zone.lookup(query.name(), query.query_type()) {
                Answer::Records {
                    answers,
                    additionals,
                } => {
                    let message = builder.build(metadata, answers, None, None, additionals);
                    response.send_response(message).await
                }
                Answer::NoData => {
                    let message = builder.build(metadata, None, [&zone.soa], None, None);
                    response.send_response(message).await
                }
                Answer::NxDomain => {
                    metadata.response_code = ResponseCode::NXDomain;
                    let message = builder.build(metadata, None, [&zone.soa], None, None);
                    response.send_response(message).await
                }
            };
        }

        let Some(forwarder) = &self.forwarder else {
            return response
                .send_response(builder.build_no_records(error(ResponseCode::Refused)))
                .await;
        };
        let tcp = request.protocol() == Protocol::Tcp;
        match forwarder
            .forward(request.metadata.id, request.as_slice(), tcp)
            .await
        {
            Forwarded::Answer(answer) => {
                // Re-encoded for the client: our question section (the
                // client's exact bytes of it), the upstream's header and
                // records, sized to what the client accepts over UDP.
                let mut relayed_edns = answer.edns.clone();
                if let Some(edns) = &mut relayed_edns {
                    edns.set_max_payload(payload);
                }
                let mut builder = MessageResponseBuilder::new(&request.queries, None);
                if let Some(edns) = &relayed_edns {
                    builder.edns(edns);
                }
                let message = builder.build(
                    answer.metadata,
                    &answer.answers,
                    &answer.authorities,
                    None,
                    &answer.additionals,
                );
                response.send_response(message).await
            }
            Forwarded::Dropped => Ok(ResponseInfo::from(Header {
                metadata: error(ResponseCode::ServFail),
                counts: HeaderCounts::default(),
            })),
            Forwarded::Failed => {
                response
                    .send_response(builder.build_no_records(error(ResponseCode::ServFail)))
                    .await
            }
        }
    }
}

/// The nameservers of a resolv.conf text, on port 53, in order and without
/// duplicates, skipping only addresses equal to one of `exclude` (our own
/// listening addresses, which would loop). A loopback nameserver is kept:
/// on the host it is a real resolver (systemd-resolved, dnsmasq).
pub fn upstream_from_resolv_conf(text: &str, exclude: &[IpAddr]) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(word) = words.next() else { continue };
        let Some(addr) = parse_nameserver(word) else {
            continue;
        };
        if exclude.contains(&addr.ip()) || out.contains(&addr) {
            continue;
        }
        out.push(addr);
    }
    out
}

/// `1.2.3.4`, `fd00::1`, or `fe80::1%3` (a numeric zone; interface names
/// can't be resolved here and such entries are skipped).
fn parse_nameserver(word: &str) -> Option<SocketAddr> {
    let (ip, zone) = match word.split_once('%') {
        Some((ip, zone)) => (ip, Some(zone)),
        None => (word, None),
    };
    let ip: IpAddr = ip.parse().ok()?;
    match (ip, zone) {
        (ip, None) => Some(SocketAddr::new(ip, 53)),
        (IpAddr::V6(v6), Some(zone)) => {
            let scope = zone.parse().ok()?;
            Some(std::net::SocketAddrV6::new(v6, 53, 0, scope).into())
        }
        (IpAddr::V4(_), Some(_)) => None,
    }
}
