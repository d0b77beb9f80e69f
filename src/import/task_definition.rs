//! ECS task definition JSON -> TaskDefinition manifest.
//!
//! The manifest's spec is the body of RegisterTaskDefinition restricted to
//! what runs on a Docker host, with ECS names, units and defaults. So most
//! fields carry over as they are; the work here is in the rest: AWS-only
//! fields are dropped with a warning that says what the user loses and what
//! to do instead, values outside the manifest's ranges are clamped, and
//! combinations ECS accepts (or silently tolerates) but the validator does
//! not are fixed, each with a warning. The output must always pass
//! `reconcile validate`.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Value};

use super::container::container;
use super::fields::{array, boolean, show, string, string_map, text, Fields};
use super::fixes::Fixer;
use super::render::Defaults;
use super::report::{index, key, Ctx};
use super::secrets::{is_placeholder, SecretNames};
use super::units;
use crate::manifest::task_definition::{
    DockerVolumeConfiguration, HostVolume, NetworkMode, Volume, VolumeScope,
};
use crate::manifest::{PlacementConstraint, PlacementConstraintType, TaskDefinitionSpec};

/// Soft memory reservation (MiB) given to a container that sets no memory
/// in a task that sets none. The manifest (like ECS on EC2) needs one of
/// them. A reservation rather than a hard limit, because it only steers
/// placement and never kills a container that ECS would have let run; 512
/// MiB because it is the least memory any Fargate task gets, so it does not
/// under-reserve a container that ran on Fargate's smallest size.
pub const DEFAULT_MEMORY_RESERVATION: u32 = 512;

/// Ranges of the manifest schema (see `src/manifest/task_definition.rs`).
pub(super) const TASK_CPU: (u64, u64) = (128, 196_608);
pub(super) const MEMORY: (u64, u64) = (6, 4_194_304);
pub(super) const CONTAINER_CPU_MAX: u64 = 196_608;

pub(super) const STOP_TIMEOUT_MAX: u64 = 120;
pub(super) const START_TIMEOUT: (u64, u64) = (2, 600);

const MAX_CONTAINERS: usize = 10;
const MAX_VOLUMES: usize = 20;

const MAX_PLACEMENT_CONSTRAINTS: usize = 10;
pub(super) const MAX_PORT_MAPPINGS: usize = 100;

/// A task definition read from one input.
#[derive(Debug, Clone)]
pub(crate) struct TaskImport {
    /// The input file.
    pub file: String,
    /// JSON path of the task definition object in the input (`""` or
    /// `taskDefinition`).
    pub path: String,
    pub family: String,
    /// ECS revision, when the input is describe output.
    pub revision: Option<u64>,
    pub labels: BTreeMap<String, String>,
    pub spec: TaskDefinitionSpec,
    pub defaults: Defaults,
}

/// `--image CONTAINER=IMAGE` values, with whether each was used.
#[derive(Debug, Default)]
pub(crate) struct ImageOverrides {
    pub items: Vec<(String, String, bool)>,
}

/// State shared by every task definition of a run.
pub(crate) struct Shared<'a> {
    pub secrets: &'a mut SecretNames,
    pub images: &'a mut ImageOverrides,
}

pub(super) fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Fields of describe-task-definition output that describe the registered
/// revision in AWS, not what to run.
const READ_ONLY: &[&str] = &[
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
];

