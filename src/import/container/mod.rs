//! One ECS container definition -> ContainerDefinition.
//!
//! Fields of the model carry over under their ECS names; list items that
//! cannot be carried over are dropped with a warning, and the input index
//! of every kept item is recorded ([`Origins`]) so that the fixes made
//! after all containers are read ([`super::fixes`]) can still name the
//! input field.
//!
//! The fields are mapped by group: `environment` (environment and
//! secrets), `network` (port mappings, extra hosts), `startup` (health
//! check, dependsOn), `volumes` (mount points, volumesFrom), `linux`
//! (ulimits, system controls, Linux parameters), `logging` and
//! `unsupported` (fields that are dropped). This file maps the rest and
//! puts the container definition together.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::fields::{boolean, count, show, string, string_map, strings, text, Fields};
use super::render::Defaults;
use super::report::{index, key, Ctx};
use super::secrets::is_placeholder;
use super::task_definition::{
    clamp, name_ok, Shared, CONTAINER_CPU_MAX, MEMORY, START_TIMEOUT, STOP_TIMEOUT_MAX,
};
use super::units;
use crate::manifest::task_definition::ContainerDefinition;

mod environment;
mod linux;
mod logging;
mod network;
mod startup;
mod unsupported;
mod volumes;

use environment::{environment, secrets};
use linux::{linux_parameters, system_controls, ulimits};
use logging::log_configuration;
use network::{extra_hosts, ports};
use startup::{depends_on, health_check};
use unsupported::container_aws_fields;
use volumes::{mount_points, volumes_from};

