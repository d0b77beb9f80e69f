use super::*;
use crate::model::{Health, NodeInfo, Revision, Task};

fn spec(cpu: u32, host_port: Option<u16>) -> TaskDefinitionSpec {
    let mut c = serde_json::json!({"name": "job", "image": "busybox:stable", "cpu": cpu, "memory": 64,
        "environment": [{"name": "MODE", "value": "quick"}]});
    if let Some(p) = host_port {
        c["portMappings"] = serde_json::json!([{"containerPort": 80, "hostPort": p}]);
    }
    serde_json::from_value(serde_json::json!({"containerDefinitions": [c]})).unwrap()
}

fn observed(nodes: &[(&str, &str)], spec: TaskDefinitionSpec) -> ObservedState {
    let mut o = ObservedState::default();
    for (name, zone) in nodes {
        o.nodes.push(NodeInfo {
            name: name.to_string(),
            cluster: "prod".into(),
            attributes: BTreeMap::from([("zone".to_string(), zone.to_string())]),
            cpu: 2048,
            memory: 4096,
            reserved_ports: Vec::new(),
        });
    }
    o.revisions.insert(
        "job".into(),
        vec![
            Revision {
                number: 1,
                digest: "d1".into(),
                spec: spec.clone(),
            },
            Revision {
                number: 2,
                digest: "d2".into(),
                spec,
            },
        ],
    );
    o.task_definitions.insert("job".into(), 1);
    o
}

fn desired() -> DesiredState {
    let mut d = DesiredState::default();
    d.clusters.insert("prod".into(), Default::default());
    d
}

fn request(count: u32) -> RunRequest {
    RunRequest {
        cluster: "prod".into(),
        task_definition: "job".into(),
        count,
        ..RunRequest::default()
    }
}

fn ids() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("task-{n:04}")
    }
}

#[test]
fn a_family_runs_the_revision_the_source_applied_unless_one_is_named() {
    let o = observed(&[("a", "z1")], spec(128, None));
    assert_eq!(revision_of(&o, "job").unwrap().number, 1);
    assert_eq!(revision_of(&o, "job:2").unwrap().number, 2);
    let e = revision_of(&o, "job:7").unwrap_err();
    assert!(
        e.contains("`job:7` is not registered (revisions: 1, 2)"),
        "{e}"
    );
    let e = revision_of(&o, "nope").unwrap_err();
    assert!(
        e.contains("`nope` is not registered (registered: job)"),
        "{e}"
    );
    assert!(revision_of(&o, "job:x")
        .unwrap_err()
        .contains("FAMILY:REVISION"));
}

#[test]
fn tasks_spread_over_zones_or_binpack_as_asked() {
    let o = observed(&[("a", "z1"), ("b", "z2"), ("c", "z3")], spec(256, None));
    let placed = place(&request(5), &desired(), &o, 1, ids()).unwrap();
    assert!(placed.failures.is_empty());
    let mut per_node: BTreeMap<String, u32> = BTreeMap::new();
    for s in &placed.starts {
        *per_node.entry(s.node.clone()).or_default() += 1;
        assert_eq!(s.identity.service, None);
        assert_eq!(s.identity.revision, 1);
    }
    assert_eq!(per_node.values().copied().collect::<Vec<_>>(), [2, 2, 1]);

    let mut binpack = request(5);
    binpack.placement_strategy = vec![PlacementStrategy {
        kind: crate::manifest::service::PlacementStrategyType::Binpack,
        field: Some("cpu".into()),
    }];
    let placed = place(&binpack, &desired(), &o, 1, ids()).unwrap();
    let nodes: Vec<&str> = placed.starts.iter().map(|s| s.node.as_str()).collect();
    assert_eq!(nodes, ["a"; 5], "binpack fills one node first");
}

#[test]
fn tasks_that_fit_nowhere_are_failures_with_the_schedulers_reason() {
    let mut o = observed(&[("a", "z1")], spec(1024, Some(8080)));
    // A task of the same port already runs there.
    o.tasks.push(Task {
        identity: TaskIdentity {
            id: "old".into(),
            cluster: "prod".into(),
            service: None,
            family: "job".into(),
            revision: 1,
            config_hash: "h".into(),
            started_by: None,
        },
        node: "a".into(),
        last_status: TaskStatus::Running,
        health: Health::Unknown,
        started_at: Some(1),
        stop_code: None,
        stopped_reason: None,
        bindings: Vec::new(),
        target_health: None,
        exits: Vec::new(),
        stopped_at: None,
    });
    let placed = place(&request(2), &desired(), &o, 1, ids()).unwrap();
    assert!(placed.starts.is_empty());
    assert_eq!(placed.failures.len(), 1);
    assert!(
        placed.failures[0].contains("2 task(s) not placed")
            && placed.failures[0].contains("host port 8080/tcp"),
        "{:?}",
        placed.failures
    );
}

#[test]
fn requests_out_of_bounds_are_refused_before_placing() {
    let o = observed(&[("a", "z1")], spec(128, None));
    assert!(place(&request(0), &desired(), &o, 1, ids())
        .unwrap_err()
        .contains("out of range"));
    assert!(place(&request(11), &desired(), &o, 1, ids()).is_err());
    let mut r = request(1);
    r.cluster = "staging".into();
    let e = place(&r, &desired(), &o, 1, ids()).unwrap_err();
    assert_eq!(e, "cluster `staging` does not exist (clusters: prod)");
    let mut r = request(1);
    r.started_by = Some("has space".into());
    assert!(place(&r, &desired(), &o, 1, ids())
        .unwrap_err()
        .contains("started-by"));
    let mut r = request(1);
    r.overrides
        .container_overrides
        .push(crate::manifest::scheduled_task::ContainerOverride {
            name: "nope".into(),
            command: Some(vec!["true".into()]),
            environment: Vec::new(),
        });
    let e = place(&r, &desired(), &o, 1, ids()).unwrap_err();
    assert!(
        e.contains("no container named `nope`") && e.contains("containers: job"),
        "{e}"
    );
}

