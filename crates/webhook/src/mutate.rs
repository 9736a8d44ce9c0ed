//! The webhook's heart: a pure function from (pod, config) to (JSON patch, warnings).
//!
//! Everything that depends only on the config (per mode: volumes, mounts, fixed env vars, the
//! sidecar containers) is built once by [`Injector::new`], typed for comparing with what a pod
//! already has and rendered to JSON for the patch; a pod then costs lookups and copies.
//!
//! It only ever emits `add` operations for fields it owns, so every field of the pod that this
//! code does not know survives, and it recognises its own earlier output so a second pass over
//! an already-mutated pod yields an empty patch (`reinvocationPolicy: IfNeeded`).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, Lifecycle,
    LifecycleHandler, ObjectFieldSelector, Probe, ProjectedVolumeSource, ResourceRequirements,
    SeccompProfile, SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Serialize;
use serde_json::value::RawValue;
use tokenvend_core::contract::{
    self, AWS_STS_AUDIENCE, CREDENTIALS_PATH, MODE_KEY, OPT_IN_VALUE, OPT_OUT_VALUE, ROLE_KEY,
    SA_TOKEN_DIR, SA_TOKEN_VOLUME, SHARED_DIR, SHARED_VOLUME, SIDECAR_BINARY, SIDECAR_CA_PEM_ENV,
    SKIP_CONTAINERS_KEY, WARNINGS_KEY, env, files,
};
use tokenvend_core::{Mode, RoleArn};

use crate::config::{Config, SidecarStyle};
use crate::patch::{MAX_PATCH_BYTES, Patch, PatchBuilder, Seg, WriteJson, pointer};
use crate::pod::{ContainerView, MetaView, PodLevel, PodSpecView, PodView, Str, VolumeView};

/// The annotation the kubelet puts on the mirror pod of a static pod.
pub const MIRROR_POD_KEY: &str = "kubernetes.io/config.mirror";

/// Said for a static pod's mirror pod, which the webhook leaves unchanged.
pub const STATIC_POD_WARNING: &str = "this is the mirror of a static pod \
    (kubernetes.io/config.mirror): the kubelet gives static pods no service-account token, so \
    tokenvend cannot give it AWS credentials and leaves it unchanged (the API server refuses a \
    mirror pod with a token volume, and the static pod would be missing from the API). Run it \
    as a DaemonSet to have credentials";

/// What the webhook does with an admitted pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    /// RFC 6902 patch; empty when nothing is to change.
    pub patch: Patch,
    /// Messages for the user (AdmissionResponse `warnings`).
    pub warnings: Vec<String>,
    /// The mode applied, when the pod opted in with a valid mode.
    pub mode: Option<Mode>,
    /// Whether the patch adds the credentials plumbing; when not, it holds at most the record of
    /// the warnings of a pod admitted without it (`--deny-on-invalid=false`).
    pub plumbed: bool,
}

/// The pod is refused; `message` tells the user what to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Denial {
    /// Why, and what to change.
    pub message: String,
    /// Warnings gathered before the refusal.
    pub warnings: Vec<String>,
    /// The mode, when known.
    pub mode: Option<Mode>,
}

impl Mutation {
    fn unchanged(warnings: Vec<String>, mode: Option<Mode>) -> Self {
        Mutation {
            patch: Patch::default(),
            warnings,
            mode,
            plumbed: false,
        }
    }
}

/// Why a pod is refused, gathered while it is looked at: the first [`Problems::SHOWN`] in
/// full, the rest counted. A pod can repeat one mistake in each of thousands of containers, and
/// every message would be kept and sent back: a 3 MiB review of containers that each declare
/// the credentials port took 120 % of the memory the webhook budgets for it.
#[derive(Debug, Default)]
struct Problems {
    shown: Vec<String>,
    more: usize,
}

impl Problems {
    /// How many problems a refusal names.
    const SHOWN: usize = 10;

    fn push(&mut self, message: String) {
        if self.shown.len() < Self::SHOWN {
            self.shown.push(message);
        } else {
            self.more += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.shown.is_empty()
    }

    /// The problems as one message.
    fn message(&self) -> String {
        let mut message = self.shown.join("; ");
        if self.more > 0 {
            message.push_str("; and ");
            message.push_str(&more(self.more, "problem"));
        }
        message
    }
}

/// `1 more warning`, `5 more warnings`: what a capped list says of the items it left out.
pub(crate) fn more(count: usize, noun: &str) -> String {
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} more {noun}{plural}")
}

/// How a refusal's message starts.
const DENIAL_PREFIX: &str = "tokenvend: ";

/// Decide what to add to `pod` under `cfg` (builds an [`Injector`] for this one call; a server
/// builds it once and calls [`Injector::mutate`]).
pub fn mutate(pod: &PodView, cfg: &Config) -> Result<Mutation, Denial> {
    match Injector::new(cfg.clone()) {
        Ok(injector) => injector.mutate(pod),
        Err(e) => {
            let message = format!("internal error rendering the injected objects: {e}");
            if cfg.deny_on_invalid {
                refuse(message, Vec::new(), None)
            } else {
                Ok(Mutation::unchanged(vec![not_injected(&message)], None))
            }
        }
    }
}

/// The warning of a pod admitted without the plumbing that would have been refused.
fn not_injected(message: &str) -> String {
    format!("tokenvend did not inject AWS credentials: {message}")
}

/// A [`Config`] with everything that does not depend on the pod built and rendered once.
#[derive(Debug)]
pub struct Injector {
    cfg: Config,
    role_key: String,
    mode_key: String,
    skip_key: String,
    warnings_key: String,
    /// The exchange URL's host when only the cluster's DNS resolves it (a Service name).
    exchange_cluster_host: Option<String>,
    web_identity: Prepared,
    credentials: Prepared,
    projected: Prepared,
}

/// What one mode injects under the config.
#[derive(Debug)]
struct Prepared {
    mode: Mode,
    volumes: Vec<Rendered<Volume>>,
    app_mounts: Vec<Rendered<VolumeMount>>,
    app_env: Vec<EnvSlot>,
    native: Option<SidecarTemplates>,
    init: Option<SidecarTemplates>,
    regular: Option<SidecarTemplates>,
}

/// One sidecar rendered for each way a pod can budget CPU and memory at the pod level, so the
/// rare pod that does costs no rendering either.
#[derive(Debug)]
struct SidecarTemplates([SidecarTemplate; 4]);

