//! Policy files followed as they change: the session-policy template and the authorization
//! rules. An admin who tightens either (a ConfigMap edited in place, not only a rollout) gets it
//! applied to the next request; a version that cannot be used keeps the one in use, because a
//! broken or missing rules file must never open the service to every identity.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokenvend_core::{Checked, WatchedFile};

/// Builds the object a file's text stands for, or says why it cannot.
pub type Parse<T> = Box<dyn Fn(&str) -> Result<T, String> + Send + Sync>;

/// A policy file whose parsed form is swapped in, for the request handlers, when it changes.
pub struct PolicyFile<T> {
    file: WatchedFile,
    parse: Parse<T>,
    current: Arc<ArcSwap<T>>,
}

impl<T> PolicyFile<T> {
    /// Read and parse the `what` at `path` once (a failure here is the caller's start-up error).
    pub fn load(what: &'static str, path: &Path, parse: Parse<T>) -> Result<Self, String> {
        let (file, text) = WatchedFile::open(what, path)?;
        let current = Arc::new(ArcSwap::from_pointee(parse(&text)?));
        Ok(PolicyFile {
            file,
            parse,
            current,
        })
    }

    /// The object in use, shared with the request handlers.
    pub fn current(&self) -> Arc<ArcSwap<T>> {
        self.current.clone()
    }

    /// The file followed.
    pub fn file(&self) -> &WatchedFile {
        &self.file
    }

    /// Re-read the file; swap in its new content when usable.
    pub fn check(&mut self) -> Checked<()> {
        let current = &self.current;
        self.file
            .check(&self.parse)
            .map(|value| current.store(Arc::new(value)))
    }
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
    fn the_handlers_see_a_usable_change_and_keep_the_one_in_use_otherwise() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("n");
        std::fs::write(&path, "1").expect("write");
        let mut w = PolicyFile::load("number", &path, Box::new(number)).expect("loads");
        let current = w.current();
        assert_eq!(**current.load(), 1);

        std::fs::write(&path, "2").expect("write");
        assert_eq!(w.check(), Checked::Reloaded(()));
        assert_eq!(
            **current.load(),
            2,
            "the handlers' handle sees the new value"
        );

        std::fs::write(&path, "two").expect("write");
        assert!(matches!(w.check(), Checked::Failed(r) if r.starts_with("not a number")));
        std::fs::remove_file(&path).expect("rm");
        assert!(matches!(w.check(), Checked::Failed(_)));
        assert_eq!(**current.load(), 2, "nothing unusable is swapped in");
    }

    #[test]
    fn a_file_unusable_at_start_is_the_callers_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("n");
        assert!(PolicyFile::load("number", &path, Box::new(number)).is_err());
        std::fs::write(&path, "x").expect("write");
        assert!(
            PolicyFile::load("number", &path, Box::new(number))
                .err()
                .is_some_and(|e| e.starts_with("not a number"))
        );
    }
}
