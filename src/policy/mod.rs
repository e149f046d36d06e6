//! The baseline policies: pure functions from a [`Workload`] to [`Finding`]s.
//!
//! No I/O and no clock here: the admission and `check` paths both call [`evaluate`], so the
//! cluster and CI give the same verdict.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Modes};
use crate::workload::{ContainerKind, Workload};

mod drop_all_capabilities;
mod health_probes;
mod metrics_endpoint;
mod no_privilege_escalation;
mod read_only_root_filesystem;
mod replicas_minimum;
mod resource_limits;
mod run_as_non_root;

/// A policy of the baseline, by the id users see in messages and config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyId {
    RunAsNonRoot,
    ReadOnlyRootFilesystem,
    ResourceLimits,
    DropAllCapabilities,
    NoPrivilegeEscalation,
    ImageSignature,
    HealthProbes,
    MetricsEndpoint,
    ReplicasMinimum,
}

impl PolicyId {
    pub const ALL: [PolicyId; 9] = [
        PolicyId::RunAsNonRoot,
        PolicyId::ReadOnlyRootFilesystem,
        PolicyId::ResourceLimits,
        PolicyId::DropAllCapabilities,
        PolicyId::NoPrivilegeEscalation,
        PolicyId::ImageSignature,
        PolicyId::HealthProbes,
        PolicyId::MetricsEndpoint,
        PolicyId::ReplicasMinimum,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunAsNonRoot => "run-as-non-root",
            Self::ReadOnlyRootFilesystem => "read-only-root-filesystem",
            Self::ResourceLimits => "resource-limits",
            Self::DropAllCapabilities => "drop-all-capabilities",
            Self::NoPrivilegeEscalation => "no-privilege-escalation",
            Self::ImageSignature => "image-signature",
            Self::HealthProbes => "health-probes",
            Self::MetricsEndpoint => "metrics-endpoint",
            Self::ReplicasMinimum => "replicas-minimum",
        }
    }

    pub fn parse(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == id)
    }

    /// The platform's Security Baseline: resource limits and image signatures have no
    /// exception process. No configuration can change this.
    pub fn can_ever_be_waived(self) -> bool {
        !matches!(self, Self::ResourceLimits | Self::ImageSignature)
    }
}

impl std::fmt::Display for PolicyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One violation: which policy, where (container or pod), the exact field, what is wrong and
/// how to fix it. The message and the fix are usually fixed texts, kept without a copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub policy: PolicyId,
    /// The container's name, or `None` for a pod-level finding.
    pub container: Option<String>,
    /// The field as the user writes it: `spec.template.spec.containers[0].securityContext.runAsNonRoot`.
    pub field: String,
    pub message: Cow<'static, str>,
    pub fix: Cow<'static, str>,
}

/// Builds findings for one workload, so each policy only says what is wrong.
pub(crate) struct Findings<'a> {
    pub workload: &'a Workload<'a>,
    pub policy: PolicyId,
    pub out: &'a mut Vec<Finding>,
}

impl Findings<'_> {
    /// A workload with one finding usually has several: the first takes room for eight, so
    /// that the list (104 bytes a finding) is not copied as it grows from four.
    fn push(&mut self, finding: Finding) {
        if self.out.capacity() == 0 {
            self.out.reserve(8);
        }
        self.out.push(finding);
    }

    /// A finding about a container; `field` is relative to the container.
    ///
    /// The three builders are cold and out of line, as is each policy's branch that calls
    /// them: a compliant review runs none of it, and inlined it would share cache lines with
    /// the checks that do run. The review path is larger than the instruction cache, so
    /// every line it touches is fetched again for each review (callgrind's cache
    /// simulation: ~1,000 misses per review more than the no-op's; docs/benchmarks-history.md).
    #[cold]
    #[inline(never)]
    pub fn container(
        &mut self,
        kind: ContainerKind,
        index: usize,
        name: &str,
        field: &str,
        message: impl Into<Cow<'static, str>>,
        fix: impl Into<Cow<'static, str>>,
    ) {
        self.push(Finding {
            policy: self.policy,
            container: Some(name.to_owned()),
            field: self.workload.container_field(kind, index, field),
            message: message.into(),
            fix: fix.into(),
        });
    }

    /// A finding about the pod spec; `field` is relative to the pod spec.
    #[cold]
    #[inline(never)]
    pub fn pod(
        &mut self,
        field: &str,
        message: impl Into<Cow<'static, str>>,
        fix: impl Into<Cow<'static, str>>,
    ) {
        let spec = self.workload.kind.spec_path();
        self.push(Finding {
            policy: self.policy,
            container: None,
            field: [spec, ".", field].concat(),
            message: message.into(),
            fix: fix.into(),
        });
    }

    /// A finding about any other field, given as its full path.
    #[cold]
    #[inline(never)]
    pub fn object(
        &mut self,
        field: String,
        message: impl Into<Cow<'static, str>>,
        fix: impl Into<Cow<'static, str>>,
    ) {
        self.push(Finding {
            policy: self.policy,
            container: None,
            field,
            message: message.into(),
            fix: fix.into(),
        });
    }
}

/// Run every policy whose mode in `modes` (the namespace's, [`Config::modes`]) is not `off`.
/// Findings come back in policy order, then container order.
pub fn evaluate(config: &Config, workload: &Workload, modes: &Modes) -> Vec<Finding> {
    let mut out = Vec::new();
    for policy in PolicyId::ALL {
        if modes.get(policy) == crate::config::Mode::Off {
            continue;
        }
        let mut findings = Findings {
            workload,
            policy,
            out: &mut out,
        };
        let p = &config.policies;
        match policy {
            PolicyId::RunAsNonRoot => run_as_non_root::check(workload, &mut findings),
            PolicyId::ReadOnlyRootFilesystem => {
                read_only_root_filesystem::check(workload, &mut findings)
            }
            PolicyId::ResourceLimits => resource_limits::check(workload, &mut findings),
            PolicyId::DropAllCapabilities => {
                drop_all_capabilities::check(workload, &p.drop_all_capabilities, &mut findings)
            }
            PolicyId::NoPrivilegeEscalation => {
                no_privilege_escalation::check(workload, &mut findings)
            }
            // Needs the registry: evaluated by the signature module, not here.
            PolicyId::ImageSignature => {}
            PolicyId::HealthProbes => {
                health_probes::check(workload, &p.health_probes, &mut findings)
            }
            PolicyId::MetricsEndpoint => {
                metrics_endpoint::check(workload, &p.metrics_endpoint, &mut findings)
            }
            PolicyId::ReplicasMinimum => {
                replicas_minimum::check(workload, &p.replicas_minimum, &mut findings)
            }
        }
    }
    out
}
