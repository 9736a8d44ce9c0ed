//! Property-based fuzzing of the webhook (proptest), time-bounded: `TOKENVEND_FUZZ_SECONDS` per
//! target (default 3; the test command runs about a minute each and prints the executions).
//! - any generated labelled pod, under any generated config: no panic; when allowed, the patch
//!   applies, the result is a valid pod (decodes; unique container and volume names; every mount
//!   names a volume; unique mount paths), a second pass is empty, no existing field changed,
//!   and every container reading the credentials endpoint starts after it serves;
//! - AdmissionReview parsing of arbitrary bytes and of mangled reviews: no panic, an answer or an error.

mod common;

use common::valid_pod;

use k8s_openapi::api::core::v1::Pod;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde::Deserialize;
use serde_json::{Value, json};
use tokenvend_webhook::admission::review;
use tokenvend_webhook::config::{Config, MutationArgs};
use tokenvend_webhook::mutate::Injector;
use tokenvend_webhook::pod::PodView;

use tokenvend_testkit::fuzz;

const NAMES: &[&str] = &[
    "app",
    "web",
    "proxy",
    "worker",
    "tokenvend-sidecar",
    "tokenvend-sidecar-init",
    "a1",
];
const PATHS: &[&str] = &[
    "/data",
    "/var/run/secrets/tremolo.io/aws",
    "/var/run/secrets/tremolo.io/serviceaccount",
    "/tmp/x",
    "/etc/cfg",
];
const VOLUMES: &[&str] = &["data", "cache", "tokenvend-aws", "tokenvend-sa-token"];
const ENV: &[&str] = &[
    "AWS_REGION",
    "AWS_ROLE_ARN",
    "AWS_ACCESS_KEY_ID",
    "FOO",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_STS_REGIONAL_ENDPOINTS",
];

/// The default `credentialsPort`.
const CREDENTIALS_PORT: u16 = 9911;

fn container(name: &'static str, volumes: Vec<&'static str>) -> impl Strategy<Value = Value> {
    let mounts = proptest::sample::subsequence(PATHS.to_vec(), 0..3).prop_flat_map(move |paths| {
        let vols = volumes.clone();
        let n = paths.len();
        (
            Just(paths),
            proptest::collection::vec(
                proptest::sample::select(if vols.is_empty() { vec!["data"] } else { vols }),
                n,
            ),
            proptest::collection::vec(any::<bool>(), n),
        )
    });
    (
        mounts,
        proptest::sample::subsequence(ENV.to_vec(), 0..4),
        "[a-z0-9/~._-]{0,12}",
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(proptest::sample::select(vec![
            "app:1",
            "ghcr.io/tokenvend/tokenvend-sidecar:0.1.0",
        ])),
        // A declared port: another, or the credentials endpoint's.
        proptest::option::of(proptest::sample::select(vec![8080u16, CREDENTIALS_PORT])),
    )
        .prop_map(
            move |((paths, vols, ro), env, value, env_from, native, image, port)| {
                let mut c = json!({"name": name, "image": image.unwrap_or("app:1")});
                if let Some(port) = port {
                    c["ports"] = json!([{"containerPort": port}]);
                }
                if !paths.is_empty() {
                    c["volumeMounts"] = Value::Array(
                        paths
                            .iter()
                            .zip(&vols)
                            .zip(&ro)
                            .map(|((p, v), r)| json!({"name": v, "mountPath": p, "readOnly": r}))
                            .collect(),
                    );
                }
                if !env.is_empty() {
                    c["env"] = Value::Array(
                        env.iter()
                            .map(|e| json!({"name": e, "value": value}))
                            .collect(),
                    );
                }
                if env_from {
                    c["envFrom"] = json!([{"configMapRef": {"name": "cfg"}}]);
                }
                if native {
                    c["restartPolicy"] = json!("Always");
                }
                c
            },
        )
}

