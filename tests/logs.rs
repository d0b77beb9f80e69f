//! The controller's structured logs: with `--log-format json` every line
//! is one JSON object, and a reconcile pass of a git commit can be followed
//! in them (the pass span with its commit, each applied change). Needs
//! only git: the source has no tasks, so no node or Docker takes part.

#[path = "common/controller.rs"]
mod controller;
#[path = "common/git.rs"]
mod git;
#[path = "common/prereq.rs"]
mod prereq;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use controller::{app_manifests, bin, free_port, API, JOIN};
use git::git;

fn status(url: &str) -> Value {
    let out = Command::new(bin())
        .args(["status", "--format", "json", "--controller", url])
        .env("RECONCILE_API_TOKEN", API)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The names and fields of the spans a JSON log line was written in.
fn spans(line: &Value) -> Vec<&Value> {
    line["spans"]
        .as_array()
        .map(|s| s.iter().collect())
        .unwrap_or_default()
}

#[test]
fn json_logs_carry_the_pass_the_commit_and_each_applied_change() {
    if !prereq::satisfied(prereq::tools(&["git"])) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("app.yaml"), app_manifests("logs", 0, "one")).unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);

    let port = free_port([127, 0, 0, 1].into());
    let url = format!("http://127.0.0.1:{port}");
    let log_path = dir.path().join("controller.log");
    let mut controller = Command::new(bin())
        .args(["controller", "--log-format", "json", "--source"])
        .arg(format!("git+file://{}", repo.display()))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--interval", "60"])
        .arg("--plain-http")
        .env("RECONCILE_JOIN_TOKEN", JOIN)
        .env("RECONCILE_API_TOKEN", API)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let applied = loop {
        let s = status(&url);
        if s["appliedCommit"].as_str() == Some(commit.as_str()) {
            break s;
        }
        if Instant::now() > deadline || controller.try_wait().unwrap().is_some() {
            let _ = controller.kill();
            panic!(
                "the commit was not applied: {s}\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = controller.kill();
    let _ = controller.wait();
    assert!(applied["passes"].as_u64().unwrap() >= 1, "{applied}");

    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    for l in &lines {
        let at = l["timestamp"].as_str().unwrap_or_default();
        // RFC 3339 in UTC: 2026-12-04T16:38:12.123456Z
        assert!(
            at.len() >= 20 && at.as_bytes()[10] == b'T' && at.ends_with('Z'),
            "timestamp {at:?} in {l}"
        );
        assert!(l["level"].is_string() && l["message"].is_string(), "{l}");
    }
    let short = &commit[..12];
    let in_pass = |l: &&Value| {
        spans(l)
            .iter()
            .any(|s| s["name"] == "pass" && s["commit"] == short && s["n"].as_u64() >= Some(1))
    };
    let pass_lines: Vec<&Value> = lines.iter().filter(in_pass).collect();
    assert!(
        pass_lines.iter().any(|l| l["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("applying commit {short}"))),
        "no line says the pass applies the commit:\n{text}"
    );
    for (address, action) in [
        ("Cluster/logs", "Create"),
        ("TaskDefinition/app", "Create"),
        ("Service/logs/app", "Create"),
    ] {
        assert!(
            pass_lines
                .iter()
                .any(|l| l["address"] == address && l["action"] == action),
            "no line for {action} {address} in the pass of commit {short}:\n{text}"
        );
    }
    assert!(
        pass_lines.iter().any(|l| l["message"]
            .as_str()
            .unwrap()
            .contains(&format!("commit {short}: applied"))),
        "no line says the commit was applied:\n{text}"
    );
    assert!(
        !text.contains(API) && !text.contains(JOIN),
        "a token was logged"
    );
}
