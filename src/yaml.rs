//! YAML to JSON values, keeping a source span for every value and key.
//!
//! Built on saphyr's event parser rather than a tree loader so that the
//! hostile-input bounds live here, in one place: nesting depth, alias
//! expansion (alias bombs), duplicate keys and non-JSON scalars all become
//! diagnostics with a location instead of panics, stack overflows or
//! unbounded memory.

use std::collections::HashMap;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, ScanError};
use serde_json::{Map, Number, Value};

use crate::pointer;

/// Bounds applied while loading one file.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest nesting of sequences and mappings accepted.
    pub max_depth: usize,
    /// Most values a file may expand to, aliases included.
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_nodes: 1_000_000,
        }
    }
}

/// A location in a source file: byte range plus 1-based line and column
/// (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub offset: usize,
    pub len: usize,
    pub line: usize,
    pub column: usize,
}

/// Where a value sits in the file, and for mapping entries where its key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub value: Span,
    pub key: Option<Span>,
}

/// One YAML document as a JSON value plus the span of each of its values,
/// indexed by JSON pointer.
#[derive(Debug, Clone)]
pub struct Document {
    /// 0-based position of the document in its file.
    pub index: usize,
    pub value: Value,
    pub spans: HashMap<String, Located>,
    /// Span of the document's start.
    pub start: Span,
}

impl Document {
    /// Span of the value at `pointer`, or of its nearest located ancestor.
    pub fn span_of(&self, pointer: &str) -> Span {
        let mut p = pointer;
        loop {
            if let Some(l) = self.spans.get(p) {
                return l.value;
            }
            match pointer::parent(p) {
                Some(parent) => p = parent,
                None => return self.start,
            }
        }
    }

    /// Span of the key of the entry at `pointer` (falls back to the value).
    pub fn key_span_of(&self, pointer: &str) -> Span {
        match self.spans.get(pointer) {
            Some(Located { key: Some(k), .. }) => *k,
            _ => self.span_of(pointer),
        }
    }
}

/// A problem found while reading YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub message: String,
    pub span: Span,
    /// Another place the error involves (the first of two duplicate keys).
    pub related: Option<(String, Span)>,
    pub help: Option<String>,
    /// Pointer inside the document, when known.
    pub pointer: String,
}

/// Maps saphyr's character-based markers to byte offsets.
struct Locator<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
    /// The text starts with a byte-order mark the parser does not see:
    /// columns of line 1 are one character further right.
    bom: bool,
    /// Pure ASCII: a character index is a byte offset, no line walk needed.
    ascii: bool,
}

impl<'a> Locator<'a> {
    fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Locator {
            text,
            line_starts,
            bom: text.starts_with('\u{feff}'),
            ascii: text.is_ascii(),
        }
    }

    /// Span of the byte offset of 1-based `line` and 0-based char `col`.
    fn at(&self, line: usize, col: usize) -> Span {
        let col = if line == 1 && self.bom { col + 1 } else { col };
        let line = line.clamp(1, self.line_starts.len());
        let start = self.line_starts[line - 1];
        let rest = &self.text[start..];
        let offset = start
            + rest
                .char_indices()
                .nth(col)
                .map(|(i, _)| i)
                .unwrap_or(rest.len().min(rest.find('\n').unwrap_or(rest.len())));
        Span {
            offset,
            len: 0,
            line,
            column: col + 1,
        }
    }

    fn marker(&self, m: &Marker) -> Span {
        if self.ascii {
            // Line and column come from the offset, so they always agree
            // with it (the parser also counts `\r` as a line break).
            let offset = m.index().min(self.text.len());
            let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
            return Span {
                offset,
                len: 0,
                line,
                column: offset - self.line_starts[line - 1] + 1,
            };
        }
        self.at(m.line(), m.col())
    }

    fn range(&self, start: &Marker, end: &Marker) -> Span {
        let mut s = self.marker(start);
        let e = self.marker(end);
        s.len = e.offset.saturating_sub(s.offset);
        if s.len == 0 {
            // Point at one character so that renderers underline something.
            s.len = self.text[s.offset..].chars().next().map_or(0, |c| {
                if c == '\n' {
                    0
                } else {
                    c.len_utf8()
                }
            });
        }
        s
    }
}

