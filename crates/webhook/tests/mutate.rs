//! Table-driven tests of the pure mutation: (pod, config) -> (patch, warnings) or denial.

use serde::Deserialize;
use serde_json::{Value, json};
use tokenvend_core::Mode;
use tokenvend_webhook::config::{Config, MutationArgs, RunAsUser};
use tokenvend_webhook::mutate::{Mutation, mutate, session_name_from};
use tokenvend_webhook::patch::MAX_PATCH_BYTES;
use tokenvend_webhook::pod::PodView;

mod common;

const ROLE: &str = "arn:aws:iam::123456789012:role/app";

fn cfg(f: impl FnOnce(&mut MutationArgs)) -> Config {
    let mut a = MutationArgs::default();
    f(&mut a);
    Config::from_args(a).expect("valid test config")
}

/// A labelled pod with one container; `extra` is merged into it (objects merged, rest replaced).
fn pod(extra: Value) -> Value {
    let mut base = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-0",
            "namespace": "shop",
            "labels": {"tremolo.io/aws-role": "true"},
            "annotations": {"tremolo.io/aws-role": ROLE, "tremolo.io/aws-mode": "web-identity"}
        },
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}
    });
    merge(&mut base, extra);
    base
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                match b.get_mut(&k) {
                    Some(slot) if v.is_object() && slot.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, e) => *b = e,
    }
}

fn typed(v: &Value) -> PodView<'_> {
    PodView::deserialize(v).expect("test pod decodes")
}

/// Run the mutation and apply its patch; returns (mutation, mutated pod).
fn run(v: &Value, c: &Config) -> (Mutation, Value) {
    let m = mutate(&typed(v), c).unwrap_or_else(|d| panic!("denied: {}", d.message));
    let mut out = v.clone();
    let applied = m.patch.to_json_patch().expect("patch is a JSON patch");
    json_patch::patch(&mut out, &applied).expect("patch applies");
    (m, out)
}

/// A pod admitted without the plumbing (`--deny-on-invalid=false`): `out` is `p` with only its
/// warnings recorded, where the owner of a controller's pod can read them.
fn admitted_without_plumbing(m: &Mutation, out: &Value, p: &Value) {
    assert!(!m.plumbed, "{m:?}");
    let mut want = p.clone();
    let record = m.warnings.join("\n");
    merge(
        &mut want,
        json!({"metadata": {"annotations": {"tremolo.io/aws-warnings": record}}}),
    );
    assert_eq!(out, &want);
}

