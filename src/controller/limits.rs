//! Bounds on what clients may ask of the controller, pure (the time is
//! always passed in, so tests drive a clock of their own):
//! - [`Limiter`]: token buckets per peer address, plus one for everybody,
//!   for routes anyone can reach (`POST /v1/webhook`);
//! - [`Replays`]: what was already delivered, so a captured webhook sent
//!   again is refused;
//! - [`LogGate`]: at most one log line a second for an event a client can
//!   repeat at will, with the count of those not logged.
//!
//! Memory is bounded everywhere: the number of addresses and deliveries
//! remembered is capped, the oldest going first.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A sustained rate and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl Rate {
    pub const fn new(per_second: f64, burst: f64) -> Rate {
        Rate { per_second, burst }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: rate.burst,
            at: now,
        }
    }

    /// The tokens at `now` (a clock that went backwards adds none).
    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.at = self.at.max(now);
    }

    /// How long until a token is there (zero: there is one now).
    fn wait(&self, rate: Rate) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else if rate.per_second <= 0.0 {
            Duration::MAX
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / rate.per_second)
        }
    }
}

struct Buckets {
    global: Bucket,
    peers: HashMap<IpAddr, Bucket>,
}

/// Token buckets keyed by peer address, and one for all peers together.
/// A request needs a token from both; when either is empty it is refused
/// and neither is charged, so a refused flood from one address does not
/// drain what others may use.
pub struct Limiter {
    per_peer: Rate,
    global: Rate,
    max_peers: usize,
    buckets: Mutex<Buckets>,
}

/// The key of a peer: its address, or for IPv6 its /64, which one host
/// usually owns whole (else it could take a new key per request).
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

impl Limiter {
    /// `per_peer` for each address, `global` for all together, remembering
    /// at most `max_peers` addresses (the least recently seen are forgotten
    /// first; a forgotten address starts again with a full bucket).
    pub fn new(per_peer: Rate, global: Rate, max_peers: usize, now: Instant) -> Limiter {
        Limiter {
            per_peer,
            global,
            max_peers: max_peers.max(1),
            buckets: Mutex::new(Buckets {
                global: Bucket::full(global, now),
                peers: HashMap::new(),
            }),
        }
    }

    /// Take a token for a request from `ip` at `now`, or say how long to
    /// wait before asking again.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let ip = key(ip);
        let mut guard = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = &mut *guard;
        b.global.refill(self.global, now);
        if !b.peers.contains_key(&ip) && b.peers.len() >= self.max_peers {
            self.evict(&mut b.peers, now);
        }
        let peer = b
            .peers
            .entry(ip)
            .or_insert_with(|| Bucket::full(self.per_peer, now));
        peer.refill(self.per_peer, now);
        let wait = peer.wait(self.per_peer).max(b.global.wait(self.global));
        if wait > Duration::ZERO {
            return Err(wait);
        }
        peer.tokens -= 1.0;
        b.global.tokens -= 1.0;
        Ok(())
    }

    /// Make room for one more address: forget those whose bucket has
    /// refilled (they are as good as new), else the least recently seen.
    fn evict(&self, peers: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let rate = self.per_peer;
        peers.retain(|_, b| {
            let mut b = *b;
            b.refill(rate, now);
            b.tokens < rate.burst
        });
        if peers.len() >= self.max_peers {
            if let Some(oldest) = peers.iter().min_by_key(|(_, b)| b.at).map(|(ip, _)| *ip) {
                peers.remove(&oldest);
            }
        }
    }

    /// Addresses remembered now (for tests and diagnostics).
    pub fn peers(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .peers
            .len()
    }
}

/// Keys recorded: when, by key, and in the order recorded (to forget the
/// oldest first).
#[derive(Default)]
struct Seen {
    by_key: HashMap<[u8; 32], Instant>,
    order: VecDeque<([u8; 32], Instant)>,
}

/// Keys (digests) seen within a window, at most `max` of them.
pub struct Replays {
    window: Duration,
    max: usize,
    seen: Mutex<Seen>,
}

