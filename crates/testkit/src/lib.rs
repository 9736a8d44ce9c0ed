//! Test harness shared by the integration tests: moto's real STS server, a "cluster" signing
//! key minting service-account tokens, the real tokenvend binaries, and a kube-apiserver
//! TokenReview stand-in. Test code: panics on setup failure are the point.
#![allow(missing_docs, clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{Jwk, JwkSet, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

pub const CLUSTER_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
pub const ROLE: &str = "arn:aws:iam::123456789012:role/tvm";

/// Collect a child's piped stdout and stderr, line by line, as they come.
pub fn capture_output(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let logs = Arc::new(Mutex::new(Vec::new()));
    let streams: [Option<Box<dyn std::io::Read + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ];
    for stream in streams.into_iter().flatten() {
        let sink = logs.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().expect("logs").push(line);
            }
        });
    }
    logs
}

/// Run `cmd` to its end, stdout and stderr captured; killed and failed past `limit`, so a
/// command that should stop (a refusal, `--once`) but does not cannot hang the test run.
pub fn output_within(cmd: &mut Command, limit: Duration) -> std::process::Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let drain = |stream: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut s) = stream {
                let _ = s.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    use std::io::Read;
    let stdout = drain(child.stdout.take().map(|s| Box::new(s) as _));
    let stderr = drain(child.stderr.take().map(|s| Box::new(s) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().expect("kill");
            let _ = child.wait();
            let said = stderr.join().expect("stderr");
            panic!(
                "{cmd:?} still running after {limit:?}:\n{}",
                String::from_utf8_lossy(&said)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: stdout.join().expect("stdout"),
        stderr: stderr.join().expect("stderr"),
    }
}

/// A binary built by this workspace (`target/<profile>/NAME`, next to the test's own `deps/`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} not built: run `cargo build --workspace --all-targets` first",
        bin.display()
    );
    bin
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Whether a Prometheus text exposition has exactly this sample line (`name{labels} value`): a
/// substring check would take `... 21` for `... 2`.
pub fn has_metric(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tool from the project's Python venv (moto_server, python, aws), installed by the test command.
pub fn venv_bin(name: &str) -> PathBuf {
    let candidates = [
        std::env::var_os("VIRTUAL_ENV").map(|v| PathBuf::from(v).join("bin").join(name)),
        Some(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../.venv/bin")
                .join(name),
        ),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} not found: run `bash e2e/run-tests.sh` (it installs .ci/requirements.txt into .venv)"))
}

fn moto_server_bin() -> PathBuf {
    venv_bin("moto_server")
}

/// moto's STS server on loopback, with its request recorder on.
pub struct Moto {
    pub proc: Proc,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Moto {
    pub fn start() -> Moto {
        let dir = tempfile::tempdir().expect("tmp");
        let port = free_port();
        let child = Command::new(moto_server_bin())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        wait_port(port, "moto_server");
        let m = Moto {
            proc: Proc(child),
            port,
            _dir: dir,
        };
        m.post("/moto-api/recorder/start-recording");
        m
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn post(&self, path: &str) {
        let out = Command::new("curl")
            .args(["-fsS", "-X", "POST", &format!("{}{path}", self.url())])
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "moto {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The calls of STS `action` (e.g. `AssumeRole`) recorded so far: each one's decoded body
    /// and its headers.
    fn records(&self, action: &str) -> Vec<(String, Value)> {
        use base64::Engine;
        let out = Command::new("curl")
            .args([
                "-fsS",
                &format!("{}/moto-api/recorder/download-recording", self.url()),
            ])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| {
                let body = base64::engine::general_purpose::STANDARD
                    .decode(v["body"].as_str()?)
                    .ok()?;
                Some((
                    String::from_utf8_lossy(&body).into_owned(),
                    v["headers"].clone(),
                ))
            })
            .filter(|(b, _)| b.contains(&format!("Action={action}&")))
            .collect()
    }

    /// The bodies of the calls of STS `action` (e.g. `AssumeRole`) recorded so far.
    pub fn calls(&self, action: &str) -> Vec<String> {
        self.records(action).into_iter().map(|(b, _)| b).collect()
    }

    /// Who signed each call of `action`: the access key ID in its SigV4 `Authorization`, and
    /// its session token (`X-Amz-Security-Token`), if any.
    pub fn signers(&self, action: &str) -> Vec<(String, Option<String>)> {
        self.records(action)
            .into_iter()
            .map(|(_, h)| {
                let header = |name: &str| {
                    h.as_object()?
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))?
                        .1
                        .as_str()
                };
                let key = header("Authorization")
                    .and_then(|a| a.split("Credential=").nth(1))
                    .and_then(|c| c.split('/').next())
                    .unwrap_or_default()
                    .to_owned();
                let token = header("X-Amz-Security-Token").map(str::to_owned);
                (key, token)
            })
            .collect()
    }

    /// The session policy (`Policy`, decoded) of each AssumeRole call recorded so far whose
    /// RoleSessionName is `session`.
    pub fn session_policies(&self, session: &str) -> Vec<Option<String>> {
        self.calls("AssumeRole")
            .iter()
            .filter_map(|b| reqwest::Url::parse(&format!("http://recorded/?{b}")).ok())
            .filter(|u| {
                u.query_pairs()
                    .any(|(k, v)| k == "RoleSessionName" && v == session)
            })
            .map(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == "Policy")
                    .map(|(_, v)| v.into_owned())
            })
            .collect()
    }

    /// AssumeRole calls recorded so far whose RoleSessionName is `session`.
    pub fn assume_role_calls(&self, session: &str) -> usize {
        self.calls("AssumeRole")
            .iter()
            .filter(|b| b.contains(&format!("RoleSessionName={session}&")))
            .count()
    }
}

