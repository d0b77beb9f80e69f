//! Why a request to the controller failed, in words that say what to fix:
//! reqwest's own message for a TLS failure is "error sending request",
//! with the cause several errors down its source chain.

use std::error::Error;

use rustls::CertificateError;

use super::pin::PinMismatch;

/// Every error of `err`'s chain, outermost first. An `io::Error`'s
/// `source()` skips the error it wraps (rustls's, in a TLS failure), so
/// that one is taken from `get_ref()`.
fn chain<'a>(err: &'a (dyn Error + 'static)) -> Vec<&'a (dyn Error + 'static)> {
    let mut out = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        out.push(e);
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn Error + 'static)),
            None => e.source(),
        };
        if out.len() > 32 {
            break;
        }
    }
    out
}

/// The host of `url`, for messages.
fn host(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| url.to_string())
}

fn certificate(e: &CertificateError, url: &str) -> String {
    use CertificateError as C;
    let time = |t: &rustls::pki_types::UnixTime| crate::clock::rfc3339(t.as_secs() as i64);
    match e {
        C::UnknownIssuer => {
            "the controller's certificate is not signed by the CA you trust (--ca-hash / --ca-cert)"
                .into()
        }
        C::Other(o) => match o.0.downcast_ref::<PinMismatch>() {
            Some(m) => m.to_string(),
            None => format!("the controller's certificate was refused: {o}"),
        },
        C::NotValidForNameContext { presented, .. } => format!(
            "the certificate is not valid for {} (it names: {})",
            host(url),
            presented.join(", ")
        ),
        C::NotValidForName => format!("the certificate is not valid for {}", host(url)),
        C::ExpiredContext {
            time: now,
            not_after,
        } => format!(
            "the controller's certificate expired at {} (it is now {})",
            time(not_after),
            time(now)
        ),
        C::Expired => "the controller's certificate has expired".into(),
        C::NotValidYetContext {
            time: now,
            not_before,
        } => format!(
            "the controller's certificate is not valid before {} (it is now {}: check the clocks)",
            time(not_before),
            time(now)
        ),
        C::NotValidYet => "the controller's certificate is not valid yet (check the clocks)".into(),
        other => format!("the controller's certificate was refused: {other:?}"),
    }
}

/// The whole message for a request to `url` (of the controller at
/// `base`) that failed with `err`.
pub fn reaching(err: &(dyn Error + 'static), base: &str, url: &str) -> String {
    let why = explain(err, url);
    if why.starts_with("the controller at ") {
        why
    } else {
        format!("cannot reach the controller at {base}: {why}")
    }
}

/// What went wrong reaching the controller at `url`, from a request's
/// error (its whole source chain is read).
pub fn explain(err: &(dyn Error + 'static), url: &str) -> String {
    let causes = chain(err);
    for e in &causes {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return match t {
                rustls::Error::InvalidCertificate(c) => certificate(c, url),
                other => format!("TLS with the controller failed: {other}"),
            };
        }
    }
    // A reply that is not HTTP, to plain HTTP: a TLS server's alert.
    let plain = url.starts_with("http://");
    if plain
        && causes.iter().any(|e| {
            e.downcast_ref::<hyper::Error>()
                .is_some_and(|h| h.is_parse())
        })
    {
        let base = url.split('/').take(3).collect::<Vec<_>>().join("/");
        return format!(
            "the controller at {base} speaks TLS: use https:// (and --ca-hash/--ca-cert)"
        );
    }
    // Otherwise the outermost message and the innermost cause (connection
    // refused, timed out, ...), once each.
    let first = err.to_string();
    match causes.last() {
        Some(last) if causes.len() > 1 && !first.contains(&last.to_string()) => {
            format!("{first}: {last}")
        }
        _ => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// An error wrapping `inner` as its source, as reqwest and hyper do.
    #[derive(Debug)]
    struct Wrap(&'static str, Box<dyn Error + Send + Sync>);
    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for Wrap {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.1)
        }
    }

    /// A TLS error as a request reports it: inside an io::Error, inside
    /// the client's errors.
    fn request_error(tls: rustls::Error) -> Wrap {
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let io = std::io::Error::other(io);
        Wrap(
            "error sending request for url",
            Box::new(Wrap("client error (Connect)", Box::new(io))),
        )
    }

    fn said(e: CertificateError) -> String {
        explain(
            &request_error(rustls::Error::InvalidCertificate(e)),
            "https://controller.test:7700/v1/nodes",
        )
    }

    #[test]
    fn an_unknown_issuer_names_the_trust_flags() {
        assert_eq!(
            said(CertificateError::UnknownIssuer),
            "the controller's certificate is not signed by the CA you trust (--ca-hash / --ca-cert)"
        );
    }

    #[test]
    fn a_pin_mismatch_names_both_hashes() {
        let m = PinMismatch {
            expected: "sha256:aa".into(),
            presented: Some("sha256:bb".into()),
        };
        assert_eq!(
            said(CertificateError::Other(rustls::OtherError(Arc::new(m)))),
            "CA hash mismatch: expected sha256:aa, the controller's CA is sha256:bb"
        );
    }

    #[test]
    fn a_name_mismatch_names_the_host_and_the_certificate_names() {
        let e = CertificateError::NotValidForNameContext {
            expected: rustls::pki_types::ServerName::try_from("controller.test").unwrap(),
            presented: vec![
                "DnsName(\"other.test\")".into(),
                "IpAddress(10.0.0.1)".into(),
            ],
        };
        let s = said(e);
        assert!(
            s.starts_with("the certificate is not valid for controller.test (it names: "),
            "{s}"
        );
        assert!(s.contains("other.test"), "{s}");
        assert_eq!(
            said(CertificateError::NotValidForName),
            "the certificate is not valid for controller.test"
        );
    }

    #[test]
    fn expiry_says_when() {
        let s = said(CertificateError::ExpiredContext {
            time: rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                1_795_000_000,
            )),
            not_after: rustls::pki_types::UnixTime::since_unix_epoch(
                std::time::Duration::from_secs(951_782_400),
            ),
        });
        assert_eq!(
            s,
            "the controller's certificate expired at 2000-02-29T00:00:00Z (it is now 2026-11-18T11:06:40Z)"
        );
        let s = said(CertificateError::NotValidYetContext {
            time: rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                951_782_400,
            )),
            not_before: rustls::pki_types::UnixTime::since_unix_epoch(
                std::time::Duration::from_secs(1_795_000_000),
            ),
        });
        assert!(s.contains("not valid before 2026-11-18T11:06:40Z"), "{s}");
    }

    #[test]
    fn other_errors_keep_the_outer_message_and_the_root_cause() {
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let e = Wrap("error sending request for url", Box::new(refused));
        assert_eq!(
            explain(&e, "http://127.0.0.1:9"),
            "error sending request for url: connection refused"
        );
    }
}
