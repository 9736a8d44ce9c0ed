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
//!
//! While one waits, the connection idle longest is closed to make room for it, once it has been
//! idle [`SHED_AFTER_IDLE`] (as nginx reuses its idle keep-alive connections when it runs out).
//! Otherwise connections that were opened and left idle, by a flood or by a client that pools
//! more than it uses, would keep every newcomer out until they time out: 10 s before a first
//! request, 120 s after one. A connection is idle between requests (none being handled, nothing
//! read since the last was answered) and before its first (nothing read since it last wrote, so
//! after its TLS handshake). One with a request in flight (HTTP/1 or HTTP/2) or one still sending
//! a request head or body is never closed this way.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use atomic_waker::AtomicWaker;
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

/// How long a connection must have been idle before it is closed to make room for a waiting
/// one. Long enough that a connection in use (a handshake under way, a caller between two
/// requests of a burst) is left alone, short against [`SLOT_WAIT`].
pub const SHED_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Least time between two warnings that the cap was reached: a flood must not flood the log.
const WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// The connection metrics, registered under a server's prefix.
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    open: Gauge,
    turned_away: Counter,
    closed_idle: Counter,
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
        registry.register(
            "connections_closed_idle",
            "Idle connections closed to make room for a new one at the cap",
            m.closed_idle.clone(),
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
    /// The connections held, for finding the one idle longest.
    held: Arc<Mutex<Held>>,
    /// Zero of the connections' idle clocks.
    epoch: Instant,
}

#[derive(Debug, Default)]
struct Held {
    next_id: u64,
    by_id: HashMap<u64, Arc<Activity>>,
}

/// What happened when a waiting connection looked for an idle one to close.
#[derive(Debug)]
enum Shed {
    /// One was asked to close.
    Asked,
    /// None has been idle long enough; the one idle longest will have been in this long.
    LookAgainIn(Duration),
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
            held: Arc::new(Mutex::new(Held::default())),
            epoch: Instant::now(),
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
                self.wait_for_slot().await?
            }
        };
        self.metrics.open.inc();
        let activity = Arc::new(Activity::new(self.epoch));
        let id = {
            let mut held = lock(&self.held);
            let id = held.next_id;
            held.next_id += 1;
            held.by_id.insert(id, activity.clone());
            id
        };
        Ok(Slot {
            _permit: permit,
            open: self.metrics.open.clone(),
            held: self.held.clone(),
            id,
            activity,
            closed_idle: self.metrics.closed_idle.clone(),
        })
    }

    /// Waits up to [`SLOT_WAIT`] for a slot, closing idle connections to make one.
    async fn wait_for_slot(&self) -> io::Result<OwnedSemaphorePermit> {
        let deadline = Instant::now() + SLOT_WAIT;
        loop {
            let look_again = match self.shed_longest_idle() {
                // Its slot comes back once it has closed; if another waiter takes it, this one
                // looks again a little later.
                Shed::Asked => SHED_AFTER_IDLE,
                Shed::LookAgainIn(after) => after,
            };
            let until = (Instant::now() + look_again).min(deadline);
            match tokio::time::timeout_at(until, self.slots.clone().acquire_owned()).await {
                Ok(Ok(permit)) => return Ok(permit),
                // Not yet: look for an idle connection again, unless the wait is over.
                Err(_) if Instant::now() < deadline => {}
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
    }

    /// Asks the connection idle longest to close, if it has been idle [`SHED_AFTER_IDLE`].
    fn shed_longest_idle(&self) -> Shed {
        let now = self.now_ms();
        let held = lock(&self.held);
        let longest = held
            .by_id
            .values()
            .filter(|a| a.shed.load(Ordering::Acquire) == NOT_ASKED)
            .filter_map(|a| a.idle_since().map(|since| (since, a)))
            .min_by_key(|(since, _)| *since);
        let Some((since, activity)) = longest else {
            return Shed::LookAgainIn(SHED_AFTER_IDLE);
        };
        let idle = Duration::from_millis(now.saturating_sub(since));
        if idle < SHED_AFTER_IDLE {
            return Shed::LookAgainIn(SHED_AFTER_IDLE - idle);
        }
        if activity
            .shed
            .compare_exchange(NOT_ASKED, ASKED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            activity.reader.wake();
        }
        Shed::Asked
    }

    fn now_ms(&self) -> u64 {
        millis_since(self.epoch)
    }

    fn turn_away(&self, why: String) -> io::Error {
        self.metrics.turned_away.inc();
        io::Error::new(io::ErrorKind::TimedOut, why)
    }

    fn warn_once_in_a_while(&self) {
        let now = Instant::now();
        let mut last = lock(&self.last_warning);
        if last.is_none_or(|at| now.duration_since(at) >= WARNING_INTERVAL) {
            *last = Some(now);
            tracing::warn!(
                max_connections = self.max,
                wait_seconds = SLOT_WAIT.as_secs(),
                turned_away_so_far = self.metrics.turned_away.get(),
                closed_idle_so_far = self.metrics.closed_idle.get(),
                "connection limit reached: connections idle for a second are closed to make \
                 room, else new connections wait for one to close (is something opening \
                 connections it does not use?)"
            );
        }
    }
}

/// A lock whose holder cannot leave the data half-changed (every change is one statement), so
/// a panic elsewhere does not make it unusable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
}

