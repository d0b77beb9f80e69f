//! Commands of fleet mode: `controller`, `agent`, `nodes`, `node`, and the
//! `--controller` variants of `plan`, `apply` and `status`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::args::Format;
use super::args::RemoteArgs;
use super::remote::Client;
use super::render;
use super::run::{block_on, failure, usage};
use crate::controller::{self, Controller};
use crate::wire::NodeView;

/// Tokens must be long enough not to be guessed.
fn check_token(flag: &str, token: &str) -> Result<(), ExitCode> {
    if token.len() < 16 {
        return Err(usage(format!(
            "{flag} must be at least 16 characters (got {})",
            token.len()
        )));
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("signers").multiple(true)))]
pub struct ControllerArgs {
    /// What to follow: a directory of manifests (watched), or `git+URL`
    /// (a local path, file://, https:// or ssh:// repository).
    #[arg(long, value_name = "DIR|git+URL")]
    source: String,
    /// Branch of a git source.
    #[arg(long = "ref", value_name = "BRANCH", default_value = "main")]
    reference: String,
    /// Directory inside a git source's repository.
    #[arg(long, value_name = "SUBDIR")]
    path: Option<String>,
    /// Secret shared with the git host's webhook (`POST /v1/webhook`,
    /// `X-Hub-Signature-256`).
    #[arg(
        long,
        env = "RECONCILE_WEBHOOK_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    webhook_secret: Option<String>,
    /// Apply only commits signed by an allowed key (SSH keys of
    /// --allowed-signers, OpenPGP keys of --allowed-gpg-keys); every new
    /// commit is checked, not only the head.
    #[arg(long, requires = "signers")]
    verify_signatures: bool,
    /// Allowed SSH signers file (git's `gpg.ssh.allowedSignersFile`
    /// format).
    #[arg(
        long,
        value_name = "FILE",
        requires = "verify_signatures",
        group = "signers"
    )]
    allowed_signers: Option<PathBuf>,
    /// Allowed OpenPGP public keys, ASCII-armored (`gpg --export --armor`),
    /// checked with `gpg`.
    #[arg(
        long,
        value_name = "FILE",
        requires = "verify_signatures",
        group = "signers"
    )]
    allowed_gpg_keys: Option<PathBuf>,
    /// Address to serve the API on.
    #[arg(long, default_value = "127.0.0.1:7700", value_name = "ADDR")]
    listen: String,
    /// Where the controller keeps its state (revisions, deployments,
    /// events, nodes, assignments). Default: `controller` in the state
    /// directory ($RECONCILE_STATE_DIR, else ~/.local/state/reconcile).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Token agents must present (at least 16 characters).
    #[arg(
        long,
        env = "RECONCILE_JOIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    join_token: String,
    /// Token the CLI must present (at least 16 characters).
    #[arg(
        long,
        env = "RECONCILE_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    api_token: String,
    /// Reconcile at least this often, in seconds (also at once when a node
    /// joins or is lost, and on `POST /v1/sync`).
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    interval: u64,
    /// How often agents heartbeat, in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    heartbeat_ms: u64,
    /// A node without a heartbeat for this long is LOST and its tasks are
    /// placed elsewhere.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    node_timeout: u64,
    /// Tasks without a health check count as healthy after running this
    /// many seconds.
    #[arg(long, default_value_t = 3, value_name = "SECONDS")]
    settle: u64,
    /// Give up waiting for a rollout step after this many seconds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    step_timeout: u64,
    /// Apply plans that delete more than half of the existing services.
    /// Without it such a plan is refused and reported, until approved once
    /// with `reconcile sync --allow-mass-delete`.
    #[arg(long)]
    allow_mass_delete: bool,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The URL nodes launched by managed scaling use to reach the
    /// controller (they run on this host's network). Default: the --listen
    /// address, with 0.0.0.0 read as 127.0.0.1.
    #[arg(long, value_name = "URL")]
    advertise_url: Option<String>,
    /// The CA nodes launched by managed scaling trust (with TLS).
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
}

