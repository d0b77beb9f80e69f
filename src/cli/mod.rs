//! The command line: argument parsing, terminals, colours and exit codes.
//! Everything below this module returns data and typed errors.

mod args;
mod deployments;
mod diagnostics;
mod events;
mod examples;
mod fleet;
mod import;
mod import_compose;
mod logging;
mod logs;
mod logs_remote;
mod manual;
mod outcome;
mod remote;
mod render;
mod replicated;
mod run;
mod secret;
mod standalone;
mod status;
mod store;
mod task_flags;
mod tasks;
mod teardown;
mod token;

use args::{Format, GitArgs};
use run::{usage, EXIT_FAILURE};

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::schema;
use crate::validate;

/// Declarative container orchestration with Amazon ECS semantics, driven by
/// YAML manifests in git.
#[derive(Debug, Parser)]
#[command(name = "reconcile", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: logging::LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check manifests: YAML syntax, JSON Schema and cross-manifest rules,
    /// reporting every problem with file, line and column.
    ///
    /// Exit status: 0 valid (warnings allowed), 1 invalid, 2 usage error.
    #[command(after_help = examples::VALIDATE)]
    Validate(ValidateArgs),
    /// Write the JSON Schemas (draft-07) of the manifest kinds, plus a
    /// SchemaStore-style catalog, for editors and other validators.
    Schema(SchemaArgs),
    /// Convert existing Amazon ECS task definitions and services (JSON)
    /// into reconcile manifests.
    #[command(after_help = examples::IMPORT)]
    Import(import::ImportArgs),
    /// Show what `apply` would change on the local Docker engine, or with
    /// --controller what a controller applies next.
    ///
    /// Exit status: 0 success (with --detailed-exitcode: no changes), 1
    /// error, 2 changes present (only with --detailed-exitcode).
    #[command(after_help = examples::PLAN)]
    Plan(standalone::PlanArgs),
    /// Converge the local Docker engine to a source, or apply a saved plan
    /// exactly (refused when stale). Prints the plan, asks for confirmation
    /// on a terminal, and waits for steady state. With --controller, asks
    /// the controller to reconcile its own source now.
    #[command(after_help = examples::APPLY)]
    Apply(standalone::ApplyArgs),
    /// Services, deployments and tasks applied from a source, with nodes,
    /// ports, health, status and stop reasons (a controller's with
    /// --controller, with its nodes, commits and events).
    #[command(after_help = examples::STATUS)]
    Status(status::StatusArgs),
    /// Run a task definition's task(s) to completion outside any service
    /// (ECS RunTask): placed like a service's, never restarted. With
    /// --wait, exits with the essential container's exit code.
    ///
    /// Exit status: 0 started (with --wait: the code the task exited
    /// with), 1 nothing started or a failure, 2 usage error.
    #[command(name = "run-task", after_help = examples::RUN_TASK)]
    RunTask(tasks::RunTaskArgs),
    /// Tasks started by run-task or a schedule, running and recently
    /// stopped (kept an hour), with exit codes and stop reasons.
    #[command(after_help = examples::TASKS)]
    Tasks(tasks::TasksArgs),
    /// Stop a task run-task or a schedule started, with a reason.
    #[command(name = "stop-task", after_help = examples::STOP_TASK)]
    StopTask(tasks::StopTaskArgs),
    /// What happened, oldest first: deployments, task starts and stops,
    /// health, nodes (a controller's whole event log with --controller;
    /// standalone, the services' events). --follow keeps showing them as
    /// they happen.
    #[command(after_help = examples::EVENTS)]
    Events(events::EventsArgs),
    /// Print the logs of a service's tasks, or of one task (id or a prefix
    /// of at least 8 characters), from the local Docker engine or with
    /// --controller relayed from the nodes (secrets masked); several
    /// streams interleave, each line prefixed with `service.task/container`.
    ///
    /// Exit status: 0 success (also when --follow ends on Ctrl-C), 1 a log
    /// could not be read, 2 usage error (unknown service or task).
    Logs(logs::LogsArgs),
    /// A service's deployments, newest first: revision, outcome, failed
    /// tasks and why, with the service's events.
    #[command(after_help = examples::HISTORY)]
    History(deployments::HistoryArgs),
    /// Roll a service back to an earlier revision (default: its last
    /// COMPLETED deployment before the running one) as a rolling
    /// deployment. The source's revision is then held (not deployed again)
    /// until the source changes.
    #[command(after_help = examples::ROLLBACK)]
    Rollback(deployments::RollbackArgs),
    /// Act on a service's deployment in progress (`abort`).
    Deployment(deployments::DeploymentArgs),
    /// Remove everything a source applied: plans the deletions, asks, then
    /// stops the tasks and forgets the resources (with --controller, the
    /// whole fleet's, kept down until `resume`).
    #[command(after_help = examples::DESTROY)]
    Destroy(standalone::DestroyArgs),
    /// Serve a standalone source's listeners (`loadBalancers`) until
    /// killed. `apply` runs this in the source's traffic container,
    /// `reconcile-traffic-<source id>`; it is not meant to be run by hand.
    ServeTraffic(standalone::ServeTrafficArgs),
    /// Serve the API agents and the CLI talk to, and converge the fleet to
    /// a source: validate, plan, log the plan, apply it through the agents.
    #[command(after_help = examples::CONTROLLER)]
    Controller(Box<fleet::ControllerArgs>),
    /// Run this host's Docker engine as a node of a controller's cluster:
    /// heartbeat, run the tasks assigned to it, stop anything else it owns.
    #[command(after_help = examples::AGENT)]
    Agent(fleet::AgentArgs),
    /// List a controller's nodes with status, load and last heartbeat.
    Nodes(fleet::NodesArgs),
    /// List the controllers of a control plane: which leads, and the order
    /// the others would take over in (several share an etcd store).
    Controllers(fleet::NodesArgs),
    /// Drain a node (its service tasks move to other nodes), activate it,
    /// or remove it (its credential is revoked).
    #[command(after_help = examples::NODE)]
    Node(fleet::NodeArgs),
    /// A controller's named API tokens: create (reader, operator or join,
    /// optionally expiring), list, rm.
    #[command(after_help = examples::TOKEN)]
    Token(token::TokenArgs),
    /// Ask a controller to reconcile now (fetching a git source first).
    Sync(fleet::SyncArgs),
    /// Stop a controller from applying: it still reads, validates and plans
    /// its source and reports the plan.
    Suspend(fleet::RemoteOnlyArgs),
    /// Let a suspended controller apply again.
    Resume(fleet::RemoteOnlyArgs),
    /// Print the hash of the CA a controller made in its data directory
    /// (`sha256:HEX`), which agents and the CLI pin with --ca-hash.
    CaHash(fleet::CaHashArgs),
    /// Set, list or remove a controller's secrets (bare `valueFrom: NAME`
    /// in fleet mode). Values are read from standard input or a file and
    /// never shown.
    #[command(after_help = examples::SECRET)]
    Secret(secret::SecretArgs),
    /// Move a controller's state between stores: `store copy --from DIR
    /// --to etcd://...` lets an installation grow to several controllers.
    #[command(after_help = examples::STORE)]
    Store(store::StoreArgs),
    /// Write a shell completion script (bash, zsh, fish, elvish,
    /// powershell) for reconcile on standard output.
    #[command(after_help = examples::COMPLETIONS)]
    Completions(manual::CompletionsArgs),
    /// Write the manual pages (roff): `reconcile.1` and one per command.
    #[command(after_help = examples::MAN)]
    Man(manual::ManArgs),
}

