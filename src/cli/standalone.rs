//! `plan`, `apply`, `status` and `destroy` against the local Docker engine:
//! an embedded controller and agent in one process, like `docker compose`,
//! with ECS semantics and a printed plan.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{diagnostics, Format, EXIT_FAILURE, EXIT_USAGE};
use crate::apply::{self, ApplyError, Event, Sink};
use crate::model::{self, DesiredState, ObservedState, TaskDefRef, TaskStatus};
use crate::plan::{self, render, Plan};
use crate::runtime::docker::DockerRuntime;
use crate::runtime::Runtime;
use crate::secrets::Resolver;
use crate::store::{FileStore, Stored};
use crate::validate;

/// Options shared by the commands that read a source and the local state.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StateArgs {
    /// Where standalone state (task definition revisions, applied
    /// resources) is kept. Default: $RECONCILE_STATE_DIR, else
    /// $XDG_STATE_HOME/reconcile, else ~/.local/state/reconcile.
    #[arg(long, value_name = "DIR", global = true)]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Directory (read recursively) or manifest file.
    #[arg(default_value = ".")]
    source: PathBuf,
    /// Save the plan to FILE, for `reconcile apply FILE`.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Exit 0 when there are no changes, 2 when there are, 1 on error.
    #[arg(long)]
    detailed_exitcode: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Show every field of created resources and multi-line diffs.
    #[arg(long)]
    detail: bool,
    /// Allow a plan that deletes more than half of the existing services.
    #[arg(long)]
    allow_mass_delete: bool,
    #[command(flatten)]
    remote: super::fleet::RemoteArgs,
    #[command(flatten)]
    git: super::GitArgs,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// A source directory or manifest file, or a plan saved by
    /// `reconcile plan --out FILE`.
    #[arg(default_value = ".")]
    source: PathBuf,
    /// Apply without asking for confirmation (required when stdin is not a
    /// terminal).
    #[arg(long)]
    auto_approve: bool,
    /// Allow a plan that deletes more than half of the existing services.
    #[arg(long)]
    allow_mass_delete: bool,
    /// With --controller: only request the reconcile, without waiting for
    /// it and its rollouts to end.
    #[arg(long)]
    no_wait: bool,
    /// Give up waiting for a rollout step to become healthy after this many
    /// seconds (with --controller: for the whole reconcile).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    timeout: u64,
    /// Tasks without a health check count as healthy after running this
    /// many seconds.
    #[arg(long, default_value_t = 3, value_name = "SECONDS")]
    settle: u64,
    /// Show every field of created resources and multi-line diffs.
    #[arg(long)]
    detail: bool,
    #[command(flatten)]
    remote: super::fleet::RemoteArgs,
    #[command(flatten)]
    git: super::GitArgs,
    #[command(flatten)]
    state: StateArgs,
}

