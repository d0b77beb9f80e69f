//! `reconcile agent`: runs on a node, heartbeats to the controller with the
//! tasks its Docker engine runs, and converges the engine to the tasks the
//! controller assigns: starts the missing ones, stops and removes anything
//! else it owns.
//!
//! Ownership is the Docker labels of standalone mode with this node as the
//! owner, so a restarted agent finds its containers and keeps the ones
//! still assigned: nothing is restarted.

mod controllers;
mod credential;
mod logs;
pub mod stats;
use crate::serving;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::runtime::docker::DockerRuntime;
use crate::runtime::{Launch, Runtime};
use crate::secrets::SecretValue;
use crate::wire::{Assignment, Changes, Heartbeat, HeartbeatReply};

#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL of the controller, e.g. `http://10.0.0.1:7700`; for
    /// controllers sharing a store, each of their URLs, comma-separated.
    pub controller: String,
    pub cluster: String,
    pub name: String,
    pub attributes: BTreeMap<String, String>,
    /// The join token: used only to get the node's own credential.
    pub join_token: Option<String>,
    /// Where the node's credential is kept.
    pub credential_file: std::path::PathBuf,
    /// Offer less than the engine has (more only with `allow_overcommit`).
    pub cpu: Option<u32>,
    pub memory: Option<u32>,
    pub allow_overcommit: bool,
    /// Host ports reserved besides the standard ones.
    pub reserved_ports: Vec<u16>,
    /// Whom to trust with the token: a pinned CA, a CA file, plain HTTP.
    pub trust: crate::tls::Trust,
    /// Where `valueFrom: node:NAME` is read: the file NAME of this
    /// directory. None: such tasks do not start.
    pub secrets_dir: Option<std::path::PathBuf>,
    /// Where other nodes reach this node's tasks; None: the address of
    /// the route to the controller.
    pub address: Option<std::net::IpAddr>,
    /// Where listeners are served.
    pub listen_address: std::net::IpAddr,
    pub dns: Dns,
    /// Serve Prometheus metrics there, to the bearer of its token.
    pub metrics: Option<crate::metrics::agent::Endpoint>,
    /// How often running tasks' usage is sampled; zero: never.
    pub stats_interval: Duration,
}

/// Where the node answers service DNS names for its containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dns {
    Off,
    /// On the node's address (port 53).
    AtAddress,
    At(std::net::IpAddr),
}

/// The owner label of a node's containers.
pub fn owner(cluster: &str, name: &str) -> String {
    format!("node.{cluster}.{name}")
}

/// An action (start, stop, remove) on a task.
struct Action {
    starting: bool,
    /// When it ended; None while under way.
    ended: Option<std::time::Instant>,
}

/// Tasks with an action under way, or ended after the last observation
/// began: never two actions at once, and no action decided from an
/// observation that predates the last one's end. Without the second rule
/// a start that ended while a heartbeat was in flight looked missing to
/// that heartbeat's reply and was started again; the second start's name
/// conflict then removed the first one's container.
type InFlight = Arc<Mutex<std::collections::HashMap<String, Action>>>;

/// Claim `id` for an action decided from an observation that began at
/// `observed`.
fn claim(inflight: &InFlight, id: &str, starting: bool, observed: std::time::Instant) -> bool {
    let mut m = inflight.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(a) = m.get(id) {
        if a.ended.is_none_or(|t| t >= observed) {
            return false;
        }
    }
    m.insert(
        id.to_string(),
        Action {
            starting,
            ended: None,
        },
    );
    true
}

/// Forget actions that ended before an observation began at `observed`:
/// it shows their outcome.
fn forget_observed(inflight: &InFlight, observed: std::time::Instant) {
    inflight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|_, a| a.ended.is_none_or(|t| t >= observed));
}

