//! The `admission.k8s.io/v1` wire types, as the API server sends and reads them.
//!
//! We keep our own small types instead of kube-core's because the response's `patch` must be a
//! base64 *string* (Go's `encoding/json` decodes `[]byte` from base64; kube-core writes an array
//! of numbers) and because the object is decoded exactly once, for its kind, keeping only what
//! the policies read: the server's [`decode_review`] reads it in the same pass as the
//! envelope; [`decode`] keeps it as raw JSON for `Workload::from_json` later.
//!
//! [`decode_review`] first tries a hand-written parser (`admission::fast`, on `crate::scan`)
//! that fills these types in place; it gives up on anything unusual, and serde reads the body
//! as before. The no-op reference's [`decode_envelope`] uses the same parser.

use std::collections::BTreeMap;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::json_text::{push_decimal, push_member, push_string};
use crate::workload::{Workload, WorkloadKind};

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
    check_envelope(
        envelope.api_version.as_deref(),
        envelope.kind.as_deref(),
        envelope.request,
        |r| &r.uid,
    )
}

/// [`decode`] for the no-op reference of the load bench: the same envelope and checks, with
/// the object checked and skipped rather than kept (the no-op answers from the uid). Read by
/// the same fast path as [`decode_review`], so that the reference costs what the webhook's
/// own envelope decode costs.
pub fn decode_envelope(body: &[u8]) -> Result<AdmissionRequest, DecodeError> {
    let fast = std::str::from_utf8(body)
        .ok()
        .and_then(|text| super::fast::envelope(text, super::fast::Object::Skip).ok());
    match fast {
        Some(envelope) => check_envelope(
            envelope.api_version.as_deref(),
            envelope.kind.as_deref(),
            envelope.request,
            |r| &r.0.uid,
        )
        .map(|(request, _)| request),
        None => decode(body),
    }
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

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
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
    /// The object as sent; `None` when [`decode_review`] decoded it into a [`Review`]'s
    /// workload instead.
    #[serde(default)]
    pub object: Option<Box<RawValue>>,
    /// The old object of an UPDATE, as sent; [`decode_review`] skips it (nothing reads it).
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

    /// The kind the engine evaluates, from `request.kind` (`None` for other kinds and versions).
    pub fn workload_kind(&self) -> Option<WorkloadKind> {
        workload_kind_of(&self.kind)
    }
}

pub(crate) fn workload_kind_of(gvk: &GroupVersionKind) -> Option<WorkloadKind> {
    (gvk.version == "v1")
        .then(|| WorkloadKind::from_group_kind(&gvk.group, &gvk.kind))
        .flatten()
}

/// A review as the server evaluates it: the request, and the workload when its object was
/// decoded in the same pass as the envelope (then `request.object` is `None`).
#[derive(Debug)]
pub struct Review<'a> {
    pub request: AdmissionRequest,
    pub workload: Option<Box<Workload<'a>>>,
}

/// Decode a body in one pass: the envelope, and the object of a kind the engine evaluates
/// straight into its [`Workload`], without first copying it out as raw JSON and reading it
/// again. The API server writes `request.kind` before `request.object`; when a body does not
/// (or the object does not read as its kind), the object is kept raw and [`decode`]'s
/// two-step path gives exactly its answer and error messages.
pub fn decode_review(body: &[u8]) -> Result<Review<'_>, DecodeError> {
    // The body is checked to be UTF-8 once, in one pass; then the parsers read it as a `str`
    // and do not validate each string they read again (on a Deployment's pod template,
    // those per-string checks were a fifth of serde's decode).
    let Ok(text) = std::str::from_utf8(body) else {
        return decode(body).map(|request| Review {
            request,
            workload: None,
        });
    };
    // The fast path reads the usual review; on anything else it gives up and serde reads
    // the body, with the answers and error messages it always gave.
    decode_review_fast(text).unwrap_or_else(|| decode_review_serde(text, body))
}

/// [`decode_review`]'s fast path; `None` when it gives up.
pub(crate) fn decode_review_fast(text: &str) -> Option<Result<Review<'_>, DecodeError>> {
    let envelope = super::fast::envelope(text, super::fast::Object::Workload).ok()?;
    Some(
        check_envelope(
            envelope.api_version.as_deref(),
            envelope.kind.as_deref(),
            envelope.request,
            |r| &r.0.uid,
        )
        .map(|(request, workload)| Review { request, workload }),
    )
}

