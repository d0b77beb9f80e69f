//! The state that must outlive the program: registered task definition
//! revisions and the resources as last applied. Tasks are not stored: they
//! are observed from the runtime (Docker labels) every time.
//!
//! Standalone mode keeps it in one JSON file per source, written atomically
//! (temporary file, fsync, rename) under an exclusive lock, so a kill at any
//! moment leaves either the old or the new state. The directory is 0700
//! and every file in it 0600 ([`crate::fsutil`]).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::deployment::History;
use crate::manifest::{CapacityProviderSpec, ClusterSpec, ScheduledTaskSpec};
use crate::model::{ObservedService, ObservedState, Revision};

/// What is persisted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stored {
    pub clusters: BTreeMap<String, ClusterSpec>,
    pub capacity_providers: BTreeMap<String, CapacityProviderSpec>,
    pub revisions: BTreeMap<String, Vec<Revision>>,
    pub task_definitions: BTreeMap<String, u32>,
    pub services: BTreeMap<String, ObservedService>,
    /// Deployments and events by service key.
    #[serde(default)]
    pub deployments: BTreeMap<String, History>,
    /// Scheduled tasks as last applied, by name. Absent from states that
    /// have none, so those read and write as before.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scheduled_tasks: BTreeMap<String, ScheduledTaskSpec>,
}

impl Stored {
    /// Merge into an observed state whose tasks and nodes came from a
    /// runtime.
    pub fn into_observed(self, o: &mut ObservedState) {
        o.clusters = self.clusters;
        o.capacity_providers = self.capacity_providers;
        o.revisions = self.revisions;
        o.task_definitions = self.task_definitions;
        o.services = self.services;
        o.deployments = self.deployments;
        o.scheduled_tasks = self.scheduled_tasks;
    }
}

impl crate::reconcile::Store for FileStore {
    fn load(&self) -> Result<Stored, String> {
        FileStore::load(self).map_err(|e| e.to_string())
    }
    fn save(&self, stored: &Stored) -> Result<(), String> {
        FileStore::save(self, stored).map_err(|e| e.to_string())
    }
}

/// A state read without the lock (`plan` and `status` work while an apply
/// runs): planning only, it refuses to save.
pub struct Snapshot(pub Stored);

impl crate::reconcile::Store for Snapshot {
    fn load(&self) -> Result<Stored, String> {
        Ok(self.0.clone())
    }
    fn save(&self, _: &Stored) -> Result<(), String> {
        Err("a state read without its lock is not saved".into())
    }
}

/// Why the store cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state file `{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file `{path}` is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// A JSON file store with an exclusive lock held for the store's lifetime.
pub struct FileStore {
    path: PathBuf,
    _lock: File,
}

impl FileStore {
    /// The lock file of the store at `path`, opened after making its
    /// directory and the store private.
    fn lock_file(path: &Path) -> std::io::Result<File> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::fsutil::private_dir(dir)?;
        }
        crate::fsutil::private_file(path)?;
        crate::fsutil::open_private(&path.with_extension("lock"), false)
    }

    /// Open (creating the directory) and lock the store at `path`. Blocks
    /// while another process holds the lock.
    pub fn open(path: &Path) -> Result<FileStore, StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let lock = FileStore::lock_file(path).map_err(io)?;
        lock.lock().map_err(io)?;
        Ok(FileStore {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// Open and lock the store unless another process holds it (an apply
    /// in progress): then None.
    pub fn try_open(path: &Path) -> Result<Option<FileStore>, StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let lock = FileStore::lock_file(path).map_err(io)?;
        match lock.try_lock() {
            Ok(()) => Ok(Some(FileStore {
                path: path.to_path_buf(),
                _lock: lock,
            })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(io(e)),
        }
    }

    /// Read the store without locking it, for commands that only look
    /// (status, history) while an apply may hold it: saves are atomic
    /// renames, so what is read is a whole state.
    pub fn peek(path: &Path) -> Result<Stored, StoreError> {
        read_json(path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn load(&self) -> Result<Stored, StoreError> {
        FileStore::peek(&self.path)
    }

    pub fn save(&self, state: &Stored) -> Result<(), StoreError> {
        write_atomic(&self.path, state)
    }
}

/// Read a JSON file written by [`write_atomic`]; a missing one is empty.
fn read_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T, StoreError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(source) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Write `value` as JSON to `path`: a temporary file, fsync, rename.
fn write_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = crate::fsutil::open_private(&tmp, true).map_err(io)?;
    let json = serde_json::to_vec_pretty(value).expect("state serialises");
    f.write_all(&json).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

/// The records of a source's tasks started outside any service
/// (`run-task`), in a file of their own beside its state: a run does not
/// wait for an apply that holds the state's lock. Locked for its lifetime.
pub struct RunsFile {
    path: PathBuf,
    _lock: File,
}

pub type Runs = BTreeMap<String, crate::runs::RunRecord>;

impl RunsFile {
    /// Open and lock (blocking: every holder is brief).
    pub fn open(path: &Path) -> Result<RunsFile, StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let lock = FileStore::lock_file(path).map_err(io)?;
        lock.lock().map_err(io)?;
        Ok(RunsFile {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn load(&self) -> Result<Runs, StoreError> {
        RunsFile::peek(&self.path)
    }

    /// Read without the lock (status): saves are atomic renames.
    pub fn peek(path: &Path) -> Result<Runs, StoreError> {
        read_json(path)
    }

    pub fn save(&self, runs: &Runs) -> Result<(), StoreError> {
        write_atomic(&self.path, runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_without_scheduled_tasks_reads_and_writes_as_before() {
        let old = r#"{"clusters":{},"capacityProviders":{},"revisions":{},"taskDefinitions":{"web":1},"services":{},"deployments":{}}"#;
        let st: Stored = serde_json::from_str(old).unwrap();
        assert!(st.scheduled_tasks.is_empty());
        assert_eq!(serde_json::to_string(&st).unwrap(), old);
    }
}
