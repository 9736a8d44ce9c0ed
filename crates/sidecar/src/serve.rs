//! The loopback container-credentials endpoint (credentials mode): `GET <path>` with the
//! auth token in `Authorization` → `{AccessKeyId, SecretAccessKey, Token, Expiration}`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tokio::sync::watch;

use crate::exchange::{Value, now};

/// What the endpoint serves from.
pub struct Served {
    /// Expected `Authorization` value.
    pub auth_token: String,
    /// HTTP path.
    pub path: String,
    /// The current value.
    pub current: watch::Receiver<Option<Value>>,
    /// The shared directory, where the last exchange failure is kept.
    pub out_dir: PathBuf,
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Equal-length comparison that does not stop at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The answer to a request without `Authorization`: its client does not read the token file.
/// SDKs put the body in the error the app sees, so it says which versions do.
pub const NO_AUTHORIZATION: &str = "no Authorization header: this AWS SDK or client does not \
    read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, which AWS SDKs read since November 2023 \
    (botocore 1.32.0, boto3 1.29.0; for the other SDKs, the versions AWS lists for EKS Pod \
    Identity, which uses the same variable). Upgrade it, or give the pod the web-identity mode";

/// The answer to a request with another `Authorization` than the token file's.
pub const WRONG_AUTHORIZATION: &str =
    "wrong Authorization: not the token in AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE";

/// Answer one request: the credentials, or the status and why not.
pub fn answer<B>(s: &Served, req: &Request<B>) -> Result<serde_json::Value, (StatusCode, String)> {
    if req.uri().path() != s.path {
        return Err((StatusCode::NOT_FOUND, "not found".to_owned()));
    }
    if req.method() != hyper::Method::GET {
        return Err((StatusCode::METHOD_NOT_ALLOWED, "GET only".to_owned()));
    }
    let Some(auth) = req.headers().get(hyper::header::AUTHORIZATION) else {
        return Err((StatusCode::UNAUTHORIZED, NO_AUTHORIZATION.to_owned()));
    };
    if !same(auth.as_bytes(), s.auth_token.as_bytes()) {
        return Err((StatusCode::UNAUTHORIZED, WRONG_AUTHORIZATION.to_owned()));
    }
    let what = match &*s.current.borrow() {
        Some(v @ Value::Credentials(c)) if v.expires_at().is_some_and(|e| e > now()) => {
            return Ok(json!({
                "AccessKeyId": c.access_key_id,
                "SecretAccessKey": c.secret_access_key,
                "Token": c.session_token,
                "Expiration": c.expiration,
            }));
        }
        Some(Value::Credentials(c)) => format!("the credentials expired at {}", c.expiration),
        _ => "no credentials yet".to_owned(),
    };
    // SDKs put this body in the error the app sees (boto3: "Received non 200 response (503)
    // from container metadata: ..."), so it says why, as the startup probe does.
    let error = crate::outputs::with_last_failure(&s.out_dir, what);
    Err((StatusCode::SERVICE_UNAVAILABLE, error))
}

/// Serve on `addr` (loopback) until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, served: Arc<Served>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let served = served.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let r = match answer(&served, &req) {
                    Ok(credentials) => json_response(StatusCode::OK, credentials),
                    Err((status, error)) => {
                        tracing::warn!(status = status.as_u16(), %peer, error, "credentials request refused");
                        json_response(status, json!({ "error": error }))
                    }
                };
                async move { Ok::<_, Infallible>(r) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .serve_connection(io, svc);
            let _ = conn.await;
        });
    }
}

/// The endpoint's address, refused unless on the loopback: its auth token never leaves the pod.
pub fn loopback_only(addr: SocketAddr) -> Result<SocketAddr, String> {
    if !addr.ip().is_loopback() {
        return Err(format!(
            "--listen {addr}: the credentials endpoint must be on a loopback address"
        ));
    }
    Ok(addr)
}

