//! `reconcile import ecs`: the corpus of real task definitions, exact output
//! snapshots of small fixtures, a round trip through `reconcile validate`,
//! and the CLI's error cases.
//!
//! The corpus lives outside the repository; it is found through
//! `RECONCILE_ECS_CORPUS` or, by default, `../shared/corpus/ecs-task-definitions`
//! next to the crate. A missing corpus fails that test under CI and is
//! reported as skipped elsewhere (a checkout on its own has none); the
//! fixtures in `tests/fixtures/ecs` always run.

#[path = "common/prereq.rs"]
mod prereq;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

use reconcile::import::{self, Import, ImportError, Input, Level, Options, Warning};
use reconcile::manifest::{Kind, Manifest};
use reconcile::source::{self, Content, RawFile};
use reconcile::validate;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ecs")
}

fn corpus_dir() -> PathBuf {
    match std::env::var_os("RECONCILE_ECS_CORPUS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/ecs-task-definitions"),
    }
}

fn reconcile() -> Command {
    Command::cargo_bin("reconcile").expect("the reconcile binary is built")
}

/// An input named by its file name only, so that messages and snapshots
/// do not depend on where the checkout is.
fn input(path: &Path) -> Input {
    Input {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        bytes: fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display())),
    }
}

fn import_fixtures(names: &[&str]) -> Import {
    let inputs: Vec<Input> = names.iter().map(|n| input(&fixtures().join(n))).collect();
    match import::ecs(&inputs, &Options::default()) {
        Ok(i) => i,
        Err(errors) => panic!("import failed:\n{}", render_errors(&errors)),
    }
}

fn render_errors(errors: &[ImportError]) -> String {
    errors.iter().map(|e| format!("error: {e}\n")).collect()
}

fn render_warnings<'a>(warnings: impl IntoIterator<Item = &'a Warning>) -> String {
    warnings.into_iter().map(|w| format!("{w}\n")).collect()
}

/// Validate the output as `reconcile validate` would read it from a
/// directory, independently of the import's own check.
fn validate_output(imp: &Import) -> validate::Validation {
    let files = imp
        .files
        .iter()
        .map(|f| RawFile {
            name: f.name.clone(),
            content: Content::Bytes(f.text.as_bytes().to_vec()),
        })
        .collect();
    validate::validate(files)
}

