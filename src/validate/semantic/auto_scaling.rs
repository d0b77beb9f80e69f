//! Rules on a Service's autoScaling: bounds in order, targets above 0, a
//! starting count inside the bounds (brought inside, as Application Auto
//! Scaling does, with a warning), REPLICA services only, and request
//! counts only where a listener counts them. Separate because auto scaling
//! is a block of its own.

use super::Finding;
use crate::manifest::auto_scaling::PredefinedMetric;
use crate::manifest::service::SchedulingStrategy;
use crate::manifest::ServiceSpec;

pub(super) fn auto_scaling(i: usize, spec: &ServiceSpec, out: &mut Vec<Finding>) {
    let Some(a) = &spec.auto_scaling else {
        return;
    };
    const CODE: &str = "auto-scaling";
    if spec.scheduling_strategy == SchedulingStrategy::Daemon {
        out.push(
            Finding::error(
                CODE,
                i,
                "/spec/autoScaling",
                "a DAEMON service runs one task per node; it cannot be auto scaled".into(),
            )
            .at_key(),
        );
        return;
    }
    if a.min_capacity > a.max_capacity {
        out.push(Finding::error(
            CODE,
            i,
            "/spec/autoScaling/minCapacity",
            format!(
                "minCapacity ({}) is above maxCapacity ({})",
                a.min_capacity, a.max_capacity
            ),
        ));
    } else if let Some(d) = spec.desired_count {
        if d < a.min_capacity || d > a.max_capacity {
            let start = d.clamp(a.min_capacity, a.max_capacity);
            out.push(
                Finding::warning(
                    CODE,
                    i,
                    "/spec/desiredCount",
                    format!(
                        "desiredCount {d} is outside minCapacity {} and maxCapacity {}; the service starts at {start}",
                        a.min_capacity, a.max_capacity
                    ),
                )
                .help(format!("set `desiredCount: {start}`")),
            );
        }
    }
    for (j, p) in a.target_tracking.iter().enumerate() {
        if p.target_value <= 0.0 {
            out.push(Finding::error(
                CODE,
                i,
                format!("/spec/autoScaling/targetTracking/{j}/targetValue"),
                format!("targetValue must be above 0, not {}", p.target_value),
            ));
        }
        if p.predefined_metric == PredefinedMetric::RequestCountPerTarget
            && spec.load_balancers.is_empty()
        {
            out.push(
                Finding::error(
                    CODE,
                    i,
                    format!("/spec/autoScaling/targetTracking/{j}/predefinedMetric"),
                    "RequestCountPerTarget counts the requests of the service's listeners, and it has none".into(),
                )
                .help("add a `loadBalancers` entry or track CPUUtilization or MemoryUtilization"),
            );
        }
    }
}