impl SidecarTemplates {
    /// Render the sidecar `container` gives, for every [`PodLevel`].
    fn new(container: impl Fn(PodLevel) -> Container) -> Result<Self, serde_json::Error> {
        let [a, b, c, d] = PodLevel::ALL.map(|level| SidecarTemplate::new(&container(level)));
        Ok(SidecarTemplates([a?, b?, c?, d?]))
    }

    /// The sidecar for a pod budgeting `level` at the pod level.
    fn for_pod(&self, level: PodLevel) -> &SidecarTemplate {
        &self.0[level.index()]
    }
}

/// A value and its JSON text.
#[derive(Debug, Clone)]
struct Rendered<T> {
    value: T,
    json: Box<RawValue>,
}

impl<T: Serialize> Rendered<T> {
    fn new(value: T) -> Result<Self, serde_json::Error> {
        let json = serde_json::value::to_raw_value(&value)?;
        Ok(Rendered { value, json })
    }
}

/// One injected env var: fixed by the config, or taken from the pod.
#[derive(Debug)]
enum EnvSlot {
    Fixed(Box<Rendered<EnvVar>>),
    RoleArn,
    SessionName,
}

/// A rendered sidecar container with its role ARN argument cut out: `before` + the role as a
/// JSON string + `after` is the container.
#[derive(Debug)]
struct SidecarTemplate {
    before: String,
    after: String,
}

/// Stands for the role ARN while a sidecar is rendered; control characters never occur in a
/// validated ARN or config value, and the rendering must hold it exactly once.
const ROLE_PLACEHOLDER: &str = "\u{1}role-arn\u{1}";

impl SidecarTemplate {
    fn new(container: &Container) -> Result<Self, serde_json::Error> {
        let json = serde_json::to_string(container)?;
        let marker = serde_json::to_string(ROLE_PLACEHOLDER)?;
        let mut parts = json.split(&marker);
        match (parts.next(), parts.next(), parts.next()) {
            (Some(before), Some(after), None) => Ok(SidecarTemplate {
                before: before.to_owned(),
                after: after.to_owned(),
            }),
            _ => Err(serde::ser::Error::custom(
                "the sidecar's role argument is not unique in its rendering",
            )),
        }
    }

    /// The container for `role`, as JSON text for the patch.
    fn with_role<'t>(&'t self, role: &RoleArn) -> Result<SidecarJson<'t>, serde_json::Error> {
        Ok(SidecarJson {
            template: self,
            role: serde_json::to_string(role.as_str())?,
        })
    }
}

/// A sidecar template with its role filled in: valid JSON, since a JSON string replaces the
/// placeholder's JSON string.
struct SidecarJson<'t> {
    template: &'t SidecarTemplate,
    role: String,
}

impl WriteJson for SidecarJson<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.template.before.as_bytes());
        out.extend_from_slice(self.role.as_bytes());
        out.extend_from_slice(self.template.after.as_bytes());
    }
}

impl Injector {
    /// Build and render everything the config injects, for every mode.
    pub fn new(cfg: Config) -> Result<Self, serde_json::Error> {
        Ok(Injector {
            role_key: contract::key(&cfg.prefix, ROLE_KEY),
            mode_key: contract::key(&cfg.prefix, MODE_KEY),
            skip_key: contract::key(&cfg.prefix, SKIP_CONTAINERS_KEY),
            warnings_key: contract::key(&cfg.prefix, WARNINGS_KEY),
            exchange_cluster_host: cluster_dns_host(&cfg.exchange_url).map(str::to_owned),
            web_identity: Prepared::new(&cfg, Mode::WebIdentity)?,
            credentials: Prepared::new(&cfg, Mode::Credentials)?,
            projected: Prepared::new(&cfg, Mode::Projected)?,
            cfg,
        })
    }

    /// The config this injector was built from.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The opt-in label key (and role annotation key), e.g. `tremolo.io/aws-role`.
    pub fn role_key(&self) -> &str {
        &self.role_key
    }

    /// Decide what to add to `pod`: the plumbing, nothing, or a refusal. With
    /// `--deny-on-invalid=false` a refused pod is admitted without the plumbing, its warnings
    /// recorded on it, since a controller's pod shows them to no one else.
    pub fn mutate(&self, pod: &PodView) -> Result<Mutation, Denial> {
        let Denial {
            message,
            mut warnings,
            mode,
        } = match self.decide(pod) {
            Ok(m) => return Ok(m),
            Err(d) if self.cfg.deny_on_invalid => return Err(d),
            Err(d) => d,
        };
        warnings.push(not_injected(
            message.strip_prefix(DENIAL_PREFIX).unwrap_or(&message),
        ));
        let mut patch = PatchBuilder::new();
        record_warnings(
            &pod.metadata,
            &self.warnings_key,
            0,
            &mut warnings,
            &mut patch,
        );
        Ok(Mutation {
            patch: patch.build(),
            warnings,
            mode,
            plumbed: false,
        })
    }

    /// A pod without this webhook's label. The shipped selectors send only pods with it, so one
    /// with the label under another prefix was sent by selectors that `--prefix` disagrees with:
    /// left alone, it and every other opted-in pod would start without credentials, unnoticed.
    fn without_label(&self, pod: &PodView) -> Result<Mutation, Denial> {
        let suffix = &self.role_key[self.cfg.prefix.len()..];
        let other = pod.metadata.labels.iter().flatten().find(|(key, value)| {
            key.ends_with(suffix) && key.len() > suffix.len() && value.as_ref() != OPT_OUT_VALUE
        });
        match other {
            None => Ok(Mutation::unchanged(Vec::new(), None)),
            Some((key, value)) => refuse(
                format!(
                    "pod is labelled {key}={value:?} but this webhook reads the prefix {prefix} \
                     (--prefix), so it looks for {role_key}: the MutatingWebhookConfiguration's \
                     label keys and --prefix disagree, and no pod gets AWS credentials until they \
                     agree (ask the cluster admin)",
                    value = value.as_ref(),
                    prefix = self.cfg.prefix,
                    role_key = self.role_key,
                ),
                Vec::new(),
                None,
            ),
        }
    }

