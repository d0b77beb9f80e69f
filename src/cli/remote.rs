//! The controller's API as the CLI uses it: the `--controller` side of
//! `plan`, `apply`, `status`, `history`, `rollback` and `deployment
//! abort`, returning the same documents as the local side.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use super::args::Format;
use super::args::RemoteArgs;
use super::run::{block_on, failure, usage, EXIT_FAILURE};
use crate::deployment::Rollout;
use crate::plan::{render, Plan};
use crate::report::StatusReport;

pub(crate) struct Client {
    /// Every controller given (several share an etcd store), and the one
    /// in use: the leader once a follower has named it.
    bases: Vec<String>,
    at: std::sync::atomic::AtomicUsize,
    token: String,
    http: reqwest::Client,
    trust: crate::tls::Trust,
}

/// The longest line a streamed reply may hold.
const MAX_LINE: usize = 1 << 20;

impl Client {
    pub(crate) fn new(r: &RemoteArgs) -> Result<Client, ExitCode> {
        let base = r
            .controller
            .clone()
            .ok_or_else(|| usage("--controller URL (or RECONCILE_CONTROLLER) is required"))?;
        let token = r.token.clone().ok_or_else(|| {
            usage("--token (or RECONCILE_API_TOKEN) is required with --controller")
        })?;
        let bases: Vec<String> = base
            .split(',')
            .map(|b| b.trim().trim_end_matches('/').to_string())
            .filter(|b| !b.is_empty())
            .collect();
        let http =
            crate::tls::client(&base, &r.trust.trust(), Duration::from_secs(30)).map_err(usage)?;
        Ok(Client {
            bases,
            at: Default::default(),
            token,
            http,
            trust: r.trust.trust(),
        })
    }

