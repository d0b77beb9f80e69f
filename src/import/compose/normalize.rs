//! One form for the service fields compose accepts in two: lists of
//! `KEY=VALUE` and mappings (environment, labels), short and long syntax
//! (ports, volumes, secrets, configs, depends_on, networks, healthcheck
//! tests). Files are normalized before they are merged, because merging
//! matches entries by keys only the long forms spell out (a port by its
//! address, a volume by its target).

use serde_json::{json, Map, Value};

/// Normalize every service of a compose document in place; the error
/// names the service and field.
pub fn document(doc: &mut Value) -> Result<(), String> {
    let Some(services) = doc.get_mut("services").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    for (name, service) in services.iter_mut() {
        let Some(s) = service.as_object_mut() else {
            return Err(format!("services.{name}: a service is a mapping"));
        };
        service_fields(s).map_err(|e| format!("services.{name}.{e}"))?;
    }
    Ok(())
}

fn service_fields(s: &mut Map<String, Value>) -> Result<(), String> {
    for key in ["environment", "labels", "annotations"] {
        if let Some(v) = s.get_mut(key) {
            *v = key_values(v).map_err(|e| format!("{key}: {e}"))?;
        }
    }
    if let Some(v) = s.get_mut("ports") {
        *v = each(v, port).map_err(|e| format!("ports{e}"))?;
    }
    if let Some(v) = s.get_mut("volumes") {
        *v = each(v, volume).map_err(|e| format!("volumes{e}"))?;
    }
    for key in ["secrets", "configs"] {
        let prefix = if key == "secrets" {
            "/run/secrets/"
        } else {
            "/"
        };
        if let Some(v) = s.get_mut(key) {
            *v = each(v, |e| file_reference(e, prefix)).map_err(|e| format!("{key}{e}"))?;
        }
    }
    if let Some(v) = s.get_mut("depends_on") {
        *v = depends_on(v).map_err(|e| format!("depends_on: {e}"))?;
    }
    if let Some(v) = s.get_mut("networks") {
        if let Value::Array(list) = v {
            let mut m = Map::new();
            for n in list.iter() {
                let Some(n) = n.as_str() else {
                    return Err("networks: a list of network names".into());
                };
                m.insert(n.to_string(), Value::Null);
            }
            *v = Value::Object(m);
        }
    }
    if let Some(test) = s.get_mut("healthcheck").and_then(|h| h.get_mut("test")) {
        if let Value::String(cmd) = test {
            *test = json!(["CMD-SHELL", cmd]);
        }
    }
    Ok(())
}

/// `[A=1, B]` or `{A: 1, B: null}` as a mapping of strings (a bare `B`, or
/// `B: null`, is null: its value comes from the environment).
fn key_values(v: &Value) -> Result<Value, String> {
    let mut out = Map::new();
    match v {
        Value::Array(list) => {
            for item in list {
                let Some(text) = item.as_str() else {
                    return Err(format!("`{item}` is not a `KEY=VALUE` string"));
                };
                match text.split_once('=') {
                    Some((k, val)) => out.insert(k.to_string(), Value::String(val.to_string())),
                    None => out.insert(text.to_string(), Value::Null),
                };
            }
        }
        Value::Object(m) => {
            for (k, val) in m {
                let val = match val {
                    Value::Null => Value::Null,
                    Value::String(s) => Value::String(s.clone()),
                    Value::Bool(b) => Value::String(b.to_string()),
                    Value::Number(n) => Value::String(n.to_string()),
                    other => return Err(format!("`{k}` is a {other}, not a string")),
                };
                out.insert(k.clone(), val);
            }
        }
        Value::Null => {}
        other => return Err(format!("a list or a mapping, not `{other}`")),
    }
    Ok(Value::Object(out))
}

/// Apply `f` to each entry of a list; errors carry `[index]: `.
fn each(v: &Value, f: impl Fn(&Value) -> Result<Vec<Value>, String>) -> Result<Value, String> {
    let Value::Array(list) = v else {
        return Err(": a list".into());
    };
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        out.extend(f(item).map_err(|e| format!("[{i}]: {e}"))?);
    }
    Ok(Value::Array(out))
}

