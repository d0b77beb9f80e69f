use std::collections::BTreeMap;

use proptest::prelude::*;

use super::diagnose;
use super::provider::Split;
use super::*;
use crate::manifest::service::PlacementStrategyType as Kind;

const WEB: &str = "service:web";

fn strategy(kind: Kind, field: Option<&str>) -> PlacementStrategy {
    PlacementStrategy {
        kind,
        field: field.map(str::to_string),
    }
}
fn binpack(field: &str) -> PlacementStrategy {
    strategy(Kind::Binpack, Some(field))
}
fn spread(field: &str) -> PlacementStrategy {
    strategy(Kind::Spread, Some(field))
}
fn random() -> PlacementStrategy {
    strategy(Kind::Random, None)
}
fn provider(name: &str, base: u32, weight: u32) -> CapacityProviderStrategyItem {
    CapacityProviderStrategyItem {
        capacity_provider: name.to_string(),
        base,
        weight,
    }
}

fn request<'a>(
    cpu: u32,
    memory: u32,
    constraints: &'a [Constraint],
    strategy: &'a [PlacementStrategy],
) -> TaskRequest<'a> {
    TaskRequest {
        group: WEB.to_string(),
        cpu,
        memory,
        host_ports: Vec::new(),
        constraints,
        strategy,
        capacity_provider_strategy: &[],
    }
}

fn run(nodes: &mut [Node], req: &TaskRequest, count: u32) -> Placement {
    place(nodes, req, count, &BTreeMap::new(), 0)
}

fn names(nodes: &[Node], p: &Placement) -> Vec<String> {
    p.assignments
        .iter()
        .map(|&i| nodes[i].name.clone())
        .collect()
}

fn per_node(nodes: &[Node], p: &Placement) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in names(nodes, p) {
        *m.entry(n).or_default() += 1;
    }
    m
}

fn zoned(zones: &[&str], per_zone: usize, cpu: u32, mem: u32) -> Vec<Node> {
    let mut out = Vec::new();
    for z in zones {
        for i in 0..per_zone {
            out.push(Node::new(format!("{z}-{i}"), cpu, mem).with_attribute("zone", *z));
        }
    }
    out
}

#[test]
fn binpack_picks_the_fullest_node_that_fits() {
    let mut nodes = vec![
        Node::new("a", 4096, 8192),
        Node::new("b", 4096, 8192),
        Node::new("c", 4096, 8192),
        Node::new("d", 4096, 8192),
    ];
    nodes[0].used_memory = 7936; // 256 free: too little for 512
    nodes[1].used_memory = 6144; // 2048 free: fullest that fits
    nodes[2].used_memory = 4096; // 4096 free
    let s = [binpack("memory")];
    let r = request(256, 512, &[], &s);
    let p = run(&mut nodes, &r, 5);
    // b takes 4 (2048/512), then c is the fullest left.
    assert_eq!(names(&nodes, &p), ["b", "b", "b", "b", "c"]);
    assert_eq!(nodes[1].free_memory(), 0);
    assert_eq!(nodes[2].used_memory, 4096 + 512);
    assert_eq!(nodes[1].group_count(WEB), 4);
    assert_eq!(nodes[1].running_tasks, 4);
    assert!(p.failure.is_none());

    // binpack(cpu) looks at CPU only.
    let mut nodes = vec![Node::new("a", 2048, 100_000), Node::new("b", 1024, 100_000)];
    let s = [binpack("cpu")];
    let p = run(&mut nodes, &request(512, 1, &[], &s), 3);
    assert_eq!(names(&nodes, &p), ["b", "b", "a"]);
}

#[test]
fn spread_by_attribute_evens_out_zones() {
    // Unequal zone sizes: 3 nodes in a, 1 in b, 2 in c.
    let mut nodes = vec![
        Node::new("n1", 4096, 8192).with_attribute("zone", "a"),
        Node::new("n2", 4096, 8192).with_attribute("zone", "a"),
        Node::new("n3", 4096, 8192).with_attribute("zone", "a"),
        Node::new("n4", 4096, 8192).with_attribute("zone", "b"),
        Node::new("n5", 4096, 8192).with_attribute("zone", "c"),
        Node::new("n6", 4096, 8192).with_attribute("zone", "c"),
    ];
    let s = [spread("attribute:zone")];
    let p = run(&mut nodes, &request(128, 128, &[], &s), 6);
    let mut per_zone = BTreeMap::new();
    for &i in &p.assignments {
        *per_zone
            .entry(nodes[i].attributes["zone"].clone())
            .or_insert(0) += 1;
    }
    assert_eq!(
        per_zone,
        BTreeMap::from([("a".into(), 2), ("b".into(), 2), ("c".into(), 2)])
    );

    // Existing tasks count: zone a already has 2, so the next two go elsewhere.
    let mut nodes = zoned(&["a", "b", "c"], 1, 4096, 8192);
    nodes[0].task_groups.insert(WEB.into(), 2);
    let p = run(&mut nodes, &request(1, 1, &[], &s), 2);
    assert_eq!(names(&nodes, &p), ["b-0", "c-0"]);
}

