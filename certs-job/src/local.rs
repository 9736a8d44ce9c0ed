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
