//! ECS service JSON (`aws ecs describe-services` output, or a single
//! service object) -> Service manifest.
//!
//! A describe-services entry mixes configuration with live state (counts,
//! deployments, events). The configuration reconcile has carries over under
//! the same names; the live state is dropped with one note; AWS networking
//! is dropped with a warning that says what replaces it. Load balancers and
//! Cloud Map registries become listeners and DNS names, with a warning
//! naming what lives in ELB and Cloud Map and must be brought over by hand
//! (the listener port, the target group's health check). Fixes keep the result valid: a DAEMON service
//! loses its desiredCount, a deployment configuration that could never make
//! progress gets a lower minimumHealthyPercent, and so on.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::fields::{array, boolean, count, each_object, show, string, Fields};
use super::render::Defaults;
use super::report::{index, key, Ctx};
use super::task_definition::{placement_constraints, tags};
use crate::manifest::service::{
    CircuitBreakerThreshold, DeploymentCircuitBreaker, DeploymentConfiguration, PlacementStrategy,
    PlacementStrategyType, SchedulingStrategy,
};
use crate::manifest::traffic::{
    BalancingAlgorithm, ListenerProtocol, LoadBalancer, ServiceRegistry, TargetHealthCheck,
    DEFAULT_DEREGISTRATION_DELAY,
};
use crate::manifest::{CapacityProviderStrategyItem, ServiceSpec, Toggle};
use crate::scheduler::RESERVED_PORTS;

/// A service read from one input.
#[derive(Debug, Clone)]
pub(crate) struct ServiceImport {
    pub file: String,
    pub path: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub spec: ServiceSpec,
    /// Input path of each of `spec.load_balancers`.
    pub lb_paths: Vec<String>,
    pub defaults: Defaults,
}

/// Where a task definition family a service may use comes from.
#[derive(Debug, Clone)]
pub(crate) struct Family {
    /// The input it was imported from; `None` when it is already in the
    /// output directory.
    pub file: Option<String>,
    pub revision: Option<u64>,
}

/// What services can refer to.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    pub families: BTreeMap<String, Family>,
    /// Clusters already in the output directory, with their capacity
    /// providers.
    pub clusters: BTreeMap<String, Vec<String>>,
}

const READ_ONLY: &[&str] = &[
    "serviceArn",
    "status",
    "runningCount",
    "pendingCount",
    "deployments",
    "events",
    "createdAt",
    "createdBy",
    "taskSets",
    "currentServiceDeployment",
    "currentServiceRevisions",
    "resourceManagementType",
];

const DESIRED_MAX: u64 = 5000;
const MAX_STRATEGIES: usize = 5;
const MAX_CONSTRAINTS: usize = 10;

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The last segment of an ARN (`.../cluster/NAME`) or the name itself.
fn arn_name(s: &str) -> &str {
    if s.starts_with("arn:") {
        s.rsplit('/').next().unwrap_or(s)
    } else {
        s
    }
}

