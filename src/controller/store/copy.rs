//! `reconcile store copy`: every row of one controller store into another
//! (a redb data directory into etcd, so an installation can grow to
//! several controllers, or back).

use super::backend::{Backend, Op};

/// Rows written per transaction.
const BATCH: usize = 100;

/// Copy every row of `from` into `to`, which must hold none: a copy never
/// merges two installations. Returns the rows copied.
pub fn copy(from: &dyn Backend, to: &dyn Backend) -> Result<usize, String> {
    let existing = to
        .read_all()
        .map_err(|e| format!("{}: {e}", to.describe()))?;
    if !existing.is_empty() {
        return Err(format!(
            "{} already holds {} rows: copy into an empty store (another prefix, or a new data directory)",
            to.describe(),
            existing.len()
        ));
    }
    let rows = from
        .read_all()
        .map_err(|e| format!("{}: {e}", from.describe()))?;
    let n = rows.len();
    let mut ops = rows
        .into_iter()
        .map(|(t, k, v)| Op::Put(t, k, v))
        .peekable();
    while ops.peek().is_some() {
        let batch: Vec<Op> = ops.by_ref().take(BATCH).collect();
        to.commit(batch)
            .map_err(|e| format!("{}: {e}", to.describe()))?;
    }
    Ok(n)
}
