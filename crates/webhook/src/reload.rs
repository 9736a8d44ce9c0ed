//! The files the mutation settings come from, followed as they change: the config file (a
//! ConfigMap edited in place reaches it without a rollout) and the CA bundle sidecars are given
//! to trust tokenvend-sts (the certs job rotates the CA, or recreates it when its key is lost,
//! without restarting the webhook; pods admitted afterwards with the bundle read at start would
//! trust none of the certificates tokenvend-sts is then given, and never get credentials).
//!
//! One task checks both in turn, so a swap for one never undoes the other's.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokenvend_core::{Checked, WatchedFile};

use crate::config::{Config, MutationArgs, check_ca_bundle, parse_file};
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
/// `exchange_ca_reloads_total{result="error"}`) once per failure, not on every tick, and only if
/// a tick later it is still the same failure: a file's writer may be midway (the config file's
/// own text, or the CA bundle it names).
pub async fn watch(
    sources: Sources,
    injector: Arc<ArcSwap<Injector>>,
    interval: Duration,
    metrics: Arc<Metrics>,
) {
    let mut config = sources
        .config_file
        .map(|(path, text)| follow_config(&path, text));
    let mut ca = follow_exchange_ca(sources.exchange_ca_file, &injector);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate, and both files were read at start.
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Some(file) = &mut config
            && let Some(ca_file) = check_config(file, &sources.flags, &injector, &metrics)
        {
            // The new settings hold the bundle they name, read just now.
            ca = follow_exchange_ca(ca_file, &injector);
        }
        if let Some(file) = &mut ca {
            check_exchange_ca(file, &injector, &metrics);
        }
    }
}

/// The config file at `path`, whose text in use is `in_use`.
fn follow_config(path: &Path, in_use: String) -> WatchedFile {
    WatchedFile::new("config file", path, in_use).patient()
}

/// The CA bundle file at `path`, whose text in use is the one the injector holds.
fn follow_exchange_ca(path: Option<PathBuf>, injector: &ArcSwap<Injector>) -> Option<WatchedFile> {
    let in_use = injector.load().config().exchange_ca_pem.clone();
    path.map(|p| WatchedFile::new("exchange CA bundle", &p, in_use.unwrap_or_default()).patient())
}

/// The config file's new text as an injector, and the CA bundle file it names.
fn build_injector(
    path: &Path,
    text: &str,
    flags: &MutationArgs,
) -> Result<(Injector, Option<PathBuf>), String> {
    let merged = parse_file(path, text)
        .map_err(|e| e.to_string())?
        .overlay(flags.clone());
    let ca_file = merged.exchange_ca_file.clone();
    let cfg = Config::from_args(merged).map_err(|e| e.to_string())?;
    let injector =
        Injector::new(cfg).map_err(|e| format!("cannot render the sidecar with it: {e}"))?;
    Ok((injector, ca_file))
}

/// Check the config file; after a reload, the CA bundle file the new settings name.
fn check_config(
    file: &mut WatchedFile,
    flags: &MutationArgs,
    injector: &ArcSwap<Injector>,
    metrics: &Metrics,
) -> Option<Option<PathBuf>> {
    let path = file.path().to_owned();
    let shown = path.display().to_string();
    match file.check(|text| build_injector(&path, text, flags)) {
        Checked::Unchanged | Checked::StillFailing => None,
        Checked::Recovered => {
            tracing::info!(
                path = shown,
                "config file usable again (unchanged from the one in use)"
            );
            None
        }
        Checked::Reloaded((next, ca_file)) => {
            injector.store(Arc::new(next));
            metrics.config_reload(true);
            tracing::info!(
                path = shown,
                "reloaded the config file: pods admitted from now on get its settings"
            );
            for concern in injector.load().config().concerns() {
                tracing::warn!("{concern}");
            }
            Some(ca_file)
        }
        Checked::Failed(reason) => {
            metrics.config_reload(false);
            tracing::error!(error = %reason, "config file not reloaded; the settings in use stay");
            None
        }
    }
}

