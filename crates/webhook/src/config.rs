//! Webhook configuration: defaults, an optional YAML file, then flags / `TOKENVEND_*` env vars,
//! validated once at start so a bad value fails fast with the key that is wrong.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser};
use serde::Deserialize;
use tokenvend_core::Mode;
use tokenvend_core::contract::DEFAULT_PREFIX;
use tokenvend_core::limited;
pub use tokenvend_core::logging::LogFormat;
use tokenvend_core::names::{is_dns_label, is_dns_subdomain, shown_url, url_host};

/// Command line of `tokenvend-webhook`; every flag also reads `TOKENVEND_<FLAG>`.
#[derive(Debug, Parser)]
#[command(name = "tokenvend-webhook", version, about)]
pub struct Cli {
    /// Address of the HTTPS listener (admission, health and metrics); `[::]` is every address,
    /// IPv4 and IPv6.
    #[arg(long, env = "TOKENVEND_LISTEN", default_value = "[::]:8443")]
    pub listen: SocketAddr,
    /// PEM serving certificate (chain); reloaded when it changes.
    #[arg(
        long,
        env = "TOKENVEND_TLS_CERT",
        required_unless_present = "check_config"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the serving certificate; reloaded when it changes.
    #[arg(
        long,
        env = "TOKENVEND_TLS_KEY",
        required_unless_present = "check_config"
    )]
    pub tls_key: Option<PathBuf>,
    /// Optional plain-HTTP listener for /healthz, /readyz and /metrics (answers before a cert exists).
    #[arg(long, env = "TOKENVEND_PROBE_LISTEN")]
    pub probe_listen: Option<SocketAddr>,
    /// How often the cert and key files are checked for changes, in seconds.
    #[arg(long, env = "TOKENVEND_CERT_RELOAD_SECONDS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub cert_reload_seconds: u64,
    /// Seconds to keep serving after SIGTERM (readiness already false) before refusing new
    /// connections, while the API server learns the endpoint is gone.
    #[arg(long, env = "TOKENVEND_SHUTDOWN_DELAY_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=60))]
    pub shutdown_delay_seconds: u64,
    /// Heap, in MiB, that the admissions in flight may need together; more wait their turn
    /// (see the README's "Memory").
    #[arg(long, env = "TOKENVEND_MEMORY_BUDGET_MIB", default_value_t = 80, value_parser = clap::value_parser!(u32).range(8..=65536))]
    pub memory_budget_mib: u32,
    /// Connections held at once; one more waits (before its TLS handshake) for one to close
    /// (see the README's "Memory").
    #[arg(long, env = "TOKENVEND_MAX_CONNECTIONS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: u32,
    /// Log format.
    #[arg(long, env = "TOKENVEND_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Optional YAML file with the mutation settings below (flags and env vars win over it).
    #[arg(long, env = "TOKENVEND_CONFIG")]
    pub config: Option<PathBuf>,
    /// Validate the configuration, print the effective mutation settings and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Mutation settings.
    #[command(flatten)]
    pub mutation: MutationArgs,
}

/// Mutation settings as flags / env vars / YAML keys; `None` means "not given here".
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutationArgs {
    /// Prefix of the opt-in label and every annotation.
    #[arg(long, env = "TOKENVEND_PREFIX")]
    pub prefix: Option<String>,
    /// Mode for pods without the aws-mode annotation.
    #[arg(long, env = "TOKENVEND_DEFAULT_MODE")]
    pub default_mode: Option<String>,
    /// Image of the refresher sidecar.
    #[arg(long, env = "TOKENVEND_SIDECAR_IMAGE")]
    pub sidecar_image: Option<String>,
    /// imagePullPolicy of the sidecar: Always, IfNotPresent or Never.
    #[arg(long, env = "TOKENVEND_SIDECAR_IMAGE_PULL_POLICY")]
    pub sidecar_image_pull_policy: Option<String>,
    /// `native` (init container with restartPolicy Always, Kubernetes >= 1.29) or `classic`.
    #[arg(long, env = "TOKENVEND_SIDECAR_STYLE")]
    pub sidecar_style: Option<String>,
    /// Name of the injected sidecar container.
    #[arg(long, env = "TOKENVEND_SIDECAR_NAME")]
    pub sidecar_name: Option<String>,
    /// CPU request of the sidecar.
    #[arg(long, env = "TOKENVEND_SIDECAR_CPU_REQUEST")]
    pub sidecar_cpu_request: Option<String>,
    /// Memory request of the sidecar.
    #[arg(long, env = "TOKENVEND_SIDECAR_MEMORY_REQUEST")]
    pub sidecar_memory_request: Option<String>,
    /// CPU limit of the sidecar (empty string: none).
    #[arg(long, env = "TOKENVEND_SIDECAR_CPU_LIMIT")]
    pub sidecar_cpu_limit: Option<String>,
    /// Memory limit of the sidecar.
    #[arg(long, env = "TOKENVEND_SIDECAR_MEMORY_LIMIT")]
    pub sidecar_memory_limit: Option<String>,
    /// UID and GID the sidecar runs as, or `platform` to leave them to the platform (OpenShift).
    #[arg(long, env = "TOKENVEND_SIDECAR_RUN_AS_USER")]
    pub sidecar_run_as_user: Option<RunAsUser>,
    /// Comma-separated names of native sidecars (mesh proxies) the sidecar is placed after.
    #[arg(long, env = "TOKENVEND_SIDECAR_STARTS_AFTER")]
    pub sidecar_starts_after: Option<String>,
    /// The startupProbe passes once the file is valid for at least this many seconds.
    #[arg(long, env = "TOKENVEND_SIDECAR_PROBE_MIN_VALID_SECONDS")]
    pub sidecar_probe_min_valid_seconds: Option<i64>,
    /// URL of tokenvend-sts as seen from pods.
    #[arg(long, env = "TOKENVEND_EXCHANGE_URL")]
    pub exchange_url: Option<String>,
    /// PEM CA bundle (file on the webhook) the sidecar trusts for the exchange URL.
    #[arg(long, env = "TOKENVEND_EXCHANGE_CA_FILE")]
    pub exchange_ca_file: Option<PathBuf>,
    /// Audience of the projected SA token the sidecar presents to tokenvend-sts.
    #[arg(long, env = "TOKENVEND_TOKEN_AUDIENCE")]
    pub token_audience: Option<String>,
    /// expirationSeconds of the projected SA token (>= 600).
    #[arg(long, env = "TOKENVEND_TOKEN_EXPIRATION_SECONDS")]
    pub token_expiration_seconds: Option<i64>,
    /// AWS region injected as AWS_REGION and AWS_DEFAULT_REGION (none when unset).
    #[arg(long, env = "TOKENVEND_REGION")]
    pub region: Option<String>,
    /// Loopback port of the sidecar's credentials endpoint (credentials mode).
    #[arg(long, env = "TOKENVEND_CREDENTIALS_PORT")]
    pub credentials_port: Option<u16>,
    /// Deny pods with a missing/invalid role or a conflict (true), or admit them unchanged with a warning.
    #[arg(long, env = "TOKENVEND_DENY_ON_INVALID", action = clap::ArgAction::Set)]
    pub deny_on_invalid: Option<bool>,
}

