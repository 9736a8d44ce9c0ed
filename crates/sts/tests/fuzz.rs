//! Fuzzing tokenvend-sts's token validation with arbitrary and mangled bearer tokens against a
//! real JWKS: every input is rejected or accepted without a panic, and nothing but a correctly
//! signed, unexpired token for the right audience and issuer is accepted.

use std::time::Duration;

use proptest::prelude::*;
use tokenvend_sts::validate::{JwksSource, JwksValidator};
use tokenvend_testkit::{CLUSTER_ISSUER, Cluster, fuzz};

#[test]
fn fuzz_bearer_tokens() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = Cluster::new();
    let dir = tempfile::tempdir().expect("tmp");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::to_vec(&cluster.jwks).expect("jwks")).expect("write");
    let v = rt
        .block_on(JwksValidator::new(
            JwksSource::File(jwks),
            CLUSTER_ISSUER.into(),
            "tokenvend".into(),
            Duration::from_secs(2),
        ))
        .expect("validator");
    let good = cluster.token("shop", "orders", Some("p"), "tokenvend", 600);
    assert!(rt.block_on(v.validate(&good)).is_ok());
    let tokens = prop_oneof![
        ".{0,200}",
        // Mangle a valid token: every changed byte must make it invalid.
        (0..good.len(), "[A-Za-z0-9_=.-]").prop_map({
            let good = good.clone();
            move |(i, c)| {
                let mut t = good.clone();
                t.replace_range(i..i + 1, &c);
                t
            }
        }),
    ];
    fuzz("bearer-token", tokens, |t| {
        let r = rt.block_on(v.validate(&t));
        if t != good {
            // A changed signature byte can still decode to the same signature bits only in the
            // last base64 character's padding bits; anything else must be rejected.
            let same_prefix = t.len() == good.len() && t[..t.len() - 1] == good[..good.len() - 1];
            prop_assert!(r.is_err() || same_prefix, "accepted a mangled token");
        }
        Ok(())
    });
}
