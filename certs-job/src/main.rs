//! `tokenvend-certs`: parse flags, set up logging, reconcile once (a Job / CronJob run).

use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use tokenvend_certs::config::{Cli, Target};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cfg = Cli::parse().validate().map_err(anyhow::Error::msg)?;
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
    match &cfg.target {
        Target::Dir(dir) => {
            let d = tokenvend_certs::local::reconcile(dir, &cfg.settings, now)
                .map_err(anyhow::Error::msg)?;
            tracing::info!(decision = ?d, dir = %dir.display(), "certificates reconciled");
        }
        Target::Cluster {
            secret,
            webhook_config,
        } => {
            let client = kube::Client::try_default().await.map_err(|e| {
                anyhow::anyhow!("Kubernetes API access (in-cluster or KUBECONFIG): {e}")
            })?;
            let r = tokenvend_certs::cluster::reconcile(
                client,
                &cfg.namespace,
                secret,
                webhook_config,
                &cfg.settings,
                now,
            )
            .await?;
            tracing::info!(decision = ?r.decision, webhooks_patched = r.webhooks_patched, secrets_written = r.secrets_written, "certificates reconciled");
            if let Some(by) = r.restart_sidecars_by {
                let by = time::OffsetDateTime::from_unix_timestamp(by)
                    .ok()
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_else(|| by.to_string());
                tracing::warn!(restart_before = %by, "the CA changed: pods with a tokenvend sidecar admitted before now were given only the old one. Their sidecars take the new bundle from tokenvend-sts (GET /ca-bundle) at their next refresh; pods whose sidecars cannot (older sidecar images, tokenvend-sts without TOKENVEND_CA_BUNDLE_FILE, or restart_before already now because the serving certificate was replaced at once) must be restarted before this time, after which their sidecars can no longer refresh");
            }
        }
    }
    Ok(())
}
