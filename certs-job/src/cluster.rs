//! The in-cluster side: read the Secrets and the MutatingWebhookConfiguration, then write the
//! trust bundle into every webhook's caBundle first and the Secrets second, so the API server
//! trusts whichever certificate the webhook serves at every moment.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

use crate::plan::{Decision, Material, Settings, apply, decide, sidecar_restart_deadline};

/// Failures, each saying what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// 403 from the API server.
    #[error(
        "RBAC: the job's service account may not {verb} {what}: {message} (grant it in the certs job's Role/ClusterRole)"
    )]
    Forbidden {
        /// Verb.
        verb: &'static str,
        /// Object.
        what: String,
        /// API server message.
        message: String,
    },
    /// The namespace of the Secret does not exist.
    #[error(
        "namespace {0:?} does not exist: create it (kubectl apply -k manifests/...) before running the job"
    )]
    MissingNamespace(String),
    /// The webhook configuration does not exist.
    #[error(
        "MutatingWebhookConfiguration {0:?} not found: apply the manifests first, or fix --webhook-config"
    )]
    MissingWebhookConfig(String),
    /// A webhook calls a host the serving certificate would not name, so the API server would
    /// refuse its TLS; typically manifests installed into another namespace than --namespace.
    #[error(
        "MutatingWebhookConfiguration {config:?}: webhook {webhook:?} calls {host}, which the serving certificate would not name (it names {sans}): the API server would refuse its TLS. Fix --service / --namespace, or the webhook's clientConfig (installed into another namespace? see the README, Install)"
    )]
    WebhookNotServed {
        /// The MutatingWebhookConfiguration.
        config: String,
        /// The webhook entry.
        webhook: String,
        /// What the API server dials.
        host: String,
        /// The certificate's SANs, comma-separated.
        sans: String,
    },
    /// Another writer changed the object between this run's read and its write (409); the
    /// run reconciles again from fresh reads before it gives up with this.
    #[error("{verb} {what}: {message} (another run of the job wrote it meanwhile)")]
    Conflict {
        /// Verb.
        verb: &'static str,
        /// Object.
        what: String,
        /// Cause.
        message: String,
    },
    /// Anything else from the API.
    #[error("{verb} {what}: {message}")]
    Api {
        /// Verb.
        verb: &'static str,
        /// Object.
        what: String,
        /// Cause.
        message: String,
    },
    /// Certificate generation failed.
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
}

fn api_err(verb: &'static str, what: &str, e: kube::Error) -> ClusterError {
    match e {
        kube::Error::Api(s) if s.code == 403 => ClusterError::Forbidden {
            verb,
            what: what.to_owned(),
            message: s.message,
        },
        kube::Error::Api(s) if s.code == 409 => ClusterError::Conflict {
            verb,
            what: what.to_owned(),
            message: format!("{} {}: {}", s.code, s.reason, s.message),
        },
        kube::Error::Api(s) => ClusterError::Api {
            verb,
            what: what.to_owned(),
            message: format!("{} {}: {}", s.code, s.reason, s.message),
        },
        other => ClusterError::Api {
            verb,
            what: what.to_owned(),
            message: other.to_string(),
        },
    }
}

