//! JSON Schemas (draft-07) generated from the manifest types.
//!
//! One schema per kind plus `manifest.json`, which dispatches on `kind` with
//! `if`/`then` so that an error lands on the offending field rather than on a
//! `oneOf`. The generated text is what `reconcile schema` writes and what is
//! committed under `schemas/`; the validator compiles the very same values.

use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::manifest::{
    CapacityProviderManifest, ClusterManifest, Kind, ScheduledTaskManifest, ServiceManifest,
    TaskDefinitionManifest, API_VERSION,
};

/// Relative URL of the published schemas, as used by the modelines of the
/// examples.
pub const DRAFT_07: &str = "http://json-schema.org/draft-07/schema#";

fn kind_description(kind: Kind) -> &'static str {
    match kind {
        Kind::Cluster => "A Cluster: a named group of nodes that services run on.",
        Kind::TaskDefinition => {
            "A TaskDefinition: the containers of a task. metadata.name is the ECS family; every change to the spec makes a new immutable revision."
        }
        Kind::Service => {
            "A Service: keeps desiredCount tasks of a task definition running on a cluster and rolls out new revisions with ECS deployment semantics."
        }
        Kind::CapacityProvider => {
            "A CapacityProvider: a pool of a cluster's nodes, selected by attributes, optionally scaled to the tasks it must hold."
        }
        Kind::ScheduledTask => {
            "A ScheduledTask: runs tasks of a task definition on a cluster on a schedule, as an EventBridge rule with an ECS target does; the controller starts each run."
        }
    }
}

fn settings() -> SchemaSettings {
    let mut s = SchemaSettings::draft07();
    s.meta_schema = Some(DRAFT_07.into());
    s
}

fn subschema(generator: &mut SchemaGenerator, kind: Kind) -> Value {
    match kind {
        Kind::Cluster => generator.subschema_for::<ClusterManifest>(),
        Kind::TaskDefinition => generator.subschema_for::<TaskDefinitionManifest>(),
        Kind::Service => generator.subschema_for::<ServiceManifest>(),
        Kind::CapacityProvider => generator.subschema_for::<CapacityProviderManifest>(),
        Kind::ScheduledTask => generator.subschema_for::<ScheduledTaskManifest>(),
    }
    .to_value()
}

fn root_for<T: JsonSchema>() -> Value {
    settings()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

/// The schema of one kind, as published in `schemas/<kind>.json`.
pub fn kind_schema(kind: Kind) -> Value {
    let mut root = match kind {
        Kind::Cluster => root_for::<ClusterManifest>(),
        Kind::TaskDefinition => root_for::<TaskDefinitionManifest>(),
        Kind::Service => root_for::<ServiceManifest>(),
        Kind::CapacityProvider => root_for::<CapacityProviderManifest>(),
        Kind::ScheduledTask => root_for::<ScheduledTaskManifest>(),
    };
    pin_envelope(&mut root, kind);
    tidy(&mut root);
    inline_enums(&mut root);
    let obj = root.as_object_mut().expect("schema is an object");
    obj.insert("title".into(), json!(format!("reconcile {kind} manifest")));
    let mut v = reorder_root(root);
    tidy(&mut v);
    v
}

/// Pin `kind` to the kind's name and describe the kind in the envelope.
fn pin_envelope(schema: &mut Value, kind: Kind) {
    let obj = schema.as_object_mut().expect("schema is an object");
    obj.insert("description".into(), json!(kind_description(kind)));
    if let Some(props) = obj.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert(
            "kind".into(),
            json!({
                "description": "Kind of the resource.",
                "type": "string",
                "const": kind.as_str(),
            }),
        );
    }
}

