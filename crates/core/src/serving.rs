//! How the servers hold connections: bounds on clients that connect and stay silent or slow, or
//! vanish, and a graceful stop on SIGTERM or SIGINT.
//!
//! axum-server leaves hyper's header-read timeout off and has no limit on a connection that never
//! sends a request, so without these a client could hold connections (and their file descriptors)
//! open for ever.
//!
//! Kubernetes takes a terminating pod out of its Service's endpoints at the same moment as it
//! signals the pod, and callers learn of it a little later (the API server's endpoint cache when it
//! dials a webhook, kube-proxy's rules for everyone else). A server that stopped accepting at the
//! signal would refuse their connections meanwhile, and the API server does not retry a refused
//! admission call: with `failurePolicy: Fail` the pod being created is denied. So the server first
//! says it is stopping, keeps serving for a delay, and only then stops accepting and lets in-flight
//! requests finish.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use axum_server::{Address, Handle, Server};
use http::header::CONNECTION;
use http::{HeaderMap, HeaderValue, Version};

/// Longest time in-flight requests get once the listener has stopped accepting.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Longest time from an accepted connection (after its TLS handshake, which has its own 10 s
/// limit) to its first request: real clients send at once.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest time a kept-alive HTTP/1 connection waits for its next request head, counted from the
/// previous answer (hyper's header-read timeout, which also runs while the connection is idle).
///
/// It must outlast the callers' idle pools, so that the caller, not the server, closes an idle
/// connection. The API server keeps webhook connections (HTTP/1.1) idle for 90 s, as do Go's
/// default transport and reqwest. A server that closes first races the caller's next request on
/// that connection: the request is written, the server's FIN arrives, and Go does not retry a POST
/// it has written, so the admission fails with EOF and, with `failurePolicy: Fail`, the pod is
/// denied. hyper's own default, 30 s, is that race.
pub const HTTP1_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// How long an HTTP/2 connection may go without a frame from its peer before the server sends
/// a PING.
///
/// hyper has no idle limit for HTTP/2, and a peer whose node vanished without a FIN (a spot node
/// reclaimed, a partition) is never noticed on a connection where nothing is sent: the
/// connection and its file descriptor would stay for ever. Live clients answer PINGs (every
/// HTTP/2 implementation does while it reads its connection), so only dead ones are closed.
pub const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(30);

/// How long the answer to that PING may take before the connection is closed.
pub const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The address the servers listen on by default: every address, IPv4 and IPv6.
pub fn any_address(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)
}

/// A listening socket on `addr`, ready for `axum_server::from_tcp*`.
///
/// `[::]` means every address of both families: the socket accepts IPv4 too (as mapped
/// addresses), whatever `net.ipv6.bindv6only` says, so one default serves IPv4-only, dual-stack
/// and IPv6-only clusters (a socket on `0.0.0.0` is never reached over IPv6, the only family a
/// pod of an IPv6-only cluster has). On a kernel without IPv6 (booted with `ipv6.disable=1`), `[::]`
/// falls back to `0.0.0.0`, with a warning. Any other address is bound as given.
pub fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    listen_with(addr, |domain| {
        Socket::new(domain, Type::STREAM, Some(Protocol::TCP))
    })
}

fn listen_with(
    addr: SocketAddr,
    new_socket: impl Fn(Domain) -> std::io::Result<Socket>,
) -> std::io::Result<std::net::TcpListener> {
    let every_address = addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    let (socket, addr) = match new_socket(Domain::for_address(addr)) {
        Ok(s) => (s, addr),
        Err(e) if every_address => {
            let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port());
            tracing::warn!(error = %e, %addr, fallback = %v4, "no IPv6 socket on this kernel: listening on IPv4 only");
            (new_socket(Domain::IPV4)?, v4)
        }
        Err(e) => return Err(e),
    };
    if addr.is_ipv6() && every_address {
        socket.set_only_v6(false)?;
    }
    // As std and tokio do on Unix: a restarted server can bind while old connections linger.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The most an HTTP/1 connection reads ahead of its handler (hyper's default is about 400 KiB),
/// and so the largest request head it takes.
///
/// Each connection holds this much at most, whoever is waiting: with hyper's default, 128
/// connections sending 3 MiB admission reviews held the webhook's RSS 58 MB higher than with
/// 64 KiB, though its memory budget let one review at a time be read; 1,024 connections each
/// sending a body held tokenvend-sts's RSS at 141 MB with 64 KiB and 88 MB with 32 KiB. Large
/// bodies arrive as fast either way (they come in TLS records of 16 KiB). A head must still hold a
/// bearer token of up to 16 KiB (tokenvend-sts's `MAX_TOKEN_BYTES`), and one somewhat larger
/// must still reach the handler, which says the token is too large rather than hyper's bare
/// 431; the API server's heads are a few hundred bytes.
pub const HTTP1_READ_BUFFER: usize = 32 * 1024;

