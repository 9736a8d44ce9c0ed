//! Policy files followed as they change: the session-policy template and the authorization
//! rules. An admin who tightens either (a ConfigMap edited in place, not only a rollout) gets it
//! applied to the next request; a version that cannot be used keeps the one in use, because a
//! broken or missing rules file must never open the service to every identity.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokenvend_core::FailureLatch;

/// Builds the object a file's text stands for, or says why it cannot.
pub type Parse<T> = Box<dyn Fn(&str) -> Result<T, String> + Send + Sync>;

/// What one check of a [`WatchedFile`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Same text as the one in use.
    Unchanged,
    /// Changed, usable, and now in use.
    Reloaded,
    /// Usable again after a reported failure, with the text already in use.
    Recovered,
    /// Unreadable or unusable: the previous one stays. Reported once per distinct failure.
    Failed(String),
    /// The failure already reported, still there.
    StillFailing,
}

/// A file whose parsed form is swapped in when its text changes.
pub struct WatchedFile<T> {
    what: &'static str,
    path: PathBuf,
    text: String,
    parse: Parse<T>,
    current: Arc<ArcSwap<T>>,
    latch: FailureLatch,
}

impl<T> WatchedFile<T> {
    /// Read and parse the `what` at `path` once (a failure here is the caller's start-up error).
    pub fn load(what: &'static str, path: &Path, parse: Parse<T>) -> Result<Self, String> {
        let text = read(what, path)?;
        let value = parse(&text)?;
        Ok(WatchedFile {
            what,
            path: path.to_owned(),
            text,
            parse,
            current: Arc::new(ArcSwap::from_pointee(value)),
            latch: FailureLatch::default(),
        })
    }

    /// The object in use, shared with the request handlers.
    pub fn current(&self) -> Arc<ArcSwap<T>> {
        self.current.clone()
    }

    /// What the file is, e.g. "rules file" (for logs and metrics).
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-read the file; swap in its new content when usable.
    pub fn check(&mut self) -> Checked {
        let parsed = read(self.what, &self.path).and_then(|text| {
            if text == self.text {
                return Ok(None);
            }
            (self.parse)(&text).map(|value| Some((text, value)))
        });
        match parsed {
            Ok(next) => {
                let recovered = self.latch.recovered();
                match next {
                    Some((text, value)) => {
                        self.current.store(Arc::new(value));
                        self.text = text;
                        Checked::Reloaded
                    }
                    None if recovered => Checked::Recovered,
                    None => Checked::Unchanged,
                }
            }
            Err(reason) if self.latch.failed(reason.clone()) => Checked::Failed(reason),
            Err(_) => Checked::StillFailing,
        }
    }
}

fn read(what: &str, path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(text: &str) -> Result<u32, String> {
        text.trim()
            .parse()
            .map_err(|e| format!("not a number: {e}"))
    }

    #[test]
    fn a_changed_usable_file_is_swapped_in_and_anything_else_keeps_the_one_in_use() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("n");
        std::fs::write(&path, "1").expect("write");
        let mut w = WatchedFile::load("number", &path, Box::new(number)).expect("loads");
        let current = w.current();
        assert_eq!(**current.load(), 1);
        assert_eq!(w.check(), Checked::Unchanged);

        std::fs::write(&path, "2").expect("write");
        assert_eq!(w.check(), Checked::Reloaded);
        assert_eq!(
            **current.load(),
            2,
            "the handlers' handle sees the new value"
        );

        std::fs::write(&path, "two").expect("write");
        assert!(
            matches!(w.check(), Checked::Failed(r) if r.starts_with("not a number")),
            "an unusable version is reported"
        );
        assert_eq!(w.check(), Checked::StillFailing, "once");
        assert_eq!(**current.load(), 2, "and the one in use stays");

        std::fs::remove_file(&path).expect("rm");
        assert!(
            matches!(w.check(), Checked::Failed(r) if r.starts_with("number ") && r.contains("No such file")),
            "a missing file is a new failure"
        );
        assert_eq!(**current.load(), 2, "a missing file loosens nothing");

        std::fs::write(&path, "2").expect("write");
        assert_eq!(w.check(), Checked::Recovered, "back to the text in use");
        std::fs::write(&path, "3").expect("write");
        assert_eq!(w.check(), Checked::Reloaded);
        assert_eq!(**current.load(), 3);
    }

    #[test]
    fn a_file_unusable_at_start_is_the_callers_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("n");
        assert!(WatchedFile::load("number", &path, Box::new(number)).is_err());
        std::fs::write(&path, "x").expect("write");
        assert!(
            WatchedFile::load("number", &path, Box::new(number))
                .err()
                .is_some_and(|e| e.starts_with("not a number"))
        );
    }
}
