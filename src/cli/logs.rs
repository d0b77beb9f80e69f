//! `reconcile logs`: the log lines of a service's tasks, or of one task,
//! read from the local Docker engine (with --controller, `logs_remote.rs`
//! asks the controller instead). Containers are found by their
//! labels (source, service, task, container name); each container's log
//! is read by a task of its own and the lines interleave on stdout under a
//! `service.task/container | ` prefix. With --follow the task set is
//! polled every second, so tasks that replace stopped ones are picked up.

use std::collections::{BTreeSet, HashSet};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bollard::models::ContainerSummaryStateEnum;
use bollard::Docker;
use tokio::sync::mpsc;

use super::args::{source_id, GitArgs, RemoteArgs, StateArgs};
use super::diagnostics::colour;
use super::run::{block_on, failure, usage, EXIT_FAILURE};
use crate::clock::parse_since;
use crate::logs::{prefix, stream_name};
use crate::runtime::docker::label;
use crate::runtime::docker::logs::{read, LogLine, LogRequest};

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// A service (`web`, or `cluster/web` when several clusters have one)
    /// or a task (its id, or a unique prefix of at least 8 characters).
    #[arg(value_name = "SERVICE|TASK")]
    target: String,
    /// The source the service was applied from.
    #[arg(default_value = ".")]
    source: PathBuf,
    /// Only this container of the task definition.
    #[arg(long, value_name = "NAME")]
    container: Option<String>,
    /// Keep printing new lines, and the lines of tasks that replace
    /// stopped ones, until interrupted.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Only lines since a duration ago (`30s`, `5m`, `1h30m`, `2d`) or an
    /// RFC 3339 time.
    #[arg(long, value_name = "DURATION|TIME")]
    since: Option<String>,
    /// Only the last N lines of each container (before following).
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
    /// Show the engine's timestamp of each line.
    #[arg(long, short = 't')]
    timestamps: bool,
    #[command(flatten)]
    git: GitArgs,
    #[command(flatten)]
    state: StateArgs,
    #[command(flatten)]
    remote: RemoteArgs,
}

/// A container of the source, by its labels.
#[derive(Debug, Clone)]
struct Found {
    id: String,
    task: String,
    cluster: String,
    service: Option<String>,
    family: String,
    name: String,
    running: bool,
}

/// What the target names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selection {
    Service { cluster: String, service: String },
    Task(String),
}

impl Selection {
    /// Whether `c` is to be read: a service's running tasks (a stopped
    /// one's lines were shown while it ran), or every container of a task.
    fn wants(&self, c: &Found) -> bool {
        match self {
            Selection::Service { cluster, service } => {
                c.running && &c.cluster == cluster && c.service.as_deref() == Some(service)
            }
            Selection::Task(t) => &c.task == t,
        }
    }
}

/// Shortest task prefix accepted: what `status` shows.
const MIN_PREFIX: usize = 8;

/// The service or task `target` names among `found`.
fn resolve(target: &str, found: &[Found]) -> Result<Selection, String> {
    let (cluster, name) = match target.split_once('/') {
        Some((c, n)) => (Some(c), n),
        None => (None, target),
    };
    let mut clusters: BTreeSet<&str> = found
        .iter()
        .filter(|c| c.service.as_deref() == Some(name))
        .filter(|c| cluster.is_none_or(|want| c.cluster == want))
        .map(|c| c.cluster.as_str())
        .collect();
    if clusters.len() > 1 {
        let names: Vec<String> = clusters.iter().map(|c| format!("`{c}/{name}`")).collect();
        return Err(format!(
            "service `{name}` is in several clusters: name one of {}",
            names.join(", ")
        ));
    }
    if let Some(c) = clusters.pop_first() {
        return Ok(Selection::Service {
            cluster: c.to_string(),
            service: name.to_string(),
        });
    }
    if cluster.is_none() {
        let tasks: BTreeSet<&str> = found
            .iter()
            .map(|c| c.task.as_str())
            .filter(|t| t.starts_with(target))
            .collect();
        if tasks.len() == 1 && (target.len() >= MIN_PREFIX || tasks.contains(target)) {
            return Ok(Selection::Task(
                tasks.into_iter().next().unwrap_or_default().into(),
            ));
        }
        if tasks.len() > 1 && target.len() >= MIN_PREFIX {
            return Err(format!(
                "task prefix `{target}` matches {} tasks: give more of the id",
                tasks.len()
            ));
        }
        if !tasks.is_empty() {
            return Err(format!(
                "task prefix `{target}` is too short: give at least {MIN_PREFIX} characters"
            ));
        }
    }
    let services: BTreeSet<String> = found.iter().filter_map(|c| c.service.clone()).collect();
    let hint = crate::suggest::closest(name, services.iter().map(String::as_str))
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    Err(format!(
        "no service or task `{target}` among the source's containers{hint}"
    ))
}

