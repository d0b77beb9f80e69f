//! The controller's own PKI, made on first start when it is given no
//! certificate: a CA (ECDSA P-256, ten years) and a server certificate it
//! signs (one year), in `<data-dir>/tls/`. The server certificate is made
//! again on start when it would not verify in 30 days, or does not name
//! every name asked for; the CA is kept, so its hash (what agents pin)
//! stays the same across restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::pin;

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server.key";

const DAY: Duration = Duration::from_secs(86_400);
/// A server certificate expiring sooner than this is made again.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);

/// What the controller serves with: its certificate then the CA's, the
/// certificate's key, and the CA's pin.
pub struct Pki {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub ca_hash: String,
}

fn err(path: &Path, e: impl std::fmt::Display) -> String {
    format!("`{}`: {e}", path.display())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    crate::fsutil::write_private(path, bytes).map_err(|e| err(path, e))
}

/// The CA's parameters. Rebuilt (not read back) to sign with a kept CA
/// key: the same subject and key identifier make the same issuer.
fn ca_params(validity: Option<(SystemTime, SystemTime)>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, "reconcile controller CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    if let Some((from, to)) = validity {
        p.not_before = from.into();
        p.not_after = to.into();
    }
    p
}

/// The CA: read from `dir`, else made and written there.
fn ca(dir: &Path) -> Result<(CertificateDer<'static>, KeyPair), String> {
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    if cert_path.exists() && key_path.exists() {
        let key_pem = std::fs::read_to_string(&key_path).map_err(|e| err(&key_path, e))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| err(&key_path, e))?;
        let cert = CertificateDer::from_pem_file(&cert_path).map_err(|e| err(&cert_path, e))?;
        return Ok((cert, key));
    }
    let key = KeyPair::generate().map_err(|e| format!("making the CA key: {e}"))?;
    // An hour back, for clocks a little behind this one.
    let now = SystemTime::now();
    let params = ca_params(Some((now - Duration::from_secs(3600), now + 3650 * DAY)));
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("making the CA certificate: {e}"))?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    write_private(&cert_path, cert.pem().as_bytes())?;
    tracing::info!("TLS: made a CA in {}", dir.display());
    Ok((cert.der().clone(), key))
}

/// Whether `cert`, issued by `ca`, will still verify for every name in
/// `names` in 30 days.
fn covers(cert: &CertificateDer<'_>, ca: &CertificateDer<'static>, names: &[String]) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    if roots.add(ca.clone()).is_err() {
        return false;
    }
    let Ok(verifier) = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build() else {
        return false;
    };
    let then = UnixTime::since_unix_epoch(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            + RENEW_BEFORE,
    );
    names.iter().all(|n| {
        ServerName::try_from(n.as_str()).is_ok_and(|name| {
            verifier
                .verify_server_cert(cert, &[], &name, &[], then)
                .is_ok()
        })
    })
}

/// The server certificate and key in `dir`, if both read.
fn server(dir: &Path) -> Option<(CertificateDer<'static>, PrivateKeyDer<'static>)> {
    let cert = CertificateDer::from_pem_file(dir.join(SERVER_CERT)).ok()?;
    let key = PrivateKeyDer::from_pem_file(dir.join(SERVER_KEY)).ok()?;
    Some((cert, key))
}

/// Make the PKI in `dir` (or reuse it) for a server named `names` (DNS
/// names and IP addresses).
pub fn ensure(dir: &Path, names: &[String]) -> Result<Pki, String> {
    // Tightened also when it existed: the keys are in it.
    crate::fsutil::private_dir(dir).map_err(|e| err(dir, e))?;
    let (ca_cert, ca_key) = ca(dir)?;
    let ca_hash = pin::pin_of(&ca_cert)
        .map(|p| pin::format_pin(&p))
        .ok_or_else(|| err(&dir.join(CA_CERT), "not an X.509 certificate"))?;
    let (cert, key) = match server(dir) {
        Some((cert, key)) if covers(&cert, &ca_cert, names) => (cert, key),
        _ => {
            let (cert, key) = issue(dir, &ca_key, names)?;
            if !covers(&cert, &ca_cert, names) {
                return Err(format!(
                    "the server certificate made in {} does not verify with its CA ({CA_CERT}); remove the directory to start a new CA",
                    dir.display()
                ));
            }
            (cert, key)
        }
    };
    for f in [CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY] {
        let p = dir.join(f);
        crate::fsutil::private_file(&p).map_err(|e| err(&p, e))?;
    }
    Ok(Pki {
        chain: vec![cert, ca_cert],
        key,
        ca_hash,
    })
}

/// A server certificate for `names`, signed with the CA key, written to
/// `dir`.
fn issue(
    dir: &Path,
    ca_key: &KeyPair,
    names: &[String],
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), String> {
    let issuer = Issuer::new(ca_params(None), ca_key);
    let key = KeyPair::generate().map_err(|e| format!("making the server key: {e}"))?;
    let mut params = CertificateParams::new(names.to_vec())
        .map_err(|e| format!("server certificate names {names:?}: {e}"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "reconcile controller");
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + 365 * DAY).into();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| format!("signing the server certificate: {e}"))?;
    write_private(&dir.join(SERVER_KEY), key.serialize_pem().as_bytes())?;
    write_private(&dir.join(SERVER_CERT), cert.pem().as_bytes())?;
    tracing::info!(
        "TLS: made a server certificate for {} (valid for a year)",
        names.join(", ")
    );
    let key =
        PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| format!("the server key: {e}"))?;
    Ok((cert.der().clone(), key))
}

