//! One compose service, as [`super::load`] reads it, into an ECS container
//! definition (RegisterTaskDefinition JSON) and the task volumes its
//! mounts need, so that the ECS import turns it into a manifest with its
//! own checks. Every field is either mapped or named in a warning.
//!
//! Mapped: image, command, entrypoint, environment, ports, volumes,
//! healthcheck, depends_on (as `dependsOn`, between containers of one
//! task), restart (essential), labels, user, working_dir, ulimits,
//! stop_grace_period, logging, secrets, init, cap_add, cap_drop,
//! privileged, read_only, hostname, extra_hosts, dns, dns_search, sysctls,
//! tty, stdin_open, shm_size, and memory and CPU limits and reservations
//! (`deploy.resources`, `mem_limit`, `mem_reservation`, `cpus`).

use serde_json::{json, Map, Value};

use super::units;

/// A container definition and what it needs of its task.
#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    /// ECS JSON of the container definition.
    pub definition: Value,
    /// ECS JSON of the task volumes its mount points name.
    pub volumes: Vec<Value>,
    /// What was changed or left out, each naming the compose field.
    pub warnings: Vec<String>,
}

/// Fields handled apart from the container: by the service (`deploy`
/// counts and update settings, `profiles`) or by the loader (`extends`,
/// `env_file`), or that say nothing a container needs (`container_name`
/// is the task's to choose, `expose` only documents ports).
const ELSEWHERE: &[&str] = &["deploy", "profiles", "extends", "env_file", "scale"];

