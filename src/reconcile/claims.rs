//! Which directory source owns each cluster on this machine, so that what
//! runs stays owned when a checkout moves or is cloned elsewhere.
//!
//! A directory source's identity is its canonical path, digested: after
//! `mv src src-moved` the digest changes and, without claims, the new path
//! would own nothing. `apply` records, in the state directory, the cluster
//! names it applied with the source's id and path. A source at another path
//! that declares a claimed cluster:
//! - takes the claim's id over when the claiming path no longer declares
//!   that cluster (moved, or deleted after cloning): it keeps what runs;
//! - is refused while the claiming path still declares it: two sources
//!   must not own one cluster.
//!
//! [`resolve`] is pure; the file is read and written at the edges.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::local::SourceIdentity;

/// The cluster claims of one state directory: cluster name -> owner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims(BTreeMap<String, Claim>);

/// The source that last applied a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The id its resources carry.
    pub id: String,
    /// Its canonical path when it applied.
    pub source: String,
}

/// What a source at a path is, given the claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Its own identity: nothing else claims its clusters.
    Own(SourceIdentity),
    /// It carries on the identity of the source that was at `from`.
    Moved {
        identity: SourceIdentity,
        from: String,
    },
}

impl Resolution {
    pub fn identity(&self) -> &SourceIdentity {
        match self {
            Resolution::Own(i) | Resolution::Moved { identity: i, .. } => i,
        }
    }
}

/// Decide what the source `here`, declaring `clusters`, is. `declares(path,
/// cluster)` tells whether the source at `path` still declares `cluster`.
pub fn resolve(
    claims: &Claims,
    here: &SourceIdentity,
    clusters: &[String],
    declares: impl Fn(&str, &str) -> bool,
) -> Result<Resolution, String> {
    // A path that applied under an identity it took over keeps it.
    let recorded = claims.0.values().find(|c| c.source == here.shown);
    let here = &SourceIdentity {
        id: recorded.map_or_else(|| here.id.clone(), |c| c.id.clone()),
        shown: here.shown.clone(),
    };
    let mut adopted: Option<&Claim> = None;
    for cluster in clusters {
        let Some(claim) = claims.0.get(cluster) else {
            continue;
        };
        if claim.id == here.id {
            continue;
        }
        if declares(&claim.source, cluster) {
            return Err(format!(
                "cluster `{cluster}` is managed by the source at {}, which still declares it; \
                 one cluster has one source: apply from there, or remove the cluster from \
                 that source (or `reconcile destroy` it there) before applying it from {}",
                claim.source, here.shown
            ));
        }
        match adopted {
            Some(a) if a.id != claim.id => {
                return Err(format!(
                    "clusters of {} were applied from two sources that are gone ({} and {}); \
                     apply each from one source, or `reconcile destroy` one of them first",
                    here.shown, a.source, claim.source
                ))
            }
            _ => adopted = Some(claim),
        }
    }
    let Some(claim) = adopted else {
        return Ok(Resolution::Own(here.clone()));
    };
    // The path itself already owns other clusters: taking another id over
    // would split it in two.
    if let Some((cluster, _)) = claims.0.iter().find(|(_, c)| c.id == here.id) {
        return Err(format!(
            "{} already manages cluster `{cluster}` under its own identity, and declares \
             clusters applied from {}, which is gone; apply them from one source",
            here.shown, claim.source
        ));
    }
    Ok(Resolution::Moved {
        identity: SourceIdentity {
            id: claim.id.clone(),
            shown: here.shown.clone(),
        },
        from: claim.source.clone(),
    })
}