#[test]
fn spread_then_binpack_breaks_ties_inside_the_zone() {
    let mut nodes = zoned(&["a", "b"], 2, 4096, 8192);
    nodes[1].used_memory = 4096; // a-1 is fuller than a-0
    nodes[2].used_memory = 2048; // b-0 fuller than b-1
    let s = [spread("attribute:zone"), binpack("memory")];
    let p = run(&mut nodes, &request(1, 512, &[], &s), 4);
    assert_eq!(names(&nodes, &p), ["a-1", "b-0", "a-1", "b-0"]);
}

#[test]
fn spread_by_instance_and_default_strategy() {
    let mut nodes = zoned(&["a", "b"], 2, 4096, 8192);
    let s = [spread("instanceId")];
    let p = run(&mut nodes, &request(1, 1, &[], &s), 4);
    assert_eq!(names(&nodes, &p), ["a-0", "a-1", "b-0", "b-1"]);

    // Default: zone first, then instance.
    let mut nodes = zoned(&["a", "b"], 2, 4096, 8192);
    let p = run(&mut nodes, &request(1, 1, &[], &[]), 4);
    assert_eq!(names(&nodes, &p), ["a-0", "b-0", "a-1", "b-1"]);
    // Without zone attributes the default is spread by instance.
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| Node::new(format!("n{i}"), 100, 100))
        .collect();
    let p = run(&mut nodes, &request(1, 1, &[], &[]), 6);
    assert_eq!(names(&nodes, &p), ["n0", "n1", "n2", "n0", "n1", "n2"]);
}

#[test]
fn nodes_without_the_attribute_are_one_more_bucket() {
    let mut nodes = zoned(&["a", "b"], 1, 4096, 8192);
    nodes.push(Node::new("plain-0", 4096, 8192));
    nodes.push(Node::new("plain-1", 4096, 8192));
    let s = [spread("attribute:zone"), spread("instanceId")];
    let p = run(&mut nodes, &request(1, 1, &[], &s), 6);
    let counts = per_node(&nodes, &p);
    // Three buckets (a, b, none) of two tasks each; the two plain nodes share theirs.
    assert_eq!(counts["a-0"], 2);
    assert_eq!(counts["b-0"], 2);
    assert_eq!(counts["plain-0"], 1);
    assert_eq!(counts["plain-1"], 1);
}

#[test]
fn ties_go_to_the_first_name_whatever_the_input_order() {
    let mut nodes = vec![
        Node::new("c", 10, 10),
        Node::new("a", 10, 10),
        Node::new("b", 10, 10),
    ];
    let s = [binpack("memory")];
    let p = run(&mut nodes, &request(1, 1, &[], &s), 1);
    assert_eq!(names(&nodes, &p), ["a"]);
}

#[test]
fn distinct_instance_refuses_a_fourth_task_on_three_nodes() {
    let mut nodes = zoned(&["a"], 3, 4096, 8192);
    let c = [Constraint::DistinctInstance];
    let s = [binpack("memory")];
    let p = run(&mut nodes, &request(128, 128, &c, &s), 4);
    assert_eq!(p.assignments.len(), 3);
    let mut used = p.assignments.clone();
    used.sort();
    assert_eq!(used, [0, 1, 2]);
    let f = p.failure.expect("the fourth task fails");
    assert_eq!(f.unplaced, 1);
    assert_eq!(f.missing, [Missing::DistinctInstance]);
    assert_eq!(f.closest_node.as_deref(), Some("a-0"));
    assert!(f.reason.contains("distinctInstance"), "{}", f.reason);
}