/// This host's addresses besides loopback, for a controller listening on
/// all of them: IPv4 from `/proc/net/fib_trie`, global IPv6 from
/// `/proc/net/if_inet6` (none where they cannot be read).
pub fn host_addresses() -> Vec<std::net::IpAddr> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mut v = local_v4(&read("/proc/net/fib_trie"));
    v.extend(global_v6(&read("/proc/net/if_inet6")));
    v.retain(|ip| !ip.is_loopback());
    v.dedup();
    v
}

/// The addresses of `fib_trie` that are this host's: `|-- ADDR` followed
/// by `/32 host LOCAL`.
fn local_v4(fib_trie: &str) -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    let mut last: Option<std::net::Ipv4Addr> = None;
    for line in fib_trie.lines().map(str::trim) {
        if let Some(a) = line.strip_prefix("|-- ") {
            last = a.parse().ok();
        } else if line.starts_with("/32 host LOCAL") {
            if let Some(ip) = last.take() {
                if !out.contains(&ip.into()) {
                    out.push(ip.into());
                }
            }
        }
    }
    out
}

/// The global-scope addresses of `if_inet6` (32 hex digits, then the
/// interface index, prefix length and scope).
fn global_v6(if_inet6: &str) -> Vec<std::net::IpAddr> {
    if_inet6
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 4 || f[3] != "00" || f[0].len() != 32 {
                return None;
            }
            u128::from_str_radix(f[0], 16)
                .ok()
                .map(|n| std::net::Ipv6Addr::from(n).into())
        })
        .collect()
}

/// Where a data directory keeps its PKI.
pub fn dir_of(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

/// The pin of the CA in a data directory's PKI.
pub fn ca_hash(data_dir: &Path) -> Result<String, String> {
    let path = dir_of(data_dir).join(CA_CERT);
    let cert = CertificateDer::from_pem_file(&path).map_err(|e| err(&path, e))?;
    pin::pin_of(&cert)
        .map(|p| pin::format_pin(&p))
        .ok_or_else(|| err(&path, "not an X.509 certificate"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_addresses_are_read_from_proc() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 4\n     |-- 0.0.0.0\n        /0 universe UNICAST\n           |-- 127.0.0.1\n              /32 host LOCAL\n           |-- 172.17.0.0\n              /16 link UNICAST\n           |-- 172.17.0.1\n              /32 host LOCAL\n        |-- 172.17.255.255\n           /32 link BROADCAST\nLocal:\n           |-- 172.17.0.1\n              /32 host LOCAL\n";
        assert_eq!(
            local_v4(trie),
            vec![
                std::net::IpAddr::from([127, 0, 0, 1]),
                std::net::IpAddr::from([172, 17, 0, 1])
            ]
        );
        let inet6 = "fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n00000000000000000000000000000001 01 80 10 80       lo\nfd000000000000000000000000000002 04 40 00 82     eth0\n";
        assert_eq!(
            global_v6(inet6),
            vec!["fd00::2".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    fn names() -> Vec<String> {
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
    }

    fn mode(p: &Path) -> u32 {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o777
    }

    #[test]
    fn a_second_start_keeps_the_ca_and_the_certificate() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("tls");
        let first = ensure(&dir, &names()).unwrap();
        assert_eq!(first.chain.len(), 2);
        assert_eq!(mode(&dir), 0o700);
        for f in [CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        let again = ensure(&dir, &names()).unwrap();
        assert_eq!(again.ca_hash, first.ca_hash);
        assert_eq!(again.chain, first.chain);
        assert_eq!(ca_hash(d.path()).unwrap(), first.ca_hash);
    }

    #[test]
    fn a_new_name_makes_a_new_certificate_from_the_same_ca() {
        let d = tempfile::tempdir().unwrap();
        let first = ensure(d.path(), &names()).unwrap();
        let mut more = names();
        more.push("controller.example".into());
        let second = ensure(d.path(), &more).unwrap();
        assert_eq!(second.ca_hash, first.ca_hash);
        assert_eq!(second.chain[1], first.chain[1]);
        assert_ne!(second.chain[0], first.chain[0]);
        assert!(covers(&second.chain[0], &second.chain[1], &more));
        assert!(!covers(&first.chain[0], &first.chain[1], &more));
    }

    #[test]
    fn a_certificate_expiring_within_30_days_is_made_again() {
        let d = tempfile::tempdir().unwrap();
        let first = ensure(d.path(), &names()).unwrap();
        // Replace the server certificate with one that ends in 10 days.
        let ca_pem = std::fs::read_to_string(d.path().join(CA_KEY)).unwrap();
        let ca_key = KeyPair::from_pem(&ca_pem).unwrap();
        let issuer = Issuer::new(ca_params(None), &ca_key);
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names()).unwrap();
        p.not_after = (SystemTime::now() + 10 * DAY).into();
        let short = p.signed_by(&key, &issuer).unwrap();
        std::fs::write(d.path().join(SERVER_CERT), short.pem()).unwrap();
        std::fs::write(d.path().join(SERVER_KEY), key.serialize_pem()).unwrap();
        assert!(!covers(short.der(), &first.chain[1], &names()));
        let second = ensure(d.path(), &names()).unwrap();
        assert_ne!(&second.chain[0], short.der());
        assert_eq!(second.ca_hash, first.ca_hash);
    }
}
