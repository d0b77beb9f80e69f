//! Where log events go: `tracing` events from the library, to stderr, as
//! text or as one JSON object per line, filtered by level.
//!
//! What a command prints for people (plans, status, progress) is not a log
//! event: the commands write it themselves.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// One line per event: RFC 3339 UTC time, level, spans, message.
    #[default]
    Text,
    /// One JSON object per event, with its fields and the spans it is in
    /// (`pass`, `commit`, `service`).
    Json,
}

#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct LogArgs {
    /// Which log events to write: a level (error, warn, info, debug,
    /// trace) or a filter in RUST_LOG's syntax (`reconcile=debug,warn`).
    /// Default: $RUST_LOG, else `info` for the controller and the agent,
    /// `warn` for other commands.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// How log events are written to stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
}

/// The default filter of long-running commands: this program's events at
/// info, its libraries' at warn.
pub(crate) const DAEMON: &str = "reconcile=info,warn";
/// The default filter of commands people run in a terminal, whose output
/// is their own.
pub(crate) const COMMAND: &str = "warn";

/// Install the subscriber for this process; `default` applies when
/// neither `--log-level` nor `RUST_LOG` says otherwise.
pub(crate) fn init(args: &LogArgs, default: &str) -> Result<(), String> {
    let filter = match &args.log_level {
        Some(level) => {
            EnvFilter::try_new(level).map_err(|e| format!("--log-level `{level}`: {e}"))?
        }
        None => match std::env::var("RUST_LOG") {
            Ok(v) if !v.trim().is_empty() => {
                EnvFilter::try_new(&v).map_err(|e| format!("RUST_LOG `{v}`: {e}"))?
            }
            _ => EnvFilter::new(default),
        },
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match args.log_format {
        LogFormat::Text => builder
            .with_ansi(super::diagnostics::colour(
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
            ))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
    installed.map_err(|e| format!("logging: {e}"))
}
