//! Git sources: `git+URL` where URL is a local path, `file://`, `https://`
//! or `ssh://`, a branch (`--ref`, default `main`) and a directory inside
//! the repository (`--path`). Manifests are read from the commit's tree
//! with libgit2: nothing is checked out, so what is validated and applied
//! is exactly the commit, never a half-updated working tree.
//!
//! The fetched objects are kept in a bare repository under a cache
//! directory, one per URL, so fetches after the first are incremental. The
//! branch is fetched with a forced refspec: a force-push is followed.
//!
//! Credentials: the keys of the ssh agent (`SSH_AUTH_SOCK`) for `ssh://`
//! URLs, as the URL's user, else `git`; for `https://`, a token in
//! `RECONCILE_GIT_TOKEN` (sent as the password; the user name is the URL's,
//! else `git`). The token is sent over https:// only (never over plain http://), never offered to
//! an ssh server as a password.
//!
//! A server that does not connect, or goes silent, fails the fetch after
//! `RECONCILE_GIT_TIMEOUT` seconds (default 60): libgit2's connect and
//! read timeouts, which it also gives libssh2's sessions.
//!
//! Servers are authenticated, never trusted blindly. An ssh server's host
//! key must be in `$HOME/.ssh/known_hosts` (libgit2 checks it, with
//! libssh2; hashed entries and `[host]:port` entries work): an unknown or
//! changed key fails the fetch with an error naming the host, the key's
//! SHA256 fingerprint and whether the key is unknown or differs from the
//! one recorded. An https server's certificate is verified by OpenSSL
//! against the system's CA certificates, or those in `SSL_CERT_FILE` /
//! `SSL_CERT_DIR` when set; an untrusted certificate fails the fetch with
//! an error saying so.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use git2::{
    CertificateCheckStatus, Cred, ErrorClass, ErrorCode, FetchOptions, Oid, RemoteCallbacks,
    Repository, TreeWalkMode, TreeWalkResult,
};

use crate::source::{Content, RawFile, MAX_FILE_BYTES};

/// Where manifests come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    pub url: String,
    pub reference: String,
    /// Directory inside the repository ("" for the root).
    pub path: String,
}

/// A commit's manifests.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub commit: String,
    /// First line of the commit message.
    pub summary: String,
    /// The commit time, Unix seconds.
    pub time: i64,
    pub files: Vec<RawFile>,
}

/// Seconds a fetch waits for a server to connect, or to send anything
/// once connected, unless `RECONCILE_GIT_TIMEOUT` says otherwise. A
/// silent remote must fail a fetch (the controller keeps running what it
/// has and retries), never hang it.
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;

/// The environment variable that sets the fetch timeout, in seconds.
pub const TIMEOUT_ENV: &str = "RECONCILE_GIT_TIMEOUT";

/// The fetch timeout: `RECONCILE_GIT_TIMEOUT` when set, else the default.
pub fn timeout_secs() -> Result<u64, String> {
    match std::env::var(TIMEOUT_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_TIMEOUT_SECS),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n @ 1..=3600) => Ok(n),
            _ => Err(format!(
                "{TIMEOUT_ENV}=`{v}`: expected a whole number of seconds from 1 to 3600"
            )),
        },
        Err(e) => Err(format!("{TIMEOUT_ENV}: {e}")),
    }
}

