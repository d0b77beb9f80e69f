//! The arguments every command shares, and where they lead: a source (a
//! directory or `git+URL`, with its branch and subdirectory), the local
//! state directory, and the controller to talk to instead of the local
//! engine.

use std::path::{Path, PathBuf};

use clap::ValueEnum;

use crate::reconcile::claims::{self, Claims, Resolution};
use crate::reconcile::local::{SourceIdentity, StateDir};
use crate::secrets::{InstallKey, Resolver};
use crate::source;
use crate::store::FileStore;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct GitArgs {
    /// Branch of a `git+URL` source (default: main).
    #[arg(long = "ref", value_name = "BRANCH")]
    pub reference: Option<String>,
    /// Directory inside a `git+URL` source's repository.
    #[arg(long = "path", value_name = "SUBDIR")]
    pub subdir: Option<String>,
}

impl GitArgs {
    /// The git source `source` names, if it is `git+URL`.
    pub(crate) fn source(
        &self,
        source: &std::path::Path,
    ) -> Result<Option<crate::git::GitSource>, String> {
        let text = source.to_string_lossy();
        match crate::git::GitSource::parse(&text, self.reference.as_deref(), self.subdir.as_deref())
        {
            Some(g) => Ok(Some(g)),
            None if self.reference.is_some() || self.subdir.is_some() => {
                Err("--ref and --path apply to a git+URL source only".into())
            }
            None => Ok(None),
        }
    }

    /// Read a source: a directory or file as it is, or the head commit of a
    /// git branch (fetched into `cache`).
    pub(crate) fn read(
        &self,
        source: &std::path::Path,
        cache: &std::path::Path,
    ) -> Result<Vec<source::RawFile>, String> {
        match self.source(source)? {
            Some(g) => {
                let commit = g.fetch(cache)?;
                let snap = g.read(cache, &commit)?;
                eprintln!(
                    "{}: commit {} ({})",
                    g.display(),
                    &snap.commit[..12],
                    snap.summary
                );
                Ok(snap.files)
            }
            None => source::read_dir(source).map_err(|e| e.to_string()),
        }
    }
}

/// Options shared by the commands that read a source and the local state.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StateArgs {
    /// Where standalone state (task definition revisions, applied
    /// resources) is kept. Default: $RECONCILE_STATE_DIR, else
    /// $XDG_STATE_HOME/reconcile, else ~/.local/state/reconcile.
    #[arg(long, value_name = "DIR", global = true)]
    pub state_dir: Option<PathBuf>,
}

/// How the CLI reaches a controller.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RemoteArgs {
    /// The controller at URL (`https://HOST:7700`); for controllers
    /// sharing a store, several URLs, comma-separated (the leader is
    /// found). Commands that also work locally (plan, apply, status, ...)
    /// use the local Docker engine without it.
    #[arg(
        long,
        env = "RECONCILE_CONTROLLER",
        value_name = "URL[,URL...]",
        global = true
    )]
    pub controller: Option<String>,
    /// The controller's API token.
    #[arg(
        long,
        env = "RECONCILE_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        global = true
    )]
    pub token: Option<String>,
    #[command(flatten)]
    pub trust: TrustArgs,
}

/// Whom the CLI and the agent trust with their token: the same flags on
/// `agent` and on every command that takes `--controller`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TrustArgs {
    /// Trust only the CA with this hash for an https:// controller: the
    /// `CA hash` the controller logs on start (also `reconcile ca-hash`).
    #[arg(
        long,
        env = "RECONCILE_CA_HASH",
        value_name = "sha256:HEX",
        global = true,
        conflicts_with = "ca_cert"
    )]
    pub ca_hash: Option<String>,
    /// Trust only this CA (PEM) for an https:// controller.
    #[arg(long, env = "RECONCILE_CA_CERT", value_name = "FILE", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// Allow an http:// URL to a host other than this one: the token then
    /// crosses the network in clear.
    #[arg(long, global = true)]
    pub plain_http: bool,
}

impl TrustArgs {
    pub(crate) fn trust(&self) -> crate::tls::Trust {
        crate::tls::Trust {
            ca_hash: self.ca_hash.clone(),
            ca_cert: self.ca_cert.clone(),
            plain_http: self.plain_http,
        }
    }
}

impl StateArgs {
    /// The state directory these arguments name.
    pub(crate) fn dir(&self) -> StateDir {
        StateDir::resolve(self.state_dir.as_deref())
    }
}

