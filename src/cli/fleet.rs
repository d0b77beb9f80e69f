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
    /// Where the state is kept: `redb`, a file in --data-dir (the
    /// default), or etcd (`etcd://HOST:PORT[,HOST:PORT...]`), shared by
    /// several controllers of which one leads and the others stand by.
    #[arg(long, default_value = "redb", value_name = "redb|etcd://...")]
    store: String,
    #[command(flatten)]
    etcd: super::store::EtcdArgs,
    /// With etcd: the leader's lease in seconds. A leader that cannot
    /// renew it for this long steps down; another is elected within about
    /// this long of a leader's death.
    #[arg(long, default_value_t = 10, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(2..=300))]
    lease_ttl: u64,
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
    /// A node LOST for this long is forgotten: its record and credential
    /// are removed (it can join again with a join token).
    #[arg(long, default_value_t = 86_400, value_name = "SECONDS")]
    forget_lost_after: u64,
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
    /// Without it the controller serves HTTPS with a certificate of its own
    /// CA, made in `<data-dir>/tls/` on first start.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A DNS name or IP address agents and the CLI reach the controller
    /// by, for its own certificate (besides the --listen address, the host
    /// name, localhost, 127.0.0.1 and ::1); repeatable.
    #[arg(
        long = "tls-san",
        value_name = "NAME|IP",
        conflicts_with_all = ["tls_cert", "plain_http"]
    )]
    tls_sans: Vec<String>,
    /// Serve plain HTTP, without TLS: tokens then cross the network in
    /// clear.
    #[arg(long, conflicts_with = "tls_cert")]
    plain_http: bool,
    /// The URL nodes launched by managed scaling use to reach the
    /// controller (they run on this host's network). Default: the --listen
    /// address, with 0.0.0.0 read as 127.0.0.1.
    #[arg(long, value_name = "URL")]
    advertise_url: Option<String>,
    /// The CA nodes launched by managed scaling trust (with TLS); with
    /// etcd, also the CA a follower checks the leader against when it
    /// forwards agents' requests.
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Service DNS names (`serviceRegistries`) are
    /// `NAME.CLUSTER.<DOMAIN>`.
    #[arg(long, default_value = crate::traffic::DEFAULT_DOMAIN, value_name = "DOMAIN", value_parser = dns_domain)]
    dns_domain: String,
    /// Connections the API keeps open at most; one more is closed at once.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    max_connections: usize,
    /// Seconds a client has to send a whole request head (default 10).
    #[arg(long, hide = true, value_name = "SECONDS")]
    header_timeout: Option<u64>,
    /// Seconds a keep-alive connection may wait for its next request
    /// (default 60).
    #[arg(long, hide = true, value_name = "SECONDS")]
    idle_timeout: Option<u64>,
    /// Seconds a client has to send a whole request body (default 30).
    #[arg(long, hide = true, value_name = "SECONDS")]
    body_timeout: Option<u64>,
}

impl ControllerArgs {
    /// The API server's bounds: the defaults, with what the flags change.
    fn server_limits(&self) -> Result<controller::serve::Limits, ExitCode> {
        let mut l = controller::serve::Limits {
            max_connections: self.max_connections,
            ..Default::default()
        };
        for (flag, value, field) in [
            ("--header-timeout", self.header_timeout, &mut l.header),
            ("--idle-timeout", self.idle_timeout, &mut l.idle),
            ("--body-timeout", self.body_timeout, &mut l.body),
        ] {
            match value {
                Some(0) => return Err(usage(format!("{flag} must be positive"))),
                Some(s) => *field = Duration::from_secs(s),
                None => {}
            }
        }
        if l.max_connections == 0 {
            return Err(usage("--max-connections must be positive"));
        }
        Ok(l)
    }
}

