//! Any pod controller seen as one PodSpec plus the path of its pod template.
//!
//! Every finding names the field the user must edit, so the view keeps the JSON path prefix
//! of the pod template (`spec`, `spec.template.spec`, `spec.jobTemplate.spec.template.spec`).

pub(crate) mod fast;
mod few;
pub mod pod;

use pod::{PodSpec, PodTemplateSpec, Text, TextMap};

use serde::{Deserialize, Deserializer};

/// The kinds the engine evaluates. Anything else is allowed untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    Pod,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    ReplicationController,
    Job,
    CronJob,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 8] = [
        WorkloadKind::Pod,
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
        WorkloadKind::ReplicaSet,
        WorkloadKind::ReplicationController,
        WorkloadKind::Job,
        WorkloadKind::CronJob,
    ];

    /// The kind from an API group and kind name (`apps` + `Deployment`); `None` for kinds the
    /// engine does not evaluate.
    pub fn from_group_kind(group: &str, kind: &str) -> Option<Self> {
        Some(match (group, kind) {
            ("", "Pod") => Self::Pod,
            ("", "ReplicationController") => Self::ReplicationController,
            ("apps", "Deployment") => Self::Deployment,
            ("apps", "StatefulSet") => Self::StatefulSet,
            ("apps", "DaemonSet") => Self::DaemonSet,
            ("apps", "ReplicaSet") => Self::ReplicaSet,
            ("batch", "Job") => Self::Job,
            ("batch", "CronJob") => Self::CronJob,
            _ => return None,
        })
    }

    /// Same, from a manifest's `apiVersion` (`apps/v1`, `v1`).
    pub fn from_api_version_kind(api_version: &str, kind: &str) -> Option<Self> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let expected = match group {
            "" | "apps" | "batch" => "v1",
            _ => return None,
        };
        (version == expected).then_some(())?;
        Self::from_group_kind(group, kind)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pod => "Pod",
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::ReplicaSet => "ReplicaSet",
            Self::ReplicationController => "ReplicationController",
            Self::Job => "Job",
            Self::CronJob => "CronJob",
        }
    }

    /// API group, as webhook rules name it.
    pub fn group(self) -> &'static str {
        match self {
            Self::Pod | Self::ReplicationController => "",
            Self::Deployment | Self::StatefulSet | Self::DaemonSet | Self::ReplicaSet => "apps",
            Self::Job | Self::CronJob => "batch",
        }
    }

    /// Plural resource name, as webhook rules name it.
    pub fn resource(self) -> &'static str {
        match self {
            Self::Pod => "pods",
            Self::Deployment => "deployments",
            Self::StatefulSet => "statefulsets",
            Self::DaemonSet => "daemonsets",
            Self::ReplicaSet => "replicasets",
            Self::ReplicationController => "replicationcontrollers",
            Self::Job => "jobs",
            Self::CronJob => "cronjobs",
        }
    }

    /// JSON path of the pod spec, as a user writes it.
    pub fn spec_path(self) -> &'static str {
        match self {
            Self::Pod => "spec",
            Self::CronJob => "spec.jobTemplate.spec.template.spec",
            _ => "spec.template.spec",
        }
    }

    /// JSON path of the pod metadata (labels, annotations).
    pub fn pod_metadata_path(self) -> &'static str {
        match self {
            Self::Pod => "metadata",
            Self::CronJob => "spec.jobTemplate.spec.template.metadata",
            _ => "spec.template.metadata",
        }
    }

    /// JSON pointer of the pod spec (for patches).
    pub fn spec_pointer(self) -> &'static str {
        match self {
            Self::Pod => "/spec",
            Self::CronJob => "/spec/jobTemplate/spec/template/spec",
            _ => "/spec/template/spec",
        }
    }

    /// Long-running workloads serve traffic and need probes and metrics; Jobs run to completion.
    /// A bare Pod is treated as long-running unless its `restartPolicy` says otherwise.
    pub fn is_long_running(self) -> bool {
        !matches!(self, Self::Job | Self::CronJob)
    }

    /// Kinds with a `spec.replicas` that the `replicas-minimum` policy reads.
    pub fn has_replicas(self) -> bool {
        matches!(self, Self::Deployment | Self::StatefulSet)
    }
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an object of a known kind could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{kind} object does not match the Kubernetes schema: {source}")]
pub struct WorkloadError {
    pub kind: WorkloadKind,
    #[source]
    pub source: serde_json::Error,
}

