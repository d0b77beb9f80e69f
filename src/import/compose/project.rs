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
//!
//! [`Layout::PerService`] makes a task definition and a service of each
//! compose service instead, each scaled on its own: they find each other
//! through the fleet's DNS names (`serviceRegistries`: the nodes' addresses
//! and host ports), `depends_on` no longer orders anything, and all of
//! that is said in warnings.

use serde_json::{json, Map, Value};

use super::container;

/// How compose services become tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One task definition and one service for the whole project.
    Project,
    /// A task definition and a service per compose service.
    PerService,
}

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
    layout: Layout,
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
    // Per service: (service, task JSON, service JSON).
    let mut separate: Vec<(String, Value, Value)> = Vec::new();
    for (service, s) in services {
        let Some(s) = s.as_object() else {
            errors.push(format!("services.{service}: a service is a mapping"));
            continue;
        };
        match container::container(service, s, named, dir) {
            Ok(c) if layout == Layout::PerService => {
                let (task, svc) = on_its_own(service, s, c, cluster, &mut warnings);
                separate.push((service.clone(), task, svc));
            }
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
            "networks" if layout == Layout::Project => warnings.push(
                "networks: not mapped: the services share the task's network, where each reaches the others by service name"
                    .into(),
            ),
            "networks" => warnings.push(
                "networks: not mapped: each service runs in tasks of its own and is found by its DNS name in fleet mode"
                    .into(),
            ),
            other => warnings.push(format!("{other}: not mapped")),
        }
    }
    let input = |what: String, v: &Value| crate::import::Input {
        name: format!("{file} ({what})"),
        bytes: serde_json::to_vec(v).expect("JSON values serialise"),
    };
    if layout == Layout::PerService {
        let mut inputs = Vec::new();
        for (service, task, svc) in &separate {
            inputs.push(input(format!("services.{service}"), task));
            inputs.push(input(
                format!("services.{service}"),
                &json!({ "services": [svc] }),
            ));
        }
        return Ok(Assembly { inputs, warnings });
    }
    let (task, service) = ecs_json(name, cluster, containers, volumes, services, &mut warnings);
    Ok(Assembly {
        inputs: vec![
            input("task definition".into(), &task),
            input("service".into(), &json!({ "services": [service] })),
        ],
        warnings,
    })
}

/// Compose service `name` as a task definition and a service of its own.
/// Its first port (published or only exposed) is its DNS name's; its
/// `depends_on` orders nothing across tasks, which is said.
fn on_its_own(
    name: &str,
    s: &Map<String, Value>,
    c: container::Container,
    cluster: &str,
    warnings: &mut Vec<String>,
) -> (Value, Value) {
    // What the container mapping says of `expose` is for one task; here
    // the exposed ports are published (below).
    let expose = format!("services.{name}.expose:");
    warnings.extend(c.warnings.into_iter().filter(|w| !w.starts_with(&expose)));
    if s.contains_key("expose") {
        warnings.push(format!(
            "{expose} published on dynamic host ports, which the DNS name's SRV records give"
        ));
    }
    let mut definition = c.definition;
    if let Some(Value::Array(deps)) = definition
        .as_object_mut()
        .and_then(|d| d.remove("dependsOn"))
    {
        let names: Vec<&str> = deps
            .iter()
            .filter_map(|d| d["containerName"].as_str())
            .collect();
        warnings.push(format!(
            "services.{name}.depends_on: not kept: {} run in tasks of their own, which start in any order; `{name}` must wait for them itself (retry until they answer)",
            names.join(", ")
        ));
    }
    // Exposed ports are published on a dynamic host port, which the DNS
    // name's SRV records give.
    for p in s
        .get("expose")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let port: Option<u64> = p
            .as_u64()
            .or_else(|| p.as_str()?.split('/').next()?.parse().ok());
        let Some(port) = port else { continue };
        let mappings = definition
            .as_object_mut()
            .expect("a container definition is an object")
            .entry("portMappings")
            .or_insert_with(|| json!([]));
        let known = mappings
            .as_array()
            .is_some_and(|m| m.iter().any(|x| x["containerPort"] == port));
        if !known {
            if let Some(list) = mappings.as_array_mut() {
                list.push(json!({"containerPort": port, "protocol": "tcp"}));
            }
        }
    }
    let first_port = definition["portMappings"][0]["containerPort"].as_u64();
    let (task, mut service) = ecs_json(
        name,
        cluster,
        vec![definition],
        c.volumes,
        &Map::from_iter([(name.to_string(), Value::Object(s.clone()))]),
        warnings,
    );
    if let Some(port) = first_port {
        service["serviceRegistries"] = json!([{"containerName": name, "containerPort": port}]);
        warnings.push(format!(
            "services.{name}: other services reach it in fleet mode at the DNS name `{name}` (the nodes running it; SRV records `_{name}._tcp` give the host port of container port {port}), not at {name}:{port} as under compose; standalone mode answers no names"
        ));
    }
    (task, service)
}

