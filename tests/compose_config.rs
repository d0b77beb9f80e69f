//! The compose reader against compose itself: every project under
//! tests/fixtures/compose is read by `reconcile::import::compose::load`
//! and by Debian's `docker-compose config`, and the two must agree field
//! by field on every service (image, command, entrypoint, environment,
//! ports, volumes, healthcheck, depends_on, secrets, labels and the
//! rest), so merging, interpolation, `extends`, `env_file` and `.env`
//! follow compose's own rules.
//!
//! Each fixture directory holds its compose files, `files` (their order,
//! one per line), optionally `env` (variables of the environment the
//! commands run in) and `.env` (read by both, as compose reads it).
//! `docker-compose config` prints every service whatever its profiles,
//! so both sides read with every profile active.

#[path = "common/prereq.rs"]
mod prereq;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use reconcile::import::compose::{env_file, load};
use serde_json::{json, Map, Value};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compose")
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// The variables a fixture's commands run with.
fn environment(dir: &Path) -> BTreeMap<String, String> {
    lines(&dir.join("env"))
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What `load` reads: `.env` under the environment, which wins.
fn ours(dir: &Path, files: &[String]) -> Value {
    let shell = environment(dir);
    let mut env: BTreeMap<String, String> = match std::fs::read_to_string(dir.join(".env")) {
        Ok(text) => env_file::parse(&text, &shell)
            .unwrap_or_else(|e| panic!("{}: .env:{}: {}", dir.display(), e.line, e.message))
            .into_iter()
            .collect(),
        Err(_) => BTreeMap::new(),
    };
    env.extend(shell);
    let read_file = |name: &str| load::File {
        name: name.to_string(),
        text: std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("{}/{name}: {e}", dir.display())),
    };
    let inputs: Vec<load::File> = files.iter().map(|f| read_file(f)).collect();
    let opts = load::Options {
        env,
        profiles: BTreeSet::from(["*".to_string()]),
    };
    let reader = |_: &str, path: &str| -> Result<load::File, String> {
        std::fs::read_to_string(dir.join(path))
            .map(|text| load::File {
                name: path.to_string(),
                text,
            })
            .map_err(|e| e.to_string())
    };
    match load::project(&inputs, &opts, &reader) {
        Ok(p) => p.doc,
        Err(e) => panic!(
            "{}: {}",
            dir.display(),
            e.iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// What `docker-compose config` reads, as JSON.
fn theirs(dir: &Path, files: &[String]) -> Value {
    let mut cmd = Command::new("docker-compose");
    cmd.current_dir(dir).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd.envs(environment(dir));
    for f in files {
        cmd.args(["-f", f]);
    }
    let out = cmd.arg("config").output().unwrap();
    assert!(
        out.status.success(),
        "docker-compose config in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let loaded = reconcile::yaml::load(&text, reconcile::yaml::Limits::default());
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    loaded.documents[0].value.clone()
}

/// A value as text; docker-compose prints a `$` of a result as `$$`,
/// which no fixture has in what it means.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.replace("$$", "$"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A port as (host address, published, target, protocol).
fn port(v: &Value, dir: &Path) -> Value {
    match v {
        Value::String(s) => {
            // docker-compose keeps the short form when a host address is
            // given: HOST_IP:PUBLISHED:TARGET[/PROTOCOL].
            let (spec, proto) = s.rsplit_once('/').unwrap_or((s, "tcp"));
            let parts: Vec<&str> = spec.split(':').collect();
            match parts.as_slice() {
                [ip, p, t] => json!([ip, p, t, proto]),
                _ => panic!("{}: a port docker-compose printed as `{s}`", dir.display()),
            }
        }
        _ => json!([
            text(&v["host_ip"]),
            text(&v["published"]),
            text(&v["target"]),
            v.get("protocol").map(text).unwrap_or_else(|| "tcp".into()),
        ]),
    }
}

/// A volume as (source with relative paths resolved, target, read-only).
fn volume(v: &Value, dir: &Path) -> Value {
    let absolute = |s: &str| -> String {
        if s.starts_with('.') {
            dir.join(s)
                .components()
                .collect::<PathBuf>()
                .display()
                .to_string()
        } else {
            s.to_string()
        }
    };
    match v {
        Value::String(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            match parts.as_slice() {
                [t] => json!(["", t, false]),
                [src, t] => json!([absolute(src), t, false]),
                [src, t, mode] => json!([absolute(src), t, mode.split(',').any(|m| m == "ro")]),
                _ => panic!("{}: a volume printed as `{s}`", dir.display()),
            }
        }
        _ => json!([
            absolute(&text(&v["source"])),
            text(&v["target"]),
            v["read_only"].as_bool().unwrap_or(false),
        ]),
    }
}

/// A command as compose runs it: a list stays, a string is a shell line.
fn command(v: &Value) -> Value {
    match v {
        Value::Array(items) => Value::Array(items.iter().map(|i| json!(text(i))).collect()),
        Value::String(_) => json!(text(v)),
        _ => Value::Null,
    }
}

/// A service in the form both sides can be compared in.
fn comparable(s: &Value, dir: &Path) -> Value {
    let mut out = Map::new();
    let strings = |v: &Value| -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            if v.is_null() {
                                Value::Null
                            } else {
                                json!(text(v))
                            },
                        )
                    })
                    .collect(),
            ),
            _ => json!({}),
        }
    };
    for key in [
        "image",
        "restart",
        "user",
        "working_dir",
        "init",
        "stop_grace_period",
        "stdin_open",
        "tty",
    ] {
        if let Some(v) = s.get(key) {
            out.insert(key.into(), json!(text(v)));
        }
    }
    for key in ["command", "entrypoint"] {
        if let Some(v) = s.get(key) {
            out.insert(key.into(), command(v));
        }
    }
    for key in ["environment", "labels"] {
        if let Some(v) = s.get(key) {
            out.insert(key.into(), strings(v));
        }
    }
    let set = |items: Vec<Value>| -> Value {
        let mut v: Vec<String> = items.iter().map(Value::to_string).collect();
        v.sort();
        v.dedup();
        json!(v)
    };
    if let Some(Value::Array(p)) = s.get("ports") {
        out.insert(
            "ports".into(),
            set(p.iter().map(|v| port(v, dir)).collect()),
        );
    }
    if let Some(Value::Array(p)) = s.get("volumes") {
        out.insert(
            "volumes".into(),
            set(p.iter().map(|v| volume(v, dir)).collect()),
        );
    }
    for key in ["dns", "expose", "profiles"] {
        if let Some(Value::Array(p)) = s.get(key) {
            out.insert(key.into(), set(p.iter().map(|v| json!(text(v))).collect()));
        }
    }
    if let Some(Value::Array(p)) = s.get("secrets") {
        out.insert(
            "secrets".into(),
            set(p.iter().map(|v| json!(text(&v["source"]))).collect()),
        );
    }
    if let Some(Value::Object(d)) = s.get("depends_on") {
        let conditions: Map<String, Value> = d
            .iter()
            .map(|(k, v)| (k.clone(), json!(text(&v["condition"]))))
            .collect();
        out.insert("depends_on".into(), Value::Object(conditions));
    }
    if let Some(h) = s.get("healthcheck") {
        let mut m = Map::new();
        for (k, v) in h.as_object().into_iter().flatten() {
            let v = match (k.as_str(), v) {
                // A string test is the shell's.
                ("test", Value::String(t)) => json!(["CMD-SHELL", t]),
                ("test", t) => command(t),
                _ => json!(text(v)),
            };
            m.insert(k.clone(), v);
        }
        out.insert("healthcheck".into(), Value::Object(m));
    }
    if let Some(Value::Object(u)) = s.get("ulimits") {
        out.insert("ulimits".into(), json!(u));
    }
    if let Some(l) = s.get("logging") {
        out.insert(
            "logging".into(),
            json!({"driver": text(&l["driver"]), "options": strings(&l["options"])}),
        );
    }
    Value::Object(out)
}