pub(crate) fn map(mut f: Fields, ctx: &mut Ctx, catalog: &Catalog) -> Option<ServiceImport> {
    let errors_before = ctx.error_count();
    let path = f.path().to_string();
    let mut d = Defaults::default();

    let np = f.at("serviceName");
    let name = match f.take("serviceName").and_then(|v| string(ctx, &np, v)) {
        Some(n) if name_ok(&n) => Some(n),
        Some(n) => {
            ctx.error(
                &np,
                format!("service name `{n}` is not valid"),
                Some("a service name is 1 to 255 letters, digits, `-` or `_`".into()),
            );
            None
        }
        None => {
            if ctx.error_count() == errors_before {
                ctx.error(&np, "missing `serviceName`", None);
            }
            None
        }
    };

    let read_only = f.take_all(READ_ONLY);
    if !read_only.is_empty() {
        ctx.note_many(
            read_only.into_iter().map(|(p, _)| p).collect(),
            "dropped: these fields describe the service's current state in AWS, not its configuration",
        );
    }

    let cluster = cluster(&mut f, ctx);
    let task_definition = task_definition(&mut f, ctx, catalog);
    let mut labels = BTreeMap::new();
    if let Some(v) = f.take("tags") {
        labels = tags(ctx, &f.at("tags"), v);
    }

    let scheduling_strategy = match f.take("schedulingStrategy") {
        Some(v) => {
            let p = f.at("schedulingStrategy");
            match string(ctx, &p, v)
                .map(|s| s.to_ascii_uppercase())
                .as_deref()
            {
                Some("REPLICA") => SchedulingStrategy::Replica,
                Some("DAEMON") => SchedulingStrategy::Daemon,
                Some(other) => {
                    ctx.error(
                        &p,
                        format!("unknown schedulingStrategy `{other}`; expected REPLICA or DAEMON"),
                        None,
                    );
                    SchedulingStrategy::Replica
                }
                None => SchedulingStrategy::Replica,
            }
        }
        None => {
            d.add("/schedulingStrategy", json!("REPLICA"));
            SchedulingStrategy::Replica
        }
    };
    let daemon = scheduling_strategy == SchedulingStrategy::Daemon;

    let dp = f.at("desiredCount");
    let mut desired_count = f.take("desiredCount").and_then(|v| count(ctx, &dp, v)).map(|n| {
        if n > DESIRED_MAX {
            ctx.warn(&dp, format!("desiredCount {n} is above the maximum of {DESIRED_MAX}; set to {DESIRED_MAX}"), "check the value");
        }
        n.min(DESIRED_MAX) as u32
    });
    if daemon {
        if let Some(n) = desired_count.take() {
            ctx.note(
                &dp,
                format!("dropped desiredCount {n}: a DAEMON service runs one task per node"),
            );
        }
    } else if desired_count.is_none() && ctx.error_count() == errors_before {
        desired_count = Some(1);
        ctx.warn(
            &dp,
            "no desiredCount; the service now runs 1 task",
            "set desiredCount to the number of tasks to run",
        );
    }

    let deployment_configuration = match f.take("deploymentConfiguration") {
        Some(v) => deployment(ctx, &f.at("deploymentConfiguration"), v, &mut d),
        None => {
            d.add("/deploymentConfiguration", json!({}));
            d.add(
                "/deploymentConfiguration/deploymentCircuitBreaker",
                json!({"enable": false, "rollback": false}),
            );
            DeploymentConfiguration::default()
        }
    };

    let health_check_grace_period_seconds = match f.take("healthCheckGracePeriodSeconds") {
        Some(v) => {
            let p = f.at("healthCheckGracePeriodSeconds");
            count(ctx, &p, v)
                .map(|n| n.min(i32::MAX as u64) as u32)
                .unwrap_or(0)
        }
        None => {
            d.add("/healthCheckGracePeriodSeconds", json!(0));
            0
        }
    };

    let mut placement_strategy = match f.take("placementStrategy") {
        Some(v) => strategies(ctx, &f.at("placementStrategy"), v),
        None => Vec::new(),
    };
    let mut placement_constraints_out = Vec::new();
    if let Some(v) = f.take("placementConstraints") {
        for (c, ip) in placement_constraints(ctx, &f.at("placementConstraints"), v) {
            if placement_constraints_out.len() >= MAX_CONSTRAINTS {
                ctx.warn(
                    &ip,
                    format!("dropped: at most {MAX_CONSTRAINTS} placement constraints"),
                    "merge memberOf constraints with `and`",
                );
            } else {
                placement_constraints_out.push(c);
            }
        }
    }
    let mut capacity_provider_strategy = match f.take("capacityProviderStrategy") {
        Some(v) => capacity_providers(
            ctx,
            &f.at("capacityProviderStrategy"),
            v,
            cluster.as_deref(),
            catalog,
        ),
        None => Vec::new(),
    };

    let (load_balancers, lb_paths) = match f.take("loadBalancers") {
        Some(v) => load_balancers(ctx, &f.at("loadBalancers"), v),
        None => (Vec::new(), Vec::new()),
    };
    let service_registries = match (f.take("serviceRegistries"), name.as_deref()) {
        (Some(v), Some(n)) => service_registries(ctx, &f.at("serviceRegistries"), v, n),
        _ => Vec::new(),
    };

    let zp = f.at("availabilityZoneRebalancing");
    let availability_zone_rebalancing = match f.take("availabilityZoneRebalancing") {
        None => None,
        Some(v) => match v.as_str() {
            Some("ENABLED") => Some(Toggle::Enabled),
            Some("DISABLED") => Some(Toggle::Disabled),
            _ => {
                ctx.warn(
                    &zp,
                    format!(
                        "dropped availabilityZoneRebalancing {}: expected ENABLED or DISABLED",
                        show(&v)
                    ),
                    "leave it out to rebalance spread services, or set DISABLED",
                );
                None
            }
        },
    };

    aws_fields(&mut f, ctx);
    f.finish(ctx, "a service");
    if ctx.error_count() > errors_before {
        return None;
    }

    let mut deployment_configuration = deployment_configuration;
    if daemon {
        if !placement_strategy.is_empty() {
            placement_strategy.clear();
            ctx.warn(
                &key(&path, "placementStrategy"),
                "dropped placementStrategy: a DAEMON service places one task on every node",
                "nothing to do",
            );
        }
        if !capacity_provider_strategy.is_empty() {
            capacity_provider_strategy.clear();
            ctx.warn(
                &key(&path, "capacityProviderStrategy"),
                "dropped capacityProviderStrategy: a DAEMON service places one task on every node",
                "nothing to do",
            );
        }
        let dc = key(&path, "deploymentConfiguration");
        if let Some(min) = deployment_configuration
            .minimum_healthy_percent
            .filter(|m| *m >= 100)
        {
            deployment_configuration.minimum_healthy_percent = None;
            ctx.warn(
                &key(&dc, "minimumHealthyPercent"),
                format!("minimumHealthyPercent {min} would keep a DAEMON service from ever replacing its task on a node (it stops the old task first); it now defaults to 0"),
                "set a value below 100 if some tasks must stay up during deployments",
            );
        }
        if let Some(max) = deployment_configuration
            .maximum_percent
            .filter(|m| *m != 100)
        {
            deployment_configuration.maximum_percent = None;
            ctx.note(
                &key(&dc, "maximumPercent"),
                format!("dropped maximumPercent {max}: it has no effect on a DAEMON service"),
            );
        }
    } else if let Some(desired) = desired_count.filter(|n| *n > 0) {
        let dc = &deployment_configuration;
        let min = dc.min_healthy(scheduling_strategy);
        let max = dc.max_percent(scheduling_strategy);
        let floor = (u64::from(desired) * u64::from(min)).div_ceil(100);
        let cap = u64::from(desired) * u64::from(max) / 100;
        if cap <= u64::from(desired) && floor >= u64::from(desired) {
            let lowered = (u64::from(desired - 1) * 100 / u64::from(desired)) as u32;
            deployment_configuration.minimum_healthy_percent = Some(lowered);
            ctx.warn(
                &key(&key(&path, "deploymentConfiguration"), "minimumHealthyPercent"),
                format!(
                    "with desiredCount {desired}, minimumHealthyPercent {min} and maximumPercent {max} a deployment could never stop an old task nor start an extra one; minimumHealthyPercent is now {lowered}, so one task at a time is replaced"
                ),
                "raise maximumPercent instead if the nodes have room for extra tasks during a deployment",
            );
        }
    }

    Some(ServiceImport {
        file: ctx.file.clone(),
        path,
        name: name?,
        labels,
        spec: ServiceSpec {
            cluster: cluster?,
            task_definition: task_definition?,
            desired_count,
            scheduling_strategy,
            deployment_configuration,
            health_check_grace_period_seconds,
            placement_strategy,
            placement_constraints: placement_constraints_out,
            capacity_provider_strategy,
            load_balancers,
            service_registries,
            availability_zone_rebalancing,
            auto_scaling: None,
        },
        lb_paths,
        defaults: d,
    })
}