/// The "cluster": the key the API server signs service-account tokens with.
pub struct Cluster {
    pub key: EncodingKey,
    pub kid: String,
    pub jwks: JwkSet,
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

impl Cluster {
    pub fn new() -> Cluster {
        let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("key")
            .serialize_pem();
        let key = EncodingKey::from_ec_pem(pem.as_bytes()).expect("ec key");
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).expect("jwk");
        let kid = jwk.thumbprint(ThumbprintHash::SHA256).expect("thumbprint");
        jwk.common.key_id = Some(kid.clone());
        Cluster {
            key,
            kid,
            jwks: JwkSet { keys: vec![jwk] },
        }
    }

    /// A token as the kubelet's TokenRequest would give it.
    pub fn token(&self, ns: &str, sa: &str, pod: Option<&str>, aud: &str, ttl: i64) -> String {
        self.token_with(json!({}), ns, sa, pod, aud, ttl)
    }

    pub fn token_with(
        &self,
        extra: Value,
        ns: &str,
        sa: &str,
        pod: Option<&str>,
        aud: &str,
        ttl: i64,
    ) -> String {
        let t = now();
        let mut k8s = json!({"namespace": ns, "serviceaccount": {"name": sa, "uid": "sa-uid"}});
        if let Some(p) = pod {
            k8s["pod"] = json!({"name": p, "uid": format!("{p}-uid")});
        }
        let mut claims = json!({
            "iss": CLUSTER_ISSUER, "sub": format!("system:serviceaccount:{ns}:{sa}"), "aud": [aud],
            "iat": t, "nbf": t, "exp": t + ttl, "jti": uuid::Uuid::new_v4().to_string(), "kubernetes.io": k8s,
        });
        if let (Some(c), Value::Object(e)) = (claims.as_object_mut(), extra) {
            c.extend(e);
        }
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, &claims, &self.key).expect("sign")
    }

    /// Verify like the API server does (used by the TokenReview stand-in).
    pub fn review(&self, token: &str, audiences: &[String]) -> Value {
        let jwk = &self.jwks.keys[0];
        let key = DecodingKey::from_jwk(jwk).expect("key");
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[CLUSTER_ISSUER]);
        v.validate_aud = false;
        let claims = match jsonwebtoken::decode::<Value>(token, &key, &v) {
            Ok(d) => d.claims,
            Err(e) => {
                return json!({"authenticated": false, "error": format!("[invalid bearer token, {e}]")});
            }
        };
        let token_aud: Vec<String> =
            serde_json::from_value(claims["aud"].clone()).unwrap_or_default();
        let both: Vec<&String> = token_aud.iter().filter(|a| audiences.contains(a)).collect();
        if both.is_empty() {
            return json!({"authenticated": false, "error": format!(
                "[invalid bearer token, token audiences {token_aud:?} is invalid for the target audiences {audiences:?}]")});
        }
        let k = &claims["kubernetes.io"];
        let ns = k["namespace"].as_str().unwrap_or_default();
        let mut extra = json!({});
        if let Some(pod) = k.get("pod") {
            extra = json!({
                "authentication.kubernetes.io/pod-name": [pod["name"]],
                "authentication.kubernetes.io/pod-uid": [pod["uid"]],
                "authentication.kubernetes.io/credential-id": [format!("JTI={}", claims["jti"].as_str().unwrap_or_default())],
            });
        }
        json!({
            "authenticated": true,
            "audiences": both,
            "user": {
                "username": claims["sub"],
                "uid": k["serviceaccount"]["uid"],
                "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
                "extra": extra,
            }
        })
    }
}