pub(super) fn container(
    mut f: Fields,
    j: usize,
    ctx: &mut Ctx,
    shared: &mut Shared,
    d: &mut Defaults,
) -> Option<(ContainerDefinition, Origins)> {
    let errors_before = ctx.error_count();
    let base = format!("/containerDefinitions/{j}");

    let name = match f.take("name") {
        Some(v) => string(ctx, &f.at("name"), v),
        None => {
            ctx.error(
                &f.at("name"),
                "missing `name`: every container needs one",
                None,
            );
            None
        }
    };
    if let Some(n) = &name {
        if !name_ok(n) {
            ctx.error(
                &f.at("name"),
                format!("container name `{n}` is not valid"),
                Some("a container name is 1 to 255 letters, digits, `-` or `_`".into()),
            );
        }
    }
    let image = image(&mut f, ctx, shared, name.as_deref().unwrap_or_default());

    if let Some(v) = f.take("repositoryCredentials") {
        let arn = v.get("credentialsParameter").map(show).unwrap_or_default();
        ctx.warn(
            &f.at("repositoryCredentials"),
            format!("dropped repositoryCredentials (`{arn}`): ECS read the registry login from Secrets Manager"),
            "log the nodes' Docker in to the image's registry (`docker login REGISTRY`) so they can pull it",
        );
    }

    let essential = match f.take("essential") {
        Some(v) => boolean(ctx, &f.at("essential"), v).unwrap_or(true),
        None => {
            d.add(format!("{base}/essential"), json!(true));
            true
        }
    };
    let cpu = match f.take("cpu") {
        Some(v) => amount(
            ctx,
            &f.at("cpu"),
            &v,
            units::cpu_units,
            (0, CONTAINER_CPU_MAX),
            "CPU units",
        )
        .unwrap_or(0),
        None => {
            d.add(format!("{base}/cpu"), json!(0));
            0
        }
    };
    let mebibytes =
        |ctx: &mut Ctx, p: &str, v: Value| amount(ctx, p, &v, units::memory_mib, MEMORY, "MiB");
    let memory = f.read(ctx, "memory", mebibytes);
    let memory_reservation = f.read(ctx, "memoryReservation", mebibytes);

    let command = f.read(ctx, "command", strings).filter(|c| !c.is_empty());
    let entry_point = f.read(ctx, "entryPoint", strings).filter(|c| !c.is_empty());
    let working_directory = f.read(ctx, "workingDirectory", string);
    let user = f.read(ctx, "user", text);

    let mut environment = f.list(ctx, "environment", environment);
    if let Some(v) = f.take("environmentFiles") {
        let files: Vec<String> = v
            .as_array()
            .map(|a| a.iter().filter_map(|e| e.get("value")).map(show).collect())
            .unwrap_or_default();
        ctx.warn(
            &f.at("environmentFiles"),
            format!(
                "dropped environmentFiles ({}): ECS loaded them from S3",
                files.join(", ")
            ),
            "copy the variables into `environment` (or into `secrets` for sensitive ones)",
        );
    }
    let secrets = f.list(ctx, "secrets", |ctx, p, v| {
        secrets(ctx, p, v, shared.secrets)
    });
    // A variable set both ways: the secret wins (the validator rejects the
    // pair, and the secret is the one somebody meant to protect).
    let secret_names: HashSet<&str> = secrets.iter().map(|(s, _)| s.name.as_str()).collect();
    let env_path = f.at("environment");
    environment.retain(|(kv, i)| {
        if secret_names.contains(kv.name.as_str()) {
            ctx.warn(
                &index(&env_path, *i),
                format!(
                    "dropped environment variable `{}`: a secret of the same name sets it",
                    kv.name
                ),
                "remove one of the two from the input if this is not what you meant",
            );
            false
        } else {
            true
        }
    });

    let mut origins = Origins::default();
    let port_mappings = f.list(ctx, "portMappings", |ctx, p, v| {
        ports(ctx, p, v, &base, d, &mut origins.port_mappings)
    });
    let health_check = f.read(ctx, "healthCheck", |ctx, p, v| {
        health_check(ctx, p, v, &format!("{base}/healthCheck"), d)
    });
    let depends_on = f.list(ctx, "dependsOn", |ctx, p, v| {
        depends_on(ctx, p, v, &mut origins.depends_on)
    });
    let stop_timeout = match f.take("stopTimeout") {
        Some(v) => {
            let p = f.at("stopTimeout");
            count(ctx, &p, v)
                .map(|n| clamp(ctx, &p, n, (0, STOP_TIMEOUT_MAX), "seconds"))
                .unwrap_or(30)
        }
        None => {
            d.add(format!("{base}/stopTimeout"), json!(30));
            30
        }
    };
    let start_timeout = f.take("startTimeout").and_then(|v| {
        let p = f.at("startTimeout");
        count(ctx, &p, v).map(|n| clamp(ctx, &p, n, START_TIMEOUT, "seconds"))
    });
    let mount_points = f.list(ctx, "mountPoints", |ctx, p, v| {
        mount_points(ctx, p, v, &base, d, &mut origins.mount_points)
    });
    let volumes_from = f.list(ctx, "volumesFrom", |ctx, p, v| {
        volumes_from(ctx, p, v, &base, d, &mut origins.volumes_from)
    });
    let mut docker_labels = f.read(ctx, "dockerLabels", string_map).unwrap_or_default();
    let reserved: Vec<String> = docker_labels
        .keys()
        .filter(|k| k.starts_with("reconcile.io/"))
        .cloned()
        .collect();
    for k in reserved {
        docker_labels.remove(&k);
        ctx.warn(
            &key(&f.at("dockerLabels"), &k),
            format!("dropped Docker label `{k}`: the `reconcile.io/` prefix is reserved for reconcile's own labels"),
            "rename the label",
        );
    }
    let ulimits = f.list(ctx, "ulimits", ulimits);
    let readonly_root_filesystem = flag(&mut f, ctx, "readonlyRootFilesystem", &base, d);
    let log_configuration = f.read(ctx, "logConfiguration", log_configuration);
    let hostname = f.read(ctx, "hostname", string);
    let extra_hosts = f.list(ctx, "extraHosts", extra_hosts);
    let dns_servers = f.read(ctx, "dnsServers", strings).unwrap_or_default();
    let dns_search_domains = f.read(ctx, "dnsSearchDomains", strings).unwrap_or_default();
    let privileged = flag(&mut f, ctx, "privileged", &base, d);
    let interactive = flag(&mut f, ctx, "interactive", &base, d);
    let pseudo_terminal = flag(&mut f, ctx, "pseudoTerminal", &base, d);
    let system_controls = f.list(ctx, "systemControls", system_controls);
    let linux_parameters = f.read(ctx, "linuxParameters", |ctx, p, v| {
        linux_parameters(ctx, p, v, &format!("{base}/linuxParameters"), d)
    });

    container_aws_fields(&mut f, ctx);
    f.finish(ctx, "a container definition");

    if ctx.error_count() > errors_before {
        return None;
    }
    let c = ContainerDefinition {
        name: name?,
        image: image?,
        essential,
        cpu,
        memory,
        memory_reservation,
        command,
        entry_point,
        working_directory,
        user,
        environment: environment.into_iter().map(|(kv, _)| kv).collect(),
        secrets: secrets.into_iter().map(|(s, _)| s).collect(),
        port_mappings,
        health_check,
        depends_on,
        stop_timeout,
        start_timeout,
        mount_points,
        volumes_from,
        docker_labels,
        ulimits,
        readonly_root_filesystem,
        log_configuration,
        hostname,
        extra_hosts,
        dns_servers,
        dns_search_domains,
        privileged,
        interactive,
        pseudo_terminal,
        system_controls,
        linux_parameters,
    };
    Some((c, origins))
}