/// Line and column of a byte offset in a text that may not be valid UTF-8.
pub fn locate_byte(bytes: &[u8], offset: usize) -> Span {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    Span {
        offset,
        len: 1,
        line,
        column,
    }
}

/// Keys of one mapping with their spans.
#[derive(Default)]
struct Keys {
    list: Vec<(String, Span)>,
    index: Option<HashMap<String, Span>>,
}

impl Keys {
    fn get(&self, k: &str) -> Option<Span> {
        match &self.index {
            Some(m) => m.get(k).copied(),
            None => self.list.iter().find(|(x, _)| x == k).map(|(_, s)| *s),
        }
    }

    fn insert(&mut self, k: String, span: Span) {
        if let Some(m) = &mut self.index {
            m.insert(k, span);
            return;
        }
        self.list.push((k, span));
        if self.list.len() > 32 {
            self.index = Some(std::mem::take(&mut self.list).into_iter().collect());
        }
    }
}

enum Frame {
    Seq {
        items: Vec<Value>,
        pointer: String,
        anchor: usize,
        start: Span,
    },
    Map {
        entries: Map<String, Value>,
        pointer: String,
        anchor: usize,
        start: Span,
        /// Key waiting for its value, with the key's span.
        key: Option<(String, Span)>,
        /// Keys seen so far, for duplicate detection. Manifests' mappings
        /// are small, so a list is searched; large ones get an index.
        key_spans: Keys,
    },
}

/// A finished value and the number of nodes it holds (for alias budgets).
struct Anchored {
    value: Value,
    nodes: usize,
}

struct Builder<'a> {
    loc: &'a Locator<'a>,
    limits: Limits,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Anchored>,
    /// Nodes produced so far in this file, alias expansions included.
    nodes: usize,
    spans: HashMap<String, Located>,
    /// Nesting below the depth limit or below an unsupported key: events
    /// inside are counted but not built.
    skip_depth: usize,
    root: Option<Value>,
    errors: Vec<YamlError>,
    /// Set when the document cannot be built any further.
    abandoned: bool,
}

impl<'a> Builder<'a> {
    fn new(loc: &'a Locator<'a>, limits: Limits, nodes: usize) -> Self {
        Builder {
            loc,
            limits,
            stack: Vec::new(),
            anchors: HashMap::new(),
            nodes,
            spans: HashMap::new(),
            skip_depth: 0,
            root: None,
            errors: Vec::new(),
            abandoned: false,
        }
    }

    fn error(&mut self, message: String, span: Span, pointer: String, help: Option<String>) {
        self.errors.push(YamlError {
            message,
            span,
            related: None,
            help,
            pointer,
        });
    }

    /// Pointer the next value will have, or None when it is a mapping key.
    fn next_pointer(&self) -> Option<String> {
        match self.stack.last() {
            None => Some(String::new()),
            Some(Frame::Seq { items, pointer, .. }) => {
                Some(pointer::push(pointer, &items.len().to_string()))
            }
            Some(Frame::Map {
                key: Some((k, _)),
                pointer,
                ..
            }) => Some(pointer::push(pointer, k)),
            Some(Frame::Map { key: None, .. }) => None,
        }
    }

    fn count_node(&mut self, n: usize, span: Span) -> bool {
        self.nodes += n;
        if self.nodes > self.limits.max_nodes {
            let pointer = self.next_pointer().unwrap_or_default();
            self.error(
                format!(
                    "document expands to more than {} values; aliases that expand this much are refused",
                    self.limits.max_nodes
                ),
                span,
                pointer,
                Some("check for aliases (`*name`) that refer to large anchored collections".into()),
            );
            self.abandoned = true;
            return false;
        }
        true
    }

