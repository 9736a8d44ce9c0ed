//! Service-account token validation: TokenReview through the Kubernetes API, or local
//! verification against the cluster's JWKS (through the Kubernetes API, from a file or by OIDC
//! discovery). Positive results are cached briefly, keyed by a hash of the token, never past the
//! token's `exp`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use sha2::{Digest, Sha256};
use tokenvend_core::claims::{SaClaims, unverified_exp};
use tokenvend_core::clock::now;
use tokenvend_core::{ClaimsError, Identity};

/// Why a token was not accepted. `reason()` is a metric label; `Display` is safe to log and return.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    Missing,
    /// Not a JWT, bad base64/JSON, or too large.
    #[error("malformed token")]
    Malformed,
    /// Past `exp` (or before `nbf`).
    #[error("token expired or not yet valid")]
    Expired,
    /// Audience does not include the expected one.
    #[error("token audience is not {0:?}")]
    Audience(String),
    /// Signature, issuer or key did not verify, or the API server said unauthenticated.
    #[error("token rejected: {0}")]
    Invalid(String),
    /// Not a service-account token.
    #[error("not a service-account token")]
    NotServiceAccount,
    /// TokenReview or the JWKS could not be reached.
    #[error("token validation unavailable: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// Short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::Expired => "expired",
            AuthError::Audience(_) => "audience",
            AuthError::Invalid(_) => "invalid",
            AuthError::NotServiceAccount => "not_service_account",
            AuthError::Unavailable(_) => "unavailable",
        }
    }
}

impl From<ClaimsError> for AuthError {
    fn from(e: ClaimsError) -> Self {
        match e {
            ClaimsError::NotJwt => AuthError::Malformed,
            ClaimsError::NotServiceAccount => AuthError::NotServiceAccount,
            ClaimsError::Inconsistent | ClaimsError::BadName(_) => {
                AuthError::Invalid(e.to_string())
            }
        }
    }
}

/// Largest token accepted (Kubernetes tokens are 1-2 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Where the signing keys of the cluster come from (local verification).
#[derive(Clone)]
pub enum JwksSource {
    /// The API server's own issuer endpoints, asked as tokenvend-sts's service account: they
    /// answer only authenticated clients, and work the same on every cluster.
    ApiServer(kube::Client),
    /// A JWKS JSON file (re-read when a `kid` is unknown).
    File(PathBuf),
    /// OIDC discovery at `<issuer>/.well-known/openid-configuration`.
    Discovery {
        /// Issuer URL (also the expected `iss`).
        issuer: String,
        /// HTTP client (CA, timeout).
        client: reqwest::Client,
    },
}

/// Where a Kubernetes API server serves its service-account issuer's discovery document.
pub const API_DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Where a Kubernetes API server serves its service-account issuer's keys. The discovery
/// document's `jwks_uri` names the API server's advertised address instead, which pods may not
/// reach, and which would not get the service account's credentials.
pub const API_JWKS_PATH: &str = "/openid/v1/jwks";

/// Said with a refusal from the API server: what lets tokenvend-sts read the issuer's documents.
const API_RBAC_HINT: &str = " (tokenvend-sts's service account needs get on the non-resource \
    URLs /.well-known/openid-configuration and /openid/v1/jwks: Kubernetes grants it to every \
    service account through the ClusterRoleBinding system:service-account-issuer-discovery, and \
    the manifests' ClusterRole tokenvend-sts grants it too)";

/// Said with a refusal of plain OIDC discovery: an API server's discovery needs credentials.
const DISCOVERY_AUTH_HINT: &str = " (a Kubernetes API server answers discovery only to \
    authenticated clients: unset TOKENVEND_OIDC_ISSUER and TOKENVEND_JWKS_FILE to fetch the keys \
    through the Kubernetes API as tokenvend-sts's service account)";

/// GET `path` from the Kubernetes API as JSON within `timeout`, as [`get_json`] does.
async fn api_get_json<T: serde::de::DeserializeOwned>(
    client: &kube::Client,
    path: &str,
    timeout: Duration,
) -> Result<T, String> {
    let get = || async {
        let req = http::Request::get(path)
            .body(Vec::new())
            .map_err(kube::Error::HttpError)?;
        client.request::<T>(req).await
    };
    match tokio::time::timeout(timeout, once_more_unanswered(path, get)).await {
        Err(_) => Err(format!("GET {path} timed out")),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            let mut m = format!("GET {path}: {}", kube_error(&e));
            if matches!(&e, kube::Error::Api(s) if s.code == 401 || s.code == 403) {
                m.push_str(API_RBAC_HINT);
            }
            Err(m)
        }
    }
}

