//! Rebalancing of spread services (ECS `availabilityZoneRebalancing`):
//! whether a service takes part, and the next task to move.
//!
//! Placement spreads a service when its tasks start, over the nodes that
//! exist then. Nodes that join later (or come back) get none, so the
//! distribution stays as it was. Rebalancing moves one task at a time
//! from the most loaded value of the spread (a zone, or a node) to the
//! least loaded one, until no two differ by more than one task.
//!
//! Pure: the caller says what runs where and whether a node would take
//! one more task; the answer is one move or none. A move starts the new
//! task first when maximumPercent leaves room for one more, and otherwise
//! stops first when minimumHealthyPercent allows one fewer healthy task;
//! with neither, nothing moves.

use std::collections::BTreeMap;

use super::{Checks, Node, TaskRequest};
use crate::manifest::service::{PlacementStrategyType, SchedulingStrategy, ServiceSpec};
use crate::manifest::Toggle;

/// What a service spreads over, and so what rebalancing evens out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spread {
    /// The values of a node attribute (`attribute:NAME`); nodes without it
    /// form one more value, as placement counts them.
    Attribute(String),
    /// The nodes themselves (`instanceId`, `host`).
    Instance,
}

impl Spread {
    /// The value of the spread a node is counted under.
    pub fn bucket(&self, node: &str, attributes: &BTreeMap<String, String>) -> String {
        match self {
            Spread::Attribute(a) => attributes.get(a).cloned().unwrap_or_default(),
            Spread::Instance => node.to_string(),
        }
    }
}

/// Whether rebalancing applies to a service, and over what. It applies to
/// REPLICA services whose first placement strategy is a spread (the
/// default strategy spreads by zone), that never binpack, use no capacity
/// provider strategy (`providers`: the service's or its cluster's, whose
/// weights decide where tasks go) and did not turn it off.
pub fn spread_of(spec: &ServiceSpec, providers: bool) -> Option<Spread> {
    if spec.availability_zone_rebalancing == Some(Toggle::Disabled)
        || spec.scheduling_strategy != SchedulingStrategy::Replica
        || providers
    {
        return None;
    }
    let default;
    let strategy = if spec.placement_strategy.is_empty() {
        default = super::default_strategy();
        &default
    } else {
        &spec.placement_strategy
    };
    if strategy
        .iter()
        .any(|s| s.kind == PlacementStrategyType::Binpack)
    {
        return None;
    }
    let first = strategy.first()?;
    if first.kind != PlacementStrategyType::Spread {
        return None;
    }
    match first.field.as_deref()? {
        "instanceId" | "host" => Some(Spread::Instance),
        f => f
            .strip_prefix("attribute:")
            .map(|a| Spread::Attribute(a.to_string())),
    }
}

/// Whether `node` would take one more task of `req` (status, agent,
/// resources, ports, constraints), as placement checks it.
pub fn accepts(node: &Node, req: &TaskRequest) -> bool {
    let checks = Checks::new(req.constraints);
    checks.fixed_ok(node) && checks.fits_with(node, req, node.group_count(&req.group))
}

/// One node of the service's cluster that takes tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub node: String,
    /// The value of the spread the node counts under ([`Spread::bucket`]).
    pub bucket: String,
    /// Live tasks of the service on the node.
    pub tasks: u32,
    /// Whether the node would take one more task of the service.
    pub accepts: bool,
}

/// The service's deployment bounds, as a rollout reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub desired: u32,
    pub min_healthy_percent: u32,
    pub max_percent: u32,
}

impl Bounds {
    /// Healthy tasks that must remain: desired × minimum, rounded up.
    pub fn floor(&self) -> u32 {
        (u64::from(self.desired) * u64::from(self.min_healthy_percent)).div_ceil(100) as u32
    }

    /// Tasks that may run at once: desired × maximum, rounded down.
    pub fn cap(&self) -> u32 {
        (u64::from(self.desired) * u64::from(self.max_percent) / 100) as u32
    }
}

/// A service's tasks as rebalancing sees them.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// Every node of the cluster that takes tasks.
    pub slots: &'a [Slot],
    /// Live tasks of the service (on any node), and how many are healthy.
    pub running: u32,
    pub healthy: u32,
    pub bounds: Bounds,
}

