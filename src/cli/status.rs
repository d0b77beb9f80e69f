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
    /// Show only this service: its name, or `cluster/name`.
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// Show only the services of this cluster.
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
    #[command(flatten)]
    at: Target,
}

/// Keep the services `--service` and `--cluster` name, in either mode
/// (the report is filtered where it is shown); an error when the filters
/// match none, listing what there is.
fn filter(
    report: &mut StatusReport,
    service: Option<&str>,
    cluster: Option<&str>,
) -> Result<(), String> {
    if service.is_none() && cluster.is_none() {
        return Ok(());
    }
    let known: Vec<String> = report.services.iter().map(|s| s.service.clone()).collect();
    report.services.retain(|s| {
        service.is_none_or(|n| s.name == n || s.service == n)
            && cluster.is_none_or(|c| s.cluster == c)
    });
    if let Some(c) = cluster {
        report.nodes.retain(|n| n.info.cluster == c);
    }
    if !report.services.is_empty() {
        return Ok(());
    }
    let asked = match (service, cluster) {
        (Some(s), Some(c)) => {
            format!("--service {s} --cluster {c}: no such service in this cluster")
        }
        (Some(s), None) => format!("--service {s}: no such service"),
        (None, c) => format!(
            "--cluster {}: no service in this cluster",
            c.unwrap_or_default()
        ),
    };
    Err(if known.is_empty() {
        format!("{asked}: no services are applied")
    } else {
        format!("{asked}; services: {}", known.join(", "))
    })
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
    let mut report = report;
    if let Err(e) = filter(&mut report, a.service.as_deref(), a.cluster.as_deref()) {
        return failure(e);
    }
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
    let now = crate::clock::unix_now();
    // Only a controller starts scheduled runs: no next run here.
    let scheduled_tasks = observed
        .scheduled_tasks
        .iter()
        .map(|(name, spec)| crate::runs::scheduled::ScheduledView {
            next_run: None,
            ..crate::runs::scheduled::ScheduledView::of(name, spec, None, now)
        })
        .collect();
    // Not locked, not saved: brought up to date for this view only.
    let mut runs = crate::store::RunsFile::peek(&a.at.state.dir().runs(&id)).map_err(failure)?;
    crate::runs::refresh(&mut runs, &observed.tasks, now);
    Ok(StatusReport {
        source: shown,
        scheduled_tasks,
        standalone_tasks: runs.into_values().collect(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ServiceStatus;

    fn service(cluster: &str, name: &str) -> ServiceStatus {
        ServiceStatus {
            service: format!("{cluster}/{name}"),
            cluster: cluster.into(),
            name: name.into(),
            task_definition: format!("{name}:1"),
            revision: 1,
            desired_count: Some(1),
            running: 1,
            pending: 0,
            commit: None,
            deployments: Vec::new(),
            events: Vec::new(),
            held: None,
            tasks: Vec::new(),
            listeners: Vec::new(),
            dns_names: Vec::new(),
            usage: Default::default(),
            auto_scaling: None,
        }
    }

    fn report() -> StatusReport {
        StatusReport {
            source: "s".into(),
            scheduled_tasks: Vec::new(),
            standalone_tasks: Vec::new(),
            services: vec![
                service("a", "web"),
                service("a", "worker"),
                service("b", "web"),
            ],
            nodes: Vec::new(),
            controller: None,
        }
    }

    fn names(r: &StatusReport) -> Vec<&str> {
        r.services.iter().map(|s| s.service.as_str()).collect()
    }

    #[test]
    fn status_is_filtered_by_service_and_cluster() {
        let mut r = report();
        filter(&mut r, None, None).unwrap();
        assert_eq!(names(&r).len(), 3);
        let mut r = report();
        filter(&mut r, Some("web"), None).unwrap();
        assert_eq!(names(&r), ["a/web", "b/web"]);
        let mut r = report();
        filter(&mut r, Some("b/web"), None).unwrap();
        assert_eq!(names(&r), ["b/web"]);
        let mut r = report();
        filter(&mut r, None, Some("a")).unwrap();
        assert_eq!(names(&r), ["a/web", "a/worker"]);
        let mut r = report();
        filter(&mut r, Some("worker"), Some("a")).unwrap();
        assert_eq!(names(&r), ["a/worker"]);
    }

    #[test]
    fn a_filter_matching_nothing_names_the_flag_and_what_there_is() {
        let e = filter(&mut report(), Some("wbe"), None).unwrap_err();
        assert_eq!(
            e,
            "--service wbe: no such service; services: a/web, a/worker, b/web"
        );
        let e = filter(&mut report(), Some("worker"), Some("b")).unwrap_err();
        assert!(e.starts_with("--service worker --cluster b: "), "{e}");
        let mut empty = report();
        empty.services.clear();
        let e = filter(&mut empty, None, Some("a")).unwrap_err();
        assert_eq!(
            e,
            "--cluster a: no service in this cluster: no services are applied"
        );
    }
}
