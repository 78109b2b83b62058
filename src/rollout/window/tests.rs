use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::*;

const MS: Duration = Duration::from_millis(1);

/// Deterministic xorshift64*, so the accuracy tests are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

/// Sum of every histogram cell counted for the trailing window (the snapshot only exposes p99).
fn latency_total(w: &Window, now: u64, secs: u64) -> u64 {
    let len = w.slots.len() as u64;
    (now + 1 - secs..=now)
        .map(|s| {
            w.slots[(s % len) as usize]
                .latency
                .iter()
                .map(|c| read(c, s as u32))
                .sum::<u64>()
        })
        .sum()
}

#[test]
fn counts_the_trailing_window_inclusive_of_now() {
    let w = Window::new(Duration::from_secs(30));
    assert_eq!(w.max_window_secs(), 30);
    for sec in 100..=130 {
        w.record(sec, sec % 10 == 0, MS);
    }
    // Seconds 101..=130: 30 requests, errors at 110, 120, 130.
    let s = w.snapshot(130, Duration::from_secs(30));
    assert_eq!((s.requests, s.errors), (30, 3));
    let s = w.snapshot(130, Duration::from_secs(5));
    assert_eq!((s.requests, s.errors), (5, 1));
    // A fractional window rounds up to whole seconds.
    assert_eq!(w.snapshot(130, Duration::from_millis(4500)).requests, 5);
    // Longer than the ring: clamped to what the ring holds.
    assert_eq!(w.snapshot(130, Duration::from_secs(3600)).requests, 30);
    // Nothing recorded yet for the future.
    assert_eq!(
        w.snapshot(200, Duration::from_secs(30)),
        WindowStats::default()
    );
}

#[test]
fn early_seconds_do_not_underflow() {
    let w = Window::new(Duration::from_secs(30));
    w.record(0, true, MS);
    w.record(2, false, MS);
    let s = w.snapshot(2, Duration::from_secs(30));
    assert_eq!((s.requests, s.errors), (2, 1));
    assert_eq!(w.snapshot(0, Duration::from_secs(30)).requests, 1);
}

#[test]
fn slot_is_reused_after_the_ring_wraps() {
    let w = Window::new(Duration::from_secs(10)); // 12 slots
    let len = w.slots.len() as u64;
    assert_eq!(len, 12);
    for _ in 0..5 {
        w.record(40, true, Duration::from_secs(10));
    }
    let reuse = 40 + len;
    for _ in 0..3 {
        w.record(reuse, false, MS);
    }
    let s = w.snapshot(reuse, Duration::from_secs(10));
    assert_eq!(
        (s.requests, s.errors),
        (3, 0),
        "second 40's counts are gone, not added"
    );
    let p99 = s.p99.unwrap();
    assert!(p99 < 2 * MS, "the old 10 s latencies are gone too: {p99:?}");
    assert_eq!(latency_total(&w, reuse, 10), 3);
    // And second 40 can no longer be read back: its slot belongs to another second now.
    assert_eq!(w.snapshot(40, Duration::from_secs(1)).requests, 0);
}

#[test]
fn window_keeps_old_seconds_until_they_are_overwritten() {
    let w = Window::new(Duration::from_secs(10));
    w.record(50, false, MS);
    // Seconds 51..=59 have no traffic; second 50 leaves the 10 s window at 60.
    assert_eq!(w.snapshot(59, Duration::from_secs(10)).requests, 1);
    assert_eq!(w.snapshot(60, Duration::from_secs(10)).requests, 0);
}

