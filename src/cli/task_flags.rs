//! The flags of `run-task` that take ECS values: placement constraints
//! and strategies, capacity provider strategy items and container
//! overrides, each parsed with an error that names the flag.

use crate::manifest::scheduled_task::{ContainerOverride, TaskOverride};
use crate::manifest::service::{PlacementStrategy, PlacementStrategyType};
use crate::manifest::{CapacityProviderStrategyItem, PlacementConstraint, PlacementConstraintType};

pub(super) fn constraint(text: &str) -> Result<PlacementConstraint, String> {
    let bad = || {
        format!(
            "--placement-constraint `{text}`: expected `distinctInstance` or `memberOf:EXPRESSION`"
        )
    };
    let (kind, expression) = match text.split_once(':') {
        Some(("memberOf", e)) if !e.trim().is_empty() => {
            crate::expression::parse(e)
                .map_err(|err| format!("--placement-constraint `{text}`: {err}"))?;
            (PlacementConstraintType::MemberOf, Some(e.to_string()))
        }
        None if text == "distinctInstance" => (PlacementConstraintType::DistinctInstance, None),
        _ => return Err(bad()),
    };
    Ok(PlacementConstraint { kind, expression })
}

pub(super) fn strategy(text: &str) -> Result<PlacementStrategy, String> {
    let (kind, field) = match text.split_once(':') {
        Some((k, f)) => (k, Some(f.to_string())),
        None => (text, None),
    };
    let kind = match kind {
        "spread" => PlacementStrategyType::Spread,
        "binpack" => PlacementStrategyType::Binpack,
        "random" => PlacementStrategyType::Random,
        _ => {
            return Err(format!(
                "--placement-strategy `{text}`: expected `spread:FIELD`, `binpack:cpu|memory` or `random`"
            ))
        }
    };
    let ok = match (kind, field.as_deref()) {
        (PlacementStrategyType::Random, None) => true,
        (PlacementStrategyType::Binpack, Some("cpu" | "memory")) => true,
        (PlacementStrategyType::Spread, Some(f)) => {
            matches!(f, "instanceId" | "host")
                || f.strip_prefix("attribute:").is_some_and(|a| !a.is_empty())
        }
        _ => false,
    };
    if !ok {
        return Err(format!(
            "--placement-strategy `{text}`: spread takes instanceId, host or attribute:NAME; binpack cpu or memory; random nothing"
        ));
    }
    Ok(PlacementStrategy { kind, field })
}

pub(super) fn provider(text: &str) -> Result<CapacityProviderStrategyItem, String> {
    let mut parts = text.split(':');
    let name = parts.next().unwrap_or_default();
    let number = |p: Option<&str>, what: &str, default: u32| -> Result<u32, String> {
        match p {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                format!("--capacity-provider-strategy `{text}`: {what} `{v}` is not a number")
            }),
        }
    };
    let weight = number(parts.next(), "weight", 1)?;
    let base = number(parts.next(), "base", 0)?;
    if name.is_empty() || parts.next().is_some() || weight > 1000 || base > 100_000 {
        return Err(format!(
            "--capacity-provider-strategy `{text}`: expected PROVIDER[:WEIGHT[:BASE]] (weight 0-1000, base 0-100000)"
        ));
    }
    Ok(CapacityProviderStrategyItem {
        capacity_provider: name.to_string(),
        weight,
        base,
    })
}

