//! Kubernetes object-name and URL rules, checked where a name or URL is taken from configuration
//! so a bad one is refused at start rather than failing later inside the cluster.

/// RFC 1123 label: lowercase letters, digits and `-`, at most 63, starting and ending
/// alphanumeric (container names, namespaces).
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && is_label_shaped(s)
}

/// RFC 1123 subdomain as Kubernetes checks it (`IsDNS1123Subdomain`: most object names, label
/// key prefixes): dot-separated labels, at most 253 in all, with no limit on one label's length.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label_shaped)
}

/// Lowercase letters, digits and `-`, starting and ending alphanumeric, of any length.
fn is_label_shaped(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
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

/// Paths the sidecar adds to the exchange URL.
const EXCHANGE_PATHS: [&str; 3] = ["/credentials", "/token", "/ca-bundle"];

/// `url` quoted for an error message, unless it carries credentials, which must not reach a log.
pub fn shown_url(url: &str) -> String {
    if url_has_userinfo(url) {
        "(a URL with credentials, not shown)".to_owned()
    } else {
        format!("{url:?}")
    }
}

/// `url` parsed as an `http://` or `https://` URL by the parser reqwest uses, or why it is not
/// one. The reason never repeats the URL, which may carry a password.
fn parse_http_url(url: &str) -> Result<url::Url, String> {
    if url_has_userinfo(url) {
        return Err("must not carry credentials (user:password@host)".to_owned());
    }
    if !url.starts_with("https://") && !url.starts_with("http://") {
        return Err("must be an http:// or https:// URL".to_owned());
    }
    // The parser drops tabs and newlines silently; a value carrying them is a copy-paste slip.
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".to_owned());
    }
    url::Url::parse(url).map_err(|e| format!("is not a URL: {e}"))
}

/// `url` parsed as an http(s) URL that paths are appended to, or why it is not one; `why` says
/// what a query or fragment would break.
fn parse_base_url(url: &str, why: impl FnOnce() -> String) -> Result<url::Url, String> {
    let parsed = parse_http_url(url)?;
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("must not have a query or fragment: {}", why()));
    }
    Ok(parsed)
}

/// Why `url` is not an `http://` or `https://` URL a client can call, if it is not (see
/// [`exchange_url_problem`]).
pub fn http_url_problem(url: &str) -> Option<String> {
    parse_http_url(url).err()
}

/// Why `url` cannot be tokenvend-sts's base URL, which each sidecar appends `/credentials`,
/// `/token` and `/ca-bundle` to, if it cannot. Checked with the parser the sidecar's HTTP client
/// uses, so a URL accepted here (the webhook's `exchangeUrl`, the sidecar's `--exchange-url`)
/// is one every sidecar can call. The reason never repeats the URL, which may carry a password.
pub fn exchange_url_problem(url: &str) -> Option<String> {
    if url_has_userinfo(url) {
        return Some(
            "must not carry credentials (user:password@host): tokenvend-sts authenticates each \
             sidecar by its service-account token"
                .to_owned(),
        );
    }
    let parsed = match parse_base_url(url, || {
        format!("the sidecar appends {} to it", EXCHANGE_PATHS.join(", "))
    }) {
        Ok(parsed) => parsed,
        Err(problem) => return Some(problem),
    };
    let path = parsed.path().trim_end_matches('/');
    if let Some(p) = EXCHANGE_PATHS.iter().find(|p| path.ends_with(*p)) {
        return Some(format!(
            "must be tokenvend-sts's base URL (like https://tokenvend-sts.tokenvend.svc), without {p}: \
             the sidecar appends {} itself",
            EXCHANGE_PATHS.join(", ")
        ));
    }
    None
}

