//! HTTP edge of tokenvend-sts: routes, the error → status mapping (once, here), request logs
//! without secrets, background cache sweeps and key reloads, optional TLS, graceful shutdown.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokenvend_core::connections::ConnectionLimit;
use tokenvend_core::creds::{ErrorBody, ExchangeRequest};
use tokenvend_core::serving::{bounded, retire_connection, stop_on_signal};
use tokenvend_core::{Identity, RoleArn};
use tower_http::timeout::TimeoutLayer;

use crate::authz::{Authorizer, Endpoint};
use crate::config::{ServeArgs, ValidationMode};
use crate::exchange::{CacheKey, CredentialCache, Lookup, Sts, role_session_name};
use crate::issuer::{Issuer, IssuerError};
use crate::metrics::{Metrics, Parts};
use crate::policy::PolicyTemplate;
use crate::publication::Publication;
use crate::reload::PolicyFile;
use crate::validate::{
    AuthError, CachedValidator, JwksSource, JwksValidator, TokenReviewValidator, Validator,
    api_server_issuer,
};
use tokenvend_core::Checked;

/// Largest request body (an optional `{"role_arn": ...}`).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The `/credentials` side: STS caller, policy template, shared results.
pub struct CredentialsEndpoint {
    /// STS caller.
    pub sts: Sts,
    /// Session policy template, if any (swapped when its file changes).
    pub policy: Option<Arc<ArcSwap<PolicyTemplate>>>,
    /// AssumeRole results.
    pub cache: CredentialCache,
}

/// The policy files re-read on change.
#[derive(Default)]
pub struct Watched {
    /// `POLICY_TEMPLATE_PATH`, when set.
    pub policy: Option<PolicyFile<PolicyTemplate>>,
    /// `TOKENVEND_RULES_FILE`, when set.
    pub rules: Option<PolicyFile<Authorizer>>,
}

/// Everything the handlers share.
pub struct App {
    /// Token validation.
    pub validator: Arc<CachedValidator>,
    /// Authorization (swapped when the rules file changes).
    pub authz: Arc<ArcSwap<Authorizer>>,
    /// The policy files followed by the maintenance task.
    pub watched: std::sync::Mutex<Watched>,
    /// `/credentials`, when a role is configured.
    pub credentials: Option<CredentialsEndpoint>,
    /// `/token` and discovery, when an issuer is configured.
    pub issuer: Option<Arc<Issuer>>,
    /// The publication check, with `TOKENVEND_PUBLISHED_JWKS_URL`.
    pub publication: Option<tokio::sync::Mutex<Publication>>,
    /// `TOKENVEND_CA_BUNDLE_FILE`, served at `GET /ca-bundle`.
    pub ca_bundle_file: Option<PathBuf>,
    /// Metrics.
    pub metrics: Metrics,
    /// Set at SIGTERM: answers from then on retire their HTTP/1 connection.
    pub stopping: AtomicBool,
}