/// Map one task definition object. `stem` names the task definition when
/// the input has no `family`.
pub(crate) fn map(
    mut f: Fields,
    ctx: &mut Ctx,
    shared: &mut Shared,
    stem: &str,
    mut labels: BTreeMap<String, String>,
) -> Option<TaskImport> {
    let errors_before = ctx.error_count();
    let path = f.path().to_string();
    let family = family(&mut f, ctx, stem);

    let read_only = f.take_all(READ_ONLY);
    let revision = read_only
        .iter()
        .find(|(p, _)| p.ends_with("revision"))
        .and_then(|(_, v)| v.as_u64());
    if !read_only.is_empty() {
        ctx.note_many(
            read_only.into_iter().map(|(p, _)| p).collect(),
            "dropped: these fields describe the revision registered in AWS, not what to run; reconcile numbers its own revisions",
        );
    }
    task_aws_fields(&mut f, ctx);
    if let Some(v) = f.take("tags") {
        labels.extend(tags(ctx, &f.at("tags"), v));
    }

    let (network, from_awsvpc) = network_mode(&mut f, ctx);
    let mut defaults = Defaults::default();
    if network.is_none() {
        defaults.add("/networkMode", json!("bridge"));
    }
    let network = network.unwrap_or_default();

    let mut cpu = task_amount(&mut f, ctx, "cpu", TASK_CPU, units::cpu_units, "CPU units");
    let memory = task_amount(&mut f, ctx, "memory", MEMORY, units::memory_mib, "MiB");

    let mut containers = Vec::new();
    match f.take("containerDefinitions") {
        None => ctx.error(
            &f.at("containerDefinitions"),
            "missing `containerDefinitions`: a task definition needs at least one container",
            Some("is this an ECS task definition? `aws ecs describe-task-definition` output and RegisterTaskDefinition input both have it".into()),
        ),
        Some(v) => {
            let p = f.at("containerDefinitions");
            if let Some(items) = array(ctx, &p, v) {
                if items.len() > MAX_CONTAINERS {
                    ctx.error(
                        &p,
                        format!("{} containers; a task definition holds at most {MAX_CONTAINERS}", items.len()),
                        None,
                    );
                }
                for (j, item) in items.into_iter().enumerate() {
                    let cp = index(&p, j);
                    if let Some(cf) = Fields::of(ctx, cp.clone(), item) {
                        if let Some((c, o)) = container(cf, j, ctx, shared, &mut defaults) {
                            containers.push((c, o, cp));
                        }
                    }
                }
            }
        }
    }

    let mut volumes = Vec::new();
    if let Some(v) = f.take("volumes") {
        let p = f.at("volumes");
        if let Some(items) = array(ctx, &p, v) {
            if items.len() > MAX_VOLUMES {
                ctx.error(
                    &p,
                    format!(
                        "{} volumes; a task definition holds at most {MAX_VOLUMES}",
                        items.len()
                    ),
                    None,
                );
            }
            for (k, item) in items.into_iter().enumerate() {
                if let Some(vf) = Fields::of(ctx, index(&p, k), item) {
                    if let Some(vol) = volume(vf, volumes.len(), ctx, &mut defaults) {
                        volumes.push(vol);
                    }
                }
            }
        }
    }

    let placement_constraints = match f.take("placementConstraints") {
        Some(v) => task_placement(ctx, &f.at("placementConstraints"), v),
        None => Vec::new(),
    };
    f.finish(ctx, "a task definition");

    if ctx.error_count() > errors_before {
        return None;
    }

    let mut cs = Vec::with_capacity(containers.len());
    let mut origins = Vec::with_capacity(containers.len());
    let mut paths = Vec::with_capacity(containers.len());
    for (c, o, p) in containers {
        cs.push(c);
        origins.push(o);
        paths.push(p);
    }
    let mut seen = HashMap::new();
    for (j, c) in cs.iter().enumerate() {
        if let Some(first) = seen.insert(c.name.clone(), j) {
            ctx.error(
                &key(&paths[j], "name"),
                format!(
                    "container name `{}` is also used by {}",
                    c.name, paths[first]
                ),
                Some("container names are unique in a task definition".into()),
            );
        }
    }
    let mut seen_volumes = HashSet::new();
    for (k, v) in volumes.iter().enumerate() {
        if !seen_volumes.insert(v.name.clone()) {
            ctx.error(
                &key(&index(&key(&path, "volumes"), k), "name"),
                format!("volume name `{}` is used twice", v.name),
                None,
            );
        }
    }
    if ctx.error_count() > errors_before {
        return None;
    }

    let mut fixer = Fixer {
        ctx,
        defaults: &mut defaults,
        task_path: &path,
        paths: &paths,
        origins: &mut origins,
    };
    fixer.essential(&mut cs);
    fixer.dependencies(&mut cs);
    fixer.memory(&mut cs, memory);
    fixer.cpu(&cs, &mut cpu);
    fixer.network(&mut cs, network, from_awsvpc);
    fixer.references(&mut cs, &volumes);

    Some(TaskImport {
        file: ctx.file.clone(),
        path,
        family,
        revision,
        labels,
        spec: TaskDefinitionSpec {
            cpu,
            memory,
            network_mode: network,
            container_definitions: cs,
            volumes,
            placement_constraints,
        },
        defaults,
    })
}

