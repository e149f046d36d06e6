//! The object of a review read into its [`Workload`] with [`crate::scan`], field by field in
//! place: the fast path of [`Workload::deserialize_as`]. It reads the same fields with the
//! same rules (a missing or `null` field is its default, unknown fields are skipped) and
//! gives up where serde would refuse: a duplicate field, a wrong JSON type.

use super::pod::{
    every_label, is_read_annotation, Capabilities, Container, ContainerPort, EphemeralContainer,
    HTTPGetAction, HostPathVolumeSource, PodOS, PodSecurityContext, PodSpec, Probe, Quantity,
    ResourceList, ResourceRequirements, SeccompProfile, SecurityContext, Text, TextMap, Texts,
    Volume,
};
use super::{Workload, WorkloadKind};
use crate::scan::{fields, Parser, Scan};

/// The object of `kind`, or `None` for `null` (the object of a DELETE). Read into the box
/// it is kept in, rather than moved there afterwards.
pub fn workload<'a>(p: &mut Parser<'a>, kind: WorkloadKind) -> Scan<Option<Box<Workload<'a>>>> {
    if p.null()? {
        return Ok(None);
    }
    let mut workload = Box::new(Workload {
        kind,
        name: Text::Borrowed(""),
        namespace: None,
        replicas: None,
        pod_labels: TextMap::default(),
        pod_annotations: TextMap::default(),
        spec: PodSpec::default(),
    });
    let mut meta = Meta::default();
    fields!(p, |p| {
        // A bare Pod's labels and annotations are the pod's.
        "metadata" => unless_null(p, |p| {
            let pod = (kind == WorkloadKind::Pod).then_some(&mut *workload);
            metadata(p, &mut meta, pod)
        }),
        "spec" => unless_null(p, |p| spec(p, kind, &mut workload)),
    })?;
    workload.name = meta.name.or(meta.generate_name).unwrap_or_default();
    workload.namespace = meta.namespace;
    Ok(Some(workload))
}

#[derive(Default)]
struct Meta<'a> {
    name: Option<Text<'a>>,
    generate_name: Option<Text<'a>>,
    namespace: Option<Text<'a>>,
}

/// `null` as nothing read, anything else as `read` reads it.
fn unless_null<'a>(p: &mut Parser<'a>, read: impl FnOnce(&mut Parser<'a>) -> Scan<()>) -> Scan<()> {
    if p.null()? {
        Ok(())
    } else {
        read(p)
    }
}

fn opt_string<'a>(p: &mut Parser<'a>, slot: &mut Option<Text<'a>>) -> Scan<()> {
    p.option(slot, |p, s| p.string().map(|v| *s = v))
}

/// A string field whose `null` is the empty string.
fn nullable_string<'a>(p: &mut Parser<'a>, slot: &mut Text<'a>) -> Scan<()> {
    if p.null()? {
        *slot = Text::Borrowed("");
        Ok(())
    } else {
        p.string().map(|v| *slot = v)
    }
}

fn opt_bool(p: &mut Parser<'_>, slot: &mut Option<bool>) -> Scan<()> {
    p.option(slot, |p, b| p.bool().map(|v| *b = v))
}

fn opt_i64(p: &mut Parser<'_>, slot: &mut Option<i64>) -> Scan<()> {
    p.option(slot, |p, n| p.i64().map(|v| *n = v))
}

fn opt_i32(p: &mut Parser<'_>, slot: &mut Option<i32>) -> Scan<()> {
    p.option(slot, |p, n| p.i32().map(|v| *n = v))
}

fn opt_strings<'a>(p: &mut Parser<'a>, slot: &mut Option<Texts<'a>>) -> Scan<()> {
    p.option(slot, Parser::strings)
}

fn opt_quantity<'a>(p: &mut Parser<'a>, slot: &mut Option<Quantity<'a>>) -> Scan<()> {
    p.option(slot, |p, q| p.string().map(|v| q.0 = v))
}

/// A `map[string]string` (labels, annotations), `null` as empty: later duplicates win, as
/// in serde's map. Only the pairs whose key `keep` accepts are kept; the others' values are
/// checked to be strings and skipped, not unescaped (annotations: only those a policy reads,
/// [`is_read_annotation`](super::pod::is_read_annotation)).
fn string_map<'a>(p: &mut Parser<'a>, map: &mut TextMap<'a>, keep: fn(&str) -> bool) -> Scan<()> {
    map.clear();
    unless_null(p, |p| {
        p.object(|p, key| {
            if !keep(key) {
                return p.skip_str();
            }
            let value = p.string()?;
            map.insert(Text::Borrowed(key), value);
            Ok(())
        })
    })
}

