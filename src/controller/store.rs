//! The controller's durable state, in one redb file under `--data-dir`:
//! what was applied (revisions, services: the same [`Stored`] as standalone
//! mode), the node registry, the tasks assigned to each node, and recent
//! events. Secret values are never written: assignments are stored without
//! them and re-resolved when served.
//!
//! Every change is one transaction, so a controller killed at any moment
//! restarts from a consistent state and re-adopts what its agents run.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::NodeInfo;
use crate::store::Stored;
use crate::wire::{Assignment, EventRecord, NodeStatus};

const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
const ASSIGNMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("assignments");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

/// Events kept; older ones are dropped.
pub const EVENTS_KEPT: u64 = 1000;

/// A registered node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub info: NodeInfo,
    pub status: NodeStatus,
    pub agent_version: String,
}

/// A task assigned to a node (secret values stripped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentRecord {
    pub node: String,
    pub task: Assignment,
}

/// Everything loaded at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub stored: Stored,
    pub nodes: Vec<NodeRecord>,
    pub assignments: Vec<AssignmentRecord>,
    pub events: Vec<(u64, EventRecord)>,
    /// Commit each service was last changed from.
    pub commits: std::collections::BTreeMap<String, String>,
    pub suspended: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("controller store `{path}`: {message}")]
pub struct DbError {
    path: PathBuf,
    message: String,
}

pub struct Db {
    db: Database,
    path: PathBuf,
}