/// [`decode_review`] with serde: the envelope and the object in one pass when the kind comes
/// first, else the two-step [`decode`].
pub(crate) fn decode_review_serde(text: &str, body: &[u8]) -> Result<Review<'static>, DecodeError> {
    let mut de = serde_json::Deserializer::from_str(text);
    match OneEnvelope::deserialize(&mut de).and_then(|envelope| de.end().map(|()| envelope)) {
        Ok(OneEnvelope {
            api_version,
            kind,
            request,
        }) => {
            let (request, workload) = check_envelope(
                api_version.as_deref(),
                kind.as_deref(),
                request.map(|r| r.0),
                |r| &r.0.uid,
            )?;
            Ok(Review { request, workload })
        }
        // Malformed JSON, a missing `operation`, an object that does not read as its kind:
        // the two-step decode names the problem as it always has.
        Err(_) => decode(body).map(|request| Review {
            request,
            workload: None,
        }),
    }
}

/// The checks both decodes make on the envelope, in the same order and with the same errors.
fn check_envelope<T>(
    api_version: Option<&str>,
    kind: Option<&str>,
    request: Option<T>,
    uid: impl Fn(&T) -> &str,
) -> Result<T, DecodeError> {
    match kind {
        Some(KIND) => {}
        other => return Err(DecodeError::Kind(other.unwrap_or_default().to_owned())),
    }
    match api_version {
        Some(API_VERSION) => {}
        other => {
            return Err(DecodeError::ApiVersion(
                other.unwrap_or_default().to_owned(),
            ))
        }
    }
    let request = request.ok_or(DecodeError::MissingRequest)?;
    if uid(&request).is_empty() {
        return Err(DecodeError::MissingUid);
    }
    Ok(request)
}

/// The envelope of [`decode_review`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OneEnvelope {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    request: Option<OneRequest>,
}

