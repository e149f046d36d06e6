//! `run-as-non-root`: every container runs with an effective `runAsNonRoot: true` (container
//! setting, else the pod's) and no `runAsUser: 0` at either level.

use super::Findings;
use crate::workload::Workload;

pub(super) fn check(w: &Workload, out: &mut Findings<'_>) {
    let pod = w.spec.security_context.as_ref();
    let pod_non_root = pod.and_then(|sc| sc.run_as_non_root);
    let pod_user = pod.and_then(|sc| sc.run_as_user);
    // `spec.template.spec.securityContext`, written into a message only when one is made.
    let pod_sc = PodSecurityContext(w.kind.spec_path());

    let mut pod_root_used = false;
    for c in w.containers() {
        let own_non_root = c.security_context.and_then(|sc| sc.run_as_non_root);
        match (own_non_root, pod_non_root) {
            (Some(true), _) | (None, Some(true)) => {}
            (Some(false), _) => out.container(
                c.kind,
                c.index,
                c.name,
                "securityContext.runAsNonRoot",
                "runAsNonRoot is false, so the container may run as root",
                "set it to true",
            ),
            (None, Some(false)) => out.container(
                c.kind,
                c.index,
                c.name,
                "securityContext.runAsNonRoot",
                format!("runAsNonRoot is not set here and is false in {pod_sc}"),
                format!("set {pod_sc}.runAsNonRoot to true, or set it to true here"),
            ),
            (None, None) => out.container(
                c.kind,
                c.index,
                c.name,
                "securityContext.runAsNonRoot",
                "runAsNonRoot is not set (neither here nor in the pod securityContext)",
                format!("set it to true, or set {pod_sc}.runAsNonRoot: true for every container"),
            ),
        }
        match c.security_context.and_then(|sc| sc.run_as_user) {
            Some(0) => out.container(
                c.kind,
                c.index,
                c.name,
                "securityContext.runAsUser",
                "runAsUser is 0 (root)",
                "set a non-zero user id, e.g. 1000",
            ),
            Some(_) => {}
            None => pod_root_used |= pod_user == Some(0),
        }
    }
    if pod_root_used {
        out.pod(
            "securityContext.runAsUser",
            "runAsUser is 0 (root) for the pod",
            "set a non-zero user id, e.g. 1000",
        );
    }
}

struct PodSecurityContext(&'static str);

impl std::fmt::Display for PodSecurityContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.securityContext", self.0)
    }
}