/// The cluster's service-account issuer (the `iss` of its tokens), from the API server's
/// discovery document.
pub async fn api_server_issuer(
    client: &kube::Client,
    timeout: Duration,
) -> Result<String, AuthError> {
    let unavailable = |e: String| {
        AuthError::Unavailable(format!(
            "the cluster's issuer through the Kubernetes API: {e}"
        ))
    };
    let doc: serde_json::Value = api_get_json(client, API_DISCOVERY_PATH, timeout)
        .await
        .map_err(unavailable)?;
    match doc["issuer"].as_str() {
        Some(issuer) if !issuer.is_empty() => Ok(issuer.to_owned()),
        _ => Err(unavailable(format!(
            "no issuer in the document at {API_DISCOVERY_PATH}"
        ))),
    }
}

/// The largest document [`get_json`] takes: a JWKS of hundreds of keys fits many times over, and
/// an endless answer is refused instead of read until memory runs out.
const MAX_DOCUMENT_BYTES: usize = tokenvend_core::limited::MAX_BYTES;

/// GET `url` as JSON within `timeout`, at most [`MAX_DOCUMENT_BYTES`]. A GET can be repeated, so
/// one that got no HTTP answer at all (its connection closed under it: fetches are minutes
/// apart, and a pooled connection may be closed by the server just as it is reused) is sent
/// once more. `auth_hint` is added to the error of a 401 or 403.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    auth_hint: &str,
) -> Result<T, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut retried = false;
    loop {
        // Transport and status errors outside (they decide the retry), the body's own inside.
        let attempt = tokio::time::timeout_at(deadline, async {
            let mut resp = client.get(url).send().await?.error_for_status()?;
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await? {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_DOCUMENT_BYTES {
                    return Ok(Err(format!(
                        "answer larger than {} KiB",
                        MAX_DOCUMENT_BYTES / 1024
                    )));
                }
            }
            Ok::<_, reqwest::Error>(
                serde_json::from_slice::<T>(&body)
                    .map_err(|e| format!("answer is not the expected JSON: {e}")),
            )
        })
        .await
        .map_err(|_| "fetch timed out".to_owned())?;
        match attempt {
            Ok(document) => return document,
            Err(e) if !retried && e.is_request() && e.status().is_none() => {
                retried = true;
                // Debug: a retry that fails is reported by the caller, once per failure.
                tracing::debug!(url, error = %crate::causes(&e), "fetch got no answer; retrying once");
            }
            Err(e) => {
                let mut m = crate::causes(&e);
                if matches!(e.status().map(|s| s.as_u16()), Some(401 | 403)) {
                    m.push_str(auth_hint);
                }
                return Err(m);
            }
        }
    }
}

/// Local JWT verification against a JWKS.
pub struct JwksValidator {
    source: JwksSource,
    issuer: String,
    audience: String,
    keys: tokio::sync::RwLock<JwkSet>,
    /// The last fetch attempt: when, and its error if it failed. Held across a fetch, so
    /// concurrent unknown `kid`s cause one fetch, and a failing source is not retried per request.
    last_fetch: tokio::sync::Mutex<(tokio::time::Instant, Option<String>)>,
    refetch_after: Duration,
    timeout: Duration,
}

/// Minimum time between two JWKS fetches triggered by unknown `kid`s, failed fetches included.
const REFETCH_AFTER: Duration = Duration::from_secs(10);
/// Leeway on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 10;

impl JwksValidator {
    /// A validator expecting `iss == issuer` and `audience` in `aud`.
    pub async fn new(
        source: JwksSource,
        issuer: String,
        audience: String,
        timeout: Duration,
    ) -> Result<Self, AuthError> {
        let v = JwksValidator {
            source,
            issuer,
            audience,
            keys: tokio::sync::RwLock::new(JwkSet { keys: Vec::new() }),
            last_fetch: tokio::sync::Mutex::new((tokio::time::Instant::now(), None)),
            refetch_after: REFETCH_AFTER,
            timeout,
        };
        v.refresh(true).await?;
        Ok(v)
    }

