//! The web-identity issuer: signing keys from a directory (the lexicographically last file
//! signs; every file is published), JWT minting, OIDC discovery and JWKS documents.
//! A key that leaves the directory stays in the JWKS until every token it signed has expired.
//! With a publication check, a key signs only once the JWKS AWS reads lists it: a token signed
//! by a key AWS cannot find fails `AssumeRoleWithWebIdentity` in every pod until it expires.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokenvend_core::Identity;
use tokenvend_core::atomic::{create_atomic, write_atomic};
use tokenvend_core::clock::{now, rfc3339};
use tokenvend_core::creds::VendedToken;

/// Issuer problems.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    /// Key directory unreadable or empty.
    #[error("signing keys in {dir}: {reason}")]
    Keys {
        /// Directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
    /// With a publication check: no key in the directory is in the published JWKS (yet).
    #[error("{0}")]
    Unpublished(String),
}

struct SigningKey {
    file: String,
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Jwk,
    /// When it last signed (Unix seconds; 0: never), kept across reloads.
    last_signed: AtomicI64,
}

/// A key gone from the directory, still published while tokens it signed may be valid.
struct Retired {
    jwk: Jwk,
    key: KeyName,
    /// Its algorithm, still listed in discovery while the key is published.
    alg: Algorithm,
    /// Published until then: the removal plus a token lifetime.
    until: i64,
    /// When the last token it signed expires (0: it never signed).
    signed_until: i64,
}

struct State {
    keys: Vec<Arc<SigningKey>>,
    /// Keys gone from the directory.
    retired: Vec<Retired>,
    fingerprint: [u8; 32],
    /// With a publication check, the `kid`s of the published JWKS last read (`None`: not yet).
    published: Option<HashSet<String>>,
    /// Why the published JWKS has never been read, once a read failed.
    unread: Option<String>,
}

impl State {
    /// The key that signs: the newest one, or with a publication check the newest one
    /// published; and the newer keys held back because they are not published yet.
    fn choose(&self, gated: bool) -> (Option<&Arc<SigningKey>>, Vec<&Arc<SigningKey>>) {
        if !gated {
            return (self.keys.last(), Vec::new());
        }
        let published = |k: &&Arc<SigningKey>| {
            self.published
                .as_ref()
                .is_some_and(|kids| kids.contains(&k.kid))
        };
        let signer = self.keys.iter().rev().find(published);
        let waiting = self
            .keys
            .iter()
            .rev()
            .take_while(|k| !published(k))
            .collect();
        (signer, waiting)
    }
}

/// A key file by name and `kid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName {
    /// File name in the key directory.
    pub file: String,
    /// RFC 7638 thumbprint.
    pub kid: String,
}

impl SigningKey {
    /// When the last token it signed expires (0: it never signed).
    fn signed_until(&self, ttl: i64) -> i64 {
        match self.last_signed.load(Ordering::Relaxed) {
            0 => 0,
            t => t.saturating_add(ttl),
        }
    }
}

impl KeyName {
    fn of(k: &SigningKey) -> Self {
        KeyName {
            file: k.file.clone(),
            kid: k.kid.clone(),
        }
    }
}

/// Which key signs now, and which newer ones wait for publication (newest first).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signing {
    /// The signing key; `None` when no key is published yet.
    pub signer: Option<KeyName>,
    /// Keys newer than the signer, not in the published JWKS.
    pub waiting: Vec<KeyName>,
}

/// Issues JWTs that AWS trusts through the published discovery documents.
pub struct Issuer {
    url: String,
    audience: String,
    ttl: i64,
    dir: PathBuf,
    /// Sign only with published keys (see [`Issuer::new`]).
    gated: bool,
    state: RwLock<State>,
}

/// Parses PEM into a signing key of one family.
type KeyLoader = fn(&[u8]) -> jsonwebtoken::errors::Result<EncodingKey>;
/// PEM files of the key directory (sorted by name) and a fingerprint of them.
type KeyFiles = (Vec<(String, Vec<u8>)>, [u8; 32]);

