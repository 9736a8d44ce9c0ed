//! The parts of a Pod that the mutation reads, decoded straight from the admission request.
//!
//! Every other field of the object is skipped unparsed: a full `k8s_openapi` Pod allocates each
//! string, map and list of the object (resources, probes, affinity, status...), which was most of
//! the cost of an admission. The API server has validated the object against its schema before
//! calling the webhook, so skipping loses nothing; the fields read here keep the required-ness
//! the Pod schema gives them (a container without a `name` is still refused).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::EnvVar;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// A Pod as the mutation sees it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PodView {
    /// Name, labels and annotations.
    #[serde(default)]
    pub metadata: MetaView,
    /// Containers, init containers and volumes.
    #[serde(default)]
    pub spec: Option<PodSpecView>,
}

/// `metadata` of the object.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaView {
    /// `metadata.name` (empty before the API server names a controller's pod).
    #[serde(default)]
    pub name: Option<String>,
    /// `metadata.generateName`.
    #[serde(default)]
    pub generate_name: Option<String>,
    /// `metadata.labels`.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// `metadata.annotations`.
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl MetaView {
    /// The name to log: `name`, or `generateName` when the pod is not named yet.
    pub fn display_name(&self) -> &str {
        self.name
            .as_deref()
            .filter(|n| !n.is_empty())
            .or(self.generate_name.as_deref())
            .unwrap_or_default()
    }
}

/// `spec` of the Pod.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpecView {
    /// `spec.containers` (required by the Pod schema).
    pub containers: Vec<ContainerView>,
    /// `spec.initContainers`.
    #[serde(default)]
    pub init_containers: Option<Vec<ContainerView>>,
    /// `spec.ephemeralContainers`: only whether there are any matters.
    #[serde(default)]
    pub ephemeral_containers: Option<Vec<IgnoredAny>>,
    /// `spec.hostNetwork`.
    #[serde(default)]
    pub host_network: Option<bool>,
    /// `spec.volumes`.
    #[serde(default)]
    pub volumes: Option<Vec<VolumeView>>,
}

/// One container or init container.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView {
    /// `name` (required).
    pub name: String,
    /// `image`.
    #[serde(default)]
    pub image: Option<String>,
    /// `command`.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// `env`, whole: an injected variable is compared with one the user set.
    #[serde(default)]
    pub env: Option<Vec<EnvVar>>,
    /// `envFrom`: only whether there are any matters.
    #[serde(default)]
    pub env_from: Option<Vec<IgnoredAny>>,
    /// `volumeMounts`.
    #[serde(default)]
    pub volume_mounts: Option<Vec<MountView>>,
}

/// One `volumeMounts` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountView {
    /// Volume name (required).
    pub name: String,
    /// Mount path (required).
    pub mount_path: String,
}

/// One `spec.volumes` entry: its name and whether it is an emptyDir or a projected SA token.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeView {
    /// Volume name (required).
    pub name: String,
    /// Present when the volume is an emptyDir.
    #[serde(default)]
    pub empty_dir: Option<IgnoredAny>,
    /// Present when the volume is projected.
    #[serde(default)]
    pub projected: Option<ProjectedView>,
}

impl VolumeView {
    /// The file name of the first service account token this volume projects, if any.
    pub fn token_path(&self) -> Option<&str> {
        self.projected
            .as_ref()?
            .sources
            .as_ref()?
            .iter()
            .find_map(|s| s.service_account_token.as_ref())
            .map(|t| t.path.as_str())
    }
}

/// A projected volume's sources.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProjectedView {
    /// `sources`.
    #[serde(default)]
    pub sources: Option<Vec<ProjectionView>>,
}

/// One projected source; only service account tokens matter.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionView {
    /// `serviceAccountToken`.
    #[serde(default)]
    pub service_account_token: Option<TokenProjectionView>,
}

/// A projected service account token.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenProjectionView {
    /// File name inside the volume (required).
    pub path: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_what_the_mutation_needs_and_skips_the_rest() {
        let pod: PodView = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-", "labels": {"a": "b"}, "ownerReferences": [{"x": 1}]},
            "spec": {
                "containers": [{
                    "name": "app", "image": "app:1", "command": ["/app"],
                    "env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "envFrom": [{"configMapRef": {"name": "c"}}],
                    "volumeMounts": [{"name": "v", "mountPath": "/v", "readOnly": true}],
                    "resources": {"limits": {"cpu": "1"}},
                    "livenessProbe": {"httpGet": {"path": "/", "port": 80}}
                }],
                "ephemeralContainers": [{"name": "debug"}],
                "hostNetwork": true,
                "volumes": [
                    {"name": "e", "emptyDir": {}},
                    {"name": "p", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}
                ],
                "affinity": {"nodeAffinity": {}}
            },
            "status": {"phase": "Pending"}
        }))
        .expect("decodes");
        assert_eq!(pod.metadata.display_name(), "web-");
        let spec = pod.spec.expect("spec");
        let c = &spec.containers[0];
        assert_eq!(
            (c.name.as_str(), c.image.as_deref()),
            ("app", Some("app:1"))
        );
        assert_eq!(c.env.as_ref().map(Vec::len), Some(1));
        assert_eq!(c.env_from.as_ref().map(Vec::len), Some(1));
        assert_eq!(
            c.volume_mounts.as_ref().map(|m| m[0].mount_path.as_str()),
            Some("/v")
        );
        assert_eq!(spec.ephemeral_containers.map(|e| e.len()), Some(1));
        assert_eq!(spec.host_network, Some(true));
        let volumes = spec.volumes.expect("volumes");
        assert!(volumes[0].empty_dir.is_some() && volumes[0].projected.is_none());
        assert_eq!(volumes[1].token_path(), Some("t"));
        assert_eq!(volumes[0].token_path(), None);
    }

    #[test]
    fn required_fields_stay_required() {
        for bad in [
            json!({"spec": {}}),
            json!({"spec": {"containers": [{"image": "x"}]}}),
            json!({"spec": {"containers": [{"name": "a", "volumeMounts": [{"name": "v"}]}]}}),
            json!({"spec": {"containers": [], "volumes": [{"emptyDir": {}}]}}),
            json!({"metadata": {"labels": {"a": 1}}}),
        ] {
            assert!(
                serde_json::from_value::<PodView>(bad.clone()).is_err(),
                "accepted {bad}"
            );
        }
        let named: PodView =
            serde_json::from_value(json!({"metadata": {"name": "web-0", "generateName": "web-"}}))
                .expect("decodes");
        assert_eq!(named.metadata.display_name(), "web-0");
    }
}
