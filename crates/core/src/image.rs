//! Container image references, checked where one is taken from configuration (the sidecar's
//! image) so a reference no runtime can pull is refused at start.

/// Why `image` is not an image reference the container runtime can pull, if it is not: checked
/// against the distribution grammar containerd and CRI-O parse (the API server checks only for
/// whitespace), so a typo fails the webhook's start instead of every mutated pod with
/// `InvalidImageName`. Written out rather than taken from a crate: the one crate with this
/// grammar compiles it into a Unicode regex that kept 40 MB resident for the process's life.
pub fn reference_problem(image: &str) -> Option<String> {
    if image.is_empty() {
        return Some("it is empty".to_owned());
    }
    if image.len() == 64 && image.bytes().all(is_lower_hex) {
        return Some(
            "it is 64 hex digits, which the kubelet takes for an image ID, not a name".to_owned(),
        );
    }
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    // A ':' after the last '/' starts the tag; one before it is a registry's port.
    let tag_colon = rest
        .rfind(':')
        .filter(|&c| rest.rfind('/').is_none_or(|slash| c > slash));
    let (name, tag) = match tag_colon {
        Some(c) => (&rest[..c], Some(&rest[c + 1..])),
        None => (rest, None),
    };
    let bad = |why: String| Some(format!("invalid reference format: {why}"));
    if !is_image_name(name) {
        if is_image_name(&name.to_ascii_lowercase()) {
            return Some("its repository path must be lowercase".to_owned());
        }
        return bad(format!(
            "{name:?} is not [registry[:port]/]path with lowercase path components of letters \
             and digits separated by '.', '_', '__' or '-'"
        ));
    }
    if repository_path_len(name) > 255 {
        return Some(
            "its repository path (after the registry, with Docker Hub's `library/`) is longer \
             than 255 characters"
                .to_owned(),
        );
    }
    if let Some(tag) = tag {
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let ok = tag.len() <= 128
            && tag.bytes().next().is_some_and(word)
            && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-');
        if !ok {
            return bad(format!(
                "tag {tag:?} must be 1 to 128 letters, digits, '_', '.' or '-', not starting \
                 with '.' or '-'"
            ));
        }
    }
    if let Some(digest) = digest {
        let (hex, len) = match digest.split_once(':') {
            Some(("sha256", hex)) => (hex, 64),
            Some(("sha384", hex)) => (hex, 96),
            Some(("sha512", hex)) => (hex, 128),
            _ => {
                return bad(format!(
                    "digest {digest:?} is not sha256:, sha384: or sha512: hex"
                ));
            }
        };
        // go-digest, which the kubelet checks it with, takes lowercase hex only.
        if hex.len() != len || !hex.bytes().all(is_lower_hex) {
            return bad(format!(
                "digest {digest:?} must have {len} lowercase hex digits"
            ));
        }
    }
    None
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// The length of the repository path the kubelet checks against 255: what follows the registry,
/// once a Docker Hub name has its `library/` (`ParseNormalizedNamed`'s normalization).
fn repository_path_len(name: &str) -> usize {
    const LIBRARY: usize = "library/".len();
    let Some((first, rest)) = name.split_once('/') else {
        return LIBRARY + name.len();
    };
    if matches!(first, "docker.io" | "index.docker.io") && !rest.contains('/') {
        return LIBRARY + rest.len();
    }
    // Only a first component that looks like a host is one; the grammar then reads it as the
    // registry whenever it can be one.
    let looks_like_host = first == "localhost"
        || first.contains(['.', ':'])
        || first.bytes().any(|b| b.is_ascii_uppercase());
    if looks_like_host && is_registry(first) {
        rest.len()
    } else {
        name.len()
    }
}

/// `[registry[:port]/]path`: a path of lowercase components, after an optional registry host.
fn is_image_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    let path_ok = |path: &[&str]| !path.is_empty() && path.iter().all(|c| is_path_component(c));
    path_ok(&parts) || (parts.len() > 1 && is_registry(parts[0]) && path_ok(&parts[1..]))
}

