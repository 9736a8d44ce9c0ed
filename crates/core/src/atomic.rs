//! Files replaced whole: written to a temp file in the same directory, fsynced, given their mode,
//! then renamed over the old one, so a reader sees the old or the new content, never a part.
//!
//! Every binary that writes a file someone else reads (the sidecar's shared files, the certs
//! job's `--out-dir`, tokenvend-sts's `issuer-docs` and `keygen`) writes it this way.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Suffix of the temp files [`write_atomic`] creates (`.<name>.<16 hex digits>.tmp`).
const TEMP_SUFFIX: &str = ".tmp";
/// Random hex digits in a temp file's name.
const TEMP_HEX_DIGITS: usize = 16;

/// Replace `dir/name` with `bytes` atomically, the new file with permissions `mode`.
///
/// The temp file's name is random and created exclusively, so two writers never share one; on
/// failure it is removed and the old file is left as it was.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    put(dir, name, bytes, mode, Place::Replace)
}

/// Create `dir/name` holding `bytes` whole, with permissions `mode`, failing with
/// `AlreadyExists` (and changing nothing) when it exists: of two concurrent creators, one wins.
pub fn create_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    put(dir, name, bytes, mode, Place::CreateNew)
}

/// How a finished temp file takes its name.
enum Place {
    /// Renamed over whatever has the name.
    Replace,
    /// Linked to the name, which fails when the name exists (rename would not), then removed.
    CreateNew,
}

/// Write `bytes` to a fresh temp file in `dir`, make it durable, give it the name `name` as
/// `place` says, and make that durable. The temp file never outlives the call.
fn put(dir: &Path, name: &str, bytes: &[u8], mode: u32, place: Place) -> std::io::Result<()> {
    let tmp = dir.join(temp_name(name)?);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        // The umask may have narrowed the mode at creation.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        match place {
            Place::Replace => std::fs::rename(&tmp, dir.join(name))?,
            Place::CreateNew => std::fs::hard_link(&tmp, dir.join(name))?,
        }
        // Make the new name itself durable.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() || matches!(place, Place::CreateNew) {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Remove the temp files a writer killed between create and rename (SIGKILL, OOM) left in
/// `dir`, and return their names. Only for a directory with one writer, called before it
/// writes: another writer's temp would be taken from under it.
pub fn remove_stale_temps(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_temp_name(name) && entry.file_type()?.is_file() {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed.push(name.to_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    removed.sort();
    Ok(removed)
}

/// A fresh temp-file name for `name`.
fn temp_name(name: &str) -> std::io::Result<String> {
    Ok(format!(
        ".{name}.{}{TEMP_SUFFIX}",
        random_hex(TEMP_HEX_DIGITS / 2)?
    ))
}

/// Whether `name` is one [`write_atomic`] gives its temp files.
fn is_temp_name(name: &str) -> bool {
    let Some(stem) = name
        .strip_prefix('.')
        .and_then(|n| n.strip_suffix(TEMP_SUFFIX))
    else {
        return false;
    };
    match stem.rsplit_once('.') {
        Some((file, hex)) => {
            !file.is_empty()
                && hex.len() == TEMP_HEX_DIGITS
                && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        }
        None => false,
    }
}

/// Lowercase hex of `n` random bytes from the OS.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf)
        .map_err(|e| std::io::Error::other(format!("OS random number generator: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).expect("meta").permissions().mode() & 0o777
    }

    #[test]
    fn replaces_content_with_the_mode_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().expect("tmp");
        write_atomic(dir.path(), "token", b"first", 0o640).expect("write");
        write_atomic(dir.path(), "token", b"second", 0o644).expect("write");
        assert_eq!(
            std::fs::read(dir.path().join("token")).expect("read"),
            b"second"
        );
        assert_eq!(mode_of(&dir.path().join("token")), 0o644);
        assert_eq!(names(dir.path()), ["token"]);
    }

    #[test]
    fn failure_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().expect("tmp");
        write_atomic(dir.path(), "f", b"old", 0o644).expect("write");
        // Renaming over a directory fails: the old content must stay, the temp must go.
        std::fs::create_dir(dir.path().join("d")).expect("mkdir");
        std::fs::write(dir.path().join("d/x"), b"x").expect("write");
        assert!(write_atomic(dir.path(), "d", b"new", 0o644).is_err());
        assert_eq!(std::fs::read(dir.path().join("f")).expect("read"), b"old");
        assert_eq!(names(dir.path()), ["d", "f"]);
    }

    #[test]
    fn create_makes_a_whole_file_once_and_never_replaces_one() {
        let dir = tempfile::tempdir().expect("tmp");
        create_atomic(dir.path(), "k.pem", b"first", 0o600).expect("created");
        let err = create_atomic(dir.path(), "k.pem", b"second", 0o600).expect_err("exists");
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(
            std::fs::read(dir.path().join("k.pem")).expect("read"),
            b"first"
        );
        assert_eq!(mode_of(&dir.path().join("k.pem")), 0o600);
        assert_eq!(names(dir.path()), ["k.pem"], "no temp file left");
        assert!(create_atomic(&dir.path().join("missing"), "k.pem", b"x", 0o600).is_err());
    }

    #[test]
    fn a_stale_temp_of_a_killed_writer_is_removed_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tmp");
        write_atomic(dir.path(), "token", b"good", 0o644).expect("write");
        let stale = [
            ".token.0123456789abcdef.tmp",
            ".credentials.json.fedcba9876543210.tmp",
        ];
        // Look-alikes that are someone else's: never touched.
        let kept = [
            ".token.tmp",
            ".token.0123456789ABCDEF.tmp",
            ".token.0123456789abcde.tmp",
            "..0123456789abcdef.tmp",
            "token.0123456789abcdef.tmp",
            ".token.0123456789abcdef.tmp.bak",
        ];
        for n in stale.iter().chain(&kept) {
            std::fs::write(dir.path().join(n), b"part").expect("write");
        }
        // A directory of that shape is not a temp file either.
        std::fs::create_dir(dir.path().join(".dir.0000000000000000.tmp")).expect("mkdir");
        let removed = remove_stale_temps(dir.path()).expect("sweep");
        assert_eq!(
            removed,
            [
                ".credentials.json.fedcba9876543210.tmp",
                ".token.0123456789abcdef.tmp"
            ]
        );
        let mut left = names(dir.path());
        left.retain(|n| n != "token" && n != ".dir.0000000000000000.tmp");
        let mut want: Vec<String> = kept.iter().map(|s| (*s).to_owned()).collect();
        want.sort();
        assert_eq!(left, want);
        assert_eq!(
            std::fs::read(dir.path().join("token")).expect("read"),
            b"good"
        );
        assert!(remove_stale_temps(dir.path()).expect("again").is_empty());
    }

    #[test]
    fn the_temp_names_it_writes_are_the_ones_it_sweeps() {
        // A writer that stops after creating its temp leaves exactly such a name.
        for name in ["token", "credentials.json", "a"] {
            let tmp = temp_name(name).expect("rng");
            assert!(is_temp_name(&tmp), "{tmp}");
        }
    }

    #[test]
    fn randomness_looks_random() {
        assert_ne!(random_hex(16).expect("rng"), random_hex(16).expect("rng"));
        assert_eq!(random_hex(16).expect("rng").len(), 32);
    }
}
