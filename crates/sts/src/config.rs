//! Command line and environment: the seed's plain env names plus `TOKENVEND_*` for the rest.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
pub use tokenvend_core::logging::LogFormat;
use tokenvend_core::logging::LogLevel;

/// `tokenvend-sts`: the token vending machine and web-identity issuer.
#[derive(Debug, Parser)]
#[command(name = "tokenvend-sts", version, about)]
pub struct Cli {
    /// One-off commands; without one the service runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Service settings.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the OIDC discovery document and JWKS (for upload to a public bucket) and exit.
    IssuerDocs {
        /// Output directory: writes .well-known/openid-configuration and keys.
        #[arg(long)]
        out: PathBuf,
    },
    /// Generate an ES256 (P-256) signing key as a PKCS#8 PEM file (mode 0600) and exit.
    Keygen {
        /// File to create (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
    },
}

/// How service-account tokens are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ValidationMode {
    /// Ask the Kubernetes API (TokenReview).
    Tokenreview,
    /// Verify locally against the cluster's JWKS.
    Jwks,
}

/// Settings of the running service.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Listen address; overrides PORT.
    #[arg(long, env = "TOKENVEND_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Port on every address, IPv4 and IPv6 (`[::]`), when --listen is not given.
    #[arg(long, env = "PORT", default_value_t = 8000)]
    pub port: u16,
    /// Serve HTTPS with this PEM certificate chain (reloaded when it changes).
    #[arg(long, env = "TOKENVEND_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM key for --tls-cert.
    #[arg(long, env = "TOKENVEND_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM bundle of the CAs clients should trust for --tls-cert (the serving Secret's
    /// `ca.crt`), served at GET /ca-bundle so sidecars follow a CA rotation; read on each request.
    #[arg(long, env = "TOKENVEND_CA_BUNDLE_FILE", requires = "tls_cert")]
    pub ca_bundle_file: Option<PathBuf>,
    /// How often the --tls-cert and --tls-key files are checked for changes, seconds.
    #[arg(long, env = "TOKENVEND_CERT_RELOAD_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub cert_reload_seconds: u64,
    /// Seconds to keep serving after SIGTERM before refusing new connections, while kube-proxy
    /// learns the endpoint is gone.
    #[arg(long, env = "TOKENVEND_SHUTDOWN_DELAY_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=60))]
    pub shutdown_delay_seconds: u64,
    /// Connections held at once; one more waits (before its TLS handshake) for one to close.
    /// Sidecars hold one only while they refresh.
    #[arg(long, env = "TOKENVEND_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: u32,
    /// Default role for POST /credentials (enables that endpoint). Without it, the seed's
    /// `AWS_ROLE_ARN` is read, unless `AWS_WEB_IDENTITY_TOKEN_FILE` makes that the SDK's own role.
    #[arg(long, env = "TOKENVEND_ROLE_ARN")]
    pub role_arn: Option<String>,
    /// Globs of other roles a request may ask for in its body (comma-separated).
    #[arg(long, env = "TOKENVEND_ALLOWED_ROLES", value_delimiter = ',')]
    pub allowed_roles: Vec<String>,
    /// AWS region of the STS client (also read by the AWS SDK itself).
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    /// Jinja2 session-policy template; empty for no session policy.
    #[arg(
        long,
        env = "POLICY_TEMPLATE_PATH",
        default_value = "/etc/token-vending-machine/policy.json"
    )]
    pub policy_template_path: String,
    /// DurationSeconds of assumed-role sessions (900-43200).
    #[arg(long, env = "SESSION_DURATION_SECONDS", default_value_t = 3600)]
    pub session_duration_seconds: i32,
    /// Allow SESSION_DURATION_SECONDS below 900 and TOKENVEND_TOKEN_TTL_SECONDS below 60 (only for
    /// tests against moto: AWS refuses such sessions).
    #[arg(long, env = "TOKENVEND_ALLOW_SHORT_SESSIONS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_short_sessions: bool,
    /// DEBUG, INFO, WARNING or ERROR (RUST_LOG, when set, wins).
    #[arg(long, env = "LOG_LEVEL", default_value = "INFO")]
    pub log_level: String,
    /// Log format.
    #[arg(long, env = "TOKENVEND_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Token validation mode.
    #[arg(long, env = "TOKENVEND_VALIDATION", value_enum, default_value_t = ValidationMode::Tokenreview)]
    pub validation: ValidationMode,
    /// Audience service-account tokens must carry (the webhook's projected token audience).
    #[arg(long, env = "TOKENVEND_EXPECTED_AUDIENCE", default_value = "tokenvend")]
    pub expected_audience: String,
    /// jwks mode: the cluster's service-account issuer (expected `iss`; discovery source);
    /// none: the issuer and its keys through the Kubernetes API.
    #[arg(long, env = "TOKENVEND_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// jwks mode: a JWKS file instead of OIDC discovery.
    #[arg(long, env = "TOKENVEND_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// jwks mode: PEM CA bundle for the discovery and JWKS URLs.
    #[arg(long, env = "TOKENVEND_OIDC_CA_FILE")]
    pub oidc_ca_file: Option<PathBuf>,
    /// Seconds a positive validation is cached (never past the token's exp; 0 disables).
    #[arg(long, env = "TOKENVEND_VALIDATION_CACHE_SECONDS", default_value_t = 60)]
    pub validation_cache_seconds: u64,
    /// Timeout of every upstream call (STS, TokenReview, JWKS), seconds.
    #[arg(long, env = "TOKENVEND_UPSTREAM_TIMEOUT_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=120))]
    pub upstream_timeout_seconds: u64,
    /// YAML authorization rules (namespaces, serviceAccounts, endpoints, roles globs).
    #[arg(long, env = "TOKENVEND_RULES_FILE")]
    pub rules_file: Option<PathBuf>,
    /// Public issuer URL of minted tokens (enables POST /token, /keys and discovery).
    #[arg(long, env = "TOKENVEND_ISSUER_URL", requires = "signing_key_dir")]
    pub issuer_url: Option<String>,
    /// Directory of PEM signing keys; the lexicographically last one signs.
    #[arg(long, env = "TOKENVEND_SIGNING_KEY_DIR", requires = "issuer_url")]
    pub signing_key_dir: Option<PathBuf>,
    /// The JWKS AWS reads (the uploaded discovery's `jwks_uri`): a key signs only once it is
    /// listed there, checked with the key directory.
    #[arg(long, env = "TOKENVEND_PUBLISHED_JWKS_URL", requires = "issuer_url")]
    pub published_jwks_url: Option<String>,
    /// How often the signing-key directory is checked for changes, seconds.
    #[arg(long, env = "TOKENVEND_KEY_RELOAD_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub key_reload_seconds: u64,
    /// `aud` of minted tokens.
    #[arg(
        long,
        env = "TOKENVEND_ISSUED_AUDIENCE",
        default_value = "sts.amazonaws.com"
    )]
    pub issued_audience: String,
    /// Lifetime of minted tokens, seconds (60-43200; shorter only with TOKENVEND_ALLOW_SHORT_SESSIONS).
    #[arg(long, env = "TOKENVEND_TOKEN_TTL_SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=43200))]
    pub token_ttl_seconds: u64,
}

