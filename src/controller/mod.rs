//! `reconcile controller`: follows a source and converges a fleet of nodes,
//! each running `reconcile agent`.
//!
//! The controller is the standalone planner and apply executor with a
//! different [`Runtime`]: [`Fleet`] observes the tasks agents report and
//! "starts" a task by assigning it to the node the plan chose; the agent
//! then runs it on its Docker engine and reports it. So what a controller
//! does is what `plan` shows, exactly as in standalone mode.
//!
//! Invariants:
//! - An agent runs exactly the tasks assigned to it and stops anything else
//!   it owns. Assignments are stored before they are served, so a restarted
//!   controller tells its agents to keep what they run.
//! - The observed state holds assigned tasks only: a task reported by a node
//!   but no longer assigned (being stopped, or left on a node that was lost
//!   and came back) is never counted, so it is never duplicated.
//! - A node that misses heartbeats for `node_timeout` is LOST: its
//!   assignments are dropped, and the next plan places its service tasks
//!   elsewhere.

pub mod http;
pub mod launcher;
pub mod openapi;
pub mod scaling;
pub mod store;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::apply;
use crate::model::{self, DesiredState, Health, NodeInfo, ObservedState, Task, TaskStatus};
use crate::plan::{self, render};
use crate::runtime::{Launch, Observation, Runtime, RuntimeError};
use crate::secrets::{Resolver, SecretValue};
use crate::source;
use crate::store::Stored;
use crate::validate;
use crate::wire::{
    Assignment, Changes, EventRecord, Heartbeat, HeartbeatReply, NodeStatus, NodeView, ServiceView,
    StatusReply,
};
use store::{AssignmentRecord, Db, NodeRecord};

/// Where the controller reads its desired state.
#[derive(Debug, Clone)]
pub enum Source {
    /// A directory, watched for changes.
    Dir(PathBuf),
    /// A git branch, fetched every interval and on webhook or sync.
    Git(crate::git::GitSource),
}

impl Source {
    pub fn display(&self) -> String {
        match self {
            Source::Dir(p) => p.display().to_string(),
            Source::Git(g) => format!("git+{}", g.display()),
        }
    }
}

/// The commit a desired state was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub id: String,
    pub summary: String,
}

impl Commit {
    fn short(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }
}

/// How a controller runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: Source,
    /// Secret shared with the git host for `POST /v1/webhook`
    /// (`X-Hub-Signature-256`); the API token is accepted too.
    pub webhook_secret: Option<String>,
    /// With a git source: every new commit must carry an SSH signature by a
    /// key of this allowed signers file.
    pub allowed_signers: Option<PathBuf>,
    /// Armored OpenPGP public keys allowed to sign commits.
    pub allowed_gpg_keys: Option<PathBuf>,
    pub data_dir: PathBuf,
    /// Agents present this token.
    pub join_token: String,
    /// The CLI presents this token.
    pub api_token: String,
    /// Reconcile at least this often (also on every node change).
    pub interval: Duration,
    /// Agents heartbeat this often.
    pub heartbeat: Duration,
    /// A node silent this long is LOST.
    pub node_timeout: Duration,
    /// Tasks without a health check count as healthy after running this
    /// long.
    pub settle: Duration,
    /// A rollout step gives up after this long.
    pub step_timeout: Duration,
    /// Apply plans that delete more than half of the services without an
    /// approval.
    pub allow_mass_delete: bool,
    /// The URL nodes launched by managed scaling reach the controller at.
    pub advertise_url: String,
    /// The CA those nodes trust (with TLS).
    pub ca_cert: Option<PathBuf>,
}

/// Live state of a node: its record plus what its agent last said.
struct Node {
    record: NodeRecord,
    last_seen: Option<Instant>,
    reported: Vec<Task>,
}

/// State shared by the HTTP handlers, the reconcile loop and the runtime.
struct State {
    nodes: BTreeMap<String, Node>,
    /// Task id -> assignment (with secret values, in memory only).
    assignments: BTreeMap<String, AssignmentRecord>,
    events: VecDeque<(u64, EventRecord)>,
    next_event: u64,
    /// Clusters the source defines; agents of other clusters are refused.
    clusters: BTreeSet<String>,
    last_error: Option<String>,
    stored: Stored,
    /// The desired state of the last valid source.
    desired: Option<DesiredState>,
    /// Tasks the last plan could not place, by service key.
    unplaced: BTreeMap<String, u32>,
    /// Nodes launched by managed scaling that have not joined yet.
    joining: BTreeMap<String, (String, Instant)>,
    /// The commit last fetched, and the one last applied in full.
    fetched: Option<Commit>,
    applied: Option<Commit>,
    /// Commit each resource (by plan address) was last changed from.
    commits: BTreeMap<String, String>,
    /// Suspended: the source is still read and reported, nothing applied.
    suspended: bool,
    /// The last commit whose range passed signature verification.
    verified: Option<String>,
    /// Consecutive failed fetches; no fetch before the instant unless
    /// `fetch_now` (a sync or webhook) asks for one.
    fetch_failures: u32,
    fetch_backoff: Option<Instant>,
    fetch_now: bool,
    /// The failed fetch of this pass: it goes on with the commit fetched
    /// last and reports this.
    fetch_error: Option<String>,
    /// A mass deletion approved once (`sync --allow-mass-delete`): for
    /// this commit, or for the next pass of a directory source (`None`).
    mass_delete_approved: Option<Option<String>>,
    /// Services whose rollout the user asked to abort.
    aborts: BTreeSet<String>,
    /// An apply is running (it owns the stored state until it ends).
    applying: bool,
    /// Rollbacks asked for while an apply ran: (service, revision, reason),
    /// carried out at the start of the next pass.
    pending: Vec<(String, Option<u32>, String)>,
    /// Reconcile passes completed, and whether one is under way.
    passes: u64,
    in_pass: bool,
}

const ABORTED: &str = "deployment aborted by the user";
const ROLLED_BACK: &str = "rolled back by the user";

pub struct Controller {
    config: Config,
    db: Db,
    state: Mutex<State>,
    started: Instant,
    /// Wakes the reconcile loop early (node joined or lost, sync request).
    wake: Notify,
    /// Bumped whenever assignments change: agents waiting on
    /// `/v1/nodes/{name}/changes` heartbeat at once instead of at their
    /// next interval, and the long poll carries the node's assignments,
    /// so a start or stop reaches a node in one round trip.
    assigned: tokio::sync::watch::Sender<u64>,
    /// Bumped on every heartbeat: a stop waiting for its node to report
    /// the task gone looks again at once.
    reported: tokio::sync::watch::Sender<u64>,
    resolver: Resolver,
    /// Per-file validation results of the last read: a pass re-checks only
    /// the files a commit changed.
    files: Mutex<validate::FileCache>,
    /// Launches nodes for managed scaling; connected on first need.
    launcher: tokio::sync::OnceCell<Result<launcher::Launcher, String>>,
}