pub fn controller_cmd(a: ControllerArgs) -> ExitCode {
    for (flag, t) in [
        ("--join-token", &a.join_token),
        ("--api-token", &a.api_token),
    ] {
        if let Err(c) = check_token(flag, t) {
            return c;
        }
    }
    if a.heartbeat_ms == 0 || a.node_timeout == 0 || a.interval == 0 {
        return usage("--interval, --heartbeat-ms and --node-timeout must be positive");
    }
    if Duration::from_millis(a.heartbeat_ms) * 2 > Duration::from_secs(a.node_timeout) {
        return usage("--node-timeout must be at least two heartbeats (--heartbeat-ms)");
    }
    let source =
        match crate::git::GitSource::parse(&a.source, Some(&a.reference), a.path.as_deref()) {
            Some(g) => controller::Source::Git(g),
            None => {
                if a.path.is_some() || a.verify_signatures {
                    return usage("--path and --verify-signatures apply to a git+URL source only");
                }
                let dir = PathBuf::from(&a.source);
                if !dir.is_dir() {
                    return usage(format!(
                        "--source `{}` is neither a directory nor git+URL",
                        a.source
                    ));
                }
                controller::Source::Dir(dir)
            }
        };
    let scheme = if a.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let advertise_url = a
        .advertise_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{}", a.listen.replace("0.0.0.0", "127.0.0.1")));
    let config = controller::Config {
        advertise_url,
        ca_cert: a.ca_cert.clone(),
        source,
        webhook_secret: a.webhook_secret.clone(),
        allowed_signers: a.allowed_signers.clone(),
        allowed_gpg_keys: a.allowed_gpg_keys.clone(),
        data_dir: a.data_dir.clone().unwrap_or_else(|| {
            super::args::StateArgs::default()
                .dir()
                .path()
                .join("controller")
        }),
        join_token: a.join_token,
        api_token: a.api_token,
        interval: Duration::from_secs(a.interval),
        heartbeat: Duration::from_millis(a.heartbeat_ms),
        node_timeout: Duration::from_secs(a.node_timeout),
        settle: Duration::from_secs(a.settle),
        step_timeout: Duration::from_secs(a.step_timeout),
        allow_mass_delete: a.allow_mass_delete,
    };
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => match crate::tls::server_config(cert, key) {
            Ok(t) => Some(t),
            Err(e) => return usage(e),
        },
        _ => None,
    };
    let c = match Controller::open(config) {
        Ok(c) => c,
        Err(e) => return failure(e),
    };
    block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&a.listen).await {
            Ok(l) => l,
            Err(e) => return usage(format!("--listen {}: {e}", a.listen)),
        };
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or(a.listen);
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!("controller listening on {scheme}://{addr}");
        let served = c.clone();
        // The API runs on the runtime's workers: accepting connections
        // must not wait while the loop below plans or saves (a first apply
        // of a thousand services kept new agents from joining for a minute).
        let server = tokio::spawn(async move {
            match tls {
                Some(t) => controller::http::serve_tls(served, listener, t).await,
                None => controller::http::serve(served, listener).await,
            }
        });
        // The loop runs on this task, not spawned: apply's future is not
        // provably Send (a compiler limitation with higher-ranked closures).
        tokio::select! {
            r = server => match r {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => failure(e),
                Err(e) => failure(format!("the API server stopped: {e}")),
            },
            () = c.run_loop() => ExitCode::SUCCESS,
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted; stopping (agents keep their tasks)");
                ExitCode::SUCCESS
            }
        }
    })
}

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The controller's URL.
    #[arg(long, env = "RECONCILE_CONTROLLER", value_name = "URL")]
    controller: String,
    /// The cluster this node joins.
    #[arg(long, value_name = "NAME")]
    cluster: String,
    /// This node's name (default: the host name).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// A node attribute for placement (`attribute:NAME` in constraints and
    /// spread); repeatable.
    #[arg(long = "attribute", value_name = "KEY=VALUE")]
    attributes: Vec<String>,
    /// The controller's join token.
    #[arg(
        long,
        env = "RECONCILE_JOIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        required_unless_present = "token_file"
    )]
    token: Option<String>,
    /// Read the join token from this file (its first line) instead, so it
    /// is in neither the command line nor the environment.
    #[arg(
        long,
        env = "RECONCILE_JOIN_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "token"
    )]
    token_file: Option<PathBuf>,
    /// CPU units to offer (default: the engine's cores x 1024).
    #[arg(long, value_name = "UNITS")]
    cpu: Option<u32>,
    /// Memory to offer in MiB (default: the engine's memory).
    #[arg(long, value_name = "MIB")]
    memory: Option<u32>,
    /// Trust only this CA (PEM) for an https:// controller.
    #[arg(long, env = "RECONCILE_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// A host port tasks must never get, besides the standard reserved
    /// ones (22, 2375, 2376, 51678, 51679); repeatable.
    #[arg(long = "reserved-port", value_name = "PORT")]
    reserved_ports: Vec<u16>,
    /// Read `valueFrom: node:NAME` from the file NAME of this directory
    /// (regular files only, no symlinks). Without it such tasks do not
    /// start. Deliberately no environment variable.
    #[arg(long, value_name = "DIR")]
    secrets_dir: Option<PathBuf>,
}

