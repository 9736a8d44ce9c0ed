//! One exchange with tokenvend-sts: read the projected SA token (fresh each time: the kubelet
//! rotates it by swapping a symlink), POST it, check the answer before anything is written.

use std::path::Path;
use std::time::Duration;

use tokenvend_core::Mode;
use tokenvend_core::claims::unverified_exp;
use tokenvend_core::clock::parse_rfc3339;
use tokenvend_core::creds::{ErrorBody, ExchangeRequest, VendedCredentials, VendedToken};

/// A fresh value from the exchange.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// A web-identity JWT.
    Token(VendedToken),
    /// Scoped credentials.
    Credentials(VendedCredentials),
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Token(t) => t.fmt(f),
            Value::Credentials(c) => c.fmt(f),
        }
    }
}

/// Why an exchange failed (safe to log: no token, no secret).
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The SA token file could not be read or is empty.
    #[error("service-account token {path}: {reason}")]
    SaToken {
        /// Path.
        path: String,
        /// Why.
        reason: String,
    },
    /// Network, TLS or timeout.
    #[error("exchange request failed: {0}")]
    Transport(String),
    /// Non-200 answer.
    #[error("exchange answered HTTP {status}: {reason}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The service's reason.
        reason: String,
    },
    /// 200 but not a usable value.
    #[error("exchange answer unusable: {0}")]
    Invalid(String),
}

pub use tokenvend_core::clock::now;

impl Value {
    /// Expiry, Unix seconds.
    pub fn expires_at(&self) -> Option<i64> {
        match self {
            Value::Token(t) => unverified_exp(&t.token).ok(),
            Value::Credentials(c) => parse_rfc3339(&c.expiration),
        }
    }

    /// Check a value before it may replace the current one.
    pub fn check(self, now: i64) -> Result<Value, ExchangeError> {
        match &self {
            Value::Token(t) => {
                if t.token.is_empty()
                    || t.token.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(ExchangeError::Invalid(
                        "token is empty or contains whitespace".into(),
                    ));
                }
                if unverified_exp(&t.token).is_err() {
                    return Err(ExchangeError::Invalid("token is not a JWT with exp".into()));
                }
            }
            Value::Credentials(c) => {
                if [&c.access_key_id, &c.secret_access_key, &c.session_token]
                    .iter()
                    .any(|v| v.is_empty())
                {
                    return Err(ExchangeError::Invalid(
                        "credentials with an empty field".into(),
                    ));
                }
                if parse_rfc3339(&c.expiration).is_none() {
                    return Err(ExchangeError::Invalid(format!(
                        "Expiration {:?} is not RFC 3339",
                        c.expiration
                    )));
                }
            }
        }
        match self.expires_at() {
            Some(exp) if exp > now => Ok(self),
            _ => Err(ExchangeError::Invalid("value is already expired".into())),
        }
    }
}

/// HTTP client of the exchange.
pub struct Exchanger {
    client: reqwest::Client,
    /// The CAs `client` trusts; `None` for the system roots.
    roots: Option<Vec<reqwest::Certificate>>,
    url: String,
    ca_bundle_url: String,
    host: String,
    timeout: Duration,
    mode: Mode,
    role_arn: Option<String>,
}

/// What `GET /ca-bundle` answered.
pub enum CaBundle {
    /// The bundle, and the certificate (DER) the server presented on the connection.
    Served {
        /// PEM.
        pem: Vec<u8>,
        /// The server's leaf certificate, when the connection was TLS.
        server_cert: Option<Vec<u8>>,
    },
    /// 404: this tokenvend-sts serves no bundle (an older version, or no TOKENVEND_CA_BUNDLE_FILE).
    NotServed,
}

/// Largest answer accepted from the exchange.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

impl Exchanger {
    /// Client for `base_url` trusting `ca_pem` (or the system roots), `timeout` per call.
    pub fn new(
        base_url: &str,
        mode: Mode,
        role_arn: Option<String>,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let roots = ca_pem.map(certificates).transpose()?;
        let client = client(roots.as_deref(), timeout)?;
        let path = match mode {
            Mode::Credentials => "/credentials",
            _ => "/token",
        };
        let base = base_url.trim_end_matches('/');
        let host = reqwest::Url::parse(base)
            .map_err(|e| format!("{base}: {e}"))?
            .host_str()
            .ok_or_else(|| format!("{base}: no host"))?
            .to_owned();
        Ok(Exchanger {
            client,
            roots,
            url: format!("{base}{path}"),
            ca_bundle_url: format!("{base}/ca-bundle"),
            host,
            timeout,
            mode,
            role_arn,
        })
    }