    fn decide(&self, pod: &PodView) -> Result<Mutation, Denial> {
        let cfg = &self.cfg;
        let role_key = &self.role_key;
        let label = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(role_key.as_str()));
        let label = match label {
            None => return self.without_label(pod),
            Some(v) if v == OPT_OUT_VALUE => return Ok(Mutation::unchanged(Vec::new(), None)),
            Some(v) => v,
        };
        let mut warnings = Vec::new();
        let annotations = pod.metadata.annotations.as_ref();
        let annotation = |key: &str| annotations.and_then(|a| a.get(key));
        if annotation(MIRROR_POD_KEY).is_some() {
            // Neither a patch nor a refusal helps: the kubelet runs the static pod either way,
            // and only its mirror in the API would be lost.
            return Ok(Mutation::unchanged(
                vec![STATIC_POD_WARNING.to_owned()],
                None,
            ));
        }
        if label != OPT_IN_VALUE {
            // "True", "yes", "enabled": meant as an opt-in, and left alone the pod would start
            // without credentials and fail on its first AWS call, far from the cause.
            return refuse(
                format!(
                    "label {role_key}={label:?} neither opts in nor out: set it to \"{OPT_IN_VALUE}\" \
                     for AWS credentials, or to \"{OPT_OUT_VALUE}\" (or remove it) to leave the pod alone"
                ),
                warnings,
                None,
            );
        }

        let role = match annotation(role_key) {
            None => {
                return refuse(
                    format!(
                        "pod is labelled {role_key}=true but has no {role_key} annotation: \
                         set it to the IAM role ARN to assume, e.g. arn:aws:iam::123456789012:role/my-app"
                    ),
                    warnings,
                    None,
                );
            }
            Some(s) => match RoleArn::parse(s) {
                Ok(r) => r,
                Err(e) => {
                    return refuse(format!("annotation {role_key}: {e}"), warnings, None);
                }
            },
        };
        let mode_key = &self.mode_key;
        let mode = match annotation(mode_key) {
            None => {
                warnings.push(format!(
                    "no {mode_key} annotation: using the default mode {}",
                    cfg.default_mode
                ));
                cfg.default_mode
            }
            Some(s) => match s.parse::<Mode>() {
                Ok(m) => m,
                Err(e) => {
                    return refuse(format!("annotation {mode_key}: {e}"), warnings, None);
                }
            },
        };
        let Some(spec) = pod.spec.as_ref() else {
            return refuse("pod has no spec".to_owned(), warnings, Some(mode));
        };
        if mode.has_sidecar() && spec.wants_windows() {
            return refuse(
                format!(
                    "the pod runs on Windows (spec.os.name, or kubernetes.io/os in its \
                     nodeSelector or required node affinity) and the {mode} mode needs the \
                     sidecar, a Linux container: set {mode_key}: projected, which has none (it \
                     needs a cluster issuer AWS trusts)"
                ),
                warnings,
                Some(mode),
            );
        }

        let skip_key = &self.skip_key;
        let skip: BTreeSet<&str> = annotation(skip_key)
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let init_containers = spec.init_containers.as_deref().unwrap_or_default();
        let all_names: BTreeSet<&str> = spec
            .containers
            .iter()
            .chain(init_containers)
            .map(|c| &*c.name)
            .collect();
        for name in skip.difference(&all_names) {
            warnings.push(format!(
                "{skip_key} names {name:?}, which is not a container of this pod"
            ));
        }
        if spec
            .ephemeral_containers
            .as_ref()
            .is_some_and(|e| !e.is_empty())
        {
            warnings.push("ephemeral containers are left unchanged".to_owned());
        }
        if mode.has_sidecar()
            && cfg.sidecar_run_as_user.is_none()
            && spec.security_context.as_ref().and_then(|s| s.run_as_user) == Some(0)
        {
            // The kubelet refuses to start a runAsNonRoot container whose inherited UID is 0:
            // the pod would be admitted and never start.
            return refuse(
                "the pod runs as root (spec.securityContext.runAsUser: 0) and the sidecar, which \
                 must not, gets no UID of its own (sidecarRunAsUser: platform): it would inherit \
                 UID 0 and the kubelet would never start it. Set runAsUser: 0 on the containers \
                 that need root instead of on the pod"
                    .to_owned(),
                warnings,
                Some(mode),
            );
        }
        if let (true, Some(host), Some(dns)) = (
            mode.has_sidecar(),
            &self.exchange_cluster_host,
            spec.node_dns(),
        ) {
            warnings.push(format!(
                "{}: the pod resolves names with its node's DNS, which does not know the \
                 exchange {host}, so the sidecar cannot reach it and the pod stays in Init; set \
                 dnsPolicy: {}",
                dns.why, dns.fix
            ));
        }
        if mode == Mode::Credentials && spec.host_network == Some(true) {
            warnings.push(format!(
                "hostNetwork pod: the credentials endpoint 127.0.0.1:{} is on the node's \
                 loopback, reachable from the whole node (still guarded by its auth token), and a \
                 second such pod on this node cannot listen there; web-identity mode has no \
                 endpoint",
                cfg.credentials_port
            ));
        }

        if let Some(w) = mode
            .has_sidecar()
            .then(|| mesh_capture_warning(spec, cfg))
            .flatten()
        {
            warnings.push(w);
        }

        let prepared = self.prepared(mode);
        let app_env = match prepared.env_for(pod, &role) {
            Ok(env) => env,
            Err(e) => return render_failure(e, warnings, mode),
        };
        let mut problems = Problems::default();
        let mut patch = PatchBuilder::new();

        // Volumes.
        let existing_volumes = spec.volumes.as_deref().unwrap_or_default();
        let mut new_volumes = Vec::new();
        for ours in &prepared.volumes {
            match existing_volumes.iter().find(|v| v.name == ours.value.name) {
                Some(v) if same_volume_kind(v, &ours.value) => {}
                Some(_) => problems.push(format!(
                    "the pod already has a volume named {:?} with other content; rename it",
                    ours.value.name
                )),
                None => new_volumes.push(&*ours.json),
            }
        }
        patch.append(
            &[Seg::Key("spec"), Seg::Key("volumes")],
            spec.volumes.is_some(),
            &new_volumes,
        );

        // Sidecars: which of ours are already there, and which names clash.
        let sidecar_plan = self.sidecars(prepared, spec, &mut warnings, &mut problems);

