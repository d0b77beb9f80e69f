//! What people and programs read before saying yes: the plan text and JSON
//! for each kind of change, pinned with insta snapshots.

mod common;

use common::{desired, nodes, World, BASE};
use reconcile::plan::render::{self, Style};
use reconcile::plan::Plan;

fn text(p: &Plan) -> String {
    render::text(
        p,
        Style {
            colour: false,
            detail: false,
        },
    )
}

fn detail(p: &Plan) -> String {
    render::text(
        p,
        Style {
            colour: false,
            detail: true,
        },
    )
}

fn json(p: &Plan) -> serde_json::Value {
    render::json(p)
}

fn converged() -> World {
    let mut w = World::new(nodes(3, 2048, 4096));
    w.apply(&desired(BASE)).unwrap();
    w
}

#[test]
fn create() {
    let w = World::new(nodes(3, 2048, 4096));
    let p = w.plan(&desired(BASE));
    insta::assert_snapshot!("create", text(&p));
    insta::assert_snapshot!("create_detail", detail(&p));
    insta::assert_json_snapshot!("create_json", json(&p));
}

#[test]
fn no_op() {
    let w = converged();
    let p = w.plan(&desired(BASE));
    assert!(!p.has_changes());
    insta::assert_snapshot!("no_op", text(&p));
}

#[test]
fn update_in_place() {
    let w = converged();
    let d = desired(&BASE.replace(
        "desiredCount: 4",
        "desiredCount: 5\n  healthCheckGracePeriodSeconds: 30",
    ));
    let p = w.plan(&d);
    insta::assert_snapshot!("update_scale_out", text(&p));
    insta::assert_json_snapshot!("update_scale_out_json", json(&p));
}

#[test]
fn rolling_deployment() {
    let w = converged();
    let d = desired(&BASE.replace("value: prod", "value: canary"));
    let p = w.plan(&d);
    insta::assert_snapshot!("rolling_deployment", text(&p));
    insta::assert_json_snapshot!("rolling_deployment_json", json(&p));
    let d = desired(&BASE.replace("value: prod", "value: canary").replace(
        "desiredCount: 4",
        "desiredCount: 4\n  deploymentConfiguration: {minimumHealthyPercent: 50, maximumPercent: 100}",
    ));
    insta::assert_snapshot!("rolling_deployment_50_100", text(&w.plan(&d)));
}

#[test]
fn replace() {
    let w = converged();
    let d = desired(&BASE.replace("desiredCount: 4", "schedulingStrategy: DAEMON"));
    let p = w.plan(&d);
    insta::assert_snapshot!("replace", text(&p));
}

#[test]
fn delete() {
    let w = converged();
    let only_cluster = BASE.split("---").next().unwrap();
    let p = w.plan(&desired(only_cluster));
    insta::assert_snapshot!("delete", text(&p));
    insta::assert_json_snapshot!("delete_json", json(&p));
    assert_eq!(
        p.errors.len(),
        1,
        "deleting every service needs --allow-mass-delete"
    );
}

#[test]
fn placement_failure() {
    let w = World::new(nodes(2, 1024, 1024));
    let d = desired(&BASE.replace(
        "desiredCount: 4",
        "desiredCount: 6\n  placementConstraints: [{type: distinctInstance}]",
    ));
    let p = w.plan(&d);
    insta::assert_snapshot!("placement_failure", text(&p));
    insta::assert_json_snapshot!("placement_failure_json", json(&p));
}

#[test]
fn secret_change_shows_only_fingerprints() {
    let with_secret = BASE.replace(
        "environment: [{name: MODE, value: prod}]",
        "environment: [{name: MODE, value: prod}]\n      secrets: [{name: DB_PASSWORD, valueFrom: db-password}]",
    );
    let mut d = desired(&with_secret);
    d.secret_fingerprints
        .insert("db-password".into(), "sha256:1111aaaa2222".into());
    let mut w = World::new(nodes(3, 2048, 4096));
    // The sim resolves nothing: apply with a resolver pointed at a file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("db-password"),
        "correct horse battery staple",
    )
    .unwrap();
    std::env::set_var("RECONCILE_SECRETS_DIR", dir.path());
    let p = w.plan(&d);
    let resolver = reconcile::secrets::Resolver {
        dir: dir.path().to_path_buf(),
    };
    common::block(reconcile::apply::apply(
        &p,
        &d,
        &mut w.stored,
        &w.sim,
        &resolver,
        &reconcile::apply::Options {
            settle: std::time::Duration::ZERO,
            ..Default::default()
        },
        &w.sink,
    ))
    .unwrap();
    d.secret_fingerprints
        .insert("db-password".into(), "sha256:3333bbbb4444".into());
    let p = w.plan(&d);
    let t = text(&p);
    let j = serde_json::to_string(&json(&p)).unwrap();
    assert!(!t.contains("correct horse") && !j.contains("correct horse"));
    insta::assert_snapshot!("secret_change", t);
    insta::assert_json_snapshot!("secret_change_json", json(&p));
}

#[test]
fn daemon_rolls_node_by_node() {
    let daemon = BASE.replace("desiredCount: 4", "schedulingStrategy: DAEMON");
    let mut w = World::new(nodes(3, 2048, 4096));
    w.apply(&desired(&daemon)).unwrap();
    let d = desired(&daemon.replace("value: prod", "value: canary"));
    let p = w.plan(&d);
    insta::assert_snapshot!("daemon_rolls_node_by_node", text(&p));
    let steps = &p
        .resource_changes
        .iter()
        .find(|c| c.name == "web" && c.tasks.is_some())
        .unwrap()
        .tasks
        .as_ref()
        .unwrap()
        .deployment
        .as_ref()
        .unwrap()
        .steps;
    assert_eq!(steps.len(), 3, "one step per node");
    // Applying does it one node at a time and converges.
    w.apply(&d).unwrap();
    assert!(!w.plan(&d).has_changes());
}
