//! A compose project read as `docker compose config` reads it: each file
//! parsed (anchors and merge keys resolved), interpolated, normalized and
//! merged in order; `extends` resolved; services outside the active
//! profiles left out; `x-` extension fields dropped. Pure but for the
//! files `extends` names, which come through a callback.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::{interpolate, merge, merge_keys, normalize};
use crate::yaml;

/// One compose file: its name as the user gave it, and its text.
#[derive(Debug, Clone)]
pub struct File {
    pub name: String,
    pub text: String,
}

/// A problem or a warning, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    /// 1-based line and column, when the place is known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Where in the document, as compose names it (`services.web.ports[0]`).
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// How to read the project.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The variables interpolation reads (the environment over `.env`, as
    /// compose orders them).
    pub env: BTreeMap<String, String>,
    /// Active profiles (`--profile`, `COMPOSE_PROFILES`).
    pub profiles: BTreeSet<String>,
}

/// The project as one normalized document, and what was worth a warning.
#[derive(Debug, Clone)]
pub struct Project {
    pub doc: Value,
    pub warnings: Vec<Finding>,
}

/// Reads the file an `extends.file` names, relative to the file that
/// names it: `(naming file, named path) -> (name, text)`.
pub type Reader<'a> = dyn Fn(&str, &str) -> Result<File, String> + 'a;

/// Read `files` in order as one project.
pub fn project(files: &[File], opts: &Options, read: &Reader) -> Result<Project, Vec<Finding>> {
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    let mut doc = merge::empty();
    for f in files {
        match one_file(f, opts, &mut warnings) {
            Ok(d) => merge::documents(&mut doc, d),
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let first = files.first().map(|f| f.name.clone()).unwrap_or_default();
    let ctx = Extends { opts, read };
    if let Err(e) = ctx.resolve_all(&mut doc, &first) {
        return Err(vec![e]);
    }
    profiles(&mut doc, &opts.profiles, &first).map_err(|e| vec![e])?;
    env_files(&mut doc, &first, opts, read).map_err(|e| vec![e])?;
    // Interpolation warns once per variable, as compose does.
    let mut seen = BTreeSet::new();
    warnings.retain(|w: &Finding| seen.insert(w.message.clone()));
    Ok(Project { doc, warnings })
}

/// One file: parsed, merge keys resolved, interpolated, extension fields
/// dropped, normalized.
fn one_file(f: &File, opts: &Options, warnings: &mut Vec<Finding>) -> Result<Value, Vec<Finding>> {
    let loaded = yaml::load(&f.text, yaml::Limits::default());
    let at = |span: yaml::Span, path: String, message: String| Finding {
        file: f.name.clone(),
        line: Some(span.line),
        column: Some(span.column),
        path,
        message,
    };
    if !loaded.errors.is_empty() {
        return Err(loaded
            .errors
            .into_iter()
            .map(|(_, e)| at(e.span, path_of(&e.pointer), e.message))
            .collect());
    }
    let doc = match loaded.documents.as_slice() {
        [] => return Ok(merge::empty()),
        [one] => one,
        [_, second, ..] => {
            return Err(vec![at(
                second.start,
                String::new(),
                "a compose file holds one YAML document".into(),
            )])
        }
    };
    let mut value = doc.value.clone();
    if !value.is_object() && !value.is_null() {
        return Err(vec![at(
            doc.start,
            String::new(),
            "a compose file is a mapping (services, volumes, ...)".into(),
        )]);
    }
    merge_keys::resolve(&mut value).map_err(|e| vec![at(doc.start, String::new(), e)])?;
    let mut errors = Vec::new();
    interpolate_all(
        &mut value,
        "",
        &opts.env,
        &mut |pointer, outcome| match outcome {
            Err(e) => errors.push(at(doc.span_of(pointer), path_of(pointer), e.to_string())),
            Ok(unset) => warnings.extend(unset.into_iter().map(|name| Finding {
                file: f.name.clone(),
                line: None,
                column: None,
                path: String::new(),
                message: format!("the {name} variable is not set: it is read as an empty string"),
            })),
        },
    );
    if !errors.is_empty() {
        return Err(errors);
    }
    drop_extensions(&mut value);
    normalize::document(&mut value).map_err(|e| {
        let pointer = pointer_of(&e);
        vec![at(doc.span_of(&pointer), String::new(), e)]
    })?;
    Ok(if value.is_null() {
        merge::empty()
    } else {
        value
    })
}

/// What interpolating one value gave: its unset variables, or its error.
type Outcome = Result<Vec<String>, interpolate::Problem>;

/// Interpolate every string value (never a key) under `pointer` with
/// `env`; `report` hears of each value's unset variables or its error.
fn interpolate_all(
    v: &mut Value,
    pointer: &str,
    env: &BTreeMap<String, String>,
    report: &mut dyn FnMut(&str, Outcome),
) {
    match v {
        Value::String(s) if s.contains('$') => match interpolate::interpolate(s, env) {
            Ok(i) => {
                *s = i.value;
                if !i.unset.is_empty() {
                    report(pointer, Ok(i.unset));
                }
            }
            Err(e) => report(pointer, Err(e)),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_all(item, &format!("{pointer}/{i}"), env, report);
            }
        }
        Value::Object(m) => {
            for (k, item) in m.iter_mut() {
                let p = format!("{pointer}/{}", k.replace('~', "~0").replace('/', "~1"));
                interpolate_all(item, &p, env, report);
            }
        }
        _ => {}
    }
}

/// `x-` fields at the top and in services are for anchors only.
fn drop_extensions(v: &mut Value) {
    let Some(m) = v.as_object_mut() else { return };
    m.retain(|k, _| !k.starts_with("x-"));
    if let Some(services) = m.get_mut("services").and_then(Value::as_object_mut) {
        for s in services.values_mut() {
            if let Some(s) = s.as_object_mut() {
                s.retain(|k, _| !k.starts_with("x-"));
            }
        }
    }
}

/// `/services/web/ports/0` as `services.web.ports[0]`.
fn path_of(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').skip(1) {
        let part = part.replace("~1", "/").replace("~0", "~");
        if part.parse::<usize>().is_ok() && !out.is_empty() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&part);
        }
    }
    out
}

