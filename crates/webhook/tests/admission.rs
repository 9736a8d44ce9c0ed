//! AdmissionReview handling: wire format (uid echo, base64 patch), what is ignored, bad input.

use base64::Engine;
use serde_json::{Value, json};
use tokenvend_testkit::admission_review;
use tokenvend_webhook::admission::{Decision, ReviewError, review};
use tokenvend_webhook::config::Config;
use tokenvend_webhook::mutate::Injector;

/// A review as a v1 API server sends it, with the fields the webhook does not read, and `extra`
/// set in the request.
fn request(object: Value, extra: Value) -> Value {
    let mut r = admission_review("705ab4f5-6393-11e8-b7cc-42010a800002", "shop", object);
    let unread = json!({
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "uid": "u", "groups": ["system:serviceaccounts"]},
        "oldObject": null,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
    });
    if let (Some(req), Value::Object(unread), Value::Object(extra)) =
        (r["request"].as_object_mut(), unread, extra)
    {
        req.extend(unread);
        req.extend(extra);
    }
    r
}

fn labelled_pod(role: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "orders-", "namespace": "shop",
                     "labels": {"tremolo.io/aws-role": "true"},
                     "annotations": {"tremolo.io/aws-role": role, "tremolo.io/aws-mode": "web-identity"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}
    })
}

fn injector() -> Injector {
    Injector::new(Config::default()).expect("default config renders")
}

fn answer(body: &Value) -> (Value, Decision) {
    let r = review(body.to_string().as_bytes(), &injector()).expect("valid review");
    let resp: Value = serde_json::from_slice(&r.body).expect("response json");
    let sent = resp["response"]["warnings"].as_array().map_or(0, Vec::len);
    assert_eq!(
        r.warnings, sent,
        "the count logged is the count sent: {resp}"
    );
    (resp, r.decision)
}

#[test]
fn patch_is_a_base64_string_and_uid_api_version_kind_are_echoed() {
    let pod = labelled_pod("arn:aws:iam::123456789012:role/orders");
    let (resp, decision) = answer(&request(pod.clone(), json!({})));
    assert_eq!(decision, Decision::Patched);
    assert_eq!(resp["apiVersion"], json!("admission.k8s.io/v1"));
    assert_eq!(resp["kind"], json!("AdmissionReview"));
    let r = &resp["response"];
    assert_eq!(r["uid"], json!("705ab4f5-6393-11e8-b7cc-42010a800002"));
    assert_eq!(r["allowed"], json!(true));
    assert_eq!(r["patchType"], json!("JSONPatch"));
    // The API defines patch as base64 bytes; kube-rs would serialize an array of numbers.
    let b64 = r["patch"].as_str().expect("patch must be a string");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("RFC 6902 patch");
    let mut out = pod;
    json_patch::patch(&mut out, &patch).expect("applies");
    assert_eq!(
        out["spec"]["initContainers"][0]["name"],
        json!("tokenvend-sidecar")
    );
    assert!(
        r.get("warnings").is_none(),
        "no warnings when nothing was defaulted"
    );
    assert!(r.get("status").is_none());
}

#[test]
fn denial_carries_the_message_and_a_403_status() {
    let (resp, decision) = answer(&request(labelled_pod("orders"), json!({})));
    assert_eq!(decision, Decision::Denied);
    let r = &resp["response"];
    assert_eq!(r["allowed"], json!(false));
    assert_eq!(r["status"]["code"], json!(403));
    assert!(
        r["status"]["message"]
            .as_str()
            .expect("message")
            .contains("is not an IAM role ARN")
    );
    assert!(r.get("patch").is_none());
}

#[test]
fn a_pod_admitted_without_the_plumbing_is_unchanged_but_for_its_record() {
    // denyOnInvalid: false. Logged and counted as unchanged, not patched: it got no credentials.
    let cfg = tokenvend_webhook::config::MutationArgs {
        deny_on_invalid: Some(false),
        ..Default::default()
    };
    let injector = Injector::new(Config::from_args(cfg).expect("config")).expect("renders");
    let pod = labelled_pod("orders");
    let body = request(pod.clone(), json!({})).to_string();
    let r = review(body.as_bytes(), &injector).expect("valid review");
    assert_eq!(r.decision, Decision::Unchanged);
    let resp: Value = serde_json::from_slice(&r.body).expect("json");
    let a = &resp["response"];
    assert_eq!(a["allowed"], json!(true));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(a["patch"].as_str().expect("the record's patch"))
        .expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("RFC 6902 patch");
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch).expect("applies");
    let record = out["metadata"]["annotations"]
        .as_object_mut()
        .expect("annotations")
        .remove("tremolo.io/aws-warnings")
        .expect("the record");
    assert_eq!(out, pod, "nothing else");
    assert_eq!(record, json!(a["warnings"][0]));
    assert_eq!(r.warnings, 1);
}

#[test]
fn ignored_requests_are_allowed_without_patch() {
    let pod = labelled_pod("arn:aws:iam::123456789012:role/orders");
    let mut unlabelled = pod.clone();
    unlabelled["metadata"]["labels"] = json!({"app": "x"});
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"tremolo.io/aws-role": "true"}}, "spec": {}});
    let cases = vec![
        (request(unlabelled, json!({})), false),
        (
            request(
                pod.clone(),
                json!({"operation": "UPDATE", "oldObject": pod.clone()}),
            ),
            false,
        ),
        (
            request(
                pod.clone(),
                json!({"operation": "DELETE", "object": null, "oldObject": pod.clone()}),
            ),
            false,
        ),
        (
            request(pod.clone(), json!({"subResource": "status"})),
            false,
        ),
        (
            request(
                deployment,
                json!({"kind": {"group": "apps", "version": "v1", "kind": "Deployment"}}),
            ),
            true,
        ),
    ];
    for (body, warns) in cases {
        let (resp, decision) = answer(&body);
        assert_eq!(decision, Decision::Ignored, "{body}");
        assert_eq!(resp["response"]["allowed"], json!(true));
        assert!(resp["response"].get("patch").is_none());
        assert_eq!(resp["response"].get("warnings").is_some(), warns, "{resp}");
    }
}

