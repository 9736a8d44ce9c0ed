//! The shared parsers every binary feeds untrusted text (the first byte picks one): role ARNs
//! from pod annotations, service-account usernames from TokenReview, the unverified `exp` of a
//! JWT, claim sets, session names, and image references. Never a panic, and what is accepted is
//! what was given; a role ARN is accepted exactly when IAM's patterns take it, a username when
//! Kubernetes reads a service account from it, an image reference when the kubelet accepts it.
#![no_main]

#[path = "../../crates/core/tests/oracles/iam_role_arn.rs"]
mod iam_role_arn;
#[path = "../../crates/core/tests/oracles/k8s_username.rs"]
mod k8s_username;
#[path = "../../crates/core/tests/oracles/kubelet_image.rs"]
mod kubelet_image;

use std::sync::LazyLock;

use kubelet_image::Kubelet;
use libfuzzer_sys::fuzz_target;
use tokenvend_core::claims::{SaClaims, unverified_exp};
use tokenvend_core::session::session_name;
use tokenvend_core::{Identity, RoleArn};

static KUBELET: LazyLock<Kubelet> = LazyLock::new(Kubelet::compile);

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    if pick % 6 == 3 {
        if let Ok(claims) = serde_json::from_slice::<SaClaims>(rest)
            && let Ok(id) = Identity::from_claims(&claims)
        {
            assert_eq!(id.subject(), claims.sub);
        }
        return;
    }
    let Ok(s) = std::str::from_utf8(rest) else {
        return;
    };
    match pick % 6 {
        0 => {
            assert_eq!(iam_role_arn::disagreement(s), None);
            if let Ok(arn) = RoleArn::parse(s) {
                assert_eq!(arn.as_str(), s);
                assert!(s.starts_with(&format!("arn:{}:iam::", arn.partition())));
                let name = arn.role_name();
                assert!(!name.is_empty() && name.len() <= 64 && s.ends_with(name));
                assert!(s[..s.len() - name.len()].ends_with('/'));
            }
        }
        1 => {
            assert_eq!(k8s_username::disagreement(s), None);
            if let Ok(id) = Identity::from_username(s) {
                assert_eq!(id.subject(), s);
            }
        }
        2 => {
            let _ = unverified_exp(s);
        }
        5 => {
            assert_eq!(KUBELET.disagreement(s), None);
        }
        _ => {
            let name = session_name(s);
            assert!((2..=64).contains(&name.len()), "{name:?}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b)),
                "{name:?}"
            );
        }
    }
});
