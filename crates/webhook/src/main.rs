//! `tokenvend-webhook`: parse config, set up logging, serve.

use clap::Parser;
use tokenvend_webhook::{Cli, run};

// Admission is allocation-heavy JSON work on a multi-threaded runtime; mimalloc halves the
// allocator share of it (glibc and, in the static image, musl malloc are slower here).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Held until main returns, so queued lines are written out.
    let _log_guard = tokenvend_core::logging::init(cli.log_format, "info")?;
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    let check_only = cli.check_config;
    let config = cli.into_server_config()?;
    if check_only {
        // Render what the config injects too, exactly as the server does at start.
        tokenvend_webhook::mutate::Injector::new(config.mutation.clone())?;
        println!("configuration is valid: {:#?}", config.mutation);
        for concern in config.mutation.concerns() {
            println!("warning: {concern}");
        }
        return Ok(());
    }
    run(config).await?;
    Ok(())
}
