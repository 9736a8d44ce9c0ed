//! IAM role ARN shape checks, so a typo is refused at admission and not at the first AWS call.

use std::fmt;
use std::str::FromStr;

/// A syntactically valid IAM role ARN: `arn:<partition>:iam::<account>:role/<path/><name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleArn {
    arn: String,
    partition_len: usize,
    name_start: usize,
}

/// Why a string is not an IAM role ARN; the message tells the user what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArnError {
    /// Nothing given.
    #[error("role ARN is empty")]
    Empty,
    /// Longer than IAM allows.
    #[error("role ARN is {0} characters long; IAM allows at most 2048")]
    TooLong(usize),
    /// Not `arn:<partition>:iam::<account>:role/<name>`.
    #[error(
        "{0:?} is not an IAM role ARN: expected arn:<partition>:iam::<12-digit account>:role/<name>"
    )]
    Shape(String),
    /// Partition is not `aws` or `aws-<name>`.
    #[error(
        "unknown AWS partition {0:?}: expected aws, aws-cn, aws-us-gov or another aws-* partition"
    )]
    Partition(String),
    /// Account is not 12 digits.
    #[error("account {0:?} is not a 12-digit AWS account ID")]
    Account(String),
    /// Role path is malformed.
    #[error(
        "role path {0:?} must start and end with '/' and use printable ASCII (at most 512 characters)"
    )]
    Path(String),
    /// Role name is malformed.
    #[error("role name {0:?} must be 1-64 characters of letters, digits and +=,.@_-")]
    Name(String),
}

impl RoleArn {
    /// Parse and check the shape of a role ARN.
    pub fn parse(s: &str) -> Result<Self, ArnError> {
        if s.is_empty() {
            return Err(ArnError::Empty);
        }
        if s.len() > 2048 {
            return Err(ArnError::TooLong(s.len()));
        }
        let shape = || ArnError::Shape(s.to_owned());
        let mut parts = s.splitn(6, ':');
        let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(shape());
        };
        if !valid_partition(partition) {
            return Err(ArnError::Partition(partition.to_owned()));
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ArnError::Account(account.to_owned()));
        }
        let Some(path_and_name) = resource.strip_prefix("role") else {
            return Err(shape());
        };
        if !path_and_name.starts_with('/') {
            return Err(shape());
        }
        // Everything up to and including the last '/' is the path; the rest is the name.
        let slash = path_and_name.rfind('/').unwrap_or(0);
        let (path, name) = path_and_name.split_at(slash + 1);
        // IAM's pattern for a path: `/`, or printable ASCII between two slashes (so not `//`).
        if path.len() > 512 || path == "//" || !path.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(ArnError::Path(path.to_owned()));
        }
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
        {
            return Err(ArnError::Name(name.to_owned()));
        }
        let name_start = s.len() - name.len();
        Ok(RoleArn {
            arn: s.to_owned(),
            partition_len: partition.len(),
            name_start,
        })
    }

    /// The whole ARN.
    pub fn as_str(&self) -> &str {
        &self.arn
    }

    /// The partition (`aws`, `aws-cn`, ...).
    pub fn partition(&self) -> &str {
        &self.arn[4..4 + self.partition_len]
    }

    /// The role name without its path.
    pub fn role_name(&self) -> &str {
        &self.arn[self.name_start..]
    }
}

/// `aws` or `aws-` followed by lowercase dash-separated words (aws-cn, aws-us-gov, aws-iso-b...).
fn valid_partition(p: &str) -> bool {
    p == "aws"
        || p.strip_prefix("aws-").is_some_and(|rest| {
            !rest.is_empty()
                && rest.split('-').all(|w| {
                    !w.is_empty()
                        && w.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                })
        })
}

impl FromStr for RoleArn {
    type Err = ArnError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RoleArn::parse(s)
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_roles_in_every_partition_and_with_paths() {
        for (arn, partition, name) in [
            ("arn:aws:iam::123456789012:role/app", "aws", "app"),
            ("arn:aws-cn:iam::123456789012:role/app", "aws-cn", "app"),
            (
                "arn:aws-us-gov:iam::123456789012:role/a.b@c",
                "aws-us-gov",
                "a.b@c",
            ),
            ("arn:aws-iso-b:iam::123456789012:role/x", "aws-iso-b", "x"),
            (
                "arn:aws:iam::123456789012:role/team/prod/app-Reader",
                "aws",
                "app-Reader",
            ),
            ("arn:aws:iam::123456789012:role/+=,.@_-", "aws", "+=,.@_-"),
        ] {
            let r = RoleArn::parse(arn).unwrap_or_else(|e| panic!("{arn}: {e}"));
            assert_eq!(r.partition(), partition);
            assert_eq!(r.role_name(), name);
            assert_eq!(r.as_str(), arn);
        }
    }

