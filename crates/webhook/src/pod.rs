//! The parts of a Pod that the mutation reads, decoded straight from the admission request.
//!
//! Every other field of the object is skipped unparsed: a full `k8s_openapi` Pod allocates each
//! string, map and list of the object (resources, probes, affinity, status...), which was most of
//! the cost of an admission. The API server has validated the object against its schema before
//! calling the webhook, so skipping loses nothing; the fields read here keep the required-ness
//! the Pod schema gives them (a container without a `name` is still refused).
//!
//! Strings borrow from the request body when they hold no escapes (almost always), so decoding
//! allocates only for the lists and maps themselves.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_with::{BorrowCow, serde_as};

/// A string of the object: borrowed from the body, owned when JSON escapes had to be undone.
/// (serde borrows a `Cow` only when it is the field's whole type; `BorrowCow` does it inside
/// `Option`, `Vec` and maps.)
pub type Str<'a> = Cow<'a, str>;

/// A Pod as the mutation sees it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PodView<'a> {
    /// Name, labels and annotations.
    #[serde(default)]
    #[serde(borrow)]
    pub metadata: MetaView<'a>,
    /// Containers, init containers and volumes.
    #[serde(default)]
    #[serde(borrow)]
    pub spec: Option<PodSpecView<'a>>,
}

/// `metadata` of the object.
#[serde_as]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaView<'a> {
    /// `metadata.name` (empty before the API server names a controller's pod).
    #[serde(default)]
    #[serde_as(as = "Option<BorrowCow>")]
    pub name: Option<Str<'a>>,
    /// `metadata.generateName`.
    #[serde(default)]
    #[serde_as(as = "Option<BorrowCow>")]
    pub generate_name: Option<Str<'a>>,
    /// `metadata.labels`.
    #[serde(default)]
    #[serde_as(as = "Option<BTreeMap<BorrowCow, BorrowCow>>")]
    pub labels: Option<BTreeMap<Str<'a>, Str<'a>>>,
    /// `metadata.annotations`.
    #[serde(default)]
    #[serde_as(as = "Option<BTreeMap<BorrowCow, BorrowCow>>")]
    pub annotations: Option<BTreeMap<Str<'a>, Str<'a>>>,
}

impl MetaView<'_> {
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
#[serde_as]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpecView<'a> {
    /// `spec.containers` (required by the Pod schema). Boxed, as are the init containers: a list
    /// grows by doubling and briefly holds both buffers, so a list of 192-byte containers written
    /// as `{"name":"c"},` took 44 bytes of heap per byte of the request (`tests/memory.rs`);
    /// boxed, only 8-byte pointers are doubled.
    #[serde(borrow)]
    pub containers: Vec<Box<ContainerView<'a>>>,
    /// `spec.initContainers`.
    #[serde(default)]
    #[serde(borrow)]
    pub init_containers: Option<Vec<Box<ContainerView<'a>>>>,
    /// `spec.ephemeralContainers`: only whether there are any matters.
    #[serde(default)]
    pub ephemeral_containers: Option<Vec<IgnoredAny>>,
    /// `spec.hostNetwork`.
    #[serde(default)]
    pub host_network: Option<bool>,
    /// `spec.restartPolicy` (`Always` when unset: the API server defaults it before admission).
    #[serde(default)]
    #[serde_as(as = "Option<BorrowCow>")]
    pub restart_policy: Option<Str<'a>>,
    /// `spec.os`.
    #[serde(default)]
    #[serde(borrow)]
    pub os: Option<OsView<'a>>,
    /// `spec.nodeSelector`.
    #[serde(default)]
    #[serde_as(as = "Option<BTreeMap<BorrowCow, BorrowCow>>")]
    pub node_selector: Option<BTreeMap<Str<'a>, Str<'a>>>,
    /// `spec.volumes`.
    #[serde(default)]
    #[serde(borrow)]
    pub volumes: Option<Vec<VolumeView<'a>>>,
    /// `spec.affinity`.
    #[serde(default)]
    #[serde(borrow)]
    pub affinity: Option<AffinityView<'a>>,
    /// `spec.dnsPolicy` (`ClusterFirst` when unset: the API server defaults it before admission).
    #[serde(default)]
    #[serde_as(as = "Option<BorrowCow>")]
    pub dns_policy: Option<Str<'a>>,
    /// `spec.securityContext`.
    #[serde(default)]
    pub security_context: Option<PodSecurityContextView>,
    /// `spec.resources`: pod-level requests and limits (Kubernetes 1.32+, `PodLevelResources`).
    #[serde(default)]
    pub resources: Option<PodResourcesView>,
}

