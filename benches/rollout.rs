//! Rollout window costs: `record` on the data plane (alone and contended by two threads) and
//! the controller's `snapshot` of a 30 s window. Run: `cargo bench --bench rollout`.

use std::hint::black_box;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::rollout::Window;

const WINDOW: Duration = Duration::from_secs(30);

fn record(c: &mut Criterion) {
    let mut g = c.benchmark_group("window_record");
    let w = Window::new(WINDOW);
    let mut i = 0u64;
    g.bench_function("single_thread", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            // Latencies across a few buckets, one error in 64, one second.
            w.record(
                black_box(1_000),
                i.is_multiple_of(64),
                Duration::from_micros(500 + (i & 0xfff)),
            );
        })
    });
    g.bench_function("contended_2_threads", |b| {
        b.iter_custom(|iters| {
            let w = Window::new(WINDOW);
            let start = Barrier::new(2);
            // Both threads hammer the same second (the same cache lines): the worst case.
            let per_thread: Vec<Duration> = thread::scope(|s| {
                let hs: Vec<_> = (0..2u64)
                    .map(|t| {
                        let (w, start) = (&w, &start);
                        s.spawn(move || {
                            start.wait();
                            let t0 = Instant::now();
                            for i in 0..iters {
                                let j = i.wrapping_mul(2).wrapping_add(t);
                                w.record(
                                    black_box(1_000),
                                    j % 64 == 0,
                                    Duration::from_micros(500 + (j & 0xfff)),
                                );
                            }
                            t0.elapsed()
                        })
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().unwrap_or_default())
                    .collect()
            });
            // Cost of one call as one thread sees it while the other records too.
            per_thread.into_iter().max().unwrap_or_default()
        })
    });
    g.finish();
}

fn snapshot(c: &mut Criterion) {
    let w = Window::new(WINDOW);
    for sec in 1_000..1_030u64 {
        for i in 0..2_000u64 {
            w.record(
                sec,
                i % 50 == 0,
                Duration::from_micros(200 + i * 97 % 400_000),
            );
        }
    }
    c.bench_function("window_snapshot_30s", |b| {
        b.iter(|| black_box(w.snapshot(black_box(1_029), WINDOW)))
    });
}

criterion_group!(benches, record, snapshot);
criterion_main!(benches);
