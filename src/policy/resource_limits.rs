//! `resource-limits`: containers and initContainers request and limit both cpu and memory.
//! Never waivable.

use super::Findings;
use crate::workload::{ContainerKind, Workload};

const QUANTITIES: [(&str, &str); 4] = [
    ("requests", "cpu"),
    ("requests", "memory"),
    ("limits", "cpu"),
    ("limits", "memory"),
];

pub(super) fn check(w: &Workload, out: &mut Findings<'_>) {
    for c in w.containers() {
        // Ephemeral containers have no resources (the API server refuses them).
        let (ContainerKind::App | ContainerKind::Init, Some(container)) = (c.kind, c.container)
        else {
            continue;
        };
        let resources = container.resources.as_ref();
        let has = |section: &str, name: &str| {
            resources
                .and_then(|r| match section {
                    "requests" => r.requests.as_ref(),
                    _ => r.limits.as_ref(),
                })
                .is_some_and(|m| m.contains_key(name))
        };
        let missing: Vec<_> = QUANTITIES.iter().filter(|(s, n)| !has(s, n)).collect();
        if missing.len() == QUANTITIES.len() {
            out.container(
                c.kind,
                c.index,
                c.name,
                "resources",
                "no cpu/memory requests or limits",
                "set requests (e.g. cpu: 100m, memory: 256Mi) and limits (e.g. cpu: 500m, memory: 512Mi)",
            );
            continue;
        }
        for (section, name) in missing {
            out.container(
                c.kind,
                c.index,
                c.name,
                &format!("resources.{section}.{name}"),
                format!("{section}.{name} is not set"),
                format!("set {section}.{name}"),
            );
        }
    }
}
