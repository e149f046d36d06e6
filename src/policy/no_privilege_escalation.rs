//! `no-privilege-escalation`: Pod Security Standards *restricted* parity for privilege:
//! no privileged containers, `allowPrivilegeEscalation: false`, no host namespaces, hostPath
//! volumes or hostPorts, and a `RuntimeDefault` or `Localhost` seccomp profile.
//! (Capabilities are the `drop-all-capabilities` policy.)

use super::Findings;
use crate::workload::{ContainerKind, Workload};

fn allowed_seccomp(kind: &str) -> bool {
    matches!(kind, "RuntimeDefault" | "Localhost")
}

pub(super) fn check(w: &Workload, out: &mut Findings<'_>) {
    let spec = &w.spec;
    for (field, set) in [
        ("hostNetwork", spec.host_network),
        ("hostPID", spec.host_pid),
        ("hostIPC", spec.host_ipc),
    ] {
        if set == Some(true) {
            out.pod(
                field,
                format!("{field} is true: the pod shares the node's namespace"),
                "remove it (or set it to false)",
            );
        }
    }
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        if volume.host_path.is_some() {
            out.pod(
                &format!("volumes[{i}].hostPath"),
                format!("volume {:?} mounts a path of the node", volume.name),
                "use an emptyDir, configMap, secret or persistentVolumeClaim instead",
            );
        }
    }

    let pod_seccomp = spec
        .security_context
        .as_ref()
        .and_then(|sc| sc.seccomp_profile.as_ref())
        .map(|p| &*p.type_);
    if let Some(kind) = pod_seccomp.filter(|k| !allowed_seccomp(k)) {
        out.pod(
            "securityContext.seccompProfile.type",
            format!("seccompProfile.type is {kind}"),
            "set it to RuntimeDefault",
        );
    }
    let mut unset_seccomp = false;

    for c in w.containers() {
        let sc = c.security_context;
        if sc.and_then(|sc| sc.privileged) == Some(true) {
            out.container(
                c.kind,
                c.index,
                c.name,
                "securityContext.privileged",
                "the container is privileged",
                "remove it (or set it to false)",
            );
        }
        match sc.and_then(|sc| sc.allow_privilege_escalation) {
            Some(false) => {}
            value => out.container(
                c.kind,
                c.index,
                c.name,
                "securityContext.allowPrivilegeEscalation",
                if value.is_some() {
                    "allowPrivilegeEscalation is true"
                } else {
                    "allowPrivilegeEscalation is not set (it defaults to true)"
                },
                "set it to false",
            ),
        }
        match sc
            .and_then(|sc| sc.seccomp_profile.as_ref())
            .map(|p| &*p.type_)
        {
            Some(kind) if !allowed_seccomp(kind) => out.container(
                c.kind,
                c.index,
                c.name,
                "securityContext.seccompProfile.type",
                format!("seccompProfile.type is {kind}"),
                "set it to RuntimeDefault, or remove it to use the pod's",
            ),
            Some(_) => {}
            None => unset_seccomp |= pod_seccomp.is_none(),
        }
        if let (ContainerKind::App | ContainerKind::Init, Some(container)) = (c.kind, c.container) {
            for (i, port) in container.ports.iter().flatten().enumerate() {
                if port.host_port.is_some_and(|p| p != 0) {
                    out.container(
                        c.kind,
                        c.index,
                        c.name,
                        &format!("ports[{i}].hostPort"),
                        format!(
                            "hostPort {} binds a port of the node",
                            port.host_port.unwrap_or(0)
                        ),
                        "remove hostPort; expose the port with a Service",
                    );
                }
            }
        }
    }
    if unset_seccomp {
        out.pod(
            "securityContext.seccompProfile.type",
            "seccompProfile is set neither for the pod nor for every container",
            "set it to RuntimeDefault",
        );
    }
}
