//! `destroy --controller`: tear down everything a controller's source
//! applied, across the fleet, and keep it down until `resume`.
//!
//! The source is left as it is (a teardown is not a commit): the
//! controller applies an empty source from its next pass on, so the
//! services' tasks stop on their nodes and every resource goes, and the
//! source is not applied again until `reconcile resume`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::args::RemoteArgs;
use super::remote::Client;
use super::run::{block_on, failure, EXIT_FAILURE};
use crate::report::StatusReport;
use crate::wire::SyncReply;

pub(crate) fn destroy(remote: &RemoteArgs, auto_approve: bool, limit: Duration) -> ExitCode {
    let client = match Client::new(remote) {
        Ok(c) => c,
        Err(c) => return c,
    };
    let url = remote.controller.clone().unwrap_or_default();
    let before = match block_on(client.call::<StatusReport>(reqwest::Method::GET, "/v1/status")) {
        Ok(s) => s,
        Err(e) => return failure(e),
    };
    println!("The controller at {url} removes everything its source applied:");
    if before.services.is_empty() {
        println!("  (no service runs now)");
    }
    for s in &before.services {
        println!(
            "  - Service/{}  {} ({} running)",
            s.service, s.task_definition, s.running
        );
    }
    println!(
        "and applies nothing of its source ({}) until `reconcile resume`.",
        before.source
    );
    if !super::standalone::confirmed(auto_approve, "destroy all these resources") {
        return ExitCode::from(EXIT_FAILURE);
    }
    let done = block_on(async {
        let reply: SyncReply = client.call(reqwest::Method::POST, "/v1/destroy").await?;
        eprintln!("Teardown requested; waiting for the controller to remove it all.");
        let started = Instant::now();
        loop {
            let s: StatusReport = client.call(reqwest::Method::GET, "/v1/status").await?;
            let c = s.controller.clone().unwrap_or_default();
            if c.passes >= reply.until_pass {
                if let Some(e) = c.last_error {
                    return Err(e);
                }
                let tasks: usize = s.services.iter().map(|v| v.running + v.pending).sum();
                if s.services.is_empty() && tasks == 0 {
                    return Ok(());
                }
            }
            if started.elapsed() >= limit {
                return Err(format!(
                    "the controller has not finished the teardown within {}s ({} service(s) \
                     left); `reconcile status --controller URL` shows where it stands",
                    limit.as_secs(),
                    s.services.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    match done {
        Ok(()) => {
            println!(
                "Destroy complete: nothing of the source runs; `reconcile resume --controller \
                 URL` applies it again."
            );
            ExitCode::SUCCESS
        }
        Err(e) => failure(e),
    }
}
