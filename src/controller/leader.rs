//! Leader election among controllers sharing an etcd store: etcd's
//! election API on a lease of this controller's own. Only the leader
//! reconciles and writes; the others stand by and name the leader.
//!
//! The lease is kept alive every third of its TTL. When it cannot be
//! (etcd unreachable for a TTL, or the process paused past it), the
//! leadership is lost: etcd deletes the leader key with the lease, every
//! later write of this controller fails its fence (`store/etcd.rs`), and
//! the controller starts over as a follower.

use std::time::{Duration, Instant};

use etcd_client::Client;
use tokio::sync::oneshot;

use super::store::etcd::{EtcdBackend, Fence};

/// The election's key under the installation's prefix.
const ELECTION: &str = "election";

pub struct Election {
    client: Client,
    name: String,
    /// What this controller announces when it leads: its URL.
    value: String,
    ttl: Duration,
    /// The lease of the current campaign.
    lease: std::sync::Mutex<Option<i64>>,
    /// When the lease was last renewed.
    renewed: std::sync::Arc<std::sync::Mutex<Instant>>,
}

/// This controller leads until `lost` fires (with why); its writes are
/// to be fenced with `fence`.
pub struct Leading {
    pub lost: oneshot::Receiver<String>,
    pub fence: Fence,
}

impl Election {
    pub fn new(backend: &EtcdBackend, url: &str, ttl: Duration) -> Election {
        Election {
            client: backend.waiting_client(),
            name: format!("{}{ELECTION}", backend.config().prefix),
            value: url.to_string(),
            ttl,
            lease: std::sync::Mutex::new(None),
            renewed: std::sync::Arc::new(std::sync::Mutex::new(Instant::now())),
        }
    }

    /// The leader's URL, if one leads.
    pub async fn leader(&self) -> Option<String> {
        let mut c = self.client.clone();
        let r = tokio::time::timeout(
            super::store::etcd::REQUEST_TIMEOUT,
            c.leader(self.name.clone()),
        )
        .await
        .ok()?
        .ok()?;
        r.kv().and_then(|kv| kv.value_str().ok()).map(String::from)
    }

    /// Every candidate's URL and the revision its candidacy began at, the
    /// leader first (etcd elects in order of candidacy).
    pub async fn candidates(&self) -> Result<Vec<(String, i64)>, String> {
        let mut c = self.client.clone();
        let o = etcd_client::GetOptions::new().with_prefix().with_sort(
            etcd_client::SortTarget::Create,
            etcd_client::SortOrder::Ascend,
        );
        let get = c.get(format!("{}/", self.name), Some(o));
        let r = tokio::time::timeout(super::store::etcd::REQUEST_TIMEOUT, get)
            .await
            .map_err(|_| "etcd did not answer".to_string())?
            .map_err(|e| format!("etcd: {e}"))?;
        Ok(r.kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.value()).into_owned(),
                    kv.create_revision(),
                )
            })
            .collect())
    }

    /// Whether the lease was renewed within its TTL: a leader resumed
    /// after a pause answers nothing as the leader until it knows.
    pub fn holds(&self) -> bool {
        self.renewed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
            < self.ttl
    }

    /// Give up the leadership (or the candidacy) now: its lease is
    /// revoked, so another controller is elected at once.
    pub async fn resign(&self) {
        let lease = self.lease.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(lease) = lease {
            let mut c = self.client.clone();
            let revoke = c.lease_revoke(lease);
            let _ = tokio::time::timeout(super::store::etcd::REQUEST_TIMEOUT, revoke).await;
        }
    }

    /// Campaign until elected; the caller fences the backend's writes on
    /// the leader key it returns. Retries while etcd cannot be reached.
    pub async fn campaign(&self) -> Leading {
        let mut wait = Duration::from_millis(200);
        loop {
            match self.try_campaign().await {
                Ok(l) => return l,
                Err(e) => {
                    tracing::warn!("leader election: {e}; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn try_campaign(&self) -> Result<Leading, String> {
        let mut c = self.client.clone();
        let ttl = self.ttl.as_secs().max(2) as i64;
        let grant = c.lease_grant(ttl, None);
        let lease = tokio::time::timeout(super::store::etcd::REQUEST_TIMEOUT, grant)
            .await
            .map_err(|_| "lease: etcd did not answer".to_string())?
            .map_err(|e| format!("lease: {e}"))?
            .id();
        *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(lease);
        let (lost_tx, mut lost) = oneshot::channel();
        // The lease is kept alive from now on: a candidate's key lives on
        // it too.
        *self.renewed.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        let keeper = tokio::spawn(keep_alive(
            c.clone(),
            lease,
            self.ttl,
            self.renewed.clone(),
            lost_tx,
        ));
        let r = tokio::select! {
            r = c.campaign(self.name.clone(), self.value.clone(), lease) => r,
            why = &mut lost => {
                return Err(format!("lost the lease while campaigning: {}", why.unwrap_or_default()));
            }
        };
        let leader = match r {
            Ok(r) => r.leader().cloned(),
            Err(e) => {
                keeper.abort();
                let revoke = c.lease_revoke(lease);
                let _ = tokio::time::timeout(super::store::etcd::REQUEST_TIMEOUT, revoke).await;
                return Err(format!("campaign: {e}"));
            }
        };
        let Some(leader) = leader else {
            keeper.abort();
            return Err("campaign: etcd named no leader key".into());
        };
        Ok(Leading {
            lost,
            fence: Fence::Leader {
                key: leader.key().to_vec(),
                revision: leader.rev(),
            },
        })
    }
}

/// Keep `lease` alive until it cannot be; then say why on `lost`.
async fn keep_alive(
    mut c: Client,
    lease: i64,
    ttl: Duration,
    renewed: std::sync::Arc<std::sync::Mutex<Instant>>,
    lost: oneshot::Sender<String>,
) {
    let every = ttl / 3;
    let mut last_ok = Instant::now();
    let mut stream = None;
    let why = loop {
        // A pause of the process (or of this task) past the TTL: the lease
        // may be gone whatever etcd says next.
        if last_ok.elapsed() >= ttl {
            break format!(
                "no lease renewal for {:.1} s (TTL {} s)",
                last_ok.elapsed().as_secs_f64(),
                ttl.as_secs()
            );
        }
        if stream.is_none() {
            // Bounded: an etcd that drops packets must not stall the check
            // above.
            let open = tokio::time::timeout(every, c.lease_keep_alive(lease)).await;
            stream = open.ok().and_then(Result::ok);
        }
        if let Some((keeper, s)) = stream.as_mut() {
            // The lease runs from when etcd renewed it, which is after
            // this: counting from here never overstates what is left.
            let sent = Instant::now();
            let renewal = async {
                keeper.keep_alive().await.ok()?;
                s.message().await.ok().flatten()
            };
            match tokio::time::timeout(every, renewal).await {
                Ok(Some(r)) if r.ttl() > 0 => {
                    last_ok = sent;
                    *renewed.lock().unwrap_or_else(|p| p.into_inner()) = sent;
                }
                Ok(Some(_)) => break "the lease expired".to_string(),
                _ => stream = None,
            }
        }
        // Checked again right after waking: a pause shows here first.
        tokio::time::sleep(every).await;
    };
    let _ = lost.send(why);
}
