//! tokenvend-sts: exchanges Kubernetes service-account tokens for scoped AWS credentials
//! (TokenReview or JWKS validation, Jinja2 session policy, STS AssumeRole) or for web-identity
//! JWTs signed by its own OIDC issuer.

pub mod authz;
pub mod config;
pub mod exchange;
pub mod issuer;
pub mod jinja2;
pub mod metrics;
pub mod policy;
pub mod publication;
pub mod reload;
pub mod sdk_config;
pub mod server;
pub mod slices;
pub mod unknown_names;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a message and an optional source.
    #[derive(Debug)]
    struct Chained(&'static str, Option<Box<Chained>>);

    impl std::fmt::Display for Chained {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Chained {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn causes_name_each_reason_once_down_to_the_root() {
        let root = Chained("Connection refused (os error 111)", None);
        let wrapped = Chained(
            "client error (Connect)",
            Some(Box::new(Chained(
                "tcp connect error: Connection refused (os error 111)",
                Some(Box::new(root)),
            ))),
        );
        assert_eq!(
            causes(&wrapped),
            "client error (Connect): tcp connect error: Connection refused (os error 111)"
        );
    }
}
