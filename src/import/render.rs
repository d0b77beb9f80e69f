//! Writing manifests as YAML.
//!
//! The typed model fixes the field order (apiVersion, kind, metadata, spec;
//! inside a container name, image, essential, cpu, memory, ...), which is
//! the order ECS documents them in. Serialising the model writes every
//! defaulted field (`privileged: false`, `stopTimeout: 30`, ...); the import
//! removes those the input did not set ([`Defaults`]), so the manifest says
//! what the ECS JSON said and no more.
//!
//! The emitter is small and deliberate rather than a generic serializer:
//! it quotes every string a YAML 1.1 or 1.2 reader could take for something
//! else (`on`, `yes`, `1000`, `0x10`, ...), and writes short lists and
//! list items of scalars in flow style (`- {name: MODE, value: prod}`), as
//! the project's examples do.

use serde_json::Value;

/// Defaulted fields to remove from a serialised spec: JSON pointer (below
/// `spec`) and the default value. A field is removed only while it still
/// holds its default, so a later fix that changes it keeps it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Defaults(Vec<(String, Value)>);

impl Defaults {
    pub fn add(&mut self, pointer: impl Into<String>, default: Value) {
        self.0.push((pointer.into(), default));
    }

    /// Forget the entries of item `k` of the list at `list` and renumber
    /// the later items, after the item was removed from the spec.
    pub fn remove_item(&mut self, list: &str, k: usize) {
        let prefix = format!("{list}/");
        self.0.retain_mut(|(p, _)| {
            let Some(rest) = p.strip_prefix(&prefix) else {
                return true;
            };
            let (idx, tail) = rest.split_once('/').map_or((rest, ""), |(i, t)| (i, t));
            match idx.parse::<usize>() {
                Ok(i) if i == k => false,
                Ok(i) if i > k => {
                    *p = if tail.is_empty() {
                        format!("{prefix}{}", i - 1)
                    } else {
                        format!("{prefix}{}/{tail}", i - 1)
                    };
                    true
                }
                _ => true,
            }
        });
    }

    /// Remove the recorded fields from `spec`, deepest first; an object
    /// left empty by the removals is removed too when it was recorded.
    pub fn prune(&self, spec: &mut Value) {
        let mut items: Vec<&(String, Value)> = self.0.iter().collect();
        items.sort_by_key(|(p, _)| std::cmp::Reverse(p.matches('/').count()));
        for (pointer, default) in items {
            let Some((parent, key)) = pointer.rsplit_once('/') else {
                continue;
            };
            let remove = spec.pointer(pointer).is_some_and(|v| {
                v == default || v.as_object().is_some_and(serde_json::Map::is_empty)
            });
            if remove {
                if let Some(obj) = spec.pointer_mut(parent).and_then(Value::as_object_mut) {
                    obj.shift_remove(key);
                }
            }
        }
    }
}

/// Widest line written in flow style.
const FLOW_WIDTH: usize = 100;

