//! Nodes' identities: a join token only bootstraps. `POST /v1/join` gives a
//! node a credential of its own, bound to its name and cluster, and every
//! later request of that node must carry it (see [`super::auth`]). A live
//! node's name cannot be taken; `reconcile node remove` revokes a node;
//! nodes LOST for longer than `--forget-lost-after` are forgotten.

use super::store::NodeCredential;
use super::Controller;
use crate::wire::{JoinReply, NodeStatus};

/// The most CPU units (1,024 cores) and MiB (16 TiB) a node may declare: a
/// larger claim is a bug or a lie, and would attract every task.
pub const MAX_CPU: u32 = 1 << 20;
pub const MAX_MEMORY: u32 = 1 << 24;

/// Node names: what an agent's `--name` may be.
pub fn valid_node_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 255
        || name.starts_with('.')
        || !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
    {
        // Debug-quoted: the name is the caller's and may hold anything.
        return Err(format!(
            "node name {name:?}: use 1 to 255 letters, digits, `-`, `_` and `.`"
        ));
    }
    Ok(())
}

impl Controller {
    /// Give node `name` of `cluster` a new credential, replacing any it had,
    /// unless the name belongs to a live node or to a node of another
    /// cluster.
    pub fn join(&self, name: &str, cluster: &str) -> Result<JoinReply, (u16, String)> {
        valid_node_name(name).map_err(|e| (400, e))?;
        let token = super::auth::new_token("rcn_").map_err(|e| (500, e))?;
        let mut s = self.members();
        if !s.clusters.is_empty() && !s.clusters.contains(cluster) {
            return Err((
                403,
                format!("node `{name}` asks to join cluster `{cluster}`, which the source does not define"),
            ));
        }
        let timeout = self.config.node_timeout;
        if let Some(n) = s.nodes.get(name) {
            if n.record.info.cluster != cluster {
                return Err((
                    409,
                    format!(
                        "node `{name}` is registered in cluster `{}`, not `{cluster}`; \
                         `reconcile node remove {name}` frees the name",
                        n.record.info.cluster
                    ),
                ));
            }
            let live = n.record.status != NodeStatus::Lost
                && match n.last_seen {
                    Some(t) => t.elapsed() <= timeout,
                    // Not heard from since this controller started: live
                    // until it had the time to heartbeat.
                    None => self.started.elapsed() <= timeout,
                };
            if live {
                return Err((
                    409,
                    format!(
                        "node `{name}` is live: its name cannot be taken. A restarted agent \
                         keeps its credential file; to replace the node, \
                         `reconcile node remove {name}` first"
                    ),
                ));
            }
        } else if let Some(c) = s.credentials.get(name) {
            // Joined moments ago and not heard from yet: the same rule, so
            // two joiners cannot race for one name.
            let age = crate::clock::unix_now() - c.issued_at;
            if age >= 0 && (age as u64) < timeout.as_secs().max(1) {
                return Err((
                    409,
                    format!("node `{name}` joined {age} s ago: its name cannot be taken"),
                ));
            }
        }
        let credential = NodeCredential {
            cluster: cluster.to_string(),
            hash: super::auth::hash(&token),
            issued_at: crate::clock::unix_now(),
        };
        self.db
            .put_credential(name, &credential)
            .map_err(|e| (500, e.to_string()))?;
        s.credentials.insert(name.to_string(), credential);
        drop(s);
        tracing::info!(node = %name, "node {name} of cluster {cluster} received its credential");
        Ok(JoinReply {
            name: name.to_string(),
            cluster: cluster.to_string(),
            token,
        })
    }

    /// Remove a node: its credential is revoked, its record forgotten and
    /// its tasks placed elsewhere. Its agent, if it still runs, is refused
    /// from now on (and stops its tasks only if it can join again).
    pub fn remove_node(&self, name: &str) -> Result<String, String> {
        let tasks = {
            let mut s = self.members();
            if !s.nodes.contains_key(name) && !s.credentials.contains_key(name) {
                return Err(format!("no node named `{name}`"));
            }
            let ids = self.unassign_node(&mut s, name)?;
            self.db.delete_node(name).map_err(|e| e.to_string())?;
            s.nodes.remove(name);
            s.credentials.remove(name);
            ids
        };
        self.assignments_changed();
        let message = format!("node {name} removed; its credential is revoked and its {tasks} task(s) are rescheduled");
        self.event(message.clone());
        self.sync();
        Ok(message)
    }

    /// Forget nodes LOST for longer than `--forget-lost-after`, and
    /// credentials never used for as long: junk registrations do not stay.
    pub(super) fn forget_lost(&self, now: i64) {
        let after = self.config.forget_lost_after;
        let cutoff = now - i64::try_from(after.as_secs()).unwrap_or(i64::MAX);
        let mut forgotten = Vec::new();
        {
            let mut s = self.members();
            let mut stale: Vec<String> = Vec::new();
            for (name, n) in s.nodes.iter_mut() {
                if n.record.status != NodeStatus::Lost {
                    continue;
                }
                match n.record.lost_at {
                    Some(at) if at <= cutoff => stale.push(name.clone()),
                    Some(_) => {}
                    // LOST before the time was kept: count from now.
                    None => {
                        n.record.lost_at = Some(now);
                        if let Err(e) = self.db.put_node(&n.record) {
                            tracing::error!("saving the controller state: {e}");
                        }
                    }
                }
            }
            let unused = s
                .credentials
                .iter()
                .filter(|(name, c)| !s.nodes.contains_key(*name) && c.issued_at <= cutoff)
                .map(|(name, _)| name.clone());
            stale.extend(unused.collect::<Vec<_>>());
            for name in stale {
                if let Err(e) = self.db.delete_node(&name) {
                    tracing::error!("saving the controller state: {e}");
                    continue;
                }
                s.nodes.remove(&name);
                s.credentials.remove(&name);
                forgotten.push(name);
            }
        }
        for name in forgotten {
            self.event(format!(
                "node {name} forgotten: LOST (or never seen) for more than {}",
                crate::clock::span(after.as_secs())
            ));
        }
    }
}