        // App containers, then existing init containers (before any insertion at index 0 shifts them).
        let mut targeted = 0;
        for (list, containers) in [
            ("containers", spec.containers.as_slice()),
            ("initContainers", init_containers),
        ] {
            for (i, c) in containers.iter().enumerate() {
                if skip.contains(&*c.name) || self.is_our_sidecar(c) {
                    continue;
                }
                targeted += 1;
                let target = Target { list, index: i, c };
                target.inject(prepared, &app_env, &mut patch, &mut warnings, &mut problems);
            }
        }
        if targeted == 0 {
            warnings.push(format!(
                "{skip_key} skips every container: no container gets AWS credentials"
            ));
        }
        // The pod's containers share one network: a container running beside the endpoint and
        // listening on its port would race it. Init containers that finish before the endpoint
        // starts do not: in classic style all of them, in native style those before the sidecar.
        if mode == Mode::Credentials {
            let port = cfg.credentials_port;
            let beside = |(i, c): &(usize, &ContainerView)| {
                c.is_native_sidecar()
                    || (cfg.sidecar_style == SidecarStyle::Native && *i >= sidecar_plan.position)
            };
            let inits = init_containers.iter().map(|c| &**c);
            let inits_beside = inits.enumerate().filter(beside).map(|(_, c)| c);
            for c in spec.containers.iter().map(|c| &**c).chain(inits_beside) {
                if !self.is_our_sidecar(c) && c.declares_tcp_port(port) {
                    problems.push(format!(
                        "container {:?} declares port {port}, where the sidecar's credentials \
                         endpoint listens (127.0.0.1:{port}, in the network all the pod's \
                         containers share), so one of the two could not bind it: use \
                         {mode_key}: web-identity, or ask the cluster admin for another \
                         credentialsPort",
                        &*c.name
                    ));
                }
            }
        }

        if !problems.is_empty() {
            return refuse(problems.message(), warnings, Some(mode));
        }
        let sidecar_first = sidecar_plan.regular_first;
        if let Err(e) = sidecar_plan.emit(spec, &role, &mut patch) {
            return render_failure(e, warnings, mode);
        }
        let mut annotated = 0;
        if let Some(first) = spec.containers.first().filter(|_| sidecar_first) {
            annotated =
                keep_default_container(&pod.metadata, &first.name, &mut warnings, &mut patch);
        }
        // Only with the plumbing: a second pass, which adds none, then records nothing either.
        let plumbed = !patch.is_empty();
        if plumbed {
            record_warnings(
                &pod.metadata,
                &self.warnings_key,
                annotated,
                &mut warnings,
                &mut patch,
            );
        }
        if patch.overflowed() {
            return refuse(
                format!(
                    "the patch for this pod would pass {} KiB ({} containers and init \
                     containers): far more than any pod the API server can store needs",
                    MAX_PATCH_BYTES / 1024,
                    spec.containers.len() + init_containers.len()
                ),
                warnings,
                Some(mode),
            );
        }
        Ok(Mutation {
            patch: patch.build(),
            warnings,
            mode: Some(mode),
            plumbed,
        })
    }

    fn prepared(&self, mode: Mode) -> &Prepared {
        match mode {
            Mode::WebIdentity => &self.web_identity,
            Mode::Credentials => &self.credentials,
            Mode::Projected => &self.projected,
        }
    }

    /// Whether `c` is a sidecar this webhook injected earlier (it gets no app env), whatever
    /// image the configuration of that time gave it.
    fn is_our_sidecar(&self, c: &ContainerView) -> bool {
        c.command_first.as_deref() == Some(SIDECAR_BINARY)
    }

    /// Which sidecar containers to add, given what the pod already has.
    fn sidecars<'p>(
        &self,
        prepared: &'p Prepared,
        spec: &PodSpecView,
        warnings: &mut Vec<String>,
        problems: &mut Problems,
    ) -> SidecarPlan<'p> {
        let inits = spec.init_containers.as_deref().unwrap_or_default();
        let mut plan = SidecarPlan {
            native: None,
            init: None,
            regular: None,
            position: sidecar_position(inits, &self.cfg.sidecar_starts_after),
            regular_first: false,
        };
        if !prepared.mode.has_sidecar() {
            return plan;
        }
        let level = spec.pod_level();
        let name = &self.cfg.sidecar_name;
        let init_name = format!("{name}-init");
        // Ours if the name matches and it has our image or runs our binary; anything else with
        // our name is a clash. Our binary with another image is an earlier configuration's
        // sidecar: seen again when another webhook's change makes the API server call this one
        // again, and that call reaches a replica already running a new sidecarImage.
        let configured = self.cfg.sidecar_image.as_str();
        let mut check =
            |wanted_in: &[Box<ContainerView>], other: &[Box<ContainerView>], n: &str| -> bool {
                if other.iter().any(|c| c.name == n) {
                    problems.push(format!(
                        "the pod already has a container named {n:?}; rename it or set sidecarName"
                    ));
                    return true;
                }
                match wanted_in.iter().find(|c| c.name == n) {
                    Some(c) if c.image.as_deref() == Some(configured) => true,
                    Some(c) if self.is_our_sidecar(c) => {
                        warnings.push(format!(
                            "container {n:?} runs image {:?}, not the configured {configured:?}: \
                         added by an earlier configuration, left as it is",
                            c.image.as_deref().unwrap_or_default()
                        ));
                        true
                    }
                    Some(_) => {
                        problems.push(format!(
                            "the pod already has a container named {n:?} with another image; \
                         rename it or set sidecarName"
                        ));
                        true
                    }
                    None => false,
                }
            };
        match self.cfg.sidecar_style {
            SidecarStyle::Native => {
                if !check(inits, &spec.containers, name) {
                    plan.native = prepared.native.as_ref().map(|t| t.for_pod(level));
                }
            }
            SidecarStyle::Classic => {
                if !check(inits, &spec.containers, &init_name) {
                    plan.init = prepared.init.as_ref().map(|t| t.for_pod(level));
                }
                if !check(&spec.containers, inits, name) {
                    plan.regular = prepared.regular.as_ref().map(|t| t.for_pod(level));
                    // Its postStart hook holds back the containers after it until the endpoint
                    // serves (the kubelet starts them in order, each after the previous hook).
                    plan.regular_first = prepared.mode == Mode::Credentials;
                    if let Some(p @ ("Never" | "OnFailure")) = spec.restart_policy.as_deref() {
                        warnings.push(format!(
                            "restartPolicy {p} with sidecarStyle classic: the sidecar container \
                             {name:?} runs until the pod is deleted, so this pod (a Job's, say) \
                             never completes; native sidecars (Kubernetes 1.29+) stop with the app"
                        ));
                    }
                }
            }
        }
        plan
    }
}

/// A rendering failure: never a wrong patch; a refusal.
fn render_failure(
    e: serde_json::Error,
    warnings: Vec<String>,
    mode: Mode,
) -> Result<Mutation, Denial> {
    refuse(
        format!("internal error rendering the patch: {e}"),
        warnings,
        Some(mode),
    )
}

/// Kubernetes' limit on a pod's annotations, keys and values together, in bytes.
const ANNOTATIONS_LIMIT: usize = 256 * 1024;
/// The most of its warnings recorded on a pod, in bytes.
const RECORDED_WARNINGS_MAX: usize = 4096;