/// A port in long syntax. The short syntax is
/// `[[HOST_IP:]PUBLISHED:]TARGET[/PROTOCOL]`, where PUBLISHED and TARGET
/// may be equal-sized ranges (one entry per port).
fn port(v: &Value) -> Result<Vec<Value>, String> {
    let text = match v {
        Value::Object(_) => return Ok(vec![v.clone()]),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => return Err(format!("`{other}` is not a port")),
    };
    let (spec, protocol) = match text.rsplit_once('/') {
        Some((s, p)) => (s, p.to_string()),
        None => (text.as_str(), "tcp".to_string()),
    };
    // An IPv6 host address is bracketed: `[::1]:8080:80`.
    let (host_ip, rest) = match spec.strip_prefix('[') {
        Some(r) => {
            let (ip, rest) = r
                .split_once("]:")
                .ok_or_else(|| format!("`{text}`: an IPv6 address without `]:`"))?;
            (Some(ip.to_string()), rest)
        }
        None => {
            let parts: Vec<&str> = spec.split(':').collect();
            match parts.len() {
                3 => (Some(parts[0].to_string()), &spec[parts[0].len() + 1..]),
                1 | 2 => (None, spec),
                _ => return Err(format!("`{text}` is not [[HOST_IP:]PUBLISHED:]TARGET")),
            }
        }
    };
    let (published, target) = match rest.split_once(':') {
        Some((p, t)) => (Some(p), t),
        None => (None, rest),
    };
    let targets = range(target).map_err(|e| format!("`{text}`: {e}"))?;
    let published = match published {
        None | Some("") => None,
        Some(p) => Some(range(p).map_err(|e| format!("`{text}`: {e}"))?),
    };
    if let Some(p) = &published {
        if p.len() != targets.len() && p.len() != 1 {
            return Err(format!(
                "`{text}`: the published and target ranges differ in size"
            ));
        }
    }
    Ok(targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut m = Map::new();
            m.insert("target".into(), json!(t));
            if let Some(p) = &published {
                // A single published port for a range is a range of its own
                // in compose; one port per target is what is comparable.
                let port = p.get(i).copied().unwrap_or(p[0]);
                m.insert("published".into(), json!(port.to_string()));
            }
            if let Some(ip) = &host_ip {
                m.insert("host_ip".into(), json!(ip));
            }
            m.insert("protocol".into(), json!(protocol));
            m.insert("mode".into(), json!("ingress"));
            Value::Object(m)
        })
        .collect())
}

fn range(text: &str) -> Result<Vec<u16>, String> {
    let one = |s: &str| {
        s.trim()
            .parse::<u16>()
            .map_err(|_| format!("`{s}` is not a port number"))
    };
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if a > b {
                return Err(format!("the range {a}-{b} runs backwards"));
            }
            Ok((a..=b).collect())
        }
        None => Ok(vec![one(text)?]),
    }
}

/// A volume in long syntax: `SOURCE:TARGET[:MODE]`, `TARGET` alone (an
/// anonymous volume). A source that is a path (`.`, `/`, `~`) is a bind
/// mount, a name a named volume.
fn volume(v: &Value) -> Result<Vec<Value>, String> {
    let text = match v {
        Value::Object(_) => return Ok(vec![v.clone()]),
        Value::String(s) => s,
        other => return Err(format!("`{other}` is not a volume")),
    };
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [t] => (None, *t, None),
        [s, t] => (Some(*s), *t, None),
        [s, t, m] => (Some(*s), *t, Some(*m)),
        _ => return Err(format!("`{text}` is not SOURCE:TARGET[:MODE]")),
    };
    let mut m = Map::new();
    let kind = match source {
        Some(s) if s.starts_with(['.', '/', '~']) => "bind",
        _ => "volume",
    };
    m.insert("type".into(), json!(kind));
    if let Some(s) = source {
        m.insert("source".into(), json!(s));
    }
    m.insert("target".into(), json!(target));
    if let Some(mode) = mode {
        for flag in mode.split(',') {
            match flag {
                "ro" => {
                    m.insert("read_only".into(), json!(true));
                }
                "rw" => {}
                "z" | "Z" => {
                    m.insert("bind".into(), json!({"selinux": flag}));
                }
                other => return Err(format!("`{text}`: unknown mode `{other}`")),
            }
        }
    }
    Ok(vec![Value::Object(m)])
}

/// A secret or config reference in long syntax: a bare name is
/// `{source: NAME, target: PREFIX NAME}`; a long one gets its default
/// target.
fn file_reference(v: &Value, prefix: &str) -> Result<Vec<Value>, String> {
    let mut m = match v {
        Value::String(name) => {
            let mut m = Map::new();
            m.insert("source".into(), json!(name));
            m
        }
        Value::Object(m) => m.clone(),
        other => return Err(format!("`{other}` is neither a name nor a mapping")),
    };
    let source = m
        .get("source")
        .and_then(Value::as_str)
        .ok_or("`source` is required")?
        .to_string();
    let target = match m.get("target").and_then(Value::as_str) {
        Some(t) if t.starts_with('/') => t.to_string(),
        Some(t) => format!("{prefix}{t}"),
        None => format!("{prefix}{source}"),
    };
    m.insert("target".into(), json!(target));
    Ok(vec![Value::Object(m)])
}

