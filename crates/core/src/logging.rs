//! Logging shared by the binaries: one spelling of the log level, and (feature `logging`) the
//! stdout setup of the servers, with lines written by a dedicated thread.

use std::str::FromStr;

/// A log level as the binaries' settings spell it, in any case: `debug`, `info`, `warn` (or
/// `warning`, the seed's spelling) and `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// tokenvend's own debug output (third-party crates stay at info: SDK and TLS internals).
    Debug,
    /// One line per exchange or admission, plus lifecycle events.
    Info,
    /// Refusals and recoverable failures only.
    Warn,
    /// Failures only.
    Error,
}

/// A log level that is none of the accepted spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("log level {0:?}: expected debug, info, warn (or warning) or error")]
pub struct ParseLogLevelError(String);

impl FromStr for LogLevel {
    type Err = ParseLogLevelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "error" => Ok(LogLevel::Error),
            _ => Err(ParseLogLevelError(s.to_owned())),
        }
    }
}

impl LogLevel {
    /// The level as a `tracing` filter directive; `Debug` applies to `own_crates` only.
    pub fn directive(self, own_crates: &[&str]) -> String {
        match self {
            LogLevel::Debug => std::iter::once("info".to_owned())
                .chain(own_crates.iter().map(|c| format!("{c}=debug")))
                .collect::<Vec<_>>()
                .join(","),
            LogLevel::Info => "info".to_owned(),
            LogLevel::Warn => "warn".to_owned(),
            LogLevel::Error => "error".to_owned(),
        }
    }
}

/// The filter directive in force: `RUST_LOG` when it says anything, else `default_directive`.
/// A blank `RUST_LOG` (`RUST_LOG=` in a manifest) is not an empty filter, which would log
/// errors only.
pub fn filter_directive(rust_log: Option<&str>, default_directive: &str) -> String {
    rust_log
        .filter(|v| !v.trim().is_empty())
        .unwrap_or(default_directive)
        .to_owned()
}

#[cfg(feature = "logging")]
pub use init::{LogFormat, LogGuard, LogInitError, init};

#[cfg(feature = "logging")]
mod init {
    use tracing_subscriber::EnvFilter;

    /// Output format of the log lines.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
    pub enum LogFormat {
        /// One JSON object per line.
        Json,
        /// Human-readable text.
        Text,
    }

    /// Keep until the process ends: dropping it writes out the lines still queued.
    #[must_use = "dropping the guard stops the log writer"]
    pub struct LogGuard(#[allow(dead_code)] tracing_appender::non_blocking::WorkerGuard);

    /// Logging could not be set up.
    #[derive(Debug, thiserror::Error)]
    pub enum LogInitError {
        /// `RUST_LOG` (or the default) is not a valid filter.
        #[error("RUST_LOG {value:?} is not a valid log filter: {reason}")]
        Filter {
            /// The filter given.
            value: String,
            /// Why it was refused.
            reason: String,
        },
        /// A global subscriber was already installed.
        #[error("logging was already set up: {0}")]
        AlreadySet(String),
    }

    /// Log to stdout in `format`, filtered by `RUST_LOG` when set, else by `default_directive`.
    /// Lines are handed to a dedicated thread, so request handlers never wait on stdout; none
    /// is dropped (a full queue slows the handlers instead).
    pub fn init(format: LogFormat, default_directive: &str) -> Result<LogGuard, LogInitError> {
        let rust_log = std::env::var("RUST_LOG").ok();
        let directive = super::filter_directive(rust_log.as_deref(), default_directive);
        let filter = EnvFilter::try_new(&directive).map_err(|e| LogInitError::Filter {
            value: directive.clone(),
            reason: e.to_string(),
        })?;
        let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .thread_name("log-writer")
            .finish(std::io::BufWriter::new(std::io::stdout()));
        let installed = match format {
            LogFormat::Json => tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_env_filter(filter)
                .with_writer(writer)
                .try_init(),
            LogFormat::Text => tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(writer)
                .try_init(),
        };
        installed.map_err(|e| LogInitError::AlreadySet(e.to_string()))?;
        Ok(LogGuard(guard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_the_levels_parses_and_anything_else_is_refused_by_name() {
        let cases = [
            ("DEBUG", Some(LogLevel::Debug)),
            ("info", Some(LogLevel::Info)),
            (" Info ", Some(LogLevel::Info)),
            ("WARNING", Some(LogLevel::Warn)),
            ("warn", Some(LogLevel::Warn)),
            ("Error", Some(LogLevel::Error)),
            ("verbose", None),
            ("", None),
            ("trace", None),
        ];
        for (text, want) in cases {
            match (text.parse::<LogLevel>(), want) {
                (Ok(got), Some(want)) => assert_eq!(got, want, "{text:?}"),
                (Err(e), None) => {
                    let msg = e.to_string();
                    assert!(msg.contains(&format!("{text:?}")), "{msg}");
                    assert!(msg.contains("expected debug, info"), "{msg}");
                }
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn debug_applies_to_the_own_crates_only() {
        assert_eq!(
            LogLevel::Debug.directive(&["tokenvend_sts", "tokenvend_core"]),
            "info,tokenvend_sts=debug,tokenvend_core=debug"
        );
        assert_eq!(LogLevel::Info.directive(&["x"]), "info");
        assert_eq!(LogLevel::Warn.directive(&[]), "warn");
        assert_eq!(LogLevel::Error.directive(&[]), "error");
    }

    #[test]
    fn rust_log_wins_unless_it_is_blank() {
        for (rust_log, want) in [
            (Some("tokenvend_sts=debug"), "tokenvend_sts=debug"),
            (Some("warn"), "warn"),
            (Some(""), "info"),
            (Some("  "), "info"),
            (None, "info"),
        ] {
            assert_eq!(filter_directive(rust_log, "info"), want, "{rust_log:?}");
        }
    }
}
