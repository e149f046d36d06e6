//! `/mutate`: an RFC 6902 patch that fills the baseline's defaults, never overriding what is
//! set.
//!
//! The defaults come from `defaults:` in `policies/baseline.yaml`; each belongs to a policy and
//! is not applied where that policy's mode is `off` for the namespace. The patch holds only
//! `add` operations of paths that are missing (or `null`): a missing parent object is added
//! whole in one operation. Mutating the mutated object yields no patch, so a reinvocation
//! (`reinvocationPolicy: IfNeeded`) changes nothing.
//!
//! What the user wrote is never changed, even when it breaks the baseline: the validating
//! webhook denies it with a message that names the field. Defaults that the API server or the
//! kubelet would refuse in combination with the user's own values are not added either (see
//! `Defaulter::container` and `Defaulter::pod`).

use base64::Engine as _;
use chrono::{DateTime, Utc};
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use serde_json::{json, Map, Value};

use super::review::{AdmissionRequest, AdmissionResponse, Operation};
use super::validate::{rules_of, subject, Prepared, Subject};
use super::{Decision, Snapshot, Verdict};
use crate::config::{Config, Defaults, Mode, Modes, NamespaceRules};
use crate::policy::PolicyId;
use crate::workload::pod::{Container, SecurityContext};
use crate::workload::{ContainerKind, ContainerRef, Workload, WorkloadKind};

/// `patchType` of a JSON patch response.
pub const PATCH_TYPE: &str = "JSONPatch";

/// Fill the baseline's defaults into the review's workload.
///
/// Allowed always (the mutating webhook never denies for a policy finding; `/validate` does);
/// skipped where `/validate` skips; invalid when the object cannot be read as its kind.
pub fn mutate(snapshot: &Snapshot, request: &AdmissionRequest, now: DateTime<Utc>) -> Decision {
    mutate_decoded(snapshot, request, None, now)
}

/// [`mutate`] of a review from [`decode_review`](super::review::decode_review), whose
/// workload `decoded` was read in the same pass as the envelope (no image pinning here).
pub fn mutate_decoded(
    snapshot: &Snapshot,
    request: &AdmissionRequest,
    decoded: Option<Box<Workload>>,
    // As `validate_decoded`'s; no default depends on the time.
    _now: DateTime<Utc>,
) -> Decision {
    let rules = rules_of(snapshot, request);
    match prepare(request, &rules, decoded) {
        Prepared::Decided(decision) => decision,
        Prepared::Workload(workload) => finish(snapshot, request, &rules, &workload, Vec::new()),
    }
}

/// Decide what needs no defaults and decode the workload of the others once. The server
/// verifies image signatures (I/O) between [`prepare`] and [`finish`]. `rules` are the
/// review's namespace's ([`rules_of`]).
pub fn prepare<'a>(
    request: &AdmissionRequest,
    rules: &NamespaceRules,
    decoded: Option<Box<Workload<'a>>>,
) -> Prepared<'a> {
    let workload = match subject(request, rules, decoded) {
        Subject::Workload(w) => w,
        Subject::Skip => return Prepared::Decided(Decision::skipped(&request.uid)),
        Subject::Invalid(reason) => {
            return Prepared::Decided(Decision::of(
                AdmissionResponse::invalid(&request.uid, reason),
                Verdict::Invalid,
            ))
        }
    };
    // The pod spec of a Pod and the template of a Job cannot change after creation: a patch on
    // UPDATE (a label edit, a controller adding a finalizer) would make the API server refuse
    // the whole update. Whatever was defaulted at CREATE is still there.
    if request.operation == Operation::Update
        && matches!(workload.kind, WorkloadKind::Pod | WorkloadKind::Job)
    {
        return Prepared::Decided(Decision::skipped(&request.uid));
    }
    Prepared::Workload(workload)
}