/// `spec.resources`: only which resources it names.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct PodResourcesView {
    /// `requests`.
    #[serde(default)]
    pub requests: Option<ResourceNamesView>,
    /// `limits`.
    #[serde(default)]
    pub limits: Option<ResourceNamesView>,
}

/// Whether a resource list names CPU and memory, the resources the sidecar asks for.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct ResourceNamesView {
    /// `cpu`.
    #[serde(default)]
    pub cpu: Option<IgnoredAny>,
    /// `memory`.
    #[serde(default)]
    pub memory: Option<IgnoredAny>,
}

/// Which of CPU and memory a pod budgets at the pod level (`spec.resources`, requests or
/// limits). Kubernetes refuses a pod whose containers together request more of such a resource
/// than the pod-level request (which defaults to the limit), so a sidecar added to it must not
/// ask for its own: it takes its share of the pod's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodLevel {
    /// CPU is budgeted at the pod level.
    pub cpu: bool,
    /// Memory is budgeted at the pod level.
    pub memory: bool,
}

impl PodLevel {
    /// Every combination, in [`PodLevel::index`] order.
    pub const ALL: [PodLevel; 4] = [
        Self::from_index(0),
        Self::from_index(1),
        Self::from_index(2),
        Self::from_index(3),
    ];

    /// The combination at `index`: bit 0 CPU, bit 1 memory.
    const fn from_index(index: usize) -> Self {
        PodLevel {
            cpu: index & 1 != 0,
            memory: index & 2 != 0,
        }
    }

    /// Position in [`PodLevel::ALL`].
    pub fn index(self) -> usize {
        usize::from(self.cpu) | (usize::from(self.memory) << 1)
    }

    /// Whether `resource` (`cpu`, `memory`) is budgeted at the pod level.
    pub fn budgets(self, resource: &str) -> bool {
        match resource {
            "cpu" => self.cpu,
            "memory" => self.memory,
            _ => false,
        }
    }
}

/// `spec.securityContext`: only the UID its containers inherit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityContextView {
    /// `runAsUser`.
    #[serde(default)]
    pub run_as_user: Option<i64>,
}

/// Why a pod resolves names with its node's DNS rather than the cluster's, and what fixes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeDns {
    /// The pod's settings that cause it.
    pub why: &'static str,
    /// The `dnsPolicy` that gives the pod the cluster's DNS.
    pub fix: &'static str,
}

/// The well-known node label with the node's operating system.
const OS_LABEL: &str = "kubernetes.io/os";

impl PodSpecView<'_> {
    /// Which of CPU and memory the pod budgets at the pod level.
    pub fn pod_level(&self) -> PodLevel {
        let lists = self
            .resources
            .iter()
            .flat_map(|r| [r.requests, r.limits])
            .flatten();
        lists.fold(PodLevel::default(), |acc, l| PodLevel {
            cpu: acc.cpu || l.cpu.is_some(),
            memory: acc.memory || l.memory.is_some(),
        })
    }

    /// Whether the pod's DNS is its node's, where cluster Service names do not resolve: with
    /// `dnsPolicy: Default`, or on the host network with `ClusterFirst`, which Kubernetes then
    /// treats as `Default`. `None` (the pod's own resolvers) is the pod's business.
    pub fn node_dns(&self) -> Option<NodeDns> {
        let host_network = self.host_network == Some(true);
        let fix = if host_network {
            "ClusterFirstWithHostNet"
        } else {
            "ClusterFirst"
        };
        match self.dns_policy.as_deref().unwrap_or("ClusterFirst") {
            "Default" => Some(NodeDns {
                why: "dnsPolicy Default",
                fix,
            }),
            "ClusterFirst" if host_network => Some(NodeDns {
                why: "hostNetwork pod with dnsPolicy ClusterFirst (for such pods Kubernetes \
                      falls back to Default)",
                fix,
            }),
            _ => None,
        }
    }

    /// Whether the pod asks for a Windows node: by `spec.os.name`, the well-known node label in
    /// `nodeSelector`, or required node affinity that no Linux node satisfies.
    pub fn wants_windows(&self) -> bool {
        self.os.as_ref().and_then(|o| o.name.as_deref()) == Some("windows")
            || self
                .node_selector
                .as_ref()
                .and_then(|s| s.get(OS_LABEL))
                .is_some_and(|os| os == "windows")
            || self
                .affinity
                .as_ref()
                .and_then(|a| a.node_affinity.as_ref())
                .and_then(|n| {
                    n.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .is_some_and(|r| {
                    // Terms are alternatives: every one must rule Linux out.
                    !r.node_selector_terms.is_empty()
                        && r.node_selector_terms
                            .iter()
                            .all(NodeSelectorTermView::rules_out_linux)
                })
    }
}

/// `spec.affinity`: only node affinity matters here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AffinityView<'a> {
    /// `nodeAffinity`.
    #[serde(default)]
    #[serde(borrow)]
    pub node_affinity: Option<NodeAffinityView<'a>>,
}

