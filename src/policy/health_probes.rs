//! `health-probes`: app containers of long-running workloads have an httpGet liveness probe
//! on `/health/live` and readiness probe on `/health/ready` (paths configurable).

use super::Findings;
use crate::config::HealthProbes;
use crate::workload::pod::Probe;
use crate::workload::{ContainerKind, Workload};

pub(super) fn check(w: &Workload, params: &HealthProbes, out: &mut Findings<'_>) {
    if !w.is_long_running() {
        return;
    }
    for c in w.containers() {
        let (ContainerKind::App, Some(container)) = (c.kind, c.container) else {
            continue;
        };
        for (field, probe, path) in [
            (
                "livenessProbe",
                &container.liveness_probe,
                &params.liveness_path,
            ),
            (
                "readinessProbe",
                &container.readiness_probe,
                &params.readiness_path,
            ),
        ] {
            probe_finding(probe.as_ref(), field, path, |f, message, fix| {
                out.container(c.kind, c.index, c.name, f, message, fix)
            });
        }
    }
}

fn probe_finding(
    probe: Option<&Probe>,
    field: &str,
    path: &str,
    mut report: impl FnMut(&str, String, String),
) {
    let Some(probe) = probe else {
        return report(
            field,
            format!("no {field}"),
            format!("add {field}.httpGet with path {path} and port http"),
        );
    };
    let Some(get) = &probe.http_get else {
        return report(
            field,
            format!("{field} is not an httpGet probe"),
            format!("use {field}.httpGet with path {path}"),
        );
    };
    match get.path.as_deref() {
        Some(p) if p == path => {}
        other => report(
            &format!("{field}.httpGet.path"),
            format!("{field} path is {}", other.unwrap_or("not set")),
            format!("set it to {path}"),
        ),
    }
}
