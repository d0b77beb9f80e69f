//! Git remotes made in a temp dir for the git source tests: a bare
//! repository on branch `main` and a clone that commits below `deploy/`
//! and force-pushes. `#[path = "common/git.rs"] mod git;`
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Run `cmd`, which must succeed; its standard output, trimmed.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `git ARGS` in `dir` as a test identity, which must succeed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    run_ok(
        Command::new("git")
            .args([
                "-c",
                "user.name=test",
                "-c",
                "user.email=test@example.invalid",
            ])
            .args(args)
            .current_dir(dir),
    )
}

/// A bare repository and the clone commits are made in.
pub struct Remote {
    pub bare: PathBuf,
    pub work: PathBuf,
}

impl Remote {
    /// Where the remote will be; nothing is made until [`Remote::init`].
    pub fn at(bare: PathBuf, work: PathBuf) -> Remote {
        Remote { bare, work }
    }

    /// Make the bare repository (branch `main`) and its clone, with a
    /// `deploy/` directory.
    pub fn init(&self) {
        std::fs::create_dir_all(&self.bare).unwrap();
        git(&self.bare, &["init", "-q", "--bare", "-b", "main"]);
        let parent = self.work.parent().unwrap();
        std::fs::create_dir_all(parent).unwrap();
        git(
            parent,
            &[
                "clone",
                "-q",
                self.bare.to_str().unwrap(),
                self.work.to_str().unwrap(),
            ],
        );
        git(&self.work, &["checkout", "-q", "-b", "main"]);
        std::fs::create_dir_all(self.work.join("deploy")).unwrap();
    }

    /// Commit `text` as `deploy/app.yaml` (and whatever else changed in
    /// the clone), force-push it; returns the commit.
    pub fn commit(&self, text: &str, message: &str) -> String {
        std::fs::write(self.work.join("deploy/app.yaml"), text).unwrap();
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(&self.work, &["push", "-q", "-f", "origin", "main"]);
        self.head()
    }

    pub fn head(&self) -> String {
        git(&self.work, &["rev-parse", "HEAD"])
    }
}
