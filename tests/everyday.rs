//! What a new user trips over, each held by the binary as they would run
//! it: no Docker and no controller needed (a command that would reach one
//! must be refused before it tries).

use assert_cmd::Command;
use predicates::prelude::*;

fn reconcile() -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("reconcile"));
    c.env_remove("RECONCILE_CONTROLLER")
        .env_remove("RECONCILE_API_TOKEN")
        .env("NO_COLOR", "1");
    c
}

/// A source and a controller together: one would be ignored, so the
/// command is refused and says which is which, whether the controller
/// came from the environment or a flag. A port nothing listens on: had the
/// command tried the controller, it would fail differently.
#[test]
fn a_source_and_a_controller_together_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().to_str().unwrap();
    for cmd in [
        vec!["plan", src],
        vec!["apply", src, "--auto-approve"],
        vec!["status", src],
        vec!["events", src],
        vec!["history", "web", src],
    ] {
        reconcile()
            .args(&cmd)
            .env("RECONCILE_CONTROLLER", "http://127.0.0.1:9")
            .env("RECONCILE_API_TOKEN", "t")
            .assert()
            .code(2)
            .stderr(
                predicate::str::contains("RECONCILE_CONTROLLER is set")
                    .and(predicate::str::contains("Unset RECONCILE_CONTROLLER"))
                    .and(predicate::str::contains(src)),
            );
        reconcile()
            .args(&cmd)
            .args(["--controller", "http://127.0.0.1:9", "--token", "t"])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(
                "a controller works on its own source",
            ));
    }
    // Without a source the controller is asked (and here not reached).
    reconcile()
        .args(["status"])
        .env("RECONCILE_CONTROLLER", "http://127.0.0.1:9")
        .env("RECONCILE_API_TOKEN", "t")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot reach the controller"));
}

/// A directory with no manifests is a mistake, not an empty wish: validate
/// and plan fail naming the path and what was looked for.
#[test]
fn a_source_without_manifests_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README.md"), "not a manifest").unwrap();
    std::fs::create_dir(dir.path().join(".hidden")).unwrap();
    std::fs::write(
        dir.path().join(".hidden/c.yaml"),
        "kind: Cluster\nmetadata: {name: x}\n",
    )
    .unwrap();
    let src = dir.path().to_str().unwrap();
    for cmd in [vec!["validate", src], vec!["plan", src]] {
        reconcile()
            .args(&cmd)
            .env("RECONCILE_STATE_DIR", dir.path().join("state"))
            .assert()
            .failure()
            .stderr(
                predicate::str::contains(format!("no manifests in `{src}`"))
                    .and(predicate::str::contains("*.yaml and *.yml"))
                    .and(predicate::str::contains("hidden")),
            );
    }
}