impl Replays {
    pub fn new(window: Duration, max: usize) -> Replays {
        Replays {
            window,
            max: max.max(1),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Whether any of `keys` was recorded within the window before `now`;
    /// if none was, all are recorded (at `now`).
    pub fn check_and_record(&self, keys: &[[u8; 32]], now: Instant) -> bool {
        let mut guard = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let Seen { by_key: map, order } = &mut *guard;
        // Forget what is older than the window.
        while let Some(&(k, at)) = order.front() {
            if now.saturating_duration_since(at) < self.window {
                break;
            }
            order.pop_front();
            if map.get(&k) == Some(&at) {
                map.remove(&k);
            }
        }
        if keys.iter().any(|k| map.contains_key(k)) {
            return true;
        }
        for k in keys {
            while order.len() >= self.max {
                if let Some((old, at)) = order.pop_front() {
                    if map.get(&old) == Some(&at) {
                        map.remove(&old);
                    }
                }
            }
            map.insert(*k, now);
            order.push_back((*k, now));
        }
        false
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_key
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Lets through one log line a second for an event clients can repeat,
/// counting the rest.
#[derive(Default)]
pub struct LogGate {
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogGate {
    /// Count an event at `now`; `Some(n)` when it is time to log it, `n`
    /// being the events since the last line (this one included).
    pub fn hit(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.1 += 1;
        match s.0 {
            Some(last) if now.saturating_duration_since(last) < Duration::from_secs(1) => None,
            _ => {
                let n = s.1;
                *s = (Some(now), 0);
                Some(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_peer_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let l = Limiter::new(Rate::new(10.0, 20.0), Rate::new(1000.0, 1000.0), 16, t0);
        for _ in 0..20 {
            assert_eq!(l.check(ip("10.0.0.1"), t0), Ok(()));
        }
        let wait = l.check(ip("10.0.0.1"), t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(99) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        // Another address has its own bucket.
        assert_eq!(l.check(ip("10.0.0.2"), t0), Ok(()));
        // A tenth of a second later, one more.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(l.check(ip("10.0.0.1"), t1), Ok(()));
        assert!(l.check(ip("10.0.0.1"), t1).is_err());
        // A clock going backwards gives nothing.
        assert!(l.check(ip("10.0.0.1"), t0).is_err());
        // Refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..20 {
            assert_eq!(l.check(ip("10.0.0.1"), t2), Ok(()));
        }
        assert!(l.check(ip("10.0.0.1"), t2).is_err());
    }

    #[test]
    fn the_global_bucket_bounds_all_peers_and_refusals_cost_nothing() {
        let t0 = Instant::now();
        let l = Limiter::new(Rate::new(1.0, 2.0), Rate::new(1.0, 5.0), 100, t0);
        let mut ok = 0;
        for i in 0..50 {
            if l.check(ip(&format!("10.0.1.{i}")), t0).is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 5);
        let wait = l.check(ip("10.0.2.1"), t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        // One peer refused by its own bucket does not drain the global one.
        let t1 = t0 + Duration::from_secs(3);
        let l = Limiter::new(Rate::new(1.0, 2.0), Rate::new(1.0, 3.0), 100, t0);
        for _ in 0..100 {
            let _ = l.check(ip("10.0.3.1"), t1);
        }
        assert_eq!(l.check(ip("10.0.3.2"), t1), Ok(()));
    }

    #[test]
    fn addresses_remembered_are_bounded_and_ipv6_is_keyed_by_its_64() {
        let t0 = Instant::now();
        let l = Limiter::new(Rate::new(1.0, 1.0), Rate::new(1e9, 1e9), 8, t0);
        for i in 0..100u32 {
            let _ = l.check(
                IpAddr::from(i.to_be_bytes()),
                t0 + Duration::from_millis(i.into()),
            );
            assert!(l.peers() <= 8);
        }
        // The most recent address is still remembered (and empty).
        assert!(l
            .check(
                IpAddr::from(99u32.to_be_bytes()),
                t0 + Duration::from_millis(99)
            )
            .is_err());
        // Every address of one /64 shares a bucket.
        assert_eq!(l.check(ip("2001:db8:1:2::1"), t0), Ok(()));
        assert!(l.check(ip("2001:db8:1:2:ffff::9"), t0).is_err());
        assert_eq!(l.check(ip("2001:db8:1:3::1"), t0), Ok(()));
        // An IPv4-mapped address is its IPv4 address.
        assert_eq!(l.check(ip("192.0.2.7"), t0), Ok(()));
        assert!(l.check(ip("::ffff:192.0.2.7"), t0).is_err());
    }

    #[test]
    fn replays_are_seen_within_the_window_only_and_memory_is_bounded() {
        let t0 = Instant::now();
        let r = Replays::new(Duration::from_secs(600), 4);
        let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        assert!(!r.check_and_record(&[a, b], t0));
        assert!(r.check_and_record(&[a], t0 + Duration::from_secs(1)));
        // One known key is enough; the unknown one is not recorded then.
        assert!(r.check_and_record(&[c, b], t0 + Duration::from_secs(2)));
        assert!(!r.check_and_record(&[c], t0 + Duration::from_secs(3)));
        assert!(r.check_and_record(&[c], t0 + Duration::from_secs(3)));
        // After the window, a key is new again.
        assert!(!r.check_and_record(&[a], t0 + Duration::from_secs(601)));
        assert_eq!(r.len(), 2, "b was forgotten, c and a remain");
        for i in 10..20u8 {
            assert!(!r.check_and_record(&[[i; 32]], t0 + Duration::from_secs(602)));
            assert!(r.len() <= 4);
        }
    }

    #[test]
    fn the_log_gate_lets_one_line_a_second_through_with_a_count() {
        let t0 = Instant::now();
        let g = LogGate::default();
        assert_eq!(g.hit(t0), Some(1));
        for i in 0..9 {
            assert_eq!(g.hit(t0 + Duration::from_millis(i * 100)), None);
        }
        assert_eq!(g.hit(t0 + Duration::from_secs(1)), Some(10));
        assert_eq!(g.hit(t0 + Duration::from_secs(5)), Some(1));
    }
}
