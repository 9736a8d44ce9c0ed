//! HTTP edge: routes, content-type and size limits, the per-admission log line, metrics,
//! TLS with hot reload, graceful shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use tower_http::timeout::TimeoutLayer;

use crate::admission::{self, ReviewError};
use crate::budget::{BudgetError, MemoryBudget};
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::mutate::Injector;
use tokenvend_core::clock::now;
use tokenvend_core::connections::ConnectionLimit;
use tokenvend_core::serving::{bounded, retire_connection, stop_on_signal};
use tokenvend_core::tls;

/// Largest AdmissionReview body accepted (the API server's own request limit is 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// Upper bound on one request, body read included (the API server gives up after 30 s at most).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Shared state of the handlers.
pub struct AppState {
    /// The mutation, prepared from the settings; replaced when the exchange CA bundle changes.
    pub injector: Arc<ArcSwap<Injector>>,
    /// Metrics and readiness.
    pub metrics: Arc<Metrics>,
    /// The memory budget of the admissions in flight.
    pub budget: MemoryBudget,
}

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The injected objects could not be rendered from the configuration.
    #[error("cannot render the injected objects from the configuration: {0}")]
    Prepare(String),
    /// A listener could not be bound or failed.
    #[error("listener {addr}: {source}")]
    Listen {
        /// Address.
        addr: std::net::SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// All routes: `/mutate` plus health, readiness and metrics.
pub fn router(state: Arc<AppState>) -> Router {
    probe_routes()
        .route(
            "/mutate",
            post(mutate).route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                within_budget,
            )),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state)
}

/// Health, readiness and metrics only (the plain-HTTP probe listener).
pub fn probe_router(state: Arc<AppState>) -> Router {
    probe_routes().with_state(state)
}