/// `sidecarRunAsUser` as given: a number (YAML integer or text), or a word (only `platform` is valid).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RunAsUser {
    /// A UID (also the GID).
    Uid(i64),
    /// A word.
    Word(String),
}

impl std::str::FromStr for RunAsUser {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(s.parse()
            .map_or_else(|_| RunAsUser::Word(s.to_owned()), RunAsUser::Uid))
    }
}

/// The word for "the platform assigns the sidecar's UID and GID".
pub const PLATFORM_USER: &str = "platform";

impl MutationArgs {
    /// Overlay: values set in `over` win.
    pub fn overlay(self, over: MutationArgs) -> MutationArgs {
        macro_rules! pick {
            ($($f:ident),*) => { MutationArgs { $($f: over.$f.or(self.$f)),* } };
        }
        pick!(
            prefix,
            default_mode,
            sidecar_image,
            sidecar_image_pull_policy,
            sidecar_style,
            sidecar_name,
            sidecar_cpu_request,
            sidecar_memory_request,
            sidecar_cpu_limit,
            sidecar_memory_limit,
            sidecar_run_as_user,
            sidecar_starts_after,
            sidecar_probe_min_valid_seconds,
            exchange_url,
            exchange_ca_file,
            token_audience,
            token_expiration_seconds,
            region,
            credentials_port,
            deny_on_invalid
        )
    }
}

/// How the refresher sidecar is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidecarStyle {
    /// `initContainers[0]` with `restartPolicy: Always` (Kubernetes >= 1.29).
    Native,
    /// An init container that writes the first file + a regular sidecar container.
    Classic,
}

/// Sidecar requests and limits (Kubernetes quantities).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// CPU request.
    pub cpu_request: String,
    /// Memory request.
    pub memory_request: String,
    /// CPU limit; none when `None`.
    pub cpu_limit: Option<String>,
    /// Memory limit.
    pub memory_limit: String,
}

/// The validated settings the pure mutation function works from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Label / annotation prefix.
    pub prefix: String,
    /// Mode when the pod does not say.
    pub default_mode: Mode,
    /// Sidecar image.
    pub sidecar_image: String,
    /// Sidecar imagePullPolicy.
    pub sidecar_image_pull_policy: String,
    /// Native or classic sidecar.
    pub sidecar_style: SidecarStyle,
    /// Sidecar container name (the classic init container gets `-init` appended).
    pub sidecar_name: String,
    /// Sidecar resources.
    pub sidecar_resources: Resources,
    /// Sidecar UID/GID; `None`: left to the platform (OpenShift's SCC assigns one per namespace).
    pub sidecar_run_as_user: Option<i64>,
    /// Native sidecars, by name, that the sidecar is placed after when a pod has them: mesh
    /// proxies whose capture of outbound traffic exists before any container starts.
    pub sidecar_starts_after: Vec<String>,
    /// Minimum remaining validity for the startupProbe to pass.
    pub sidecar_probe_min_valid_seconds: i64,
    /// tokenvend-sts URL.
    pub exchange_url: String,
    /// PEM CA bundle content for the exchange URL (injected into the sidecar).
    pub exchange_ca_pem: Option<String>,
    /// Projected token audience (sidecar modes).
    pub token_audience: String,
    /// Projected token expirationSeconds.
    pub token_expiration_seconds: i64,
    /// Region, if any.
    pub region: Option<String>,
    /// Loopback port of the credentials endpoint.
    pub credentials_port: u16,
    /// Deny (true) or admit-with-warning (false) on invalid input or conflicts.
    pub deny_on_invalid: bool,
}

/// Default sidecar image: the release matching this webhook.
pub const DEFAULT_SIDECAR_IMAGE: &str = concat!(
    "ghcr.io/tokenvend/tokenvend-sidecar:",
    env!("CARGO_PKG_VERSION")
);

/// Default `sidecarStartsAfter`: Istio's, Linkerd's and Kuma's proxies, when they run as native
/// sidecars. With their CNI plugins, a pod's outbound traffic goes to the proxy from before its
/// first container starts, so a sidecar that starts before the proxy cannot reach tokenvend-sts.
pub const DEFAULT_SIDECAR_STARTS_AFTER: &str = "istio-proxy,linkerd-proxy,kuma-sidecar";

/// A configuration value that cannot be used; names the key in every spelling.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value failed validation.
    #[error("invalid config `{key}` (--{flag}, TOKENVEND_{env}): {reason}")]
    Invalid {
        /// YAML key.
        key: &'static str,
        /// Flag name.
        flag: String,
        /// Env var suffix.
        env: String,
        /// What is wrong.
        reason: String,
    },
    /// The YAML file could not be read or parsed.
    #[error("config file {path}: {reason}")]
    File {
        /// File path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    // camelCase key -> kebab flag and SCREAMING env var.
    let mut flag = String::new();
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            flag.push('-');
            flag.push(c.to_ascii_lowercase());
        } else {
            flag.push(c);
        }
    }
    let env = flag.replace('-', "_").to_ascii_uppercase();
    ConfigError::Invalid {
        key,
        flag,
        env,
        reason: reason.into(),
    }
}

