//! Wire formats of tokenvend-sts responses, shared with the sidecar. `Debug` never shows secrets.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `POST /credentials` response: the seed's three keys plus `Expiration` (RFC 3339).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendedCredentials {
    /// Access key ID.
    #[serde(rename = "AWS_ACCESS_KEY_ID")]
    pub access_key_id: String,
    /// Secret access key.
    #[serde(rename = "AWS_SECRET_ACCESS_KEY")]
    pub secret_access_key: String,
    /// Session token.
    #[serde(rename = "AWS_SESSION_TOKEN")]
    pub session_token: String,
    /// Expiry, RFC 3339 (UTC).
    #[serde(rename = "Expiration")]
    pub expiration: String,
}

impl fmt::Debug for VendedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VendedCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &"<redacted>")
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// `POST /token` response: a web-identity JWT and its expiry.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendedToken {
    /// The signed JWT.
    pub token: String,
    /// Expiry, RFC 3339 (UTC).
    pub expiration: String,
}

impl fmt::Debug for VendedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VendedToken")
            .field("token", &"<redacted>")
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// Optional `POST /credentials` and `POST /token` request body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRequest {
    /// Role to assume instead of the service's default (must be allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
}

/// Error body of every tokenvend-sts error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, without secrets.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_keys_on_the_wire_and_no_secrets_in_debug() {
        let c = VendedCredentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: "s3cr3t".into(),
            session_token: "t0k3n".into(),
            expiration: "2026-11-24T06:00:00Z".into(),
        };
        let json = serde_json::to_value(&c).expect("json");
        for k in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "Expiration",
        ] {
            assert!(json.get(k).is_some(), "{k}");
        }
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cr3t") && !dbg.contains("t0k3n"), "{dbg}");
        // What tells one value from another stays: the key ID and the expiry.
        assert!(
            dbg.contains("ASIAEXAMPLE")
                && dbg.contains("2026-11-24T06:00:00Z")
                && dbg.contains("<redacted>"),
            "{dbg}"
        );
        let t = VendedToken {
            token: "eyJ.secret.sig".into(),
            expiration: "2026-11-24T07:00:00Z".into(),
        };
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("secret"), "{dbg}");
        assert!(
            dbg.contains("2026-11-24T07:00:00Z") && dbg.contains("<redacted>"),
            "{dbg}"
        );
    }
}
