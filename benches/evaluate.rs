//! decode + evaluate + encode of one AdmissionReview: the webhook's own time per review.
//! `cargo bench --bench evaluate`. Target: under 20 µs per Deployment review.

#[path = "../tests/common/mod.rs"]
mod common;

/// The allocator of the `kube-baseline` binary, so that these figures are the server's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::hint::black_box;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;

use kube_baseline::admission::review::decode_review;
use kube_baseline::admission::{validate_decoded, Snapshot};
use kube_baseline::config::Config;
use kube_baseline::workload::WorkloadKind;

fn reviews() -> Vec<(&'static str, Vec<u8>)> {
    let pod = common::compliant_pod();
    let mut bad = pod.clone();
    bad["spec"]["containers"][0]["securityContext"] = json!({"runAsUser": 0});
    bad["spec"]["containers"][1]["resources"] = json!({});
    bad["spec"]["hostNetwork"] = json!(true);
    let captured =
        std::fs::read("tests/data/apiserver/create-deployment-validate.json").expect("fixture");
    // The fixture is indented for reading; the API server sends compact JSON.
    let compact = serde_json::to_vec(
        &serde_json::from_slice::<serde_json::Value>(&captured).expect("fixture is JSON"),
    )
    .expect("re-encode");
    vec![
        ("deployment-captured", captured),
        ("deployment-captured-compact", compact),
        (
            "deployment-2-containers-compliant",
            common::create(&common::workload(
                WorkloadKind::Deployment,
                "api",
                "shop",
                &pod,
                Some(2),
            )),
        ),
        (
            "deployment-2-containers-violating",
            common::create(&common::workload(
                WorkloadKind::Deployment,
                "api",
                "shop",
                &bad,
                Some(2),
            )),
        ),
        (
            "pod",
            common::create(&common::workload(
                WorkloadKind::Pod,
                "api",
                "shop",
                &pod,
                None,
            )),
        ),
        (
            "cronjob",
            common::create(&common::workload(
                WorkloadKind::CronJob,
                "report",
                "shop",
                &pod,
                None,
            )),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let snapshot = Snapshot::new(Config::embedded());
    let mut group = c.benchmark_group("validate");
    for (name, body) in reviews() {
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| {
            b.iter(|| {
                let review = decode_review(black_box(&body)).unwrap();
                let decision =
                    validate_decoded(&snapshot, &review.request, review.workload, Utc::now());
                decision.response.review().to_json()
            })
        });
    }
    group.finish();

    // Where the time of one review goes, step by step, on the built compliant Deployment:
    // what the no-op reference does (decode skipping the object), the typed decode, then
    // evaluation (its `validate` case above adds the encoded answer).
    let (_, body) = reviews()
        .into_iter()
        .find(|(name, _)| *name == "deployment-2-containers-compliant")
        .expect("the built compliant Deployment");
    let body = &body;
    let mut group = c.benchmark_group("steps");
    group.bench_function("decode-as-the-no-op", |b| {
        b.iter(|| kube_baseline::admission::review::decode_envelope(black_box(body)).unwrap())
    });
    group.bench_function("decode", |b| {
        b.iter(|| decode_review(black_box(body)).unwrap())
    });
    group.bench_function("decode-validate", |b| {
        b.iter(|| {
            let review = decode_review(black_box(body)).unwrap();
            validate_decoded(&snapshot, &review.request, review.workload, Utc::now())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