/// Map service `name` of the project whose volumes (top-level
/// `volumes:`) are `named`; bind mount sources are made absolute against
/// `dir` (the project directory).
pub fn container(
    name: &str,
    service: &Map<String, Value>,
    named: &Map<String, Value>,
    dir: &str,
) -> Result<Container, String> {
    let mut out = Map::new();
    let mut warnings = Vec::new();
    let mut volumes = Vec::new();
    let mut warn =
        |field: &str, what: String| warnings.push(format!("services.{name}.{field}: {what}"));
    out.insert("name".into(), json!(name));
    let image = match service.get("image").and_then(Value::as_str) {
        Some(i) => i.to_string(),
        None if service.contains_key("build") => {
            return Err(format!(
                "services.{name}: only `build`, no `image`: build the image and name it in `image` (reconcile runs images, it does not build them)"
            ))
        }
        None => return Err(format!("services.{name}: no `image`")),
    };
    out.insert("image".into(), json!(image));
    out.insert("essential".into(), json!(true));
    for (key, v) in service {
        let field = key.as_str();
        match field {
            "image" => {}
            "build" => warn(field, "not built: reconcile runs the image named in `image`".into()),
            "command" | "entrypoint" => {
                let words = words(v).map_err(|e| format!("services.{name}.{field}: {e}"))?;
                let target = if field == "command" { "command" } else { "entryPoint" };
                out.insert(target.into(), json!(words));
            }
            "environment" => {
                let mut env = Vec::new();
                for (k, val) in v.as_object().into_iter().flatten() {
                    match val.as_str() {
                        Some(s) => env.push(json!({"name": k, "value": s})),
                        None => warn(
                            field,
                            format!("`{k}` has no value here or in the environment: left out"),
                        ),
                    }
                }
                out.insert("environment".into(), json!(env));
            }
            "ports" => {
                let mut mappings = Vec::new();
                for p in v.as_array().into_iter().flatten() {
                    let target = p["target"].as_u64().or_else(|| p["target"].as_str()?.parse().ok());
                    let Some(target) = target else {
                        return Err(format!("services.{name}.ports: `{p}` has no target port"));
                    };
                    let mut m = json!({"containerPort": target, "protocol": p["protocol"].as_str().unwrap_or("tcp")});
                    let published = p["published"]
                        .as_u64()
                        .or_else(|| p["published"].as_str()?.parse().ok());
                    if let Some(h) = published {
                        m["hostPort"] = json!(h);
                    }
                    if let Some(ip) = p["host_ip"].as_str() {
                        warn(field, format!("{target}: published on every address, not only {ip}"));
                    }
                    mappings.push(m);
                }
                out.insert("portMappings".into(), json!(mappings));
            }
            "expose" => warn(
                field,
                "not mapped: it documents ports other services reach, which containers of one task reach by name without it".into(),
            ),
            "volumes" => {
                let mut mounts = Vec::new();
                for (i, m) in v.as_array().into_iter().flatten().enumerate() {
                    let target = m["target"].as_str().unwrap_or_default().to_string();
                    let read_only = m["read_only"].as_bool().unwrap_or(false);
                    let (volume_name, volume) = match m["type"].as_str() {
                        Some("bind") => {
                            let source = absolute(m["source"].as_str().unwrap_or_default(), dir);
                            let n = format!("{name}-bind-{i}");
                            (n.clone(), json!({"name": n, "host": {"sourcePath": source}}))
                        }
                        Some("volume") => match m["source"].as_str() {
                            Some(s) => {
                                let top = named.get(s).and_then(Value::as_object);
                                if top.is_none() {
                                    return Err(format!(
                                        "services.{name}.volumes[{i}]: volume `{s}` is not in the top-level `volumes`"
                                    ));
                                }
                                let driver = top
                                    .and_then(|t| t.get("driver"))
                                    .and_then(Value::as_str)
                                    .unwrap_or("local");
                                let opts = top
                                    .and_then(|t| t.get("driver_opts"))
                                    .cloned()
                                    .unwrap_or_else(|| json!({}));
                                (
                                    s.to_string(),
                                    json!({"name": s, "dockerVolumeConfiguration": {
                                        "scope": "shared", "autoprovision": true,
                                        "driver": driver, "driverOpts": opts
                                    }}),
                                )
                            }
                            // Anonymous: the task's own, gone with it.
                            None => {
                                let n = format!("{name}-anonymous-{i}");
                                (n.clone(), json!({"name": n}))
                            }
                        },
                        other => {
                            warn(
                                field,
                                format!("[{i}]: a {} mount is not mapped", other.unwrap_or("typeless")),
                            );
                            continue;
                        }
                    };
                    mounts.push(json!({"sourceVolume": volume_name, "containerPath": target, "readOnly": read_only}));
                    if !volumes.contains(&volume) {
                        volumes.push(volume);
                    }
                }
                out.insert("mountPoints".into(), json!(mounts));
            }
            "healthcheck" => {
                if v["disable"].as_bool() == Some(true) || v["test"][0] == "NONE" {
                    continue;
                }
                let mut h = json!({"command": v["test"]});
                for (from, to) in [
                    ("interval", "interval"),
                    ("timeout", "timeout"),
                    ("start_period", "startPeriod"),
                ] {
                    if let Some(d) = v.get(from).and_then(Value::as_str) {
                        let secs = units::seconds(d).map_err(|e| format!("services.{name}.healthcheck.{from}: {e}"))?;
                        h[to] = json!(secs);
                    }
                }
                if let Some(r) = v.get("retries") {
                    h["retries"] = r.clone();
                }
                if v.get("start_interval").is_some() {
                    warn(field, "start_interval: not mapped (checks run every interval from the start)".into());
                }
                out.insert("healthCheck".into(), h);
            }
            "depends_on" => {
                let mut deps = Vec::new();
                for (dep, d) in v.as_object().into_iter().flatten() {
                    let condition = match d["condition"].as_str() {
                        Some("service_healthy") => "HEALTHY",
                        Some("service_completed_successfully") => "SUCCESS",
                        _ => "START",
                    };
                    deps.push(json!({"containerName": dep, "condition": condition}));
                }
                out.insert("dependsOn".into(), json!(deps));
            }
            "restart" => {
                // A container compose never restarts is one that may end
                // (a migration, a one-off job): not essential, so its end
                // does not end the task.
                let policy = v.as_str().unwrap_or_default();
                if policy == "no" {
                    out.insert("essential".into(), json!(false));
                }
                if policy != "no" {
                    warn(
                        field,
                        format!("`{policy}`: containers are not restarted in place; a service replaces a task whose essential container stops"),
                    );
                }
            }
            "labels" => {
                out.insert("dockerLabels".into(), v.clone());
            }
            "user" => {
                out.insert("user".into(), v.clone());
            }
            "working_dir" => {
                out.insert("workingDirectory".into(), v.clone());
            }
            "hostname" => {
                out.insert("hostname".into(), v.clone());
            }
            "privileged" => {
                out.insert("privileged".into(), v.clone());
            }
            "read_only" => {
                out.insert("readonlyRootFilesystem".into(), v.clone());
            }
            "tty" => {
                out.insert("pseudoTerminal".into(), v.clone());
            }
            "stdin_open" => {
                out.insert("interactive".into(), v.clone());
            }
            "dns" | "dns_search" => {
                let list = match v {
                    Value::String(s) => json!([s]),
                    other => other.clone(),
                };
                let target = if field == "dns" { "dnsServers" } else { "dnsSearchDomains" };
                out.insert(target.into(), list);
            }
            "extra_hosts" => {
                let mut hosts = Vec::new();
                let entries: Vec<(String, String)> = match v {
                    Value::Object(m) => m.iter().map(|(h, ip)| (h.clone(), ip.as_str().unwrap_or_default().to_string())).collect(),
                    _ => v
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|e| {
                            let s = e.as_str()?;
                            let (h, ip) = s.split_once(['=', ':'])?;
                            Some((h.to_string(), ip.to_string()))
                        })
                        .collect(),
                };
                for (h, ip) in entries {
                    hosts.push(json!({"hostname": h, "ipAddress": ip}));
                }
                out.insert("extraHosts".into(), json!(hosts));
            }
            "sysctls" => {
                let pairs: Vec<Value> = match v {
                    Value::Object(m) => m.iter().map(|(k, val)| json!({"namespace": k, "value": scalar(val)})).collect(),
                    _ => v
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|e| e.as_str()?.split_once('='))
                        .map(|(k, val)| json!({"namespace": k, "value": val}))
                        .collect(),
                };
                out.insert("systemControls".into(), json!(pairs));
            }
            "ulimits" => {
                let mut list = Vec::new();
                for (u, l) in v.as_object().into_iter().flatten() {
                    let (soft, hard) = match l {
                        Value::Number(n) => (n.clone(), n.clone()),
                        _ => (
                            l["soft"].as_number().cloned().unwrap_or(0.into()),
                            l["hard"].as_number().cloned().unwrap_or(0.into()),
                        ),
                    };
                    list.push(json!({"name": u, "softLimit": soft, "hardLimit": hard}));
                }
                out.insert("ulimits".into(), json!(list));
            }
            "stop_grace_period" => {
                let secs = units::seconds(v.as_str().unwrap_or_default())
                    .map_err(|e| format!("services.{name}.stop_grace_period: {e}"))?;
                out.insert("stopTimeout".into(), json!(secs));
            }
            "logging" => {
                let mut l = json!({"logDriver": v["driver"].as_str().unwrap_or("json-file")});
                if let Some(o) = v.get("options").and_then(Value::as_object) {
                    let opts: Map<String, Value> = o.iter().map(|(k, val)| (k.clone(), json!(scalar(val)))).collect();
                    l["options"] = Value::Object(opts);
                }
                out.insert("logConfiguration".into(), l);
            }
            "secrets" => {
                let mut list = Vec::new();
                for s in v.as_array().into_iter().flatten() {
                    let source = s["source"].as_str().unwrap_or_default();
                    let env = source.to_ascii_uppercase().replace(['-', '.'], "_");
                    list.push(json!({"name": env, "valueFrom": source}));
                    warn(
                        field,
                        format!(
                            "`{source}`: given as the environment variable {env}, not as the file {}; its value is the secret `{source}` (standalone: the file `{source}` in the secrets directory, .reconcile/secrets under the source; fleet: `reconcile secret set {source}`)",
                            s["target"].as_str().unwrap_or_default()
                        ),
                    );
                }
                out.insert("secrets".into(), json!(list));
            }
            "init" | "cap_add" | "cap_drop" | "shm_size" => {}
            "mem_limit" | "mem_reservation" | "cpus" => {}
            f if ELSEWHERE.contains(&f) => {}
            other => warn(other, "not mapped".into()),
        }
    }
    linux(service, &mut out, name)?;
    resources(service, &mut out, name)?;
    Ok(Container {
        definition: Value::Object(out),
        volumes,
        warnings,
    })
}

