//! How a standalone `apply` or `destroy` pass ended, as text for people or
//! as JSON lines for programs (`--format json`).
//!
//! With JSON, stdout carries one object per line, each with a `type`:
//! `plan` (the plan document, as `plan --format json` prints it),
//! `progress` (`at`, unix seconds, and `message`, what the terminal shows)
//! and last `result` (`outcome`: applied, destroyed, unchanged, failed,
//! refused, stale, suspended, or invalid when the source does not
//! validate, each error then with its file, line and column; `errors`, each a `message` with the failed
//! task's last `logs`; and the services that run after the pass). Logs
//! stay on stderr.

use std::io::Write;
use std::process::ExitCode;

use serde_json::{json, Value};

use super::run::{failure, EXIT_FAILURE};
use crate::apply::ApplyError;
use crate::model::TaskStatus;
use crate::plan::{self, render, Plan};
use crate::reconcile::Outcome;
use crate::runtime::docker::DockerRuntime;
use crate::runtime::Runtime;
use crate::store::{FileStore, Stored};

/// Which command's pass ended.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    Apply,
    Destroy,
}

/// How the ending is written.
#[derive(Clone, Copy)]
pub(super) enum Output {
    Text { detail: bool },
    Json,
}

/// Write one JSON line on stdout; a closed stdout is not an error worth
/// more than the line.
pub(super) fn line(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

pub(super) fn plan_line(p: &Plan) {
    line(json!({"type": "plan", "plan": render::json(p)}));
}

pub(super) fn progress_line(message: &str) {
    line(json!({
        "type": "progress",
        "at": crate::clock::unix_now(),
        "message": message,
    }));
}

fn result_line(outcome: &str, errors: Vec<Value>, services: Option<Vec<Value>>) {
    let mut v = json!({"type": "result", "outcome": outcome, "errors": errors});
    if let Some(s) = services {
        v["services"] = Value::Array(s);
    }
    line(v);
}

/// Report how a pass of `apply` or `destroy` ended.
pub(super) async fn finish(
    rt: &DockerRuntime,
    store: &FileStore,
    outcome: Result<Outcome, String>,
    output: Output,
    ending: Ending,
) -> ExitCode {
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            if let Output::Json = output {
                result_line("error", vec![json!({"message": e})], None);
                return ExitCode::from(EXIT_FAILURE);
            }
            return failure(e);
        }
    };
    match output {
        Output::Text { detail } => text(rt, store, outcome, detail, ending).await,
        Output::Json => as_json(rt, store, outcome, ending).await,
    }
}