/// `Activity::idle_since` while the connection is receiving a request, or has not answered one.
const BUSY: u64 = u64::MAX;
const NOT_ASKED: u8 = 0;
const ASKED: u8 = 1;
const CLOSED: u8 = 2;

/// What the cap knows of one connection: whether it is idle, since when, and whether it has been
/// asked to close.
///
/// A read makes the connection busy. Until its first request the next write makes it idle again
/// (a TLS handshake is reads and writes in turn, and a client that completes one and sends
/// nothing is idle). From then on only a finished request does: its answer may be written after
/// the next request has begun to arrive, and that request must not be cut off.
#[derive(Debug)]
struct Activity {
    /// Milliseconds from `epoch` to when the connection became idle, or [`BUSY`].
    idle_since: AtomicU64,
    /// Requests on the connection being handled now (HTTP/2 has several at once).
    in_flight: AtomicU32,
    /// Whether a request has come on the connection.
    served: AtomicBool,
    shed: AtomicU8,
    /// The task reading the connection, woken to close it.
    reader: AtomicWaker,
    epoch: Instant,
}

impl Activity {
    fn new(epoch: Instant) -> Self {
        Activity {
            idle_since: AtomicU64::new(millis_since(epoch)),
            in_flight: AtomicU32::new(0),
            served: AtomicBool::new(false),
            shed: AtomicU8::new(NOT_ASKED),
            reader: AtomicWaker::new(),
            epoch,
        }
    }

    fn read(&self) {
        self.idle_since.store(BUSY, Ordering::Release);
        // A request came in after all: a waiting connection looks elsewhere.
        let _ = self
            .shed
            .compare_exchange(ASKED, NOT_ASKED, Ordering::AcqRel, Ordering::Acquire);
    }

    fn wrote(&self) {
        let served = self.served.load(Ordering::Acquire);
        if !served || self.idle_since.load(Ordering::Acquire) != BUSY {
            self.idle_since
                .store(millis_since(self.epoch), Ordering::Release);
        }
    }

    fn answered(&self) {
        self.idle_since
            .store(millis_since(self.epoch), Ordering::Release);
    }

    /// When the connection became idle, if it is.
    fn idle_since(&self) -> Option<u64> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        match self.idle_since.load(Ordering::Acquire) {
            BUSY => None,
            since => Some(since),
        }
    }
}