#[test]
fn member_of_filters_nodes() {
    let mut nodes = zoned(&["a", "b", "c"], 2, 4096, 8192);
    nodes[0].attributes.insert("pool".into(), "spot".into());
    let c = [
        Constraint::member_of("attribute:zone in [a, c]").unwrap(),
        Constraint::member_of("attribute:pool != spot").unwrap(),
    ];
    let p = run(&mut nodes, &request(1, 1, &c, &[]), 30);
    let counts = per_node(&nodes, &p);
    assert_eq!(counts.keys().collect::<Vec<_>>(), ["a-1", "c-0", "c-1"]);
    assert!(p.failure.is_none());

    // Nothing matches: the failure names the expression.
    let c = [Constraint::member_of("attribute:zone == d").unwrap()];
    let p = run(&mut nodes, &request(1, 1, &c, &[]), 2);
    assert!(p.assignments.is_empty());
    let f = p.failure.unwrap();
    assert_eq!(f.unplaced, 2);
    assert_eq!(
        f.missing,
        [Missing::Constraint {
            expression: "attribute:zone == d".into()
        }]
    );
}

#[test]
fn task_group_expressions_see_tasks_placed_in_the_same_call() {
    let mut nodes = zoned(&["a"], 2, 4096, 8192);
    nodes[1].task_groups.insert("service:db".into(), 1);
    nodes[1].running_tasks = 1;
    // Behaves like distinctInstance, through the expression language.
    let c = [Constraint::member_of("not task:group == service:web").unwrap()];
    let s = [binpack("memory")];
    let p = run(&mut nodes, &request(1, 1, &c, &s), 3);
    assert_eq!(p.assignments.len(), 2);
    assert_eq!(p.failure.unwrap().unplaced, 1);
    // Affinity to another group.
    let mut nodes = zoned(&["a"], 3, 4096, 8192);
    nodes[2].task_groups.insert("service:db".into(), 1);
    let c = [Constraint::member_of("task:group == service:db").unwrap()];
    let p = run(&mut nodes, &request(1, 1, &c, &[]), 2);
    assert_eq!(names(&nodes, &p), ["a-2", "a-2"]);
}

#[test]
fn static_host_ports_conflict() {
    let mut nodes = zoned(&["a"], 2, 4096, 8192);
    nodes[0].used_ports.insert((80, Protocol::Tcp));
    let s = [binpack("memory")];
    let mut r = request(1, 1, &[], &s);
    r.host_ports = vec![(80, Protocol::Tcp), (53, Protocol::Udp)];
    let p = run(&mut nodes, &r, 2);
    assert_eq!(names(&nodes, &p), ["a-1"]);
    assert!(nodes[1].used_ports.contains(&(53, Protocol::Udp)));
    let f = p.failure.unwrap();
    assert_eq!(f.unplaced, 1);
    assert!(f.missing.contains(&Missing::Port {
        port: 80,
        protocol: Protocol::Tcp
    }));
    // The agent's reserved ports are in use from the start; UDP 22 is not.
    let mut nodes = vec![Node::new("n", 4096, 8192)];
    let mut r = request(1, 1, &[], &s);
    r.host_ports = vec![(22, Protocol::Tcp)];
    assert!(run(&mut nodes, &r, 1).assignments.is_empty());
    r.host_ports = vec![(22, Protocol::Udp)];
    assert_eq!(run(&mut nodes, &r, 1).assignments, [0]);
}

#[test]
fn only_active_connected_nodes_take_tasks() {
    let mut nodes = zoned(&["a"], 3, 4096, 8192);
    nodes[0].status = NodeStatus::Draining;
    nodes[1].agent_connected = false;
    let p = run(&mut nodes, &request(1, 1, &[], &[]), 3);
    assert_eq!(names(&nodes, &p), ["a-2", "a-2", "a-2"]);
    nodes[2].status = NodeStatus::Lost;
    let p = run(&mut nodes, &request(1, 1, &[], &[]), 1);
    let f = p.failure.unwrap();
    // Each node fails one check; a-0 and a-1 have the most room, a-0 sorts first.
    assert_eq!(f.closest_node.as_deref(), Some("a-0"));
    assert_eq!(
        f.missing,
        [Missing::NotActive {
            status: NodeStatus::Draining
        }]
    );
    assert!(
        f.reason.ends_with("`a-0` is DRAINING, not ACTIVE."),
        "{}",
        f.reason
    );
}

