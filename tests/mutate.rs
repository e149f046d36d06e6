//! `/mutate` through the library API: AdmissionReview bytes in, decision out, the patch
//! applied with json-patch as the API server applies it, the result judged by `/validate`.
//!
//! There is no kube-apiserver here; the reviews are built in the shape the API server sends
//! (and the captured ones under `tests/data/apiserver/` come from a real v1.32 server).

mod common;

use base64::Engine as _;
use chrono::Utc;
use kube_baseline::admission::review::decode;
use kube_baseline::admission::{mutate, validate, Decision, Snapshot, Verdict};
use kube_baseline::config::Config;
use kube_baseline::policy::PolicyId;
use kube_baseline::workload::WorkloadKind;
use serde_json::{json, Value};

/// The policies whose findings a default can fix.
const DEFAULTABLE: [PolicyId; 5] = [
    PolicyId::RunAsNonRoot,
    PolicyId::ReadOnlyRootFilesystem,
    PolicyId::ResourceLimits,
    PolicyId::DropAllCapabilities,
    PolicyId::NoPrivilegeEscalation,
];

// ---- builders -------------------------------------------------------------------------------

fn container(name: &str) -> Value {
    json!({ "name": name, "image": format!("registry.example/{name}:1.0") })
}

/// A pod spec with one app container and nothing else.
fn bare_spec() -> Value {
    json!({ "containers": [container("app")] })
}

/// An object of `kind` whose pod (template) spec is `spec`.
fn workload(kind: WorkloadKind, spec: Value) -> Value {
    let api_version = match kind.group() {
        "" => "v1".to_owned(),
        group => format!("{group}/v1"),
    };
    let template = json!({ "metadata": { "labels": { "app": "web" } }, "spec": spec });
    let spec = match kind {
        WorkloadKind::Pod => template["spec"].clone(),
        WorkloadKind::CronJob => json!({
            "schedule": "*/5 * * * *",
            "jobTemplate": { "spec": { "template": template } }
        }),
        WorkloadKind::Job => json!({ "template": template }),
        WorkloadKind::ReplicationController => json!({
            "replicas": 2,
            "selector": { "app": "web" },
            "template": template
        }),
        _ => json!({
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": template
        }),
    };
    json!({
        "apiVersion": api_version,
        "kind": kind.as_str(),
        "metadata": { "name": "web", "namespace": "shop", "labels": { "app": "web" } },
        "spec": spec
    })
}

/// An `admission.k8s.io/v1` AdmissionReview of `operation` on `object` in `namespace`.
fn review(operation: &str, kind: WorkloadKind, namespace: &str, object: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0df28fbd-5f5f-4bd6-a9c2-1a3b5c7d9e0f",
            "kind": { "group": kind.group(), "version": "v1", "kind": kind.as_str() },
            "resource": { "group": kind.group(), "version": "v1", "resource": kind.resource() },
            "name": "web",
            "namespace": namespace,
            "operation": operation,
            "userInfo": { "username": "dev@example.com", "groups": ["system:authenticated"] },
            "object": object,
            "oldObject": null
        }
    }))
    .unwrap()
}

fn snapshot() -> Snapshot {
    Snapshot::new(Config::embedded())
}

fn mutate_with(
    snapshot: &Snapshot,
    operation: &str,
    kind: WorkloadKind,
    ns: &str,
    object: &Value,
) -> Decision {
    let body = review(operation, kind, ns, object);
    mutate(snapshot, &decode(&body).unwrap(), Utc::now())
}

fn mutate_create(kind: WorkloadKind, object: &Value) -> Decision {
    mutate_with(&snapshot(), "CREATE", kind, "shop", object)
}

