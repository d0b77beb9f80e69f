//! `reconcile import ecs`: Amazon ECS JSON in, manifests and warnings out.
//!
//! Accepted inputs, told apart by their shape:
//! - RegisterTaskDefinition input (`family`, `containerDefinitions`, ...),
//!   as kept in repositories and CI pipelines;
//! - `aws ecs describe-task-definition` output (`{"taskDefinition": {...},
//!   "tags": [...]}`), with its read-only fields (revision, status, ARNs);
//! - `aws ecs describe-services` output (`{"services": [...]}`), a single
//!   service (`{"service": {...}}`, as create-service prints it) or a bare
//!   service object.
//!
//! The output is what a user would have written by hand: one TaskDefinition
//! per family, one Service per service, and a Cluster for every cluster a
//! service runs in that is not already there. It is validated with the real
//! validator, together with the manifests already in the output directory,
//! before anything is returned: an import either yields a source that
//! passes `reconcile validate`, or errors and nothing to write.
//!
//! Every input field ends up in a manifest field or in a [`Warning`] naming
//! it: mapping code consumes fields one by one and whatever is left is
//! reported (see `fields.rs`).
//!
//! This module does no I/O: the CLI reads the files and writes the result.

pub mod compose;
mod container;
mod fields;
mod fixes;
mod render;
mod report;
mod secrets;
mod service;
mod task_definition;
mod units;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::Value;

use crate::manifest::task_definition::{NetworkMode, Protocol};
use crate::manifest::{ApiVersion, Envelope, Kind, Manifest, Metadata};
use crate::source::{Content, RawFile};
use crate::validate::{self, Severity};

pub use report::{ImportError, Level, Warning};
pub use task_definition::DEFAULT_MEMORY_RESERVATION;

use fields::Fields;
use render::Defaults;
use report::{index, Ctx, Report};
use service::{Catalog, Family, ServiceImport};
use task_definition::{ImageOverrides, Shared, TaskImport};

/// Default of `--schema-base`: where the modeline of every written file
/// looks for the JSON Schemas, relative to that file. It fits the layout
/// `reconcile schema --out schemas` produces next to a manifests directory.
pub const DEFAULT_SCHEMA_BASE: &str = "../schemas";

/// One input file.
#[derive(Debug, Clone)]
pub struct Input {
    /// How the file is named in messages (as the user gave it).
    pub name: String,
    pub bytes: Vec<u8>,
}

/// How to import.
#[derive(Debug, Clone)]
pub struct Options {
    /// URL or path prefix of the schemas in each file's modeline
    /// (`# yaml-language-server: $schema=<base>/task-definition.json`).
    pub schema_base: String,
    /// `(container name, image)`: sets the image of every imported
    /// container of that name (for inputs whose image is filled in by CI).
    pub images: Vec<(String, String)>,
    /// Manifests already in the output directory. Clusters and task
    /// definitions found there are not created again, and the result is
    /// validated together with them (files an output would replace left
    /// out), so that the directory validates as a whole after writing.
    pub existing: Vec<RawFile>,
    /// The command named in each written file's provenance comment.
    pub command: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            schema_base: DEFAULT_SCHEMA_BASE.to_string(),
            images: Vec::new(),
            existing: Vec::new(),
            command: "reconcile import ecs",
        }
    }
}

/// A manifest file to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    /// File name: `<family>.yaml`, `<service>.service.yaml` or
    /// `<cluster>.cluster.yaml`.
    pub name: String,
    pub kind: Kind,
    /// Name of the resource it defines.
    pub resource: String,
    /// The YAML, modeline first.
    pub text: String,
}

/// The result of an import.
#[derive(Debug, Clone)]
pub struct Import {
    /// Clusters first, then task definitions, then services (the order
    /// resources are created in), each in input order.
    pub files: Vec<OutputFile>,
    pub warnings: Vec<Warning>,
    /// Existing files (from [`Options::existing`]) that outputs replace.
    pub replaces: Vec<String>,
}

impl Import {
    /// All files as one multi-document YAML stream.
    pub fn stream(&self) -> String {
        let docs: Vec<&str> = self.files.iter().map(|f| f.text.as_str()).collect();
        docs.join("---\n")
    }
}