/// `init`, `cap_add`, `cap_drop` and `shm_size`: the Linux parameters.
fn linux(
    service: &Map<String, Value>,
    out: &mut Map<String, Value>,
    name: &str,
) -> Result<(), String> {
    let mut l = Map::new();
    if let Some(i) = service.get("init").and_then(Value::as_bool) {
        l.insert("initProcessEnabled".into(), json!(i));
    }
    let caps = |k: &str| service.get(k).cloned();
    if caps("cap_add").is_some() || caps("cap_drop").is_some() {
        l.insert(
            "capabilities".into(),
            json!({"add": caps("cap_add").unwrap_or(json!([])), "drop": caps("cap_drop").unwrap_or(json!([]))}),
        );
    }
    if let Some(s) = service.get("shm_size") {
        let mib = units::mebibytes(s).map_err(|e| format!("services.{name}.shm_size: {e}"))?;
        l.insert("sharedMemorySize".into(), json!(mib));
    }
    if !l.is_empty() {
        out.insert("linuxParameters".into(), Value::Object(l));
    }
    Ok(())
}

/// Memory (MiB) and CPU units (1024 a core) from `deploy.resources` or
/// the service-level `mem_limit`, `mem_reservation` and `cpus`.
fn resources(
    service: &Map<String, Value>,
    out: &mut Map<String, Value>,
    name: &str,
) -> Result<(), String> {
    let r = service.get("deploy").and_then(|d| d.get("resources"));
    let pick = |deploy: &str, key: &str, own: &str| {
        r.and_then(|r| r.get(deploy))
            .and_then(|x| x.get(key))
            .or_else(|| service.get(own))
            .cloned()
    };
    if let Some(m) = pick("limits", "memory", "mem_limit") {
        let mib =
            units::mebibytes(&m).map_err(|e| format!("services.{name}: memory limit: {e}"))?;
        out.insert("memory".into(), json!(mib));
    }
    if let Some(m) = pick("reservations", "memory", "mem_reservation") {
        let mib = units::mebibytes(&m)
            .map_err(|e| format!("services.{name}: memory reservation: {e}"))?;
        out.insert("memoryReservation".into(), json!(mib));
    }
    let cpus = pick("reservations", "cpus", "cpus").or_else(|| pick("limits", "cpus", "cpus"));
    if let Some(c) = cpus {
        let n: f64 = match &c {
            Value::Number(n) => n.as_f64().unwrap_or(0.0),
            Value::String(s) => s
                .parse()
                .map_err(|_| format!("services.{name}: cpus `{s}` is not a number"))?,
            other => return Err(format!("services.{name}: cpus `{other}` is not a number")),
        };
        out.insert("cpu".into(), json!((n * 1024.0).round() as u64));
    }
    Ok(())
}