impl Claims {
    /// The claims after `id` at `source` holds exactly `clusters` (none
    /// after a destroy): its claims on other clusters are dropped.
    pub fn applied(&mut self, id: &str, source: &str, clusters: &[String]) {
        self.0.retain(|_, c| c.id != id);
        for cluster in clusters {
            self.0.insert(
                cluster.clone(),
                Claim {
                    id: id.to_string(),
                    source: source.to_string(),
                },
            );
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The claims file of state directory `dir`.
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("claims.json")
    }

    /// The claims kept in `dir`; none when the file does not exist.
    pub fn load(dir: &Path) -> Result<Claims, String> {
        let path = Claims::file(dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("`{}` is not a claims file: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Claims::default()),
            Err(e) => Err(format!("`{}`: {e}", path.display())),
        }
    }

    /// Keep the claims in `dir`, replacing the file at once.
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        let path = Claims::file(dir);
        crate::fsutil::private_dir(dir).map_err(|e| format!("`{}`: {e}", dir.display()))?;
        let text = serde_json::to_vec_pretty(self).unwrap_or_default();
        crate::fsutil::write_private(&path, &text).map_err(|e| format!("`{}`: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(path: &str) -> SourceIdentity {
        SourceIdentity {
            id: format!("id-of-{path}"),
            shown: path.to_string(),
        }
    }

    fn claims_of(entries: &[(&str, &str)]) -> Claims {
        let mut c = Claims::default();
        for (cluster, path) in entries {
            c.0.insert(
                cluster.to_string(),
                Claim {
                    id: at(path).id,
                    source: path.to_string(),
                },
            );
        }
        c
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn unclaimed_or_own_clusters_keep_the_path_identity() {
        let claims = claims_of(&[("a", "/src")]);
        let r = resolve(&claims, &at("/src"), &names(&["a", "b"]), |_, _| true).unwrap();
        assert_eq!(r, Resolution::Own(at("/src")));
        let r = resolve(&claims, &at("/other"), &names(&["b"]), |_, _| true).unwrap();
        assert_eq!(r, Resolution::Own(at("/other")));
    }

    #[test]
    fn a_moved_source_takes_its_old_identity_over() {
        let claims = claims_of(&[("a", "/old"), ("b", "/old")]);
        let r = resolve(&claims, &at("/new"), &names(&["a", "b", "c"]), |_, _| false).unwrap();
        assert_eq!(r.identity().id, at("/old").id);
        assert_eq!(r.identity().shown, "/new");
        assert_eq!(
            r,
            Resolution::Moved {
                identity: r.identity().clone(),
                from: "/old".into()
            }
        );
    }

    #[test]
    fn after_applying_from_its_new_path_a_moved_source_is_itself() {
        let mut claims = claims_of(&[("a", "/old")]);
        claims.applied(&at("/old").id, "/new", &names(&["a"]));
        let declares = |p: &str, _: &str| p == "/new";
        let r = resolve(&claims, &at("/new"), &names(&["a"]), declares).unwrap();
        assert_eq!(
            r,
            Resolution::Own(SourceIdentity {
                id: at("/old").id,
                shown: "/new".into()
            })
        );
    }

    #[test]
    fn a_second_source_for_a_cluster_is_refused_naming_the_first() {
        let claims = claims_of(&[("a", "/first")]);
        let e = resolve(&claims, &at("/clone"), &names(&["a"]), |p, c| {
            p == "/first" && c == "a"
        })
        .unwrap_err();
        assert!(
            e.contains("`a`") && e.contains("/first") && e.contains("/clone"),
            "{e}"
        );
    }

    #[test]
    fn clusters_of_two_gone_sources_or_a_split_identity_are_refused() {
        let claims = claims_of(&[("a", "/one"), ("b", "/two")]);
        let e = resolve(&claims, &at("/new"), &names(&["a", "b"]), |_, _| false).unwrap_err();
        assert!(e.contains("/one") && e.contains("/two"), "{e}");
        let claims = claims_of(&[("a", "/old"), ("mine", "/new")]);
        let e = resolve(&claims, &at("/new"), &names(&["a", "mine"]), |_, _| false).unwrap_err();
        assert!(e.contains("`mine`") && e.contains("/old"), "{e}");
    }

    #[test]
    fn applying_and_destroying_update_the_claims() {
        let mut claims = claims_of(&[("a", "/src"), ("gone", "/src"), ("x", "/other")]);
        claims.applied(&at("/src").id, "/moved", &names(&["a", "b"]));
        assert_eq!(claims.0.keys().collect::<Vec<_>>(), ["a", "b", "x"]);
        assert_eq!(claims.0["b"].source, "/moved");
        claims.applied(&at("/src").id, "/moved", &[]);
        assert_eq!(claims.0.keys().collect::<Vec<_>>(), ["x"]);
        let dir = tempfile::tempdir().unwrap();
        assert!(Claims::load(dir.path()).unwrap().is_empty());
        claims.save(dir.path()).unwrap();
        assert_eq!(Claims::load(dir.path()).unwrap(), claims);
    }
}
