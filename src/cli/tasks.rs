//! `reconcile run-task`, `tasks` and `stop-task`: tasks that run to
//! completion, on the local engine (records beside the source's state) or
//! through a controller.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::args::{resolver_for, source_id, Format, Target};
use super::remote::Client;
use super::run::{block_on, failure, usage, EXIT_FAILURE};
use super::task_flags::{add_override, constraint, provider, strategy};
use crate::model::{DesiredState, TaskStatus};
use crate::reconcile::Reconciler;
use crate::runs::{self, Filter, RunRecord, RunReply, RunRequest};
use crate::runtime::docker::DockerRuntime;
use crate::runtime::{Launch, Runtime};
use crate::store::{FileStore, RunsFile, Snapshot};

#[derive(Debug, clap::Args)]
pub struct RunTaskArgs {
    /// The task definition: FAMILY (the revision last applied) or
    /// FAMILY:REVISION.
    task_definition: String,
    /// The cluster to run in.
    #[arg(long)]
    cluster: String,
    /// Tasks to start (1-10).
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// `distinctInstance` or `memberOf:EXPRESSION` (repeatable), besides
    /// the task definition's own.
    #[arg(long = "placement-constraint", value_name = "TYPE[:EXPRESSION]")]
    placement_constraints: Vec<String>,
    /// `spread:FIELD`, `binpack:cpu|memory` or `random`, in order
    /// (repeatable). Default: spread by zone, then by node.
    #[arg(long = "placement-strategy", value_name = "TYPE[:FIELD]")]
    placement_strategy: Vec<String>,
    /// `PROVIDER[:WEIGHT[:BASE]]` (repeatable). Default: the cluster's.
    #[arg(
        long = "capacity-provider-strategy",
        value_name = "PROVIDER[:WEIGHT[:BASE]]"
    )]
    capacity_provider_strategy: Vec<String>,
    /// `CONTAINER.command=ARGS` (a JSON array, or words split on spaces)
    /// or `CONTAINER.env.NAME=VALUE` (repeatable).
    #[arg(long = "override", value_name = "CONTAINER.FIELD=VALUE")]
    overrides: Vec<String>,
    /// Who started the tasks (ECS startedBy): up to 36 letters, digits,
    /// `-`, `_`, `/`.
    #[arg(long, value_name = "TAG")]
    started_by: Option<String>,
    /// Follow the tasks to their end, print their last log lines, and exit
    /// with the essential container's exit code.
    #[arg(long)]
    wait: bool,
    /// Log lines printed per container with --wait.
    #[arg(long, default_value_t = 20, value_name = "N")]
    tail: usize,
    /// The source whose registered task definitions run (standalone).
    #[arg(long, default_value = ".")]
    source: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    at: Target,
}

#[derive(Debug, clap::Args)]
pub struct TasksArgs {
    /// The source whose tasks to list (standalone).
    #[arg(default_value = ".")]
    source: PathBuf,
    /// Only the tasks of this cluster.
    #[arg(long)]
    cluster: Option<String>,
    /// Only the tasks of this task definition family.
    #[arg(long)]
    family: Option<String>,
    /// Only the tasks started by TAG (`schedule/NAME` for a scheduled
    /// task's).
    #[arg(long, value_name = "TAG")]
    started_by: Option<String>,
    /// RUNNING (not stopped yet) or STOPPED.
    #[arg(long, value_parser = ["RUNNING", "STOPPED"])]
    status: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    at: Target,
}

#[derive(Debug, clap::Args)]
pub struct StopTaskArgs {
    /// The task's id, or at least 8 of its first characters.
    id: String,
    /// Why: shown as the task's stopped reason.
    #[arg(long, value_name = "TEXT", default_value = "")]
    reason: String,
    /// The source the task was run from (standalone).
    #[arg(long, default_value = ".")]
    source: PathBuf,
    #[command(flatten)]
    at: Target,
}

/// A request from the flags; the error names the flag.
fn request(a: &RunTaskArgs) -> Result<RunRequest, String> {
    let mut req = RunRequest {
        cluster: a.cluster.clone(),
        task_definition: a.task_definition.clone(),
        count: a.count,
        started_by: a.started_by.clone(),
        ..RunRequest::default()
    };
    for c in &a.placement_constraints {
        req.placement_constraints.push(constraint(c)?);
    }
    for s in &a.placement_strategy {
        req.placement_strategy.push(strategy(s)?);
    }
    for p in &a.capacity_provider_strategy {
        req.capacity_provider_strategy.push(provider(p)?);
    }
    for o in &a.overrides {
        add_override(&mut req.overrides, o)?;
    }
    runs::check(&req).map_err(|e| format!("--count/--started-by: {e}"))?;
    Ok(req)
}

