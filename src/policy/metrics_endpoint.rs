//! `metrics-endpoint`: long-running workloads carry the ServiceMonitor's selector label and
//! a container port named `http` or `metrics`; a `prometheus.io/path` annotation, if present,
//! is `/metrics`.

use super::Findings;
use crate::config::MetricsEndpoint;
use crate::workload::pod::PROMETHEUS_PATH;
use crate::workload::Workload;

pub(super) fn check(w: &Workload, params: &MetricsEndpoint, out: &mut Findings<'_>) {
    if !w.is_long_running() {
        return;
    }
    let meta = w.kind.pod_metadata_path();
    if !w.pod_labels.contains_key(params.app_label.as_str()) {
        out.object(
            format!("{meta}.labels.{}", params.app_label),
            format!(
                "the pod has no {:?} label for the ServiceMonitor to select",
                params.app_label
            ),
            format!("add label {}: <service name>", params.app_label),
        );
    }
    let declared = w.spec.containers.iter().any(|c| {
        c.ports.iter().flatten().any(|p| {
            p.name
                .as_ref()
                .is_some_and(|n| params.port_names.iter().any(|allowed| allowed == n))
        })
    });
    if !declared {
        let names = params.port_names.join(" or ");
        out.object(
            format!("{}.containers[0].ports", w.kind.spec_path()),
            format!("no container declares a port named {names} for /metrics"),
            format!("name the metrics port {names}, e.g. {{name: http, containerPort: 8080}}"),
        );
    }
    if let Some(path) = w.pod_annotations.get(PROMETHEUS_PATH) {
        if *path != params.path {
            out.object(
                format!("{meta}.annotations[{PROMETHEUS_PATH:?}]"),
                format!("{PROMETHEUS_PATH} is {path}"),
                format!(
                    "serve metrics on {} and set it to {}",
                    params.path, params.path
                ),
            );
        }
    }
}
