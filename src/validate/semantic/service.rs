//! Rules on a Service: its cluster and task definition exist, scheduling
//! and deployment settings can make progress, and its placement
//! strategies, constraints and capacity provider strategy are valid.
//! Separate because they concern one kind.

use super::placement::{constraints, strategy};
use super::references::missing_ref;
use super::{Finding, Index};
use crate::manifest::service::{PlacementStrategyType, SchedulingStrategy};
use crate::manifest::Manifest;
use crate::validate::{Entry, Severity};

pub(super) fn service(
    i: usize,
    spec: &crate::manifest::ServiceSpec,
    index: &Index,
    entries: &[Entry],
    out: &mut Vec<Finding>,
) {
    let cluster = index.clusters.get(spec.cluster.as_str()).copied();
    if cluster.is_none() {
        out.push(missing_ref(
            "reference",
            i,
            "/spec/cluster".into(),
            "Cluster",
            &spec.cluster,
            index.clusters.keys().copied(),
        ));
    }
    let crate::model::TaskDefRef { family, revision } =
        crate::model::TaskDefRef::parse(&spec.task_definition);
    if !index.families.contains_key(family) {
        let f = missing_ref(
            "reference",
            i,
            "/spec/taskDefinition".into(),
            "TaskDefinition",
            family,
            index.families.keys().copied(),
        );
        if revision.is_some() {
            // A pinned revision may have been registered from an earlier
            // source; only the store can tell at plan time.
            out.push(Finding {
                severity: Severity::Warning,
                message: format!(
                    "no TaskDefinition family `{family}` in the source; revision {} must already be registered",
                    spec.task_definition
                ),
                ..f
            });
        } else {
            out.push(f);
        }
    }
    let d = &spec.deployment_configuration;
    match spec.scheduling_strategy {
        SchedulingStrategy::Replica => {
            let desired = spec.desired_count.unwrap_or_else(|| {
                out.push(
                    Finding::error(
                        "scheduling",
                        i,
                        "/spec",
                        "a REPLICA service needs desiredCount".into(),
                    )
                    .at_key()
                    .help("add e.g. `desiredCount: 1`"),
                );
                0
            });
            let min = d.min_healthy(spec.scheduling_strategy);
            let max = d.max_percent(spec.scheduling_strategy);
            let floor = (u64::from(desired) * u64::from(min)).div_ceil(100);
            let cap = u64::from(desired) * u64::from(max) / 100;
            if desired > 0 && cap <= u64::from(desired) && floor >= u64::from(desired) {
                out.push(
                    Finding::error(
                        "deployment",
                        i,
                        "/spec/deploymentConfiguration",
                        format!(
                            "a deployment can never make progress: with desiredCount {desired}, minimumHealthyPercent {min} forbids stopping any of the {floor} running {} and maximumPercent {max} forbids starting an extra one",
                            if floor == 1 { "task" } else { "tasks" }
                        ),
                    )
                    .at_key()
                    .help("lower minimumHealthyPercent or raise maximumPercent so that a task can be stopped or an extra one started"),
                );
            }
        }
        SchedulingStrategy::Daemon => {
            if spec.desired_count.is_some() {
                out.push(
                    Finding::error(
                        "scheduling",
                        i,
                        "/spec/desiredCount",
                        "a DAEMON service runs one task per node; desiredCount is not allowed"
                            .into(),
                    )
                    .at_key(),
                );
            }
            if !spec.placement_strategy.is_empty() {
                out.push(
                    Finding::error(
                        "scheduling",
                        i,
                        "/spec/placementStrategy",
                        "a DAEMON service takes no placementStrategy".into(),
                    )
                    .at_key(),
                );
            }
            if !spec.capacity_provider_strategy.is_empty() {
                out.push(
                    Finding::error(
                        "scheduling",
                        i,
                        "/spec/capacityProviderStrategy",
                        "a DAEMON service takes no capacityProviderStrategy".into(),
                    )
                    .at_key(),
                );
            }
            if d.min_healthy(spec.scheduling_strategy) >= 100 {
                out.push(
                    Finding::error(
                        "deployment",
                        i,
                        "/spec/deploymentConfiguration/minimumHealthyPercent",
                        "a DAEMON service replaces its one task per node by stopping it first, so minimumHealthyPercent must be below 100".into(),
                    ),
                );
            }
            if d.max_percent(spec.scheduling_strategy) != 100 {
                out.push(Finding::warning(
                    "deployment",
                    i,
                    "/spec/deploymentConfiguration/maximumPercent",
                    "maximumPercent has no effect on a DAEMON service (one task per node)".into(),
                ));
            }
        }
    }
    if d.deployment_circuit_breaker.rollback && !d.deployment_circuit_breaker.enable {
        out.push(
            Finding::warning(
                "deployment",
                i,
                "/spec/deploymentConfiguration/deploymentCircuitBreaker/rollback",
                "rollback has no effect while the circuit breaker is not enabled".into(),
            )
            .help("set `enable: true`"),
        );
    }
    for (j, s) in spec.placement_strategy.iter().enumerate() {
        let p = format!("/spec/placementStrategy/{j}");
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
            out.push(Finding::error("placement", i, p, msg.into()));
        }
    }
    constraints(
        i,
        "/spec/placementConstraints",
        &spec.placement_constraints,
        false,
        out,
    );
    if let Some(c) = cluster {
        if let Manifest::Cluster(cm) = &entries[c].manifest {
            strategy(
                i,
                "/spec/capacityProviderStrategy",
                &spec.capacity_provider_strategy,
                &cm.spec.capacity_providers,
                &spec.cluster,
                out,
            );
        }
    }
}
