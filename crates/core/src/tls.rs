//! Serving certificate: load from PEM files, and swap in a new one when the files change
//! (cert-manager or tokenvend-certs rewrite the Secret; the kubelet swaps the mounted files).
//! The swap is atomic inside axum-server, so no request fails while it happens.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::clock;

/// Why a cert/key pair cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The cert file has no usable PEM certificate.
    #[error("{0}: no PEM certificate found")]
    NoCert(PathBuf),
    /// PEM could not be parsed.
    #[error("{path}: {reason}")]
    Pem {
        /// Which file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The certificate cannot be parsed as X.509.
    #[error("{0}: certificate is not valid X.509")]
    X509(PathBuf),
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("certificate and key cannot be used together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A loaded pair: the rustls config, when the leaf is valid, and a content fingerprint.
pub struct Loaded {
    /// Ready-to-serve rustls config (TLS 1.2 and 1.3, h2 + http/1.1).
    pub config: Arc<ServerConfig>,
    /// The leaf's validity period.
    pub validity: Validity,
    /// SHA-256 over both files' bytes, to notice changes.
    pub fingerprint: [u8; 32],
}

/// A leaf certificate's validity period, Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// `notBefore`.
    pub not_before: i64,
    /// `notAfter`.
    pub not_after: i64,
}

impl Validity {
    /// Why TLS clients refuse the serving certificate at `now` (Unix seconds), if they do:
    /// "serving certificate expired at ..." or "... not valid before ...". Serving it is still
    /// better than serving nothing, so this is for the log and readiness, not a reason to stop.
    pub fn problem(&self, now: i64) -> Option<String> {
        if now > self.not_after {
            Some(format!(
                "serving certificate expired at {}",
                clock::rfc3339(self.not_after)
            ))
        } else if now < self.not_before {
            Some(format!(
                "serving certificate not valid before {} (is this machine's clock right?)",
                clock::rfc3339(self.not_before)
            ))
        } else {
            None
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    crate::limited::read(path, crate::limited::MAX_BYTES).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Fingerprint of both files' contents (a cheap change check).
pub fn fingerprint(cert_path: &Path, key_path: &Path) -> Result<[u8; 32], TlsError> {
    let mut h = Sha256::new();
    h.update(read(cert_path)?);
    h.update([0]);
    h.update(read(key_path)?);
    Ok(h.finalize().into())
}

/// Load and check a cert chain + key pair.
pub fn load(cert_path: &Path, key_path: &Path) -> Result<Loaded, TlsError> {
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let mut h = Sha256::new();
    h.update(&cert_pem);
    h.update([0]);
    h.update(&key_pem);
    let fingerprint = h.finalize().into();

    let pem_err = |path: &Path, e: rustls_pki_types::pem::Error| TlsError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(cert_path, e))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCert(cert_path.to_owned()));
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|_| TlsError::X509(cert_path.to_owned()))?;
    let validity = Validity {
        not_before: parsed.validity().not_before.timestamp(),
        not_after: parsed.validity().not_after.timestamp(),
    };
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| pem_err(key_path, e))?;
    let mut config = ServerConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ])
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        validity,
        fingerprint,
    })
}

