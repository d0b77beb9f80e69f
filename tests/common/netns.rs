//! Several "hosts" on one Linux machine, for integration tests: a bridge in
//! the root network namespace and one network namespace per host, each wired
//! to the bridge by a veth pair. Needs root and iproute2 (`ip`).
//!
//! Self-contained so any test file can include it with
//! `#[path = "common/netns.rs"] mod netns;`.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Hosts get .2 ..= .254 of their /24; the bridge has .1.
const MAX_HOSTS: usize = 253;

/// Number of /24 subnets in 10.200.0.0 ..= 10.249.249.0 (50 × 250).
const SLOTS: u32 = 12_500;

/// Labs created by this process: tests in one binary run in parallel, so
/// the pid alone does not make names unique.
static LABS: AtomicU32 = AtomicU32::new(0);

/// Subnet slots held by live labs of this process. Another lab's slot is
/// only visible in the routing table once its bridge has an address, which
/// is too late for a lab being created concurrently.
static RESERVED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// A bridge plus `hosts` network namespaces. Dropping it removes everything
/// it created, including processes still running inside the namespaces.
pub struct Lab {
    /// Start of every name: ≤3 chars of the caller's prefix, the pid
    /// (5 base-36 digits) and the lab counter (2), so at most 10 chars and
    /// "{tag}h252" still fits the 15-char interface name limit.
    tag: String,
    bridge: String,
    bridge_created: bool,
    slot: u32,
    /// Namespaces and root-side veth ends created so far; `Drop` relies on
    /// these being accurate after a partial `new`.
    namespaces: Vec<String>,
    veths: Vec<String>,
    /// `iptables` rule specs (chain first) inserted by this lab.
    rules: Vec<Vec<String>>,
}

