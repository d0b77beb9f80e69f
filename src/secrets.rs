//! Secret values: resolved at the edge, right before a container starts,
//! and never stored in clear, printed or serialised. The model and the plan
//! only ever see a keyed fingerprint of each value.
//!
//! Where a `valueFrom` reference is looked up depends on who may write the
//! source. In standalone mode the local user is the operator: `env:NAME`,
//! `file:PATH` and bare names (files of the secrets directory) are read by
//! the program that applies. In fleet mode whoever commits to the source
//! is not the operator, so the controller reads neither its environment
//! nor its files for them: a bare name is a value the operator stored in
//! the controller (`reconcile secret set`), and `node:NAME` is read by the
//! agent from its own `--secrets-dir`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::hmac;

use crate::validate::{Diagnostic, Severity, Validation};

/// The largest secret value accepted, from a file or through the API.
pub const MAX_VALUE: usize = 64 << 10;

/// The fingerprint of a `node:` reference: its value is read on the node,
/// so the controller cannot know it (and a change there rolls nothing).
pub const NODE_FINGERPRINT: &str = "node";

/// What fleet mode says instead of reading its own environment or files.
pub const FLEET_HINT: &str = "in fleet mode secrets come from `reconcile secret set NAME` \
     (then `valueFrom: NAME`) or from the node (`valueFrom: node:NAME`)";

/// A secret value. Its Debug and Display print a placeholder, so a value
/// cannot reach a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wrap a value received from where it was resolved (an agent gets its
    /// tasks' secrets from the controller).
    pub fn new(value: String) -> Self {
        SecretValue(value)
    }

    /// The value itself, for handing to the container runtime only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// A random key of one installation (a controller's data dir, a
/// standalone state dir). Fingerprints and the controller's encryption
/// key are derived from it, each for its own purpose.
pub struct InstallKey([u8; 32]);

impl fmt::Debug for InstallKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InstallKey(<secret>)")
    }
}

/// The key file's name in a data or state directory.
pub const KEY_FILE: &str = "secrets.key";

impl InstallKey {
    /// The key of `path`, created (32 random bytes, mode 0600) when the
    /// file does not exist yet.
    pub fn load_or_create(path: &Path) -> Result<InstallKey, String> {
        let shown = path.display();
        match open_regular(path) {
            Ok(mut f) => {
                use std::os::unix::fs::PermissionsExt;
                let mode = f.metadata().map(|m| m.permissions().mode()).unwrap_or(0);
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        "key file {shown} is readable by others (mode {:o}); `chmod 600` it",
                        mode & 0o777
                    );
                }
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes)
                    .map_err(|e| format!("key file `{shown}`: {e}"))?;
                let key: [u8; 32] = bytes.try_into().map_err(|_| {
                    format!("key file `{shown}`: not a key (32 bytes); restore it from a backup")
                })?;
                Ok(InstallKey(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| format!("key file `{shown}`: {e}"))?;
                }
                let key = InstallKey::random()?;
                let mut f = create_private(path)
                    .map_err(|e| format!("key file `{shown}`: cannot create it: {e}"))?;
                f.write_all(&key.0)
                    .and_then(|_| f.sync_all())
                    .map_err(|e| format!("key file `{shown}`: {e}"))?;
                tracing::info!("created the key file {shown}");
                Ok(key)
            }
            Err(e) => Err(format!("key file `{shown}`: {e}")),
        }
    }

    /// A key given whole (tests that need fingerprints to repeat).
    pub fn from_bytes(key: [u8; 32]) -> InstallKey {
        InstallKey(key)
    }

    /// A key of this process only: its fingerprints mean nothing to any
    /// other process (tests, one-off tools).
    pub fn random() -> Result<InstallKey, String> {
        let mut key = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
            .map_err(|_| "the system's random source failed".to_string())?;
        Ok(InstallKey(key))
    }

    /// A key for `purpose` (HMAC of the purpose under this key), so no
    /// two uses share key material.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &self.0),
            purpose.as_bytes(),
        );
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

