//! Fuzzing the shared parsers every binary feeds untrusted text: role ARNs (pod annotations),
//! service-account usernames (TokenReview), JWT payloads read without verification, claim sets.

use proptest::prelude::*;
use tokenvend_core::claims::{SaClaims, unverified_exp};
use tokenvend_core::{Identity, RoleArn};
use tokenvend_testkit::fuzz;

#[test]
fn fuzz_role_arns() {
    let arnish = prop_oneof![
        ".{0,80}",
        "arn:aws(-[a-z]{1,5}){0,2}:iam::[0-9]{10,13}:role(/[!-~]{0,10}){0,3}/[A-Za-z0-9+=,.@_ -]{0,70}",
    ];
    fuzz("role-arn", arnish, |s| {
        if let Ok(r) = RoleArn::parse(&s) {
            prop_assert_eq!(r.as_str(), s.as_str());
            let prefix = format!("arn:{}:iam::", r.partition());
            prop_assert!(s.starts_with(&prefix));
            prop_assert!(
                s.ends_with(r.role_name())
                    && !r.role_name().is_empty()
                    && r.role_name().len() <= 64
            );
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
            "system:serviceaccount:[a-z:-]{0,20}:[a-z:-]{0,20}"
        ],
        |s| {
            if let Ok(id) = Identity::from_username(&s) {
                prop_assert_eq!(id.subject(), s);
                prop_assert!(!id.namespace.contains(':') && !id.service_account.contains(':'));
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
