//! Validated exceptions and how they match a workload and a finding, plus the namespace index
//! that keeps lookups independent of the exceptions of other namespaces.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::adr::AdrStatus;
use crate::policy::{Finding, PolicyId};
use crate::workload::WorkloadKind;

/// An exception that passed [`super::validation::validate`]: policies parsed, globs
/// compiled, expiry parsed. Whether it waives anything right now is [`Exception::standing`].
#[derive(Debug, Clone)]
pub struct Exception {
    /// `metadata.name`.
    pub name: String,
    /// Where it came from: `kubernetes` or a file path.
    pub origin: String,
    pub adr: String,
    pub adr_url: Option<String>,
    /// The ADR's status in the index the registry was built with; `None` when not listed.
    pub adr_status: Option<AdrStatus>,
    pub reason: String,
    pub policies: Vec<PolicyId>,
    pub expires: DateTime<Utc>,
    /// `match.namespaces` as written.
    pub namespaces: Vec<String>,
    pub(crate) exact_namespaces: Vec<String>,
    pub(crate) namespace_globs: Option<Globs>,
    /// `match.kinds`; empty = every kind.
    pub kinds: Vec<WorkloadKind>,
    /// `match.names` as written; empty = every name.
    pub names: Vec<String>,
    pub(crate) name_globs: Option<Globs>,
    /// `match.containers`; empty = every container and the pod itself.
    pub containers: Vec<String>,
}

/// Globs of one exception (`*`, `?`, `[...]`). `glob::Pattern` is a short list of tokens:
/// 10,000 exceptions cost kilobytes, where a compiled `globset::GlobSet` each costs megabytes
/// in all (measured: 25 MB for 10,000 one-pattern sets).
#[derive(Debug, Clone)]
pub struct Globs(pub(crate) Vec<Glob>);

impl Globs {
    pub fn is_match(&self, text: &str) -> bool {
        self.0.iter().any(|g| g.matches(text))
    }
}

/// One pattern of `match.names` or `match.namespaces`, kept in the shape it has. Most are a
/// name or a prefix (`legacy-*`): those are compared directly, where `glob::Pattern` walks
/// its tokens (~185 instructions a name, the most of a waived review's exception lookup).
#[derive(Debug, Clone)]
pub(crate) enum Glob {
    Exact(String),
    Prefix(String),
    Pattern(glob::Pattern),
}

impl Glob {
    /// Refuses what `glob::Pattern::new` refuses, with its error.
    pub fn new(text: &str) -> Result<Glob, glob::PatternError> {
        let pattern = glob::Pattern::new(text)?;
        Ok(if !is_glob(text) {
            Glob::Exact(text.to_owned())
        } else if let Some(prefix) = text.strip_suffix('*').filter(|p| !is_glob(p)) {
            Glob::Prefix(prefix.to_owned())
        } else {
            Glob::Pattern(pattern)
        })
    }

    /// As `glob::Pattern::matches` (case-sensitive, `*` across any character).
    pub fn matches(&self, text: &str) -> bool {
        match self {
            Glob::Exact(name) => text == name,
            Glob::Prefix(prefix) => text.starts_with(prefix.as_str()),
            Glob::Pattern(pattern) => pattern.matches(text),
        }
    }
}

/// Whether an exception waives anything at a given time, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Active,
    Expired,
    /// The ADR is listed with another status than `accepted`.
    AdrNotAccepted(AdrStatus),
    /// The ADR is not in the ADR index.
    AdrUnknown,
}

impl Exception {
    pub fn standing(&self, now: DateTime<Utc>) -> Standing {
        match self.adr_status {
            None => Standing::AdrUnknown,
            Some(AdrStatus::Accepted) if now >= self.expires => Standing::Expired,
            Some(AdrStatus::Accepted) => Standing::Active,
            Some(status) => Standing::AdrNotAccepted(status),
        }
    }

    /// Why the exception waives nothing at `now`, as a clause: `it expired on ...`.
    pub fn why_inactive(&self, now: DateTime<Utc>) -> Option<String> {
        match self.standing(now) {
            Standing::Active => None,
            Standing::Expired => Some(format!(
                "it expired on {}",
                self.expires.format("%Y-%m-%dT%H:%M:%SZ")
            )),
            Standing::AdrNotAccepted(status) => Some(format!(
                "{} is {status} in the ADR index (only accepted ADRs waive)",
                self.adr
            )),
            Standing::AdrUnknown => Some(format!("{} is not in the ADR index", self.adr)),
        }
    }

    pub fn matches_namespace(&self, namespace: &str) -> bool {
        self.exact_namespaces.iter().any(|n| n == namespace)
            || self
                .namespace_globs
                .as_ref()
                .is_some_and(|g| g.is_match(namespace))
    }

