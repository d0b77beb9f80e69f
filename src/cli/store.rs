//! The controller's store on the command line: `--store` and the etcd
//! options `controller` takes, and `reconcile store copy`, which moves an
//! installation's state between a redb data directory and etcd.

use std::path::PathBuf;
use std::process::ExitCode;

use super::run::{failure, usage};
use crate::controller::store::copy;
use crate::controller::store::etcd::{EtcdBackend, EtcdConfig};
use crate::controller::store::redb::RedbBackend;
use crate::controller::store::Backend;

/// The key prefix of an installation in etcd unless --store-prefix says.
pub const DEFAULT_PREFIX: &str = "/reconcile/default";

/// How to reach etcd: TLS, authentication, and the installation's prefix.
#[derive(Debug, Clone, clap::Args)]
pub struct EtcdArgs {
    /// The key prefix of this installation in etcd: controllers sharing
    /// it form one control plane (one leader), other prefixes are other
    /// installations.
    #[arg(long, default_value = DEFAULT_PREFIX, value_name = "PREFIX")]
    pub store_prefix: String,
    /// CA certificate (PEM) the etcd members' certificates are checked
    /// against; with it, etcd is reached over TLS.
    #[arg(long, value_name = "FILE")]
    pub etcd_cacert: Option<PathBuf>,
    /// Client certificate (PEM) for etcd members that require one.
    #[arg(long, value_name = "FILE", requires_all = ["etcd_key", "etcd_cacert"])]
    pub etcd_cert: Option<PathBuf>,
    /// Private key (PEM) of --etcd-cert.
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user, when etcd has authentication enabled; the password is
    /// read from --etcd-password-file or RECONCILE_ETCD_PASSWORD.
    #[arg(long, value_name = "NAME")]
    pub etcd_user: Option<String>,
    /// File whose first line is the etcd user's password.
    #[arg(long, value_name = "FILE", requires = "etcd_user")]
    pub etcd_password_file: Option<PathBuf>,
}

impl EtcdArgs {
    /// The etcd configuration for an `etcd://` address.
    pub fn config(&self, url: &str) -> Result<EtcdConfig, String> {
        let mut c = EtcdConfig::parse(url, &self.store_prefix)?;
        c.ca = self.etcd_cacert.clone();
        c.cert = self.etcd_cert.clone();
        c.key = self.etcd_key.clone();
        if let Some(user) = &self.etcd_user {
            let password = match &self.etcd_password_file {
                Some(f) => std::fs::read_to_string(f)
                    .map_err(|e| format!("--etcd-password-file `{}`: {e}", f.display()))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                None => std::env::var("RECONCILE_ETCD_PASSWORD").map_err(|_| {
                    "--etcd-user needs --etcd-password-file or RECONCILE_ETCD_PASSWORD".to_string()
                })?,
            };
            c.user = Some((user.clone(), password));
        }
        Ok(c)
    }

    /// A store named on the command line: `etcd://...` or a data directory
    /// (its `controller.redb`).
    pub fn open(&self, spec: &str) -> Result<Box<dyn Backend>, String> {
        if spec.starts_with("etcd://") {
            let b = EtcdBackend::connect(self.config(spec)?)?;
            return Ok(Box::new(b));
        }
        let dir = PathBuf::from(spec);
        if !dir.is_dir() {
            return Err(format!(
                "`{spec}` is neither etcd://HOST:PORT[,...] nor a controller data directory"
            ));
        }
        RedbBackend::open(&dir)
            .map(|b| Box::new(b) as Box<dyn Backend>)
            .map_err(|e| {
                format!(
                    "{}: {e} (is a controller running on it? stop it first)",
                    RedbBackend::file(&dir).display()
                )
            })
    }
}

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    action: StoreAction,
}

#[derive(Debug, clap::Subcommand)]
enum StoreAction {
    /// Copy every row of a controller's state (revisions, applied
    /// resources, deployments, events, nodes, assignments, tokens, sealed
    /// secrets, run records, schedules) into an empty store. Stop the
    /// controllers of the source store first.
    Copy {
        /// A controller data directory or etcd://HOST:PORT[,...].
        #[arg(long, value_name = "DIR|etcd://...")]
        from: String,
        /// An empty store: a new data directory or an unused prefix.
        #[arg(long, value_name = "DIR|etcd://...")]
        to: String,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
}

pub fn store_cmd(a: StoreArgs) -> ExitCode {
    match a.action {
        StoreAction::Copy { from, to, etcd } => {
            if from == to {
                return usage("--from and --to are the same store");
            }
            if !to.starts_with("etcd://") {
                if let Err(e) = crate::fsutil::private_dir(std::path::Path::new(&to)) {
                    return failure(format!("--to `{to}`: {e}"));
                }
            }
            let (src, dst) = match (etcd.open(&from), etcd.open(&to)) {
                (Ok(s), Ok(d)) => (s, d),
                (Err(e), _) => return failure(format!("--from: {e}")),
                (_, Err(e)) => return failure(format!("--to: {e}")),
            };
            match copy::copy(src.as_ref(), dst.as_ref()) {
                Ok(n) => {
                    println!(
                        "copied {n} rows from {} to {}",
                        src.describe(),
                        dst.describe()
                    );
                    println!(
                        "each controller needs the installation's secrets.key and tls/ beside its --data-dir: copy them from the old data directory"
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => failure(e),
            }
        }
    }
}
