//! The controller's source: a watched directory, or a git branch fetched
//! on an interval (backing off while the remote fails), every new commit's
//! signature verified, read and validated as one unit.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Controller;
use crate::reconcile::Desired;
use crate::source::{read_dir, RawFile};
use crate::validate::{self};

/// Where the controller reads its desired state.
#[derive(Debug, Clone)]
pub enum Source {
    /// A directory, watched for changes.
    Dir(PathBuf),
    /// A git branch, fetched every interval and on webhook or sync.
    Git(crate::git::GitSource),
}

impl Source {
    pub fn display(&self) -> String {
        match self {
            Source::Dir(p) => p.display().to_string(),
            Source::Git(g) => format!("git+{}", g.display()),
        }
    }
}

/// The commit a desired state was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub id: String,
    pub summary: String,
    /// The commit time, Unix seconds.
    pub time: i64,
}

impl Commit {
    pub(super) fn short(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }
}

/// How long to wait before fetching again after `failures` failed
/// fetches in a row: the interval, doubling with each failure, capped at
/// five minutes (or the interval, if that is longer).
pub(super) fn fetch_backoff(interval: Duration, failures: u32) -> Duration {
    let cap = interval.max(Duration::from_secs(300));
    interval
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(cap)
}

/// Quiet time after the last change of a directory source before it is
/// read.
pub(super) const DEBOUNCE: Duration = Duration::from_millis(300);

impl Controller {
    /// Read the source: a directory as it is now; a git branch at the
    /// commit just fetched (`fetch`) or last fetched.
    pub(super) fn read_source(
        &self,
        fetch: bool,
    ) -> Result<(Vec<RawFile>, Option<Commit>), String> {
        match &self.config.source {
            Source::Dir(p) => Ok((read_dir(p).map_err(|e| e.to_string())?, None)),
            Source::Git(g) => {
                let cache = self.config.data_dir.join("git");
                let last = self.following().fetched.clone();
                let id = match (fetch, last) {
                    (false, Some(c)) => c.id,
                    (_, last) => match self.fetch(g, &cache) {
                        Ok(id) => {
                            self.verify(g, &cache, &id)?;
                            id
                        }
                        // The pass goes on with the commit fetched last
                        // (after a restart: the one in the cache), so
                        // drift is still repaired; it reports the error.
                        Err(e) => match last {
                            Some(c) => {
                                self.following().fetch_error = Some(e);
                                c.id
                            }
                            None => match g.cached_head(&cache) {
                                Some(id) => {
                                    self.verify(g, &cache, &id)?;
                                    self.following().fetch_error = Some(e);
                                    id
                                }
                                None => return Err(e),
                            },
                        },
                    },
                };
                let snap = g.read(&cache, &id)?;
                let commit = Commit {
                    id: snap.commit,
                    summary: snap.summary,
                    time: snap.time,
                };
                let mut s = self.following();
                if s.fetched.as_ref() != Some(&commit) {
                    drop(s);
                    self.event(format!(
                        "fetched commit {} ({})",
                        commit.short(),
                        commit.summary
                    ));
                    s = self.following();
                }
                s.fetched = Some(commit.clone());
                Ok((snap.files, Some(commit)))
            }
        }
    }

    /// Fetch the branch. After a failure the next attempts back off
    /// (the interval, doubling, up to five minutes or the interval if
    /// longer) so a dead remote is not hammered; a sync or webhook
    /// fetches at once.
    pub(super) fn fetch(
        &self,
        g: &crate::git::GitSource,
        cache: &std::path::Path,
    ) -> Result<String, String> {
        let waiting = {
            let mut s = self.following();
            let forced = std::mem::take(&mut s.fetch_now);
            s.fetch_backoff
                .filter(|at| !forced && Instant::now() < *at)
                .map(|at| (at, s.fetch_failures))
        };
        let running = || {
            self.following()
                .applied
                .as_ref()
                .map(|c| format!("commit {}", c.short()))
                .unwrap_or_else(|| "what was applied before".into())
        };
        if let Some((at, failures)) = waiting {
            return Err(format!(
                "{}; the fetch failed {failures} time(s); still running {}; next attempt in {} s \
                 (`reconcile sync` or the webhook fetches now)",
                g.display(),
                running(),
                at.saturating_duration_since(Instant::now())
                    .as_secs()
                    .max(1)
            ));
        }
        let began = Instant::now();
        let fetched = g.fetch(cache);
        self.metrics
            .fetch(began.elapsed().as_secs_f64(), fetched.is_ok());
        match fetched {
            Ok(id) => {
                let mut s = self.following();
                s.fetch_failures = 0;
                s.fetch_backoff = None;
                Ok(id)
            }
            Err(e) => {
                let (failures, delay) = {
                    let mut s = self.following();
                    s.fetch_failures = s.fetch_failures.saturating_add(1);
                    let delay = fetch_backoff(self.config.interval, s.fetch_failures);
                    s.fetch_backoff = Some(Instant::now() + delay);
                    (s.fetch_failures, delay)
                };
                Err(format!(
                    "{e}; still running {}; next attempt in {} s (failed {failures} time(s) in \
                     a row; `reconcile sync` or the webhook fetches now)",
                    running(),
                    delay.as_secs().max(1)
                ))
            }
        }
    }

