//! Golden tests over realistic pod manifests in `tests/golden/<case>/pod.yaml` (+ optional
//! `config.yaml`). For each case: the result (patch, warnings, denial) and the mutated pod must
//! match the committed files, the patch must only add (nothing that existed changes except by
//! arrays gaining elements), and a second pass over the mutated pod must be empty.
//! `UPDATE_GOLDEN=1 cargo test --test golden` rewrites the expected files after a reviewed change.
//! The test command additionally applies every patch with `kubectl patch --local` and validates
//! every mutated pod with kubernetes-validate (see tests/check_golden.py).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use serde_json::{Value, json};
use tokenvend_webhook::config::{Config, read_file};
use tokenvend_webhook::mutate::mutate;
use tokenvend_webhook::pod::PodView;

mod common;
use common::{contained, valid_pod};

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("golden dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("pod.yaml").exists())
        .collect();
    dirs.sort();
    dirs
}

fn check_or_update(path: &Path, actual: &Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(actual).expect("json") + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, text).expect("write golden");
        return Ok(());
    }
    let expected = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    })?;
    let expected: Value = serde_json::from_str(&expected).expect("golden json");
    if &expected == actual {
        Ok(())
    } else {
        Err(format!(
            "{} differs; actual:\n{text}\n(review, then UPDATE_GOLDEN=1 to accept)",
            path.display()
        ))
    }
}

#[test]
fn golden_cases() {
    let cases = cases();
    assert!(cases.len() >= 8, "golden cases missing: {cases:?}");
    let mut failures = Vec::new();
    for dir in &cases {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_owned();
        let pod_text = std::fs::read_to_string(dir.join("pod.yaml")).expect("pod.yaml");
        let original: Value = serde_yaml_ng::from_str(&pod_text).expect("pod.yaml parses");
        let config_path = dir.join("config.yaml");
        let cfg = if config_path.exists() {
            Config::from_args(read_file(&config_path).expect("config.yaml")).expect("valid config")
        } else {
            Config::default()
        };
        let _: Pod = serde_json::from_value(original.clone()).expect("pod.yaml is a Pod");
        let pod = PodView::deserialize(&original).expect("pod.yaml decodes");
        let mut mutated = original.clone();
        let result = match mutate(&pod, &cfg) {
            Ok(m) => {
                let applied = m.patch.to_json_patch().expect("patch is a JSON patch");
                json_patch::patch(&mut mutated, &applied).expect("patch applies");
                json!({"allowed": true, "warnings": m.warnings, "patch": m.patch})
            }
            Err(d) => json!({"allowed": false, "message": d.message, "warnings": d.warnings}),
        };
        let mut check = |r: Result<(), String>| {
            if let Err(e) = r {
                failures.push(format!("{name}: {e}"));
            }
        };
        check(contained(&original, &mutated, ""));
        if result["allowed"] == json!(true) {
            check(valid_pod(&mutated));
            let again = PodView::deserialize(&mutated).expect("decodes");
            match mutate(&again, &cfg) {
                Ok(m) if m.patch.is_empty() => {}
                Ok(m) => check(Err(format!("second pass not empty: {:?}", m.patch))),
                Err(d) => check(Err(format!("second pass denied: {}", d.message))),
            }
        }
        check(check_or_update(&dir.join("result.json"), &result));
        check(check_or_update(&dir.join("mutated.json"), &mutated));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn containment_check_catches_changes() {
    let old = json!({"a": [1, {"b": 2}], "c": "x"});
    assert!(
        contained(
            &old,
            &json!({"a": [0, 1, {"b": 2, "z": 1}], "c": "x", "d": 1}),
            ""
        )
        .is_ok()
    );
    assert!(contained(&old, &json!({"a": [1, {"b": 3}], "c": "x"}), "").is_err());
    assert!(contained(&old, &json!({"a": [{"b": 2}, 1], "c": "x"}), "").is_err());
    assert!(contained(&old, &json!({"a": [1, {"b": 2}]}), "").is_err());
}