/// The pointer a normalize error's `services.NAME.FIELD[...]` prefix
/// names, for its place in the file.
fn pointer_of(e: &str) -> String {
    let path = e.split(':').next().unwrap_or_default();
    let mut out = String::new();
    for part in path.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, i)) => (n, i.strip_suffix(']')),
            None => (part, None),
        };
        out.push('/');
        out.push_str(name);
        if let Some(i) = index {
            out.push('/');
            out.push_str(i);
        }
    }
    out
}

/// Resolving `extends`, with what reads the files it names.
struct Extends<'a> {
    opts: &'a Options,
    read: &'a Reader<'a>,
}

impl Extends<'_> {
    fn resolve_all(&self, doc: &mut Value, file: &str) -> Result<(), Finding> {
        let names: Vec<String> = services(doc).map(|(k, _)| k.clone()).collect();
        for name in names {
            let resolved = self.service(doc, file, &name, &mut Vec::new())?;
            services_mut(doc).insert(name, resolved);
        }
        Ok(())
    }

    /// Service `name` of `doc` (read from `file`) with its `extends`
    /// resolved; `stack` holds the services being resolved, for cycles.
    fn service(
        &self,
        doc: &Value,
        file: &str,
        name: &str,
        stack: &mut Vec<(String, String)>,
    ) -> Result<Value, Finding> {
        let err = |message: String| Finding {
            file: file.to_string(),
            line: None,
            column: None,
            path: format!("services.{name}.extends"),
            message,
        };
        let Some(service) = service(doc, name).cloned() else {
            return Err(err(format!("no service `{name}` in {file}")));
        };
        let Some(ext) = service.get("extends").cloned() else {
            return Ok(service);
        };
        let key = (file.to_string(), name.to_string());
        if stack.contains(&key) {
            let chain: Vec<String> = stack
                .iter()
                .chain([&key])
                .map(|(f, s)| format!("{s} ({f})"))
                .collect();
            return Err(err(format!(
                "extends goes round in a circle: {}",
                chain.join(" -> ")
            )));
        }
        stack.push(key);
        let (base_name, base_file) = match &ext {
            Value::String(s) => (s.clone(), None),
            Value::Object(m) => (
                m.get("service")
                    .and_then(Value::as_str)
                    .ok_or_else(|| err("`extends` needs `service`".into()))?
                    .to_string(),
                m.get("file").and_then(Value::as_str).map(str::to_string),
            ),
            _ => return Err(err("`extends` is a service name or a mapping".into())),
        };
        let base = match base_file {
            None => self.service(doc, file, &base_name, stack)?,
            Some(path) => {
                let other = (self.read)(file, &path).map_err(|e| err(format!("`{path}`: {e}")))?;
                let mut no_warnings = Vec::new();
                let other_doc =
                    one_file(&other, self.opts, &mut no_warnings).map_err(|mut e| {
                        e.truncate(1);
                        e.pop()
                            .unwrap_or_else(|| err(format!("`{path}` cannot be read")))
                    })?;
                self.service(&other_doc, &other.name, &base_name, stack)?
            }
        };
        stack.pop();
        let mut own = service;
        if let Some(o) = own.as_object_mut() {
            o.remove("extends");
        }
        let mut wrapped = serde_json::json!({"services": {name: base}});
        merge::documents(&mut wrapped, serde_json::json!({"services": {name: own}}));
        Ok(wrapped["services"][name].take())
    }
}

