//! Fuzzing what the sidecar parses from outside: exchange answers (JWT or credentials JSON),
//! RFC 3339 times, and files left by a previous run. Garbage is an error, never a panic, and a
//! value accepted by `check` is never already expired.

#[path = "oracles/rfc3339.rs"]
mod rfc3339;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tokenvend_core::Mode;
use tokenvend_core::clock::now;
use tokenvend_core::creds::{VendedCredentials, VendedToken};
use tokenvend_sidecar::exchange::Value;
use tokenvend_testkit::{agreed, fuzz, mangled};

#[test]
fn fuzz_exchange_answers_and_times() {
    // Times against the `time` crate's RFC 3339 parser: accepted exactly when it reads them as
    // UTC in the form every SDK reads (`T`, then `Z` or `+00:00`, no leap second, from 1970),
    // and then as the same second.
    let times = prop_oneof![
        1 => ".{0,40}",
        4 => mangled(
            "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,12})?(Z|\\+00:00|-00:00|\\+01:30|z)?",
            "0369Zz.:+- T",
            2,
        ),
        2 => "(19[6-9][0-9]|20[0-9]{2})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\\.[0-9]{1,9})?(Z|\\+00:00)",
    ];
    fuzz("times", times, |s| {
        agreed(rfc3339::disagreement(&s))?;
        Ok(())
    });
    fuzz(
        "token-answer",
        proptest::collection::vec(any::<u8>(), 0..400),
        |bytes| {
            if let Ok(t) = serde_json::from_slice::<VendedToken>(&bytes)
                && let Ok(v) = Value::Token(t).check(now())
            {
                prop_assert!(v.expires_at().is_some_and(|e| e > now()));
            }
            Ok(())
        },
    );
    fuzz(
        "credentials-answer",
        (
            "[A-Z0-9]{0,20}",
            ".{0,20}",
            ".{0,20}",
            prop_oneof![
                ".{0,30}",
                "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]Z"
            ],
        ),
        |(a, s, t, e)| {
            let c = VendedCredentials {
                access_key_id: a,
                secret_access_key: s,
                session_token: t,
                expiration: e,
            };
            if let Ok(v) = Value::Credentials(c).check(now()) {
                prop_assert!(v.expires_at().is_some_and(|x| x > now()));
            }
            Ok(())
        },
    );
}

#[test]
fn fuzz_files_from_a_previous_run() {
    let dir = tempfile::tempdir().expect("tmp");
    fuzz(
        "existing-files",
        (
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<bool>(),
        ),
        |(bytes, creds)| {
            let (mode, name) = if creds {
                (Mode::Credentials, "credentials.json")
            } else {
                (Mode::WebIdentity, "token")
            };
            std::fs::write(dir.path().join(name), &bytes)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let _ = tokenvend_sidecar::outputs::read_value(dir.path(), mode);
            Ok(())
        },
    );
}