/// `spec.affinity.nodeAffinity`: only what the scheduler must honour.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAffinityView<'a> {
    /// `requiredDuringSchedulingIgnoredDuringExecution`.
    #[serde(default)]
    #[serde(borrow)]
    pub required_during_scheduling_ignored_during_execution: Option<NodeSelectorView<'a>>,
}

/// A `NodeSelector`: any one of its terms admits a node.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorView<'a> {
    /// `nodeSelectorTerms` (required by the schema).
    #[serde(borrow)]
    pub node_selector_terms: Vec<NodeSelectorTermView<'a>>,
}

/// A `NodeSelectorTerm`: every one of its requirements must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorTermView<'a> {
    /// `matchExpressions` on node labels (`matchFields` names nodes, not their OS).
    #[serde(default)]
    #[serde(borrow)]
    pub match_expressions: Option<Vec<RequirementView<'a>>>,
}

impl NodeSelectorTermView<'_> {
    /// Whether no node labelled `kubernetes.io/os=linux` satisfies this term.
    pub fn rules_out_linux(&self) -> bool {
        self.match_expressions.iter().flatten().any(|r| {
            let linux_listed = r.values.iter().flatten().any(|v| v == "linux");
            r.key == OS_LABEL
                && match &*r.operator {
                    "In" => !linux_listed,
                    "NotIn" => linux_listed,
                    _ => false,
                }
        })
    }
}

/// A `NodeSelectorRequirement`.
#[serde_as]
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RequirementView<'a> {
    /// `key` (required).
    #[serde_as(as = "BorrowCow")]
    pub key: Str<'a>,
    /// `operator` (required): `In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt` or `Lt`.
    #[serde_as(as = "BorrowCow")]
    pub operator: Str<'a>,
    /// `values`.
    #[serde(default)]
    #[serde_as(as = "Option<Vec<BorrowCow>>")]
    pub values: Option<Vec<Str<'a>>>,
}

/// `spec.os`.
#[serde_as]
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OsView<'a> {
    /// `linux` or `windows`.
    #[serde(default)]
    #[serde_as(as = "Option<BorrowCow>")]
    pub name: Option<Str<'a>>,
}

/// One container or init container.
#[serde_as]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView<'a> {
    /// `name` (required).
    #[serde_as(as = "BorrowCow")]
    pub name: Str<'a>,
    /// `image`.
    #[serde(default)]
    #[serde_as(as = "Option<BorrowCow>")]
    pub image: Option<Str<'a>>,
    /// The first word of `command`, the only one read (it tells this webhook's sidecar); the
    /// others are skipped, so a long command costs no memory.
    #[serde(default, rename = "command", deserialize_with = "first_word")]
    pub command_first: Option<Str<'a>>,
    /// `env`, whole: an injected variable is compared with one the user set.
    #[serde(default)]
    #[serde(borrow)]
    pub env: Option<Vec<EnvView<'a>>>,
    /// `envFrom`: only whether there are any matters.
    #[serde(default)]
    pub env_from: Option<Vec<IgnoredAny>>,
    /// `volumeMounts`.
    #[serde(default)]
    #[serde(borrow)]
    pub volume_mounts: Option<Vec<MountView<'a>>>,
    /// `restartPolicy`: `Always` makes an init container a native sidecar.
    #[serde(default)]
    #[serde_as(as = "Option<BorrowCow>")]
    pub restart_policy: Option<Str<'a>>,
    /// `ports`: one the credentials endpoint would listen on is a conflict.
    #[serde(default)]
    #[serde(borrow)]
    pub ports: Option<Vec<PortView<'a>>>,
}

