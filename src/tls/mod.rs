//! TLS for the fleet API: rustls with the ring provider. The controller
//! serves HTTPS when given a certificate and key; agents and the CLI trust
//! the CA given with `--ca-cert` (else the system's roots).

pub mod errors;
pub mod pin;
pub mod pki;

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
    install_provider();
    let chain = certificates(cert, "--tls-cert")?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key `{}`: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An HTTP client for the controller's API; with `ca`, only that CA is
/// trusted.
pub fn client(ca: Option<&Path>, timeout: std::time::Duration) -> Result<reqwest::Client, String> {
    install_provider();
    let with_roots = |roots: rustls::RootCertStore| {
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        reqwest::Client::builder()
            .timeout(timeout)
            .tls_backend_preconfigured(config)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))
    };
    match ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certificates(ca, "--ca-cert")? {
                roots
                    .add(c)
                    .map_err(|e| format!("--ca-cert `{}`: {e}", ca.display()))?;
            }
            with_roots(roots)
        }
        // The system's roots; where there are none (a minimal container),
        // plain HTTP still works and HTTPS needs --ca-cert.
        None => reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .or_else(|_| with_roots(rustls::RootCertStore::empty())),
    }
}
