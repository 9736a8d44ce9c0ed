//! CA bundles: the PEM certificates a client trusts tokenvend-sts with. A bundle is checked
//! whole before use, and a replacement is taken only when it trusts the certificate the server
//! presents, so a wrong file can never cut a sidecar off from the service.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// The largest bundle accepted (a bundle holds a few CAs of under 1 KiB each).
pub const MAX_BYTES: usize = 64 * 1024;

/// The certificates of a PEM bundle: at least one, no malformed block, and each one a
/// certificate a trust anchor can be made of. With the `ca-anchors` feature also refused: a
/// bundle holding only end-entity certificates that others issued (see [`anchor_problem`]).
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    if pem.len() > MAX_BYTES {
        return Err(format!("larger than {} KiB", MAX_BYTES / 1024));
    }
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM bundle: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate found".into());
    }
    // Well-formed base64 need not be a certificate; every client would fail on it later.
    for (i, cert) in certs.iter().enumerate() {
        RootCertStore::empty().add(cert.clone()).map_err(|e| {
            format!(
                "PEM block {} of {} is not a certificate: {e}",
                i + 1,
                certs.len()
            )
        })?;
    }
    #[cfg(feature = "ca-anchors")]
    if let Some(problem) = anchor_problem(&certs) {
        return Err(problem);
    }
    Ok(certs)
}