    /// Place a finished value into its parent (or make it the root).
    fn attach(&mut self, value: Value, nodes: usize, anchor: usize, span: Span) {
        if anchor != 0 {
            self.anchors.insert(
                anchor,
                Anchored {
                    value: value.clone(),
                    nodes,
                },
            );
        }
        let key_span = match self.stack.last() {
            Some(Frame::Map {
                key: Some((_, ks)), ..
            }) => Some(*ks),
            _ => None,
        };
        if let Some(p) = self.next_pointer() {
            self.spans.entry(p).or_insert(Located {
                value: span,
                key: key_span,
            });
        }
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map { entries, key, .. }) => {
                if let Some((k, _)) = key.take() {
                    entries.insert(k, value);
                }
            }
        }
    }

    /// A scalar or alias arriving where a mapping key is expected.
    fn take_key(&mut self, text: String, span: Span) {
        let Some(Frame::Map {
            key,
            key_spans,
            pointer,
            ..
        }) = self.stack.last_mut()
        else {
            return;
        };
        if let Some(first) = key_spans.get(&text) {
            self.errors.push(YamlError {
                message: format!("duplicate key `{text}`"),
                span,
                related: Some(("first defined here".into(), first)),
                help: Some("remove one of the two entries".into()),
                pointer: pointer::push(pointer, &text),
            });
            // Keep the first value; the second is read but dropped.
            *key = Some((format!("\u{0}dup:{text}"), span));
            return;
        }
        key_spans.insert(text.clone(), span);
        *key = Some((text, span));
    }

    fn handle(&mut self, event: Event<'_>, start: &Marker, end: &Marker) {
        if self.abandoned {
            return;
        }
        let span = self.loc.range(start, end);
        if self.skip_depth > 0 {
            match event {
                Event::SequenceStart(..) | Event::MappingStart(..) => self.skip_depth += 1,
                Event::SequenceEnd | Event::MappingEnd => self.skip_depth -= 1,
                _ => {}
            }
            return;
        }
        let expecting_key = matches!(self.stack.last(), Some(Frame::Map { key: None, .. }));
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let value = match scalar(&text, style, tag.as_deref().map(|t| t.suffix.as_str())) {
                    Ok(v) => v,
                    Err(message) => {
                        let p = self.next_pointer().unwrap_or_default();
                        self.error(message, span, p, None);
                        Value::Null
                    }
                };
                if expecting_key {
                    let key = match value {
                        Value::String(s) => s,
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    self.take_key(key, span);
                    return;
                }
                if !self.count_node(1, span) {
                    return;
                }
                self.attach(value, 1, anchor, span);
            }
            Event::Alias(id) => {
                let Some(found) = self.anchors.get(&id) else {
                    let p = self.next_pointer().unwrap_or_default();
                    self.error("alias to an unknown anchor".into(), span, p, None);
                    return;
                };
                if expecting_key {
                    let key = match &found.value {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    self.take_key(key, span);
                    return;
                }
                let nodes = found.nodes;
                let fits = self.nodes + nodes <= self.limits.max_nodes;
                // Clone only once the budget allows it: that is the bound.
                let value = if fits {
                    found.value.clone()
                } else {
                    Value::Null
                };
                if !self.count_node(nodes, span) {
                    return;
                }
                self.attach(value, nodes, 0, span);
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                let is_map = matches!(event, Event::MappingStart(..));
                let core = if is_map { "map" } else { "seq" };
                if let Some(t) = tag.as_deref().filter(|t| t.suffix != core) {
                    let p = self.next_pointer().unwrap_or_default();
                    self.error(
                        format!(
                            "unsupported YAML tag `{}{}`; manifests use plain values",
                            t.handle, t.suffix
                        ),
                        span,
                        p,
                        None,
                    );
                }
                if expecting_key {
                    let p = self
                        .next_pointer()
                        .unwrap_or_else(|| match self.stack.last() {
                            Some(Frame::Map { pointer, .. }) => pointer.clone(),
                            _ => String::new(),
                        });
                    self.error(
                        "mapping keys must be plain values, not sequences or mappings".into(),
                        span,
                        p,
                        None,
                    );
                    self.abandoned = true;
                    return;
                }
                if self.stack.len() >= self.limits.max_depth {
                    let p = self.next_pointer().unwrap_or_default();
                    self.error(
                        format!(
                            "nesting is deeper than {} levels; manifests never need this much",
                            self.limits.max_depth
                        ),
                        span,
                        p,
                        None,
                    );
                    self.abandoned = true;
                    return;
                }
                if !self.count_node(1, span) {
                    return;
                }
                let pointer = self.next_pointer().unwrap_or_default();
                self.stack.push(if is_map {
                    Frame::Map {
                        entries: Map::new(),
                        pointer,
                        anchor,
                        start: span,
                        key: None,
                        key_spans: Keys::default(),
                    }
                } else {
                    Frame::Seq {
                        items: Vec::new(),
                        pointer,
                        anchor,
                        start: span,
                    }
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return;
                };
                let (mut value, anchor, start, pointer) = match frame {
                    Frame::Seq {
                        items,
                        anchor,
                        start,
                        pointer,
                    } => (Value::Array(items), anchor, start, pointer),
                    Frame::Map {
                        entries,
                        anchor,
                        start,
                        pointer,
                        ..
                    } => (Value::Object(entries), anchor, start, pointer),
                };
                if let Value::Object(m) = &mut value {
                    m.retain(|k, _| !k.starts_with("\u{0}dup:"));
                }
                let full = Span {
                    len: span.offset.saturating_sub(start.offset).max(start.len),
                    ..start
                };
                // Only anchored values need their size (for alias budgets).
                let nodes = if anchor != 0 { count_nodes(&value) } else { 0 };
                let key = self.spans.get(&pointer).and_then(|l| l.key);
                self.spans.remove(&pointer);
                self.attach(value, nodes, anchor, full);
                // attach() records the span of the pointer the parent
                // expects, which is this collection's own pointer.
                if let Some(l) = self.spans.get_mut(&pointer) {
                    l.key = l.key.or(key);
                }
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd => {}
        }
    }
}

fn count_nodes(v: &Value) -> usize {
    // Alias budgets only need an estimate of the anchored subtree's size;
    // compute it iteratively so deep values cannot overflow the stack.
    let mut n = 0;
    let mut todo = vec![v];
    while let Some(v) = todo.pop() {
        n += 1;
        match v {
            Value::Array(a) => todo.extend(a.iter()),
            Value::Object(m) => todo.extend(m.values()),
            _ => {}
        }
    }
    n
}

/// Resolve a scalar with the YAML 1.2 core schema. A core tag (`!!str`,
/// `!!int`, ...) forces its type whatever the quoting; other tags are
/// refused rather than silently ignored.
fn scalar(text: &str, style: ScalarStyle, tag: Option<&str>) -> Result<Value, String> {
    let plain = style == ScalarStyle::Plain;
    let resolved = |t: &str| -> Result<Value, String> {
        Ok(match t {
            "" | "~" | "null" | "Null" | "NULL" => Value::Null,
            "true" | "True" | "TRUE" => Value::Bool(true),
            "false" | "False" | "FALSE" => Value::Bool(false),
            ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf"
            | "-.INF" | ".nan" | ".NaN" | ".NAN" => {
                return Err(format!(
                    "`{t}` is not a number JSON can hold; quote it if it is meant as text"
                ))
            }
            _ => match number(t)? {
                Some(n) => Value::Number(n),
                None => Value::String(t.to_string()),
            },
        })
    };
    match tag {
        None if plain => resolved(text),
        None => Ok(Value::String(text.to_string())),
        Some("str") => Ok(Value::String(text.to_string())),
        Some(t @ ("null" | "bool" | "int" | "float")) => {
            let v = resolved(text)?;
            let ok = match (t, &v) {
                ("null", Value::Null) | ("bool", Value::Bool(_)) => true,
                ("int", Value::Number(n)) => n.is_i64() || n.is_u64(),
                ("float", Value::Number(_)) => true,
                _ => false,
            };
            if ok {
                Ok(v)
            } else {
                Err(format!("`{text}` is not a valid `!!{t}` value"))
            }
        }
        Some(other) => Err(format!(
            "unsupported YAML tag `!{other}`; manifests use plain values"
        )),
    }
}

/// A YAML 1.2 core-schema number, or None when `t` is not one. Integral
/// floats (`3.0`, `1e3`) become integers: JSON Schema counts them as
/// integers, and so must the typed pass.
fn number(t: &str) -> Result<Option<Number>, String> {
    let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    let too_big = || format!("`{t}` is too large a number");
    if let Some(hex) = t.strip_prefix("0x") {
        if !digits(hex, 16) {
            return Ok(None);
        }
        return u64::from_str_radix(hex, 16)
            .map(|n| Some(Number::from(n)))
            .map_err(|_| too_big());
    }
    if let Some(oct) = t.strip_prefix("0o") {
        if !digits(oct, 8) {
            return Ok(None);
        }
        return u64::from_str_radix(oct, 8)
            .map(|n| Some(Number::from(n)))
            .map_err(|_| too_big());
    }
    let unsigned = t.strip_prefix(['-', '+']).unwrap_or(t);
    if digits(unsigned, 10) {
        if let Ok(i) = t.parse::<i64>() {
            return Ok(Some(Number::from(i)));
        }
        if let Ok(u) = t.trim_start_matches('+').parse::<u64>() {
            return Ok(Some(Number::from(u)));
        }
        return Err(too_big());
    }
    // [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
    let (mantissa, exp) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((i, f)) => {
            (digits(i, 10) || i.is_empty())
                && (f.is_empty() || digits(f, 10))
                && !(i.is_empty() && f.is_empty())
        }
        None => exp.is_some() && digits(mantissa, 10),
    };
    let exp_ok = exp.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e), 10));
    if !(mantissa_ok && exp_ok) {
        return Ok(None);
    }
    let f: f64 = t.parse().map_err(|_| too_big())?;
    if !f.is_finite() {
        return Err(too_big());
    }
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        return Ok(Some(Number::from(f as i64)));
    }
    Ok(Number::from_f64(f))
}