/// Create `path` for this user only; an existing file is an error.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Open `path` for reading if it is a regular file and not a symlink:
/// O_NOFOLLOW refuses a symlink as the last component, and the check of
/// the opened file (not of the path) cannot be raced.
fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::other("is a symlink, which is refused")
            } else {
                e
            }
        })?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(f)
}

/// Fingerprints of values: `hmac:` and 16 hex digits of an HMAC-SHA256
/// keyed with the installation's key, so a stored or shown fingerprint
/// cannot be used to test guesses of the value elsewhere.
#[derive(Clone)]
pub struct Fingerprints(hmac::Key);

impl fmt::Debug for Fingerprints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fingerprints(<key>)")
    }
}

impl Fingerprints {
    pub fn new(key: &InstallKey) -> Fingerprints {
        Fingerprints(hmac::Key::new(
            hmac::HMAC_SHA256,
            &key.derive("reconcile secret fingerprint v1"),
        ))
    }

    pub fn of(&self, value: &SecretValue) -> String {
        let tag = hmac::sign(&self.0, value.0.as_bytes());
        let hex: String = tag.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("hmac:{hex}")
    }
}

/// Whether `name` may name a secret: 1 to 128 of letters, digits, `_`,
/// `.` and `-`, not starting with `.` (so never `..` or a hidden file).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "secret name `{}`: use 1 to 128 letters, digits, `_`, `.` and `-`, not starting with `.`",
            name.escape_debug()
        ))
    }
}

