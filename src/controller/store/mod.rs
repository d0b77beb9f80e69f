//! The controller's durable state: what was applied (revisions, services:
//! the same [`Stored`] as standalone mode), the node registry, the tasks
//! assigned to each node, recent events, tokens, credentials, sealed
//! secrets, run records and schedules. Secret values are never written in
//! clear: assignments are stored without them and re-resolved when served,
//! and the operator's secrets are sealed with the installation's key
//! (`secret_store.rs`).
//!
//! [`Db`] turns records into rows of a [`Backend`] (`backend.rs`): redb in
//! one local file (`redb.rs`, the default) or etcd shared by several
//! controllers (`etcd.rs`). Every change is one transaction, so a
//! controller killed at any moment restarts from a consistent state and
//! re-adopts what its agents run.
//!
//! The applied state is kept one row per resource (`clusters/NAME`,
//! `services/CLUSTER/NAME`, ...), and a save writes only the rows that
//! differ from the last one: an apply saves after every step, and writing
//! the whole state each time made a first apply of a thousand services
//! quadratic (tens of seconds of saving before any task started).

pub mod backend;
pub mod copy;
pub mod etcd;
pub mod redb;

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::NodeInfo;
use crate::store::Stored;
use crate::wire::{Assignment, EventRecord, NodeStatus};
pub use backend::{Backend, BackendError, Op, Table};

/// Events kept; older ones are dropped.
pub const EVENTS_KEPT: u64 = 1000;

/// A registered node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub info: NodeInfo,
    pub status: NodeStatus,
    pub agent_version: String,
    /// When the node was found LOST (unix seconds): it is forgotten after
    /// `--forget-lost-after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_at: Option<i64>,
}

/// A named API token: its SHA-256 (hex), never the token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    #[serde(flatten)]
    pub view: crate::wire::TokenView,
    pub hash: String,
}

/// The credential a node received when it joined: its SHA-256 (hex).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCredential {
    pub cluster: String,
    pub hash: String,
    /// Unix seconds.
    pub issued_at: i64,
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
    pub tokens: Vec<TokenRecord>,
    pub scaling: BTreeMap<String, crate::autoscaling::Scaled>,
    pub credentials: BTreeMap<String, NodeCredential>,
    pub runs: BTreeMap<String, crate::runs::RunRecord>,
    pub schedules: BTreeMap<String, crate::runs::scheduled::ScheduleState>,
    /// Commit each service was last changed from.
    pub commits: std::collections::BTreeMap<String, String>,
    pub suspended: bool,
    /// `destroy --controller`: everything is removed and nothing of the
    /// source applied until `resume`.
    pub torn_down: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("controller store `{place}`: {error}")]
pub struct DbError {
    place: String,
    error: BackendError,
}

impl DbError {
    /// The write was refused because this controller no longer leads.
    pub fn not_leader(&self) -> bool {
        matches!(self.error, BackendError::NotLeader(_))
    }
}

pub struct Db {
    backend: Box<dyn Backend>,
    /// The applied state as last written: saves write only what differs.
    saved: std::sync::Mutex<Stored>,
}

