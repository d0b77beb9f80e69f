//! `reconcile history`, `reconcile rollback` and `reconcile deployment
//! abort`: a service's deployments, locally or on a controller.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::standalone::{self, ApplyArgs, StateArgs};
use super::{Format, EXIT_FAILURE, EXIT_USAGE};
use crate::apply;
use crate::clock;
use crate::deployment::{DeploymentView, Held, Rollout, ServiceEvent};
use crate::store::FileStore;
use crate::wire::{HistoryReply, RollbackRequest};

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The service: `NAME`, or `CLUSTER/NAME` when several clusters have one.
    service: String,
    /// The source the service was applied from (standalone).
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
pub struct RollbackArgs {
    /// The service: `NAME`, or `CLUSTER/NAME`.
    service: String,
    /// The source the service was applied from (standalone).
    #[arg(default_value = ".")]
    source: PathBuf,
    /// The task definition revision to return to. Default: the one of the
    /// newest COMPLETED deployment before the running one.
    #[arg(long, value_name = "REVISION")]
    to: Option<u32>,
    /// Roll back without asking for confirmation.
    #[arg(long)]
    auto_approve: bool,
    /// Give up waiting for a rollout step to become healthy after this many
    /// seconds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    timeout: u64,
    /// Tasks without a health check count as healthy after running this
    /// many seconds.
    #[arg(long, default_value_t = 3, value_name = "SECONDS")]
    settle: u64,
    #[command(flatten)]
    remote: super::fleet::RemoteArgs,
    #[command(flatten)]
    git: super::GitArgs,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Debug, clap::Args)]
pub struct DeploymentArgs {
    #[command(subcommand)]
    command: DeploymentCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DeploymentCommand {
    /// Stop a service's rollout now and restore its last COMPLETED
    /// deployment. An apply in progress rolls back at once and exits
    /// non-zero; a rollout left FAILED or interrupted is rolled back by this
    /// command.
    Abort(AbortArgs),
}

#[derive(Debug, clap::Args)]
struct AbortArgs {
    /// The service: `NAME`, or `CLUSTER/NAME`.
    service: String,
    /// The source the service was applied from (standalone).
    #[arg(default_value = ".")]
    source: PathBuf,
    /// Give up waiting for the rollback's tasks after this many seconds
    /// (when this command rolls back itself).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    timeout: u64,
    #[command(flatten)]
    remote: super::fleet::RemoteArgs,
    #[command(flatten)]
    git: super::GitArgs,
    #[command(flatten)]
    state: StateArgs,
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(EXIT_FAILURE)
}

/// Deployments (newest first), the hold and recent events, as text; event
/// times in UTC and relative to `now` (unix seconds).
pub(crate) fn text(
    deps: &[DeploymentView],
    events: &[ServiceEvent],
    held: Option<&Held>,
    now: i64,
) -> String {
    let mut out = String::new();
    if !deps.is_empty() {
        out.push_str("  deployments:\n");
        for d in deps {
            out.push_str(&format!("    {}\n", d.line()));
        }
    }
    if let Some(h) = held {
        out.push_str(&format!(
            "  held: revision {} is not deployed ({}); runs revision {}\n",
            h.revision, h.reason, h.to
        ));
    }
    if !events.is_empty() {
        out.push_str("  events:\n");
        for e in events {
            out.push_str(&format!(
                "    {:<width$}  {}  {}\n",
                clock::readable(e.at, now),
                serde_json::to_value(e.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                e.message,
                width = clock::READABLE_WIDTH
            ));
        }
    }
    out
}

fn source_id(a_source: &std::path::Path, git: &super::GitArgs) -> Result<String, ExitCode> {
    standalone::source_id_of(a_source, git).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_USAGE)
    })
}

pub fn history_cmd(a: HistoryArgs) -> ExitCode {
    let reply = if a.remote.controller.is_some() {
        match super::fleet::service_call::<HistoryReply>(
            &a.remote,
            reqwest::Method::GET,
            &a.service,
            "history",
            None,
        ) {
            Ok(r) => r,
            Err(c) => return c,
        }
    } else {
        let id = match source_id(&a.source, &a.git) {
            Ok(id) => id,
            Err(c) => return c,
        };
        let stored = match FileStore::peek(&standalone::store_path(&a.state, &id)) {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        let key = match apply::find_service(&stored, &a.service) {
            Ok(k) => k,
            Err(e) => return fail(e),
        };
        let h = stored.deployments.get(&key).cloned().unwrap_or_default();
        HistoryReply {
            service: key,
            deployments: h
                .deployments
                .iter()
                .rev()
                .map(|d| DeploymentView::of(d, &[]))
                .collect(),
            events: h.events.iter().rev().cloned().collect(),
            held: h.held,
        }
    };
    if a.format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&reply).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    let now = clock::unix_now();
    println!("Service {}", reply.service);
    if reply.deployments.is_empty() {
        println!("  no deployments recorded");
    }
    println!(
        "   ID  REVISION  STATE        {:<width$}  FAILED TASKS  OUTCOME",
        "STARTED",
        width = clock::READABLE_WIDTH
    );
    for d in &reply.deployments {
        println!(
            "  {:>3}  {:<8}  {:<11}  {:<width$}  {:<12}  {}{}",
            d.id,
            d.revision,
            d.rollout_state,
            clock::readable(d.created_at, now),
            match d.threshold {
                Some(t) => format!("{}/{t}", d.failed_tasks),
                None => d.failed_tasks.to_string(),
            },
            d.reason,
            d.rollback_of
                .map(|f| format!(" (rollback of {f})"))
                .unwrap_or_default(),
            width = clock::READABLE_WIDTH
        );
    }
    print!("{}", text(&[], &reply.events, reply.held.as_ref(), now));
    ExitCode::SUCCESS
}