#[test]
fn failures_are_aggregated_and_name_the_closest_node() {
    let mut nodes = vec![
        Node::new("node-1", 1024, 1024),
        Node::new("node-2", 4096, 2048),
        Node::new("node-3", 512, 4096),
    ];
    nodes[1].used_memory = 1792; // 256 free
    let s = [binpack("memory")];
    let r = request(1024, 512, &[], &s);
    let p = run(&mut nodes, &r, 3);
    // Only node-1 fits, and only once.
    assert_eq!(names(&nodes, &p), ["node-1"]);
    let f = p.failure.unwrap();
    assert_eq!(f.unplaced, 2);
    // Every node then fails one check: node-1 (no CPU left, headroom 0),
    // node-2 (half the memory needed), node-3 (half the CPU needed). The
    // last two tie on headroom, and node-2 sorts first.
    assert_eq!(f.closest_node.as_deref(), Some("node-2"));
    assert_eq!(
        f.reason,
        "no node met all of the task's requirements. The closest matching node `node-2` has insufficient memory available (needs 512 MiB, 256 free)."
    );
    assert_eq!(
        f.missing,
        [Missing::Memory {
            needed: 512,
            free: 256
        }]
    );

    // 1000 tasks, room for 600: one record for the 400 others.
    let mut nodes: Vec<Node> = (0..6)
        .map(|i| Node::new(format!("n{i}"), 100 * 1024, 100 * 256))
        .collect();
    let p = run(&mut nodes, &request(1024, 256, &[], &[]), 1000);
    assert_eq!(p.assignments.len(), 600);
    let f = p.failure.unwrap();
    assert_eq!(f.unplaced, 400);
    assert_eq!(f.missing.len(), 2);

    // Empty cluster.
    let p = run(&mut [], &request(1, 1, &[], &[]), 2);
    let f = p.failure.unwrap();
    assert_eq!(
        (f.unplaced, f.missing.as_slice()),
        (2, [Missing::NoNodes].as_slice())
    );
    assert_eq!(f.closest_node, None);
}

#[test]
fn capacity_provider_base_and_weights() {
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..3 {
        nodes.push(Node::new(format!("a{i}"), 100_000, 100_000).with_provider("A"));
        nodes.push(Node::new(format!("b{i}"), 100_000, 100_000).with_provider("B"));
    }
    nodes.push(Node::new("free", 100_000, 100_000)); // in no provider
    let cps = [provider("A", 2, 1), provider("B", 0, 4)];
    let mut r = request(1, 1, &[], &[]);
    r.capacity_provider_strategy = &cps;
    let p = place(&mut nodes, &r, 12, &BTreeMap::new(), 0);
    let seq: String = p
        .assignments
        .iter()
        .map(|&i| nodes[i].capacity_provider.as_deref().unwrap())
        .collect();
    // 2 base on A, then the other 10 split 1:4 -> 2 more on A, 8 on B.
    assert_eq!(seq, "AABBABBBBABB");
    assert_eq!(seq.matches('A').count(), 4);
    assert_eq!(seq.matches('B').count(), 8);
    assert!(p.failure.is_none());
    assert_eq!(
        nodes[6].running_tasks, 0,
        "nodes outside the strategy get nothing"
    );

    // Counting what already runs: base met, shares follow.
    let already = BTreeMap::from([("A".to_string(), 3), ("B".to_string(), 4)]);
    let p = place(&mut nodes, &r, 5, &already, 0);
    let seq: String = p
        .assignments
        .iter()
        .map(|&i| nodes[i].capacity_provider.as_deref().unwrap())
        .collect();
    assert_eq!(seq, "BBABB");
}

#[test]
fn a_provider_without_room_fails_its_share_and_nothing_moves() {
    let mut nodes = vec![
        Node::new("b0", 100_000, 100_000).with_provider("B"),
        Node::new("c0", 100_000, 100_000).with_provider("C"),
    ];
    let cps = [provider("A", 0, 1), provider("B", 0, 4)];
    let mut r = request(1, 1, &[], &[]);
    r.capacity_provider_strategy = &cps;
    let p = place(&mut nodes, &r, 10, &BTreeMap::new(), 0);
    assert_eq!(p.assignments, vec![0; 8]);
    let f = p.failure.unwrap();
    assert_eq!(f.unplaced, 2);
    assert_eq!(
        f.missing,
        [Missing::ProviderHasNoNodes {
            provider: "A".into()
        }]
    );
    assert!(
        f.reason.contains("capacity provider `A` has no nodes"),
        "{}",
        f.reason
    );

    // Provider with nodes, all full: the closest of *its* nodes is named.
    let mut nodes = vec![
        Node::new("a0", 100, 100).with_provider("A"),
        Node::new("b0", 100_000, 100_000).with_provider("B"),
    ];
    let cps = [provider("A", 1, 0), provider("B", 0, 1)];
    let mut r = request(512, 1, &[], &[]);
    r.capacity_provider_strategy = &cps;
    let p = place(&mut nodes, &r, 3, &BTreeMap::new(), 0);
    assert_eq!(p.assignments, [1, 1]);
    let f = p.failure.unwrap();
    assert_eq!(f.closest_node.as_deref(), Some("a0"));
    assert!(
        f.reason.starts_with("no node of capacity provider `A` met"),
        "{}",
        f.reason
    );
}

