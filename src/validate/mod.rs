//! Validation in layers, every error reported in one run:
//!
//! 1. file: readable, not binary, UTF-8, below the size limit;
//! 2. YAML: syntax, duplicate keys, nesting and alias bounds ([`crate::yaml`]);
//! 3. schema: each document against its kind's generated JSON Schema;
//! 4. semantics: references, uniqueness and ECS rules across documents
//!    ([`semantic`]).
//!
//! A document that fails a layer is not checked by the later ones (its
//! typed form does not exist), but every other document still is, so one
//! bad file never hides the errors of another.

pub mod semantic;

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::manifest::{Kind, Manifest};
use crate::schema::{self, Compiled};
use crate::source::{Content, RawFile};
use crate::suggest;
use crate::yaml::{self, Document, Limits, Span};

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// Another place a diagnostic involves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Related {
    pub message: String,
    pub file: String,
    pub span: Span,
}

/// One finding, located in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Which check produced it: `file`, `encoding`, `yaml`, `schema`, or the
    /// name of a semantic rule.
    pub code: &'static str,
    /// File, relative to the source root.
    pub file: String,
    pub span: Span,
    /// JSON pointer inside the document.
    pub pointer: String,
    pub kind: Option<Kind>,
    pub name: Option<String>,
    pub message: String,
    pub help: Option<String>,
    pub related: Vec<Related>,
}

/// A source file as read, kept for rendering snippets.
#[derive(Debug, Clone)]
pub struct SourceText {
    pub name: String,
    /// The text, when the file was valid UTF-8.
    pub text: Option<Arc<str>>,
}

/// A manifest that passed the file, YAML and schema layers.
#[derive(Debug, Clone)]
pub struct Entry {
    pub manifest: Manifest,
    /// Index into [`Validation::files`].
    pub file: usize,
    pub document: Document,
    /// Unknown keys left out before the typed pass (the document has schema
    /// errors for them); findings about their parents are not reported.
    pub stripped: Vec<String>,
}

