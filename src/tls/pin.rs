//! CA pinning: `--ca-hash sha256:HEX` names the controller's CA by the
//! SHA-256 of its SubjectPublicKeyInfo (the hash kubeadm's discovery
//! uses), so an agent or the CLI needs no CA file to trust a controller
//! that made its own PKI.
//!
//! The verifier looks for the pinned key in the chain the server presents
//! and then verifies the server's certificate against that certificate as
//! the only root, with rustls's usual verifier: names, validity and
//! signatures are checked as for any CA.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, SignatureScheme};
use sha2::{Digest, Sha256};

/// A pin: the SHA-256 of a CA's SubjectPublicKeyInfo (DER).
pub type Pin = [u8; 32];

/// `sha256:HEX`, as the controller logs it and `--ca-hash` takes it.
pub fn format_pin(pin: &Pin) -> String {
    let hex: String = pin.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Parse `sha256:HEX` (64 hex digits, either case).
pub fn parse_pin(text: &str) -> Result<Pin, String> {
    let bad = || format!("--ca-hash `{text}`: expected sha256: and 64 hex digits");
    let hex = text.trim().strip_prefix("sha256:").ok_or_else(bad)?;
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut pin = [0u8; 32];
    for (i, b) in pin.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(pin)
}

/// One DER element at the start of `der`: (tag, header + contents, rest).
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *der.first()?;
    let first = *der.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for b in der.get(2..2 + n)? {
            len = (len << 8) | usize::from(*b);
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    (end <= der.len()).then(|| (tag, &der[..end], &der[end..]))
}

/// The contents of a constructed DER element.
fn contents(whole: &[u8]) -> &[u8] {
    let header = if whole[1] < 0x80 {
        2
    } else {
        2 + usize::from(whole[1] & 0x7f)
    };
    &whole[header..]
}

/// The SubjectPublicKeyInfo (whole DER element) of an X.509 certificate:
/// in tbsCertificate after the optional version, the serial number, the
/// signature algorithm, the issuer, the validity and the subject.
pub fn spki(cert: &[u8]) -> Option<&[u8]> {
    let (0x30, whole, _) = element(cert)? else {
        return None;
    };
    let (0x30, tbs, _) = element(contents(whole))? else {
        return None;
    };
    let mut rest = contents(tbs);
    if rest.first() == Some(&0xa0) {
        rest = element(rest)?.2;
    }
    for _ in 0..5 {
        rest = element(rest)?.2;
    }
    match element(rest)? {
        (0x30, spki, _) => Some(spki),
        _ => None,
    }
}

/// The pin of a certificate (DER), if it parses.
pub fn pin_of(cert: &[u8]) -> Option<Pin> {
    spki(cert).map(|s| Sha256::digest(s).into())
}

/// The controller's chain holds no certificate with the pinned key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinMismatch {
    /// `sha256:HEX` of the pin.
    pub expected: String,
    /// `sha256:HEX` of the CA the controller presented (the last
    /// certificate of its chain).
    pub presented: Option<String>,
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CA hash mismatch: expected {}", self.expected)?;
        match &self.presented {
            Some(p) => write!(f, ", the controller's CA is {p}"),
            None => write!(f, ", the controller's certificate does not parse"),
        }
    }
}

impl std::error::Error for PinMismatch {}

/// Trust the one CA whose key has the pin, and only when the server
/// presents it in its chain.
#[derive(Debug)]
pub struct PinnedCa {
    pin: Pin,
    provider: Arc<CryptoProvider>,
}