/// Why no certificate of `certs` can anchor a server's chain, if none can: each one is an
/// end-entity certificate (not a CA) that another issued, so no verifier can build a path to
/// it. The usual slip: a server's own certificate (`tls.crt`) where the CA that issued it
/// (`ca.crt`) belongs. A self-signed server certificate is its own anchor and passes.
#[cfg(feature = "ca-anchors")]
pub fn anchor_problem(certs: &[CertificateDer<'_>]) -> Option<String> {
    let mut example = None;
    for cert in certs {
        let Ok((_, c)) = x509_parser::parse_x509_certificate(cert) else {
            return None;
        };
        let is_ca = c
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        if is_ca || c.issuer().as_raw() == c.subject().as_raw() {
            return None;
        }
        example.get_or_insert_with(|| (c.subject().to_string(), c.issuer().to_string()));
    }
    let (subject, issuer) = example?;
    Some(format!(
        "holds only server certificates that a CA issued, no CA (such as {subject:?}, issued \
         by {issuer:?}): give the CA that issued them (a Secret's ca.crt, not its tls.crt)"
    ))
}

/// The bundle in the file at `path` (UTF-8 text, read up to [`MAX_BYTES`]), checked as
/// [`certificates`] does; errors name the file.
pub fn read(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let pem =
        crate::limited::read_to_string(path, MAX_BYTES).map_err(|e| format!("{shown}: {e}"))?;
    certificates(pem.as_bytes()).map_err(|e| format!("{shown}: {e}"))?;
    Ok(pem)
}

/// Whether `bundle` (PEM) trusts `server_cert` (DER, as presented in a handshake, signed
/// directly by a CA of the bundle) for `host` (a DNS name or an IP address) at the current time.
pub fn trusts(bundle: &[u8], server_cert: &[u8], host: &str) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(bundle)? {
        roots
            .add(cert)
            .map_err(|e| format!("a certificate of the bundle cannot be a trust anchor: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("bundle: {e}"))?;
    let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
        .map_err(|e| format!("host {host:?}: {e}"))?
        .to_owned();
    verifier
        .verify_server_cert(
            &CertificateDer::from(server_cert),
            &[],
            &name,
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|e| format!("the server's certificate for {host} is not trusted by it: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenvend_testkit::tls;

    #[test]
    fn a_bundle_has_certificates_and_nothing_malformed() {
        let (ca, _, _) = tls::ca("a");
        assert_eq!(certificates(ca.pem().as_bytes()).map(|c| c.len()), Ok(1));
        let two = format!("{}{}", ca.pem(), tls::ca("b").0.pem());
        assert_eq!(certificates(two.as_bytes()).map(|c| c.len()), Ok(2));
        for (bad, why) in [
            ("", "no PEM certificate"),
            ("hello", "no PEM certificate"),
            (
                "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
                "not a PEM",
            ),
            // Good base64, no certificate: every client would refuse it later.
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "PEM block 1 of 1 is not a certificate",
            ),
        ] {
            let err = certificates(bad.as_bytes()).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        // Exactly the limit is taken; a byte more is not.
        let mut at_limit = ca.pem();
        at_limit.push_str(&"\n".repeat(MAX_BYTES - at_limit.len()));
        assert_eq!(certificates(at_limit.as_bytes()).map(|c| c.len()), Ok(1));
        at_limit.push('\n');
        assert!(
            certificates(at_limit.as_bytes())
                .expect_err("a byte over")
                .contains("larger than 64 KiB")
        );
        let huge = ca.pem().repeat(MAX_BYTES / ca.pem().len() + 1);
        assert!(
            certificates(huge.as_bytes())
                .expect_err("huge")
                .contains("KiB")
        );
    }

    #[cfg(feature = "ca-anchors")]
    #[test]
    fn a_bundle_of_server_certificates_without_their_ca_is_refused() {
        let (ca, _, issuer) = tls::ca("tokenvend-ca");
        let served = tls::leaf(&ca, &issuer);
        // tls.crt where ca.crt belongs: nothing could ever be verified up to it.
        let err = certificates(served.cert_pem.as_bytes()).expect_err("leaf only");
        assert!(
            err.contains("holds only server certificates that a CA issued")
                && err.contains("issued by \"CN=tokenvend-ca\"")
                && err.contains("ca.crt, not its tls.crt"),
            "{err}"
        );
        let err = trusts(served.cert_pem.as_bytes(), &served.cert_der, "localhost")
            .expect_err("trusted by its own leaf");
        assert!(err.contains("holds only server certificates"), "{err}");
        // With its CA beside it (a full chain), or a CA alone: usable.
        let chain = format!("{}{}", served.cert_pem, ca.pem());
        assert_eq!(certificates(chain.as_bytes()).map(|c| c.len()), Ok(2));
        assert!(trusts(chain.as_bytes(), &served.cert_der, "localhost").is_ok());
        // A self-signed server certificate is its own anchor, and clients verify it so.
        let own = tls::self_signed_leaf();
        assert_eq!(
            certificates(own.cert_pem.as_bytes()).map(|c| c.len()),
            Ok(1)
        );
        assert!(trusts(own.cert_pem.as_bytes(), &own.cert_der, "localhost").is_ok());
    }

    #[test]
    fn a_bundle_file_is_read_checked_and_named_in_errors() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("ca.crt");
        let (ca, _, _) = tls::ca("a");
        std::fs::write(&path, ca.pem()).expect("write");
        assert_eq!(read(&path), Ok(ca.pem()));
        // A bundle goes into pods and answers as text: other bytes are refused, the file named.
        let mut bytes = ca.pem().into_bytes();
        bytes.push(0xff);
        std::fs::write(&path, bytes).expect("write");
        let err = read(&path).expect_err("not text");
        assert!(
            err.starts_with(&format!("{}: not UTF-8 text", path.display())),
            "{err}"
        );
        std::fs::write(&path, "hello").expect("write");
        let err = read(&path).expect_err("not a bundle");
        assert!(err.starts_with(&format!("{}: ", path.display())), "{err}");
        assert!(err.contains("no PEM certificate"), "{err}");
        let err = read(Path::new("/dev/zero")).expect_err("endless");
        assert_eq!(err, "/dev/zero: larger than 64 KiB: is it the right file?");
    }

    #[test]
    fn a_bundle_trusts_a_server_only_through_one_of_its_cas_and_for_its_names() {
        let (old, _, old_issuer) = tls::ca("old");
        let (new, _, new_issuer) = tls::ca("new");
        let served = tls::leaf(&old, &old_issuer).cert_der;
        let both = format!("{}{}", new.pem(), old.pem());
        // (bundle, host) -> trusted
        for (bundle, host, want) in [
            (old.pem(), "localhost", true),
            (old.pem(), "127.0.0.1", true),
            (both.clone(), "localhost", true),
            (new.pem(), "localhost", false),
            (old.pem(), "tokenvend-sts.tokenvend.svc", false),
            (old.pem(), "::1", false),
        ] {
            let got = trusts(bundle.as_bytes(), &served, host);
            assert_eq!(got.is_ok(), want, "{host}: {got:?}");
        }
        let from_new = tls::leaf(&new, &new_issuer).cert_der;
        assert!(trusts(both.as_bytes(), &from_new, "localhost").is_ok());
        assert!(trusts(old.pem().as_bytes(), &from_new, "[::1]").is_err());
        let err = trusts(b"junk", &served, "localhost").expect_err("junk");
        assert!(err.contains("no PEM certificate"), "{err}");
        let err = trusts(old.pem().as_bytes(), b"not DER", "localhost").expect_err("junk cert");
        assert!(err.contains("not trusted"), "{err}");
    }
}