/// One pod controller, reduced to what the policies read.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload<'a> {
    pub kind: WorkloadKind,
    pub name: Text<'a>,
    pub namespace: Option<Text<'a>>,
    /// `spec.replicas` for kinds that have it (`None` when unset: HPA-managed).
    pub replicas: Option<i32>,
    /// Labels and annotations of the pod (template).
    pub pod_labels: TextMap<'a>,
    pub pod_annotations: TextMap<'a>,
    pub spec: PodSpec<'a>,
}

// The outer layers of the eight kinds, reduced to the fields a [`Workload`] keeps; the pod
// template inside is [`pod::PodTemplateSpec`], reduced the same way. Everything else in the
// object (`metadata.managedFields`, the `last-applied-configuration` annotation, `status`,
// the selector) is skipped by the parser without being built: on a Deployment captured from
// a real API server, building `managedFields` alone was half of the decode. Like
// k8s-openapi's types, a missing or `null` field is its default and unknown fields are
// ignored; a field that is read and has the wrong type is an error naming the kind.

/// `metadata` of a pod controller: its name and namespace only.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    name: Option<Text<'static>>,
    generate_name: Option<Text<'static>>,
    namespace: Option<Text<'static>>,
}

/// `metadata` of a bare Pod, whose labels and annotations are the pod's.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodMeta {
    name: Option<Text<'static>>,
    generate_name: Option<Text<'static>>,
    namespace: Option<Text<'static>>,
    labels: Option<TextMap<'static>>,
    #[serde(default, deserialize_with = "pod::read_annotations")]
    annotations: Option<TextMap<'static>>,
}

#[derive(Debug, Deserialize)]
struct Object<M, S> {
    metadata: Option<M>,
    spec: Option<S>,
}

/// Deployment, StatefulSet, ReplicaSet, ReplicationController.
#[derive(Debug, Default, Deserialize)]
struct ReplicatedSpec {
    replicas: Option<i32>,
    template: Option<PodTemplateSpec<'static>>,
}

/// DaemonSet, Job.
#[derive(Debug, Default, Deserialize)]
struct TemplateSpec {
    template: Option<PodTemplateSpec<'static>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CronJobSpec {
    job_template: Option<JobTemplateSpec>,
}

#[derive(Debug, Default, Deserialize)]
struct JobTemplateSpec {
    spec: Option<TemplateSpec>,
}

fn from_template(
    kind: WorkloadKind,
    meta: Option<Meta>,
    replicas: Option<i32>,
    template: Option<PodTemplateSpec<'static>>,
) -> Workload<'static> {
    let meta = meta.unwrap_or_default();
    let template = template.unwrap_or_default();
    let pod_meta = template.metadata.unwrap_or_default();
    Workload {
        kind,
        name: meta.name.or(meta.generate_name).unwrap_or_default(),
        namespace: meta.namespace,
        replicas,
        pod_labels: pod_meta.labels.unwrap_or_default(),
        pod_annotations: pod_meta.annotations.unwrap_or_default(),
        spec: template.spec.unwrap_or_default(),
    }
}

