//! The controller's durable state, in one redb file under `--data-dir`
//! (the directory 0700, the file 0600):
//! what was applied (revisions, services: the same [`Stored`] as standalone
//! mode), the node registry, the tasks assigned to each node, and recent
//! events. Secret values are never written in clear: assignments are
//! stored without them and re-resolved when served, and the operator's
//! secrets are sealed with the installation's key (`secret_store.rs`).
//!
//! Every change is one transaction, so a controller killed at any moment
//! restarts from a consistent state and re-adopts what its agents run.
//!
//! The applied state is kept one row per resource (`clusters/NAME`,
//! `services/CLUSTER/NAME`, ...), and a save writes only the rows that
//! differ from the last one: an apply saves after every step, and writing
//! the whole state each time made a first apply of a thousand services
//! quadratic (tens of seconds of saving before any task started).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::NodeInfo;
use crate::store::Stored;
use crate::wire::{Assignment, EventRecord, NodeStatus};

const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
/// The applied state ([`Stored`]), one row per `SECTION/KEY`.
const APPLIED: TableDefinition<&str, &[u8]> = TableDefinition::new("applied");
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
const ASSIGNMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("assignments");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Named API tokens, by name (their hashes, never the tokens).
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// Auto scaled services' counts and recent decisions, by service key: kept
/// apart from the applied state, which an apply owns while it runs.
const SCALING: TableDefinition<&str, &[u8]> = TableDefinition::new("scaling");
/// Node credentials, by node name (their hashes).
const CREDENTIALS: TableDefinition<&str, &[u8]> = TableDefinition::new("credentials");
/// The operator's secrets by name, sealed (`secret_store.rs`): only
/// ciphertext is written here.
const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");

/// Tasks started outside any service (`run-task`, schedules), by id:
/// their records, kept an hour after they stop.
const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");

/// Scheduled tasks' state between fires and their recent runs, by name.
const SCHEDULES: TableDefinition<&str, &[u8]> = TableDefinition::new("schedules");

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
#[error("controller store `{path}`: {message}")]
pub struct DbError {
    path: PathBuf,
    message: String,
}

pub struct Db {
    db: Database,
    path: PathBuf,
    /// The applied state as last written: saves write only what differs.
    saved: std::sync::Mutex<Stored>,
}

/// Rows to write and delete in the APPLIED table.
#[derive(Default)]
struct Rows {
    put: Vec<(String, Vec<u8>)>,
    delete: Vec<String>,
}

impl Rows {
    /// The rows of `section` that differ between `old` and `new`.
    fn diff<T: PartialEq + Serialize>(
        &mut self,
        section: &str,
        old: &BTreeMap<String, T>,
        new: &BTreeMap<String, T>,
    ) -> Result<(), serde_json::Error> {
        for (k, v) in new {
            if old.get(k) != Some(v) {
                self.put
                    .push((format!("{section}/{k}"), serde_json::to_vec(v)?));
            }
        }
        for k in old.keys().filter(|k| !new.contains_key(*k)) {
            self.delete.push(format!("{section}/{k}"));
        }
        Ok(())
    }
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

impl Rows {
    /// The rows that differ between two applied states.
    fn between(old: &Stored, new: &Stored) -> Result<Rows, serde_json::Error> {
        let mut rows = Rows::default();
        rows.diff("clusters", &old.clusters, &new.clusters)?;
        rows.diff(
            "capacityProviders",
            &old.capacity_providers,
            &new.capacity_providers,
        )?;
        rows.diff("revisions", &old.revisions, &new.revisions)?;
        rows.diff(
            "taskDefinitions",
            &old.task_definitions,
            &new.task_definitions,
        )?;
        rows.diff("services", &old.services, &new.services)?;
        rows.diff("deployments", &old.deployments, &new.deployments)?;
        rows.diff("scheduledTasks", &old.scheduled_tasks, &new.scheduled_tasks)?;
        Ok(rows)
    }

