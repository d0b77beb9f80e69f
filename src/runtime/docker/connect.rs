//! Which engine to talk to, read from the environment as the docker CLI
//! reads it: `DOCKER_HOST` (`unix://`, `tcp://`, `http(s)://`, `ssh://`),
//! `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`.
//!
//! Parsing is pure (`Endpoint::from_env`), so every form and every mistake
//! is unit-tested; `Endpoint::connect` is the one place that opens a client.

use std::path::{Path, PathBuf};

use bollard::Docker;

/// Seconds a request to the engine may take (bollard's own default).
const TIMEOUT: u64 = 120;

/// Where the engine is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The engine's unix socket (the default: /var/run/docker.sock).
    Unix(String),
    /// Plain HTTP to `host:port`: what `tcp://` means without TLS.
    Http(String),
    /// HTTPS to `host:port`, the client proving itself with `key.pem` and
    /// `cert.pem` and trusting `ca.pem`, all from `certs`.
    Tls { addr: String, certs: PathBuf },
    /// `docker system dial-stdio` run over the system's `ssh` client.
    Ssh(String),
}

/// Plain TCP and TLS ports the docker CLI assumes when none is given.
const HTTP_PORT: u16 = 2375;
const TLS_PORT: u16 = 2376;

impl Endpoint {
    /// The endpoint the environment names. `home` is where `.docker/`
    /// (the default certificate directory) lives.
    pub fn from_env(
        docker_host: Option<&str>,
        tls_verify: Option<&str>,
        cert_path: Option<&str>,
        home: Option<&Path>,
    ) -> Result<Endpoint, String> {
        let host = docker_host.map(str::trim).filter(|h| !h.is_empty());
        // The docker CLI treats an empty DOCKER_TLS_VERIFY as unset.
        let verify = tls_verify.is_some_and(|v| !v.is_empty());
        let Some(host) = host else {
            if verify {
                return Err(
                    "DOCKER_TLS_VERIFY is set but DOCKER_HOST is not: TLS needs a \
                            `tcp://HOST:PORT` engine address"
                        .into(),
                );
            }
            return Ok(Endpoint::Unix("/var/run/docker.sock".into()));
        };
        let Some((scheme, rest)) = host.split_once("://") else {
            return Err(format!(
                "DOCKER_HOST `{host}` has no scheme: write `unix:///path/to/docker.sock`, \
                 `tcp://HOST:PORT` or `ssh://USER@HOST`"
            ));
        };
        let tls = |addr: String| -> Result<Endpoint, String> {
            let certs = match cert_path.filter(|p| !p.is_empty()) {
                Some(p) => PathBuf::from(p),
                None => home
                    .map(|h| h.join(".docker"))
                    .ok_or("DOCKER_TLS_VERIFY is set, DOCKER_CERT_PATH is not and there is no home directory to find `.docker/` in")?,
            };
            Ok(Endpoint::Tls { addr, certs })
        };
        match scheme {
            "unix" if rest.is_empty() => Err(format!("DOCKER_HOST `{host}` names no socket path")),
            "unix" => Ok(Endpoint::Unix(host.to_string())),
            "tcp" | "http" | "https" => {
                let authority = rest.split('/').next().unwrap_or_default();
                if authority.is_empty() {
                    return Err(format!("DOCKER_HOST `{host}` names no host"));
                }
                let secure = verify || scheme == "https";
                let addr = with_port(authority, if secure { TLS_PORT } else { HTTP_PORT })
                    .map_err(|e| format!("DOCKER_HOST `{host}`: {e}"))?;
                if secure {
                    tls(addr)
                } else {
                    Ok(Endpoint::Http(addr))
                }
            }
            "ssh" if rest.is_empty() => Err(format!("DOCKER_HOST `{host}` names no host")),
            // The ssh client is given `user@host`: a port in the URL would
            // be read as part of the host name.
            "ssh"
                if rest
                    .trim_end_matches('/')
                    .rsplit_once(':')
                    .is_some_and(|(_, p)| !p.contains(']')) =>
            {
                Err(format!(
                    "DOCKER_HOST `{host}`: a port in an ssh:// address is not supported; \
                     give the port in a `Host` entry of ~/.ssh/config (`Port N`) instead"
                ))
            }
            "ssh" => Ok(Endpoint::Ssh(host.trim_end_matches('/').to_string())),
            other => Err(format!(
                "DOCKER_HOST `{host}`: scheme `{other}://` is not one the docker CLI knows; \
                 use unix://, tcp:// or ssh://"
            )),
        }
    }

    /// The endpoint of this process's environment.
    pub fn from_process_env() -> Result<Endpoint, String> {
        let var = |k: &str| std::env::var(k).ok();
        let home = var("HOME").map(PathBuf::from);
        Endpoint::from_env(
            var("DOCKER_HOST").as_deref(),
            var("DOCKER_TLS_VERIFY").as_deref(),
            var("DOCKER_CERT_PATH").as_deref(),
            home.as_deref(),
        )
    }