#[test]
fn concurrent_recording_is_exact() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 60_000;
    let w = Arc::new(Window::new(Duration::from_secs(10)));
    let len = w.slots.len() as u64;
    let base = 1_000;
    // Old data in every slot, so the first write of each second races to replace it.
    for sec in base - len..base {
        for _ in 0..7 {
            w.record(sec, true, Duration::from_secs(1));
        }
    }
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let w = Arc::clone(&w);
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    // Threads walk the same ten seconds from different offsets.
                    let sec = base + (i / 100 + t * 3) % 10;
                    w.record(sec, i % 7 == 0, Duration::from_micros(100 + i % 5000));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = w.snapshot(base + 9, Duration::from_secs(10));
    let errors_per_thread = PER_THREAD.div_ceil(7);
    assert_eq!(s.requests, THREADS * PER_THREAD);
    assert_eq!(s.errors, THREADS * errors_per_thread);
    assert_eq!(latency_total(&w, base + 9, 10), THREADS * PER_THREAD);
}

/// p99 against the exact nearest-rank p99 of the same sample.
fn check_p99(samples: &[Duration], spread_over_secs: u64) {
    let w = Window::new(Duration::from_secs(60));
    let start = 5_000;
    for (i, &d) in samples.iter().enumerate() {
        w.record(start + i as u64 % spread_over_secs, false, d);
    }
    let now = start + spread_over_secs - 1;
    let got = w
        .snapshot(now, Duration::from_secs(spread_over_secs))
        .p99
        .unwrap()
        .as_secs_f64();
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = (0.99 * sorted.len() as f64).ceil() as usize;
    let want = sorted[rank - 1].as_secs_f64();
    let err = (got - want).abs() / want;
    // The documented bound is 1/32 plus microsecond truncation; the contract is 5%.
    assert!(
        err <= 0.05,
        "p99 {got} vs exact {want}: {:.2}%",
        err * 100.0
    );
    assert!(
        err <= 1.0 / 32.0 + 0.001,
        "p99 {got} vs exact {want}: {:.2}%",
        err * 100.0
    );
}

#[test]
fn p99_is_within_five_percent_of_the_exact_quantile() {
    for seed in 1..=8u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        // Log-normal around 20 ms (σ = 1): a long tail, typical of service latency.
        let lognormal: Vec<Duration> = (0..20_000)
            .map(|_| {
                let (u1, u2) = (rng.unit(), rng.unit());
                let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                Duration::from_secs_f64(0.020 * normal.exp())
            })
            .collect();
        check_p99(&lognormal, 30);
        // Uniform 1 ms .. 60 s: every octave of the range.
        let uniform: Vec<Duration> = (0..5_000)
            .map(|_| Duration::from_secs_f64(0.001 + rng.unit() * 59.999))
            .collect();
        check_p99(&uniform, 7);
        // Pareto (α = 1.5) from 2 ms, capped below the overflow bucket.
        let pareto: Vec<Duration> = (0..10_000)
            .map(|_| Duration::from_secs_f64((0.002 / rng.unit().powf(1.0 / 1.5)).min(60.0)))
            .collect();
        check_p99(&pareto, 1);
    }
}

#[test]
fn overflow_reports_the_top_of_the_range() {
    let w = Window::new(Duration::from_secs(1));
    w.record(9, false, Duration::from_secs(600));
    let p99 = w.snapshot(9, Duration::from_secs(1)).p99.unwrap();
    assert_eq!(p99, Duration::from_micros(1 << 26));
}

#[test]
fn rollout_windows_keep_variants_apart() {
    let rw = RolloutWindows::new(Duration::from_secs(30));
    rw.record(Variant::Canary, 10, true, MS);
    rw.record(Variant::Stable, 10, false, MS);
    rw.record(Variant::Stable, 10, false, MS);
    assert_eq!(rw.canary.snapshot(10, Duration::from_secs(30)).errors, 1);
    assert_eq!(
        rw.get(Variant::Stable)
            .snapshot(10, Duration::from_secs(30))
            .requests,
        2
    );
    assert_eq!(Variant::Canary.as_str(), "canary");
}

#[test]
fn stats_serialize_p99_in_milliseconds() {
    let s = WindowStats {
        requests: 3,
        errors: 1,
        p99: Some(Duration::from_micros(1500)),
    };
    let j = serde_json::to_value(s).unwrap();
    assert_eq!(
        j,
        serde_json::json!({ "requests": 3, "errors": 1, "p99": 1.5 })
    );
}