/// The default role to vend and the setting it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRole {
    /// The role ARN, not yet parsed.
    pub arn: String,
    /// `TOKENVEND_ROLE_ARN` (or `--role-arn`), or the seed's `AWS_ROLE_ARN`.
    pub setting: &'static str,
}

/// The role `POST /credentials` vends by default. `env` reads the process environment.
///
/// `AWS_ROLE_ARN` is the seed's name for it, and also the AWS SDK's: with
/// `AWS_WEB_IDENTITY_TOKEN_FILE` set (IRSA on EKS injects both, and keeps an `AWS_ROLE_ARN` the
/// manifest already has), the SDK assumes that role as tokenvend-sts's own identity. Read as
/// the role to vend as well, the service would sign in as the role it vends; so in that case
/// only `TOKENVEND_ROLE_ARN` names the role to vend.
pub fn default_role(
    role_arn: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<DefaultRole>, String> {
    if let Some(arn) = role_arn {
        return Ok(Some(DefaultRole {
            arn: arn.to_owned(),
            setting: "TOKENVEND_ROLE_ARN",
        }));
    }
    let Some(arn) = env("AWS_ROLE_ARN") else {
        return Ok(None);
    };
    if env("AWS_WEB_IDENTITY_TOKEN_FILE").is_some() {
        return Err(format!(
            "AWS_ROLE_ARN {arn:?} is the role the AWS SDK assumes for tokenvend-sts itself, because \
             AWS_WEB_IDENTITY_TOKEN_FILE is set (IRSA); name the role to vend with TOKENVEND_ROLE_ARN"
        ));
    }
    Ok(Some(DefaultRole {
        arn,
        setting: "AWS_ROLE_ARN",
    }))
}

/// The longest session AWS grants to AssumeRole called with a role session's credentials (role
/// chaining).
pub const ROLE_CHAINING_MAX_SECONDS: i32 = 3600;

/// Why `SESSION_DURATION_SECONDS` will be refused by AWS, when tokenvend-sts's own identity is a
/// role session from a web identity (IRSA): AssumeRole from a role session is role chaining,
/// which AWS limits to one hour. `env` reads the process environment. Static keys in the
/// environment come first in the SDK's chain, so with them there is no chaining.
pub fn chained_session_problem(
    duration_seconds: i32,
    env: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
    let web_identity = set("AWS_WEB_IDENTITY_TOKEN_FILE") && set("AWS_ROLE_ARN");
    (duration_seconds > ROLE_CHAINING_MAX_SECONDS && web_identity && !set("AWS_ACCESS_KEY_ID"))
        .then(|| {
            format!(
                "SESSION_DURATION_SECONDS {duration_seconds}: tokenvend-sts signs in as a role \
                 (AWS_WEB_IDENTITY_TOKEN_FILE, IRSA), and AWS limits a role assumed from a role \
                 session (role chaining) to {ROLE_CHAINING_MAX_SECONDS} s, so every AssumeRole \
                 will fail; set it to {ROLE_CHAINING_MAX_SECONDS} or less"
            )
        })
}

impl ServeArgs {
    /// The address to bind.
    pub fn addr(&self) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| tokenvend_core::serving::any_address(self.port))
    }

    /// The names compared with, or written into, tokens: an empty one (a templated env var left
    /// blank, say) would refuse every caller or issue tokens no one accepts, so it is refused here.
    pub fn check_token_names(&self) -> Result<(), String> {
        for (setting, value) in [
            (
                "--expected-audience (TOKENVEND_EXPECTED_AUDIENCE)",
                Some(&self.expected_audience),
            ),
            (
                "--issued-audience (TOKENVEND_ISSUED_AUDIENCE)",
                Some(&self.issued_audience),
            ),
            (
                "--oidc-issuer (TOKENVEND_OIDC_ISSUER)",
                self.oidc_issuer.as_ref(),
            ),
        ] {
            if let Some(v) = value
                && (v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()))
            {
                return Err(format!("{setting} {v:?} must be non-empty, without spaces"));
            }
        }
        Ok(())
    }

    /// The seed's LOG_LEVEL as a tracing filter directive. DEBUG applies to tokenvend's own
    /// code only: third-party debug output (SDK internals, TLS) is not needed and is kept out.
    pub fn log_filter(&self) -> Result<String, String> {
        let level: LogLevel = self
            .log_level
            .parse()
            .map_err(|e| format!("LOG_LEVEL: {e}"))?;
        Ok(level.directive(&["tokenvend_sts", "tokenvend_core"]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_audience_or_issuer_is_refused_naming_the_setting() {
        let check = |args: &[&str]| {
            Cli::try_parse_from([&["tokenvend-sts"], args].concat())
                .expect("parses")
                .serve
                .check_token_names()
        };
        assert_eq!(check(&[]), Ok(()));
        assert_eq!(
            check(&["--oidc-issuer", "https://kubernetes.default.svc"]),
            Ok(())
        );
        for (args, setting) in [
            (&["--expected-audience="][..], "--expected-audience"),
            (&["--issued-audience", " "][..], "--issued-audience"),
            (&["--oidc-issuer="][..], "--oidc-issuer"),
            (
                &["--oidc-issuer", "https://kubernetes.default.svc\n"][..],
                "--oidc-issuer",
            ),
        ] {
            let err = check(args).expect_err(setting);
            assert!(
                err.starts_with(setting) && err.ends_with("must be non-empty, without spaces"),
                "{err}"
            );
        }
    }

    #[test]
    fn max_connections_defaults_to_1024_and_the_flag_has_bounds() {
        let max = |args: &[&str]| {
            Cli::try_parse_from([&["tokenvend-sts"], args].concat())
                .map(|c| c.serve.max_connections)
        };
        assert_eq!(max(&[]).ok(), Some(1024));
        assert_eq!(max(&["--max-connections", "1"]).ok(), Some(1));
        assert_eq!(max(&["--max-connections", "65536"]).ok(), Some(65536));
        for bad in ["0", "65537", "-1", "many"] {
            let err = max(&[&format!("--max-connections={bad}")])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("--max-connections"), "{bad} taken: {err:?}");
        }
    }

    #[test]
    fn the_default_role_is_never_the_sdks_own() {
        const VEND: &str = "arn:aws:iam::1:role/vend";
        const OWN: &str = "arn:aws:iam::1:role/tokenvend-sts";
        let env = |vars: Vec<(&'static str, &'static str)>| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let role = |arn: &str, setting| {
            Ok(Some(DefaultRole {
                arn: arn.into(),
                setting,
            }))
        };
        // Neither: no /credentials.
        assert_eq!(default_role(None, env(vec![])), Ok(None));
        // The seed's name, without a web identity of its own.
        assert_eq!(
            default_role(None, env(vec![("AWS_ROLE_ARN", VEND)])),
            role(VEND, "AWS_ROLE_ARN")
        );
        // IRSA: AWS_ROLE_ARN is the service's own role; the one to vend has its own name.
        let irsa = env(vec![
            ("AWS_ROLE_ARN", OWN),
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
            ),
        ]);
        assert_eq!(
            default_role(Some(VEND), &irsa),
            role(VEND, "TOKENVEND_ROLE_ARN")
        );
        // Without it the service would sign in as the role it vends: refused, saying what to set.
        let err = default_role(None, &irsa).expect_err("ambiguous");
        assert!(
            err.contains("TOKENVEND_ROLE_ARN") && err.contains(OWN),
            "{err}"
        );

        // Role chaining: with IRSA, sessions over an hour are refused by AWS.
        let problem = chained_session_problem(7200, &irsa).expect("chained");
        assert!(
            problem.contains("SESSION_DURATION_SECONDS 7200")
                && problem.contains("role chaining")
                && problem.contains("3600 or less"),
            "{problem}"
        );
        assert_eq!(chained_session_problem(3600, &irsa), None);
        assert_eq!(
            chained_session_problem(7200, env(vec![("AWS_ROLE_ARN", VEND)])),
            None,
            "no web identity"
        );
        let with_keys = env(vec![
            ("AWS_ROLE_ARN", OWN),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"),
            ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
        ]);
        assert_eq!(
            chained_session_problem(7200, with_keys),
            None,
            "static keys come first"
        );
        let blank = env(vec![
            ("AWS_ROLE_ARN", OWN),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", " "),
        ]);
        assert_eq!(chained_session_problem(7200, blank), None, "blank is unset");
    }
}
