//! Admission of `BaselineException` objects themselves: only approvers may write them, and a
//! new or changed one must pass [`validation::check`], the registry's own validator.

use chrono::{DateTime, Utc};

use super::model::{self, BaselineException};
use super::validation::{self, Problem, Rules};
use crate::admission::review::{
    AdmissionRequest, AdmissionResponse, Operation, StatusCause, StatusDetails,
};
use crate::admission::{Decision, Snapshot, Verdict};

/// Whether a review is about a `BaselineException`.
pub fn is_exception_review(request: &AdmissionRequest) -> bool {
    request.kind.group == model::GROUP && request.kind.kind == model::KIND
}

/// Decide a review of a `BaselineException` (CREATE, UPDATE, DELETE).
pub fn review(snapshot: &Snapshot, request: &AdmissionRequest, now: DateTime<Utc>) -> Decision {
    let uid = request.uid.as_str();
    if request.operation == Operation::Connect
        || request
            .sub_resource
            .as_deref()
            .is_some_and(|s| !s.is_empty())
    {
        return Decision::skipped(uid);
    }
    let settings = &snapshot.config.exceptions;
    let name = request.name.as_deref().unwrap_or_default();
    let verb = match request.operation {
        Operation::Create => "create",
        Operation::Update => "change",
        _ => "delete",
    };
    let approver = request
        .user_info
        .groups
        .iter()
        .any(|g| settings.approver_groups.contains(g));
    if !approver {
        let message = format!(
            "user {:?} may not {verb} BaselineException {name:?}: only members of {} (exceptions.approverGroups) may create, change or delete exceptions",
            request.user_info.username,
            settings.approver_groups.join(", ")
        );
        return Decision::of(
            AdmissionResponse::deny(uid, message, Vec::new()),
            Verdict::Denied,
        );
    }
    if request.operation == Operation::Delete {
        return Decision::of(AdmissionResponse::allow(uid), Verdict::Allowed);
    }

    let Some(json) = request.object_json() else {
        return refuse(
            uid,
            name,
            vec![Problem::new("(object)", "the review has no object")],
        );
    };
    let object = match serde_json::from_str::<serde_json::Value>(json)
        .map_err(|e| Problem::new("(object)", format!("not valid JSON: {e}")))
        .and_then(validation::parse_object)
    {
        Ok(o) => o,
        Err(problem) => return refuse(uid, name, vec![problem]),
    };
    // Removing a finalizer from an object being deleted is an UPDATE: never block it.
    if request.operation == Operation::Update && object.metadata.deletion_timestamp.is_some() {
        return Decision::of(AdmissionResponse::allow(uid), Verdict::Allowed);
    }
    let object = with_name(object, name);
    let rules = Rules::new(&snapshot.config, snapshot.exceptions.adrs());
    match validation::check(&object, &rules, "admission", now) {
        Ok(_) => Decision::of(AdmissionResponse::allow(uid), Verdict::Allowed),
        Err(problems) => refuse(uid, name, problems),
    }
}

/// The API server fills `metadata.name` before admission; fall back to the request's name.
fn with_name(mut object: BaselineException, name: &str) -> BaselineException {
    if object
        .metadata
        .name
        .as_deref()
        .unwrap_or_default()
        .is_empty()
        && !name.is_empty()
    {
        object.metadata.name = Some(name.to_owned());
    }
    object
}

/// A refusal listing every problem with its field (HTTP-style 422 `Invalid`, like the API
/// server's own validation).
fn refuse(uid: &str, name: &str, problems: Vec<Problem>) -> Decision {
    let mut text = format!(
        "BaselineException {name:?} is refused ({} {}):",
        problems.len(),
        if problems.len() == 1 {
            "problem"
        } else {
            "problems"
        }
    );
    for (i, p) in problems.iter().enumerate() {
        text.push_str(&format!("\n{}. {p}", i + 1));
    }
    let causes = problems
        .iter()
        .map(|p| StatusCause {
            reason: "FieldValueInvalid".into(),
            message: p.message.clone(),
            field: p.field.clone(),
        })
        .collect();
    let details = StatusDetails {
        name: name.to_owned(),
        kind: "BaselineException".into(),
        causes,
    };
    let response = AdmissionResponse::failure(uid, text, "Invalid", 422, Some(details));
    Decision::of(response, Verdict::Denied)
}