/// `CONTAINER.command=ARGS` or `CONTAINER.env.NAME=VALUE`.
pub(super) fn add_override(o: &mut TaskOverride, text: &str) -> Result<(), String> {
    let bad = |why: &str| format!("--override `{text}`: {why}");
    let (target, value) = text
        .split_once('=')
        .ok_or_else(|| bad("expected CONTAINER.command=ARGS or CONTAINER.env.NAME=VALUE"))?;
    let (container, field) = target
        .split_once('.')
        .ok_or_else(|| bad("expected CONTAINER.command=ARGS or CONTAINER.env.NAME=VALUE"))?;
    if container.is_empty() {
        return Err(bad("the container name is empty"));
    }
    let i = match o
        .container_overrides
        .iter()
        .position(|c| c.name == container)
    {
        Some(i) => i,
        None => {
            o.container_overrides.push(ContainerOverride {
                name: container.to_string(),
                command: None,
                environment: Vec::new(),
            });
            o.container_overrides.len() - 1
        }
    };
    let c = &mut o.container_overrides[i];
    match field.split_once('.') {
        None if field == "command" => {
            let args: Vec<String> = if value.trim_start().starts_with('[') {
                serde_json::from_str(value)
                    .map_err(|e| bad(&format!("the command is not a JSON array of strings: {e}")))?
            } else {
                value.split_whitespace().map(str::to_string).collect()
            };
            if args.is_empty() {
                return Err(bad("the command is empty"));
            }
            c.command = Some(args);
        }
        Some(("env", name)) if !name.is_empty() => {
            c.environment.retain(|e| e.name != name);
            c.environment
                .push(crate::manifest::task_definition::KeyValuePair {
                    name: name.to_string(),
                    value: value.to_string(),
                });
        }
        _ => {
            return Err(bad(
                "the field is `command` or `env.NAME` (CONTAINER.command=ARGS, CONTAINER.env.NAME=VALUE)",
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_read_commands_as_json_or_words_and_name_the_flag_when_wrong() {
        let mut o = TaskOverride::default();
        add_override(&mut o, r#"app.command=["sh","-c","exit 3"]"#).unwrap();
        add_override(&mut o, "side.command=sleep 5").unwrap();
        add_override(&mut o, "app.env.MODE=full=yes").unwrap();
        let c = &o.container_overrides;
        assert_eq!(c[0].command.as_deref().unwrap(), ["sh", "-c", "exit 3"]);
        assert_eq!(c[1].command.as_deref().unwrap(), ["sleep", "5"]);
        assert_eq!(
            (
                c[0].environment[0].name.as_str(),
                c[0].environment[0].value.as_str()
            ),
            ("MODE", "full=yes")
        );
        for bad in [
            "app.cmd=x",
            "app=x",
            ".command=x",
            "app.command=",
            "app.env.=x",
            "app.command=[1]",
        ] {
            let e = add_override(&mut o, bad).unwrap_err();
            assert!(e.starts_with(&format!("--override `{bad}`")), "{e}");
        }
    }

    #[test]
    fn strategies_constraints_and_providers_parse_as_ecs_names_them() {
        assert_eq!(
            strategy("random").unwrap().kind,
            PlacementStrategyType::Random
        );
        assert_eq!(
            strategy("spread:attribute:zone").unwrap().field.as_deref(),
            Some("attribute:zone")
        );
        assert_eq!(
            strategy("binpack:memory").unwrap().kind,
            PlacementStrategyType::Binpack
        );
        for bad in [
            "binpack",
            "binpack:disk",
            "spread",
            "spread:attribute:",
            "pack:cpu",
            "random:x",
        ] {
            assert!(
                strategy(bad).unwrap_err().contains("--placement-strategy"),
                "{bad}"
            );
        }
        assert_eq!(
            constraint("distinctInstance").unwrap().kind,
            PlacementConstraintType::DistinctInstance
        );
        assert!(constraint("memberOf:attribute:zone == z1").is_ok());
        assert!(constraint("memberOf:attribute:zone ==").is_err());
        assert!(constraint("memberOf").is_err());
        let p = provider("spot:4:1").unwrap();
        assert_eq!(
            (p.capacity_provider.as_str(), p.weight, p.base),
            ("spot", 4, 1)
        );
        assert_eq!(provider("spot").unwrap().weight, 1);
        assert!(provider("spot:x").unwrap_err().contains("weight `x`"));
        assert!(provider(":1").is_err());
    }
}