fn image(f: &mut Fields, ctx: &mut Ctx, shared: &mut Shared, container: &str) -> Option<String> {
    let p = f.at("image");
    let given = f.read(ctx, "image", string);
    let over = shared
        .images
        .items
        .iter_mut()
        .find(|(n, _, _)| n == container);
    match (given, over) {
        (given, Some((_, image, used))) => {
            *used = true;
            if let Some(g) = given {
                ctx.note(&p, format!("image `{g}` replaced by `{image}` (--image)"));
            }
            Some(image.clone())
        }
        (Some(g), None) => {
            if is_placeholder(&g) {
                ctx.warn(
                    &p,
                    format!("image `{g}` looks like a template placeholder"),
                    format!("replace it in the manifest, or import again with `--image {container}=IMAGE`"),
                );
            } else if g.contains(".dkr.ecr.") && g.contains(".amazonaws.com") {
                ctx.warn(
                    &p,
                    format!("image `{g}` is in Amazon ECR, which ECS pulled with the task's execution role"),
                    "log the nodes' Docker in to the registry (`aws ecr get-login-password | docker login --username AWS --password-stdin REGISTRY`) or push the image elsewhere",
                );
            }
            Some(g)
        }
        (None, None) => {
            ctx.error(
                &p,
                "missing `image`: every container needs one",
                Some(format!(
                    "add the image to the input, or pass `--image {}=IMAGE` (as the amazon-ecs-render-task-definition action would)",
                    if container.is_empty() { "CONTAINER" } else { container }
                )),
            );
            None
        }
    }
}

/// A boolean container flag that defaults to false.
fn flag(f: &mut Fields, ctx: &mut Ctx, field: &str, base: &str, d: &mut Defaults) -> bool {
    match f.take(field) {
        Some(v) => boolean(ctx, &f.at(field), v).unwrap_or(false),
        None => {
            d.add(format!("{base}/{field}"), json!(false));
            false
        }
    }
}

/// Container-level cpu or memory: a number, or a string like task-level
/// ones.
fn amount(
    ctx: &mut Ctx,
    path: &str,
    v: &Value,
    parse: fn(&Value) -> Result<u64, String>,
    range: (u64, u64),
    unit: &str,
) -> Option<u32> {
    match parse(v) {
        Ok(n) => Some(clamp(ctx, path, n, range, unit)),
        Err(why) => {
            ctx.error(path, format!("`{}` is not an amount: {why}", show(v)), None);
            None
        }
    }
}

/// Input index of each list item a container kept, so that fixes made
/// after mapping can still name the input field.
#[derive(Debug, Default)]
pub(super) struct Origins {
    pub(super) port_mappings: Vec<usize>,
    pub(super) depends_on: Vec<usize>,
    pub(super) mount_points: Vec<usize>,
    pub(super) volumes_from: Vec<usize>,
}