/// A task whose start is under way shows as PENDING: its containers may be
/// created and not yet running, which Docker alone cannot tell from a start
/// that was interrupted.
fn mark_starting(starting: &HashSet<String>, tasks: &mut [crate::model::Task]) {
    for t in tasks {
        if starting.contains(&t.identity.id) && t.last_status == crate::model::TaskStatus::Stopped {
            t.last_status = crate::model::TaskStatus::Pending;
            t.stop_code = None;
            t.stopped_reason = None;
        }
    }
}

fn release(inflight: &InFlight, id: &str) {
    if let Some(a) = inflight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(id)
    {
        a.ended = Some(std::time::Instant::now());
    }
}

/// Tasks that failed before any container existed (a `node:` secret that
/// cannot be read): the engine cannot show them, so they are reported
/// STOPPED, with why, until they are no longer assigned.
type Failed = Arc<Mutex<BTreeMap<String, crate::model::Task>>>;

/// The launch of an assignment, its `node:` secrets read from
/// `secrets_dir`; else the task, STOPPED with the reason.
fn launch_of(
    a: Assignment,
    node: &str,
    secrets_dir: Option<&std::path::Path>,
) -> Result<Launch, Box<crate::model::Task>> {
    let mut secrets: BTreeMap<String, SecretValue> = a
        .secrets
        .into_iter()
        .map(|(k, v)| (k, SecretValue::new(v)))
        .collect();
    for r in &a.node_secrets {
        let name = r.strip_prefix("node:").unwrap_or(r);
        let value = match secrets_dir {
            Some(dir) => crate::secrets::read_named(dir, name).map_err(|e| {
                format!(
                    "secret `{r}` cannot be read from this node's secrets directory `{}`: {e}",
                    dir.display()
                )
            }),
            None => Err(format!(
                "secret `{r}`: this node has no secrets directory (agent option `--secrets-dir DIR`)"
            )),
        };
        match value {
            Ok(v) => {
                secrets.insert(r.clone(), v);
            }
            Err(why) => {
                return Err(Box::new(crate::model::Task {
                    identity: a.identity,
                    node: node.to_string(),
                    last_status: crate::model::TaskStatus::Stopped,
                    health: crate::model::Health::Unknown,
                    started_at: None,
                    stop_code: Some("TaskFailedToStart".into()),
                    stopped_reason: Some(why),
                    bindings: Vec::new(),
                    target_health: None,
                    exits: Vec::new(),
                    stopped_at: None,
                }))
            }
        }
    }
    Ok(Launch {
        identity: a.identity,
        node: node.to_string(),
        spec: a.spec,
        secrets,
    })
}