/// The annotation naming kubectl's default container for `logs`, `exec` and `attach` (without
/// it, the pod's first).
const DEFAULT_CONTAINER_KEY: &str = "kubectl.kubernetes.io/default-container";

/// Bytes the pod's annotations take, as Kubernetes counts them against its limit.
fn annotation_bytes(annotations: &BTreeMap<Str<'_>, Str<'_>>) -> usize {
    annotations.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// With the sidecar placed first, kubectl's `logs` and `exec` would default to it: name the
/// container that was first, unless the pod names one already. Returns the bytes added.
fn keep_default_container(
    meta: &MetaView,
    first: &str,
    warnings: &mut Vec<String>,
    patch: &mut PatchBuilder,
) -> usize {
    // A pod given the sidecar has annotations: its role's.
    let Some(annotations) = meta.annotations.as_ref() else {
        return 0;
    };
    if annotations.contains_key(DEFAULT_CONTAINER_KEY) {
        return 0;
    }
    let added = DEFAULT_CONTAINER_KEY.len() + first.len();
    if annotation_bytes(annotations) + added > ANNOTATIONS_LIMIT {
        warnings.push(format!(
            "the sidecar is the pod's first container, and {DEFAULT_CONTAINER_KEY} is not set \
             to {first:?} since the pod's annotations would exceed Kubernetes' limit of 256 KiB: \
             kubectl logs and exec need -c {first}"
        ));
        return 0;
    }
    patch.add(
        &pointer([
            Seg::Key("metadata"),
            Seg::Key("annotations"),
            Seg::Key(DEFAULT_CONTAINER_KEY),
        ]),
        &first,
    );
    added
}

/// Record `warnings` on the pod being patched, under `key`: the warnings of a pod that a
/// controller creates (a Deployment's) reach nobody, since only the creating client sees them.
/// An annotation already there is kept; a pod whose annotations (with the `pending` bytes this
/// patch adds) would outgrow Kubernetes' limit gets one more warning instead, since an
/// oversized pod would be refused.
fn record_warnings(
    meta: &MetaView,
    key: &str,
    pending: usize,
    warnings: &mut Vec<String>,
    patch: &mut PatchBuilder,
) {
    if warnings.is_empty() {
        return;
    }
    let text = warnings_text(warnings);
    // A pod admitted without the plumbing may have no annotations at all (not even its role).
    let Some(annotations) = meta.annotations.as_ref() else {
        let map = std::collections::BTreeMap::from([(key, text.as_str())]);
        match serde_json::value::to_raw_value(&map) {
            Ok(object) => patch.add(
                &pointer([Seg::Key("metadata"), Seg::Key("annotations")]),
                &&*object,
            ),
            Err(e) => warnings.push(format!("these warnings are not recorded in {key}: {e}")),
        }
        return;
    };
    if annotations.contains_key(key) {
        return;
    }
    if annotation_bytes(annotations) + pending + key.len() + text.len() > ANNOTATIONS_LIMIT {
        warnings.push(format!(
            "these warnings are not recorded in the pod's {key} annotation: the pod's \
             annotations would exceed Kubernetes' limit of 256 KiB"
        ));
        return;
    }
    patch.add(
        &pointer([Seg::Key("metadata"), Seg::Key("annotations"), Seg::Key(key)]),
        &text.as_str(),
    );
}

/// The warnings one per line, whole ones only, within [`RECORDED_WARNINGS_MAX`] bytes; a last
/// line counts those left out.
fn warnings_text(warnings: &[String]) -> String {
    // Room kept for the last line.
    const TAIL: usize = 64;
    let mut text = String::new();
    let mut recorded = 0;
    for w in warnings {
        let room = if recorded + 1 == warnings.len() {
            RECORDED_WARNINGS_MAX
        } else {
            RECORDED_WARNINGS_MAX - TAIL
        };
        let newline = usize::from(recorded > 0);
        if text.len() + newline + w.len() > room {
            break;
        }
        if recorded > 0 {
            text.push('\n');
        }
        text.push_str(w);
        recorded += 1;
    }
    let left = warnings.len() - recorded;
    if left > 0 {
        if recorded > 0 {
            text.push('\n');
        }
        text.push('(');
        text.push_str(&more(left, "warning"));
        text.push_str(" not recorded here)");
    }
    text
}

/// Invalid input or a conflict: deny, or admit unchanged with a warning, as configured.
/// Refuse the pod (admitted without the plumbing instead under `--deny-on-invalid=false`, by
/// [`Injector::mutate`]).
fn refuse(message: String, warnings: Vec<String>, mode: Option<Mode>) -> Result<Mutation, Denial> {
    Err(Denial {
        message: format!("{DENIAL_PREFIX}{message}"),
        warnings,
        mode,
    })
}

impl Prepared {
    /// Everything `mode` injects under `cfg`.
    fn new(cfg: &Config, mode: Mode) -> Result<Self, serde_json::Error> {
        let audience = match mode {
            Mode::Projected => AWS_STS_AUDIENCE,
            _ => cfg.token_audience.as_str(),
        };
        let mut volumes = vec![Rendered::new(Volume {
            name: SA_TOKEN_VOLUME.to_owned(),
            projected: Some(ProjectedVolumeSource {
                // Set explicitly: the API server would default it, and a second pass compares.
                default_mode: Some(0o644),
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(audience.to_owned()),
                        expiration_seconds: Some(cfg.token_expiration_seconds),
                        path: files::SA_TOKEN.to_owned(),
                    }),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        })?];
        if mode.has_sidecar() {
            volumes.push(Rendered::new(Volume {
                name: SHARED_VOLUME.to_owned(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".to_owned()),
                    size_limit: Some(Quantity("1Mi".to_owned())),
                }),
                ..Default::default()
            })?);
        }
        let (mount_volume, mount_path) = match mode {
            Mode::Projected => (SA_TOKEN_VOLUME, SA_TOKEN_DIR),
            _ => (SHARED_VOLUME, SHARED_DIR),
        };
        let app_mounts = vec![Rendered::new(mount(mount_volume, mount_path, true))?];

        let fixed = |name: &str, value: &str| {
            Rendered::new(var(name, value)).map(|r| EnvSlot::Fixed(Box::new(r)))
        };
        let mut app_env = Vec::new();
        match mode {
            Mode::WebIdentity | Mode::Projected => {
                let token_file = match mode {
                    Mode::Projected => format!("{SA_TOKEN_DIR}/{}", files::SA_TOKEN),
                    _ => format!("{SHARED_DIR}/{}", files::WEB_IDENTITY_TOKEN),
                };
                app_env.push(EnvSlot::RoleArn);
                app_env.push(fixed(env::AWS_WEB_IDENTITY_TOKEN_FILE, &token_file)?);
                app_env.push(EnvSlot::SessionName);
            }
            Mode::Credentials => {
                app_env.push(fixed(
                    env::AWS_CONTAINER_CREDENTIALS_FULL_URI,
                    &format!(
                        "http://127.0.0.1:{}{CREDENTIALS_PATH}",
                        cfg.credentials_port
                    ),
                )?);
                app_env.push(fixed(
                    env::AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE,
                    &format!("{SHARED_DIR}/{}", files::AUTH_TOKEN),
                )?);
            }
        }
        if let Some(region) = &cfg.region {
            app_env.push(fixed(env::AWS_REGION, region)?);
            app_env.push(fixed(env::AWS_DEFAULT_REGION, region)?);
        }
        if mode != Mode::Credentials {
            app_env.push(fixed(env::AWS_STS_REGIONAL_ENDPOINTS, "regional")?);
        }

        let mut prepared = Prepared {
            mode,
            volumes,
            app_mounts,
            app_env,
            native: None,
            init: None,
            regular: None,
        };
        if mode.has_sidecar() {
            let name = &cfg.sidecar_name;
            let sidecar = |name: &str, native: bool, once: bool| {
                SidecarTemplates::new(|level| {
                    sidecar_container(cfg, mode, name, native, once, level)
                })
            };
            match cfg.sidecar_style {
                SidecarStyle::Native => prepared.native = Some(sidecar(name, true, false)?),
                SidecarStyle::Classic => {
                    prepared.init = Some(sidecar(&format!("{name}-init"), false, true)?);
                    prepared.regular = Some(sidecar(name, false, false)?);
                }
            }
        }
        Ok(prepared)
    }

    /// The env vars for this pod, in injection order.
    fn env_for(
        &self,
        pod: &PodView,
        role: &RoleArn,
    ) -> Result<Vec<Cow<'_, Rendered<EnvVar>>>, serde_json::Error> {
        self.app_env
            .iter()
            .map(|slot| match slot {
                EnvSlot::Fixed(r) => Ok(Cow::Borrowed(&**r)),
                EnvSlot::RoleArn => {
                    Rendered::new(var(env::AWS_ROLE_ARN, role.as_str())).map(Cow::Owned)
                }
                EnvSlot::SessionName => Rendered::new(session_name(pod)).map(Cow::Owned),
            })
            .collect()
    }
}

