//! `tokenvend-sts`: parse config, set up logging, serve (or run a one-off subcommand).

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokenvend_sts::issuer::{Issuer, create_key_file};
use tokenvend_sts::{Cli, Command, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = cli.serve.log_filter().map_err(anyhow::Error::msg)?;
    // Held until main returns, so queued lines are written out.
    let _log_guard = tokenvend_core::logging::init(cli.serve.log_format, &filter)?;
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    match cli.command {
        None => run(cli.serve).await?,
        Some(Command::IssuerDocs { out }) => {
            let (Some(url), Some(dir)) = (&cli.serve.issuer_url, &cli.serve.signing_key_dir) else {
                anyhow::bail!(
                    "issuer-docs needs --issuer-url and --signing-key-dir (TOKENVEND_ISSUER_URL, TOKENVEND_SIGNING_KEY_DIR)"
                );
            };
            let issuer = Issuer::new(
                url.clone(),
                cli.serve.issued_audience.clone(),
                Duration::from_secs(cli.serve.token_ttl_seconds),
                dir.clone(),
                false,
            )?;
            for f in issuer
                .write_docs(&out)
                .with_context(|| format!("writing to {}", out.display()))?
            {
                println!("{}", f.display());
            }
        }
        Some(Command::Keygen { out }) => {
            create_key_file(&out).with_context(|| format!("creating {}", out.display()))?;
            println!("{}", out.display());
        }
    }
    Ok(())
}
