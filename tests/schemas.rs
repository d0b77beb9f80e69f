//! The committed schemas/ directory is exactly what `reconcile schema`
//! generates: editors and other validators read those files, so a change to
//! the types that is not re-published must fail here.

use std::path::Path;

#[test]
fn committed_schemas_match_the_generator() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let mut stale = Vec::new();
    for (name, text) in reconcile::schema::published() {
        match std::fs::read_to_string(dir.join(&name)) {
            Ok(committed) if committed == text => {}
            Ok(_) => stale.push(format!("{name} differs")),
            Err(e) => stale.push(format!("{name}: {e}")),
        }
    }
    // Every file under schemas/ (one level of subdirectories: api/).
    let mut present = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            for f in std::fs::read_dir(e.path()).unwrap() {
                present.push(format!(
                    "{name}/{}",
                    f.unwrap().file_name().to_string_lossy()
                ));
            }
        } else {
            present.push(name);
        }
    }
    let extra: Vec<String> = present
        .into_iter()
        .filter(|n| !reconcile::schema::published().iter().any(|(p, _)| p == n))
        .collect();
    assert!(
        extra.is_empty(),
        "files in schemas/ the generator does not write: {extra:?}"
    );
    assert!(
        stale.is_empty(),
        "schemas/ is stale ({}); run `cargo run -- schema --out schemas`",
        stale.join(", ")
    );
}

#[test]
fn cli_writes_the_same_files() {
    let out = tempfile::tempdir().unwrap();
    assert_cmd::Command::cargo_bin("reconcile")
        .unwrap()
        .args(["schema", "--out"])
        .arg(out.path())
        .assert()
        .success();
    for (name, text) in reconcile::schema::published() {
        assert_eq!(
            std::fs::read_to_string(out.path().join(&name)).unwrap(),
            text,
            "{name}"
        );
    }
}
