//! Command line; every flag also reads `TOKENVEND_<FLAG>`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tokenvend_core::Mode;
use tokenvend_core::contract::CREDENTIALS_PATH;
use tokenvend_core::limited;

/// `tokenvend-sidecar`: keeps the shared web-identity token or credentials fresh.
#[derive(Debug, Parser)]
#[command(
    name = "tokenvend-sidecar",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// `probe` for the startupProbe, `wait` for the postStart hook; without a subcommand the
    /// refresher runs.
    #[command(subcommand)]
    pub command: Option<Cmd>,
    /// Refresher settings.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Exit 0 only if the current file exists and stays valid for at least --min-valid-seconds.
    Probe(ProbeArgs),
    /// Exit 0 once the credentials endpoint serves credentials, or 1 after --wait-seconds.
    Wait(WaitArgs),
}

/// `wait` settings: the classic-style sidecar's postStart hook, which holds back the app
/// containers after it until the endpoint they read serves.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// The shared directory, holding the auth-token file.
    #[arg(long, env = "TOKENVEND_OUT_DIR")]
    pub out_dir: PathBuf,
    /// Loopback address of the credentials endpoint.
    #[arg(long, env = "TOKENVEND_LISTEN", default_value = "127.0.0.1:9911")]
    pub listen: SocketAddr,
    /// HTTP path of the credentials endpoint.
    #[arg(long, env = "TOKENVEND_CREDENTIALS_PATH", default_value = CREDENTIALS_PATH)]
    pub credentials_path: String,
    /// Give up after this many seconds.
    #[arg(long, env = "TOKENVEND_WAIT_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub wait_seconds: u64,
}

/// `probe` settings.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// web-identity or credentials.
    #[arg(long, env = "TOKENVEND_MODE")]
    pub mode: Mode,
    /// The shared directory.
    #[arg(long, env = "TOKENVEND_OUT_DIR")]
    pub out_dir: PathBuf,
    /// Required remaining validity, seconds.
    #[arg(long, env = "TOKENVEND_MIN_VALID_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(i64).range(0..=43200))]
    pub min_valid_seconds: i64,
}

/// Refresher settings.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// web-identity (POST /token) or credentials (POST /credentials).
    #[arg(long, env = "TOKENVEND_MODE", required = false)]
    pub mode: Option<Mode>,
    /// The projected service-account token (re-read on every exchange).
    #[arg(long, env = "TOKENVEND_SA_TOKEN_FILE")]
    pub sa_token_file: Option<PathBuf>,
    /// The shared in-memory directory to write into.
    #[arg(long, env = "TOKENVEND_OUT_DIR")]
    pub out_dir: Option<PathBuf>,
    /// Base URL of tokenvend-sts.
    #[arg(long, env = "TOKENVEND_EXCHANGE_URL")]
    pub exchange_url: Option<String>,
    /// PEM CA bundle file for the exchange URL.
    #[arg(long, env = "TOKENVEND_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// PEM CA bundle content for the exchange URL (what the webhook injects).
    #[arg(long, env = "TOKENVEND_CA_PEM", hide_env_values = true)]
    pub ca_pem: Option<String>,
    /// Role to ask tokenvend-sts for (the pod's annotation).
    #[arg(long, env = "TOKENVEND_ROLE_ARN")]
    pub role_arn: Option<String>,
    /// Loopback address of the credentials endpoint (credentials mode).
    #[arg(long, env = "TOKENVEND_LISTEN", default_value = "127.0.0.1:9911")]
    pub listen: SocketAddr,
    /// HTTP path of the credentials endpoint.
    #[arg(long, env = "TOKENVEND_CREDENTIALS_PATH", default_value = CREDENTIALS_PATH)]
    pub credentials_path: String,
    /// Refresh after this share of the lifetime (0.1-0.9).
    #[arg(long, env = "TOKENVEND_REFRESH_SHARE", default_value_t = 0.5)]
    pub refresh_share: f64,
    /// Refresh at least this long before expiry when the lifetime allows, seconds.
    #[arg(long, env = "TOKENVEND_MIN_REMAINING_SECONDS", default_value_t = 1200)]
    pub min_remaining_seconds: i64,
    /// Timeout of each exchange call, seconds.
    #[arg(long, env = "TOKENVEND_TIMEOUT_SECONDS", default_value_t = 10)]
    pub timeout_seconds: u64,
    /// Mode of the written files, octal.
    #[arg(long, env = "TOKENVEND_FILE_MODE", default_value = "0644")]
    pub file_mode: String,
    /// Write the first file and exit (the classic init container).
    #[arg(long, env = "TOKENVEND_ONCE")]
    pub once: bool,
    /// With --once: give up after this many seconds.
    #[arg(long, env = "TOKENVEND_ONCE_DEADLINE_SECONDS", default_value_t = 120)]
    pub once_deadline_seconds: u64,
    /// Log level: error, warn (or warning), info, debug.
    #[arg(long, env = "TOKENVEND_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// Validated refresher settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Mode (never projected).
    pub mode: Mode,
    /// SA token path.
    pub sa_token_file: PathBuf,
    /// Shared directory.
    pub out_dir: PathBuf,
    /// Exchange base URL.
    pub exchange_url: String,
    /// CA PEM bytes.
    pub ca_pem: Option<Vec<u8>>,
    /// Role.
    pub role_arn: Option<String>,
    /// Endpoint address.
    pub listen: SocketAddr,
    /// Endpoint path.
    pub credentials_path: String,
    /// Refresh policy.
    pub policy: crate::refresh::Policy,
    /// Per-call timeout.
    pub timeout: std::time::Duration,
    /// File mode.
    pub file_mode: u32,
    /// One-shot.
    pub once: bool,
    /// One-shot deadline.
    pub once_deadline: std::time::Duration,
}

