//! What the sidecar writes into the shared directory, and reads back at start and in `probe`.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokenvend_core::Mode;
use tokenvend_core::atomic::{random_hex, write_atomic};
use tokenvend_core::claims::unverified_exp;
use tokenvend_core::contract::files;
use tokenvend_core::creds::{VendedCredentials, VendedToken};
use tokenvend_core::limited;

use crate::exchange::Value;
use tokenvend_core::clock::parse_rfc3339;

/// `credential_process` output format (Version 1).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CredentialProcess {
    /// Always 1.
    pub version: u8,
    /// Access key ID.
    pub access_key_id: String,
    /// Secret.
    pub secret_access_key: String,
    /// Session token.
    pub session_token: String,
    /// RFC 3339.
    pub expiration: String,
}

/// Write the value's file(s): the JWT (no trailing newline) or the credential_process JSON.
pub fn write_value(dir: &Path, value: &Value, mode: u32) -> std::io::Result<()> {
    match value {
        Value::Token(t) => write_atomic(dir, files::WEB_IDENTITY_TOKEN, t.token.as_bytes(), mode),
        Value::Credentials(c) => {
            let doc = CredentialProcess {
                version: 1,
                access_key_id: c.access_key_id.clone(),
                secret_access_key: c.secret_access_key.clone(),
                session_token: c.session_token.clone(),
                expiration: c.expiration.clone(),
            };
            let bytes = serde_json::to_vec(&doc).map_err(std::io::Error::other)?;
            write_atomic(dir, files::CREDENTIAL_PROCESS, &bytes, mode)
        }
    }
}

/// A value found on disk, with the time its file was written.
pub struct Existing {
    /// The value.
    pub value: Value,
    /// File mtime, Unix seconds (taken as the issue time).
    pub written_at: i64,
}

/// Read back what a previous run wrote (for reuse at start and for `probe`).
pub fn read_value(dir: &Path, mode: Mode) -> Result<Existing, String> {
    let path = dir.join(match mode {
        Mode::Credentials => files::CREDENTIAL_PROCESS,
        _ => files::WEB_IDENTITY_TOKEN,
    });
    let bytes =
        limited::read(&path, limited::MAX_BYTES).map_err(|e| format!("{}: {e}", path.display()))?;
    let written_at = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .unwrap_or(0);
    let value = parse_value(bytes, mode).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Existing { value, written_at })
}

/// The value in a file a previous run wrote for `mode`, from the file's bytes (no I/O).
pub fn parse_value(bytes: Vec<u8>, mode: Mode) -> Result<Value, String> {
    match mode {
        Mode::Credentials => {
            let c: CredentialProcess = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            if parse_rfc3339(&c.expiration).is_none() {
                return Err("Expiration is not RFC 3339".into());
            }
            Ok(Value::Credentials(VendedCredentials {
                access_key_id: c.access_key_id,
                secret_access_key: c.secret_access_key,
                session_token: c.session_token,
                expiration: c.expiration,
            }))
        }
        _ => {
            let token = String::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
            unverified_exp(&token).map_err(|e| e.to_string())?;
            Ok(Value::Token(VendedToken {
                token,
                expiration: String::new(),
            }))
        }
    }
}

/// The auth-token file: reuse a previous run's, else create a random one (no trailing newline).
pub fn ensure_auth_token(dir: &Path, mode: u32) -> std::io::Result<String> {
    let path = dir.join(files::AUTH_TOKEN);
    if let Ok(existing) = limited::read_to_string(&path, limited::MAX_BYTES)
        && existing.len() >= 32
        && existing.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Ok(existing);
    }
    let token = random_hex(32)?;
    write_atomic(dir, files::AUTH_TOKEN, token.as_bytes(), mode)?;
    Ok(token)
}

/// Longest reason kept in the last-error file (the kubelet keeps 10 KiB of probe output).
const MAX_REASON_BYTES: usize = 1024;

