//! AdmissionReview `admission.k8s.io/v1` in, AdmissionReview out: request checks, the call into
//! the pure mutation, and the wire format of the response (base64 `patch`).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokenvend_core::Mode;

use crate::mutate::{Denial, Injector, more};
use crate::patch::Patch;
use crate::pod::{MetaView, PodView};

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
    /// The answer could not be rendered (a bug, never the caller's fault: HTTP 500).
    #[error("cannot render the admission response: {0}")]
    Render(String),
}

/// What happened to one admission, for the log line and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not ours to change (unlabelled, not a pod, not CREATE...): allowed, no patch.
    Ignored,
    /// Opted in and patched.
    Patched,
    /// Opted in; nothing left to add (already mutated), or admitted without the plumbing with
    /// warnings (and, under `--deny-on-invalid=false`, their record on the pod).
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
    /// How many warnings the answer carries (their text: the response, and a patched pod).
    pub warnings: usize,
}

/// The parts of an incoming AdmissionReview this webhook reads; `O` is how the object is
/// decoded: straight into a [`PodView`] (one pass over the body, the usual case), or kept raw.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<O> {
    api_version: String,
    kind: String,
    #[serde(default = "none")]
    request: Option<RequestIn<O>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<O> {
    uid: String,
    kind: Gvk,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    operation: String,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(default = "none")]
    object: Option<O>,
}

fn none<T>() -> Option<T> {
    None
}

impl<O> ReviewIn<O> {
    /// The request, once the envelope is known to be a usable AdmissionReview v1.
    fn into_request(self) -> Result<RequestIn<O>, ReviewError> {
        if self.api_version != API_VERSION || self.kind != "AdmissionReview" {
            return Err(ReviewError::Version {
                api_version: self.api_version,
                kind: self.kind,
            });
        }
        let request = self.request.ok_or(ReviewError::MissingRequest)?;
        if request.uid.is_empty() {
            return Err(ReviewError::MissingUid);
        }
        Ok(request)
    }
}

impl<O> RequestIn<O> {
    fn is_pod(&self) -> bool {
        self.kind.group.is_empty() && self.kind.kind == "Pod"
    }

    fn is_create(&self) -> bool {
        self.operation == "CREATE"
    }

    fn has_subresource(&self) -> bool {
        self.sub_resource.as_deref().is_some_and(|s| !s.is_empty())
    }

    /// A Pod being created (not a subresource): the only requests that can be mutated.
    fn is_pod_creation(&self) -> bool {
        self.is_pod() && self.is_create() && !self.has_subresource()
    }
}

#[derive(Deserialize)]
struct Gvk {
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    kind: String,
}

/// Only what the opt-in check and the log line need, for objects that are not a decodable Pod.
#[derive(Deserialize, Default)]
struct MetaOnly<'a> {
    #[serde(default)]
    #[serde(borrow)]
    metadata: MetaView<'a>,
}

#[derive(Serialize)]
struct StatusOut {
    code: u16,
    reason: &'static str,
    message: String,
}

/// Answer one AdmissionReview body. Pure: no I/O, no clock.
pub fn review(body: &[u8], injector: &Injector) -> Result<Reviewed, ReviewError> {
    // JSON is UTF-8 (RFC 8259). Checked once for the whole body, also inside the strings the
    // decoder only skips; the decoder then does not check each string it reads again.
    let body =
        std::str::from_utf8(body).map_err(|e| ReviewError::Malformed(format!("not UTF-8: {e}")))?;
    // Nearly every request is a Pod that decodes: one pass over the body.
    if let Ok(review) = serde_json::from_str::<ReviewIn<PodView>>(body) {
        let request = review.into_request()?;
        let pod = request.object.as_ref().map(Ok);
        let meta = request.object.as_ref().map(|p| &p.metadata);
        return answer(
            &request,
            pod,
            meta.unwrap_or(&MetaView::default()),
            injector,
        );
    }
    // Anything else: the envelope with the object kept raw; then the object as a Pod (to say
    // why it does not decode) or, when it is no Pod being created, only its metadata.
    let review: ReviewIn<&RawValue> =
        serde_json::from_str(body).map_err(|e| ReviewError::Malformed(e.to_string()))?;
    let request = review.into_request()?;
    let pod = request
        .object
        .filter(|_| request.is_pod_creation())
        .map(|raw| serde_json::from_str::<PodView>(raw.get()));
    let meta = match &pod {
        Some(Ok(p)) => p.metadata.clone(),
        // An object without usable metadata is simply not opted in.
        _ => request
            .object
            .and_then(|raw| serde_json::from_str::<MetaOnly>(raw.get()).ok())
            .map(|m| m.metadata)
            .unwrap_or_default(),
    };
    answer(&request, pod.as_ref().map(Result::as_ref), &meta, injector)
}