fn env_of(c: &Value) -> Vec<(String, Value)> {
    c["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap_or("").to_owned(),
                        e.get("value").cloned().unwrap_or(Value::Null),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn env_names(c: &Value) -> Vec<String> {
    env_of(c).into_iter().map(|(n, _)| n).collect()
}

fn ops(m: &Mutation) -> Vec<String> {
    m.patch
        .to_json_patch()
        .expect("patch is a JSON patch")
        .0
        .iter()
        .map(|op| {
            serde_json::to_value(op).expect("op")["op"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

#[test]
fn not_opted_in_pods_are_left_alone() {
    let cases = [
        (
            json!({"metadata": {"labels": {"tremolo.io/aws-role": null}}}),
            0,
        ),
        (json!({"metadata": {"labels": {"app": "x"}}}), 0),
        // Explicitly out.
        (
            json!({"metadata": {"labels": {"tremolo.io/aws-role": "false"}}}),
            0,
        ),
    ];
    for (extra, warnings) in cases {
        let mut p = pod(json!({}));
        p["metadata"]["labels"] = extra["metadata"]["labels"].clone();
        if p["metadata"]["labels"]["tremolo.io/aws-role"].is_null() {
            p["metadata"]["labels"]
                .as_object_mut()
                .expect("labels")
                .remove("tremolo.io/aws-role");
        }
        for c in [Config::default(), cfg(|a| a.deny_on_invalid = Some(false))] {
            let (m, _) = run(&p, &c);
            assert!(m.patch.is_empty(), "{p}");
            assert_eq!(m.warnings.len(), warnings);
        }
    }
}

#[test]
fn static_pods_mirrors_are_left_unchanged_with_why() {
    // The kubelet creates a mirror pod in the API for each static pod, annotated with the static
    // pod's hash. The API server refuses a mirror pod with a service-account token volume, and a
    // refused mirror only hides the static pod, which runs regardless.
    let mirror =
        json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "5f1c0a7b9e"}}});
    let mut no_role = pod(mirror.clone());
    no_role["metadata"]["annotations"]
        .as_object_mut()
        .expect("annotations")
        .remove("tremolo.io/aws-role");
    let mut cases = vec![no_role];
    for mode in ["web-identity", "credentials", "projected"] {
        let mut p = pod(json!({"metadata": {"annotations": {"tremolo.io/aws-mode": mode}}}));
        let (m, _) = run(&p, &Config::default());
        assert!(!m.patch.is_empty(), "{mode}: a regular pod is patched");
        merge(&mut p, mirror.clone());
        cases.push(p);
    }
    for p in cases {
        for c in [Config::default(), cfg(|a| a.deny_on_invalid = Some(false))] {
            let (m, out) = run(&p, &c);
            assert!(m.patch.is_empty(), "{p}");
            assert_eq!(out, p);
            assert_eq!(m.mode, None);
            assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
            assert!(
                m.warnings[0].contains("static pod") && m.warnings[0].contains("DaemonSet"),
                "{:?}",
                m.warnings
            );
        }
    }
}

#[test]
fn missing_or_invalid_annotations_deny_with_what_to_fix_or_warn_when_configured() {
    let mut no_role = pod(json!({}));
    no_role["metadata"]["annotations"]
        .as_object_mut()
        .expect("ann")
        .remove("tremolo.io/aws-role");
    let mut cases: Vec<(Value, &str)> = vec![
        (
            no_role,
            "has no tremolo.io/aws-role annotation: set it to the IAM role ARN",
        ),
        (
            pod(json!({"metadata": {"annotations": {"tremolo.io/aws-role": "my-role"}}})),
            "is not an IAM role ARN",
        ),
        (
            pod(
                json!({"metadata": {"annotations": {"tremolo.io/aws-role": "arn:aws:iam::123:role/x"}}}),
            ),
            "12-digit",
        ),
        (
            pod(json!({"metadata": {"annotations": {"tremolo.io/aws-mode": "irsa"}}})),
            "expected one of web-identity, credentials, projected",
        ),
    ];
    // A label meant as an opt-in, in another spelling, used to leave the pod without
    // credentials and without a word (the objectSelector kept it from the webhook).
    for value in ["True", "yes", "enabled", ""] {
        cases.push((
            pod(json!({"metadata": {"labels": {"tremolo.io/aws-role": value}}})),
            "neither opts in nor out: set it to \"true\" for AWS credentials, or to \"false\"",
        ));
    }
    let warn_cfg = cfg(|a| a.deny_on_invalid = Some(false));
    for (p, expected) in cases {
        let d = mutate(&typed(&p), &Config::default()).expect_err(expected);
        assert!(d.message.starts_with("tokenvend: "), "{}", d.message);
        assert!(
            d.message.contains(expected),
            "{} lacks {expected}",
            d.message
        );
        let (m, out) = run(&p, &warn_cfg);
        admitted_without_plumbing(&m, &out, &p);
        assert!(
            m.warnings
                .iter()
                .any(|w| w.contains("did not inject") && w.contains(expected)),
            "{:?}",
            m.warnings
        );
    }
}

#[test]
fn each_mode_injects_exactly_its_env() {
    let region = cfg(|a| a.region = Some("eu-west-1".into()));
    let cases: Vec<(Mode, Vec<(&str, &str)>)> = vec![
        (
            Mode::WebIdentity,
            vec![
                ("AWS_ROLE_ARN", ROLE),
                (
                    "AWS_WEB_IDENTITY_TOKEN_FILE",
                    "/var/run/secrets/tremolo.io/aws/token",
                ),
                ("AWS_ROLE_SESSION_NAME", "web-0"),
                ("AWS_REGION", "eu-west-1"),
                ("AWS_DEFAULT_REGION", "eu-west-1"),
                ("AWS_STS_REGIONAL_ENDPOINTS", "regional"),
            ],
        ),
        (
            Mode::Credentials,
            vec![
                (
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    "http://127.0.0.1:9911/credentials",
                ),
                (
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    "/var/run/secrets/tremolo.io/aws/auth-token",
                ),
                ("AWS_REGION", "eu-west-1"),
                ("AWS_DEFAULT_REGION", "eu-west-1"),
            ],
        ),
        (
            Mode::Projected,
            vec![
                ("AWS_ROLE_ARN", ROLE),
                (
                    "AWS_WEB_IDENTITY_TOKEN_FILE",
                    "/var/run/secrets/tremolo.io/serviceaccount/token",
                ),
                ("AWS_ROLE_SESSION_NAME", "web-0"),
                ("AWS_REGION", "eu-west-1"),
                ("AWS_DEFAULT_REGION", "eu-west-1"),
                ("AWS_STS_REGIONAL_ENDPOINTS", "regional"),
            ],
        ),
    ];
    for (mode, expected) in cases {
        let p = pod(json!({"metadata": {"annotations": {"tremolo.io/aws-mode": mode.as_str()}}}));
        let (m, out) = run(&p, &region);
        assert_eq!(m.mode, Some(mode));
        assert!(m.warnings.is_empty(), "{mode}: {:?}", m.warnings);
        let got: Vec<(String, Value)> = env_of(&out["spec"]["containers"][0]);
        let want: Vec<(String, Value)> = expected
            .iter()
            .map(|(n, v)| ((*n).to_owned(), json!(v)))
            .collect();
        assert_eq!(got, want, "{mode}");
        assert!(ops(&m).iter().all(|o| o == "add"), "only add ops");
        // The app mount is read-only; the sidecar (if any) comes first among init containers.
        let mounts = out["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .expect("mounts");
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0]["readOnly"], json!(true));
        let vols: Vec<&str> = out["spec"]["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .map(|v| v["name"].as_str().unwrap_or(""))
            .collect();
        let audience = &out["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]
            ["audience"];
        if mode == Mode::Projected {
            assert_eq!(vols, ["tokenvend-sa-token"]);
            assert_eq!(audience, &json!("sts.amazonaws.com"));
            assert!(out["spec"].get("initContainers").is_none());
        } else {
            assert_eq!(vols, ["tokenvend-sa-token", "tokenvend-aws"]);
            assert_eq!(audience, &json!("tokenvend"));
            let sc = &out["spec"]["initContainers"][0];
            assert_eq!(sc["name"], json!("tokenvend-sidecar"));
            assert_eq!(sc["restartPolicy"], json!("Always"));
            let args: Vec<&str> = sc["args"]
                .as_array()
                .expect("args")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(args[..2], ["--mode", mode.as_str()]);
            assert_eq!(args.contains(&"--listen"), mode == Mode::Credentials);
            assert!(args.windows(2).any(|w| w == ["--role-arn", ROLE]));
        }
    }
}

#[test]
fn with_sidecar_run_as_user_platform_no_uid_is_set_and_the_rest_of_the_hardening_stays() {
    // OpenShift's restricted SCC refuses a pod whose container sets a UID outside the
    // namespace's range, and assigns one itself when none is set.
    use tokenvend_webhook::config::RunAsUser;
    let default = run(&pod(json!({})), &Config::default()).1;
    let sec = &default["spec"]["initContainers"][0]["securityContext"];
    assert_eq!(
        (&sec["runAsUser"], &sec["runAsGroup"]),
        (&json!(65532), &json!(65532))
    );
    for style in ["native", "classic"] {
        let c = cfg(|a| {
            a.sidecar_run_as_user = Some(RunAsUser::Word("platform".into()));
            a.sidecar_style = Some(style.into());
        });
        let (_, out) = run(&pod(json!({})), &c);
        let sidecars = out["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .chain(out["spec"]["containers"].as_array())
            .flatten()
            .filter(|c| {
                c["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("tokenvend-sidecar"))
            });
        let mut seen = 0;
        for sc in sidecars {
            seen += 1;
            let sec = sc["securityContext"].as_object().expect("securityContext");
            assert!(
                !sec.contains_key("runAsUser") && !sec.contains_key("runAsGroup"),
                "{style}: {sec:?}"
            );
            assert_eq!(sec["runAsNonRoot"], json!(true));
            assert_eq!(sec["readOnlyRootFilesystem"], json!(true));
            assert_eq!(sec["capabilities"]["drop"], json!(["ALL"]));
        }
        assert_eq!(seen, if style == "native" { 1 } else { 2 }, "{style}");
    }
}

#[test]
fn native_sidecar_is_hardened_and_gated_by_a_startup_probe() {
    let (_, out) = run(&pod(json!({})), &Config::default());
    let sc = &out["spec"]["initContainers"][0];
    let sec = &sc["securityContext"];
    assert_eq!(sec["runAsNonRoot"], json!(true));
    assert_eq!(sec["readOnlyRootFilesystem"], json!(true));
    assert_eq!(sec["allowPrivilegeEscalation"], json!(false));
    assert_eq!(sec["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sec["seccompProfile"]["type"], json!("RuntimeDefault"));
    assert_eq!(
        sc["resources"]["requests"],
        json!({"cpu": "10m", "memory": "16Mi"})
    );
    assert_eq!(
        sc["resources"]["limits"],
        json!({"cpu": "100m", "memory": "32Mi"})
    );
    let probe = &sc["startupProbe"];
    let cmd: Vec<&str> = probe["exec"]["command"]
        .as_array()
        .expect("cmd")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(cmd[..2], ["/usr/local/bin/tokenvend-sidecar", "probe"]);
    assert!(cmd.windows(2).any(|w| w == ["--min-valid-seconds", "300"]));
    assert_eq!(probe["periodSeconds"], json!(1));
    // The sidecar mounts the SA token read-only and the shared dir read-write; apps get no SA token.
    let mounts = sc["volumeMounts"].as_array().expect("mounts");
    assert_eq!(mounts[0]["readOnly"], json!(true));
    assert_eq!(mounts[1]["readOnly"], json!(false));
    assert!(
        !out["spec"]["containers"][0]["volumeMounts"]
            .to_string()
            .contains("tokenvend-sa-token")
    );
    assert!(sc.get("env").is_none(), "no CA configured: no env");
    let exp = &out["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"];
    assert_eq!(exp, &json!(3600));
    assert_eq!(
        out["spec"]["volumes"][1]["emptyDir"],
        json!({"medium": "Memory", "sizeLimit": "1Mi"})
    );
}

#[test]
fn classic_style_adds_an_init_container_and_a_regular_sidecar() {
    let c = cfg(|a| a.sidecar_style = Some("classic".into()));
    let p = pod(json!({"spec": {"initContainers": [{"name": "migrate", "image": "m:1"}]}}));
    let (m, out) = run(&p, &c);
    let inits = out["spec"]["initContainers"].as_array().expect("inits");
    assert_eq!(inits[0]["name"], json!("tokenvend-sidecar-init"));
    assert!(
        inits[0]["args"]
            .as_array()
            .expect("args")
            .contains(&json!("--once"))
    );
    assert!(inits[0].get("restartPolicy").is_none() && inits[0].get("startupProbe").is_none());
    assert_eq!(inits[1]["name"], json!("migrate"));
    assert!(
        env_names(&inits[1]).contains(&"AWS_ROLE_ARN".to_owned()),
        "user init containers get env"
    );
    let containers = out["spec"]["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[1]["name"], json!("tokenvend-sidecar"));
    assert!(
        !containers[1]["args"]
            .as_array()
            .expect("args")
            .contains(&json!("--once"))
    );
    assert!(!m.patch.is_empty());
    assert!(
        !m.warnings.iter().any(|w| w.contains("restartPolicy")),
        "{:?}",
        m.warnings
    );
    let (again, _) = run(&out, &c);
    assert!(again.patch.is_empty(), "idempotent: {:?}", again.patch);

    // Run-to-completion pods: the regular sidecar would keep them running for ever.
    for (policy, style, warned) in [
        ("Never", "classic", true),
        ("OnFailure", "classic", true),
        ("Always", "classic", false),
        ("Never", "native", false),
    ] {
        let c = cfg(|a| a.sidecar_style = Some(style.into()));
        let (m, out) = run(&pod(json!({"spec": {"restartPolicy": policy}})), &c);
        let w = m.warnings.join("\n");
        assert_eq!(
            w.contains(&format!("restartPolicy {policy} with sidecarStyle classic")),
            warned,
            "{policy}/{style}: {w}"
        );
        assert!(w.contains("never completes") == warned, "{w}");
        let (again, _) = run(&out, &c);
        assert!(
            again.warnings.is_empty() && again.patch.is_empty(),
            "{:?}",
            again.warnings
        );
    }

    // Credentials mode: the regular sidecar goes first, and its postStart hook holds the app
    // back until the endpoint serves; kubectl keeps defaulting to the app.
    for (mode, style, first) in [
        ("credentials", "classic", true),
        ("web-identity", "classic", false),
        ("credentials", "native", false),
    ] {
        let c = cfg(|a| a.sidecar_style = Some(style.into()));
        let p = pod(json!({"metadata": {"annotations": {"tremolo.io/aws-mode": mode}}}));
        let (m, out) = run(&p, &c);
        let containers = out["spec"]["containers"].as_array().expect("containers");
        let (sidecar, app) = if first {
            (containers.first(), &containers[1])
        } else {
            (containers.get(1), &containers[0])
        };
        assert_eq!(app["name"], json!("app"), "{mode}/{style}");
        let aws_env = |c: &Value| env_names(c).iter().any(|n| n.starts_with("AWS_"));
        assert!(aws_env(app), "the app's env reached the app: {out}");
        let hooks: Vec<&Value> = containers
            .iter()
            .filter_map(|c| c.get("lifecycle"))
            .collect();
        let default_container = out["metadata"]["annotations"].get(DEFAULT_CONTAINER);
        if first {
            let sidecar = sidecar.expect("sidecar");
            assert_eq!(sidecar["name"], json!("tokenvend-sidecar"));
            assert_eq!(
                hooks,
                [&json!({"postStart": {"exec": {"command": [
                    "/usr/local/bin/tokenvend-sidecar", "wait",
                    "--out-dir", "/var/run/secrets/tremolo.io/aws",
                    "--listen", "127.0.0.1:9911", "--wait-seconds", "60"
                ]}}})]
            );
            assert!(!aws_env(sidecar), "and not the sidecar: {out}");
            assert_eq!(default_container, Some(&json!("app")));
        } else {
            assert!(hooks.is_empty(), "{mode}/{style}: {hooks:?}");
            assert_eq!(default_container, None, "{mode}/{style}");
        }
        assert!(
            !m.warnings.iter().any(|w| w.contains("connection refused")),
            "no start-up gap left to warn of: {:?}",
            m.warnings
        );
        let (again, _) = run(&out, &c);
        assert!(
            again.warnings.is_empty() && again.patch.is_empty(),
            "{:?} {:?}",
            again.warnings,
            again.patch
        );
    }
    // A pod that names its own default container keeps it.
    let c = cfg(|a| a.sidecar_style = Some("classic".into()));
    let p = pod(json!({"metadata": {"annotations": {
        "tremolo.io/aws-mode": "credentials",
        DEFAULT_CONTAINER: "debug"
    }}, "spec": {"containers": [{"name": "app", "image": "app:1"}, {"name": "debug", "image": "d:1"}]}}));
    let (_, out) = run(&p, &c);
    assert_eq!(
        out["metadata"]["annotations"][DEFAULT_CONTAINER],
        json!("debug")
    );
    assert_eq!(
        out["spec"]["containers"][0]["name"],
        json!("tokenvend-sidecar")
    );
}

#[test]
fn second_pass_over_own_output_is_empty_in_every_mode_and_style() {
    for style in ["native", "classic"] {
        for mode in Mode::ALL {
            let c = cfg(|a| {
                a.sidecar_style = Some(style.into());
                a.region = Some("us-east-1".into());
            });
            let p = pod(json!({
                "metadata": {"annotations": {"tremolo.io/aws-mode": mode.as_str()}},
                "spec": {"initContainers": [{"name": "i", "image": "i"}], "volumes": [{"name": "data", "emptyDir": {}}]}
            }));
            let (m, out) = run(&p, &c);
            assert!(!m.patch.is_empty());
            let (again, out2) = run(&out, &c);
            assert!(again.patch.is_empty(), "{style}/{mode}: {:?}", again.patch);
            assert!(
                again.warnings.is_empty(),
                "{style}/{mode}: {:?}",
                again.warnings
            );
            assert_eq!(out, out2);
        }
    }
}

#[test]
fn a_sidecar_from_an_earlier_sidecar_image_is_kept_not_refused() {
    // Another webhook changed the pod after ours, so the API server calls ours again, and a
    // rolling upgrade to a new sidecarImage answers that second call from a new replica.
    for style in ["native", "classic"] {
        for mode in [Mode::WebIdentity, Mode::Credentials] {
            let image = |img: &'static str| {
                cfg(move |a| {
                    a.sidecar_style = Some(style.into());
                    a.sidecar_image = Some(img.into());
                })
            };
            let (old, new) = (image("sidecar:1"), image("sidecar:2"));
            let p =
                pod(json!({"metadata": {"annotations": {"tremolo.io/aws-mode": mode.as_str()}}}));
            let (_, once) = run(&p, &old);
            let (again, out) = run(&once, &new);
            assert!(again.patch.is_empty(), "{style}/{mode}: {:?}", again.patch);
            assert_eq!(out, once);
            let w = again.warnings.join("\n");
            assert!(
                w.contains("runs image \"sidecar:1\", not the configured \"sidecar:2\""),
                "{style}/{mode}: {w}"
            );
        }
    }
}

#[test]
fn windows_pods_are_refused_a_linux_sidecar_and_pointed_to_projected_mode() {
    for windows in [
        json!({"os": {"name": "windows"}}),
        json!({"nodeSelector": {"kubernetes.io/os": "windows"}}),
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/os", "operator": "In", "values": ["windows"]}
            ]}]
        }}}}),
    ] {
        for mode in [Mode::WebIdentity, Mode::Credentials] {
            let mut extra =
                json!({"metadata": {"annotations": {"tremolo.io/aws-mode": mode.as_str()}}});
            extra["spec"] = windows.clone();
            let p = pod(extra);
            let d = mutate(&typed(&p), &Config::default()).expect_err("denied");
            assert!(
                d.message.contains("runs on Windows")
                    && d.message.contains("tremolo.io/aws-mode: projected"),
                "{}",
                d.message
            );
            let (m, out) = run(&p, &cfg(|a| a.deny_on_invalid = Some(false)));
            admitted_without_plumbing(&m, &out, &p);
            assert!(m.warnings.iter().any(|w| w.contains("runs on Windows")));
        }
        // Projected mode has no sidecar: the pod is mutated as on Linux.
        let mut extra = json!({"metadata": {"annotations": {"tremolo.io/aws-mode": "projected"}}});
        extra["spec"] = windows;
        let (_, out) = run(&pod(extra), &Config::default());
        assert!(
            env_names(&out["spec"]["containers"][0])
                .contains(&"AWS_WEB_IDENTITY_TOKEN_FILE".to_owned())
        );
    }
}

