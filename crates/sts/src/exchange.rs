//! AssumeRole through the AWS SDK, behind a cache: identical (role, namespace, service account,
//! policy) requests share one result until about half-way through its life, and concurrent
//! misses wait for the one STS call in flight instead of making their own.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sts::primitives::DateTimeFormat;
use sha2::{Digest, Sha256};
use tokenvend_core::Identity;
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
#[derive(Debug, thiserror::Error)]
#[error("STS AssumeRole failed: {0}")]
pub struct StsError(pub String);

/// AssumeRole with a timeout.
pub struct Sts {
    client: aws_sdk_sts::Client,
    duration_seconds: i32,
    timeout: Duration,
}

impl Sts {
    /// A caller with the given session duration and per-call timeout.
    pub fn new(client: aws_sdk_sts::Client, duration_seconds: i32, timeout: Duration) -> Self {
        Sts {
            client,
            duration_seconds,
            timeout,
        }
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
        SdkError::DispatchFailure(d) => format!(
            "cannot reach STS: {:?}",
            d.as_connector_error().map(|c| c.to_string())
        ),
        other => other.to_string(),
    }
}

/// `RoleSessionName` for an identity: `<namespace>.<serviceaccount>` made valid for AWS.
pub fn role_session_name(id: &Identity) -> String {
    tokenvend_core::session::session_name(&format!("{}.{}", id.namespace, id.service_account))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
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

struct Entry {
    issued: Issued,
    refresh_at: i64,
}

type Slot = Arc<tokio::sync::Mutex<Option<Entry>>>;

/// Shared AssumeRole results with single-flight refresh.
#[derive(Default)]
pub struct CredentialCache {
    slots: Mutex<HashMap<CacheKey, Slot>>,
}

/// Whether a result came from the cache.
pub type FromCache = bool;

impl CredentialCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached credentials for `key` while before their half-life, else `fetch` (once, even
    /// when many callers miss at the same time).
    pub async fn get_or_fetch<F, Fut>(
        &self,
        key: CacheKey,
        fetch: F,
    ) -> Result<(Issued, FromCache), StsError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Issued, StsError>>,
    {
        let slot: Slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(key).or_default().clone()
        };
        let mut guard = slot.lock().await;
        let t = now();
        if let Some(e) = guard.as_ref()
            && t < e.refresh_at
        {
            return Ok((e.issued.clone(), true));
        }
        let issued = fetch().await?;
        let refresh_at = t + (issued.expires_at - t) / 2;
        *guard = Some(Entry {
            issued: issued.clone(),
            refresh_at,
        });
        Ok((issued, false))
    }

    /// Drop entries whose credentials have expired.
    pub fn sweep(&self) {
        let t = now();
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|_, slot| match slot.try_lock() {
            Ok(g) => g.as_ref().is_some_and(|e| e.issued.expires_at > t),
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
                    .map(|(_, hit)| hit)
            }));
        }
        let mut hits = 0;
        for t in tasks {
            if t.await.expect("task").expect("ok") {
                hits += 1;
            }
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(hits, 49);
        // Another policy is another key.
        let (_, hit) = cache
            .get_or_fetch(CacheKey::new("r", "s", Some("q")), || async {
                Ok(issued(3600))
            })
            .await
            .expect("ok");
        assert!(!hit);
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
        let (_, hit) = cache
            .get_or_fetch(key(), || async { Ok(issued(2)) })
            .await
            .expect("ok");
        assert!(hit);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (_, hit) = cache
            .get_or_fetch(key(), || async { Ok(issued(3600)) })
            .await
            .expect("ok");
        assert!(!hit, "refreshed after half-life");
        let other = || CacheKey::new("r2", "s", None);
        assert!(
            cache
                .get_or_fetch(other(), || async { Err(StsError("down".into())) })
                .await
                .is_err()
        );
        let (_, hit) = cache
            .get_or_fetch(other(), || async { Ok(issued(3600)) })
            .await
            .expect("ok");
        assert!(!hit, "a failure leaves nothing cached");
    }

    #[tokio::test]
    async fn sweep_drops_expired_entries() {
        let cache = CredentialCache::new();
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
    }
}