/// Result of loading one file.
#[derive(Debug, Default)]
pub struct Loaded {
    pub documents: Vec<Document>,
    pub errors: Vec<(usize, YamlError)>,
}

/// Parse every document of `text`. Errors carry the index of the document
/// they belong to; a syntax error ends the file, as YAML cannot resync.
pub fn load(text: &str, limits: Limits) -> Loaded {
    let loc = Locator::new(text);
    let mut out = Loaded::default();
    let mut parser = Parser::new_from_str(text.strip_prefix('\u{feff}').unwrap_or(text));
    let mut builder: Option<Builder> = None;
    let mut doc_index = 0usize;
    let mut doc_start = Span::default();
    let mut nodes = 0usize;
    loop {
        let next = parser.next_event();
        let Some(next) = next else { break };
        let (event, span) = match next {
            Ok(e) => e,
            Err(e) => {
                let mut reported_depth = false;
                if let Some(b) = builder.take() {
                    reported_depth = b.abandoned;
                    out.errors
                        .extend(b.errors.into_iter().map(|e| (doc_index, e)));
                }
                // The parser's own recursion guard fires after ours; one
                // message about the same nesting is enough.
                if !(reported_depth && e.info().contains("recursion limit")) {
                    out.errors.push((doc_index, scan_error(&loc, &e)));
                }
                break;
            }
        };
        match event {
            Event::DocumentStart(_) => {
                doc_start = loc.marker(&span.start);
                builder = Some(Builder::new(&loc, limits, nodes));
            }
            Event::DocumentEnd => {
                if let Some(b) = builder.take() {
                    nodes = b.nodes;
                    let empty = b.root.as_ref().is_none_or(Value::is_null) && b.errors.is_empty();
                    out.errors
                        .extend(b.errors.into_iter().map(|e| (doc_index, e)));
                    if !empty {
                        if !b.abandoned {
                            if let Some(value) = b.root {
                                out.documents.push(Document {
                                    index: doc_index,
                                    value,
                                    spans: b.spans,
                                    start: doc_start,
                                });
                            }
                        }
                        doc_index += 1;
                    }
                    if b.abandoned && nodes > limits.max_nodes {
                        break;
                    }
                }
            }
            Event::StreamEnd => break,
            other => {
                if let Some(b) = builder.as_mut() {
                    b.handle(other, &span.start, &span.end);
                }
            }
        }
    }
    out
}