/// Start-up failures, each naming what to fix.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Configuration is inconsistent or invalid.
    #[error("{0}")]
    Config(String),
    /// Listener failure.
    #[error("listener {addr}: {source}")]
    Listen {
        /// Address.
        addr: std::net::SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// Request-level failures, mapped to HTTP once in `IntoResponse`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 401 / 503 from validation.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// 403.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 404: the endpoint is not configured.
    #[error("{0}")]
    NotConfigured(&'static str),
    /// 500.
    #[error("{0}")]
    Internal(String),
    /// 503: nothing can be signed until an admin acts (no published signing key).
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Auth(AuthError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Auth(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotConfigured(_) => StatusCode::NOT_FOUND,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = (
            status,
            axum::Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Build the shared state from the command line (reads files, fetches the JWKS, builds clients).
pub async fn build(args: &ServeArgs) -> Result<Arc<App>, SetupError> {
    let cfg = |m: String| SetupError::Config(m);
    args.check_token_names().map_err(cfg)?;
    let timeout = Duration::from_secs(args.upstream_timeout_seconds);

    let validator = match args.validation {
        ValidationMode::Tokenreview => {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| cfg(format!("TokenReview validation needs Kubernetes API access (in-cluster or KUBECONFIG): {e}")))?;
            Validator::TokenReview(TokenReviewValidator::new(
                client,
                args.expected_audience.clone(),
                timeout,
            ))
        }
        ValidationMode::Jwks => {
            let (source, issuer) = match (&args.oidc_issuer, &args.jwks_file) {
                (Some(issuer), Some(path)) => (JwksSource::File(path.clone()), issuer.clone()),
                (Some(issuer), None) => (
                    JwksSource::Discovery {
                        issuer: issuer.clone(),
                        client: http_client(args.oidc_ca_file.as_deref(), timeout)?,
                    },
                    issuer.clone(),
                ),
                (None, Some(_)) => return Err(cfg("--jwks-file (TOKENVEND_JWKS_FILE) needs --oidc-issuer (TOKENVEND_OIDC_ISSUER): the cluster's service-account issuer, the tokens' iss".into())),
                // Neither: the API server's own issuer endpoints, which need its credentials.
                (None, None) => {
                    let client = kube::Client::try_default()
                        .await
                        .map_err(|e| cfg(format!("jwks validation without --oidc-issuer fetches the cluster's keys through the Kubernetes API, which needs API access (in-cluster or KUBECONFIG): {e}")))?;
                    let issuer = api_server_issuer(&client, timeout)
                        .await
                        .map_err(|e| cfg(e.to_string()))?;
                    tracing::info!(%issuer, "jwks validation: the cluster's keys through the Kubernetes API");
                    (JwksSource::ApiServer(client), issuer)
                }
            };
            if args.oidc_ca_file.is_some() && !matches!(source, JwksSource::Discovery { .. }) {
                tracing::warn!(
                    "TOKENVEND_OIDC_CA_FILE is not used: it is the CA of --oidc-issuer's discovery, \
                     and the keys come from {}",
                    match source {
                        JwksSource::File(_) => "--jwks-file",
                        _ => "the Kubernetes API (with its own CA)",
                    }
                );
            }
            let v = JwksValidator::new(source, issuer, args.expected_audience.clone(), timeout)
                .await
                .map_err(|e| cfg(e.to_string()))?;
            Validator::Jwks(v)
        }
    };
    let validator = CachedValidator::new(
        validator,
        Duration::from_secs(args.validation_cache_seconds),
    );

    let default_role = match crate::config::default_role(args.role_arn.as_deref(), |name| {
        std::env::var(name).ok()
    }) {
        Ok(role) => role,
        // An issuer-only service may run with IRSA too; it vends no role, and says so.
        Err(why) if args.issuer_url.is_some() && args.signing_key_dir.is_some() => {
            tracing::warn!("POST /credentials stays off: {why}");
            None
        }
        Err(why) => return Err(cfg(why)),
    };
    if let Some(role) = &default_role {
        RoleArn::parse(&role.arn).map_err(|e| cfg(format!("{}: {e}", role.setting)))?;
    }
    let default_role = default_role.map(|r| r.arn);
    let mut watched = Watched::default();
    let authz = match &args.rules_file {
        Some(p) => {
            let (role, allowed) = (default_role.clone(), args.allowed_roles.clone());
            let parse = move |text: &str| {
                Authorizer::new(role.clone(), &allowed, Some(text)).map_err(|e| e.to_string())
            };
            let file = PolicyFile::load("rules file", p, Box::new(parse)).map_err(cfg)?;
            let current = file.current();
            watched.rules = Some(file);
            current
        }
        None => Arc::new(ArcSwap::from_pointee(
            Authorizer::new(default_role.clone(), &args.allowed_roles, None)
                .map_err(|e| cfg(e.to_string()))?,
        )),
    };

    let credentials = match &default_role {
        None => None,
        Some(_) => {
            let min = if args.allow_short_sessions { 1 } else { 900 };
            if !(min..=43_200).contains(&args.session_duration_seconds) {
                return Err(cfg(format!(
                    "SESSION_DURATION_SECONDS {} must be between {min} and 43200",
                    args.session_duration_seconds
                )));
            }
            // A warning, not a refusal: a profile with static keys, which the SDK would use
            // first, cannot be ruled out here; but AWS's own error on each call is one line deep.
            if let Some(problem) =
                crate::config::chained_session_problem(args.session_duration_seconds, |name| {
                    std::env::var(name).ok()
                })
            {
                tracing::warn!("{problem}");
            }
            let policy = if args.policy_template_path.is_empty() {
                tracing::warn!(
                    "POLICY_TEMPLATE_PATH is empty: sessions get the role's full permissions"
                );
                None
            } else {
                let parse = |text: &str| {
                    PolicyTemplate::from_source(text.to_owned()).map_err(|e| e.to_string())
                };
                let path = Path::new(&args.policy_template_path);
                let file =
                    PolicyFile::load("policy template", path, Box::new(parse)).map_err(cfg)?;
                let current = file.current();
                watched.policy = Some(file);
                Some(current)
            };
            let sdk = crate::sdk_config::load(args.region.clone())
                .await
                .map_err(|e| cfg(e.to_string()))?;
            let (client, endpoint) = crate::sdk_config::sts_client(&sdk)
                .await
                .map_err(|e| cfg(e.to_string()))?;
            let sts = Sts::new(client, endpoint, args.session_duration_seconds, timeout);
            Some(CredentialsEndpoint {
                sts,
                policy,
                cache: CredentialCache::new(),
            })
        }
    };
    let issuer = match (&args.issuer_url, &args.signing_key_dir) {
        (Some(url), Some(dir)) => {
            if args.token_ttl_seconds < 60 && !args.allow_short_sessions {
                return Err(cfg(format!(
                    "TOKENVEND_TOKEN_TTL_SECONDS {} must be between 60 and 43200",
                    args.token_ttl_seconds
                )));
            }
            if let Some(problem) = tokenvend_core::names::issuer_url_problem(url) {
                return Err(cfg(format!(
                    "--issuer-url (TOKENVEND_ISSUER_URL) {} {problem} (AWS reads discovery from \
                     it and compares it with each token's iss)",
                    tokenvend_core::names::shown_url(url)
                )));
            }
            let issuer = Issuer::new(
                url.clone(),
                args.issued_audience.clone(),
                Duration::from_secs(args.token_ttl_seconds),
                dir.clone(),
                args.published_jwks_url.is_some(),
            )
            .map_err(|e| cfg(e.to_string()))?;
            Some(Arc::new(issuer))
        }
        _ => None,
    };
    let publication = match &args.published_jwks_url {
        Some(url) if let Some(problem) = tokenvend_core::names::http_url_problem(url) => {
            return Err(cfg(format!(
                "--published-jwks-url (TOKENVEND_PUBLISHED_JWKS_URL) {} {problem} (the JWKS AWS \
                 reads: the jwks_uri of the uploaded discovery document)",
                tokenvend_core::names::shown_url(url)
            )));
        }
        Some(url) => Some(tokio::sync::Mutex::new(Publication::new(
            url.clone(),
            http_client(None, timeout)?,
            timeout,
        ))),
        None => None,
    };
    if let Some(path) = &args.ca_bundle_file {
        read_ca_bundle(path)
            .await
            .map_err(|e| cfg(format!("TOKENVEND_CA_BUNDLE_FILE {e}")))?;
    }
    if credentials.is_none() && issuer.is_none() {
        return Err(cfg(
            "nothing to serve: set TOKENVEND_ROLE_ARN or AWS_ROLE_ARN (POST /credentials) and/or TOKENVEND_ISSUER_URL with TOKENVEND_SIGNING_KEY_DIR (POST /token)".into(),
        ));
    }
    let metrics = Metrics::new(Parts {
        tls: args.tls_cert.is_some(),
        issuer: issuer.is_some(),
        publication: publication.is_some(),
    });
    if let Some(i) = &issuer {
        metrics.signing_key_reload(true);
        metrics.signing_keys_published(i.jwks().keys.len());
    }
    Ok(Arc::new(App {
        validator,
        authz,
        watched: std::sync::Mutex::new(watched),
        credentials,
        issuer,
        publication,
        ca_bundle_file: args.ca_bundle_file.clone(),
        metrics,
        stopping: AtomicBool::new(false),
    }))
}

fn http_client(ca: Option<&Path>, timeout: Duration) -> Result<reqwest::Client, SetupError> {
    let mut b = reqwest::Client::builder().timeout(timeout);
    if let Some(path) = ca {
        let pem = tokenvend_core::limited::read(path, tokenvend_core::limited::MAX_BYTES)
            .map_err(|e| SetupError::Config(format!("OIDC CA file {}: {e}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| SetupError::Config(format!("OIDC CA file {}: {e}", path.display())))?;
        b = b.tls_certs_merge(certs);
    }
    b.build()
        .map_err(|e| SetupError::Config(format!("HTTP client: {e}")))
}

/// All routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/credentials", post(credentials))
        .route("/token", post(token))
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/keys", get(keys))
        .route("/ca-bundle", get(ca_bundle))
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "healthy"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            retire_when_stopping,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .with_state(app)
}

/// Ready unless shutting down or serving a certificate TLS clients refuse now (expired, or not
/// valid yet): the kubelet's HTTPS probe does not verify certificates, so only this takes a
/// replica that every client refuses out of its Service.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let why = if app.stopping.load(Ordering::Acquire) {
        "shutting down".to_owned()
    } else {
        match app.metrics.cert_problem(tokenvend_core::clock::now()) {
            Some(problem) => problem,
            None => return axum::Json(json!({"status": "ready"})).into_response(),
        }
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({"status": "not ready", "reason": why})),
    )
        .into_response()
}

/// During the shutdown delay, each kept-alive connection is closed after its next answer.
async fn retire_when_stopping(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let version = req.version();
    let mut resp = next.run(req).await;
    if app.stopping.load(Ordering::Acquire) {
        retire_connection(version, resp.headers_mut());
    }
    resp
}

fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    let token = token.trim();
    if token.is_empty() {
        Err(AuthError::Missing)
    } else {
        Ok(token)
    }
}

fn parse_body(body: &Bytes) -> Result<ExchangeRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ExchangeRequest::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "body must be empty or {{\"role_arn\": \"...\"}}: {e}"
        ))
    })
}

