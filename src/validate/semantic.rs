//! Cross-document and ECS rules that a JSON Schema cannot express:
//! references between kinds, uniqueness, and task and deployment rules.
//! Pure: works on typed manifests and returns findings addressed by entry
//! and JSON pointer; [`Finding::locate`] turns them into diagnostics.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Diagnostic, Entry, Related, Severity, Validation};
use crate::expression;
use crate::manifest::service::{PlacementStrategyType, SchedulingStrategy};
use crate::manifest::task_definition::{DependencyCondition, NetworkMode};
use crate::manifest::{
    CapacityProviderStrategyItem, Kind, Manifest, PlacementConstraint, PlacementConstraintType,
    Toggle,
};
use crate::suggest;

/// A semantic problem, addressed by entry and pointer.
#[derive(Debug, Clone)]
pub struct Finding {
    pub severity: Severity,
    pub code: &'static str,
    pub entry: usize,
    pub pointer: String,
    /// Point at the key of the entry rather than its value.
    pub at_key: bool,
    pub message: String,
    pub help: Option<String>,
    pub related: Vec<(usize, String, String)>,
}

impl Finding {
    fn error(
        code: &'static str,
        entry: usize,
        pointer: impl Into<String>,
        message: String,
    ) -> Self {
        Finding {
            severity: Severity::Error,
            code,
            entry,
            pointer: pointer.into(),
            at_key: false,
            message,
            help: None,
            related: Vec::new(),
        }
    }

    fn warning(
        code: &'static str,
        entry: usize,
        pointer: impl Into<String>,
        message: String,
    ) -> Self {
        Finding {
            severity: Severity::Warning,
            ..Finding::error(code, entry, pointer, message)
        }
    }

    fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    fn at_key(mut self) -> Self {
        self.at_key = true;
        self
    }

    /// Resolve to a diagnostic with file, line and column.
    pub fn locate(&self, v: &Validation) -> Diagnostic {
        let e = &v.entries[self.entry];
        let span = if self.at_key {
            e.document.key_span_of(&self.pointer)
        } else {
            e.document.span_of(&self.pointer)
        };
        Diagnostic {
            severity: self.severity,
            code: self.code,
            file: v.files[e.file].name.clone(),
            span,
            pointer: self.pointer.clone(),
            kind: Some(e.manifest.kind()),
            name: Some(e.manifest.name().to_string()),
            message: self.message.clone(),
            help: self.help.clone(),
            related: self
                .related
                .iter()
                .map(|(entry, pointer, message)| {
                    let r = &v.entries[*entry];
                    Related {
                        message: message.clone(),
                        file: v.files[r.file].name.clone(),
                        span: r.document.span_of(pointer),
                    }
                })
                .collect(),
        }
    }
}

/// Run every rule over the manifests that passed the schema layer.
pub fn check(entries: &[Entry]) -> Vec<Finding> {
    let mut out = Vec::new();
    let index = Index::new(entries);
    duplicate_names(entries, &mut out);
    for (i, e) in entries.iter().enumerate() {
        annotations(i, &e.manifest, &mut out);
        match &e.manifest {
            Manifest::TaskDefinition(td) => task_definition(i, &td.spec, &mut out),
            Manifest::Service(s) => service(i, &s.spec, &index, entries, &mut out),
            Manifest::Cluster(c) => {
                for (j, p) in c.spec.capacity_providers.iter().enumerate() {
                    if !index.providers.contains_key(p.as_str()) {
                        out.push(missing_ref(
                            "reference",
                            i,
                            format!("/spec/capacityProviders/{j}"),
                            "CapacityProvider",
                            p,
                            index.providers.keys().copied(),
                        ));
                    }
                }
                let attached: HashSet<&str> = c
                    .spec
                    .capacity_providers
                    .iter()
                    .map(String::as_str)
                    .collect();
                strategy(
                    i,
                    "/spec/defaultCapacityProviderStrategy",
                    &c.spec.default_capacity_provider_strategy,
                    &attached,
                    &c.metadata.name,
                    &mut out,
                );
            }
            Manifest::CapacityProvider(cp) => capacity_provider(i, &cp.spec, &mut out),
        }
    }
    out
}