/// `[db]` or `{db: {condition: ...}}` as the mapping, with the default
/// condition `service_started` and `required: true`.
fn depends_on(v: &Value) -> Result<Value, String> {
    let mut out = Map::new();
    match v {
        Value::Array(list) => {
            for s in list {
                let name = s.as_str().ok_or("a list of service names")?;
                out.insert(
                    name.to_string(),
                    json!({"condition": "service_started", "required": true}),
                );
            }
        }
        Value::Object(m) => {
            for (name, d) in m {
                let mut d = d.as_object().cloned().unwrap_or_default();
                d.entry("condition")
                    .or_insert_with(|| json!("service_started"));
                d.entry("required").or_insert_with(|| json!(true));
                out.insert(name.clone(), Value::Object(d));
            }
        }
        other => return Err(format!("a list or a mapping, not `{other}`")),
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(service: Value) -> Value {
        let mut doc = json!({"services": {"s": service}});
        document(&mut doc).unwrap();
        doc["services"]["s"].clone()
    }

    #[test]
    fn environment_and_labels_become_mappings() {
        let s = normalized(json!({
            "environment": ["A=1", "B", "C=x=y"],
            "labels": {"n": 3, "b": true, "e": null}
        }));
        assert_eq!(s["environment"], json!({"A": "1", "B": null, "C": "x=y"}));
        assert_eq!(s["labels"], json!({"n": "3", "b": "true", "e": null}));
    }

    #[test]
    fn ports_in_every_short_form() {
        let s = normalized(json!({"ports": [
            "80", 443, "8080:80", "127.0.0.1:5432:5432", "[::1]:9000:9000/udp",
            "7000-7001:8000-8001", ":81", {"target": 90, "published": "9090"}
        ]}));
        let p = |target: u16, published: Option<&str>, ip: Option<&str>, proto: &str| {
            let mut m = json!({"target": target, "protocol": proto, "mode": "ingress"});
            if let Some(p) = published {
                m["published"] = json!(p);
            }
            if let Some(ip) = ip {
                m["host_ip"] = json!(ip);
            }
            m
        };
        assert_eq!(
            s["ports"],
            json!([
                p(80, None, None, "tcp"),
                p(443, None, None, "tcp"),
                p(80, Some("8080"), None, "tcp"),
                p(5432, Some("5432"), Some("127.0.0.1"), "tcp"),
                p(9000, Some("9000"), Some("::1"), "udp"),
                p(8000, Some("7000"), None, "tcp"),
                p(8001, Some("7001"), None, "tcp"),
                p(81, None, None, "tcp"),
                {"target": 90, "published": "9090"},
            ])
        );
    }

    #[test]
    fn volumes_secrets_depends_on_networks_and_tests() {
        let s = normalized(json!({
            "volumes": ["db:/var/lib/db", "./conf:/etc/app:ro", "/tmp/x:/x:rw,z", "/cache"],
            "secrets": ["token", {"source": "key", "target": "app.key"}],
            "configs": ["nginx"],
            "depends_on": ["db"],
            "networks": ["front", "back"],
            "healthcheck": {"test": "curl -f localhost"}
        }));
        assert_eq!(
            s["volumes"],
            json!([
                {"type": "volume", "source": "db", "target": "/var/lib/db"},
                {"type": "bind", "source": "./conf", "target": "/etc/app", "read_only": true},
                {"type": "bind", "source": "/tmp/x", "target": "/x", "bind": {"selinux": "z"}},
                {"type": "volume", "target": "/cache"},
            ])
        );
        assert_eq!(
            s["secrets"],
            json!([
                {"source": "token", "target": "/run/secrets/token"},
                {"source": "key", "target": "/run/secrets/app.key"},
            ])
        );
        assert_eq!(
            s["configs"],
            json!([{"source": "nginx", "target": "/nginx"}])
        );
        assert_eq!(
            s["depends_on"],
            json!({"db": {"condition": "service_started", "required": true}})
        );
        assert_eq!(s["networks"], json!({"front": null, "back": null}));
        assert_eq!(
            s["healthcheck"]["test"],
            json!(["CMD-SHELL", "curl -f localhost"])
        );
    }

    #[test]
    fn malformed_entries_name_their_field_and_index() {
        for (service, says) in [
            (json!({"ports": ["80", "a:b:c:d"]}), "services.s.ports[1]: "),
            (json!({"ports": ["9000-9001:80"]}), "ranges differ in size"),
            (json!({"volumes": ["a:b:c:d"]}), "services.s.volumes[0]: "),
            (json!({"volumes": ["./x:/y:rx"]}), "unknown mode `rx`"),
            (
                json!({"environment": [{"A": 1}]}),
                "services.s.environment: ",
            ),
            (
                json!({"secrets": [{"target": "x"}]}),
                "`source` is required",
            ),
            (json!({"depends_on": "db"}), "services.s.depends_on: "),
        ] {
            let mut doc = json!({"services": {"s": service}});
            let e = document(&mut doc).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
