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

/// RFC 3339 UTC (`Z` or `+00:00`) to Unix seconds; `None` for anything else.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let t =
        humantime::parse_rfc3339_weak(s.trim_end_matches('Z').trim_end_matches("+00:00")).ok()?;
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
        assert!(
            now() > 1_795_499_147,
            "this machine's clock is before this code was written"
        );
    }
}
