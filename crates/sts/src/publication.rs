//! The publication check (`TOKENVEND_PUBLISHED_JWKS_URL`): reads the JWKS that AWS reads (the
//! `jwks_uri` of the uploaded discovery document) so that a new signing key signs only once it
//! is listed there. Without it, a key added to the Secret before its documents are uploaded
//! signs tokens that every `AssumeRoleWithWebIdentity` refuses until the upload.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;
use tokenvend_core::FailureLatch;

use crate::issuer::{Issuer, Signing};
use crate::metrics::Metrics;
use crate::validate::get_json;
use tokenvend_core::clock::rfc3339;

/// Added to a 401/403 from the published JWKS.
const AUTH_HINT: &str = " (AWS reads this JWKS without credentials: it must be public, as the \
    issuer's discovery document is)";

/// The `kid`s a JWKS document lists, or why it is not one.
pub fn published_kids(doc: &Value) -> Result<HashSet<String>, String> {
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("not a JWKS: no \"keys\" array")?;
    Ok(keys
        .iter()
        .filter_map(|k| k.get("kid").and_then(Value::as_str))
        .map(str::to_owned)
        .collect())
}

/// The periodic check, and what it last reported.
pub struct Publication {
    url: String,
    client: reqwest::Client,
    timeout: Duration,
    /// A failing fetch is one error line and one count, not one per check.
    error: FailureLatch,
    /// The signing state last reported, so that each change is logged once.
    reported: Option<Signing>,
    /// The `kid`s last reported as in use but not published.
    reported_unlisted: Vec<String>,
}

impl Publication {
    /// A check of the JWKS at `url`, each fetch within `timeout`.
    pub fn new(url: String, client: reqwest::Client, timeout: Duration) -> Self {
        Publication {
            url,
            client,
            timeout,
            error: FailureLatch::default(),
            reported: None,
            reported_unlisted: Vec::new(),
        }
    }

    /// Read the published JWKS, give its `kid`s to `issuer`, and log and count what changed.
    /// An unreadable JWKS leaves the issuer with the `kid`s read last.
    pub async fn check(&mut self, issuer: &Issuer, metrics: &Metrics) {
        let fetched = get_json::<Value>(&self.client, &self.url, self.timeout, AUTH_HINT)
            .await
            .and_then(|doc| published_kids(&doc));
        match &fetched {
            Ok(_) => {
                if self.error.recovered() {
                    tracing::info!(url = %self.url, "published JWKS read again");
                }
            }
            Err(e) => {
                if self.error.failed(e.clone()) {
                    metrics.published_jwks_error();
                    tracing::error!(url = %self.url, error = %e, "published JWKS not read; signing goes on by the keys it listed when last read");
                }
            }
        }
        issuer.set_published(fetched);
        self.report_signing(issuer, metrics);
        self.report_unlisted(issuer, metrics);
    }

    /// Log which key signs and which wait, when that changed.
    fn report_signing(&mut self, issuer: &Issuer, metrics: &Metrics) {
        let now = issuer.signing();
        metrics.signing_keys_unpublished(now.waiting.len());
        if self.reported.as_ref() == Some(&now) {
            return;
        }
        let waiting: Vec<&str> = now.waiting.iter().map(|k| k.file.as_str()).collect();
        match &now.signer {
            None => tracing::error!(
                url = %self.url,
                waiting = ?waiting,
                "no key of the signing directory is known to be in the published JWKS: \
                 POST /token answers 503 until it lists one (upload the documents of \
                 `tokenvend-sts issuer-docs`)"
            ),
            Some(signer) => {
                if self.reported.as_ref().and_then(|r| r.signer.as_ref()) != Some(signer) {
                    tracing::info!(kid = %signer.kid, file = %signer.file, url = %self.url, "signing with the newest key the published JWKS lists");
                }
                if !waiting.is_empty() {
                    tracing::warn!(
                        url = %self.url,
                        waiting = ?waiting,
                        kids = ?now.waiting.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
                        "newer signing keys are not in the published JWKS: they sign once it \
                         lists them (upload the documents of `tokenvend-sts issuer-docs`)"
                    );
                }
            }
        }
        self.reported = Some(now);
    }

    /// Warn, when it changes, about keys whose tokens are still valid but which the published
    /// JWKS no longer lists: an upload made without them (a key removed too early) makes AWS
    /// refuse every such token until the sidecars refresh it.
    fn report_unlisted(&mut self, issuer: &Issuer, metrics: &Metrics) {
        let unlisted = issuer.unlisted_in_use();
        metrics.signing_keys_unlisted(unlisted.len());
        let kids: Vec<String> = unlisted.iter().map(|(k, _)| k.kid.clone()).collect();
        if kids == self.reported_unlisted {
            return;
        }
        if unlisted.is_empty() {
            tracing::info!(url = %self.url, "no key with tokens still valid is missing from the published JWKS any more");
        } else {
            tracing::warn!(
                url = %self.url,
                keys = ?unlisted.iter().map(|(k, _)| k.file.as_str()).collect::<Vec<_>>(),
                kids = ?kids,
                valid_until = ?unlisted.iter().map(|(_, t)| rfc3339(*t)).collect::<Vec<_>>(),
                "the published JWKS does not list keys that signed tokens still valid: AWS \
                 refuses those tokens; upload `tokenvend-sts issuer-docs` from a key directory \
                 that has them, and remove a key only once its last token has expired"
            );
        }
        self.reported_unlisted = kids;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_kids_of_a_jwks_and_clear_errors_for_anything_else() {
        let kids = published_kids(&json!({"keys": [
            {"kty": "EC", "kid": "a"}, {"kty": "RSA", "kid": "b"}, {"kty": "EC"}, "junk"
        ]}))
        .expect("jwks");
        assert_eq!(kids, HashSet::from(["a".to_owned(), "b".to_owned()]));
        assert!(
            published_kids(&json!({"keys": []}))
                .expect("empty")
                .is_empty()
        );
        for bad in [json!({"issuer": "x"}), json!([]), json!({"keys": {}})] {
            let e = published_kids(&bad).expect_err("not a jwks");
            assert!(e.contains("not a JWKS"), "{e}");
        }
    }
}