/// A connection's service, counting the requests it is handling so that the connection is not
/// taken for idle meanwhile (a handler may take seconds, during which the connection reads
/// nothing; HTTP/2 writes window updates and PINGs while its requests are handled).
#[derive(Clone, Debug)]
pub struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, R> tower_service::Service<R> for Counted<S>
where
    S: tower_service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.activity.in_flight.fetch_add(1, Ordering::AcqRel);
        self.activity.served.store(true, Ordering::Release);
        CountedFuture {
            inner: self.inner.call(request),
            _handling: Handling(self.activity.clone()),
        }
    }
}

/// One request being handled, for as long as it lives.
#[derive(Debug)]
struct Handling(Arc<Activity>);

impl Drop for Handling {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.answered();
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer, counted as in flight until it is ready (or dropped).
    #[derive(Debug)]
    pub struct CountedFuture<F> {
        #[pin]
        inner: F,
        _handling: Handling,
    }
}

impl<F: Future> Future for CountedFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

/// One connection's place under the cap, given back when the connection is dropped.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
    held: Arc<Mutex<Held>>,
    id: u64,
    activity: Arc<Activity>,
    closed_idle: Counter,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.held).by_id.remove(&self.id);
        self.open.dec();
    }
}

impl<I, S> Accept<I, S> for ConnectionLimit
where
    I: Send + 'static,
    S: Send + 'static,
{
    type Stream = Limited<I>;
    type Service = Counted<S>;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Limited<I>, Counted<S>)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let limit = self.clone();
        Box::pin(async move {
            let slot = limit.slot().await?;
            let service = Counted {
                inner: service,
                activity: slot.activity.clone(),
            };
            Ok((
                Limited {
                    inner: stream,
                    slot,
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
    slot: Slot,
}

impl<I> Limited<I> {
    fn wrote(&self, n: usize) {
        if n > 0 {
            self.slot.activity.wrote();
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Limited<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let activity = &self.slot.activity;
        // Registered on every read, busy or not: a connection also turns idle without a read,
        // when its last request's answer is ready. Before the flag is read, so that a request
        // to close made after the read still wakes this task.
        activity.reader.register(cx.waker());
        if activity.idle_since().is_some() {
            match activity.shed.load(Ordering::Acquire) {
                ASKED => {
                    if activity
                        .shed
                        .compare_exchange(ASKED, CLOSED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        self.slot.closed_idle.inc();
                    }
                    // End of stream: between requests the server closes the connection as if
                    // the client had.
                    return Poll::Ready(Ok(()));
                }
                CLOSED => return Poll::Ready(Ok(())),
                _ => {}
            }
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.slot.activity.read();
        }
        read
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Limited<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            self.wrote(n);
        }
        written
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
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = written {
            self.wrote(n);
        }
        written
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

    /// A held connection's server side, reading until it ends; its `Limited` is dropped (its
    /// slot given back) when the read returns, as a server's connection task is.
    fn serve_until_closed(
        mut conn: Limited<tokio::io::DuplexStream>,
    ) -> tokio::task::JoinHandle<io::Result<usize>> {
        use tokio::io::AsyncReadExt;
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            conn.read(&mut buf).await
        })
    }

    /// `fut`'s output, or a failure naming `what` if it is not ready within twice the slot
    /// wait: a broken cap must fail these tests, not hang them (on the paused clock the time
    /// passes at once when nothing else can happen).
    async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
        match tokio::time::timeout(2 * SLOT_WAIT, fut).await {
            Ok(out) => out,
            Err(_) => panic!("{what}: still waiting after {:?}", 2 * SLOT_WAIT),
        }
    }

    async fn held(
        limit: &ConnectionLimit,
    ) -> (Limited<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (server, client) = tokio::io::duplex(1024);
        let (conn, _service) = limit.accept(server, ()).await.expect("a slot");
        (conn, client)
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_connection_closes_the_one_idle_longest_once_it_has_been_idle_a_second() {
        let (limit, metrics) = limit(2);
        let started = Instant::now();
        let (first, _first_client) = held(&limit).await;
        let first = serve_until_closed(first);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (second, _second_client) = held(&limit).await;
        let second = serve_until_closed(second);
        tokio::time::sleep(Duration::from_millis(200)).await;

        // The first has been idle 500 ms: the third waits until it has been idle a second.
        let (third, _third_client) = tokio::io::duplex(1024);
        let third = within("the third connection", limit.accept(third, ()))
            .await
            .expect("a slot made free");
        assert_eq!(started.elapsed(), SHED_AFTER_IDLE);
        assert_eq!(
            within("the first connection's close", first)
                .await
                .expect("task")
                .expect("closed, not failed"),
            0,
            "the first was closed as if its client had"
        );
        assert!(!second.is_finished(), "the second was closed too");
        assert_eq!(metrics.closed_idle.get(), 1);
        assert_eq!(metrics.turned_away.get(), 0);
        assert_eq!(metrics.open.get(), 2);
        drop(third);
    }

    #[tokio::test(start_paused = true)]
    async fn before_its_first_request_a_connection_that_has_read_since_it_last_wrote_is_not_closed()
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (limit, metrics) = limit(1);
        let (mut conn, mut client) = held(&limit).await;
        // A request read and not yet answered.
        client.write_all(b"request").await.expect("send");
        let mut buf = [0u8; 7];
        conn.read_exact(&mut buf).await.expect("read");
        let reading = tokio::spawn(async move {
            let mut more = [0u8; 8];
            let n = conn.read(&mut more).await;
            (conn, n)
        });
        refused_after_the_wait(&limit).await;
        assert!(!reading.is_finished(), "the busy connection was closed");
        assert_eq!(metrics.closed_idle.get(), 0);

        // Answered, it is idle: the next one waiting closes it a second later.
        client.write_all(b"x").await.expect("send");
        let (mut conn, n) = within("the read of the next byte", reading)
            .await
            .expect("task");
        assert_eq!(n.expect("read"), 1);
        conn.write_all(b"answer").await.expect("answer");
        let answered = Instant::now();
        let waiting = one_more(&limit);
        let mut rest = [0u8; 8];
        let closed = within("the idle connection's close", conn.read(&mut rest)).await;
        assert_eq!(closed.expect("closed, not failed"), 0);
        assert_eq!(answered.elapsed(), SHED_AFTER_IDLE);
        // Closed for good: what the client sends after the close is not read.
        client.write_all(b"late").await.expect("send");
        let again = conn.read(&mut rest).await.expect("closed, not failed");
        assert_eq!(again, 0, "a closed connection read on");
        drop(conn);
        got_in(waiting).await;
        assert_eq!(metrics.closed_idle.get(), 1);
        assert_eq!(metrics.turned_away.get(), 1);
    }

    /// One more connection, arriving in a task of its own.
    fn one_more(limit: &ConnectionLimit) -> tokio::task::JoinHandle<io::Result<()>> {
        let limit = limit.clone();
        tokio::spawn(async move {
            limit.accept(tokio::io::duplex(8).0, ()).await?;
            Ok(())
        })
    }

    /// Checks that the connection arriving in `waiting` got a slot.
    async fn got_in(waiting: tokio::task::JoinHandle<io::Result<()>>) {
        within("the waiting connection", waiting)
            .await
            .expect("task")
            .expect("a slot made free");
    }

    /// Checks that one more connection, under a cap of one, is turned away after the full wait.
    async fn refused_after_the_wait(limit: &ConnectionLimit) {
        let started = Instant::now();
        let refused = within(
            "the connection past the cap",
            limit.accept(tokio::io::duplex(8).0, ()),
        )
        .await
        .expect_err("no slot while the connection held is in use");
        assert_eq!(started.elapsed(), SLOT_WAIT);
        assert_eq!(
            refused.to_string(),
            "no connection slot within 10 s (1 held)"
        );
    }

    /// A request whose answer waits for `0`.
    #[derive(Clone)]
    struct Slow(Arc<tokio::sync::Notify>);

    impl tower_service::Service<()> for Slow {
        type Response = ();
        type Error = std::convert::Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<(), Self::Error>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, (): ()) -> Self::Future {
            let answered = self.0.clone();
            Box::pin(async move {
                answered.notified().await;
                Ok(())
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_not_closed_while_a_request_on_it_is_handled_or_arriving() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tower_service::Service;
        let (limit, metrics) = limit(1);
        let answer_now = Arc::new(tokio::sync::Notify::new());
        let (server, mut client) = tokio::io::duplex(1024);
        let (conn, mut service) = limit
            .accept(server, Slow(answer_now.clone()))
            .await
            .expect("a slot");
        let (mut reader, mut writer) = tokio::io::split(conn);
        let reading = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let mut total = 0;
            loop {
                match reader.read(&mut buf).await? {
                    0 => return io::Result::Ok(total),
                    n => total += n,
                }
            }
        });

        // A request being handled, while the connection writes (as HTTP/2 writes window
        // updates and PINGs).
        let answer = service.call(());
        writer.write_all(b"window update").await.expect("write");
        refused_after_the_wait(&limit).await;
        assert!(!reading.is_finished(), "closed while a request was handled");

        // Answered; the next request begins to arrive before the answer's tail is written.
        answer_now.notify_one();
        answer.await.expect("answered");
        client.write_all(b"next").await.expect("send");
        tokio::time::sleep(Duration::from_millis(1)).await;
        writer.write_all(b"tail").await.expect("write");
        refused_after_the_wait(&limit).await;
        assert!(
            !reading.is_finished(),
            "closed while a request was arriving"
        );

        // That one answered too, the connection is idle: the next one waiting closes it.
        answer_now.notify_one();
        service.call(()).await.expect("answered");
        let waiting = one_more(&limit);
        let read = within("the idle connection's close", reading)
            .await
            .expect("task")
            .expect("closed, not failed");
        assert_eq!(read, 4, "the second request's bytes, then the end");
        drop(writer);
        got_in(waiting).await;
        assert_eq!(metrics.closed_idle.get(), 1);
        assert_eq!(metrics.turned_away.get(), 2);
    }

    #[test]
    fn the_metrics_are_registered_under_the_servers_prefix() {
        let mut registry = Registry::with_prefix("server");
        let metrics = ConnectionMetrics::register(&mut registry);
        metrics.open.inc();
        metrics.turned_away.inc();
        metrics.closed_idle.inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for line in [
            "server_connections_open 1",
            "server_connections_turned_away_total 1",
            "server_connections_closed_idle_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in {text}");
        }
    }

    /// A service that is never ready.
    struct NeverReady;

    impl tower_service::Service<()> for NeverReady {
        type Response = ();
        type Error = ();
        type Future = std::future::Ready<Result<(), ()>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
            Poll::Pending
        }

        fn call(&mut self, (): ()) -> Self::Future {
            std::future::ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_held_connection_passes_its_service_readiness_and_every_write_through() {
        use std::io::IoSlice;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tower_service::Service;
        let (limit, _metrics) = limit(1);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let (mut conn, mut service) = limit.accept(server, NeverReady).await.expect("a slot");

        let waker = std::task::Waker::noop();
        assert!(
            service
                .poll_ready(&mut Context::from_waker(waker))
                .is_pending(),
            "ready though its service is not"
        );
        // hyper writes a head and body with one `writev` where the stream says it can.
        assert!(conn.is_write_vectored(), "a TCP stream writes vectored");
        let whole = b"head body";
        let slices = [IoSlice::new(&whole[..5]), IoSlice::new(&whole[5..])];
        let sent = conn.write_vectored(&slices).await.expect("write");
        assert!(sent > 0, "nothing written");
        conn.write_all(&whole[sent..]).await.expect("write");
        conn.flush().await.expect("flush");
        conn.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut got))
            .await
            .expect("the end of the stream, from the shutdown")
            .expect("read");
        assert_eq!(got, whole, "then the end, with the connection still held");
        drop(conn);
    }
}
