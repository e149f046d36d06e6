//! The object of a review read into its [`Workload`] with [`crate::scan`], field by field in
//! place: the fast path of [`Workload::deserialize_as`]. It reads the same fields with the
//! same rules (a missing or `null` field is its default, unknown fields are skipped) and
//! gives up where serde would refuse: a duplicate field, a wrong JSON type.

use std::collections::BTreeMap;

use super::pod::{
    Capabilities, Container, ContainerPort, EphemeralContainer, HTTPGetAction,
    HostPathVolumeSource, PodOS, PodSecurityContext, PodSpec, Probe, Quantity, ResourceList,
    ResourceRequirements, SeccompProfile, SecurityContext, Volume,
};
use super::{Workload, WorkloadKind};
use crate::scan::{once, Parser, Scan};

/// The object of `kind`, or `None` for `null` (the object of a DELETE).
pub fn workload(p: &mut Parser<'_>, kind: WorkloadKind) -> Scan<Option<Workload>> {
    if p.null()? {
        return Ok(None);
    }
    let mut workload = Workload {
        kind,
        name: String::new(),
        namespace: None,
        replicas: None,
        pod_labels: BTreeMap::new(),
        pod_annotations: BTreeMap::new(),
        spec: PodSpec::default(),
    };
    let mut meta = Meta::default();
    let mut seen = 0;
    p.object(|p, key| {
        match key {
            "metadata" => {
                once(&mut seen, 0)?;
                // A bare Pod's labels and annotations are the pod's.
                if !p.null()? {
                    let pod = (kind == WorkloadKind::Pod).then_some(&mut workload);
                    metadata(p, &mut meta, pod)?;
                }
            }
            "spec" => {
                once(&mut seen, 1)?;
                if !p.null()? {
                    spec(p, kind, &mut workload)?;
                }
            }
            _ => p.skip()?,
        }
        Ok(())
    })?;
    workload.name = meta.name.or(meta.generate_name).unwrap_or_default();
    workload.namespace = meta.namespace;
    Ok(Some(workload))
}

#[derive(Default)]
struct Meta {
    name: Option<String>,
    generate_name: Option<String>,
    namespace: Option<String>,
}

fn opt_string(p: &mut Parser<'_>, slot: &mut Option<String>) -> Scan<()> {
    p.option(slot, |p, s| p.owned_string().map(|v| *s = v))
}

