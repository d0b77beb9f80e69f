//! Secret values: resolved at the edge, right before a container starts,
//! and never stored, printed or serialised. The model and the plan only
//! ever see a fingerprint of each value.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

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

    /// `sha256:` and the first 12 hex digits of the value's digest.
    pub fn fingerprint(&self) -> String {
        let d = Sha256::digest(self.0.as_bytes());
        let hex: String = d.iter().take(6).map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
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

/// Where bare secret names are looked up.
#[derive(Debug, Clone)]
pub struct Resolver {
    pub dir: PathBuf,
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
    /// Bare names looked up in `dir`, whatever the environment says.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Resolver {
        Resolver { dir: dir.into() }
    }

    /// The default secrets directory of a source directory, overridden by
    /// `RECONCILE_SECRETS_DIR`.
    pub fn for_source(source: &Path) -> Resolver {
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
        Resolver { dir }
    }

    /// Resolve `env:NAME`, `file:PATH` or a bare name in the secrets
    /// directory. A trailing newline of a file is not part of the value.
    pub fn resolve(&self, reference: &str) -> Result<SecretValue, SecretError> {
        let err = |why: String| SecretError {
            reference: reference.to_string(),
            why,
        };
        if let Some(var) = reference.strip_prefix("env:") {
            return std::env::var(var)
                .map(SecretValue)
                .map_err(|_| err(format!("environment variable `{var}` is not set")));
        }
        let path = match reference.strip_prefix("file:") {
            Some(p) => PathBuf::from(p),
            None => {
                if reference.contains('/') || reference.starts_with('.') {
                    return Err(err(
                        "a bare secret name may not contain `/` or start with `.`; use `file:PATH`"
                            .into(),
                    ));
                }
                self.dir.join(reference)
            }
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| err(format!("cannot read `{}`: {e}", path.display())))?;
        let value = text.strip_suffix('\n').unwrap_or(&text);
        Ok(SecretValue(
            value.strip_suffix('\r').unwrap_or(value).to_string(),
        ))
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
            match self.resolve(r) {
                Ok(v) => {
                    fps.insert(r.to_string(), v.fingerprint());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_never_print() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), "hunter2\n").unwrap();
        let r = Resolver {
            dir: dir.path().to_path_buf(),
        };
        let v = r.resolve("db").unwrap();
        assert_eq!(v.expose(), "hunter2");
        assert_eq!(format!("{v:?} {v}"), "<secret> <secret>");
        assert!(v.fingerprint().starts_with("sha256:"));
        assert!(!v.fingerprint().contains("hunter2"));
        let e = r.resolve("missing").unwrap_err().to_string();
        assert!(e.contains("`missing`") && !e.contains("hunter2"));
        assert!(r.resolve("../etc/passwd").is_err());
    }
}
