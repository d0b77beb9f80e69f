//! `reconcile controller`: follows a source and converges a fleet of nodes,
//! each running `reconcile agent`.
//!
//! The controller runs the same reconcile pass as standalone mode
//! ([`crate::reconcile`]) with a different runtime: `Fleet` observes the
//! tasks agents report and
//! "starts" a task by assigning it to the node the plan chose; the agent
//! then runs it on its Docker engine and reports it. So what a controller
//! does is what `plan` shows, exactly as in standalone mode.
//!
//! Its state is in typed parts, each behind its own lock (see the fields
//! of [`Controller`]). Its parts, each a file of this module:
//! - `source`: what the controller follows (a watched directory or a git
//!   branch: fetch with backoff, signature checks, validation);
//! - `membership`: nodes, heartbeats, assignments, node loss, and the
//!   observed state built from what agents report;
//! - `fleet`: the [`Runtime`](crate::runtime::Runtime) over the agents;
//! - `pass`: one reconcile pass over the core, and superseding;
//! - `requests`: sync, suspend, abort, rollback, history, status;
//! - `autoscale`: managed scaling's launches and retirements;
//! - `rebalance`: moving tasks of uneven spread services;
//! - `service_scaling`: service auto scaling's evaluations;
//! - `http`: the API; `serve`: its connections and their bounds;
//!   `limits`: rate limits and webhook replays; `store`: the database;
//!   `openapi`: the API document;
//! - `secret_store`: the operator's secrets, sealed in the database;
//! - `leader`: the election among controllers sharing an etcd store;
//!   `standby`: their API while they stand by.
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

mod audit;
pub mod auth;
mod autoscale;
mod events;
mod fleet;
pub mod http;
mod identity;
pub mod launcher;
pub mod leader;
pub mod limits;
pub mod logs;
mod membership;
pub mod openapi;
mod pass;
mod rebalance;
mod requests;
mod runs;
pub mod scaling;
mod scrape;
mod secret_store;
pub mod serve;
mod service_scaling;
mod source;
pub mod standby;
pub mod store;
mod traffic;

pub use source::{Commit, Source};

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::model::{DesiredState, Task};
use crate::secrets::Resolver;
use crate::store::Stored;
use crate::validate;
use fleet::{resolve_secrets, Fleet};
use store::{AssignmentRecord, Db, NodeRecord};

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
    /// A node LOST this long is forgotten (its record and credential).
    pub forget_lost_after: Duration,
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
    /// Whom those nodes trust: the controller's CA (by hash or file), or
    /// plain HTTP.
    pub node_trust: crate::tls::Trust,
    /// Service DNS names are `NAME.CLUSTER.<dns_domain>`.
    pub dns_domain: String,
}

/// Live state of a node: its record plus what its agent last said.
struct Node {
    record: NodeRecord,
    last_seen: Option<Instant>,
    reported: Vec<Task>,
    /// Where other nodes reach its tasks' host ports, as its agent said.
    address: Option<std::net::IpAddr>,
    /// The traffic generation it serves, and its listeners' requests in
    /// flight per target task.
    traffic_ack: u64,
    inflight: BTreeMap<String, u64>,
    /// What its reported tasks used when it last sampled them, by task id.
    usage: BTreeMap<String, crate::utilization::TaskUsage>,
    /// Its listeners' requests per minute per target.
    served: crate::utilization::ServedRate,
}

/// Nodes and what they run: what heartbeats, the long poll and the fleet
/// runtime read and write.
struct Members {
    nodes: BTreeMap<String, Node>,
    /// Task id -> assignment (with secret values, in memory only).
    assignments: BTreeMap<String, AssignmentRecord>,
    /// Nodes launched by managed scaling that have not joined yet.
    joining: BTreeMap<String, (String, Instant)>,
    /// Clusters the source defines; agents of other clusters are refused.
    clusters: BTreeSet<String>,
    /// Node name -> the credential it joined with (hashed).
    credentials: BTreeMap<String, store::NodeCredential>,
}

/// What the controller follows: fetch and signature bookkeeping.
struct Following {
    /// The commit last fetched, and the one last applied in full.
    fetched: Option<Commit>,
    applied: Option<Commit>,
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
}

