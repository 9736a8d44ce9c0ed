//! Kubernetes' own reading of a service account's username (`serviceaccount.SplitUsername`: a
//! namespace that is a DNS-1123 label, a name that is a DNS-1123 subdomain, both as its
//! validation regexes and lengths have them), as an oracle for `Identity::from_username`: shared
//! by the usernames property (`tests/fuzz.rs`) and the `core_parsers` libFuzzer target.

use std::sync::LazyLock;

use regex::Regex;
use tokenvend_core::Identity;

const LABEL: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";

static NAMESPACE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!("^{LABEL}$")).expect("DNS-1123 label"));
static NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!("^{LABEL}(\\.{LABEL})*$")).expect("DNS-1123 subdomain"));

/// Where `Identity::from_username` and Kubernetes disagree on `username`, if they do: whether it
/// names a service account, and which.
pub fn disagreement(username: &str) -> Option<String> {
    let ours = Identity::from_username(username).ok();
    let ours = ours
        .as_ref()
        .map(|id| (id.namespace.as_str(), id.service_account.as_str()));
    let theirs = split_username(username);
    (ours != theirs).then(|| format!("{username:?}: ours {ours:?}, Kubernetes' {theirs:?}"))
}

/// The namespace and name Kubernetes reads from `username`, if it is a service account's.
fn split_username(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let mut parts = rest.split(':');
    let (namespace, name) = (parts.next()?, parts.next()?);
    (parts.next().is_none()
        && NAMESPACE.is_match(namespace)
        && namespace.len() <= 63
        && NAME.is_match(name)
        && name.len() <= 253)
        .then_some((namespace, name))
}
