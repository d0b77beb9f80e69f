//! TCP listener: one target connection per client connection, bytes copied
//! both ways until either side closes.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use super::{Lease, Shared, CONNECT_TIMEOUT, MAX_TRIES};

pub(super) async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
) {
    let routing = shared.routing();
    let mut tried = [usize::MAX; MAX_TRIES];
    let tries = routing.backends.len().min(MAX_TRIES);
    for attempt in 0..tries {
        let Some(i) = shared.pick(&routing, &tried[..attempt]) else {
            break;
        };
        tried[attempt] = i;
        let backend = &routing.backends[i];
        let lease = Lease::new(backend.clone());
        let connected =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend.addr)).await;
        let mut upstream = match connected {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(listener = %shared.name, target = %backend.id, addr = %backend.addr, error = %e, "target unreachable, trying another");
                backend.eject();
                continue;
            }
            Err(_) => {
                tracing::warn!(listener = %shared.name, target = %backend.id, addr = %backend.addr, "connect timed out, trying another");
                backend.eject();
                continue;
            }
        };
        lease.sent();
        let _ = upstream.set_nodelay(true);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(listener = %shared.name, %peer, target = %backend.id, error = %e, "tcp connection ended");
        }
        return;
    }
    tracing::warn!(listener = %shared.name, %peer, "no target reachable, closing client connection");
}
