//! `tokenvend-sidecar`: parse flags, set up logging, refresh (or probe, or wait).

use std::process::ExitCode;

use clap::Parser;
use tokenvend_core::LogLevel;
use tokenvend_sidecar::config::{Cli, Cmd};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Cmd::Probe(p)) = &cli.command {
        return match tokenvend_sidecar::probe(p) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("probe: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Cmd::Wait(w)) = &cli.command {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let waited = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))
            .and_then(|rt| rt.block_on(tokenvend_sidecar::wait::until_served(w)));
        return match waited {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wait: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let level = match cli.run.log_level.parse::<LogLevel>() {
        Ok(LogLevel::Error) => tracing::Level::ERROR,
        Ok(LogLevel::Warn) => tracing::Level::WARN,
        Ok(LogLevel::Info) => tracing::Level::INFO,
        // Without an env filter (kept out of the small binary), debug means every crate's.
        Ok(LogLevel::Debug) => tracing::Level::DEBUG,
        Err(e) => {
            eprintln!("tokenvend-sidecar: --log-level (TOKENVEND_LOG_LEVEL): {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_max_level(level)
        .init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cfg = match cli.run.validate() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "invalid configuration");
            eprintln!("tokenvend-sidecar: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokenvend-sidecar: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(tokenvend_sidecar::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            eprintln!("tokenvend-sidecar: {e}");
            ExitCode::FAILURE
        }
    }
}
