//! What a test needs from the machine beyond cargo (a Docker engine with
//! the local test image, root and network namespaces, outside tools), and
//! what happens when it is missing: under CI (`CI` set to any non-empty
//! value) the test fails, naming what is missing and how to install it;
//! elsewhere it is skipped with a loud `SKIPPED:` line on stderr, never in
//! silence. `#[path = "common/prereq.rs"] mod prereq;`
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// How to get every prerequisite of the test suite.
pub const INSTALL: &str = "run scripts/docker-setup.sh --tests as root, which installs and starts \
     Docker, the busybox:stable image, iproute2, git, OpenSSH, gpg, python3, docker-compose, Prometheus (prometheus, promtool) and etcd (etcd-server, etcd-client) \
     (scripts/test.sh runs it before the tests)";

/// Whether the suite runs under CI, where a missing prerequisite is a
/// failure rather than a skip.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// The running test's name (libtest names each test's thread after it).
pub fn test_name() -> String {
    match std::thread::current().name() {
        Some(n) if n != "main" => n.to_string(),
        _ => "this test".to_string(),
    }
}

/// True when nothing is `missing`. Otherwise the running test fails under
/// CI, and elsewhere is reported as skipped (false: return at once).
/// Each entry says what is missing, e.g. "Docker does not answer".
pub fn satisfied(missing: impl IntoIterator<Item = String>) -> bool {
    report(None, missing)
}

/// Like [`satisfied`] for an optional `part` of a test: outside CI the rest
/// of the test goes on without it.
pub fn part_satisfied(part: &str, missing: impl IntoIterator<Item = String>) -> bool {
    report(Some(part), missing)
}

fn report(part: Option<&str>, missing: impl IntoIterator<Item = String>) -> bool {
    let missing: Vec<String> = missing.into_iter().collect();
    if missing.is_empty() {
        return true;
    }
    let what = match part {
        Some(p) => format!("{} ({p})", test_name()),
        None => test_name(),
    };
    let why = missing.join("; ");
    assert!(
        !under_ci(),
        "{what}: {why}. CI is set, so a missing prerequisite fails the test; to install: {INSTALL}"
    );
    // Straight to the process's stderr: the test harness would capture
    // (and, for a passing test, hide) `eprintln!`.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {what}: {why}; to install: {INSTALL}"
    );
    false
}

/// Why the Docker engine with the local `busybox:stable` image cannot be
/// used, if it cannot.
pub fn docker() -> Option<String> {
    let answers = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !answers(&["info"]) {
        return Some("no Docker engine answers (`docker info` fails)".into());
    }
    if !answers(&["image", "inspect", "busybox:stable"]) {
        return Some("the Docker engine has no busybox:stable image".into());
    }
    None
}

/// `name` in PATH or in the sbin directories (sshd lives there and they
/// are often not in a user's PATH).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Why `names` cannot all be found, if they cannot.
pub fn tools(names: &[&str]) -> Option<String> {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| find_tool(n).is_none())
        .collect();
    (!missing.is_empty()).then(|| format!("{} not found", missing.join(", ")))
}