/// A source's identity (id, as shown): a `git+URL` by its URL, branch
/// and directory; a directory by its canonical path, unless the state
/// directory's claims say it carries on a source that moved (see
/// `reconcile::claims`), or refuse it for a cluster another path owns.
pub(crate) fn source_id(
    path: &Path,
    git: &GitArgs,
    state: &StateArgs,
) -> Result<(String, String), String> {
    if let Some(g) = git.source(path)? {
        let identity = SourceIdentity::of_git(&g);
        return Ok((identity.id, identity.shown));
    }
    let here = SourceIdentity::of_path(path)?;
    let claims = Claims::load(state.dir().path())?;
    if claims.is_empty() {
        return Ok((here.id, here.shown));
    }
    let clusters = declared_clusters(Path::new(&here.shown));
    // A git source is where its URL says, whatever this machine holds.
    let resolution = claims::resolve(&claims, &here, &clusters, |p, c| {
        p.starts_with("git+") || declared_clusters(Path::new(p)).iter().any(|d| d == c)
    })?;
    if let Resolution::Moved { from, .. } = &resolution {
        eprintln!(
            "note: {} was applied from {from}, which no longer declares its clusters: \
             it carries on what runs (`apply` records the new path)",
            here.shown
        );
    }
    let identity = resolution.identity();
    Ok((identity.id.clone(), identity.shown.clone()))
}

/// Record in the state directory which clusters source `id` (shown as
/// `shown`) now holds, from its store after a pass: what `source_id`
/// resolves against. A failure is reported, not fatal: the pass is done.
pub(crate) fn record_claims(state: &StateArgs, id: &str, shown: &str, store: &FileStore) {
    let dir = state.dir();
    let Ok(stored) = store.load() else { return };
    let recorded = Claims::load(dir.path()).and_then(|mut claims| {
        let clusters: Vec<String> = stored.clusters.keys().cloned().collect();
        claims.applied(id, shown, &clusters);
        claims.save(dir.path())
    });
    if let Err(e) = recorded {
        eprintln!("warning: cannot record which clusters this source holds: {e}");
    }
}

/// The names of the clusters the directory source at `path` declares;
/// none when it does not exist or does not read.
pub(crate) fn declared_clusters(path: &Path) -> Vec<String> {
    let Ok(files) = crate::source::read_dir(path) else {
        return Vec::new();
    };
    crate::validate::validate(files)
        .entries
        .iter()
        .filter_map(|e| match &e.manifest {
            crate::manifest::Manifest::Cluster(c) => Some(c.metadata.name.clone()),
            _ => None,
        })
        .collect()
}

/// Where a source's bare secret names are read: next to a directory source;
/// for a git source (a repository holds no secrets) in the current
/// directory's `.reconcile/secrets`, or `RECONCILE_SECRETS_DIR`. Values are
/// fingerprinted with the state directory's key (created on first use).
pub(crate) fn resolver_for(path: &Path, state: &StateArgs) -> Result<Resolver, String> {
    let key = InstallKey::load_or_create(&state.dir().path().join(crate::secrets::KEY_FILE))?;
    Ok(if path.to_string_lossy().starts_with("git+") {
        Resolver::for_source(Path::new("."), &key)
    } else {
        Resolver::for_source(path, &key)
    })
}

pub(crate) fn open_store(state: &StateArgs, id: &str) -> Result<FileStore, String> {
    FileStore::open(&state.dir().store(id)).map_err(|e| e.to_string())
}

/// Output format of the commands that print a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// For people to read.
    Text,
    /// JSON on stdout, for programs.
    Json,
}

/// Where a command finds its source's state, or the controller it asks
/// instead: the arguments every source command shares.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Target {
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(flatten)]
    pub git: GitArgs,
    #[command(flatten)]
    pub state: StateArgs,
}

/// A command given both a SOURCE and a controller would silently ignore
/// one of them (a controller works on its own source): the words that say
/// so, or None. Read from the innermost subcommand's matches, where the
/// global `--controller` is propagated.
pub(crate) fn ambiguous_target(matches: &clap::ArgMatches) -> Option<String> {
    use clap::parser::ValueSource;
    let mut names = Vec::new();
    let mut m = matches;
    while let Some((name, sub)) = m.subcommand() {
        names.push(name);
        m = sub;
    }
    let explicit = |id: &str| {
        m.try_get_raw(id).ok().flatten().is_some()
            && m.value_source(id) == Some(ValueSource::CommandLine)
    };
    if !explicit("source") {
        return None;
    }
    let source = m
        .try_get_one::<PathBuf>("source")
        .ok()
        .flatten()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let controller = m.try_get_one::<String>("controller").ok().flatten()?;
    let command = names.join(" ");
    Some(match m.value_source("controller") {
        Some(ValueSource::EnvVariable) => format!(
            "`reconcile {command} {source}` names a source, but RECONCILE_CONTROLLER is set \
             ({controller}), which sends `{command}` to that controller and its own source. \
             Unset RECONCILE_CONTROLLER to use `{source}` with the local engine, or leave \
             SOURCE out to ask the controller"
        ),
        _ => format!(
            "`{source}` and --controller {controller}: a controller works on its own source, \
             so `{command}` takes one or the other. Leave SOURCE out to ask the controller, \
             or --controller out to use `{source}` with the local engine"
        ),
    })
}
