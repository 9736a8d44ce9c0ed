//! tokenvend-sidecar: exchanges the pod's projected service-account token at tokenvend-sts
//! and keeps the shared web-identity token or credentials fresh, atomically, well before expiry.

pub mod config;
pub mod exchange;
pub mod outputs;
pub mod refresh;
pub mod serve;
pub mod trust;
pub mod wait;

use std::sync::Arc;
use std::time::SystemTime;

use tokenvend_core::Mode;

use crate::config::{Config, ProbeArgs};
use crate::exchange::{Exchanger, Value, now};

/// `probe`: Ok when the file is present and valid long enough, else the reason, with why the
/// latest exchange failed when it did.
pub fn probe(a: &ProbeArgs) -> Result<i64, String> {
    check_file(a).map_err(|e| outputs::with_last_failure(&a.out_dir, e))
}

fn check_file(a: &ProbeArgs) -> Result<i64, String> {
    let existing = outputs::read_value(&a.out_dir, a.mode)?;
    let exp = existing.value.expires_at().ok_or("no expiry in the file")?;
    let left = exp - now();
    // The file's write time stands for the value's issue time (as at start-up reuse).
    let required = refresh::required_validity(a.min_valid_seconds, existing.written_at, exp);
    if left < required {
        let capped = if required < a.min_valid_seconds {
            " (half its lifetime)"
        } else {
            ""
        };
        return Err(format!(
            "valid for {left} s, less than the required {required} s{capped}"
        ));
    }
    Ok(left)
}

