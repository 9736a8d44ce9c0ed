//! What to do with the certificates we find: keep, renew the serving certificate, rotate the CA,
//! or create everything. Pure functions of (now, current material, settings).

use std::time::Duration;

use crate::pki::{
    Ca, CertInfo, PkiError, Serving, generate_ca, issue_serving, key_matches, parse_bundle,
};

/// Lifetimes and margins.
#[derive(Debug, Clone)]
pub struct Settings {
    /// SANs the serving certificate must carry.
    pub sans: Vec<String>,
    /// CA common name prefix.
    pub ca_name: String,
    /// CA lifetime (default 10 years).
    pub ca_validity: Duration,
    /// Serving certificate lifetime (default 1 year).
    pub serving_validity: Duration,
    /// Renew the serving certificate when less than this is left (default 30 days).
    pub renew_before: Duration,
    /// Rotate the CA when less than this is left (default 1 year).
    pub ca_renew_before: Duration,
    /// Keep a replaced CA in the trust bundle this long after the new CA appears (default 7 days).
    pub ca_overlap: Duration,
}

impl Settings {
    /// The documented defaults (CA 10 years, serving 1 year, renew 30 days before expiry, rotate
    /// the CA a year before, 7 days of overlap) for these SANs.
    pub fn defaults(sans: Vec<String>, ca_name: &str) -> Settings {
        const DAY: u64 = 86_400;
        Settings {
            sans,
            ca_name: ca_name.to_owned(),
            ca_validity: Duration::from_secs(3650 * DAY),
            serving_validity: Duration::from_secs(365 * DAY),
            renew_before: Duration::from_secs(30 * DAY),
            ca_renew_before: Duration::from_secs(365 * DAY),
            ca_overlap: Duration::from_secs(7 * DAY),
        }
    }
}

/// What exists: the CA bundle (current CA first, then previous CAs still trusted), its key, and
/// the serving pair, all PEM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Material {
    /// `ca.crt`: current CA first, then previous ones.
    pub ca_bundle: String,
    /// `ca.key`: the current CA's key.
    pub ca_key: String,
    /// `tls.crt`.
    pub tls_crt: String,
    /// `tls.key`.
    pub tls_key: String,
}

/// The decision, with the reason for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Everything is fine; only the trust bundle may shrink (expired overlap).
    Keep,
    /// New serving certificate from the current CA.
    IssueServing(String),
    /// New CA (old one kept in the bundle for the overlap) and a serving certificate from it.
    RotateCa(String),
    /// Nothing usable: a new CA and serving certificate (an old CA certificate that still parses
    /// stays trusted for the overlap).
    Create(String),
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2)
}

/// Decide what to do.
pub fn decide(now: i64, m: Option<&Material>, s: &Settings) -> Decision {
    let Some(m) = m else {
        return Decision::Create("no CA yet".into());
    };
    let ca = match parse_bundle(&m.ca_bundle) {
        Ok(c) => c[0].clone(),
        Err(e) => return Decision::Create(format!("CA unreadable: {e}")),
    };
    if !ca.is_ca || !key_matches(&m.ca_bundle, &m.ca_key) {
        return Decision::Create("CA certificate and key do not form a usable CA".into());
    }
    if ca.not_after - now <= secs(s.ca_renew_before) {
        return Decision::RotateCa(format!(
            "CA expires in {} days",
            (ca.not_after - now) / 86_400
        ));
    }
    let serving: CertInfo = match parse_bundle(&m.tls_crt) {
        Ok(c) => c[0].clone(),
        Err(_) => return Decision::IssueServing("no readable serving certificate".into()),
    };
    if !key_matches(&m.tls_crt, &m.tls_key) {
        return Decision::IssueServing("serving key does not match its certificate".into());
    }
    if !serving.issued_by(&ca) {
        return Decision::IssueServing(
            "serving certificate is not signed by the current CA".into(),
        );
    }
    let mut have = serving.dns_names.clone();
    let mut want = s.sans.clone();
    have.sort();
    want.sort();
    if have != want {
        return Decision::IssueServing(format!("SANs {have:?} differ from {want:?}"));
    }
    if serving.not_after - now <= secs(s.renew_before) {
        return Decision::IssueServing(format!(
            "serving certificate expires in {} days",
            (serving.not_after - now) / 86_400
        ));
    }
    Decision::Keep
}