#[test]
fn pods_on_their_nodes_dns_are_warned_that_the_sidecar_cannot_resolve_the_exchange() {
    fn dns_warnings(m: &Mutation) -> Vec<&String> {
        m.warnings
            .iter()
            .filter(|w| w.contains("node's DNS"))
            .collect()
    }
    // (mode, spec, exchange URL, the dnsPolicy the warning asks for; None: no warning)
    let svc = "https://tokenvend-sts.tokenvend.svc";
    let cases: Vec<(&str, Value, &str, Option<&str>)> = vec![
        // The API server defaults dnsPolicy to ClusterFirst before admission; a test pod may
        // lack it, which means the same.
        (
            "web-identity",
            json!({"hostNetwork": true}),
            svc,
            Some("ClusterFirstWithHostNet"),
        ),
        (
            "credentials",
            json!({"hostNetwork": true, "dnsPolicy": "ClusterFirst"}),
            svc,
            Some("ClusterFirstWithHostNet"),
        ),
        (
            "web-identity",
            json!({"hostNetwork": true, "dnsPolicy": "Default"}),
            svc,
            Some("ClusterFirstWithHostNet"),
        ),
        (
            "web-identity",
            json!({"dnsPolicy": "Default"}),
            svc,
            Some("ClusterFirst"),
        ),
        (
            "web-identity",
            json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}),
            svc,
            None,
        ),
        (
            "web-identity",
            json!({"dnsPolicy": "ClusterFirst"}),
            svc,
            None,
        ),
        (
            "web-identity",
            json!({"hostNetwork": true, "dnsPolicy": "None"}),
            svc,
            None,
        ),
        // No sidecar, nothing to resolve in the cluster.
        ("projected", json!({"hostNetwork": true}), svc, None),
        // Names and addresses a node resolves or needs no DNS for.
        (
            "web-identity",
            json!({"hostNetwork": true}),
            "https://sts.platform.example.com",
            None,
        ),
        (
            "web-identity",
            json!({"hostNetwork": true}),
            "https://10.96.0.20:8000",
            None,
        ),
        (
            "web-identity",
            json!({"hostNetwork": true}),
            "https://[fd00::20]:8000",
            None,
        ),
        (
            "web-identity",
            json!({"hostNetwork": true}),
            "http://localhost:8000",
            None,
        ),
        // Only the cluster resolves these.
        (
            "web-identity",
            json!({"hostNetwork": true}),
            "https://tokenvend-sts.tokenvend.svc.cluster.local:443/",
            Some("ClusterFirstWithHostNet"),
        ),
        (
            "credentials",
            json!({"dnsPolicy": "Default"}),
            "http://tokenvend-sts:8000",
            Some("ClusterFirst"),
        ),
    ];
    for (mode, spec, url, fix) in cases {
        let p =
            pod(json!({"metadata": {"annotations": {"tremolo.io/aws-mode": mode}}, "spec": spec}));
        let (m, out) = run(&p, &cfg(|a| a.exchange_url = Some(url.into())));
        let found = dns_warnings(&m);
        let case = format!("{mode} {} {url}", p["spec"]);
        match fix {
            None => assert!(found.is_empty(), "{case}: {found:?}"),
            Some(fix) => {
                let host = url
                    .split("://")
                    .nth(1)
                    .and_then(|r| r.split([':', '/']).next());
                assert_eq!(found.len(), 1, "{case}: {:?}", m.warnings);
                let w = found[0];
                assert!(
                    w.contains(&format!("set dnsPolicy: {fix}"))
                        && w.contains(host.expect("host"))
                        && w.contains("stays in Init"),
                    "{case}: {w}"
                );
            }
        }
        // A warning, not a refusal: the pod is mutated all the same.
        assert!(
            out["spec"]["containers"][0]["env"].as_array().is_some(),
            "{case}"
        );
    }
}

