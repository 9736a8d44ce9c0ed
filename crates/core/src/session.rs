//! AWS `RoleSessionName` values: 2-64 characters of `[\w+=,.@-]`.

use sha2::{Digest, Sha256};

/// A valid session name from any text: characters outside the AWS set become `-`; longer than
/// 64 is cut to 55 characters + `-` + 8 hex digits of the text's SHA-256 (stays unique); shorter
/// than 2 gets the prefix `pod-`.
pub fn session_name(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if s.len() > 64 {
        let digest = Sha256::digest(raw.as_bytes());
        let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        s.truncate(55);
        s.push('-');
        s.push_str(&hex);
    }
    if s.len() < 2 {
        s.insert_str(0, "pod-");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_aws_rules() {
        assert_eq!(session_name("web-0"), "web-0");
        assert_eq!(session_name("shop.orders"), "shop.orders");
        assert_eq!(session_name("a"), "pod-a");
        assert_eq!(session_name("a b/c"), "a-b-c");
        let long = session_name(&"x".repeat(100));
        assert_eq!(long.len(), 64);
        assert!(long.starts_with(&"x".repeat(55)));
        assert_ne!(long, session_name(&"x".repeat(101)));
        assert!(session_name("ünïcode").is_ascii());
        // At the edges: 64 characters and 2 stay as they are; 65 is cut, 1 and 0 prefixed.
        let at_64 = "y".repeat(64);
        assert_eq!(session_name(&at_64), at_64);
        let cut = session_name(&"y".repeat(65));
        assert!(
            cut.len() == 64 && cut.starts_with(&format!("{}-", "y".repeat(55))),
            "{cut}"
        );
        assert_eq!(session_name("ab"), "ab");
        assert_eq!(session_name(""), "pod-");
    }
}