fn pod() -> impl Strategy<Value = Value> {
    (
        proptest::sample::subsequence(VOLUMES.to_vec(), 0..3),
        proptest::sample::subsequence(NAMES.to_vec(), 1..5),
        1usize..4,
        proptest::sample::select(vec!["arn:aws:iam::123456789012:role/app", "arn:aws-cn:iam::123456789012:role/p/q", "role", ""]),
        proptest::option::of(proptest::sample::select(vec!["web-identity", "credentials", "projected", "bogus"])),
        proptest::option::of("[a-z,\\- ]{0,20}"),
        proptest::option::of("[a-z0-9-]{1,70}"),
        any::<bool>(),
        // Pod-level resources: which of cpu and memory, in requests or in limits.
        proptest::option::of(proptest::sample::subsequence(
            vec![
                ("requests", "cpu", "2"),
                ("requests", "memory", "2Gi"),
                ("limits", "cpu", "4"),
                ("limits", "memory", "4Gi"),
            ],
            0..4,
        )),
    )
        .prop_flat_map(|(volumes, names, split, role, mode, skip, name, empty_dir, pod_level)| {
            let split = split.min(names.len());
            let (apps, inits) = names.split_at(split);
            let apps: Vec<_> = apps.iter().map(|n| container(n, volumes.clone()).boxed()).collect();
            let inits: Vec<_> = inits.iter().map(|n| container(n, volumes.clone()).boxed()).collect();
            (apps, inits, Just((volumes, role, mode, skip, name, empty_dir, pod_level)))
        })
        .prop_map(|(apps, inits, (volumes, role, mode, skip, name, empty_dir, pod_level))| {
            let mut ann = json!({"tremolo.io/aws-role": role});
            if let Some(m) = mode {
                ann["tremolo.io/aws-mode"] = json!(m);
            }
            if let Some(s) = skip {
                ann["tremolo.io/aws-skip-containers"] = json!(s);
            }
            let mut meta = json!({"namespace": "ns", "labels": {"tremolo.io/aws-role": "true"}, "annotations": ann});
            match name {
                Some(n) => meta["name"] = json!(n),
                None => meta["generateName"] = json!("web-"),
            }
            let mut spec = json!({"containers": apps});
            if let Some(budget) = pod_level {
                let mut resources = json!({});
                for (list, resource, q) in budget {
                    resources[list][resource] = json!(q);
                }
                spec["resources"] = resources;
            }
            if !inits.is_empty() {
                spec["initContainers"] = Value::Array(inits);
            }
            if !volumes.is_empty() {
                spec["volumes"] = Value::Array(
                    volumes
                        .iter()
                        .map(|v| if empty_dir { json!({"name": v, "emptyDir": {}}) } else { json!({"name": v, "configMap": {"name": v}}) })
                        .collect(),
                );
            }
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
        })
}

fn config() -> impl Strategy<Value = Config> {
    (
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(proptest::sample::select(vec!["eu-west-1", "us-gov-west-1"])),
        proptest::sample::select(vec!["web-identity", "credentials", "projected"]),
    )
        .prop_map(|(deny, classic, region, mode)| {
            Config::from_args(MutationArgs {
                deny_on_invalid: Some(deny),
                sidecar_style: Some(if classic { "classic" } else { "native" }.into()),
                region: region.map(str::to_owned),
                default_mode: Some(mode.into()),
                ..Default::default()
            })
            .expect("valid config")
        })
}

/// Each sidecar the patch added asks for no CPU or memory the pod budgets at the pod level, and
/// for the configured amounts of the others (the config's defaults here).
fn sidecars_leave_the_pod_level_budget(before: &Value, after: &Value) -> Result<(), TestCaseError> {
    let pod_level = |resource: &str| {
        ["requests", "limits"]
            .iter()
            .any(|l| before["spec"]["resources"][l].get(resource).is_some())
    };
    let names = |pod: &Value| -> Vec<String> {
        ["initContainers", "containers"]
            .iter()
            .filter_map(|l| pod["spec"][l].as_array())
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    };
    let old = names(before);
    let added = ["initContainers", "containers"]
        .iter()
        .filter_map(|l| after["spec"][l].as_array())
        .flatten()
        .filter(|c| {
            c["name"]
                .as_str()
                .is_some_and(|n| !old.iter().any(|o| o == n))
        });
    for c in added {
        for (resource, request, limit) in [("cpu", "10m", "100m"), ("memory", "16Mi", "32Mi")] {
            let own = (
                c["resources"]["requests"].get(resource),
                c["resources"]["limits"].get(resource),
            );
            let want = if pod_level(resource) {
                (None, None)
            } else {
                (Some(&json!(request)), Some(&json!(limit)))
            };
            prop_assert_eq!(own, want, "{} of {}", resource, c["name"]);
        }
    }
    Ok(())
}

/// A mutated pod with a credentials endpoint has no other container declaring its port among
/// those running beside it: regular containers, native sidecars, and the init containers after
/// a native sidecar of ours (the others finish before the endpoint starts).
fn no_container_shares_the_endpoints_port(out: &Value) -> Result<(), TestCaseError> {
    let spec = &out["spec"];
    let inits = spec["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let native = |c: &Value| c["restartPolicy"] == "Always";
    let ours_at = inits
        .iter()
        .position(|c| native(c) && c["name"] == "tokenvend-sidecar");
    let all: Vec<&Value> = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            inits
                .iter()
                .enumerate()
                .filter(|(i, c)| native(c) || ours_at.is_some_and(|at| *i > at))
                .map(|(_, c)| c),
        )
        .collect();
    let endpoint = all.iter().any(|c| {
        c["env"].as_array().into_iter().flatten().any(|e| {
            e["name"] == "AWS_CONTAINER_CREDENTIALS_FULL_URI"
                && e["value"]
                    .as_str()
                    .is_some_and(|v| v.contains(&format!(":{CREDENTIALS_PORT}/")))
        })
    });
    if !endpoint {
        return Ok(());
    }
    for c in all {
        let ours = c["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("tokenvend-sidecar"));
        let declares = c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["containerPort"] == CREDENTIALS_PORT);
        prop_assert!(
            ours || !declares,
            "{} declares the endpoint's port {}",
            c["name"],
            CREDENTIALS_PORT
        );
    }
    Ok(())
}

