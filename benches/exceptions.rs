//! The cost of exceptions on a review: the same Deployment reviews with no exceptions and
//! with 10,000 exceptions in 1,000 namespaces (10 in the review's namespace, one of which
//! waives its finding), the violating one also in a namespace that has none of them (the
//! same answer as with no exceptions: what a large registry costs by itself), plus the cost
//! of building a registry of 10,000 (what a source pays on each change).
//!
//! `cargo bench --bench exceptions`

/// The allocator of the `kube-baseline` binary, so that these figures are the server's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::hint::black_box;
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use kube_baseline::admission::review::{decode, decode_review};
use kube_baseline::admission::{validate, validate_decoded, Snapshot, Verdict};
use kube_baseline::config::Config;
use kube_baseline::exceptions::{AdrIndex, Loaded, Registry};
use serde_json::{json, Value};

const NAMESPACES: usize = 1_000;
const PER_NAMESPACE: usize = 10;

fn exception(i: usize, namespace: &str, expires: &str) -> Loaded {
    let v = json!({
        "apiVersion": "baseline.localplus.io/v1",
        "kind": "BaselineException",
        "metadata": {"name": format!("adr-0042-{i}")},
        "spec": {
            "adr": "ADR-0042",
            "reason": "benchmark",
            "policies": ["read-only-root-filesystem"],
            "match": {
                "namespaces": [namespace],
                "kinds": ["Deployment"],
                "names": [format!("app-{}*", i % PER_NAMESPACE)],
                "containers": ["nginx"]
            },
            "expires": expires,
        }
    });
    Loaded {
        origin: "bench".into(),
        object: Ok(serde_json::from_value(v).unwrap()),
    }
}

fn exceptions(expires: &str) -> Vec<Loaded> {
    (0..NAMESPACES * PER_NAMESPACE)
        .map(|i| exception(i, &format!("team-{}", i / PER_NAMESPACE), expires))
        .collect()
}

fn review(read_only_root: bool, namespace: &str) -> Vec<u8> {
    let deployment: Value = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "app-3", "namespace": namespace, "labels": {"app": "app-3"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "app-3"}},
          "template": {"metadata": {"labels": {"app": "app-3"}}, "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "nginx", "image": "registry.localplus.io/nginx:1.18",
              "ports": [{"name": "http", "containerPort": 8080}],
              "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
              "livenessProbe": {"httpGet": {"path": "/health/live", "port": "http"}},
              "readinessProbe": {"httpGet": {"path": "/health/ready", "port": "http"}},
              "securityContext": {"runAsNonRoot": true, "readOnlyRootFilesystem": read_only_root,
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}}}
    });
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "bench", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
          "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
          "namespace": namespace, "name": "app-3", "operation": "CREATE",
          "userInfo": {"username": "dev", "groups": ["developers"]}, "object": deployment}
    }))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let now = Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap();
    let expires = (now + Duration::days(90))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let adrs = Arc::new(
        AdrIndex::parse(
            "adrs:\n- {id: ADR-0042, title: bench, status: accepted}\n",
            "bench",
        )
        .unwrap(),
    );
    let config = Config::embedded();
    let none = Snapshot::new(config.clone());
    let many = Snapshot {
        exceptions: Registry::build(exceptions(&expires), Arc::clone(&adrs), &config, now),
        config: config.clone(),
    };
    assert_eq!(
        many.exceptions.exceptions().len(),
        NAMESPACES * PER_NAMESPACE
    );

    let violating = review(false, "team-500");
    let compliant = review(true, "team-500");
    let elsewhere = review(false, "shop");
    let request = decode(&violating).unwrap();
    assert_eq!(validate(&none, &request, now).verdict, Verdict::Denied);
    assert_eq!(validate(&many, &request, now).verdict, Verdict::Warned);
    let request = decode(&elsewhere).unwrap();
    assert_eq!(
        validate(&none, &request, now).response,
        validate(&many, &request, now).response
    );

    let mut group = c.benchmark_group("review");
    for (label, snapshot, body) in [
        ("violating/0 exceptions", &none, &violating),
        (
            "violating/10000 exceptions, one waives it",
            &many,
            &violating,
        ),
        ("violating elsewhere/0 exceptions", &none, &elsewhere),
        ("violating elsewhere/10000 exceptions", &many, &elsewhere),
        ("compliant/0 exceptions", &none, &compliant),
        ("compliant/10000 exceptions", &many, &compliant),
    ] {
        group.bench_function(label, |b| {
            b.iter(|| {
                let review = decode_review(black_box(body)).unwrap();
                black_box(validate_decoded(
                    snapshot,
                    &review.request,
                    review.workload,
                    now,
                ))
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("registry");
    group.sample_size(10);
    group.bench_function("build 10000 exceptions", |b| {
        b.iter_batched(
            || exceptions(&expires),
            |loaded| black_box(Registry::build(loaded, Arc::clone(&adrs), &config, now)),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
