//! The default backend: one redb file under `--data-dir` (the directory
//! 0700, the file 0600), one redb table per [`Table`]. Every commit is one
//! redb transaction, so a controller killed at any moment restarts from a
//! consistent state.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::backend::{Backend, BackendError, Op, Row, Table};

/// Events are keyed by their sequence number.
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

fn table(t: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(t.name())
}

pub struct RedbBackend {
    db: Database,
    path: PathBuf,
}

fn failed(e: impl std::fmt::Display) -> BackendError {
    BackendError::Failed(e.to_string())
}

fn seq(key: &str) -> Result<u64, BackendError> {
    key.parse()
        .map_err(|_| failed(format!("event key `{key}` is not a number")))
}

impl RedbBackend {
    /// The file of the store in `dir`.
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("controller.redb")
    }

    /// Open (or create) `DIR/controller.redb`.
    pub fn open(dir: &Path) -> Result<RedbBackend, String> {
        let path = RedbBackend::file(dir);
        // Private from the start: redb creates a missing file with the
        // umask's mode, so an empty 0600 file is made first (redb
        // initialises an empty file as a new database).
        crate::fsutil::private_dir(dir)
            .and_then(|()| crate::fsutil::open_private(&path, false))
            .map_err(|e| e.to_string())?;
        let db = Database::create(&path).map_err(|e| e.to_string())?;
        let b = RedbBackend { db, path };
        // Create the tables, so that reads of a fresh store find them.
        b.write(|tx| {
            for t in Table::ALL {
                if t == Table::Events {
                    tx.open_table(EVENTS)?;
                } else {
                    tx.open_table(table(t))?;
                }
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        Ok(b)
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), BackendError> {
        let tx = self.db.begin_write().map_err(failed)?;
        f(&tx).map_err(failed)?;
        tx.commit().map_err(failed)
    }

    fn rows(tx: &redb::ReadTransaction, t: Table) -> Result<Vec<(String, Vec<u8>)>, BackendError> {
        let mut out = Vec::new();
        if t == Table::Events {
            let events = tx.open_table(EVENTS).map_err(failed)?;
            for row in events.iter().map_err(failed)? {
                let (k, v) = row.map_err(failed)?;
                out.push((super::backend::event_key(k.value()), v.value().to_vec()));
            }
        } else {
            let rows = tx.open_table(table(t)).map_err(failed)?;
            for row in rows.iter().map_err(failed)? {
                let (k, v) = row.map_err(failed)?;
                out.push((k.value().to_string(), v.value().to_vec()));
            }
        }
        Ok(out)
    }
}

impl Backend for RedbBackend {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn read_all(&self) -> Result<Vec<Row>, BackendError> {
        let tx = self.db.begin_read().map_err(failed)?;
        let mut out = Vec::new();
        for t in Table::ALL {
            for (k, v) in RedbBackend::rows(&tx, t)? {
                out.push((t, k, v));
            }
        }
        Ok(out)
    }

    fn read_table(&self, t: Table) -> Result<Vec<(String, Vec<u8>)>, BackendError> {
        let tx = self.db.begin_read().map_err(failed)?;
        RedbBackend::rows(&tx, t)
    }

    fn read(&self, t: Table, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let tx = self.db.begin_read().map_err(failed)?;
        if t == Table::Events {
            let events = tx.open_table(EVENTS).map_err(failed)?;
            let row = events.get(seq(key)?).map_err(failed)?;
            return Ok(row.map(|v| v.value().to_vec()));
        }
        let rows = tx.open_table(table(t)).map_err(failed)?;
        let row = rows.get(key).map_err(failed)?;
        Ok(row.map(|v| v.value().to_vec()))
    }

    fn commit(&self, ops: Vec<Op>) -> Result<(), BackendError> {
        // Event keys are checked before the transaction starts.
        let mut seqs = Vec::new();
        for op in &ops {
            match op {
                Op::Put(Table::Events, k, _)
                | Op::Delete(Table::Events, k)
                | Op::DeleteBelow(Table::Events, k) => seqs.push(seq(k)?),
                _ => {}
            }
        }
        let mut seqs = seqs.into_iter();
        self.write(|tx| {
            for op in &ops {
                match op {
                    Op::Put(Table::Events, _, v) => {
                        let s = seqs.next().unwrap_or_default();
                        tx.open_table(EVENTS)?.insert(s, v.as_slice())?;
                    }
                    Op::Delete(Table::Events, _) => {
                        let s = seqs.next().unwrap_or_default();
                        tx.open_table(EVENTS)?.remove(s)?;
                    }
                    Op::DeleteBelow(Table::Events, _) => {
                        let s = seqs.next().unwrap_or_default();
                        tx.open_table(EVENTS)?.retain_in(..s, |_, _| false)?;
                    }
                    Op::Put(t, k, v) => {
                        tx.open_table(table(*t))?.insert(k.as_str(), v.as_slice())?;
                    }
                    Op::Delete(t, k) => {
                        tx.open_table(table(*t))?.remove(k.as_str())?;
                    }
                    Op::DeleteBelow(t, k) => {
                        tx.open_table(table(*t))?
                            .retain_in::<&str, _>(..k.as_str(), |_, _| false)?;
                    }
                }
            }
            Ok(())
        })
    }
}
