//! The verdict methods in a seeded simulation (`sluice::rollout::simulation`): false rollbacks
//! of healthy canaries (A/A) and time to roll back bad ones, for the README's table.
//!
//! ```text
//! cargo run --release --example rollout_sim [ROLLOUTS] [THREADS] [headline|aa]
//! ```
//!
//! ROLLOUTS (default 1000) rollouts per A/A cell and per 30%-failure cell; a fifth of that
//! for the +3δ cells, which run up to an hour each. Every rollout holds the canary at 10%
//! (stable gets nine times the canary's traffic), `max_error_rate_increase: 0.01`,
//! `confidence: 0.99`, `max_error_rate: 0.05` (0.10 at a 5% baseline), `min_requests: 50`,
//! `interval: 1s`, `window: 30s`. Seeds are the rollout's index: the table is reproducible.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sluice::config::Dur;
use sluice::config::traffic::Analysis;
use sluice::rollout::simulation::{Method, Scenario, TICK_MS, Trial, run, run_every};

const HOUR_MS: u64 = 3_600_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let rollouts: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let only = args.next().unwrap_or_default();
    let started = Instant::now();
    if only == "headline" {
        headline(rollouts, threads);
        return;
    }
    if only == "aa" {
        // The sequential A/A cells alone (the slow part of the table), for a quick check.
        for baseline in [0.001, 0.01, 0.05] {
            for rps in [1.0, 30.0, 300.0] {
                let s = scenario(Method::Sequential, baseline, rps, baseline, None, HOUR_MS);
                let trials = run_many(&s, rollouts, threads);
                let fails = trials.iter().filter(|t| t.rolled_back_at_ms.is_some());
                println!(
                    "A/A sequential {} at {rps} canary req/s: {} of {rollouts} rolled back",
                    pct(baseline),
                    fails.count()
                );
            }
        }
        eprintln!("({:.0} s)", started.elapsed().as_secs_f64());
        return;
    }

    println!("A/A: canary = stable, 1 h rollouts, false rollbacks per 1,000 ({rollouts} runs)");
    println!(
        "{:<9} {:>11} {:>14} {:>14}",
        "baseline", "canary rps", "sequential", "z_test"
    );
    for baseline in [0.001, 0.01, 0.05] {
        for rps in [1.0, 30.0, 300.0] {
            let mut row = Vec::new();
            for method in [Method::Sequential, Method::ZTest] {
                let s = scenario(method, baseline, rps, baseline, None, HOUR_MS);
                let trials = run_many(&s, rollouts, threads);
                let fails = trials
                    .iter()
                    .filter(|t| t.rolled_back_at_ms.is_some())
                    .count();
                row.push(format!(
                    "{:.1}",
                    fails as f64 * 1000.0 / trials.len() as f64
                ));
            }
            println!(
                "{:<9} {:>11} {:>14} {:>14}",
                pct(baseline),
                rps,
                row[0],
                row[1]
            );
        }
    }

    println!();
    println!("Time to roll back (sequential; z_test in brackets), median / p99 / max");
    println!(
        "{:<9} {:>11} {:>44} {:>48}",
        "baseline", "canary rps", "+3δ from the start (≤ 1 h)", "30% after 30 s of baseline"
    );
    for baseline in [0.001, 0.01, 0.05] {
        for rps in [1.0, 30.0, 300.0] {
            let bad = baseline + 0.03;
            let drift = [Method::Sequential, Method::ZTest].map(|m| {
                let s = scenario(m, baseline, rps, bad, None, HOUR_MS);
                times(&run_many(&s, (rollouts / 5).max(1), threads), 0)
            });
            let sudden = [Method::Sequential, Method::ZTest]
                .map(|m| onset_times(m, baseline, rps, rollouts, threads, TICK_MS));
            println!(
                "{:<9} {:>11} {:>44} {:>48}",
                pct(baseline),
                rps,
                format!("{} [{}]", drift[0], drift[1]),
                format!("{} [{}]", sudden[0], sudden[1]),
            );
        }
    }

    println!();
    headline(rollouts, threads);
    eprintln!("({:.0} s)", started.elapsed().as_secs_f64());
}

fn headline(rollouts: usize, threads: usize) {
    println!("The issue's case: 30% errors at 10% of 330 req/s after 30 s of clean (0%) history");
    for (name, method, every) in [
        ("Sequential", Method::Sequential, TICK_MS),
        ("(100 ms)", Method::Sequential, 100),
        ("ZTest", Method::ZTest, TICK_MS),
        ("Oracle", Method::Oracle, TICK_MS),
    ] {
        println!(
            "{name:<11} {}",
            onset_times(method, 0.0, 33.0, rollouts, threads, every)
        );
    }
}

