//! `drop-all-capabilities`: every container drops `ALL` and adds only allowed capabilities.

use super::Findings;
use crate::config::DropAllCapabilities;
use crate::workload::Workload;

pub(super) fn check(w: &Workload, params: &DropAllCapabilities, out: &mut Findings<'_>) {
    for c in w.containers() {
        let caps = c.security_context.and_then(|sc| sc.capabilities.as_ref());
        let drops_all = caps
            .and_then(|caps| caps.drop.as_ref())
            .is_some_and(|drop| drop.iter().any(|d| d == "ALL"));
        if !drops_all {
            out.container(
                c.kind,
                c.index,
                c.name,
                "securityContext.capabilities.drop",
                "capabilities.drop does not contain ALL",
                "set it to [ALL]",
            );
        }
        for (i, cap) in caps
            .and_then(|caps| caps.add.as_ref())
            .into_iter()
            .flatten()
            .enumerate()
        {
            let name = cap.strip_prefix("CAP_").unwrap_or(cap);
            if !params.allowed_capabilities.iter().any(|a| a == name) {
                out.container(
                    c.kind,
                    c.index,
                    c.name,
                    &format!("securityContext.capabilities.add[{i}]"),
                    format!("adds capability {cap}"),
                    format!(
                        "remove it; only {} may be added",
                        params.allowed_capabilities.join(", ")
                    ),
                );
            }
        }
    }
}
