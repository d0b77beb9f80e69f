//! Dynamic host ports, chosen by the runtime rather than by Docker.
//!
//! Left to pick, Docker gives the IPv4 and IPv6 bindings of one mapping
//! different host ports on a host with IPv6 (`0.0.0.0:32847` and
//! `[::]:32845`), so a task would have two host ports per mapping where
//! ECS reports one. A port chosen here, free in both families, is passed
//! to Docker explicitly and both families bind it.
//!
//! The choice is a probe in this process's network namespace; the engine
//! may live in another one (or another process may take the port first),
//! so a start that finds the port taken is retried with fresh ports
//! ([`is_port_conflict`]).

use std::collections::VecDeque;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::manifest::task_definition::Protocol;

/// How often a start is tried with fresh ports when its ports were taken.
pub const ATTEMPTS: usize = 5;

/// Ports handed out recently: a port is not handed out twice while the
/// container it was chosen for may not have bound it yet.
static RECENT: Mutex<VecDeque<(u16, Instant)>> = Mutex::new(VecDeque::new());
const RECENT_FOR: Duration = Duration::from_secs(60);

/// Whether a socket of `protocol` can bind `addr` now.
fn bindable(protocol: Protocol, addr: SocketAddr) -> std::io::Result<u16> {
    match protocol {
        Protocol::Tcp => TcpListener::bind(addr)?.local_addr().map(|a| a.port()),
        Protocol::Udp => UdpSocket::bind(addr)?.local_addr().map(|a| a.port()),
    }
}

/// Whether the IPv6 side of a port is free. A host without IPv6 has no
/// such side: any port is free there.
fn free_v6(protocol: Protocol, port: u16) -> bool {
    match bindable(protocol, SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::AddrInUse,
    }
}

/// Whether something on this host holds `port` on the wildcard address
/// of either family (what a published port binds).
pub fn in_use(protocol: Protocol, port: u16) -> bool {
    let taken = |addr: SocketAddr| matches!(bindable(protocol, addr), Err(e) if e.kind() == std::io::ErrorKind::AddrInUse);
    taken(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
        || taken(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
}

/// A host port free on IPv4 and IPv6 from the kernel's ephemeral range,
/// not handed out in the last minute.
pub fn pick(protocol: Protocol) -> Result<u16, String> {
    let mut recent = RECENT.lock().unwrap_or_else(|p| p.into_inner());
    while recent
        .front()
        .is_some_and(|(_, at)| at.elapsed() > RECENT_FOR)
    {
        recent.pop_front();
    }
    for _ in 0..64 {
        let port = bindable(protocol, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
            .map_err(|e| format!("finding a free host port: {e}"))?;
        if recent.iter().any(|(p, _)| *p == port) || !free_v6(protocol, port) {
            continue;
        }
        recent.push_back((port, Instant::now()));
        return Ok(port);
    }
    Err("finding a free host port: no port free on both IPv4 and IPv6".into())
}

/// Whether a start failed because a host port it asked for was taken.
pub fn is_port_conflict(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("port is already allocated") || m.contains("address already in use")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picked_ports_are_free_in_both_families_and_not_repeated() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let p = pick(Protocol::Tcp).unwrap();
            assert!(seen.insert(p), "port {p} handed out twice");
            // Free right now on IPv4, and on IPv6 where the host has it.
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, p)).unwrap();
            assert!(free_v6(Protocol::Tcp, p));
        }
        let u = pick(Protocol::Udp).unwrap();
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, u)).unwrap();
    }

    #[test]
    fn a_held_port_is_in_use_and_a_released_one_is_not() {
        let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(in_use(Protocol::Tcp, port));
        drop(l);
        assert!(!in_use(Protocol::Tcp, port));
    }

    #[test]
    fn a_port_taken_on_ipv6_is_not_free() {
        // Only meaningful where the host has IPv6.
        let Ok(l) = TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)) else {
            return;
        };
        let port = l.local_addr().unwrap().port();
        assert!(!free_v6(Protocol::Tcp, port));
    }

    #[test]
    fn docker_port_conflicts_are_recognised() {
        assert!(is_port_conflict(
            "Bind for 0.0.0.0:40001 failed: port is already allocated"
        ));
        assert!(is_port_conflict(
            "listen tcp6 [::]:40001: bind: address already in use"
        ));
        assert!(!is_port_conflict("no such image"));
    }
}