#[test]
fn same_seed_same_placement_and_random_uses_the_seed() {
    let build = || zoned(&["a", "b", "c"], 20, 4096, 8192);
    for s in [
        vec![random()],
        vec![spread("attribute:zone"), random()],
        vec![binpack("cpu"), random()],
    ] {
        let r = request(64, 64, &[], &s);
        let mut first = build();
        let p1 = place(&mut first, &r, 50, &BTreeMap::new(), 42);
        let mut second = build();
        let p2 = place(&mut second, &r, 50, &BTreeMap::new(), 42);
        assert_eq!(p1, p2);
        assert_eq!(first, second);
        let differs = (0..10u64).any(|seed| {
            let mut n = build();
            place(&mut n, &r, 50, &BTreeMap::new(), seed).assignments != p1.assignments
        });
        assert!(differs, "random ignores the seed for {s:?}");
    }
    // Non-random strategies do not depend on the seed at all.
    let s = [spread("attribute:zone"), binpack("memory")];
    let r = request(64, 64, &[], &s);
    let (mut a, mut b) = (build(), build());
    assert_eq!(
        place(&mut a, &r, 40, &BTreeMap::new(), 1),
        place(&mut b, &r, 40, &BTreeMap::new(), 2)
    );
}

#[test]
fn random_spreads_over_every_feasible_node_and_respects_ties() {
    let mut nodes = zoned(&["a", "b"], 5, 1 << 20, 1 << 20);
    let s = [random()];
    let p = place(
        &mut nodes,
        &request(1, 1, &[], &s),
        2000,
        &BTreeMap::new(),
        9,
    );
    let counts = per_node(&nodes, &p);
    assert_eq!(counts.len(), 10);
    assert!(
        counts.values().all(|&c| (120..=280).contains(&c)),
        "{counts:?}"
    );

    // spread(zone) then random: zones stay even, nodes vary.
    let mut nodes = zoned(&["a", "b"], 5, 1 << 20, 1 << 20);
    let s = [spread("attribute:zone"), random()];
    let p = place(
        &mut nodes,
        &request(1, 1, &[], &s),
        100,
        &BTreeMap::new(),
        3,
    );
    let a = p.assignments.iter().filter(|&&i| i < 5).count();
    assert_eq!(a, 50);
    assert!(per_node(&nodes, &p).len() == 10);
}

#[test]
fn daemon_targets_place_stop_and_fail() {
    let mut nodes = zoned(&["a", "b"], 2, 4096, 8192);
    nodes[0].task_groups.insert(WEB.into(), 1); // a-0 runs it and should
    nodes[2].task_groups.insert(WEB.into(), 1); // b-0 runs it but should not
    nodes[3].used_memory = 8000; // b-1 too full
    nodes.push(Node::new("c-0", 4096, 8192).with_attribute("zone", "c"));
    nodes.push(Node::new("a-2", 4096, 8192).with_attribute("zone", "a"));
    nodes[5].status = NodeStatus::Draining;
    let c =
        [Constraint::member_of("attribute:zone in [a, b] and not attribute:zone == b").unwrap()];
    let r = request(128, 512, &c, &[]);
    let t = daemon_targets(&nodes, &r);
    assert_eq!(t.place, [1]); // a-1
    assert_eq!(t.stop, [2]); // b-0
    assert!(t.failures.is_empty()); // b-1 is not a member anyway

    let c = [Constraint::member_of("attribute:zone != c").unwrap()];
    let r = request(128, 512, &c, &[]);
    let t = daemon_targets(&nodes, &r);
    assert_eq!(t.place, [1]);
    assert!(t.stop.is_empty());
    assert_eq!(t.failures.len(), 1);
    let (i, f) = &t.failures[0];
    assert_eq!(*i, 3);
    assert_eq!(
        f.missing,
        [Missing::Memory {
            needed: 512,
            free: 192
        }]
    );

    // A constraint on its own group does not make a node evict its task.
    let c = [Constraint::member_of("not task:group == service:web").unwrap()];
    let r = request(1, 1, &c, &[]);
    let t = daemon_targets(&nodes, &r);
    assert!(t.stop.is_empty());
}

