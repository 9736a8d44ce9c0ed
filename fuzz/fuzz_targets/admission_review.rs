//! Any bytes as an AdmissionReview body, under one of eight webhook configs (the first byte
//! picks it). Any input: an answer or an error, never a panic. Every input that is JSON is also
//! reviewed as the API server would send it (the same document re-serialized: no duplicate keys,
//! no odd spacing), and its answer must keep the properties of the proptest suite for whatever
//! pod libFuzzer reaches: the answer is an AdmissionReview for the same uid; a patch comes only
//! with `allowed`, applies to the object, changes no existing field and keeps a valid pod valid;
//! and a second review of the patched pod is allowed with no patch (the API server reinvokes
//! the webhook after other webhooks' changes).
#![no_main]

use std::sync::LazyLock;

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tokenvend_webhook::admission::review;
use tokenvend_webhook::config::{Config, MutationArgs};
use tokenvend_webhook::mutate::Injector;

#[path = "../../crates/webhook/tests/common/mod.rs"]
mod common;

static INJECTORS: LazyLock<Vec<Injector>> = LazyLock::new(|| {
    let mut all = Vec::new();
    for deny in [false, true] {
        for style in ["native", "classic"] {
            for mode in ["web-identity", "credentials"] {
                let cfg = Config::from_args(MutationArgs {
                    deny_on_invalid: Some(deny),
                    sidecar_style: Some(style.into()),
                    default_mode: Some(mode.into()),
                    ..Default::default()
                })
                .expect("a valid config");
                all.push(Injector::new(cfg).expect("the config renders"));
            }
        }
    }
    all
});

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let injector = &INJECTORS[usize::from(pick) % INJECTORS.len()];
    let _ = review(body, injector);
    let Ok(doc) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let canonical = serde_json::to_vec(&doc).expect("a JSON value serializes");
    if let Ok(answer) = review(&canonical, injector) {
        check(&doc, &answer.body, injector);
    }
});

/// The answer's `response`, after checking the envelope and the uid.
fn response_of(doc: &Value, answer: &[u8]) -> Value {
    let out: Value = serde_json::from_slice(answer).expect("the answer is JSON");
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    let response = out["response"].clone();
    assert_eq!(response["uid"], doc["request"]["uid"], "the answer's uid");
    assert!(response["allowed"].is_boolean(), "allowed is a bool");
    response
}

fn check(doc: &Value, answer: &[u8], injector: &Injector) {
    let response = response_of(doc, answer);
    let Some(patch) = response.get("patch") else {
        return;
    };
    assert_eq!(response["allowed"], true, "a denial carries a patch");
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch.as_str().expect("the patch is a string"))
        .expect("the patch is base64");
    let ops: json_patch::Patch = serde_json::from_slice(&bytes).expect("the patch is a JSON patch");
    let object = &doc["request"]["object"];
    let mut mutated = object.clone();
    if let Err(e) = json_patch::patch(&mut mutated, &ops) {
        panic!("the patch does not apply: {e}");
    }
    if let Err(e) = common::contained(object, &mutated, "") {
        panic!("the patch changed an existing field: {e}");
    }
    if common::valid_pod(object).is_ok()
        && let Err(e) = common::valid_pod(&mutated)
    {
        panic!("the patch made a valid pod invalid: {e}");
    }
    let mut again = doc.clone();
    again["request"]["object"] = mutated;
    let second = review(
        &serde_json::to_vec(&again).expect("a JSON value serializes"),
        injector,
    )
    .expect("the patched review is answered");
    let second = response_of(&again, &second.body);
    assert_eq!(
        second["allowed"], true,
        "second pass denied: {}",
        second["status"]
    );
    assert!(
        second.get("patch").is_none(),
        "second pass not empty: {:?}",
        second["patch"]
    );
}
