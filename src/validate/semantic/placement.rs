//! Rules on where tasks may go: capacity provider strategies (of a
//! Cluster, a Service or a ScheduledTask), placement strategies (of a
//! Service or a ScheduledTask) and placement constraints (of those and a
//! TaskDefinition). Separate because several kinds share them.

use std::collections::HashSet;

use super::{Finding, Index};
use crate::expression;
use crate::manifest::service::{PlacementStrategy, PlacementStrategyType};
use crate::manifest::{
    CapacityProviderStrategyItem, Manifest, PlacementConstraint, PlacementConstraintType,
};
use crate::validate::Entry;

/// The placement fields a Service and a ScheduledTask share, at the same
/// pointers in both: `/spec/placementStrategy`,
/// `/spec/placementConstraints`, `/spec/capacityProviderStrategy`.
pub(super) struct Fields<'a> {
    pub strategy: &'a [PlacementStrategy],
    pub constraints: &'a [PlacementConstraint],
    pub providers: &'a [CapacityProviderStrategyItem],
    pub cluster: &'a str,
}

/// Check a resource's [`Fields`].
pub(super) fn fields(
    entry: usize,
    f: Fields,
    index: &Index,
    entries: &[Entry],
    out: &mut Vec<Finding>,
) {
    strategies(entry, "/spec/placementStrategy", f.strategy, out);
    constraints(
        entry,
        "/spec/placementConstraints",
        f.constraints,
        false,
        out,
    );
    cluster_strategy(
        entry,
        "/spec/capacityProviderStrategy",
        f.providers,
        f.cluster,
        index,
        entries,
        out,
    );
}

/// A capacity provider strategy of a resource that runs in `cluster`:
/// checked against the providers the cluster attaches, when the cluster is
/// in the source (a missing one is reported as a reference).
pub(super) fn cluster_strategy(
    entry: usize,
    base: &str,
    items: &[CapacityProviderStrategyItem],
    cluster: &str,
    index: &Index,
    entries: &[Entry],
    out: &mut Vec<Finding>,
) {
    let Some(&c) = index.clusters.get(cluster) else {
        return;
    };
    if let Manifest::Cluster(cm) = &entries[c].manifest {
        strategy(
            entry,
            base,
            items,
            &cm.spec.capacity_providers,
            cluster,
            out,
        );
    }
}

/// Placement strategies: each type with a field it works on.
pub(super) fn strategies(
    entry: usize,
    base: &str,
    list: &[PlacementStrategy],
    out: &mut Vec<Finding>,
) {
    for (j, s) in list.iter().enumerate() {
        let p = format!("{base}/{j}");
        let field = s.field.as_deref();
        let problem = match (s.kind, field) {
            (PlacementStrategyType::Random, Some(_)) => Some("`random` takes no field"),
            (PlacementStrategyType::Spread, None) => {
                Some("`spread` needs a field: instanceId, host or attribute:NAME")
            }
            (PlacementStrategyType::Spread, Some(f))
                if !(f == "instanceId" || f == "host" || f.starts_with("attribute:")) =>
            {
                Some("`spread` works on instanceId, host or attribute:NAME")
            }
            (PlacementStrategyType::Binpack, Some("cpu" | "memory")) => None,
            (PlacementStrategyType::Binpack, _) => Some("`binpack` needs field `cpu` or `memory`"),
            _ => None,
        };
        if let Some(msg) = problem {
            out.push(Finding::error("placement", entry, p, msg.into()));
        }
    }
}

pub(super) fn strategy(
    entry: usize,
    base: &str,
    items: &[CapacityProviderStrategyItem],
    attached: &[String],
    cluster: &str,
    out: &mut Vec<Finding>,
) {
    if items.is_empty() {
        return;
    }
    let with_base: Vec<usize> = (0..items.len()).filter(|&j| items[j].base > 0).collect();
    for &j in with_base.iter().skip(1) {
        out.push(
            Finding::error(
                "capacity-provider-strategy",
                entry,
                format!("{base}/{j}/base"),
                "only one item of a capacity provider strategy may have a base".into(),
            )
            .help(format!(
                "`{}` already has a base",
                items[with_base[0]].capacity_provider
            )),
        );
    }
    if items.iter().all(|it| it.weight == 0) {
        out.push(
            Finding::error(
                "capacity-provider-strategy",
                entry,
                base.to_string(),
                "no item of the capacity provider strategy has a weight above 0, so tasks beyond the base cannot be placed".into(),
            )
            .at_key()
            .help("give at least one provider a weight, e.g. `weight: 1`"),
        );
    }
    let mut seen = HashSet::new();
    for (j, it) in items.iter().enumerate() {
        let p = format!("{base}/{j}/capacityProvider");
        if !seen.insert(it.capacity_provider.as_str()) {
            out.push(Finding::error(
                "capacity-provider-strategy",
                entry,
                p.clone(),
                format!("`{}` appears twice in the strategy", it.capacity_provider),
            ));
        }
        if !attached.contains(&it.capacity_provider) {
            out.push(
                Finding::error(
                    "capacity-provider-strategy",
                    entry,
                    p,
                    format!(
                        "capacity provider `{}` is not attached to cluster `{cluster}`",
                        it.capacity_provider
                    ),
                )
                .help(format!(
                    "add it to the capacityProviders of Cluster `{cluster}`"
                )),
            );
        }
    }
}

pub(super) fn constraints(
    entry: usize,
    base: &str,
    list: &[PlacementConstraint],
    memberof_only: bool,
    out: &mut Vec<Finding>,
) {
    for (j, c) in list.iter().enumerate() {
        let p = format!("{base}/{j}");
        match (c.kind, &c.expression) {
            (PlacementConstraintType::DistinctInstance, _) if memberof_only => out.push(
                Finding::error(
                    "placement",
                    entry,
                    format!("{p}/type"),
                    "a task definition allows only `memberOf` constraints".into(),
                )
                .help("put `distinctInstance` on the Service's placementConstraints"),
            ),
            (PlacementConstraintType::DistinctInstance, Some(_)) => out.push(Finding::error(
                "placement",
                entry,
                format!("{p}/expression"),
                "`distinctInstance` takes no expression".into(),
            )),
            (PlacementConstraintType::MemberOf, None) => out.push(
                Finding::error(
                    "placement",
                    entry,
                    p,
                    "`memberOf` needs an expression".into(),
                )
                .help("e.g. `expression: \"attribute:zone in [a, b]\"`"),
            ),
            (PlacementConstraintType::MemberOf, Some(expr)) => {
                if let Err(e) = expression::parse(expr) {
                    out.push(Finding::error(
                        "placement",
                        entry,
                        format!("{p}/expression"),
                        format!("invalid expression: {e}"),
                    ));
                }
            }
            (PlacementConstraintType::DistinctInstance, None) => {}
        }
    }
}