fn scan_error(loc: &Locator, e: &ScanError) -> YamlError {
    let mut span = loc.marker(e.marker());
    let info = e.info();
    let tab = tab_near(loc, span.offset, info.contains("tab"));
    if let Some(offset) = tab {
        // The parser reports some tabs at the end of the line before them
        // (while still reading the previous value): point at the tab.
        let (line, column) = line_column(loc, offset);
        span = Span {
            offset,
            len: 1,
            line,
            column,
        };
    } else {
        span.len = loc.text[span.offset..]
            .chars()
            .next()
            .map_or(0, char::len_utf8);
    }
    if info.contains("recursion limit") {
        return YamlError {
            message: "nesting is too deep for the YAML parser; manifests never need this much"
                .to_string(),
            span,
            related: None,
            help: None,
            pointer: String::new(),
        };
    }
    let (message, help) = match tab {
        Some(_) => (
            format!(
                "a tab at line {}, column {}: YAML does not allow tabs for indentation",
                span.line, span.column
            ),
            "indent with spaces".to_string(),
        ),
        None => match syntax_in_words(info) {
            Some((words, help)) => (words.to_string(), help.to_string()),
            None => (info.to_string(), String::new()),
        },
    };
    // The parser's own words stay at the end of the help, for searching.
    let help = if help.is_empty() {
        None
    } else {
        Some(format!("{help} (parser: {info})"))
    };
    YamlError {
        message: format!("YAML syntax error: {message}"),
        span,
        related: None,
        help,
        pointer: String::new(),
    }
}