/// Another client's writes, applied to the stand-in's objects.
pub type Meanwhile = Box<dyn FnOnce(&mut Store) + Send>;

/// Objects the stand-in API server holds, as JSON, keyed like the real API.
#[derive(Default)]
pub struct Store {
    /// Existing namespaces.
    pub namespaces: std::collections::BTreeSet<String>,
    /// Secrets by (namespace, name).
    pub secrets: std::collections::BTreeMap<(String, String), Value>,
    /// MutatingWebhookConfigurations by name.
    pub mwcs: std::collections::BTreeMap<String, Value>,
    /// (verb, resource) pairs answered with 403, as RBAC would.
    pub forbidden: std::collections::BTreeSet<(String, String)>,
    /// Every write, for assertions on ordering: (verb, resource, name).
    pub writes: Vec<(String, String, String)>,
    /// Every authenticated GET of the issuer discovery document and the JWKS, by path.
    pub oidc_gets: Vec<String>,
    /// Run once, just before the next Secret create or update is handled: another client's
    /// writes landing between a client's reads and its own write.
    pub before_secret_write: Option<Meanwhile>,
    version: u64,
}

fn status(code: u16, reason: &str, message: String) -> (axum::http::StatusCode, axum::Json<Value>) {
    (
        axum::http::StatusCode::from_u16(code).expect("status"),
        axum::Json(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}),
        ),
    )
}

type Reply = (axum::http::StatusCode, axum::Json<Value>);

impl Store {
    fn next_version(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    fn deny(&self, verb: &str, resource: &str) -> Option<Reply> {
        self.forbidden.contains(&(verb.to_owned(), resource.to_owned())).then(|| {
            status(403, "Forbidden", format!("{resource} is forbidden: User \"system:serviceaccount:tokenvend:tokenvend-certs\" cannot {verb} resource \"{resource}\""))
        })
    }

    /// The service-account issuer's documents, as the API server serves them to authenticated
    /// clients that RBAC lets `get` the path (every service account, by Kubernetes' default
    /// ClusterRoleBinding `system:service-account-issuer-discovery`). Its `jwks_uri` names the
    /// API server's advertised address, which need not be reachable from pods.
    fn oidc(&mut self, path: &str, cluster: &Cluster) -> Reply {
        if self
            .forbidden
            .contains(&("get".to_owned(), path.to_owned()))
        {
            return status(
                403,
                "Forbidden",
                format!(
                    "forbidden: User \"system:serviceaccount:tokenvend:tokenvend-sts\" cannot get path \"{path}\""
                ),
            );
        }
        self.oidc_gets.push(path.to_owned());
        let body = if path == "/openid/v1/jwks" {
            serde_json::to_value(&cluster.jwks).expect("jwks")
        } else {
            json!({
                "issuer": CLUSTER_ISSUER,
                "jwks_uri": "https://192.0.2.10:6443/openid/v1/jwks",
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
            })
        };
        (axum::http::StatusCode::OK, axum::Json(body))
    }

    fn get_secret(&self, ns: &str, name: &str) -> Reply {
        if let Some(r) = self.deny("get", "secrets") {
            return r;
        }
        match self.secrets.get(&(ns.to_owned(), name.to_owned())) {
            Some(v) => (axum::http::StatusCode::OK, axum::Json(v.clone())),
            None => status(404, "NotFound", format!("secrets \"{name}\" not found")),
        }
    }

    fn create_secret(&mut self, ns: &str, mut body: Value) -> Reply {
        if let Some(r) = self.deny("create", "secrets") {
            return r;
        }
        if let Some(meanwhile) = self.before_secret_write.take() {
            meanwhile(self);
        }
        if !self.namespaces.contains(ns) {
            return status(404, "NotFound", format!("namespaces \"{ns}\" not found"));
        }
        let name = body["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if self.secrets.contains_key(&(ns.to_owned(), name.clone())) {
            return status(
                409,
                "AlreadyExists",
                format!("secrets \"{name}\" already exists"),
            );
        }
        body["metadata"]["resourceVersion"] = json!(self.next_version());
        body["metadata"]["namespace"] = json!(ns);
        body["apiVersion"] = json!("v1");
        body["kind"] = json!("Secret");
        self.writes
            .push(("create".into(), "secrets".into(), name.clone()));
        self.secrets.insert((ns.to_owned(), name), body.clone());
        (axum::http::StatusCode::CREATED, axum::Json(body))
    }

    fn replace_secret(&mut self, ns: &str, name: &str, mut body: Value) -> Reply {
        if let Some(r) = self.deny("update", "secrets") {
            return r;
        }
        if let Some(meanwhile) = self.before_secret_write.take() {
            meanwhile(self);
        }
        let key = (ns.to_owned(), name.to_owned());
        let Some(existing) = self.secrets.get(&key) else {
            return status(404, "NotFound", format!("secrets \"{name}\" not found"));
        };
        // As the API server does: a Secret's type is immutable.
        if body.get("type") != existing.get("type") {
            return status(
                422,
                "Invalid",
                format!("Secret \"{name}\" is invalid: type: Invalid value: field is immutable"),
            );
        }
        if body["metadata"]["resourceVersion"] != existing["metadata"]["resourceVersion"] {
            return status(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on secrets \"{name}\": the object has been modified"
                ),
            );
        }
        body["metadata"]["resourceVersion"] = json!(self.next_version());
        self.writes
            .push(("update".into(), "secrets".into(), name.to_owned()));
        self.secrets.insert(key, body.clone());
        (axum::http::StatusCode::OK, axum::Json(body))
    }

