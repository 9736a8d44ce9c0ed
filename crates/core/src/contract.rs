//! The pod contract: names the webhook writes and the sidecar and SDKs read.

/// Default prefix of the opt-in label and of every annotation.
pub const DEFAULT_PREFIX: &str = "tremolo.io";

/// Label (value `"true"`) and annotation (value: role ARN) suffix: `<prefix>/aws-role`.
pub const ROLE_KEY: &str = "aws-role";
/// Annotation suffix selecting the mode: `<prefix>/aws-mode`.
pub const MODE_KEY: &str = "aws-mode";
/// Annotation suffix listing containers to leave alone: `<prefix>/aws-skip-containers`.
pub const SKIP_CONTAINERS_KEY: &str = "aws-skip-containers";
/// Annotation suffix where the webhook records its admission warnings on the pod it patched:
/// `<prefix>/aws-warnings` (a controller's pod shows them to nobody otherwise).
pub const WARNINGS_KEY: &str = "aws-warnings";

/// The only opt-in label value.
pub const OPT_IN_VALUE: &str = "true";

/// The label value that says, explicitly, to leave the pod alone (as no label does).
pub const OPT_OUT_VALUE: &str = "false";

/// Audience of the projected token in `projected` mode (what AWS STS expects).
pub const AWS_STS_AUDIENCE: &str = "sts.amazonaws.com";

/// Directory of the projected service-account token (sidecar; app containers in `projected` mode).
pub const SA_TOKEN_DIR: &str = "/var/run/secrets/tremolo.io/serviceaccount";
/// In-memory directory the sidecar writes and app containers read.
pub const SHARED_DIR: &str = "/var/run/secrets/tremolo.io/aws";
/// Volume name of the projected service-account token.
pub const SA_TOKEN_VOLUME: &str = "tokenvend-sa-token";
/// Volume name of the shared in-memory directory.
pub const SHARED_VOLUME: &str = "tokenvend-aws";
/// Path of the sidecar binary inside its image (exec probes use it).
pub const SIDECAR_BINARY: &str = "/usr/local/bin/tokenvend-sidecar";
/// HTTP path of the sidecar's loopback container-credentials endpoint.
pub const CREDENTIALS_PATH: &str = "/credentials";
/// Env var of the sidecar holding the PEM CA bundle for the exchange URL.
pub const SIDECAR_CA_PEM_ENV: &str = "TOKENVEND_CA_PEM";

/// Environment variables injected into application containers.
pub mod env {
    /// Role to assume with the web-identity token.
    pub const AWS_ROLE_ARN: &str = "AWS_ROLE_ARN";
    /// Path of the web-identity token file.
    pub const AWS_WEB_IDENTITY_TOKEN_FILE: &str = "AWS_WEB_IDENTITY_TOKEN_FILE";
    /// Session name SDKs pass to AssumeRoleWithWebIdentity.
    pub const AWS_ROLE_SESSION_NAME: &str = "AWS_ROLE_SESSION_NAME";
    /// Region read by the JS, Java, Go and Rust SDKs.
    pub const AWS_REGION: &str = "AWS_REGION";
    /// Region read by boto3 and the AWS CLI.
    pub const AWS_DEFAULT_REGION: &str = "AWS_DEFAULT_REGION";
    /// Makes older SDKs use the regional STS endpoint.
    pub const AWS_STS_REGIONAL_ENDPOINTS: &str = "AWS_STS_REGIONAL_ENDPOINTS";
    /// URL of the sidecar's container-credentials endpoint.
    pub const AWS_CONTAINER_CREDENTIALS_FULL_URI: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";
    /// File holding the Authorization value for the credentials endpoint.
    pub const AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: &str =
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE";
}

/// File names inside the shared in-memory directory.
pub mod files {
    /// Web-identity JWT written by the sidecar.
    pub const WEB_IDENTITY_TOKEN: &str = "token";
    /// Random Authorization value for the loopback credentials endpoint.
    pub const AUTH_TOKEN: &str = "auth-token";
    /// `credential_process` JSON (Version 1).
    pub const CREDENTIAL_PROCESS: &str = "credentials.json";
    /// Why the sidecar's latest exchange failed; present only while it stays failed.
    pub const LAST_ERROR: &str = "last-error";
    /// The exchange CA bundle the sidecar took from tokenvend-sts after admission (CA rotation).
    pub const EXCHANGE_CA: &str = "exchange-ca.pem";
    /// File name of the projected service-account token inside its volume.
    pub const SA_TOKEN: &str = "token";
}

/// Join a prefix and a key into a label or annotation name.
pub fn key(prefix: &str, suffix: &str) -> String {
    format!("{prefix}/{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_joins_prefix_and_suffix() {
        assert_eq!(key(DEFAULT_PREFIX, ROLE_KEY), "tremolo.io/aws-role");
        assert_eq!(key("example.com", MODE_KEY), "example.com/aws-mode");
    }
}