    #[test]
    fn rejects_malformed_arns_with_the_reason() {
        let long_name = format!("arn:aws:iam::123456789012:role/{}", "a".repeat(65));
        type Check = fn(&ArnError) -> bool;
        let cases: Vec<(&str, Check)> = vec![
            ("", |e| matches!(e, ArnError::Empty)),
            ("app", |e| matches!(e, ArnError::Shape(_))),
            ("arn:aws:iam::123456789012:user/app", |e| {
                matches!(e, ArnError::Shape(_))
            }),
            ("arn:aws:s3:::bucket", |e| matches!(e, ArnError::Shape(_))),
            ("arn:aws:iam:us-east-1:123456789012:role/app", |e| {
                matches!(e, ArnError::Shape(_))
            }),
            ("arn:aws:iam::123456789012:roleapp", |e| {
                matches!(e, ArnError::Shape(_))
            }),
            ("arn:gcp:iam::123456789012:role/app", |e| {
                matches!(e, ArnError::Partition(_))
            }),
            ("arn:aws-:iam::123456789012:role/app", |e| {
                matches!(e, ArnError::Partition(_))
            }),
            ("arn:AWS:iam::123456789012:role/app", |e| {
                matches!(e, ArnError::Partition(_))
            }),
            ("arn:aws:iam::12345:role/app", |e| {
                matches!(e, ArnError::Account(_))
            }),
            ("arn:aws:iam::12345678901x:role/app", |e| {
                matches!(e, ArnError::Account(_))
            }),
            ("arn:aws:iam::123456789012:role/", |e| {
                matches!(e, ArnError::Name(_))
            }),
            ("arn:aws:iam::123456789012:role/a b", |e| {
                matches!(e, ArnError::Name(_))
            }),
            ("arn:aws:iam::123456789012:role/p th/app", |e| {
                matches!(e, ArnError::Path(_))
            }),
            // No role has this path: IAM wants at least one character between its slashes
            // (found by the property against IAM's published patterns, tests/fuzz.rs).
            ("arn:aws:iam::123456789012:role//app", |e| {
                matches!(e, ArnError::Path(_))
            }),
            (" arn:aws:iam::123456789012:role/app", |e| {
                matches!(e, ArnError::Shape(_))
            }),
        ];
        for (arn, check) in cases {
            let err = RoleArn::parse(arn).expect_err(arn);
            assert!(check(&err), "{arn:?} gave {err:?}");
        }
        assert!(matches!(RoleArn::parse(&long_name), Err(ArnError::Name(_))));
        let huge = "a".repeat(3000);
        assert_eq!(RoleArn::parse(&huge), Err(ArnError::TooLong(3000)));
    }

    #[test]
    fn every_limit_holds_at_its_exact_edge() {
        let arn = |partition: &str, path: &str, name: &str| {
            format!("arn:{partition}:iam::123456789012:role{path}{name}")
        };
        // IAM: names up to 64 characters, paths up to 512 (both slashes included).
        let path_512 = format!("/{}/", "p".repeat(510));
        let path_513 = format!("/{}/", "p".repeat(511));
        assert!(RoleArn::parse(&arn("aws", "/", &"n".repeat(64))).is_ok());
        assert!(RoleArn::parse(&arn("aws", &path_512, "app")).is_ok());
        let err = RoleArn::parse(&arn("aws", &path_513, "app"));
        assert_eq!(err, Err(ArnError::Path(path_513)));
        // The whole ARN up to 2048 characters (a long partition reaches it).
        let fixed = arn("aws-", "/", "app").len();
        let at = arn(&format!("aws-{}", "x".repeat(2048 - fixed)), "/", "app");
        assert_eq!(at.len(), 2048);
        assert_eq!(RoleArn::parse(&at).map(|r| r.to_string()), Ok(at.clone()));
        let over = at.replacen("aws-", "aws-y", 1);
        assert_eq!(RoleArn::parse(&over), Err(ArnError::TooLong(2049)));
        // Every dash-separated word of a partition: lowercase letters or digits, never empty.
        for bad in [
            "aws-US",
            "aws-us-Gov",
            "aws-us--gov",
            "aws-us-",
            "aws-us_gov",
        ] {
            assert_eq!(
                RoleArn::parse(&arn(bad, "/", "app")),
                Err(ArnError::Partition(bad.to_owned())),
                "{bad}"
            );
        }
        let parsed: RoleArn = arn("aws-iso-f", "/", "app").parse().expect("FromStr");
        assert_eq!(parsed.to_string(), arn("aws-iso-f", "/", "app"));
    }

    #[test]
    fn error_messages_say_what_to_fix() {
        let e = RoleArn::parse("my-role").expect_err("not an ARN");
        assert!(
            e.to_string()
                .contains("arn:<partition>:iam::<12-digit account>:role/<name>")
        );
    }
}
