//! The texts a developer reads: one denial listing every violation, and short warnings.

use std::fmt::Write;

use super::review::StatusCause;
use crate::config::Policies;
use crate::policy::{Finding, PolicyId};
use crate::workload::Workload;

/// The API server truncates longer warnings; kubectl prints each as `Warning: ...`.
pub const MAX_WARNING_LEN: usize = 120;

/// One message that lists every enforce finding: where, what, how to fix, and whether an ADR
/// exception can waive it, so a developer fixes everything in one round trip.
pub fn denial(
    workload: &Workload,
    namespace: &str,
    findings: &[Finding],
    policies: &Policies,
) -> String {
    let mut text = String::with_capacity(160 * findings.len() + 200);
    let n = findings.len();
    let _ = write!(
        text,
        "{} {}/{} violates the platform baseline ({n} {}):",
        workload.kind,
        namespace,
        display_name(workload),
        if n == 1 { "violation" } else { "violations" },
    );
    for (i, f) in findings.iter().enumerate() {
        let who = match &f.container {
            Some(c) => format!("container {c:?}"),
            None => "pod".to_owned(),
        };
        let waiver = if policies.exemptable(f.policy) {
            "ADR exception possible"
        } else {
            "never waivable"
        };
        let _ = write!(
            text,
            "\n{}. [{}] {} ({who}): {}. Fix: {}. ({waiver})",
            i + 1,
            f.policy,
            f.field,
            f.message,
            f.fix
        );
    }
    let mut waivable: Vec<PolicyId> = Vec::new();
    let mut never: Vec<PolicyId> = Vec::new();
    for f in findings {
        let list = if policies.exemptable(f.policy) {
            &mut waivable
        } else {
            &mut never
        };
        if !list.contains(&f.policy) {
            list.push(f.policy);
        }
    }
    if !waivable.is_empty() {
        let _ = write!(
            text,
            "\nWaivable only by a BaselineException keyed to an accepted ADR (ask the platform team): {}.",
            join(&waivable)
        );
    }
    if !never.is_empty() {
        let _ = write!(text, "\nNever waivable: {}.", join(&never));
    }
    text
}

fn join(ids: &[PolicyId]) -> String {
    ids.iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn display_name<'w>(w: &'w Workload<'_>) -> &'w str {
    if w.name.is_empty() {
        "<generated>"
    } else {
        &w.name
    }
}

/// `status.details.causes[]` entry for a finding.
pub fn cause(f: &Finding) -> StatusCause {
    StatusCause {
        reason: "FieldValueInvalid".into(),
        message: format!("[{}] {}. Fix: {}", f.policy, f.message, f.fix),
        field: f.field.clone(),
    }
}

/// A warn-mode finding as one line under [`MAX_WARNING_LEN`] characters: the fix is dropped
/// first, then the message is cut.
pub fn warning(f: &Finding) -> String {
    let full = format!("{}: {}: {}; {}", f.policy, f.field, f.message, f.fix);
    if full.chars().count() <= MAX_WARNING_LEN {
        return full;
    }
    truncate(format!("{}: {}: {}", f.policy, f.field, f.message))
}

/// Cut a line to [`MAX_WARNING_LEN`] characters with an ellipsis.
pub fn truncate(line: String) -> String {
    if line.chars().count() <= MAX_WARNING_LEN {
        return line;
    }
    let mut cut: String = line.chars().take(MAX_WARNING_LEN - 1).collect();
    cut.push('…');
    cut
}