/// Give libgit2 its connect and read timeouts (ssh sessions included).
/// They are process-wide settings libgit2 reads without synchronisation,
/// so this runs once, first thing, before any thread exists.
pub fn set_network_timeouts() -> Result<(), String> {
    let millis = i32::try_from(timeout_secs()? * 1000).expect("at most 3600 s");
    // SAFETY: called from `main` before any other thread is spawned, as the
    // functions require; nothing reads the options concurrently.
    unsafe {
        git2::opts::set_server_connect_timeout_in_milliseconds(millis)
            .and_then(|()| git2::opts::set_server_timeout_in_milliseconds(millis))
    }
    .map_err(|e| format!("setting the git network timeouts: {}", e.message()))
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// The host key an ssh server presented, described for an error.
struct HostKey {
    host: String,
    /// `ED25519`, `RSA`, ...
    kind: &'static str,
    /// OpenSSH's `SHA256:...` fingerprint.
    fingerprint: String,
}

impl HostKey {
    fn new(host: &str, cert: &git2::cert::CertHostkey<'_>) -> Option<HostKey> {
        use sha2::Digest;
        let digest: [u8; 32] = match (cert.hash_sha256(), cert.hostkey()) {
            (Some(hash), _) => *hash,
            (None, Some(raw)) => sha2::Sha256::digest(raw).into(),
            (None, None) => return None,
        };
        Some(HostKey {
            host: host.to_string(),
            kind: cert.hostkey_type().map_or("unknown", |t| t.short_name()),
            fingerprint: format!("SHA256:{}", base64_unpadded(&digest)),
        })
    }

    /// Why the key was refused: libgit2 only says "invalid or unknown", so
    /// `ssh-keygen -F` tells an unknown host from a changed key (it reads
    /// hashed entries too).
    fn refusal(&self, port: u16) -> String {
        let name = if port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{port}", self.host)
        };
        let known_hosts = match std::env::var_os("HOME") {
            Some(home) => Path::new(&home).join(".ssh/known_hosts"),
            None => PathBuf::from("~/.ssh/known_hosts"),
        };
        let recorded = if known_hosts.is_file() {
            std::process::Command::new("ssh-keygen")
                .args(["-F", &name, "-f"])
                .arg(&known_hosts)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .ok()
                .map(|s| s.success())
        } else {
            Some(false)
        };
        let key = format!("{} key {}", self.kind, self.fingerprint);
        let file = known_hosts.display();
        match recorded {
            Some(true) => format!(
                "the ssh host key of {name} ({key}) does NOT match the key recorded for it in {file}: \
                 the host key changed, or someone is intercepting the connection; not connecting"
            ),
            Some(false) => format!(
                "the ssh host key of {name} ({key}) is unknown: {name} is not in {file}; check the \
                 fingerprint with the server's administrator and add the key there (e.g. with \
                 `ssh-keyscan{} {}`)",
                if port == 22 { String::new() } else { format!(" -p {port}") },
                self.host
            ),
            None => format!(
                "the ssh host key of {name} ({key}) is not in {file} or does not match the key \
                 recorded there; not connecting"
            ),
        }
    }
}

/// A fetch that got no answer in time: say how long that was and how to
/// change it.
fn timed_out(message: &str) -> String {
    format!(
        "the server did not answer within {} s ({message}); {TIMEOUT_ENV} sets the limit in seconds",
        timeout_secs().unwrap_or(DEFAULT_TIMEOUT_SECS)
    )
}