/// A `valueFrom` reference, by where its value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference<'a> {
    Env(&'a str),
    File(&'a str),
    Node(&'a str),
    Name(&'a str),
}

impl<'a> Reference<'a> {
    pub fn parse(r: &'a str) -> Reference<'a> {
        if let Some(v) = r.strip_prefix("env:") {
            Reference::Env(v)
        } else if let Some(p) = r.strip_prefix("file:") {
            Reference::File(p)
        } else if let Some(n) = r.strip_prefix("node:") {
            Reference::Node(n)
        } else {
            Reference::Name(r)
        }
    }
}

/// Read the secret file `name` of `dir`: a valid name, a regular file that
/// is not a symlink, at most [`MAX_VALUE`] bytes. Errors name the file,
/// never its content.
pub fn read_named(dir: &Path, name: &str) -> Result<SecretValue, String> {
    check_name(name)?;
    read_file(&dir.join(name), true)
}

/// A file's content as a value; a trailing newline is not part of it.
fn read_file(path: &Path, regular_only: bool) -> Result<SecretValue, String> {
    let shown = path.display();
    let f = if regular_only {
        open_regular(path)
    } else {
        std::fs::File::open(path)
    }
    .map_err(|e| format!("cannot read `{shown}`: {e}"))?;
    let mut bytes = Vec::new();
    f.take(MAX_VALUE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read `{shown}`: {e}"))?;
    if bytes.len() > MAX_VALUE {
        return Err(format!("`{shown}` is larger than {} KiB", MAX_VALUE >> 10));
    }
    let text = String::from_utf8(bytes).map_err(|_| format!("`{shown}` is not UTF-8"))?;
    let value = text.strip_suffix('\n').unwrap_or(&text);
    Ok(SecretValue(
        value.strip_suffix('\r').unwrap_or(value).to_string(),
    ))
}

/// The controller's secret store as the fleet resolver reads it.
pub trait Lookup: Send + Sync {
    /// The value of `name`, `None` when it is not set. Errors never hold a
    /// value.
    fn lookup(&self, name: &str) -> Result<Option<SecretValue>, String>;
}

/// Where references are looked up.
#[derive(Clone)]
enum Scope {
    /// `env:`, `file:` and bare names in `dir`; `node:` refused.
    Standalone { dir: PathBuf },
    /// Bare names in the controller's store; `node:` left to the agent;
    /// `env:` and `file:` refused.
    Fleet { store: Arc<dyn Lookup> },
}

/// Resolves `valueFrom` references of one mode, and fingerprints values
/// with its installation's key.
#[derive(Clone)]
pub struct Resolver {
    scope: Scope,
    fingerprints: Fingerprints,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scope {
            Scope::Standalone { dir } => write!(f, "Resolver(standalone, {})", dir.display()),
            Scope::Fleet { .. } => f.write_str("Resolver(fleet)"),
        }
    }
}

/// Why a secret reference cannot be resolved. Names the reference, never a
/// value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret `{reference}` cannot be resolved: {why}")]
pub struct SecretError {
    pub reference: String,
    pub why: String,
}

impl Resolver {
    /// Standalone: bare names looked up in `dir`, whatever the environment
    /// says.
    pub fn standalone(dir: impl Into<PathBuf>, key: &InstallKey) -> Resolver {
        Resolver {
            scope: Scope::Standalone { dir: dir.into() },
            fingerprints: Fingerprints::new(key),
        }
    }

    /// Standalone with a key of this process only (tests, benchmarks).
    pub fn in_dir(dir: impl Into<PathBuf>) -> Resolver {
        let key = InstallKey::random().expect("the system's random source works");
        Resolver::standalone(dir, &key)
    }

    /// The default secrets directory of a source directory, overridden by
    /// `RECONCILE_SECRETS_DIR`.
    pub fn for_source(source: &Path, key: &InstallKey) -> Resolver {
        let dir = std::env::var_os("RECONCILE_SECRETS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let base = if source.is_file() {
                    source.parent().unwrap_or(Path::new(".")).to_path_buf()
                } else {
                    source.to_path_buf()
                };
                base.join(".reconcile").join("secrets")
            });
        Resolver::standalone(dir, key)
    }

    /// Fleet mode: bare names from the controller's store.
    pub fn fleet(store: Arc<dyn Lookup>, key: &InstallKey) -> Resolver {
        Resolver {
            scope: Scope::Fleet { store },
            fingerprints: Fingerprints::new(key),
        }
    }

    pub fn is_fleet(&self) -> bool {
        matches!(self.scope, Scope::Fleet { .. })
    }

    /// The keyed fingerprint of a value.
    pub fn fingerprint(&self, value: &SecretValue) -> String {
        self.fingerprints.of(value)
    }

    /// Resolve a reference here. A trailing newline of a file is not part
    /// of the value.
    pub fn resolve(&self, reference: &str) -> Result<SecretValue, SecretError> {
        let err = |why: String| SecretError {
            reference: reference.to_string(),
            why,
        };
        match (&self.scope, Reference::parse(reference)) {
            (Scope::Standalone { .. }, Reference::Env(var)) => std::env::var(var)
                .map(SecretValue)
                .map_err(|_| err(format!("environment variable `{var}` is not set"))),
            (Scope::Standalone { .. }, Reference::File(p)) => {
                read_file(Path::new(p), false).map_err(err)
            }
            (Scope::Standalone { dir }, Reference::Name(n)) => read_named(dir, n).map_err(err),
            (Scope::Standalone { .. }, Reference::Node(_)) => Err(err(
                "`node:` references are read by a fleet's agents; standalone mode has none".into(),
            )),
            (Scope::Fleet { .. }, Reference::Env(_) | Reference::File(_)) => {
                Err(err(format!("refused: {FLEET_HINT}")))
            }
            (Scope::Fleet { .. }, Reference::Node(_)) => {
                Err(err("read by the agent on its node".into()))
            }
            (Scope::Fleet { store }, Reference::Name(n)) => {
                check_name(n).map_err(err)?;
                match store.lookup(n).map_err(err)? {
                    Some(v) => Ok(v),
                    None => Err(err(format!(
                        "the controller has no secret `{n}` (`reconcile secret set {n}`)"
                    ))),
                }
            }
        }
    }

    /// Resolve a reference for a launch: `None` for a reference the node
    /// resolves itself (`node:` in fleet mode).
    pub fn resolve_for_launch(&self, reference: &str) -> Result<Option<SecretValue>, SecretError> {
        if self.is_fleet() && matches!(Reference::parse(reference), Reference::Node(_)) {
            return Ok(None);
        }
        self.resolve(reference).map(Some)
    }

    /// Fingerprints of every reference (`unresolved` for those that fail),
    /// and the failures.
    pub fn fingerprints<'a>(
        &self,
        references: impl IntoIterator<Item = &'a str>,
    ) -> (BTreeMap<String, String>, Vec<SecretError>) {
        let mut fps = BTreeMap::new();
        let mut errors = Vec::new();
        for r in references {
            if fps.contains_key(r) {
                continue;
            }
            match self.resolve_for_launch(r) {
                Ok(Some(v)) => {
                    fps.insert(r.to_string(), self.fingerprint(&v));
                }
                Ok(None) => {
                    fps.insert(r.to_string(), NODE_FINGERPRINT.to_string());
                }
                Err(e) => {
                    fps.insert(r.to_string(), "unresolved".to_string());
                    errors.push(e);
                }
            }
        }
        (fps, errors)
    }
}

/// Which references a mode accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Standalone,
    Fleet,
}