fn family(f: &mut Fields, ctx: &mut Ctx, stem: &str) -> String {
    let p = f.at("family");
    match f.take("family") {
        Some(v) => {
            let s = string(ctx, &p, v).unwrap_or_default();
            if !name_ok(&s) {
                ctx.error(
                    &p,
                    format!("family `{s}` is not a valid name"),
                    Some("a family is 1 to 255 letters, digits, `-` or `_` (the same rule as in ECS)".into()),
                );
            } else if is_placeholder(&s) {
                ctx.warn(
                    &p,
                    format!("family `{s}` looks like a template placeholder"),
                    "rename metadata.name (and the file) to the real family name",
                );
            }
            s
        }
        None => {
            let mut name: String = stem
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        c
                    } else {
                        '-'
                    }
                })
                .take(255)
                .collect();
            if name.is_empty() {
                name = "imported".into();
            }
            ctx.warn(
                &p,
                format!("the input has no `family`; the task definition is named `{name}` after the file"),
                "rename metadata.name (and the file, and any service's taskDefinition) if the family has another name",
            );
            name
        }
    }
}

/// Task-level fields that only mean something on AWS.
fn task_aws_fields(f: &mut Fields, ctx: &mut Ctx) {
    if let Some(v) = f.take("executionRoleArn") {
        ctx.warn(
            &f.at("executionRoleArn"),
            format!("dropped the execution role `{}`: ECS used it to pull images from ECR and to read secrets and log groups", show(&v)),
            "log the nodes' Docker in to private registries (`docker login`), and provide secrets as the secrets warnings say",
        );
    }
    if let Some(v) = f.take("taskRoleArn") {
        ctx.warn(
            &f.at("taskRoleArn"),
            format!("dropped the task role `{}`: containers no longer get AWS credentials from ECS", show(&v)),
            "if the application calls AWS APIs, give it credentials another way, e.g. through `secrets`",
        );
    }
    if let Some(v) = f.take("requiresCompatibilities") {
        ctx.note(
            &f.at("requiresCompatibilities"),
            format!(
                "dropped {}: tasks run on the Docker nodes of the service's cluster",
                show(&v)
            ),
        );
    }
    if let Some(v) = f.take("runtimePlatform") {
        let windows = v
            .get("operatingSystemFamily")
            .and_then(Value::as_str)
            .is_some_and(|s| s.to_ascii_uppercase().starts_with("WINDOWS"));
        let help = if windows {
            "reconcile runs Linux containers; a Windows image will not start on its nodes"
        } else {
            "make sure the nodes' CPU architecture matches the images (or use multi-architecture images); a memberOf placement constraint on a node attribute can pin the task"
        };
        ctx.warn(
            &f.at("runtimePlatform"),
            format!("dropped runtimePlatform {}: reconcile does not check the node's OS or CPU architecture", show(&v)),
            help,
        );
    }
    for (k, what, help) in [
        (
            "proxyConfiguration",
            "the App Mesh proxy configuration",
            "route traffic through the proxy yourself if you still need it (e.g. an Envoy container configured by hand)",
        ),
        (
            "inferenceAccelerators",
            "Elastic Inference accelerators",
            "run the task on nodes that have the hardware and give the containers access to it",
        ),
        (
            "ephemeralStorage",
            "the Fargate ephemeral storage size",
            "containers use the node's disk; make sure the nodes have the space",
        ),
        (
            "ipcMode",
            "ipcMode (IPC namespace sharing)",
            "reconcile runs each container with Docker's default IPC namespace; share data another way (e.g. a volume)",
        ),
        (
            "pidMode",
            "pidMode (PID namespace sharing)",
            "reconcile runs each container in its own PID namespace; tools that need to see other containers' processes will not",
        ),
        (
            "enableFaultInjection",
            "fault injection",
            "inject faults with your own tooling on the nodes",
        ),
    ] {
        if let Some(v) = f.take(k) {
            ctx.warn(&f.at(k), format!("dropped {what} ({}): not available outside AWS", show(&v)), help);
        }
    }
}

