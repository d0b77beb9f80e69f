//! TLS for the fleet API: rustls with the ring provider. The controller
//! serves HTTPS with a certificate it is given, or else with one of its
//! own PKI ([`pki`]); agents and the CLI trust the CA pinned with
//! `--ca-hash` ([`pin`]), the CA given with `--ca-cert`, or the system's
//! roots, and say in plain words why a connection failed ([`errors`]).

pub mod errors;
pub mod pin;
pub mod pki;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use errors::explain;

/// Make ring the process-wide provider (once; later calls are no-ops).
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn certificates(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{flag} `{}`: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{flag} `{}`: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} `{}`: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

/// The controller's TLS configuration from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = certificates(cert, "--tls-cert")?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key `{}`: {e}", key.display()))?;
    server_config_from(chain, key).map_err(|e| format!("--tls-cert/--tls-key: {e}"))
}

/// The controller's TLS configuration: `chain` is sent whole (the
/// certificate, then its CA: a pinning client finds the CA in it).
pub fn server_config_from(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    install_provider();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Whom an agent or the CLI trusts with its token.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Only the CA whose key has this pin (`sha256:HEX`).
    pub ca_hash: Option<String>,
    /// Only this CA (PEM).
    pub ca_cert: Option<PathBuf>,
    /// Send the token over plain HTTP to a non-loopback address too.
    pub plain_http: bool,
}

/// Whether `url` may carry a token: https://, or http:// to this host
/// (127.0.0.0/8, ::1, localhost), or any http:// with --plain-http.
pub fn check_url(url: &str, plain_http: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("--controller `{url}`: {e}; expected an http:// or https:// URL"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let host = parsed.host_str().unwrap_or_default();
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback || plain_http {
                Ok(())
            } else {
                Err(format!(
                    "--controller `{url}`: plain http:// to another host would send the token in clear; use https:// (with --ca-hash or --ca-cert), or give --plain-http to send it anyway"
                ))
            }
        }
        other => Err(format!(
            "--controller `{url}`: `{other}:` is not http:// or https://"
        )),
    }
}

/// [`check_url`] for each URL of a comma-separated list (controllers
/// sharing a store).
pub fn check_url_list(urls: &str, plain_http: bool) -> Result<(), String> {
    urls.split(',')
        .try_for_each(|u| check_url(u.trim(), plain_http))
}

/// An HTTP client for the controller at `url`, trusting what `trust`
/// names; refuses a `url` that would carry the token in clear.
pub fn client(
    url: &str,
    trust: &Trust,
    timeout: std::time::Duration,
) -> Result<reqwest::Client, String> {
    client_with(url, trust, |b| b.timeout(timeout))
}

/// A client for replies that stream for as long as the reader wants
/// (`events --follow`, `logs --follow`): no deadline for the whole reply,
/// but one for connecting and one for the silence between two reads,
/// which the controller's keep-alive lines break.
pub fn streaming_client(
    url: &str,
    trust: &Trust,
    silence: std::time::Duration,
) -> Result<reqwest::Client, String> {
    client_with(url, trust, |b| {
        b.connect_timeout(std::time::Duration::from_secs(10))
            .read_timeout(silence)
    })
}

fn client_with(
    url: &str,
    trust: &Trust,
    limits: impl Fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
) -> Result<reqwest::Client, String> {
    check_url_list(url, trust.plain_http)?;
    install_provider();
    let build = |config: rustls::ClientConfig| {
        limits(reqwest::Client::builder())
            .tls_backend_preconfigured(config)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))
    };
    match (&trust.ca_hash, &trust.ca_cert) {
        (Some(_), Some(_)) => {
            Err("--ca-hash and --ca-cert both name the CA to trust: give one".into())
        }
        (Some(hash), None) => {
            let verifier = pin::PinnedCa::new(
                pin::parse_pin(hash)?,
                Arc::new(rustls::crypto::ring::default_provider()),
            );
            build(
                rustls::ClientConfig::builder()
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
                    .with_no_client_auth(),
            )
        }
        (None, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certificates(ca, "--ca-cert")? {
                roots
                    .add(c)
                    .map_err(|e| format!("--ca-cert `{}`: {e}", ca.display()))?;
            }
            build(
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        }
        // The system's roots; where there are none (a minimal container),
        // plain HTTP still works and HTTPS needs --ca-hash or --ca-cert.
        (None, None) => limits(reqwest::Client::builder()).build().or_else(|_| {
            build(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::check_url;

    #[test]
    fn plain_http_is_refused_off_this_host_unless_asked_for() {
        for ok in [
            "https://10.0.0.1:7700",
            "http://127.0.0.1:7700",
            "http://127.1.2.3:7700",
            "http://[::1]:7700",
            "http://localhost:7700",
            "http://LOCALHOST:7700/",
        ] {
            check_url(ok, false).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for refused in [
            "http://10.0.0.1:7700",
            "http://controller:7700",
            "http://[fe80::1]:7700",
        ] {
            let e = check_url(refused, false).unwrap_err();
            assert!(e.contains("--plain-http") && e.contains("in clear"), "{e}");
            check_url(refused, true).unwrap();
        }
        let e = check_url("ftp://10.0.0.1", true).unwrap_err();
        assert!(e.contains("--controller"), "{e}");
        assert!(check_url("10.0.0.1:7700", true).is_err());
    }
}
