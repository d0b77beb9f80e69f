//! A real etcd cluster (Debian's etcd-server) of one or more members on
//! loopback, for the store tests: `#[path = "common/etcd.rs"] mod etcd;`.
//! Members can be killed, paused and started again; dropping the cluster
//! kills every member and removes their data.
#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why etcd cannot be started here, if it cannot.
pub fn unavailable() -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = |n: &str| std::env::split_paths(&path).any(|d| d.join(n).is_file());
    (!found("etcd") || !found("etcdctl"))
        .then(|| "etcd or etcdctl not found (Debian's etcd-server and etcd-client)".to_string())
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Member {
    pub name: String,
    pub client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

pub struct Etcd {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    initial: String,
    /// Clients reach the members over TLS with these files (CA, client
    /// certificate, client key), which members require.
    pub tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

/// A CA, a certificate for 127.0.0.1 and a client certificate, in `dir`:
/// (ca.pem, server.pem, server.key, client.pem, client.key).
pub fn pki(dir: &Path) -> [PathBuf; 5] {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "etcd test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let paths = [
        "ca.pem",
        "server.pem",
        "server.key",
        "client.pem",
        "client.key",
    ]
    .map(|f| dir.join(f));
    std::fs::write(&paths[0], ca.pem()).unwrap();
    for (name, cert, key) in [("127.0.0.1", 1, 2), ("client", 3, 4)] {
        let k = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let c = params.signed_by(&k, &issuer).unwrap();
        std::fs::write(&paths[cert], c.pem()).unwrap();
        std::fs::write(&paths[key], k.serialize_pem()).unwrap();
    }
    paths
}

impl Etcd {
    /// Start `n` members and wait until the cluster answers.
    pub fn start(n: usize) -> Etcd {
        Etcd::start_with(n, false)
    }

    /// One member whose clients must come over TLS with a certificate of
    /// its CA.
    pub fn start_tls() -> Etcd {
        Etcd::start_with(1, true)
    }

    fn start_with(n: usize, tls: bool) -> Etcd {
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let dir = tempfile::tempdir().unwrap();
        let tls = tls.then(|| {
            let [ca, _, _, cert, key] = pki(&dir.path().join("pki"));
            (ca, cert, key)
        });
        let mut e = Etcd {
            dir,
            members,
            initial,
            tls,
        };
        for i in 0..n {
            e.spawn(i);
        }
        e.wait_healthy(Duration::from_secs(30));
        e
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let data = self.dir.path().join(&m.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", m.name)))
            .unwrap();
        let client = format!("{}://127.0.0.1:{}", self.scheme(), m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let mut cmd = Command::new("etcd");
        if self.tls.is_some() {
            let pki = self.dir.path().join("pki");
            cmd.arg("--cert-file")
                .arg(pki.join("server.pem"))
                .arg("--key-file")
                .arg(pki.join("server.key"))
                .arg("--trusted-ca-file")
                .arg(pki.join("ca.pem"))
                .arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-token", "reconcile-test"])
            .args(["--initial-cluster-state", "new"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        self.members[i].child = Some(child);
    }

    /// `etcd://` address of every member.
    pub fn url(&self) -> String {
        format!(
            "etcd://{}",
            self.members
                .iter()
                .map(|m| format!("127.0.0.1:{}", m.client_port))
                .collect::<Vec<_>>()
                .join(",")
        )
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// etcdctl's flags for the client certificate, with TLS.
    fn tls_args(&self) -> Vec<std::ffi::OsString> {
        match &self.tls {
            Some((ca, cert, key)) => vec![
                "--cacert".into(),
                ca.into(),
                "--cert".into(),
                cert.into(),
                "--key".into(),
                key.into(),
            ],
            None => Vec::new(),
        }
    }

    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `etcdctl ARGS` against the cluster; its standard output.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoints()])
            .args(self.tls_args())
            .args(args)
            .output()
            .expect("etcdctl runs");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `etcdctl ARGS`' standard output, or None when it fails.
    pub fn ctl_maybe(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoints(), "--command-timeout=3s"])
            .args(self.tls_args())
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn wait_healthy(&self, within: Duration) {
        let end = Instant::now() + within;
        loop {
            let up = self
                .members
                .iter()
                .filter(|m| m.child.is_some())
                .all(|m| TcpStream::connect(("127.0.0.1", m.client_port)).is_ok());
            let healthy = up
                && Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .args(["--endpoints", &self.endpoints(), "--command-timeout=2s"])
                    .args(self.tls_args())
                    .args(["put", "/health-check", "ok"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
            if healthy {
                return;
            }
            assert!(
                Instant::now() < end,
                "etcd did not become healthy; logs in {}",
                self.dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start member `i` again on its data.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    /// The cluster's current revision.
    pub fn revision(&self) -> i64 {
        let out = self.ctl(&[
            "get",
            "/",
            "--prefix",
            "--keys-only",
            "--limit=1",
            "-w",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["header"]["revision"].as_i64().unwrap()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