/// The `valueFrom` references a mode refuses, as diagnostics on the
/// reference (file:line:col). Run on a source that passed validation.
pub fn check_references(v: &Validation, mode: Mode) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for e in &v.entries {
        let crate::manifest::Manifest::TaskDefinition(td) = &e.manifest else {
            continue;
        };
        for (j, c) in td.spec.container_definitions.iter().enumerate() {
            for (k, s) in c.secrets.iter().enumerate() {
                let Some((message, help)) = refusal(&s.value_from, mode) else {
                    continue;
                };
                let pointer = format!("/spec/containerDefinitions/{j}/secrets/{k}/valueFrom");
                out.push(Diagnostic {
                    severity: Severity::Error,
                    code: "secret",
                    file: v.files[e.file].name.clone(),
                    span: e.document.span_of(&pointer),
                    pointer,
                    kind: Some(e.manifest.kind()),
                    name: Some(e.manifest.name().to_string()),
                    message,
                    help,
                    related: Vec::new(),
                });
            }
        }
    }
    out
}

/// Why `mode` refuses reference `r` (message, help), if it does.
fn refusal(r: &str, mode: Mode) -> Option<(String, Option<String>)> {
    let shown = r.escape_debug();
    match (mode, Reference::parse(r)) {
        // The controller's environment and files are its operator's
        // (tokens, TLS key): a committer must not be able to read them.
        (Mode::Fleet, Reference::Env(_) | Reference::File(_)) => Some((
            format!("`valueFrom: {shown}` is refused: {FLEET_HINT}"),
            None,
        )),
        (Mode::Fleet, Reference::Node(n) | Reference::Name(n)) => check_name(n)
            .err()
            .map(|e| (format!("`valueFrom: {shown}`: {e}"), None)),
        (Mode::Standalone, Reference::Node(_)) => Some((
            format!("`valueFrom: {shown}`: `node:` references are read by a fleet's agents"),
            Some(
                "in standalone mode use a bare name (a file of the secrets directory), \
                 `env:NAME` or `file:PATH`"
                    .into(),
            ),
        )),
        (Mode::Standalone, Reference::Name(n)) => check_name(n)
            .err()
            .map(|e| (format!("`valueFrom: {shown}`: {e}"), None)),
        (Mode::Standalone, Reference::Env(_) | Reference::File(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_never_print() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), "hunter2\n").unwrap();
        let r = Resolver::in_dir(dir.path());
        let v = r.resolve("db").unwrap();
        assert_eq!(v.expose(), "hunter2");
        assert_eq!(format!("{v:?} {v}"), "<secret> <secret>");
        let e = r.resolve("missing").unwrap_err().to_string();
        assert!(e.contains("`missing`") && !e.contains("hunter2"));
        assert!(r.resolve("../etc/passwd").is_err());
        assert!(r.resolve("node:db").is_err());
    }

    #[test]
    fn bare_names_refuse_traversal_symlinks_and_non_files() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "x").unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        std::os::unix::fs::symlink(&outside, secrets.join("link")).unwrap();
        std::fs::create_dir(secrets.join("sub")).unwrap();
        for (name, why) in [
            ("../outside", "secret name"),
            (".hidden", "secret name"),
            ("", "secret name"),
            ("link", "symlink"),
            ("sub", "not a regular file"),
        ] {
            let e = read_named(&secrets, name).unwrap_err();
            assert!(e.contains(why), "{name}: {e}");
        }
        assert!(check_name(&"a".repeat(128)).is_ok());
        assert!(check_name(&"a".repeat(129)).is_err());
        assert!(check_name("db.pass_word-2").is_ok());
    }

    #[test]
    fn fingerprints_are_keyed_and_short() {
        let (a, b) = (InstallKey::random().unwrap(), InstallKey::random().unwrap());
        let v = SecretValue::new("hunter2".into());
        let fa = Fingerprints::new(&a).of(&v);
        assert!(fa.starts_with("hmac:") && fa.len() == 5 + 16, "{fa}");
        assert_eq!(fa, Fingerprints::new(&a).of(&v));
        // Another installation's fingerprint of the same value differs.
        assert_ne!(fa, Fingerprints::new(&b).of(&v));
        assert_ne!(
            fa,
            Fingerprints::new(&a).of(&SecretValue::new("hunter3".into()))
        );
        // Purposes never share key material.
        assert_ne!(a.derive("x"), a.derive("y"));
    }

    #[test]
    fn the_key_file_is_created_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d").join(KEY_FILE);
        let k1 = InstallKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let k2 = InstallKey::load_or_create(&path).unwrap();
        assert_eq!(k1.0, k2.0);
        std::fs::write(&path, "short").unwrap();
        assert!(InstallKey::load_or_create(&path)
            .unwrap_err()
            .contains("not a key"));
    }

    struct Map(BTreeMap<String, String>);
    impl Lookup for Map {
        fn lookup(&self, name: &str) -> Result<Option<SecretValue>, String> {
            Ok(self.0.get(name).cloned().map(SecretValue::new))
        }
    }

    #[test]
    fn fleet_reads_its_store_and_never_its_environment_or_files() {
        let key = InstallKey::random().unwrap();
        let store = Map(BTreeMap::from([("db".to_string(), "pw".to_string())]));
        let r = Resolver::fleet(Arc::new(store), &key);
        assert_eq!(r.resolve("db").unwrap().expose(), "pw");
        std::env::set_var("RECONCILE_TEST_FLEET_SECRET", "leak");
        for refused in ["env:RECONCILE_TEST_FLEET_SECRET", "file:/etc/passwd"] {
            let e = r.resolve(refused).unwrap_err().to_string();
            assert!(
                e.contains("reconcile secret set") && !e.contains("leak"),
                "{e}"
            );
        }
        assert!(r
            .resolve("nope")
            .unwrap_err()
            .why
            .contains("no secret `nope`"));
        assert_eq!(r.resolve_for_launch("node:x").unwrap(), None);
        let (fps, errors) = r.fingerprints(["db", "node:x", "env:HOME"]);
        assert_eq!(fps["node:x"], NODE_FINGERPRINT);
        assert!(fps["db"].starts_with("hmac:"));
        assert_eq!(fps["env:HOME"], "unresolved");
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn modes_refuse_the_references_of_the_other() {
        let fleet = |r: &str| refusal(r, Mode::Fleet).map(|(m, _)| m);
        assert!(fleet("env:RECONCILE_API_TOKEN")
            .unwrap()
            .contains(FLEET_HINT));
        assert!(fleet("file:/etc/shadow").unwrap().contains(FLEET_HINT));
        assert!(fleet("db").is_none() && fleet("node:db").is_none());
        assert!(fleet("node:../x").is_some() && fleet("a/b").is_some());
        let alone = |r: &str| refusal(r, Mode::Standalone);
        assert!(alone("env:X").is_none() && alone("file:/x").is_none() && alone("db").is_none());
        assert!(alone("node:db").is_some() && alone("../x").is_some());
    }
}