/// Read the optional YAML file.
pub fn read_file(path: &Path) -> Result<MutationArgs, ConfigError> {
    parse_file(path, &read_file_text(path)?)
}

/// The YAML file's text, as [`parse_file`] takes it.
pub fn read_file_text(path: &Path) -> Result<String, ConfigError> {
    limited::read_to_string(path, limited::MAX_BYTES).map_err(|e| ConfigError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The settings in `text`, read from the YAML file at `path`.
pub fn parse_file(path: &Path, text: &str) -> Result<MutationArgs, ConfigError> {
    if text.trim().is_empty() {
        return Ok(MutationArgs::default());
    }
    serde_yaml_ng::from_str(text).map_err(|e| ConfigError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

impl Config {
    /// Settings that are valid but probably not what a cluster wants, each with why (logged as
    /// warnings at start and after a reload).
    pub fn concerns(&self) -> Vec<String> {
        let mut concerns = Vec::new();
        if self.exchange_url.starts_with("http://") && !is_loopback(url_host(&self.exchange_url)) {
            concerns.push(format!(
                "exchangeUrl {:?} is plain HTTP: each sidecar sends its pod's service-account \
                 token, and in credentials mode gets AWS keys back, unencrypted over the pod \
                 network; use https:// (tokenvend-sts serves TLS with the certs job's \
                 certificate) unless a service mesh encrypts pod-to-pod traffic",
                self.exchange_url
            ));
        }
        concerns
    }

    /// Validate merged settings and apply defaults.
    pub fn from_args(a: MutationArgs) -> Result<Config, ConfigError> {
        let prefix = a.prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
        if !is_dns_subdomain(&prefix) {
            return Err(invalid(
                "prefix",
                format!(
                    "{prefix:?} is not a DNS subdomain (lowercase letters, digits, '-' and '.', at most 253)"
                ),
            ));
        }
        let default_mode = match a.default_mode {
            None => Mode::WebIdentity,
            Some(m) => m.parse().map_err(|e: tokenvend_core::ParseModeError| {
                invalid("defaultMode", e.to_string())
            })?,
        };
        let sidecar_image = a
            .sidecar_image
            .unwrap_or_else(|| DEFAULT_SIDECAR_IMAGE.to_owned());
        if let Some(problem) = tokenvend_core::image::reference_problem(&sidecar_image) {
            return Err(invalid(
                "sidecarImage",
                format!("{sidecar_image:?} is not an image reference: {problem}"),
            ));
        }
        let sidecar_image_pull_policy = a
            .sidecar_image_pull_policy
            .unwrap_or_else(|| "IfNotPresent".to_owned());
        if !["Always", "IfNotPresent", "Never"].contains(&sidecar_image_pull_policy.as_str()) {
            return Err(invalid(
                "sidecarImagePullPolicy",
                format!("{sidecar_image_pull_policy:?}: expected Always, IfNotPresent or Never"),
            ));
        }
        let sidecar_style = match a.sidecar_style.as_deref().unwrap_or("native") {
            "native" => SidecarStyle::Native,
            "classic" => SidecarStyle::Classic,
            other => {
                return Err(invalid(
                    "sidecarStyle",
                    format!("{other:?}: expected native or classic"),
                ));
            }
        };
        let sidecar_name = a
            .sidecar_name
            .unwrap_or_else(|| "tokenvend-sidecar".to_owned());
        // The classic init container appends "-init", which must still be a DNS label.
        if !is_dns_label(&sidecar_name) || sidecar_name.len() > 58 {
            return Err(invalid(
                "sidecarName",
                format!("{sidecar_name:?} must be a DNS label of at most 58 characters"),
            ));
        }
        // Checked as the API server would check the injected container, so a bad value fails
        // here at start rather than refusing every mutated pod.
        let quantity = |key: &'static str, v: Option<String>, default: &str| {
            let v = v.unwrap_or_else(|| default.to_owned());
            match quantity_value(&v) {
                Some(value) if value >= 0.0 => Ok((v, value)),
                Some(_) => Err(invalid(key, format!("{v:?} is negative"))),
                None => Err(invalid(
                    key,
                    format!("{v:?} is not a Kubernetes quantity (e.g. 10m, 32Mi)"),
                )),
            }
        };
        let at_most = |request: &(String, f64),
                       key: &'static str,
                       limit: &(String, f64),
                       limit_key| {
            // The values are exact decimals, read into floats: `9m` and `0.009` may come out an
            // ulp apart, so only a difference beyond rounding counts (one byte of a gibibyte
            // still does).
            if request.1 - limit.1 > limit.1.abs() * 4.0 * f64::EPSILON {
                Err(invalid(
                    key,
                    format!(
                        "{:?} is more than {limit_key} {:?}; Kubernetes refuses a container whose \
                         request exceeds its limit",
                        request.0, limit.0
                    ),
                ))
            } else {
                Ok(())
            }
        };
        let cpu_request = quantity("sidecarCpuRequest", a.sidecar_cpu_request, "10m")?;
        let memory_request = quantity("sidecarMemoryRequest", a.sidecar_memory_request, "16Mi")?;
        let cpu_limit = match a.sidecar_cpu_limit {
            Some(v) if v.is_empty() => None,
            v => Some(quantity("sidecarCpuLimit", v, "100m")?),
        };
        let memory_limit = quantity("sidecarMemoryLimit", a.sidecar_memory_limit, "32Mi")?;
        if let Some(limit) = &cpu_limit {
            at_most(&cpu_request, "sidecarCpuRequest", limit, "sidecarCpuLimit")?;
        }
        at_most(
            &memory_request,
            "sidecarMemoryRequest",
            &memory_limit,
            "sidecarMemoryLimit",
        )?;
        let sidecar_resources = Resources {
            cpu_request: cpu_request.0,
            memory_request: memory_request.0,
            cpu_limit: cpu_limit.map(|l| l.0),
            memory_limit: memory_limit.0,
        };
        // A quoted YAML number ("1000") is a UID too.
        let given = a.sidecar_run_as_user.map(|u| match u {
            RunAsUser::Word(w) => w.parse().map_or(RunAsUser::Word(w), RunAsUser::Uid),
            uid => uid,
        });
        let sidecar_run_as_user = match given {
            None => Some(65532),
            Some(RunAsUser::Uid(uid)) if (1..=2_147_483_647).contains(&uid) => Some(uid),
            Some(RunAsUser::Word(w)) if w == PLATFORM_USER => None,
            Some(other) => {
                let given = match other {
                    RunAsUser::Uid(uid) => uid.to_string(),
                    RunAsUser::Word(w) => format!("{w:?}"),
                };
                return Err(invalid(
                    "sidecarRunAsUser",
                    format!(
                        "{given} must be a non-root UID (1..2147483647) or \"{PLATFORM_USER}\" \
                         (no UID in the pod: the platform assigns one, as OpenShift does)"
                    ),
                ));
            }
        };
        let sidecar_starts_after: Vec<String> = a
            .sidecar_starts_after
            .as_deref()
            .unwrap_or(DEFAULT_SIDECAR_STARTS_AFTER)
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(bad) = sidecar_starts_after.iter().find(|n| !is_dns_label(n)) {
            return Err(invalid(
                "sidecarStartsAfter",
                format!(
                    "{bad:?} is not a container name (a DNS label); expected comma-separated \
                     names such as {DEFAULT_SIDECAR_STARTS_AFTER:?}, or \"\" for none"
                ),
            ));
        }
        let sidecar_probe_min_valid_seconds = a.sidecar_probe_min_valid_seconds.unwrap_or(300);
        if !(0..=43_200).contains(&sidecar_probe_min_valid_seconds) {
            return Err(invalid(
                "sidecarProbeMinValidSeconds",
                format!("{sidecar_probe_min_valid_seconds} must be between 0 and 43200"),
            ));
        }
        let exchange_url = a
            .exchange_url
            .unwrap_or_else(|| "https://tokenvend-sts.tokenvend.svc".to_owned());
        if let Some(problem) = tokenvend_core::names::exchange_url_problem(&exchange_url) {
            return Err(invalid(
                "exchangeUrl",
                format!("{} {problem}", shown_url(&exchange_url)),
            ));
        }
        let exchange_ca_pem = match a.exchange_ca_file {
            None => None,
            Some(path) => Some(
                tokenvend_core::cabundle::read(&path).map_err(|r| invalid("exchangeCaFile", r))?,
            ),
        };
        let token_audience = a.token_audience.unwrap_or_else(|| "tokenvend".to_owned());
        if token_audience.is_empty() || token_audience.chars().any(char::is_whitespace) {
            return Err(invalid(
                "tokenAudience",
                format!("{token_audience:?} must be non-empty without whitespace"),
            ));
        }
        let token_expiration_seconds = a.token_expiration_seconds.unwrap_or(3600);
        // The API server refuses less than 10 minutes and more than 2^32 seconds.
        if !(600..=4_294_967_296).contains(&token_expiration_seconds) {
            return Err(invalid(
                "tokenExpirationSeconds",
                format!("{token_expiration_seconds} must be between 600 and 4294967296"),
            ));
        }
        let region = match a.region {
            None => None,
            Some(r) if r.is_empty() => None,
            Some(r) if is_region(&r) => Some(r),
            Some(r) => {
                return Err(invalid(
                    "region",
                    format!("{r:?} is not an AWS region name (e.g. eu-west-1)"),
                ));
            }
        };
        let credentials_port = a.credentials_port.unwrap_or(9911);
        // The sidecar runs as non-root with every capability dropped: below the kernel's
        // unprivileged port start (1024 unless the runtime lowers it: containerd before 2.0
        // does not, nor does any host-network pod's node) its bind fails and the pod stays in
        // Init. A loopback endpoint gains nothing from a low port; SDKs take any.
        if credentials_port < 1024 {
            return Err(invalid(
                "credentialsPort",
                format!(
                    "{credentials_port} is not in 1024-65535: the sidecar runs as non-root without \
                     capabilities and could not listen on it on most nodes"
                ),
            ));
        }
        Ok(Config {
            prefix,
            default_mode,
            sidecar_image,
            sidecar_image_pull_policy,
            sidecar_style,
            sidecar_name,
            sidecar_resources,
            sidecar_run_as_user,
            sidecar_starts_after,
            sidecar_probe_min_valid_seconds,
            exchange_url,
            exchange_ca_pem,
            token_audience,
            token_expiration_seconds,
            region,
            credentials_port,
            deny_on_invalid: a.deny_on_invalid.unwrap_or(true),
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        // The defaults are valid by construction; a failure here is a bug caught by tests.
        Config::from_args(MutationArgs::default()).expect("built-in defaults are valid")
    }
}

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// HTTPS listen address.
    pub listen: SocketAddr,
    /// Plain-HTTP probe/metrics address.
    pub probe_listen: Option<SocketAddr>,
    /// Cert file.
    pub tls_cert: PathBuf,
    /// Key file.
    pub tls_key: PathBuf,
    /// Cert reload poll interval.
    pub cert_reload: Duration,
    /// Serving time after SIGTERM before new connections are refused.
    pub shutdown_delay: Duration,
    /// Heap the admissions in flight may need together, in bytes.
    pub memory_budget: usize,
    /// Connections held at once.
    pub max_connections: u32,
    /// Mutation settings.
    pub mutation: Config,
    /// Where `mutation.exchange_ca_pem` was read from: watched, so a CA the certs job rotates
    /// or recreates reaches the sidecars of pods admitted from then on.
    pub exchange_ca_file: Option<PathBuf>,
    /// The YAML file and the text `mutation` was built from: watched, so an edit in place (a
    /// ConfigMap) applies without a restart.
    pub config_file: Option<(PathBuf, String)>,
    /// The flags / env vars layer, which wins over the file at every reload.
    pub flags: MutationArgs,
}

impl Cli {
    /// Merge defaults, YAML file and flags/env into a validated server config.
    pub fn into_server_config(self) -> Result<ServerConfig, ConfigError> {
        let (from_file, config_file) = match &self.config {
            Some(path) => {
                let text = read_file_text(path)?;
                (parse_file(path, &text)?, Some((path.clone(), text)))
            }
            None => (MutationArgs::default(), None),
        };
        let flags = self.mutation.clone();
        let merged = from_file.overlay(self.mutation);
        Ok(ServerConfig {
            config_file,
            flags,
            exchange_ca_file: merged.exchange_ca_file.clone(),
            listen: self.listen,
            probe_listen: self.probe_listen,
            tls_cert: self.tls_cert.unwrap_or_default(),
            tls_key: self.tls_key.unwrap_or_default(),
            cert_reload: Duration::from_secs(self.cert_reload_seconds),
            shutdown_delay: Duration::from_secs(self.shutdown_delay_seconds),
            memory_budget: usize::try_from(self.memory_budget_mib)
                .unwrap_or(usize::MAX)
                .saturating_mul(1024 * 1024),
            max_connections: self.max_connections,
            mutation: Config::from_args(merged)?,
        })
    }
}

/// `text`, read from `path`, checked as [`tokenvend_core::cabundle::read`] does.
pub fn check_ca_bundle(path: &Path, text: String) -> Result<String, String> {
    match tokenvend_core::cabundle::certificates(text.as_bytes()) {
        Ok(_) => Ok(text),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Whether a URL's host names this machine (no network is crossed).
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_region(s: &str) -> bool {
    // e.g. us-east-1, cn-north-1, us-gov-west-1, eu-isoe-west-1
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

/// The value of a Kubernetes resource quantity in base units (`10m` → 0.01, `32Mi` →
/// 33554432), or `None` when `s` is not quantity syntax (a decimal number, an optional sign,
/// and an optional binary, decimal or exponent suffix).
pub fn quantity_value(s: &str) -> Option<f64> {
    let (sign, unsigned) = match s.strip_prefix('-') {
        Some(rest) => (-1.0, rest),
        None => (1.0, s.strip_prefix('+').unwrap_or(s)),
    };
    let digits_end = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (num, suffix) = unsigned.split_at(digits_end);
    if num.matches('.').count() > 1 || !num.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    let number: f64 = num.parse().ok()?;
    let binary = |power: i32| 2f64.powi(power);
    let scale = match suffix {
        "" => 1.0,
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E'])?;
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            10f64.powi(exponent.parse().ok()?)
        }
    };
    Some(sign * number * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = Config::default();
        assert_eq!(c.prefix, "tremolo.io");
        assert_eq!(c.default_mode, Mode::WebIdentity);
        assert_eq!(c.sidecar_style, SidecarStyle::Native);
        assert_eq!(c.token_expiration_seconds, 3600);
        assert!(c.deny_on_invalid);
        assert_eq!(c.region, None);
    }

    /// The command line with the required TLS flags and `extra`.
    fn cli_with(extra: &[&str]) -> Cli {
        let required = ["tokenvend-webhook", "--tls-cert", "c", "--tls-key", "k"];
        <Cli as clap::Parser>::try_parse_from(required.iter().chain(extra)).expect("flags")
    }

    /// One value given as the flag `--flag=value` and as the YAML line `yaml`: both configs.
    fn flag_and_yaml(flag: &str, yaml: &str) -> [Result<Config, ConfigError>; 2] {
        let from_yaml: MutationArgs = serde_yaml_ng::from_str(yaml).expect("yaml");
        [
            Config::from_args(cli_with(&[flag]).mutation),
            Config::from_args(from_yaml),
        ]
    }

    /// The string `value` given as `--flag=value` and as `key: "value"` in the file.
    fn set_both_ways(flag: &str, key: &str, value: &str) -> [Result<Config, ConfigError>; 2] {
        flag_and_yaml(&format!("--{flag}={value}"), &format!("{key}: {value:?}"))
    }

    #[test]
    fn the_default_memory_budget_takes_the_largest_review_and_the_flag_has_bounds() {
        use crate::budget::admission_charge;
        use crate::server::MAX_BODY_BYTES;
        let budget = |extra: &[&str]| {
            cli_with(extra)
                .into_server_config()
                .map(|c| c.memory_budget)
        };
        let default = budget(&[]).expect("default");
        assert_eq!(default, 80 * 1024 * 1024);
        // The default is what a review of the largest accepted size may need: one fits alone.
        assert_eq!(admission_charge(MAX_BODY_BYTES), default);
        assert_eq!(budget(&["--memory-budget-mib", "8"]).ok(), Some(8 << 20));
        for bad in ["7", "65537", "-1", "1.5"] {
            assert_flag_refuses("--memory-budget-mib", bad);
        }
    }

    /// `flag=bad` is refused by the parser, naming the flag (`=`, so that `-1` is a value and
    /// not taken for a flag).
    fn assert_flag_refuses(flag: &str, bad: &str) {
        let flags = ["tokenvend-webhook", "--tls-cert", "c", "--tls-key", "k"];
        let given = format!("{flag}={bad}");
        let parsed =
            <Cli as clap::Parser>::try_parse_from(flags.iter().copied().chain([given.as_str()]));
        let err = parsed.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(flag), "{given} taken: {err:?}");
    }

    #[test]
    fn max_connections_defaults_to_256_and_the_flag_has_bounds() {
        let max = |extra: &[&str]| {
            cli_with(extra)
                .into_server_config()
                .map(|c| c.max_connections)
        };
        assert_eq!(max(&[]).ok(), Some(256));
        assert_eq!(max(&["--max-connections", "1"]).ok(), Some(1));
        assert_eq!(max(&["--max-connections", "65536"]).ok(), Some(65536));
        for bad in ["0", "65537", "-1", "many"] {
            assert_flag_refuses("--max-connections", bad);
        }
    }

    #[test]
    fn a_plain_http_exchange_url_across_the_network_is_a_concern() {
        for (url, concern) in [
            ("https://tokenvend-sts.tokenvend.svc", false),
            ("http://tokenvend-sts.tokenvend.svc:8080", true),
            ("http://tokenvend-sts:8080/", true),
            ("http://10.0.0.7", true),
            ("HTTP://tokenvend-sts", false), // refused: the scheme is matched exactly
            // Loopback: nothing crosses the network (the demo, a node-local exchange).
            ("http://127.0.0.1:8080", false),
            ("http://localhost", false),
            ("http://[::1]:8080/x", false),
            ("http://[fd00::1]:8080", true),
            ("http://localhost.example.com", true),
        ] {
            let [flag, yaml] = set_both_ways("exchange-url", "exchangeUrl", url);
            let Ok(cfg) = flag else {
                assert!(yaml.is_err() && !concern, "{url}");
                continue;
            };
            let concerns = cfg.concerns();
            assert_eq!(concerns.len(), usize::from(concern), "{url}: {concerns:?}");
            assert!(
                concerns
                    .iter()
                    .all(|c| c.contains(url) && c.contains("use https://")),
                "{concerns:?}"
            );
            assert_eq!(yaml.expect("same as the flag").concerns(), concerns);
        }
        assert!(Config::default().concerns().is_empty());
    }

    #[test]
    fn credentials_in_the_exchange_url_are_refused_and_never_echoed() {
        for url in [
            "https://tokenvend:s3cret@tokenvend-sts.tokenvend.svc",
            "http://s3cret@tokenvend-sts:8080/x",
        ] {
            for cfg in set_both_ways("exchange-url", "exchangeUrl", url) {
                let err = cfg.expect_err(url).to_string();
                assert!(
                    err.contains("exchangeUrl") && err.contains("must not carry credentials"),
                    "{err}"
                );
                assert!(!err.contains("s3cret"), "{err}");
            }
        }
        // An '@' after the host is not userinfo.
        for url in ["https://tokenvend-sts.tokenvend.svc/a@b"] {
            for cfg in set_both_ways("exchange-url", "exchangeUrl", url) {
                assert_eq!(cfg.expect(url).exchange_url, url);
            }
        }
    }

    #[test]
    fn an_exchange_url_no_sidecar_could_call_is_refused_with_the_reason() {
        // Each would have sent every mutated pod's sidecar into a crash loop or a 404.
        for (url, reason) in [
            (
                "https://tokenvend-sts.tokenvend.svc:99999",
                "is not a URL: invalid port number",
            ),
            (
                "https://tokenvend-sts.tokenvend.svc/credentials",
                "without /credentials: the sidecar appends",
            ),
            ("https://tokenvend-sts?x=1", "must not have a query"),
            (
                "tokenvend-sts.tokenvend.svc",
                "must be an http:// or https:// URL",
            ),
            ("https://", "is not a URL: empty host"),
        ] {
            for cfg in set_both_ways("exchange-url", "exchangeUrl", url) {
                let err = cfg.expect_err(url).to_string();
                assert!(
                    err.contains("exchangeUrl")
                        && err.contains(&format!("{url:?}"))
                        && err.contains(reason),
                    "{url}: {err}"
                );
            }
        }
    }

    #[test]
    fn a_sidecar_image_no_runtime_could_pull_is_refused_with_the_reason() {
        // The grammar's cases are core::image's; here, that the setting is checked either way.
        let image = "registry.example.com/Tokenvend/sidecar:1.0";
        for cfg in set_both_ways("sidecar-image", "sidecarImage", image) {
            let err = cfg.expect_err(image).to_string();
            assert!(
                err.contains("sidecarImage")
                    && err.contains(&format!(
                        "{image:?} is not an image reference: its repository path must be lowercase"
                    )),
                "{err}"
            );
        }
        let image = "localhost:5000/tokenvend/sidecar:1.0";
        for cfg in set_both_ways("sidecar-image", "sidecarImage", image) {
            assert_eq!(cfg.expect(image).sidecar_image, image);
        }
    }

    #[test]
    fn the_sidecar_user_is_a_uid_or_left_to_the_platform() {
        let read = |v: &str| {
            flag_and_yaml(
                &format!("--sidecar-run-as-user={v}"),
                &format!("sidecarRunAsUser: {v}"),
            )
            .map(|r| r.map(|c| c.sidecar_run_as_user))
        };
        for r in read("1000") {
            assert_eq!(r.expect("uid"), Some(1000));
        }
        for r in read("platform") {
            assert_eq!(r.expect("platform"), None);
        }
        for bad in ["0", "-5", "root", "Platform"] {
            for r in read(bad) {
                let e = r.expect_err(bad).to_string();
                assert!(
                    e.contains("sidecarRunAsUser") && e.contains("\"platform\""),
                    "{e}"
                );
            }
        }
        let [_, quoted] = flag_and_yaml("--prefix=tremolo.io", "sidecarRunAsUser: \"1000\"");
        assert_eq!(
            quoted.expect("quoted YAML number").sidecar_run_as_user,
            Some(1000)
        );
        assert_eq!(Config::default().sidecar_run_as_user, Some(65532));
    }

    #[test]
    fn the_sidecar_starts_after_names_native_sidecars_or_none() {
        let read = |v: &str| {
            set_both_ways("sidecar-starts-after", "sidecarStartsAfter", v)
                .map(|r| r.map(|c| c.sidecar_starts_after))
        };
        for r in read("kuma-sidecar, istio-proxy") {
            assert_eq!(r.expect("two names"), ["kuma-sidecar", "istio-proxy"]);
        }
        for r in read("") {
            assert!(r.expect("none").is_empty());
        }
        for bad in ["Istio-Proxy", "istio proxy", "istio_proxy"] {
            for r in read(bad) {
                let e = r.expect_err(bad).to_string();
                assert!(
                    e.contains("sidecarStartsAfter") && e.contains("not a container name"),
                    "{e}"
                );
            }
        }
        assert_eq!(
            Config::default().sidecar_starts_after,
            ["istio-proxy", "linkerd-proxy", "kuma-sidecar"]
        );
    }

    #[test]
    fn the_listener_defaults_to_every_address_of_both_families() {
        let cli = cli_with(&[]);
        assert_eq!(cli.listen, tokenvend_core::serving::any_address(8443));
        assert_eq!(cli.listen.to_string(), "[::]:8443");
    }

    #[test]
    fn invalid_values_name_the_key_in_every_spelling() {
        let cases: Vec<(MutationArgs, &str)> = vec![
            (
                MutationArgs {
                    default_mode: Some("irsa".into()),
                    ..Default::default()
                },
                "defaultMode",
            ),
            (
                MutationArgs {
                    token_expiration_seconds: Some(599),
                    ..Default::default()
                },
                "tokenExpirationSeconds",
            ),
            (
                MutationArgs {
                    region: Some("Europe".into()),
                    ..Default::default()
                },
                "region",
            ),
            (
                MutationArgs {
                    sidecar_memory_limit: Some("32 MiB".into()),
                    ..Default::default()
                },
                "sidecarMemoryLimit",
            ),
            (
                MutationArgs {
                    sidecar_cpu_request: Some("-10m".into()),
                    ..Default::default()
                },
                "sidecarCpuRequest",
            ),
            (
                MutationArgs {
                    sidecar_cpu_request: Some("200m".into()),
                    ..Default::default()
                },
                "sidecarCpuRequest",
            ),
            (
                MutationArgs {
                    sidecar_memory_request: Some("64Mi".into()),
                    sidecar_memory_limit: Some("0.05Gi".into()),
                    ..Default::default()
                },
                "sidecarMemoryRequest",
            ),
            (
                MutationArgs {
                    sidecar_image_pull_policy: Some("always".into()),
                    ..Default::default()
                },
                "sidecarImagePullPolicy",
            ),
            (
                MutationArgs {
                    sidecar_style: Some("sidecar".into()),
                    ..Default::default()
                },
                "sidecarStyle",
            ),
            (
                MutationArgs {
                    exchange_url: Some("tokenvend-sts:8000".into()),
                    ..Default::default()
                },
                "exchangeUrl",
            ),
            (
                MutationArgs {
                    sidecar_name: Some("Sidecar".into()),
                    ..Default::default()
                },
                "sidecarName",
            ),
            (
                MutationArgs {
                    prefix: Some("Tremolo.IO".into()),
                    ..Default::default()
                },
                "prefix",
            ),
            (
                MutationArgs {
                    sidecar_run_as_user: Some(RunAsUser::Uid(0)),
                    ..Default::default()
                },
                "sidecarRunAsUser",
            ),
            (
                MutationArgs {
                    exchange_ca_file: Some("/nonexistent/ca.pem".into()),
                    ..Default::default()
                },
                "exchangeCaFile",
            ),
            (
                MutationArgs {
                    credentials_port: Some(80),
                    ..Default::default()
                },
                "credentialsPort",
            ),
            (
                MutationArgs {
                    credentials_port: Some(0),
                    ..Default::default()
                },
                "credentialsPort",
            ),
        ];
        for (args, key) in cases {
            let err = Config::from_args(args).expect_err(key).to_string();
            assert!(err.contains(&format!("`{key}`")), "{err}");
            assert!(err.contains("--") && err.contains("TOKENVEND_"), "{err}");
        }
        let err = Config::from_args(MutationArgs {
            credentials_port: Some(1023),
            ..Default::default()
        })
        .expect_err("a privileged port")
        .to_string();
        assert!(err.contains("1023 is not in 1024-65535"), "{err}");
        let ok = Config::from_args(MutationArgs {
            credentials_port: Some(1024),
            ..Default::default()
        })
        .expect("the first unprivileged port");
        assert_eq!(ok.credentials_port, 1024);
        let err = Config::from_args(MutationArgs {
            sidecar_cpu_request: Some("200m".into()),
            ..Default::default()
        })
        .expect_err("request over the default limit")
        .to_string();
        assert!(
            err.contains("\"200m\" is more than sidecarCpuLimit \"100m\""),
            "{err}"
        );
        let err = Config::from_args(MutationArgs {
            sidecar_memory_limit: Some("-32Mi".into()),
            ..Default::default()
        })
        .expect_err("negative")
        .to_string();
        assert!(err.contains("\"-32Mi\" is negative"), "{err}");
        // Without a CPU limit any request is fine.
        Config::from_args(MutationArgs {
            sidecar_cpu_request: Some("2".into()),
            sidecar_cpu_limit: Some(String::new()),
            ..Default::default()
        })
        .expect("no limit to exceed");
        let err = Config::from_args(MutationArgs {
            token_expiration_seconds: Some(1),
            ..Default::default()
        })
        .expect_err("too short")
        .to_string();
        assert!(
            err.contains("--token-expiration-seconds, TOKENVEND_TOKEN_EXPIRATION_SECONDS"),
            "{err}"
        );
    }

    #[test]
    fn an_exchange_ca_file_holding_the_servers_certificate_instead_of_its_ca_is_refused() {
        // Every sidecar would have failed TLS with UnknownIssuer.
        use tokenvend_testkit::tls;
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, _, issuer) = tls::ca("tokenvend-webhook-tls-ca");
        let served = tls::leaf(&ca, &issuer);
        let file = dir.path().join("tls.crt");
        std::fs::write(&file, &served.cert_pem).expect("write");
        let with = |path: &Path| {
            Config::from_args(MutationArgs {
                exchange_ca_file: Some(path.to_owned()),
                ..Default::default()
            })
        };
        let err = with(&file).expect_err("a server certificate").to_string();
        assert!(
            err.contains("exchangeCaFile")
                && err.contains(&file.display().to_string())
                && err.contains("holds only server certificates that a CA issued")
                && err.contains("not its tls.crt"),
            "{err}"
        );
        // The reload path checks a changed file the same way.
        let reload = check_ca_bundle(&file, served.cert_pem.clone()).expect_err("reload");
        assert!(
            reload.contains("holds only server certificates"),
            "{reload}"
        );
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, ca.pem()).expect("write");
        let c = with(&ca_file).expect("the CA");
        assert_eq!(c.exchange_ca_pem.as_deref(), Some(ca.pem().as_str()));
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file = MutationArgs {
            region: Some("eu-west-1".into()),
            default_mode: Some("credentials".into()),
            ..Default::default()
        };
        let flags = MutationArgs {
            region: Some("us-east-2".into()),
            ..Default::default()
        };
        let c = Config::from_args(file.overlay(flags)).expect("valid");
        assert_eq!(c.region.as_deref(), Some("us-east-2"));
        assert_eq!(c.default_mode, Mode::Credentials);
    }

    #[test]
    fn yaml_file_rejects_unknown_keys_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "region: eu-west-1\nsidecarImagee: x\n").expect("write");
        let err = read_file(&path).expect_err("typo").to_string();
        assert!(err.contains("sidecarImagee"), "{err}");
        std::fs::write(
            &path,
            "region: eu-west-1\ndenyOnInvalid: false\nsidecarStyle: classic\n",
        )
        .expect("write");
        let c = Config::from_args(read_file(&path).expect("valid")).expect("valid");
        assert!(!c.deny_on_invalid);
        assert_eq!(c.sidecar_style, SidecarStyle::Classic);
    }

    #[test]
    fn empty_cpu_limit_means_none() {
        let c = Config::from_args(MutationArgs {
            sidecar_cpu_limit: Some(String::new()),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(c.sidecar_resources.cpu_limit, None);
        let c = Config::from_args(MutationArgs {
            sidecar_cpu_limit: Some("250m".into()),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(c.sidecar_resources.cpu_limit.as_deref(), Some("250m"));
    }

    #[test]
    fn each_setting_is_taken_up_to_its_edge() {
        let from = |a: MutationArgs| Config::from_args(a);
        // sidecarName: 58 characters, so the classic init container's "-init" keeps a DNS label.
        let name = |n: usize| MutationArgs {
            sidecar_name: Some("s".repeat(n)),
            ..Default::default()
        };
        assert_eq!(from(name(58)).expect("58").sidecar_name, "s".repeat(58));
        assert!(
            from(name(59))
                .expect_err("59")
                .to_string()
                .contains("sidecarName")
        );
        // A request equal to its limit is what Kubernetes allows (Guaranteed QoS, even).
        let equal = MutationArgs {
            sidecar_cpu_request: Some("100m".into()),
            sidecar_cpu_limit: Some("0.1".into()),
            sidecar_memory_request: Some("32Mi".into()),
            sidecar_memory_limit: Some("32Mi".into()),
            ..Default::default()
        };
        assert!(from(equal).is_ok());
        // The same value in two units: equal, even where the floats read differ by an ulp.
        for m in 1..=2000 {
            let (request, limit) = (format!("{m}m"), format!("{}", f64::from(m) / 1000.0));
            let a = MutationArgs {
                sidecar_cpu_request: Some(request.clone()),
                sidecar_cpu_limit: Some(limit.clone()),
                sidecar_memory_request: Some(format!("{m}Mi")),
                sidecar_memory_limit: Some(format!("{}Gi", f64::from(m) / 1024.0)),
                ..Default::default()
            };
            if let Err(e) = from(a) {
                panic!("{request} against {limit}: {e}");
            }
        }
        // A millicore over, or one byte over a gibibyte, is over.
        let cpu_over = MutationArgs {
            sidecar_cpu_request: Some("101m".into()),
            sidecar_cpu_limit: Some("0.1".into()),
            ..Default::default()
        };
        let byte_over = MutationArgs {
            sidecar_memory_request: Some("1073741825".into()),
            sidecar_memory_limit: Some("1Gi".into()),
            ..Default::default()
        };
        for (args, key) in [
            (cpu_over, "sidecarCpuRequest"),
            (byte_over, "sidecarMemoryRequest"),
        ] {
            let err = from(args).expect_err(key).to_string();
            assert!(err.contains(key), "{err}");
        }
        // tokenAudience: neither empty nor with whitespace, each on its own.
        for audience in ["", "sts amazonaws", "tokenvend\n"] {
            let err = from(MutationArgs {
                token_audience: Some(audience.into()),
                ..Default::default()
            })
            .expect_err(audience);
            assert!(err.to_string().contains("tokenAudience"), "{err}");
        }
        // An empty region is no region, as an unset one (a Helm-style blank value).
        let blank = from(MutationArgs {
            region: Some(String::new()),
            ..Default::default()
        });
        assert_eq!(blank.expect("blank region").region, None);
    }

    #[test]
    fn quantity_and_region_syntax() {
        for (q, value) in [
            ("10m", 0.01),
            ("1", 1.0),
            ("0.5", 0.5),
            ("32Mi", 33_554_432.0),
            ("1Gi", 1_073_741_824.0),
            ("1e3", 1000.0),
            ("5E-1", 0.5),
            ("100k", 100_000.0),
            ("+1", 1.0),
            (".5", 0.5),
            ("-1", -1.0),
            ("250M", 250_000_000.0),
            // Every suffix Kubernetes knows, each once.
            ("1Ki", 1024.0),
            ("1Ti", 2f64.powi(40)),
            ("1Pi", 2f64.powi(50)),
            ("1Ei", 2f64.powi(60)),
            ("1n", 1e-9),
            ("1u", 1e-6),
            ("1G", 1e9),
            ("1T", 1e12),
            ("1P", 1e15),
            ("1E", 1e18),
        ] {
            let got = quantity_value(q).expect(q);
            assert!((got - value).abs() <= value.abs() * 1e-12, "{q}: {got}");
        }
        for q in [
            "", "Mi", "1.2.3", "32MiB", "1 Gi", "e3", ".", "1e", "-", "1e+",
        ] {
            assert_eq!(quantity_value(q), None, "{q}");
        }
        for r in ["us-east-1", "cn-north-1", "us-gov-west-1", "eu-isoe-west-1"] {
            assert!(is_region(r), "{r}");
        }
        for r in ["", "us", "us-east", "US-EAST-1", "us--1", "us-east-1a"] {
            assert!(!is_region(r), "{r}");
        }
    }
}