/// Line and 1-based character column of a byte offset.
fn line_column(loc: &Locator, offset: usize) -> (usize, usize) {
    let line = loc.line_starts.partition_point(|&s| s <= offset).max(1);
    let start = loc.line_starts[line - 1];
    (line, loc.text[start..offset].chars().count() + 1)
}

/// The tab an error at `offset` is about: the character there, one in
/// the indentation of its line, or, when the parser names a tab, the
/// first one after it on this line or the next.
fn tab_near(loc: &Locator, offset: usize, mentions_tab: bool) -> Option<usize> {
    let rest = &loc.text[offset..];
    if rest.starts_with('\t') {
        return Some(offset);
    }
    // A tab inside the indentation of the line the error is on.
    let start = loc.line_starts[loc.line_starts.partition_point(|&s| s <= offset).max(1) - 1];
    let line = loc.text[start..].split('\n').next().unwrap_or("");
    let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
    if let Some(i) = line[..indent].find('\t') {
        return Some(start + i);
    }
    if !mentions_tab {
        return None;
    }
    // The rest of this line and the next one: the parser may still be on
    // the previous value when it meets the tab.
    let reach = rest
        .match_indices('\n')
        .nth(1)
        .map_or(rest.len(), |(i, _)| i);
    rest[..reach].find('\t').map(|i| offset + i)
}

