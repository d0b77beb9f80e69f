//! Hostile input: each case gets a clear diagnostic, quickly, in bounded
//! memory, and never a panic or a stack overflow. The binary runs under a
//! 1 GiB address-space limit and a hang guard, so a regression that
//! allocates without bound or loops fails here instead of passing slowly.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Run `reconcile validate DIR --format json` under `ulimit -v` and return
/// the report.
fn validate_bounded(dir: &Path) -> serde_json::Value {
    let bin = assert_cmd::cargo::cargo_bin("reconcile");
    let started = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 1048576; exec timeout 60 \"$0\" validate \"$1\" --format json")
        .arg(&bin)
        .arg(dir)
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // A hang guard, not a performance assertion (see BENCHMARKS.md).
    assert!(took < Duration::from_secs(60), "took {took:?}");
    serde_json::from_slice(&out.stdout).expect("exactly one JSON object on stdout")
}

fn messages(report: &serde_json::Value) -> Vec<String> {
    report["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{}:{}:{} {}",
                d["file"].as_str().unwrap(),
                d["line"],
                d["column"],
                d["message"].as_str().unwrap()
            )
        })
        .collect()
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/invalid")
        .join(name)
}

#[test]
fn alias_bomb_is_refused() {
    let m = messages(&validate_bounded(&fixture("yaml-alias-bomb")));
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].contains("aliases that expand this much are refused"),
        "{m:?}"
    );
}

#[test]
fn nesting_20000_deep_is_refused() {
    let m = messages(&validate_bounded(&fixture("yaml-deep-nesting")));
    assert!(
        m[0].starts_with("deep.yaml:5:") && m[0].contains("nesting"),
        "{m:?}"
    );
    // Block-style nesting goes through the loader's own depth bound.
    let dir = tempfile::tempdir().unwrap();
    let mut deep = String::from("spec:\n");
    for i in 1..2_000usize {
        deep.push_str(&" ".repeat(i));
        deep.push_str("k:\n");
    }
    std::fs::write(dir.path().join("block.yaml"), deep).unwrap();
    let m = messages(&validate_bounded(dir.path()));
    assert!(m.iter().any(|x| x.contains("deeper than 64")), "{m:?}");
}

#[test]
fn thirty_megabyte_file_is_refused_without_reading_it_all() {
    let dir = tempfile::tempdir().unwrap();
    let line = "# padding padding padding padding padding padding padding padding\n";
    let big = line.repeat(30 * 1024 * 1024 / line.len());
    std::fs::write(dir.path().join("big.yaml"), big).unwrap();
    let m = messages(&validate_bounded(dir.path()));
    assert_eq!(
        m,
        vec!["big.yaml:1:1 file is 30.0 MiB, larger than the 8 MiB limit for a manifest file"]
    );
}

#[test]
fn large_but_allowed_file_validates_every_document() {
    // 7 MiB of valid documents plus one bad one at the end: the bad one is
    // found and reported at its line.
    let dir = tempfile::tempdir().unwrap();
    let doc =
        "apiVersion: reconcile/v1alpha1\nkind: Cluster\nmetadata: {name: cNNNNN}\nspec: {}\n---\n";
    let n = 7 * 1024 * 1024 / doc.len();
    let mut text = String::with_capacity(n * doc.len() + 100);
    for i in 0..n {
        text.push_str(&doc.replace("NNNNN", &format!("{i:05}")));
    }
    text.push_str("apiVersion: reconcile/v1alpha1\nkind: Cluster\nmetadata: {name: last}\nspec: {capacityProvider: []}\n");
    std::fs::write(dir.path().join("many.yaml"), text).unwrap();
    let report = validate_bounded(dir.path());
    assert_eq!(report["documents"], n + 1);
    let m = messages(&report);
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(
        m[0],
        format!("many.yaml:{}:8 unknown field `capacityProvider`", n * 5 + 4)
    );
}

#[test]
fn binary_and_invalid_utf8_files() {
    let m = messages(&validate_bounded(&fixture("file-binary")));
    assert_eq!(
        m,
        vec!["program.yaml:1:8 binary file: it holds NUL bytes, so it is not YAML"]
    );
    let m = messages(&validate_bounded(&fixture("file-invalid-utf8")));
    assert_eq!(
        m,
        vec!["latin1.yaml:4:12 file is not valid UTF-8: byte 0xE9 at line 4, column 12"]
    );
}

#[test]
fn usage_errors_exit_2() {
    let bin = assert_cmd::cargo::cargo_bin("reconcile");
    let out = Command::new(&bin)
        .args(["validate", "/nonexistent/dir"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`/nonexistent/dir` does not exist"));
    let out = Command::new(&bin)
        .args(["validate", ".", "--format", "xml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format"));
    assert!(out.stdout.is_empty());
}