/// 30% errors from a random moment 30–31 s in: median / max of onset → rollback, the
/// sequential test evaluated every `every_ms`.
fn onset_times(
    method: Method,
    baseline: f64,
    rps: f64,
    n: usize,
    threads: usize,
    every_ms: u64,
) -> String {
    let mut out = Vec::with_capacity(n);
    let next = AtomicUsize::new(0);
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                sc.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return mine;
                        }
                        // The onset at a seeded offset inside a 100 ms batch and a second.
                        let onset = 30_000 + (i as u64 * 7919) % 1000;
                        let s = scenario(
                            method,
                            baseline,
                            rps,
                            baseline,
                            Some((onset, 0.30)),
                            onset + 120_000,
                        );
                        mine.push((run_every(&s, 1_000_000 + i as u64, every_ms), onset, i));
                    }
                })
            })
            .collect();
        for h in handles {
            out.extend(h.join().expect("a simulation thread"));
        }
    });
    let delays: Vec<Option<u64>> = out
        .iter()
        .map(|(t, onset, _)| t.rolled_back_at_ms.map(|at| at.saturating_sub(*onset)))
        .collect();
    // A rollback before the onset would be a false one: count it as such.
    let early = out
        .iter()
        .filter(|(t, onset, _)| t.rolled_back_at_ms.is_some_and(|at| at < *onset))
        .count();
    let mut s = summarize(&delays);
    if std::env::var_os("SIM_TAIL").is_some() {
        let mut d: Vec<(u64, usize)> = delays
            .iter()
            .enumerate()
            .filter_map(|(k, d)| d.map(|d| (d, out[k].2)))
            .collect();
        d.sort_unstable();
        let q = |f: f64| d[((d.len() as f64 * f) as usize).min(d.len() - 1)].0;
        eprintln!(
            "p90 {} p99 {} p99.9 {}; slowest {:?}",
            q(0.9),
            q(0.99),
            q(0.999),
            &d[d.len().saturating_sub(5)..]
        );
    }
    if early > 0 {
        s.push_str(&format!(" ({early} before onset)"));
    }
    s
}

fn times(trials: &[Trial], onset: u64) -> String {
    let delays: Vec<Option<u64>> = trials
        .iter()
        .map(|t| t.rolled_back_at_ms.map(|at| at.saturating_sub(onset)))
        .collect();
    summarize(&delays)
}

fn summarize(delays: &[Option<u64>]) -> String {
    let mut d: Vec<u64> = delays.iter().flatten().copied().collect();
    let missed = delays.len() - d.len();
    if d.is_empty() {
        return format!("none of {}", delays.len());
    }
    d.sort_unstable();
    let q = |f: f64| d[((d.len() as f64 * f) as usize).min(d.len() - 1)];
    let s = format!(
        "{} / {} / {}",
        secs(d[d.len() / 2]),
        secs(q(0.99)),
        secs(d[d.len() - 1])
    );
    if missed > 0 {
        format!("{s}, {missed} of {} not", delays.len())
    } else {
        s
    }
}

fn secs(ms: u64) -> String {
    let d = Duration::from_millis(ms);
    if d < Duration::from_secs(60) {
        format!("{:.2}s", d.as_secs_f64())
    } else {
        format!("{:.1}min", d.as_secs_f64() / 60.0)
    }
}

fn pct(p: f64) -> String {
    format!("{}%", p * 100.0)
}

fn scenario(
    method: Method,
    baseline: f64,
    rps: f64,
    canary_rate: f64,
    failure: Option<(u64, f64)>,
    duration_ms: u64,
) -> Scenario {
    Scenario {
        analysis: Analysis {
            interval: Dur::secs(1),
            window: Dur::secs(30),
            min_requests: 50,
            max_error_rate: Some(if baseline >= 0.05 { 0.10 } else { 0.05 }),
            max_error_rate_increase: Some(0.01),
            confidence: 0.99,
            ..Analysis::default()
        },
        method,
        canary_rps: rps,
        stable_rps: rps * 9.0,
        stable_error_rate: baseline,
        canary_error_rate: canary_rate,
        failure,
        duration_ms,
    }
}

fn run_many(s: &Scenario, n: usize, threads: usize) -> Vec<Trial> {
    let next = AtomicUsize::new(0);
    let mut out = Vec::with_capacity(n);
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                sc.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return mine;
                        }
                        mine.push(run(s, i as u64));
                    }
                })
            })
            .collect();
        for h in handles {
            out.extend(h.join().expect("a simulation thread"));
        }
    });
    out
}
