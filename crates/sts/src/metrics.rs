//! Prometheus metrics of tokenvend-sts.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokenvend_core::connections::ConnectionMetrics;
use tokenvend_core::tls::{CertMetrics, TlsError, Validity};

use crate::exchange::Lookup;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileResultLabels {
    file: &'static str,
    result: &'static str,
}

/// Which optional parts the service runs, so only their metrics are exposed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Parts {
    /// Serving HTTPS (certificate metrics).
    pub tls: bool,
    /// Minting web-identity tokens (signing-key metrics).
    pub issuer: bool,
    /// Signing only with keys in the published JWKS (publication metrics).
    pub publication: bool,
}

/// The publication check's metrics (only with `TOKENVEND_PUBLISHED_JWKS_URL`).
struct PublicationMetrics {
    unpublished: Gauge,
    unlisted: Gauge,
    errors: Counter,
}

/// The signing-key directory's metrics (only with an issuer).
struct KeyMetrics {
    reloads: Family<ResultLabels, Counter>,
    published: Gauge,
}

/// Every metric of the service.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
    sts_calls: Family<ReasonLabels, Counter>,
    cache: Family<CacheLabels, Counter>,
    validation_failures: Family<ReasonLabels, Counter>,
    config_reloads: Family<FileResultLabels, Counter>,
    cert: Option<CertMetrics>,
    /// Connections held and turned away at the serving port.
    pub connections: ConnectionMetrics,
    keys: Option<KeyMetrics>,
    publication: Option<PublicationMetrics>,
}

impl Metrics {
    /// Register the metrics of every part the service runs.
    pub fn new(parts: Parts) -> Self {
        let mut registry = Registry::with_prefix("tokenvend_sts");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Exchange requests by endpoint and HTTP status",
            requests.clone(),
        );
        let latency = Histogram::new(exponential_buckets(0.000_01, 2.0, 22));
        registry.register(
            "request_duration_seconds",
            "Exchange request latency",
            latency.clone(),
        );
        let sts_calls = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "sts_calls",
            "AWS STS AssumeRole calls by result (ok, error)",
            sts_calls.clone(),
        );
        let cache = Family::<CacheLabels, Counter>::default();
        registry.register(
            "cache",
            "Cache lookups by cache (validation, credentials) and result (hit, miss; stale: \
             previous credentials served because their refresh failed)",
            cache.clone(),
        );
        let validation_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "validation_failures",
            "Rejected service-account tokens by reason",
            validation_failures.clone(),
        );
        let config_reloads = Family::<FileResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Policy files reloaded after a change, by file (policy_template, rules) and result \
             (ok; error: a changed file rejected and the previous one kept, once per failure)",
            config_reloads.clone(),
        );
        let cert = parts.tls.then(|| CertMetrics::register(&mut registry));
        let connections = ConnectionMetrics::register(&mut registry);
        let keys = parts.issuer.then(|| {
            let keys = KeyMetrics {
                reloads: Family::default(),
                published: Gauge::default(),
            };
            registry.register(
                "signing_key_reloads",
                "Signing-key directory loads by result (ok: at start or on a change; error: a \
                 changed directory rejected, once per failure)",
                keys.reloads.clone(),
            );
            registry.register(
                "signing_keys_published",
                "Keys in the JWKS: those in the directory plus removed ones whose tokens may \
                 still be valid",
                keys.published.clone(),
            );
            keys
        });
        let publication = parts.publication.then(|| {
            let p = PublicationMetrics {
                unpublished: Gauge::default(),
                unlisted: Gauge::default(),
                errors: Counter::default(),
            };
            registry.register(
                "signing_keys_unlisted",
                "Keys that signed tokens still valid but are not in the published JWKS (AWS \
                 refuses those tokens)",
                p.unlisted.clone(),
            );
            registry.register(
                "signing_keys_unpublished",
                "Signing keys newer than the one signing, held back because the published JWKS \
                 does not list them yet",
                p.unpublished.clone(),
            );
            registry.register(
                "published_jwks_errors",
                "Failures to read the published JWKS (TOKENVEND_PUBLISHED_JWKS_URL), once per \
                 failure",
                p.errors.clone(),
            );
            p
        });
        Metrics {
            registry,
            requests,
            latency,
            sts_calls,
            cache,
            validation_failures,
            config_reloads,
            cert,
            connections,
            keys,
            publication,
        }
    }

    /// One answered exchange request.
    pub fn request(&self, endpoint: &'static str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels { endpoint, status })
            .inc();
        self.latency.observe(seconds);
    }

    /// One STS call.
    pub fn sts_call(&self, ok: bool) {
        let reason = if ok { "ok" } else { "error" };
        self.sts_calls.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// One cache lookup.
    pub fn cache(&self, cache: &'static str, lookup: Lookup) {
        let result = lookup.as_str();
        self.cache
            .get_or_create(&CacheLabels { cache, result })
            .inc();
    }

    /// One rejected token.
    pub fn validation_failure(&self, reason: &'static str) {
        self.validation_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// A changed policy file reloaded, or rejected.
    pub fn config_reload(&self, file: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.config_reloads
            .get_or_create(&FileResultLabels { file, result })
            .inc();
    }

    /// The serving certificate loaded (at start or on a change), or a failed reload.
    pub fn cert(&self, result: Result<Validity, &TlsError>) {
        if let Some(c) = &self.cert {
            c.record(result);
        }
    }

    /// Why TLS clients refuse the serving certificate in use at `now`, with TLS, if they do.
    pub fn cert_problem(&self, now: i64) -> Option<String> {
        self.cert.as_ref().and_then(|c| c.problem(now))
    }

    /// The signing keys loaded (at start or on a change), or a failed reload.
    pub fn signing_key_reload(&self, ok: bool) {
        if let Some(k) = &self.keys {
            let result = if ok { "ok" } else { "error" };
            k.reloads.get_or_create(&ResultLabels { result }).inc();
        }
    }

    /// How many keys the JWKS publishes now.
    pub fn signing_keys_published(&self, n: usize) {
        if let Some(k) = &self.keys {
            k.published.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// How many newer keys wait for publication.
    pub fn signing_keys_unpublished(&self, n: usize) {
        if let Some(p) = &self.publication {
            p.unpublished.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// How many keys signed tokens still valid that the published JWKS does not list.
    pub fn signing_keys_unlisted(&self, n: usize) {
        if let Some(p) = &self.publication {
            p.unlisted.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The published JWKS could not be read (once per failure).
    pub fn published_jwks_error(&self) {
        if let Some(p) = &self.publication {
            p.errors.inc();
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