pub fn rollback_cmd(a: RollbackArgs) -> ExitCode {
    if a.remote.controller.is_some() {
        return match super::fleet::service_call::<serde_json::Value>(
            &a.remote,
            reqwest::Method::POST,
            &a.service,
            "rollback",
            Some(RollbackRequest { to: a.to }),
        ) {
            Ok(v) => {
                println!("{}", v["message"].as_str().unwrap_or("rollback requested"));
                ExitCode::SUCCESS
            }
            Err(c) => c,
        };
    }
    let service = a.service.clone();
    let to = a.to;
    let prepare: standalone::Prepare = Box::new(move |stored, desired| {
        let key = apply::find_service(stored, &service)?;
        let rev = apply::request_rollback(stored, desired, &key, to, "rolled back by the user")?;
        eprintln!("Rolling {key} back to revision {rev}.");
        Ok(())
    });
    standalone::apply_with(
        ApplyArgs::new(
            a.source,
            a.auto_approve,
            a.timeout,
            a.settle,
            a.git,
            a.state,
        ),
        Some(prepare),
    )
}

pub fn deployment_cmd(a: DeploymentArgs) -> ExitCode {
    match a.command {
        DeploymentCommand::Abort(a) => abort_cmd(a),
    }
}

fn abort_cmd(a: AbortArgs) -> ExitCode {
    if a.remote.controller.is_some() {
        return match super::fleet::service_call::<serde_json::Value>(
            &a.remote,
            reqwest::Method::POST,
            &a.service,
            "abort",
            None,
        ) {
            Ok(v) => {
                println!("{}", v["message"].as_str().unwrap_or("abort requested"));
                ExitCode::SUCCESS
            }
            Err(c) => c,
        };
    }
    let id = match source_id(&a.source, &a.git) {
        Ok(id) => id,
        Err(c) => return c,
    };
    let path = standalone::store_path(&a.state, &id);
    let stored = match FileStore::peek(&path) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let key = match apply::find_service(&stored, &a.service) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    let lock = match FileStore::try_open(&path) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    if lock.is_none() {
        // An apply holds the state: ask it, and wait until it has heard.
        let marker = standalone::abort_marker(&a.state, &id, &key);
        if let Some(dir) = marker.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                return fail(format!("`{}`: {e}", dir.display()));
            }
        }
        if let Err(e) = std::fs::write(&marker, key.as_bytes()) {
            return fail(format!("`{}`: {e}", marker.display()));
        }
        let asked = Instant::now();
        while marker.exists() && asked.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(100));
        }
        if marker.exists() {
            println!(
                "Abort requested: the running apply rolls {key} back when it next checks on it."
            );
        } else {
            println!("Aborted: the running apply is rolling {key} back to its last COMPLETED deployment.");
        }
        return ExitCode::SUCCESS;
    }
    drop(lock);
    // No apply runs: a rollout that is still IN_PROGRESS (interrupted) or
    // FAILED is rolled back here.
    let Some(primary) = stored.deployments.get(&key).and_then(|h| h.primary()) else {
        return fail(format!("`{key}` has no deployment to abort"));
    };
    if primary.rollout == Rollout::Completed {
        return fail(format!(
            "no deployment of `{key}` is in progress (deployment {} completed); use `reconcile rollback {}` to return to an earlier revision",
            primary.id, a.service
        ));
    }
    let prepare: standalone::Prepare = Box::new(move |stored, desired| {
        let rev = apply::request_rollback(
            stored,
            desired,
            &key,
            None,
            "deployment aborted by the user",
        )?;
        eprintln!("Aborting: rolling {key} back to revision {rev}.");
        Ok(())
    });
    standalone::apply_with(
        ApplyArgs::new(a.source, true, a.timeout, 3, a.git, a.state),
        Some(prepare),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::EventKind;

    #[test]
    fn event_times_are_utc_and_relative() {
        let now = 1_795_000_000;
        let events = [
            ServiceEvent {
                at: now - 12,
                kind: EventKind::ServiceSteadyState,
                message: "steady".into(),
            },
            ServiceEvent {
                at: now - 2 * 86_400,
                kind: EventKind::ServiceTaskFailed,
                message: "exited".into(),
            },
        ];
        assert_eq!(
            text(&[], &events, None, now),
            "  events:\n\
             \x20   2026-11-18T11:06:28Z (12 s ago)    SERVICE_STEADY_STATE  steady\n\
             \x20   2026-11-16T11:06:40Z (2 d ago)     SERVICE_TASK_FAILED  exited\n"
        );
    }
}