/// Annotations under `reconcile.io/` the program reads: known keys with
/// valid values only, so a typo never silently changes nothing.
pub const SELF_HEAL: &str = "reconcile.io/self-heal";

fn annotations(i: usize, m: &Manifest, out: &mut Vec<Finding>) {
    for (k, v) in &m.metadata().annotations {
        let Some(_) = k.strip_prefix("reconcile.io/") else {
            continue;
        };
        let pointer = format!(
            "/metadata/annotations/{}",
            k.replace('~', "~0").replace('/', "~1")
        );
        if k == SELF_HEAL {
            if m.kind() != Kind::Service {
                out.push(Finding::error(
                    "annotation",
                    i,
                    pointer,
                    format!("`{SELF_HEAL}` applies to a Service only"),
                ));
            } else if v != "true" && v != "false" {
                out.push(
                    Finding::error(
                        "annotation",
                        i,
                        pointer,
                        format!("`{SELF_HEAL}` is `{v}`; expected \"true\" or \"false\""),
                    )
                    .help("\"false\" reports drift without repairing it"),
                );
            }
        } else {
            out.push(
                Finding::error(
                    "annotation",
                    i,
                    pointer,
                    format!("unknown annotation `{k}`: the `reconcile.io/` prefix is reserved"),
                )
                .help(format!("known: `{SELF_HEAL}`"))
                .at_key(),
            );
        }
    }
}

struct Index<'a> {
    clusters: BTreeMap<&'a str, usize>,
    families: BTreeMap<&'a str, usize>,
    providers: BTreeMap<&'a str, usize>,
}

impl<'a> Index<'a> {
    fn new(entries: &'a [Entry]) -> Self {
        let mut ix = Index {
            clusters: BTreeMap::new(),
            families: BTreeMap::new(),
            providers: BTreeMap::new(),
        };
        for (i, e) in entries.iter().enumerate() {
            let map = match e.manifest.kind() {
                Kind::Cluster => &mut ix.clusters,
                Kind::TaskDefinition => &mut ix.families,
                Kind::CapacityProvider => &mut ix.providers,
                Kind::Service => continue,
            };
            map.entry(e.manifest.name()).or_insert(i);
        }
        ix
    }
}

fn missing_ref<'a>(
    code: &'static str,
    entry: usize,
    pointer: String,
    kind: &str,
    name: &str,
    known: impl Iterator<Item = &'a str> + Clone,
) -> Finding {
    let f = Finding::error(
        code,
        entry,
        pointer,
        format!("no {kind} named `{name}` in the source"),
    );
    match suggest::closest(name, known.clone()) {
        Some(s) => f.help(format!("did you mean `{s}`?")),
        None => {
            let all: Vec<&str> = known.collect();
            if all.is_empty() {
                f.help(format!("add a {kind} manifest named `{name}`"))
            } else {
                f.help(format!("defined {kind}s: {}", all.join(", ")))
            }
        }
    }
}

fn duplicate_names(entries: &[Entry], out: &mut Vec<Finding>) {
    let mut seen: HashMap<(Kind, Option<&str>, &str), usize> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        let scope = match &e.manifest {
            Manifest::Service(s) => Some(s.spec.cluster.as_str()),
            _ => None,
        };
        let key = (e.manifest.kind(), scope, e.manifest.name());
        if let Some(&first) = seen.get(&key) {
            let what = match scope {
                Some(c) => format!("Service `{}` is defined twice in cluster `{c}`", key.2),
                None => format!("{} `{}` is defined twice", key.0, key.2),
            };
            let mut f = Finding::error("duplicate-name", i, "/metadata/name", what)
                .help("names are unique per kind (services per cluster): rename or remove one");
            f.related
                .push((first, "/metadata/name".into(), "first defined here".into()));
            out.push(f);
        } else {
            seen.insert(key, i);
        }
    }
}

