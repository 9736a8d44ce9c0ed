//! RFC 3339 times as the `time` crate reads them, as an oracle for `clock::parse_rfc3339`: shared
//! by the sidecar's times property (`tests/fuzz.rs`) and the `sidecar_answers` libFuzzer target
//! (`#[path]`).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokenvend_core::clock::parse_rfc3339;

/// Where `parse_rfc3339` and the `time` crate disagree on `s`, if they do: a time accepted that
/// the `time` crate reads otherwise or not at all, or one refused that it reads as UTC in the
/// SDKs' form.
pub fn disagreement(s: &str) -> Option<String> {
    let theirs = utc_seconds(s);
    match parse_rfc3339(s) {
        Some(ours) if theirs != Some(ours) => {
            Some(format!("{s:?}: ours {ours}, the time crate's {theirs:?}"))
        }
        None if theirs.is_some_and(|t| in_sdk_form(s, t)) => {
            Some(format!("refused {s:?}, which every SDK reads"))
        }
        _ => None,
    }
}

/// The Unix second of `s` when the `time` crate reads it as RFC 3339 at UTC.
fn utc_seconds(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .filter(|t| t.offset().is_utc())
        .map(OffsetDateTime::unix_timestamp)
}

/// Whether `s`, which the `time` crate read as the UTC second `secs`, is also in the narrower
/// form every AWS SDK reads: a `T`, a `Z` or `+00:00`, no leap second, not before 1970. Of what
/// the `time` crate reads, `parse_rfc3339` must take exactly these.
fn in_sdk_form(s: &str, secs: i64) -> bool {
    s.as_bytes().get(10) == Some(&b'T')
        && (s.ends_with('Z') || s.ends_with("+00:00"))
        && s.get(17..19) != Some("60")
        && secs >= 0
}