/// `metadata`: name, generateName and namespace; for a Pod also its labels and annotations.
fn metadata<'a>(
    p: &mut Parser<'a>,
    meta: &mut Meta<'a>,
    pod: Option<&mut Workload<'a>>,
) -> Scan<()> {
    match pod {
        Some(pod) => fields!(p, |p| {
            "name" => opt_string(p, &mut meta.name),
            "generateName" => opt_string(p, &mut meta.generate_name),
            "namespace" => opt_string(p, &mut meta.namespace),
            "labels" => string_map(p, &mut pod.pod_labels, every_label),
            "annotations" => string_map(p, &mut pod.pod_annotations, is_read_annotation),
        }),
        None => fields!(p, |p| {
            "name" => opt_string(p, &mut meta.name),
            "generateName" => opt_string(p, &mut meta.generate_name),
            "namespace" => opt_string(p, &mut meta.namespace),
        }),
    }
}

/// The `spec` of the object: down to the pod template for the controllers.
fn spec<'a>(p: &mut Parser<'a>, kind: WorkloadKind, workload: &mut Workload<'a>) -> Scan<()> {
    match kind {
        WorkloadKind::Pod => pod_spec(p, &mut workload.spec),
        WorkloadKind::Deployment
        | WorkloadKind::StatefulSet
        | WorkloadKind::ReplicaSet
        | WorkloadKind::ReplicationController => fields!(p, |p| {
            "replicas" => opt_i32(p, &mut workload.replicas),
            "template" => template(p, workload),
        }),
        WorkloadKind::DaemonSet | WorkloadKind::Job => fields!(p, |p| {
            "template" => template(p, workload),
        }),
        // `jobTemplate.spec.template`.
        WorkloadKind::CronJob => fields!(p, |p| {
            "jobTemplate" => unless_null(p, |p| {
                fields!(p, |p| {
                    "spec" => unless_null(p, |p| {
                        fields!(p, |p| {
                            "template" => template(p, workload),
                        })
                    }),
                })
            }),
        }),
    }
}

/// A pod template (or `null`): labels, annotations and spec.
fn template<'a>(p: &mut Parser<'a>, workload: &mut Workload<'a>) -> Scan<()> {
    unless_null(p, |p| {
        fields!(p, |p| {
            "metadata" => unless_null(p, |p| {
                fields!(p, |p| {
                    "labels" => string_map(p, &mut workload.pod_labels, every_label),
                    "annotations" => {
                        string_map(p, &mut workload.pod_annotations, is_read_annotation)
                    }
                })
            }),
            "spec" => unless_null(p, |p| pod_spec(p, &mut workload.spec)),
        })
    })
}

fn pod_spec<'a>(p: &mut Parser<'a>, spec: &mut PodSpec<'a>) -> Scan<()> {
    fields!(p, |p| {
        "containers" => {
            spec.containers.clear();
            unless_null(p, |p| p.vec(&mut spec.containers, container))
        },
        "initContainers" => p.option(&mut spec.init_containers, |p, v| p.vec(v, container)),
        "ephemeralContainers" => {
            p.option(&mut spec.ephemeral_containers, |p, v| p.vec(v, ephemeral_container))
        },
        "securityContext" => p.option(&mut spec.security_context, pod_security_context),
        "restartPolicy" => opt_string(p, &mut spec.restart_policy),
        "hostNetwork" => opt_bool(p, &mut spec.host_network),
        "hostPID" => opt_bool(p, &mut spec.host_pid),
        "hostIPC" => opt_bool(p, &mut spec.host_ipc),
        "volumes" => p.option(&mut spec.volumes, |p, v| p.vec(v, volume)),
        "os" => p.option(&mut spec.os, |p, os: &mut PodOS<'a>| {
            fields!(p, |p| { "name" => nullable_string(p, &mut os.name) })
        }),
    })
}