/// The combined schema that accepts any kind, as `schemas/manifest.json`.
pub fn manifest_schema() -> Value {
    let mut generator = settings().into_generator();
    let mut branches = Vec::new();
    for kind in Kind::ALL {
        let reference = subschema(&mut generator, kind);
        let name = reference["$ref"]
            .as_str()
            .and_then(|r| r.rsplit('/').next())
            .expect("envelope is a definition")
            .to_string();
        branches.push((kind, name));
    }
    let mut definitions = generator.take_definitions(true);
    for (kind, name) in &branches {
        let def = definitions.get_mut(name).expect("definition exists");
        pin_envelope(def, *kind);
    }
    let all_of: Vec<Value> = branches
        .iter()
        .map(|(kind, name)| {
            json!({
                "if": {"properties": {"kind": {"const": kind.as_str()}}, "required": ["kind"]},
                "then": {"$ref": format!("#/definitions/{name}")},
            })
        })
        .collect();
    let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
    let mut v = json!({
        "$schema": DRAFT_07,
        "title": "reconcile manifest",
        "description": "Any reconcile manifest: Cluster, TaskDefinition, Service, CapacityProvider or ScheduledTask. The document is checked against the schema of its kind.",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {
                "description": "Version of the manifest format: always `reconcile/v1alpha1`.",
                "type": "string",
                "enum": [API_VERSION],
            },
            "kind": {
                "description": "Kind of the resource.",
                "type": "string",
                "enum": kinds,
            },
        },
        "allOf": all_of,
        "definitions": Value::Object(definitions),
    });
    tidy(&mut v);
    inline_enums(&mut v);
    v
}

/// Replace `allOf: [{$ref: <enum>}]` on a field by the enum itself. Editors
/// (yaml-language-server) show the referenced definition's description on
/// hover instead of the field's own; enums are small, so inlining keeps the
/// field's description and loses nothing. Definitions no longer referenced
/// are dropped.
fn inline_enums(root: &mut Value) {
    let Some(defs) = root.get("definitions").and_then(Value::as_object).cloned() else {
        return;
    };
    fn walk(v: &mut Value, defs: &Map<String, Value>) {
        match v {
            Value::Object(m) => {
                let target = match m.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
                    Some([one]) => one
                        .get("$ref")
                        .and_then(Value::as_str)
                        .and_then(|r| r.strip_prefix("#/definitions/"))
                        .and_then(|n| defs.get(n))
                        .filter(|d| d.get("enum").is_some()),
                    _ => None,
                };
                if let Some(Value::Object(def)) = target.cloned() {
                    m.remove("allOf");
                    for (k, x) in def {
                        if k != "description" {
                            m.entry(k).or_insert(x);
                        }
                    }
                }
                for x in m.values_mut() {
                    walk(x, defs);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, defs)),
            _ => {}
        }
    }
    walk(root, &defs);
    let text = serde_json::to_string(root.get("properties").unwrap_or(&Value::Null))
        .unwrap_or_default()
        + &serde_json::to_string(root.get("definitions").unwrap_or(&Value::Null))
            .unwrap_or_default()
        + &serde_json::to_string(root.get("allOf").unwrap_or(&Value::Null)).unwrap_or_default();
    if let Some(Value::Object(d)) = root.get_mut("definitions") {
        d.retain(|name, _| text.contains(&format!("\"#/definitions/{name}\"")));
    }
}

/// Put `$schema`, `title` and `description` first, as people read them.
fn reorder_root(v: Value) -> Value {
    let Value::Object(mut m) = v else { return v };
    let mut out = Map::new();
    for k in ["$schema", "title", "description"] {
        if let Some(x) = m.remove(k) {
            out.insert(k.into(), x);
        }
    }
    out.extend(m);
    Value::Object(out)
}

