//! A settings file followed as it changes (a ConfigMap edited in place, a rotated CA bundle):
//! re-read on every check, handed on only when its text changed and its new version is usable,
//! otherwise the version in use stays. Each failure is reported once, as [`FailureLatch`] does.

use std::path::{Path, PathBuf};

use crate::FailureLatch;

/// What one check of a [`WatchedFile`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked<T> {
    /// Same text as the one in use.
    Unchanged,
    /// Changed and usable: the caller puts this in use; its text is now the one in use.
    Reloaded(T),
    /// Usable again after a reported failure, with the text already in use.
    Recovered,
    /// Unreadable or unusable: the version in use stays. Reported once per distinct failure.
    Failed(String),
    /// A failure already reported, or (for a patient file) seen once so far.
    StillFailing,
}

impl<T> Checked<T> {
    /// The same finding, with a reloaded value passed through `f`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Checked<U> {
        match self {
            Checked::Reloaded(value) => Checked::Reloaded(f(value)),
            Checked::Unchanged => Checked::Unchanged,
            Checked::Recovered => Checked::Recovered,
            Checked::Failed(reason) => Checked::Failed(reason),
            Checked::StillFailing => Checked::StillFailing,
        }
    }
}

/// A file whose text is compared with the version in use on each check.
#[derive(Debug)]
pub struct WatchedFile {
    what: &'static str,
    path: PathBuf,
    in_use: String,
    reported: FailureLatch,
    patient: bool,
    pending: Option<String>,
}

impl WatchedFile {
    /// Follow `what` at `path`, whose text `in_use` is the version in use.
    pub fn new(what: &'static str, path: &Path, in_use: String) -> Self {
        WatchedFile {
            what,
            path: path.to_owned(),
            in_use,
            reported: FailureLatch::default(),
            patient: false,
            pending: None,
        }
    }

    /// Read `what` at `path` for the first time: the follower and the text (a failure here is
    /// the caller's start-up error).
    pub fn open(what: &'static str, path: &Path) -> Result<(Self, String), String> {
        let text = read(what, path)?;
        Ok((WatchedFile::new(what, path, text.clone()), text))
    }

    /// Report a failure only when the next check finds it still there: for a file whose writer
    /// may be caught midway, which the next check no longer sees.
    pub fn patient(mut self) -> Self {
        self.patient = true;
        self
    }

    /// What the file is, e.g. "rules file" (for logs and metrics).
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-read the file; a changed text goes through `parse`, and is the one in use once that
    /// succeeds.
    pub fn check<T>(&mut self, parse: impl FnOnce(&str) -> Result<T, String>) -> Checked<T> {
        let parsed = read(self.what, &self.path).and_then(|text| {
            if text == self.in_use {
                return Ok(None);
            }
            parse(&text).map(|value| Some((text, value)))
        });
        match parsed {
            Ok(next) => {
                self.pending = None;
                let recovered = self.reported.recovered();
                match next {
                    Some((text, value)) => {
                        self.in_use = text;
                        Checked::Reloaded(value)
                    }
                    None if recovered => Checked::Recovered,
                    None => Checked::Unchanged,
                }
            }
            Err(reason) if self.patient && self.pending.as_deref() != Some(reason.as_str()) => {
                self.pending = Some(reason);
                Checked::StillFailing
            }
            Err(reason) if self.reported.failed(reason.clone()) => Checked::Failed(reason),
            Err(_) => Checked::StillFailing,
        }
    }
}

fn read(what: &str, path: &Path) -> Result<String, String> {
    crate::limited::read_to_string(path, crate::limited::MAX_BYTES)
        .map_err(|e| format!("{what} {}: {e}", path.display()))
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
    fn a_changed_usable_file_is_handed_on_and_anything_else_keeps_the_one_in_use() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("n");
        std::fs::write(&path, "1").expect("write");
        let (mut w, text) = WatchedFile::open("number", &path).expect("opens");
        assert_eq!(text, "1");
        assert_eq!(w.check(number), Checked::Unchanged);

        std::fs::write(&path, "2").expect("write");
        assert_eq!(w.check(number), Checked::Reloaded(2));
        assert_eq!(w.check(number), Checked::Unchanged, "2 is now in use");

        std::fs::write(&path, "two").expect("write");
        assert!(
            matches!(w.check(number), Checked::Failed(r) if r.starts_with("not a number")),
            "an unusable version is reported"
        );
        assert_eq!(w.check(number), Checked::StillFailing, "once");

        std::fs::remove_file(&path).expect("rm");
        assert!(
            matches!(w.check(number), Checked::Failed(r) if r.starts_with("number ") && r.contains("No such file")),
            "a missing file is a new failure"
        );

        std::fs::write(&path, "2").expect("write");
        assert_eq!(
            w.check(number),
            Checked::Recovered,
            "back to the text in use"
        );
        std::fs::write(&path, "3").expect("write");
        assert_eq!(w.check(number), Checked::Reloaded(3));
    }

    #[test]
    fn a_patient_file_reports_only_a_failure_the_next_check_still_finds() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("n");
        let mut w = WatchedFile::new("number", &path, "1".into()).patient();
        std::fs::write(&path, "tw").expect("a writer midway");
        assert_eq!(w.check(number), Checked::StillFailing, "not yet reported");
        std::fs::write(&path, "2").expect("and done");
        assert_eq!(
            w.check(number),
            Checked::Reloaded(2),
            "a passing failure is never reported"
        );

        std::fs::write(&path, "two").expect("write");
        assert_eq!(w.check(number), Checked::StillFailing);
        assert!(
            matches!(w.check(number), Checked::Failed(r) if r.starts_with("not a number")),
            "the same failure on the next check is"
        );
        assert_eq!(w.check(number), Checked::StillFailing, "once");
        std::fs::write(&path, "2").expect("write");
        assert_eq!(w.check(number), Checked::Recovered);
    }

    #[test]
    fn a_file_unreadable_at_start_is_the_callers_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let err = WatchedFile::open("number", &dir.path().join("n")).expect_err("missing");
        assert!(
            err.starts_with("number ") && err.contains("No such file"),
            "{err}"
        );
    }
}