/// The decoded JSON patch of a decision, checking the wire form on the way.
fn patch_of(decision: &Decision) -> Option<json_patch::Patch> {
    let encoded = decision.response.patch.as_deref()?;
    assert_eq!(decision.response.patch_type.as_deref(), Some("JSONPatch"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("patch is standard base64 with padding");
    Some(serde_json::from_slice(&bytes).expect("patch is an RFC 6902 JSON patch"))
}

/// The object after the decision's patch (unchanged when there is none).
fn apply(object: &Value, decision: &Decision) -> Value {
    let mut doc = object.clone();
    if let Some(patch) = patch_of(decision) {
        json_patch::patch(&mut doc, &patch).expect("the patch applies to the object");
    }
    doc
}

fn mutated(kind: WorkloadKind, object: &Value) -> Value {
    apply(object, &mutate_create(kind, object))
}

/// Paths the patch writes, as JSON pointers.
fn paths(decision: &Decision) -> Vec<String> {
    patch_of(decision)
        .map(|p| p.0.iter().map(|op| op.path().to_string()).collect())
        .unwrap_or_default()
}

/// The pod spec inside an object of `kind`.
fn pod_spec(kind: WorkloadKind, object: &Value) -> &Value {
    object.pointer(kind.spec_pointer()).unwrap()
}

fn pod(spec: Value) -> Value {
    workload(WorkloadKind::Pod, spec)
}

fn defaultable_findings(kind: WorkloadKind, object: &Value) -> Vec<PolicyId> {
    let body = review("CREATE", kind, "shop", object);
    let d = validate(&snapshot(), &decode(&body).unwrap(), Utc::now());
    d.denied_by
        .iter()
        .chain(&d.warned_by)
        .copied()
        .filter(|p| DEFAULTABLE.contains(p))
        .collect()
}

// ---- every kind -----------------------------------------------------------------------------

/// A bare workload with an init container and two app containers, of every kind.
fn bare(kind: WorkloadKind) -> Value {
    workload(
        kind,
        json!({
            "initContainers": [container("migrate")],
            "containers": [container("app"), container("sidecar")]
        }),
    )
}

#[test]
fn every_kind_bare_workload_passes_the_defaultable_policies_once_patched() {
    for kind in WorkloadKind::ALL {
        let object = bare(kind);
        assert_eq!(
            defaultable_findings(kind, &object).len(),
            5,
            "{kind}: precondition"
        );
        let d = mutate_create(kind, &object);
        assert!(d.response.patch.is_some(), "{kind}: {:?}", d.response);
        let patched = apply(&object, &d);
        assert_eq!(
            defaultable_findings(kind, &patched),
            [],
            "{kind}: {patched:#}"
        );
    }
}

#[test]
fn every_kind_mutated_again_gives_no_patch() {
    for kind in WorkloadKind::ALL {
        let patched = mutated(kind, &bare(kind));
        let again = mutate_create(kind, &patched);
        assert_eq!(again.response.patch, None, "{kind}: {:?}", paths(&again));
        assert_eq!(again.response.patch_type, None, "{kind}");
        assert!(again.mutations.is_empty(), "{kind}");
    }
}

#[test]
fn a_mutated_review_is_allowed_and_names_the_policies_whose_defaults_it_applied() {
    let d = mutate_create(WorkloadKind::Deployment, &bare(WorkloadKind::Deployment));
    assert!(d.response.allowed);
    assert_eq!(d.verdict, Verdict::Allowed);
    let mut expected = DEFAULTABLE.to_vec();
    expected.sort();
    assert_eq!(d.mutations, expected);
}

#[test]
fn the_patch_only_adds_and_creates_missing_objects_whole() {
    let d = mutate_create(WorkloadKind::Deployment, &bare(WorkloadKind::Deployment));
    let patch = patch_of(&d).unwrap();
    assert!(patch
        .0
        .iter()
        .all(|op| matches!(op, json_patch::PatchOperation::Add(_))));
    assert_eq!(
        paths(&d),
        [
            "/spec/template/spec/securityContext",
            "/spec/template/spec/initContainers/0/securityContext",
            "/spec/template/spec/initContainers/0/resources",
            "/spec/template/spec/containers/0/securityContext",
            "/spec/template/spec/containers/0/resources",
            "/spec/template/spec/containers/1/securityContext",
            "/spec/template/spec/containers/1/resources",
        ]
    );
}

#[test]
fn the_platform_values_are_the_ones_added() {
    let patched = mutated(WorkloadKind::Pod, &pod(bare_spec()));
    assert_eq!(
        patched["spec"]["securityContext"],
        json!({ "runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": { "type": "RuntimeDefault" } })
    );
    let c = &patched["spec"]["containers"][0];
    assert_eq!(
        c["securityContext"],
        json!({
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] }
        })
    );
    assert_eq!(
        c["resources"],
        json!({
            "requests": { "cpu": "100m", "memory": "256Mi" },
            "limits": { "cpu": "500m", "memory": "512Mi" }
        })
    );
}