/// Validate the caller; counts cache and failure metrics.
async fn authenticate(app: &App, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let result = match bearer(headers) {
        Ok(token) => app.validator.validate(token).await,
        Err(e) => Err(e),
    };
    match result {
        Ok((id, hit)) => {
            let lookup = if hit { Lookup::Hit } else { Lookup::Miss };
            app.metrics.cache("validation", lookup);
            Ok(id)
        }
        Err(e) => {
            app.metrics.validation_failure(e.reason());
            Err(e.into())
        }
    }
}

struct Outcome {
    id: Option<Identity>,
    role: Option<String>,
    cache: Option<Lookup>,
}

fn finish(
    app: &App,
    endpoint: Endpoint,
    start: Instant,
    outcome: &Outcome,
    result: Result<Response, ApiError>,
) -> Response {
    let resp = result.unwrap_or_else(|e| {
        // Reasons only: never the token, never credentials.
        tracing::warn!(endpoint = endpoint.as_str(), status = e.status().as_u16(), error = %e, "exchange refused");
        e.into_response()
    });
    let status = resp.status().as_u16();
    let elapsed = start.elapsed();
    app.metrics
        .request(endpoint.as_str(), status, elapsed.as_secs_f64());
    tracing::info!(
        endpoint = endpoint.as_str(),
        status,
        namespace = outcome.id.as_ref().map(|i| i.namespace.as_str()),
        service_account = outcome.id.as_ref().map(|i| i.service_account.as_str()),
        pod = outcome.id.as_ref().and_then(|i| i.pod_name.as_deref()),
        role = outcome.role.as_deref(),
        cache = outcome.cache.map(Lookup::as_str),
        latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "exchange"
    );
    resp
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn credentials(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let start = Instant::now();
    let mut outcome = Outcome {
        id: None,
        role: None,
        cache: None,
    };
    let result = credentials_inner(&app, &headers, &body, &mut outcome).await;
    finish(&app, Endpoint::Credentials, start, &outcome, result)
}

async fn credentials_inner(
    app: &App,
    headers: &HeaderMap,
    body: &Bytes,
    outcome: &mut Outcome,
) -> Result<Response, ApiError> {
    let ep = app.credentials.as_ref().ok_or(ApiError::NotConfigured(
        "POST /credentials is not enabled: set TOKENVEND_ROLE_ARN or AWS_ROLE_ARN",
    ))?;
    let request = parse_body(body)?;
    let id = authenticate(app, headers).await?;
    outcome.id = Some(id.clone());
    let role = app
        .authz
        .load()
        .authorize(&id, Endpoint::Credentials, request.role_arn.as_deref())
        .map_err(ApiError::Forbidden)?
        .ok_or_else(|| ApiError::Internal("no role configured".into()))?;
    outcome.role = Some(role.clone());
    let policy = match &ep.policy {
        Some(t) => Some(
            t.load()
                .render(&id)
                .map_err(|e| ApiError::Internal(e.to_string()))?,
        ),
        None => None,
    };
    let session = role_session_name(&id);
    let key = CacheKey::new(&role, &session, policy.as_deref());
    let (issued, lookup) = ep
        .cache
        .get_or_fetch(key, || async {
            let r = ep.sts.assume_role(&role, &session, policy.as_deref()).await;
            app.metrics.sts_call(r.is_ok());
            r
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    app.metrics.cache("credentials", lookup);
    outcome.cache = Some(lookup);
    Ok(no_store(axum::Json(issued.creds).into_response()))
}

async fn token(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let start = Instant::now();
    let mut outcome = Outcome {
        id: None,
        role: None,
        cache: None,
    };
    let result = token_inner(&app, &headers, &body, &mut outcome).await;
    finish(&app, Endpoint::Token, start, &outcome, result)
}

async fn token_inner(
    app: &App,
    headers: &HeaderMap,
    body: &Bytes,
    outcome: &mut Outcome,
) -> Result<Response, ApiError> {
    let issuer = app.issuer.as_ref().ok_or(ApiError::NotConfigured(
        "POST /token is not enabled: set TOKENVEND_ISSUER_URL and TOKENVEND_SIGNING_KEY_DIR",
    ))?;
    let request = parse_body(body)?;
    let id = authenticate(app, headers).await?;
    outcome.id = Some(id.clone());
    outcome.role = app
        .authz
        .load()
        .authorize(&id, Endpoint::Token, request.role_arn.as_deref())
        .map_err(ApiError::Forbidden)?;
    let t = issuer.mint(&id).map_err(|e| match e {
        IssuerError::Unpublished(why) => ApiError::Unavailable(why),
        e => ApiError::Internal(e.to_string()),
    })?;
    Ok(no_store(axum::Json(t).into_response()))
}

async fn discovery(State(app): State<Arc<App>>) -> Response {
    match &app.issuer {
        Some(i) => axum::Json(i.discovery()).into_response(),
        None => ApiError::NotConfigured("no issuer configured").into_response(),
    }
}

async fn keys(State(app): State<Arc<App>>) -> Response {
    match &app.issuer {
        Some(i) => axum::Json(i.jwks()).into_response(),
        None => ApiError::NotConfigured("no issuer configured").into_response(),
    }
}

/// The CA bundle file as it is now (the kubelet swaps a Secret's files atomically), checked.
async fn read_ca_bundle(path: &Path) -> Result<String, String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || tokenvend_core::cabundle::read(&path))
        .await
        .map_err(|e| format!("reading the CA bundle: {e}"))?
}

async fn ca_bundle(State(app): State<Arc<App>>) -> Response {
    let Some(path) = &app.ca_bundle_file else {
        return ApiError::NotConfigured("no CA bundle configured (TOKENVEND_CA_BUNDLE_FILE)")
            .into_response();
    };
    match read_ca_bundle(path).await {
        Ok(pem) => {
            no_store(([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response())
        }
        Err(e) => {
            tracing::warn!(error = %e, "GET /ca-bundle: the CA bundle file is not usable");
            ApiError::Unavailable(format!("CA bundle {e}")).into_response()
        }
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}

/// Serve until SIGTERM/SIGINT.
pub async fn run(args: ServeArgs) -> Result<(), SetupError> {
    let app = build(&args).await?;
    let addr = args.addr();
    if args.tls_cert.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "serving plain HTTP: service-account tokens, and the AWS keys sent back for them, \
             cross the network unencrypted; set TOKENVEND_TLS_CERT and TOKENVEND_TLS_KEY (the \
             manifests do) unless a service mesh encrypts pod-to-pod traffic"
        );
    }
    // Tokens are signed from the first request on, so the published keys are read first.
    if let (Some(p), Some(issuer)) = (&app.publication, &app.issuer) {
        p.lock().await.check(issuer, &app.metrics).await;
    }
    spawn_maintenance(app.clone(), Duration::from_secs(args.key_reload_seconds));
    spawn_publication_check(app.clone(), Duration::from_secs(args.key_reload_seconds));
    let handle: axum_server::Handle<std::net::SocketAddr> = axum_server::Handle::new();
    tokio::spawn(stop_on_signal(
        handle.clone(),
        Duration::from_secs(args.shutdown_delay_seconds),
        {
            let app = app.clone();
            move || app.stopping.store(true, Ordering::Release)
        },
    ));
    let service = router(app.clone()).into_make_service();
    // Say "serving" once the socket is bound, not before: a taken port ends in the error alone.
    let announce = async {
        if let Some(bound) = handle.listening().await {
            tracing::info!(
                addr = %bound,
                tls = args.tls_cert.is_some(),
                credentials = app.credentials.is_some(),
                token = app.issuer.is_some(),
                validation = ?args.validation,
                sts_endpoint = app
                    .credentials
                    .as_ref()
                    .map(|c| c.sts.endpoint()),
                "tokenvend-sts serving"
            );
        }
    };
    let limit = ConnectionLimit::new(args.max_connections, app.metrics.connections.clone());
    let served = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            use tokenvend_core::tls;
            let loaded = tls::load(cert, key).map_err(|e| SetupError::Config(e.to_string()))?;
            app.metrics.cert(Ok(loaded.validity));
            let rustls = axum_server::tls_rustls::RustlsConfig::from_config(loaded.config);
            tokio::spawn(tls::watch(
                rustls.clone(),
                cert.clone(),
                key.clone(),
                loaded.fingerprint,
                loaded.validity,
                Duration::from_secs(args.cert_reload_seconds),
                {
                    let app = app.clone();
                    move |r: Result<tls::Validity, &tls::TlsError>| app.metrics.cert(r)
                },
            ));
            let listener = tokenvend_core::serving::listen(addr)
                .and_then(|l| axum_server::from_tcp_rustls(l, rustls))
                .map_err(|source| SetupError::Listen { addr, source })?
                .map(|tls| tls.acceptor(limit));
            let serve = bounded(listener).handle(handle.clone()).serve(service);
            tokio::join!(announce, serve).1
        }
        _ => {
            let listener = tokenvend_core::serving::listen(addr)
                .and_then(axum_server::from_tcp)
                .map_err(|source| SetupError::Listen { addr, source })?
                .acceptor(limit);
            let serve = bounded(listener).handle(handle.clone()).serve(service);
            tokio::join!(announce, serve).1
        }
    };
    served.map_err(|source| SetupError::Listen { addr, source })
}

