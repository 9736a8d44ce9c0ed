//! tokenvend-webhook: a mutating admission webhook that gives labelled pods AWS credentials
//! plumbing (projected SA token, shared in-memory volume, env vars, refresher sidecar).
//!
//! The mutation itself is [`mutate::mutate`], a pure function; everything else is the edge.

pub mod admission;
pub mod budget;
pub mod config;
pub mod metrics;
pub mod mutate;
pub mod patch;
pub mod pod;
pub mod reload;
pub mod server;

pub use config::{Cli, Config, ServerConfig};
pub use server::run;