#[test]
fn dry_run_gives_the_same_answer() {
    let pod = labelled_pod("arn:aws:iam::123456789012:role/orders");
    let (wet, _) = answer(&request(pod.clone(), json!({})));
    let r = review(
        request(pod, json!({"dryRun": true})).to_string().as_bytes(),
        &injector(),
    )
    .expect("ok");
    assert!(r.dry_run);
    let dry: Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(wet, dry);
}

#[test]
fn undecodable_labelled_pod_is_refused_with_a_message() {
    let mut pod = labelled_pod("arn:aws:iam::123456789012:role/orders");
    pod["spec"]["containers"] = json!("not-a-list");
    let (resp, decision) = answer(&request(pod, json!({})));
    assert_eq!(decision, Decision::Denied);
    assert_eq!(resp["response"]["status"]["code"], json!(400));
    assert!(
        resp["response"]["status"]["message"]
            .as_str()
            .expect("msg")
            .contains("cannot decode the Pod")
    );
}

#[test]
fn bad_bodies_are_errors_not_panics() {
    let cfg = injector();
    let pod = labelled_pod("arn:aws:iam::123456789012:role/orders");
    let mut v1beta1 = request(pod.clone(), json!({}));
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut no_request = request(pod.clone(), json!({}));
    no_request.as_object_mut().expect("obj").remove("request");
    let mut no_uid = request(pod.clone(), json!({}));
    no_uid["request"]
        .as_object_mut()
        .expect("obj")
        .remove("uid");
    let empty_uid = request(pod.clone(), json!({"uid": ""}));
    let mut wrong_kind = request(pod.clone(), json!({}));
    wrong_kind["kind"] = json!("Pod");
    // Invalid UTF-8 inside a string no field of the webhook reads (RFC 8259: JSON is UTF-8).
    let mut bad_utf8 = request(pod, json!({})).to_string().into_bytes();
    let at = bad_utf8
        .windows(10)
        .position(|w| w == b"replicaset")
        .expect("userInfo in the body");
    bad_utf8[at] = 0xff;
    type Check = fn(&ReviewError) -> bool;
    let cases: Vec<(Vec<u8>, Check)> = vec![
        (b"{not json".to_vec(), |e| {
            matches!(e, ReviewError::Malformed(_))
        }),
        (b"".to_vec(), |e| matches!(e, ReviewError::Malformed(_))),
        (b"[]".to_vec(), |e| matches!(e, ReviewError::Malformed(_))),
        (v1beta1.to_string().into_bytes(), |e| {
            matches!(e, ReviewError::Version { .. })
        }),
        (wrong_kind.to_string().into_bytes(), |e| {
            matches!(e, ReviewError::Version { .. })
        }),
        (no_request.to_string().into_bytes(), |e| {
            matches!(e, ReviewError::MissingRequest)
        }),
        (
            no_uid.to_string().into_bytes(),
            |e| matches!(e, ReviewError::Malformed(m) if m.contains("uid")),
        ),
        (empty_uid.to_string().into_bytes(), |e| {
            matches!(e, ReviewError::MissingUid)
        }),
        (vec![0xff, 0xfe, 0x00], |e| {
            matches!(e, ReviewError::Malformed(_))
        }),
        (
            bad_utf8,
            |e| matches!(e, ReviewError::Malformed(m) if m.contains("UTF-8")),
        ),
    ];
    for (body, check) in cases {
        let err = review(&body, &cfg).expect_err("must be refused");
        assert!(check(&err), "{err:?}");
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn the_logged_name_comes_from_the_object_however_it_decodes() {
    let pod = labelled_pod("arn:aws:iam::123456789012:role/orders");
    let mut broken = pod.clone();
    broken["metadata"]["name"] = json!("orders-0");
    broken["spec"]["containers"] = json!([{"image": "no-name"}]);
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {}});
    let cases = [
        (request(pod, json!({})), "orders-", Decision::Patched),
        (request(broken, json!({})), "orders-0", Decision::Denied),
        (
            request(
                deployment,
                json!({"kind": {"group": "apps", "version": "v1", "kind": "Deployment"}}),
            ),
            "d",
            Decision::Ignored,
        ),
    ];
    for (body, name, decision) in cases {
        let r = review(body.to_string().as_bytes(), &injector()).expect("answered");
        assert_eq!((r.pod.as_str(), r.decision), (name, decision), "{body}");
        assert_eq!(r.namespace, "shop");
    }
}

#[test]
fn deeply_nested_fields_the_mutation_does_not_read_are_skipped_not_refused() {
    // serde_json refuses more than 128 levels of what it decodes; skipped content has no such
    // limit, so a pod is not refused for the shape of fields it does not need.
    let mut pod = labelled_pod("arn:aws:iam::123456789012:role/orders");
    pod["spec"]["x"] = json!("NESTED");
    let nested = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    let body = request(pod, json!({}))
        .to_string()
        .replace("\"NESTED\"", &nested);
    let r = review(body.as_bytes(), &injector()).expect("answered");
    assert_eq!(r.decision, Decision::Patched);
}
