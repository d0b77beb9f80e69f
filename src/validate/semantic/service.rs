//! Rules on a Service: its cluster and task definition exist, scheduling
//! and deployment settings can make progress, and its placement
//! strategies, constraints and capacity provider strategy are valid.
//! Separate because they concern one kind.

use super::placement::{fields, Fields};
use super::references::{cluster_ref, task_definition_ref};
use super::{Finding, Index};
use crate::manifest::service::SchedulingStrategy;
use crate::validate::Entry;

pub(super) fn service(
    i: usize,
    spec: &crate::manifest::ServiceSpec,
    index: &Index,
    entries: &[Entry],
    out: &mut Vec<Finding>,
) {
    cluster_ref(i, &spec.cluster, index, out);
    task_definition_ref(i, "/spec/taskDefinition", &spec.task_definition, index, out);
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
    fields(
        i,
        Fields {
            strategy: &spec.placement_strategy,
            constraints: &spec.placement_constraints,
            providers: &spec.capacity_provider_strategy,
            cluster: &spec.cluster,
        },
        index,
        entries,
        out,
    );
}