/// The document's services, by name (none when it has no mapping of
/// them).
fn services(doc: &Value) -> impl Iterator<Item = (&String, &Value)> {
    doc.get("services")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
}

fn service<'a>(doc: &'a Value, name: &str) -> Option<&'a Value> {
    doc.get("services")?.get(name)
}

fn services_mut(doc: &mut Value) -> &mut Map<String, Value> {
    if !doc.get("services").is_some_and(Value::is_object) {
        doc["services"] = Value::Object(Map::new());
    }
    doc["services"]
        .as_object_mut()
        .expect("made a mapping above")
}

/// Each service's `env_file` files read (relative to the project's first
/// file) into its `environment`, whose own entries win, later files over
/// earlier ones, as compose does.
fn env_files(doc: &mut Value, first: &str, opts: &Options, read: &Reader) -> Result<(), Finding> {
    for (name, s) in services_mut(doc).iter_mut() {
        let Some(s) = s.as_object_mut() else { continue };
        let Some(list) = s.remove("env_file") else {
            continue;
        };
        let entries: Vec<(String, bool)> = match list {
            Value::String(p) => vec![(p, true)],
            Value::Array(items) => items
                .into_iter()
                .filter_map(|i| match i {
                    Value::String(p) => Some((p, true)),
                    Value::Object(m) => Some((
                        m.get("path")?.as_str()?.to_string(),
                        m.get("required").and_then(Value::as_bool).unwrap_or(true),
                    )),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let err = |message: String| Finding {
            file: first.to_string(),
            line: None,
            column: None,
            path: format!("services.{name}.env_file"),
            message,
        };
        let mut from_files: Map<String, Value> = Map::new();
        for (path, required) in entries {
            let f = match read(first, &path) {
                Ok(f) => f,
                Err(_) if !required => continue,
                Err(e) => return Err(err(format!("`{path}`: {e}"))),
            };
            let vars = super::env_file::parse(&f.text, &opts.env)
                .map_err(|e| err(format!("{}:{}: {}", f.name, e.line, e.message)))?;
            for (k, v) in vars {
                from_files.insert(k, Value::String(v));
            }
        }
        let own = s
            .remove("environment")
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        from_files.extend(own);
        s.insert("environment".into(), Value::Object(from_files));
    }
    // A bare `KEY` takes its value from the environment when it has one.
    for s in services_mut(doc).values_mut() {
        if let Some(env) = s.get_mut("environment").and_then(Value::as_object_mut) {
            for (k, v) in env.iter_mut() {
                if let (Value::Null, Some(val)) = (&v, opts.env.get(k)) {
                    *v = Value::String(val.clone());
                }
            }
        }
    }
    Ok(())
}

/// Leave out the services none of whose profiles is active; a service
/// left in that depends on one left out is an error, as in compose.
fn profiles(doc: &mut Value, active: &BTreeSet<String>, file: &str) -> Result<(), Finding> {
    // Read while `doc` changes below.
    let all: Map<String, Value> = services(doc).map(|(k, v)| (k.clone(), v.clone())).collect();
    let enabled = |s: &Value| match s.get("profiles").and_then(Value::as_array) {
        None => true,
        Some(list) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|p| active.contains(p) || active.contains("*")),
    };
    let off: BTreeSet<String> = all
        .iter()
        .filter(|(_, s)| !enabled(s))
        .map(|(n, _)| n.clone())
        .collect();
    for (name, s) in &all {
        if off.contains(name) {
            continue;
        }
        if let Some(deps) = s.get("depends_on").and_then(Value::as_object) {
            for (dep, d) in deps {
                let required = d.get("required").and_then(Value::as_bool).unwrap_or(true);
                if off.contains(dep) && required {
                    let wanted: Vec<&str> = all[dep]["profiles"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    return Err(Finding {
                        file: file.to_string(),
                        line: None,
                        column: None,
                        path: format!("services.{name}.depends_on.{dep}"),
                        message: format!(
                            "`{name}` depends on `{dep}`, which runs only with the profile(s) {}: \
                             enable one with --profile",
                            wanted.join(", ")
                        ),
                    });
                }
                if !all.contains_key(dep) {
                    return Err(Finding {
                        file: file.to_string(),
                        line: None,
                        column: None,
                        path: format!("services.{name}.depends_on.{dep}"),
                        message: format!("`{name}` depends on `{dep}`, which is not a service"),
                    });
                }
            }
        }
    }
    let services = services_mut(doc);
    services.retain(|n, _| !off.contains(n));
    for s in services.values_mut() {
        if let Some(deps) = s.get_mut("depends_on").and_then(Value::as_object_mut) {
            deps.retain(|d, _| !off.contains(d));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn file(name: &str, text: &str) -> File {
        File {
            name: name.into(),
            text: text.into(),
        }
    }

    fn no_files(_: &str, path: &str) -> Result<File, String> {
        Err(format!("no file {path} here"))
    }

    fn read(
        files: &[File],
        env: &[(&str, &str)],
        profiles: &[&str],
    ) -> Result<Project, Vec<Finding>> {
        let opts = Options {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            profiles: profiles.iter().map(|p| p.to_string()).collect(),
        };
        project(files, &opts, &no_files)
    }

    const BASE: &str = "\
name: shop
x-common: &common
  restart: unless-stopped
  environment:
    LOG_LEVEL: ${LOG_LEVEL:-info}
services:
  web:
    <<: *common
    image: shop/web:${TAG:?set TAG}
    ports: [\"8080:80\"]
    depends_on:
      db: {condition: service_healthy}
  db:
    <<: *common
    image: postgres:16
    x-note: kept out
  debug:
    image: busybox
    profiles: [debug]
";

    #[test]
    fn a_project_reads_as_compose_config_reads_it() {
        let over = file(
            "compose.override.yaml",
            "services:\n  web:\n    environment: [EXTRA=$$HOME]\n",
        );
        let p = read(&[file("compose.yaml", BASE), over], &[("TAG", "2.1")], &[]).unwrap();
        let web = &p.doc["services"]["web"];
        assert_eq!(web["image"], "shop/web:2.1");
        assert_eq!(web["restart"], "unless-stopped");
        assert_eq!(
            web["environment"],
            json!({"LOG_LEVEL": "info", "EXTRA": "$HOME"})
        );
        assert_eq!(web["ports"][0]["published"], "8080");
        assert!(p.doc.get("x-common").is_none());
        assert!(p.doc["services"]["db"].get("x-note").is_none());
        assert!(
            p.doc["services"].get("debug").is_none(),
            "profile not active"
        );
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let p = read(&[file("compose.yaml", BASE)], &[("TAG", "2.1")], &["debug"]).unwrap();
        assert_eq!(p.doc["services"]["debug"]["image"], "busybox");
    }

    #[test]
    fn a_required_variable_names_its_file_line_and_column() {
        let e = read(&[file("compose.yaml", BASE)], &[], &[]).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(
            e[0].to_string(),
            "compose.yaml:9:12: services.web.image: required variable TAG is missing a value: set TAG"
        );
    }

    #[test]
    fn env_files_fill_the_environment_under_its_own_entries() {
        let text = "services:\n  a:\n    image: x\n    env_file: [a.env, {path: missing.env, required: false}]\n    environment: {B: own}\n";
        let reader = |_: &str, path: &str| -> Result<File, String> {
            match path {
                "a.env" => Ok(file("a.env", "A=1\nB=from-file\nC=${HOST_VAR}\n")),
                _ => Err("not found".into()),
            }
        };
        let opts = Options {
            env: [("HOST_VAR".to_string(), "h".to_string())].into(),
            ..Options::default()
        };
        let p = project(&[file("c.yaml", text)], &opts, &reader).unwrap();
        assert_eq!(
            p.doc["services"]["a"]["environment"],
            json!({"A": "1", "B": "own", "C": "h"})
        );
        assert!(p.doc["services"]["a"].get("env_file").is_none());
        let bad = "services:\n  a: {image: x, env_file: nothere.env}\n";
        let e = project(&[file("c.yaml", bad)], &opts, &reader).unwrap_err();
        assert!(
            e[0].to_string()
                .contains("services.a.env_file: `nothere.env`: not found"),
            "{e:?}"
        );
    }

    #[test]
    fn unset_variables_warn_once() {
        let text = "services:\n  a: {image: \"x:$V\", command: \"echo $V\"}\n";
        let p = read(&[file("c.yaml", text)], &[], &[]).unwrap();
        assert_eq!(p.doc["services"]["a"]["image"], "x:");
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.warnings[0].message.contains("the V variable is not set"));
    }

    #[test]
    fn extends_in_the_same_file_and_another() {
        let text = "\
services:
  base: {image: app:1, environment: {A: '1'}, command: [run]}
  worker:
    extends: base
    command: [work]
    environment: {B: '2'}
  remote:
    extends: {file: common.yaml, service: shared}
    image: app:2
";
        let common = file("common.yaml", "services:\n  shared: {image: app:0, user: '1000', extends: root}\n  root: {init: true}\n");
        let opts = Options::default();
        let reader = |from: &str, path: &str| -> Result<File, String> {
            assert_eq!((from, path), ("compose.yaml", "common.yaml"));
            Ok(common.clone())
        };
        let p = project(&[file("compose.yaml", text)], &opts, &reader).unwrap();
        let w = &p.doc["services"]["worker"];
        assert_eq!(w["image"], "app:1");
        assert_eq!(w["command"], json!(["work"]));
        assert_eq!(w["environment"], json!({"A": "1", "B": "2"}));
        assert!(w.get("extends").is_none());
        let r = &p.doc["services"]["remote"];
        assert_eq!(r["image"], "app:2");
        assert_eq!(r["user"], "1000");
        assert_eq!(r["init"], true);
    }

    #[test]
    fn broken_projects_say_what_and_where() {
        let cases: [(&str, &str); 5] = [
            (
                "services:\n  a: {extends: b}\n  b: {extends: a}\n",
                "extends goes round in a circle",
            ),
            (
                "services:\n  a: {extends: nothing}\n",
                "no service `nothing`",
            ),
            (
                "services:\n  a: {image: x, depends_on: [gone]}\n",
                "`gone`, which is not a service",
            ),
            (
                "services:\n  a: {image: x, depends_on: [d]}\n  d: {image: y, profiles: [dev]}\n",
                "only with the profile(s) dev",
            ),
            (
                "services:\n  a:\n    ports: [\"1:2:3:4\"]\n",
                "c.yaml:3:13: services.a.ports[0]:",
            ),
        ];
        for (text, says) in cases {
            let e = read(&[file("c.yaml", text)], &[], &[]).unwrap_err();
            let all: Vec<String> = e.iter().map(|f| f.to_string()).collect();
            assert!(all.iter().any(|m| m.contains(says)), "{text}: {all:?}");
        }
    }
}
