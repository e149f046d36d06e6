//! A cache hit of the image-signature verifier: a pinned image verified a moment ago, as
//! `/validate` sees it after `/mutate` pinned it. The image is built, pushed to a real
//! `docker-registry` on loopback and signed first; the measured loop never reaches it.

#[path = "../tests/signature/harness.rs"]
mod harness;

/// The allocator of the `kube-baseline` binary, so that these figures are the server's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use kube_baseline::config::Config;
use kube_baseline::signature::Verifier;
use prometheus_client::registry::Registry;

fn cache_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let registry = harness::TestRegistry::start();
    let key = harness::TestKey::generate();
    let digest = rt.block_on(async {
        let d = registry.push_image("bench/app", "1.0", "bench").await;
        registry.sign("bench/app", &d, &key).await;
        d
    });
    let yaml = format!(
        "policies:\n  image-signature:\n    mode: enforce\n    registries:\n      \"{}\": {{insecure: true}}\n    authorities:\n      - name: release\n        key: |\n          {}\n",
        registry.host(),
        key.public_pem.trim_end().replace('\n', "\n          ")
    );
    let config = Config::parse(&yaml, "bench").expect("config");
    let verifier = Verifier::new(&config.policies.image_signature, &mut Registry::default())
        .expect("verifier");
    let image = format!("{}/bench/app:1.0@{digest}", registry.host());
    let deadline = || tokio::time::Instant::now() + Duration::from_secs(5);
    assert!(rt
        .block_on(verifier.verify(&image, deadline()))
        .is_allowed());
    let hits = verifier.metrics().cache_requests("hit");

    c.bench_function("signature_cache_hit", |b| {
        b.iter(|| rt.block_on(verifier.verify(std::hint::black_box(&image), deadline())))
    });
    assert!(
        verifier.metrics().cache_requests("hit") > hits,
        "the loop hit the cache"
    );
}

criterion_group!(benches, cache_hit);
criterion_main!(benches);
