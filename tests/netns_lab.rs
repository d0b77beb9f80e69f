//! The network-namespace lab (tests/common/netns.rs) does what multi-host
//! tests rely on: hosts reach a server on the bridge and each other,
//! `disconnect` really cuts a host off, and dropping the lab leaves nothing
//! behind. Where namespaces cannot be used at all (not root, no `ip
//! netns`) a test fails under CI and is skipped, saying so, elsewhere.
//!
//! Tests run in parallel, each on a lab of its own.

#[path = "common/netns.rs"]
mod netns;
#[path = "common/prereq.rs"]
mod prereq;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netns::Lab;

const GREETING: &str = "hello from the lab";

/// Set by `namespace_to_namespace` when it runs this binary inside a
/// namespace as the server.
const LISTEN_ENV: &str = "NETNS_LAB_LISTEN";

fn skip() -> bool {
    !prereq::satisfied(netns::unavailable())
}

/// Greets every connection, from a thread of the test process, until dropped.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(ip: Ipv4Addr) -> Server {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(mut stream) = stream {
                    let _ = writeln!(stream, "{GREETING}");
                }
            }
        });
        Server {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocked accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connect from inside host `i` to `addr` and read the greeting, giving up
/// after `secs` seconds. Plain bash, so the check depends on nothing but the
/// namespace's network.
fn reach(lab: &Lab, i: usize, addr: SocketAddr, secs: u32) -> Result<(), String> {
    let script = r#"exec 3<>"/dev/tcp/$0/$1" && IFS= read -r line <&3 && printf '%s' "$line""#;
    let out = lab
        .command(i, "timeout")
        .args([secs.to_string().as_str(), "bash", "-c", script])
        .args([addr.ip().to_string(), addr.port().to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run timeout/bash in the namespace");
    let got = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && got == GREETING {
        Ok(())
    } else {
        Err(format!(
            "host {i} -> {addr}: {} stdout {got:?} stderr {:?}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Root-namespace interface names (without the `@peer` suffix).
fn links() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap().to_string())
        .collect()
}

/// iptables rules, when bridged traffic goes through iptables at all (the
/// only case where the lab adds rules).
fn iptables_rules() -> Option<String> {
    if !Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
        return None;
    }
    let out = Command::new("iptables").args(["-w", "-S"]).output().ok()?;
    assert!(out.status.success(), "{out:?}");
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn hosts_reach_server_on_bridge() {
    if skip() {
        return;
    }
    let lab = Lab::new("reach", 2).unwrap();
    assert_ne!(lab.host_ip(0), lab.host_ip(1));
    for i in 0..2 {
        // Commands really run inside host i's namespace.
        let out = lab
            .command(i, "ip")
            .args(["-4", "-o", "addr", "show"])
            .output()
            .unwrap();
        let addrs = String::from_utf8_lossy(&out.stdout);
        assert!(
            addrs.contains(&format!(" {}/24 ", lab.host_ip(i))),
            "{addrs}"
        );
        assert!(
            !addrs.contains(&format!(" {}/24 ", lab.bridge_ip())),
            "{addrs}"
        );
    }
    let server = Server::start(lab.bridge_ip());
    for i in 0..2 {
        reach(&lab, i, server.addr, 10).unwrap();
    }
}

#[test]
fn disconnect_cuts_one_host_off() {
    if skip() {
        return;
    }
    let lab = Lab::new("cut", 2).unwrap();
    let server = Server::start(lab.bridge_ip());
    reach(&lab, 0, server.addr, 10).unwrap();
    reach(&lab, 1, server.addr, 10).unwrap();

    lab.disconnect(1);
    let cut = reach(&lab, 1, server.addr, 2);
    assert!(
        cut.is_err(),
        "host 1 still reaches the server when disconnected"
    );
    reach(&lab, 0, server.addr, 10).unwrap();

    lab.reconnect(1);
    reach(&lab, 1, server.addr, 10).unwrap();
    reach(&lab, 0, server.addr, 10).unwrap();
}

/// Frames between two hosts are bridged, so (unlike host-to-bridge traffic)
/// they cross iptables' FORWARD chain when br_netfilter is loaded: this is
/// what the lab's ACCEPT rules are for. The server runs in host 1 as this
/// very test binary (see `listen_in_namespace`).
#[test]
fn hosts_reach_each_other() {
    if skip() {
        return;
    }
    let lab = Lab::new("peer", 2).unwrap();
    // A fresh namespace has no listeners, so any port is free.
    let addr = SocketAddr::from((lab.host_ip(1), 7070));
    let exe = std::env::current_exe().unwrap();
    let mut server = lab
        .command(1, exe.to_str().unwrap())
        .args(["--exact", "listen_in_namespace", "--test-threads=1"])
        .env(LISTEN_ENV, addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Refused until the server listens.
    let deadline = Instant::now() + Duration::from_secs(20);
    let result = loop {
        match reach(&lab, 0, addr, 5) {
            Ok(()) => break Ok(()),
            Err(e) if Instant::now() > deadline => break Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    if result.is_err() {
        let _ = server.kill();
    }
    let status = server.wait().unwrap();
    result.unwrap();
    assert!(status.success(), "server in host 1: {status}");
}

/// The server half of `hosts_reach_each_other`; does nothing unless that
/// test runs it inside a namespace.
#[test]
fn listen_in_namespace() {
    let Ok(addr) = std::env::var(LISTEN_ENV) else {
        return;
    };
    let listener = TcpListener::bind(&addr).unwrap();
    let (mut stream, _) = listener.accept().unwrap();
    writeln!(stream, "{GREETING}").unwrap();
    // Let the client close first, so it never sees a reset.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.read(&mut [0; 1]);
}

#[test]
fn drop_removes_everything() {
    if skip() {
        return;
    }
    // A long prefix: names must still fit the 15-char interface limit.
    let lab = Lab::new("drop-everything-please", 3).unwrap();
    let prefix = lab.prefix().to_string();
    let namespaces: Vec<String> = (0..3).map(|i| lab.netns(i).to_string()).collect();
    assert!(namespaces.iter().all(|ns| ns.starts_with(&prefix)));

    let listed = netns_list();
    for ns in &namespaces {
        assert!(
            listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns)),
            "{ns} missing from:\n{listed}"
        );
    }
    let ours: Vec<String> = links()
        .into_iter()
        .filter(|l| l.starts_with(&prefix))
        .collect();
    assert_eq!(ours.len(), 4, "bridge and 3 veths expected: {ours:?}");
    assert!(ours.iter().all(|l| l.len() <= 15), "{ours:?}");
    if let Some(rules) = iptables_rules() {
        let ours = rules.lines().filter(|r| r.contains(&prefix)).count();
        assert_eq!(ours, 2, "an ACCEPT rule each way expected:\n{rules}");
    }
    // A process still running inside a namespace must not keep it alive.
    let mut sleeper = lab
        .command(2, "sleep")
        .arg("600")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();

    drop(lab);

    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = sleeper.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = sleeper.kill();
            panic!("process in a dropped lab's namespace still runs");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "{status}");

    let listed = netns_list();
    assert!(!listed.contains(&prefix), "namespaces left:\n{listed}");
    let left: Vec<String> = links()
        .into_iter()
        .filter(|l| l.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "interfaces left: {left:?}");
    if let Some(rules) = iptables_rules() {
        assert!(!rules.contains(&prefix), "iptables rules left:\n{rules}");
    }
}
