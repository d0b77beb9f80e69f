//! The controller following a git branch (a bare remote and a clone made
//! in a temp dir) and a watched directory, with one agent on the local
//! Docker engine. Needs Docker and `busybox:stable`
//! (`scripts/docker-setup.sh`) and `git`: without them a test fails under
//! CI and is skipped, saying so, elsewhere.

#[path = "common/controller.rs"]
mod controller;
#[path = "common/git.rs"]
mod git;
#[path = "common/prereq.rs"]
mod prereq;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use controller::{app_manifests as manifests, bin, docker, ControllerArgs, Harness, API, JOIN};
use git::git;

static SERIAL: Mutex<()> = Mutex::new(());

const HOOK: &str = "webhook-secret-for-tests";

/// The controller harness on 127.0.0.1 with one agent, and a git remote.
type Rig = Harness<git::Remote>;

impl Rig {
    /// None when the machine lacks Docker with busybox:stable, git, or one
    /// of `tools` (see `prereq.rs`).
    fn new(test: &str, tools: &[&str]) -> Option<Rig> {
        let mut all = vec!["git"];
        all.extend_from_slice(tools);
        if !prereq::satisfied(
            [prereq::docker(), prereq::tools(&all)]
                .into_iter()
                .flatten(),
        ) {
            return None;
        }
        let cluster = format!("g{}{test}", std::process::id());
        Some(Rig::create(cluster, [127, 0, 0, 1].into(), |d| {
            git::Remote::at(d.join("remote.git"), d.join("work"))
        }))
    }

    /// The remote with a first commit of `count` tasks, and a clone.
    fn git_source(&self, count: u32) {
        self.ext.init();
        self.commit(count, "one", "first");
    }

    /// A remote whose first commit runs one task (`one`), followed
    /// (`--path deploy`) by a controller that fetches every `interval`
    /// seconds, once that commit runs.
    fn following(test: &str, interval: u32, tools: &[&str]) -> Option<Rig> {
        let mut r = Rig::new(test, tools)?;
        r.git_source(1);
        let source = format!("git+{}", r.ext.bare.display());
        r.start(&[&source, "--path", "deploy"], interval);
        r.wait_for("the first commit", Duration::from_secs(60), |r| {
            r.modes() == modes("one", 1)
        });
        Some(r)
    }

    fn commit(&self, count: u32, mode: &str, message: &str) -> String {
        self.commit_text(&manifests(&self.cluster, count, mode), message)
    }

    fn commit_text(&self, text: &str, message: &str) -> String {
        self.ext.commit(text, message)
    }

    /// The controller (source and its options, `interval` seconds between
    /// passes) and agent `node0`.
    fn start(&mut self, source: &[&str], interval: u32) {
        self.start_controller(ControllerArgs {
            source: source.iter().map(Into::into).collect(),
            interval,
            node_timeout: 5,
            env: vec![("RECONCILE_WEBHOOK_SECRET".into(), HOOK.into())],
        });
        let agent = self.spawn_agent(Command::new(bin()), "node0", &[]);
        self.agents.push(Some(agent));
    }

    /// [`Harness::cli`] with standard output and error together.
    fn cli_text(&self, args: &[&str]) -> (i32, String) {
        let (code, out, err) = self.cli(args);
        (code, out + &err)
    }

    /// Remove a running task container by hand: drift.
    fn remove_one(&self) {
        let id = self.container_ids(false).remove(0);
        docker(&["rm", "-f", &id]);
    }