/// `request`, with the object decoded as its kind when the kind came first.
struct OneRequest((AdmissionRequest, Option<Box<Workload<'static>>>));

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum RequestField {
    Uid,
    Kind,
    Resource,
    SubResource,
    Name,
    Namespace,
    Operation,
    UserInfo,
    Object,
    OldObject,
    DryRun,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for OneRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(OneRequestVisitor)
    }
}

struct OneRequestVisitor;

impl<'de> Visitor<'de> for OneRequestVisitor {
    type Value = OneRequest;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an AdmissionReview request")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error as _;
        fn once<T, E: serde::de::Error>(slot: &Option<T>, name: &'static str) -> Result<(), E> {
            match slot {
                Some(_) => Err(E::duplicate_field(name)),
                None => Ok(()),
            }
        }
        let mut uid: Option<String> = None;
        let mut kind: Option<GroupVersionKind> = None;
        let mut resource: Option<GroupVersionResource> = None;
        let mut sub_resource: Option<Option<String>> = None;
        let mut name: Option<Option<String>> = None;
        let mut namespace: Option<Option<String>> = None;
        let mut operation: Option<Operation> = None;
        let mut user_info: Option<UserInfo> = None;
        let mut object: Option<Option<Box<RawValue>>> = None;
        let mut workload: Option<Box<Workload>> = None;
        let mut old_object: Option<Option<Box<RawValue>>> = None;
        let mut dry_run: Option<Option<bool>> = None;
        while let Some(field) = map.next_key::<RequestField>()? {
            match field {
                RequestField::Uid => {
                    once(&uid, "uid")?;
                    uid = Some(map.next_value()?);
                }
                RequestField::Kind => {
                    once(&kind, "kind")?;
                    kind = Some(map.next_value()?);
                }
                RequestField::Resource => {
                    once(&resource, "resource")?;
                    resource = Some(map.next_value()?);
                }
                RequestField::SubResource => {
                    once(&sub_resource, "subResource")?;
                    sub_resource = Some(map.next_value()?);
                }
                RequestField::Name => {
                    once(&name, "name")?;
                    name = Some(map.next_value()?);
                }
                RequestField::Namespace => {
                    once(&namespace, "namespace")?;
                    namespace = Some(map.next_value()?);
                }
                RequestField::Operation => {
                    once(&operation, "operation")?;
                    operation = Some(map.next_value()?);
                }
                RequestField::UserInfo => {
                    once(&user_info, "userInfo")?;
                    user_info = Some(map.next_value()?);
                }
                RequestField::Object => {
                    if object.is_some() || workload.is_some() {
                        return Err(A::Error::duplicate_field("object"));
                    }
                    match kind.as_ref().and_then(workload_kind_of) {
                        Some(kind) => match map.next_value_seed(WorkloadSeed(kind))? {
                            Some(decoded) => workload = Some(Box::new(decoded)),
                            // `object: null`, as a DELETE sends it.
                            None => object = Some(None),
                        },
                        None => object = Some(map.next_value()?),
                    }
                }
                RequestField::OldObject => {
                    // Nothing reads the old object: skipped, not copied out (an UPDATE
                    // carries the whole object twice).
                    once(&old_object, "oldObject")?;
                    map.next_value::<IgnoredAny>()?;
                    old_object = Some(None);
                }
                RequestField::DryRun => {
                    once(&dry_run, "dryRun")?;
                    dry_run = Some(map.next_value()?);
                }
                RequestField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let request = AdmissionRequest {
            uid: uid.unwrap_or_default(),
            kind: kind.unwrap_or_default(),
            resource: resource.unwrap_or_default(),
            sub_resource: sub_resource.flatten(),
            name: name.flatten(),
            namespace: namespace.flatten(),
            operation: operation.ok_or_else(|| A::Error::missing_field("operation"))?,
            user_info: user_info.unwrap_or_default(),
            object: object.flatten(),
            old_object: old_object.flatten(),
            dry_run: dry_run.flatten(),
        };
        Ok(OneRequest((request, workload)))
    }
}

/// Decodes an object as the workload of `kind`, in place; `null` is no object.
struct WorkloadSeed(WorkloadKind);

impl<'de> DeserializeSeed<'de> for WorkloadSeed {
    type Value = Option<Workload<'static>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for WorkloadSeed {
    type Value = Option<Workload<'static>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a {} object or null", self.0)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        Workload::deserialize_as(self.0, deserializer).map(Some)
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
    /// Boxed: only refusals have one, and inline it was two thirds of the response, which
    /// each review moves a few times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Box<Status>>,
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
            status: Some(Box::new(Status {
                status: "Failure".into(),
                message,
                reason: reason.into(),
                code,
                details,
            })),
            ..Self::default()
        }
    }

    /// In the AdmissionReview envelope the API server expects back. Borrowed: the response
    /// is not moved again to be written.
    pub fn review(&self) -> AdmissionReviewResponse<'_> {
        AdmissionReviewResponse {
            api_version: API_VERSION,
            kind: KIND,
            response: self,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReviewResponse<'a> {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub response: &'a AdmissionResponse,
}

impl AdmissionReviewResponse<'_> {
    /// The answer's JSON, byte for byte as serde_json writes it (the tests compare the two),
    /// written field by field into one buffer sized for it. serde_json wrote each token with
    /// a call of its own and each string byte by byte: ~3,800 instructions for an
    /// `allowed: true` answer of 134 bytes, and ~27,000 plus reallocations for a denial
    /// listing six violations (3 KB).
    pub fn to_json(&self) -> Vec<u8> {
        let r = self.response;
        let status = r.status.as_deref();
        let causes = status
            .and_then(|s| s.details.as_ref())
            .map_or(&[][..], |d| &d.causes[..]);
        // Every string once plus the punctuation and names around it; escapes are rare.
        let size = 160
            + r.uid.len()
            + status.map_or(0, |s| {
                96 + s.status.len() + s.message.len() + s.reason.len()
            })
            + causes
                .iter()
                .map(|c| 40 + c.reason.len() + c.message.len() + c.field.len())
                .sum::<usize>()
            + r.patch.as_ref().map_or(0, |p| 12 + p.len())
            + r.patch_type.as_ref().map_or(0, |p| 16 + p.len())
            + r.warnings.iter().map(|w| 3 + w.len()).sum::<usize>()
            + r.audit_annotations
                .iter()
                .map(|(k, v)| 6 + k.len() + v.len())
                .sum::<usize>();
        let mut out = String::with_capacity(size);
        if self.api_version == API_VERSION && self.kind == KIND {
            out.push_str(concat!(
                "{\"apiVersion\":\"admission.k8s.io/v1\",",
                "\"kind\":\"AdmissionReview\",\"response\":{\"uid\":"
            ));
        } else {
            push_member(&mut out, "{\"apiVersion\":", self.api_version);
            push_member(&mut out, ",\"kind\":", self.kind);
            out.push_str(",\"response\":{\"uid\":");
        }
        push_string(&mut out, &r.uid);
        out.push_str(if r.allowed {
            ",\"allowed\":true"
        } else {
            ",\"allowed\":false"
        });
        if let Some(status) = status {
            write_status(&mut out, status);
        }
        if let Some(patch) = &r.patch {
            push_member(&mut out, ",\"patch\":", patch);
        }
        if let Some(patch_type) = &r.patch_type {
            push_member(&mut out, ",\"patchType\":", patch_type);
        }
        if !r.warnings.is_empty() {
            out.push_str(",\"warnings\":[");
            for (i, warning) in r.warnings.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_string(&mut out, warning);
            }
            out.push(']');
        }
        if !r.audit_annotations.is_empty() {
            out.push_str(",\"auditAnnotations\":{");
            for (i, (key, value)) in r.audit_annotations.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_string(&mut out, key);
                out.push(':');
                push_string(&mut out, value);
            }
            out.push('}');
        }
        out.push_str("}}");
        out.into_bytes()
    }
}

