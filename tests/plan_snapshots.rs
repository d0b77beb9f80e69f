//! What people and programs read before saying yes: the plan text and JSON
//! for each kind of change, pinned with insta snapshots.

mod common;

use common::{desired, nodes, World, BASE};
use reconcile::model::DesiredState;
use reconcile::plan::render::{self, Style};
use reconcile::plan::Plan;
use reconcile::secrets::{InstallKey, Resolver, SecretValue};

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
    const OLD: &str = "correct horse battery staple";
    const NEW: &str = "Tr0ub4dor&3 was never better";
    let with_secret = BASE.replace(
        "environment: [{name: MODE, value: prod}]",
        "environment: [{name: MODE, value: prod}]\n      secrets: [{name: DB_PASSWORD, valueFrom: db-password}]",
    );
    // The secret is a file in a secrets directory, resolved as the CLI and
    // the controller resolve it: the plan sees what the real path makes of
    // the value.
    let dir = tempfile::tempdir().unwrap();
    // A fixed installation key: the fingerprints in the snapshots repeat.
    let resolver = Resolver::standalone(dir.path(), &InstallKey::from_bytes([7; 32]));
    let resolved = |value: &str| -> DesiredState {
        std::fs::write(dir.path().join("db-password"), format!("{value}\n")).unwrap();
        let mut d = desired(&with_secret);
        let errors = d.fingerprint_secrets(&resolver);
        assert!(errors.is_empty(), "{errors:?}");
        d
    };
    let fingerprint = |value: &str| resolver.fingerprint(&SecretValue::new(value.into()));

    let d = resolved(OLD);
    assert_eq!(d.secret_fingerprints["db-password"], fingerprint(OLD));
    let mut w = World::new(nodes(3, 2048, 4096));
    w.apply_with(&d, &resolver).unwrap();
    assert!(!w.plan(&d).has_changes());

    let d = resolved(NEW);
    let (old, new) = (fingerprint(OLD), fingerprint(NEW));
    assert_ne!(old, new);
    let p = w.plan(&d);
    let t = text(&p);
    let j = serde_json::to_string(&json(&p)).unwrap();
    for (what, out) in [
        ("text", &t),
        ("detailed text", &detail(&p)),
        ("JSON", &j),
        ("Debug", &format!("{p:?}")),
    ] {
        for secret in [OLD, NEW, "horse battery", "Tr0ub4dor"] {
            assert!(
                !out.contains(secret),
                "the plan's {what} shows the secret:\n{out}"
            );
        }
    }
    // What changed shows, as fingerprints.
    assert!(
        t.contains(&format!("secrets[db-password]: \"{old}\" -> \"{new}\"")),
        "{t}"
    );
    assert!(j.contains(&old) && j.contains(&new), "{j}");
    insta::assert_snapshot!("secret_change", t);
    insta::assert_json_snapshot!("secret_change_json", json(&p));
}