/// What was applied, and what the last plan found.
struct Applied {
    stored: Stored,
    /// The desired state of the last valid source.
    desired: Option<DesiredState>,
    /// Tasks the last plan could not place, by service key.
    unplaced: BTreeMap<String, u32>,
    /// The same with the reason code: (cluster, service, reason, tasks).
    placement: Vec<(String, String, &'static str, u32)>,
    /// Commit each resource (by plan address) was last changed from.
    commits: BTreeMap<String, String>,
}

/// What users asked for, and whether an apply runs.
struct Requests {
    /// Suspended: the source is still read and reported, nothing applied.
    suspended: bool,
    /// Torn down (`destroy --controller`): passes apply an empty source,
    /// so everything goes and stays gone, until `resume`.
    torn_down: bool,
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
}

/// The reconcile loop's progress.
struct Passes {
    /// Passes completed, and whether one is under way.
    passes: u64,
    in_pass: bool,
    /// Why the last pass did not apply, if it did not.
    last_error: Option<String>,
}

/// A lock's guard; a panic while it was held leaves data that is still
/// consistent field by field, so the poison is ignored.
fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

const ABORTED: &str = "deployment aborted by the user";
const ROLLED_BACK: &str = "rolled back by the user";

pub struct Controller {
    config: Config,
    db: Arc<Db>,
    // The state in parts, each behind its own lock, so that a heartbeat, a
    // status read and a pass contend only where they share data. A guard
    // is held briefly and never across an await; where two are held at
    // once they are taken in the order of these fields.
    members: Mutex<Members>,
    traffic: Mutex<traffic::TrafficState>,
    applied: Mutex<Applied>,
    requests: Mutex<Requests>,
    following: Mutex<Following>,
    passes: Mutex<Passes>,
    events: Mutex<events::Events>,
    started: Instant,
    /// Wakes the reconcile loop early (node joined or lost, sync request).
    wake: Notify,
    /// Bumped whenever assignments change: agents waiting on
    /// `/v1/nodes/{name}/changes` heartbeat at once instead of at their
    /// next interval, and the long poll carries the node's assignments,
    /// so a start or stop reaches a node in one round trip.
    /// Task log sessions in progress, relayed from nodes to readers.
    logs: logs::LogSessions,
    assigned: tokio::sync::watch::Sender<u64>,
    /// Bumped on every heartbeat: a stop waiting for its node to report
    /// the task gone looks again at once.
    reported: tokio::sync::watch::Sender<u64>,
    /// Bare `valueFrom` names from `secrets`; nothing from the
    /// controller's own environment or files.
    resolver: Resolver,
    secrets: Arc<secret_store::SecretStore>,
    /// Per-file validation results of the last read: a pass re-checks only
    /// the files a commit changed.
    files: Mutex<validate::FileCache>,
    /// Named API tokens (hashed), by name.
    tokens: Mutex<BTreeMap<String, store::TokenRecord>>,
    audit: audit::Audit,
    /// Refused requests are logged at most once a second per route.
    refused: auth::Refusals,
    /// Launches nodes for managed scaling; connected on first need.
    launcher: tokio::sync::OnceCell<Result<launcher::Launcher, String>>,
    metrics: crate::metrics::controller::ControllerMetrics,
    /// CapacityProviderReservation (percent) of each managed provider, as
    /// managed scaling last computed it.
    reservations: Mutex<BTreeMap<String, crate::report::ProviderReservation>>,
    /// Auto scaled services' counts and decisions, by service key (kept in
    /// the database's own table).
    scaling: Mutex<BTreeMap<String, crate::autoscaling::Scaled>>,
    /// Rebalancing of spread services: quiet clusters, services moving.
    rebalancing: Mutex<rebalance::Rebalancing>,
    /// Tasks started outside any service, by id (kept in the database's
    /// own table).
    runs: Mutex<BTreeMap<String, crate::runs::RunRecord>>,
    /// Scheduled tasks' state between fires, by name (their own table).
    schedules: Mutex<BTreeMap<String, crate::runs::scheduled::ScheduleState>>,
    /// The election this controller won, when it shares an etcd store.
    election: std::sync::OnceLock<Arc<leader::Election>>,
}

impl Controller {
    /// Open with the default store: redb in the data directory.
    pub fn open(config: Config) -> Result<Arc<Controller>, String> {
        let db = Db::open(&config.data_dir).map_err(|e| e.to_string())?;
        Controller::open_on(config, db)
    }