pub fn agent_cmd(a: AgentArgs) -> ExitCode {
    let mut attributes = BTreeMap::new();
    for kv in &a.attributes {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                attributes.insert(k.to_string(), v.to_string());
            }
            _ => return usage(format!("--attribute `{kv}`: expected KEY=VALUE")),
        }
    }
    let name = match a.name.or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }) {
        Some(n) => n,
        None => return usage("--name is required (no host name found)"),
    };
    if !a.controller.starts_with("http://") && !a.controller.starts_with("https://") {
        return usage(format!(
            "--controller `{}`: expected an http:// or https:// URL",
            a.controller
        ));
    }
    if let Some(d) = &a.secrets_dir {
        if !d.is_dir() {
            return usage(format!("--secrets-dir `{}`: not a directory", d.display()));
        }
    }
    let token = match (a.token, &a.token_file) {
        (Some(t), _) => t,
        (None, Some(file)) => match std::fs::read_to_string(file) {
            Ok(text) => match text.lines().next().map(str::trim) {
                Some(t) if !t.is_empty() => t.to_string(),
                _ => {
                    return usage(format!(
                        "--token-file `{}`: the file is empty",
                        file.display()
                    ))
                }
            },
            Err(e) => return usage(format!("--token-file `{}`: {e}", file.display())),
        },
        (None, None) => return usage("--token or --token-file is required"),
    };
    let config = crate::agent::Config {
        controller: a.controller,
        cluster: a.cluster,
        name,
        attributes,
        token,
        cpu: a.cpu,
        memory: a.memory,
        ca_cert: a.ca_cert,
        reserved_ports: a.reserved_ports,
        secrets_dir: a.secrets_dir,
    };
    block_on(async move {
        tokio::select! {
            r = crate::agent::run(config) => match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => failure(e),
            },
            _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
        }
    })
}

#[derive(Debug, clap::Args)]
pub struct NodesArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn nodes_cmd(a: NodesArgs) -> ExitCode {
    let client = match Client::new(&a.remote) {
        Ok(c) => c,
        Err(c) => return c,
    };
    match block_on(client.call::<Vec<NodeView>>(reqwest::Method::GET, "/v1/nodes")) {
        Ok(nodes) => {
            match a.format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&nodes).unwrap_or_default()
                ),
                Format::Text => print!("{}", render::nodes(&nodes)),
            }
            ExitCode::SUCCESS
        }
        Err(e) => failure(e),
    }
}

#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    #[command(subcommand)]
    action: NodeAction,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Debug, clap::Subcommand)]
enum NodeAction {
    /// Stop placing tasks on NAME and move its service tasks to other nodes
    /// (ECS DRAINING).
    Drain { name: String },
    /// Make NAME take tasks again.
    Activate { name: String },
}

pub fn node_cmd(a: NodeArgs) -> ExitCode {
    let client = match Client::new(&a.remote) {
        Ok(c) => c,
        Err(c) => return c,
    };
    let (verb, name) = match &a.action {
        NodeAction::Drain { name } => ("drain", name),
        NodeAction::Activate { name } => ("activate", name),
    };
    let path = format!("/v1/nodes/{name}/{verb}");
    match block_on(client.call::<serde_json::Value>(reqwest::Method::POST, &path)) {
        Ok(v) => {
            println!("node {name}: {}", v["status"].as_str().unwrap_or("updated"));
            ExitCode::SUCCESS
        }
        Err(e) => failure(e),
    }
}

#[derive(Debug, clap::Args)]
pub struct RemoteOnlyArgs {
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Approve, once, a plan that deletes more than half of the existing
    /// services: the one of the commit the controller has fetched (of the
    /// directory as it is, for a directory source). A newer commit needs
    /// its own approval.
    #[arg(long)]
    allow_mass_delete: bool,
}

/// `reconcile sync --controller URL`.
pub fn sync_cmd(a: SyncArgs) -> ExitCode {
    let path = if a.allow_mass_delete {
        "/v1/sync?allowMassDelete=true"
    } else {
        "/v1/sync"
    };
    control(path, "sync", &a.remote)
}

/// `reconcile suspend|resume --controller URL`.
pub fn control_cmd(verb: &str, a: RemoteOnlyArgs) -> ExitCode {
    control(&format!("/v1/{verb}"), verb, &a.remote)
}

fn control(path: &str, verb: &str, remote: &RemoteArgs) -> ExitCode {
    let client = match Client::new(remote) {
        Ok(c) => c,
        Err(c) => return c,
    };
    match block_on(client.call::<serde_json::Value>(reqwest::Method::POST, path)) {
        Ok(_) => {
            println!(
                "{}",
                match verb {
                    "sync" => "Reconcile requested; `reconcile status --controller URL` shows its outcome.",
                    "suspend" => "Suspended: changes are planned and reported, not applied.",
                    _ => "Resumed.",
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => failure(e),
    }
}