/// Every container of the source, with its labels read.
async fn containers(docker: &Docker, source: &str) -> Result<Vec<Found>, String> {
    let list =
        crate::runtime::docker::labelled(docker, vec![format!("{}={source}", label::SOURCE)])
            .await
            .map_err(|e| format!("listing containers: {e}"))?;
    Ok(list
        .into_iter()
        .filter_map(|c| {
            let l = c.labels?;
            Some(Found {
                id: c.id?,
                task: l.get(label::TASK)?.clone(),
                cluster: l.get(label::CLUSTER).cloned().unwrap_or_default(),
                service: l.get(label::SERVICE).cloned(),
                family: l.get(label::FAMILY).cloned().unwrap_or_default(),
                name: l.get(label::CONTAINER).cloned().unwrap_or_default(),
                running: matches!(
                    c.state,
                    Some(
                        ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::RESTARTING
                    )
                ),
            })
        })
        .collect())
}

/// What a container's reader reports.
enum Event {
    Line(usize, LogLine),
    End(Result<(), String>),
}

pub fn logs_cmd(a: LogsArgs) -> ExitCode {
    let since = match a
        .since
        .as_deref()
        .map(|s| parse_since(s, crate::clock::unix_now()))
    {
        Some(Err(e)) => return usage(format!("--since {e}")),
        Some(Ok(t)) => Some(t),
        None => None,
    };
    if a.remote.controller.is_some() {
        return block_on(super::logs_remote::run(
            &a.remote,
            super::logs_remote::Ask {
                target: a.target.clone(),
                container: a.container.clone(),
                follow: a.follow,
                since,
                tail: a.tail,
                timestamps: a.timestamps,
            },
        ));
    }
    let (id, _) = match source_id(&a.source, &a.git, &a.state) {
        Ok(x) => x,
        Err(e) => return usage(e),
    };
    block_on(run(a, id, since))
}

