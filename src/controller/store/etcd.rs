//! The replicated backend: the controller's rows in etcd (v3 API), one key
//! per row under the installation's prefix: `PREFIX/TABLE/KEY`.
//!
//! etcd is reached from a runtime of this backend's own (one thread): the
//! store's callers are synchronous, like redb's, and may run on the
//! controller's runtime, which must not block on itself. Every request has
//! a deadline, so a lost etcd is an error, never a hang.
//!
//! Writes are fenced: a controller elected leader writes only in a
//! transaction conditioned on its leader key still existing with the
//! revision it was created at (the key lives on the leader's lease, so it
//! goes when the lease expires). A controller that was paused or cut off
//! past its lease can therefore never write, whatever it believes. Each
//! fenced transaction also sets `PREFIX/writer` to the leader key, so
//! etcd's revision history says which leader wrote what.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Txn, TxnOp,
};

use super::backend::{Backend, BackendError, Op, Row, Table};

/// How long one request to etcd may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Changes per transaction: etcd's default `--max-txn-ops` (128), less
/// the leader's `writer` mark.
const MAX_TXN_OPS: usize = 127;
/// Rows per read of a range.
const PAGE: i64 = 500;

/// Where etcd is and how to reach it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EtcdConfig {
    /// `HOST:PORT` of each member.
    pub endpoints: Vec<String>,
    /// Key prefix of this installation, ending in `/`.
    pub prefix: String,
    /// CA to verify the members' certificates with (TLS when set).
    pub ca: Option<PathBuf>,
    /// Client certificate and key, for members that require one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// etcd user and password, when etcd has authentication on.
    pub user: Option<(String, String)>,
}

impl EtcdConfig {
    /// `etcd://HOST:PORT[,HOST:PORT...]` and a prefix (`/reconcile/NAME`).
    pub fn parse(url: &str, prefix: &str) -> Result<EtcdConfig, String> {
        let rest = url.strip_prefix("etcd://").ok_or_else(|| {
            format!("`{url}` is not an etcd address: expected etcd://HOST:PORT[,HOST:PORT...]")
        })?;
        let mut endpoints = Vec::new();
        for e in rest.trim_end_matches('/').split(',') {
            let ok = e
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(format!(
                    "`{e}` in `{url}` is not HOST:PORT (etcd's client port is usually 2379)"
                ));
            }
            endpoints.push(e.to_string());
        }
        if !prefix.starts_with('/') || prefix.contains("//") || prefix.len() < 2 {
            return Err(format!(
                "store prefix `{prefix}` must be an absolute key path such as /reconcile/prod"
            ));
        }
        Ok(EtcdConfig {
            endpoints,
            prefix: format!("{}/", prefix.trim_end_matches('/')),
            ..EtcdConfig::default()
        })
    }

    /// Options of a client whose requests each end within
    /// [`REQUEST_TIMEOUT`], or, without `deadline`, of one for requests
    /// that wait (a campaign, a lease's keep-alive stream).
    fn options(&self, deadline: bool) -> Result<ConnectOptions, String> {
        let mut o = ConnectOptions::new();
        if deadline {
            o = o.with_timeout(REQUEST_TIMEOUT);
        }
        o = o
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        if let Some((user, password)) = &self.user {
            o = o.with_user(user, password);
        }
        if let Some(ca) = &self.ca {
            let read = |p: &PathBuf, what: &str| {
                std::fs::read(p).map_err(|e| format!("etcd {what} `{}`: {e}", p.display()))
            };
            let mut tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(ca, "CA")?));
            match (&self.cert, &self.key) {
                (Some(c), Some(k)) => {
                    tls = tls.identity(etcd_client::Identity::from_pem(
                        read(c, "certificate")?,
                        read(k, "key")?,
                    ));
                }
                (None, None) => {}
                _ => return Err("--etcd-cert and --etcd-key go together".into()),
            }
            o = o.with_tls(tls);
        } else if self.cert.is_some() || self.key.is_some() {
            return Err("--etcd-cert and --etcd-key need --etcd-cacert (TLS)".into());
        }
        Ok(o)
    }

    fn urls(&self) -> Vec<String> {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        self.endpoints
            .iter()
            .map(|e| format!("{scheme}://{e}"))
            .collect()
    }

    pub fn describe(&self) -> String {
        format!("etcd://{}{}", self.endpoints.join(","), self.prefix)
    }
}

