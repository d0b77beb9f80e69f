//! `reconcile status`: one document ([`StatusReport`]) from the local
//! engine or from a controller, shown as text or JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use super::args::{resolver_for, source_id, Format, Target};
use super::run::{block_on, failure, usage};
use super::{remote, render};
use crate::model::NodeInfo;
use crate::reconcile::traffic::{self as listeners, StandaloneRuntime};
use crate::reconcile::Reconciler;
use crate::report::{self, StatusReport};
use crate::runtime::docker::DockerRuntime;
use crate::store::{FileStore, Snapshot};
use crate::wire::{NodeStatus, NodeView};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The source whose resources to show.
    #[arg(default_value = ".")]
    source: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    at: Target,
}

pub fn status_cmd(a: StatusArgs) -> ExitCode {
    let report = if a.at.remote.controller.is_some() {
        match remote::status(&a.at.remote) {
            Ok(r) => r,
            Err(code) => return code,
        }
    } else {
        match local(&a) {
            Ok(r) => r,
            Err(code) => return code,
        }
    };
    match a.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        Format::Text => print!("{}", render::status(&report, crate::clock::unix_now())),
    }
    ExitCode::SUCCESS
}

/// Time between the two samples of a task's CPU time.
const USAGE_GAP: std::time::Duration = std::time::Duration::from_millis(500);

/// The status of a source applied to the local engine.
fn local(a: &StatusArgs) -> Result<StatusReport, ExitCode> {
    let (id, shown) = source_id(&a.source, &a.at.git, &a.at.state).map_err(usage)?;
    let observed = block_on(async {
        // Not locked: status works while an apply runs.
        let stored = FileStore::peek(&a.at.state.dir().store(&id)).map_err(|e| e.to_string())?;
        let rt = DockerRuntime::connect(&id, "local")
            .await
            .map_err(|e| e.message)?;
        // Target health as the traffic container reports it.
        let rt = StandaloneRuntime::new(rt, a.at.state.dir(), &id);
        let resolver = resolver_for(&a.source, &a.at.state)?;
        let reconciler = Reconciler {
            runtime: &rt,
            store: &Snapshot(stored),
            resolver: &resolver,
        };
        // Usage is sampled while the rest is observed: CPU needs two
        // samples apart in time.
        let (observed, usage) = tokio::join!(reconciler.observed(), rt.docker.usage_now(USAGE_GAP));
        let usage = usage.unwrap_or_else(|e| {
            tracing::warn!("status: cannot sample usage: {}", e.message);
            Default::default()
        });
        observed.map(|o| (o, usage))
    })
    .map_err(failure)?;
    let (observed, usage) = observed;
    let nodes = observed
        .nodes
        .iter()
        .map(|n| local_node(n, &observed))
        .collect();
    let mut services = report::services(&observed, &Default::default());
    let local = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    let addresses = observed
        .nodes
        .iter()
        .map(|n| (n.name.clone(), local))
        .collect();
    let capacity = observed
        .nodes
        .iter()
        .map(|n| (n.name.clone(), (n.cpu, n.memory)))
        .collect();
    report::fill_usage(&observed, &capacity, &mut services, &usage);
    let draining = listeners::draining(&a.at.state.dir(), &id);
    crate::traffic::fill_status(&observed, &mut services, &addresses, &draining, None);
    Ok(StatusReport {
        source: shown,
        services,
        nodes,
        controller: None,
    })
}

/// The local engine as a node: this program is its agent, always there.
fn local_node(n: &NodeInfo, o: &crate::model::ObservedState) -> NodeView {
    let live: Vec<&crate::model::Task> = o
        .tasks
        .iter()
        .filter(|t| t.node == n.name && t.is_live())
        .collect();
    let (mut cpu, mut memory) = (0, 0);
    for t in &live {
        let spec = o
            .revisions
            .get(&t.identity.family)
            .and_then(|rs| rs.iter().find(|r| r.number == t.identity.revision));
        if let Some(r) = spec {
            let (c, m, _) = crate::model::reservation(&r.spec);
            cpu += c;
            memory += m;
        }
    }
    NodeView {
        info: n.clone(),
        status: NodeStatus::Active,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        last_heartbeat_secs: Some(0),
        tasks: live.len(),
        reserved_cpu: cpu,
        reserved_memory: memory,
    }
}