    fn get_mwc(&self, name: &str) -> Reply {
        if let Some(r) = self.deny("get", "mutatingwebhookconfigurations") {
            return r;
        }
        match self.mwcs.get(name) {
            Some(v) => (axum::http::StatusCode::OK, axum::Json(v.clone())),
            None => status(
                404,
                "NotFound",
                format!(
                    "mutatingwebhookconfigurations.admissionregistration.k8s.io \"{name}\" not found"
                ),
            ),
        }
    }

    fn patch_mwc(&mut self, name: &str, content_type: &str, patch: Value) -> Reply {
        if let Some(r) = self.deny("patch", "mutatingwebhookconfigurations") {
            return r;
        }
        if content_type != "application/json-patch+json" {
            return status(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format: {content_type}"),
            );
        }
        let version = self.next_version();
        let Some(obj) = self.mwcs.get_mut(name) else {
            return status(
                404,
                "NotFound",
                format!(
                    "mutatingwebhookconfigurations.admissionregistration.k8s.io \"{name}\" not found"
                ),
            );
        };
        let Ok(p) = serde_json::from_value::<json_patch::Patch>(patch) else {
            return status(400, "BadRequest", "not a JSON patch".into());
        };
        let mut next = obj.clone();
        if let Err(e) = json_patch::patch(&mut next, &p) {
            return status(422, "Invalid", e.to_string());
        }
        next["metadata"]["resourceVersion"] = json!(version);
        *obj = next.clone();
        self.writes.push((
            "patch".into(),
            "mutatingwebhookconfigurations".into(),
            name.to_owned(),
        ));
        (axum::http::StatusCode::OK, axum::Json(next))
    }
}