impl PinnedCa {
    pub fn new(pin: Pin, provider: Arc<CryptoProvider>) -> PinnedCa {
        PinnedCa { pin, provider }
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let chain = || std::iter::once(end_entity).chain(intermediates);
        let Some(ca) = chain().find(|c| pin_of(c) == Some(self.pin)) else {
            let last = intermediates.last().unwrap_or(end_entity);
            let mismatch = PinMismatch {
                expected: format_pin(&self.pin),
                presented: pin_of(last).map(|p| format_pin(&p)),
            };
            return Err(Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(mismatch)),
            )));
        };
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| Error::General(e.to_string()))?;
        // The pinned certificate is the root: not also an intermediate.
        let rest: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|c| c.as_ref() != ca.as_ref())
            .cloned()
            .collect();
        verifier.verify_server_cert(end_entity, &rest, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, PublicKeyData};

    struct Ca {
        cert: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
        pin: Pin,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        let pin: Pin = Sha256::digest(key.subject_public_key_info()).into();
        Ca {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
            pin,
        }
    }

    fn leaf(ca: &Ca, name: &str) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &ca.issuer)
            .unwrap()
            .der()
            .clone()
    }

    fn verify(pin: Pin, chain: &[CertificateDer<'static>], name: &str) -> Result<(), Error> {
        let v = PinnedCa::new(pin, Arc::new(rustls::crypto::ring::default_provider()));
        v.verify_server_cert(
            &chain[0],
            &chain[1..],
            &ServerName::try_from(name.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
    }

    #[test]
    fn the_pin_is_the_hash_of_the_subject_public_key_info() {
        let ca = ca("test CA");
        assert_eq!(pin_of(&ca.cert), Some(ca.pin));
        assert_eq!(pin_of(b"\x30\x03\x02\x01\x01"), None);
        assert_eq!(pin_of(b""), None);
    }

    #[test]
    fn pins_parse_as_they_are_printed() {
        let ca = ca("test CA");
        let text = format_pin(&ca.pin);
        assert!(
            text.starts_with("sha256:") && text.len() == 7 + 64,
            "{text}"
        );
        assert_eq!(
            parse_pin(&text.to_uppercase().replace("SHA256", "sha256")),
            Ok(ca.pin)
        );
        for bad in [
            "",
            "sha256:",
            "md5:00",
            &text[..text.len() - 1],
            &text.replace("sha256:", ""),
        ] {
            let e = parse_pin(bad).unwrap_err();
            assert!(e.contains("--ca-hash"), "{e}");
        }
    }

    #[test]
    fn a_chain_with_the_pinned_ca_verifies() {
        let ca = ca("test CA");
        let chain = [leaf(&ca, "controller.test"), ca.cert.clone()];
        verify(ca.pin, &chain, "controller.test").unwrap();
    }

    #[test]
    fn a_chain_without_the_pinned_ca_is_a_mismatch_naming_both_hashes() {
        let ours = ca("ours");
        let theirs = ca("theirs");
        let chain = [leaf(&theirs, "controller.test"), theirs.cert.clone()];
        let e = verify(ours.pin, &chain, "controller.test").unwrap_err();
        let Error::InvalidCertificate(CertificateError::Other(o)) = e else {
            panic!("{e:?}");
        };
        let m = o.0.downcast_ref::<PinMismatch>().unwrap();
        assert_eq!(m.expected, format_pin(&ours.pin));
        assert_eq!(m.presented, Some(format_pin(&theirs.pin)));
    }

    #[test]
    fn the_pinned_ca_must_have_signed_the_server_certificate() {
        // The pinned CA is presented, but another CA signed the leaf.
        let ours = ca("ours");
        let theirs = ca("theirs");
        let chain = [leaf(&theirs, "controller.test"), ours.cert.clone()];
        let e = verify(ours.pin, &chain, "controller.test").unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidCertificate(CertificateError::UnknownIssuer)
            ),
            "{e:?}"
        );
    }

    #[test]
    fn names_are_checked_as_usual() {
        let ca = ca("test CA");
        let chain = [leaf(&ca, "controller.test"), ca.cert.clone()];
        let e = verify(ca.pin, &chain, "other.test").unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })
            ),
            "{e:?}"
        );
    }
}
