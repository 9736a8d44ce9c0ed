//! AssumeRole through the AWS SDK, behind a cache: identical (role, namespace, service account,
//! policy) requests share one result until about half-way through its life, and concurrent
//! misses wait for the one STS call in flight instead of making their own, whether it succeeds or
//! fails. When a refresh fails, the previous result is served while it still has a while to live.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sts::primitives::DateTimeFormat;
use sha2::{Digest, Sha256};
use tokenvend_core::Identity;
use tokenvend_core::clock::now;
use tokenvend_core::creds::VendedCredentials;

/// Credentials from STS with their expiry (Unix seconds).
#[derive(Clone)]
pub struct Issued {
    /// Wire form.
    pub creds: VendedCredentials,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
}

/// STS failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("STS AssumeRole failed: {0}")]
pub struct StsError(pub String);

/// AssumeRole with a timeout.
pub struct Sts {
    client: aws_sdk_sts::Client,
    /// For logs only: scheme://host[:port].
    endpoint: String,
    duration_seconds: i32,
    timeout: Duration,
}

impl Sts {
    /// A caller through `client` (whose calls go to `endpoint`, as logged) with the given
    /// session duration and per-call timeout.
    pub fn new(
        client: aws_sdk_sts::Client,
        endpoint: String,
        duration_seconds: i32,
        timeout: Duration,
    ) -> Self {
        Sts {
            client,
            endpoint,
            duration_seconds,
            timeout,
        }
    }

    /// Where the calls go, as scheme://host[:port] for logs.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// One AssumeRole call.
    pub async fn assume_role(
        &self,
        role: &str,
        session_name: &str,
        policy: Option<&str>,
    ) -> Result<Issued, StsError> {
        let call = self
            .client
            .assume_role()
            .role_arn(role)
            .role_session_name(session_name)
            .duration_seconds(self.duration_seconds)
            .set_policy(policy.map(str::to_owned))
            .send();
        let out = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| StsError(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| StsError(sdk_error(&e)))?;
        let c = out
            .credentials
            .ok_or_else(|| StsError("response has no Credentials".into()))?;
        let expiration = c
            .expiration
            .fmt(DateTimeFormat::DateTime)
            .map_err(|e| StsError(format!("bad Expiration: {e}")))?;
        Ok(Issued {
            expires_at: c.expiration.secs(),
            creds: VendedCredentials {
                access_key_id: c.access_key_id,
                secret_access_key: c.secret_access_key,
                session_token: c.session_token,
                expiration,
            },
        })
    }
}

fn sdk_error<E: std::error::Error + 'static>(e: &aws_sdk_sts::error::SdkError<E>) -> String {
    use aws_sdk_sts::error::SdkError;
    match e {
        SdkError::ServiceError(s) => {
            let mut m = s.err().to_string();
            if m.is_empty() {
                m = format!("HTTP {}", s.raw().status().as_u16());
            }
            m
        }
        SdkError::TimeoutError(_) => "timed out".into(),
        SdkError::DispatchFailure(d) => {
            let cause = d
                .as_connector_error()
                .and_then(std::error::Error::source)
                .map(crate::causes)
                .unwrap_or_default();
            if d.is_io() || d.is_timeout() {
                format!("cannot reach STS: {cause}")
            } else {
                // Not the network: typically the service's own credentials (the provider
                // chain's reason).
                format!("request not sent: {cause}")
            }
        }
        other => other.to_string(),
    }
}

/// `RoleSessionName` for an identity: `<namespace>.<serviceaccount>` made valid for AWS.
pub fn role_session_name(id: &Identity) -> String {
    tokenvend_core::session::session_name(&format!("{}.{}", id.namespace, id.service_account))
}

/// Cache key: everything that makes two AssumeRole calls interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Role ARN.
    pub role: String,
    /// Session name (derived from namespace and service account).
    pub session: String,
    /// SHA-256 of the rendered policy.
    pub policy: [u8; 32],
}

impl CacheKey {
    /// Key for a request.
    pub fn new(role: &str, session: &str, policy: Option<&str>) -> Self {
        CacheKey {
            role: role.to_owned(),
            session: session.to_owned(),
            policy: Sha256::digest(policy.unwrap_or_default().as_bytes()).into(),
        }
    }
}

/// A previous result is still served when a refresh fails, if it lives at least this long
/// (seconds): enough for a caller to use it and come back, where an error would leave a new pod
/// with nothing during an STS outage.
pub const STALE_MIN_REMAINING: i64 = 5 * 60;

struct Entry {
    issued: Issued,
    refresh_at: i64,
}

#[derive(Default)]
struct SlotState {
    entry: Option<Entry>,
    /// The last failed fetch and when it ended: callers that were already waiting share it
    /// instead of each calling STS again in turn.
    failure: Option<(Instant, StsError)>,
}

impl SlotState {
    /// The previous result, if it may stand in for a failed refresh at Unix time `t`.
    fn stale(&self, t: i64) -> Option<Issued> {
        self.entry
            .as_ref()
            .filter(|e| e.issued.expires_at - t >= STALE_MIN_REMAINING)
            .map(|e| e.issued.clone())
    }
}