// ---- never override -------------------------------------------------------------------------

#[test]
fn explicit_non_compliant_values_are_untouched() {
    let object = pod(json!({ "containers": [{
        "name": "app", "image": "x",
        "securityContext": { "runAsUser": 0, "readOnlyRootFilesystem": false, "privileged": true }
    }]}));
    let d = mutate_create(WorkloadKind::Pod, &object);
    let patched = apply(&object, &d);
    let sc = &patched["spec"]["containers"][0]["securityContext"];
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(sc["readOnlyRootFilesystem"], false);
    assert_eq!(sc["privileged"], true);
    for path in paths(&d) {
        assert!(
            !path.ends_with("/runAsUser") || path.starts_with("/spec/securityContext"),
            "{path}"
        );
        assert!(!path.ends_with("/readOnlyRootFilesystem"), "{path}");
        assert!(!path.ends_with("/privileged"), "{path}");
    }
}

#[test]
fn a_privileged_container_gets_no_allow_privilege_escalation_the_api_server_would_refuse() {
    let object = pod(json!({ "containers": [{
        "name": "app", "image": "x", "securityContext": { "privileged": true }
    }]}));
    let patched = mutated(WorkloadKind::Pod, &object);
    let sc = &patched["spec"]["containers"][0]["securityContext"];
    assert_eq!(sc.get("allowPrivilegeEscalation"), None, "{sc}");
    assert_eq!(
        sc["readOnlyRootFilesystem"], true,
        "other defaults still apply"
    );
}

#[test]
fn a_container_that_adds_sys_admin_gets_no_allow_privilege_escalation() {
    let object = pod(json!({ "containers": [{
        "name": "app", "image": "x", "securityContext": { "capabilities": { "add": ["SYS_ADMIN"] } }
    }]}));
    let patched = mutated(WorkloadKind::Pod, &object);
    let sc = &patched["spec"]["containers"][0]["securityContext"];
    assert_eq!(sc.get("allowPrivilegeEscalation"), None, "{sc}");
    assert_eq!(
        sc["capabilities"],
        json!({ "add": ["SYS_ADMIN"], "drop": ["ALL"] })
    );
}

