//! The real tokenvend-sts binary against moto's real STS server: credentials that work, the
//! cache and single flight counted with moto's recorder, every error status reached by a real
//! request, /token JWTs verified against /keys across a key rotation, TokenReview through a
//! kube-apiserver stand-in.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use serde_json::{Value, json};
use tokenvend_testkit::*;

fn provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// What most tests start with: tokenvend-sts with JWKS validation in front of moto, the
/// "cluster" whose tokens it takes, and a client.
fn started() -> (Moto, Cluster, Sts, reqwest::Client) {
    provider();
    let moto = Moto::start();
    let cluster = Cluster::new();
    let sts = Sts::start(&moto, &cluster, &[]);
    (moto, cluster, sts, reqwest::Client::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_work_are_cached_and_coalesced() {
    let (moto, cluster, sts, c) = started();

    let token = cluster.token("shop", "orders", Some("orders-1"), "tokenvend", 3600);
    let (status, creds) = post(&c, &sts.url("/credentials"), Some(&token), None).await;
    assert_eq!(status, 200, "{creds}");
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "Expiration",
    ] {
        assert!(
            creds[k].as_str().is_some_and(|v| !v.is_empty()),
            "{k} in {creds}"
        );
    }
    assert!(creds["Expiration"].as_str().expect("exp").ends_with('Z'));
    let arn = caller_arn(&moto, &creds).await;
    assert_eq!(
        arn,
        "arn:aws:sts::123456789012:assumed-role/tvm/shop.orders"
    );

    // The session policy AssumeRole got: the template rendered for the pod, and the IAM policy
    // variable left for AWS to resolve.
    let policies = moto.session_policies("shop.orders");
    let policy: Value = match policies.as_slice() {
        [Some(p)] => serde_json::from_str(p).expect("policy JSON"),
        other => panic!("one AssumeRole with a Policy: {other:?}"),
    };
    assert_eq!(
        policy["Statement"][0]["Resource"],
        json!(["arn:aws:s3:::bucket/shop/orders/orders-1/*"])
    );
    assert_eq!(
        policy["Statement"][1]["Resource"],
        json!(["arn:aws:s3:::scratch/${aws:userid}/*"])
    );

    // Same identity again: served from the cache, no second STS call.
    let (_, again) = post(&c, &sts.url("/credentials"), Some(&token), Some("")).await;
    assert_eq!(again["AWS_ACCESS_KEY_ID"], creds["AWS_ACCESS_KEY_ID"]);
    assert_eq!(moto.assume_role_calls("shop.orders"), 1);

    // 50 concurrent identical requests for a fresh identity: one STS call.
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (c, url) = (c.clone(), sts.url("/credentials"));
        let t = cluster.token("batch", "worker", None, "tokenvend", 3600);
        tasks.push(tokio::spawn(
            async move { post(&c, &url, Some(&t), None).await },
        ));
    }
    let mut keys = std::collections::HashSet::new();
    for t in tasks {
        let (status, body) = t.await.expect("task");
        assert_eq!(status, 200, "{body}");
        keys.insert(body["AWS_ACCESS_KEY_ID"].as_str().expect("key").to_owned());
    }
    assert_eq!(keys.len(), 1, "all 50 share one AssumeRole result");
    assert_eq!(moto.assume_role_calls("batch.worker"), 1);

    // An allowed other role through the body.
    let (status, other) = post(
        &c,
        &sts.url("/credentials"),
        Some(&token),
        Some(r#"{"role_arn":"arn:aws:iam::123456789012:role/apps/reader"}"#),
    )
    .await;
    assert_eq!(status, 200, "{other}");
    assert_eq!(
        caller_arn(&moto, &other).await,
        "arn:aws:sts::123456789012:assumed-role/reader/shop.orders"
    );

    let metrics = metrics_of(&c, &sts).await;
    assert!(
        has_metric(&metrics, "tokenvend_sts_sts_calls_total{reason=\"ok\"} 3"),
        "{metrics}"
    );
    assert!(
        has_metric(
            &metrics,
            "tokenvend_sts_cache_total{cache=\"credentials\",result=\"hit\"} 50"
        ) && has_metric(
            &metrics,
            "tokenvend_sts_cache_total{cache=\"credentials\",result=\"miss\"} 3"
        ),
        "1 + 1 + 50 + 1 requests: 3 STS calls, 50 answered from the cache: {metrics}"
    );
    assert!(
        has_metric(
            &metrics,
            "tokenvend_sts_requests_total{endpoint=\"credentials\",status=\"200\"} 53"
        ),
        "{metrics}"
    );
    let health: Value = c
        .get(sts.url("/healthz"))
        .send()
        .await
        .expect("healthz")
        .json()
        .await
        .expect("json");
    assert_eq!(health, json!({"status": "healthy"}));

    // Logs never carry a token or a secret.
    let logs = sts.all_logs();
    assert!(logs.contains("\"message\":\"exchange\""), "{logs}");
    // Where STS calls go is said once at start.
    let endpoint = format!("\"sts_endpoint\":\"{}\"", moto.url());
    assert!(logs.contains(&endpoint), "{endpoint} in {logs}");
    for secret in [
        token.as_str(),
        creds["AWS_SECRET_ACCESS_KEY"].as_str().expect("s"),
        creds["AWS_SESSION_TOKEN"].as_str().expect("t"),
    ] {
        assert!(!logs.contains(secret), "a secret leaked into the logs");
    }
}

/// tokenvend-sts's `/metrics` text.
async fn metrics_of(c: &reqwest::Client, sts: &Sts) -> String {
    c.get(sts.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// tokenvend-sts with `rules` in the file `TOKENVEND_RULES_FILE` names (kept while it runs).
fn with_rules(moto: &Moto, cluster: &Cluster, rules: &str) -> (tempfile::NamedTempFile, Sts) {
    let file = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(file.path(), rules).expect("rules");
    let sts = Sts::start(
        moto,
        cluster,
        &[("TOKENVEND_RULES_FILE", file.path().display().to_string())],
    );
    (file, sts)
}

/// The session policy of the latest AssumeRole for `session`, as JSON.
fn last_policy(moto: &Moto, session: &str) -> Value {
    match moto.session_policies(session).last() {
        Some(Some(p)) => serde_json::from_str(p).expect("policy JSON"),
        other => panic!("no AssumeRole with a Policy for {session}: {other:?}"),
    }
}

/// Wait (at most 10 s) until tokenvend-sts has logged a line containing `needle` `n` times.
async fn logged(sts: &Sts, needle: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while sts.all_logs().matches(needle).count() < n {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {}",
            sts.all_logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_files_edited_in_place_apply_to_the_next_request_and_bad_edits_keep_the_old() {
    provider();
    let moto = Moto::start();
    let cluster = Cluster::new();
    let (rules, sts) = with_rules(&moto, &cluster, RULES);
    let c = reqwest::Client::new();
    let url = sts.url("/credentials");
    let orders = cluster.token("shop", "orders", None, "tokenvend", 3600);
    let (status, body) = post(&c, &url, Some(&orders), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        last_policy(&moto, "shop.orders")["Statement"][0]["Resource"],
        json!(["arn:aws:s3:::bucket/shop/orders/*"])
    );

    // The template tightened in place (as a ConfigMap edit reaches the file).
    let template = sts.dir.path().join("policy.json");
    let narrow = r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::narrow/{{ namespace }}/*"]}]}"#;
    std::fs::write(&template, narrow).expect("template");
    logged(&sts, "policy template changed: reloaded", 1).await;
    // The same identity at once: not the cached credentials of the old policy.
    let (status, body) = post(&c, &url, Some(&orders), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(moto.assume_role_calls("shop.orders"), 2);
    let tightened = json!(["arn:aws:s3:::narrow/shop/*"]);
    assert_eq!(
        last_policy(&moto, "shop.orders")["Statement"][0]["Resource"],
        tightened
    );

    // A broken edit, one with a filter tokenvend-sts lacks in a branch only one namespace
    // would reach, then a missing file: the tightened template stays in use.
    std::fs::write(&template, "{{ namespace ").expect("template");
    logged(&sts, "policy template not reloaded", 1).await;
    std::fs::write(
        &template,
        narrow.replace(
            "{{ namespace }}",
            "{% if namespace == 'legacy' %}{{ namespace | wordwrap(3) }}{% else %}{{ namespace }}{% endif %}",
        ),
    )
    .expect("template");
    logged(&sts, "policy template not reloaded", 2).await;
    std::fs::remove_file(&template).expect("rm");
    logged(&sts, "policy template not reloaded", 3).await;
    let billing = cluster.token("shop", "billing", None, "tokenvend", 3600);
    let (status, body) = post(&c, &url, Some(&billing), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        last_policy(&moto, "shop.billing")["Statement"][0]["Resource"],
        tightened
    );

    // The rules narrowed in place: shop loses access at once.
    std::fs::write(
        rules.path(),
        RULES.replace("namespaces: [\"*\"]", "namespaces: [\"team-*\"]"),
    )
    .expect("rules");
    logged(&sts, "rules file changed: reloaded", 1).await;
    let (status, body) = post(&c, &url, Some(&orders), None).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().is_some_and(
            |e| e.contains("system:serviceaccount:shop:orders may not use /credentials")
        ),
        "{body}"
    );
    // A rules file that goes away, or no longer parses, opens nothing.
    std::fs::remove_file(rules.path()).expect("rm");
    logged(&sts, "rules file not reloaded", 1).await;
    let (status, _) = post(&c, &url, Some(&orders), None).await;
    assert_eq!(status, 403);
    std::fs::write(rules.path(), "rules: [{namespaces: [\"*\"], colour: blue}]").expect("rules");
    logged(&sts, "rules file not reloaded", 2).await;
    let (status, _) = post(&c, &url, Some(&billing), None).await;
    assert_eq!(status, 403);

    let metrics = metrics_of(&c, &sts).await;
    for line in [
        "tokenvend_sts_config_reloads_total{file=\"policy_template\",result=\"ok\"} 1",
        "tokenvend_sts_config_reloads_total{file=\"policy_template\",result=\"error\"} 3",
        "tokenvend_sts_config_reloads_total{file=\"rules\",result=\"ok\"} 1",
        "tokenvend_sts_config_reloads_total{file=\"rules\",result=\"error\"} 2",
    ] {
        assert!(has_metric(&metrics, line), "{line} in {metrics}");
    }
    let logs = sts.all_logs();
    assert!(
        logs.contains("line 2: filter wordwrap is unknown"),
        "the refused template's reason is logged: {logs}"
    );
    assert!(
        logs.contains("unknown field `colour`"),
        "the rejected rules file's reason is logged: {logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_it_listens_on_every_address_ipv4_and_ipv6() {
    // Pods of an IPv6-only cluster (EKS offers them) have no IPv4 address: a listener on
    // 0.0.0.0 is never reached there. The default, PORT alone, serves both families.
    let (moto, cluster) = (Moto::start(), Cluster::new());
    let port = free_port();
    let sts = Sts::start(&moto, &cluster, &[("PORT", port.to_string())]);
    for host in ["127.0.0.1", "[::1]"] {
        let r = reqwest::get(format!("http://{host}:{port}/healthz"))
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}\n{}", sts.all_logs()));
        assert_eq!(r.status(), 200, "{host}");
    }
    // Without TLS on every address, tokens and keys would cross the network in clear: said once.
    let warning = "serving plain HTTP: service-account tokens";
    logged(&sts, warning, 1).await;
    assert_eq!(sts.all_logs().matches(warning).count(), 1);
    // On loopback alone nothing crosses the network.
    let local = Sts::start(&moto, &cluster, &[]);
    logged(&local, "tokenvend-sts serving", 1).await;
    assert!(!local.all_logs().contains(warning), "{}", local.all_logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_the_cap_waits_for_a_busy_one_to_close_and_closes_an_idle_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (moto, cluster) = (Moto::start(), Cluster::new());
    let sts = Sts::start(
        &moto,
        &cluster,
        &[("TOKENVEND_MAX_CONNECTIONS", "1".into())],
    );
    logged(&sts, "tokenvend-sts serving", 1).await;
    // A kept-alive connection, answered once: it holds the one slot (the start-up check's
    // connection has closed by then, whatever the scheduler did).
    let held = || async {
        let mut conn = tokio::net::TcpStream::connect(sts.addr)
            .await
            .expect("connect");
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("request");
        let mut answer = [0u8; 12];
        conn.read_exact(&mut answer).await.expect("answer");
        assert_eq!(&answer, b"HTTP/1.1 200");
        conn
    };
    let mut busy = held().await;
    // Then a request being handled: its head, and the server's "100 Continue" (its handler
    // is reading the body, which never comes). The connection is in use, and is not closed to
    // make room.
    busy.write_all(
        b"POST /credentials HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .expect("a head");
    let mut continued = Vec::new();
    while !String::from_utf8_lossy(&continued).contains("100 Continue") {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), busy.read(&mut buf))
            .await
            .expect("100 Continue in time")
            .expect("read");
        assert!(n > 0, "closed before 100 Continue: {continued:?}");
        continued.extend_from_slice(&buf[..n]);
    }
    let get = || {
        let url = sts.url("/healthz");
        tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status()) })
    };
    let waiting = get();
    tokio::time::sleep(Duration::from_secs(2)).await;
    if waiting.is_finished() {
        panic!(
            "a second connection was answered (or failed) beside the one the cap allows: {:?}",
            waiting.await
        );
    }
    drop(busy);
    let status = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("served once the first closed")
        .expect("task")
        .expect("answer");
    assert_eq!(status, 200);
    logged(&sts, "connection limit reached", 1).await;

    // An idle connection holding the slot is closed for the next one within a second or so.
    let mut idle = held().await;
    let t0 = std::time::Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(5), get())
        .await
        .expect("served once the idle one was closed")
        .expect("task")
        .expect("answer");
    assert_eq!(status, 200);
    eprintln!("served after {:?}", t0.elapsed());
    // The rest of its answer, then the end of the stream.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), idle.read_to_end(&mut rest))
        .await
        .expect("the idle connection was closed")
        .expect("closed cleanly");
    let metrics = metrics_of(&reqwest::Client::new(), &sts).await;
    for line in [
        "tokenvend_sts_connections_turned_away_total 0",
        "tokenvend_sts_connections_closed_idle_total 1",
    ] {
        assert!(has_metric(&metrics, line), "no {line}: {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_status_is_reached() {
    provider();
    let moto = Moto::start();
    let cluster = Cluster::new();
    let rules = RULES.replace("namespaces: [\"*\"]", "namespaces: [\"shop\", \"huge\"]");
    let (_rules, sts) = with_rules(&moto, &cluster, &rules);
    let c = reqwest::Client::new();
    let url = sts.url("/credentials");
    let ok = cluster.token("shop", "orders", None, "tokenvend", 3600);
    let other_cluster = Cluster::new();
    let cases: Vec<(Option<String>, Option<&str>, u16, &str)> = vec![
        (None, None, 401, "missing bearer token"),
        (Some("not-a-jwt".into()), None, 401, "malformed"),
        (
            Some(cluster.token("shop", "orders", None, "tokenvend", -60)),
            None,
            401,
            "expired",
        ),
        (
            Some(cluster.token("shop", "orders", None, "sts.amazonaws.com", 3600)),
            None,
            401,
            "audience",
        ),
        (
            Some(cluster.token_with(
                json!({"sub": "alice", "kubernetes.io": null}),
                "shop",
                "orders",
                None,
                "tokenvend",
                3600,
            )),
            None,
            401,
            "not a service-account token",
        ),
        (
            Some(other_cluster.token("shop", "orders", None, "tokenvend", 3600)),
            None,
            401,
            "unknown signing key",
        ),
        (
            Some(cluster.token_with(
                json!({"iss": "https://evil"}),
                "shop",
                "orders",
                None,
                "tokenvend",
                3600,
            )),
            None,
            401,
            "issuer",
        ),
        (
            Some(ok.clone()),
            Some("{not json"),
            400,
            "body must be empty",
        ),
        (
            Some(ok.clone()),
            Some(r#"{"role_arn":"arn:aws:iam::123456789012:role/admin"}"#),
            403,
            "not among the allowed roles",
        ),
        (
            Some(cluster.token("restricted", "other", None, "tokenvend", 3600)),
            None,
            403,
            "may not use /credentials",
        ),
        (
            Some(cluster.token("huge", "sa", None, "tokenvend", 3600)),
            None,
            500,
            "AWS allows 2048",
        ),
    ];
    for (token, body, want, text) in cases {
        let (status, resp) = post(&c, &url, token.as_deref(), body).await;
        assert_refused(status, &resp, want, text);
    }
    let (status, _) = post(
        &c,
        &url,
        Some(&cluster.token("restricted", "allowed", None, "tokenvend", 3600)),
        None,
    )
    .await;
    assert_eq!(
        status, 200,
        "the restricted namespace's allowed account passes"
    );
    let resp = c
        .post(&url)
        .header("authorization", format!("Bearer {}", "a".repeat(20_000)))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401, "oversized token");
    assert_eq!(
        resp.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    let resp = c
        .post(&url)
        .header("authorization", format!("Bearer {ok}"))
        .body(vec![b' '; 70_000])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 413, "oversized body");
    // A body of exactly 64 KiB is read, and judged for what it asks.
    let mut at_limit = br#"{"role_arn":"arn:aws:iam::123456789012:role/admin"}"#.to_vec();
    at_limit.resize(64 * 1024, b' ');
    let resp = c
        .post(&url)
        .header("authorization", format!("Bearer {ok}"))
        .body(at_limit)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 403, "a 64 KiB body");

    // STS down: 500 with the reason, promptly (upstream timeout 3 s).
    drop(moto);
    let t0 = Instant::now();
    let (status, resp) = post(
        &c,
        &url,
        Some(&cluster.token("shop", "fresh", None, "tokenvend", 3600)),
        None,
    )
    .await;
    assert_refused(
        status,
        &resp,
        500,
        "STS AssumeRole failed: cannot reach STS: ",
    );
    assert!(
        resp["error"]
            .as_str()
            .is_some_and(|e| e.contains("Connection refused")),
        "the reason, not just a kind: {resp}"
    );
    assert!(t0.elapsed() < Duration::from_secs(10));

    // 20 requests of one service account at once with STS down (tokens not bound to a pod, so
    // one rendered policy and one cache key): they wait for one failing call and share its
    // answer, rather than queueing for 20 calls in turn.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (c, url) = (c.clone(), url.clone());
        let t = cluster.token("shop", "herd", None, "tokenvend", 3600 + i);
        tasks.push(tokio::spawn(
            async move { post(&c, &url, Some(&t), None).await },
        ));
    }
    for t in tasks {
        let (status, resp) = t.await.expect("task");
        assert_refused(status, &resp, 500, "STS AssumeRole failed");
    }

    let metrics = metrics_of(&c, &sts).await;
    assert!(
        has_metric(
            &metrics,
            "tokenvend_sts_sts_calls_total{reason=\"error\"} 2"
        ),
        "one failed call for the lone request, one for the 20: {metrics}"
    );
    for reason in [
        "missing",
        "malformed",
        "expired",
        "audience",
        "not_service_account",
        "invalid",
    ] {
        assert!(
            metrics.contains(&format!(
                "tokenvend_sts_validation_failures_total{{reason=\"{reason}\"}}"
            )),
            "{reason}: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_only_service_gives_tokens_whatever_role_the_pod_names() {
    // The web-identity overlay's configuration: an issuer, no role to vend, no allowed roles.
    // Every sidecar names its pod's role (the annotation), which tokenvend-sts does not assume
    // in this mode: the app's SDK does, and the role's trust policy decides.
    provider();
    let moto = Moto::start();
    let cluster = Cluster::new();
    let sts = Sts::start_without(
        &moto,
        &cluster,
        &[],
        &["AWS_ROLE_ARN", "TOKENVEND_ALLOWED_ROLES"],
    );
    let c = reqwest::Client::new();
    let sa = cluster.token("shop", "orders", Some("orders-1"), "tokenvend", 3600);
    let named = r#"{"role_arn":"arn:aws:iam::123456789012:role/shop/orders-writer"}"#;
    let (status, answer) = post(&c, &sts.url("/token"), Some(&sa), Some(named)).await;
    assert_eq!(status, 200, "{answer} {}", sts.all_logs());
    // A token AWS accepts for that role.
    let arn = assume_with_web_identity(
        &moto,
        "arn:aws:iam::123456789012:role/shop/orders-writer",
        answer["token"].as_str().expect("token"),
    )
    .await;
    assert_eq!(
        arn,
        "arn:aws:sts::123456789012:assumed-role/orders-writer/orders-1"
    );
    // Vending credentials is still off.
    let (status, resp) = post(&c, &sts.url("/credentials"), Some(&sa), Some(named)).await;
    assert_refused(status, &resp, 404, "not enabled");
}

/// A new P-256 private key, PEM.
fn p256_pem() -> String {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .expect("key")
        .serialize_pem()
}

/// Put a signing key into `sts`'s key directory as a Secret update lands: whole, renamed into
/// place.
fn put_key(sts: &Sts, name: &str, pem: &str) {
    let tmp = sts.dir.path().join(format!("keys/.{name}.tmp"));
    std::fs::write(&tmp, pem).expect("write key");
    std::fs::rename(&tmp, sts.dir.path().join("keys").join(name)).expect("rename key");
}

/// The `kid` in a JWT's header.
fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("header")
        .kid
        .expect("kid")
}

/// tokenvend-sts's own JWKS.
async fn keys_of(c: &reqwest::Client, sts: &Sts) -> JwkSet {
    c.get(sts.url("/keys"))
        .send()
        .await
        .expect("keys")
        .json()
        .await
        .expect("jwks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_tokens_live_a_minute_at_least_shorter_only_when_allowed() {
    provider();
    let moto = Moto::start();
    let cluster = Cluster::new();
    let c = reqwest::Client::new();
    let sa = cluster.token("shop", "orders", None, "tokenvend", 3600);
    // 59 s without the allowance is refused at start, among the other refusals in
    // `bad_configuration_fails_at_start_naming_the_setting`.
    for (env, life) in [
        (vec![("TOKENVEND_TOKEN_TTL_SECONDS", "60".to_owned())], 60),
        (
            vec![
                ("TOKENVEND_TOKEN_TTL_SECONDS", "5".to_owned()),
                ("TOKENVEND_ALLOW_SHORT_SESSIONS", "true".to_owned()),
            ],
            5,
        ),
    ] {
        let sts = Sts::start(&moto, &cluster, &env);
        let (status, answer) = post(&c, &sts.url("/token"), Some(&sa), None).await;
        assert_eq!(status, 200, "{answer}");
        let claims = verify_web_identity(
            &keys_of(&c, &sts).await,
            answer["token"].as_str().expect("token"),
        )
        .expect("verifies");
        assert_eq!(
            claims["exp"]
                .as_i64()
                .zip(claims["iat"].as_i64())
                .map(|(e, i)| e - i),
            Some(life),
            "{claims}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_jwts_verify_across_key_rotation() {
    let (moto, cluster, sts, c) = started();
    let sa = cluster.token("shop", "orders", Some("orders-1"), "tokenvend", 3600);
    let (status, first) = post(&c, &sts.url("/token"), Some(&sa), None).await;
    assert_eq!(status, 200, "{first}");
    let first = first["token"].as_str().expect("token").to_owned();
    let jwks = keys_of(&c, &sts).await;
    let claims = verify_web_identity(&jwks, &first).expect("verifies");
    assert_eq!(claims["sub"], json!("system:serviceaccount:shop:orders"));
    assert_eq!(claims["kubernetes.io"]["pod"]["name"], json!("orders-1"));
    let disc: Value = c
        .get(sts.url("/.well-known/openid-configuration"))
        .send()
        .await
        .expect("disc")
        .json()
        .await
        .expect("json");
    assert_eq!(disc["jwks_uri"], json!("https://issuer.example.com/keys"));

    let metrics = || metrics_of(&c, &sts);
    let m = metrics().await;
    assert!(
        has_metric(
            &m,
            "tokenvend_sts_signing_key_reloads_total{result=\"ok\"} 1"
        ),
        "{m}"
    );
    assert!(
        has_metric(&m, "tokenvend_sts_signing_keys_published 1"),
        "{m}"
    );
    assert!(
        !m.contains("cert_not_after"),
        "no certificate metrics without TLS: {m}"
    );

    // Rotate: a newer key file signs; the old one is removed but stays published.
    // (Written as a Secret update lands: whole files, renamed into place.)
    put_key(&sts, "2026-02.pem", &p256_pem());
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        let (_, t) = post(&c, &sts.url("/token"), Some(&sa), None).await;
        let t = t["token"].as_str().expect("token").to_owned();
        if kid(&t) != kid(&first) {
            break t;
        }
        assert!(Instant::now() < deadline, "new key never used");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    std::fs::remove_file(sts.dir.path().join("keys/2026-01.pem")).expect("rm old key");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let jwks = keys_of(&c, &sts).await;
    assert_eq!(jwks.keys.len(), 2);
    verify_web_identity(&jwks, &first).expect("token of the removed key still verifies");
    verify_web_identity(&jwks, &second).expect("new token verifies");
    let m = metrics().await;
    for line in [
        "tokenvend_sts_signing_key_reloads_total{result=\"ok\"} 3",
        "tokenvend_sts_signing_keys_published 2",
    ] {
        assert!(has_metric(&m, line), "{line}: {m}");
    }
    assert!(!m.contains("result=\"error\""), "{m}");

    // A broken key file: the current key keeps signing, and the error is logged once, not on
    // every 1 s reload; its removal is logged as recovery.
    put_key(&sts, "2026-03.pem", "not a key");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (status, t) = post(&c, &sts.url("/token"), Some(&sa), None).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(kid(t["token"].as_str().expect("token")), kid(&second));
    let errors = |logs: &str| logs.matches("signing keys not reloaded").count();
    assert_eq!(errors(&sts.all_logs()), 1, "{}", sts.all_logs());
    assert!(sts.logged("2026-03.pem"), "the error names the file");
    std::fs::remove_file(sts.dir.path().join("keys/2026-03.pem")).expect("rm bad key");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sts
        .all_logs()
        .contains("signing key directory usable again")
    {
        assert!(Instant::now() < deadline, "recovery never logged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(errors(&sts.all_logs()), 1);
    let m = metrics().await;
    for line in [
        "tokenvend_sts_signing_key_reloads_total{result=\"ok\"} 3",
        "tokenvend_sts_signing_key_reloads_total{result=\"error\"} 1",
        "tokenvend_sts_signing_keys_published 2",
    ] {
        assert!(
            has_metric(&m, line),
            "counted once, like the log line: {line}: {m}"
        );
    }

    // AWS's side of the exchange, with moto: AssumeRoleWithWebIdentity accepts the token.
    assume_with_web_identity(&moto, ROLE, &second).await;
}

/// `tokenvend-sts issuer-docs` run on the key directory of `sts` into `site`, as an admin does
/// before uploading (here `site` is served as it is).
fn issuer_docs(sts: &Sts, site: &std::path::Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenvend-sts"))
        .env_clear()
        .env("TOKENVEND_ISSUER_URL", WEB_IDENTITY_ISSUER)
        .env("TOKENVEND_SIGNING_KEY_DIR", sts.dir.path().join("keys"))
        .args(["issuer-docs", "--out"])
        .arg(site)
        .output()
        .expect("issuer-docs");
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_published_jwks_url_keys_sign_once_uploaded_and_early_removals_are_flagged() {
    provider();
    let moto = Moto::start();
    let cluster = Cluster::new();
    // The public location AWS reads, served by a real static file server.
    let site = tempfile::tempdir().expect("site");
    let port = free_port();
    let _static_server = Proc(
        std::process::Command::new(venv_bin("python"))
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .current_dir(site.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("http.server"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "http.server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let published = format!("http://127.0.0.1:{port}/keys");
    let sts = Sts::start(
        &moto,
        &cluster,
        &[("TOKENVEND_PUBLISHED_JWKS_URL", published.clone())],
    );
    let c = reqwest::Client::new();
    let sa = cluster.token("shop", "orders", Some("orders-1"), "tokenvend", 3600);
    let metrics = || metrics_of(&c, &sts);

    // Nothing uploaded yet (404): nothing is signed, and the answer says what to do.
    let (status, resp) = post(&c, &sts.url("/token"), Some(&sa), None).await;
    assert_refused(status, &resp, 503, "upload the documents");
    assert!(
        resp.to_string().contains("2026-01.pem"),
        "names the key: {resp}"
    );
    let m = metrics().await;
    for line in [
        "tokenvend_sts_published_jwks_errors_total 1",
        "tokenvend_sts_signing_keys_unpublished 1",
    ] {
        assert!(has_metric(&m, line), "{line}: {m}");
    }

    // Uploaded: the key signs within a reload interval, and the hosted JWKS verifies its tokens.
    issuer_docs(&sts, site.path());
    let token_when = |want: &'static str| {
        let (c, sts, sa) = (&c, &sts, &sa);
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (status, t) = post(c, &sts.url("/token"), Some(sa), None).await;
                if status == 200 {
                    let t = t["token"].as_str().expect("token").to_owned();
                    if want.is_empty() || kid(&t) == want {
                        return t;
                    }
                }
                assert!(Instant::now() < deadline, "no token (kid {want:?}): {t}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let first = token_when("").await;
    let hosted = |site: &std::path::Path| -> JwkSet {
        serde_json::from_slice(&std::fs::read(site.join("keys")).expect("keys")).expect("jwks")
    };
    verify_web_identity(&hosted(site.path()), &first).expect("verifies with the hosted JWKS");
    assert!(sts.logged("published JWKS read again"));

    // A new key in the directory: published by tokenvend-sts at once, but it does not sign
    // while the hosted JWKS lacks it; the wait is logged once, not per check.
    put_key(&sts, "2026-02.pem", &p256_pem());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys = keys_of(&c, &sts).await;
        if keys.keys.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "new key never read");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let (status, t) = post(&c, &sts.url("/token"), Some(&sa), None).await;
    assert_eq!(status, 200, "{t}");
    let held = t["token"].as_str().expect("token");
    assert_eq!(kid(held), kid(&first), "the unpublished key must not sign");
    verify_web_identity(&hosted(site.path()), held).expect("still verifies with the hosted JWKS");
    let waits = sts
        .all_logs()
        .matches("newer signing keys are not in the published JWKS")
        .count();
    assert_eq!(waits, 1, "{}", sts.all_logs());
    assert!(sts.logged("2026-02.pem"), "the log names the waiting file");
    // Which key signs is logged when it changes: once so far, a key held back changes nothing.
    let switches = |sts: &Sts| {
        sts.all_logs()
            .matches("signing with the newest key the published JWKS lists")
            .count()
    };
    assert_eq!(switches(&sts), 1, "{}", sts.all_logs());
    let m = metrics().await;
    assert!(
        has_metric(&m, "tokenvend_sts_signing_keys_unpublished 1"),
        "{m}"
    );

    // Uploaded again: the new key signs, and its tokens verify with what AWS reads.
    issuer_docs(&sts, site.path());
    let jwks = hosted(site.path());
    let new_kid = jwks
        .keys
        .iter()
        .filter_map(|k| k.common.key_id.clone())
        .find(|k| *k != kid(&first))
        .expect("new kid uploaded");
    let new_kid: &'static str = Box::leak(new_kid.into_boxed_str());
    let second = token_when(new_kid).await;
    verify_web_identity(&hosted(site.path()), &second).expect("verifies with the hosted JWKS");
    let deadline = Instant::now() + Duration::from_secs(10);
    while switches(&sts) < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(switches(&sts), 2, "the new signer: {}", sts.all_logs());
    let m = metrics().await;
    for line in [
        "tokenvend_sts_signing_keys_unpublished 0",
        "tokenvend_sts_published_jwks_errors_total 1",
    ] {
        assert!(has_metric(&m, line), "{line}: {m}");
    }
    assert_eq!(
        sts.all_logs().matches("published JWKS not read").count(),
        1,
        "the 404 was logged once: {}",
        sts.all_logs()
    );

    // An upload without the old key while tokens it signed are still valid (removed too early):
    // AWS would refuse them, so it is a warning, once, and a gauge until it is listed again.
    let full = std::fs::read(site.path().join("keys")).expect("keys");
    let mut pruned: Value = serde_json::from_slice(&full).expect("jwks");
    let old_kid = kid(&first);
    pruned["keys"]
        .as_array_mut()
        .expect("keys")
        .retain(|k| k["kid"] != json!(old_kid));
    std::fs::write(site.path().join("keys"), pruned.to_string()).expect("upload");
    let unlisted = "the published JWKS does not list keys that signed tokens still valid";
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sts.all_logs().contains(unlisted) {
        assert!(
            Instant::now() < deadline,
            "never warned: {}",
            sts.all_logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let logs = sts.all_logs();
    assert_eq!(logs.matches(unlisted).count(), 1, "{logs}");
    let warning = logs.lines().find(|l| l.contains(unlisted)).expect("line");
    assert!(
        warning.contains("2026-01.pem") && warning.contains(&old_kid),
        "{warning}"
    );
    let m = metrics().await;
    assert!(
        has_metric(&m, "tokenvend_sts_signing_keys_unlisted 1"),
        "{m}"
    );
    std::fs::write(site.path().join("keys"), full).expect("upload");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !has_metric(&metrics().await, "tokenvend_sts_signing_keys_unlisted 0") {
        assert!(Instant::now() < deadline, "never listed again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        sts.all_logs()
            .contains("is missing from the published JWKS any more")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosted_jwks_that_never_answers_does_not_hold_up_key_reloads() {
    provider();
    let moto = Moto::start();
    let cluster = Cluster::new();
    // Accepts connections and never answers: each read of the published JWKS takes the whole
    // upstream timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming() {
            held.push(conn);
        }
    });
    let sts = Sts::start(
        &moto,
        &cluster,
        &[
            (
                "TOKENVEND_PUBLISHED_JWKS_URL",
                format!("http://127.0.0.1:{port}/keys"),
            ),
            ("TOKENVEND_UPSTREAM_TIMEOUT_SECONDS", "8".into()),
        ],
    );
    let c = reqwest::Client::new();
    // The start waited for the first read; from now on reads run beside the 1 s key reloads.
    put_key(&sts, "2026-02.pem", &p256_pem());
    let deadline = Instant::now() + Duration::from_secs(4);
    while keys_of(&c, &sts).await.keys.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the key reload waited for the published JWKS"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sa = cluster.token("shop", "orders", Some("orders-1"), "tokenvend", 3600);
    let (status, resp) = post(&c, &sts.url("/token"), Some(&sa), None).await;
    assert_refused(status, &resp, 503, "could not be read: fetch timed out");
}

/// AWS's side of a web-identity exchange, with moto: AssumeRoleWithWebIdentity of `role` with
/// `token`, as session `orders-1`; the assumed-role ARN.
async fn assume_with_web_identity(moto: &Moto, role: &str, token: &str) -> String {
    let conf = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("us-east-1"))
        .endpoint_url(moto.url())
        .build();
    let out = aws_sdk_sts::Client::from_conf(conf)
        .assume_role_with_web_identity()
        .role_arn(role)
        .role_session_name("orders-1")
        .web_identity_token(token)
        .send()
        .await
        .expect("AssumeRoleWithWebIdentity");
    assert!(out.credentials.is_some());
    out.assumed_role_user.map(|u| u.arn).unwrap_or_default()
}

/// An HTTPS client that trusts only the CA of `ca_pem`.
fn trusting_only(ca_pem: &str) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tls_backend_rustls()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("ca")])
}

/// tokenvend-sts serving HTTPS with the `tls.crt` and `tls.key` in `certs` (checked for changes
/// each second), with `extra` settings.
fn start_https(moto: &Moto, cluster: &Cluster, certs: &Path, extra: &[(&str, String)]) -> Sts {
    let file = |name: &str| certs.join(name).display().to_string();
    let mut env = vec![
        ("TOKENVEND_TLS_CERT", file("tls.crt")),
        ("TOKENVEND_TLS_KEY", file("tls.key")),
        ("TOKENVEND_CERT_RELOAD_SECONDS", "1".into()),
    ];
    env.extend(extra.iter().cloned());
    Sts::start(moto, cluster, &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_discovery_over_https_trusts_the_oidc_ca_file() {
    provider();
    let moto = Moto::start();
    let cluster = Cluster::new();
    // The OIDC issuer: another tokenvend-sts over HTTPS from a private CA, minting tokens for
    // service accounts (its discovery and /keys are what plain OIDC discovery reads).
    let certs = tempfile::tempdir().expect("tmp");
    let (ca_cert, _key, ca) = tls::ca("issuer-ca");
    let pair = tls::leaf(&ca_cert, &ca);
    tls::install(certs.path(), &pair);
    std::fs::write(certs.path().join("ca.pem"), &pair.ca_pem).expect("ca");
    let port = free_port();
    let issuer_url = format!("https://localhost:{port}");
    let issuer = start_https(
        &moto,
        &cluster,
        certs.path(),
        &[
            ("TOKENVEND_LISTEN", format!("127.0.0.1:{port}")),
            ("TOKENVEND_ISSUER_URL", issuer_url.clone()),
            ("TOKENVEND_ISSUED_AUDIENCE", "tokenvend".into()),
        ],
    );
    let c = trusting_only(&pair.ca_pem).build().expect("client");
    let sa = cluster.token("shop", "orders", Some("orders-1"), "tokenvend", 3600);
    let (status, minted) = post(&c, &format!("{issuer_url}/token"), Some(&sa), None).await;
    assert_eq!(status, 200, "{minted}");
    let minted = minted["token"].as_str().expect("token").to_owned();

    // A tokenvend-sts validating by plain discovery of that issuer: with its CA it starts and
    // takes the issuer's tokens; without, the system roots refuse the issuer at start.
    let ca_file = certs.path().join("ca.pem").display().to_string();
    let validating = |ca: Option<&str>| {
        let mut env = vec![("TOKENVEND_OIDC_ISSUER", issuer_url.clone())];
        env.extend(ca.map(|f| ("TOKENVEND_OIDC_CA_FILE", f.to_owned())));
        env
    };
    let sts = Sts::start_without(
        &moto,
        &cluster,
        &validating(Some(&ca_file)),
        &["TOKENVEND_JWKS_FILE"],
    );
    vended_to_shop_orders(&reqwest::Client::new(), &sts, &moto, &minted).await;
    drop(sts);
    let err = refused_at_start(&[
        ("TOKENVEND_VALIDATION", "jwks"),
        ("TOKENVEND_OIDC_ISSUER", &issuer_url),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ROLE_ARN", ROLE),
        ("POLICY_TEMPLATE_PATH", ""),
    ]);
    assert!(
        err.contains("OIDC discovery") && err.contains("UnknownIssuer"),
        "{err}"
    );
    drop(issuer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_certificate_reloads_are_counted_in_metrics() {
    provider();
    let moto = Moto::start();
    let cluster = Cluster::new();
    let certs = tempfile::tempdir().expect("tmp");
    let (ca_cert, _key, issuer) = tls::ca("sts-ca");
    let (first, second) = (tls::leaf(&ca_cert, &issuer), tls::leaf(&ca_cert, &issuer));
    tls::install(certs.path(), &first);
    let sts = start_https(&moto, &cluster, certs.path(), &[]);
    let c = trusting_only(&first.ca_pem)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let url = format!("https://localhost:{}/metrics", sts.addr.port());
    let metrics = || async {
        c.get(&url)
            .send()
            .await
            .expect("metrics over HTTPS")
            .text()
            .await
            .expect("text")
    };
    let value = |text: &str, name: &str| -> Option<i64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    let (ok, err) = (
        "tokenvend_sts_cert_reloads_total{result=\"ok\"}",
        "tokenvend_sts_cert_reloads_total{result=\"error\"}",
    );
    let m = metrics().await;
    assert_eq!(value(&m, ok), Some(1), "{m}");
    assert_eq!(value(&m, err), None, "{m}");
    let not_after = value(&m, "tokenvend_sts_cert_not_after_seconds").expect("notAfter");
    assert!(not_after > now(), "{m}");

    // A broken certificate file: rejected once, not once per 1 s check; serving goes on.
    let tmp = certs.path().join(".tls.crt.tmp");
    std::fs::write(&tmp, "not a certificate").expect("write");
    std::fs::rename(&tmp, certs.path().join("tls.crt")).expect("rename");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let m = metrics().await;
    assert_eq!((value(&m, ok), value(&m, err)), (Some(1), Some(1)), "{m}");
    assert_eq!(
        value(&m, "tokenvend_sts_cert_not_after_seconds"),
        Some(not_after),
        "the certificate in use is still the first: {m}"
    );

    // A good pair again: loaded and counted.
    tls::install(certs.path(), &second);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = metrics().await;
        if value(&m, ok) == Some(2) {
            assert_eq!(value(&m, err), Some(1), "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "new pair never loaded: {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Calls `probe` every 200 ms until its answer is `done`, for at most 20 s; fails naming `what`
/// and the last answer.
async fn poll_until<T: std::fmt::Debug, F: std::future::Future<Output = T>>(
    probe: impl Fn() -> F,
    done: impl Fn(&T) -> bool,
    what: &str,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = probe().await;
        if done(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "not {what}: {answer:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_certificate_expires_or_is_not_valid_yet_is_not_ready_and_says_so() {
    provider();
    let moto = Moto::start();
    let cluster = Cluster::new();
    let certs = tempfile::tempdir().expect("tmp");
    let (ca_cert, _key, issuer) = tls::ca("sts-ca");
    // Valid for a few seconds more, then expired in use with no new files.
    let expires = now() + 6;
    tls::install(
        certs.path(),
        &tls::leaf_between(&ca_cert, &issuer, now() - 3600, expires),
    );
    let sts = start_https(&moto, &cluster, certs.path(), &[]);
    // As the kubelet probes over HTTPS: without verifying the certificate.
    let probe = reqwest::Client::builder()
        .tls_backend_rustls()
        .tls_danger_accept_invalid_certs(true)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let url = format!("https://localhost:{}/readyz", sts.addr.port());
    let readyz = || async {
        let r = probe.get(&url).send().await.expect("readyz");
        (r.status().as_u16(), r.json::<Value>().await.expect("json"))
    };
    let first = readyz().await;
    if now() < expires {
        assert_eq!(first, (200, json!({"status": "ready"})));
    }
    let expired = json!({
        "status": "not ready",
        "reason": format!("serving certificate expired at {}", tokenvend_core::clock::rfc3339(expires)),
    });
    poll_until(
        readyz,
        |r| *r == (503, expired.clone()),
        "refused as expired",
    )
    .await;
    // The watcher's next check (each second) logs it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let warning = format!(
        "serving certificate expired at {}: TLS clients refuse it",
        tokenvend_core::clock::rfc3339(expires)
    );
    while !sts.all_logs().contains(&warning) {
        assert!(Instant::now() < deadline, "{}", sts.all_logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A renewal whose validity starts tomorrow (the issuer's clock ahead): still not ready.
    let tomorrow = now() + 86_400;
    tls::install(
        certs.path(),
        &tls::leaf_between(&ca_cert, &issuer, tomorrow, tomorrow + 86_400),
    );
    let not_yet = json!({
        "status": "not ready",
        "reason": format!(
            "serving certificate not valid before {} (is this machine's clock right?)",
            tokenvend_core::clock::rfc3339(tomorrow)
        ),
    });
    poll_until(
        readyz,
        |r| *r == (503, not_yet.clone()),
        "refused as not valid yet",
    )
    .await;

    // A renewed pair: loaded at the next check, ready again.
    tls::install(certs.path(), &tls::leaf(&ca_cert, &issuer));
    poll_until(readyz, |r| r.0 == 200, "ready again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_bundle_is_served_as_its_file_is_now_and_a_broken_one_is_named() {
    provider();
    let moto = Moto::start();
    let cluster = Cluster::new();
    let plain = Sts::start(&moto, &cluster, &[]);
    let c = reqwest::Client::new();
    let resp = c.get(plain.url("/ca-bundle")).send().await.expect("get");
    assert_eq!(resp.status(), 404, "not configured");
    let body = resp.text().await.expect("text");
    assert!(body.contains("TOKENVEND_CA_BUNDLE_FILE"), "{body}");

    let certs = tempfile::tempdir().expect("tmp");
    let (old_ca, _, old_issuer) = tls::ca("old");
    let (new_ca, _, _) = tls::ca("new");
    let pair = tls::leaf(&old_ca, &old_issuer);
    tls::install(certs.path(), &pair);
    let bundle = certs.path().join("ca.crt");
    let replace = |text: &str| {
        let tmp = certs.path().join(".ca.crt.tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, &bundle).expect("rename");
    };
    replace(&pair.ca_pem);
    let file = |name: &str| certs.path().join(name).display().to_string();
    let sts = start_https(
        &moto,
        &cluster,
        certs.path(),
        &[("TOKENVEND_CA_BUNDLE_FILE", file("ca.crt"))],
    );
    let c = trusting_only(&pair.ca_pem)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let url = format!("https://localhost:{}/ca-bundle", sts.addr.port());
    let get = || async {
        let resp = c.get(&url).send().await.expect("GET /ca-bundle");
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (content_type, cache) = (header("content-type"), header("cache-control"));
        let status = resp.status().as_u16();
        (
            status,
            content_type,
            cache,
            resp.text().await.expect("text"),
        )
    };
    let (status, content_type, cache, body) = get().await;
    assert_eq!(status, 200);
    assert_eq!(content_type.as_deref(), Some("application/x-pem-file"));
    assert_eq!(cache.as_deref(), Some("no-store"));
    assert_eq!(body, pair.ca_pem);

    // The certs job's rotation adds the new CA beside the old: served at once, no reload wait.
    let both = format!("{}{}", new_ca.pem(), old_ca.pem());
    replace(&both);
    assert_eq!(get().await.3, both);

    // A broken file: a 503 naming it, logged; the rest of the service is untouched.
    replace("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n");
    let (status, _, _, body) = get().await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(&format!("CA bundle {}: not a PEM bundle", file("ca.crt"))),
        "{body}"
    );
    let health = format!("https://localhost:{}/healthz", sts.addr.port());
    assert_eq!(c.get(&health).send().await.expect("healthz").status(), 200);
    assert!(
        sts.logged("the CA bundle file is not usable"),
        "{}",
        sts.all_logs()
    );
    replace(&both);
    assert_eq!(get().await.0, 200);
}

/// moto, the cluster's key, the kube-apiserver stand-in signing with it, and a kubeconfig for
/// the stand-in (in a directory that lives as long as `_dir`).
struct WithApi {
    moto: Moto,
    cluster: Arc<Cluster>,
    standin: ApiServerStandIn,
    kubeconfig: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl WithApi {
    /// Point the kubeconfig at a [`closing_relay`] in front of the stand-in; returns the
    /// relay's count of connections still to close.
    async fn through_closing_relay(&self) -> Arc<AtomicUsize> {
        let drops = Arc::new(AtomicUsize::new(0));
        let relay = closing_relay(self.standin.port, drops.clone()).await;
        let via_relay = std::fs::read_to_string(&self.kubeconfig)
            .expect("kubeconfig")
            .replace(
                &format!("127.0.0.1:{}", self.standin.port),
                &format!("127.0.0.1:{relay}"),
            );
        std::fs::write(&self.kubeconfig, via_relay).expect("kubeconfig");
        drops
    }
}

async fn with_api() -> WithApi {
    provider();
    let moto = Moto::start();
    let cluster = Arc::new(Cluster::new());
    let standin = ApiServerStandIn::start(cluster.clone()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let kubeconfig = standin.kubeconfig(dir.path());
    WithApi {
        moto,
        cluster,
        standin,
        kubeconfig,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenreview_through_the_apiserver_stand_in() {
    let mut api = with_api().await;
    let sts = Sts::start(
        &api.moto,
        &api.cluster,
        &[
            ("TOKENVEND_VALIDATION", "tokenreview".into()),
            ("KUBECONFIG", api.kubeconfig.display().to_string()),
            ("TOKENVEND_VALIDATION_CACHE_SECONDS", "30".into()),
        ],
    );
    let c = reqwest::Client::new();
    let token = api
        .cluster
        .token("shop", "orders", Some("orders-7"), "tokenvend", 3600);
    vended_to_shop_orders(&c, &sts, &api.moto, &token).await;
    {
        let reviews = api.standin.reviews.lock().expect("reviews");
        assert_eq!(reviews.len(), 1);
        assert_eq!(reviews[0]["spec"]["audiences"], json!(["tokenvend"]));
        assert_eq!(reviews[0]["apiVersion"], json!("authentication.k8s.io/v1"));
    }
    // Cached: the second request does not review again.
    post(&c, &sts.url("/credentials"), Some(&token), None).await;
    assert_eq!(api.standin.reviews.lock().expect("reviews").len(), 1);

    a_token_for_another_audience_is_refused(&c, &sts, &api.cluster).await;
    a_token_for_a_pod_no_cluster_could_name_is_refused(&c, &sts, &api.cluster).await;

    api.standin.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, resp) = post(
        &c,
        &sts.url("/credentials"),
        Some(&api.cluster.token("shop", "new", None, "tokenvend", 3600)),
        None,
    )
    .await;
    assert_refused(status, &resp, 503, "unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokenreview_whose_connection_closes_under_it_is_asked_once_more() {
    let api = with_api().await;
    let drops = api.through_closing_relay().await;
    let sts = Sts::start(
        &api.moto,
        &api.cluster,
        &[
            ("TOKENVEND_VALIDATION", "tokenreview".into()),
            ("KUBECONFIG", api.kubeconfig.display().to_string()),
        ],
    );
    let c = reqwest::Client::new();
    let ask = |sa: &str| {
        let token = api.cluster.token("shop", sa, None, "tokenvend", 3600);
        let (c, url) = (c.clone(), sts.url("/credentials"));
        async move { post(&c, &url, Some(&token), None).await }
    };
    let reviews = || api.standin.reviews.lock().expect("reviews").len();

    // A first review; the client keeps its connection for the next.
    let (status, resp) = ask("orders").await;
    assert_eq!(status, 200, "{resp} {}", sts.all_logs());
    // The next review's connection is closed as the review is written: asked once more, answered.
    drops.store(1, Ordering::SeqCst);
    let (status, resp) = ask("billing").await;
    assert_eq!(status, 200, "{resp} {}", sts.all_logs());
    assert_eq!(drops.load(Ordering::SeqCst), 0, "no connection was closed");
    assert_eq!(reviews(), 2);
    // Once only: when the second connection closes as well, 503 as before.
    drops.store(2, Ordering::SeqCst);
    let (status, resp) = ask("payments").await;
    assert_refused(status, &resp, 503, "unavailable");
    assert_eq!(drops.load(Ordering::SeqCst), 0, "not asked twice");
    assert_eq!(reviews(), 2);
    assert!(
        sts.logged(
            "\"message\":\"Kubernetes API request got no answer; retrying once\",\"request\":\"TokenReview\""
        ),
        "{}",
        sts.all_logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_api_get_whose_connection_closes_unanswered_is_sent_once_more() {
    // The issuer and keys fetched through the API at start and after a rotation are GETs: one
    // whose connection closes before an answer is sent again, as a TokenReview is.
    let api = with_api().await;
    let drops = api.through_closing_relay().await;
    drops.store(1, Ordering::SeqCst);
    let sts = Sts::start_without(
        &api.moto,
        &api.cluster,
        &[
            ("TOKENVEND_VALIDATION", "jwks".into()),
            ("KUBECONFIG", api.kubeconfig.display().to_string()),
        ],
        &["TOKENVEND_OIDC_ISSUER", "TOKENVEND_JWKS_FILE"],
    );
    assert_eq!(drops.load(Ordering::SeqCst), 0, "no connection was closed");
    let token = api.cluster.token("shop", "orders", None, "tokenvend", 3600);
    vended_to_shop_orders(&reqwest::Client::new(), &sts, &api.moto, &token).await;
    assert_eq!(
        api.standin.store.lock().expect("store").oidc_gets,
        ["/.well-known/openid-configuration", "/openid/v1/jwks"]
    );
    assert!(
        sts.logged(
            "\"message\":\"Kubernetes API request got no answer; retrying once\",\"request\":\"/.well-known/openid-configuration\""
        ),
        "{}",
        sts.all_logs()
    );
}

/// A plain-HTTP forward proxy in front of `target`: relays bytes and records each request line.
async fn recording_proxy(target: u16) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let port = relay(target, move |chunk| {
        let head = String::from_utf8_lossy(chunk);
        if let Some(line) = head.lines().next().filter(|l| l.ends_with("HTTP/1.1")) {
            record.lock().expect("seen").push(line.to_owned());
        }
        true
    })
    .await;
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_calls_go_through_the_proxy_the_environment_names() {
    provider();
    let moto = Moto::start();
    let cluster = Cluster::new();
    let (proxy, seen) = recording_proxy(moto.port).await;
    let c = reqwest::Client::new();
    let token = cluster.token("shop", "orders", None, "tokenvend", 3600);

    // Egress through a proxy, as clusters without direct access to AWS configure it.
    let sts = Sts::start(
        &moto,
        &cluster,
        &[("HTTP_PROXY", format!("http://127.0.0.1:{proxy}"))],
    );
    let (status, resp) = post(&c, &sts.url("/credentials"), Some(&token), None).await;
    assert_eq!(status, 200, "{resp} {}", sts.all_logs());
    let lines = seen.lock().expect("seen").clone();
    assert_eq!(
        lines,
        [format!("POST {}/ HTTP/1.1", moto.url())],
        "one AssumeRole, in the absolute form a proxy is sent"
    );
    drop(sts);

    // NO_PROXY exempts the endpoint's host.
    let sts = Sts::start(
        &moto,
        &cluster,
        &[
            ("HTTP_PROXY", format!("http://127.0.0.1:{proxy}")),
            ("NO_PROXY", "127.0.0.1".into()),
        ],
    );
    let token = cluster.token("shop", "billing", None, "tokenvend", 3600);
    let (status, resp) = post(&c, &sts.url("/credentials"), Some(&token), None).await;
    assert_eq!(status, 200, "{resp} {}", sts.all_logs());
    assert_eq!(
        seen.lock().expect("seen").len(),
        1,
        "nothing more through the proxy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_irsa_the_service_never_vends_its_own_role() {
    provider();
    let moto = Moto::start();
    let cluster = Cluster::new();
    let dir = tempfile::tempdir().expect("tmp");
    // What IRSA injects: a projected token and the service's own role, beside the manifest's
    // role to vend. No static keys (blank is unset for the SDK).
    let web_identity = dir.path().join("token");
    std::fs::write(
        &web_identity,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0b2tlbnZlbmQifQ.c2ln",
    )
    .expect("token");
    let own = "arn:aws:iam::123456789012:role/tokenvend-sts";
    let with_irsa = |extra: &[(&'static str, &str)]| {
        let mut env = vec![
            ("AWS_ACCESS_KEY_ID", String::new()),
            ("AWS_SECRET_ACCESS_KEY", String::new()),
            ("AWS_ROLE_ARN", own.to_owned()),
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                web_identity.display().to_string(),
            ),
            ("TOKENVEND_ROLE_ARN", ROLE.to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        Sts::start(&moto, &cluster, &env)
    };
    let sts = with_irsa(&[]);
    let c = reqwest::Client::new();
    let token = cluster.token("shop", "orders", None, "tokenvend", 3600);
    vended_to_shop_orders(&c, &sts, &moto, &token).await;
    // The SDK signed in with the web identity as the service's own role, then assumed the other.
    let sign_ins = moto.calls("AssumeRoleWithWebIdentity");
    assert_eq!(sign_ins.len(), 1, "{sign_ins:?}");
    assert!(
        sign_ins[0].contains("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Ftokenvend-sts"),
        "{sign_ins:?}"
    );
    let vended = moto.calls("AssumeRole");
    assert_eq!(vended.len(), 1, "{vended:?}");
    assert!(
        vended[0].contains("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Ftvm"),
        "{vended:?}"
    );
    drop(sts);

    // Without TOKENVEND_ROLE_ARN, a service that also issues tokens starts with /credentials off
    // and says why, rather than vending its own role.
    let sts = Sts::start(
        &moto,
        &cluster,
        &[
            ("AWS_ROLE_ARN", own.into()),
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                web_identity.display().to_string(),
            ),
        ],
    );
    let (status, resp) = post(&c, &sts.url("/credentials"), Some(&token), None).await;
    assert_refused(status, &resp, 404, "TOKENVEND_ROLE_ARN");
    let (status, resp) = post(&c, &sts.url("/token"), Some(&token), None).await;
    assert_eq!(status, 200, "{resp}");
    assert!(
        sts.all_logs()
            .contains("POST /credentials stays off: AWS_ROLE_ARN"),
        "{}",
        sts.all_logs()
    );
    assert_eq!(moto.calls("AssumeRole").len(), 1, "no more STS calls");
    drop(sts);

    // AWS limits a role assumed from a role session to an hour: a longer session is warned about
    // at start (moto does not enforce the limit, so the calls themselves are not the test).
    let sts = with_irsa(&[("SESSION_DURATION_SECONDS", "7200")]);
    assert!(
        sts.logged(
            "SESSION_DURATION_SECONDS 7200: tokenvend-sts signs in as a role (AWS_WEB_IDENTITY_TOKEN_FILE, IRSA)"
        ),
        "{}",
        sts.all_logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_eks_pod_identity_the_service_signs_with_the_agents_credentials() {
    provider();
    let moto = Moto::start();
    let cluster = Cluster::new();
    let dir = tempfile::tempdir().expect("tmp");
    // A STAND-IN for the EKS Pod Identity agent (it cannot run here), as the SDK's container
    // provider calls it: GET on the full URI with the token file's content as Authorization.
    let token_file = dir.path().join("eks-pod-identity-token");
    std::fs::write(&token_file, "agent-token").expect("token");
    let asked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = asked.clone();
    let agent = axum::Router::new().route(
        "/v1/credentials",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let seen = seen.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                seen.lock().expect("asked").push(auth.clone());
                if auth != "agent-token" {
                    return (axum::http::StatusCode::UNAUTHORIZED, "{}".to_owned());
                }
                let body = json!({
                    "AccessKeyId": "ASIAPODIDENTITY00001",
                    "SecretAccessKey": "podidentitysecret",
                    "Token": "pod-identity-session",
                    "AccountId": "123456789012",
                    "Expiration": "2099-01-01T00:00:00Z",
                });
                (axum::http::StatusCode::OK, body.to_string())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, agent).await });

    // What EKS Pod Identity injects: the agent's URI and token file, and no AWS_ROLE_ARN; no
    // static keys (blank is unset for the SDK).
    let env = [
        ("AWS_ACCESS_KEY_ID", String::new()),
        ("AWS_SECRET_ACCESS_KEY", String::new()),
        ("AWS_ROLE_ARN", String::new()),
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("http://127.0.0.1:{port}/v1/credentials"),
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        ("TOKENVEND_ROLE_ARN", ROLE.into()),
    ];
    let sts = Sts::start(&moto, &cluster, &env);
    let c = reqwest::Client::new();
    let token = cluster.token("shop", "orders", None, "tokenvend", 3600);
    vended_to_shop_orders(&c, &sts, &moto, &token).await;
    assert_eq!(
        moto.signers("AssumeRole"),
        vec![(
            "ASIAPODIDENTITY00001".to_owned(),
            Some("pod-identity-session".to_owned())
        )],
        "the vended role was assumed with the agent's credentials"
    );
    let asked = asked.lock().expect("asked").clone();
    assert!(
        !asked.is_empty() && asked.iter().all(|a| a == "agent-token"),
        "{asked:?}"
    );
    let logs = sts.all_logs();
    for secret in ["podidentitysecret", "pod-identity-session", "agent-token"] {
        assert!(!logs.contains(secret), "{secret} logged: {logs}");
    }
    drop(sts);

    // The agent refuses (a stale token): the error says it was the service's own credentials,
    // not that STS could not be reached.
    std::fs::write(&token_file, "stale-token").expect("token");
    let sts = Sts::start(&moto, &cluster, &env);
    let (status, resp) = post(&c, &sts.url("/credentials"), Some(&token), None).await;
    assert_refused(
        status,
        &resp,
        500,
        "STS AssumeRole failed: request not sent: ",
    );
    assert!(
        resp["error"]
            .as_str()
            .is_some_and(|e| e.contains("loading credentials") && e.contains("401")),
        "{resp}"
    );
    assert_eq!(moto.calls("AssumeRole").len(), 1, "nothing sent to STS");
    assert!(!sts.all_logs().contains("stale-token"));
}

/// Asks `sts` for credentials with `token` (of shop/orders) and checks they are a session of the
/// vended role for shop/orders.
async fn vended_to_shop_orders(c: &reqwest::Client, sts: &Sts, moto: &Moto, token: &str) {
    let (status, creds) = post(c, &sts.url("/credentials"), Some(token), None).await;
    assert_eq!(status, 200, "{creds} {}", sts.all_logs());
    assert_eq!(
        caller_arn(moto, &creds).await,
        "arn:aws:sts::123456789012:assumed-role/tvm/shop.orders"
    );
}

/// A token the cluster signed for another audience: 401 naming the audience.
async fn a_token_for_another_audience_is_refused(
    c: &reqwest::Client,
    sts: &Sts,
    cluster: &Cluster,
) {
    let other = cluster.token("shop", "orders", None, "other", 3600);
    let (status, resp) = post(c, &sts.url("/credentials"), Some(&other), None).await;
    assert_refused(status, &resp, 401, "audience");
}

/// A token the cluster signed, bound to a pod whose name Kubernetes could not have given: 401
/// naming the part, before the name can reach the policy template as text.
async fn a_token_for_a_pod_no_cluster_could_name_is_refused(
    c: &reqwest::Client,
    sts: &Sts,
    cluster: &Cluster,
) {
    let odd = cluster.token("shop", "orders", Some(r#"orders-7","x"#), "tokenvend", 3600);
    let (status, resp) = post(c, &sts.url("/credentials"), Some(&odd), None).await;
    assert_refused(
        status,
        &resp,
        401,
        "the pod name is not one Kubernetes allows",
    );
}

/// The status and the JSON error of a refused request: `want`, and an error saying `says`.
fn assert_refused(status: u16, resp: &Value, want: u16, says: &str) {
    assert_eq!(status, want, "{says}: {resp}");
    assert!(
        resp["error"].as_str().is_some_and(|e| e.contains(says)),
        "{says}: {resp}"
    );
}

/// Run tokenvend-sts with only `env`, expect it to refuse to start; its stderr. Bounded: a
/// configuration that is wrongly accepted ends in a server that never exits.
fn refused_at_start(env: &[(&str, &str)]) -> String {
    let out = output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_tokenvend-sts"))
            .env_clear()
            .envs(env.iter().copied()),
        Duration::from_secs(20),
    );
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_validation_without_an_issuer_gets_the_keys_through_the_kubernetes_api() {
    // A Kubernetes API server answers its issuer's discovery document and JWKS only to
    // authenticated clients (the default RBAC lets every service account read them), and its
    // jwks_uri names its advertised address, which pods may not reach. Plain OIDC discovery of
    // a self-managed cluster's issuer (kubeadm, kind, k3s) therefore cannot work.
    let api = with_api().await;
    let kubeconfig = api.kubeconfig.display().to_string();
    let sts = Sts::start_without(
        &api.moto,
        &api.cluster,
        &[
            ("TOKENVEND_VALIDATION", "jwks".into()),
            ("KUBECONFIG", kubeconfig.clone()),
            ("TOKENVEND_OIDC_CA_FILE", "/etc/ssl/forgotten.pem".into()),
        ],
        &["TOKENVEND_OIDC_ISSUER", "TOKENVEND_JWKS_FILE"],
    );
    let c = reqwest::Client::new();
    let token = api
        .cluster
        .token("shop", "orders", Some("orders-7"), "tokenvend", 3600);
    vended_to_shop_orders(&c, &sts, &api.moto, &token).await;
    // Verified locally with the keys the API gave, for the issuer it named: no review.
    assert!(api.standin.reviews.lock().expect("reviews").is_empty());
    assert_eq!(
        api.standin.store.lock().expect("store").oidc_gets,
        ["/.well-known/openid-configuration", "/openid/v1/jwks"]
    );
    assert!(
        sts.all_logs()
            .contains(&format!("\"issuer\":\"{CLUSTER_ISSUER}\"")),
        "{}",
        sts.all_logs()
    );
    // A setting that no longer applies is not silently ignored.
    assert!(
        sts.logged(
            "TOKENVEND_OIDC_CA_FILE is not used: it is the CA of --oidc-issuer's discovery, and \
             the keys come from the Kubernetes API (with its own CA)"
        ),
        "{}",
        sts.all_logs()
    );
    // Not set, it is not mentioned (keys from a file, as `Sts::start` gives them): once a
    // request is logged, every line from the start is in.
    let from_file = Sts::start(&api.moto, &api.cluster, &[]);
    let (status, _) = post(&c, &from_file.url("/token"), Some(&token), None).await;
    assert_eq!(status, 200);
    assert!(from_file.logged("\"exchange\""), "{}", from_file.all_logs());
    assert!(
        !from_file.all_logs().contains("TOKENVEND_OIDC_CA_FILE"),
        "{}",
        from_file.all_logs()
    );
    // Validation is as strict as ever.
    a_token_for_another_audience_is_refused(&c, &sts, &api.cluster).await;
    a_token_for_a_pod_no_cluster_could_name_is_refused(&c, &sts, &api.cluster).await;

    let base = [
        ("TOKENVEND_VALIDATION", "jwks"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ROLE_ARN", ROLE),
        ("POLICY_TEMPLATE_PATH", ""),
    ];
    let with = |extra: &[(&'static str, &str)]| {
        let mut env: Vec<(&str, String)> =
            base.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        env
    };
    let refused = |env: Vec<(&str, String)>| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        refused_at_start(&env)
    };
    // Plain discovery of the API server, as before: refused, and told what works.
    let standin_url = format!("http://127.0.0.1:{}", api.standin.port);
    let err = refused(with(&[("TOKENVEND_OIDC_ISSUER", &standin_url)]));
    assert!(
        err.contains("401 Unauthorized")
            && err.contains("unset TOKENVEND_OIDC_ISSUER and TOKENVEND_JWKS_FILE"),
        "{err}"
    );
    // RBAC that withholds the documents is named.
    api.standin
        .store
        .lock()
        .expect("store")
        .forbidden
        .insert(("get".into(), "/.well-known/openid-configuration".into()));
    let err = refused(with(&[("KUBECONFIG", &kubeconfig)]));
    assert!(
        err.contains("GET /.well-known/openid-configuration: 403 Forbidden")
            && err.contains("system:service-account-issuer-discovery"),
        "{err}"
    );
    // A JWKS file says nothing of the issuer the tokens must name.
    let err = refused(with(&[("TOKENVEND_JWKS_FILE", "/dev/null")]));
    assert!(
        err.contains("--jwks-file (TOKENVEND_JWKS_FILE) needs --oidc-issuer"),
        "{err}"
    );
}

#[test]
fn bad_configuration_fails_at_start_naming_the_setting() {
    let dir = tempfile::tempdir().expect("tmp");
    let policy = dir.path().join("p.json");
    std::fs::write(&policy, r#"{"R":"arn:aws:s3:::b/${namespace}/*"}"#).expect("write");
    let run = refused_at_start;
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, r#"{"keys":[]}"#).expect("write");
    let base = [
        ("TOKENVEND_VALIDATION", "jwks"),
        ("TOKENVEND_OIDC_ISSUER", "https://k8s"),
        ("TOKENVEND_JWKS_FILE", jwks.to_str().expect("path")),
        ("AWS_REGION", "us-east-1"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        base.iter()
            .copied()
            .chain(extra.iter().copied())
            .collect::<Vec<_>>()
    };
    let p = policy.to_str().expect("path").to_owned();
    let p: &'static str = Box::leak(p.into_boxed_str());
    let err = run(&with(&[
        ("AWS_ROLE_ARN", ROLE),
        ("POLICY_TEMPLATE_PATH", p),
    ]));
    assert!(
        err.contains("${namespace}") && err.contains("{{ namespace }}"),
        "{err}"
    );
    let err = run(&with(&[("AWS_ROLE_ARN", "tvm")]));
    assert!(err.contains("AWS_ROLE_ARN"), "{err}");
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("keys dir");
    std::fs::write(keys.join("k.pem"), p256_pem()).expect("key");
    let keys: &'static str = Box::leak(keys.to_str().expect("path").to_owned().into_boxed_str());
    let err = run(&with(&[
        ("TOKENVEND_ISSUER_URL", "https://issuer.example.com"),
        ("TOKENVEND_SIGNING_KEY_DIR", keys),
        ("TOKENVEND_PUBLISHED_JWKS_URL", "s3://bucket/keys"),
    ]));
    assert!(
        err.contains(
            "(TOKENVEND_PUBLISHED_JWKS_URL) \"s3://bucket/keys\" must be an http:// or https:// URL"
        ),
        "{err}"
    );
    // An issuer URL AWS could not read discovery under, or compare with a token's iss.
    for (url, says) in [
        (
            "https://issuer.example.com/?cluster=a",
            "must not have a query or fragment",
        ),
        (
            "https://issuer.example.com:99999",
            "is not a URL: invalid port number",
        ),
        ("issuer.example.com", "must be an http:// or https:// URL"),
    ] {
        let err = run(&with(&[
            ("TOKENVEND_ISSUER_URL", url),
            ("TOKENVEND_SIGNING_KEY_DIR", keys),
        ]));
        assert!(
            err.contains(&format!(
                "--issuer-url (TOKENVEND_ISSUER_URL) {url:?} {says}"
            )),
            "{url}: {err}"
        );
    }
    let err = run(&with(&[(
        "TOKENVEND_PUBLISHED_JWKS_URL",
        "https://issuer.example.com/keys",
    )]));
    assert!(err.contains("--issuer-url"), "needs an issuer: {err}");
    // A second short of a minute, without the allowance (the positive side is
    // `minted_tokens_live_a_minute_at_least_shorter_only_when_allowed`).
    let err = run(&with(&[
        ("TOKENVEND_ISSUER_URL", "https://issuer.example.com"),
        ("TOKENVEND_SIGNING_KEY_DIR", keys),
        ("TOKENVEND_TOKEN_TTL_SECONDS", "59"),
    ]));
    assert!(
        err.contains("TOKENVEND_TOKEN_TTL_SECONDS 59 must be between 60 and 43200"),
        "{err}"
    );
    // The CA bundle sidecars fetch: only beside a certificate, and it must be one.
    let garbage = dir.path().join("ca.crt");
    std::fs::write(&garbage, "not a bundle").expect("write");
    let garbage: &'static str =
        Box::leak(garbage.to_str().expect("path").to_owned().into_boxed_str());
    let err = run(&with(&[
        ("AWS_ROLE_ARN", ROLE),
        ("POLICY_TEMPLATE_PATH", ""),
        ("TOKENVEND_CA_BUNDLE_FILE", garbage),
    ]));
    assert!(err.contains("--tls-cert"), "needs a certificate: {err}");
    for (file, says) in [
        ("/nonexistent/ca.crt", "No such file"),
        (garbage, "no PEM certificate found"),
        ("/dev/zero", "larger than 64 KiB"),
    ] {
        let err = run(&with(&[
            ("AWS_ROLE_ARN", ROLE),
            ("POLICY_TEMPLATE_PATH", ""),
            ("TOKENVEND_TLS_CERT", "/nonexistent/tls.crt"),
            ("TOKENVEND_TLS_KEY", "/nonexistent/tls.key"),
            ("TOKENVEND_CA_BUNDLE_FILE", file),
        ]));
        assert!(
            err.contains(&format!("TOKENVEND_CA_BUNDLE_FILE {file}: ")) && err.contains(says),
            "{err}"
        );
    }
    // A setting naming an endless file is refused, not read until the kernel kills the process.
    for (setting, says) in [
        ("POLICY_TEMPLATE_PATH", "policy template /dev/zero"),
        ("TOKENVEND_JWKS_FILE", "JWKS file /dev/zero"),
    ] {
        let err = run(&with(&[
            ("AWS_ROLE_ARN", ROLE),
            ("POLICY_TEMPLATE_PATH", ""),
            (setting, "/dev/zero"),
        ]));
        assert!(
            err.contains(says) && err.contains("larger than 1024 KiB"),
            "{setting}: {err}"
        );
    }
    let err = run(&with(&[]));
    assert!(err.contains("nothing to serve"), "{err}");
    let err = run(&with(&[
        ("AWS_ROLE_ARN", ROLE),
        ("POLICY_TEMPLATE_PATH", ""),
        ("SESSION_DURATION_SECONDS", "60"),
    ]));
    assert!(
        err.contains("SESSION_DURATION_SECONDS 60 must be between 900 and 43200"),
        "{err}"
    );
    // The range it states is the one that applies: short sessions (moto only) go down to 1 s.
    let err = run(&with(&[
        ("AWS_ROLE_ARN", ROLE),
        ("POLICY_TEMPLATE_PATH", ""),
        ("TOKENVEND_ALLOW_SHORT_SESSIONS", "true"),
        ("SESSION_DURATION_SECONDS", "0"),
    ]));
    assert!(
        err.contains("SESSION_DURATION_SECONDS 0 must be between 1 and 43200"),
        "{err}"
    );
    let err = run(&with(&[
        ("AWS_ROLE_ARN", ROLE),
        ("POLICY_TEMPLATE_PATH", "/nonexistent/policy.json"),
    ]));
    assert!(err.contains("/nonexistent/policy.json"), "{err}");
    let err = run(&with(&[("LOG_LEVEL", "LOUD")]));
    assert!(
        err.contains("LOG_LEVEL") && err.contains("\"LOUD\""),
        "{err}"
    );
    // A malformed RUST_LOG is refused rather than quietly replaced by the default.
    let err = run(&with(&[
        ("AWS_ROLE_ARN", ROLE),
        ("RUST_LOG", "info,tokenvend_sts=loud"),
    ]));
    assert!(
        err.contains("RUST_LOG \"info,tokenvend_sts=loud\" is not a valid log filter"),
        "{err}"
    );
    // An STS endpoint override that cannot work is refused at start, naming where it came from.
    // Empty, the AWS SDK would panic inside every /credentials request (kind's real-AWS mode
    // once set it so); malformed, every call would fail.
    let creds = |extra: &[(&'static str, &'static str)]| {
        let mut env = with(&[("AWS_ROLE_ARN", ROLE), ("POLICY_TEMPLATE_PATH", "")]);
        env.extend_from_slice(extra);
        run(&env)
    };
    let err = creds(&[("AWS_ENDPOINT_URL_STS", "")]);
    assert!(
        err.contains("AWS_ENDPOINT_URL_STS is set but empty: unset it"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let err = creds(&[("AWS_ENDPOINT_URL", " ")]);
    assert!(err.contains("AWS_ENDPOINT_URL is set but empty"), "{err}");
    let err = creds(&[("AWS_ENDPOINT_URL_STS", "moto.aws-standin.svc:5000")]);
    assert!(
        err.contains(
            "AWS_ENDPOINT_URL_STS \"moto.aws-standin.svc:5000\" is not an http:// or https:// URL"
        ),
        "{err}"
    );
    // With a web identity of its own (IRSA), AWS_ROLE_ARN is the SDK's: the role to vend must
    // be named by TOKENVEND_ROLE_ARN, or the service would sign in as the role it vends.
    let err = creds(&[("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/secrets/token")]);
    assert!(
        err.contains("because AWS_WEB_IDENTITY_TOKEN_FILE is set (IRSA); name the role to vend with TOKENVEND_ROLE_ARN"),
        "{err}"
    );
    let err = run(&with(&[("TOKENVEND_ROLE_ARN", "tvm")]));
    assert!(err.contains("TOKENVEND_ROLE_ARN: "), "{err}");
    // aws-config panics on a bad retry setting; it is refused with the setting's source instead.
    for (setting, says) in [
        (
            ("AWS_MAX_ATTEMPTS", "0"),
            "max attempts must be 1 or more. source: global environment variable key: `AWS_MAX_ATTEMPTS`",
        ),
        (
            ("AWS_MAX_ATTEMPTS", "three"),
            "max attempts \"three\" is not a whole number",
        ),
        (
            ("AWS_RETRY_MODE", "eager"),
            "retry mode \"eager\" is not one aws-config knows (standard, adaptive). source: global environment variable key: `AWS_RETRY_MODE`",
        ),
    ] {
        let err = creds(&[setting]);
        assert!(err.contains(says) && !err.contains("panicked"), "{err}");
    }
    // So is a region the SDK's endpoint rules refuse: every call would fail with it.
    for region in ["", "us east"] {
        let err = creds(&[("AWS_REGION", region)]);
        assert!(
            err.contains(&format!("AWS region {region:?} is not usable"))
                && err.contains("must be a valid host label"),
            "{err}"
        );
    }
    let config = dir.path().join("aws-config");
    std::fs::write(
        &config,
        "[default]\nservices = local\n[services local]\nsts =\n  endpoint_url = ftp://sts.example\n",
    )
    .expect("write");
    let config: &'static str =
        Box::leak(config.to_str().expect("path").to_owned().into_boxed_str());
    let err = creds(&[("AWS_CONFIG_FILE", config)]);
    assert!(
        err.contains("endpoint_url of profile \"default\" (or its services section) in the AWS config file \"ftp://sts.example\" is not an http://"),
        "{err}"
    );
    let named = dir.path().join("aws-config-named");
    std::fs::write(&named, "[profile apps]\nendpoint_url = moto:5000\n").expect("write");
    let named: &'static str = Box::leak(named.to_str().expect("path").to_owned().into_boxed_str());
    let err = creds(&[("AWS_CONFIG_FILE", named), ("AWS_PROFILE", "apps")]);
    assert!(
        err.contains("endpoint_url of profile \"apps\" (or its services section) in the AWS config file \"moto:5000\""),
        "{err}"
    );
    let profile = dir.path().join("aws-config-retry");
    std::fs::write(&profile, "[profile apps]\nmax_attempts = 0\n").expect("write");
    let profile: &'static str =
        Box::leak(profile.to_str().expect("path").to_owned().into_boxed_str());
    let err = creds(&[("AWS_CONFIG_FILE", profile), ("AWS_PROFILE", "apps")]);
    assert!(
        err.contains(
            "max attempts must be 1 or more. source: global profile (`apps`) key: `max_attempts`"
        ) && !err.contains("panicked"),
        "{err}"
    );
    // A taken port makes a start that gets past the configuration fail at the listener.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = taken.local_addr().expect("addr").to_string();
    let listen: &'static str = Box::leak(listen.into_boxed_str());
    // AWS_IGNORE_CONFIGURED_ENDPOINT_URLS turns every override off, as in the SDK.
    let err = creds(&[
        ("AWS_CONFIG_FILE", config),
        ("AWS_ENDPOINT_URL_STS", ""),
        ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
        ("TOKENVEND_LISTEN", listen),
    ]);
    assert!(
        err.contains(&format!("listener {listen}")) && !err.contains("endpoint"),
        "{err}"
    );
    // The listener error names the address, and nothing claims to be serving.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenvend-sts"))
        .env_clear()
        .envs(with(&[
            ("AWS_ROLE_ARN", ROLE),
            ("POLICY_TEMPLATE_PATH", ""),
            ("TOKENVEND_LISTEN", listen),
            // The service's own override wins over an empty global one, as in the SDK.
            ("AWS_ENDPOINT_URL", ""),
            ("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:9"),
            // Valid retry settings pass.
            ("AWS_MAX_ATTEMPTS", "5"),
            ("AWS_RETRY_MODE", "adaptive"),
        ]))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("listener {listen}")) && stderr.contains("in use"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("tokenvend-sts serving"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_serving_for_the_delay_then_exits_cleanly() {
    provider();
    let moto = Moto::start();
    let cluster = Cluster::new();
    let mut sts = Sts::start(
        &moto,
        &cluster,
        &[("TOKENVEND_SHUTDOWN_DELAY_SECONDS", "2".into())],
    );
    let delay = Duration::from_secs(2);
    // A kept-alive connection, as a sidecar's client pools it.
    let pooled = reqwest::Client::new();
    let connection = |r: &reqwest::Response| {
        r.headers()
            .get("connection")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let before = pooled
        .get(sts.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(connection(&before), None);
    let ready = pooled.get(sts.url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 200);
    let signalled = Instant::now();
    let pid = sts.proc.0.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    // A new connection during the delay is still answered: kube-proxy may route one there a
    // moment after the pod began terminating.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let token = cluster.token("shop", "late", None, "tokenvend", 3600);
    let (status, body) = post(&fresh, &sts.url("/credentials"), Some(&token), None).await;
    assert_eq!(status, 200, "{body}");
    // The pooled connection is answered too, and told to close: its client dials anew.
    let during = pooled
        .get(sts.url("/healthz"))
        .send()
        .await
        .expect("healthz during the delay");
    assert_eq!(during.status(), 200);
    assert_eq!(connection(&during).as_deref(), Some("close"));
    // Not ready from the signal on, saying why.
    let ready = fresh.get(sts.url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 503);
    assert_eq!(
        ready.json::<Value>().await.expect("json"),
        json!({"status": "not ready", "reason": "shutting down"})
    );
    assert!(signalled.elapsed() < delay, "too late to prove the delay");
    // Then new connections are refused and the process exits 0.
    let deadline = signalled + delay + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = sts.proc.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after the delay");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    assert!(
        signalled.elapsed() >= delay,
        "exited before the delay was over"
    );
    assert!(tokio::net::TcpStream::connect(sts.addr).await.is_err());
    assert!(sts.logged("stopping"), "{}", sts.all_logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_after_ten_seconds() {
    use tokio::io::AsyncReadExt;
    let (_moto, _cluster, sts, _) = started();
    let mut silent = tokio::net::TcpStream::connect(sts.addr).await.expect("tcp");
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut buf))
        .await
        .expect("closed within 20 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "no answer to no request");
    let secs = t0.elapsed().as_secs_f64();
    assert!((9.0..15.0).contains(&secs), "closed after {secs} s");
}

/// A relying party written apart from tokenvend-sts (PyJWT 2.10 on `cryptography`), reading
/// what AWS STS reads for `AssumeRoleWithWebIdentity`: the discovery document, the JWKS it
/// names, and each token against the key its `kid` picks. It also holds the published keys to
/// RFC 7517/7518's encoding rules, which a verifier built on the signing library (as
/// `verify_web_identity` is) would not notice being broken: base64url without padding, EC
/// coordinates of the curve's full size, an RSA modulus without leading zero octets.
const RELYING_PARTY: &str = r#"
import base64, json, sys
import jwt

def b64(s):
    assert "=" not in s and "+" not in s and "/" not in s, f"not unpadded base64url: {s!r}"
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

req = json.load(sys.stdin)
disc, jwks = req["discovery"], req["jwks"]
for field in ("issuer", "jwks_uri", "response_types_supported", "subject_types_supported",
              "id_token_signing_alg_values_supported"):
    assert field in disc, f"discovery has no {field}"
keys = {}
for k in jwks["keys"]:
    assert k.get("use") == "sig" and k.get("kid") and k.get("alg"), f"incomplete JWK {k}"
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(k), "a private member is published"
    if k["kty"] == "EC":
        size = {"P-256": 32, "P-384": 48}[k["crv"]]
        assert len(b64(k["x"])) == size and len(b64(k["y"])) == size, f"short coordinate in {k}"
    elif k["kty"] == "RSA":
        n = b64(k["n"])
        assert n[0] != 0 and len(n) * 8 >= 2048, "RSA modulus with a leading zero or under 2048 bits"
        b64(k["e"])
    keys[k["kid"]] = jwt.PyJWK(k)
for token in req["tokens"]:
    header = jwt.get_unverified_header(token)
    assert header["alg"] in disc["id_token_signing_alg_values_supported"], header
    key = keys[header["kid"]]
    assert key.algorithm_name == header["alg"], (key.algorithm_name, header)
    claims = jwt.decode(token, key.key, algorithms=[header["alg"]], audience=req["audience"],
                        issuer=disc["issuer"],
                        options={"require": ["exp", "iat", "nbf", "sub", "aud", "iss"]})
    print(json.dumps({"alg": header["alg"], "sub": claims["sub"]}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_tokens_of_every_key_family_pass_an_independent_relying_party() {
    let (_moto, cluster, sts, c) = started();
    let sa = cluster.token("shop", "orders", Some("orders-1"), "tokenvend", 3600);
    let mint = || async {
        let (status, answer) = post(&c, &sts.url("/token"), Some(&sa), None).await;
        assert_eq!(status, 200, "{answer}");
        answer["token"].as_str().expect("token").to_owned()
    };
    let mut tokens = vec![mint().await];
    // The harness signs with P-256; then P-384 and RSA take over in turn, as a rotation does.
    for (file, alg) in [
        ("2026-02.pem", &rcgen::PKCS_ECDSA_P384_SHA384),
        ("2026-03.pem", &rcgen::PKCS_RSA_SHA256),
    ] {
        let key = rcgen::KeyPair::generate_for(alg).expect("key");
        put_key(&sts, file, &key.serialize_pem());
        let deadline = Instant::now() + Duration::from_secs(10);
        let last = kid(tokens.last().expect("a token"));
        let token = loop {
            let t = mint().await;
            if kid(&t) != last {
                break t;
            }
            assert!(Instant::now() < deadline, "{file} never signed");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        tokens.push(token);
    }
    let get = |path: &'static str| {
        let c = c.clone();
        let url = sts.url(path);
        async move {
            c.get(url)
                .send()
                .await
                .expect(path)
                .json::<Value>()
                .await
                .expect(path)
        }
    };
    let request = json!({
        "discovery": get("/.well-known/openid-configuration").await,
        "jwks": get("/keys").await,
        "tokens": tokens,
        "audience": "sts.amazonaws.com",
    });
    let out = run_python(RELYING_PARTY, &request.to_string());
    let algs: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json")["alg"].clone())
        .collect();
    assert_eq!(
        algs,
        [json!("ES256"), json!("ES384"), json!("RS256")],
        "{out}"
    );
}

/// `script` run by the venv's Python with `input` on stdin: its stdout, or the test fails with
/// its stderr.
fn run_python(script: &str, input: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(venv_bin("python"))
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python ran");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
