//! Why a task fits nowhere: every check of every candidate node, the node
//! that came closest, and an ECS-style sentence.

use super::render;
use super::{Missing, Node, NodeStatus, PlacementFailure, TaskRequest};
use crate::expression::Expr;

/// Everything `n` lacks to take one task of `req` (empty: it fits).
pub(crate) fn missing(
    n: &Node,
    req: &TaskRequest,
    exprs: &[&Expr],
    distinct: bool,
) -> Vec<Missing> {
    let mut out = Vec::new();
    if n.status != NodeStatus::Active {
        out.push(Missing::NotActive { status: n.status });
    }
    if !n.agent_connected {
        out.push(Missing::AgentDisconnected);
    }
    if n.free_cpu() < req.cpu {
        out.push(Missing::Cpu {
            needed: req.cpu,
            free: n.free_cpu(),
        });
    }
    if n.free_memory() < req.memory {
        out.push(Missing::Memory {
            needed: req.memory,
            free: n.free_memory(),
        });
    }
    for &(port, protocol) in &req.host_ports {
        if n.used_ports.contains(&(port, protocol)) {
            out.push(Missing::Port { port, protocol });
        }
    }
    for e in exprs {
        if !e.matches(n) {
            out.push(Missing::Constraint {
                expression: render::expression(e),
            });
        }
    }
    if distinct && n.group_count(&req.group) > 0 {
        out.push(Missing::DistinctInstance);
    }
    out
}

/// How much of its scarcest resource a node has, relative to the need:
/// `min(free/needed)` over CPU and memory (resources not needed ignored).
fn headroom(n: &Node, req: &TaskRequest) -> f64 {
    let ratio = |free: u32, need: u32| {
        if need == 0 {
            f64::INFINITY
        } else {
            f64::from(free) / f64::from(need)
        }
    };
    ratio(n.free_cpu(), req.cpu).min(ratio(n.free_memory(), req.memory))
}

/// Checks a node cannot pass by freeing resources: status, agent,
/// constraints.
fn hard(m: &[Missing]) -> usize {
    m.iter()
        .filter(|m| {
            !matches!(
                m,
                Missing::Cpu { .. } | Missing::Memory { .. } | Missing::Port { .. }
            )
        })
        .count()
}

/// The closest of the `candidates` (node indices): fewest unmet hard checks
/// (status, agent, constraints; a node that only lacks room is closer than
/// one that may never take the task), then fewest unmet checks, then most
/// headroom on the scarcest resource, then first name.
pub(crate) fn closest(
    nodes: &[Node],
    candidates: impl Iterator<Item = usize>,
    req: &TaskRequest,
    exprs: &[&Expr],
    distinct: bool,
) -> Option<(usize, Vec<Missing>)> {
    let mut best: Option<(usize, Vec<Missing>, f64)> = None;
    for i in candidates {
        let n = &nodes[i];
        let m = missing(n, req, exprs, distinct);
        let h = headroom(n, req);
        let better = match &best {
            None => true,
            Some((b, bm, bh)) => {
                (hard(&m), m.len(), std::cmp::Reverse(h_key(h)), &n.name)
                    < (
                        hard(bm),
                        bm.len(),
                        std::cmp::Reverse(h_key(*bh)),
                        &nodes[*b].name,
                    )
            }
        };
        if better {
            best = Some((i, m, h));
        }
    }
    best.map(|(i, m, _)| (i, m))
}

/// Total order on headroom values (never NaN: ratios of finite numbers or
/// infinity).
fn h_key(h: f64) -> u64 {
    // Positive floats order like their bit patterns.
    h.max(0.0).to_bits()
}

/// Join phrases: "a", "a and b", "a, b and c".
pub(crate) fn join(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The failure of the tasks of one pool (`provider` is `None` when the
/// request has no capacity provider strategy).
pub(crate) fn pool_failure(
    nodes: &[Node],
    req: &TaskRequest,
    provider: Option<&str>,
    exprs: &[&Expr],
    distinct: bool,
    unplaced: u32,
) -> PlacementFailure {
    let scope = |n: &Node| provider.is_none_or(|p| n.capacity_provider.as_deref() == Some(p));
    let candidates = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| scope(n))
        .map(|(i, _)| i);
    let who = match provider {
        None => "no node".to_string(),
        Some(p) => format!("no node of capacity provider `{p}`"),
    };
    match closest(nodes, candidates, req, exprs, distinct) {
        None => {
            let m = match provider {
                None => Missing::NoNodes,
                Some(p) => Missing::ProviderHasNoNodes {
                    provider: p.to_string(),
                },
            };
            PlacementFailure {
                unplaced,
                reason: format!("no node met all of the task's requirements: {m}."),
                closest_node: None,
                missing: vec![m],
            }
        }
        Some((i, m)) => {
            let phrases: Vec<String> = m.iter().map(ToString::to_string).collect();
            PlacementFailure {
                unplaced,
                reason: format!(
                    "{who} met all of the task's requirements. The closest matching node `{}` {}.",
                    nodes[i].name,
                    join(&phrases)
                ),
                closest_node: Some(nodes[i].name.clone()),
                missing: m,
            }
        }
    }
}

/// The failure of tasks beyond the bases when no provider has a weight.
pub(crate) fn no_weight(unplaced: u32) -> PlacementFailure {
    let m = Missing::NoWeightedProvider;
    PlacementFailure {
        unplaced,
        reason: format!("no node met all of the task's requirements: {m}."),
        closest_node: None,
        missing: vec![m],
    }
}

/// One record for all failed tasks of a call: the first failure's node and
/// missing items, the total count, every distinct reason.
pub(crate) fn merge(parts: Vec<PlacementFailure>) -> Option<PlacementFailure> {
    let mut it = parts.into_iter();
    let mut out = it.next()?;
    for p in it {
        out.unplaced += p.unplaced;
        out.reason.push_str(" Also: ");
        out.reason.push_str(&p.reason);
        for m in p.missing {
            if !out.missing.contains(&m) {
                out.missing.push(m);
            }
        }
    }
    Some(out)
}