impl ApplyArgs {
    /// An apply of `source` as another command runs it (rollback, abort).
    pub(crate) fn new(
        source: PathBuf,
        auto_approve: bool,
        timeout: u64,
        settle: u64,
        git: super::GitArgs,
        state: StateArgs,
    ) -> ApplyArgs {
        ApplyArgs {
            source,
            auto_approve,
            allow_mass_delete: false,
            no_wait: false,
            timeout,
            settle,
            detail: false,
            remote: super::fleet::RemoteArgs::default(),
            git,
            state,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The source whose resources to show.
    #[arg(default_value = ".")]
    source: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    remote: super::fleet::RemoteArgs,
    #[command(flatten)]
    git: super::GitArgs,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Debug, clap::Args)]
pub struct DestroyArgs {
    /// The source whose resources to remove.
    #[arg(default_value = ".")]
    source: PathBuf,
    /// Destroy without asking for confirmation (required when stdin is not
    /// a terminal).
    #[arg(long)]
    auto_approve: bool,
    #[command(flatten)]
    git: super::GitArgs,
    #[command(flatten)]
    state: StateArgs,
}

/// A plan saved to a file: the plan, the desired state it was made from,
/// and the source it belongs to. Holds secret fingerprints, never values.
#[derive(Debug, Serialize, Deserialize)]
struct SavedPlan {
    format_version: String,
    kind: String,
    source: String,
    source_id: String,
    seed: u64,
    plan: Plan,
    desired: DesiredState,
}

const SAVED_KIND: &str = "reconcile-saved-plan";

pub(crate) fn state_dir(args: &StateArgs) -> PathBuf {
    if let Some(d) = &args.state_dir {
        return d.clone();
    }
    if let Some(d) = std::env::var_os("RECONCILE_STATE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("reconcile");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/state/reconcile")
}

/// A source's identity: its canonical path, digested. Resources are owned
/// by the source that applied them.
fn source_id(path: &Path, git: &super::GitArgs) -> Result<(String, String), String> {
    if let Some(g) = git.source(path)? {
        let shown = format!("git+{}", g.display());
        return Ok((model::digest(&shown), shown));
    }
    let canonical =
        std::fs::canonicalize(path).map_err(|e| format!("`{}`: {e}", path.display()))?;
    let shown = canonical.display().to_string();
    Ok((model::digest(&shown), shown))
}

/// A source's identity, for the commands that find its state.
pub(crate) fn source_id_of(path: &Path, git: &super::GitArgs) -> Result<String, String> {
    source_id(path, git).map(|(id, _)| id)
}

/// Where a source's bare secret names are read: next to a directory source;
/// for a git source (a repository holds no secrets) in the current
/// directory's `.reconcile/secrets`, or `RECONCILE_SECRETS_DIR`.
fn resolver_for(path: &Path) -> Resolver {
    if path.to_string_lossy().starts_with("git+") {
        Resolver::for_source(Path::new("."))
    } else {
        Resolver::for_source(path)
    }
}

/// Everything a command needs about its source.
struct Loaded {
    desired: DesiredState,
    secret_errors: Vec<String>,
}

/// Read and validate a source; on invalid input print the diagnostics and
/// return the exit status.
fn load(path: &Path, git: &super::GitArgs, state: &StateArgs) -> Result<Loaded, ExitCode> {
    let files = match git.read(path, &state_dir(state).join("git")) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return Err(ExitCode::from(EXIT_USAGE));
        }
    };
    let v = validate::validate(files);
    if !v.is_valid() {
        let mut err = std::io::stderr().lock();
        let _ = diagnostics::write_text(
            &v,
            &mut err,
            diagnostics::colour(std::io::stderr().is_terminal()),
        );
        let _ = writeln!(
            err,
            "error: the source is invalid; nothing was planned or applied"
        );
        return Err(ExitCode::from(EXIT_FAILURE));
    }
    let mut desired = DesiredState::from_manifests(v.entries.iter().map(|e| &e.manifest));
    let errors = desired.fingerprint_secrets(&resolver_for(path));
    Ok(Loaded {
        desired,
        secret_errors: errors.into_iter().map(|e| e.to_string()).collect(),
    })
}

fn runtime_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
        .block_on(f)
}

