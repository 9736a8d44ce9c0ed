//! When to refresh and how long to back off: pure functions of (now, validity, policy, a random
//! draw), so the schedule is tested without clocks.

use std::time::{Duration, SystemTime};

/// Refresh policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Share of the lifetime after which to refresh (0.1-0.9).
    pub share: f64,
    /// Refresh no later than this many seconds before expiry, when the lifetime allows it
    /// (boto3 starts its own refresh 15 minutes before expiry).
    pub min_remaining: i64,
    /// Up to this share of the wait is taken off at random, so pods do not refresh in lockstep.
    pub jitter: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            share: 0.5,
            min_remaining: 20 * 60,
            jitter: 0.1,
        }
    }
}

/// The Unix time at which a value valid from `issued` to `expires` is due for refresh (before jitter).
pub fn due_at(issued: i64, expires: i64, p: &Policy) -> i64 {
    let life = (expires - issued).max(0);
    let at = issued + (life as f64 * p.share) as i64;
    if life > p.min_remaining {
        // A fresher value has more than `min_remaining` left: never keep ours past that point.
        at.min(expires - p.min_remaining)
    } else {
        at
    }
}

/// How long to wait from `now` before refreshing; `rand01` in [0, 1) draws the jitter.
pub fn refresh_delay(now: i64, issued: i64, expires: i64, p: &Policy, rand01: f64) -> Duration {
    let wait = (due_at(issued, expires, p) - now).max(0) as f64;
    let jittered = wait * (1.0 - p.jitter * rand01.clamp(0.0, 1.0));
    Duration::from_secs_f64(jittered.max(0.0))
}

/// The validity the startup probe asks of a value valid from `issued` to `expires`: `min_valid`
/// seconds, but never more than half its lifetime, which a fresh value has left at its first
/// refresh. A value cannot hold more than its lifetime: tokenvend-sts may issue tokens for as
/// little as 60 s, and a threshold above that would keep every pod in Init.
pub fn required_validity(min_valid: i64, issued: i64, expires: i64) -> i64 {
    min_valid.min((expires - issued).max(0) / 2)
}

/// The longest the refresher sleeps before looking at the wall clock again. Timers run on the
/// monotonic clock, which stands still while the machine is suspended (a laptop's kind cluster, a
/// paused VM): one long sleep would outlast the value it was meant to refresh by the whole suspension.
pub const MAX_NAP: Duration = Duration::from_secs(10);

/// The next sleep on the way to the wall-clock time `due`: `None` once it is reached, else what is
/// left, at most [`MAX_NAP`].
pub fn next_nap(now: SystemTime, due: SystemTime) -> Option<Duration> {
    match due.duration_since(now) {
        Ok(left) if !left.is_zero() => Some(left.min(MAX_NAP)),
        _ => None,
    }
}

/// First retry cap (seconds).
pub const BACKOFF_BASE: f64 = 1.0;
/// Largest retry cap (seconds).
pub const BACKOFF_MAX: f64 = 60.0;

/// Exponential backoff with full jitter: uniform in [0, min(60 s, 1 s * 2^attempt)).
/// `attempt` counts failures so far, starting at 0.
pub fn backoff(attempt: u32, rand01: f64) -> Duration {
    let cap = (BACKOFF_BASE * 2f64.powi(attempt.min(16) as i32)).min(BACKOFF_MAX);
    Duration::from_secs_f64(cap * rand01.clamp(0.0, 1.0))
}

/// The wait before retrying a failed refresh of a value that expires at `expires` (Unix
/// seconds): the [`backoff`], but while the value lives, at most half of what is left of it (at
/// least a second), so a service back in time is asked before the value runs out.
pub fn retry_delay(attempt: u32, rand01: f64, now: i64, expires: Option<i64>) -> Duration {
    let wait = backoff(attempt, rand01);
    match expires {
        Some(exp) if exp > now => wait.min(Duration::from_secs(((exp - now) / 2).max(1) as u64)),
        _ => wait,
    }
}