/// Run until the process ends; errors reaching the controller or Docker
/// are logged and retried with backoff.
pub async fn run(config: Config) -> Result<(), String> {
    let collector = stats::Collector::default();
    let mut metrics = crate::metrics::agent::AgentMetrics::new();
    let usage = collector.clone();
    metrics.usage_from(Box::new(move || usage.snapshot()));
    let metrics = Arc::new(metrics);
    if let Some(endpoint) = &config.metrics {
        crate::metrics::agent::serve(endpoint.clone(), metrics.clone()).await?;
    }
    let rt = Arc::new(
        DockerRuntime::connect(&owner(&config.cluster, &config.name), &config.name)
            .await
            .map_err(|e| e.message)?
            .observed_by(metrics.clone()),
    );
    collector.start(rt.clone(), config.stats_interval);
    let mut controllers = controllers::Controllers::new(&config.controller);
    let client = crate::tls::client(&config.controller, &config.trust, Duration::from_secs(10))?;
    // Log uploads last as long as a reader follows: a client of its own,
    // bounded at a day.
    let upload_client = crate::tls::client(
        &config.controller,
        &config.trust,
        Duration::from_secs(24 * 3600),
    )?;
    let uploads_to = |base: &str| {
        logs::Uploads::new(
            upload_client.clone(),
            base,
            &config.name,
            config.secrets_dir.clone(),
        )
    };
    let mut url = controllers.url(&format!("/v1/nodes/{}/heartbeat", config.name));
    let mut changes_url = controllers.url(&format!("/v1/nodes/{}/changes", config.name));
    let mut uploads = uploads_to(controllers.current());
    let credential = credential::Credential::new(
        config.credential_file.clone(),
        &config.controller,
        &config.cluster,
        &config.name,
    );
    let mut held = credential.load();
    let mut warned_capacity = false;
    let inflight: InFlight = Arc::default();
    let failed: Failed = Arc::default();
    // An action that ends wakes the loop: its outcome is reported now.
    let wake = Arc::new(tokio::sync::Notify::new());
    let permits = Arc::new(tokio::sync::Semaphore::new(ACTIONS));
    let mut backoff = Duration::from_millis(500);
    let mut connected = false;
    let address = match config.address {
        Some(a) => Some(a),
        None => route_address(controllers.current()).await,
    };
    let dns_ip = match config.dns {
        Dns::Off => None,
        Dns::At(ip) => Some(ip),
        Dns::AtAddress => address,
    };
    let mut serving = serving::Serving::new(config.listen_address, dns_ip);
    let mut checks_changed = serving.checks_changed();
    // Whether each assigned task's definition has container health checks,
    // for folding target health into task health.
    let mut container_checks: BTreeMap<String, bool> = BTreeMap::new();
    tracing::info!(
        node = %config.name,
        cluster = %config.cluster,
        "agent: node {} of cluster {} reporting to {}",
        config.name,
        config.cluster,
        config.controller
    );
    loop {
        let began = tokio::time::Instant::now();
        // Taken before observing: a start that ends in between still shows
        // as PENDING, never as an interrupted start.
        let observed = std::time::Instant::now();
        let starting: HashSet<String> = inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, a)| a.starting && a.ended.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        let mut obs = match rt.observe().await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!("agent: cannot observe Docker: {}", e.message);
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        forget_observed(&inflight, observed);
        mark_starting(&starting, &mut obs.tasks);
        metrics.observed(&obs.tasks);
        let token = match &held {
            Some(t) => t.clone(),
            None => {
                let joined = match &config.join_token {
                    Some(j) => credential.join(&client, controllers.current(), j).await,
                    None => Err(format!(
                        "no credential in `{}` and no join token to get one",
                        config.credential_file.display()
                    )),
                };
                match joined {
                    Ok(t) => {
                        tracing::info!("agent: joined as node {}", config.name);
                        held = Some(t.clone());
                        t
                    }
                    Err(e) => {
                        tracing::warn!("agent: {e}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
        };
        obs.tasks.extend(
            failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .cloned(),
        );
        serving.fold(&mut obs.tasks, |t| {
            container_checks
                .get(&t.identity.id)
                .copied()
                .unwrap_or(false)
        });
        let engine = obs.nodes.first().cloned();
        let (cpu, memory, capped) = capacity(&config, engine.as_ref());
        if capped && !warned_capacity {
            tracing::warn!(
                "agent: --cpu/--memory exceed what the engine has; offering {cpu} CPU units and \
                 {memory} MiB (--allow-overcommit offers more)"
            );
        }
        warned_capacity |= capped;
        let mut attributes = engine
            .as_ref()
            .map(|n| n.attributes.clone())
            .unwrap_or_default();
        attributes.extend(config.attributes.clone());
        let hb = Heartbeat {
            cluster: config.cluster.clone(),
            attributes,
            cpu,
            memory,
            reserved_ports: crate::scheduler::RESERVED_PORTS
                .iter()
                .chain(config.reserved_ports.iter())
                .copied()
                .collect(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            tasks: obs.tasks.clone(),
            compact: true,
            address,
            traffic_generation: serving.generation(),
            inflight: serving.inflight(),
            served: serving.served(),
            usage: collector.snapshot(),
        };
        let sent = std::time::Instant::now();
        let reply = client.post(&url).bearer_auth(&token).json(&hb).send().await;
        metrics.heartbeat(
            sent.elapsed(),
            reply.as_ref().is_ok_and(|r| r.status().is_success()),
        );
        let reply: Result<HeartbeatReply, String> = match reply {
            Ok(r) if r.status().is_success() => r.json().await.map_err(|e| e.to_string()),
            Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED => {
                let body = r.text().await.unwrap_or_default();
                // Removed, forgotten, or a store that was reset: the
                // credential is worthless; join again if a join token is
                // at hand.
                tracing::warn!("agent: the controller refused this node's credential: {body}");
                credential.discard();
                held = None;
                continue;
            }
            Ok(r) => {
                let status = r.status();
                let leader = r
                    .headers()
                    .get(crate::controller::standby::LEADER_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(String::from);
                let body = r.text().await.unwrap_or_default();
                let standing_by = status == reqwest::StatusCode::SERVICE_UNAVAILABLE;
                let asked = controllers.current().to_string();
                if standing_by && controllers.move_on(leader.as_deref()) {
                    url = controllers.url(&format!("/v1/nodes/{}/heartbeat", config.name));
                    changes_url = controllers.url(&format!("/v1/nodes/{}/changes", config.name));
                    uploads = uploads_to(controllers.current());
                    // A follower that names the leader: straight on to it;
                    // with no leader yet, after the backoff.
                    if leader.is_some() && controllers.current() != asked {
                        tracing::info!(
                            "agent: reporting to {} (the leader)",
                            controllers.current()
                        );
                        continue;
                    }
                }
                Err(format!(
                    "controller refused the heartbeat ({status}): {body}"
                ))
            }
            Err(e) => {
                let e = crate::tls::errors::reaching(&e, controllers.current(), &url);
                if controllers.move_on(None) {
                    tracing::warn!("agent: {e}; trying {}", controllers.current());
                    url = controllers.url(&format!("/v1/nodes/{}/heartbeat", config.name));
                    changes_url = controllers.url(&format!("/v1/nodes/{}/changes", config.name));
                    uploads = uploads_to(controllers.current());
                }
                Err(e)
            }
        };
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                if connected {
                    tracing::warn!("agent: {e}");
                    connected = false;
                } else if backoff >= Duration::from_secs(4) {
                    tracing::warn!("agent: {e}");
                }
                // Keep running what is there: the controller decides.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if !connected {
            tracing::info!(
                "agent: connected; {} task(s) assigned, {} owned",
                reply.assignments.len() + reply.kept.len(),
                obs.tasks.len()
            );
            connected = true;
        }
        backoff = Duration::from_millis(500);
        let wait = Duration::from_millis(reply.heartbeat_millis.clamp(100, 60_000));
        let mut generation = reply.generation;
        let act = |reply: HeartbeatReply,
                   resolver: Option<(std::net::IpAddr, String)>,
                   container_checks: &mut BTreeMap<String, bool>| {
            for a in &reply.assignments {
                container_checks.insert(
                    a.identity.id.clone(),
                    a.spec
                        .container_definitions
                        .iter()
                        .any(|c| c.essential && c.health_check.is_some()),
                );
            }
            converge(
                &rt,
                (&config.name, config.secrets_dir.as_deref()),
                &failed,
                &inflight,
                &permits,
                &wake,
                (&obs.tasks, observed),
                resolver.as_ref(),
                reply,
            )
        };
        // What to serve first: tasks started now get the node's resolver.
        let mut reply = reply;
        uploads.start(rt.docker(), &token, std::mem::take(&mut reply.logs));
        let acked = serving.generation();
        if let Some(t) = reply.traffic.take() {
            serving.apply(t).await;
        }
        container_checks.retain(|id, _| obs.tasks.iter().any(|t| &t.identity.id == id));
        act(
            reply,
            serving.resolver(&config.cluster),
            &mut container_checks,
        );
        // A new generation is acknowledged at once: a drain waits for it.
        let mut report_soon = serving.generation() != acked;
        // The next heartbeat: at the interval, or as soon as an action here
        // ends (its outcome is reported). Assignments changed meanwhile are
        // acted on as the long poll brings them, against this observation:
        // an action that ended after it was taken is never decided again
        // (`claim`), and observing a thousand containers for every change
        // would cost more than the change.
        loop {
            // A node draining targets reports often until their requests
            // are done; one with news of traffic at once.
            let due = if report_soon {
                began
            } else if serving.draining() {
                began + DRAIN_REPORT.min(wait)
            } else {
                began + wait
            };
            tokio::select! {
                _ = tokio::time::sleep_until(due) => break,
                _ = wake.notified() => break,
                _ = checks_changed.changed() => break,
                c = changed(&client, &changes_url, &token, generation, wait) => match c {
                    Changed::Logs(asks) => uploads.start(rt.docker(), &token, asks),
                    Changed::Assignments(Some(mut reply)) => {
                        generation = reply.generation;
                        uploads.start(rt.docker(), &token, std::mem::take(&mut reply.logs));
                        if let Some(t) = reply.traffic.take() {
                            let before = serving.generation();
                            serving.apply(t).await;
                            report_soon |= serving.generation() != before;
                        }
                        act(reply, serving.resolver(&config.cluster), &mut container_checks);
                    }
                    // A controller that sends no assignments: heartbeat.
                    Changed::Assignments(None) => break,
                },
            }
        }
        // A burst of ending actions is reported together.
        tokio::time::sleep_until(began + MIN_GAP.min(wait)).await;
    }
}

/// The CPU units and MiB to offer: what the operator asked for, capped at
/// what the engine has unless overcommitting is allowed; and whether it
/// was capped.
fn capacity(config: &Config, engine: Option<&crate::model::NodeInfo>) -> (u32, u32, bool) {
    let (has_cpu, has_memory) = engine.map_or((0, 0), |n| (n.cpu, n.memory));
    let pick = |asked: Option<u32>, has: u32| match asked {
        Some(a) if a > has && !config.allow_overcommit => (has, true),
        Some(a) => (a, false),
        None => (has, false),
    };
    let (cpu, c1) = pick(config.cpu, has_cpu);
    let (memory, c2) = pick(config.memory, has_memory);
    (cpu, memory, c1 || c2)
}

/// The shortest time between two heartbeats' starts.
const MIN_GAP: Duration = Duration::from_millis(100);

/// How often a node reports while requests to draining targets are in
/// flight: the controller stops their tasks once they are done.
const DRAIN_REPORT: Duration = Duration::from_millis(250);

/// This host's address on the route to the controller: where other nodes
/// reach it, without configuration, on most networks.
async fn route_address(controller: &str) -> Option<std::net::IpAddr> {
    let url = reqwest::Url::parse(controller).ok()?;
    let host = url.host_str()?.trim_matches(['[', ']']).to_string();
    let host_port = (host, url.port_or_known_default()?);
    let target = tokio::net::lookup_host(host_port).await.ok()?.next()?;
    let bind: std::net::SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(bind).await.ok()?;
    // A UDP "connect" sends nothing: it only picks the route and source.
    socket.connect(target).await.ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// What the long poll brought.
enum Changed {
    /// The assignment generation changed: the node's assignments when the
    /// controller sends them.
    Assignments(Option<HeartbeatReply>),
    /// Log sessions to open, nothing else changed.
    Logs(Vec<crate::wire::LogAsk>),
}

/// Return once the controller's assignment generation differs from
/// `after`, or it asks for log sessions. Never returns when the long poll
/// fails (e.g. a controller that lacks it): the heartbeat interval takes
/// over.
async fn changed(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    after: u64,
    wait: Duration,
) -> Changed {
    // Within the HTTP client's timeout; the caller's interval bounds the rest.
    let hold = wait.min(Duration::from_secs(5)).as_millis();
    loop {
        let r = client
            .get(format!("{url}?after={after}&timeoutMillis={hold}"))
            .bearer_auth(token)
            .send()
            .await;
        let Ok(r) = r else {
            return std::future::pending().await;
        };
        if !r.status().is_success() {
            return std::future::pending().await;
        }
        match r.json::<Changes>().await {
            Ok(c) if c.generation != after => {
                return Changed::Assignments(c.assignments.map(|mut r| {
                    r.logs.extend(c.logs);
                    r
                }))
            }
            Ok(c) if !c.logs.is_empty() => return Changed::Logs(c.logs),
            Ok(_) => {}
            Err(_) => return std::future::pending().await,
        }
    }
}

/// Docker actions under way at once: a node assigned a thousand tasks
/// starts them sixteen at a time instead of flooding its engine.
const ACTIONS: usize = 16;

/// Start what is assigned and missing, stop what is owned and unassigned.
/// Each action runs in its own task so heartbeats go on meanwhile.
#[allow(clippy::too_many_arguments)]
fn converge(
    rt: &Arc<DockerRuntime>,
    (node, secrets_dir): (&str, Option<&std::path::Path>),
    failed: &Failed,
    inflight: &InFlight,
    permits: &Arc<tokio::sync::Semaphore>,
    wake: &Arc<tokio::sync::Notify>,
    (local, observed): (&[crate::model::Task], std::time::Instant),
    resolver: Option<&(std::net::IpAddr, String)>,
    reply: HeartbeatReply,
) {
    let HeartbeatReply {
        assignments, kept, ..
    } = reply;
    let assigned: HashSet<&str> = assignments
        .iter()
        .map(|a| a.identity.id.as_str())
        .chain(kept.iter().map(String::as_str))
        .collect();
    for t in local {
        if assigned.contains(t.identity.id.as_str()) {
            continue;
        }
        // A task that never got a container has nothing to stop.
        if failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&t.identity.id)
            .is_some()
        {
            continue;
        }
        if !claim(inflight, &t.identity.id, false, observed) {
            continue;
        }
        let (rt, inflight, id, live) = (
            rt.clone(),
            inflight.clone(),
            t.identity.id.clone(),
            t.is_live(),
        );
        let (permits, wake) = (permits.clone(), wake.clone());
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let r = if live {
                tracing::info!(task = %id, "agent: stopping task {id}: no longer assigned to this node");
                rt.stop(&id, "no longer assigned to this node").await
            } else {
                rt.remove(&id).await
            };
            if let Err(e) = r {
                tracing::warn!(task = %id, "agent: task {id}: {}", e.message);
            }
            release(&inflight, &id);
            wake.notify_one();
        });
    }
    let present: HashSet<&str> = local.iter().map(|t| t.identity.id.as_str()).collect();
    let live: HashSet<&str> = local
        .iter()
        .filter(|t| t.is_live())
        .map(|t| t.identity.id.as_str())
        .collect();
    for a in assignments {
        // Stopped by request: its containers stop and stay, for their exit
        // codes and logs, until the task is unassigned.
        if a.stop {
            if live.contains(a.identity.id.as_str())
                && claim(inflight, &a.identity.id, false, observed)
            {
                let (rt, inflight, id) = (rt.clone(), inflight.clone(), a.identity.id.clone());
                let (permits, wake) = (permits.clone(), wake.clone());
                tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    tracing::info!(task = %id, "agent: stopping task {id}: stop requested");
                    if let Err(e) = rt.halt(&id).await {
                        tracing::warn!(task = %id, "agent: task {id}: {}", e.message);
                    }
                    release(&inflight, &id);
                    wake.notify_one();
                });
            }
            continue;
        }
        // A task the controller has seen running is never started again
        // here: if it is gone, the controller decides what replaces it.
        if a.reported
            || present.contains(a.identity.id.as_str())
            || !claim(inflight, &a.identity.id, true, observed)
        {
            continue;
        }
        let (rt, inflight, id) = (rt.clone(), inflight.clone(), a.identity.id.clone());
        let launch = match launch_of(a, node, secrets_dir) {
            Ok(mut l) => {
                if let Some(r) = resolver {
                    use_resolver(&mut l.spec, r);
                }
                l
            }
            Err(task) => {
                let why = task.stopped_reason.clone().unwrap_or_default();
                tracing::warn!(task = %id, "agent: task {id} not started: {why}");
                failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id.clone(), *task);
                release(&inflight, &id);
                wake.notify_one();
                continue;
            }
        };
        let (permits, wake) = (permits.clone(), wake.clone());
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            tracing::info!(
                task = %id,
                "agent: starting task {id} ({}:{})",
                launch.identity.family,
                launch.identity.revision
            );
            if let Err(e) = rt.start(launch).await {
                tracing::warn!(task = %id, "agent: task {id}: {}", e.message);
            }
            release(&inflight, &id);
            wake.notify_one();
        });
    }
}