fn check_exchange_ca(file: &mut WatchedFile, injector: &ArcSwap<Injector>, metrics: &Metrics) {
    let path = file.path().to_owned();
    let shown = path.display().to_string();
    let checked = file.check(|text| {
        let pem = check_ca_bundle(&path, text.to_owned())?;
        let mut cfg = injector.load().config().clone();
        cfg.exchange_ca_pem = Some(pem);
        Injector::new(cfg).map_err(|e| format!("cannot render the sidecar with it: {e}"))
    });
    match checked {
        Checked::Unchanged | Checked::StillFailing => {}
        Checked::Recovered => {
            tracing::info!(path = shown, "exchange CA bundle usable again");
        }
        Checked::Reloaded(next) => {
            injector.store(Arc::new(next));
            metrics.exchange_ca_reload(true);
            tracing::info!(
                path = shown,
                "reloaded the exchange CA bundle: pods admitted from now on are given it"
            );
        }
        Checked::Failed(reason) => {
            metrics.exchange_ca_reload(false);
            tracing::warn!(error = %reason, "exchange CA bundle unusable; pods are still given the one loaded before");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(name: &str) -> String {
        tokenvend_testkit::tls::ca(name).0.pem()
    }

    // An edit that names a new CA bundle, caught while the bundle's writer is midway, used to be
    // reported as a failed reload (an error line and a count) although the next check loaded it.
    #[test]
    fn a_config_edit_caught_with_its_ca_bundle_half_written_is_loaded_without_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let (config, bundle) = (dir.path().join("config.yaml"), dir.path().join("ca.crt"));
        let old_ca = pem("exchange-ca-1");
        std::fs::write(&bundle, &old_ca).expect("write");
        let text = format!("exchangeCaFile: {}\n", bundle.display());
        std::fs::write(&config, &text).expect("write");
        let flags = MutationArgs::default();
        let (first, _) = build_injector(&config, &text, &flags).expect("usable");
        let injector = ArcSwap::from_pointee(first);
        let metrics = Metrics::new();
        let mut file = follow_config(&config, text.clone());

        let new_ca = pem("exchange-ca-2");
        std::fs::write(
            &config,
            format!("{text}sidecarImage: example.com/sidecar:v2\n"),
        )
        .expect("write");
        std::fs::write(&bundle, &new_ca[..new_ca.len() / 2]).expect("half the bundle");
        assert_eq!(
            check_config(&mut file, &flags, &injector, &metrics),
            None,
            "not loaded yet"
        );
        std::fs::write(&bundle, &new_ca).expect("the rest");
        assert_eq!(
            check_config(&mut file, &flags, &injector, &metrics),
            Some(Some(bundle.clone())),
            "loaded, naming the bundle to follow"
        );
        let cfg = injector.load().config().clone();
        assert_eq!(cfg.sidecar_image, "example.com/sidecar:v2");
        assert_eq!(cfg.exchange_ca_pem.as_deref(), Some(new_ca.as_str()));
        let counted = metrics.encode();
        assert!(
            counted.contains("tokenvend_webhook_config_reloads_total{result=\"ok\"} 1")
                && !counted.contains("result=\"error\""),
            "{counted}"
        );

        // A bundle still broken on the next check is reported, once.
        std::fs::write(&config, &text).expect("write");
        std::fs::write(&bundle, "not a certificate\n").expect("write");
        for _ in 0..3 {
            assert_eq!(check_config(&mut file, &flags, &injector, &metrics), None);
        }
        let counted = metrics.encode();
        assert!(
            counted.contains("tokenvend_webhook_config_reloads_total{result=\"error\"} 1"),
            "{counted}"
        );
        assert_eq!(
            injector.load().config().sidecar_image,
            "example.com/sidecar:v2",
            "the settings in use stay"
        );
    }
}
