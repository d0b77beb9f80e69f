//! Git sources over real network remotes, each served by a server the test
//! starts on 127.0.0.1 on a free port, in a temp dir:
//!
//! - `ssh://`: OpenSSH's sshd as the current user, with its own host key
//!   and authorized_keys, and a real `ssh-agent` holding the client key;
//!   the host key is checked against `$HOME/.ssh/known_hosts` (a temp
//!   HOME).
//! - `https://`: `tests/support/git_https_server.py` (`git http-backend`
//!   behind Python's HTTPS server, HTTP Basic auth with a token as the
//!   password) with a certificate of a test CA, trusted through
//!   `SSL_CERT_FILE`.
//!
//! `reconcile validate` and `plan` read a bare repository holding a
//! Cluster, a TaskDefinition and a Service; `plan` needs a Docker engine.
//! A missing tool (sshd, ssh-agent, python3, git http-backend) or engine
//! fails a test under CI and skips it (or, for Docker, its `plan` part),
//! saying so, elsewhere.

#[path = "common/controller.rs"]
mod controller;
#[path = "common/git.rs"]
mod git;
#[path = "common/prereq.rs"]
mod prereq;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use controller::{bin, test_ca};
use git::{git, run_ok};

/// Longest a single `reconcile` run may take, success or failure.
const RUN_LIMIT: Duration = Duration::from_secs(60);

fn git_http_backend() -> Option<PathBuf> {
    let out = Command::new("git").arg("--exec-path").output().ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Some(dir.join("git-http-backend")).filter(|p| p.is_file())
}

/// The paths of the tools a test needs (`git-http-backend` is looked up
/// in git's exec path); None when one is missing and the test is skipped
/// (see `prereq.rs`).
fn require(tools: &[&str]) -> Option<Vec<PathBuf>> {
    let found: Vec<Option<PathBuf>> = tools
        .iter()
        .map(|tool| match *tool {
            "git-http-backend" => git_http_backend(),
            t => prereq::find_tool(t),
        })
        .collect();
    let missing: Vec<&str> = tools
        .iter()
        .zip(&found)
        .filter(|(_, p)| p.is_none())
        .map(|(t, _)| *t)
        .collect();
    let why = (!missing.is_empty()).then(|| {
        format!(
            "{} not found (Debian: openssh-server, openssh-client, python3, git)",
            missing.join(", ")
        )
    });
    prereq::satisfied(why).then(|| found.into_iter().flatten().collect())
}

fn free_port() -> u16 {
    controller::free_port([127, 0, 0, 1].into())
}

fn manifests(replicas: u32) -> String {
    controller::app_manifests("remotes", replicas, "one")
}

fn broken_manifests() -> String {
    manifests(2).replace("  taskDefinition: app\n", "  taskDefinition: missing-app\n")
}

/// Where the broken manifest names a task definition that does not exist:
/// file (relative to `--path deploy`), line and column of the value.
fn broken_at() -> String {
    let text = broken_manifests();
    let (n, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("missing-app"))
        .unwrap();
    format!(
        "app.yaml:{}:{}",
        n + 1,
        line.find("missing-app").unwrap() + 1
    )
}

/// A bare repository (`srv/fleet.git`, the remote) with manifests below
/// `deploy/`, and the clone commits are made in, pushed by path.
struct Repo {
    dir: tempfile::TempDir,
    remote: git::Remote,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let remote = git::Remote::at(dir.path().join("srv/fleet.git"), dir.path().join("work"));
        remote.init();
        std::fs::write(remote.work.join("README.txt"), "not a manifest\n").unwrap();
        let repo = Repo { dir, remote };
        repo.commit(&manifests(2), "two replicas");
        repo
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn work(&self) -> PathBuf {
        self.remote.work.clone()
    }

    fn bare(&self) -> PathBuf {
        self.remote.bare.clone()
    }

    fn commit(&self, text: &str, message: &str) -> String {
        self.remote.commit(text, message)
    }

    /// A fresh HOME for reconcile (its `.ssh/known_hosts` is what libgit2
    /// reads), so the user's own files play no part.
    fn home(&self, name: &str) -> PathBuf {
        let home = self.root().join(name);
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        home
    }
}

