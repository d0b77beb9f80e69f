//! Container fields with no counterpart here (links, Docker security
//! options, FireLens, GPUs, gMSA, restart policies, ...): each is dropped
//! with a warning or a note naming it. Separate so that the list of what
//! an import loses is in one place.

use crate::import::fields::{show, Fields};
use crate::import::report::Ctx;

pub(super) fn container_aws_fields(f: &mut Fields, ctx: &mut Ctx) {
    if let Some(v) = f.take("links") {
        ctx.warn(
            &f.at("links"),
            format!("dropped links {}: containers of a task reach each other by container name on the task's network", show(&v)),
            "address other containers by their container name; link aliases (`name:alias`) no longer exist",
        );
    }
    if let Some(v) = f.take("disableNetworking") {
        if v.as_bool() == Some(true) {
            ctx.warn(
                &f.at("disableNetworking"),
                "dropped disableNetworking: reconcile has no per-container switch",
                "set the task's networkMode to none if no container needs a network",
            );
        } else {
            ctx.note(
                &f.at("disableNetworking"),
                format!(
                    "dropped disableNetworking {}: networking stays on",
                    show(&v)
                ),
            );
        }
    }
    for (k, what, help) in [
        (
            "dockerSecurityOptions",
            "Docker security options",
            "enforce them in the nodes' Docker daemon configuration (e.g. a default seccomp or AppArmor profile, no-new-privileges)",
        ),
        (
            "firelensConfiguration",
            "the FireLens log router configuration",
            "run Fluent Bit as a container yourself and point the other containers' fluentd log driver at it",
        ),
        (
            "resourceRequirements",
            "resource requirements (GPUs, accelerators)",
            "run the task on nodes with the hardware and give the containers access to it through the nodes' Docker configuration",
        ),
        (
            "credentialSpecs",
            "credential specs (Active Directory gMSA)",
            "nothing reconcile can do: they need Windows containers",
        ),
        (
            "restartPolicy",
            "the container restart policy",
            "a container that exits is not restarted inside the task; make it essential so that the service replaces the task",
        ),
    ] {
        if let Some(v) = f.take(k) {
            ctx.warn(&f.at(k), format!("dropped {what} ({}): not supported", show(&v)), help);
        }
    }
    if let Some(v) = f.take("versionConsistency") {
        ctx.note(
            &f.at("versionConsistency"),
            format!(
                "dropped versionConsistency {}: images are resolved when a task starts",
                show(&v)
            ),
        );
    }
}
