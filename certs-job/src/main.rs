//! `tokenvend-certs`: parse flags, set up logging, reconcile once (a Job / CronJob run).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use tokenvend_certs::pki::service_sans;
use tokenvend_certs::plan::Settings;

/// Bootstraps and rotates the webhook's TLS.
#[derive(Debug, Parser)]
#[command(name = "tokenvend-certs", version, about)]
struct Cli {
    /// Service name(s) the certificate serves, comma-separated (the first names the CA); each gets
    /// `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc`, `<svc>.<ns>.svc.cluster.local`.
    #[arg(
        long,
        env = "TOKENVEND_SERVICE",
        value_delimiter = ',',
        required = true
    )]
    service: Vec<String>,
    /// Namespace of the Service and Secrets.
    #[arg(long, env = "TOKENVEND_NAMESPACE")]
    namespace: String,
    /// Local mode: write ca.crt, ca.key, tls.crt, tls.key here (no cluster).
    #[arg(long, env = "TOKENVEND_OUT_DIR", conflicts_with_all = ["secret", "webhook_config"])]
    out_dir: Option<PathBuf>,
    /// In-cluster mode: the kubernetes.io/tls Secret (the CA goes to `<secret>-ca`).
    #[arg(long, env = "TOKENVEND_SECRET", requires = "webhook_config")]
    secret: Option<String>,
    /// In-cluster mode: the MutatingWebhookConfiguration whose caBundles to keep in step.
    #[arg(long, env = "TOKENVEND_WEBHOOK_CONFIG", requires = "secret")]
    webhook_config: Option<String>,
    /// CA lifetime, days.
    #[arg(long, env = "TOKENVEND_CA_VALIDITY_DAYS", default_value_t = 3650)]
    ca_validity_days: u64,
    /// Serving certificate lifetime, days.
    #[arg(long, env = "TOKENVEND_SERVING_VALIDITY_DAYS", default_value_t = 365)]
    serving_validity_days: u64,
    /// Renew the serving certificate when fewer days are left.
    #[arg(long, env = "TOKENVEND_RENEW_BEFORE_DAYS", default_value_t = 30)]
    renew_before_days: u64,
    /// Rotate the CA when fewer days are left.
    #[arg(long, env = "TOKENVEND_CA_RENEW_BEFORE_DAYS", default_value_t = 365)]
    ca_renew_before_days: u64,
    /// Days a replaced CA stays in the caBundle.
    #[arg(long, env = "TOKENVEND_CA_OVERLAP_DAYS", default_value_t = 7)]
    ca_overlap_days: u64,
}

const DAY: u64 = 86_400;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if cli.renew_before_days >= cli.serving_validity_days
        || cli.ca_renew_before_days >= cli.ca_validity_days
    {
        anyhow::bail!(
            "--renew-before-days must be below --serving-validity-days and --ca-renew-before-days below --ca-validity-days"
        );
    }
    if cli.serving_validity_days > cli.ca_validity_days - cli.ca_renew_before_days {
        anyhow::bail!(
            "--serving-validity-days must not outlive the CA's renewal point (ca-validity - ca-renew-before)"
        );
    }
    let settings = Settings {
        sans: cli
            .service
            .iter()
            .flat_map(|svc| service_sans(svc, &cli.namespace))
            .collect(),
        ca_name: format!("{}-ca", cli.service[0]),
        ca_validity: Duration::from_secs(cli.ca_validity_days * DAY),
        serving_validity: Duration::from_secs(cli.serving_validity_days * DAY),
        renew_before: Duration::from_secs(cli.renew_before_days * DAY),
        ca_renew_before: Duration::from_secs(cli.ca_renew_before_days * DAY),
        ca_overlap: Duration::from_secs(cli.ca_overlap_days * DAY),
    };
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
    match (&cli.out_dir, &cli.secret, &cli.webhook_config) {
        (Some(dir), _, _) => {
            let d = tokenvend_certs::local::reconcile(dir, &settings, now)
                .map_err(anyhow::Error::msg)?;
            tracing::info!(decision = ?d, dir = %dir.display(), "certificates reconciled");
        }
        (None, Some(secret), Some(mwc)) => {
            let client = kube::Client::try_default().await.map_err(|e| {
                anyhow::anyhow!("Kubernetes API access (in-cluster or KUBECONFIG): {e}")
            })?;
            let r = tokenvend_certs::cluster::reconcile(
                client,
                &cli.namespace,
                secret,
                mwc,
                &settings,
                now,
            )
            .await?;
            tracing::info!(decision = ?r.decision, webhooks_patched = r.webhooks_patched, secrets_written = r.secrets_written, "certificates reconciled");
        }
        _ => anyhow::bail!("give either --out-dir DIR, or --secret NAME and --webhook-config NAME"),
    }
    Ok(())
}
