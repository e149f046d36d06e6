//! The one parser and validator of `BaselineException` objects.
//!
//! The webhook (admission of the objects themselves), the registry (kube watch and files) and
//! `exceptions lint` all call [`parse_object`] and [`validate`]; admission and lint add the
//! time-and-ADR checks of [`check`]. So the webhook cannot accept what the registry would
//! refuse, nor the other way round.

use super::index::{Glob, Globs};
use chrono::{DateTime, Duration, Utc};
use regex::Regex;

use super::adr::{AdrIndex, AdrStatus};
use super::index::{is_glob, Exception};
use super::model::{self, BaselineException};
use crate::config::{Config, ExceptionSettings, Policies};
use crate::policy::PolicyId;
use crate::workload::WorkloadKind;

/// One reason an exception is refused, with the field as the user writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// What validation needs: the exception settings and policies of `policies/baseline.yaml`
/// and the ADR index.
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    pub settings: &'a ExceptionSettings,
    pub policies: &'a Policies,
    pub adrs: &'a AdrIndex,
    adr_pattern: Option<Regex>,
}

impl<'a> Rules<'a> {
    pub fn new(config: &'a Config, adrs: &'a AdrIndex) -> Self {
        Self {
            settings: &config.exceptions,
            policies: &config.policies,
            adrs,
            // `Config::parse` already refused an invalid pattern.
            adr_pattern: Regex::new(&config.exceptions.adr_pattern).ok(),
        }
    }
}

/// Read a JSON value (an admission object, or one document of a YAML file) as a
/// `BaselineException`, refusing unknown fields so a typo (`namespace:`) is not silently
/// ignored.
pub fn parse_object(value: serde_json::Value) -> Result<BaselineException, Problem> {
    let serde_json::Value::Object(top) = &value else {
        return Err(Problem::new("(document)", "expected a mapping"));
    };
    match top.get("apiVersion").and_then(|v| v.as_str()) {
        Some(model::API_VERSION) => {}
        other => {
            return Err(Problem::new(
                "apiVersion",
                format!(
                    "expected {}, got {:?}",
                    model::API_VERSION,
                    other.unwrap_or("")
                ),
            ))
        }
    }
    match top.get("kind").and_then(|v| v.as_str()) {
        Some(model::KIND) => {}
        other => {
            return Err(Problem::new(
                "kind",
                format!("expected {}, got {:?}", model::KIND, other.unwrap_or("")),
            ))
        }
    }
    unknown_fields(top, model::TOP_FIELDS, "")?;
    if let Some(serde_json::Value::Object(spec)) = top.get("spec") {
        unknown_fields(spec, model::SPEC_FIELDS, "spec.")?;
        if let Some(serde_json::Value::Object(m)) = spec.get("match") {
            unknown_fields(m, model::MATCH_FIELDS, "spec.match.")?;
        }
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        Problem::new(
            if path == "." {
                "(document)".to_owned()
            } else {
                path
            },
            message,
        )
    })
}

fn unknown_fields(
    map: &serde_json::Map<String, serde_json::Value>,
    known: &[&str],
    prefix: &str,
) -> Result<(), Problem> {
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(Problem::new(
            format!("{prefix}{k}"),
            format!("unknown field; expected one of {}", known.join(", ")),
        )),
    }
}

