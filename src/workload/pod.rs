//! The pod spec as the policies, the defaults and the signature check read it.
//!
//! These are the fields of `core/v1` `PodSpec` and its parts that kube-baseline reads, with
//! k8s-openapi's names and types, and nothing else. k8s-openapi's own types build every field
//! of the object: each `env` entry, volume mount, toleration and probe timing becomes a
//! `String` or a nested struct, allocated and then dropped unread. Here the JSON parser skips
//! what is not listed without building it, which took the object's decode from the largest
//! part of a review to a small one (docs/benchmarks-history.md). The strings it keeps are
//! [`Text`]: in the webhook, slices of the review's body wherever the JSON string has no escape, so that
//! reading a container's name, image, quantities and probe paths allocates nothing and
//! dropping the workload frees nothing but its vectors. Types read by serde (`check`'s YAML,
//! the fallback decode) own their strings and are `'static`.
//!
//! Like k8s-openapi's types, a missing or `null` field is its default and an unknown field is
//! ignored; a field that is read and has the wrong JSON type is an error. A malformed field
//! that nothing reads (`env: "x"`) is not: the API server validates the object against its
//! schema before any webhook sees it.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

pub use super::few::Few;

/// A string of the object: a slice of the review's body when it has no escape (the
/// webhook's parser), owned otherwise (an escaped string; serde, YAML).
pub type Text<'a> = Cow<'a, str>;

/// A list of strings of the object (capability names), the first two held inline.
pub type Texts<'a> = Few<Text<'a>>;

/// A `map[string]string` of the object (the pod's labels, its annotations): its pairs in the
/// object's order, the first two inline. The policies look up one key in each, so the map is
/// never sorted or hashed; reading it allocates nothing for two pairs or fewer, where a
/// `BTreeMap` allocated a node for the first and freed it after the review. A key given twice
/// reads as its last value, as a map deserialized by serde does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextMap<'a>(Few<(Text<'a>, Text<'a>)>);

impl<'a> TextMap<'a> {
    pub fn insert(&mut self, key: Text<'a>, value: Text<'a>) {
        self.0.push((key, value));
    }

    /// The value of `key`: the last one given.
    pub fn get(&self, key: &str) -> Option<&Text<'a>> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

impl<'de, 'a> Deserialize<'de> for TextMap<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(Pairs::keeping(every_label))
    }
}

/// A map of strings read into a [`TextMap`], keeping the pairs whose key `keep` accepts; the
/// others' values are checked to be strings and dropped.
struct Pairs<'a> {
    keep: fn(&str) -> bool,
    map: PhantomData<TextMap<'a>>,
}

impl Pairs<'_> {
    fn keeping(keep: fn(&str) -> bool) -> Self {
        Pairs {
            keep,
            map: PhantomData,
        }
    }
}

impl<'de, 'a> Visitor<'de> for Pairs<'a> {
    type Value = TextMap<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = TextMap::default();
        while let Some(key) = map.next_key::<Text<'a>>()? {
            if (self.keep)(&key) {
                out.insert(key, map.next_value()?);
            } else {
                map.next_value::<AnyString>()?;
            }
        }
        Ok(out)
    }
}

/// The annotation `metrics-endpoint` reads: the path Prometheus scrapes.
pub const PROMETHEUS_PATH: &str = "prometheus.io/path";

/// The only annotations a workload keeps: the ones a policy reads. Every other annotation's
/// value is checked to be a string and skipped. A Pod created with `kubectl apply` carries
/// its whole manifest, escaped, in `kubectl.kubernetes.io/last-applied-configuration`:
/// unescaped into a `String` it cost ~15,000 instructions, more than the policies and the
/// answer together (docs/benchmarks-history.md).
pub const READ_ANNOTATIONS: [&str; 1] = [PROMETHEUS_PATH];

pub fn is_read_annotation(key: &str) -> bool {
    READ_ANNOTATIONS.contains(&key)
}

/// Every label is kept (and every pair of a map read whole): `metrics-endpoint` reads the
/// label the configuration names.
pub fn every_label(_: &str) -> bool {
    true
}

/// `annotations` (or `null`), keeping only [`READ_ANNOTATIONS`]: serde's side of the fast
/// decoder's reading of them.
pub(crate) fn read_annotations<'de, 'a, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<TextMap<'a>>, D::Error> {
    struct Read<'a>(TextMap<'a>);

    impl<'de, 'a> Deserialize<'de> for Read<'a> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer
                .deserialize_map(Pairs::keeping(is_read_annotation))
                .map(Read)
        }
    }

    Option::<Read<'a>>::deserialize(deserializer).map(|read| read.map(|Read(map)| map))
}

/// A string, checked and dropped.
struct AnyString;