fn container<'a>(p: &mut Parser<'a>, c: &mut Container<'a>) -> Scan<()> {
    fields!(p, |p| {
        "name" => nullable_string(p, &mut c.name),
        "image" => opt_string(p, &mut c.image),
        "securityContext" => p.option(&mut c.security_context, security_context),
        "resources" => p.option(&mut c.resources, resources),
        "livenessProbe" => p.option(&mut c.liveness_probe, probe),
        "readinessProbe" => p.option(&mut c.readiness_probe, probe),
        "ports" => p.option(&mut c.ports, |p, v| p.vec(v, port)),
    })
}

fn ephemeral_container<'a>(p: &mut Parser<'a>, c: &mut EphemeralContainer<'a>) -> Scan<()> {
    fields!(p, |p| {
        "name" => nullable_string(p, &mut c.name),
        "image" => opt_string(p, &mut c.image),
        "securityContext" => p.option(&mut c.security_context, security_context),
    })
}

fn seccomp_profile<'a>(p: &mut Parser<'a>, profile: &mut SeccompProfile<'a>) -> Scan<()> {
    fields!(p, |p| { "type" => nullable_string(p, &mut profile.type_) })
}

fn security_context<'a>(p: &mut Parser<'a>, sc: &mut SecurityContext<'a>) -> Scan<()> {
    fields!(p, |p| {
        "runAsNonRoot" => opt_bool(p, &mut sc.run_as_non_root),
        "runAsUser" => opt_i64(p, &mut sc.run_as_user),
        "readOnlyRootFilesystem" => opt_bool(p, &mut sc.read_only_root_filesystem),
        "allowPrivilegeEscalation" => opt_bool(p, &mut sc.allow_privilege_escalation),
        "privileged" => opt_bool(p, &mut sc.privileged),
        "capabilities" => p.option(&mut sc.capabilities, |p, caps: &mut Capabilities<'a>| {
            fields!(p, |p| {
                "add" => opt_strings(p, &mut caps.add),
                "drop" => opt_strings(p, &mut caps.drop),
            })
        }),
        "seccompProfile" => p.option(&mut sc.seccomp_profile, seccomp_profile),
    })
}

fn pod_security_context<'a>(p: &mut Parser<'a>, sc: &mut PodSecurityContext<'a>) -> Scan<()> {
    fields!(p, |p| {
        "runAsNonRoot" => opt_bool(p, &mut sc.run_as_non_root),
        "runAsUser" => opt_i64(p, &mut sc.run_as_user),
        "seccompProfile" => p.option(&mut sc.seccomp_profile, seccomp_profile),
    })
}

fn resources<'a>(p: &mut Parser<'a>, r: &mut ResourceRequirements<'a>) -> Scan<()> {
    fields!(p, |p| {
        "limits" => p.option(&mut r.limits, resource_list),
        "requests" => p.option(&mut r.requests, resource_list),
    })
}

/// `cpu` and `memory` of a resource list (serde reads it as a struct, which refuses a
/// repeated key).
fn resource_list<'a>(p: &mut Parser<'a>, list: &mut ResourceList<'a>) -> Scan<()> {
    fields!(p, |p| {
        "cpu" => opt_quantity(p, &mut list.cpu),
        "memory" => opt_quantity(p, &mut list.memory),
    })
}

fn probe<'a>(p: &mut Parser<'a>, probe: &mut Probe<'a>) -> Scan<()> {
    fields!(p, |p| {
        "httpGet" => p.option(&mut probe.http_get, |p, get: &mut HTTPGetAction<'a>| {
            fields!(p, |p| { "path" => opt_string(p, &mut get.path) })
        }),
    })
}

fn port<'a>(p: &mut Parser<'a>, port: &mut ContainerPort<'a>) -> Scan<()> {
    fields!(p, |p| {
        "name" => opt_string(p, &mut port.name),
        "containerPort" => {
            port.container_port = if p.null()? { 0 } else { p.i32()? };
            Ok(())
        },
        "hostPort" => opt_i32(p, &mut port.host_port),
    })
}

fn volume<'a>(p: &mut Parser<'a>, volume: &mut Volume<'a>) -> Scan<()> {
    fields!(p, |p| {
        "name" => nullable_string(p, &mut volume.name),
        "hostPath" => p.option(&mut volume.host_path, |p, host: &mut HostPathVolumeSource<'a>| {
            fields!(p, |p| { "path" => nullable_string(p, &mut host.path) })
        }),
    })
}
