//! How a pod gets its AWS credentials.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The credential delivery mode of one pod (annotation `<prefix>/aws-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The sidecar exchanges the SA token for a tokenvend-issued JWT; SDKs call
    /// AssumeRoleWithWebIdentity themselves.
    WebIdentity,
    /// The sidecar exchanges the SA token for scoped credentials and serves them on loopback.
    Credentials,
    /// No sidecar: the projected SA token itself is the web-identity token (EKS IRSA model).
    Projected,
}

impl Mode {
    /// Every mode, in documentation order.
    pub const ALL: [Mode; 3] = [Mode::WebIdentity, Mode::Credentials, Mode::Projected];

    /// The annotation / flag spelling of this mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::WebIdentity => "web-identity",
            Mode::Credentials => "credentials",
            Mode::Projected => "projected",
        }
    }

    /// Whether this mode runs the refresher sidecar.
    pub fn has_sidecar(self) -> bool {
        !matches!(self, Mode::Projected)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mode string that is not one of the known modes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mode {0:?}: expected one of web-identity, credentials, projected")]
pub struct ParseModeError(pub String);

impl FromStr for Mode {
    type Err = ParseModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s.trim())
            .ok_or_else(|| ParseModeError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_mode_through_str_and_serde() {
        for m in Mode::ALL {
            assert_eq!(m.as_str().parse::<Mode>(), Ok(m));
            assert_eq!(m.to_string(), m.as_str());
            let json = serde_json::to_string(&m).expect("serialize");
            assert_eq!(json, format!("\"{}\"", m.as_str()));
        }
    }

    #[test]
    fn rejects_unknown_mode_naming_the_choices() {
        let err = "irsa".parse::<Mode>().expect_err("must fail");
        assert!(
            err.to_string()
                .contains("web-identity, credentials, projected")
        );
    }

    #[test]
    fn only_projected_has_no_sidecar() {
        assert!(Mode::WebIdentity.has_sidecar());
        assert!(Mode::Credentials.has_sidecar());
        assert!(!Mode::Projected.has_sidecar());
    }
}