/// Check one policy file; log and count what changed.
fn report_check<T>(metrics: &Metrics, label: &'static str, file: &mut PolicyFile<T>) {
    let (what, path) = (file.file().what(), file.file().path().display().to_string());
    match file.check() {
        Checked::Unchanged | Checked::StillFailing => {}
        Checked::Reloaded(()) => {
            metrics.config_reload(label, true);
            tracing::info!(
                path,
                "{what} changed: reloaded, in use from the next request"
            );
        }
        Checked::Recovered => {
            tracing::info!(path, "{what} usable again (unchanged from the one in use)");
        }
        Checked::Failed(error) => {
            metrics.config_reload(label, false);
            tracing::error!(
                path,
                error,
                "{what} not reloaded; the previous one stays in use"
            );
        }
    }
}

/// Re-read the published JWKS every `every`, in a task of its own: a hosted JWKS that answers
/// slowly must not hold up the key and policy reloads. (The order does not matter for safety: a
/// key signs only once the JWKS last read lists it.)
fn spawn_publication_check(app: Arc<App>, every: Duration) {
    tokio::spawn(async move {
        let (Some(p), Some(issuer)) = (&app.publication, &app.issuer) else {
            return;
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate, and the first check ran before serving.
        tick.tick().await;
        loop {
            tick.tick().await;
            p.lock().await.check(issuer, &app.metrics).await;
        }
    });
}

fn spawn_maintenance(app: Arc<App>, key_reload: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(key_reload);
        let mut last_sweep = Instant::now();
        // A bad key file is one error line, not one per tick.
        let mut key_error = tokenvend_core::FailureLatch::default();
        loop {
            tick.tick().await;
            if let Some(issuer) = &app.issuer {
                match issuer.reload() {
                    Ok(changed) => {
                        if changed {
                            app.metrics.signing_key_reload(true);
                        }
                        if key_error.recovered() {
                            tracing::info!("signing key directory usable again");
                        }
                    }
                    Err(e) => {
                        if key_error.failed(e.to_string()) {
                            app.metrics.signing_key_reload(false);
                            tracing::error!(error = %e, "signing keys not reloaded; the previous keys stay in use");
                        }
                    }
                }
                // Removed keys leave the JWKS when their tokens have expired, without a reload.
                app.metrics.signing_keys_published(issuer.jwks().keys.len());
            }
            {
                let mut watched = app.watched.lock().unwrap_or_else(|p| p.into_inner());
                let Watched { policy, rules } = &mut *watched;
                if let Some(f) = policy {
                    report_check(&app.metrics, "policy_template", f);
                }
                if let Some(f) = rules {
                    report_check(&app.metrics, "rules", f);
                }
            }
            if last_sweep.elapsed() >= Duration::from_secs(60) {
                last_sweep = Instant::now();
                app.validator.sweep();
                if let Some(c) = &app.credentials {
                    c.cache.sweep();
                }
            }
        }
    });
}
