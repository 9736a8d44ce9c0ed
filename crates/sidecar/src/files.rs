//! The shared files: written to a temp file in the same directory, fsynced, given their mode,
//! then renamed over the old one, so a reader sees the old or the new content, never a part.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Replace `dir/name` with `bytes` atomically.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.{}.tmp", random_hex(8)?));
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
        std::fs::rename(&tmp, dir.join(name))?;
        // Make the rename itself durable.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Lowercase hex of `n` random bytes from the OS.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf)
        .map_err(|e| std::io::Error::other(format!("OS random number generator: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A uniform draw in [0, 1).
pub fn random01() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_with_the_mode_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().expect("tmp");
        write_atomic(dir.path(), "token", b"first", 0o640).expect("write");
        write_atomic(dir.path(), "token", b"second", 0o644).expect("write");
        assert_eq!(
            std::fs::read(dir.path().join("token")).expect("read"),
            b"second"
        );
        let mode = std::fs::metadata(dir.path().join("token"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o644);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("e").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("token")]);
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
        let temps = std::fs::read_dir(dir.path())
            .expect("ls")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            })
            .count();
        assert_eq!(temps, 0);
    }

    #[test]
    fn randomness_looks_random() {
        assert_ne!(random_hex(16).expect("rng"), random_hex(16).expect("rng"));
        assert_eq!(random_hex(16).expect("rng").len(), 32);
        let r = random01();
        assert!((0.0..1.0).contains(&r));
    }
}
