//! Review in, response out: the pure core of `/validate` and `/mutate`.
//!
//! Nothing here does I/O; the server decodes the body, calls [`validate`] or [`mutate`] with
//! the current [`Snapshot`] and the time, and encodes the response.

pub mod message;
pub mod mutate;
pub mod review;
pub mod validate;

use crate::config::Config;
use crate::exceptions::Registry;
use crate::policy::PolicyId;

pub use mutate::mutate;
pub use review::{AdmissionRequest, AdmissionResponse, DecodeError};
pub use validate::validate;

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
        }
    }
}