#[test]
fn a_container_declaring_the_credentials_port_is_refused_in_credentials_mode() {
    // (mode, style, containers, init containers, credentialsPort, refused naming)
    let app = |ports: Value| json!({"name": "app", "image": "app:1", "ports": ports});
    let plain = json!({"name": "app", "image": "app:1"});
    let tcp = |port: u16| json!([{"containerPort": port}]);
    let setup = json!({"name": "setup", "image": "s:1", "ports": [{"containerPort": 9911}]});
    let mesh = json!({"name": "istio-proxy", "image": "p:1", "restartPolicy": "Always"});
    let proxy = json!({"name": "proxy", "image": "p:1", "restartPolicy": "Always",
                       "ports": [{"containerPort": 9911}]});
    for (what, mode, style, containers, inits, port, want) in [
        (
            "the app listens on the default port",
            "credentials",
            "native",
            vec![app(tcp(9911))],
            vec![],
            None,
            Some("\"app\" declares port 9911"),
        ),
        (
            "explicitly TCP, among other ports",
            "credentials",
            "native",
            vec![app(json!([
                {"containerPort": 8080, "name": "http"},
                {"containerPort": 9911, "protocol": "TCP"}
            ]))],
            vec![],
            None,
            Some("\"app\" declares port 9911"),
        ),
        (
            "a native sidecar of the pod's own",
            "credentials",
            "native",
            vec![plain.clone()],
            vec![proxy.clone()],
            None,
            Some("\"proxy\" declares port 9911"),
        ),
        (
            "the configured port",
            "credentials",
            "native",
            vec![app(tcp(9999))],
            vec![],
            Some(9999),
            Some("\"app\" declares port 9999"),
        ),
        (
            "another port",
            "credentials",
            "native",
            vec![app(tcp(8080))],
            vec![],
            None,
            None,
        ),
        (
            "UDP on that port",
            "credentials",
            "native",
            vec![app(json!([{"containerPort": 9911, "protocol": "UDP"}]))],
            vec![],
            None,
            None,
        ),
        (
            "web-identity mode has no endpoint",
            "web-identity",
            "native",
            vec![app(tcp(9911))],
            vec![],
            None,
            None,
        ),
        (
            "an init container running beside the native sidecar",
            "credentials",
            "native",
            vec![plain.clone()],
            vec![setup.clone()],
            None,
            Some("\"setup\" declares port 9911"),
        ),
        (
            "an init container done before the native sidecar starts (after the mesh's)",
            "credentials",
            "native",
            vec![plain.clone()],
            vec![setup.clone(), mesh.clone()],
            None,
            None,
        ),
        (
            "an init container in classic style, done before the endpoint starts",
            "credentials",
            "classic",
            vec![plain.clone()],
            vec![setup.clone()],
            None,
            None,
        ),
        (
            "a native sidecar of the pod's own in classic style",
            "credentials",
            "classic",
            vec![plain.clone()],
            vec![proxy.clone()],
            None,
            Some("\"proxy\" declares port 9911"),
        ),
    ] {
        let c = cfg(|a| {
            a.credentials_port = port;
            a.sidecar_style = Some(style.into());
        });
        let mut p = pod(json!({
            "metadata": {"annotations": {"tremolo.io/aws-mode": mode}},
            "spec": {"containers": containers}
        }));
        if !inits.is_empty() {
            p["spec"]["initContainers"] = json!(inits);
        }
        match want {
            Some(named) => {
                let d = mutate(&typed(&p), &c).expect_err(what);
                assert!(
                    d.message.contains(named)
                        && d.message.contains("credentials endpoint listens")
                        && d.message.contains("tremolo.io/aws-mode: web-identity"),
                    "{what}: {}",
                    d.message
                );
                let (m, out) = run(
                    &p,
                    &cfg(|a| {
                        a.credentials_port = port;
                        a.sidecar_style = Some(style.into());
                        a.deny_on_invalid = Some(false);
                    }),
                );
                admitted_without_plumbing(&m, &out, &p);
            }
            None => {
                let (m, out) = run(&p, &c);
                assert!(m.plumbed, "{what}: {:?}", m.warnings);
                let again = mutate(&typed(&out), &c).expect("second pass");
                assert!(again.patch.is_empty(), "{what}");
            }
        }
    }
}

#[test]
fn a_root_pod_is_refused_when_the_sidecar_would_inherit_its_uid() {
    use tokenvend_webhook::config::RunAsUser;
    let platform = |deny: bool| {
        cfg(move |a| {
            a.sidecar_run_as_user = Some(RunAsUser::Word("platform".into()));
            a.deny_on_invalid = Some(deny);
        })
    };
    let root = |mode: &str| {
        pod(json!({
            "metadata": {"annotations": {"tremolo.io/aws-mode": mode}},
            "spec": {"securityContext": {"runAsUser": 0}}
        }))
    };
    for mode in ["web-identity", "credentials"] {
        let p = root(mode);
        let d = mutate(&typed(&p), &platform(true)).expect_err("denied");
        assert!(
            d.message.contains("runAsUser: 0")
                && d.message.contains("sidecarRunAsUser: platform")
                && d.message.contains("instead of on the pod"),
            "{}",
            d.message
        );
        let (m, out) = run(&p, &platform(false));
        admitted_without_plumbing(&m, &out, &p);
        assert!(m.warnings.iter().any(|w| w.contains("runs as root")));
        // With a UID of its own, the sidecar does not inherit the pod's.
        let (_, out) = run(&p, &Config::default());
        assert_eq!(
            out["spec"]["initContainers"][0]["securityContext"]["runAsUser"],
            json!(65532)
        );
    }
    // Projected mode has no sidecar; a non-root pod UID is what OpenShift assigns anyway.
    run(&root("projected"), &platform(true));
    run(
        &pod(json!({"spec": {"securityContext": {"runAsUser": 1000680000}}})),
        &platform(true),
    );
}

