//! Wall-clock time as the wire formats carry it: Unix seconds, and RFC 3339 UTC text.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix seconds now (0 for a clock set before 1970).
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Unix seconds as RFC 3339 UTC, e.g. `2026-11-24T05:45:47Z` (times before 1970 as 1970).
pub fn rfc3339(secs: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// RFC 3339 UTC in the one form every AWS SDK reads (`2026-11-24T05:45:47Z`, with fractional
/// seconds or `+00:00` too) to Unix seconds; `None` for anything else. The sidecar hands an
/// accepted `Expiration` to the SDKs as it is, so what they would misread is refused here.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let body = s
        .strip_suffix('Z')
        .or_else(|| s.strip_suffix("+00:00"))?
        .as_bytes();
    let digits = |at: std::ops::Range<usize>| {
        body.get(at)
            .is_some_and(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit))
    };
    let is = |at: usize, c: u8| body.get(at) == Some(&c);
    let shape = digits(0..4)
        && is(4, b'-')
        && digits(5..7)
        && is(7, b'-')
        && digits(8..10)
        && is(10, b'T')
        && digits(11..13)
        && is(13, b':')
        && digits(14..16)
        && is(16, b':')
        && digits(17..19)
        && (body.len() == 19 || (is(19, b'.') && digits(20..body.len())));
    // A leap second is RFC 3339, but JavaScript's `Date` refuses it; humantime's parser (which
    // does the calendar) lets some malformed text through, hence the shape check first.
    if !shape || body[17..19] == *b"60" {
        return None;
    }
    let t = humantime::parse_rfc3339(s).ok()?;
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_rfc3339() {
        assert_eq!(parse_rfc3339("2026-11-24T05:45:47Z"), Some(1_795_499_147));
        assert_eq!(
            parse_rfc3339("2026-11-24T05:45:47+00:00"),
            Some(1_795_499_147)
        );
        assert_eq!(rfc3339(1_795_499_147), "2026-11-24T05:45:47Z");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00Z");
        assert_eq!(parse_rfc3339("tomorrow"), None);
        assert_eq!(
            parse_rfc3339("2026-11-24T05:45:47.250Z"),
            Some(1_795_499_147)
        );
        // What the exchange must never pass on to an SDK, each once accepted here (found by the
        // sidecar's property against the `time` crate's parser): repeated or mixed zones, no
        // zone or a space (JavaScript reads those as local time), an empty fraction, text
        // between a `Z` and the end, and a leap second.
        for bad in [
            "2026-11-24T05:45:47ZZ",
            "2026-11-24T05:45:47+00:00Z",
            "2026-11-24T05:45:47",
            "2026-11-24 05:45:47Z",
            "2026-11-24T05:45:47.Z",
            "2026-11-24T05:45:47Zab0Z",
            "2026-12-31T23:59:60Z",
            "2026-11-24T05:45:47+01:00",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert!(
            now() > 1_795_499_147,
            "this machine's clock is before this code was written"
        );
    }
}