/// A command as words: a list as it is, a string split as a shell would.
fn words(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::Array(items) => Ok(items.iter().map(scalar).collect()),
        Value::String(s) => shlex::split(s).ok_or_else(|| format!("`{s}`: an unclosed quote")),
        Value::Null => Ok(Vec::new()),
        other => Err(format!("`{other}` is neither a list nor a string")),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `./data` against the project directory; `~` stays for the engine's
/// host to read, others are already absolute.
fn absolute(source: &str, dir: &str) -> String {
    if source.starts_with('/') || source.starts_with('~') {
        return source.to_string();
    }
    let rel = source.trim_start_matches("./");
    let joined = std::path::Path::new(dir).join(rel);
    let mut parts: Vec<String> = Vec::new();
    for c in joined.components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::CurDir => {}
            std::path::Component::RootDir => parts.clear(),
            other => parts.push(other.as_os_str().to_string_lossy().into_owned()),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(name: &str, service: Value) -> Result<Container, String> {
        let named = json!({"data": {"driver": "local"}});
        container(
            name,
            service.as_object().unwrap(),
            named.as_object().unwrap(),
            "/srv/shop",
        )
    }

    #[test]
    fn a_web_service_maps_field_by_field() {
        let c = map(
            "web",
            json!({
                "image": "shop/web:3",
                "command": "gunicorn shop.wsgi --bind '0.0.0.0:8000'",
                "environment": {"A": "1", "UNSET": null},
                "ports": [{"target": 8000, "published": "8080", "protocol": "tcp", "mode": "ingress"}, {"target": 9000, "protocol": "udp"}],
                "volumes": [
                    {"type": "volume", "source": "data", "target": "/data"},
                    {"type": "bind", "source": "./conf", "target": "/etc/app", "read_only": true},
                    {"type": "volume", "target": "/cache"}
                ],
                "healthcheck": {"test": ["CMD", "true"], "interval": "15s", "timeout": "500ms", "retries": 5, "start_period": "1m"},
                "depends_on": {"db": {"condition": "service_healthy"}, "cache": {"condition": "service_started"}},
                "stop_grace_period": "1m30s",
                "ulimits": {"nofile": {"soft": 1024, "hard": 2048}, "nproc": 512},
                "logging": {"driver": "json-file", "options": {"max-file": 3}},
                "init": true,
                "cap_add": ["NET_ADMIN"],
                "deploy": {"replicas": 2, "resources": {"limits": {"memory": "512m"}, "reservations": {"memory": "256m", "cpus": "0.5"}}},
                "secrets": [{"source": "django-key", "target": "/run/secrets/django-key"}],
                "restart": "unless-stopped",
                "labels": {"team": "shop"},
                "stdin_open": true
            }),
        )
        .unwrap();
        let d = &c.definition;
        assert_eq!(d["image"], "shop/web:3");
        assert_eq!(
            d["command"],
            json!(["gunicorn", "shop.wsgi", "--bind", "0.0.0.0:8000"])
        );
        assert_eq!(d["environment"], json!([{"name": "A", "value": "1"}]));
        assert_eq!(
            d["portMappings"],
            json!([{"containerPort": 8000, "hostPort": 8080, "protocol": "tcp"}, {"containerPort": 9000, "protocol": "udp"}])
        );
        assert_eq!(
            d["mountPoints"],
            json!([
                {"sourceVolume": "data", "containerPath": "/data", "readOnly": false},
                {"sourceVolume": "web-bind-1", "containerPath": "/etc/app", "readOnly": true},
                {"sourceVolume": "web-anonymous-2", "containerPath": "/cache", "readOnly": false}
            ])
        );
        assert_eq!(
            c.volumes,
            vec![
                json!({"name": "data", "dockerVolumeConfiguration": {"scope": "shared", "autoprovision": true, "driver": "local", "driverOpts": {}}}),
                json!({"name": "web-bind-1", "host": {"sourcePath": "/srv/shop/conf"}}),
                json!({"name": "web-anonymous-2"}),
            ]
        );
        assert_eq!(
            d["healthCheck"],
            json!({"command": ["CMD", "true"], "interval": 15, "timeout": 1, "retries": 5, "startPeriod": 60})
        );
        assert_eq!(
            d["dependsOn"],
            json!([{"containerName": "db", "condition": "HEALTHY"}, {"containerName": "cache", "condition": "START"}])
        );
        assert_eq!(d["stopTimeout"], 90);
        assert_eq!(
            d["ulimits"],
            json!([{"name": "nofile", "softLimit": 1024, "hardLimit": 2048}, {"name": "nproc", "softLimit": 512, "hardLimit": 512}])
        );
        assert_eq!(
            d["logConfiguration"],
            json!({"logDriver": "json-file", "options": {"max-file": "3"}})
        );
        assert_eq!(
            d["linuxParameters"],
            json!({"initProcessEnabled": true, "capabilities": {"add": ["NET_ADMIN"], "drop": []}})
        );
        assert_eq!(
            (
                d["memory"].clone(),
                d["memoryReservation"].clone(),
                d["cpu"].clone()
            ),
            (json!(512), json!(256), json!(512))
        );
        assert_eq!(
            d["secrets"],
            json!([{"name": "DJANGO_KEY", "valueFrom": "django-key"}])
        );
        assert_eq!(d["essential"], true);
        assert_eq!(d["dockerLabels"], json!({"team": "shop"}));
        assert_eq!(d["interactive"], true);
        let said = c.warnings.join("\n");
        for w in [
            "services.web.environment: `UNSET` has no value",
            "services.web.secrets: `django-key`: given as the environment variable DJANGO_KEY, not as the file /run/secrets/django-key",
            "services.web.restart: `unless-stopped`: containers are not restarted in place",
        ] {
            assert!(said.contains(w), "{w}:\n{said}");
        }
    }

    #[test]
    fn one_off_containers_are_not_essential_and_unknown_fields_are_named() {
        let c = map(
            "migrate",
            json!({"image": "m", "restart": "no", "network_mode": "host", "pid": "host", "healthcheck": {"disable": true}}),
        )
        .unwrap();
        assert_eq!(c.definition["essential"], false);
        assert!(c.definition.get("healthCheck").is_none());
        let said = c.warnings.join("\n");
        assert!(
            said.contains("services.migrate.network_mode: not mapped"),
            "{said}"
        );
        assert!(said.contains("services.migrate.pid: not mapped"), "{said}");
    }

    #[test]
    fn what_cannot_be_mapped_is_an_error_naming_the_field() {
        for (service, says) in [
            (json!({"build": "."}), "only `build`, no `image`"),
            (json!({}), "no `image`"),
            (
                json!({"image": "x", "command": "echo 'open"}),
                "services.s.command: ",
            ),
            (
                json!({"image": "x", "volumes": [{"type": "volume", "source": "nope", "target": "/x"}]}),
                "volume `nope` is not in the top-level",
            ),
            (
                json!({"image": "x", "stop_grace_period": "soon"}),
                "services.s.stop_grace_period: ",
            ),
            (json!({"image": "x", "mem_limit": "lots"}), "memory limit"),
        ] {
            let e = map("s", service).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }

    /// What is made is what the ECS import takes: it comes out as a
    /// task definition that validates.
    #[test]
    fn the_ecs_import_takes_what_is_made() {
        let web = map(
            "web",
            json!({
                "image": "shop/web:3", "command": ["serve"],
                "ports": [{"target": 8000, "published": "8080", "protocol": "tcp"}],
                "volumes": [{"type": "volume", "source": "data", "target": "/data"}],
                "healthcheck": {"test": ["CMD", "true"], "interval": "15s", "timeout": "3s", "retries": 3},
                "depends_on": {"db": {"condition": "service_healthy"}},
                "deploy": {"resources": {"limits": {"memory": "256m"}}},
                "ulimits": {"nofile": 1024}, "init": true, "stop_grace_period": "10s"
            }),
        )
        .unwrap();
        let db = map("db", json!({"image": "postgres:16", "healthcheck": {"test": ["CMD-SHELL", "pg_isready"]}, "mem_limit": "512m"})).unwrap();
        let td = json!({
            "family": "shop",
            "networkMode": "bridge",
            "containerDefinitions": [web.definition, db.definition],
            "volumes": web.volumes,
        });
        let input = crate::import::Input {
            name: "compose.yaml".into(),
            bytes: serde_json::to_vec(&td).unwrap(),
        };
        let out = crate::import::ecs(&[input], &crate::import::Options::default())
            .unwrap_or_else(|e| panic!("{e:?}"));
        let text = out.stream();
        assert!(text.contains("kind: TaskDefinition"), "{text}");
        assert!(text.contains("condition: HEALTHY"), "{text}");
        assert!(text.contains("hostPort: 8080"), "{text}");
    }

    #[test]
    fn bind_sources_are_made_absolute() {
        assert_eq!(absolute("./conf", "/srv/app"), "/srv/app/conf");
        assert_eq!(absolute("../shared/x", "/srv/app"), "/srv/shared/x");
        assert_eq!(absolute("/etc/hosts", "/srv/app"), "/etc/hosts");
        assert_eq!(absolute("data", "/srv/app"), "/srv/app/data");
    }
}