/// The ECS JSON of task definition `name` (bridge mode, `containers`,
/// `volumes`) and of the service of the same name running it in
/// `cluster`, counted and deployed as `services` ask.
fn ecs_json(
    name: &str,
    cluster: &str,
    containers: Vec<Value>,
    volumes: Vec<Value>,
    services: &Map<String, Value>,
    warnings: &mut Vec<String>,
) -> (Value, Value) {
    let (count, deployment) = deploy(services, warnings);
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
    (task, service)
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

    /// The web app assembled in `layout` and run through the ECS import:
    /// the assembly, the import, and its files as `Kind/name`.
    fn imported(layout: Layout) -> (Assembly, crate::import::Import, Vec<String>) {
        let a = assemble(
            &webapp(),
            "shop",
            "prod",
            "/srv/shop",
            "compose.yaml",
            layout,
        )
        .unwrap();
        let out = crate::import::ecs(&a.inputs, &crate::import::Options::default())
            .unwrap_or_else(|e| panic!("{e:?}"));
        let kinds = out
            .files
            .iter()
            .map(|f| format!("{:?}/{}", f.kind, f.resource))
            .collect();
        (a, out, kinds)
    }

    #[test]
    fn a_project_is_one_task_and_one_service_that_validate() {
        let (a, out, kinds) = imported(Layout::Project);
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
    fn per_service_layout_gives_each_its_own_task_service_and_name() {
        let (a, out, kinds) = imported(Layout::PerService);
        assert_eq!(
            kinds,
            [
                "Cluster/prod",
                "TaskDefinition/web",
                "TaskDefinition/db",
                "Service/web",
                "Service/db"
            ]
        );
        let text = out.stream();
        assert!(!text.contains("dependsOn"), "{text}");
        assert!(text.contains("serviceRegistries"), "{text}");
        let said = a.warnings.join("\n");
        assert!(
            said.contains("services.web.depends_on: not kept: db run in tasks of their own"),
            "{said}"
        );
        assert!(
            said.contains("other services reach it in fleet mode at the DNS name `web`"),
            "{said}"
        );
        assert!(
            !said.contains("replicas"),
            "each service keeps its own count: {said}"
        );
    }

    #[test]
    fn nothing_to_run_or_unmappable_services_are_errors() {
        let e = assemble(
            &json!({"services": {}}),
            "p",
            "c",
            "/",
            "c.yaml",
            Layout::Project,
        )
        .unwrap_err();
        assert!(e[0].contains("no services"), "{e:?}");
        let e = assemble(
            &json!({"services": {"a": {"build": "."}, "b": {}}}),
            "p",
            "c",
            "/",
            "c.yaml",
            Layout::PerService,
        )
        .unwrap_err();
        assert_eq!(e.len(), 2, "every service's error: {e:?}");
    }
}