impl<'de> Deserialize<'de> for AnyString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Any;

        impl Visitor<'_> for Any {
            type Value = AnyString;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<AnyString, E> {
                Ok(AnyString)
            }
        }

        deserializer.deserialize_str(Any)
    }
}

/// A missing or `null` value as its type's default (k8s-openapi reads required lists so).
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// `PodSpec`, reduced.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec<'a> {
    #[serde(default, deserialize_with = "nullable")]
    pub containers: Vec<Container<'a>>,
    pub init_containers: Option<Vec<Container<'a>>>,
    pub ephemeral_containers: Option<Vec<EphemeralContainer<'a>>>,
    pub security_context: Option<PodSecurityContext<'a>>,
    pub restart_policy: Option<Text<'a>>,
    pub host_network: Option<bool>,
    #[serde(rename = "hostPID")]
    pub host_pid: Option<bool>,
    #[serde(rename = "hostIPC")]
    pub host_ipc: Option<bool>,
    pub volumes: Option<Vec<Volume<'a>>>,
    pub os: Option<PodOS<'a>>,
}

/// `Container` (app and init containers), reduced.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container<'a> {
    #[serde(default, deserialize_with = "nullable")]
    pub name: Text<'a>,
    pub image: Option<Text<'a>>,
    pub security_context: Option<SecurityContext<'a>>,
    pub resources: Option<ResourceRequirements<'a>>,
    pub liveness_probe: Option<Probe<'a>>,
    pub readiness_probe: Option<Probe<'a>>,
    pub ports: Option<Vec<ContainerPort<'a>>>,
}

/// `EphemeralContainer`, reduced (no resources, probes or ports: the API server refuses them).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EphemeralContainer<'a> {
    #[serde(default, deserialize_with = "nullable")]
    pub name: Text<'a>,
    pub image: Option<Text<'a>>,
    pub security_context: Option<SecurityContext<'a>>,
}

/// A container's `securityContext`, reduced.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext<'a> {
    pub run_as_non_root: Option<bool>,
    pub run_as_user: Option<i64>,
    pub read_only_root_filesystem: Option<bool>,
    pub allow_privilege_escalation: Option<bool>,
    pub privileged: Option<bool>,
    pub capabilities: Option<Capabilities<'a>>,
    pub seccomp_profile: Option<SeccompProfile<'a>>,
}

/// The pod's `securityContext`, reduced.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityContext<'a> {
    pub run_as_non_root: Option<bool>,
    pub run_as_user: Option<i64>,
    pub seccomp_profile: Option<SeccompProfile<'a>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Capabilities<'a> {
    pub add: Option<Texts<'a>>,
    pub drop: Option<Texts<'a>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct SeccompProfile<'a> {
    #[serde(rename = "type", default, deserialize_with = "nullable")]
    pub type_: Text<'a>,
}

/// A quantity as written (`500m`, `256Mi`); `crate::quantity` reads its value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Quantity<'a>(pub Text<'a>);

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ResourceRequirements<'a> {
    pub limits: Option<ResourceList<'a>>,
    pub requests: Option<ResourceList<'a>>,
}

/// `requests` or `limits`, reduced to the two resources the baseline reads: `cpu` and
/// `memory` (others, such as `ephemeral-storage` or `nvidia.com/gpu`, are skipped). Two
/// fields instead of a map: no map node and no key strings per container.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ResourceList<'a> {
    pub cpu: Option<Quantity<'a>>,
    pub memory: Option<Quantity<'a>>,
}

impl<'a> ResourceList<'a> {
    /// The quantity of `cpu` or `memory`; `None` for any other name.
    pub fn get(&self, name: &str) -> Option<&Quantity<'a>> {
        match name {
            "cpu" => self.cpu.as_ref(),
            "memory" => self.memory.as_ref(),
            _ => None,
        }
    }
}

