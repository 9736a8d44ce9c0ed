//! Benchmark baseline: the webhook's TLS stack (rustls config from the same loader, axum,
//! axum-server, TLS 1.2/1.3, h2 + http/1.1) answering `POST /mutate` with a fixed response: no
//! parsing, no mutation. The load script runs it next to the real webhook in the same run.
//!
//! baseline-server LISTEN CERT KEY RESPONSE_FILE

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use axum::http::header;
use axum::routing::post;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .map_err(|_| "crypto provider")?;
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, cert, key, response] = args.as_slice() else {
        return Err("usage: baseline-server LISTEN CERT KEY RESPONSE_FILE".into());
    };
    let addr: SocketAddr = listen.parse()?;
    let body: &'static [u8] = Box::leak(std::fs::read(response)?.into_boxed_slice());
    let loaded = tokenvend_core::tls::load(&PathBuf::from(cert), &PathBuf::from(key))?;
    let rustls = axum_server::tls_rustls::RustlsConfig::from_config(loaded.config);
    let app = Router::new().route(
        "/mutate",
        post(move |_body: axum::body::Bytes| async move {
            ([(header::CONTENT_TYPE, "application/json")], body)
        }),
    );
    axum_server::bind_rustls(addr, rustls)
        .serve(app.into_make_service())
        .await?;
    Ok(())
}