    async fn fetch(&self) -> Result<JwkSet, AuthError> {
        match &self.source {
            JwksSource::ApiServer(client) => api_get_json(client, API_JWKS_PATH, self.timeout)
                .await
                .map_err(|e| {
                    AuthError::Unavailable(format!(
                        "the cluster's keys through the Kubernetes API: {e}"
                    ))
                }),
            JwksSource::File(path) => {
                let path2 = path.clone();
                let text = tokio::task::spawn_blocking(move || {
                    tokenvend_core::limited::read(&path2, tokenvend_core::limited::MAX_BYTES)
                })
                .await
                .map_err(std::io::Error::other)
                .and_then(|read| read)
                .map_err(|e| {
                    AuthError::Unavailable(format!("JWKS file {}: {e}", path.display()))
                })?;
                serde_json::from_slice(&text).map_err(|e| {
                    AuthError::Unavailable(format!("JWKS file {}: {e}", path.display()))
                })
            }
            JwksSource::Discovery { issuer, client } => {
                let unavailable =
                    |e: String| AuthError::Unavailable(format!("OIDC discovery of {issuer}: {e}"));
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let doc: serde_json::Value =
                    get_json(client, &url, self.timeout, DISCOVERY_AUTH_HINT)
                        .await
                        .map_err(unavailable)?;
                let jwks_uri = doc["jwks_uri"]
                    .as_str()
                    .ok_or_else(|| unavailable("no jwks_uri in the discovery document".into()))?
                    .to_owned();
                get_json(client, &jwks_uri, self.timeout, DISCOVERY_AUTH_HINT)
                    .await
                    .map_err(|e| unavailable(format!("JWKS {e}")))
            }
        }
    }

    /// Refetch the keys (forced, or at most once per `refetch_after`). Within that time the
    /// last attempt's outcome stands: Ok (the keys are current) or its Unavailable error.
    async fn refresh(&self, force: bool) -> Result<(), AuthError> {
        let mut last = self.last_fetch.lock().await;
        if !force && last.0.elapsed() < self.refetch_after {
            return match &last.1 {
                None => Ok(()),
                Some(e) => Err(AuthError::Unavailable(e.clone())),
            };
        }
        let fetched = self.fetch().await;
        *last = (tokio::time::Instant::now(), None);
        match fetched {
            Ok(set) => {
                *self.keys.write().await = set;
                Ok(())
            }
            Err(AuthError::Unavailable(e)) => {
                last.1 = Some(e.clone());
                Err(AuthError::Unavailable(e))
            }
            Err(e) => Err(e),
        }
    }

    async fn key_for(&self, kid: Option<&str>) -> Result<DecodingKey, AuthError> {
        for attempt in 0..2 {
            {
                let keys = self.keys.read().await;
                let found = keys.keys.iter().find(|k| match kid {
                    Some(kid) => k.common.key_id.as_deref() == Some(kid),
                    None => keys.keys.len() == 1,
                });
                if let Some(jwk) = found {
                    // jsonwebtoken refuses a key whose family does not match `alg`.
                    return DecodingKey::from_jwk(jwk)
                        .map_err(|e| AuthError::Invalid(format!("bad JWKS key: {e}")));
                }
            }
            if attempt == 0 {
                // A new kid: the cluster may have rotated its signing key.
                self.refresh(false).await?;
            }
        }
        Err(AuthError::Invalid("unknown signing key (kid)".into()))
    }

    /// Verify signature, `iss`, `aud`, `exp`/`nbf`; return the identity and `exp`.
    pub async fn validate(&self, token: &str) -> Result<(Identity, i64), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::PS256
        ) {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} not accepted",
                header.alg
            )));
        }
        let key = self.key_for(header.kid.as_deref()).await?;
        let mut v = Validation::new(header.alg);
        v.leeway = LEEWAY_SECONDS;
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Decoded as JSON first and read as claims after validation: decoding straight into
        // `SaClaims` fails on a missing `sub` or `iss` before the check that would name it.
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => AuthError::Expired,
                ErrorKind::InvalidAudience => AuthError::Audience(self.audience.clone()),
                ErrorKind::InvalidIssuer => AuthError::Invalid("unexpected issuer".into()),
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::Base64(_)
                | ErrorKind::Json(_)
                | ErrorKind::Utf8(_)
                | ErrorKind::InvalidToken => AuthError::Malformed,
                ErrorKind::MissingRequiredClaim(c) => {
                    AuthError::Invalid(format!("missing claim {c}"))
                }
                _ => AuthError::Invalid("verification failed".into()),
            }
        })?;
        let claims: SaClaims =
            serde_json::from_value(data.claims).map_err(|_| AuthError::Malformed)?;
        let id = Identity::from_claims(&claims)?;
        Ok((id, claims.exp))
    }
}

/// TokenReview through the Kubernetes API (`authentication.k8s.io/v1`).
pub struct TokenReviewValidator {
    client: kube::Client,
    audience: String,
    timeout: Duration,
}

impl TokenReviewValidator {
    /// A validator asking the API server, with `spec.audiences = [audience]`.
    pub fn new(client: kube::Client, audience: String, timeout: Duration) -> Self {
        TokenReviewValidator {
            client,
            audience,
            timeout,
        }
    }

