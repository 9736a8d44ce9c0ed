//! `image::reference_problem` against the kubelet's own verdict. The kubelet parses a container's
//! image with `ParseNormalizedNamed` of github.com/distribution/reference (and the runtimes after
//! it, the same way) and checks a digest with go-digest; any reference it refuses leaves the pod
//! in `InvalidImageName`. The oracle below is that parser rebuilt from its published grammar with
//! the `regex` crate (leftmost-first, as Go's regexp), so the property can ask of any string: does
//! the webhook accept exactly what the kubelet accepts?

use proptest::prelude::*;
use regex::Regex;
use tokenvend_core::image::reference_problem;
use tokenvend_testkit::fuzz;

/// The kubelet's image-reference parser: `ParseNormalizedNamed`, then go-digest's `Validate`.
struct Kubelet {
    reference: Regex,
    name: Regex,
    identifier: Regex,
}

impl Kubelet {
    fn new() -> Self {
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

    /// Whether the kubelet takes `image` as a pullable reference.
    fn accepts(&self, image: &str) -> bool {
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

#[test]
fn the_oracle_gives_the_kubelets_verdicts() {
    // Cases from distribution/reference's and go-digest's own test tables and behaviour, so the
    // property below compares against the real contract, not against a second guess.
    let kubelet = Kubelet::new();
    let hex64 = "0123456789abcdef".repeat(4);
    for image in [
        "ubuntu".to_owned(),
        "library/ubuntu:22.04".to_owned(),
        "docker.io/library/ubuntu".to_owned(),
        "index.docker.io/ubuntu".to_owned(),
        "localhost/app".to_owned(),
        "localhost:5000/app:v1".to_owned(),
        "Registry.Example.com/app".to_owned(),
        "[fd00::1]:5000/app".to_owned(),
        "[::1]/app".to_owned(),
        "example.com:5000".to_owned(), // a name and the tag "5000"
        "a/b__c/d---e/f.g".to_owned(),
        format!("app@sha256:{hex64}"),
        format!("app:v1@sha256:{hex64}"),
        format!("{hex64}:tag"),
        format!("docker.io/{}", "a".repeat(247)),
        format!("registry.example.com/{}", "a".repeat(255)),
    ] {
        assert!(kubelet.accepts(&image), "{image}");
    }
    for image in [
        String::new(),
        "Ubuntu".to_owned(),
        "example.com/App".to_owned(),
        "app:".to_owned(),
        "app:.tag".to_owned(),
        "a//b".to_owned(),
        "-a/b".to_owned(),
        "a_-b".to_owned(),
        "a___b".to_owned(),
        "https://example.com/app".to_owned(),
        "[fd00::1.2.3.4]/app".to_owned(),
        "[fe80::1%eth0]/app".to_owned(),
        hex64.clone(),
        format!("app@sha256:{}", hex64.to_uppercase()),
        format!("app@sha256:{}", &hex64[1..]),
        format!("app@md5:{hex64}"),
        format!("app@SHA256:{hex64}"),
        format!("docker.io/{}", "a".repeat(248)), // "library/" makes the path 256
        format!("registry.example.com/{}", "a".repeat(256)),
        "app:t\u{e9}".to_owned(),
        "app\n".to_owned(),
    ] {
        assert!(!kubelet.accepts(&image), "{image:?}");
    }
}

#[test]
fn fuzz_image_references_match_the_kubelet() {
    // References built from the grammar with the edges the kubelet draws (Docker Hub names,
    // bracketed hosts, digests in either case, 64-hex names), then up to three characters
    // inserted, replaced or removed; and text from the grammar's alphabet.
    let kubelet = Kubelet::new();
    let registry = prop_oneof![
        Just(String::new()),
        Just("localhost/".to_owned()),
        Just("docker.io/".to_owned()),
        Just("index.docker.io/".to_owned()),
        "[A-Za-z0-9]([A-Za-z0-9_-]{0,5}[A-Za-z0-9])?(\\.[a-zA-Z0-9-]{1,6}){0,2}(:[0-9]{0,5})?/",
        "\\[[0-9a-fA-F:.%]{1,16}\\](:[0-9]{1,4})?/",
        prop::sample::select(vec![
            "[::1]/",
            "[1:2:3:4:5:6:7:8]:5000/",
            "[::ffff:10.0.0.1]/",
            "[::ffff:10.0.0.1]:5000/",
            "[fe80::1%eth0]/",
            "[:::]/",
        ])
        .prop_map(str::to_owned),
    ];
    let path = "[a-z0-9]{1,6}((\\.|_|__|-{1,3})[a-zA-Z0-9]{1,6}){0,2}(/[a-z0-9]{1,6}((\\.|_|-)[a-z0-9]{1,4}){0,2}){0,3}";
    let tag = "(:[A-Za-z0-9_.-]{0,12})?";
    let digest = prop_oneof![
        Just(String::new()),
        "@sha(256|384|512):[0-9a-f]{64}([0-9a-f]{32}){0,2}",
        "@(sha256|SHA256|md5|sha2-x):[0-9a-fA-F]{62,66}",
    ];
    let built = (registry, path, tag, digest)
        .prop_map(|(registry, path, tag, digest)| format!("{registry}{path}{tag}{digest}"));
    let edits = proptest::collection::vec(
        (
            any::<prop::sample::Index>(),
            0..3u8,
            prop::sample::select(":/@._-[]Aa0f%".chars().collect::<Vec<_>>()),
        ),
        0..4,
    );
    let edited = (built, edits).prop_map(|(mut image, edits)| {
        for (at, kind, c) in edits {
            let chars: Vec<char> = image.chars().collect();
            let i = at.index(chars.len() + 1);
            let mut chars = chars;
            match kind {
                0 => chars.insert(i, c),
                1 if i < chars.len() => chars[i] = c,
                _ if i < chars.len() => {
                    chars.remove(i);
                }
                _ => {}
            }
            image = chars.into_iter().collect();
        }
        image
    });
    let long = ("(docker\\.io/|registry\\.example\\.com/)?", 240..270usize)
        .prop_map(|(registry, len)| format!("{registry}{}:1", "a".repeat(len)));
    let images = prop_oneof![
        6 => edited,
        1 => "[0-9a-f]{64}(:[a-z]{1,3})?",
        1 => long,
        2 => "[a-zA-Z0-9:/@._\\[\\]-]{0,40}",
    ];
    fuzz("image-reference", images, |image| {
        let problem = reference_problem(&image);
        let accepted = kubelet.accepts(&image);
        if problem.is_none() {
            prop_assert!(accepted, "accepted what the kubelet refuses: {:?}", image);
        } else if accepted {
            prop_assert!(
                bracketed_host_is_no_address(&image),
                "refused what the kubelet takes: {:?}: {:?}",
                image,
                problem
            );
        }
        Ok(())
    });
}
