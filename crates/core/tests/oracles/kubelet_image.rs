//! The kubelet's verdict on an image reference, as an oracle: `ParseNormalizedNamed` of
//! github.com/distribution/reference (which the kubelet vendors, and the runtimes share) rebuilt
//! from its published grammar with the `regex` crate (leftmost-first, as Go's regexp), then
//! go-digest's check of the digest. Shared by the property in `tests/image_reference.rs` and the
//! `core_parsers` libFuzzer target (`#[path]`), so both ask the same question.

use regex::Regex;
use tokenvend_core::image::reference_problem;

/// The kubelet's image-reference parser: `ParseNormalizedNamed`, then go-digest's `Validate`.
pub struct Kubelet {
    reference: Regex,
    name: Regex,
    identifier: Regex,
}

impl Kubelet {
    /// The grammar, compiled.
    pub fn compile() -> Self {
        let alphanumeric = "[a-z0-9]+";
        let separator = "(?:[._]|__|[-]+)";
        let path_component = format!("{alphanumeric}(?:{separator}{alphanumeric})*");
        let domain_component = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
        let domain_name = format!("{domain_component}(?:\\.{domain_component})*");
        let ipv6 = "\\[(?:[a-fA-F0-9:]+)\\]";
        let domain_and_port = format!("(?:{domain_name}|{ipv6})(?::[0-9]+)?");
        let remote_name = format!("{path_component}(?:/{path_component})*");
        let name = format!("(?:{domain_and_port}/)?{remote_name}");
        // Go's `\w` is ASCII; written out so no Unicode class can creep in.
        let tag = "[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}";
        let digest = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
        let compile = |pattern: String| Regex::new(&pattern).expect("the distribution grammar");
        Self {
            reference: compile(format!("^({name})(?::({tag}))?(?:@({digest}))?$")),
            name: compile(format!("^(?:({domain_and_port})/)?({remote_name})$")),
            identifier: compile("^[a-f0-9]{64}$".to_owned()),
        }
    }

    /// Where `reference_problem` and the kubelet disagree on `image`, if they do, but for the
    /// one place the webhook is stricter on purpose (a bracketed host that is no IPv6 address).
    pub fn disagreement(&self, image: &str) -> Option<String> {
        let problem = reference_problem(image);
        match (problem, self.accepts(image)) {
            (None, false) => Some(format!("accepted what the kubelet refuses: {image:?}")),
            (Some(p), true) if !bracketed_host_is_no_address(image) => {
                Some(format!("refused what the kubelet takes: {image:?}: {p}"))
            }
            _ => None,
        }
    }

    /// Whether the kubelet takes `image` as a pullable reference.
    pub fn accepts(&self, image: &str) -> bool {
        if self.identifier.is_match(image) {
            return false; // "cannot specify 64-byte hexadecimal strings"
        }
        let (domain, remainder) = split_docker_domain(image);
        let remote = remainder.split(':').next().unwrap_or_default();
        if remote.to_lowercase() != remote {
            return false;
        }
        let normalized = format!("{domain}/{remainder}");
        let Some(parts) = self.reference.captures(&normalized) else {
            return false;
        };
        let path = self
            .name
            .captures(&parts[1])
            .and_then(|name| name.get(2))
            .map_or(parts[1].len(), |path| path.as_str().len());
        if path > 255 {
            return false;
        }
        parts
            .get(3)
            .is_none_or(|digest| go_digest_valid(digest.as_str()))
    }
}

/// distribution's `splitDockerDomain`: which part is the registry, Docker Hub's default added.
fn split_docker_domain(image: &str) -> (&str, String) {
    let Some((first, rest)) = image.split_once('/') else {
        return ("docker.io", format!("library/{image}"));
    };
    let (domain, remote) = if first == "localhost" {
        (first, rest.to_owned())
    } else if first == "index.docker.io" {
        ("docker.io", rest.to_owned())
    } else if first.contains(['.', ':']) || first.to_lowercase() != first {
        (first, rest.to_owned())
    } else {
        ("docker.io", image.to_owned())
    };
    if domain == "docker.io" && !remote.contains('/') {
        return (domain, format!("library/{remote}"));
    }
    (domain, remote)
}

/// go-digest's `Digest.Validate`: a registered algorithm with its exact length of lowercase hex.
fn go_digest_valid(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == len
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Where the webhook may refuse what the kubelet takes: a bracketed registry host that is no IPv6
/// address (`[:::]`), which the kubelet's grammar lets through to fail at every pull instead.
fn bracketed_host_is_no_address(image: &str) -> bool {
    image
        .strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .is_some_and(|(host, _)| host.parse::<std::net::Ipv6Addr>().is_err())
}
