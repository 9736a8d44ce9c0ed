//! `tokenvend-webhook`: parse config, set up logging, serve.

use clap::Parser;
use tokenvend_webhook::config::LogFormat;
use tokenvend_webhook::{Cli, run};
use tracing_subscriber::EnvFilter;

// Admission is allocation-heavy JSON work on a multi-threaded runtime; mimalloc halves the
// allocator share of it (glibc and, in the static image, musl malloc are slower here).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // One line per admission: written by a dedicated thread so handlers never wait on stdout,
    // batched into one write per burst, never dropped (a full queue slows the handlers instead).
    // The guard flushes what is queued when main returns.
    let (log_writer, _log_guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::new(std::io::stdout()));
    match cli.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter(filter)
            .with_writer(log_writer)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(log_writer)
            .init(),
    }
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    let check_only = cli.check_config;
    let config = cli.into_server_config()?;
    if check_only {
        // Render what the config injects too, exactly as the server does at start.
        tokenvend_webhook::mutate::Injector::new(config.mutation.clone())?;
        println!("configuration is valid: {:#?}", config.mutation);
        return Ok(());
    }
    run(config).await?;
    Ok(())
}