/// Bind the endpoint; only loopback addresses are accepted.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    loopback_only(addr)?;
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            // A pod's own loopback is empty but for its containers; the node's is shared.
            " (something else in this network namespace listens there: in a hostNetwork pod, \
             another pod on this node in credentials mode; use web-identity mode for such pods)"
        } else {
            ""
        };
        format!("--listen {addr}: {e}{hint}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_port_says_who_may_hold_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let e = bind(addr).await.expect_err("port is taken");
        assert!(
            e.starts_with(&format!("--listen {addr}: ")) && e.contains("hostNetwork pod"),
            "{e}"
        );
        drop(taken);
        bind(addr).await.expect("free again");
        let e = bind("0.0.0.0:9911".parse().expect("addr"))
            .await
            .expect_err("not loopback");
        assert!(e.contains("loopback") && !e.contains("hostNetwork"), "{e}");
    }

    #[test]
    fn only_live_credentials_are_served_and_only_with_the_token() {
        use tokenvend_core::creds::VendedCredentials;
        let dir = tempfile::tempdir().expect("tmp");
        let creds = |expiration: &str| {
            Some(Value::Credentials(VendedCredentials {
                access_key_id: "AK".into(),
                secret_access_key: "SK".into(),
                session_token: "ST".into(),
                expiration: expiration.into(),
            }))
        };
        let live = tokenvend_core::clock::rfc3339(now() + 600);
        let (tx, current) = watch::channel(creds(&live));
        let served = Served {
            auth_token: "secret-token".into(),
            path: "/credentials".into(),
            current,
            out_dir: dir.path().to_owned(),
        };
        let get = |method: &str, path: &str, auth: Option<&str>| {
            let mut req = Request::builder().method(method).uri(path);
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            answer(&served, &req.body(()).expect("request"))
        };
        let ok = get("GET", "/credentials", Some("secret-token")).expect("live credentials");
        assert_eq!(ok["AccessKeyId"], "AK");
        assert_eq!(ok["SecretAccessKey"], "SK");
        assert_eq!(ok["Token"], "ST");
        assert_eq!(ok["Expiration"], live.as_str());

        let refused = |method, path, auth, status: StatusCode, why: &str| {
            let (got, message) = get(method, path, auth).expect_err("refused");
            assert_eq!(got, status, "{message}");
            assert!(message.starts_with(why), "{message}");
        };
        refused(
            "GET",
            "/other",
            Some("secret-token"),
            StatusCode::NOT_FOUND,
            "not found",
        );
        refused(
            "POST",
            "/credentials",
            Some("secret-token"),
            StatusCode::METHOD_NOT_ALLOWED,
            "GET only",
        );
        refused(
            "GET",
            "/credentials",
            None,
            StatusCode::UNAUTHORIZED,
            NO_AUTHORIZATION,
        );
        refused(
            "GET",
            "/credentials",
            Some("secret-tokeN"),
            StatusCode::UNAUTHORIZED,
            WRONG_AUTHORIZATION,
        );

        // Expired (the refresher kept failing) or not there yet: 503 saying which.
        let expired = tokenvend_core::clock::rfc3339(now() - 1);
        tx.send_replace(creds(&expired));
        let why = format!("the credentials expired at {expired}");
        refused(
            "GET",
            "/credentials",
            Some("secret-token"),
            StatusCode::SERVICE_UNAVAILABLE,
            &why,
        );
        tx.send_replace(creds(&tokenvend_core::clock::rfc3339(now())));
        refused(
            "GET",
            "/credentials",
            Some("secret-token"),
            StatusCode::SERVICE_UNAVAILABLE,
            "the credentials expired at",
        );
        tx.send_replace(None);
        refused(
            "GET",
            "/credentials",
            Some("secret-token"),
            StatusCode::SERVICE_UNAVAILABLE,
            "no credentials yet",
        );
    }

    #[test]
    fn constant_time_compare() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert!(!same(b"", b"a"));
        // Two differences that cancel out under XOR must still count.
        assert!(!same(b"ab", b"ba"));
    }
}