/// Which half of a move comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Start on `to`, wait until it is healthy, then stop on `from`.
    StartFirst,
    /// Stop on `from`, then start on `to`.
    StopFirst,
}

/// One task moved from node `from` to node `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub from: String,
    pub to: String,
    pub from_bucket: String,
    pub to_bucket: String,
    pub order: Order,
}

/// Tasks per value of the spread, and whether some node of that value
/// takes one more.
pub fn buckets(slots: &[Slot]) -> BTreeMap<&str, (u32, bool)> {
    let mut b: BTreeMap<&str, (u32, bool)> = BTreeMap::new();
    for s in slots {
        let e = b.entry(s.bucket.as_str()).or_default();
        e.0 += s.tasks;
        e.1 |= s.accepts;
    }
    b
}

/// The fullest value and the emptiest one that takes a task, when they
/// differ by more than one task: what a move evens out.
pub fn imbalance(slots: &[Slot]) -> Option<(&str, &str)> {
    let b = buckets(slots);
    // Ties go to the name sorting first, so answers never depend on order.
    let from = b
        .iter()
        .max_by(|x, y| x.1 .0.cmp(&y.1 .0).then(y.0.cmp(x.0)))?;
    let to = b
        .iter()
        .filter(|(_, (_, accepts))| *accepts)
        .min_by(|x, y| x.1 .0.cmp(&y.1 .0).then(x.0.cmp(y.0)))?;
    (from.1 .0 > to.1 .0 + 1).then_some((*from.0, *to.0))
}

/// The next move, or none: the service is not steady (tasks pending or
/// unhealthy, or not desiredCount of them), it is as even as it can be,
/// or its bounds allow neither an extra task nor one fewer healthy one.
pub fn next_move(input: &Input) -> Option<Move> {
    let Bounds { desired, .. } = input.bounds;
    if input.running != desired || input.healthy != desired {
        return None;
    }
    let (from_bucket, to_bucket) = imbalance(input.slots)?;
    let order = if input.running < input.bounds.cap() {
        Order::StartFirst
    } else if input.healthy > input.bounds.floor() {
        Order::StopFirst
    } else {
        return None;
    };
    // Within the values, the node with most tasks gives one and the
    // accepting node with fewest takes it, so nodes even out too.
    let from = input
        .slots
        .iter()
        .filter(|s| s.bucket == from_bucket && s.tasks > 0)
        .max_by(|x, y| x.tasks.cmp(&y.tasks).then(y.node.cmp(&x.node)))?;
    let to = input
        .slots
        .iter()
        .filter(|s| s.bucket == to_bucket && s.accepts)
        .min_by(|x, y| x.tasks.cmp(&y.tasks).then(x.node.cmp(&y.node)))?;
    Some(Move {
        from: from.node.clone(),
        to: to.node.clone(),
        from_bucket: from_bucket.to_string(),
        to_bucket: to_bucket.to_string(),
        order,
    })
}