/// `value` as a YAML document (block style, no `---`).
pub(crate) fn yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0, None),
        scalar => {
            out.push_str(&flow(scalar));
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn write_map(out: &mut String, map: &serde_json::Map<String, Value>, level: usize) {
    for (k, v) in map {
        indent(out, level);
        out.push_str(&scalar_string(k, false));
        out.push(':');
        write_value(out, v, level, k.len() + level + 2, Some(k));
    }
}

/// Lists whose items are always written in block style: a container is
/// a unit a reader scans line by line, however few fields it has.
const BLOCK_ITEMS: &[&str] = &["containerDefinitions"];

fn write_seq(out: &mut String, items: &[Value], level: usize, key: Option<&str>) {
    let block = key.is_some_and(|k| BLOCK_ITEMS.contains(&k));
    for item in items {
        indent(out, level);
        out.push('-');
        match item {
            Value::Object(map) if !map.is_empty() => {
                let line = flow(item);
                if !block && is_flat(item) && level + 2 + line.len() <= FLOW_WIDTH {
                    out.push(' ');
                    out.push_str(&line);
                    out.push('\n');
                } else {
                    // First member on the dash line, the rest below it.
                    out.push(' ');
                    let mut first = true;
                    for (k, v) in map {
                        if !first {
                            indent(out, level + 2);
                        }
                        first = false;
                        out.push_str(&scalar_string(k, false));
                        out.push(':');
                        write_value(out, v, level + 2, level + 4 + k.len(), Some(k));
                    }
                }
            }
            other => write_value(out, other, level, level + 2, None),
        }
    }
}

/// Write the value of a key or list item whose text so far is `used`
/// columns wide.
fn write_value(out: &mut String, v: &Value, level: usize, used: usize, key: Option<&str>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_map(out, map, level + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            let line = flow(v);
            if items.iter().all(is_scalar) && used + 1 + line.len() <= FLOW_WIDTH {
                out.push(' ');
                out.push_str(&line);
                out.push('\n');
            } else {
                out.push('\n');
                write_seq(out, items, level + 2, key);
            }
        }
        Value::String(s) => {
            out.push(' ');
            out.push_str(&scalar_string(s, false));
            out.push('\n');
        }
        other => {
            out.push(' ');
            out.push_str(&flow(other));
            out.push('\n');
        }
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

/// An object whose members are scalars or short lists of scalars.
fn is_flat(v: &Value) -> bool {
    match v {
        Value::Object(map) => map.values().all(|m| match m {
            Value::Array(a) => a.iter().all(is_scalar),
            Value::Object(o) => o.is_empty(),
            _ => true,
        }),
        _ => false,
    }
}

/// A value in flow style.
fn flow(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar_string(s, true),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(flow).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Object(map) => {
            let parts: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", scalar_string(k, true), flow(v)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
    }
}

/// A string, plain when no YAML reader could misread it, else double
/// quoted (a JSON string literal is a valid YAML double-quoted scalar).
fn scalar_string(s: &str, in_flow: bool) -> String {
    if is_plain_safe(s, in_flow) {
        s.to_string()
    } else {
        Value::from(s).to_string()
    }
}

fn is_plain_safe(s: &str, in_flow: bool) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if s.trim() != s || s.len() > 200 {
        return false;
    }
    // Indicators that change the meaning of a plain scalar's first char.
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        // `-x` and `:x` are fine in YAML 1.2 but some readers disagree;
        // quoting them costs nothing.
        return false;
    }
    // Anything that might be a number, date or time in YAML 1.1 or 1.2.
    if first.is_ascii_digit() || ((first == '+' || first == '.') && s.len() > 1) {
        return false;
    }
    const RESERVED: &[&str] = &[
        "null", "~", "true", "false", "yes", "no", "on", "off", "y", "n", ".inf", ".nan", "<<",
    ];
    if RESERVED.iter().any(|r| s.eq_ignore_ascii_case(r)) {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') {
        return false;
    }
    // In flow collections, commas and brackets end a plain scalar and some
    // readers stumble on colons; spaces do no harm, but a quoted
    // `"curl -f http://x || exit 1"` reads as one item where a bare one
    // looks like several.
    if in_flow && s.contains([',', '[', ']', '{', '}', ' ', ':']) {
        return false;
    }
    s.chars()
        .all(|c| !c.is_control() && c != '\u{feff}' && c != '\t')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_back_as_the_same_value() {
        let v = json!({
            "apiVersion": "reconcile/v1alpha1",
            "metadata": {"name": "web", "labels": {"on": "yes", "a b": "1000", "x": "0x10", "t": "~"}},
            "spec": {
                "cpu": 1024,
                "list": ["CMD-SHELL", "curl -f http://localhost/ || exit 1"],
                "weird": ["- a", ": b", "#c", "a: b", "a #b", "[x]", "{y}", "a,b", "", " pad ", "tab\there", "multi\nline", "ünï", "'q'", "\"dq\"", "null", "NO", "1e3", ".5", "+1", "-1", "12:30", "2024-01-01", "@at", "`tick", "%p", "!tag", "&anchor", "*alias", "|", ">", "?"],
                "containers": [
                    {"name": "web", "image": "nginx:1.25", "env": [{"name": "A", "value": ""}, {"name": "B", "value": "on"}]},
                    {"name": "long", "command": ["sh", "-c", "x".repeat(120)]}
                ],
                "empty": {"list": [], "map": {}},
                "nested": [[1, 2], [{"a": 1}]]
            }
        });
        let text = yaml(&v);
        let back: Value = yaml_serde::from_str(&text).unwrap();
        assert_eq!(back, v, "{text}");
    }

    #[test]
    fn short_items_are_flow_style() {
        let v = json!({"environment": [{"name": "MODE", "value": "prod"}], "command": ["sh", "-c", "echo hi"]});
        assert_eq!(
            yaml(&v),
            "environment:\n  - {name: MODE, value: prod}\ncommand: [sh, \"-c\", \"echo hi\"]\n"
        );
    }

    #[test]
    fn containers_are_block_style_however_small() {
        let v = json!({"containerDefinitions": [{"name": "web", "image": "nginx"}]});
        assert_eq!(
            yaml(&v),
            "containerDefinitions:\n  - name: web\n    image: nginx\n"
        );
    }

    #[test]
    fn pruning_keeps_changed_values() {
        let mut spec = json!({"a": {"essential": true, "cpu": 0, "x": {"y": false}}, "b": {"essential": false}});
        let mut d = Defaults::default();
        d.add("/a/essential", json!(true));
        d.add("/a/cpu", json!(0));
        d.add("/a/x/y", json!(false));
        d.add("/a/x", json!({}));
        d.add("/b/essential", json!(true));
        d.prune(&mut spec);
        assert_eq!(spec, json!({"a": {}, "b": {"essential": false}}));
    }

    #[test]
    fn removing_an_item_renumbers_the_later_ones() {
        let mut spec = json!({"m": [{"readOnly": false}, {"readOnly": false}]});
        let mut d = Defaults::default();
        d.add("/m/0/readOnly", json!(false));
        d.add("/m/2/readOnly", json!(false));
        // Item 1 (explicit readOnly) was removed from a list of three.
        d.remove_item("/m", 1);
        d.prune(&mut spec);
        assert_eq!(spec, json!({"m": [{}, {}]}));
        let mut d = Defaults::default();
        d.add("/m/1/readOnly", json!(false));
        d.remove_item("/m", 0);
        let mut spec = json!({"m": [{"readOnly": false}, {"readOnly": false}]});
        d.prune(&mut spec);
        assert_eq!(spec, json!({"m": [{}, {"readOnly": false}]}));
    }
}
