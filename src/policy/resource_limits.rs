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
        let requests = resources.and_then(|r| r.requests.as_ref());
        let limits = resources.and_then(|r| r.limits.as_ref());
        // In the order of QUANTITIES.
        let set = [
            requests.is_some_and(|r| r.cpu.is_some()),
            requests.is_some_and(|r| r.memory.is_some()),
            limits.is_some_and(|l| l.cpu.is_some()),
            limits.is_some_and(|l| l.memory.is_some()),
        ];
        if !set.contains(&true) {
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
        let missing = QUANTITIES.iter().zip(set).filter(|(_, set)| !set);
        for ((section, name), _) in missing {
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