fn cluster(f: &mut Fields, ctx: &mut Ctx) -> Option<String> {
    for k in ["clusterArn", "cluster"] {
        let p = f.at(k);
        if let Some(v) = f.take(k) {
            let s = string(ctx, &p, v)?;
            let name = arn_name(&s).to_string();
            if !name_ok(&name) {
                ctx.error(
                    &p,
                    format!("cluster name `{name}` is not valid"),
                    Some("a cluster name is 1 to 255 letters, digits, `-` or `_`".into()),
                );
                return None;
            }
            return Some(name);
        }
    }
    ctx.warn(
        &f.at("clusterArn"),
        "no clusterArn; the service runs in cluster `default`, as in ECS",
        "set spec.cluster if the service belongs to another cluster",
    );
    Some("default".into())
}

/// `arn:aws:ecs:REGION:ACCOUNT:task-definition/FAMILY:REVISION`,
/// `FAMILY:REVISION` or `FAMILY` -> the family the source defines.
fn task_definition(f: &mut Fields, ctx: &mut Ctx, catalog: &Catalog) -> Option<String> {
    let p = f.at("taskDefinition");
    let Some(v) = f.take("taskDefinition") else {
        ctx.error(&p, "missing `taskDefinition`", None);
        return None;
    };
    let s = string(ctx, &p, v)?;
    let short = match s.strip_prefix("arn:") {
        Some(_) => s
            .rsplit_once("task-definition/")
            .map_or(s.as_str(), |(_, r)| r),
        None => s.as_str(),
    };
    let (family, revision) = match short.split_once(':') {
        Some((f, r)) => (f, r.parse::<u64>().ok()),
        None => (short, None),
    };
    if !name_ok(family) {
        ctx.error(
            &p,
            format!("task definition family `{family}` is not a valid name"),
            None,
        );
        return None;
    }
    let Some(known) = catalog.families.get(family) else {
        ctx.error(
            &p,
            format!("the service runs task definition `{short}`, which is not among the inputs"),
            Some(format!(
                "import its task definition in the same run, e.g. the output of `aws ecs describe-task-definition --task-definition {short}`"
            )),
        );
        return None;
    };
    match (revision, known) {
        (None, _) => {}
        (Some(r), Family { file: Some(file), revision: Some(kr) }) if r == *kr => ctx.note(
            &p,
            format!("`{short}` is now `{family}`: the revision imported from {file}; reconcile numbers its own revisions"),
        ),
        (Some(r), Family { file, revision: kr }) => {
            let from = match (file, kr) {
                (Some(file), Some(kr)) => format!("revision {kr} from {file}"),
                (Some(file), None) => format!("the definition in {file}, whose ECS revision is unknown"),
                (None, _) => "the definition already in the output directory".to_string(),
            };
            ctx.warn(
                &p,
                format!("the service ran `{short}` (revision {r}); it now runs `{family}`: {from}"),
                "check that it is the definition the service should run",
            );
        }
    }
    Some(family.to_string())
}