/// How long to wait before fetching again after `failures` failed
/// fetches in a row: the interval, doubling with each failure, capped at
/// five minutes (or the interval, if that is longer).
fn fetch_backoff(interval: Duration, failures: u32) -> Duration {
    let cap = interval.max(Duration::from_secs(300));
    interval
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(cap)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Write a log line. Messages never hold secret values or tokens: they are
/// built from names, ids and the plan, which holds fingerprints only.
pub fn log(message: &str) {
    eprintln!("{} {message}", unix_now());
}

impl Controller {
    pub fn open(config: Config) -> Result<Arc<Controller>, String> {
        let db = Db::open(&config.data_dir).map_err(|e| e.to_string())?;
        let loaded = db.load().map_err(|e| e.to_string())?;
        let resolver = match &config.source {
            Source::Dir(p) => Resolver::for_source(p),
            // A repository holds no secrets: they live next to the data.
            Source::Git(_) => Resolver::for_source(&config.data_dir),
        };
        let mut nodes = BTreeMap::new();
        for r in loaded.nodes {
            nodes.insert(
                r.info.name.clone(),
                Node {
                    record: r,
                    last_seen: None,
                    reported: Vec::new(),
                },
            );
        }
        let mut assignments = BTreeMap::new();
        for mut a in loaded.assignments {
            // Secret values are not stored: resolve them again.
            a.task.secrets = resolve_secrets(&resolver, &a.task.spec);
            assignments.insert(a.task.id.clone(), a);
        }
        let next_event = loaded.events.last().map(|(k, _)| k + 1).unwrap_or(0);
        Ok(Arc::new(Controller {
            config,
            db,
            state: Mutex::new(State {
                nodes,
                assignments,
                events: loaded.events.into_iter().collect(),
                next_event,
                clusters: BTreeSet::new(),
                last_error: None,
                stored: loaded.stored,
                desired: None,
                unplaced: BTreeMap::new(),
                joining: BTreeMap::new(),
                fetched: None,
                applied: None,
                commits: loaded.commits,
                suspended: loaded.suspended,
                verified: None,
                fetch_failures: 0,
                fetch_backoff: None,
                fetch_now: false,
                fetch_error: None,
                mass_delete_approved: None,
                aborts: BTreeSet::new(),
                applying: false,
                pending: Vec::new(),
                passes: 0,
                in_pass: false,
            }),
            started: Instant::now(),
            wake: Notify::new(),
            assigned: tokio::sync::watch::Sender::new(0),
            reported: tokio::sync::watch::Sender::new(0),
            resolver,
            files: Mutex::default(),
            launcher: tokio::sync::OnceCell::new(),
        }))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record an event (kept in the store, shown by `status`) and log it.
    pub fn event(&self, message: String) {
        log(&message);
        let mut s = self.lock();
        let seq = s.next_event;
        s.next_event += 1;
        let e = EventRecord {
            at: unix_now(),
            message,
        };
        if let Err(err) = self.db.push_event(seq, &e) {
            log(&format!("error: {err}"));
        }
        s.events.push_back((seq, e));
        while s.events.len() as u64 > store::EVENTS_KEPT {
            s.events.pop_front();
        }
    }

    /// Ask the reconcile loop to run now.
    /// Approve once a plan deleting most services: the one of the commit
    /// fetched now (a newer commit needs its own approval), or of the next
    /// pass for a directory source. Then reconcile now.
    pub fn approve_mass_delete(&self) -> u64 {
        {
            let mut s = self.lock();
            let commit = s.fetched.as_ref().map(|c| c.id.clone());
            match &commit {
                Some(c) => log(&format!(
                    "mass deletion approved for commit {}",
                    &c[..12.min(c.len())]
                )),
                None => log("mass deletion approved for the next pass"),
            }
            s.mass_delete_approved = Some(commit);
        }
        self.sync()
    }

    /// Ask for a reconcile now; returns the number of passes after which
    /// it has happened (a pass under way may have read the source before
    /// the request, so then it is the one after).
    pub fn sync(&self) -> u64 {
        let mut s = self.lock();
        let until = s.passes + if s.in_pass { 2 } else { 1 };
        s.fetch_now = true;
        drop(s);
        self.wake.notify_one();
        until
    }

    /// An agent's heartbeat: register or refresh the node, keep its report,
    /// and answer with its assignments.
    pub fn heartbeat(&self, name: &str, hb: Heartbeat) -> Result<HeartbeatReply, (u16, String)> {
        let mut changed = None;
        let compact = hb.compact;
        let reply = {
            let mut s = self.lock();
            if !s.clusters.is_empty() && !s.clusters.contains(&hb.cluster) {
                return Err((
                    403,
                    format!(
                        "node `{name}` asks to join cluster `{}`, which the source does not define",
                        hb.cluster
                    ),
                ));
            }
            let info = NodeInfo {
                name: name.to_string(),
                cluster: hb.cluster.clone(),
                attributes: hb.attributes.clone(),
                cpu: hb.cpu,
                memory: hb.memory,
                reserved_ports: hb.reserved_ports.clone(),
            };
            match s.nodes.get_mut(name) {
                Some(n) if n.record.info.cluster != hb.cluster => {
                    return Err((
                        409,
                        format!(
                            "node `{name}` is registered in cluster `{}`, not `{}`",
                            n.record.info.cluster, hb.cluster
                        ),
                    ));
                }
                Some(n) => {
                    let status = match n.record.status {
                        NodeStatus::Lost => NodeStatus::Active,
                        s => s,
                    };
                    if n.record.info != info
                        || n.record.status != status
                        || n.record.agent_version != hb.agent_version
                    {
                        if n.record.status == NodeStatus::Lost {
                            changed =
                                Some(format!("node {name} is back; its stale tasks are stopped"));
                        } else {
                            changed =
                                Some(format!("node {name} updated its resources or attributes"));
                        }
                        n.record.info = info;
                        n.record.status = status;
                        n.record.agent_version = hb.agent_version.clone();
                    }
                    n.last_seen = Some(Instant::now());
                    n.reported = hb.tasks;
                }
                None => {
                    s.joining.remove(name);
                    changed = Some(format!(
                        "node {name} joined cluster {} ({} CPU units, {} MiB)",
                        hb.cluster, hb.cpu, hb.memory
                    ));
                    s.nodes.insert(
                        name.to_string(),
                        Node {
                            record: NodeRecord {
                                info,
                                status: NodeStatus::Active,
                                agent_version: hb.agent_version.clone(),
                            },
                            last_seen: Some(Instant::now()),
                            reported: hb.tasks,
                        },
                    );
                }
            }
            // Assignments reported for the first time: from now on their
            // disappearance is drift, not a start still to come.
            let ids: std::collections::HashSet<String> = s.nodes[name]
                .reported
                .iter()
                .map(|t| t.id.clone())
                .collect();
            let newly: Vec<String> = s
                .assignments
                .values()
                .filter(|a| a.node == name && !a.task.reported && ids.contains(&a.task.id))
                .map(|a| a.task.id.clone())
                .collect();
            if !newly.is_empty() {
                for id in &newly {
                    if let Some(a) = s.assignments.get_mut(id) {
                        a.task.reported = true;
                    }
                }
                let recs: Vec<&AssignmentRecord> = newly
                    .iter()
                    .filter_map(|id| s.assignments.get(id))
                    .collect();
                if let Err(e) = self.db.assign(&recs, &[]) {
                    return Err((500, e.to_string()));
                }
            }
            if changed.is_some() {
                if let Err(e) = self.db.put_node(&s.nodes[name].record) {
                    return Err((500, e.to_string()));
                }
            }
            self.reply(&s, name, compact)
        };
        self.reported.send_modify(|g| *g += 1);
        if let Some(m) = changed {
            self.event(m);
            self.sync();
        }
        Ok(reply)
    }

    /// The node's assignments as a heartbeat reply carries them. The
    /// generation is read under the state lock and bumped only after the
    /// lock is released, so the assignments are never older than it.
    fn reply(&self, s: &State, name: &str, compact: bool) -> HeartbeatReply {
        let (mut assignments, mut kept) = (Vec::new(), Vec::new());
        for a in s.assignments.values().filter(|a| a.node == name) {
            if compact && a.task.reported {
                kept.push(a.task.id.clone());
            } else {
                assignments.push(a.task.clone());
            }
        }
        HeartbeatReply {
            status: s
                .nodes
                .get(name)
                .map_or(NodeStatus::Active, |n| n.record.status),
            assignments,
            kept,
            heartbeat_millis: self.config.heartbeat.as_millis() as u64,
            generation: *self.assigned.borrow(),
        }
    }

    /// An agent's long poll: once the assignment generation differs from
    /// `after`, the new one with the node's assignments (compact); the
    /// current generation alone when `timeout` passes first, or when the
    /// node is unknown or LOST (its next heartbeat settles that).
    pub async fn assignment_changes(&self, name: &str, after: u64, timeout: Duration) -> Changes {
        let mut rx = self.assigned.subscribe();
        let changed = tokio::time::timeout(timeout, rx.wait_for(|g| *g != after))
            .await
            .is_ok();
        let s = self.lock();
        let generation = *self.assigned.borrow();
        let known = s
            .nodes
            .get(name)
            .is_some_and(|n| n.record.status != NodeStatus::Lost);
        Changes {
            generation,
            assignments: (changed && known).then(|| self.reply(&s, name, true)),
        }
    }

    fn assignments_changed(&self) {
        self.assigned.send_modify(|g| *g += 1);
    }

    /// Mark nodes LOST that have been silent longer than the timeout (since
    /// the controller started, for nodes it has not heard from yet), and
    /// drop their assignments so their tasks are placed elsewhere.
    pub fn check_nodes(&self) {
        let timeout = self.config.node_timeout;
        let mut lost = Vec::new();
        {
            let mut s = self.lock();
            let since_start = self.started.elapsed();
            let names: Vec<String> = s
                .nodes
                .iter()
                .filter(|(_, n)| n.record.status != NodeStatus::Lost)
                .filter(|(_, n)| match n.last_seen {
                    Some(t) => t.elapsed() > timeout,
                    None => since_start > timeout,
                })
                .map(|(k, _)| k.clone())
                .collect();
            for name in names {
                let ids: Vec<String> = s
                    .assignments
                    .values()
                    .filter(|a| a.node == name)
                    .map(|a| a.task.id.clone())
                    .collect();
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                if let Err(e) = self.db.assign(&[], &refs) {
                    log(&format!("error: {e}"));
                    continue;
                }
                for id in &ids {
                    s.assignments.remove(id);
                }
                let n = s.nodes.get_mut(&name).expect("listed above");
                n.record.status = NodeStatus::Lost;
                n.reported.clear();
                if let Err(e) = self.db.put_node(&n.record) {
                    log(&format!("error: {e}"));
                }
                lost.push((name, ids.len()));
            }
        }
        if !lost.is_empty() {
            self.assignments_changed();
        }
        for (name, tasks) in &lost {
            self.event(format!(
                "node {name} is LOST (no heartbeat for {} s); its {tasks} task(s) are rescheduled",
                timeout.as_secs()
            ));
        }
        if !lost.is_empty() {
            self.sync();
        }
    }

    /// Suspend or resume applying. While suspended the source is still read,
    /// validated and planned, and the plan is reported; nothing is applied.
    pub fn set_suspended(&self, suspended: bool) -> Result<(), String> {
        {
            let mut s = self.lock();
            self.db
                .save_suspended(suspended)
                .map_err(|e| e.to_string())?;
            s.suspended = suspended;
        }
        self.event(if suspended {
            "suspended: changes are planned and reported, not applied".into()
        } else {
            "resumed".into()
        });
        self.sync();
        Ok(())
    }

    /// Set a node's status by hand (drain, activate).
    pub fn set_node_status(&self, name: &str, status: NodeStatus) -> Result<(), String> {
        {
            let mut s = self.lock();
            let n = s
                .nodes
                .get_mut(name)
                .ok_or_else(|| format!("no node named `{name}`"))?;
            n.record.status = status;
            self.db.put_node(&n.record).map_err(|e| e.to_string())?;
        }
        self.event(format!("node {name} set to {status:?}"));
        self.sync();
        Ok(())
    }

    /// The observed state the planner sees: assigned tasks as their nodes
    /// report them (PENDING until reported), and the nodes that take tasks.
    fn observation(&self) -> Observation {
        let s = self.lock();
        // Indexed once: apply polls this several times a second, and a
        // lookup per assignment in its node's list was quadratic.
        let by_id: std::collections::HashMap<(&str, &str), &Task> = s
            .nodes
            .iter()
            .flat_map(|(name, n)| {
                n.reported
                    .iter()
                    .map(move |t| ((name.as_str(), t.id.as_str()), t))
            })
            .collect();
        let mut tasks = Vec::with_capacity(s.assignments.len());
        for a in s.assignments.values() {
            let node = s.nodes.get(&a.node);
            let reported = by_id.get(&(a.node.as_str(), a.task.id.as_str())).copied();
            // Only a node that has reported since this controller started can
            // say a task is gone; before that it is PENDING, never replaced.
            let heard = node.is_some_and(|n| n.last_seen.is_some());
            tasks.push(match reported {
                Some(t) => t.clone(),
                // Reported before and gone now: its containers were removed
                // from the node. The planner replaces it (or, with self-heal
                // off, reports it).
                None if a.task.reported && heard => {
                    let mut t = unreported(a, TaskStatus::Stopped);
                    t.stop_code = Some("TaskGone".into());
                    t.stopped_reason = Some("its containers were removed from the node".into());
                    t
                }
                None => unreported(a, TaskStatus::Pending),
            });
        }
        let nodes = s
            .nodes
            .values()
            .filter(|n| n.record.status == NodeStatus::Active)
            .map(|n| n.record.info.clone())
            .collect();
        Observation { tasks, nodes }
    }

    fn observed_state(&self) -> ObservedState {
        let obs = self.observation();
        let mut o = ObservedState {
            tasks: obs.tasks,
            nodes: obs.nodes,
            ..ObservedState::default()
        };
        let s = self.lock();
        o.draining = s
            .nodes
            .values()
            .filter(|n| n.record.status == NodeStatus::Draining)
            .map(|n| n.record.info.name.clone())
            .collect();
        s.stored.clone().into_observed(&mut o);
        o
    }

    /// Read the source: a directory as it is now; a git branch at the
    /// commit just fetched (`fetch`) or last fetched.
    fn read_source(&self, fetch: bool) -> Result<(Vec<source::RawFile>, Option<Commit>), String> {
        match &self.config.source {
            Source::Dir(p) => Ok((source::read_dir(p).map_err(|e| e.to_string())?, None)),
            Source::Git(g) => {
                let cache = self.config.data_dir.join("git");
                let last = self.lock().fetched.clone();
                let id = match (fetch, last) {
                    (false, Some(c)) => c.id,
                    (_, last) => match self.fetch(g, &cache) {
                        Ok(id) => {
                            self.verify(g, &cache, &id)?;
                            id
                        }
                        // The pass goes on with the commit fetched last
                        // (after a restart: the one in the cache), so
                        // drift is still repaired; it reports the error.
                        Err(e) => match last {
                            Some(c) => {
                                self.lock().fetch_error = Some(e);
                                c.id
                            }
                            None => match g.cached_head(&cache) {
                                Some(id) => {
                                    self.verify(g, &cache, &id)?;
                                    self.lock().fetch_error = Some(e);
                                    id
                                }
                                None => return Err(e),
                            },
                        },
                    },
                };
                let snap = g.read(&cache, &id)?;
                let commit = Commit {
                    id: snap.commit,
                    summary: snap.summary,
                };
                let mut s = self.lock();
                if s.fetched.as_ref() != Some(&commit) {
                    drop(s);
                    self.event(format!(
                        "fetched commit {} ({})",
                        commit.short(),
                        commit.summary
                    ));
                    s = self.lock();
                }
                s.fetched = Some(commit.clone());
                Ok((snap.files, Some(commit)))
            }
        }
    }

    /// Fetch the branch. After a failure the next attempts back off
    /// (the interval, doubling, up to five minutes or the interval if
    /// longer) so a dead remote is not hammered; a sync or webhook
    /// fetches at once.
    fn fetch(&self, g: &crate::git::GitSource, cache: &std::path::Path) -> Result<String, String> {
        let waiting = {
            let mut s = self.lock();
            let forced = std::mem::take(&mut s.fetch_now);
            s.fetch_backoff
                .filter(|at| !forced && Instant::now() < *at)
                .map(|at| (at, s.fetch_failures))
        };
        let running = || {
            self.lock()
                .applied
                .as_ref()
                .map(|c| format!("commit {}", c.short()))
                .unwrap_or_else(|| "what was applied before".into())
        };
        if let Some((at, failures)) = waiting {
            return Err(format!(
                "{}; the fetch failed {failures} time(s); still running {}; next attempt in {} s \
                 (`reconcile sync` or the webhook fetches now)",
                g.display(),
                running(),
                at.saturating_duration_since(Instant::now())
                    .as_secs()
                    .max(1)
            ));
        }
        match g.fetch(cache) {
            Ok(id) => {
                let mut s = self.lock();
                s.fetch_failures = 0;
                s.fetch_backoff = None;
                Ok(id)
            }
            Err(e) => {
                let (failures, delay) = {
                    let mut s = self.lock();
                    s.fetch_failures = s.fetch_failures.saturating_add(1);
                    let delay = fetch_backoff(self.config.interval, s.fetch_failures);
                    s.fetch_backoff = Some(Instant::now() + delay);
                    (s.fetch_failures, delay)
                };
                Err(format!(
                    "{e}; still running {}; next attempt in {} s (failed {failures} time(s) in \
                     a row; `reconcile sync` or the webhook fetches now)",
                    running(),
                    delay.as_secs().max(1)
                ))
            }
        }
    }

    /// With --verify-signatures: every commit since the last verified one
    /// must be signed by an allowed key, else nothing from it is read.
    fn verify(
        &self,
        g: &crate::git::GitSource,
        cache: &std::path::Path,
        id: &str,
    ) -> Result<(), String> {
        let signers = crate::git::Signers {
            ssh: self.config.allowed_signers.as_deref(),
            gpg: self.config.allowed_gpg_keys.as_deref(),
        };
        if signers.ssh.is_none() && signers.gpg.is_none() {
            return Ok(());
        }
        let since = {
            let s = self.lock();
            s.verified
                .clone()
                .or_else(|| s.applied.as_ref().map(|c| c.id.clone()))
        };
        if since.as_deref() == Some(id) {
            return Ok(());
        }
        match crate::git::verify_range(&g.cache_dir(cache), id, since.as_deref(), signers) {
            Ok(_) => {
                self.lock().verified = Some(id.to_string());
                Ok(())
            }
            Err(e) => {
                let running = self.lock().applied.clone();
                Err(format!(
                    "signature verification failed: {e}; nothing from commit {} is applied; still running {}",
                    &id[..12.min(id.len())],
                    running
                        .map(|c| format!("commit {}", c.short()))
                        .unwrap_or_else(|| "what was applied before".into())
                ))
            }
        }
    }

    /// Read and validate the source as one unit. Invalid input is reported
    /// with the commit and file:line:col, and nothing of it is applied.
    fn load(&self, fetch: bool) -> Result<(DesiredState, Vec<String>, Option<Commit>), String> {
        let (files, commit) = self.read_source(fetch)?;
        let at = commit
            .as_ref()
            .map(|c| format!("commit {}: ", c.short()))
            .unwrap_or_default();
        let v = validate::validate_cached(
            files,
            &mut self.files.lock().unwrap_or_else(|p| p.into_inner()),
        );
        if !v.is_valid() {
            let lines: Vec<String> = v
                .diagnostics
                .iter()
                .filter(|d| d.severity == validate::Severity::Error)
                .map(|d| {
                    format!(
                        "{}:{}:{}: {}",
                        d.file, d.span.line, d.span.column, d.message
                    )
                })
                .collect();
            return Err(format!(
                "{at}the source is invalid; nothing of it is applied:\n  {}",
                lines.join("\n  ")
            ));
        }
        let mut desired = DesiredState::from_manifests(v.entries.iter().map(|e| &e.manifest));
        let errors = desired.fingerprint_secrets(&self.resolver);
        Ok((
            desired,
            errors.into_iter().map(|e| e.to_string()).collect(),
            commit,
        ))
    }

    /// The plan the next reconcile would apply.
    pub fn plan(&self) -> Result<plan::Plan, String> {
        let (desired, secret_errors, commit) = self.load(false)?;
        let observed = self.observed_state();
        let mut p = plan::plan(&desired, &observed, &self.plan_options(commit.as_ref()));
        p.errors.extend(secret_errors);
        Ok(p)
    }

    fn plan_options(&self, commit: Option<&Commit>) -> plan::Options {
        let approved = self.lock().mass_delete_approved.clone();
        plan::Options {
            now: unix_now(),
            seed: u64::from_str_radix(&model::digest(&self.config.source.display())[..16], 16)
                .unwrap_or(0),
            allow_mass_delete: self.config.allow_mass_delete
                || approved.is_some_and(|a| a.as_deref() == commit.map(|c| c.id.as_str())),
            record_observed: false,
        }
    }

    /// One pass: load, plan, log the plan, apply it.
    pub async fn reconcile_once(self: &Arc<Self>) -> Result<bool, String> {
        let began = Instant::now();
        self.lock().fetch_error = None;
        let (desired, secret_errors, commit) =
            self.load(true)
                .map_err(|e| match self.lock().fetch_error.take() {
                    Some(f) => format!("{f}\n{e}"),
                    None => e,
                })?;
        let loaded = began.elapsed();
        let at = commit
            .as_ref()
            .map(|c| format!("commit {}: ", c.short()))
            .unwrap_or_default();
        self.lock().clusters = desired.clusters.keys().cloned().collect();
        self.take_pending(&desired);
        let observed = self.observed_state();
        let opts = self.plan_options(commit.as_ref());
        let mut p = plan::plan(&desired, &observed, &opts);
        let planned = began.elapsed();
        p.errors.extend(secret_errors);
        {
            let mut s = self.lock();
            s.desired = Some(desired.clone());
            s.unplaced = p
                .resource_changes
                .iter()
                .filter_map(|c| {
                    let f = c.tasks.as_ref()?.placement_failure.as_ref()?;
                    Some((format!("{}/{}", c.cluster.as_deref()?, c.name), f.unplaced))
                })
                .collect();
        }
        if !p.errors.is_empty() {
            let mass = p.errors.iter().any(|e| e.contains("--allow-mass-delete"));
            return Err(format!(
                "{at}the plan cannot be applied; nothing changed:\n  {}{}",
                p.errors.join("\n  "),
                if mass {
                    "\n  (controller: `reconcile sync --allow-mass-delete` approves this plan \
                     once, or start it with --allow-mass-delete)"
                } else {
                    ""
                }
            ));
        }

        if !p.has_changes() {
            self.complete_settled(&p, &observed);
            let mut s = self.lock();
            s.applied = commit;
            return s.fetch_error.take().map_or(Ok(false), Err);
        }
        if self.lock().suspended {
            return Err(format!(
                "{at}suspended: {} change(s) wait for `reconcile resume`",
                p.resource_changes
                    .iter()
                    .filter(|c| c.action != plan::Action::NoOp)
                    .count()
            ));
        }
        if opts.allow_mass_delete {
            // An approval is used up by the apply it was given for.
            self.lock().mass_delete_approved = None;
        }
        // Nothing is applied that was not logged first.
        let text = render::text(
            &p,
            render::Style {
                colour: false,
                detail: false,
            },
        );
        log(&format!(
            "applying {} (read and validated in {} ms, planned in {} ms):\n{text}",
            commit
                .as_ref()
                .map(|c| format!("commit {} ({})", c.short(), c.summary))
                .unwrap_or_else(|| self.config.source.display()),
            loaded.as_millis(),
            (planned - loaded).as_millis()
        ));
        let mut stored = {
            let mut s = self.lock();
            s.applying = true;
            s.stored.clone()
        };
        let fleet = Fleet {
            controller: self.clone(),
        };
        let sink = ControllerSink {
            controller: self.clone(),
            start: Instant::now(),
            counter: std::sync::atomic::AtomicU64::new(0),
        };
        let opts = apply::Options {
            timeout: self.config.step_timeout,
            settle: self.config.settle,
            ..apply::Options::default()
        };
        let woken = std::sync::atomic::AtomicBool::new(false);
        let result = tokio::select! {
            r = apply::apply(
                &p,
                &desired,
                &mut stored,
                &fleet,
                &self.resolver,
                &opts,
                &sink,
            ) => Ok(r),
            by = self.superseded(&desired, &woken) => Err(by),
        };
        // A wake the watch for a newer source took (a node joining, a
        // sync) still gets its pass.
        if woken.load(std::sync::atomic::Ordering::Relaxed) {
            self.wake.notify_one();
        }
        {
            let mut s = self.lock();
            // Superseded: the apply stopped at an await, like a killed
            // one; what it saved after its last step is the state.
            if result.is_ok() {
                s.stored = stored;
            }
            s.applying = false;
            // An abort no rollout picked up (the apply had not reached or
            // had already left that service) becomes a rollback request,
            // unless the deployment completed meanwhile.
            let left: Vec<String> = std::mem::take(&mut s.aborts).into_iter().collect();
            for key in left {
                let open = s
                    .stored
                    .deployments
                    .get(&key)
                    .and_then(|h| h.primary())
                    .is_some_and(|d| d.rollout != crate::deployment::Rollout::Completed);
                if open {
                    s.pending.push((key, None, ABORTED.to_string()));
                }
            }
            if !s.pending.is_empty() {
                self.wake.notify_one();
            }
        }
        // The commit each changed resource was applied from (by address),
        // even when another resource failed: what did change came from it.
        if let Some(c) = &commit {
            let mut s = self.lock();
            for ch in p.changes() {
                if ch.action == plan::Action::Delete {
                    s.commits.remove(&ch.address);
                } else {
                    s.commits.insert(ch.address.clone(), c.id.clone());
                }
            }
            if let Err(e) = self.db.save_commits(&s.commits) {
                log(&format!("error: {e}"));
            }
        }
        let result = match result {
            Ok(r) => r,
            Err(by) => {
                self.event(format!(
                    "{at}superseded by {by} before its rollout finished; applying that now"
                ));
                self.wake.notify_one();
                return Ok(true);
            }
        };
        match result {
            Ok(()) => {
                self.event(format!(
                    "{at}applied: {} to add, {} to change, {} to destroy ({} ms)",
                    p.summary.add,
                    p.summary.change,
                    p.summary.destroy,
                    began.elapsed().as_millis()
                ));
                let mut s = self.lock();
                s.applied = commit;
                s.fetch_error.take().map_or(Ok(true), Err)
            }
            Err(e) => Err(format!("{at}apply failed: {e}")),
        }
    }

    /// Complete the deployments an interrupted apply left IN_PROGRESS
    /// whose services have settled ([`apply::complete_settled`]).
    fn complete_settled(&self, p: &plan::Plan, observed: &ObservedState) {
        let done = {
            let mut s = self.lock();
            let done = apply::complete_settled(
                p,
                &observed.tasks,
                &mut s.stored,
                self.config.settle,
                unix_now(),
            );
            if !done.is_empty() {
                if let Err(e) = self.db.save_stored(&s.stored) {
                    log(&format!("error: {e}"));
                }
            }
            done
        };
        for (service, message) in done {
            self.event(format!("{service}: {message}"));
        }
    }

    /// Resolves, naming it, once the source holds a valid desired state
    /// other than `applying`: the next good commit supersedes a rollout
    /// still under way (tasks failing without a circuit breaker would hold
    /// the loop until the step timeout), as a new ECS deployment
    /// supersedes an in-progress one. Looked at whenever the loop is woken
    /// (webhook, sync, a directory change; noted in `woken`) and every
    /// interval. An invalid or unchanged source, one whose plan would be
    /// refused, or a suspended controller never interrupts.
    async fn superseded(
        self: &Arc<Self>,
        applying: &DesiredState,
        woken: &std::sync::atomic::AtomicBool,
    ) -> String {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.interval) => {}
                _ = self.wake.notified() => woken.store(true, std::sync::atomic::Ordering::Relaxed),
            }
            // A fetch may take up to the git timeout: off the apply's task.
            let this = self.clone();
            let Ok(Ok((desired, secret_errors, commit))) =
                tokio::task::spawn_blocking(move || this.load(true)).await
            else {
                continue;
            };
            if !secret_errors.is_empty() || desired == *applying || self.lock().suspended {
                continue;
            }
            // Only a source the next pass would apply: one whose plan is
            // refused (a mass deletion not approved) must not stop a
            // rollout it cannot replace.
            let observed = self.observed_state();
            let opts = self.plan_options(commit.as_ref());
            if plan::plan(&desired, &observed, &opts).errors.is_empty() {
                return commit
                    .map(|c| format!("commit {} ({})", c.short(), c.summary))
                    .unwrap_or_else(|| "a change of the source".into());
            }
        }
    }

    /// Watch a directory source: any change wakes the loop once the tree
    /// has been quiet for the debounce time, so an editor's burst of
    /// writes is one reconcile, of the tree as a whole.
    fn watch(self: &Arc<Self>, dir: &std::path::Path) -> Result<(), String> {
        use notify::Watcher;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut watcher = notify::recommended_watcher(move |r: notify::Result<notify::Event>| {
            if r.is_ok_and(|e| !e.kind.is_access()) {
                let _ = tx.send(());
            }
        })
        .map_err(|e| format!("watching `{}`: {e}", dir.display()))?;
        watcher
            .watch(dir, notify::RecursiveMode::Recursive)
            .map_err(|e| format!("watching `{}`: {e}", dir.display()))?;
        let c = self.clone();
        tokio::spawn(async move {
            let _watcher = watcher;
            while rx.recv().await.is_some() {
                while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
                log("the source directory changed");
                c.sync();
            }
        });
        Ok(())
    }

    /// Run the reconcile loop and the node checker until the process ends.
    pub async fn run_loop(self: Arc<Self>) {
        if let Source::Dir(dir) = &self.config.source {
            if let Err(e) = self.watch(dir) {
                self.event(format!("{e}; changes are picked up every interval instead"));
            }
        }
        let checker = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                checker.check_nodes();
            }
        });
        loop {
            self.lock().in_pass = true;
            let result = self.reconcile_once().await;
            let error = result.as_ref().err().cloned();
            let changed_error = {
                let mut s = self.lock();
                let changed = s.last_error != error;
                s.last_error = error.clone();
                s.in_pass = false;
                s.passes += 1;
                changed
            };
            match (error, changed_error) {
                (Some(e), true) => self.event(format!("reconcile failed: {e}")),
                (None, true) => self.event("reconcile succeeded".into()),
                _ => {}
            }
            self.autoscale().await;
            tokio::select! {
                _ = tokio::time::sleep(self.config.interval) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// Nodes with their assigned load.
    pub fn nodes(&self) -> Vec<NodeView> {
        let s = self.lock();
        let mut by_node: BTreeMap<&str, Vec<&AssignmentRecord>> = BTreeMap::new();
        for a in s.assignments.values() {
            by_node.entry(a.node.as_str()).or_default().push(a);
        }
        s.nodes
            .values()
            .map(|n| {
                let mine = by_node
                    .get(n.record.info.name.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let (mut cpu, mut mem) = (0, 0);
                for a in mine {
                    let (c, m, _) = model::reservation(&a.task.spec);
                    cpu += c;
                    mem += m;
                }
                NodeView {
                    info: n.record.info.clone(),
                    status: n.record.status,
                    agent_version: n.record.agent_version.clone(),
                    last_heartbeat_secs: n.last_seen.map(|t| t.elapsed().as_secs()),
                    tasks: mine.len(),
                    reserved_cpu: cpu,
                    reserved_memory: mem,
                }
            })
            .collect()
    }

    /// Carry out the rollbacks asked for while an apply ran.
    fn take_pending(&self, desired: &DesiredState) {
        let mut s = self.lock();
        let pending = std::mem::take(&mut s.pending);
        if pending.is_empty() {
            return;
        }
        for (key, to, reason) in pending {
            match apply::request_rollback(&mut s.stored, desired, &key, to, &reason) {
                Ok(to) => {
                    drop(s);
                    self.event(format!("{key}: {reason}: rolling back to revision {to}"));
                    s = self.lock();
                }
                Err(e) => {
                    drop(s);
                    self.event(format!("{key}: {reason}, but: {e}"));
                    s = self.lock();
                }
            }
        }
        if let Err(e) = self.db.save_stored(&s.stored) {
            log(&format!("error: {e}"));
        }
    }

    /// A service's deployments and events.
    pub fn history(&self, key: &str) -> Result<crate::wire::HistoryReply, String> {
        let s = self.lock();
        if !s.stored.services.contains_key(key) {
            return Err(format!("no service `{key}` has been applied"));
        }
        let h = s.stored.deployments.get(key).cloned().unwrap_or_default();
        Ok(crate::wire::HistoryReply {
            service: key.to_string(),
            deployments: h
                .deployments
                .iter()
                .rev()
                .map(|d| crate::deployment::DeploymentView::of(d, &[]))
                .collect(),
            events: h.events.iter().rev().cloned().collect(),
            held: h.held,
        })
    }

    /// `reconcile deployment abort`: the running rollout of `key` rolls
    /// back at once; a rollout left FAILED or interrupted is rolled back by
    /// the next pass.
    pub fn abort(&self, key: &str) -> Result<String, String> {
        let mut s = self.lock();
        let primary = s
            .stored
            .deployments
            .get(key)
            .and_then(|h| h.primary())
            .cloned()
            .ok_or_else(|| format!("`{key}` has no deployment to abort"))?;
        if primary.rollout == crate::deployment::Rollout::Completed {
            return Err(format!(
                "no deployment of `{key}` is in progress (deployment {} completed); use `reconcile rollback` to return to an earlier revision",
                primary.id
            ));
        }
        if s.applying {
            // A rollout in progress is rolled back by the apply running it;
            // a FAILED one after that apply, as a request for the next pass.
            if primary.rollout == crate::deployment::Rollout::InProgress {
                s.aborts.insert(key.to_string());
            } else {
                s.pending.push((key.to_string(), None, ABORTED.to_string()));
            }
            drop(s);
            self.wake.notify_one();
            return Ok(format!(
                "abort requested: {key} rolls back to its last COMPLETED deployment"
            ));
        }
        let desired = s
            .desired
            .clone()
            .ok_or_else(|| "the source has not been read yet".to_string())?;
        let to = apply::request_rollback(&mut s.stored, &desired, key, None, ABORTED)?;
        self.db.save_stored(&s.stored).map_err(|e| e.to_string())?;
        drop(s);
        self.wake.notify_one();
        Ok(format!("aborted: {key} rolls back to revision {to}"))
    }

    /// `reconcile rollback`: hold the source's configuration of `key` and
    /// deploy revision `to` (default: the last COMPLETED one before).
    pub fn rollback(&self, key: &str, to: Option<u32>) -> Result<String, String> {
        let mut s = self.lock();
        if s.applying {
            // The running apply owns the stored state: the request waits
            // for the next pass.
            s.pending
                .push((key.to_string(), to, ROLLED_BACK.to_string()));
            drop(s);
            self.wake.notify_one();
            return Ok(format!(
                "rollback queued: {key} rolls back when the running reconcile ends"
            ));
        }
        let desired = s
            .desired
            .clone()
            .ok_or_else(|| "the source has not been read yet".to_string())?;
        let to = apply::request_rollback(&mut s.stored, &desired, key, to, ROLLED_BACK)?;
        self.db.save_stored(&s.stored).map_err(|e| e.to_string())?;
        drop(s);
        self.wake.notify_one();
        Ok(format!(
            "rollback requested: {key} rolls back to revision {to} on the next pass"
        ))
    }

    pub fn status(&self) -> StatusReply {
        let nodes = self.nodes();
        let tasks = self.observation().tasks;
        let s = self.lock();
        let services = s
            .stored
            .services
            .iter()
            .map(|(key, svc)| {
                let mine: Vec<&Task> = tasks
                    .iter()
                    .filter(|t| {
                        t.service
                            .as_deref()
                            .is_some_and(|n| key.split_once('/') == Some((t.cluster.as_str(), n)))
                    })
                    .collect();
                let history = s.stored.deployments.get(key);
                let (mut running, mut pending) = (0, 0);
                for t in &mine {
                    match t.last_status {
                        TaskStatus::Running => running += 1,
                        TaskStatus::Pending => pending += 1,
                        TaskStatus::Stopped => {}
                    }
                }
                (
                    key.clone(),
                    ServiceView {
                        task_definition: svc.spec.task_definition.clone(),
                        revision: svc.revision,
                        desired_count: svc.spec.desired_count,
                        running,
                        pending,
                        commit: s.commits.get(&format!("Service/{key}")).cloned(),
                        deployments: history.map(|h| h.views(&mine)).unwrap_or_default(),
                        events: history
                            .map(|h| h.events.iter().rev().take(5).cloned().collect())
                            .unwrap_or_default(),
                        held: history.and_then(|h| h.held.clone()),
                    },
                )
            })
            .collect();
        StatusReply {
            source: self.config.source.display(),
            fetched_commit: s.fetched.as_ref().map(|c| c.id.clone()),
            applied_commit: s.applied.as_ref().map(|c| c.id.clone()),
            suspended: s.suspended,
            commits: s.commits.clone(),
            nodes,
            tasks,
            services,
            last_error: s.last_error.clone(),
            passes: s.passes,
            events: s
                .events
                .iter()
                .rev()
                .take(50)
                .map(|(_, e)| e.clone())
                .collect(),
        }
    }
}

/// An assigned task its node does not report, as the planner sees it.
fn unreported(a: &AssignmentRecord, status: TaskStatus) -> Task {
    Task {
        identity: a.task.identity.clone(),
        node: a.node.clone(),
        last_status: status,
        health: Health::Unknown,
        started_at: None,
        stop_code: None,
        stopped_reason: None,
        bindings: Vec::new(),
    }
}

fn resolve_secrets(
    resolver: &Resolver,
    spec: &crate::manifest::TaskDefinitionSpec,
) -> BTreeMap<String, String> {
    spec.container_definitions
        .iter()
        .flat_map(|c| c.secrets.iter())
        .filter_map(|s| {
            resolver
                .resolve(&s.value_from)
                .ok()
                .map(|v| (s.value_from.clone(), v.expose().to_string()))
        })
        .collect()
}

/// The fleet as a [`Runtime`]: starting a task assigns it to a node.
struct Fleet {
    controller: Arc<Controller>,
}

impl Fleet {
    fn unassign(&self, task_id: &str) -> Result<(), RuntimeError> {
        let c = &self.controller;
        let mut s = c.lock();
        if s.assignments.contains_key(task_id) {
            c.db.assign(&[], &[task_id])
                .map_err(|e| RuntimeError::new(e.to_string()))?;
            s.assignments.remove(task_id);
            drop(s);
            c.assignments_changed();
        }
        Ok(())
    }
}

impl Runtime for Fleet {
    async fn observe(&self) -> Result<Observation, RuntimeError> {
        Ok(self.controller.observation())
    }

    async fn start(&self, launch: Launch) -> Result<(), RuntimeError> {
        let c = &self.controller;
        let mut s = c.lock();
        match s.nodes.get(&launch.node) {
            Some(n) if n.record.status == NodeStatus::Active => {}
            _ => {
                return Err(RuntimeError {
                    message: format!("node `{}` is not active", launch.node),
                    task: Some(launch.identity.id),
                })
            }
        }
        let record = AssignmentRecord {
            node: launch.node.clone(),
            task: Assignment {
                identity: launch.identity,
                spec: launch.spec,
                reported: false,
                secrets: launch
                    .secrets
                    .iter()
                    .map(|(k, v): (&String, &SecretValue)| (k.clone(), v.expose().to_string()))
                    .collect(),
            },
        };
        c.db.assign(&[&record], &[])
            .map_err(|e| RuntimeError::new(e.to_string()))?;
        s.assignments.insert(record.task.id.clone(), record);
        drop(s);
        c.assignments_changed();
        Ok(())
    }

    async fn stop(&self, task_id: &str, _reason: &str) -> Result<(), RuntimeError> {
        self.unassign_and_wait(task_id).await
    }

    async fn remove(&self, task_id: &str) -> Result<(), RuntimeError> {
        self.unassign(task_id)
    }

    async fn halt(&self, task_id: &str) -> Result<(), RuntimeError> {
        self.unassign_and_wait(task_id).await
    }
}

/// How long a stop may take on an agent: the longest stopTimeout ECS
/// allows, plus heartbeats to learn of it and report it.
const STOP_WAIT: Duration = Duration::from_secs(150);

impl Fleet {
    /// Unassign a task and return once its node no longer reports it
    /// running (or the node is lost or gone): a rollout step's stops must
    /// be done before its starts, or old and new tasks overlap beyond
    /// maximumPercent.
    async fn unassign_and_wait(&self, task_id: &str) -> Result<(), RuntimeError> {
        let node = self
            .controller
            .lock()
            .assignments
            .get(task_id)
            .map(|a| a.node.clone());
        self.unassign(task_id)?;
        let Some(node) = node else {
            return Ok(());
        };
        let deadline = Instant::now() + STOP_WAIT;
        let mut reports = self.controller.reported.subscribe();
        loop {
            reports.borrow_and_update();
            {
                let s = self.controller.lock();
                match s.nodes.get(&node) {
                    Some(n) if n.record.status != NodeStatus::Lost => {
                        if !n.reported.iter().any(|t| t.id == task_id && t.is_live()) {
                            return Ok(());
                        }
                    }
                    _ => return Ok(()),
                }
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError {
                    message: format!(
                        "node `{node}` still runs task {} {}s after it was told to stop it",
                        plan::short(task_id),
                        STOP_WAIT.as_secs()
                    ),
                    task: Some(task_id.to_string()),
                });
            }
            // The next heartbeat of any node, or a second: a node that
            // stopped heartbeating is found LOST by the deadline checks.
            let _ = tokio::time::timeout(Duration::from_secs(1), reports.changed()).await;
        }
    }
}

struct ControllerSink {
    controller: Arc<Controller>,
    start: Instant,
    counter: std::sync::atomic::AtomicU64,
}

impl apply::Sink for ControllerSink {
    fn event(&self, e: apply::Event) {
        use apply::Event::*;
        let message = match e {
            Resource { .. } | Step { .. } => return,
            Registered { family, revision } => format!("registered {family}:{revision}"),
            Started {
                service,
                task,
                node,
                revision,
            } => format!(
                "{service}: started task {} (revision {revision}) on {node}",
                plan::short(&task)
            ),
            Stopped {
                service,
                task,
                reason,
            } => format!("{service}: stopped task {}: {reason}", plan::short(&task)),
            Healthy { service, running } => {
                format!("{service} has reached a steady state: {running} task(s) running")
            }
            TaskFailed {
                service, reason, ..
            } => format!("{service}: {reason}"),
            Deployment { service, message } => format!("{service}: {message}"),
        };
        self.controller.event(message);
    }

    fn save(&self, state: &Stored) -> Result<(), String> {
        self.controller.lock().stored = state.clone();
        self.controller
            .db
            .save_stored(state)
            .map_err(|e| e.to_string())
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await
    }

    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn new_task_id(&self) -> String {
        model::new_task_id(&self.counter)
    }

    fn aborted(&self, key: &str) -> bool {
        self.controller.lock().aborts.remove(key)
    }
}

/// Quiet time after the last change of a directory source before it is
/// read.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// How long a launched node may take to join before it is given up.
const JOIN_DEADLINE: Duration = Duration::from_secs(120);

impl Controller {
    async fn launcher(&self) -> Result<&launcher::Launcher, String> {
        let owner = model::digest(&self.config.data_dir.display().to_string());
        let r = self
            .launcher
            .get_or_init(|| {
                launcher::Launcher::connect(
                    owner,
                    self.config.advertise_url.clone(),
                    &self.config.join_token,
                    self.config.data_dir.join("join-token"),
                    self.config.ca_cert.clone(),
                )
            })
            .await;
        r.as_ref().map_err(Clone::clone)
    }

    /// One pass of managed scaling over every provider that has it.
    async fn autoscale(&self) {
        let Some(desired) = self.lock().desired.clone() else {
            return;
        };
        let managed: Vec<(&String, &crate::manifest::CapacityProviderSpec)> = desired
            .capacity_providers
            .iter()
            .filter(|(_, p)| p.managed_scaling.status == crate::manifest::Toggle::Enabled)
            .collect();
        if managed.is_empty() {
            return;
        }
        let l = match self.launcher().await {
            Ok(l) => l,
            Err(e) => {
                log(&format!("managed scaling: {e}"));
                return;
            }
        };
        let launched = match l.launched().await {
            Ok(v) => v,
            Err(e) => {
                log(&format!("managed scaling: {e}"));
                return;
            }
        };
        let now = unix_now();
        for (name, spec) in managed {
            let Some(cluster) = desired
                .clusters
                .iter()
                .find(|(_, c)| c.capacity_providers.contains(name))
                .map(|(k, _)| k.clone())
            else {
                continue;
            };
            let template = spec.node_template.clone().unwrap_or_default();
            let view = {
                // Launched nodes that never joined are given up.
                let stale: Vec<String> = {
                    let mut s = self.lock();
                    let stale: Vec<String> = s
                        .joining
                        .iter()
                        .filter(|(_, (p, t))| p == name && t.elapsed() > JOIN_DEADLINE)
                        .map(|(n, _)| n.clone())
                        .collect();
                    for n in &stale {
                        s.joining.remove(n);
                    }
                    stale
                };
                for n in &stale {
                    self.event(format!(
                        "capacity provider {name}: node {n} did not join within {} s; removing it",
                        JOIN_DEADLINE.as_secs()
                    ));
                    let _ = l.retire(n).await;
                }
                let s = self.lock();
                let nodes: Vec<scaling::ScalingNode> = s
                    .nodes
                    .values()
                    .filter(|n| n.record.status != NodeStatus::Lost)
                    .filter(|n| {
                        plan::provider_of(&desired, &n.record.info).as_deref() == Some(name)
                    })
                    .map(|n| {
                        let me = launched.iter().find(|x| x.name == n.record.info.name);
                        scaling::ScalingNode {
                            name: n.record.info.name.clone(),
                            busy: s.assignments.values().any(|a| a.node == n.record.info.name)
                                || n.reported.iter().any(|t| t.is_live()),
                            launched: me.is_some(),
                            age: Duration::from_secs(
                                me.map_or(u64::MAX, |x| (now - x.created).max(0) as u64),
                            ),
                        }
                    })
                    .collect();
                let joining = s.joining.values().filter(|(p, _)| p == name).count() as u32;
                let needed_extra =
                    self.needed_nodes(&desired, &cluster, name, &s.unplaced, l.engine);
                scaling::ProviderView {
                    target_capacity: spec.managed_scaling.target_capacity,
                    min_step: spec.managed_scaling.minimum_scaling_step_size,
                    max_step: spec.managed_scaling.maximum_scaling_step_size,
                    min_size: template.minimum_size,
                    max_size: template.maximum_size,
                    warmup: Duration::from_secs(u64::from(
                        spec.managed_scaling.instance_warmup_period,
                    )),
                    protection: spec.managed_termination_protection
                        == crate::manifest::Toggle::Enabled,
                    nodes,
                    joining,
                    needed_extra,
                }
            };
            let (reservation, decision) = scaling::decide(&view);
            match decision {
                scaling::Decision::Hold => {}
                scaling::Decision::Launch(k) => {
                    self.event(format!(
                        "capacity provider {name}: reservation {reservation}% (target {}%), launching {k} node(s)",
                        spec.managed_scaling.target_capacity
                    ));
                    for _ in 0..k {
                        let node = format!(
                            "{name}-{}",
                            &model::digest(&(now, name, std::time::SystemTime::now()))[..8]
                        );
                        match l.launch(&cluster, name, &node, &template.attributes).await {
                            Ok(()) => {
                                self.lock()
                                    .joining
                                    .insert(node.clone(), (name.clone(), Instant::now()));
                            }
                            Err(e) => {
                                self.event(format!("capacity provider {name}: {e}"));
                                break;
                            }
                        }
                    }
                }
                scaling::Decision::Retire(names) => {
                    for node in names {
                        let busy = view.nodes.iter().any(|n| n.name == node && n.busy);
                        if busy {
                            // Without termination protection a busy node is
                            // drained first; it is removed once empty.
                            let draining = self
                                .lock()
                                .nodes
                                .get(&node)
                                .is_some_and(|n| n.record.status == NodeStatus::Draining);
                            if !draining {
                                let _ = self.set_node_status(&node, NodeStatus::Draining);
                            }
                            continue;
                        }
                        self.event(format!(
                            "capacity provider {name}: reservation {reservation}% (target {}%), removing idle node {node}",
                            spec.managed_scaling.target_capacity
                        ));
                        if let Err(e) = l.retire(&node).await {
                            self.event(format!("capacity provider {name}: {e}"));
                            continue;
                        }
                        self.forget_node(&node);
                    }
                }
            }
        }
    }

    /// Nodes the unplaced tasks of services that use `provider` need: one
    /// per task under distinctInstance, else their reservations over what a
    /// launched node offers.
    fn needed_nodes(
        &self,
        desired: &DesiredState,
        cluster: &str,
        provider: &str,
        unplaced: &BTreeMap<String, u32>,
        engine: (u32, u32),
    ) -> u32 {
        let mut total = 0;
        for (key, k) in unplaced {
            let Some(svc) = desired.services.get(key) else {
                continue;
            };
            if key.split_once('/').map(|(c, _)| c) != Some(cluster) {
                continue;
            }
            let strategy = plan::strategy_of(desired, cluster, &svc.spec);
            // The provider that gets these tasks: the first of the strategy
            // with a base or weight, or with no strategy any of the cluster.
            let first = strategy
                .iter()
                .find(|i| i.base > 0 || i.weight > 0)
                .map(|i| i.capacity_provider.as_str());
            if strategy.is_empty() || first == Some(provider) {
                let family = model::TaskDefRef::parse(&svc.spec.task_definition).family;
                let Some(td) = desired.task_definitions.get(family) else {
                    continue;
                };
                let distinct = td
                    .placement_constraints
                    .iter()
                    .chain(svc.spec.placement_constraints.iter())
                    .any(|c| c.kind == crate::manifest::PlacementConstraintType::DistinctInstance);
                let (cpu, mem, _) = model::reservation(td);
                total += if distinct {
                    *k
                } else {
                    let by_cpu = (k * cpu).div_ceil(engine.0.max(1));
                    let by_mem = (k * mem).div_ceil(engine.1.max(1));
                    by_cpu.max(by_mem).max(1)
                };
            }
        }
        total
    }

    /// Remove a retired node from the registry.
    fn forget_node(&self, name: &str) {
        let removed = {
            let mut s = self.lock();
            let had = s.nodes.remove(name).is_some();
            if had {
                if let Err(e) = self.db.delete_node(name) {
                    log(&format!("error: {e}"));
                }
            }
            had
        };
        if removed {
            self.sync();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller(dir: &std::path::Path) -> Arc<Controller> {
        Controller::open(Config {
            source: Source::Dir(dir.join("src")),
            webhook_secret: None,
            allowed_signers: None,
            allowed_gpg_keys: None,
            data_dir: dir.join("data"),
            join_token: "j".into(),
            api_token: "a".into(),
            interval: Duration::from_secs(30),
            heartbeat: Duration::from_millis(250),
            node_timeout: Duration::from_secs(10),
            settle: Duration::from_secs(1),
            step_timeout: Duration::from_secs(60),
            allow_mass_delete: false,
            advertise_url: String::new(),
            ca_cert: None,
        })
        .unwrap()
    }

    fn heartbeat(tasks: Vec<Task>, compact: bool) -> Heartbeat {
        Heartbeat {
            cluster: "c".into(),
            attributes: BTreeMap::new(),
            cpu: 1024,
            memory: 1024,
            reserved_ports: Vec::new(),
            agent_version: "test".into(),
            tasks,
            compact,
        }
    }

    fn identity(id: &str) -> model::TaskIdentity {
        model::TaskIdentity {
            id: id.into(),
            cluster: "c".into(),
            service: Some("web".into()),
            family: "web".into(),
            revision: 1,
            config_hash: "h".into(),
        }
    }

    fn launch(id: &str) -> Launch {
        Launch {
            identity: identity(id),
            node: "n1".into(),
            spec: serde_json::from_value(serde_json::json!({
                "containerDefinitions": [{"name": "a", "image": "busybox:stable"}]
            }))
            .unwrap(),
            secrets: BTreeMap::new(),
        }
    }

    fn running(id: &str) -> Task {
        Task {
            identity: identity(id),
            node: "n1".into(),
            last_status: TaskStatus::Running,
            health: model::Health::Unknown,
            started_at: Some(1),
            stop_code: None,
            stopped_reason: None,
            bindings: Vec::new(),
        }
    }

    #[test]
    fn failed_fetches_back_off_doubling_up_to_five_minutes() {
        let s = Duration::from_secs;
        let waits: Vec<u64> = (1..=8).map(|k| fetch_backoff(s(30), k).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 300, 300, 300, 300]);
        assert_eq!(fetch_backoff(s(1), 1), s(1));
        assert_eq!(fetch_backoff(s(1), 4), s(8));
        assert_eq!(fetch_backoff(s(1), 1000), s(300));
        // An interval above the cap is never shortened.
        assert_eq!(fetch_backoff(s(600), 3), s(600));
    }

    /// What the agent relies on: assignment changes wake its long poll,
    /// and a compact reply carries specifications only for tasks the node
    /// has not reported, the rest by id.
    #[tokio::test]
    async fn assignment_changes_wake_agents_and_compact_replies_name_reported_tasks_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let c = controller(dir.path());
        let first = c.heartbeat("n1", heartbeat(Vec::new(), true)).unwrap();
        assert!(first.assignments.is_empty() && first.kept.is_empty());

        // Nothing changes: the long poll times out with the same generation.
        let g = first.generation;
        let same = c
            .assignment_changes("n1", g, Duration::from_millis(50))
            .await;
        assert_eq!(same.generation, g);
        assert!(same.assignments.is_none(), "no change, no assignments");

        let fleet = Fleet {
            controller: c.clone(),
        };
        let waiting = {
            let c = c.clone();
            tokio::spawn(
                async move { c.assignment_changes("n1", g, Duration::from_secs(30)).await },
            )
        };
        let stranger = {
            let c = c.clone();
            tokio::spawn(
                async move { c.assignment_changes("n9", g, Duration::from_secs(30)).await },
            )
        };
        fleet.start(launch("t1")).await.unwrap();
        let woke = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("an assignment wakes the long poll")
            .unwrap();
        assert_ne!(woke.generation, g);
        // The change comes with the node's assignments, for the agent to
        // start at once; a node that never heartbeated gets none.
        let now = woke.assignments.expect("the node's assignments");
        let ids: Vec<&str> = now.assignments.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["t1"]);
        assert!(now.kept.is_empty() && now.generation == woke.generation);
        let stranger = stranger.await.unwrap();
        assert!(stranger.generation != g && stranger.assignments.is_none());
        fleet.start(launch("t2")).await.unwrap();
        let woke = woke.generation;

        // t1 is reported: it comes by id; t2 is still to start: in full.
        let reply = c
            .heartbeat("n1", heartbeat(vec![running("t1")], true))
            .unwrap();
        assert_eq!(reply.kept, ["t1"]);
        let full: Vec<&str> = reply.assignments.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(full, ["t2"]);
        assert!(reply.generation >= woke);

        // An agent that does not ask for compact replies gets everything.
        let reply = c
            .heartbeat("n1", heartbeat(vec![running("t1")], false))
            .unwrap();
        assert!(reply.kept.is_empty());
        let full: Vec<&str> = reply.assignments.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(full, ["t1", "t2"]);
        assert!(reply.assignments[0].reported && !reply.assignments[1].reported);
    }
}