/// The endpoint's HTTP path, refused unless it starts with `/`.
pub fn credentials_path_ok(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("--credentials-path {path:?} must start with /"));
    }
    Ok(())
}

impl RunArgs {
    /// Check and convert; errors name the flag.
    pub fn validate(self) -> Result<Config, String> {
        let mode = self.mode.ok_or("--mode (TOKENVEND_MODE) is required")?;
        if mode == Mode::Projected {
            return Err(
                "--mode projected needs no sidecar: use web-identity or credentials".into(),
            );
        }
        let sa_token_file = self
            .sa_token_file
            .ok_or("--sa-token-file (TOKENVEND_SA_TOKEN_FILE) is required")?;
        let out_dir = self
            .out_dir
            .ok_or("--out-dir (TOKENVEND_OUT_DIR) is required")?;
        let exchange_url = self
            .exchange_url
            .ok_or("--exchange-url (TOKENVEND_EXCHANGE_URL) is required")?;
        if let Some(problem) = tokenvend_core::names::exchange_url_problem(&exchange_url) {
            return Err(format!(
                "--exchange-url {} {problem}",
                tokenvend_core::names::shown_url(&exchange_url)
            ));
        }
        let ca_pem = match (self.ca_file, self.ca_pem) {
            (Some(f), _) => Some(
                limited::read(&f, limited::MAX_BYTES)
                    .map_err(|e| format!("--ca-file {}: {e}", f.display()))?,
            ),
            (None, Some(p)) if !p.trim().is_empty() => Some(p.into_bytes()),
            _ => None,
        };
        if !(0.1..=0.9).contains(&self.refresh_share) {
            return Err(format!(
                "--refresh-share {} must be between 0.1 and 0.9",
                self.refresh_share
            ));
        }
        if self.min_remaining_seconds < 0 {
            return Err("--min-remaining-seconds must not be negative".into());
        }
        if !(1..=300).contains(&self.timeout_seconds) {
            return Err(format!(
                "--timeout-seconds {} must be between 1 and 300",
                self.timeout_seconds
            ));
        }
        let file_mode = u32::from_str_radix(self.file_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777 && m & 0o400 != 0)
            .ok_or_else(|| {
                format!(
                    "--file-mode {:?} must be an octal mode like 0644 that the owner can read",
                    self.file_mode
                )
            })?;
        if !(1..=3600).contains(&self.once_deadline_seconds) {
            return Err(format!(
                "--once-deadline-seconds {} must be between 1 and 3600",
                self.once_deadline_seconds
            ));
        }
        credentials_path_ok(&self.credentials_path)?;
        Ok(Config {
            mode,
            sa_token_file,
            out_dir,
            exchange_url,
            ca_pem,
            role_arn: self.role_arn.filter(|r| !r.is_empty()),
            listen: self.listen,
            credentials_path: self.credentials_path,
            policy: crate::refresh::Policy {
                share: self.refresh_share,
                min_remaining: self.min_remaining_seconds,
                jitter: 0.1,
            },
            timeout: std::time::Duration::from_secs(self.timeout_seconds),
            file_mode,
            once: self.once,
            once_deadline: std::time::Duration::from_secs(self.once_deadline_seconds),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUIRED: [&str; 8] = [
        "--mode",
        "credentials",
        "--sa-token-file",
        "/sa/token",
        "--out-dir",
        "/out",
        "--exchange-url",
        "https://sts.example",
    ];

    /// The required flags, each replaced by `extra` when it sets the same one.
    fn validate(extra: &[&str]) -> Result<Config, String> {
        let required = REQUIRED
            .chunks(2)
            .filter(|pair| !extra.contains(&pair[0]))
            .flatten()
            .copied();
        let args = std::iter::once("tokenvend-sidecar")
            .chain(required)
            .chain(extra.iter().copied());
        Cli::try_parse_from(args)
            .map_err(|e| e.to_string())?
            .run
            .validate()
    }

    #[test]
    fn defaults_are_valid() {
        let cfg = validate(&[]).expect("valid");
        assert_eq!(cfg.file_mode, 0o644);
        assert_eq!(cfg.once_deadline, std::time::Duration::from_secs(120));
        assert_eq!(cfg.credentials_path, CREDENTIALS_PATH);
        assert!(cfg.ca_pem.is_none() && cfg.role_arn.is_none());
    }

    #[test]
    fn the_ca_comes_from_the_file_else_the_inline_pem_and_a_blank_one_is_unset() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "FROM FILE").expect("write");
        let file = file.to_str().expect("utf-8");
        for (extra, want) in [
            (&["--ca-pem", "INLINE"][..], Some(&b"INLINE"[..])),
            (&["--ca-pem", " \n "], None),
            (
                &["--ca-file", file, "--ca-pem", "INLINE"],
                Some(b"FROM FILE"),
            ),
        ] {
            let cfg = validate(extra).expect("valid");
            assert_eq!(cfg.ca_pem.as_deref(), want, "{extra:?}");
        }
    }

    #[test]
    fn settings_at_their_edges_are_taken() {
        let cfg = validate(&["--min-remaining-seconds=0"]).expect("0 is not negative");
        assert_eq!(cfg.policy.min_remaining, 0);
        let role = "arn:aws:iam::123456789012:role/app";
        let cfg = validate(&["--role-arn", role]).expect("valid");
        assert_eq!(cfg.role_arn.as_deref(), Some(role));
        let cfg = validate(&["--role-arn", ""]).expect("valid");
        assert_eq!(cfg.role_arn, None, "an empty role is the service's default");
    }

    #[test]
    fn each_bad_setting_is_refused_naming_the_flag() {
        for (extra, names) in [
            (&["--mode", "projected"][..], "--mode projected"),
            (&["--exchange-url", "sts.example"], "--exchange-url"),
            (&["--refresh-share", "0.95"], "--refresh-share"),
            (&["--refresh-share", "NaN"], "--refresh-share"),
            (&["--min-remaining-seconds=-1"], "--min-remaining-seconds"),
            (&["--timeout-seconds", "0"], "--timeout-seconds"),
            (&["--file-mode", "0200"], "--file-mode"),
            (&["--file-mode", "644x"], "--file-mode"),
            (&["--file-mode", "01644"], "--file-mode"),
            (&["--credentials-path", "creds"], "--credentials-path"),
            (&["--once-deadline-seconds", "0"], "--once-deadline-seconds"),
            (&["--ca-file", "/nonexistent/ca.pem"], "--ca-file"),
            (&["--listen", "localhost"], "--listen"),
        ] {
            let err = validate(extra).expect_err(names);
            assert!(err.contains(names), "{extra:?}: {err}");
        }
    }

    #[test]
    fn credentials_in_the_exchange_url_are_refused_and_never_echoed() {
        let err = validate(&["--exchange-url", "https://u:s3cret@sts.example/x"])
            .expect_err("credentials");
        assert!(
            err.starts_with("--exchange-url ")
                && err.contains("must not carry credentials")
                && !err.contains("s3cret"),
            "{err}"
        );
        let ok = validate(&["--exchange-url", "https://sts.example/a@b"]).expect("not userinfo");
        assert_eq!(ok.exchange_url, "https://sts.example/a@b");
    }

    #[test]
    fn an_exchange_url_it_cannot_call_is_refused_at_start_naming_the_flag() {
        for (url, reason) in [
            ("https://", "\"https://\" is not a URL: empty host"),
            ("https://sts:99999/", "is not a URL: invalid port number"),
            (
                "https://sts.example/credentials",
                "without /credentials: the sidecar appends",
            ),
            ("ftp://sts", "must be an http:// or https:// URL"),
        ] {
            let err = validate(&["--exchange-url", url]).expect_err(url);
            assert!(
                err.starts_with("--exchange-url ") && err.contains(reason),
                "{url}: {err}"
            );
        }
    }

    #[test]
    fn a_missing_required_flag_is_named_with_its_env_var() {
        for (i, flag) in REQUIRED.iter().enumerate().step_by(2) {
            let mut args = vec!["tokenvend-sidecar"];
            args.extend(
                REQUIRED
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| j / 2 != i / 2)
                    .map(|(_, a)| *a),
            );
            let err = Cli::try_parse_from(args)
                .expect("parses")
                .run
                .validate()
                .expect_err(flag);
            assert!(err.starts_with(flag) && err.contains("TOKENVEND_"), "{err}");
        }
    }

    #[test]
    fn probe_refuses_a_negative_validity() {
        let parse = |v: &str| {
            Cli::try_parse_from([
                "tokenvend-sidecar",
                "probe",
                "--mode",
                "web-identity",
                "--out-dir",
                "/out",
                &format!("--min-valid-seconds={v}"),
            ])
        };
        assert!(parse("0").is_ok() && parse("300").is_ok());
        let err = parse("-5").expect_err("negative").to_string();
        assert!(err.contains("--min-valid-seconds"), "{err}");
    }
}