/// STAND-IN for kube-apiserver (none can run here). It follows the real API contract for what
/// tokenvend uses: `POST /apis/authentication.k8s.io/v1/tokenreviews` (verifies the token with
/// the cluster key, intersects audiences, fills user, groups and pod extras), the issuer's
/// `/.well-known/openid-configuration` and `/openid/v1/jwks` (authenticated clients only), Secrets (get,
/// create with namespace check, update with resourceVersion conflicts) and
/// MutatingWebhookConfigurations (get, JSON patch), `Status` errors with the real codes and
/// reasons, 403 for (verb, resource) pairs listed in `store.forbidden` as RBAC would, and the
/// bearer token of its kubeconfig.
pub struct ApiServerStandIn {
    pub port: u16,
    pub reviews: Arc<Mutex<Vec<Value>>>,
    pub store: Arc<Mutex<Store>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

pub const STANDIN_BEARER: &str = "tokenvend-sts-sa-token";

impl ApiServerStandIn {
    pub async fn start(cluster: Arc<Cluster>) -> ApiServerStandIn {
        use axum::extract::{Path as P, State};
        use axum::http::HeaderMap;
        use axum::routing::{get, post};
        type St = (Arc<Mutex<Store>>, Arc<Mutex<Vec<Value>>>, Arc<Cluster>);
        fn authorized(h: &HeaderMap) -> bool {
            h.get("authorization").and_then(|v| v.to_str().ok())
                == Some(&format!("Bearer {STANDIN_BEARER}"))
        }
        fn unauthorized() -> Reply {
            status(401, "Unauthorized", "Unauthorized".into())
        }
        let reviews = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::new(Mutex::new(Store::default()));
        let state: St = (store.clone(), reviews.clone(), cluster);
        let oidc = |path: &'static str| {
            get(
                move |State((store, _, cluster)): State<St>, h: HeaderMap| async move {
                    if !authorized(&h) {
                        return unauthorized();
                    }
                    store.lock().expect("lock").oidc(path, &cluster)
                },
            )
        };
        let app = axum::Router::new()
            .route(
                "/apis/authentication.k8s.io/v1/tokenreviews",
                post(
                    |State((_, seen, cluster)): State<St>,
                     h: HeaderMap,
                     body: axum::Json<Value>| async move {
                        if !authorized(&h) {
                            return unauthorized();
                        }
                        seen.lock().expect("lock").push(body.0.clone());
                        let token = body["spec"]["token"].as_str().unwrap_or_default();
                        let audiences: Vec<String> =
                            serde_json::from_value(body["spec"]["audiences"].clone())
                                .unwrap_or_default();
                        let mut out = body.0.clone();
                        out["status"] = cluster.review(token, &audiences);
                        out["metadata"] = json!({"creationTimestamp": null});
                        (axum::http::StatusCode::CREATED, axum::Json(out))
                    },
                ),
            )
            .route(
                "/.well-known/openid-configuration",
                oidc("/.well-known/openid-configuration"),
            )
            .route("/openid/v1/jwks", oidc("/openid/v1/jwks"))
            .route(
                "/api/v1/namespaces/{ns}/secrets",
                post(
                    |State((store, _, _)): State<St>,
                     h: HeaderMap,
                     P(ns): P<String>,
                     body: axum::Json<Value>| async move {
                        if !authorized(&h) {
                            return unauthorized();
                        }
                        store.lock().expect("lock").create_secret(&ns, body.0)
                    },
                ),
            )
            .route(
                "/api/v1/namespaces/{ns}/secrets/{name}",
                get(
                    |State((store, _, _)): State<St>,
                     h: HeaderMap,
                     P((ns, name)): P<(String, String)>| async move {
                        if !authorized(&h) {
                            return unauthorized();
                        }
                        store.lock().expect("lock").get_secret(&ns, &name)
                    },
                )
                .put(
                    |State((store, _, _)): State<St>,
                     h: HeaderMap,
                     P((ns, name)): P<(String, String)>,
                     body: axum::Json<Value>| async move {
                        if !authorized(&h) {
                            return unauthorized();
                        }
                        store
                            .lock()
                            .expect("lock")
                            .replace_secret(&ns, &name, body.0)
                    },
                ),
            )
            .route(
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}",
                get(
                    |State((store, _, _)): State<St>, h: HeaderMap, P(name): P<String>| async move {
                        if !authorized(&h) {
                            return unauthorized();
                        }
                        store.lock().expect("lock").get_mwc(&name)
                    },
                )
                .patch(
                    |State((store, _, _)): State<St>,
                     h: HeaderMap,
                     P(name): P<String>,
                     body: axum::body::Bytes| async move {
                        if !authorized(&h) {
                            return unauthorized();
                        }
                        let ct = h
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        store.lock().expect("lock").patch_mwc(&name, &ct, patch)
                    },
                ),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        ApiServerStandIn {
            port,
            reviews,
            store,
            shutdown: Some(tx),
        }
    }

    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: http://127.0.0.1:{}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: sts\ncurrent-context: standin\nusers:\n- name: sts\n  user:\n    token: {STANDIN_BEARER}\n",
            self.port
        );
        std::fs::write(&path, text).expect("kubeconfig");
        path
    }
}

/// The real tokenvend-sts binary.
pub struct Sts {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub logs: Arc<Mutex<Vec<String>>>,
}

pub const POLICY: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetObject"],
     "Resource": ["arn:aws:s3:::bucket/{{ namespace }}/{{ serviceaccount }}/{% if pod_name %}{{ pod_name }}/{% endif %}*"]},
    {"Effect": "Allow", "Action": ["s3:PutObject"], "Resource": ["arn:aws:s3:::scratch/${aws:userid}/*"]}
    {% if namespace == "huge" %}{% for i in range(200) %}, {"Effect": "Deny", "Action": ["s3:PutObject"], "Resource": ["arn:aws:s3:::b/{{ i }}"]}{% endfor %}{% endif %}
  ]
}"#;

