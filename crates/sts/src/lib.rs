//! tokenvend-sts: exchanges Kubernetes service-account tokens for scoped AWS credentials
//! (TokenReview or JWKS validation, Jinja2 session policy, STS AssumeRole) or for web-identity
//! JWTs signed by its own OIDC issuer.

pub mod authz;
pub mod config;
pub mod exchange;
pub mod issuer;
pub mod metrics;
pub mod policy;
pub mod sdk_config;
pub mod server;
pub mod validate;

pub use config::{Cli, Command, ServeArgs};
pub use server::run;