/// The keys of a mapping (none for anything else).
fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect()
}

#[test]
fn compose_files_read_as_docker_compose_config_reads_them() {
    if !prereq::satisfied(prereq::tools(&["docker-compose"])) {
        return;
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 3, "{dirs:?}");
    let mut compared = 0;
    for dir in dirs {
        let files = lines(&dir.join("files"));
        let (ours, theirs) = (ours(&dir, &files), theirs(&dir, &files));
        let names = |d: &Value| keys(&d["services"]);
        assert_eq!(names(&ours), names(&theirs), "{}: services", dir.display());
        for name in names(&ours) {
            let (a, b) = (
                comparable(&ours["services"][&name], &dir),
                comparable(&theirs["services"][&name], &dir),
            );
            assert_eq!(
                a,
                b,
                "{}: service `{name}`\nours:   {}\ntheirs: {}",
                dir.display(),
                serde_json::to_string_pretty(&a).unwrap(),
                serde_json::to_string_pretty(&b).unwrap()
            );
            compared += 1;
        }
        // Top-level volumes and secrets by name.
        for key in ["volumes", "secrets"] {
            assert_eq!(
                keys(&ours[key]),
                keys(&theirs[key]),
                "{}: {key}",
                dir.display()
            );
        }
    }
    assert!(compared >= 10, "{compared} services compared");
}

/// `reconcile import compose` on each fixture project: the manifests and
/// the warnings, as snapshots (the fixture's directory shown as
/// `<project>`).
#[test]
fn imported_fixture_projects_match_their_snapshots() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    // Every project as one task; the web app also a task per service.
    let mut runs: Vec<(PathBuf, String, bool)> = Vec::new();
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if name == "webapp" {
            runs.push((dir.clone(), format!("{name}_per_service"), true));
        }
        runs.push((dir, name, false));
    }
    for (dir, name, per_service) in runs {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("reconcile"));
        cmd.current_dir(&dir).env_clear().envs(environment(&dir));
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd.args(["import", "compose", "--project-name", "imported"]);
        if per_service {
            cmd.arg("--task-per-service");
        }
        for f in lines(&dir.join("files")) {
            cmd.arg(f);
        }
        let out = cmd.output().unwrap();
        let shown =
            |b: &[u8]| String::from_utf8_lossy(b).replace(&dir.display().to_string(), "<project>");
        assert!(out.status.success(), "{name}: {}", shown(&out.stderr));
        insta::assert_snapshot!(format!("{name}_yaml"), shown(&out.stdout));
        insta::assert_snapshot!(format!("{name}_warnings"), shown(&out.stderr));
    }
}