fn deployment(ctx: &mut Ctx, path: &str, v: Value, d: &mut Defaults) -> DeploymentConfiguration {
    let mut out = DeploymentConfiguration::default();
    let Some(mut f) = Fields::of(ctx, path.to_string(), v) else {
        return out;
    };
    if let Some(v) = f.take("minimumHealthyPercent") {
        let p = f.at("minimumHealthyPercent");
        out.minimum_healthy_percent = count(ctx, &p, v).map(|n| {
            if n > 100 {
                ctx.warn(
                    &p,
                    format!("minimumHealthyPercent {n} is above 100; set to 100"),
                    "check the value",
                );
            }
            n.min(100) as u32
        });
    }
    if let Some(v) = f.take("maximumPercent") {
        let p = f.at("maximumPercent");
        out.maximum_percent = count(ctx, &p, v).map(|n| {
            let c = n.clamp(100, 1000);
            if c != n {
                ctx.warn(
                    &p,
                    format!("maximumPercent {n} is outside 100 to 1000; set to {c}"),
                    "check the value",
                );
            }
            c as u32
        });
    }
    match f.take("deploymentCircuitBreaker") {
        Some(v) => {
            out.deployment_circuit_breaker = breaker(ctx, &f.at("deploymentCircuitBreaker"), v)
        }
        None => d.add(
            "/deploymentConfiguration/deploymentCircuitBreaker",
            json!({"enable": false, "rollback": false}),
        ),
    }
    if let Some(v) = f.take("alarms") {
        let enabled = v.get("enable").and_then(Value::as_bool) == Some(true);
        if enabled {
            ctx.warn(
                &f.at("alarms"),
                format!("dropped CloudWatch alarm monitoring of deployments ({})", show(&v)),
                "the circuit breaker (deploymentCircuitBreaker) is what stops failing deployments here",
            );
        } else {
            ctx.note(
                &f.at("alarms"),
                "dropped CloudWatch alarm settings: they were disabled",
            );
        }
    }
    if let Some(v) = f.take("strategy") {
        let p = f.at("strategy");
        if v.as_str() == Some("ROLLING") {
            ctx.note(
                &p,
                "dropped strategy ROLLING: rolling updates are how reconcile deploys",
            );
        } else {
            ctx.warn(
                &p,
                format!(
                    "dropped deployment strategy {}: reconcile deploys with rolling updates only",
                    show(&v)
                ),
                "tune minimumHealthyPercent and maximumPercent to shape the rollout",
            );
        }
    }
    for k in [
        "bakeTimeInMinutes",
        "lifecycleHooks",
        "canaryConfiguration",
        "linearConfiguration",
    ] {
        if let Some(v) = f.take(k) {
            ctx.warn(
                &f.at(k),
                format!(
                    "dropped {k} ({}): it belongs to ECS blue/green, canary and linear deployments",
                    show(&v)
                ),
                "nothing reconcile can do; deployments are rolling updates",
            );
        }
    }
    f.finish(ctx, "a deployment configuration");
    out
}