    /// The exchange's host name or address, as its certificate must name it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Trust `ca_pem` from the next request on.
    pub fn trust(&mut self, ca_pem: &[u8]) -> Result<(), String> {
        let roots = certificates(ca_pem)?;
        self.client = client(Some(&roots), self.timeout)?;
        self.roots = Some(roots);
        Ok(())
    }

    /// `GET /ca-bundle` on a new connection: the CA bundle tokenvend-sts says its clients
    /// should trust, and the certificate it serves now (a pooled connection could predate a
    /// certificate change, and so a bundle that no longer trusts its certificate). The client
    /// is built for this one request and dropped with it: looks are rare (one per refresh).
    pub async fn fetch_ca_bundle(&self) -> Result<CaBundle, String> {
        let one_shot = builder(self.roots.as_deref(), self.timeout)
            .pool_max_idle_per_host(0)
            .tls_info(true)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let mut resp = one_shot
            .get(&self.ca_bundle_url)
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        let server_cert = resp
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|t| t.peer_certificate())
            .map(<[u8]>::to_vec);
        let status = resp.status().as_u16();
        if status == 404 {
            return Ok(CaBundle::NotServed);
        }
        let pem = read_body(&mut resp, tokenvend_core::cabundle::MAX_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("HTTP {status}: {}", error_reason(&pem)));
        }
        Ok(CaBundle::Served { pem, server_cert })
    }

    /// One exchange.
    pub async fn fetch(&self, sa_token_file: &Path) -> Result<Value, ExchangeError> {
        let sa_err = |reason: String| ExchangeError::SaToken {
            path: sa_token_file.display().to_string(),
            reason,
        };
        // Projected tokens are a few KiB; the limit turns a wrong path into an error, not an OOM.
        let path = sa_token_file.to_owned();
        let token = tokio::task::spawn_blocking(move || {
            tokenvend_core::limited::read_to_string(&path, tokenvend_core::limited::MAX_BYTES)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|read| read)
        .map_err(|e| sa_err(e.to_string()))?;
        let token = token.trim();
        if token.is_empty() {
            return Err(sa_err("empty".into()));
        }
        let body = ExchangeRequest {
            role_arn: self.role_arn.clone(),
        };
        let mut resp = self
            .client
            .post(&self.url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .map_err(|e| ExchangeError::Transport(error_chain(&e)))?;
        let status = resp.status().as_u16();
        let bytes = read_body(&mut resp, MAX_ANSWER_BYTES).await?;
        if status != 200 {
            return Err(ExchangeError::Status {
                status,
                reason: error_reason(&bytes),
            });
        }
        let value = match self.mode {
            Mode::Credentials => serde_json::from_slice(&bytes).map(Value::Credentials),
            _ => serde_json::from_slice(&bytes).map(Value::Token),
        }
        .map_err(|e| ExchangeError::Invalid(format!("not the expected JSON: {e}")))?;
        value.check(now())
    }
}

/// The body of `resp`, refused once it grows past `limit` bytes.
async fn read_body(resp: &mut reqwest::Response, limit: usize) -> Result<Vec<u8>, ExchangeError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ExchangeError::Transport(error_chain(&e)))?
    {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > limit {
            return Err(ExchangeError::Invalid(format!(
                "answer larger than {} KiB",
                limit / 1024
            )));
        }
    }
    Ok(bytes)
}

/// The reason in an error answer: tokenvend-sts's `{"error": ...}`, else the start of the body.
fn error_reason(body: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}

/// The certificates of the PEM bundle `pem`, at least one.
fn certificates(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, String> {
    let certs =
        reqwest::Certificate::from_pem_bundle(pem).map_err(|e| format!("CA bundle: {e}"))?;
    if certs.is_empty() {
        return Err("CA bundle has no certificate".into());
    }
    Ok(certs)
}

/// A client builder trusting `roots` only (or the system roots).
fn builder(roots: Option<&[reqwest::Certificate]>, timeout: Duration) -> reqwest::ClientBuilder {
    let b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("tokenvend-sidecar/", env!("CARGO_PKG_VERSION")));
    match roots {
        Some(roots) => b.tls_certs_only(roots.to_vec()),
        None => b,
    }
}

