//! `/validate`: evaluate the policies, apply exceptions, answer with one denial or warnings.

use chrono::{DateTime, Utc};

use super::review::{AdmissionRequest, AdmissionResponse, Operation};
use super::{message, Action, Decision, Outcome, Snapshot, Verdict};
use crate::config::Mode;
use crate::policy::{self, Finding};
use crate::workload::{Workload, WorkloadKind};

/// The workload a review is about, or why it is not evaluated.
pub(crate) enum Subject {
    Workload(Box<Workload>),
    /// Not evaluated (wrong operation, subresource, other kind, excluded namespace).
    Skip,
    /// A known kind whose object cannot be read.
    Invalid(String),
}

/// Decide whether a review is evaluated, and decode its object once.
pub(crate) fn subject(snapshot: &Snapshot, request: &AdmissionRequest) -> Subject {
    if matches!(request.operation, Operation::Delete | Operation::Connect) {
        return Subject::Skip;
    }
    if request
        .sub_resource
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        return Subject::Skip;
    }
    let Some(kind) = WorkloadKind::from_group_kind(&request.kind.group, &request.kind.kind) else {
        return Subject::Skip;
    };
    if request.kind.version != "v1" {
        return Subject::Skip;
    }
    if snapshot.config.is_excluded(namespace_of(request)) {
        return Subject::Skip;
    }
    let Some(json) = request.object_json() else {
        return Subject::Invalid(format!("{kind} review has no object to evaluate"));
    };
    match Workload::from_json(kind, json) {
        Ok(workload) => Subject::Workload(Box::new(workload)),
        Err(e) => Subject::Invalid(e.to_string()),
    }
}

pub(crate) fn namespace_of(request: &AdmissionRequest) -> &str {
    request
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default")
}

/// Evaluate a review against the snapshot at time `now`.
pub fn validate(snapshot: &Snapshot, request: &AdmissionRequest, now: DateTime<Utc>) -> Decision {
    let workload = match subject(snapshot, request) {
        Subject::Workload(w) => w,
        Subject::Skip => return Decision::skipped(&request.uid),
        Subject::Invalid(reason) => {
            return Decision::of(
                AdmissionResponse::invalid(&request.uid, reason),
                Verdict::Invalid,
            )
        }
    };
    let namespace = namespace_of(request);
    let findings = policy::evaluate(&snapshot.config, &workload, namespace);
    decide(snapshot, &request.uid, &workload, namespace, findings, now)
}

/// Turn findings into a response: enforce → one denial, warn → warnings.
pub(crate) fn decide(
    snapshot: &Snapshot,
    uid: &str,
    workload: &Workload,
    namespace: &str,
    findings: Vec<Finding>,
    _now: DateTime<Utc>,
) -> Decision {
    let config = &snapshot.config;
    let mut denials = Vec::new();
    let mut warnings = Vec::new();
    for finding in findings {
        match config.mode(finding.policy, namespace) {
            Mode::Enforce => denials.push(finding),
            Mode::Warn => warnings.push(finding),
            Mode::Off => {}
        }
    }
    let mut denied_by: Vec<_> = denials.iter().map(|f| f.policy).collect();
    denied_by.dedup();
    let mut warned_by: Vec<_> = warnings.iter().map(|f| f.policy).collect();
    warned_by.dedup();
    let warning_lines: Vec<String> = warnings.iter().map(message::warning).collect();

    let (mut response, verdict) = if denials.is_empty() {
        let verdict = if warning_lines.is_empty() {
            Verdict::Allowed
        } else {
            Verdict::Warned
        };
        (AdmissionResponse::allow(uid), verdict)
    } else {
        let text = message::denial(workload, namespace, &denials, &config.policies);
        let causes = denials.iter().map(message::cause).collect();
        (AdmissionResponse::deny(uid, text, causes), Verdict::Denied)
    };
    response.warnings = warning_lines;
    let outcomes = denials
        .into_iter()
        .map(|finding| (finding, Action::Denied))
        .chain(
            warnings
                .into_iter()
                .map(|finding| (finding, Action::Warned)),
        )
        .map(|(finding, action)| Outcome {
            finding,
            action,
            waived_by: None,
        })
        .collect();
    Decision {
        response,
        verdict,
        denied_by,
        warned_by,
        waivers: Vec::new(),
        mutations: Vec::new(),
        outcomes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::review::decode;
    use crate::config::Config;

    fn run(file: &str) -> Decision {
        let body = std::fs::read(format!("tests/data/apiserver/{file}")).unwrap();
        let request = decode(&body).unwrap();
        validate(&Snapshot::new(Config::embedded()), &request, Utc::now())
    }

    #[test]
    fn every_captured_compliant_workload_is_allowed_without_warnings() {
        for file in [
            "create-deployment-validate.json",
            "create-statefulset-validate.json",
            "create-daemonset-validate.json",
            "create-pod-validate.json",
            "create-job-validate.json",
            "create-cronjob-validate.json",
            "update-deployment-validate.json",
        ] {
            let d = run(file);
            assert_eq!(d.verdict, Verdict::Allowed, "{file}: {:?}", d.response);
        }
    }

    #[test]
    fn delete_is_not_evaluated() {
        assert_eq!(
            run("delete-deployment-validate.json").verdict,
            Verdict::Skipped
        );
    }
}
