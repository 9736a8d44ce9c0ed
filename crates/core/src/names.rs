//! Kubernetes object-name rules, checked where a name is taken from configuration so a bad one is
//! refused at start rather than failing later inside the cluster.

/// RFC 1123 label: lowercase letters, digits and `-`, at most 63, starting and ending
/// alphanumeric (container names, namespaces).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 (most object names).
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// RFC 1035 label: an RFC 1123 label that starts with a letter (Service names).
pub fn is_service_name(s: &str) -> bool {
    is_dns_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// The authority of a URL as given (`https://user@[fd00::1]:8443/p?q` → `user@[fd00::1]:8443`):
/// scheme, path, query and fragment removed.
pub fn url_authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?', '#']).next().unwrap_or_default()
}

/// Whether a URL carries credentials (`user:password@host`).
pub fn url_has_userinfo(url: &str) -> bool {
    url_authority(url).contains('@')
}

/// The host of a URL as given (`https://user@[fd00::1]:8443/p?q` → `fd00::1`): scheme, userinfo,
/// port, path, query and fragment removed, IPv6 brackets dropped; no case folding.
pub fn url_host(url: &str) -> &str {
    let authority = url_authority(url);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_hosts() {
        for (url, host) in [
            (
                "https://tokenvend-sts.tokenvend.svc",
                "tokenvend-sts.tokenvend.svc",
            ),
            ("https://Hooks.Example.com:8443/m?x=1", "Hooks.Example.com"),
            ("https://user@[fd00::1]:8443/mutate", "fd00::1"),
            ("http://10.0.0.7#frag", "10.0.0.7"),
            ("tokenvend-sts:8000", "tokenvend-sts"),
            ("https://", ""),
        ] {
            assert_eq!(url_host(url), host, "{url}");
        }
        assert!(url_has_userinfo("https://u:p@h/x"));
        assert!(!url_has_userinfo("https://h/a@b") && !url_has_userinfo("https://h?x=a@b"));
    }

    #[test]
    fn labels_subdomains_and_service_names() {
        for ok in ["a", "tokenvend-webhook", "0abc", &"x".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a b", "a.b", &"x".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad:?}");
        }
        assert!(is_dns_subdomain("tremolo.io"));
        assert!(!is_dns_subdomain("tremolo..io"));
        assert!(!is_dns_subdomain(&["a"; 128].join(".")));
        assert!(is_service_name("tokenvend-sts"));
        assert!(!is_service_name("0abc"), "Services start with a letter");
    }
}