/// The pooled client of the exchanges.
fn client(
    roots: Option<&[reqwest::Certificate]>,
    timeout: Duration,
) -> Result<reqwest::Client, String> {
    builder(roots, timeout)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// An error with its causes (`connection refused` is a cause, not the error).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(exp: i64) -> String {
        use base64::Engine;
        let p =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{{\"exp\":{exp}}}"));
        format!("eyJhbGciOiJFUzI1NiJ9.{p}.c2ln")
    }

    #[test]
    fn values_are_checked_before_use() {
        let ok = Value::Token(VendedToken {
            token: jwt(2000),
            expiration: String::new(),
        });
        assert!(ok.clone().check(1000).is_ok());
        assert!(ok.clone().check(1999).is_ok());
        assert_eq!(ok.expires_at(), Some(2000));
        assert!(ok.clone().check(2000).is_err(), "expires this second");
        assert!(ok.check(3000).is_err(), "expired");
        // A JWT with exp whose signature part holds a space, a line break or a control
        // character would be written into the token file as it is: refused.
        let with = |c: char| jwt(2000).replacen("c2", &format!("c{c}2"), 1);
        for bad in [
            "".into(),
            "a.b".into(),
            "x y.z.w".into(),
            "garbage".into(),
            with(' '),
            with('\n'),
            with('\u{1}'),
            with('\u{7f}'),
        ] {
            assert!(
                Value::Token(VendedToken {
                    token: bad.clone(),
                    expiration: String::new()
                })
                .check(0)
                .is_err(),
                "{bad:?}"
            );
        }
        let creds = |k: &str, exp: &str| {
            Value::Credentials(VendedCredentials {
                access_key_id: k.into(),
                secret_access_key: "s".into(),
                session_token: "t".into(),
                expiration: exp.into(),
            })
        };
        assert!(
            creds("AK", "2026-11-24T05:45:47Z")
                .check(1_795_499_000)
                .is_ok()
        );
        assert!(creds("", "2026-11-24T05:45:47Z").check(0).is_err());
        assert!(creds("AK", "soon").check(0).is_err());
        assert!(
            creds("AK", "2026-11-24T05:45:47Z")
                .check(1_795_499_200)
                .is_err()
        );
        let dbg = format!("{:?}", creds("AK", "x"));
        assert!(!dbg.contains("\"s\"") && !dbg.contains("\"t\""), "{dbg}");
        assert!(
            dbg.contains("\"AK\"") && dbg.contains("<redacted>"),
            "{dbg}"
        );
        let dbg = format!(
            "{ok:?}",
            ok = Value::Token(VendedToken {
                token: jwt(2000),
                expiration: "E".into()
            })
        );
        assert!(!dbg.contains(&jwt(2000)) && dbg.contains("\"E\""), "{dbg}");
    }

    #[tokio::test]
    async fn an_answer_of_exactly_64_kib_is_taken_and_one_byte_more_refused() {
        use std::sync::{Arc, Mutex};
        // tokenvend-sts's answer padded with JSON whitespace to the length asked for.
        let size = Arc::new(Mutex::new(0usize));
        let token = jwt(now() + 3600);
        let (asked, answer_token) = (size.clone(), token.clone());
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(move || {
                let len = *asked.lock().expect("size");
                let mut body =
                    serde_json::json!({"token": answer_token, "expiration": "E"}).to_string();
                body.push_str(&" ".repeat(len - body.len()));
                async move { body }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().expect("tmp");
        let sa = dir.path().join("token");
        std::fs::write(&sa, "sa-token").expect("write");
        let ex = Exchanger::new(&url, Mode::WebIdentity, None, None, Duration::from_secs(5))
            .expect("client");

        *size.lock().expect("size") = 64 * 1024;
        match ex.fetch(&sa).await {
            Ok(Value::Token(t)) => assert_eq!(t.token, token),
            other => panic!("{other:?}"),
        }
        *size.lock().expect("size") = 64 * 1024 + 1;
        match ex.fetch(&sa).await {
            Err(ExchangeError::Invalid(m)) => assert_eq!(m, "answer larger than 64 KiB"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_ca_bundle_gives_each_of_its_certificates_and_an_empty_one_is_an_error() {
        use tokenvend_testkit::tls::ca;
        let bundle = [ca("one").0.pem(), ca("two").0.pem()].concat();
        assert_eq!(certificates(bundle.as_bytes()).expect("bundle").len(), 2);
        for (bad, want) in [
            ("", "CA bundle has no certificate"),
            ("not PEM at all", "CA bundle has no certificate"),
        ] {
            let e = certificates(bad.as_bytes()).expect_err(bad);
            assert_eq!(e, want, "{bad:?}");
        }
    }
}
