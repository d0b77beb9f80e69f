//! `plan`, `apply` and `destroy` against the local Docker engine: the
//! reconcile core with the engine as its one node, like `docker compose`,
//! with ECS semantics and a printed plan (`--controller` hands them to
//! [`super::remote`]).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::args::{
    open_store, record_claims, resolver_for, source_id, Format, GitArgs, RemoteArgs, StateArgs,
    Target,
};
use super::outcome::{self, Ending, Output};
use super::run::{block_on, failure, usage, EXIT_FAILURE, EXIT_USAGE};
use super::{diagnostics, remote};

use crate::apply::{self, Event, Sink};
use crate::model;
use crate::plan::{self, render, Plan};
use crate::reconcile::local::Aborts;
use crate::reconcile::saved::SavedPlan;
use crate::reconcile::traffic::{self as listeners, StandaloneRuntime};
use crate::reconcile::{self, Desired, Reconciler};
use crate::runtime::docker::DockerRuntime;
use crate::store::{FileStore, Snapshot, Stored};
use crate::validate;

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
    at: Target,
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
    /// Output format: `json` writes JSON lines on stdout (the plan, each
    /// progress message, then the result) and needs --auto-approve or a
    /// saved plan.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    at: Target,
}

impl ApplyArgs {
    /// An apply of `source` as another command runs it (rollback, abort).
    pub(crate) fn new(
        source: PathBuf,
        auto_approve: bool,
        timeout: u64,
        settle: u64,
        at: Target,
    ) -> ApplyArgs {
        ApplyArgs {
            source,
            auto_approve,
            allow_mass_delete: false,
            no_wait: false,
            timeout,
            settle,
            detail: false,
            format: Format::Text,
            // Run locally: the command that asked handles --controller.
            at: Target {
                remote: RemoteArgs::default(),
                ..at
            },
        }
    }
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
    /// Output format: `json` writes JSON lines on stdout (the plan, each
    /// progress message, then the result) and needs --auto-approve.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// With --controller: give up waiting for the teardown after this many
    /// seconds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    timeout: u64,
    #[command(flatten)]
    at: Target,
}

#[derive(Debug, clap::Args)]
pub struct ServeTrafficArgs {
    /// The source whose listeners to serve (its id, as in the
    /// `reconcile.io/source` label).
    #[arg(long, value_name = "ID")]
    source_id: String,
    #[command(flatten)]
    state: StateArgs,
}

/// Read and validate a source; on invalid input print the diagnostics and
/// return the exit status.
fn load(path: &Path, git: &GitArgs, state: &StateArgs, json: bool) -> Result<Desired, ExitCode> {
    let files = match git.read(path, &state.dir().git_cache()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return Err(ExitCode::from(EXIT_USAGE));
        }
    };
    let mut v = validate::validate(files);
    // Checked here, not by `validate`: which references a source may use
    // depends on the mode that runs it.
    let refused = crate::secrets::check_references(&v, crate::secrets::Mode::Standalone);
    v.diagnostics.extend(refused);
    if !v.is_valid() && json {
        // `apply --format json`: the result line says it, as for any end.
        let errors: Vec<serde_json::Value> = v
            .diagnostics
            .iter()
            .filter(|d| d.severity == validate::Severity::Error)
            .map(|d| {
                serde_json::json!({
                    "message": format!("{}:{}:{}: {}", d.file, d.span.line, d.span.column, d.message),
                    "file": d.file, "line": d.span.line, "column": d.span.column,
                })
            })
            .collect();
        outcome::line(
            serde_json::json!({"type": "result", "outcome": "invalid", "errors": errors}),
        );
        return Err(ExitCode::from(EXIT_FAILURE));
    }
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
    let resolver = resolver_for(path, state).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_FAILURE)
    })?;
    let mut desired = Desired::from_valid(&v, &resolver);
    // Standalone has no metrics loop: an auto scaled service runs its
    // desiredCount brought inside minCapacity and maxCapacity.
    crate::autoscaling::take_over(&mut desired.state, &Default::default());
    Ok(desired)
}

pub(super) fn style(detail: bool) -> render::Style {
    render::Style {
        colour: diagnostics::colour(std::io::stdout().is_terminal()),
        detail,
    }
}

