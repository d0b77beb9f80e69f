//! Rules across documents: names unique per kind, and references to
//! other manifests that must exist in the source. Separate because they
//! read the whole source, not one manifest.

use std::collections::HashMap;

use super::{Finding, Index};
use crate::manifest::{Kind, Manifest, TaskDefinitionSpec};
use crate::suggest;
use crate::validate::{Entry, Severity};

pub(super) fn missing_ref<'a>(
    code: &'static str,
    entry: usize,
    pointer: String,
    kind: &'static str,
    name: &str,
    known: impl Iterator<Item = &'a str> + Clone,
) -> Finding {
    let mut f = Finding::error(
        code,
        entry,
        pointer,
        format!("no {kind} named `{name}` in the source"),
    );
    f.missing = Some((kind, name.to_string()));
    match suggest::closest(name, known.clone()) {
        Some(s) => f.help(format!("did you mean `{s}`?")),
        None => {
            let all: Vec<&str> = known.collect();
            if all.is_empty() {
                f.help(format!("add a {kind} manifest named `{name}`"))
            } else {
                f.help(format!("defined {kind}s: {}", all.join(", ")))
            }
        }
    }
}

/// A `taskDefinition` reference (of a Service or a ScheduledTask) at
/// `pointer`: its family must be in the source, unless a revision is
/// pinned, which may have been registered from an earlier source.
/// `/spec/cluster` of a resource that runs in a cluster: one the source
/// declares.
pub(super) fn cluster_ref(i: usize, cluster: &str, index: &Index, out: &mut Vec<Finding>) {
    if !index.clusters.contains_key(cluster) {
        out.push(missing_ref(
            "reference",
            i,
            "/spec/cluster".into(),
            "Cluster",
            cluster,
            index.clusters.keys().copied(),
        ));
    }
}

pub(super) fn task_definition_ref(
    entry: usize,
    pointer: &str,
    reference: &str,
    index: &Index,
    out: &mut Vec<Finding>,
) {
    let crate::model::TaskDefRef { family, revision } = crate::model::TaskDefRef::parse(reference);
    if index.families.contains_key(family) {
        return;
    }
    let f = missing_ref(
        "reference",
        entry,
        pointer.into(),
        "TaskDefinition",
        family,
        index.families.keys().copied(),
    );
    if revision.is_some() {
        // Only the store can tell at plan time.
        out.push(Finding {
            severity: Severity::Warning,
            message: format!(
                "no TaskDefinition family `{family}` in the source; revision {reference} must already be registered"
            ),
            ..f
        });
    } else {
        out.push(f);
    }
}

/// The task definition a `taskDefinition` reference runs, when the source
/// defines it: only an unpinned reference names the source's revision (a
/// pinned `family:N` may be another one, registered earlier).
pub(super) fn source_task_definition<'a>(
    reference: &str,
    index: &Index,
    entries: &'a [Entry],
) -> Option<(usize, &'a TaskDefinitionSpec)> {
    let r = crate::model::TaskDefRef::parse(reference);
    if r.revision.is_some() {
        return None;
    }
    let &e = index.families.get(r.family)?;
    match &entries[e].manifest {
        Manifest::TaskDefinition(td) => Some((e, &td.spec)),
        _ => None,
    }
}

pub(super) fn duplicate_names(entries: &[Entry], out: &mut Vec<Finding>) {
    let mut seen: HashMap<(Kind, Option<&str>, &str), usize> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        let scope = match &e.manifest {
            Manifest::Service(s) => Some(s.spec.cluster.as_str()),
            _ => None,
        };
        let key = (e.manifest.kind(), scope, e.manifest.name());
        if let Some(&first) = seen.get(&key) {
            let what = match scope {
                Some(c) => format!("Service `{}` is defined twice in cluster `{c}`", key.2),
                None => format!("{} `{}` is defined twice", key.0, key.2),
            };
            let mut f = Finding::error("duplicate-name", i, "/metadata/name", what)
                .help("names are unique per kind (services per cluster): rename or remove one");
            f.related
                .push((first, "/metadata/name".into(), "first defined here".into()));
            out.push(f);
        } else {
            seen.insert(key, i);
        }
    }
}
