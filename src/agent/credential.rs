//! The node's own credential: asked for once with the join token
//! (`POST /v1/join`) and kept in a private file, so a restarted agent is
//! the same node without joining again (a live node's name cannot be
//! joined twice).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::wire::{ApiError, JoinReply, JoinRequest};

/// What the credential file holds: the token, and for which controller,
/// cluster and name it was given (another one is never presented to a
/// different controller).
#[derive(Serialize, Deserialize)]
struct Saved {
    controller: String,
    cluster: String,
    name: String,
    token: String,
}

pub struct Credential {
    path: PathBuf,
    controller: String,
    cluster: String,
    name: String,
}

impl Credential {
    pub fn new(path: PathBuf, controller: &str, cluster: &str, name: &str) -> Credential {
        Credential {
            path,
            controller: controller.trim_end_matches('/').to_string(),
            cluster: cluster.to_string(),
            name: name.to_string(),
        }
    }

    /// The saved token, if it was given to this node by this controller.
    pub fn load(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let s: Saved = serde_json::from_str(&text).ok()?;
        (s.controller == self.controller && s.cluster == self.cluster && s.name == self.name)
            .then_some(s.token)
    }

    fn save(&self, token: &str) -> Result<(), String> {
        let saved = Saved {
            controller: self.controller.clone(),
            cluster: self.cluster.clone(),
            name: self.name.clone(),
            token: token.to_string(),
        };
        let text = serde_json::to_string(&saved).map_err(|e| e.to_string())?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        crate::fsutil::private_dir(dir)
            .and_then(|()| crate::fsutil::write_private(&self.path, text.as_bytes()))
            .map_err(|e| format!("credential file `{}`: {e}", self.path.display()))
    }

    /// Forget a credential the controller refused.
    pub fn discard(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// Join through the controller at `base` with `join_token` and keep
    /// the credential received (for the installation: every URL given).
    pub async fn join(
        &self,
        http: &reqwest::Client,
        base: &str,
        join_token: &str,
    ) -> Result<String, String> {
        let url = format!("{}/v1/join", base.trim_end_matches('/'));
        let r = http
            .post(&url)
            .bearer_auth(join_token)
            .json(&JoinRequest {
                name: self.name.clone(),
                cluster: self.cluster.clone(),
            })
            .send()
            .await
            .map_err(|e| format!("cannot reach the controller to join: {e}"))?;
        let status = r.status();
        if !status.is_success() {
            let body = r.bytes().await.unwrap_or_default();
            let why = serde_json::from_slice::<ApiError>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(format!("the controller refused to join ({status}): {why}"));
        }
        let reply: JoinReply = r
            .json()
            .await
            .map_err(|e| format!("unexpected reply to the join: {e}"))?;
        self.save(&reply.token)?;
        Ok(reply.token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_is_private_and_only_for_its_controller_and_node() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent/c.n1.json");
        let c = Credential::new(path.clone(), "https://ctl:7700/", "c", "n1");
        assert!(c.load().is_none());
        c.save("rcn_abc").unwrap();
        assert_eq!(c.load().as_deref(), Some("rcn_abc"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let other = Credential::new(path.clone(), "https://other:7700", "c", "n1");
        assert!(other.load().is_none(), "never shown to another controller");
        let renamed = Credential::new(path.clone(), "https://ctl:7700", "c", "n2");
        assert!(renamed.load().is_none());
        c.discard();
        assert!(c.load().is_none());
    }
}