/// `,"status":{…}` as serde writes a [`Status`].
fn write_status(out: &mut String, status: &Status) {
    push_member(out, ",\"status\":{\"status\":", &status.status);
    push_member(out, ",\"message\":", &status.message);
    push_member(out, ",\"reason\":", &status.reason);
    out.push_str(",\"code\":");
    push_decimal(out, u64::from(status.code));
    if let Some(details) = &status.details {
        out.push_str(",\"details\":{");
        let mut first = true;
        let mut field = |out: &mut String, name: &str| {
            if !std::mem::take(&mut first) {
                out.push(',');
            }
            out.push('"');
            out.push_str(name);
            out.push_str("\":");
        };
        if !details.name.is_empty() {
            field(out, "name");
            push_string(out, &details.name);
        }
        if !details.kind.is_empty() {
            field(out, "kind");
            push_string(out, &details.kind);
        }
        if !details.causes.is_empty() {
            field(out, "causes");
            out.push('[');
            for (i, cause) in details.causes.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_member(out, "{\"reason\":", &cause.reason);
                push_member(out, ",\"message\":", &cause.message);
                push_member(out, ",\"field\":", &cause.field);
                out.push('}');
            }
            out.push(']');
        }
        out.push('}');
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_written_as_serde_json_writes_it() {
        let uids = [
            "0f4d6a3e-1111-4c2b-9d39-5d2c1f7b8e01",
            "",
            "a \"quoted\" uid",
            "back\\slash",
            "tab\there",
            "\u{1}\u{1f}\u{7f}",
            "ünïcödé ✓",
        ];
        let mut answers = Vec::new();
        for uid in uids {
            answers.push(AdmissionResponse::allow(uid));
            answers.push(AdmissionResponse {
                allowed: false,
                ..AdmissionResponse::allow(uid)
            });
            answers.push(AdmissionResponse::deny(
                uid,
                "no \"root\"".into(),
                Vec::new(),
            ));
            answers.push(AdmissionResponse {
                warnings: vec!["careful".into()],
                ..AdmissionResponse::allow(uid)
            });
            answers.push(AdmissionResponse {
                patch: Some("W10=".into()),
                patch_type: Some("JSONPatch".into()),
                ..AdmissionResponse::allow(uid)
            });
            answers.push(AdmissionResponse {
                audit_annotations: [("k".to_owned(), "v".to_owned())].into(),
                ..AdmissionResponse::allow(uid)
            });
        }
        let odd = "a \"quoted\" \\ line\nwith\ttabs\r, \u{8}\u{c}\u{1}\u{1f}\u{7f} and é ✓";
        let cause = |field: &str| StatusCause {
            reason: "FieldValueInvalid".into(),
            message: format!("[run-as-non-root] {odd}. Fix: set it"),
            field: field.into(),
        };
        answers.push(AdmissionResponse::deny(
            "u",
            format!("Deployment shop/{odd} violates (2 violations):\n1. …\n2. …"),
            vec![cause("spec.containers[0]"), cause(odd)],
        ));
        answers.push(AdmissionResponse::invalid("u", odd.into()));
        for code in [0, 7, 10, 403, 65535] {
            answers.push(AdmissionResponse::failure("u", "m".into(), "R", code, None));
        }
        let details = |name: &str, kind: &str, causes: Vec<StatusCause>| StatusDetails {
            name: name.into(),
            kind: kind.into(),
            causes,
        };
        for d in [
            details("", "", vec![]),
            details("n", "", vec![]),
            details("", "k", vec![cause("f")]),
            details("n", "k", vec![cause("f"), cause("g")]),
        ] {
            answers.push(AdmissionResponse::failure(
                "u",
                odd.into(),
                odd,
                403,
                Some(d),
            ));
        }
        answers.push(AdmissionResponse {
            warnings: vec!["one".into(), odd.into(), String::new()],
            audit_annotations: [("b", odd), ("a", "1"), (odd, "")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into(),
            patch: Some(odd.into()),
            patch_type: Some("JSONPatch".into()),
            ..AdmissionResponse::deny("u", odd.into(), vec![cause("f")])
        });
        let allowed = AdmissionResponse::allow("u");
        let other_envelope = AdmissionReviewResponse {
            api_version: "admission.k8s.io/\"v2\"",
            kind: "Other",
            response: &allowed,
        };
        assert_eq!(
            String::from_utf8(other_envelope.to_json()).unwrap(),
            serde_json::to_string(&other_envelope).unwrap()
        );
        for answer in answers {
            let review = answer.review();
            let written = review.to_json();
            assert_eq!(
                String::from_utf8(written).unwrap(),
                serde_json::to_string(&review).unwrap()
            );
        }
    }

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

    /// Every captured review: the compliant ones and a DELETE.
    fn every_captured() -> impl Iterator<Item = &'static str> {
        crate::admission::CAPTURED_COMPLIANT
            .into_iter()
            .chain(["delete-deployment-validate.json"])
    }

    fn captured(file: &str) -> Vec<u8> {
        std::fs::read(format!("tests/data/apiserver/{file}")).unwrap()
    }

    /// The response of both decodes, validated and mutated.
    fn answers(body: &[u8]) -> [(AdmissionResponse, crate::admission::Verdict); 4] {
        use crate::admission::{mutate, mutate_decoded, validate, validate_decoded, Snapshot};
        let snapshot = Snapshot::new(crate::config::Config::embedded());
        let now = chrono::Utc::now();
        let two_step = decode(body).unwrap();
        let one = decode_review(body).unwrap();
        let one_again = decode_review(body).unwrap();
        let v2 = validate(&snapshot, &two_step, now);
        let m2 = mutate(&snapshot, &two_step, now);
        let v1 = validate_decoded(&snapshot, &one.request, one.workload, now);
        let m1 = mutate_decoded(&snapshot, &one_again.request, one_again.workload, now);
        [
            (v2.response, v2.verdict),
            (v1.response, v1.verdict),
            (m2.response, m2.verdict),
            (m1.response, m1.verdict),
        ]
    }

    #[test]
    fn one_pass_decodes_the_workload_of_every_captured_review() {
        for file in every_captured() {
            let body = captured(file);
            let review = decode_review(&body).unwrap();
            let request = decode(&captured(file)).unwrap();
            assert_eq!(review.request.uid, request.uid, "{file}");
            if request.operation == Operation::Delete {
                assert!(review.workload.is_none(), "{file}");
                continue;
            }
            let workload = review.workload.expect(file);
            let two_step = Workload::from_json(
                request.workload_kind().unwrap(),
                request.object_json().unwrap(),
            )
            .unwrap();
            assert_eq!(workload.spec, two_step.spec, "{file}");
            assert_eq!(workload.name, two_step.name, "{file}");
            assert_eq!(workload.replicas, two_step.replicas, "{file}");
            assert_eq!(workload.pod_labels, two_step.pod_labels, "{file}");
            assert!(
                review.request.object.is_none(),
                "{file}: the object is not kept twice"
            );
        }
    }

    #[test]
    fn one_pass_and_two_steps_answer_the_same() {
        for file in every_captured() {
            let [v2, v1, m2, m1] = answers(&captured(file));
            assert_eq!(v1, v2, "{file} /validate");
            assert_eq!(m1, m2, "{file} /mutate");
        }
        // A violating Deployment: the same denial, field paths and all.
        let mut review: serde_json::Value =
            serde_json::from_slice(&captured("create-deployment-validate.json")).unwrap();
        review["request"]["object"]["spec"]["template"]["spec"]["containers"][0]
            ["securityContext"] = serde_json::json!({"privileged": true});
        let [v2, v1, m2, m1] = answers(&serde_json::to_vec(&review).unwrap());
        assert_eq!(v1.1, crate::admission::Verdict::Denied);
        assert_eq!(v1, v2);
        assert!(m1.0.patch.is_some());
        assert_eq!(m1, m2);
    }

    #[test]
    fn a_null_object_and_the_old_object_are_read_in_the_one_pass() {
        // A DELETE of a Deployment: `object: null`, `oldObject` the deleted object. The one
        // pass reads it (the two-step path would keep `oldObject` as raw JSON).
        let body = captured("delete-deployment-validate.json");
        let review = decode_review(&body).unwrap();
        assert_eq!(review.request.operation, Operation::Delete);
        assert!(review.workload.is_none());
        assert!(review.request.object.is_none());
        assert!(review.request.old_object.is_none());
        assert!(decode(&captured("delete-deployment-validate.json"))
            .unwrap()
            .old_object
            .is_some());
        // An UPDATE: the new object is decoded, the old one skipped.
        let body = captured("update-deployment-validate.json");
        let update = decode_review(&body).unwrap();
        assert!(update.workload.is_some());
        assert!(update.request.old_object.is_none());
    }

    #[test]
    fn an_object_before_its_kind_is_kept_raw_and_evaluated_the_same() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
            "uid":"u","operation":"CREATE","namespace":"shop",
            "object":{"metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"x"}]}},
            "kind":{"group":"","version":"v1","kind":"Pod"}}}"#;
        let review = decode_review(body).unwrap();
        assert!(review.workload.is_none());
        assert!(review.request.object_json().is_some());
        let [v2, v1, _, _] = answers(body);
        assert_eq!(v1.1, crate::admission::Verdict::Denied);
        assert_eq!(v1, v2);
    }

    #[test]
    fn an_unreadable_object_or_body_gets_the_two_step_answer() {
        // A field the policies read, of the wrong type: a 200 with a BadRequest status
        // naming the kind, as before.
        let mut review: serde_json::Value =
            serde_json::from_slice(&captured("create-pod-validate.json")).unwrap();
        review["request"]["object"]["spec"]["containers"] = serde_json::json!("x");
        let body = serde_json::to_vec(&review).unwrap();
        let [v2, v1, _, _] = answers(&body);
        assert_eq!(v1.1, crate::admission::Verdict::Invalid);
        assert!(
            v1.0.status
                .as_ref()
                .unwrap()
                .message
                .starts_with("Pod object does not match"),
            "{:?}",
            v1.0
        );
        assert_eq!(v1, v2);
        // Bodies that are not a review: the same error, word for word.
        for body in [
            &b"{"[..],
            b"  ",
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"a","operation":"CREATE"}}"#,
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"operation":"CREATE"}}"#,
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"a"}}"#,
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"a","uid":"b","operation":"CREATE"}}"#,
            b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"\xff\",\"operation\":\"CREATE\"}}",
        ] {
            let one = decode_review(body).unwrap_err().to_string();
            let two = decode(body).unwrap_err().to_string();
            assert_eq!(one, two);
        }
    }

    #[test]
    fn patch_is_a_base64_string_on_the_wire() {
        let mut response = AdmissionResponse::allow("u");
        response.patch = Some("W10=".into());
        response.patch_type = Some("JSONPatch".into());
        let json = serde_json::to_value(response.review()).unwrap();
        assert_eq!(json["response"]["patch"], "W10=");
        assert_eq!(json["apiVersion"], "admission.k8s.io/v1");
    }
}