    /// Open on a store of any backend (etcd, for a replicated control
    /// plane). The data directory still holds what is never shared
    /// through the store: the installation key, TLS files, the audit log.
    pub fn open_on(config: Config, db: Db) -> Result<Arc<Controller>, String> {
        let db = Arc::new(db);
        let loaded = db.load().map_err(|e| e.to_string())?;
        // Kept beside the store, not in it: a copy of the store alone
        // opens no secret.
        let key = crate::secrets::InstallKey::load_or_create(
            &config.data_dir.join(crate::secrets::KEY_FILE),
        )?;
        secret_store::check_key(&db, &key, &config.data_dir)?;
        let secrets = Arc::new(secret_store::SecretStore::new(db.clone(), &key));
        let resolver = Resolver::fleet(secrets.clone(), &key);
        let mut nodes = BTreeMap::new();
        for r in loaded.nodes {
            nodes.insert(
                r.info.name.clone(),
                Node {
                    record: r,
                    last_seen: None,
                    reported: Vec::new(),
                    address: None,
                    traffic_ack: 0,
                    inflight: BTreeMap::new(),
                    usage: BTreeMap::new(),
                    served: Default::default(),
                },
            );
        }
        let mut assignments = BTreeMap::new();
        for mut a in loaded.assignments {
            // Secret values are not stored: resolve them again.
            a.task.secrets = resolve_secrets(&resolver, &a.task.spec);
            assignments.insert(a.task.identity.id.clone(), a);
        }
        let audit = audit::Audit::new(&config.data_dir);
        let controller = Arc::new(Controller {
            audit,
            refused: auth::Refusals::default(),
            config,
            db,
            members: Mutex::new(Members {
                nodes,
                assignments,
                joining: BTreeMap::new(),
                clusters: BTreeSet::new(),
                credentials: loaded.credentials,
            }),
            traffic: Mutex::default(),
            applied: Mutex::new(Applied {
                stored: loaded.stored,
                desired: None,
                unplaced: BTreeMap::new(),
                placement: Vec::new(),
                commits: loaded.commits,
            }),
            requests: Mutex::new(Requests {
                suspended: loaded.suspended,
                torn_down: loaded.torn_down,
                mass_delete_approved: None,
                aborts: BTreeSet::new(),
                applying: false,
                pending: Vec::new(),
            }),
            following: Mutex::new(Following {
                fetched: None,
                applied: None,
                verified: None,
                fetch_failures: 0,
                fetch_backoff: None,
                fetch_now: false,
                fetch_error: None,
            }),
            passes: Mutex::new(Passes {
                passes: 0,
                in_pass: false,
                last_error: None,
            }),
            events: Mutex::new(events::Events::new(loaded.events)),
            started: Instant::now(),
            wake: Notify::new(),
            logs: logs::LogSessions::default(),
            assigned: tokio::sync::watch::Sender::new(0),
            reported: tokio::sync::watch::Sender::new(0),
            resolver,
            secrets,
            files: Mutex::default(),
            tokens: Mutex::new(
                loaded
                    .tokens
                    .into_iter()
                    .map(|t| (t.view.name.clone(), t))
                    .collect(),
            ),
            launcher: tokio::sync::OnceCell::new(),
            metrics: Default::default(),
            reservations: Mutex::default(),
            rebalancing: Mutex::default(),
            runs: Mutex::new(loaded.runs),
            schedules: Mutex::new(loaded.schedules),
            scaling: Mutex::new(loaded.scaling),
            election: std::sync::OnceLock::new(),
        });
        // Generations of an earlier run of the controller are below this
        // one's first (milliseconds since the epoch), so an agent that
        // acknowledged one of them is sent what to serve again; a new
        // agent starts at 0.
        controller.traffic().generation = crate::clock::unix_now().max(1) as u64 * 1000;
        let stored = controller.applied().stored.clone();
        controller.traffic_services(&stored);
        Ok(controller)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This controller leads the control plane of an etcd store.
    pub fn set_election(&self, election: Arc<leader::Election>) {
        let _ = self.election.set(election);
    }

    /// The control plane: this controller alone (redb), or every
    /// controller of the etcd store.
    pub async fn control_plane(&self) -> Result<crate::wire::ControlPlane, String> {
        let store = self.db.backend().describe();
        let controllers = match self.election.get() {
            None => vec![crate::wire::ControllerView {
                url: self.config.advertise_url.clone(),
                leader: true,
                since_revision: 0,
            }],
            Some(e) => e
                .candidates()
                .await?
                .into_iter()
                .enumerate()
                .map(|(i, (url, since_revision))| crate::wire::ControllerView {
                    url,
                    leader: i == 0,
                    since_revision,
                })
                .collect(),
        };
        Ok(crate::wire::ControlPlane { store, controllers })
    }

    fn members(&self) -> MutexGuard<'_, Members> {
        guard(&self.members)
    }

    fn applied(&self) -> MutexGuard<'_, Applied> {
        guard(&self.applied)
    }