/// A probe, reduced to its `httpGet` path.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe<'a> {
    pub http_get: Option<HTTPGetAction<'a>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct HTTPGetAction<'a> {
    pub path: Option<Text<'a>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort<'a> {
    pub name: Option<Text<'a>>,
    #[serde(default, deserialize_with = "nullable")]
    pub container_port: i32,
    pub host_port: Option<i32>,
}

/// A volume, reduced to its name and whether it mounts a path of the node.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume<'a> {
    #[serde(default, deserialize_with = "nullable")]
    pub name: Text<'a>,
    pub host_path: Option<HostPathVolumeSource<'a>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct HostPathVolumeSource<'a> {
    #[serde(default, deserialize_with = "nullable")]
    pub path: Text<'a>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PodOS<'a> {
    #[serde(default, deserialize_with = "nullable")]
    pub name: Text<'a>,
}

/// `PodTemplateSpec`: the pod's labels and annotations, and its spec.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PodTemplateSpec<'a> {
    pub metadata: Option<PodTemplateMeta<'a>>,
    pub spec: Option<PodSpec<'a>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PodTemplateMeta<'a> {
    pub labels: Option<TextMap<'a>>,
    #[serde(default, deserialize_with = "read_annotations")]
    pub annotations: Option<TextMap<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_annotations_a_policy_reads_are_kept_and_every_value_must_be_a_string() {
        let read =
            |json: &str| serde_json::from_str::<PodTemplateMeta>(json).map(|m| m.annotations);
        let kept = read(
            r#"{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"a\":1}",
                "prometheus.io/path":"/m","prometheus.io/path":"/metrics","team":"x"}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(kept.get(PROMETHEUS_PATH).map(|v| &**v), Some("/metrics"));
        assert_eq!(kept.get("team"), None);
        assert!(!kept.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        assert_eq!(read(r#"{"annotations":null}"#).unwrap(), None);
        assert_eq!(read("{}").unwrap(), None);
        let wrong = read(r#"{"annotations":{"team":1}}"#).unwrap_err();
        assert!(wrong.to_string().contains("expected a string"), "{wrong}");
        let wrong = read(r#"{"annotations":["a"]}"#).unwrap_err();
        assert!(wrong.to_string().contains("a map of strings"), "{wrong}");
    }

    /// Every field read here, from a pod spec as the API server returns it, compared with
    /// what k8s-openapi's full types read from the same JSON: the reduced types must not
    /// lose or misname a field the policies depend on.
    #[test]
    fn reads_the_same_values_as_k8s_openapi() {
        let json = r#"{
          "hostNetwork": true, "hostPID": false, "hostIPC": true, "restartPolicy": "Always",
          "os": {"name": "linux"},
          "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "fsGroup": 2000,
                              "seccompProfile": {"type": "RuntimeDefault"}},
          "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "h", "hostPath": {"path": "/var"}}],
          "initContainers": [{"name": "init", "image": "busybox", "env": [{"name": "A", "value": "b"}]}],
          "containers": [{
            "name": "app", "image": "r/app:1",
            "ports": [{"name": "http", "containerPort": 8080, "hostPort": 80, "protocol": "TCP"}],
            "resources": {"limits": {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"}, "requests": {"cpu": "100m"}},
            "livenessProbe": {"httpGet": {"path": "/health/live", "port": "http"}, "periodSeconds": 10},
            "readinessProbe": {"exec": {"command": ["true"]}},
            "securityContext": {"runAsNonRoot": false, "runAsUser": 0, "readOnlyRootFilesystem": true,
              "allowPrivilegeEscalation": false, "privileged": true,
              "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
              "seccompProfile": {"type": "Unconfined"}}
          }],
          "ephemeralContainers": [{"name": "debug", "image": "busybox",
            "securityContext": {"privileged": true}}]
        }"#;
        let ours: PodSpec = serde_json::from_str(json).unwrap();
        let full: k8s_openapi::api::core::v1::PodSpec = serde_json::from_str(json).unwrap();

        assert_eq!(ours.host_network, full.host_network);
        assert_eq!(ours.host_pid, full.host_pid);
        assert_eq!(ours.host_ipc, full.host_ipc);
        assert_eq!(
            ours.restart_policy.as_deref(),
            full.restart_policy.as_deref()
        );
        assert_eq!(ours.os.unwrap().name, full.os.unwrap().name);
        let (psc, fpsc) = (
            ours.security_context.unwrap(),
            full.security_context.unwrap(),
        );
        assert_eq!(psc.run_as_non_root, fpsc.run_as_non_root);
        assert_eq!(psc.run_as_user, fpsc.run_as_user);
        assert_eq!(
            psc.seccomp_profile.unwrap().type_,
            fpsc.seccomp_profile.unwrap().type_
        );
        let volumes = ours.volumes.unwrap();
        let full_volumes = full.volumes.unwrap();
        for (v, f) in volumes.iter().zip(&full_volumes) {
            assert_eq!(v.name, f.name);
            assert_eq!(v.host_path.is_some(), f.host_path.is_some());
        }
        assert_eq!(ours.init_containers.unwrap()[0].name, "init");

        let (c, f) = (&ours.containers[0], &full.containers[0]);
        assert_eq!(c.name, f.name);
        assert_eq!(c.image.as_deref(), f.image.as_deref());
        let (p, fp) = (&c.ports.as_ref().unwrap()[0], &f.ports.as_ref().unwrap()[0]);
        assert_eq!(p.name.as_deref(), fp.name.as_deref());
        assert_eq!(p.container_port, fp.container_port);
        assert_eq!(p.host_port, fp.host_port);
        let (r, fr) = (c.resources.as_ref().unwrap(), f.resources.as_ref().unwrap());
        let quantities = |m: Option<&ResourceList>| {
            m.map(|m| {
                ["cpu", "memory"]
                    .into_iter()
                    .filter_map(|k| m.get(k).map(|q| (k.to_owned(), q.0.to_string())))
                    .collect::<Vec<_>>()
            })
        };
        // k8s-openapi keeps every resource; the baseline reads cpu and memory.
        let full_quantities = |m: Option<
            &std::collections::BTreeMap<
                String,
                k8s_openapi::apimachinery::pkg::api::resource::Quantity,
            >,
        >| {
            m.map(|m| {
                m.iter()
                    .filter(|(k, _)| *k == "cpu" || *k == "memory")
                    .map(|(k, q)| (k.clone(), q.0.clone()))
                    .collect::<Vec<_>>()
            })
        };
        assert!(r
            .limits
            .as_ref()
            .unwrap()
            .get("ephemeral-storage")
            .is_none());
        assert_eq!(
            quantities(r.limits.as_ref()),
            full_quantities(fr.limits.as_ref())
        );
        assert_eq!(
            quantities(r.requests.as_ref()),
            full_quantities(fr.requests.as_ref())
        );
        let path = |p: &Option<Probe>| {
            p.as_ref().map(|p| {
                p.http_get
                    .as_ref()
                    .map(|g| g.path.as_ref().map(|p| p.to_string()))
            })
        };
        let full_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.as_ref()
                .map(|p| p.http_get.as_ref().map(|g| g.path.clone()))
        };
        assert_eq!(path(&c.liveness_probe), full_path(&f.liveness_probe));
        assert_eq!(path(&c.readiness_probe), full_path(&f.readiness_probe));
        let (s, fs) = (
            c.security_context.as_ref().unwrap(),
            f.security_context.as_ref().unwrap(),
        );
        assert_eq!(s.run_as_non_root, fs.run_as_non_root);
        assert_eq!(s.run_as_user, fs.run_as_user);
        assert_eq!(s.read_only_root_filesystem, fs.read_only_root_filesystem);
        assert_eq!(s.allow_privilege_escalation, fs.allow_privilege_escalation);
        assert_eq!(s.privileged, fs.privileged);
        let (caps, fcaps) = (
            s.capabilities.as_ref().unwrap(),
            fs.capabilities.as_ref().unwrap(),
        );
        let strings = |v: &Option<Texts>| {
            v.as_ref()
                .map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(strings(&caps.add), fcaps.add);
        assert_eq!(strings(&caps.drop), fcaps.drop);
        assert_eq!(
            s.seccomp_profile.as_ref().unwrap().type_,
            fs.seccomp_profile.as_ref().unwrap().type_
        );
        let (e, fe) = (
            &ours.ephemeral_containers.unwrap()[0],
            &full.ephemeral_containers.unwrap()[0],
        );
        assert_eq!(e.name, fe.name);
        assert_eq!(e.image.as_deref(), fe.image.as_deref());
        assert_eq!(
            e.security_context.as_ref().unwrap().privileged,
            fe.security_context.as_ref().unwrap().privileged
        );
    }

    #[test]
    fn a_read_field_of_the_wrong_type_is_an_error_and_an_unread_one_is_skipped() {
        let wrong =
            r#"{"containers": [{"name": "a", "securityContext": {"runAsNonRoot": "yes"}}]}"#;
        let err = serde_json::from_str::<PodSpec>(wrong).unwrap_err();
        assert!(err.to_string().contains("expected a boolean"), "{err}");
        let unread = r#"{"containers": [{"name": "a", "env": "not a list"}], "tolerations": 7}"#;
        let spec: PodSpec = serde_json::from_str(unread).unwrap();
        assert_eq!(spec.containers[0].name, "a");
    }

    #[test]
    fn a_text_map_reads_the_last_value_of_a_repeated_key() {
        let template: PodTemplateSpec = serde_json::from_str(
            r#"{"metadata": {"labels": {"app": "a", "tier": "web", "app": "b"}}}"#,
        )
        .unwrap();
        let labels = template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels.get("app").map(|v| &**v), Some("b"));
        assert_eq!(labels.get("tier").map(|v| &**v), Some("web"));
        assert!(labels.contains_key("tier"));
        assert_eq!(labels.get("missing"), None);
        assert!(!labels.contains_key("missing"));
        let wrong = serde_json::from_str::<PodTemplateSpec>(r#"{"metadata": {"labels": ["app"]}}"#);
        assert!(wrong.unwrap_err().to_string().contains("a map of strings"));
    }

    #[test]
    fn null_lists_and_names_read_as_empty() {
        let spec: PodSpec =
            serde_json::from_str(r#"{"containers": null, "volumes": [{"name": null}]}"#).unwrap();
        assert!(spec.containers.is_empty());
        assert_eq!(spec.volumes.unwrap()[0].name, "");
    }
}
