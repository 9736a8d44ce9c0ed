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

#[test]
fn fuzz_image_references() {
    // References built from the distribution grammar (accepted whenever the name fits its 255
    // characters), and any text (never a panic; what is accepted is plain ASCII without spaces).
    let registry =
        "([a-z0-9]([a-zA-Z0-9-]{0,6}[a-z0-9])?(\\.[a-zA-Z0-9]{1,8}){0,2}(:[0-9]{1,5})?/)?";
    let component = "[a-z0-9]{1,6}((\\.|_|__|-{1,3})[a-z0-9]{1,6}){0,2}";
    let grammar = format!(
        "{registry}{component}(/{component}){{0,3}}(:[A-Za-z0-9_][A-Za-z0-9_.-]{{0,20}})?(@sha256:[0-9a-f]{{64}})?"
    );
    let references = prop_oneof![
        proptest::string::string_regex(&grammar)
            .expect("grammar")
            .prop_map(|s| (s, true)),
        ".{0,80}".prop_map(|s| (s, false)),
        "[a-zA-Z0-9:/@._-]{0,60}".prop_map(|s| (s, false)),
    ];
    fuzz(
        "image-reference",
        references,
        |(reference, from_grammar)| {
            let problem = tokenvend_core::image::reference_problem(&reference);
            let name_len = reference
                .split('@')
                .next()
                .map(|n| {
                    n.rsplit_once(':')
                        .filter(|(_, t)| !t.contains('/'))
                        .map_or(n, |(n, _)| n)
                        .len()
                })
                .unwrap_or(0);
            if from_grammar && name_len <= 255 {
                prop_assert_eq!(problem.as_deref(), None, "{}", reference);
            }
            if problem.is_none() {
                prop_assert!(
                    !reference.is_empty()
                        && reference.bytes().all(|b| b.is_ascii_graphic())
                        && reference.matches('@').count() <= 1,
                    "{}",
                    reference
                );
            }
            Ok(())
        },
    );
}