/// What a `reconcile` run did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// `reconcile ARGS` with only the environment given (plus PATH), killed
/// and failed when it takes longer than [`RUN_LIMIT`].
fn reconcile(args: &[&str], home: &Path, env: &[(&str, &str)]) -> Run {
    let start = Instant::now();
    let mut child = Command::new(bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .envs(std::env::var_os("DOCKER_HOST").map(|h| ("DOCKER_HOST", h)))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let readers = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .map(|mut r| {
        std::thread::spawn(move || {
            let mut s = String::new();
            r.read_to_string(&mut s).ok();
            s
        })
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("reconcile {args:?} still ran after {RUN_LIMIT:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let [stdout, stderr] = readers.map(|t| t.join().unwrap());
    Run {
        code: status.code(),
        stdout,
        stderr,
        took: start.elapsed(),
    }
}

/// validate and plan (when Docker is there: see `prereq.rs`) read the
/// remote's manifests;
/// then a broken commit pushed to the remote is reported with file:line.
fn reads_the_remote(repo: &Repo, source: &str, home: &Path, env: &[(&str, &str)]) {
    let head = git(&repo.work(), &["rev-parse", "HEAD"]);
    let git_args = ["--ref", "main", "--path", "deploy"];
    let mut args = vec!["validate", source];
    args.extend(git_args);
    let v = reconcile(&args, home, env);
    assert_eq!(v.code, Some(0), "{v:#?}");
    assert!(
        v.stderr
            .contains(&format!("commit {} (two replicas)", &head[..12])),
        "{v:#?}"
    );
    // The three documents of deploy/app.yaml; README.txt is no manifest.
    assert!(v.stdout.contains("3 documents valid in 1 file"), "{v:#?}");

    if prereq::part_satisfied("plan", prereq::docker()) {
        let state = tempfile::tempdir().unwrap();
        let mut args = vec![
            "plan",
            source,
            "--state-dir",
            state.path().to_str().unwrap(),
        ];
        args.extend(git_args);
        let p = reconcile(&args, home, env);
        assert_eq!(p.code, Some(0), "{p:#?}");
        for part in [
            "+ Service remotes/app",
            "start 2 tasks",
            "Plan: 3 to add, 0 to change, 0 to destroy.",
        ] {
            assert!(
                p.stdout.contains(part),
                "the plan creates the service: {p:#?}"
            );
        }
    }

    let bad = repo.commit(&broken_manifests(), "point at a missing task definition");
    let b = reconcile(&args, home, env);
    assert_eq!(b.code, Some(1), "{b:#?}");
    assert!(
        b.stderr.contains(&format!("commit {}", &bad[..12])),
        "{b:#?}"
    );
    assert!(
        b.stdout.contains(&broken_at()),
        "reported with file:line: {b:#?}"
    );
    assert!(b.stdout.contains("missing-app"), "{b:#?}");
    // Back to a good commit for whatever runs next.
    repo.commit(&manifests(2), "two replicas");
}

/// A fetch that must fail: exit status 2 (usage error, nothing read),
/// every `expected` part in the message, in bounded time.
fn refused(source: &str, home: &Path, env: &[(&str, &str)], expected: &[&str]) -> String {
    let r = reconcile(&["validate", source, "--path", "deploy"], home, env);
    assert_eq!(r.code, Some(2), "{r:#?}");
    assert!(r.stdout.is_empty(), "nothing was validated: {r:#?}");
    for part in expected {
        assert!(r.stderr.contains(part), "expected `{part}` in: {r:#?}");
    }
    assert!(!r.stderr.contains("panicked"), "{r:#?}");
    assert!(r.took < Duration::from_secs(30), "took {:?}", r.took);
    r.stderr
}

/// Kill a child and reap it.
fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------- ssh ---

fn whoami() -> String {
    run_ok(Command::new("id").arg("-un"))
}

fn keygen(path: &Path) -> String {
    run_ok(
        Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "reconcile-test",
                "-f",
            ])
            .arg(path),
    );
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// OpenSSH's `SHA256:...` fingerprint of a public key file.
fn fingerprint(public: &Path) -> String {
    let out = run_ok(Command::new("ssh-keygen").arg("-lf").arg(public));
    out.split_whitespace().nth(1).unwrap().to_string()
}

/// An sshd on 127.0.0.1, public key authentication only (password
/// authentication only when asked, to see that nothing tries it), run as
/// the current user with its own host key and authorized_keys.
struct Sshd {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

impl Sshd {
    fn start(sshd: &Path, dir: &Path, authorized: &[&str], passwords: bool) -> Sshd {
        std::fs::create_dir_all(dir).unwrap();
        keygen(&dir.join("host_ed25519"));
        std::fs::write(dir.join("authorized_keys"), authorized.join("\n") + "\n").unwrap();
        if run_ok(Command::new("id").arg("-u")) == "0" {
            // sshd started by root needs its privilege separation
            // directory, which only the ssh service's start creates.
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            let config = dir.join("sshd_config");
            let mut text = format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\n\
                 AuthorizedKeysFile {keys}\nPidFile {pid}\nUsePAM no\nStrictModes no\n\
                 PubkeyAuthentication yes\nPasswordAuthentication {pw}\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 MaxStartups 50\nLogLevel VERBOSE\n",
                host = dir.join("host_ed25519").display(),
                keys = dir.join("authorized_keys").display(),
                pid = dir.join("sshd.pid").display(),
                pw = if passwords { "yes" } else { "no" },
            );
            if passwords {
                text = text.replace("PermitRootLogin prohibit-password", "PermitRootLogin yes");
            }
            // OpenSSH 9.8+ slows down addresses that fail to authenticate;
            // the negative tests do that on purpose. Older sshd lack the
            // option, so it is added only when sshd accepts it.
            std::fs::write(&config, format!("{text}PerSourcePenalties no\n")).unwrap();
            let accepted = Command::new(sshd)
                .arg("-t")
                .arg("-f")
                .arg(&config)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !accepted {
                std::fs::write(&config, &text).unwrap();
            }
            let log = dir.join("sshd.log");
            let mut child = Command::new(sshd)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if banner(port) {
                    return Sshd {
                        child,
                        port,
                        dir: dir.to_path_buf(),
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            stop(&mut child);
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("sshd did not start: {last_log}");
    }

    fn host_public(&self) -> String {
        std::fs::read_to_string(self.dir.join("host_ed25519.pub"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// `[127.0.0.1]:PORT`, as known_hosts names a host on another port.
    fn known_name(&self) -> String {
        format!("[127.0.0.1]:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    fn url(&self, user: &str, repo: &Repo) -> String {
        format!(
            "git+ssh://{user}@127.0.0.1:{}{}",
            self.port,
            repo.bare().display()
        )
    }
}

/// Whether an ssh server greets on `port`.
fn banner(port: u16) -> bool {
    let Ok(s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("SSH-2.0-")
}

/// `ssh-agent -D -a SOCKET` holding the given keys.
struct Agent {
    child: Child,
    socket: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

impl Agent {
    fn start(agent: &Path, socket: &Path, keys: &[&Path]) -> Agent {
        let child = Command::new(agent)
            .arg("-D")
            .arg("-a")
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let agent = Agent {
            child,
            socket: socket.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "ssh-agent made no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        for key in keys {
            run_ok(
                Command::new("ssh-add")
                    .arg("-q")
                    .arg(key)
                    .env("SSH_AUTH_SOCK", socket)
                    .stdin(Stdio::null()),
            );
        }
        agent
    }

    fn env(&self) -> (&'static str, &str) {
        ("SSH_AUTH_SOCK", self.socket.to_str().unwrap())
    }
}

/// A repo, an sshd authorising `client.pub`, and an agent holding
/// `client` (or `stranger`, a key the server does not know, when
/// `authorised` is false).
struct SshRig {
    // Dropped in this order: the servers stop before their directory goes.
    sshd: Sshd,
    agent: Agent,
    repo: Repo,
}

impl SshRig {
    fn new(authorised: bool, passwords: bool) -> Option<SshRig> {
        let tools = require(&["sshd", "ssh-agent", "ssh-add", "ssh-keygen", "git"])?;
        let repo = Repo::new();
        let keys = repo.root().join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let client = keygen(&keys.join("client"));
        keygen(&keys.join("stranger"));
        let sshd = Sshd::start(&tools[0], &repo.root().join("sshd"), &[&client], passwords);
        // Short: a unix socket path is limited to about 100 bytes.
        let socket = repo.root().join("agent.sock");
        let held = keys.join(if authorised { "client" } else { "stranger" });
        let agent = Agent::start(&tools[1], &socket, &[&held]);
        Some(SshRig { repo, sshd, agent })
    }

    /// A HOME whose known_hosts holds `lines`.
    fn home_with(&self, name: &str, lines: &[String]) -> PathBuf {
        let home = self.repo.home(name);
        std::fs::write(home.join(".ssh/known_hosts"), lines.join("\n") + "\n").unwrap();
        home
    }

    fn known_line(&self) -> String {
        format!("{} {}", self.sshd.known_name(), self.sshd.host_public())
    }
}

#[test]
fn ssh_remote_read_with_agent_key_and_known_host_key() {
    let Some(rig) = SshRig::new(true, false) else {
        return;
    };
    let url = rig.sshd.url(&whoami(), &rig.repo);
    let home = rig.home_with(
        "home",
        &[
            // Another host's entry first: only the matching one counts.
            format!("[127.0.0.1]:1 {}", keygen(&rig.repo.root().join("other"))),
            rig.known_line(),
        ],
    );
    reads_the_remote(&rig.repo, &url, &home, &[rig.agent.env()]);
    assert!(
        rig.sshd.log().contains("Accepted publickey"),
        "{}",
        rig.sshd.log()
    );

    // known_hosts as OpenSSH writes it with HashKnownHosts (Debian's
    // default): hashed names are matched too.
    let hashed = rig.home_with("hashed", &[rig.known_line()]);
    run_ok(
        Command::new("ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(hashed.join(".ssh/known_hosts")),
    );
    let text = std::fs::read_to_string(hashed.join(".ssh/known_hosts")).unwrap();
    assert!(text.starts_with("|1|"), "{text}");
    let r = reconcile(
        &["validate", &url, "--path", "deploy"],
        &hashed,
        &[rig.agent.env()],
    );
    assert_eq!(r.code, Some(0), "{r:#?}");
}

#[test]
fn ssh_unknown_or_changed_host_key_is_refused() {
    let Some(rig) = SshRig::new(true, false) else {
        return;
    };
    let url = rig.sshd.url(&whoami(), &rig.repo);
    let name = rig.sshd.known_name();
    let presented = fingerprint(&rig.sshd.dir.join("host_ed25519.pub"));

    // No known_hosts at all.
    let empty = rig.repo.home("empty");
    let e = refused(
        &url,
        &empty,
        &[rig.agent.env()],
        &[
            &name,
            &presented,
            "is unknown",
            "known_hosts",
            "ssh-keyscan -p",
        ],
    );
    eprintln!("unknown host: {e}");

    // A known_hosts that knows other hosts only.
    let others = rig.home_with(
        "others",
        &[format!(
            "example.com {}",
            keygen(&rig.repo.root().join("o1"))
        )],
    );
    refused(&url, &others, &[rig.agent.env()], &[&name, "is unknown"]);

    // A different key recorded for this very host and port.
    let impostor = keygen(&rig.repo.root().join("impostor"));
    let changed = rig.home_with("changed", &[format!("{name} {impostor}")]);
    let e = refused(
        &url,
        &changed,
        &[rig.agent.env()],
        &[&name, &presented, "does NOT match", "intercepting"],
    );
    eprintln!("changed host key: {e}");

    // Refused before authenticating: the agent's key was never offered.
    let log = rig.sshd.log();
    assert!(!log.contains("Accepted publickey"), "{log}");
    assert!(!log.contains("Failed publickey"), "{log}");
}

#[test]
fn ssh_without_agent_or_with_an_unauthorised_key_fails_clearly() {
    // Password authentication is on in this sshd, to see that the https
    // token is never offered to an ssh server as a password.
    let Some(rig) = SshRig::new(false, true) else {
        return;
    };
    let user = whoami();
    let url = rig.sshd.url(&user, &rig.repo);
    let home = rig.home_with("home", &[rig.known_line()]);

    let e = refused(&url, &home, &[], &["SSH_AUTH_SOCK is not set"]);
    eprintln!("no agent: {e}");

    let token = ("RECONCILE_GIT_TOKEN", "token-for-https-only");
    let e = refused(
        &url,
        &home,
        &[rig.agent.env(), token],
        &[&format!("as `{user}` failed"), "no key of the ssh agent"],
    );
    eprintln!("unauthorised key: {e}");

    // An agent that died: its socket is there, nobody answers.
    let socket = rig.agent.socket.clone();
    let mut agent = rig.agent;
    stop(&mut agent.child);
    let sock_env = ("SSH_AUTH_SOCK", socket.to_str().unwrap());
    refused(&url, &home, &[sock_env], &["no key of the ssh agent"]);

    let log = rig.sshd.log();
    assert!(!log.contains("Accepted"), "{log}");
    assert!(!log.contains("password for"), "a password was tried: {log}");
}

// -------------------------------------------------------------- https ---

const TOKEN: &str = "token-7f3a-for-git-remote-tests";

/// The HTTPS git server of tests/support, with a certificate for
/// 127.0.0.1 issued by a test CA (`ca.pem`).
struct Https {
    child: Child,
    /// Held open: the server exits when its stdin closes.
    _stdin: ChildStdin,
    port: u16,
    log: PathBuf,
    /// The test CA that issued the server's certificate.
    ca: PathBuf,
}

impl Drop for Https {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

impl Https {
    /// A repo and the server for it; None when a tool is missing.
    fn start() -> Option<(Repo, Https)> {
        let tools = require(&["python3", "git", "git-http-backend"])?;
        let repo = Repo::new();
        let pki = repo.root().join("pki");
        test_ca(&pki, Some("127.0.0.1"));
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/git_https_server.py");
        let log = repo.root().join("https.log");
        let mut child = Command::new(&tools[0])
            .arg(&script)
            .arg("--root")
            .arg(repo.root().join("srv"))
            .arg("--cert")
            .arg(pki.join("server.pem"))
            .arg("--key")
            .arg(pki.join("server.key"))
            .args(["--token", TOKEN])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(port) = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
        else {
            stop(&mut child);
            panic!(
                "the HTTPS git server did not start: {line:?} {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let server = Https {
            child,
            _stdin: stdin,
            port,
            log,
            ca: pki.join("ca.pem"),
        };
        Some((repo, server))
    }

    fn url(&self, user: Option<&str>) -> String {
        let user = user.map(|u| format!("{u}@")).unwrap_or_default();
        format!("git+https://{user}127.0.0.1:{}/fleet.git", self.port)
    }

    fn ca(&self) -> String {
        self.ca.to_string_lossy().into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

#[test]
fn https_remote_read_with_token_and_trusted_ca() {
    let Some((repo, server)) = Https::start() else {
        return;
    };
    let home = repo.home("home");
    let ca = server.ca();
    let env = [
        ("SSL_CERT_FILE", ca.as_str()),
        ("RECONCILE_GIT_TOKEN", TOKEN),
    ];
    reads_the_remote(&repo, &server.url(None), &home, &env);
    // The user name of the URL is sent with the token.
    let r = reconcile(
        &[
            "validate",
            &server.url(Some("deploy-bot")),
            "--path",
            "deploy",
        ],
        &home,
        &env,
    );
    assert_eq!(r.code, Some(0), "{r:#?}");
    let log = server.log();
    assert!(log.contains("\" 401 "), "asked for credentials: {log}");
    assert!(log.contains("POST /fleet.git/git-upload-pack"), "{log}");
}

#[test]
fn https_missing_or_wrong_token_is_refused() {
    let Some((repo, server)) = Https::start() else {
        return;
    };
    let home = repo.home("home");
    let ca = server.ca();
    let url = server.url(None);

    let e = refused(
        &url,
        &home,
        &[("SSL_CERT_FILE", &ca)],
        &["requires authentication", "RECONCILE_GIT_TOKEN is not set"],
    );
    eprintln!("no token: {e}");

    let e = refused(
        &url,
        &home,
        &[
            ("SSL_CERT_FILE", &ca),
            ("RECONCILE_GIT_TOKEN", "not-the-token"),
        ],
        &[
            "authentication failed",
            "refused the credentials",
            "RECONCILE_GIT_TOKEN",
        ],
    );
    assert!(
        !e.contains("not-the-token"),
        "the token is never shown: {e}"
    );
    eprintln!("wrong token: {e}");

    let log = server.log();
    assert!(!log.contains("git-upload-pack HTTP/1.1\" 200"), "{log}");
}

#[test]
fn https_untrusted_certificate_is_refused() {
    let Some((repo, server)) = Https::start() else {
        return;
    };
    let home = repo.home("home");
    let url = server.url(None);
    let token = ("RECONCILE_GIT_TOKEN", TOKEN);

    // Only the system's CA certificates.
    let e = refused(
        &url,
        &home,
        &[token],
        &["certificate", "not trusted", "SSL_CERT_FILE"],
    );
    eprintln!("untrusted certificate: {e}");

    // Another CA than the one that issued the server's certificate.
    let other = repo.root().join("other-ca");
    test_ca(&other, None);
    let other_ca = other.join("ca.pem");
    refused(
        &url,
        &home,
        &[token, ("SSL_CERT_FILE", other_ca.to_str().unwrap())],
        &["certificate", "not trusted"],
    );

    // TLS failed before any request: the token never left.
    let log = server.log();
    assert!(!log.contains("GET "), "{log}");
}

// ---------------------------------------------------------- plain http ---

/// A plain-http server that asks every request for Basic credentials, as a
/// git host behind http:// would. It records every Authorization header it
/// is sent.
struct AsksForCredentials {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl AsksForCredentials {
    fn start() -> AsksForCredentials {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line.trim().is_empty() {
                        break;
                    }
                    if line.to_ascii_lowercase().starts_with("authorization:") {
                        log.lock().unwrap().push(line.trim().to_string());
                    }
                    line.clear();
                }
                let _ = std::io::Write::write_all(
                    &mut stream,
                    b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
                      Content-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        AsksForCredentials { port, seen }
    }
}

#[test]
fn the_token_is_never_sent_over_plain_http() {
    let server = AsksForCredentials::start();
    let home = tempfile::tempdir().unwrap();
    let url = format!("git+http://127.0.0.1:{}/repo.git", server.port);
    let e = refused(
        &url,
        home.path(),
        &[("RECONCILE_GIT_TOKEN", TOKEN)],
        &["plain http://", "only sent over https://"],
    );
    assert!(!e.contains(TOKEN), "the token is never shown: {e}");
    assert!(
        server.seen.lock().unwrap().is_empty(),
        "credentials were sent over plain http: {:?}",
        server.seen.lock().unwrap()
    );
}

// ------------------------------------------------------ silent server ---

/// A server that accepts connections and never sends a byte: a remote
/// that hangs. The connections stay open until the test process ends.
fn silent_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    port
}

#[test]
fn a_silent_server_fails_the_fetch_after_the_timeout() {
    let port = silent_server();
    let home = tempfile::tempdir().unwrap();
    let env = [("RECONCILE_GIT_TIMEOUT", "2")];
    for url in [
        format!("git+https://127.0.0.1:{port}/repo.git"),
        format!("git+ssh://git@127.0.0.1:{port}/repo.git"),
    ] {
        let start = Instant::now();
        refused(
            &url,
            home.path(),
            &env,
            &["did not answer within 2 s", "RECONCILE_GIT_TIMEOUT"],
        );
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(2),
            "{url}: gave up after {took:?}"
        );
        assert!(took < Duration::from_secs(20), "{url}: took {took:?}");
    }
    // A timeout that is not a number of seconds is refused by name.
    let r = reconcile(
        &["validate", "."],
        home.path(),
        &[("RECONCILE_GIT_TIMEOUT", "soon")],
    );
    assert_eq!(r.code, Some(2), "{r:#?}");
    assert!(r.stderr.contains("RECONCILE_GIT_TIMEOUT=`soon`"), "{r:#?}");
}