    fn requests(&self) -> MutexGuard<'_, Requests> {
        guard(&self.requests)
    }

    fn following(&self) -> MutexGuard<'_, Following> {
        guard(&self.following)
    }

    fn passes(&self) -> MutexGuard<'_, Passes> {
        guard(&self.passes)
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
        let runner = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                runner.refresh_runs();
                runner.fire_schedules();
            }
        });
        let scaler = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(service_scaling::EVALUATION).await;
                scaler.scale_services();
            }
        });
        loop {
            let pass = {
                let mut s = self.passes();
                s.in_pass = true;
                s.passes + 1
            };
            let span = tracing::info_span!("pass", n = pass, commit = tracing::field::Empty);
            let result = tracing::Instrument::instrument(self.reconcile_once(), span.clone()).await;
            let error = result.as_ref().err().cloned();
            let changed_error = {
                let mut s = self.passes();
                let changed = s.last_error != error;
                s.last_error = error.clone();
                s.in_pass = false;
                s.passes += 1;
                changed
            };
            span.in_scope(|| match (error, changed_error) {
                (Some(e), true) if e.starts_with(pass::WAITING_FOR_NODES) => self.event(e),
                (Some(e), true) => self.event(format!("reconcile failed: {e}")),
                (None, true) => self.event("reconcile succeeded".into()),
                _ => {}
            });
            self.autoscale().await;
            // After a pass that changed nothing, a move of rebalancing;
            // the next pass follows at once.
            if result == Ok(false) && self.rebalance().await {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.interval) => {}
                _ = self.wake.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{self, TaskStatus};
    use crate::runtime::{Launch, Runtime};
    use crate::wire::Heartbeat;

    pub(super) fn controller(dir: &std::path::Path) -> Arc<Controller> {
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
            forget_lost_after: Duration::from_secs(3600),
            settle: Duration::from_secs(1),
            step_timeout: Duration::from_secs(60),
            allow_mass_delete: false,
            advertise_url: String::new(),
            node_trust: Default::default(),
            dns_domain: crate::traffic::DEFAULT_DOMAIN.into(),
        })
        .unwrap()
    }

    pub(super) fn heartbeat(tasks: Vec<Task>, compact: bool) -> Heartbeat {
        Heartbeat {
            cluster: "c".into(),
            attributes: BTreeMap::new(),
            cpu: 1024,
            memory: 1024,
            reserved_ports: Vec::new(),
            agent_version: "test".into(),
            tasks,
            compact,
            address: None,
            traffic_generation: 0,
            inflight: BTreeMap::new(),
            usage: BTreeMap::new(),
            served: Default::default(),
        }
    }

    /// A task of service `web` in cluster `c`, for the tests of the parts.
    pub(super) fn identity(id: &str) -> model::TaskIdentity {
        model::TaskIdentity {
            id: id.into(),
            cluster: "c".into(),
            service: Some("web".into()),
            family: "web".into(),
            revision: 1,
            config_hash: "h".into(),
            started_by: None,
        }
    }

    pub(super) fn launch(id: &str) -> Launch {
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

    pub(super) fn running(id: &str) -> Task {
        Task {
            identity: identity(id),
            node: "n1".into(),
            last_status: TaskStatus::Running,
            health: model::Health::Unknown,
            started_at: Some(1),
            stop_code: None,
            stopped_reason: None,
            bindings: Vec::new(),
            target_health: None,
            exits: Vec::new(),
            stopped_at: None,
        }
    }

    /// What the agent relies on: assignment changes wake its long poll,
    /// and a compact reply carries specifications only for tasks the node
    /// has not reported, the rest by id.
    #[tokio::test]
    async fn assignment_changes_wake_agents_and_compact_replies_name_reported_tasks_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let c = controller(dir.path());
        c.join("n1", "c").unwrap();
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
        let ids: Vec<&str> = now
            .assignments
            .iter()
            .map(|a| a.identity.id.as_str())
            .collect();
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
        let full: Vec<&str> = reply
            .assignments
            .iter()
            .map(|a| a.identity.id.as_str())
            .collect();
        assert_eq!(full, ["t2"]);
        assert!(reply.generation >= woke);

        // An agent that does not ask for compact replies gets everything.
        let reply = c
            .heartbeat("n1", heartbeat(vec![running("t1")], false))
            .unwrap();
        assert!(reply.kept.is_empty());
        let full: Vec<&str> = reply
            .assignments
            .iter()
            .map(|a| a.identity.id.as_str())
            .collect();
        assert_eq!(full, ["t1", "t2"]);
        assert!(reply.assignments[0].reported && !reply.assignments[1].reported);
    }
}