fn probe_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    match s.metrics.not_ready(now()) {
        None => "ready".into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

/// Holds the request's charge of the memory budget while it is read and answered. The charge
/// comes from `Content-Length` (the API server always sends it), so it is known before the body
/// is read; a body without one is charged as the largest accepted.
async fn within_budget(
    State(s): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    // A larger body is refused by the body limit, unread.
    let body_len = declared.unwrap_or(MAX_BODY_BYTES).min(MAX_BODY_BYTES);
    let _room = match s.budget.reserve(body_len).await {
        Ok(permit) => permit,
        Err(e) => {
            let (status, result) = match e {
                BudgetError::OverBudget { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "over_budget"),
                BudgetError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            };
            s.metrics.bad_request(result);
            tracing::warn!(error = %e, "refused /mutate request");
            return (status, e.to_string()).into_response();
        }
    };
    next.run(request).await
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

async fn mutate(
    State(s): State<Arc<AppState>>,
    version: Version,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut resp = answer(&s, &headers, body);
    if s.metrics.stopping() {
        retire_connection(version, resp.headers_mut());
    }
    resp
}

fn answer(s: &AppState, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let start = Instant::now();
    if !is_json(headers) {
        s.metrics.bad_request("content_type");
        tracing::warn!("refused /mutate request: content type is not application/json");
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: application/json",
        )
            .into_response();
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            s.metrics.bad_request("body");
            tracing::warn!(status = e.status().as_u16(), "refused /mutate request body");
            return (e.status(), e.body_text()).into_response();
        }
    };
    match admission::review(&body, &s.injector.load()) {
        Ok(r) => {
            let elapsed = start.elapsed();
            let mode = r.mode.map_or("none", |m| m.as_str());
            s.metrics
                .admission(r.decision.as_str(), mode, elapsed.as_secs_f64());
            tracing::info!(
                uid = %r.uid,
                namespace = %r.namespace,
                pod = %r.pod,
                mode,
                decision = r.decision.as_str(),
                dry_run = r.dry_run,
                warnings = r.warnings,
                latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                "admission"
            );
            ([(header::CONTENT_TYPE, "application/json")], r.body).into_response()
        }
        Err(e @ ReviewError::Render(_)) => {
            s.metrics.bad_request("render");
            tracing::error!(error = %e, "could not answer a /mutate request");
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
        Err(e) => {
            s.metrics.bad_request("malformed");
            // Log only the kind of error: serde messages can quote values from the body.
            tracing::warn!(error = e.log_summary(), "refused /mutate request");
            (StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
    }
}

impl ReviewError {
    /// A description safe to log: no content of the request.
    pub fn log_summary(&self) -> &'static str {
        match self {
            ReviewError::Malformed(_) => "body is not an AdmissionReview",
            ReviewError::Version { .. } => "wrong apiVersion or kind",
            ReviewError::MissingRequest => "no request",
            ReviewError::MissingUid => "empty uid",
            ReviewError::Render(_) => "response could not be rendered",
        }
    }
}

/// Serve until SIGTERM/SIGINT: waits for a valid certificate, then serves HTTPS and reloads
/// the certificate when its files change.
pub async fn run(cfg: ServerConfig) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new());
    for concern in cfg.mutation.concerns() {
        tracing::warn!("{concern}");
    }
    let injector =
        Injector::new(cfg.mutation.clone()).map_err(|e| RunError::Prepare(e.to_string()))?;
    let injector = Arc::new(ArcSwap::from_pointee(injector));
    let sources = crate::reload::Sources {
        config_file: cfg.config_file.clone(),
        flags: cfg.flags.clone(),
        exchange_ca_file: cfg.exchange_ca_file.clone(),
    };
    if !sources.is_empty() {
        tokio::spawn(crate::reload::watch(
            sources,
            injector.clone(),
            cfg.cert_reload,
            metrics.clone(),
        ));
    }
    let state = Arc::new(AppState {
        injector,
        metrics: metrics.clone(),
        budget: MemoryBudget::new(cfg.memory_budget),
    });
    let handle: Handle<std::net::SocketAddr> = Handle::new();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(stop_on_signal(handle.clone(), cfg.shutdown_delay, {
        let metrics = metrics.clone();
        move || {
            // Readiness turns false at once; the listener keeps accepting for the delay.
            metrics.mark_stopping();
            let _ = stop_tx.send(true);
        }
    }));

    if let Some(addr) = cfg.probe_listen {
        // Bound here, so a taken port is an error at start rather than in the background.
        let listener = tokenvend_core::serving::listen(addr)
            .and_then(axum_server::from_tcp)
            .map_err(|source| RunError::Listen { addr, source })?;
        let probes = bounded(listener).serve(probe_router(state.clone()).into_make_service());
        tracing::info!(%addr, "probe listener (plain HTTP) started");
        tokio::spawn(async move {
            if let Err(e) = probes.await {
                tracing::error!(error = %e, "probe listener failed");
            }
        });
    }

    // Wait for the first valid certificate (the certs job may not have run yet). Each reason
    // is logged and counted once, not on every try; readiness tells it meanwhile.
    let mut unusable = tokenvend_core::FailureLatch::default();
    let loaded = loop {
        match tls::load(&cfg.tls_cert, &cfg.tls_key) {
            Ok(l) => break l,
            Err(e) => {
                if unusable.failed(e.to_string()) {
                    metrics.cert(Err(&e));
                    metrics.waiting_for_cert(Some(e.to_string()));
                    tracing::error!(
                        error = %e,
                        retry_seconds = cfg.cert_reload.as_secs(),
                        "no usable serving certificate yet; retrying, logged again only if the reason changes"
                    );
                }
                tokio::select! {
                    () = tokio::time::sleep(cfg.cert_reload) => {}
                    _ = stop_rx.changed() => return Ok(()),
                }
            }
        }
    };
    metrics.waiting_for_cert(None);
    metrics.cert(Ok(loaded.validity));
    let rustls = RustlsConfig::from_config(loaded.config);
    tokio::spawn(tls::watch(
        rustls.clone(),
        cfg.tls_cert.clone(),
        cfg.tls_key.clone(),
        loaded.fingerprint,
        loaded.validity,
        cfg.cert_reload,
        {
            let metrics = metrics.clone();
            move |r: Result<tls::Validity, &tls::TlsError>| metrics.cert(r)
        },
    ));

    let listener = tokenvend_core::serving::listen(cfg.listen)
        .and_then(|l| axum_server::from_tcp_rustls(l, rustls))
        .map_err(|source| RunError::Listen {
            addr: cfg.listen,
            source,
        })?
        .map(|tls| {
            tls.acceptor(ConnectionLimit::new(
                cfg.max_connections,
                metrics.connections.clone(),
            ))
        });
    let serve = bounded(listener)
        .handle(handle.clone())
        .serve(router(state).into_make_service());
    // Ready only once the listener is bound: a probe must not pass for a server that is about
    // to fail on its port. `listening` resolves to None when the bind fails.
    let mark_ready = async {
        if let Some(addr) = handle.listening().await {
            metrics.mark_serving();
            tracing::info!(%addr, not_after = %tokenvend_core::clock::rfc3339(loaded.validity.not_after), "serving admission webhook over TLS");
        }
    };
    let ((), served) = tokio::join!(mark_ready, serve);
    served.map_err(|source| RunError::Listen {
        addr: cfg.listen,
        source,
    })
}
