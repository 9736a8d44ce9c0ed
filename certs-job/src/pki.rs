//! Certificates: a CA and an ECDSA P-256 serving certificate (rcgen), and what we read back
//! from existing ones (x509-parser).

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use time::OffsetDateTime;

/// Certificate generation or parsing failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// Not a PEM certificate / key.
    #[error("{0}")]
    Parse(String),
}

/// A CA: certificate and key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Ca {
    /// Certificate PEM.
    pub cert_pem: String,
    /// Private key PEM (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A serving certificate and key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Serving {
    /// Certificate PEM.
    pub cert_pem: String,
    /// Private key PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// What matters about an existing certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// Subject DN (string form).
    pub subject: String,
    /// Issuer DN (string form).
    pub issuer: String,
    /// Subject key identifier, if present.
    pub ski: Option<Vec<u8>>,
    /// Authority key identifier, if present.
    pub aki: Option<Vec<u8>>,
    /// basicConstraints CA.
    pub is_ca: bool,
}

impl CertInfo {
    /// Whether this certificate was issued by `ca` (DN and key identifier match).
    pub fn issued_by(&self, ca: &CertInfo) -> bool {
        self.issuer == ca.subject && (self.aki.is_none() || ca.ski.is_none() || self.aki == ca.ski)
    }
}