/// The first string of a list (`None` for an empty list or `null`), the rest skipped.
fn first_word<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Str<'de>>, D::Error> {
    struct First;
    impl<'de> serde::de::Visitor<'de> for First {
        type Value = Option<Str<'de>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of strings")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_seq(self)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let first = seq
                .next_element::<serde_with::de::DeserializeAsWrap<Str<'de>, BorrowCow>>()?
                .map(serde_with::de::DeserializeAsWrap::into_inner);
            // The rest are read as strings, as the schema says, and dropped.
            while seq
                .next_element::<serde_with::de::DeserializeAsWrap<Str<'de>, BorrowCow>>()?
                .is_some()
            {}
            Ok(first)
        }
    }
    d.deserialize_option(First)
}

impl ContainerView<'_> {
    /// Whether this (init) container is a native sidecar: it keeps running, and the init
    /// containers after it start once its startupProbe passes.
    pub fn is_native_sidecar(&self) -> bool {
        self.restart_policy.as_deref() == Some("Always")
    }
}

/// One `env` entry of a container.
#[serde_as]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvView<'a> {
    /// Variable name (required).
    #[serde_as(as = "BorrowCow")]
    pub name: Str<'a>,
    /// `value`.
    #[serde(default)]
    #[serde_as(as = "Option<BorrowCow>")]
    pub value: Option<Str<'a>>,
    /// `valueFrom`, whole: rare, and compared field by field with an injected one. Boxed: the
    /// source is ten times the size of the rest of the entry, and a pod can have many entries.
    #[serde(default)]
    pub value_from: Option<Box<EnvVarSource>>,
}

impl EnvView<'_> {
    /// Whether this is exactly `var` (same name, value and source).
    pub fn is(&self, var: &EnvVar) -> bool {
        self.name == var.name.as_str()
            && self.value.as_deref() == var.value.as_deref()
            && self.value_from.as_deref() == var.value_from.as_ref()
    }
}

/// One `ports` entry of a container.
#[serde_as]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortView<'a> {
    /// `containerPort` (required).
    pub container_port: i64,
    /// `protocol` (`TCP` when unset).
    #[serde(default)]
    #[serde_as(as = "Option<BorrowCow>")]
    pub protocol: Option<Str<'a>>,
}

impl ContainerView<'_> {
    /// Whether this container declares it listens on TCP `port`.
    pub fn declares_tcp_port(&self, port: u16) -> bool {
        self.ports.iter().flatten().any(|p| {
            p.container_port == i64::from(port) && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
        })
    }
}

/// One `volumeMounts` entry.
#[serde_as]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountView<'a> {
    /// Volume name (required).
    #[serde_as(as = "BorrowCow")]
    pub name: Str<'a>,
    /// Mount path (required).
    #[serde_as(as = "BorrowCow")]
    pub mount_path: Str<'a>,
}

/// One `spec.volumes` entry: its name and whether it is an emptyDir or a projected SA token.
#[serde_as]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeView<'a> {
    /// Volume name (required).
    #[serde_as(as = "BorrowCow")]
    pub name: Str<'a>,
    /// Present when the volume is an emptyDir.
    #[serde(default)]
    pub empty_dir: Option<IgnoredAny>,
    /// Present when the volume is projected.
    #[serde(default)]
    #[serde(borrow)]
    pub projected: Option<ProjectedView<'a>>,
}

impl VolumeView<'_> {
    /// The file name of the first service account token this volume projects, if any.
    pub fn token_path(&self) -> Option<&str> {
        self.projected
            .as_ref()?
            .sources
            .as_ref()?
            .iter()
            .find_map(|s| s.service_account_token.as_ref())
            .map(|t| &*t.path)
    }
}

/// A projected volume's sources.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProjectedView<'a> {
    /// `sources`.
    #[serde(default)]
    #[serde(borrow)]
    pub sources: Option<Vec<ProjectionView<'a>>>,
}

/// One projected source; only service account tokens matter.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionView<'a> {
    /// `serviceAccountToken`.
    #[serde(default)]
    #[serde(borrow)]
    pub service_account_token: Option<TokenProjectionView<'a>>,
}