fn breaker(ctx: &mut Ctx, path: &str, v: Value) -> DeploymentCircuitBreaker {
    let mut out = DeploymentCircuitBreaker::default();
    let Some(mut f) = Fields::of(ctx, path.to_string(), v) else {
        return out;
    };
    out.enable = f
        .take("enable")
        .and_then(|v| boolean(ctx, &f.at("enable"), v))
        .unwrap_or(false);
    out.rollback = f
        .take("rollback")
        .and_then(|v| boolean(ctx, &f.at("rollback"), v))
        .unwrap_or(false);
    if let Some(v) = f.take("thresholdConfiguration") {
        let p = f.at("thresholdConfiguration");
        let parsed = serde_json::from_value::<CircuitBreakerThreshold>(v.clone())
            .ok()
            .filter(|t| (1..=1000).contains(&t.value));
        match parsed {
            Some(t) => out.threshold_configuration = Some(t),
            None => ctx.warn(
                &p,
                format!("dropped threshold {}: expected {{type: COUNT | BOUNDED_PERCENT | UNBOUNDED_PERCENT, value: 1-1000}}", show(&v)),
                "the default threshold applies (50 percent of desiredCount, 3 to 200 tasks)",
            ),
        }
    }
    f.finish(ctx, "a deployment circuit breaker");
    if out.rollback && !out.enable {
        out.rollback = false;
        ctx.warn(
            &key(path, "rollback"),
            "dropped rollback: it has no effect while the circuit breaker is disabled",
            "set enable: true to roll back failed deployments",
        );
    }
    out
}