/// One app or init container that gets our mounts and env.
struct Target<'a> {
    list: &'static str,
    index: usize,
    c: &'a ContainerView<'a>,
}

impl Target<'_> {
    /// Add our mounts and env vars to the container.
    fn inject(
        &self,
        prepared: &Prepared,
        app_env: &[Cow<'_, Rendered<EnvVar>>],
        patch: &mut PatchBuilder,
        warnings: &mut Vec<String>,
        problems: &mut Problems,
    ) {
        let c = self.c;
        let base = [
            Seg::Key("spec"),
            Seg::Key(self.list),
            Seg::Index(self.index),
        ];
        let mounts = c.volume_mounts.as_deref().unwrap_or_default();
        let mut new_mounts = Vec::new();
        for ours in &prepared.app_mounts {
            match mounts
                .iter()
                .find(|m| m.mount_path == ours.value.mount_path)
            {
                Some(m) if m.name == ours.value.name => {}
                Some(m) => problems.push(format!(
                    "container {:?} already mounts volume {:?} at {}",
                    c.name, m.name, m.mount_path
                )),
                None => new_mounts.push(&*ours.json),
            }
        }
        patch.append(
            &[base[0], base[1], base[2], Seg::Key("volumeMounts")],
            c.volume_mounts.is_some(),
            &new_mounts,
        );

        let existing = c.env.as_deref().unwrap_or_default();
        let mut new_env = Vec::new();
        for ours in app_env {
            match existing.iter().find(|e| e.name == ours.value.name) {
                Some(e) if e.is(&ours.value) => {}
                Some(_) => warnings.push(format!(
                    "container {:?} sets {} itself: kept its value",
                    c.name, ours.value.name
                )),
                None => new_env.push(&*ours.json),
            }
        }
        for shadow in shadowing_vars(prepared.mode) {
            if existing.iter().any(|e| e.name == *shadow) {
                warnings.push(format!(
                    "container {:?} sets {shadow}: SDKs use it before the injected role",
                    c.name
                ));
            }
        }
        if !new_env.is_empty() && c.env_from.as_ref().is_some_and(|f| !f.is_empty()) {
            warnings.push(format!(
                "container {:?} uses envFrom: injected AWS_* variables take precedence over \
                 same-named ones from it",
                c.name
            ));
        }
        patch.append(
            &[base[0], base[1], base[2], Seg::Key("env")],
            c.env.is_some(),
            &new_env,
        );
    }
}

/// Variables that the AWS SDKs' default credential chains read before what `mode` injects: a
/// container that sets one gets other credentials than the annotated role. Web identity from the
/// environment comes before the container-credentials endpoint in every SDK, and within that
/// provider the ECS-style relative URI before the full one.
fn shadowing_vars(mode: Mode) -> &'static [&'static str] {
    match mode {
        Mode::Credentials => &[
            "AWS_ACCESS_KEY_ID",
            "AWS_PROFILE",
            env::AWS_WEB_IDENTITY_TOKEN_FILE,
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        ],
        Mode::WebIdentity | Mode::Projected => &["AWS_ACCESS_KEY_ID", "AWS_PROFILE"],
    }
}

/// The host of `url` when it is a name only the cluster's DNS resolves: a Service name
/// (`<service>.<namespace>.svc[.<cluster domain>]`) or a single label (found through the pod's
/// search domains). Addresses and other names resolve from a node too.
fn cluster_dns_host(url: &str) -> Option<&str> {
    let host = tokenvend_core::names::url_host(url);
    if host.is_empty()
        || host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok()
    {
        return None;
    }
    let mut labels = host.trim_end_matches('.').split('.');
    labels.next();
    let mut rest = labels.peekable();
    (rest.peek().is_none() || rest.any(|l| l.eq_ignore_ascii_case("svc"))).then_some(host)
}

