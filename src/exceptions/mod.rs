//! The exception registry: `BaselineException` objects keyed to accepted ADRs.
//!
//! - [`model`]: the CRD types; [`adr`]: the ADR index; [`validation`]: the one parser and
//!   validator (admission, registry and lint share it); [`index`]: matching.
//! - [`Registry`]: one immutable, indexed set, built whole by a source and published into
//!   the server's snapshot. The request path only reads it.
//! - [`source`]: where exceptions come from (the Kubernetes API, a directory of files).

pub mod admission;
pub mod adr;
pub mod cli;
pub mod index;
pub mod metrics;
pub mod model;
pub mod source;
pub mod validation;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

pub use adr::{Adr, AdrIndex, AdrStatus};
pub use index::{Coverage, Exception, Standing};
pub use model::{BaselineException, BaselineExceptionSpec, ExceptionMatch};
pub use validation::{Problem, Rules};

use crate::config::Config;
use crate::workload::WorkloadKind;
use index::NamespaceIndex;

/// An object as a source read it, before validation.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// `kubernetes`, or the file path (with the document number when a file holds several).
    pub origin: String,
    /// The object, or why it could not be read as one.
    pub object: Result<BaselineException, Problem>,
}

/// An exception the registry refused: it waives nothing.
#[derive(Debug, Clone)]
pub struct InvalidException {
    /// `metadata.name`, or `<unnamed>`.
    pub name: String,
    pub origin: String,
    pub problems: Vec<Problem>,
}

/// How many exceptions are in each state (the `kube_baseline_exceptions{state}` gauge).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Waiving, and not expiring within the warning window.
    pub active: usize,
    /// Waiving, and expiring within `exceptions.expiryWarningDays`.
    pub expiring: usize,
    pub expired: usize,
    /// Refused by validation, or keyed to an ADR that is not accepted.
    pub invalid: usize,
}

/// The indexed exceptions of one snapshot, with the ADR index they were checked against.
#[derive(Debug, Clone, Default)]
/// Cheap to clone (shared inside): a source keeps the registry it published.
pub struct Registry {
    exceptions: Arc<[Exception]>,
    invalid: Arc<[InvalidException]>,
    index: Arc<NamespaceIndex>,
    adrs: Arc<AdrIndex>,
}

impl Registry {
    /// Validate every loaded object against `config` and the ADR index at time `now`, and
    /// index the valid ones. Expired exceptions and those whose ADR is not accepted are kept
    /// (they waive nothing, but a denial says they matched and why).
    pub fn build(
        loaded: impl IntoIterator<Item = Loaded>,
        adrs: Arc<AdrIndex>,
        config: &Config,
        now: DateTime<Utc>,
    ) -> Self {
        let rules = Rules::new(config, &adrs);
        let mut exceptions: Vec<Exception> = Vec::new();
        let mut invalid = Vec::new();
        let mut seen: HashMap<String, String> = HashMap::new();
        for item in loaded {
            let object = match item.object {
                Ok(o) => o,
                Err(problem) => {
                    invalid.push(InvalidException {
                        name: "<unreadable>".into(),
                        origin: item.origin,
                        problems: vec![problem],
                    });
                    continue;
                }
            };
            let name = object.metadata.name.clone().unwrap_or_default();
            match validation::validate(&object, &rules, &item.origin, now) {
                Ok(e) => {
                    if let Some(first) = seen.get(&e.name) {
                        invalid.push(InvalidException {
                            name,
                            problems: vec![Problem::new(
                                "metadata.name",
                                format!("{:?} is already defined by {first}", e.name),
                            )],
                            origin: item.origin,
                        });
                        continue;
                    }
                    seen.insert(e.name.clone(), item.origin);
                    exceptions.push(e);
                }
                Err(problems) => invalid.push(InvalidException {
                    name: if name.is_empty() {
                        "<unnamed>".into()
                    } else {
                        name
                    },
                    origin: item.origin,
                    problems,
                }),
            }
        }
        // Names are unique here (duplicates were refused above), so an unstable sort gives
        // the same order, without the stable sort's buffer of half the exceptions.
        exceptions.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let mut index = NamespaceIndex::default();
        for (i, e) in exceptions.iter().enumerate() {
            index.insert(i, e);
        }
        Self {
            exceptions: exceptions.into(),
            invalid: invalid.into(),
            index: Arc::new(index),
            adrs,
        }
    }

    /// An empty registry with an ADR index (what a source publishes before anything loads).
    pub fn with_adrs(adrs: Arc<AdrIndex>) -> Self {
        Self {
            adrs,
            ..Self::default()
        }
    }

    /// Exceptions (active or not) whose `match` covers a workload; the finding-level check is
    /// [`index::coverage`].
    pub fn matching(&self, namespace: &str, kind: WorkloadKind, name: &str) -> Vec<&Exception> {
        self.index
            .lookup(namespace, &self.exceptions)
            .into_iter()
            .map(|i| &self.exceptions[i])
            .filter(|e| e.matches_workload(kind, name))
            .collect()
    }

    /// Valid exceptions, sorted by name.
    pub fn exceptions(&self) -> &[Exception] {
        &self.exceptions
    }

    pub fn invalid(&self) -> &[InvalidException] {
        &self.invalid
    }

    pub fn adrs(&self) -> &AdrIndex {
        &self.adrs
    }

    pub fn adrs_arc(&self) -> Arc<AdrIndex> {
        Arc::clone(&self.adrs)
    }

    pub fn is_empty(&self) -> bool {
        self.exceptions.is_empty() && self.invalid.is_empty()
    }

    /// Counts by state at `now`; `expiring` is within `warning_days`.
    pub fn counts(&self, now: DateTime<Utc>, warning_days: u32) -> StateCounts {
        let mut c = StateCounts {
            invalid: self.invalid.len(),
            ..StateCounts::default()
        };
        for e in self.exceptions.iter() {
            match e.standing(now) {
                Standing::Active if expiring(e, now, warning_days) => c.expiring += 1,
                Standing::Active => c.active += 1,
                Standing::Expired => c.expired += 1,
                Standing::AdrNotAccepted(_) | Standing::AdrUnknown => c.invalid += 1,
            }
        }
        c
    }
}

/// Whether an exception expires within `warning_days` of `now`.
pub fn expiring(e: &Exception, now: DateTime<Utc>, warning_days: u32) -> bool {
    e.expires - now <= Duration::days(i64::from(warning_days))
}
