//! Review in, response out: the pure core of `/validate` and `/mutate`.
//!
//! Nothing here does I/O; the server decodes the body, calls [`validate()`] or [`mutate()`] with
//! the current [`Snapshot`] and the time, and encodes the response.

mod fast;
pub mod message;
pub mod mutate;
pub mod review;
pub mod validate;

use serde::Serialize;

use crate::config::Config;
use crate::exceptions::Registry;
use crate::policy::{Finding, PolicyId};

pub use mutate::{mutate, mutate_decoded};
pub use review::{decode_review, AdmissionRequest, AdmissionResponse, DecodeError, Review};
pub use validate::{validate, validate_decoded};

/// Policies and exceptions as one immutable whole, swapped as a unit when either changes, so
/// a review never sees half of an update and the request path takes no lock.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    pub exceptions: Registry,
}

impl Snapshot {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            exceptions: Registry::default(),
        }
    }
}

/// What happened to a review, for the decision log line and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Evaluated, nothing to say.
    Allowed,
    /// Allowed with warnings (warn-mode findings, waivers, expiring exceptions).
    Warned,
    /// Refused by enforce-mode findings.
    Denied,
    /// Not evaluated: other kind, excluded namespace, DELETE, subresource.
    Skipped,
    /// The object could not be read as its kind.
    Invalid,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Warned => "warned",
            Verdict::Denied => "denied",
            Verdict::Skipped => "skipped",
            Verdict::Invalid => "invalid",
        }
    }
}

/// What became of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// An enforce-mode finding: the review is refused.
    Denied,
    /// A warn-mode finding: allowed, with a warning.
    Warned,
    /// Covered by an active exception keyed to an accepted ADR.
    Waived,
}

/// A finding and what the review did with it.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    #[serde(flatten)]
    pub finding: Finding,
    pub action: Action,
    /// The ADR of the exception that waived it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waived_by: Option<String>,
}

/// A response plus the facts the server logs and counts. Never the object's contents.
#[derive(Debug, Clone)]
pub struct Decision {
    pub response: AdmissionResponse,
    pub verdict: Verdict,
    /// Policies with enforce-mode findings.
    pub denied_by: Vec<PolicyId>,
    /// Policies with warn-mode findings.
    pub warned_by: Vec<PolicyId>,
    /// (ADR, policy) of each waiver used.
    pub waivers: Vec<(String, PolicyId)>,
    /// Defaults `/mutate` applied, by policy.
    pub mutations: Vec<PolicyId>,
    /// Every finding with what became of it (for `check` and structured output).
    pub outcomes: Vec<Outcome>,
}

impl Decision {
    pub fn skipped(uid: &str) -> Self {
        Self::of(AdmissionResponse::allow(uid), Verdict::Skipped)
    }

    pub fn of(response: AdmissionResponse, verdict: Verdict) -> Self {
        Self {
            response,
            verdict,
            denied_by: Vec::new(),
            warned_by: Vec::new(),
            waivers: Vec::new(),
            mutations: Vec::new(),
            outcomes: Vec::new(),
        }
    }
}

/// The reviews captured from a real kube-apiserver v1.32 (`tests/data/apiserver/`) whose
/// object is compliant: one list for the unit tests, the integration tests and the benches.
#[doc(hidden)]
pub const CAPTURED_COMPLIANT: [&str; 7] = [
    "create-deployment-validate.json",
    "create-statefulset-validate.json",
    "create-daemonset-validate.json",
    "create-pod-validate.json",
    "create-job-validate.json",
    "create-cronjob-validate.json",
    "update-deployment-validate.json",
];