fn strategies(ctx: &mut Ctx, path: &str, v: Value) -> Vec<PlacementStrategy> {
    let mut out = Vec::new();
    let Some(items) = array(ctx, path, v) else {
        return out;
    };
    for (k, item) in items.into_iter().enumerate() {
        let ip = index(path, k);
        let Some(mut s) = Fields::of(ctx, ip.clone(), item) else {
            continue;
        };
        let kind = s
            .take("type")
            .and_then(|v| string(ctx, &key(&ip, "type"), v));
        let field = s
            .take("field")
            .and_then(|v| string(ctx, &key(&ip, "field"), v));
        s.finish(ctx, "a placement strategy");
        let kind = match kind.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("random") => PlacementStrategyType::Random,
            Some("spread") => PlacementStrategyType::Spread,
            Some("binpack") => PlacementStrategyType::Binpack,
            other => {
                ctx.warn(
                    &ip,
                    format!("dropped a placement strategy of type {}: expected random, spread or binpack", other.unwrap_or("(none)")),
                    "fix it in the manifest if it matters",
                );
                continue;
            }
        };
        let field = match (kind, field) {
            (PlacementStrategyType::Random, Some(f)) => {
                ctx.note(
                    &key(&ip, "field"),
                    format!("dropped field `{f}`: random takes none"),
                );
                None
            }
            (PlacementStrategyType::Random, None) => None,
            (PlacementStrategyType::Binpack, Some(f))
                if f.eq_ignore_ascii_case("cpu") || f.eq_ignore_ascii_case("memory") =>
            {
                Some(f.to_ascii_lowercase())
            }
            (PlacementStrategyType::Spread, Some(f)) if spread_field_ok(&f) => {
                if f.starts_with("attribute:ecs.") {
                    ctx.warn(
                        &key(&ip, "field"),
                        format!("spread by `{f}` uses a built-in ECS attribute"),
                        "make sure the nodes declare the attribute; nodes without it count as one group",
                    );
                }
                Some(f)
            }
            (kind, f) => {
                ctx.warn(
                    &ip,
                    format!(
                        "dropped a {} strategy with field {}: spread takes instanceId, host or attribute:NAME; binpack takes cpu or memory",
                        format!("{kind:?}").to_ascii_lowercase(),
                        f.as_deref().unwrap_or("(none)")
                    ),
                    "fix it in the manifest if it matters",
                );
                continue;
            }
        };
        if out.len() >= MAX_STRATEGIES {
            ctx.warn(
                &ip,
                format!("dropped: at most {MAX_STRATEGIES} placement strategies"),
                "keep the ones that matter most",
            );
            continue;
        }
        out.push(PlacementStrategy { kind, field });
    }
    out
}

fn spread_field_ok(f: &str) -> bool {
    f == "instanceId"
        || f == "host"
        || f.strip_prefix("attribute:").is_some_and(|a| {
            (1..=128).contains(&a.len())
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.:/-".contains(c))
        })
}

/// Capacity providers in ECS are Fargate or Auto Scaling groups; neither
/// exists here. A strategy is kept only when the service's cluster is
/// already in the output directory with every provider attached.
fn capacity_providers(
    ctx: &mut Ctx,
    path: &str,
    v: Value,
    cluster: Option<&str>,
    catalog: &Catalog,
) -> Vec<CapacityProviderStrategyItem> {
    let Some(items) = array(ctx, path, v) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (k, item) in items.into_iter().enumerate() {
        let ip = index(path, k);
        let Some(mut s) = Fields::of(ctx, ip.clone(), item) else {
            ok = false;
            continue;
        };
        let provider = s
            .take("capacityProvider")
            .and_then(|v| string(ctx, &key(&ip, "capacityProvider"), v));
        let base = s
            .take("base")
            .and_then(|v| count(ctx, &key(&ip, "base"), v))
            .unwrap_or(0);
        let weight = s
            .take("weight")
            .and_then(|v| count(ctx, &key(&ip, "weight"), v))
            .unwrap_or(0);
        s.finish(ctx, "a capacity provider strategy item");
        match provider {
            Some(p) if name_ok(&p) => out.push(CapacityProviderStrategyItem {
                capacity_provider: p,
                base: base.min(100_000) as u32,
                weight: weight.min(1000) as u32,
            }),
            _ => ok = false,
        }
    }
    let names: Vec<&str> = out.iter().map(|i| i.capacity_provider.as_str()).collect();
    let attached = cluster
        .and_then(|c| catalog.clusters.get(c))
        .is_some_and(|ps| names.iter().all(|n| ps.iter().any(|p| p == n)));
    if ok && attached && !out.is_empty() {
        return out;
    }
    let fargate = names.iter().any(|n| n.starts_with("FARGATE"));
    let help = if fargate {
        "tasks run on the Docker nodes of the cluster; to split them between pools of nodes, define CapacityProvider manifests with a nodeSelector, attach them to the Cluster and set the strategy again"
    } else {
        "define CapacityProvider manifests (nodeSelector, managedScaling) for these providers, attach them to the Cluster and set the strategy again"
    };
    ctx.warn(
        path,
        format!(
            "dropped capacityProviderStrategy ({}): these capacity providers do not exist in reconcile; the cluster's default strategy applies",
            names.join(", ")
        ),
        help,
    );
    Vec::new()
}