impl Db {
    /// Open (or create) `DIR/controller.redb`.
    pub fn open(dir: &Path) -> Result<Db, DbError> {
        let path = dir.join("controller.redb");
        let fail = |m: String| DbError {
            path: path.clone(),
            message: m,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        let db = Database::create(&path).map_err(|e| fail(e.to_string()))?;
        let d = Db { db, path };
        // Create the tables, so that reads of a fresh store find them.
        d.write(|tx| {
            tx.open_table(STATE)?;
            tx.open_table(NODES)?;
            tx.open_table(ASSIGNMENTS)?;
            tx.open_table(EVENTS)?;
            Ok(())
        })?;
        Ok(d)
    }

    fn err(&self, e: impl std::fmt::Display) -> DbError {
        DbError {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), DbError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        f(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    pub fn load(&self) -> Result<Loaded, DbError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let mut out = Loaded::default();
        let decode = |what: &str, bytes: &[u8]| -> Result<_, DbError> {
            serde_json::from_slice::<serde_json::Value>(bytes)
                .map_err(|e| self.err(format!("{what}: {e}")))
        };
        fn typed<T: DeserializeOwned>(db: &Db, v: serde_json::Value) -> Result<T, DbError> {
            serde_json::from_value(v).map_err(|e| db.err(e))
        }
        let state = tx.open_table(STATE).map_err(|e| self.err(e))?;
        if let Some(v) = state.get("stored").map_err(|e| self.err(e))? {
            out.stored = typed(self, decode("state", v.value())?)?;
        }
        if let Some(v) = state.get("commits").map_err(|e| self.err(e))? {
            out.commits = typed(self, decode("commits", v.value())?)?;
        }
        if let Some(v) = state.get("suspended").map_err(|e| self.err(e))? {
            out.suspended = typed(self, decode("suspended", v.value())?)?;
        }
        let nodes = tx.open_table(NODES).map_err(|e| self.err(e))?;
        for row in nodes.iter().map_err(|e| self.err(e))? {
            let (_, v) = row.map_err(|e| self.err(e))?;
            out.nodes.push(typed(self, decode("node", v.value())?)?);
        }
        let assignments = tx.open_table(ASSIGNMENTS).map_err(|e| self.err(e))?;
        for row in assignments.iter().map_err(|e| self.err(e))? {
            let (_, v) = row.map_err(|e| self.err(e))?;
            out.assignments
                .push(typed(self, decode("assignment", v.value())?)?);
        }
        let events = tx.open_table(EVENTS).map_err(|e| self.err(e))?;
        for row in events.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            out.events
                .push((k.value(), typed(self, decode("event", v.value())?)?));
        }
        Ok(out)
    }

    pub fn save_stored(&self, stored: &Stored) -> Result<(), DbError> {
        let bytes = serde_json::to_vec(stored).map_err(|e| self.err(e))?;
        self.write(|tx| {
            tx.open_table(STATE)?.insert("stored", bytes.as_slice())?;
            Ok(())
        })
    }

    fn put_state<T: Serialize>(&self, key: &str, value: &T) -> Result<(), DbError> {
        let bytes = serde_json::to_vec(value).map_err(|e| self.err(e))?;
        self.write(|tx| {
            tx.open_table(STATE)?.insert(key, bytes.as_slice())?;
            Ok(())
        })
    }

    pub fn save_commits(
        &self,
        commits: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), DbError> {
        self.put_state("commits", commits)
    }

    pub fn save_suspended(&self, suspended: bool) -> Result<(), DbError> {
        self.put_state("suspended", &suspended)
    }

    pub fn put_node(&self, node: &NodeRecord) -> Result<(), DbError> {
        let bytes = serde_json::to_vec(node).map_err(|e| self.err(e))?;
        self.write(|tx| {
            tx.open_table(NODES)?
                .insert(node.info.name.as_str(), bytes.as_slice())?;
            Ok(())
        })
    }

    /// Forget a node (a retired one).
    pub fn delete_node(&self, name: &str) -> Result<(), DbError> {
        self.write(|tx| {
            tx.open_table(NODES)?.remove(name)?;
            Ok(())
        })
    }

    /// Record assignments and removals in one transaction.
    pub fn assign(&self, put: &[&AssignmentRecord], remove: &[&str]) -> Result<(), DbError> {
        let mut rows = Vec::with_capacity(put.len());
        for a in put {
            let mut stripped = (*a).clone();
            stripped.task.secrets.clear();
            rows.push((
                a.task.id.clone(),
                serde_json::to_vec(&stripped).map_err(|e| self.err(e))?,
            ));
        }
        self.write(|tx| {
            let mut t = tx.open_table(ASSIGNMENTS)?;
            for (id, bytes) in &rows {
                t.insert(id.as_str(), bytes.as_slice())?;
            }
            for id in remove {
                t.remove(*id)?;
            }
            Ok(())
        })
    }

    pub fn push_event(&self, seq: u64, e: &EventRecord) -> Result<(), DbError> {
        let bytes = serde_json::to_vec(e).map_err(|e| self.err(e))?;
        self.write(|tx| {
            let mut t = tx.open_table(EVENTS)?;
            t.insert(seq, bytes.as_slice())?;
            if seq >= EVENTS_KEPT {
                t.retain_in(..=seq - EVENTS_KEPT, |_, _| false)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn assignment(id: &str) -> AssignmentRecord {
        AssignmentRecord {
            node: "n1".into(),
            task: Assignment {
                id: id.into(),
                cluster: "c".into(),
                service: Some("web".into()),
                family: "web".into(),
                revision: 1,
                config_hash: "h".into(),
                spec: serde_json::from_value(serde_json::json!({
                    "containerDefinitions": [{"name": "a", "image": "busybox:stable"}]
                }))
                .unwrap(),
                reported: false,
                secrets: BTreeMap::from([("DB".to_string(), "hunter2".to_string())]),
            },
        }
    }

    #[test]
    fn survives_reopen_without_secret_values() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Db::open(dir.path()).unwrap();
            db.assign(&[&assignment("t1"), &assignment("t2")], &[])
                .unwrap();
            db.assign(&[], &["t1"]).unwrap();
            db.put_node(&NodeRecord {
                info: NodeInfo {
                    name: "n1".into(),
                    cluster: "c".into(),
                    attributes: BTreeMap::new(),
                    cpu: 1024,
                    memory: 512,
                    reserved_ports: Vec::new(),
                },
                status: NodeStatus::Active,
                agent_version: "0".into(),
            })
            .unwrap();
            for i in 0..(EVENTS_KEPT + 5) {
                db.push_event(
                    i,
                    &EventRecord {
                        at: i as i64,
                        message: format!("e{i}"),
                    },
                )
                .unwrap();
            }
        }
        let db = Db::open(dir.path()).unwrap();
        let l = db.load().unwrap();
        assert_eq!(l.assignments.len(), 1);
        assert_eq!(l.assignments[0].task.id, "t2");
        assert!(l.assignments[0].task.secrets.is_empty());
        assert_eq!(l.nodes.len(), 1);
        assert_eq!(l.events.len() as u64, EVENTS_KEPT);
        assert_eq!(l.events[0].0, 5);
        let raw = std::fs::read(dir.path().join("controller.redb")).unwrap();
        assert!(!raw.windows(7).any(|w| w == b"hunter2"));
    }
}