/// The answer to a well-formed request. `pod` is the object decoded as a Pod (or why that
/// failed), `meta` its metadata for the opt-in check and the log line.
fn answer<O>(
    request: &RequestIn<O>,
    pod: Option<Result<&PodView, &serde_json::Error>>,
    meta: &MetaView,
    injector: &Injector,
) -> Result<Reviewed, ReviewError> {
    let is_pod = request.is_pod();
    let mut out = Reviewed {
        body: Vec::new(),
        uid: request.uid.clone(),
        namespace: request.namespace.clone().unwrap_or_default(),
        pod: meta.display_name().to_owned(),
        mode: None,
        decision: Decision::Ignored,
        dry_run: request.dry_run.unwrap_or(false),
        warnings: 0,
    };

    if !is_pod || request.has_subresource() {
        let warnings = if is_pod {
            Vec::new()
        } else {
            vec![format!(
                "tokenvend mutates only Pods; {}/{} {} admitted unchanged (check the webhook's rules)",
                request.kind.group, request.kind.version, request.kind.kind
            )]
        };
        out.warnings = warnings.len();
        out.body = respond(&request.uid, true, None, None, &warnings)?;
        return Ok(out);
    }
    if !request.is_create() {
        out.body = respond(&request.uid, true, None, None, &[])?;
        return Ok(out);
    }
    let Some(pod) = pod else {
        out.decision = Decision::Denied;
        out.body = respond(
            &request.uid,
            false,
            Some(status(400, "CREATE request carries no object".to_owned())),
            None,
            &[],
        )?;
        return Ok(out);
    };
    if meta
        .labels
        .as_ref()
        .is_none_or(|l| !l.contains_key(injector.role_key()))
    {
        out.body = respond(&request.uid, true, None, None, &[])?;
        return Ok(out);
    }
    let pod = match pod {
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
            )?;
            return Ok(out);
        }
    };
    match injector.mutate(pod) {
        Ok(m) => {
            out.mode = m.mode;
            out.decision = if m.plumbed {
                Decision::Patched
            } else if m.mode.is_none() && m.warnings.is_empty() {
                Decision::Ignored
            } else {
                Decision::Unchanged
            };
            // Without the plumbing, a patch is only the record of the warnings.
            let patch = (!m.patch.is_empty()).then_some(&m.patch);
            out.warnings = m.warnings.len();
            out.body = respond(&request.uid, true, None, patch, &m.warnings)?;
        }
        Err(Denial {
            message,
            warnings,
            mode,
        }) => {
            out.mode = mode;
            out.decision = Decision::Denied;
            out.warnings = warnings.len();
            out.body = respond(
                &request.uid,
                false,
                Some(status(403, message)),
                None,
                &warnings,
            )?;
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

/// The response AdmissionReview, written straight into one buffer of the right size: the patch
/// goes in as base64 (as the admission API defines it; kube-rs would emit numbers) encoded in
/// place, so the largest member is neither copied again nor re-scanned for escaping.
fn respond(
    uid: &str,
    allowed: bool,
    status: Option<StatusOut>,
    patch: Option<&Patch>,
    warnings: &[String],
) -> Result<Vec<u8>, ReviewError> {
    let patch = patch.map(Patch::as_bytes);
    let base64_len = patch.map_or(0, |p| base64_simd::STANDARD.encoded_length(p.len()));
    let more = match warnings.len().saturating_sub(SHOWN_WARNINGS) {
        0 => None,
        n => Some(format!("and {}", more(n, "warning"))),
    };
    let warnings: Vec<&str> = warnings
        .iter()
        .take(SHOWN_WARNINGS)
        .map(String::as_str)
        .chain(more.as_deref())
        .collect();
    let warnings_len: usize = warnings.iter().map(|w| w.len() + 3).sum();
    let mut out = Vec::with_capacity(RESPONSE_OVERHEAD + uid.len() + base64_len + warnings_len);
    out.extend_from_slice(br#"{"apiVersion":""#);
    out.extend_from_slice(API_VERSION.as_bytes());
    out.extend_from_slice(br#"","kind":"AdmissionReview","response":{"uid":"#);
    write_json(&mut out, uid)?;
    out.extend_from_slice(if allowed {
        br#","allowed":true"#
    } else {
        br#","allowed":false"#
    });
    if let Some(status) = &status {
        out.extend_from_slice(br#","status":"#);
        write_json(&mut out, status)?;
    }
    if let Some(patch) = patch {
        out.extend_from_slice(br#","patch":""#);
        // Base64 needs no JSON escaping.
        base64_simd::STANDARD.encode_append(patch, &mut out);
        out.extend_from_slice(br#"","patchType":"JSONPatch""#);
    }
    if !warnings.is_empty() {
        out.extend_from_slice(br#","warnings":"#);
        write_json(&mut out, &warnings)?;
    }
    out.extend_from_slice(b"}}");
    Ok(out)
}

/// How many warnings an answer carries; a line counts the rest. The API server passes a few
/// hundred bytes of them to the client and drops the rest, and one warning repeated for each
/// of 60,000 containers made an answer of megabytes.
const SHOWN_WARNINGS: usize = 20;

/// Bytes of a response besides the uid, the patch and the warnings (generous).
const RESPONSE_OVERHEAD: usize = 192;

fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), ReviewError> {
    serde_json::to_writer(out, value).map_err(|e| ReviewError::Render(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::PatchBuilder;
    use base64::Engine;
    use serde_json::{Value, json};

    fn parsed(body: &[u8]) -> Value {
        serde_json::from_slice(body).expect("the response is JSON")
    }

    #[test]
    fn response_is_the_admission_review_shape_with_every_member_escaped() {
        let uid = "a\"b\\c\u{1}é";
        let warnings = vec!["x \"quoted\"\n".to_owned(), String::new()];

        let plain = respond(uid, true, None, None, &[]).expect("renders");
        assert_eq!(
            parsed(&plain),
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                   "response": {"uid": uid, "allowed": true}})
        );

        let denied = respond(
            uid,
            false,
            Some(status(403, "no \"role\"".to_owned())),
            None,
            &warnings,
        )
        .expect("renders");
        assert_eq!(
            parsed(&denied)["response"],
            json!({"uid": uid, "allowed": false, "warnings": warnings,
                   "status": {"code": 403, "reason": "Forbidden", "message": "no \"role\""}})
        );

        for len in 0..3 {
            // Every remainder of the patch length modulo 3 (base64 padding).
            let value = RawValue::from_string(format!("\"{}\"", "x".repeat(len))).expect("JSON");
            let mut b = PatchBuilder::new();
            b.add("/metadata/x~1y", &&*value);
            let p = b.build();
            let patched = respond(uid, true, None, Some(&p), &warnings).expect("renders");
            let v = parsed(&patched);
            let encoded = v["response"]["patch"].as_str().expect("patch is a string");
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .expect("standard padded base64");
            assert_eq!(decoded, p.as_bytes());
            assert_eq!(v["response"]["patchType"], "JSONPatch");
            assert_eq!(v["response"]["warnings"], json!(warnings));
        }
    }

    #[test]
    fn an_answer_carries_twenty_warnings_and_counts_the_rest() {
        let warnings: Vec<String> = (0..25).map(|i| format!("warning {i}")).collect();
        for (given, want) in [
            (&warnings[..20], json!(warnings[..20])),
            (&warnings[..21], {
                let mut w = json!(warnings[..20]);
                w.as_array_mut()
                    .expect("array")
                    .push(json!("and 1 more warning"));
                w
            }),
            (&warnings[..], {
                let mut w = json!(warnings[..20]);
                w.as_array_mut()
                    .expect("array")
                    .push(json!("and 5 more warnings"));
                w
            }),
        ] {
            let answer = respond("u", true, None, None, given).expect("renders");
            assert_eq!(parsed(&answer)["response"]["warnings"], want);
        }
    }
}
