//! Graceful stop of the servers on SIGTERM or SIGINT.
//!
//! Kubernetes takes a terminating pod out of its Service's endpoints at the same moment as it
//! signals the pod, and callers learn of it a little later (the API server's endpoint cache when it
//! dials a webhook, kube-proxy's rules for everyone else). A server that stopped accepting at the
//! signal would refuse their connections meanwhile, and the API server does not retry a refused
//! admission call: with `failurePolicy: Fail` the pod being created is denied. So the server first
//! says it is stopping, keeps serving for a delay, and only then stops accepting and lets in-flight
//! requests finish.

use std::net::SocketAddr;
use std::time::Duration;

use axum_server::Handle;

/// Longest time in-flight requests get once the listener has stopped accepting.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Resolves at the next SIGTERM or SIGINT received after it is first polled.
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// On the first signal: `stopping()` (readiness turns false), serve on for `delay`, then stop
/// accepting and give in-flight requests up to [`DRAIN`]. A second signal cuts the delay short.
pub async fn stop_on_signal(
    handle: Handle<SocketAddr>,
    delay: Duration,
    stopping: impl FnOnce() + Send,
) {
    signal().await;
    stopping();
    tracing::info!(
        delay_seconds = delay.as_secs(),
        "stopping: serving on while callers learn the endpoint is gone"
    );
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = signal() => tracing::info!("second signal: not waiting any longer"),
    }
    tracing::info!("no new connections; finishing in-flight requests");
    handle.graceful_shutdown(Some(DRAIN));
}