/// A git source's branch and directory (`SOURCE` = `git+URL`).
#[derive(Debug, clap::Args)]
struct ValidateArgs {
    /// Directory (read recursively), manifest file, or `git+URL`.
    #[arg(default_value = ".")]
    source: PathBuf,
    #[command(flatten)]
    git: GitArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, clap::Args)]
struct SchemaArgs {
    /// Directory to write the schema files into; without it, manifest.json
    /// is printed on stdout.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Run the program; returns the process exit status.
pub fn main() -> ExitCode {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    if let Some(e) = args::ambiguous_target(&matches) {
        return usage(e);
    }
    let daemon = matches!(
        cli.command,
        Command::Controller(_) | Command::Agent(_) | Command::ServeTraffic(_)
    );
    let level = if daemon {
        logging::DAEMON
    } else {
        logging::COMMAND
    };
    if let Err(e) = logging::init(&cli.log, level) {
        return usage(e);
    }
    // Before any thread exists: libgit2's options are process globals.
    if let Err(e) = crate::git::set_network_timeouts() {
        return usage(e);
    }
    match cli.command {
        Command::Validate(a) => validate_cmd(a),
        Command::Schema(a) => schema_cmd(a),
        Command::Import(a) => import::run(a),
        Command::Plan(a) => standalone::plan_cmd(a),
        Command::Apply(a) => standalone::apply_cmd(a),
        Command::Status(a) => status::status_cmd(a),
        Command::RunTask(a) => tasks::run_task_cmd(a),
        Command::Tasks(a) => tasks::tasks_cmd(a),
        Command::StopTask(a) => tasks::stop_task_cmd(a),
        Command::Events(a) => events::events_cmd(a),
        Command::Logs(a) => logs::logs_cmd(a),
        Command::Destroy(a) => standalone::destroy_cmd(a),
        Command::ServeTraffic(a) => standalone::serve_traffic_cmd(a),
        Command::History(a) => deployments::history_cmd(a),
        Command::Rollback(a) => deployments::rollback_cmd(a),
        Command::Deployment(a) => deployments::deployment_cmd(a),
        Command::Controller(a) => fleet::controller_cmd(*a),
        Command::Agent(a) => fleet::agent_cmd(a),
        Command::Nodes(a) => fleet::nodes_cmd(a),
        Command::Controllers(a) => fleet::controllers_cmd(a),
        Command::Node(a) => fleet::node_cmd(a),
        Command::Token(a) => token::token_cmd(a),
        Command::Secret(a) => secret::secret_cmd(a),
        Command::Store(a) => store::store_cmd(a),
        Command::Sync(a) => fleet::sync_cmd(a),
        Command::Suspend(a) => fleet::control_cmd("suspend", a),
        Command::Resume(a) => fleet::control_cmd("resume", a),
        Command::CaHash(a) => fleet::ca_hash_cmd(a),
        Command::Completions(a) => manual::completions_cmd(a),
        Command::Man(a) => manual::man_cmd(a),
    }
}

fn validate_cmd(a: ValidateArgs) -> ExitCode {
    let cache = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return usage(format!("temporary directory: {e}")),
    };
    let files = match a.git.read(&a.source, cache.path()) {
        Ok(f) => f,
        Err(e) => return usage(e),
    };
    let v = validate::validate(files);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let written = match a.format {
        Format::Json => writeln!(out, "{}", diagnostics::to_json(&v)),
        Format::Text => diagnostics::write_text(
            &v,
            &mut out,
            diagnostics::colour(std::io::stdout().is_terminal()),
        ),
    };
    if written.is_err() {
        return ExitCode::from(EXIT_FAILURE);
    }
    if v.is_valid() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}

fn schema_cmd(a: SchemaArgs) -> ExitCode {
    let files = schema::published();
    match a.out {
        None => {
            let manifest = files
                .iter()
                .find(|(n, _)| n == "manifest.json")
                .map(|(_, t)| t.as_str())
                .unwrap_or_default();
            print!("{manifest}");
            ExitCode::SUCCESS
        }
        Some(dir) => {
            if let Err(e) = std::fs::create_dir_all(&dir) {
                return usage(format!("cannot create `{}`: {e}", dir.display()));
            }
            for (name, text) in &files {
                let path = dir.join(name);
                if let Some(parent) = path.parent() {
                    if let Err(e) = std::fs::create_dir_all(parent) {
                        return usage(format!("cannot create `{}`: {e}", parent.display()));
                    }
                }
                if let Err(e) = std::fs::write(&path, text) {
                    eprintln!("error: cannot write `{}`: {e}", path.display());
                    return ExitCode::from(EXIT_FAILURE);
                }
            }
            eprintln!("wrote {} files to {}", files.len(), dir.display());
            ExitCode::SUCCESS
        }
    }
}