/// Import ECS JSON. All or nothing: on any error, every error found (in
/// every input) is returned and no manifests.
pub fn ecs(inputs: &[Input], options: &Options) -> Result<Import, Vec<ImportError>> {
    let mut report = Report::default();
    let mut secrets = secrets::SecretNames::default();
    let mut images = ImageOverrides {
        items: options
            .images
            .iter()
            .map(|(c, i)| (c.clone(), i.clone(), false))
            .collect(),
    };
    let mut tasks: Vec<TaskImport> = Vec::new();
    let mut raw_services: Vec<(String, Fields)> = Vec::new();

    for input in inputs {
        let Some(value) = parse(input, &mut report) else {
            continue;
        };
        let mut ctx = Ctx::new(&input.name, &mut report);
        match classify(value, &mut ctx) {
            Shape::Task(f, labels) => {
                let mut shared = Shared {
                    secrets: &mut secrets,
                    images: &mut images,
                };
                if let Some(t) =
                    task_definition::map(f, &mut ctx, &mut shared, &stem(&input.name), labels)
                {
                    tasks.push(t);
                }
            }
            Shape::Services(list) => {
                raw_services.extend(list.into_iter().map(|f| (input.name.clone(), f)));
            }
            Shape::Unknown => {}
        }
    }
    for (container, image, used) in &images.items {
        if !used {
            report.errors.push(ImportError {
                file: "--image".into(),
                line: None,
                column: None,
                path: None,
                message: format!(
                    "`{container}={image}`: no imported container is named `{container}`"
                ),
                help: Some("check the container name (containerDefinitions[].name)".into()),
            });
        }
    }
    let mut families: BTreeMap<String, &TaskImport> = BTreeMap::new();
    for t in &tasks {
        if let Some(first) = families.get(&t.family) {
            report.errors.push(ImportError {
                file: t.file.clone(),
                line: None,
                column: None,
                path: Some(report::key(&t.path, "family")),
                message: format!("family `{}` is also imported from {}", t.family, first.file),
                help: Some(
                    "a source holds one definition per family: import one revision of it".into(),
                ),
            });
        } else {
            families.insert(t.family.clone(), t);
        }
    }

    // What is already in the output directory, without the files the
    // task definitions would replace.
    let task_files: BTreeSet<String> = tasks.iter().map(|t| format!("{}.yaml", t.family)).collect();
    let known = existing_catalog(&options.existing, &task_files, &mut report);
    let mut catalog = Catalog {
        families: known.families,
        clusters: known.clusters,
    };
    for t in &tasks {
        catalog.families.insert(
            t.family.clone(),
            Family {
                file: Some(t.file.clone()),
                revision: t.revision,
            },
        );
    }

    let mut services: Vec<ServiceImport> = Vec::new();
    for (file, f) in raw_services {
        let mut ctx = Ctx::new(&file, &mut report);
        if let Some(s) = service::map(f, &mut ctx, &catalog) {
            services.push(s);
        }
    }
    let mut seen: HashMap<(&str, &str), &ServiceImport> = HashMap::new();
    for s in &services {
        if let Some(first) = seen.insert((&s.name, &s.spec.cluster), s) {
            report.errors.push(ImportError {
                file: s.file.clone(),
                line: None,
                column: None,
                path: Some(report::key(&s.path, "serviceName")),
                message: format!(
                    "service `{}` of cluster `{}` is also imported from {} ({})",
                    s.name, s.spec.cluster, first.file, first.path
                ),
                help: Some("a service name is unique in its cluster: import it once".into()),
            });
        }
    }
    if !report.errors.is_empty() {
        return Err(report.errors);
    }
    // TCP host ports a family's tasks always bind, which no listener of
    // their cluster may take.
    let fixed = |reference: &str| -> Vec<u16> {
        let family = reference.split(':').next().unwrap_or(reference);
        let Some(t) = tasks.iter().find(|t| t.family == family) else {
            return Vec::new();
        };
        let host = t.spec.network_mode == NetworkMode::Host;
        t.spec
            .container_definitions
            .iter()
            .flat_map(|c| &c.port_mappings)
            .filter(|p| p.protocol == Protocol::Tcp)
            .filter_map(|p| {
                if host {
                    Some(p.container_port)
                } else {
                    p.host_port.filter(|h| *h > 0)
                }
            })
            .collect()
    };
    service::settle_listener_ports(&mut services, fixed, &mut report);

    let files = render_all(
        &tasks,
        &services,
        &catalog,
        &options.schema_base,
        options.command,
    );
    let outputs: BTreeSet<&str> = files.iter().map(|f| f.name.as_str()).collect();
    let context: Vec<RawFile> = options
        .existing
        .iter()
        .filter(|f| !outputs.contains(f.name.as_str()))
        .cloned()
        .collect();
    let replaces: Vec<String> = options
        .existing
        .iter()
        .filter(|f| outputs.contains(f.name.as_str()))
        .map(|f| f.name.clone())
        .collect();
    check(&files, context, &mut report);
    if !report.errors.is_empty() {
        return Err(report.errors);
    }
    Ok(Import {
        files,
        warnings: report.warnings,
        replaces,
    })
}