/// Run the refresher until SIGTERM (or, with `--once`, until the first file is written).
pub async fn run(cfg: Config) -> Result<(), String> {
    std::fs::create_dir_all(&cfg.out_dir)
        .map_err(|e| format!("--out-dir {}: {e}", cfg.out_dir.display()))?;
    // A previous run killed mid-write (OOM, SIGKILL) left its temp file: in the pod's 1 MiB
    // in-memory volume, for the pod's whole life. Only one refresher writes at a time (the
    // classic init container has exited before the regular one starts).
    match tokenvend_core::atomic::remove_stale_temps(&cfg.out_dir) {
        Ok(removed) if !removed.is_empty() => {
            tracing::info!(files = ?removed, "removed temp files a previous run left");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not look for temp files a previous run left"),
    }
    let ca_pem = trust::initial(&cfg.out_dir, cfg.ca_pem.clone());
    let mut exchanger = Exchanger::new(
        &cfg.exchange_url,
        cfg.mode,
        cfg.role_arn.clone(),
        ca_pem.as_deref(),
        cfg.timeout,
    )?;
    // A private CA over TLS is followed through rotations; the system roots need no following.
    let mut follower = match ca_pem {
        Some(pem) if !cfg.once && cfg.exchange_url.starts_with("https://") => Some(
            trust::Follower::new(pem, cfg.out_dir.clone(), cfg.file_mode),
        ),
        _ => None,
    };
    let (tx, rx) = tokio::sync::watch::channel::<Option<Value>>(None);

    // Reuse a still-valid value from a previous run (container restart) and refresh when due.
    let mut issued = now();
    match outputs::read_value(&cfg.out_dir, cfg.mode) {
        Ok(e) if e.value.expires_at().is_some_and(|x| x > now()) => {
            tracing::info!(
                expires_at = e.value.expires_at(),
                "reusing the value a previous run wrote"
            );
            issued = e.written_at.min(now());
            let _ = tx.send(Some(e.value));
        }
        Ok(_) => tracing::info!("the existing file has expired; exchanging now"),
        Err(_) => {}
    }
    if cfg.once && tx.borrow().is_some() {
        return Ok(());
    }

    let mut server = None;
    if cfg.mode == Mode::Credentials && !cfg.once {
        let auth_token = outputs::ensure_auth_token(&cfg.out_dir, cfg.file_mode)
            .map_err(|e| format!("auth-token file: {e}"))?;
        let listener = serve::bind(cfg.listen).await?;
        tracing::info!(addr = %cfg.listen, path = %cfg.credentials_path, "credentials endpoint listening");
        let served = Arc::new(serve::Served {
            auth_token,
            path: cfg.credentials_path.clone(),
            current: rx.clone(),
            out_dir: cfg.out_dir.clone(),
        });
        server = Some(tokio::spawn(serve::serve(listener, served)));
    } else if cfg.mode == Mode::Credentials {
        outputs::ensure_auth_token(&cfg.out_dir, cfg.file_mode)
            .map_err(|e| format!("auth-token file: {e}"))?;
    }

    let deadline = tokio::time::Instant::now() + cfg.once_deadline;
    let mut failures: u32 = 0;
    let mut term = signal_stream()?;
    loop {
        // A value without a readable expiry counts as expired.
        let expires = tx.borrow().as_ref().map(|v| v.expires_at().unwrap_or(0));
        let wait = refresh::next_wait(now(), issued, expires, failures, &cfg.policy, random01());
        // --once never sleeps past its deadline.
        let wait = if cfg.once {
            wait.min(deadline.saturating_duration_since(tokio::time::Instant::now()))
        } else {
            wait
        };
        if !wait.is_zero() {
            tokio::select! {
                () = sleep_until(SystemTime::now() + wait) => {}
                _ = term.recv() => break,
            }
        }
        if cfg.once && tokio::time::Instant::now() >= deadline {
            return Err(outputs::with_last_failure(
                &cfg.out_dir,
                format!(
                    "no value from {} within {:?}",
                    cfg.exchange_url, cfg.once_deadline
                ),
            ));
        }
        let result = tokio::select! {
            r = exchanger.fetch(&cfg.sa_token_file) => r,
            _ = term.recv() => break,
        };
        let written = result.map_err(|e| e.to_string()).and_then(|v| {
            // Before the value, so a reader that sees the new value never sees the old failure.
            if let Err(e) = outputs::clear_failure(&cfg.out_dir) {
                tracing::warn!(error = %e, "could not remove the last-error file");
            }
            outputs::write_value(&cfg.out_dir, &v, cfg.file_mode)
                .map_err(|e| format!("writing {}: {e}", cfg.out_dir.display()))?;
            Ok(v)
        });
        match written {
            Ok(v) => {
                issued = now();
                tracing::info!(
                    expires_at = v.expires_at(),
                    after_failures = failures,
                    "refreshed"
                );
                failures = 0;
                let _ = tx.send(Some(v));
                if cfg.once {
                    return Ok(());
                }
                if let Some(f) = follower.as_mut() {
                    tokio::select! {
                        () = f.look(&mut exchanger) => {}
                        _ = term.recv() => break,
                    }
                }
            }
            Err(reason) => {
                failures = failures.saturating_add(1);
                let valid_for = tx
                    .borrow()
                    .as_ref()
                    .and_then(Value::expires_at)
                    .map(|e| e - now());
                tracing::warn!(error = %reason, failures, current_valid_for_s = valid_for, "refresh failed; keeping the last good value while it is valid");
                if let Err(e) =
                    outputs::record_failure(&cfg.out_dir, &reason, failures, cfg.file_mode)
                {
                    tracing::warn!(error = %e, "could not write the last-error file");
                }
            }
        }
    }
    tracing::info!("SIGTERM: exiting");
    if let Some(s) = server {
        s.abort();
    }
    Ok(())
}

/// A uniform draw in [0, 1) for the jitter (0.5 should the OS generator fail: no jitter is
/// better than no refresh).
fn random01() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Sleep until the wall clock reaches `due`, in naps (see [`refresh::MAX_NAP`]), so a suspended
/// machine that wakes up past `due` refreshes within a nap instead of after the whole sleep.
async fn sleep_until(due: SystemTime) {
    while let Some(nap) = refresh::next_nap(SystemTime::now(), due) {
        tokio::time::sleep(nap).await;
    }
}

fn signal_stream() -> Result<tokio::signal::unix::Signal, String> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("SIGTERM handler: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn jitter_draws_are_in_range_and_vary() {
        let draws: Vec<f64> = (0..64).map(|_| super::random01()).collect();
        assert!(draws.iter().all(|r| (0.0..1.0).contains(r)), "{draws:?}");
        assert!(draws.windows(2).any(|w| w[0] != w[1]), "{draws:?}");
    }
}
