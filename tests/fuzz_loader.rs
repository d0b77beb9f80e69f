//! Property-based fuzzing of the loader and validator: arbitrary bytes,
//! mutated fixtures and generated YAML must never panic, and every
//! diagnostic must point inside its file at a consistent line and column.
//!
//! Inputs that once broke an invariant live in tests/fixtures/fuzz-regressions
//! and are replayed by `regressions_stay_fixed`. Raise PROPTEST_CASES for a
//! longer session.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use reconcile::source::{Content, RawFile};
use reconcile::validate::{self, Validation};
use reconcile::yaml::{self, Limits};

/// 512 cases per property by default; PROPTEST_CASES raises it.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

fn run(bytes: Vec<u8>) -> Validation {
    validate::validate(vec![RawFile {
        name: "fuzz.yaml".into(),
        content: Content::Bytes(bytes),
    }])
}

/// Every span lies inside the text, on a character boundary, and its line
/// and column are those of its offset.
fn spans_are_consistent(v: &Validation) -> Result<(), TestCaseError> {
    for d in &v.diagnostics {
        prop_assert!(d.span.line >= 1 && d.span.column >= 1, "{d:?}");
        let Some(text) = v
            .files
            .iter()
            .find(|f| f.name == d.file)
            .and_then(|f| f.text.clone())
        else {
            continue;
        };
        prop_assert!(
            d.span.offset + d.span.len <= text.len(),
            "{d:?} beyond {}",
            text.len()
        );
        prop_assert!(text.is_char_boundary(d.span.offset), "{d:?}");
        prop_assert!(text.is_char_boundary(d.span.offset + d.span.len), "{d:?}");
        let before = &text[..d.span.offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().unwrap().chars().count() + 1;
        prop_assert_eq!((d.span.line, d.span.column), (line, col), "{:?}", d);
    }
    Ok(())
}

fn fixture_texts() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid");
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(std::fs::read_to_string(p).unwrap());
            }
        }
    }
    out.sort();
    out
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, String),
    Delete(usize, usize),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let token = prop::sample::select(vec![
        ":", "- ", "[", "]", "{", "}", ",", "&a ", "*a", "!", "|", ">", "'", "\"", "#", "\n", "\t",
        "  ", "---\n", "...\n", "? ", "é", "\u{0}", "\u{feff}", "~", "0x", ".inf", "<<: ",
    ]);
    prop_oneof![
        (any::<usize>(), token).prop_map(|(p, t)| Edit::Insert(p, t.to_string())),
        (any::<usize>(), 0usize..40).prop_map(|(p, n)| Edit::Delete(p, n)),
        (any::<usize>(), 0usize..200).prop_map(|(p, n)| Edit::Duplicate(p, n)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let len = chars.len().max(1);
        match e {
            Edit::Insert(p, t) => {
                let at = p % (chars.len() + 1);
                chars.splice(at..at, t.chars());
            }
            Edit::Delete(p, n) => {
                let at = p % len;
                let end = (at + n).min(chars.len());
                if at < end {
                    chars.drain(at..end);
                }
            }
            Edit::Duplicate(p, n) => {
                let at = p % len;
                let end = (at + n).min(chars.len());
                let copy: Vec<char> = chars[at.min(end)..end].to_vec();
                chars.splice(end..end, copy);
            }
        }
    }
    chars.into_iter().collect()
}

/// JSON values YAML can carry, for the emitter round trip.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::String),
        // U+0085, U+2028 and U+2029 are line breaks to the YAML 1.1
        // emitter but ordinary characters in YAML 1.2, which the loader
        // reads; the round trip is only defined where both versions agree.
        "\\PC{0,8}"
            .prop_filter("YAML 1.1 line breaks", |s| !s
                .contains(['\u{85}', '\u{2028}', '\u{2029}']))
            .prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z0-9_./~-]{1,10}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/proptest-regressions/fuzz_loader.txt"
        )))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let v = run(bytes);
        spans_are_consistent(&v)?;
    }

    #[test]
    fn mutated_fixtures_never_panic(which in any::<prop::sample::Index>(), edits in prop::collection::vec(edit(), 1..8)) {
        let texts = fixture_texts();
        let text = apply(which.get::<String>(&texts), &edits);
        let v = run(text.into_bytes());
        spans_are_consistent(&v)?;
    }

    /// Differential: whatever a YAML emitter writes, the loader reads back
    /// as the same value.
    #[test]
    fn loader_reads_back_what_an_emitter_writes(value in json_value()) {
        let text = yaml_serde::to_string(&value).unwrap();
        let loaded = yaml::load(&text, Limits::default());
        prop_assert!(loaded.errors.is_empty(), "{:?}\n{}", loaded.errors, text);
        let got = loaded.documents.first().map(|d| d.value.clone()).unwrap_or(serde_json::Value::Null);
        prop_assert_eq!(got, value, "{}", text);
    }
}

#[test]
fn regressions_stay_fixed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz-regressions");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        n += 1;
        let text = std::fs::read_to_string(&p).unwrap();
        let loaded = yaml::load(&text, Limits::default());
        let json = p.with_extension("json");
        let error = p.with_extension("error");
        if json.exists() {
            let want: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
            assert!(
                loaded.errors.is_empty(),
                "{}: {:?}",
                p.display(),
                loaded.errors
            );
            assert_eq!(loaded.documents[0].value, want, "{}", p.display());
        } else {
            let want = std::fs::read_to_string(&error)
                .unwrap_or_else(|_| panic!("{} has no .json or .error", p.display()));
            assert!(
                loaded
                    .errors
                    .iter()
                    .any(|(_, e)| e.message.contains(want.trim())),
                "{}: expected an error containing {:?}, got {:?}",
                p.display(),
                want.trim(),
                loaded.errors
            );
        }
        // Whole-pipeline invariants hold for them too.
        let v = run(text.into_bytes());
        assert!(v.diagnostics.iter().all(|d| d.span.line >= 1));
    }
    assert!(n >= 7, "the regression corpus lost files ({n})");
}
