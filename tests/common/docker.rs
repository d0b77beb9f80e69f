//! A source in a temp dir with its own state dir, run through the
//! `reconcile` binary against the local Docker engine, for the Docker test
//! files: `#[path = "common/docker.rs"] mod docker;`. Its containers carry
//! the source's `reconcile.io/source` label; dropping it destroys them (and
//! force-removes anything left) even when a test fails.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use serde_json::Value;

/// Docker tests run one at a time: they measure behaviour, not the daemon
/// under contention.
pub static SERIAL: Mutex<()> = Mutex::new(());

pub struct Source {
    pub id: String,
    dir: tempfile::TempDir,
    pub state: tempfile::TempDir,
}

impl Source {
    pub fn new(files: &[(&str, &str)]) -> Source {
        let out = Command::new("docker")
            .args(["image", "inspect", "busybox:stable"])
            .output();
        assert!(
            out.is_ok_and(|o| o.status.success()),
            "Docker with the busybox:stable image is needed: run scripts/docker-setup.sh --tests"
        );
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let canonical = std::fs::canonicalize(dir.path())
            .unwrap()
            .display()
            .to_string();
        let id = reconcile::model::digest(&canonical);
        Source {
            dir,
            state: tempfile::tempdir().unwrap(),
            id,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("reconcile"));
        c.args(args)
            .env("RECONCILE_STATE_DIR", self.state.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// `run`'s exit code and its stdout and stderr together.
    pub fn run_text(&self, args: &[&str]) -> (i32, String) {
        let out = self.run(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// `apply --auto-approve`, which must succeed.
    pub fn apply(&self) -> String {
        let src = self.path().display().to_string();
        let out = self.run(&[
            "apply",
            &src,
            "--auto-approve",
            "--settle",
            "1",
            "--timeout",
            "90",
        ]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "apply failed:\n{text}");
        text
    }

    pub fn plan(&self) -> (i32, String) {
        let src = self.path().display().to_string();
        let out = self.run(&["plan", &src, "--detailed-exitcode"]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    pub fn status(&self) -> Value {
        let src = self.path().display().to_string();
        let out = self.run(&["status", &src, "--format", "json"]);
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Containers of this source: (name, state, labels as JSON).
    pub fn containers(&self) -> Vec<(String, String, Value)> {
        let out = Command::new("docker")
            .args([
                "ps",
                "-a",
                "--filter",
                &format!("label=reconcile.io/source={}", self.id),
                "--format",
                "{{json .}}",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["Names"].as_str().unwrap().to_string(),
                    v["State"].as_str().unwrap().to_string(),
                    v,
                )
            })
            .collect()
    }

    pub fn running(&self, service: &str) -> Vec<String> {
        self.containers()
            .into_iter()
            .filter(|(n, s, _)| s == "running" && n.contains(&format!("-{service}-")))
            .map(|(n, _, _)| n)
            .collect()
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        let src = self.path().display().to_string();
        let _ = self.run(&["destroy", &src, "--auto-approve"]);
        let out = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=reconcile.io/source={}", self.id),
            ])
            .output();
        if let Ok(o) = out {
            for id in String::from_utf8_lossy(&o.stdout).lines() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
        let _ = Command::new("docker")
            .args([
                "network",
                "prune",
                "-f",
                "--filter",
                &format!("label=reconcile.io/source={}", self.id),
            ])
            .output();
        let _ = Command::new("docker")
            .args([
                "volume",
                "prune",
                "-f",
                "--filter",
                &format!("label=reconcile.io/source={}", self.id),
            ])
            .output();
    }
}