    /// GET `path`, a reply of JSON lines that may stream for as long as
    /// the controller has more, and hand each non-empty line to `line`
    /// (empty lines keep the stream alive). Ends with the reply.
    pub(crate) async fn lines(
        &self,
        path: &str,
        query: &[(&str, String)],
        mut line: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut query_text = String::new();
        for (i, (k, v)) in query.iter().enumerate() {
            query_text.push(if i == 0 { '?' } else { '&' });
            query_text.push_str(k);
            query_text.push('=');
            query_text.push_str(&query_escape(v));
        }
        let path = format!("{path}{query_text}");
        // Silence longer than four keep-alives means the controller is gone.
        let http = crate::tls::streaming_client(self.base(), &self.trust, Duration::from_secs(60))?;
        let (mut r, url) = self
            .exchange(&path, |url| http.get(url).bearer_auth(&self.token))
            .await?;
        let status = r.status();
        if !status.is_success() {
            let body = r.bytes().await.map_err(|e| e.to_string())?;
            let msg = serde_json::from_slice::<crate::wire::ApiError>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(format!("the controller answered {status}: {msg}"));
        }
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = r
            .chunk()
            .await
            .map_err(|e| format!("reading from {url}: {e}"))?
        {
            buf.extend_from_slice(&chunk);
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let l: Vec<u8> = buf.drain(..=end).collect();
                let l = l.trim_ascii();
                if !l.is_empty() {
                    line(l)?;
                }
            }
            if buf.len() > MAX_LINE {
                return Err(format!("{url} sent a line longer than {MAX_LINE} bytes"));
            }
        }
        Ok(())
    }

    pub(crate) async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<T, String> {
        self.call_with(method, path, None::<&()>).await
    }

    pub(crate) async fn call_json<T: serde::de::DeserializeOwned, B: serde::Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &B,
    ) -> Result<T, String> {
        self.call_with(method, path, Some(body)).await
    }

    async fn call_with<T: serde::de::DeserializeOwned, B: serde::Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, String> {
        self.send(path, |url| {
            let req = self
                .http
                .request(method.clone(), url)
                .bearer_auth(&self.token);
            match body {
                Some(b) => req.json(b),
                None => req,
            }
        })
        .await
    }

    /// A call whose body is raw bytes (a secret's value): never logged,
    /// never part of an error.
    pub(crate) async fn call_bytes<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T, String> {
        self.send(path, |url| {
            self.http
                .request(method.clone(), url)
                .bearer_auth(&self.token)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(body.clone())
        })
        .await
    }

    /// Find the controller to talk to (the leader, when several share a
    /// store) for a caller that makes its own requests.
    pub(crate) async fn locate(&self) -> Result<&str, String> {
        if self.bases.len() > 1 {
            self.exchange("/v1/openapi.json", |url| self.http.get(url))
                .await?;
        }
        Ok(self.base())
    }

    /// The controller in use.
    pub(crate) fn base(&self) -> &str {
        let at = self.at.load(std::sync::atomic::Ordering::Relaxed);
        self.bases.get(at).map_or("", String::as_str)
    }

    /// Send the request `build` makes for `path` on the controller in use;
    /// with several controllers, move to the leader a follower names, or
    /// to the next one when one cannot be reached, trying each once.
    async fn exchange(
        &self,
        path: &str,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<(reqwest::Response, String), String> {
        use std::sync::atomic::Ordering::Relaxed;
        // Long enough for a leader to be elected after another's death.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let several = self.bases.len() > 1;
        loop {
            let url = format!("{}{path}", self.base());
            let last = !several || std::time::Instant::now() >= deadline;
            match build(&url).send().await {
                Ok(r) if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE && !last => {
                    let named = r
                        .headers()
                        .get(crate::controller::standby::LEADER_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|l| self.bases.iter().position(|b| b == l.trim_end_matches('/')));
                    let at = self.at.load(Relaxed);
                    match named {
                        Some(i) if i != at => self.at.store(i, Relaxed),
                        // The leader itself, still opening the state; or
                        // no leader named: a moment, then again.
                        Some(_) => tokio::time::sleep(Duration::from_millis(300)).await,
                        None => {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            self.at.store((at + 1) % self.bases.len(), Relaxed);
                        }
                    }
                }
                Ok(r) => return Ok((r, url)),
                Err(e) if e.is_connect() && !last => {
                    self.at
                        .store((self.at.load(Relaxed) + 1) % self.bases.len(), Relaxed);
                }
                Err(e) => return Err(crate::tls::errors::reaching(&e, self.base(), &url)),
            }
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<T, String> {
        let (r, url) = self.exchange(path, build).await?;
        let status = r.status();
        let body = r.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<crate::wire::ApiError>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(format!("the controller answered {status}: {msg}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("unexpected reply from {url}: {e}"))
    }
}

/// A query parameter's value, percent-encoded (RFC 3986 unreserved bytes
/// and `/` kept).
fn query_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `reconcile plan --controller URL`: the plan the controller would apply
/// next. Exit codes as for a local plan.
pub(crate) fn plan(remote: &RemoteArgs, format: Format, detail: bool, detailed: bool) -> ExitCode {
    let client = match Client::new(remote) {
        Ok(c) => c,
        Err(c) => return c,
    };
    let p = match block_on(client.call::<Plan>(reqwest::Method::GET, "/v1/plan")) {
        Ok(p) => p,
        Err(e) => return failure(e),
    };
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&p).unwrap_or_default()),
        Format::Text => print!(
            "{}",
            render::text(
                &p,
                render::Style {
                    colour: super::diagnostics::colour(std::io::stdout().is_terminal()),
                    detail,
                }
            )
        ),
    }
    if !p.errors.is_empty() {
        ExitCode::from(EXIT_FAILURE)
    } else if detailed && p.has_changes() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// Call `/v1/services/CLUSTER/NAME/VERB` for a service named `NAME` or
/// `CLUSTER/NAME` (a bare name is looked up in the controller's status).
pub(crate) fn service_call<T: serde::de::DeserializeOwned>(
    remote: &RemoteArgs,
    method: reqwest::Method,
    service: &str,
    verb: &str,
    body: Option<crate::wire::RollbackRequest>,
) -> Result<T, ExitCode> {
    let client = Client::new(remote)?;
    block_on(async {
        let key = match service.split_once('/') {
            Some(_) => service.to_string(),
            None => {
                let s: StatusReport = client.call(reqwest::Method::GET, "/v1/status").await?;
                let found: Vec<&String> = s
                    .services
                    .iter()
                    .filter(|v| v.name == service)
                    .map(|v| &v.service)
                    .collect();
                match found.as_slice() {
                    [one] => (*one).clone(),
                    [] => return Err(format!("the controller has no service `{service}`")),
                    many => {
                        return Err(format!(
                            "`{service}` is in several clusters; name one of: {}",
                            many.iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    }
                }
            }
        };
        let path = format!("/v1/services/{key}/{verb}");
        match body {
            Some(b) => client.call_json(method, &path, &b).await,
            None => client.call(method, &path).await,
        }
    })
    .map_err(failure)
}

/// `apply --controller`: ask for a reconcile and wait for it, and for the
/// rollouts it starts, to end. Exits non-zero naming each deployment that
/// failed or was rolled back, or the reconcile's error.
pub(crate) fn apply(remote: &RemoteArgs, wait: Option<Duration>) -> ExitCode {
    let client = match Client::new(remote) {
        Ok(c) => c,
        Err(c) => return c,
    };
    let Some(limit) = wait else {
        return match block_on(client.call::<serde_json::Value>(reqwest::Method::POST, "/v1/sync")) {
            Ok(_) => {
                println!(
                    "Reconcile requested; follow it with `reconcile status --controller URL`."
                );
                ExitCode::SUCCESS
            }
            Err(e) => failure(e),
        };
    };
    let result = block_on(async {
        let before: StatusReport = client.call(reqwest::Method::GET, "/v1/status").await?;
        let newest_before: BTreeMap<String, u32> = before
            .services
            .iter()
            .filter_map(|v| Some((v.service.clone(), v.deployments.first()?.id)))
            .collect();
        let sync: crate::wire::SyncReply = client.call(reqwest::Method::POST, "/v1/sync").await?;
        eprintln!("Reconcile requested; waiting for it and for the rollouts it starts.");
        let started = std::time::Instant::now();
        loop {
            let s: StatusReport = client.call(reqwest::Method::GET, "/v1/status").await?;
            let rolling: Vec<&String> = s
                .services
                .iter()
                .filter(|v| {
                    v.deployments
                        .first()
                        .is_some_and(|d| d.rollout_state == Rollout::InProgress)
                })
                .map(|v| &v.service)
                .collect();
            let c = s.controller.clone().unwrap_or_default();
            // Done when the pass covering the request has ended and no
            // rollout is left, or at once when that pass failed (a rollout
            // it left IN_PROGRESS would wait for a later pass).
            if c.passes >= sync.until_pass && (rolling.is_empty() || c.last_error.is_some()) {
                return Ok((s, newest_before));
            }
            if started.elapsed() >= limit {
                return Err(format!(
                    "the controller has not finished within {}s{}; `reconcile status --controller URL` shows where it stands",
                    limit.as_secs(),
                    if rolling.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (rolling out: {})",
                            rolling.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
                        )
                    }
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let (s, before) = match result {
        Ok(x) => x,
        Err(e) => return failure(e),
    };
    // Deployments that ended during the wait, per service, oldest first.
    let mut failed = Vec::new();
    for v in &s.services {
        let key = &v.service;
        let since = before.get(key).copied().unwrap_or(0);
        let new: Vec<&crate::deployment::DeploymentView> = v
            .deployments
            .iter()
            .rev()
            .filter(|d| d.id > since)
            .collect();
        for d in &new {
            if d.rollout_state == Rollout::Failed {
                let restored = new
                    .iter()
                    .find(|r| r.rollback_of == Some(d.id))
                    .map(|r| format!("; rolled back to revision {}", r.revision))
                    .unwrap_or_default();
                failed.push(format!(
                    "Service/{key}: deployment {} (revision {}) failed: {}{restored}",
                    d.id, d.revision, d.reason
                ));
            }
        }
    }
    let c = s.controller.unwrap_or_default();
    if let Some(e) = &c.last_error {
        failed.push(e.clone());
    }
    if failed.is_empty() {
        println!(
            "Apply complete: the controller converged (pass {}).",
            c.passes
        );
        return ExitCode::SUCCESS;
    }
    for f in &failed {
        eprintln!("error: {f}");
    }
    ExitCode::from(EXIT_FAILURE)
}

/// `GET /v1/status`: the controller's status document.
pub(crate) fn status(remote: &RemoteArgs) -> Result<StatusReport, ExitCode> {
    let client = Client::new(remote)?;
    block_on(client.call::<StatusReport>(reqwest::Method::GET, "/v1/status")).map_err(failure)
}