    /// Ask the API server; require authenticated, our audience, a service-account user.
    pub async fn validate(&self, token: &str) -> Result<(Identity, i64), AuthError> {
        // The review does not return `exp`; read it (unverified) only to bound the cache.
        let exp = unverified_exp(token)?;
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..Default::default()
        };
        let params = PostParams::default();
        // A review changes nothing, so one that got no answer may be sent again.
        let call = once_more_unanswered("TokenReview", || api.create(&params, &review));
        let result = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| AuthError::Unavailable("TokenReview timed out".into()))?
            .map_err(|e| {
                AuthError::Unavailable(format!("TokenReview failed: {}", kube_error(&e)))
            })?;
        let status = result.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status.error.unwrap_or_else(|| "unauthenticated".into());
            if why.contains("audience") {
                return Err(AuthError::Audience(self.audience.clone()));
            }
            if why.contains("expired") {
                return Err(AuthError::Expired);
            }
            return Err(AuthError::Invalid(why));
        }
        if !status
            .audiences
            .unwrap_or_default()
            .iter()
            .any(|a| a == &self.audience)
        {
            return Err(AuthError::Audience(self.audience.clone()));
        }
        let user = status.user.unwrap_or_default();
        let extra = user.extra.unwrap_or_default();
        let first = |k: &str| extra.get(k).and_then(|v| v.first()).cloned();
        let id = Identity::from_username(user.username.as_deref().unwrap_or_default())?
            .bound_to_pod(
                first("authentication.kubernetes.io/pod-name"),
                first("authentication.kubernetes.io/pod-uid"),
            )?;
        Ok((id, exp))
    }
}

/// Run a Kubernetes API request that changes nothing, and run it once more if it got no HTTP
/// answer (connection refused, reset or closed). The API server closes a kept-alive connection
/// after 90 s idle while the client's pool still holds it; a request written as that close
/// arrives fails unanswered, and the client does not resend it by itself.
async fn once_more_unanswered<T, F, Fut>(what: &str, request: F) -> Result<T, kube::Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    match request().await {
        Err(e) if matches!(e, kube::Error::HyperError(_) | kube::Error::Service(_)) => {
            tracing::info!(request = what, error = %kube_error(&e), "Kubernetes API request got no answer; retrying once");
            request().await
        }
        other => other,
    }
}

fn kube_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} {}: {}", s.code, s.reason, s.message),
        other => crate::causes(other),
    }
}

/// The configured validation mode.
pub enum Validator {
    /// TokenReview.
    TokenReview(TokenReviewValidator),
    /// Local JWKS.
    Jwks(JwksValidator),
}

/// A validator with a short positive cache in front.
pub struct CachedValidator {
    inner: Validator,
    ttl: i64,
    cache: RwLock<HashMap<[u8; 32], (Identity, i64)>>,
}

/// Whether the last lookup was served from the cache.
pub type CacheHit = bool;

impl CachedValidator {
    /// Cache positive results for `ttl` (never past the token's `exp`).
    pub fn new(inner: Validator, ttl: Duration) -> Arc<Self> {
        Arc::new(CachedValidator {
            inner,
            ttl: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
            cache: RwLock::new(HashMap::new()),
        })
    }