#[test]
fn credentials_mode_warns_about_variables_sdks_read_before_its_endpoint() {
    let with_env = |mode: &str, names: &[&str]| {
        let env: Vec<Value> = names
            .iter()
            .map(|n| json!({"name": n, "value": "/somewhere"}))
            .collect();
        pod(json!({
            "metadata": {"annotations": {"tremolo.io/aws-mode": mode}},
            "spec": {"containers": [{"name": "app", "image": "app:1", "env": env}]}
        }))
    };
    let shadow = |m: &Mutation| -> Vec<String> {
        m.warnings
            .iter()
            .filter(|w| w.contains("SDKs use it before the injected role"))
            .cloned()
            .collect()
    };
    // What another webhook (EKS's IRSA one, say) or the team left in the container.
    let p = with_env(
        "credentials",
        &[
            "AWS_ROLE_ARN",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        ],
    );
    let (m, _) = run(&p, &Config::default());
    assert_eq!(
        shadow(&m),
        [
            "container \"app\" sets AWS_WEB_IDENTITY_TOKEN_FILE: SDKs use it before the injected role",
            "container \"app\" sets AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: SDKs use it before the injected role",
        ]
    );
    // In web-identity mode the token file is ours (kept with its own warning) and the
    // container endpoint comes after it.
    let p = with_env("web-identity", &["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"]);
    assert!(shadow(&run(&p, &Config::default()).0).is_empty());
}

#[test]
fn user_settings_are_never_overwritten() {
    let p = pod(json!({"spec": {"containers": [{
        "name": "app", "image": "app:1",
        "env": [{"name": "AWS_REGION", "value": "ap-south-1"}, {"name": "AWS_ACCESS_KEY_ID", "value": "AKIA"}],
        "envFrom": [{"configMapRef": {"name": "settings"}}]
    }]}}));
    let (m, out) = run(&p, &cfg(|a| a.region = Some("eu-west-1".into())));
    let env = env_of(&out["spec"]["containers"][0]);
    assert_eq!(env[0], ("AWS_REGION".to_owned(), json!("ap-south-1")));
    assert_eq!(env.iter().filter(|(n, _)| n == "AWS_REGION").count(), 1);
    assert!(
        env.iter()
            .any(|(n, v)| n == "AWS_DEFAULT_REGION" && v == "eu-west-1")
    );
    let w = m.warnings.join("\n");
    assert!(
        w.contains("\"app\" sets AWS_REGION itself: kept its value"),
        "{w}"
    );
    assert!(w.contains("sets AWS_ACCESS_KEY_ID"), "{w}");
    assert!(w.contains("uses envFrom"), "{w}");
    assert!(
        !w.contains("AKIA") && !w.contains("ap-south-1"),
        "warnings never echo values"
    );
}

#[test]
fn conflicts_deny_or_warn_and_never_clobber() {
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"spec": {"volumes": [{"name": "tokenvend-aws", "hostPath": {"path": "/tmp"}}]}}),
            "volume named \"tokenvend-aws\"",
        ),
        (
            json!({"spec": {"volumes": [{"name": "tokenvend-sa-token", "secret": {"secretName": "s"}}]}}),
            "volume named \"tokenvend-sa-token\"",
        ),
        (
            json!({"spec": {"containers": [{"name": "app", "image": "a", "volumeMounts": [{"name": "data", "mountPath": "/var/run/secrets/tremolo.io/aws"}]}], "volumes": [{"name": "data", "emptyDir": {}}]}}),
            "\"app\" already mounts volume \"data\" at /var/run/secrets/tremolo.io/aws",
        ),
        (
            json!({"spec": {"initContainers": [{"name": "tokenvend-sidecar", "image": "other:1"}]}}),
            "container named \"tokenvend-sidecar\" with another image",
        ),
        (
            json!({"spec": {"containers": [{"name": "tokenvend-sidecar", "image": "x"}]}}),
            "container named \"tokenvend-sidecar\"",
        ),
    ];
    let warn_cfg = cfg(|a| a.deny_on_invalid = Some(false));
    for (extra, expected) in cases {
        let p = pod(extra);
        let d = mutate(&typed(&p), &Config::default()).expect_err(expected);
        assert!(
            d.message.contains(expected),
            "{} lacks {expected}",
            d.message
        );
        let (m, out) = run(&p, &warn_cfg);
        admitted_without_plumbing(&m, &out, &p);
        assert!(m.warnings.iter().any(|w| w.contains(expected)));
    }
}

#[test]
fn skip_list_ephemeral_containers_and_init_order() {
    let p = pod(json!({
        "metadata": {"annotations": {"tremolo.io/aws-skip-containers": " proxy , ghost,"}},
        "spec": {
            "containers": [{"name": "app", "image": "a"}, {"name": "proxy", "image": "p"}],
            "initContainers": [{"name": "mesh", "image": "m", "restartPolicy": "Always"}],
            "ephemeralContainers": [{"name": "debug", "image": "busybox"}]
        }
    }));
    let (m, out) = run(&p, &Config::default());
    let spec = &out["spec"];
    assert!(env_names(&spec["containers"][0]).contains(&"AWS_ROLE_ARN".to_owned()));
    assert_eq!(
        spec["containers"][1],
        json!({"name": "proxy", "image": "p"}),
        "skipped container untouched"
    );
    assert_eq!(
        spec["initContainers"][0]["name"],
        json!("tokenvend-sidecar")
    );
    assert_eq!(spec["initContainers"][1]["name"], json!("mesh"));
    assert!(env_names(&spec["initContainers"][1]).contains(&"AWS_ROLE_ARN".to_owned()));
    assert_eq!(
        spec["ephemeralContainers"],
        json!([{"name": "debug", "image": "busybox"}])
    );
    let w = m.warnings.join("\n");
    assert!(w.contains("\"ghost\", which is not a container"), "{w}");
    assert!(w.contains("ephemeral containers are left unchanged"), "{w}");
    assert!(!w.contains("\"proxy\", which"), "{w}");

    let all = pod(json!({"metadata": {"annotations": {"tremolo.io/aws-skip-containers": "app"}}}));
    let (m, _) = run(&all, &Config::default());
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("skips every container"))
    );
}

#[test]
fn default_mode_is_announced_and_custom_prefix_is_honoured() {
    let mut p = pod(json!({}));
    p["metadata"]["annotations"]
        .as_object_mut()
        .expect("ann")
        .remove("tremolo.io/aws-mode");
    let (m, _) = run(&p, &cfg(|a| a.default_mode = Some("credentials".into())));
    assert_eq!(m.mode, Some(Mode::Credentials));
    assert!(
        m.warnings[0].contains("using the default mode credentials"),
        "{:?}",
        m.warnings
    );

    let custom = cfg(|a| a.prefix = Some("aws.example.com".into()));
    // A tremolo.io label reaches a webhook of another prefix only through selectors that
    // disagree with its --prefix: refused, naming both keys, rather than admitted bare.
    let denied = mutate(&typed(&p), &custom).expect_err("selectors and prefix disagree");
    assert_eq!(
        denied.message,
        "tokenvend: pod is labelled tremolo.io/aws-role=\"true\" but this webhook reads the prefix \
         aws.example.com (--prefix), so it looks for aws.example.com/aws-role: the \
         MutatingWebhookConfiguration's label keys and --prefix disagree, and no pod gets AWS \
         credentials until they agree (ask the cluster admin)"
    );
    let lenient = cfg(|a| {
        a.prefix = Some("aws.example.com".into());
        a.deny_on_invalid = Some(false);
    });
    let (m, out) = run(&p, &lenient);
    assert!(
        !m.plumbed,
        "tremolo.io label does not opt in under another prefix"
    );
    assert!(
        out["metadata"]["annotations"]["aws.example.com/aws-warnings"]
            .as_str()
            .is_some_and(|w| w.contains("label keys and --prefix disagree")),
        "the reason is recorded on the pod: {out}"
    );
    // Opted out under the other prefix, or no such label: nothing to say.
    for labels in [
        json!({"tremolo.io/aws-role": "false"}),
        json!({"app": "x", "aws-role": "true"}),
    ] {
        let mut q = p.clone();
        q["metadata"]["labels"] = labels;
        let (m, _) = run(&q, &custom);
        assert!(m.patch.is_empty() && m.warnings.is_empty(), "{q}: {m:?}");
    }
    let q = json!({
        "metadata": {"name": "x1", "labels": {"aws.example.com/aws-role": "true"},
                     "annotations": {"aws.example.com/aws-role": ROLE, "aws.example.com/aws-mode": "projected"}},
        "spec": {"containers": [{"name": "app", "image": "a"}]}
    });
    let (m, _) = run(&q, &custom);
    assert_eq!(m.mode, Some(Mode::Projected));
}

