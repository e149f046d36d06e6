//! The `admission.k8s.io/v1` wire types, as the API server sends and reads them.
//!
//! We keep our own small types instead of kube-core's because the response's `patch` must be a
//! base64 *string* (Go's `encoding/json` decodes `[]byte` from base64; kube-core writes an array
//! of numbers) and because the object is kept as raw JSON until the kind is known, so it is
//! decoded exactly once, for that kind: its pod template into k8s-openapi's typed structs,
//! and of the rest only what the policies read (see `Workload::from_json`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// Why a body could not be read as an `admission.k8s.io/v1` AdmissionReview.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("request body is empty; expected an admission.k8s.io/v1 AdmissionReview")]
    Empty,
    #[error("request body is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("expected kind AdmissionReview, got {0:?}")]
    Kind(String),
    #[error("unsupported apiVersion {0:?}: only admission.k8s.io/v1 is served (set admissionReviewVersions: [v1])")]
    ApiVersion(String),
    #[error("AdmissionReview has no request")]
    MissingRequest,
    #[error("AdmissionReview request has no uid")]
    MissingUid,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    request: Option<AdmissionRequest>,
}

/// Decode a body into the request of an `admission.k8s.io/v1` AdmissionReview.
pub fn decode(body: &[u8]) -> Result<AdmissionRequest, DecodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    let envelope: Envelope = serde_json::from_slice(body).map_err(DecodeError::Json)?;
    match envelope.kind.as_deref() {
        Some(KIND) => {}
        other => return Err(DecodeError::Kind(other.unwrap_or_default().to_owned())),
    }
    match envelope.api_version.as_deref() {
        Some(API_VERSION) => {}
        other => {
            return Err(DecodeError::ApiVersion(
                other.unwrap_or_default().to_owned(),
            ))
        }
    }
    let request = envelope.request.ok_or(DecodeError::MissingRequest)?;
    if request.uid.is_empty() {
        return Err(DecodeError::MissingUid);
    }
    Ok(request)
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct GroupVersionResource {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub resource: String,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `request` of an AdmissionReview. The objects stay raw JSON until the kind is known.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub resource: GroupVersionResource,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: Operation,
    #[serde(default)]
    pub user_info: UserInfo,
    #[serde(default)]
    pub object: Option<Box<RawValue>>,
    #[serde(default)]
    pub old_object: Option<Box<RawValue>>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

impl AdmissionRequest {
    /// The object, unless absent or JSON `null` (DELETE sends `object: null`).
    pub fn object_json(&self) -> Option<&str> {
        self.object
            .as_deref()
            .map(RawValue::get)
            .filter(|raw| raw.trim() != "null")
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusCause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
}

/// The `metav1.Status` of a refused review: kubectl prints `message`, `reason` gives
/// `Error from server (Forbidden)`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub status: String,
    pub message: String,
    pub reason: String,
    pub code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// base64 of an RFC 6902 JSON patch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
}

impl AdmissionResponse {
    pub fn allow(uid: impl Into<String>) -> Self {
        Self {
            uid: uid.into(),
            allowed: true,
            ..Self::default()
        }
    }

    /// A refusal with HTTP-style code 403 (`Forbidden`) and one message.
    pub fn deny(uid: impl Into<String>, message: String, causes: Vec<StatusCause>) -> Self {
        let details = (!causes.is_empty()).then(|| StatusDetails {
            causes,
            ..StatusDetails::default()
        });
        Self::failure(uid, message, "Forbidden", 403, details)
    }

    /// A review that was read but cannot be evaluated (e.g. an object that does not parse as
    /// its kind): refused with code 400 so the user sees why.
    pub fn invalid(uid: impl Into<String>, message: String) -> Self {
        Self::failure(uid, message, "BadRequest", 400, None)
    }

    /// A refusal with a `metav1.Status`.
    pub fn failure(
        uid: impl Into<String>,
        message: String,
        reason: &str,
        code: u16,
        details: Option<StatusDetails>,
    ) -> Self {
        Self {
            uid: uid.into(),
            allowed: false,
            status: Some(Status {
                status: "Failure".into(),
                message,
                reason: reason.into(),
                code,
                details,
            }),
            ..Self::default()
        }
    }

    /// Wrap into the AdmissionReview envelope the API server expects back.
    pub fn into_review(self) -> AdmissionReviewResponse {
        AdmissionReviewResponse {
            api_version: API_VERSION,
            kind: KIND,
            response: self,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReviewResponse {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub response: AdmissionResponse,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_captured_review_and_keeps_the_object_raw() {
        let body = include_bytes!("../../tests/data/apiserver/create-deployment-validate.json");
        let request = decode(body).unwrap();
        assert_eq!(request.uid, "5ea659de-4648-4686-b7b3-8befc8e71695");
        assert_eq!(request.kind.kind, "Deployment");
        assert_eq!(request.operation, Operation::Create);
        assert!(request.object_json().unwrap().contains("\"replicas\": 2"));
    }

    #[test]
    fn delete_has_no_object() {
        let body = include_bytes!("../../tests/data/apiserver/delete-deployment-validate.json");
        let request = decode(body).unwrap();
        assert_eq!(request.operation, Operation::Delete);
        assert!(request.object_json().is_none());
    }

    #[test]
    fn refuses_v1beta1_and_missing_parts() {
        let beta = br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"a","operation":"CREATE"}}"#;
        assert!(matches!(decode(beta), Err(DecodeError::ApiVersion(_))));
        let no_req = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
        assert!(matches!(decode(no_req), Err(DecodeError::MissingRequest)));
        let no_uid = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"operation":"CREATE"}}"#;
        assert!(matches!(decode(no_uid), Err(DecodeError::MissingUid)));
        assert!(matches!(decode(b"  "), Err(DecodeError::Empty)));
        assert!(matches!(decode(b"{"), Err(DecodeError::Json(_))));
    }

    #[test]
    fn patch_is_a_base64_string_on_the_wire() {
        let mut response = AdmissionResponse::allow("u");
        response.patch = Some("W10=".into());
        response.patch_type = Some("JSONPatch".into());
        let json = serde_json::to_value(response.into_review()).unwrap();
        assert_eq!(json["response"]["patch"], "W10=");
        assert_eq!(json["apiVersion"], "admission.k8s.io/v1");
    }
}