/// The rows of `section` of the applied state that differ between `old`
/// and `new`.
fn diff<T: PartialEq + Serialize>(
    ops: &mut Vec<Op>,
    section: &str,
    old: &BTreeMap<String, T>,
    new: &BTreeMap<String, T>,
) -> Result<(), serde_json::Error> {
    for (k, v) in new {
        if old.get(k) != Some(v) {
            ops.push(Op::Put(
                Table::Applied,
                format!("{section}/{k}"),
                serde_json::to_vec(v)?,
            ));
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        ops.push(Op::Delete(Table::Applied, format!("{section}/{k}")));
    }
    Ok(())
}

/// The row changes between two applied states.
fn between(old: &Stored, new: &Stored) -> Result<Vec<Op>, serde_json::Error> {
    let mut ops = Vec::new();
    diff(&mut ops, "clusters", &old.clusters, &new.clusters)?;
    diff(
        &mut ops,
        "capacityProviders",
        &old.capacity_providers,
        &new.capacity_providers,
    )?;
    diff(&mut ops, "revisions", &old.revisions, &new.revisions)?;
    diff(
        &mut ops,
        "taskDefinitions",
        &old.task_definitions,
        &new.task_definitions,
    )?;
    diff(&mut ops, "services", &old.services, &new.services)?;
    diff(&mut ops, "deployments", &old.deployments, &new.deployments)?;
    diff(
        &mut ops,
        "scheduledTasks",
        &old.scheduled_tasks,
        &new.scheduled_tasks,
    )?;
    Ok(ops)
}

/// Make `old` equal to `new`, cloning only the entries that differ.
fn sync_map<T: PartialEq + Clone>(old: &mut BTreeMap<String, T>, new: &BTreeMap<String, T>) {
    old.retain(|k, _| new.contains_key(k));
    for (k, v) in new {
        if old.get(k) != Some(v) {
            old.insert(k.clone(), v.clone());
        }
    }
}

/// The applied state alone, as the reconcile core sees a store: the seam
/// standalone mode's file store shares (their common contract is tested
/// over all three in `tests/store_contract.rs`).
impl crate::reconcile::Store for Db {
    fn load(&self) -> Result<Stored, String> {
        Db::load(self).map(|l| l.stored).map_err(|e| e.to_string())
    }
    fn save(&self, stored: &Stored) -> Result<(), String> {
        self.save_stored(stored).map_err(|e| e.to_string())
    }
}

impl Db {
    /// Open (or create) the default store, `DIR/controller.redb`.
    pub fn open(dir: &Path) -> Result<Db, DbError> {
        let backend = redb::RedbBackend::open(dir).map_err(|e| DbError {
            place: redb::RedbBackend::file(dir).display().to_string(),
            error: BackendError::Failed(e),
        })?;
        Ok(Db::over(Box::new(backend)))
    }

    pub fn over(backend: Box<dyn Backend>) -> Db {
        Db {
            backend,
            saved: std::sync::Mutex::new(Stored::default()),
        }
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    fn err(&self, e: impl std::fmt::Display) -> DbError {
        DbError {
            place: self.backend.describe(),
            error: BackendError::Failed(e.to_string()),
        }
    }

    fn failed(&self, error: BackendError) -> DbError {
        DbError {
            place: self.backend.describe(),
            error,
        }
    }

    fn commit(&self, ops: Vec<Op>) -> Result<(), DbError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.backend.commit(ops).map_err(|e| self.failed(e))
    }

    fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, DbError> {
        serde_json::to_vec(value).map_err(|e| self.err(e))
    }

    pub fn load(&self) -> Result<Loaded, DbError> {
        let rows = self.backend.read_all().map_err(|e| self.failed(e))?;
        let mut out = Loaded::default();
        fn typed<T: DeserializeOwned>(
            db: &Db,
            what: &str,
            key: &str,
            bytes: &[u8],
        ) -> Result<T, DbError> {
            serde_json::from_slice(bytes).map_err(|e| db.err(format!("{what} `{key}`: {e}")))
        }
        // Stores written before the state was kept per row hold it whole.
        let mut whole = false;
        for (table, key, v) in &rows {
            let (k, v) = (key.as_str(), v.as_slice());
            match table {
                Table::State => match k {
                    "stored" => {
                        out.stored = typed(self, "state", k, v)?;
                        whole = true;
                    }
                    "commits" => out.commits = typed(self, "state", k, v)?,
                    "suspended" => out.suspended = typed(self, "state", k, v)?,
                    "torn_down" => out.torn_down = typed(self, "state", k, v)?,
                    _ => {}
                },
                Table::Applied => {}
                Table::Nodes => out.nodes.push(typed(self, "node", k, v)?),
                Table::Assignments => out.assignments.push(typed(self, "assignment", k, v)?),
                Table::Events => {
                    let seq = k
                        .parse()
                        .map_err(|_| self.err(format!("event key `{k}`")))?;
                    out.events.push((seq, typed(self, "event", k, v)?));
                }
                Table::Tokens => out.tokens.push(typed(self, "token", k, v)?),
                Table::Scaling => self.insert(&mut out.scaling, "scaling", k, k.into(), v)?,
                Table::Credentials => {
                    self.insert(&mut out.credentials, "credential", k, k.into(), v)?
                }
                Table::Secrets => {}
                Table::Runs => self.insert(&mut out.runs, "run", k, k.into(), v)?,
                Table::Schedules => self.insert(&mut out.schedules, "schedule", k, k.into(), v)?,
            }
        }
        // The applied rows after a whole state, which they replace.
        for (_, key, v) in rows.iter().filter(|r| r.0 == Table::Applied) {
            let (section, k) = key
                .split_once('/')
                .map(|(s, k)| (s, k.to_string()))
                .ok_or_else(|| self.err(format!("applied state row `{key}`")))?;
            let st = &mut out.stored;
            let v = v.as_slice();
            match section {
                "clusters" => self.insert(&mut st.clusters, section, key, k, v)?,
                "capacityProviders" => {
                    self.insert(&mut st.capacity_providers, section, key, k, v)?
                }
                "revisions" => self.insert(&mut st.revisions, section, key, k, v)?,
                "taskDefinitions" => self.insert(&mut st.task_definitions, section, key, k, v)?,
                "services" => self.insert(&mut st.services, section, key, k, v)?,
                "deployments" => self.insert(&mut st.deployments, section, key, k, v)?,
                "scheduledTasks" => self.insert(&mut st.scheduled_tasks, section, key, k, v)?,
                other => return Err(self.err(format!("unknown applied state section `{other}`"))),
            }
        }
        out.events.sort_by_key(|(seq, _)| *seq);
        if whole {
            // Move it to rows in one transaction: the old row goes only
            // with the new ones in place.
            let mut ops = between(&Stored::default(), &out.stored).map_err(|e| self.err(e))?;
            ops.push(Op::Delete(Table::State, "stored".into()));
            self.commit(ops)?;
        }
        *self.saved.lock().unwrap_or_else(|p| p.into_inner()) = out.stored.clone();
        Ok(out)
    }

    /// Decode row `key` (`v`) into `map` under `k`.
    fn insert<T: DeserializeOwned>(
        &self,
        map: &mut BTreeMap<String, T>,
        what: &str,
        key: &str,
        k: String,
        v: &[u8],
    ) -> Result<(), DbError> {
        let value =
            serde_json::from_slice(v).map_err(|e| self.err(format!("{what} `{key}`: {e}")))?;
        map.insert(k, value);
        Ok(())
    }

    /// Save the applied state: only the rows that changed since the last
    /// save, in one transaction.
    pub fn save_stored(&self, stored: &Stored) -> Result<(), DbError> {
        let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        let ops = between(&saved, stored).map_err(|e| self.err(e))?;
        if ops.is_empty() {
            return Ok(());
        }
        self.commit(ops)?;
        sync_map(&mut saved.clusters, &stored.clusters);
        sync_map(&mut saved.capacity_providers, &stored.capacity_providers);
        sync_map(&mut saved.revisions, &stored.revisions);
        sync_map(&mut saved.task_definitions, &stored.task_definitions);
        sync_map(&mut saved.services, &stored.services);
        sync_map(&mut saved.deployments, &stored.deployments);
        sync_map(&mut saved.scheduled_tasks, &stored.scheduled_tasks);
        Ok(())
    }

    fn put<T: Serialize>(&self, table: Table, key: &str, value: &T) -> Result<(), DbError> {
        let bytes = self.encode(value)?;
        self.commit(vec![Op::Put(table, key.into(), bytes)])
    }

    fn delete(&self, table: Table, key: &str) -> Result<(), DbError> {
        self.commit(vec![Op::Delete(table, key.into())])
    }

    pub fn save_commits(
        &self,
        commits: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), DbError> {
        self.put(Table::State, "commits", commits)
    }

    /// A value derived from the installation key the store was made with.
    pub fn key_check(&self) -> Result<Option<String>, DbError> {
        match self.backend.read(Table::State, "key_check") {
            Ok(Some(v)) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
            Ok(None) => Ok(None),
            Err(e) => Err(self.failed(e)),
        }
    }

    pub fn save_key_check(&self, check: &str) -> Result<(), DbError> {
        self.commit(vec![Op::Put(
            Table::State,
            "key_check".into(),
            check.as_bytes().to_vec(),
        )])
    }

    pub fn save_suspended(&self, suspended: bool) -> Result<(), DbError> {
        self.put(Table::State, "suspended", &suspended)
    }

    pub fn save_torn_down(&self, torn_down: bool) -> Result<(), DbError> {
        self.put(Table::State, "torn_down", &torn_down)
    }

    pub fn put_node(&self, node: &NodeRecord) -> Result<(), DbError> {
        self.put(Table::Nodes, &node.info.name, node)
    }

    /// Forget a node (retired, removed or long lost) and its credential.
    pub fn delete_node(&self, name: &str) -> Result<(), DbError> {
        self.commit(vec![
            Op::Delete(Table::Nodes, name.into()),
            Op::Delete(Table::Credentials, name.into()),
        ])
    }

    pub fn put_credential(&self, node: &str, c: &NodeCredential) -> Result<(), DbError> {
        self.put(Table::Credentials, node, c)
    }

    pub fn put_scaled(&self, key: &str, s: &crate::autoscaling::Scaled) -> Result<(), DbError> {
        self.put(Table::Scaling, key, s)
    }

    pub fn delete_scaled(&self, key: &str) -> Result<(), DbError> {
        self.delete(Table::Scaling, key)
    }

    pub fn put_token(&self, t: &TokenRecord) -> Result<(), DbError> {
        self.put(Table::Tokens, &t.view.name, t)
    }

    pub fn delete_token(&self, name: &str) -> Result<(), DbError> {
        self.delete(Table::Tokens, name)
    }

    /// Write run records and forget others, in one transaction.
    pub fn put_runs(
        &self,
        put: &[&crate::runs::RunRecord],
        remove: &[&str],
    ) -> Result<(), DbError> {
        let mut ops = Vec::with_capacity(put.len() + remove.len());
        for r in put {
            ops.push(Op::Put(Table::Runs, r.id.clone(), self.encode(r)?));
        }
        for id in remove {
            ops.push(Op::Delete(Table::Runs, id.to_string()));
        }
        self.commit(ops)
    }

    pub fn put_schedule(
        &self,
        name: &str,
        s: &crate::runs::scheduled::ScheduleState,
    ) -> Result<(), DbError> {
        self.put(Table::Schedules, name, s)
    }

    pub fn delete_schedule(&self, name: &str) -> Result<(), DbError> {
        self.delete(Table::Schedules, name)
    }

    /// Record assignments and removals in one transaction.
    pub fn assign(&self, put: &[&AssignmentRecord], remove: &[&str]) -> Result<(), DbError> {
        let mut ops = Vec::with_capacity(put.len() + remove.len());
        for a in put {
            let mut stripped = (*a).clone();
            stripped.task.secrets.clear();
            ops.push(Op::Put(
                Table::Assignments,
                a.task.identity.id.clone(),
                self.encode(&stripped)?,
            ));
        }
        for id in remove {
            ops.push(Op::Delete(Table::Assignments, id.to_string()));
        }
        self.commit(ops)
    }

    /// A sealed secret's row.
    pub fn secret_row(&self, name: &str) -> Result<Option<Vec<u8>>, DbError> {
        self.backend
            .read(Table::Secrets, name)
            .map_err(|e| self.failed(e))
    }

    /// Every sealed secret's row, by name.
    pub fn secret_rows(&self) -> Result<Vec<(String, Vec<u8>)>, DbError> {
        self.backend
            .read_table(Table::Secrets)
            .map_err(|e| self.failed(e))
    }

    pub fn put_secret_row(&self, name: &str, row: &[u8]) -> Result<(), DbError> {
        self.commit(vec![Op::Put(Table::Secrets, name.into(), row.to_vec())])
    }

    /// Remove a secret's row; whether there was one.
    pub fn delete_secret_row(&self, name: &str) -> Result<bool, DbError> {
        if self.secret_row(name)?.is_none() {
            return Ok(false);
        }
        self.delete(Table::Secrets, name)?;
        Ok(true)
    }

    pub fn push_event(&self, seq: u64, e: &EventRecord) -> Result<(), DbError> {
        let mut ops = vec![Op::Put(
            Table::Events,
            backend::event_key(seq),
            self.encode(e)?,
        )];
        if seq >= EVENTS_KEPT {
            ops.push(Op::DeleteBelow(
                Table::Events,
                backend::event_key(seq + 1 - EVENTS_KEPT),
            ));
        }
        self.commit(ops)
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
                identity: super::super::tests::identity(id),
                spec: serde_json::from_value(serde_json::json!({
                    "containerDefinitions": [{"name": "a", "image": "busybox:stable"}]
                }))
                .unwrap(),
                reported: false,
                stop: false,
                secrets: BTreeMap::from([("DB".to_string(), "hunter2".to_string())]),
                node_secrets: Vec::new(),
            },
        }
    }

    fn applied(families: &[(&str, u32)]) -> Stored {
        let mut st = Stored::default();
        for (f, r) in families {
            st.task_definitions.insert(f.to_string(), *r);
            st.deployments.insert(format!("c/{f}"), Default::default());
        }
        st
    }

    #[test]
    fn the_applied_state_is_saved_by_row_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let last = {
            let db = Db::open(dir.path()).unwrap();
            db.load().unwrap();
            db.save_stored(&applied(&[("a", 1), ("b", 1), ("c", 1)]))
                .unwrap();
            // One row changed, one removed, one added.
            let next = applied(&[("a", 2), ("b", 1), ("d", 1)]);
            db.save_stored(&next).unwrap();
            let rows: Vec<String> = db
                .backend()
                .read_table(Table::Applied)
                .unwrap()
                .into_iter()
                .map(|r| r.0)
                .collect();
            assert_eq!(
                rows,
                [
                    "deployments/c/a",
                    "deployments/c/b",
                    "deployments/c/d",
                    "taskDefinitions/a",
                    "taskDefinitions/b",
                    "taskDefinitions/d"
                ]
            );
            next
        };
        let db = Db::open(dir.path()).unwrap();
        assert_eq!(db.load().unwrap().stored, last);
    }

    #[test]
    fn scheduled_tasks_are_saved_by_row_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = applied(&[("report", 1)]);
        let spec: crate::manifest::ScheduledTaskSpec = serde_json::from_value(serde_json::json!({
            "cluster": "c", "taskDefinition": "report", "schedule": "cron(0 3 * * ? *)",
            "overrides": {"containerOverrides": [{"name": "app", "command": ["./report"]}]}
        }))
        .unwrap();
        st.scheduled_tasks.insert("nightly".into(), spec);
        let rows = |db: &Db| -> Vec<String> {
            db.backend()
                .read_table(Table::Applied)
                .unwrap()
                .into_iter()
                .map(|r| r.0)
                .filter(|k| k.starts_with("scheduledTasks/"))
                .collect()
        };
        {
            let db = Db::open(dir.path()).unwrap();
            db.load().unwrap();
            db.save_stored(&st).unwrap();
            assert_eq!(rows(&db), ["scheduledTasks/nightly"]);
        }
        let db = Db::open(dir.path()).unwrap();
        assert_eq!(db.load().unwrap().stored, st);
        st.scheduled_tasks.clear();
        db.save_stored(&st).unwrap();
        assert!(rows(&db).is_empty());
        drop(db);
        assert_eq!(Db::open(dir.path()).unwrap().load().unwrap().stored, st);
    }

    #[test]
    fn a_state_saved_whole_is_read_and_moved_to_rows() {
        let dir = tempfile::tempdir().unwrap();
        let old = applied(&[("a", 3), ("b", 1)]);
        {
            let db = Db::open(dir.path()).unwrap();
            db.put(Table::State, "stored", &old).unwrap();
        }
        let db = Db::open(dir.path()).unwrap();
        assert_eq!(db.load().unwrap().stored, old);
        assert!(db.backend().read(Table::State, "stored").unwrap().is_none());
        // Saving the same state again writes nothing new and reads back.
        db.save_stored(&old).unwrap();
        let db2_dir = dir.path().to_path_buf();
        drop(db);
        assert_eq!(Db::open(&db2_dir).unwrap().load().unwrap().stored, old);
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
                lost_at: None,
            })
            .unwrap();
            for i in 0..(EVENTS_KEPT + 5) {
                db.push_event(
                    i,
                    &EventRecord {
                        at: i as i64,
                        message: format!("e{i}"),
                        service: (i % 2 == 0).then(|| "c/s".to_string()),
                    },
                )
                .unwrap();
            }
        }
        let db = Db::open(dir.path()).unwrap();
        let l = db.load().unwrap();
        assert_eq!(l.assignments.len(), 1);
        assert_eq!(l.assignments[0].task.identity.id, "t2");
        assert!(l.assignments[0].task.secrets.is_empty());
        assert_eq!(l.nodes.len(), 1);
        assert_eq!(l.events.len() as u64, EVENTS_KEPT);
        assert_eq!(l.events[0].0, 5);
        let raw = std::fs::read(dir.path().join("controller.redb")).unwrap();
        assert!(!raw.windows(7).any(|w| w == b"hunter2"));
    }
}
