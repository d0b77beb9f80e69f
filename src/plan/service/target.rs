//! Phases 1 and 2: the revision and configuration the service's tasks
//! should run (holds included) and how the service's spec changed.

use std::cell::OnceCell;

use serde_json::Value;

use super::{ServiceCtx, Target};
use crate::model::{self, TaskDefRef};
use crate::plan::{diff, to_value, FieldChange};

impl<'a> ServiceCtx<'a> {
    /// Phase 1: the revision and configuration the tasks should run: the
    /// one the source names, unless a hold keeps or restores another.
    pub(super) fn target(&self) -> Result<Target<'a>, String> {
        let TaskDefRef {
            family,
            revision: pinned,
        } = TaskDefRef::parse(&self.spec.task_definition);
        let revision = pinned
            .or_else(|| self.inputs.desired_revisions.get(family).copied())
            .ok_or_else(|| format!("task definition family `{family}` is not defined"))?;
        let td = self
            .revision_spec(family, revision)
            .ok_or_else(|| format!("revision {family}:{revision} is not registered"))?;
        let secrets = &self.inputs.desired.secret_fingerprints;
        let fingerprints = model::secret_fingerprints_of(td, secrets);
        let config_hash = match self.inputs.spec_digests.get(&(family, revision)) {
            Some(d) => model::config_hash_of(family, d, &fingerprints),
            None => model::task_config_hash(family, td, secrets),
        };
        let mut target = Target {
            family,
            revision,
            td,
            fingerprints,
            config_hash,
            held: None,
            placement: OnceCell::new(),
        };
        self.hold(&mut target);
        Ok(target)
    }

    /// A configuration that was rolled back is not deployed again until the
    /// desired state changes: what runs is kept, and the plan says why.
    /// A rollback (`reconcile rollback`) holds the desired configuration the
    /// same way and names the revision to run instead: that is deployed.
    pub(super) fn hold(&self, t: &mut Target<'a>) {
        let held = self
            .inputs
            .observed
            .deployments
            .get(self.key)
            .and_then(|h| h.held.as_ref());
        let (Some(h), Some(o)) = (held, self.observed) else {
            return;
        };
        let to = if h.to > 0 { h.to } else { o.revision };
        let kept = self.revision_spec(t.family, to);
        let (true, Some(kept)) = (h.config_hash == t.config_hash, kept) else {
            return;
        };
        t.held = Some(if o.revision == to {
            format!(
                "revision {} is not deployed again ({}); revision {to} keeps running. Change the service or its task definition to deploy again",
                h.revision, h.reason
            )
        } else {
            format!("rollback to revision {to} ({})", h.reason)
        });
        let secrets = &self.inputs.desired.secret_fingerprints;
        t.revision = to;
        t.td = kept;
        t.fingerprints = model::secret_fingerprints_of(kept, secrets);
        t.config_hash = if o.revision == to {
            o.config_hash.clone()
        } else {
            model::task_config_hash(t.family, kept, secrets)
        };
    }

    /// Phase 2: field changes of the service spec itself, with the revision
    /// its tasks run and the secrets they read.
    pub(super) fn field_changes(&self, t: &Target) -> Vec<FieldChange> {
        let spec = self.spec;
        // Specs are normalised, so equal specs need no field-level diff.
        let mut fields = match self.observed {
            Some(o) if o.spec == *spec => Vec::new(),
            Some(o) => diff::diff(&to_value(&o.spec), &to_value(spec)),
            None => diff::diff(&serde_json::json!({}), &to_value(spec)),
        };
        let Some(o) = self.observed else {
            return fields;
        };
        let family = t.family;
        if o.revision != t.revision {
            fields.retain(|f| f.path != "taskDefinition");
            fields.insert(
                0,
                FieldChange {
                    path: "taskDefinition".into(),
                    before: Some(Value::String(format!("{family}:{}", o.revision))),
                    after: Some(Value::String(format!("{family}:{}", t.revision))),
                },
            );
        } else if o.spec.task_definition != spec.task_definition {
            // `web` -> `web:3` naming the same revision changes nothing.
            fields.retain(|f| f.path != "taskDefinition");
        }
        for (secret, fp) in &t.fingerprints {
            let old = o.secret_fingerprints.get(secret);
            if old != Some(fp) && old.is_some() {
                fields.push(FieldChange {
                    path: format!("secrets[{secret}]"),
                    before: old.map(|v| Value::String(v.clone())),
                    after: Some(Value::String(fp.clone())),
                });
            }
        }
        fields
    }
}
