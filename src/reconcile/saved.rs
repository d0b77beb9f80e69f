//! Plans saved by `reconcile plan --out FILE` and applied later by
//! `reconcile apply FILE`: exactly that plan, or nothing if what runs has
//! moved since it was made.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::DesiredState;
use crate::plan::{self, Plan};

/// The `kind` of a saved plan file.
pub const KIND: &str = "reconcile-saved-plan";

/// A plan saved to a file: the plan, the desired state it was made from,
/// and the source it belongs to. Holds secret fingerprints, never values.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedPlan {
    pub format_version: String,
    pub kind: String,
    pub source: String,
    pub source_id: String,
    pub seed: u64,
    pub plan: Plan,
    pub desired: DesiredState,
}

impl SavedPlan {
    pub fn new(
        source: String,
        source_id: String,
        seed: u64,
        plan: Plan,
        desired: DesiredState,
    ) -> SavedPlan {
        SavedPlan {
            format_version: plan::FORMAT_VERSION.into(),
            kind: KIND.into(),
            source,
            source_id,
            seed,
            plan,
            desired,
        }
    }

    /// Read a saved plan; says why a file is not one.
    pub fn parse(bytes: &[u8]) -> Result<SavedPlan, String> {
        let s: SavedPlan = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if s.kind != KIND {
            return Err(format!("its kind is `{}`, not `{KIND}`", s.kind));
        }
        Ok(s)
    }
}

/// How the saved plan's view of each resource differs from a fresh plan's
/// (both made with `record_observed`): one line per resource that moved.
pub fn moved(saved: &Plan, fresh: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<&String> =
        saved.observed.keys().chain(fresh.observed.keys()).collect();
    for k in keys {
        let before = saved.observed.get(k).cloned().unwrap_or(Value::Null);
        let after = fresh.observed.get(k).cloned().unwrap_or(Value::Null);
        if before != after {
            let changes: Vec<String> = plan::diff::diff(&before, &after)
                .into_iter()
                .take(6)
                .map(|f| {
                    let show = |v: &Option<Value>| {
                        v.as_ref().map_or("(none)".to_string(), |v| v.to_string())
                    };
                    format!(
                        "{}: {} -> {}",
                        if f.path.is_empty() { "state" } else { &f.path },
                        show(&f.before),
                        show(&f.after)
                    )
                })
                .collect();
            out.push(format!("{k}: {}", changes.join("; ")));
        }
    }
    out
}