fn strategy(
    entry: usize,
    base: &str,
    items: &[CapacityProviderStrategyItem],
    attached: &HashSet<&str>,
    cluster: &str,
    out: &mut Vec<Finding>,
) {
    if items.is_empty() {
        return;
    }
    let with_base: Vec<usize> = (0..items.len()).filter(|&j| items[j].base > 0).collect();
    for &j in with_base.iter().skip(1) {
        out.push(
            Finding::error(
                "capacity-provider-strategy",
                entry,
                format!("{base}/{j}/base"),
                "only one item of a capacity provider strategy may have a base".into(),
            )
            .help(format!(
                "`{}` already has a base",
                items[with_base[0]].capacity_provider
            )),
        );
    }
    if items.iter().all(|it| it.weight == 0) {
        out.push(
            Finding::error(
                "capacity-provider-strategy",
                entry,
                base.to_string(),
                "no item of the capacity provider strategy has a weight above 0, so tasks beyond the base cannot be placed".into(),
            )
            .at_key()
            .help("give at least one provider a weight, e.g. `weight: 1`"),
        );
    }
    let mut seen = HashSet::new();
    for (j, it) in items.iter().enumerate() {
        let p = format!("{base}/{j}/capacityProvider");
        if !seen.insert(it.capacity_provider.as_str()) {
            out.push(Finding::error(
                "capacity-provider-strategy",
                entry,
                p.clone(),
                format!("`{}` appears twice in the strategy", it.capacity_provider),
            ));
        }
        if !attached.contains(it.capacity_provider.as_str()) {
            out.push(
                Finding::error(
                    "capacity-provider-strategy",
                    entry,
                    p,
                    format!(
                        "capacity provider `{}` is not attached to cluster `{cluster}`",
                        it.capacity_provider
                    ),
                )
                .help(format!(
                    "add it to the capacityProviders of Cluster `{cluster}`"
                )),
            );
        }
    }
}

fn constraints(
    entry: usize,
    base: &str,
    list: &[PlacementConstraint],
    memberof_only: bool,
    out: &mut Vec<Finding>,
) {
    for (j, c) in list.iter().enumerate() {
        let p = format!("{base}/{j}");
        match (c.kind, &c.expression) {
            (PlacementConstraintType::DistinctInstance, _) if memberof_only => out.push(
                Finding::error(
                    "placement",
                    entry,
                    format!("{p}/type"),
                    "a task definition allows only `memberOf` constraints".into(),
                )
                .help("put `distinctInstance` on the Service's placementConstraints"),
            ),
            (PlacementConstraintType::DistinctInstance, Some(_)) => out.push(Finding::error(
                "placement",
                entry,
                format!("{p}/expression"),
                "`distinctInstance` takes no expression".into(),
            )),
            (PlacementConstraintType::MemberOf, None) => out.push(
                Finding::error(
                    "placement",
                    entry,
                    p,
                    "`memberOf` needs an expression".into(),
                )
                .help("e.g. `expression: \"attribute:zone in [a, b]\"`"),
            ),
            (PlacementConstraintType::MemberOf, Some(expr)) => {
                if let Err(e) = expression::parse(expr) {
                    out.push(Finding::error(
                        "placement",
                        entry,
                        format!("{p}/expression"),
                        format!("invalid expression: {e}"),
                    ));
                }
            }
            (PlacementConstraintType::DistinctInstance, None) => {}
        }
    }
}

