//! Prometheus metrics: admissions by outcome and mode, admission latency, certificate state.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokenvend_core::connections::ConnectionMetrics;
use tokenvend_core::tls::{CertMetrics, TlsError, Validity};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    outcome: &'static str,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// All metrics of the webhook, plus the readiness state they share a lifetime with.
pub struct Metrics {
    registry: Registry,
    admissions: Family<AdmissionLabels, Counter>,
    latency: Histogram,
    rejected: Family<ResultLabels, Counter>,
    exchange_ca_reloads: Family<ResultLabels, Counter>,
    config_reloads: Family<ResultLabels, Counter>,
    cert: CertMetrics,
    /// Connections held and turned away at the HTTPS port.
    pub connections: ConnectionMetrics,
    /// [`STARTING`], [`SERVING`] or [`STOPPING`]: whether the TLS listener is bound and not
    /// shutting down.
    phase: AtomicU8,
    /// Why no serving certificate could be loaded yet, while starting.
    waiting: Mutex<Option<String>>,
}

const STARTING: u8 = 0;
const SERVING: u8 = 1;
const STOPPING: u8 = 2;

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tokenvend_webhook");
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admissions",
            "AdmissionReviews answered, by outcome (patched, unchanged, ignored, denied) and mode",
            admissions.clone(),
        );
        // 10 µs doubling to ~1.3 s: resolves the tens of microseconds a mutation takes.
        let latency = Histogram::new(exponential_buckets(0.000_01, 2.0, 18));
        registry.register(
            "admission_duration_seconds",
            "Time from a complete request body to a serialized response",
            latency.clone(),
        );
        let rejected = Family::<ResultLabels, Counter>::default();
        registry.register(
            "bad_requests",
            "Requests refused before admission (bad JSON, wrong version, content type, size)",
            rejected.clone(),
        );
        let exchange_ca_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "exchange_ca_reloads",
            "Changes of the exchange CA bundle file given to sidecars: loaded (ok) or unusable (error)",
            exchange_ca_reloads.clone(),
        );
        let config_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Changes of the config file (--config): loaded (ok) or rejected, the settings in use \
             kept (error, once per failure)",
            config_reloads.clone(),
        );
        let cert = CertMetrics::register(&mut registry);
        let connections = ConnectionMetrics::register(&mut registry);
        Metrics {
            registry,
            admissions,
            latency,
            rejected,
            exchange_ca_reloads,
            config_reloads,
            cert,
            connections,
            phase: AtomicU8::new(STARTING),
            waiting: Mutex::new(None),
        }
    }

    /// Count one answered admission.
    pub fn admission(&self, outcome: &'static str, mode: &'static str, seconds: f64) {
        self.admissions
            .get_or_create(&AdmissionLabels { outcome, mode })
            .inc();
        self.latency.observe(seconds);
    }

    /// Count one request refused before admission.
    pub fn bad_request(&self, result: &'static str) {
        self.rejected.get_or_create(&ResultLabels { result }).inc();
    }

    /// A changed exchange CA bundle loaded (`true`), or found unusable.
    pub fn exchange_ca_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.exchange_ca_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// A changed config file loaded (`true`), or rejected.
    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.config_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// A certificate loaded (at start or by reload), or a failed reload.
    pub fn cert(&self, result: Result<Validity, &TlsError>) {
        self.cert.record(result);
    }

    /// Why the first serving certificate cannot be loaded (`Some`), or that it has been (`None`):
    /// readiness says so while starting.
    pub fn waiting_for_cert(&self, reason: Option<String>) {
        // A panic elsewhere while holding it leaves a plain value: still usable.
        *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    /// The TLS listener is bound. No effect once shutdown has begun, whichever came first.
    pub fn mark_serving(&self) {
        let _ = self
            .phase
            .compare_exchange(STARTING, SERVING, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Shutdown has begun: not ready from now on.
    pub fn mark_stopping(&self) {
        self.phase.store(STOPPING, Ordering::Release);
    }

    /// Whether shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.phase.load(Ordering::Acquire) == STOPPING
    }

    /// Why the webhook is not ready at `now_unix`, if it is not: ready means the TLS listener is
    /// bound with a certificate TLS clients accept at that time, and the server is not shutting
    /// down.
    pub fn not_ready(&self, now_unix: i64) -> Option<String> {
        match self.phase.load(Ordering::Acquire) {
            STOPPING => Some("shutting down".to_owned()),
            SERVING => self.cert.problem(now_unix),
            _ => Some(
                match &*self.waiting.lock().unwrap_or_else(|e| e.into_inner()) {
                    Some(reason) => format!("not serving yet: {reason}"),
                    None => "not serving yet: no valid serving certificate loaded, or the HTTPS \
                             port not bound"
                        .to_owned(),
                },
            ),
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_a_bound_listener_and_a_certificate_valid_now_and_ends_at_shutdown() {
        let m = Metrics::new();
        m.cert(Ok(Validity {
            not_before: 5,
            not_after: 1_000,
        }));
        let not_yet =
            "not serving yet: no valid serving certificate loaded, or the HTTPS port not bound";
        assert_eq!(
            m.not_ready(10).as_deref(),
            Some(not_yet),
            "certificate loaded, listener not bound yet"
        );
        m.waiting_for_cert(Some(
            "cannot read tls.crt: No such file or directory".into(),
        ));
        assert_eq!(
            m.not_ready(10).as_deref(),
            Some("not serving yet: cannot read tls.crt: No such file or directory"),
            "no certificate loaded yet, and why"
        );
        m.waiting_for_cert(None);
        m.mark_serving();
        assert_eq!(m.not_ready(10), None);
        assert_eq!(
            m.not_ready(1_000),
            None,
            "notAfter is the last valid second"
        );
        assert_eq!(
            m.not_ready(1_001).as_deref(),
            Some("serving certificate expired at 1970-01-01T00:16:40Z")
        );
        assert_eq!(
            m.not_ready(4).as_deref(),
            Some(
                "serving certificate not valid before 1970-01-01T00:00:05Z (is this machine's \
                 clock right?)"
            )
        );
        m.mark_stopping();
        assert_eq!(m.not_ready(10).as_deref(), Some("shutting down"));
        m.mark_serving();
        assert_eq!(
            m.not_ready(10).as_deref(),
            Some("shutting down"),
            "a bind reported after SIGTERM does not make it ready again"
        );
    }
}
