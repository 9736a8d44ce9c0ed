//! Benchmark baselines: the webhook's stack (rustls config from the same loader, axum,
//! axum-server, TLS 1.2/1.3, h2 + http/1.1, mimalloc) answering `POST /mutate` with a fixed
//! response and no mutation. The load script runs them next to the real webhook in the same run.
//!
//! baseline-server LISTEN CERT KEY RESPONSE_FILE [--parse | --spin-us N]
//!
//! Without a flag the body is read and dropped (the baseline: no parsing at all). With
//! `--parse` it is first decoded into a generic `serde_json::Value`, the least any server that
//! looks at an AdmissionReview must do, so the webhook's own cost can be told from JSON's. With
//! `--spin-us N` the handler burns N µs of CPU (touching no memory) before answering: what any
//! per-request work of that size costs this stack on this machine, whatever the work is.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::post;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .map_err(|_| "crypto provider")?;
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: baseline-server LISTEN CERT KEY RESPONSE_FILE [--parse | --spin-us N]";
    let (listen, cert, key, response, parse, spin) = match args.as_slice() {
        [_, l, c, k, r] => (l, c, k, r, false, Duration::ZERO),
        [_, l, c, k, r, flag] if flag == "--parse" => (l, c, k, r, true, Duration::ZERO),
        [_, l, c, k, r, flag, n] if flag == "--spin-us" => {
            (l, c, k, r, false, Duration::from_micros(n.parse()?))
        }
        _ => return Err(usage.into()),
    };
    let addr: SocketAddr = listen.parse()?;
    let body: &'static [u8] = Box::leak(std::fs::read(response)?.into_boxed_slice());
    let loaded = tokenvend_core::tls::load(&PathBuf::from(cert), &PathBuf::from(key))?;
    let rustls = axum_server::tls_rustls::RustlsConfig::from_config(loaded.config);
    let app = Router::new().route(
        "/mutate",
        post(move |request: axum::body::Bytes| async move {
            let start = Instant::now();
            while start.elapsed() < spin {
                std::hint::spin_loop();
            }
            if parse && serde_json::from_slice::<serde_json::Value>(&request).is_err() {
                return (
                    StatusCode::BAD_REQUEST,
                    [(header::CONTENT_TYPE, "text/plain")],
                    &b""[..],
                );
            }
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
        }),
    );
    axum_server::bind_rustls(addr, rustls)
        .serve(app.into_make_service())
        .await?;
    Ok(())
}
