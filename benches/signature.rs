//! The image-signature verifier. The image is built, pushed to a real `docker-registry` on
//! loopback and signed first.
//!
//! - `signature_cache_hit`: a pinned image verified a moment ago, as `/validate` sees it after
//!   `/mutate` pinned it; the measured loop never reaches the registry.
//! - `signature_cache_miss`: a digest the cache no longer holds (its entries kept 1 ms), as
//!   for a new image or after `cache.ttl`: the manifests and the signature fetched from the
//!   registry over the verifier's open connections, and the signature checked against the
//!   key.
//! - `signature_cache_miss_new_verifier`: the same through a verifier that has never called
//!   the registry, as after a restart: new connections too. The verifier is built outside
//!   the measured time.
//!
//! It also prints the first verification of the process, which pays once for what the
//! crypto library sets up on first use.

#[path = "../tests/signature/harness.rs"]
mod harness;

/// The allocator of the `kube-baseline` binary, so that these figures are the server's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use kube_baseline::config::Config;
use kube_baseline::signature::Verifier;
use prometheus_client::registry::Registry;

fn verifier(c: &mut Criterion) {
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
    let fresh = || {
        Verifier::new(&config.policies.image_signature, &mut Registry::default()).expect("verifier")
    };
    let verifier = fresh();
    let forgetful = Config::parse(&format!("{yaml}    cache:\n      ttl: 1ms\n"), "bench")
        .expect("config with a 1 ms cache");
    let forgetful = Verifier::new(
        &forgetful.policies.image_signature,
        &mut Registry::default(),
    )
    .expect("verifier");
    let image = format!("{}/bench/app:1.0@{digest}", registry.host());
    let deadline = || tokio::time::Instant::now() + Duration::from_secs(5);
    let first = std::time::Instant::now();
    assert!(rt
        .block_on(verifier.verify(&image, deadline()))
        .is_allowed());
    println!(
        "first verification of the process (a cache miss): {:.2} ms",
        first.elapsed().as_secs_f64() * 1e3
    );
    let hits = verifier.metrics().cache_requests("hit");

    // Whether each bench ran: a filter on the command line may skip it.
    let ran = std::cell::Cell::new(false);
    c.bench_function("signature_cache_hit", |b| {
        ran.set(true);
        b.iter(|| rt.block_on(verifier.verify(std::hint::black_box(&image), deadline())))
    });
    assert!(
        !ran.replace(false) || verifier.metrics().cache_requests("hit") > hits,
        "the loop hit the cache"
    );

    c.bench_function("signature_cache_miss", |b| {
        ran.set(true);
        // The wait for the entry to expire is the setup, outside the measured time.
        b.iter_batched(
            || std::thread::sleep(Duration::from_millis(2)),
            |()| {
                let verdict = rt.block_on(forgetful.verify(&image, deadline()));
                assert!(verdict.is_allowed(), "{verdict:?}");
            },
            BatchSize::PerIteration,
        )
    });
    assert!(
        !ran.get() || forgetful.metrics().cache_requests("miss") > 0,
        "the loop missed the cache"
    );
    assert_eq!(
        forgetful.metrics().cache_requests("hit"),
        0,
        "every verification missed the cache"
    );

    c.bench_function("signature_cache_miss_new_verifier", |b| {
        b.iter_batched(
            fresh,
            |cold| {
                let verdict = rt.block_on(cold.verify(&image, deadline()));
                assert!(verdict.is_allowed(), "{verdict:?}");
                assert_eq!(cold.metrics().cache_requests("miss"), 1, "a cache miss");
                cold
            },
            BatchSize::PerIteration,
        )
    });
}

criterion_group!(benches, verifier);
criterion_main!(benches);