#[test]
fn session_name_rule() {
    assert_eq!(session_name_from("web-0"), "web-0");
    assert_eq!(session_name_from("a"), "pod-a");
    let long = "x".repeat(100);
    let s = session_name_from(&long);
    assert_eq!(s.len(), 64);
    assert!(s.starts_with(&"x".repeat(55)));
    assert_ne!(
        s,
        session_name_from(&"x".repeat(101)),
        "hash keeps long names distinct"
    );
    // generateName-only pods read their final name through the downward API.
    let mut p = pod(json!({"metadata": {"generateName": "web-7d9f8-"}}));
    p["metadata"].as_object_mut().expect("meta").remove("name");
    let (_, out) = run(&p, &Config::default());
    let env = out["spec"]["containers"][0]["env"].as_array().expect("env");
    let session = env
        .iter()
        .find(|e| e["name"] == "AWS_ROLE_SESSION_NAME")
        .expect("session var");
    assert_eq!(
        session["valueFrom"]["fieldRef"]["fieldPath"],
        json!("metadata.name")
    );
}

#[test]
fn credentials_on_host_network_warns_and_ca_is_injected() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = dir.path().join("ca.pem");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["ca".into()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    std::fs::write(&ca, cert.pem()).expect("write");
    let c = cfg(|a| a.exchange_ca_file = Some(ca.clone()));
    let p = pod(
        json!({"metadata": {"annotations": {"tremolo.io/aws-mode": "credentials"}}, "spec": {"hostNetwork": true}}),
    );
    let (m, out) = run(&p, &c);
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("hostNetwork") && w.contains("second such pod on this node")),
        "{:?}",
        m.warnings
    );
    let sc_env = &out["spec"]["initContainers"][0]["env"][0];
    assert_eq!(sc_env["name"], json!("TOKENVEND_CA_PEM"));
    assert_eq!(sc_env["value"], json!(cert.pem()));
}

