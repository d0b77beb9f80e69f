//! Reading a container's log through the engine: stdout and stderr as
//! whole lines (split here, each capped by `logs::cap`), with the
//! engine's timestamp kept apart, and the refusal of a log driver that
//! cannot be read turned into a sentence that names the driver.

use bollard::container::LogOutput;
use bollard::query_parameters::{InspectContainerOptions, LogsOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::logs::{cap, MAX_LINE};

/// What to read of a container's log.
#[derive(Debug, Clone, Default)]
pub struct LogRequest {
    /// Keep reading as the container writes, until it stops.
    pub follow: bool,
    /// Only lines written at or after this Unix second.
    pub since: Option<i64>,
    /// Only the last N lines (before following).
    pub tail: Option<usize>,
    /// Keep the engine's timestamp of each line.
    pub timestamps: bool,
}

/// Which output a line was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    Stdout,
    Stderr,
}

/// One line of a container's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub output: Output,
    /// RFC 3339 with nanoseconds, as the engine wrote it (with `timestamps`).
    pub timestamp: Option<String>,
    pub text: String,
}

/// Read `container`'s log into `lines` until it ends (or, following,
/// until the container stops or the receiver is dropped). `task` and
/// `name` only word the error.
pub async fn read(
    docker: &Docker,
    container: &str,
    task: &str,
    name: &str,
    request: &LogRequest,
    lines: &mpsc::Sender<LogLine>,
) -> Result<(), String> {
    let mut options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .follow(request.follow)
        .timestamps(request.timestamps);
    if let Some(since) = request.since {
        options = options.since(since.clamp(0, i32::MAX as i64) as i32);
    }
    options = options.tail(&request.tail.map_or("all".to_string(), |n| n.to_string()));
    let mut stream = docker.logs(container, Some(options.build()));
    let mut partial = [Vec::new(), Vec::new()];
    while let Some(chunk) = stream.next().await {
        let (output, bytes) = match chunk {
            Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                (Output::Stdout, message)
            }
            Ok(LogOutput::StdErr { message }) => (Output::Stderr, message),
            Ok(LogOutput::StdIn { .. }) => continue,
            Err(e) => return Err(refusal(docker, container, task, name, &e).await),
        };
        let buf = &mut partial[output as usize];
        for piece in bytes.split_inclusive(|b| *b == b'\n') {
            if buf.len() < MAX_LINE + 4 {
                buf.extend_from_slice(&piece[..piece.len().min(MAX_LINE + 4 - buf.len())]);
            }
            if piece.ends_with(b"\n") {
                let line = split_line(output, std::mem::take(buf), request.timestamps);
                if lines.send(line).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
    for (i, buf) in partial.into_iter().enumerate() {
        if !buf.is_empty() {
            let output = if i == 0 {
                Output::Stdout
            } else {
                Output::Stderr
            };
            let _ = lines
                .send(split_line(output, buf, request.timestamps))
                .await;
        }
    }
    Ok(())
}

/// One raw line (its newline included or not) as a [`LogLine`].
fn split_line(output: Output, raw: Vec<u8>, timestamps: bool) -> LogLine {
    let text = String::from_utf8_lossy(&raw);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    let (timestamp, text) = match text.split_once(' ') {
        Some((t, rest)) if timestamps => (Some(t.to_string()), rest),
        _ if timestamps => (Some(text.to_string()), ""),
        _ => (None, text),
    };
    LogLine {
        output,
        timestamp,
        text: cap(text).into_owned(),
    }
}

/// The engine's error reading a log, in words: a driver that cannot be
/// read (`none`, or one without reading while dual logging is off) is
/// named; anything else is passed on.
async fn refusal(
    docker: &Docker,
    container: &str,
    task: &str,
    name: &str,
    e: &bollard::errors::Error,
) -> String {
    let driver = docker
        .inspect_container(container, None::<InspectContainerOptions>)
        .await
        .ok()
        .and_then(|c| c.host_config?.log_config?.typ);
    let text = e.to_string();
    match driver {
        Some(d) if d == "none" || text.contains("does not support reading") => format!(
            "task {task} container {name}: its log driver `{d}` does not support reading logs"
        ),
        _ => format!("task {task} container {name}: reading its log: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_their_timestamp_apart() {
        let l = split_line(
            Output::Stderr,
            b"2026-01-02T03:04:05.000000001Z hello world\n".to_vec(),
            true,
        );
        assert_eq!(
            l.timestamp.as_deref(),
            Some("2026-01-02T03:04:05.000000001Z")
        );
        assert_eq!(l.text, "hello world");
        let l = split_line(Output::Stdout, b"a b\r\n".to_vec(), false);
        assert_eq!((l.timestamp, l.text.as_str()), (None, "a b"));
    }
}
