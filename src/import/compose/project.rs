//! A compose project as ECS JSON the ECS import turns into manifests: one
//! task definition with a container per compose service, and one service
//! running it, as `ecs-cli compose` translated a compose file.
//!
//! One task keeps what compose gives the services of a project: they
//! reach each other by service name on a network of their own (the task's
//! network), ports only published on the host where compose publishes
//! them, and `depends_on` ordering their start (`dependsOn` exists only
//! between containers of one task). What one task cannot keep is said:
//! services with different `deploy.replicas` all run the largest count.

use serde_json::{json, Map, Value};

use super::container;

/// ECS JSON inputs and what was worth a warning.
#[derive(Debug, Clone)]
pub struct Assembly {
    /// The task definition (`family` = the project name), then the
    /// service, as ECS import inputs named after `file`.
    pub inputs: Vec<crate::import::Input>,
    pub warnings: Vec<String>,
}

/// Assemble project `name` (read by [`super::load`]) for `cluster`; bind
/// mounts are made absolute against `dir`; inputs are named after `file`
/// (the project's first compose file) in messages.
pub fn assemble(
    doc: &Value,
    name: &str,
    cluster: &str,
    dir: &str,
    file: &str,
) -> Result<Assembly, Vec<String>> {
    let empty = Map::new();
    let services = doc
        .get("services")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    if services.is_empty() {
        return Err(vec![format!(
            "{file}: no services (none, or none in the active profiles)"
        )]);
    }
    let named = doc
        .get("volumes")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut containers = Vec::new();
    let mut volumes: Vec<Value> = Vec::new();
    for (service, s) in services {
        let Some(s) = s.as_object() else {
            errors.push(format!("services.{service}: a service is a mapping"));
            continue;
        };
        match container::container(service, s, named, dir) {
            Ok(c) => {
                containers.push(c.definition);
                for v in c.volumes {
                    match volumes.iter().find(|x| x["name"] == v["name"]) {
                        Some(same) if *same == v => {}
                        Some(_) => errors.push(format!(
                            "volumes.{}: used with two different settings",
                            v["name"].as_str().unwrap_or_default()
                        )),
                        None => volumes.push(v),
                    }
                }
                warnings.extend(c.warnings);
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    for key in doc.as_object().into_iter().flatten().map(|(k, _)| k) {
        match key.as_str() {
            "services" | "volumes" | "version" | "name" => {}
            "secrets" | "configs" => warnings.push(format!(
                "{key}: where the values come from is not imported: set each with `reconcile secret set NAME`"
            )),
            "networks" => warnings.push(
                "networks: not mapped: the services share the task's network, where each reaches the others by service name"
                    .into(),
            ),
            other => warnings.push(format!("{other}: not mapped")),
        }
    }
    let (count, deployment) = deploy(services, &mut warnings);
    let task = json!({
        "family": name,
        "networkMode": "bridge",
        "containerDefinitions": containers,
        "volumes": volumes,
    });
    let mut service = json!({
        "serviceName": name,
        "cluster": cluster,
        "taskDefinition": name,
        "desiredCount": count,
    });
    if let Some(d) = deployment {
        service["deploymentConfiguration"] = d;
    }
    let input = |what: &str, v: &Value| crate::import::Input {
        name: format!("{file} ({what})"),
        bytes: serde_json::to_vec(v).expect("JSON values serialise"),
    };
    Ok(Assembly {
        inputs: vec![
            input("task definition", &task),
            input("service", &json!({ "services": [service] })),
        ],
        warnings,
    })
}

/// The task count (the largest `deploy.replicas`, 1 without) and the
/// deployment settings `deploy.update_config.order` gives.
fn deploy(services: &Map<String, Value>, warnings: &mut Vec<String>) -> (u64, Option<Value>) {
    let replicas: Vec<(String, u64)> = services
        .iter()
        .map(|(n, s)| {
            let r = s["deploy"]["replicas"]
                .as_u64()
                .or_else(|| s["scale"].as_u64())
                .unwrap_or(1);
            (n.clone(), r)
        })
        .collect();
    let count = replicas.iter().map(|(_, r)| *r).max().unwrap_or(1);
    for (n, r) in &replicas {
        if *r != count {
            warnings.push(format!(
                "services.{n}.deploy.replicas: {r}: the project runs as one task, so every service runs {count} (the largest)"
            ));
        }
    }
    let mut deployment = None;
    for (n, s) in services {
        let Some(d) = s.get("deploy").and_then(Value::as_object) else {
            continue;
        };
        for (k, v) in d {
            match k.as_str() {
                "replicas" | "resources" => {}
                "update_config" => match v["order"].as_str() {
                    Some("start-first") => {
                        deployment = Some(json!({"minimumHealthyPercent": 100, "maximumPercent": 200}))
                    }
                    Some("stop-first") => {
                        deployment = Some(json!({"minimumHealthyPercent": 0, "maximumPercent": 100}))
                    }
                    _ => warnings.push(format!(
                        "services.{n}.deploy.update_config: only `order` is mapped (start-first or stop-first)"
                    )),
                },
                other => warnings.push(format!("services.{n}.deploy.{other}: not mapped")),
            }
        }
    }
    (count, deployment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webapp() -> Value {
        json!({
            "services": {
                "web": {
                    "image": "shop/web:3", "command": ["serve"],
                    "ports": [{"target": 8000, "published": "8080", "protocol": "tcp"}],
                    "depends_on": {"db": {"condition": "service_healthy", "required": true}},
                    "deploy": {"replicas": 2, "update_config": {"order": "start-first"}}
                },
                "db": {
                    "image": "postgres:16",
                    "volumes": [{"type": "volume", "source": "dbdata", "target": "/var/lib/postgresql/data"}],
                    "healthcheck": {"test": ["CMD-SHELL", "pg_isready"], "interval": "5s"}
                }
            },
            "volumes": {"dbdata": {}},
            "networks": {"default": {}}
        })
    }

    #[test]
    fn a_project_is_one_task_and_one_service_that_validate() {
        let a = assemble(&webapp(), "shop", "prod", "/srv/shop", "compose.yaml").unwrap();
        let out = crate::import::ecs(&a.inputs, &crate::import::Options::default())
            .unwrap_or_else(|e| panic!("{e:?}"));
        let kinds: Vec<String> = out
            .files
            .iter()
            .map(|f| format!("{:?}/{}", f.kind, f.resource))
            .collect();
        assert_eq!(
            kinds,
            ["Cluster/prod", "TaskDefinition/shop", "Service/shop"]
        );
        let text = out.stream();
        for needle in [
            "containerName: db",
            "condition: HEALTHY",
            "hostPort: 8080",
            "desiredCount: 2",
            "maximumPercent: 200",
            "sourceVolume: dbdata",
        ] {
            assert!(text.contains(needle), "{needle}:\n{text}");
        }
        let said = a.warnings.join("\n");
        assert!(said.contains("services.db.deploy.replicas: 1: the project runs as one task, so every service runs 2"), "{said}");
        assert!(said.contains("networks: not mapped"), "{said}");
    }

    #[test]
    fn nothing_to_run_or_unmappable_services_are_errors() {
        let e = assemble(&json!({"services": {}}), "p", "c", "/", "c.yaml").unwrap_err();
        assert!(e[0].contains("no services"), "{e:?}");
        let e = assemble(
            &json!({"services": {"a": {"build": "."}, "b": {}}}),
            "p",
            "c",
            "/",
            "c.yaml",
        )
        .unwrap_err();
        assert_eq!(e.len(), 2, "every service's error: {e:?}");
    }
}