/// Record why the latest exchange failed, so `probe` (whose output the kubelet puts in the pod's
/// events) can say it, not only that no file is there yet.
pub fn record_failure(dir: &Path, reason: &str, failures: u32, mode: u32) -> std::io::Result<()> {
    let mut end = reason.len().min(MAX_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let text = format!("{} ({failures} in a row)", &reason[..end]);
    write_atomic(dir, files::LAST_ERROR, text.as_bytes(), mode)
}

/// The exchange works again: forget the last failure.
pub fn clear_failure(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(files::LAST_ERROR)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The recorded failure and how long ago it was recorded, if the latest exchange failed.
pub fn last_failure(dir: &Path) -> Option<String> {
    let path = dir.join(files::LAST_ERROR);
    let text = limited::read_to_string(&path, limited::MAX_BYTES).ok()?;
    let ago = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or_else(String::new, |d| format!(" {} s ago", d.as_secs()));
    Some(format!("the last exchange failed{ago}: {}", text.trim()))
}

/// `message`, followed by the recorded failure when the latest exchange failed.
pub fn with_last_failure(dir: &Path, message: String) -> String {
    match last_failure(dir) {
        Some(failure) => format!("{message}; {failure}"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auth_token_of_an_earlier_run_is_kept_and_a_weak_one_replaced() {
        // The init container's token is the one the regular sidecar must serve with (classic
        // style), and a restarted sidecar keeps the one apps already read.
        let dir = tempfile::tempdir().expect("tmp");
        let first = ensure_auth_token(dir.path(), 0o644).expect("made");
        assert!(first.len() >= 32 && first.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(ensure_auth_token(dir.path(), 0o644).expect("kept"), first);
        let path = dir.path().join(files::AUTH_TOKEN);
        assert_eq!(std::fs::read_to_string(&path).expect("file"), first);
        for weak in ["", "short", &format!("{}-", "a".repeat(40))] {
            std::fs::write(&path, weak).expect("write");
            let made = ensure_auth_token(dir.path(), 0o644).expect("replaced");
            assert!(made != weak && made.len() >= 32, "{weak:?}");
            assert_eq!(std::fs::read_to_string(&path).expect("file"), made);
        }
        let exactly_32 = "b".repeat(32);
        std::fs::write(&path, &exactly_32).expect("write");
        assert_eq!(
            ensure_auth_token(dir.path(), 0o644).expect("kept"),
            exactly_32
        );
    }

    #[test]
    fn a_failure_is_recorded_bounded_then_cleared() {
        let dir = tempfile::tempdir().expect("tmp");
        assert_eq!(last_failure(dir.path()), None);
        clear_failure(dir.path()).expect("nothing to clear is fine");
        record_failure(dir.path(), "HTTP 403: not allowed", 3, 0o644).expect("record");
        let f = last_failure(dir.path()).expect("recorded");
        assert!(
            f.starts_with("the last exchange failed 0 s ago: HTTP 403: not allowed (3 in a row)"),
            "{f}"
        );
        assert_eq!(
            with_last_failure(dir.path(), "no credentials yet".into()),
            format!("no credentials yet; {f}")
        );
        // 1 KiB falls inside a two-byte character here: cut before it.
        let long = format!("a{}", "é".repeat(1000));
        record_failure(dir.path(), &long, 4, 0o644).expect("record");
        let kept = std::fs::read_to_string(dir.path().join(files::LAST_ERROR)).expect("read");
        assert_eq!(kept, format!("a{} (4 in a row)", "é".repeat(511)));
        clear_failure(dir.path()).expect("clear");
        assert_eq!(last_failure(dir.path()), None);
        assert_eq!(
            with_last_failure(dir.path(), "no credentials yet".into()),
            "no credentials yet"
        );
        // A failure to remove it is said, not taken for "nothing to clear".
        let file = dir.path().join("not-a-directory");
        std::fs::write(&file, "x").expect("write");
        assert!(clear_failure(&file).is_err());
    }
}