/// In a mutated pod, every container that reads the credentials endpoint starts after it
/// serves: the native sidecar (whose startupProbe the kubelet waits for) or, in classic style,
/// the regular sidecar placed before it with the `wait` postStart hook. Pods that had a sidecar
/// of ours before the patch are left as they were.
fn the_endpoint_serves_before_the_app_starts(
    before: &Value,
    out: &Value,
) -> Result<(), TestCaseError> {
    let ours = |c: &Value| c["name"] == "tokenvend-sidecar";
    let containers = out["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let inits = out["spec"]["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let had_ours = ["containers", "initContainers"]
        .iter()
        .filter_map(|list| before["spec"][list].as_array())
        .flatten()
        .any(ours);
    let reads = |c: &Value| {
        c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["name"] == "AWS_CONTAINER_CREDENTIALS_FULL_URI")
    };
    let Some(first_reader) = containers.iter().position(reads) else {
        return Ok(());
    };
    if had_ours
        || inits
            .iter()
            .any(|c| ours(c) && c["restartPolicy"] == "Always")
    {
        return Ok(());
    }
    let holder = containers.iter().position(|c| {
        ours(c)
            && c["lifecycle"]["postStart"]["exec"]["command"]
                .as_array()
                .is_some_and(|cmd| cmd.get(1) == Some(&json!("wait")))
    });
    prop_assert!(
        holder.is_some_and(|h| h < first_reader),
        "container {} reads the endpoint before any sidecar holds it back: {:?}",
        containers[first_reader]["name"],
        containers.iter().map(|c| &c["name"]).collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn fuzz_mutation_properties() {
    let runs = fuzz("mutation", (pod(), config()), |(pod_json, cfg)| {
        // Generated pods may themselves be invalid (duplicate names are not generated; a mount of
        // a missing user volume can be): we only require we do not make them worse.
        let _: Pod = serde_json::from_value(pod_json.clone())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let pod =
            PodView::deserialize(&pod_json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let before_valid = valid_pod(&pod_json).is_ok();
        let injector = Injector::new(cfg).map_err(|e| TestCaseError::fail(e.to_string()))?;
        match injector.mutate(&pod) {
            Err(d) => prop_assert!(d.message.starts_with("tokenvend: ")),
            Ok(m) => {
                let mut out = pod_json.clone();
                let applied = m
                    .patch
                    .to_json_patch()
                    .map_err(|e| TestCaseError::fail(format!("patch is not JSON patch: {e}")))?;
                json_patch::patch(&mut out, &applied)
                    .map_err(|e| TestCaseError::fail(format!("patch does not apply: {e}")))?;
                common::contained(&pod_json, &out, "").map_err(TestCaseError::fail)?;
                sidecars_leave_the_pod_level_budget(&pod_json, &out)?;
                no_container_shares_the_endpoints_port(&out)?;
                the_endpoint_serves_before_the_app_starts(&pod_json, &out)?;
                if before_valid {
                    valid_pod(&out)
                        .map_err(|e| TestCaseError::fail(format!("{e}\npatch: {:?}", m.patch)))?;
                }
                let _: Pod = serde_json::from_value(out.clone())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let again =
                    PodView::deserialize(&out).map_err(|e| TestCaseError::fail(e.to_string()))?;
                match injector.mutate(&again) {
                    Ok(m2) => {
                        prop_assert!(m2.patch.is_empty(), "second pass not empty: {:?}", m2.patch)
                    }
                    Err(d) => {
                        return Err(TestCaseError::fail(format!(
                            "second pass denied: {}",
                            d.message
                        )));
                    }
                }
            }
        }
        Ok(())
    });
    assert!(runs > 0);
}

#[test]
fn fuzz_admission_review_parsing() {
    let cfg = Injector::new(Config::default()).expect("default config renders");
    let base = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "operation": "CREATE", "userInfo": {},
                    "object": {"metadata": {"labels": {"tremolo.io/aws-role": "true"}, "annotations": {"tremolo.io/aws-role": "arn:aws:iam::123456789012:role/a"}},
                               "spec": {"containers": [{"name": "a"}]}}}
    })
    .to_string()
    .into_bytes();
    let runs = fuzz(
        "admission-review",
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..512),
            // Mangle a valid review: flip, drop and insert bytes.
            proptest::collection::vec((0..base.len(), any::<u8>(), 0u8..3), 1..8).prop_map(
                move |edits| {
                    let mut b = base.clone();
                    for (i, byte, op) in edits {
                        let i = i.min(b.len().saturating_sub(1));
                        match op {
                            0 => b[i] = byte,
                            1 => {
                                b.remove(i);
                            }
                            _ => b.insert(i, byte),
                        }
                    }
                    b
                }
            ),
        ],
        |body| {
            // Never a panic: an answer or an error.
            if let Ok(r) = review(&body, &cfg) {
                prop_assert!(serde_json::from_slice::<Value>(&r.body).is_ok());
            }
            Ok(())
        },
    );
    assert!(runs > 0);
}