fn parse_key(file: &str, pem: &[u8]) -> Result<SigningKey, String> {
    let candidates: [(Algorithm, KeyLoader); 3] = [
        (Algorithm::ES256, EncodingKey::from_ec_pem),
        (Algorithm::ES384, EncodingKey::from_ec_pem),
        (Algorithm::RS256, EncodingKey::from_rsa_pem),
    ];
    for (alg, load) in candidates {
        let Ok(encoding) = load(pem) else { continue };
        let Ok(mut jwk) = Jwk::from_encoding_key(&encoding, alg) else {
            continue;
        };
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| format!("{file}: {e}"))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        // Check the key really signs with this algorithm before publishing it.
        let mut header = Header::new(alg);
        header.kid = Some(kid.clone());
        if jsonwebtoken::encode(&header, &json!({"probe": 1}), &encoding).is_err() {
            continue;
        }
        return Ok(SigningKey {
            file: file.to_owned(),
            kid,
            alg,
            encoding,
            jwk,
            last_signed: AtomicI64::new(0),
        });
    }
    Err(format!(
        "{file}: not a PEM EC P-256/P-384 or RSA private key"
    ))
}

impl Issuer {
    /// An issuer at `url` (https, what AWS fetches discovery from) minting tokens for `audience`
    /// valid `ttl`, with keys from `dir`. `publication`: sign only with keys listed in the
    /// published JWKS given to [`Issuer::set_published`] (until one is given, nothing is signed).
    pub fn new(
        url: String,
        audience: String,
        ttl: Duration,
        dir: PathBuf,
        publication: bool,
    ) -> Result<Self, IssuerError> {
        let issuer = Issuer {
            url: url.trim_end_matches('/').to_owned(),
            audience,
            ttl: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
            dir,
            gated: publication,
            state: RwLock::new(State {
                keys: Vec::new(),
                retired: Vec::new(),
                fingerprint: [0; 32],
                published: None,
                unread: None,
            }),
        };
        issuer.reload()?;
        Ok(issuer)
    }