/// The parser's messages for the usual mistakes, in the words of someone
/// editing a manifest, with what to do. Most come from indentation.
fn syntax_in_words(info: &str) -> Option<(&'static str, &'static str)> {
    const INDENT: &str = "keys of one mapping start in the same column, and a nested value is indented further than its key; check the indentation of this line and the one above";
    let table: [(&str, &str, &str); 14] = [
        (
            "did not find expected key",
            "this line is not indented like the other keys of its mapping",
            INDENT,
        ),
        (
            "did not find expected '-' indicator",
            "this line is not indented like the list items above it",
            "items of one list each start with `- ` in the same column; check the indentation of this line",
        ),
        (
            "mapping values are not allowed in this context",
            "a `:` where no key can start: either this line is indented further than the keys beside it, or a value holds `: `",
            "align the key with the keys beside it, or quote the value if the `: ` belongs to it",
        ),
        (
            "block sequence entries are not allowed in this context",
            "a `- ` list item where it cannot start",
            "start a list on the line after its key, indented under it, with no value after the key's `:`",
        ),
        (
            "did not find expected node content",
            "a value is missing here",
            "write a value, or quote it if it starts with a character YAML reserves (`@`, `` ` ``, `%`, `*`, `&`, `!`, `|`, `>`)",
        ),
        (
            "expected ',' or ']'",
            "this `[ ... ]` list is not closed where it should be: expected `,` or `]`",
            "separate items with `,` and close the list with `]`; quote items that hold `[`, `]`, `{`, `}` or `,`",
        ),
        (
            "expected ',' or '}'",
            "this `{ ... }` mapping is not closed where it should be: expected `,` or `}`",
            "separate entries with `,` and close the mapping with `}`; quote values that hold `[`, `]`, `{`, `}` or `,`",
        ),
        (
            "quoted scalar, found unexpected end of stream",
            "a quoted value is never closed",
            "add the closing quote",
        ),
        (
            "quoted scalar, found unknown escape character",
            "an unknown escape (`\\`) in a double-quoted value",
            "in double quotes a backslash starts an escape: write `\\\\` for one, or use single quotes",
        ),
        (
            "illegal placement of ':' indicator",
            "a `:` where it cannot be: is a `[ ... ]` or `{ ... }` above left open?",
            "close a flow list with `]` and a flow mapping with `}`, or quote a value that holds `:`",
        ),
        (
            "simple key expect ':'",
            "a key without its `:`",
            "write `key: value`, with a space after the `:`",
        ),
        (
            "invalid indentation in quoted scalar",
            "a quoted value runs on to the next line: is its closing quote missing?",
            "close the quote on the same line, or indent the lines it continues on further than its key",
        ),
        (
            "invalid indentation",
            "this line's indentation does not fit where it is",
            INDENT,
        ),
        (
            "while scanning an alias",
            "an `*` or `&` that is not an alias or anchor",
            "quote the value if the `*` or `&` is part of its text",
        ),
    ];
    table
        .iter()
        .find(|(raw, _, _)| info.contains(raw))
        .map(|(_, words, help)| (*words, *help))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Document {
        let l = load(text, Limits::default());
        assert!(l.errors.is_empty(), "{:?}", l.errors);
        assert_eq!(l.documents.len(), 1);
        l.documents.into_iter().next().unwrap()
    }

    #[test]
    fn values_and_spans() {
        let d = one("a: 1\nb:\n  - x\n  - 'y'\n  - 2.5\nc: {d: true, e: ~}\n");
        assert_eq!(
            d.value,
            serde_json::json!({"a": 1, "b": ["x", "y", 2.5], "c": {"d": true, "e": null}})
        );
        let s = d.spans["/b/1"].value;
        assert_eq!((s.line, s.column), (4, 5));
        let k = d.spans["/c/d"].key.unwrap();
        assert_eq!((k.line, k.column), (6, 5));
        assert_eq!(d.spans["/a"].key.unwrap().column, 1);
        let b = d.spans["/b"];
        assert_eq!(b.key.unwrap().line, 2);
    }

    #[test]
    fn yaml_1_2_scalars() {
        let d = one(
            "a: yes\nb: 0x1F\nc: 0o17\nd: '1'\ne: 1e3\nf: .5\ng: 12345678901234567890\nh: -7\n",
        );
        assert_eq!(
            d.value,
            serde_json::json!({"a": "yes", "b": 31, "c": 15, "d": "1", "e": 1000, "f": 0.5, "g": 12345678901234567890u64, "h": -7})
        );
    }

    #[test]
    fn multibyte_columns_are_characters_and_offsets_bytes() {
        let text = "é: ü\nk: v\n";
        let d = one(text);
        let s = d.spans["/é"].value;
        assert_eq!((s.line, s.column), (1, 4));
        assert_eq!(&text[s.offset..s.offset + s.len], "ü");
    }

    #[test]
    fn duplicate_keys_point_at_both() {
        let l = load("a: 1\nb: 2\na: 3\n", Limits::default());
        assert_eq!(l.errors.len(), 1);
        let e = &l.errors[0].1;
        assert_eq!(e.message, "duplicate key `a`");
        assert_eq!(e.span.line, 3);
        assert_eq!(e.related.as_ref().unwrap().1.line, 1);
    }

    #[test]
    fn multiple_documents_and_empty_ones() {
        let l = load("---\na: 1\n---\n---\nb: 2\n...\n", Limits::default());
        assert!(l.errors.is_empty());
        assert_eq!(l.documents.len(), 2);
        assert_eq!(l.documents[1].index, 1);
        assert_eq!(l.documents[1].spans["/b"].value.line, 5);
    }

    #[test]
    fn alias_bomb_is_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let l = load(&text, Limits::default());
        assert!(l.documents.is_empty());
        assert!(l.errors[0].1.message.contains("expands to more than"));
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let text = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
        let l = load(&text, Limits::default());
        assert!(l.documents.is_empty());
        assert!(
            l.errors[0].1.message.contains("nesting is"),
            "{:?}",
            l.errors
        );
        // Block-style nesting goes through our own limit.
        let mut text = String::new();
        for i in 0..200 {
            text.push_str(&" ".repeat(i));
            text.push_str("k:\n");
        }
        let l = load(&text, Limits::default());
        assert!(
            l.errors[0].1.message.contains("deeper than 64"),
            "{:?}",
            l.errors
        );
    }

    #[test]
    fn tabs_get_a_hint() {
        let l = load("a:\n\tb: 1\n", Limits::default());
        let e = &l.errors[0].1;
        assert!(e.message.starts_with("YAML syntax error"), "{e:?}");
        assert_eq!(e.span.line, 2);
        assert!(e.help.as_deref().unwrap().contains("tabs"));
    }

    #[test]
    fn a_tab_is_reported_on_its_own_line() {
        // The parser meets this tab while still reading `x` on line 4.
        let text = "kind: Cluster\nmetadata:\n  name: x\n\tlabels: {}\n";
        let e = &load(text, Limits::default()).errors[0].1;
        assert_eq!((e.span.line, e.span.column, e.span.len), (4, 1, 1), "{e:?}");
        assert_eq!(&text[e.span.offset..e.span.offset + 1], "\t");
        assert!(e.message.contains("a tab at line 4, column 1"), "{e:?}");
        assert!(e.help.as_deref().unwrap().starts_with("indent with spaces"));
    }

    #[test]
    fn parser_messages_are_put_in_words_with_indentation_help() {
        for (text, line, words) in [
            (
                "metadata:\n  name: x\n labels: {}\n",
                3,
                "not indented like the other keys",
            ),
            (
                "metadata:\n  name: x\n   labels: {}\n",
                3,
                "indented further than the keys beside it",
            ),
            ("a: [1, 2\nb: 3\n", 2, "left open"),
            ("a: [1, 2 x\n", 2, "list is not closed"),
            ("a: \"open\nb: 3\n", 1, "closing quote missing"),
            ("a: \"open\n", 1, "never closed"),
        ] {
            let e = &load(text, Limits::default()).errors[0].1;
            assert_eq!(e.span.line, line, "{text:?}: {e:?}");
            assert!(e.message.contains(words), "{text:?}: {e:?}");
            assert!(!e.message.contains("did not find expected"), "{e:?}");
            // The parser's own words stay in the help, for searching.
            assert!(e.help.as_deref().unwrap().contains("(parser: "), "{e:?}");
        }
    }

    #[test]
    fn non_json_numbers_are_errors() {
        let l = load("a: .nan\n", Limits::default());
        assert!(l.errors[0].1.message.contains("not a number"));
        let l = load("a: 1e400\n", Limits::default());
        assert!(l.errors[0].1.message.contains("too large"));
    }

    #[test]
    fn byte_order_mark_is_skipped_and_columns_stay_right() {
        let d = one("\u{feff}a: 1\nb: x\n");
        assert_eq!(d.value, serde_json::json!({"a": 1, "b": "x"}));
        let s = d.spans["/a"].value;
        assert_eq!((s.line, s.column, s.offset), (1, 5, 6));
    }

    #[test]
    fn tags_force_types_or_are_refused() {
        let d = one("a: !!int \"5\"\nb: !!str 5\nc: 3.0\nd: 1e3\ne: !!map {x: 1}\n");
        assert_eq!(
            d.value,
            serde_json::json!({"a": 5, "b": "5", "c": 3, "d": 1000, "e": {"x": 1}})
        );
        for bad in [
            "a: !!bool yes\n",
            "a: !custom {x: 1}\n",
            "a: !!set {x: ~}\n",
            "a: !!binary aGk=\n",
        ] {
            let l = load(bad, Limits::default());
            assert_eq!(l.errors.len(), 1, "{bad}: {:?}", l.errors);
        }
    }
}