/// The defaults patch, followed by `pins` (the verified images' digests, from the server's
/// signature check).
pub fn finish(
    snapshot: &Snapshot,
    request: &AdmissionRequest,
    rules: &NamespaceRules,
    workload: &Workload,
    pins: Vec<PatchOperation>,
) -> Decision {
    let (mut ops, mut mutations) = Defaulter::new(&snapshot.config, &rules.modes, workload).run();
    if !pins.is_empty() {
        ops.extend(pins);
        mutations.push(PolicyId::ImageSignature);
    }

    let mut response = AdmissionResponse::allow(&request.uid);
    if !ops.is_empty() {
        match serde_json::to_vec(&Patch(ops)) {
            Ok(bytes) => {
                response.patch = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
                response.patch_type = Some(PATCH_TYPE.to_owned());
            }
            // A patch of strings, booleans and numbers always serialises; should it not, the
            // workload is admitted unchanged and /validate still judges it.
            Err(e) => tracing::error!(error = %e, "cannot serialise the defaults patch"),
        }
    }
    let mut decision = Decision::of(response, Verdict::Allowed);
    if decision.response.patch.is_some() {
        decision.mutations = mutations;
    }
    decision
}

/// Members to add to one JSON object, each for the policy whose default it is.
#[derive(Default)]
struct Members(Vec<(&'static str, Value, PolicyId)>);

impl Members {
    fn push(&mut self, key: &'static str, value: Value, policy: PolicyId) {
        self.0.push((key, value, policy));
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Collects the patch and the policies whose defaults it applies.
struct Defaulter<'a> {
    defaults: &'a Defaults,
    workload: &'a Workload<'a>,
    /// Modes of the five defaultable policies in the review's namespace, looked up once.
    on: [bool; 5],
    /// Linux-only fields (`runAsUser`, seccomp, `readOnlyRootFilesystem`,
    /// `allowPrivilegeEscalation`, capabilities) are refused by the API server for a pod whose
    /// `spec.os.name` is `windows`.
    linux: bool,
    spec: PointerBuf,
    ops: Vec<PatchOperation>,
    applied: Vec<PolicyId>,
}

const DEFAULTABLE: [PolicyId; 5] = [
    PolicyId::RunAsNonRoot,
    PolicyId::ReadOnlyRootFilesystem,
    PolicyId::ResourceLimits,
    PolicyId::DropAllCapabilities,
    PolicyId::NoPrivilegeEscalation,
];

/// `base` followed by `tokens`, each escaped as a JSON pointer token (`~` → `~0`, `/` → `~1`).
fn pointer<'t>(base: &PointerBuf, tokens: impl IntoIterator<Item = &'t str>) -> PointerBuf {
    let mut p = base.clone();
    for token in tokens {
        p.push_back(token);
    }
    p
}

impl<'a> Defaulter<'a> {
    fn new(config: &'a Config, modes: &Modes, workload: &'a Workload) -> Self {
        let on = DEFAULTABLE.map(|p| modes.get(p) != Mode::Off);
        let linux = workload
            .spec
            .os
            .as_ref()
            .is_none_or(|os| !os.name.eq_ignore_ascii_case("windows"));
        Self {
            defaults: &config.defaults,
            workload,
            on,
            linux,
            spec: PointerBuf::from_tokens(workload.kind.spec_pointer().split('/').skip(1)),
            ops: Vec::new(),
            applied: Vec::new(),
        }
    }

    fn on(&self, policy: PolicyId) -> bool {
        DEFAULTABLE
            .iter()
            .position(|p| *p == policy)
            .is_some_and(|i| self.on[i])
    }

    /// The patch operations and the policies they serve, in policy order.
    fn run(mut self) -> (Vec<PatchOperation>, Vec<PolicyId>) {
        // A pod spec without any container runs nothing (and the API server refuses it); it
        // may also be absent from the object, where an add below it could not apply.
        if self.workload.containers().next().is_some() {
            self.pod();
            for c in self.workload.containers() {
                self.container(c);
            }
        }
        self.applied.sort();
        self.applied.dedup();
        (self.ops, self.applied)
    }

    fn add(&mut self, path: PointerBuf, value: Value) {
        self.ops
            .push(PatchOperation::Add(AddOperation { path, value }));
    }

    /// Add `members` to the object at `path`: one operation per member when the object exists,
    /// else one operation that adds the object whole.
    fn fill(&mut self, path: PointerBuf, exists: bool, members: Members) {
        if members.is_empty() {
            return;
        }
        if exists {
            for (key, value, policy) in members.0 {
                self.applied.push(policy);
                self.add(pointer(&path, [key]), value);
            }
        } else {
            let object = self.object(members);
            self.add(path, object);
        }
    }

    /// The members as a JSON object, recording their policies as applied.
    fn object(&mut self, members: Members) -> Value {
        let mut map = Map::with_capacity(members.0.len());
        for (key, value, policy) in members.0 {
            self.applied.push(policy);
            map.insert(key.to_owned(), value);
        }
        Value::Object(map)
    }

    /// Pod `securityContext`: `runAsNonRoot`, `runAsUser`, `seccompProfile`.
    fn pod(&mut self) {
        let d = self.defaults;
        let sc = self.workload.spec.security_context.as_ref();
        let mut members = Members::default();
        if self.on(PolicyId::RunAsNonRoot) {
            if let Some(v) = d.run_as_non_root {
                if sc.and_then(|sc| sc.run_as_non_root).is_none()
                    && !(v && self.root_container_inherits_non_root())
                {
                    members.push("runAsNonRoot", json!(v), PolicyId::RunAsNonRoot);
                }
            }
            if let Some(user) = d.run_as_user {
                if self.linux && sc.and_then(|sc| sc.run_as_user).is_none() {
                    members.push("runAsUser", json!(user), PolicyId::RunAsNonRoot);
                }
            }
        }
        if self.on(PolicyId::NoPrivilegeEscalation) && self.linux {
            if let Some(profile) = &d.seccomp_profile {
                if sc.and_then(|sc| sc.seccomp_profile.as_ref()).is_none() {
                    members.push(
                        "seccompProfile",
                        json!({ "type": profile }),
                        PolicyId::NoPrivilegeEscalation,
                    );
                }
            }
        }
        let path = pointer(&self.spec, ["securityContext"]);
        self.fill(path, sc.is_some(), members);
    }

    /// Whether a container that runs as user 0 by its own or the pod's explicit `runAsUser`
    /// would take `runAsNonRoot` from the pod. Adding `runAsNonRoot: true` there would not
    /// change what the user asked for, it would make the kubelet refuse to start the container
    /// ("runAsUser breaks non-root policy") even where the policy only warns or is waived.
    /// A container with its own `runAsNonRoot` is not affected by the pod's.
    fn root_container_inherits_non_root(&self) -> bool {
        let pod_user = self
            .workload
            .spec
            .security_context
            .as_ref()
            .and_then(|sc| sc.run_as_user);
        self.workload.containers().any(|c| {
            let sc = c.security_context;
            sc.and_then(|sc| sc.run_as_non_root).is_none()
                && sc.and_then(|sc| sc.run_as_user).or(pod_user) == Some(0)
        })
    }

    /// A container's `securityContext` and, for app and init containers, `resources`.
    fn container(&mut self, c: ContainerRef<'_>) {
        let base = pointer(&self.spec, [c.kind.field()]);
        let mut path = base;
        path.push_back(c.index);
        self.security_context(&path, c.security_context);
        // Ephemeral containers have no resources: the API server refuses them there.
        if let (ContainerKind::App | ContainerKind::Init, Some(container)) = (c.kind, c.container) {
            self.resources(&path, container);
        }
    }

    fn security_context(&mut self, container: &PointerBuf, sc: Option<&SecurityContext>) {
        if !self.linux {
            return;
        }
        let d = self.defaults;
        let mut members = Members::default();
        if self.on(PolicyId::ReadOnlyRootFilesystem) {
            if let Some(v) = d.read_only_root_filesystem {
                if sc.and_then(|sc| sc.read_only_root_filesystem).is_none() {
                    members.push(
                        "readOnlyRootFilesystem",
                        json!(v),
                        PolicyId::ReadOnlyRootFilesystem,
                    );
                }
            }
        }
        if self.on(PolicyId::NoPrivilegeEscalation) {
            if let Some(v) = d.allow_privilege_escalation {
                // The API server refuses `allowPrivilegeEscalation: false` together with
                // `privileged: true` or an added CAP_SYS_ADMIN; the user's choice stands and
                // /validate names it.
                if sc.and_then(|sc| sc.allow_privilege_escalation).is_none()
                    && (v || !escalates_anyway(sc))
                {
                    members.push(
                        "allowPrivilegeEscalation",
                        json!(v),
                        PolicyId::NoPrivilegeEscalation,
                    );
                }
            }
        }
        let caps = sc.and_then(|sc| sc.capabilities.as_ref());
        let mut cap_members = Members::default();
        if self.on(PolicyId::DropAllCapabilities)
            && d.drop_all_capabilities
            && caps.and_then(|caps| caps.drop.as_ref()).is_none()
        {
            cap_members.push("drop", json!(["ALL"]), PolicyId::DropAllCapabilities);
        }
        let sc_path = pointer(container, ["securityContext"]);
        if caps.is_some() {
            self.fill(pointer(&sc_path, ["capabilities"]), true, cap_members);
        } else if !cap_members.is_empty() {
            let object = self.object(cap_members);
            members.push("capabilities", object, PolicyId::DropAllCapabilities);
        }
        self.fill(sc_path, sc.is_some(), members);
    }

    /// `resources.requests` and `resources.limits` for cpu and memory, each missing quantity,
    /// keeping every request at or below its limit.
    fn resources(&mut self, container: &PointerBuf, c: &Container) {
        if !self.on(PolicyId::ResourceLimits) {
            return;
        }
        let d = &self.defaults.resources;
        let resources = c.resources.as_ref();
        let set_requests = resources.and_then(|r| r.requests.as_ref());
        let set_limits = resources.and_then(|r| r.limits.as_ref());
        let mut requests = Members::default();
        let mut limits = Members::default();
        for (name, default_request, default_limit) in [
            ("cpu", &d.requests.cpu, &d.limits.cpu),
            ("memory", &d.requests.memory, &d.limits.memory),
        ] {
            let request = set_requests.and_then(|m| m.get(name)).map(|q| &*q.0);
            let limit = set_limits.and_then(|m| m.get(name)).map(|q| &*q.0);
            let (add_request, add_limit) = fill_quantity(
                request,
                limit,
                default_request.as_deref(),
                default_limit.as_deref(),
            );
            if let Some(q) = add_request {
                requests.push(name, json!(q), PolicyId::ResourceLimits);
            }
            if let Some(q) = add_limit {
                limits.push(name, json!(q), PolicyId::ResourceLimits);
            }
        }
        let path = pointer(container, ["resources"]);
        if resources.is_some() {
            self.fill(
                pointer(&path, ["requests"]),
                set_requests.is_some(),
                requests,
            );
            self.fill(pointer(&path, ["limits"]), set_limits.is_some(), limits);
        } else {
            let mut members = Members::default();
            for (key, part) in [("requests", requests), ("limits", limits)] {
                if !part.is_empty() {
                    let object = self.object(part);
                    members.push(key, object, PolicyId::ResourceLimits);
                }
            }
            self.fill(path, false, members);
        }
    }
}

/// Whether the container escalates privilege whatever `allowPrivilegeEscalation` says:
/// privileged, or adding CAP_SYS_ADMIN. The API server refuses `false` with either.
fn escalates_anyway(sc: Option<&SecurityContext>) -> bool {
    let Some(sc) = sc else { return false };
    sc.privileged == Some(true)
        || sc
            .capabilities
            .as_ref()
            .and_then(|caps| caps.add.as_ref())
            .is_some_and(|add| {
                add.iter()
                    .any(|cap| cap.strip_prefix("CAP_").unwrap_or(cap) == "SYS_ADMIN")
            })
}

/// The request and limit to add for one resource, given what is set and the defaults.
///
/// Both unset: the defaults. Only a limit: the default request, or the limit where the default
/// request is above it. Only a request: the default limit, or the request where it is above
/// the default limit. A quantity that cannot be read leaves its counterpart unset (the API
/// server refuses it anyway).
fn fill_quantity<'q>(
    request: Option<&'q str>,
    limit: Option<&'q str>,
    default_request: Option<&'q str>,
    default_limit: Option<&'q str>,
) -> (Option<&'q str>, Option<&'q str>) {
    use crate::quantity::parse;
    match (request, limit) {
        (Some(_), Some(_)) => (None, None),
        (None, None) => (default_request, default_limit),
        (None, Some(limit)) => {
            let request = default_request.and_then(|dr| match (parse(dr), parse(limit)) {
                (Some(dr_value), Some(limit_value)) if dr_value > limit_value => Some(limit),
                (Some(_), Some(_)) => Some(dr),
                _ => None,
            });
            (request, None)
        }
        (Some(request), None) => {
            let limit = default_limit.and_then(|dl| match (parse(request), parse(dl)) {
                (Some(request_value), Some(dl_value)) if request_value > dl_value => Some(request),
                (Some(_), Some(_)) => Some(dl),
                _ => None,
            });
            (None, limit)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_tokens_are_escaped() {
        let base = PointerBuf::from_tokens(["spec", "containers"]);
        let p = pointer(&base, ["limits", "example.com/gpu", "a~b"]);
        assert_eq!(p.as_str(), "/spec/containers/limits/example.com~1gpu/a~0b");
    }

    #[test]
    fn spec_pointer_of_every_kind_round_trips() {
        for kind in WorkloadKind::ALL {
            let p = PointerBuf::from_tokens(kind.spec_pointer().split('/').skip(1));
            assert_eq!(p.as_str(), kind.spec_pointer());
        }
    }

    #[test]
    fn both_quantities_unset_take_both_defaults() {
        assert_eq!(
            fill_quantity(None, None, Some("100m"), Some("500m")),
            (Some("100m"), Some("500m"))
        );
    }

    #[test]
    fn a_limit_below_the_default_request_becomes_the_request() {
        assert_eq!(
            fill_quantity(None, Some("50m"), Some("100m"), Some("500m")),
            (Some("50m"), None)
        );
        assert_eq!(
            fill_quantity(None, Some("1"), Some("100m"), Some("500m")),
            (Some("100m"), None)
        );
    }

    #[test]
    fn a_request_above_the_default_limit_becomes_the_limit() {
        assert_eq!(
            fill_quantity(Some("1Gi"), None, Some("256Mi"), Some("512Mi")),
            (None, Some("1Gi"))
        );
        assert_eq!(
            fill_quantity(Some("128Mi"), None, Some("256Mi"), Some("512Mi")),
            (None, Some("512Mi"))
        );
    }

    #[test]
    fn an_unreadable_quantity_leaves_its_counterpart_unset() {
        assert_eq!(
            fill_quantity(None, Some("lots"), Some("100m"), Some("500m")),
            (None, None)
        );
    }

    #[test]
    fn a_switched_off_default_is_not_added() {
        assert_eq!(
            fill_quantity(None, None, None, Some("500m")),
            (None, Some("500m"))
        );
        assert_eq!(fill_quantity(None, Some("1"), None, None), (None, None));
    }
}
