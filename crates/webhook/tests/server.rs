//! The real `tokenvend-webhook` binary over TLS: admissions, bad requests, readiness (before a
//! certificate exists, with the port taken, while draining at SIGTERM), certificate rotation
//! mid-load with zero failed requests, SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokenvend_testkit::tls::{Pair, ca, install, leaf, leaf_between};
use tokenvend_testkit::{admission_review, free_port, has_metric, now};

struct Webhook {
    child: Child,
    addr: SocketAddr,
    probe: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, extra: &[&str]) -> Webhook {
    start_on("127.0.0.1", dir, extra)
}

/// The webhook listening on `host` (both listeners); `addr` and `probe` are their IPv4 loopback.
fn start_on(host: &str, dir: &Path, extra: &[&str]) -> Webhook {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let probe: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokenvend-webhook"))
        .args([
            "--listen",
            &format!("{host}:{}", addr.port()),
            "--probe-listen",
            &format!("{host}:{}", probe.port()),
        ])
        .arg("--tls-cert")
        .arg(dir.join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.join("tls.key"))
        .args(["--cert-reload-seconds", "1"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tokenvend-webhook");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let out = child.stdout.take().expect("stdout");
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            sink.lock().expect("logs").push(line);
        }
    });
    Webhook {
        child,
        addr,
        probe,
        logs,
    }
}

fn client(cas: &[&str], fresh_connections: bool) -> reqwest::Client {
    let certs = cas
        .iter()
        .map(|pem| reqwest::Certificate::from_pem(pem.as_bytes()).expect("ca pem"));
    let mut b = reqwest::Client::builder()
        .tls_backend_rustls()
        .tls_certs_only(certs)
        .timeout(Duration::from_secs(5));
    if fresh_connections {
        b = b.pool_max_idle_per_host(0);
    }
    b.build().expect("client")
}

fn review_body(uid: &str) -> String {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orders-1", "namespace": "shop",
                     "labels": {"tremolo.io/aws-role": "true"},
                     "annotations": {"tremolo.io/aws-role": "arn:aws:iam::123456789012:role/orders",
                                     "tremolo.io/aws-mode": "credentials"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}
    });
    admission_review(uid, "shop", pod).to_string()
}

async fn post_review(c: &reqwest::Client, addr: SocketAddr, uid: &str) -> Result<Value, String> {
    let resp = c
        .post(format!("https://localhost:{}/mutate", addr.port()))
        .header("content-type", "application/json")
        .body(review_body(uid))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let v: Value = resp.json().await.map_err(|e| e.to_string())?;
    if v["response"]["uid"] != json!(uid) || v["response"]["patch"].as_str().is_none() {
        return Err(format!("unexpected response {v}"));
    }
    Ok(v)
}

