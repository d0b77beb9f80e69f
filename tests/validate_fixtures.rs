//! Every fixture set under tests/fixtures is validated and its diagnostics
//! compared, exactly, with the `expected.txt` beside it: severity,
//! file:line:column, JSON pointer, check, message and help.
//!
//! Valid sets must produce no error (their expected.txt lists any warning).
//! Set `UPDATE_EXPECT=1` to rewrite the files after an intended change, then
//! review the diff.

use std::path::{Path, PathBuf};

use reconcile::source;
use reconcile::validate::{self, Severity};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn render(dir: &Path) -> (bool, String) {
    show(&validate::validate(
        source::read_dir(dir).expect("fixture set is readable"),
    ))
}

fn show(v: &validate::Validation) -> (bool, String) {
    let mut out = String::new();
    for d in &v.diagnostics {
        let sev = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        out.push_str(&format!(
            "{sev} {}:{}:{} {} [{}] {}",
            d.file, d.span.line, d.span.column, d.pointer, d.code, d.message
        ));
        if let Some(h) = &d.help {
            out.push_str(&format!(" | help: {h}"));
        }
        for r in &d.related {
            out.push_str(&format!(
                " | {}: {}:{}:{}",
                r.message, r.file, r.span.line, r.span.column
            ));
        }
        out.push('\n');
    }
    (v.is_valid(), out)
}

fn sets(group: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures().join(group))
        .expect("fixture group exists")
        .map(|e| e.expect("readable").path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fixture sets in {group}");
    v
}

fn check(set: &Path, want_valid: bool) -> Option<String> {
    let (valid, got) = render(set);
    let expected_path = set.join("expected.txt");
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        if got.is_empty() {
            let _ = std::fs::remove_file(&expected_path);
        } else {
            std::fs::write(&expected_path, &got).unwrap();
        }
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    let name = set.file_name().unwrap().to_string_lossy();
    if valid != want_valid {
        return Some(format!(
            "{name}: valid = {valid}, expected {want_valid}\n{got}"
        ));
    }
    if !want_valid && got.is_empty() {
        return Some(format!("{name}: invalid set produced no diagnostics"));
    }
    (got != expected)
        .then(|| format!("{name}: diagnostics differ\n--- expected\n{expected}--- got\n{got}"))
}

#[test]
fn valid_sets_have_no_errors() {
    let failures: Vec<String> = sets("valid")
        .iter()
        .filter_map(|s| check(s, true))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn invalid_sets_report_exact_diagnostics() {
    let failures: Vec<String> = sets("invalid")
        .iter()
        .filter_map(|s| check(s, false))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn examples_are_valid() {
    // Each directory is a source of its own.
    for source in ["examples/manifests", "examples/traffic"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(source);
        let (valid, got) = render(&dir);
        assert!(valid && got.is_empty(), "{source}: {got}");
    }
}

/// The controller validates through a cache of per-file results: it must
/// report exactly what a fresh validation does, whether the files are new
/// (cold), unchanged (warm), or share names with other content (every set
/// has a `cluster.yaml` or the like, with different bytes).
#[test]
fn the_file_cache_never_changes_what_validation_reports() {
    let mut cache = validate::FileCache::default();
    let mut all = sets("valid");
    all.extend(sets("invalid"));
    let mut failures = Vec::new();
    for round in ["after another set", "unchanged"] {
        for set in &all {
            let read = || source::read_dir(set).expect("fixture set is readable");
            let want = show(&validate::validate(read()));
            let cold_or_warm = show(&validate::validate_cached(read(), &mut cache));
            let again = show(&validate::validate_cached(read(), &mut cache));
            for got in [cold_or_warm, again] {
                if got != want {
                    failures.push(format!("{} ({round}): {got:?} != {want:?}", set.display()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