impl Lab {
    pub fn new(prefix: &str, hosts: usize) -> io::Result<Lab> {
        if hosts == 0 || hosts > MAX_HOSTS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a lab has 1..={MAX_HOSTS} hosts, not {hosts}"),
            ));
        }
        let pid = std::process::id();
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{}{}", short(prefix), base36(pid, 5), base36(n, 2));
        let slot = reserve_slot(pid, n)?;
        let mut lab = Lab {
            bridge: format!("{tag}br"),
            tag,
            bridge_created: false,
            slot,
            namespaces: Vec::new(),
            veths: Vec::new(),
            rules: Vec::new(),
        };
        // On error `lab` is dropped here, removing whatever was made.
        lab.build(hosts)?;
        Ok(lab)
    }

    fn build(&mut self, hosts: usize) -> io::Result<()> {
        let tag = self.tag.clone();
        let gateway = self.bridge_ip().to_string();
        ip(&["link", "add", &self.bridge, "type", "bridge"])?;
        self.bridge_created = true;
        ip(&["addr", "add", &format!("{gateway}/24"), "dev", &self.bridge])?;
        ip(&["link", "set", &self.bridge, "up"])?;
        for i in 0..hosts {
            let ns = format!("{tag}ns{i}");
            ip(&["netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
            let outer = format!("{tag}h{i}");
            let inner = format!("{tag}n{i}");
            // Creating the peer directly inside the namespace means it never
            // exists in the root namespace.
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", &ns,
            ])?;
            self.veths.push(outer.clone());
            ip(&["link", "set", &outer, "master", &self.bridge, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let addr = format!("{}/24", self.host_ip(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &inner])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            ip(&["-n", &ns, "route", "add", "default", "via", &gateway])?;
        }
        self.allow_bridged_traffic()
    }

    /// With `br_netfilter` loaded (Docker loads it), frames bridged between
    /// two ports of our bridge traverse iptables' FORWARD chain, whose policy
    /// Docker sets to DROP. Accept our bridge's traffic first thing: in
    /// DOCKER-USER when it exists, since Docker evaluates that chain before
    /// its own rules and leaves it alone.
    fn allow_bridged_traffic(&mut self) -> io::Result<()> {
        if !Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
            return Ok(());
        }
        let chain = match run("iptables", &["-w", "-n", "-L", "DOCKER-USER"]) {
            Ok(_) => "DOCKER-USER",
            // Without iptables nobody installed iptables rules to get past.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(_) => "FORWARD",
        };
        for dir in ["-i", "-o"] {
            let spec: Vec<String> = [
                chain,
                dir,
                self.bridge.as_str(),
                "-m",
                "comment",
                "--comment",
                self.tag.as_str(),
                "-j",
                "ACCEPT",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let mut args = vec!["-w", "-I"];
            args.extend(spec.iter().map(String::as_str));
            run("iptables", &args)?;
            self.rules.push(spec);
        }
        Ok(())
    }

    /// The prefix every name of this lab starts with; also the comment on
    /// its iptables rules.
    pub fn prefix(&self) -> &str {
        &self.tag
    }

    /// The root namespace's address on the bridge (.1): a server listening
    /// here is reachable from every host.
    pub fn bridge_ip(&self) -> Ipv4Addr {
        let [a, b] = slot_octets(self.slot);
        Ipv4Addr::new(10, a, b, 1)
    }

    /// Host `i`'s address (.2 for host 0, and so on).
    pub fn host_ip(&self, i: usize) -> Ipv4Addr {
        assert!(i < MAX_HOSTS, "host {i} out of range");
        let [a, b] = slot_octets(self.slot);
        Ipv4Addr::new(10, a, b, 2 + i as u8)
    }

    /// Host `i`'s network namespace name (for `ip netns exec`, `nsenter
    /// --net=/run/netns/NAME`, ...).
    pub fn netns(&self, i: usize) -> &str {
        &self.namespaces[i]
    }

    pub fn hosts(&self) -> usize {
        self.namespaces.len()
    }

    /// A command running `program` inside host `i`'s namespace; add args
    /// and env, then spawn it.
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.netns(i), program]);
        cmd
    }

    /// Cut host `i` off the network: its link loses carrier, as if the
    /// cable were pulled. Its address and routes stay.
    pub fn disconnect(&self, i: usize) {
        if let Err(e) = ip(&["link", "set", &self.veths[i], "down"]) {
            panic!("disconnect host {i}: {e}");
        }
    }

    /// Undo [`Lab::disconnect`]. Returns once host `i`'s link has carrier
    /// again, so traffic can flow right away.
    pub fn reconnect(&self, i: usize) {
        let ns = self.netns(i);
        let inner = format!("{}n{i}", self.tag);
        let gateway = self.bridge_ip().to_string();
        let result = ip(&["link", "set", &self.veths[i], "up"])
            // The default route survives a carrier loss, but a caller (or the
            // kernel with ignore_routes_with_linkdown) may have removed it.
            .and_then(|_| ip(&["-n", ns, "route", "replace", "default", "via", &gateway]))
            // Connects tried while cut left the neighbours FAILED: the
            // kernel answers "No route to host" until it probes again,
            // which can take seconds. Forget them so the next packet asks.
            .and_then(|_| ip(&["-n", ns, "neigh", "flush", "dev", &inner]))
            .and_then(|_| ip(&["neigh", "flush", "dev", &self.bridge]));
        if let Err(e) = result {
            panic!("reconnect host {i}: {e}");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match ip(&["-n", ns, "-o", "link", "show", "dev", &inner]) {
                Ok(out) if String::from_utf8_lossy(&out.stdout).contains("LOWER_UP") => return,
                _ if Instant::now() > deadline => {
                    panic!("reconnect host {i}: {inner} in {ns} has no carrier after 5s")
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for spec in self.rules.drain(..).rev() {
            let mut args = vec!["-w", "-D"];
            args.extend(spec.iter().map(String::as_str));
            cleanup(run("iptables", &args));
        }
        // A namespace outlives `ip netns del` while processes still use it,
        // so get rid of them first.
        for ns in &self.namespaces {
            kill_all_in(ns);
        }
        // Deleting the root-side end removes the whole pair, whatever the
        // namespace's fate.
        for veth in &self.veths {
            cleanup(ip(&["link", "del", veth]));
        }
        for ns in &self.namespaces {
            cleanup(ip(&["netns", "del", ns]));
        }
        if self.bridge_created {
            cleanup(ip(&["link", "del", &self.bridge]));
        }
        lock_reserved().remove(&self.slot);
    }
}

/// Why labs cannot be created here, if they cannot: not root, or `ip
/// netns`/bridges unusable (e.g. an unprivileged container). Tests should
/// skip (see `prereq.rs`) only on this and fail on any later error.
pub fn unavailable() -> Option<String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(probe)
        .as_ref()
        .err()
        .map(|why| format!("network namespaces are unavailable: {why}"))
}

fn probe() -> Result<(), String> {
    if !is_root() {
        return Err("not running as root (needs CAP_SYS_ADMIN and CAP_NET_ADMIN)".into());
    }
    let name = format!("nlp{}", base36(std::process::id(), 5));
    ip(&["netns", "add", &name]).map_err(|e| format!("cannot create a namespace: {e}"))?;
    let exec = ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
    cleanup(ip(&["netns", "del", &name]));
    exec.map_err(|e| format!("cannot run commands in a namespace: {e}"))?;
    ip(&["link", "add", &name, "type", "bridge"])
        .map_err(|e| format!("cannot create a bridge: {e}"))?;
    cleanup(ip(&["link", "del", &name]));
    Ok(())
}

fn is_root() -> bool {
    // Effective uid: second field of the `Uid:` line.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Kill every process in `ns`, waiting (briefly) until none is left.
fn kill_all_in(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let pids: Vec<String> = match ip(&["netns", "pids", ns]) {
            Ok(out) => String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            Err(_) => return,
        };
        if pids.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            eprintln!("netns lab cleanup: processes {pids:?} survive in {ns}");
            return;
        }
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .stderr(Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pick a /24 nobody uses: start from the pid so parallel test binaries
/// spread out, step by the lab counter so one binary's labs differ, and
/// skip anything already routed on this machine.
fn reserve_slot(pid: u32, n: u32) -> io::Result<u32> {
    let mut reserved = lock_reserved();
    let start = (pid.wrapping_mul(8).wrapping_add(n)) % SLOTS;
    for k in 0..SLOTS {
        let slot = (start + k) % SLOTS;
        if reserved.contains(&slot) {
            continue;
        }
        let [a, b] = slot_octets(slot);
        if subnet_in_use(&format!("10.{a}.{b}.0/24"))? {
            continue;
        }
        reserved.insert(slot);
        return Ok(slot);
    }
    Err(io::Error::other("no free /24 in 10.200.0.0-10.249.249.0"))
}

fn slot_octets(slot: u32) -> [u8; 2] {
    [(200 + slot % 50) as u8, (slot / 50) as u8]
}

/// Whether any route other than a default one covers, or lies inside, `net`.
fn subnet_in_use(net: &str) -> io::Result<bool> {
    for filter in ["match", "root"] {
        let out = ip(&["-4", "-o", "route", "show", "table", "all", filter, net])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let busy = text.lines().any(|l| {
            // Non-unicast routes start with their type: "local 10.x.y.1 ...".
            let mut words = l.split_whitespace().skip_while(|w| is_route_type(w));
            words.next().is_some_and(|dst| dst != "default")
        });
        if busy {
            return Ok(true);
        }
    }
    Ok(false)
}

fn is_route_type(word: &str) -> bool {
    matches!(
        word,
        "unicast"
            | "local"
            | "broadcast"
            | "multicast"
            | "anycast"
            | "unreachable"
            | "prohibit"
            | "blackhole"
            | "throw"
            | "nat"
    )
}

fn lock_reserved() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    // A panic while holding the lock leaves the set intact.
    RESERVED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Up to 3 lowercase alphanumerics of `prefix`, so names stay short and
/// valid whatever the caller passes.
fn short(prefix: &str) -> String {
    let s: String = prefix
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .take(3)
        .collect();
    if s.is_empty() {
        "lab".into()
    } else {
        s
    }
}

/// `n` in base 36, zero-padded to `width` (fixed width keeps tags from
/// different prefixes, pids and counters apart); wraps if it does not fit.
fn base36(mut n: u32, width: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; width];
    for d in out.iter_mut().rev() {
        *d = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8(out).expect("ascii")
}

fn ip(args: &[&str]) -> io::Result<Output> {
    run("ip", args)
}

/// Run a command to completion; a non-zero exit becomes an error carrying
/// its stderr.
fn run(program: &str, args: &[&str]) -> io::Result<Output> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn cleanup(result: io::Result<Output>) {
    if let Err(e) = result {
        eprintln!("netns lab cleanup: {e}");
    }
}
