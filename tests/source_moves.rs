//! A directory source that moves keeps what it runs; a second source for
//! the same cluster is refused while the first still declares it. Real
//! Docker, through the binary, with one state directory as a user has.

#[path = "common/docker.rs"]
mod docker;

use docker::{Source, SERIAL};

const MANIFESTS: &str = "apiVersion: reconcile/v1alpha1
kind: Cluster
metadata: {name: moving}
spec: {}
---
apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {name: app}
spec:
  memory: 32
  containerDefinitions:
    - name: main
      image: busybox:stable
      command: [sleep, \"3600\"]
      stopTimeout: 1
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {name: app}
spec: {cluster: moving, taskDefinition: app, desiredCount: 1}
";

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_moved_source_keeps_what_runs_and_a_clone_beside_it_is_refused() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The guard removes the containers by the first path's id, which the
    // moved source keeps.
    let s = Source::new(&[("app.yaml", MANIFESTS)]);
    s.apply();
    let first: Vec<_> = s.containers().into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(first.len(), 1, "{first:?}");

    let work = tempfile::tempdir().unwrap();
    let moved = work.path().join("moved");
    let run = |args: &[&str]| s.run_text(args);

    // `mv src src-moved`: the plan is empty, status shows the task, and
    // the note says where it came from.
    copy_dir(s.path(), &moved);
    std::fs::remove_file(s.path().join("app.yaml")).unwrap();
    let moved_src = moved.display().to_string();
    let (code, text) = run(&["plan", &moved_src, "--detailed-exitcode"]);
    assert_eq!(code, 0, "a moved source plans no changes:\n{text}");
    assert!(text.contains("No changes"), "{text}");
    assert!(
        text.contains("was applied from"),
        "the move is said: {text}"
    );
    let out = s.run(&["status", &moved_src, "--format", "json"]);
    assert!(out.status.success(), "{out:?}");
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        st["services"][0]["tasks"].as_array().unwrap().len(),
        1,
        "{st}"
    );
    // Applying from the new path changes nothing and records it: the note
    // is not repeated.
    let (code, text) = run(&["apply", &moved_src, "--auto-approve", "--timeout", "60"]);
    assert_eq!(code, 0, "{text}");
    let now: Vec<_> = s.containers().into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(now, first, "the same container runs");
    let (code, text) = run(&["plan", &moved_src, "--detailed-exitcode"]);
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("was applied from"), "{text}");

    // A clone beside it is refused, naming the cluster and the owner, and
    // starts nothing.
    let clone = work.path().join("clone");
    copy_dir(&moved, &clone);
    let clone_src = clone.display().to_string();
    for cmd in [
        vec!["plan", clone_src.as_str()],
        vec!["apply", clone_src.as_str(), "--auto-approve"],
        vec!["destroy", clone_src.as_str(), "--auto-approve"],
    ] {
        let (code, text) = run(&cmd);
        assert_eq!(code, 2, "{cmd:?} is refused:\n{text}");
        assert!(
            text.contains("cluster `moving` is managed by the source at")
                && text.contains(&moved_src),
            "{cmd:?}: {text}"
        );
    }
    assert_eq!(s.containers().len(), 1);

    // Destroyed from where it lives, the cluster is free for the clone.
    let (code, text) = run(&["destroy", &moved_src, "--auto-approve"]);
    assert_eq!(code, 0, "{text}");
    assert!(s.containers().is_empty(), "{:?}", s.containers());
    let (code, text) = run(&["plan", &clone_src, "--detailed-exitcode"]);
    assert_eq!(code, 2, "the clone plans to create the service:\n{text}");
    assert!(!text.contains("is managed by"), "{text}");
    assert!(text.contains("moving/app"), "{text}");
}