    /// The `kid`s of the JWKS AWS reads, as just fetched, or why it could not be read (the
    /// `kid`s read last stay in use).
    pub fn set_published(&self, read: Result<HashSet<String>, String>) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        match read {
            Ok(kids) => {
                state.published = Some(kids);
                state.unread = None;
            }
            Err(why) if state.published.is_none() => state.unread = Some(why),
            Err(_) => {}
        }
    }

    /// Keys whose tokens may still be valid but which the published JWKS last read does not
    /// list (AWS refuses those tokens), with when their last token expires; empty without a
    /// publication check or before the JWKS was read.
    pub fn unlisted_in_use(&self) -> Vec<(KeyName, i64)> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let Some(listed) = state.published.as_ref().filter(|_| self.gated) else {
            return Vec::new();
        };
        let t = now();
        let in_dir = state
            .keys
            .iter()
            .map(|k| (KeyName::of(k), k.signed_until(self.ttl)));
        let retired = state
            .retired
            .iter()
            .map(|r| (r.key.clone(), r.signed_until));
        in_dir
            .chain(retired)
            .filter(|(k, until)| *until > t && !listed.contains(&k.kid))
            .collect()
    }

    /// Which key signs, and which wait for publication.
    pub fn signing(&self) -> Signing {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let (signer, waiting) = state.choose(self.gated);
        Signing {
            signer: signer.map(|k| KeyName::of(k)),
            waiting: waiting.into_iter().map(|k| KeyName::of(k)).collect(),
        }
    }

    fn read_dir(dir: &Path) -> Result<KeyFiles, String> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
            let entry = entry.map_err(|e| e.to_string())?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Kubernetes Secret mounts add ..data links and dot-directories: only *.pem files count.
            if name.starts_with('.') || !name.ends_with(".pem") {
                continue;
            }
            let bytes =
                tokenvend_core::limited::read(&entry.path(), tokenvend_core::limited::MAX_BYTES)
                    .map_err(|e| format!("{name}: {e}"))?;
            files.push((name, bytes));
        }
        files.sort();
        let mut h = Sha256::new();
        for (name, bytes) in &files {
            h.update(name.as_bytes());
            h.update([0]);
            h.update(bytes);
        }
        Ok((files, h.finalize().into()))
    }

    /// Re-read the key directory if it changed. On error the previous keys stay in use.
    /// Returns whether anything changed.
    pub fn reload(&self) -> Result<bool, IssuerError> {
        let err = |reason: String| IssuerError::Keys {
            dir: self.dir.clone(),
            reason,
        };
        let (files, fingerprint) = Self::read_dir(&self.dir).map_err(err)?;
        if self
            .state
            .read()
            .map(|s| s.fingerprint == fingerprint)
            .unwrap_or(false)
        {
            return Ok(false);
        }
        if files.is_empty() {
            return Err(err("no *.pem private key found".into()));
        }
        let keys = files
            .iter()
            .map(|(name, pem)| parse_key(name, pem).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        let t = now();
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        // Keys that left the directory may have signed tokens that are still valid.
        let until = t + self.ttl + 60;
        let ttl = self.ttl;
        let gone: Vec<Retired> = state
            .keys
            .iter()
            .filter(|old| !keys.iter().any(|k| k.kid == old.kid))
            .map(|old| Retired {
                jwk: old.jwk.clone(),
                key: KeyName::of(old),
                alg: old.alg,
                until,
                signed_until: old.signed_until(ttl),
            })
            .collect();
        for k in &keys {
            if let Some(old) = state.keys.iter().find(|old| old.kid == k.kid) {
                k.last_signed
                    .store(old.last_signed.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        state.retired.extend(gone);
        state
            .retired
            .retain(|r| r.until > t && !keys.iter().any(|k| k.kid == r.key.kid));
        state.keys = keys;
        state.fingerprint = fingerprint;
        let published = state.keys.len() + state.retired.len();
        match state.choose(self.gated) {
            (Some(signer), _) => {
                tracing::info!(kid = %signer.kid, file = %signer.file, published, "issuer signing keys loaded");
            }
            // The publication check says which key waits, and for what.
            (None, _) => tracing::info!(published, "issuer signing keys loaded"),
        }
        Ok(true)
    }

    /// Mint a web-identity JWT for `id`.
    pub fn mint(&self, id: &Identity) -> Result<VendedToken, IssuerError> {
        let signer = {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            match state.choose(self.gated) {
                (Some(k), _) => k.clone(),
                (None, waiting) => {
                    let files: Vec<&str> = waiting.iter().map(|k| k.file.as_str()).collect();
                    let why = match (&state.published, &state.unread) {
                        (Some(_), _) => "no signing key is in it".to_owned(),
                        (None, Some(e)) => format!("it could not be read: {e}"),
                        (None, None) => "it has not been read yet".to_owned(),
                    };
                    return Err(IssuerError::Unpublished(format!(
                        "no signing key is known to be in the published JWKS \
                         (TOKENVEND_PUBLISHED_JWKS_URL), so none may sign: {why}; upload the \
                         documents of `tokenvend-sts issuer-docs` (keys: {})",
                        files.join(", ")
                    )));
                }
            }
        };
        let iat = now();
        let exp = iat + self.ttl;
        signer.last_signed.fetch_max(iat, Ordering::Relaxed);
        let mut k8s =
            json!({"namespace": id.namespace, "serviceaccount": {"name": id.service_account}});
        if let Some(pod) = &id.pod_name {
            k8s["pod"] = json!({"name": pod, "uid": id.pod_uid.clone().unwrap_or_default()});
        }
        let claims = json!({
            "iss": self.url,
            "aud": self.audience,
            "sub": id.subject(),
            "iat": iat,
            "nbf": iat,
            "exp": exp,
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": k8s,
        });
        let mut header = Header::new(signer.alg);
        header.kid = Some(signer.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &signer.encoding)
            .map_err(|e| IssuerError::Sign(e.to_string()))?;
        Ok(VendedToken {
            token,
            expiration: rfc3339(exp),
        })
    }

    /// The JWKS: every key in the directory plus retired keys whose tokens may still be valid.
    pub fn jwks(&self) -> JwkSet {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let t = now();
        let mut keys: Vec<Jwk> = state.keys.iter().map(|k| k.jwk.clone()).collect();
        keys.extend(
            state
                .retired
                .iter()
                .filter(|r| r.until > t)
                .map(|r| r.jwk.clone()),
        );
        JwkSet { keys }
    }

    /// The OIDC discovery document.
    pub fn discovery(&self) -> Value {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let t = now();
        // Every published key's algorithm: a retired key's tokens are still being verified, and
        // a verifier that holds to this list would refuse them after a switch of key family.
        let retired = state.retired.iter().filter(|r| r.until > t).map(|r| r.alg);
        let mut algs: Vec<String> = (state.keys.iter().map(|k| k.alg))
            .chain(retired)
            .map(|alg| format!("{alg:?}"))
            .collect();
        algs.sort();
        algs.dedup();
        json!({
            "issuer": self.url,
            "jwks_uri": format!("{}/keys", self.url),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algs,
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "jti", "kubernetes.io"],
        })
    }

    /// Write `.well-known/openid-configuration` and `keys` under `out` for a public bucket.
    pub fn write_docs(&self, out: &Path) -> std::io::Result<Vec<PathBuf>> {
        let well_known = out.join(".well-known");
        std::fs::create_dir_all(&well_known)?;
        // Never an empty or partial document in place of a real one; public, so 0644.
        write_atomic(
            &well_known,
            "openid-configuration",
            &serde_json::to_vec_pretty(&self.discovery()).map_err(std::io::Error::other)?,
            0o644,
        )?;
        write_atomic(
            out,
            "keys",
            &serde_json::to_vec_pretty(&self.jwks()).map_err(std::io::Error::other)?,
            0o644,
        )?;
        Ok(vec![
            well_known.join("openid-configuration"),
            out.join("keys"),
        ])
    }
}

/// Create `path` holding a new ES256 key, mode 0600, never replacing an existing file.
///
/// The key is written whole to a dot-file beside it (which the key reload skips) and then
/// linked into place, so a server watching the directory never reads a half-written key, and
/// two concurrent runs cannot both win.
pub fn create_key_file(path: &Path) -> std::io::Result<()> {
    let pem = generate_es256_pem().map_err(std::io::Error::other)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a UTF-8 file name")
    })?;
    create_atomic(dir, name, pem.as_bytes(), 0o600)
}