pub const RULES: &str = r#"
rules:
- namespaces: ["*"]
  serviceAccounts: ["*"]
  roles: ["*"]
- namespaces: ["restricted"]
  serviceAccounts: ["allowed"]
"#;

impl Sts {
    /// Start with JWKS validation (or with `env` overriding anything).
    pub fn start(moto: &Moto, cluster: &Cluster, env: &[(&str, String)]) -> Sts {
        Sts::start_without(moto, cluster, env, &[])
    }

    /// As [`Sts::start`], with the variables in `unset` removed from its environment.
    pub fn start_without(
        moto: &Moto,
        cluster: &Cluster,
        env: &[(&str, String)],
        unset: &[&str],
    ) -> Sts {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("policy.json"), POLICY).expect("policy");
        std::fs::write(
            dir.path().join("jwks.json"),
            serde_json::to_string(&cluster.jwks).expect("jwks"),
        )
        .expect("jwks");
        std::fs::create_dir(dir.path().join("keys")).expect("keys dir");
        std::fs::write(
            dir.path().join("keys/2026-01.pem"),
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .expect("key")
                .serialize_pem(),
        )
        .expect("signing key");
        // A `PORT` of its own and no TOKENVEND_LISTEN: the default listener on that port.
        let port = env.iter().find(|(k, _)| *k == "PORT");
        let addr: SocketAddr = match (env.iter().find(|(k, _)| *k == "TOKENVEND_LISTEN"), port) {
            (Some((_, a)), _) => a.parse().expect("TOKENVEND_LISTEN"),
            (None, Some((_, p))) => format!("127.0.0.1:{p}").parse().expect("PORT"),
            (None, None) => format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
        };
        let mut cmd = Command::new(workspace_bin("tokenvend-sts"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        if port.is_none() {
            cmd.env("TOKENVEND_LISTEN", addr.to_string());
        }
        cmd.env("AWS_ROLE_ARN", ROLE)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
            .env(
                "AWS_SECRET_ACCESS_KEY",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            )
            .env("AWS_ENDPOINT_URL_STS", moto.url())
            .env("POLICY_TEMPLATE_PATH", dir.path().join("policy.json"))
            .env("SESSION_DURATION_SECONDS", "900")
            .env("TOKENVEND_VALIDATION", "jwks")
            .env("TOKENVEND_OIDC_ISSUER", CLUSTER_ISSUER)
            .env("TOKENVEND_JWKS_FILE", dir.path().join("jwks.json"))
            .env("TOKENVEND_ISSUER_URL", WEB_IDENTITY_ISSUER)
            .env("TOKENVEND_SIGNING_KEY_DIR", dir.path().join("keys"))
            .env("TOKENVEND_KEY_RELOAD_SECONDS", "1")
            .env(
                "TOKENVEND_ALLOWED_ROLES",
                "arn:aws:iam::123456789012:role/apps/*",
            )
            .env("TOKENVEND_UPSTREAM_TIMEOUT_SECONDS", "3")
            .env("LOG_LEVEL", "DEBUG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        for k in unset {
            cmd.env_remove(k);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tokenvend-sts");
        let logs = capture_output(&mut child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "tokenvend-sts exited with {status}: {:?}",
                    logs.lock().expect("logs")
                );
            }
            assert!(
                Instant::now() < deadline,
                "tokenvend-sts did not start: {:?}",
                logs.lock().expect("logs")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Sts {
            proc: Proc(child),
            addr,
            dir,
            logs,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn all_logs(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }

    /// Whether a line containing `text` is logged within 10 s: the server writes its log from a
    /// background thread, so a line can trail the answer it goes with.
    pub fn logged(&self, text: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.all_logs().contains(text) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// POST with an optional bearer token and body; returns (status, JSON body).
pub async fn post(
    c: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut r = c.post(url);
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(b.to_owned());
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// GetCallerIdentity with the given credentials against moto, through the AWS Rust SDK.
pub async fn caller_arn(moto: &Moto, creds: &Value) -> String {
    let c = aws_sdk_sts::config::Credentials::new(
        creds["AWS_ACCESS_KEY_ID"].as_str().expect("key"),
        creds["AWS_SECRET_ACCESS_KEY"].as_str().expect("secret"),
        creds["AWS_SESSION_TOKEN"].as_str().map(str::to_owned),
        None,
        "tokenvend-test",
    );
    let conf = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("us-east-1"))
        .endpoint_url(moto.url())
        .credentials_provider(c)
        .build();
    let out = aws_sdk_sts::Client::from_conf(conf)
        .get_caller_identity()
        .send()
        .await
        .expect("GetCallerIdentity");
    out.arn.expect("arn")
}

/// The AdmissionReview v1 an API server sends when a ReplicaSet controller creates `object` in
/// `namespace` (the envelope of `admission_review` in `e2e/stack.py`).
pub fn admission_review(uid: &str, namespace: &str, object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": object,
            "dryRun": false
        }
    })
}

/// Issuer URL the web-identity tests configure tokenvend-sts with.
pub const WEB_IDENTITY_ISSUER: &str = "https://issuer.example.com";

/// Verify a minted web-identity token as AWS STS would: its `kid` names a key of `jwks`, signed
/// with the alg that key declares, audience `sts.amazonaws.com`, issuer [`WEB_IDENTITY_ISSUER`];
/// the claims, or why not.
pub fn verify_web_identity(jwks: &JwkSet, token: &str) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = jwks.find(&kid).ok_or("kid not in the JWKS")?;
    // As a relying party does: the token's alg must be the one its published key declares.
    let declared = jwk.common.key_algorithm.ok_or("the JWK declares no alg")?;
    if format!("{declared:?}") != format!("{:?}", header.alg) {
        return Err(format!(
            "token alg {:?} is not the key's {declared:?}",
            header.alg
        ));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut v = Validation::new(header.alg);
    v.set_audience(&["sts.amazonaws.com"]);
    v.set_issuer(&[WEB_IDENTITY_ISSUER]);
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

/// Seconds each fuzz target runs (`TOKENVEND_FUZZ_SECONDS`, default 3; the test command uses 60).
/// A value that is not a whole number of seconds fails the test rather than quietly running 3 s.
pub fn fuzz_budget() -> Duration {
    parse_fuzz_budget(std::env::var("TOKENVEND_FUZZ_SECONDS").ok().as_deref())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The fuzz budget from the value of `TOKENVEND_FUZZ_SECONDS`, if set.
fn parse_fuzz_budget(value: Option<&str>) -> Result<Duration, String> {
    match value {
        None => Ok(Duration::from_secs(3)),
        Some(s) => s.trim().parse().map(Duration::from_secs).map_err(|_| {
            format!("TOKENVEND_FUZZ_SECONDS must be a whole number of seconds, not {s:?}")
        }),
    }
}

/// A property case's verdict from an oracle's account of where the code and the oracle
/// disagree: it fails with that account, if there is one.
pub fn agreed(disagreement: Option<String>) -> Result<(), proptest::test_runner::TestCaseError> {
    disagreement.map_or(Ok(()), |d| {
        Err(proptest::test_runner::TestCaseError::fail(d))
    })
}

/// Strings of `base`, each with up to `max_edits` characters of `alphabet` inserted, replaced or
/// removed at generated places: text a step off the grammar `base` follows, where parsers differ.
pub fn mangled(
    base: impl proptest::strategy::Strategy<Value = String>,
    alphabet: &str,
    max_edits: usize,
) -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let edits = proptest::collection::vec(
        (
            any::<prop::sample::Index>(),
            0..3u8,
            prop::sample::select(alphabet.chars().collect::<Vec<_>>()),
        ),
        0..=max_edits,
    );
    (base, edits).prop_map(|(text, edits)| {
        let mut chars: Vec<char> = text.chars().collect();
        for (at, kind, c) in edits {
            let i = at.index(chars.len() + 1);
            match kind {
                0 => chars.insert(i, c),
                1 if i < chars.len() => chars[i] = c,
                _ if i < chars.len() => {
                    chars.remove(i);
                }
                _ => {}
            }
        }
        chars.into_iter().collect()
    })
}

/// Run a proptest property on values of `strategy` until the fuzz budget is spent; panics with
/// the shrunk failing input; prints and returns the number of executions.
pub fn fuzz<S: proptest::strategy::Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), proptest::test_runner::TestCaseError>,
) -> u64
where
    S::Value: std::fmt::Debug,
{
    use proptest::test_runner::{Config, TestRunner};
    let start = Instant::now();
    let mut runs = 0u64;
    while start.elapsed() < fuzz_budget() {
        let mut runner = TestRunner::new(Config {
            cases: 128,
            failure_persistence: None,
            ..Config::default()
        });
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("{name}: {e}");
        }
        runs += 128;
    }
    println!(
        "fuzz {name}: {runs} executions in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_budget_defaults_to_3_s_and_refuses_what_is_not_whole_seconds() {
        assert_eq!(parse_fuzz_budget(None), Ok(Duration::from_secs(3)));
        assert_eq!(parse_fuzz_budget(Some("60")), Ok(Duration::from_secs(60)));
        assert_eq!(
            parse_fuzz_budget(Some(" 600\n")),
            Ok(Duration::from_secs(600))
        );
        for bad in ["", "1m", "-5", "2.5", "sixty"] {
            let e = parse_fuzz_budget(Some(bad)).expect_err(bad);
            assert!(e.contains("TOKENVEND_FUZZ_SECONDS"), "{e}");
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}

/// A TCP relay to `target` on loopback. Each chunk a client sends goes to `inspect` first, and
/// when that returns false the connection is closed instead of the chunk relayed.
pub async fn relay(target: u16, inspect: impl Fn(&[u8]) -> bool + Send + Sync + 'static) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let inspect = Arc::new(inspect);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let inspect = inspect.clone();
            tokio::spawn(async move {
                let Ok(upstream) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                else {
                    return;
                };
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_upstream, mut to_upstream) = upstream.into_split();
                let back = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_upstream, &mut to_client).await;
                });
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match from_client.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if !inspect(&buf[..n]) || to_upstream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                back.abort();
            });
        }
    });
    port
}