fn parse(input: &Input, report: &mut Report) -> Option<Value> {
    let bytes = input
        .bytes
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(&input.bytes);
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            let text = e.to_string();
            let message = text
                .rsplit_once(" at line ")
                .map_or(text.as_str(), |(m, _)| m)
                .to_string();
            let (line, column) = if e.line() > 0 {
                (Some(e.line()), Some(e.column().max(1)))
            } else {
                (None, None)
            };
            report.errors.push(ImportError {
                file: input.name.clone(),
                line,
                column,
                path: None,
                message: format!("invalid JSON: {message}"),
                help: Some("the input must be ECS JSON, e.g. the output of `aws ecs describe-task-definition`".into()),
            });
            None
        }
    }
}

/// What an input holds.
enum Shape {
    /// A task definition object and labels from describe output's `tags`.
    Task(Fields, BTreeMap<String, String>),
    Services(Vec<Fields>),
    /// Not importable; the error is reported.
    Unknown,
}

fn classify(value: Value, ctx: &mut Ctx) -> Shape {
    let Value::Object(mut map) = value else {
        ctx.error(
            "",
            format!(
                "expected a JSON object, found {}",
                fields::type_name(&value)
            ),
            Some("give one task definition or one describe-services output per file".into()),
        );
        return Shape::Unknown;
    };
    if map.get("taskDefinition").is_some_and(Value::is_object) && !map.contains_key("serviceName") {
        let Some(Value::Object(td)) = map.shift_remove("taskDefinition") else {
            return Shape::Unknown;
        };
        let mut wrapper = Fields::new(map, String::new());
        let labels = match wrapper.take("tags") {
            Some(v) => task_definition::tags(ctx, "tags", v),
            None => BTreeMap::new(),
        };
        wrapper.finish(ctx, "describe-task-definition output");
        return Shape::Task(Fields::new(td, "taskDefinition".into()), labels);
    }
    if map.contains_key("containerDefinitions") || map.contains_key("family") {
        return Shape::Task(Fields::new(map, String::new()), BTreeMap::new());
    }
    if map.contains_key("services") {
        let mut wrapper = Fields::new(map, String::new());
        let mut out = Vec::new();
        if let Some(v) = wrapper.take("services") {
            if let Some(items) = fields::array(ctx, "services", v) {
                for (i, item) in items.into_iter().enumerate() {
                    if let Some(f) = Fields::of(ctx, index("services", i), item) {
                        out.push(f);
                    }
                }
            }
        }
        if let Some(Value::Array(failures)) = wrapper.take("failures") {
            for (i, f) in failures.iter().enumerate() {
                ctx.warn(
                    &index("failures", i),
                    format!(
                        "ECS could not describe {} ({})",
                        f.get("arn").map(fields::show).unwrap_or_default(),
                        f.get("reason").map(fields::show).unwrap_or_default()
                    ),
                    "describe the service again if it should be imported",
                );
            }
        }
        wrapper.finish(ctx, "describe-services output");
        return Shape::Services(out);
    }
    if map.get("service").is_some_and(Value::is_object) {
        let Some(Value::Object(s)) = map.shift_remove("service") else {
            return Shape::Unknown;
        };
        Fields::new(map, String::new()).finish(ctx, "a service wrapper");
        return Shape::Services(vec![Fields::new(s, "service".into())]);
    }
    if map.contains_key("serviceName") {
        return Shape::Services(vec![Fields::new(map, String::new())]);
    }
    ctx.error(
        "",
        "not an ECS task definition or service: found none of `containerDefinitions`, `taskDefinition` or `services`",
        Some("give RegisterTaskDefinition input, or the output of `aws ecs describe-task-definition` or `aws ecs describe-services`".into()),
    );
    Shape::Unknown
}