/// The four DNS names a Service is reached by.
pub fn service_sans(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

fn validity(p: &mut CertificateParams, now: i64, valid: Duration) -> Result<(), PkiError> {
    // A little backdating tolerates clock skew between this job and the API server.
    let start = OffsetDateTime::from_unix_timestamp(now - 300)
        .map_err(|e| PkiError::Parse(e.to_string()))?;
    p.not_before = start;
    p.not_after = OffsetDateTime::from_unix_timestamp(
        now + i64::try_from(valid.as_secs()).unwrap_or(i64::MAX / 2),
    )
    .map_err(|e| PkiError::Parse(e.to_string()))?;
    Ok(())
}

/// A new self-signed CA valid for `valid` from `now`.
pub fn generate_ca(common_name: &str, now: i64, valid: Duration) -> Result<Ca, PkiError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name
        .push(DnType::CommonName, format!("{common_name} {now}"));
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.use_authority_key_identifier_extension = false;
    validity(&mut p, now, valid)?;
    let cert = p.self_signed(&key)?;
    Ok(Ca {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A serving certificate for `sans`, signed by `ca`, valid for `valid` from `now`.
pub fn issue_serving(
    ca: &Ca,
    sans: &[String],
    now: i64,
    valid: Duration,
) -> Result<Serving, PkiError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name
        .push(DnType::CommonName, sans.last().cloned().unwrap_or_default());
    p.subject_alt_names = sans
        .iter()
        .map(|s| Ok(SanType::DnsName(s.clone().try_into()?)))
        .collect::<Result<_, rcgen::Error>>()?;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    validity(&mut p, now, valid)?;
    let cert = p.signed_by(&key, &issuer)?;
    Ok(Serving {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Every certificate in a PEM bundle, in order.
pub fn parse_bundle(pem: &str) -> Result<Vec<CertInfo>, PkiError> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| PkiError::Parse(format!("PEM: {e}")))?;
        if block.label != "CERTIFICATE" {
            continue;
        }
        let cert = block
            .parse_x509()
            .map_err(|e| PkiError::Parse(format!("X.509: {e}")))?;
        let mut info = CertInfo {
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            dns_names: Vec::new(),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            ski: None,
            aki: None,
            is_ca: cert.is_ca(),
        };
        for ext in cert.extensions() {
            use x509_parser::extensions::{GeneralName, ParsedExtension};
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for n in &san.general_names {
                        if let GeneralName::DNSName(d) = n {
                            info.dns_names.push((*d).to_owned());
                        }
                    }
                }
                ParsedExtension::SubjectKeyIdentifier(k) => info.ski = Some(k.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    info.aki = a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => {}
            }
        }
        out.push(info);
    }
    if out.is_empty() {
        return Err(PkiError::Parse("no certificate in PEM".into()));
    }
    Ok(out)
}

/// Whether a PEM private key parses and belongs to the certificate (same public key).
pub fn key_matches(cert_pem: &str, key_pem: &str) -> bool {
    let Ok(key) = KeyPair::from_pem(key_pem) else {
        return false;
    };
    let Some(Ok(block)) = x509_parser::pem::Pem::iter_from_buffer(cert_pem.as_bytes()).next()
    else {
        return false;
    };
    let Ok(cert) = block.parse_x509() else {
        return false;
    };
    cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    const DAY: u64 = 86_400;

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64
    }

    #[test]
    fn issued_by_matches_the_name_and_any_key_identifiers_both_carry() {
        // Certificates from other tools (cert-manager, openssl) carry key identifiers, which
        // tell apart two CAs of the same name: a rotated CA that kept its common name.
        let cert = |issuer: &str, aki: Option<&[u8]>| CertInfo {
            not_before: 0,
            not_after: 1,
            dns_names: Vec::new(),
            subject: "CN=tokenvend-webhook".into(),
            issuer: issuer.into(),
            ski: None,
            aki: aki.map(<[u8]>::to_vec),
            is_ca: false,
        };
        let ca = |subject: &str, ski: Option<&[u8]>| CertInfo {
            subject: subject.into(),
            issuer: subject.into(),
            ski: ski.map(<[u8]>::to_vec),
            aki: None,
            is_ca: true,
            ..cert("", None)
        };
        // (certificate, CA) -> issued by it
        for (c, issuer, want) in [
            (cert("CN=ca", Some(b"k1")), ca("CN=ca", Some(b"k1")), true),
            (cert("CN=ca", Some(b"k1")), ca("CN=ca", Some(b"k2")), false),
            (cert("CN=ca", None), ca("CN=ca", Some(b"k2")), true),
            (cert("CN=ca", Some(b"k1")), ca("CN=ca", None), true),
            (
                cert("CN=ca", Some(b"k1")),
                ca("CN=other", Some(b"k1")),
                false,
            ),
        ] {
            assert_eq!(c.issued_by(&issuer), want, "{c:?} by {issuer:?}");
        }
    }

    #[test]
    fn keys_never_show_in_debug_output() {
        let t = now();
        let ca = generate_ca("tokenvend-webhook-ca", t, Duration::from_secs(DAY)).expect("ca");
        let sans = service_sans("tokenvend-webhook", "tokenvend");
        let serving = issue_serving(&ca, &sans, t, Duration::from_secs(DAY)).expect("serving");
        for (shown, key) in [
            (format!("{ca:?}"), &ca.key_pem),
            (format!("{serving:?}"), &serving.key_pem),
        ] {
            let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
            assert!(!shown.contains(&body[..32]), "{shown}");
            assert!(shown.contains("key_pem: \"<redacted>\""), "{shown}");
        }
    }

    #[test]
    fn serving_cert_has_the_service_sans_usages_validity_and_verifies_against_the_ca() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let t = now();
        let ca =
            generate_ca("tokenvend-webhook-ca", t, Duration::from_secs(3650 * DAY)).expect("ca");
        let sans = service_sans("tokenvend-webhook", "tokenvend");
        let s = issue_serving(&ca, &sans, t, Duration::from_secs(365 * DAY)).expect("serving");
        let info = &parse_bundle(&s.cert_pem).expect("parse")[0];
        assert_eq!(
            info.dns_names,
            [
                "tokenvend-webhook",
                "tokenvend-webhook.tokenvend",
                "tokenvend-webhook.tokenvend.svc",
                "tokenvend-webhook.tokenvend.svc.cluster.local"
            ]
        );
        assert!(!info.is_ca);
        assert!((info.not_after - t - (365 * DAY) as i64).abs() < 5);
        assert!(info.not_before <= t);
        let ca_info = &parse_bundle(&ca.cert_pem).expect("parse")[0];
        assert!(ca_info.is_ca);
        assert!((ca_info.not_after - t - (3650 * DAY) as i64).abs() < 5);
        assert!(info.issued_by(ca_info));
        assert!(key_matches(&s.cert_pem, &s.key_pem));
        assert!(!key_matches(&s.cert_pem, &ca.key_pem));
        assert!(key_matches(&ca.cert_pem, &ca.key_pem));
        // Key usage and EKU, read with x509-parser.
        let block = x509_parser::pem::Pem::iter_from_buffer(s.cert_pem.as_bytes())
            .next()
            .expect("pem")
            .expect("pem");
        let cert = block.parse_x509().expect("x509");
        assert!(
            cert.key_usage()
                .expect("ku")
                .expect("ku present")
                .value
                .digital_signature()
        );
        assert!(
            cert.extended_key_usage()
                .expect("eku")
                .expect("eku present")
                .value
                .server_auth
        );
        assert_eq!(
            cert.public_key().algorithm.algorithm.to_id_string(),
            "1.2.840.10045.2.1",
            "EC key"
        );

        // The chain verifies with rustls/webpki for every SAN, and not for other names or CAs.
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).expect("ca der"))
            .expect("root");
        let verifier = WebPkiServerVerifier::builder(roots.into())
            .build()
            .expect("verifier");
        let leaf = CertificateDer::from_pem_slice(s.cert_pem.as_bytes()).expect("leaf der");
        for name in &sans {
            let sn = ServerName::try_from(name.clone()).expect("name");
            verifier
                .verify_server_cert(&leaf, &[], &sn, &[], UnixTime::now())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other = ServerName::try_from("evil.example.com").expect("name");
        assert!(
            verifier
                .verify_server_cert(&leaf, &[], &other, &[], UnixTime::now())
                .is_err()
        );
        let other_ca = generate_ca("other", t, Duration::from_secs(DAY)).expect("ca");
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(other_ca.cert_pem.as_bytes()).expect("der"))
            .expect("root");
        let v2 = WebPkiServerVerifier::builder(roots.into())
            .build()
            .expect("verifier");
        let sn = ServerName::try_from(sans[2].clone()).expect("name");
        assert!(
            v2.verify_server_cert(&leaf, &[], &sn, &[], UnixTime::now())
                .is_err()
        );
        assert!(!info.issued_by(&parse_bundle(&other_ca.cert_pem).expect("p")[0]));
    }

    #[test]
    fn bundles_and_bad_pem() {
        let t = now();
        let a = generate_ca("a", t, Duration::from_secs(DAY)).expect("a");
        let b = generate_ca("b", t, Duration::from_secs(DAY)).expect("b");
        let both = parse_bundle(&format!("{}{}", a.cert_pem, b.cert_pem)).expect("bundle");
        assert_eq!(both.len(), 2);
        assert_ne!(both[0].subject, both[1].subject);
        assert!(parse_bundle("garbage").is_err());
        assert!(parse_bundle("").is_err());
        assert!(!key_matches("garbage", &a.key_pem));
    }
}