/// A projected service account token.
#[serde_as]
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenProjectionView<'a> {
    /// File name inside the volume (required).
    #[serde_as(as = "BorrowCow")]
    pub path: Str<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn reads_what_the_mutation_needs_and_skips_the_rest() {
        let value = json!({
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
                "restartPolicy": "OnFailure",
                "os": {"name": "linux"},
                "nodeSelector": {"kubernetes.io/arch": "arm64"},
                "volumes": [
                    {"name": "e", "emptyDir": {}},
                    {"name": "p", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}
                ],
                "affinity": {"nodeAffinity": {}}
            },
            "status": {"phase": "Pending"}
        })
        .to_string();
        let pod: PodView = serde_json::from_str(&value).expect("decodes");
        assert_eq!(pod.metadata.display_name(), "web-");
        let spec = pod.spec.expect("spec");
        let c = &spec.containers[0];
        assert_eq!((&*c.name, c.image.as_deref()), ("app", Some("app:1")));
        assert_eq!(c.env.as_ref().map(Vec::len), Some(1));
        assert_eq!(c.env_from.as_ref().map(Vec::len), Some(1));
        assert_eq!(
            c.volume_mounts.as_ref().map(|m| &*m[0].mount_path),
            Some("/v")
        );
        assert_eq!(spec.ephemeral_containers.as_ref().map(Vec::len), Some(1));
        assert_eq!(spec.host_network, Some(true));
        assert_eq!(spec.restart_policy.as_deref(), Some("OnFailure"));
        assert!(!spec.wants_windows());
        let required = |terms: Value| {
            json!({"containers": [], "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms},
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {}}]
            }}})
        };
        let os_in =
            |values: Value| json!({"key": "kubernetes.io/os", "operator": "In", "values": values});
        let pool = json!({"key": "pool", "operator": "Exists"});
        for windows in [
            json!({"containers": [], "os": {"name": "windows"}}),
            json!({"containers": [], "nodeSelector": {"kubernetes.io/os": "windows", "pool": "w"}}),
            required(json!([{"matchExpressions": [pool, os_in(json!(["windows"]))]}])),
            required(json!([
                {"matchExpressions": [os_in(json!(["windows"]))]},
                {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "NotIn", "values": ["linux"]}]}
            ])),
        ] {
            let body = windows.to_string();
            let spec: PodSpecView = serde_json::from_str(&body).expect("decodes");
            assert!(spec.wants_windows(), "{body}");
        }
        // Linux nodes can still take these: one term allows them, or nothing is said of the OS.
        for linux_possible in [
            required(json!([
                {"matchExpressions": [os_in(json!(["windows"]))]},
                {"matchExpressions": [pool]}
            ])),
            required(json!([{"matchExpressions": [os_in(json!(["windows", "linux"]))]}])),
            required(
                json!([{"matchExpressions": [{"key": "kubernetes.io/os", "operator": "NotIn", "values": ["windows"]}]}]),
            ),
            required(
                json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]),
            ),
            required(json!([])),
            json!({"containers": [], "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [os_in(json!(["windows"]))]}}
            ]}}}),
        ] {
            let body = linux_possible.to_string();
            let spec: PodSpecView = serde_json::from_str(&body).expect("decodes");
            assert!(!spec.wants_windows(), "{body}");
        }
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
            let text = bad.to_string();
            assert!(
                serde_json::from_str::<PodView>(&text).is_err(),
                "accepted {bad}"
            );
            assert!(PodView::deserialize(&bad).is_err(), "accepted {bad}");
        }
        let named = json!({"metadata": {"name": "web-0", "generateName": "web-"}});
        let named = PodView::deserialize(&named).expect("decodes");
        assert_eq!(named.metadata.display_name(), "web-0");
    }

    #[test]
    fn strings_borrow_from_the_body_unless_escaped() {
        let body = r#"{"metadata": {"name": "plain", "labels": {"k\u0041": "v\"q"}},
            "spec": {"containers": [{"name": "c\n", "env": [{"name": "A", "value": "x"}]}]}}"#;
        let pod: PodView = serde_json::from_str(body).expect("decodes");
        assert!(matches!(pod.metadata.name, Some(Cow::Borrowed("plain"))));
        let labels = pod.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels.get("kA").map(|v| &**v), Some("v\"q"));
        assert!(matches!(labels.get("kA"), Some(Cow::Owned(_))));
        let c = &pod.spec.as_ref().expect("spec").containers[0];
        assert_eq!(&*c.name, "c\n");
        let env = &c.env.as_ref().expect("env")[0];
        assert!(matches!(env.name, Cow::Borrowed("A")));
    }

    #[test]
    fn the_pod_level_budget_is_read_from_requests_and_limits() {
        let level = |resources: Value| {
            let pod = json!({"spec": {"containers": [], "resources": resources}});
            PodView::deserialize(&pod)
                .expect("decodes")
                .spec
                .expect("spec")
                .pod_level()
        };
        let both = PodLevel {
            cpu: true,
            memory: true,
        };
        for (resources, want) in [
            (json!(null), PodLevel::default()),
            (json!({}), PodLevel::default()),
            (
                json!({"requests": {"hugepages-2Mi": "2Mi"}, "claims": [{"name": "gpu"}]}),
                PodLevel::default(),
            ),
            (
                json!({"requests": {"cpu": "1"}}),
                PodLevel {
                    cpu: true,
                    memory: false,
                },
            ),
            (
                json!({"limits": {"memory": "1Gi"}, "requests": null}),
                PodLevel {
                    cpu: false,
                    memory: true,
                },
            ),
            (
                json!({"requests": {"memory": "1Gi"}, "limits": {"cpu": "2"}}),
                both,
            ),
        ] {
            assert_eq!(level(resources.clone()), want, "{resources}");
        }
        // The sidecar templates are looked up by index.
        for (i, l) in PodLevel::ALL.iter().enumerate() {
            assert_eq!(l.index(), i);
        }
        assert_eq!(PodLevel::ALL[both.index()], both);
    }

    #[test]
    fn only_the_first_word_of_a_command_is_kept_and_every_word_must_be_a_string() {
        let first = |command: Value| -> Result<Option<String>, String> {
            let pod = json!({"spec": {"containers": [{"name": "a", "command": command}]}});
            let text = pod.to_string();
            let view: PodView = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            let spec = view.spec.expect("spec");
            Ok(spec.containers[0]
                .command_first
                .as_deref()
                .map(str::to_owned))
        };
        assert_eq!(
            first(json!(["tokenvend-sidecar", "--once"])),
            Ok(Some("tokenvend-sidecar".into()))
        );
        assert_eq!(first(json!(["a\\b", "x"])), Ok(Some("a\\b".into())));
        assert_eq!(first(json!([])), Ok(None));
        assert_eq!(first(json!(null)), Ok(None));
        for bad in [
            json!(["sh", 1]),
            json!([null]),
            json!("sh"),
            json!({"0": "sh"}),
        ] {
            assert!(first(bad.clone()).is_err(), "{bad} accepted");
        }
        // Also from a decoded JSON value, as the tests and benchmarks read pods.
        let value = json!({"spec": {"containers": [{"name": "a", "command": ["x", "y"]}]}});
        let view = PodView::deserialize(&value).expect("decodes");
        assert_eq!(
            view.spec.expect("spec").containers[0]
                .command_first
                .as_deref(),
            Some("x")
        );
    }

    #[test]
    fn null_optional_fields_read_as_absent() {
        let body = r#"{"metadata": {"name": null, "generateName": null, "labels": null,
            "annotations": null}, "spec": {"containers": [{"name": "a", "image": null,
            "command": null, "env": [{"name": "A", "value": null}], "volumeMounts": null}],
            "volumes": [{"name": "v", "projected": {"sources": null}}]}}"#;
        let pod: PodView = serde_json::from_str(body).expect("decodes");
        let m = &pod.metadata;
        assert!(m.name.is_none() && m.generate_name.is_none());
        assert!(m.labels.is_none() && m.annotations.is_none());
        let spec = pod.spec.as_ref().expect("spec");
        let c = &spec.containers[0];
        assert!(c.image.is_none() && c.command_first.is_none() && c.volume_mounts.is_none());
        assert!(c.env.as_ref().expect("env")[0].value.is_none());
        assert_eq!(
            spec.volumes.as_ref().expect("volumes")[0].token_path(),
            None
        );
    }

    #[test]
    fn env_view_matches_only_the_same_variable() {
        let text = json!([
            {"name": "A", "value": "1"},
            {"name": "A", "value": "2"},
            {"name": "B", "value": "1"},
            {"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "A"}
        ])
        .to_string();
        let vars: Vec<EnvView> = serde_json::from_str(&text).expect("decodes");
        let a1 = EnvVar {
            name: "A".into(),
            value: Some("1".into()),
            value_from: None,
        };
        let from_name: EnvVar = serde_json::from_value(
            json!({"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        )
        .expect("EnvVar");
        let matches: Vec<bool> = vars.iter().map(|v| v.is(&a1)).collect();
        assert_eq!(matches, [true, false, false, false, false]);
        let matches: Vec<bool> = vars.iter().map(|v| v.is(&from_name)).collect();
        assert_eq!(matches, [false, false, false, true, false]);
    }
}
