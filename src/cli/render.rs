//! Documents as people read them: status, deployments, events and nodes,
//! the same text whether they came from the local engine or a controller.
//! Pure: a document and `now` in, text out.

use crate::clock;
use crate::deployment::{DeploymentView, Held, ServiceEvent};
use crate::model::serde_name;
use crate::plan;
use crate::report::StatusReport;
use crate::wire::NodeView;

/// `reconcile status` as text; times relative to `now` (unix seconds).
pub(crate) fn status(r: &StatusReport, now: i64) -> String {
    let mut out = String::new();
    if let Some(c) = &r.controller {
        out.push_str(&format!("Source: {}\n", r.source));
        if let Some(a) = &c.applied_commit {
            out.push_str(&format!("Applied commit: {a}\n"));
        }
        if c.fetched_commit.is_some() && c.fetched_commit != c.applied_commit {
            out.push_str(&format!(
                "Fetched commit: {} (not applied)\n",
                c.fetched_commit.as_deref().unwrap_or_default()
            ));
        }
        if c.suspended {
            out.push_str("SUSPENDED: nothing is applied until `reconcile resume`.\n");
        }
        if c.torn_down {
            out.push_str(
                "TORN DOWN: everything the source applied is removed; nothing of it is applied \
                 until `reconcile resume`.\n",
            );
        }
        match &c.last_error {
            Some(e) if e.starts_with("waiting for nodes") => out.push_str(&format!("{e}\n")),
            Some(e) => out.push_str(&format!("Last reconcile failed: {e}\n")),
            None => {}
        }
        out.push('\n');
    }
    if r.services.is_empty() {
        out.push_str("No services applied from this source.\n");
    } else {
        out.push_str(&summary(&r.services));
        out.push('\n');
    }
    for s in &r.services {
        // More running than desired is a rollout's surge, or tasks still
        // draining or stopping: said, so `2/0` does not read as a fault.
        let above = match s.desired_count {
            Some(d) if s.running > d as usize => format!(
                " ({} above the desired count: a rollout under way, or tasks draining and stopping)",
                s.running - d as usize
            ),
            _ => String::new(),
        };
        out.push_str(&format!(
            "Service {}  {}  running {}/{}{above}  pending {}{}\n",
            s.service,
            s.task_definition,
            s.running,
            s.desired_count
                .map(|d| d.to_string())
                .unwrap_or_else(|| "daemon".into()),
            s.pending,
            s.commit
                .as_ref()
                .map(|c| format!("  from commit {}", &c[..12.min(c.len())]))
                .unwrap_or_default()
        ));
        if s.running > 0 {
            out.push_str(&format!("  usage {} (of reserved)\n", usage(&s.usage)));
        }
        if let Some(a) = &s.auto_scaling {
            out.push_str(&format!(
                "  auto scaling {}-{} tasks{}\n",
                a.min_capacity,
                a.max_capacity,
                a.activities
                    .last()
                    .map(|l| format!("; last: {}", scaling_activity(l, now)))
                    .unwrap_or_default()
            ));
        }
        out.push_str(&deployments(
            &s.deployments,
            &s.events,
            s.held.as_ref(),
            now,
        ));
        for t in &s.tasks {
            let ports: Vec<String> = t
                .ports
                .iter()
                .map(|p| format!("{}:{}->{}", p.container_name, p.host_port, p.container_port))
                .collect();
            out.push_str(&format!(
                "  task {}  {}  rev {}  {}  {}{}{}{}{}\n",
                plan::short(&t.id),
                t.node,
                t.revision,
                serde_name(&t.last_status),
                serde_name(&t.health),
                t.target_health
                    .map(|h| format!("  target {}", h.as_str()))
                    .unwrap_or_default(),
                if t.last_status == crate::model::TaskStatus::Running {
                    format!("  {}", usage(&t.usage))
                } else {
                    String::new()
                },
                if ports.is_empty() {
                    String::new()
                } else {
                    format!("  ports {}", ports.join(","))
                },
                t.stopped_reason
                    .as_ref()
                    .map(|r| format!("  stopped: {r}"))
                    .unwrap_or_default(),
            ));
        }
        for l in &s.listeners {
            let healthy = l.targets.iter().filter(|t| t.state == "HEALTHY").count();
            out.push_str(&format!(
                "  listener :{} {}  {healthy}/{} target(s) healthy\n",
                l.port,
                serde_name(&l.protocol),
                l.targets.len()
            ));
            for t in &l.targets {
                out.push_str(&format!(
                    "    target {}  {}  {}  {}\n",
                    plan::short(&t.task),
                    t.node,
                    t.address.as_deref().unwrap_or("-"),
                    t.state
                ));
            }
        }
        for n in &s.dns_names {
            out.push_str(&format!("  dns {n}\n"));
        }
    }
    if !r.scheduled_tasks.is_empty() {
        out.push_str("\nScheduled tasks:\n");
        out.push_str(&scheduled(&r.scheduled_tasks, r.controller.is_some(), now));
    }
    if !r.standalone_tasks.is_empty() {
        out.push_str("\nTasks outside services (`reconcile tasks`):\n");
        for line in super::tasks::render_list(&r.standalone_tasks, now).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    if let Some(c) = &r.controller {
        out.push_str("\nNodes:\n");
        out.push_str(&nodes(&r.nodes));
        out.push_str("\nEvents (newest first):\n");
        for e in c.events.iter().take(20) {
            out.push_str(&format!(
                "  {:<width$}  {}\n",
                clock::readable(e.at, now),
                e.message,
                width = clock::readable_width()
            ));
        }
    }
    out
}

/// Scheduled tasks: schedule, next run, and the latest run's outcome.
pub(crate) fn scheduled(
    views: &[crate::runs::scheduled::ScheduledView],
    controller: bool,
    now: i64,
) -> String {
    let mut out = String::new();
    for v in views {
        let next = match (v.enabled, v.next_run) {
            (false, _) => "DISABLED".to_string(),
            (true, Some(t)) => format!("next run {}", clock::readable(t, now)),
            (true, None) if !controller => "runs start under a controller".to_string(),
            (true, None) => "no further runs".to_string(),
        };
        out.push_str(&format!(
            "  {}  {} in {}  {}  {}\n",
            v.name, v.task_definition, v.cluster, v.description, next
        ));
        if let Some(run) = v.runs.first() {
            out.push_str(&format!("    last run: {}\n", run_line(run, now)));
        }
    }
    out
}

/// One run of a scheduled task: when, outcome, its tasks' exit codes.
pub(crate) fn run_line(run: &crate::runs::scheduled::ScheduledRun, now: i64) -> String {
    use crate::runs::scheduled::RunOutcome;
    let tasks: Vec<String> = run
        .tasks
        .iter()
        .map(|t| {
            let state = match (t.last_status, t.exit_code) {
                (crate::model::TaskStatus::Stopped, Some(c)) => format!("exit {c}"),
                (crate::model::TaskStatus::Stopped, None) => {
                    t.stopped_reason.clone().unwrap_or_else(|| "STOPPED".into())
                }
                (s, _) => serde_name(&s),
            };
            format!("{} {state}", plan::short(&t.id))
        })
        .collect();
    let outcome = match run.outcome {
        RunOutcome::Started => "STARTED",
        RunOutcome::Skipped => "SKIPPED",
        RunOutcome::Failed => "FAILED",
    };
    let mut line = format!("{}  {outcome}", clock::readable(run.scheduled_at, now));
    if !tasks.is_empty() {
        line.push_str(&format!("  {}", tasks.join(", ")));
    }
    if run.missed > 0 {
        line.push_str(&format!(
            "  (stands for {} missed fire time(s))",
            run.missed
        ));
    }
    if !run.message.is_empty() {
        line.push_str(&format!("  {}", run.message));
    }
    line
}

/// CPU and memory utilization: `cpu 37.5%  mem 12.0%`, `?` unknown.
fn usage(u: &crate::report::Usage) -> String {
    let pct = |v: Option<f64>| v.map(|v| format!("{v:.1}%")).unwrap_or_else(|| "?".into());
    format!(
        "cpu {}  mem {}",
        pct(u.cpu_utilization),
        pct(u.memory_utilization)
    )
}

/// Deployments (newest first), the hold and recent events, as text; event
/// times in the local zone and relative to `now` (unix seconds).
pub(crate) fn deployments(
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
                serde_name(&e.kind),
                e.message,
                width = clock::readable_width()
            ));
        }
    }
    out
}