fn task_definition(i: usize, spec: &crate::manifest::TaskDefinitionSpec, out: &mut Vec<Finding>) {
    let cds = &spec.container_definitions;
    let names: HashMap<&str, usize> = cds
        .iter()
        .enumerate()
        .rev()
        .map(|(j, c)| (c.name.as_str(), j))
        .collect();
    // Duplicate container names.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (j, c) in cds.iter().enumerate() {
        if let Some(&first) = seen.get(c.name.as_str()) {
            let mut f = Finding::error(
                "container",
                i,
                format!("/spec/containerDefinitions/{j}/name"),
                format!("container name `{}` is used twice in the task", c.name),
            );
            f.related.push((
                i,
                format!("/spec/containerDefinitions/{first}/name"),
                "first used here".into(),
            ));
            out.push(f);
        } else {
            seen.insert(&c.name, j);
        }
    }
    if !cds.iter().any(|c| c.essential) {
        out.push(
            Finding::error(
                "container",
                i,
                "/spec/containerDefinitions",
                "no container is essential; a task needs at least one".into(),
            )
            .at_key()
            .help("set `essential: true` on the main container"),
        );
    }
    // Resources.
    let cpu_sum: u64 = cds.iter().map(|c| u64::from(c.cpu)).sum();
    if let Some(task_cpu) = spec.cpu {
        if cpu_sum > u64::from(task_cpu) {
            out.push(Finding::error(
                "resources",
                i,
                "/spec/cpu",
                format!(
                    "the containers reserve {cpu_sum} CPU units, more than the task's {task_cpu}"
                ),
            ));
        }
    }
    let mut hosts: HashMap<(u16, crate::manifest::task_definition::Protocol), (usize, usize)> =
        HashMap::new();
    for (j, c) in cds.iter().enumerate() {
        let base = format!("/spec/containerDefinitions/{j}");
        if let (Some(m), Some(r)) = (c.memory, c.memory_reservation) {
            if r >= m {
                out.push(
                    Finding::error(
                        "resources",
                        i,
                        format!("{base}/memoryReservation"),
                        format!("memoryReservation ({r} MiB) must be less than memory ({m} MiB)"),
                    )
                    .help("memory is the hard limit; the reservation is the soft share below it"),
                );
            }
        }
        if spec.memory.is_none() && c.memory.is_none() && c.memory_reservation.is_none() {
            out.push(
                Finding::error(
                    "resources",
                    i,
                    base.clone(),
                    format!(
                        "container `{}` sets neither memory nor memoryReservation, and the task sets no memory",
                        c.name
                    ),
                )
                .help("set task-level `memory`, or `memory`/`memoryReservation` on the container"),
            );
        }
        if let (Some(tm), Some(m)) = (spec.memory, c.memory.or(c.memory_reservation)) {
            if m > tm {
                out.push(Finding::error(
                    "resources",
                    i,
                    format!(
                        "{base}/{}",
                        if c.memory.is_some() {
                            "memory"
                        } else {
                            "memoryReservation"
                        }
                    ),
                    format!(
                        "container `{}` asks for {m} MiB, more than the task's {tm} MiB",
                        c.name
                    ),
                ));
            }
        }
        // Ports.
        for (k, pm) in c.port_mappings.iter().enumerate() {
            let p = format!("{base}/portMappings/{k}");
            match spec.network_mode {
                NetworkMode::None => out.push(
                    Finding::error(
                        "network-mode",
                        i,
                        p.clone(),
                        "networkMode `none` allows no port mappings".into(),
                    )
                    .help("remove the port mappings or use networkMode bridge"),
                ),
                NetworkMode::Host => {
                    if let Some(hp) = pm.host_port {
                        if hp != pm.container_port {
                            out.push(
                                Finding::error(
                                    "network-mode",
                                    i,
                                    format!("{p}/hostPort"),
                                    format!(
                                        "with networkMode `host`, hostPort ({hp}) must equal containerPort ({})",
                                        pm.container_port
                                    ),
                                )
                                .help("leave hostPort out, or set it to the containerPort"),
                            );
                        }
                    }
                }
                NetworkMode::Bridge => {}
            }
            let host_port = match spec.network_mode {
                NetworkMode::Host => Some(pm.container_port),
                _ => pm.host_port.filter(|p| *p != 0),
            };
            if let Some(hp) = host_port {
                if let Some(&(fj, fk)) = hosts.get(&(hp, pm.protocol)) {
                    let mut f = Finding::error(
                        "ports",
                        i,
                        p.clone(),
                        format!("host port {hp} is used twice in the task"),
                    )
                    .help("each host port can be bound once per node; use another port or hostPort 0 for a dynamic one");
                    f.related.push((
                        i,
                        format!("/spec/containerDefinitions/{fj}/portMappings/{fk}"),
                        "first used here".into(),
                    ));
                    out.push(f);
                } else {
                    hosts.insert((hp, pm.protocol), (j, k));
                }
            }
        }
        if spec.network_mode == NetworkMode::Host && c.hostname.is_some() {
            out.push(Finding::error(
                "network-mode",
                i,
                format!("{base}/hostname"),
                "hostname cannot be set with networkMode `host`".into(),
            ));
        }
        // Health check command.
        if let Some(hc) = &c.health_check {
            let p = format!("{base}/healthCheck/command/0");
            match hc.command.first().map(String::as_str) {
                Some("CMD") => {}
                Some("CMD-SHELL") if hc.command.len() == 2 => {}
                Some("CMD-SHELL") => out.push(
                    Finding::error(
                        "health-check",
                        i,
                        format!("{base}/healthCheck/command"),
                        "CMD-SHELL takes exactly one command line".into(),
                    )
                    .help("write it as [\"CMD-SHELL\", \"curl -f http://localhost/ || exit 1\"]"),
                ),
                _ => out.push(
                    Finding::error(
                        "health-check",
                        i,
                        p,
                        "a health check command starts with `CMD` or `CMD-SHELL`".into(),
                    )
                    .help("e.g. [\"CMD-SHELL\", \"wget -q -O /dev/null http://localhost:8080/ || exit 1\"]"),
                ),
            }
        }
        // dependsOn targets and conditions.
        for (k, d) in c.depends_on.iter().enumerate() {
            let p = format!("{base}/dependsOn/{k}");
            match names.get(d.container_name.as_str()) {
                None => out.push(missing_dep(i, &p, &d.container_name, &names)),
                Some(&t) if t == j => out.push(Finding::error(
                    "depends-on",
                    i,
                    format!("{p}/containerName"),
                    format!("container `{}` depends on itself", c.name),
                )),
                Some(&t) => {
                    let target = &cds[t];
                    match d.condition {
                        DependencyCondition::Healthy if target.health_check.is_none() => out.push(
                            Finding::error(
                                "depends-on",
                                i,
                                format!("{p}/condition"),
                                format!(
                                    "condition HEALTHY needs a healthCheck on `{}`, which has none",
                                    target.name
                                ),
                            )
                            .help(format!("add a healthCheck to `{}` or use condition START", target.name)),
                        ),
                        DependencyCondition::Complete | DependencyCondition::Success
                            if target.essential =>
                        {
                            out.push(
                                Finding::error(
                                    "depends-on",
                                    i,
                                    format!("{p}/condition"),
                                    format!(
                                        "condition {} waits for `{}` to exit, but it is essential: its exit stops the task",
                                        if d.condition == DependencyCondition::Complete { "COMPLETE" } else { "SUCCESS" },
                                        target.name
                                    ),
                                )
                                .help(format!("set `essential: false` on `{}`", target.name)),
                            )
                        }
                        _ => {}
                    }
                }
            }
        }
        // Volumes.
        for (k, m) in c.mount_points.iter().enumerate() {
            if !spec.volumes.iter().any(|v| v.name == m.source_volume) {
                let known: Vec<&str> = spec.volumes.iter().map(|v| v.name.as_str()).collect();
                let mut f = Finding::error(
                    "volumes",
                    i,
                    format!("{base}/mountPoints/{k}/sourceVolume"),
                    format!(
                        "no volume named `{}` in the task definition",
                        m.source_volume
                    ),
                );
                f.help = Some(
                    match suggest::closest(&m.source_volume, known.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => "declare it under spec.volumes".into(),
                    },
                );
                out.push(f);
            }
        }
        for (k, vf) in c.volumes_from.iter().enumerate() {
            let p = format!("{base}/volumesFrom/{k}/sourceContainer");
            if vf.source_container == c.name {
                out.push(Finding::error(
                    "volumes",
                    i,
                    p,
                    "a container cannot mount its own volumes".into(),
                ));
            } else if !names.contains_key(vf.source_container.as_str()) {
                out.push(Finding::error(
                    "volumes",
                    i,
                    p,
                    format!("no container named `{}` in the task", vf.source_container),
                ));
            }
        }
        for (k, u) in c.ulimits.iter().enumerate() {
            if u.soft_limit > u.hard_limit {
                out.push(Finding::error(
                    "container",
                    i,
                    format!("{base}/ulimits/{k}/softLimit"),
                    format!(
                        "softLimit ({}) is above hardLimit ({})",
                        u.soft_limit, u.hard_limit
                    ),
                ));
            }
        }
        // Environment: one name, one value.
        let mut env: HashMap<&str, String> = HashMap::new();
        for (k, kv) in c.environment.iter().enumerate() {
            let p = format!("{base}/environment/{k}/name");
            if let Some(first) = env.insert(&kv.name, p.clone()) {
                let mut f = Finding::error(
                    "environment",
                    i,
                    p,
                    format!("environment variable `{}` is set twice", kv.name),
                );
                f.related.push((i, first, "first set here".into()));
                out.push(f);
            }
        }
        for (k, s) in c.secrets.iter().enumerate() {
            let p = format!("{base}/secrets/{k}/name");
            if let Some(first) = env.insert(&s.name, p.clone()) {
                let mut f = Finding::error(
                    "environment",
                    i,
                    p,
                    format!("environment variable `{}` is set twice", s.name),
                );
                f.related.push((i, first, "first set here".into()));
                out.push(f);
            }
        }
        for key in c.docker_labels.keys() {
            if key.starts_with("reconcile.io/") {
                out.push(
                    Finding::error(
                        "container",
                        i,
                        crate::pointer::push(&format!("{base}/dockerLabels"), key),
                        format!("label `{key}` uses the reserved prefix `reconcile.io/`"),
                    )
                    .at_key(),
                );
            }
        }
    }
    dependency_cycles(i, cds, &names, out);
    // Volume declarations.
    let mut vnames = HashSet::new();
    for (k, v) in spec.volumes.iter().enumerate() {
        if !vnames.insert(v.name.as_str()) {
            out.push(Finding::error(
                "volumes",
                i,
                format!("/spec/volumes/{k}/name"),
                format!("volume name `{}` is used twice", v.name),
            ));
        }
        if v.host.is_some() && v.docker_volume_configuration.is_some() {
            out.push(Finding::error(
                "volumes",
                i,
                format!("/spec/volumes/{k}"),
                "a volume is either `host` or `dockerVolumeConfiguration`, not both".into(),
            ));
        }
    }
    constraints(
        i,
        "/spec/placementConstraints",
        &spec.placement_constraints,
        true,
        out,
    );
}