impl Workload<'_> {
    /// Decode the raw JSON of an object of `kind` once, keeping only what the policies read
    /// (see [`pod`]).
    pub fn from_json(kind: WorkloadKind, json: &str) -> Result<Workload<'static>, WorkloadError> {
        let mut de = serde_json::Deserializer::from_str(json);
        Self::deserialize_as(kind, &mut de)
            .and_then(|workload| de.end().map(|()| workload))
            .map_err(|source| WorkloadError { kind, source })
    }

    /// [`Workload::from_json`] from any deserializer: the server reads the object this way
    /// in the same pass as the AdmissionReview around it.
    pub fn deserialize_as<'de, D: Deserializer<'de>>(
        kind: WorkloadKind,
        deserializer: D,
    ) -> Result<Workload<'static>, D::Error> {
        Ok(match kind {
            WorkloadKind::Pod => {
                let pod = Object::<PodMeta, PodSpec<'static>>::deserialize(deserializer)?;
                let meta = pod.metadata.unwrap_or_default();
                Workload {
                    kind,
                    name: meta.name.or(meta.generate_name).unwrap_or_default(),
                    namespace: meta.namespace,
                    replicas: None,
                    pod_labels: meta.labels.unwrap_or_default(),
                    pod_annotations: meta.annotations.unwrap_or_default(),
                    spec: pod.spec.unwrap_or_default(),
                }
            }
            WorkloadKind::Deployment
            | WorkloadKind::StatefulSet
            | WorkloadKind::ReplicaSet
            | WorkloadKind::ReplicationController => {
                let o = Object::<Meta, ReplicatedSpec>::deserialize(deserializer)?;
                let spec = o.spec.unwrap_or_default();
                from_template(kind, o.metadata, spec.replicas, spec.template)
            }
            WorkloadKind::DaemonSet | WorkloadKind::Job => {
                let o = Object::<Meta, TemplateSpec>::deserialize(deserializer)?;
                let spec = o.spec.unwrap_or_default();
                from_template(kind, o.metadata, None, spec.template)
            }
            WorkloadKind::CronJob => {
                let o = Object::<Meta, CronJobSpec>::deserialize(deserializer)?;
                let template = o
                    .spec
                    .and_then(|spec| spec.job_template)
                    .and_then(|job| job.spec)
                    .and_then(|job| job.template);
                from_template(kind, o.metadata, None, template)
            }
        })
    }

    /// Whether probes and metrics apply: long-running kinds, and bare Pods that restart.
    pub fn is_long_running(&self) -> bool {
        match self.kind {
            WorkloadKind::Pod => !matches!(
                self.spec.restart_policy.as_deref(),
                Some("Never" | "OnFailure")
            ),
            kind => kind.is_long_running(),
        }
    }

    /// Every container of the pod spec with its kind and index, in the order a user reads them.
    pub fn containers(&self) -> Containers<'_> {
        Containers {
            init: self.spec.init_containers.as_deref().unwrap_or_default(),
            app: &self.spec.containers,
            ephemeral: self
                .spec
                .ephemeral_containers
                .as_deref()
                .unwrap_or_default(),
            next: 0,
        }
    }

    /// `field` of a container: `spec.template.spec.containers[0].securityContext`, or the
    /// container's own path for an empty `field`. Built in one buffer of the right size (each
    /// finding has one; `format!` took two buffers and ~600 instructions).
    pub fn container_field(&self, kind: ContainerKind, index: usize, field: &str) -> String {
        let spec = self.kind.spec_path();
        let list = kind.field();
        let mut path = String::with_capacity(spec.len() + list.len() + field.len() + 24);
        path.push_str(spec);
        path.push('.');
        path.push_str(list);
        path.push('[');
        crate::json_text::push_decimal(&mut path, index as u64);
        path.push(']');
        if !field.is_empty() {
            path.push('.');
            path.push_str(field);
        }
        path
    }
}

/// Which list of the pod spec a container is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerKind {
    Init,
    App,
    Ephemeral,
}

impl ContainerKind {
    /// The PodSpec field that holds this list.
    pub fn field(self) -> &'static str {
        match self {
            Self::Init => "initContainers",
            Self::App => "containers",
            Self::Ephemeral => "ephemeralContainers",
        }
    }
}

/// A container of any of the three lists. Ephemeral containers have a type of their own
/// (as in the API); `container` is `None` for them and the common fields are copied out.
#[derive(Debug, Clone, Copy)]
pub struct ContainerRef<'a> {
    pub kind: ContainerKind,
    pub index: usize,
    pub name: &'a str,
    pub image: Option<&'a str>,
    pub security_context: Option<&'a pod::SecurityContext<'a>>,
    pub container: Option<&'a pod::Container<'a>>,
}

/// The iterator of [`Workload::containers`]: init, app, then ephemeral containers. One index
/// over the three lists; the policies walk them once each per review, and the chain of three
/// flattened, enumerated lists it replaces took several times the instructions per container.
#[derive(Debug, Clone)]
pub struct Containers<'a> {
    init: &'a [pod::Container<'a>],
    app: &'a [pod::Container<'a>],
    ephemeral: &'a [pod::EphemeralContainer<'a>],
    next: usize,
}

impl<'a> Iterator for Containers<'a> {
    type Item = ContainerRef<'a>;