/// The sidecar container for `mode`; its `--role-arn` argument is [`ROLE_PLACEHOLDER`]. It asks
/// for no CPU or memory of its own that the pod budgets at the pod level (`level`): it takes its
/// share of the pod's, as Kubernetes refuses containers that together request more than that.
fn sidecar_container(
    cfg: &Config,
    mode: Mode,
    name: &str,
    native: bool,
    once: bool,
    level: PodLevel,
) -> Container {
    let mut args = vec![
        "--mode".to_owned(),
        mode.as_str().to_owned(),
        "--sa-token-file".to_owned(),
        format!("{SA_TOKEN_DIR}/{}", files::SA_TOKEN),
        "--out-dir".to_owned(),
        SHARED_DIR.to_owned(),
        "--exchange-url".to_owned(),
        cfg.exchange_url.clone(),
        "--role-arn".to_owned(),
        ROLE_PLACEHOLDER.to_owned(),
    ];
    if mode == Mode::Credentials {
        args.push("--listen".to_owned());
        args.push(format!("127.0.0.1:{}", cfg.credentials_port));
    }
    if once {
        args.push("--once".to_owned());
    }
    let res = &cfg.sidecar_resources;
    let own = |list: &[(&str, Option<&String>)]| {
        let list: std::collections::BTreeMap<String, Quantity> = list
            .iter()
            .filter(|(resource, _)| !level.budgets(resource))
            .filter_map(|(resource, q)| Some(((*resource).to_owned(), Quantity((*q)?.clone()))))
            .collect();
        (!list.is_empty()).then_some(list)
    };
    let requests = own(&[
        ("cpu", Some(&res.cpu_request)),
        ("memory", Some(&res.memory_request)),
    ]);
    let limits = own(&[
        ("cpu", res.cpu_limit.as_ref()),
        ("memory", Some(&res.memory_limit)),
    ]);
    Container {
        name: name.to_owned(),
        image: Some(cfg.sidecar_image.clone()),
        image_pull_policy: Some(cfg.sidecar_image_pull_policy.clone()),
        command: Some(vec![SIDECAR_BINARY.to_owned()]),
        args: Some(args),
        env: cfg
            .exchange_ca_pem
            .as_ref()
            .map(|pem| vec![var(SIDECAR_CA_PEM_ENV, pem)]),
        restart_policy: native.then(|| "Always".to_owned()),
        // The classic regular sidecar, placed first: the kubelet starts the app containers after
        // this hook returns, so their first AWS call finds the endpoint serving.
        lifecycle: (!native && !once && mode == Mode::Credentials).then(|| Lifecycle {
            post_start: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        SIDECAR_BINARY.to_owned(),
                        "wait".to_owned(),
                        "--out-dir".to_owned(),
                        SHARED_DIR.to_owned(),
                        "--listen".to_owned(),
                        format!("127.0.0.1:{}", cfg.credentials_port),
                        "--wait-seconds".to_owned(),
                        SIDECAR_WAIT_SECONDS.to_string(),
                    ]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        startup_probe: native.then(|| Probe {
            exec: Some(ExecAction {
                command: Some(vec![
                    SIDECAR_BINARY.to_owned(),
                    "probe".to_owned(),
                    "--mode".to_owned(),
                    mode.as_str().to_owned(),
                    "--out-dir".to_owned(),
                    SHARED_DIR.to_owned(),
                    "--min-valid-seconds".to_owned(),
                    cfg.sidecar_probe_min_valid_seconds.to_string(),
                ]),
            }),
            period_seconds: Some(1),
            timeout_seconds: Some(2),
            failure_threshold: Some(120),
            ..Default::default()
        }),
        resources: (requests.is_some() || limits.is_some()).then(|| ResourceRequirements {
            requests,
            limits,
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: cfg.sidecar_run_as_user,
            run_as_group: cfg.sidecar_run_as_user,
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount(SA_TOKEN_VOLUME, SA_TOKEN_DIR, true),
            mount(SHARED_VOLUME, SHARED_DIR, false),
        ]),
        ..Default::default()
    }
}

/// How long the classic sidecar's postStart hook holds the app back at most. The sidecar serves
/// the credentials its init container wrote, so it is up in well under a second; past this the
/// hook fails, the kubelet restarts the sidecar and records why in the pod's events.
const SIDECAR_WAIT_SECONDS: u64 = 60;

/// The sidecar containers still to add.
struct SidecarPlan<'p> {
    native: Option<&'p SidecarTemplate>,
    init: Option<&'p SidecarTemplate>,
    regular: Option<&'p SidecarTemplate>,
    /// Index in `initContainers` for the native sidecar or the classic init container.
    position: usize,
    /// The classic regular sidecar goes first in `containers`, not last.
    regular_first: bool,
}

/// Where the sidecar (or the classic init container) goes in `initContainers`: first, so every
/// later init container can use AWS, except that it follows the last native sidecar named in
/// `after`. A mesh whose CNI plugin captures the pod's outbound traffic before any container
/// starts (Istio's, Linkerd's) sends the sidecar's exchanges to its proxy; ahead of the proxy,
/// the exchanges could not connect, its startupProbe would never pass, and the proxy would never
/// start: the pod would stay in Init.
pub fn sidecar_position(inits: &[Box<ContainerView>], after: &[String]) -> usize {
    inits
        .iter()
        .rposition(|c| c.is_native_sidecar() && after.iter().any(|n| **n == *c.name))
        .map_or(0, |i| i + 1)
}

impl SidecarPlan<'_> {
    fn emit(
        self,
        spec: &PodSpecView,
        role: &RoleArn,
        patch: &mut PatchBuilder,
    ) -> Result<(), serde_json::Error> {
        let inits_path = [Seg::Key("spec"), Seg::Key("initContainers")];
        // Last, so the operations before it address the init containers as they were.
        if let Some(t) = self.native.or(self.init) {
            patch.insert(
                &inits_path,
                spec.init_containers.is_some(),
                self.position,
                &t.with_role(role)?,
            );
        }
        if let Some(t) = self.regular {
            let containers = [Seg::Key("spec"), Seg::Key("containers")];
            if self.regular_first {
                patch.insert(&containers, true, 0, &t.with_role(role)?);
            } else {
                patch.append(&containers, true, &[t.with_role(role)?]);
            }
        }
        Ok(())
    }
}

/// Init containers a mesh's CNI plugin adds to check its capture of the pod's traffic, which it
/// sets up before any container starts: Istio's, Linkerd's and Kuma's.
const MESH_CNI_CHECKS: [&str; 3] = [
    "istio-validation",
    "linkerd-network-validator",
    "kuma-validation",
];

/// UIDs whose traffic those meshes never capture (their proxies', by default): Istio's,
/// Linkerd's and Kuma's.
const MESH_EXEMPT_UIDS: [i64; 3] = [1337, 2102, 5678];