/// `a=6 b=0 c=0`: tasks per value, for events.
pub fn describe(slots: &[Slot]) -> String {
    buckets(slots)
        .iter()
        .map(|(b, (n, _))| {
            let name = if b.is_empty() { "(none)" } else { b };
            format!("{name}={n}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::service::PlacementStrategy;
    use proptest::prelude::*;

    fn slot(node: &str, bucket: &str, tasks: u32) -> Slot {
        Slot {
            node: node.into(),
            bucket: bucket.into(),
            tasks,
            accepts: true,
        }
    }

    fn bounds(desired: u32, min: u32, max: u32) -> Bounds {
        Bounds {
            desired,
            min_healthy_percent: min,
            max_percent: max,
        }
    }

    fn spec(extra: &str) -> ServiceSpec {
        let mut v = serde_json::json!({"cluster": "c", "taskDefinition": "t"});
        let extra: serde_json::Value = serde_json::from_str(extra).unwrap();
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn spread_services_take_part_unless_they_binpack_or_turn_it_off() {
        let zone = r#"{"placementStrategy": [{"type": "spread", "field": "attribute:zone"}]}"#;
        assert_eq!(
            spread_of(&spec(zone), false),
            Some(Spread::Attribute("zone".into()))
        );
        // The default strategy spreads by zone first.
        assert_eq!(
            spread_of(&spec("{}"), false),
            Some(Spread::Attribute("zone".into()))
        );
        let host = r#"{"placementStrategy": [{"type": "spread", "field": "host"}]}"#;
        assert_eq!(spread_of(&spec(host), false), Some(Spread::Instance));
        let off = r#"{"placementStrategy": [{"type": "spread", "field": "attribute:zone"}],
                      "availabilityZoneRebalancing": "DISABLED"}"#;
        assert_eq!(spread_of(&spec(off), false), None);
        let binpack = r#"{"placementStrategy": [{"type": "spread", "field": "attribute:zone"},
                                                {"type": "binpack", "field": "memory"}],
                          "availabilityZoneRebalancing": "ENABLED"}"#;
        assert_eq!(spread_of(&spec(binpack), false), None);
        let random = r#"{"placementStrategy": [{"type": "random"}]}"#;
        assert_eq!(spread_of(&spec(random), false), None);
        let daemon = r#"{"schedulingStrategy": "DAEMON"}"#;
        assert_eq!(spread_of(&spec(daemon), false), None);
        assert_eq!(spread_of(&spec(zone), true), None, "capacity providers");
    }

    #[test]
    fn six_on_one_zone_of_three_moves_new_task_first_into_the_emptiest() {
        let slots = [slot("n0", "a", 6), slot("n1", "b", 0), slot("n2", "c", 0)];
        let m = next_move(&Input {
            slots: &slots,
            running: 6,
            healthy: 6,
            bounds: bounds(6, 100, 150),
        })
        .unwrap();
        assert_eq!((m.from.as_str(), m.to.as_str()), ("n0", "n1"));
        assert_eq!(m.order, Order::StartFirst);
        // maximumPercent 100: one fewer healthy task first, when allowed.
        let m = next_move(&Input {
            slots: &slots,
            running: 6,
            healthy: 6,
            bounds: bounds(6, 50, 100),
        })
        .unwrap();
        assert_eq!(m.order, Order::StopFirst);
        // Neither bound gives room: nothing moves.
        let none = Input {
            slots: &slots,
            running: 6,
            healthy: 6,
            bounds: bounds(6, 100, 100),
        };
        assert_eq!(next_move(&none), None);
    }

    #[test]
    fn nothing_moves_when_even_unsteady_or_the_emptiest_is_full() {
        let mv = |slots: &[Slot], running, healthy| {
            next_move(&Input {
                slots,
                running,
                healthy,
                bounds: bounds(7, 100, 200),
            })
        };
        let even = [slot("n0", "a", 3), slot("n1", "b", 2), slot("n2", "c", 2)];
        assert_eq!(mv(&even, 7, 7), None);
        let off = [slot("n0", "a", 7), slot("n1", "b", 0)];
        assert_eq!(mv(&off, 7, 6), None, "one unhealthy");
        assert_eq!(mv(&off, 6, 6), None, "one missing");
        assert!(mv(&off, 7, 7).is_some());
        let mut full = off.clone();
        full[1].accepts = false;
        assert_eq!(mv(&full, 7, 7), None);
    }

    #[test]
    fn within_a_zone_the_fullest_node_gives_and_the_emptiest_takes() {
        let slots = [
            slot("n0", "a", 2),
            slot("n1", "a", 4),
            slot("n2", "b", 1),
            slot("n3", "b", 0),
        ];
        let m = next_move(&Input {
            slots: &slots,
            running: 7,
            healthy: 7,
            bounds: bounds(7, 100, 200),
        })
        .unwrap();
        assert_eq!((m.from.as_str(), m.to.as_str()), ("n1", "n3"));
        assert_eq!(describe(&slots), "a=6 b=1");
    }

    fn arb_slots() -> impl Strategy<Value = Vec<Slot>> {
        prop::collection::vec((0u8..4, 0u32..12, prop::bool::weighted(0.8)), 1..8).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (b, tasks, accepts))| Slot {
                    node: format!("n{i}"),
                    bucket: format!("z{b}"),
                    tasks,
                    accepts,
                })
                .collect()
        })
    }

    /// Apply `m` to the slots, as the controller does.
    fn apply(slots: &mut [Slot], m: &Move) {
        slots.iter_mut().find(|s| s.node == m.from).unwrap().tasks -= 1;
        slots.iter_mut().find(|s| s.node == m.to).unwrap().tasks += 1;
    }

    proptest! {
        /// A move never takes the healthy count below the floor nor the
        /// running count above the cap, moves a task that exists to a node
        /// that takes it, and narrows a gap of more than one task.
        #[test]
        fn moves_keep_the_bounds(
            slots in arb_slots(),
            healthy_gap in 0u32..2,
            extra in 0u32..2,
            min in 0u32..=100,
            max in 100u32..=250,
        ) {
            let total: u32 = slots.iter().map(|s| s.tasks).sum();
            let running = total + extra;
            let healthy = running.saturating_sub(healthy_gap);
            let b = bounds(total, min, max);
            let input = Input { slots: &slots, running, healthy, bounds: b };
            if let Some(m) = next_move(&input) {
                // Tasks at once during a start-first move, healthy ones
                // during a stop-first move.
                match m.order {
                    Order::StartFirst => {
                        let during = running + 1;
                        prop_assert!(during <= b.cap());
                    }
                    Order::StopFirst => {
                        let left = healthy - 1;
                        prop_assert!(left >= b.floor());
                    }
                }
                prop_assert_eq!(running, total);
                prop_assert_eq!(healthy, total);
                let from = slots.iter().find(|s| s.node == m.from).unwrap();
                let to = slots.iter().find(|s| s.node == m.to).unwrap();
                prop_assert!(from.tasks > 0 && to.accepts);
                let per = buckets(&slots);
                prop_assert!(per[m.from_bucket.as_str()].0 >= per[m.to_bucket.as_str()].0 + 2);
            }
        }

        /// Moves end, and leave no value of the spread more than one task
        /// above any value that takes tasks (all of them, when every node
        /// has room), whatever the bounds that let a task move at all.
        #[test]
        fn moves_converge_to_a_spread_within_one(
            mut slots in arb_slots(),
            all_accept in any::<bool>(),
            min in 0u32..=100,
            max in 100u32..=250,
        ) {
            if all_accept {
                for s in &mut slots {
                    s.accepts = true;
                }
            }
            let total: u32 = slots.iter().map(|s| s.tasks).sum();
            let b = bounds(total, min, max);
            prop_assume!(total < b.cap() || total > b.floor());
            // Each move lowers the sum of squares per value by at least 2.
            let limit = total * total;
            let mut moves = 0;
            while let Some(m) = next_move(&Input { slots: &slots, running: total, healthy: total, bounds: b }) {
                apply(&mut slots, &m);
                moves += 1;
                prop_assert!(moves <= limit, "no convergence: {slots:?}");
            }
            prop_assert_eq!(slots.iter().map(|s| s.tasks).sum::<u32>(), total);
            let per = buckets(&slots);
            let max_all = per.values().map(|v| v.0).max().unwrap();
            for (n, accepts) in per.values() {
                if *accepts {
                    prop_assert!(max_all <= n + 1, "{:?}", per);
                }
            }
            if all_accept {
                let min_all = per.values().map(|v| v.0).min().unwrap();
                prop_assert!(max_all - min_all <= 1);
            }
        }
    }

    #[test]
    fn disabled_services_never_move_however_uneven() {
        // The controller asks `spread_of` first: DISABLED and binpack give
        // no spread, so no move is ever planned for them.
        let mut s =
            spec(r#"{"placementStrategy": [{"type": "spread", "field": "attribute:zone"}]}"#);
        s.availability_zone_rebalancing = Some(Toggle::Disabled);
        assert!(spread_of(&s, false).is_none());
        s.availability_zone_rebalancing = Some(Toggle::Enabled);
        s.placement_strategy.push(PlacementStrategy {
            kind: PlacementStrategyType::Binpack,
            field: Some("cpu".into()),
        });
        assert!(spread_of(&s, false).is_none());
    }
}
