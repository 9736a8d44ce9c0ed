//! Prometheus metrics of tokenvend-sts.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

/// Every metric of the service.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
    sts_calls: Family<ReasonLabels, Counter>,
    cache: Family<CacheLabels, Counter>,
    validation_failures: Family<ReasonLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register everything.
    pub fn new() -> Self {
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
            "Cache lookups by cache (validation, credentials) and result (hit, miss)",
            cache.clone(),
        );
        let validation_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "validation_failures",
            "Rejected service-account tokens by reason",
            validation_failures.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            sts_calls,
            cache,
            validation_failures,
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
    pub fn cache(&self, cache: &'static str, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
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

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