/// Poll the files every `interval`; reload when their content changes and the new pair is valid.
/// An invalid new pair keeps the old one and is retried. It is reported only if it is still on
/// disk a tick later: a writer that replaces the certificate and then the key (two renames, or
/// `cp`) leaves a mismatched pair for a moment, and that is no failure to alert on.
/// `on_reload` hears of every reload, `Ok(validity)`, of every such failure and of the files
/// becoming unreadable; each failure is reported and logged once, not on every tick.
/// The certificate in use (the one loaded with fingerprint `current` and `validity`, then each
/// reloaded one) is also checked against the clock on each tick: one that has expired, or is
/// not valid yet, is one warning, since every TLS client refuses it and nothing else on this
/// side would say so.
pub async fn watch(
    rustls: RustlsConfig,
    cert_path: PathBuf,
    key_path: PathBuf,
    mut current: [u8; 32],
    mut validity: Validity,
    interval: Duration,
    on_reload: impl Fn(Result<Validity, &TlsError>) + Send + 'static,
) {
    let mut last_error: Option<[u8; 32]> = None;
    // An invalid pair seen once: reported if the next tick still finds it.
    let mut pending: Option<[u8; 32]> = None;
    // A Secret that stays missing is one warning and one counted failure, not one per tick.
    let mut unreadable = crate::FailureLatch::default();
    let mut refused = crate::FailureLatch::default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match validity.problem(clock::now()) {
            Some(problem) => {
                if refused.failed(problem.clone()) {
                    tracing::warn!(
                        cert = %cert_path.display(),
                        "{problem}: TLS clients refuse it until new files \
                         arrive (is its issuer, tokenvend-certs or cert-manager, renewing it?)"
                    );
                }
            }
            None => {
                if refused.recovered() {
                    tracing::info!(
                        not_after = %clock::rfc3339(validity.not_after),
                        "serving certificate in use is valid"
                    );
                }
            }
        }
        let fp = match fingerprint(&cert_path, &key_path) {
            Ok(fp) => fp,
            Err(e) => {
                if unreadable.failed(e.to_string()) {
                    on_reload(Err(&e));
                    tracing::warn!(error = %e, "serving certificate files unreadable; keeping the loaded one");
                }
                continue;
            }
        };
        if unreadable.recovered() {
            tracing::info!("serving certificate files readable again");
        }
        if fp == current || last_error == Some(fp) {
            continue;
        }
        match load(&cert_path, &key_path) {
            Ok(loaded) if loaded.fingerprint == fp => {
                rustls.reload_from_config(loaded.config);
                current = fp;
                validity = loaded.validity;
                last_error = None;
                pending = None;
                on_reload(Ok(validity));
                tracing::info!(
                    not_after = %clock::rfc3339(validity.not_after),
                    "reloaded serving certificate"
                );
            }
            // The files changed again between the two reads: look again next tick.
            Ok(_) => {}
            Err(_) if pending != Some(fp) => pending = Some(fp),
            Err(e) => {
                last_error = Some(fp);
                pending = None;
                on_reload(Err(&e));
                tracing::warn!(error = %e, "new serving certificate rejected; keeping the loaded one");
            }
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The serving certificate's metrics, alike in every server that serves TLS:
/// `<prefix>_cert_not_after_seconds`, `<prefix>_cert_not_before_seconds` and
/// `<prefix>_cert_reloads_total{result="ok"|"error"}`.
#[derive(Clone, Debug, Default)]
pub struct CertMetrics {
    not_after: Gauge,
    not_before: Gauge,
    reloads: Family<ResultLabel, Counter>,
}

impl CertMetrics {
    /// Register the metrics under `registry`'s prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let m = CertMetrics::default();
        registry.register(
            "cert_not_after_seconds",
            "notAfter of the serving certificate in use, Unix seconds",
            m.not_after.clone(),
        );
        registry.register(
            "cert_not_before_seconds",
            "notBefore of the serving certificate in use, Unix seconds",
            m.not_before.clone(),
        );
        registry.register(
            "cert_reloads",
            "Serving certificate loads by result (ok: at start or on a change; error: a changed \
             pair rejected, or the files unreadable, once per failure)",
            m.reloads.clone(),
        );
        m
    }

    /// What [`watch`]'s `on_reload` and the first [`load`] report: a certificate in use, or a failure.
    pub fn record(&self, result: Result<Validity, &TlsError>) {
        let result = match result {
            Ok(validity) => {
                self.not_before.set(validity.not_before);
                self.not_after.set(validity.not_after);
                "ok"
            }
            Err(_) => "error",
        };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }

    /// Why TLS clients refuse the certificate in use at `now`, if one is loaded and they do
    /// (see [`Validity::problem`]): a server serving it is not ready.
    pub fn problem(&self, now: i64) -> Option<String> {
        let validity = Validity {
            not_before: self.not_before.get(),
            not_after: self.not_after.get(),
        };
        // Nothing loaded yet is the caller's own kind of not ready.
        if validity.not_after == 0 {
            return None;
        }
        validity.problem(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokenvend_testkit::tls::{ca, install, leaf, leaf_between};

    /// Sleeps in paused time; the watcher ticks at 0 s, 1 s, 2 s, ... and the test acts between.
    async fn sleep_ms(ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_pair_replaced_file_by_file_is_no_failure_and_a_bad_one_is_reported_once() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tmp");
        let (ca_cert, _key, issuer) = ca("ca");
        let [first, second, third] = [(); 3].map(|()| leaf(&ca_cert, &issuer));
        install(dir.path(), &first);
        let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let loaded = load(&crt, &key).expect("first pair");
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        tokio::spawn(watch(
            RustlsConfig::from_config(loaded.config),
            crt.clone(),
            key.clone(),
            loaded.fingerprint,
            loaded.validity,
            Duration::from_secs(1),
            move |r| {
                seen.lock()
                    .expect("events")
                    .push(r.map_err(|e| e.to_string()))
            },
        ));
        let events = move || events.lock().expect("events").clone();

        // A writer replaces the certificate, and the key only after the 1 s tick has seen the
        // certificate without it.
        sleep_ms(500).await;
        std::fs::write(&crt, &second.cert_pem).expect("write");
        sleep_ms(1000).await;
        std::fs::write(&key, &second.key_pem).expect("write");
        sleep_ms(1000).await;
        let second = load(&crt, &key).expect("second pair").validity;
        assert_eq!(events(), vec![Ok(second)], "loaded, and no failure");

        // A certificate whose key never comes: reported at the tick after the one that first saw
        // it, and only once.
        std::fs::write(&crt, &third.cert_pem).expect("write");
        sleep_ms(1000).await;
        assert_eq!(events().len(), 1, "not yet: the key may be on its way");
        sleep_ms(3000).await;
        let all = events();
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(
            all[1]
                .as_ref()
                .is_err_and(|e| e.contains("cannot be used together")),
            "{all:?}"
        );
    }

    #[test]
    fn a_certificate_outside_its_validity_is_named_as_one_clients_refuse() {
        let v = Validity {
            not_before: 1_795_000_000,
            not_after: 1_795_499_147,
        };
        // (now, problem)
        for (now, want) in [
            (1_795_000_000, None),
            (1_795_200_000, None),
            (1_795_499_147, None),
            (
                1_795_499_148,
                Some("serving certificate expired at 2026-11-24T05:45:47Z"),
            ),
            (
                1_794_999_999,
                Some(
                    "serving certificate not valid before 2026-11-18T11:06:40Z (is this \
                     machine's clock right?)",
                ),
            ),
        ] {
            assert_eq!(v.problem(now).as_deref(), want, "at {now}");
        }
    }

    #[test]
    fn a_loaded_pair_carries_its_validity() {
        let dir = tempfile::tempdir().expect("tmp");
        let (ca_cert, _key, issuer) = ca("ca");
        install(
            dir.path(),
            &leaf_between(&ca_cert, &issuer, 1_795_000_000, 1_795_499_147),
        );
        let loaded = load(&dir.path().join("tls.crt"), &dir.path().join("tls.key")).expect("pair");
        assert_eq!(
            loaded.validity,
            Validity {
                not_before: 1_795_000_000,
                not_after: 1_795_499_147
            }
        );
    }

    #[test]
    fn a_pair_naming_an_endless_file_is_an_error_not_a_read_without_end() {
        let dir = tempfile::tempdir().expect("tmp");
        let (ca_cert, _key, issuer) = ca("ca");
        install(dir.path(), &leaf(&ca_cert, &issuer));
        let zero = Path::new("/dev/zero");
        for (crt, key) in [
            (zero.to_owned(), dir.path().join("tls.key")),
            (dir.path().join("tls.crt"), zero.to_owned()),
        ] {
            let err = load(&crt, &key).err().expect("refused").to_string();
            assert_eq!(
                err,
                "cannot read /dev/zero: larger than 1024 KiB: is it the right file?"
            );
        }
    }

    #[test]
    fn cert_metrics_keep_the_last_good_validity_and_count_each_result() {
        let mut registry = Registry::with_prefix("x");
        let m = CertMetrics::register(&mut registry);
        assert_eq!(m.problem(5_000), None, "nothing loaded is not this problem");
        let pair = |not_before, not_after| Validity {
            not_before,
            not_after,
        };
        m.record(Ok(pair(500, 1_000)));
        m.record(Err(&TlsError::NoCert("c.pem".into())));
        assert_eq!(
            m.problem(1_001).as_deref(),
            Some("serving certificate expired at 1970-01-01T00:16:40Z"),
            "a failure keeps the certificate in use"
        );
        m.record(Ok(pair(1_500, 2_000)));
        for (now, want) in [
            (1_500, None),
            (2_000, None),
            (
                1_499,
                Some(
                    "serving certificate not valid before 1970-01-01T00:25:00Z (is this \
                     machine's clock right?)",
                ),
            ),
        ] {
            assert_eq!(m.problem(now).as_deref(), want, "at {now}");
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for line in [
            "x_cert_not_after_seconds 2000",
            "x_cert_not_before_seconds 1500",
            "x_cert_reloads_total{result=\"ok\"} 2",
            "x_cert_reloads_total{result=\"error\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