/// A path component: lowercase letters and digits, separated by `.`, `_`, `__` or `-` runs.
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !b.first().is_some_and(|&x| alnum(x)) || !b.last().is_some_and(|&x| alnum(x)) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let sep_end = (i..b.len()).find(|&j| alnum(b[j])).unwrap_or(b.len());
        let sep = &c[i..sep_end];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
        i = sep_end;
    }
    true
}

/// A registry host: DNS-like components of letters, digits and inner `-`, with an optional port.
fn is_registry(host: &str) -> bool {
    let port_ok =
        |p: Option<&str>| p.is_none_or(|p| !p.is_empty() && p.bytes().all(|x| x.is_ascii_digit()));
    // An IPv6 address, in brackets, written in hex digits and colons only (the grammar leaves
    // out the IPv4-mapped form and zones).
    if let Some(inner) = host.strip_prefix('[') {
        let Some((addr, after)) = inner.split_once(']') else {
            return false;
        };
        return addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':')
            && addr.parse::<std::net::Ipv6Addr>().is_ok()
            && (after.is_empty() || after.strip_prefix(':').is_some_and(|p| port_ok(Some(p))));
    }
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    // An RFC 1123 label, but in any case and of any length, as the distribution grammar has it.
    let component = |c: &str| {
        !c.is_empty()
            && c.bytes().all(|x| x.is_ascii_alphanumeric() || x == b'-')
            && !c.starts_with('-')
            && !c.ends_with('-')
    };
    name.split('.').all(component) && port_ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_no_runtime_could_pull_is_refused_with_the_reason() {
        // Each would have left every mutated pod in InvalidImageName.
        for (image, reason) in [
            (
                "registry.example.com/Tokenvend/sidecar:1.0",
                "its repository path must be lowercase",
            ),
            (
                "Registry.example.com:5000/Tokenvend/sidecar:V1",
                "its repository path must be lowercase",
            ),
            (
                "registry.example.com/tokenvend/sidecar:",
                "invalid reference format",
            ),
            (
                "registry.example.com/tokenvend/sidecar:1 .0",
                "invalid reference format",
            ),
            (
                "https://registry.example.com/sidecar:1",
                "invalid reference format",
            ),
            ("registry.example.com//sidecar", "invalid reference format"),
            (
                "registry.example.com/sidecar@sha256:abc",
                "invalid reference format",
            ),
            (
                &format!("registry.example.com/sidecar@sha256:{}", "a".repeat(63)),
                "invalid reference format: digest",
            ),
            ("", "it is empty"),
            (
                "registry.example.com/side--car_.x",
                "invalid reference format",
            ),
            (
                "registry.example.com/sidecar:-1",
                "invalid reference format: tag",
            ),
            ("[fd00::1:5000/sidecar", "invalid reference format"),
            (
                "registry.example.com:port/sidecar",
                "invalid reference format",
            ),
            (
                "registry.example.com/sidecar@md5:0123",
                "invalid reference format: digest",
            ),
            // What only the kubelet's parser refuses, found by the property against it
            // (tests/image_reference.rs): uppercase digest hex, which go-digest does not take;
            // a bare 64-hex-digit name, taken for an image ID; an IPv6 registry written with
            // an IPv4 tail or a zone, which the grammar leaves out.
            (
                &format!("sidecar@sha256:{}", "0123456789ABCDEF".repeat(4)),
                "invalid reference format: digest",
            ),
            (
                &"0123456789abcdef".repeat(4),
                "it is 64 hex digits, which the kubelet takes for an image ID",
            ),
            ("[::ffff:10.0.0.1]:5000/sidecar", "invalid reference format"),
            ("[fe80::1%eth0]/sidecar", "invalid reference format"),
        ] {
            let problem = reference_problem(image);
            assert!(
                problem.as_deref().is_some_and(|p| p.starts_with(reason)),
                "{image}: {problem:?}"
            );
        }
        // What registries and the runtimes accept: a port, nested paths, separators, an
        // uppercase registry host and tag, a digest with or without a tag.
        let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
        for image in [
            "sidecar",
            "localhost:5000/tokenvend/sidecar:1.0",
            "Registry.Example.com/a/b/c_d/e__f/g-h/i.j:V1.0-rc_1",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app:2024.1",
            "[fd00::1]:5000/tokenvend/sidecar:1",
            "registry.k8s.io/pause:3.10",
            &format!("ghcr.io/tokenvend/tokenvend@{digest}"),
            &format!("ghcr.io/tokenvend/tokenvend:0.1.0@{digest}"),
            &format!("{}:1", "0123456789abcdef".repeat(4)),
            &format!("tokenvend/{}", "0123456789abcdef".repeat(4)),
        ] {
            assert_eq!(reference_problem(image), None, "{image}");
        }
    }

    #[test]
    fn each_limit_and_digest_holds_at_its_edge() {
        // The repository path up to 255 characters: after the registry, and counting the
        // `library/` a one-component Docker Hub name gets, as the kubelet counts it.
        for (registry, prefix) in [
            ("registry.example.com/", 0),
            ("Registry:5000/", 0),
            ("localhost/", 0),
            ("", "library/".len()),
            ("docker.io/", "library/".len()),
            ("index.docker.io/", "library/".len()),
            ("team/", "team/".len()),
        ] {
            let at = |len: usize| format!("{registry}{}:1", "a".repeat(len - prefix));
            assert_eq!(reference_problem(&at(255)), None, "{registry}");
            assert!(
                reference_problem(&at(256))
                    .is_some_and(|p| p.starts_with("its repository path (after the registry")),
                "{registry}"
            );
        }
        // The tag up to 128 characters.
        assert_eq!(
            reference_problem(&format!("sidecar:{}", "t".repeat(128))),
            None
        );
        assert!(reference_problem(&format!("sidecar:{}", "t".repeat(129))).is_some());
        // Each digest algorithm with exactly its length of hex digits.
        for (algorithm, len) in [("sha256", 64), ("sha384", 96), ("sha512", 128)] {
            let at = |n: usize| format!("sidecar@{algorithm}:{}", "f".repeat(n));
            assert_eq!(reference_problem(&at(len)), None, "{algorithm}");
            for n in [len - 1, len + 1] {
                let problem = reference_problem(&at(n));
                assert!(
                    problem
                        .as_deref()
                        .is_some_and(|p| p.contains(&format!("{len} lowercase hex"))),
                    "{algorithm} {n}: {problem:?}"
                );
            }
        }
        // A path component begins and ends with a letter or digit, at either end alone too.
        for image in [
            "tokenvend/sidecar-",
            "tokenvend/-sidecar",
            "tokenvend/sidecar.",
            "_x/y",
        ] {
            assert!(reference_problem(image).is_some(), "{image}");
        }
        // A registry host (told from a path by its uppercase or its port): each dot-separated
        // part letters, digits and inner '-'; an IPv6 address only in brackets, then a port.
        for image in [
            "reg_istry.example.com:5000/sidecar",
            "-registry.example.com:5000/sidecar",
            "registry-.example.com:5000/sidecar",
            "registry..example.com:5000/sidecar",
            "registry.example.com:/sidecar",
            "[fd00::zz]:5000/sidecar",
            "[fd00::1]5000/sidecar",
            "[fd00::1]:/sidecar",
        ] {
            assert!(
                reference_problem(image)
                    .as_deref()
                    .is_some_and(|p| p.starts_with("invalid reference format")),
                "{image}"
            );
        }
        for image in ["Registry-1.Example.com/sidecar", "[fd00::1]/sidecar"] {
            assert_eq!(reference_problem(image), None, "{image}");
        }
    }
}