/// Shape schemars' output for editors and for readable errors:
/// - `Option<T>` does not admit `null` (unset is spelled by leaving the key
///   out), so `anyOf [T, null]` collapses to `T` and errors land on fields;
/// - unit enums with documented variants become `enum` plus
///   `enumDescriptions` instead of a `oneOf` of constants;
/// - Rust-only `format`s (`uint32`, ...) are dropped.
fn tidy(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Array(types)) = m.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let t = types.remove(0);
                    m.insert("type".into(), t);
                }
            }
            if let Some(Value::Array(any)) = m.get("anyOf") {
                let non_null: Vec<&Value> = any
                    .iter()
                    .filter(|s| s.get("type") != Some(&json!("null")))
                    .collect();
                if non_null.len() == 1 && any.len() == 2 {
                    let inner = non_null[0].clone();
                    m.remove("anyOf");
                    if let Value::Object(inner) = inner {
                        for (k, x) in inner {
                            m.entry(k).or_insert(x);
                        }
                    }
                }
            }
            if let Some(Value::Array(one)) = m.get("oneOf") {
                let consts: Option<Vec<(Value, Option<Value>)>> = one
                    .iter()
                    .map(|b| {
                        let c = b.get("const")?.clone();
                        Some((c, b.get("description").cloned()))
                    })
                    .collect();
                if let Some(consts) = consts {
                    m.remove("oneOf");
                    m.insert("type".into(), json!("string"));
                    m.insert(
                        "enum".into(),
                        Value::Array(consts.iter().map(|(c, _)| c.clone()).collect()),
                    );
                    if consts.iter().any(|(_, d)| d.is_some()) {
                        m.insert(
                            "enumDescriptions".into(),
                            Value::Array(
                                consts
                                    .iter()
                                    .map(|(_, d)| {
                                        json!(unwrap_lines(
                                            d.as_ref().and_then(Value::as_str).unwrap_or("")
                                        ))
                                    })
                                    .collect(),
                            ),
                        );
                    }
                }
            }
            if let Some(Value::String(d)) = m.get_mut("description") {
                *d = unwrap_lines(d);
            }
            if let Some(Value::String(f)) = m.get("format") {
                if f.starts_with("uint") || f.starts_with("int") {
                    m.remove("format");
                }
            }
            for x in m.values_mut() {
                tidy(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(tidy),
        _ => {}
    }
}

