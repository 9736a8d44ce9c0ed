//! tokenvend-certs against a kube-apiserver STAND-IN (tokenvend_testkit::ApiServerStandIn: no
//! API server can run here) that follows the Kubernetes API for Secrets and
//! MutatingWebhookConfigurations, and the real binary's --out-dir mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tokenvend_certs::cluster::{ClusterError, Report, reconcile};
use tokenvend_certs::pki::{parse_bundle, service_sans};
use tokenvend_certs::plan::{Decision, Settings};
use tokenvend_testkit::{ApiServerStandIn, Cluster, Meanwhile};

const DAY: i64 = 86_400;
const NOW: i64 = 1_800_000_000;

fn settings() -> Settings {
    Settings::defaults(
        service_sans("tokenvend-webhook", "tokenvend"),
        "tokenvend-webhook-ca",
    )
}

async fn standin() -> (ApiServerStandIn, kube::Client, tempfile::TempDir) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let s = ApiServerStandIn::start(Arc::new(Cluster::new())).await;
    {
        let mut st = s.store.lock().expect("store");
        st.namespaces.insert("tokenvend".into());
        st.mwcs.insert(
            "tokenvend".into(),
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": "tokenvend", "resourceVersion": "1"},
                "webhooks": [
                    {"name": "pods.tokenvend.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                     "clientConfig": {"service": {"name": "tokenvend-webhook", "namespace": "tokenvend", "path": "/mutate"}}},
                    {"name": "pods-dryrun.tokenvend.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                     "clientConfig": {"service": {"name": "tokenvend-webhook", "namespace": "tokenvend", "path": "/mutate"}, "caBundle": "c3RhbGU="}}
                ]
            }),
        );
    }
    let dir = tempfile::tempdir().expect("tmp");
    let path = s.kubeconfig(dir.path());
    let kc = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(cfg).expect("client");
    (s, client, dir)
}

fn bundles(s: &ApiServerStandIn) -> Vec<String> {
    let st = s.store.lock().expect("store");
    st.mwcs["tokenvend"]["webhooks"]
        .as_array()
        .expect("webhooks")
        .iter()
        .map(|w| {
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(w["clientConfig"]["caBundle"].as_str().unwrap_or_default())
                    .expect("b64"),
            )
            .expect("utf8")
        })
        .collect()
}

fn secret(s: &ApiServerStandIn, name: &str) -> Value {
    s.store.lock().expect("store").secrets[&("tokenvend".to_owned(), name.to_owned())].clone()
}

fn data(secret: &Value, key: &str) -> String {
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(secret["data"][key].as_str().expect(key))
            .expect("b64"),
    )
    .expect("utf8")
}

fn writes(s: &ApiServerStandIn) -> Vec<(String, String, String)> {
    s.store.lock().expect("store").writes.clone()
}

/// One run of the job, as the manifests configure it, at time `now`.
async fn reconcile_at(client: &kube::Client, now: i64) -> Result<Report, ClusterError> {
    reconcile(
        client.clone(),
        "tokenvend",             // namespace
        "tokenvend-webhook-tls", // serving Secret
        "tokenvend",             // MutatingWebhookConfiguration
        &settings(),
        now,
    )
    .await
}