/// ECS tags `[{key, value}]` become metadata labels.
pub(crate) fn tags(ctx: &mut Ctx, path: &str, v: Value) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let Some(items) = array(ctx, path, v) else {
        return labels;
    };
    let mut aws = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let ip = index(path, i);
        let Some(mut t) = Fields::of(ctx, ip.clone(), item) else {
            continue;
        };
        let k = t.take("key").and_then(|v| text(ctx, &key(&ip, "key"), v));
        let val = t
            .take("value")
            .and_then(|v| text(ctx, &key(&ip, "value"), v))
            .unwrap_or_default();
        t.finish(ctx, "a tag");
        match k {
            Some(k) if k.starts_with("aws:") => aws.push(ip),
            Some(k) => {
                labels.insert(k, val);
            }
            None => ctx.warn(
                &ip,
                "dropped a tag without `key`",
                "nothing to do unless the tag mattered",
            ),
        }
    }
    ctx.note(
        path,
        "tags became metadata.labels; reconcile does not put them on containers (use dockerLabels for that)",
    );
    if !aws.is_empty() {
        ctx.note_many(
            aws,
            "dropped tags with the reserved `aws:` prefix: AWS sets them itself",
        );
    }
    labels
}

/// `networkMode`, and whether it was awsvpc.
fn network_mode(f: &mut Fields, ctx: &mut Ctx) -> (Option<NetworkMode>, bool) {
    let p = f.at("networkMode");
    let Some(v) = f.take("networkMode") else {
        return (None, false);
    };
    let Some(s) = string(ctx, &p, v) else {
        return (None, false);
    };
    match s.to_ascii_lowercase().as_str() {
        "bridge" => (Some(NetworkMode::Bridge), false),
        "host" => (Some(NetworkMode::Host), false),
        "none" => (Some(NetworkMode::None), false),
        "awsvpc" => (Some(NetworkMode::Bridge), true),
        "default" => {
            ctx.note(
                &p,
                "networkMode `default` (Docker's default on Windows) became bridge",
            );
            (Some(NetworkMode::Bridge), false)
        }
        _ => {
            ctx.error(
                &p,
                format!("unknown networkMode `{s}`"),
                Some("ECS network modes are bridge, host, awsvpc and none".into()),
            );
            (None, false)
        }
    }
}

/// Task-level `cpu` or `memory`: a string (or number) in ECS, a number here.
fn task_amount(
    f: &mut Fields,
    ctx: &mut Ctx,
    field: &str,
    range: (u64, u64),
    parse: fn(&Value) -> Result<u64, String>,
    unit: &str,
) -> Option<u32> {
    let p = f.at(field);
    let v = f.take(field)?;
    match parse(&v) {
        Ok(n) => Some(clamp(ctx, &p, n, range, unit)),
        Err(why) => {
            ctx.warn(
                &p,
                format!("dropped task {field} `{}`: {why}", show(&v)),
                format!("set spec.{field} in the manifest yourself if the task needs a task-level {field} ({unit})"),
            );
            None
        }
    }
}

pub(super) fn clamp(ctx: &mut Ctx, path: &str, n: u64, (min, max): (u64, u64), unit: &str) -> u32 {
    let c = n.clamp(min, max);
    if c != n {
        let unit = if unit.is_empty() {
            String::new()
        } else {
            format!(" {unit}")
        };
        ctx.warn(
            path,
            format!("{n}{unit} is outside the allowed {min} to {max}; set to {c}"),
            "check the value is what you meant",
        );
    }
    c as u32
}

