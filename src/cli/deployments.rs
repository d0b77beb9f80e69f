//! `reconcile history`, `reconcile rollback` and `reconcile deployment
//! abort`: a service's deployments, locally or on a controller.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::args::{source_id, Format, Target};
use super::run::{failure, usage};
use super::standalone::{self, ApplyArgs};
use super::{remote, render};
use crate::apply;
use crate::clock;
use crate::deployment::Rollout;
use crate::report;
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
    at: Target,
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
    at: Target,
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
    at: Target,
}

/// The identity of a local source, or the usage error.
fn local_id(a_source: &std::path::Path, at: &Target) -> Result<String, ExitCode> {
    source_id(a_source, &at.git, &at.state)
        .map(|(id, _)| id)
        .map_err(usage)
}

pub fn history_cmd(a: HistoryArgs) -> ExitCode {
    if a.at.remote.controller.is_some() {
        if let Some(code) = super::tasks::scheduled_history(&a.at.remote, &a.service, a.format) {
            return code;
        }
    }
    let reply = if a.at.remote.controller.is_some() {
        match remote::service_call::<HistoryReply>(
            &a.at.remote,
            reqwest::Method::GET,
            &a.service,
            "history",
            None,
        ) {
            Ok(r) => r,
            Err(c) => return c,
        }
    } else {
        let id = match local_id(&a.source, &a.at) {
            Ok(id) => id,
            Err(c) => return c,
        };
        let stored = match FileStore::peek(&a.at.state.dir().store(&id)) {
            Ok(s) => s,
            Err(e) => return failure(e),
        };
        let key = match apply::find_service(&stored, &a.service) {
            Ok(k) => k,
            Err(e) => return failure(e),
        };
        report::history(&key, stored.deployments.get(&key))
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
        width = clock::readable_width()
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
            width = clock::readable_width()
        );
    }
    print!(
        "{}",
        render::deployments(&[], &reply.events, reply.held.as_ref(), now)
    );
    if !reply.scaling.is_empty() {
        println!("  auto scaling, newest first:");
        for a in reply.scaling.iter().rev() {
            println!("    {}", render::scaling_activity(a, now));
        }
    }
    ExitCode::SUCCESS
}

pub fn rollback_cmd(a: RollbackArgs) -> ExitCode {
    if a.at.remote.controller.is_some() {
        return match remote::service_call::<serde_json::Value>(
            &a.at.remote,
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
        ApplyArgs::new(a.source, a.auto_approve, a.timeout, a.settle, a.at),
        Some(prepare),
    )
}

pub fn deployment_cmd(a: DeploymentArgs) -> ExitCode {
    match a.command {
        DeploymentCommand::Abort(a) => abort_cmd(a),
    }
}

fn abort_cmd(a: AbortArgs) -> ExitCode {
    if a.at.remote.controller.is_some() {
        return match remote::service_call::<serde_json::Value>(
            &a.at.remote,
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
    let id = match local_id(&a.source, &a.at) {
        Ok(id) => id,
        Err(c) => return c,
    };
    let path = a.at.state.dir().store(&id);
    let stored = match FileStore::peek(&path) {
        Ok(s) => s,
        Err(e) => return failure(e),
    };
    let key = match apply::find_service(&stored, &a.service) {
        Ok(k) => k,
        Err(e) => return failure(e),
    };
    let lock = match FileStore::try_open(&path) {
        Ok(l) => l,
        Err(e) => return failure(e),
    };
    if lock.is_none() {
        // An apply holds the state: ask it, and wait until it has heard.
        let marker = match a.at.state.dir().aborts(&id).request(&key) {
            Ok(m) => m,
            Err(e) => return failure(e),
        };
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
        return failure(format!("`{key}` has no deployment to abort"));
    };
    if primary.rollout == Rollout::Completed {
        return failure(format!(
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
        ApplyArgs::new(a.source, true, a.timeout, 3, a.at),
        Some(prepare),
    )
}