/// The wait before the next exchange, given the expiry of the value in use (Unix seconds;
/// `None` when there is none yet) and the failed exchanges since the last success: none for a
/// first value, the [`refresh_delay`] while exchanges work, the [`retry_delay`] after a failure.
pub fn next_wait(
    now: i64,
    issued: i64,
    expires: Option<i64>,
    failures: u32,
    p: &Policy,
    rand01: f64,
) -> Duration {
    match (expires, failures) {
        (None, 0) => Duration::ZERO,
        (Some(exp), 0) => refresh_delay(now, issued, exp, p, rand01),
        (exp, n) => retry_delay(n - 1, rand01, now, exp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;

    #[test]
    fn the_loop_waits_for_nothing_first_then_the_refresh_then_the_backoff() {
        let p = Policy::default();
        let secs = Duration::from_secs_f64;
        // At now = 1_000, for a value issued then: an hour's, one with 10 s left, an expired one.
        let (hour, ten_s, expired) = (Some(1_000 + HOUR), Some(1_010), Some(900));
        // (expires, failures, rand01) -> wait
        for (expires, failures, rand01, want, why) in [
            (None, 0, 0.9, secs(0.0), "nothing yet: now"),
            (hour, 0, 0.0, secs(1800.0), "half-way"),
            (hour, 0, 0.5, secs(1710.0), "5 % jitter"),
            (expired, 0, 0.5, secs(0.0), "expired: now"),
            (hour, 1, 0.5, secs(0.5), "first failure: within 1 s"),
            (hour, 3, 0.5, secs(2.0), "third: within 4 s"),
            (hour, 40, 0.5, secs(30.0), "many: within 60 s"),
            (ten_s, 40, 0.5, secs(5.0), "half of what is left"),
            (None, 2, 0.5, secs(1.0), "failing from the start"),
            (None, u32::MAX, 0.5, secs(30.0), "no overflow"),
        ] {
            let got = next_wait(1_000, 1_000, expires, failures, &p, rand01);
            assert_eq!(got, want, "{why}");
        }
    }

    #[test]
    fn retries_never_sleep_past_half_of_what_a_value_has_left() {
        // (attempt, now, expires) -> at most
        let at = |attempt, now, exp| retry_delay(attempt, 0.999, now, exp);
        assert!(
            at(4, 0, Some(3600)) > Duration::from_secs(15),
            "a long-lived value: backoff"
        );
        assert_eq!(
            at(4, 100, Some(110)),
            Duration::from_secs(5),
            "10 s left: 5 s"
        );
        assert_eq!(
            at(6, 100, Some(101)),
            Duration::from_secs(1),
            "at least a second"
        );
        assert!(
            at(6, 100, Some(90)) > Duration::from_secs(59),
            "expired: backoff"
        );
        assert!(
            at(6, 100, None) > Duration::from_secs(59),
            "no value: backoff"
        );
        assert!(
            at(0, 100, Some(110)) < Duration::from_secs(1),
            "never longer than backoff"
        );
    }

    #[test]
    fn the_probe_asks_at_most_half_a_values_lifetime() {
        // (min_valid, lifetime) -> required
        for (min_valid, life, want) in [
            (300, 3600, 300),   // the usual hour: the threshold as given
            (300, 900, 300),    // AWS's shortest session
            (300, 120, 60),     // a 2-minute token: half of it
            (300, 60, 30),      // tokenvend-sts's shortest
            (7200, 3600, 1800), // more than a value can hold
            (0, 3600, 0),
            (300, 0, 0),
        ] {
            assert_eq!(
                required_validity(min_valid, 1_000, 1_000 + life),
                want,
                "{min_valid} of {life}"
            );
        }
        // A value issued after its expiry (clock trouble) asks nothing more than not expired.
        assert_eq!(required_validity(300, 2_000, 1_000), 0);
    }

    #[test]
    fn one_hour_values_refresh_at_half_life() {
        let p = Policy::default();
        assert_eq!(due_at(0, HOUR, &p), 1800);
        assert_eq!(
            refresh_delay(0, 0, HOUR, &p, 0.0),
            Duration::from_secs(1800)
        );
        // Jitter only brings the refresh forward, by at most 10% of the wait.
        let d = refresh_delay(0, 0, HOUR, &p, 0.999);
        assert!(
            d < Duration::from_secs(1800) && d >= Duration::from_secs(1620),
            "{d:?}"
        );
    }

    #[test]
    fn never_keeps_a_value_with_less_than_20_minutes_left_when_a_fresher_one_has_more() {
        let p = Policy {
            share: 0.9,
            ..Policy::default()
        };
        // 12-hour credentials at share 0.9 would leave 72 min; 1-hour ones would leave 6 min.
        assert_eq!(due_at(0, 12 * HOUR, &p), (0.9 * 12.0 * HOUR as f64) as i64);
        assert_eq!(due_at(0, HOUR, &p), HOUR - 1200);
        for life in [1300, 1800, HOUR, 6 * HOUR, 12 * HOUR] {
            for share in [0.1, 0.5, 0.9] {
                let p = Policy {
                    share,
                    ..Policy::default()
                };
                assert!(
                    life - due_at(0, life, &p) >= 1200,
                    "life {life} share {share}"
                );
            }
        }
    }

    #[test]
    fn short_lifetimes_refresh_at_their_share() {
        let p = Policy::default();
        // 15-minute credentials cannot have 20 minutes left: refresh half-way.
        assert_eq!(due_at(100, 1000, &p), 550);
        // Exactly 20 minutes: half-way too, not at once (which would refresh in a loop).
        assert_eq!(due_at(0, 1200, &p), 600);
        assert_eq!(due_at(0, 60, &p), 30);
    }

    #[test]
    fn overdue_or_expired_values_refresh_now() {
        let p = Policy::default();
        assert_eq!(refresh_delay(5000, 0, HOUR, &p, 0.5), Duration::ZERO);
        assert_eq!(refresh_delay(10, 0, 0, &p, 0.5), Duration::ZERO);
        assert_eq!(refresh_delay(0, 0, -5, &p, 0.5), Duration::ZERO);
    }

    #[test]
    fn sleeps_are_naps_that_end_at_the_wall_clock_due_time() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let due = t0 + Duration::from_secs(1800);
        assert_eq!(next_nap(t0, due), Some(MAX_NAP));
        assert_eq!(
            next_nap(due - Duration::from_millis(1500), due),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(next_nap(due, due), None);
        // Woken from a nap after a two-hour suspension: due long ago, so no more sleeping.
        assert_eq!(next_nap(t0 + Duration::from_secs(7200), due), None);
        // The wall clock stepped back: still naps, never one long sleep.
        assert_eq!(next_nap(t0 - Duration::from_secs(7200), due), Some(MAX_NAP));
    }

    #[test]
    fn backoff_is_full_jitter_doubling_from_1s_to_60s() {
        assert_eq!(backoff(0, 0.0), Duration::ZERO);
        assert!(backoff(0, 0.999) < Duration::from_secs(1));
        assert!(
            backoff(3, 0.999) < Duration::from_secs(8)
                && backoff(3, 0.999) > Duration::from_secs(7)
        );
        for attempt in [6, 7, 20, u32::MAX] {
            let d = backoff(attempt, 0.999);
            assert!(
                d <= Duration::from_secs(60) && d > Duration::from_secs(59),
                "{attempt}: {d:?}"
            );
        }
    }
}