/// Doc comments wrap at 80 columns; editors show descriptions as flowing
/// text, so single line breaks become spaces (blank lines stay).
fn unwrap_lines(d: &str) -> String {
    d.split("\n\n")
        .map(|para| {
            para.split('\n')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Every published file: name and content, in a stable order.
pub fn published() -> Vec<(String, String)> {
    let mut files = Vec::new();
    for kind in Kind::ALL {
        files.push((kind.schema_file().to_string(), pretty(&kind_schema(kind))));
    }
    files.push(("manifest.json".into(), pretty(&manifest_schema())));
    files.push(("catalog.json".into(), pretty(&catalog())));
    // The controller's HTTP API: OpenAPI, not a manifest schema, so it
    // lives apart from the files editors and validators pick up.
    files.push((
        "api/openapi.json".into(),
        pretty(&crate::controller::openapi::document()),
    ));
    files
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("schema serialises");
    s.push('\n');
    s
}

/// A catalog in SchemaStore's format mapping file patterns to the schemas
/// (URLs relative to the catalog). The patterns are narrow on purpose, so
/// that other YAML files are never claimed.
pub fn catalog() -> Value {
    let mut schemas = vec![json!({
        "name": "reconcile manifest",
        "description": "Any reconcile manifest (Cluster, TaskDefinition, Service, CapacityProvider, ScheduledTask)",
        "fileMatch": ["*.reconcile.yaml", "*.reconcile.yml", "**/reconcile/**/*.yaml", "**/reconcile/**/*.yml"],
        "url": "manifest.json",
    })];
    for kind in Kind::ALL {
        let stem = kind.schema_file().trim_end_matches(".json");
        schemas.push(json!({
            "name": format!("reconcile {kind}"),
            "description": kind_description(kind),
            "fileMatch": [format!("*.{stem}.reconcile.yaml"), format!("*.{stem}.reconcile.yml")],
            "url": kind.schema_file(),
        }));
    }
    json!({
        "$schema": "https://json.schemastore.org/schema-catalog.json",
        "version": 1,
        "schemas": schemas,
    })
}

/// Compiled validators, built once per process.
pub struct Compiled {
    per_kind: Vec<(Kind, Value, jsonschema::Validator)>,
    pub manifest: (Value, jsonschema::Validator),
}

impl Compiled {
    pub fn get() -> &'static Compiled {
        static CELL: OnceLock<Compiled> = OnceLock::new();
        CELL.get_or_init(|| {
            let build = |v: &Value| {
                jsonschema::draft7::new(v).expect("generated schemas are valid draft-07")
            };
            let per_kind = Kind::ALL
                .into_iter()
                .map(|k| {
                    let s = kind_schema(k);
                    let v = build(&s);
                    (k, s, v)
                })
                .collect();
            let m = manifest_schema();
            let mv = build(&m);
            Compiled {
                per_kind,
                manifest: (m, mv),
            }
        })
    }

    /// Schema and validator of one kind.
    pub fn kind(&self, kind: Kind) -> (&Value, &jsonschema::Validator) {
        let (_, s, v) = self
            .per_kind
            .iter()
            .find(|(k, _, _)| *k == kind)
            .expect("every kind is compiled");
        (s, v)
    }
}

/// The sub-schema that applies at `pointer` of an instance (following
/// `$ref`, `allOf`, `properties`, `additionalProperties` and `items`), used
/// to suggest the keys allowed where an unknown one was found.
pub fn schema_at<'a>(root: &'a Value, pointer: &str) -> Option<&'a Value> {
    let mut cur = resolve(root, root)?;
    for token in crate::pointer::tokens(pointer) {
        cur = resolve(root, cur)?;
        let next = if let Some(p) = cur.get("properties").and_then(|p| p.get(&token)) {
            p
        } else if let Some(items) = cur.get("items") {
            if token.parse::<usize>().is_ok() {
                items
            } else {
                return None;
            }
        } else {
            cur.get("additionalProperties").filter(|a| a.is_object())?
        };
        cur = next;
    }
    resolve(root, cur)
}

fn resolve<'a>(root: &'a Value, mut s: &'a Value) -> Option<&'a Value> {
    for _ in 0..32 {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.strip_prefix("#/definitions/")?;
            s = root.get("definitions")?.get(name)?;
        } else if let (None, Some(Value::Array(all))) = (s.get("properties"), s.get("allOf")) {
            match all.as_slice() {
                [one] => s = one,
                _ => return Some(s),
            }
        } else {
            return Some(s);
        }
    }
    None
}

/// Names of the properties a schema allows.
pub fn property_names(schema: &Value) -> Vec<String> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_is_pinned_and_nullable_options_collapse() {
        let s = kind_schema(Kind::Service);
        assert_eq!(s["properties"]["kind"]["const"], "Service");
        assert_eq!(s["$schema"], DRAFT_07);
        let spec = schema_at(&s, "/spec").unwrap();
        assert!(property_names(spec).contains(&"desiredCount".to_string()));
        let dc = schema_at(&s, "/spec/desiredCount").unwrap();
        assert_eq!(dc["type"], "integer");
        let text = serde_json::to_string(&s).unwrap();
        assert!(!text.contains("\"null\""), "no nullable types: {text}");
        assert!(!text.contains("uint32"));
    }

    #[test]
    fn manifest_dispatches_on_kind() {
        let m = manifest_schema();
        let v = jsonschema::draft7::new(&m).unwrap();
        let doc = json!({"apiVersion": API_VERSION, "kind": "Service", "metadata": {"name": "web"},
            "spec": {"cluster": "c", "taskDefinition": "web", "desiredCount": -3}});
        let errs: Vec<String> = v
            .iter_errors(&doc)
            .map(|e| e.instance_path().as_str().to_string())
            .collect();
        assert_eq!(errs, vec!["/spec/desiredCount"]);
    }
}