fn volume(mut f: Fields, out_index: usize, ctx: &mut Ctx, d: &mut Defaults) -> Option<Volume> {
    let np = f.at("name");
    let name = match f.take("name") {
        Some(v) => string(ctx, &np, v),
        None => {
            ctx.error(&np, "missing `name`: every volume needs one", None);
            None
        }
    };
    if let Some(n) = &name {
        if !name_ok(n) {
            ctx.error(
                &np,
                format!("volume name `{n}` is not valid"),
                Some("a volume name is 1 to 255 letters, digits, `-` or `_`".into()),
            );
        }
    }
    let name_s = name.clone().unwrap_or_default();
    let ptr = format!("/volumes/{out_index}");
    let mut host = None;
    if let Some(v) = f.take("host") {
        let hp = f.at("host");
        if let Some(mut h) = Fields::of(ctx, hp.clone(), v) {
            let source = h
                .take("sourcePath")
                .and_then(|v| string(ctx, &h.at("sourcePath"), v));
            h.finish(ctx, "a host volume");
            match source {
                Some(s) if s.starts_with('/') => host = Some(HostVolume { source_path: s }),
                Some(s) => ctx.warn(
                    &key(&hp, "sourcePath"),
                    format!("volume `{name_s}`: host path `{s}` is not absolute (Windows paths are not supported); it became a task-scoped scratch volume"),
                    "give it an absolute path on the node",
                ),
                None => {}
            }
        }
    }
    let mut docker = None;
    if let Some(v) = f.take("dockerVolumeConfiguration") {
        let dp = f.at("dockerVolumeConfiguration");
        docker = docker_volume(ctx, &dp, v, &format!("{ptr}/dockerVolumeConfiguration"), d);
        if docker.is_some() && host.is_some() {
            ctx.warn(
                &dp,
                format!("volume `{name_s}` has both host and dockerVolumeConfiguration; the Docker volume configuration was dropped"),
                "keep one of the two in the manifest",
            );
            docker = None;
        }
    }
    for (k, what) in [
        ("efsVolumeConfiguration", "an Amazon EFS file system"),
        (
            "fsxWindowsFileServerVolumeConfiguration",
            "an Amazon FSx for Windows file share",
        ),
    ] {
        if let Some(v) = f.take(k) {
            ctx.warn(
                &f.at(k),
                format!(
                    "volume `{name_s}` was {what} ({}); it is now a task-scoped scratch volume: data is no longer shared between tasks and is lost when the task stops",
                    show(&v)
                ),
                "mount the file system on the nodes (e.g. over NFS) and use `host: {sourcePath: ...}`, or a dockerVolumeConfiguration with a volume driver that reaches it",
            );
        }
    }
    if let Some(v) = f.take("configuredAtLaunch") {
        if v.as_bool() == Some(true) {
            ctx.warn(
                &f.at("configuredAtLaunch"),
                format!("volume `{name_s}` was an Amazon EBS volume configured at launch; it is now a task-scoped scratch volume"),
                "use a `shared` dockerVolumeConfiguration or a host path if the data must persist",
            );
        } else {
            ctx.note(
                &f.at("configuredAtLaunch"),
                "dropped configuredAtLaunch false: it changes nothing",
            );
        }
    }
    f.finish(ctx, "a volume");
    Some(Volume {
        name: name?,
        host,
        docker_volume_configuration: docker,
    })
}

fn docker_volume(
    ctx: &mut Ctx,
    path: &str,
    v: Value,
    ptr: &str,
    d: &mut Defaults,
) -> Option<DockerVolumeConfiguration> {
    let mut f = Fields::of(ctx, path.to_string(), v)?;
    let scope = match f.take("scope") {
        Some(v) => {
            let p = f.at("scope");
            match string(ctx, &p, v)
                .map(|s| s.to_ascii_lowercase())
                .as_deref()
            {
                Some("task") => VolumeScope::Task,
                Some("shared") => VolumeScope::Shared,
                Some(other) => {
                    ctx.error(
                        &p,
                        format!("unknown scope `{other}`; expected task or shared"),
                        None,
                    );
                    VolumeScope::Task
                }
                None => VolumeScope::Task,
            }
        }
        None => {
            d.add(format!("{ptr}/scope"), json!("task"));
            VolumeScope::Task
        }
    };
    let autoprovision = match f.take("autoprovision") {
        Some(v) => boolean(ctx, &f.at("autoprovision"), v).unwrap_or(false),
        None => {
            d.add(format!("{ptr}/autoprovision"), json!(false));
            false
        }
    };
    let driver = match f.take("driver") {
        Some(v) => string(ctx, &f.at("driver"), v).unwrap_or_else(|| "local".into()),
        None => {
            d.add(format!("{ptr}/driver"), json!("local"));
            "local".into()
        }
    };
    let driver_opts = f
        .take("driverOpts")
        .and_then(|v| string_map(ctx, &f.at("driverOpts"), v))
        .unwrap_or_default();
    let labels = f
        .take("labels")
        .and_then(|v| string_map(ctx, &f.at("labels"), v))
        .unwrap_or_default();
    f.finish(ctx, "a Docker volume configuration");
    Some(DockerVolumeConfiguration {
        scope,
        autoprovision,
        driver,
        driver_opts,
        labels,
    })
}

