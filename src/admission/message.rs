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
    let size = findings
        .iter()
        .map(|f| {
            let who = f.container.as_ref().map_or(3, |c| c.len() + 12);
            f.field.len() + f.message.len() + f.fix.len() + who + 60
        })
        .sum::<usize>();
    let mut text = String::with_capacity(size + 300);
    let n = findings.len();
    let _ = write!(
        text,
        "{} {}/{} violates the platform baseline ({n} {}):",
        workload.kind,
        namespace,
        display_name(workload),
        if n == 1 { "violation" } else { "violations" },
    );
    // One line per finding, pushed piece by piece: `write!` with seven arguments took
    // ~1,000 instructions a line (callgrind).
    for (i, f) in findings.iter().enumerate() {
        let waiver = if policies.exemptable(f.policy) {
            "ADR exception possible"
        } else {
            "never waivable"
        };
        text.push('\n');
        crate::json_text::push_decimal(&mut text, i as u64 + 1);
        text.push_str(". [");
        text.push_str(f.policy.as_str());
        text.push_str("] ");
        text.push_str(&f.field);
        text.push_str(" (");
        match &f.container {
            Some(c) => {
                text.push_str("container ");
                push_quoted(&mut text, c);
            }
            None => text.push_str("pod"),
        }
        text.push_str("): ");
        text.push_str(&f.message);
        text.push_str(". Fix: ");
        text.push_str(&f.fix);
        text.push_str(". (");
        text.push_str(waiver);
        text.push(')');
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

/// Pushes a container's name in quotes, as `{:?}` writes it. A name as the API server allows
/// it (a DNS label) has nothing to escape and is copied; anything else goes through `Debug`.
pub(crate) fn push_quoted(out: &mut String, name: &str) {
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        out.push('"');
        out.push_str(name);
        out.push('"');
    } else {
        let _ = write!(out, "{name:?}");
    }
}

/// `status.details.causes[]` entry for a finding.
pub fn cause(f: &Finding) -> StatusCause {
    let policy = f.policy.as_str();
    let mut message = String::with_capacity(policy.len() + f.message.len() + f.fix.len() + 10);
    message.push('[');
    message.push_str(policy);
    message.push_str("] ");
    message.push_str(&f.message);
    message.push_str(". Fix: ");
    message.push_str(&f.fix);
    StatusCause {
        reason: "FieldValueInvalid".into(),
        message,
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
    // No more bytes than the limit, so no more characters: nothing to count.
    if line.len() <= MAX_WARNING_LEN || line.chars().count() <= MAX_WARNING_LEN {
        return line;
    }
    let mut cut: String = line.chars().take(MAX_WARNING_LEN - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::workload::WorkloadKind;

    fn finding(policy: PolicyId, container: Option<&str>, i: usize) -> Finding {
        Finding {
            policy,
            container: container.map(str::to_owned),
            field: format!("spec.template.spec.containers[{i}].securityContext"),
            message: format!("message {i}").into(),
            fix: "set it".into(),
        }
    }

    #[test]
    fn a_warning_is_cut_to_the_limit_in_characters_not_bytes() {
        let limit = MAX_WARNING_LEN;
        for (line, expected) in [
            ("a".repeat(limit), "a".repeat(limit)),
            ("a".repeat(limit + 1), "a".repeat(limit - 1) + "…"),
            // 200 bytes but 100 characters: kept whole.
            ("é".repeat(100), "é".repeat(100)),
            ("é".repeat(limit + 10), "é".repeat(limit - 1) + "…"),
        ] {
            let cut = truncate(line.clone());
            assert_eq!(cut, expected, "{} bytes", line.len());
            assert!(cut.chars().count() <= limit);
        }
    }

    #[test]
    fn the_denial_has_a_numbered_line_per_finding_and_the_waiver_summary() {
        let config = Config::embedded();
        let workload = Workload::from_json(
            WorkloadKind::Deployment,
            r#"{"metadata":{"name":"api"},"spec":{"template":{"spec":{"containers":[]}}}}"#,
        )
        .unwrap();
        let names = [Some("app"), None, Some("odd \"name\"\n"), Some("web-1.x_y")];
        let findings: Vec<Finding> = (0..12)
            .map(|i| {
                let policy = [PolicyId::RunAsNonRoot, PolicyId::ResourceLimits][i % 2];
                finding(policy, names[i % 4], i)
            })
            .collect();
        let text = denial(&workload, "shop", &findings, &config.policies);
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("Deployment shop/api violates the platform baseline (12 violations):")
        );
        for (i, f) in findings.iter().enumerate() {
            let who = match &f.container {
                Some(c) => format!("container {c:?}"),
                None => "pod".to_owned(),
            };
            let waiver = if f.policy == PolicyId::ResourceLimits {
                "never waivable"
            } else {
                "ADR exception possible"
            };
            let want = format!(
                "{}. [{}] {} ({who}): {}. Fix: {}. ({waiver})",
                i + 1,
                f.policy,
                f.field,
                f.message,
                f.fix
            );
            assert_eq!(lines.next(), Some(want.as_str()), "finding {i}");
        }
        assert_eq!(
            lines.next(),
            Some("Waivable only by a BaselineException keyed to an accepted ADR (ask the platform team): run-as-non-root.")
        );
        assert_eq!(lines.next(), Some("Never waivable: resource-limits."));
        assert_eq!(lines.next(), None);
    }

    #[test]
    fn a_cause_names_the_policy_the_problem_and_the_fix() {
        let cause = cause(&finding(PolicyId::HealthProbes, Some("app"), 3));
        assert_eq!(cause.reason, "FieldValueInvalid");
        assert_eq!(cause.message, "[health-probes] message 3. Fix: set it");
        assert_eq!(
            cause.field,
            "spec.template.spec.containers[3].securityContext"
        );
    }
}
