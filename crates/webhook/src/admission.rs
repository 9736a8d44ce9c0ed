//! AdmissionReview `admission.k8s.io/v1` in, AdmissionReview out: request checks, the call into
//! the pure mutation, and the wire format of the response (base64 `patch`).

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use serde::Serialize;
use tokenvend_core::Mode;
use tokenvend_core::contract::{self, ROLE_KEY};

use crate::config::Config;
use crate::mutate::{Denial, mutate};

/// The only AdmissionReview version served.
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// A request body that is not a usable AdmissionReview (answered with HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON, or not the AdmissionReview shape.
    #[error("body is not an AdmissionReview: {0}")]
    Malformed(String),
    /// `apiVersion` or `kind` is wrong.
    #[error(
        "expected apiVersion {API_VERSION} and kind AdmissionReview, got {api_version:?} / {kind:?}"
    )]
    Version {
        /// What was sent.
        api_version: String,
        /// What was sent.
        kind: String,
    },
    /// No `request` member.
    #[error("AdmissionReview has no request")]
    MissingRequest,
    /// Empty `request.uid`.
    #[error("AdmissionReview request has an empty uid")]
    MissingUid,
}

/// What happened to one admission, for the log line and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not ours to change (unlabelled, not a pod, not CREATE...): allowed, no patch.
    Ignored,
    /// Opted in and patched.
    Patched,
    /// Opted in; nothing left to add (already mutated) or admitted unchanged with a warning.
    Unchanged,
    /// Refused.
    Denied,
}

impl Decision {
    /// Label value for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Ignored => "ignored",
            Decision::Patched => "patched",
            Decision::Unchanged => "unchanged",
            Decision::Denied => "denied",
        }
    }
}

/// The answer to one AdmissionReview plus what to log about it (never a token or a secret).
#[derive(Debug, Clone)]
pub struct Reviewed {
    /// Serialized AdmissionReview response.
    pub body: Vec<u8>,
    /// Request uid.
    pub uid: String,
    /// Namespace of the request.
    pub namespace: String,
    /// Pod name, or generateName when the API server has not named it yet.
    pub pod: String,
    /// Mode applied.
    pub mode: Option<Mode>,
    /// Outcome.
    pub decision: Decision,
    /// Whether the request was a dry run.
    pub dry_run: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut>,
    /// Base64 of the JSON patch, as the admission API defines it (kube-rs would emit numbers).
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

#[derive(Serialize)]
struct StatusOut {
    code: u16,
    reason: &'static str,
    message: String,
}

/// Answer one AdmissionReview body. Pure: no I/O, no clock.
pub fn review(body: &[u8], cfg: &Config) -> Result<Reviewed, ReviewError> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| ReviewError::Malformed(e.to_string()))?;
    if review.types.api_version != API_VERSION || review.types.kind != "AdmissionReview" {
        return Err(ReviewError::Version {
            api_version: review.types.api_version,
            kind: review.types.kind,
        });
    }
    let request: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|_| ReviewError::MissingRequest)?;
    if request.uid.is_empty() {
        return Err(ReviewError::MissingUid);
    }
    let namespace = request.namespace.clone().unwrap_or_default();
    let meta = request.object.as_ref().map(|o| &o.metadata);
    let pod_name = meta
        .and_then(|m| m.name.clone().filter(|n| !n.is_empty()))
        .or_else(|| meta.and_then(|m| m.generate_name.clone()))
        .unwrap_or_default();
    let mut out = Reviewed {
        body: Vec::new(),
        uid: request.uid.clone(),
        namespace,
        pod: pod_name,
        mode: None,
        decision: Decision::Ignored,
        dry_run: request.dry_run,
    };

    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    let is_create = matches!(request.operation, Operation::Create);
    let has_subresource = request
        .sub_resource
        .as_deref()
        .is_some_and(|s| !s.is_empty());
    if !is_pod || has_subresource {
        let warnings = if is_pod {
            Vec::new()
        } else {
            vec![format!(
                "tokenvend mutates only Pods; {}/{} {} admitted unchanged (check the webhook's rules)",
                request.kind.group, request.kind.version, request.kind.kind
            )]
        };
        out.body = respond(&request.uid, true, None, None, &warnings);
        return Ok(out);
    }
    if !is_create {
        out.body = respond(&request.uid, true, None, None, &[]);
        return Ok(out);
    }
    let Some(object) = request.object else {
        out.decision = Decision::Denied;
        out.body = respond(
            &request.uid,
            false,
            Some(status(400, "CREATE request carries no object".to_owned())),
            None,
            &[],
        );
        return Ok(out);
    };
    // Cheap opt-in check before decoding the whole pod.
    let role_key = contract::key(&cfg.prefix, ROLE_KEY);
    if object
        .metadata
        .labels
        .as_ref()
        .is_none_or(|l| !l.contains_key(&role_key))
    {
        out.body = respond(&request.uid, true, None, None, &[]);
        return Ok(out);
    }
    let pod: Pod = match object.try_parse() {
        Ok(p) => p,
        Err(e) => {
            out.decision = Decision::Denied;
            out.body = respond(
                &request.uid,
                false,
                Some(status(
                    400,
                    format!("tokenvend: cannot decode the Pod: {e}"),
                )),
                None,
                &[],
            );
            return Ok(out);
        }
    };
    match mutate(&pod, cfg) {
        Ok(m) => {
            out.mode = m.mode;
            let patch = if m.patch.0.is_empty() {
                out.decision = if m.mode.is_some() {
                    Decision::Unchanged
                } else if m.warnings.is_empty() {
                    Decision::Ignored
                } else {
                    Decision::Unchanged
                };
                None
            } else {
                out.decision = Decision::Patched;
                // A Patch of plain JSON values always serializes.
                let json = serde_json::to_vec(&m.patch)
                    .map_err(|e| ReviewError::Malformed(e.to_string()))?;
                Some(base64::engine::general_purpose::STANDARD.encode(json))
            };
            out.body = respond(&request.uid, true, None, patch, &m.warnings);
        }
        Err(Denial {
            message,
            warnings,
            mode,
        }) => {
            out.mode = mode;
            out.decision = Decision::Denied;
            out.body = respond(
                &request.uid,
                false,
                Some(status(403, message)),
                None,
                &warnings,
            );
        }
    }
    Ok(out)
}

fn status(code: u16, message: String) -> StatusOut {
    StatusOut {
        code,
        reason: if code == 400 {
            "BadRequest"
        } else {
            "Forbidden"
        },
        message,
    }
}

fn respond(
    uid: &str,
    allowed: bool,
    status: Option<StatusOut>,
    patch: Option<String>,
    warnings: &[String],
) -> Vec<u8> {
    let out = ReviewOut {
        api_version: API_VERSION,
        kind: "AdmissionReview",
        response: ResponseOut {
            uid,
            allowed,
            status,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            warnings,
        },
    };
    // Only strings, bools and numbers: serialization cannot fail.
    serde_json::to_vec(&out).unwrap_or_default()
}
