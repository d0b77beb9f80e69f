//! The engine named by the environment as the docker CLI reads it:
//! `DOCKER_HOST=tcp://...` plain and with `DOCKER_TLS_VERIFY` and
//! `DOCKER_CERT_PATH`, and clear errors for what cannot work.
//!
//! The engine is the local daemon, reached through two proxies this test
//! runs in front of its unix socket: one plain TCP, one TLS that demands a
//! client certificate from the test's CA. Each counts what it forwarded,
//! so the test knows the commands went through it.

#[path = "common/docker.rs"]
mod docker;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use docker::{Source, SERIAL};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const SOCKET: &str = "/var/run/docker.sock";

fn manifests() -> String {
    "apiVersion: reconcile/v1alpha1
kind: Cluster
metadata: {name: t}
spec: {}
---
apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {name: app}
spec:
  memory: 32
  containerDefinitions:
    - name: main
      image: busybox:stable
      command: [sleep, \"3600\"]
      stopTimeout: 1
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {name: app}
spec: {cluster: t, taskDefinition: app, desiredCount: 1}
"
    .to_string()
}

/// A CA whose certificate is `dir/ca.pem`, as DOCKER_CERT_PATH holds it;
/// returned to issue certificates with.
fn ca_in(dir: &Path) -> Issuer<'static, KeyPair> {
    std::fs::create_dir_all(dir).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "docker test CA");
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
    Issuer::new(params, key)
}

/// A certificate `issuer` signed for `names` (for a client: no name, the
/// clientAuth usage), and its key, both PEM.
fn issue(issuer: &Issuer<'static, KeyPair>, names: Vec<String>, client: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(names).unwrap();
    if client {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Forwards every connection to the daemon's socket; with `tls`, only
/// after a handshake that presented a client certificate `tls` trusts.
/// Counts the connections it forwarded.
async fn proxy(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    forwarded: Arc<AtomicUsize>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let tls = tls.clone();
        let forwarded = forwarded.clone();
        tokio::spawn(async move {
            let Ok(mut engine) = tokio::net::UnixStream::connect(SOCKET).await else {
                return;
            };
            match tls {
                Some(acceptor) => {
                    let Ok(mut stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    forwarded.fetch_add(1, Ordering::SeqCst);
                    let _ = tokio::io::copy_bidirectional(&mut stream, &mut engine).await;
                }
                None => {
                    let mut tcp = tcp;
                    forwarded.fetch_add(1, Ordering::SeqCst);
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut engine).await;
                }
            }
        });
    }
}

fn acceptor(server_dir: &Path, ca: &Issuer<'static, KeyPair>) -> tokio_rustls::TlsAcceptor {
    let (cert, key) = issue(ca, vec!["127.0.0.1".into()], false);
    let ca_pem = std::fs::read(server_dir.join("ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&ca_pem).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[test]
fn tcp_and_tls_docker_hosts_work_and_mistakes_are_named() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Source::new(&[("app.yaml", &manifests())]);
    let src = s.path().display().to_string();
    let tmp = tempfile::tempdir().unwrap();

    // The client's DOCKER_CERT_PATH: the CA that signed the engine's
    // certificate and a client certificate the engine trusts.
    let certs = tmp.path().join("certs");
    let ca = ca_in(&certs);
    let (cert, key) = issue(&ca, Vec::new(), true);
    std::fs::write(certs.join("cert.pem"), cert).unwrap();
    std::fs::write(certs.join("key.pem"), key).unwrap();
    // A client certificate from a CA the engine does not trust.
    let strangers = tmp.path().join("strangers");
    let other = ca_in(&strangers);
    let (cert, key) = issue(&other, Vec::new(), true);
    std::fs::write(strangers.join("cert.pem"), cert).unwrap();
    std::fs::write(strangers.join("key.pem"), key).unwrap();
    std::fs::copy(certs.join("ca.pem"), strangers.join("ca.pem")).unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let plain_count = Arc::new(AtomicUsize::new(0));
    let tls_count = Arc::new(AtomicUsize::new(0));
    let (plain, tls) = rt.block_on(async {
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        (plain, tls)
    });
    let plain_host = format!("tcp://{}", plain.local_addr().unwrap());
    let tls_host = format!("tcp://{}", tls.local_addr().unwrap());
    rt.spawn(proxy(plain, None, plain_count.clone()));
    rt.spawn(proxy(tls, Some(acceptor(&certs, &ca)), tls_count.clone()));

    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = s.cmd(args);
        c.env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    };
    let certs_path = certs.display().to_string();
    let over_tls = [
        ("DOCKER_HOST", tls_host.as_str()),
        ("DOCKER_TLS_VERIFY", "1"),
        ("DOCKER_CERT_PATH", certs_path.as_str()),
    ];

    // Apply over TLS: the task runs on the engine behind the proxy.
    let (code, text) = run(
        &["apply", &src, "--auto-approve", "--timeout", "90"],
        &over_tls,
    );
    assert_eq!(code, 0, "apply over TLS:\n{text}");
    assert!(
        tls_count.load(Ordering::SeqCst) > 0,
        "apply went through the TLS proxy"
    );
    let running: Vec<_> = s
        .containers()
        .into_iter()
        .filter(|(_, state, _)| state == "running")
        .collect();
    assert_eq!(running.len(), 1, "one task's container runs: {running:?}");

    // Plan over TLS sees what runs; status over plain TCP too.
    let (code, text) = run(&["plan", &src, "--detailed-exitcode"], &over_tls);
    assert_eq!(code, 0, "no changes after apply:\n{text}");
    let (code, text) = run(
        &["status", &src, "--format", "json"],
        &[("DOCKER_HOST", plain_host.as_str())],
    );
    assert_eq!(code, 0, "status over tcp://:\n{text}");
    assert!(
        plain_count.load(Ordering::SeqCst) > 0,
        "status went through the plain proxy"
    );
    let st: serde_json::Value = serde_json::from_str(&text).unwrap();
    let tasks = st["services"][0]["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{st}");
    assert_eq!(tasks[0]["lastStatus"], "RUNNING", "{st}");

    // Mistakes fail before anything is planned, naming the variable.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let empty = empty.display().to_string();
    let (code, text) = run(
        &["plan", &src],
        &[
            ("DOCKER_HOST", tls_host.as_str()),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", empty.as_str()),
        ],
    );
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("key.pem") && text.contains("DOCKER_CERT_PATH"),
        "a missing client key is named: {text}"
    );
    let (code, text) = run(&["plan", &src], &[("DOCKER_HOST", "fd://")]);
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("DOCKER_HOST") && text.contains("fd://"),
        "{text}"
    );
    // A client the engine does not trust is refused by it: the error says
    // which engine could not be reached.
    let before = tls_count.load(Ordering::SeqCst);
    let strangers = strangers.display().to_string();
    let (code, text) = run(
        &["plan", &src],
        &[
            ("DOCKER_HOST", tls_host.as_str()),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", strangers.as_str()),
        ],
    );
    assert_ne!(code, 0, "{text}");
    assert!(text.contains(&format!("{} (TLS)", tls_host)), "{text}");
    assert_eq!(
        tls_count.load(Ordering::SeqCst),
        before,
        "nothing forwarded for an untrusted client"
    );

    // Destroy over plain TCP leaves nothing.
    let (code, text) = run(
        &["destroy", &src, "--auto-approve"],
        &[("DOCKER_HOST", plain_host.as_str())],
    );
    assert_eq!(code, 0, "destroy over tcp://:\n{text}");
    assert!(s.containers().is_empty(), "{:?}", s.containers());
}