/// The HTTP/2 flow-control window, per stream and per connection: the most request data an
/// HTTP/2 connection sends ahead of its handlers, as [`HTTP1_READ_BUFFER`] is for HTTP/1
/// (hyper's default is 1 MiB per connection; 64 KiB is the protocol's own initial window, which
/// a peer may use before it has the server's settings).
pub const HTTP2_WINDOW: u32 = 64 * 1024;

/// The most requests one HTTP/2 connection has open at once (hyper's default is 200). Each
/// holds its head, up to [`HTTP2_MAX_HEADER_LIST`], and a task while it waits: with 16, 200
/// connections held the webhook's RSS at 57 MB. The API server calls webhooks over HTTP/1.1,
/// one request per connection, and the sidecars do not multiplex.
pub const HTTP2_MAX_STREAMS: u32 = 4;

/// The largest request head over HTTP/2, decoded: hyper's default, set here because the
/// servers' memory bounds count on it. The largest head a tokenvend server is sent is a
/// sidecar's, with a service-account token of a few KiB.
pub const HTTP2_MAX_HEADER_LIST: u32 = 16 * 1024;

/// `server` with [`FIRST_REQUEST_TIMEOUT`], [`HTTP1_IDLE_TIMEOUT`], [`HTTP1_READ_BUFFER`],
/// HTTP/2 PINGs ([`HTTP2_PING_INTERVAL`], [`HTTP2_PING_TIMEOUT`]) and HTTP/2's bounds
/// ([`HTTP2_WINDOW`], [`HTTP2_MAX_STREAMS`], [`HTTP2_MAX_HEADER_LIST`]).
pub fn bounded<A: Address, Acc>(mut server: Server<A, Acc>) -> Server<A, Acc> {
    let builder = server.http_builder();
    builder
        .http1()
        .header_read_timeout(HTTP1_IDLE_TIMEOUT)
        .max_buf_size(HTTP1_READ_BUFFER);
    builder
        .http2()
        .keep_alive_interval(HTTP2_PING_INTERVAL)
        .keep_alive_timeout(HTTP2_PING_TIMEOUT)
        .initial_connection_window_size(HTTP2_WINDOW)
        .initial_stream_window_size(HTTP2_WINDOW)
        .max_concurrent_streams(HTTP2_MAX_STREAMS)
        .max_header_list_size(HTTP2_MAX_HEADER_LIST);
    server.first_request_timeout(FIRST_REQUEST_TIMEOUT)
}

/// Tell the client to close its kept-alive HTTP/1 connection after this answer (HTTP/2 has no
/// such header, and its streams are not affected).
///
/// For answers given during the shutdown delay. Callers keep reusing the connections they
/// already hold to a terminating pod (the API server pools them by Service name). Told to close,
/// each one dials anew, to a pod that is still serving, instead of having the idle connection
/// closed under it when the delay ends, where a request written at that moment fails with EOF.
pub fn retire_connection(version: Version, headers: &mut HeaderMap) {
    if version <= Version::HTTP_11 {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Connects to `to`, accepts the connection on `listener` and checks the bytes sent arrive.
    fn round_trip(listener: &std::net::TcpListener, to: SocketAddr) {
        let mut client = std::net::TcpStream::connect(to).expect("connect");
        client.write_all(b"ping").expect("write");
        listener.set_nonblocking(false).expect("blocking");
        let (mut server, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"ping");
    }

    #[test]
    fn every_address_means_ipv4_and_ipv6() {
        let l = listen(any_address(0)).expect("listen");
        let port = l.local_addr().expect("addr").port();
        round_trip(&l, SocketAddr::from(([127, 0, 0, 1], port)));
        round_trip(&l, SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port));
    }

    #[test]
    fn without_ipv6_every_address_falls_back_to_ipv4_and_others_fail() {
        let no_ipv6 = |d: Domain| {
            if d == Domain::IPV6 {
                Err(std::io::Error::other(
                    "Address family not supported by protocol",
                ))
            } else {
                Socket::new(d, Type::STREAM, Some(Protocol::TCP))
            }
        };
        let l = listen_with(any_address(0), no_ipv6).expect("falls back");
        let local = l.local_addr().expect("addr");
        assert!(local.is_ipv4() && local.ip().is_unspecified(), "{local}");
        round_trip(&l, SocketAddr::from(([127, 0, 0, 1], local.port())));
        // An IPv6 address asked for by name has no fallback.
        let loopback6 = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 0);
        assert!(listen_with(loopback6, no_ipv6).is_err());
    }

    #[test]
    fn a_given_address_is_bound_as_given() {
        let l = listen(SocketAddr::from(([127, 0, 0, 1], 0))).expect("listen");
        let local = l.local_addr().expect("addr");
        assert_eq!(local.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        round_trip(&l, local);
        let taken = listen(local).expect_err("port in use");
        assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse);
    }
}