/// A relay that, while `drops` is above zero, takes one and closes the connection at the next
/// bytes a client sends: a request written just as the server's close of an idle connection
/// arrives.
pub async fn closing_relay(target: u16, drops: Arc<std::sync::atomic::AtomicUsize>) -> u16 {
    relay(target, move |_| {
        drops
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |d| d.checked_sub(1),
            )
            .is_err()
    })
    .await
}

/// Serving certificates for the servers under test: a CA, leaves for `localhost` and
/// 127.0.0.1, and the kubelet's way of swapping the mounted files.
pub mod tls {
    use std::path::Path;

    /// A leaf certificate and key, with the PEM of the CA that signed it.
    pub struct Pair {
        pub ca_pem: String,
        pub cert_pem: String,
        /// The certificate as a TLS handshake presents it.
        pub cert_der: Vec<u8>,
        pub key_pem: String,
    }

    /// A new CA: its certificate, its key, and an issuer to sign leaves with.
    pub fn ca(
        name: &str,
    ) -> (
        rcgen::Certificate,
        rcgen::KeyPair,
        rcgen::Issuer<'static, rcgen::KeyPair>,
    ) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = p.self_signed(&key).expect("ca");
        let issuer_key = rcgen::KeyPair::from_pem(&key.serialize_pem()).expect("key copy");
        let issuer = rcgen::Issuer::new(p, issuer_key);
        (cert, key, issuer)
    }

    /// A serving certificate for `localhost` and 127.0.0.1 signed by the CA.
    pub fn leaf(
        ca_cert: &rcgen::Certificate,
        issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    ) -> Pair {
        leaf_with(ca_cert, issuer, None)
    }

    /// A serving certificate for `localhost` that signs itself: no CA, its own trust anchor.
    pub fn self_signed_leaf() -> Pair {
        let key = rcgen::KeyPair::generate().expect("key");
        let p = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        let cert = p.self_signed(&key).expect("self-signed");
        Pair {
            ca_pem: cert.pem(),
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
        }
    }

    /// As [`leaf`], valid from `not_before` to `not_after` (Unix seconds).
    pub fn leaf_between(
        ca_cert: &rcgen::Certificate,
        issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
        not_before: i64,
        not_after: i64,
    ) -> Pair {
        leaf_with(ca_cert, issuer, Some((not_before, not_after)))
    }

    fn leaf_with(
        ca_cert: &rcgen::Certificate,
        issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
        validity: Option<(i64, i64)>,
    ) -> Pair {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        p.subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        if let Some((not_before, not_after)) = validity {
            let at = |secs: i64| {
                rcgen::date_time_ymd(1970, 1, 1)
                    + std::time::Duration::from_secs(u64::try_from(secs).expect("after 1970"))
            };
            p.not_before = at(not_before);
            p.not_after = at(not_after);
        }
        let cert = p.signed_by(&key, issuer).expect("leaf");
        Pair {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Write `tls.crt` and `tls.key` in `dir` through a temp file + rename, as the kubelet's
    /// atomic writer does.
    pub fn install(dir: &Path, pair: &Pair) {
        for (name, content) in [("tls.crt", &pair.cert_pem), ("tls.key", &pair.key_pem)] {
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, content).expect("write");
            std::fs::rename(&tmp, dir.join(name)).expect("rename");
        }
    }
}