/// Everything validation learnt about a source.
#[derive(Debug, Clone, Default)]
pub struct Validation {
    pub files: Vec<SourceText>,
    /// Non-empty documents found.
    pub documents: usize,
    pub entries: Vec<Entry>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Validation {
    pub fn is_valid(&self) -> bool {
        !self
            .diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    pub fn errors(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }
}

/// What one file yields before cross-document checks.
#[derive(Clone)]
struct FileResult {
    text: SourceText,
    documents: usize,
    entries: Vec<(Manifest, Document, Vec<String>)>,
    /// Kind and name of documents that are in the file but failed the YAML
    /// or schema layer: references to them are not reported as missing.
    invalid: Vec<(Kind, String)>,
    diagnostics: Vec<Diagnostic>,
}

/// Validate every file of a source.
pub fn validate(files: Vec<RawFile>) -> Validation {
    assemble(check_files(files))
}

/// The per-file results of the previous [`validate_cached`] call. A
/// controller reads its whole source on every pass while a commit usually
/// changes one file of thousands: a file whose name and bytes are those of
/// last time is not parsed or checked against its schema again. Only the
/// last call's files are kept, so the cache is as large as one source.
#[derive(Default)]
pub struct FileCache {
    files: std::collections::HashMap<String, FileResult>,
}

/// [`validate`], reusing the file layers' results for unchanged files.
/// The cross-document checks always run on the whole source.
pub fn validate_cached(files: Vec<RawFile>, cache: &mut FileCache) -> Validation {
    let mut last = std::mem::take(&mut cache.files);
    let mut results: Vec<Option<FileResult>> = Vec::with_capacity(files.len());
    let mut misses = Vec::new();
    for raw in files {
        let hit = match (&raw.content, last.remove(&raw.name)) {
            (Content::Bytes(b), Some(r))
                if r.text.text.as_deref().map(str::as_bytes) == Some(b.as_slice()) =>
            {
                Some(r)
            }
            _ => None,
        };
        if hit.is_none() {
            misses.push(raw);
        }
        results.push(hit);
    }
    let mut fresh = check_files(misses).into_iter();
    let results: Vec<FileResult> = results
        .into_iter()
        .map(|r| r.or_else(|| fresh.next()).expect("one result per miss"))
        .collect();
    // Files that were not text are read again next time: their result is
    // a diagnostic, cheap to recompute, and their bytes are not kept.
    cache.files = results
        .iter()
        .filter(|r| r.text.text.is_some())
        .map(|r| (r.text.name.clone(), r.clone()))
        .collect();
    assemble(results)
}

fn assemble(results: Vec<FileResult>) -> Validation {
    let mut v = Validation::default();
    let mut invalid = std::collections::HashSet::new();
    for (i, r) in results.into_iter().enumerate() {
        v.documents += r.documents;
        invalid.extend(r.invalid.into_iter().map(|(k, n)| (k.as_str(), n)));
        v.diagnostics.extend(r.diagnostics);
        v.entries.extend(
            r.entries
                .into_iter()
                .map(|(manifest, document, stripped)| Entry {
                    manifest,
                    file: i,
                    document,
                    stripped,
                }),
        );
        v.files.push(r.text);
    }
    let semantic = semantic::check(&v.entries);
    for f in semantic {
        let stripped = &v.entries[f.entry].stripped;
        let hidden = stripped
            .iter()
            .any(|p| crate::pointer::parent(p) == Some(f.pointer.as_str()));
        // A reference to a document that exists but has errors of its own
        // is not missing: those errors are the ones to fix.
        let consequential = f
            .missing
            .as_ref()
            .is_some_and(|(k, n)| invalid.contains(&(*k, n.clone())));
        if !hidden && !consequential {
            v.diagnostics.push(f.locate(&v));
        }
    }
    v.diagnostics.sort_by(|a, b| {
        (&a.file, a.span.offset, &a.pointer, &a.message).cmp(&(
            &b.file,
            b.span.offset,
            &b.pointer,
            &b.message,
        ))
    });
    v.diagnostics.dedup();
    v
}

/// Files are independent until the semantic layer, so they are checked on
/// every core.
fn check_files(files: Vec<RawFile>) -> Vec<FileResult> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(files.len().max(1));
    if threads <= 1 || files.len() < 8 {
        return files.into_iter().map(check_file).collect();
    }
    let chunk = files.len().div_ceil(threads);
    let mut files = files;
    let mut chunks = Vec::new();
    while !files.is_empty() {
        let rest = files.split_off(chunk.min(files.len()));
        chunks.push(std::mem::replace(&mut files, rest));
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|c| s.spawn(move || c.into_iter().map(check_file).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("validation threads do not panic"))
            .collect()
    })
}

fn file_diag(name: &str, code: &'static str, span: Span, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        code,
        file: name.to_string(),
        span,
        pointer: String::new(),
        kind: None,
        name: None,
        message,
        help: None,
        related: Vec::new(),
    }
}