#[test]
fn the_sidecar_starts_after_a_mesh_proxy_that_runs_as_a_native_sidecar() {
    // A mesh whose CNI plugin captures outbound traffic before any container starts sends the
    // sidecar's exchanges to its proxy; the sidecar must start after it, or the pod never leaves
    // Init. Init containers are (name, restartPolicy Always?); the expected init container names
    // after mutation.
    let native = |n: &str| json!({"name": n, "image": "proxy:1", "restartPolicy": "Always"});
    let plain = |n: &str| json!({"name": n, "image": "init:1"});
    let ours = "tokenvend-sidecar";
    let default = Config::default();
    let consul = cfg(|a| a.sidecar_starts_after = Some(" consul-dataplane ,".into()));
    let none = cfg(|a| a.sidecar_starts_after = Some(String::new()));
    let classic = cfg(|a| a.sidecar_style = Some("classic".into()));
    for (what, inits, c, want) in [
        ("no init containers", vec![], &default, vec![ours]),
        (
            "Istio with its CNI plugin, native sidecars",
            vec![
                plain("istio-validation"),
                native("istio-proxy"),
                plain("migrate"),
            ],
            &default,
            vec!["istio-validation", "istio-proxy", ours, "migrate"],
        ),
        (
            "Istio without CNI, native sidecars",
            vec![plain("istio-init"), native("istio-proxy")],
            &default,
            vec!["istio-init", "istio-proxy", ours],
        ),
        (
            "Linkerd, native sidecar",
            vec![plain("linkerd-network-validator"), native("linkerd-proxy")],
            &default,
            vec!["linkerd-network-validator", "linkerd-proxy", ours],
        ),
        (
            "a proxy's name on a plain init container: first, as always",
            vec![plain("istio-proxy"), plain("migrate")],
            &default,
            vec![ours, "istio-proxy", "migrate"],
        ),
        (
            "another native sidecar: first, so it gets credentials from its start",
            vec![
                native("log-shipper"),
                native("istio-proxy"),
                native("metrics"),
            ],
            &default,
            vec!["log-shipper", "istio-proxy", ours, "metrics"],
        ),
        (
            "Kuma, with kuma-sidecar as a native sidecar",
            vec![native("kuma-sidecar"), plain("migrate")],
            &default,
            vec!["kuma-sidecar", ours, "migrate"],
        ),
        (
            "a configured name, which replaces the default list",
            vec![native("consul-dataplane"), native("istio-proxy")],
            &consul,
            vec!["consul-dataplane", ours, "istio-proxy"],
        ),
        (
            "none configured",
            vec![plain("istio-validation"), native("istio-proxy")],
            &none,
            vec![ours, "istio-validation", "istio-proxy"],
        ),
        (
            "classic style: its init container follows the proxy too",
            vec![plain("istio-validation"), native("istio-proxy")],
            &classic,
            vec!["istio-validation", "istio-proxy", "tokenvend-sidecar-init"],
        ),
    ] {
        let mut p = pod(json!({}));
        if !inits.is_empty() {
            p["spec"]["initContainers"] = Value::Array(inits);
        }
        let (m, out) = run(&p, c);
        let names: Vec<&str> = out["spec"]["initContainers"]
            .as_array()
            .expect("init containers")
            .iter()
            .map(|c| c["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, want, "{what}");
        assert!(ops(&m).iter().all(|op| op == "add"), "{what}");
        // Every init container before and after it still gets the app's env.
        for c in out["spec"]["initContainers"].as_array().expect("inits") {
            let n = c["name"].as_str().unwrap_or_default();
            if !n.starts_with(ours) {
                assert!(
                    env_names(c).contains(&"AWS_ROLE_ARN".to_owned()),
                    "{what}: {n}"
                );
            }
        }
        let again = mutate(&typed(&out), c).expect("second pass");
        assert!(
            again.patch.is_empty(),
            "{what}: second pass {:?}",
            again.patch
        );
    }
}

#[test]
fn a_mesh_that_captures_traffic_before_its_regular_proxy_starts_is_warned_about() {
    let container = |n: &str| json!({"name": n, "image": "img:1"});
    let native = |n: &str| json!({"name": n, "image": "img:1", "restartPolicy": "Always"});
    let istio_uid = cfg(|a| a.sidecar_run_as_user = Some(RunAsUser::Uid(1337)));
    let linkerd_uid = cfg(|a| a.sidecar_run_as_user = Some(RunAsUser::Uid(2102)));
    let kuma_uid = cfg(|a| a.sidecar_run_as_user = Some(RunAsUser::Uid(5678)));
    let default = Config::default();
    // (what, init containers, containers, mode, config, warned about (proxy, check))
    for (what, inits, containers, mode, c, want) in [
        (
            "Istio with CNI, proxy a regular container",
            vec![container("istio-validation")],
            vec![container("app"), container("istio-proxy")],
            "web-identity",
            &default,
            Some(("istio-proxy", "istio-validation")),
        ),
        (
            "Linkerd with CNI, proxy a regular container, credentials mode",
            vec![container("linkerd-network-validator")],
            vec![container("linkerd-proxy"), container("app")],
            "credentials",
            &default,
            Some(("linkerd-proxy", "linkerd-network-validator")),
        ),
        (
            "Kuma with CNI, proxy a regular container",
            vec![container("kuma-validation")],
            vec![container("app"), container("kuma-sidecar")],
            "web-identity",
            &default,
            Some(("kuma-sidecar", "kuma-validation")),
        ),
        (
            "Kuma without CNI: kuma-init captures from its turn on, after the sidecar",
            vec![container("kuma-init")],
            vec![container("app"), container("kuma-sidecar")],
            "credentials",
            &default,
            None,
        ),
        (
            "Istio without CNI: istio-init, last of the init containers, captures after the sidecar",
            vec![container("istio-init")],
            vec![container("app"), container("istio-proxy")],
            "web-identity",
            &default,
            None,
        ),
        (
            "Istio with CNI, native proxy: the sidecar is placed after it",
            vec![container("istio-validation"), native("istio-proxy")],
            vec![container("app")],
            "web-identity",
            &default,
            None,
        ),
        (
            "the sidecar runs as Istio's proxy UID",
            vec![container("istio-validation")],
            vec![container("app"), container("istio-proxy")],
            "web-identity",
            &istio_uid,
            None,
        ),
        (
            "the sidecar runs as Linkerd's proxy UID",
            vec![container("linkerd-network-validator")],
            vec![container("app"), container("linkerd-proxy")],
            "credentials",
            &linkerd_uid,
            None,
        ),
        (
            "the sidecar runs as Kuma's proxy UID",
            vec![container("kuma-validation")],
            vec![container("app"), container("kuma-sidecar")],
            "credentials",
            &kuma_uid,
            None,
        ),
        (
            "projected mode has no sidecar",
            vec![container("istio-validation")],
            vec![container("app"), container("istio-proxy")],
            "projected",
            &default,
            None,
        ),
    ] {
        let p = pod(json!({
            "metadata": {"annotations": {"tremolo.io/aws-mode": mode}},
            "spec": {"initContainers": inits, "containers": containers}
        }));
        let (m, _) = run(&p, c);
        let warned: Vec<&String> = m
            .warnings
            .iter()
            .filter(|w| w.contains("captures the pod's traffic"))
            .collect();
        match want {
            Some((proxy, check)) => {
                assert_eq!(warned.len(), 1, "{what}: {:?}", m.warnings);
                let w = warned[0];
                assert!(
                    w.contains(&format!("mesh proxy {proxy:?} is a regular container"))
                        && w.contains(&format!("({check:?} is its CNI plugin's check)"))
                        && w.contains("stays in Init")
                        && w.contains("Istio 1337, Linkerd 2102, Kuma 5678"),
                    "{what}: {w}"
                );
            }
            None => assert!(warned.is_empty(), "{what}: {warned:?}"),
        }
    }
}

/// The annotation the warnings are recorded in, for the default prefix.
const WARNINGS: &str = "tremolo.io/aws-warnings";
/// kubectl's default container, named on pods whose first container becomes the sidecar.
const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

#[test]
fn a_patched_pod_records_its_warnings_where_its_owner_can_read_them() {
    // A Deployment's pods are created by the ReplicaSet controller: the admission warnings go to
    // it, not to a person, so the pod itself says what the webhook had to say.
    let no_mode = |p: &mut Value| {
        p["metadata"]["annotations"]
            .as_object_mut()
            .expect("annotations")
            .remove("tremolo.io/aws-mode");
    };
    let many_missing: Vec<String> = (0..300).map(|i| format!("gone-{i:03}")).collect();
    struct Case {
        name: &'static str,
        pod: Value,
        cfg: Config,
        key: &'static str,
        /// The recorded text, when one is recorded.
        expect: Option<fn(&Mutation) -> String>,
    }
    let one_per_line = |m: &Mutation| m.warnings.join("\n");
    let mut cases = vec![
        Case {
            name: "no warnings: nothing recorded",
            pod: pod(json!({})),
            cfg: Config::default(),
            key: WARNINGS,
            expect: None,
        },
        Case {
            name: "default mode and a preset env var",
            pod: pod(
                json!({"spec": {"containers": [{"name": "app", "image": "app:1",
                "env": [{"name": "AWS_REGION", "value": "eu-west-1"}]}]}}),
            ),
            cfg: Config::default(),
            key: WARNINGS,
            expect: Some(one_per_line),
        },
        Case {
            name: "another prefix",
            pod: json!({"metadata": {"name": "p", "labels": {"aws.example.com/aws-role": "true"},
                "annotations": {"aws.example.com/aws-role": ROLE}},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]}}),
            cfg: cfg(|a| a.prefix = Some("aws.example.com".into())),
            key: "aws.example.com/aws-warnings",
            expect: Some(one_per_line),
        },
        Case {
            name: "an annotation already there is kept",
            pod: pod(json!({"metadata": {"annotations": {WARNINGS: "written by hand"}}})),
            cfg: Config::default(),
            key: WARNINGS,
            expect: None,
        },
        Case {
            name: "300 warnings: whole lines within 4 KiB, then a count",
            pod: pod(json!({"metadata": {"annotations": {
                "tremolo.io/aws-skip-containers": many_missing.join(",")}}})),
            cfg: Config::default(),
            key: WARNINGS,
            expect: Some(|m: &Mutation| {
                // The contract, not the algorithm: the first whole warnings, then how many are
                // left out, in 4 KiB; the next warning would not have fit beside 64 bytes kept
                // for that count.
                let n = m.warnings.len();
                let kept = (0..=n)
                    .rev()
                    .find(|&k| m.warnings[..k].join("\n").len() + 64 <= 4096)
                    .expect("some prefix fits");
                assert!(kept > 10 && kept < n, "{kept} of {n} recorded");
                format!(
                    "{}\n({} more warnings not recorded here)",
                    m.warnings[..kept].join("\n"),
                    n - kept
                )
            }),
        },
    ];
    no_mode(&mut cases[1].pod);
    for case in cases {
        let (m, out) = run(&case.pod, &case.cfg);
        let name = case.name;
        assert!(!m.patch.is_empty(), "{name}: the pod is patched");
        assert!(ops(&m).iter().all(|op| op == "add"), "{name}: add only");
        let before = case.pod["metadata"]["annotations"][case.key].clone();
        let after = &out["metadata"]["annotations"][case.key];
        match case.expect {
            None => assert_eq!(after, &before, "{name}: annotation untouched"),
            Some(expect) => {
                assert!(!m.warnings.is_empty(), "{name}: has warnings");
                let text = after.as_str().expect("recorded as a string");
                assert_eq!(text, expect(&m), "{name}");
                assert!(text.len() <= 4096, "{name}: {} bytes", text.len());
            }
        }
        if let Err(e) = common::valid_pod(&out) {
            panic!("{name}: {e}");
        }
        if let Err(e) = common::contained(&case.pod, &out, "") {
            panic!("{name}: an existing field changed: {e}");
        }
        // The second pass (reinvocation) adds nothing, the annotation included.
        let (again, _) = run(&out, &case.cfg);
        assert!(again.patch.is_empty(), "{name}: {:?}", again.patch);
    }
}

#[test]
fn warnings_that_would_overfill_the_pods_annotations_are_only_returned() {
    // Kubernetes refuses a pod whose annotations exceed 256 KiB: a pod near the limit is patched
    // without the record, and the warnings say so.
    let near = "x".repeat(256 * 1024 - 100);
    let mut p = pod(json!({"metadata": {"annotations": {"big": near}}}));
    p["metadata"]["annotations"]
        .as_object_mut()
        .expect("annotations")
        .remove("tremolo.io/aws-mode");
    let (m, out) = run(&p, &Config::default());
    assert!(!m.patch.is_empty(), "still patched");
    assert!(out["metadata"]["annotations"].get(WARNINGS).is_none());
    assert_eq!(m.warnings.len(), 2, "{:?}", m.warnings);
    assert!(
        m.warnings[1].contains("not recorded in the pod's tremolo.io/aws-warnings annotation")
            && m.warnings[1].contains("256 KiB"),
        "{:?}",
        m.warnings
    );
    // With room to spare the same pod gets the record.
    let mut p = p.clone();
    p["metadata"]["annotations"]["big"] = json!("x".repeat(1024));
    let (_, out) = run(&p, &Config::default());
    assert!(out["metadata"]["annotations"][WARNINGS].is_string());

    // Classic style in credentials mode also names kubectl's default container, in the same
    // room: first the warnings no longer fit after it, then neither does it.
    let c = cfg(|a| {
        a.sidecar_style = Some("classic".into());
        a.default_mode = Some("credentials".into());
    });
    let used = |p: &Value| -> usize {
        p["metadata"]["annotations"]
            .as_object()
            .expect("annotations")
            .iter()
            .map(|(k, v)| k.len() + v.as_str().expect("string").len())
            .sum()
    };
    p["metadata"]["annotations"]["big"] = json!("");
    let room = 256 * 1024 - used(&p);
    let (_, out) = run(&p, &c);
    let recorded = WARNINGS.len()
        + out["metadata"]["annotations"][WARNINGS]
            .as_str()
            .expect("recorded")
            .len();
    let named = DEFAULT_CONTAINER.len() + "app".len();
    // Exactly 256 KiB with both: both are added (Kubernetes refuses only more).
    p["metadata"]["annotations"]["big"] = json!("x".repeat(room - recorded - named));
    let (_, out) = run(&p, &c);
    assert_eq!(
        out["metadata"]["annotations"][DEFAULT_CONTAINER],
        json!("app")
    );
    assert!(out["metadata"]["annotations"][WARNINGS].is_string());
    assert_eq!(used(&out), 256 * 1024);
    // A byte more: room for the name, not for the record after it.
    p["metadata"]["annotations"]["big"] = json!("x".repeat(room - recorded - named + 1));
    let (m, out) = run(&p, &c);
    assert_eq!(
        out["metadata"]["annotations"][DEFAULT_CONTAINER],
        json!("app")
    );
    assert!(out["metadata"]["annotations"].get(WARNINGS).is_none());
    assert!(
        m.warnings.iter().any(|w| w.contains("not recorded")),
        "{:?}",
        m.warnings
    );
    assert!(used(&out) <= 256 * 1024);
    // Room for exactly the name: named; a byte less: not.
    p["metadata"]["annotations"]["big"] = json!("x".repeat(room - named));
    let (_, out) = run(&p, &c);
    assert_eq!(used(&out), 256 * 1024);
    p["metadata"]["annotations"]["big"] = json!("x".repeat(room - named + 1));
    let (m, out) = run(&p, &c);
    assert!(
        out["metadata"]["annotations"]
            .get(DEFAULT_CONTAINER)
            .is_none()
    );
    assert_eq!(
        out["spec"]["containers"][0]["name"],
        json!("tokenvend-sidecar")
    );
    assert!(
        m.warnings.iter().any(|w| w
            .contains("kubectl.kubernetes.io/default-container is not set to \"app\"")
            && w.contains("kubectl logs and exec need -c app")),
        "{:?}",
        m.warnings
    );
}

