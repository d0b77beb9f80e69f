//! The audit log: one JSON line per change asked of the API (and per
//! refused attempt), in `audit.log` of the data directory: when, who (the
//! token's name and role), from where, what and on what, and the answer.
//! Never a token or a body. The file is private to the controller's user
//! and is rotated to `audit.log.1` past 64 MiB, so it is bounded.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;

/// Rotate past this size.
const MAX_BYTES: u64 = 64 << 20;

pub struct Audit {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

/// One audited request.
pub struct Entry<'a> {
    pub caller: &'a str,
    pub role: &'a str,
    pub peer: SocketAddr,
    /// Method and route pattern, e.g. `POST /v1/nodes/{name}/drain`.
    pub action: &'a str,
    /// The path asked for, e.g. `/v1/nodes/n1/drain`.
    pub target: &'a str,
    pub status: u16,
}

fn open(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    crate::fsutil::private_options()
        .create(true)
        .append(true)
        .open(path)
}

impl Audit {
    pub fn new(dir: &std::path::Path) -> Audit {
        Audit {
            path: dir.join("audit.log"),
            file: Mutex::new(None),
        }
    }

    /// Append `e`; a failure to write is logged, never fatal: the request
    /// has been answered already.
    pub fn record(&self, e: &Entry) {
        let line = serde_json::json!({
            "time": crate::clock::rfc3339(crate::clock::unix_now()),
            "caller": e.caller,
            "role": e.role,
            "peer": e.peer.ip().to_string(),
            "action": e.action,
            "target": e.target,
            "status": e.status,
            "result": if (200..300).contains(&e.status) { "ok" } else if e.status == 401 || e.status == 403 { "denied" } else { "failed" },
        });
        let mut f = super::guard(&self.file);
        if let Err(err) = self.append(&mut f, &line.to_string()) {
            tracing::error!("audit log `{}`: {err}", self.path.display());
            *f = None;
        }
    }

    fn append(&self, f: &mut Option<std::fs::File>, line: &str) -> std::io::Result<()> {
        if f.is_none() {
            *f = Some(open(&self.path)?);
        }
        let file = f.as_mut().expect("opened above");
        if file.metadata()?.len() > MAX_BYTES {
            std::fs::rename(&self.path, self.path.with_extension("log.1"))?;
            *file = open(&self.path)?;
        }
        writeln!(file, "{line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_json_lines_in_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = Audit::new(dir.path());
        for status in [202, 403] {
            a.record(&Entry {
                caller: "ci",
                role: "operator",
                peer: "10.0.0.9:4000".parse().unwrap(),
                action: "POST /v1/sync",
                target: "/v1/sync",
                status,
            });
        }
        let path = dir.path().join("audit.log");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["caller"], "ci");
        assert_eq!(lines[0]["peer"], "10.0.0.9");
        assert_eq!(lines[0]["result"], "ok");
        assert_eq!(lines[1]["result"], "denied");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
