//! A cap on the connections a server holds at once.
//!
//! Every connection costs the server memory whether or not it sends anything: about 13 KiB for
//! an idle TLS connection, and up to its read buffer more while a request on it waits for the
//! webhook's memory budget. Nothing else bounds how many connections a client opens, so some
//! thousands of them (a few seconds' work for one script) would take the webhook past its
//! 128 MiB limit, and the OOM kill would fail every admission in flight on it.
//!
//! Past the cap a new connection is accepted but waits, before its TLS handshake, for another
//! to close; it is closed if none does within [`SLOT_WAIT`]. A waiting connection still costs
//! about 8 KiB (its task), so as many may wait as may be held, and any more are closed at once.
//! The connections already held keep working, so the API server's pooled connections still
//! serve.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Longest a connection past the cap waits for a slot. Longer than any caller waits for an
/// answer (the webhook's `timeoutSeconds` is at most 30 s, 5 s as shipped): it only has to
/// outlast a burst.
pub const SLOT_WAIT: Duration = Duration::from_secs(10);

/// Least time between two warnings that the cap was reached: a flood must not flood the log.
const WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// The connection metrics, registered under a server's prefix.
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    open: Gauge,
    turned_away: Counter,
}

impl ConnectionMetrics {
    /// Register the metrics under `registry`'s prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let m = ConnectionMetrics::default();
        registry.register(
            "connections_open",
            "Connections held now (each counts from its accept, before its TLS handshake)",
            m.open.clone(),
        );
        registry.register(
            "connections_turned_away",
            "Connections closed unserved: no slot came free within the wait, or as many as the \
             cap were waiting already",
            m.turned_away.clone(),
        );
        m
    }
}

/// An acceptor that holds a server to `max` connections at once; for `Server::acceptor`, or
/// as the inner acceptor of `RustlsAcceptor::acceptor` so that the cap applies before the TLS
/// handshake.
#[derive(Clone, Debug)]
pub struct ConnectionLimit {
    slots: Arc<Semaphore>,
    /// Places to wait for a slot in, as many as there are slots.
    queue: Arc<Semaphore>,
    max: u32,
    metrics: ConnectionMetrics,
    last_warning: Arc<Mutex<Option<Instant>>>,
}

impl ConnectionLimit {
    /// At most `max` connections; up to `max` more wait up to [`SLOT_WAIT`] each for a slot.
    pub fn new(max: u32, metrics: ConnectionMetrics) -> Self {
        ConnectionLimit {
            slots: Arc::new(Semaphore::new(max as usize)),
            queue: Arc::new(Semaphore::new(max as usize)),
            max,
            metrics,
            last_warning: Arc::new(Mutex::new(None)),
        }
    }

    /// A slot for one connection, waited for if the cap is reached.
    async fn slot(&self) -> io::Result<Slot> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.warn_once_in_a_while();
                let Ok(_place) = self.queue.try_acquire() else {
                    return Err(self.turn_away(format!(
                        "no connection slot: {} held and as many waiting",
                        self.max
                    )));
                };
                match tokio::time::timeout(SLOT_WAIT, self.slots.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    // The semaphore is never closed; a timeout is the only way here.
                    Ok(Err(_)) | Err(_) => {
                        return Err(self.turn_away(format!(
                            "no connection slot within {} s ({} held)",
                            SLOT_WAIT.as_secs(),
                            self.max
                        )));
                    }
                }
            }
        };
        self.metrics.open.inc();
        Ok(Slot {
            _permit: permit,
            open: self.metrics.open.clone(),
        })
    }

    fn turn_away(&self, why: String) -> io::Error {
        self.metrics.turned_away.inc();
        io::Error::new(io::ErrorKind::TimedOut, why)
    }

    fn warn_once_in_a_while(&self) {
        let now = Instant::now();
        let mut last = match self.last_warning.lock() {
            Ok(last) => last,
            Err(poisoned) => poisoned.into_inner(),
        };
        if last.is_none_or(|at| now.duration_since(at) >= WARNING_INTERVAL) {
            *last = Some(now);
            tracing::warn!(
                max_connections = self.max,
                wait_seconds = SLOT_WAIT.as_secs(),
                turned_away_so_far = self.metrics.turned_away.get(),
                "connection limit reached: new connections wait for one to close (is something \
                 opening connections it does not use?)"
            );
        }
    }
}