    /// Kind and name (namespace is the index's job).
    pub fn matches_workload(&self, kind: WorkloadKind, name: &str) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && self.name_globs.as_ref().is_none_or(|g| g.is_match(name))
    }

    /// Policy and container of a finding. With `match.containers`, pod-level findings are
    /// not covered: the exception is about those containers only.
    pub fn covers(&self, finding: &Finding) -> bool {
        self.policies.contains(&finding.policy)
            && (self.containers.is_empty()
                || finding
                    .container
                    .as_ref()
                    .is_some_and(|c| self.containers.iter().any(|x| x == c)))
    }

    /// `payments, dev-*`, for tables.
    pub fn scope(&self) -> String {
        let mut s = self.namespaces.join(",");
        if !self.kinds.is_empty() {
            let kinds: Vec<_> = self.kinds.iter().map(|k| k.as_str()).collect();
            s.push_str(&format!(" kinds={}", kinds.join(",")));
        }
        if !self.names.is_empty() {
            s.push_str(&format!(" names={}", self.names.join(",")));
        }
        if !self.containers.is_empty() {
            s.push_str(&format!(" containers={}", self.containers.join(",")));
        }
        s
    }
}

/// What exceptions say about one finding.
#[derive(Debug, Default)]
pub struct Coverage<'a> {
    /// The active exception that waives it (latest expiry first, then name).
    pub waiver: Option<&'a Exception>,
    /// Exceptions that match but waive nothing (expired, ADR not accepted).
    pub inactive: Vec<&'a Exception>,
}

/// Among exceptions that match the workload, which cover the finding.
pub fn coverage<'a>(
    candidates: &[&'a Exception],
    finding: &Finding,
    now: DateTime<Utc>,
) -> Coverage<'a> {
    let mut out = Coverage::default();
    if !finding.policy.can_ever_be_waived() {
        return out;
    }
    for e in candidates.iter().copied().filter(|e| e.covers(finding)) {
        if e.standing(now) == Standing::Active {
            let better = out
                .waiver
                .is_none_or(|w| (e.expires, &w.name) > (w.expires, &e.name));
            if better {
                out.waiver = Some(e);
            }
        } else {
            out.inactive.push(e);
        }
    }
    out
}

/// Exceptions by exact namespace, plus the few whose namespaces are globs. A lookup costs one
/// hash probe plus the glob entries, whatever the number of exceptions in other namespaces.
#[derive(Debug, Clone, Default)]
pub(crate) struct NamespaceIndex {
    /// foldhash, not std's SipHash (~190 instructions a lookup): its keys are the platform
    /// team's, so a request cannot make them collide.
    exact: HashMap<String, Vec<usize>, foldhash::fast::RandomState>,
    globbed: Vec<usize>,
}

impl NamespaceIndex {
    pub fn insert(&mut self, position: usize, exception: &Exception) {
        for ns in &exception.exact_namespaces {
            let list = self.exact.entry(ns.clone()).or_default();
            if list.last() != Some(&position) {
                list.push(position);
            }
        }
        if exception.namespace_globs.is_some() {
            self.globbed.push(position);
        }
    }

    /// Positions of the exceptions that match `namespace`, ascending, without duplicates.
    pub fn lookup(&self, namespace: &str, all: &[Exception]) -> Vec<usize> {
        let mut out: Vec<usize> = self.exact.get(namespace).cloned().unwrap_or_default();
        let before = out.len();
        out.extend(self.globbed.iter().copied().filter(|&i| {
            all[i]
                .namespace_globs
                .as_ref()
                .is_some_and(|g| g.is_match(namespace))
        }));
        if out.len() != before {
            out.sort_unstable();
            out.dedup();
        }
        out
    }
}

/// Whether a pattern is a glob rather than an exact name.
pub(crate) fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', '{'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_glob_matches_exactly_what_glob_pattern_matches() {
        let names = [
            "",
            "legacy",
            "legacy-",
            "legacy-nginx",
            "Legacy-nginx",
            "nginx-legacy",
            "a*b",
            "team-5",
            "team-50",
            "team-a",
            "x/y",
            "app-3",
            "app-30",
        ];
        for (text, shape) in [
            ("legacy-nginx", "exact"),
            ("legacy-*", "prefix"),
            ("*", "prefix"),
            ("app-3*", "prefix"),
            ("*-legacy", "pattern"),
            ("legacy-*-x", "pattern"),
            ("team-?", "pattern"),
            ("team-[0-9]*", "pattern"),
            ("a[*]b", "pattern"),
        ] {
            let glob = Glob::new(text).unwrap();
            let found = match glob {
                Glob::Exact(_) => "exact",
                Glob::Prefix(_) => "prefix",
                Glob::Pattern(_) => "pattern",
            };
            assert_eq!(found, shape, "{text}");
            let pattern = glob::Pattern::new(text).unwrap();
            for name in names {
                assert_eq!(
                    glob.matches(name),
                    pattern.matches(name),
                    "{text} on {name:?}"
                );
            }
        }
        for invalid in ["team-[", "legacy-**"] {
            assert!(
                Glob::new(invalid).is_err(),
                "glob's own errors are kept: {invalid}"
            );
        }
    }
}