/// ECS load balancers (`{targetGroupArn | loadBalancerName, containerName,
/// containerPort}`) become listeners on the same container port. The
/// target group's listener port and health check live in ELB, not in the
/// service, so the user is told to bring them over.
fn load_balancers(ctx: &mut Ctx, path: &str, v: Value) -> (Vec<LoadBalancer>, Vec<String>) {
    let mut out = (Vec::new(), Vec::new());
    each_object(ctx, path, v, |ctx, _, ip, mut lb| {
        let target = ["targetGroupArn", "loadBalancerName"]
            .into_iter()
            .find_map(|k| lb.take(k).map(|v| show(&v)));
        let container = lb.take("containerName");
        let port = lb.take("containerPort");
        lb.finish(ctx, "a load balancer");
        let (Some(Value::String(container)), Some(port)) = (container, port) else {
            ctx.warn(
                ip,
                "dropped a load balancer without containerName and containerPort",
                "add a listener under `loadBalancers` naming the container and port that serve the traffic",
            );
            return;
        };
        let Some(port) = port
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
        else {
            ctx.warn(
                ip,
                format!(
                    "dropped a load balancer: containerPort {} is not a port",
                    show(&port)
                ),
                "add a listener under `loadBalancers` with the container's port",
            );
            return;
        };
        ctx.warn(
            ip,
            format!(
                "load balancer {} became a listener on port {port} of every node, balancing over container `{container}` port {port} with the default health check (HTTP GET / every 5 s, 200-399)",
                target.unwrap_or_else(|| "(unnamed)".into())
            ),
            "choose the listenerPort clients should use (the ELB listener's port), and copy the target group's health check (protocol, path, interval, timeout, thresholds, matcher) and deregistration delay",
        );
        out.0.push(LoadBalancer {
            container_name: container,
            container_port: port,
            listener_port: port,
            protocol: ListenerProtocol::default(),
            algorithm: BalancingAlgorithm::default(),
            health_check: TargetHealthCheck::default(),
            deregistration_delay: DEFAULT_DEREGISTRATION_DELAY,
        });
        out.1.push(ip.to_string());
    });
    out
}

/// Cloud Map registries become a DNS name of the cluster, named after the
/// service (Cloud Map's own name lives in the registry, not the service).
fn service_registries(ctx: &mut Ctx, path: &str, v: Value, service: &str) -> Vec<ServiceRegistry> {
    let mut out = Vec::new();
    each_object(ctx, path, v, |ctx, i, ip, mut r| {
        let arn = r.take("registryArn").map(|v| show(&v));
        let srv_port = r.take("port");
        let container = r.take("containerName");
        let port = r.take("containerPort");
        r.finish(ctx, "a service registry");
        let port = port
            .or(srv_port)
            .and_then(|p| p.as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0);
        let (Some(Value::String(container)), Some(port), 0) = (container, port, i) else {
            ctx.warn(
                ip,
                "dropped a service registry: it names no containerName and containerPort, or is not the first (one DNS name per service)",
                "add an entry under `serviceRegistries` naming the container and port the SRV records give",
            );
            return;
        };
        let name = dns_label(service);
        ctx.warn(
            ip,
            format!(
                "Cloud Map registry {} became the DNS name `{name}.<cluster>.<domain>` answered by every node, with container `{container}` port {port}",
                arn.unwrap_or_else(|| "(unnamed)".into())
            ),
            "clients that used the Cloud Map namespace's name should use this one; set `name` to keep the Cloud Map service's name",
        );
        out.push(ServiceRegistry {
            // Only spelled out when the default would not be a DNS label.
            name: (name != service.to_ascii_lowercase()).then_some(name),
            container_name: container,
            container_port: port,
        });
    });
    out
}

/// A DNS label from a service name: lowercased, `_` and other characters
/// to `-`, at most 63 characters, no `-` at either end.
fn dns_label(service: &str) -> String {
    let s: String = service
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    let s = s.trim_matches('-');
    if s.is_empty() {
        "service".into()
    } else {
        s.to_string()
    }
}

