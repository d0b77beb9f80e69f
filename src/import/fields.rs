//! Reading input objects field by field, so that nothing is dropped
//! silently.
//!
//! A [`Fields`] owns the members of one JSON object. Mapping code *takes*
//! the members it understands; whatever is left at the end is reported by
//! [`Fields::finish`]. That makes "every input field is mapped or named in a
//! warning" hold by construction, including for fields added to the ECS API
//! after this code was written.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::report::{self, Ctx};

/// The not-yet-consumed members of one input object.
pub(crate) struct Fields {
    path: String,
    map: Map<String, Value>,
}

/// `null`, `[]`, `{}` and `""` say nothing in ECS JSON: the API and the
/// AWS CLI treat them as "not set" (describe output is full of them).
pub(crate) fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

impl Fields {
    pub fn new(map: Map<String, Value>, path: String) -> Self {
        Fields { path, map }
    }

    /// Read `v` as an object at `path`, or report a type error.
    pub fn of(ctx: &mut Ctx, path: String, v: Value) -> Option<Fields> {
        match v {
            Value::Object(map) => Some(Fields::new(map, path)),
            other => {
                type_error(ctx, &path, "an object", &other);
                None
            }
        }
    }

    /// JSON path of the object.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// JSON path of member `key`.
    pub fn at(&self, key: &str) -> String {
        report::key(&self.path, key)
    }

    /// Remove and return member `key`; empty values (see [`is_empty`])
    /// count as absent.
    pub fn take(&mut self, key: &str) -> Option<Value> {
        self.map.shift_remove(key).filter(|v| !is_empty(v))
    }

    /// Take member `key` and read it with `read` (one of the readers of
    /// this file), which reports a wrong type at the member's path.
    pub fn read<T>(
        &mut self,
        ctx: &mut Ctx,
        key: &str,
        read: impl FnOnce(&mut Ctx, &str, Value) -> Option<T>,
    ) -> Option<T> {
        let v = self.take(key)?;
        read(ctx, &self.at(key), v)
    }

    /// Take list member `key` and read it with `read`; absent is empty.
    pub fn list<T>(
        &mut self,
        ctx: &mut Ctx,
        key: &str,
        read: impl FnOnce(&mut Ctx, &str, Value) -> Vec<T>,
    ) -> Vec<T> {
        match self.take(key) {
            Some(v) => read(ctx, &self.at(key), v),
            None => Vec::new(),
        }
    }

    /// Take every member in `keys` that is present: their paths and values.
    pub fn take_all(&mut self, keys: &[&str]) -> Vec<(String, Value)> {
        keys.iter()
            .filter_map(|k| self.take(k).map(|v| (self.at(k), v)))
            .collect()
    }

    /// Report every member nobody took. `what` names the object for the
    /// message, e.g. "a container definition".
    pub fn finish(self, ctx: &mut Ctx, what: &str) {
        for (k, v) in self.map {
            if is_empty(&v) {
                continue;
            }
            ctx.warn(
                &report::key(&self.path, &k),
                format!("`{k}` is not a field reconcile supports in {what}; it was dropped"),
                "check the spelling against the Amazon ECS API; if the setting matters, configure its effect on the nodes yourself",
            );
        }
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn type_error(ctx: &mut Ctx, path: &str, expected: &str, found: &Value) {
    ctx.error(
        path,
        format!("expected {expected}, found {}", type_name(found)),
        None,
    );
}

/// A string field.
pub(crate) fn string(ctx: &mut Ctx, path: &str, v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        other => {
            type_error(ctx, path, "a string", &other);
            None
        }
    }
}

/// A string, or a number or boolean written where ECS wants a string
/// (environment values, labels, log options): its JSON text. ECS would
/// reject those; reading them as text is what the user meant.
pub(crate) fn text(ctx: &mut Ctx, path: &str, v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => {
            type_error(ctx, path, "a string", &other);
            None
        }
    }
}

pub(crate) fn boolean(ctx: &mut Ctx, path: &str, v: Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        other => {
            type_error(ctx, path, "true or false", &other);
            None
        }
    }
}

/// A whole number, possibly written as a string (`"30"`).
pub(crate) fn integer(ctx: &mut Ctx, path: &str, v: Value) -> Option<i64> {
    let n = match &v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    if n.is_none() {
        type_error(ctx, path, "a whole number", &v);
    }
    n
}

/// A whole number that cannot be negative.
pub(crate) fn count(ctx: &mut Ctx, path: &str, v: Value) -> Option<u64> {
    let n = integer(ctx, path, v)?;
    match u64::try_from(n) {
        Ok(n) => Some(n),
        Err(_) => {
            ctx.error(path, format!("{n} is negative; expected 0 or more"), None);
            None
        }
    }
}

pub(crate) fn array(ctx: &mut Ctx, path: &str, v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(a) => Some(a),
        other => {
            type_error(ctx, path, "a list", &other);
            None
        }
    }
}

/// A list of objects (`portMappings`, `ulimits`, ...): `each` gets every
/// object with its input index and path, in input order. A value that is
/// not a list, and items that are not objects, are reported and skipped.
pub(crate) fn each_object(
    ctx: &mut Ctx,
    path: &str,
    v: Value,
    mut each: impl FnMut(&mut Ctx, usize, &str, Fields),
) {
    let Some(items) = array(ctx, path, v) else {
        return;
    };
    for (i, item) in items.into_iter().enumerate() {
        let ip = report::index(path, i);
        if let Some(fields) = Fields::of(ctx, ip.clone(), item) {
            each(ctx, i, &ip, fields);
        }
    }
}

/// A list of strings (`command`, `dnsServers`, ...).
pub(crate) fn strings(ctx: &mut Ctx, path: &str, v: Value) -> Option<Vec<String>> {
    let items = array(ctx, path, v)?;
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.into_iter().enumerate() {
        match item {
            Value::String(s) => out.push(s),
            other => {
                type_error(ctx, &report::index(path, i), "a string", &other);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// An object of string values (`dockerLabels`, log `options`, ...).
pub(crate) fn string_map(ctx: &mut Ctx, path: &str, v: Value) -> Option<BTreeMap<String, String>> {
    let Value::Object(map) = v else {
        type_error(ctx, path, "an object", &v);
        return None;
    };
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (k, v) in map {
        if v.is_null() {
            continue;
        }
        match text(ctx, &report::key(path, &k), v) {
            Some(s) => {
                out.insert(k, s);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Render a value briefly for a message: strings as they are, anything
/// else as compact JSON cut at 80 characters.
pub(crate) fn show(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(77).collect::<String>())
    } else {
        s
    }
}
