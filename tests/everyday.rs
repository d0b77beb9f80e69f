//! What a new user trips over, each held by the binary as they would run
//! it: no Docker and no controller needed (a command that would reach one
//! must be refused before it tries).

#[path = "common/prereq.rs"]
mod prereq;

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
        vec!["destroy", src, "--auto-approve"],
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
/// JSON output asks nothing, and a controller's apply is followed with
/// `events`: both refused before anything is read or reached.
#[test]
fn json_applies_need_approval_and_the_local_engine() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().to_str().unwrap();
    for (args, says) in [
        (vec!["apply", src, "--format", "json"], "--auto-approve"),
        (vec!["destroy", src, "--format", "json"], "--auto-approve"),
        (
            vec![
                "apply",
                "--format",
                "json",
                "--auto-approve",
                "--controller",
                "https://127.0.0.1:9",
            ],
            "events --follow --format json",
        ),
    ] {
        reconcile()
            .args(&args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(says));
    }
}

/// An invalid source ends a JSON apply with a result line too, each
/// error placed, before any engine is reached.
#[test]
fn a_json_apply_of_an_invalid_source_says_so_as_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("web.yaml"),
        "apiVersion: reconcile/v1alpha1\nkind: Service\nmetadata: {name: web}\nspec: {cluster: c, taskDefinition: web, desiredCount: -1}\n",
    )
    .unwrap();
    let out = reconcile()
        .args([
            "apply",
            dir.path().to_str().unwrap(),
            "--auto-approve",
            "--format",
            "json",
        ])
        .env("DOCKER_HOST", "tcp://127.0.0.1:9")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["type"], "result");
    assert_eq!(v["outcome"], "invalid");
    let first = &v["errors"][0];
    assert!(first["file"].as_str().unwrap().ends_with("web.yaml"), "{v}");
    assert_eq!(first["line"], 4, "{v}");
    assert!(
        first["message"].as_str().unwrap().contains("web.yaml:4:"),
        "{v}"
    );
}

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

fn output(args: &[&str]) -> String {
    let out = reconcile().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Completion scripts load in their shells, and bash's completes a command
/// and a flag; each command has a manual page naming how it is invoked
/// and its examples.
#[test]
fn completions_and_manual_pages_work_in_real_shells() {
    let dir = tempfile::tempdir().unwrap();
    let bash = dir.path().join("reconcile.bash");
    std::fs::write(&bash, output(&["completions", "bash"])).unwrap();
    // Complete `reconcile st` and `reconcile events --fo` as bash does on Tab.
    let script = format!(
        "source {}\n\
         COMP_WORDS=(reconcile st); COMP_CWORD=1; _reconcile reconcile st reconcile; echo \"${{COMPREPLY[*]}}\"\n\
         COMP_WORDS=(reconcile events --fo); COMP_CWORD=2; _reconcile reconcile --fo events; echo \"${{COMPREPLY[*]}}\"\n",
        bash.display()
    );
    let out = std::process::Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        lines.first().map(|l| l.split(' ').collect::<Vec<_>>()),
        Some(vec!["status", "stop-task", "store"]),
        "{text}"
    );
    assert!(
        lines
            .get(1)
            .is_some_and(|l| l.contains("--follow") && l.contains("--format")),
        "{text}"
    );

    for (shell, check) in [("zsh", ["-n"]), ("fish", ["--no-execute"])] {
        let file = dir.path().join(format!("reconcile.{shell}"));
        let text = output(&["completions", shell]);
        assert!(text.contains("reconcile"), "{text}");
        std::fs::write(&file, text).unwrap();
        if !prereq::part_satisfied(shell, prereq::tools(&[shell])) {
            continue;
        }
        let out = std::process::Command::new(shell)
            .args(check)
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let man = dir.path().join("man");
    reconcile()
        .args(["man", "--out"])
        .arg(&man)
        .assert()
        .success();
    let page = std::fs::read_to_string(man.join("reconcile-node-drain.1")).unwrap();
    assert!(page.contains(".TH reconcile-node-drain 1"), "{page}");
    assert!(page.contains("reconcile node drain"), "{page}");
    let apply = std::fs::read_to_string(man.join("reconcile-apply.1")).unwrap();
    assert!(
        apply.contains("Examples:") && apply.contains("auto\\-approve"),
        "{apply}"
    );
    for page in [
        "reconcile.1",
        "reconcile-ca-hash.1",
        "reconcile-events.1",
        "reconcile-secret-set.1",
    ] {
        assert!(man.join(page).is_file(), "{page}");
    }
    if prereq::part_satisfied("man", prereq::tools(&["man"])) {
        let out = std::process::Command::new("man")
            .arg("-l")
            .arg(man.join("reconcile-apply.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("SYNOPSIS"), "{text}");
    }
}

/// Every command's help has a description for every argument, and no
/// command that needs a controller says it could use the local engine.
#[test]
fn help_describes_every_argument_and_fits_the_command() {
    for cmd in [
        vec!["node", "drain"],
        vec!["node", "remove"],
        vec!["nodes"],
        vec!["sync"],
        vec!["suspend"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let text = output(&args);
        assert!(
            !text.contains("instead of the local Docker engine"),
            "{cmd:?}: {text}"
        );
        assert!(!text.contains("source snippets"), "{cmd:?}: {text}");
        // An argument line followed by a blank line has no description.
        let lines: Vec<&str> = text.lines().collect();
        for w in lines.windows(2) {
            let arg = w[0].trim_start();
            if arg.starts_with('<') && arg.ends_with('>') {
                assert!(
                    !w[1].trim().is_empty(),
                    "{cmd:?}: {arg} has no description:\n{text}"
                );
            }
        }
    }
    for cmd in [
        "validate",
        "plan",
        "apply",
        "status",
        "events",
        "destroy",
        "run-task",
        "tasks",
        "stop-task",
        "agent",
        "controller",
        "store",
    ] {
        let text = output(&[cmd, "--help"]);
        assert!(text.contains("Examples:"), "{cmd}: {text}");
    }
}

/// A tab the parser meets while still reading the line above is reported
/// on its own line, and shown: a terminal renders a tab as blank space.
#[test]
fn a_tab_is_shown_on_its_own_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.yaml"),
        "apiVersion: reconcile/v1alpha1\nkind: Cluster\nmetadata:\n  name: x\n\tlabels: {}\nspec: {}\n",
    )
    .unwrap();
    reconcile()
        .args(["validate", dir.path().to_str().unwrap()])
        .assert()
        .code(1)
        .stdout(
            predicate::str::contains("[c.yaml:5:1]")
                .and(predicate::str::contains("5 │ →labels: {}"))
                .and(predicate::str::contains("a tab (shown as →)"))
                .and(predicate::str::contains("help: indent with spaces")),
        );
}

/// An unquoted `: ` in a list of strings: one error, in plain words, with
/// the value as it should be written, and no doubled type name.
#[test]
fn a_colon_in_a_plain_value_gets_a_quoting_hint() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("td.yaml"),
        "apiVersion: reconcile/v1alpha1\nkind: TaskDefinition\nmetadata:\n  name: web\nspec:\n  memory: 128\n  containerDefinitions:\n    - name: web\n      image: busybox:stable\n      command:\n        - echo \"boot: x\"\n",
    )
    .unwrap();
    reconcile()
        .args(["validate", dir.path().to_str().unwrap()])
        .assert()
        .code(1)
        .stdout(
            predicate::str::contains("expected a string, found a mapping\n")
                .and(predicate::str::contains("'echo \"boot: x\"'"))
                .and(predicate::str::contains("1 error in")),
        );
}
