//! Rules across documents: names unique per kind, and references to
//! other manifests that must exist in the source. Separate because they
//! read the whole source, not one manifest.

use std::collections::HashMap;

use super::Finding;
use crate::manifest::{Kind, Manifest};
use crate::suggest;
use crate::validate::Entry;

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
