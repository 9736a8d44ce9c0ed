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

/// An error and its sources down to the root, each message once, joined with ": " (the HTTP
/// and AWS clients' own messages stop at the kind, e.g. "error sending request").
pub(crate) fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let m = err.to_string();
        if !out.last().is_some_and(|l| l.contains(&m)) {
            out.push(m);
        }
        next = err.source();
    }
    out.join(": ")
}