#[test]
fn a_container_with_run_as_non_root_false_keeps_it_and_the_pod_gets_true() {
    let object = pod(json!({ "containers": [{
        "name": "app", "image": "x", "securityContext": { "runAsNonRoot": false }
    }]}));
    let patched = mutated(WorkloadKind::Pod, &object);
    assert_eq!(patched["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        patched["spec"]["containers"][0]["securityContext"]["runAsNonRoot"],
        false
    );
}

/// With `runAsUser: 0` and no own `runAsNonRoot`, the container would inherit the pod's
/// `runAsNonRoot: true` and the kubelet would refuse to start it: the user's root stays
/// visible to `/validate` instead of turning into a pod that never starts.
#[test]
fn a_root_container_without_its_own_run_as_non_root_keeps_the_pod_run_as_non_root_unset() {
    let object = pod(json!({ "containers": [{
        "name": "app", "image": "x", "securityContext": { "runAsUser": 0 }
    }]}));
    let patched = mutated(WorkloadKind::Pod, &object);
    let pod_sc = &patched["spec"]["securityContext"];
    assert_eq!(pod_sc.get("runAsNonRoot"), None, "{pod_sc}");
    assert_eq!(
        pod_sc["runAsUser"], 1000,
        "the pod-level user is still defaulted"
    );
    assert_eq!(
        patched["spec"]["containers"][0]["securityContext"]["runAsUser"],
        0
    );
}

#[test]
fn a_pod_level_root_user_is_kept_and_gets_no_run_as_non_root() {
    let object = pod(json!({
        "securityContext": { "runAsUser": 0 },
        "containers": [container("app")]
    }));
    let patched = mutated(WorkloadKind::Pod, &object);
    assert_eq!(
        patched["spec"]["securityContext"],
        json!({ "runAsUser": 0, "seccompProfile": { "type": "RuntimeDefault" } })
    );
}

#[test]
fn an_explicit_empty_drop_list_is_kept() {
    let object = pod(json!({ "containers": [{
        "name": "app", "image": "x", "securityContext": { "capabilities": { "drop": [] } }
    }]}));
    let patched = mutated(WorkloadKind::Pod, &object);
    assert_eq!(
        patched["spec"]["containers"][0]["securityContext"]["capabilities"]["drop"],
        json!([])
    );
}

#[test]
fn an_existing_capabilities_object_gets_only_drop_added() {
    let object = pod(json!({ "containers": [{
        "name": "app", "image": "x",
        "securityContext": { "capabilities": { "add": ["NET_BIND_SERVICE"] } }
    }]}));
    let d = mutate_create(WorkloadKind::Pod, &object);
    assert!(paths(&d).contains(&"/spec/containers/0/securityContext/capabilities/drop".to_owned()));
    assert_eq!(
        apply(&object, &d)["spec"]["containers"][0]["securityContext"]["capabilities"],
        json!({ "add": ["NET_BIND_SERVICE"], "drop": ["ALL"] })
    );
}

// ---- requests and limits --------------------------------------------------------------------

fn with_resources(resources: Value) -> Value {
    pod(json!({ "containers": [{ "name": "app", "image": "x", "resources": resources }] }))
}

fn resources_after(resources: Value) -> Value {
    mutated(WorkloadKind::Pod, &with_resources(resources))["spec"]["containers"][0]["resources"]
        .clone()
}

#[test]
fn a_limit_below_the_default_request_becomes_the_request() {
    let r = resources_after(json!({ "limits": { "cpu": "50m", "memory": "128Mi" } }));
    assert_eq!(r["requests"], json!({ "cpu": "50m", "memory": "128Mi" }));
    assert_eq!(r["limits"], json!({ "cpu": "50m", "memory": "128Mi" }));
}

#[test]
fn a_limit_above_the_default_request_gets_the_default_request() {
    let r = resources_after(json!({ "limits": { "cpu": "2", "memory": "4Gi" } }));
    assert_eq!(r["requests"], json!({ "cpu": "100m", "memory": "256Mi" }));
}

#[test]
fn a_request_above_the_default_limit_becomes_the_limit() {
    let r = resources_after(json!({ "requests": { "cpu": "2", "memory": "1Gi" } }));
    assert_eq!(r["limits"], json!({ "cpu": "2", "memory": "1Gi" }));
    assert_eq!(r["requests"], json!({ "cpu": "2", "memory": "1Gi" }));
}

#[test]
fn a_request_below_the_default_limit_gets_the_default_limit() {
    let r = resources_after(json!({ "requests": { "cpu": "200m", "memory": "128Mi" } }));
    assert_eq!(r["limits"], json!({ "cpu": "500m", "memory": "512Mi" }));
}

#[test]
fn only_the_missing_quantity_is_added() {
    let object = with_resources(json!({
        "requests": { "cpu": "250m" },
        "limits": { "cpu": "1", "memory": "1Gi" }
    }));
    let d = mutate_create(WorkloadKind::Pod, &object);
    let resource_paths: Vec<_> = paths(&d)
        .into_iter()
        .filter(|p| p.contains("/resources"))
        .collect();
    assert_eq!(
        resource_paths,
        ["/spec/containers/0/resources/requests/memory"]
    );
    assert_eq!(
        apply(&object, &d)["spec"]["containers"][0]["resources"]["requests"],
        json!({ "cpu": "250m", "memory": "256Mi" })
    );
}

/// `example.com/gpu` would be `example.com~1gpu` in a pointer: the map that holds it is
/// written into key by key and keeps it.
#[test]
fn an_extended_resource_in_the_limits_map_is_kept_and_cpu_and_memory_are_added_beside_it() {
    let object =
        with_resources(json!({ "limits": { "example.com/gpu": "1", "hugepages~2Mi": "0" } }));
    let d = mutate_create(WorkloadKind::Pod, &object);
    let p = paths(&d);
    assert!(
        p.contains(&"/spec/containers/0/resources/limits/cpu".to_owned()),
        "{p:?}"
    );
    assert!(
        p.contains(&"/spec/containers/0/resources/limits/memory".to_owned()),
        "{p:?}"
    );
    assert!(
        p.contains(&"/spec/containers/0/resources/requests".to_owned()),
        "{p:?}"
    );
    let r = &apply(&object, &d)["spec"]["containers"][0]["resources"];
    assert_eq!(
        r["limits"],
        json!({ "example.com/gpu": "1", "hugepages~2Mi": "0", "cpu": "500m", "memory": "512Mi" })
    );
    assert_eq!(r["requests"], json!({ "cpu": "100m", "memory": "256Mi" }));
}

#[test]
fn a_default_switched_off_with_null_is_not_added() {
    let config = Config::parse(
        "defaults:\n  runAsUser: null\n  resources:\n    limits: {cpu: null, memory: 512Mi}\n",
        "test.yaml",
    )
    .unwrap();
    let object = pod(bare_spec());
    let d = mutate_with(
        &Snapshot::new(config),
        "CREATE",
        WorkloadKind::Pod,
        "shop",
        &object,
    );
    let patched = apply(&object, &d);
    assert_eq!(patched["spec"]["securityContext"].get("runAsUser"), None);
    assert_eq!(
        patched["spec"]["containers"][0]["resources"]["limits"],
        json!({ "memory": "512Mi" })
    );
}

// ---- shapes ---------------------------------------------------------------------------------

#[test]
fn a_pod_with_an_empty_security_context_gets_each_field_added_into_it() {
    let object = pod(json!({ "securityContext": {}, "containers": [container("app")] }));
    let d = mutate_create(WorkloadKind::Pod, &object);
    let pod_paths: Vec<_> = paths(&d)
        .into_iter()
        .filter(|p| p.starts_with("/spec/securityContext"))
        .collect();
    assert_eq!(
        pod_paths,
        [
            "/spec/securityContext/runAsNonRoot",
            "/spec/securityContext/runAsUser",
            "/spec/securityContext/seccompProfile",
        ]
    );
    assert_eq!(
        apply(&object, &d)["spec"]["securityContext"],
        json!({ "runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": { "type": "RuntimeDefault" } })
    );
}

#[test]
fn an_empty_init_container_list_stays_empty_and_the_app_container_is_defaulted() {
    let object = workload(
        WorkloadKind::Deployment,
        json!({ "initContainers": [], "containers": [container("app")] }),
    );
    let patched = mutated(WorkloadKind::Deployment, &object);
    let spec = pod_spec(WorkloadKind::Deployment, &patched);
    assert_eq!(spec["initContainers"], json!([]));
    assert_eq!(
        spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
}

#[test]
fn a_pod_spec_with_an_empty_container_list_gets_no_patch() {
    let object = workload(WorkloadKind::Deployment, json!({ "containers": [] }));
    let d = mutate_create(WorkloadKind::Deployment, &object);
    assert!(d.response.allowed);
    assert_eq!(d.response.patch, None);
    assert_eq!(d.response.patch_type, None);
}

#[test]
fn a_job_template_without_a_pod_spec_gets_no_patch() {
    let object = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": { "name": "web", "namespace": "shop" },
        "spec": { "template": {} }
    });
    let d = mutate_create(WorkloadKind::Job, &object);
    assert_eq!(d.response.patch, None);
}