/// A warning for a pod whose mesh captures outbound traffic before any container starts while
/// its proxy is a regular container: the sidecar, an init container, starts before the proxy can
/// carry its exchanges, and no place among the init containers helps.
fn mesh_capture_warning(spec: &PodSpecView, cfg: &Config) -> Option<String> {
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    let check = inits.iter().find(|c| MESH_CNI_CHECKS.contains(&&*c.name))?;
    let proxy = spec
        .containers
        .iter()
        .find(|c| cfg.sidecar_starts_after.iter().any(|n| **n == *c.name))?;
    if cfg
        .sidecar_run_as_user
        .is_some_and(|uid| MESH_EXEMPT_UIDS.contains(&uid))
    {
        return None;
    }
    Some(format!(
        "the mesh proxy {:?} is a regular container, and the mesh captures the pod's traffic \
         before any container starts ({:?} is its CNI plugin's check): the sidecar, an init \
         container, starts before the proxy, so its exchanges cannot connect and the pod stays \
         in Init, unless the mesh's own settings exclude the exchange's address. Run the mesh \
         with native sidecars (the sidecar is then placed after its proxy), or set \
         sidecarRunAsUser to the UID the mesh never captures (Istio 1337, Linkerd 2102, Kuma 5678)",
        &*proxy.name, &*check.name
    ))
}

/// `AWS_ROLE_SESSION_NAME` from the pod's name: AWS allows 2-64 of `[\w+=,.@-]`.
///
/// A pod that only has `generateName` is named by the API server after admission, so the
/// variable then reads `metadata.name` through the downward API (generated names are at most
/// 63 characters of `[a-z0-9.-]`, always valid). A longer static name is cut to 55 characters
/// plus `-` and 8 hex digits of its SHA-256 so it stays unique.
pub fn session_name(pod: &PodView) -> EnvVar {
    match pod.metadata.name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => var(env::AWS_ROLE_SESSION_NAME, &session_name_from(name)),
        None => EnvVar {
            name: env::AWS_ROLE_SESSION_NAME.to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: Some("v1".to_owned()),
                    field_path: "metadata.name".to_owned(),
                }),
                ..Default::default()
            }),
        },
    }
}

/// The static session name rule for a known pod name (see [`tokenvend_core::session::session_name`]).
pub fn session_name_from(name: &str) -> String {
    tokenvend_core::session::session_name(name)
}

fn same_volume_kind(existing: &VolumeView, ours: &Volume) -> bool {
    if ours.empty_dir.is_some() {
        return existing.empty_dir.is_some();
    }
    // Our only other volume is the projected SA token (`Prepared::new`).
    existing.token_path() == Some(files::SA_TOKEN)
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

fn var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MutationArgs;
    use serde_json::Value;

    fn role() -> RoleArn {
        RoleArn::parse("arn:aws:iam::123456789012:role/team/app+x=y,z.a@b-c").expect("valid ARN")
    }

    #[test]
    fn sidecar_templates_render_exactly_like_the_container_with_the_role() {
        for (style, name) in [
            (SidecarStyle::Native, "native"),
            (SidecarStyle::Classic, "classic"),
        ] {
            let cfg = Config::from_args(MutationArgs {
                sidecar_style: Some(name.to_owned()),
                region: Some("eu-west-1".to_owned()),
                ..Default::default()
            })
            .expect("valid config");
            let injector = Injector::new(cfg.clone()).expect("renders");
            for mode in [Mode::WebIdentity, Mode::Credentials] {
                let p = injector.prepared(mode);
                let name = &cfg.sidecar_name;
                let cases = [
                    (p.native.as_ref(), name.clone(), true, false),
                    (p.init.as_ref(), format!("{name}-init"), false, true),
                    (p.regular.as_ref(), name.clone(), false, false),
                ];
                let mut seen = 0;
                for (templates, name, native, once) in cases {
                    let Some(templates) = templates else { continue };
                    seen += 1;
                    for level in PodLevel::ALL {
                        let mut expected =
                            sidecar_container(&cfg, mode, &name, native, once, level);
                        for arg in expected.args.iter_mut().flatten() {
                            if arg == ROLE_PLACEHOLDER {
                                *arg = role().as_str().to_owned();
                            }
                        }
                        let mut json = Vec::new();
                        templates
                            .for_pod(level)
                            .with_role(&role())
                            .expect("renders")
                            .write_json(&mut json);
                        let got: Value = serde_json::from_slice(&json).expect("JSON");
                        assert_eq!(got, serde_json::to_value(&expected).expect("renders"));
                    }
                }
                assert_eq!(seen, if style == SidecarStyle::Native { 1 } else { 2 });
            }
            assert!(injector.prepared(Mode::Projected).native.is_none());
        }
    }

    #[test]
    fn the_sidecar_asks_for_no_cpu_or_memory_the_pod_budgets_at_the_pod_level() {
        let cfg = Config::default();
        let resources = |level| {
            let c = sidecar_container(&cfg, Mode::WebIdentity, "s", true, false, level);
            serde_json::to_value(c.resources).expect("renders")
        };
        // (pod-level cpu, pod-level memory) → the sidecar's own resources
        for (cpu, memory, want) in [
            (
                false,
                false,
                serde_json::json!({
                    "requests": {"cpu": "10m", "memory": "16Mi"},
                    "limits": {"cpu": "100m", "memory": "32Mi"}
                }),
            ),
            (
                true,
                false,
                serde_json::json!({"requests": {"memory": "16Mi"}, "limits": {"memory": "32Mi"}}),
            ),
            (
                false,
                true,
                serde_json::json!({"requests": {"cpu": "10m"}, "limits": {"cpu": "100m"}}),
            ),
            (true, true, Value::Null),
        ] {
            assert_eq!(
                resources(PodLevel { cpu, memory }),
                want,
                "cpu {cpu}, memory {memory}"
            );
        }
    }

    #[test]
    fn a_template_needs_the_role_placeholder_exactly_once() {
        let cfg = Config::default();
        let mut c = sidecar_container(
            &cfg,
            Mode::WebIdentity,
            "s",
            true,
            false,
            PodLevel::default(),
        );
        assert!(SidecarTemplate::new(&c).is_ok());
        c.image = Some(ROLE_PLACEHOLDER.to_owned());
        assert!(SidecarTemplate::new(&c).is_err(), "twice");
        c.image = None;
        c.args = None;
        assert!(SidecarTemplate::new(&c).is_err(), "never");
    }
}
