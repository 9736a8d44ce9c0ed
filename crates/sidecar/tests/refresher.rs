//! The real tokenvend-sidecar binary against the real tokenvend-sts and moto (and, to inject
//! failures the real service never produces, a local server that follows its API): first write,
//! refresh across expiry, SA-token rotation by symlink swap, upstream outages, garbage, 500s
//! and hangs without a partial file, SIGTERM, --once, probe, and unmodified AWS clients.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use tokenvend_sidecar::refresh;
use tokenvend_testkit::*;

/// A projected-token directory laid out as the kubelet does: `token -> ..data/token`, with
/// `..data` a symlink to a timestamped directory that is swapped on rotation.
struct ProjectedToken {
    dir: tempfile::TempDir,
    generation: usize,
}

impl ProjectedToken {
    fn new(token: &str) -> Self {
        let mut p = ProjectedToken {
            dir: tempfile::tempdir().expect("tmp"),
            generation: 0,
        };
        p.rotate(token);
        std::os::unix::fs::symlink("..data/token", p.dir.path().join("token")).expect("symlink");
        p
    }

    /// Swap in a new token: new timestamped dir, then an atomic rename of the `..data` link.
    fn rotate(&mut self, token: &str) {
        self.generation += 1;
        let gen_dir = format!("..2026_11_24_{:04}", self.generation);
        std::fs::create_dir(self.dir.path().join(&gen_dir)).expect("gen dir");
        std::fs::write(self.dir.path().join(&gen_dir).join("token"), token).expect("token");
        let tmp = self.dir.path().join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&gen_dir, &tmp).expect("symlink");
        std::fs::rename(&tmp, self.dir.path().join("..data")).expect("swap");
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("token")
    }
}

