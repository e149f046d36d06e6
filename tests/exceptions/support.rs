//! Fixtures for the exception tests: AdmissionReview bodies (so the same bodies can be
//! POSTed to `/validate` over TLS once the server exists), exceptions, ADR indexes.

#![allow(dead_code)]

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use kube_baseline::admission::review::decode;
use kube_baseline::admission::{validate, Decision, Snapshot};
use kube_baseline::config::Config;
use kube_baseline::exceptions::{AdrIndex, BaselineException, Loaded, Registry};
use serde_json::{json, Value};

/// The fixed "now" of the tests.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap()
}

pub fn days(n: i64) -> DateTime<Utc> {
    now() + Duration::days(n)
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub const ADRS: &str = "adrs:
- {id: ADR-0042, title: Legacy nginx, status: accepted, url: https://git.example/adr/0042.md}
- {id: ADR-0051, title: Importers, status: accepted}
- {id: ADR-0017, title: Old reporting, status: superseded}
- {id: ADR-0060, title: Gateway, status: proposed}
";

pub fn adrs() -> Arc<AdrIndex> {
    Arc::new(AdrIndex::parse(ADRS, "test adrs.yaml").unwrap())
}

/// A `BaselineException` object as JSON, valid against [`ADRS`] at [`now`].
pub fn exception_json(name: &str) -> Value {
    json!({
        "apiVersion": "baseline.localplus.io/v1",
        "kind": "BaselineException",
        "metadata": {"name": name},
        "spec": {
            "adr": "ADR-0042",
            "adrUrl": "https://git.example/adr/0042.md",
            "approvedBy": "jane@platform",
            "reason": "nginx 1.18 writes to /var/cache; migration planned Q2",
            "policies": ["read-only-root-filesystem"],
            "match": {
                "namespaces": ["payments"],
                "kinds": ["Deployment"],
                "names": ["legacy-nginx*"],
                "containers": ["nginx"]
            },
            "expires": rfc3339(days(120)),
        }
    })
}

/// Edit a JSON value with a closure (fixtures read as "the default, except ...").
pub fn with(mut v: Value, edit: impl FnOnce(&mut Value)) -> Value {
    edit(&mut v);
    v
}

pub fn exception(v: Value) -> BaselineException {
    serde_json::from_value(v).unwrap()
}

pub fn registry_of(objects: Vec<Value>, config: &Config, at: DateTime<Utc>) -> Registry {
    let loaded = objects.into_iter().map(|v| Loaded {
        origin: "test".into(),
        object: Ok(exception(v)),
    });
    Registry::build(loaded, adrs(), config, at)
}

pub fn snapshot(objects: Vec<Value>) -> Snapshot {
    let config = Config::embedded();
    let exceptions = registry_of(objects, &config, now());
    Snapshot { config, exceptions }
}

/// A Deployment that passes every policy, in the shape the API server sends it.
pub fn deployment(namespace: &str, name: &str, container: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"}
                    },
                    "containers": [{
                        "name": container,
                        "image": "registry.localplus.io/payments/nginx:1.18",
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "resources": {
                            "requests": {"cpu": "100m", "memory": "256Mi"},
                            "limits": {"cpu": "500m", "memory": "512Mi"}
                        },
                        "livenessProbe": {"httpGet": {"path": "/health/live", "port": "http"}},
                        "readinessProbe": {"httpGet": {"path": "/health/ready", "port": "http"}},
                        "securityContext": {
                            "runAsNonRoot": true,
                            "readOnlyRootFilesystem": true,
                            "allowPrivilegeEscalation": false,
                            "capabilities": {"drop": ["ALL"]}
                        }
                    }]
                }
            }
        }
    })
}

/// The Deployment with `readOnlyRootFilesystem: false` (exemptable).
pub fn writable_root(mut d: Value) -> Value {
    d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] =
        json!(false);
    d
}

/// The Deployment without resource limits (never waivable).
pub fn no_limits(mut d: Value) -> Value {
    d["spec"]["template"]["spec"]["containers"][0]["resources"]
        .as_object_mut()
        .unwrap()
        .remove("limits");
    d
}

/// An `admission.k8s.io/v1` AdmissionReview body, as the API server POSTs it.
/// `(group, kind, resource)` of the reviewed object.
pub type Target<'a> = (&'a str, &'a str, &'a str);

pub fn review_body(
    (group, kind, resource): Target<'_>,
    operation: &str,
    namespace: Option<&str>,
    name: &str,
    object: Option<Value>,
    groups: &[&str],
) -> Vec<u8> {
    let mut request = json!({
        "uid": "7f3e2a9c-0d1b-4c7e-9a55-000000000001",
        "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": resource},
        "name": name,
        "operation": operation,
        "userInfo": {"username": "jane", "groups": groups},
        "object": object.clone().unwrap_or(Value::Null),
        "oldObject": if operation == "DELETE" { json!({"kind": kind}) } else { Value::Null },
        "dryRun": false
    });
    if let Some(ns) = namespace {
        request["namespace"] = json!(ns);
    }
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": request
    }))
    .unwrap()
}

pub fn deployment_review(d: Value) -> Vec<u8> {
    let ns = d["metadata"]["namespace"].as_str().unwrap().to_owned();
    let name = d["metadata"]["name"].as_str().unwrap().to_owned();
    review_body(
        ("apps", "Deployment", "deployments"),
        "CREATE",
        Some(&ns),
        &name,
        Some(d),
        &["developers", "system:authenticated"],
    )
}

pub fn exception_review(operation: &str, object: Value, groups: &[&str]) -> Vec<u8> {
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or("x")
        .to_owned();
    let object = (operation != "DELETE").then_some(object);
    review_body(
        (
            "baseline.localplus.io",
            "BaselineException",
            "baselineexceptions",
        ),
        operation,
        None,
        &name,
        object,
        groups,
    )
}

/// Decode a body and run `/validate`'s pure core at `at`.
pub fn run(snapshot: &Snapshot, body: &[u8], at: DateTime<Utc>) -> Decision {
    let request = decode(body).unwrap();
    validate(snapshot, &request, at)
}

pub fn message(d: &Decision) -> String {
    d.response
        .status
        .as_ref()
        .map(|s| s.message.clone())
        .unwrap_or_default()
}

/// Poll `condition` every 20 ms for at most `limit`; the reload under test is asynchronous.
pub async fn eventually(limit: std::time::Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