#[test]
fn unkeyed_fingerprints_of_older_versions_roll_once_saying_why() {
    let with_secret = BASE.replace(
        "environment: [{name: MODE, value: prod}]",
        "environment: [{name: MODE, value: prod}]\n      secrets: [{name: DB_PASSWORD, valueFrom: db-password}]",
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("db-password"), "correct horse\n").unwrap();
    let resolver = Resolver::in_dir(dir.path());
    // What an older version applied: the same value, fingerprinted
    // without a key.
    let mut before = desired(&with_secret);
    before
        .secret_fingerprints
        .insert("db-password".into(), "sha256:c4bbcb1fbec9".into());
    let mut w = World::new(nodes(3, 2048, 4096));
    w.apply_with(&before, &resolver).unwrap();

    let mut now = desired(&with_secret);
    assert!(now.fingerprint_secrets(&resolver).is_empty());
    let t = text(&w.plan(&now));
    assert!(
        t.contains("secret fingerprints are now keyed (once, after the upgrade) (db-password)"),
        "{t}"
    );
    w.apply_with(&now, &resolver).unwrap();
    assert!(!w.plan(&now).has_changes(), "it rolls once");
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

#[test]
fn traffic_change_updates_in_place() {
    const LB80: &str = "    - {containerName: web, containerPort: 8080, listenerPort: 80}\n";
    const LB81: &str =
        "    - {containerName: web, containerPort: 8080, listenerPort: 81, protocol: TCP}\n";
    const REGISTRY: &str = "    - {containerName: web, containerPort: 8080}\n";
    let source = |lbs: &[&str], registry: &str| {
        BASE.replace(
            "desiredCount: 4\n",
            &format!(
                "desiredCount: 4\n  loadBalancers:\n{}  serviceRegistries:\n{registry}",
                lbs.concat()
            ),
        )
    };
    let mut w = World::new(nodes(3, 2048, 4096));
    w.apply(&desired(&source(&[LB80], REGISTRY))).unwrap();
    // The default registry name written out is the same registry.
    let named = "    - {name: web, containerName: web, containerPort: 8080}\n";
    assert!(!w.plan(&desired(&source(&[LB80], named))).has_changes());

    // A listener added before the first, and the registry renamed.
    let renamed = "    - {name: www, containerName: web, containerPort: 8080}\n";
    let d = desired(&source(&[LB81, LB80], renamed));
    let p = w.plan(&d);
    insta::assert_snapshot!("traffic_change", text(&p));
    insta::assert_json_snapshot!("traffic_change_json", json(&p));
    let c = p
        .resource_changes
        .iter()
        .find(|c| c.address == "Service/prod/web")
        .unwrap();
    assert_eq!(c.action, reconcile::plan::Action::Update);
    let tasks = c.tasks.as_ref().unwrap();
    assert!(
        tasks.start.is_empty() && tasks.stop.is_empty() && tasks.deployment.is_none(),
        "targets come from the running tasks: none is replaced"
    );
    w.apply(&d).unwrap();
    // Listeners in another order are the same listeners.
    assert!(!w
        .plan(&desired(&source(&[LB80, LB81], renamed)))
        .has_changes());
}

/// An apply that recorded a new deployment and stopped before its rollout
/// ended: the next plan says it finishes that rollout, and does not show
/// it as `web:2 -> web:2`.
#[test]
fn an_unfinished_rollout_is_named_as_such() {
    let mut w = converged();
    let canary = desired(&BASE.replace("value: prod", "value: canary"));
    // What the interrupted apply recorded: the new deployment, while the
    // tasks of revision 1 still run.
    let mut other = converged();
    other.apply(&canary).unwrap();
    w.stored = other.stored.clone();
    let t = text(&w.plan(&canary));
    assert!(
        t.contains("finish the rollout of web:2 an earlier apply left unfinished: 4 task(s) of the earlier configuration still run"),
        "{t}"
    );
    assert!(t.contains("rollout to new tasks of web:2:"), "{t}");
    assert!(!t.contains("web:2 -> web:2"), "{t}");
}

/// Scheduled tasks beside the base service: one created, one updated (a
/// new schedule, overrides and disabled), one deleted, in their own
/// resources after the services; none of them starts or stops a task.
#[test]
fn scheduled_tasks_created_updated_and_deleted() {
    let scheduled = |nightly: &str, others: &str| {
        format!(
            "{BASE}---
apiVersion: reconcile/v1alpha1
kind: ScheduledTask
metadata: {{name: nightly}}
spec:
  cluster: prod
  taskDefinition: web
{nightly}{others}"
        )
    };
    let hourly = "---
apiVersion: reconcile/v1alpha1
kind: ScheduledTask
metadata: {name: hourly}
spec:
  cluster: prod
  taskDefinition: web
  schedule: rate(1 hour)
";
    let weekly = "---
apiVersion: reconcile/v1alpha1
kind: ScheduledTask
metadata: {name: weekly}
spec:
  cluster: prod
  taskDefinition: web
  schedule: cron(0 4 ? * MON *)
  count: 2
";
    let mut w = converged();
    w.apply(&desired(&scheduled(
        "  schedule: cron(0 3 * * ? *)\n",
        hourly,
    )))
    .unwrap();
    let d = desired(&scheduled(
        "  schedule: cron(30 2 * * ? *)
  enabled: false
  overrides:
    containerOverrides:
      - {name: web, command: [./report], environment: [{name: MODE, value: full}]}
",
        weekly,
    ));
    let p = w.plan(&d);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert!(p
        .changes()
        .all(|c| c.kind == reconcile::manifest::Kind::ScheduledTask && c.tasks.is_none()));
    insta::assert_snapshot!("scheduled_tasks", text(&p));
    insta::assert_json_snapshot!("scheduled_tasks_json", json(&p));
    w.apply(&d).unwrap();
    assert!(!w.plan(&d).has_changes());
}
