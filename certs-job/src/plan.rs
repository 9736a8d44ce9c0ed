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
    /// New CA, the old one kept in the bundle for the overlap; the serving certificate stays
    /// through the overlap if still good, else a new one from the new CA.
    RotateCa(String),
    /// Nothing usable: a new CA (an old CA certificate that still parses stays trusted for the
    /// overlap), the serving certificate kept or issued as for `RotateCa`.
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
    let bundle = match parse_bundle(&m.ca_bundle) {
        Ok(c) => c,
        Err(e) => return Decision::Create(format!("CA unreadable: {e}")),
    };
    let ca = &bundle[0];
    if m.ca_key.is_empty() {
        return Decision::Create("no CA key (the CA Secret is missing or empty)".into());
    }
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
    if !serving.issued_by(ca) {
        // After a CA rotation, the certificate from the previous CA goes on serving through the
        // overlap: sidecars admitted before the rotation were given only that CA.
        let from_previous = bundle[1..]
            .iter()
            .any(|p| p.is_ca && p.not_after > now && serving.issued_by(p));
        if !from_previous {
            return Decision::IssueServing(
                "serving certificate is not signed by the current CA".into(),
            );
        }
        if now >= ca.not_before + secs(s.ca_overlap) {
            return Decision::IssueServing(format!(
                "serving certificate is from the previous CA, and the {}-day overlap since the \
                 current CA appeared has passed",
                s.ca_overlap.as_secs() / 86_400
            ));
        }
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

/// When the run that turned `before` into `after` replaced the CA that sidecars were given: the
/// time by which pods admitted before it must be restarted (then the serving certificate moves to
/// the new CA, which they do not trust; `now` when it moved already).
pub fn sidecar_restart_deadline(
    now: i64,
    before: Option<&Material>,
    after: &Material,
    s: &Settings,
) -> Option<i64> {
    let before = before?;
    let old = parse_bundle(&before.ca_bundle).ok()?;
    let new = parse_bundle(&after.ca_bundle).ok()?;
    if old[0] == new[0] {
        return None;
    }
    let kept = before.tls_crt == after.tls_crt;
    Some(if kept { now + secs(s.ca_overlap) } else { now })
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

/// The CA bundle to trust: `current` first, then `previous` CAs that have not expired, while the
/// overlap since the current CA appeared lasts or while one of them issued `served`, the
/// certificate in use until this run (the webhook and tokenvend-sts go on serving it until they
/// load its replacement).
pub fn trust_bundle(
    now: i64,
    current: &str,
    previous: &[String],
    served: Option<&str>,
    s: &Settings,
) -> String {
    let current_info = parse_bundle(current).ok().map(|c| c[0].clone());
    let overlap_until = current_info.map_or(0, |c| c.not_before + secs(s.ca_overlap));
    let served = served
        .and_then(|pem| parse_bundle(pem).ok())
        .map(|c| c[0].clone());
    let mut out = current.to_owned();
    for p in previous {
        let keep = parse_bundle(p).is_ok_and(|c| {
            c[0].not_after > now
                && (now < overlap_until || served.as_ref().is_some_and(|sv| sv.issued_by(&c[0])))
        });
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
        // A new CA; the old one (and any older still in overlap) stays trusted for the overlap,
        // on Create too, and the serving certificate it signed, if still good, goes on serving
        // (see `decide`): sidecars admitted before the new CA trust only the old one.
        // (trust_bundle drops whatever does not parse or has expired.)
        (Decision::RotateCa(_) | Decision::Create(_), Some(m)) => {
            let previous = pem_blocks(&m.ca_bundle);
            let ca = generate_ca(&s.ca_name, now, s.ca_validity)?;
            let kept = Material {
                ca_bundle: trust_bundle(now, &ca.cert_pem, &previous, Some(&m.tls_crt), s),
                ca_key: ca.key_pem.clone(),
                tls_crt: m.tls_crt.clone(),
                tls_key: m.tls_key.clone(),
            };
            // Kept only if it needs no renewal before the overlap ends: the old CA's key is
            // gone, so a renewal would switch early, before the deadline older pods are given.
            let lasts = parse_bundle(&m.tls_crt)
                .is_ok_and(|c| c[0].not_after - secs(s.renew_before) > now + secs(s.ca_overlap));
            if lasts && decide(now, Some(&kept), s) == Decision::Keep {
                return Ok(kept);
            }
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
        ca_bundle: trust_bundle(
            now,
            &ca.cert_pem,
            &previous,
            m.map(|m| m.tls_crt.as_str()),
            s,
        ),
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
    fn a_previous_ca_is_trusted_to_the_second_its_overlap_or_its_validity_ends() {
        let s = settings();
        let t = 1_800_000_000;
        let current = generate_ca("new-ca", t, s.ca_validity).expect("new");
        // generate_ca backdates notBefore by 5 minutes; the overlap counts from it.
        let overlap_until = t - 300 + s.ca_overlap.as_secs() as i64;
        let long = generate_ca("old-ca", t - DAY, s.ca_validity).expect("old");
        let bundle = |now: i64, old: &Ca| {
            trust_bundle(
                now,
                &current.cert_pem,
                std::slice::from_ref(&old.cert_pem),
                None,
                &s,
            )
        };
        assert!(bundle(overlap_until - 1, &long).contains(&long.cert_pem));
        assert_eq!(bundle(overlap_until, &long), current.cert_pem);
        // One that expires within the overlap leaves at its notAfter.
        let short =
            generate_ca("short-ca", t - DAY, Duration::from_secs(3 * DAY as u64)).expect("short");
        let expires = t + 2 * DAY;
        assert!(bundle(expires - 1, &short).contains(&short.cert_pem));
        assert_eq!(bundle(expires, &short), current.cert_pem);
    }

    #[test]
    fn a_certificate_from_the_previous_ca_serves_on_only_while_that_ca_is_valid() {
        // The old CA, short-lived, signed the serving certificate; a new CA took over a day later.
        let s = settings();
        let t = 1_800_000_000;
        let old = generate_ca("old-ca", t, Duration::from_secs(2 * DAY as u64)).expect("old");
        let served = issue_serving(&old, &s.sans, t, s.serving_validity).expect("serving");
        let new = generate_ca("new-ca", t + DAY, s.ca_validity).expect("new");
        let m = Material {
            ca_bundle: format!("{}{}", new.cert_pem, old.cert_pem),
            ca_key: new.key_pem.clone(),
            tls_crt: served.cert_pem,
            tls_key: served.key_pem,
        };
        let expires = t + 2 * DAY;
        // Within the overlap, while the old CA is valid: kept (older sidecars trust only it).
        assert_eq!(decide(expires - 1, Some(&m), &s), Decision::Keep);
        // Still within the overlap, but the old CA has expired: nothing verifies the
        // certificate any more, so a new one from the current CA.
        let d = decide(expires, Some(&m), &s);
        assert!(
            matches!(&d, Decision::IssueServing(r) if r.contains("not signed by the current CA")),
            "{d:?}"
        );
        // A previous entry that is no CA does not count either, whatever it names.
        let mut leaf = m.clone();
        leaf.ca_bundle = format!("{}{}", new.cert_pem, m.tls_crt);
        assert!(matches!(
            decide(expires - 1, Some(&leaf), &s),
            Decision::IssueServing(_)
        ));
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
        assert_eq!(
            (&created.tls_crt, &created.tls_key),
            (&m.tls_crt, &m.tls_key),
            "the serving certificate, still good, stays through the overlap"
        );
        assert_eq!(decide(later, Some(&created), &s), Decision::Keep);
        let switched = walk_past_the_overlap(later, &created, &s);
        assert_eq!(
            parse_bundle(&switched.ca_bundle).expect("bundle"),
            vec![bundle[0].clone()]
        );

        // A lost key and a serving certificate past its renewal point: a new one at once.
        let expiring = later + 240 * DAY;
        let created = apply(expiring, Some(&m), &Decision::Create("t".into()), &s).expect("create");
        let serving = &parse_bundle(&created.tls_crt).expect("serving")[0];
        let bundle = parse_bundle(&created.ca_bundle).expect("bundle");
        assert!(
            serving.issued_by(&bundle[0]),
            "serving cert from the new CA"
        );
        assert_eq!(
            bundle.len(),
            2,
            "the certificate still served stays trusted"
        );

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

    /// Daily runs from `start` until the serving certificate comes from the current CA and the
    /// bundle holds that CA alone; checks each step on the way and returns the final material.
    fn walk_past_the_overlap(start: i64, m: &Material, s: &Settings) -> Material {
        let current_ca = parse_bundle(&m.ca_bundle).expect("bundle")[0].clone();
        let old_serving = m.tls_crt.clone();
        let mut m = m.clone();
        let mut switched_on = None;
        for day in 1..=20 {
            let t = start + day * DAY;
            let d = decide(t, Some(&m), s);
            let next = apply(t, Some(&m), &d, s).expect("apply");
            // Keeping, switching the serving certificate and pruning set no restart deadline.
            assert_eq!(sidecar_restart_deadline(t, Some(&m), &next, s), None);
            let bundle = parse_bundle(&next.ca_bundle).expect("bundle");
            let serving = &parse_bundle(&next.tls_crt).expect("serving")[0];
            // Whatever is served is trusted in the bundle written with it.
            assert!(
                bundle.iter().any(|ca| serving.issued_by(ca)),
                "day {day}: served certificate not trusted"
            );
            if m.tls_crt == old_serving && next.tls_crt != old_serving {
                assert!(
                    matches!(&d, Decision::IssueServing(r) if r.contains("overlap")),
                    "{d:?}"
                );
                assert!(serving.issued_by(&current_ca), "switched to the current CA");
                assert!(
                    bundle.len() >= 2,
                    "day {day}: the old CA stays for the run that switches"
                );
                switched_on = Some(day);
            }
            m = next;
            if let Some(switched) = switched_on
                && bundle.len() == 1
            {
                assert!(
                    (7..=8).contains(&switched) && day == switched + 1,
                    "switched on day {switched}, old CA dropped on day {day}"
                );
                assert_eq!(decide(t, Some(&m), s), Decision::Keep);
                return m;
            }
        }
        panic!("the serving certificate never switched to the current CA");
    }

    #[test]
    fn ca_rotation_serves_the_old_certificate_through_the_overlap_then_switches_then_drops_it() {
        let s = settings();
        let t = 1_800_000_000;
        // Nine years of daily runs: the serving certificate was last renewed 20 days ago.
        let rot = t + (9 * 365 + 1) * DAY;
        let mut m = fresh(t);
        m = apply(
            rot - 20 * DAY,
            Some(&m),
            &Decision::IssueServing("t".into()),
            &s,
        )
        .expect("renew");
        let d = decide(rot, Some(&m), &s);
        assert!(matches!(d, Decision::RotateCa(_)), "{d:?}");
        let rotated = apply(rot, Some(&m), &d, &s).expect("rotate");
        assert_eq!(
            sidecar_restart_deadline(rot, Some(&m), &rotated, &s),
            Some(rot + 7 * DAY),
            "pods admitted before have the overlap to restart"
        );
        assert_eq!(sidecar_restart_deadline(rot, None, &rotated, &s), None);
        let bundle = parse_bundle(&rotated.ca_bundle).expect("bundle");
        assert_eq!(bundle.len(), 2, "new and old CA both trusted");
        let old_ca = &parse_bundle(&m.ca_bundle).expect("old")[0];
        assert_eq!(&bundle[1], old_ca);
        assert_ne!(rotated.ca_key, m.ca_key, "the new CA's key is kept");
        assert_eq!(
            (&rotated.tls_crt, &rotated.tls_key),
            (&m.tls_crt, &m.tls_key),
            "sidecars given only the old CA still connect"
        );
        // During the overlap: nothing changes.
        assert_eq!(decide(rot + DAY, Some(&rotated), &s), Decision::Keep);
        assert_eq!(
            apply(rot + DAY, Some(&rotated), &Decision::Keep, &s).expect("keep"),
            rotated
        );
        let last = walk_past_the_overlap(rot, &rotated, &s);
        assert_eq!(parse_bundle(&last.ca_bundle).expect("bundle")[0], bundle[0]);

        // One that would be due for renewal within the overlap (35 days left, renewed at 30) is
        // replaced at once too, so the deadline given is the real one.
        let due_soon = apply(
            rot - 330 * DAY,
            Some(&m),
            &Decision::IssueServing("t".into()),
            &s,
        )
        .expect("renew");
        assert_eq!(decide(rot, Some(&due_soon), &s), d);
        let rotated = apply(rot, Some(&due_soon), &d, &s).expect("rotate");
        assert_ne!(rotated.tls_crt, due_soon.tls_crt);
        assert_eq!(
            sidecar_restart_deadline(rot, Some(&due_soon), &rotated, &s),
            Some(rot)
        );

        // A serving certificate due for renewal at the rotation is issued by the new CA at once.
        let stale = fresh(t);
        let rotated = apply(rot, Some(&stale), &d, &s).expect("rotate");
        let serving = &parse_bundle(&rotated.tls_crt).expect("serving")[0];
        assert!(serving.issued_by(&parse_bundle(&rotated.ca_bundle).expect("b")[0]));
        assert_eq!(
            sidecar_restart_deadline(rot, Some(&stale), &rotated, &s),
            Some(rot),
            "already moved: pods admitted before need a restart now"
        );
    }
}