#[tokio::test]
async fn bootstrap_keep_renew_and_rotate_with_overlap() {
    let (s, client, _dir) = standin().await;

    // Bootstrap: caBundle of every webhook entry first, then the Secrets.
    let r = reconcile_at(&client, NOW).await.expect("bootstrap");
    assert!(matches!(r.decision, Decision::Create(_)));
    assert_eq!(r.webhooks_patched, 2);
    assert_eq!(r.restart_sidecars_by, None, "no pod was given a CA yet");
    let w = writes(&s);
    assert_eq!(w[0].0, "patch", "trust before secrets: {w:?}");
    let tls = secret(&s, "tokenvend-webhook-tls");
    assert_eq!(tls["type"], json!("kubernetes.io/tls"));
    let ca = secret(&s, "tokenvend-webhook-tls-ca");
    assert_eq!(ca["type"], json!("Opaque"));
    for created in [&tls, &ca] {
        assert_eq!(
            created["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            json!("tokenvend-certs"),
            "{created}"
        );
    }
    assert!(
        tls["data"].get("ca.key").is_none(),
        "the CA key is never in the mounted Secret"
    );
    assert_eq!(bundles(&s), vec![data(&tls, "ca.crt"); 2]);
    let serving = &parse_bundle(&data(&tls, "tls.crt")).expect("serving")[0];
    assert!(serving.issued_by(&parse_bundle(&data(&ca, "ca.crt")).expect("ca")[0]));
    assert_eq!(serving.dns_names.len(), 4);

    // Idempotent: nothing written on a second run.
    let before = writes(&s).len();
    let r = reconcile_at(&client, NOW + DAY).await.expect("keep");
    assert_eq!(
        r,
        Report {
            decision: Decision::Keep,
            webhooks_patched: 0,
            secrets_written: false,
            restart_sidecars_by: None
        }
    );
    assert_eq!(writes(&s).len(), before);

    // 336 days on: the serving certificate is renewed; the CA and caBundle stay.
    let r = reconcile_at(&client, NOW + 336 * DAY).await.expect("renew");
    assert!(matches!(r.decision, Decision::IssueServing(_)));
    assert_eq!(r.webhooks_patched, 0);
    let renewed = secret(&s, "tokenvend-webhook-tls");
    assert_ne!(data(&renewed, "tls.crt"), data(&tls, "tls.crt"));
    assert_eq!(data(&renewed, "ca.crt"), data(&tls, "ca.crt"));

    // Nine years on (the serving certificate renewed yearly, last 20 days before): CA rotation.
    // Old and new CA both in every caBundle before the Secrets change; the serving certificate
    // from the old CA stays, so sidecars given only the old CA still connect.
    let rot = NOW + (9 * 365 + 1) * DAY;
    let r = reconcile_at(&client, rot - 20 * DAY).await.expect("renew");
    assert!(matches!(r.decision, Decision::IssueServing(_)));
    let served = data(&secret(&s, "tokenvend-webhook-tls"), "tls.crt");
    let before = writes(&s).len();
    let r = reconcile_at(&client, rot).await.expect("rotate");
    assert!(matches!(r.decision, Decision::RotateCa(_)));
    assert_eq!(r.restart_sidecars_by, Some(rot + 7 * DAY));
    let w = writes(&s)[before..].to_vec();
    assert_eq!(
        w.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
        ["patch", "update", "update"],
        "{w:?}"
    );
    for b in bundles(&s) {
        assert_eq!(parse_bundle(&b).expect("bundle").len(), 2);
    }
    let rotated = secret(&s, "tokenvend-webhook-tls");
    let trust = parse_bundle(&data(&rotated, "ca.crt")).expect("trust");
    assert_eq!(data(&rotated, "tls.crt"), served);
    assert_eq!(
        trust[1],
        parse_bundle(&data(&tls, "ca.crt")).expect("old")[0]
    );
    let r = reconcile_at(&client, rot + DAY).await.expect("keep");
    assert_eq!(r.decision, Decision::Keep);
    assert!(!r.secrets_written && r.webhooks_patched == 0);

    // After the 7-day overlap: a serving certificate from the new CA; both CAs stay trusted
    // while the old certificate may still be served.
    let r = reconcile_at(&client, rot + 8 * DAY).await.expect("switch");
    assert!(
        matches!(&r.decision, Decision::IssueServing(why) if why.contains("previous CA")),
        "{r:?}"
    );
    assert_eq!(r.webhooks_patched, 0);
    let switched = secret(&s, "tokenvend-webhook-tls");
    assert!(parse_bundle(&data(&switched, "tls.crt")).expect("serving")[0].issued_by(&trust[0]));
    for b in bundles(&s) {
        assert_eq!(parse_bundle(&b).expect("bundle").len(), 2);
    }

    // The next run: the old CA leaves the caBundles and the Secrets.
    let r = reconcile_at(&client, rot + 9 * DAY).await.expect("prune");
    assert_eq!(r.decision, Decision::Keep);
    assert_eq!(r.webhooks_patched, 2);
    for b in bundles(&s) {
        assert_eq!(parse_bundle(&b).expect("bundle").len(), 1);
    }
    assert_eq!(
        parse_bundle(&data(&secret(&s, "tokenvend-webhook-tls"), "ca.crt"))
            .expect("trust")
            .len(),
        1
    );
}

#[tokio::test]
async fn a_deleted_ca_secret_gives_a_new_ca_while_the_old_one_stays_trusted_and_its_certificate_serves()
 {
    let (s, client, _dir) = standin().await;
    reconcile_at(&client, NOW).await.expect("bootstrap");
    let before = secret(&s, "tokenvend-webhook-tls");
    let old_ca = parse_bundle(&data(&before, "ca.crt")).expect("old")[0].clone();
    s.store.lock().expect("store").secrets.remove(&(
        "tokenvend".to_owned(),
        "tokenvend-webhook-tls-ca".to_owned(),
    ));

    let r = reconcile_at(&client, NOW + 30 * DAY)
        .await
        .expect("recreate");
    assert!(
        matches!(&r.decision, Decision::Create(why) if why.contains("no CA key")),
        "{r:?}"
    );
    assert_eq!(r.restart_sidecars_by, Some(NOW + 37 * DAY));
    assert_eq!(r.webhooks_patched, 2);
    for b in bundles(&s) {
        let trust = parse_bundle(&b).expect("bundle");
        assert_eq!(trust.len(), 2, "new CA, and the old one still trusted");
        assert_eq!(trust[1], old_ca);
    }
    let after = secret(&s, "tokenvend-webhook-tls");
    assert_eq!(
        data(&after, "tls.crt"),
        data(&before, "tls.crt"),
        "the certificate sidecars trust goes on serving"
    );
    let new_ca = &parse_bundle(&data(&after, "ca.crt")).expect("trust")[0];
    assert_ne!(new_ca, &old_ca);
    assert!(
        parse_bundle(&data(&secret(&s, "tokenvend-webhook-tls-ca"), "ca.key")).is_err(),
        "a key, not a certificate"
    );
    assert!(!data(&secret(&s, "tokenvend-webhook-tls-ca"), "ca.key").is_empty());

    // Past the overlap: a certificate from the new CA, then the old CA leaves.
    let r = reconcile_at(&client, NOW + 38 * DAY).await.expect("switch");
    assert!(matches!(r.decision, Decision::IssueServing(_)), "{r:?}");
    let switched = secret(&s, "tokenvend-webhook-tls");
    assert!(parse_bundle(&data(&switched, "tls.crt")).expect("serving")[0].issued_by(new_ca));
    let r = reconcile_at(&client, NOW + 39 * DAY).await.expect("prune");
    assert_eq!(r.decision, Decision::Keep);
    for b in bundles(&s) {
        assert_eq!(parse_bundle(&b).expect("bundle"), vec![new_ca.clone()]);
    }
}

#[tokio::test]
async fn a_run_that_loses_a_race_to_another_trusts_what_the_winner_stored() {
    // Two first runs at once (the install Job and the CronJob's). The other run's Secrets land
    // between this run's reads and its create, after this run set every caBundle to its own,
    // new CA: a CA no Secret holds, so the API server would distrust the webhook.
    let (other, other_client, _other_dir) = standin().await;
    reconcile_at(&other_client, NOW)
        .await
        .expect("the other run");
    let theirs = other.store.lock().expect("store").secrets.clone();
    let their_cert = data(
        &theirs[&("tokenvend".into(), "tokenvend-webhook-tls".into())],
        "tls.crt",
    );
    let (s, client, _dir) = standin().await;
    s.store.lock().expect("store").before_secret_write =
        Some(Box::new(move |st| st.secrets.extend(theirs)));

    let r = reconcile_at(&client, NOW)
        .await
        .expect("reconciled again after the conflict");
    assert_eq!(
        r.decision,
        Decision::Keep,
        "the winner's certificates are good"
    );
    let tls = secret(&s, "tokenvend-webhook-tls");
    assert_eq!(
        data(&tls, "tls.crt"),
        their_cert,
        "the winner's Secrets stay"
    );
    assert_eq!(
        bundles(&s),
        vec![data(&tls, "ca.crt"); 2],
        "every caBundle trusts the stored CA again"
    );
    let w = writes(&s);
    assert_eq!(
        w.iter().filter(|(verb, _, _)| verb == "patch").count(),
        2,
        "its own CA, then the stored one: {w:?}"
    );
    assert!(
        w.iter().all(|(_, resource, _)| resource != "secrets"),
        "{w:?}"
    );
}

/// Before every Secret write, another writer's update lands, so each write conflicts; `tries`
/// counts the writes tried.
fn always_first(tries: Arc<AtomicUsize>) -> Meanwhile {
    Box::new(move |st| {
        tries.fetch_add(1, Ordering::SeqCst);
        for secret in st.secrets.values_mut() {
            let v = secret["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default();
            secret["metadata"]["resourceVersion"] = json!(format!("{v}0"));
        }
        st.before_secret_write = Some(always_first(tries));
    })
}

#[tokio::test]
async fn a_run_that_keeps_losing_races_gives_up_after_three_tries() {
    let (s, client, _dir) = standin().await;
    reconcile_at(&client, NOW).await.expect("bootstrap");
    let tries = Arc::new(AtomicUsize::new(0));
    s.store.lock().expect("store").before_secret_write = Some(always_first(tries.clone()));
    let before = writes(&s).len();
    // 336 days on the serving certificate is due: its update conflicts every time.
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        reconcile_at(&client, NOW + 336 * DAY),
    )
    .await
    .expect("gave up in time")
    .expect_err("conflicts");
    assert!(matches!(err, ClusterError::Conflict { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("another run of the job wrote it meanwhile"),
        "{err}"
    );
    assert_eq!(
        tries.load(Ordering::SeqCst),
        3,
        "one try and two more from fresh reads"
    );
    assert_eq!(writes(&s).len(), before, "nothing written");
}

#[tokio::test]
async fn a_serving_secret_created_as_opaque_is_filled_once_and_then_left_alone() {
    let (s, client, _dir) = standin().await;
    // Made beforehand by hand (`kubectl create secret generic`), so of type Opaque, which the
    // API server will not let anyone change.
    s.store.lock().expect("store").secrets.insert(
        ("tokenvend".into(), "tokenvend-webhook-tls".into()),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": "tokenvend-webhook-tls", "namespace": "tokenvend", "resourceVersion": "7"},
               "data": {"tls.crt": "c3RhbGU="}}),
    );
    let r = reconcile_at(&client, NOW).await.expect("bootstrap");
    assert!(r.secrets_written);
    let tls = secret(&s, "tokenvend-webhook-tls");
    assert_eq!(
        tls["type"],
        json!("Opaque"),
        "the type is kept, not changed"
    );
    let serving = &parse_bundle(&data(&tls, "tls.crt")).expect("serving")[0];
    assert_eq!(serving.dns_names.len(), 4);

    let before = writes(&s).len();
    let r = reconcile_at(&client, NOW + DAY).await.expect("second run");
    assert_eq!(
        r,
        Report {
            decision: Decision::Keep,
            webhooks_patched: 0,
            secrets_written: false,
            restart_sidecars_by: None
        }
    );
    assert_eq!(writes(&s).len(), before, "nothing rewritten");
}

#[tokio::test]
async fn clear_errors_for_missing_config_namespace_and_rbac() {
    let (s, client, _dir) = standin().await;
    let set = settings();
    let err = reconcile(client.clone(), "tokenvend", "t", "nope", &set, NOW)
        .await
        .expect_err("missing mwc");
    assert!(
        matches!(err, ClusterError::MissingWebhookConfig(_)),
        "{err}"
    );
    assert!(err.to_string().contains("apply the manifests first"));

    let err = reconcile(client.clone(), "elsewhere", "t", "tokenvend", &set, NOW)
        .await
        .expect_err("missing ns");
    assert!(matches!(err, ClusterError::MissingNamespace(_)), "{err}");

    s.store
        .lock()
        .expect("store")
        .forbidden
        .insert(("get".into(), "secrets".into()));
    let err = reconcile(client.clone(), "tokenvend", "t", "tokenvend", &set, NOW)
        .await
        .expect_err("rbac");
    let msg = err.to_string();
    assert!(
        msg.starts_with("RBAC: the job's service account may not get secrets/t in tokenvend"),
        "{msg}"
    );
    s.store.lock().expect("store").forbidden.clear();
    s.store
        .lock()
        .expect("store")
        .forbidden
        .insert(("patch".into(), "mutatingwebhookconfigurations".into()));
    let err = reconcile(client, "tokenvend", "t", "tokenvend", &set, NOW)
        .await
        .expect_err("rbac");
    assert!(
        err.to_string()
            .contains("may not patch mutatingwebhookconfigurations/tokenvend"),
        "{err}"
    );
    assert!(
        s.store.lock().expect("store").secrets.is_empty(),
        "no Secret written when the caBundle could not be"
    );
}

#[tokio::test]
async fn a_webhook_the_certificate_would_not_serve_is_refused_before_any_write() {
    // The manifests installed into namespace `platform` while the webhook configuration still
    // calls the Service in `tokenvend`: a caBundle kept in step would not help, every call would
    // fail TLS.
    let (s, client, _dir) = standin().await;
    s.store
        .lock()
        .expect("store")
        .namespaces
        .insert("platform".into());
    let elsewhere = Settings::defaults(
        service_sans("tokenvend-webhook", "platform"),
        "tokenvend-webhook-ca",
    );
    let err = reconcile(
        client.clone(),
        "platform",
        "t",
        "tokenvend",
        &elsewhere,
        NOW,
    )
    .await
    .expect_err("the webhook calls another namespace");
    assert!(
        matches!(err, ClusterError::WebhookNotServed { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("webhook \"pods.tokenvend.io\" calls tokenvend-webhook.tokenvend.svc")
            && msg.contains("tokenvend-webhook.platform.svc")
            && msg.contains("--namespace"),
        "{msg}"
    );
    {
        let st = s.store.lock().expect("store");
        assert!(st.secrets.is_empty(), "no Secret written");
        let webhooks = st.mwcs["tokenvend"]["webhooks"].clone();
        assert!(
            webhooks[0]["clientConfig"].get("caBundle").is_none(),
            "caBundle untouched"
        );
        assert_eq!(webhooks[1]["clientConfig"]["caBundle"], "c3RhbGU=");
    }

    // The configuration pointed at the Service where it now runs: served.
    for w in s
        .store
        .lock()
        .expect("store")
        .mwcs
        .get_mut("tokenvend")
        .expect("mwc")["webhooks"]
        .as_array_mut()
        .expect("webhooks")
    {
        w["clientConfig"]["service"]["namespace"] = json!("platform");
    }
    let r = reconcile(client, "platform", "t", "tokenvend", &elsewhere, NOW)
        .await
        .expect("served");
    assert!(
        matches!(r.decision, Decision::Create(_)),
        "{:?}",
        r.decision
    );
    assert_eq!((r.webhooks_patched, r.secrets_written), (2, true));
}

/// The manifests' objects of `kind`, as JSON.
fn manifest_objects(file: &str, kind: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests/base")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("manifest");
    text.split("\n---\n")
        .map(|doc| serde_yaml_ng::from_str::<Value>(doc).expect("yaml"))
        .filter(|d| d["kind"] == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_and_cronjob_of_the_manifests_run_as_shipped() {
    // The binary with the exact command, arguments and env of the manifests' Job and CronJob,
    // against the manifests' own MutatingWebhookConfiguration: the other tests call the library
    // with settings of their own, which would not show a flag the binary no longer takes.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let s = ApiServerStandIn::start(Arc::new(Cluster::new())).await;
    let mut mwc = manifest_objects(
        "mutatingwebhookconfiguration.yaml",
        "MutatingWebhookConfiguration",
    )
    .pop()
    .expect("the MutatingWebhookConfiguration");
    mwc["metadata"]["resourceVersion"] = json!("1");
    let mwc_entries: Vec<Value> = mwc["webhooks"].as_array().cloned().unwrap_or_default();
    {
        let mut st = s.store.lock().expect("store");
        st.namespaces.insert("tokenvend".into());
        st.mwcs.insert("tokenvend".into(), mwc);
    }
    let dir = tempfile::tempdir().expect("tmp");
    let kubeconfig = s.kubeconfig(dir.path());
    let job =
        &manifest_objects("certs.yaml", "Job")[0]["spec"]["template"]["spec"]["containers"][0];
    let cron = &manifest_objects("certs.yaml", "CronJob")[0]["spec"]["jobTemplate"]["spec"]["template"]
        ["spec"]["containers"][0];
    assert_eq!(
        (&job["args"], &job["env"]),
        (&cron["args"], &cron["env"]),
        "the daily run is the first run again"
    );
    let run = |container: &Value| {
        let args: Vec<String> = serde_json::from_value(container["args"].clone()).expect("args");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tokenvend-certs"));
        cmd.env_clear().args(&args).env("KUBECONFIG", &kubeconfig);
        for e in container["env"].as_array().into_iter().flatten() {
            // The kubelet's part: the pod's own namespace from the downward API.
            let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.namespace") => "tokenvend".to_owned(),
                Some(other) => panic!("fieldRef {other} not played here"),
                None => e["value"].as_str().expect("value").to_owned(),
            };
            cmd.env(e["name"].as_str().expect("name"), value);
        }
        let out = cmd.output().expect("run");
        assert!(
            out.status.success(),
            "{:?}: {}",
            args,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    tokio::task::block_in_place(|| run(job));
    let tls = secret(&s, "tokenvend-webhook-tls");
    let sans = &parse_bundle(&data(&tls, "tls.crt")).expect("certificate")[0].dns_names;
    for host in [
        "tokenvend-webhook.tokenvend.svc",
        "tokenvend-sts.tokenvend.svc",
    ] {
        assert!(sans.iter().any(|n| n == host), "{host} in {sans:?}");
    }
    assert!(s.store.lock().expect("store").secrets.contains_key(&(
        "tokenvend".to_owned(),
        "tokenvend-webhook-tls-ca".to_owned()
    )));
    let entries = mwc_entries.len();
    assert!(
        entries >= 2,
        "both of the manifests' webhook entries: {mwc_entries:?}"
    );
    assert_eq!(
        bundles(&s),
        vec![data(&tls, "ca.crt"); entries],
        "every webhook entry trusts the CA that signed it"
    );
    let written = writes(&s).len();
    tokio::task::block_in_place(|| run(cron));
    assert_eq!(
        writes(&s).len(),
        written,
        "the daily run keeps what is valid"
    );
}

#[test]
fn out_dir_mode_writes_usable_files_and_keeps_them() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tmp");
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenvend-certs"))
            .args([
                "--service",
                "tokenvend-webhook",
                "--namespace",
                "tokenvend",
                "--out-dir",
            ])
            .arg(dir.path())
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run();
    let read = |n: &str| std::fs::read(dir.path().join(n)).expect(n);
    let first = (read("ca.crt"), read("tls.crt"), read("tls.key"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(dir.path().join("tls.key"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    tokenvend_core::tls::load(&dir.path().join("tls.crt"), &dir.path().join("tls.key"))
        .expect("the webhook can serve these");
    run();
    assert_eq!(
        (read("ca.crt"), read("tls.crt"), read("tls.key")),
        first,
        "kept on the second run"
    );
    // The CA key lost: a new CA, the old one still trusted and its certificate still served.
    std::fs::remove_file(dir.path().join("ca.key")).expect("rm");
    run();
    let trust = parse_bundle(&String::from_utf8_lossy(&read("ca.crt"))).expect("bundle");
    let old = parse_bundle(&String::from_utf8_lossy(&first.0)).expect("old");
    assert_eq!((trust.len(), &trust[1]), (2, &old[0]));
    assert_eq!((read("tls.crt"), read("tls.key")), (first.1, first.2));
    assert!(dir.path().join("ca.key").exists());
    // A bundle that is there but cannot be read is an error, not a missing one to be replaced by
    // a new CA: clients may still trust what it held.
    let kept = (read("ca.key"), read("tls.crt"), read("tls.key"));
    std::fs::write(dir.path().join("ca.crt"), b"\xff\xfe").expect("write");
    let unreadable = std::process::Command::new(env!("CARGO_BIN_EXE_tokenvend-certs"))
        .args(["--service", "tokenvend-webhook", "--namespace", "tokenvend"])
        .arg("--out-dir")
        .arg(dir.path())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&unreadable.stderr);
    assert!(!unreadable.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: not UTF-8 text",
            dir.path().join("ca.crt").display()
        )),
        "{stderr}"
    );
    assert_eq!(read("ca.crt"), b"\xff\xfe", "left as it was");
    assert_eq!((read("ca.key"), read("tls.crt"), read("tls.key")), kept);
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_tokenvend-certs"))
        .args(["--service", "s", "--namespace", "n", "--secret", "x"])
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--webhook-config"));

    // Refused before anything is written: a day count whose seconds overflow (it used to panic),
    // and a Service name no certificate could serve.
    let empty = tempfile::tempdir().expect("tmp");
    for (flag, value) in [
        ("--ca-overlap-days", "99999999999999999"),
        ("--service", "Tokenvend"),
    ] {
        let mut args = vec!["--service", "s", "--namespace", "n", flag, value];
        if flag == "--service" {
            args.drain(..2);
        }
        let bad = std::process::Command::new(env!("CARGO_BIN_EXE_tokenvend-certs"))
            .args(args)
            .arg("--out-dir")
            .arg(empty.path())
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert!(!bad.status.success(), "{flag}: {stderr}");
        assert!(stderr.contains(flag), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(
            std::fs::read_dir(empty.path()).expect("dir").count(),
            0,
            "nothing written"
        );
    }
}