/// The port of an ssh URL (`ssh://[user@]host[:port]/path`, or scp-like
/// `user@host:path` on port 22).
fn ssh_port(url: &str) -> u16 {
    let Some(rest) = ["ssh://", "ssh+git://", "git+ssh://"]
        .iter()
        .find_map(|p| url.strip_prefix(p))
    else {
        return 22;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = match host_port.rsplit_once(']') {
        Some((_, after)) => after.strip_prefix(':'),
        None => host_port.split_once(':').map(|(_, p)| p),
    };
    port.and_then(|p| p.parse().ok()).unwrap_or(22)
}

/// Standard base64 without padding, as OpenSSH prints fingerprints.
fn base64_unpadded(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

impl GitSource {
    /// Parse `git+URL`; None when `source` is not a git source.
    pub fn parse(source: &str, reference: Option<&str>, path: Option<&str>) -> Option<GitSource> {
        let url = source.strip_prefix("git+")?;
        Some(GitSource {
            url: url.to_string(),
            reference: reference.unwrap_or("main").to_string(),
            path: path.unwrap_or("").trim_matches('/').to_string(),
        })
    }

    /// Shown in messages: `URL@REF[:PATH]`.
    pub fn display(&self) -> String {
        if self.path.is_empty() {
            format!("{}@{}", self.url, self.reference)
        } else {
            format!("{}@{}:{}", self.url, self.reference, self.path)
        }
    }

    /// The bare cache repository for this URL under `cache_root`.
    fn cache(&self, cache_root: &Path) -> PathBuf {
        cache_root.join(format!("{}.git", crate::model::digest(&self.url)))
    }

    fn open(&self, cache_root: &Path) -> Result<Repository, String> {
        let dir = self.cache(cache_root);
        // Inside the private state or data directory, and private itself.
        crate::fsutil::private_dir(cache_root)
            .map_err(|e| err(&format!("cannot create `{}`", cache_root.display()), e))?;
        match Repository::open_bare(&dir) {
            Ok(r) => Ok(r),
            Err(_) => Repository::init_bare(&dir).map_err(|e| err("creating the git cache", e)),
        }
    }

    fn local_ref(&self) -> String {
        format!("refs/remotes/origin/{}", self.reference)
    }

    /// Whether the URL is fetched over https, the only transport the token
    /// is sent over.
    fn is_https(&self) -> bool {
        self.url.to_ascii_lowercase().starts_with("https://")
    }

    fn is_plain_http(&self) -> bool {
        self.url.to_ascii_lowercase().starts_with("http://")
    }

    /// Fetch the branch; returns the commit it points to.
    pub fn fetch(&self, cache_root: &Path) -> Result<String, String> {
        let repo = self.open(cache_root)?;
        // The ssh host key the server showed, for the error when it is not
        // known (libgit2 itself decides whether it is).
        let host_key: RefCell<Option<HostKey>> = RefCell::new(None);
        let mut callbacks = RemoteCallbacks::new();
        let mut tried_agent = false;
        let mut tried_token = false;
        let https = self.is_https();
        let plain_http = self.is_plain_http();
        callbacks.credentials(move |_url, user, allowed| {
            let user = user.unwrap_or("git");
            if allowed.is_username() {
                // An ssh URL without a user: libgit2 asks for one first.
                return Cred::username(user);
            }
            if allowed.is_ssh_key() {
                if std::env::var_os("SSH_AUTH_SOCK").is_none() {
                    return Err(git2::Error::from_str(
                        "ssh authentication needs an ssh agent holding the key, \
                         and SSH_AUTH_SOCK is not set",
                    ));
                }
                if !tried_agent {
                    tried_agent = true;
                    return Cred::ssh_key_from_agent(user);
                }
                return Err(git2::Error::from_str(&format!(
                    "ssh authentication as `{user}` failed: no key of the ssh agent \
                     (SSH_AUTH_SOCK) was accepted, or the agent did not answer"
                )));
            }
            if allowed.is_user_pass_plaintext() && plain_http {
                return Err(git2::Error::from_str(
                    "the server asks for credentials over plain http://; \
                     RECONCILE_GIT_TOKEN is only sent over https://",
                ));
            }
            if allowed.is_user_pass_plaintext() && https {
                return match std::env::var("RECONCILE_GIT_TOKEN") {
                    Err(_) => Err(git2::Error::from_str(
                        "the server requires authentication, and RECONCILE_GIT_TOKEN is not set",
                    )),
                    Ok(_) if tried_token => Err(git2::Error::from_str(&format!(
                        "authentication failed: the server refused the credentials \
                         (user `{user}`, password from RECONCILE_GIT_TOKEN)"
                    ))),
                    Ok(token) => {
                        tried_token = true;
                        Cred::userpass_plaintext(user, &token)
                    }
                };
            }
            Err(git2::Error::from_str(
                "no usable credentials (the ssh agent for ssh://, RECONCILE_GIT_TOKEN for https://)",
            ))
        });
        callbacks.certificate_check(|cert, host| {
            if let Some(key) = cert.as_hostkey() {
                *host_key.borrow_mut() = HostKey::new(host, key);
            }
            // libgit2's own verdict: known_hosts for ssh, the CA
            // certificates for https.
            Ok(CertificateCheckStatus::CertificatePassthrough)
        });
        let mut options = FetchOptions::new();
        options.remote_callbacks(callbacks);
        let mut remote = repo
            .remote_anonymous(&self.url)
            .map_err(|e| err(&format!("git remote `{}`", self.url), e))?;
        let refspec = format!("+refs/heads/{}:{}", self.reference, self.local_ref());
        if let Err(e) = remote.fetch(&[refspec.as_str()], Some(&mut options), None) {
            let what = format!("fetching {}", self.display());
            return Err(match (e.code(), e.class()) {
                (ErrorCode::Certificate, ErrorClass::Ssh) => match host_key.borrow().as_ref() {
                    Some(key) => err(&what, key.refusal(ssh_port(&self.url))),
                    None => err(&what, e.message()),
                },
                // With a certificate_check callback that passes, libgit2
                // reports a refused TLS certificate as a generic error of
                // the SSL class.
                (code, ErrorClass::Ssl)
                    if code == ErrorCode::Certificate || e.message().contains("certificate") =>
                {
                    let reason = format!(
                        "the server's TLS certificate is not trusted ({}); it is checked against \
                         the system's CA certificates, or those in SSL_CERT_FILE or SSL_CERT_DIR",
                        e.message()
                    );
                    err(&what, reason)
                }
                (ErrorCode::Timeout, _) => err(&what, timed_out(e.message())),
                // libssh2 says "Timed out waiting on socket"; OpenSSL, whose
                // socket read timed out, "Resource temporarily unavailable".
                _ if ["timed out", "resource temporarily unavailable"]
                    .iter()
                    .any(|m| e.message().to_ascii_lowercase().contains(m)) =>
                {
                    err(&what, timed_out(e.message()))
                }
                _ => err(&what, e.message()),
            });
        }
        let id = repo.refname_to_id(&self.local_ref()).map_err(|_| {
            format!(
                "{}: branch `{}` not found in the repository",
                self.url, self.reference
            )
        })?;
        Ok(id.to_string())
    }

    /// The branch's commit as last fetched into the cache, if any: what a
    /// restarted controller goes on running while the remote is down.
    pub fn cached_head(&self, cache_root: &Path) -> Option<String> {
        let repo = Repository::open_bare(self.cache(cache_root)).ok()?;
        let id = repo.refname_to_id(&self.local_ref()).ok()?;
        Some(id.to_string())
    }

    /// The manifests of `commit` below the source's path, read from the
    /// tree with the same rules as a directory: `*.yaml`/`*.yml`, hidden
    /// entries skipped, files over the size limit refused.
    pub fn read(&self, cache_root: &Path, commit: &str) -> Result<Snapshot, String> {
        let repo = self.open(cache_root)?;
        let oid = Oid::from_str(commit).map_err(|e| err("commit id", e))?;
        let c = repo
            .find_commit(oid)
            .map_err(|e| err(&format!("commit {commit}"), e))?;
        let mut tree = c.tree().map_err(|e| err("commit tree", e))?;
        if !self.path.is_empty() {
            let entry = tree.get_path(Path::new(&self.path)).map_err(|_| {
                format!(
                    "`{}` does not exist in commit {}",
                    self.path,
                    &commit[..12.min(commit.len())]
                )
            })?;
            tree = entry
                .to_object(&repo)
                .and_then(|o| o.peel_to_tree())
                .map_err(|_| format!("`{}` is not a directory in the repository", self.path))?;
        }
        let mut files = Vec::new();
        let mut failure = None;
        tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
            let name = entry.name().unwrap_or_default();
            if name.starts_with('.') {
                return TreeWalkResult::Skip;
            }
            if entry.kind() != Some(git2::ObjectType::Blob)
                || !(name.ends_with(".yaml") || name.ends_with(".yml"))
            {
                return TreeWalkResult::Ok;
            }
            let full = format!("{dir}{name}");
            match repo.find_blob(entry.id()) {
                Ok(b) if b.size() as u64 > MAX_FILE_BYTES => files.push(RawFile {
                    name: full,
                    content: Content::Unreadable(format!(
                        "file is {:.1} MiB, larger than the {} MiB limit for a manifest file",
                        b.size() as f64 / 1048576.0,
                        MAX_FILE_BYTES / 1048576
                    )),
                }),
                Ok(b) => files.push(RawFile {
                    name: full,
                    content: Content::Bytes(b.content().to_vec()),
                }),
                Err(e) => {
                    failure = Some(err(&full, e));
                    return TreeWalkResult::Abort;
                }
            }
            TreeWalkResult::Ok
        })
        .ok();
        if let Some(f) = failure {
            return Err(f);
        }
        if files.is_empty() {
            return Err(format!(
                "no manifests in {} at commit {}: looked for *.yaml and *.yml files (hidden \
                 files and directories are skipped)",
                self.display(),
                &commit[..12.min(commit.len())]
            ));
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Snapshot {
            commit: commit.to_string(),
            summary: c.summary().unwrap_or_default().to_string(),
            time: c.time().seconds(),
            files,
        })
    }
}