/// Containers of bridge-mode tasks resolve through this node's DNS
/// server (service names first, the rest forwarded), unless they name
/// their own resolvers; the cluster's domain is searched, so a service's
/// short name resolves too.
fn use_resolver(
    spec: &mut crate::manifest::TaskDefinitionSpec,
    (ip, search): &(std::net::IpAddr, String),
) {
    if spec.network_mode != crate::manifest::task_definition::NetworkMode::Bridge {
        return;
    }
    for c in &mut spec.container_definitions {
        if c.dns_servers.is_empty() {
            c.dns_servers = vec![ip.to_string()];
            if c.dns_search_domains.is_empty() {
                c.dns_search_domains = vec![search.clone()];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn node_secrets_are_read_here_or_the_task_stops_saying_why() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        std::fs::write(secrets.join("token"), "node-value\n").unwrap();
        std::fs::write(dir.path().join("outside"), "outside-value").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), secrets.join("link")).unwrap();
        let assignment = |refs: &[&str]| Assignment {
            identity: crate::model::TaskIdentity {
                id: "t1".into(),
                cluster: "c".into(),
                service: Some("s".into()),
                family: "f".into(),
                revision: 1,
                config_hash: "h".into(),
                started_by: None,
            },
            spec: serde_json::from_value(serde_json::json!({
                "containerDefinitions": [{"name": "a", "image": "busybox:stable"}]
            }))
            .unwrap(),
            reported: false,
            stop: false,
            secrets: BTreeMap::from([("db".to_string(), "stored".to_string())]),
            node_secrets: refs.iter().map(|r| r.to_string()).collect(),
        };
        let l = launch_of(assignment(&["node:token"]), "n1", Some(&secrets)).unwrap();
        assert_eq!(l.secrets["node:token"].expose(), "node-value");
        assert_eq!(l.secrets["db"].expose(), "stored");
        for (refs, dir, why) in [
            (&["node:link"][..], Some(secrets.as_path()), "symlink"),
            (
                &["node:../outside"][..],
                Some(secrets.as_path()),
                "secret name",
            ),
            (&["node:missing"][..], Some(secrets.as_path()), "missing"),
            (&["node:token"][..], None, "--secrets-dir"),
        ] {
            let t = launch_of(assignment(refs), "n1", dir).unwrap_err();
            let reason = t.stopped_reason.unwrap();
            assert_eq!(t.last_status, crate::model::TaskStatus::Stopped);
            assert!(reason.contains(refs[0]) && reason.contains(why), "{reason}");
            assert!(!reason.contains("value"), "{reason}");
        }
    }

    #[test]
    fn an_action_that_ended_after_the_observation_began_is_not_repeated() {
        let inflight: InFlight = Arc::default();
        let before = Instant::now();
        assert!(claim(&inflight, "t", true, before));
        // Under way: never a second action.
        assert!(!claim(&inflight, "t", true, Instant::now()));
        // It ends while a heartbeat decided from an observation taken
        // earlier is in flight: that observation cannot show it.
        std::thread::sleep(Duration::from_millis(2));
        release(&inflight, "t");
        assert!(!claim(&inflight, "t", true, before));
        // An observation begun after its end shows the outcome: forgotten,
        // and a new action may be decided from it.
        std::thread::sleep(Duration::from_millis(2));
        let after = Instant::now();
        forget_observed(&inflight, after);
        assert!(inflight.lock().unwrap().is_empty());
        assert!(claim(&inflight, "t", false, after));
    }
}
