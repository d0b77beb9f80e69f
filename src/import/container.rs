//! One ECS container definition -> ContainerDefinition.
//!
//! Fields of the model carry over under their ECS names; list items that
//! cannot be carried over are dropped with a warning, and the input index
//! of every kept item is recorded ([`Origins`]) so that the fixes made
//! after all containers are read ([`super::fixes`]) can still name the
//! input field.

use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Value};

use super::fields::{
    array, boolean, count, integer, show, string, string_map, strings, text, Fields,
};
use super::render::Defaults;
use super::report::{index, key, Ctx};
use super::secrets::{is_placeholder, SecretNames};
use super::task_definition::{
    clamp, name_ok, Shared, CONTAINER_CPU_MAX, MAX_PORT_MAPPINGS, MEMORY, START_TIMEOUT,
    STOP_TIMEOUT_MAX,
};
use super::units;
use crate::manifest::task_definition::{
    ContainerDefinition, ContainerDependency, DependencyCondition, HealthCheck, HostEntry,
    KernelCapabilities, KeyValuePair, LinuxParameters, LogConfiguration, LogDriver, MountPoint,
    PortMapping, Protocol, Secret, SystemControl, Ulimit, UlimitName, VolumeFrom,
};

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
    let memory = f
        .take("memory")
        .and_then(|v| amount(ctx, &f.at("memory"), &v, units::memory_mib, MEMORY, "MiB"));
    let memory_reservation = f.take("memoryReservation").and_then(|v| {
        amount(
            ctx,
            &f.at("memoryReservation"),
            &v,
            units::memory_mib,
            MEMORY,
            "MiB",
        )
    });

    let command = f
        .take("command")
        .and_then(|v| strings(ctx, &f.at("command"), v))
        .filter(|c| !c.is_empty());
    let entry_point = f
        .take("entryPoint")
        .and_then(|v| strings(ctx, &f.at("entryPoint"), v))
        .filter(|c| !c.is_empty());
    let working_directory = f
        .take("workingDirectory")
        .and_then(|v| string(ctx, &f.at("workingDirectory"), v));
    let user = f.take("user").and_then(|v| text(ctx, &f.at("user"), v));

    let mut environment = match f.take("environment") {
        Some(v) => environment(ctx, &f.at("environment"), v),
        None => Vec::new(),
    };
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
    let secrets = match f.take("secrets") {
        Some(v) => secrets(ctx, &f.at("secrets"), v, shared.secrets),
        None => Vec::new(),
    };
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
    let port_mappings = match f.take("portMappings") {
        Some(v) => ports(
            ctx,
            &f.at("portMappings"),
            v,
            &base,
            d,
            &mut origins.port_mappings,
        ),
        None => Vec::new(),
    };
    let health_check = f.take("healthCheck").and_then(|v| {
        health_check(
            ctx,
            &f.at("healthCheck"),
            v,
            &format!("{base}/healthCheck"),
            d,
        )
    });
    let depends_on = match f.take("dependsOn") {
        Some(v) => depends_on(ctx, &f.at("dependsOn"), v, &mut origins.depends_on),
        None => Vec::new(),
    };
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
    let mount_points = match f.take("mountPoints") {
        Some(v) => mount_points(
            ctx,
            &f.at("mountPoints"),
            v,
            &base,
            d,
            &mut origins.mount_points,
        ),
        None => Vec::new(),
    };
    let volumes_from = match f.take("volumesFrom") {
        Some(v) => volumes_from(
            ctx,
            &f.at("volumesFrom"),
            v,
            &base,
            d,
            &mut origins.volumes_from,
        ),
        None => Vec::new(),
    };
    let mut docker_labels = f
        .take("dockerLabels")
        .and_then(|v| string_map(ctx, &f.at("dockerLabels"), v))
        .unwrap_or_default();
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
    let ulimits = match f.take("ulimits") {
        Some(v) => ulimits(ctx, &f.at("ulimits"), v),
        None => Vec::new(),
    };
    let readonly_root_filesystem = flag(&mut f, ctx, "readonlyRootFilesystem", &base, d);
    let log_configuration = f
        .take("logConfiguration")
        .and_then(|v| log_configuration(ctx, &f.at("logConfiguration"), v));
    let hostname = f
        .take("hostname")
        .and_then(|v| string(ctx, &f.at("hostname"), v));
    let extra_hosts = match f.take("extraHosts") {
        Some(v) => extra_hosts(ctx, &f.at("extraHosts"), v),
        None => Vec::new(),
    };
    let dns_servers = f
        .take("dnsServers")
        .and_then(|v| strings(ctx, &f.at("dnsServers"), v))
        .unwrap_or_default();
    let dns_search_domains = f
        .take("dnsSearchDomains")
        .and_then(|v| strings(ctx, &f.at("dnsSearchDomains"), v))
        .unwrap_or_default();
    let privileged = flag(&mut f, ctx, "privileged", &base, d);
    let interactive = flag(&mut f, ctx, "interactive", &base, d);
    let pseudo_terminal = flag(&mut f, ctx, "pseudoTerminal", &base, d);
    let system_controls = match f.take("systemControls") {
        Some(v) => system_controls(ctx, &f.at("systemControls"), v),
        None => Vec::new(),
    };
    let linux_parameters = f.take("linuxParameters").and_then(|v| {
        linux_parameters(
            ctx,
            &f.at("linuxParameters"),
            v,
            &format!("{base}/linuxParameters"),
            d,
        )
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
    let given = f.take("image").and_then(|v| string(ctx, &p, v));
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

fn container_aws_fields(f: &mut Fields, ctx: &mut Ctx) {
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

/// `environment`, with each entry's input index.
fn environment(ctx: &mut Ctx, path: &str, v: Value) -> Vec<(KeyValuePair, usize)> {
    let mut out: Vec<(KeyValuePair, usize)> = Vec::new();
    let Some(items) = array(ctx, path, v) else {
        return out;
    };
    for (i, item) in items.into_iter().enumerate() {
        let ip = index(path, i);
        let Some(mut e) = Fields::of(ctx, ip.clone(), item) else {
            continue;
        };
        let name = e.take("name").and_then(|v| text(ctx, &key(&ip, "name"), v));
        let value = match e.take("value") {
            Some(v) => text(ctx, &key(&ip, "value"), v).unwrap_or_default(),
            None => String::new(),
        };
        e.finish(ctx, "an environment variable");
        let Some(name) = name else {
            ctx.warn(
                &ip,
                "dropped an environment variable without `name`",
                "give it a name in the input if it matters",
            );
            continue;
        };
        // Docker keeps the last value of a variable set twice.
        if let Some(pos) = out.iter().position(|(kv, _)| kv.name == name) {
            let (_, first) = out.remove(pos);
            ctx.warn(
                &index(path, first),
                format!("dropped the first value of `{name}`, which is set again at {ip}; Docker used the last one"),
                "remove the duplicate from the input",
            );
        }
        out.push((KeyValuePair { name, value }, i));
    }
    out
}

fn secrets(ctx: &mut Ctx, path: &str, v: Value, names: &mut SecretNames) -> Vec<(Secret, usize)> {
    let mut out: Vec<(Secret, usize)> = Vec::new();
    let Some(items) = array(ctx, path, v) else {
        return out;
    };
    for (i, item) in items.into_iter().enumerate() {
        let ip = index(path, i);
        let Some(mut s) = Fields::of(ctx, ip.clone(), item) else {
            continue;
        };
        let name = s
            .take("name")
            .and_then(|v| string(ctx, &key(&ip, "name"), v));
        let value_from = s
            .take("valueFrom")
            .and_then(|v| string(ctx, &key(&ip, "valueFrom"), v));
        s.finish(ctx, "a secret");
        let (Some(name), Some(value_from)) = (name, value_from) else {
            ctx.warn(
                &ip,
                "dropped a secret without `name` or `valueFrom`",
                "complete it in the input if the container needs the variable",
            );
            continue;
        };
        let (store, file) = names.name_for(&value_from, &name);
        ctx.warn(
            &key(&ip, "valueFrom"),
            format!(
                "secret `{name}` came from {} (`{value_from}`); valueFrom is now `{file}`, a file in the secrets directory",
                store.describe()
            ),
            format!(
                "put the value in the file `{file}` of the secrets directory (RECONCILE_SECRETS_DIR, default .reconcile/secrets under the source); keep it out of git"
            ),
        );
        if let Some(pos) = out.iter().position(|(s, _)| s.name == name) {
            let (_, first) = out.remove(pos);
            ctx.warn(
                &index(path, first),
                format!("dropped the first secret `{name}`, which is set again at {ip}"),
                "remove the duplicate from the input",
            );
        }
        out.push((
            Secret {
                name,
                value_from: file,
            },
            i,
        ));
    }
    out
}

fn protocol(ctx: &mut Ctx, path: &str, v: Value) -> Option<Protocol> {
    let s = string(ctx, path, v)?;
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        _ => {
            ctx.error(
                path,
                format!("unknown protocol `{s}`; expected tcp or udp"),
                None,
            );
            None
        }
    }
}

fn port_number(ctx: &mut Ctx, path: &str, v: Value, min: u64) -> Option<u16> {
    let n = count(ctx, path, v)?;
    if n < min || n > 65535 {
        ctx.error(path, format!("port {n} is outside {min} to 65535"), None);
        return None;
    }
    Some(n as u16)
}

fn ports(
    ctx: &mut Ctx,
    path: &str,
    v: Value,
    base: &str,
    d: &mut Defaults,
    origin: &mut Vec<usize>,
) -> Vec<PortMapping> {
    let mut out = Vec::new();
    let Some(items) = array(ctx, path, v) else {
        return out;
    };
    let port_name =
        regex::Regex::new(r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$").expect("valid regex");
    for (k, item) in items.into_iter().enumerate() {
        let ip = index(path, k);
        let Some(mut pm) = Fields::of(ctx, ip.clone(), item) else {
            continue;
        };
        let container_port = pm
            .take("containerPort")
            .and_then(|v| port_number(ctx, &key(&ip, "containerPort"), v, 1));
        let host_port = pm
            .take("hostPort")
            .and_then(|v| port_number(ctx, &key(&ip, "hostPort"), v, 0));
        let protocol_given = pm.take("protocol");
        let protocol = protocol_given
            .clone()
            .and_then(|v| protocol(ctx, &key(&ip, "protocol"), v))
            .unwrap_or_default();
        let mut name = pm
            .take("name")
            .and_then(|v| string(ctx, &key(&ip, "name"), v));
        if let Some(n) = &name {
            if !port_name.is_match(n) {
                ctx.warn(
                    &key(&ip, "name"),
                    format!("dropped port mapping name `{n}`: names are lowercase letters, digits and inner `-`, at most 64"),
                    "rename it if something refers to it",
                );
                name = None;
            }
        }
        if let Some(v) = pm.take("appProtocol") {
            ctx.note(
                &key(&ip, "appProtocol"),
                format!("dropped appProtocol {}: it configures ECS Service Connect, which reconcile does not have", show(&v)),
            );
        }
        let ranges = pm.take_all(&["containerPortRange", "hostPortRange"]);
        pm.finish(ctx, "a port mapping");
        let Some(container_port) = container_port else {
            if ranges.is_empty() {
                ctx.warn(
                    &ip,
                    "dropped a port mapping without containerPort",
                    "add containerPort in the input if the port matters",
                );
            } else {
                let what: Vec<String> = ranges.iter().map(|(_, v)| show(v)).collect();
                ctx.warn_many(
                    ranges.into_iter().map(|(p, _)| p).collect(),
                    format!(
                        "dropped a port range mapping ({}): port ranges are not supported",
                        what.join(", ")
                    ),
                    "list the ports one by one as containerPort mappings",
                );
            }
            continue;
        };
        if !ranges.is_empty() {
            ctx.warn_many(
                ranges.into_iter().map(|(p, _)| p).collect(),
                "dropped the port range of a mapping that also has containerPort",
                "list further ports one by one",
            );
        }
        if out.len() >= MAX_PORT_MAPPINGS {
            ctx.warn(
                &ip,
                format!("dropped: a container has at most {MAX_PORT_MAPPINGS} port mappings"),
                "publish fewer ports",
            );
            continue;
        }
        if protocol_given.is_none() {
            d.add(
                format!("{base}/portMappings/{}/protocol", out.len()),
                json!("tcp"),
            );
        }
        origin.push(k);
        out.push(PortMapping {
            container_port,
            host_port,
            protocol,
            name,
        });
    }
    out
}

fn health_check(
    ctx: &mut Ctx,
    path: &str,
    v: Value,
    ptr: &str,
    d: &mut Defaults,
) -> Option<HealthCheck> {
    let errors_before = ctx.error_count();
    let mut h = Fields::of(ctx, path.to_string(), v)?;
    let cp = h.at("command");
    let command = h.take("command").and_then(|v| strings(ctx, &cp, v));
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

fn depends_on(
    ctx: &mut Ctx,
    path: &str,
    v: Value,
    origin: &mut Vec<usize>,
) -> Vec<ContainerDependency> {
    let mut out = Vec::new();
    let Some(items) = array(ctx, path, v) else {
        return out;
    };
    for (k, item) in items.into_iter().enumerate() {
        let ip = index(path, k);
        let Some(mut e) = Fields::of(ctx, ip.clone(), item) else {
            continue;
        };
        let name = e
            .take("containerName")
            .and_then(|v| string(ctx, &key(&ip, "containerName"), v));
        let cond_path = key(&ip, "condition");
        let condition = e.take("condition").and_then(|v| string(ctx, &cond_path, v));
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
                continue;
            }
            None => {
                ctx.error(
                    &cond_path,
                    "missing `condition`",
                    Some("ECS requires one: START, COMPLETE, SUCCESS or HEALTHY".into()),
                );
                continue;
            }
        };
        let Some(container_name) = name else {
            ctx.warn(
                &ip,
                "dropped a dependency without containerName",
                "complete it in the input if it matters",
            );
            continue;
        };
        origin.push(k);
        out.push(ContainerDependency {
            container_name,
            condition,
        });
    }
    out
}

fn mount_points(
    ctx: &mut Ctx,
    path: &str,
    v: Value,
    base: &str,
    d: &mut Defaults,
    origin: &mut Vec<usize>,
) -> Vec<MountPoint> {
    let mut out = Vec::new();
    let Some(items) = array(ctx, path, v) else {
        return out;
    };
    for (k, item) in items.into_iter().enumerate() {
        let ip = index(path, k);
        let Some(mut m) = Fields::of(ctx, ip.clone(), item) else {
            continue;
        };
        let source_volume = m
            .take("sourceVolume")
            .and_then(|v| string(ctx, &key(&ip, "sourceVolume"), v));
        let container_path = m
            .take("containerPath")
            .and_then(|v| string(ctx, &key(&ip, "containerPath"), v));
        let read_only = m
            .take("readOnly")
            .and_then(|v| boolean(ctx, &key(&ip, "readOnly"), v));
        m.finish(ctx, "a mount point");
        match (source_volume, container_path) {
            (Some(source_volume), Some(container_path)) if container_path.starts_with('/') => {
                if read_only.is_none() {
                    d.add(format!("{base}/mountPoints/{}/readOnly", out.len()), json!(false));
                }
                origin.push(k);
                out.push(MountPoint {
                    source_volume,
                    container_path,
                    read_only: read_only.unwrap_or(false),
                });
            }
            (Some(_), Some(p)) => ctx.warn(
                &key(&ip, "containerPath"),
                format!("dropped the mount at `{p}`: a container path must be absolute (Windows paths are not supported)"),
                "mount the volume at an absolute Linux path",
            ),
            _ => ctx.warn(&ip, "dropped a mount point without sourceVolume or containerPath", "complete it in the input if it matters"),
        }
    }
    out
}

fn volumes_from(
    ctx: &mut Ctx,
    path: &str,
    v: Value,
    base: &str,
    d: &mut Defaults,
    origin: &mut Vec<usize>,
) -> Vec<VolumeFrom> {
    let mut out = Vec::new();
    let Some(items) = array(ctx, path, v) else {
        return out;
    };
    for (k, item) in items.into_iter().enumerate() {
        let ip = index(path, k);
        let Some(mut m) = Fields::of(ctx, ip.clone(), item) else {
            continue;
        };
        let source_container = m
            .take("sourceContainer")
            .and_then(|v| string(ctx, &key(&ip, "sourceContainer"), v));
        let read_only = m
            .take("readOnly")
            .and_then(|v| boolean(ctx, &key(&ip, "readOnly"), v));
        m.finish(ctx, "a volumesFrom entry");
        let Some(source_container) = source_container else {
            ctx.warn(
                &ip,
                "dropped a volumesFrom entry without sourceContainer",
                "complete it in the input if it matters",
            );
            continue;
        };
        if read_only.is_none() {
            d.add(
                format!("{base}/volumesFrom/{}/readOnly", out.len()),
                json!(false),
            );
        }
        origin.push(k);
        out.push(VolumeFrom {
            source_container,
            read_only: read_only.unwrap_or(false),
        });
    }
    out
}

fn ulimits(ctx: &mut Ctx, path: &str, v: Value) -> Vec<Ulimit> {
    let mut out = Vec::new();
    let Some(items) = array(ctx, path, v) else {
        return out;
    };
    for (k, item) in items.into_iter().enumerate() {
        let ip = index(path, k);
        let Some(mut u) = Fields::of(ctx, ip.clone(), item) else {
            continue;
        };
        let name = u
            .take("name")
            .and_then(|v| string(ctx, &key(&ip, "name"), v));
        let soft = u
            .take("softLimit")
            .and_then(|v| integer(ctx, &key(&ip, "softLimit"), v));
        let hard = u
            .take("hardLimit")
            .and_then(|v| integer(ctx, &key(&ip, "hardLimit"), v));
        u.finish(ctx, "a ulimit");
        let parsed = name.as_deref().and_then(|n| {
            serde_json::from_value::<UlimitName>(Value::from(n.to_ascii_lowercase())).ok()
        });
        let (Some(ulimit), Some(soft), Some(hard)) = (parsed, soft, hard) else {
            ctx.warn(
                &ip,
                format!(
                    "dropped ulimit {}: it needs a known name, softLimit and hardLimit",
                    name.as_deref().unwrap_or("without a name")
                ),
                "fix it in the manifest if the limit matters",
            );
            continue;
        };
        if soft < 0 || hard < 0 {
            ctx.warn(
                &ip,
                format!(
                    "dropped ulimit {}: a negative limit (unlimited) cannot be written here",
                    name.unwrap_or_default()
                ),
                "give the limit an explicit large value if you need it raised",
            );
            continue;
        }
        let soft = if soft > hard {
            ctx.warn(
                &key(&ip, "softLimit"),
                format!("softLimit {soft} is above hardLimit {hard}; lowered to {hard}"),
                "check the limits",
            );
            hard
        } else {
            soft
        };
        out.push(Ulimit {
            name: ulimit,
            soft_limit: soft,
            hard_limit: hard,
        });
    }
    out
}

fn log_configuration(ctx: &mut Ctx, path: &str, v: Value) -> Option<LogConfiguration> {
    let mut l = Fields::of(ctx, path.to_string(), v)?;
    let driver = l
        .take("logDriver")
        .and_then(|v| string(ctx, &l.at("logDriver"), v));
    let options = l
        .take("options")
        .and_then(|v| string_map(ctx, &l.at("options"), v))
        .unwrap_or_default();
    if let Some(v) = l.take("secretOptions") {
        let names: Vec<String> = v
            .as_array()
            .map(|a| a.iter().filter_map(|o| o.get("name")).map(show).collect())
            .unwrap_or_default();
        ctx.warn(
            &l.at("secretOptions"),
            format!(
                "dropped log driver secret options ({}): they were read from AWS secret stores",
                names.join(", ")
            ),
            "configure the log driver's credentials on the nodes' Docker daemon instead",
        );
    }
    l.finish(ctx, "a log configuration");
    let Some(driver) = driver else {
        ctx.warn(
            path,
            "dropped a log configuration without logDriver",
            "Docker's default log driver is used",
        );
        return None;
    };
    match serde_json::from_value::<LogDriver>(Value::from(driver.clone())).ok() {
        Some(log_driver) => Some(LogConfiguration {
            log_driver,
            options,
        }),
        None => {
            let (what, help) = match driver.as_str() {
                "awslogs" => (
                    "log driver `awslogs` (CloudWatch Logs) became `json-file`: logs stay on the node, readable with `docker logs`".to_string(),
                    "to ship logs elsewhere, pick a driver such as fluentd, gelf, syslog or splunk and set its options",
                ),
                "awsfirelens" => (
                    "log driver `awsfirelens` (FireLens) became `json-file`: logs stay on the node, readable with `docker logs`".to_string(),
                    "run a Fluent Bit container and use the fluentd log driver to send logs to it",
                ),
                other => (
                    format!("log driver `{other}` is not available; it became `json-file`: logs stay on the node"),
                    "pick one of json-file, local, syslog, journald, gelf, fluentd, splunk or none",
                ),
            };
            let what = if options.is_empty() {
                what
            } else {
                let names: Vec<&str> = options.keys().map(String::as_str).collect();
                format!("{what}; its options ({}) were dropped", names.join(", "))
            };
            ctx.warn(path, what, help);
            Some(LogConfiguration {
                log_driver: LogDriver::JsonFile,
                options: BTreeMap::new(),
            })
        }
    }
}

fn extra_hosts(ctx: &mut Ctx, path: &str, v: Value) -> Vec<HostEntry> {
    let mut out = Vec::new();
    let Some(items) = array(ctx, path, v) else {
        return out;
    };
    for (k, item) in items.into_iter().enumerate() {
        let ip = index(path, k);
        let Some(mut e) = Fields::of(ctx, ip.clone(), item) else {
            continue;
        };
        let hostname = e
            .take("hostname")
            .and_then(|v| string(ctx, &key(&ip, "hostname"), v));
        let ip_address = e
            .take("ipAddress")
            .and_then(|v| string(ctx, &key(&ip, "ipAddress"), v));
        e.finish(ctx, "an extra host");
        match (hostname, ip_address) {
            (Some(hostname), Some(ip_address)) => out.push(HostEntry {
                hostname,
                ip_address,
            }),
            _ => ctx.warn(
                &ip,
                "dropped an extraHosts entry without hostname or ipAddress",
                "complete it if it matters",
            ),
        }
    }
    out
}

fn system_controls(ctx: &mut Ctx, path: &str, v: Value) -> Vec<SystemControl> {
    let mut out = Vec::new();
    let Some(items) = array(ctx, path, v) else {
        return out;
    };
    for (k, item) in items.into_iter().enumerate() {
        let ip = index(path, k);
        let Some(mut e) = Fields::of(ctx, ip.clone(), item) else {
            continue;
        };
        let namespace = e
            .take("namespace")
            .and_then(|v| string(ctx, &key(&ip, "namespace"), v));
        let value = e
            .take("value")
            .and_then(|v| text(ctx, &key(&ip, "value"), v))
            .unwrap_or_default();
        e.finish(ctx, "a system control");
        match namespace {
            Some(namespace) => out.push(SystemControl { namespace, value }),
            None => ctx.warn(
                &ip,
                "dropped a systemControls entry without namespace",
                "complete it if it matters",
            ),
        }
    }
    out
}

fn linux_parameters(
    ctx: &mut Ctx,
    path: &str,
    v: Value,
    ptr: &str,
    d: &mut Defaults,
) -> Option<LinuxParameters> {
    let mut l = Fields::of(ctx, path.to_string(), v)?;
    let init_process_enabled = match l.take("initProcessEnabled") {
        Some(v) => boolean(ctx, &l.at("initProcessEnabled"), v).unwrap_or(false),
        None => {
            d.add(format!("{ptr}/initProcessEnabled"), json!(false));
            false
        }
    };
    let shared_memory_size = l.take("sharedMemorySize").and_then(|v| {
        let p = l.at("sharedMemorySize");
        count(ctx, &p, v).map(|n| clamp(ctx, &p, n, (1, u64::from(u32::MAX)), "MiB"))
    });
    let capabilities = l.take("capabilities").and_then(|v| {
        let mut c = Fields::of(ctx, l.at("capabilities"), v)?;
        let add = c
            .take("add")
            .and_then(|v| strings(ctx, &c.at("add"), v))
            .unwrap_or_default();
        let drop = c
            .take("drop")
            .and_then(|v| strings(ctx, &c.at("drop"), v))
            .unwrap_or_default();
        c.finish(ctx, "linux capabilities");
        (!add.is_empty() || !drop.is_empty()).then_some(KernelCapabilities { add, drop })
    });
    for (k, what, help) in [
        ("devices", "host devices", "give the containers the devices through privileged mode or the nodes' Docker configuration"),
        ("tmpfs", "tmpfs mounts", "use a task-scoped volume (a volume with neither host nor dockerVolumeConfiguration) instead"),
        ("maxSwap", "the swap limit", "swap follows the nodes' Docker defaults"),
        ("swappiness", "swappiness", "swap follows the nodes' Docker defaults"),
    ] {
        if let Some(v) = l.take(k) {
            ctx.warn(&l.at(k), format!("dropped {what} ({}): not supported", show(&v)), help);
        }
    }
    l.finish(ctx, "linuxParameters");
    Some(LinuxParameters {
        init_process_enabled,
        shared_memory_size,
        capabilities,
    })
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