fn observed_task(id: &str, status: TaskStatus, exit: Option<i64>, stopped_at: Option<i64>) -> Task {
    Task {
        identity: TaskIdentity {
            id: id.into(),
            cluster: "prod".into(),
            service: None,
            family: "job".into(),
            revision: 1,
            config_hash: "h".into(),
            started_by: None,
        },
        node: "a".into(),
        last_status: status,
        health: Health::Unknown,
        started_at: Some(100),
        stop_code: exit.map(|_| "EssentialContainerExited".to_string()),
        stopped_reason: exit
            .map(|c| format!("Essential container in task exited: `job` exit code {c}")),
        bindings: Vec::new(),
        target_health: None,
        exits: exit
            .map(|c| {
                vec![ContainerExit {
                    name: "job".into(),
                    exit_code: Some(c),
                    essential: true,
                }]
            })
            .unwrap_or_default(),
        stopped_at,
    }
}

#[test]
fn records_follow_the_task_to_its_exit_code_and_expire_an_hour_later() {
    let o = observed(&[("a", "z1")], spec(128, None));
    let placed = place(&request(1), &desired(), &o, 1, ids()).unwrap();
    let r = record_of(&placed.starts[0], 50);
    let id = r.id.clone();
    let mut records = BTreeMap::from([(id.clone(), r)]);
    // Not shown by an observation made as it started: not gone yet.
    assert_eq!(
        refresh(&mut records, &[], 50 + GONE_AFTER - 1),
        Refreshed::default()
    );

    let seen = refresh(
        &mut records,
        &[observed_task(&id, TaskStatus::Running, None, None)],
        100,
    );
    assert_eq!(seen.changed, std::slice::from_ref(&id));
    assert_eq!(records[&id].last_status, TaskStatus::Running);

    let seen = refresh(
        &mut records,
        &[observed_task(&id, TaskStatus::Stopped, Some(3), Some(200))],
        210,
    );
    assert!(seen.expired.is_empty());
    let r = &records[&id];
    assert_eq!(
        (r.last_status, r.desired_status),
        (TaskStatus::Stopped, TaskStatus::Stopped)
    );
    assert_eq!((r.exit_code(), r.stopped_at), (Some(3), Some(200)));
    assert_eq!(r.stop_code.as_deref(), Some("EssentialContainerExited"));

    // Unchanged: nothing to save; expired once the hour has passed.
    let tasks = [observed_task(&id, TaskStatus::Stopped, Some(3), Some(200))];
    assert_eq!(
        refresh(&mut records, &tasks, 200 + RETENTION - 1),
        Refreshed::default()
    );
    assert_eq!(refresh(&mut records, &tasks, 200 + RETENTION).expired, [id]);
}

#[test]
fn a_task_stopped_by_the_user_keeps_the_users_reason_and_a_lost_one_says_so() {
    let o = observed(&[("a", "z1")], spec(128, None));
    let placed = place(&request(2), &desired(), &o, 1, ids()).unwrap();
    let mut records: BTreeMap<String, RunRecord> = placed
        .starts
        .iter()
        .map(|s| (s.identity.id.clone(), record_of(s, 10)))
        .collect();
    let (a, b) = (
        placed.starts[0].identity.id.clone(),
        placed.starts[1].identity.id.clone(),
    );
    stop_requested(records.get_mut(&a).unwrap(), "migration superseded", 20);
    // SIGTERM makes the container exit 143; the reason stays the user's.
    refresh(
        &mut records,
        &[observed_task(&a, TaskStatus::Stopped, Some(143), Some(21))],
        22,
    );
    let r = &records[&a];
    assert_eq!(r.stop_code.as_deref(), Some("UserInitiated"));
    assert_eq!(r.stopped_reason.as_deref(), Some("migration superseded"));
    assert_eq!(r.exit_code(), Some(143));
    // `b` was not shown 12 s after it started: gone.
    let r = &records[&b];
    assert_eq!(
        (r.last_status, r.stop_code.as_deref()),
        (TaskStatus::Stopped, Some("TaskGone"))
    );
    assert_eq!(r.stopped_at, Some(22));
}

#[test]
fn tasks_are_found_by_a_unique_prefix_and_filtered() {
    let o = observed(&[("a", "z1")], spec(128, None));
    let mut req = request(2);
    req.started_by = Some("nightly".into());
    let placed = place(&req, &desired(), &o, 1, ids()).unwrap();
    let records: BTreeMap<String, RunRecord> = placed
        .starts
        .iter()
        .map(|s| (s.identity.id.clone(), record_of(s, 10)))
        .collect();
    assert_eq!(find(&records, "task-0001").unwrap().id, "task-0001");
    assert!(find(&records, "task-000").unwrap_err().contains("several"));
    assert!(find(&records, "task").unwrap_err().contains("at least 8"));
    let f = Filter {
        started_by: Some("nightly".into()),
        status: Some(TaskStatus::Running),
        ..Filter::default()
    };
    assert_eq!(records.values().filter(|r| f.keeps(r)).count(), 2);
    let f = Filter {
        status: Some(TaskStatus::Stopped),
        ..Filter::default()
    };
    assert_eq!(records.values().filter(|r| f.keeps(r)).count(), 0);
}