    /// A client for the endpoint. Nothing is sent yet: a wrong address shows
    /// at the first request.
    pub fn connect(&self) -> Result<Docker, String> {
        let version = bollard::API_DEFAULT_VERSION;
        match self {
            Endpoint::Unix(socket) => Docker::connect_with_unix(socket, TIMEOUT, version)
                .map_err(|e| format!("Docker socket `{socket}`: {e}")),
            Endpoint::Http(addr) => Docker::connect_with_http(addr, TIMEOUT, version)
                .map_err(|e| format!("Docker at `tcp://{addr}`: {e}")),
            Endpoint::Tls { addr, certs } => {
                let file = |name: &str| -> Result<PathBuf, String> {
                    let path = certs.join(name);
                    if path.is_file() {
                        Ok(path)
                    } else {
                        Err(format!(
                            "TLS to Docker at `{addr}` needs `{}` (DOCKER_CERT_PATH holds \
                             ca.pem, cert.pem and key.pem, as for the docker CLI)",
                            path.display()
                        ))
                    }
                };
                let (key, cert, ca) = (file("key.pem")?, file("cert.pem")?, file("ca.pem")?);
                Docker::connect_with_ssl(addr, &key, &cert, &ca, TIMEOUT, version)
                    .map_err(|e| format!("TLS to Docker at `{addr}`: {e}"))
            }
            Endpoint::Ssh(host) => Docker::connect_with_ssh(host, TIMEOUT, version, None)
                .map_err(|e| format!("Docker over `{host}`: {e}")),
        }
    }

    /// How a message names the engine.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Unix(s) => s.strip_prefix("unix://").unwrap_or(s).to_string(),
            Endpoint::Http(a) => format!("tcp://{a}"),
            Endpoint::Tls { addr, .. } => format!("tcp://{addr} (TLS)"),
            Endpoint::Ssh(h) => h.clone(),
        }
    }
}

/// `authority` with `port` added when it names none (IPv6 literals are
/// bracketed: `[::1]`, `[::1]:2375`).
fn with_port(authority: &str, port: u16) -> Result<String, String> {
    let has_port = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((_, after)) => after.starts_with(':'),
            None => return Err("an IPv6 address without its closing `]`".into()),
        },
        None => authority.contains(':'),
    };
    if !has_port {
        return Ok(format!("{authority}:{port}"));
    }
    let (_, p) = authority.rsplit_once(':').unwrap_or_default();
    p.parse::<u16>()
        .map(|_| authority.to_string())
        .map_err(|_| format!("`{p}` is not a port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(
        host: Option<&str>,
        verify: Option<&str>,
        certs: Option<&str>,
    ) -> Result<Endpoint, String> {
        Endpoint::from_env(host, verify, certs, Some(Path::new("/home/u")))
    }

    #[test]
    fn unset_or_empty_is_the_local_socket() {
        let local = Endpoint::Unix("/var/run/docker.sock".into());
        assert_eq!(parse(None, None, None).unwrap(), local);
        assert_eq!(parse(Some(""), Some(""), None).unwrap(), local);
    }

    #[test]
    fn tcp_gets_the_docker_cli_default_ports() {
        assert_eq!(
            parse(Some("tcp://10.0.0.5"), None, None).unwrap(),
            Endpoint::Http("10.0.0.5:2375".into())
        );
        assert_eq!(
            parse(Some("tcp://h:4243/"), None, None).unwrap(),
            Endpoint::Http("h:4243".into())
        );
        assert_eq!(
            parse(Some("tcp://[::1]"), None, None).unwrap(),
            Endpoint::Http("[::1]:2375".into())
        );
        assert_eq!(
            parse(Some("tcp://[::1]:99"), None, None).unwrap(),
            Endpoint::Http("[::1]:99".into())
        );
        assert_eq!(
            parse(Some("tcp://h"), Some("1"), None).unwrap(),
            Endpoint::Tls {
                addr: "h:2376".into(),
                certs: "/home/u/.docker".into()
            }
        );
        assert_eq!(
            parse(Some("https://h:1"), None, Some("/c")).unwrap(),
            Endpoint::Tls {
                addr: "h:1".into(),
                certs: "/c".into()
            }
        );
    }

    #[test]
    fn mistakes_name_the_variable() {
        for (host, verify, want) in [
            (Some("tcp://h:port"), None, "`port` is not a port"),
            (Some("localhost:2375"), None, "has no scheme"),
            (
                Some("fd://"),
                None,
                "`fd://` is not one the docker CLI knows",
            ),
            (Some("tcp://"), None, "names no host"),
            (Some("tcp://[::1"), None, "closing `]`"),
            (None, Some("1"), "DOCKER_HOST is not"),
            (Some("ssh://me@box:2222"), None, "`Port N`"),
        ] {
            let e = parse(host, verify, None).unwrap_err();
            assert!(e.contains(want), "{host:?}: {e}");
            assert!(e.contains("DOCKER_"), "{host:?}: {e}");
        }
    }

    #[test]
    fn missing_certificates_are_named_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let e = Endpoint::Tls {
            addr: "h:2376".into(),
            certs: dir.path().into(),
        }
        .connect()
        .map(|_| ())
        .unwrap_err();
        assert!(
            e.contains("key.pem") && e.contains("DOCKER_CERT_PATH"),
            "{e}"
        );
    }

    #[test]
    fn ssh_is_passed_on() {
        assert_eq!(
            parse(Some("ssh://me@box"), None, None).unwrap(),
            Endpoint::Ssh("ssh://me@box".into())
        );
    }
}