pub fn plan_cmd(a: PlanArgs) -> ExitCode {
    if a.at.remote.controller.is_some() {
        if a.out.is_some() {
            return usage("--out is not available with --controller");
        }
        return remote::plan(&a.at.remote, a.format, a.detail, a.detailed_exitcode);
    }
    let desired = match load(&a.source, &a.at.git, &a.at.state, false) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let (id, shown) = match source_id(&a.source, &a.at.git, &a.at.state) {
        Ok(x) => x,
        Err(e) => return usage(e),
    };
    let opts = plan::Options {
        now: crate::clock::unix_now(),
        seed: reconcile::seed(&shown),
        allow_mass_delete: a.allow_mass_delete,
        record_observed: a.out.is_some(),
    };
    let result = block_on(async {
        // Not locked: plan works while an apply runs.
        let stored = FileStore::peek(&a.at.state.dir().store(&id)).map_err(|e| e.to_string())?;
        let rt = DockerRuntime::connect(&id, "local")
            .await
            .map_err(|e| e.message)?;
        let resolver = resolver_for(&a.source, &a.at.state)?;
        Reconciler {
            runtime: &rt,
            store: &Snapshot(stored),
            resolver: &resolver,
        }
        .plan(&desired, &opts)
        .await
    });
    let p = match result {
        Ok(p) => p,
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
        let saved = SavedPlan::new(shown, id, opts.seed, p.clone(), desired.state);
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

/// Ask on the terminal; refuse without one unless auto-approved. A
/// refusal says why on stderr.
pub(super) fn confirmed(auto: bool, what: &str) -> bool {
    if auto {
        return true;
    }
    if !std::io::stdin().is_terminal() {
        eprintln!(
            "error: stdin is not a terminal; pass --auto-approve to {what} without confirmation"
        );
        return false;
    }
    eprint!("\nDo you want to {what}? Only 'yes' will be accepted: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    let yes = line.trim() == "yes";
    if !yes {
        eprintln!("Cancelled: nothing was changed.");
    }
    yes
}

/// What `apply` and `destroy` do when the pass has a plan to apply.
enum Approval {
    /// Print the plan and ask on the terminal (`what` the user approves),
    /// unless auto-approved.
    Ask { auto: bool, what: &'static str },
    /// Print the plan and go on: a saved plan was approved when it was
    /// made.
    Given,
}

/// The standalone [`reconcile::Driver`]: the plan on stdout, the question
/// on the terminal, progress as a spinner line on a terminal and plain
/// lines otherwise.
struct Progress<'a> {
    bar: std::sync::OnceLock<indicatif::ProgressBar>,
    interactive: bool,
    started: Instant,
    store: &'a FileStore,
    counter: std::sync::atomic::AtomicU64,
    /// Where abort requests for this source appear.
    aborts: Aborts,
    approval: Approval,
    detail: bool,
    /// A destroy: the plan deletes everything on purpose, so it shows no
    /// warnings.
    destroying: bool,
    /// JSON lines on stdout instead of text ([`outcome`]).
    json: bool,
}

impl<'a> Progress<'a> {
    fn new(
        store: &'a FileStore,
        aborts: Aborts,
        approval: Approval,
        output: Output,
    ) -> Progress<'a> {
        let (detail, json) = match output {
            Output::Text { detail } => (detail, false),
            Output::Json => (false, true),
        };
        Progress {
            bar: std::sync::OnceLock::new(),
            interactive: !json && std::io::stderr().is_terminal(),
            started: Instant::now(),
            store,
            counter: std::sync::atomic::AtomicU64::new(0),
            aborts,
            approval,
            detail,
            destroying: false,
            json,
        }
    }

    fn line(&self, s: String) {
        if self.json {
            return outcome::progress_line(s.trim_start());
        }
        match self.bar.get() {
            Some(b) => b.println(s),
            None => eprintln!("{s}"),
        }
    }

    fn finish(&self) {
        if let Some(b) = self.bar.get() {
            b.finish_and_clear();
        }
    }
}

impl reconcile::Driver for Progress<'_> {
    fn approve(&self, p: &Plan) -> bool {
        if self.json {
            // Approval was given (--auto-approve or a saved plan): JSON
            // asks nothing.
            match self.destroying {
                true => outcome::plan_line(&Plan {
                    warnings: Vec::new(),
                    ..p.clone()
                }),
                false => outcome::plan_line(p),
            }
            return true;
        }
        if self.destroying {
            let quiet = Plan {
                warnings: Vec::new(),
                ..p.clone()
            };
            print!("{}", render::text(&quiet, style(self.detail)));
        } else {
            print!("{}", render::text(p, style(self.detail)));
        }
        if let Approval::Ask { auto, what } = self.approval {
            if !confirmed(auto, what) {
                return false;
            }
        }
        // The spinner starts with the apply, after any question.
        if self.interactive {
            let _ = self.bar.set({
                let b = indicatif::ProgressBar::new_spinner();
                b.enable_steady_tick(Duration::from_millis(120));
                b
            });
        }
        true
    }
}

impl Sink for Progress<'_> {
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
            Event::Waiting {
                service,
                waiting,
                elapsed,
            } => format!(
                "{service}: still waiting for {waiting} task(s) to become healthy [{}s elapsed]",
                elapsed.as_secs()
            ),
            // Said in words by the Deployment events around them.
            Event::BreakerTripped { .. } | Event::RollbackStarted { .. } => return,
        };
        if let Some(b) = self.bar.get() {
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
        self.aborts.take(key)
    }
}