/// Who may sign the commits that are applied: SSH keys in an allowed
/// signers file (git's `gpg.ssh.allowedSignersFile` format, checked with
/// `ssh-keygen -Y`) and OpenPGP public keys in an armored key file (checked
/// with `gpg` in a keyring of only those keys).
#[derive(Debug, Clone, Copy, Default)]
pub struct Signers<'a> {
    pub ssh: Option<&'a Path>,
    pub gpg: Option<&'a Path>,
}

/// Check that every commit after `since` up to `head` (all of them, not
/// only the head; only the head when `since` is None or unknown) carries a
/// valid signature by an allowed key.
pub fn verify_range(
    repo_dir: &Path,
    head: &str,
    since: Option<&str>,
    signers: Signers,
) -> Result<usize, String> {
    let repo = Repository::open_bare(repo_dir).map_err(|e| err("opening the git cache", e))?;
    let head_oid = Oid::from_str(head).map_err(|e| err("commit id", e))?;
    let mut commits = vec![head_oid];
    if let Some(since) = since.and_then(|s| Oid::from_str(s).ok()) {
        if repo.find_commit(since).is_ok() && since != head_oid {
            let mut walk = repo.revwalk().map_err(|e| err("walking commits", e))?;
            walk.push(head_oid).map_err(|e| err("walking commits", e))?;
            walk.hide(since).map_err(|e| err("walking commits", e))?;
            commits = walk
                .take(10_000)
                .collect::<Result<_, _>>()
                .map_err(|e| err("walking commits", e))?;
        }
    }
    // One keyring of the allowed OpenPGP keys for the whole range.
    let keyring = match signers.gpg {
        Some(keys) => Some(GpgKeyring::new(keys)?),
        None => None,
    };
    for oid in &commits {
        verify_commit(&repo, *oid, signers.ssh, keyring.as_ref())?;
    }
    Ok(commits.len())
}

