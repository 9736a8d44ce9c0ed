//! Types every tokenvend binary shares: the pod contract's label, annotation and env var
//! names, the credential modes, the shared file layout and role-ARN validation, and atomic file
//! writes, and bounded file reads.
//!
//! Keep this crate small and dependency-light: the sidecar links it too.

pub mod arn;
pub mod atomic;
#[cfg(feature = "ca-bundle")]
pub mod cabundle;
pub mod claims;
pub mod clock;
#[cfg(feature = "tls-server")]
pub mod connections;
pub mod contract;
pub mod creds;
pub mod image;
pub mod latch;
pub mod limited;
pub mod logging;
pub mod mode;
pub mod names;
#[cfg(feature = "tls-server")]
pub mod serving;
pub mod session;
#[cfg(feature = "tls-server")]
pub mod tls;
pub mod watched;

pub use arn::{ArnError, RoleArn};
pub use claims::{ClaimsError, Identity};
pub use latch::FailureLatch;
pub use logging::LogLevel;
pub use mode::{Mode, ParseModeError};
pub use watched::{Checked, WatchedFile};