/// What one run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The decision taken.
    pub decision: Decision,
    /// Webhook entries whose caBundle was updated.
    pub webhooks_patched: usize,
    /// Whether the Secrets were written.
    pub secrets_written: bool,
    /// Set when this run replaced the CA that sidecars trust: pods admitted before it must be
    /// restarted by then (Unix seconds).
    pub restart_sidecars_by: Option<i64>,
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> String {
    data.get(key)
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

/// The host the API server dials for a webhook: `<service>.<namespace>.svc` (the name it checks
/// the certificate against), or the host of its URL.
pub fn dialed_host(config: &WebhookClientConfig) -> Option<String> {
    if let Some(svc) = &config.service {
        return Some(format!("{}.{}.svc", svc.name, svc.namespace));
    }
    let url = config.url.as_deref()?;
    Some(tokenvend_core::names::url_host(url).to_ascii_lowercase())
}

/// Refuses a configuration with a webhook the certificate would not serve: its caBundle would be
/// kept in step, and every call to it would still fail TLS (with `failurePolicy: Fail`, every
/// labelled pod refused).
pub fn check_served(
    name: &str,
    mwc: &MutatingWebhookConfiguration,
    sans: &[String],
) -> Result<(), ClusterError> {
    for w in mwc.webhooks.as_deref().unwrap_or_default() {
        let Some(host) = dialed_host(&w.client_config) else {
            continue;
        };
        if !sans.contains(&host) {
            return Err(ClusterError::WebhookNotServed {
                config: name.to_owned(),
                webhook: w.name.clone(),
                host,
                sans: sans.join(", "),
            });
        }
    }
    Ok(())
}

/// How many times a run reconciles when another writer gets in between its reads and writes.
const ATTEMPTS: usize = 3;

/// One reconciliation. When another run (the install Job and a CronJob run, say) writes a
/// Secret between this run's reads and its write, this run may already have set the caBundle to
/// a CA that no Secret then holds: it reconciles again from fresh reads at once, which puts the
/// stored CA back in the caBundle, rather than leave the API server distrusting the webhook
/// until the Job's retry.
pub async fn reconcile(
    client: Client,
    namespace: &str,
    secret: &str,
    webhook_config: &str,
    s: &Settings,
    now: i64,
) -> Result<Report, ClusterError> {
    let mut attempt = 1;
    loop {
        match reconcile_once(client.clone(), namespace, secret, webhook_config, s, now).await {
            Err(e @ ClusterError::Conflict { .. }) if attempt < ATTEMPTS => {
                tracing::info!(error = %e, attempt, "another writer got in first; reconciling again");
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn reconcile_once(
    client: Client,
    namespace: &str,
    secret: &str,
    webhook_config: &str,
    s: &Settings,
    now: i64,
) -> Result<Report, ClusterError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client);
    let ca_secret = format!("{secret}-ca");

    let mwc_what = format!("mutatingwebhookconfigurations/{webhook_config}");
    let mwc = mwcs
        .get_opt(webhook_config)
        .await
        .map_err(|e| api_err("get", &mwc_what, e))?
        .ok_or_else(|| ClusterError::MissingWebhookConfig(webhook_config.to_owned()))?;
    check_served(webhook_config, &mwc, &s.sans)?;
    let tls_what = format!("secrets/{secret} in {namespace}");
    let ca_what = format!("secrets/{ca_secret} in {namespace}");
    let tls = secrets
        .get_opt(secret)
        .await
        .map_err(|e| api_err("get", &tls_what, e))?;
    let ca = secrets
        .get_opt(&ca_secret)
        .await
        .map_err(|e| api_err("get", &ca_what, e))?;

    let current = (ca.is_some() || tls.is_some()).then(|| {
        let ca_data = ca.as_ref().and_then(|c| c.data.clone()).unwrap_or_default();
        let tls_data = tls
            .as_ref()
            .and_then(|t| t.data.clone())
            .unwrap_or_default();
        // Without the CA Secret (deleted, say), the bundle in the serving Secret still names the
        // CAs trusted now: the new CA is then made with those kept for the overlap, and the
        // certificate in use goes on serving, instead of breaking every sidecar at once.
        let mut ca_bundle = text(&ca_data, "ca.crt");
        if ca_bundle.is_empty() {
            ca_bundle = text(&tls_data, "ca.crt");
        }
        Material {
            ca_bundle,
            ca_key: text(&ca_data, "ca.key"),
            tls_crt: text(&tls_data, "tls.crt"),
            tls_key: text(&tls_data, "tls.key"),
        }
    });
    let decision = decide(now, current.as_ref(), s);
    let desired = apply(now, current.as_ref(), &decision, s)?;
    let restart_sidecars_by = sidecar_restart_deadline(now, current.as_ref(), &desired, s);

    // 1. Trust first: every webhook's caBundle gets the bundle (new and old CA during a rotation).
    let mut ops = Vec::new();
    for (i, w) in mwc
        .webhooks
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let have = w
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.as_slice())
            .unwrap_or_default();
        if have != desired.ca_bundle.as_bytes() {
            ops.push(json_patch::PatchOperation::Add(json_patch::AddOperation {
                path: json_patch::jsonptr::PointerBuf::from_tokens([
                    "webhooks",
                    &i.to_string(),
                    "clientConfig",
                    "caBundle",
                ]),
                value: serde_json::Value::String(
                    base64::engine::general_purpose::STANDARD.encode(&desired.ca_bundle),
                ),
            }));
        }
    }
    let webhooks_patched = ops.len();
    if !ops.is_empty() {
        mwcs.patch(
            webhook_config,
            &PatchParams::default(),
            &Patch::Json::<()>(json_patch::Patch(ops)),
        )
        .await
        .map_err(|e| api_err("patch", &mwc_what, e))?;
    }

    // 2. Then the Secrets: the CA (with its key, never mounted by anything) and the serving pair.
    let mut written = false;
    let ca_data = BTreeMap::from([
        (
            "ca.crt".to_owned(),
            ByteString(desired.ca_bundle.clone().into_bytes()),
        ),
        (
            "ca.key".to_owned(),
            ByteString(desired.ca_key.clone().into_bytes()),
        ),
    ]);
    written |= upsert(
        &secrets,
        namespace,
        &ca_secret,
        "Opaque",
        ca_data,
        ca.as_ref(),
        &ca_what,
    )
    .await?;
    let tls_data = BTreeMap::from([
        (
            "ca.crt".to_owned(),
            ByteString(desired.ca_bundle.into_bytes()),
        ),
        (
            "tls.crt".to_owned(),
            ByteString(desired.tls_crt.into_bytes()),
        ),
        (
            "tls.key".to_owned(),
            ByteString(desired.tls_key.into_bytes()),
        ),
    ]);
    written |= upsert(
        &secrets,
        namespace,
        secret,
        "kubernetes.io/tls",
        tls_data,
        tls.as_ref(),
        &tls_what,
    )
    .await?;
    Ok(Report {
        decision,
        webhooks_patched,
        secrets_written: written,
        restart_sidecars_by,
    })
}

async fn upsert(
    api: &Api<Secret>,
    namespace: &str,
    name: &str,
    type_: &str,
    data: BTreeMap<String, ByteString>,
    existing: Option<&Secret>,
    what: &str,
) -> Result<bool, ClusterError> {
    match existing {
        // An existing Secret keeps its type (the API server refuses to change it); only its data
        // is ours. Comparing the type too would rewrite a Secret created as Opaque on every run.
        Some(s) if s.data.as_ref() == Some(&data) => Ok(false),
        Some(s) => {
            let mut updated = s.clone();
            updated.data = Some(data);
            updated.string_data = None;
            // The resourceVersion from our read makes a concurrent writer fail instead of being overwritten.
            api.replace(name, &PostParams::default(), &updated)
                .await
                .map_err(|e| api_err("update", what, e))?;
            Ok(true)
        }
        None => {
            let secret = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_owned(),
                        "tokenvend-certs".to_owned(),
                    )])),
                    ..Default::default()
                },
                type_: Some(type_.to_owned()),
                data: Some(data),
                ..Default::default()
            };
            api.create(&PostParams::default(), &secret)
                .await
                .map_err(|e| match e {
                    kube::Error::Api(s) if s.code == 404 => {
                        ClusterError::MissingNamespace(namespace.to_owned())
                    }
                    other => api_err("create", what, other),
                })?;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::admissionregistration::v1::ServiceReference;

    fn service(name: &str, namespace: &str) -> WebhookClientConfig {
        WebhookClientConfig {
            service: Some(ServiceReference {
                name: name.into(),
                namespace: namespace.into(),
                path: Some("/mutate".into()),
                port: Some(443),
            }),
            ..Default::default()
        }
    }

    fn url(u: &str) -> WebhookClientConfig {
        WebhookClientConfig {
            url: Some(u.into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_dialed_host_is_what_the_api_server_checks_the_certificate_against() {
        for (config, want) in [
            (
                service("tokenvend-webhook", "platform"),
                Some("tokenvend-webhook.platform.svc"),
            ),
            (
                url("https://hooks.example.com/mutate"),
                Some("hooks.example.com"),
            ),
            (
                url("https://Hooks.Example.com:8443/m?x=1"),
                Some("hooks.example.com"),
            ),
            (url("https://[fd00::1]:8443/mutate"), Some("fd00::1")),
            (url("https://10.0.0.7"), Some("10.0.0.7")),
            (WebhookClientConfig::default(), None),
        ] {
            assert_eq!(dialed_host(&config).as_deref(), want, "{config:?}");
        }
    }
}
