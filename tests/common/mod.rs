//! Small builders shared by the integration tests: manifests of every kind around one pod
//! template, and AdmissionReviews as the API server sends them.
#![allow(dead_code)]

use serde_json::{json, Value};

use kube_baseline::workload::WorkloadKind;

/// The compliant reviews captured from a real kube-apiserver (tests/data/apiserver/).
#[allow(unused_imports)] // not every test crate that includes this module uses it
pub use kube_baseline::admission::CAPTURED_COMPLIANT;

/// A captured review's body.
pub fn captured(name: &str) -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/apiserver/").to_owned() + name)
        .unwrap()
}

/// `apiVersion` of a kind.
pub fn api_version(kind: WorkloadKind) -> &'static str {
    match kind.group() {
        "" => "v1",
        "apps" => "apps/v1",
        _ => "batch/v1",
    }
}

/// An object of `kind` named `name` in `namespace` whose pod template is `pod`
/// (`{metadata, spec}`), with `replicas` for kinds that have them.
pub fn workload(
    kind: WorkloadKind,
    name: &str,
    namespace: &str,
    pod: &Value,
    replicas: Option<i32>,
) -> Value {
    let mut pod = pod.clone();
    if !kind.is_long_running() {
        pod["spec"]["restartPolicy"] = json!("OnFailure");
    }
    let labels = pod["metadata"]["labels"].clone();
    let selector =
        json!({"matchLabels": if labels.is_null() { json!({"app": name}) } else { labels }});
    let metadata = json!({"name": name, "namespace": namespace, "labels": {"app": name}});
    let mut object = match kind {
        WorkloadKind::Pod => {
            let mut meta = pod["metadata"].clone();
            if meta.is_null() {
                meta = json!({});
            }
            meta["name"] = json!(name);
            meta["namespace"] = json!(namespace);
            json!({"metadata": meta, "spec": pod["spec"]})
        }
        WorkloadKind::CronJob => json!({
            "metadata": metadata,
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": pod}}}
        }),
        WorkloadKind::Job => json!({"metadata": metadata, "spec": {"template": pod}}),
        WorkloadKind::ReplicationController => json!({
            "metadata": metadata,
            "spec": {"selector": selector["matchLabels"], "template": pod}
        }),
        _ => json!({"metadata": metadata, "spec": {"selector": selector, "template": pod}}),
    };
    object["apiVersion"] = json!(api_version(kind));
    object["kind"] = json!(kind.as_str());
    if let Some(r) = replicas {
        if matches!(
            kind,
            WorkloadKind::Deployment
                | WorkloadKind::StatefulSet
                | WorkloadKind::ReplicaSet
                | WorkloadKind::ReplicationController
        ) {
            object["spec"]["replicas"] = json!(r);
        }
    }
    object
}

/// An `admission.k8s.io/v1` AdmissionReview for `object`, as the API server sends it.
pub fn review(operation: &str, object: &Value, user: &str, groups: &[&str]) -> Value {
    let kind = object["kind"].as_str().unwrap_or_default();
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0f4d6a3e-1111-4c2b-9d39-5d2c1f7b8e01",
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": format!("{}s", kind.to_lowercase())},
            "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"],
            "operation": operation,
            "userInfo": {"username": user, "groups": groups},
            "object": if operation == "DELETE" { Value::Null } else { object.clone() },
            "oldObject": null,
            "dryRun": false
        }
    })
}

/// A CREATE by a developer.
pub fn create(object: &Value) -> Vec<u8> {
    serde_json::to_vec(&review(
        "CREATE",
        object,
        "dev@example.com",
        &["developers", "system:authenticated"],
    ))
    .unwrap()
}

/// The compliant pod template of the policy table.
pub fn compliant_pod() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/policy/compliant-pod.yaml"
    ))
    .unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// Every family named in tests/data/metric-names.txt (which the alerting rules and the
/// dashboard are checked against, in tests/deploy.rs) is in the `/metrics` exposition `text`,
/// and nothing else is: a rename cannot silently break alerting.
pub fn assert_exposes_exactly_the_listed_metrics(text: &str) {
    use std::collections::BTreeSet;
    let family = |name: &str| {
        ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name)
            .to_owned()
    };
    let exposed: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect();
    let listed: BTreeSet<String> = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/metric-names.txt"
    ))
    .unwrap()
    .lines()
    .map(str::trim)
    .filter(|l| !l.is_empty() && !l.starts_with('#'))
    .map(family)
    .collect();
    let missing: Vec<_> = listed.difference(&exposed).collect();
    let unlisted: Vec<_> = exposed.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "listed but not exposed: {missing:?}\n{text}"
    );
    assert!(
        unlisted.is_empty(),
        "exposed but not in tests/data/metric-names.txt: {unlisted:?}"
    );
}

/// The webhook's own overlay `env` (dev, staging, prod) as `kubectl kustomize
/// deploy/overlays/<env>` prints it: the YAML stream `kubectl apply -k` would send.
pub fn kustomize(env: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/overlays")
        .join(env);
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("kubectl is installed (it builds deploy/ with its embedded kustomize)");
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kustomize prints UTF-8")
}