/// Whether and how this backend may write.
#[derive(Debug, Clone, PartialEq)]
pub enum Fence {
    /// Not in an election (copying, tests): writes are unconditional.
    None,
    /// Standing by: writes are refused.
    Follower,
    /// Elected: writes only while this key exists with this creation
    /// revision.
    Leader { key: Vec<u8>, revision: i64 },
}

pub struct EtcdBackend {
    rt: Option<tokio::runtime::Runtime>,
    client: Client,
    /// The same members without a deadline per request, for waiting.
    waiting: Client,
    config: EtcdConfig,
    fence: Mutex<Fence>,
}

impl Drop for EtcdBackend {
    fn drop(&mut self) {
        // Dropping a runtime blocks; the store may be dropped on another
        // runtime's thread, where blocking is not allowed.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn failed(e: impl std::fmt::Display) -> BackendError {
    BackendError::Failed(e.to_string())
}

/// The first key after every key that starts with `prefix`.
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl EtcdBackend {
    /// Connect, and check that etcd answers.
    pub fn connect(config: EtcdConfig) -> Result<EtcdBackend, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd")
            .enable_all()
            .build()
            .map_err(|e| format!("etcd client runtime: {e}"))?;
        let (options, waiting) = (config.options(true)?, config.options(false)?);
        let urls = config.urls();
        let describe = config.describe();
        let (client, waiting) = block(&rt, async move {
            let mut c = Client::connect(urls.clone(), Some(options)).await?;
            c.status().await?;
            let w = Client::connect(urls, Some(waiting)).await?;
            Ok((c, w))
        })
        .map_err(|e| format!("{describe}: {e}"))?;
        Ok(EtcdBackend {
            rt: Some(rt),
            client,
            waiting,
            config,
            fence: Mutex::new(Fence::None),
        })
    }

    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    /// A client whose requests end within [`REQUEST_TIMEOUT`].
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A client without a deadline per request, for elections, leases
    /// and watches: its callers bound what must be bounded.
    pub fn waiting_client(&self) -> Client {
        self.waiting.clone()
    }

    pub fn set_fence(&self, fence: Fence) {
        *self.fence.lock().unwrap_or_else(|p| p.into_inner()) = fence;
    }

    pub fn fence(&self) -> Fence {
        self.fence.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    ) -> Result<T, BackendError> {
        block(self.rt.as_ref().expect("runtime until dropped"), f).map_err(failed)
    }

    fn table_prefix(&self, t: Table) -> String {
        format!("{}{}/", self.config.prefix, t.name())
    }

    /// Every key-value under `from`, read at one revision, page by page.
    fn range(&self, from: &str) -> Result<Vec<(String, Vec<u8>)>, BackendError> {
        let end = range_end(from.as_bytes());
        let mut client = self.client.clone();
        let start = from.as_bytes().to_vec();
        let rows = self.run(async move {
            let mut out = Vec::new();
            let mut key = start;
            let mut revision = 0;
            loop {
                let mut o = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
                if revision > 0 {
                    o = o.with_revision(revision);
                }
                let mut resp = client.get(key.clone(), Some(o)).await?;
                if revision == 0 {
                    revision = resp.header().map(|h| h.revision()).unwrap_or_default();
                }
                let more = resp.more();
                let kvs = resp.take_kvs();
                let Some(last) = kvs.last() else { break };
                key = last.key().to_vec();
                key.push(0);
                out.extend(kvs.into_iter().map(|kv| kv.into_key_value()));
                if !more {
                    break;
                }
            }
            Ok(out)
        })?;
        rows.into_iter()
            .map(|(k, v)| {
                String::from_utf8(k)
                    .map(|k| (k, v))
                    .map_err(|_| failed("a key under the prefix is not UTF-8"))
            })
            .collect()
    }

