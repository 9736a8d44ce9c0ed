//! IAM's published patterns for a role ARN, as an oracle for `RoleArn::parse`: shared by the
//! `fuzz_role_arns` property (`tests/fuzz.rs`) and the `core_parsers` libFuzzer target (`#[path]`).

use std::sync::LazyLock;

use regex::Regex;
use tokenvend_core::RoleArn;

/// A role path is `/` or printable ASCII between slashes, a name 1-64 of `[\w+=,.@-]` (IAM's
/// API reference). The partition rule (`aws`, or `aws-` and lowercase words) is this project's:
/// AWS publishes no pattern for it.
static ROLE_ARN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        "^arn:aws(-[a-z0-9]+)*:iam::[0-9]{12}:role(/|/[\\x21-\\x7E]+/)[A-Za-z0-9_+=,.@-]{1,64}$",
    )
    .expect("IAM's patterns")
});

/// Where `RoleArn::parse` and IAM's patterns disagree on `arn`, if they do.
pub fn disagreement(arn: &str) -> Option<String> {
    match (RoleArn::parse(arn), accepts(arn)) {
        (Ok(_), false) => Some(format!("accepted what IAM refuses: {arn:?}")),
        (Err(e), true) => Some(format!("refused {arn:?}, which IAM takes: {e}")),
        _ => None,
    }
}

/// Whether IAM takes `arn` as a role's ARN: the patterns, a path of at most 512 characters and
/// an ARN of at most 2048.
fn accepts(arn: &str) -> bool {
    ROLE_ARN
        .captures(arn)
        .is_some_and(|parts| parts[2].len() <= 512 && arn.len() <= 2048)
}