    /// Validate, from cache when possible.
    pub async fn validate(&self, token: &str) -> Result<(Identity, CacheHit), AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let t = now();
        if let Ok(cache) = self.cache.read()
            && let Some((id, until)) = cache.get(&key)
            && t < *until
        {
            return Ok((id.clone(), true));
        }
        let (id, exp) = match &self.inner {
            Validator::TokenReview(v) => v.validate(token).await?,
            Validator::Jwks(v) => v.validate(token).await?,
        };
        if exp <= t {
            return Err(AuthError::Expired);
        }
        let until = exp.min(t.saturating_add(self.ttl));
        if self.ttl > 0
            && let Ok(mut cache) = self.cache.write()
        {
            if cache.len() > 100_000 {
                cache.retain(|_, (_, u)| *u > t);
            }
            cache.insert(key, (id.clone(), until));
        }
        Ok((id, false))
    }

    /// Drop expired entries.
    pub fn sweep(&self) {
        let t = now();
        if let Ok(mut cache) = self.cache.write() {
            cache.retain(|_, (_, u)| *u > t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use tokenvend_testkit::{CLUSTER_ISSUER, Cluster};

    /// An OIDC discovery server on loopback that counts discovery requests (one per fetch)
    /// and can be told to fail or to serve another JWKS.
    struct Discovery {
        url: String,
        fetches: Arc<AtomicUsize>,
        failing: Arc<AtomicBool>,
        jwks: Arc<RwLock<JwkSet>>,
    }

    async fn discovery(jwks: JwkSet) -> Discovery {
        use axum::http::StatusCode;
        use axum::routing::get;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let fetches = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(AtomicBool::new(false));
        let jwks = Arc::new(RwLock::new(jwks));
        let doc = serde_json::json!({"issuer": CLUSTER_ISSUER, "jwks_uri": format!("{url}/keys")});
        let (f, fail, keys) = (fetches.clone(), failing.clone(), jwks.clone());
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    f.fetch_add(1, Ordering::SeqCst);
                    let failing = fail.load(Ordering::SeqCst);
                    let doc = doc.clone();
                    async move {
                        // A slow answer, so concurrent callers really overlap.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        if failing {
                            Err(StatusCode::SERVICE_UNAVAILABLE)
                        } else {
                            Ok(axum::Json(doc))
                        }
                    }
                }),
            )
            .route(
                "/keys",
                get(move || {
                    let set = keys.read().expect("jwks").clone();
                    async move { axum::Json(set) }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Discovery {
            url,
            fetches,
            failing,
            jwks,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_discovery_fetch_whose_connection_closes_unanswered_is_sent_once_more() {
        let cluster = Cluster::new();
        let server = discovery(cluster.jwks.clone()).await;
        let port: u16 = server
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        let source = |drops: usize| async move {
            let drops = Arc::new(AtomicUsize::new(drops));
            let relay = tokenvend_testkit::closing_relay(port, drops.clone()).await;
            let v = JwksValidator::new(
                JwksSource::Discovery {
                    issuer: format!("http://127.0.0.1:{relay}"),
                    client: reqwest::Client::new(),
                },
                CLUSTER_ISSUER.into(),
                "tokenvend".into(),
                Duration::from_secs(5),
            )
            .await;
            (v, drops)
        };
        // The first request's connection closes before any answer: asked again, and served.
        let (v, drops) = source(1).await;
        let v = v.expect("second attempt answered");
        assert_eq!(
            drops.load(Ordering::SeqCst),
            0,
            "the first attempt was dropped"
        );
        assert_eq!(
            server.fetches.load(Ordering::SeqCst),
            1,
            "one answered discovery"
        );
        v.validate(&cluster.token("shop", "orders", None, "tokenvend", 3600))
            .await
            .expect("keys fetched");
        // Only once: two closes in a row are the source's failure.
        let (v, _) = source(2).await;
        assert!(
            matches!(&v, Err(AuthError::Unavailable(m)) if m.contains("OIDC discovery")),
            "{:?}",
            v.err()
        );
        assert_eq!(server.fetches.load(Ordering::SeqCst), 1);
    }

    /// A server on loopback answering every request with the raw bytes of `head`, then, unless
    /// `chunk` is empty, `chunk` over and over for as long as the client reads.
    fn raw_http_server(head: &'static str, chunk: &'static [u8]) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        std::thread::spawn(move || {
            for mut conn in listener.incoming().map_while(Result::ok) {
                std::thread::spawn(move || {
                    let mut request = [0u8; 4096];
                    let _ = conn.read(&mut request);
                    if conn.write_all(head.as_bytes()).is_err() || chunk.is_empty() {
                        return;
                    }
                    while conn.write_all(chunk).is_ok() {}
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn a_document_without_end_or_not_json_is_refused_and_named() {
        // Chunks of JSON whitespace: valid so far, so only the size limit can stop the read.
        let endless = raw_http_server(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"40\r\n                                                                \r\n",
        );
        let client = reqwest::Client::new();
        let err = get_json::<serde_json::Value>(&client, &endless, Duration::from_secs(30), "")
            .await
            .expect_err("endless");
        assert_eq!(err, "answer larger than 1024 KiB");
        let not_json = raw_http_server(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            b"",
        );
        let err = get_json::<serde_json::Value>(&client, &not_json, Duration::from_secs(30), "")
            .await
            .expect_err("not JSON");
        assert!(err.starts_with("answer is not the expected JSON"), "{err}");
    }

    #[tokio::test]
    async fn a_document_of_exactly_the_size_limit_is_taken() {
        let client = reqwest::Client::new();
        // `{"keys":[]}` padded with JSON whitespace to `len` bytes, sent with its length.
        let fetch = |len: usize| {
            let mut doc = r#"{"keys":[]}"#.to_owned();
            doc.push_str(&" ".repeat(len - doc.len()));
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\
                 Connection: close\r\n\r\n{doc}"
            );
            let url = raw_http_server(Box::leak(head.into_boxed_str()), b"");
            let client = client.clone();
            async move { get_json::<JwkSet>(&client, &url, Duration::from_secs(30), "").await }
        };
        const MIB: usize = 1024 * 1024;
        let at = fetch(MIB).await.expect("a 1 MiB document");
        assert!(at.keys.is_empty());
        let err = fetch(MIB + 1).await.expect_err("one byte more");
        assert_eq!(err, "answer larger than 1024 KiB");
    }

    #[tokio::test]
    async fn the_api_servers_issuer_is_read_and_a_blank_one_refused() {
        for (doc, want) in [
            (
                serde_json::json!({"issuer": CLUSTER_ISSUER}),
                Ok(CLUSTER_ISSUER),
            ),
            (
                serde_json::json!({"issuer": ""}),
                Err("no issuer in the document"),
            ),
            (
                serde_json::json!({"jwks_uri": "x"}),
                Err("no issuer in the document"),
            ),
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = format!("http://{}", listener.local_addr().expect("addr"));
            let app = axum::Router::new().route(
                API_DISCOVERY_PATH,
                axum::routing::get(move || async move { axum::Json(doc) }),
            );
            tokio::spawn(async move { axum::serve(listener, app).await });
            let config = kube::Config::new(url.parse().expect("url"));
            let client = kube::Client::try_from(config).expect("client");
            let got = api_server_issuer(&client, Duration::from_secs(5)).await;
            match (got, want) {
                (Ok(issuer), Ok(want)) => assert_eq!(issuer, want),
                (Err(AuthError::Unavailable(m)), Err(want)) => assert!(m.contains(want), "{m}"),
                (got, want) => panic!("{got:?}, expected {want:?}"),
            }
        }
    }

    /// A validator reading `keys` from a JWKS file (the directory must outlive it).
    async fn file_validator(keys: &JwkSet) -> (JwksValidator, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, serde_json::to_vec(keys).expect("json")).expect("write");
        let v = JwksValidator::new(
            JwksSource::File(path),
            CLUSTER_ISSUER.into(),
            "tokenvend".into(),
            Duration::from_secs(5),
        )
        .await
        .expect("validator");
        (v, dir)
    }

    /// The claims of a valid token of shop/orders for audience `tokenvend`, for ten minutes.
    fn orders_claims() -> serde_json::Value {
        let t = tokenvend_testkit::now();
        serde_json::json!({
            "iss": CLUSTER_ISSUER, "sub": "system:serviceaccount:shop:orders",
            "aud": ["tokenvend"], "iat": t, "exp": t + 600,
            "kubernetes.io": {"namespace": "shop", "serviceaccount": {"name": "orders"}},
        })
    }

    #[tokio::test]
    async fn a_token_without_kid_is_verified_only_when_the_jwks_has_one_key() {
        let cluster = Cluster::new();
        let other = Cluster::new();
        let header = jsonwebtoken::Header::new(Algorithm::ES256);
        let token = jsonwebtoken::encode(&header, &orders_claims(), &cluster.key).expect("sign");
        let (one, _dir) = file_validator(&cluster.jwks).await;
        let (id, _) = one
            .validate(&token)
            .await
            .expect("the only key verifies it");
        assert_eq!(id.subject(), "system:serviceaccount:shop:orders");
        // With two keys, which one signed is unknown: not guessed.
        let keys = [other.jwks.keys.clone(), cluster.jwks.keys.clone()].concat();
        let (two, _dir) = file_validator(&JwkSet { keys }).await;
        let e = two.validate(&token).await.expect_err("no kid, two keys");
        assert!(
            matches!(&e, AuthError::Invalid(m) if m.contains("unknown signing key")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn each_way_a_token_fails_verification_is_named() {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let cluster = Cluster::new();
        let forger = Cluster::new();
        let claims = orders_claims();
        let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
        header.kid = Some(cluster.kid.clone());
        let signed = |claims: &serde_json::Value, key: &jsonwebtoken::EncodingKey| {
            jsonwebtoken::encode(&header, claims, key).expect("sign")
        };
        // Signed by the cluster's key over a payload that is not the claims JSON.
        let signed_payload = |payload: &[u8]| {
            let head = b64(&serde_json::to_vec(&header).expect("header"));
            let message = format!("{head}.{}", b64(payload));
            let sig =
                jsonwebtoken::crypto::sign(message.as_bytes(), &cluster.key, Algorithm::ES256)
                    .expect("sign");
            format!("{message}.{sig}")
        };
        let without = |claim: &str| {
            let mut c = claims.clone();
            c.as_object_mut().expect("claims").remove(claim);
            signed(&c, &cluster.key)
        };
        let mut sub_number = claims.clone();
        sub_number["sub"] = serde_json::json!(7);
        let mut wrong_iss = claims.clone();
        wrong_iss["iss"] = serde_json::json!("https://elsewhere.example.com");

        let (v, _dir) = file_validator(&cluster.jwks).await;
        v.validate(&signed(&claims, &cluster.key))
            .await
            .expect("the well-formed token");
        let cases = [
            (
                "forged",
                signed(&claims, &forger.key),
                "token rejected: bad signature",
            ),
            (
                "no sub",
                without("sub"),
                "token rejected: missing claim sub",
            ),
            (
                "no iss",
                without("iss"),
                "token rejected: missing claim iss",
            ),
            (
                "no aud",
                without("aud"),
                "token rejected: missing claim aud",
            ),
            (
                "no exp",
                without("exp"),
                "token rejected: missing claim exp",
            ),
            // jsonwebtoken counts a `sub` that is not a string as missing.
            (
                "sub not a string",
                signed(&sub_number, &cluster.key),
                "token rejected: missing claim sub",
            ),
            (
                "other issuer",
                signed(&wrong_iss, &cluster.key),
                "token rejected: unexpected issuer",
            ),
            (
                "payload not JSON",
                signed_payload(b"not json"),
                "malformed token",
            ),
            (
                "claims not an object",
                signed_payload(b"[1,2]"),
                "malformed token",
            ),
            (
                "payload not UTF-8",
                signed_payload(&[0xff, 0xfe]),
                "malformed token",
            ),
        ];
        for (what, token, want) in cases {
            let e = v.validate(&token).await.expect_err(what);
            assert_eq!(e.to_string(), want, "{what}");
        }
    }

    #[tokio::test]
    async fn only_a_request_that_got_no_answer_is_sent_once_more() {
        let calls = AtomicUsize::new(0);
        // Each attempt fails with what `fail` makes; how many attempts are made?
        let attempts = |fail: fn() -> kube::Error| {
            calls.store(0, Ordering::SeqCst);
            let calls = &calls;
            async move {
                let r: Result<(), _> = once_more_unanswered("test", || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(fail())
                })
                .await;
                assert!(r.is_err());
                calls.load(Ordering::SeqCst)
            }
        };
        let unanswered = || kube::Error::Service(std::io::Error::other("connection closed").into());
        let refused = || {
            kube::Error::Api(Box::new(
                kube::core::Status::failure("forbidden", "Forbidden").with_code(403),
            ))
        };
        assert_eq!(attempts(unanswered).await, 2, "no answer: once more");
        assert_eq!(
            attempts(refused).await,
            1,
            "an answer, even a refusal, stands"
        );
        calls.store(0, Ordering::SeqCst);
        let r = once_more_unanswered("test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, kube::Error>(7)
        })
        .await;
        assert_eq!((r.expect("ok"), calls.load(Ordering::SeqCst)), (7, 1));
    }

    #[tokio::test]
    async fn the_cache_drops_expired_entries_on_sweep_and_when_it_grows_past_its_bound() {
        let cluster = Cluster::new();
        let (inner, _dir) = file_validator(&cluster.jwks).await;
        let v = CachedValidator::new(Validator::Jwks(inner), Duration::from_secs(300));
        let id = Identity::from_username("system:serviceaccount:shop:orders").expect("id");
        let t = now();
        // Entries of other tokens: `live` still valid, the rest expired a minute ago.
        let fill = |live: u32, expired: u32| {
            let mut cache = v.cache.write().expect("cache");
            cache.clear();
            for n in 0..live + expired {
                let key: [u8; 32] = Sha256::digest(n.to_be_bytes()).into();
                let until = if n < live { t + 600 } else { t - 60 };
                cache.insert(key, (id.clone(), until));
            }
        };
        let size = || v.cache.read().expect("cache").len();
        let token = || cluster.token("shop", "orders", None, "tokenvend", 3600);

        // Within the bound, a new entry is just added; the sweep drops the expired ones.
        fill(3, 5);
        v.validate(&token()).await.expect("valid");
        assert_eq!(size(), 9);
        v.sweep();
        assert_eq!(size(), 4);

        // Past it (100,000), the expired ones go before the next is added; the live ones stay.
        fill(10, 100_000);
        v.validate(&token()).await.expect("valid");
        assert_eq!(size(), 11);
    }

    async fn validate_all(v: &Arc<JwksValidator>, token: &str) -> Vec<Result<(), AuthError>> {
        // All spawned before any is awaited, so they run at once.
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let (v, token) = (v.clone(), token.to_owned());
                tokio::spawn(async move { v.validate(&token).await.map(|_| ()) })
            })
            .collect();
        let mut out = Vec::new();
        for c in calls {
            out.push(c.await.expect("task"));
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn unknown_kids_cause_one_jwks_fetch_per_interval_even_when_the_source_fails() {
        let cluster = Cluster::new();
        let rotated = Cluster::new();
        let server = discovery(cluster.jwks.clone()).await;
        let mut v = JwksValidator::new(
            JwksSource::Discovery {
                issuer: server.url.clone(),
                client: reqwest::Client::new(),
            },
            CLUSTER_ISSUER.into(),
            "tokenvend".into(),
            Duration::from_secs(5),
        )
        .await
        .expect("validator");
        v.refetch_after = Duration::from_millis(700);
        let v = Arc::new(v);
        assert_eq!(server.fetches.load(Ordering::SeqCst), 1, "fetched at start");
        let known = cluster.token("shop", "orders", None, "tokenvend", 3600);
        let unknown = rotated.token("shop", "orders", None, "tokenvend", 3600);
        v.validate(&known).await.expect("known kid");

        // Twenty requests with an unknown kid at once, once the interval has passed: one fetch.
        tokio::time::sleep(Duration::from_millis(800)).await;
        for r in validate_all(&v, &unknown).await {
            assert!(
                matches!(&r, Err(AuthError::Invalid(m)) if m.contains("unknown signing key")),
                "{r:?}"
            );
        }
        assert_eq!(server.fetches.load(Ordering::SeqCst), 2);
        // Within the interval: none.
        validate_all(&v, &unknown).await;
        assert_eq!(server.fetches.load(Ordering::SeqCst), 2);

        // The source fails: one attempt, and its error stands for the interval (503, not 401).
        server.failing.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(800)).await;
        for r in validate_all(&v, &unknown).await {
            assert!(matches!(&r, Err(AuthError::Unavailable(_))), "{r:?}");
        }
        assert_eq!(server.fetches.load(Ordering::SeqCst), 3);
        for r in validate_all(&v, &unknown).await {
            assert!(matches!(&r, Err(AuthError::Unavailable(_))), "{r:?}");
        }
        assert_eq!(server.fetches.load(Ordering::SeqCst), 3);
        v.validate(&known).await.expect("known kids need no fetch");

        // The source is back with the rotated key: the next fetch picks it up.
        server.failing.store(false, Ordering::SeqCst);
        *server.jwks.write().expect("jwks") = JwkSet {
            keys: [cluster.jwks.keys.clone(), rotated.jwks.keys.clone()].concat(),
        };
        tokio::time::sleep(Duration::from_millis(800)).await;
        for r in validate_all(&v, &unknown).await {
            r.expect("rotated key verifies");
        }
        assert_eq!(server.fetches.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn tokens_are_taken_up_to_the_size_limit_and_refused_past_it() {
        let cluster = Cluster::new();
        let (inner, _dir) = file_validator(&cluster.jwks).await;
        let v = CachedValidator::new(Validator::Jwks(inner), Duration::ZERO);
        // A valid token grown by a claim the validator ignores, and by a longer `typ` in its
        // header, to exactly `len` bytes (unpadded base64 of one part cannot hit every length).
        let padded = |typ: usize, pad: usize| {
            let mut claims = orders_claims();
            claims["pad"] = serde_json::json!("x".repeat(pad));
            let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
            header.kid = Some(cluster.kid.clone());
            header.typ = Some(format!("JWT{}", "x".repeat(typ)));
            jsonwebtoken::encode(&header, &claims, &cluster.key).expect("sign")
        };
        let sized = |len: usize| {
            // Each padding byte adds 4/3 characters: start a few bytes short of the length.
            let start = (len.saturating_sub(padded(0, 0).len()) * 3 / 4).saturating_sub(4);
            (0..3)
                .flat_map(|typ| (start..start + 12).map(move |pad| (typ, pad)))
                .map(|(typ, pad)| padded(typ, pad))
                .find(|token| token.len() == len)
                .expect("a token of that length")
        };
        // The README's figure, not the constant: a change to either must be seen.
        const LIMIT: usize = 16 * 1024;
        let (id, _) = v
            .validate(&sized(LIMIT))
            .await
            .expect("a token at the limit");
        assert_eq!(id.subject(), "system:serviceaccount:shop:orders");
        assert!(
            v.cache.read().expect("cache").is_empty(),
            "a TTL of 0 caches nothing"
        );

        let refused = v
            .validate(&sized(LIMIT + 1))
            .await
            .expect_err("past the limit");
        assert!(matches!(refused, AuthError::Malformed), "{refused:?}");
    }
}
