//! The metrics every review updates, from two threads at once as the two workers do: the
//! duration histogram and the requests counter as prometheus-client keeps them (one lock or
//! one atomic per series) against the per-thread shards of `kube_baseline::metrics`.
//!
//! Each measured iteration is one update on each of two threads running in parallel
//! (criterion's `iter_custom`: both threads update `iters` times, the slower one's time counts).

/// The allocator of the `kube-baseline` binary, so that these figures are the server's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use kube_baseline::metrics::{ShardedCounter, ShardedHistogram, DURATION_BUCKETS};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

/// `update` `iters` times on each of two threads at once; the longer of the two times.
fn two_threads(iters: u64, update: impl Fn() + Sync) -> Duration {
    let start = Barrier::new(2);
    std::thread::scope(|scope| {
        let run = || {
            start.wait();
            let began = Instant::now();
            for _ in 0..iters {
                update();
            }
            began.elapsed()
        };
        let other = scope.spawn(run);
        let mine = run();
        mine.max(other.join().expect("thread"))
    })
}

fn updates(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics, two threads");
    // A review's duration, in the second bucket.
    let observed = 0.00018;
    let shared = Histogram::new(DURATION_BUCKETS);
    group.bench_function("histogram: prometheus-client", |b| {
        b.iter_custom(|iters| two_threads(iters, || shared.observe(observed)))
    });
    let sharded = ShardedHistogram::new(&DURATION_BUCKETS);
    group.bench_function("histogram: sharded", |b| {
        b.iter_custom(|iters| two_threads(iters, || sharded.observe(observed)))
    });
    let shared: Counter = Counter::default();
    group.bench_function("counter: prometheus-client", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                shared.inc();
            })
        })
    });
    let sharded = ShardedCounter::default();
    group.bench_function("counter: sharded", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                sharded.inc();
            })
        })
    });
    group.finish();
}

criterion_group!(benches, updates);
criterion_main!(benches);
