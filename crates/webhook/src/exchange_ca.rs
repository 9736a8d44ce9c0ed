//! The CA bundle sidecars are given to trust tokenvend-sts, followed as its file changes. The
//! certs job rotates the CA (or recreates it when its key is lost) without restarting the
//! webhook; pods admitted afterwards with the bundle read at start would trust none of the
//! certificates tokenvend-sts is then given, and never get credentials.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokenvend_core::FailureLatch;

use crate::config::read_ca_bundle;
use crate::metrics::Metrics;
use crate::mutate::Injector;

/// Re-read `path` every `interval` and, when it holds a different usable bundle, swap in an
/// injector built with it. A file that cannot be used keeps the bundle in use; it is reported
/// (warning, `exchange_ca_reloads_total{result="error"}`) only if a tick later it is still the
/// same failure (a writer may be midway), and once per failure, not on every tick.
pub async fn watch(
    path: PathBuf,
    injector: Arc<ArcSwap<Injector>>,
    interval: Duration,
    metrics: Arc<Metrics>,
) {
    let mut reported = FailureLatch::default();
    let mut pending: Option<String> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate, and the bundle was read at start.
    tick.tick().await;
    loop {
        tick.tick().await;
        let current = injector.load_full();
        let reloaded = read_ca_bundle(&path).and_then(|pem| {
            if current.config().exchange_ca_pem.as_deref() == Some(pem.as_str()) {
                return Ok(None);
            }
            let mut cfg = current.config().clone();
            cfg.exchange_ca_pem = Some(pem);
            Injector::new(cfg)
                .map(Some)
                .map_err(|e| format!("cannot render the sidecar with it: {e}"))
        });
        match reloaded {
            Ok(next) => {
                pending = None;
                if reported.recovered() {
                    tracing::info!(path = %path.display(), "exchange CA bundle usable again");
                }
                if let Some(next) = next {
                    injector.store(Arc::new(next));
                    metrics.exchange_ca_reload(true);
                    tracing::info!(path = %path.display(), "reloaded the exchange CA bundle: pods admitted from now on are given it");
                }
            }
            Err(reason) if pending.as_deref() != Some(reason.as_str()) => pending = Some(reason),
            Err(reason) => {
                if reported.failed(reason.clone()) {
                    metrics.exchange_ca_reload(false);
                    tracing::warn!(error = %reason, "exchange CA bundle unusable; pods are still given the one loaded before");
                }
            }
        }
    }
}