/// Generate an ES256 (P-256) PKCS#8 PEM private key.
pub fn generate_es256_pem() -> Result<String, IssuerError> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map(|k| k.serialize_pem())
        .map_err(|e| IssuerError::Sign(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenvend_testkit::verify_web_identity;

    fn issuer(dir: &Path, ttl: u64) -> Issuer {
        issuer_checking(dir, ttl, false)
    }

    fn issuer_checking(dir: &Path, ttl: u64, publication: bool) -> Issuer {
        Issuer::new(
            "https://issuer.example.com/".into(),
            "sts.amazonaws.com".into(),
            Duration::from_secs(ttl),
            dir.to_owned(),
            publication,
        )
        .expect("issuer")
    }

    /// A new ES256 key file `name` in `dir`.
    fn add_key(dir: &Path, name: &str) {
        std::fs::write(dir.join(name), generate_es256_pem().expect("key")).expect("write");
    }

    /// The `kid` in a JWT's header.
    fn kid(token: &str) -> String {
        jsonwebtoken::decode_header(token)
            .expect("header")
            .kid
            .expect("kid")
    }

    /// The `kid`s of the key files named, in the directory or removed from it.
    fn kids(iss: &Issuer, files: &[&str]) -> HashSet<String> {
        let s = iss.state.read().expect("state");
        let in_dir = s.keys.iter().map(|k| KeyName::of(k));
        let retired = s.retired.iter().map(|r| r.key.clone());
        in_dir
            .chain(retired)
            .filter(|k| files.contains(&k.file.as_str()))
            .map(|k| k.kid)
            .collect()
    }

    fn id() -> Identity {
        Identity {
            namespace: "shop".into(),
            service_account: "orders".into(),
            pod_name: Some("orders-1".into()),
            pod_uid: Some("u1".into()),
        }
    }

    #[test]
    fn minted_tokens_carry_the_claims_and_verify_against_the_jwks() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(
            dir.path().join("2026-01.pem"),
            generate_es256_pem().expect("key"),
        )
        .expect("write");
        let iss = issuer(dir.path(), 3600);
        let t = iss.mint(&id()).expect("mint");
        let c = verify_web_identity(&iss.jwks(), &t.token).expect("verifies");
        assert_eq!(c["sub"], json!("system:serviceaccount:shop:orders"));
        assert_eq!(c["iss"], json!("https://issuer.example.com"));
        assert_eq!(c["kubernetes.io"]["pod"]["name"], json!("orders-1"));
        assert_eq!(
            c["exp"].as_i64().expect("exp") - c["iat"].as_i64().expect("iat"),
            3600
        );
        assert!(c["jti"].as_str().is_some_and(|j| j.len() == 36));
        assert!(t.expiration.ends_with('Z'));
        let d = iss.discovery();
        assert_eq!(d["jwks_uri"], json!("https://issuer.example.com/keys"));
        assert_eq!(d["id_token_signing_alg_values_supported"], json!(["ES256"]));
    }

    #[test]
    fn rotation_signs_with_the_newest_key_and_keeps_old_keys_published() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(
            dir.path().join("2026-01.pem"),
            generate_es256_pem().expect("key"),
        )
        .expect("write");
        let iss = issuer(dir.path(), 3600);
        let old = iss.mint(&id()).expect("mint");
        add_key(dir.path(), "2026-02.pem");
        assert!(iss.reload().expect("reload"));
        let new = iss.mint(&id()).expect("mint");
        assert_ne!(kid(&old.token), kid(&new.token));
        assert_eq!(iss.jwks().keys.len(), 2);
        // The old key file is removed: its tokens may still be valid, so it stays published.
        std::fs::remove_file(dir.path().join("2026-01.pem")).expect("rm");
        assert!(iss.reload().expect("reload"));
        assert_eq!(iss.jwks().keys.len(), 2);
        verify_web_identity(&iss.jwks(), &old.token).expect("old token still verifies");
        verify_web_identity(&iss.jwks(), &new.token).expect("new token verifies");
        assert!(!iss.reload().expect("no change"));
    }

    #[test]
    fn with_a_publication_check_only_published_keys_sign() {
        let dir = tempfile::tempdir().expect("tmp");
        let add = |name: &str| add_key(dir.path(), name);
        add("2026-01.pem");
        let iss = issuer_checking(dir.path(), 3600, true);
        let name = |s: &Signing| s.signer.as_ref().map(|k| k.file.clone());
        let waiting = |s: &Signing| s.waiting.iter().map(|k| k.file.clone()).collect::<Vec<_>>();

        // Not read yet: nothing signs, and the error says why.
        let err = iss.mint(&id()).expect_err("unchecked");
        assert!(matches!(err, IssuerError::Unpublished(_)));
        assert!(err.to_string().contains("has not been read yet"), "{err}");
        assert_eq!(waiting(&iss.signing()), ["2026-01.pem"]);
        iss.set_published(Err("404 Not Found".into()));
        let err = iss.mint(&id()).expect_err("unreadable");
        assert!(
            err.to_string().contains("could not be read: 404 Not Found")
                && err.to_string().contains("upload the documents")
                && err.to_string().contains("2026-01.pem"),
            "{err}"
        );

        // Read, without our key (nothing uploaded yet, or another issuer's keys only).
        iss.set_published(Ok(HashSet::from(["someone-else".to_owned()])));
        let err = iss.mint(&id()).expect_err("unpublished");
        assert!(
            err.to_string().contains("no signing key is in it")
                && err.to_string().contains("2026-01.pem"),
            "{err}"
        );
        assert_eq!(name(&iss.signing()), None);

        iss.set_published(Ok(kids(&iss, &["2026-01.pem"])));
        let first = iss.mint(&id()).expect("published key signs");
        assert_eq!(name(&iss.signing()), Some("2026-01.pem".into()));
        assert!(iss.signing().waiting.is_empty());

        // A newer key signs only once it is published; it is in tokenvend-sts's own JWKS at
        // once, so `issuer-docs` can be run and uploaded first.
        add("2026-02.pem");
        assert!(iss.reload().expect("reload"));
        assert_eq!(iss.jwks().keys.len(), 2);
        let held = iss.mint(&id()).expect("mint");
        assert_eq!(kid(&held.token), kid(&first.token));
        assert_eq!(name(&iss.signing()), Some("2026-01.pem".into()));
        assert_eq!(waiting(&iss.signing()), ["2026-02.pem"]);

        iss.set_published(Ok(kids(&iss, &["2026-01.pem", "2026-02.pem"])));
        let second = iss.mint(&id()).expect("mint");
        assert_ne!(kid(&second.token), kid(&first.token));
        assert_eq!(
            iss.signing().signer.expect("signer").kid,
            kid(&second.token)
        );
        assert!(iss.signing().waiting.is_empty());

        // The newest published key signs, whatever else is listed.
        add("2026-03.pem");
        assert!(iss.reload().expect("reload"));
        iss.set_published(Ok(kids(&iss, &["2026-01.pem", "2026-03.pem"])));
        assert_eq!(name(&iss.signing()), Some("2026-03.pem".into()));
        iss.set_published(Ok(kids(&iss, &["2026-01.pem", "2026-02.pem"])));
        assert_eq!(name(&iss.signing()), Some("2026-02.pem".into()));
        assert_eq!(waiting(&iss.signing()), ["2026-03.pem"]);
        // A JWKS that cannot be read keeps the keys it listed last.
        iss.set_published(Err("connection refused".into()));
        assert_eq!(name(&iss.signing()), Some("2026-02.pem".into()));

        // Without the check, the newest file signs as soon as it is read.
        let ungated = issuer(dir.path(), 3600);
        assert_eq!(name(&ungated.signing()), Some("2026-03.pem".into()));
        assert!(ungated.signing().waiting.is_empty());
    }

    #[test]
    fn keys_whose_tokens_are_valid_but_missing_from_the_published_jwks_are_found() {
        let dir = tempfile::tempdir().expect("tmp");
        let add = |name: &str| add_key(dir.path(), name);
        add("2026-01.pem");
        let iss = issuer_checking(dir.path(), 3600, true);
        let listed = |files: &[&str]| kids(&iss, files);
        let unlisted = || {
            iss.unlisted_in_use()
                .into_iter()
                .map(|(k, _)| k.file)
                .collect::<Vec<_>>()
        };
        assert!(unlisted().is_empty(), "nothing read yet");
        iss.set_published(Ok(listed(&["2026-01.pem"])));
        let t0 = now();
        iss.mint(&id()).expect("mint");
        add("2026-02.pem");
        assert!(iss.reload().expect("reload"));
        iss.set_published(Ok(listed(&["2026-01.pem", "2026-02.pem"])));
        iss.mint(&id()).expect("mint");
        assert!(unlisted().is_empty());

        // Uploaded without the old key while its tokens are valid: found, with their expiry.
        iss.set_published(Ok(listed(&["2026-02.pem"])));
        let found = iss.unlisted_in_use();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0.file, "2026-01.pem");
        assert!(
            (t0 + 3600..=now() + 3600).contains(&found[0].1),
            "{found:?}"
        );

        // A key that never signed is not: it only waits.
        add("2026-03.pem");
        assert!(iss.reload().expect("reload"));
        assert_eq!(unlisted(), ["2026-01.pem"]);
        assert_eq!(iss.signing().waiting.len(), 1);

        // Removed from the directory, it still is; and a reload keeps when each key signed.
        std::fs::remove_file(dir.path().join("2026-01.pem")).expect("rm");
        assert!(iss.reload().expect("reload"));
        assert_eq!(unlisted(), ["2026-01.pem"]);
        iss.set_published(Ok(listed(&["2026-01.pem", "2026-03.pem"])));
        assert_eq!(unlisted(), ["2026-02.pem"]);

        // Tokens that have expired no longer matter.
        let short = issuer_checking(dir.path(), 0, true);
        short.set_published(Ok(kids(&iss, &["2026-02.pem"])));
        short.mint(&id()).expect("mint");
        short.set_published(Ok(HashSet::new()));
        assert!(short.unlisted_in_use().is_empty());

        // Without a publication check, nothing is reported.
        assert!(issuer(dir.path(), 3600).unlisted_in_use().is_empty());
    }

    #[test]
    fn bad_key_dirs_are_clear_errors_and_keep_the_old_keys() {
        let dir = tempfile::tempdir().expect("tmp");
        let err = Issuer::new(
            "https://i".into(),
            "a".into(),
            Duration::from_secs(60),
            dir.path().to_owned(),
            false,
        )
        .err()
        .expect("empty dir");
        assert!(err.to_string().contains("no *.pem private key"), "{err}");
        std::fs::write(dir.path().join("a.pem"), generate_es256_pem().expect("key"))
            .expect("write");
        let iss = issuer(dir.path(), 60);
        std::fs::write(dir.path().join("b.pem"), "garbage").expect("write");
        let err = iss.reload().expect_err("garbage key");
        assert!(err.to_string().contains("b.pem"), "{err}");
        iss.mint(&id()).expect("old key still signs");
    }

    #[test]
    fn only_pem_files_not_hidden_are_keys() {
        let dir = tempfile::tempdir().expect("tmp");
        add_key(dir.path(), "2026-01.pem");
        // What a Secret mount and an editor leave beside the keys: none of it is a key.
        std::fs::write(dir.path().join("README.txt"), "rotate yearly").expect("write");
        std::fs::write(dir.path().join("2026-01.pem.bak"), "old").expect("write");
        std::fs::create_dir(dir.path().join("..2026_12_06_10_00_00.123")).expect("mkdir");
        // A key being written (keygen's dot-file) does not sign before it is linked in place.
        add_key(dir.path(), ".2026-02.pem.tmp");
        add_key(dir.path(), ".2026-03.pem");
        let iss = issuer(dir.path(), 60);
        assert_eq!(iss.jwks().keys.len(), 1);
        assert_eq!(
            iss.signing().signer.map(|k| k.file).as_deref(),
            Some("2026-01.pem")
        );
    }

    #[test]
    fn a_removed_key_is_published_a_token_lifetime_and_a_minute_and_once_if_put_back() {
        let dir = tempfile::tempdir().expect("tmp");
        add_key(dir.path(), "2026-01.pem");
        add_key(dir.path(), "2026-02.pem");
        let iss = issuer(dir.path(), 900);
        let old = std::fs::read(dir.path().join("2026-01.pem")).expect("read");
        std::fs::remove_file(dir.path().join("2026-01.pem")).expect("rm");
        let removed = now();
        assert!(iss.reload().expect("reload"));
        {
            let state = iss.state.read().expect("state");
            let [retired] = state.retired.as_slice() else {
                panic!("one retired key");
            };
            // Its last token may have been signed just before the removal.
            let until = retired.until - removed;
            assert!((900 + 60..=900 + 61).contains(&until), "{until}");
        }
        assert_eq!(iss.jwks().keys.len(), 2);

        // Put back (a Secret rolled back): one key, in the directory, not also retired.
        std::fs::write(dir.path().join("2026-01.pem"), old).expect("write");
        assert!(iss.reload().expect("reload"));
        assert!(iss.state.read().expect("state").retired.is_empty());
        let kids: Vec<_> = iss
            .jwks()
            .keys
            .into_iter()
            .map(|k| k.common.key_id)
            .collect();
        assert_eq!(kids.len(), 2, "{kids:?}");
        assert_ne!(kids[0], kids[1]);
    }

    #[test]
    fn rsa_and_p384_keys_sign_with_rs256_and_es384() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("a.pem"), generate_es256_pem().expect("key"))
            .expect("write");
        let iss = issuer(dir.path(), 60);
        // Each key added last signs with its family's algorithm; earlier keys stay published.
        let added = [
            ("b.pem", &rcgen::PKCS_RSA_SHA256, Algorithm::RS256),
            ("c.pem", &rcgen::PKCS_ECDSA_P384_SHA384, Algorithm::ES384),
        ];
        for (file, family, alg) in added {
            let key = rcgen::KeyPair::generate_for(family).expect("generate");
            std::fs::write(dir.path().join(file), key.serialize_pem()).expect("write");
            assert!(iss.reload().expect("key loads"), "{file}");
            let t = iss.mint(&id()).expect("mint");
            let header = jsonwebtoken::decode_header(&t.token).expect("header");
            assert_eq!(header.alg, alg, "{file}");
            verify_web_identity(&iss.jwks(), &t.token).expect("token verifies");
        }
        assert_eq!(
            iss.discovery()["id_token_signing_alg_values_supported"],
            json!(["ES256", "ES384", "RS256"])
        );
        assert_eq!(iss.jwks().keys.len(), 3);
    }

    #[test]
    fn discovery_lists_a_retired_keys_algorithm_while_its_key_is_published() {
        let dir = tempfile::tempdir().expect("tmp");
        let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("generate");
        std::fs::write(dir.path().join("a.pem"), rsa.serialize_pem()).expect("write");
        let iss = issuer(dir.path(), 3600);
        let old = iss.mint(&id()).expect("mint");
        let algs = |iss: &Issuer| iss.discovery()["id_token_signing_alg_values_supported"].clone();
        assert_eq!(algs(&iss), json!(["RS256"]));

        // The RSA key is replaced by an EC one: RS256 tokens stay valid for an hour.
        add_key(dir.path(), "b.pem");
        std::fs::remove_file(dir.path().join("a.pem")).expect("rm");
        assert!(iss.reload().expect("reload"));
        verify_web_identity(&iss.jwks(), &old.token).expect("old token still verifies");
        assert_eq!(algs(&iss), json!(["ES256", "RS256"]));

        // Once the retired key leaves the JWKS, its algorithm leaves discovery with it.
        iss.state.write().expect("state").retired[0].until = now() - 1;
        assert_eq!(iss.jwks().keys.len(), 1);
        assert_eq!(algs(&iss), json!(["ES256"]));
    }

    #[test]
    fn issuer_docs_are_written_atomically() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("k.pem"), generate_es256_pem().expect("key"))
            .expect("write");
        let iss = issuer(dir.path(), 60);
        let out = tempfile::tempdir().expect("out");
        let files = iss.write_docs(out.path()).expect("write");
        assert_eq!(files.len(), 2);
        let disc: Value = serde_json::from_slice(
            &std::fs::read(out.path().join(".well-known/openid-configuration")).expect("read"),
        )
        .expect("json");
        assert_eq!(disc["issuer"], json!("https://issuer.example.com"));
        let keys: JwkSet =
            serde_json::from_slice(&std::fs::read(out.path().join("keys")).expect("read"))
                .expect("jwks");
        assert_eq!(keys.keys.len(), 1);
    }

    #[test]
    fn keygen_creates_a_private_key_file_whole_and_never_replaces_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("2026-01.pem");
        create_key_file(&path).expect("created");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let first = std::fs::read(&path).expect("read");
        assert!(parse_key("2026-01.pem", &first).is_ok(), "a usable key");

        let err = create_key_file(&path).expect_err("exists");
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).expect("read"), first, "left alone");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["2026-01.pem"], "no temp file left behind");
        assert!(
            create_key_file(&dir.path().join("missing/k.pem")).is_err(),
            "a missing directory is an error"
        );
        // The issuer loads it as its signing key.
        assert_eq!(issuer(dir.path(), 3600).jwks().keys.len(), 1);
    }
}
