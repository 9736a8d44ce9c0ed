//! Fuzzing the shared parsers every binary feeds untrusted text: role ARNs (pod annotations),
//! service-account usernames (TokenReview), JWT payloads read without verification, claim sets.

#[path = "oracles/iam_role_arn.rs"]
mod iam_role_arn;
#[path = "oracles/k8s_username.rs"]
mod k8s_username;

use proptest::prelude::*;
use tokenvend_core::claims::{SaClaims, unverified_exp};
use tokenvend_core::{Identity, RoleArn};
use tokenvend_testkit::{agreed, fuzz, mangled};

#[test]
fn fuzz_role_arns() {
    // Role ARNs against IAM's published patterns (`oracles/iam_role_arn.rs`): accepted exactly
    // when IAM would take them, and then as given.
    let arnish = prop_oneof![
        ".{0,80}",
        mangled(
            "arn:aws(-[a-z]{1,5}){0,2}:iam::[0-9]{10,13}:role(/[!-~]{0,10}){0,3}/[A-Za-z0-9+=,.@_ -]{0,70}",
            "/:-aA0 ~",
            2,
        ),
        ("/[!-~]{0,3}/|/", 505..=515usize).prop_map(|(tail, n)| format!(
            "arn:aws:iam::123456789012:role/{}{tail}app",
            "p".repeat(n)
        )),
    ];
    fuzz("role-arn", arnish, |s| {
        agreed(iam_role_arn::disagreement(&s))?;
        if let Ok(r) = RoleArn::parse(&s) {
            prop_assert_eq!(r.as_str(), s.as_str());
            let (name, prefix) = (
                format!("/{}", r.role_name()),
                format!("arn:{}:iam::", r.partition()),
            );
            prop_assert!(s.ends_with(&name) && s.starts_with(&prefix), "{:?}", s);
        }
        Ok(())
    });
}

#[test]
fn fuzz_usernames_and_claims() {
    fuzz(
        "username",
        prop_oneof![
            ".{0,60}",
            mangled(
                "system:serviceaccount:[a-z0-9-]{0,20}:[a-z0-9.-]{0,20}",
                ":.-aA\"_",
                2
            ),
            (60..70usize, 250..260usize).prop_map(|(ns, name)| format!(
                "system:serviceaccount:{}:{}",
                "n".repeat(ns),
                "s".repeat(name)
            )),
        ],
        |s| {
            // Accepted exactly when Kubernetes reads a service account from it, as the same one.
            agreed(k8s_username::disagreement(&s))?;
            if let Ok(id) = Identity::from_username(&s) {
                prop_assert_eq!(id.subject(), s);
            }
            Ok(())
        },
    );
    fuzz(
        "unverified-exp",
        prop_oneof![
            ".{0,100}",
            "[A-Za-z0-9_-]{0,20}\\.[A-Za-z0-9_=-]{0,60}\\.[A-Za-z0-9_-]{0,10}"
        ],
        |s| {
            let _ = unverified_exp(&s);
            Ok(())
        },
    );
    fuzz(
        "claims-json",
        proptest::collection::vec(any::<u8>(), 0..300),
        |bytes| {
            if let Ok(c) = serde_json::from_slice::<SaClaims>(&bytes) {
                let _ = Identity::from_claims(&c);
            }
            Ok(())
        },
    );
}