pub fn apply_cmd(a: ApplyArgs) -> ExitCode {
    apply_with(a, None)
}

pub(crate) use crate::reconcile::Prepare;

pub(crate) fn apply_with(a: ApplyArgs, prepare: Option<Prepare>) -> ExitCode {
    let output = match a.format {
        Format::Text => Output::Text { detail: a.detail },
        Format::Json => Output::Json,
    };
    if a.format == Format::Json && a.at.remote.controller.is_some() {
        return usage(
            "--format json is for the local engine; with --controller, follow the apply \
             with `reconcile events --follow --format json`",
        );
    }
    if a.at.remote.controller.is_some() {
        return remote::apply(
            &a.at.remote,
            (!a.no_wait).then(|| Duration::from_secs(a.timeout)),
        );
    }
    // A saved plan, or a source?
    let plan_file = a.source.is_file() && a.source.extension().is_some_and(|e| e == "json");
    if a.format == Format::Json && !plan_file && !a.auto_approve {
        return usage("--format json asks nothing: give --auto-approve, or apply a saved plan");
    }
    let saved = if plan_file {
        match std::fs::read(&a.source)
            .map_err(|e| e.to_string())
            .and_then(|b| SavedPlan::parse(&b))
        {
            Ok(s) => Some(s),
            Err(e) => return usage(format!("`{}` is not a saved plan: {e}", a.source.display())),
        }
    } else {
        None
    };
    let (desired, id, shown, source_path) = match &saved {
        Some(s) => (
            Desired {
                state: s.desired.clone(),
                secret_errors: Vec::new(),
                notes: Vec::new(),
            },
            s.source_id.clone(),
            s.source.clone(),
            PathBuf::from(&s.source),
        ),
        None => {
            let desired = match load(&a.source, &a.at.git, &a.at.state, a.format == Format::Json) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let (id, shown) = match source_id(&a.source, &a.at.git, &a.at.state) {
                Ok(x) => x,
                Err(e) => return usage(e),
            };
            (desired, id, shown, a.source.clone())
        }
    };
    let opts = reconcile::Options {
        plan: plan::Options {
            now: crate::clock::unix_now(),
            seed: saved
                .as_ref()
                .map(|s| s.seed)
                .unwrap_or_else(|| reconcile::seed(&shown)),
            allow_mass_delete: a.allow_mass_delete,
            record_observed: saved.is_some(),
        },
        apply: apply::Options {
            timeout: Duration::from_secs(a.timeout),
            settle: Duration::from_secs(a.settle),
            ..apply::Options::default()
        },
        suspended: false,
    };
    let approval = match saved {
        Some(_) => Approval::Given,
        None => Approval::Ask {
            auto: a.auto_approve,
            what: "perform these actions",
        },
    };
    let resolver = match resolver_for(&source_path, &a.at.state) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let aborts = a.at.state.dir().aborts(&id);
    block_on(async move {
        let (store, rt) = match engine_and_store(&a.at.state, &id).await {
            Ok(x) => x,
            Err(code) => return code,
        };
        // Requests left from an earlier apply are not for this one.
        aborts.clear();
        // Before any task starts: new targets are checked by it.
        let listened = store.load().is_ok_and(|s| listeners::has_listeners(&s))
            || desired
                .state
                .services
                .values()
                .any(|s| !s.spec.load_balancers.is_empty());
        if listened {
            if let Err(code) = traffic_container(&rt, &a.at.state, &id, true).await {
                return code;
            }
        }
        let progress = Progress::new(&store, aborts, approval, output);
        let reconciler = Reconciler {
            runtime: &rt,
            store: &store,
            resolver: &resolver,
        };
        let outcome = reconciler
            .pass(
                &desired,
                &opts,
                saved.as_ref().map(|s| &s.plan),
                prepare,
                &progress,
            )
            .await;
        progress.finish();
        record_claims(&a.at.state, &id, &shown, &store);
        // Drained and stopped: no listener is left to serve.
        if !store.load().is_ok_and(|s| listeners::has_listeners(&s)) {
            if let Err(code) = traffic_container(&rt, &a.at.state, &id, false).await {
                return code;
            }
        }
        outcome::finish(&rt.docker, &store, outcome, output, Ending::Apply).await
    })
}