struct Sidecar {
    child: Child,
    out: tempfile::TempDir,
    logs: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sidecar_cmd(mode: &str, sa: &Path, out: &Path, url: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(workspace_bin("tokenvend-sidecar"));
    c.env_clear()
        .args([
            "--mode",
            mode,
            "--exchange-url",
            url,
            "--refresh-share",
            "0.5",
            "--timeout-seconds",
            "2",
        ])
        .arg("--sa-token-file")
        .arg(sa)
        .arg("--out-dir")
        .arg(out)
        .args(extra);
    c
}

fn start_sidecar(mode: &str, sa: &Path, url: &str, extra: &[&str]) -> Sidecar {
    start_sidecar_with_env(mode, sa, url, extra, &[])
}

/// [`start_sidecar`] with extra environment variables.
fn start_sidecar_with_env(
    mode: &str,
    sa: &Path,
    url: &str,
    extra: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> Sidecar {
    let out = tempfile::tempdir().expect("out");
    let mut child = sidecar_cmd(mode, sa, out.path(), url, extra)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sidecar");
    let logs = capture_output(&mut child);
    Sidecar { child, out, logs }
}

impl Sidecar {
    fn logs(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }
    /// Whether `text` is in the log within 10 s: a line reaches the test through a reader
    /// thread, so it can trail the file or answer that was checked first.
    fn logged(&self, text: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.logs().contains(text) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }
    fn file(&self, name: &str) -> PathBuf {
        self.out.path().join(name)
    }
    fn wait_file(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.file(name).exists() {
            assert!(
                Instant::now() < deadline,
                "{name} never written: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn jwt_exp(token: &str) -> i64 {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("b64");
    serde_json::from_slice::<Value>(&bytes).expect("json")["exp"]
        .as_i64()
        .expect("exp")
}

/// A JWT-shaped token expiring at `exp` (unsigned: the sidecar reads `exp`, never verifies).
fn token_expiring_at(exp: i64) -> String {
    use base64::Engine;
    let claims =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{{\"exp\":{exp}}}"));
    format!("eyJhbGciOiJFUzI1NiJ9.{claims}.c2ln")
}

/// A token file at `path` expiring at `exp`, written `age` ago as the sidecar sees it (mtime).
fn write_token_file(path: &Path, exp: i64, age: Duration) {
    std::fs::write(path, token_expiring_at(exp)).expect("write");
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now() - age))
        .expect("mtime");
}

/// Reads `path` in a loop until stopped; counts reads that are not a complete value.
fn reader_loop(
    path: PathBuf,
    check: fn(&[u8]) -> bool,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    std::thread::JoinHandle<()>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let (bad, reads) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (s, b, r) = (stop.clone(), bad.clone(), reads.clone());
    let h = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            if let Ok(bytes) = std::fs::read(&path) {
                r.fetch_add(1, Ordering::Relaxed);
                if !check(&bytes) {
                    b.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    (stop, bad, reads, h)
}

fn complete_jwt(b: &[u8]) -> bool {
    let s = String::from_utf8_lossy(b);
    !s.ends_with('\n')
        && s.split('.').count() == 3
        && std::panic::catch_unwind(|| jwt_exp(&s)).is_ok()
}

fn complete_credential_process(b: &[u8]) -> bool {
    serde_json::from_slice::<Value>(b).is_ok_and(|v| {
        v["Version"] == 1 && v["SessionToken"].as_str().is_some_and(|t| !t.is_empty())
    })
}

fn sigterm(child: &mut Child) -> Duration {
    let t0 = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill")
            .success()
    );
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "exit status {status}");
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn short_sts(moto: &Moto, cluster: &Cluster, ttl: &str) -> tokenvend_testkit::Sts {
    tokenvend_testkit::Sts::start(
        moto,
        cluster,
        &[
            ("TOKENVEND_ALLOW_SHORT_SESSIONS", "true".into()),
            ("TOKENVEND_TOKEN_TTL_SECONDS", ttl.into()),
            ("SESSION_DURATION_SECONDS", ttl.into()),
            ("TOKENVEND_VALIDATION_CACHE_SECONDS", "0".into()),
        ],
    )
}

#[test]
fn web_identity_refreshes_across_expiry_follows_token_rotation_and_never_shows_a_partial_file() {
    let moto = Moto::start();
    let cluster = Cluster::new();
    let sts = short_sts(&moto, &cluster, "6");
    // The first SA token expires in 8 s: refreshes after that only work if the rotation is seen.
    let mut sa =
        ProjectedToken::new(&cluster.token("shop", "orders", Some("orders-1"), "tokenvend", 8));
    let mut sc = start_sidecar(
        "web-identity",
        &sa.path(),
        &format!("http://{}", sts.addr),
        &[],
    );
    sc.wait_file("token");
    let first = std::fs::read_to_string(sc.file("token")).expect("token");
    assert!(!first.ends_with('\n'), "no trailing newline");
    let (stop, bad, reads, reader) = reader_loop(sc.file("token"), complete_jwt);
    std::thread::sleep(Duration::from_secs(3));
    sa.rotate(&cluster.token("shop", "orders", Some("orders-1"), "tokenvend", 3600));
    // Three 6-second lifetimes: each value is replaced before it expires.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(18);
    while Instant::now() < deadline {
        let t = std::fs::read_to_string(sc.file("token")).expect("token");
        assert!(
            jwt_exp(&t) > now(),
            "served an expired token: {}",
            sc.logs()
        );
        seen.insert(jwt_exp(&t));
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("reader");
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "partial reads out of {}",
        reads.load(Ordering::Relaxed)
    );
    assert!(reads.load(Ordering::Relaxed) > 1000);
    assert!(seen.len() >= 5, "refreshes seen: {seen:?}\n{}", sc.logs());
    assert!(!sc.logs().contains("refresh failed"), "{}", sc.logs());
    let took = sigterm(&mut sc.child);
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn credentials_endpoint_survives_an_sts_outage_and_recovers() {
    let moto = Moto::start();
    let cluster = Cluster::new();
    // 12-second credentials: due for refresh after ~6 s, so the 10-second outage spans a refresh.
    let mut sts = short_sts(&moto, &cluster, "12");
    let sa = ProjectedToken::new(&cluster.token("shop", "orders", None, "tokenvend", 3600));
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let sc = start_sidecar(
        "credentials",
        &sa.path(),
        &format!("http://{}", sts.addr),
        &["--listen", &listen],
    );
    sc.wait_file("credentials.json");
    let auth = std::fs::read_to_string(sc.file("auth-token")).expect("auth token");
    assert!(auth.len() >= 64 && !auth.ends_with('\n'));
    let get = |auth: Option<&str>| -> (u16, Value) {
        let mut args = vec![
            "-s".to_owned(),
            "-w".into(),
            "\n%{http_code}".into(),
            format!("http://{listen}/credentials"),
        ];
        if let Some(a) = auth {
            args.push("-H".into());
            args.push(format!("Authorization: {a}"));
        }
        let out = Command::new("curl").args(&args).output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').expect("code");
        (
            code.parse().expect("code"),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    };
    // An SDK that does not read the token file sends no header, and is told so.
    let (code, missing) = get(None);
    assert_eq!(code, 401);
    let said = missing["error"].as_str().unwrap_or_default();
    assert!(
        said.starts_with("no Authorization header")
            && said.contains("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
            && said.contains("botocore 1.32.0"),
        "{missing}"
    );
    let (code, wrong) = get(Some("wrong"));
    assert_eq!(code, 401);
    assert!(
        wrong["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("wrong Authorization")),
        "{wrong}"
    );
    let (code, first) = get(Some(&auth));
    assert_eq!(code, 200, "{first}");
    for k in ["AccessKeyId", "SecretAccessKey", "Token", "Expiration"] {
        assert!(first[k].as_str().is_some_and(|v| !v.is_empty()), "{k}");
    }
    let (stop, bad, _, reader) =
        reader_loop(sc.file("credentials.json"), complete_credential_process);

    // Outage: kill tokenvend-sts. The last good credentials keep being served while valid.
    let addr: SocketAddr = sts.addr;
    drop(std::mem::replace(
        &mut sts.proc,
        Proc(Command::new("true").spawn().expect("true")),
    ));
    let outage_end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < outage_end {
        let (code, c) = get(Some(&auth));
        assert_eq!(
            code, 200,
            "endpoint failed during the outage while the credentials were valid: {c}"
        );
        assert_eq!(c["AccessKeyId"], first["AccessKeyId"]);
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        sc.logged("refresh failed"),
        "failures are logged: {}",
        sc.logs()
    );
    // Each failure says how long the credentials in use have left: the first, due half-way
    // through their 12 s, some seconds.
    let left: Vec<i64> = sc
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "refresh failed; keeping the last good value while it is valid")
        .filter_map(|l| l["current_valid_for_s"].as_i64())
        .collect();
    assert!(
        left.first().is_some_and(|s| (2..=12).contains(s)) && left.iter().all(|s| *s <= 12),
        "{left:?}"
    );
    // Recovery: a new tokenvend-sts on the same address.
    let sts2 = tokenvend_testkit::Sts::start(
        &moto,
        &cluster,
        &[
            ("TOKENVEND_LISTEN", addr.to_string()),
            ("TOKENVEND_ALLOW_SHORT_SESSIONS", "true".into()),
            ("SESSION_DURATION_SECONDS", "12".into()),
            ("TOKENVEND_VALIDATION_CACHE_SECONDS", "0".into()),
        ],
    );
    // Recovery: fresh credentials follow (after expiry the endpoint says 503, never stale keys).
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (code, c) = get(Some(&auth));
        assert!(code == 200 || code == 503, "{code}");
        if code == 200 && c["AccessKeyId"] != first["AccessKeyId"] {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {}", sc.logs());
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("reader");
    assert_eq!(bad.load(Ordering::Relaxed), 0);
    let logs = sc.logs();
    for secret in [
        first["SecretAccessKey"].as_str().expect("s"),
        first["Token"].as_str().expect("t"),
        auth.as_str(),
    ] {
        assert!(!logs.contains(secret), "secret in sidecar logs");
    }
    drop(sts2);
}

/// A local server following tokenvend-sts's API, scripted to misbehave. Good tokens expire
/// `exp_secs` after now as the sidecar sees it: `ahead` seconds later than this process's clock.
async fn scripted_upstream(
    script: Arc<std::sync::Mutex<Vec<&'static str>>>,
    exp_secs: i64,
    ahead: Arc<AtomicI64>,
) -> SocketAddr {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/token",
        post(move || {
            let (script, ahead) = (script.clone(), ahead.clone());
            async move {
                let step = {
                    let mut s = script.lock().expect("script");
                    if s.len() > 1 { s.remove(0) } else { s[0] }
                };
                let good = || {
                    let token = token_expiring_at(now() + ahead.load(Ordering::Relaxed) + exp_secs);
                    format!("{{\"token\":\"{token}\",\"expiration\":\"x\"}}")
                };
                match step {
                    "good" => (axum::http::StatusCode::OK, good()),
                    "garbage" => (axum::http::StatusCode::OK, "{\"token\": \"half".to_owned()),
                    "notjwt" => (
                        axum::http::StatusCode::OK,
                        "{\"token\":\"notajwt\",\"expiration\":\"x\"}".to_owned(),
                    ),
                    "500" => (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "{\"error\":\"STS AssumeRole failed: boom\"}".to_owned(),
                    ),
                    _ => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        (axum::http::StatusCode::OK, good())
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// A [`scripted_upstream`] that always answers with a token valid for `exp_secs`.
async fn good_upstream(exp_secs: i64) -> SocketAddr {
    scripted_upstream(
        Arc::new(std::sync::Mutex::new(vec!["good"])),
        exp_secs,
        Arc::default(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_500s_and_hangs_never_replace_the_good_file() {
    let script = Arc::new(std::sync::Mutex::new(vec![
        "good", "garbage", "notjwt", "500", "hang", "good",
    ]));
    let addr = scripted_upstream(script.clone(), 4, Arc::default()).await;
    let sa = ProjectedToken::new("sa-token");
    let sc = start_sidecar("web-identity", &sa.path(), &format!("http://{addr}"), &[]);
    sc.wait_file("token");
    let good = std::fs::read_to_string(sc.file("token")).expect("token");
    let (stop, bad, reads, reader) = reader_loop(sc.file("token"), complete_jwt);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = std::fs::read_to_string(sc.file("token")).expect("token");
        if t != good {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {}", sc.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("reader");
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "of {} reads",
        reads.load(Ordering::Relaxed)
    );
    for want in [
        "not the expected JSON",
        "token is not a JWT",
        "HTTP 500: STS AssumeRole failed: boom",
        "exchange request failed",
    ] {
        assert!(sc.logged(want), "{want} not logged: {}", sc.logs());
    }
    let names: Vec<String> = std::fs::read_dir(sc.out.path())
        .expect("ls")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["token".to_owned()], "no temp files left");
}

/// libfaketime (Debian `libfaketime`, installed by the test command): moves the sidecar's wall
/// clock and leaves its monotonic clock alone, as a suspended and resumed machine does.
fn libfaketime() -> PathBuf {
    std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|arch| arch.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.exists())
        .expect(
            "libfaketime not installed: `apt-get install libfaketime` (bash e2e/run-tests.sh does)",
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_resumed_from_suspend_past_the_expiry_refreshes_within_seconds() {
    let ahead = Arc::new(AtomicI64::new(0));
    let addr = scripted_upstream(
        Arc::new(std::sync::Mutex::new(vec!["good"])),
        3600,
        ahead.clone(),
    )
    .await;
    let sa = ProjectedToken::new("sa-token");
    let clock = tempfile::NamedTempFile::new().expect("clock file");
    std::fs::write(clock.path(), "+0").expect("clock");
    let preload = libfaketime();
    let sc = start_sidecar_with_env(
        "web-identity",
        &sa.path(),
        &format!("http://{addr}"),
        &[],
        &[
            ("LD_PRELOAD", preload.as_os_str()),
            ("FAKETIME_TIMESTAMP_FILE", clock.path().as_os_str()),
            ("FAKETIME_NO_CACHE", "1".as_ref()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".as_ref()),
        ],
    );
    sc.wait_file("token");
    let first = jwt_exp(&std::fs::read_to_string(sc.file("token")).expect("token"));

    // Two hours pass on the wall clock, none on the monotonic one: the token is an hour past its
    // expiry, and the refresh that was due half-way through went by while suspended.
    ahead.store(7200, Ordering::Relaxed);
    std::fs::write(clock.path(), "+7200").expect("clock");
    let resumed = Instant::now();
    let deadline = resumed + Duration::from_secs(30);
    loop {
        let exp = jwt_exp(&std::fs::read_to_string(sc.file("token")).expect("token"));
        if exp >= first + 7200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still the expired token 30 s after the resume: {}",
            sc.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = resumed.elapsed();
    assert!(
        took < refresh::MAX_NAP + Duration::from_secs(5),
        "refreshed {took:?} after the resume"
    );
    assert!(sc.logged("refreshed"), "{}", sc.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_startup_probe_says_why_the_exchange_fails_until_it_works() {
    let script = Arc::new(std::sync::Mutex::new(vec!["500"]));
    let addr = scripted_upstream(script.clone(), 3600, Arc::default()).await;
    let sa = ProjectedToken::new("sa-token");
    let sc = start_sidecar("web-identity", &sa.path(), &format!("http://{addr}"), &[]);
    let probe = || {
        Command::new(workspace_bin("tokenvend-sidecar"))
            .args(["probe", "--mode", "web-identity"])
            .arg("--out-dir")
            .arg(sc.out.path())
            .output()
            .expect("probe")
    };
    sc.wait_file("last-error");
    // What the kubelet shows in the pod's events as "Startup probe failed: ...".
    let p = probe();
    assert!(!p.status.success());
    let said = String::from_utf8_lossy(&p.stderr);
    assert!(
        said.contains("No such file")
            && said.contains("the last exchange failed")
            && said.contains("HTTP 500: STS AssumeRole failed: boom")
            && said.contains("in a row)"),
        "{said}"
    );
    assert!(!said.contains("sa-token"), "never the SA token: {said}");

    *script.lock().expect("script") = vec!["good"];
    sc.wait_file("token");
    let deadline = Instant::now() + Duration::from_secs(10);
    while sc.file("last-error").exists() {
        assert!(Instant::now() < deadline, "last-error kept after a success");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(probe().status.success());
}

#[test]
fn an_unmodified_boto3_is_told_why_the_credentials_endpoint_has_nothing() {
    let sa = ProjectedToken::new("sa-token");
    let listen = format!("127.0.0.1:{}", free_port());
    // Nothing listens on port 9: every exchange fails.
    let sc = start_sidecar(
        "credentials",
        &sa.path(),
        "http://127.0.0.1:9",
        &["--listen", &listen],
    );
    sc.wait_file("last-error");
    let home = tempfile::tempdir().expect("home");
    let out = Command::new(venv_bin("python"))
        .args([
            "-c",
            "import boto3; boto3.client('sts', region_name='us-east-1').get_caller_identity()",
        ])
        .env_clear()
        .env("HOME", home.path())
        .env(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("http://{listen}/credentials"),
        )
        .env(
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            sc.file("auth-token"),
        )
        .output()
        .expect("boto3");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("non 200 response 503")
            && said.contains("no credentials yet; the last exchange failed")
            && said.contains("exchange request failed"),
        "{said}"
    );
}

/// `tokenvend-sidecar --once` in `mode`: the first token or credentials written into `out`.
fn once(mode: &str, sa: &Path, out: &Path, url: &str) {
    let once = sidecar_cmd(mode, sa, out, url, &["--once"])
        .output()
        .expect("once");
    assert!(
        once.status.success(),
        "{}",
        String::from_utf8_lossy(&once.stderr)
    );
}

/// `tokenvend-sidecar probe` in web-identity mode over `out`, asking `min` seconds of validity.
fn probe_web_identity(out: &Path, min: &str) -> std::process::Output {
    Command::new(workspace_bin("tokenvend-sidecar"))
        .args([
            "probe",
            "--mode",
            "web-identity",
            "--min-valid-seconds",
            min,
        ])
        .arg("--out-dir")
        .arg(out)
        .output()
        .expect("probe")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_values_pass_the_startup_probe_and_stale_ones_do_not() {
    // tokenvend-sts issues tokens for as little as 60 s (TOKENVEND_TOKEN_TTL_SECONDS); the
    // webhook's default threshold is 300 s. Before, such a pod stayed in Init for ever.
    let addr = good_upstream(120).await;
    let sa = ProjectedToken::new("sa-token");
    let out = tempfile::tempdir().expect("out");
    let probe = || probe_web_identity(out.path(), "300");
    once(
        "web-identity",
        &sa.path(),
        out.path(),
        &format!("http://{addr}"),
    );
    let p = probe();
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));

    // An hour's token written 58 minutes ago, 2 minutes left: not enough to start an app with.
    let token = out.path().join("token");
    write_token_file(&token, now() + 120, Duration::from_secs(3480));
    let p = probe();
    assert!(!p.status.success());
    let said = String::from_utf8_lossy(&p.stderr);
    assert!(
        said.contains("less than the required 300 s") && !said.contains("half"),
        "{said}"
    );
    // A 2-minute token written 100 s ago, 20 s left: half its lifetime is asked, and said.
    write_token_file(&token, now() + 20, Duration::from_secs(100));
    let p = probe();
    assert!(!p.status.success());
    let said = String::from_utf8_lossy(&p.stderr);
    assert!(
        said.contains("less than the required 60 s (half its lifetime)"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_probe_and_start_up_reuse() {
    let addr = good_upstream(3600).await;
    let sa = ProjectedToken::new("sa-token");
    let out = tempfile::tempdir().expect("out");
    let url = format!("http://{addr}");
    let probe = |min: &str| probe_web_identity(out.path(), min);
    let p = probe("300");
    assert!(!p.status.success(), "no file yet");
    assert!(
        String::from_utf8_lossy(&p.stderr).contains("No such file"),
        "{}",
        String::from_utf8_lossy(&p.stderr)
    );
    once("web-identity", &sa.path(), out.path(), &url);
    assert!(probe("300").status.success());
    // More than an hour's token can hold: asked for half its lifetime instead.
    assert!(probe("7200").status.success());
    // A second --once reuses the still-valid file without calling the upstream (now down), and
    // removes the temp file a run killed mid-write left.
    let stale = out.path().join(".token.0123456789abcdef.tmp");
    std::fs::write(&stale, "eyJhbGciOiJFUzI1NiJ9.eyJleHAiOjE").expect("stale temp");
    let written = std::fs::metadata(out.path().join("token"))
        .expect("meta")
        .modified()
        .expect("mtime");
    let again = sidecar_cmd(
        "web-identity",
        &sa.path(),
        out.path(),
        "http://127.0.0.1:9",
        &["--once"],
    )
    .output()
    .expect("once");
    assert!(again.status.success());
    assert!(!stale.exists(), "the stale temp file is still there");
    assert!(
        String::from_utf8_lossy(&again.stdout).contains(".token.0123456789abcdef.tmp"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    assert_eq!(
        std::fs::metadata(out.path().join("token"))
            .expect("meta")
            .modified()
            .expect("mtime"),
        written
    );
    // --once against a dead upstream with nothing to reuse fails after its deadline, clearly.
    let empty = tempfile::tempdir().expect("empty");
    let t0 = Instant::now();
    let fail = sidecar_cmd(
        "web-identity",
        &sa.path(),
        empty.path(),
        "http://127.0.0.1:9",
        &["--once", "--once-deadline-seconds", "3"],
    )
    .output()
    .expect("once");
    assert!(!fail.status.success());
    assert!(t0.elapsed() < Duration::from_secs(8));
    let stderr = String::from_utf8_lossy(&fail.stderr);
    assert!(
        stderr.contains("no value from http://127.0.0.1:9 within 3s; the last exchange failed")
            && stderr.contains("exchange request failed"),
        "{stderr}"
    );
    // Bad flags are refused by name.
    let bad = sidecar_cmd("projected", &sa.path(), empty.path(), &url, &[])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--mode projected"));
    // A misspelt level is refused, not read as info.
    let bad = sidecar_cmd(
        "credentials",
        &sa.path(),
        empty.path(),
        &url,
        &["--log-level", "verbose"],
    )
    .output()
    .expect("run");
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("--log-level (TOKENVEND_LOG_LEVEL): log level \"verbose\""),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let bad = sidecar_cmd(
        "credentials",
        &sa.path(),
        empty.path(),
        &url,
        &["--listen", "0.0.0.0:9911"],
    )
    .output()
    .expect("run");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("loopback"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn between_refreshes_the_upstream_is_left_alone() {
    // An hour's token: the next exchange is half an hour away. Each answer but the last is
    // taken off the script as it is given, so two left means one was asked for.
    let script = Arc::new(std::sync::Mutex::new(vec!["good", "500", "500"]));
    let addr = scripted_upstream(script.clone(), 3600, Arc::default()).await;
    let sa = ProjectedToken::new("sa-token");
    // A private CA given for a plain-http upstream: nothing to follow, so no GET /ca-bundle
    // (which this upstream would answer 404).
    let (ca, _, _) = tls::ca("unused");
    let pem = ca.pem();
    let sc = start_sidecar_with_env(
        "web-identity",
        &sa.path(),
        &format!("http://{addr}"),
        &[],
        &[("TOKENVEND_CA_PEM", pem.as_ref())],
    );
    sc.wait_file("token");
    assert!(sc.logged("refreshed"), "{}", sc.logs());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        script.lock().expect("script").len(),
        2,
        "asked again: {}",
        sc.logs()
    );
    assert!(!sc.file("last-error").exists(), "{}", sc.logs());
    let logs = sc.logs();
    assert!(
        !logs.contains("CA bundle") && !logs.contains("removed temp files"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_file_from_a_previous_run_is_replaced_not_reused() {
    let addr = good_upstream(3600).await;
    let sa = ProjectedToken::new("sa-token");
    let out = tempfile::tempdir().expect("out");
    write_token_file(
        &out.path().join("token"),
        now() - 10,
        Duration::from_secs(3610),
    );
    let run = sidecar_cmd(
        "web-identity",
        &sa.path(),
        out.path(),
        &format!("http://{addr}"),
        &["--once"],
    )
    .output()
    .expect("once");
    let logs = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{logs}");
    assert!(
        logs.contains("the existing file has expired; exchanging now") && !logs.contains("reusing"),
        "{logs}"
    );
    let exp = jwt_exp(&std::fs::read_to_string(out.path().join("token")).expect("token"));
    assert!(exp > now() + 3000, "still the expired token: {exp}");
}

/// Run an unmodified client with exactly `env` (plus PATH and a private HOME); returns its ARN.
fn client_arn(client: &str, env: &[(&str, String)]) -> String {
    let home = tempfile::tempdir().expect("home");
    let mut cmd = match client {
        "boto3" => {
            let mut c = Command::new(venv_bin("python"));
            c.args([
                "-c",
                "import boto3; print(boto3.client('sts').get_caller_identity()['Arn'])",
            ]);
            c
        }
        _ => {
            let mut c = Command::new(venv_bin("aws"));
            c.args([
                "sts",
                "get-caller-identity",
                "--query",
                "Arn",
                "--output",
                "text",
            ]);
            c
        }
    };
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("client");
    assert!(
        out.status.success(),
        "{client}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn unmodified_boto3_and_aws_cli_use_every_sidecar_output() {
    let moto = Moto::start();
    let cluster = Cluster::new();
    let sts = tokenvend_testkit::Sts::start(&moto, &cluster, &[]);
    let sa =
        ProjectedToken::new(&cluster.token("shop", "orders", Some("orders-1"), "tokenvend", 3600));
    let url = format!("http://{}", sts.addr);
    let web = start_sidecar("web-identity", &sa.path(), &url, &[]);
    let listen = format!("127.0.0.1:{}", free_port());
    let creds = start_sidecar("credentials", &sa.path(), &url, &["--listen", &listen]);
    web.wait_file("token");
    creds.wait_file("credentials.json");
    let config = tempfile::NamedTempFile::new().expect("config");
    std::fs::write(
        config.path(),
        format!(
            "[default]\ncredential_process = cat {}\n",
            creds.file("credentials.json").display()
        ),
    )
    .expect("write");
    let common = |extra: Vec<(&'static str, String)>| {
        let mut v = vec![
            ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ENDPOINT_URL_STS", moto.url()),
        ];
        v.extend(extra);
        v
    };
    let cases = [
        (
            "web-identity file",
            common(vec![
                (
                    "AWS_ROLE_ARN",
                    "arn:aws:iam::123456789012:role/orders-writer".into(),
                ),
                (
                    "AWS_WEB_IDENTITY_TOKEN_FILE",
                    web.file("token").display().to_string(),
                ),
                ("AWS_ROLE_SESSION_NAME", "orders-1".into()),
            ]),
            "arn:aws:sts::123456789012:assumed-role/orders-writer/orders-1",
        ),
        (
            "container-credentials endpoint",
            common(vec![
                (
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    format!("http://{listen}/credentials"),
                ),
                (
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    creds.file("auth-token").display().to_string(),
                ),
            ]),
            "arn:aws:sts::123456789012:assumed-role/tvm/shop.orders",
        ),
        (
            "credential_process file",
            common(vec![(
                "AWS_CONFIG_FILE",
                config.path().display().to_string(),
            )]),
            "arn:aws:sts::123456789012:assumed-role/tvm/shop.orders",
        ),
    ];
    for (what, env, want) in &cases {
        for client in ["boto3", "aws-cli"] {
            assert_eq!(&client_arn(client, env), want, "{client} via {what}");
        }
    }
}

/// Poll `cond` every 100 ms for up to `secs`; panic with `what` and `logs()` if it never holds.
fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool, logs: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: {}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_sidecar_follows_the_exchange_ca_through_a_rotation_and_keeps_it_across_a_restart() {
    // The certs job's rotation, step by step, against the real tokenvend-sts over TLS: the new
    // CA is added to the bundle beside the old, the serving certificate moves to the new CA,
    // the old CA is dropped. The pod's env keeps the admission's bundle (the old CA) throughout.
    let moto = Moto::start();
    let cluster = Cluster::new();
    let certs = tempfile::tempdir().expect("certs");
    let (old_ca, _, old_issuer) = tls::ca("old");
    let (new_ca, _, new_issuer) = tls::ca("new");
    let (stranger, _, _) = tls::ca("stranger");
    tls::install(certs.path(), &tls::leaf(&old_ca, &old_issuer));
    let bundle = |pem: &str| {
        let tmp = certs.path().join(".ca.crt.tmp");
        std::fs::write(&tmp, pem).expect("write");
        std::fs::rename(&tmp, certs.path().join("ca.crt")).expect("rename");
    };
    bundle(&old_ca.pem());
    let file = |name: &str| certs.path().join(name).display().to_string();
    let sts = tokenvend_testkit::Sts::start(
        &moto,
        &cluster,
        &[
            ("TOKENVEND_ALLOW_SHORT_SESSIONS", "true".into()),
            ("TOKENVEND_TOKEN_TTL_SECONDS", "4".into()),
            ("TOKENVEND_VALIDATION_CACHE_SECONDS", "0".into()),
            ("TOKENVEND_TLS_CERT", file("tls.crt")),
            ("TOKENVEND_TLS_KEY", file("tls.key")),
            ("TOKENVEND_CERT_RELOAD_SECONDS", "1".into()),
            ("TOKENVEND_CA_BUNDLE_FILE", file("ca.crt")),
        ],
    );
    let sa =
        ProjectedToken::new(&cluster.token("shop", "orders", Some("orders-1"), "tokenvend", 3600));
    let url = format!("https://localhost:{}", sts.addr.port());
    let old_pem = old_ca.pem();
    let admitted: [(&str, &std::ffi::OsStr); 1] = [("TOKENVEND_CA_PEM", old_pem.as_ref())];
    let out = tempfile::tempdir().expect("out");
    let start = |out: &Path| {
        let mut child = sidecar_cmd("web-identity", &sa.path(), out, &url, &[])
            .envs(admitted)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sidecar");
        let logs = capture_output(&mut child);
        (Proc(child), logs)
    };
    let joined = |logs: &Arc<std::sync::Mutex<Vec<String>>>| logs.lock().expect("logs").join("\n");
    let kept = |out: &Path| std::fs::read_to_string(out.join("exchange-ca.pem")).ok();
    let token_exp =
        |out: &Path| std::fs::read_to_string(out.join("token")).map_or(0, |t| jwt_exp(&t));

    let (sidecar, logs) = start(out.path());
    wait_for(
        "first token",
        20,
        || token_exp(out.path()) > 0,
        || joined(&logs),
    );
    assert_eq!(
        kept(out.path()),
        None,
        "nothing to keep while the bundle is the pod's"
    );

    // 1. The new CA beside the old: taken at the next refresh (every 2 s) and kept.
    let both = format!("{}{}", new_ca.pem(), old_ca.pem());
    bundle(&both);
    wait_for(
        "both CAs kept",
        15,
        || kept(out.path()).as_deref() == Some(&both),
        || joined(&logs),
    );

    // 2. The serving certificate moves to the new CA: refreshes go on.
    tls::install(certs.path(), &tls::leaf(&new_ca, &new_issuer));
    std::thread::sleep(Duration::from_secs(2));
    let after_move = token_exp(out.path());
    wait_for(
        "a refresh from the new CA's server",
        15,
        || token_exp(out.path()) > after_move,
        || joined(&logs),
    );

    // 3. A bundle that would not trust the server: refused, once, and nothing changes.
    bundle(&stranger.pem());
    std::thread::sleep(Duration::from_secs(7));
    let refused = joined(&logs)
        .matches("not taking the CA bundle it serves")
        .count();
    assert_eq!(refused, 1, "{}", joined(&logs));
    assert_eq!(kept(out.path()).as_deref(), Some(both.as_str()));

    // 4. The old CA dropped: only the new one kept.
    bundle(&new_ca.pem());
    wait_for(
        "the new CA alone kept",
        15,
        || kept(out.path()) == Some(new_ca.pem()),
        || joined(&logs),
    );
    let refreshed = token_exp(out.path());
    wait_for(
        "a refresh on the new CA alone",
        15,
        || token_exp(out.path()) > refreshed,
        || joined(&logs),
    );
    assert!(joined(&logs).contains("the CA bundle tokenvend-sts serves is usable again"));
    assert!(
        !joined(&logs).contains("refresh failed"),
        "{}",
        joined(&logs)
    );
    drop(sidecar);

    // 5. The container restarts with the admission's env (the old CA only): it starts from the
    // bundle it kept. A sidecar without that file, the control, cannot reach the server at all.
    let before = token_exp(out.path());
    let (_restarted, logs) = start(out.path());
    wait_for(
        "a refresh after the restart",
        15,
        || token_exp(out.path()) > before,
        || joined(&logs),
    );
    assert!(
        joined(&logs).contains("a previous run took from tokenvend-sts"),
        "{}",
        joined(&logs)
    );
    let fresh = tempfile::tempdir().expect("fresh");
    let (_control, control_logs) = start(fresh.path());
    wait_for(
        "the control's failure",
        15,
        || joined(&control_logs).contains("refresh failed"),
        || joined(&control_logs),
    );
    assert!(
        joined(&control_logs).contains("UnknownIssuer"),
        "{}",
        joined(&control_logs)
    );
    assert_eq!(token_exp(fresh.path()), 0);
}

#[test]
fn a_setting_naming_an_endless_file_is_an_error_not_a_read_until_memory_runs_out() {
    let out = tempfile::tempdir().expect("tmp");
    // Each run must end on its own, refused, saying why.
    let refused = |token: &Path, endpoint: &str, args: &[&str], expected: &str| {
        let o = output_within(
            &mut sidecar_cmd("web-identity", token, out.path(), endpoint, args),
            Duration::from_secs(20),
        );
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!o.status.success(), "{said}");
        assert!(said.contains(expected), "{said}");
    };
    // Nothing listens at port 9: no exchange could succeed anyway; the token is what fails.
    refused(
        Path::new("/dev/zero"),
        "http://127.0.0.1:9",
        &["--once", "--once-deadline-seconds", "2"],
        "service-account token /dev/zero: larger than 1024 KiB",
    );
    let sa = out.path().join("sa");
    std::fs::write(&sa, "token").expect("write");
    refused(
        &sa,
        "https://127.0.0.1:9",
        &["--once", "--ca-file", "/dev/zero"],
        "--ca-file /dev/zero: larger than 1024 KiB",
    );
    // A terminal has nothing to read: refused at once, not waited on.
    refused(
        &sa,
        "https://127.0.0.1:9",
        &["--once", "--ca-file", "/dev/ptmx"],
        "--ca-file /dev/ptmx: a device waiting for input, not a file",
    );
}

/// `tokenvend-sidecar wait` (the classic-style postStart hook) over `out`, for up to `secs`.
fn wait_hook(out: &Path, listen: &str, secs: &str) -> Child {
    Command::new(workspace_bin("tokenvend-sidecar"))
        .env_clear()
        .args(["wait", "--listen", listen, "--wait-seconds", secs])
        .arg("--out-dir")
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wait")
}

#[test]
fn the_wait_hook_holds_until_the_endpoint_serves_and_says_why_it_does_not() {
    // A classic-style pod in credentials mode: the init container (--once) writes the first
    // credentials; the regular sidecar, started later, serves them; the hook waits in between.
    let moto = Moto::start();
    let cluster = Cluster::new();
    let sts = tokenvend_testkit::Sts::start(&moto, &cluster, &[]);
    let sa = ProjectedToken::new(&cluster.token("shop", "orders", None, "tokenvend", 3600));
    let out = tempfile::tempdir().expect("out");
    let url = format!("http://{}", sts.addr);
    once("credentials", &sa.path(), out.path(), &url);
    let secret = serde_json::from_slice::<Value>(
        &std::fs::read(out.path().join("credentials.json")).expect("credentials"),
    )
    .expect("JSON")["SecretAccessKey"]
        .as_str()
        .expect("secret")
        .to_owned();
    let listen = format!("127.0.0.1:{}", free_port());

    // Nothing listens yet: the hook keeps asking, and only the sidecar's start ends it. The
    // sidecar needs no exchange to serve (its upstream here is dead): it reuses the init's file.
    let mut hook = wait_hook(out.path(), &listen, "30");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        hook.try_wait().expect("wait").is_none(),
        "the hook did not wait"
    );
    let mut regular = sidecar_cmd(
        "credentials",
        &sa.path(),
        out.path(),
        "http://127.0.0.1:9",
        &["--listen", &listen],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("sidecar");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = hook.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the hook never ended"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let said = hook.wait_with_output().expect("output");
    assert!(
        status.success(),
        "{}",
        String::from_utf8_lossy(&said.stderr)
    );
    assert!(
        said.stdout.is_empty() && said.stderr.is_empty(),
        "silent on success"
    );

    // Another pod's endpoint on the port (a hostNetwork pod's neighbour) refuses this pod's
    // token: not served, and the hook says so when its time is up.
    let other = tempfile::tempdir().expect("other");
    std::fs::write(
        other.path().join("auth-token"),
        "0123456789abcdef".repeat(4),
    )
    .expect("token");
    let t0 = Instant::now();
    let refused = wait_hook(other.path(), &listen, "1")
        .wait_with_output()
        .expect("output");
    assert_eq!(refused.status.code(), Some(1));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(
        text.contains(&format!(
            "wait: the credentials endpoint http://{listen}/credentials did not serve within 1 s: \
             HTTP 401: wrong Authorization"
        )),
        "{text}"
    );
    let _ = regular.kill();
    let _ = regular.wait();

    // Nothing listens, and the last exchange failed: both are said; no secret ever is.
    std::fs::write(
        out.path().join("last-error"),
        "HTTP 503: STS is down (3 in a row)",
    )
    .expect("last-error");
    let dead = wait_hook(out.path(), &listen, "1")
        .wait_with_output()
        .expect("output");
    assert_eq!(dead.status.code(), Some(1));
    let text = String::from_utf8_lossy(&dead.stderr);
    assert!(
        text.contains("did not serve within 1 s")
            && text.contains("Connection refused")
            && text.contains("the last exchange failed")
            && text.contains("STS is down"),
        "{text}"
    );
    for output in [&said, &refused, &dead] {
        for stream in [&output.stdout, &output.stderr] {
            assert!(!String::from_utf8_lossy(stream).contains(&secret));
        }
    }
}

#[test]
fn the_wait_hook_ends_on_time_when_the_endpoint_never_answers() {
    // A listener that takes connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = silent.local_addr().expect("addr").to_string();
    let out = tempfile::tempdir().expect("out");
    std::fs::write(out.path().join("auth-token"), "0123456789abcdef".repeat(4)).expect("token");
    let t0 = Instant::now();
    let hung = wait_hook(out.path(), &listen, "1")
        .wait_with_output()
        .expect("output");
    let took = t0.elapsed();
    assert_eq!(hung.status.code(), Some(1));
    assert!(took < Duration::from_millis(1900), "{took:?}");
    let text = String::from_utf8_lossy(&hung.stderr);
    assert!(
        text.contains("did not serve within 1 s") && text.contains("timed out"),
        "{text}"
    );
}
