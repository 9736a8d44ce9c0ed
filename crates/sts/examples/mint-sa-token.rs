//! Test tool: plays the Kubernetes API server's token issuer for local runs (load tests, e2e).
//! Mints a service-account JWT with Kubernetes' claims, signed by a "cluster" key, and writes
//! the matching JWKS that tokenvend-sts can trust with `--validation jwks --jwks-file`.
//!
//! mint-sa-token --key cluster.pem [--create-key] --jwks-out jwks.json --issuer URL
//!   --namespace NS --service-account SA [--pod NAME] --audience AUD --ttl SECONDS

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use jsonwebtoken::jwk::{Jwk, JwkSet, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// PEM EC P-256 private key of the "cluster".
    #[arg(long)]
    key: PathBuf,
    /// Create the key file first if it does not exist.
    #[arg(long)]
    create_key: bool,
    /// Write the JWKS of the key here.
    #[arg(long)]
    jwks_out: Option<PathBuf>,
    /// `iss` of the token.
    #[arg(long, default_value = "https://kubernetes.default.svc.cluster.local")]
    issuer: String,
    /// Namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Service account.
    #[arg(long, default_value = "default")]
    service_account: String,
    /// Pod the token is bound to.
    #[arg(long)]
    pod: Option<String>,
    /// Audience.
    #[arg(long, default_value = "tokenvend")]
    audience: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: i64,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if a.create_key && !a.key.exists() {
        let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?.serialize_pem();
        std::fs::write(&a.key, pem).with_context(|| format!("writing {}", a.key.display()))?;
    }
    let pem = std::fs::read(&a.key).with_context(|| format!("reading {}", a.key.display()))?;
    let key = EncodingKey::from_ec_pem(&pem)?;
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256)?;
    let kid = jwk.thumbprint(ThumbprintHash::SHA256)?;
    jwk.common.key_id = Some(kid.clone());
    if let Some(out) = &a.jwks_out {
        std::fs::write(out, serde_json::to_vec(&JwkSet { keys: vec![jwk] })?)?;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let mut k8s = json!({"namespace": a.namespace, "serviceaccount": {"name": a.service_account, "uid": "00000000-0000-0000-0000-000000000001"}});
    if let Some(p) = &a.pod {
        k8s["pod"] = json!({"name": p, "uid": "00000000-0000-0000-0000-000000000002"});
    }
    let claims = json!({
        "iss": a.issuer,
        "sub": format!("system:serviceaccount:{}:{}", a.namespace, a.service_account),
        "aud": [a.audience],
        "iat": now, "nbf": now, "exp": now + a.ttl,
        "jti": uuid::Uuid::new_v4().to_string(),
        "kubernetes.io": k8s,
    });
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid);
    print!("{}", jsonwebtoken::encode(&header, &claims, &key)?);
    Ok(())
}
