//! What the sidecar parses from outside (the first byte picks one): the exchange's `/token` and
//! `/credentials` answers, RFC 3339 times, and the files a previous run left behind. Garbage is
//! an error, never a panic; a value `check` accepts is not expired; a time is accepted exactly
//! when the `time` crate reads it as UTC in the form the SDKs read, and formats back to the same
//! instant.
#![no_main]

#[path = "../../crates/sidecar/tests/oracles/rfc3339.rs"]
mod rfc3339;

use libfuzzer_sys::fuzz_target;
use tokenvend_core::Mode;
use tokenvend_core::clock::{parse_rfc3339, rfc3339};
use tokenvend_core::creds::{VendedCredentials, VendedToken};
use tokenvend_sidecar::exchange::Value;
use tokenvend_sidecar::outputs::parse_value;

/// A fixed "now" (2026-01-01T00:00:00Z), so a run replays the same way on any day.
const NOW: i64 = 1_767_225_600;

fn accepted_is_fresh(value: Value) {
    if let Ok(v) = value.check(NOW) {
        assert!(v.expires_at().is_some_and(|e| e > NOW), "{v:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    match pick % 5 {
        0 => {
            if let Ok(t) = serde_json::from_slice::<VendedToken>(rest) {
                accepted_is_fresh(Value::Token(t));
            }
        }
        1 => {
            if let Ok(c) = serde_json::from_slice::<VendedCredentials>(rest) {
                accepted_is_fresh(Value::Credentials(c));
            }
        }
        2 => {
            let Ok(s) = std::str::from_utf8(rest) else {
                return;
            };
            assert_eq!(rfc3339::disagreement(s), None);
            if let Some(t) = parse_rfc3339(s) {
                assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t), "{t}");
            }
        }
        3 => {
            let _ = parse_value(rest.to_vec(), Mode::WebIdentity);
        }
        _ => {
            if let Ok(v) = parse_value(rest.to_vec(), Mode::Credentials) {
                assert!(v.expires_at().is_some());
            }
        }
    }
});