async fn observe(rt: &DockerRuntime, stored: Stored) -> Result<ObservedState, String> {
    let obs = rt.observe().await.map_err(|e| e.message)?;
    let mut o = ObservedState {
        tasks: obs.tasks,
        nodes: obs.nodes,
        ..ObservedState::default()
    };
    stored.into_observed(&mut o);
    Ok(o)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn store_path(state: &StateArgs, id: &str) -> PathBuf {
    state_dir(state).join(format!("standalone-{id}.json"))
}

fn open_store(state: &StateArgs, id: &str) -> Result<FileStore, String> {
    FileStore::open(&store_path(state, id)).map_err(|e| e.to_string())
}

fn style(detail: bool) -> render::Style {
    render::Style {
        colour: diagnostics::colour(std::io::stdout().is_terminal()),
        detail,
    }
}

pub fn plan_cmd(a: PlanArgs) -> ExitCode {
    if a.remote.controller.is_some() {
        if a.out.is_some() {
            return usage("--out is not available with --controller");
        }
        return super::fleet::plan_remote(&a.remote, a.format, a.detail, a.detailed_exitcode);
    }
    let loaded = match load(&a.source, &a.git, &a.state) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let (id, shown) = match source_id(&a.source, &a.git) {
        Ok(x) => x,
        Err(e) => return usage(e),
    };
    let result = runtime_block(async {
        // Not locked: status works while an apply runs.
        let stored = FileStore::peek(&store_path(&a.state, &id)).map_err(|e| e.to_string())?;
        let rt = DockerRuntime::connect(&id, "local")
            .await
            .map_err(|e| e.message)?;
        let observed = observe(&rt, stored).await?;
        let opts = plan::Options {
            now: now(),
            seed: seed_of(&id),
            allow_mass_delete: a.allow_mass_delete,
            record_observed: a.out.is_some(),
        };
        let mut p = plan::plan(&loaded.desired, &observed, &opts);
        p.errors.extend(loaded.secret_errors.iter().cloned());
        Ok::<_, String>((p, opts.seed))
    });
    let (p, seed) = match result {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match a.format {
        Format::Text => print!("{}", render::text(&p, style(a.detail))),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&render::json(&p)).unwrap_or_default()
        ),
    }
    if let Some(out) = &a.out {
        let saved = SavedPlan {
            format_version: plan::FORMAT_VERSION.into(),
            kind: SAVED_KIND.into(),
            source: shown,
            source_id: id,
            seed,
            plan: p.clone(),
            desired: loaded.desired,
        };
        let text = serde_json::to_string_pretty(&saved).unwrap_or_default();
        if let Err(e) = std::fs::write(out, text) {
            eprintln!("error: cannot write `{}`: {e}", out.display());
            return ExitCode::from(EXIT_FAILURE);
        }
        eprintln!(
            "Saved the plan to {}; apply it with `reconcile apply {}`.",
            out.display(),
            out.display()
        );
    }
    if !p.errors.is_empty() {
        return ExitCode::from(EXIT_FAILURE);
    }
    if a.detailed_exitcode && p.has_changes() {
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

fn seed_of(id: &str) -> u64 {
    u64::from_str_radix(&id[..id.len().min(16)], 16).unwrap_or(0)
}

fn usage(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(EXIT_USAGE)
}

/// Ask on the terminal; refuse without one unless auto-approved.
fn confirm(auto: bool, what: &str) -> Result<(), ExitCode> {
    if auto {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        eprintln!(
            "error: stdin is not a terminal; pass --auto-approve to {what} without confirmation"
        );
        return Err(ExitCode::from(EXIT_FAILURE));
    }
    eprint!("\nDo you want to {what}? Only 'yes' will be accepted: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    if line.trim() == "yes" {
        Ok(())
    } else {
        eprintln!("Cancelled: nothing was changed.");
        Err(ExitCode::from(EXIT_FAILURE))
    }
}

/// Progress output: a spinner line on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    store: FileStore,
    counter: std::sync::atomic::AtomicU64,
    /// Where abort requests for this source appear.
    aborts: PathBuf,
}

impl Progress {
    fn new(store: FileStore, interactive: bool, aborts: PathBuf) -> Progress {
        let bar = interactive.then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Progress {
            bar,
            started: Instant::now(),
            store,
            counter: std::sync::atomic::AtomicU64::new(0),
            aborts,
        }
    }

    fn line(&self, s: String) {
        match &self.bar {
            Some(b) => b.println(s),
            None => eprintln!("{s}"),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Sink for Progress {
    fn event(&self, e: Event) {
        let text = match e {
            Event::Resource { address, action } => format!("{address}: {action:?}"),
            Event::Registered { family, revision } => format!("registered {family}:{revision}"),
            Event::Started {
                service,
                task,
                node,
                revision,
            } => {
                format!(
                    "{service}: started task {} (revision {revision}) on {node}",
                    plan::short(&task)
                )
            }
            Event::Stopped {
                service,
                task,
                reason,
            } => {
                format!("{service}: stopped task {} ({reason})", plan::short(&task))
            }
            Event::Step {
                service,
                step,
                steps,
            } => format!("{service}: rollout step {step}/{steps}"),
            Event::Healthy { service, running } => {
                format!("{service}: {running} new task(s) healthy")
            }
            Event::TaskFailed {
                service,
                task: _,
                reason,
            } => format!("{service}: {reason}"),
            Event::Deployment { service, message } => format!("{service}: {message}"),
        };
        if let Some(b) = &self.bar {
            b.set_message(text.clone());
        }
        self.line(format!("  {text}"));
    }
    fn save(&self, state: &Stored) -> Result<(), String> {
        self.store.save(state).map_err(|e| e.to_string())
    }
    fn sleep(&self, d: Duration) -> impl std::future::Future<Output = ()> + Send {
        tokio::time::sleep(d)
    }
    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
    fn new_task_id(&self) -> String {
        model::new_task_id(&self.counter)
    }
    fn aborted(&self, key: &str) -> bool {
        // Asking consumes the request.
        std::fs::remove_file(self.aborts.join(model::digest(&key.to_string()))).is_ok()
    }
}

/// Print an apply failure: every failed service, with the last log lines
/// of the task that failed.
async fn report_failure(rt: &DockerRuntime, e: &ApplyError) {
    for f in e.each() {
        eprintln!("error: {f}");
        if let ApplyError::Failed { task: Some(t), .. } = f {
            for (container, logs) in rt.task_logs(t, 10).await {
                eprintln!(
                    "  last log lines of `{container}` (task {}):",
                    plan::short(t)
                );
                for l in logs.lines() {
                    eprintln!("    {l}");
                }
            }
        }
    }
}

pub fn apply_cmd(a: ApplyArgs) -> ExitCode {
    apply_with(a, None)
}

/// A change made to the stored state before planning (a requested
/// rollback): it is saved only if the apply goes ahead.
pub(crate) type Prepare = Box<dyn FnOnce(&mut Stored, &DesiredState) -> Result<(), String> + Send>;

/// Where `reconcile deployment abort` leaves its request for the apply in
/// progress on service `key` of source `id`.
pub(crate) fn abort_marker(state: &StateArgs, id: &str, key: &str) -> PathBuf {
    abort_dir(state, id).join(model::digest(&key.to_string()))
}

fn abort_dir(state: &StateArgs, id: &str) -> PathBuf {
    state_dir(state).join("aborts").join(id)
}

pub(crate) fn apply_with(a: ApplyArgs, prepare: Option<Prepare>) -> ExitCode {
    if a.remote.controller.is_some() {
        return super::fleet::apply_remote(
            &a.remote,
            (!a.no_wait).then(|| Duration::from_secs(a.timeout)),
        );
    }
    // A saved plan, or a source?
    let saved = if a.source.is_file() && a.source.extension().is_some_and(|e| e == "json") {
        match std::fs::read(&a.source)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<SavedPlan>(&b).map_err(|e| e.to_string()))
        {
            Ok(s) if s.kind == SAVED_KIND => Some(s),
            Ok(_) => return usage(format!("`{}` is not a saved plan", a.source.display())),
            Err(e) => return usage(format!("`{}` is not a saved plan: {e}", a.source.display())),
        }
    } else {
        None
    };
    let (desired, secret_errors, id, source_path) = match &saved {
        Some(s) => (
            s.desired.clone(),
            Vec::new(),
            s.source_id.clone(),
            PathBuf::from(&s.source),
        ),
        None => {
            let loaded = match load(&a.source, &a.git, &a.state) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let (id, _) = match source_id(&a.source, &a.git) {
                Ok(x) => x,
                Err(e) => return usage(e),
            };
            (loaded.desired, loaded.secret_errors, id, a.source.clone())
        }
    };
    let opts = apply::Options {
        timeout: Duration::from_secs(a.timeout),
        settle: Duration::from_secs(a.settle),
        ..apply::Options::default()
    };
    let detail = a.detail;
    let code = runtime_block(async move {
        let store = match open_store(&a.state, &id) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let mut stored = match store.load() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        if let Some(f) = prepare {
            if let Err(e) = f(&mut stored, &desired) {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        }
        let rt = match DockerRuntime::connect(&id, "local").await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {}", e.message);
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let observed = match observe(&rt, stored.clone()).await {
            Ok(o) => o,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let popts = plan::Options {
            now: now(),
            seed: saved
                .as_ref()
                .map(|s| s.seed)
                .unwrap_or_else(|| seed_of(&id)),
            allow_mass_delete: a.allow_mass_delete,
            record_observed: saved.is_some(),
        };
        let fresh = plan::plan(&desired, &observed, &popts);
        let p = match &saved {
            Some(s) => {
                let moved = stale(&s.plan, &fresh);
                if !moved.is_empty() {
                    eprintln!("error: the saved plan is stale; the observed state moved since it was made:");
                    for m in moved {
                        eprintln!("  {m}");
                    }
                    eprintln!("Nothing was applied. Run `reconcile plan` again.");
                    return ExitCode::from(EXIT_FAILURE);
                }
                s.plan.clone()
            }
            None => {
                let mut p = fresh;
                p.errors.extend(secret_errors);
                p
            }
        };
        print!("{}", render::text(&p, style(detail)));
        if !p.errors.is_empty() {
            eprintln!("error: the plan cannot be applied; nothing was changed");
            return ExitCode::from(EXIT_FAILURE);
        }
        if !p.has_changes() {
            // A rollout an interrupted apply left open, that has settled.
            let settled =
                apply::complete_settled(&p, &observed.tasks, &mut stored, opts.settle, now());
            if !settled.is_empty() {
                if let Err(e) = store.save(&stored) {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_FAILURE);
                }
                for (service, message) in settled {
                    eprintln!("{service}: {message}");
                }
            }
            return ExitCode::SUCCESS;
        }
        if saved.is_none() {
            if let Err(code) = confirm(a.auto_approve, "perform these actions") {
                return code;
            }
        }
        let aborts = abort_dir(&a.state, &id);
        // Requests left from an earlier apply are not for this one.
        let _ = std::fs::remove_dir_all(&aborts);
        let progress = Progress::new(store, std::io::stderr().is_terminal(), aborts);
        let resolver = resolver_for(&source_path);
        let result =
            apply::apply(&p, &desired, &mut stored, &rt, &resolver, &opts, &progress).await;
        progress.finish();
        match result {
            Ok(()) => {
                let summary = steady_summary(&rt, &stored).await;
                println!("Apply complete: {summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                report_failure(&rt, &e).await;
                eprintln!("The apply stopped; what it did is recorded. Run `reconcile plan` to see what is left.");
                ExitCode::from(EXIT_FAILURE)
            }
        }
    });
    code
}

/// How the saved plan's view of each resource differs from now.
fn stale(saved: &Plan, fresh: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<&String> =
        saved.observed.keys().chain(fresh.observed.keys()).collect();
    for k in keys {
        let before = saved.observed.get(k).cloned().unwrap_or(Value::Null);
        let after = fresh.observed.get(k).cloned().unwrap_or(Value::Null);
        if before != after {
            let changes: Vec<String> = plan::diff::diff(&before, &after)
                .into_iter()
                .take(6)
                .map(|f| {
                    let show = |v: &Option<Value>| {
                        v.as_ref().map_or("(none)".to_string(), |v| v.to_string())
                    };
                    format!(
                        "{}: {} -> {}",
                        if f.path.is_empty() { "state" } else { &f.path },
                        show(&f.before),
                        show(&f.after)
                    )
                })
                .collect();
            out.push(format!("{k}: {}", changes.join("; ")));
        }
    }
    out
}

async fn steady_summary(rt: &DockerRuntime, stored: &Stored) -> String {
    let Ok(obs) = rt.observe().await else {
        return "state recorded".into();
    };
    let mut parts = Vec::new();
    for (key, s) in &stored.services {
        let running = obs
            .tasks
            .iter()
            .filter(|t| {
                t.last_status == TaskStatus::Running
                    && format!("{}/{}", t.cluster, t.service.clone().unwrap_or_default()) == *key
            })
            .count();
        let desired = s
            .spec
            .desired_count
            .map(|d| d.to_string())
            .unwrap_or_else(|| "daemon".into());
        parts.push(format!(
            "{key} {running}/{desired} running ({})",
            TaskDefRef::parse(&s.spec.task_definition).at(s.revision)
        ));
    }
    if parts.is_empty() {
        "no services".into()
    } else {
        parts.join(", ")
    }
}

pub fn status_cmd(a: StatusArgs) -> ExitCode {
    if a.remote.controller.is_some() {
        return super::fleet::status_remote(&a.remote, a.format);
    }
    let (id, _) = match source_id(&a.source, &a.git) {
        Ok(x) => x,
        Err(e) => return usage(e),
    };
    let result = runtime_block(async {
        // Not locked: status works while an apply runs.
        let stored = FileStore::peek(&store_path(&a.state, &id)).map_err(|e| e.to_string())?;
        let rt = DockerRuntime::connect(&id, "local")
            .await
            .map_err(|e| e.message)?;
        observe(&rt, stored).await
    });
    let o = match result {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let report = status_report(&o);
    match a.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        Format::Text => print!("{}", status_text(&report)),
    }
    ExitCode::SUCCESS
}

fn status_report(o: &ObservedState) -> Value {
    let services: Vec<Value> = o
        .services
        .iter()
        .map(|(key, s)| {
            let tasks: Vec<&model::Task> = o
                .tasks
                .iter()
                .filter(|t| format!("{}/{}", t.cluster, t.service.clone().unwrap_or_default()) == *key)
                .collect();
            let count = |st: TaskStatus| tasks.iter().filter(|t| t.last_status == st).count();
            serde_json::json!({
                "service": key,
                "cluster": s.key.cluster,
                "name": s.key.name,
                "taskDefinition": TaskDefRef::parse(&s.spec.task_definition).at(s.revision).to_string(),
                "desired": s.spec.desired_count,
                "running": count(TaskStatus::Running),
                "pending": count(TaskStatus::Pending),
                "deployments": o.deployments.get(key).map(|h| h.views(&tasks)).unwrap_or_default(),
                "events": o.deployments.get(key).map(|h| h.events.iter().rev().take(STATUS_EVENTS).collect::<Vec<_>>()).unwrap_or_default(),
                "held": o.deployments.get(key).and_then(|h| h.held.as_ref()),
                "tasks": tasks.iter().map(|t| serde_json::json!({
                    "id": t.id, "node": t.node, "revision": t.revision,
                    "lastStatus": t.last_status, "health": t.health,
                    "ports": t.bindings, "stopCode": t.stop_code, "stoppedReason": t.stopped_reason,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({"services": services, "nodes": o.nodes})
}

/// Events per service that `status` shows, newest first.
const STATUS_EVENTS: usize = 5;

fn status_text(r: &Value) -> String {
    let mut out = String::new();
    let services = r["services"].as_array().cloned().unwrap_or_default();
    if services.is_empty() {
        out.push_str("No services applied from this source.\n");
    }
    for s in services {
        out.push_str(&format!(
            "Service {}  {}  running {}/{}  pending {}\n",
            s["service"].as_str().unwrap_or_default(),
            s["taskDefinition"].as_str().unwrap_or_default(),
            s["running"],
            s["desired"],
            s["pending"]
        ));
        out.push_str(&super::deployments::text(
            &serde_json::from_value::<Vec<_>>(s["deployments"].clone()).unwrap_or_default(),
            &serde_json::from_value::<Vec<_>>(s["events"].clone()).unwrap_or_default(),
            serde_json::from_value(s["held"].clone())
                .ok()
                .flatten()
                .as_ref(),
        ));
        for t in s["tasks"].as_array().cloned().unwrap_or_default() {
            let ports: Vec<String> = t["ports"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|p| {
                    format!(
                        "{}:{}->{}",
                        p["containerName"].as_str().unwrap_or_default(),
                        p["hostPort"],
                        p["containerPort"]
                    )
                })
                .collect();
            out.push_str(&format!(
                "  task {}  {}  rev {}  {}  {}{}{}\n",
                plan::short(t["id"].as_str().unwrap_or_default()),
                t["node"].as_str().unwrap_or_default(),
                t["revision"],
                t["lastStatus"].as_str().unwrap_or_default(),
                t["health"].as_str().unwrap_or_default(),
                if ports.is_empty() {
                    String::new()
                } else {
                    format!("  ports {}", ports.join(","))
                },
                t["stoppedReason"]
                    .as_str()
                    .map(|r| format!("  stopped: {r}"))
                    .unwrap_or_default(),
            ));
        }
    }
    out
}

pub fn destroy_cmd(a: DestroyArgs) -> ExitCode {
    let (id, _) = match source_id(&a.source, &a.git) {
        Ok(x) => x,
        Err(e) => return usage(e),
    };
    runtime_block(async move {
        let store = match open_store(&a.state, &id) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let mut stored = store.load().unwrap_or_default();
        let rt = match DockerRuntime::connect(&id, "local").await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {}", e.message);
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let observed = match observe(&rt, stored.clone()).await {
            Ok(o) => o,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        // Destroying is planning against an empty source.
        let p = plan::plan(
            &DesiredState::default(),
            &observed,
            &plan::Options {
                now: now(),
                seed: 0,
                allow_mass_delete: true,
                record_observed: false,
            },
        );
        let p = Plan {
            warnings: Vec::new(),
            ..p
        };
        print!("{}", render::text(&p, style(false)));
        if !p.has_changes() {
            return ExitCode::SUCCESS;
        }
        if let Err(code) = confirm(a.auto_approve, "destroy all these resources") {
            return code;
        }
        let progress = Progress::new(store, false, abort_dir(&a.state, &id));
        let resolver = resolver_for(&a.source);
        match apply::apply(
            &p,
            &DesiredState::default(),
            &mut stored,
            &rt,
            &resolver,
            &apply::Options::default(),
            &progress,
        )
        .await
        {
            Ok(()) => {
                println!("Destroy complete.");
                ExitCode::SUCCESS
            }
            Err(e) => {
                report_failure(&rt, &e).await;
                ExitCode::from(EXIT_FAILURE)
            }
        }
    })
}