/// One line over all services, first, so that a long status starts with
/// what needs attention: totals, and which services run fewer tasks than
/// they want.
fn summary(services: &[crate::report::ServiceStatus]) -> String {
    let running: usize = services.iter().map(|s| s.running).sum();
    let pending: usize = services.iter().map(|s| s.pending).sum();
    let short: Vec<&str> = services
        .iter()
        .filter(|s| s.desired_count.is_some_and(|d| s.running < d as usize))
        .map(|s| s.service.as_str())
        .collect();
    let mut out = format!(
        "{} service{}, {running} task{} running, {pending} pending",
        services.len(),
        if services.len() == 1 { "" } else { "s" },
        if running == 1 { "" } else { "s" },
    );
    if short.is_empty() {
        out.push_str("; all at their desired count\n");
    } else {
        let more = short.len().saturating_sub(5);
        out.push_str(&format!(
            "; below their desired count: {}{}\n",
            short[..short.len() - more].join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    out
}

pub(crate) fn nodes(nodes: &[NodeView]) -> String {
    let mut out = String::from("NODE            CLUSTER     STATUS    TASKS  CPU (used/total)  MEMORY MiB (used/total)  LAST HEARTBEAT\n");
    for n in nodes {
        out.push_str(&format!(
            "{:<15} {:<11} {:<9} {:>5}  {:>16}  {:>23}  {}\n",
            n.info.name,
            n.info.cluster,
            format!("{:?}", n.status).to_uppercase(),
            n.tasks,
            format!("{}/{}", n.reserved_cpu, n.info.cpu),
            format!("{}/{}", n.reserved_memory, n.info.memory),
            n.last_heartbeat_secs
                .map(|s| crate::clock::age(i64::try_from(s).unwrap_or(i64::MAX)))
                .unwrap_or_else(|| "none since restart".into()),
        ));
    }
    out
}

/// `reconcile controllers`: the leader first, then the standing by.
pub(crate) fn control_plane(p: &crate::wire::ControlPlane) -> String {
    let mut out = format!(
        "store: {}\nCONTROLLER                               ROLE      SINCE REVISION\n",
        p.store
    );
    for c in &p.controllers {
        let role = if c.leader { "leader" } else { "follower" };
        out.push_str(&format!("{:<40} {:<9} {}\n", c.url, role, c.since_revision));
    }
    out
}

/// One auto scaling decision on a line.
pub(crate) fn scaling_activity(a: &crate::autoscaling::Activity, now: i64) -> String {
    format!(
        "{} {} {} -> {}: {}",
        clock::readable(a.at, now),
        a.direction.as_str(),
        a.from,
        a.to,
        a.cause
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::EventKind;
    use crate::model::NodeInfo;
    use crate::wire::NodeStatus;

    #[test]
    fn event_times_are_local_and_relative() {
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
        // In whatever zone the tests run (`Z` where it is UTC).
        let w = clock::readable_width();
        assert_eq!(
            deployments(&[], &events, None, now),
            format!(
                "  events:\n    {:<w$}  SERVICE_STEADY_STATE  steady\n    {:<w$}  SERVICE_TASK_FAILED  exited\n",
                format!("{} (12 s ago)", clock::local(now - 12)),
                format!("{} (2 d ago)", clock::local(now - 2 * 86_400)),
            )
        );
    }

    #[test]
    fn status_starts_with_a_summary_of_all_services() {
        let service = |name: &str, desired: Option<u32>, running: usize, pending: usize| {
            crate::report::ServiceStatus {
                service: format!("c/{name}"),
                cluster: "c".into(),
                name: name.into(),
                task_definition: format!("{name}:1"),
                revision: 1,
                desired_count: desired,
                running,
                pending,
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
        };
        let report = |services| StatusReport {
            source: "s".into(),
            scheduled_tasks: Vec::new(),
            standalone_tasks: Vec::new(),
            services,
            nodes: Vec::new(),
            controller: None,
        };
        let text = status(
            &report(vec![
                service("web", Some(2), 1, 1),
                service("api", Some(1), 1, 0),
                service("agent", None, 3, 0),
            ]),
            0,
        );
        assert_eq!(
            text.lines().next(),
            Some("3 services, 5 tasks running, 1 pending; below their desired count: c/web")
        );
        let text = status(&report(vec![service("api", Some(1), 1, 0)]), 0);
        assert_eq!(
            text.lines().next(),
            Some("1 service, 1 task running, 0 pending; all at their desired count")
        );
        // Tasks still stopping after a scale to zero say so.
        let text = status(&report(vec![service("api", Some(0), 2, 0)]), 0);
        assert!(
            text.contains("running 2/0 (2 above the desired count: a rollout under way, or tasks draining and stopping)"),
            "{text}"
        );
    }

    #[test]
    fn nodes_show_their_last_heartbeat_as_an_age() {
        let node = |name: &str, last: Option<u64>| NodeView {
            info: NodeInfo {
                name: name.into(),
                cluster: "c".into(),
                attributes: Default::default(),
                cpu: 1024,
                memory: 512,
                reserved_ports: Vec::new(),
            },
            status: NodeStatus::Active,
            agent_version: "1".into(),
            last_heartbeat_secs: last,
            tasks: 0,
            reserved_cpu: 0,
            reserved_memory: 0,
        };
        let text = nodes(&[
            node("a", Some(12)),
            node("b", Some(4 * 60 + 30)),
            node("c", None),
        ]);
        let last: Vec<&str> = text
            .lines()
            .skip(1)
            .map(|l| l.split("  ").last().unwrap_or_default())
            .collect();
        assert_eq!(last, ["12 s ago", "4 min ago", "none since restart"]);
    }
}