/// File name without directories and extension, for naming a task
/// definition that has no family.
fn stem(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    base.rsplit_once('.').map_or(base, |(s, _)| s).to_string()
}

/// Families and clusters defined by the manifests already in the output
/// directory (those not about to be replaced).
fn existing_catalog(
    existing: &[RawFile],
    replaced: &BTreeSet<String>,
    report: &mut Report,
) -> Catalog {
    let mut catalog = Catalog::default();
    if existing.is_empty() {
        return catalog;
    }
    let files: Vec<RawFile> = existing
        .iter()
        .filter(|f| !replaced.contains(&f.name))
        .cloned()
        .collect();
    let v = validate::validate(files);
    if !v.is_valid() {
        let first = v.diagnostics.iter().find(|d| d.severity == Severity::Error);
        report.errors.push(ImportError {
            file: first.map(|d| d.file.clone()).unwrap_or_default(),
            line: first.map(|d| d.span.line),
            column: first.map(|d| d.span.column),
            path: None,
            message: format!(
                "the manifests already in the output directory do not validate ({} error{}); the first: {}",
                v.errors(),
                if v.errors() == 1 { "" } else { "s" },
                first.map(|d| d.message.as_str()).unwrap_or_default()
            ),
            help: Some("run `reconcile validate` on the directory and fix it first, or import into another directory".into()),
        });
        return catalog;
    }
    for e in &v.entries {
        match &e.manifest {
            Manifest::Cluster(c) => {
                catalog
                    .clusters
                    .insert(c.metadata.name.clone(), c.spec.capacity_providers.clone());
            }
            Manifest::TaskDefinition(t) => {
                catalog.families.insert(
                    t.metadata.name.clone(),
                    Family {
                        file: None,
                        revision: None,
                    },
                );
            }
            _ => {}
        }
    }
    catalog
}

fn render_all(
    tasks: &[TaskImport],
    services: &[ServiceImport],
    catalog: &Catalog,
    base: &str,
    command: &str,
) -> Vec<OutputFile> {
    let mut files = Vec::new();
    // Clusters the services run in that are not there yet, in order of
    // first use.
    let mut clusters: Vec<(&str, Vec<&str>)> = Vec::new();
    for s in services {
        let c = s.spec.cluster.as_str();
        if catalog.clusters.contains_key(c) {
            continue;
        }
        match clusters.iter_mut().find(|(n, _)| *n == c) {
            Some((_, users)) => {
                if !users.contains(&s.file.as_str()) {
                    users.push(&s.file)
                }
            }
            None => clusters.push((c, vec![&s.file])),
        }
    }
    for (name, users) in clusters {
        let sources: Vec<String> = users.iter().map(|u| base_name(u)).collect();
        files.push(OutputFile {
            name: format!("{name}.cluster.yaml"),
            kind: Kind::Cluster,
            resource: name.to_string(),
            text: document(
                Kind::Cluster,
                name,
                BTreeMap::new(),
                &crate::manifest::ClusterSpec::default(),
                &Defaults::default(),
                &format!(
                    "Created by `{command}` for the services of {}; nodes join the cluster by this name.",
                    sources.join(", ")
                ),
                base,
            ),
        });
    }
    for t in tasks {
        files.push(OutputFile {
            name: format!("{}.yaml", t.family),
            kind: Kind::TaskDefinition,
            resource: t.family.clone(),
            text: document(
                Kind::TaskDefinition,
                &t.family,
                t.labels.clone(),
                &t.spec,
                &t.defaults,
                &format!("Imported from {} by `{command}`.", base_name(&t.file)),
                base,
            ),
        });
    }
    let mut clusters_of: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for s in services {
        clusters_of
            .entry(&s.name)
            .or_default()
            .insert(&s.spec.cluster);
    }
    for s in services {
        let name = if clusters_of[s.name.as_str()].len() > 1 {
            format!("{}.{}.service.yaml", s.name, s.spec.cluster)
        } else {
            format!("{}.service.yaml", s.name)
        };
        files.push(OutputFile {
            name,
            kind: Kind::Service,
            resource: s.name.clone(),
            text: document(
                Kind::Service,
                &s.name,
                s.labels.clone(),
                &s.spec,
                &s.defaults,
                &format!("Imported from {} by `{command}`.", base_name(&s.file)),
                base,
            ),
        });
    }
    files
}