#[test]
fn choose_to_stop_keeps_zones_and_nodes_balanced() {
    let nodes = vec![
        Node::new("a-0", 1, 1).with_attribute("zone", "a"),
        Node::new("a-1", 1, 1).with_attribute("zone", "a"),
        Node::new("b-0", 1, 1).with_attribute("zone", "b"),
    ];
    // a: 3 + 1 = 4 tasks, b: 2.
    let candidates = [0, 0, 0, 1, 2, 2];
    let s = [spread("attribute:zone"), spread("instanceId")];
    let stop = choose_to_stop(&nodes, &candidates, &s, 2);
    // Both from zone a, from its busiest node, newest first.
    assert_eq!(stop, [2, 1]);
    let stop = choose_to_stop(&nodes, &candidates, &s, 4);
    // After two: a has 2, b has 2 -> tie goes to a (name), its busiest node
    // a-0 (1) ties a-1 (1) -> a-0; then b.
    assert_eq!(stop, [2, 1, 0, 5]);
    let left: Vec<usize> = (0..6).filter(|c| !stop.contains(c)).collect();
    assert_eq!(left, [3, 4]); // one on a-1, one on b-0
                              // Everything, at most.
    assert_eq!(choose_to_stop(&nodes, &candidates, &s, 99).len(), 6);

    // Tasks on draining nodes go first.
    let mut nodes = nodes;
    nodes[2].status = NodeStatus::Draining;
    assert_eq!(choose_to_stop(&nodes, &candidates, &[], 2), [5, 4]);
}

// ---------------------------------------------------------------------------
// Property tests against a naive reference: every node scored from scratch
// for every task.

fn reference_key(nodes: &[Node], n: usize, req: &TaskRequest) -> Vec<u64> {
    let default = default_strategy();
    let strategy = if req.strategy.is_empty() {
        &default[..]
    } else {
        req.strategy
    };
    let node = &nodes[n];
    let mut key = Vec::new();
    for s in strategy {
        match (s.kind, s.field.as_deref()) {
            (Kind::Random, _) => break,
            (Kind::Spread, None | Some("instanceId") | Some("host")) => {
                key.push(u64::from(node.group_count(&req.group)));
            }
            (Kind::Spread, Some(f)) => {
                let Some(a) = f.strip_prefix("attribute:") else {
                    continue;
                };
                let v = node.attributes.get(a);
                let total: u32 = nodes
                    .iter()
                    .filter(|m| m.status == NodeStatus::Active && m.attributes.get(a) == v)
                    .map(|m| m.group_count(&req.group))
                    .sum();
                key.push(u64::from(total));
            }
            (Kind::Binpack, Some("cpu")) => key.push(u64::from(node.free_cpu())),
            (Kind::Binpack, _) => key.push(u64::from(node.free_memory())),
        }
    }
    key
}

fn reference_place(
    nodes: &mut [Node],
    req: &TaskRequest,
    count: u32,
    already: &BTreeMap<String, u32>,
) -> Vec<Option<usize>> {
    let exprs: Vec<&expression::Expr> = req
        .constraints
        .iter()
        .filter_map(|c| match c {
            Constraint::MemberOf(e) => Some(e),
            Constraint::DistinctInstance => None,
        })
        .collect();
    let distinct = req.constraints.contains(&Constraint::DistinctInstance);
    let mut split = Split::new(req.capacity_provider_strategy, already);
    let mut out = Vec::new();
    for _ in 0..count {
        let Some(pool) = split.next() else {
            out.push(None);
            continue;
        };
        let provider = req
            .capacity_provider_strategy
            .get(pool)
            .map(|p| p.capacity_provider.as_str());
        let best = (0..nodes.len())
            .filter(|&i| provider.is_none_or(|p| nodes[i].capacity_provider.as_deref() == Some(p)))
            .filter(|&i| diagnose::missing(&nodes[i], req, &exprs, distinct).is_empty())
            .min_by(|&a, &b| {
                reference_key(nodes, a, req)
                    .cmp(&reference_key(nodes, b, req))
                    .then_with(|| nodes[a].name.cmp(&nodes[b].name))
            });
        if let Some(i) = best {
            nodes[i].add_task(req);
        }
        out.push(best);
    }
    out
}

const EXPRESSIONS: [&str; 5] = [
    "attribute:zone in [a, b]",
    "attribute:pool != spot",
    "not task:group == service:web",
    "runningTasksCount < 3",
    "attribute:zone exists",
];