/// The names the controller's own certificate carries: every --tls-san,
/// the --listen address (for 0.0.0.0 or ::, the host's addresses), the
/// host's name, localhost and the loopback addresses.
fn server_names(listen: &str, sans: &[String]) -> Vec<String> {
    let mut names: Vec<String> = sans.to_vec();
    match listen.parse::<std::net::SocketAddr>() {
        Ok(a) if !a.ip().is_unspecified() => names.push(a.ip().to_string()),
        Ok(_) => names.extend(
            crate::tls::pki::host_addresses()
                .iter()
                .map(|ip| ip.to_string()),
        ),
        Err(_) => {
            if let Some((host, _)) = listen.rsplit_once(':') {
                names.push(host.to_string());
            }
        }
    }
    if let Some(h) = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
    {
        names.push(h);
    }
    names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.to_ascii_lowercase()));
    names
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
    let limits = match a.server_limits() {
        Ok(l) => l,
        Err(c) => return c,
    };
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
    let data_dir = a.data_dir.clone().unwrap_or_else(|| {
        super::args::StateArgs::default()
            .dir()
            .path()
            .join("controller")
    });
    // The certificate given, else the controller's own; none only when
    // asked for.
    let (tls, ca_hash) = match (&a.tls_cert, &a.tls_key) {
        _ if a.plain_http => (None, None),
        (Some(cert), Some(key)) => match crate::tls::server_config(cert, key) {
            Ok(t) => (Some(t), None),
            Err(e) => return usage(e),
        },
        _ => {
            let dir = crate::tls::pki::dir_of(&data_dir);
            let pki = match crate::tls::pki::ensure(&dir, &server_names(&a.listen, &a.tls_sans)) {
                Ok(p) => p,
                Err(e) => return failure(format!("the controller's TLS certificate: {e}")),
            };
            match crate::tls::server_config_from(pki.chain, pki.key) {
                Ok(t) => (Some(t), Some(pki.ca_hash)),
                Err(e) => return failure(format!("`{}`: {e}", dir.display())),
            }
        }
    };
    if let Some(h) = &ca_hash {
        tracing::info!("CA hash: {h} (agents and the CLI pin it with --ca-hash)");
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let advertise_url = a.advertise_url.clone().unwrap_or_else(|| {
        format!(
            "{scheme}://{}",
            a.listen
                .replace("0.0.0.0", "127.0.0.1")
                .replace("[::]", "[::1]")
        )
    });
    let config = controller::Config {
        advertise_url,
        // Launched nodes trust the CA file given for them, else this
        // controller's own CA.
        node_trust: crate::tls::Trust {
            ca_hash: ca_hash.filter(|_| a.ca_cert.is_none()),
            ca_cert: a.ca_cert.clone(),
            plain_http: a.plain_http,
        },
        source,
        webhook_secret: a.webhook_secret.clone(),
        allowed_signers: a.allowed_signers.clone(),
        allowed_gpg_keys: a.allowed_gpg_keys.clone(),
        data_dir,
        join_token: a.join_token,
        api_token: a.api_token,
        interval: Duration::from_secs(a.interval),
        heartbeat: Duration::from_millis(a.heartbeat_ms),
        node_timeout: Duration::from_secs(a.node_timeout),
        forget_lost_after: Duration::from_secs(a.forget_lost_after),
        settle: Duration::from_secs(a.settle),
        step_timeout: Duration::from_secs(a.step_timeout),
        allow_mass_delete: a.allow_mass_delete,
        dns_domain: a.dns_domain.to_ascii_lowercase(),
    };
    let etcd = match a.store.as_str() {
        "redb" => None,
        url if url.starts_with("etcd://") => match a.etcd.config(url) {
            Ok(c) => Some(c),
            Err(e) => return usage(format!("--store: {e}")),
        },
        other => {
            return usage(format!(
                "--store `{other}`: expected redb or etcd://HOST:PORT[,HOST:PORT...]"
            ))
        }
    };
    if let Some(etcd) = etcd {
        if a.tls_cert.is_some() && a.ca_cert.is_none() {
            tracing::warn!(
                "--tls-cert without --ca-cert: followers check the leader's certificate against \
                 the system's roots when they forward agents' requests; give --ca-cert if \
                 your certificates come from a private CA"
            );
        }
        let ttl = Duration::from_secs(a.lease_ttl);
        return super::replicated::elected_controller(config, etcd, ttl, &a.listen, tls, limits);
    }
    let c = match Controller::open(config) {
        Ok(c) => c,
        Err(e) => return failure(e),
    };
    block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&a.listen).await {
            Ok(l) => l,
            Err(e) => return usage(format!("--listen {}: {e}", a.listen)),
        };
        let local = listener.local_addr().ok();
        let addr = local.map(|a| a.to_string()).unwrap_or(a.listen);
        tracing::info!("controller listening on {scheme}://{addr}");
        if tls.is_none() && !local.is_some_and(|l| l.ip().is_loopback()) {
            tracing::warn!(
                "--plain-http on {addr}: the API and join tokens cross the network in clear"
            );
        }
        let served = c.clone();
        // The API runs on the runtime's workers: accepting connections
        // must not wait while the loop below plans or saves (a first apply
        // of a thousand services kept new agents from joining for a minute).
        let server = tokio::spawn(async move {
            match tls {
                Some(t) => controller::serve::serve_tls(served, listener, t, limits).await,
                None => controller::serve::serve(served, listener, limits).await,
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
    /// The controller's URL; for controllers sharing an etcd store, each
    /// of their URLs, comma-separated: the agent follows the leader and
    /// moves on when one cannot be reached.
    #[arg(long, env = "RECONCILE_CONTROLLER", value_name = "URL[,URL...]")]
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
    /// The controller's join token: used once, to get this node's own
    /// credential (not needed while the credential file holds one).
    #[arg(
        long,
        env = "RECONCILE_JOIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
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
    /// CPU units to offer (default: the engine's cores x 1024; more than
    /// that only with --allow-overcommit).
    #[arg(long, value_name = "UNITS")]
    cpu: Option<u32>,
    /// Memory to offer in MiB (default: the engine's memory; more only
    /// with --allow-overcommit).
    #[arg(long, value_name = "MIB")]
    memory: Option<u32>,
    /// Let --cpu and --memory offer more than the engine has.
    #[arg(long)]
    allow_overcommit: bool,
    /// Where this node keeps the credential it receives when it joins
    /// (default: `agent/CLUSTER.NAME.json` in the state directory). With
    /// it, a restarted agent is the same node without the join token.
    #[arg(long, value_name = "FILE")]
    credential_file: Option<PathBuf>,
    #[command(flatten)]
    trust: super::args::TrustArgs,
    /// A host port tasks must never get, besides the standard reserved
    /// ones (22, 2375, 2376, 51678, 51679); repeatable.
    #[arg(long = "reserved-port", value_name = "PORT")]
    reserved_ports: Vec<u16>,
    /// Read `valueFrom: node:NAME` from the file NAME of this directory
    /// (regular files only, no symlinks). Without it such tasks do not
    /// start. Deliberately no environment variable.
    #[arg(long, value_name = "DIR")]
    secrets_dir: Option<PathBuf>,
    /// The address other nodes reach this node's tasks at (their published
    /// host ports): the address of its load balancer targets and DNS
    /// records. Default: this host's address on the route to the
    /// controller.
    #[arg(long, value_name = "IP")]
    address: Option<std::net::IpAddr>,
    /// Where the service listeners (`loadBalancers`) are served.
    #[arg(long, default_value = "0.0.0.0", value_name = "IP")]
    listen_address: std::net::IpAddr,
    /// Where this node answers service DNS names (port 53); its task
    /// containers use it as their resolver. Default: --address.
    #[arg(long, value_name = "IP", conflicts_with = "no_dns")]
    dns_address: Option<std::net::IpAddr>,
    /// Serve no DNS: containers keep the engine's resolvers and service
    /// names do not resolve on this node.
    #[arg(long)]
    no_dns: bool,
    /// Serve Prometheus metrics on this address (`/metrics`); needs
    /// --metrics-token-file.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// The bearer token a scraper of --metrics-listen must present (the
    /// file's first line), chosen by the operator.
    #[arg(long, value_name = "FILE", requires = "metrics_listen")]
    metrics_token_file: Option<PathBuf>,
    /// Seconds between two samples of the running tasks' CPU and memory
    /// usage (reported to the controller); 0 samples nothing.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    stats_interval: u64,
}

/// A DNS domain for service names: dot-separated labels.
fn dns_domain(s: &str) -> Result<String, String> {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if s.len() <= 200 && s.split('.').all(label) {
        Ok(s.to_string())
    } else {
        Err("expected a DNS domain such as `reconcile.internal`".into())
    }
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
    if let Err(e) = crate::tls::check_url_list(&a.controller, a.trust.plain_http) {
        return usage(e);
    }
    if let Some(d) = &a.secrets_dir {
        if !d.is_dir() {
            return usage(format!("--secrets-dir `{}`: not a directory", d.display()));
        }
    }
    let token = match (a.token, &a.token_file) {
        (Some(t), _) => Some(t),
        (None, Some(file)) => match std::fs::read_to_string(file) {
            Ok(text) => match text.lines().next().map(str::trim) {
                Some(t) if !t.is_empty() => Some(t.to_string()),
                _ => {
                    return usage(format!(
                        "--token-file `{}`: the file is empty",
                        file.display()
                    ))
                }
            },
            Err(e) => return usage(format!("--token-file `{}`: {e}", file.display())),
        },
        (None, None) => None,
    };
    let credential_file = a.credential_file.unwrap_or_else(|| {
        super::args::StateArgs::default()
            .dir()
            .path()
            .join("agent")
            .join(format!("{}.{name}.json", a.cluster))
    });
    if token.is_none() && !credential_file.exists() {
        return usage(format!(
            "--token or --token-file is required: there is no credential in `{}` yet",
            credential_file.display()
        ));
    }
    let metrics = match (a.metrics_listen, &a.metrics_token_file) {
        (None, _) => None,
        (Some(_), None) => {
            return usage(
                "--metrics-listen needs --metrics-token-file: the metrics are served only to \
                 the bearer of that token",
            )
        }
        (Some(listen), Some(file)) => match std::fs::read_to_string(file) {
            Ok(text) => match text.lines().next().map(str::trim) {
                Some(t) if !t.is_empty() => Some(crate::metrics::agent::Endpoint {
                    listen,
                    token: t.to_string(),
                }),
                _ => {
                    return usage(format!(
                        "--metrics-token-file `{}`: the file is empty",
                        file.display()
                    ))
                }
            },
            Err(e) => return usage(format!("--metrics-token-file `{}`: {e}", file.display())),
        },
    };
    let config = crate::agent::Config {
        metrics,
        controller: a.controller,
        cluster: a.cluster,
        name,
        attributes,
        join_token: token,
        credential_file,
        cpu: a.cpu,
        memory: a.memory,
        allow_overcommit: a.allow_overcommit,
        trust: a.trust.trust(),
        reserved_ports: a.reserved_ports,
        secrets_dir: a.secrets_dir,
        address: a.address,
        listen_address: a.listen_address,
        dns: if a.no_dns {
            crate::agent::Dns::Off
        } else {
            a.dns_address
                .map_or(crate::agent::Dns::AtAddress, crate::agent::Dns::At)
        },
        stats_interval: std::time::Duration::from_secs(a.stats_interval),
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

/// `reconcile controllers`: the control plane's controllers, the leader
/// first.
pub fn controllers_cmd(a: NodesArgs) -> ExitCode {
    let client = match Client::new(&a.remote) {
        Ok(c) => c,
        Err(c) => return c,
    };
    let path = "/v1/controllers";
    match block_on(client.call::<crate::wire::ControlPlane>(reqwest::Method::GET, path)) {
        Ok(p) => {
            match a.format {
                Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&p).unwrap_or_default())
                }
                Format::Text => print!("{}", render::control_plane(&p)),
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
    Drain {
        /// The node, as `reconcile nodes` lists it.
        name: String,
    },
    /// Make NAME take tasks again.
    Activate {
        /// The node, as `reconcile nodes` lists it.
        name: String,
    },
    /// Forget NAME: revoke its credential and place its tasks elsewhere.
    /// An agent that still runs is refused (and joins again if it still
    /// has a valid join token: rotate join tokens to keep it out).
    Remove {
        /// The node, as `reconcile nodes` lists it.
        name: String,
    },
}

pub fn node_cmd(a: NodeArgs) -> ExitCode {
    let client = match Client::new(&a.remote) {
        Ok(c) => c,
        Err(c) => return c,
    };
    let (verb, name) = match &a.action {
        NodeAction::Drain { name } => ("drain", name),
        NodeAction::Activate { name } => ("activate", name),
        NodeAction::Remove { name } => {
            let path = format!("/v1/nodes/{name}");
            return match block_on(
                client.call::<crate::wire::Accepted>(reqwest::Method::DELETE, &path),
            ) {
                Ok(a) => {
                    println!("{}", a.message);
                    ExitCode::SUCCESS
                }
                Err(e) => failure(e),
            };
        }
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

#[derive(Debug, clap::Args)]
pub struct CaHashArgs {
    /// The controller's data directory (default: `controller` in the
    /// state directory, as for `reconcile controller`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// `reconcile ca-hash`: the hash of the CA a controller made, for
/// `--ca-hash`.
pub fn ca_hash_cmd(a: CaHashArgs) -> ExitCode {
    let dir = a.data_dir.unwrap_or_else(|| {
        super::args::StateArgs::default()
            .dir()
            .path()
            .join("controller")
    });
    match crate::tls::pki::ca_hash(&dir) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => failure(format!(
            "no CA in --data-dir `{}` (a controller makes one on first start without --tls-cert): {e}",
            dir.display()
        )),
    }
}
