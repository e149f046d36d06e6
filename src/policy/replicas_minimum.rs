//! `replicas-minimum`: Deployments and StatefulSets run at least two replicas (high
//! availability), unless `replicas` is unset because an HPA manages it.

use super::Findings;
use crate::config::ReplicasMinimum;
use crate::workload::Workload;

pub(super) fn check(w: &Workload, params: &ReplicasMinimum, out: &mut Findings<'_>) {
    if !w.kind.has_replicas() {
        return;
    }
    if let Some(replicas) = w.replicas.filter(|r| *r < params.minimum) {
        out.object(
            "spec.replicas".into(),
            format!(
                "replicas is {replicas}, below the minimum of {}",
                params.minimum
            ),
            format!(
                "set it to {} or more, or remove it and let an HPA manage it",
                params.minimum
            ),
        );
    }
}
