//! Authorization: which namespaces and service accounts may use which endpoint and which roles.

use globset::{Glob, GlobMatcher};
use serde::Deserialize;
use tokenvend_core::Identity;

/// The two exchange endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `POST /credentials`.
    Credentials,
    /// `POST /token`.
    Token,
}

impl Endpoint {
    /// Name as in rules and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Credentials => "credentials",
            Endpoint::Token => "token",
        }
    }
}

/// Rules file as written (YAML).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    rules: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RuleSpec {
    namespaces: Vec<String>,
    #[serde(default = "any")]
    service_accounts: Vec<String>,
    #[serde(default = "both")]
    endpoints: Vec<Endpoint>,
    #[serde(default = "any")]
    roles: Vec<String>,
}

fn any() -> Vec<String> {
    vec!["*".into()]
}

fn both() -> Vec<Endpoint> {
    vec![Endpoint::Credentials, Endpoint::Token]
}

struct Rule {
    namespaces: Vec<GlobMatcher>,
    service_accounts: Vec<GlobMatcher>,
    endpoints: Vec<Endpoint>,
    roles: Vec<GlobMatcher>,
}

/// A rule set or allow-list entry that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthzConfigError(String);

/// The authorization policy: allowed roles, plus optional per-identity rules.
pub struct Authorizer {
    default_role: Option<String>,
    allowed_roles: Vec<GlobMatcher>,
    rules: Option<Vec<Rule>>,
}

/// Compile `list`. Entries are trimmed and empty ones dropped: `a, b` (a comma-separated env
/// var written with spaces) means `b`, where a pattern ` b` would silently match nothing.
fn globs(list: &[String], what: &str) -> Result<Vec<GlobMatcher>, AuthzConfigError> {
    list.iter()
        .map(|g| g.trim())
        .filter(|g| !g.is_empty())
        .map(|g| {
            Glob::new(g)
                .map(|g| g.compile_matcher())
                .map_err(|e| AuthzConfigError(format!("{what} pattern {g:?}: {e}")))
        })
        .collect()
}

fn matches(globs: &[GlobMatcher], s: &str) -> bool {
    globs.iter().any(|g| g.is_match(s))
}

impl Authorizer {
    /// `allowed_roles` are globs a `/credentials` request may name in `role_arn` (the default
    /// role is always allowed); `rules_yaml`, when given, must match every request.
    pub fn new(
        default_role: Option<String>,
        allowed_roles: &[String],
        rules_yaml: Option<&str>,
    ) -> Result<Self, AuthzConfigError> {
        let rules = match rules_yaml {
            None => None,
            Some(text) => {
                let file: RulesFile = serde_yaml_ng::from_str(text)
                    .map_err(|e| AuthzConfigError(format!("rules: {e}")))?;
                let mut rules = Vec::new();
                for (i, r) in file.rules.into_iter().enumerate() {
                    rules.push(Rule {
                        namespaces: globs(&r.namespaces, &format!("rules[{i}].namespaces"))?,
                        service_accounts: globs(
                            &r.service_accounts,
                            &format!("rules[{i}].serviceAccounts"),
                        )?,
                        endpoints: r.endpoints,
                        roles: globs(&r.roles, &format!("rules[{i}].roles"))?,
                    });
                }
                Some(rules)
            }
        };
        Ok(Authorizer {
            default_role,
            allowed_roles: globs(allowed_roles, "allowed role")?,
            rules,
        })
    }

