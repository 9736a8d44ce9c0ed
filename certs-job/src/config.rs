//! Command line of `tokenvend-certs`, checked whole before anything is generated or written: a
//! name that no Service or namespace can have, or a lifetime that cannot be encoded, would
//! otherwise give a certificate the API server never accepts.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tokenvend_core::names::{is_dns_label, is_dns_subdomain, is_service_name};

use crate::pki::service_sans;
use crate::plan::Settings;

/// Longest lifetime or margin accepted, in days (100 years; X.509 times stop at 9999).
pub const MAX_DAYS: u64 = 36_500;

const DAY: u64 = 86_400;

/// Bootstraps and rotates the webhook's TLS.
#[derive(Debug, Parser)]
#[command(name = "tokenvend-certs", version, about)]
pub struct Cli {
    /// Service name(s) the certificate serves, comma-separated (the first names the CA); each gets
    /// `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc`, `<svc>.<ns>.svc.cluster.local`.
    #[arg(
        long,
        env = "TOKENVEND_SERVICE",
        value_delimiter = ',',
        required = true
    )]
    pub service: Vec<String>,
    /// Namespace of the Service and Secrets.
    #[arg(long, env = "TOKENVEND_NAMESPACE")]
    pub namespace: String,
    /// Local mode: write ca.crt, ca.key, tls.crt, tls.key here (no cluster).
    #[arg(long, env = "TOKENVEND_OUT_DIR", conflicts_with_all = ["secret", "webhook_config"])]
    pub out_dir: Option<PathBuf>,
    /// In-cluster mode: the kubernetes.io/tls Secret (the CA goes to `<secret>-ca`).
    #[arg(long, env = "TOKENVEND_SECRET", requires = "webhook_config")]
    pub secret: Option<String>,
    /// In-cluster mode: the MutatingWebhookConfiguration whose caBundles to keep in step.
    #[arg(long, env = "TOKENVEND_WEBHOOK_CONFIG", requires = "secret")]
    pub webhook_config: Option<String>,
    /// CA lifetime, days.
    #[arg(long, env = "TOKENVEND_CA_VALIDITY_DAYS", default_value_t = 3650,
          value_parser = clap::value_parser!(u64).range(1..=MAX_DAYS))]
    pub ca_validity_days: u64,
    /// Serving certificate lifetime, days.
    #[arg(long, env = "TOKENVEND_SERVING_VALIDITY_DAYS", default_value_t = 365,
          value_parser = clap::value_parser!(u64).range(1..=MAX_DAYS))]
    pub serving_validity_days: u64,
    /// Renew the serving certificate when fewer days are left.
    #[arg(long, env = "TOKENVEND_RENEW_BEFORE_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=MAX_DAYS))]
    pub renew_before_days: u64,
    /// Rotate the CA when fewer days are left.
    #[arg(long, env = "TOKENVEND_CA_RENEW_BEFORE_DAYS", default_value_t = 365,
          value_parser = clap::value_parser!(u64).range(0..=MAX_DAYS))]
    pub ca_renew_before_days: u64,
    /// Days a replaced CA stays in the caBundle.
    #[arg(long, env = "TOKENVEND_CA_OVERLAP_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u64).range(0..=MAX_DAYS))]
    pub ca_overlap_days: u64,
}

/// Where the certificates go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Files in a directory.
    Dir(PathBuf),
    /// The serving Secret and the MutatingWebhookConfiguration, in the cluster.
    Cluster {
        /// The `kubernetes.io/tls` Secret.
        secret: String,
        /// The MutatingWebhookConfiguration.
        webhook_config: String,
    },
}

/// A checked command line.
#[derive(Debug)]
pub struct Config {
    /// Namespace of the Services and Secrets.
    pub namespace: String,
    /// Where to write.
    pub target: Target,
    /// What to generate and when to renew.
    pub settings: Settings,
}

