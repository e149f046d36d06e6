//! `read-only-root-filesystem`: every container sets `readOnlyRootFilesystem: true`.

use super::Findings;
use crate::workload::Workload;

pub(super) fn check(w: &Workload, out: &mut Findings<'_>) {
    for c in w.containers() {
        let message = match c
            .security_context
            .and_then(|sc| sc.read_only_root_filesystem)
        {
            Some(true) => continue,
            Some(false) => "readOnlyRootFilesystem is false",
            None => "readOnlyRootFilesystem is not set",
        };
        out.container(
            c.kind,
            c.index,
            c.name,
            "securityContext.readOnlyRootFilesystem",
            message,
            "set it to true; mount an emptyDir where the process must write",
        );
    }
}