/// The checks that hold whatever the time or the ADR's status: a failure makes the
/// exception invalid (the registry counts it and waives nothing with it). `now` bounds how
/// far ahead `expires` may be. `origin` is recorded in the result (`kubernetes`, a path).
pub fn validate(
    object: &BaselineException,
    rules: &Rules<'_>,
    origin: &str,
    now: DateTime<Utc>,
) -> Result<Exception, Vec<Problem>> {
    let mut problems = Vec::new();
    let spec = &object.spec;
    let settings = rules.settings;

    let name = object.metadata.name.clone().unwrap_or_default();
    if name.is_empty() {
        problems.push(Problem::new("metadata.name", "required"));
    }

    match &rules.adr_pattern {
        Some(re) if re.is_match(&spec.adr) => {}
        Some(_) => problems.push(Problem::new(
            "spec.adr",
            format!(
                "{:?} does not match the ADR id pattern {} (exceptions.adrPattern)",
                spec.adr, settings.adr_pattern
            ),
        )),
        None => problems.push(Problem::new(
            "spec.adr",
            format!(
                "cannot be checked: exceptions.adrPattern {:?} is not a valid regular expression",
                settings.adr_pattern
            ),
        )),
    }

    if spec.reason.trim().is_empty() {
        problems.push(Problem::new(
            "spec.reason",
            "must say why the exception is needed and how it will be removed",
        ));
    }

    let mut policies = Vec::new();
    if spec.policies.is_empty() {
        problems.push(Problem::new(
            "spec.policies",
            "must name at least one exemptable policy",
        ));
    }
    for (i, id) in spec.policies.iter().enumerate() {
        let field = format!("spec.policies[{i}]");
        match PolicyId::parse(id) {
            None => problems.push(Problem::new(
                field,
                format!(
                    "unknown policy {id:?}; known: {}",
                    PolicyId::ALL.map(PolicyId::as_str).join(", ")
                ),
            )),
            Some(p) if !p.can_ever_be_waived() => problems.push(Problem::new(
                field,
                format!("{p} can never be waived (platform Security Baseline)"),
            )),
            Some(p) if !rules.policies.exemptable(p) => problems.push(Problem::new(
                field,
                format!("{p} is not exemptable (policies.{p}.exemptable is false)"),
            )),
            Some(p) => {
                if !policies.contains(&p) {
                    policies.push(p);
                }
            }
        }
    }

    let expires = match DateTime::parse_from_rfc3339(spec.expires.trim()) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(e) => {
            problems.push(Problem::new(
                "spec.expires",
                format!(
                    "{:?} is not an RFC 3339 time like 2027-03-31T00:00:00Z: {e}",
                    spec.expires
                ),
            ));
            None
        }
    };
    if let Some(t) = expires {
        let limit = now + Duration::days(i64::from(settings.max_lifetime_days));
        if t > limit {
            problems.push(Problem::new(
                "spec.expires",
                format!(
                    "{} is more than {} days ahead (exceptions.maxLifetimeDays); the latest allowed now is {}",
                    spec.expires,
                    settings.max_lifetime_days,
                    limit.format("%Y-%m-%dT%H:%M:%SZ")
                ),
            ));
        }
    }

    let scope = &spec.scope;
    let mut exact_namespaces = Vec::new();
    let mut namespace_globs = Vec::new();
    if scope.namespaces.is_empty() {
        problems.push(Problem::new(
            "spec.match.namespaces",
            "must name at least one namespace (exact or glob)",
        ));
    }
    for (i, ns) in scope.namespaces.iter().enumerate() {
        let field = format!("spec.match.namespaces[{i}]");
        if ns.trim().is_empty() {
            problems.push(Problem::new(field, "must not be empty"));
        } else if ns == "*" && !settings.allow_all_namespaces {
            problems.push(Problem::new(
                field,
                "\"*\" (every namespace) is refused (exceptions.allowAllNamespaces is false); name the namespaces",
            ));
        } else if is_glob(ns) {
            match Glob::new(ns) {
                Ok(g) => namespace_globs.push(g),
                Err(e) => problems.push(Problem::new(field, format!("invalid glob: {e}"))),
            }
        } else {
            exact_namespaces.push(ns.clone());
        }
    }

    let mut kinds = Vec::new();
    for (i, k) in scope.kinds.iter().enumerate() {
        match WorkloadKind::ALL.into_iter().find(|w| w.as_str() == k) {
            Some(kind) => kinds.push(kind),
            None => problems.push(Problem::new(
                format!("spec.match.kinds[{i}]"),
                format!(
                    "{k:?} is not a workload kind; expected one of {}",
                    WorkloadKind::ALL.map(WorkloadKind::as_str).join(", ")
                ),
            )),
        }
    }

    let mut name_globs = Vec::new();
    for (i, n) in scope.names.iter().enumerate() {
        let field = format!("spec.match.names[{i}]");
        if n.trim().is_empty() {
            problems.push(Problem::new(field, "must not be empty"));
            continue;
        }
        match Glob::new(n) {
            Ok(g) => name_globs.push(g),
            Err(e) => problems.push(Problem::new(field, format!("invalid glob: {e}"))),
        }
    }

    for (i, c) in scope.containers.iter().enumerate() {
        if c.trim().is_empty() {
            problems.push(Problem::new(
                format!("spec.match.containers[{i}]"),
                "must not be empty",
            ));
        }
    }

    let namespace_globs = (!namespace_globs.is_empty()).then_some(Globs(namespace_globs));
    let name_globs = (!name_globs.is_empty()).then_some(Globs(name_globs));

    let Some(expires) = expires.filter(|_| problems.is_empty()) else {
        return Err(problems);
    };
    Ok(Exception {
        name,
        origin: origin.to_owned(),
        adr: spec.adr.clone(),
        adr_url: spec.adr_url.clone(),
        adr_status: rules.adrs.get(&spec.adr).map(|a| a.status),
        reason: spec.reason.clone(),
        policies,
        expires,
        namespaces: scope.namespaces.clone(),
        exact_namespaces,
        namespace_globs,
        kinds,
        names: scope.names.clone(),
        name_globs,
        containers: scope.containers.clone(),
    })
}

/// [`validate`], plus what a new or changed exception must also satisfy: its ADR is accepted
/// in the index and it has not expired. Used by the webhook and `exceptions lint`.
pub fn check(
    object: &BaselineException,
    rules: &Rules<'_>,
    origin: &str,
    now: DateTime<Utc>,
) -> Result<Exception, Vec<Problem>> {
    let result = validate(object, rules, origin, now);
    let mut problems = result.as_ref().err().cloned().unwrap_or_default();
    let adr = &object.spec.adr;
    if !problems.iter().any(|p| p.field == "spec.adr") {
        match rules.adrs.get(adr).map(|a| a.status) {
            Some(AdrStatus::Accepted) => {}
            Some(status) => problems.push(Problem::new(
                "spec.adr",
                format!(
                    "{adr} is {status} in the ADR index; only an accepted ADR can key an exception"
                ),
            )),
            None => problems.push(Problem::new(
                "spec.adr",
                format!("{adr} is not in the ADR index; add it there (status: accepted) first"),
            )),
        }
    }
    if let Ok(expires) = DateTime::parse_from_rfc3339(object.spec.expires.trim()) {
        if expires <= now {
            problems.push(Problem::new(
                "spec.expires",
                format!("{} is in the past", object.spec.expires),
            ));
        }
    }
    match result {
        Ok(exception) if problems.is_empty() => Ok(exception),
        _ => Err(problems),
    }
}
