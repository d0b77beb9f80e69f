//! `reconcile controller --store etcd://...`: a controller of a control
//! plane sharing an etcd store, which stands by until elected and starts
//! over as a new process when it loses the leadership.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::run::{block_on, failure, usage};
use crate::controller::leader::Election;
use crate::controller::store::etcd::{EtcdBackend, EtcdConfig, Fence};
use crate::controller::store::Db;
use crate::controller::{self, Controller};

/// A controller on etcd: stand by (answering with the leader's URL) until
/// elected, then open the state and serve and reconcile as the leader on
/// the same listener. While etcd cannot be reached it keeps trying and
/// says so. A leader that loses its lease starts over as a new process:
/// whatever it held in memory is dropped, and its writes were fenced
/// from the moment the lease ended.
pub(super) fn elected_controller(
    config: controller::Config,
    etcd: EtcdConfig,
    ttl: Duration,
    listen: &str,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: controller::serve::Limits,
) -> ExitCode {
    block_on(async move {
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => return usage(format!("--listen {listen}: {e}")),
        };
        let api = Arc::new(std::sync::OnceLock::new());
        let election = Arc::new(std::sync::OnceLock::new());
        let reads = controller::standby::Reads::default();
        // The leader is reached as nodes reach any controller of this
        // installation (they share its CA). No deadline for a whole
        // exchange: a log upload lasts as long as its reader; the agent's
        // own deadlines end what it gives up on.
        let leader_client = match crate::tls::streaming_client(
            &config.advertise_url,
            &config.node_trust,
            Duration::from_secs(24 * 3600),
        ) {
            Ok(c) => c,
            Err(e) => return usage(format!("--advertise-url: {e}")),
        };
        let app = controller::standby::router(
            api.clone(),
            election.clone(),
            reads.clone(),
            leader_client,
            config.advertise_url.clone(),
        );
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let server = tokio::spawn(controller::serve::accept_loop(
            app, listener, acceptor, limits,
        ));
        let describe = etcd.describe();
        let lead = async {
            let backend = connect(etcd).await;
            backend.set_fence(Fence::Follower);
            let e = Arc::new(Election::new(&backend, &config.advertise_url, ttl));
            let _ = election.set(e.clone());
            tracing::info!(
                "controller on {describe}: standing by until elected (lease {} s)",
                ttl.as_secs()
            );
            let following = tokio::spawn(controller::standby::follow(
                backend.clone(),
                config.clone(),
                e.clone(),
                reads.clone(),
            ));
            let leading = e.campaign().await;
            // The read-only view stops (and is waited for) before this
            // controller may write.
            following.abort();
            let _ = following.await;
            *reads.write().unwrap_or_else(|p| p.into_inner()) = None;
            backend.set_fence(leading.fence.clone());
            tracing::info!("elected leader of {describe}");
            let c = match Controller::open_on(config, Db::over(Box::new(backend.clone()))) {
                Ok(c) => c,
                Err(why) => {
                    // Another controller may lead at once, not a lease later.
                    e.resign().await;
                    return failure(why);
                }
            };
            c.set_election(e.clone());
            let _ = api.set(controller::http::router(c.clone()));
            tokio::select! {
                () = c.run_loop() => ExitCode::SUCCESS,
                why = leading.lost => {
                    let why = why.unwrap_or_else(|_| "the lease keeper stopped".into());
                    tracing::error!("lost the leadership ({why}); starting over as a follower");
                    restart()
                }
            }
        };
        tokio::select! {
            r = server => match r {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => failure(e),
                Err(e) => failure(format!("the API server stopped: {e}")),
            },
            code = lead => code,
            _ = tokio::signal::ctrl_c() => {
                // Another controller is elected at once, not a lease later.
                if let Some(e) = election.get() {
                    e.resign().await;
                }
                tracing::info!("interrupted; stopping (agents keep their tasks)");
                ExitCode::SUCCESS
            }
        }
    })
}

/// Connect to etcd, trying again every few seconds until it answers.
async fn connect(etcd: EtcdConfig) -> Arc<EtcdBackend> {
    let mut logged = false;
    loop {
        let config = etcd.clone();
        let tried = tokio::task::spawn_blocking(move || EtcdBackend::connect(config)).await;
        match tried {
            Ok(Ok(b)) => {
                if logged {
                    tracing::info!("etcd answers again");
                }
                return Arc::new(b);
            }
            Ok(Err(e)) => {
                tracing::warn!("{e}; trying again (this controller stands by meanwhile)");
                logged = true;
            }
            Err(e) => tracing::warn!("connecting to etcd: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Replace this process with a fresh one of the same command line.
fn restart() -> ExitCode {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return failure(format!("restarting: {e}")),
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .exec();
    failure(format!("restarting: {err}"))
}