async fn run(a: LogsArgs, source: String, since: Option<i64>) -> ExitCode {
    let docker = match crate::runtime::docker::engine().await {
        Ok((d, _)) => d,
        Err(e) => return failure(e.message),
    };
    let found = match containers(&docker, &source).await {
        Ok(f) => f,
        Err(e) => return failure(e),
    };
    let selection = match resolve(&a.target, &found) {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    if let Some(name) = &a.container {
        let names: BTreeSet<&str> = found
            .iter()
            .filter(|c| match &selection {
                Selection::Service { .. } => selection.wants(&Found {
                    running: true,
                    ..(*c).clone()
                }),
                Selection::Task(_) => selection.wants(c),
            })
            .map(|c| c.name.as_str())
            .collect();
        // A service with no running task yet has no names to check.
        if !names.is_empty() && !names.contains(name.as_str()) {
            let list: Vec<&str> = names.into_iter().collect();
            return usage(format!(
                "--container `{name}`: the task definition's containers are {}",
                list.join(", ")
            ));
        }
    }
    let first = LogRequest {
        follow: a.follow,
        since,
        tail: a.tail,
        timestamps: a.timestamps,
    };
    // Tasks that appear while following are shown from their start.
    let later = LogRequest {
        tail: None,
        ..first.clone()
    };
    let painted = colour(std::io::stdout().is_terminal());
    let (tx, mut rx) = mpsc::channel::<Event>(1024);
    let mut names: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut open = 0usize;
    let mut failed = false;
    let mut start = |found: &[Found], request: &LogRequest, names: &mut Vec<String>| -> usize {
        let mut started = 0;
        for c in found.iter().filter(|c| selection.wants(c)) {
            if a.container.as_ref().is_some_and(|n| n != &c.name) || !seen.insert(c.id.clone()) {
                continue;
            }
            let index = names.len();
            let owner = c.service.as_deref().unwrap_or(&c.family);
            names.push(stream_name(owner, &c.task, &c.name));
            spawn_reader(
                docker.clone(),
                c.clone(),
                request.clone(),
                index,
                tx.clone(),
            );
            started += 1;
        }
        started
    };
    open += start(&found, &first, &mut names);
    if open == 0 && !a.follow {
        return failure(format!("`{}` has no running task to read", a.target));
    }
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    poll.tick().await;
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let stdout = std::io::stdout();
    loop {
        tokio::select! {
            _ = &mut interrupt => return ExitCode::SUCCESS,
            event = rx.recv() => match event {
                Some(Event::Line(i, line)) => {
                    let width = names.iter().map(String::len).max().unwrap_or(0);
                    let text = render_line(&names[i], width, i, &line, painted);
                    if stdout.lock().write_all(text.as_bytes()).is_err() {
                        // The reader of stdout went away: nothing left to do.
                        return ExitCode::SUCCESS;
                    }
                }
                Some(Event::End(result)) => {
                    open -= 1;
                    if let Err(e) = result {
                        eprintln!("error: {e}");
                        failed = true;
                    }
                    let done_task = matches!(selection, Selection::Task(_));
                    if open == 0 && (!a.follow || done_task) {
                        break;
                    }
                }
                None => break,
            },
            _ = poll.tick(), if a.follow && !matches!(selection, Selection::Task(_)) => {
                match containers(&docker, &source).await {
                    Ok(found) => open += start(&found, &later, &mut names),
                    Err(e) => tracing::warn!("{e}"),
                }
            }
        }
    }
    let _ = stdout.lock().flush();
    if failed {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

/// Read one container's log in a task of its own, reporting its lines and
/// its end on `tx`.
fn spawn_reader(
    docker: Docker,
    c: Found,
    request: LogRequest,
    index: usize,
    tx: mpsc::Sender<Event>,
) {
    tokio::spawn(async move {
        let (lines, mut rx) = mpsc::channel::<LogLine>(256);
        let reading = async move {
            let r = read(&docker, &c.id, &c.task, &c.name, &request, &lines).await;
            drop(lines);
            r
        };
        let forward = async {
            while let Some(line) = rx.recv().await {
                if tx.send(Event::Line(index, line)).await.is_err() {
                    break;
                }
            }
        };
        let (result, ()) = tokio::join!(reading, forward);
        let _ = tx.send(Event::End(result)).await;
    });
}

/// A line as printed: prefix (coloured per stream on a terminal), the
/// timestamp when asked for, the text.
pub(super) fn render_line(
    name: &str,
    width: usize,
    index: usize,
    line: &LogLine,
    painted: bool,
) -> String {
    const COLOURS: [u8; 6] = [36, 33, 32, 35, 34, 31];
    let head = prefix(name, width);
    let head = if painted {
        let code = COLOURS[index % COLOURS.len()];
        format!("\x1b[{code}m{head}\x1b[0m")
    } else {
        head
    };
    let stamp = line
        .timestamp
        .as_deref()
        .map(|t| format!("{t} "))
        .unwrap_or_default();
    format!("{head}{stamp}{}\n", line.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(task: &str, cluster: &str, service: &str) -> Found {
        Found {
            id: format!("{task}-c"),
            task: task.into(),
            cluster: cluster.into(),
            service: Some(service.into()),
            family: service.into(),
            name: "app".into(),
            running: true,
        }
    }

    #[test]
    fn targets_resolve_to_services_or_tasks() {
        let found = [
            c("1a2b3c4d5e6f", "a", "web"),
            c("1a2b3c4d9999", "b", "web"),
            c("77665544aaaa", "a", "worker"),
        ];
        let e = resolve("web", &found).unwrap_err();
        assert!(e.contains("`a/web`, `b/web`"), "{e}");
        assert_eq!(
            resolve("b/web", &found),
            Ok(Selection::Service {
                cluster: "b".into(),
                service: "web".into()
            })
        );
        assert_eq!(
            resolve("77665544", &found),
            Ok(Selection::Task("77665544aaaa".into()))
        );
        assert!(resolve("7766", &found).unwrap_err().contains("at least 8"));
        assert!(resolve("1a2b3c4d", &found)
            .unwrap_err()
            .contains("matches 2 tasks"));
        let e = resolve("wrker", &found).unwrap_err();
        assert!(e.contains("did you mean `worker`"), "{e}");
    }
}