/// Why `url` cannot be an OIDC issuer identifier (a token's `iss`, the base of its discovery
/// document), if it cannot: an http(s) URL with a host and no query or fragment (OpenID Connect
/// Discovery 1.0, section 3).
pub fn issuer_url_problem(url: &str) -> Option<String> {
    parse_base_url(url, || {
        "an OIDC issuer has neither, and discovery is read from \
         <issuer>/.well-known/openid-configuration"
            .to_owned()
    })
    .err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exchange_url_is_one_the_sidecar_can_append_its_paths_to() {
        for url in [
            "https://tokenvend-sts.tokenvend.svc",
            "https://tokenvend-sts.tokenvend.svc:8443/",
            "http://127.0.0.1:8000",
            "https://[fd00::1]:8443/prefix/",
            "https://sts.example/a@b",
        ] {
            assert_eq!(exchange_url_problem(url), None, "{url}");
        }
        for (url, problem) in [
            ("https://", "is not a URL: empty host"),
            ("https://sts:99999", "is not a URL: invalid port number"),
            ("https://[fd00::1", "is not a URL: invalid IPv6 address"),
            ("ftp://sts", "must be an http:// or https:// URL"),
            ("sts.tokenvend.svc", "must be an http:// or https:// URL"),
            (
                "https://sts\t.svc",
                "must not contain spaces or control characters",
            ),
            (
                "https://sts.svc ",
                "must not contain spaces or control characters",
            ),
            (
                "https://sts.svc/?region=eu",
                "must not have a query or fragment: the sidecar appends /credentials, /token, \
                 /ca-bundle to it",
            ),
            (
                "https://sts.svc#x",
                "must not have a query or fragment: the sidecar appends /credentials, /token, \
                 /ca-bundle to it",
            ),
            (
                "https://sts.svc:8443/credentials",
                "must be tokenvend-sts's base URL (like https://tokenvend-sts.tokenvend.svc), without \
                 /credentials: the sidecar appends /credentials, /token, /ca-bundle itself",
            ),
            (
                "https://sts.svc/token/",
                "must be tokenvend-sts's base URL (like https://tokenvend-sts.tokenvend.svc), without \
                 /token: the sidecar appends /credentials, /token, /ca-bundle itself",
            ),
        ] {
            assert_eq!(exchange_url_problem(url).as_deref(), Some(problem), "{url}");
        }
        let secret = exchange_url_problem("https://user:hunter2@sts.svc").expect("refused");
        assert!(
            secret.starts_with("must not carry credentials") && !secret.contains("hunter2"),
            "{secret}"
        );
        assert_eq!(
            shown_url("https://user:hunter2@sts.svc"),
            "(a URL with credentials, not shown)"
        );
        assert_eq!(shown_url("https://sts.svc/a@b"), "\"https://sts.svc/a@b\"");
    }

    #[test]
    fn an_issuer_url_is_one_discovery_can_be_read_under() {
        for url in [
            "https://issuer.example.com",
            "https://bucket.s3.eu-west-1.amazonaws.com/cluster-a/",
            "http://127.0.0.1:9000",
        ] {
            assert_eq!(issuer_url_problem(url), None, "{url}");
        }
        for (url, problem) in [
            ("https://", "is not a URL: empty host"),
            ("https://issuer:99999", "is not a URL: invalid port number"),
            ("issuer.example.com", "must be an http:// or https:// URL"),
            (
                "https://issuer.example.com ",
                "must not contain spaces or control characters",
            ),
            (
                "https://issuer.example.com/?v=1",
                "must not have a query or fragment: an OIDC issuer has neither, and discovery is \
                 read from <issuer>/.well-known/openid-configuration",
            ),
        ] {
            assert_eq!(issuer_url_problem(url).as_deref(), Some(problem), "{url}");
        }
        assert_eq!(http_url_problem("https://b.example/keys?x-id=1"), None);
        assert_eq!(
            http_url_problem("https://b.example:0x1/keys").as_deref(),
            Some("is not a URL: invalid port number")
        );
    }

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
        // Kubernetes limits a subdomain's length, not its labels': a 100-character pod or
        // service-account name without dots is valid, where a label stops at 63.
        assert!(is_dns_subdomain(&"a".repeat(100)) && !is_dns_label(&"a".repeat(64)));
        assert!(is_dns_subdomain(&"a".repeat(253)) && !is_dns_subdomain(&"a".repeat(254)));
        assert!(is_service_name("tokenvend-sts"));
        assert!(!is_service_name("0abc"), "Services start with a letter");
    }
}