#[derive(Debug, Clone)]
struct Case {
    nodes: Vec<Node>,
    cpu: u32,
    memory: u32,
    ports: Vec<(u16, Protocol)>,
    constraints: Vec<Constraint>,
    strategy: Vec<PlacementStrategy>,
    providers: Vec<CapacityProviderStrategyItem>,
    already: BTreeMap<String, u32>,
    count: u32,
    seed: u64,
}

fn arb_node() -> impl Strategy<Value = Node> {
    (
        (0u32..5, 0u32..5, 0u32..3, 0u32..3),
        prop::option::of(prop::sample::select(vec!["a", "b", "c"])),
        prop::option::of(prop::sample::select(vec!["spot", "on-demand"])),
        prop::option::of(prop::sample::select(vec!["A", "B"])),
        (0u8..10, any::<bool>(), 0u32..3, 0u32..3, any::<bool>()),
    )
        .prop_map(
            |((c, m, uc, um), zone, pool, cp, (status, connected, web, other, port80))| {
                let mut n = Node::new(String::new(), c * 512, m * 512);
                n.used_cpu = (uc * 256).min(n.total_cpu);
                n.used_memory = (um * 256).min(n.total_memory);
                if let Some(z) = zone {
                    n.attributes.insert("zone".into(), z.into());
                }
                if let Some(p) = pool {
                    n.attributes.insert("pool".into(), p.into());
                }
                n.capacity_provider = cp.map(str::to_string);
                n.status = match status {
                    0 => NodeStatus::Draining,
                    1 => NodeStatus::Lost,
                    _ => NodeStatus::Active,
                };
                n.agent_connected = connected || status > 3;
                if web > 0 {
                    n.task_groups.insert(WEB.into(), web);
                }
                if other > 0 {
                    n.task_groups.insert("service:db".into(), other);
                }
                n.running_tasks = web + other;
                if port80 {
                    n.used_ports.insert((80, Protocol::Tcp));
                }
                n
            },
        )
}

fn arb_strategy() -> impl Strategy<Value = PlacementStrategy> {
    prop::sample::select(vec![
        binpack("cpu"),
        binpack("memory"),
        spread("instanceId"),
        spread("host"),
        spread("attribute:zone"),
        spread("attribute:pool"),
        random(),
    ])
}

