//! The whole webhook over real TLS on 127.0.0.1, as the API server calls it: denials with
//! causes, warnings, and the mutation patch on the wire.
//!
//! There is no kube-apiserver on this machine: the reviews are built by the test helpers in
//! the shape the API server sends (see tests/data/apiserver/ for captured ones).

mod common;
#[path = "server/support.rs"]
#[allow(dead_code)]
mod support;

use base64::Engine as _;
use hyper::StatusCode;
use serde_json::{json, Value};

use kube_baseline::workload::WorkloadKind;
use support::{Conn, TestServer};

async fn post(ts: &TestServer, h2: bool, path: &str, body: &[u8]) -> Value {
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let mut conn = Conn::open(ts.addr(), ts.client(alpn)).await;
    let answer = conn.post_review(path, body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    support::json(&answer.body)
}

fn violating_deployment() -> Value {
    let mut pod = common::compliant_pod();
    pod["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = json!(false);
    pod["spec"]["containers"][0]["resources"]
        .as_object_mut()
        .unwrap()
        .remove("limits");
    common::workload(WorkloadKind::Deployment, "api", "shop", &pod, Some(2))
}

#[tokio::test]
async fn a_violating_deployment_is_denied_with_one_message_and_a_cause_per_finding() {
    let ts = TestServer::start().await;
    for h2 in [true, false] {
        let review = post(
            &ts,
            h2,
            "/validate?timeout=10s",
            &common::create(&violating_deployment()),
        )
        .await;
        let response = &review["response"];
        assert_eq!(response["allowed"], false);
        let status = &response["status"];
        assert_eq!(status["code"], 403);
        assert_eq!(status["reason"], "Forbidden");
        let message = status["message"].as_str().unwrap();
        assert!(
            message
                .starts_with("Deployment shop/api violates the platform baseline (3 violations):"),
            "{message}"
        );
        assert!(
            message.contains("Never waivable: resource-limits."),
            "{message}"
        );
        let fields: Vec<&str> = status["details"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "spec.template.spec.containers[0].securityContext.runAsNonRoot",
                "spec.template.spec.containers[0].resources.limits.cpu",
                "spec.template.spec.containers[0].resources.limits.memory",
            ]
        );
    }
}

#[tokio::test]
async fn a_warn_mode_finding_is_allowed_with_a_warning() {
    let ts = TestServer::start().await;
    let mut pod = common::compliant_pod();
    pod["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("livenessProbe");
    // dev-* runs health-probes in warn (the embedded policies/baseline.yaml).
    let object = common::workload(WorkloadKind::Deployment, "api", "dev-shop", &pod, Some(2));
    let review = post(&ts, true, "/validate?timeout=10s", &common::create(&object)).await;
    assert_eq!(review["response"]["allowed"], true);
    assert_eq!(
        review["response"]["warnings"],
        // The fix does not fit in the 120 characters the API server keeps: it is dropped.
        json!(["health-probes: spec.template.spec.containers[0].livenessProbe: no livenessProbe"])
    );
}

#[tokio::test]
async fn mutate_answers_a_base64_json_patch_that_fills_the_defaults() {
    let ts = TestServer::start().await;
    let mut pod = common::compliant_pod();
    pod["spec"]["containers"][0]["securityContext"]
        .as_object_mut()
        .unwrap()
        .remove("readOnlyRootFilesystem");
    let object = common::workload(WorkloadKind::Deployment, "api", "shop", &pod, Some(2));
    let review = post(&ts, true, "/mutate?timeout=10s", &common::create(&object)).await;
    let response = &review["response"];
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(
            response["patch"]
                .as_str()
                .expect("patch is a base64 string"),
        )
        .unwrap();
    let patch: Value = serde_json::from_slice(&patch).unwrap();
    assert_eq!(
        patch,
        json!([{"op": "add", "path": "/spec/template/spec/containers/0/securityContext/readOnlyRootFilesystem", "value": true}])
    );

    // The patched object needs nothing more.
    let mut patched = object.clone();
    let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
    json_patch::patch(&mut patched, &patch).unwrap();
    let again = post(&ts, false, "/mutate?timeout=10s", &common::create(&patched)).await;
    assert!(again["response"].get("patch").is_none(), "{again}");
    assert!(again["response"].get("patchType").is_none(), "{again}");
}