fn missing_dep(i: usize, p: &str, name: &str, names: &HashMap<&str, usize>) -> Finding {
    let f = Finding::error(
        "depends-on",
        i,
        format!("{p}/containerName"),
        format!("no container named `{name}` in the task"),
    );
    match suggest::closest(name, names.keys().copied()) {
        Some(s) => f.help(format!("did you mean `{s}`?")),
        None => f,
    }
}

fn dependency_cycles(
    i: usize,
    cds: &[crate::manifest::task_definition::ContainerDefinition],
    names: &HashMap<&str, usize>,
    out: &mut Vec<Finding>,
) {
    // Colour-marking DFS, iterative; reports each cycle once, at the edge
    // that closes it.
    let n = cds.len();
    let mut state = vec![0u8; n]; // 0 new, 1 on stack, 2 done
    for start in 0..n {
        if state[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut edge)) = stack.last_mut() {
            let deps = &cds[node].depends_on;
            if *edge < deps.len() {
                let k = *edge;
                *edge += 1;
                let Some(&t) = names.get(deps[k].container_name.as_str()) else {
                    continue;
                };
                if t == node {
                    continue; // reported as self-dependency
                }
                match state[t] {
                    0 => {
                        state[t] = 1;
                        stack.push((t, 0));
                    }
                    1 => {
                        let from = stack.iter().position(|(x, _)| *x == t).unwrap_or(0);
                        let mut path: Vec<&str> = stack[from..]
                            .iter()
                            .map(|(x, _)| cds[*x].name.as_str())
                            .collect();
                        path.push(&cds[t].name);
                        out.push(
                            Finding::error(
                                "depends-on",
                                i,
                                format!("/spec/containerDefinitions/{node}/dependsOn/{k}"),
                                format!("dependsOn forms a cycle: {}", path.join(" -> ")),
                            )
                            .help("containers start in dependency order; remove one of these dependencies"),
                        );
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                stack.pop();
            }
        }
    }
}

fn service(
    i: usize,
    spec: &crate::manifest::ServiceSpec,
    index: &Index,
    entries: &[Entry],
    out: &mut Vec<Finding>,
) {
    let cluster = index.clusters.get(spec.cluster.as_str()).copied();
    if cluster.is_none() {
        out.push(missing_ref(
            "reference",
            i,
            "/spec/cluster".into(),
            "Cluster",
            &spec.cluster,
            index.clusters.keys().copied(),
        ));
    }
    let crate::model::TaskDefRef { family, revision } =
        crate::model::TaskDefRef::parse(&spec.task_definition);
    if !index.families.contains_key(family) {
        let f = missing_ref(
            "reference",
            i,
            "/spec/taskDefinition".into(),
            "TaskDefinition",
            family,
            index.families.keys().copied(),
        );
        if revision.is_some() {
            // A pinned revision may have been registered from an earlier
            // source; only the store can tell at plan time.
            out.push(Finding {
                severity: Severity::Warning,
                message: format!(
                    "no TaskDefinition family `{family}` in the source; revision {} must already be registered",
                    spec.task_definition
                ),
                ..f
            });
        } else {
            out.push(f);
        }
    }
    let d = &spec.deployment_configuration;
    match spec.scheduling_strategy {
        SchedulingStrategy::Replica => {
            let desired = spec.desired_count.unwrap_or_else(|| {
                out.push(
                    Finding::error(
                        "scheduling",
                        i,
                        "/spec",
                        "a REPLICA service needs desiredCount".into(),
                    )
                    .at_key()
                    .help("add e.g. `desiredCount: 1`"),
                );
                0
            });
            let min = d.min_healthy(spec.scheduling_strategy);
            let max = d.max_percent(spec.scheduling_strategy);
            let floor = (u64::from(desired) * u64::from(min)).div_ceil(100);
            let cap = u64::from(desired) * u64::from(max) / 100;
            if desired > 0 && cap <= u64::from(desired) && floor >= u64::from(desired) {
                out.push(
                    Finding::error(
                        "deployment",
                        i,
                        "/spec/deploymentConfiguration",
                        format!(
                            "a deployment can never make progress: with desiredCount {desired}, minimumHealthyPercent {min} forbids stopping any of the {floor} running {} and maximumPercent {max} forbids starting an extra one",
                            if floor == 1 { "task" } else { "tasks" }
                        ),
                    )
                    .at_key()
                    .help("lower minimumHealthyPercent or raise maximumPercent so that a task can be stopped or an extra one started"),
                );
            }
        }
        SchedulingStrategy::Daemon => {
            if spec.desired_count.is_some() {
                out.push(
                    Finding::error(
                        "scheduling",
                        i,
                        "/spec/desiredCount",
                        "a DAEMON service runs one task per node; desiredCount is not allowed"
                            .into(),
                    )
                    .at_key(),
                );
            }
            if !spec.placement_strategy.is_empty() {
                out.push(
                    Finding::error(
                        "scheduling",
                        i,
                        "/spec/placementStrategy",
                        "a DAEMON service takes no placementStrategy".into(),
                    )
                    .at_key(),
                );
            }
            if !spec.capacity_provider_strategy.is_empty() {
                out.push(
                    Finding::error(
                        "scheduling",
                        i,
                        "/spec/capacityProviderStrategy",
                        "a DAEMON service takes no capacityProviderStrategy".into(),
                    )
                    .at_key(),
                );
            }
            if d.min_healthy(spec.scheduling_strategy) >= 100 {
                out.push(
                    Finding::error(
                        "deployment",
                        i,
                        "/spec/deploymentConfiguration/minimumHealthyPercent",
                        "a DAEMON service replaces its one task per node by stopping it first, so minimumHealthyPercent must be below 100".into(),
                    ),
                );
            }
            if d.max_percent(spec.scheduling_strategy) != 100 {
                out.push(Finding::warning(
                    "deployment",
                    i,
                    "/spec/deploymentConfiguration/maximumPercent",
                    "maximumPercent has no effect on a DAEMON service (one task per node)".into(),
                ));
            }
        }
    }
    if d.deployment_circuit_breaker.rollback && !d.deployment_circuit_breaker.enable {
        out.push(
            Finding::warning(
                "deployment",
                i,
                "/spec/deploymentConfiguration/deploymentCircuitBreaker/rollback",
                "rollback has no effect while the circuit breaker is not enabled".into(),
            )
            .help("set `enable: true`"),
        );
    }
    for (j, s) in spec.placement_strategy.iter().enumerate() {
        let p = format!("/spec/placementStrategy/{j}");
        let field = s.field.as_deref();
        let problem = match (s.kind, field) {
            (PlacementStrategyType::Random, Some(_)) => Some("`random` takes no field"),
            (PlacementStrategyType::Spread, None) => {
                Some("`spread` needs a field: instanceId, host or attribute:NAME")
            }
            (PlacementStrategyType::Spread, Some(f))
                if !(f == "instanceId" || f == "host" || f.starts_with("attribute:")) =>
            {
                Some("`spread` works on instanceId, host or attribute:NAME")
            }
            (PlacementStrategyType::Binpack, Some("cpu" | "memory")) => None,
            (PlacementStrategyType::Binpack, _) => Some("`binpack` needs field `cpu` or `memory`"),
            _ => None,
        };
        if let Some(msg) = problem {
            out.push(Finding::error("placement", i, p, msg.into()));
        }
    }
    constraints(
        i,
        "/spec/placementConstraints",
        &spec.placement_constraints,
        false,
        out,
    );
    if let Some(c) = cluster {
        if let Manifest::Cluster(cm) = &entries[c].manifest {
            let attached: HashSet<&str> = cm
                .spec
                .capacity_providers
                .iter()
                .map(String::as_str)
                .collect();
            strategy(
                i,
                "/spec/capacityProviderStrategy",
                &spec.capacity_provider_strategy,
                &attached,
                &spec.cluster,
                out,
            );
        }
    }
}

fn capacity_provider(
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
    } else if ms.status == Toggle::Enabled {
        out.push(
            Finding::error(
                "capacity-provider",
                i,
                "/spec/managedScaling/status",
                "managed scaling needs a nodeTemplate describing the nodes to launch".into(),
            )
            .help("add `nodeTemplate: {attributes: {...}, maximumSize: N}`"),
        );
    }
}
