//! Rules on a CapacityProvider: scaling step sizes, termination
//! protection and the node template it launches. Managed scaling without a
//! template is valid: the reservation is then published for an outside
//! autoscaler and no node is launched. Separate because they concern one
//! kind.

use super::Finding;
use crate::manifest::Toggle;

pub(super) fn capacity_provider(
    i: usize,
    spec: &crate::manifest::CapacityProviderSpec,
    out: &mut Vec<Finding>,
) {
    let ms = &spec.managed_scaling;
    if ms.minimum_scaling_step_size > ms.maximum_scaling_step_size {
        out.push(Finding::error(
            "capacity-provider",
            i,
            "/spec/managedScaling/minimumScalingStepSize",
            format!(
                "minimumScalingStepSize ({}) is above maximumScalingStepSize ({})",
                ms.minimum_scaling_step_size, ms.maximum_scaling_step_size
            ),
        ));
    }
    if spec.managed_termination_protection == Toggle::Enabled && ms.status != Toggle::Enabled {
        out.push(
            Finding::error(
                "capacity-provider",
                i,
                "/spec/managedTerminationProtection",
                "managedTerminationProtection needs managedScaling to be ENABLED".into(),
            )
            .help("set `managedScaling.status: ENABLED` or turn termination protection off"),
        );
    }
    if let Some(t) = &spec.node_template {
        if t.minimum_size > t.maximum_size {
            out.push(Finding::error(
                "capacity-provider",
                i,
                "/spec/nodeTemplate/minimumSize",
                format!(
                    "minimumSize ({}) is above maximumSize ({})",
                    t.minimum_size, t.maximum_size
                ),
            ));
        }
        for (k, v) in &spec.node_selector {
            if t.attributes.get(k) != Some(v) {
                out.push(Finding::warning(
                    "capacity-provider",
                    i,
                    "/spec/nodeTemplate/attributes",
                    format!("nodes launched from the template lack `{k}={v}`, so they would not join this provider"),
                ).at_key());
            }
        }
    }
}