/// Placement constraints of a task definition: `memberOf` with an
/// expression reconcile can evaluate.
fn task_placement(ctx: &mut Ctx, path: &str, v: Value) -> Vec<PlacementConstraint> {
    let mut out = Vec::new();
    for (c, ip) in placement_constraints(ctx, path, v) {
        match c.kind {
            PlacementConstraintType::DistinctInstance => ctx.warn(
                &ip,
                "dropped a distinctInstance constraint: task definitions allow only memberOf (as in ECS)",
                "put distinctInstance on the service's placementConstraints",
            ),
            PlacementConstraintType::MemberOf if out.len() >= MAX_PLACEMENT_CONSTRAINTS => ctx.warn(
                &ip,
                format!("dropped: at most {MAX_PLACEMENT_CONSTRAINTS} placement constraints"),
                "merge constraints with `and`",
            ),
            PlacementConstraintType::MemberOf => out.push(c),
        }
    }
    out
}

/// Read placement constraints (shared with services), dropping those
/// reconcile cannot evaluate. Returns each kept one with its input path.
pub(crate) fn placement_constraints(
    ctx: &mut Ctx,
    path: &str,
    v: Value,
) -> Vec<(PlacementConstraint, String)> {
    let mut out = Vec::new();
    let Some(items) = array(ctx, path, v) else {
        return out;
    };
    for (k, item) in items.into_iter().enumerate() {
        let ip = index(path, k);
        let Some(mut c) = Fields::of(ctx, ip.clone(), item) else {
            continue;
        };
        let kind = c
            .take("type")
            .and_then(|v| string(ctx, &key(&ip, "type"), v));
        let expression = c
            .take("expression")
            .and_then(|v| string(ctx, &key(&ip, "expression"), v));
        c.finish(ctx, "a placement constraint");
        let kind = match kind.as_deref() {
            Some("memberOf") => PlacementConstraintType::MemberOf,
            Some("distinctInstance") => PlacementConstraintType::DistinctInstance,
            other => {
                ctx.warn(
                    &ip,
                    format!("dropped a placement constraint of type {}: expected memberOf or distinctInstance", other.unwrap_or("(none)")),
                    "fix the constraint in the manifest if it matters",
                );
                continue;
            }
        };
        let expression = match (kind, expression) {
            (PlacementConstraintType::DistinctInstance, Some(e)) => {
                ctx.note(
                    &key(&ip, "expression"),
                    format!("dropped expression `{e}`: distinctInstance takes none"),
                );
                None
            }
            (PlacementConstraintType::MemberOf, None) => {
                ctx.warn(
                    &ip,
                    "dropped a memberOf constraint without an expression",
                    "add the expression in the manifest",
                );
                continue;
            }
            (PlacementConstraintType::MemberOf, Some(e)) => {
                if let Err(err) = crate::expression::parse(&e) {
                    ctx.warn(
                        &key(&ip, "expression"),
                        format!("dropped memberOf `{e}`: reconcile cannot read the expression ({err})"),
                        "rewrite it in the cluster query language (attribute:NAME, ==, in [..], and/or/not)",
                    );
                    continue;
                }
                if e.contains("attribute:ecs.") {
                    ctx.warn(
                        &key(&ip, "expression"),
                        format!("memberOf `{e}` uses built-in ECS attributes (attribute:ecs.*)"),
                        "make sure the nodes declare these attributes, or no node will match",
                    );
                }
                Some(e)
            }
            (_, e) => e,
        };
        out.push((PlacementConstraint { kind, expression }, ip));
    }
    out
}