#[test]
fn a_lone_warning_of_up_to_4_kib_is_recorded_whole_and_a_longer_one_counted() {
    // One warning whose length is set by the name it repeats: a skipped container not in the pod.
    let warned = |len: usize| {
        let p = pod(json!({"metadata": {"annotations": {
            "tremolo.io/aws-skip-containers": "x".repeat(len)}}}));
        let (m, out) = run(&p, &Config::default());
        assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
        let recorded = out["metadata"]["annotations"][WARNINGS].as_str();
        (m.warnings[0].len(), recorded.expect("recorded").to_owned())
    };
    let overhead = warned(1).0 - 1;
    // No room is kept for a count when nothing is left to count; no line break before the first.
    for len in [4096 - 64 + 1, 4096] {
        let (warning, recorded) = warned(len - overhead);
        assert_eq!(warning, len);
        assert_eq!(recorded.len(), len, "recorded whole");
    }
    let (_, recorded) = warned(4097 - overhead);
    assert_eq!(recorded, "(1 more warning not recorded here)");
}

#[test]
fn pods_admitted_without_the_plumbing_record_why_once() {
    // Denied pods do not exist. Under denyOnInvalid: false a refused pod is admitted without the
    // plumbing, and a controller's pod shows its warnings to no one: they are recorded on it.
    let bad = pod(json!({"metadata": {"annotations": {"tremolo.io/aws-role": "app"}}}));
    assert!(mutate(&typed(&bad), &Config::default()).is_err());
    let warn = cfg(|a| a.deny_on_invalid = Some(false));
    let (m, out) = run(&bad, &warn);
    admitted_without_plumbing(&m, &out, &bad);
    assert_eq!(ops(&m), ["add"]);
    assert!(
        m.warnings.last().is_some_and(|w| w.starts_with(
            "tokenvend did not inject AWS credentials: annotation tremolo.io/aws-role: \"app\""
        )),
        "{:?}",
        m.warnings
    );
    // Recorded once: a second pass (a reinvocation) adds nothing, and says the same.
    let (again, twice) = run(&out, &warn);
    assert!(again.patch.is_empty(), "{:?}", again.patch);
    assert_eq!(again.warnings, m.warnings);
    assert_eq!(twice, out);
    // A labelled pod without any annotation (not even its role) gets the annotations object.
    let mut bare = pod(json!({}));
    bare["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("annotations");
    let (m, out) = run(&bare, &warn);
    admitted_without_plumbing(&m, &out, &bare);
    assert!(
        m.warnings[0].contains("has no tremolo.io/aws-role annotation"),
        "{:?}",
        m.warnings
    );
    // Kept: a record already there, as on patched pods.
    let mut kept = bad.clone();
    kept["metadata"]["annotations"]["tremolo.io/aws-warnings"] = json!("from before");
    let (m, out) = run(&kept, &warn);
    assert!(m.patch.is_empty() && out == kept, "{:?}", m.patch);
}

#[test]
fn a_pod_whose_patch_would_pass_its_limit_is_refused_not_answered_with_a_huge_patch() {
    let containers = |n: usize| {
        let list: Vec<Value> = (0..n)
            .map(|i| json!({"name": format!("c{i}"), "image": "app:1"}))
            .collect();
        pod(json!({"spec": {"containers": list}}))
    };
    // Each container's env and mount take some hundreds of bytes of patch; find where the
    // patch passes MAX_PATCH_BYTES.
    let (mut fits, mut over) = (1, 4096);
    while over - fits > 1 {
        let mid = (fits + over) / 2;
        match mutate(&typed(&containers(mid)), &Config::default()) {
            Ok(m) => {
                assert!(m.patch.as_bytes().len() <= MAX_PATCH_BYTES);
                fits = mid;
            }
            Err(_) => over = mid,
        }
    }
    // A real pod is far from it.
    assert!(fits > 400, "only {fits} containers fit");
    let (m, _) = run(&containers(fits), &Config::default());
    assert!(m.plumbed && m.patch.as_bytes().len() > MAX_PATCH_BYTES - 4096);
    let p = containers(over);
    let d = mutate(&typed(&p), &Config::default()).expect_err("refused");
    assert_eq!(
        d.message,
        format!(
            "tokenvend: the patch for this pod would pass 512 KiB ({over} containers and init \
             containers): far more than any pod the API server can store needs"
        )
    );
    // Warned, not refused, when so configured: admitted without the plumbing.
    let (m, out) = run(&p, &cfg(|a| a.deny_on_invalid = Some(false)));
    admitted_without_plumbing(&m, &out, &p);
}

#[test]
fn a_refusal_names_ten_problems_and_counts_the_rest() {
    let containers: Vec<Value> = (0..25)
        .map(|i| json!({"name": format!("c{i}"), "image": "app:1", "ports": [{"containerPort": 9911}]}))
        .collect();
    let p = pod(
        json!({"metadata": {"annotations": {"tremolo.io/aws-mode": "credentials"}},
                       "spec": {"containers": containers}}),
    );
    let d = mutate(&typed(&p), &Config::default()).expect_err("refused");
    for i in 0..10 {
        assert!(
            d.message
                .contains(&format!("container \"c{i}\" declares port 9911")),
            "{}",
            d.message
        );
    }
    assert!(!d.message.contains("\"c10\""), "{}", d.message);
    assert!(
        d.message.ends_with("; and 15 more problems"),
        "{}",
        d.message
    );
    // Eleven: the one past ten counted in the singular.
    let eleven = pod(
        json!({"metadata": {"annotations": {"tremolo.io/aws-mode": "credentials"}},
                         "spec": {"containers": (0..11).map(|i| json!({"name": format!("c{i}"), "ports": [{"containerPort": 9911}]})).collect::<Vec<_>>()}}),
    );
    let d = mutate(&typed(&eleven), &Config::default()).expect_err("refused");
    assert!(d.message.ends_with("; and 1 more problem"), "{}", d.message);
    // Ten or fewer: all named, nothing counted.
    let few = pod(
        json!({"metadata": {"annotations": {"tremolo.io/aws-mode": "credentials"}},
                         "spec": {"containers": (0..10).map(|i| json!({"name": format!("c{i}"), "ports": [{"containerPort": 9911}]})).collect::<Vec<_>>()}}),
    );
    let d = mutate(&typed(&few), &Config::default()).expect_err("refused");
    assert!(
        d.message.contains("\"c9\" declares") && !d.message.contains("more problems"),
        "{}",
        d.message
    );
}
