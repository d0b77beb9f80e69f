//! Field-level differences between two normalised specs.
//!
//! Lists of named things (containers, environment variables, secrets,
//! volumes, ...) are compared by name rather than by position, so that
//! inserting one container shows one added container, not a shifted list.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One changed field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// Readable path: `containerDefinitions[web].environment[MODE].value`.
    pub path: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// Keys that identify the elements of a list, in order of preference.
/// `listenerPort` (unique in a cluster) keys load balancers, which may share
/// a containerName.
const IDENTITY_KEYS: [&str; 6] = [
    "name",
    "listenerPort",
    "containerName",
    "containerPath",
    "capacityProvider",
    "sourceContainer",
];

fn identity(items: &[Value]) -> Option<&'static str> {
    IDENTITY_KEYS.into_iter().find(|k| {
        let mut seen = std::collections::HashSet::new();
        items
            .iter()
            .all(|i| i.get(*k).and_then(key_text).is_some_and(|v| seen.insert(v)))
    })
}

/// A key's value as it appears in a path: a string, or a number (ports).
fn key_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Every leaf-level difference between `before` and `after`.
pub fn diff(before: &Value, after: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk("", before, after, &mut out);
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<FieldChange>) {
    if a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    Some(vb) => walk(&join(path, k), va, vb, out),
                    None => out.push(FieldChange {
                        path: join(path, k),
                        before: Some(va.clone()),
                        after: None,
                    }),
                }
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    out.push(FieldChange {
                        path: join(path, k),
                        before: None,
                        after: Some(vb.clone()),
                    });
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if !x.is_empty() && !y.is_empty() => {
            // A keyed list only when both sides are keyed by the same field.
            let key = identity(x).and_then(|k| identity(y).filter(|k2| *k2 == k));
            match key {
                Some(k) => {
                    let id = |v: &Value| key_text(&v[k]).unwrap_or_default();
                    for va in x {
                        let p = format!("{path}[{}]", id(va));
                        match y.iter().find(|vb| id(vb) == id(va)) {
                            Some(vb) => walk(&p, va, vb, out),
                            None => out.push(FieldChange {
                                path: p,
                                before: Some(va.clone()),
                                after: None,
                            }),
                        }
                    }
                    for vb in y {
                        if !x.iter().any(|va| id(va) == id(vb)) {
                            out.push(FieldChange {
                                path: format!("{path}[{}]", id(vb)),
                                before: None,
                                after: Some(vb.clone()),
                            });
                        }
                    }
                }
                _ => out.push(FieldChange {
                    path: path.to_string(),
                    before: Some(a.clone()),
                    after: Some(b.clone()),
                }),
            }
        }
        _ => out.push(FieldChange {
            path: path.to_string(),
            before: Some(a.clone()),
            after: Some(b.clone()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keyed_lists_compare_by_name() {
        let a = json!({"containerDefinitions": [{"name": "web", "environment": [{"name": "A", "value": "1"}]}]});
        let b = json!({"containerDefinitions": [
            {"name": "log", "image": "x"},
            {"name": "web", "environment": [{"name": "A", "value": "2"}]}
        ]});
        let d = diff(&a, &b);
        let paths: Vec<&str> = d.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "containerDefinitions[web].environment[A].value",
                "containerDefinitions[log]"
            ]
        );
        assert_eq!(d[0].before, Some(json!("1")));
        assert!(diff(&a, &a).is_empty());
    }

    #[test]
    fn load_balancers_compare_by_listener_port() {
        let lb = |port: u16, path: &str| json!({"containerName": "web", "containerPort": 8080, "listenerPort": port, "healthCheck": {"path": path}});
        let d = diff(
            &json!({"loadBalancers": [lb(80, "/")]}),
            &json!({"loadBalancers": [lb(80, "/health"), lb(8000, "/")]}),
        );
        let paths: Vec<&str> = d.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["loadBalancers[80].healthCheck.path", "loadBalancers[8000]"]
        );
    }

    #[test]
    fn unkeyed_lists_change_as_a_whole() {
        let d = diff(
            &json!({"command": ["a", "b"]}),
            &json!({"command": ["a", "c"]}),
        );
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].path, "command");
    }
}
