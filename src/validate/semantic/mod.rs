//! Cross-document and ECS rules that a JSON Schema cannot express:
//! references between kinds, uniqueness, and task and deployment rules.
//! Pure: works on typed manifests and returns findings addressed by entry
//! and JSON pointer; [`Finding::locate`] turns them into diagnostics.
//!
//! The rules live by kind: `references` (unique names, references between
//! documents), `annotations`, `placement` (strategies and constraints that
//! several kinds share), `task_definition`, `service`, `traffic` (a
//! service's listeners and DNS names, unique per cluster),
//! `capacity_provider` and `scheduled_task`. This file holds [`Finding`]
//! and [`check`], which runs them all (and the few Cluster rules, which use
//! the shared ones).

use std::collections::BTreeMap;

use super::{Diagnostic, Entry, Related, Severity, Validation};
use crate::manifest::{Kind, Manifest};

mod annotations;
mod auto_scaling;
mod capacity_provider;
mod placement;
mod references;
mod scheduled_task;
mod service;
mod task_definition;
mod traffic;

use annotations::annotations;
pub use annotations::SELF_HEAL;
use auto_scaling::auto_scaling;
use capacity_provider::capacity_provider;
use placement::strategy;
use references::{duplicate_names, missing_ref};
use scheduled_task::scheduled_task;
use service::service;
use task_definition::task_definition;
use traffic::traffic;

/// A semantic problem, addressed by entry and pointer.
#[derive(Debug, Clone)]
pub struct Finding {
    pub severity: Severity,
    pub code: &'static str,
    pub entry: usize,
    pub pointer: String,
    /// Point at the key of the entry rather than its value.
    pub at_key: bool,
    pub message: String,
    pub help: Option<String>,
    pub related: Vec<(usize, String, String)>,
    /// For a missing reference: the kind and name referred to.
    pub missing: Option<(&'static str, String)>,
}

impl Finding {
    fn error(
        code: &'static str,
        entry: usize,
        pointer: impl Into<String>,
        message: String,
    ) -> Self {
        Finding {
            severity: Severity::Error,
            code,
            entry,
            pointer: pointer.into(),
            at_key: false,
            message,
            help: None,
            related: Vec::new(),
            missing: None,
        }
    }

    fn warning(
        code: &'static str,
        entry: usize,
        pointer: impl Into<String>,
        message: String,
    ) -> Self {
        Finding {
            severity: Severity::Warning,
            ..Finding::error(code, entry, pointer, message)
        }
    }

    fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    fn at_key(mut self) -> Self {
        self.at_key = true;
        self
    }

    /// Resolve to a diagnostic with file, line and column.
    pub fn locate(&self, v: &Validation) -> Diagnostic {
        let e = &v.entries[self.entry];
        let span = if self.at_key {
            e.document.key_span_of(&self.pointer)
        } else {
            e.document.span_of(&self.pointer)
        };
        Diagnostic {
            severity: self.severity,
            code: self.code,
            file: v.files[e.file].name.clone(),
            span,
            pointer: self.pointer.clone(),
            kind: Some(e.manifest.kind()),
            name: Some(e.manifest.name().to_string()),
            message: self.message.clone(),
            help: self.help.clone(),
            related: self
                .related
                .iter()
                .map(|(entry, pointer, message)| {
                    let r = &v.entries[*entry];
                    Related {
                        message: message.clone(),
                        file: v.files[r.file].name.clone(),
                        span: r.document.span_of(pointer),
                    }
                })
                .collect(),
        }
    }
}

/// Run every rule over the manifests that passed the schema layer.
pub fn check(entries: &[Entry]) -> Vec<Finding> {
    let mut out = Vec::new();
    let index = Index::new(entries);
    duplicate_names(entries, &mut out);
    traffic(entries, &index, &mut out);
    for (i, e) in entries.iter().enumerate() {
        annotations(i, &e.manifest, &mut out);
        match &e.manifest {
            Manifest::TaskDefinition(td) => task_definition(i, &td.spec, &mut out),
            Manifest::Service(s) => {
                service(i, &s.spec, &index, entries, &mut out);
                auto_scaling(i, &s.spec, &mut out);
            }
            Manifest::Cluster(c) => {
                for (j, p) in c.spec.capacity_providers.iter().enumerate() {
                    if !index.providers.contains_key(p.as_str()) {
                        out.push(missing_ref(
                            "reference",
                            i,
                            format!("/spec/capacityProviders/{j}"),
                            "CapacityProvider",
                            p,
                            index.providers.keys().copied(),
                        ));
                    }
                }
                strategy(
                    i,
                    "/spec/defaultCapacityProviderStrategy",
                    &c.spec.default_capacity_provider_strategy,
                    &c.spec.capacity_providers,
                    &c.metadata.name,
                    &mut out,
                );
            }
            Manifest::CapacityProvider(cp) => capacity_provider(i, &cp.spec, &mut out),
            Manifest::ScheduledTask(st) => scheduled_task(i, &st.spec, &index, entries, &mut out),
        }
    }
    out
}

struct Index<'a> {
    clusters: BTreeMap<&'a str, usize>,
    families: BTreeMap<&'a str, usize>,
    providers: BTreeMap<&'a str, usize>,
}

impl<'a> Index<'a> {
    fn new(entries: &'a [Entry]) -> Self {
        let mut ix = Index {
            clusters: BTreeMap::new(),
            families: BTreeMap::new(),
            providers: BTreeMap::new(),
        };
        for (i, e) in entries.iter().enumerate() {
            let map = match e.manifest.kind() {
                Kind::Cluster => &mut ix.clusters,
                Kind::TaskDefinition => &mut ix.families,
                Kind::CapacityProvider => &mut ix.providers,
                Kind::Service | Kind::ScheduledTask => continue,
            };
            map.entry(e.manifest.name()).or_insert(i);
        }
        ix
    }
}
