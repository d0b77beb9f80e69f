//! Managed scaling of capacity providers, ECS target tracking in one pure
//! function: given a provider's nodes and the tasks it cannot place, how
//! many nodes to launch or which to retire.
//!
//! CapacityProviderReservation = M / N x 100, where N is the provider's
//! nodes (launched ones still joining included) and M the nodes needed:
//! those running tasks plus an estimate for the tasks that found no place
//! (M = 0, N = 0 gives 100; M > 0, N = 0 gives 200). Scaling holds it at
//! targetCapacity: the wanted size is ceil(M x 100 / target), within the
//! template's minimum and maximum size, reached in steps of at least
//! minimumScalingStepSize and at most maximumScalingStepSize nodes.
//!
//! Only nodes the controller launched are retired, never one younger than
//! instanceWarmupPeriod, idle ones first, and with managed termination
//! protection never one that runs tasks.

use std::time::Duration;

/// A node of the provider as scaling sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalingNode {
    pub name: String,
    /// Runs (or is assigned) at least one task.
    pub busy: bool,
    /// Launched by the controller (only those can be retired).
    pub launched: bool,
    /// Time since it was launched or joined.
    pub age: Duration,
}

/// Everything one decision needs.
#[derive(Debug, Clone)]
pub struct ProviderView {
    pub target_capacity: u32,
    pub min_step: u32,
    pub max_step: u32,
    pub min_size: u32,
    pub max_size: u32,
    pub warmup: Duration,
    pub protection: bool,
    pub nodes: Vec<ScalingNode>,
    /// Launched, not joined yet.
    pub joining: u32,
    /// Nodes the unplaced tasks need.
    pub needed_extra: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Hold,
    Launch(u32),
    Retire(Vec<String>),
}

/// M (nodes needed) and N (nodes, joining ones included) of the
/// reservation.
pub fn needed_and_nodes(v: &ProviderView) -> (u32, u32) {
    let busy = v.nodes.iter().filter(|n| n.busy).count() as u32;
    (busy + v.needed_extra, v.nodes.len() as u32 + v.joining)
}

/// The number of nodes that holds the reservation at targetCapacity,
/// within the size bounds.
pub fn wanted(v: &ProviderView) -> u32 {
    let (m, _) = needed_and_nodes(v);
    let target = v.target_capacity.clamp(1, 100);
    (m * 100)
        .div_ceil(target)
        .clamp(v.min_size, v.max_size.max(v.min_size))
}

/// The reservation (percent) and what to do.
pub fn decide(v: &ProviderView) -> (u32, Decision) {
    let (m, n) = needed_and_nodes(v);
    let reservation = match (m, n) {
        (0, 0) => 100,
        (_, 0) => 200,
        _ => m * 100 / n,
    };
    let wanted = wanted(v);
    if wanted > n {
        let step = (wanted - n).clamp(v.min_step.max(1), v.max_step.max(1));
        let room = v.max_size.max(v.min_size).saturating_sub(n);
        let launch = step.min(room);
        return (
            reservation,
            if launch > 0 {
                Decision::Launch(launch)
            } else {
                Decision::Hold
            },
        );
    }
    if wanted < n && v.joining == 0 {
        let count = (n - wanted).min(v.max_step.max(1)) as usize;
        let mut candidates: Vec<&ScalingNode> = v
            .nodes
            .iter()
            .filter(|x| x.launched && x.age >= v.warmup && !(v.protection && x.busy))
            .collect();
        // Idle nodes first, then the youngest.
        candidates.sort_by_key(|x| (x.busy, x.age));
        let retire: Vec<String> = candidates
            .into_iter()
            .take(count)
            .map(|x| x.name.clone())
            .collect();
        if !retire.is_empty() {
            return (reservation, Decision::Retire(retire));
        }
    }
    (reservation, Decision::Hold)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, busy: bool, age: u64) -> ScalingNode {
        ScalingNode {
            name: name.into(),
            busy,
            launched: true,
            age: Duration::from_secs(age),
        }
    }

    fn view(nodes: Vec<ScalingNode>, extra: u32) -> ProviderView {
        ProviderView {
            target_capacity: 100,
            min_step: 1,
            max_step: 10,
            min_size: 0,
            max_size: 10,
            warmup: Duration::from_secs(60),
            protection: true,
            nodes,
            joining: 0,
            needed_extra: extra,
        }
    }

    #[test]
    fn empty_provider_with_unplaced_tasks_launches() {
        let (r, d) = decide(&view(vec![], 2));
        assert_eq!(r, 200);
        assert_eq!(d, Decision::Launch(2));
    }

    #[test]
    fn empty_provider_with_nothing_to_run_holds() {
        assert_eq!(decide(&view(vec![], 0)), (100, Decision::Hold));
    }

    #[test]
    fn target_capacity_keeps_spare_nodes() {
        let mut v = view(vec![node("a", true, 100), node("b", true, 100)], 0);
        v.target_capacity = 50;
        // M = 2, wanted = 4.
        assert_eq!(decide(&v), (100, Decision::Launch(2)));
    }

    #[test]
    fn steps_are_clamped_and_size_bounded() {
        let mut v = view(vec![], 20);
        v.max_step = 3;
        assert_eq!(decide(&v).1, Decision::Launch(3));
        v.max_step = 100;
        v.max_size = 5;
        assert_eq!(decide(&v).1, Decision::Launch(5));
        let mut v = view(vec![node("a", true, 100)], 1);
        v.min_step = 4;
        assert_eq!(decide(&v).1, Decision::Launch(4));
    }

    #[test]
    fn scale_in_retires_idle_launched_nodes_after_warmup() {
        let v = view(
            vec![
                node("busy", true, 100),
                node("idle-old", false, 100),
                node("idle-new", false, 10),
            ],
            0,
        );
        // M = 1, N = 3: one idle node past warm-up can go.
        assert_eq!(decide(&v), (33, Decision::Retire(vec!["idle-old".into()])));
    }

    #[test]
    fn protection_never_retires_a_busy_node() {
        let mut v = view(vec![node("a", true, 100), node("b", true, 100)], 0);
        v.min_size = 0;
        v.target_capacity = 100;
        // Nothing idle; wanted = 2 = N anyway. Force a smaller wanted size:
        v.max_size = 1;
        assert_eq!(decide(&v).1, Decision::Hold);
        v.protection = false;
        assert_eq!(decide(&v).1, Decision::Retire(vec!["a".into()]));
    }

    #[test]
    fn minimum_size_is_kept_and_foreign_nodes_are_never_retired() {
        let mut v = view(vec![node("a", false, 100), node("b", false, 100)], 0);
        v.min_size = 1;
        assert_eq!(decide(&v).1, Decision::Retire(vec!["a".into()]));
        v.nodes[0].launched = false;
        v.nodes[1].launched = false;
        assert_eq!(decide(&v).1, Decision::Hold);
    }

    #[test]
    fn no_scale_in_while_nodes_are_joining() {
        let mut v = view(vec![node("a", false, 100)], 0);
        v.joining = 1;
        assert_eq!(decide(&v).1, Decision::Hold);
    }
}