fn check_file(raw: RawFile) -> FileResult {
    let name = raw.name;
    let mut out = FileResult {
        text: SourceText {
            name: name.clone(),
            text: None,
        },
        documents: 0,
        entries: Vec::new(),
        invalid: Vec::new(),
        diagnostics: Vec::new(),
    };
    let start = Span {
        offset: 0,
        len: 0,
        line: 1,
        column: 1,
    };
    let bytes = match raw.content {
        Content::Bytes(b) => b,
        Content::Unreadable(why) => {
            out.diagnostics.push(file_diag(&name, "file", start, why));
            return out;
        }
    };
    if let Some(pos) = bytes.iter().take(8192).position(|b| *b == 0) {
        out.diagnostics.push(file_diag(
            &name,
            "file",
            yaml::locate_byte(&bytes, pos),
            "binary file: it holds NUL bytes, so it is not YAML".into(),
        ));
        return out;
    }
    let text: Arc<str> = match String::from_utf8(bytes) {
        Ok(s) => Arc::from(s),
        Err(e) => {
            let pos = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            let span = yaml::locate_byte(&bytes, pos);
            out.diagnostics.push(file_diag(
                &name,
                "encoding",
                span,
                format!(
                    "file is not valid UTF-8: byte 0x{:02X} at line {}, column {}",
                    bytes[pos], span.line, span.column
                ),
            ));
            return out;
        }
    };
    // A byte-order mark is legal YAML but shifts nothing we report.
    let loaded = yaml::load(&text, Limits::default());
    for (_, e) in loaded.errors {
        let mut d = file_diag(&name, "yaml", e.span, e.message);
        d.pointer = e.pointer;
        d.help = e.help;
        if let Some((message, span)) = e.related {
            d.related.push(Related {
                message,
                file: name.clone(),
                span,
            });
        }
        out.diagnostics.push(d);
    }
    let yaml_failed = !out.diagnostics.is_empty();
    out.documents = loaded.documents.len();
    for doc in loaded.documents {
        // Documents of a file with YAML errors are still schema-checked:
        // the errors are independent and all are reported in one run.
        match check_document(&name, &text, &doc, &mut out.diagnostics) {
            Some((m, stripped)) if !yaml_failed => out.entries.push((m, doc, stripped)),
            _ => out.invalid.extend(kind_and_name(&doc.value)),
        }
    }
    out.text.text = Some(text);
    out
}

/// Schema-check one document and deserialise it.
fn check_document(
    file: &str,
    text: &str,
    doc: &Document,
    diags: &mut Vec<Diagnostic>,
) -> Option<(Manifest, Vec<String>)> {
    let compiled = Compiled::get();
    let kind_value = doc.value.get("kind").and_then(Value::as_str);
    let kind = kind_value.and_then(Kind::parse);
    let name = doc
        .value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let (schema, validator) = match kind {
        Some(k) => compiled.kind(k),
        None => (&compiled.manifest.0, &compiled.manifest.1),
    };
    let before = diags.len();
    let mut unknown_only = true;
    if !doc.value.is_object() {
        diags.push(Diagnostic {
            kind: None,
            name: None,
            ..file_diag(
                file,
                "schema",
                doc.span_of(""),
                format!(
                    "a manifest is a mapping with apiVersion, kind, metadata and spec; found {}",
                    type_name(&doc.value)
                ),
            )
        });
        return None;
    }
    let mut unknown_keys = Vec::new();
    for e in validator.iter_errors(&doc.value) {
        match e.kind() {
            jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                let at = e.instance_path().as_str();
                unknown_keys.extend(unexpected.iter().map(|k| crate::pointer::push(at, k)));
            }
            _ => unknown_only = false,
        }
        schema_diagnostics((file, text), doc, schema, kind, name.as_deref(), &e, diags);
    }
    let kind = kind?;
    if diags.len() > before {
        // A document whose only problems are unknown keys still takes part
        // in the cross-document checks, without those keys, so that fixing
        // a typo does not reveal a second round of errors. Any other schema
        // error could cascade into misleading findings, so the document
        // stops here.
        if !unknown_only {
            return None;
        }
        let mut value = doc.value.clone();
        for p in &unknown_keys {
            if let (Some(parent), Some(key)) =
                (crate::pointer::parent(p), crate::pointer::tokens(p).last())
            {
                if let Some(obj) = value.pointer_mut(parent).and_then(Value::as_object_mut) {
                    obj.remove(&key);
                }
            }
        }
        return Manifest::from_value(kind, &value)
            .ok()
            .map(|m| (m, unknown_keys));
    }
    match Manifest::from_value(kind, &doc.value) {
        Ok(m) => Some((m, Vec::new())),
        Err((pointer, message)) => {
            // The schema and the types agree by construction; this is a
            // safety net that still reports a location.
            diags.push(Diagnostic {
                kind: Some(kind),
                name,
                pointer: pointer.clone(),
                ..file_diag(file, "schema", doc.span_of(&pointer), message)
            });
            None
        }
    }
}