fn nullable_string(p: &mut Parser<'_>, slot: &mut String) -> Scan<()> {
    if p.null()? {
        slot.clear();
        Ok(())
    } else {
        p.owned_string().map(|v| *slot = v)
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

fn opt_strings(p: &mut Parser<'_>, slot: &mut Option<Vec<String>>) -> Scan<()> {
    p.option(slot, Parser::strings)
}

/// A `map[string]string` (labels, annotations): later duplicates win, as in serde's map.
fn string_map(p: &mut Parser<'_>, map: &mut BTreeMap<String, String>) -> Scan<()> {
    p.object(|p, key| {
        let value = p.owned_string()?;
        map.insert(key.to_owned(), value);
        Ok(())
    })
}

fn opt_string_map(p: &mut Parser<'_>, map: &mut BTreeMap<String, String>) -> Scan<()> {
    map.clear();
    if p.null()? {
        Ok(())
    } else {
        string_map(p, map)
    }
}

/// `metadata`: name, generateName and namespace; for a Pod also its labels and annotations.
fn metadata(p: &mut Parser<'_>, meta: &mut Meta, pod: Option<&mut Workload>) -> Scan<()> {
    let mut seen = 0;
    let mut pod = pod;
    p.object(|p, key| {
        match (key, pod.as_deref_mut()) {
            ("name", _) => {
                once(&mut seen, 0)?;
                opt_string(p, &mut meta.name)?;
            }
            ("generateName", _) => {
                once(&mut seen, 1)?;
                opt_string(p, &mut meta.generate_name)?;
            }
            ("namespace", _) => {
                once(&mut seen, 2)?;
                opt_string(p, &mut meta.namespace)?;
            }
            ("labels", Some(pod)) => {
                once(&mut seen, 3)?;
                opt_string_map(p, &mut pod.pod_labels)?;
            }
            ("annotations", Some(pod)) => {
                once(&mut seen, 4)?;
                opt_string_map(p, &mut pod.pod_annotations)?;
            }
            _ => p.skip()?,
        }
        Ok(())
    })
}

/// The `spec` of the object: down to the pod template for the controllers.
fn spec(p: &mut Parser<'_>, kind: WorkloadKind, workload: &mut Workload) -> Scan<()> {
    let mut seen = 0;
    match kind {
        WorkloadKind::Pod => pod_spec(p, &mut workload.spec),
        WorkloadKind::Deployment
        | WorkloadKind::StatefulSet
        | WorkloadKind::ReplicaSet
        | WorkloadKind::ReplicationController => p.object(|p, key| {
            match key {
                "replicas" => {
                    once(&mut seen, 0)?;
                    opt_i32(p, &mut workload.replicas)?;
                }
                "template" => {
                    once(&mut seen, 1)?;
                    template(p, workload)?;
                }
                _ => p.skip()?,
            }
            Ok(())
        }),
        WorkloadKind::DaemonSet | WorkloadKind::Job => p.object(|p, key| {
            match key {
                "template" => {
                    once(&mut seen, 0)?;
                    template(p, workload)?;
                }
                _ => p.skip()?,
            }
            Ok(())
        }),
        WorkloadKind::CronJob => p.object(|p, key| {
            match key {
                "jobTemplate" => {
                    once(&mut seen, 0)?;
                    if !p.null()? {
                        job_template(p, workload)?;
                    }
                }
                _ => p.skip()?,
            }
            Ok(())
        }),
    }
}

/// A CronJob's `jobTemplate`: its `spec.template`.
fn job_template(p: &mut Parser<'_>, workload: &mut Workload) -> Scan<()> {
    let mut seen = 0;
    p.object(|p, key| {
        match key {
            "spec" => {
                once(&mut seen, 0)?;
                if !p.null()? {
                    let mut inner = 0;
                    p.object(|p, key| {
                        match key {
                            "template" => {
                                once(&mut inner, 0)?;
                                template(p, workload)?;
                            }
                            _ => p.skip()?,
                        }
                        Ok(())
                    })?;
                }
            }
            _ => p.skip()?,
        }
        Ok(())
    })
}

/// A pod template (or `null`): labels, annotations and spec.
fn template(p: &mut Parser<'_>, workload: &mut Workload) -> Scan<()> {
    // A second `template` is refused by `once`; a `null` one leaves the defaults.
    if p.null()? {
        return Ok(());
    }
    let mut seen = 0;
    p.object(|p, key| {
        match key {
            "metadata" => {
                once(&mut seen, 0)?;
                if !p.null()? {
                    let mut inner = 0;
                    p.object(|p, key| {
                        match key {
                            "labels" => {
                                once(&mut inner, 0)?;
                                opt_string_map(p, &mut workload.pod_labels)?;
                            }
                            "annotations" => {
                                once(&mut inner, 1)?;
                                opt_string_map(p, &mut workload.pod_annotations)?;
                            }
                            _ => p.skip()?,
                        }
                        Ok(())
                    })?;
                }
            }
            "spec" => {
                once(&mut seen, 1)?;
                if !p.null()? {
                    pod_spec(p, &mut workload.spec)?;
                }
            }
            _ => p.skip()?,
        }
        Ok(())
    })
}

fn pod_spec(p: &mut Parser<'_>, spec: &mut PodSpec) -> Scan<()> {
    let mut seen = 0;
    p.object(|p, key| {
        match key {
            "containers" => {
                once(&mut seen, 0)?;
                spec.containers.clear();
                if !p.null()? {
                    p.vec(&mut spec.containers, container)?;
                }
            }
            "initContainers" => {
                once(&mut seen, 1)?;
                p.option(&mut spec.init_containers, |p, v| p.vec(v, container))?;
            }
            "ephemeralContainers" => {
                once(&mut seen, 2)?;
                p.option(&mut spec.ephemeral_containers, |p, v| {
                    p.vec(v, ephemeral_container)
                })?;
            }
            "securityContext" => {
                once(&mut seen, 3)?;
                p.option(&mut spec.security_context, pod_security_context)?;
            }
            "restartPolicy" => {
                once(&mut seen, 4)?;
                opt_string(p, &mut spec.restart_policy)?;
            }
            "hostNetwork" => {
                once(&mut seen, 5)?;
                opt_bool(p, &mut spec.host_network)?;
            }
            "hostPID" => {
                once(&mut seen, 6)?;
                opt_bool(p, &mut spec.host_pid)?;
            }
            "hostIPC" => {
                once(&mut seen, 7)?;
                opt_bool(p, &mut spec.host_ipc)?;
            }
            "volumes" => {
                once(&mut seen, 8)?;
                p.option(&mut spec.volumes, |p, v| p.vec(v, volume))?;
            }
            "os" => {
                once(&mut seen, 9)?;
                p.option(&mut spec.os, |p, os: &mut PodOS| {
                    let mut seen = 0;
                    p.object(|p, key| {
                        match key {
                            "name" => {
                                once(&mut seen, 0)?;
                                nullable_string(p, &mut os.name)?;
                            }
                            _ => p.skip()?,
                        }
                        Ok(())
                    })
                })?;
            }
            _ => p.skip()?,
        }
        Ok(())
    })
}

fn container(p: &mut Parser<'_>, c: &mut Container) -> Scan<()> {
    let mut seen = 0;
    p.object(|p, key| {
        match key {
            "name" => {
                once(&mut seen, 0)?;
                nullable_string(p, &mut c.name)?;
            }
            "image" => {
                once(&mut seen, 1)?;
                opt_string(p, &mut c.image)?;
            }
            "securityContext" => {
                once(&mut seen, 2)?;
                p.option(&mut c.security_context, security_context)?;
            }
            "resources" => {
                once(&mut seen, 3)?;
                p.option(&mut c.resources, resources)?;
            }
            "livenessProbe" => {
                once(&mut seen, 4)?;
                p.option(&mut c.liveness_probe, probe)?;
            }
            "readinessProbe" => {
                once(&mut seen, 5)?;
                p.option(&mut c.readiness_probe, probe)?;
            }
            "ports" => {
                once(&mut seen, 6)?;
                p.option(&mut c.ports, |p, v| p.vec(v, port))?;
            }
            _ => p.skip()?,
        }
        Ok(())
    })
}

fn ephemeral_container(p: &mut Parser<'_>, c: &mut EphemeralContainer) -> Scan<()> {
    let mut seen = 0;
    p.object(|p, key| {
        match key {
            "name" => {
                once(&mut seen, 0)?;
                nullable_string(p, &mut c.name)?;
            }
            "image" => {
                once(&mut seen, 1)?;
                opt_string(p, &mut c.image)?;
            }
            "securityContext" => {
                once(&mut seen, 2)?;
                p.option(&mut c.security_context, security_context)?;
            }
            _ => p.skip()?,
        }
        Ok(())
    })
}

fn seccomp_profile(p: &mut Parser<'_>, profile: &mut SeccompProfile) -> Scan<()> {
    let mut seen = 0;
    p.object(|p, key| {
        match key {
            "type" => {
                once(&mut seen, 0)?;
                nullable_string(p, &mut profile.type_)?;
            }
            _ => p.skip()?,
        }
        Ok(())
    })
}

fn security_context(p: &mut Parser<'_>, sc: &mut SecurityContext) -> Scan<()> {
    let mut seen = 0;
    p.object(|p, key| {
        match key {
            "runAsNonRoot" => {
                once(&mut seen, 0)?;
                opt_bool(p, &mut sc.run_as_non_root)?;
            }
            "runAsUser" => {
                once(&mut seen, 1)?;
                opt_i64(p, &mut sc.run_as_user)?;
            }
            "readOnlyRootFilesystem" => {
                once(&mut seen, 2)?;
                opt_bool(p, &mut sc.read_only_root_filesystem)?;
            }
            "allowPrivilegeEscalation" => {
                once(&mut seen, 3)?;
                opt_bool(p, &mut sc.allow_privilege_escalation)?;
            }
            "privileged" => {
                once(&mut seen, 4)?;
                opt_bool(p, &mut sc.privileged)?;
            }
            "capabilities" => {
                once(&mut seen, 5)?;
                p.option(&mut sc.capabilities, |p, caps: &mut Capabilities| {
                    let mut seen = 0;
                    p.object(|p, key| {
                        match key {
                            "add" => {
                                once(&mut seen, 0)?;
                                opt_strings(p, &mut caps.add)?;
                            }
                            "drop" => {
                                once(&mut seen, 1)?;
                                opt_strings(p, &mut caps.drop)?;
                            }
                            _ => p.skip()?,
                        }
                        Ok(())
                    })
                })?;
            }
            "seccompProfile" => {
                once(&mut seen, 6)?;
                p.option(&mut sc.seccomp_profile, seccomp_profile)?;
            }
            _ => p.skip()?,
        }
        Ok(())
    })
}

fn pod_security_context(p: &mut Parser<'_>, sc: &mut PodSecurityContext) -> Scan<()> {
    let mut seen = 0;
    p.object(|p, key| {
        match key {
            "runAsNonRoot" => {
                once(&mut seen, 0)?;
                opt_bool(p, &mut sc.run_as_non_root)?;
            }
            "runAsUser" => {
                once(&mut seen, 1)?;
                opt_i64(p, &mut sc.run_as_user)?;
            }
            "seccompProfile" => {
                once(&mut seen, 2)?;
                p.option(&mut sc.seccomp_profile, seccomp_profile)?;
            }
            _ => p.skip()?,
        }
        Ok(())
    })
}

fn resources(p: &mut Parser<'_>, r: &mut ResourceRequirements) -> Scan<()> {
    let mut seen = 0;
    p.object(|p, key| {
        match key {
            "limits" => {
                once(&mut seen, 0)?;
                p.option(&mut r.limits, resource_list)?;
            }
            "requests" => {
                once(&mut seen, 1)?;
                p.option(&mut r.requests, resource_list)?;
            }
            _ => p.skip()?,
        }
        Ok(())
    })
}

/// `cpu` and `memory` of a resource list. serde reads the list as a struct, which refuses a
/// repeated key: a repeat gives up here.
fn resource_list(p: &mut Parser<'_>, list: &mut ResourceList) -> Scan<()> {
    let mut seen = 0;
    p.object(|p, key| {
        match key {
            "cpu" => {
                once(&mut seen, 0)?;
                p.option(&mut list.cpu, |p, q: &mut Quantity| {
                    p.owned_string().map(|v| q.0 = v)
                })?;
            }
            "memory" => {
                once(&mut seen, 1)?;
                p.option(&mut list.memory, |p, q: &mut Quantity| {
                    p.owned_string().map(|v| q.0 = v)
                })?;
            }
            _ => p.skip()?,
        }
        Ok(())
    })
}

fn probe(p: &mut Parser<'_>, probe: &mut Probe) -> Scan<()> {
    let mut seen = 0;
    p.object(|p, key| {
        match key {
            "httpGet" => {
                once(&mut seen, 0)?;
                p.option(&mut probe.http_get, |p, get: &mut HTTPGetAction| {
                    let mut seen = 0;
                    p.object(|p, key| {
                        match key {
                            "path" => {
                                once(&mut seen, 0)?;
                                opt_string(p, &mut get.path)?;
                            }
                            _ => p.skip()?,
                        }
                        Ok(())
                    })
                })?;
            }
            _ => p.skip()?,
        }
        Ok(())
    })
}

fn port(p: &mut Parser<'_>, port: &mut ContainerPort) -> Scan<()> {
    let mut seen = 0;
    p.object(|p, key| {
        match key {
            "name" => {
                once(&mut seen, 0)?;
                opt_string(p, &mut port.name)?;
            }
            "containerPort" => {
                once(&mut seen, 1)?;
                port.container_port = if p.null()? { 0 } else { p.i32()? };
            }
            "hostPort" => {
                once(&mut seen, 2)?;
                opt_i32(p, &mut port.host_port)?;
            }
            _ => p.skip()?,
        }
        Ok(())
    })
}

fn volume(p: &mut Parser<'_>, volume: &mut Volume) -> Scan<()> {
    let mut seen = 0;
    p.object(|p, key| {
        match key {
            "name" => {
                once(&mut seen, 0)?;
                nullable_string(p, &mut volume.name)?;
            }
            "hostPath" => {
                once(&mut seen, 1)?;
                p.option(
                    &mut volume.host_path,
                    |p, host: &mut HostPathVolumeSource| {
                        let mut seen = 0;
                        p.object(|p, key| {
                            match key {
                                "path" => {
                                    once(&mut seen, 0)?;
                                    nullable_string(p, &mut host.path)?;
                                }
                                _ => p.skip()?,
                            }
                            Ok(())
                        })
                    },
                )?;
            }
            _ => p.skip()?,
        }
        Ok(())
    })
}
