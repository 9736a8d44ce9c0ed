//! `--out-dir`: the same decisions against files, for local runs and the e2e harness.

use std::path::Path;

use tokenvend_core::atomic::write_atomic;
use tokenvend_core::limited;

use crate::plan::{Decision, Material, Settings, apply, decide};

/// Read what a previous run wrote, if anything. A file that is there but cannot be read is an
/// error: taking it for missing would replace a CA that clients still trust.
pub fn read(dir: &Path) -> Result<Option<Material>, String> {
    let r = |name: &str| {
        let path = dir.join(name);
        match limited::read_to_string(&path, limited::MAX_BYTES) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    };
    let Some(ca_bundle) = r("ca.crt")? else {
        return Ok(None);
    };
    Ok(Some(Material {
        ca_bundle,
        // A lost key still leaves the bundle saying which CAs are trusted now.
        ca_key: r("ca.key")?.unwrap_or_default(),
        tls_crt: r("tls.crt")?.unwrap_or_default(),
        tls_key: r("tls.key")?.unwrap_or_default(),
    }))
}

/// Create or renew `ca.crt` (trust bundle), `ca.key`, `tls.crt`, `tls.key` in `dir`.
pub fn reconcile(dir: &Path, s: &Settings, now: i64) -> Result<Decision, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let current = read(dir)?;
    let decision = decide(now, current.as_ref(), s);
    if decision == Decision::Keep
        && current
            .as_ref()
            .is_some_and(|c| apply(now, Some(c), &Decision::Keep, s).ok().as_ref() == Some(c))
    {
        return Ok(decision);
    }
    let m = apply(now, current.as_ref(), &decision, s).map_err(|e| e.to_string())?;
    // Keys first, so no certificate is ever next to a key it does not match for long.
    for (name, content, mode) in [
        ("ca.key", &m.ca_key, 0o600),
        ("ca.crt", &m.ca_bundle, 0o644),
        ("tls.key", &m.tls_key, 0o600),
        ("tls.crt", &m.tls_crt, 0o644),
    ] {
        write_atomic(dir, name, content.as_bytes(), mode)
            .map_err(|e| format!("{}: {e}", dir.join(name).display()))?;
    }
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::pki::{parse_bundle, service_sans};

    const DAY: i64 = 86_400;
    const FILES: [&str; 4] = ["ca.crt", "ca.key", "tls.crt", "tls.key"];

    /// The modification time [`backdate`] gives, which no write now can have.
    fn long_ago() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000)
    }

    /// Dates every file far in the past, so a rewrite shows as a new modification time.
    fn backdate(dir: &Path) {
        for name in FILES {
            std::fs::File::options()
                .write(true)
                .open(dir.join(name))
                .and_then(|f| f.set_modified(long_ago()))
                .expect(name);
        }
    }

    /// The files written since [`backdate`].
    fn rewritten(dir: &Path) -> Vec<&'static str> {
        FILES
            .into_iter()
            .filter(|name| {
                std::fs::metadata(dir.join(name))
                    .and_then(|m| m.modified())
                    .expect(name)
                    != long_ago()
            })
            .collect()
    }

    fn cas_trusted(dir: &Path) -> usize {
        let pem = std::fs::read_to_string(dir.join("ca.crt")).expect("ca.crt");
        parse_bundle(&pem).expect("bundle").len()
    }

    #[test]
    fn a_run_with_nothing_to_change_writes_nothing_and_one_that_only_prunes_writes_the_bundle() {
        let dir = tempfile::tempdir().expect("tmp");
        let dir = dir.path();
        let s = Settings::defaults(
            service_sans("tokenvend-webhook", "tokenvend"),
            "tokenvend-webhook-ca",
        );
        let t = 1_800_000_000;
        let created = reconcile(dir, &s, t).expect("bootstrap");
        assert!(matches!(created, Decision::Create(_)), "{created:?}");
        backdate(dir);
        assert_eq!(reconcile(dir, &s, t + DAY), Ok(Decision::Keep));
        assert_eq!(
            rewritten(dir),
            Vec::<&str>::new(),
            "a keeping run writes nothing"
        );

        // The CA key lost: a new CA, the old one trusted through the overlap.
        std::fs::remove_file(dir.join("ca.key")).expect("rm");
        let later = t + 100 * DAY;
        let created = reconcile(dir, &s, later).expect("new CA");
        assert!(matches!(created, Decision::Create(_)), "{created:?}");
        assert_eq!(cas_trusted(dir), 2);
        // Daily runs: the served certificate switches to the new CA when the overlap ends; the
        // run after drops the old CA, a run whose decision is to keep everything else.
        let pruned = (1..=20).find_map(|day| {
            backdate(dir);
            let d = reconcile(dir, &s, later + day * DAY).expect("daily run");
            (cas_trusted(dir) == 1).then(|| (d, rewritten(dir)))
        });
        assert_eq!(
            pruned,
            Some((Decision::Keep, FILES.to_vec())),
            "the old CA dropped from the bundle by a keeping run, which writes it"
        );
    }
}
