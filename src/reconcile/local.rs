//! Standalone mode's state on disk: where a source's store and its abort
//! requests live, and what identifies a source.
//!
//! A source is identified by what names it (its canonical path, or
//! `git+URL` with branch and directory), digested: resources are owned by
//! the source that applied them. `reconcile deployment abort` reaches the
//! apply that holds a source's store through a file per service, which
//! the apply consumes when it looks ([`Aborts::take`]).

use std::path::{Path, PathBuf};

use crate::git::GitSource;
use crate::model;

/// A source's identity: `id` names its state, `shown` is how people see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIdentity {
    pub id: String,
    pub shown: String,
}

impl SourceIdentity {
    /// A directory or manifest file, by its canonical path.
    pub fn of_path(path: &Path) -> Result<SourceIdentity, String> {
        let canonical =
            std::fs::canonicalize(path).map_err(|e| format!("`{}`: {e}", path.display()))?;
        Ok(Self::named(canonical.display().to_string()))
    }

    /// A git source, by its URL, branch and directory.
    pub fn of_git(g: &GitSource) -> SourceIdentity {
        Self::named(format!("git+{}", g.display()))
    }

    fn named(shown: String) -> SourceIdentity {
        SourceIdentity {
            id: model::digest(&shown),
            shown,
        }
    }
}

/// The directory standalone state lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir(PathBuf);

impl StateDir {
    /// `explicit` (`--state-dir`), else `$RECONCILE_STATE_DIR`, else
    /// `$XDG_STATE_HOME/reconcile`, else `~/.local/state/reconcile`.
    pub fn resolve(explicit: Option<&Path>) -> StateDir {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let dir = match (explicit, var("RECONCILE_STATE_DIR"), var("XDG_STATE_HOME")) {
            (Some(d), _, _) => d.to_path_buf(),
            (None, Some(d), _) => PathBuf::from(d),
            (None, None, Some(d)) => PathBuf::from(d).join("reconcile"),
            (None, None, None) => var("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".local/state/reconcile"),
        };
        StateDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The store of source `id`.
    pub fn store(&self, id: &str) -> PathBuf {
        self.0.join(format!("standalone-{id}.json"))
    }

    /// The records of the tasks `run-task` started for source `id`.
    pub fn runs(&self, id: &str) -> PathBuf {
        self.0.join(format!("standalone-{id}.runs.json"))
    }

    /// Where git sources are fetched to.
    pub fn git_cache(&self) -> PathBuf {
        self.0.join("git")
    }

    /// The abort requests for the applies of source `id`.
    pub fn aborts(&self, id: &str) -> Aborts {
        Aborts(self.0.join("aborts").join(id))
    }
}

/// Abort requests for the apply in progress on one source: a file per
/// service, named by the digest of its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aborts(PathBuf);

impl Aborts {
    /// The request file for service `key`; it exists until the apply has
    /// seen it.
    pub fn marker(&self, key: &str) -> PathBuf {
        self.0.join(model::digest(&key.to_string()))
    }

    /// Ask the running apply to abort the rollout of `key`.
    pub fn request(&self, key: &str) -> Result<PathBuf, String> {
        crate::fsutil::private_dir(&self.0).map_err(|e| format!("`{}`: {e}", self.0.display()))?;
        let marker = self.marker(key);
        crate::fsutil::write_private(&marker, key.as_bytes())
            .map_err(|e| format!("`{}`: {e}", marker.display()))?;
        Ok(marker)
    }

    /// Whether an abort of `key` was asked for; asking consumes it.
    pub fn take(&self, key: &str) -> bool {
        std::fs::remove_file(self.marker(key)).is_ok()
    }

    /// Forget requests left from an earlier apply: they are not for the
    /// next one.
    pub fn clear(&self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abort_request_is_seen_once_and_cleared_requests_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::resolve(Some(dir.path()));
        let aborts = state.aborts("src1");
        assert!(!aborts.take("c/web"));
        let marker = aborts.request("c/web").unwrap();
        assert!(marker.exists());
        assert!(!aborts.take("c/other"));
        assert!(aborts.take("c/web"));
        assert!(!aborts.take("c/web"), "a request is consumed when seen");
        aborts.request("c/web").unwrap();
        aborts.clear();
        assert!(!aborts.take("c/web"));
        assert_ne!(state.aborts("src2").marker("c/web"), marker);
    }

    #[test]
    fn the_explicit_state_directory_wins() {
        let d = StateDir::resolve(Some(Path::new("/x/state")));
        assert_eq!(d.store("abc"), Path::new("/x/state/standalone-abc.json"));
        assert_eq!(d.git_cache(), Path::new("/x/state/git"));
    }
}