/// What a document declares itself to be, even when it is not valid.
fn kind_and_name(v: &Value) -> Option<(Kind, String)> {
    let kind = Kind::parse(v.get("kind")?.as_str()?)?;
    let name = v.get("metadata")?.get("name")?.as_str()?;
    Some((kind, name.to_string()))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A value as shown in a message: short, and never a whole subtree.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) if s.chars().count() > 60 => {
            format!("\"{}…\"", s.chars().take(57).collect::<String>())
        }
        Value::Array(_) | Value::Object(_) => type_name(v).to_string(),
        other => other.to_string(),
    }
}

fn quoted_list(items: &[String]) -> String {
    let shown: Vec<String> = items.iter().take(12).map(|s| format!("`{s}`")).collect();
    let mut out = shown.join(", ");
    if items.len() > 12 {
        out.push_str(&format!(" and {} more", items.len() - 12));
    }
    out
}

/// `source` is the file's name and text.
fn schema_diagnostics(
    (file, text): (&str, &str),
    doc: &Document,
    schema: &Value,
    kind: Option<Kind>,
    name: Option<&str>,
    e: &jsonschema::ValidationError<'_>,
    diags: &mut Vec<Diagnostic>,
) {
    use jsonschema::error::ValidationErrorKind as K;
    let pointer = e.instance_path().as_str().to_string();
    let instance: &Value = e.instance();
    let mk = |pointer: String, span: Span, message: String, help: Option<String>| Diagnostic {
        severity: Severity::Error,
        code: "schema",
        file: file.to_string(),
        span,
        pointer,
        kind,
        name: name.map(str::to_string),
        message,
        help,
        related: Vec::new(),
    };
    let allowed = || {
        schema::schema_at(schema, &pointer)
            .map(schema::property_names)
            .unwrap_or_default()
    };
    match e.kind() {
        K::AdditionalProperties { unexpected } => {
            let allowed = allowed();
            for key in unexpected {
                let p = crate::pointer::push(&pointer, key);
                let present: Vec<&str> = instance
                    .as_object()
                    .map(|o| o.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                let candidates = allowed
                    .iter()
                    .map(String::as_str)
                    .filter(|a| !present.contains(a));
                let help = match suggest::closest(key, candidates) {
                    Some(s) => Some(format!("did you mean `{s}`?")),
                    None if !allowed.is_empty() => {
                        Some(format!("expected one of: {}", quoted_list(&allowed)))
                    }
                    None => None,
                };
                diags.push(mk(
                    p.clone(),
                    doc.key_span_of(&p),
                    format!("unknown field `{key}`"),
                    help,
                ));
            }
        }
        K::Required { property } => {
            let field = property.as_str().unwrap_or_default();
            let where_ = if pointer.is_empty() {
                "the document".to_string()
            } else {
                format!("`{}`", dotted(&pointer))
            };
            diags.push(mk(
                pointer.clone(),
                doc.key_span_of(&pointer),
                format!("missing required field `{field}` in {where_}"),
                None,
            ));
        }
        K::Enum { options } => {
            let opts: Vec<String> = options
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|o| o.as_str().map_or_else(|| o.to_string(), str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let help = instance
                .as_str()
                .and_then(|s| suggest::closest(s, opts.iter().map(String::as_str)))
                .map(|s| format!("did you mean `{s}`?"));
            diags.push(mk(
                pointer.clone(),
                doc.span_of(&pointer),
                format!("{} is not one of {}", show(instance), quoted_list(&opts)),
                help,
            ));
        }
        K::Constant { expected_value } => diags.push(mk(
            pointer.clone(),
            doc.span_of(&pointer),
            format!("expected {}, found {}", expected_value, show(instance)),
            None,
        )),
        K::Type { kind: expected } => {
            let want = format!("{expected:?}")
                .to_lowercase()
                .replace("single(", "")
                .replace(')', "");
            let help = match (instance, want.as_str()) {
                (Value::String(s), "integer" | "number") if s.trim().parse::<f64>().is_ok() => {
                    Some("remove the quotes to write a number".to_string())
                }
                (Value::Number(_) | Value::Bool(_), "string") => {
                    Some("quote the value to write it as text".to_string())
                }
                (Value::Object(m), "string") => colon_in_plain_value(text, doc, &pointer, m),
                _ => None,
            };
            // Lists and mappings are named by their type alone.
            let found = match instance {
                Value::Array(_) | Value::Object(_) => type_name(instance).to_string(),
                _ => format!("{} {}", type_name(instance), show(instance)),
            };
            diags.push(mk(
                pointer.clone(),
                doc.span_of(&pointer),
                format!("expected {}, found {found}", article(&want)),
                help,
            ));
        }
        K::Minimum { limit } => diags.push(mk(
            pointer.clone(),
            doc.span_of(&pointer),
            format!("{} is less than the minimum of {limit}", show(instance)),
            None,
        )),
        K::Maximum { limit } => diags.push(mk(
            pointer.clone(),
            doc.span_of(&pointer),
            format!("{} is greater than the maximum of {limit}", show(instance)),
            None,
        )),
        K::MinItems { limit } => diags.push(mk(
            pointer.clone(),
            doc.span_of(&pointer),
            format!(
                "`{}` needs at least {limit} item{}",
                dotted(&pointer),
                if *limit == 1 { "" } else { "s" }
            ),
            None,
        )),
        K::MaxItems { limit } => diags.push(mk(
            pointer.clone(),
            doc.span_of(&pointer),
            format!(
                "`{}` has {} items, more than the {limit} allowed",
                dotted(&pointer),
                instance.as_array().map_or(0, Vec::len)
            ),
            None,
        )),
        K::MinLength { limit } => diags.push(mk(
            pointer.clone(),
            doc.span_of(&pointer),
            format!(
                "{} is shorter than {limit} character{}",
                show(instance),
                if *limit == 1 { "" } else { "s" }
            ),
            None,
        )),
        K::MaxLength { limit } => diags.push(mk(
            pointer.clone(),
            doc.span_of(&pointer),
            format!("is longer than {limit} characters"),
            None,
        )),
        K::Pattern { pattern } => {
            let help = if pattern == crate::manifest::NAME_PATTERN {
                Some("names are 1 to 255 letters, digits, `-` or `_`".to_string())
            } else {
                None
            };
            diags.push(mk(
                pointer.clone(),
                doc.span_of(&pointer),
                format!("{} does not match the pattern `{pattern}`", show(instance)),
                help,
            ));
        }
        _ => diags.push(mk(
            pointer.clone(),
            doc.span_of(&pointer),
            e.to_string(),
            None,
        )),
    }
}

/// A pointer as people write paths: `spec.containerDefinitions[0]`.
pub fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for t in crate::pointer::tokens(pointer) {
        if t.parse::<usize>().is_ok() {
            out.push_str(&format!("[{t}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&t);
        }
    }
    out
}

/// A mapping of one entry where text was expected is usually a plain
/// value holding `: ` (`- echo "a: b"`), which YAML reads as a key and its
/// value: say so, with the value quoted as it should be written.
fn colon_in_plain_value(
    text: &str,
    doc: &Document,
    pointer: &str,
    m: &serde_json::Map<String, Value>,
) -> Option<String> {
    let (_, value) = m.iter().next().filter(|_| m.len() == 1)?;
    if value.is_array() || value.is_object() {
        return None;
    }
    let span = doc.span_of(pointer);
    // A collection's span may run to where the next token starts.
    let mut lines = text
        .get(span.offset..span.offset + span.len)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let written = lines.next().unwrap_or_default();
    if written.is_empty() || lines.next().is_some() {
        return Some(
            "a plain value holding `: ` is read as a key and its value: quote the whole value"
                .into(),
        );
    }
    Some(format!(
        "a plain value holding `: ` is read as a key and its value: quote the whole value, e.g. '{}'",
        written.replace('\'', "''")
    ))
}

fn article(t: &str) -> String {
    match t.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {t}"),
        _ => format!("a {t}"),
    }
}