/// One connection's place under the cap, given back when the connection is dropped.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl<I, S> Accept<I, S> for ConnectionLimit
where
    I: Send + 'static,
    S: Send + 'static,
{
    type Stream = Limited<I>;
    type Service = S;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Limited<I>, S)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let limit = self.clone();
        Box::pin(async move {
            let slot = limit.slot().await?;
            Ok((
                Limited {
                    inner: stream,
                    _slot: slot,
                },
                service,
            ))
        })
    }
}

/// A connection holding its slot under a [`ConnectionLimit`] for as long as it lives.
#[derive(Debug)]
pub struct Limited<I> {
    inner: I,
    _slot: Slot,
}

impl<I: AsyncRead + Unpin> AsyncRead for Limited<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Limited<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(max: u32) -> (ConnectionLimit, ConnectionMetrics) {
        let metrics = ConnectionMetrics::register(&mut Registry::default());
        (ConnectionLimit::new(max, metrics.clone()), metrics)
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_cap_a_connection_waits_for_a_slot_and_is_turned_away_after_the_wait() {
        let (limit, metrics) = limit(2);
        let first = limit.accept("a", ()).await.expect("first");
        let _second = limit.accept("b", ()).await.expect("second");
        assert_eq!(metrics.open.get(), 2);

        // A third waits; the first closing lets it in.
        let third = tokio::spawn({
            let limit = limit.clone();
            async move { limit.accept("c", ()).await }
        });
        tokio::time::sleep(SLOT_WAIT / 2).await;
        assert!(!third.is_finished(), "the third waits while two are held");
        drop(first);
        let third = third.await.expect("task").expect("a slot came free");
        assert_eq!(third.0.inner, "c");
        assert_eq!(metrics.open.get(), 2);

        // A fourth finds no slot within the wait and is refused with the reason.
        let started = Instant::now();
        let refused = limit.accept("d", ()).await.expect_err("no slot");
        assert_eq!(started.elapsed(), SLOT_WAIT);
        assert_eq!(refused.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            refused.to_string(),
            "no connection slot within 10 s (2 held)"
        );
        assert_eq!(metrics.turned_away.get(), 1);
        assert_eq!(metrics.open.get(), 2);

        drop(third);
        assert_eq!(
            metrics.open.get(),
            1,
            "a dropped connection gives its slot back"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn as_many_wait_as_are_held_and_any_more_are_turned_away_at_once() {
        let (limit, metrics) = limit(2);
        let held = [
            limit.accept(0, ()).await.expect("first"),
            limit.accept(1, ()).await.expect("second"),
        ];
        let waiting: Vec<_> = (2..4)
            .map(|i| {
                let limit = limit.clone();
                tokio::spawn(async move { limit.accept(i, ()).await })
            })
            .collect();
        tokio::task::yield_now().await;
        let started = Instant::now();
        let refused = limit.accept(4, ()).await.expect_err("queue full");
        assert_eq!(started.elapsed(), Duration::ZERO, "refused without waiting");
        assert_eq!(
            refused.to_string(),
            "no connection slot: 2 held and as many waiting"
        );
        assert_eq!(metrics.turned_away.get(), 1);
        // Both waiting get in as the held ones close, in turn.
        drop(held);
        for w in waiting {
            w.await.expect("task").expect("a slot came free");
        }
        assert_eq!(metrics.open.get(), 0);
        assert_eq!(metrics.turned_away.get(), 1);
    }
}
