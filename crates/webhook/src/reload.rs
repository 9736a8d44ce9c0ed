//! The files the mutation settings come from, followed as they change: the config file (a
//! ConfigMap edited in place reaches it without a rollout) and the CA bundle sidecars are given
//! to trust tokenvend-sts (the certs job rotates the CA, or recreates it when its key is lost,
//! without restarting the webhook; pods admitted afterwards with the bundle read at start would
//! trust none of the certificates tokenvend-sts is then given, and never get credentials).
//!
//! One task checks both in turn, so a swap for one never undoes the other's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokenvend_core::FailureLatch;

use crate::config::{Config, MutationArgs, parse_file, read_ca_bundle, read_file_text};
use crate::metrics::Metrics;
use crate::mutate::Injector;

/// Where the settings in use came from.
pub struct Sources {
    /// The YAML file and the text in use, when there is one.
    pub config_file: Option<(PathBuf, String)>,
    /// The flags / env vars layer, which wins over the file.
    pub flags: MutationArgs,
    /// The exchange CA bundle file in use (the config file may name another one).
    pub exchange_ca_file: Option<PathBuf>,
}

impl Sources {
    /// Nothing to follow.
    pub fn is_empty(&self) -> bool {
        self.config_file.is_none() && self.exchange_ca_file.is_none()
    }
}

/// Check the sources every `interval` and swap in an injector built from what changed.
///
/// A config file that cannot be used (unreadable, not YAML, a bad value, an unusable CA bundle
/// it names) keeps the settings in use; so does a CA bundle file that cannot be used. Each is
/// reported (error log, `config_reloads_total{result="error"}` or
/// `exchange_ca_reloads_total{result="error"}`) once per failure, not on every tick; a CA bundle
/// only if a tick later it is still the same failure (its writer may be midway).
pub async fn watch(
    mut sources: Sources,
    injector: Arc<ArcSwap<Injector>>,
    interval: Duration,
    metrics: Arc<Metrics>,
) {
    let mut config_failure = FailureLatch::default();
    let mut ca_failure = FailureLatch::default();
    let mut ca_pending: Option<String> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate, and both files were read at start.
    tick.tick().await;
    loop {
        tick.tick().await;
        check_config(&mut sources, &injector, &metrics, &mut config_failure);
        if let Some(path) = sources.exchange_ca_file.clone() {
            check_exchange_ca(path, &injector, &metrics, &mut ca_failure, &mut ca_pending);
        }
    }
}

/// The config file's new text, as an injector and the CA bundle file it names; `None` when the
/// text is the one in use.
fn reload_config(sources: &Sources) -> Result<Option<(String, Injector, Option<PathBuf>)>, String> {
    let Some((path, in_use)) = &sources.config_file else {
        return Ok(None);
    };
    let text = read_file_text(path).map_err(|e| e.to_string())?;
    if text == *in_use {
        return Ok(None);
    }
    let merged = parse_file(path, &text)
        .map_err(|e| e.to_string())?
        .overlay(sources.flags.clone());
    let ca_file = merged.exchange_ca_file.clone();
    let cfg = Config::from_args(merged).map_err(|e| e.to_string())?;
    let injector =
        Injector::new(cfg).map_err(|e| format!("cannot render the sidecar with it: {e}"))?;
    Ok(Some((text, injector, ca_file)))
}

fn check_config(
    sources: &mut Sources,
    injector: &ArcSwap<Injector>,
    metrics: &Metrics,
    failure: &mut FailureLatch,
) {
    let Some(path) = sources
        .config_file
        .as_ref()
        .map(|(p, _)| p.display().to_string())
    else {
        return;
    };
    match reload_config(sources) {
        Ok(next) => {
            if failure.recovered() && next.is_none() {
                tracing::info!(
                    path,
                    "config file usable again (unchanged from the one in use)"
                );
            }
            if let Some((text, next, ca_file)) = next {
                injector.store(Arc::new(next));
                if let Some((_, in_use)) = &mut sources.config_file {
                    *in_use = text;
                }
                sources.exchange_ca_file = ca_file;
                metrics.config_reload(true);
                tracing::info!(
                    path,
                    "reloaded the config file: pods admitted from now on get its settings"
                );
            }
        }
        Err(reason) => {
            if failure.failed(reason.clone()) {
                metrics.config_reload(false);
                tracing::error!(error = %reason, "config file not reloaded; the settings in use stay");
            }
        }
    }
}

fn check_exchange_ca(
    path: PathBuf,
    injector: &ArcSwap<Injector>,
    metrics: &Metrics,
    reported: &mut FailureLatch,
    pending: &mut Option<String>,
) {
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
            *pending = None;
            if reported.recovered() {
                tracing::info!(path = %path.display(), "exchange CA bundle usable again");
            }
            if let Some(next) = next {
                injector.store(Arc::new(next));
                metrics.exchange_ca_reload(true);
                tracing::info!(path = %path.display(), "reloaded the exchange CA bundle: pods admitted from now on are given it");
            }
        }
        Err(reason) if pending.as_deref() != Some(reason.as_str()) => *pending = Some(reason),
        Err(reason) => {
            if reported.failed(reason.clone()) {
                metrics.exchange_ca_reload(false);
                tracing::warn!(error = %reason, "exchange CA bundle unusable; pods are still given the one loaded before");
            }
        }
    }
}