    /// The role a request gets, or why it may not: `requested` overrides the default role.
    pub fn authorize(
        &self,
        id: &Identity,
        endpoint: Endpoint,
        requested: Option<&str>,
    ) -> Result<Option<String>, String> {
        let role = match (endpoint, requested) {
            // No role is assumed here for a token: the app's SDK assumes the role its pod names,
            // and that role's trust policy decides. The allow-list bounds what this service
            // assumes; only the rules, if any, look at a token's role.
            (Endpoint::Token, r) => r.map(str::to_owned),
            (_, Some(r)) if Some(r) == self.default_role.as_deref() => Some(r.to_owned()),
            (_, Some(r)) if matches(&self.allowed_roles, r) => Some(r.to_owned()),
            (_, Some(r)) => return Err(format!("role {r} is not among the allowed roles")),
            (_, None) => self.default_role.clone(),
        };
        let Some(rules) = &self.rules else {
            return Ok(role);
        };
        let allowed = rules.iter().any(|r| {
            r.endpoints.contains(&endpoint)
                && matches(&r.namespaces, &id.namespace)
                && matches(&r.service_accounts, &id.service_account)
                && role.as_deref().is_none_or(|role| matches(&r.roles, role))
        });
        if allowed {
            Ok(role)
        } else {
            Err(format!(
                "{} may not use /{}{}",
                id.subject(),
                endpoint.as_str(),
                role.map(|r| format!(" with role {r}")).unwrap_or_default()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ns: &str, sa: &str) -> Identity {
        Identity::service_account(ns, sa)
    }

    const DEFAULT: &str = "arn:aws:iam::123456789012:role/tvm";

    #[test]
    fn allowed_roles_written_with_spaces_or_stray_commas_mean_what_they_say() {
        // TOKENVEND_ALLOWED_ROLES="arn:...:role/a, arn:...:role/b," as clap splits it.
        let a = Authorizer::new(
            None,
            &[
                "arn:aws:iam::123456789012:role/a".into(),
                " arn:aws:iam::123456789012:role/b".into(),
                "".into(),
            ],
            None,
        )
        .expect("ok");
        for role in [
            "arn:aws:iam::123456789012:role/a",
            "arn:aws:iam::123456789012:role/b",
        ] {
            assert_eq!(
                a.authorize(&id("x", "y"), Endpoint::Credentials, Some(role)),
                Ok(Some(role.to_owned()))
            );
        }
        assert!(
            a.authorize(
                &id("x", "y"),
                Endpoint::Credentials,
                Some("arn:aws:iam::123456789012:role/c")
            )
            .is_err()
        );
    }

    #[test]
    fn without_rules_every_identity_may_use_the_default_and_allowed_roles() {
        let a = Authorizer::new(
            Some(DEFAULT.into()),
            &["arn:aws:iam::123456789012:role/apps/*".into()],
            None,
        )
        .expect("ok");
        assert_eq!(
            a.authorize(&id("x", "y"), Endpoint::Credentials, None),
            Ok(Some(DEFAULT.into()))
        );
        assert!(
            a.authorize(&id("x", "y"), Endpoint::Credentials, Some(DEFAULT))
                .is_ok()
        );
        assert!(
            a.authorize(
                &id("x", "y"),
                Endpoint::Credentials,
                Some("arn:aws:iam::123456789012:role/apps/team/a")
            )
            .is_ok()
        );
        let err = a
            .authorize(
                &id("x", "y"),
                Endpoint::Credentials,
                Some("arn:aws:iam::123456789012:role/admin"),
            )
            .expect_err("denied");
        assert!(err.contains("not among the allowed roles"));
    }

    #[test]
    fn a_token_is_given_for_any_role_a_pod_names_unless_a_rule_says_otherwise() {
        // tokenvend-sts assumes nothing for /token: the allow-list is not the bound there, and
        // an issuer-only service (no default role, no allow-list) serves every pod.
        let named = "arn:aws:iam::123456789012:role/shop/orders-writer";
        for a in [
            Authorizer::new(None, &[], None).expect("ok"),
            Authorizer::new(
                Some(DEFAULT.into()),
                &["arn:aws:iam::123456789012:role/apps/*".into()],
                None,
            )
            .expect("ok"),
        ] {
            assert_eq!(
                a.authorize(&id("shop", "orders"), Endpoint::Token, Some(named)),
                Ok(Some(named.into()))
            );
            assert_eq!(
                a.authorize(&id("shop", "orders"), Endpoint::Token, None),
                Ok(None),
                "the default role is the one /credentials vends, not a token's"
            );
            assert!(
                a.authorize(&id("shop", "orders"), Endpoint::Credentials, Some(named))
                    .is_err()
            );
        }
        // Rules still bound the roles a token may be asked for.
        let rules = r#"
rules:
- namespaces: ["shop"]
  endpoints: [token]
  roles: ["arn:aws:iam::123456789012:role/shop/*"]
"#;
        let a = Authorizer::new(None, &[], Some(rules)).expect("ok");
        assert!(
            a.authorize(&id("shop", "orders"), Endpoint::Token, Some(named))
                .is_ok()
        );
        assert_eq!(
            a.authorize(
                &id("shop", "orders"),
                Endpoint::Token,
                Some("arn:aws:iam::123456789012:role/admin")
            ),
            Err(
                "system:serviceaccount:shop:orders may not use /token with role \
                 arn:aws:iam::123456789012:role/admin"
                    .into()
            )
        );
    }

    #[test]
    fn a_rule_without_endpoints_or_roles_grants_both_endpoints_and_every_allowed_role() {
        let a = Authorizer::new(
            Some(DEFAULT.into()),
            &["arn:aws:iam::123456789012:role/apps/*".into()],
            Some("rules:\n- namespaces: [shop]\n"),
        )
        .expect("ok");
        let shop = id("shop", "orders");
        for endpoint in [Endpoint::Credentials, Endpoint::Token] {
            assert!(a.authorize(&shop, endpoint, None).is_ok(), "{endpoint:?}");
            let role = "arn:aws:iam::123456789012:role/apps/orders";
            assert!(
                a.authorize(&shop, endpoint, Some(role)).is_ok(),
                "{endpoint:?}"
            );
            assert!(a.authorize(&id("bank", "orders"), endpoint, None).is_err());
        }
    }

    #[test]
    fn rules_match_namespace_service_account_endpoint_and_role() {
        let rules = r#"
rules:
- namespaces: ["team-*"]
  serviceAccounts: ["app-*"]
  endpoints: [credentials]
  roles: ["arn:aws:iam::123456789012:role/team-*", "arn:aws:iam::123456789012:role/tvm"]
- namespaces: ["batch"]
  endpoints: [token]
"#;
        let a = Authorizer::new(
            Some(DEFAULT.into()),
            &["arn:aws:iam::123456789012:role/*".into()],
            Some(rules),
        )
        .expect("ok");
        assert!(
            a.authorize(&id("team-a", "app-1"), Endpoint::Credentials, None)
                .is_ok()
        );
        assert!(
            a.authorize(
                &id("team-a", "app-1"),
                Endpoint::Credentials,
                Some("arn:aws:iam::123456789012:role/team-a")
            )
            .is_ok()
        );
        assert!(
            a.authorize(
                &id("team-a", "app-1"),
                Endpoint::Credentials,
                Some("arn:aws:iam::123456789012:role/other")
            )
            .is_err()
        );
        assert!(
            a.authorize(&id("team-a", "app-1"), Endpoint::Token, None)
                .is_err(),
            "endpoint not granted"
        );
        assert!(
            a.authorize(&id("team-a", "db"), Endpoint::Credentials, None)
                .is_err(),
            "sa not granted"
        );
        assert!(
            a.authorize(&id("batch", "anything"), Endpoint::Token, None)
                .is_ok()
        );
        let err = a
            .authorize(&id("prod", "x"), Endpoint::Token, None)
            .expect_err("denied");
        assert_eq!(err, "system:serviceaccount:prod:x may not use /token");
    }

    #[test]
    fn bad_rules_are_refused_with_the_place() {
        let err = Authorizer::new(None, &[], Some("rules:\n- namespaces: ['[']\n"))
            .err()
            .expect("bad glob");
        assert!(err.to_string().contains("rules[0].namespaces"), "{err}");
        let err = Authorizer::new(None, &[], Some("rules:\n- namespace: ['a']\n"))
            .err()
            .expect("typo");
        assert!(err.to_string().contains("namespace"), "{err}");
    }
}
