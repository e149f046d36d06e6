//! `/mutate` on a bare Deployment with two containers: decode the AdmissionReview, build the
//! defaults patch, encode the response, as the server does per request (no I/O).

/// The allocator of the `kube-baseline` binary, so that these figures are the server's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::hint::black_box;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kube_baseline::admission::review::decode_review;
use kube_baseline::admission::{mutate_decoded, Snapshot};
use kube_baseline::config::Config;
use serde_json::json;

fn bare_deployment_review() -> Vec<u8> {
    let container =
        |name: &str| json!({ "name": name, "image": format!("registry.example/{name}:1.0") });
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0df28fbd-5f5f-4bd6-a9c2-1a3b5c7d9e0f",
            "kind": { "group": "apps", "version": "v1", "kind": "Deployment" },
            "resource": { "group": "apps", "version": "v1", "resource": "deployments" },
            "name": "web",
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": { "username": "dev@example.com", "groups": ["system:authenticated"] },
            "object": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": { "name": "web", "namespace": "shop", "labels": { "app": "web" } },
                "spec": {
                    "replicas": 2,
                    "selector": { "matchLabels": { "app": "web" } },
                    "template": {
                        "metadata": { "labels": { "app": "web" } },
                        "spec": { "containers": [container("app"), container("sidecar")] }
                    }
                }
            },
            "oldObject": null
        }
    }))
    .expect("review serialises")
}

fn bench(c: &mut Criterion) {
    let snapshot = Snapshot::new(Config::embedded());
    let body = bare_deployment_review();
    let now = Utc::now();
    let mut group = c.benchmark_group("mutate");
    group.throughput(Throughput::Elements(1));
    group.bench_function("bare_deployment_2_containers", |b| {
        b.iter(|| {
            let review = decode_review(black_box(&body)).expect("review decodes");
            let decision = mutate_decoded(&snapshot, &review.request, review.workload, now);
            assert!(decision.response.patch.is_some());
            decision.response.review().to_json()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