/// The local engine, and the source's store locked for a pass.
async fn engine_and_store(
    state: &StateArgs,
    id: &str,
) -> Result<(FileStore, StandaloneRuntime), ExitCode> {
    let store = open_store(state, id).map_err(failure)?;
    let rt = DockerRuntime::connect(id, "local")
        .await
        .map_err(|e| failure(e.message))?;
    Ok((store, StandaloneRuntime::new(rt, state.dir(), id)))
}

/// Start (or replace, when this binary changed) the source's traffic
/// container when `wanted`, else remove it: it serves the listeners while
/// the applied state or the one being applied has any.
async fn traffic_container(
    rt: &StandaloneRuntime,
    state: &StateArgs,
    id: &str,
    wanted: bool,
) -> Result<(), ExitCode> {
    let docker = rt.docker.docker();
    let done = if wanted {
        listeners::ensure(docker, &state.dir(), id).await
    } else {
        listeners::remove(docker, &state.dir(), id).await
    };
    done.map_err(failure)
}

pub fn serve_traffic_cmd(a: ServeTrafficArgs) -> ExitCode {
    match block_on(listeners::serve(a.state.dir(), a.source_id)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failure(e),
    }
}

pub fn destroy_cmd(a: DestroyArgs) -> ExitCode {
    if a.at.remote.controller.is_some() {
        if a.format == Format::Json {
            return usage(
                "--format json is for the local engine; with --controller, follow the teardown \
                 with `reconcile events --follow --format json`",
            );
        }
        return super::teardown::destroy(
            &a.at.remote,
            a.auto_approve,
            Duration::from_secs(a.timeout),
        );
    }
    let output = match a.format {
        Format::Text => Output::Text { detail: false },
        Format::Json if a.auto_approve => Output::Json,
        Format::Json => return usage("--format json asks nothing: give --auto-approve"),
    };
    let (id, shown) = match source_id(&a.source, &a.at.git, &a.at.state) {
        Ok(x) => x,
        Err(e) => return usage(e),
    };
    // Destroying is a pass against an empty source.
    let desired = Desired::default();
    let opts = reconcile::Options {
        plan: plan::Options {
            now: crate::clock::unix_now(),
            seed: 0,
            allow_mass_delete: true,
            record_observed: false,
        },
        apply: apply::Options::default(),
        suspended: false,
    };
    let resolver = match resolver_for(&a.source, &a.at.state) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    block_on(async move {
        let (store, rt) = match engine_and_store(&a.at.state, &id).await {
            Ok(x) => x,
            Err(code) => return code,
        };
        let approval = Approval::Ask {
            auto: a.auto_approve,
            what: "destroy all these resources",
        };
        let mut progress = Progress::new(&store, a.at.state.dir().aborts(&id), approval, output);
        // Deleting every service is the point: no mass-deletion warning.
        progress.destroying = true;
        let reconciler = Reconciler {
            runtime: &rt,
            store: &store,
            resolver: &resolver,
        };
        let outcome = reconciler
            .pass(&desired, &opts, None, None, &progress)
            .await;
        progress.finish();
        record_claims(&a.at.state, &id, &shown, &store);
        // Unless the destroy was declined or failed, nothing is left to serve.
        if !store.load().is_ok_and(|s| listeners::has_listeners(&s)) {
            if let Err(code) = traffic_container(&rt, &a.at.state, &id, false).await {
                return code;
            }
        }
        outcome::finish(&rt.docker, &store, outcome, output, Ending::Destroy).await
    })
}