    fn write(&self, tx: &redb::WriteTransaction) -> Result<(), redb::Error> {
        let mut t = tx.open_table(APPLIED)?;
        for (k, v) in &self.put {
            t.insert(k.as_str(), v.as_slice())?;
        }
        for k in &self.delete {
            t.remove(k.as_str())?;
        }
        Ok(())
    }
}

impl Db {
    /// Open (or create) `DIR/controller.redb`.
    pub fn open(dir: &Path) -> Result<Db, DbError> {
        let path = dir.join("controller.redb");
        let fail = |m: String| DbError {
            path: path.clone(),
            message: m,
        };
        // Private from the start: redb creates a missing file with the
        // umask's mode, so an empty 0600 file is made first (redb
        // initialises an empty file as a new database).
        crate::fsutil::private_dir(dir)
            .and_then(|()| crate::fsutil::open_private(&path, false))
            .map_err(|e| fail(e.to_string()))?;
        let db = Database::create(&path).map_err(|e| fail(e.to_string()))?;
        let d = Db {
            db,
            path,
            saved: std::sync::Mutex::new(Stored::default()),
        };
        // Create the tables, so that reads of a fresh store find them.
        d.write(|tx| {
            tx.open_table(STATE)?;
            tx.open_table(APPLIED)?;
            tx.open_table(NODES)?;
            tx.open_table(ASSIGNMENTS)?;
            tx.open_table(EVENTS)?;
            tx.open_table(TOKENS)?;
            tx.open_table(SCALING)?;
            tx.open_table(CREDENTIALS)?;
            tx.open_table(SECRETS)?;
            tx.open_table(RUNS)?;
            tx.open_table(SCHEDULES)?;
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
        // Stores written before the state was kept per row hold it whole.
        let mut whole = false;
        if let Some(v) = state.get("stored").map_err(|e| self.err(e))? {
            out.stored = typed(self, decode("state", v.value())?)?;
            whole = true;
        }
        let applied = tx.open_table(APPLIED).map_err(|e| self.err(e))?;
        for row in applied.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let (section, key) = k
                .value()
                .split_once('/')
                .map(|(s, k)| (s.to_string(), k.to_string()))
                .ok_or_else(|| self.err(format!("applied state row `{}`", k.value())))?;
            let v = decode(&section, v.value())?;
            let st = &mut out.stored;
            match section.as_str() {
                "clusters" => drop(st.clusters.insert(key, typed(self, v)?)),
                "capacityProviders" => drop(st.capacity_providers.insert(key, typed(self, v)?)),
                "revisions" => drop(st.revisions.insert(key, typed(self, v)?)),
                "taskDefinitions" => drop(st.task_definitions.insert(key, typed(self, v)?)),
                "services" => drop(st.services.insert(key, typed(self, v)?)),
                "deployments" => drop(st.deployments.insert(key, typed(self, v)?)),
                "scheduledTasks" => drop(st.scheduled_tasks.insert(key, typed(self, v)?)),
                other => return Err(self.err(format!("unknown applied state section `{other}`"))),
            }
        }
        if let Some(v) = state.get("commits").map_err(|e| self.err(e))? {
            out.commits = typed(self, decode("commits", v.value())?)?;
        }
        if let Some(v) = state.get("suspended").map_err(|e| self.err(e))? {
            out.suspended = typed(self, decode("suspended", v.value())?)?;
        }
        if let Some(v) = state.get("torn_down").map_err(|e| self.err(e))? {
            out.torn_down = typed(self, decode("torn_down", v.value())?)?;
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
        let tokens = tx.open_table(TOKENS).map_err(|e| self.err(e))?;
        for row in tokens.iter().map_err(|e| self.err(e))? {
            let (_, v) = row.map_err(|e| self.err(e))?;
            out.tokens.push(typed(self, decode("token", v.value())?)?);
        }
        let scaling = tx.open_table(SCALING).map_err(|e| self.err(e))?;
        for row in scaling.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            out.scaling.insert(
                k.value().to_string(),
                typed(self, decode("scaling", v.value())?)?,
            );
        }
        let credentials = tx.open_table(CREDENTIALS).map_err(|e| self.err(e))?;
        for row in credentials.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            out.credentials.insert(
                k.value().to_string(),
                typed(self, decode("credential", v.value())?)?,
            );
        }
        let runs = tx.open_table(RUNS).map_err(|e| self.err(e))?;
        for row in runs.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            out.runs.insert(
                k.value().to_string(),
                typed(self, decode("run", v.value())?)?,
            );
        }
        let schedules = tx.open_table(SCHEDULES).map_err(|e| self.err(e))?;
        for row in schedules.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            out.schedules.insert(
                k.value().to_string(),
                typed(self, decode("schedule", v.value())?)?,
            );
        }
        drop((state, applied, runs, schedules, tx));
        if whole {
            // Move it to rows in one transaction: the old row goes only
            // with the new ones in place.
            let rows = Rows::between(&Stored::default(), &out.stored).map_err(|e| self.err(e))?;
            self.write(|tx| {
                rows.write(tx)?;
                tx.open_table(STATE)?.remove("stored")?;
                Ok(())
            })?;
        }
        *self.saved.lock().unwrap_or_else(|p| p.into_inner()) = out.stored.clone();
        Ok(out)
    }

    /// Save the applied state: only the rows that changed since the last
    /// save, in one transaction.
    pub fn save_stored(&self, stored: &Stored) -> Result<(), DbError> {
        let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        let rows = Rows::between(&saved, stored).map_err(|e| self.err(e))?;
        if rows.put.is_empty() && rows.delete.is_empty() {
            return Ok(());
        }
        self.write(|tx| rows.write(tx))?;
        sync_map(&mut saved.clusters, &stored.clusters);
        sync_map(&mut saved.capacity_providers, &stored.capacity_providers);
        sync_map(&mut saved.revisions, &stored.revisions);
        sync_map(&mut saved.task_definitions, &stored.task_definitions);
        sync_map(&mut saved.services, &stored.services);
        sync_map(&mut saved.deployments, &stored.deployments);
        sync_map(&mut saved.scheduled_tasks, &stored.scheduled_tasks);
        Ok(())
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

    pub fn save_torn_down(&self, torn_down: bool) -> Result<(), DbError> {
        self.put_state("torn_down", &torn_down)
    }

    pub fn put_node(&self, node: &NodeRecord) -> Result<(), DbError> {
        self.put_row(NODES, &node.info.name, node)
    }

    /// Forget a node (retired, removed or long lost) and its credential.
    pub fn delete_node(&self, name: &str) -> Result<(), DbError> {
        self.write(|tx| {
            tx.open_table(NODES)?.remove(name)?;
            tx.open_table(CREDENTIALS)?.remove(name)?;
            Ok(())
        })
    }

    fn put_row<T: Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &T,
    ) -> Result<(), DbError> {
        let bytes = serde_json::to_vec(value).map_err(|e| self.err(e))?;
        self.write(|tx| {
            tx.open_table(table)?.insert(key, bytes.as_slice())?;
            Ok(())
        })
    }

    fn delete_row(&self, table: TableDefinition<&str, &[u8]>, key: &str) -> Result<(), DbError> {
        self.write(|tx| {
            tx.open_table(table)?.remove(key)?;
            Ok(())
        })
    }

    pub fn put_credential(&self, node: &str, c: &NodeCredential) -> Result<(), DbError> {
        self.put_row(CREDENTIALS, node, c)
    }

    pub fn put_scaled(&self, key: &str, s: &crate::autoscaling::Scaled) -> Result<(), DbError> {
        self.put_row(SCALING, key, s)
    }

    pub fn delete_scaled(&self, key: &str) -> Result<(), DbError> {
        self.delete_row(SCALING, key)
    }

    pub fn put_token(&self, t: &TokenRecord) -> Result<(), DbError> {
        self.put_row(TOKENS, &t.view.name, t)
    }

    pub fn delete_token(&self, name: &str) -> Result<(), DbError> {
        self.delete_row(TOKENS, name)
    }

    /// Write run records and forget others, in one transaction.
    pub fn put_runs(
        &self,
        put: &[&crate::runs::RunRecord],
        remove: &[&str],
    ) -> Result<(), DbError> {
        let mut rows = Vec::with_capacity(put.len());
        for r in put {
            rows.push((
                r.id.clone(),
                serde_json::to_vec(r).map_err(|e| self.err(e))?,
            ));
        }
        self.write(|tx| {
            let mut t = tx.open_table(RUNS)?;
            for (id, bytes) in &rows {
                t.insert(id.as_str(), bytes.as_slice())?;
            }
            for id in remove {
                t.remove(*id)?;
            }
            Ok(())
        })
    }

    pub fn put_schedule(
        &self,
        name: &str,
        s: &crate::runs::scheduled::ScheduleState,
    ) -> Result<(), DbError> {
        self.put_row(SCHEDULES, name, s)
    }

    pub fn delete_schedule(&self, name: &str) -> Result<(), DbError> {
        self.delete_row(SCHEDULES, name)
    }

    /// Record assignments and removals in one transaction.
    pub fn assign(&self, put: &[&AssignmentRecord], remove: &[&str]) -> Result<(), DbError> {
        let mut rows = Vec::with_capacity(put.len());
        for a in put {
            let mut stripped = (*a).clone();
            stripped.task.secrets.clear();
            rows.push((
                a.task.identity.id.clone(),
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

    /// A sealed secret's row.
    pub fn secret_row(&self, name: &str) -> Result<Option<Vec<u8>>, DbError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(SECRETS).map_err(|e| self.err(e))?;
        let row = t.get(name).map_err(|e| self.err(e))?;
        Ok(row.map(|v| v.value().to_vec()))
    }

    /// Every sealed secret's row, by name.
    pub fn secret_rows(&self) -> Result<Vec<(String, Vec<u8>)>, DbError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(SECRETS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    pub fn put_secret_row(&self, name: &str, row: &[u8]) -> Result<(), DbError> {
        self.write(|tx| {
            tx.open_table(SECRETS)?.insert(name, row)?;
            Ok(())
        })
    }

    /// Remove a secret's row; whether there was one.
    pub fn delete_secret_row(&self, name: &str) -> Result<bool, DbError> {
        let mut found = false;
        self.write(|tx| {
            found = tx.open_table(SECRETS)?.remove(name)?.is_some();
            Ok(())
        })?;
        Ok(found)
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
            let tx = db.db.begin_read().unwrap();
            let rows: Vec<String> = tx
                .open_table(APPLIED)
                .unwrap()
                .iter()
                .unwrap()
                .map(|r| r.unwrap().0.value().to_string())
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
            let tx = db.db.begin_read().unwrap();
            tx.open_table(APPLIED)
                .unwrap()
                .iter()
                .unwrap()
                .map(|r| r.unwrap().0.value().to_string())
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
            db.put_state("stored", &old).unwrap();
        }
        let db = Db::open(dir.path()).unwrap();
        assert_eq!(db.load().unwrap().stored, old);
        let tx = db.db.begin_read().unwrap();
        assert!(tx
            .open_table(STATE)
            .unwrap()
            .get("stored")
            .unwrap()
            .is_none());
        drop(tx);
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