async fn wait_ready(probe: SocketAddr) {
    let plain = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = plain.get(format!("http://{probe}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "webhook never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sigterm(wh: &Webhook) {
    assert!(
        Command::new("kill")
            .args(["-TERM", &wh.child.id().to_string()])
            .status()
            .expect("kill")
            .success()
    );
}

/// The process exits 0 within 5 s of `since`.
async fn wait_clean_exit(wh: &mut Webhook, since: Instant, after: &str) {
    loop {
        if let Some(status) = wh.child.try_wait().expect("wait") {
            assert!(status.success(), "exit status {status}");
            return;
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "did not exit after {after}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A ready webhook started with `extra` flags, serving a fresh CA's certificate from a temporary
/// directory (kept alive by the caller).
async fn ready(extra: &[&str]) -> (tempfile::TempDir, Pair, Webhook) {
    provider();
    let dir = tempfile::tempdir().expect("tmp");
    let (ca1, _k, issuer) = ca("ca");
    let pair = leaf(&ca1, &issuer);
    install(dir.path(), &pair);
    let wh = start(dir.path(), extra);
    wait_ready(wh.probe).await;
    (dir, pair, wh)
}

/// A raw TLS connection to the webhook (HTTP/1.1: no ALPN), trusting `ca_pem`.
async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    tls_connect_offering(addr, ca_pem, Vec::new()).await
}

/// A TLS connection to `localhost` at `addr`, offering the ALPN protocols `alpn`.
async fn tls_connect_offering(
    addr: SocketAddr,
    ca_pem: &str,
    alpn: Vec<Vec<u8>>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    tls_handshake(addr, ca_pem, alpn).await.expect("tls")
}

/// A TLS connection to `localhost` at `addr`, or why the handshake failed.
async fn tls_handshake(
    addr: SocketAddr,
    ca_pem: &str,
    alpn: Vec<Vec<u8>>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    let der =
        <rustls_pki_types::CertificateDer as rustls_pki_types::pem::PemObject>::from_pem_slice(
            ca_pem.as_bytes(),
        )
        .expect("ca der");
    roots.add(der).expect("root");
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = alpn;
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
}

/// Seconds until the server closes `conn` (end of stream or an error), at most `limit`.
async fn seconds_until_closed(
    mut conn: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    limit: Duration,
) -> f64 {
    let t0 = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(t0.elapsed()),
            tokio::io::AsyncReadExt::read(&mut conn, &mut buf),
        )
        .await
        {
            Ok(Ok(0) | Err(_)) => return t0.elapsed().as_secs_f64(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("connection still open after {limit:?}"),
        }
    }
}

/// One admission over a raw kept-alive connection: writes the request, reads its answer (a
/// 200), which it returns, head and body.
async fn admit_raw(
    conn: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    uid: &str,
) -> String {
    let body = review_body(uid);
    let request = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = send_and_read(conn, request.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{uid}: not a 200: {answer}"
    );
    assert!(
        answer.contains(&format!("\"uid\":\"{uid}\"")),
        "{uid}: another answer: {answer}"
    );
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_every_address_admissions_and_probes_arrive_over_ipv4_and_ipv6() {
    // What the manifests give it: `[::]`, one socket for both families (an IPv6-only cluster's
    // API server and kubelet reach the pod over IPv6 only).
    provider();
    let dir = tempfile::tempdir().expect("tmp");
    let (ca1, _k, issuer) = ca("ca");
    let pair = leaf(&ca1, &issuer);
    install(dir.path(), &pair);
    let wh = start_on("[::]", dir.path(), &[]);
    wait_ready(wh.probe).await;
    let v6 = |a: SocketAddr| SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), a.port());
    for (family, addr, probe) in [
        ("IPv4", wh.addr, wh.probe),
        ("IPv6", v6(wh.addr), v6(wh.probe)),
    ] {
        let mut conn = tls_connect(addr, &pair.ca_pem).await;
        let answer = admit_raw(&mut conn, family).await;
        assert!(answer.contains("\"allowed\":true"), "{family}: {answer}");
        let r = reqwest::get(format!("http://{probe}/readyz"))
            .await
            .unwrap_or_else(|e| panic!("{family} probe: {e}"));
        assert_eq!(r.status(), 200, "{family} probe");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_connections_close_idle_ones_outlast_the_api_servers_pool() {
    use tokio::io::AsyncWriteExt;
    let (_dir, pair, wh) = ready(&[]).await;

    // Connected over TLS, never a byte: closed at the 10 s first-request limit.
    let silent = tls_connect(wh.addr, &pair.ca_pem).await;
    // Half a request head, then nothing: the same.
    let mut slow = tls_connect(wh.addr, &pair.ca_pem).await;
    slow.write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("half a head");
    slow.flush().await.expect("flush");
    // The API server keeps an idle webhook connection for 90 s and then reuses it. The webhook
    // must still be listening then: had it closed the connection first, an admission written as
    // its close arrives would fail with EOF, and the API server does not retry it.
    let mut reused = tls_connect(wh.addr, &pair.ca_pem).await;
    let _ = admit_raw(&mut reused, "first").await;
    // Idle after an answer: closed at the 120 s limit, so no connection is held for ever.
    let mut idle = tls_connect(wh.addr, &pair.ca_pem).await;
    let _ = admit_raw(&mut idle, "idle").await;
    let reuse_after_pool_timeout = async {
        tokio::time::sleep(Duration::from_secs(95)).await;
        let _ = admit_raw(&mut reused, "after-95s").await;
    };

    let (silent, slow, idle, ()) = tokio::join!(
        seconds_until_closed(silent, Duration::from_secs(20)),
        seconds_until_closed(slow, Duration::from_secs(20)),
        seconds_until_closed(idle, Duration::from_secs(140)),
        reuse_after_pool_timeout,
    );
    assert!(
        (9.0..15.0).contains(&silent),
        "silent connection closed after {silent} s"
    );
    assert!(
        (9.0..15.0).contains(&slow),
        "slow head closed after {slow} s"
    );
    assert!(
        (118.0..128.0).contains(&idle),
        "idle connection closed after {idle} s"
    );
}

/// A TLS connection to the webhook that negotiated HTTP/2.
async fn h2_connect(
    addr: SocketAddr,
    ca_pem: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let conn = tls_connect_offering(addr, ca_pem, vec![b"h2".to_vec()]).await;
    assert_eq!(conn.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    conn
}

/// One HTTP/2 frame header plus payload, as written on the wire.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .expect("small frame")
        .to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Plays an HTTP/2 client by hand up to its first answer: preface, SETTINGS, the ACK of the
/// server's SETTINGS, `GET /healthz` on stream 1, and frames read until that stream ends. It
/// then never writes again, like a peer whose node vanished: the server's PINGs go unanswered.
async fn h2_request_then_fall_silent(
    conn: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const DATA: u8 = 0;
    const HEADERS: u8 = 1;
    const SETTINGS: u8 = 4;
    const END_STREAM: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    const ACK: u8 = 0x1;
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(SETTINGS, 0, 0, &[]));
    // HPACK: :method GET, :scheme https (static entries 2 and 7), :path and :authority as
    // literals without indexing of static names 4 and 1.
    let mut block = vec![0x82, 0x87, 0x04, 8];
    block.extend_from_slice(b"/healthz");
    block.extend_from_slice(&[0x01, 9]);
    block.extend_from_slice(b"localhost");
    out.extend(h2_frame(HEADERS, END_STREAM | END_HEADERS, 1, &block));
    conn.write_all(&out).await.expect("preface and request");
    conn.flush().await.expect("flush");

    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut acked = false;
    loop {
        while buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            buf.drain(..9 + len);
            if kind == SETTINGS && flags & ACK == 0 && !acked {
                conn.write_all(&h2_frame(SETTINGS, ACK, 0, &[]))
                    .await
                    .expect("settings ack");
                conn.flush().await.expect("flush");
                acked = true;
            }
            if stream == 1 && (kind == HEADERS || kind == DATA) && flags & END_STREAM != 0 {
                assert!(acked, "answered before the server's SETTINGS");
                return;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk))
            .await
            .expect("frames in time")
            .expect("read");
        assert!(n > 0, "connection closed before answering");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_peers_that_stop_answering_pings_are_closed_live_ones_are_kept() {
    let (_dir, pair, wh) = ready(&[]).await;

    // A sidecar's or the API server's node can vanish without a FIN. HTTP/2 has no idle limit
    // in hyper, so without PINGs such a connection, and its file descriptor, would stay for
    // ever: nothing is ever sent on it that could fail.
    let mut dead = h2_connect(wh.addr, &pair.ca_pem).await;
    h2_request_then_fall_silent(&mut dead).await;

    // A live client (the h2 crate answers PINGs while its connection is polled) keeps its
    // connection past the same time, and it still serves requests.
    let live = h2_connect(wh.addr, &pair.ca_pem).await;
    let (client, connection) = h2::client::handshake(live).await.expect("h2 handshake");
    let driver = tokio::spawn(connection);
    let get = |mut client: h2::client::SendRequest<_>| async move {
        client = client.ready().await.expect("connection open");
        let req = http::Request::get("https://localhost/healthz")
            .body(())
            .expect("request");
        let (answer, _) = client.send_request(req, true).expect("send");
        answer.await.expect("answer").status()
    };
    assert_eq!(get(client.clone()).await, 200);

    let (closed_after, ()) = tokio::join!(
        seconds_until_closed(dead, Duration::from_secs(90)),
        tokio::time::sleep(Duration::from_secs(70)),
    );
    eprintln!("silent HTTP/2 peer closed after {closed_after:.1} s");
    let ping =
        tokenvend_core::serving::HTTP2_PING_INTERVAL + tokenvend_core::serving::HTTP2_PING_TIMEOUT;
    assert!(
        (ping.as_secs_f64() - 5.0..ping.as_secs_f64() + 10.0).contains(&closed_after),
        "silent HTTP/2 peer closed after {closed_after} s, expected about {ping:?}"
    );
    assert!(!driver.is_finished(), "live HTTP/2 connection ended");
    // A clone goes into the request: h2 ends a client connection once its last handle is
    // dropped, so the original must outlive the check after it.
    assert_eq!(
        get(client.clone()).await,
        200,
        "live HTTP/2 connection was kept"
    );
    assert!(!driver.is_finished(), "live HTTP/2 connection ended");
    drop(client);
}

fn provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_rotation_mid_load_fails_no_request() {
    provider();
    let dir = tempfile::tempdir().expect("tmp");
    let (ca1, _k1, issuer1) = ca("ca-one");
    let (ca2, _k2, issuer2) = ca("ca-two");
    let first = leaf(&ca1, &issuer1);
    let second = leaf(&ca2, &issuer2);
    let third = leaf(&ca1, &issuer1);
    install(dir.path(), &first);
    let wh = start(dir.path(), &["--shutdown-delay-seconds", "0"]);
    wait_ready(wh.probe).await;

    let both = [first.ca_pem.as_str(), second.ca_pem.as_str()];
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for worker in 0..4 {
        // Half reuse keep-alive connections, half handshake on every request.
        let c = client(&both, worker % 2 == 1);
        let (stop, ok, failures, addr) = (stop.clone(), ok.clone(), failures.clone(), wh.addr);
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match post_review(&c, addr, &format!("w{worker}-{n}")).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        failures.lock().expect("f").push(e);
                        0
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let only_ca2 = client(&[&second.ca_pem], true);
    assert!(
        post_review(&only_ca2, wh.addr, "pre").await.is_err(),
        "CA2 not served yet"
    );

    // Rotation 1, written non-atomically: a window where cert and key do not match, long
    // enough for two 1 s checks (a mismatch counts only when the next check still finds it).
    std::fs::write(dir.path().join("tls.crt"), &second.cert_pem).expect("write");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    std::fs::write(dir.path().join("tls.key"), &second.key_pem).expect("write");
    let deadline = Instant::now() + Duration::from_secs(15);
    while post_review(&only_ca2, wh.addr, "probe2").await.is_err() {
        assert!(Instant::now() < deadline, "new certificate never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Rotation 2, atomic rename, back to CA1.
    install(dir.path(), &third);
    let only_ca1 = client(&[&third.ca_pem], true);
    let deadline = Instant::now() + Duration::from_secs(15);
    while post_review(&only_ca2, wh.addr, "probe3").await.is_ok() {
        assert!(Instant::now() < deadline, "third certificate never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    post_review(&only_ca1, wh.addr, "after")
        .await
        .expect("third cert serves");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("worker");
    }
    let failures = failures.lock().expect("f").clone();
    let ok = ok.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} failed of {}: {:?}",
        failures.len(),
        ok,
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 50, "only {ok} requests made it");

    // TLS 1.2 and 1.3 both work.
    for (min, max) in [
        (
            reqwest::tls::Version::TLS_1_2,
            reqwest::tls::Version::TLS_1_2,
        ),
        (
            reqwest::tls::Version::TLS_1_3,
            reqwest::tls::Version::TLS_1_3,
        ),
    ] {
        let c = reqwest::Client::builder()
            .tls_backend_rustls()
            .tls_certs_only([reqwest::Certificate::from_pem(third.ca_pem.as_bytes()).expect("pem")])
            .tls_version_min(min)
            .tls_version_max(max)
            .build()
            .expect("client");
        post_review(&c, wh.addr, "tls-version")
            .await
            .expect("version works");
    }

    let metrics = metrics_text(wh.probe).await;
    assert!(
        metrics.contains(
            "tokenvend_webhook_admissions_total{outcome=\"patched\",mode=\"credentials\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("le=\"0.00001\""),
        "buckets resolve tens of microseconds: {metrics}"
    );
    assert!(
        has_metric(
            &metrics,
            "tokenvend_webhook_cert_reloads_total{result=\"error\"} 1"
        ),
        "mismatched pair rejected once: {metrics}"
    );

    // One JSON log line per admission, with uid, pod, mode, decision, warnings and latency.
    let lines = wait_for_lines(&wh, "\"uid\":\"after\"", 1).await;
    assert_eq!(lines.len(), 1, "one line per admission: {lines:?}");
    let v: Value = serde_json::from_str(&lines[0]).expect("json log");
    assert_eq!(v["decision"], json!("patched"));
    assert_eq!(v["pod"], json!("orders-1"));
    assert_eq!(v["namespace"], json!("shop"));
    assert_eq!(v["mode"], json!("credentials"));
    assert!(v["latency_us"].is_u64());
    assert_eq!(
        v["warnings"],
        json!(0),
        "this pod names its mode: nothing to warn about"
    );

    // SIGTERM: prompt, clean exit (this one runs with no shutdown delay).
    let mut wh = wh;
    let t0 = Instant::now();
    sigterm(&wh);
    wait_clean_exit(&mut wh, t0, "SIGTERM").await;
}

async fn metrics_text(probe: SocketAddr) -> String {
    reqwest::get(format!("http://{probe}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

#[tokio::test]
async fn vanished_certificate_files_are_one_counted_failure_and_serving_goes_on() {
    provider();
    let dir = tempfile::tempdir().expect("tmp");
    let (ca1, _k, issuer) = ca("ca");
    let first = leaf(&ca1, &issuer);
    let second = leaf(&ca1, &issuer);
    install(dir.path(), &first);
    let wh = start(dir.path(), &[]);
    wait_ready(wh.probe).await;
    let c = client(&[&first.ca_pem], true);

    // The Secret's key disappears for several reload intervals (1 s each).
    std::fs::remove_file(dir.path().join("tls.key")).expect("remove key");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    post_review(&c, wh.addr, "during")
        .await
        .expect("the loaded certificate keeps serving");
    let metrics = metrics_text(wh.probe).await;
    assert!(
        has_metric(
            &metrics,
            "tokenvend_webhook_cert_reloads_total{result=\"error\"} 1"
        ),
        "the loss is counted once, not once per tick: {metrics}"
    );
    let unreadable = "serving certificate files unreadable";
    assert_eq!(wait_for_lines(&wh, unreadable, 1).await.len(), 1);

    // A new pair arrives: it is loaded, and the failure count stays where it was.
    install(dir.path(), &second);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = metrics_text(wh.probe).await;
        if has_metric(
            &metrics,
            "tokenvend_webhook_cert_reloads_total{result=\"ok\"} 2",
        ) {
            assert!(
                has_metric(
                    &metrics,
                    "tokenvend_webhook_cert_reloads_total{result=\"error\"} 1"
                ),
                "{metrics}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new pair never loaded: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_lines(&wh, "serving certificate files readable again", 1).await;
    assert_eq!(wait_for_lines(&wh, unreadable, 1).await.len(), 1);
    post_review(&c, wh.addr, "after")
        .await
        .expect("serves after the new pair");
}

/// Waits until `count` lines of the log contain `text`; all of them.
async fn wait_for_lines(wh: &Webhook, text: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found: Vec<String> = wh
            .logs
            .lock()
            .expect("logs")
            .iter()
            .filter(|l| l.contains(text))
            .cloned()
            .collect();
        if found.len() >= count {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no {count} lines with {text:?}: {:?}",
            wh.logs.lock().expect("logs")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_serving_certificate_that_expires_or_is_not_valid_yet_is_one_warning() {
    provider();
    let dir = tempfile::tempdir().expect("tmp");
    let (ca1, _k, issuer) = ca("ca");
    const REFUSED: &str = "TLS clients refuse it";
    // Valid for a few seconds more: served, then expired while in use, with no new files.
    let expires = now() + 6;
    install(
        dir.path(),
        &leaf_between(&ca1, &issuer, now() - 3600, expires),
    );
    let wh = start(dir.path(), &[]);
    wait_ready(wh.probe).await;
    let early = wh.logs.lock().expect("logs").clone();
    if now() < expires {
        assert!(
            !early.iter().any(|l| l.contains(REFUSED)),
            "a valid certificate is no warning: {early:?}"
        );
    }
    let expired = format!(
        "serving certificate expired at {}: {REFUSED}",
        tokenvend_core::clock::rfc3339(expires)
    );
    wait_for_lines(&wh, &expired, 1).await;
    // Out of its Service until renewed, saying why.
    let readyz = || async {
        let r = reqwest::get(format!("http://{}/readyz", wh.probe))
            .await
            .expect("readyz");
        (r.status().as_u16(), r.text().await.expect("text"))
    };
    assert_eq!(
        readyz().await,
        (
            503,
            format!(
                "serving certificate expired at {}",
                tokenvend_core::clock::rfc3339(expires)
            )
        )
    );
    // Checked each second (--cert-reload-seconds 1), said once.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(wait_for_lines(&wh, REFUSED, 1).await.len(), 1);

    // A renewal whose validity starts tomorrow (the issuer's clock ahead): loaded, said, and
    // still out of its Service.
    let tomorrow = now() + 86_400;
    install(
        dir.path(),
        &leaf_between(&ca1, &issuer, tomorrow, tomorrow + 86_400),
    );
    let not_yet = format!(
        "serving certificate not valid before {} (is this machine's clock right?): {REFUSED}",
        tokenvend_core::clock::rfc3339(tomorrow)
    );
    wait_for_lines(&wh, &not_yet, 1).await;
    assert_eq!(
        readyz().await,
        (
            503,
            format!(
                "serving certificate not valid before {} (is this machine's clock right?)",
                tokenvend_core::clock::rfc3339(tomorrow)
            )
        )
    );

    // A good pair: loaded, said to be valid, and served; no more warnings.
    let good = leaf(&ca1, &issuer);
    install(dir.path(), &good);
    wait_for_lines(&wh, "serving certificate in use is valid", 1).await;
    assert_eq!(readyz().await, (200, "ready".to_owned()));
    post_review(&client(&[&good.ca_pem], true), wh.addr, "renewed")
        .await
        .expect("serves the good pair");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(wait_for_lines(&wh, REFUSED, 2).await.len(), 2);
}

/// The sidecar container the admission's patch adds.
fn sidecar(review: &Value) -> Option<Value> {
    use base64::Engine;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(review["response"]["patch"].as_str()?)
        .ok()?;
    let ops: Vec<Value> = serde_json::from_slice(&patch).ok()?;
    ops.iter()
        .flat_map(|op| match &op["value"] {
            Value::Array(many) => many.clone(),
            one => vec![one.clone()],
        })
        .find(|c| c["name"] == json!("tokenvend-sidecar"))
}

/// The CA bundle the admitted pod's sidecar is given (`TOKENVEND_CA_PEM` in the patch).
fn sidecar_ca(review: &Value) -> Option<String> {
    sidecar(review)?["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == json!("TOKENVEND_CA_PEM"))
        .and_then(|e| e["value"].as_str().map(str::to_owned))
}

/// Replace `path`'s content at once, by a rename, as the kubelet updates a mounted ConfigMap or
/// Secret.
fn replace_file(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Admit until `done` holds for the answer (at most 15 s), checking `meanwhile` on the others.
async fn admit_until(
    c: &reqwest::Client,
    wh: &Webhook,
    done: impl Fn(&Value) -> bool,
    meanwhile: impl Fn(&Value),
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let review = post_review(c, wh.addr, "poll").await.expect("admitted");
        if done(&review) {
            return review;
        }
        meanwhile(&review);
        assert!(Instant::now() < deadline, "never: {review}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait (at most 15 s) until the probe port's metrics have `line`.
async fn metric_reaches(wh: &Webhook, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !has_metric(&metrics_text(wh.probe).await, line) {
        assert!(Instant::now() < deadline, "never {line}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_edited_config_file_applies_to_admissions_after_it_and_a_bad_edit_keeps_the_settings() {
    let files = tempfile::tempdir().expect("tmp");
    let (ca1, ca2) = (files.path().join("ca1.crt"), files.path().join("ca2.crt"));
    let (ca1_pem, ca2_pem, ca3_pem) = (
        ca("exchange-ca-1").0.pem(),
        ca("exchange-ca-2").0.pem(),
        ca("exchange-ca-3").0.pem(),
    );
    replace_file(&ca1, &ca1_pem);
    replace_file(&ca2, &ca2_pem);
    let config = files.path().join("config.yaml");
    let yaml = |tag: &str, bundle: &Path| {
        format!(
            "sidecarImage: registry.example.com/tokenvend-sidecar:{tag}\n\
             sidecarMemoryLimit: 64Mi\nexchangeCaFile: {}\n",
            bundle.display()
        )
    };
    let plain = "http://tokenvend-sts.tokenvend.svc:8080";
    let plain_warned = |wh: &Webhook| {
        let logs = wh.logs.lock().expect("logs");
        logs.iter()
            .filter(|l| l.contains(plain) && l.contains("plain HTTP"))
            .count()
    };
    replace_file(&config, &yaml("1.0.0", &ca1));
    let (_dir, pair, wh) = ready(&[
        "--config",
        config.to_str().expect("path"),
        "--sidecar-memory-limit",
        "48Mi",
    ])
    .await;
    let c = client(&[&pair.ca_pem], false);
    let image = |r: &Value| sidecar(r).map(|s| s["image"].clone());
    let memory = |r: &Value| sidecar(r).map(|s| s["resources"]["limits"]["memory"].clone());
    let v1 = json!("registry.example.com/tokenvend-sidecar:1.0.0");
    let v2 = json!("registry.example.com/tokenvend-sidecar:1.0.1");
    let first = post_review(&c, wh.addr, "first").await.expect("admitted");
    assert_eq!(image(&first), Some(v1.clone()));
    assert_eq!(memory(&first), Some(json!("48Mi")), "the flag wins");
    assert_eq!(sidecar_ca(&first), Some(ca1_pem.clone()));

    // Edited in place: a new image, another CA bundle file, and a plain HTTP exchange URL.
    assert_eq!(plain_warned(&wh), 0);
    replace_file(
        &config,
        &format!("{}exchangeUrl: {plain}\n", yaml("1.0.1", &ca2)),
    );
    let edited = admit_until(
        &c,
        &wh,
        |r| image(r) == Some(v2.clone()),
        |r| assert_eq!(image(r), Some(v1.clone()), "only the two versions: {r}"),
    )
    .await;
    assert_eq!(memory(&edited), Some(json!("48Mi")), "the flag still wins");
    assert_eq!(sidecar_ca(&edited), Some(ca2_pem.clone()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while plain_warned(&wh) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(plain_warned(&wh), 1, "the new settings' concern is logged");
    metric_reaches(
        &wh,
        "tokenvend_webhook_config_reloads_total{result=\"ok\"} 1",
    )
    .await;

    // The bundle file the edit named is the one followed from then on.
    let rotated = format!("{ca3_pem}{ca2_pem}");
    replace_file(&ca2, &rotated);
    admit_until(
        &c,
        &wh,
        |r| sidecar_ca(r).as_deref() == Some(rotated.as_str()),
        |_| {},
    )
    .await;

    // A bad edit, then a missing file: each one error, and the settings in use stay.
    replace_file(&config, "sidecarImage: x\nsidecarCpuLimit: lots\n");
    metric_reaches(
        &wh,
        "tokenvend_webhook_config_reloads_total{result=\"error\"} 1",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    std::fs::remove_file(&config).expect("rm");
    metric_reaches(
        &wh,
        "tokenvend_webhook_config_reloads_total{result=\"error\"} 2",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let kept = post_review(&c, wh.addr, "kept").await.expect("admitted");
    assert_eq!(image(&kept), Some(v2));
    assert_eq!(sidecar_ca(&kept).as_deref(), Some(rotated.as_str()));
    let metrics = metrics_text(wh.probe).await;
    assert!(
        has_metric(
            &metrics,
            "tokenvend_webhook_config_reloads_total{result=\"error\"} 2"
        ),
        "one count per failure: {metrics}"
    );
    let rejected = wait_for_lines(&wh, "config file not reloaded", 2).await;
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(rejected[0].contains("sidecarCpuLimit"), "{}", rejected[0]);
}

#[tokio::test]
async fn a_changed_exchange_ca_bundle_reaches_pods_admitted_after_it_without_a_restart() {
    let exchange = tempfile::tempdir().expect("tmp");
    let bundle = exchange.path().join("ca.crt");
    let replace = |content: &str| replace_file(&bundle, content);
    let old_ca = ca("exchange-ca-1").0.pem();
    let new_ca = ca("exchange-ca-2").0.pem();
    replace(&old_ca);
    let (_dir, pair, wh) = ready(&["--exchange-ca-file", bundle.to_str().expect("path")]).await;
    let c = client(&[&pair.ca_pem], false);
    let first = post_review(&c, wh.addr, "before").await.expect("admitted");
    assert_eq!(sidecar_ca(&first).as_deref(), Some(old_ca.as_str()));

    // The certs job rotates the CA: the bundle now holds the new CA and the old one.
    let rotated = format!("{new_ca}{old_ca}");
    replace(&rotated);
    admit_until(
        &c,
        &wh,
        |r| sidecar_ca(r).as_deref() == Some(rotated.as_str()),
        |r| assert_eq!(sidecar_ca(r).as_deref(), Some(old_ca.as_str())),
    )
    .await;
    let metrics = metrics_text(wh.probe).await;
    assert!(
        has_metric(
            &metrics,
            "tokenvend_webhook_exchange_ca_reloads_total{result=\"ok\"} 1"
        ),
        "{metrics}"
    );

    // A file that is not a bundle is counted once and changes nothing; pods keep getting the
    // last good bundle.
    replace("not a certificate\n-----BEGIN CERTIFICATE-----\nnot base64\n");
    let counted = "tokenvend_webhook_exchange_ca_reloads_total{result=\"error\"} 1";
    metric_reaches(&wh, counted).await;
    // Several more checks (1 s apart) find the same file: still one count, one warning.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let review = post_review(&c, wh.addr, "broken").await.expect("admitted");
    assert_eq!(sidecar_ca(&review).as_deref(), Some(rotated.as_str()));
    let metrics = metrics_text(wh.probe).await;
    assert!(has_metric(&metrics, counted), "{metrics}");
    let unusable = wait_for_lines(&wh, "exchange CA bundle unusable", 1).await;
    assert_eq!(unusable.len(), 1, "{unusable:?}");
}

#[tokio::test]
async fn bad_requests_get_clear_http_errors() {
    let (_dir, pair, wh) = ready(&[]).await;
    let c = client(&[&pair.ca_pem], false);
    let url = format!("https://localhost:{}/mutate", wh.addr.port());
    let send = |ct: Option<&'static str>, body: Vec<u8>| {
        let mut r = c.post(&url).body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.send()
    };
    let r = send(Some("text/plain"), review_body("x").into_bytes())
        .await
        .expect("send");
    assert_eq!(r.status(), 415);
    let r = send(None, review_body("x").into_bytes())
        .await
        .expect("send");
    assert_eq!(r.status(), 415);
    let r = send(Some("application/json"), b"{\"apiVersion\":".to_vec())
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .expect("text")
            .contains("not an AdmissionReview")
    );
    // The API server is told what serde found, value included; the log says only the kind.
    let quoting = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","dryRun":"s3cr3t-value"}}"#;
    let r = send(Some("application/json"), quoting.to_vec())
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let said = r.text().await.expect("text");
    assert!(said.contains("s3cr3t-value"), "{said}");
    // Both 400s so far, each logged once by kind, once the lines reach the test.
    let refused = |logs: &[String]| {
        logs.iter()
            .filter(|l| {
                l.contains("refused /mutate request")
                    && l.contains("body is not an AdmissionReview")
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while refused(&wh.logs.lock().expect("logs")) < 2 {
        assert!(Instant::now() < deadline, "not logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = wh.logs.lock().expect("logs").join("\n");
    assert!(!logs.contains("s3cr3t"), "{logs}");
    let r = send(
        Some("application/json; charset=utf-8"),
        vec![b' '; 3 * 1024 * 1024 + 1],
    )
    .await
    .expect("send");
    assert_eq!(r.status(), 413);
    // A review of exactly 3 MiB (padded with JSON whitespace) is still taken.
    let mut at_limit = review_body("big").into_bytes();
    at_limit.resize(3 * 1024 * 1024, b' ');
    let r = send(Some("application/json"), at_limit)
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let r = send(Some("application/json"), review_body("ok").into_bytes())
        .await
        .expect("send");
    assert_eq!(r.status(), 200, "server still healthy after bad input");
    let r = c.get(&url).send().await.expect("send");
    assert_eq!(r.status(), 405);
    let r = c
        .get(format!("https://localhost:{}/healthz", wh.addr.port()))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("https://localhost:{}/readyz", wh.addr.port()))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    // Each refusal is counted by what was wrong: the two 415s, the two 400s, the 413.
    let metrics = metrics_text(wh.probe).await;
    for line in [
        "tokenvend_webhook_bad_requests_total{result=\"content_type\"} 2",
        "tokenvend_webhook_bad_requests_total{result=\"malformed\"} 2",
        "tokenvend_webhook_bad_requests_total{result=\"body\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}\n{metrics}");
    }
}

#[tokio::test]
async fn not_ready_until_a_certificate_exists_and_bad_config_fails_fast() {
    provider();
    let dir = tempfile::tempdir().expect("tmp");
    let wh = start(dir.path(), &[]);
    let plain = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Ok(r) = plain
            .get(format!("http://{}/readyz", wh.probe))
            .send()
            .await
        {
            break r.status();
        }
        assert!(Instant::now() < deadline, "probe listener never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 503);
    // Not ready, saying why, and said in the log once, not on each try (each second here).
    let why = format!(
        "not serving yet: cannot read {}: No such file or directory (os error 2)",
        dir.path().join("tls.crt").display()
    );
    let probe = |path: &'static str| {
        let plain = plain.clone();
        let url = format!("http://{}{path}", wh.probe);
        async move {
            let r = plain.get(url).send().await.expect("probe");
            (r.status().as_u16(), r.text().await.expect("text"))
        }
    };
    while probe("/readyz").await != (503, why.clone()) {
        assert!(Instant::now() < deadline, "{:?}", probe("/readyz").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        wait_for_lines(&wh, "no usable serving certificate yet", 1)
            .await
            .len(),
        1
    );
    let metrics = probe("/metrics").await.1;
    assert!(
        metrics
            .lines()
            .any(|l| l == "tokenvend_webhook_cert_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
    let (ca1, _k, issuer) = ca("ca");
    let pair = leaf(&ca1, &issuer);
    install(dir.path(), &pair);
    wait_ready(wh.probe).await;
    post_review(&client(&[&pair.ca_pem], false), wh.addr, "late")
        .await
        .expect("serves once cert exists");

    let out = Command::new(env!("CARGO_BIN_EXE_tokenvend-webhook"))
        .args([
            "--tls-cert",
            "x",
            "--tls-key",
            "y",
            "--token-expiration-seconds",
            "60",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tokenExpirationSeconds")
            && stderr.contains("TOKENVEND_TOKEN_EXPIRATION_SECONDS"),
        "{stderr}"
    );
}

#[test]
fn a_setting_naming_an_endless_file_is_refused_not_read_until_memory_runs_out() {
    for (flag, says) in [
        ("--config", "/dev/zero: larger than 1024 KiB"),
        ("--exchange-ca-file", "/dev/zero: larger than 64 KiB"),
    ] {
        let out = tokenvend_testkit::output_within(
            Command::new(env!("CARGO_BIN_EXE_tokenvend-webhook"))
                .args(["--tls-cert", "x", "--tls-key", "y", "--check-config"])
                .args([flag, "/dev/zero"]),
            Duration::from_secs(20),
        );
        assert!(!out.status.success(), "{flag}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{flag}: {stderr}");
    }
}

#[tokio::test]
async fn a_plain_http_exchange_url_is_warned_about_at_start_and_by_check_config() {
    let url = "http://tokenvend-sts.tokenvend.svc:8080";
    let dir = tempfile::tempdir().expect("tmp");
    // Logged at start, before the server waits for its certificate.
    let wh = start(dir.path(), &["--exchange-url", url]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let warned = |logs: &[String]| {
        logs.iter()
            .filter(|l| l.contains("\"WARN\"") && l.contains(url) && l.contains("plain HTTP"))
            .count()
    };
    while warned(&wh.logs.lock().expect("logs")) == 0 {
        assert!(Instant::now() < deadline, "no warning logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_tokenvend-webhook"))
        .args(["--tls-cert", "x", "--tls-key", "y", "--check-config"])
        .args(["--exchange-url", url])
        .output()
        .expect("run");
    assert!(out.status.success(), "valid, only a concern");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("warning: exchangeUrl") && stdout.contains("use https://"),
        "{stdout}"
    );
    assert_eq!(warned(&wh.logs.lock().expect("logs")), 1, "once");
}

#[tokio::test]
async fn not_ready_when_the_tls_port_cannot_be_bound() {
    // In process, so the probe listener outlives run()'s failure and can be asked afterwards.
    provider();
    let dir = tempfile::tempdir().expect("tmp");
    let (ca1, _k, issuer) = ca("ca");
    install(dir.path(), &leaf(&ca1, &issuer));
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = taken.local_addr().expect("addr").to_string();
    let probe = format!("127.0.0.1:{}", free_port());
    let cli = <tokenvend_webhook::Cli as clap::Parser>::try_parse_from([
        "tokenvend-webhook",
        "--listen",
        &listen,
        "--probe-listen",
        &probe,
        "--tls-cert",
        &dir.path().join("tls.crt").to_string_lossy(),
        "--tls-key",
        &dir.path().join("tls.key").to_string_lossy(),
    ])
    .expect("flags");
    let cfg = cli.into_server_config().expect("config");
    let err = tokio::time::timeout(Duration::from_secs(10), tokenvend_webhook::run(cfg))
        .await
        .expect("run returns")
        .expect_err("the port is taken");
    assert!(
        matches!(err, tokenvend_webhook::server::RunError::Listen { .. }),
        "{err}"
    );
    let r = reqwest::get(format!("http://{probe}/readyz"))
        .await
        .expect("probe listener still answers");
    assert_eq!(r.status(), 503, "a webhook that never bound reported ready");
}

#[tokio::test]
async fn at_sigterm_readiness_fails_new_admissions_are_served_for_the_delay_and_in_flight_ones_finish()
 {
    let delay = Duration::from_secs(2);
    let (_dir, pair, mut wh) = ready(&["--shutdown-delay-seconds", "2"]).await;
    // A kept-alive connection, as the API server pools them.
    let mut pooled = tls_connect(wh.addr, &pair.ca_pem).await;
    let before = admit_raw(&mut pooled, "before").await.to_ascii_lowercase();
    assert!(
        !before.contains("connection: close"),
        "closing while serving: {before}"
    );

    // An admission in flight: headers and half the body sent over TLS, the rest held back.
    let body = review_body("in-flight");
    let mut conn = half_sent(wh.addr, &pair.ca_pem, &body).await;

    let signalled = Instant::now();
    sigterm(&wh);
    let plain = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = plain
            .get(format!("http://{}/readyz", wh.probe))
            .send()
            .await
            .expect("probe answers while draining")
            .status();
        if status == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "still ready after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Not ready, yet a new connection is still accepted and answered during the delay: the API
    // server may dial the endpoint a moment after the pod began terminating.
    post_review(&client(&[&pair.ca_pem], true), wh.addr, "during-delay")
        .await
        .expect("a new admission is served during the shutdown delay");
    // A pooled connection is answered too, told `Connection: close`, and closed right after that
    // answer rather than at the end of the delay, where a request could cross the close.
    let last = admit_raw(&mut pooled, "pooled-during-delay")
        .await
        .to_ascii_lowercase();
    assert!(
        last.contains("connection: close"),
        "no Connection: close while stopping: {last}"
    );
    let closed_after = seconds_until_closed(pooled, Duration::from_secs(5)).await;
    assert!(
        closed_after < 0.5,
        "pooled connection closed {closed_after} s after its last answer"
    );
    assert!(
        signalled.elapsed() < delay,
        "the check above ran too late to prove the delay"
    );
    // After the delay new connections are refused, while the in-flight admission holds on.
    let deadline = signalled + delay + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(wh.addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting long after the delay"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        signalled.elapsed() >= delay,
        "stopped accepting before the delay was over"
    );
    assert!(
        wh.child.try_wait().expect("wait").is_none(),
        "exited before the in-flight admission finished"
    );

    // The rest of the body: the admission is answered, then the process exits cleanly.
    tokio::io::AsyncWriteExt::write_all(&mut conn, &body.as_bytes()[body.len() / 2..])
        .await
        .expect("send rest");
    let mut answer = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut conn, &mut answer)
        .await
        .expect("read answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"uid\":\"in-flight\""), "{answer}");
    let t0 = Instant::now();
    wait_clean_exit(&mut wh, t0, "the last admission").await;
}

/// A review of `bytes` bytes (padded with an annotation).
fn review_of_size(uid: &str, bytes: usize) -> String {
    let plain = review_body(uid);
    let mut review: Value = serde_json::from_str(&plain).expect("review");
    let pad = bytes - plain.len() - r#","pad":"""#.len();
    review["request"]["object"]["metadata"]["annotations"]["pad"] = json!("x".repeat(pad));
    let text = review.to_string();
    assert_eq!(text.len(), bytes);
    text
}

/// A connection with an admission in flight: the head of a POST of `body` sent, the server's
/// "100 Continue" received (proof it has parsed the head and is reading the body; an unparsed
/// request would count as idle), then half the body; the rest held back.
async fn half_sent(
    addr: SocketAddr,
    ca_pem: &str,
    body: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut conn = tls_connect(addr, ca_pem).await;
    assert!(
        head_until_continue(&mut conn, body, Duration::from_secs(5)).await,
        "no 100 Continue in time"
    );
    conn.write_all(&body.as_bytes()[..body.len() / 2])
        .await
        .expect("send half");
    conn.flush().await.expect("flush");
    conn
}

/// Sends the head of a POST of `body` with `Expect: 100-continue`; true when the server asks for
/// the body (it has begun reading it) within `wait`.
async fn head_until_continue(
    conn: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    body: &str,
    wait: Duration,
) -> bool {
    use tokio::io::AsyncWriteExt;
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("send head");
    conn.flush().await.expect("flush");
    continued_within(conn, wait).await
}

/// Whether the server's `100 Continue` arrives within `wait` (and nothing else before it).
async fn continued_within(
    conn: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    wait: Duration,
) -> bool {
    let continued = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut interim = vec![0u8; continued.len()];
    match tokio::time::timeout(
        wait,
        tokio::io::AsyncReadExt::read_exact(conn, &mut interim),
    )
    .await
    {
        Ok(read) => {
            read.expect("read 100 Continue");
            assert_eq!(
                String::from_utf8_lossy(&interim),
                String::from_utf8_lossy(continued)
            );
            true
        }
        Err(_) => false,
    }
}

/// Sends `bytes`, then reads the answer: its head and the body its `Content-Length` gives.
async fn send_and_read(
    conn: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    bytes: &[u8],
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(bytes).await.expect("send");
    conn.flush().await.expect("flush");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|l| l.trim().parse::<usize>().ok())
                .expect("content-length");
            if body.len() >= length {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(n > 0, "closed before answering: {text}");
        answer.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn admissions_beyond_the_memory_budget_wait_their_turn_and_one_larger_than_it_is_refused() {
    // 8 MiB: a 120 KB review is charged 26 x 120 KB + 2 MiB, about 5 MiB; two do not fit.
    let (_dir, pair, wh) = ready(&["--memory-budget-mib", "8"]).await;
    let first = review_of_size("first", 120_000);
    let second = review_of_size("second", 120_000);
    let mut a = half_sent(wh.addr, &pair.ca_pem, &first).await;
    // The first holds its charge while its body arrives. A small review fits beside it...
    post_review(&client(&[&pair.ca_pem], true), wh.addr, "small")
        .await
        .expect("a small review fits beside the first");
    // ...the second does not, and is not read meanwhile.
    let mut b = tls_connect(wh.addr, &pair.ca_pem).await;
    assert!(
        !head_until_continue(&mut b, &second, Duration::from_secs(1)).await,
        "the second review was read while the first held the budget"
    );
    let answer = send_and_read(&mut a, &first.as_bytes()[first.len() / 2..]).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""uid":"first""#), "{answer}");
    // Answered, the first gives its charge back and the second is read.
    assert!(
        continued_within(&mut b, Duration::from_secs(5)).await,
        "the second is not read once the first is answered"
    );
    let answer = send_and_read(&mut b, second.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""uid":"second""#), "{answer}");

    // A review that would need more than the whole budget is refused at once, unread.
    let large = review_of_size("large", 300_000);
    let mut c = tls_connect(wh.addr, &pair.ca_pem).await;
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        large.len()
    );
    let answer = send_and_read(&mut c, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains(
            "a review of 300000 bytes may need up to 10 MiB of memory, more than this webhook's \
             whole memory budget of 8 MiB (--memory-budget-mib)"
        ),
        "{answer}"
    );

    // A review that waits longer than BUDGET_WAIT is answered 503 with the reason.
    let mut a = tls_connect(wh.addr, &pair.ca_pem).await;
    let held = review_of_size("held", 120_000);
    assert!(head_until_continue(&mut a, &held, Duration::from_secs(5)).await);
    let mut b = tls_connect(wh.addr, &pair.ca_pem).await;
    let waited = Instant::now();
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        second.len()
    );
    let answer = send_and_read(&mut b, head.as_bytes()).await;
    let waited = waited.elapsed();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains(
            "the admissions in flight held this webhook's memory budget of 8 MiB \
             (--memory-budget-mib) for 4 s; try again"
        ),
        "{answer}"
    );
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(8),
        "answered after {waited:?}"
    );
    let metrics = metrics_text(wh.probe).await;
    for result in ["busy", "over_budget"] {
        assert!(
            has_metric(
                &metrics,
                &format!("tokenvend_webhook_bad_requests_total{{result=\"{result}\"}} 1")
            ),
            "{result} not counted: {metrics}"
        );
    }
    drop(a);
}

#[tokio::test]
async fn connections_past_the_cap_wait_for_a_slot_and_as_many_more_are_closed_at_once() {
    let (_dir, pair, wh) = ready(&["--max-connections", "2"]).await;
    // Both held connections have an admission in flight, so neither is idle and closed to
    // make room.
    let body_a = review_body("held");
    let mut a = half_sent(wh.addr, &pair.ca_pem, &body_a).await;
    let b = half_sent(wh.addr, &pair.ca_pem, &review_body("b")).await;
    let handshake = |addr: SocketAddr, ca: String| {
        tokio::spawn(async move { tls_handshake(addr, &ca, Vec::new()).await })
    };
    // A third is accepted, but its handshake waits for a slot; so does a fourth. Past a second
    // of waiting, idle connections would have been closed for them.
    let third = handshake(wh.addr, pair.ca_pem.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fourth = handshake(wh.addr, pair.ca_pem.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!third.is_finished(), "the third got past the cap of 2");
    assert!(!fourth.is_finished(), "the fourth got past the cap of 2");
    // With two held and two waiting, a fifth is closed at once.
    let t0 = Instant::now();
    let fifth = tls_handshake(wh.addr, &pair.ca_pem, Vec::new()).await;
    assert!(fifth.is_err(), "a fifth connection was served");
    assert!(t0.elapsed() < Duration::from_secs(2), "the fifth waited");
    // The connections held still serve.
    let answer = send_and_read(&mut a, &body_a.as_bytes()[body_a.len() / 2..]).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // One closing lets the first waiting one in, and it serves.
    drop(b);
    let mut c = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("the third got a slot in time")
        .expect("task")
        .expect("the third's handshake");
    admit_raw(&mut c, "third").await;
    let metrics = metrics_text(wh.probe).await;
    for line in [
        "tokenvend_webhook_connections_open 2",
        "tokenvend_webhook_connections_turned_away_total 1",
    ] {
        assert!(has_metric(&metrics, line), "no {line}: {metrics}");
    }
    let warned = wait_for_lines(&wh, "connection limit reached", 1).await;
    assert!(warned[0].contains("\"max_connections\":2"), "{}", warned[0]);
    // Three connections met the cap within seconds: one warning a minute says it.
    assert_eq!(warned.len(), 1, "{warned:#?}");
}

#[tokio::test]
async fn at_the_cap_the_connection_idle_longest_is_closed_to_make_room() {
    use tokio::io::AsyncReadExt;
    let (_dir, pair, wh) = ready(&["--max-connections", "2"]).await;
    // Two kept-alive connections, each answered once and then left idle, `a` the longer.
    let mut a = tls_connect(wh.addr, &pair.ca_pem).await;
    admit_raw(&mut a, "a").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut b = tls_connect(wh.addr, &pair.ca_pem).await;
    admit_raw(&mut b, "b").await;
    // A third gets in once `a` has been idle a second, well before the 10 s a connection
    // waits, and serves.
    let t0 = Instant::now();
    let mut c = tokio::time::timeout(
        Duration::from_secs(5),
        tls_handshake(wh.addr, &pair.ca_pem, Vec::new()),
    )
    .await
    .expect("the third got a slot in time")
    .expect("the third's handshake");
    eprintln!("the third waited {:?}", t0.elapsed());
    admit_raw(&mut c, "c").await;
    // `a` was closed by the server; `b` still serves.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), a.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the longest idle connection is still open: {closed:?}"
    );
    admit_raw(&mut b, "b again").await;
    let metrics = metrics_text(wh.probe).await;
    for line in [
        "tokenvend_webhook_connections_open 2",
        "tokenvend_webhook_connections_closed_idle_total 1",
        "tokenvend_webhook_connections_turned_away_total 0",
    ] {
        assert!(has_metric(&metrics, line), "no {line}: {metrics}");
    }
}

/// Sends spaces on `stream` for as long as HTTP/2 flow control lets it, up to `want` bytes;
/// what was sent.
async fn send_what_the_window_allows(
    stream: &mut h2::SendStream<axum::body::Bytes>,
    want: usize,
) -> usize {
    stream.reserve_capacity(want);
    let mut sent = 0;
    while sent < want {
        let granted = tokio::time::timeout(
            Duration::from_millis(500),
            std::future::poll_fn(|cx| stream.poll_capacity(cx)),
        )
        .await;
        match granted {
            Ok(Some(Ok(n))) if n > 0 => {
                stream
                    .send_data(axum::body::Bytes::from(vec![b' '; n]), false)
                    .expect("send data");
                sent += n;
            }
            _ => return sent,
        }
    }
    sent
}

#[tokio::test]
async fn an_http2_connection_has_four_requests_open_and_64_kib_unread_at_most() {
    use tokenvend_core::serving::HTTP2_WINDOW;
    // 8 MiB: while a 120 KB review holds its charge, no other fits, so the HTTP/2 requests
    // below wait unread.
    let (_dir, pair, wh) = ready(&["--memory-budget-mib", "8"]).await;
    let _held = half_sent(wh.addr, &pair.ca_pem, &review_of_size("held", 120_000)).await;
    let conn = h2_connect(wh.addr, &pair.ca_pem).await;
    let (mut client, mut connection) = h2::client::handshake(conn).await.expect("h2 handshake");
    // The server's SETTINGS arrive with its first frames.
    let settled = tokio::time::timeout(Duration::from_secs(2), &mut connection).await;
    assert!(settled.is_err(), "the connection ended: {settled:?}");
    assert_eq!(connection.max_concurrent_send_streams(), 4);
    let driver = tokio::spawn(connection);
    let mut sent = 0;
    let mut streams = Vec::new();
    for i in 0..4 {
        client = client.ready().await.expect("a stream may open");
        let req = http::Request::post("https://localhost/mutate")
            .header("content-type", "application/json")
            .header("content-length", "120000")
            .body(())
            .expect("request");
        let (answer, mut body) = client.send_request(req, false).expect("send");
        let n = send_what_the_window_allows(&mut body, 120_000).await;
        eprintln!("stream {i}: {n} bytes sent before the window closed");
        sent += n;
        streams.push((answer, body));
    }
    // hyper's default windows (1 MiB each) would have taken all 480,000 bytes.
    assert!(
        sent <= HTTP2_WINDOW as usize,
        "{sent} bytes unread on one connection, more than {HTTP2_WINDOW}"
    );
    assert!(
        sent >= 60_000,
        "only {sent} bytes sent: the window is 64 KiB"
    );
    assert!(!driver.is_finished(), "the connection ended");
}