async fn text(
    rt: &DockerRuntime,
    store: &FileStore,
    outcome: Outcome,
    detail: bool,
    ending: Ending,
) -> ExitCode {
    let style = super::standalone::style(detail);
    match outcome {
        Outcome::Stale { moved } => {
            eprintln!(
                "error: the saved plan is stale; the observed state moved since it was made:"
            );
            for m in moved {
                eprintln!("  {m}");
            }
            eprintln!("Nothing was applied. Run `reconcile plan` again.");
            ExitCode::from(EXIT_FAILURE)
        }
        Outcome::Refused { plan } => {
            print!("{}", render::text(&plan, style));
            failure("the plan cannot be applied; nothing was changed")
        }
        Outcome::Unchanged { plan, settled } => {
            print!("{}", render::text(&plan, style));
            // A rollout an interrupted apply left open, that has settled.
            for (service, message) in settled {
                eprintln!("{service}: {message}");
            }
            ExitCode::SUCCESS
        }
        Outcome::Suspended { .. } => failure("suspended: nothing was applied"),
        Outcome::Declined { .. } => ExitCode::from(EXIT_FAILURE),
        Outcome::Applied { .. } => {
            match ending {
                Ending::Apply => {
                    let stored = store.load().unwrap_or_default();
                    let rows = steady_rows(rt, &stored).await;
                    let summary = rows
                        .map(|r| steady_text(&r))
                        .unwrap_or_else(|| "state recorded".into());
                    println!("Apply complete: {summary}");
                }
                Ending::Destroy => println!("Destroy complete."),
            }
            ExitCode::SUCCESS
        }
        Outcome::Failed { error, .. } => {
            for (message, logs) in failures(rt, &error).await {
                eprintln!("error: {message}");
                for (container, task, text) in logs {
                    eprintln!("  last log lines of `{container}` (task {task}):");
                    for l in text.lines() {
                        eprintln!("    {l}");
                    }
                }
            }
            if ending == Ending::Apply {
                eprintln!(
                    "The apply stopped; what it did is recorded. Run `reconcile plan` to see what is left."
                );
            }
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

async fn as_json(
    rt: &DockerRuntime,
    store: &FileStore,
    outcome: Outcome,
    ending: Ending,
) -> ExitCode {
    let plain = |errors: Vec<String>| -> Vec<Value> {
        errors
            .into_iter()
            .map(|m| json!({ "message": m }))
            .collect()
    };
    let (name, errors, ok) = match outcome {
        Outcome::Stale { moved } => (
            "stale",
            plain(
                moved
                    .into_iter()
                    .map(|m| format!("the saved plan is stale: {m}"))
                    .collect(),
            ),
            false,
        ),
        Outcome::Refused { plan } => {
            plan_line(&plan);
            ("refused", plain(plan.errors.clone()), false)
        }
        Outcome::Unchanged { plan, settled } => {
            plan_line(&plan);
            for (service, message) in settled {
                progress_line(&format!("{service}: {message}"));
            }
            ("unchanged", Vec::new(), true)
        }
        Outcome::Suspended { .. } => (
            "suspended",
            plain(vec!["suspended: nothing was applied".into()]),
            false,
        ),
        Outcome::Declined { .. } => ("declined", Vec::new(), false),
        Outcome::Applied { .. } if ending == Ending::Destroy => ("destroyed", Vec::new(), true),
        Outcome::Applied { .. } => ("applied", Vec::new(), true),
        Outcome::Failed { error, .. } => {
            let errors = failures(rt, &error)
                .await
                .into_iter()
                .map(|(message, logs)| {
                    let logs: Vec<Value> = logs
                        .into_iter()
                        .map(|(container, task, text)| {
                            json!({"container": container, "task": task, "lines": text.lines().collect::<Vec<_>>()})
                        })
                        .collect();
                    json!({"message": message, "logs": logs})
                })
                .collect();
            ("failed", errors, false)
        }
    };
    let stored = store.load().unwrap_or_default();
    let services = steady_rows(rt, &stored).await.map(|rows| {
        rows.iter()
            .map(|r| {
                json!({
                    "service": r.service,
                    "running": r.running,
                    "desiredCount": r.desired,
                    "taskDefinition": r.revision,
                })
            })
            .collect()
    });
    result_line(name, errors, services);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}

/// Each failure of an apply, with the last log lines of the task that
/// failed: (message, [(container, short task id, text)]). A container
/// that never ran has nothing to show and is left out.
async fn failures(
    rt: &DockerRuntime,
    e: &ApplyError,
) -> Vec<(String, Vec<(String, String, String)>)> {
    let mut out = Vec::new();
    for f in e.each() {
        let mut logs = Vec::new();
        if let ApplyError::Failed { task: Some(t), .. } = f {
            for (container, text) in rt.task_logs(t, 10).await {
                if !text.trim().is_empty() {
                    logs.push((container, plan::short(t).to_string(), text));
                }
            }
        }
        out.push((f.to_string(), logs));
    }
    out
}

/// One service after an apply.
struct SteadyRow {
    service: String,
    running: usize,
    /// None for a DAEMON service.
    desired: Option<u32>,
    revision: String,
}

/// What runs after an apply, per service; None when the engine cannot be
/// read.
async fn steady_rows(rt: &DockerRuntime, stored: &Stored) -> Option<Vec<SteadyRow>> {
    let obs = rt.observe().await.ok()?;
    Some(
        stored
            .services
            .iter()
            .map(|(key, s)| SteadyRow {
                service: key.clone(),
                running: obs
                    .tasks
                    .iter()
                    .filter(|t| {
                        t.last_status == TaskStatus::Running
                            && t.identity.service.as_deref() == Some(s.key.name.as_str())
                            && t.identity.cluster == s.key.cluster
                    })
                    .count(),
                desired: s.spec.desired_count,
                revision: crate::model::TaskDefRef::parse(&s.spec.task_definition)
                    .at(s.revision)
                    .to_string(),
            })
            .collect(),
    )
}

/// "N services" and then a column-aligned row per service, so that many
/// services stay readable.
fn steady_text(rows: &[SteadyRow]) -> String {
    if rows.is_empty() {
        return "no services".into();
    }
    let counts: Vec<String> = rows
        .iter()
        .map(|r| {
            let desired = r
                .desired
                .map(|d| d.to_string())
                .unwrap_or_else(|| "daemon".into());
            format!("{}/{desired}", r.running)
        })
        .collect();
    let ws = rows.iter().map(|r| r.service.len()).max().unwrap_or(0);
    let wr = counts.iter().map(String::len).max().unwrap_or(0);
    let mut out = format!(
        "{} service{}",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    );
    for (r, c) in rows.iter().zip(&counts) {
        out.push_str(&format!(
            "\n  {:<ws$}  {c:>wr$} running  {}",
            r.service, r.revision
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(service: &str, running: usize, desired: Option<u32>, revision: &str) -> SteadyRow {
        SteadyRow {
            service: service.into(),
            running,
            desired,
            revision: revision.into(),
        }
    }

    #[test]
    fn the_apply_summary_is_a_line_per_service() {
        let text = steady_text(&[
            row("local/web", 2, Some(2), "web:4"),
            row("local/worker-long", 10, Some(10), "worker:1"),
            row("local/agent", 1, None, "agent:2"),
        ]);
        assert_eq!(
            text,
            "3 services\n  \
             local/web               2/2 running  web:4\n  \
             local/worker-long     10/10 running  worker:1\n  \
             local/agent        1/daemon running  agent:2"
        );
        assert_eq!(steady_text(&[]), "no services");
        assert!(steady_text(&[row("a/b", 1, Some(1), "b:1")]).starts_with("1 service\n"));
    }
}