/// PEM blocks of a bundle, in order.
fn pem_blocks(bundle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in bundle.lines() {
        cur.push_str(line);
        cur.push('\n');
        if line.starts_with("-----END ") {
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

/// The CA bundle to trust: `current` first, then `previous` CAs while the overlap since the
/// current CA appeared lasts and they have not expired.
pub fn trust_bundle(now: i64, current: &str, previous: &[String], s: &Settings) -> String {
    let current_info = parse_bundle(current).ok().map(|c| c[0].clone());
    let overlap_until = current_info.map_or(0, |c| c.not_before + secs(s.ca_overlap));
    let mut out = current.to_owned();
    for p in previous {
        let keep = now < overlap_until && parse_bundle(p).is_ok_and(|c| c[0].not_after > now);
        if keep && !out.contains(p.as_str()) {
            out.push_str(p);
        }
    }
    out
}

/// Carry out a decision: the material to store.
pub fn apply(
    now: i64,
    m: Option<&Material>,
    d: &Decision,
    s: &Settings,
) -> Result<Material, PkiError> {
    let new_serving = |ca: &Ca| issue_serving(ca, &s.sans, now, s.serving_validity);
    let (ca, previous, serving) = match (d, m) {
        (Decision::Keep, Some(m)) => {
            let blocks = pem_blocks(&m.ca_bundle);
            let ca = Ca {
                cert_pem: blocks[0].clone(),
                key_pem: m.ca_key.clone(),
            };
            let serving = Serving {
                cert_pem: m.tls_crt.clone(),
                key_pem: m.tls_key.clone(),
            };
            (ca, blocks[1..].to_vec(), serving)
        }
        (Decision::IssueServing(_), Some(m)) => {
            let blocks = pem_blocks(&m.ca_bundle);
            let ca = Ca {
                cert_pem: blocks[0].clone(),
                key_pem: m.ca_key.clone(),
            };
            let serving = new_serving(&ca)?;
            (ca, blocks[1..].to_vec(), serving)
        }
        // The old CA (and any older still in overlap) stays trusted for the overlap. On Create
        // too: a CA whose key is lost can sign nothing new, but the webhook serves the certificate
        // it signed until the new Secret reaches it, and the API server must still trust that.
        // (trust_bundle drops whatever does not parse or has expired.)
        (Decision::RotateCa(_) | Decision::Create(_), Some(m)) => {
            let previous = pem_blocks(&m.ca_bundle);
            let ca = generate_ca(&s.ca_name, now, s.ca_validity)?;
            let serving = new_serving(&ca)?;
            (ca, previous, serving)
        }
        _ => {
            let ca = generate_ca(&s.ca_name, now, s.ca_validity)?;
            let serving = new_serving(&ca)?;
            (ca, Vec::new(), serving)
        }
    };
    Ok(Material {
        ca_bundle: trust_bundle(now, &ca.cert_pem, &previous, s),
        ca_key: ca.key_pem,
        tls_crt: serving.cert_pem,
        tls_key: serving.key_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::service_sans;

    const DAY: i64 = 86_400;

    fn settings() -> Settings {
        Settings::defaults(
            service_sans("tokenvend-webhook", "tokenvend"),
            "tokenvend-webhook-ca",
        )
    }

    fn fresh(now: i64) -> Material {
        apply(now, None, &Decision::Create("t".into()), &settings()).expect("create")
    }

    #[test]
    fn nothing_or_garbage_creates_everything() {
        let s = settings();
        assert!(matches!(decide(0, None, &s), Decision::Create(_)));
        let garbage = Material {
            ca_bundle: "x".into(),
            ..Default::default()
        };
        assert!(matches!(decide(0, Some(&garbage), &s), Decision::Create(_)));
        let t = 1_800_000_000;
        let mut m = fresh(t);
        m.ca_key = fresh(t).ca_key;
        assert!(
            matches!(decide(t, Some(&m), &s), Decision::Create(_)),
            "CA key of another CA"
        );
    }

    #[test]
    fn recreating_a_ca_whose_key_is_lost_keeps_the_old_ca_trusted_for_the_overlap() {
        let s = settings();
        let t = 1_800_000_000;
        let mut m = fresh(t);
        m.ca_key = fresh(t).ca_key;
        let later = t + 100 * DAY;
        let d = decide(later, Some(&m), &s);
        assert!(matches!(d, Decision::Create(_)), "{d:?}");
        let created = apply(later, Some(&m), &d, &s).expect("create");
        let bundle = parse_bundle(&created.ca_bundle).expect("bundle");
        assert_eq!(
            bundle.len(),
            2,
            "the certificate still served stays trusted"
        );
        assert_eq!(bundle[1], parse_bundle(&m.ca_bundle).expect("old")[0]);
        let serving = &parse_bundle(&created.tls_crt).expect("serving")[0];
        assert!(
            serving.issued_by(&bundle[0]),
            "serving cert from the new CA"
        );
        assert_eq!(decide(later, Some(&created), &s), Decision::Keep);
        let after = apply(later + 8 * DAY, Some(&created), &Decision::Keep, &s).expect("keep");
        assert_eq!(parse_bundle(&after.ca_bundle).expect("bundle").len(), 1);

        // A block that is not a certificate is not carried over.
        let garbage = Material {
            ca_bundle: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            ..Default::default()
        };
        let created = apply(t, Some(&garbage), &Decision::Create("t".into()), &s).expect("create");
        assert_eq!(pem_blocks(&created.ca_bundle).len(), 1, "only the new CA");
        assert!(!created.ca_bundle.contains("AAAA"));
    }

    #[test]
    fn valid_material_is_kept_and_applying_keep_changes_nothing() {
        let s = settings();
        let t = 1_800_000_000;
        let m = fresh(t);
        assert_eq!(decide(t + DAY, Some(&m), &s), Decision::Keep);
        assert_eq!(
            apply(t + DAY, Some(&m), &Decision::Keep, &s).expect("keep"),
            m
        );
    }

    #[test]
    fn serving_cert_is_renewed_before_expiry_or_when_sans_or_issuer_change() {
        let s = settings();
        let t = 1_800_000_000;
        let m = fresh(t);
        // 336 days later: 29 days left, inside the 30-day margin.
        let later = t + 336 * DAY;
        let d = decide(later, Some(&m), &s);
        assert!(
            matches!(&d, Decision::IssueServing(r) if r.contains("expires")),
            "{d:?}"
        );
        let renewed = apply(later, Some(&m), &d, &s).expect("renew");
        assert_eq!(renewed.ca_bundle, m.ca_bundle, "same CA");
        assert_ne!(renewed.tls_crt, m.tls_crt);
        assert_eq!(decide(later, Some(&renewed), &s), Decision::Keep);

        let mut other_sans = s.clone();
        other_sans.sans = service_sans("tokenvend-webhook", "other-ns");
        assert!(
            matches!(decide(t, Some(&m), &other_sans), Decision::IssueServing(r) if r.contains("SANs"))
        );

        let mut foreign = m.clone();
        let other = fresh(t);
        foreign.tls_crt = other.tls_crt;
        foreign.tls_key = other.tls_key;
        assert!(
            matches!(decide(t, Some(&foreign), &s), Decision::IssueServing(r) if r.contains("not signed by the current CA"))
        );

        let mut mismatched = m.clone();
        mismatched.tls_key = fresh(t).tls_key;
        assert!(
            matches!(decide(t, Some(&mismatched), &s), Decision::IssueServing(r) if r.contains("does not match"))
        );
    }

    #[test]
    fn ca_rotation_keeps_the_old_ca_trusted_for_the_overlap_then_drops_it() {
        let s = settings();
        let t = 1_800_000_000;
        let m = fresh(t);
        // Nine years and one day later the CA has < 1 year left.
        let rot = t + (9 * 365 + 1) * DAY;
        let d = decide(rot, Some(&m), &s);
        assert!(matches!(d, Decision::RotateCa(_)), "{d:?}");
        let rotated = apply(rot, Some(&m), &d, &s).expect("rotate");
        let bundle = parse_bundle(&rotated.ca_bundle).expect("bundle");
        assert_eq!(bundle.len(), 2, "new and old CA both trusted");
        let old_ca = &parse_bundle(&m.ca_bundle).expect("old")[0];
        assert_eq!(&bundle[1], old_ca);
        let serving = &parse_bundle(&rotated.tls_crt).expect("serving")[0];
        assert!(
            serving.issued_by(&bundle[0]),
            "serving cert from the new CA"
        );
        // During the overlap: kept as is.
        assert_eq!(decide(rot + DAY, Some(&rotated), &s), Decision::Keep);
        assert_eq!(
            apply(rot + DAY, Some(&rotated), &Decision::Keep, &s)
                .expect("keep")
                .ca_bundle,
            rotated.ca_bundle
        );
        // After the overlap: the old CA leaves the bundle.
        let after = apply(rot + 8 * DAY, Some(&rotated), &Decision::Keep, &s).expect("keep");
        assert_eq!(parse_bundle(&after.ca_bundle).expect("bundle").len(), 1);
        assert_eq!(decide(rot + 8 * DAY, Some(&after), &s), Decision::Keep);
    }
}