/// Ephemeral containers take a securityContext but the API server refuses resources on them.
#[test]
fn an_ephemeral_container_gets_security_defaults_and_no_resources() {
    let object = pod(json!({
        "containers": [container("app")],
        "ephemeralContainers": [{ "name": "debug", "image": "busybox" }]
    }));
    let patched = mutated(WorkloadKind::Pod, &object);
    let debug = &patched["spec"]["ephemeralContainers"][0];
    assert_eq!(debug["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(debug.get("resources"), None);
}

/// The API server refuses runAsUser, seccomp, readOnlyRootFilesystem,
/// allowPrivilegeEscalation and capabilities on a pod with `spec.os.name: windows`.
#[test]
fn a_windows_pod_gets_only_the_fields_windows_accepts() {
    let object = pod(json!({ "os": { "name": "windows" }, "containers": [container("app")] }));
    let patched = mutated(WorkloadKind::Pod, &object);
    assert_eq!(
        patched["spec"]["securityContext"],
        json!({ "runAsNonRoot": true })
    );
    let c = &patched["spec"]["containers"][0];
    assert_eq!(c.get("securityContext"), None);
    assert_eq!(c["resources"]["limits"]["cpu"], "500m");
}

#[test]
fn a_security_context_of_null_is_filled_whole() {
    let object = pod(json!({ "securityContext": null, "containers": [
        { "name": "app", "image": "x", "securityContext": null, "resources": null }
    ]}));
    let patched = mutated(WorkloadKind::Pod, &object);
    assert_eq!(patched["spec"]["securityContext"]["runAsUser"], 1000);
    assert_eq!(
        patched["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    assert_eq!(
        patched["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        "100m"
    );
}

// ---- not mutated ----------------------------------------------------------------------------

#[test]
fn an_excluded_namespace_gets_no_patch() {
    let object = pod(bare_spec());
    let d = mutate_with(
        &snapshot(),
        "CREATE",
        WorkloadKind::Pod,
        "kube-system",
        &object,
    );
    assert_eq!(d.verdict, Verdict::Skipped);
    assert_eq!(d.response.patch, None);
}

#[test]
fn a_policy_off_for_the_namespace_gets_none_of_its_defaults() {
    let config = Config::parse(
        "namespaceOverrides:\n- namespaces: ['sandbox']\n  policies: {read-only-root-filesystem: off}\n",
        "test.yaml",
    )
    .unwrap();
    let snapshot = Snapshot::new(config);
    let object = pod(bare_spec());
    let d = mutate_with(&snapshot, "CREATE", WorkloadKind::Pod, "sandbox", &object);
    assert!(!d.mutations.contains(&PolicyId::ReadOnlyRootFilesystem));
    let sc = &apply(&object, &d)["spec"]["containers"][0]["securityContext"];
    assert_eq!(sc.get("readOnlyRootFilesystem"), None, "{sc}");
    assert_eq!(sc["allowPrivilegeEscalation"], false);

    let elsewhere = mutate_with(&snapshot, "CREATE", WorkloadKind::Pod, "shop", &object);
    assert!(elsewhere
        .mutations
        .contains(&PolicyId::ReadOnlyRootFilesystem));
}

#[test]
fn every_defaultable_policy_off_gives_no_patch() {
    let config = Config::parse(
        "policies:\n  run-as-non-root: {mode: off}\n  read-only-root-filesystem: {mode: off}\n  resource-limits: {mode: off}\n  drop-all-capabilities: {mode: off}\n  no-privilege-escalation: {mode: off}\n",
        "test.yaml",
    )
    .unwrap();
    let d = mutate_with(
        &Snapshot::new(config),
        "CREATE",
        WorkloadKind::Pod,
        "shop",
        &pod(bare_spec()),
    );
    assert_eq!(d.response.patch, None);
    assert_eq!(d.response.patch_type, None);
    assert!(d.mutations.is_empty());
}

#[test]
fn delete_gets_no_patch() {
    let body = std::fs::read("tests/data/apiserver/delete-deployment-validate.json").unwrap();
    let d = mutate(&snapshot(), &decode(&body).unwrap(), Utc::now());
    assert_eq!(d.verdict, Verdict::Skipped);
    assert_eq!(d.response.patch, None);
}

/// A Pod's spec cannot change after creation: a patch on UPDATE would make the API server
/// refuse e.g. a label change on a pod created before the webhook.
#[test]
fn a_bare_pod_update_gets_no_patch() {
    let d = mutate_with(
        &snapshot(),
        "UPDATE",
        WorkloadKind::Pod,
        "shop",
        &pod(bare_spec()),
    );
    assert_eq!(d.response.patch, None);
}

#[test]
fn a_bare_deployment_update_is_defaulted() {
    let object = workload(WorkloadKind::Deployment, bare_spec());
    let d = mutate_with(
        &snapshot(),
        "UPDATE",
        WorkloadKind::Deployment,
        "shop",
        &object,
    );
    assert!(d.response.patch.is_some());
}

#[test]
fn the_captured_compliant_workloads_get_no_patch() {
    for file in common::CAPTURED_COMPLIANT {
        let body = common::captured(file);
        let d = mutate(&snapshot(), &decode(&body).unwrap(), Utc::now());
        assert_eq!(d.verdict, Verdict::Allowed, "{file}");
        assert_eq!(d.response.patch, None, "{file}: {:?}", paths(&d));
    }
}

#[test]
fn an_object_that_is_not_its_kind_is_invalid() {
    let object = json!({ "apiVersion": "v1", "kind": "Pod", "spec": { "containers": "app" } });
    let d = mutate_create(WorkloadKind::Pod, &object);
    assert_eq!(d.verdict, Verdict::Invalid);
    assert!(!d.response.allowed);
    assert_eq!(d.response.status.as_ref().unwrap().code, 400);
    assert_eq!(d.response.patch, None);
}