    fn key(&self, t: Table, key: &str) -> Vec<u8> {
        format!("{}{key}", self.table_prefix(t)).into_bytes()
    }
}

/// Run `f` on `rt` and wait for it from any thread (including another
/// runtime's), within [`REQUEST_TIMEOUT`] plus a little for paging.
fn block<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    f: impl Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let r = tokio::time::timeout(REQUEST_TIMEOUT * 2, f).await;
        let _ = tx.send(r);
    });
    match rx.recv() {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(e))) => Err(format!("etcd: {e}")),
        Ok(Err(_)) => Err(format!(
            "etcd did not answer within {} s",
            (REQUEST_TIMEOUT * 2).as_secs()
        )),
        Err(_) => Err("the etcd client stopped".into()),
    }
}

impl Backend for EtcdBackend {
    fn describe(&self) -> String {
        self.config.describe()
    }

    fn read_all(&self) -> Result<Vec<Row>, BackendError> {
        let prefix = self.config.prefix.clone();
        let mut out = Vec::new();
        for (k, v) in self.range(&prefix)? {
            // Other keys under the prefix (the election's) are not rows.
            let Some((table, key)) = k[prefix.len()..].split_once('/') else {
                continue;
            };
            if let Some(t) = Table::from_name(table) {
                out.push((t, key.to_string(), v));
            }
        }
        Ok(out)
    }

    fn read_table(&self, t: Table) -> Result<Vec<(String, Vec<u8>)>, BackendError> {
        let prefix = self.table_prefix(t);
        Ok(self
            .range(&prefix)?
            .into_iter()
            .map(|(k, v)| (k[prefix.len()..].to_string(), v))
            .collect())
    }

    fn read(&self, t: Table, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let mut client = self.client.clone();
        let k = self.key(t, key);
        self.run(async move {
            let mut resp = client.get(k, None).await?;
            Ok(resp.take_kvs().pop().map(|kv| kv.into_key_value().1))
        })
    }

    fn commit(&self, ops: Vec<Op>) -> Result<(), BackendError> {
        let condition = match self.fence() {
            Fence::None => None,
            Fence::Follower => {
                return Err(BackendError::NotLeader(
                    "this controller stands by: only the leader writes".into(),
                ))
            }
            Fence::Leader { key, revision } => Some((
                Compare::create_revision(key.clone(), CompareOp::Equal, revision),
                key,
            )),
        };
        let ops: Vec<TxnOp> = ops
            .into_iter()
            .map(|op| match op {
                Op::Put(t, k, v) => TxnOp::put(self.key(t, &k), v, None),
                Op::Delete(t, k) => TxnOp::delete(self.key(t, &k), None),
                Op::DeleteBelow(t, k) => TxnOp::delete(
                    self.table_prefix(t),
                    Some(DeleteOptions::new().with_range(self.key(t, &k))),
                ),
            })
            .collect();
        // etcd caps the changes of one transaction; a larger commit is
        // written in parts, each fenced.
        let mut parts = Vec::new();
        let mut ops = ops.into_iter().peekable();
        while ops.peek().is_some() {
            parts.push(ops.by_ref().take(MAX_TXN_OPS).collect::<Vec<_>>());
        }
        for part in parts {
            let mut txn = Txn::new();
            let mut part = part;
            if let Some((c, key)) = &condition {
                txn = txn.when(vec![c.clone()]);
                // Who wrote each revision, for audits of the history: the
                // leader key it held.
                part.push(TxnOp::put(
                    format!("{}writer", self.config.prefix),
                    key.clone(),
                    None,
                ));
            }
            let txn = txn.and_then(part);
            let mut client = self.client.clone();
            let ok = self.run(async move { Ok(client.txn(txn).await?.succeeded()) })?;
            if !ok {
                self.set_fence(Fence::Follower);
                return Err(BackendError::NotLeader(
                    "the leader key is gone (lease expired): another controller may lead".into(),
                ));
            }
        }
        Ok(())
    }
}