impl Cli {
    /// Check every setting against the others; the error names the flag to fix.
    pub fn validate(self) -> Result<Config, String> {
        for svc in &self.service {
            if !is_service_name(svc) {
                return Err(format!(
                    "--service {svc:?} is not a Service name (lowercase letters, digits and '-', \
                     at most 63, starting with a letter)"
                ));
            }
        }
        if !is_dns_label(&self.namespace) {
            return Err(format!(
                "--namespace {:?} is not a namespace name (lowercase letters, digits and '-', at \
                 most 63)",
                self.namespace
            ));
        }
        if self.renew_before_days >= self.serving_validity_days {
            return Err(format!(
                "--renew-before-days {} must be below --serving-validity-days {}",
                self.renew_before_days, self.serving_validity_days
            ));
        }
        if self.ca_renew_before_days >= self.ca_validity_days {
            return Err(format!(
                "--ca-renew-before-days {} must be below --ca-validity-days {}",
                self.ca_renew_before_days, self.ca_validity_days
            ));
        }
        if self.serving_validity_days > self.ca_validity_days - self.ca_renew_before_days {
            return Err(format!(
                "--serving-validity-days {} must not outlive the CA's renewal point \
                 (--ca-validity-days minus --ca-renew-before-days: {})",
                self.serving_validity_days,
                self.ca_validity_days - self.ca_renew_before_days
            ));
        }
        let target = match (self.out_dir, self.secret, self.webhook_config) {
            (Some(dir), _, _) => Target::Dir(dir),
            (None, Some(secret), Some(webhook_config)) => {
                for (flag, name) in [("--secret", &secret), ("--webhook-config", &webhook_config)] {
                    if !is_dns_subdomain(name) || name.is_empty() {
                        return Err(format!("{flag} {name:?} is not a Kubernetes object name"));
                    }
                }
                Target::Cluster {
                    secret,
                    webhook_config,
                }
            }
            _ => {
                return Err(
                    "give either --out-dir DIR, or --secret NAME and --webhook-config NAME".into(),
                );
            }
        };
        let days = |n: u64| Duration::from_secs(n * DAY);
        let settings = Settings {
            sans: self
                .service
                .iter()
                .flat_map(|svc| service_sans(svc, &self.namespace))
                .collect(),
            ca_name: format!("{}-ca", self.service[0]),
            ca_validity: days(self.ca_validity_days),
            serving_validity: days(self.serving_validity_days),
            renew_before: days(self.renew_before_days),
            ca_renew_before: days(self.ca_renew_before_days),
            ca_overlap: days(self.ca_overlap_days),
        };
        Ok(Config {
            namespace: self.namespace,
            target,
            settings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(extra: &[&str]) -> Result<Config, String> {
        let base = [
            "tokenvend-certs",
            "--service",
            "tokenvend-webhook,tokenvend-sts",
        ];
        let ns = if extra.contains(&"--namespace") {
            &[][..]
        } else {
            &["--namespace", "tokenvend"][..]
        };
        let target = if extra
            .iter()
            .any(|a| a.starts_with("--secret") || a.starts_with("--out-dir"))
        {
            &[][..]
        } else {
            &["--out-dir", "/certs"][..]
        };
        let args = base.iter().chain(ns).chain(target).chain(extra);
        Cli::try_parse_from(args)
            .map_err(|e| e.to_string())?
            .validate()
    }

    #[test]
    fn defaults_give_both_services_sans_and_the_documented_lifetimes() {
        let cfg = validate(&[]).expect("valid");
        assert_eq!(cfg.target, Target::Dir("/certs".into()));
        assert_eq!(cfg.settings.sans.len(), 8);
        assert!(
            cfg.settings
                .sans
                .contains(&"tokenvend-sts.tokenvend.svc".to_owned())
        );
        assert_eq!(cfg.settings.ca_name, "tokenvend-webhook-ca");
        let d = Settings::defaults(cfg.settings.sans.clone(), "tokenvend-webhook-ca");
        assert_eq!(cfg.settings.ca_validity, d.ca_validity);
        assert_eq!(cfg.settings.serving_validity, d.serving_validity);
        assert_eq!(cfg.settings.renew_before, d.renew_before);
        assert_eq!(cfg.settings.ca_renew_before, d.ca_renew_before);
        assert_eq!(cfg.settings.ca_overlap, d.ca_overlap);
        let cfg = validate(&[
            "--secret",
            "tokenvend-webhook-tls",
            "--webhook-config",
            "tokenvend",
        ])
        .expect("cluster mode");
        assert_eq!(
            cfg.target,
            Target::Cluster {
                secret: "tokenvend-webhook-tls".into(),
                webhook_config: "tokenvend".into()
            }
        );
        // The longest accepted lifetimes still fit X.509 and u64 seconds; the serving
        // certificate may last up to the CA's renewal point, to the day.
        validate(&[
            "--ca-validity-days",
            "36500",
            "--serving-validity-days",
            "36100",
            "--ca-renew-before-days",
            "400",
        ])
        .expect("100 years");
    }

    #[test]
    fn each_bad_setting_is_refused_naming_the_flag() {
        for (extra, names) in [
            (&["--service", ""][..], "--service"),
            (&["--service", "Tokenvend"], "--service"),
            (&["--service", "a b"], "--service"),
            (&["--service", "a,"], "--service"),
            (&["--service", "0abc"], "--service"),
            (&["--namespace", ""], "--namespace"),
            (&["--namespace", "ns."], "--namespace"),
            (
                &["--ca-validity-days", "99999999999999999"],
                "--ca-validity-days",
            ),
            (&["--ca-validity-days", "0"], "--ca-validity-days"),
            (
                &["--serving-validity-days", "36501"],
                "--serving-validity-days",
            ),
            (
                &["--ca-overlap-days", "99999999999999999"],
                "--ca-overlap-days",
            ),
            (&["--renew-before-days=-1"], "--renew-before-days"),
            (
                &["--renew-before-days", "365"],
                "--renew-before-days 365 must be below",
            ),
            (
                &["--ca-renew-before-days", "3650"],
                "--ca-renew-before-days 3650 must be below",
            ),
            (
                &["--serving-validity-days", "3300"],
                "--serving-validity-days 3300 must not outlive",
            ),
            (
                &["--secret", "tls", "--webhook-config", "Bad_Name"],
                "--webhook-config",
            ),
            (
                &["--secret", "", "--webhook-config", "tokenvend"],
                "--secret",
            ),
            (&["--secret", "tls"], "--webhook-config"),
            (
                &[
                    "--out-dir",
                    "/a",
                    "--secret",
                    "tls",
                    "--webhook-config",
                    "w",
                ],
                "--secret",
            ),
        ] {
            let err = validate(extra).expect_err(names);
            assert!(err.contains(names), "{extra:?}: {err}");
        }
    }
}