fn arb_case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(arb_node(), 0..9),
        any::<u64>(),
        (0u32..4, 0u32..4, any::<bool>()),
        (
            any::<bool>(),
            prop::collection::vec(0usize..EXPRESSIONS.len(), 0..3),
        ),
        prop::collection::vec(arb_strategy(), 0..4),
        prop::option::of((0u32..3, 0u32..3, 0u32..3, 0u32..3)),
        (0u32..3, 0u32..3),
        (0u32..16, any::<u64>()),
    )
        .prop_map(
            |(
                mut nodes,
                shuffle,
                (cpu, mem, port),
                (distinct, exprs),
                strategy,
                cps,
                (aa, ab),
                (count, seed),
            )| {
                // Names, in an order that is sorted or not depending on `shuffle`.
                let len = nodes.len();
                for (i, n) in nodes.iter_mut().enumerate() {
                    let k = if shuffle % 2 == 0 {
                        i
                    } else {
                        (i * 5 + (shuffle as usize % 7)) % len.max(1) + len * (i % 2)
                    };
                    n.name = format!("n{k:02}-{i}");
                }
                let mut constraints: Vec<Constraint> = exprs
                    .into_iter()
                    .map(|e| Constraint::member_of(EXPRESSIONS[e]).unwrap())
                    .collect();
                if distinct {
                    constraints.push(Constraint::DistinctInstance);
                }
                let providers = match cps {
                    None => Vec::new(),
                    Some((ba, wa, bb, wb)) => vec![
                        provider("A", ba, wa),
                        provider("B", bb, wb.max(u32::from(wa == 0))),
                    ],
                };
                Case {
                    nodes,
                    cpu: cpu * 256,
                    memory: mem * 256,
                    ports: if port {
                        vec![(80, Protocol::Tcp)]
                    } else {
                        Vec::new()
                    },
                    constraints,
                    strategy,
                    providers,
                    already: BTreeMap::from([("A".to_string(), aa), ("B".to_string(), ab)]),
                    count,
                    seed,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn placements_are_feasible_and_match_the_reference(case in arb_case()) {
        let req = TaskRequest {
            group: WEB.to_string(),
            cpu: case.cpu,
            memory: case.memory,
            host_ports: case.ports.clone(),
            constraints: &case.constraints,
            strategy: &case.strategy,
            capacity_provider_strategy: &case.providers,
        };
        let mut nodes = case.nodes.clone();
        let p = place(&mut nodes, &req, case.count, &case.already, case.seed);
        let unplaced = p.failure.as_ref().map_or(0, |f| f.unplaced);
        prop_assert_eq!(p.assignments.len() as u32 + unplaced, case.count);
        if let Some(f) = &p.failure {
            prop_assert!(f.unplaced > 0 && !f.missing.is_empty() && !f.reason.is_empty());
        }

        // Replay on the original nodes: each task was feasible when it landed.
        let exprs: Vec<&expression::Expr> = case.constraints.iter().filter_map(|c| match c {
            Constraint::MemberOf(e) => Some(e),
            Constraint::DistinctInstance => None,
        }).collect();
        let distinct = case.constraints.contains(&Constraint::DistinctInstance);
        let mut replay = case.nodes.clone();
        let names: Vec<&str> = case.providers.iter().map(|c| c.capacity_provider.as_str()).collect();
        for &i in &p.assignments {
            let missing = diagnose::missing(&replay[i], &req, &exprs, distinct);
            prop_assert!(missing.is_empty(), "task on {} lacks {:?}", replay[i].name, missing);
            if !names.is_empty() {
                prop_assert!(replay[i].capacity_provider.as_deref().is_some_and(|c| names.contains(&c)));
            }
            replay[i].add_task(&req);
            prop_assert!(replay[i].used_cpu <= replay[i].total_cpu.max(case.nodes[i].used_cpu));
            prop_assert!(replay[i].used_memory <= replay[i].total_memory.max(case.nodes[i].used_memory));
        }
        prop_assert_eq!(&replay, &nodes);

        // Without a capacity provider strategy a failure means nothing fits any more.
        if p.failure.is_some() && case.providers.is_empty() {
            prop_assert!(nodes.iter().all(|n| !diagnose::missing(n, &req, &exprs, distinct).is_empty()));
        }

        // Without `random`, exactly what scoring every node for every task picks.
        if !case.strategy.iter().any(|s| s.kind == Kind::Random) {
            let mut naive = case.nodes.clone();
            let want: Vec<usize> = reference_place(&mut naive, &req, case.count, &case.already)
                .into_iter()
                .flatten()
                .collect();
            prop_assert_eq!(&p.assignments, &want);
        }
    }
}

#[test]
fn a_node_short_of_room_is_closer_than_one_outside_the_constraints() {
    let mut nodes = zoned(&["a", "b"], 1, 4096, 8192);
    nodes[0].used_memory = 8000;
    let c = [Constraint::member_of("attribute:zone == a").unwrap()];
    let p = run(&mut nodes, &request(1, 512, &c, &[]), 1);
    let f = p.failure.unwrap();
    // b-0 has all the room but is not in zone a; a-0 only lacks memory.
    assert_eq!(f.closest_node.as_deref(), Some("a-0"));
    assert_eq!(
        f.missing,
        [Missing::Memory {
            needed: 512,
            free: 192
        }]
    );
}

#[test]
fn a_parallel_scan_changes_nothing() {
    // Large enough for the scan to split; mixed attributes, tasks, status.
    let build = || -> Vec<Node> {
        (0..3000)
            .map(|i| {
                let mut n = Node::new(format!("n{:04}", (i * 7919) % 3000), 4096, 8192)
                    .with_attribute("zone", ["a", "b", "c"][i % 3])
                    .with_attribute("pool", if i % 5 == 0 { "spot" } else { "on-demand" });
                if i % 11 == 0 {
                    n.task_groups.insert(WEB.into(), 1);
                }
                if i % 13 == 0 {
                    n.status = NodeStatus::Draining;
                }
                n.used_memory = (i as u32 * 37) % 8192;
                n
            })
            .collect()
    };
    let c = [
        Constraint::member_of("attribute:pool != spot").unwrap(),
        Constraint::DistinctInstance,
    ];
    for s in [
        vec![spread("attribute:zone"), spread("instanceId")],
        vec![binpack("memory")],
        vec![random()],
    ] {
        let r = request(64, 256, &c, &s);
        let (mut one, mut two) = (build(), build());
        let a = place_with(
            &mut one,
            &r,
            2500,
            &BTreeMap::new(),
            5,
            PlaceOptions { threads: 1 },
        );
        let b = place_with(
            &mut two,
            &r,
            2500,
            &BTreeMap::new(),
            5,
            PlaceOptions { threads: 2 },
        );
        assert_eq!(a, b);
        assert_eq!(one, two);
        assert!(a.assignments.len() > 1000);
    }
}