    /// Running task containers: their MODE environment value.
    fn modes(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .container_ids(false)
            .iter()
            .map(|id| {
                docker(&[
                    "inspect",
                    "--format",
                    "{{range .Config.Env}}{{println .}}{{end}}",
                    id,
                ])
                .lines()
                .find_map(|l| l.strip_prefix("MODE=").map(str::to_string))
                .unwrap_or_default()
            })
            .collect();
        v.sort();
        v
    }
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn modes(mode: &str, n: usize) -> Vec<String> {
    vec![mode.to_string(); n]
}

#[test]
fn commits_are_applied_broken_ones_never_and_force_pushes_followed() {
    let _g = lock();
    let Some(mut r) = Rig::new("commits", &[]) else {
        return;
    };
    r.git_source(2);
    let source = format!("git+{}", r.ext.bare.display());
    r.start(&[&source, "--ref", "main", "--path", "deploy"], 1);
    r.wait_for("the first commit", Duration::from_secs(60), |r| {
        r.modes() == modes("one", 2)
    });
    let first = git(&r.ext.work, &["rev-parse", "HEAD"]);

    // A change is applied, and status names the commit.
    let second = r.commit(2, "two", "mode two");
    r.wait_for("the second commit", Duration::from_secs(60), |r| {
        r.modes() == modes("two", 2)
    });
    r.wait_for("status to name the commit", Duration::from_secs(10), |r| {
        let s = r.status();
        s["appliedCommit"] == second.as_str()
            && service(&s, &format!("{}/app", r.cluster))["commit"] == second.as_str()
    });

    // A broken commit: nothing of it is applied, the error names the commit
    // and the place.
    let mut broken = manifests(&r.cluster, 3, "three");
    broken = broken.replace("desiredCount: 3", "desiredCount: many");
    let bad = r.commit_text(&broken, "broken");
    r.wait_for(
        "the error of the broken commit",
        Duration::from_secs(30),
        |r| {
            r.status()["lastError"]
                .as_str()
                .is_some_and(|e| e.contains(&bad[..12]) && e.contains("app.yaml:"))
        },
    );
    // A whole reconcile pass after the refusal: still nothing of it.
    r.sync_and_wait();
    assert_eq!(
        r.modes(),
        modes("two", 2),
        "nothing of a broken commit is applied"
    );
    assert_eq!(r.status()["appliedCommit"], second.as_str());

    // The next good commit supersedes it at once.
    r.commit(3, "four", "fixed");
    r.wait_for("the fixing commit", Duration::from_secs(60), |r| {
        r.modes() == modes("four", 3)
    });

    // A force-push back to the first commit converges to it.
    git(&r.ext.work, &["reset", "-q", "--hard", &first]);
    git(&r.ext.work, &["push", "-q", "-f", "origin", "main"]);
    r.wait_for("the force-pushed commit", Duration::from_secs(60), |r| {
        r.modes() == modes("one", 2)
    });
    let (code, out) = r.cli_text(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn an_unreachable_remote_keeps_what_runs_and_recovers() {
    let _g = lock();
    let Some(mut r) = Rig::following("remote", 1, &[]) else {
        return;
    };
    let moved = r.dir.path().join("moved.git");
    std::fs::rename(&r.ext.bare, &moved).unwrap();
    r.wait_for("the fetch error", Duration::from_secs(20), |r| {
        r.status()["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("still running commit") && e.contains("next attempt in"))
    });
    assert_eq!(r.modes(), modes("one", 1), "what runs keeps running");
    // The last fetched commit is still reconciled: drift is repaired
    // while the remote is away.
    r.remove_one();
    r.wait_for("the removed task replaced", Duration::from_secs(30), |r| {
        r.modes() == modes("one", 1)
    });
    let backing_off = r.status()["lastError"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        backing_off.contains("still running commit"),
        "{backing_off}"
    );

    // Restarted while the remote is still away: the commit in its cache
    // is read and reconciled, drift included.
    let cached = r.status()["fetchedCommit"]
        .as_str()
        .expect("a commit was fetched")
        .to_string();
    r.kill_controller();
    r.restart_controller();
    r.wait_for(
        "the cached commit after a restart",
        Duration::from_secs(30),
        |r| {
            let s = r.status();
            s["appliedCommit"] == cached.as_str()
                && s["lastError"]
                    .as_str()
                    .is_some_and(|e| e.contains("next attempt in"))
        },
    );
    r.remove_one();
    r.wait_for(
        "the removed task replaced after the restart",
        Duration::from_secs(30),
        |r| r.modes() == modes("one", 1),
    );
    std::fs::rename(&moved, &r.ext.bare).unwrap();
    r.commit(1, "two", "after the outage");
    r.wait_for(
        "the commit after the outage",
        Duration::from_secs(60),
        |r| r.modes() == modes("two", 1),
    );
}

#[test]
fn webhook_sync_and_suspend() {
    let _g = lock();
    // A long interval: only the webhook or a sync makes it fetch.
    let Some(r) = Rig::following("hook", 300, &["openssl"]) else {
        return;
    };
    r.commit(1, "two", "second");
    // A signed webhook.
    let body = br#"{"ref":"refs/heads/main"}"#;
    let sig = "sha256=0000";
    let post = |headers: &str| controller::post(r.addr(), "/v1/webhook", headers, body).0;
    assert_eq!(post(&format!("X-Hub-Signature-256: {sig}\r\n")), 401);
    let good = hmac_hex(HOOK.as_bytes(), body);
    let took = Instant::now();
    assert_eq!(
        post(&format!("X-Hub-Signature-256: sha256={good}\r\n")),
        202
    );
    r.wait_for("the webhook's commit", Duration::from_secs(30), |r| {
        r.modes() == modes("two", 1)
    });
    eprintln!(
        "push to converged through the webhook: {:?}",
        took.elapsed()
    );

    // Suspended: the next commit is fetched and planned, not applied.
    let (code, out) = r.cli_text(&["suspend"]);
    assert_eq!(code, 0, "{out}");
    let third = r.commit(1, "three", "third");
    let (code, out) = r.cli_text(&["sync"]);
    assert_eq!(code, 0, "{out}");
    r.wait_for(
        "the suspended commit to be fetched",
        Duration::from_secs(20),
        |r| {
            let s = r.status();
            s["fetchedCommit"] == third.as_str() && s["suspended"] == true
        },
    );
    // A whole reconcile pass after the fetch: planned, not applied.
    r.sync_and_wait();
    assert_eq!(r.modes(), modes("two", 1));
    let (code, out) = r.cli_text(&["resume"]);
    assert_eq!(code, 0, "{out}");
    r.wait_for("the commit after resume", Duration::from_secs(60), |r| {
        r.modes() == modes("three", 1)
    });
}

#[test]
fn a_watched_directory_is_applied_after_an_edit() {
    let _g = lock();
    let Some(mut r) = Rig::new("dir", &[]) else {
        return;
    };
    let src = r.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("app.yaml"), manifests(&r.cluster, 1, "one")).unwrap();
    // A long interval: only the watcher picks up the edit.
    r.start(&[src.to_str().unwrap()], 300);
    r.wait_for("the first state", Duration::from_secs(60), |r| {
        r.modes() == modes("one", 1)
    });
    std::fs::write(src.join("app.yaml"), manifests(&r.cluster, 2, "two")).unwrap();
    let took = r.wait_for("the edit", Duration::from_secs(30), |r| {
        r.modes() == modes("two", 2)
    });
    eprintln!("edit to converged: {took:?}");
}

/// HMAC-SHA256 as a git host computes it for the webhook signature.
fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    // Through openssl's command line: an independent implementation.
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac"])
        .arg(std::str::from_utf8(key).unwrap())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn drift_is_repaired_unless_self_heal_is_off_then_only_reported() {
    let _g = lock();
    let Some(mut r) = Rig::new("drift", &[]) else {
        return;
    };
    let src = r.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("app.yaml"), manifests(&r.cluster, 2, "one")).unwrap();
    r.start(&[src.to_str().unwrap()], 1);
    r.wait_for("2 tasks", Duration::from_secs(60), |r| {
        r.modes() == modes("one", 2)
    });
    // Self-heal (the default): a container removed by hand comes back.
    r.remove_one();
    r.wait_for("the drift to be repaired", Duration::from_secs(30), |r| {
        r.modes() == modes("one", 2)
    });
    // Off: reported, not repaired.
    let text = manifests(&r.cluster, 2, "one").replace(
        "metadata: {name: app}\nspec:\n  cluster",
        "metadata:\n  name: app\n  annotations: {reconcile.io/self-heal: \"false\"}\nspec:\n  cluster",
    );
    assert!(text.contains("self-heal"));
    std::fs::write(src.join("app.yaml"), text).unwrap();
    // A whole reconcile pass has read the edit.
    r.sync_and_wait();
    r.remove_one();
    // The controller has seen the task go, and a whole pass after that
    // it is still gone.
    r.wait_for("the drift to be seen", Duration::from_secs(30), |r| {
        r.cli_text(&["plan"])
            .1
            .contains("drift: 1 of 2 tasks running")
    });
    r.sync_and_wait();
    assert_eq!(
        r.modes(),
        modes("one", 1),
        "self-heal off: nothing restarted"
    );
    let (code, out) = r.cli_text(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("drift: 1 of 2 tasks running") && out.contains("self-heal is off"),
        "{out}"
    );
}

#[test]
fn under_verification_only_commits_signed_by_allowed_keys_are_applied() {
    let _g = lock();
    let Some(mut r) = Rig::new("signed", &["ssh-keygen"]) else {
        return;
    };
    let keys = r.dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    for name in ["allowed", "other"] {
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(keys.join(name))
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
    let public = std::fs::read_to_string(keys.join("allowed.pub")).unwrap();
    let signers = keys.join("allowed_signers");
    std::fs::write(&signers, format!("ops@example.invalid {public}")).unwrap();
    let work = r.ext.work.clone();
    let sign_with = |key: &str| {
        let k = keys.join(key);
        git(&work, &["config", "gpg.format", "ssh"]);
        git(&work, &["config", "user.signingkey", k.to_str().unwrap()]);
        git(&work, &["config", "commit.gpgsign", "true"]);
    };
    r.git_source(1);
    sign_with("allowed");
    let signed = r.commit(1, "two", "signed");
    let source = format!("git+{}", r.ext.bare.display());
    r.start(
        &[
            &source,
            "--path",
            "deploy",
            "--verify-signatures",
            "--allowed-signers",
            signers.to_str().unwrap(),
        ],
        1,
    );
    r.wait_for("the signed head", Duration::from_secs(60), |r| {
        r.modes() == modes("two", 1)
    });
    // An unsigned commit followed by a signed one: the range fails, so
    // nothing of either is applied, and the unsigned one is named.
    git(&r.ext.work, &["config", "commit.gpgsign", "false"]);
    let unsigned = r.commit(1, "three", "unsigned");
    sign_with("allowed");
    r.commit(1, "four", "signed on top");
    r.wait_for("the refusal", Duration::from_secs(30), |r| {
        r.status()["lastError"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("commit {} is not signed", &unsigned[..12])))
    });
    // A whole reconcile pass after the refusal: still nothing of it.
    r.sync_and_wait();
    assert_eq!(r.modes(), modes("two", 1));
    // A key that is not allowed is refused too.
    git(&r.ext.work, &["reset", "-q", "--hard", &signed]);
    sign_with("other");
    let foreign = r.commit(1, "five", "foreign key");
    r.wait_for("the foreign key refusal", Duration::from_secs(30), |r| {
        r.status()["lastError"]
            .as_str()
            .is_some_and(|e| e.contains(&foreign[..12]) && e.contains("not in the allowed signers"))
    });
    assert_eq!(r.modes(), modes("two", 1));
    // Force-pushing a properly signed history is applied.
    git(&r.ext.work, &["reset", "-q", "--hard", &signed]);
    sign_with("allowed");
    r.commit(1, "six", "signed again");
    r.wait_for("the signed commit", Duration::from_secs(60), |r| {
        r.modes() == modes("six", 1)
    });
}

/// Stops the gpg-agent a test's GnuPG home started.
struct GpgHome(PathBuf);

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.0)
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

#[test]
fn openpgp_signed_commits_are_verified_against_the_allowed_keys() {
    let _g = lock();
    let Some(mut r) = Rig::new("gpgsigned", &["gpg", "gpgconf"]) else {
        return;
    };
    // A short home: gpg-agent's socket path must fit.
    let home = tempfile::Builder::new()
        .prefix("g")
        .tempdir_in("/tmp")
        .unwrap();
    let _agent = GpgHome(home.path().to_path_buf());
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(home.path())
            .args(["--batch", "--passphrase", "", "--pinentry-mode", "loopback"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    for who in ["Ops <ops@example.invalid>", "Other <other@example.invalid>"] {
        gpg(&["--quick-gen-key", who, "ed25519", "sign", "never"]);
    }
    let keys = r.dir.path().join("allowed.asc");
    std::fs::write(&keys, gpg(&["--armor", "--export", "ops@example.invalid"])).unwrap();
    // git signs through a wrapper that uses the test's GnuPG home (and
    // any further options).
    let dir = r.dir.path().to_path_buf();
    let gpg_program = |name: &str, options: &str| {
        let path = dir.join(name);
        let script = format!(
            "#!/bin/sh\nexec gpg --homedir '{}' {options} \"$@\"\n",
            home.path().display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        path
    };
    let wrapper = gpg_program("gpg-wrapper", "");
    let work = r.ext.work.clone();
    let sign_as = |who: &str| {
        git(&work, &["config", "gpg.format", "openpgp"]);
        git(&work, &["config", "gpg.program", wrapper.to_str().unwrap()]);
        git(&work, &["config", "user.signingkey", who]);
        git(&work, &["config", "commit.gpgsign", "true"]);
    };
    r.git_source(1);
    sign_as("ops@example.invalid");
    let signed = r.commit(1, "two", "signed");
    let source = format!("git+{}", r.ext.bare.display());
    r.start(
        &[
            &source,
            "--path",
            "deploy",
            "--verify-signatures",
            "--allowed-gpg-keys",
            keys.to_str().unwrap(),
        ],
        1,
    );
    r.wait_for("the signed head", Duration::from_secs(60), |r| {
        r.modes() == modes("two", 1)
    });
    // Another key's signature is refused, naming the commit.
    sign_as("other@example.invalid");
    let foreign = r.commit(1, "three", "other key");
    r.wait_for("the foreign key refusal", Duration::from_secs(30), |r| {
        r.status()["lastError"].as_str().is_some_and(|e| {
            e.contains(&foreign[..12]) && e.contains("OpenPGP key that is not allowed")
        })
    });
    assert_eq!(r.modes(), modes("two", 1));
    // So is an SSH-signed or unsigned commit when only OpenPGP keys are
    // allowed; a properly signed history is applied.
    git(&r.ext.work, &["reset", "-q", "--hard", &signed]);
    git(&r.ext.work, &["config", "commit.gpgsign", "false"]);
    let unsigned = r.commit(1, "four", "unsigned");
    r.wait_for("the unsigned refusal", Duration::from_secs(30), |r| {
        r.status()["lastError"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("commit {} is not signed", &unsigned[..12])))
    });
    git(&r.ext.work, &["reset", "-q", "--hard", &signed]);
    sign_as("ops@example.invalid");
    r.commit(1, "five", "signed again");
    r.wait_for("the signed commit", Duration::from_secs(60), |r| {
        r.modes() == modes("five", 1)
    });

    // Every commit of a pushed range is checked, not only its head: a
    // foreign signature under an allowed head refuses the range, naming
    // the commit.
    let work = r.ext.work.clone();
    let commit_unpushed = |mode: &str, message: &str| {
        std::fs::write(work.join("deploy/app.yaml"), manifests(&r.cluster, 1, mode)).unwrap();
        git(&work, &["commit", "-q", "-a", "-m", message]);
        r.ext.head()
    };
    sign_as("other@example.invalid");
    let middle = commit_unpushed("six", "foreign in the middle");
    sign_as("ops@example.invalid");
    r.commit(1, "seven", "allowed head");
    r.wait_for("the range refusal", Duration::from_secs(30), |r| {
        r.status()["lastError"].as_str().is_some_and(|e| {
            e.contains(&middle[..12]) && e.contains("OpenPGP key that is not allowed")
        })
    });
    r.sync_and_wait();
    assert_eq!(
        r.modes(),
        modes("five", 1),
        "nothing of the range is applied"
    );

    // A commit by a key that is allowed (beside ops) but no longer good is
    // pushed and refused; nothing of it runs.
    let refused_as_dead = |id: &str, key: &str, what: &str| {
        let allowed = gpg(&["--armor", "--export", "ops@example.invalid", key]);
        std::fs::write(&keys, allowed).unwrap();
        git(&work, &["push", "-q", "-f", "origin", "main"]);
        r.wait_for(what, Duration::from_secs(30), |r| {
            r.status()["lastError"].as_str().is_some_and(|e| {
                e.contains(&id[..12]) && e.contains("expired or revoked OpenPGP key")
            })
        });
        r.sync_and_wait();
        assert_eq!(r.modes(), modes("five", 1), "{what}");
    };

    // Revoked: the commit is signed while the key is good, then the key is
    // revoked.
    git(&work, &["reset", "-q", "--hard", "HEAD~2"]);
    gpg(&[
        "--quick-gen-key",
        "Rev <rev@example.invalid>",
        "ed25519",
        "sign",
        "never",
    ]);
    sign_as("rev@example.invalid");
    let revoked = commit_unpushed("eight", "revoked key");
    let listing = String::from_utf8(gpg(&[
        "--with-colons",
        "--list-keys",
        "rev@example.invalid",
    ]))
    .unwrap();
    let fpr = listing
        .lines()
        .find_map(|l| {
            l.strip_prefix("fpr:")
                .map(|f| f.trim_matches(':').to_string())
        })
        .expect("the key's fingerprint");
    // gpg keeps a revocation certificate for every key it makes, its
    // armour line guarded by a leading ':'.
    let cert = std::fs::read_to_string(home.path().join(format!("openpgp-revocs.d/{fpr}.rev")))
        .unwrap()
        .replace(
            ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
            "-----BEGIN PGP PUBLIC KEY BLOCK-----",
        );
    let cert_file = r.dir.path().join("rev.asc");
    std::fs::write(&cert_file, cert).unwrap();
    gpg(&["--import", cert_file.to_str().unwrap()]);
    refused_as_dead(&revoked, "rev@example.invalid", "the revoked key refusal");

    // Expired: made and used in 2020 with a lifetime of a day (gpg's clock
    // faked for both), and long expired now.
    git(&work, &["reset", "-q", "--hard", "HEAD~1"]);
    gpg(&[
        "--faked-system-time",
        "20200101T000000!",
        "--quick-gen-key",
        "Exp <exp@example.invalid>",
        "ed25519",
        "sign",
        "1d",
    ]);
    let past = gpg_program("gpg-2020", "--faked-system-time 20200101T010000!");
    sign_as("exp@example.invalid");
    git(&work, &["config", "gpg.program", past.to_str().unwrap()]);
    let expired = commit_unpushed("nine", "expired key");
    refused_as_dead(&expired, "exp@example.invalid", "the expired key refusal");
}

#[test]
fn validate_plan_apply_and_destroy_take_a_git_source_too() {
    let _g = lock();
    let Some(r) = Rig::new("standalone", &[]) else {
        return;
    };
    r.git_source(1);
    let source = format!("git+file://{}", r.ext.bare.display());
    let state = r.dir.path().join("state");
    let run = |args: &[&str]| {
        let (code, out, err) = controller::outcome(
            Command::new(bin())
                .args(args)
                .env("RECONCILE_STATE_DIR", &state)
                .output()
                .unwrap(),
        );
        (code, out + &err)
    };
    let (code, out) = run(&["validate", &source, "--ref", "main", "--path", "deploy"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&["plan", &source, "--path", "deploy", "--detailed-exitcode"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("+ Service"), "{out}");
    let (code, out) = run(&["apply", &source, "--path", "deploy", "--auto-approve"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(r.modes(), modes("one", 1));
    let (code, out) = run(&["plan", &source, "--path", "deploy", "--detailed-exitcode"]);
    assert_eq!(code, 0, "after apply the plan is empty: {out}");
    // A broken commit is reported with file, line and column.
    let broken = manifests(&r.cluster, 1, "x").replace("desiredCount: 1", "desiredCount: one");
    r.commit_text(&broken, "broken");
    let (code, out) = run(&["validate", &source, "--path", "deploy"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("app.yaml"), "{out}");
    let (code, out) = run(&["destroy", &source, "--path", "deploy", "--auto-approve"]);
    assert_eq!(code, 0, "{out}");
    assert!(r.modes().is_empty());
    // --path on a directory is a usage error naming the flag.
    let (code, out) = run(&["validate", ".", "--path", "deploy"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("--ref and --path apply to a git+URL source only"),
        "{out}"
    );
}

#[test]
fn the_controller_keeps_its_state_in_the_state_directory_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let port = controller::free_port([127, 0, 0, 1].into());
    let mut c = Command::new(bin())
        .args(["controller", "--source"])
        .arg(&src)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RECONCILE_STATE_DIR", dir.path().join("state"))
        .env("RECONCILE_JOIN_TOKEN", JOIN)
        .env("RECONCILE_API_TOKEN", API)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let db = dir.path().join("state/controller/controller.redb");
    let start = Instant::now();
    while !db.exists() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = c.kill();
    let _ = c.wait();
    assert!(db.exists(), "no store at {}", db.display());
}

#[test]
fn a_failing_rollout_is_superseded_by_the_next_good_commit() {
    let _g = lock();
    let Some(r) = Rig::following("supersede", 1, &[]) else {
        return;
    };
    let log = || r.log("controller");

    // A revision whose container exits at once, in a service without a
    // circuit breaker: its rollout relaunches the task until the step
    // timeout (60 s here), and the old task keeps running.
    let crashing = manifests(&r.cluster, 1, "crash").replace(
        r#"command: [sleep, "3600"]"#,
        r#"command: [sh, -c, "exit 3"]"#,
    );
    let bad = r.commit_text(&crashing, "exits at once");
    r.wait_for("the failing rollout", Duration::from_secs(30), |_| {
        let l = log();
        l.contains(&format!("applying commit {}", &bad[..12])) && l.contains("exit code 3")
    });

    // Commits that would not be applied never interrupt it: an invalid
    // one, and one the mass-deletion guard refuses (it deletes the only
    // service). Each is fetched while the rollout runs.
    let invalid = r.commit_text(
        &manifests(&r.cluster, 1, "x").replace("desiredCount: 1", "desiredCount: one"),
        "invalid",
    );
    r.wait_for("the invalid commit fetched", Duration::from_secs(30), |r| {
        r.status()["fetchedCommit"] == invalid.as_str()
    });
    let refused = r.commit_text(&services(&r.cluster, &[]), "deletes the only service");
    r.wait_for("the refused commit fetched", Duration::from_secs(30), |r| {
        r.status()["fetchedCommit"] == refused.as_str()
    });

    // Nor does a good commit that arrives while the controller is
    // suspended.
    let (code, out) = r.cli_text(&["suspend"]);
    assert_eq!(code, 0, "{out}");
    let held = r.commit(1, "held", "while suspended");
    r.wait_for(
        "the commit fetched while suspended",
        Duration::from_secs(30),
        |r| r.status()["fetchedCommit"] == held.as_str(),
    );

    // The fix is applied at once, not after the step timeout.
    let fix = r.commit(1, "two", "fixed");
    let (code, out) = r.cli_text(&["resume"]);
    assert_eq!(code, 0, "{out}");
    let took = r.wait_for("the fixing commit", Duration::from_secs(40), |r| {
        r.modes() == modes("two", 1)
    });
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(
        log().contains(&format!("superseded by commit {}", &fix[..12])),
        "{}",
        log()
    );
    for (what, id) in [
        ("invalid", &invalid),
        ("refused", &refused),
        ("suspended", &held),
    ] {
        assert!(
            !log().contains(&format!("superseded by commit {}", &id[..12])),
            "the {what} commit interrupted the rollout:\n{}",
            log()
        );
    }
    r.wait_for("status to name the fix", Duration::from_secs(30), |r| {
        r.status()["appliedCommit"] == fix.as_str()
    });
    let (code, out) = r.cli_text(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 0, "{out}");
}

/// The cluster and task definition of [`manifests`], and one one-task
/// service per name.
fn services(cluster: &str, names: &[&str]) -> String {
    let base = manifests(cluster, 1, "one");
    let mut docs: Vec<String> = base.split("---\n").take(2).map(str::to_string).collect();
    for name in names {
        docs.push(format!(
            "apiVersion: reconcile/v1alpha1\nkind: Service\nmetadata: {{name: {name}}}\n\
             spec:\n  cluster: {cluster}\n  taskDefinition: app\n  desiredCount: 1\n"
        ));
    }
    docs.join("---\n")
}

#[test]
fn removed_services_are_pruned_and_a_mass_deletion_waits_for_approval() {
    let _g = lock();
    let Some(mut r) = Rig::new("prune", &[]) else {
        return;
    };
    r.git_source(1);
    let source = format!("git+{}", r.ext.bare.display());
    r.start(&[&source, "--path", "deploy"], 1);
    r.commit_text(&services(&r.cluster, &["app", "b", "c", "d"]), "four");
    r.wait_for("four services", Duration::from_secs(60), |r| {
        r.modes().len() == 4
    });

    // One of four removed from the source: pruned.
    r.commit_text(&services(&r.cluster, &["app", "b", "c"]), "drop d");
    r.wait_for("d pruned", Duration::from_secs(60), |r| {
        r.modes().len() == 3 && service(&r.status(), &format!("{}/d", r.cluster)).is_null()
    });

    // Two of the remaining three: the guard refuses the whole commit.
    let most = r.commit_text(&services(&r.cluster, &["app"]), "drop b and c");
    r.wait_for("the guard's refusal", Duration::from_secs(30), |r| {
        r.status()["lastError"].as_str().is_some_and(|e| {
            e.contains(&most[..12])
                && e.contains("deletes 2 of the 3 existing services")
                && e.contains("reconcile sync --allow-mass-delete")
        })
    });
    // A whole reconcile pass after the refusal: still nothing of it.
    r.sync_and_wait();
    assert_eq!(r.modes().len(), 3, "nothing of a refused plan is applied");

    // An approval is for the commit it was given for. Suspended, so the
    // approved commit is not applied; then a newer commit that also
    // deletes most services arrives: the older approval does not cover it.
    let (code, out) = r.cli_text(&["suspend"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = r.cli_text(&["sync", "--allow-mass-delete"]);
    assert_eq!(code, 0, "{out}");
    r.sync_and_wait();
    assert_eq!(r.modes().len(), 3, "suspended: nothing is applied");
    let newer = r.commit_text(&services(&r.cluster, &["b"]), "drop app and c");
    let (code, out) = r.cli_text(&["resume"]);
    assert_eq!(code, 0, "{out}");
    r.wait_for(
        "the guard's refusal of the newer commit",
        Duration::from_secs(30),
        |r| {
            r.status()["lastError"].as_str().is_some_and(|e| {
                e.contains(&newer[..12]) && e.contains("deletes 2 of the 3 existing services")
            })
        },
    );
    r.sync_and_wait();
    assert_eq!(
        r.modes().len(),
        3,
        "an approval of an older commit does not cover a newer one"
    );

    // Approved once, for that commit: applied.
    let (code, out) = r.cli_text(&["sync", "--allow-mass-delete"]);
    assert_eq!(code, 0, "{out}");
    r.wait_for("app and c pruned", Duration::from_secs(60), |r| {
        r.modes().len() == 1 && r.status()["appliedCommit"] == newer.as_str()
    });
    assert_ne!(most, newer);
    let (code, out) = r.cli_text(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 0, "{out}");
}

/// The service `key` (`cluster/name`) of a status document, or null.
fn service(status: &serde_json::Value, key: &str) -> serde_json::Value {
    status["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["service"] == key))
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn a_secret_reaches_its_container_and_no_log_status_plan_or_store() {
    let _g = lock();
    let Some(mut r) = Rig::new("secret", &[]) else {
        return;
    };
    const VALUE: &str = "s3cr3t-value-never-shown-7f3a";
    // The operator's copy of the value, outside the controller's data.
    let secrets = r.dir.path().join("operator");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("db"), format!("{VALUE}\n")).unwrap();
    r.ext.init();
    let text = manifests(&r.cluster, 1, "one").replace(
        "      environment:",
        "      secrets: [{name: DB_PASSWORD, valueFrom: db}]\n      environment:",
    );
    r.commit_text(&text, "a service with a secret");
    let source = format!("git+{}", r.ext.bare.display());
    r.start(&[&source, "--path", "deploy"], 1);
    // A git source's secrets are the controller's, set by its operator.
    let file = secrets.join("db");
    let (code, out) = r.cli_text(&["secret", "set", "db", "--from-file", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    r.wait_for("the task with its secret", Duration::from_secs(60), |r| {
        r.modes() == ["one"]
    });
    let id = r.container_ids(false).remove(0);
    let env = docker(&[
        "inspect",
        "--format",
        "{{range .Config.Env}}{{println .}}{{end}}",
        &id,
    ]);
    assert!(
        env.lines().any(|l| l == format!("DB_PASSWORD={VALUE}")),
        "the container got its secret: {env}"
    );

    // Everything the controller and the agent say, and keep.
    let mut seen: Vec<(String, String)> = r.logs();
    for args in [
        vec!["status", "--format", "json"],
        vec!["status"],
        vec!["plan", "--format", "json"],
        vec!["plan", "--detail"],
        vec!["history", "app"],
        vec!["history", "app", "--format", "json"],
        vec!["nodes", "--format", "json"],
    ] {
        let (code, out) = r.cli_text(&args);
        assert_eq!(code, 0, "{args:?}: {out}");
        seen.push((args.join(" "), out));
    }
    let mut stack = vec![r.dir.path().join("data")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                seen.push((
                    p.display().to_string(),
                    String::from_utf8_lossy(&bytes).into(),
                ));
            }
        }
    }
    assert!(
        seen.len() > 8,
        "{:?}",
        seen.iter().map(|s| &s.0).collect::<Vec<_>>()
    );
    for (what, text) in &seen {
        assert!(!text.contains(VALUE), "the secret value is in {what}");
    }
}
