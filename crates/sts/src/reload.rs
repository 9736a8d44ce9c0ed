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

    /// Re-read the file; swap in its new content when usable (tested end to end in
    /// tests/exchange.rs, the file follower itself in tokenvend_core::watched).
    pub fn check(&mut self) -> Checked<()> {
        let current = &self.current;
        self.file
            .check(&self.parse)
            .map(|value| current.store(Arc::new(value)))
    }
}
