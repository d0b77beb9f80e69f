//! wrk as load during a change, for the tests that count failed
//! requests: `#[path = "common/load.rs"] mod load;`.
#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::Duration;

/// wrk running against a URL until stopped; what it counted.
pub struct Load {
    child: std::process::Child,
    out: std::path::PathBuf,
}

#[derive(Debug)]
pub struct Counted {
    pub requests: u64,
    /// Non-2xx/3xx answers plus connect, read, write and timeout errors.
    pub failed: u64,
    pub summary: String,
}

impl Load {
    pub fn start(dir: &std::path::Path, name: &str, url: &str) -> Load {
        let out = dir.join(format!("wrk-{name}.txt"));
        let child = Command::new("wrk")
            .args(["-t2", "-c16", "-d600s", "--timeout", "10s", url])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("wrk (scripts/docker-setup.sh --tests installs it)");
        // Connected before anything changes.
        std::thread::sleep(Duration::from_millis(500));
        Load { child, out }
    }

    /// Stop wrk (SIGINT: it prints its counts) and read them.
    pub fn stop(mut self) -> Counted {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        self.child.wait().unwrap();
        let summary = std::fs::read_to_string(&self.out).unwrap();
        let number = |after: &str| -> Vec<u64> {
            summary
                .lines()
                .find_map(|l| l.trim().strip_prefix(after).map(str::to_string))
                .map(|rest| {
                    rest.split(|c: char| !c.is_ascii_digit())
                        .filter_map(|d| d.parse().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        let requests = summary
            .lines()
            .find(|l| l.contains("requests in"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no request count in wrk's output:\n{summary}"));
        let failed = number("Non-2xx or 3xx responses:").iter().sum::<u64>()
            + number("Socket errors:").iter().sum::<u64>();
        Counted {
            requests,
            failed,
            summary,
        }
    }
}
