//! Several compose files as one, in the order given (`-f a.yaml -f
//! b.yaml`), by the Compose Specification's merge rules, on normalized
//! documents ([`super::normalize`]):
//!
//! - mappings merge key by key, a later scalar replacing an earlier one;
//! - `command`, `entrypoint` and `healthcheck.test` are replaced whole;
//! - `ports`, `volumes`, `secrets` and `configs` keep one entry per unique
//!   key (a port's host address, published port, target and protocol; the
//!   others' target): a later entry with the same key replaces the earlier
//!   one, others are appended;
//! - other lists are appended, without repeating an entry.

use serde_json::{Map, Value};

/// Merge `over` into `base`.
pub fn documents(base: &mut Value, over: Value) {
    merge(base, over, &[]);
}

/// The path of keys from the document's root to the value being merged,
/// so that the rules of service fields apply only there.
fn merge(base: &mut Value, over: Value, path: &[&str]) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                let child: Vec<&str> = path.iter().copied().chain([k.as_str()]).collect();
                match b.get_mut(&k) {
                    Some(existing) if !replaced_whole(&child) => merge(existing, v, &child),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(o)) => match unique_key(path) {
            Some(key) => {
                for item in o {
                    let k = key(&item);
                    match b.iter_mut().find(|e| key(e) == k) {
                        Some(existing) => *existing = item,
                        None => b.push(item),
                    }
                }
            }
            None => {
                for item in o {
                    if !b.contains(&item) {
                        b.push(item);
                    }
                }
            }
        },
        (b, o) => *b = o,
    }
}

/// `services.NAME.FIELD...`: the field path within a service, if `path`
/// is in one.
fn service_field<'a>(path: &'a [&'a str]) -> Option<&'a [&'a str]> {
    match path {
        ["services", _, rest @ ..] if !rest.is_empty() => Some(rest),
        _ => None,
    }
}

fn replaced_whole(path: &[&str]) -> bool {
    matches!(
        service_field(path),
        Some(["command"] | ["entrypoint"] | ["healthcheck", "test"])
    )
}

type Key = fn(&Value) -> Vec<Value>;

fn unique_key(path: &[&str]) -> Option<Key> {
    match service_field(path)? {
        ["ports"] => Some(|v| {
            ["host_ip", "published", "target", "protocol"]
                .iter()
                .map(|k| v.get(*k).cloned().unwrap_or(Value::Null))
                .collect()
        }),
        ["volumes"] | ["secrets"] | ["configs"] => {
            Some(|v| vec![v.get("target").cloned().unwrap_or(Value::Null)])
        }
        _ => None,
    }
}

/// An empty document to merge files into.
pub fn empty() -> Value {
    Value::Object(Map::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn merged(files: Vec<Value>) -> Value {
        let mut doc = empty();
        for f in files {
            documents(&mut doc, f);
        }
        doc
    }

    #[test]
    fn an_override_file_changes_adds_and_replaces_as_compose_does() {
        let base = json!({
            "services": {"web": {
                "image": "web:1",
                "command": ["serve", "--port", "80"],
                "environment": {"A": "1", "B": "2"},
                "ports": [{"target": 80, "published": "8080", "protocol": "tcp"}],
                "volumes": [{"type": "volume", "source": "data", "target": "/data"}],
                "dns": ["1.1.1.1"],
                "healthcheck": {"test": ["CMD", "true"], "interval": "10s"}
            }},
            "volumes": {"data": {}}
        });
        let over = json!({
            "services": {
                "web": {
                    "image": "web:2",
                    "command": ["serve"],
                    "environment": {"B": "3", "C": "4"},
                    "ports": [
                        {"target": 80, "published": "8080", "protocol": "tcp", "host_ip": "127.0.0.1"},
                        {"target": 443, "published": "8443", "protocol": "tcp"}
                    ],
                    "volumes": [{"type": "bind", "source": "./data", "target": "/data"}],
                    "dns": ["1.1.1.1", "8.8.8.8"],
                    "healthcheck": {"test": ["CMD", "false"]}
                },
                "db": {"image": "postgres:16"}
            },
            "volumes": {"data": {"driver": "local"}}
        });
        let doc = merged(vec![base, over]);
        let web = &doc["services"]["web"];
        assert_eq!(web["image"], "web:2");
        assert_eq!(web["command"], json!(["serve"]), "replaced, not appended");
        assert_eq!(web["environment"], json!({"A": "1", "B": "3", "C": "4"}));
        assert_eq!(
            web["ports"],
            json!([
                {"target": 80, "published": "8080", "protocol": "tcp"},
                {"target": 80, "published": "8080", "protocol": "tcp", "host_ip": "127.0.0.1"},
                {"target": 443, "published": "8443", "protocol": "tcp"}
            ]),
            "another host address is another port"
        );
        assert_eq!(
            web["volumes"],
            json!([{"type": "bind", "source": "./data", "target": "/data"}]),
            "same target: replaced"
        );
        assert_eq!(web["dns"], json!(["1.1.1.1", "8.8.8.8"]));
        assert_eq!(
            web["healthcheck"],
            json!({"test": ["CMD", "false"], "interval": "10s"})
        );
        assert_eq!(doc["services"]["db"]["image"], "postgres:16");
        assert_eq!(doc["volumes"]["data"], json!({"driver": "local"}));
    }

    #[test]
    fn merging_a_file_twice_changes_nothing() {
        let f = json!({"services": {"a": {
            "image": "x", "ports": [{"target": 1, "protocol": "tcp"}],
            "cap_add": ["NET_ADMIN"], "environment": {"K": "v"}
        }}});
        assert_eq!(merged(vec![f.clone(), f.clone()]), merged(vec![f]));
    }
}