fn filter(a: &TasksArgs) -> Filter {
    Filter {
        cluster: a.cluster.clone(),
        family: a.family.clone(),
        started_by: a.started_by.clone(),
        status: a.status.as_deref().map(|s| {
            if s == "STOPPED" {
                TaskStatus::Stopped
            } else {
                TaskStatus::Running
            }
        }),
    }
}

pub fn run_task_cmd(a: RunTaskArgs) -> ExitCode {
    let req = match request(&a) {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    if a.at.remote.controller.is_some() {
        return remote_run(&a, req);
    }
    let (id, _) = match source_id(&a.source, &a.at.git, &a.at.state) {
        Ok(x) => x,
        Err(e) => return usage(e),
    };
    block_on(local_run(&a, req, &id))
}

/// The local engine as the one node, with the source's registered
/// revisions and applied clusters.
struct Local {
    rt: DockerRuntime,
    runs: RunsFile,
    stored: crate::store::Stored,
}

impl Local {
    async fn open(target: &Target, id: &str) -> Result<Local, String> {
        let dir = target.state.dir();
        let stored = FileStore::peek(&dir.store(id)).map_err(|e| e.to_string())?;
        let runs = RunsFile::open(&dir.runs(id)).map_err(|e| e.to_string())?;
        let rt = DockerRuntime::connect(id, "local")
            .await
            .map_err(|e| e.message)?;
        Ok(Local { rt, runs, stored })
    }

    /// The records brought up to date with the engine; those past their
    /// retention are forgotten and their containers removed.
    async fn refresh(&self) -> Result<crate::store::Runs, String> {
        let mut records = self.runs.load().map_err(|e| e.to_string())?;
        let obs = self.rt.observe().await.map_err(|e| e.message)?;
        let seen = runs::refresh(&mut records, &obs.tasks, crate::clock::unix_now());
        for id in &seen.expired {
            match self.rt.remove(id).await {
                Ok(()) => {
                    records.remove(id);
                }
                Err(e) => {
                    tracing::warn!(task = %id, "cannot remove stopped task {id}: {}", e.message)
                }
            }
        }
        if !seen.changed.is_empty() || !seen.expired.is_empty() {
            self.runs.save(&records).map_err(|e| e.to_string())?;
        }
        Ok(records)
    }
}

async fn local_run(a: &RunTaskArgs, req: RunRequest, id: &str) -> ExitCode {
    let local = match Local::open(&a.at, id).await {
        Ok(l) => l,
        Err(e) => return failure(e),
    };
    let resolver = match resolver_for(&a.source, &a.at.state) {
        Ok(r) => r,
        Err(e) => return failure(e),
    };
    let reconciler = Reconciler {
        runtime: &local.rt,
        store: &Snapshot(local.stored.clone()),
        resolver: &resolver,
    };
    let observed = match reconciler.observed().await {
        Ok(o) => o,
        Err(e) => return failure(e),
    };
    let desired = DesiredState {
        clusters: local.stored.clusters.clone(),
        capacity_providers: local.stored.capacity_providers.clone(),
        ..DesiredState::default()
    };
    let counter = std::sync::atomic::AtomicU64::new(0);
    let placed = match runs::place(
        &req,
        &desired,
        &observed,
        crate::reconcile::seed(id),
        || crate::model::new_task_id(&counter),
    ) {
        Ok(p) => p,
        Err(e) => return failure(e),
    };
    let mut records = match local.runs.load() {
        Ok(r) => r,
        Err(e) => return failure(e),
    };
    let mut started = Vec::new();
    let mut failures = placed.failures.clone();
    for s in placed.starts {
        let secrets = match launch_secrets(&resolver, &s.spec) {
            Ok(x) => x,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let record = runs::record_of(&s, crate::clock::unix_now());
        let launch = Launch {
            identity: s.identity,
            node: s.node,
            spec: s.spec,
            secrets,
        };
        if let Err(e) = local.rt.start(launch).await {
            tracing::debug!("start failed: {}", e.message);
        }
        started.push(record.id.clone());
        records.insert(record.id.clone(), record);
    }
    if let Err(e) = local.runs.save(&records) {
        return failure(e);
    }
    let records = match local.refresh().await {
        Ok(r) => r,
        Err(e) => return failure(e),
    };
    let reply = RunReply {
        tasks: started
            .iter()
            .filter_map(|i| records.get(i).cloned())
            .collect(),
        failures,
    };
    if let Some(code) = show_started(&reply, a) {
        return code;
    }
    let ended = loop {
        let records = match local.refresh().await {
            Ok(r) => r,
            Err(e) => return failure(e),
        };
        let mine: Vec<RunRecord> = started
            .iter()
            .filter_map(|i| records.get(i).cloned())
            .collect();
        if mine.iter().all(RunRecord::is_stopped) {
            break mine;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut logs = BTreeMap::new();
    for r in &ended {
        logs.insert(r.id.clone(), local.rt.task_logs(&r.id, a.tail).await);
    }
    finish(&ended, &logs, &reply.failures, a.format)
}

/// Secret values of a spec's references, for its launch only.
fn launch_secrets(
    resolver: &crate::secrets::Resolver,
    spec: &crate::manifest::TaskDefinitionSpec,
) -> Result<BTreeMap<String, crate::secrets::SecretValue>, String> {
    let mut out = BTreeMap::new();
    for s in spec
        .container_definitions
        .iter()
        .flat_map(|c| c.secrets.iter())
    {
        if let Some(v) = resolver
            .resolve_for_launch(&s.value_from)
            .map_err(|e| e.to_string())?
        {
            out.insert(s.value_from.clone(), v);
        }
    }
    Ok(out)
}

/// Show what a run started; without --wait, that is the end: failure
/// when nothing started.
fn show_started(reply: &RunReply, a: &RunTaskArgs) -> Option<ExitCode> {
    match a.format {
        Format::Json => println!("{}", serde_json::to_string(reply).unwrap_or_default()),
        Format::Text => print!("{}", render_started(reply)),
    }
    if a.wait {
        return None;
    }
    Some(if reply.tasks.is_empty() {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

fn render_started(reply: &RunReply) -> String {
    let mut out = String::new();
    for r in &reply.tasks {
        out.push_str(&format!(
            "started task {} ({}:{}) on node `{}`{}\n",
            r.id,
            r.family,
            r.revision,
            r.node,
            r.stopped_reason
                .as_ref()
                .map(|w| format!(": {w}"))
                .unwrap_or_default()
        ));
    }
    for f in &reply.failures {
        out.push_str(&format!("failure: {f}\n"));
    }
    out
}

/// The end of `run-task --wait`: each task's outcome and last log lines;
/// the exit status is the first non-zero exit code of an essential
/// container (a task that never ran counts as 1), else 0.
fn finish(
    ended: &[RunRecord],
    logs: &BTreeMap<String, Vec<(String, String)>>,
    failures: &[String],
    format: Format,
) -> ExitCode {
    let mut code: i64 = if failures.is_empty() { 0 } else { 1 };
    for r in ended {
        let c = r.exit_code().unwrap_or(1);
        if code == 0 && c != 0 {
            code = c;
        }
    }
    match format {
        Format::Json => {
            let tasks: Vec<serde_json::Value> = ended
                .iter()
                .map(|r| {
                    let mut v = serde_json::to_value(r).unwrap_or_default();
                    v["exitCode"] = serde_json::json!(r.exit_code());
                    v["logs"] = serde_json::json!(logs.get(&r.id));
                    v
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({"tasks": tasks, "failures": failures, "exitCode": code})
            );
        }
        Format::Text => {
            for r in ended {
                println!(
                    "task {} {}: {}",
                    crate::plan::short(&r.id),
                    r.stop_code.as_deref().unwrap_or("STOPPED"),
                    r.stopped_reason.as_deref().unwrap_or("stopped")
                );
                for (container, text) in logs.get(&r.id).into_iter().flatten() {
                    if text.trim().is_empty() {
                        continue;
                    }
                    println!("  last log lines of `{container}`:");
                    for line in text.lines() {
                        println!("    {line}");
                    }
                }
            }
        }
    }
    // Exit statuses are 0-255: a code beyond that (or negative) is a failure.
    ExitCode::from(u8::try_from(code).unwrap_or(EXIT_FAILURE))
}

pub fn tasks_cmd(a: TasksArgs) -> ExitCode {
    let f = filter(&a);
    let records: Vec<RunRecord> = if a.at.remote.controller.is_some() {
        match remote_list(&a, &f) {
            Ok(r) => r,
            Err(code) => return code,
        }
    } else {
        let (id, _) = match source_id(&a.source, &a.at.git, &a.at.state) {
            Ok(x) => x,
            Err(e) => return usage(e),
        };
        let listed = block_on(async {
            let local = Local::open(&a.at, &id).await?;
            local.refresh().await
        });
        match listed {
            Ok(r) => r.into_values().filter(|r| f.keeps(r)).collect(),
            Err(e) => return failure(e),
        }
    };
    match a.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&records).unwrap_or_default()
        ),
        Format::Text => print!("{}", render_list(&records, crate::clock::unix_now())),
    }
    ExitCode::SUCCESS
}

/// One line per task, newest first.
pub(crate) fn render_list(records: &[RunRecord], now: i64) -> String {
    if records.is_empty() {
        return "no tasks\n".to_string();
    }
    let mut sorted: Vec<&RunRecord> = records.iter().collect();
    sorted.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    let mut out = format!(
        "{:<12}  {:<20}  {:<10}  {:<8}  {:<12}  {:<14}  {}\n",
        "TASK", "TASK DEFINITION", "CLUSTER", "STATUS", "NODE", "STARTED BY", "ENDED"
    );
    for r in sorted {
        let ended = if r.is_stopped() {
            let code = r
                .exit_code()
                .map(|c| format!("exit {c}"))
                .unwrap_or_else(|| r.stop_code.clone().unwrap_or_default());
            let ago = r
                .stopped_at
                .map(|t| format!(" {}", crate::clock::age(now - t)))
                .unwrap_or_default();
            format!(
                "{code}{ago}: {}",
                r.stopped_reason.as_deref().unwrap_or_default()
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{:<12}  {:<20}  {:<10}  {:<8}  {:<12}  {:<14}  {}\n",
            crate::plan::short(&r.id),
            format!("{}:{}", r.family, r.revision),
            r.cluster,
            crate::model::serde_name(&r.last_status),
            r.node,
            r.started_by.as_deref().unwrap_or("-"),
            ended
        ));
    }
    out
}

pub fn stop_task_cmd(a: StopTaskArgs) -> ExitCode {
    if a.at.remote.controller.is_some() {
        let client = match Client::new(&a.at.remote) {
            Ok(c) => c,
            Err(code) => return code,
        };
        let body = serde_json::json!({"reason": a.reason});
        let path = format!("/v1/tasks/{}/stop", a.id);
        return match block_on(client.call_json::<RunRecord, _>(reqwest::Method::POST, &path, &body))
        {
            Ok(r) => stopped(&r),
            Err(e) => failure(e),
        };
    }
    let (id, _) = match source_id(&a.source, &a.at.git, &a.at.state) {
        Ok(x) => x,
        Err(e) => return usage(e),
    };
    block_on(async {
        let local = match Local::open(&a.at, &id).await {
            Ok(l) => l,
            Err(e) => return failure(e),
        };
        let mut records = match local.refresh().await {
            Ok(r) => r,
            Err(e) => return failure(e),
        };
        let task = match runs::find(&records, &a.id) {
            Ok(r) => r.id.clone(),
            Err(e) => return usage(e),
        };
        let now = crate::clock::unix_now();
        if let Some(r) = records.get_mut(&task) {
            runs::stop_requested(r, &a.reason, now);
        }
        // The reason is kept before the task stops: a stop cut short still
        // says who asked.
        if let Err(e) = local.runs.save(&records) {
            return failure(e);
        }
        if let Err(e) = local.rt.halt(&task).await {
            return failure(e.message);
        }
        match local.refresh().await {
            Ok(r) => match r.get(&task) {
                Some(r) => stopped(r),
                None => ExitCode::SUCCESS,
            },
            Err(e) => failure(e),
        }
    })
}

fn stopped(r: &RunRecord) -> ExitCode {
    println!(
        "task {} {}: {}",
        r.id,
        crate::model::serde_name(&r.last_status),
        r.stopped_reason.as_deref().unwrap_or_default()
    );
    ExitCode::SUCCESS
}

fn remote_run(a: &RunTaskArgs, req: RunRequest) -> ExitCode {
    let client = match Client::new(&a.at.remote) {
        Ok(c) => c,
        Err(code) => return code,
    };
    block_on(async {
        let reply: RunReply = match client
            .call_json(reqwest::Method::POST, "/v1/tasks", &req)
            .await
        {
            Ok(r) => r,
            Err(e) => return failure(e),
        };
        if let Some(code) = show_started(&reply, a) {
            return code;
        }
        let mut ended = Vec::new();
        for t in &reply.tasks {
            loop {
                let r: RunRecord = match client
                    .call(reqwest::Method::GET, &format!("/v1/tasks/{}", t.id))
                    .await
                {
                    Ok(r) => r,
                    Err(e) => return failure(e),
                };
                if r.is_stopped() {
                    ended.push(r);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        let code = finish(&ended, &BTreeMap::new(), &reply.failures, a.format);
        // The last lines, relayed from the nodes (secrets masked), as
        // `reconcile logs TASK --tail N` shows them.
        if a.format == Format::Text {
            for r in &ended {
                let ask = super::logs_remote::Ask {
                    target: r.id.clone(),
                    container: None,
                    follow: false,
                    since: None,
                    tail: Some(a.tail),
                    timestamps: false,
                };
                let _ = super::logs_remote::run(&a.at.remote, ask).await;
            }
        }
        code
    })
}

fn remote_list(a: &TasksArgs, f: &Filter) -> Result<Vec<RunRecord>, ExitCode> {
    let client = Client::new(&a.at.remote)?;
    let mut query = Vec::new();
    if let Some(c) = &f.cluster {
        query.push(format!("cluster={c}"));
    }
    if let Some(x) = &f.family {
        query.push(format!("family={x}"));
    }
    if let Some(x) = &f.started_by {
        query.push(format!("startedBy={x}"));
    }
    if let Some(s) = &a.status {
        query.push(format!("status={s}"));
    }
    let path = if query.is_empty() {
        "/v1/tasks".to_string()
    } else {
        format!("/v1/tasks?{}", query.join("&"))
    };
    block_on(client.call(reqwest::Method::GET, &path)).map_err(failure)
}

/// `history NAME --controller` of a scheduled task: its runs, newest
/// first, with their tasks' exit codes. None when NAME is a service (or
/// nothing the controller has under that name): the caller goes on.
pub(crate) fn scheduled_history(
    remote: &super::args::RemoteArgs,
    name: &str,
    format: Format,
) -> Option<ExitCode> {
    let name = name.strip_prefix("ScheduledTask/").unwrap_or(name);
    if name.contains('/') {
        return None;
    }
    let client = match Client::new(remote) {
        Ok(c) => c,
        Err(code) => return Some(code),
    };
    let status: crate::report::StatusReport =
        match block_on(client.call(reqwest::Method::GET, "/v1/status")) {
            Ok(s) => s,
            Err(e) => return Some(failure(e)),
        };
    if status.services.iter().any(|s| s.name == name)
        || !status.scheduled_tasks.iter().any(|s| s.name == name)
    {
        return None;
    }
    let view: crate::runs::scheduled::ScheduledView =
        match block_on(client.call(reqwest::Method::GET, &format!("/v1/scheduled-tasks/{name}"))) {
            Ok(v) => v,
            Err(e) => return Some(failure(e)),
        };
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&view).unwrap_or_default()
        ),
        Format::Text => {
            let now = crate::clock::unix_now();
            let head = crate::runs::scheduled::ScheduledView {
                runs: Vec::new(),
                ..view.clone()
            };
            print!("{}", super::render::scheduled(&[head], true, now));
            if view.runs.is_empty() {
                println!("  no runs yet");
            }
            for run in &view.runs {
                println!("  {}", super::render::run_line(run, now));
            }
        }
    }
    Some(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_status_is_the_first_failing_essential_exit_code() {
        let record = |id: &str, code: Option<i64>| RunRecord {
            id: id.into(),
            cluster: "c".into(),
            family: "f".into(),
            revision: 1,
            group: "family:f".into(),
            started_by: None,
            node: "n".into(),
            created_at: 0,
            desired_status: TaskStatus::Stopped,
            last_status: TaskStatus::Stopped,
            started_at: None,
            stopped_at: None,
            stop_code: None,
            stopped_reason: None,
            exits: code
                .map(|c| {
                    vec![crate::model::ContainerExit {
                        name: "job".into(),
                        exit_code: Some(c),
                        essential: true,
                    }]
                })
                .unwrap_or_default(),
            bindings: Vec::new(),
        };
        let logs = BTreeMap::new();
        let code = |records: &[RunRecord], failures: &[String]| {
            format!("{:?}", finish(records, &logs, failures, Format::Json))
        };
        assert_eq!(
            code(&[record("a", Some(0)), record("b", Some(3))], &[]),
            format!("{:?}", ExitCode::from(3))
        );
        assert_eq!(
            code(&[record("a", Some(0))], &[]),
            format!("{:?}", ExitCode::SUCCESS)
        );
        assert_eq!(
            code(&[record("a", None)], &[]),
            format!("{:?}", ExitCode::from(1))
        );
        assert_eq!(
            code(&[record("a", Some(0))], &["not placed".into()]),
            format!("{:?}", ExitCode::from(1))
        );
    }
}