/// A temporary GnuPG home holding only the allowed public keys.
struct GpgKeyring {
    home: tempfile::TempDir,
}

impl GpgKeyring {
    fn new(keys: &Path) -> Result<GpgKeyring, String> {
        let home = tempfile::tempdir().map_err(|e| err("temporary directory", e))?;
        let out = std::process::Command::new("gpg")
            .arg("--homedir")
            .arg(home.path())
            .args(["--batch", "--quiet", "--import"])
            .arg(keys)
            .output()
            .map_err(|e| err("running gpg", e))?;
        if !out.status.success() {
            return Err(format!(
                "cannot read the OpenPGP keys in `{}`: {}",
                keys.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(GpgKeyring { home })
    }

    /// Whether `sig` is a good signature of `data` by a key of the ring
    /// (not expired or revoked).
    fn verify(&self, short: &str, sig: &str, data: &[u8]) -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| err("temporary directory", e))?;
        let (sig_file, data_file) = (dir.path().join("commit.asc"), dir.path().join("commit"));
        std::fs::write(&sig_file, sig).map_err(|e| err("writing the signature", e))?;
        std::fs::write(&data_file, data).map_err(|e| err("writing the commit", e))?;
        let out = std::process::Command::new("gpg")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--batch", "--status-fd", "1", "--verify"])
            .arg(&sig_file)
            .arg(&data_file)
            .output()
            .map_err(|e| err("running gpg", e))?;
        let status = String::from_utf8_lossy(&out.stdout);
        let has = |tag: &str| {
            status
                .lines()
                .any(|l| l.starts_with(&format!("[GNUPG:] {tag} ")))
        };
        if has("GOODSIG") && has("VALIDSIG") {
            return Ok(());
        }
        Err(if has("NO_PUBKEY") || has("ERRSIG") {
            format!("commit {short} is signed by an OpenPGP key that is not allowed")
        } else if has("EXPKEYSIG") || has("REVKEYSIG") || has("EXPSIG") {
            format!("commit {short} is signed by an expired or revoked OpenPGP key")
        } else {
            format!("commit {short}: its OpenPGP signature does not verify")
        })
    }
}

fn verify_commit(
    repo: &Repository,
    oid: Oid,
    ssh: Option<&Path>,
    gpg: Option<&GpgKeyring>,
) -> Result<(), String> {
    let short = &oid.to_string()[..12];
    let (sig, data) = repo
        .extract_signature(&oid, None)
        .map_err(|_| format!("commit {short} is not signed"))?;
    let sig = sig.as_str().unwrap_or_default();
    if sig.starts_with("-----BEGIN PGP SIGNATURE-----") {
        return match gpg {
            Some(ring) => ring.verify(short, sig, &data),
            None => Err(format!(
                "commit {short} has an OpenPGP signature, and no OpenPGP keys are allowed (--allowed-gpg-keys)"
            )),
        };
    }
    if !sig.starts_with("-----BEGIN SSH SIGNATURE-----") {
        return Err(format!(
            "commit {short} has a signature that is neither OpenPGP nor SSH"
        ));
    }
    let Some(allowed) = ssh else {
        return Err(format!(
            "commit {short} has an SSH signature, and no SSH keys are allowed (--allowed-signers)"
        ));
    };
    let dir = tempfile::tempdir().map_err(|e| err("temporary directory", e))?;
    let sig_file = dir.path().join("commit.sig");
    std::fs::write(&sig_file, sig).map_err(|e| err("writing the signature", e))?;
    let found = std::process::Command::new("ssh-keygen")
        .args(["-Y", "find-principals", "-f"])
        .arg(allowed)
        .arg("-s")
        .arg(&sig_file)
        .output()
        .map_err(|e| err("running ssh-keygen", e))?;
    let principals = String::from_utf8_lossy(&found.stdout);
    let Some(principal) = principals.lines().next().filter(|_| found.status.success()) else {
        return Err(format!(
            "commit {short} is signed by a key that is not in the allowed signers file"
        ));
    };
    let mut verify = std::process::Command::new("ssh-keygen")
        .args(["-Y", "verify", "-n", "git", "-f"])
        .arg(allowed)
        .args(["-I", principal, "-s"])
        .arg(&sig_file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| err("running ssh-keygen", e))?;
    {
        use std::io::Write;
        let mut stdin = verify.stdin.take().expect("piped");
        stdin
            .write_all(&data)
            .map_err(|e| err("verifying a signature", e))?;
    }
    let out = verify
        .wait_with_output()
        .map_err(|e| err("verifying a signature", e))?;
    if !out.status.success() {
        return Err(format!(
            "commit {short}: its signature does not verify ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

impl GitSource {
    /// The bare cache repository of this source, for [`verify_range`].
    pub fn cache_dir(&self, cache_root: &Path) -> PathBuf {
        self.cache(cache_root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .current_dir(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }

    #[test]
    fn ssh_ports_and_fingerprint_encoding() {
        assert_eq!(ssh_port("ssh://git@example.com/r.git"), 22);
        assert_eq!(ssh_port("ssh://git@example.com:2222/r.git"), 2222);
        assert_eq!(ssh_port("ssh://[::1]:2200/r.git"), 2200);
        assert_eq!(ssh_port("ssh://[::1]/r.git"), 22);
        assert_eq!(ssh_port("git@example.com:ops/r.git"), 22);
        assert_eq!(base64_unpadded(b""), "");
        assert_eq!(base64_unpadded(b"f"), "Zg");
        assert_eq!(base64_unpadded(b"fo"), "Zm8");
        assert_eq!(base64_unpadded(b"foo"), "Zm9v");
        assert_eq!(base64_unpadded(b"foobar\xff"), "Zm9vYmFy/w");
    }

    #[test]
    fn reads_a_commit_tree_below_a_path_and_follows_force_pushes() {
        let d = tempfile::tempdir().unwrap();
        let work = d.path().join("work");
        std::fs::create_dir_all(work.join("deploy/.hidden")).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        std::fs::write(work.join("deploy/a.yaml"), "a: 1\n").unwrap();
        std::fs::write(work.join("deploy/.hidden/b.yaml"), "b: 1\n").unwrap();
        std::fs::write(work.join("deploy/notes.txt"), "x").unwrap();
        std::fs::write(work.join("top.yaml"), "t: 1\n").unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "first"]);
        let src = GitSource::parse(
            &format!("git+{}", work.display()),
            Some("main"),
            Some("deploy"),
        )
        .unwrap();
        let cache = d.path().join("cache");
        let first = src.fetch(&cache).unwrap();
        let snap = src.read(&cache, &first).unwrap();
        assert_eq!(snap.summary, "first");
        let names: Vec<&str> = snap.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a.yaml"]);

        std::fs::write(work.join("deploy/c.yml"), "c: 1\n").unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "second"]);
        let second = src.fetch(&cache).unwrap();
        assert_ne!(first, second);
        assert_eq!(src.read(&cache, &second).unwrap().files.len(), 2);

        // A force-push back to the first commit is followed.
        git(&work, &["reset", "-q", "--hard", &first]);
        assert_eq!(src.fetch(&cache).unwrap(), first);

        let missing = GitSource::parse(&format!("git+{}", work.display()), Some("nope"), None)
            .unwrap()
            .fetch(&cache)
            .unwrap_err();
        assert!(missing.contains("nope"), "{missing}");
    }
}