type Slot = Arc<tokio::sync::Mutex<SlotState>>;

/// Shared AssumeRole results with single-flight refresh.
#[derive(Default)]
pub struct CredentialCache {
    slots: Mutex<HashMap<CacheKey, Slot>>,
}

/// Where a result came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The cache, before the result's half-life.
    Hit,
    /// A new STS call (this caller's or one it waited for).
    Miss,
    /// The cache, past half-life, because the refresh failed.
    Stale,
}

impl Lookup {
    /// Metric label and log value.
    pub fn as_str(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Miss => "miss",
            Lookup::Stale => "stale",
        }
    }
}

impl CredentialCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached credentials for `key` while before their half-life, else `fetch` (once, even
    /// when many callers miss at the same time; those waiting share its failure too). A failed
    /// refresh serves the previous credentials while they live [`STALE_MIN_REMAINING`] more.
    pub async fn get_or_fetch<F, Fut>(
        &self,
        key: CacheKey,
        fetch: F,
    ) -> Result<(Issued, Lookup), StsError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Issued, StsError>>,
    {
        let arrived = Instant::now();
        let slot: Slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(key).or_default().clone()
        };
        let mut state = slot.lock().await;
        let t = now();
        if let Some(e) = &state.entry
            && t < e.refresh_at
        {
            return Ok((e.issued.clone(), Lookup::Hit));
        }
        if let Some((ended, error)) = &state.failure
            && *ended >= arrived
        {
            // The call this caller waited for failed: its outcome is this caller's too.
            return match state.stale(t) {
                Some(issued) => Ok((issued, Lookup::Stale)),
                None => Err(error.clone()),
            };
        }
        match fetch().await {
            Ok(issued) => {
                let refresh_at = t + (issued.expires_at - t) / 2;
                state.entry = Some(Entry {
                    issued: issued.clone(),
                    refresh_at,
                });
                state.failure = None;
                Ok((issued, Lookup::Miss))
            }
            Err(error) => {
                state.failure = Some((Instant::now(), error.clone()));
                let t = now();
                match state.stale(t) {
                    Some(issued) => {
                        tracing::warn!(
                            error = %error,
                            expires_in_seconds = issued.expires_at - t,
                            "credentials not refreshed; the previous ones are served meanwhile"
                        );
                        Ok((issued, Lookup::Stale))
                    }
                    None => Err(error),
                }
            }
        }
    }

    /// Drop entries whose credentials have expired.
    pub fn sweep(&self) {
        let t = now();
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|_, slot| match slot.try_lock() {
            Ok(g) => g.entry.as_ref().is_some_and(|e| e.issued.expires_at > t),
            Err(_) => true,
        });
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn issued(ttl: i64) -> Issued {
        Issued {
            creds: VendedCredentials {
                access_key_id: "AK".into(),
                secret_access_key: "S".into(),
                session_token: "T".into(),
                expiration: "x".into(),
            },
            expires_at: now() + ttl,
        }
    }

    #[test]
    fn session_names_fit_aws_rules() {
        let id = |ns: &str, sa: &str| Identity::service_account(ns, sa);
        assert_eq!(role_session_name(&id("shop", "orders")), "shop.orders");
        let long = role_session_name(&id(&"n".repeat(63), &"s".repeat(253)));
        assert_eq!(long.len(), 64);
        assert_ne!(
            long,
            role_session_name(&id(&"n".repeat(63), &"s".repeat(252)))
        );
        assert!(
            long.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
        );
    }

    #[tokio::test]
    async fn concurrent_misses_make_one_call_and_hits_share_it() {
        let cache = Arc::new(CredentialCache::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (cache, calls) = (cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(CacheKey::new("r", "s", Some("p")), || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(issued(3600))
                    })
                    .await
                    .map(|(_, lookup)| lookup)
            }));
        }
        let mut hits = 0;
        for t in tasks {
            if t.await.expect("task").expect("ok") == Lookup::Hit {
                hits += 1;
            }
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(hits, 49);
        // Another policy is another key.
        let (_, lookup) = cache
            .get_or_fetch(CacheKey::new("r", "s", Some("q")), || async {
                Ok(issued(3600))
            })
            .await
            .expect("ok");
        assert_eq!(lookup, Lookup::Miss);
        assert_eq!(cache.len(), 2);
    }

    #[tokio::test]
    async fn past_half_life_refreshes_and_failures_are_not_cached() {
        let cache = CredentialCache::new();
        let key = || CacheKey::new("r", "s", None);
        // 2 s of life: half-life is 1 s from now, so the next call after it refetches.
        cache
            .get_or_fetch(key(), || async { Ok(issued(2)) })
            .await
            .expect("ok");
        let (_, lookup) = cache
            .get_or_fetch(key(), || async { Ok(issued(2)) })
            .await
            .expect("ok");
        assert_eq!(lookup, Lookup::Hit);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (_, lookup) = cache
            .get_or_fetch(key(), || async { Ok(issued(3600)) })
            .await
            .expect("ok");
        assert_eq!(lookup, Lookup::Miss, "refreshed after half-life");
        let other = || CacheKey::new("r2", "s", None);
        assert!(
            cache
                .get_or_fetch(other(), || async { Err(StsError("down".into())) })
                .await
                .is_err()
        );
        let (_, lookup) = cache
            .get_or_fetch(other(), || async { Ok(issued(3600)) })
            .await
            .expect("ok");
        assert_eq!(lookup, Lookup::Miss, "a failure leaves nothing cached");
    }

    /// `n` concurrent lookups of one key, each fetch counted, taking 50 ms and giving `answer`.
    async fn herd(
        cache: &Arc<CredentialCache>,
        calls: &Arc<AtomicUsize>,
        n: usize,
        answer: Result<Issued, StsError>,
    ) -> Vec<Result<(Issued, Lookup), StsError>> {
        let mut tasks = Vec::new();
        for _ in 0..n {
            let (cache, calls, answer) = (cache.clone(), calls.clone(), answer.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(CacheKey::new("r", "s", None), || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        answer
                    })
                    .await
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task"));
        }
        out
    }

    #[tokio::test]
    async fn callers_waiting_for_a_failing_call_share_its_error_instead_of_calling_again() {
        let cache = Arc::new(CredentialCache::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let down = Err(StsError("Throttling: Rate exceeded".into()));
        let answers = herd(&cache, &calls, 50, down.clone()).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one STS call for 50 waiters"
        );
        for a in &answers {
            let e = a.as_ref().err().expect("every waiter gets the failure");
            assert_eq!(e.0, "Throttling: Rate exceeded");
        }
        // A caller arriving after the failure tries STS again, and a success replaces it.
        let answers = herd(&cache, &calls, 5, Ok(issued(3600))).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(answers.iter().all(|a| a.is_ok()));
    }

    #[tokio::test]
    async fn a_failed_refresh_serves_the_previous_credentials_while_they_live() {
        let cache = Arc::new(CredentialCache::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let first = issued(3600);
        let (_, lookup) = cache
            .get_or_fetch(CacheKey::new("r", "s", None), || async {
                Ok(first.clone())
            })
            .await
            .expect("ok");
        assert_eq!(lookup, Lookup::Miss);
        let set = |expires_at: i64| {
            let slot = cache
                .slots
                .lock()
                .expect("slots")
                .get(&CacheKey::new("r", "s", None))
                .expect("slot")
                .clone();
            async move {
                let mut state = slot.lock().await;
                let e = state.entry.as_mut().expect("entry");
                e.refresh_at = now() - 1;
                e.issued.expires_at = expires_at;
            }
        };
        // Past half-life with 20 minutes left, STS down: the previous credentials, to everyone
        // waiting, after one call.
        set(now() + 1200).await;
        let down = Err(StsError("cannot reach STS".into()));
        let answers = herd(&cache, &calls, 20, down.clone()).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        for a in answers {
            let (got, lookup) = a.expect("previous credentials served");
            assert_eq!(lookup, Lookup::Stale);
            assert_eq!(got.creds.session_token, first.creds.session_token);
        }
        // Later callers try STS again each time (the refresh is still due).
        let answers = herd(&cache, &calls, 1, down.clone()).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(answers[0].as_ref().map(|a| a.1).ok(), Some(Lookup::Stale));
        // Just over the documented 5 minutes left: still served; just under: the error, not
        // credentials about to expire.
        set(now() + 310).await;
        let answers = herd(&cache, &calls, 1, down.clone()).await;
        assert_eq!(answers[0].as_ref().map(|a| a.1).ok(), Some(Lookup::Stale));
        set(now() + 290).await;
        let answers = herd(&cache, &calls, 1, down).await;
        assert_eq!(
            answers[0].as_ref().err().map(|e| e.0.as_str()),
            Some("cannot reach STS")
        );
        // STS back: new credentials, and the failure is forgotten.
        let answers = herd(&cache, &calls, 3, Ok(issued(3600))).await;
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        let lookups: Vec<_> = answers.into_iter().map(|a| a.expect("ok").1).collect();
        assert_eq!(lookups.iter().filter(|l| **l == Lookup::Miss).count(), 1);
        assert_eq!(lookups.iter().filter(|l| **l == Lookup::Hit).count(), 2);
    }

    #[tokio::test]
    async fn sweep_drops_expired_entries() {
        let cache = CredentialCache::new();
        assert!(cache.is_empty());
        cache
            .get_or_fetch(CacheKey::new("a", "s", None), || async { Ok(issued(-1)) })
            .await
            .expect("ok");
        cache
            .get_or_fetch(CacheKey::new("b", "s", None), || async { Ok(issued(3600)) })
            .await
            .expect("ok");
        cache.sweep();
        assert_eq!(cache.len(), 1);
        assert!(!cache.is_empty());
        // The one kept is the live one: asked again, it is a hit, not a new fetch.
        let (_, lookup) = cache
            .get_or_fetch(CacheKey::new("b", "s", None), || async {
                Err(StsError("not called".into()))
            })
            .await
            .expect("cached");
        assert_eq!(lookup, Lookup::Hit);
    }
}
