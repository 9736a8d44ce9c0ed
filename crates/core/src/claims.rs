//! Service-account identities and the JWT claims that carry them.

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::names::{is_dns_label, is_dns_subdomain};

/// Prefix of a service account's username / JWT subject.
pub const SA_USER_PREFIX: &str = "system:serviceaccount:";

/// Who presented a token: a service account, and the pod it is bound to when known.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Namespace of the service account.
    pub namespace: String,
    /// Service account name.
    pub service_account: String,
    /// Pod name, for pod-bound tokens.
    pub pod_name: Option<String>,
    /// Pod UID, for pod-bound tokens.
    pub pod_uid: Option<String>,
}

/// A username or claim set that does not name a service account.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    /// Not `system:serviceaccount:<namespace>:<name>`.
    #[error("not a service account: subject must be system:serviceaccount:<namespace>:<name>")]
    NotServiceAccount,
    /// The `kubernetes.io` claim disagrees with `sub`.
    #[error("kubernetes.io claims do not match the subject")]
    Inconsistent,
    /// Not a JWT (three base64url parts with a JSON payload).
    #[error("token is not a JWT")]
    NotJwt,
    /// A namespace, service account, pod name or pod UID no Kubernetes object can have.
    #[error("the {0} is not one Kubernetes allows")]
    BadName(&'static str),
}

impl Identity {
    /// A service account's identity, bound to no pod.
    pub fn service_account(namespace: impl Into<String>, name: impl Into<String>) -> Identity {
        Identity {
            namespace: namespace.into(),
            service_account: name.into(),
            pod_name: None,
            pod_uid: None,
        }
    }

    /// Parse `system:serviceaccount:<namespace>:<name>`.
    pub fn from_username(username: &str) -> Result<Identity, ClaimsError> {
        let rest = username
            .strip_prefix(SA_USER_PREFIX)
            .ok_or(ClaimsError::NotServiceAccount)?;
        let (namespace, name) = rest.split_once(':').ok_or(ClaimsError::NotServiceAccount)?;
        if namespace.is_empty() || name.is_empty() || name.contains(':') {
            return Err(ClaimsError::NotServiceAccount);
        }
        // Kubernetes' own rules (`serviceaccount.SplitUsername`). The parts are written into the
        // session-policy template as text, so nothing else may reach it, whoever signed the token.
        if !is_dns_label(namespace) {
            return Err(ClaimsError::BadName("namespace"));
        }
        if !is_dns_subdomain(name) {
            return Err(ClaimsError::BadName("service account name"));
        }
        Ok(Identity::service_account(namespace, name))
    }

    /// This identity bound to the pod named (each part when known), checked as Kubernetes
    /// names pods: the parts reach the policy template as text, as the namespace does.
    pub fn bound_to_pod(
        mut self,
        name: Option<String>,
        uid: Option<String>,
    ) -> Result<Identity, ClaimsError> {
        if name.as_deref().is_some_and(|n| !is_dns_subdomain(n)) {
            return Err(ClaimsError::BadName("pod name"));
        }
        // A UID is a UUID the API server made; letters, digits and '-' cover any form.
        let uid_ok = |u: &str| {
            !u.is_empty()
                && u.len() <= 64
                && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if uid.as_deref().is_some_and(|u| !uid_ok(u)) {
            return Err(ClaimsError::BadName("pod UID"));
        }
        (self.pod_name, self.pod_uid) = (name, uid);
        Ok(self)
    }

    /// `system:serviceaccount:<namespace>:<name>`.
    pub fn subject(&self) -> String {
        format!(
            "{SA_USER_PREFIX}{}:{}",
            self.namespace, self.service_account
        )
    }

    /// Identity from verified Kubernetes service-account claims; `sub` and `kubernetes.io` must agree.
    pub fn from_claims(claims: &SaClaims) -> Result<Identity, ClaimsError> {
        let mut id = Identity::from_username(&claims.sub)?;
        if let Some(k) = &claims.kubernetes {
            if k.namespace != id.namespace || k.serviceaccount.name != id.service_account {
                return Err(ClaimsError::Inconsistent);
            }
            if let Some(pod) = &k.pod {
                id = id.bound_to_pod(Some(pod.name.clone()), Some(pod.uid.clone()))?;
            }
        }
        Ok(id)
    }
}

/// `aud` is a string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `aud` contains `want`.
    pub fn contains(&self, want: &str) -> bool {
        match self {
            Audience::One(a) => a == want,
            Audience::Many(v) => v.iter().any(|a| a == want),
        }
    }
}

/// The claims of a Kubernetes service-account token that tokenvend reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaClaims {
    /// Issuer.
    pub iss: String,
    /// `system:serviceaccount:<ns>:<name>`.
    pub sub: String,
    /// Audiences.
    pub aud: Audience,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Token ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Kubernetes' private claims.
    #[serde(
        rename = "kubernetes.io",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kubernetes: Option<KubernetesClaims>,
}

/// The `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    /// Namespace.
    pub namespace: String,
    /// Service account.
    pub serviceaccount: ObjectRef,
    /// Bound pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
}