fn diagnostics(v: &validate::Validation) -> String {
    v.diagnostics
        .iter()
        .map(|d| {
            format!(
                "{}:{}:{} {}: {}\n",
                d.file, d.span.line, d.span.column, d.pointer, d.message
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Coverage: every input field is in the output or named in a warning.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Paths of the input's leaves. `null`, `""`, `[]` and `{}` carry no
/// setting in ECS JSON (the API treats them as unset), so they have none.
fn leaves(v: &Value, path: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    match v {
        Value::Null => {}
        Value::String(s) if s.is_empty() => {}
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                leaves(item, path, out);
                path.pop();
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                path.push(Seg::Key(k.clone()));
                leaves(item, path, out);
                path.pop();
            }
        }
        _ => out.push(path.clone()),
    }
}

/// The documented path syntax of warnings: `a.b[0].c`, `x["odd.key"]`.
fn path_text(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k)
                if !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
            {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Key(k) => s.push_str(&format!("[{}]", Value::from(k.as_str()))),
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

/// Whether `v` has a value at `path`. List items may have moved up when an
/// earlier item of the same list was dropped (that one is then covered by
/// a warning), so an item may match at any position, except containers,
/// which are never dropped and must match exactly.
fn has(v: &Value, path: &[Seg], parent: Option<&str>) -> bool {
    match path.split_first() {
        None => !v.is_null(),
        Some((Seg::Key(k), rest)) => v.get(k).is_some_and(|x| has(x, rest, Some(k))),
        Some((Seg::Index(i), rest)) => {
            let Some(items) = v.as_array() else {
                return false;
            };
            items.get(*i).is_some_and(|x| has(x, rest, None))
                || (parent != Some("containerDefinitions")
                    && items.iter().any(|x| has(x, rest, None)))
        }
    }
}

/// One input object and the manifest it became.
struct Mapped {
    prefix: Vec<Seg>,
    kind: Kind,
    manifest: Value,
}

fn parse_outputs(imp: &Import) -> Vec<(Kind, Value)> {
    imp.files
        .iter()
        .map(|f| {
            let v: Value = yaml_serde::from_str(&f.text)
                .unwrap_or_else(|e| panic!("{} is not YAML: {e}\n{}", f.name, f.text));
            (f.kind, v)
        })
        .collect()
}

fn named<'a>(outputs: &'a [(Kind, Value)], kind: Kind, name: &str) -> Option<&'a Value> {
    outputs
        .iter()
        .find(|(k, v)| *k == kind && v["metadata"]["name"] == name)
        .map(|(_, v)| v)
}

/// Pair every task definition and service object of `json` with its
/// output manifest.
fn pair(json: &Value, outputs: &[(Kind, Value)]) -> Vec<Mapped> {
    let only_task = || {
        let tds: Vec<&Value> = outputs
            .iter()
            .filter(|(k, _)| *k == Kind::TaskDefinition)
            .map(|(_, v)| v)
            .collect();
        (tds.len() == 1).then(|| tds[0].clone())
    };
    let task = |obj: &Value, prefix: Vec<Seg>| -> Mapped {
        let manifest = match obj.get("family").and_then(Value::as_str) {
            Some(f) => named(outputs, Kind::TaskDefinition, f).cloned(),
            None => only_task(),
        }
        .expect("a TaskDefinition for the input");
        Mapped {
            prefix,
            kind: Kind::TaskDefinition,
            manifest,
        }
    };
    let service = |obj: &Value, prefix: Vec<Seg>| -> Mapped {
        let name = obj["serviceName"].as_str().expect("serviceName");
        Mapped {
            prefix,
            kind: Kind::Service,
            manifest: named(outputs, Kind::Service, name)
                .cloned()
                .expect("a Service for the input"),
        }
    };
    if let Some(td) = json.get("taskDefinition").filter(|t| t.is_object()) {
        return vec![task(td, vec![key("taskDefinition")])];
    }
    if let Some(list) = json.get("services").and_then(Value::as_array) {
        return list
            .iter()
            .enumerate()
            .map(|(i, s)| service(s, vec![key("services"), Seg::Index(i)]))
            .collect();
    }
    if json.get("serviceName").is_some() {
        return vec![service(json, Vec::new())];
    }
    vec![task(json, Vec::new())]
}

/// Where a field of an input object lands in its manifest.
fn target(kind: Kind, rel: &[Seg]) -> Vec<Seg> {
    let head = match rel.first() {
        Some(Seg::Key(k)) => k.as_str(),
        _ => "",
    };
    let renamed: Option<Vec<Seg>> = match (kind, head) {
        (Kind::TaskDefinition, "family") | (Kind::Service, "serviceName") => {
            Some(vec![key("metadata"), key("name")])
        }
        (Kind::Service, "clusterArn" | "cluster") => Some(vec![key("spec"), key("cluster")]),
        (Kind::Service, "taskDefinition") => Some(vec![key("spec"), key("taskDefinition")]),
        _ => None,
    };
    renamed.unwrap_or_else(|| {
        let mut p = vec![key("spec")];
        p.extend_from_slice(rel);
        p
    })
}

/// Input leaves of `file` that are neither in the output nor named by a
/// warning about `file`.
fn uncovered(file: &str, json: &Value, imp: &Import, outputs: &[(Kind, Value)]) -> Vec<String> {
    let warned: Vec<&str> = imp
        .warnings
        .iter()
        .filter(|w| w.file == file)
        .flat_map(|w| w.paths.iter().map(String::as_str))
        .collect();
    let covered_by_warning = |leaf: &str| {
        warned.iter().any(|w| {
            leaf == *w
                || (leaf.starts_with(w)
                    && (leaf[w.len()..].starts_with('.') || leaf[w.len()..].starts_with('[')))
        })
    };
    let mapped = pair(json, outputs);
    let mut all = Vec::new();
    leaves(json, &mut Vec::new(), &mut all);
    let mut out = Vec::new();
    for leaf in all {
        let text = path_text(&leaf);
        if covered_by_warning(&text) {
            continue;
        }
        let found = mapped
            .iter()
            .filter(|m| leaf.starts_with(&m.prefix))
            .any(|m| has(&m.manifest, &target(m.kind, &leaf[m.prefix.len()..]), None));
        if !found {
            out.push(text);
        }
    }
    out
}

fn assert_warnings_are_actionable(imp: &Import, files: &BTreeSet<String>) {
    for w in &imp.warnings {
        assert!(
            !w.paths.is_empty() && w.paths.iter().all(|p| !p.is_empty()),
            "a warning without a field: {w}"
        );
        assert!(
            files.contains(&w.file) || imp.files.iter().any(|f| f.name == w.file),
            "a warning names an unknown file: {w}"
        );
        if w.level == Level::Warning {
            assert!(
                w.help.as_deref().is_some_and(|h| !h.is_empty()),
                "a warning that says nothing to do: {w}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The corpus.
// ---------------------------------------------------------------------------

/// Containers without an image, as (index, name).
fn containers_without_image(json: &Value) -> Vec<(usize, String)> {
    let td = json
        .get("taskDefinition")
        .filter(|t| t.is_object())
        .unwrap_or(json);
    td["containerDefinitions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .enumerate()
                .filter(|(_, c)| {
                    c.get("image")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                })
                .map(|(j, c)| (j, c["name"].as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_corpus_file_imports_validates_and_accounts_for_every_field() {
    let dir = corpus_dir();
    if !dir.is_dir() {
        let why = format!(
            "the ECS task definition corpus is not at {} (set RECONCILE_ECS_CORPUS to its location)",
            dir.display()
        );
        // A checkout on its own has no corpus beside it; CI always does.
        assert!(!prereq::under_ci(), "{why}; CI is set, so this fails");
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {}: {why}; the fixtures in tests/fixtures/ecs still run",
            prereq::test_name()
        );
        return;
    }
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(
        !paths.is_empty(),
        "no *.json file in the corpus at {}",
        dir.display()
    );

    let mut problems = Vec::new();
    for path in &paths {
        let inp = input(path);
        let json: Value = serde_json::from_slice(&inp.bytes).unwrap();
        let mut options = Options::default();

        // Some files are CI templates whose image a pipeline step fills in.
        // They must fail with an error naming each missing image, and import
        // once the images are given, as the pipeline would.
        let missing = containers_without_image(&json);
        if !missing.is_empty() {
            match import::ecs(std::slice::from_ref(&inp), &options) {
                Ok(_) => problems.push(format!(
                    "{}: imported although an image is missing",
                    inp.name
                )),
                Err(errors) => {
                    for (j, _) in &missing {
                        let want = format!("containerDefinitions[{j}].image");
                        if !errors
                            .iter()
                            .any(|e| e.path.as_deref().is_some_and(|p| p.ends_with(&want)))
                        {
                            problems.push(format!(
                                "{}: no error names {want}:\n{}",
                                inp.name,
                                render_errors(&errors)
                            ));
                        }
                    }
                }
            }
            options.images = missing
                .iter()
                .map(|(_, name)| (name.clone(), "registry.example.com/imported:1".to_string()))
                .collect();
        }

        let imp = match import::ecs(std::slice::from_ref(&inp), &options) {
            Ok(imp) => imp,
            Err(errors) => {
                problems.push(format!(
                    "{} does not import:\n{}",
                    inp.name,
                    render_errors(&errors)
                ));
                continue;
            }
        };
        let v = validate_output(&imp);
        if !v.is_valid() {
            problems.push(format!(
                "{}: the output does not validate:\n{}",
                inp.name,
                diagnostics(&v)
            ));
        }
        let tds = v
            .entries
            .iter()
            .filter(|e| e.manifest.kind() == Kind::TaskDefinition)
            .count();
        if tds != 1 {
            problems.push(format!(
                "{}: {tds} task definitions in the output, expected 1",
                inp.name
            ));
        }
        assert_warnings_are_actionable(&imp, &BTreeSet::from([inp.name.clone()]));
        let missed = uncovered(&inp.name, &json, &imp, &parse_outputs(&imp));
        if !missed.is_empty() {
            problems.push(format!(
                "{}: input fields neither in the output nor in a warning: {}",
                inp.name,
                missed.join(", ")
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Snapshots of small fixtures.
// ---------------------------------------------------------------------------

#[test]
fn register_shape_with_awsvpc_awslogs_and_aws_secrets() {
    let imp = import_fixtures(&["web.json"]);
    insta::assert_snapshot!("register_yaml", imp.stream());
    insta::assert_snapshot!("register_warnings", render_warnings(&imp.warnings));
    let text = &imp.files[0].text;
    // The string amounts became numbers: 1 vCPU and 2 GB.
    assert!(text.contains("\n  cpu: 1024\n  memory: 2048\n"), "{text}");
}

#[test]
fn describe_task_definition_shape() {
    let imp = import_fixtures(&["worker-describe.json"]);
    insta::assert_snapshot!("describe_yaml", imp.stream());
    insta::assert_snapshot!("describe_warnings", render_warnings(&imp.warnings));
}

#[test]
fn describe_services_shape() {
    let imp = import_fixtures(&["web.json", "worker-describe.json", "services.json"]);
    let services: Vec<&str> = imp
        .files
        .iter()
        .filter(|f| matches!(f.kind, Kind::Service | Kind::Cluster))
        .map(|f| f.text.as_str())
        .collect();
    insta::assert_snapshot!("services_yaml", services.join("---\n"));
    insta::assert_snapshot!(
        "services_warnings",
        render_warnings(imp.warnings.iter().filter(|w| w.file == "services.json"))
    );
}

#[test]
fn fixes_that_keep_the_output_valid() {
    let imp = import_fixtures(&["edge-cases.json"]);
    insta::assert_snapshot!("edge_cases_yaml", imp.stream());
    insta::assert_snapshot!("edge_cases_warnings", render_warnings(&imp.warnings));
}

#[test]
fn fixtures_validate_and_account_for_every_field() {
    let names = [
        "web.json",
        "worker-describe.json",
        "services.json",
        "edge-cases.json",
    ];
    let imp = import_fixtures(&names);
    let v = validate_output(&imp);
    assert!(v.is_valid(), "{}", diagnostics(&v));
    assert_eq!(v.documents, imp.files.len());
    assert_warnings_are_actionable(&imp, &names.iter().map(|n| n.to_string()).collect());
    let outputs = parse_outputs(&imp);
    for name in names {
        let json: Value =
            serde_json::from_slice(&fs::read(fixtures().join(name)).unwrap()).unwrap();
        let missed = uncovered(name, &json, &imp, &outputs);
        assert!(
            missed.is_empty(),
            "{name}: fields neither in the output nor in a warning: {missed:?}"
        );
    }
}

#[test]
fn every_aws_secret_is_rewritten_to_a_secrets_directory_name() {
    let imp = import_fixtures(&["web.json", "worker-describe.json"]);
    let v = validate_output(&imp);
    let mut refs = BTreeSet::new();
    for e in &v.entries {
        if let Manifest::TaskDefinition(td) = &e.manifest {
            for c in &td.spec.container_definitions {
                for s in &c.secrets {
                    assert!(
                        !s.value_from.starts_with("arn:") && !s.value_from.contains('/'),
                        "{s:?}"
                    );
                    refs.insert(s.value_from.clone());
                }
            }
        }
    }
    // The same Secrets Manager value, used by two containers, is one file.
    assert_eq!(
        refs,
        BTreeSet::from([
            "prod.web.db-AbCdEf.password".to_string(),
            "prod.web.api-token".to_string(),
            "worker.queue-password".to_string(),
        ])
    );
    // And the user is told where to put each value.
    for r in &refs {
        assert!(
            imp.warnings.iter().any(|w| w
                .help
                .as_deref()
                .is_some_and(|h| h.contains(&format!("`{r}`")))),
            "no warning tells where to put {r}"
        );
    }
}

// ---------------------------------------------------------------------------
// Library errors.
// ---------------------------------------------------------------------------

fn import_json(name: &str, json: &str) -> Result<Import, Vec<ImportError>> {
    import::ecs(
        &[Input {
            name: name.into(),
            bytes: json.as_bytes().to_vec(),
        }],
        &Options::default(),
    )
}

fn error_paths(r: Result<Import, Vec<ImportError>>) -> Vec<String> {
    r.expect_err("the import must fail")
        .into_iter()
        .map(|e| format!("{}: {}", e.file, e.path.unwrap_or_default()))
        .collect()
}

#[test]
fn inputs_that_cannot_be_imported_name_file_and_field() {
    assert_eq!(
        error_paths(import_json("a.json", r#"{"family": "a"}"#)),
        ["a.json: containerDefinitions"]
    );
    assert_eq!(
        error_paths(import_json(
            "b.json",
            r#"{"family": "my.app", "containerDefinitions": [{"name": "x", "image": "y", "memory": 64}]}"#
        )),
        ["b.json: family"]
    );
    assert_eq!(
        error_paths(import_json(
            "c.json",
            r#"{"family": "c", "containerDefinitions": [{"name": "ok", "image": "i", "memory": 64}, {"name": "bad", "memory": 64}, {"image": "i"}]}"#
        )),
        [
            "c.json: containerDefinitions[1].image",
            "c.json: containerDefinitions[2].name"
        ]
    );
    assert_eq!(
        error_paths(import_json("d.json", r#"{"clusters": []}"#)),
        ["d.json: "]
    );
    // A service needs its task definition in the same run.
    assert_eq!(
        error_paths(import_json(
            "e.json",
            r#"{"services": [{"serviceName": "web", "clusterArn": "arn:aws:ecs:eu-west-1:1:cluster/prod", "taskDefinition": "arn:aws:ecs:eu-west-1:1:task-definition/web:3", "desiredCount": 1}]}"#
        )),
        ["e.json: services[0].taskDefinition"]
    );
}

#[test]
fn invalid_json_reports_line_and_column() {
    let errors = import_json("x.json", "{\n  \"family\": \"x\",\n  oops\n}").expect_err("invalid");
    assert_eq!((errors[0].line, errors[0].column), (Some(3), Some(3)));
    assert!(
        errors[0].message.starts_with("invalid JSON"),
        "{}",
        errors[0].message
    );
}

// ---------------------------------------------------------------------------
// The command line.
// ---------------------------------------------------------------------------

#[test]
fn round_trip_import_then_validate_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("manifests");
    reconcile()
        .current_dir(fixtures())
        .args([
            "import",
            "ecs",
            "web.json",
            "worker-describe.json",
            "services.json",
            "--out",
        ])
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::contains("warning: web.json: networkMode:"));

    let mut written: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(
        written,
        [
            "batch.cluster.yaml",
            "prod.cluster.yaml",
            "web.service.yaml",
            "web.yaml",
            "worker.service.yaml",
            "worker.yaml"
        ]
    );

    reconcile().arg("validate").arg(&out).assert().success();

    let v = validate::validate(source::read_dir(&out).unwrap());
    assert!(v.is_valid(), "{}", diagnostics(&v));
    let resources: BTreeSet<(Kind, String)> = v
        .entries
        .iter()
        .map(|e| (e.manifest.kind(), e.manifest.name().to_string()))
        .collect();
    let expected: BTreeSet<(Kind, String)> = [
        (Kind::Cluster, "prod"),
        (Kind::Cluster, "batch"),
        (Kind::TaskDefinition, "web"),
        (Kind::TaskDefinition, "worker"),
        (Kind::Service, "web"),
        (Kind::Service, "worker"),
    ]
    .into_iter()
    .map(|(k, n)| (k, n.to_string()))
    .collect();
    assert_eq!(resources, expected);
    let services: BTreeSet<(String, String, String)> = v
        .entries
        .iter()
        .filter_map(|e| match &e.manifest {
            Manifest::Service(s) => Some((
                s.metadata.name.clone(),
                s.spec.cluster.clone(),
                s.spec.task_definition.clone(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        services,
        BTreeSet::from([
            ("web".into(), "prod".into(), "web".into()),
            ("worker".into(), "batch".into(), "worker".into()),
        ])
    );

    // The imported manifests plan as the expected creates: two clusters,
    // task definitions registering web:1 and worker:1, two services.
    let desired =
        reconcile::model::DesiredState::from_manifests(v.entries.iter().map(|e| &e.manifest));
    let observed = reconcile::model::ObservedState {
        nodes: vec![reconcile::model::NodeInfo {
            name: "node".into(),
            cluster: "*".into(),
            attributes: Default::default(),
            cpu: 64 * 1024,
            memory: 256 * 1024,
            reserved_ports: Vec::new(),
        }],
        ..Default::default()
    };
    let plan = reconcile::plan::plan(&desired, &observed, &reconcile::plan::Options::default());
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    let creates: BTreeSet<(Kind, String)> = plan
        .changes()
        .map(|c| {
            assert_eq!(c.action, reconcile::plan::Action::Create, "{}", c.address);
            (c.kind, c.name.clone())
        })
        .collect();
    assert_eq!(creates, expected);
    for c in plan.changes().filter(|c| c.kind == Kind::TaskDefinition) {
        let r = c.revision.as_ref().unwrap();
        assert_eq!(
            (r.from, r.to, r.registers),
            (None, 1, true),
            "{}",
            c.address
        );
    }
    assert_eq!(plan.summary.add, expected.len());
}

#[test]
fn stdout_stream_is_one_valid_source() {
    let assert = reconcile()
        .current_dir(fixtures())
        .args([
            "import",
            "ecs",
            "web.json",
            "worker-describe.json",
            "services.json",
        ])
        .assert()
        .success();
    let stream = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    assert_eq!(
        stream.matches("\n---\n").count(),
        5,
        "six documents:\n{stream}"
    );
    assert!(stream.starts_with("# yaml-language-server: $schema=../schemas/cluster.json\n"));
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("all.yaml"), &stream).unwrap();
    reconcile()
        .arg("validate")
        .arg(tmp.path())
        .assert()
        .success();
}

#[test]
fn schema_base_sets_the_modeline() {
    let assert = reconcile()
        .current_dir(fixtures())
        .args([
            "import",
            "ecs",
            "worker-describe.json",
            "--schema-base",
            "https://example.com/reconcile/schemas/",
        ])
        .assert()
        .success();
    let stream = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    assert!(
        stream.starts_with("# yaml-language-server: $schema=https://example.com/reconcile/schemas/task-definition.json\n"),
        "{stream}"
    );
}

#[test]
fn missing_file_is_a_usage_error_naming_it() {
    reconcile()
        .current_dir(fixtures())
        .args(["import", "ecs", "web.json", "does-not-exist.json"])
        .assert()
        .code(2)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::contains(
            "`does-not-exist.json` does not exist",
        ));
}

#[test]
fn invalid_json_exits_1_with_file_line_and_column() {
    reconcile()
        .current_dir(fixtures())
        .args(["import", "ecs", "invalid/not-json.json"])
        .assert()
        .code(1)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::contains(
            "invalid/not-json.json:4:38: invalid JSON",
        ));
}

#[test]
fn missing_image_exits_1_naming_the_field() {
    reconcile()
        .current_dir(fixtures())
        .args(["import", "ecs", "invalid/missing-image.json"])
        .assert()
        .code(1)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::contains(
            "invalid/missing-image.json: containerDefinitions[0].image: missing `image`",
        ));
    // The suggested fix works.
    reconcile()
        .current_dir(fixtures())
        .args([
            "import",
            "ecs",
            "invalid/missing-image.json",
            "--image",
            "web=nginx:1.27",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("image: nginx:1.27"));
}

#[test]
fn image_for_an_unknown_container_is_an_error() {
    reconcile()
        .current_dir(fixtures())
        .args([
            "import",
            "ecs",
            "worker-describe.json",
            "--image",
            "wroker=x:1",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "no imported container is named `wroker`",
        ));
}

#[test]
fn one_bad_input_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    reconcile()
        .current_dir(fixtures())
        .args([
            "import",
            "ecs",
            "web.json",
            "invalid/missing-image.json",
            "--out",
        ])
        .arg(&out)
        .assert()
        .code(1);
    assert!(!out.exists(), "nothing may be written when an input fails");
}

#[test]
fn existing_files_are_not_overwritten_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let run = |force: bool| {
        let mut cmd = reconcile();
        cmd.current_dir(fixtures())
            .args(["import", "ecs", "worker-describe.json", "--out"])
            .arg(out);
        if force {
            cmd.arg("--force");
        }
        cmd.assert()
    };
    run(false).success();
    fs::write(out.join("worker.yaml"), "# edited by hand\n").unwrap();
    run(false)
        .code(1)
        .stderr(predicate::str::contains("worker.yaml: already exists"));
    assert_eq!(
        fs::read_to_string(out.join("worker.yaml")).unwrap(),
        "# edited by hand\n"
    );
    run(true).success();
    assert!(fs::read_to_string(out.join("worker.yaml"))
        .unwrap()
        .contains("kind: TaskDefinition"));
}

#[test]
fn clusters_already_in_the_output_directory_are_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    fs::write(
        out.join("clusters.yaml"),
        "apiVersion: reconcile/v1alpha1\nkind: Cluster\nmetadata:\n  name: prod\nspec: {}\n",
    )
    .unwrap();
    reconcile()
        .current_dir(fixtures())
        .args([
            "import",
            "ecs",
            "web.json",
            "worker-describe.json",
            "services.json",
            "--out",
        ])
        .arg(out)
        .assert()
        .success();
    assert!(
        !out.join("prod.cluster.yaml").exists(),
        "prod is defined in clusters.yaml already"
    );
    assert!(out.join("batch.cluster.yaml").exists());
    reconcile().arg("validate").arg(out).assert().success();
}

#[test]
fn json_format_prints_machine_readable_warnings() {
    let assert = reconcile()
        .current_dir(fixtures())
        .args(["import", "ecs", "web.json", "--format", "json"])
        .assert()
        .success();
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    let doc: Value = serde_json::from_str(stderr.trim()).expect("one JSON object on stderr");
    assert_eq!(doc["ok"], true);
    let warnings = doc["warnings"].as_array().unwrap();
    assert!(warnings.iter().any(|w| w["file"] == "web.json"
        && w["paths"][0] == "containerDefinitions[0].logConfiguration"
        && w["level"] == "warning"
        && w["help"].is_string()));
}

#[test]
fn manifests_already_in_the_output_directory_are_used() {
    let existing = vec![RawFile {
        name: "base.yaml".into(),
        content: Content::Bytes(
            "apiVersion: reconcile/v1alpha1
kind: CapacityProvider
metadata:
  name: spot
spec:
  nodeSelector: {pool: spot}
---
apiVersion: reconcile/v1alpha1
kind: Cluster
metadata:
  name: prod
spec:
  capacityProviders: [spot]
---
apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata:
  name: api
spec:
  memory: 128
  containerDefinitions:
    - {name: api, image: busybox:stable}
"
            .into(),
        ),
    }];
    let services = r#"{"services": [
      {"serviceName": "api", "clusterArn": "arn:aws:ecs:eu-west-1:123456789012:cluster/prod",
       "taskDefinition": "arn:aws:ecs:eu-west-1:123456789012:task-definition/api:4", "desiredCount": 1,
       "deploymentConfiguration": {"minimumHealthyPercent": 100, "maximumPercent": 100},
       "capacityProviderStrategy": [{"capacityProvider": "spot", "weight": 1}]},
      {"serviceName": "api", "clusterArn": "arn:aws:ecs:eu-west-1:123456789012:cluster/staging",
       "taskDefinition": "api", "desiredCount": 2}
    ]}"#;
    let options = Options {
        existing: existing.clone(),
        ..Options::default()
    };
    let imp = import::ecs(
        &[Input {
            name: "services.json".into(),
            bytes: services.as_bytes().to_vec(),
        }],
        &options,
    )
    .unwrap_or_else(|e| panic!("{}", render_errors(&e)));

    // The task definition and cluster `prod` come from the directory; one
    // service name in two clusters gets two file names.
    let names: Vec<&str> = imp.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "staging.cluster.yaml",
            "api.prod.service.yaml",
            "api.staging.service.yaml"
        ]
    );

    let mut all = existing;
    all.extend(imp.files.iter().map(|f| RawFile {
        name: f.name.clone(),
        content: Content::Bytes(f.text.as_bytes().to_vec()),
    }));
    let v = validate::validate(all);
    assert!(v.is_valid(), "{}", diagnostics(&v));
    let prod = v
        .entries
        .iter()
        .find_map(|e| match &e.manifest {
            Manifest::Service(s) if s.spec.cluster == "prod" => Some(s.spec.clone()),
            _ => None,
        })
        .expect("service api in prod");
    // The provider is attached to `prod`, so the strategy is kept.
    assert_eq!(prod.capacity_provider_strategy.len(), 1);
    // desiredCount 1 with 100/100 could never deploy: the floor is lowered.
    assert_eq!(
        prod.deployment_configuration.minimum_healthy_percent,
        Some(0)
    );
    assert!(imp.warnings.iter().any(|w| w.level == Level::Warning
        && w.paths == ["services[0].deploymentConfiguration.minimumHealthyPercent"]));
}

#[test]
fn load_balancers_and_registries_become_listeners_and_dns_names() {
    // Two services behind target groups on the same container port, one of
    // them with a static host port 8080 and a Cloud Map registry: the
    // listeners keep port 8080 where it is free and move where it is not,
    // and the output validates.
    let td = |family: &str, host_port: u16| {
        format!(
            r#"{{"family": "{family}", "containerDefinitions": [{{"name": "web", "image": "busybox:stable", "memory": 64, "portMappings": [{{"containerPort": 8080, "hostPort": {host_port}}}]}}]}}"#
        )
    };
    let service = |name: &str, family: &str, extra: &str| {
        format!(
            r#"{{"serviceName": "{name}", "clusterArn": "arn:aws:ecs:eu-west-1:1:cluster/prod", "taskDefinition": "arn:aws:ecs:eu-west-1:1:task-definition/{family}:3", "desiredCount": 1,
              "loadBalancers": [{{"targetGroupArn": "arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/{name}/1", "containerName": "web", "containerPort": 8080}}]{extra}}}"#
        )
    };
    let services = format!(
        r#"{{"services": [{}, {}]}}"#,
        service(
            "Shop_Web",
            "shop",
            r#", "serviceRegistries": [{"registryArn": "arn:aws:servicediscovery:eu-west-1:1:service/srv-1", "containerName": "web", "containerPort": 8080}]"#
        ),
        service("api", "api", "")
    );
    let inputs: Vec<Input> = [
        ("shop.json", td("shop", 0)),
        ("api.json", td("api", 8080)),
        ("services.json", services),
    ]
    .into_iter()
    .map(|(name, json)| Input {
        name: name.into(),
        bytes: json.into_bytes(),
    })
    .collect();
    let imp = import::ecs(&inputs, &Options::default())
        .unwrap_or_else(|e| panic!("import failed:\n{}", render_errors(&e)));
    let v = validate_output(&imp);
    assert!(v.is_valid(), "{}", diagnostics(&v));
    let specs: Vec<_> = v
        .entries
        .iter()
        .filter_map(|e| match &e.manifest {
            Manifest::Service(s) => Some((s.metadata.name.as_str(), &s.spec)),
            _ => None,
        })
        .collect();
    let spec = |n: &str| specs.iter().find(|(name, _)| *name == n).unwrap().1;
    // api's tasks bind host port 8080, so no listener of the cluster may.
    assert_eq!(spec("Shop_Web").load_balancers[0].listener_port, 8081);
    assert_eq!(spec("api").load_balancers[0].listener_port, 8082);
    let registry = &spec("Shop_Web").service_registries[0];
    assert_eq!(registry.name.as_deref(), Some("shop-web"));
    assert_eq!(registry.container_port, 8080);
    insta::assert_snapshot!(
        "traffic_warnings",
        render_warnings(imp.warnings.iter().filter(|w| w.file == "services.json"))
    );
    assert_warnings_are_actionable(&imp, &inputs.iter().map(|i| i.name.clone()).collect());
}
