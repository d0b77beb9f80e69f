//! `healthCheck` and `dependsOn`: when a container counts as healthy and
//! what it waits for before it starts. Separate because both decide the
//! order and readiness of a task's containers.

use serde_json::{json, Value};

use crate::import::fields::{count, each_object, string, strings, Fields};
use crate::import::render::Defaults;
use crate::import::report::{key, Ctx};
use crate::import::task_definition::clamp;
use crate::manifest::task_definition::{ContainerDependency, DependencyCondition, HealthCheck};

pub(super) fn health_check(
    ctx: &mut Ctx,
    path: &str,
    v: Value,
    ptr: &str,
    d: &mut Defaults,
) -> Option<HealthCheck> {
    let errors_before = ctx.error_count();
    let mut h = Fields::of(ctx, path.to_string(), v)?;
    let cp = h.at("command");
    let command = h.read(ctx, "command", strings);
    let mut field =
        |h: &mut Fields, ctx: &mut Ctx, name: &str, range: (u64, u64), default: u32| -> u32 {
            let unit = if name == "retries" { "" } else { "seconds" };
            match h.take(name) {
                Some(v) => {
                    let p = h.at(name);
                    count(ctx, &p, v)
                        .map(|n| clamp(ctx, &p, n, range, unit))
                        .unwrap_or(default)
                }
                None => {
                    d.add(format!("{ptr}/{name}"), json!(default));
                    default
                }
            }
        };
    let interval = field(&mut h, ctx, "interval", (5, 300), 30);
    let timeout = field(&mut h, ctx, "timeout", (2, 60), 5);
    let retries = field(&mut h, ctx, "retries", (1, 10), 3);
    let start_period = field(&mut h, ctx, "startPeriod", (0, 300), 0);
    h.finish(ctx, "a health check");
    if command.is_none() && ctx.error_count() == errors_before {
        ctx.warn(
            path,
            "dropped a health check without a command",
            "add a command to check the container's health",
        );
    }
    let command = command?;
    let command = match command.first().map(String::as_str) {
        None => {
            ctx.warn(
                &cp,
                "dropped a health check without a command",
                "add a command to check the container's health",
            );
            return None;
        }
        Some("NONE") => {
            ctx.note(path, "dropped a health check that is disabled (NONE)");
            return None;
        }
        Some("CMD") if command.len() >= 2 => command,
        Some("CMD-SHELL") if command.len() == 2 => command,
        Some("CMD-SHELL") if command.len() > 2 => {
            let line = command[1..].join(" ");
            ctx.warn(
                &cp,
                format!(
                    "CMD-SHELL takes one command line; the {} words were joined into `{line}`",
                    command.len() - 1
                ),
                "check the joined command line does what you meant",
            );
            vec!["CMD-SHELL".to_string(), line]
        }
        Some("CMD" | "CMD-SHELL") => {
            ctx.warn(
                &cp,
                format!("dropped health check {command:?}: it has no command to run"),
                "add the command to run",
            );
            return None;
        }
        Some(_) => {
            let line = command.join(" ");
            ctx.warn(
                &cp,
                format!("the health check command does not start with CMD or CMD-SHELL; it now runs `{line}` with the container's shell (CMD-SHELL)"),
                "check the command does what you meant",
            );
            vec!["CMD-SHELL".to_string(), line]
        }
    };
    Some(HealthCheck {
        command,
        interval,
        timeout,
        retries,
        start_period,
    })
}

pub(super) fn depends_on(
    ctx: &mut Ctx,
    path: &str,
    v: Value,
    origin: &mut Vec<usize>,
) -> Vec<ContainerDependency> {
    let mut out = Vec::new();
    each_object(ctx, path, v, |ctx, k, ip, mut e| {
        let name = e.read(ctx, "containerName", string);
        let cond_path = key(ip, "condition");
        let condition = e.read(ctx, "condition", string);
        e.finish(ctx, "a container dependency");
        let condition = match condition.as_deref().map(str::to_ascii_uppercase).as_deref() {
            Some("START") => DependencyCondition::Start,
            Some("COMPLETE") => DependencyCondition::Complete,
            Some("SUCCESS") => DependencyCondition::Success,
            Some("HEALTHY") => DependencyCondition::Healthy,
            Some(other) => {
                ctx.error(
                    &cond_path,
                    format!(
                        "unknown condition `{other}`; expected START, COMPLETE, SUCCESS or HEALTHY"
                    ),
                    None,
                );
                return;
            }
            None => {
                ctx.error(
                    &cond_path,
                    "missing `condition`",
                    Some("ECS requires one: START, COMPLETE, SUCCESS or HEALTHY".into()),
                );
                return;
            }
        };
        let Some(container_name) = name else {
            ctx.warn(
                ip,
                "dropped a dependency without containerName",
                "complete it in the input if it matters",
            );
            return;
        };
        origin.push(k);
        out.push(ContainerDependency {
            container_name,
            condition,
        });
    });
    out
}
