//! Relaying queries outside our domain to the host's resolvers, so task
//! containers keep resolving the rest of the world through us.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;

/// How long one upstream gets before the next is tried (glibc waits 5 s by
/// default; containers retry quicker than that, so give up sooner).
pub(crate) const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Forwards in flight at once; beyond this queries are dropped (the client
/// retries) rather than piling up sockets and memory under a flood.
pub(crate) const MAX_IN_FLIGHT: usize = 256;

pub(crate) enum Forwarded {
    Answer(Message),
    /// Too many forwards in flight: send nothing.
    Dropped,
    /// No upstream answered.
    Failed,
}

pub(crate) struct Forwarder {
    upstream: Vec<SocketAddr>,
    in_flight: Arc<Semaphore>,
}

impl Forwarder {
    pub(crate) fn new(upstream: Vec<SocketAddr>) -> Self {
        Forwarder {
            upstream,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// Sends the client's query bytes unchanged (same id, flags, EDNS) to
    /// each upstream in turn until one answers.
    pub(crate) async fn forward(&self, id: u16, query: &[u8], tcp: bool) -> Forwarded {
        let Ok(_permit) = self.in_flight.try_acquire() else {
            tracing::debug!("DNS: too many forwards in flight, dropping a query");
            return Forwarded::Dropped;
        };
        for upstream in &self.upstream {
            let exchange = async {
                if tcp {
                    exchange_tcp(*upstream, id, query).await
                } else {
                    exchange_udp(*upstream, id, query).await
                }
            };
            match tokio::time::timeout(UPSTREAM_TIMEOUT, exchange).await {
                Ok(Ok(answer)) => return Forwarded::Answer(answer),
                Ok(Err(error)) => {
                    tracing::debug!(%upstream, %error, "DNS: upstream failed, trying the next");
                }
                Err(_) => tracing::debug!(%upstream, "DNS: upstream timed out, trying the next"),
            }
        }
        Forwarded::Failed
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// A response to our query: right id, marked a response, and parseable
/// (we re-encode it for the client).
fn accept(id: u16, bytes: &[u8]) -> Option<Message> {
    let message = Message::from_vec(bytes).ok()?;
    (message.metadata.id == id && message.metadata.message_type == MessageType::Response)
        .then_some(message)
}

async fn exchange_udp(upstream: SocketAddr, id: u16, query: &[u8]) -> std::io::Result<Message> {
    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    // A fresh socket per query: a random source port, and connect() makes
    // the kernel drop datagrams from anyone but the upstream.
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = socket.recv(&mut buf).await?;
        if let Some(message) = accept(id, &buf[..n]) {
            return Ok(message);
        }
    }
}

async fn exchange_tcp(upstream: SocketAddr, id: u16, query: &[u8]) -> std::io::Result<Message> {
    let len = u16::try_from(query.len()).map_err(|_| invalid("query too long"))?;
    let mut stream = TcpStream::connect(upstream).await?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    accept(id, &buf).ok_or_else(|| invalid("not a response to our query"))
}
