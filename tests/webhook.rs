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

/// A violating Deployment in `payments`: writable root filesystem in container "app", and,
/// when `without_limits`, no limits either.
fn payments_deployment(without_limits: bool) -> Value {
    let mut pod = common::compliant_pod();
    pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = json!(false);
    if without_limits {
        pod["spec"]["containers"][0]["resources"]
            .as_object_mut()
            .unwrap()
            .remove("limits");
    }
    common::workload(
        WorkloadKind::Deployment,
        "legacy-api",
        "payments",
        &pod,
        Some(2),
    )
}

fn exception_yaml(expires: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "apiVersion: baseline.localplus.io/v1\nkind: BaselineException\nmetadata:\n  name: adr-0042-legacy-api\nspec:\n  adr: ADR-0042\n  adrUrl: https://git.localplus.io/platform/adr/blob/main/0042-legacy-nginx.md\n  approvedBy: jane@platform\n  reason: writes to /var/cache until the Q2 migration\n  policies: [read-only-root-filesystem]\n  match:\n    namespaces: [payments]\n    names: ['legacy-*']\n    containers: [app]\n  expires: \"{}\"\n",
        expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

/// Poll the webhook until `done` holds for its answer, for at most 60 s (the file source
/// reloads on a change notification; expiry is a matter of the clock).
async fn until(ts: &TestServer, body: &[u8], what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let review = post(ts, true, "/validate?timeout=10s", body).await;
        if done(&review["response"]) {
            return review;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "never {what}: last answer {review}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_exception_file_waives_until_it_expires_and_never_waives_resource_limits() {
    let dir = tempfile::tempdir().unwrap();
    let exceptions = dir.path().join("exceptions");
    std::fs::create_dir(&exceptions).unwrap();
    let adrs = dir.path().join("adrs.yaml");
    std::fs::copy("policies/adrs.yaml", &adrs).unwrap();
    let source = kube_baseline::server::ExceptionSource::Files {
        dir: exceptions.clone(),
        adrs,
    };
    let ts = TestServer::start_with(|s| s.exceptions = source).await;
    support::eventually("the exception source syncs", || async {
        support::ops_get(ts.server.ops_addr, "/health/ready")
            .await
            .0
            == StatusCode::OK
    })
    .await;

    let body = common::create(&payments_deployment(false));
    let denied = post(&ts, true, "/validate?timeout=10s", &body).await;
    assert_eq!(denied["response"]["allowed"], false);

    // Expires in a few seconds: valid when written, expired soon after. 15 s leaves a slow
    // machine time to reload the file and answer before it expires.
    let expires = chrono::Utc::now() + chrono::Duration::seconds(15);
    std::fs::write(exceptions.join("adr-0042.yaml"), exception_yaml(expires)).unwrap();
    let allowed = until(&ts, &body, "allowed by the exception", |r| {
        r["allowed"] == true
    })
    .await;
    let response = &allowed["response"];
    let warnings: Vec<&str> = response["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings.iter().any(|w| w.starts_with(
            "read-only-root-filesystem waived for container \"app\" by ADR-0042 until"
        )),
        "{warnings:?}"
    );
    assert_eq!(response["auditAnnotations"]["waived-by"], "ADR-0042");

    // resource-limits is never waived, even with the exception in place.
    let both = post(
        &ts,
        true,
        "/validate?timeout=10s",
        &common::create(&payments_deployment(true)),
    )
    .await;
    assert_eq!(both["response"]["allowed"], false);
    let message = both["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("[resource-limits]"), "{message}");
    assert!(
        !message.contains("[read-only-root-filesystem]"),
        "{message}"
    );

    // Once expired, the same review is denied again and the message says why.
    let expired = until(&ts, &body, "denied after expiry", |r| r["allowed"] == false).await;
    let message = expired["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("adr-0042-legacy-api (ADR-0042) matches but waives nothing"),
        "{message}"
    );
    assert!(message.contains("expired"), "{message}");

    let (_, metrics) = support::ops_get(ts.server.ops_addr, "/metrics").await;
    assert!(
        metrics.contains(
            r#"kube_baseline_waivers_total{adr="ADR-0042",policy="read-only-root-filesystem"}"#
        ),
        "{metrics}"
    );
}