    /// With --verify-signatures: every commit since the last verified one
    /// must be signed by an allowed key, else nothing from it is read.
    pub(super) fn verify(
        &self,
        g: &crate::git::GitSource,
        cache: &std::path::Path,
        id: &str,
    ) -> Result<(), String> {
        let signers = crate::git::Signers {
            ssh: self.config.allowed_signers.as_deref(),
            gpg: self.config.allowed_gpg_keys.as_deref(),
        };
        if signers.ssh.is_none() && signers.gpg.is_none() {
            return Ok(());
        }
        let since = {
            let s = self.following();
            s.verified
                .clone()
                .or_else(|| s.applied.as_ref().map(|c| c.id.clone()))
        };
        if since.as_deref() == Some(id) {
            return Ok(());
        }
        match crate::git::verify_range(&g.cache_dir(cache), id, since.as_deref(), signers) {
            Ok(_) => {
                self.following().verified = Some(id.to_string());
                Ok(())
            }
            Err(e) => {
                let running = self.following().applied.clone();
                Err(format!(
                    "signature verification failed: {e}; nothing from commit {} is applied; still running {}",
                    &id[..12.min(id.len())],
                    running
                        .map(|c| format!("commit {}", c.short()))
                        .unwrap_or_else(|| "what was applied before".into())
                ))
            }
        }
    }

    /// Read and validate the source as one unit. Invalid input is reported
    /// with the commit and file:line:col, and nothing of it is applied.
    pub(super) fn load(&self, fetch: bool) -> Result<(Desired, Option<Commit>), String> {
        // Torn down: nothing of the source, whatever it holds or whether
        // it can be read.
        if self.requests().torn_down {
            return Ok((Desired::default(), None));
        }
        let (files, commit) = self.read_source(fetch)?;
        let at = commit
            .as_ref()
            .map(|c| format!("commit {}: ", c.short()))
            .unwrap_or_default();
        let mut v = validate::validate_cached(
            files,
            &mut self.files.lock().unwrap_or_else(|p| p.into_inner()),
        );
        // A committer is not the operator: no reference may read the
        // controller's own environment or files.
        let refused = crate::secrets::check_references(&v, crate::secrets::Mode::Fleet);
        v.diagnostics.extend(refused);
        if !v.is_valid() {
            let lines: Vec<String> = v
                .diagnostics
                .iter()
                .filter(|d| d.severity == validate::Severity::Error)
                .map(|d| {
                    format!(
                        "{}:{}:{}: {}",
                        d.file, d.span.line, d.span.column, d.message
                    )
                })
                .collect();
            return Err(format!(
                "{at}the source is invalid; nothing of it is applied:\n  {}",
                lines.join("\n  ")
            ));
        }
        let mut desired = Desired::from_valid(&v, &self.resolver);
        desired.notes = crate::autoscaling::take_over(&mut desired.state, &self.scaled_counts());
        Ok((desired, commit))
    }

    /// Watch a directory source: any change wakes the loop once the tree
    /// has been quiet for the debounce time, so an editor's burst of
    /// writes is one reconcile, of the tree as a whole.
    pub(super) fn watch(self: &Arc<Self>, dir: &std::path::Path) -> Result<(), String> {
        use notify::Watcher;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        // The controller's own writes (its database, git cache) must not
        // wake it when its data directory is inside the watched one.
        let own = std::fs::canonicalize(&self.config.data_dir)
            .unwrap_or_else(|_| self.config.data_dir.clone());
        let mut watcher = notify::recommended_watcher(move |r: notify::Result<notify::Event>| {
            if r.is_ok_and(|e| !e.kind.is_access() && concerns_source(&e.paths, &own)) {
                let _ = tx.send(());
            }
        })
        .map_err(|e| format!("watching `{}`: {e}", dir.display()))?;
        watcher
            .watch(dir, notify::RecursiveMode::Recursive)
            .map_err(|e| format!("watching `{}`: {e}", dir.display()))?;
        let c = self.clone();
        tokio::spawn(async move {
            let _watcher = watcher;
            while rx.recv().await.is_some() {
                while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
                tracing::info!("the source directory changed");
                c.sync();
            }
        });
        Ok(())
    }
}

/// Whether a change to `paths` may change the source: any path outside
/// the controller's own data directory `own` (events carry absolute
/// paths).
fn concerns_source(paths: &[PathBuf], own: &std::path::Path) -> bool {
    paths.is_empty() || paths.iter().any(|p| !p.starts_with(own))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_fetches_back_off_doubling_up_to_five_minutes() {
        let s = Duration::from_secs;
        let waits: Vec<u64> = (1..=8).map(|k| fetch_backoff(s(30), k).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 300, 300, 300, 300]);
        assert_eq!(fetch_backoff(s(1), 1), s(1));
        assert_eq!(fetch_backoff(s(1), 4), s(8));
        assert_eq!(fetch_backoff(s(1), 1000), s(300));
        // An interval above the cap is never shortened.
        assert_eq!(fetch_backoff(s(600), 3), s(600));
    }

    #[test]
    fn writes_to_the_data_directory_do_not_concern_the_source() {
        let own = std::path::Path::new("/srv/manifests/.data");
        let p = |s: &str| vec![PathBuf::from(s)];
        assert!(!concerns_source(
            &p("/srv/manifests/.data/controller.redb"),
            own
        ));
        assert!(!concerns_source(
            &p("/srv/manifests/.data/git/objects/x"),
            own
        ));
        assert!(concerns_source(&p("/srv/manifests/web.yaml"), own));
        assert!(concerns_source(&p("/srv/manifests/.database.yaml"), own));
        assert!(concerns_source(
            &[
                PathBuf::from("/srv/manifests/.data/a"),
                PathBuf::from("/srv/manifests/b.yaml")
            ],
            own
        ));
        // An event without paths (a rescan) may concern anything.
        assert!(concerns_source(&[], own));
    }
}
