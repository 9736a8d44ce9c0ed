//! Reading the files a setting names, up to a size limit. A path set to the wrong file (a log,
//! a device such as `/dev/zero`) is then a clear error instead of a process that reads until the
//! kernel kills it for memory, with nothing in its log to say why.

use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The most a settings or secret file may hold: 1 MiB, what a ConfigMap or Secret can carry.
pub const MAX_BYTES: usize = 1024 * 1024;

/// The bytes of the file at `path`, or an error of kind `FileTooLarge` past `limit` bytes (only
/// `limit + 1` bytes are ever read). Nothing here waits: a named pipe is refused, and a device
/// that has nothing to read yet (a terminal) is an error instead of a read that never returns.
pub fn read(path: &Path, limit: usize) -> io::Result<Vec<u8>> {
    // Non-blocking, so that opening a pipe does not wait for a writer and reading a terminal
    // does not wait for input; regular files ignore the flag.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    // Checked on the open file, so the answer is about what is read, not about an earlier path.
    if file.metadata()?.file_type().is_fifo() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a named pipe, not a file: is it the right path?",
        ));
    }
    let mut bytes = Vec::new();
    match file.take(limit as u64 + 1).read_to_end(&mut bytes) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a device waiting for input, not a file: is it the right path?",
            ));
        }
        Err(e) => return Err(e),
    }
    if bytes.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("larger than {} KiB: is it the right file?", limit / 1024),
        ));
    }
    Ok(bytes)
}

/// The text of the file at `path`, as [`read`] reads it; not UTF-8 is an `InvalidData` error.
pub fn read_to_string(path: &Path, limit: usize) -> io::Result<String> {
    String::from_utf8(read(path, limit)?).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not UTF-8 text: {}", e.utf8_error()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_up_to_the_limit_is_read_and_anything_larger_is_refused_without_reading_it_all() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("f");
        std::fs::write(&path, [b'a'; 2048]).expect("write");
        assert_eq!(read(&path, 2048).expect("at the limit").len(), 2048);
        assert_eq!(read_to_string(&path, 4096).expect("text").len(), 2048);
        std::fs::write(&path, [b'a'; 2049]).expect("write");
        let err = read(&path, 2048).expect_err("over the limit");
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        assert_eq!(err.to_string(), "larger than 2 KiB: is it the right file?");
        // A device without end: refused once past the limit instead of read until memory runs out.
        let err = read(Path::new("/dev/zero"), MAX_BYTES).expect_err("endless");
        assert_eq!(
            err.to_string(),
            "larger than 1024 KiB: is it the right file?"
        );
        let err = read_to_string(Path::new("/dev/zero"), MAX_BYTES).expect_err("endless");
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
    }

    #[test]
    fn errors_keep_their_kind_and_say_what_is_wrong() {
        let dir = tempfile::tempdir().expect("tmp");
        let missing = read(&dir.path().join("missing"), MAX_BYTES).expect_err("missing");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        let path = dir.path().join("bin");
        std::fs::write(&path, [0xff, 0xfe]).expect("write");
        let err = read_to_string(&path, MAX_BYTES).expect_err("binary");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().starts_with("not UTF-8 text"), "{err}");
        // A directory opens but cannot be read: the system's own reason, not a guess.
        let err = read(dir.path(), MAX_BYTES).expect_err("a directory");
        assert_eq!(err.kind(), io::ErrorKind::IsADirectory, "{err}");
        // Opening a named pipe would wait for a writer for ever.
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        refused_at_once(&fifo, "a named pipe, not a file: is it the right path?");
    }

    /// `path` is refused as `InvalidInput` with `message`, within 5 s: read on a thread, so a
    /// regression that waits fails the test instead of hanging it.
    fn refused_at_once(path: &Path, message: &str) {
        let (tx, rx) = std::sync::mpsc::channel();
        let path = path.to_owned();
        std::thread::spawn(move || tx.send(read(&path, MAX_BYTES)));
        let err = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("answered at once, not waiting")
            .expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(err.to_string(), message);
    }

    #[test]
    fn a_device_with_nothing_to_read_is_refused_instead_of_waited_on() {
        // Opening /dev/ptmx makes a new terminal whose master side has nothing to read until
        // someone writes: a blocking read would never return.
        refused_at_once(
            Path::new("/dev/ptmx"),
            "a device waiting for input, not a file: is it the right path?",
        );
        // Devices that answer at once are still read: /dev/null is an empty file.
        assert_eq!(read(Path::new("/dev/null"), MAX_BYTES).expect("empty"), b"");
    }
}