/// Listener ports are unique in a cluster, never reserved and never a fixed
/// host port of the cluster's tasks; an imported listener that would break
/// that (a container port several services share, a static host port)
/// moves to the next free port, with a warning.
pub(crate) fn settle_listener_ports(
    services: &mut [ServiceImport],
    fixed: impl Fn(&str) -> Vec<u16>,
    report: &mut super::report::Report,
) {
    let mut taken: BTreeMap<String, std::collections::BTreeSet<u16>> = BTreeMap::new();
    for s in services.iter() {
        taken
            .entry(s.spec.cluster.clone())
            .or_default()
            .extend(fixed(&s.spec.task_definition));
    }
    for s in services.iter_mut() {
        let used = taken.entry(s.spec.cluster.clone()).or_default();
        let mut ctx = Ctx::new(&s.file, report);
        for (lb, path) in s.spec.load_balancers.iter_mut().zip(&s.lb_paths) {
            let wanted = lb.listener_port;
            let free = |p: &u16| !used.contains(p) && !RESERVED_PORTS.contains(p);
            let port = (wanted..=u16::MAX)
                .chain(1024..wanted)
                .find(free)
                .unwrap_or(wanted);
            if port != wanted {
                ctx.warn(
                    path,
                    format!("listener port {wanted} is taken in cluster `{}` (another listener, a fixed host port or a reserved port); the listener uses port {port}", s.spec.cluster),
                    "choose the listenerPort clients should use; it is unique in the cluster",
                );
            }
            lb.listener_port = port;
            used.insert(port);
        }
    }
}

fn aws_fields(f: &mut Fields, ctx: &mut Ctx) {
    if let Some(v) = f.take("launchType") {
        let p = f.at("launchType");
        ctx.note(
            &p,
            format!(
                "dropped launchType {}: tasks run on the Docker nodes of the cluster",
                show(&v)
            ),
        );
    }
    for k in ["platformVersion", "platformFamily"] {
        if let Some(v) = f.take(k) {
            ctx.note(
                &f.at(k),
                format!("dropped {k} {}: it selects a Fargate platform", show(&v)),
            );
        }
    }
    if let Some(v) = f.take("networkConfiguration") {
        ctx.warn(
            &f.at("networkConfiguration"),
            format!("dropped the awsvpc network configuration ({}): subnets, security groups and public IPs do not exist here", show(&v)),
            "tasks use the network of their node; open the published ports in the nodes' firewall",
        );
    }
    if let Some(v) = f.take("roleArn") {
        ctx.note(
            &f.at("roleArn"),
            format!(
                "dropped the service role `{}`: it let ECS manage load balancers",
                show(&v)
            ),
        );
    }
    for (k, what, help) in [
        (
            "serviceConnectConfiguration",
            "the Service Connect configuration",
            "reach other services through the ports they publish on their nodes",
        ),
        (
            "volumeConfigurations",
            "the EBS volume configuration",
            "use volumes of the task definition (host paths or Docker volumes) instead",
        ),
        (
            "vpcLatticeConfigurations",
            "the VPC Lattice configuration",
            "reach the service through the ports its tasks publish on their nodes",
        ),
        (
            "enableExecuteCommand",
            "ECS Exec",
            "open a shell with `docker exec` on the task's node",
        ),
    ] {
        if let Some(v) = f.take(k) {
            if v.as_bool() == Some(false) || v.as_str() == Some("DISABLED") {
                ctx.note(
                    &f.at(k),
                    format!("dropped {what} ({}): it was off", show(&v)),
                );
            } else {
                ctx.warn(
                    &f.at(k),
                    format!("dropped {what} ({}): not available", show(&v)),
                    help,
                );
            }
        }
    }
    for k in ["propagateTags", "enableECSManagedTags"] {
        if let Some(v) = f.take(k) {
            ctx.note(
                &f.at(k),
                format!("dropped {k} {}: reconcile does not tag tasks", show(&v)),
            );
        }
    }
    if let Some(v) = f.take("deploymentController") {
        let p = f.at("deploymentController");
        let kind = v.get("type").and_then(Value::as_str).unwrap_or("ECS");
        if kind == "ECS" {
            ctx.note(
                &p,
                "dropped deploymentController ECS: reconcile's deployments are ECS rolling updates",
            );
        } else {
            ctx.warn(
                &p,
                format!("dropped deploymentController {kind}: deployments are now rolling updates run by reconcile"),
                "tune deploymentConfiguration to shape the rollout",
            );
        }
    }
}