fn base_name(name: &str) -> String {
    name.rsplit(['/', '\\']).next().unwrap_or(name).to_string()
}

/// The modeline's schema reference for `kind`.
pub fn schema_ref(base: &str, kind: Kind) -> String {
    let base = base.trim_end_matches('/');
    if base.is_empty() {
        kind.schema_file().to_string()
    } else {
        format!("{base}/{}", kind.schema_file())
    }
}

fn document<S: Serialize>(
    kind: Kind,
    name: &str,
    labels: BTreeMap<String, String>,
    spec: &S,
    defaults: &Defaults,
    comment: &str,
    base: &str,
) -> String {
    let envelope = Envelope {
        api_version: ApiVersion::V1Alpha1,
        kind: kind.as_str().to_string(),
        metadata: Metadata {
            name: name.to_string(),
            labels,
            annotations: BTreeMap::new(),
        },
        spec,
    };
    let mut value = serde_json::to_value(&envelope).expect("manifests serialise to JSON");
    if let Some(spec) = value.get_mut("spec") {
        defaults.prune(spec);
    }
    format!(
        "# yaml-language-server: $schema={}\n# {comment}\n{}",
        schema_ref(base, kind),
        render::yaml(&value)
    )
}

/// Validate the output with the real validator, together with the rest of
/// the output directory. A failure is either an input ECS would reject too
/// or a bug in the mapping; both are reported rather than written.
fn check(files: &[OutputFile], context: Vec<RawFile>, report: &mut Report) {
    let ours: BTreeSet<&str> = files.iter().map(|f| f.name.as_str()).collect();
    let mut all = context;
    all.extend(files.iter().map(|f| RawFile {
        name: f.name.clone(),
        content: Content::Bytes(f.text.as_bytes().to_vec()),
    }));
    let v = validate::validate(all);
    let expected = v.documents == v.entries.len();
    for d in &v.diagnostics {
        let mine = ours.contains(d.file.as_str());
        match d.severity {
            Severity::Error => report.errors.push(ImportError {
                file: d.file.clone(),
                line: Some(d.span.line),
                column: Some(d.span.column),
                path: Some(d.pointer.clone()),
                message: format!("the imported manifests do not validate: {}", d.message),
                help: Some(if mine {
                    "this is a bug in `reconcile import ecs` unless the input is one ECS rejects too; please report it with the input".to_string()
                } else {
                    "the imported manifests conflict with the manifests already in the output directory".to_string()
                }),
            }),
            Severity::Warning if mine => report.warnings.push(Warning {
                level: Level::Warning,
                file: d.file.clone(),
                paths: vec![d.pointer.clone()],
                message: d.message.clone(),
                help: d.help.clone(),
            }),
            Severity::Warning => {}
        }
    }
    if !expected && v.is_valid() {
        report.errors.push(ImportError {
            file: files.first().map(|f| f.name.clone()).unwrap_or_default(),
            line: None,
            column: None,
            path: None,
            message: "the imported manifests did not all load".into(),
            help: Some(
                "this is a bug in `reconcile import ecs`; please report it with the input".into(),
            ),
        });
    }
}
