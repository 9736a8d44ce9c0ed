//! Report an ongoing failure when it starts or changes, and once when it ends, rather than on
//! every retry of a periodic check (a missing Secret, a bad key file).

/// The failure last reported, while one is ongoing.
#[derive(Debug, Default)]
pub struct FailureLatch(Option<String>);

impl FailureLatch {
    /// Record a failure: true when it is new, or differs from the one last reported.
    pub fn failed(&mut self, message: String) -> bool {
        if self.0.as_deref() == Some(message.as_str()) {
            return false;
        }
        self.0 = Some(message);
        true
    }

    /// Record a success: true when it ends a reported failure.
    pub fn recovered(&mut self) -> bool {
        self.0.take().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_reported_when_it_starts_changes_and_ends() {
        let mut latch = FailureLatch::default();
        assert!(!latch.recovered(), "nothing to recover from");
        assert!(latch.failed("key missing".into()));
        assert!(!latch.failed("key missing".into()), "same failure again");
        assert!(latch.failed("cert missing".into()), "a different failure");
        assert!(latch.recovered());
        assert!(!latch.recovered(), "recovery is reported once");
        assert!(
            latch.failed("cert missing".into()),
            "the same failure, anew"
        );
    }
}