/// Name and UID of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Name.
    pub name: String,
    /// UID.
    #[serde(default)]
    pub uid: String,
}

/// The `exp` claim of a JWT, read WITHOUT verifying it: only for bounding cache lifetimes or
/// refresh times of a token that is verified elsewhere (or was just received from the issuer).
pub fn unverified_exp(token: &str) -> Result<i64, ClaimsError> {
    #[derive(Deserialize)]
    struct Exp {
        exp: i64,
    }
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ClaimsError::NotJwt);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| ClaimsError::NotJwt)?;
    serde_json::from_slice::<Exp>(&bytes)
        .map(|e| e.exp)
        .map_err(|_| ClaimsError::NotJwt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_must_be_service_accounts() {
        let id = Identity::from_username("system:serviceaccount:shop:orders").expect("sa");
        assert_eq!(
            (id.namespace.as_str(), id.service_account.as_str()),
            ("shop", "orders")
        );
        assert_eq!(id.subject(), "system:serviceaccount:shop:orders");
        for bad in [
            "alice",
            "system:serviceaccount:",
            "system:serviceaccount:shop",
            "system:serviceaccount::orders",
            "system:serviceaccount:shop:",
            "system:serviceaccount:shop:a:b",
            "system:node:n1",
        ] {
            assert_eq!(
                Identity::from_username(bad),
                Err(ClaimsError::NotServiceAccount),
                "{bad}"
            );
        }
        // Names Kubernetes would never give a service account: the parts reach the policy
        // template as text, so a quote there could rewrite the session policy.
        for (bad, part) in [
            (r#"system:serviceaccount:shop":orders"#, "namespace"),
            ("system:serviceaccount:Shop:orders", "namespace"),
            (
                &format!("system:serviceaccount:{}:orders", "n".repeat(64)),
                "namespace",
            ),
            (
                r#"system:serviceaccount:shop:orders","Effect"#,
                "service account name",
            ),
            (
                "system:serviceaccount:shop:orders..v2",
                "service account name",
            ),
            (
                &format!("system:serviceaccount:shop:{}", "s".repeat(254)),
                "service account name",
            ),
        ] {
            assert_eq!(
                Identity::from_username(bad),
                Err(ClaimsError::BadName(part)),
                "{bad}"
            );
        }
        // What Kubernetes does allow: a 63-character namespace, a 253-character name with dots.
        let long = format!(
            "system:serviceaccount:{}:{}",
            "n".repeat(63),
            ["s"; 127].join(".")
        );
        assert!(Identity::from_username(&long).is_ok());
    }

    #[test]
    fn claims_give_pod_binding_and_must_agree_with_sub() {
        let json = r#"{"iss":"https://k8s","sub":"system:serviceaccount:shop:orders","aud":["tokenvend"],
            "exp":2000000000,"iat":1,"nbf":1,"jti":"x",
            "kubernetes.io":{"namespace":"shop","serviceaccount":{"name":"orders","uid":"u1"},
                             "pod":{"name":"orders-1","uid":"p1"},"node":{"name":"n","uid":"n1"}}}"#;
        let c: SaClaims = serde_json::from_str(json).expect("claims");
        assert!(c.aud.contains("tokenvend") && !c.aud.contains("other"));
        let id = Identity::from_claims(&c).expect("identity");
        assert_eq!(id.pod_name.as_deref(), Some("orders-1"));
        assert_eq!(id.pod_uid.as_deref(), Some("p1"));
        let mut bad = c.clone();
        bad.kubernetes.as_mut().expect("k8s").namespace = "other".into();
        assert_eq!(Identity::from_claims(&bad), Err(ClaimsError::Inconsistent));
        // The pod's name and UID too reach the template as text.
        for (name, uid, part) in [
            ("orders-1\"", "p1", "pod name"),
            ("Orders-1", "p1", "pod name"),
            ("orders-1", "p1\"", "pod UID"),
            ("orders-1", "", "pod UID"),
        ] {
            let mut odd = c.clone();
            let pod = odd
                .kubernetes
                .as_mut()
                .and_then(|k| k.pod.as_mut())
                .expect("pod");
            (pod.name, pod.uid) = (name.into(), uid.into());
            assert_eq!(
                Identity::from_claims(&odd),
                Err(ClaimsError::BadName(part)),
                "{name} {uid}"
            );
        }
        let one: SaClaims = serde_json::from_str(
            r#"{"iss":"i","sub":"system:serviceaccount:a:b","aud":"x","exp":5}"#,
        )
        .expect("claims");
        assert!(one.aud.contains("x"));
        assert_eq!(Identity::from_claims(&one).expect("id").pod_name, None);
    }

    #[test]
    fn unverified_exp_reads_the_payload_and_rejects_non_jwts() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":1234}"#);
        assert_eq!(unverified_exp(&format!("e30.{payload}.sig")), Ok(1234));
        for bad in ["", "a.b", "a.b.c.d", "e30.!!!.s", "e30.e30.s"] {
            assert_eq!(unverified_exp(bad), Err(ClaimsError::NotJwt), "{bad}");
        }
    }
}