    fn next(&mut self) -> Option<ContainerRef<'a>> {
        let at = self.next;
        self.next += 1;
        let of = |kind, index, c: &'a pod::Container<'a>| ContainerRef {
            kind,
            index,
            name: &c.name,
            image: c.image.as_deref(),
            security_context: c.security_context.as_ref(),
            container: Some(c),
        };
        if let Some(c) = self.init.get(at) {
            return Some(of(ContainerKind::Init, at, c));
        }
        let at = at - self.init.len();
        if let Some(c) = self.app.get(at) {
            return Some(of(ContainerKind::App, at, c));
        }
        let at = at - self.app.len();
        match self.ephemeral.get(at) {
            Some(c) => Some(ContainerRef {
                kind: ContainerKind::Ephemeral,
                index: at,
                name: &c.name,
                image: c.image.as_deref(),
                security_context: c.security_context.as_ref(),
                container: None,
            }),
            None => {
                // Stay past the end.
                self.next = at_end(self);
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = at_end(self).saturating_sub(self.next);
        (left, Some(left))
    }
}

fn at_end(c: &Containers<'_>) -> usize {
    c.init.len() + c.app.len() + c.ephemeral.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_come_init_then_app_then_ephemeral_with_their_indices() {
        let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{
            "initContainers":[{"name":"i0"},{"name":"i1","securityContext":{"privileged":true}}],
            "containers":[{"name":"a0","image":"app:1"},{"name":"a1"}],
            "ephemeralContainers":[{"name":"e0","image":"busybox"}]}}"#;
        let w = Workload::from_json(WorkloadKind::Pod, json).unwrap();
        let mut containers = w.containers();
        assert_eq!(containers.size_hint(), (5, Some(5)));
        let seen: Vec<_> = containers
            .by_ref()
            .map(|c| (c.kind, c.index, c.name, c.image, c.container.is_some()))
            .collect();
        assert_eq!(
            seen,
            [
                (ContainerKind::Init, 0, "i0", None, true),
                (ContainerKind::Init, 1, "i1", None, true),
                (ContainerKind::App, 0, "a0", Some("app:1"), true),
                (ContainerKind::App, 1, "a1", None, true),
                (ContainerKind::Ephemeral, 0, "e0", Some("busybox"), false),
            ]
        );
        assert!(w.containers().nth(1).unwrap().security_context.is_some());
        assert!(containers.next().is_none(), "stays at its end");
        assert_eq!(containers.size_hint(), (0, Some(0)));
        let bare = Workload::from_json(WorkloadKind::Pod, r#"{"spec":{}}"#).unwrap();
        assert_eq!(bare.containers().count(), 0);
    }

    #[test]
    fn cronjob_reaches_the_pod_spec_through_the_job_template() {
        let json = r#"{"apiVersion":"batch/v1","kind":"CronJob","metadata":{"name":"c"},
            "spec":{"schedule":"* * * * *","jobTemplate":{"spec":{"template":{"spec":{
            "containers":[{"name":"a","image":"x"}]}}}}}}"#;
        let w = Workload::from_json(WorkloadKind::CronJob, json).unwrap();
        assert_eq!(w.spec.containers[0].name, "a");
        assert_eq!(
            w.container_field(ContainerKind::App, 0, ""),
            "spec.jobTemplate.spec.template.spec.containers[0]"
        );
        for (index, want) in [(0, "0"), (7, "7"), (10, "10"), (1234, "1234")] {
            assert_eq!(
                w.container_field(ContainerKind::Init, index, "securityContext.runAsUser"),
                format!(
                    "spec.jobTemplate.spec.template.spec.initContainers[{want}].securityContext.runAsUser"
                )
            );
        }
    }

    #[test]
    fn api_version_and_kind_select_the_workload() {
        assert_eq!(
            WorkloadKind::from_api_version_kind("apps/v1", "Deployment"),
            Some(WorkloadKind::Deployment)
        );
        assert_eq!(
            WorkloadKind::from_api_version_kind("v1", "Pod"),
            Some(WorkloadKind::Pod)
        );
        assert_eq!(WorkloadKind::from_api_version_kind("v1", "Service"), None);
        assert_eq!(
            WorkloadKind::from_api_version_kind("apps/v1beta1", "Deployment"),
            None
        );
    }

    #[test]
    fn a_wrong_type_names_the_kind() {
        let err =
            Workload::from_json(WorkloadKind::Pod, r#"{"spec":{"containers":"x"}}"#).unwrap_err();
        assert!(err.to_string().starts_with("Pod object does not match"));
    }
}
